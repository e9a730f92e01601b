"""``sam3studio bench`` on the tiny checkpoint: the report's shape and arithmetic, the baseline's correctness.

No assertion here is about speed (timings on a shared CI machine prove nothing); they check that
every figure is there, positive, and that each ratio is computed from the times reported beside it.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from sam3studio.bench import BASELINE_EXTRAPOLATED, BASELINE_MEASURED, SECTIONS, baseline_segment, fp32_eager_copy
from sam3studio.cli import app

runner = CliRunner()
LOW = 0.05  # the tiny random model scores around 0.1-0.3


def _app() -> typer.Typer:
    """The real CLI (``bench`` is one of its commands)."""
    return app


def _bench(*args: str):
    return runner.invoke(_app(), ["bench", *args])


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


@pytest.fixture(scope="module")
def quick_report(tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "out.json"
    res = _bench("--model", str(tiny_checkpoint), "--device", "cpu", "--dtype", "float32", "--quick",
                 "--image-size", "640x480", "--json", str(out))
    assert res.exit_code == 0, res.output
    return res.output, json.loads(out.read_text())


@pytest.mark.slow
def test_quick_run_reports_every_section(quick_report):
    output, report = quick_report
    assert "sam3studio bench" in output and "K=5 total" in output and "Wrote" in output
    assert set(SECTIONS) <= set(report) and report["api"] == {"skipped": "--quick"}
    assert report["meta"]["dtype"] == "float32" and report["meta"]["quick"] is True

    p = report["prompts"]
    assert [r["k"] for r in p["rows"]] == [1, 5]
    assert p["encode_s"] > 0 and p["per_extra_prompt_s"] != 0 and p["baseline_single_call_s"] > 0
    for row in p["rows"]:
        assert row["ours_s"] > 0 and row["baseline_s"] > 0
        assert _close(row["ratio"], row["baseline_s"] / row["ours_s"])
        assert row["baseline_method"] in (BASELINE_MEASURED, BASELINE_EXTRAPOLATED)
        if row["baseline_method"] == BASELINE_EXTRAPOLATED:
            assert _close(row["baseline_s"], row["k"] * p["baseline_single_call_s"])
    k5 = p["rows"][1]
    assert k5["goal"] == 3.5 and k5["goal_met"] == (k5["ratio"] >= 3.5)
    assert _close(p["per_extra_prompt_s"], (k5["ours_s"] - p["rows"][0]["ours_s"]) / 4)

    d = report["dtype"]
    assert d["vision_fp32_s"] > 0 and d["vision_bf16_s"] > 0
    assert _close(d["ratio"], d["vision_fp32_s"] / d["vision_bf16_s"])
    assert d["auto_dtype"] in ("float32", "bfloat16") and d["auto_reason"]
    a = d["agreement"]
    assert a["matched"] > 0 and 0 < a["mean_iou"] <= 1 and a["reference_instances"] > 0

    pp = report["postprocess"]
    assert pp["instances"] == 50 and pp["image_size"] == [640, 480]
    assert pp["postprocess_s"] > 0 and pp["json_s"] > 0 and pp["model_s"] > 0 and pp["json_bytes"] > 0
    assert _close(pp["fraction"], (pp["postprocess_s"] + pp["json_s"]) / pp["model_s"])
    assert pp["goal_met"] == (pp["fraction"] < pp["goal"])

    m = report["memory"]
    assert m["weights_mb"] > 0
    for stage in ("after_load", "after_runs"):
        assert m[stage]["peak_rss_mb"] > 0 and m[stage]["rss_mb"] > 0
    assert m["after_runs"]["peak_rss_mb"] >= m["after_load"]["peak_rss_mb"]

    tf = report["tflops"]
    assert tf["vision_flops"] > 0 and {r["dtype"] for r in tf["rows"]} == {"float32", "bfloat16"}
    for row in tf["rows"]:
        assert _close(row["achieved_tflops"], tf["vision_flops"] / row["vision_s"] / 1e12)
        assert row["vision_s"] == d[f"vision_{'fp32' if row['dtype'] == 'float32' else 'bf16'}_s"]
        if row["peak"] is not None:
            assert row["peak"]["tflops"] > 0 and _close(row["utilization"], row["achieved_tflops"] / row["peak"]["tflops"])


@pytest.mark.slow
def test_api_section_on_the_tiny_checkpoint(tiny_checkpoint, tmp_path):
    out = tmp_path / "api.json"
    res = _bench("--model", str(tiny_checkpoint), "--device", "cpu", "--dtype", "float32", "--only", "api",
                 "--repeats", "1", "--image-size", "320x240", "--json", str(out))
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert set(report) == {"meta", "api"}
    api = report["api"]
    o = api["overhead_c1"]
    assert o["api_s"] > 0 and o["direct_s"] > 0
    assert _close(o["overhead"], (o["api_s"] - o["direct_s"]) / o["direct_s"])
    levels = api["concurrency"]["levels"]
    assert [lv["concurrency"] for lv in levels] == [1, 4, 16]
    for lv in levels:
        assert lv["ok"] + lv["rejected_503"] + lv["other_errors"] == lv["requests"]
        assert lv["ok"] > 0 and lv["other_errors"] == 0 and lv["p50_s"] <= lv["p99_s"] and lv["throughput_rps"] > 0
    assert levels[0]["rejected_503"] == 0  # one client never finds the queue full
    assert "c=16" in res.output


@pytest.mark.parametrize("args, match", [
    (["--repeats", "0"], "--repeats"),
    (["--only", "prompts,gpu"], "unknown section"),
    (["--image-size", "0x5"], "--image-size"),
    (["--image-size", "big"], "--image-size"),
    (["--device", "tpu"], "--device"),
    (["--dtype", "int8"], "--dtype"),
])
def test_bad_options_are_one_line_errors(args, match):
    res = _bench("--model", "random", *args)
    assert res.exit_code == 2, res.output
    assert match in res.output
    assert len([line for line in res.output.splitlines() if line.startswith("error:")]) == 1
    assert "Traceback" not in res.output and "loading" not in res.output  # rejected before any model work


@pytest.mark.slow
def test_baseline_finds_what_ours_finds_for_several_prompts(segmenter, cat_photo):
    """The documented one-prompt-at-a-time path and our batched, cached path agree prompt by prompt.

    tests/test_core.py checks one prompt against the upstream pipeline; this covers several prompts
    in one batched head pass, through the benchmark's own baseline on its float32 eager copy.
    """
    prompts = ["cat", "red car", "person", "wooden table", "leftmost dog"]
    baseline_model = fp32_eager_copy(segmenter.model)
    assert baseline_model.config._attn_implementation == "eager"
    assert segmenter.model.config._attn_implementation != "eager"  # the copy left ours alone
    ref = baseline_segment(baseline_model, segmenter.processor, cat_photo, prompts, threshold=LOW)
    ours = segmenter.segment(cat_photo, prompts, score_threshold=LOW, max_instances=None)
    assert segmenter.stats.vision_encoder_calls == 1 and segmenter.stats.head_passes == 1
    total = 0
    for p, r in enumerate(ref):
        order = np.argsort(-r["scores"].numpy(), kind="stable")
        masks = r["masks"].bool().numpy()[order]
        keep = masks.reshape(len(masks), -1).any(1)  # ours drops instances whose mask is empty
        masks, scores = masks[keep], r["scores"].numpy()[order][keep]
        mine = ours.prompt_ids == p
        assert mine.sum() == len(masks) == ours.prompts[p].count
        np.testing.assert_allclose(ours.scores[mine], scores, atol=1e-4)
        for a, b in zip(ours.masks[mine], masks, strict=True):
            assert (a & b).sum() / max((a | b).sum(), 1) > 0.99
        total += len(masks)
    assert total > 0
