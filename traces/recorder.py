"""The recorder: the trace sink the agent reports to.

``TraceRecorder.emit()`` hands an event to the process's ``EventStore`` and returns without
waiting for the database (the agent is not slowed by it; see "pipelining" below). The store

1. numbers it (``seq`` 1, 2, 3... per trace, no gaps),
2. writes it, together with the trace and run rows it changes, in one transaction per
   *batch* of pending events (group commit, on a thread of its own so the event loop never
   waits on the database), and only then
3. hands the stored envelopes to this process's sockets (``traces.hub``) and, one message per
   batch, to the other processes (``traces.bus``).

So an event is delivered only after it is stored; if cross-process delivery fails (the channel
layer is down, ``traces.layer``) it is still stored, and clients catch up from the database by ``seq``.

Pipelining: a trace may have up to ``MAX_IN_FLIGHT`` events queued or being written; the
agent goes on meanwhile, so batches fill from every running trace at once. ``trace_completed``
waits until everything before it is stored, so a finished run is a stored run. If storing fails
after retries, that event and every later event of the trace are refused (nothing is delivered,
the stored trace has no holes), and the trace's next ``emit()`` raises ``TraceStoreError``.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as dt
import functools
import itertools
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any, Protocol, cast

from django.conf import settings
from django.db import DatabaseError, connection, models, transaction
from django.db.models.constants import OnConflict

from agents.events import (
    BOUNDARY_EVENTS,
    RUN_EVENTS,
    EventData,
    EventType,
    RunFields,
    RunType,
    StatusUpdate,
    ThinkDelta,
    TokenUsage,
    TraceCompleted,
    TraceStarted,
    bound,
    parse_timestamp,
    to_json,
    utcnow,
)
from traces import protocol
from traces.access import SessionKey
from traces.bus import Bus, get_bus
from traces.hub import Hub, StoredEvent, get_hub
from traces.loops import PerLoop
from traces.metrics import EVENT_PERSIST_SECONDS, RUN_SECONDS, RUNS, TOKENS, TOOL_CALLS
from traces.models import Event, Run, Trace

logger = logging.getLogger(__name__)

MAX_BATCH = 500
RETRY_DELAYS = (0.1, 0.3, 1.0, 2.0, 4.0)
MAX_IN_FLIGHT = 256  # events of one trace queued or being written before emit() waits

# One thread writes for the whole process: a single connection, batches in order (unless a writer
# process stores them, traces.writer).
_writer_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trace-recorder")
# With a writer process: smaller batches, up to PIPELINE of them on their way. The server delivers
# one batch while the process stores the next ones, instead of the two taking turns on big ones
# (docs/benchmarks.md, "A writer process").
PROCESS_BATCH = 100
PIPELINE = 8


_state_keys = itertools.count(1)


class TraceStoreError(Exception):
    """The trace history could not be written; the event was not stored and not delivered."""


@dataclasses.dataclass
class TraceState:
    """What the writer thread knows of one trace: the committed rows, as field dicts."""

    trace_id: uuid.UUID
    session: SessionKey
    trace: dict[str, Any]  # the Trace row's fields; its owner is trace["owner_id"]
    runs: dict[uuid.UUID, dict[str, Any]] = dataclasses.field(default_factory=dict)
    last_seq: int = 0
    failed: bool = False  # an event could not be stored: refuse the rest, so the trace has no holes
    stored: bool = False  # its row exists: later batches need only update what moves
    numbered: int = 0  # the last seq given (with a writer process, batches are numbered ahead of commits)
    # Events submitted and settled (stored or refused), the first refusal, and who waits for a count.
    submitted: int = 0
    settled: int = 0
    error: TraceStoreError | None = None
    waiters: list[tuple[int, asyncio.Future]] = dataclasses.field(default_factory=list)
    stored_through: int = 0  # (in a writer process) events up to this seq are in the database already
    # This state's name in the writer process (traces.writer), and that process's generation
    # that last received it (it is sent again to a new one).
    key: int = dataclasses.field(default_factory=lambda: next(_state_keys))
    writer_generation: int = 0

    @functools.cached_property
    def text_id(self) -> str:
        return str(self.trace_id)

    @functools.cached_property
    def hex_id(self) -> str:
        return self.trace_id.hex


@dataclasses.dataclass
class Pending:
    state: TraceState
    event_type: EventType
    data: EventData
    timestamp: dt.datetime
    future: asyncio.Future | None  # only for a caller that wants the event as stored
    # Filled in by the writer.
    seq: int = 0
    text: str = ""
    message_id: str = ""


def _usage(data: RunFields) -> tuple[int, int, int]:
    usage = data.get("token_usage") or cast(TokenUsage, {})
    return (
        int(usage.get("prompt_tokens") or 0),
        int(usage.get("completion_tokens") or 0),
        int(usage.get("total_tokens") or 0),
    )


def _time(value: Any) -> dt.datetime | None:
    return parse_timestamp(value) if isinstance(value, str) and value else None


def _text(value: Any) -> str:
    return "" if value is None else str(value)


class Batch:
    """The tentative effect of a batch: committed into the TraceStates only if the write succeeds."""

    def __init__(self, rows: bool = True) -> None:
        # Without rows (the server's side when a writer process stores): numbering, envelopes and
        # the trace rows' fields only, which the server reads back (its owner, question, model).
        self.rows = rows
        self.traces: dict[uuid.UUID, dict[str, Any]] = {}
        self.runs: dict[uuid.UUID, dict[str, Any]] = {}
        self.run_owner: dict[uuid.UUID, TraceState] = {}
        self.seqs: dict[uuid.UUID, int] = {}
        self.events: list[tuple] = []  # values of EVENT_ROWS
        self.whole: set[uuid.UUID] = set()  # traces whose whole row is written (new, started or finished)
        self.max_event_bytes = settings.TRACE_MAX_EVENT_BYTES

    def trace_row(self, state: TraceState) -> dict[str, Any]:
        if not self.rows:
            # Batches are numbered ahead of their commits: the fields are kept on the state itself.
            self.traces[state.trace_id] = state.trace
            return state.trace
        row = self.traces.get(state.trace_id)
        if row is None:
            row = self.traces[state.trace_id] = dict(state.trace)
            if not state.stored:
                self.whole.add(state.trace_id)
        return row

    def run_row(self, state: TraceState, run_id: uuid.UUID) -> dict[str, Any]:
        row = self.runs.get(run_id)
        if row is None:
            row = dict(state.runs.get(run_id) or {"id": run_id, "trace_id": state.trace_id})
            self.runs[run_id] = row
            self.run_owner[run_id] = state
        return row

    def add(self, item: Pending) -> None:
        self.number(item)
        self.record(item)

    def number(self, item: Pending) -> None:
        """The event's ``seq`` and its envelope's text, the one stored and sent."""
        state = item.state
        if self.rows:
            seq = self.seqs.get(state.trace_id, state.last_seq) + 1
        else:  # after the batches sent and not answered yet
            seq = max(state.numbered, state.last_seq) + 1
            state.numbered = seq
        self.seqs[state.trace_id] = seq
        item.seq = seq
        message = self.envelope(item, seq)
        item.text = protocol.dumps(message)
        limit = self.max_event_bytes
        if len(item.text) > limit // 4 and len(item.text.encode()) > limit:
            # Too large to store and send as it is: its longest values are cut, with markers and
            # its original size (and the run row below is projected from the cut event).
            item.data = bound(item.data, limit - 1024)
            message = self.envelope(item, seq)
            item.text = protocol.dumps(message)
        item.message_id = message["message_id"]

    def record(self, item: Pending) -> None:
        """Project a numbered event onto the rows, and keep its row for the write."""
        state = item.state
        self.seqs[state.trace_id] = item.seq
        trace = self.trace_row(state)
        trace["last_seq"] = item.seq
        self.project_trace(item, trace)
        if not self.rows:
            return
        run_id = self.project_run(item, trace)
        if item.seq <= state.stored_through:
            return  # stored by a writer process that stopped before it answered: projected only
        self.events.append(
            (state.trace_id, item.seq, str(item.event_type), item.timestamp, item.message_id, run_id, item.text)
        )

    @staticmethod
    def envelope(item: Pending, seq: int) -> dict[str, Any]:
        state = item.state
        return protocol.envelope(
            item.event_type,
            dict(item.data),
            session_id=state.session.session_id,
            timestamp=item.timestamp,
            trace_id=state.text_id,
            seq=seq,
            message_id=f"{item.event_type}_{state.hex_id}_{seq}",  # protocol.trace_message_id
        )

    def project_trace(self, item: Pending, trace: dict[str, Any]) -> None:
        """Apply one event to the trace row (its tokens come with the run's, below)."""
        kind = item.event_type
        if kind in BOUNDARY_EVENTS:
            self.whole.add(item.state.trace_id)
        if kind == EventType.TRACE_STARTED:
            started = cast(TraceStarted, item.data)
            metadata = started.get("metadata") or {}
            trace.update(
                name=_text(started.get("trace_name"))[:200],
                request=_text(started.get("request")),
                agent_name=_text(started.get("agent_name"))[:100],
                max_steps=int(started.get("max_steps") or 0),
                model=_text(metadata.get("model"))[:100],
                metadata=metadata,
                started_at=item.timestamp,
            )
        elif kind == EventType.STATUS_UPDATE:
            trace["current_step"] = int(cast(StatusUpdate, item.data).get("current_step") or 0)
        elif kind == EventType.TRACE_COMPLETED:
            data = cast(TraceCompleted, item.data)
            trace.update(
                status=data.get("status") or Trace.Status.SUCCESS,
                ended_at=item.timestamp,
                duration_ms=data.get("duration_ms")
                if data.get("duration_ms") is not None
                else int((item.timestamp - trace["started_at"]).total_seconds() * 1000),
                total_runs=int(data.get("total_runs") or 0),
                total_cost=Decimal(str(data.get("total_cost") or 0)),
                final_response=_text(data.get("final_response")),
                error=_text(data.get("error")),
                error_type=_text(data.get("error_type"))[:100],
            )
            total_tokens = data.get("total_tokens")
            if total_tokens is not None:
                trace["total_tokens"] = int(total_tokens)
            # (ext) an ingested trace whose question or model came after it started
            if data.get("request"):
                trace["request"] = _text(data.get("request"))
            if data.get("model"):
                trace["model"] = _text(data.get("model"))[:100]

    def project_run(self, item: Pending, trace: dict[str, Any]) -> uuid.UUID | None:
        """Apply one event to its run's row; returns the run it concerns, if any."""
        kind = item.event_type
        if kind == EventType.THINK_DELTA:
            delta_of = cast(ThinkDelta, item.data).get("run_id")
            return uuid.UUID(delta_of) if delta_of else None
        if kind not in RUN_EVENTS:
            return None
        fields = cast(RunFields, item.data)
        if not fields.get("run_id"):
            return None
        run_id = uuid.UUID(str(fields["run_id"]))
        run = self.run_row(item.state, run_id)
        parent = fields.get("parent_run_id")
        run.update(
            parent_id=uuid.UUID(str(parent)) if parent else None,
            name=_text(fields.get("name"))[:200],
            run_type=fields.get("run_type") or Run.Type.AGENT,
            status=fields.get("status") or Run.Status.RUNNING,
            start_time=_time(fields.get("start_time")) or run.get("start_time") or item.timestamp,
            end_time=_time(fields.get("end_time")),
            duration_ms=fields.get("duration_ms"),
            inputs=fields.get("inputs") or {},
            outputs=fields.get("outputs") or {},
            error=_text(fields.get("error")),
            error_type=_text(fields.get("error_type"))[:100],
            metadata=fields.get("metadata") or {},
        )
        if kind == EventType.THINK_COMPLETED or (kind == EventType.RUN_ERROR and fields.get("token_usage")):
            prompt, completion, total = _usage(fields)
            run.update(prompt_tokens=prompt, completion_tokens=completion, total_tokens=total)
            trace["prompt_tokens"] = trace.get("prompt_tokens", 0) + prompt
            trace["completion_tokens"] = trace.get("completion_tokens", 0) + completion
            trace["total_tokens"] = trace.get("total_tokens", 0) + total
        return run_id

    def write(self) -> None:
        """Runs on the writer thread: one transaction for the whole batch.

        Most events of a running trace move only its counters (last seq, step, tokens): those rows
        get a small update; a new, started or finished trace gets its whole row.
        """
        whole = [row for trace_id, row in self.traces.items() if trace_id in self.whole]
        moving = [row for trace_id, row in self.traces.items() if trace_id not in self.whole]
        with transaction.atomic():
            if whole:
                TRACE_ROWS.write(whole)
            if moving:
                TRACE_PROGRESS.write(moving)
            if self.runs:
                RUN_ROWS.write(self.runs.values())
            EVENT_ROWS.write(self.events)

    def commit(self, items: list[Pending]) -> None:
        """After a successful write, the tentative rows become the committed state."""
        states = {item.state.trace_id: item.state for item in items}
        for trace_id, row in self.traces.items():
            state = states.get(trace_id)
            if state is None:  # a trace of the batch that failed
                continue
            if self.rows:
                state.trace = row
            state.last_seq = self.seqs[trace_id]
            state.stored = True
        for run_id, row in self.runs.items():
            owner = self.run_owner[run_id]
            if owner.trace_id in states:
                owner.runs[run_id] = row


def _converter(field: models.Field) -> Callable[[Any], Any]:
    """``field.get_db_prep_save`` for this connection, faster for the types every event writes.

    Django's generic path costs 2–5 µs a value (a tenth of the server's time in the live profile).
    UUIDs, aware datetimes and JSON take the same vendor steps directly; anything else goes the
    generic way.
    """
    kind = field.get_internal_type()
    target = getattr(field, "target_field", None)
    if kind == "UUIDField" or (
        kind == "ForeignKey" and target is not None and target.get_internal_type() == "UUIDField"
    ):
        if connection.features.has_native_uuid_field:
            return lambda value: value if value is None or isinstance(value, uuid.UUID) else uuid.UUID(str(value))
        return lambda value: (
            None if value is None else (value.hex if isinstance(value, uuid.UUID) else uuid.UUID(str(value)).hex)
        )
    if kind == "DateTimeField":
        adapt = connection.ops.adapt_datetimefield_value
        if settings.USE_TZ and connection.timezone_name == "UTC":
            # The vendors' step for an aware datetime is make_naive in the connection's zone, then
            # str(): for the UTC datetimes the recorder makes, that is the text without "+00:00".
            return lambda value: (
                value.isoformat(" ")[:-6] if type(value) is dt.datetime and value.tzinfo is dt.UTC
                else None if value is None else adapt(value)
            )  # fmt: skip
        return lambda value: None if value is None else adapt(value)
    if kind == "JSONField":
        return lambda value: None if value is None else to_json(value)
    if kind in _PLAIN:  # str and int go to the driver as they are
        plain, generic = _PLAIN[kind], functools.partial(_prep, field, connection)
        return lambda value: value if value is None or type(value) is plain else generic(value)
    return functools.partial(_prep, field, connection)


_PLAIN = {
    "CharField": str, "TextField": str, "IntegerField": int, "PositiveIntegerField": int,
    "SmallIntegerField": int, "BigIntegerField": int, "PositiveSmallIntegerField": int,
}  # fmt: skip


def _prep(field: models.Field, db: Any, value: Any) -> Any:
    return field.get_db_prep_save(value, db)


class _Rows:
    """One ``executemany`` for a batch's rows of one model, as an upsert on the primary key if asked.

    The ORM's ``bulk_create`` compiles its SQL for every call, and that was a third of the
    server's time in the live profile; the statement here is built once per database vendor,
    with Django's own vendor parts (``quote_name``, ``on_conflict_suffix_sql``,
    ``get_db_prep_save``), so it is the same SQL the ORM would write.
    """

    def __init__(self, model: type[models.Model], names: list[str], upsert: list[str] | None = None) -> None:
        self.table = model._meta.db_table
        self.fields = [cast(models.Field, model._meta.get_field(name)) for name in names]
        self.columns = [f.column or f.attname for f in self.fields]
        self.defaults = [f.get_default() for f in self.fields]
        self.upsert = [cast(models.Field, model._meta.get_field(name)) for name in upsert or []]
        self._sql: dict[str, str] = {}
        self._converters: dict[str, list[Callable[[Any], Any]]] = {}

    def sql(self) -> str:
        key = connection.alias
        if key not in self._sql:
            quote = connection.ops.quote_name
            sql = (
                f"INSERT INTO {quote(self.table)} ({', '.join(map(quote, self.columns))}) "
                f"VALUES ({', '.join(['%s'] * len(self.columns))})"
            )
            if self.upsert:
                suffix = connection.ops.on_conflict_suffix_sql(
                    self.fields, OnConflict.UPDATE, [f.column or f.attname for f in self.upsert], ["id"]
                )
                sql = f"{sql} {suffix}"
            self._sql[key] = sql
        return self._sql[key]

    def converters(self) -> list[Callable[[Any], Any]]:
        if connection.alias not in self._converters:
            self._converters[connection.alias] = [_converter(f) for f in self.fields]
        return self._converters[connection.alias]

    def write(self, rows: Iterable[dict[str, Any] | tuple]) -> None:
        converters = self.converters()
        prepared = []
        for row in rows:
            if isinstance(row, dict):
                values = [row.get(f.attname, default) for f, default in zip(self.fields, self.defaults, strict=True)]
            else:
                values = list(row)
            prepared.append([convert(v) for convert, v in zip(converters, values, strict=True)])
        with connection.cursor() as cursor:
            if connection.vendor == "sqlite" and not self.upsert and len(prepared) > 1:
                for start in range(0, len(prepared), MULTI_ROW):
                    chunk = prepared[start : start + MULTI_ROW]
                    cursor.execute(self.multi_row_sql(len(chunk)), [v for row in chunk for v in row])
            else:
                cursor.executemany(self.sql(), prepared)

    def multi_row_sql(self, rows: int) -> str:
        """``INSERT … VALUES (…), (…), …`` for ``rows`` rows."""
        key = f"{connection.alias}:{rows}"
        if key not in self._sql:
            one = f"({', '.join(['%s'] * len(self.columns))})"
            self._sql[key] = self.sql().replace(one, ", ".join([one] * rows))
        return self._sql[key]


# SQLite runs an executemany row by row, letting the other threads have the GIL between rows (and
# waiting up to a switch interval to get it back): one statement for many rows is one step.
MULTI_ROW = 100


# A running trace's row: every field the recorder projects, never its owner, session, source or
# the feedback someone may have left meanwhile.
_NOT_RECORDED = {"id", "owner", "rerun_of", "session_id", "source", "feedback", "feedback_comment"}
TRACE_ROWS = _Rows(
    Trace,
    [f.name for f in Trace._meta.concrete_fields],
    [f.name for f in Trace._meta.concrete_fields if f.name not in _NOT_RECORDED],
)
RUN_ROWS = _Rows(
    Run,
    [f.name for f in Run._meta.concrete_fields],
    [f.name for f in Run._meta.concrete_fields if f.name not in {"id", "trace"}],
)


class _Progress(_Rows):
    """``UPDATE … SET <counters> WHERE id = %s`` for trace rows that exist."""

    def sql(self) -> str:
        key = connection.alias
        if key not in self._sql:
            quote = connection.ops.quote_name
            assignments = ", ".join(f"{quote(column)} = %s" for column in self.columns[1:])
            self._sql[key] = f"UPDATE {quote(self.table)} SET {assignments} WHERE {quote(self.columns[0])} = %s"
        return self._sql[key]

    def write(self, rows: Iterable[dict[str, Any] | tuple]) -> None:
        order = list(zip(self.fields, self.defaults, self.converters(), strict=True))
        order = order[1:] + order[:1]  # the id last, for the WHERE
        prepared = [
            [convert(row.get(f.attname, default)) for f, default, convert in order]
            for row in rows
            if isinstance(row, dict)
        ]
        with connection.cursor() as cursor:
            cursor.executemany(self.sql(), prepared)


TRACE_PROGRESS = _Progress(
    Trace, ["id", "last_seq", "current_step", "prompt_tokens", "completion_tokens", "total_tokens"]
)
# The values of Batch.events, in this order.
EVENT_ROWS = _Rows(Event, ["trace", "seq", "event_type", "timestamp", "message_id", "run_id", "envelope"])


PUBLISH_MAX_EVENTS = 1000  # events in one bus message, at most (when batches are waiting to be published)
PUBLISH_MAX_BYTES = 4 * 1024 * 1024


class EventStore:
    """Group commit and in-order delivery for every trace recorded by this event loop.

    After each batch commits, its events go to this process's sockets through the hub, at once,
    and to the other processes through the bus, one message per batch.
    """

    def __init__(self, hub: Hub | None = None, bus: Bus | None = None) -> None:
        self.hub = hub if hub is not None else get_hub()
        self.bus = bus if bus is not None else get_bus()
        # Pending events, and how many are queued or being written (drain() waits for none).
        self.queue: collections.deque[Pending] = collections.deque()
        self._arrived = asyncio.Event()
        self._unfinished = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.published: asyncio.Queue[list[StoredEvent]] = asyncio.Queue()
        self.store_ok = True
        self.writing_since: float | None = None  # time.monotonic() when the batch being written was handed over
        self._tasks: list[asyncio.Task] = []
        self._finishing: set[asyncio.Task] = set()  # batches the writer process is storing
        self.elsewhere: StoreElsewhere | None = None  # the writer process, if this store uses one

    def warm_up(self) -> None:
        """A server's store: have its writer process (if it uses one) ready before the first event."""
        if self.elsewhere is None and writer_process is not None:
            self.elsewhere = writer_process()
        if self.elsewhere is not None:
            self.elsewhere.warm_up()

    def _ensure_started(self) -> None:
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._write_loop()), asyncio.create_task(self._publish_loop())]

    async def submit(self, item: Pending) -> None:
        self._ensure_started()
        self.queue.append(item)
        self._unfinished += 1
        self._idle.clear()
        self._arrived.set()

    async def _take_batch(self, most: int = MAX_BATCH) -> list[Pending]:
        while not self.queue:
            self._arrived.clear()
            await self._arrived.wait()
        count = min(len(self.queue), most)
        return [self.queue.popleft() for _ in range(count)]

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        slots = asyncio.Semaphore(PIPELINE)
        ahead: asyncio.Task | None = None  # the batch before, still being stored by the writer process
        while True:
            taken = await self._take_batch(MAX_BATCH if self.elsewhere is None else PROCESS_BATCH)
            items = self._writable(taken)
            if self.elsewhere is None and writer_process is not None:
                self.elsewhere = writer_process()
            elsewhere = self.elsewhere
            if elsewhere is None or not items:
                try:
                    if ahead is not None:
                        await asyncio.wait([ahead])  # in order
                    if items:
                        self.writing_since = time.monotonic()
                        started = time.perf_counter()
                        try:
                            outcome = await loop.run_in_executor(_writer_thread, _store, items)
                        finally:
                            self.writing_since = None
                        self._settle(items, outcome, started)
                finally:
                    self._done(taken)
                continue
            # The writer process stores this batch while the next one is numbered and sent.
            await slots.acquire()
            started = time.perf_counter()
            await elsewhere.send(items)
            ahead = asyncio.create_task(self._finish(taken, items, started, ahead, elsewhere, slots))
            self._finishing.add(ahead)
            ahead.add_done_callback(self._finishing.discard)

    async def _finish(
        self,
        taken: list[Pending],
        items: list[Pending],
        started: float,
        ahead: asyncio.Task | None,
        elsewhere: StoreElsewhere,
        slots: asyncio.Semaphore,
    ) -> None:
        """The writer process's answer for one batch, settled after the batch before it."""
        try:
            if ahead is not None:
                await asyncio.wait([ahead])
            self.writing_since = time.monotonic()
            try:
                outcome = await elsewhere.receive()
            finally:
                self.writing_since = None
            self._settle(items, outcome, started)
        finally:
            slots.release()
            self._done(taken)

    def _writable(self, taken: list[Pending]) -> list[Pending]:
        items = []
        for item in taken:
            if item.state.failed:
                _fail(item, TraceStoreError("trace history unavailable: an earlier event of this trace was not stored"))
            else:
                items.append(item)
        return items

    def _done(self, taken: list[Pending]) -> None:
        self._unfinished -= len(taken)
        if not self._unfinished:
            self._idle.set()

    def _settle(self, items: list[Pending], outcome: Outcome, started: float) -> None:
        """Deliver what a batch stored; fail the events' futures of what it could not."""
        if not outcome.stored:
            (_, exc), *_ = outcome.failed
            if self.store_ok:
                logger.error("trace history unavailable, %d event(s) not stored: %s", len(items), exc)
            self.store_ok = False
            self._refuse(items, TraceStoreError(f"trace history unavailable: {exc}"))
            return
        if not self.store_ok:
            logger.warning("trace history writable again")
            self.store_ok = True
        for part, exc in outcome.failed:
            # The others of the batch are stored: only this trace's runs end (its next emit raises).
            logger.error("trace=%s: %d event(s) could not be stored: %s", part[0].state.trace_id, len(part), exc)
            self._refuse(part, TraceStoreError(f"this trace's event could not be stored: {exc}"))
        EVENT_PERSIST_SECONDS.observe(time.perf_counter() - started)
        events = []
        for batch, part in outcome.stored:
            batch.commit(part)
            for item in part:
                if item.future is not None and not item.future.done():
                    item.future.set_result((item.seq, item.text))
                _settled(item.state)
                _count(item)
                events.append(
                    StoredEvent(
                        item.state.text_id,
                        item.seq,
                        item.state.session.group,
                        item.state.trace.get("owner_id"),
                        item.event_type,
                        item.text,
                    )
                )
        self.hub.deliver(events)  # this process's sockets: straight onto their outboxes
        self.published.put_nowait(events)

    @staticmethod
    def _refuse(items: list[Pending], error: TraceStoreError) -> None:
        for item in items:
            item.state.failed = True  # its later events are refused too: the stored trace has no holes
            item.state.numbered = item.state.last_seq  # numbered again from what is stored
            _fail(item, error)

    async def _publish_loop(self) -> None:
        """The other processes' sockets: one bus message per batch, in commit order; batches that
        committed while the last message was on its way go together in the next (so the queue
        cannot grow while Redis round trips are slower than commits)."""
        while True:
            events = list(await self.published.get())
            taken = 1
            size = sum(len(event.text) for event in events)
            while not self.published.empty() and len(events) < PUBLISH_MAX_EVENTS and size < PUBLISH_MAX_BYTES:
                more = self.published.get_nowait()
                events.extend(more)
                size += sum(len(event.text) for event in more)
                taken += 1
            try:
                await self.bus.publish(events)
            finally:
                for _ in range(taken):
                    self.published.task_done()

    async def drain(self) -> None:
        """Wait until everything submitted so far is stored and published (or has failed)."""
        await self._idle.wait()
        await self.published.join()

    async def aclose(self) -> None:
        tasks = [*self._tasks, *self._finishing]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks = []
        if self.elsewhere is not None:
            elsewhere, self.elsewhere = self.elsewhere, None
            await elsewhere.aclose()


