"""The projection: a trace's ``Trace`` and ``Run`` rows as a function of its events.

``project(trace, runs, event)`` takes a trace's current rows and one stored event and returns the rows
the event changes, as new dicts (the inputs are never changed, so a batch that fails leaves the
rows it started from as they were). It is the only code that computes those rows: the live
store (on its thread or in the writer process), the reaper that closes a dead process's runs,
OTLP ingest and ``importtraces`` all write what it returns.

Rules worth knowing:

- A run's row is what its latest event says; a run event that carries ``token_usage`` (a
  finished model call) sets the run's tokens and ``cost``, the others keep them.
- The trace's totals (prompt, completion and total tokens, cost, runs) are the sums over its
  runs, kept by adding each run's change: an event sent twice, or a run that another process
  recorded, is never counted twice. ``trace_completed``'s own totals are the agent's report of
  the same sums and are not read.
- ``trace_completed`` closes the runs still open (an agent that died, a span that never ended):
  as errors when the trace failed, as cancelled otherwise.
- Every event moves ``last_seq``. Only ``trace_started`` and ``trace_completed`` change fields
  outside ``PROGRESS_FIELDS``, so a running trace's row needs only a small update.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, cast

from agents.events import (
    BOUNDARY_EVENTS,
    RUN_EVENTS,
    EventData,
    EventType,
    RunFields,
    RunStatus,
    RunType,
    StatusUpdate,
    ThinkDelta,
    TraceCompleted,
    TraceOutcome,
    TraceStarted,
    parse_timestamp,
)

Row = dict[str, Any]

# What a trace's events change outside trace_started and trace_completed.
PROGRESS_FIELDS = (
    "last_seq",
    "current_step",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "total_cost",
    "total_runs",
)
CENT = Decimal("0.00000001")  # the cost columns' precision
UNFINISHED = "unfinished when its trace ended"


@dataclasses.dataclass(slots=True)
class TraceRows:
    """A trace's rows as the projection reads them: the ``Trace`` row and every ``Run`` row, as
    field dicts keyed by attname (``owner_id``, ``parent_id``), as ``QuerySet.values()`` gives them."""

    trace: Row
    runs: dict[uuid.UUID, Row]
    stored: bool = False  # the trace's row exists in the database

    @property
    def last_seq(self) -> int:
        return int(self.trace.get("last_seq") or 0)


@dataclasses.dataclass(slots=True)
class Projected:
    """What one event does to a trace's rows."""

    trace: Row  # the trace's new row
    runs: dict[uuid.UUID, Row]  # the runs whose rows changed, as they are now
    run_id: uuid.UUID | None  # the run the event is about, for its Event row
    whole: bool  # fields outside PROGRESS_FIELDS changed: the whole row is written


def new_trace(origin: Mapping[str, Any]) -> Row:
    """The row of a trace before its first event: the defaults, then what its recorder knows of it
    (its id, session, source, owner, runner, when it started; an import brings its feedback too)."""
    row: Row = {
        "name": "",
        "session_id": "",
        "agent_name": "",
        "request": "",
        "final_response": "",
        "status": "running",
        "max_steps": 0,
        "current_step": 0,
        "model": "",
        "source": "websocket",
        "owner_id": None,
        "rerun_of_id": None,
        "ended_at": None,
        "duration_ms": None,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "total_tokens": 0,
        "total_cost": Decimal(0),
        "total_runs": 0,
        "last_seq": 0,
        "error": "",
        "error_type": "",
        "metadata": {},
        "runner": "",
        "feedback": None,
        "feedback_comment": "",
    }
    row.update(origin)
    return row


def project(
    trace: Mapping[str, Any],
    runs: Mapping[uuid.UUID, Row],
    event_type: EventType,
    data: EventData,
    timestamp: dt.datetime,
    seq: int,
) -> Projected:
    """The rows after event ``seq`` of a trace whose rows are ``trace`` and ``runs`` (see the module
    docstring)."""
    trace = dict(trace)
    trace["last_seq"] = seq
    changed: dict[uuid.UUID, Row] = {}
    run_id: uuid.UUID | None = None
    if event_type in RUN_EVENTS:
        run_id = _run(runs, trace, cast(RunFields, data), timestamp, changed)
    elif event_type == EventType.THINK_DELTA:
        delta_of = cast(ThinkDelta, data).get("run_id")
        run_id = _uuid(delta_of) if delta_of else None
    elif event_type == EventType.STATUS_UPDATE:
        trace["current_step"] = _int(cast(StatusUpdate, data).get("current_step"))
    elif event_type == EventType.TRACE_STARTED:
        _started(trace, cast(TraceStarted, data), timestamp)
    elif event_type == EventType.TRACE_COMPLETED:
        _completed(trace, cast(TraceCompleted, data), timestamp)
        _close_open_runs(runs, trace, timestamp, changed)
    return Projected(trace, changed, run_id, event_type in BOUNDARY_EVENTS)


def _started(trace: Row, data: TraceStarted, timestamp: dt.datetime) -> None:
    metadata = data.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    trace.update(
        name=_text(data.get("trace_name"))[:200],
        request=_text(data.get("request")),
        agent_name=_text(data.get("agent_name"))[:100],
        max_steps=_int(data.get("max_steps")),
        model=_text(metadata.get("model"))[:100],
        metadata=metadata,
        started_at=timestamp,
    )


