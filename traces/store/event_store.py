"""The event store of a process: numbering, group commit, then delivery, for every trace at once.

``submit()`` queues an event and returns. The store's loop takes every queued event of every
trace as one batch and

1. numbers each (``seq`` 1, 2, 3... per trace, no gaps), wraps it in its envelope and serialises
   it once (an event over ``TRACE_MAX_EVENT_BYTES`` has its longest values cut, with markers);
2. sends the batch to its sink (``traces.store.sinks``: a thread, or the writer process), which
   projects it onto the trace and run rows and writes everything in one transaction; up to
   ``sink.pipeline`` batches are on their way at once, answered in order;
3. once a batch is answered, hands what it stored to this process's sockets (the hub) and, one
   message per batch, to the other processes (the bus).

So an event is delivered only after it is stored. A trace whose events could not be stored
refuses its later events too (the stored trace has no holes) until ``TraceRecorder.reset_failure``;
its recorder raises the failure: ``TraceConflict``, ``TraceRefused`` or ``HistoryUnavailable``
(``traces.store.writer`` says when each happens).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as dt
import functools
import logging
import time
import uuid
from typing import Any, Protocol, cast

from django.conf import settings

from agents.events import BOUNDARY_EVENTS, EventData, EventType, RunFields, RunType, TraceCompleted, bound
from traces import protocol
from traces.access import SessionKey
from traces.metrics import EVENT_PERSIST_SECONDS, RUN_SECONDS, RUNS, TOKENS, TOOL_CALLS
from traces.store.projection import Row
from traces.store.sinks import Sink, ThreadSink
from traces.store.writer import Batch, Failure, FailureKind, Numbered, Outcome

logger = logging.getLogger(__name__)

MAX_IN_FLIGHT = 256  # events of one trace queued or being written before its recorder waits
PUBLISH_MAX_EVENTS = 1000  # events in one bus message, at most (when batches wait to be published)
PUBLISH_MAX_BYTES = 4 * 1024 * 1024


class TraceStoreError(Exception):
    """A trace's event was not stored, and not delivered."""


class TraceConflict(TraceStoreError):
    """Another process wrote the trace meanwhile: read it again and number anew."""


class TraceRefused(TraceStoreError):
    """The trace's own data cannot be stored; trying again will not help."""


class HistoryUnavailable(TraceStoreError):
    """The history database cannot be written: try again later."""


ERRORS: dict[FailureKind, type[TraceStoreError]] = {
    FailureKind.CONFLICT: TraceConflict,
    FailureKind.REFUSED: TraceRefused,
    FailureKind.UNAVAILABLE: HistoryUnavailable,
}


@dataclasses.dataclass(frozen=True, slots=True)
class StoredEvent:
    """One stored event as it is delivered: its envelope text and what routes it. The text is
    encoded once and shared by every socket; its type rides alongside, so a socket that is not
    shown this type skips it without reading the text."""

    trace_id: str
    seq: int
    session_group: str
    owner_id: int | None
    event_type: str
    text: str

    @property
    def boundary(self) -> bool:
        """trace_started or trace_completed: the all-traces feed carries it."""
        return self.event_type in BOUNDARY_EVENTS

    def as_tuple(self) -> tuple:
        return (self.trace_id, self.seq, self.session_group, self.owner_id, self.event_type, self.text)


class Deliverer(Protocol):
    """This process's sockets (``traces.live.hub.Hub``)."""

    def deliver(self, events: list[StoredEvent]) -> None: ...


class Publisher(Protocol):
    """The other processes (``traces.live.bus.Bus``)."""

    async def publish(self, events: list[StoredEvent]) -> None: ...


class _Nobody:
    def deliver(self, events: list[StoredEvent]) -> None:
        pass

    async def publish(self, events: list[StoredEvent]) -> None:
        pass


@dataclasses.dataclass(eq=False)
class TraceSequence:
    """What the store knows of one trace it numbers events for."""

    trace_id: uuid.UUID
    session: SessionKey
    owner_id: int | None
    origin: Row  # the trace's first row, sent with its seq 1
    committed: int = 0  # the last seq stored
    numbered: int = 0  # the last seq given (batches are numbered before the ones ahead are answered)
    failed: bool = False  # an event could not be stored: the later ones are refused, so the trace has no holes
    error: TraceStoreError | None = None  # the first refusal, until reset
    submitted: int = 0  # events submitted, and settled (stored or refused); they settle in order
    settled: int = 0
    waiters: list[tuple[int, asyncio.Future]] = dataclasses.field(default_factory=list)

    @functools.cached_property
    def text_id(self) -> str:
        return str(self.trace_id)

    @functools.cached_property
    def hex_id(self) -> str:
        return self.trace_id.hex

    @functools.cached_property
    def group(self) -> str:
        return self.session.group

    async def settled_up_to(self, count: int) -> None:
        """Wait until ``count`` of the trace's events are stored or refused."""
        if self.settled >= count:
            return
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append((count, waiter))
        await waiter

    def settle_one(self) -> None:
        self.settled += 1
        if self.waiters:
            waiting = []
            for count, waiter in self.waiters:
                if count > self.settled:
                    waiting.append((count, waiter))
                elif not waiter.done():
                    waiter.set_result(None)
            self.waiters = waiting


