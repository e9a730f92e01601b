"""Video evaluation: YouTube-VIS ground truth, predictions (results JSON, `track` folders, the model), HOTA/IDF1/MOTA
through trackeval and our video mask AP, on synthetic videos whose answers are worked out by hand.

The synthetic video: 10 frames of 64x48; object A (12x15 px) moves right, object B (16x15 px) moves left,
both of the category "ball"; they never overlap.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from typer.testing import CliRunner

from sam3studio.evaluation.data import EvalDataError
from sam3studio.evaluation.video import evaluate_video, spatio_temporal_iou, trackeval_sequence
from sam3studio.evaluation.video_data import VideoPredictions, load_ground_truth, load_video_gt
from sam3studio.results import mask_to_rle

W, H, T = 64, 48, 10
runner = CliRunner()


def rect(x0, y0, x1, y1, w=W, h=H):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def track_a(n=T):
    return [mask_to_rle(rect(2 + 2 * t, 5, 14 + 2 * t, 20)) for t in range(n)]


def track_b(n=T):
    return [mask_to_rle(rect(40 - 2 * t, 25, 56 - 2 * t, 40)) for t in range(n)]


def ytvis(videos=(1,), n=T, tracks=None, categories=({"id": 1, "name": "ball"},)):
    tracks = tracks if tracks is not None else {v: [(1, track_a(n)), (1, track_b(n))] for v in videos}
    anns = [{"id": k, "video_id": v, "category_id": c, "iscrowd": 0, "segmentations": segs, "height": H, "width": W}
            for k, (v, c, segs) in enumerate(((v, c, s) for v in videos for c, s in tracks.get(v, [])), start=1)]
    return {"videos": [{"id": v, "file_names": [f"vid{v}/{t:05d}.png" for t in range(n)], "width": W, "height": H,
                        "length": n} for v in videos],
            "categories": list(categories), "annotations": anns}


def write_json(path, data):
    path.write_text(json.dumps(data))
    return path


def pred(video_id, segs, score=0.9, category_id=1):
    return {"video_id": video_id, "category_id": category_id, "score": score, "segmentations": segs}


def report_for(tmp_path, gt, preds, **kw):
    ds = load_video_gt(write_json(tmp_path / "gt.json", gt))
    return evaluate_video(ds, VideoPredictions.load(write_json(tmp_path / "pred.json", preds), ds), **kw).to_dict()


# ---------------------------------------------------------------------------- known answers
def test_perfect_tracks_score_one_with_no_switches(tmp_path):
    r = report_for(tmp_path, ytvis(), [pred(1, track_a()), pred(1, track_b(), 0.8)])
    v = r["video"]
    assert v["hota"] == v["deta"] == v["assa"] == v["idf1"] == v["mota"] == 1.0
    assert v["id_switches"] == 0
    assert v["mask_ap"] == v["mask_ap50"] == 1.0
    assert [p["hota"] for p in v["per_prompt"]] == [1.0]


def test_ids_swapped_after_six_of_ten_frames_give_the_hand_computed_values(tmp_path):
    a, b = track_a(), track_b()
    r = report_for(tmp_path, ytvis(), [pred(1, a[:6] + b[6:]), pred(1, b[:6] + a[6:])])
    v = r["video"]
    # IDF1: the best one-to-one id assignment keeps 6 of 10 frames per object: IDTP 12, IDFP = IDFN = 8.
    assert v["idf1"] == pytest.approx(24 / (24 + 8 + 8))
    # CLEAR: both objects change tracker id once (frame 6): 2 switches; MOTA = (20 - 0 - 2) / 20.
    assert v["id_switches"] == 2
    assert v["mota"] == pytest.approx(0.9)
    # HOTA: every frame is detected (DetA 1); a TP of the 6-frame pairing has AssA 6 / (6 + 4 + 4), one of the
    # 4-frame pairing 4 / (4 + 6 + 6): AssA = (12 * 6/14 + 8 * 4/16) / 20 at every alpha.
    assa = (12 * 6 / 14 + 8 * 4 / 16) / 20
    assert v["deta"] == pytest.approx(1.0)
    assert v["assa"] == pytest.approx(assa, abs=1e-6)
    assert v["hota"] == pytest.approx(math.sqrt(assa), abs=1e-6)
    # The swapped tracks overlap each object for 6 of 10 frames: spatio-temporal IoU below 0.5, AP 0.
    assert v["mask_ap50"] == 0.0


def test_one_object_whose_id_changes_halfway(tmp_path):
    a = track_a()
    gt = ytvis(tracks={1: [(1, a)]})
    r = report_for(tmp_path, gt, [pred(1, a[:5] + [None] * 5), pred(1, [None] * 5 + a[5:])])
    v = r["video"]
    assert v["id_switches"] == 1
    assert v["idf1"] == pytest.approx(10 / 20)  # IDTP 5, IDFN 5, IDFP 5
    assert v["deta"] == pytest.approx(1.0)
    assert v["assa"] == pytest.approx(0.5)  # each half: 5 / (5 + 5 + 0)


def test_threshold_drops_low_scoring_tracks_from_tracking_metrics_not_from_ap(tmp_path):
    r = report_for(tmp_path, ytvis(), [pred(1, track_a(), 0.9), pred(1, track_b(), 0.3)], score_threshold=0.5)
    v = r["video"]
    assert v["deta"] == pytest.approx(0.5)  # B is missed at every frame: 10 TP, 10 FN
    assert v["mask_ap"] == pytest.approx(1.0)  # AP ranks every track: both are found


def test_spatio_temporal_iou_by_hand():
    a = [mask_to_rle(rect(0, 0, 10, 10)), mask_to_rle(rect(0, 0, 10, 10)), None]
    b = [mask_to_rle(rect(5, 0, 15, 10)), None, mask_to_rle(rect(0, 0, 10, 10))]
    # frame 0: 50 shared; a alone 200 px over the video, b 200: IoU = 50 / (200 + 200 - 50)
    assert spatio_temporal_iou([b], [a], 3)[0, 0] == pytest.approx(50 / 350)
    # against a crowd track the denominator is the prediction's own pixels
    assert spatio_temporal_iou([b], [a], 3, iscrowd=[1])[0, 0] == pytest.approx(50 / 200)


def test_one_frame_videos_give_pycocotools_image_ap(tmp_path):
    """A video of one frame is an image: our video AP must equal pycocotools' segm AP on the same masks."""
    rng = np.random.default_rng(0)
    gt_masks = {v: [rect(x, y, x + 12, y + 10) for x, y in ((4, 4), (30, 20))] for v in (1, 2, 3)}
    preds = []
    for v, masks in gt_masks.items():
        for m in masks:
            dx = int(rng.integers(0, 7))
            preds.append(pred(v, [mask_to_rle(np.roll(m, dx, axis=1))], float(rng.uniform(0.2, 1.0))))
        preds.append(pred(v, [mask_to_rle(rect(45, 2, 60, 12))], float(rng.uniform(0.2, 1.0))))
    gt = ytvis(videos=(1, 2, 3), n=1, tracks={v: [(1, [mask_to_rle(m)]) for m in ms] for v, ms in gt_masks.items()})
    ours = report_for(tmp_path, gt, preds)["video"]

    coco_gt = {"images": [{"id": v, "width": W, "height": H, "file_name": f"{v}.png"} for v in gt_masks],
               "categories": [{"id": 1, "name": "ball"}],
               "annotations": [{"id": k + 1, "image_id": a["video_id"], "category_id": 1, "iscrowd": 0,
                                "segmentation": a["segmentations"][0], "area": float(np.count_nonzero(
                                    gt_masks[a["video_id"]][i % 2])), "bbox": [0, 0, 1, 1]}
                               for k, (i, a) in enumerate(enumerate(gt["annotations"]))]}
    with contextlib.redirect_stdout(io.StringIO()):
        c = COCO()
        c.dataset = copy.deepcopy(coco_gt)
        c.createIndex()
        d = c.loadRes([{"image_id": p["video_id"], "category_id": 1, "score": p["score"],
                        "segmentation": p["segmentations"][0]} for p in preds])
        ev = COCOeval(c, d, "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert 0 < ev.stats[0] < 1
    assert ours["mask_ap"] == pytest.approx(ev.stats[0], abs=1e-6)
    assert ours["mask_ap50"] == pytest.approx(ev.stats[1], abs=1e-6)


def test_agrees_with_trackevals_own_youtube_vis_pipeline(tmp_path):
    """trackeval's YouTubeVIS dataset class reads the same files and converts them itself: same HOTA, IDF1, MOTA."""
    import trackeval

    a, b = track_a(), track_b()
    gt = ytvis(videos=(1, 2), tracks={1: [(1, a), (1, b)], 2: [(1, a[:7] + [None] * 3), (2, b)]},
               categories=({"id": 1, "name": "ball"}, {"id": 2, "name": "cube"}))
    preds = [pred(1, a[:6] + b[6:], 0.9), pred(1, b[:6] + a[6:], 0.8), pred(2, a[:4] + [None] * 6, 0.7),
             pred(2, [None] * 3 + a[3:8] + [None] * 2, 0.6), pred(2, b, 0.9, category_id=2),
             pred(2, [mask_to_rle(rect(0, 40, 8, 48))] * T, 0.5, category_id=2)]
    split = tmp_path / "gt" / "youtube_vis_train_sub_split"
    split.mkdir(parents=True)
    gt = copy.deepcopy(gt)  # trackeval reads YouTube-VIS' uncompressed RLE only; so must we
    for ann in gt["annotations"]:
        ann["areas"] = [int(_decode(r).sum()) if r else None for r in ann["segmentations"]]
        ann["segmentations"] = [_uncompressed(r) for r in ann["segmentations"]]
    write_json(split / "gt.json", gt)
    tracker = tmp_path / "trackers" / "youtube_vis_train_sub_split" / "ours" / "data"
    tracker.mkdir(parents=True)
    write_json(tracker / "results.json", preds)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = trackeval.Evaluator({"USE_PARALLEL": False, "PRINT_RESULTS": False, "PRINT_CONFIG": False,
                                         "TIME_PROGRESS": False, "OUTPUT_SUMMARY": False, "OUTPUT_DETAILED": False,
                                         "PLOT_CURVES": False, "LOG_ON_ERROR": None})
        dataset = trackeval.datasets.YouTubeVIS({"GT_FOLDER": str(tmp_path / "gt") + "/", "PRINT_CONFIG": False,
                                                 "TRACKERS_FOLDER": str(tmp_path / "trackers") + "/",
                                                 "OUTPUT_FOLDER": str(tmp_path / "te-out")})
        metrics = [trackeval.metrics.HOTA(), trackeval.metrics.Identity({"PRINT_CONFIG": False}),
                   trackeval.metrics.CLEAR({"PRINT_CONFIG": False})]
        results, _ = evaluator.evaluate([dataset], metrics)
    ref = results["YouTubeVIS"]["ours"]["COMBINED_SEQ"]
    ours = report_for(tmp_path, gt, preds, score_threshold=0.5)["video"]
    overall = ref["cls_comb_det_av"]
    assert ours["hota"] == pytest.approx(float(np.mean(overall["HOTA"]["HOTA"])), abs=1e-6)
    assert ours["assa"] == pytest.approx(float(np.mean(overall["HOTA"]["AssA"])), abs=1e-6)
    assert ours["idf1"] == pytest.approx(float(overall["Identity"]["IDF1"]), abs=1e-6)
    assert ours["mota"] == pytest.approx(float(overall["CLEAR"]["MOTA"]), abs=1e-6)
    assert ours["id_switches"] == int(overall["CLEAR"]["IDSW"])
    for row in ours["per_prompt"]:
        assert row["hota"] == pytest.approx(float(np.mean(ref[row["name"]]["HOTA"]["HOTA"])), abs=1e-6)
        assert row["idf1"] == pytest.approx(float(ref[row["name"]]["Identity"]["IDF1"]), abs=1e-6)
    assert 0 < ours["hota"] < 1 and ours["id_switches"] >= 2


def test_trackeval_sequence_layout():
    a = track_a(3)
    data = trackeval_sequence([a, [None, None, a[2]]], [[a[0], None, a[2]]], 3)
    assert data["num_gt_dets"] == 4 and data["num_tracker_dets"] == 2
    assert [ids.tolist() for ids in data["gt_ids"]] == [[0], [0], [0, 1]]
    assert data["similarity_scores"][2].shape == (2, 1)
    assert data["similarity_scores"][2][:, 0].tolist() == [1.0, 1.0]


# ---------------------------------------------------------------------------- formats
def test_saco_veval_pairs_decide_what_is_asked(tmp_path):
    gt = ytvis(videos=(1, 2), tracks={1: [(1, track_a())]},
               categories=({"id": 1, "name": "a ball"}, {"id": 2, "name": "a cube"}))
    gt["video_np_pairs"] = [{"id": 1, "video_id": 1, "category_id": 1, "noun_phrase": "a ball", "num_masklets": 1},
                            {"id": 2, "video_id": 2, "category_id": 2, "noun_phrase": "a cube", "num_masklets": 0}]
    ds = load_ground_truth(write_json(tmp_path / "gt.json", gt))
    assert ds.format == "saco-veval" and ds.pairs() == [(1, 1), (2, 2)]
    preds = [pred(1, track_a()), pred(2, track_b(), category_id=1),  # "a ball" on video 2 was not asked: ignored
             pred(2, track_b(), 0.7, category_id=2)]  # a cube on a negative pair: a false positive
    r = evaluate_video(ds, VideoPredictions.load(write_json(tmp_path / "p.json", preds), ds)).to_dict()
    assert r["ignored_tracks"] == 1
    cube = next(p for p in r["video"]["per_prompt"] if p["name"] == "a cube")
    assert cube["gt_tracks"] == 0 and cube["hota"] == 0.0
    ball = next(p for p in r["video"]["per_prompt"] if p["name"] == "a ball")
    assert ball["hota"] == 1.0


def test_track_output_folder_as_predictions(tmp_path):
    from sam3studio.video.results import FrameInstance, FrameResult
    from sam3studio.video.sinks import FramesJsonlSink

    gt = ytvis()
    ds = load_video_gt(write_json(tmp_path / "gt.json", gt))
    run = tmp_path / "run"
    run.mkdir()
    decode = [track_a(), track_b()]
    with FramesJsonlSink(run / "frames.jsonl") as sink:
        for t in range(T):
            insts = [FrameInstance(track_id=7 + k, prompt="ball", score=0.9, box=(0, 0, 1, 1),
                                   mask=_decode(decode[k][t])) for k in range(2)]
            sink.write(FrameResult(index=t, timestamp=t / 10, width=W, height=H, instances=insts))
    v = evaluate_video(ds, VideoPredictions.load(run, ds)).to_dict()["video"]
    assert v["hota"] == 1.0 and v["idf1"] == 1.0 and v["id_switches"] == 0


def _uncompressed(rle):
    """The same mask as an uncompressed RLE (``counts`` a list of run lengths, column-major), YouTube-VIS' own form."""
    if rle is None:
        return None
    flat = _decode(rle).ravel(order="F").astype(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    runs = np.diff(np.concatenate([[0], edges])).tolist()
    return {"size": rle["size"], "counts": runs[:-1] if runs and runs[-1] == 0 else runs}


def _decode(rle):
    from pycocotools import mask as mask_utils

    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda g: g["annotations"][0].update(segmentations=g["annotations"][0]["segmentations"][:3]),
     "3 segmentations for a video of 10 frames"),
    (lambda g: g["annotations"][0].update(video_id=9), "video_id 9 is not in 'videos'"),
    (lambda g: g["videos"][0].update(file_names=[]), "'file_names' must be a non-empty list"),
])
def test_malformed_video_ground_truth_is_one_sentence(tmp_path, mutate, message):
    gt = ytvis()
    mutate(gt)
    with pytest.raises(EvalDataError, match=message):
        load_video_gt(write_json(tmp_path / "gt.json", gt))


