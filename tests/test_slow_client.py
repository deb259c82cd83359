"""A client that stops reading: dropped instead of buffered without bound; it resumes by seq."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
import websockets
from channels.db import database_sync_to_async
from django.utils import timezone

from agents.events import EventType
from tests.servers import daphne, http_get
from traces import protocol
from traces.models import Event, Trace

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("configured_agent_db")]

EVENTS = 1500
PADDING = "x" * 8000  # ~8 KB per event: 12 MB in all, far more than the kernel's socket buffers


@database_sync_to_async
def big_trace() -> Trace:
    trace = Trace.objects.create(
        name="big",
        agent_name="sql_agent",
        request="big",
        status=Trace.Status.SUCCESS,
        started_at=timezone.now(),
        last_seq=EVENTS,
    )
    rows = []
    for seq in range(1, EVENTS + 1):
        kind = EventType.STATUS_UPDATE
        message = protocol.envelope(
            kind, {"current_step": seq, "message": PADDING}, session_id="s", trace_id=trace.pk, seq=seq
        )
        rows.append(
            Event(
                trace=trace,
                seq=seq,
                event_type=kind,
                timestamp=trace.started_at,
                message_id=message["message_id"],
                envelope=protocol.dumps(message),
            )
        )
    Event.objects.bulk_create(rows, batch_size=500)
    return trace


def small_buffer_socket(host: str) -> socket.socket:
    address, port = host.split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((address, int(port)))
    return sock


async def test_a_client_that_stops_reading_is_dropped_and_resumes_from_its_last_seq():
    trace = await big_trace()
    with daphne(TRACE_SEND_BUFFER_BYTES="65536", TRACE_SLOW_CLIENT_SECONDS="1", LOG_LEVEL="WARNING") as host:
        url = f"ws://{host}/ws/slow"
        # max_queue=1: the client library stops reading the socket once one message waits.
        slow = await websockets.connect(
            url, sock=small_buffer_socket(host), max_queue=1, max_size=None, compression=None
        )
        await slow.recv()
        await slow.send(json.dumps({"action": "subscribe_trace", "trace_id": str(trace.pk), "after_seq": 0}))

        # Meanwhile another session is served normally.
        async with websockets.connect(f"ws://{host}/ws/other") as other:
            await other.recv()
            await other.send(json.dumps({"action": "ping", "client_time": 1}))
            assert json.loads(await asyncio.wait_for(other.recv(), 30))["event_type"] == "pong"

        # It stays away longer than TRACE_SLOW_CLIENT_SECONDS, so the server drops it...
        await asyncio.sleep(3)
        status, body = await asyncio.to_thread(http_get, f"http://{host}/metrics")
        assert status == 200 and 'reason="slow_client"} 1.0' in body.decode()
        # ...and it reads whatever reached it before the connection was cut, then finds it closed.
        seqs = []
        with pytest.raises(websockets.ConnectionClosed):
            async with asyncio.timeout(60):
                while True:
                    message = json.loads(await slow.recv())
                    seqs.append(message["seq"])
        assert seqs == list(range(1, len(seqs) + 1))
        assert len(seqs) < EVENTS

        # On return it resumes after the last seq it has, and gets each remaining event exactly once.
        async with websockets.connect(url, max_size=None) as back:
            await back.recv()
            await back.send(
                json.dumps({"action": "subscribe_trace", "trace_id": str(trace.pk), "after_seq": len(seqs)})
            )
            async with asyncio.timeout(60):
                while len(seqs) < EVENTS:
                    seqs.append(json.loads(await back.recv())["seq"])
        assert seqs == list(range(1, EVENTS + 1))


async def test_a_fast_reader_is_not_dropped_by_a_large_backfill():
    trace = await big_trace()
    with daphne(TRACE_SEND_BUFFER_BYTES="65536", TRACE_SLOW_CLIENT_SECONDS="5") as host:
        async with websockets.connect(f"ws://{host}/ws/fast", max_size=None) as ws:
            await ws.recv()
            await ws.send(json.dumps({"action": "replay_trace", "trace_id": str(trace.pk), "speed": 0}))
            kinds = []
            async with asyncio.timeout(60):
                while not kinds or kinds[-1] != "replay_completed":
                    kinds.append(json.loads(await ws.recv())["event_type"])
        assert kinds.count("status_update") == EVENTS


async def test_a_client_that_closes_mid_burst_is_let_go_at_once_and_reconnects():
    """The socket closes while a burst of stored events is being written to it. The server lets it go
    at once (its socket is counted closed, its TCP connection ends); a client that reads on while
    it closes, as a browser does, completes its close handshake at once and resumes straight away.

    (A Python ``websockets`` client with its default ``max_queue`` stops reading 16 messages ahead
    and so cannot see the server's close frame behind the data it has not read: its close waits
    for its own 10 s timeout. That was the "reconnect slowdown" of the benchmark's clients.)
    """
    trace = await big_trace()
    with daphne() as host:
        url = f"ws://{host}/ws/closing"
        async with websockets.connect(url, max_size=None, max_queue=None) as ws:
            json.loads(await ws.recv())
            await ws.send(json.dumps({"action": "subscribe_trace", "trace_id": str(trace.pk), "after_seq": 0}))
            for _ in range(20):
                await ws.recv()  # the burst is under way: 1,480 more events are being written
            started = asyncio.get_running_loop().time()
            await ws.close()
            closing = asyncio.get_running_loop().time() - started
        assert closing < 2.0, f"the close handshake took {closing:.1f} s"
        for _ in range(20):
            if json.loads(http_get(f"http://{host}/health")[1])["active_connections"] == 0:
                break
            await asyncio.sleep(0.1)
        assert json.loads(http_get(f"http://{host}/health")[1])["active_connections"] == 0

        async with websockets.connect(url, max_size=None) as ws:  # a client that stops reading, then closes
            json.loads(await ws.recv())
            await ws.send(json.dumps({"action": "subscribe_trace", "trace_id": str(trace.pk), "after_seq": 0}))
            await ws.recv()
            await asyncio.sleep(0.5)  # its queue fills; it reads no more
            closing = asyncio.create_task(ws.close())
            for _ in range(20):  # the server has let it go long before the client's own timeout
                if json.loads(http_get(f"http://{host}/health")[1])["active_connections"] == 0:
                    break
                await asyncio.sleep(0.1)
            assert json.loads(http_get(f"http://{host}/health")[1])["active_connections"] == 0
            await closing

        started = asyncio.get_running_loop().time()
        async with websockets.connect(url, max_size=None, max_queue=None) as ws:
            json.loads(await ws.recv())
            await ws.send(json.dumps({"action": "subscribe_trace", "trace_id": str(trace.pk), "after_seq": 1400}))
            resumed = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(EVENTS - 1400)]
        assert [m["seq"] for m in resumed] == list(range(1401, EVENTS + 1))
        assert asyncio.get_running_loop().time() - started < 5


async def test_a_replay_to_a_client_that_does_not_read_holds_a_chunk_and_the_byte_limit(settings):
    """A replay reads its trace a chunk at a time and queues events only as fast as the client
    takes them: for a client that does not read, the server has read about two chunks of rows (a
    first of 100 events, then one of the send buffer's worth) and holds at most
    TRACE_SEND_BUFFER_BYTES of replayed events (plus one), not the trace."""
    from traces.consumers import _events_after
    from traces.live.delivery import Outbox
    from traces.live.replay import replay

    settings.TRACE_SEND_BUFFER_BYTES = 64 * 1024
    trace = await big_trace()
    read = []

    async def reader(trace_id, after, up_to, limit):
        rows = await _events_after(trace_id, after, up_to, limit)
        read.extend(rows)
        return rows

    never = asyncio.Event()

    async def send(text: str) -> None:  # a client that does not read: a send that never completes
        await never.wait()

    outbox = Outbox(send, reader, "stuck")
    outbox.start("hello")
    replaying = asyncio.create_task(replay(outbox, reader, trace.pk, 0, EVENTS))
    await asyncio.sleep(1)
    largest = max(len(text) for *_, text in read)
    assert not replaying.done()
    assert outbox.replay_bytes <= settings.TRACE_SEND_BUFFER_BYTES + largest
    assert len(read) <= EVENTS // 5  # a chunk or two, not the trace
    replaying.cancel()
    await outbox.aclose()
