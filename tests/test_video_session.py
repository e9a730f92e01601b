"""Video sessions (`sam3studio.video.VideoSession`) on the tiny video checkpoint: inputs on any frame, propagation in
both directions, corrections, removal, the documented transformers path as an oracle, bounded state, export."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest

from conftest import make_test_video
from sam3studio.errors import FrameOutOfRange, InputError, SessionBusy, SessionGone, UnknownObject
from sam3studio.results import mask_to_rle, rle_to_mask
from sam3studio.video import VideoSession, jsonl_to_ytvis, load_video_segmenter, open_frames
from sam3studio.video.io import iter_frames, probe_video

pytestmark = pytest.mark.slow

W, H = 96, 72


@pytest.fixture(scope="module")
def vseg(tiny_video_checkpoint):
    return load_video_segmenter(str(tiny_video_checkpoint), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_test_video(tmp_path_factory.mktemp("clips") / "clip.mp4", n=14, width=W, height=H, fps=12)


def _mask_of(frame, object_id) -> np.ndarray | None:
    for inst in frame:
        if inst.track_id == object_id:
            return inst.mask
    return None


def _masks(session, object_id) -> list[np.ndarray | None]:
    return [_mask_of(session.frame(i), object_id) for i in range(session.frame_count)]


# ---------------------------------------------------------------------------- frames
@pytest.mark.parametrize("codec", ["libx264", "gif"])
def test_frames_in_any_order_equal_a_front_to_back_decode(tmp_path, codec):
    path = make_test_video(tmp_path / ("v.mp4" if codec == "libx264" else "v.gif"), n=30, width=W, height=H, codec=codec)
    reference = [rgb for _, _, rgb in iter_frames(probe_video(path))]
    reader = open_frames(path, cache_bytes=4 * W * H * 3)  # a 4-frame cache: backward reads need seeks
    assert reader.count == len(reference) == 30 and reader.cache_frames == 4
    order = [*range(29, -1, -1), 17, 3, 25, 0, 29, 12, *range(30)]
    for i in order:
        np.testing.assert_array_equal(reader.get(i), reference[i])
    assert reader.seeks > 0  # it sought rather than decoding from the start each time
    assert reader.decoded < 30 * len(order) / 4
    with pytest.raises(IndexError):
        reader.get(30)


def test_a_folder_of_frames_reads_in_name_order(tmp_path):
    from PIL import Image

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in (0, 2, 10, 1):
        Image.fromarray(np.full((H, W, 3), i * 20, np.uint8)).save(folder / f"f{i}.png")
    reader = open_frames(folder)
    assert reader.count == 4
    assert [int(reader.get(i)[0, 0, 0]) for i in range(4)] == [0, 20, 40, 200]


# ---------------------------------------------------------------------------- the oracle and `both`
def _documented_path(checkpoint, frames, clicks, boxes, start):
    """transformers' documented Sam3TrackerVideo flow: a session on the whole video, inputs on one frame,
    propagate_in_video_iterator forward and then with reverse=True."""
    import torch
    from transformers import Sam3TrackerVideoModel, Sam3TrackerVideoProcessor

    model = Sam3TrackerVideoModel.from_pretrained(str(checkpoint)).eval()
    processor = Sam3TrackerVideoProcessor.from_pretrained(str(checkpoint))
    session = processor.init_video_session(video=frames, inference_device="cpu", dtype=torch.float32)
    h, w = frames[0].shape[:2]
    masks: dict[int, dict[int, np.ndarray]] = {}

    def keep(out):
        up = processor.post_process_masks([out.pred_masks], original_sizes=[[h, w]], binarize=False)[0]
        for k, oid in enumerate(out.object_ids):
            masks.setdefault(oid, {})[out.frame_idx] = (up[k, 0] > 0).numpy()

    for oid, (points, labels) in clicks.items():
        processor.add_inputs_to_inference_session(session, frame_idx=start, obj_ids=oid, input_points=[[points]],
                                                  input_labels=[[labels]])
        keep(model(inference_session=session, frame_idx=start))
    for oid, box in boxes.items():
        processor.add_inputs_to_inference_session(session, frame_idx=start, obj_ids=oid, input_boxes=[[box]])
        keep(model(inference_session=session, frame_idx=start))
    for out in model.propagate_in_video_iterator(session, start_frame_idx=start):
        keep(out)
    for out in model.propagate_in_video_iterator(session, start_frame_idx=start, reverse=True):
        keep(out)
    return masks


def test_click_on_frame_10_then_both_reaches_every_frame_and_equals_transformers(vseg, clip, tiny_video_checkpoint):
    reader = open_frames(clip)
    frames = [reader.get(i) for i in range(reader.count)]
    with VideoSession.open(vseg, clip) as session:
        inst = session.add_clicks(10, [[48, 36]], [1])  # a new object
        assert inst.track_id == 1 and inst.mask.shape == (H, W) and inst.area > 0
        boxed = session.add_box(10, [48, 5, 91, 36])
        assert boxed.track_id == 2 and boxed.area > 0
        run = session.propagate("both")
        assert run.frames == [*range(10, 14), *range(9, -1, -1)] and run.total == 14
        seen = [f.index for f in run]
        assert seen == run.frames and run.done == 14 and run.completed
        ours = {oid: _masks(session, oid) for oid in (1, 2)}
        assert not session.objects[1].dirty
    expected = _documented_path(tiny_video_checkpoint, frames, {1: ([[48, 36]], [1])}, {2: [48, 5, 91, 36]}, 10)
    for oid in (1, 2):
        present = [i for i, m in enumerate(ours[oid]) if m is not None]
        assert min(present) < 10 < max(present), "the object is tracked both before and after frame 10"
        for i in range(14):
            got = ours[oid][i] if ours[oid][i] is not None else np.zeros((H, W), bool)
            np.testing.assert_array_equal(got, expected[oid][i], err_msg=f"object {oid}, frame {i}")


def test_bounded_tracker_state_keeps_what_the_tracker_reads(vseg, tmp_path):
    """With the tracker reading 7 memories and 4 object pointers, a 7-frame window prunes and changes nothing."""
    path = make_test_video(tmp_path / "long.mp4", n=18, width=W, height=H)
    config = vseg.model.tracker_model.config
    saved = config.max_object_pointers_in_encoder
    config.max_object_pointers_in_encoder = 4
    try:
        results = {}
        for window in (-1, None):
            with VideoSession.open(vseg, path, keep_window=window) as session:
                assert session.keep_window == (7 if window == -1 else None)
                session.add_clicks(1, [[48, 36]], [1])
                list(session.propagate("forward"))
                outputs = session.objects[1].state.output_dict_per_obj[0]
                kept = sorted(outputs["non_cond_frame_outputs"])
                if window == -1:
                    assert kept == [*range(2, 9), *range(10, 18)]  # near the conditioning frame 1 and the last frame 17
                    assert all("high_res_masks" not in o and "pred_masks" not in o
                               for o in outputs["non_cond_frame_outputs"].values())
                    shared = {id(o["maskmem_pos_enc"]) for o in outputs["non_cond_frame_outputs"].values()}
                    assert len(shared) == 1  # one position encoding for every frame
                else:
                    assert kept == list(range(2, 18))
                results[window] = _masks(session, 1)
    finally:
        config.max_object_pointers_in_encoder = saved
    for a, b in zip(results[-1], results[None], strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------- corrections, text, removal
def test_text_then_a_correction_changes_frame_k_and_later_only_and_removal_clears_every_frame(vseg, clip):
    with VideoSession.open(vseg, clip, score_threshold=0.1) as session:
        found = session.add_text(0, "red car")
        assert found, "threshold 0.1 on the tiny model finds something"
        ids = [inst.track_id for inst in found]
        assert ids == list(range(1, len(ids) + 1)) and all(inst.prompt == "red car" for inst in found)
        assert session.add_text(0, "red car") == []  # the same objects again: no duplicates
        clicked = session.add_clicks(3, [[10, 10]], [1], label="box on the left")
        assert clicked.track_id == len(ids) + 1 and clicked.prompt == "box on the left"  # one id space
        list(session.propagate("forward", start_frame=0))
        target = ids[0]
        before = _masks(session, target)
        assert all(m is not None for m in before[1:]), "a text object is tracked to the end"

        k = 6
        ys, xs = np.nonzero(before[k])
        corrected = session.add_clicks(k, [[int(xs[0]), int(ys[0])]], [0], object_id=target)  # "not this part"
        assert corrected.track_id == target
        assert session.objects[target].dirty and not session.objects[ids[-1]].dirty
        run = session.propagate("forward")  # from the latest input: frame k; only the corrected object
        assert run.frames == list(range(k, 14))
        others = {oid: _masks(session, oid) for oid in session.objects if oid != target}
        list(run)
        after = _masks(session, target)
        for i in range(k):
            np.testing.assert_array_equal(after[i], before[i], err_msg=f"frame {i} is before the correction")
        changed = [i for i in range(k, 14) if after[i] is None or not np.array_equal(after[i], before[i])]
        assert changed == list(range(k, 14)), f"frames changed after the correction: {changed}"
        for oid, masks in others.items():  # objects that were not corrected were not re-tracked
            for a, b in zip(masks, _masks(session, oid), strict=True):
                assert (a is None and b is None) or np.array_equal(a, b)

        # A click on the text object's own detection frame refines that mask (SAM head, mask prompt + click).
        first = _mask_of(session.frame(0), target)
        ys, xs = np.nonzero(~first)
        refined = session.add_clicks(0, [[int(xs[0]), int(ys[0])]], [1], object_id=target)
        assert session.objects[target].inputs[0] == "mask"
        assert refined.track_id == target and not np.array_equal(refined.mask, first)

        removed = session.remove_object(target)
        assert removed == sum(m is not None for m in _masks(session, target)) or removed > 0
        assert all(_mask_of(session.frame(i), target) is None for i in range(14))
        assert session.store.frames_of(target) == [] and target not in session.objects
        with pytest.raises(UnknownObject):
            session.add_clicks(2, [[5, 5]], [1], object_id=target)


def test_errors_are_typed_and_a_propagating_session_refuses_inputs(vseg, clip):
    with VideoSession.open(vseg, clip) as session:
        with pytest.raises(InputError, match="no objects"):
            session.propagate()
        with pytest.raises(FrameOutOfRange):
            session.add_clicks(14, [[1, 1]], [1])
        with pytest.raises(FrameOutOfRange):
            session.frame(-1)
        with pytest.raises(InputError, match="outside"):
            session.add_clicks(0, [[W + 5, 1]], [1])
        with pytest.raises(UnknownObject):
            session.remove_object(99)
        session.add_clicks(12, [[48, 36]], [1])
        with pytest.raises(InputError, match="direction"):
            session.propagate("sideways")
        run = session.propagate("forward")
        next(run)
        assert session.busy
        with pytest.raises(SessionBusy):
            session.add_box(0, [48, 5, 91, 36])
        run.close()
        assert not session.busy
        assert session.add_box(0, [48, 5, 91, 36]).track_id == 2
    with pytest.raises(SessionGone):
        session.add_box(0, [48, 5, 91, 36])


def test_close_gives_the_state_back(vseg, clip):
    session = VideoSession.open(vseg, clip)
    folder = session.work_dir
    session.add_clicks(2, [[48, 36]], [1])
    assert (folder / "results.sqlite3").is_file()
    session.close()
    assert session.objects == {} and session._encoded is None and not folder.exists()
    session.close()  # twice is fine


# ---------------------------------------------------------------------------- jobs and export
def _fake_job(tmp_path, video, n):
    """A finished job's folder as `write_tracking` leaves it: two tracks (ids 4 and 9) on every frame."""
    folder = tmp_path / "job"
    folder.mkdir()
    rows = []
    for i in range(n):
        a = np.zeros((H, W), bool)
        a[20:50, 5 + i: 35 + i] = True
        b = np.zeros((H, W), bool)
        b[5:25, 60:90] = True
        rows.append({"frame": i, "timestamp": i / 12, "width": W, "height": H, "instances": [
            {"track_id": 4, "prompt": "red car", "score": 0.8, "box_xyxy": [5 + i, 20, 35 + i, 50], "area": int(a.sum()),
             "mask": mask_to_rle(a)},
            {"track_id": 9, "prompt": "green box", "score": 0.6, "box_xyxy": [60, 5, 90, 25], "area": int(b.sum()),
             "mask": mask_to_rle(b)}]})
    (folder / "frames.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "summary.json").write_text(json.dumps({"video": {"path": str(video), "width": W, "height": H}}))
    return folder, rows


def test_a_finished_job_opens_as_a_session_and_both_export_youtube_vis(vseg, clip, tmp_path):
    job, rows = _fake_job(tmp_path, clip, 14)
    ytvis = jsonl_to_ytvis(job)
    assert ytvis["videos"][0]["length"] == 14 and len(ytvis["videos"][0]["file_names"]) == 14
    assert [a["id"] for a in ytvis["annotations"]] == [4, 9]
    assert {c["name"] for c in ytvis["categories"]} == {"red car", "green box"}
    assert ytvis["annotations"][0]["segmentations"][3] == rows[3]["instances"][0]["mask"]

    with VideoSession.from_job(vseg, job, clip) as session:
        assert sorted(session.objects) == [4, 9] and session.objects[4].label == "red car"
        np.testing.assert_array_equal(_mask_of(session.frame(5), 9), rle_to_mask(rows[5]["instances"][1]["mask"]))
        before = _masks(session, 4)
        session.add_clicks(8, [[2, 2]], [1], object_id=4)  # refines the job's mask on frame 8
        assert session.objects[4].inputs == {0: "mask", 8: "mask"}
        assert session.add_clicks(5, [[48, 36]], [1]).track_id == 10  # new ids continue after the job's
        list(session.propagate("forward", object_ids=[4]))
        after = _masks(session, 4)
        for i in range(1, 8):  # frame 0 became the tracker's own output of the job's first mask
            np.testing.assert_array_equal(after[i], before[i])
        out = tmp_path / "export"
        summary = session.export(out)
        stored = {i: {inst.track_id: inst.mask for inst in session.frame(i)} for i in range(14)}
    assert summary["completed"] and summary["frames_processed"] == 14
    assert sorted(summary["outputs"]) == ["jsonl", "mp4", "summary", "ytvis"]
    lines = [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(14))
    for line in lines:
        for inst in line["instances"]:
            np.testing.assert_array_equal(rle_to_mask(inst["mask"]), stored[line["frame"]][inst["track_id"]])
    with av.open(str(out / "overlay.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 14
    data = json.loads((out / "ytvis.json").read_text())
    assert sorted(a["id"] for a in data["annotations"]) == [4, 9, 10]
    assert data["videos"][0]["file_names"][0] == "input/00000.jpg" or data["videos"][0]["file_names"][0].endswith("00000.jpg")
    for ann in data["annotations"]:
        for i, seg in enumerate(ann["segmentations"]):
            assert (seg is None) == (ann["id"] not in stored[i])
