"""Export SAM 3's detector as four ONNX graphs, split where the engine caches:

- ``vision_encoder``: ``pixel_values (B, 3, S, S)`` -> the FPN levels the heads read (run once per image);
- ``text_encoder``: ``input_ids, attention_mask (K, 32)`` -> ``text_features (K, 32, D)`` (cached per prompt);
- ``prompt_heads``: one image's FPN levels (batch 1) + K prompts' text features -> K prompts' logits,
  boxes, masks and presence, in one pass (the vision features are broadcast inside the graph);
- ``prompt_heads_boxes``: the same with N exemplar boxes, shared by the K prompts.

Each is traced with ``torch.export`` (non-strict) and translated by the dynamo ONNX exporter
(``torch.onnx.export(dynamo=True)``), weights in ONNX's external-data format, checked with
``onnx.checker``. Two things are adjusted for the export only, and restored after: attention runs as
explicit matrix products (transformers' "eager"; its SDPA path does not decompose with a dynamic
prompt dimension), and the geometry encoder runs once on the boxes and is broadcast to the K prompts
(its ``roi_align`` takes a Python list per batch element, which would fix K; every prompt shares the
same boxes, so the result is the same).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sam3studio.errors import InputError, ModelSourceError, install_hint
from sam3studio.io.files import atomic_write_json
from sam3studio.model import RANDOM_SOURCE, load_model, resolve_checkpoint
from sam3studio.onnx.manifest import FORMAT, FORMAT_VERSION, MANIFEST, Manifest, read_manifest
from sam3studio.onnx.quantize import quantize_vision, vision_agreement

__all__ = ["DEFAULT_OPSET", "EXPORT_DTYPES", "QUANTIZE_MODES", "check_options", "export_model", "export_onnx",
           "source_fingerprint"]

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18
EXPORT_DTYPES = ("float32", "float16")
QUANTIZE_MODES = ("int8",)
TEXT_TOKENS = 32  # SAM 3's text context; the processor pads every prompt to it
HEAD_OUTPUTS = ["pred_logits", "pred_boxes", "pred_masks", "presence_logits"]
_DIM_NAMES = {"pixel_values": {0: "batch"}, "input_ids": {0: "prompts"}, "text_features": {0: "prompts"},
              "input_boxes": {1: "boxes"}}


def _torch():
    import torch

    return torch


def require_onnx() -> None:
    """Raise `ModelSourceError` with the install command when the ``onnx`` extra is missing."""
    import importlib

    missing = []
    for name in ("onnx", "onnxscript", "onnxruntime"):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ModelSourceError(f"ONNX export needs {', '.join(missing)} (the onnx extra): {install_hint('onnx')}")


# ---------------------------------------------------------------------------- the graphs as modules
def _modules(model: Any) -> dict[str, Any]:
    """The four export wrappers around ``model`` (built lazily: torch is imported here)."""
    torch = _torch()
    from transformers.modeling_outputs import BaseModelOutputWithPooling
    from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

    class Vision(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixel_values):
            out = self.model.get_vision_features(pixel_values=pixel_values)
            return tuple(out.fpn_hidden_states[:-1])  # the heads never read the last (coarsest) level

    class Text(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output

    class Heads(torch.nn.Module):
        def __init__(self, with_boxes: bool) -> None:
            super().__init__()
            self.model = model
            self.with_boxes = with_boxes

        def forward(self, *args):
            n_fpn = len(args) - (4 if self.with_boxes else 2)
            fpn, (text, text_mask, *boxes) = args[:n_fpn], args[n_fpn:]
            k = text.shape[0]
            encode = self.model.vision_encoder.neck.position_encoding
            pos = tuple(encode(x.shape, x.device, x.dtype) for x in fpn)  # depends on shapes only
            vision = Sam3VisionEncoderOutput(  # the forward drops the last level: a placeholder stands in for it
                fpn_hidden_states=tuple(x.expand(k, -1, -1, -1) for x in fpn) + (fpn[-1],),
                fpn_position_encoding=tuple(p.expand(k, -1, -1, -1) for p in pos) + (pos[-1],),
            )
            extra = {}
            if self.with_boxes:
                n = boxes[0].shape[1]
                extra = {"input_boxes": boxes[0].expand(k, n, 4), "input_boxes_labels": boxes[1].expand(k, n)}
            out = self.model(vision_embeds=vision, text_embeds=BaseModelOutputWithPooling(pooler_output=text),
                             attention_mask=text_mask, **extra)
            return out.pred_logits, out.pred_boxes, out.pred_masks, out.presence_logits

    return {"vision": Vision, "text": Text, "heads": Heads}


def _shared_geometry(inner: Any) -> Any:
    """The geometry encoder run on the first prompt's boxes and broadcast to all K (they are all the same)."""
    torch = _torch()
    from transformers.models.sam3.modeling_sam3 import Sam3GeometryEncoderOutput

    class SharedGeometry(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, box_embeddings, box_mask, box_labels, img_feats, img_pos_embeds=None):
            k = box_embeddings.shape[0]
            pos = tuple(x[:1] for x in img_pos_embeds) if img_pos_embeds is not None else None
            out = self.inner(box_embeddings[:1], box_mask[:1], box_labels[:1], tuple(x[:1] for x in img_feats), pos)
            return Sam3GeometryEncoderOutput(last_hidden_state=out.last_hidden_state.expand(k, -1, -1),
                                             attention_mask=out.attention_mask.expand(k, -1))

    return SharedGeometry()


