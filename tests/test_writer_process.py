"""A server stores its events through a writer process (traces/store/sinks.py): the same rows as
a thread writes, nothing lost or stored twice when the process dies, the process ends with its
server, and a server whose writer process does not come up says so and stops."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import struct
import sys
import time
import uuid
from pathlib import Path

import pytest

from agents.events import EventType
from tests.servers import completed_trace, daphne_server, read_until
from tests.test_recorder import emit_trace
from traces.access import SessionKey
from traces.live.hub import Hub
from traces.models import Event, Run, Trace
from traces.store import writer_process
from traces.store.event_store import EventStore
from traces.store.pipe import read_frame
from traces.store.recorder import TraceRecorder
from traces.store.sinks import ProcessSink, ThreadSink, WriterProcessFailed
from traces.store.writer import Writer

pytestmark = pytest.mark.django_db(transaction=True)


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


async def _record(events: int, session: str, sink) -> uuid.UUID:
    store = EventStore(sink, hub=Hub())
    recorder = TraceRecorder(store, session=SessionKey(session))
    await emit_trace(recorder, events)
    await store.aclose()
    return recorder.trace_id


async def test_the_writer_process_stores_the_rows_a_thread_would():
    in_process = await _record(40, "by-process", ProcessSink())
    on_thread = await _record(40, "by-thread", ThreadSink())
    by_process = await asyncio.to_thread(_rows, in_process)
    by_thread = await asyncio.to_thread(_rows, on_thread)
    assert by_process["events"] == by_thread["events"] and len(by_process["events"]) == 40
    assert by_process["runs"] == by_thread["runs"]
    assert by_process["trace"] == by_thread["trace"]
    assert by_process["trace"]["total_tokens"] > 0 and by_process["trace"]["status"] == "success"


async def test_a_killed_writer_process_is_replaced_and_nothing_is_lost_or_stored_twice():
    store = EventStore(ProcessSink(), hub=Hub())
    recorder = TraceRecorder(store, session=SessionKey("killed"))
    trace_id = str(recorder.trace_id)
    await recorder.emit(EventType.TRACE_STARTED, {"trace_id": trace_id, "request": "q", "metadata": {}})
    for step in range(1, 30):
        await recorder.emit(EventType.STATUS_UPDATE, {"current_step": step})
    await recorder.flush()
    first = store.sink.pid
    os.kill(first, signal.SIGKILL)
    for step in range(30, 60):  # sent to the dead process, then again to the one that replaces it
        await recorder.emit(EventType.STATUS_UPDATE, {"current_step": step})
    await recorder.emit(EventType.TRACE_COMPLETED, {"trace_id": trace_id, "status": "success", "final_response": ""})
    second = store.sink.pid
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


def _events(trace_id, rows) -> list[tuple]:
    """Stored events as the server sends them to the writer process."""
    return [(trace_id, e.seq, e.event_type, e.timestamp, e.message_id, e.envelope) for e in rows]


def _serve(*messages) -> list:
    """The writer process's loop, on these messages; its answers."""
    answers = io.BytesIO()
    writer_process.serve(io.BytesIO(b"".join(_frame(m) for m in messages)), answers, Writer(retry_delays=()))
    stream = io.BytesIO(answers.getvalue())
    found = []
    while stream.tell() < len(answers.getvalue()):
        found.append(read_frame(stream))
    return found


async def test_a_batch_a_stopped_process_had_stored_is_answered_as_stored_not_written_again():
    """A process that stops after its commit and before its answer: the server sends the batch
    again to the next one, which finds it stored."""
    store = EventStore(hub=Hub())
    recorder = TraceRecorder(store, session=SessionKey("again"))
    trace_id = recorder.trace_id
    await recorder.emit(EventType.TRACE_STARTED, {"trace_id": str(trace_id), "request": "q", "metadata": {}})
    for step in (1, 2):
        await recorder.emit(EventType.STATUS_UPDATE, {"current_step": step})
    await recorder.flush()
    await store.aclose()
    stored = [e async for e in Event.objects.filter(trace_id=trace_id).order_by("seq")]
    again = _events(trace_id, stored)
    fourth = (trace_id, 4, "status_update", stored[-1].timestamp, f"status_update_{trace_id.hex}_4",
              stored[-1].envelope.replace('"seq":3', '"seq":4'))  # fmt: skip
    # As the server sends it to a new process: the three events again, then a fourth.
    answers = await asyncio.to_thread(_serve, ("store", [*again, fourth], {trace_id: {}}, True))
    assert answers == [("stored", {trace_id}, {})]
    seqs = [e.seq async for e in Event.objects.filter(trace_id=trace_id).order_by("seq")]
    assert seqs == [1, 2, 3, 4]
    assert (await Trace.objects.aget(pk=trace_id)).current_step == 2