# ---------------------------------------------------------------------------- the command
def _cli(args):
    from sam3studio.cli import app

    return runner.invoke(app, ["eval", *args])


def test_cli_video_perfect_and_swapped_predictions(tmp_path):
    gt = write_json(tmp_path / "gt.json", ytvis(videos=(1, 2, 3)))
    a, b = track_a(), track_b()
    perfect = write_json(tmp_path / "perfect.json", [pred(v, s) for v in (1, 2, 3) for s in (a, b)])
    swapped = write_json(tmp_path / "swapped.json", [pred(v, s) for v in (1, 2, 3) for s in (a[:5] + b[5:], b[:5] + a[5:])])
    for name, path in (("perfect", perfect), ("swapped", swapped)):
        res = _cli([str(gt), "--predictions", str(path), "--out", str(tmp_path / name)])
        assert res.exit_code == 0, res.output
        assert (tmp_path / name / "report.html").is_file()
    good = json.loads((tmp_path / "perfect" / "report.json").read_text())["video"]
    bad = json.loads((tmp_path / "swapped" / "report.json").read_text())["video"]
    assert set(good) >= {"hota", "deta", "assa", "idf1", "mota", "id_switches", "per_prompt", "mask_ap"}
    assert good["hota"] == good["idf1"] == 1.0 and good["id_switches"] == 0
    assert bad["idf1"] == pytest.approx(0.5) and bad["id_switches"] == 6  # 2 per video
    assert bad["per_prompt"][0]["prompt"] == "ball"