def _set_attention(model: Any, implementation: str) -> None:
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model.set_attn_implementation(implementation)
    finally:
        hf_logging.set_verbosity(level)


@contextlib.contextmanager
def _export_mode(model: Any) -> Iterator[None]:
    """Eager attention and the shared geometry encoder for the duration of the export; restored after."""
    attention = getattr(model.config, "_attn_implementation", None) or "sdpa"
    geometry = model.geometry_encoder
    was_training = model.training
    _set_attention(model, "eager")
    model.geometry_encoder = _shared_geometry(geometry)
    model.eval()
    try:
        yield
    finally:
        model.geometry_encoder = geometry
        _set_attention(model, attention)
        model.train(was_training)


# ---------------------------------------------------------------------------- one graph
def _export_graph(module: Any, args: tuple, dynamic: dict[str, Any], names: list[str], outputs: list[str],
                  path: Path, opset: int) -> None:
    torch = _torch()
    import onnx

    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.export.export(module, args, dynamic_shapes=dynamic, strict=False)
        torch.onnx.export(program, args, str(path), dynamo=True, input_names=names, output_names=outputs,
                          opset_version=opset, external_data=True, verbose=False)
    onnx.checker.check_model(str(path), full_check=True)


def _name_dims(path: Path, names: dict[str, dict[int, str]]) -> None:
    """Give the dynamic dimensions readable names (``batch``, ``prompts``, ``boxes``) in place of the tracer's
    symbols (``s43``), everywhere they occur; the weights (external data) are not touched."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    rename: dict[str, str] = {}
    for value in proto.graph.input:
        for axis, name in names.get(value.name, {}).items():
            dim = value.type.tensor_type.shape.dim[axis]
            if dim.HasField("dim_param"):
                rename[dim.dim_param] = name
    for value in [*proto.graph.input, *proto.graph.output, *proto.graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param") and dim.dim_param in rename:
                dim.dim_param = rename[dim.dim_param]
    onnx.save(proto, str(path))


def _graph_entry(path: Path) -> dict[str, Any]:
    """The manifest's entry for one written graph: files, sizes and every input and output with its shape."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)

    def describe(values) -> list[dict[str, Any]]:
        out = []
        for v in values:
            t = v.type.tensor_type
            shape = [d.dim_param if d.HasField("dim_param") else int(d.dim_value) for d in t.shape.dim]
            out.append({"name": v.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name, "shape": shape})
        return out

    data = path.with_name(path.name + ".data")
    files = [path] + ([data] if data.is_file() else [])
    return {"file": path.name, "data": data.name if data.is_file() else None,
            "bytes": {f.name: f.stat().st_size for f in files},
            "inputs": describe(proto.graph.input), "outputs": describe(proto.graph.output)}


