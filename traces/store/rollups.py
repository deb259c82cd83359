"""The dashboard's sums by hour (``TraceHour``, ``ToolHour``; whole days in ``LatencyDay`` and
``ToolDay``), kept exact without slowing the writes.

The traces of a UTC hour (by ``started_at``) are summed once the hour has ended and a grace period
has passed (``SEAL_GRACE``, for late OTLP spans): the hours before ``RollupSeal.sealed_until`` are
sealed. The dashboard (``traces.pages.summary``) adds up the sealed hours of its range and sums the
rest (the hours since the seal, and the ``StaleHour`` ones) from the traces themselves, with
``summed`` — the one function that computes an hour's sums, for sealing and for the dashboard.

A change to a trace that a seal may already hold marks its hour stale, in the transaction of the
change: the store's writes (a run completing late, late spans, an import), pruning, deletes in
the admin, and a deleted user (whose traces become nobody's). Which hours may be sealed is known
without reading the seal: the sweep seals only hours that ended ``SEAL_GRACE`` ago, and a write
marks every hour that ended half of that ago (the other half absorbs clocks that differ between
processes). A live trace's writes, in the current hour, mark nothing and cost one comparison.

The sweep (``RollupSweep``, run by a server's runtime every ``SWEEP_SECONDS``) sums the stale
hours again, then seals the hours that have ended, a day per transaction. Each stale hour is
taken off the list and summed again in one transaction: a write that commits meanwhile waits on
its mark and marks it again, so no change is lost between the two.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import heapq
import logging
import math
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.db.models.signals import pre_delete
from django.dispatch import receiver
from django.utils import timezone

from agents.tools import QueryTool
from traces.models import LatencyDay, RollupSeal, Run, StaleHour, ToolDay, ToolHour, Trace, TraceHour
from traces.store.pool import pooled

logger = logging.getLogger(__name__)

HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
SEAL_GRACE = dt.timedelta(minutes=15)
SWEEP_SECONDS = 60.0
SEAL_CHUNK = dt.timedelta(days=1)  # hours sealed in one transaction
SEAL_CHUNKS_PER_SWEEP = 24  # a fresh install of a long history is sealed over several sweeps
STALE_PER_SWEEP = 200
RUNS_OF = 500  # traces whose runs are read in one query
SLOWEST = 10  # run_sql calls kept per hour and owner: the dashboard shows the 10 slowest

# Durations in buckets whose bounds grow by LATENCY_RATIO: bucket 0 holds 0 ms, bucket b >= 1 holds
# [RATIO**(b-1), RATIO**b) ms. A percentile read as the bucket's geometric middle is within
# sqrt(1.05) - 1 = 2.5% of the true value; 1 ms to a day takes 375 buckets.
LATENCY_RATIO = 1.05
_LOG_RATIO = math.log(LATENCY_RATIO)

Visible = Callable[[str], Q]  # traces.access.visible_filter for one user: prefix -> filter


def everyone(prefix: str = "") -> Q:
    return Q()


def hour_of(moment: dt.datetime) -> dt.datetime:
    """The start of the UTC hour ``moment`` is in."""
    return moment.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


def day_of(moment: dt.datetime) -> dt.datetime:
    """The start of the UTC day ``moment`` is in."""
    return hour_of(moment).replace(hour=0)


def latency_bucket(ms: int) -> int:
    return 0 if ms < 1 else math.floor(math.log(ms) / _LOG_RATIO) + 1


def latency_value(bucket: int) -> int:
    """The duration a bucket stands for: the geometric middle of its bounds."""
    return 0 if bucket == 0 else round(LATENCY_RATIO ** (bucket - 0.5))


@dataclasses.dataclass
class TraceSums:
    """The traces of one hour, owner and model: a ``TraceHour`` row."""

    running: int = 0
    success: int = 0
    error: int = 0
    cancelled: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost: Decimal = Decimal(0)
    duration_ms: int = 0
    timed: int = 0
    latency: Counter[int] = dataclasses.field(default_factory=Counter)

    STATUSES = (Trace.Status.RUNNING, Trace.Status.SUCCESS, Trace.Status.ERROR, Trace.Status.CANCELLED)

    def by_status(self) -> dict[str, int]:
        return {status: getattr(self, status) for status in self.STATUSES}


@dataclasses.dataclass
class ToolSums:
    """The tool calls of one hour, owner and tool: a ``ToolHour`` row."""

    calls: int = 0
    errors: int = 0
    duration_ms: int = 0
    timed: int = 0
    slowest: list[tuple[int, str]] = dataclasses.field(default_factory=list)  # [(ms, run id hex)], slowest first

    def keep_slow(self, ms: int, run_id: str) -> None:
        heapq.heappush(self.slowest, (ms, run_id))
        if len(self.slowest) > SLOWEST:
            heapq.heappop(self.slowest)


TraceKey = tuple[dt.datetime, int | None, str]  # hour, owner, model
ToolKey = tuple[dt.datetime, int | None, str]  # hour, owner, tool


@dataclasses.dataclass
class Hours:
    traces: dict[TraceKey, TraceSums]
    tools: dict[ToolKey, ToolSums]


def in_ranges(ranges: Iterable[tuple[dt.datetime, dt.datetime | None]], field: str = "started_at") -> Q:
    """``field`` in any of the ``[start, end)`` ranges (``end`` None: open)."""
    where = Q(pk__in=[])
    for start, end in ranges:
        bound = Q(**{f"{field}__gte": start})
        if end is not None:
            bound &= Q(**{f"{field}__lt": end})
        where |= bound
    return where


def summed(ranges: list[tuple[dt.datetime, dt.datetime | None]], visible: Visible = everyone) -> Hours:
    """The sums by hour of the traces ``visible`` sees that started in ``ranges``, from their rows."""
    if not ranges:
        return Hours({}, {})
    traces: dict[TraceKey, TraceSums] = {}
    rows = (
        Trace.objects.filter(in_ranges(ranges), visible(""))
        .order_by()
        .values_list(
            "id",
            "started_at",
            "owner_id",
            "model",
            "status",
            "prompt_tokens",
            "completion_tokens",
            "total_tokens",
            "total_cost",
            "duration_ms",
        )
    )
    hour_and_owner: dict[uuid.UUID, tuple[dt.datetime, int | None]] = {}
    for trace_id, started_at, owner, model, status, prompt, completion, total, cost, ms in rows.iterator(
        chunk_size=5000
    ):
        hour = hour_of(started_at)
        hour_and_owner[trace_id] = (hour, owner)
        sums = traces.get((hour, owner, model))
        if sums is None:
            sums = traces[(hour, owner, model)] = TraceSums()
        setattr(sums, status, getattr(sums, status) + 1)
        sums.prompt_tokens += prompt
        sums.completion_tokens += completion
        sums.total_tokens += total
        sums.cost += cost
        if ms is not None:
            sums.duration_ms += ms
            sums.timed += 1
            sums.latency[latency_bucket(ms)] += 1
    tools: dict[ToolKey, ToolSums] = {}
    ids = list(hour_and_owner)
    for start in range(0, len(ids), RUNS_OF):
        # By their traces' ids, through run_trace_start_idx; a join would walk every tool call
        # (SQLite prefers run_type_name_status_idx), so the tool runs are picked out here.
        calls = (
            Run.objects.filter(trace_id__in=ids[start : start + RUNS_OF])
            .order_by()
            .values_list("trace_id", "run_type", "name", "status", "duration_ms", "id")
        )
        for trace_id, run_type, name, status, ms, run_id in calls:
            if run_type != Run.Type.TOOL:
                continue
            key = (*hour_and_owner[trace_id], name)
            tool = tools.get(key)
            if tool is None:
                tool = tools[key] = ToolSums()
            tool.calls += 1
            tool.errors += status == Run.Status.ERROR
            if ms is not None:
                tool.duration_ms += ms
                tool.timed += 1
                if name == QueryTool.name:
                    tool.keep_slow(ms, run_id.hex)
    return Hours(traces, tools)


# ---------------------------------------------------------------------- writing


def mark_stale(started: Iterable[dt.datetime | None], now: dt.datetime | None = None) -> None:
    """Mark the hours of these traces' ``started_at`` stale if a seal may hold them: call it in the
    transaction that changes (or deletes) the traces."""
    line = (now or timezone.now()) - SEAL_GRACE / 2
    hours = {hour for moment in started if moment is not None and (hour := hour_of(moment)) + HOUR <= line}
    if hours:
        StaleHour.objects.bulk_create([StaleHour(hour=hour) for hour in hours], ignore_conflicts=True)


@receiver(pre_delete, sender=settings.AUTH_USER_MODEL, dispatch_uid="traces.rollups.deleted_owner")
def mark_owner_stale(sender: Any, instance: Any, **kwargs: Any) -> None:
    """Mark stale the sealed hours of a user's traces as the user is deleted, in the transaction
    that deletes them: their traces become nobody's (``Trace.owner`` is SET_NULL). Connected as
    this module is imported, which ``traces.admin`` does wherever Django's admin is set up."""
    hours = TraceHour.objects.filter(owner_id=instance.pk).values_list("hour", flat=True).distinct()
    StaleHour.objects.bulk_create([StaleHour(hour=hour) for hour in hours], ignore_conflicts=True)


