"""Result drift: per-prompt distributions of what the model answers, and how far two of them are apart.

Three numbers are watched per prompt and image: SAM 3's presence score (the image-level probability that
the concept is there; it does not depend on any threshold), the top instance score (0 when nothing passed
the request's threshold) and the number of instances kept. Each is counted into fixed bins (`BINS`), so a
distribution is a short vector of counts that adds up hour by hour (`store.DriftStore`) or over an
evaluation run (`sam3studio eval --save-baseline`), and two of them compare with the population-stability
index (`psi`). Prompts are compared after `normalize_prompt`.

Reading PSI (the usual rule of thumb in credit scoring, where the index comes from): under 0.1 the two
distributions are alike, 0.1-0.25 a moderate shift worth watching, above 0.25 a real change. Small samples
differ by chance too: between two samples of one distribution, PSI is about (1/n + 1/m) times a chi-square
variable with (bins - 1) degrees of freedom (Yurdakul, 2018). `compare` therefore flags a metric only when its
PSI passes both the threshold and what chance alone reaches 99 times in 100 at those sample sizes (`noise`).
"""

from __future__ import annotations

import bisect
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from sam3studio.io.files import atomic_write_json

__all__ = ["BASELINE_FORMAT", "BINS", "METRICS", "OTHER", "Distributions", "PromptDrift", "bin_index", "compare",
           "noise", "normalize_prompt", "outcome", "parse_duration", "psi"]

METRICS = ("presence", "top_score", "instances")
# Upper edges (inclusive) of each metric's bins; the last bin is open. Scores: ten bins of 0.1 on [0, 1].
# Instance counts: 0, 1, 2, 3-4, 5-9, 10-19, 20-49, 50 and more.
BINS: dict[str, tuple[float, ...]] = {
    "presence": tuple(round(0.1 * i, 1) for i in range(1, 10)),
    "top_score": tuple(round(0.1 * i, 1) for i in range(1, 10)),
    "instances": (0, 1, 2, 4, 9, 19, 49),
}
OTHER = "__other__"  # the prompts beyond the bounds, together (underscores: a real prompt "other" keeps its own)
BASELINE_FORMAT = "sam3studio-drift-baseline"
PSI_WATCH, PSI_DRIFT = 0.1, 0.25
_EPS = 1e-4  # a bin empty on one side counts as this share, so PSI stays finite
_SPACES = re.compile(r"\s+")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([mhdw])")
_UNIT_S = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """Seconds in ``"90m"``, ``"24h"``, ``"7d"``, ``"2w"`` (or several: ``"1d12h"``); ValueError otherwise."""
    spec = text.replace(" ", "").lower()
    parts = _DURATION.findall(spec)
    if not spec or "".join(n + u for n, u in parts) != spec:
        raise ValueError(f"{text!r} is not a duration like 90m, 24h, 7d or 2w")
    seconds = sum(float(n) * _UNIT_S[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"{text!r}: a duration must be positive")
    return seconds


def normalize_prompt(text: str) -> str:
    """The key a prompt is watched under: lower case, surrounding and repeated whitespace removed."""
    return _SPACES.sub(" ", text).strip().lower()


def bin_index(metric: str, value: float) -> int:
    """The bin of ``value``: the first upper edge it does not exceed (scores above 0.9 and large counts
    go to the last, open bin)."""
    return bisect.bisect_left(BINS[metric], value)


def noise(reference: Sequence[float], current: Sequence[float], quantile: float = 0.99) -> float:
    """The PSI that two samples of one distribution, as large as these, stay below with probability ``quantile``."""
    from scipy.stats import chi2  # deferred: scipy.stats is slow to import and only reports need it

    r, c = np.asarray(reference, dtype=float), np.asarray(current, dtype=float)
    bins = int(np.count_nonzero((r + c) > 0))
    if bins < 2:
        return 0.0
    return float(chi2.ppf(quantile, bins - 1) * (1 / r.sum() + 1 / c.sum()))


def psi(reference: Sequence[float], current: Sequence[float]) -> float:
    """Population-stability index of two binned counts: sum over bins of (c - r) * ln(c / r) on the shares.

    0 for identical shapes, symmetric, and grows with the shift; a bin empty on one side is taken as a
    share of 1e-4. Raises ValueError when either side is empty or the bins differ.
    """
    r, c = np.asarray(reference, dtype=float), np.asarray(current, dtype=float)
    if r.shape != c.shape or r.ndim != 1:
        raise ValueError(f"both distributions need the same bins, got {r.shape} and {c.shape}")
    if r.sum() <= 0 or c.sum() <= 0:
        raise ValueError("PSI of an empty distribution")
    r = np.clip(r / r.sum(), _EPS, None)
    c = np.clip(c / c.sum(), _EPS, None)
    return float(np.sum((c - r) * np.log(c / r)))


@dataclass
class Distributions:
    """Binned counts per prompt and metric: ``counts[prompt][metric]`` is a list of len(BINS[metric]) + 1 ints."""

    counts: dict[str, dict[str, list[int]]] = field(default_factory=dict)

    def _row(self, prompt: str) -> dict[str, list[int]]:
        row = self.counts.get(prompt)
        if row is None:
            row = self.counts[prompt] = {m: [0] * (len(BINS[m]) + 1) for m in METRICS}
        return row

    def add(self, prompt: str, presence: float, top_score: float, instances: int) -> None:
        """One image's answer for one prompt (``prompt`` as given: normalise it first)."""
        row = self._row(prompt)
        for metric, value in zip(METRICS, (presence, top_score, instances), strict=True):
            row[metric][bin_index(metric, value)] += 1

    def add_bin(self, prompt: str, metric: str, index: int, n: int) -> None:
        self._row(prompt)[metric][index] += n

    def total(self, prompt: str) -> int:
        row = self.counts.get(prompt)
        return sum(row["presence"]) if row else 0

    def __len__(self) -> int:
        return len(self.counts)

    # ------------------------------------------------------------------ baseline files
    def to_baseline(self, source: str) -> dict[str, Any]:
        return {"format": BASELINE_FORMAT, "version": 1, "created": datetime.now(UTC).isoformat(),
                "source": source, "bins": {m: list(BINS[m]) for m in METRICS},
                "prompts": {p: {m: list(v) for m, v in row.items()} for p, row in sorted(self.counts.items())}}

    def save_baseline(self, path: str | Path, source: str) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, self.to_baseline(source), indent=1)
        return path

    @classmethod
    def from_baseline(cls, data: Any, src: str = "baseline") -> Distributions:
        """Parse `to_baseline` output; ValueError with what is wrong otherwise."""
        if not isinstance(data, Mapping) or data.get("format") != BASELINE_FORMAT:
            raise ValueError(f"{src}: not a drift baseline (expected \"format\": \"{BASELINE_FORMAT}\"; "
                             "write one with `sam3studio eval --save-baseline` or `sam3studio drift --save-baseline`)")
        bins = data.get("bins")
        if bins != {m: list(BINS[m]) for m in METRICS}:
            raise ValueError(f"{src}: its bins differ from this version's; save the baseline again")
        prompts = data.get("prompts")
        if not isinstance(prompts, Mapping):
            raise ValueError(f"{src}: 'prompts' must map prompts to their binned counts")
        out = cls()
        for prompt, row in prompts.items():
            for m in METRICS:
                values = row.get(m) if isinstance(row, Mapping) else None
                if (not isinstance(values, list) or len(values) != len(BINS[m]) + 1
                        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values)):
                    raise ValueError(f"{src}: prompts[{prompt!r}].{m} must be {len(BINS[m]) + 1} counts >= 0")
            out.counts[str(prompt)] = {m: list(row[m]) for m in METRICS}
        return out

    @classmethod
    def load_baseline(cls, path: str | Path) -> Distributions:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"could not read the baseline {path}: {exc}") from None
        return cls.from_baseline(data, str(path))


