"""Spans from other agents (OTLP) recorded as traces: the same Trace, Run and Event rows and the
same stored envelopes as the built-in agent's, delivered live through the same store and hub.

Each span is a run whose id is derived from (trace id, span id), so an export sent twice, or a
span's final version after its pending copy, lands on the same run:

- a span seen for the first time while still open (a pending span) is a ``*_started`` event;
- a span's end is its completed event (``think_completed``, ``tool_completed``,
  ``run_completed``) or ``run_error``; a span that has ended is never changed again, and a
  pending copy arriving after its end is ignored;
- a span whose parent has not arrived is shown under a placeholder run for the parent (the
  parent's own run id, so the parent's events later fill it in place);
- a span whose parent chain loops back (a span its own parent, A under B under A) is rejected:
  the tree has no place for it;
- a trace completes when its root span has ended and nothing under it is open, after a short
  grace period for late exports; a trace with no news for ``TRACE_OTLP_ABANDON_SECONDS`` is
  completed as it is, its open spans closed as abandoned.

Exports of one trace may reach any server process, in any order (a load balancer, a restart). A
process keeps what it knows of a trace in memory and checks it against the trace's row with
each export (one query for the whole export): a trace another process wrote since is read again
before its spans are mapped. The rows themselves, totals included, are the store's projection of
the events (``traces.store.projection``), never counted here. Two processes writing one trace
at the same moment both number the same seq; the loser's events are refused as a conflict and it
reads the trace again and maps its spans anew (``CONFLICT_RETRIES`` times).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as dt
import hashlib
import logging
import time
import uuid
from typing import Any

from django.conf import settings

from agents.chat import Usage
from agents.events import (
    EventType,
    RunFields,
    RunStatus,
    RunType,
    StopReason,
    TraceCompleted,
    TraceOutcome,
    TraceStarted,
    format_timestamp,
    utcnow,
)
from agents.pricing import PriceTable
from agents.tracing import COMPLETED_EVENT, STARTED_EVENT
from traces.access import SessionKey
from traces.ingest.spans import RunView, SpanRecord, answer_of
from traces.models import Run, Trace
from traces.store.event_store import EventStore, HistoryUnavailable, TraceConflict, TraceStoreError
from traces.store.pool import pooled
from traces.store.recorder import TraceRecorder

logger = logging.getLogger(__name__)

RUN_NAMESPACE = uuid.UUID("6f1c7c2e-3f0e-4c59-9a56-6f1d2b3c4d5e")
TRACE_NAMESPACE = uuid.UUID("0c6d7f2a-9a1b-4e0f-8c3d-2b7e5f4a1c90")
YIELD_EVERY = 20  # spans mapped between turns of the event loop: the store sends, answers are delivered
EVICT_AFTER = 120.0  # seconds a completed trace stays in memory for late retries
CONFLICT_RETRIES = 3  # times a trace another process wrote at the same moment is read again and mapped anew
SWEEP_SECONDS = 1.0
# Why spans of a trace the token's user does not own are rejected (whoever exported the trace id
# first owns it). The same words for every such trace, whoever owns it: not an answer to whether
# a trace id is taken, or by whom.
NOT_WRITABLE = "trace {trace}: this token may not write to it"
# Spans dated outside these are rejected: a trace is placed in the history by when it started, and a
# span from 2100 (or 1970, a clock that was never set) would pin its trace to the top (or bottom).
EARLIEST = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
MAX_AHEAD = dt.timedelta(days=1)  # beyond the server's clock


class ExportConflict(HistoryUnavailable):
    """Another process kept writing the same traces: the exporter should send the export again."""


def trace_uuid(trace_hex: str) -> uuid.UUID:
    """The ``Trace`` id of an OTLP trace id: the id itself when it is an RFC 4122 UUID of versions
    1–5, which every database stores as it is, else a UUID derived from it (MariaDB's UUID type
    refuses a quarter of random 128-bit ids: versions 8–f with some variants). The OTLP id is kept
    in the trace's metadata either way."""
    value = uuid.UUID(hex=trace_hex)
    if value.variant == uuid.RFC_4122 and value.version in (1, 2, 3, 4, 5):
        return value
    return uuid.uuid5(TRACE_NAMESPACE, trace_hex.lower())


