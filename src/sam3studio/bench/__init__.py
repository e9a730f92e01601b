"""Benchmarks of the engine against the documented transformers usage (``sam3studio bench``).

`run_bench` returns every figure as a dict; `sam3studio.bench.cli.bench_command` prints it as a
table. Importing this package is cheap: torch loads only when a benchmark runs.
"""

from sam3studio.bench.runner import (
    BASELINE_EXTRAPOLATED,
    BASELINE_MEASURED,
    GOALS,
    SECTIONS,
    BenchError,
    BenchOptions,
    baseline_segment,
    fp32_eager_copy,
    mask_agreement,
    run_bench,
)

__all__ = [
    "BASELINE_EXTRAPOLATED",
    "BASELINE_MEASURED",
    "GOALS",
    "SECTIONS",
    "BenchError",
    "BenchOptions",
    "baseline_segment",
    "fp32_eager_copy",
    "mask_agreement",
    "run_bench",
]
