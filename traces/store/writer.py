"""The commit path: a batch of numbered events projected onto its traces' rows and written, with
the rows, in one transaction.

``Writer.store(batch)`` is the one place events are written. It runs on the store's thread, in
the writer process (``traces.store.writer_process``), and, synchronously, in ``importtraces``.
It keeps the rows of the traces it wrote last, so the next batch of a running trace projects from
memory; a trace it does not know, or knows only up to an older seq (another process wrote it
since, or this one before a restart), is read from the database first.

A trace's failure is that trace's: its events are refused and the batch's other traces are
stored. How a trace fails says what its caller should do:

- ``conflict``: its events' seq are taken, or the trace is further along than they say: another
  process wrote it meanwhile. Reading it again and numbering anew will do.
- ``refused``: the trace's own data cannot be stored (an integrity or data error, a value too
  large, an event that does not follow the stored ones). Trying again will not help.
- ``unavailable``: the database or the connection to it failed and nothing could be written. The
  batch is tried again after ``retry_delays``, then given up: the history is unavailable.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import logging
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from enum import StrEnum
from typing import Any

from django.db import DatabaseError, IntegrityError, InterfaceError, InternalError, OperationalError, connection
from django.db import transaction as db_transaction

from agents.events import EventData, EventType, RunStatus
from traces import protocol
from traces.models import Run, Trace
from traces.store import projection, rollups, statements
from traces.store.projection import Row, TraceRows, new_trace, project

logger = logging.getLogger(__name__)

RETRY_DELAYS = (0.1, 0.3, 1.0, 2.0, 4.0)
# Running traces whose rows are kept between batches (a finished trace is dropped at once; of a
# finished run only what the projection needs is kept); a trace beyond them is read again.
CACHED_TRACES = 10_000
# Errors of the database server or of the connection, not of what was written.
AVAILABILITY_ERRORS = (OperationalError, InterfaceError, InternalError)


class FailureKind(StrEnum):
    CONFLICT = "conflict"
    REFUSED = "refused"
    UNAVAILABLE = "unavailable"


@dataclasses.dataclass(frozen=True, slots=True)
class Failure:
    kind: FailureKind
    reason: str


@dataclasses.dataclass(slots=True)
class Numbered:
    """An event as it is stored and sent: numbered, in its envelope, serialised once."""

    trace_id: uuid.UUID
    seq: int
    event_type: EventType
    timestamp: dt.datetime
    message_id: str
    text: str
    data: EventData | None = None  # what the envelope holds; read back from ``text`` when absent

    def payload(self) -> EventData:
        return self.data if self.data is not None else protocol.loads(self.text)["data"]

    def as_tuple(self) -> tuple:
        """Its fields without ``data``: what crosses the pipe to the writer process."""
        return (self.trace_id, self.seq, str(self.event_type), self.timestamp, self.message_id, self.text)


@dataclasses.dataclass
class Batch:
    """Events of one or more traces, each trace's in seq order."""

    events: list[Numbered]
    # The first rows of traces whose seq 1 is in the batch: what their recorders know of them.
    origins: dict[uuid.UUID, Row] = dataclasses.field(default_factory=dict)
    # Sent again after a writer process stopped without answering: some may be stored already.
    recovering: bool = False


@dataclasses.dataclass
class Outcome:
    """Which traces of a batch were stored, and why the others were not."""

    stored: set[uuid.UUID] = dataclasses.field(default_factory=set)
    failed: dict[uuid.UUID, Failure] = dataclasses.field(default_factory=dict)


class _Refusal(Exception):
    def __init__(self, kind: FailureKind, reason: str) -> None:
        super().__init__(reason)
        self.failure = Failure(kind, reason)


@dataclasses.dataclass
class _Plan:
    """One trace's part of a batch, projected and ready to write."""

    base: TraceRows  # its rows before the batch
    trace: Row  # its row after
    runs: dict[uuid.UUID, Row]  # the runs the batch changed, as they are after
    events: list[tuple]  # EVENT_ROWS values
    whole: bool  # the whole trace row is written (new, started or finished), not its progress


