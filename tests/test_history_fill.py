"""The history benchmark's bulk fill (bench/history_fill.py) writes what the site would: each trace's
``Trace`` and ``Run`` rows are what the projection makes of its stored events, and the history is
spread like a shared deployment's, so the figures measured over it mean something."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from agents.events import EventType
from traces import protocol
from traces.models import Event, Run, Trace
from traces.store.projection import new_trace, project

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import history_fill

pytestmark = pytest.mark.django_db(transaction=True)

TRACE_FIELDS = [
    "name", "agent_name", "request", "final_response", "status", "max_steps", "current_step", "model",
    "started_at", "ended_at", "duration_ms", "prompt_tokens", "completion_tokens", "total_tokens", "total_cost",
    "total_runs", "last_seq", "error", "error_type", "metadata",
]  # fmt: skip
RUN_FIELDS = [
    "parent_id", "name", "run_type", "status", "start_time", "end_time", "duration_ms", "inputs", "outputs",
    "error", "error_type", "metadata", "prompt_tokens", "completion_tokens", "total_tokens", "cost",
]  # fmt: skip


def filled(count: int) -> list[int]:
    owners = [User.objects.create(username=f"owner{n}").pk for n in range(history_fill.USERS)]
    for _ in history_fill.fill(count, owners, chunk=15):
        pass
    return owners


def projected(trace: Trace) -> tuple[dict, dict]:
    """The trace's rows as the store would write them from its events."""
    row = new_trace(
        {"id": trace.id, "session_id": trace.session_id, "source": trace.source, "owner_id": trace.owner_id}
    )
    runs: dict = {}
    for event in trace.events.order_by("seq"):
        message = protocol.loads(event.envelope)
        step = project(row, runs, EventType(event.event_type), message["data"], event.timestamp, event.seq)
        row, runs = step.trace, {**runs, **step.runs}
    return row, runs


def test_it_writes_the_rows_the_projection_makes_of_the_events():
    filled(40)
    assert (Trace.objects.count(), Run.objects.count(), Event.objects.count()) == (40, 120, 400)
    for trace in Trace.objects.all():
        row, runs = projected(trace)
        assert {name: getattr(trace, name) for name in TRACE_FIELDS} == {name: row[name] for name in TRACE_FIELDS}
        assert set(runs) == {run.id for run in trace.runs.all()}
        for run in trace.runs.all():
            want = {name: Run._meta.get_field(name).get_default() for name in RUN_FIELDS} | runs[run.id]
            assert {name: getattr(run, name) for name in RUN_FIELDS} == {name: want[name] for name in RUN_FIELDS}


def test_it_spreads_the_history_like_a_shared_deployment():
    owners = filled(300)
    traces = Trace.objects.all()
    assert set(traces.values_list("status", flat=True)) == {"success", "error", "cancelled"}
    assert set(traces.values_list("owner_id", flat=True)) == {*owners, None}
    assert traces.filter(session_id=history_fill.BIG_SESSION).count() > 30
    assert traces.values("session_id").distinct().count() > 100
    assert traces.values("model").distinct().count() > 3
    assert traces.values("agent_name").distinct().count() > 1
    assert traces.filter(request__contains="用户").exists() and traces.filter(request__contains="orders").exists()
    assert traces.filter(request__contains=history_fill.reference(123)).count() == 1
    now = timezone.now()
    assert traces.filter(started_at__gt=now - dt.timedelta(days=1)).exists()
    assert not traces.filter(started_at__lt=now - dt.timedelta(days=history_fill.DAYS, minutes=1)).exists()
    assert len(set(traces.values_list("duration_ms", flat=True))) > 250
