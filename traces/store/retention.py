"""Deleting old history in small batches, so the database is never locked for long."""

from __future__ import annotations

import datetime as dt
import re
import time

from django.utils import timezone

from traces.models import Event, Run, Trace

BATCH = 500
AGE_RE = re.compile(r"^(\d+)([dhw])$")


def parse_age(text: str) -> dt.timedelta:
    """``30d``, ``12h``, ``2w``."""
    match = AGE_RE.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not an age like 30d, 12h or 2w")
    number, unit = int(match.group(1)), match.group(2)
    return {"d": dt.timedelta(days=number), "h": dt.timedelta(hours=number), "w": dt.timedelta(weeks=number)}[unit]


def prunable(older_than: dt.timedelta, statuses: list[str] | None = None):
    traces = Trace.objects.finished().filter(started_at__lt=timezone.now() - older_than)
    if statuses:
        traces = traces.filter(status__in=statuses)
    return traces


def prune(traces, pause: float = 0.0) -> int:
    """Delete ``traces`` (events, runs, then the traces) a batch at a time; returns how many."""
    deleted = 0
    while True:
        ids = list(traces.order_by("pk").values_list("pk", flat=True)[:BATCH])
        if not ids:
            return deleted
        Event.objects.filter(trace_id__in=ids).delete()
        Run.objects.filter(trace_id__in=ids, parent__isnull=False).delete()
        Run.objects.filter(trace_id__in=ids).delete()
        deleted += Trace.objects.filter(pk__in=ids).delete()[1].get("traces.Trace", 0)
        if pause:
            time.sleep(pause)