class Writer:
    """Stores batches (see the module docstring). Not thread-safe: one thread or process uses it."""

    def __init__(self, retry_delays: Iterable[float] = RETRY_DELAYS, cached: int = CACHED_TRACES) -> None:
        self.retry_delays = tuple(retry_delays)
        self.cached = cached
        self.rows: collections.OrderedDict[uuid.UUID, TraceRows] = collections.OrderedDict()

    def store(self, batch: Batch) -> Outcome:
        outcome = Outcome()
        parts: dict[uuid.UUID, list[Numbered]] = {}
        for event in batch.events:
            parts.setdefault(event.trace_id, []).append(event)
        delays = iter(self.retry_delays)
        while parts:
            unavailable = self._attempt(parts, batch, outcome)
            if unavailable is None:
                break
            delay = next(delays, None)
            parts = {trace_id: parts[trace_id] for trace_id in unavailable[0]}
            if delay is None:
                failure = Failure(FailureKind.UNAVAILABLE, f"trace history unavailable: {unavailable[1]}")
                outcome.failed.update((trace_id, failure) for trace_id in parts)
                break
            logger.debug("trace batch write failed, retrying in %ss: %s", delay, unavailable[1])
            time.sleep(delay)
        for trace_id in outcome.failed:
            self.rows.pop(trace_id, None)  # read from the database next time
        return outcome

    def forget(self, trace_id: uuid.UUID) -> None:
        self.rows.pop(trace_id, None)

    # ------------------------------------------------------------------ one attempt

    def _attempt(
        self, parts: dict[uuid.UUID, list[Numbered]], batch: Batch, outcome: Outcome
    ) -> tuple[list[uuid.UUID], Exception] | None:
        """Store what it can of ``parts`` into ``outcome``; returns the traces that could not be
        written because the database is unavailable, and why (None when there are none)."""
        try:
            loaded = self._load(
                [trace_id for trace_id, events in parts.items() if self._unknown(trace_id, events, batch)]
            )
        except AVAILABILITY_ERRORS as exc:
            connection.close()  # reconnect on the next attempt
            return list(parts), exc
        plans: dict[uuid.UUID, _Plan] = {}
        for trace_id, events in parts.items():
            try:
                plan = self._plan(trace_id, events, batch, loaded)
            except _Refusal as refusal:
                outcome.failed[trace_id] = refusal.failure
                continue
            except Exception as exc:
                logger.exception("trace=%s: its events could not be projected", trace_id)
                outcome.failed[trace_id] = Failure(FailureKind.REFUSED, f"{type(exc).__name__}: {exc}")
                continue
            if plan is None:
                outcome.stored.add(trace_id)  # stored already, by a writer process that stopped before answering
            else:
                plans[trace_id] = plan
        if not plans:
            return None
        try:
            with db_transaction.atomic():
                _write(plans.values())
        except Exception as exc:  # noqa: BLE001 - the batch failed: which trace, and why, is found below
            logger.debug("trace batch write failed: %r", exc)
            _after_error(exc)
        else:
            self._committed(plans, outcome)
            return None
        return self._one_by_one(plans, outcome)

    def _one_by_one(self, plans: dict[uuid.UUID, _Plan], outcome: Outcome) -> tuple[list[uuid.UUID], Exception] | None:
        """Each trace in a transaction of its own, so that one trace's bad data fails that trace alone."""
        unavailable: list[uuid.UUID] = []
        last: Exception | None = None
        stored_any = False
        for trace_id, plan in plans.items():
            try:
                with db_transaction.atomic():
                    _write([plan])
            except AVAILABILITY_ERRORS as exc:
                _after_error(exc)
                unavailable.append(trace_id)
                last = exc
            except Exception as exc:  # noqa: BLE001 - this trace's data: refused, or taken by another writer
                _after_error(exc)
                outcome.failed[trace_id] = self._why(trace_id, plan, exc)
            else:
                self._committed({trace_id: plan}, outcome)
                stored_any = True
        if unavailable and stored_any:
            # The database works: what failed is about those traces themselves.
            for trace_id in unavailable:
                outcome.failed[trace_id] = Failure(FailureKind.REFUSED, f"{type(last).__name__}: {last}")
            return None
        return (unavailable, last) if unavailable and last is not None else None

    def _why(self, trace_id: uuid.UUID, plan: _Plan, exc: Exception) -> Failure:
        reason = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, IntegrityError):
            try:
                now = Trace.objects.filter(pk=trace_id).values_list("last_seq", flat=True).first()
            except DatabaseError:
                now = None
            if now is not None and (not plan.base.stored or now != plan.base.last_seq):
                return Failure(
                    FailureKind.CONFLICT,
                    f"another process wrote this trace meanwhile (it is at seq {now}, not {plan.base.last_seq})",
                )
        return Failure(FailureKind.REFUSED, reason)

    def _committed(self, plans: dict[uuid.UUID, _Plan], outcome: Outcome) -> None:
        for trace_id, plan in plans.items():
            outcome.stored.add(trace_id)
            if plan.trace.get("status") != Trace.Status.RUNNING:
                self.rows.pop(trace_id, None)  # finished: nothing more is expected of it
                continue
            runs = plan.base.runs
            for run_id, run in plan.runs.items():
                runs[run_id] = run if run["status"] == RunStatus.RUNNING else projection.slim(run)
            self.rows[trace_id] = TraceRows(plan.trace, runs, stored=True)
            self.rows.move_to_end(trace_id)
        while len(self.rows) > self.cached:
            self.rows.popitem(last=False)

    # ------------------------------------------------------------------ the rows a batch starts from

    def _unknown(self, trace_id: uuid.UUID, events: list[Numbered], batch: Batch) -> bool:
        """Its rows must be read from the database: not known here as of the batch's first event."""
        if batch.recovering:
            return True
        known = self.rows.get(trace_id)
        first = events[0].seq
        if known is None:
            return first != 1  # seq 1 starts a trace
        return known.last_seq != first - 1

    def _load(self, trace_ids: list[uuid.UUID]) -> dict[uuid.UUID, TraceRows]:
        if not trace_ids:
            return {}
        found: dict[uuid.UUID, TraceRows] = {}
        for row in Trace.objects.filter(pk__in=trace_ids).values():
            found[row["id"]] = TraceRows(dict(row), {}, stored=True)
        if found:
            runs = Run.objects.filter(trace_id__in=list(found))
            for open_run in runs.filter(status=RunStatus.RUNNING).values():
                found[open_run["trace_id"]].runs[open_run["id"]] = dict(open_run)
            for values in runs.exclude(status=RunStatus.RUNNING).values_list(*projection.SLIM_FIELDS):
                finished = projection.slim(dict(zip(projection.SLIM_FIELDS, values, strict=True)))
                found[finished["trace_id"]].runs[finished["id"]] = finished
        for trace_id in trace_ids:
            self.rows.pop(trace_id, None)
        return found

    def _plan(
        self, trace_id: uuid.UUID, events: list[Numbered], batch: Batch, loaded: dict[uuid.UUID, TraceRows]
    ) -> _Plan | None:
        base = loaded.get(trace_id) or self.rows.get(trace_id)
        if base is None:
            origin = batch.origins.get(trace_id) or {}
            base = TraceRows(new_trace({"id": trace_id, "started_at": events[0].timestamp, **origin}), {})
        if batch.recovering:
            events = [event for event in events if event.seq > base.last_seq]
            if not events:
                return None
        first = events[0].seq
        for i, event in enumerate(events):
            if event.seq != first + i:
                if event.seq <= events[i - 1].seq:  # a seq twice: two recorders of one trace
                    raise _Refusal(FailureKind.CONFLICT, "two writers numbered this trace's events at the same moment")
                raise _Refusal(FailureKind.REFUSED, f"its seq {first + i} is missing")
        if first != base.last_seq + 1:
            if first <= base.last_seq:
                raise _Refusal(
                    FailureKind.CONFLICT,
                    f"another process wrote this trace meanwhile (it is at seq {base.last_seq}, not {first - 1})",
                )
            raise _Refusal(
                FailureKind.REFUSED,
                f"an earlier event of this trace was not stored (stored up to seq {base.last_seq}, not {first - 1})",
            )
        trace = base.trace
        changed: dict[uuid.UUID, Row] = {}
        runs = _Overlay(changed, base.runs)
        rows: list[tuple] = []
        whole = not base.stored
        for event in events:
            projected = project(trace, runs, event.event_type, event.payload(), event.timestamp, event.seq)
            trace = projected.trace
            changed.update(projected.runs)
            whole = whole or projected.whole
            rows.append(
                (
                    trace_id,
                    event.seq,
                    str(event.event_type),
                    event.timestamp,
                    event.message_id,
                    projected.run_id,
                    event.text,
                )
            )
        return _Plan(base, trace, changed, rows, whole)


