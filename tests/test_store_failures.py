"""How the commit path tells a trace's failure apart: its own data (refused, at once), another
writer's events (conflict), the database (unavailable, after retries). Only the last is the
history being down."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection

from agents.events import EventType, utcnow
from tests.factories import run_fields
from traces import protocol
from traces.models import Event, Trace
from traces.store import writer
from traces.store.writer import Batch, FailureKind, Numbered, Writer

pytestmark = pytest.mark.django_db(transaction=True)


def events(trace_id: uuid.UUID, *kinds_and_data: tuple[EventType, dict], first: int = 1) -> list[Numbered]:
    found = []
    for seq, (kind, data) in enumerate(kinds_and_data, start=first):
        moment = utcnow()
        message = protocol.envelope(kind, data, session_id="s", timestamp=moment, trace_id=trace_id, seq=seq)
        found.append(Numbered(trace_id, seq, kind, moment, message["message_id"], protocol.dumps(message), data))
    return found


def started(trace_id: uuid.UUID) -> tuple[EventType, dict]:
    return EventType.TRACE_STARTED, {"trace_id": str(trace_id), "request": "q", "metadata": {}}


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    """The writer's waits before trying again, recorded instead of slept."""
    waited: list[float] = []
    monkeypatch.setattr(writer.time, "sleep", waited.append)
    return waited


def test_a_traces_own_bad_data_is_refused_at_once_and_the_others_are_stored(sleeps):
    good, bad = uuid.uuid4(), uuid.uuid4()
    orphan = run_fields(bad, uuid.uuid4(), "t", "tool", "success", parent=uuid.uuid4())  # a parent that is nowhere
    outcome = Writer(retry_delays=(30.0,)).store(
        Batch([*events(good, started(good)), *events(bad, started(bad), (EventType.TOOL_COMPLETED, orphan))])
    )
    assert outcome.stored == {good}
    assert outcome.failed[bad].kind == FailureKind.REFUSED and "IntegrityError" in outcome.failed[bad].reason
    assert sleeps == []  # not taken for the database being down: no waiting, no retrying
    assert Trace.objects.filter(pk=good).exists() and not Trace.objects.filter(pk=bad).exists()


def test_a_lone_trace_whose_data_is_refused_is_not_retried_either(sleeps):
    trace_id = uuid.uuid4()
    orphan = run_fields(trace_id, uuid.uuid4(), "t", "tool", "success", parent=uuid.uuid4())
    outcome = Writer(retry_delays=(30.0,)).store(
        Batch(events(trace_id, started(trace_id), (EventType.TOOL_COMPLETED, orphan)))
    )
    assert outcome.failed[trace_id].kind == FailureKind.REFUSED and sleeps == []


def test_events_whose_seq_another_writer_took_are_a_conflict(sleeps):
    trace_id = uuid.uuid4()
    assert Writer().store(Batch(events(trace_id, started(trace_id)))).stored == {trace_id}
    # Another process, which had not seen it stored, numbers its own first event 1 as well.
    outcome = Writer(retry_delays=(30.0,)).store(Batch(events(trace_id, started(trace_id))))
    assert outcome.failed[trace_id].kind == FailureKind.CONFLICT and sleeps == []
    # One that knows the trace only up to an older seq is told so before it writes anything.
    behind = Writer()
    behind.store(Batch(events(trace_id, (EventType.STATUS_UPDATE, {"current_step": 1}), first=2)))
    outcome = Writer().store(Batch(events(trace_id, (EventType.STATUS_UPDATE, {"current_step": 2}), first=2)))
    assert outcome.failed[trace_id].kind == FailureKind.CONFLICT
    assert list(Event.objects.filter(trace_id=trace_id).values_list("seq", flat=True).order_by("seq")) == [1, 2]


def test_a_database_that_takes_no_writes_is_unavailable_after_the_retries(sleeps):
    from django.db.backends.signals import connection_created

    trace_id = uuid.uuid4()

    def read_only(sender, connection, **kwargs):  # every connection, reconnects included
        with connection.cursor() as cursor:
            cursor.execute(
                "PRAGMA query_only = 1" if connection.vendor == "sqlite" else "SET SESSION TRANSACTION READ ONLY"
            )

    connection.close()
    connection_created.connect(read_only)
    try:
        outcome = Writer(retry_delays=(0.1, 0.2)).store(Batch(events(trace_id, started(trace_id))))
    finally:
        connection_created.disconnect(read_only)
        connection.close()
    assert outcome.failed[trace_id].kind == FailureKind.UNAVAILABLE
    assert outcome.failed[trace_id].reason.startswith("trace history unavailable")
    assert sleeps == [0.1, 0.2]  # tried again after each delay, then given up
    assert not Trace.objects.filter(pk=trace_id).exists()


def test_an_event_that_does_not_follow_the_stored_ones_is_refused():
    trace_id = uuid.uuid4()
    Writer().store(Batch(events(trace_id, started(trace_id))))
    later = events(trace_id, (EventType.STATUS_UPDATE, {"current_step": 1}), first=3)  # seq 2 never came
    outcome = Writer().store(Batch(later))
    assert outcome.failed[trace_id].kind == FailureKind.REFUSED
    assert "an earlier event of this trace was not stored" in outcome.failed[trace_id].reason
    assert Trace.objects.get(pk=trace_id).last_seq == 1


def test_a_batch_sent_again_after_a_writer_process_stopped_is_not_written_twice():
    trace_id = uuid.uuid4()
    first = events(trace_id, started(trace_id), (EventType.STATUS_UPDATE, {"current_step": 1}))
    Writer().store(Batch(first))
    again = Batch([*first, *events(trace_id, (EventType.STATUS_UPDATE, {"current_step": 2}), first=3)], recovering=True)
    assert Writer().store(again).stored == {trace_id}
    assert list(Event.objects.filter(trace_id=trace_id).values_list("seq", flat=True).order_by("seq")) == [1, 2, 3]
    assert Trace.objects.get(pk=trace_id).current_step == 2


def test_a_trace_it_does_not_know_is_read_back_before_its_events_are_projected():
    """Its totals continue from the stored runs: another process, or this one before a restart,
    recorded the first model call."""
    trace_id, call = uuid.uuid4(), uuid.uuid4()
    usage = {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}
    Writer().store(
        Batch(
            events(
                trace_id,
                started(trace_id),
                (EventType.THINK_COMPLETED, run_fields(trace_id, call, "c", "think", "success", token_usage=usage)),
            )
        )
    )
    second = run_fields(trace_id, uuid.uuid4(), "c2", "think", "success", token_usage=usage)
    Writer().store(Batch(events(trace_id, (EventType.THINK_COMPLETED, second), first=3)))
    trace = Trace.objects.get(pk=trace_id)
    assert (trace.total_tokens, trace.total_runs, trace.last_seq) == (220, 2, 3)
