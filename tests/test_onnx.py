"""ONNX export and the onnxruntime backend, on the tiny checkpoint exported once per session (through the CLI)."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from sam3studio import load_segmenter
from sam3studio.cli import app
from sam3studio.errors import ModelSourceError, TrackerUnavailable

# The engine's public tests that apply to any backend run here again, on the onnxruntime segmenter
# (the `segmenter` fixture below overrides conftest's for this module).
from test_boxes import (  # noqa: F401
    test_bad_boxes_are_precise_input_errors,
    test_boxes_change_the_result_and_reuse_the_image_encoding,
    test_labels_without_boxes_and_nothing_at_all_are_errors,
)
from test_core import (  # noqa: F401
    test_bad_image_inputs_raise_input_errors,
    test_bad_prompts_raise_precise_value_errors,
    test_bad_thresholds_raise,
    test_cleanup_option_is_applied,
    test_image_inputs_path_pil_and_array_agree,
    test_max_instances_keeps_the_highest_scores,
    test_prompt_over_the_token_limit_is_rejected,
    test_tiny_checkpoint_segments_a_real_photo_end_to_end,
)

pytestmark = pytest.mark.slow
runner = CliRunner()
LOW = 0.05
PROMPTS = ["cat", "red car", "person", "wooden table", "leftmost dog"]
ROLES = ("vision_encoder", "text_encoder", "prompt_heads", "prompt_heads_boxes", "vision_encoder_int8")


@pytest.fixture(scope="session")
def onnx_export(tiny_checkpoint, tmp_path_factory):
    """`sam3studio export-onnx --quantize int8` of the tiny checkpoint (the one export of the session)."""
    out = tmp_path_factory.mktemp("tiny-onnx") / "export"
    res = runner.invoke(app, ["export-onnx", "--model", str(tiny_checkpoint), "--out", str(out), "--quantize", "int8"])
    assert res.exit_code == 0, res.output
    assert "feature cosine similarity" in res.output
    return out


@pytest.fixture
def segmenter(onnx_export):
    """A fresh float32 segmenter on ONNX Runtime (the folder alone picks the backend)."""
    return load_segmenter(str(onnx_export), device="cpu", dtype="float32")


@pytest.fixture
def torch_segmenter(tiny_checkpoint):
    return load_segmenter(str(tiny_checkpoint), device="cpu", dtype="float32", backend="torch")


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def assert_same_instances(ref, got, score_atol=1e-4, min_iou=0.99):
    """Same instances in the same order: prompts, scores within ``score_atol``, every mask IoU >= ``min_iou``."""
    assert len(got) == len(ref) > 0
    np.testing.assert_array_equal(got.prompt_ids, ref.prompt_ids)
    np.testing.assert_allclose(got.scores, ref.scores, atol=score_atol)
    np.testing.assert_allclose([p.presence_score for p in got.prompts], [p.presence_score for p in ref.prompts],
                               atol=score_atol)
    np.testing.assert_allclose(got.boxes, ref.boxes, atol=0.5)  # pixels
    ious = [_iou(a, b) for a, b in zip(ref.masks, got.masks, strict=True)]
    assert min(ious) >= min_iou, ious


# ---------------------------------------------------------------------------- the export
def test_export_writes_checked_graphs_and_a_manifest(onnx_export, tiny_checkpoint):
    import onnx

    manifest = json.loads((onnx_export / "manifest.json").read_text())
    assert manifest["format"] == "sam3studio-onnx" and manifest["opset"] == 18 and manifest["dtype"] == "float32"
    assert set(manifest["graphs"]) == set(ROLES) and manifest["default_vision"] == "vision_encoder_int8"
    for role, entry in manifest["graphs"].items():
        onnx.checker.check_model(str(onnx_export / entry["file"]), full_check=True)
        assert entry["data"] == entry["file"] + ".data"  # weights in external data
        for name, size in entry["bytes"].items():
            assert (onnx_export / name).stat().st_size == size, role
    graphs = manifest["graphs"]
    assert graphs["vision_encoder"]["inputs"] == [{"name": "pixel_values", "dtype": "float32",
                                                   "shape": ["batch", 3, 224, 224]}]
    assert [o["name"] for o in graphs["vision_encoder"]["outputs"]] == ["fpn_0"]
    assert graphs["text_encoder"]["outputs"][0]["shape"] == ["prompts", 32, 32]
    heads = {i["name"]: i["shape"] for i in graphs["prompt_heads_boxes"]["inputs"]}
    assert heads == {"fpn_0": [1, 32, 32, 32], "text_features": ["prompts", 32, 32], "text_mask": ["prompts", 32],
                     "input_boxes": [1, "boxes", 4], "input_boxes_labels": [1, "boxes"]}
    assert [o["name"] for o in graphs["prompt_heads"]["outputs"]] == ["pred_logits", "pred_boxes", "pred_masks",
                                                                     "presence_logits"]
    image = manifest["preprocess"]["image"]
    assert (image["height"], image["width"], image["mean"], image["std"]) == (224, 224, [0.5] * 3, [0.5] * 3)
    weights = (tiny_checkpoint / "model.safetensors").read_bytes()
    assert manifest["source"]["sha256"] == hashlib.sha256(b"model.safetensors\0" + weights).hexdigest()
    assert manifest["quantization"]["agreement"]["feature_cosine_min"] > 0.999
    assert "video tracking" in " ".join(manifest["not_exported"])


@pytest.mark.parametrize("args, match", [
    (["--dtype", "bfloat16"], "dtype must be one of float32, float16"),
    (["--quantize", "int4"], "quantize must be one of int8"),
    (["--dtype", "float16", "--quantize", "int8"], "with --dtype float32"),
    (["--opset", "11"], "opset must be between 17 and 23"),
])
def test_export_refuses_bad_options_in_one_line(tiny_checkpoint, tmp_path, args, match):
    res = runner.invoke(app, ["export-onnx", "--model", str(tiny_checkpoint), "--out", str(tmp_path / "x"), *args])
    assert res.exit_code == 2
    assert match in res.output and len(res.output.strip().splitlines()) == 1


def test_export_does_not_overwrite_an_export_unasked(onnx_export, tiny_checkpoint):
    res = runner.invoke(app, ["export-onnx", "--model", str(tiny_checkpoint), "--out", str(onnx_export)])
    assert res.exit_code == 2 and "--overwrite" in res.output


# ---------------------------------------------------------------------------- agreement with PyTorch
CASES = {
    "one prompt, non-square photo": dict(image="cat", prompts="cat"),
    "five prompts at once": dict(image="astronaut", prompts=PROMPTS),
    "text and one exemplar box": dict(image="cat", prompts="cat", boxes=[[120, 40, 330, 240]]),
    "boxes alone, positive and negative": dict(image="cat", prompts=None, boxes=[[120, 40, 330, 240], [0, 0, 60, 60]],
                                               box_labels=[1, 0]),
    "two prompts and three boxes, tall image": dict(image="tall", prompts="person, dog",
                                                    boxes=[[10, 20, 120, 200], [30, 100, 200, 390], [0, 0, 50, 50]],
                                                    box_labels=[1, 1, 0]),
}


@pytest.fixture(scope="module")
def photos(cat_photo, astronaut_photo):
    return {"cat": cat_photo, "astronaut": astronaut_photo, "tall": np.ascontiguousarray(astronaut_photo[50:450, 100:340])}


@pytest.mark.parametrize("case", list(CASES))
def test_onnxruntime_float32_gives_the_pytorch_instances(segmenter, torch_segmenter, photos, case):
    kwargs = dict(CASES[case])
    image = photos[kwargs.pop("image")]
    ref = torch_segmenter.segment(image, score_threshold=LOW, **kwargs)
    got = segmenter.segment(image, score_threshold=LOW, **kwargs)
    assert_same_instances(ref, got)


def test_prompts_share_one_head_pass_and_the_caches_hold(segmenter, cat_photo, astronaut_photo):
    segmenter.segment(cat_photo, PROMPTS, score_threshold=LOW)
    assert (segmenter.stats.vision_encoder_calls, segmenter.stats.text_encoder_calls, segmenter.stats.head_passes) == (1, 1, 1)
    segmenter.segment(cat_photo, PROMPTS, score_threshold=0.2)  # re-threshold: post-processing only
    assert segmenter.stats.prediction_cache_hits == len(PROMPTS) and segmenter.stats.head_passes == 1
    segmenter.segment(astronaut_photo, "cat, new prompt", score_threshold=LOW)
    assert segmenter.stats.vision_encoder_calls == 2 and segmenter.stats.text_encoder_calls == 2


def test_batched_vision_pass_equals_one_image_at_a_time(onnx_export, segmenter, cat_photo, astronaut_photo):
    assert segmenter.encode_images([cat_photo, astronaut_photo]) == 2  # batch 2 through the dynamic batch dimension
    batched = [segmenter.segment(img, "cat, person", score_threshold=LOW) for img in (cat_photo, astronaut_photo)]
    assert segmenter.stats.vision_encoder_calls == 1
    for img, got in zip((cat_photo, astronaut_photo), batched, strict=True):
        alone = load_segmenter(str(onnx_export), device="cpu", dtype="float32").segment(img, "cat, person",
                                                                                        score_threshold=LOW)
        assert_same_instances(alone, got, score_atol=1e-5)


def test_int8_vision_encoder_agrees_with_float32(onnx_export, torch_segmenter, photos):
    from sam3studio.bench.runner import mask_agreement

    int8 = load_segmenter(str(onnx_export), device="cpu")  # auto: the export's default, int8
    assert int8.info()["vision_encoder"].startswith("int8")
    for name in ("cat", "astronaut", "tall"):
        ref = torch_segmenter.segment(photos[name], PROMPTS, score_threshold=LOW, max_instances=None)
        got = int8.segment(photos[name], PROMPTS, score_threshold=LOW, max_instances=None)
        agreement = mask_agreement(ref, got)
        assert agreement["mean_iou"] >= 0.98 and agreement["max_score_diff"] < 1e-3, agreement
        assert agreement["unmatched"] <= 1, agreement


def test_float16_graphs_run_and_agree(onnx_export, tmp_path, cat_photo, torch_segmenter):
    from sam3studio.onnx.export import _graph_entry, _to_float16

    half = tmp_path / "half"
    shutil.copytree(onnx_export, half)
    manifest = json.loads((half / "manifest.json").read_text())
    for role in ("vision_encoder", "text_encoder", "prompt_heads", "prompt_heads_boxes"):
        _to_float16(half / manifest["graphs"][role]["file"])
        manifest["graphs"][role] = _graph_entry(half / manifest["graphs"][role]["file"])
    manifest.update(dtype="float16", default_vision="vision_encoder")
    del manifest["graphs"]["vision_encoder_int8"]
    (half / "manifest.json").write_text(json.dumps(manifest))
    seg = load_segmenter(str(half), device="cpu")
    assert seg.info()["dtype"] == "float16"
    from sam3studio.bench.runner import mask_agreement

    ref = torch_segmenter.segment(cat_photo, PROMPTS, score_threshold=LOW)
    got = seg.segment(cat_photo, PROMPTS, score_threshold=LOW)
    # float16 rounding may move a query across the score threshold: match instances rather than list them in order
    agreement = mask_agreement(ref, got)
    assert agreement["matched"] >= len(ref) - 1 and agreement["unmatched"] <= 2, agreement
    assert agreement["mean_iou"] >= 0.95 and agreement["max_score_diff"] < 5e-3, agreement


# ---------------------------------------------------------------------------- what the backend does not do
def test_refine_and_the_torch_backend_say_what_is_not_exported(segmenter, onnx_export, cat_photo):
    with pytest.raises(TrackerUnavailable, match="not available on the onnxruntime backend"):
        segmenter.refine(cat_photo, points=[[100, 100]], point_labels=[1])
    with pytest.raises(TrackerUnavailable, match="is an ONNX export"):
        load_segmenter(str(onnx_export), device="cpu", backend="torch")
    from sam3studio.video import load_video_segmenter

    with pytest.raises(TrackerUnavailable, match="video tracking"):
        load_video_segmenter(str(onnx_export), device="cpu")


def test_api_segments_on_onnxruntime_and_refine_is_a_409(segmenter, onnx_export, cat_photo):
    import io

    from fastapi.testclient import TestClient

    from sam3studio.api import create_app
    from sam3studio.settings import Settings

    buf = io.BytesIO()
    Image.fromarray(cat_photo).save(buf, format="PNG")
    png = buf.getvalue()
    settings = Settings(model=str(onnx_export), device="cpu", ui=False)
    with TestClient(create_app(settings, segmenter=segmenter)) as client:
        ok = client.post("/api/v1/segment", files={"image": ("cat.png", png, "image/png")},
                         data={"prompt": "cat", "threshold": str(LOW)})
        assert ok.status_code == 200, ok.text
        assert ok.json()["model"]["backend"] == "onnxruntime" and ok.json()["instances"]
        refused = client.post("/api/v1/refine", files={"image": ("cat.png", png, "image/png")},
                              data={"points": "[[100, 100]]", "point_labels": "[1]"})
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["code"] == "not_available"


# ---------------------------------------------------------------------------- damaged folders
def _damage(folder, how):
    manifest = json.loads((folder / "manifest.json").read_text())
    if how == "missing graph":
        (folder / "prompt_heads.onnx").unlink()
    elif how == "truncated weights":
        data = folder / "vision_encoder_int8.onnx.data"
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    elif how == "corrupt graph, same size":
        path = folder / "text_encoder.onnx"
        path.write_bytes(b"\x00garbage" * (path.stat().st_size // 8) + b"\x00" * (path.stat().st_size % 8))
    elif how == "manifest not JSON":
        (folder / "manifest.json").write_text("{ not json")
    elif how == "manifest without graphs":
        manifest.pop("graphs")
        (folder / "manifest.json").write_text(json.dumps(manifest))
    elif how == "no tokenizer":
        for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"):
            (folder / name).unlink(missing_ok=True)


@pytest.mark.parametrize("how, match", [
    ("missing graph", "prompt_heads.onnx is missing"),
    ("truncated weights", "vision_encoder_int8.onnx.data is .* bytes, the manifest says .* \\(truncated\\?\\)"),
    ("corrupt graph, same size", "could not load text_encoder.onnx"),
    ("manifest not JSON", "manifest.json cannot be read"),
    ("manifest without graphs", "lists no graphs"),
    ("no tokenizer", "could not load the processor"),
])
def test_a_damaged_export_is_one_line_error(onnx_export, tmp_path, how, match, cat_photo):
    broken = tmp_path / "broken"
    shutil.copytree(onnx_export, broken)
    _damage(broken, how)
    with pytest.raises(ModelSourceError, match=match) as caught:
        load_segmenter(str(broken), device="cpu", dtype="auto")
    assert "\n" not in str(caught.value)
    Image.fromarray(cat_photo).save(tmp_path / "cat.png")
    res = runner.invoke(app, ["segment", str(tmp_path / "cat.png"), "-p", "cat", "-o", str(tmp_path / "out"),
                              "--model", str(broken), "--backend", "onnxruntime"])
    assert res.exit_code == 1
    assert res.output.strip().startswith("error:") and len(res.output.strip().splitlines()) == 1, res.output


# ---------------------------------------------------------------------------- the CLI and other entry points
def test_cli_segment_on_onnxruntime_gives_the_pytorch_instances(onnx_export, tiny_checkpoint, tmp_path, cat_photo,
                                                              astronaut_photo):
    from sam3studio.results import Segmentation

    images = tmp_path / "in"
    images.mkdir()
    Image.fromarray(cat_photo).save(images / "cat.png")
    Image.fromarray(astronaut_photo[::2, ::3]).save(images / "astronaut.png")  # 256x171: not square
    results, outputs = {}, {}
    for backend, model in (("onnxruntime", onnx_export), ("torch", tiny_checkpoint)):
        out = tmp_path / backend
        res = runner.invoke(app, ["segment", str(images), "-p", "cat, person", "-t", str(LOW), "-o", str(out),
                                  "--format", "json", "--model", str(model), "--backend", backend,
                                  "--device", "cpu", "--dtype", "float32"])
        assert res.exit_code == 0, res.output
        outputs[backend] = res.output
        results[backend] = {p.stem: Segmentation.from_dict(json.loads(p.read_text())) for p in out.glob("*.json")}
    assert "onnxruntime, vision encoder float32" in outputs["onnxruntime"]
    assert set(results["onnxruntime"]) == {"cat", "astronaut"}
    for stem, ref in results["torch"].items():
        assert_same_instances(ref, results["onnxruntime"][stem])


def test_a_checkpoint_is_exported_on_first_use_into_the_cache(onnx_export, tiny_checkpoint, tmp_path, monkeypatch,
                                                            cat_photo):
    from sam3studio.onnx import runtime

    monkeypatch.setenv("SAM3STUDIO_DATA_DIR", str(tmp_path / "data"))
    calls = []

    def fake_export(source, out, **kwargs):  # the real export ran once for the session: copy it
        calls.append((source, kwargs))
        shutil.copytree(onnx_export, out, dirs_exist_ok=True)

    monkeypatch.setattr(runtime, "export_onnx", fake_export)
    first = load_segmenter(str(tiny_checkpoint), device="cpu", dtype="int8", backend="onnxruntime")
    again = load_segmenter(str(tiny_checkpoint), device="cpu", dtype="int8", backend="onnxruntime")
    assert len(calls) == 1 and calls[0][1]["quantize"] == "int8"
    assert (tmp_path / "data" / "onnx").is_dir() and again.info()["vision_encoder"].startswith("int8")
    assert len(first.segment(cat_photo, "cat", score_threshold=LOW)) > 0


def test_batch_worker_and_serve_settings_take_the_backend(onnx_export, cat_photo):
    import io

    from sam3studio.batch.work import BatchSpec, Worker
    from sam3studio.settings import Settings

    worker = Worker(BatchSpec(prompts=("cat",), model=str(onnx_export), device="cpu", backend="onnxruntime",
                              threshold=LOW))
    assert worker.segmenter.info()["backend"] == "onnxruntime"
    buf = io.BytesIO()
    Image.fromarray(cat_photo).save(buf, format="PNG")
    ok, line = worker.segment_stage(0, "cat.png", buf.getvalue())
    assert ok and json.loads(line)["instances"]
    assert Settings(backend="onnxruntime").backend == "onnxruntime"
    with pytest.raises(ValueError):
        Settings(backend="tensorrt")


def test_an_unknown_backend_is_refused(tiny_checkpoint):
    with pytest.raises(ModelSourceError, match="unknown backend 'tensorrt'"):
        load_segmenter(str(tiny_checkpoint), backend="tensorrt")


# ---------------------------------------------------------------------------- the benchmark section
def test_bench_onnxruntime_section_reports_both_backends(onnx_export, tiny_checkpoint, tmp_path):
    out = tmp_path / "bench.json"
    res = runner.invoke(app, ["bench", "--model", str(tiny_checkpoint), "--device", "cpu", "--dtype", "float32",
                              "--backend", "onnxruntime", "--onnx", str(onnx_export), "--only", "onnxruntime", "--quick",
                              "--image-size", "320x240", "--json", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert set(report) == {"meta", "onnxruntime"}
    r = report["onnxruntime"]
    gemm = r["gemm"]
    assert all(gemm[k] > 0 for k in ("torch_float32", "torch_bfloat16", "ort_float32", "ort_int8"))
    assert [row["run"] for row in r["vision"]] == ["torch_float32", "torch_bfloat16", "ort_float32", "ort_int8"]
    for row in r["vision"]:
        assert row["vision_s"] > 0
        assert row["achieved_tflops"] == pytest.approx(r["vision_flops"] / row["vision_s"] / 1e12)
        assert row["of_gemm"] == pytest.approx(row["achieved_tflops"] / gemm[row["run"]])
    times = {row["run"]: row["vision_s"] for row in r["vision"]}
    goals = r["goals"]
    assert goals["fp32_vs_torch_fp32"]["ratio"] == pytest.approx(times["ort_float32"] / times["torch_float32"])
    assert goals["int8_vs_torch_bf16"]["ratio"] == pytest.approx(times["torch_bfloat16"] / times["ort_int8"])
    assert [row["k"] for row in r["end_to_end"]] == [1, 5]
    assert all(row[f"{b}_s"] > 0 for row in r["end_to_end"] for b in ("torch", "ort_float32", "ort_int8"))
    for name, prof in r["profile"].items():
        assert prof["top_ops"] and sum(op["share"] for op in prof["top_ops"]) <= 1.0 + 1e-9, name
    assert r["feature_cosine"]["ort_float32_vs_torch_float32"] > 0.99999
    assert r["feature_cosine"]["ort_int8_vs_ort_float32"] > 0.999
    assert r["masks"]["ort_float32_vs_torch"]["mean_iou"] > 0.999 and r["masks"]["ort_int8_vs_torch"]["mean_iou"] > 0.98
    assert "onnxruntime" in res.output and "GEMM" in res.output  # the table (folded to the runner's width)


@pytest.mark.parametrize("args, match", [
    (["--backend", "tensorrt"], "--backend must be one of torch, onnxruntime"),
    (["--backend", "onnxruntime", "--onnx", "/nonexistent"], "not a folder written by"),
])
def test_bench_refuses_bad_onnx_options_in_one_line(args, match):
    res = runner.invoke(app, ["bench", "--model", "/some/checkpoint", *args])
    assert res.exit_code == 2 and match in res.output, res.output


# ---------------------------------------------------------------------------- docs/deploy.md's example
def test_the_docs_example_runs_with_onnxruntime_alone_and_agrees(onnx_export, tmp_path, cat_photo):
    import re
    import subprocess
    import sys
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "deploy.md").read_text()
    section = doc.split("## Run it without sam3studio", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert len(code.strip().splitlines()) <= 40
    Image.fromarray(cat_photo).save(tmp_path / "cat.png")
    # No torch, no transformers, no sam3studio: importing any of them fails in this process.
    blocker = "import sys\nfor m in ('torch', 'transformers', 'sam3studio'):\n    sys.modules[m] = None\n"
    script = tmp_path / "run.py"
    script.write_text(blocker + code)
    done = subprocess.run([sys.executable, str(script), str(onnx_export), str(tmp_path / "cat.png"), "cat", str(LOW)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    found = [float(x) for x in re.findall(r"score ([0-9.]+)", done.stdout)]
    engine = load_segmenter(str(onnx_export), device="cpu").segment(cat_photo, "cat", score_threshold=LOW)
    assert len(found) == len(engine) > 0
    np.testing.assert_allclose(sorted(found), sorted(engine.scores), atol=2e-3)


def test_without_the_onnx_extra_the_error_says_how_to_install_it(onnx_export, tiny_checkpoint, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the package were not installed
    with pytest.raises(ModelSourceError, match=r"onnx extra: pip install 'sam3studio\[onnx\]'"):
        load_segmenter(str(onnx_export), device="cpu")
    res = runner.invoke(app, ["export-onnx", "--model", str(tiny_checkpoint), "--out", str(tmp_path / "x")])
    assert res.exit_code == 1 and "onnxruntime (the onnx extra)" in res.output
