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
- a trace completes when its root span has ended and nothing under it is open, after a short
  grace period for late exports; spans open with no news for ``TRACE_OTLP_ABANDON_SECONDS`` are
  closed as abandoned.

A trace's state lives in the process that receives its spans (loaded from the database when a
trace is seen again, after a restart or in another process); exports of one trace are expected to
reach one process at a time, which a single exporter does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import re
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
from traces.access import SessionKey
from traces.db import live_read
from traces.loops import PerLoop
from traces.models import Run, Trace
from traces.otlp import Span
from traces.recorder import TraceRecorder, TraceStoreError, get_event_store
from traces.runners import get_runners
from traces.spans import RunView, view

logger = logging.getLogger(__name__)

RUN_NAMESPACE = uuid.UUID("6f1c7c2e-3f0e-4c59-9a56-6f1d2b3c4d5e")
TRACE_NAMESPACE = uuid.UUID("0c6d7f2a-9a1b-4e0f-8c3d-2b7e5f4a1c90")
STARTED = {
    RunType.AGENT: EventType.STEP_STARTED,
    RunType.THINK: EventType.THINK_STARTED,
    RunType.TOOL: EventType.TOOL_STARTED,
}
COMPLETED = {
    RunType.AGENT: EventType.RUN_COMPLETED,
    RunType.THINK: EventType.THINK_COMPLETED,
    RunType.TOOL: EventType.TOOL_COMPLETED,
}
SESSION_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")
MODEL_KEYS = ("gen_ai.request.model", "gen_ai.response.model", "llm.model_name")
YIELD_EVERY = 20  # spans mapped between turns of the event loop: the store sends, answers are delivered
EVICT_AFTER = 120.0  # seconds a completed trace's state stays in memory for late retries


