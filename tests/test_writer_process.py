"""A server stores its events through a writer process (traces/writer.py): the same rows as the
recorder's own thread writes, nothing lost or stored twice when the process dies, and the process
ends with its server."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import struct
import time
import uuid
from pathlib import Path

import pytest

from agents.events import EventType
from tests.servers import completed_trace, daphne_server, read_until
from tests.test_recorder import emit_trace
from traces import writer
from traces.access import SessionKey
from traces.hub import Hub
from traces.models import Event, Run, Trace
from traces.recorder import EventStore, TraceRecorder
from traces.writer import use_writer_process

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def writer_process():
    assert use_writer_process(True)
    yield
    use_writer_process(False)


def _rows(trace_id: uuid.UUID) -> dict:
    """What was stored of a trace, without what differs between two recordings (ids, times)."""
    trace = Trace.objects.filter(pk=trace_id).values().get()
    for name in ("id", "session_id", "started_at", "ended_at", "created_at", "updated_at"):
        trace.pop(name, None)
    runs = sorted(
        (r.name, r.run_type, r.status, r.prompt_tokens, r.total_tokens, r.parent_id is None, r.inputs, r.outputs)
        for r in Run.objects.filter(trace_id=trace_id)
    )
    events = [(e.seq, e.event_type, e.run_id is None) for e in Event.objects.filter(trace_id=trace_id).order_by("seq")]
    return {"trace": trace, "runs": runs, "events": events}


async def _record(events: int, session: str) -> uuid.UUID:
    store = EventStore(hub=Hub())
    recorder = TraceRecorder(session=SessionKey(session), store=store)
    await emit_trace(recorder, events)
    await store.aclose()
    return recorder.trace_id


async def test_the_writer_process_stores_the_rows_the_recorders_thread_would(writer_process):
    in_process = await _record(40, "by-process")
    use_writer_process(False)
    on_thread = await _record(40, "by-thread")
    by_process = await asyncio.to_thread(_rows, in_process)
    by_thread = await asyncio.to_thread(_rows, on_thread)
    assert by_process["events"] == by_thread["events"] and len(by_process["events"]) == 40
    assert by_process["runs"] == by_thread["runs"]
    assert by_process["trace"] == by_thread["trace"]
    assert by_process["trace"]["total_tokens"] > 0 and by_process["trace"]["status"] == "success"


async def test_a_killed_writer_process_is_replaced_and_nothing_is_lost_or_stored_twice(writer_process):
    store = EventStore(hub=Hub())
    recorder = TraceRecorder(session=SessionKey("killed"), store=store)
    trace_id = str(recorder.trace_id)
    await recorder.emit(EventType.TRACE_STARTED, {"trace_id": trace_id, "request": "q", "metadata": {}})
    for step in range(1, 30):
        await recorder.emit(EventType.STATUS_UPDATE, {"current_step": step})
    await recorder.flush()
    first = store.elsewhere.pid
    os.kill(first, signal.SIGKILL)
    for step in range(30, 60):  # sent to the dead process, then again to the one that replaces it
        await recorder.emit(EventType.STATUS_UPDATE, {"current_step": step})
    await recorder.emit(EventType.TRACE_COMPLETED, {"trace_id": trace_id, "status": "success", "final_response": ""})
    second = store.elsewhere.pid
    await store.aclose()
    assert second is not None and second != first
    seqs = [e.seq async for e in Event.objects.filter(trace_id=recorder.trace_id).order_by("seq")]
    assert seqs == list(range(1, 62))
    trace = await Trace.objects.aget(pk=recorder.trace_id)
    assert (trace.status, trace.current_step, trace.last_seq) == ("success", 59, 61)


def _frame(message) -> bytes:
    import pickle

    body = pickle.dumps(message)
    return struct.pack("!I", len(body)) + body


async def test_a_batch_a_stopped_process_had_stored_is_answered_as_stored_not_written_again(writer_process):
    """A process that stops after its commit and before its answer: the server sends the batch
    again to the next one, which finds it stored."""
    store = EventStore(hub=Hub())
    recorder = TraceRecorder(session=SessionKey("again"), store=store)
    trace_id = str(recorder.trace_id)
    await recorder.emit(EventType.TRACE_STARTED, {"trace_id": trace_id, "request": "q", "metadata": {}})
    for step in (1, 2):
        await recorder.emit(EventType.STATUS_UPDATE, {"current_step": step})
    await recorder.flush()
    await store.aclose()
    stored = [(e.seq, e.timestamp, e.message_id, e.envelope) async for e in Event.objects.filter(trace_id=trace_id)]
    state = recorder.state
    # As the server sends it to a new process: the trace as it knew it before its answer came
    # (nothing stored), and the three events again, then a fourth.
    known = (state.key, state.trace_id, {**state.trace, "last_seq": 0}, {}, False, 0)
    again = [
        (state.key, seq, "status_update" if seq > 1 else "trace_started", ts, mid, text)
        for seq, ts, mid, text in sorted(stored)
    ]
    fourth = (state.key, 4, "status_update", stored[-1][1], f"status_update_{recorder.trace_id.hex}_4",
              stored[-1][3].replace('"seq":3', '"seq":4'))  # fmt: skip
    requests = io.BytesIO(_frame(("store", [], [known], [*again, fourth], True)))
    answers = io.BytesIO()
    await asyncio.to_thread(writer.serve, requests, answers)
    kind, stored_keys, failed = __import__("pickle").loads(answers.getvalue()[4:])
    assert (kind, stored_keys, failed) == ("stored", {state.key}, [])
    seqs = [e.seq async for e in Event.objects.filter(trace_id=trace_id).order_by("seq")]
    assert seqs == [1, 2, 3, 4]


async def test_events_after_a_gap_are_refused_by_the_writer_process(writer_process):
    """A batch sent while the one before it failed carries events after the ones not stored: the
    writer process refuses them, so a stored trace never has a hole."""
    store = EventStore(hub=Hub())
    recorder = TraceRecorder(session=SessionKey("gap"), store=store)
    trace_id = str(recorder.trace_id)
    await recorder.emit(EventType.TRACE_STARTED, {"trace_id": trace_id, "request": "q", "metadata": {}})
    await recorder.flush()
    await store.aclose()
    state = recorder.state
    stored = await Event.objects.aget(trace_id=trace_id, seq=1)
    known = (state.key, state.trace_id, state.trace, {}, True, 1)
    later = [
        (state.key, seq, "status_update", stored.timestamp, f"m{seq}", '{"data":{"current_step":1}}') for seq in (3, 4)
    ]
    answers = io.BytesIO()
    await asyncio.to_thread(writer.serve, io.BytesIO(_frame(("store", [], [known], later, False))), answers)
    kind, stored_keys, failed = __import__("pickle").loads(answers.getvalue()[4:])
    assert kind == "stored" and stored_keys == set()
    assert failed == [({state.key}, "an earlier event of this trace was not stored")]
    assert await Event.objects.filter(trace_id=trace_id).acount() == 1


def _writer_children(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        for child in (task / "children").read_text().split():
            if b"traces.writer_entry" in Path(f"/proc/{child}/cmdline").read_bytes():
                children.append(int(child))
    return children


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.usefixtures("configured_agent_db")
def test_a_server_stores_through_its_writer_process_which_ends_with_it():
    from websockets.sync.client import connect

    with daphne_server() as server:
        with connect(f"ws://{server.host}/ws/writer-process?protocol=2") as ws:
            read_until(ws, "connection_established")
            ws.send(json.dumps({"action": "start_agent", "question": "显示用户表的10条用户数据"}))
            events = read_until(ws, "trace_completed", timeout=60)
        trace = completed_trace(events[-1]["trace_id"])
        assert trace.status == "success"
        stored = list(Event.objects.filter(trace_id=trace.id).order_by("seq").values_list("seq", flat=True))
        assert stored == list(range(1, len(stored) + 1)) and len(stored) == trace.last_seq
        children = _writer_children(server.process.pid)
        assert len(children) == 1
        server.process.kill()  # kill -9: the pipe closes, and the writer process stops
        server.process.wait()
        deadline = time.monotonic() + 20
        while _alive(children[0]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(children[0])


async def test_batches_waiting_on_the_pipe_are_stored_together_and_answered_one_by_one(writer_process):
    store = EventStore(hub=Hub())
    recorders = [TraceRecorder(session=SessionKey(f"merged-{i}"), store=store) for i in range(2)]
    for recorder in recorders:
        await recorder.emit(
            EventType.TRACE_STARTED, {"trace_id": str(recorder.trace_id), "request": "q", "metadata": {}}
        )
        await recorder.flush()
    await store.aclose()
    stored = {r.state.key: await Event.objects.aget(trace_id=r.trace_id, seq=1) for r in recorders}
    messages = []
    for recorder in recorders:  # a batch each: both written to the pipe before the process reads
        state = recorder.state
        event = stored[state.key]
        known = (state.key, state.trace_id, state.trace, {}, True, 1)
        later = [
            (state.key, seq, "status_update", event.timestamp, f"m{seq}", f'{{"data":{{"current_step":{seq}}}}}')
            for seq in (2, 3)
        ]
        messages.append(_frame(("store", [], [known], later, False)))
    read, write = os.pipe()
    os.write(write, b"".join(messages))
    os.close(write)
    answers = io.BytesIO()
    with os.fdopen(read, "rb", buffering=0) as requests:
        await asyncio.to_thread(writer.serve, requests, answers)
    stream = io.BytesIO(answers.getvalue())
    first, second = writer._receive(stream), writer._receive(stream)
    assert first == ("stored", {recorders[0].state.key}, [])
    assert second == ("stored", {recorders[1].state.key}, [])
    for recorder in recorders:
        seqs = [e.seq async for e in Event.objects.filter(trace_id=recorder.trace_id).order_by("seq")]
        assert seqs == [1, 2, 3]
        assert (await Trace.objects.aget(pk=recorder.trace_id)).current_step == 3
