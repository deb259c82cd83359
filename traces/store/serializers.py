"""Traces as plain JSON documents: the export format, read back by import."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import Any

from agents.events import format_timestamp
from traces import protocol
from traces.models import Event, Run, Trace

TRACE_EXPORT_FIELDS = [
    "name",
    "session_id",
    "agent_name",
    "request",
    "final_response",
    "status",
    "max_steps",
    "current_step",
    "model",
    "source",
    "started_at",
    "ended_at",
    "duration_ms",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "total_cost",
    "total_runs",
    "last_seq",
    "error",
    "error_type",
    "metadata",
]
RUN_EXPORT_FIELDS = [
    "name",
    "run_type",
    "status",
    "start_time",
    "end_time",
    "duration_ms",
    "inputs",
    "outputs",
    "error",
    "error_type",
    "metadata",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
]


def export_value(value: Any) -> Any:
    """A field value as the export writes it: times as protocol timestamps, decimals as strings."""
    if isinstance(value, dt.datetime):
        return format_timestamp(value)
    if isinstance(value, Decimal):
        return str(value)
    return value


def trace_document(trace: Trace) -> dict[str, Any]:
    """The trace, its runs and its events (the exact envelopes, in seq order)."""
    return _document(
        trace, trace.runs.order_by("start_time", "id"), trace.events.order_by("seq").values_list("envelope", flat=True)
    )


def trace_documents(traces: list[Trace]) -> Iterator[dict[str, Any]]:
    """``trace_document`` of each trace, with two queries for the whole list instead of two per trace."""
    ids = [trace.pk for trace in traces]
    runs: dict[Any, list[Run]] = defaultdict(list)
    for run in Run.objects.filter(trace_id__in=ids).order_by("start_time", "id"):
        runs[run.trace_id].append(run)
    events: dict[Any, list[str]] = defaultdict(list)
    for trace_id, text in (
        Event.objects.filter(trace_id__in=ids).order_by("trace_id", "seq").values_list("trace_id", "envelope")
    ):
        events[trace_id].append(text)
    for trace in traces:
        yield _document(trace, runs[trace.pk], events[trace.pk])


def trace_header(trace: Trace) -> dict[str, Any]:
    """The trace's own fields, without its runs and events."""
    return {"id": str(trace.pk), **{name: export_value(getattr(trace, name)) for name in TRACE_EXPORT_FIELDS}}


def _document(trace: Trace, runs: Iterable[Run], envelopes: Iterable[str]) -> dict[str, Any]:
    document = trace_header(trace)
    document["rerun_of"] = str(trace.rerun_of_id) if trace.rerun_of_id else None
    # Read by importtraces: the trace is that user's on the other instance too, if it has them.
    document["owner"] = trace.owner.get_username() if trace.owner is not None else None
    document["runs"] = [
        {
            "id": str(run.pk),
            "parent_id": str(run.parent_id) if run.parent_id else None,
            **{name: export_value(getattr(run, name)) for name in RUN_EXPORT_FIELDS},
        }
        for run in runs
    ]
    document["events"] = [protocol.loads(text) for text in envelopes]
    return document