class SpanRejected(Exception):
    """Spans of a request that were not taken, with why (for ``partial_success``)."""


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
    built as text without two UUID objects (a third of the time, once per span)."""
    digest = bytearray(hashlib.sha1(_RUN_NAMESPACE_BYTES + f"{trace_id.hex}:{span_hex}".encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    text = digest.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


_RUN_NAMESPACE_BYTES = RUN_NAMESPACE.bytes


def session_of(span: Span) -> str:
    for source in (span.attributes, span.resource):
        for key in ("session.id", "gen_ai.conversation.id", "tracesite.session_id"):
            if source.get(key):
                return SESSION_CHARS.sub("-", str(source[key]))[:100] or "otel"
    service = str(span.resource.get("service.name") or "otel")
    return SESSION_CHARS.sub("-", f"otel-{service}")[:100]


def service_of(span: Span) -> str:
    return str(
        span.resource.get("openinference.project.name")
        or span.attributes.get("openinference.project.name")
        or span.resource.get("service.name")
        or "otel"
    )[:100]


def source_of(span: Span) -> str:
    return Trace.Source.SDK if span.resource.get("tracesite.source") == "sdk" else Trace.Source.OTEL


@dataclasses.dataclass
class SpanState:
    run_id: str  # the run's id, as events carry it
    ended: bool = False
    placeholder: bool = False
    seen: float = dataclasses.field(default_factory=time.monotonic)
    fields: RunFields | None = None  # the run as last sent: while the span is open, and for the root


class TraceIngest:
    """One ingested trace in this process: its recorder and what its spans have done so far."""

    def __init__(self, trace_id: uuid.UUID, otel_id: str, recorder: TraceRecorder, completed: bool) -> None:
        self.trace_id = trace_id
        self.text_id = str(trace_id)
        self.otel_id = otel_id  # the trace id the spans carry (32 hex digits)
        self.recorder = recorder
        self.spans: dict[str, SpanState] = {}
        self.lock = asyncio.Lock()
        self.root: str | None = None
        self.root_view: RunView | None = None
        self.root_start: Any = None
        self.root_ended_at: float | None = None  # time.monotonic() when the root's end arrived
        self.root_status: RunStatus = RunStatus.SUCCESS
        self.root_error: tuple[str, str] | None = None
        self.completed = completed
        self.completed_at: float | None = time.monotonic() if completed else None
        self.question = ""
        self.model = ""  # the first model seen, for a trace that started without one
        self.answer = ""
        self.tokens = 0
        self.cost = 0.0
        self.touched = time.monotonic()

    def open_spans(self) -> list[str]:
        return [span_id for span_id, state in self.spans.items() if not state.ended]


class Ingestor:
    """The ingested traces of this event loop, and the sweeper that completes and abandons them."""

    def __init__(self) -> None:
        self.traces: dict[uuid.UUID, TraceIngest] = {}
        self.prices = PriceTable.from_file(settings.AGENT_PRICES_FILE)
        self._sweeper: asyncio.Task | None = None
        self._unyielded = 0  # spans mapped since the event loop last ran something else

    async def ingest(self, spans: list[Span], owner_id: int | None) -> tuple[int, str]:
        """Record ``spans``; returns how many were rejected and why. Raises ``TraceStoreError`` when
        the history cannot be written (the client should retry the export)."""
        self._ensure_sweeper()
        by_trace: dict[str, list[Span]] = {}
        rejected, reasons = 0, []
        for span in spans:
            if not _valid_id(span.trace_id, 16) or not _valid_id(span.span_id, 8):
                rejected += 1
                reasons.append(f"span {span.name!r}: trace and span ids must be non-zero")
                continue
            by_trace.setdefault(span.trace_id, []).append(span)
        touched: list[TraceIngest] = []
        ids = {trace_hex: trace_uuid(trace_hex) for trace_hex in by_trace}
        unknown = {trace_hex: trace_id for trace_hex, trace_id in ids.items() if trace_id not in self.traces}
        if unknown:
            runners = get_runners()
            await runners.start("server")
            rows, runs = await _stored(list(unknown.values()))  # one query for the new ones, however many
            for trace_hex, trace_id in unknown.items():
                first = by_trace[trace_hex][0]
                loaded = _load(trace_id, first, rows.get(trace_id), runs, runners.id, owner_id)
                self.traces.setdefault(trace_id, loaded)
        for trace_hex, group in by_trace.items():
            trace = self._trace(ids[trace_hex], owner_id)
            if trace is None:
                rejected += len(group)
                reasons.append(f"trace {trace_hex}: it belongs to another user")
                continue
            async with trace.lock:
                await self._apply(trace, group)
            touched.append(trace)
        # Every trace's events are queued: they commit together (group commit), then the answer.
        results = await _flushed(touched)
        failures = [(t, r) for t, r in zip(touched, results, strict=True) if isinstance(r, BaseException)]
        for trace, _ in failures:
            self.traces.pop(trace.trace_id, None)  # reload from the database next time
        for trace, error in failures:
            if not isinstance(error, TraceStoreError) or not get_event_store().store_ok:
                raise error  # the history is unavailable: the exporter retries the whole export
            # The database works, but this trace's events cannot be stored (too large, say):
            # a retry would fail the same way, so its spans are rejected.
            rejected += len(by_trace[trace.otel_id])
            reasons.append(f"trace {trace.otel_id}: {error}")
        return rejected, "; ".join(reasons[:5])

    def _trace(self, trace_id: uuid.UUID, owner_id: int | None) -> TraceIngest | None:
        trace = self.traces[trace_id]
        if trace.recorder.state.trace.get("owner_id") != owner_id:
            return None
        trace.touched = time.monotonic()
        return trace

    async def _apply(self, trace: TraceIngest, spans: list[Span]) -> None:
        views: dict[int, RunView] = {}  # the root's, read once for the trace's start
        if not trace.recorder.state.stored and trace.recorder.last_seq == 0 and not trace.spans:
            await self._start(trace, spans, views)
        for span in _parents_first(spans):
            await self._span(trace, span, views)
            self._unyielded += 1
            if self._unyielded >= YIELD_EVERY:
                # Let the store send what is queued while the rest of the export is mapped: a
                # watcher sees the first spans of a large export before its last are read.
                self._unyielded = 0
                await asyncio.sleep(0)

    async def _start(self, trace: TraceIngest, spans: list[Span], views: dict[int, RunView]) -> None:
        first = min(spans, key=lambda s: (s.parent_span_id is not None, s.start or utcnow()))
        root = next((s for s in spans if s.parent_span_id is None), None)
        if root is not None:
            views[id(root)] = view(root)
        question = views[id(root)].question if root is not None else ""
        model = next((str(s.attributes[k]) for s in spans for k in MODEL_KEYS if s.attributes.get(k)), "")
        service = service_of(first)
        trace.question = question
        started = TraceStarted(
            trace_id=trace.text_id,
            trace_name=(root or first).name[:200] or f"{service}_execution",
            request=question,
            agent_name=service,
            max_steps=0,
            metadata={"model": model, "service": service, "source": source_of(first), "otel_trace_id": trace.otel_id},
        )
        await trace.recorder.emit(EventType.TRACE_STARTED, started, first.start or utcnow())

    async def _span(self, trace: TraceIngest, span: Span, views: dict[int, RunView]) -> None:
        state = trace.spans.get(span.span_id)
        if state is not None and state.ended:
            return  # its end is recorded: a retried export, or a pending copy that came late
        if state is not None and span.pending and not state.placeholder:
            state.seen = time.monotonic()
            question = span.attributes.get("tracesite.question")
            if question and not trace.question:
                trace.question = str(question)  # said once it was known: recorded with the end
            return  # the same pending copy again
        if span.parent_span_id and span.parent_span_id not in trace.spans:
            await self._placeholder(trace, span.parent_span_id, span)
        run = views.get(id(span)) or view(span)
        if span.parent_span_id is None:
            trace.root, trace.root_view, trace.root_start = span.span_id, run, span.start
            if run.question and not trace.question:
                trace.question = run.question
        elif run.run_type == RunType.THINK and not trace.question and run.inputs.get("content"):
            trace.question = str(run.inputs["content"])  # the first model call's question, until the root says
        if run.model and not trace.recorder.state.trace.get("model"):
            trace.model = run.model
        state = state or SpanState(run_text_id(trace.trace_id, span.span_id))
        state.placeholder, state.seen = False, time.monotonic()
        trace.spans[span.span_id] = state
        fields = self._fields(trace, span, run, state)
        state.fields = fields
        if span.pending:
            await trace.recorder.emit(STARTED[run.run_type], fields, span.start or utcnow())
            return
        state.ended = True
        if span.span_id != trace.root:
            state.fields = None  # kept only while a span is open (to close it if abandoned), and the root's
        failed = fields["status"] == RunStatus.ERROR and run.run_type != RunType.AGENT
        kind = EventType.RUN_ERROR if failed else COMPLETED[run.run_type]
        await trace.recorder.emit(kind, fields, span.end or utcnow())
        if run.run_type == RunType.THINK and run.answer and not run.tool_calls:
            trace.answer = run.answer
        if span.span_id == trace.root:
            trace.root_ended_at = time.monotonic()
            trace.root_status = RunStatus(fields["status"])
            if fields.get("error"):
                trace.root_error = (str(fields["error"]), str(fields.get("error_type") or ""))

    async def _placeholder(self, trace: TraceIngest, span_id: str, child: Span) -> None:
        state = SpanState(run_text_id(trace.trace_id, span_id), placeholder=True)
        trace.spans[span_id] = state
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

    def _fields(self, trace: TraceIngest, span: Span, run: RunView, state: SpanState) -> RunFields:
        status, error, error_type = _outcome(span)
        start = span.start or utcnow()
        end = None if span.pending else span.end or start
        metadata = dict(run.metadata, span_id=span.span_id)
        if span.events:
            metadata["events"] = [
                {"name": e.name, "time": format_timestamp(e.time) if e.time else None, "attributes": e.attributes}
                for e in span.events[:50]
            ]
        fields = RunFields(
            run_id=state.run_id,
            trace_id=trace.text_id,
            parent_run_id=trace.spans[span.parent_span_id].run_id if span.parent_span_id else None,
            name=run.name[:200],
            run_type=run.run_type,
            status=RunStatus.RUNNING if span.pending else status,
            start_time=format_timestamp(start),
            end_time=format_timestamp(end) if end else None,
            duration_ms=max(0, int((end - start).total_seconds() * 1000)) if end else None,
            inputs=run.inputs,
            outputs=run.outputs,
            error=error,
            error_type=error_type,
            metadata=metadata,
        )
        if run.run_type == RunType.THINK and not span.pending:
            usage = Usage(run.prompt_tokens, run.completion_tokens, run.prompt_tokens + run.completion_tokens)
            cost = self.prices.cost(run.model, usage) if run.model else 0.0
            fields["token_usage"] = usage.as_dict()
            fields["model"] = run.model
            fields["cost"] = cost
            trace.tokens += usage.total_tokens
            trace.cost += cost
        return fields

    # The sweeper: completes traces whose root has ended, closes what was abandoned.

    def _ensure_sweeper(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_loop(), name="otlp-sweeper")

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, settings.TRACE_OTLP_COMPLETE_AFTER_SECONDS / 2 or 0.1))
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the sweeper outlives a database blip
                logger.warning("otlp sweep failed: %r", exc)

    async def sweep(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        grace = settings.TRACE_OTLP_COMPLETE_AFTER_SECONDS
        touched: list[TraceIngest] = []
        for trace in list(self.traces.values()):
            if trace.completed:
                if now - (trace.completed_at or now) > EVICT_AFTER and not trace.lock.locked():
                    self.traces.pop(trace.trace_id, None)
                continue
            async with trace.lock:
                if trace.recorder.failure is not None:
                    await trace.recorder.reset_failure()  # try again what could not be stored
                await self._abandon(trace, now)
                ended = trace.root_ended_at
                if ended is not None and not trace.open_spans() and now - ended >= grace:
                    await self._complete(trace)
                    touched.append(trace)
        # The completions of every trace commit together.
        results = await _flushed(touched)
        for trace, result in zip(touched, results, strict=True):
            if isinstance(result, TraceStoreError):
                logger.warning("trace=%s could not be completed yet: %s", trace.trace_id, result)
                trace.completed, trace.completed_at = False, None

    async def _abandon(self, trace: TraceIngest, now: float) -> None:
        limit = settings.TRACE_OTLP_ABANDON_SECONDS
        stale = [s for s in trace.open_spans() if now - trace.spans[s].seen >= limit]
        if not stale:
            return
        for span_id in stale:
            state = trace.spans[span_id]
            state.ended = True
            if state.fields is None:
                continue
            fields = state.fields.copy()
            fields["status"] = RunStatus.ERROR
            fields["end_time"] = format_timestamp(utcnow())
            fields["error"] = f"abandoned: the span did not end within {limit:g} s"
            fields["error_type"] = "Abandoned"
            failed = fields["run_type"] != RunType.AGENT
            await trace.recorder.emit(EventType.RUN_ERROR if failed else EventType.RUN_COMPLETED, fields, utcnow())
        if trace.root_ended_at is None:
            # The root never ended (or never came): the trace ends with what it has.
            trace.root_ended_at = 0.0
            trace.root_status = RunStatus.ERROR
            trace.root_error = (f"abandoned: no end of the trace's root span within {limit:g} s", "Abandoned")

    async def _complete(self, trace: TraceIngest) -> None:
        root = trace.root_view
        status = TraceOutcome.ERROR if trace.root_status == RunStatus.ERROR else TraceOutcome.SUCCESS
        answer = (root.answer if root else "") or trace.answer
        state = trace.recorder.state.trace
        started = state.get("started_at")
        data = TraceCompleted(
            trace_id=trace.text_id,
            duration_ms=int((utcnow() - started).total_seconds() * 1000) if started is not None else None,
            total_runs=len([s for s in trace.spans.values() if not s.placeholder]),
            status=status,
            total_cost=round(trace.cost, 8),
            total_tokens=trace.tokens,
            final_response=answer,
            stopped_by=StopReason.ANSWER if status == TraceOutcome.SUCCESS else StopReason.ERROR,
        )
        root_fields = trace.spans[trace.root].fields if trace.root in trace.spans else None
        if root_fields and root_fields.get("duration_ms") is not None:
            data["duration_ms"] = root_fields["duration_ms"]
        if trace.root_error:
            data["error"], data["error_type"] = trace.root_error
        if trace.question and not state.get("request"):
            data["request"] = trace.question
        if trace.model and not state.get("model"):
            data["model"] = trace.model
        await trace.recorder.submit(EventType.TRACE_COMPLETED, data, utcnow(), wait_at_end=False)
        trace.completed, trace.completed_at = True, time.monotonic()

    async def aclose(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)


async def _flushed(traces: list[TraceIngest]) -> list[BaseException | None]:
    """Wait until every event of ``traces`` is stored: what each one's flush raised, or None.

    The events are all queued already, so waiting for one trace after another takes no longer
    than waiting for all at once, without a task for each (``asyncio.gather``: 50 an export)."""
    results: list[BaseException | None] = []
    for trace in traces:
        try:
            await trace.recorder.flush()
        except Exception as exc:  # noqa: BLE001 - reported per trace, as gather(return_exceptions) did
            results.append(exc)
        else:
            results.append(None)
    return results


def _valid_id(value: str, size: int) -> bool:
    return len(value) == 2 * size and value != "0" * (2 * size)


def _outcome(span: Span) -> tuple[RunStatus, str | None, str | None]:
    exceptions = [e for e in span.events if e.name == "exception"]
    if span.status_code == 2 or exceptions:
        last = exceptions[-1].attributes if exceptions else {}
        error = str(last.get("exception.message") or span.status_message or "error")
        return RunStatus.ERROR, error, str(last.get("exception.type") or "SpanError")[:100]
    return RunStatus.SUCCESS, None, None


def _parents_first(spans: list[Span]) -> list[Span]:
    """Spans of one trace, each after its parent when both are in the list, then by start."""
    ids = {s.span_id for s in spans}
    by_parent: dict[str | None, list[Span]] = {}
    for span in sorted(spans, key=lambda s: (s.start or utcnow(), not s.pending)):
        parent = span.parent_span_id if span.parent_span_id in ids and span.parent_span_id != span.span_id else None
        by_parent.setdefault(parent, []).append(span)
    ordered: list[Span] = []
    stack = list(reversed(by_parent.get(None, [])))
    seen: set[int] = set()
    while stack:
        span = stack.pop()
        if id(span) in seen:
            continue
        seen.add(id(span))
        ordered.append(span)
        stack.extend(reversed(by_parent.get(span.span_id, [])))
    ordered.extend(s for s in spans if id(s) not in seen)  # cycles: as they came
    return ordered


@live_read
def _stored(
    trace_ids: list[uuid.UUID],
) -> tuple[dict[uuid.UUID, dict[str, Any]], dict[uuid.UUID, list[dict[str, Any]]]]:
    """The rows of those of ``trace_ids`` that exist (seen before, here or by another process),
    and their runs."""
    rows = {row["id"]: dict(row) for row in Trace.objects.filter(pk__in=trace_ids).values()}
    runs: dict[uuid.UUID, list[dict[str, Any]]] = {}
    if rows:
        for run in Run.objects.filter(trace_id__in=list(rows)).values():
            runs.setdefault(run["trace_id"], []).append(dict(run))
    return rows, runs


def _load(
    trace_id: uuid.UUID,
    first: Span,
    row: dict[str, Any] | None,
    runs: dict[uuid.UUID, list[dict[str, Any]]],
    runner: str,
    owner_id: int | None,
) -> TraceIngest:
    """A new trace, or one as stored: its sequence, its runs, which spans have ended."""
    recorder = TraceRecorder(
        trace_id=trace_id,
        session=SessionKey(row["session_id"] if row else session_of(first)),
        source=row["source"] if row else source_of(first),
        owner_id=row["owner_id"] if row else owner_id,
        store=get_event_store(),
        runner=runner,
    )
    if row is None:
        return TraceIngest(trace_id, first.trace_id, recorder, completed=False)
    recorder.state.trace = row
    recorder.state.runs = {run["id"]: run for run in runs.get(trace_id, [])}
    recorder.state.last_seq = row["last_seq"]
    recorder.state.stored = True
    trace = TraceIngest(trace_id, first.trace_id, recorder, completed=row["status"] != Trace.Status.RUNNING)
    trace.question = row["request"]
    for run in recorder.state.runs.values():
        span_id = (run.get("metadata") or {}).get("span_id")
        if not span_id:
            continue
        state = SpanState(str(run["id"]), ended=run["status"] != Run.Status.RUNNING)
        state.placeholder = bool((run.get("metadata") or {}).get("placeholder"))
        trace.spans[span_id] = state
        if run["parent_id"] is None and not state.placeholder:
            trace.root = span_id
            if state.ended:
                trace.root_ended_at = time.monotonic()
    return trace


_ingestors: PerLoop[Ingestor] = PerLoop(Ingestor)


def get_ingestor() -> Ingestor:
    return _ingestors.get()