# ---------------------------------------------------------------------------- hashes and constants
def _files_sha256(folder: Path) -> tuple[str, list[str]] | None:
    files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin") and p.is_file())
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 24):
                h.update(chunk)
    return h.hexdigest(), [f.name for f in files]


def _state_sha256(model: Any) -> str:
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode() + b"\0")
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(_torch().uint8).numpy().tobytes())
    return h.hexdigest()


def source_fingerprint(source: str, model: Any) -> dict[str, Any]:
    """Which checkpoint an export came from: the sha256 of its weight files (or of the weights themselves
    for ``random`` and other in-memory models)."""
    folder: Path | None = None
    if source and source != RANDOM_SOURCE:
        with contextlib.suppress(ModelSourceError):
            load_from, local = resolve_checkpoint(source)
            folder = local
            if folder is None:
                from huggingface_hub import snapshot_download

                with contextlib.suppress(Exception):
                    folder = Path(snapshot_download(load_from, local_files_only=True))
    found = _files_sha256(folder) if folder is not None else None
    if found is not None:
        return {"model": source, "sha256": found[0], "sha256_of": found[1]}
    return {"model": source, "sha256": _state_sha256(model), "sha256_of": "state_dict (name + raw bytes, in order)"}


def _preprocess(processor: Any, model: Any) -> dict[str, Any]:
    ip = processor.image_processor
    size = ip.size
    resample = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}.get(int(getattr(ip, "resample", 2)), "bilinear")
    return {
        "image": {"height": int(size["height"]), "width": int(size["width"]), "layout": "NCHW", "channels": "RGB",
                  "resize": f"{resample} to height x width, aspect ratio not kept (antialiased, as torchvision)",
                  "rescale_factor": float(ip.rescale_factor), "mean": [float(m) for m in ip.image_mean],
                  "std": [float(s) for s in ip.image_std],
                  "formula": "((pixel * rescale_factor) - mean) / std, per channel"},
        "text": {"max_tokens": TEXT_TOKENS, "padding": "max_length", "tokenizer": "tokenizer files in this folder "
                 "(transformers CLIPTokenizer; `Sam3Processor.from_pretrained(folder)` loads them)",
                 "hidden_size": int(model.config.detr_encoder_config.hidden_size)},
    }


POSTPROCESS = {
    "scores": "sigmoid(pred_logits) * sigmoid(presence_logits), per query",
    "boxes": "pred_boxes are normalised XYXY of the square model input: multiply by (W, H, W, H) of the original image",
    "masks": "sigmoid(pred_masks), bilinear upsampling (align_corners=False) to the original (H, W), > mask_threshold",
    "score_threshold": 0.5,
    "mask_threshold": 0.5,
    "exemplar_boxes": "input_boxes (1, N, 4) normalised cx, cy, w, h of the original image; input_boxes_labels "
                      "(1, N) 1 = positive, 0 = negative; with no text prompt SAM 3 pairs them with the text 'visual'",
}


# ---------------------------------------------------------------------------- the export
def _example_inputs(model: Any, processor: Any, dtype: Any) -> dict[str, Any]:
    torch = _torch()
    size = processor.image_processor.size
    pixels = torch.randn(2, 3, int(size["height"]), int(size["width"]), dtype=dtype)
    with torch.no_grad():
        fpn = tuple(x[:1].contiguous() for x in model.get_vision_features(pixel_values=pixels).fpn_hidden_states[:-1])
    vocab = int(model.config.text_config.vocab_size)
    ids = torch.randint(0, vocab, (3, TEXT_TOKENS), dtype=torch.int64)
    mask = torch.ones(3, TEXT_TOKENS, dtype=torch.int64)
    mask[:, 6:] = 0
    hidden = int(model.config.detr_encoder_config.hidden_size)
    text = torch.randn(3, TEXT_TOKENS, hidden, dtype=dtype)
    boxes = torch.tensor([[[0.3, 0.4, 0.2, 0.3], [0.7, 0.6, 0.3, 0.2]]], dtype=dtype)
    labels = torch.tensor([[1, 0]], dtype=torch.int64)
    return {"pixels": pixels, "fpn": fpn, "ids": ids, "mask": mask, "text": text, "boxes": boxes, "labels": labels}


