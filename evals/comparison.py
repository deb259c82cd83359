"""Two experiments side by side: their items matched by dataset item, what changed first, and
how their figures moved.

An item *regressed* when it passed in A and does not pass in B (``evals.experiments.regressions``
with B as the current run), and was *fixed* when it did not pass in A and passes in B. Items only
one of the two ran (experiments of different datasets, or of a dataset that changed between
them) are listed after the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from evals.models import DatasetItem, Experiment, ExperimentItem


class Change(StrEnum):
    REGRESSED = "regressed"
    FIXED = "fixed"
    SAME = "same"
    ONLY_ONE = "only_one"  # run by one of the two experiments


ORDER = [Change.REGRESSED, Change.FIXED, Change.SAME, Change.ONLY_ONE]


@dataclass(frozen=True)
class ItemPair:
    """One dataset item as A and as B ran it (None: that experiment did not run it)."""

    item: DatasetItem
    a: ExperimentItem | None
    b: ExperimentItem | None

    @property
    def change(self) -> Change:
        if self.a is None or self.b is None:
            return Change.ONLY_ONE
        if self.a.passed is True and self.b.passed is not True:
            return Change.REGRESSED
        if self.a.passed is not True and self.b.passed is True:
            return Change.FIXED
        return Change.SAME


def pairs(a: Experiment, b: Experiment) -> list[ItemPair]:
    """Every item either ran, regressions first, then fixes, then the rest, each in item order."""
    rows_a = {row.item_id: row for row in a.results.select_related("item")}
    rows_b = {row.item_id: row for row in b.results.select_related("item")}
    found = []
    for item_id in sorted(rows_a.keys() | rows_b.keys()):
        row = rows_a.get(item_id) or rows_b[item_id]
        found.append(ItemPair(row.item, rows_a.get(item_id), rows_b.get(item_id)))
    return sorted(found, key=lambda pair: ORDER.index(pair.change))


@dataclass(frozen=True)
class Delta:
    """A figure of both experiments and how it moved; ``lower_is_better`` for latency, tokens, cost.
    ``unit`` says how the page shows it: ``share``, ``ms``, ``count`` or ``dollars``."""

    label: str
    key: str
    unit: str
    a: float | None
    b: float | None
    lower_is_better: bool

    @property
    def change(self) -> float | None:
        return None if self.a is None or self.b is None else self.b - self.a

    @property
    def size(self) -> float | None:
        """How much it moved, whichever way (the page writes the sign)."""
        return None if self.change is None else abs(self.change)

    @property
    def verdict(self) -> str:
        """``better``, ``worse`` or ``same`` (empty when a side has no value)."""
        if self.change is None:
            return ""
        if self.change == 0:
            return "same"
        return "better" if (self.change < 0) == self.lower_is_better else "worse"


FIGURES = [
    ("Execution accuracy", "execution_accuracy", "share", False),
    ("Answer accuracy", "answer_accuracy", "share", False),
    ("p50 latency", "p50_ms", "ms", True),
    ("p95 latency", "p95_ms", "ms", True),
    ("Tokens", "total_tokens", "count", True),
    ("Cost", "total_cost", "dollars", True),
]


def deltas(summary_a: dict[str, Any], summary_b: dict[str, Any]) -> list[Delta]:
    """The figures of two ``evals.experiments.summarize`` results, B against A."""
    return [
        Delta(label, key, unit, summary_a.get(key), summary_b.get(key), lower_is_better)
        for label, key, unit, lower_is_better in FIGURES
    ]
