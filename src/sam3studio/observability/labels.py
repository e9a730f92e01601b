"""Bounded label values for per-prompt metrics: the most frequent prompts get their own, the rest share one.

Prompts are free text, so a label per prompt would let clients create series without bound. `TopPrompts`
keeps approximate frequencies of the prompts seen with the Space-Saving algorithm (Metwally, Agrawal and
El Abbadi, 2005: ``capacity`` counters; a new prompt takes over the smallest counter and remembers what it
inherited, so ``count - inherited`` is how often it was surely seen), and gives out at most ``slots`` labels.
A prompt gets a slot once it has surely been seen ``min_count`` times while a slot is free, or takes the slot
of the least frequent labelled prompt when it has surely been seen more than twice as often (the margin stops
two prompts of about equal frequency from swapping back and forth; a stream of one-off prompts never gets a
slot). Labels change rarely, so series stay stable; every observation of an unlabelled prompt goes to `OTHER`.

Written by hand: it is twenty lines, and the one library with a frequent-items sketch (Apache DataSketches)
is a compiled dependency for this alone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from sam3studio.observability.drift import OTHER

__all__ = ["TopPrompts"]


class TopPrompts:
    def __init__(self, slots: int, capacity: int | None = None, min_count: int = 3,
                 on_demote: Callable[[str], None] | None = None) -> None:
        if slots < 0 or min_count < 1:
            raise ValueError("slots must be >= 0 and min_count >= 1")
        self.slots, self.min_count = slots, min_count
        self.capacity = max(capacity or 10 * slots, slots, 1)
        self.counts: dict[str, list[int]] = {}  # prompt -> [count, inherited error], at most `capacity`
        self.labelled: set[str] = set()
        self._on_demote = on_demote
        self._lock = threading.Lock()

    def _count(self, prompt: str) -> int:
        """Count one sighting; return how often ``prompt`` has surely been seen (count less inherited error)."""
        counts = self.counts
        entry = counts.get(prompt)
        if entry is not None:
            entry[0] += 1
        elif len(counts) < self.capacity:
            entry = counts[prompt] = [1, 0]
        else:  # take over the smallest counter; what it held is this prompt's possible over-count
            smallest = min(counts, key=lambda p: counts[p][0])
            inherited = counts.pop(smallest)[0]
            entry = counts[prompt] = [inherited + 1, inherited]
        return entry[0] - entry[1]

    def _sure(self, prompt: str) -> int:
        entry = self.counts.get(prompt)
        return entry[0] - entry[1] if entry is not None else 0

    def label(self, prompt: str) -> str:
        """Count one observation of ``prompt`` and return the label it is recorded under."""
        demoted = None
        with self._lock:
            n = self._count(prompt)
            if prompt in self.labelled:
                return prompt
            if n < self.min_count or self.slots == 0:
                return OTHER
            if len(self.labelled) >= self.slots:
                weakest = min(self.labelled, key=self._sure)
                if n <= 2 * self._sure(weakest):
                    return OTHER
                self.labelled.discard(weakest)
                demoted = weakest
            self.labelled.add(prompt)
        if demoted is not None and self._on_demote is not None:
            self._on_demote(demoted)
        return prompt