def _fail(item: Pending, error: TraceStoreError) -> None:
    if item.future is not None and not item.future.done():
        item.future.set_exception(error)
    state = item.state
    if state.error is None:
        state.error = error
    _settled(state)


def _settled(state: TraceState) -> None:
    """One more of the trace's events is stored or refused: wake who waits for that many."""
    state.settled += 1
    if state.waiters:
        waiting = []
        for count, waiter in state.waiters:
            if count > state.settled:
                waiting.append((count, waiter))
            elif not waiter.done():
                waiter.set_result(None)
        state.waiters = waiting


def _count(item: Pending) -> None:
    kind = item.event_type
    if kind == EventType.TRACE_COMPLETED:
        completed = cast(TraceCompleted, item.data)
        RUNS.labels(completed.get("status") or "unknown").inc()
        duration_ms = completed.get("duration_ms")
        if duration_ms is not None:
            RUN_SECONDS.observe(duration_ms / 1000)
    elif kind == EventType.THINK_COMPLETED:
        prompt, completion, _ = _usage(cast(RunFields, item.data))
        PROMPT_TOKENS.inc(prompt)
        COMPLETION_TOKENS.inc(completion)
    elif kind in (EventType.TOOL_COMPLETED, EventType.RUN_ERROR):
        run = cast(RunFields, item.data)
        if run.get("run_type") == RunType.TOOL:
            _tool_calls(run.get("name") or "", run.get("status") or "").inc()


