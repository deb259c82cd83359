"""The recorder numbers, stores, then delivers every event, in order, for many traces at once."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from channels.layers import InMemoryChannelLayer
from channels_redis.core import RedisChannelLayer

from agents.events import EventType, utcnow
from tests.factories import run_fields
from traces import protocol
from traces.access import SessionKey
from traces.models import Event, Run, Trace
from traces.protocol import ServerEvent
from traces.recorder import EventStore, TraceRecorder

pytestmark = pytest.mark.django_db(transaction=True)

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


async def subscribe(layer, trace_id: uuid.UUID, inbox: list[dict]) -> None:
    """A group member that keeps receiving, as a consumer does."""
    channel = await layer.new_channel()
    await layer.group_add(protocol.trace_group(trace_id), channel)
    while True:
        inbox.append(await layer.receive(channel))


async def wait_for_counts(inboxes: list[list], count: int, seconds: float) -> None:
    async with asyncio.timeout(seconds):
        while any(len(inbox) < count for inbox in inboxes):
            await asyncio.sleep(0.02)


async def record_many(layer) -> None:
    store = EventStore(channel_layer=layer)
    recorders = [TraceRecorder(session=SessionKey(f"session-{i % 10}"), store=store) for i in range(TRACES)]
    received: list[list[dict]] = [[] for _ in recorders]
    members = [
        asyncio.create_task(subscribe(layer, r.trace_id, inbox)) for r, inbox in zip(recorders, received, strict=True)
    ]
    await asyncio.sleep(0.1)  # group_add done before the first event
    await asyncio.gather(*(emit_trace(r, EVENTS_PER_TRACE) for r in recorders))
    await wait_for_counts(received, EVENTS_PER_TRACE, 120)
    await asyncio.sleep(0.1)  # nothing more arrives
    for member in members:
        member.cancel()
    await asyncio.gather(*members, return_exceptions=True)
    await store.aclose()

    for recorder, messages in zip(recorders, received, strict=True):
        assert [m["seq"] for m in messages] == list(range(1, EVENTS_PER_TRACE + 1))
        envelopes = [protocol.loads(m["text"]) for m in messages]
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
    assert texts == [m["text"] for m in received[0]]


async def test_it_stores_and_delivers_concurrent_traces_in_order_on_the_in_memory_layer():
    await record_many(InMemoryChannelLayer(capacity=10000))


@pytest.mark.redis
async def test_it_stores_and_delivers_concurrent_traces_in_order_on_redis(redis_layer):
    await record_many(redis_layer)
    await redis_layer.flush()


async def test_it_projects_events_onto_the_trace_and_run_rows():
    store = EventStore(channel_layer=InMemoryChannelLayer())
    recorder = TraceRecorder(session=SessionKey("s1"), source=Trace.Source.CLI, store=store)
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


async def test_submit_gives_the_envelope_as_stored_and_sent():
    store = EventStore(channel_layer=InMemoryChannelLayer())
    recorder = TraceRecorder(session=SessionKey("s2"), store=store)
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
    # A Redis layer pointed at a port where nothing listens: every publish fails.
    broken = RedisChannelLayer(hosts=["redis://127.0.0.1:1/0"])
    store = EventStore(channel_layer=broken)
    recorder = TraceRecorder(session=SessionKey("s3"), store=store)
    await emit_trace(recorder, 6)
    await store.drain()
    await store.aclose()
    assert await Event.objects.filter(trace_id=recorder.trace_id).acount() == 6
    assert store.layer.up is False
    warnings = [r for r in caplog.records if "live delivery failing" in r.getMessage()]
    assert len(warnings) == 1  # said once, not per event


async def test_it_refuses_non_trace_events():
    recorder = TraceRecorder(session=SessionKey("s4"), store=EventStore(channel_layer=InMemoryChannelLayer()))
    with pytest.raises(ValueError):
        await recorder.emit(ServerEvent.PONG, {})


async def test_after_a_failed_write_the_trace_refuses_events_until_reset(monkeypatch):
    from traces import recorder as recorder_module
    from traces.recorder import TraceStoreError

    monkeypatch.setattr(recorder_module, "RETRY_DELAYS", (0.0,))
    store = EventStore(channel_layer=InMemoryChannelLayer())
    recorder = TraceRecorder(session=SessionKey("s5"), store=store)
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