def _completed(trace: Row, data: TraceCompleted, timestamp: dt.datetime) -> None:
    duration = data.get("duration_ms")
    if duration is None:
        duration = (timestamp - trace["started_at"]).total_seconds() * 1000
    trace.update(
        status=data.get("status") or TraceOutcome.SUCCESS,
        ended_at=timestamp,
        duration_ms=max(0, int(duration)),
        final_response=_text(data.get("final_response")),
        error=_text(data.get("error")),
        error_type=_text(data.get("error_type"))[:100],
    )
    # (ext) an ingested trace whose question or model came after it started
    if data.get("request"):
        trace["request"] = _text(data.get("request"))
    if data.get("model"):
        trace["model"] = _text(data.get("model"))[:100]


def _run(
    runs: Mapping[uuid.UUID, Row], trace: Row, fields: RunFields, timestamp: dt.datetime, changed: dict[uuid.UUID, Row]
) -> uuid.UUID | None:
    if not fields.get("run_id"):
        return None
    run_id = _uuid(fields["run_id"])
    old = runs.get(run_id)
    run: Row = dict(old) if old is not None else {"id": run_id, "trace_id": trace["id"]}
    parent = fields.get("parent_run_id")
    run["parent_id"] = _uuid(parent) if parent else None
    run["name"] = _text(fields.get("name"))[:200]
    run["run_type"] = fields.get("run_type") or RunType.AGENT
    run["status"] = fields.get("status") or RunStatus.RUNNING
    run["start_time"] = _time(fields.get("start_time")) or run.get("start_time") or timestamp
    run["end_time"] = _time(fields.get("end_time"))
    run["duration_ms"] = _duration(fields.get("duration_ms"))
    run["inputs"] = fields.get("inputs") or {}
    run["outputs"] = fields.get("outputs") or {}
    run["error"] = _text(fields.get("error"))
    run["error_type"] = _text(fields.get("error_type"))[:100]
    run["metadata"] = fields.get("metadata") or {}
    usage = fields.get("token_usage")
    if usage:
        run["prompt_tokens"] = _int(usage.get("prompt_tokens"))
        run["completion_tokens"] = _int(usage.get("completion_tokens"))
        run["total_tokens"] = _int(usage.get("total_tokens"))
        run["cost"] = _cost(fields.get("cost"))
    _add_to_totals(trace, old, run)
    changed[run_id] = run
    return run_id


USAGE = ("prompt_tokens", "completion_tokens", "total_tokens")


def _add_to_totals(trace: Row, old: Row | None, new: Row) -> None:
    """The trace's totals, moved by what this run's row changed (its counts are the row's own:
    ints, and a Decimal cost at the columns' precision)."""
    for name in USAGE:
        change = (new.get(name) or 0) - ((old.get(name) or 0) if old is not None else 0)
        if change:
            trace[name] = max(0, (trace.get(name) or 0) + change)
    cost = (new.get("cost") or ZERO) - ((old.get("cost") or ZERO) if old is not None else ZERO)
    if cost:
        trace["total_cost"] = max(ZERO, (trace.get("total_cost") or ZERO) + cost)
    counted = _counted(new) - (_counted(old) if old is not None else 0)
    if counted:
        trace["total_runs"] = max(0, (trace.get("total_runs") or 0) + counted)


def _counted(run: Row) -> int:
    """A run counts in the trace's total unless it stands in for a span that has not arrived."""
    metadata = run.get("metadata")
    return 0 if isinstance(metadata, dict) and metadata.get("placeholder") else 1


def _close_open_runs(
    runs: Mapping[uuid.UUID, Row], trace: Row, timestamp: dt.datetime, changed: dict[uuid.UUID, Row]
) -> None:
    failed = trace["status"] == TraceOutcome.ERROR
    for run_id, old in runs.items():
        if old.get("status") != RunStatus.RUNNING:
            continue
        run = dict(old)
        start = run.get("start_time")
        run.update(
            status=RunStatus.ERROR if failed else RunStatus.CANCELLED,
            end_time=timestamp,
            duration_ms=max(0, int((timestamp - start).total_seconds() * 1000)) if start else None,
            error=trace["error"] if failed and trace["error"] else UNFINISHED,
            error_type=trace["error_type"] if failed and trace["error_type"] else "Unfinished",
        )
        changed[run_id] = run


# What the projection reads of a finished run's row: its next event rewrites every other field.
SLIM_FIELDS = (
    "id",
    "trace_id",
    "status",
    "start_time",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost",
    "metadata",
)


def slim(run: Row) -> Row:
    """A finished run's row as the projection needs it to apply another event of the run: its
    counts (so the trace's totals move by the difference) and its start (kept when the event
    says none). What a writer keeps of the runs of its running traces."""
    row = {name: run.get(name) for name in SLIM_FIELDS}
    row["metadata"] = {"placeholder": True} if not _counted(run) else {}
    return row


def _uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else _parsed_uuid(str(value))


@functools.lru_cache(maxsize=65536)
def _parsed_uuid(text: str) -> uuid.UUID:
    """Run ids come as text, each at least twice (its start and its end) and a step's as the parent
    of every run under it: each is read once."""
    return uuid.UUID(text)


def _time(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value
    return parse_timestamp(value) if isinstance(value, str) and value else None


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _int(value: Any) -> int:
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError):
        return 0


def _duration(value: Any) -> int | None:
    return None if value is None else _int(value)


ZERO = Decimal(0)


def _cost(value: Any) -> Decimal:
    """An event's cost as the columns hold it (8 decimal places); 0 for anything that is not a number."""
    if not value:
        return ZERO
    try:
        cost = Decimal(str(value)).quantize(CENT)
    except ArithmeticError:
        return ZERO
    return cost if cost.is_finite() else ZERO