def store(start: dt.datetime, end: dt.datetime, hours: Hours | None = None) -> None:
    """Replace the rollups of the hours from ``start`` to ``end`` with ``hours``, by default the
    sums of their traces now."""
    if hours is None:
        hours = summed([(start, end)])
    TraceHour.objects.filter(hour__gte=start, hour__lt=end).delete()
    ToolHour.objects.filter(hour__gte=start, hour__lt=end).delete()
    TraceHour.objects.bulk_create(
        [
            TraceHour(
                hour=hour,
                owner_id=owner,
                model=model,
                **{field: value for field, value in dataclasses.asdict(sums).items() if field != "latency"},
                latency={str(bucket): n for bucket, n in sorted(sums.latency.items())},
            )
            for (hour, owner, model), sums in hours.traces.items()
        ],
        batch_size=500,
    )
    ToolHour.objects.bulk_create(
        [
            ToolHour(
                hour=hour,
                owner_id=owner,
                name=name,
                calls=sums.calls,
                errors=sums.errors,
                duration_ms=sums.duration_ms,
                timed=sums.timed,
                slowest=[[ms, run_id] for ms, run_id in sorted(sums.slowest, reverse=True)],
                slowest_ms=max(sums.slowest)[0] if sums.slowest else None,
            )
            for (hour, owner, name), sums in hours.tools.items()
        ],
        batch_size=500,
    )


