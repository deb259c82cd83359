"""What keeps the history's writes cheap: checkpoints beside the writer (SQLite), no index that
another one already covers, and a garbage collector set for a server."""

from __future__ import annotations

import gc
import threading
import uuid

import pytest
from django.db import connection

from agents.events import EventType
from tests.factories import run_fields
from traces import gctune, wal
from traces.access import SessionKey
from traces.hub import Hub
from traces.models import Event, Run
from traces.recorder import EventStore, TraceRecorder, run_on_writer


def _indexes(table: str) -> list[tuple[list[str], bool]]:
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, table)
    return [(c["columns"], bool(c["unique"])) for c in constraints.values() if c["index"] or c["unique"]]


@pytest.mark.django_db(transaction=True)
async def test_the_writer_leaves_sqlite_checkpoints_to_a_thread_of_its_own():
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's write-ahead log only")
    recorder = TraceRecorder(trace_id=uuid.uuid4(), session=SessionKey("wal"), store=EventStore(hub=Hub()))
    trace_id = recorder.trace_id
    await recorder.emit(
        EventType.TRACE_STARTED,
        {"trace_id": str(trace_id), "trace_name": "t", "request": "q", "agent_name": "a", "max_steps": 1},
    )
    run_id = uuid.uuid4()
    await recorder.emit(EventType.STEP_STARTED, run_fields(trace_id, run_id, "step_1", "agent", "running"))
    await recorder.flush()

    def writer_setting() -> int:
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA wal_autocheckpoint")
            return int(cursor.fetchone()[0])

    assert await run_on_writer(writer_setting) == 0  # its commits never copy the log back
    assert any(t.name == "sqlite-checkpoint" and t.is_alive() for t in threading.enumerate())
    path = str(connection.settings_dict["NAME"])
    busy, logged, copied = wal.checkpoint(path)
    assert busy == 0 and copied == logged  # the log is copied back without the writer
    assert await Event.objects.filter(trace_id=trace_id).acount() == 2


def test_in_memory_databases_keep_sqlite_s_own_checkpoints():
    assert wal._in_memory(":memory:")
    assert wal._in_memory("file:memorydb_default?mode=memory&cache=shared")
    assert not wal._in_memory("/var/lib/tracesite/tracesite.sqlite3")


@pytest.mark.django_db
def test_no_index_of_the_history_repeats_the_start_of_another():
    """Each index is one more B-tree written for every run and every event."""
    for table in (Run._meta.db_table, Event._meta.db_table):
        indexes = _indexes(table)
        columns = [cols for cols, _ in indexes]
        for cols in columns:
            longer = [other for other in columns if other != cols and other[: len(cols)] == cols]
            assert not longer, f"{table}: index on {cols} is covered by {longer}"
    assert (["trace_id", "seq"], True) in _indexes(Event._meta.db_table)
    assert ["trace_id", "start_time"] in [cols for cols, _ in _indexes(Run._meta.db_table)]


def test_the_garbage_collector_is_set_for_a_server():
    before = gc.get_threshold()
    try:
        gctune.tune(0)
        assert gc.get_threshold() == before  # 0: Python's own
        gctune.tune(50_000)
        assert gc.get_threshold() == (50_000, *gctune.OLDER)
        assert gc.get_freeze_count() > 0  # what start-up made is out of the collector's sight
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
