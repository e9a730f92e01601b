"""`sam3studio.finetune` and `sam3studio finetune` on the tiny checkpoint and synthetic shape data.

Data: `sam3studio.testing.make_shapes_dataset` (coloured circles and squares on noisy backgrounds, COCO
RLE masks). Every run here is short (a few small images, a few epochs) so the file stays within about
two minutes on two cores; the figures each test relies on are stated next to it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

from sam3studio.finetune import FinetuneConfig, FinetuneConfigError, OutputFolderError, finetune
from sam3studio.testing import make_shapes_dataset, make_tiny_checkpoint

runner = CliRunner()
SMALL = {"heights": (56, 72), "widths": (64, 88)}  # small images: every run below stays fast


def weights(folder: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    return out


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ft-tiny"), seed=0)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("ft-shapes")
    train = make_shapes_dataset(root, 24, seed=1, split="train", objects=(1, 2), radius=(0.2, 0.32), **SMALL)
    val = make_shapes_dataset(root, 8, seed=2, split="val", objects=(1, 2), radius=(0.2, 0.32), **SMALL)
    return train, val


@pytest.fixture(scope="module")
def heads_run(ckpt, shapes, tmp_path_factory):
    """One default-mode (heads) run shared by the tests that read its output."""
    out = tmp_path_factory.mktemp("ft-heads") / "out"
    cfg = FinetuneConfig(epochs=8, batch_size=2, patience=None, dtype="float32")
    return finetune(shapes[0], shapes[1], out=out, model=str(ckpt), config=cfg)


# ---------------------------------------------------------------------------- learning and output
def test_heads_finetune_raises_held_out_mask_ap(heads_run):
    """Zero-shot the tiny random model finds nothing (mask AP50 about 0.00); 8 epochs of heads training on 24
    images reach about 0.5 on the 8 held-out ones (seen: 0.0 -> 0.56). The bar is set well under that."""
    report = heads_run.report
    before, after = report["before"]["ap"]["segm"]["AP50"], report["after"]["ap"]["segm"]["AP50"]
    assert before < 0.05
    assert after - before >= 0.25, (before, after)
    assert report["improved"] is True and report["gain"]["mask AP50"] == pytest.approx(after - before)


def test_report_has_eval_reports_and_curves(heads_run, shapes, ckpt, tmp_path):
    from sam3studio.cli.app import app

    out = heads_run.out
    report = json.loads((out / "report.json").read_text())
    res = runner.invoke(app, ["eval", str(shapes[1]), "--model", str(ckpt), "--out", str(tmp_path / "ev")])
    assert res.exit_code == 0, res.output
    eval_keys = set(json.loads((tmp_path / "ev" / "report.json").read_text()))
    assert set(report["before"]) == eval_keys and set(report["after"]) == eval_keys
    assert [e["epoch"] for e in report["history"]] == list(range(1, 9))
    assert report["settings"]["train"] == "heads" and report["feature_cache"]["views"] == 2 * 24 + 8
    assert (out / "report.md").read_text().startswith("# Fine-tune of")
    assert (out / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / ".finetune").exists()  # cache and resumable state are removed after a finished run


def test_heads_run_leaves_the_encoders_bit_identical(heads_run, ckpt):
    src, dst = weights(ckpt), weights(heads_run.out)
    assert set(src) == set(dst)
    frozen = [k for k in src if k.startswith(("vision_encoder.", "text_encoder.", "text_projection.", "geometry_encoder."))]
    assert len(frozen) > 50
    for k in frozen:
        assert src[k].dtype == dst[k].dtype and torch.equal(src[k], dst[k]), k
    trained = [k for k in src if k.startswith(("detr_decoder.", "mask_decoder."))]
    assert sum(not torch.equal(src[k], dst[k]) for k in trained) > len(trained) // 2


def test_saved_checkpoint_loads_through_the_public_loader_and_segments(heads_run, shapes, tmp_path):
    from sam3studio import load_segmenter
    from sam3studio.cli.app import app

    image = shapes[0].parent / "val" / "00001.png"
    seg = load_segmenter(str(heads_run.out), device="cpu", dtype="float32")
    result = seg.segment(str(image), ["circle", "square"], score_threshold=0.05)
    assert len(result.prompts) == 2 and result.masks.shape[1:] == np.asarray(Image.open(image)).shape[:2]
    res = runner.invoke(app, ["segment", str(image), "--prompt", "circle", "--model", str(heads_run.out),
                              "--out", str(tmp_path / "seg"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert any((tmp_path / "seg").iterdir())


# ---------------------------------------------------------------------------- resume
def test_resume_after_an_interruption_ends_with_the_same_weights(ckpt, shapes, tmp_path):
    """3 epochs straight vs. Ctrl-C in the middle of epoch 2 then --resume: every saved tensor is equal."""
    cfg = FinetuneConfig(epochs=3, batch_size=4, patience=None, dtype="float32")
    straight = finetune(shapes[0], shapes[1], out=tmp_path / "a", model=str(ckpt), config=cfg)

    def interrupt(event):
        if event.kind == "step" and event.epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune(shapes[0], shapes[1], out=tmp_path / "b", model=str(ckpt), config=cfg, on_event=interrupt)
    assert (tmp_path / "b" / ".finetune" / "state.pt").is_file() and not (tmp_path / "b" / "report.json").exists()
    with pytest.raises(OutputFolderError, match="--resume"):  # a second start without --resume is refused
        finetune(shapes[0], shapes[1], out=tmp_path / "b", model=str(ckpt), config=cfg)
    notes = []
    resumed = finetune(shapes[0], shapes[1], out=tmp_path / "b", model=str(ckpt), config=cfg, resume=True,
                       on_event=lambda e: notes.append(e.message) if e.kind == "note" else None)
    assert "resuming after epoch 1" in notes
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert [e["loss"] for e in straight.report["history"]] == [e["loss"] for e in resumed.report["history"]]
    assert straight.report["after"]["ap"] == resumed.report["after"]["ap"]


def test_resume_with_other_settings_is_refused(ckpt, shapes, tmp_path):
    cfg = FinetuneConfig(epochs=2, batch_size=4, dtype="float32")

    def interrupt(event):
        if event.kind == "step":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune(shapes[0], shapes[1], out=tmp_path / "o", model=str(ckpt), config=cfg, on_event=interrupt)
    other = FinetuneConfig(epochs=2, batch_size=4, dtype="float32", lr=5e-4)
    with pytest.raises(FinetuneConfigError, match="lr"):
        finetune(shapes[0], shapes[1], out=tmp_path / "o", model=str(ckpt), config=other, resume=True)


# ---------------------------------------------------------------------------- hard negatives
def _absent_presence(out: Path, val_json: Path) -> float:
    """Mean presence score of the prompts absent from each validation image."""
    from sam3studio import load_segmenter

    seg = load_segmenter(str(out), device="cpu", dtype="float32")
    data = json.loads(val_json.read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    scores = []
    for im in data["images"]:
        present = {names[a["category_id"]] for a in data["annotations"] if a["image_id"] == im["id"]}
        absent = [n for n in names.values() if n not in present]
        if absent:
            result = seg.segment(str(val_json.parent / im["file_name"]), absent)
            scores += [p.presence_score for p in result.prompts]
    assert scores
    return float(np.mean(scores))


def test_hard_negatives_lower_the_presence_of_an_absent_category(ckpt, shapes, tmp_path):
    """Without negatives the presence head only ever sees "present" and drifts up (seen: 1.00); with them an
    absent category's presence stays far lower (seen: 0.58). Same data, epochs, seed and a learning rate high
    enough for 24 steps to show it."""
    runs = {}
    for negatives in (0, 3):
        cfg = FinetuneConfig(epochs=4, batch_size=4, negatives=negatives, patience=None, dtype="float32", lr=1e-2)
        runs[negatives] = finetune(shapes[0], shapes[1], out=tmp_path / f"n{negatives}", model=str(ckpt), config=cfg).out
    without, with_negatives = _absent_presence(runs[0], shapes[1]), _absent_presence(runs[3], shapes[1])
    assert with_negatives < without - 0.2, (with_negatives, without)


# ---------------------------------------------------------------------------- LoRA and video sources
def test_lora_run_merges_adapters_and_loads(ckpt, shapes, tmp_path):
    from sam3studio import load_segmenter

    cfg = FinetuneConfig(train="lora", epochs=1, batch_size=4, dtype="float32", lora_rank=4)
    result = finetune(shapes[0], shapes[1], out=tmp_path / "lora", model=str(ckpt), config=cfg)
    assert result.report["lora_vision_layers"] == [1]  # the tiny ViT has 2 layers: the last one is adapted
    src, dst = weights(ckpt), weights(tmp_path / "lora")
    assert set(src) == set(dst)  # merged: no adapter tensors, the source's architecture
    last = [k for k in src if k.startswith("vision_encoder.backbone.layers.1.attention.") and k.endswith("proj.weight")]
    first = [k for k in src if k.startswith("vision_encoder.backbone.layers.0.")]
    assert last and all(not torch.equal(src[k], dst[k]) for k in last)
    assert first and all(torch.equal(src[k], dst[k]) for k in first)
    text = [k for k in src if k.startswith("text_encoder.") and "self_attn.q_proj.weight" in k]
    assert text and all(not torch.equal(src[k], dst[k]) for k in text)
    seg = load_segmenter(str(tmp_path / "lora"), device="cpu", dtype="float32")
    assert len(seg.segment(str(shapes[1].parent / "val" / "00002.png"), "circle").prompts) == 1


def test_video_source_saves_a_video_checkpoint_with_the_trained_detector(tiny_video_checkpoint, shapes, tmp_path):
    from sam3studio import load_segmenter
    from sam3studio.video import load_video_segmenter

    cfg = FinetuneConfig(epochs=1, batch_size=4, dtype="float32")
    out = finetune(shapes[0], shapes[1], out=tmp_path / "v", model=str(tiny_video_checkpoint), config=cfg).out
    assert json.loads((out / "config.json").read_text())["model_type"] == "sam3_video"
    src, dst = weights(tiny_video_checkpoint), weights(out)
    assert set(src) == set(dst)
    same = [k for k in src if k.startswith(("tracker_model.", "tracker_neck.", "detector_model.vision_encoder."))]
    assert same and all(torch.equal(src[k], dst[k]) for k in same)
    heads = [k for k in src if k.startswith("detector_model.detr_decoder.")]
    assert any(not torch.equal(src[k], dst[k]) for k in heads)
    seg = load_segmenter(str(out), device="cpu", dtype="float32")
    image = str(shapes[1].parent / "val" / "00001.png")
    assert seg.refine(image, points=[[20, 20]], point_labels=[1]).mask.any() is not None  # the tracker loads
    assert load_video_segmenter(str(out), device="cpu", dtype="float32") is not None


# ---------------------------------------------------------------------------- bad input
def _coco(root: Path, images: list[dict], annotations: list[dict], categories=None) -> Path:
    path = root / f"gt{len(list(root.glob('gt*.json')))}.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": categories or [{"id": 1, "name": "circle"}]}))
    return path


@pytest.fixture
def bad_inputs(shapes, tmp_path):
    """Builders of each bad input: (TRAIN, extra CLI args) for the finetune command."""
    train, val = shapes
    data = json.loads(train.read_text())
    root = train.parent

    def variant(**changes) -> Path:
        d = json.loads(json.dumps(data))
        for key, value in changes.items():
            d[key] = value(d[key])
        path = root / f"variant-{len(list(root.glob('variant-*.json')))}.json"
        path.write_text(json.dumps(d))
        return path

    def resize(anns):
        anns[0]["segmentation"]["size"] = [7, 9]
        return anns

    blocker = tmp_path / "blocker"  # a file: no folder can be made under it, even by root
    blocker.write_text("")
    full = tmp_path / "full"
    full.mkdir()
    (full / "x.txt").write_text("x")
    return {
        "missing image": ([str(variant(images=lambda ims: [dict(ims[0], file_name="nope.png"), *ims[1:]])),
                           "--val", str(val)], "nope.png: no such file"),
        "category without name": ([str(variant(categories=lambda cs: [{"id": 1}, cs[1]])), "--val", str(val)],
                                  "has no 'name'"),
        "zero annotations": ([str(variant(annotations=lambda _a: [])), "--val", str(val)], "no annotations to train on"),
        "mask size differs": ([str(variant(annotations=resize)), "--val", str(val)], "differs from the image"),
        "empty validation split": ([str(train), "--val", str(variant(images=lambda _i: [], annotations=lambda _a: []))],
                                   "'images' is empty"),
        "validation without annotations": ([str(train), "--val", str(variant(annotations=lambda _a: []))],
                                           "mask AP is undefined"),
        "box without mask": ([str(variant(annotations=lambda a: [{k: v for k, v in a[0].items() if k != "segmentation"},
                                                                  *a[1:]])), "--val", str(val)], "no mask"),
        "unwritable out": ([str(train), "--val", str(val), "--out", str(blocker / "sub")], "cannot write there"),
        "non-empty out": ([str(train), "--val", str(val), "--out", str(full)], "is not empty"),
        "bad mode": ([str(train), "--val", str(val), "--train", "everything"], "--train must be one of"),
        "resume nothing": ([str(train), "--val", str(val), "--resume"], "nothing to resume"),
    }


BAD = ["missing image", "category without name", "zero annotations", "mask size differs", "empty validation split",
       "validation without annotations", "box without mask", "unwritable out", "non-empty out", "bad mode",
       "resume nothing"]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_error_before_training(case, bad_inputs, ckpt, tmp_path):
    from sam3studio.cli.app import app

    args, message = bad_inputs[case]
    if "--out" not in args:
        args = [*args, "--out", str(tmp_path / "out")]
    res = runner.invoke(app, ["finetune", *args, "--model", str(ckpt), "--device", "cpu"])
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], res.output
    assert not (tmp_path / "out" / "report.json").exists()


def test_a_run_that_will_not_fit_in_memory_is_refused_with_the_estimate(ckpt, shapes, tmp_path):
    from sam3studio.errors import InputTooLargeError

    cfg = FinetuneConfig(epochs=1, memory_budget_gb=0.05)
    expected = r"needs about \d+ MB \(activations \d+ MB, process 768 MB\) but only 51 MB is allowed"
    with pytest.raises(InputTooLargeError, match=expected):
        finetune(shapes[0], shapes[1], out=tmp_path / "m", model=str(ckpt), config=cfg)
    assert not (tmp_path / "m" / ".finetune").exists()


def test_without_val_a_seeded_fifteen_percent_is_held_out(shapes):
    from sam3studio.finetune import load_training_data

    data = load_training_data(shapes[0])
    assert len(data.val.images) == 4 and len(data.train.images) == 20  # round(24 * 0.15)
    assert data.val_source == "held out" and "held out 4 of 24" in data.notes[0]
    again = load_training_data(shapes[0])
    assert [im.id for im in again.val.images] == [im.id for im in data.val.images]
    assert not {im.id for im in data.val.images} & {im.id for im in data.train.images}


def test_roboflow_folder_works_as_train_alone(shapes, tmp_path):
    """A Roboflow COCO export: train/ and valid/ with _annotations.coco.json; its placeholder category (the
    dataset's name, parent of the real ones, never annotated) is dropped."""
    import shutil

    from sam3studio.finetune import load_training_data

    for split, src in (("train", shapes[0]), ("valid", shapes[1])):
        d = json.loads(src.read_text())
        folder = tmp_path / "rf" / split
        folder.mkdir(parents=True)
        for im in d["images"]:
            shutil.copy(src.parent / im["file_name"], folder / Path(im["file_name"]).name)
            im["file_name"] = Path(im["file_name"]).name
        d["categories"] = [{"id": 0, "name": "shapes", "supercategory": "none"},
                           *({**c, "supercategory": "shapes"} for c in d["categories"])]
        (folder / "_annotations.coco.json").write_text(json.dumps(d))
    data = load_training_data(tmp_path / "rf")
    assert [c.name for c in data.train.categories] == ["circle", "square"]
    assert data.val_source == "roboflow" and len(data.val.images) == 8
    assert any("placeholder" in n for n in data.notes)


def test_set_loss_prefers_the_right_answer_and_handles_negatives():
    from types import SimpleNamespace

    from sam3studio.finetune import SetLoss
    from sam3studio.finetune.augment import PromptTarget

    box = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    mask = torch.zeros(1, 8, 8, dtype=torch.float16)
    mask[0, 3:5, 3:5] = 1
    target = [PromptTarget(box, mask), PromptTarget(torch.zeros(0, 4), torch.zeros(0, 8, 8, dtype=torch.float16))]

    def outputs(x1: float, logit: float, presence: float):
        boxes = torch.tensor([[x1, 0.4, x1 + 0.2, 0.6], [0.0, 0.0, 0.1, 0.1]]).expand(2, 2, 4)
        masks = torch.full((2, 2, 8, 8), -5.0)
        masks[:, 0, 3:5, int(x1 * 8) : int(x1 * 8) + 2] = 5.0
        return SimpleNamespace(pred_logits=torch.tensor([[logit, -5.0], [-5.0, -5.0]]), pred_boxes=boxes,
                               pred_masks=masks, presence_logits=torch.tensor([[presence], [-presence]]))

    loss = SetLoss()
    right, wrong = loss(outputs(0.4, 5.0, 5.0), target), loss(outputs(0.0, -5.0, -5.0), target)
    assert float(right["loss"]) < float(wrong["loss"]) / 5
    negatives_only = loss(outputs(0.4, 5.0, 5.0), target[1:] * 2)
    assert float(negatives_only["bbox"]) == 0.0 and float(negatives_only["cls"]) > 0


def test_an_image_only_fine_tune_tells_track_it_needs_a_video_checkpoint(heads_run):
    from sam3studio.errors import ModelSourceError
    from sam3studio.video import load_video_segmenter

    with pytest.raises(ModelSourceError, match="needs a video checkpoint"):
        load_video_segmenter(str(heads_run.out), device="cpu", dtype="float32")


def test_the_split_vision_encoder_gives_exactly_what_get_vision_features_gives(ckpt):
    """The lora cache starts the ViT at a layer (finetune/vit.py repeats transformers' steps): no drift allowed."""
    from transformers import Sam3Model

    from sam3studio.finetune.vit import hidden_before, vision_from_hidden

    model = Sam3Model.from_pretrained(ckpt).eval()
    pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model.get_vision_features(pixel_values=pixels)
        for layer in range(len(model.vision_encoder.backbone.layers) + 1):
            out = vision_from_hidden(model.vision_encoder, hidden_before(model.vision_encoder, pixels, layer), layer)
            assert torch.equal(out.last_hidden_state, ref.last_hidden_state)
            assert all(torch.equal(a, b) for a, b in zip(out.fpn_hidden_states, ref.fpn_hidden_states, strict=True))
            assert all(torch.equal(a, b) for a, b in zip(out.fpn_position_encoding, ref.fpn_position_encoding, strict=True))
