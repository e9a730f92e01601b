"""The ``onnxruntime`` bench section (``sam3studio bench --backend onnxruntime``): the same model on both backends.

In one process, on the same weights and the same photo:

- matrix-product (GEMM) rates measured now: torch float32 and bfloat16, ONNX Runtime float32 and int8
  (a one-node ``MatMul`` graph, and the same graph through the dynamic quantizer the vision encoder goes
  through), so each achieved TFLOP/s has the ceiling of its own precision beside it;
- the vision encoder: PyTorch float32 and bfloat16 (the engine's attention), ONNX Runtime float32 and int8;
- where ONNX Runtime spends the vision time, by operator type (its profiler, one run each);
- K=1 and K=5 prompts end to end (`Segmenter.segment`, cold cache) on each;
- agreement: ONNX Runtime vs PyTorch and int8 vs float32 features (cosine similarity), and masks.

The export is made in the run from the model under test (``--onnx DIR`` reuses one of the same weights).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["GEMM_SHAPE", "ORT_GOALS", "gemm_rates", "onnxruntime_section"]

# (M, K, N): the vision MLP's first product for 2048 tokens (hidden 1024 -> 4096) at full size.
GEMM_SHAPE = (2048, 1024, 4096)
# The goals (reported, not pass conditions): ORT fp32 / PyTorch fp32 vision time <= 1.10;
# PyTorch bf16 / ORT int8 vision time >= 1.5.
ORT_GOALS = {"fp32_vs_torch_fp32": 1.10, "int8_vs_torch_bf16": 1.5}
PROFILE_TOP = 8


def _median(xs: list[float]) -> float:
    return float(np.median(xs))


def _ort_gemm_graph(path: Path, k: int, n: int, seed: int = 0) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(seed).standard_normal((k, n), dtype=np.float32) * 0.02
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "w"], ["y"])], "gemm",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["m", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m", n])],
        [numpy_helper.from_array(weight, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))


def gemm_rates(timed: Callable[[Callable[[], Any], int], list[float]], repeats: int, threads: int,
               shape: tuple[int, int, int] = GEMM_SHAPE) -> dict[str, Any]:
    """Measured TFLOP/s of one (M, K) x (K, N) product: torch fp32/bf16, ONNX Runtime fp32/int8 (dynamic)."""
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    m, k, n = shape
    flops = 2.0 * m * k * n
    rates: dict[str, Any] = {"shape_mkn": list(shape), "flops": flops}
    a = torch.randn(m, k)
    for name, dtype in (("torch_float32", torch.float32), ("torch_bfloat16", torch.bfloat16)):
        x, w = a.to(dtype), torch.randn(k, n).to(dtype)
        with torch.inference_mode():
            seconds = _median(timed(lambda x=x, w=w: torch.matmul(x, w), repeats))
        rates[name] = flops / seconds / 1e12
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    feed = {"a": a.numpy()}
    with tempfile.TemporaryDirectory(prefix="sam3studio-gemm-") as tmp:
        fp32, int8 = Path(tmp) / "gemm.onnx", Path(tmp) / "gemm_int8.onnx"
        _ort_gemm_graph(fp32, k, n)
        quantize_dynamic(fp32, int8, weight_type=QuantType.QInt8)
        for name, path in (("ort_float32", fp32), ("ort_int8", int8)):
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            seconds = _median(timed(lambda s=session: s.run(None, feed), repeats))
            rates[name] = flops / seconds / 1e12
    return rates


def _profile(path: Path, pixels: np.ndarray, threads: int) -> dict[str, Any]:
    """One vision run under ONNX Runtime's profiler: time by operator type (top ops, share of node time)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    with tempfile.TemporaryDirectory(prefix="sam3studio-profile-") as tmp:
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tmp, "vision")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        session.run(None, {"pixel_values": pixels})  # warm-up (still profiled; only the last run is kept below)
        t = time.perf_counter()
        session.run(None, {"pixel_values": pixels})
        wall = time.perf_counter() - t
        events = json.loads(Path(session.end_profiling()).read_text())
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    start = runs[-1]["ts"] if runs else 0
    by_op: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and e.get("ts", 0) >= start:
            by_op[e.get("args", {}).get("op_name", "?")] += e.get("dur", 0) / 1e6
    total = sum(by_op.values()) or 1.0
    top = sorted(by_op.items(), key=lambda kv: -kv[1])[:PROFILE_TOP]
    return {"wall_s": wall, "node_s": total,
            "top_ops": [{"op": op, "s": s, "share": s / total} for op, s in top]}


def _cosines(ref: Any, other: Any) -> float:
    from sam3studio.onnx.quantize import feature_cosine

    return min(feature_cosine(np.asarray(a), np.asarray(b)) for a, b in zip(ref, other, strict=True))


