"""Deleting old history in small batches, so the database is never locked for long."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from traces.models import Event, Run, Trace
from traces.store import rollups

BATCH = 500  # traces in a batch, at most
TRANSACTION_SECONDS = 0.2  # what a batch's transaction should take, at most
AGE_RE = re.compile(r"^(\d+)([dhw])$")
MAX_AGE = dt.timedelta(days=100 * 365)  # longer ago than any history; and the date stays one Python has


def parse_age(text: str) -> dt.timedelta:
    """``30d``, ``12h``, ``2w``; at most ``MAX_AGE``."""
    match = AGE_RE.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not an age like 30d, 12h or 2w")
    number, unit = int(match.group(1)), match.group(2)
    try:
        age = {"d": dt.timedelta(days=number), "h": dt.timedelta(hours=number), "w": dt.timedelta(weeks=number)}[unit]
    except OverflowError:
        age = None
    if age is None or age > MAX_AGE:
        raise ValueError(f"{text!r} is more than 100 years: give an age of at most {MAX_AGE.days}d")
    return age


def prunable(older_than: dt.timedelta, statuses: list[str] | None = None):
    traces = Trace.objects.finished().filter(started_at__lt=timezone.now() - older_than)
    if statuses:
        traces = traces.filter(status__in=statuses)
    return traces


@dataclass
class Pruned:
    traces: int = 0
    batches: int = 0
    longest: float = 0.0  # seconds: the longest a batch held its transaction


def prune(traces, pause: float | None = None, progress: Callable[[int], None] | None = None) -> Pruned:
    """Delete ``traces`` (events, runs, then the traces) oldest first, a batch at a time, each batch
    in a transaction of its own; ``progress`` is told how many traces each batch deleted.

    A batch's traces are picked before its transaction, oldest first through trace_started_idx: a
    pick ordered by anything else sorted every prunable trace for every batch, and a transaction
    open while picking would keep other writers (the live store) waiting as long. A batch is up
    to ``BATCH`` traces, halved after a transaction longer than ``TRANSACTION_SECONDS`` and grown
    again after short ones: traces with many events, or a busy database, make batches smaller.
    Between batches it rests ``pause`` seconds, by default as long as the last transaction took,
    so that other writers (on SQLite, the one writer the database allows at a time) have the
    database at least half of the time.
    """
    pruned = Pruned()
    size = BATCH
    while True:
        found = list(traces.order_by("started_at").values_list("pk", "started_at")[:size])
        if not found:
            return pruned
        ids = [pk for pk, _ in found]
        started = time.perf_counter()
        with transaction.atomic():  # the hours are stale once the traces are gone, not before
            rollups.mark_stale(started_at for _, started_at in found)
            Event.objects.filter(trace_id__in=ids).delete()
            Run.objects.filter(trace_id__in=ids, parent__isnull=False).delete()
            Run.objects.filter(trace_id__in=ids).delete()
            deleted = Trace.objects.filter(pk__in=ids).delete()[1].get("traces.Trace", 0)
        took = time.perf_counter() - started
        pruned.longest = max(pruned.longest, took)
        pruned.traces += deleted
        pruned.batches += 1
        if progress is not None:
            progress(deleted)
        if took > TRANSACTION_SECONDS:
            size = max(1, size // 2)
        elif took < TRANSACTION_SECONDS / 4:
            size = min(BATCH, size * 2)
        rest = took if pause is None else pause
        if rest:
            time.sleep(rest)
