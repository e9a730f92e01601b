"""The engine's three model stages on ONNX Runtime sessions (`OnnxRuntimeBackend`), and loading an export.

`sam3studio.core.Segmenter` keeps everything else: image and text caches, the prediction cache, prompt
batching, post-processing at the original resolution. Pre-processing (the `Sam3Processor` saved in the
export folder: resize, normalise, tokenise) is the same code the PyTorch backend runs, which is why the
package still installs torch and transformers; docs/deploy.md shows the graphs run without either.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sam3studio.core import HeadOutputs, Segmenter
from sam3studio.errors import ModelSourceError, install_hint
from sam3studio.model import RANDOM_SOURCE, resolve_checkpoint
from sam3studio.onnx.export import export_onnx
from sam3studio.onnx.manifest import MANIFEST, Manifest, is_onnx_export, read_manifest

if TYPE_CHECKING:
    import torch

__all__ = ["OnnxRuntimeBackend", "cached_export", "load_onnx_segmenter", "providers_for"]

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
_GPU_PROVIDERS = ("CUDAExecutionProvider", "ROCMExecutionProvider", "CoreMLExecutionProvider", "DmlExecutionProvider")


def _ort():
    try:
        import onnxruntime
    except ImportError:
        raise ModelSourceError(f"the onnxruntime backend needs the onnx extra: {install_hint('onnx')}") from None
    return onnxruntime


def providers_for(device: str = "auto") -> list[str]:
    """ONNX Runtime execution providers for ``device``: ``cpu``; ``cuda`` (needs onnxruntime-gpu); ``auto``:
    a GPU provider when the installed onnxruntime has one, then the CPU."""
    available = _ort().get_available_providers()
    name = (device or "auto").lower().split(":")[0]
    if name == "cpu":
        return [CPU]
    if name == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise ModelSourceError("device 'cuda' was requested but this onnxruntime has no CUDAExecutionProvider "
                                   "(install onnxruntime-gpu), or use --device cpu")
        return ["CUDAExecutionProvider", CPU]
    if name != "auto":
        raise ModelSourceError(f"the onnxruntime backend runs on auto, cpu or cuda, not {device!r}")
    return [p for p in available if p in _GPU_PROVIDERS][:1] + [CPU]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


class OnnxRuntimeBackend:
    """`sam3studio.core.ModelBackend` on ONNX Runtime: one session per graph of an export folder.

    Vision features are kept as NumPy arrays (one image each); text features and head outputs come back
    as torch tensors on the CPU, which the engine's caches and post-processing take as they are.
    """

    name = "onnxruntime"
    supports_refine = False

    def __init__(self, manifest: Manifest, *, vision: str = "auto", providers: list[str] | None = None,
                 threads: int | None = None, share: OnnxRuntimeBackend | None = None) -> None:
        """``share``: another backend of the same export whose text and head sessions this one reuses (only the
        vision graph differs, e.g. float32 and int8 side by side without holding the text encoder twice)."""
        ort = _ort()
        self.manifest = manifest
        self.vision_role = manifest.vision_role(vision)
        self.providers = providers or [CPU]
        options = ort.SessionOptions()
        options.log_severity_level = 3  # ORT's own warnings (e.g. nodes placed on the CPU) stay out of the terminal
        if threads:
            options.intra_op_num_threads = threads
        self.sessions = {}
        for role in (self.vision_role, "text_encoder", "prompt_heads", "prompt_heads_boxes"):
            if share is not None and role in share.sessions and role != self.vision_role:
                self.sessions[role] = share.sessions[role]
                continue
            path = manifest.path(role)
            try:
                self.sessions[role] = ort.InferenceSession(str(path), options, providers=self.providers)
            except Exception as exc:  # protobuf / external-data / graph errors all mean: this file is damaged
                raise ModelSourceError(f"could not load {path.name} in {manifest.directory}: {_first_line(exc)} "
                                       "(re-run `sam3studio export-onnx`)") from None
            expected = [i["name"] for i in manifest.graphs[role]["inputs"]]
            got = [i.name for i in self.sessions[role].get_inputs()]
            if got != expected:
                raise ModelSourceError(f"{path.name} in {manifest.directory} takes inputs {got}, the manifest says "
                                       f"{expected} (re-run `sam3studio export-onnx`)")
        self.fpn_names = manifest.fpn_outputs
        self._input_dtype = {role: {i.name: _np_dtype(i.type) for i in s.get_inputs()}
                             for role, s in self.sessions.items()}

    def _run(self, role: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        types = self._input_dtype[role]
        return self.sessions[role].run(None, {k: np.ascontiguousarray(v, dtype=types[k]) for k, v in feeds.items()})

    # ------------------------------------------------------------------ the three stages
    def vision_features(self, pixel_values: torch.Tensor) -> list[Any]:
        outs = self._run(self.vision_role, {"pixel_values": pixel_values.float().numpy()})
        n = pixel_values.shape[0]
        if n == 1:
            return [tuple(outs)]
        return [tuple(x[i : i + 1].copy() for x in outs) for i in range(n)]  # copies: one image does not pin the batch

    def text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        import torch

        (feats,) = self._run("text_encoder", {"input_ids": input_ids.cpu().numpy(),
                                              "attention_mask": attention_mask.cpu().numpy()})
        return torch.from_numpy(feats).float()

    def heads(self, vision: Any, text: torch.Tensor, text_mask: torch.Tensor, boxes: torch.Tensor | None = None,
              box_labels: torch.Tensor | None = None) -> HeadOutputs:
        import torch

        feeds = dict(zip(self.fpn_names, vision, strict=True))
        feeds.update(text_features=text.float().cpu().numpy(), text_mask=text_mask.cpu().numpy())
        role = "prompt_heads"
        if boxes is not None and box_labels is not None:
            role = "prompt_heads_boxes"
            feeds.update(input_boxes=boxes.float().cpu().numpy()[None], input_boxes_labels=box_labels.cpu().numpy()[None])
        logits, pred_boxes, masks, presence = (torch.from_numpy(x).float() for x in self._run(role, feeds))
        return HeadOutputs(logits, pred_boxes, masks, presence)

    def describe(self) -> dict[str, str]:
        vision = "int8 (dynamic quantization)" if self.vision_role.endswith("int8") else self.manifest.dtype
        return {"backend": "onnxruntime", "compiled": f"onnxruntime {_ort().__version__}",
                "providers": ", ".join(self.sessions[self.vision_role].get_providers()), "vision_encoder": vision,
                "exported_from": str(self.manifest.source.get("model", ""))}


def _np_dtype(onnx_type: str) -> Any:
    return {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
            "tensor(int32)": np.int32, "tensor(bool)": np.bool_}.get(onnx_type, np.float32)


# ---------------------------------------------------------------------------- exports on first use
def cache_root() -> Path:
    """Where exports made on first use live: ``$SAM3STUDIO_DATA_DIR/onnx`` (default ``~/.cache/sam3studio/onnx``)."""
    return Path(os.environ.get("SAM3STUDIO_DATA_DIR") or "~/.cache/sam3studio").expanduser() / "onnx"


def _cache_key(source: str, dtype: str, quantize: str | None) -> str:
    from sam3studio import __version__

    load_from, local = resolve_checkpoint(source)
    h = hashlib.blake2b(digest_size=10)
    h.update(f"{__version__}\0{load_from}\0{dtype}\0{quantize}".encode())
    if local is not None:  # a changed checkpoint folder gets a new export
        for f in sorted(local.iterdir()):
            if f.is_file():
                st = f.stat()
                h.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()


def cached_export(source: str, dtype: str = "float32", quantize: str | None = None) -> Path:
    """The export of checkpoint ``source`` in the cache, made now when missing (a temporary folder for ``random``,
    whose weights are new on every load)."""
    if source == RANDOM_SOURCE:
        out = Path(tempfile.mkdtemp(prefix="sam3studio-onnx-random-"))
        export_onnx(source, out, dtype=dtype, quantize=quantize, overwrite=True)
        return out
    out = cache_root() / _cache_key(source, dtype, quantize)
    if not (out / MANIFEST).is_file():
        log.info("exporting %s to ONNX in %s (first use)", source, out)
        export_onnx(source, out, dtype=dtype, quantize=quantize, overwrite=True)
    return out


def load_onnx_segmenter(source: str, device: str = "auto", dtype: str = "auto", translator: Any = None,
                        compile: bool = False, threads: int | None = None, **options: Any) -> Segmenter:
    """A `Segmenter` on ONNX Runtime from an export folder, or from a checkpoint (exported on first use).

    ``dtype``: ``auto`` (the export's default vision graph: int8 when it was exported with
    ``--quantize int8``), ``float32`` / ``float16`` (what it was exported in), or ``int8``.
    """
    import torch
    from transformers import Sam3Processor

    if compile:
        raise ModelSourceError("--compile applies to the PyTorch backend; ONNX Runtime optimises its graphs itself")
    variant = (dtype or "auto").lower()
    variant = {"fp32": "float32", "fp16": "float16"}.get(variant, variant)
    if is_onnx_export(source):
        folder = Path(source).expanduser()
    else:
        if variant not in ("auto", "float32", "float16", "int8"):
            raise ModelSourceError(f"the onnxruntime backend exports float32, float16 or int8, not {dtype!r}")
        folder = cached_export(source, dtype="float16" if variant == "float16" else "float32",
                               quantize="int8" if variant == "int8" else None)
    manifest = read_manifest(folder)
    backend = OnnxRuntimeBackend(manifest, vision=variant, providers=providers_for(device), threads=threads)
    try:
        processor = Sam3Processor.from_pretrained(str(folder))
    except Exception as exc:
        raise ModelSourceError(f"could not load the processor (tokenizer, image settings) in {folder}: "
                               f"{_first_line(exc)} (re-run `sam3studio export-onnx`)") from None
    return Segmenter(None, processor, device="cpu", dtype=torch.float16 if manifest.dtype == "float16" else torch.float32,
                     source=str(source), architecture=f"{manifest.source.get('architecture', 'Sam3Model')} (ONNX)",
                     translator=translator, backend=backend, **options)