def store_days(days: Iterable[dt.datetime]) -> None:
    """Replace the ``LatencyDay`` and ``ToolDay`` rows of these sealed UTC days with the sums of
    their hours' rows."""
    for day in sorted(set(days)):
        latency: dict[int | None, Counter[str]] = {}
        for owner, histogram in TraceHour.objects.filter(hour__gte=day, hour__lt=day + DAY).values_list(
            "owner_id", "latency"
        ):
            latency.setdefault(owner, Counter()).update(histogram)
        tools: dict[tuple[int | None, str], ToolSums] = {}
        for row in ToolHour.objects.filter(hour__gte=day, hour__lt=day + DAY):
            tool = tools.setdefault((row.owner_id, row.name), ToolSums())
            tool.calls += row.calls
            tool.errors += row.errors
            tool.duration_ms += row.duration_ms
            tool.timed += row.timed
            tool.slowest = sorted([*tool.slowest, *map(tuple, row.slowest)], reverse=True)[:SLOWEST]
        LatencyDay.objects.filter(day=day).delete()
        ToolDay.objects.filter(day=day).delete()
        LatencyDay.objects.bulk_create(
            [
                LatencyDay(day=day, owner_id=owner, latency=dict(sorted(histogram.items(), key=lambda b: int(b[0]))))
                for owner, histogram in latency.items()
            ]
        )
        ToolDay.objects.bulk_create(
            [
                ToolDay(
                    day=day,
                    owner_id=owner,
                    name=name,
                    calls=tool.calls,
                    errors=tool.errors,
                    duration_ms=tool.duration_ms,
                    timed=tool.timed,
                    slowest=[list(call) for call in tool.slowest],
                    slowest_ms=tool.slowest[0][0] if tool.slowest else None,
                )
                for (owner, name), tool in tools.items()
            ]
        )