def test_cli_video_bad_inputs_are_one_line(tmp_path):
    gt = write_json(tmp_path / "gt.json", ytvis())
    res = _cli([str(gt), "--clicks", "--predictions", str(tmp_path / "none.json")])
    assert res.exit_code == 2 and "--clicks needs image ground truth" in res.output
    res = _cli([str(gt), "--predictions", str(tmp_path / "missing.json")])
    assert res.exit_code == 2 and "no such file" in res.output
    coco = write_json(tmp_path / "coco.json", {"images": [{"id": 1, "file_name": "a.png", "width": 4, "height": 4}],
                                                "categories": [{"id": 1, "name": "x"}], "annotations": []})
    res = _cli([str(coco), "--format", "ytvis", "--predictions", str(gt)])
    assert res.exit_code == 2 and "'videos' must be a list" in res.output


@pytest.mark.slow
def test_cli_runs_the_video_model_on_frames(tiny_video_checkpoint, tmp_path):
    n = 3
    for t in range(n):
        img = np.full((H, W, 3), 40, np.uint8)
        img[rect(2 + 2 * t, 5, 14 + 2 * t, 20)] = (220, 50, 50)
        (tmp_path / "vid1").mkdir(exist_ok=True)
        Image.fromarray(img).save(tmp_path / "vid1" / f"{t:05d}.png")
    gt = write_json(tmp_path / "gt.json", ytvis(n=n, tracks={1: [(1, track_a(n))]}))
    res = _cli([str(gt), "--model", str(tiny_video_checkpoint), "--device", "cpu", "--threshold", "0.3",
                "--out", str(tmp_path / "out"), "--save-predictions", str(tmp_path / "p.json")])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["latency"]["frames"] == n and report["memory"]["peak_rss_bytes"] > 0
    saved = json.loads((tmp_path / "p.json").read_text())
    assert saved["format"] == "sam3studio-video-predictions" and len(saved["frame_latency_s"]) == n
    for t in saved["tracks"]:
        assert t["video_id"] == 1 and len(t["segmentations"]) == n
    v = report["video"]
    assert v["hota"] is None or 0 <= v["hota"] <= 1
    # the saved predictions evaluate to the same report
    res = _cli([str(gt), "--predictions", str(tmp_path / "p.json"), "--threshold", "0.3", "--out", str(tmp_path / "again")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "again" / "report.json").read_text())["video"] == v
