"""When the history database stops taking writes mid-run, the run fails cleanly and nothing is lost."""

from __future__ import annotations

import asyncio
import threading

import pytest
from django.db import connections
from django.db.backends.signals import connection_created

from traces.access import SessionKey
from traces.live import agent_runs
from traces.live.hub import Hub
from traces.models import Event, Trace
from traces.store.event_store import EventStore
from traces.store.sinks import ThreadSink

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("configured_agent_db")]


async def test_a_run_fails_cleanly_when_the_history_stops_taking_writes(monkeypatch):
    monkeypatch.setattr(agent_runs, "FINALIZE_INTERVAL", 0.1)
    refusing = threading.Event()

    def read_only(sender, connection, **kwargs):
        if refusing.is_set() and threading.current_thread().name.startswith("trace-writer"):
            with connection.cursor() as cursor:
                cursor.execute(
                    "PRAGMA query_only = 1" if connection.vendor == "sqlite" else "SET SESSION TRANSACTION READ ONLY"
                )

    sink = ThreadSink(retry_delays=(0.05, 0.05))

    async def reconnect_writer() -> None:
        """The sink's connection is opened again (and made read-only or not) on its own thread."""
        await asyncio.get_running_loop().run_in_executor(sink._thread, connections.close_all)

    connection_created.connect(read_only)
    seen: list[dict] = []

    async def listener(message: dict) -> None:
        seen.append(message)
        if message["event_type"] == "think_completed" and not refusing.is_set():
            refusing.set()  # the database goes away after the first model call
            await reconnect_writer()

    store = EventStore(sink, hub=Hub())
    try:
        await store.start()
        run = asyncio.create_task(
            agent_runs.run_trace(
                "显示用户表的10条用户数据",
                store=store,
                session=SessionKey("outage"),
                source=Trace.Source.WEBSOCKET,
                listener=listener,
            )
        )
        async with asyncio.timeout(20):
            while store.store_ok:  # the store finds the history unavailable
                await asyncio.sleep(0.02)
        trace = await Trace.objects.aget()
        assert trace.status == Trace.Status.RUNNING  # not success: nothing half-written looks finished

        refusing.clear()  # the database is back
        await reconnect_writer()
        result = await asyncio.wait_for(run, 20)  # the run records its end once it can
        assert result.status == "error" and "trace history unavailable" in result.error
    finally:
        connection_created.disconnect(read_only)
        await store.aclose()

    trace = await Trace.objects.aget()
    assert trace.status == Trace.Status.ERROR and "trace history unavailable" in trace.error
    stored = [e async for e in Event.objects.filter(trace=trace).order_by("seq")]
    assert [e.seq for e in stored] == list(range(1, len(stored) + 1))
    assert {m["message_id"] for m in seen} <= {e.message_id for e in stored}  # every event a client saw is stored
    assert stored[-1].event_type == "trace_completed"
