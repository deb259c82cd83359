"""Traces as plain JSON documents: the export format, read back by import."""

from __future__ import annotations

from typing import Any

from traces import protocol
from traces.models import Trace

TRACE_EXPORT_FIELDS = [
    "name", "session_id", "agent_name", "request", "final_response", "status", "max_steps", "current_step",
    "model", "source", "started_at", "ended_at", "duration_ms", "prompt_tokens", "completion_tokens",
    "total_tokens", "total_cost", "total_runs", "last_seq", "error", "error_type", "metadata",
]
RUN_EXPORT_FIELDS = [
    "name", "run_type", "status", "start_time", "end_time", "duration_ms", "inputs", "outputs", "error",
    "error_type", "metadata", "prompt_tokens", "completion_tokens", "total_tokens",
]


def _value(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return protocol.format_timestamp(value)
    if value.__class__.__name__ == "Decimal":
        return str(value)
    return value


def trace_document(trace: Trace) -> dict[str, Any]:
    """The trace, its runs and its events (the exact envelopes, in seq order)."""
    document = {"id": str(trace.pk), **{name: _value(getattr(trace, name)) for name in TRACE_EXPORT_FIELDS}}
    document["rerun_of"] = str(trace.rerun_of_id) if trace.rerun_of_id else None
    document["runs"] = [
        {"id": str(run.pk), "parent_id": str(run.parent_id) if run.parent_id else None,
         **{name: _value(getattr(run, name)) for name in RUN_EXPORT_FIELDS}}
        for run in trace.runs.order_by("start_time", "id")
    ]
    document["events"] = [protocol.loads(text) for text in trace.events.order_by("seq").values_list("envelope", flat=True)]
    return document