def run_id(trace_id: uuid.UUID, span_hex: str) -> uuid.UUID:
    """The ``Run`` id of a span: the same for every export of it."""
    return uuid.UUID(run_text_id(trace_id, span_hex))


def run_text_id(trace_id: uuid.UUID, span_hex: str) -> str:
    """The span's run id as events carry it: ``uuid5(RUN_NAMESPACE, "<trace hex>:<span hex>")``,
    built as text, without the two UUID objects ``uuid5`` makes on the way (it runs for every span)."""
    digest = bytearray(hashlib.sha1(_RUN_NAMESPACE_BYTES + f"{trace_id.hex}:{span_hex}".encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    text = digest.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


_RUN_NAMESPACE_BYTES = RUN_NAMESPACE.bytes


@dataclasses.dataclass(slots=True)
class SpanState:
    run_id: str  # the run's id, as events carry it
    parent: str | None = None  # the parent span's id
    ended: bool = False
    placeholder: bool = False
    fields: RunFields | None = None  # the run as last sent, while the span is open (to close it if abandoned)


class TraceIngest:
    """One ingested trace as this process knows it: its recorder and what its spans have done."""

    def __init__(self, trace_id: uuid.UUID, otel_id: str, recorder: TraceRecorder, completed: bool) -> None:
        self.trace_id = trace_id
        self.text_id = str(trace_id)
        self.otel_id = otel_id  # the trace id the spans carry (32 hex digits)
        self.recorder = recorder
        self.spans: dict[str, SpanState] = {}
        self.open: set[str] = set()  # spans started and not ended
        self.lock = asyncio.Lock()
        self.root: str | None = None
        self.root_answer = ""
        self.root_ended_at: float | None = None  # time.monotonic() when the root's end arrived
        self.root_status: RunStatus = RunStatus.SUCCESS
        self.root_error: tuple[str, str] | None = None
        self.root_duration: int | None = None
        self.completed = completed
        self.completed_at: float | None = time.monotonic() if completed else None
        self.started_at: dt.datetime | None = None
        self.question = ""
        self.model = ""  # the first model seen
        self.answer = ""  # the last LLM output without tool calls
        self.said_question = False  # the row has the question
        self.said_model = False  # the row has the model

    @property
    def owner_id(self) -> int | None:
        return self.recorder.owner_id

    @property
    def in_flight(self) -> bool:
        """Its events are on their way to the store."""
        sequence = self.recorder.sequence
        return sequence.submitted != sequence.settled

    @property
    def busy(self) -> bool:
        """An export is mapping its spans, or its events are on their way to the store."""
        return self.lock.locked() or self.in_flight


class Ingestor:
    """The ingested traces of this process (per event loop), and the sweeper that completes and
    abandons them. ``runner`` is the process's runner id: the traces it records are its to close
    if it dies (``traces.store.liveness``)."""

    def __init__(self, store: EventStore, runner: str = "", shared: bool = True) -> None:
        self.store = store
        self.runner = runner
        # Other server processes may write the same traces (a channel layer between processes):
        # what this one knows of a trace is checked against its row with every export.
        self.shared = shared
        self.traces: dict[uuid.UUID, TraceIngest] = {}
        # Unfinished traces by their last news, oldest first (the abandon sweep reads from the front);
        # traces whose root ended, waiting out the grace period; finished ones, by when.
        self.news: collections.OrderedDict[uuid.UUID, float] = collections.OrderedDict()
        self.completing: set[uuid.UUID] = set()
        self.finished: collections.OrderedDict[uuid.UUID, float] = collections.OrderedDict()
        self.prices = PriceTable.from_file(settings.AGENT_PRICES_FILE)
        self._sweeper: asyncio.Task | None = None
        self._unyielded = 0  # spans mapped since the event loop last ran something else

    def start(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_loop(), name="otlp-sweeper")

    async def aclose(self) -> None:
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.cancel()
            await asyncio.gather(sweeper, return_exceptions=True)

    # ------------------------------------------------------------------ an export

    async def ingest(self, spans: list[SpanRecord], owner_id: int | None) -> tuple[int, str]:
        """Record ``spans``; returns how many were rejected and why. Raises ``HistoryUnavailable``
        when the history cannot be written (the exporter should send the export again)."""
        self.start()
        by_trace: dict[str, list[SpanRecord]] = {}
        rejected, reasons = 0, []
        latest = utcnow() + MAX_AHEAD
        for span in spans:
            if not _valid_id(span.trace_id, 16) or not _valid_id(span.span_id, 8):
                rejected += 1
                reasons.append(f"span {span.name!r}: trace and span ids must be non-zero")
                continue
            if not _plausible(span.start, latest) or not _plausible(span.end, latest):
                rejected += 1
                reasons.append(
                    f"span {span.span_id} of trace {span.trace_id}: dated before {EARLIEST:%Y-%m-%d} "
                    "or more than a day ahead of the server's clock"
                )
                continue
            by_trace.setdefault(span.trace_id, []).append(span)
        ids = {trace_hex: trace_uuid(trace_hex) for trace_hex in by_trace}
        groups = {ids[trace_hex]: group for trace_hex, group in by_trace.items()}
        refused: dict[uuid.UUID, list[str]] = {}  # per trace, as the last attempt found
        for _ in range(CONFLICT_RETRIES + 1):
            await self._refresh(groups, owner_id)
            touched: list[TraceIngest] = []
            conflicted: set[uuid.UUID] = set()
            for trace_id, group in groups.items():
                trace = self.traces[trace_id]
                if trace.owner_id != owner_id:
                    refused[trace_id] = [NOT_WRITABLE.format(trace=trace.otel_id)] * len(group)
                    continue
                async with trace.lock:
                    if self.traces.get(trace_id) is not trace:
                        # Read again by another export while this one waited (another process had
                        # written it): its spans go the next round, to the trace as it is now.
                        conflicted.add(trace_id)
                        continue
                    kept, refused[trace_id] = _without_loops(trace, group)
                    if not kept and not trace.spans and not trace.in_flight:
                        self._forget(trace_id)  # nothing of it can be recorded
                        continue
                    await self._apply(trace, kept)
                self._heard_of(trace)
                touched.append(trace)
            # Every trace's events are queued: they commit together (group commit), then the answer.
            conflicts: dict[uuid.UUID, list[SpanRecord]] = {trace_id: groups[trace_id] for trace_id in conflicted}
            for trace, error in zip(touched, await _flushed(touched), strict=True):
                if error is None:
                    continue
                self._forget(trace.trace_id)  # read from the database next time
                if isinstance(error, TraceConflict):
                    conflicts[trace.trace_id] = groups[trace.trace_id]
                elif isinstance(error, HistoryUnavailable):
                    raise error
                elif isinstance(error, TraceStoreError):
                    # The database works, but this trace's events cannot be stored (too large, say):
                    # a retry would fail the same way, so its spans are rejected.
                    refused[trace.trace_id] = [f"trace {trace.otel_id}: {error}"] * len(groups[trace.trace_id])
                else:
                    raise error
            if not conflicts:
                break
            groups = conflicts
            logger.info("otlp: %d trace(s) written by another process meanwhile: mapping again", len(conflicts))
        else:
            raise ExportConflict("other processes kept writing these traces at the same moment; send the export again")
        for found in refused.values():
            rejected += len(found)
            reasons.extend(dict.fromkeys(found))
        return rejected, "; ".join(reasons[:5])

    async def _refresh(self, groups: dict[uuid.UUID, list[SpanRecord]], owner_id: int | None) -> None:
        """Have every trace of the export in memory as its row says it is now: new ones, ones
        seen before by another process or this one before a restart, and ones another process
        wrote since this one last did. One query for their rows, one for the runs of those read
        again."""
        asked = [trace_id for trace_id in groups if self.shared or trace_id not in self.traces]
        rows = await _rows(asked) if asked else {}
        stale: dict[uuid.UUID, TraceIngest | None] = {}
        for trace_id in asked:
            known = self.traces.get(trace_id)
            row = rows.get(trace_id)
            # Only a row further along than what this process stored means another process wrote it
            # (a row behind it was read before this process's own last commit).
            if known is not None and (known.busy or row is None or row["last_seq"] <= known.recorder.last_seq):
                continue
            stale[trace_id] = known
        stored = [trace_id for trace_id in stale if trace_id in rows]
        runs = await _runs(stored) if stored else {}
        claimed = []
        for trace_id, known in stale.items():
            if self.traces.get(trace_id) is not known:
                continue  # another export read it meanwhile: one view of a trace in a process
            if known is not None:
                self._forget(trace_id)
            row = rows.get(trace_id)
            first = groups[trace_id][0]
            trace = self._load(trace_id, first.trace_id, row, runs.get(trace_id, []), first, owner_id)
            self.traces[trace_id] = trace
            if row is not None and not trace.completed and row["runner"] != self.runner and self.runner:
                claimed.append(trace_id)
            if trace.completed:
                self._finished(trace)
            elif trace.root_ended_at is not None:
                self.completing.add(trace_id)
        if claimed:
            await _claim(claimed, self.runner)  # this process now closes them if it dies

    def _load(
        self,
        trace_id: uuid.UUID,
        otel_id: str,
        row: dict[str, Any] | None,
        runs: list[dict[str, Any]],
        first: SpanRecord | None = None,
        owner_id: int | None = None,
    ) -> TraceIngest:
        """A trace as stored (its sequence, its spans, which have ended), or a new one from its
        ``first`` span."""
        if row is None:
            assert first is not None
            new = TraceRecorder(
                self.store,
                trace_id=trace_id,
                session=SessionKey.of(first.session, owner_id),
                source=first.source,
                owner_id=owner_id,
                runner=self.runner,
            )
            return TraceIngest(trace_id, otel_id, new, completed=False)
        recorder = TraceRecorder(
            self.store,
            trace_id=trace_id,
            session=SessionKey.of(row["session_id"], row["owner_id"]),
            source=row["source"],
            owner_id=row["owner_id"],
            runner=self.runner,
            last_seq=row["last_seq"],
        )
        trace = TraceIngest(trace_id, otel_id, recorder, completed=row["status"] != Trace.Status.RUNNING)
        trace.started_at = row["started_at"]
        trace.question, trace.said_question = row["request"], bool(row["request"])
        trace.model, trace.said_model = row["model"], bool(row["model"])
        span_of = {run["id"]: (run.get("metadata") or {}).get("span_id") for run in runs}
        answers = []
        for run in runs:
            metadata = run.get("metadata") or {}
            span_id = metadata.get("span_id")
            if not span_id:
                continue
            state = SpanState(
                str(run["id"]), parent=span_of.get(run["parent_id"]), ended=run["status"] != Run.Status.RUNNING
            )
            state.placeholder = bool(metadata.get("placeholder"))
            trace.spans[span_id] = state
            if not state.ended:
                trace.open.add(span_id)
                state.fields = _fields_of(run, trace.text_id)
            if run["parent_id"] is None and not state.placeholder:
                trace.root = span_id
                trace.root_answer = answer_of(run.get("outputs"))
                if state.ended:
                    trace.root_ended_at = time.monotonic()
                    trace.root_duration = run["duration_ms"]
                    trace.root_status = RunStatus.ERROR if run["status"] == RunStatus.ERROR else RunStatus.SUCCESS
                    if run.get("error"):
                        trace.root_error = (run["error"], run.get("error_type") or "")
            if run["run_type"] == Run.Type.THINK and not (run.get("outputs") or {}).get("tool_calls"):
                answers.append((run.get("end_time") or run["start_time"], (run.get("outputs") or {}).get("content")))
        if answers:
            trace.answer = str(max(answers, key=lambda answer: answer[0])[1] or "")
        return trace

    async def _apply(self, trace: TraceIngest, spans: list[SpanRecord]) -> None:
        if trace.recorder.last_seq == 0 and not trace.spans and not trace.in_flight and spans:
            await self._start(trace, spans)
        for span in _parents_first(spans):
            await self._span(trace, span)
            self._unyielded += 1
            if self._unyielded >= YIELD_EVERY:
                # Let the store send what is queued while the rest of the export is mapped: a
                # watcher sees the first spans of a large export before its last are read.
                self._unyielded = 0
                await asyncio.sleep(0)

    async def _start(self, trace: TraceIngest, spans: list[SpanRecord]) -> None:
        first = min(spans, key=lambda s: (s.parent_span_id is not None, s.start or utcnow()))
        root = next((s for s in spans if s.parent_span_id is None), None)
        question = root.view.question if root is not None else ""
        model = next((s.view.model for s in spans if s.view.model), "")
        trace.question, trace.said_question = question, bool(question)
        trace.model, trace.said_model = model, bool(model)
        trace.started_at = first.start or utcnow()
        started = TraceStarted(
            trace_id=trace.text_id,
            trace_name=(root or first).name[:200] or f"{first.service}_execution",
            request=question,
            agent_name=first.service,
            max_steps=0,
            metadata={
                "model": model,
                "service": first.service,
                "source": first.source,
                "otel_trace_id": trace.otel_id,
            },
        )
        await trace.recorder.emit(EventType.TRACE_STARTED, started, trace.started_at)

    async def _span(self, trace: TraceIngest, span: SpanRecord) -> None:
        state = trace.spans.get(span.span_id)
        if state is not None and state.ended:
            return  # its end is recorded: a retried export, or a pending copy that came late
        if state is not None and span.pending and not state.placeholder:
            if span.question and not trace.question:
                trace.question = span.question  # said once it was known: recorded with the end
            return  # the same pending copy again
        if span.parent_span_id and span.parent_span_id not in trace.spans:
            await self._placeholder(trace, span.parent_span_id, span)
        run = span.view
        if span.parent_span_id is None:
            trace.root, trace.root_answer = span.span_id, run.answer
            if run.question and run.question != trace.question:
                # The root's input is the question, over a model call's prompt taken before it came.
                trace.question, trace.said_question = run.question, False
        elif run.run_type == RunType.THINK and not trace.question and run.inputs.get("content"):
            trace.question = str(run.inputs["content"])  # the first model call's question, until the root says
        if run.model and not trace.model:
            trace.model = run.model
        state = state or SpanState(run_text_id(trace.trace_id, span.span_id))
        state.placeholder, state.parent = False, span.parent_span_id
        trace.spans[span.span_id] = state
        fields = self._fields(trace, span, run, state)
        if span.pending:
            state.fields = fields
            trace.open.add(span.span_id)
            await trace.recorder.emit(STARTED_EVENT[run.run_type], fields, span.start or utcnow())
            return
        state.ended, state.fields = True, None
        trace.open.discard(span.span_id)
        failed = fields["status"] == RunStatus.ERROR and run.run_type != RunType.AGENT
        kind = EventType.RUN_ERROR if failed else COMPLETED_EVENT[run.run_type]
        await trace.recorder.emit(kind, fields, span.end or utcnow())
        if run.run_type == RunType.THINK and run.answer and not run.tool_calls:
            trace.answer = run.answer
        if span.span_id == trace.root:
            trace.root_ended_at = time.monotonic()
            trace.root_duration = fields["duration_ms"]
            trace.root_status = RunStatus(fields["status"])
            if fields.get("error"):
                trace.root_error = (str(fields["error"]), str(fields.get("error_type") or ""))
            if not trace.completed:
                self.completing.add(trace.trace_id)

    async def _placeholder(self, trace: TraceIngest, span_id: str, child: SpanRecord) -> None:
        state = SpanState(run_text_id(trace.trace_id, span_id), placeholder=True)
        trace.spans[span_id] = state
        trace.open.add(span_id)
        fields = RunFields(
            run_id=state.run_id,
            trace_id=trace.text_id,
            parent_run_id=None,
            name=f"(waiting for span {span_id})",
            run_type=RunType.AGENT,
            status=RunStatus.RUNNING,
            start_time=format_timestamp(child.start or utcnow()),
            end_time=None,
            duration_ms=None,
            inputs={},
            outputs={},
            error=None,
            error_type=None,
            metadata={"placeholder": True, "span_id": span_id},
        )
        state.fields = fields
        await trace.recorder.emit(EventType.STEP_STARTED, fields, child.start or utcnow())

    def _fields(self, trace: TraceIngest, span: SpanRecord, run: RunView, state: SpanState) -> RunFields:
        start = span.start or utcnow()
        end = None if span.pending else span.end or start
        metadata = dict(run.metadata, span_id=span.span_id)
        if span.events:
            metadata["events"] = span.events
        fields = RunFields(
            run_id=state.run_id,
            trace_id=trace.text_id,
            parent_run_id=trace.spans[span.parent_span_id].run_id if span.parent_span_id else None,
            name=run.name[:200],
            run_type=run.run_type,
            status=RunStatus.RUNNING if span.pending else span.status,
            start_time=format_timestamp(start),
            end_time=format_timestamp(end) if end else None,
            duration_ms=max(0, int((end - start).total_seconds() * 1000)) if end else None,
            inputs=run.inputs,
            outputs=run.outputs,
            error=span.error,
            error_type=span.error_type,
            metadata=metadata,
        )
        if run.run_type == RunType.THINK and not span.pending:
            usage = Usage(run.prompt_tokens, run.completion_tokens, run.prompt_tokens + run.completion_tokens)
            fields["token_usage"] = usage.as_dict()
            fields["model"] = run.model
            fields["cost"] = self.prices.cost(run.model, usage) if run.model else 0.0
        return fields

    # ------------------------------------------------------------------ the sweeper

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(min(SWEEP_SECONDS, settings.TRACE_OTLP_COMPLETE_AFTER_SECONDS / 2 or 0.1))
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the sweeper outlives a database blip
                logger.warning("otlp sweep failed: %r", exc)

    async def sweep(self, now: float | None = None) -> None:
        """Complete the traces whose root ended a grace period ago with nothing open, and those
        with no news for ``TRACE_OTLP_ABANDON_SECONDS``. Costs nothing when none is due: it reads
        only the traces waiting to complete and the front of the news queue."""
        now = time.monotonic() if now is None else now
        grace = settings.TRACE_OTLP_COMPLETE_AFTER_SECONDS
        limit = settings.TRACE_OTLP_ABANDON_SECONDS
        due: dict[uuid.UUID, bool] = {}  # trace -> abandoned
        for trace_id in list(self.completing):
            trace = self.traces.get(trace_id)
            if trace is None or trace.completed:
                self.completing.discard(trace_id)
            elif trace.root_ended_at is not None and now - trace.root_ended_at >= grace and not trace.open:
                due[trace_id] = False
        for trace_id, heard in self.news.items():
            if now - heard < limit:
                break
            due[trace_id] = True
        if due:
            await self._complete_due(due, now)
        while self.finished:
            trace_id, at = next(iter(self.finished.items()))
            trace = self.traces.get(trace_id)
            if now - at <= EVICT_AFTER or (trace is not None and trace.lock.locked()):
                break
            self.finished.popitem(last=False)
            if trace is not None and trace.completed:
                self.traces.pop(trace_id, None)

    async def _complete_due(self, due: dict[uuid.UUID, bool], now: float) -> None:
        rows = await _rows(list(due))  # their totals now, and whether another process moved them
        completing: list[TraceIngest] = []
        moved: list[TraceIngest] = []
        for trace_id, abandoned in due.items():
            trace = self.traces.get(trace_id)
            row = rows.get(trace_id)
            if trace is None:
                self.news.pop(trace_id, None)
                continue
            async with trace.lock:
                if trace.in_flight:
                    continue  # its events are on their way: next time
                if row is None:
                    self._forget(trace_id)  # nothing of it was stored
                    continue
                if row["status"] != Trace.Status.RUNNING:
                    self._finished(trace)  # completed by another process
                    continue
                if row["last_seq"] > trace.recorder.last_seq:
                    moved.append(trace)  # another process added to it: read again, then decided
                    continue
                if row["last_seq"] < trace.recorder.last_seq:
                    continue  # read before this process's own last commit: its totals are behind, next time
                if abandoned:
                    await self._abandon(trace)
                elif trace.open:
                    continue
                await self._complete(trace, row)
                completing.append(trace)
        for trace, error in zip(completing, await _flushed(completing), strict=True):
            if error is None:
                self._finished(trace)
            else:
                logger.warning("trace=%s could not be completed yet: %s", trace.trace_id, error)
                self._forget(trace.trace_id)
        if moved:
            runs = await _runs([trace.trace_id for trace in moved])
            for trace in moved:
                if self.traces.get(trace.trace_id) is not trace or trace.busy:
                    continue  # an export read it again meanwhile
                again = self._load(trace.trace_id, trace.otel_id, rows[trace.trace_id], runs.get(trace.trace_id, []))
                self.traces[trace.trace_id] = again
                self.news[trace.trace_id] = self.news.get(trace.trace_id, now)
                if again.root_ended_at is not None:
                    self.completing.add(trace.trace_id)

    async def _abandon(self, trace: TraceIngest) -> None:
        limit = settings.TRACE_OTLP_ABANDON_SECONDS
        for span_id in sorted(trace.open):
            state = trace.spans[span_id]
            state.ended = True
            if state.fields is None:
                continue
            fields = state.fields.copy()
            fields["status"] = RunStatus.ERROR
            fields["end_time"] = format_timestamp(utcnow())
            fields["error"] = f"abandoned: no news of the trace within {limit:g} s"
            fields["error_type"] = "Abandoned"
            failed = fields["run_type"] != RunType.AGENT
            await trace.recorder.emit(EventType.RUN_ERROR if failed else EventType.RUN_COMPLETED, fields, utcnow())
            state.fields = None
        trace.open.clear()
        if trace.root_ended_at is None:
            # The root never ended (or never came): the trace ends with what it has.
            trace.root_status = RunStatus.ERROR
            trace.root_error = (f"abandoned: no end of the trace's root span within {limit:g} s", "Abandoned")

    async def _complete(self, trace: TraceIngest, row: dict[str, Any]) -> None:
        status = TraceOutcome.ERROR if trace.root_status == RunStatus.ERROR else TraceOutcome.SUCCESS
        started = trace.started_at or row["started_at"]
        data = TraceCompleted(
            trace_id=trace.text_id,
            duration_ms=int((utcnow() - started).total_seconds() * 1000) if started is not None else None,
            # The totals as the rows have them (the store's projection sums the runs).
            total_runs=row["total_runs"],
            status=status,
            total_cost=float(row["total_cost"]),
            total_tokens=row["total_tokens"],
            final_response=trace.root_answer or trace.answer,
            stopped_by=StopReason.ANSWER if status == TraceOutcome.SUCCESS else StopReason.ERROR,
        )
        if trace.root_duration is not None:
            data["duration_ms"] = trace.root_duration
        if trace.root_error:
            data["error"], data["error_type"] = trace.root_error
        if trace.question and not trace.said_question:
            data["request"] = trace.question
        if trace.model and not trace.said_model:
            data["model"] = trace.model
        await trace.recorder.submit(EventType.TRACE_COMPLETED, data, utcnow(), wait_at_end=False)

    # ------------------------------------------------------------------ bookkeeping

    def _heard_of(self, trace: TraceIngest) -> None:
        if not trace.completed:
            self.news[trace.trace_id] = time.monotonic()
            self.news.move_to_end(trace.trace_id)

    def _finished(self, trace: TraceIngest) -> None:
        trace.completed, trace.completed_at = True, time.monotonic()
        self.news.pop(trace.trace_id, None)
        self.completing.discard(trace.trace_id)
        self.finished[trace.trace_id] = trace.completed_at
        self.finished.move_to_end(trace.trace_id)

    def _forget(self, trace_id: uuid.UUID) -> None:
        self.traces.pop(trace_id, None)
        self.news.pop(trace_id, None)
        self.completing.discard(trace_id)
        self.finished.pop(trace_id, None)


async def _flushed(traces: list[TraceIngest]) -> list[BaseException | None]:
    """Wait until every event of ``traces`` is stored: what each one's flush raised, or None.

    The events are all queued already, so waiting for one trace after another takes no longer
    than waiting for all at once, without a task for each."""
    results: list[BaseException | None] = []
    for trace in traces:
        try:
            await trace.recorder.flush()
        except Exception as exc:  # noqa: BLE001 - reported per trace
            results.append(exc)
        else:
            results.append(None)
    return results


def _valid_id(value: str, size: int) -> bool:
    return len(value) == 2 * size and value != "0" * (2 * size)


def _plausible(moment: dt.datetime | None, latest: dt.datetime) -> bool:
    """A span's start or end (None: not said) is from this century and not far in the future."""
    return moment is None or EARLIEST <= moment <= latest


def _without_loops(trace: TraceIngest, spans: list[SpanRecord]) -> tuple[list[SpanRecord], list[str]]:
    """The spans whose parent chain ends (at a root, or a span not seen yet), and a reason for
    each of the others: a span its own parent, or in or under a loop of parents (A under B under A)."""
    parents: dict[str, str | None] = {span_id: state.parent for span_id, state in trace.spans.items()}
    for span in spans:
        if not span.pending or span.span_id not in parents:
            parents[span.span_id] = span.parent_span_id
    ends: dict[str, bool] = {}  # whether a span's chain ends, for those walked already
    kept, reasons = [], []
    for span in spans:
        chain: list[str] = []
        on_chain: set[str] = set()
        current: str | None = span.span_id
        while current is not None and current not in ends and current not in on_chain:
            chain.append(current)
            on_chain.add(current)
            current = parents.get(current)
        good = current is None or ends.get(current, False)
        ends.update(dict.fromkeys(chain, good))
        if good:
            kept.append(span)
        elif span.parent_span_id == span.span_id:
            reasons.append(f"span {span.span_id} of trace {span.trace_id}: it is its own parent")
        else:
            reasons.append(f"span {span.span_id} of trace {span.trace_id}: its parents form a loop")
    return kept, reasons


def _parents_first(spans: list[SpanRecord]) -> list[SpanRecord]:
    """Spans of one trace (without loops), each after its parent when both are in the list, then by start."""
    ids = {s.span_id for s in spans}
    by_parent: dict[str | None, list[SpanRecord]] = {}
    for span in sorted(spans, key=lambda s: (s.start or utcnow(), not s.pending)):
        parent = span.parent_span_id if span.parent_span_id in ids else None
        by_parent.setdefault(parent, []).append(span)
    ordered: list[SpanRecord] = []
    stack = list(reversed(by_parent.get(None, [])))
    while stack:
        span = stack.pop()
        ordered.append(span)
        stack.extend(reversed(by_parent.get(span.span_id, [])))
    return ordered


def _fields_of(run: dict[str, Any], trace_id: str) -> RunFields:
    """An open run's fields as its last event sent them, from its row (to close it if abandoned)."""
    start = run["start_time"]
    return RunFields(
        run_id=str(run["id"]),
        trace_id=trace_id,
        parent_run_id=str(run["parent_id"]) if run["parent_id"] else None,
        name=run["name"],
        run_type=run["run_type"],
        status=run["status"],
        start_time=format_timestamp(start),
        end_time=None,
        duration_ms=None,
        inputs=run.get("inputs") or {},
        outputs=run.get("outputs") or {},
        error=None,
        error_type=None,
        metadata=run.get("metadata") or {},
    )


TRACE_FIELDS = (
    "id",
    "last_seq",
    "status",
    "owner_id",
    "session_id",
    "source",
    "runner",
    "request",
    "model",
    "started_at",
    "total_tokens",
    "total_cost",
    "total_runs",
)


@pooled
def _rows(trace_ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
    """The rows of those of ``trace_ids`` that exist (what an export and a completion need of them)."""
    return {row["id"]: row for row in Trace.objects.filter(pk__in=trace_ids).values(*TRACE_FIELDS)}


@pooled
def _runs(trace_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[dict[str, Any]]]:
    runs: dict[uuid.UUID, list[dict[str, Any]]] = {}
    if trace_ids:
        for run in Run.objects.filter(trace_id__in=trace_ids).values():
            runs.setdefault(run["trace_id"], []).append(dict(run))
    return runs


@pooled
def _claim(trace_ids: list[uuid.UUID], runner: str) -> None:
    Trace.objects.filter(pk__in=trace_ids, status=Trace.Status.RUNNING).update(runner=runner)
