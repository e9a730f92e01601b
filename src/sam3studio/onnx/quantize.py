"""int8 for the vision encoder: ONNX Runtime's dynamic quantization, and how far it moves the features.

Dynamic quantization (``onnxruntime.quantization.quantize_dynamic``) stores the weights of the matrix
products (``MatMul``/``Gemm`` with a constant weight) as int8 and quantizes their activations on the
fly, per tensor, to uint8; on CPUs with VNNI the products then run as integer dot products. Attention's
two activation-by-activation products (Q K^T and attention x V) stay float32, as do convolutions,
layer norms and softmax. No calibration data is needed.

Agreement with float32 is measured here on the features (cosine similarity of every FPN level, on a
few real photos); the engine-level agreement (mask IoU of the same instances) is measured by the
tests and the benchmark. On random weights these numbers say that the graph is right, not how
accurate int8 is on the real checkpoint: check that with ``sam3studio eval`` on your own data.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["QUANTIZED_OPS", "quantize_vision", "vision_agreement", "feature_cosine"]

log = logging.getLogger(__name__)

QUANTIZED_OPS = ("MatMul", "Gemm")


def quantize_vision(src: Path, dst: Path) -> dict[str, Any]:
    """Write the int8 version of the float32 vision graph ``src`` to ``dst`` (+ ``dst.data``); return its settings.

    The graph is first prepared with ONNX Runtime's ``quant_pre_process`` (shape inference and graph
    optimisation, as ORT's documentation recommends before quantizing).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    logging.getLogger("root").setLevel(logging.ERROR)  # the quantizer logs advice at WARNING on the root logger
    with tempfile.TemporaryDirectory(prefix="sam3studio-quant-", dir=dst.parent) as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(src), str(prepared), save_as_external_data=True, all_tensors_to_one_file=True,
                          external_data_location="prepared.onnx.data")
        for stale in (dst, dst.with_name(dst.name + ".data")):
            stale.unlink(missing_ok=True)
        quantize_dynamic(prepared, dst, op_types_to_quantize=list(QUANTIZED_OPS), per_channel=False,
                         weight_type=QuantType.QInt8, use_external_data_format=True)
    for written in (dst, dst.with_name(dst.name + ".data")):  # the quantizer writes its data file owner-only
        if written.exists():
            written.chmod(0o644)
    return {"method": "onnxruntime.quantization.quantize_dynamic", "pre_process": "quant_pre_process",
            "weights": "int8 (symmetric, per tensor)", "activations": "uint8, computed per call",
            "ops": list(QUANTIZED_OPS), "not_quantized": "attention's activation products, convolutions, "
            "normalisation, softmax (float32)", "from": src.name}


def feature_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two feature tensors, flattened, in float64."""
    a64, b64 = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    denom = float(np.linalg.norm(a64) * np.linalg.norm(b64))
    return float(a64 @ b64 / denom) if denom > 0 else 1.0


def _photos() -> list[tuple[str, np.ndarray]]:
    from skimage import data

    return [("astronaut", data.astronaut()), ("chelsea", data.chelsea()), ("coffee", data.coffee())]


def vision_agreement(fp32_path: Path, int8_path: Path, processor: Any) -> dict[str, Any]:
    """Cosine similarity of each FPN output of the int8 graph with the float32 one, on three photos."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    inputs = [processor.image_processor(images=rgb, return_tensors="pt")["pixel_values"].numpy().astype(np.float32)
              for _name, rgb in _photos()]
    outputs, names = [], []
    for path in (fp32_path, int8_path):  # one session at a time: two full-size ones do not fit beside the model
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        outputs.append([session.run(None, {"pixel_values": pixels}) for pixels in inputs])
        del session
    per_level: dict[str, list[float]] = {n: [] for n in names}
    for ref, q in zip(*outputs, strict=True):
        for n, a, b in zip(names, ref, q, strict=True):
            per_level[n].append(feature_cosine(a, b))
    return {"images": [n for n, _ in _photos()], "feature_cosine": {n: min(v) for n, v in per_level.items()},
            "feature_cosine_min": min(min(v) for v in per_level.values()),
            "note": "minimum over the images; features of the exported weights (random weights say nothing about "
                    "accuracy on the real checkpoint: check with `sam3studio eval`)"}
