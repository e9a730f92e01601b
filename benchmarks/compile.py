"""torch.compile of the vision encoder: compile time, then eager vs compiled forward time (docs/benchmarks.md).

    .venv/bin/python benchmarks/compile.py --model random --device cpu --dtype bfloat16 --repeats 3

One process, one model: the eager vision encoder is timed first (median of ``repeats`` after a
warm-up), then it is compiled in place (`sam3studio.model.compile_vision_encoder`, as
``--compile`` does), the first compiled call is timed (it compiles), then the compiled encoder
(median of ``repeats``). The compiled features are compared with the eager ones.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="random")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import torch

    from sam3studio.model import compile_vision_encoder, inference_context, load_model

    loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    model, device, dtype = loaded.model, loaded.device, loaded.dtype
    size = loaded.processor.image_processor.size["height"]
    pixels = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device, dtype)

    def forward():
        with inference_context(device, dtype):
            out = model.get_vision_features(pixel_values=pixels)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out

    def timed(n: int) -> list[float]:
        samples = []
        for _ in range(n):
            t = time.perf_counter()
            forward()
            samples.append(time.perf_counter() - t)
        return samples

    forward()
    eager = timed(args.repeats)
    reference = forward()
    compile_vision_encoder(model)
    t = time.perf_counter()
    compiled_out = forward()
    first = time.perf_counter() - t
    compiled = timed(args.repeats)
    diff = max(float((a.float() - b.float()).abs().max())
               for a, b in zip(reference.fpn_hidden_states, compiled_out.fpn_hidden_states, strict=True))
    scale = max(float(a.float().abs().max()) for a in reference.fpn_hidden_states)
    report = {"model": args.model, "device": str(device), "dtype": str(dtype).removeprefix("torch."), "input": size,
              "eager_s": statistics.median(eager), "eager_samples": eager, "first_compiled_call_s": first,
              "compiled_s": statistics.median(compiled), "compiled_samples": compiled,
              "speedup": statistics.median(eager) / statistics.median(compiled),
              "max_abs_diff": diff, "max_abs_feature": scale, "torch": torch.__version__}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