def onnxruntime_section(suite: Any, *, count_flops: Callable[..., float], agreement: Callable[..., dict[str, Any]],
                        prompts: tuple[str, ...]) -> dict[str, Any]:
    """The section's figures (see the module docstring). ``suite`` is the bench's `_Suite`."""
    import torch  # torch and onnxruntime (through sam3studio.onnx) load when the section runs, not at import

    from sam3studio.core import Segmenter
    from sam3studio.onnx.export import export_model
    from sam3studio.onnx.manifest import read_manifest
    from sam3studio.onnx.runtime import OnnxRuntimeBackend, load_onnx_segmenter

    o, say, repeats = suite.o, suite.say, suite.o.repeats
    threads = torch.get_num_threads()
    model32 = suite.seg.model if suite.dtype == torch.float32 else suite.fp32_model(suite.attn)
    folder = Path(o.onnx) if o.onnx else None
    export_s = None
    if folder is None:
        folder = Path(suite.tempdir()) / "onnx"
        say("onnxruntime: exporting the model under test (float32 + int8 vision encoder)")
        t = time.perf_counter()
        export_model(model32, suite.seg.processor, folder, source=suite.seg.source, quantize="int8", progress=say)
        export_s = time.perf_counter() - t
    manifest = read_manifest(folder)
    fp32_seg = load_onnx_segmenter(str(folder), device="cpu", dtype="float32", translator=None, threads=threads)
    int8_backend = OnnxRuntimeBackend(manifest, vision="int8", threads=threads, share=fp32_seg.backend)
    int8_seg = Segmenter(None, fp32_seg.processor, device="cpu", dtype=torch.float32, source=str(folder),
                         architecture=fp32_seg.architecture, backend=int8_backend)

    say("onnxruntime: GEMM rates (torch fp32/bf16, ONNX Runtime fp32/int8)")
    gemm = gemm_rates(suite.timed, max(repeats, 3), threads)

    pixels = suite.seg.processor.image_processor(images=suite.image, return_tensors="pt")["pixel_values"]
    flops = count_flops(model32, tuple(pixels.shape))
    vision: dict[str, float] = {}
    for name in ("float32", "bfloat16"):
        if name not in suite.vision_times:
            say(f"onnxruntime: PyTorch vision encoder, {name}")
            suite.vision_time_for(name)
        vision[f"torch_{name}"] = suite.vision_times[name]
        say(f"onnxruntime: PyTorch vision encoder, {name}: {vision[f'torch_{name}']:.3f} s (median)")
    features = {}
    for name, seg in (("ort_float32", fp32_seg), ("ort_int8", int8_seg)):
        say(f"onnxruntime: vision encoder, {name}")
        vision[name] = _median(suite.timed(lambda seg=seg: seg.backend.vision_features(pixels), repeats))
        say(f"onnxruntime: vision encoder, {name}: {vision[name]:.3f} s (median)")  # said at once: a later stage
        features[name] = seg.backend.vision_features(pixels)[0]  # may run out of memory before the report
    with torch.inference_mode():
        ref = model32.get_vision_features(pixel_values=pixels).fpn_hidden_states[:-1]
    cosine = {"ort_float32_vs_torch_float32": _cosines([r.numpy() for r in ref], features["ort_float32"]),
              "ort_int8_vs_ort_float32": _cosines(features["ort_float32"], features["ort_int8"])}
    ceiling = {"torch_float32": gemm["torch_float32"], "torch_bfloat16": gemm["torch_bfloat16"],
               "ort_float32": gemm["ort_float32"], "ort_int8": gemm["ort_int8"]}
    rows = [{"run": name, "vision_s": s, "achieved_tflops": flops / s / 1e12, "gemm_tflops": ceiling[name],
             "of_gemm": flops / s / 1e12 / ceiling[name]} for name, s in vision.items()]

    say("onnxruntime: where the vision time goes (ONNX Runtime profiler)")
    px = pixels.numpy().astype(np.float32)
    profile = {name: _profile(manifest.path(role), px, threads)
               for name, role in (("ort_float32", "vision_encoder"), ("ort_int8", "vision_encoder_int8"))}

    end_to_end = []
    for k in (1, 5):
        row: dict[str, Any] = {"k": k}
        for name, seg in (("torch", suite.seg), ("ort_float32", fp32_seg), ("ort_int8", int8_seg)):
            say(f"onnxruntime: K={k} end to end, {name}")

            def cold(seg=seg, k=k) -> None:
                seg.clear_cache()
                seg.segment(suite.image, list(prompts[:k]))

            row[f"{name}_s"] = _median(suite.timed(cold, repeats))
        end_to_end.append(row)

    masks = suite.ort_mask_agreement(fp32_seg, int8_seg, folder, agreement)
    ratio_fp32 = vision["ort_float32"] / vision["torch_float32"]
    ratio_int8 = vision["torch_bfloat16"] / vision["ort_int8"]
    import onnxruntime as ort

    return {
        "export_s": export_s, "export": str(folder) if o.onnx else "made in this run (temporary folder)",
        "onnxruntime": ort.__version__, "threads": threads, "providers": fp32_seg.info()["providers"],
        "engine_dtype": str(suite.dtype).removeprefix("torch."), "vision_flops": flops, "gemm": gemm, "vision": rows,
        "feature_cosine": cosine, "profile": profile, "end_to_end": end_to_end, "masks": masks,
        "goals": {
            "fp32_vs_torch_fp32": {"ratio": ratio_fp32, "goal": ORT_GOALS["fp32_vs_torch_fp32"],
                                   "goal_met": ratio_fp32 <= ORT_GOALS["fp32_vs_torch_fp32"],
                                   "basis": "ONNX Runtime fp32 / PyTorch fp32 vision time (lower is better)"},
            "int8_vs_torch_bf16": {"ratio": ratio_int8, "goal": ORT_GOALS["int8_vs_torch_bf16"],
                                   "goal_met": ratio_int8 >= ORT_GOALS["int8_vs_torch_bf16"],
                                   "basis": "PyTorch bf16 / ONNX Runtime int8 vision time (speed-up)"},
        },
        "note": "int8 = dynamic quantization of the vision encoder's weight products (MatMul/Gemm); attention's "
                "activation products, convolutions, norms and softmax stay float32 (see profile)",
    }