def _write_graphs(model: Any, processor: Any, out: Path, opset: int, say: Callable[[str], None]) -> dict[str, Any]:
    torch = _torch()
    from torch.export import Dim

    dtype = next(model.parameters()).dtype
    ex = _example_inputs(model, processor, dtype)
    # min=2: the tracer would otherwise specialise on size 1; the graphs run at any size from 1 (tests check 1).
    batch, k, n = Dim("batch", min=2), Dim("prompts", min=2), Dim("boxes", min=2)
    fpn_names = [f"fpn_{i}" for i in range(len(ex["fpn"]))]
    mods = _modules(model)
    graphs: dict[str, Any] = {}
    plan = [
        ("vision_encoder", mods["vision"](), (ex["pixels"],), {"pixel_values": {0: batch}}, ["pixel_values"], fpn_names),
        ("text_encoder", mods["text"](), (ex["ids"], ex["mask"]), {"input_ids": {0: k}, "attention_mask": {0: k}},
         ["input_ids", "attention_mask"], ["text_features"]),
        ("prompt_heads", mods["heads"](False), (*ex["fpn"], ex["text"], ex["mask"]),
         {"args": (*[None] * len(fpn_names), {0: k}, {0: k})}, [*fpn_names, "text_features", "text_mask"], HEAD_OUTPUTS),
        ("prompt_heads_boxes", mods["heads"](True), (*ex["fpn"], ex["text"], ex["mask"], ex["boxes"], ex["labels"]),
         {"args": (*[None] * len(fpn_names), {0: k}, {0: k}, {1: n}, {1: n})},
         [*fpn_names, "text_features", "text_mask", "input_boxes", "input_boxes_labels"], HEAD_OUTPUTS),
    ]
    with _export_mode(model), torch.no_grad():
        for role, module, args, dynamic, names, outputs in plan:
            say(f"exporting {role}")
            t = time.perf_counter()
            path = out / f"{role}.onnx"
            _export_graph(module, args, dynamic, names, outputs, path, opset)
            _name_dims(path, _DIM_NAMES)
            graphs[role] = _graph_entry(path)
            log.info("exported %s in %.1f s", role, time.perf_counter() - t)
    return graphs


