"""Deleting old history in small batches, so the database is never locked for long."""

from __future__ import annotations

import datetime as dt
import re
import time

from django.db import transaction
from django.utils import timezone

from traces.models import Event, Run, Trace
from traces.store import rollups

BATCH = 500
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


def prune(traces, pause: float = 0.0) -> int:
    """Delete ``traces`` (events, runs, then the traces) a batch at a time; returns how many."""
    deleted = 0
    while True:
        found = list(traces.order_by("pk").values_list("pk", "started_at")[:BATCH])
        if not found:
            return deleted
        ids = [pk for pk, _ in found]
        with transaction.atomic():  # the hours are stale once the traces are gone, not before
            rollups.mark_stale(started_at for _, started_at in found)
            Event.objects.filter(trace_id__in=ids).delete()
            Run.objects.filter(trace_id__in=ids, parent__isnull=False).delete()
            Run.objects.filter(trace_id__in=ids).delete()
            deleted += Trace.objects.filter(pk__in=ids).delete()[1].get("traces.Trace", 0)
        if pause:
            time.sleep(pause)