async def test_events_after_a_gap_are_refused_by_the_writer_process():
    """A batch sent while the one before it failed carries events after the ones not stored: the
    writer process refuses them, so a stored trace never has a hole."""
    store = EventStore(hub=Hub())
    recorder = TraceRecorder(store, session=SessionKey("gap"))
    trace_id = recorder.trace_id
    await recorder.emit(EventType.TRACE_STARTED, {"trace_id": str(trace_id), "request": "q", "metadata": {}})
    await recorder.flush()
    await store.aclose()
    stored = await Event.objects.aget(trace_id=trace_id, seq=1)
    later = [
        (trace_id, seq, "status_update", stored.timestamp, f"m{seq}", '{"data":{"current_step":1}}') for seq in (3, 4)
    ]
    [(kind, stored_traces, failed)] = await asyncio.to_thread(_serve, ("store", later, {}, False))
    assert kind == "stored" and stored_traces == set()
    assert failed[trace_id][0] == "refused" and "an earlier event of this trace was not stored" in failed[trace_id][1]
    assert await Event.objects.filter(trace_id=trace_id).acount() == 1


def _writer_children(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        for child in (task / "children").read_text().split():
            if b"traces.store.writer_process" in Path(f"/proc/{child}/cmdline").read_bytes():
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


async def test_batches_waiting_on_the_pipe_are_stored_together_and_answered_one_by_one():
    store = EventStore(hub=Hub())
    recorders = [TraceRecorder(store, session=SessionKey(f"merged-{i}")) for i in range(2)]
    for recorder in recorders:
        await recorder.emit(
            EventType.TRACE_STARTED, {"trace_id": str(recorder.trace_id), "request": "q", "metadata": {}}
        )
        await recorder.flush()
    await store.aclose()
    messages = []
    for recorder in recorders:  # a batch each: both written to the pipe before the process reads
        event = await Event.objects.aget(trace_id=recorder.trace_id, seq=1)
        later = [
            (
                recorder.trace_id,
                seq,
                "status_update",
                event.timestamp,
                f"m{seq}",
                f'{{"data":{{"current_step":{seq}}}}}',
            )
            for seq in (2, 3)
        ]
        messages.append(_frame(("store", later, {}, False)))
    read, write = os.pipe()
    os.write(write, b"".join(messages))
    os.close(write)
    answers = io.BytesIO()
    with os.fdopen(read, "rb", buffering=0) as requests:
        await asyncio.to_thread(writer_process.serve, requests, answers, Writer())
    stream = io.BytesIO(answers.getvalue())
    first, second = read_frame(stream), read_frame(stream)
    assert first == ("stored", {recorders[0].trace_id}, {})
    assert second == ("stored", {recorders[1].trace_id}, {})
    for recorder in recorders:
        seqs = [e.seq async for e in Event.objects.filter(trace_id=recorder.trace_id).order_by("seq")]
        assert seqs == [1, 2, 3]
        assert (await Trace.objects.aget(pk=recorder.trace_id)).current_step == 3


async def test_a_writer_process_that_does_not_come_up_is_a_clear_error():
    exits = ProcessSink(command=[sys.executable, "-c", "import sys; sys.exit(3)"])
    with pytest.raises(WriterProcessFailed, match="did not start: it exited with code 3"):
        await exits.start()
    silent = ProcessSink(ready_seconds=0.5, command=[sys.executable, "-c", "import time; time.sleep(30)"])
    with pytest.raises(WriterProcessFailed, match=r"did not start: no answer within 0\.5 s"):
        await silent.start()
    assert silent.process is None


@pytest.mark.usefixtures("configured_agent_db")
@pytest.mark.parametrize("server", ["daphne", "uvicorn"])
def test_a_server_whose_writer_process_does_not_come_up_stops_and_says_why(server):
    import subprocess

    from tests.servers import ROOT, database_url, free_port

    port = free_port()
    command = {
        "daphne": ["daphne", "-b", "127.0.0.1", "-p", str(port)],
        "uvicorn": ["uvicorn", "--host", "127.0.0.1", "--port", str(port), "--lifespan", "on"],
    }[server]
    env = {**os.environ, "TRACESITE_ENV_FILE": "", "DATABASE_URL": database_url(), "TRACE_WRITER_PROCESS": "true",
           "TRACE_WRITER_START_SECONDS": "0.01"}  # fmt: skip
    finished = subprocess.run(
        [sys.executable, "-m", *command, "tracesite.asgi:application"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert finished.returncode == 3, finished.stdout + finished.stderr
    assert "tracesite cannot start" in finished.stderr and "did not start: no answer within 0.01 s" in finished.stderr


async def test_a_writer_process_that_dies_while_idle_is_replaced_with_the_next_batch():
    store = EventStore(ProcessSink(), hub=Hub())
    recorder = TraceRecorder(store, session=SessionKey("idle-death"))
    trace_id = str(recorder.trace_id)
    await recorder.emit(EventType.TRACE_STARTED, {"trace_id": trace_id, "request": "q", "metadata": {}})
    await recorder.flush()
    first = store.sink.pid
    os.kill(first, signal.SIGKILL)  # nothing on its way
    for _ in range(100):
        if store.sink.pid is None:
            break
        await asyncio.sleep(0.05)
    await recorder.emit(EventType.TRACE_COMPLETED, {"trace_id": trace_id, "status": "success", "final_response": ""})
    assert store.sink.pid not in (None, first)
    await store.aclose()
    assert (await Trace.objects.aget(pk=recorder.trace_id)).status == "success"
