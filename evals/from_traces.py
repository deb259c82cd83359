"""Traces made dataset items: the question a trace was asked, and, when someone judged its
answer Good, the SQL it ran as the SQL a right answer gives."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from evals.experiments import last_sql
from evals.models import Dataset, DatasetItem
from traces.models import Trace

GOOD = 1  # Trace.feedback of a 👍


@dataclass
class Added:
    items: list[DatasetItem] = field(default_factory=list)
    already: int = 0  # traces an item of the dataset came from before


def item_of(dataset: Dataset, trace: Trace) -> DatasetItem:
    """The trace as an item of ``dataset``: its question; with Good feedback, its last SQL that ran
    successfully (``evals.experiments.last_sql``) as ``expected_sql``."""
    expected_sql = (last_sql(trace.pk) or "") if trace.feedback == GOOD else ""
    return DatasetItem(dataset=dataset, question=trace.request, expected_sql=expected_sql, source_trace=trace)


def add_traces(dataset: Dataset, traces: Iterable[Trace]) -> Added:
    """Add each trace to ``dataset`` as an item, once: a trace an item already came from is skipped,
    and so is one without a question."""
    traces = [trace for trace in traces if trace.request.strip()]
    present = set(
        dataset.items.filter(source_trace__in=[trace.pk for trace in traces]).values_list("source_trace_id", flat=True)
    )
    added = Added(
        items=[item_of(dataset, trace) for trace in traces if trace.pk not in present],
        already=sum(trace.pk in present for trace in traces),
    )
    DatasetItem.objects.bulk_create(added.items)
    return added