@dataclass(frozen=True)
class PromptDrift:
    """One prompt's comparison. ``status``: drift (some metric's PSI >= the threshold and >= its noise),
    watch (>= 0.1 and >= the noise), stable, too_few (either side has fewer than ``min_count`` images), new
    (absent from the reference) or gone (absent now)."""

    prompt: str
    reference_n: int
    current_n: int
    psi: dict[str, float | None]
    status: str
    noise: dict[str, float | None] = field(default_factory=dict)

    @property
    def max_psi(self) -> float | None:
        values = [v for v in self.psi.values() if v is not None]
        return max(values) if values else None

    def to_dict(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "reference_n": self.reference_n, "current_n": self.current_n,
                "psi": {k: (None if v is None else round(v, 6)) for k, v in self.psi.items()},
                "max_psi": None if self.max_psi is None else round(self.max_psi, 6),
                "noise": {k: (None if v is None else round(v, 6)) for k, v in self.noise.items()},
                "status": self.status}


def compare(reference: Distributions, current: Distributions, *, threshold: float = PSI_DRIFT,
            min_count: int = 30, prompts: Iterable[str] | None = None) -> list[PromptDrift]:
    """Compare every prompt seen on either side (or only ``prompts``); the most shifted first."""
    if not threshold > 0 or min_count < 1:
        raise ValueError("threshold must be > 0 and min_count >= 1")
    names = list(prompts) if prompts is not None else sorted(set(reference.counts) | set(current.counts))
    out = []
    for prompt in names:
        n_ref, n_cur = reference.total(prompt), current.total(prompt)
        values: dict[str, float | None] = dict.fromkeys(METRICS)
        chance: dict[str, float | None] = dict.fromkeys(METRICS)
        if n_ref == 0 or n_cur == 0:
            status = "new" if n_ref == 0 else "gone"
        elif n_ref < min_count or n_cur < min_count:
            status = "too_few"
        else:
            for m in METRICS:
                ref, cur = reference.counts[prompt][m], current.counts[prompt][m]
                values[m], chance[m] = psi(ref, cur), noise(ref, cur)
            beyond = [v for m, v in values.items() if v is not None and v >= chance[m]]  # type: ignore[operator]
            worst = max(beyond, default=0.0)
            status = "drift" if worst >= threshold else "watch" if worst >= min(PSI_WATCH, threshold) else "stable"
        out.append(PromptDrift(prompt, n_ref, n_cur, values, status, chance))
    order = {"drift": 0, "watch": 1, "stable": 2, "too_few": 3, "new": 4, "gone": 5}
    return sorted(out, key=lambda d: (order[d.status], -(d.max_psi or 0.0), -d.current_n, d.prompt))


def outcome(presence: float, scores: Sequence[float]) -> tuple[float, float, int]:
    """(presence, top score, instance count) of one prompt on one image from its kept instances' scores."""
    top = max((float(s) for s in scores), default=0.0)
    return float(presence), (top if math.isfinite(top) else 0.0), len(scores)
