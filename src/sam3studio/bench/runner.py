"""The ``sam3studio bench`` suite: measurements only, no printing (the CLI renders `run_bench`'s dict).

Every comparison is a ratio of two figures taken in the same run, on the same machine, with the
same inputs, because absolute timings on shared machines drift from run to run while ratios mostly
hold. Each figure is the median of ``repeats`` timed runs after one untimed warm-up run (one-time
kernel selection and allocator growth are not what a long-running server pays per request).

Sections (see `SECTIONS`):

- ``prompts``: our engine (`Segmenter.segment`, cold cache: the image is encoded once per run) vs
  the baseline as the transformers documentation writes it (one processor + model + post-process
  call per prompt, float32, eager attention) for K prompts on one image.
- ``dtype``: the vision encoder in float32 vs bfloat16 on the same device, which dtype ``auto``
  picks, and bf16 vs fp32 mask agreement on the tiny checkpoint (random full-size masks are noise).
- ``postprocess``: filter-then-upsample post-processing + JSON/RLE encoding of 50 instances on a
  large image, as a share of the model time.
- ``api``: HTTP through ``/api/v1/segment`` (uvicorn on loopback) vs the same library call; latency
  and throughput under concurrency.
- ``memory``: peak and current RSS after loading and after the runs; CUDA peak allocation.
- ``tflops``: FLOPs of one vision forward (counted on the meta device: no compute) over its time.
- ``onnxruntime`` (with ``--backend onnxruntime``, or named in ``--only``): the vision encoder on ONNX
  Runtime fp32 and int8 vs PyTorch fp32 and bf16 against GEMM rates measured in the run, K=1/K=5 end
  to end on both backends (`sam3studio.bench.ort_section`).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime as _dt
import io
import logging
import platform
import socket
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sam3studio.bench import hardware
from sam3studio.bench.ort_section import onnxruntime_section

__all__ = [
    "BASELINE_EXTRAPOLATED",
    "BASELINE_MEASURED",
    "BENCH_PROMPTS",
    "GOALS",
    "SECTIONS",
    "BenchError",
    "BenchOptions",
    "baseline_segment",
    "count_vision_flops",
    "fp32_eager_copy",
    "mask_agreement",
    "parse_image_size",
    "parse_only",
    "run_bench",
    "synthetic_predictions",
]

log = logging.getLogger(__name__)

SECTIONS = ("prompts", "dtype", "postprocess", "api", "memory", "tflops")
EXTRA_SECTIONS = ("onnxruntime",)  # run only when asked for (--backend onnxruntime, or --only)
BACKENDS = ("torch", "onnxruntime")
# The targets. K=5 / K=20: baseline / ours; dtype: fp32 / bf16 vision time (CPUs with AMX);
# postprocess: (post-processing + JSON) / model time; api: (HTTP - direct) / direct at concurrency 1.
GOALS = {"k5": 3.5, "k20": 8.0, "bf16_speedup_amx": 3.0, "postprocess_fraction": 0.10, "api_overhead": 0.05}
BASELINE_MEASURED = "measured"
BASELINE_EXTRAPOLATED = "K x measured single call"
# Twenty distinct everyday prompts; the first K are used for K prompts.
BENCH_PROMPTS = (
    "person", "dog", "cat", "car", "bus", "truck", "bicycle", "bird", "horse", "tree",
    "chair", "table", "red car", "wooden table", "traffic light", "window", "door", "wheel", "flower", "coffee mug",
)
AGREEMENT_PROMPTS = ("person", "dog", "red car", "wooden table", "flower")
TINY_SCORE_THRESHOLD = 0.05  # the tiny random model scores around 0.1-0.3: a lower threshold keeps instances
POSTPROCESS_INSTANCES = 50
API_PROMPT = "person"
CONCURRENCY_LEVELS = (1, 4, 16)
CONCURRENCY_IMAGE = (640, 480)
MAX_BENCH_PIXELS = 8192 * 8192


class BenchError(ValueError):
    """A bad benchmark option (the CLI exits 2 with its message)."""


def parse_only(text: str | None) -> tuple[str, ...]:
    """``"prompts, api"`` -> ``("prompts", "api")`` in suite order; None or empty -> every section."""
    if text is None or not text.strip():
        return SECTIONS
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in SECTIONS + EXTRA_SECTIONS]
    if unknown:
        raise BenchError(f"--only: unknown section(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(SECTIONS + EXTRA_SECTIONS)}")
    return tuple(s for s in SECTIONS + EXTRA_SECTIONS if s in names)


def parse_image_size(text: str) -> tuple[int, int]:
    """``"1920x1080"`` -> ``(1920, 1080)`` (width, height)."""
    w, sep, h = text.lower().strip().partition("x")
    try:
        size = (int(w), int(h)) if sep else None
    except ValueError:
        size = None
    if size is None or min(size) < 16 or size[0] * size[1] > MAX_BENCH_PIXELS:
        raise BenchError(f"--image-size must look like 1920x1080 (each side >= 16, at most {MAX_BENCH_PIXELS} pixels), "
                         f"got {text!r}")
    return size


@dataclass
class BenchOptions:
    """What to run. ``baseline_budget_s`` bounds the baseline: at K > 1 it is measured for real only when
    K x (single call) x repeats fits in it, else reported as K x the measured single call (labelled so)."""

    model: str = "random"
    device: str = "auto"
    dtype: str = "auto"
    repeats: int = 3
    quick: bool = False
    only: tuple[str, ...] = SECTIONS
    image_size: tuple[int, int] = (1920, 1080)
    baseline_budget_s: float = 120.0
    backend: str = "torch"  # "onnxruntime" adds the onnxruntime section
    onnx: str | None = None  # an export of the model under test (same weights) for that section; else exported in the run

    @property
    def ks(self) -> tuple[int, ...]:
        return (1, 5) if self.quick else (1, 5, 20)

    def validate(self) -> None:
        from sam3studio.model import DEVICES, DTYPES

        if not isinstance(self.repeats, int) or self.repeats < 1:
            raise BenchError(f"--repeats must be at least 1, got {self.repeats}")
        bad = [s for s in self.only if s not in SECTIONS + EXTRA_SECTIONS]
        if bad or not self.only:
            raise BenchError(f"--only: unknown section(s) {', '.join(bad) or '(none)'}; choose from "
                             f"{', '.join(SECTIONS + EXTRA_SECTIONS)}")
        if self.backend not in BACKENDS:
            raise BenchError(f"--backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.onnx is not None and self.model == "random":
            raise BenchError("--onnx cannot be an export of --model random: its weights are drawn anew each run")
        if self.onnx is not None and not (Path(self.onnx).expanduser() / "manifest.json").is_file():
            raise BenchError(f"--onnx {self.onnx}: not a folder written by `sam3studio export-onnx`")
        base_device = (self.device or "auto").lower().split(":")[0]
        if base_device not in DEVICES:
            raise BenchError(f"--device must be one of {', '.join(DEVICES)} (or cuda:N), got {self.device!r}")
        if (self.dtype or "auto").lower() not in DTYPES:
            raise BenchError(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.baseline_budget_s < 0:
            raise BenchError("baseline_budget_s must be >= 0")


# ---------------------------------------------------------------------------- building blocks
def baseline_segment(model: Any, processor: Any, image: Any, prompts: Sequence[str], threshold: float = 0.5,
                     mask_threshold: float = 0.5) -> list[dict[str, Any]]:
    """One prompt at a time, exactly as the transformers SAM 3 documentation shows it.

    Every call re-runs the processor and the whole model (vision encoder included): that is the
    baseline our image-feature cache and batched prompt heads are measured against.
    """
    import torch

    results = []
    for prompt in prompts:
        inputs = processor(images=image, text=prompt, return_tensors="pt").to(model.device)
        with torch.no_grad():
            outputs = model(**inputs)
        results.append(processor.post_process_instance_segmentation(
            outputs, threshold=threshold, mask_threshold=mask_threshold,
            target_sizes=inputs.get("original_sizes").tolist())[0])
    return results


def _set_attention(model: Any, implementation: str) -> None:
    """Switch the attention kernels (eager / sdpa) of a model in place, without transformers' sub-config chatter."""
    from transformers.utils import logging as hf_logging

    if getattr(model.config, "_attn_implementation", None) == implementation:
        return
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model.set_attn_implementation(implementation)
    finally:
        hf_logging.set_verbosity(level)


