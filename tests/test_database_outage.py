"""When the history database stops taking writes mid-run, the run fails cleanly and nothing is lost."""

from __future__ import annotations

import asyncio
import threading

import pytest
from django.db import connection as default_connection
from django.db.backends.signals import connection_created

from traces import recorder as recorder_module
from traces import runner
from traces.access import SessionKey
from traces.hub import Hub
from traces.models import Event, Trace
from traces.recorder import EventStore, _writer_thread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("configured_agent_db")]


def _close_writer_connection() -> None:
    _writer_thread.submit(lambda: default_connection.close()).result()  # resolved on the writer thread


async def test_a_run_fails_cleanly_when_the_history_stops_taking_writes(monkeypatch):
    monkeypatch.setattr(recorder_module, "RETRY_DELAYS", (0.05, 0.05))
    monkeypatch.setattr(runner, "FINALIZE_INTERVAL", 0.1)
    refusing = threading.Event()

    def read_only(sender, connection, **kwargs):
        if refusing.is_set() and threading.current_thread().name.startswith("trace-recorder"):
            with connection.cursor() as cursor:
                cursor.execute(
                    "PRAGMA query_only = 1" if connection.vendor == "sqlite" else "SET SESSION TRANSACTION READ ONLY"
                )

    connection_created.connect(read_only)
    seen: list[dict] = []

    async def listener(message: dict) -> None:
        seen.append(message)
        if message["event_type"] == "think_completed" and not refusing.is_set():
            refusing.set()  # the database goes away after the first model call
            await asyncio.to_thread(_close_writer_connection)

    store = EventStore(hub=Hub())
    try:
        result = await runner.run_trace(
            "显示用户表的10条用户数据",
            session=SessionKey("outage"),
            source=Trace.Source.WEBSOCKET,
            listener=listener,
            store=store,
        )
        assert result.status == "error" and "trace history unavailable" in result.error
        trace = await Trace.objects.aget()
        assert trace.status == Trace.Status.RUNNING  # not success: nothing half-written looks finished

        refusing.clear()  # the database is back
        await asyncio.to_thread(_close_writer_connection)
        async with asyncio.timeout(20):
            while (await Trace.objects.aget()).status == Trace.Status.RUNNING:
                await asyncio.sleep(0.05)
    finally:
        connection_created.disconnect(read_only)
        await store.aclose()

    trace = await Trace.objects.aget()
    assert trace.status == Trace.Status.ERROR and "trace history unavailable" in trace.error
    stored = [e async for e in Event.objects.filter(trace=trace).order_by("seq")]
    assert [e.seq for e in stored] == list(range(1, len(stored) + 1))
    assert {m["message_id"] for m in seen} <= {e.message_id for e in stored}  # every event a client saw is stored
    assert stored[-1].event_type == "trace_completed"