PROMPT_TOKENS = TOKENS.labels("prompt")
COMPLETION_TOKENS = TOKENS.labels("completion")
MAX_TOOL_LABELS = 200  # tool names come from other agents' spans too: the metric's labels stay bounded
_tool_counters: dict[tuple[str, str], Any] = {}


def _tool_calls(name: str, status: str) -> Any:
    counter = _tool_counters.get((name, status))
    if counter is None:
        if len(_tool_counters) >= MAX_TOOL_LABELS:
            name = "(other)"
        counter = _tool_counters[(name, status)] = TOOL_CALLS.labels(name, status)
    return counter


@dataclasses.dataclass
class Outcome:
    """What the writer thread stored (each part with its batch) and what it could not."""

    stored: list[tuple[Batch, list[Pending]]]
    failed: list[tuple[list[Pending], Exception]]


def _attempt(items: list[Pending], numbered: bool) -> Batch:
    batch = Batch()
    for item in items:
        if numbered:
            batch.record(item)
        else:
            batch.add(item)
    batch.write()
    return batch


def _store(items: list[Pending], numbered: bool = False) -> Outcome:
    """Runs on the writer thread (or in the writer process, where the server has numbered the
    events already): the batch in one transaction; if that fails, each trace's part in one of its
    own, so that a trace whose event cannot be stored (too large for the database, say) fails
    alone. If every part fails, the database is down: retry it all with delays."""
    try:
        return Outcome([(_attempt(items, numbered), items)], [])
    except DatabaseError as exc:
        logger.debug("trace batch write failed: %s", exc)
        last: Exception = exc
        connection.close()  # reconnect on the next attempt
    parts: dict[uuid.UUID, list[Pending]] = {}
    for item in items:
        parts.setdefault(item.state.trace_id, []).append(item)
    if len(parts) > 1:
        stored: list[tuple[Batch, list[Pending]]] = []
        failed: list[tuple[list[Pending], Exception]] = []
        for part in parts.values():
            try:
                stored.append((_attempt(part, numbered), part))
            except DatabaseError as exc:
                failed.append((part, exc))
                connection.close()
        if stored:  # the database works: the traces that failed are the ones that cannot be stored
            return Outcome(stored, failed)
    for attempt, delay in enumerate(RETRY_DELAYS, start=2):
        time.sleep(delay)
        try:
            return Outcome([(_attempt(items, numbered), items)], [])
        except DatabaseError as exc:
            logger.debug("trace batch write failed (attempt %d): %s", attempt, exc)
            last = exc
            connection.close()
    return Outcome([], [(items, last)])