def days_ended(start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    """The UTC days whose last hour is from ``start`` to ``end``."""
    return [day for day in _days(start - DAY + HOUR, end) if start < day + DAY <= end]


def _days(start: dt.datetime, end: dt.datetime) -> Iterator[dt.datetime]:
    day = day_of(start)
    while day < end:
        yield day
        day += DAY


def refresh_stale(limit: int = STALE_PER_SWEEP) -> int:
    """Sum the stale hours again (at most ``limit``); returns how many. An hour at a time, each in
    a transaction that reads it: one hour's traces hold the database's write lock briefly."""
    done = 0
    for mark in StaleHour.objects.order_by("hour")[:limit]:
        with transaction.atomic():
            # Deleted first: a write of this hour that commits from now on waits for this
            # transaction and marks the hour again; one that committed before is read below.
            if not StaleHour.objects.filter(pk=mark.pk).delete()[0]:
                continue  # another sweep took it
            # Read here, after the mark: a sealing that holds this hour has committed by now.
            seal = RollupSeal.objects.select_for_update().values_list("sealed_until", flat=True).first()
            if seal is not None and mark.hour < seal:  # later hours are read from the traces anyway
                store(mark.hour, mark.hour + HOUR)
                if day_of(mark.hour) + DAY <= seal:
                    store_days([day_of(mark.hour)])
        done += 1
    return done


def seal(
    now: dt.datetime | None = None, chunks: int | None = None, progress: Callable[[dt.datetime], Any] | None = None
) -> int:
    """Seal the hours that ended ``SEAL_GRACE`` before ``now``, ``SEAL_CHUNK`` at a time (at most
    ``chunks`` of them); returns how many hours it sealed.

    A chunk's traces are summed before its transaction, so that a day of a long history does not
    hold the database's write lock (on SQLite, the live store's) while it is read: a write to
    those hours meanwhile marks its hour stale, as they ended ``SEAL_GRACE`` ago."""
    target = hour_of((now or timezone.now()) - SEAL_GRACE)
    sealed = 0
    while chunks is None or chunks > 0:
        state, _ = RollupSeal.objects.get_or_create(pk=1)
        start = state.sealed_until
        if start is None:
            first = Trace.objects.order_by("started_at").values_list("started_at", flat=True).first()
            start = hour_of(first) if first is not None else target
        end = max(start, min(start + SEAL_CHUNK, target))
        hours = summed([(start, end)]) if end > start else None
        with transaction.atomic():
            if RollupSeal.objects.select_for_update().get(pk=1).sealed_until != state.sealed_until:
                continue  # another process sealed them meanwhile
            if hours is not None:
                store(start, end, hours)
                store_days(days_ended(start, end))
            RollupSeal.objects.filter(pk=1).update(sealed_until=end)
        if end <= start:
            break
        sealed += (end - start) // HOUR
        if progress is not None:
            progress(end)
        if chunks is not None:
            chunks -= 1
    return sealed


def rebuild(
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    progress: Callable[[dt.datetime], Any] | None = None,
) -> int:
    """Sum again the sealed hours from ``since`` to ``until`` (both hours; None: from the first, or
    up to the seal), a day per transaction; then, for a whole rebuild, seal what has ended since.
    Returns how many hours it summed."""
    state = RollupSeal.objects.first()
    sealed_until = state.sealed_until if state is not None else None
    summed_hours = 0
    if sealed_until is not None:
        start = hour_of(since) if since is not None else None
        if start is None:
            first = TraceHour.objects.order_by("hour").values_list("hour", flat=True).first()
            oldest = Trace.objects.order_by("started_at").values_list("started_at", flat=True).first()
            candidates = [moment for moment in (first, oldest and hour_of(oldest)) if moment is not None]
            start = min(candidates) if candidates else sealed_until
        end = min(hour_of(until) + HOUR, sealed_until) if until is not None else sealed_until
        while start < end:
            chunk_end = min(start + SEAL_CHUNK, end)
            # Summed before the transaction, as in seal(); the stale marks stay, for the writes
            # that commit in between.
            hours = summed([(start, chunk_end)])
            with transaction.atomic():
                store(start, chunk_end, hours)
                store_days(day for day in _days(start, chunk_end) if day + DAY <= sealed_until)
            summed_hours += (chunk_end - start) // HOUR
            start = chunk_end
            if progress is not None:
                progress(start)
    if since is None and until is None:
        summed_hours += seal(progress=progress)
    return summed_hours


class RollupSweep:
    """A server's sweep, from ``start()`` to ``aclose()``: every ``SWEEP_SECONDS``, the stale hours
    summed again and the ended hours sealed."""

    def __init__(self, seconds: float = SWEEP_SECONDS) -> None:
        self.seconds = seconds
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._sweep(), name="rollup-sweep")

    async def _sweep(self) -> None:
        while True:
            try:
                await pooled(sweep)()
            except Exception as exc:  # noqa: BLE001 - the database is down: the next round tries again
                logger.warning("rollup sweep failed: %r", exc)
            await asyncio.sleep(self.seconds)

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def sweep(now: dt.datetime | None = None) -> tuple[int, int]:
    """One round: (stale hours summed again, hours sealed)."""
    return refresh_stale(), seal(now, chunks=SEAL_CHUNKS_PER_SWEEP)
