"""The agent's vocabulary: what a run reports, event by event.

One place for the event types, run types and statuses, outcomes and agent states, and one
``TypedDict`` per event payload. The agent builds these payloads (``agents.tracing``,
``agents.loop``); the traces app stores and delivers them and reads them back through the same
types. Nothing here knows of WebSockets, envelopes or Django: ``traces.protocol`` wraps these
payloads for the wire (PROTOCOL.md).
"""

# No ``from __future__ import annotations`` here: TypedDict reads NotRequired[...] from real annotations.
import datetime as dt
import os
import random
import uuid
from decimal import Decimal
from enum import StrEnum
from typing import Any, NotRequired, TypedDict

import orjson


class EventType(StrEnum):
    """The events of a trace. Each is stored with its ``seq`` and delivered to the trace's followers."""

    # Seed events: the original MyAgent trace protocol.
    TRACE_STARTED = "trace_started"
    THINK_COMPLETED = "think_completed"
    TOOL_COMPLETED = "tool_completed"
    RUN_ERROR = "run_error"
    STATUS_UPDATE = "status_update"
    TRACE_COMPLETED = "trace_completed"
    # Extensions.
    STEP_STARTED = "step_started"
    THINK_STARTED = "think_started"
    THINK_DELTA = "think_delta"
    TOOL_STARTED = "tool_started"
    RUN_COMPLETED = "run_completed"
    PROGRESS_UPDATE = "progress_update"


# The seed events, which clients of the original protocol know.
SEED_EVENTS = frozenset(
    {
        EventType.TRACE_STARTED,
        EventType.THINK_COMPLETED,
        EventType.TOOL_COMPLETED,
        EventType.RUN_ERROR,
        EventType.STATUS_UPDATE,
        EventType.TRACE_COMPLETED,
    }
)
# Events whose data are the run fields of one run.
RUN_EVENTS = frozenset(
    {
        EventType.STEP_STARTED,
        EventType.THINK_STARTED,
        EventType.THINK_COMPLETED,
        EventType.TOOL_STARTED,
        EventType.TOOL_COMPLETED,
        EventType.RUN_ERROR,
        EventType.RUN_COMPLETED,
    }
)
# The start and the end of a trace: what a feed of every trace carries.
BOUNDARY_EVENTS = frozenset({EventType.TRACE_STARTED, EventType.TRACE_COMPLETED})


class RunType(StrEnum):
    AGENT = "agent"  # one step of the loop: a think run and the tool runs it asked for
    THINK = "think"  # one model call
    TOOL = "tool"  # one tool call


class RunStatus(StrEnum):
    RUNNING = "running"
    SUCCESS = "success"
    ERROR = "error"
    CANCELLED = "cancelled"


class TraceOutcome(StrEnum):
    """``trace_completed.status`` (a running trace has no outcome yet)."""

    SUCCESS = "success"
    ERROR = "error"
    CANCELLED = "cancelled"


class AgentState(StrEnum):
    IDLE = "IDLE"
    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    ERROR = "ERROR"
    CANCELLED = "CANCELLED"


class StopReason(StrEnum):
    """Why a run ended (``trace_completed.stopped_by``)."""

    ANSWER = "answer"
    MAX_STEPS = "max_steps"
    ERROR = "error"
    CANCELLED = "cancelled"


# ---------------------------------------------------------------------------- payloads


class TokenUsage(TypedDict):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class TraceStarted(TypedDict):
    trace_id: str
    trace_name: str  # "<agent_name>_execution"
    request: str  # the question
    agent_name: str
    max_steps: int
    metadata: dict[str, Any]  # model, offline_model, tools, and what the caller added


class RunFields(TypedDict):
    """One run of the tree: ``step_started``, ``think_*``, ``tool_*``, ``run_completed``, ``run_error``."""

    run_id: str
    trace_id: str
    parent_run_id: str | None
    name: str
    run_type: str  # RunType
    status: str  # RunStatus
    start_time: str
    end_time: str | None
    duration_ms: int | None
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    error: str | None
    error_type: str | None
    metadata: dict[str, Any]
    # A finished model call (think_completed) also says what it used and cost.
    token_usage: NotRequired[TokenUsage]
    model: NotRequired[str]
    cost: NotRequired[float]


class ThinkDelta(TypedDict):
    run_id: str
    delta: str  # model text streamed since the previous delta


class StatusUpdate(TypedDict):
    current_step: int
    max_steps: int
    agent_state: str  # AgentState
    message: str
    progress_percentage: int


class ProgressUpdate(TypedDict):
    current_step: int
    total_steps: int
    step_name: str
    step_description: str
    percentage: int


class TraceCompleted(TypedDict):
    trace_id: str
    duration_ms: int | None
    total_runs: int | None
    status: str  # TraceOutcome
    total_cost: float
    total_tokens: int | None
    final_response: str
    stopped_by: str  # StopReason
    error: NotRequired[str | None]
    error_type: NotRequired[str | None]
    request: NotRequired[str]  # (ext) an ingested trace's question, when it came after its start
    model: NotRequired[str]  # (ext) an ingested trace's model, when it came after its start


EventData = TraceStarted | RunFields | ThinkDelta | StatusUpdate | ProgressUpdate | TraceCompleted