def fp32_eager_copy(model: Any) -> Any:
    """A float32 copy of ``model`` with eager attention: the same weights as ours, the documented defaults.

    A copy (not a reload) because the ``random`` source draws new weights on every load.
    """
    import torch

    clone = copy.deepcopy(model).to(torch.float32).eval()
    _set_attention(clone, "eager")
    return clone


def count_vision_flops(model: Any, pixel_shape: Sequence[int]) -> float:
    """FLOPs of one ``get_vision_features`` forward, counted by `torch.utils.flop_counter.FlopCounterMode`.

    The count runs on a meta-device twin of the model (same config, no weights, no compute), so it
    costs well under a second even for the full-size model; FLOPs do not depend on dtype.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    config = copy.deepcopy(model.config)
    with torch.device("meta"):
        twin = type(model)(config).eval()
    _set_attention(twin, "eager")  # attention as explicit matmuls: counted whatever sdpa kernels the build has
    pixels = torch.empty(*pixel_shape, device="meta")
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        twin.get_vision_features(pixel_values=pixels)
    return float(counter.get_total_flops())


def synthetic_predictions(shape: tuple[int, int], dtype: Any, device: Any, kept: int = POSTPROCESS_INSTANCES,
                          below: int = POSTPROCESS_INSTANCES, prompts: int = 5, seed: int = 0) -> list[Any]:
    """Raw per-prompt predictions of the real low-res shape: ``kept`` queries above 0.5, ``below`` under it.

    Each query's mask logits are an ellipse (positive inside, a few percent of the image), so the
    upsampled masks and their RLE look like real object masks rather than noise. The queries under
    the threshold exercise the filter-before-upsample path.
    """
    import torch

    from sam3studio.core import _RawPrediction

    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy, xx = (yy + 0.5) / h, (xx + 0.5) / w
    preds = []
    per_kept = np.array_split(np.arange(kept), prompts)
    per_below = np.array_split(np.arange(below), prompts)
    for p in range(prompts):
        n_kept, n_below = len(per_kept[p]), len(per_below[p])
        n = n_kept + n_below
        cx, cy = rng.uniform(0.1, 0.9, n), rng.uniform(0.1, 0.9, n)
        rx, ry = rng.uniform(0.03, 0.15, n), rng.uniform(0.03, 0.15, n)
        logits = np.stack([12 * (1 - ((xx - cx[i]) / rx[i]) ** 2 - ((yy - cy[i]) / ry[i]) ** 2) for i in range(n)])
        boxes = np.clip(np.stack([cx - rx, cy - ry, cx + rx, cy + ry], axis=1), 0, 1)
        scores = np.concatenate([rng.uniform(0.55, 0.99, n_kept), rng.uniform(0.02, 0.45, n_below)])
        preds.append(_RawPrediction(
            scores=torch.tensor(scores, dtype=torch.float32),
            boxes=torch.tensor(boxes, dtype=torch.float32),
            mask_logits=torch.tensor(np.clip(logits, -12, 12)).to(device=device, dtype=dtype),
            presence=0.9,
        ))
    return preds


def _mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boolean masks ``(n, H, W)`` x ``(m, H, W)``."""
    fa = a.reshape(len(a), -1).astype(np.float32)
    fb = b.reshape(len(b), -1).astype(np.float32)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def mask_agreement(reference: Any, other: Any) -> dict[str, Any]:
    """Match the instances of two `Segmentation`s prompt by prompt (Hungarian on mask IoU).

    Returns the mean IoU over matched pairs, the counts on each side, the instances left unmatched
    and the largest score difference of a matched pair.
    """
    from scipy.optimize import linear_sum_assignment

    ious: list[float] = []
    score_diffs: list[float] = []
    unmatched = 0
    for p in range(len(reference.prompts)):
        ia = np.flatnonzero(reference.prompt_ids == p)
        ib = np.flatnonzero(other.prompt_ids == p)
        pairs: list[tuple[int, int]] = []
        if len(ia) and len(ib):
            iou = _mask_iou(reference.masks[ia], other.masks[ib])
            rows, cols = linear_sum_assignment(-iou)
            pairs = [(r, c) for r, c in zip(rows, cols, strict=True) if iou[r, c] > 0]
            ious.extend(float(iou[r, c]) for r, c in pairs)
            score_diffs.extend(abs(float(reference.scores[ia[r]]) - float(other.scores[ib[c]])) for r, c in pairs)
        unmatched += len(ia) + len(ib) - 2 * len(pairs)
    return {"mean_iou": statistics.fmean(ious) if ious else None, "matched": len(ious),
            "reference_instances": len(reference), "other_instances": len(other), "unmatched": unmatched,
            "max_score_diff": max(score_diffs) if score_diffs else None}