class StoreElsewhere(Protocol):
    """A store in another process: batches are sent in order, and answered in the same order."""

    async def send(self, items: list[Pending]) -> None:
        """Number the batch and send it."""

    async def receive(self) -> Outcome:
        """The answer for the oldest batch sent and not answered."""

    async def aclose(self) -> None:
        """Stop, once everything sent is answered."""

    def warm_up(self) -> None:
        """Get ready for the first batch, in the background."""


# Set by traces.writer.use_writer_process(): each event loop's store makes one (a server has one loop).
writer_process: Callable[[], StoreElsewhere] | None = None


_stores: PerLoop[EventStore] = PerLoop(EventStore)


def get_event_store() -> EventStore:
    """The EventStore of the running event loop."""
    return _stores.get()


def all_event_stores() -> list[EventStore]:
    """Every event loop's EventStore in this process (the server has one)."""
    return _stores.all()


async def run_on_writer(work: Callable[[], Any]) -> Any:
    """Run ``work`` (database writes) on the writer thread, in order with the batches."""

    def call() -> Any:
        try:
            return work()
        except DatabaseError:
            connection.close()  # reconnect next time
            raise

    return await asyncio.get_running_loop().run_in_executor(_writer_thread, call)


def _retrieved(future: asyncio.Future) -> None:
    """A refused event's future whose caller does not await it is not reported as unhandled."""
    if not future.cancelled():
        future.exception()