@dataclasses.dataclass(slots=True)
class Pending:
    sequence: TraceSequence
    event_type: EventType
    data: EventData
    timestamp: dt.datetime
    future: asyncio.Future | None  # only for a caller that wants the event as stored
    numbered: Numbered | None = None


@dataclasses.dataclass
class _Sent:
    items: list[Pending]
    answer: asyncio.Future[Outcome]
    started: float


class EventStore:
    """See the module docstring. One per event loop that records (a server has one)."""

    def __init__(self, sink: Sink | None = None, hub: Deliverer | None = None, bus: Publisher | None = None) -> None:
        self.sink = sink if sink is not None else ThreadSink()
        self.hub: Deliverer = hub if hub is not None else _Nobody()
        self.bus: Publisher = bus if bus is not None else _Nobody()
        self.queue: collections.deque[Pending] = collections.deque()
        self._arrived = asyncio.Event()
        self._unfinished = 0  # submitted and not settled
        self._idle = asyncio.Event()
        self._idle.set()
        self._sent: asyncio.Queue[_Sent | None] = asyncio.Queue()
        self._slots = asyncio.Semaphore(self.sink.pipeline)
        self.published: asyncio.Queue[list[StoredEvent]] = asyncio.Queue()
        self.store_ok = True
        self._answering: collections.deque[float] = collections.deque()  # when each batch on its way was sent
        self._tasks: list[asyncio.Task] = []
        self.max_event_bytes = settings.TRACE_MAX_EVENT_BYTES

    @property
    def writing_since(self) -> float | None:
        """``time.monotonic()`` when the oldest batch not answered yet was sent, if any."""
        return self._answering[0] if self._answering else None

    async def start(self) -> None:
        """Start the sink (a writer process: raises ``WriterProcessFailed`` if it does not come up)
        and the store's tasks. Called by the process's runtime; ``submit`` starts it too."""
        await self.sink.start()
        if not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks = [
                loop.create_task(self._write_loop(), name="store-write"),
                loop.create_task(self._settle_loop(), name="store-settle"),
                loop.create_task(self._publish_loop(), name="store-publish"),
            ]

    def sequence(
        self, trace_id: uuid.UUID, session: SessionKey, owner_id: int | None, origin: Row, last_seq: int = 0
    ) -> TraceSequence:
        """A trace to number events for; ``last_seq`` is how far it is stored already."""
        return TraceSequence(trace_id, session, owner_id, origin, committed=last_seq, numbered=last_seq)

    async def submit(self, item: Pending) -> None:
        if not self._tasks:
            await self.start()
        self.queue.append(item)
        self._unfinished += 1
        self._idle.clear()
        self._arrived.set()

    async def _take_batch(self) -> list[Pending]:
        while not self.queue:
            self._arrived.clear()
            await self._arrived.wait()
        count = min(len(self.queue), self.sink.batch_size)
        return [self.queue.popleft() for _ in range(count)]

    async def _write_loop(self) -> None:
        while True:
            taken = await self._take_batch()
            items = []
            for item in taken:
                if item.sequence.failed:
                    _refuse(item, TraceRefused("an earlier event of this trace was not stored"))
                    self._done(1)
                else:
                    items.append(item)
            if not items:
                continue
            batch = self._number(items)
            await self._slots.acquire()
            self._answering.append(time.monotonic())
            self._sent.put_nowait(_Sent(items, self.sink.send(batch), time.perf_counter()))

    def _number(self, items: list[Pending]) -> Batch:
        """Each event's seq and envelope text, the one stored and sent."""
        batch = Batch([])
        limit = self.max_event_bytes
        for item in items:
            sequence = item.sequence
            seq = sequence.numbered = sequence.numbered + 1
            text = self._text(item, seq)
            if len(text) > limit // 4 and len(text.encode()) > limit:
                # Too large to store and send as it is: its longest values are cut, with markers and
                # its original size (and the rows are projected from the cut event).
                item.data = bound(item.data, limit - 1024)
                text = self._text(item, seq)
            message_id = protocol.trace_message_id(item.event_type, sequence.hex_id, seq)
            item.numbered = Numbered(
                sequence.trace_id, seq, item.event_type, item.timestamp, message_id, text, item.data
            )
            batch.events.append(item.numbered)
            if seq == 1:
                batch.origins[sequence.trace_id] = sequence.origin
        return batch

    @staticmethod
    def _text(item: Pending, seq: int) -> str:
        sequence = item.sequence
        return protocol.dumps(
            protocol.envelope(
                item.event_type,
                dict(item.data),
                session_id=sequence.session.session_id,
                timestamp=item.timestamp,
                trace_id=sequence.text_id,
                seq=seq,
                message_id=protocol.trace_message_id(item.event_type, sequence.hex_id, seq),
            )
        )

    async def _settle_loop(self) -> None:
        """The sink's answers, in the order the batches were sent."""
        while True:
            sent = await self._sent.get()
            if sent is None:
                return
            try:
                try:
                    outcome = await sent.answer
                except Exception as exc:
                    logger.exception("a batch of trace events could not be stored")
                    outcome = Outcome(failed={i.sequence.trace_id: _failure(exc) for i in sent.items})
                self._settle(sent.items, outcome, sent.started)
            finally:
                self._answering.popleft()
                self._slots.release()
                self._done(len(sent.items))

    def _settle(self, items: list[Pending], outcome: Outcome, started: float) -> None:
        """Deliver what a batch stored; refuse what it could not."""
        unavailable = [f for f in outcome.failed.values() if f.kind == FailureKind.UNAVAILABLE]
        if unavailable and not outcome.stored:
            if self.store_ok:
                logger.error("trace history unavailable, %d event(s) not stored: %s", len(items), unavailable[0].reason)
            self.store_ok = False
        elif outcome.stored and not self.store_ok:
            logger.warning("trace history writable again")
            self.store_ok = True
        stored: list[StoredEvent] = []
        reported: set[uuid.UUID] = set()
        for item in items:
            sequence = item.sequence
            failure = outcome.failed.get(sequence.trace_id)
            numbered = item.numbered
            assert numbered is not None
            if failure is not None or sequence.trace_id not in outcome.stored:
                if (
                    failure is not None
                    and failure.kind != FailureKind.UNAVAILABLE
                    and sequence.trace_id not in reported
                ):
                    reported.add(sequence.trace_id)
                    # A conflict is expected now and then with several processes, and its caller
                    # reads the trace again; refused data is worth a warning.
                    level = logging.INFO if failure.kind == FailureKind.CONFLICT else logging.WARNING
                    logger.log(
                        level, "trace=%s: events not stored (%s): %s", sequence.trace_id, failure.kind, failure.reason
                    )
                error = ERRORS[failure.kind](failure.reason) if failure is not None else TraceRefused("not stored")
                sequence.numbered = sequence.committed  # numbered again from what is stored
                _refuse(item, error)
                continue
            sequence.committed = numbered.seq
            if item.future is not None and not item.future.done():
                item.future.set_result((numbered.seq, numbered.text))
            sequence.settle_one()
            _count(item)
            stored.append(
                StoredEvent(
                    sequence.text_id,
                    numbered.seq,
                    sequence.group,
                    sequence.owner_id,
                    str(item.event_type),
                    numbered.text,
                )
            )
        if stored:
            EVENT_PERSIST_SECONDS.observe(time.perf_counter() - started)
            self.hub.deliver(stored)  # this process's sockets: straight onto their outboxes
            self.published.put_nowait(stored)

    def _done(self, count: int) -> None:
        self._unfinished -= count
        if not self._unfinished:
            self._idle.set()

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
        """Stop the store's tasks and its sink (a writer process stores what it was sent, then
        ends). Callers that must not lose queued events ``drain()`` first."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.sink.aclose()


def _failure(exc: BaseException) -> Failure:
    return Failure(FailureKind.REFUSED, f"{type(exc).__name__}: {exc}")


def _refuse(item: Pending, error: TraceStoreError) -> None:
    sequence = item.sequence
    sequence.failed = True  # its later events are refused too: the stored trace has no holes
    if item.future is not None and not item.future.done():
        item.future.set_exception(error)
    if sequence.error is None:
        sequence.error = error
    sequence.settle_one()


def _count(item: Pending) -> None:
    kind = item.event_type
    if kind == EventType.TRACE_COMPLETED:
        completed = cast(TraceCompleted, item.data)
        RUNS.labels(completed.get("status") or "unknown").inc()
        duration_ms = completed.get("duration_ms")
        if duration_ms is not None:
            RUN_SECONDS.observe(duration_ms / 1000)
    elif kind == EventType.THINK_COMPLETED:
        usage = cast(RunFields, item.data).get("token_usage")
        if usage:
            PROMPT_TOKENS.inc(int(usage.get("prompt_tokens") or 0))
            COMPLETION_TOKENS.inc(int(usage.get("completion_tokens") or 0))
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