def _to_float16(path: Path) -> None:
    """Convert a float32 graph to float16 weights and compute, float32 inputs and outputs (ONNX Runtime's converter)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    proto = onnx.load(str(path))
    half = OnnxModel(convert_float_to_float16(proto, keep_io_types=True, disable_shape_infer=True))
    half.topological_sort()  # the converter appends its input casts at the end of the node list
    half = half.model
    data = path.with_name(path.name + ".data")
    data.unlink(missing_ok=True)
    onnx.save(half, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=data.name)
    onnx.checker.check_model(str(path), full_check=True)


def check_options(opset: int, dtype: str, quantize: str | None) -> None:
    """Raise `InputError` for an opset, dtype or quantize mode the export does not offer."""
    if dtype not in EXPORT_DTYPES:
        raise InputError(f"dtype must be one of {', '.join(EXPORT_DTYPES)}, got {dtype!r}")
    if quantize is not None and quantize not in QUANTIZE_MODES:
        raise InputError(f"quantize must be one of {', '.join(QUANTIZE_MODES)} or none, got {quantize!r}")
    if quantize and dtype != "float32":
        raise InputError("--quantize int8 starts from the float32 vision encoder; use it with --dtype float32")
    if not 17 <= opset <= 23:
        raise InputError(f"opset must be between 17 and 23, got {opset}")


def export_model(model: Any, processor: Any, out: str | Path, *, source: str, opset: int = DEFAULT_OPSET,
                 dtype: str = "float32", quantize: str | None = None, overwrite: bool = False,
                 progress: Callable[[str], None] | None = None) -> Manifest:
    """Export a loaded `Sam3Model` (and its `Sam3Processor`) to ``out``; returns the checked manifest.

    The model is changed for the export only (see the module docstring) and restored; it must be on the
    CPU in float32. ``dtype="float16"`` converts the graphs after the export (float32 inputs and outputs).
    ``quantize="int8"`` adds ``vision_encoder_int8.onnx`` (dynamic int8 quantization of the vision
    encoder's matrix products) and makes it the default vision graph. The manifest is written last:
    its presence means the export is complete.
    """
    torch = _torch()
    from sam3studio import __version__

    check_options(opset, dtype, quantize)
    require_onnx()
    param = next(model.parameters())
    if param.device.type != "cpu" or param.dtype != torch.float32:
        raise InputError(f"export needs the model on the CPU in float32, got {param.device} {param.dtype}")
    say = progress or (lambda _m: None)
    out = Path(out).expanduser()
    if (out / MANIFEST).exists() and not overwrite:
        raise InputError(f"{out} already holds an export (manifest.json); pass --overwrite to replace it")
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # an interrupted re-export must not look complete
    t0 = time.perf_counter()
    graphs = _write_graphs(model, processor, out, opset, say)
    if dtype == "float16":
        for role in graphs:
            say(f"converting {role} to float16")
            _to_float16(out / graphs[role]["file"])
            graphs[role] = _graph_entry(out / graphs[role]["file"])
    quantization = None
    if quantize == "int8":
        say("quantizing the vision encoder to int8 (dynamic)")
        quantization = quantize_vision(out / graphs["vision_encoder"]["file"], out / "vision_encoder_int8.onnx")
        graphs["vision_encoder_int8"] = _graph_entry(out / "vision_encoder_int8.onnx")
        say("checking int8 against float32 (feature cosine similarity)")
        quantization["agreement"] = vision_agreement(out / "vision_encoder.onnx", out / "vision_encoder_int8.onnx",
                                                     processor)
    processor.save_pretrained(str(out))
    import onnx
    import transformers

    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "created_by": f"sam3studio {__version__}", "torch": torch.__version__, "transformers": transformers.__version__,
        "onnx": onnx.__version__, "opset": opset, "dtype": dtype, "exporter": "torch.export (non-strict) + "
        "torch.onnx.export(dynamo=True); attention as explicit matmuls; onnx.checker full_check",
        "source": {**source_fingerprint(source, model), "architecture": type(model).__name__},
        "graphs": graphs, "default_vision": "vision_encoder_int8" if quantize else "vision_encoder",
        "quantization": quantization, "preprocess": _preprocess(processor, model), "postprocess": POSTPROCESS,
        "not_exported": ["click refinement (the SAM 3 tracker's prompt encoder and mask decoder)", "video tracking"],
        "export_s": round(time.perf_counter() - t0, 1),
    }
    atomic_write_json(out / MANIFEST, manifest)
    return read_manifest(out)


def export_onnx(source: str, out: str | Path, *, opset: int = DEFAULT_OPSET, dtype: str = "float32",
                quantize: str | None = None, overwrite: bool = False,
                progress: Callable[[str], None] | None = None) -> Manifest:
    """Load ``source`` (any `load_model` source) on the CPU in float32 and export it to ``out`` (`export_model`)."""
    check_options(opset, dtype, quantize)
    require_onnx()
    if (Path(out).expanduser() / MANIFEST).exists() and not overwrite:
        raise InputError(f"{out} already holds an export (manifest.json); pass --overwrite to replace it")
    say = progress or (lambda _m: None)
    say(f"loading {source}")
    loaded = load_model(source, device="cpu", dtype="float32")
    if loaded.architecture != "Sam3Model":
        raise ModelSourceError(f"export-onnx supports SAM 3 (Sam3Model) checkpoints; {source} is {loaded.architecture}")
    try:
        return export_model(loaded.model, loaded.processor, out, source=loaded.source, opset=opset, dtype=dtype,
                            quantize=quantize, overwrite=overwrite, progress=say)
    except (InputError, ModelSourceError):
        raise
    except Exception as exc:  # an exporter failure: say which, keep the folder out of the way of loaders
        with contextlib.suppress(OSError):
            (Path(out).expanduser() / MANIFEST).unlink(missing_ok=True)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelSourceError(f"the ONNX export of {source} failed: {first[:300]}") from exc


def remove_export(out: Path) -> None:
    """Delete an export folder (used for exports into a temporary cache)."""
    shutil.rmtree(out, ignore_errors=True)