class TraceRecorder:
    """The ``TraceSink`` for one trace: queues each event the agent emits to be stored, then published."""

    def __init__(
        self,
        *,
        trace_id: uuid.UUID | None = None,
        session: SessionKey | None = None,
        source: str = Trace.Source.WEBSOCKET,
        owner_id: int | None = None,
        rerun_of: uuid.UUID | None = None,
        store: EventStore | None = None,
        runner: str = "",
    ) -> None:
        self.trace_id = trace_id or uuid.uuid4()
        self.session = session = session or SessionKey("")
        self.store = store or get_event_store()
        now = utcnow()
        self.state = TraceState(
            trace_id=self.trace_id,
            session=session,
            trace={
                "id": self.trace_id,
                "session_id": session.session_id,
                "source": source,
                "owner_id": owner_id,
                "runner": runner,
                "rerun_of_id": rerun_of,
                "name": "",
                "agent_name": "",
                "request": "",
                "started_at": now,
                "status": Trace.Status.RUNNING,
            },
        )

    @property
    def failure(self) -> TraceStoreError | None:
        """Why an event of this trace was refused, until ``reset_failure()``."""
        return self.state.error

    async def emit(self, event_type: EventType, data: EventData, timestamp: dt.datetime | None = None) -> None:
        """Queue the event; it is stored, then delivered, shortly after. See the module docstring."""
        await self._queue(event_type, data, timestamp, None, wait_at_end=True)

    async def submit(
        self,
        event_type: EventType,
        data: EventData,
        timestamp: dt.datetime | None = None,
        *,
        wait_at_end: bool = True,
    ) -> asyncio.Future:
        """Queue the event; returns a future of ``(seq, envelope text)`` that resolves once it is stored.

        A trace's ``trace_completed`` waits until everything is stored, unless ``wait_at_end`` is
        off (a caller that ends many traces and flushes them together). Raises
        ``TraceStoreError`` if an earlier event of this trace could not be stored.
        """
        future = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieved)
        await self._queue(event_type, data, timestamp, future, wait_at_end=wait_at_end)
        return future

    async def _queue(
        self,
        event_type: EventType,
        data: EventData,
        timestamp: dt.datetime | None,
        future: asyncio.Future | None,
        *,
        wait_at_end: bool,
    ) -> None:
        if event_type not in protocol.TRACE_EVENTS:
            raise ValueError(f"{event_type} is not a trace event")
        state = self.state
        if state.error is not None:
            raise state.error
        state.submitted += 1
        await self.store.submit(Pending(state, event_type, data, timestamp or utcnow(), future))
        if event_type == EventType.TRACE_COMPLETED and wait_at_end:
            await self.flush()
        elif state.submitted - state.settled >= MAX_IN_FLIGHT:
            await self._settled_up_to(state.submitted - MAX_IN_FLIGHT + 1)

    async def _settled_up_to(self, count: int) -> None:
        """Wait until ``count`` of the trace's events are stored or refused (they settle in order)."""
        state = self.state
        if state.settled >= count:
            return
        waiter = asyncio.get_running_loop().create_future()
        state.waiters.append((count, waiter))
        await waiter

    async def flush(self) -> None:
        """Wait until every event emitted so far is stored; raises ``TraceStoreError`` if one was not."""
        await self._settled_up_to(self.state.submitted)
        if self.state.error is not None:
            raise self.state.error

    async def reset_failure(self) -> None:
        """Accept events again after a failure (to record how the trace ended once the database is
        back), once everything queued before it has been refused: the stored trace keeps no holes."""
        await self._settled_up_to(self.state.submitted)
        self.state.error = None
        self.state.failed = False

    @property
    def last_seq(self) -> int:
        return self.state.last_seq
