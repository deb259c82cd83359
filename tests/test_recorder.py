"""The recorder numbers, stores, then delivers every event, in order, for many traces at once."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from decimal import Decimal

import pytest
from django.db import connection

from agents.events import EventType, utcnow
from tests.factories import run_fields
from traces import protocol
from traces.access import SessionKey
from traces.compat import RedisChannelLayer as CompatRedisLayer
from traces.live.bus import Bus
from traces.live.hub import Hub
from traces.models import Event, Run, Trace
from traces.protocol import ServerEvent
from traces.store.event_store import EventStore, TraceRefused, TraceStoreError
from traces.store.recorder import TraceRecorder
from traces.store.sinks import ProcessSink, ThreadSink
from traces.store.statements import EVENT_ROWS, RUN_ROWS, TRACE_ROWS
from traces.store.writer import RETRY_DELAYS

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(params=["thread", "process"])
def sink(request):
    """Sinks that store on a thread, or through a writer process (a server's default)."""

    def make(retry_delays=RETRY_DELAYS):
        return ThreadSink(retry_delays) if request.param == "thread" else ProcessSink(retry_delays)

    return make


TRACES = 50
EVENTS_PER_TRACE = 100


async def emit_trace(recorder: TraceRecorder, events: int) -> None:
    """A trace of exactly ``events`` events: start, steps with think and tool runs, completion."""
    trace_id = recorder.trace_id
    await recorder.emit(
        EventType.TRACE_STARTED,
        {
            "trace_id": str(trace_id),
            "trace_name": "sql_agent_execution",
            "request": "显示用户表的10条用户数据 🚀",
            "agent_name": "sql_agent",
            "max_steps": 10,
            "metadata": {"model": "builtin"},
        },
    )
    emitted = 1
    step = 0
    while emitted < events - 1:
        step += 1
        step_id, think_id = uuid.uuid4(), uuid.uuid4()
        sequence = [
            (EventType.STEP_STARTED, run_fields(trace_id, step_id, f"step_{step}", "agent", "running")),
            (EventType.THINK_STARTED, run_fields(trace_id, think_id, "think", "think", "running", step_id)),
            (
                EventType.THINK_COMPLETED,
                run_fields(
                    trace_id,
                    think_id,
                    "think",
                    "think",
                    "success",
                    step_id,
                    token_usage={"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                ),
            ),
            (
                EventType.STATUS_UPDATE,
                {
                    "current_step": step,
                    "max_steps": 10,
                    "agent_state": "RUNNING",
                    "message": "",
                    "progress_percentage": 10,
                },
            ),
            (EventType.RUN_COMPLETED, run_fields(trace_id, step_id, f"step_{step}", "agent", "success")),
        ]
        for event_type, data in sequence[: events - 1 - emitted]:
            await recorder.emit(event_type, data)
            emitted += 1
    await recorder.emit(
        EventType.TRACE_COMPLETED,
        {
            "trace_id": str(trace_id),
            "duration_ms": 1234,
            "total_runs": step,
            "status": "success",
            "total_cost": 0,
            "total_tokens": None,
            "final_response": "done",
        },
    )


class Inbox:
    """A socket's side of the hub, keeping what it is handed."""

    def __init__(self) -> None:
        self.events: list = []

    def offer(self, event) -> None:
        self.events.append(event)

    def offer_feed(self, event) -> None:
        pass

    def catch_up(self) -> None:
        pass


async def wait_for_counts(inboxes: list[Inbox], count: int, seconds: float) -> None:
    async with asyncio.timeout(seconds):
        while any(len(inbox.events) < count for inbox in inboxes):
            await asyncio.sleep(0.02)


async def record_many(store: EventStore, *hubs: Hub) -> None:
    """Many traces at once through ``store``; on each hub (this process's, another's) a follower per trace."""
    recorders = [TraceRecorder(store, session=SessionKey(f"session-{i % 10}")) for i in range(TRACES)]
    inboxes = {hub: [Inbox() for _ in recorders] for hub in hubs}
    for hub, received in inboxes.items():
        for recorder, inbox in zip(recorders, received, strict=True):
            hub.follow_trace(str(recorder.trace_id), inbox)
    await asyncio.gather(*(emit_trace(r, EVENTS_PER_TRACE) for r in recorders))
    everyone = [inbox for received in inboxes.values() for inbox in received]
    await wait_for_counts(everyone, EVENTS_PER_TRACE, 120)
    await asyncio.sleep(0.3)  # nothing more arrives (a process's own batch does not come back to it)
    await store.aclose()
    for hub in hubs:
        await hub.aclose()

    received = everyone
    for recorder, inbox in zip(recorders * len(hubs), everyone, strict=True):
        messages = inbox.events
        assert [m.seq for m in messages] == list(range(1, EVENTS_PER_TRACE + 1))
        envelopes = [protocol.loads(m.text) for m in messages]
        assert {e["trace_id"] for e in envelopes} == {str(recorder.trace_id)}
        assert envelopes[0]["event_type"] == "trace_started"
        assert envelopes[-1]["event_type"] == "trace_completed"

    stored = await asyncio.to_thread(
        lambda: {
            str(t): list(Event.objects.filter(trace_id=t).order_by("seq").values_list("seq", flat=True))
            for t in Trace.objects.values_list("id", flat=True)
        }
    )
    assert len(stored) == TRACES
    for seqs in stored.values():
        assert seqs == list(range(1, EVENTS_PER_TRACE + 1))
    # Delivered exactly what was stored, byte for byte.
    first = recorders[0]
    texts = await asyncio.to_thread(
        lambda: list(Event.objects.filter(trace_id=first.trace_id).order_by("seq").values_list("envelope", flat=True))
    )
    assert texts == [m.text for m in received[0].events]


async def test_it_stores_and_delivers_concurrent_traces_in_order_to_its_own_sockets(sink):
    hub = Hub()
    await record_many(EventStore(sink(), hub=hub), hub)


@pytest.mark.redis
async def test_it_delivers_concurrent_traces_in_order_to_another_process_over_redis(redis_url):
    """Two processes sharing Redis: one stores, the other's hub gets every batch, in order, once."""
    from tracesite.env import redis_hosts

    def layer():
        return CompatRedisLayer(hosts=redis_hosts(redis_url), prefix=f"test{prefix}", capacity=10000, expiry=300)

    prefix = uuid.uuid4().hex[:8]
    writer_hub, reader_hub = Hub(), Hub()
    writer_bus, reader_bus = Bus(writer_hub, layer()), Bus(reader_hub, layer())
    await writer_bus.start()
    await reader_bus.start()
    await record_many(EventStore(hub=writer_hub, bus=writer_bus), writer_hub, reader_hub)
    for bus in (writer_bus, reader_bus):
        await bus.aclose()
        await bus.layer.flush()


@pytest.mark.redis
async def test_sockets_connecting_at_once_start_the_bus_once(redis_url):
    """Each socket starts the process's bus as it connects; twenty at once must join the processes'
    group with one channel, or batches sent to the others' channels pile up unread in memory."""
    from tracesite.env import redis_hosts

    layer = CompatRedisLayer(hosts=redis_hosts(redis_url), prefix=f"test{uuid.uuid4().hex[:8]}", expiry=60)
    bus = Bus(Hub(), layer)
    await asyncio.gather(*(bus.start() for _ in range(20)))
    await bus.start()
    from traces.live.bus import GROUP

    members = await layer.connection(layer.consistent_hash(GROUP)).zrange(layer._group_key(GROUP), 0, -1)
    assert [member.decode() for member in members] == [bus.channel]
    assert len([task for task in asyncio.all_tasks() if task.get_name() == "bus-listen"]) == 1
    await bus.aclose()
    await layer.flush()


async def test_it_projects_events_onto_the_trace_and_run_rows(sink):
    store = EventStore(sink(), hub=Hub())
    recorder = TraceRecorder(store, session=SessionKey("s1"), source=Trace.Source.CLI)
    await emit_trace(recorder, 12)
    await store.aclose()
    trace = await Trace.objects.aget(pk=recorder.trace_id)
    assert trace.status == Trace.Status.SUCCESS
    assert trace.request == "显示用户表的10条用户数据 🚀"
    assert (trace.session_id, trace.source, trace.model, trace.agent_name) == ("s1", "cli", "builtin", "sql_agent")
    assert trace.final_response == "done"
    assert trace.last_seq == 12
    assert trace.duration_ms == 1234
    assert trace.prompt_tokens == 20 and trace.total_tokens == 30  # two think runs of 15
    assert trace.current_step == 2
    steps = [run async for run in Run.objects.filter(trace=trace, run_type=Run.Type.AGENT).order_by("name")]
    assert [(s.name, s.status) for s in steps] == [("step_1", "success"), ("step_2", "success")]
    thinks = [run async for run in Run.objects.filter(trace=trace, run_type=Run.Type.THINK)]
    assert all(t.parent_id in {s.id for s in steps} and t.total_tokens == 15 for t in thinks)


async def test_submit_gives_the_envelope_as_stored_and_sent(sink):
    store = EventStore(sink(), hub=Hub())
    recorder = TraceRecorder(store, session=SessionKey("s2"))
    future = await recorder.submit(
        EventType.TRACE_STARTED, {"trace_id": str(recorder.trace_id), "request": "q", "metadata": {}}
    )
    seq, text = await future
    sent = protocol.loads(text)
    await store.aclose()
    assert seq == 1
    assert sent["seq"] == 1 and sent["replay"] is False and sent["session_id"] == "s2"
    assert sent["message_id"] == f"trace_started_{recorder.trace_id.hex}_1"
    event = await Event.objects.aget(trace_id=recorder.trace_id, seq=1)
    assert protocol.loads(event.envelope) == sent


async def test_it_stores_events_even_when_delivery_fails(caplog):
    # A Redis layer pointed at a port where nothing listens: every publish to other processes fails.
    bus = Bus(Hub(), CompatRedisLayer(hosts=["redis://127.0.0.1:1/0"]))
    store = EventStore(hub=Hub(), bus=bus)
    recorder = TraceRecorder(store, session=SessionKey("s3"))
    await emit_trace(recorder, 6)
    await store.drain()
    await store.aclose()
    assert await Event.objects.filter(trace_id=recorder.trace_id).acount() == 6
    assert bus.layer.up is False
    warnings = [r for r in caplog.records if "live delivery failing" in r.getMessage()]
    assert len(warnings) == 1  # said once, not per event


async def test_it_refuses_non_trace_events():
    recorder = TraceRecorder(EventStore(hub=Hub()), session=SessionKey("s4"))
    with pytest.raises(ValueError):
        await recorder.emit(ServerEvent.PONG, {})


async def test_after_a_failed_write_the_trace_refuses_events_until_reset(sink):
    store = EventStore(sink((0.0,)), hub=Hub())
    recorder = TraceRecorder(store, session=SessionKey("s5"))
    await recorder.emit(EventType.TRACE_STARTED, {"trace_id": str(recorder.trace_id), "request": "q", "metadata": {}})
    await recorder.flush()
    # A row already at seq 2 makes the next batch fail in the database itself.
    blocker = await Event.objects.acreate(
        trace_id=recorder.trace_id,
        seq=2,
        event_type="status_update",
        timestamp=utcnow(),
        message_id="blocker",
        envelope="{}",
    )
    await recorder.emit(EventType.STATUS_UPDATE, {"current_step": 1})  # returns before the write
    with pytest.raises(TraceStoreError):
        await recorder.flush()
    with pytest.raises(TraceStoreError):
        await recorder.emit(EventType.STATUS_UPDATE, {"current_step": 2})
    await blocker.adelete()
    await recorder.reset_failure()
    await recorder.emit(
        EventType.TRACE_COMPLETED, {"trace_id": str(recorder.trace_id), "status": "error", "final_response": ""}
    )
    await store.aclose()
    stored = [(e.seq, e.event_type) async for e in Event.objects.filter(trace_id=recorder.trace_id).order_by("seq")]
    assert stored == [(1, "trace_started"), (2, "trace_completed")]  # no hole, the refused events absent
    assert (await Trace.objects.aget(pk=recorder.trace_id)).status == "error"


async def test_a_trace_whose_event_cannot_be_stored_fails_alone(sink):
    """One trace's bad event in a batch fails that trace, not the others written with it."""
    store = EventStore(sink((0.0,)), hub=Hub())
    good, bad = (TraceRecorder(store, session=SessionKey(name)) for name in ("good", "bad"))
    for recorder in (good, bad):
        await recorder.emit(
            EventType.TRACE_STARTED, {"trace_id": str(recorder.trace_id), "request": "q", "metadata": {}}
        )
    await good.flush()
    await bad.flush()
    # A row already at the bad trace's next seq makes its part of the next batch fail in the database.
    await Event.objects.acreate(
        trace_id=bad.trace_id, seq=2, event_type="status_update", timestamp=utcnow(), message_id="x", envelope="{}"
    )
    for step in (1, 2):  # both traces' events queue together: one batch
        await good.emit(EventType.STATUS_UPDATE, {"current_step": step})
        await bad.emit(EventType.STATUS_UPDATE, {"current_step": step})
    await good.flush()
    with pytest.raises(TraceRefused):
        await bad.flush()
    await good.emit(
        EventType.TRACE_COMPLETED, {"trace_id": str(good.trace_id), "status": "success", "final_response": "ok"}
    )
    await store.aclose()
    assert [e.seq async for e in Event.objects.filter(trace_id=good.trace_id).order_by("seq")] == [1, 2, 3, 4]
    assert (await Trace.objects.aget(pk=good.trace_id)).status == "success"
    assert [e.message_id async for e in Event.objects.filter(trace_id=bad.trace_id).order_by("seq")][1] == "x"
    assert store.store_ok  # not taken for a database outage


@pytest.mark.parametrize(
    "value",
    [
        utcnow(),
        dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),  # no microseconds: str() leaves them out
        dt.datetime(2026, 6, 1, 12, 0, 0, 123456, tzinfo=dt.timezone(dt.timedelta(hours=8))),
        dt.datetime.fromisoformat("2025-09-24T12:00:00.000Z"),
        None,
    ],
)
def test_the_rows_fast_converters_prepare_datetimes_as_django_does(value):
    for rows in (EVENT_ROWS, TRACE_ROWS, RUN_ROWS):
        for field, convert in zip(rows.fields, rows.converters(), strict=True):
            if field.get_internal_type() == "DateTimeField":
                assert convert(value) == field.get_db_prep_save(value, connection), field


def test_the_rows_fast_converters_prepare_uuids_text_and_json_as_django_does():
    samples = {
        "UUIDField": [uuid.uuid4(), str(uuid.uuid4()), None],
        "ForeignKey": [uuid.uuid4(), None],
        "CharField": ["sql_agent", "显示 🚀", None],
        "TextField": ["x" * 3000, None],
        "PositiveIntegerField": [0, 7, None],
        "IntegerField": [0, -3, None],
        "JSONField": [{"a": [1, "二"]}, {}, None],
        "DecimalField": [Decimal("0.25000000"), Decimal("1.5"), Decimal(0), 0, 0.1, "2.5", None],
    }
    checked = 0
    for rows in (EVENT_ROWS, TRACE_ROWS, RUN_ROWS):
        for field, convert in zip(rows.fields, rows.converters(), strict=True):
            kind = field.get_internal_type()
            if kind == "ForeignKey" and field.target_field.get_internal_type() != "UUIDField":
                for value in (7, None, "7"):  # an owner (a user's integer key)
                    assert convert(value) == field.get_db_prep_save(value, connection), field
                    checked += 1
                continue
            for value in samples.get(kind, []):
                expected = field.get_db_prep_save(value, connection)
                if kind == "JSONField" and expected is not None:  # the adapter's text, compared as JSON
                    expected = json.loads(expected if isinstance(expected, str) else expected.dumps(value))
                    assert json.loads(convert(value)) == expected, field
                else:
                    assert convert(value) == expected, field
                checked += 1
    assert checked > 30
