"""Everything that loads SAM 3: sources, device and dtype resolution.

Sources accepted by `load_model` / `load_segmenter`:

- a Hugging Face hub id (default ``facebook/sam3``): uses the hub cache and ``HF_TOKEN``; works
  offline (``HF_HUB_OFFLINE=1``) once cached;
- a local directory in transformers format (``save_pretrained`` output);
- ``modelscope:<id>``: downloaded with the optional ``modelscope`` package;
- ``random``: the full-size SAM 3 architecture with untrained weights and a synthetic tokenizer,
  for benchmarks only (masks are meaningless).

The model class is chosen from the checkpoint's config (``sam3``/``sam3_video`` -> `Sam3Model`,
``sam3_lite_text*`` -> `Sam3LiteTextModel`); both share `Sam3Processor`.
Nothing here runs at import time: devices are probed only when a model is loaded.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sam3studio.errors import ModelSourceError, TrackerUnavailable, install_hint
from sam3studio.random_model import build_random_model

if TYPE_CHECKING:
    import torch


log = logging.getLogger(__name__)

DEFAULT_SOURCE = "facebook/sam3"
RANDOM_SOURCE = "random"
MODELSCOPE_PREFIX = "modelscope:"
DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "bfloat16", "float16")

_DETECTOR_TYPES = {"sam3": "Sam3Model", "sam3_video": "Sam3Model"}
_LITE_TYPES = {"sam3_lite_text": "Sam3LiteTextModel", "sam3_lite_text_video": "Sam3LiteTextModel"}

GATED_HELP = (
    "Could not load SAM 3 from '{source}': {reason}. The official checkpoint is gated: run "
    "`{login}` (or set HF_TOKEN) after accepting the licence at "
    "https://huggingface.co/facebook/sam3, or use `--model modelscope:facebook/sam3`, "
    "or point `--model /path/to/dir` at a downloaded checkpoint; "
    "to try the interface without weights, use `--model random` (untrained: masks are meaningless)."
)
HUB_TIMEOUT_ENV = "SAM3STUDIO_HUB_TIMEOUT_S"  # the one reachability check before a hub download (default 3 s)
_HUB_CHECK_TTL_S = 60.0

__all__ = [
    "LoadedModel",
    "cpu_supports_bf16",
    "inference_context",
    "compile_vision_encoder",
    "load_model",
    "resolve_device",
    "resolve_dtype",
]


@dataclass
class LoadedModel:
    """A built SAM 3 detector with its processor, on its device, in its dtype."""

    model: Any  # Sam3Model | Sam3LiteTextModel
    processor: Any  # Sam3Processor
    source: str
    device: torch.device
    dtype: torch.dtype
    architecture: str
    compiled: bool = False


# ---------------------------------------------------------------------------- device and dtype
@lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="ignore")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AMX-BF16 or AVX512-BF16)."""
    return bool(_cpu_flags() & {"amx_bf16", "avx512_bf16"})


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu. An explicit device that is absent is an error."""
    import torch

    name = (device or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ModelSourceError(f"unknown device {device!r}; use one of {', '.join(DEVICES)}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelSourceError("device 'cuda' was requested but no CUDA GPU is available; use --device cpu")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ModelSourceError("device 'mps' was requested but MPS is not available; use --device cpu")
    return dev


def resolve_dtype(dtype: str = "auto", device: torch.device | None = None) -> torch.dtype:
    """``auto``: bf16 on CUDA GPUs that support it and on CPUs with AMX/AVX512-BF16, else float32."""
    import torch

    name = (dtype or "auto").lower()
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if name in table:
        return table[name]
    if name != "auto":
        raise ModelSourceError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    device = device or resolve_device("auto")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu" and cpu_supports_bf16():
        return torch.bfloat16
    return torch.float32


@contextlib.contextmanager
def inference_context(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """No-grad inference, with autocast scoped to it where the dtype is reduced precision."""
    import torch

    with torch.inference_mode():
        if dtype in (torch.bfloat16, torch.float16) and device.type in ("cpu", "cuda"):
            with torch.autocast(device_type=device.type, dtype=dtype):
                yield
        else:
            yield


# ---------------------------------------------------------------------------- expected library warnings
class _DropExpected(logging.Filter):
    """Drops log records of one library logger whose message contains one of ``fragments``."""

    def __init__(self, fragments: tuple[str, ...]) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(f in message for f in self.fragments)


# transformers warnings that are expected in our use, by logger. Neither hides a problem:
# - the tracker is loaded from the `sam3_video` checkpoint on purpose (its weights are checked for completeness
#   in `interactive.load_tracker`);
# - without the optional `kernels` package, transformers skips the video model's NMS, hole filling and
#   speck removal; `video.tracker` says so once in the log, and the README explains when to install it.
_EXPECTED_WARNINGS = {
    "transformers.configuration_utils": ("You are using a model of type `sam3_video` to instantiate a model of type",),
    "transformers.models.sam3_video.modeling_sam3_video": ("kernels library is not installed",),
}
_silenced = False


def silence_expected_warnings() -> None:
    """Filter the transformers warnings listed in `_EXPECTED_WARNINGS` (idempotent; called when a model loads)."""
    global _silenced
    if _silenced:
        return
    for name, fragments in _EXPECTED_WARNINGS.items():
        logging.getLogger(name).addFilter(_DropExpected(fragments))
    _silenced = True


# ---------------------------------------------------------------------------- sources
def _model_class(model_type: str):
    import transformers

    name = _DETECTOR_TYPES.get(model_type) or _LITE_TYPES.get(model_type)
    if name is None:
        raise ModelSourceError(
            f"checkpoint has model_type {model_type!r}, which is not a SAM 3 detector "
            f"(expected one of {', '.join(sorted({**_DETECTOR_TYPES, **_LITE_TYPES}))})"
        )
    return getattr(transformers, name), name


def _resolve_modelscope(model_id: str) -> Path:
    try:
        from modelscope import snapshot_download  # type: ignore[import-not-found]
    except ImportError:
        raise ModelSourceError(
            f"'modelscope:{model_id}' needs the modelscope package: {install_hint('modelscope')}"
        ) from None
    try:
        return Path(snapshot_download(model_id))
    except Exception as exc:  # modelscope raises many types; the message is what the user needs
        raise ModelSourceError(f"could not download '{model_id}' from ModelScope: {exc}") from exc


def _hub_error_reason(exc: BaseException) -> str:
    name = type(exc).__name__
    if "Gated" in name:
        return "the repository is gated and this account has not been granted access"
    if "RepositoryNotFound" in name:
        return "the repository does not exist or needs authentication"
    if "LocalEntryNotFound" in name or "offline" in str(exc).lower():
        return "it is not in the local cache and the hub cannot be reached (offline)"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else name
    return first[:300]


def compile_vision_encoder(model: Any) -> None:
    """``torch.compile`` the vision encoder in place (the ViT: about 75% of a segment call).

    The first call at each input shape compiles (tens of seconds to minutes; inductor needs a C/C++
    compiler on the CPU); later calls run the compiled graph. Shapes are static (SAM 3 always sees
    its square input), so each batch size compiles once.
    """
    model.vision_encoder.compile(dynamic=False)


def load_model(source: str = DEFAULT_SOURCE, device: str = "auto", dtype: str = "auto",
               compile: bool = False) -> LoadedModel:
    """Load a SAM 3 detector and its processor from ``source`` (see module docstring).

    ``compile`` wraps the vision encoder in ``torch.compile`` (see `compile_vision_encoder`).
    Raises `ModelSourceError` with one actionable sentence when the source cannot be loaded.
    """
    loaded = _load_model(source, device, dtype)
    if compile:
        compile_vision_encoder(loaded.model)
        loaded.compiled = True
    return loaded


def _load_model(source: str, device: str, dtype: str) -> LoadedModel:
    silence_expected_warnings()
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    source = (source or DEFAULT_SOURCE).strip()
    if source == RANDOM_SOURCE:
        model, processor = build_random_model(dev, dt)
        return LoadedModel(model, processor, RANDOM_SOURCE, dev, dt, "Sam3Model")

    load_from, local = resolve_checkpoint(source)

    from transformers import AutoConfig, Sam3Processor

    try:
        config = AutoConfig.from_pretrained(load_from)
        model_cls, arch = _model_class(config.model_type)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*bos_token_id.*|.*eos_token_id.*|.*pad_token_id.*")
            model = model_cls.from_pretrained(load_from, dtype=dt)
        processor = Sam3Processor.from_pretrained(load_from)
    except ModelSourceError:
        raise
    except Exception as exc:
        raise load_error(exc, source, local) from exc
    model = model.to(device=dev, dtype=dt).eval()
    return LoadedModel(model, processor, source, dev, dt, arch)


def hub_login_command() -> str:
    """The login command the installed ``huggingface_hub`` ships: ``hf auth login`` (1.x and later), else
    the older ``huggingface-cli login``."""
    try:  # its console scripts, read from the metadata: importing huggingface_hub.cli would contact the hub
        scripts = {ep.name for ep in importlib.metadata.distribution("huggingface_hub").entry_points
                   if ep.group == "console_scripts"}
    except importlib.metadata.PackageNotFoundError:
        scripts = set()
    return "huggingface-cli login" if "hf" not in scripts and "huggingface-cli" in scripts else "hf auth login"


_hub_checked: tuple[float, str, bool] | None = None  # (when, endpoint, reachable)
_hub_lock = threading.Lock()


def hub_reachable() -> bool:
    """One short request to the hub's endpoint (any HTTP answer counts), remembered for a minute.

    Without it, huggingface_hub retries an unreachable host with back-off for 30 s or more before a
    first-time user learns anything. ``SAM3STUDIO_HUB_TIMEOUT_S`` sets the time allowed (default 3 s).
    """
    global _hub_checked
    import httpx
    from huggingface_hub import constants

    endpoint = constants.ENDPOINT
    with _hub_lock:
        if _hub_checked and _hub_checked[1] == endpoint and time.monotonic() - _hub_checked[0] < _HUB_CHECK_TTL_S:
            return _hub_checked[2]
        timeout = float(os.environ.get(HUB_TIMEOUT_ENV) or 3.0)
        try:
            httpx.head(endpoint, timeout=timeout, follow_redirects=False)
            reachable = True
        except httpx.HTTPError:  # connection refused, DNS failure, timeout, proxy error
            reachable = False
        _hub_checked = (time.monotonic(), endpoint, reachable)
        return reachable


def _cached_snapshot(repo_id: str) -> str | None:
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id, local_files_only=True)
    except Exception:  # not cached (LocalEntryNotFoundError), or a malformed id
        return None


def resolve_checkpoint(source: str) -> tuple[str, Path | None]:
    """Where to load ``source`` from: ``(path or hub id, local folder or None)``.

    ``modelscope:<id>`` is downloaded first. A hub id is checked once for reachability (unless
    ``HF_HUB_OFFLINE`` is set): when the hub does not answer, the cached copy is used, and without
    one the user learns at once what to do. Raises `ModelSourceError` for a folder without
    config.json, a path-like source that does not exist, or an unreachable hub with nothing cached.
    """
    if source.startswith(MODELSCOPE_PREFIX):
        path_or_id = str(_resolve_modelscope(source[len(MODELSCOPE_PREFIX):].strip()))
    else:
        path_or_id = source
    local = Path(os.path.expanduser(path_or_id))
    if local.exists():
        if (local / "manifest.json").is_file() and not (local / "config.json").is_file():
            raise TrackerUnavailable(f"{local} is an ONNX export: it runs image segmentation on the onnxruntime "
                                     "backend only; click refinement, video tracking and the torch backend need the "
                                     "checkpoint it was exported from")
        if not (local / "config.json").is_file():
            raise ModelSourceError(f"{local} is not a transformers checkpoint directory (no config.json in it)")
        return str(local), local
    if path_or_id.startswith((".", "/", "~")) or path_or_id.count("/") > 1:
        raise ModelSourceError(f"model directory {path_or_id} does not exist")
    from huggingface_hub import constants

    if not constants.HF_HUB_OFFLINE and not hub_reachable():
        cached = _cached_snapshot(path_or_id)
        if cached is None:
            raise ModelSourceError(GATED_HELP.format(
                source=source, login=hub_login_command(),
                reason=f"it is not in the local cache and the hub ({constants.ENDPOINT}) cannot be reached"))
        log.info("the hub cannot be reached; loading %s from the local cache", path_or_id)
        return cached, None
    return path_or_id, None


def load_error(exc: BaseException, source: str, local: Path | None, what: str = "the checkpoint") -> ModelSourceError:
    """The one sentence a user gets when loading ``source`` failed (gated hub repo, offline, broken folder)."""
    if local is not None:
        return ModelSourceError(f"could not load {what} in {local}: {_hub_error_reason(exc)}")
    return ModelSourceError(GATED_HELP.format(source=source, login=hub_login_command(), reason=_hub_error_reason(exc)))
