"""Traces as plain JSON documents: the export format, read back by import."""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import Any

from django.db import connections

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


# A trace's row as the export reads it (``values_list`` of these fields, the owner's username last).
HEADER_KEYS = ["id", *TRACE_EXPORT_FIELDS, "rerun_of_id", "owner"]


def trace_document(trace: Trace) -> dict[str, Any]:
    """The trace, its runs and its events (the exact envelopes, in seq order)."""
    row = {name: getattr(trace, name) for name in HEADER_KEYS[:-1]}
    row["id"] = str(trace.pk)
    row["owner"] = trace.owner.get_username() if trace.owner is not None else None
    runs = trace.runs.order_by("start_time", "id").values_list(*RUN_KEYS)
    return _document(row, runs, trace.events.order_by("seq").values_list("envelope", flat=True))


def trace_documents(rows: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """``trace_document`` of each trace row (``HEADER_KEYS``), with two queries for the whole list
    instead of two per trace, and no model instances."""
    ids = [row["id"] for row in rows]
    runs: dict[str, list[tuple]] = defaultdict(list)
    for values in Run.objects.filter(trace_id__in=ids).order_by("start_time", "id").values_list("trace_id", *RUN_KEYS):
        runs[str(values[0])].append(values[1:])
    events = _envelopes(ids)
    for row in rows:
        yield _document(row, runs[row["id"]], events.get(row["id"], []))


def _envelopes(trace_ids: list[str]) -> dict[str, list[str]]:
    """The traces' envelopes by trace id, each trace's in seq order.

    Read through a plain cursor: the ORM would turn each event's trace id into a UUID, ten times
    per trace, where a trace's events come one after another and its id is read once."""
    query = Event.objects.filter(trace_id__in=trace_ids).order_by("trace_id", "seq").values_list("trace_id", "envelope")
    sql, params = query.query.sql_with_params()
    envelopes: dict[str, list[str]] = {}
    key: object = None
    texts: list[str] = []
    with connections[query.db].cursor() as cursor:
        cursor.execute(sql, params)
        for raw, text in cursor:
            if raw != key:  # hex on SQLite, the text of a UUID on MariaDB
                key, texts = raw, envelopes.setdefault(str(uuid.UUID(str(raw))), [])
            texts.append(text)
    return envelopes


def trace_header(row: dict[str, Any]) -> dict[str, Any]:
    """The trace's own fields, without its runs and events, from its row (``HEADER_KEYS``)."""
    return {"id": row["id"], **{name: export_value(row[name]) for name in TRACE_EXPORT_FIELDS}}


RUN_KEYS = ["id", "parent_id", *RUN_EXPORT_FIELDS]


def _document(row: dict[str, Any], runs: Iterable[tuple], envelopes: Iterable[str]) -> dict[str, Any]:
    document = trace_header(row)
    document["rerun_of"] = str(row["rerun_of_id"]) if row["rerun_of_id"] else None
    # Read by importtraces: the trace is that user's on the other instance too, if it has them.
    document["owner"] = row["owner"]
    document["runs"] = [
        {
            "id": str(run_id),
            "parent_id": str(parent_id) if parent_id else None,
            **{name: export_value(value) for name, value in zip(RUN_EXPORT_FIELDS, values, strict=True)},
        }
        for run_id, parent_id, *values in runs
    ]
    document["events"] = [protocol.loads(text) for text in envelopes]
    return document