def _bench_image(size: tuple[int, int]) -> np.ndarray:
    """A real photo (scikit-image's astronaut) resized to ``size`` (width, height), RGB uint8."""
    from PIL import Image
    from skimage import data

    return np.asarray(Image.fromarray(data.astronaut()).resize(size, Image.Resampling.BILINEAR))


def _png(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _median(samples: Sequence[float]) -> float:
    return float(statistics.median(samples))


@contextlib.contextmanager
def _serve(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port in a background thread; yields the base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="sam3studio-bench-server",
                              daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("the benchmark server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


async def _load_test(base_url: str, payloads: Sequence[bytes], concurrency: int, per_client: int) -> dict[str, Any]:
    """``concurrency`` clients each post ``per_client`` requests back to back; 503s are counted, not retried."""
    import httpx

    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=600, limits=limits) as client:
        async def worker(w: int) -> None:
            for j in range(per_client):
                body = payloads[(w * per_client + j) % len(payloads)]
                t = time.perf_counter()
                r = await client.post("/api/v1/segment", files={"image": ("bench.png", body, "image/png")},
                                      data={"prompt": API_PROMPT})
                elapsed = time.perf_counter() - t
                statuses[r.status_code] += 1
                if r.status_code == 200:
                    latencies.append(elapsed)

        start = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        wall = time.perf_counter() - start
    ok = statuses.get(200, 0)
    return {
        "concurrency": concurrency, "requests": concurrency * per_client, "ok": ok, "rejected_503": statuses.get(503, 0),
        "other_errors": sum(n for code, n in statuses.items() if code not in (200, 503)),
        "p50_s": float(np.percentile(latencies, 50)) if latencies else None,
        "p99_s": float(np.percentile(latencies, 99)) if latencies else None,
        "throughput_rps": ok / wall if wall > 0 else None, "wall_s": wall,
    }


# ---------------------------------------------------------------------------- the suite
class _Suite:
    """Holds the loaded model, the shared inputs and figures one section hands to another."""

    def __init__(self, options: BenchOptions, progress: Callable[[str], None]) -> None:
        self.o = options
        self.say = progress
        self.image = _bench_image(options.image_size)
        self.warm: set[str] = set()
        self._fp32: Any = None
        self._bf16: Any = None
        self._tiny_dir: tempfile.TemporaryDirectory[str] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.model_time: dict[str, Any] | None = None  # cold K=1: encode + prompt pass
        self.vision_times: dict[str, float] = {}  # dtype name -> median vision forward (model call only)

    # -------------------------------------------------------------- setup
    def load(self) -> dict[str, Any]:
        import torch

        from sam3studio.loading import load_segmenter

        self.say(f"loading {self.o.model}")
        t = time.perf_counter()
        self.seg = load_segmenter(self.o.model, device=self.o.device, dtype=self.o.dtype, translator="none",
                                  backend="torch")  # the reference engine; ONNX Runtime comes in through --onnx
        load_s = time.perf_counter() - t
        self.torch = torch
        self.device = self.seg.device
        self.dtype = self.seg.dtype
        self.attn = getattr(self.seg.model.config, "_attn_implementation", None) or "sdpa"
        self.memory_after_load = self._memory()
        return {"load_s": load_s}

    def sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def timed(self, fn: Callable[[], Any], repeats: int, warm_key: str | None = None) -> list[float]:
        """``repeats`` timed calls after one warm-up call (skipped when ``warm_key`` already ran)."""
        if warm_key is None or warm_key not in self.warm:
            fn()
            if warm_key is not None:
                self.warm.add(warm_key)
        samples = []
        for _ in range(repeats):
            self.sync()
            t = time.perf_counter()
            fn()
            self.sync()
            samples.append(time.perf_counter() - t)
        return samples

    def fp32_model(self, attention: str) -> Any:
        """The float32 copy (built once), switched to ``attention``."""
        if self._fp32 is None:
            self.say("copying the model to float32 (same weights)")
            self._fp32 = fp32_eager_copy(self.seg.model)
        _set_attention(self._fp32, attention)
        return self._fp32

    def tiny_path(self) -> Path:
        if self._tiny_dir is None:
            from sam3studio.testing import make_tiny_checkpoint

            self._tiny_dir = tempfile.TemporaryDirectory(prefix="sam3studio-bench-")
            make_tiny_checkpoint(Path(self._tiny_dir.name) / "tiny", seed=0)
        return Path(self._tiny_dir.name) / "tiny"

    def tempdir(self) -> str:
        """A scratch folder for the run (exports), removed by `close`."""
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="sam3studio-bench-")
        return self._tmp.name

    def close(self) -> None:
        for folder in (self._tiny_dir, self._tmp):
            if folder is not None:
                folder.cleanup()

    def _memory(self) -> dict[str, Any]:
        out: dict[str, Any] = {"peak_rss_mb": hardware.peak_rss_mb(), "rss_mb": hardware.rss_mb()}
        if self.device.type == "cuda":
            out["cuda_max_allocated_mb"] = self.torch.cuda.max_memory_allocated(self.device) / 2**20
        return out

    def cold_segment(self, prompts: Sequence[str]) -> tuple[float, Any]:
        self.seg.clear_cache()
        self.sync()
        t = time.perf_counter()
        result = self.seg.segment(self.image, list(prompts))
        self.sync()
        return time.perf_counter() - t, result

    def _note_model_time(self, samples: list[tuple[float, Any]]) -> None:
        encode = [r.timings["image_encoding"] for _, r in samples]
        heads = [r.timings["prompts"] for _, r in samples]
        self.model_time = {"model_s": _median([e + h for e, h in zip(encode, heads, strict=True)]),
                           "encode_s": _median(encode), "prompt_pass_s": _median(heads)}

    # -------------------------------------------------------------- 1. prompts
    def prompts(self) -> dict[str, Any]:
        r, ks = self.o.repeats, self.o.ks
        if "ours" not in self.warm:
            self.say("prompts: warm-up (ours)")
            self.cold_segment(BENCH_PROMPTS[:1])
            self.warm.add("ours")
        ours: dict[int, list[tuple[float, Any]]] = {}
        for k in ks:
            self.say(f"prompts: ours, K={k}, {r} run(s)")
            ours[k] = [self.cold_segment(BENCH_PROMPTS[:k]) for _ in range(r)]
        self._note_model_time(ours[1])

        model32, proc = self.fp32_model("eager"), self.seg.processor
        self.say("prompts: baseline (transformers docs, float32, eager), single call")
        single_samples = self.timed(lambda: baseline_segment(model32, proc, self.image, BENCH_PROMPTS[:1]), r,
                                    warm_key="baseline")
        single = _median(single_samples)
        rows = []
        for k in ks:
            ours_samples = [t for t, _ in ours[k]]
            ours_s = _median(ours_samples)
            if k == 1:
                base_s, method, base_samples = single, BASELINE_MEASURED, single_samples
            elif single * k * r <= self.o.baseline_budget_s:
                self.say(f"prompts: baseline, K={k}, {r} run(s)")
                base_samples = self.timed(lambda k=k: baseline_segment(model32, proc, self.image, BENCH_PROMPTS[:k]), r,
                                          warm_key="baseline")
                base_s, method = _median(base_samples), BASELINE_MEASURED
            else:
                base_s, method, base_samples = k * single, BASELINE_EXTRAPOLATED, []
            goal = GOALS.get(f"k{k}")
            ratio = base_s / ours_s
            rows.append({"k": k, "ours_s": ours_s, "ours_samples": ours_samples, "instances": len(ours[k][-1][1]),
                         "baseline_s": base_s, "baseline_method": method, "baseline_samples": base_samples,
                         "ratio": ratio, "goal": goal, "goal_met": None if goal is None else ratio >= goal})
        encode = [res.timings["image_encoding"] for k in ks for _, res in ours[k]]
        kmax = max(ks)
        per_prompt = (_median([t for t, _ in ours[kmax]]) - _median([t for t, _ in ours[1]])) / (kmax - 1)
        return {
            "ours": f"Segmenter.segment, {str(self.dtype).removeprefix('torch.')}, {self.attn} attention, cold cache "
                    f"(clear_cache before each run), prompt_batch_size {self.seg.prompt_batch_size}",
            "baseline": "transformers docs: processor(images, text) -> model(**inputs) -> "
                        "post_process_instance_segmentation, per prompt; float32, eager attention, same weights",
            "thresholds": {"score": 0.5, "mask": 0.5},
            "encode_s": _median(encode),
            "per_extra_prompt_s": per_prompt,
            "per_extra_prompt_basis": f"(K={kmax} - K=1) / {kmax - 1}",
            "baseline_single_call_s": single,
            "rows": rows,
        }

    # -------------------------------------------------------------- 2. dtype
    def _vision_time(self, model: Any, dtype: Any, key: str) -> float:
        from sam3studio.model import inference_context

        pixels = self.seg.processor.image_processor(images=self.image, return_tensors="pt")["pixel_values"]
        pixels = pixels.to(self.device, dtype)

        def forward() -> None:
            with inference_context(self.device, dtype):
                model.get_vision_features(pixel_values=pixels)

        samples = self.timed(forward, self.o.repeats, warm_key=key)
        self.vision_times[str(dtype).removeprefix("torch.")] = _median(samples)
        return _median(samples)

    def vision_time_for(self, dtype: str) -> float:
        """Median vision-encoder time in ``dtype`` ("float32" or "bfloat16") with the engine's attention."""
        torch_ = self.torch
        if dtype == "float32":
            model = self.seg.model if self.dtype == torch_.float32 else self.fp32_model(self.attn)
            return self._vision_time(model, torch_.float32, f"vision-fp32-{self.attn}")
        if self.dtype == torch_.bfloat16:
            model = self.seg.model
        else:
            if self._bf16 is None:
                self.say("copying the model to bfloat16 (same weights)")
                self._bf16 = copy.deepcopy(self.seg.model).to(torch_.bfloat16).eval()
                _set_attention(self._bf16, self.attn)
            model = self._bf16
        return self._vision_time(model, torch_.bfloat16, f"vision-bf16-{self.attn}")

    def dtype_section(self) -> dict[str, Any]:
        import torch

        from sam3studio.loading import load_segmenter
        from sam3studio.model import cpu_supports_bf16, resolve_dtype

        self.say(f"dtype: vision encoder, float32 ({self.attn})")
        fp32_s = self.vision_time_for("float32")
        self.say(f"dtype: vision encoder, bfloat16 ({self.attn})")
        bf16_s = self.vision_time_for("bfloat16")

        auto = resolve_dtype("auto", self.device)
        if self.device.type == "cuda":
            why = "CUDA GPU " + ("supports" if torch.cuda.is_bf16_supported() else "lacks") + " bf16"
        elif self.device.type == "cpu":
            flags = sorted(hardware.cpu_info().flags & {"amx_bf16", "avx512_bf16"})
            why = f"CPU flags {', '.join(flags)}" if cpu_supports_bf16() else "CPU has neither AMX-BF16 nor AVX512-BF16"
        else:
            why = f"{self.device.type} device"
        amx = self.device.type == "cpu" and "amx_bf16" in hardware.cpu_info().flags
        ratio = fp32_s / bf16_s

        self.say("dtype: bf16 vs fp32 masks on the tiny checkpoint")
        tiny = str(self.tiny_path())
        image = np.asarray(_bench_image((512, 512)))
        runs = {}
        for name in ("float32", "bfloat16"):
            seg = load_segmenter(tiny, device=str(self.device), dtype=name, translator="none")
            runs[name] = seg.segment(image, list(AGREEMENT_PROMPTS), score_threshold=TINY_SCORE_THRESHOLD,
                                     max_instances=None)
        agreement = mask_agreement(runs["float32"], runs["bfloat16"])
        agreement.update({"model": "tiny checkpoint (seed 0)", "prompts": list(AGREEMENT_PROMPTS),
                          "score_threshold": TINY_SCORE_THRESHOLD, "image": "astronaut 512x512"})
        return {
            "attention": self.attn,
            "vision_fp32_s": fp32_s,
            "vision_bf16_s": bf16_s,
            "ratio": ratio,
            "goal": GOALS["bf16_speedup_amx"],
            "goal_applies": amx,
            "goal_met": ratio >= GOALS["bf16_speedup_amx"] if amx else None,
            "auto_dtype": str(auto).removeprefix("torch."),
            "auto_reason": why,
            "agreement": agreement,
        }

    def ort_mask_agreement(self, fp32_seg: Any, int8_seg: Any, folder: Path,
                           agreement: Callable[[Any, Any], dict[str, Any]]) -> dict[str, Any]:
        """Masks of ONNX Runtime fp32 and int8 against PyTorch fp32: on the model under test, or on the tiny
        checkpoint (exported now) when the model under test is ``random`` (whose masks are noise)."""
        from sam3studio.core import Segmenter
        from sam3studio.loading import load_segmenter
        from sam3studio.onnx.export import export_onnx
        from sam3studio.onnx.runtime import load_onnx_segmenter

        torch_ = self.torch
        image = np.asarray(_bench_image((512, 512)))
        if self.seg.source == "random":
            self.say("onnxruntime: exporting the tiny checkpoint for the mask agreement")
            tiny = self.tiny_path()
            out = Path(self.tempdir()) / "tiny-onnx"
            export_onnx(str(tiny), out, quantize="int8")
            reference = load_segmenter(str(tiny), device="cpu", dtype="float32", translator="none", backend="torch")
            fp32_seg = load_onnx_segmenter(str(out), device="cpu", dtype="float32")
            int8_seg = load_onnx_segmenter(str(out), device="cpu", dtype="int8")
            where = "tiny checkpoint (seed 0), exported in this run"
        else:
            model32 = self.seg.model if self.dtype == torch_.float32 else self.fp32_model(self.attn)
            reference = Segmenter(model32, self.seg.processor, device="cpu", dtype=torch_.float32)
            where = f"the model under test ({self.seg.source})"
        runs = {name: seg.segment(image, list(AGREEMENT_PROMPTS), score_threshold=TINY_SCORE_THRESHOLD,
                                  max_instances=None) for name, seg in (("torch", reference), ("ort_float32", fp32_seg),
                                                                        ("ort_int8", int8_seg))}
        return {"model": where, "prompts": list(AGREEMENT_PROMPTS), "score_threshold": TINY_SCORE_THRESHOLD,
                "image": "astronaut 512x512", "ort_float32_vs_torch": agreement(runs["torch"], runs["ort_float32"]),
                "ort_int8_vs_torch": agreement(runs["torch"], runs["ort_int8"])}

    # -------------------------------------------------------------- 3. post-processing
    def postprocess(self) -> dict[str, Any]:
        from sam3studio.core import DEFAULT_MAX_INSTANCES
        from sam3studio.prompts import Translation

        if self.model_time is None:
            self.say("postprocess: model time (cold K=1)")
            if "ours" not in self.warm:
                self.cold_segment(BENCH_PROMPTS[:1])
                self.warm.add("ours")
            self._note_model_time([self.cold_segment(BENCH_PROMPTS[:1]) for _ in range(self.o.repeats)])
        assert self.model_time is not None
        cached = list(self.seg._predictions.values())
        if not cached:
            self.cold_segment(BENCH_PROMPTS[:1])
            cached = list(self.seg._predictions.values())
        real = cached[0].mask_logits
        shape = tuple(real.shape[-2:])
        raw = synthetic_predictions(shape, real.dtype, real.device)
        texts = [f"thing {i}" for i in range(len(raw))]
        translations = [Translation(query=t) for t in texts]
        width, height = self.o.image_size
        self.say(f"postprocess: {POSTPROCESS_INSTANCES} instances at {width}x{height}")
        result: dict[str, Any] = {}

        def post() -> None:
            result["seg"] = self.seg._postprocess(raw, texts, translations, height, width, 0.5, 0.5,
                                                  DEFAULT_MAX_INSTANCES)

        repeats = max(self.o.repeats, 5)  # milliseconds: more runs cost nothing
        post_s = _median(self.timed(post, repeats))
        seg = result["seg"]
        json_s = _median(self.timed(seg.to_json, repeats))
        model_s = self.model_time["model_s"]
        fraction = (post_s + json_s) / model_s
        return {
            "case": f"synthetic low-res logits of the model's real shape {shape[0]}x{shape[1]} "
                    f"({str(real.dtype).removeprefix('torch.')}): {POSTPROCESS_INSTANCES} queries above the 0.5 score "
                    f"threshold and {POSTPROCESS_INSTANCES} below, ellipse-shaped masks, through Segmenter._postprocess",
            "image_size": [width, height],
            "instances": len(seg),
            "postprocess_s": post_s,
            "json_s": json_s,
            "json_bytes": len(seg.to_json()),
            "model_s": model_s,
            "model_basis": "median cold K=1 segment: image encoding + prompt pass",
            "fraction": fraction,
            "goal": GOALS["postprocess_fraction"],
            "goal_met": fraction < GOALS["postprocess_fraction"],
        }

    # -------------------------------------------------------------- 4. API
    def _overhead(self, seg: Any, base_url: str, png: bytes, repeats: int) -> dict[str, Any]:
        import httpx

        with httpx.Client(base_url=base_url, timeout=600) as client:
            def api_call() -> int:
                r = client.post("/api/v1/segment", files={"image": ("bench.png", png, "image/png")},
                                data={"prompt": API_PROMPT})
                r.raise_for_status()
                return len(r.json()["instances"])

            def direct_call() -> int:
                return len(seg.segment(png, API_PROMPT).to_dict()["instances"])

            api_samples, direct_samples, instances = [], [], 0
            for i in range(repeats + 1):  # the first pair is the warm-up
                for kind, fn in (("api", api_call), ("direct", direct_call)):
                    seg.clear_cache()
                    self.sync()
                    t = time.perf_counter()
                    instances = fn()
                    self.sync()
                    if i:
                        (api_samples if kind == "api" else direct_samples).append(time.perf_counter() - t)
        api_s, direct_s = _median(api_samples), _median(direct_samples)
        overhead = (api_s - direct_s) / direct_s
        return {"api_s": api_s, "direct_s": direct_s, "api_samples": api_samples, "direct_samples": direct_samples,
                "overhead": overhead, "instances": instances, "goal": GOALS["api_overhead"],
                "goal_met": overhead < GOALS["api_overhead"]}

    def api(self) -> dict[str, Any]:
        from sam3studio.api import create_app
        from sam3studio.loading import load_segmenter
        from sam3studio.settings import Settings

        settings = Settings(ui=False, max_concurrent=1, max_queue=8, api_key=None, ui_auth=None)
        png = _png(self.image)
        self.say("api: HTTP vs direct, concurrency 1 (cold cache)")
        with _serve(create_app(settings, segmenter=self.seg)) as url:
            main = self._overhead(self.seg, url, png, self.o.repeats)
        main.update({"model": self.seg.source, "image_size": list(self.o.image_size), "prompt": API_PROMPT,
                     "direct": "Segmenter.segment(same PNG bytes).to_dict()",
                     "api": "POST /api/v1/segment multipart, mask_format rle, httpx, uvicorn on loopback"})
        out: dict[str, Any] = {"overhead_c1": main, "settings": {"max_concurrent": 1, "max_queue": settings.max_queue}}

        if main["direct_s"] <= 1.0:
            load_seg, load_note, size = self.seg, f"the model under test ({self.seg.source})", self.o.image_size
        else:
            self.say("api: loading the tiny checkpoint for the concurrency runs")
            load_seg = load_segmenter(str(self.tiny_path()), device=str(self.device), dtype="float32", translator="none")
            load_note = (f"tiny checkpoint: the model under test takes {main['direct_s']:.1f} s a request, too slow "
                         "for a load test here")
            size = CONCURRENCY_IMAGE
        base = _bench_image(size)
        per_client = max(2, self.o.repeats)
        n = max(CONCURRENCY_LEVELS) * per_client
        payloads = []
        for i in range(n):  # a different image per request: every request pays for its own encoding
            rgb = base.copy()
            rgb[i % rgb.shape[0], (i // rgb.shape[0]) % rgb.shape[1]] ^= 0xFF
            payloads.append(_png(rgb))
        with _serve(create_app(settings, segmenter=load_seg)) as url:
            if load_seg is not self.seg:
                self.say("api: HTTP vs direct on the tiny checkpoint")
                out["overhead_c1_load_model"] = self._overhead(load_seg, url, _png(base), max(3, self.o.repeats))
            levels = []
            for c in CONCURRENCY_LEVELS:
                self.say(f"api: concurrency {c}, {c * per_client} requests")
                levels.append(asyncio.run(_load_test(url, payloads, c, per_client)))
        out["concurrency"] = {"model": load_note, "image_size": list(size), "per_client": per_client, "levels": levels}
        return out

    # -------------------------------------------------------------- 5. memory
    def memory(self) -> dict[str, Any]:
        weights = sum(p.numel() * p.element_size() for p in self.seg.model.parameters()) / 2**20
        return {"weights_mb": weights, "after_load": self.memory_after_load, "after_runs": self._memory(),
                "note": "after_runs includes any float32/bfloat16 copies and tiny models the other sections built"}

    # -------------------------------------------------------------- 6. TFLOP/s
    def tflops(self) -> dict[str, Any]:
        from sam3studio.model import inference_context

        pixels = self.seg.processor.image_processor(images=self.image, return_tensors="pt")["pixel_values"]
        self.say("tflops: counting vision-encoder FLOPs (meta device)")
        flops = count_vision_flops(self.seg.model, tuple(pixels.shape))
        if not self.vision_times:
            ours = str(self.dtype).removeprefix("torch.")
            px = pixels.to(self.device, self.dtype)

            def forward() -> None:
                with inference_context(self.device, self.dtype):
                    self.seg.model.get_vision_features(pixel_values=px)

            self.say("tflops: timing the vision encoder")
            self.vision_times[ours] = _median(self.timed(forward, self.o.repeats, warm_key=f"vision-{ours}-{self.attn}"))
        rows = []
        for dtype, seconds in self.vision_times.items():
            if self.device.type == "cuda":
                peak = hardware.gpu_peak_tflops(self.torch.cuda.get_device_name(self.device), dtype)
            elif self.device.type == "cpu":
                peak = hardware.cpu_peak_tflops(dtype, threads=self.torch.get_num_threads())
            else:
                peak = None
            achieved = flops / seconds / 1e12
            rows.append({"dtype": dtype, "vision_s": seconds, "achieved_tflops": achieved, "peak": peak,
                         "utilization": achieved / peak["tflops"] if peak else None})
        return {"vision_flops": flops, "pixel_shape": list(pixels.shape), "attention": self.attn, "rows": rows,
                "counter": "torch.utils.flop_counter.FlopCounterMode on a meta-device twin (eager attention)"}


def _meta(options: BenchOptions, suite: _Suite, load: dict[str, Any]) -> dict[str, Any]:
    import torch
    import transformers

    from sam3studio import __version__

    cpu = hardware.cpu_info()
    gpu = torch.cuda.get_device_name(suite.device) if suite.device.type == "cuda" else None
    return {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "model": options.model, "architecture": suite.seg.architecture, "device": str(suite.device),
        "dtype": str(suite.dtype).removeprefix("torch."), "attention": suite.attn,
        "repeats": options.repeats, "quick": options.quick, "sections": list(options.only),
        "image_size": list(options.image_size), "load_s": load["load_s"],
        "sam3studio": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
        "python": platform.python_version(), "cpu": cpu.model, "cpu_cores": cpu.cores,
        "torch_threads": torch.get_num_threads(), "ram_gb": hardware.total_ram_gb(), "gpu": gpu,
    }


def run_bench(options: BenchOptions, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the selected sections and return every figure as a JSON-ready dict (sections in suite order).

    With ``quick``, K is (1, 5) and the API section is skipped unless ``only`` names it.
    Raises `BenchError` for bad options and `sam3studio.errors.ModelSourceError` when the model cannot load.
    """
    options.validate()
    if options.backend == "onnxruntime" and "onnxruntime" not in options.only:
        options.only = (*options.only, "onnxruntime")
    say = progress or (lambda _msg: None)
    suite = _Suite(options, say)
    try:
        load = suite.load()
        report: dict[str, Any] = {"meta": _meta(options, suite, load)}
        asked = tuple(name for name in options.only if name in SECTIONS)
        explicit_api = asked != SECTIONS and "api" in asked
        runners: dict[str, Callable[[], dict[str, Any]]] = {
            "prompts": suite.prompts, "dtype": suite.dtype_section, "postprocess": suite.postprocess,
            "api": suite.api, "tflops": suite.tflops,
            "onnxruntime": lambda: onnxruntime_section(suite, count_flops=count_vision_flops, agreement=mask_agreement,
                                                       prompts=BENCH_PROMPTS),
            "memory": suite.memory,  # memory last: after everything ran
        }
        results: dict[str, Any] = {}
        for name, fn in runners.items():
            if name not in options.only:
                continue
            if name == "api" and options.quick and not explicit_api:
                results[name] = {"skipped": "--quick"}
                continue
            t = time.perf_counter()
            results[name] = fn()
            results[name]["section_s"] = time.perf_counter() - t
        report.update({name: results[name] for name in SECTIONS + EXTRA_SECTIONS if name in results})
        report["meta"]["total_s"] = sum(r.get("section_s", 0.0) for r in results.values()) + load["load_s"]
        return report
    finally:
        suite.close()