# The payload type of each event type.
PAYLOADS: dict[EventType, type] = {
    EventType.TRACE_STARTED: TraceStarted,
    EventType.STEP_STARTED: RunFields,
    EventType.THINK_STARTED: RunFields,
    EventType.THINK_DELTA: ThinkDelta,
    EventType.THINK_COMPLETED: RunFields,
    EventType.TOOL_STARTED: RunFields,
    EventType.TOOL_COMPLETED: RunFields,
    EventType.RUN_ERROR: RunFields,
    EventType.RUN_COMPLETED: RunFields,
    EventType.STATUS_UPDATE: StatusUpdate,
    EventType.PROGRESS_UPDATE: ProgressUpdate,
    EventType.TRACE_COMPLETED: TraceCompleted,
}


def interruption(reason: str) -> str:
    """The message to cancel a run with when its process is stopping (``task.cancel(msg)``): the run
    then ends as an error saying so, not as cancelled by the user."""
    return f"interrupted: {reason}"


def is_interruption(exc: BaseException) -> bool:
    return bool(exc.args) and isinstance(exc.args[0], str) and exc.args[0].startswith("interrupted: ")


def trace_failed(trace_id: str, error: str, error_type: str) -> TraceCompleted:
    """The end of a trace that could not finish on its own (its recording failed, its process died)."""
    return TraceCompleted(
        trace_id=trace_id,
        duration_ms=None,
        total_runs=None,
        status=TraceOutcome.ERROR,
        total_cost=0,
        total_tokens=None,
        final_response="",
        stopped_by=StopReason.ERROR,
        error=error,
        error_type=error_type,
    )


# ---------------------------------------------------------------------------- ids, time and JSON

_ids = random.Random(int.from_bytes(os.urandom(16)))


def new_run_id() -> uuid.UUID:
    """A random (version 4) UUID for a run, without a system call each: ``uuid4()`` reads the
    kernel's random source every time, which showed up in the live path's profile. Run ids only
    need to be unique; trace ids, which appear in links, stay ``uuid4()``."""
    return uuid.UUID(int=_ids.getrandbits(128), version=4)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def format_timestamp(moment: dt.datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a ``Z``: ``2025-09-24T12:00:00.000Z``.

    Every event and run carries two or three of these, and ``isoformat`` of an aware datetime is
    slow for how often it runs: the text up to the second is kept for the seconds seen last, and
    only the milliseconds are formatted each time."""
    utc = moment if moment.tzinfo is dt.UTC else moment.astimezone(dt.UTC)
    second = utc.timestamp()
    if second < 0:  # before 1970: not worth a cache
        return utc.isoformat(timespec="milliseconds")[:-6] + "Z"
    key = int(second)
    prefix = _seconds.get(key)
    if prefix is None:
        if len(_seconds) >= 4096:
            _seconds.clear()
        prefix = _seconds[key] = utc.strftime("%Y-%m-%dT%H:%M:%S")
    return prefix + _MILLISECONDS[utc.microsecond // 1000]


_seconds: dict[int, str] = {}  # whole seconds since 1970 -> "YYYY-MM-DDTHH:MM:SS"
_MILLISECONDS = [f".{ms:03d}Z" for ms in range(1000)]


def parse_timestamp(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def to_json(value: Any) -> str:
    """JSON text of a payload (or of what a tool shows the model); anything odd becomes a string."""
    return orjson.dumps(value, default=_json_default, option=orjson.OPT_NON_STR_KEYS).decode()


# ---------------------------------------------------------------------------- bounded payloads


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, with a visible marker saying how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [truncated: {len(text):,} characters in all]"


def json_size(value: Any) -> int:
    """Bytes of the JSON text of ``value``."""
    text = to_json(value)
    return len(text) if text.isascii() else len(text.encode())


def bound(data: Any, limit: int) -> Any:
    """``data`` made to fit ``limit`` bytes of JSON: the longest strings cut first (with a marker),
    then long lists shortened (with a last item saying how many were left out). Returns ``data``
    itself when it fits; otherwise a copy with ``"truncated": {"original_bytes", "limit_bytes"}``."""
    size = json_size(data)
    if size <= limit:
        return data
    longest = max(min(limit // 4, limit // max(_strings(data), 1)), 64)  # a fair share each, to start
    shrunk = data
    while True:
        shrunk = _shorten(data, longest, None)
        if json_size(shrunk) <= limit or longest <= 64:
            break
        longest //= 2
    items = 1000
    while json_size(shrunk) > limit and items > 1:
        items //= 2
        shrunk = _shorten(data, longest, items)
    if isinstance(shrunk, dict):
        shrunk = {**shrunk, "truncated": {"original_bytes": size, "limit_bytes": limit}}
    return shrunk


def _strings(value: Any) -> int:
    if isinstance(value, str):
        return 1
    if isinstance(value, dict):
        return sum(_strings(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_strings(item) for item in value)
    return 0


def _shorten(value: Any, longest: int, items: int | None) -> Any:
    if isinstance(value, str):
        return clip(value, longest)
    if isinstance(value, dict):
        return {key: _shorten(item, longest, items) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        kept = [_shorten(item, longest, items) for item in value[:items]]
        if items is not None and len(value) > items:
            kept.append(f"… [truncated: {len(value):,} items in all]")
        return kept
    return value