class _Overlay(Mapping[uuid.UUID, Row]):
    """The runs a batch changed over the runs as stored: what the projection reads them as (a
    ``ChainMap`` of two, without its generic lookups, which cost a microsecond a run event)."""

    __slots__ = ("base", "top")

    def __init__(self, top: dict[uuid.UUID, Row], base: dict[uuid.UUID, Row]) -> None:
        self.top, self.base = top, base

    def get(self, key: uuid.UUID, default: Any = None) -> Any:
        found = self.top.get(key)
        return found if found is not None else self.base.get(key, default)

    def __getitem__(self, key: uuid.UUID) -> Row:
        found = self.get(key)
        if found is None:
            raise KeyError(key)
        return found

    def __iter__(self) -> Iterator[uuid.UUID]:
        yield from self.top
        yield from (key for key in self.base if key not in self.top)

    def __len__(self) -> int:
        return len(self.top) + sum(1 for key in self.base if key not in self.top)


def _write(plans: Iterable[_Plan]) -> None:
    plans = list(plans)
    whole: list[Row] = []
    moving: list[Row] = []
    runs: list[Row] = []
    events: list[tuple] = []
    for plan in plans:
        (whole if plan.whole else moving).append(plan.trace)
        runs.extend(plan.runs.values())
        events.extend(plan.events)
    statements.TRACE_ROWS.write(whole)
    statements.TRACE_PROGRESS.write(moving)
    statements.RUN_ROWS.write(runs)
    statements.EVENT_ROWS.write(events)
    rollups.mark_stale(_started(plans))


def _started(plans: Iterable[_Plan]) -> Iterable[dt.datetime | None]:
    """The ``started_at`` of each trace written, before and after: a trace changed in an hour
    the dashboard has summed makes that hour stale."""
    for plan in plans:
        yield plan.trace.get("started_at")
        if plan.base.stored:
            yield plan.base.trace.get("started_at")


def _after_error(exc: BaseException) -> None:
    if isinstance(exc, AVAILABILITY_ERRORS):
        connection.close()  # reconnect on the next attempt


def store_now(events: list[Numbered], origins: dict[uuid.UUID, Any] | None = None) -> Outcome:
    """Store events of traces nobody else is writing, in this thread, at once: for commands and
    tests that load or build whole traces (``importtraces``)."""
    return Writer(retry_delays=()).store(Batch(events, origins or {}))
