"""Clients of the original protocol get its event types only; ``?protocol=2`` gets every one.

The original React component shows an event type it does not know as a raw JSON card, so a
socket that asks for nothing gets, of its session's live stream, the original server's event
types with their seq as stored. Answers to extension actions are the full protocol on any socket.
"""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets
from channels.db import database_sync_to_async

from tests.live import connect, receive, receive_until, send
from tests.servers import daphne
from traces import consumers, protocol
from traces.models import Event

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("configured_agent_db")]

# What a client of the original server knows, spelled as that client spells it.
ORIGINAL_CLIENT_KNOWS = {
    "connection_established",
    "trace_started",
    "think_completed",
    "tool_completed",
    "run_error",
    "status_update",
    "run_completed",
    "trace_completed",
    "error",
    "pong",
}
EXTENSION_EVENTS = {"step_started", "think_started", "tool_started", "progress_update", "think_delta"}


class UnknownEventType(AssertionError):
    pass


def known_to_the_original_client(message: dict) -> dict:
    if message["event_type"] not in ORIGINAL_CLIENT_KNOWS:
        raise UnknownEventType(f"the original client would show a raw card for {message['event_type']}: {message}")
    return message


async def original_recv(ws, timeout: float = 30) -> dict:
    return known_to_the_original_client(json.loads(await asyncio.wait_for(ws.recv(), timeout)))


async def original_until(ws, event_type: str, timeout: float = 60) -> list[dict]:
    messages = []
    async with asyncio.timeout(timeout):
        while not messages or messages[-1]["event_type"] != event_type:
            messages.append(await original_recv(ws, timeout))
    return messages


async def ws_until(ws, event_type: str, timeout: float = 60) -> list[dict]:
    messages = []
    async with asyncio.timeout(timeout):
        while not messages or messages[-1]["event_type"] != event_type:
            messages.append(json.loads(await ws.recv()))
    return messages


async def silent(ws, seconds: float) -> bool:
    try:
        await asyncio.wait_for(ws.recv(), seconds)
    except TimeoutError:
        return True
    return False


@database_sync_to_async
def stored(trace_id: str) -> list[tuple[int, str]]:
    """(seq, event_type) of a trace's stored events."""
    return list(Event.objects.filter(trace_id=trace_id).order_by("seq").values_list("seq", "event_type"))


async def stored_original_seqs(trace_id: str) -> list[int]:
    return [seq for seq, kind in await stored(trace_id) if kind in ORIGINAL_CLIENT_KNOWS]


def slow_env(llm) -> dict:
    return {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": llm.url, "OPENAI_MAX_RETRIES": "0"}


# ---------------------------------------------------------------------------- a real daphne


async def test_an_original_client_gets_every_original_event_of_a_run_and_no_other_type():
    with daphne() as host:
        async with websockets.connect(f"ws://{host}/ws/react-client") as ws:
            hello = await original_recv(ws)
            assert hello["event_type"] == "connection_established" and hello["data"]["protocol"] == 1
            await ws.send(json.dumps({"action": "start_agent", "question": "显示用户表的10条用户数据"}))
            messages = await original_until(ws, "trace_completed")
            assert await silent(ws, 0.5)
    assert messages[0]["event_type"] == "trace_started"
    assert {"think_completed", "tool_completed", "status_update"} <= {m["event_type"] for m in messages}
    assert "Alice" in messages[-1]["data"]["final_response"]
    seqs = [m["seq"] for m in messages]
    all_stored = await stored(messages[0]["trace_id"])
    assert seqs == await stored_original_seqs(messages[0]["trace_id"])  # each original event, in order, once
    assert len(seqs) < len(all_stored)  # with gaps where the extension events were left out


async def test_an_original_client_that_reconnects_mid_run_resumes_with_original_event_types_only(slow_llm):
    with daphne(**slow_env(slow_llm)) as host:
        url = f"ws://{host}/ws/react-resume"
        async with websockets.connect(url) as ws:
            await original_recv(ws)
            await ws.send(json.dumps({"action": "start_agent", "question": "how many users?"}))
            seen = await original_until(ws, "think_completed")
        await asyncio.sleep(0.3)  # the network drops; the run goes on
        async with websockets.connect(url) as again:
            hello = await original_recv(again)
            assert hello["data"]["active_trace_id"] == seen[0]["trace_id"]
            resume = {"action": "subscribe_trace", "trace_id": seen[0]["trace_id"], "after_seq": seen[-1]["seq"]}
            await again.send(json.dumps(resume))
            seen += await original_until(again, "trace_completed")
            assert await silent(again, 1.0)  # nothing more, nothing twice
    assert seen[-1]["data"]["status"] == "success"
    assert [m["seq"] for m in seen] == await stored_original_seqs(seen[0]["trace_id"])


async def test_a_client_that_asks_for_protocol_2_gets_every_event_type_without_gaps():
    with daphne() as host:
        async with websockets.connect(f"ws://{host}/ws/full-client?protocol=2") as ws:
            hello = json.loads(await ws.recv())
            assert hello["event_type"] == "connection_established" and hello["data"]["protocol"] == 2
            await ws.send(json.dumps({"action": "start_agent", "question": "显示用户表的10条用户数据"}))
            messages = await ws_until(ws, "trace_completed")
    kinds = {m["event_type"] for m in messages}
    assert {"step_started", "think_started", "tool_started", "progress_update", "run_completed"} <= kinds
    assert [m["seq"] for m in messages] == [seq for seq, _ in await stored(messages[0]["trace_id"])]
    assert [m["seq"] for m in messages] == list(range(1, len(messages) + 1))


@pytest.mark.redis
async def test_an_original_socket_in_another_process_gets_the_original_event_types_through_the_bus(redis_url, slow_llm):
    env = {"REDIS_URL": redis_url.rsplit("/", 1)[0] + "/12", **slow_env(slow_llm)}
    with daphne(**env) as a, daphne(**env) as b:
        async with (
            websockets.connect(f"ws://{a}/ws/react-bus?protocol=2") as on_a,
            websockets.connect(f"ws://{b}/ws/react-bus") as on_b,
        ):
            await recv_hello(on_a), await original_recv(on_b)
            await on_a.send(json.dumps({"action": "start_agent", "question": "how many users?"}))
            through_a = await ws_until(on_a, "trace_completed")
            through_b = await original_until(on_b, "trace_completed")
            assert await silent(on_b, 0.5)
    assert {"think_delta", "step_started"} <= {m["event_type"] for m in through_a}
    assert [m["seq"] for m in through_b] == await stored_original_seqs(through_a[0]["trace_id"])
    # The same stored frames, each socket shown the types it asked for.
    shown = {m["message_id"]: m for m in through_a if m["event_type"] in ORIGINAL_CLIENT_KNOWS}
    assert list(shown.values()) == through_b


async def recv_hello(ws) -> dict:
    hello = json.loads(await asyncio.wait_for(ws.recv(), 30))
    assert hello["event_type"] == "connection_established"
    return hello


# ---------------------------------------------------------------------------- WebsocketCommunicator


async def opened(path: str):
    communicator = connect(path)
    connected, _ = await communicator.connect()
    assert connected
    hello = await receive(communicator)
    assert hello["event_type"] == "connection_established"
    return communicator, hello


@pytest.mark.parametrize(
    "query, version",
    [("", 1), ("?protocol=1", 1), ("?protocol=2", 2), ("?protocol=3", 2), ("?protocol=two", 1), ("?x=1&protocol=2", 2)],
)
async def test_the_hello_says_which_protocol_the_socket_gets(query, version):
    communicator, hello = await opened(f"/ws/hello{query}")
    assert hello["data"]["protocol"] == version
    await communicator.disconnect()


async def test_sockets_of_one_session_are_each_shown_the_types_they_asked_for():
    original, _ = await opened("/ws/mixed")
    full, _ = await opened("/ws/mixed?protocol=2")
    await send(original, action="start_agent", question="显示用户表的10条用户数据")
    everything = await receive_until(full, "trace_completed")
    originals = [known_to_the_original_client(m) for m in await receive_until(original, "trace_completed")]
    assert [m["seq"] for m in everything] == list(range(1, len(everything) + 1))
    assert EXTENSION_EVENTS - {"think_delta"} <= {m["event_type"] for m in everything}
    assert originals == [m for m in everything if m["event_type"] in ORIGINAL_CLIENT_KNOWS]
    assert await original.receive_nothing(0.3)
    await original.disconnect()
    await full.disconnect()


async def test_an_original_socket_reads_nothing_back_for_the_events_it_is_not_sent(monkeypatch):
    """The events it is not shown move its position on: they leave no gap to fill from the database."""
    reads = []
    real = consumers._events_after

    async def counted(*args, **kwargs):
        reads.append(args)
        return await real(*args, **kwargs)

    monkeypatch.setattr(consumers, "_events_after", counted)
    communicator, _ = await opened("/ws/no-gaps")
    await send(communicator, action="start_agent", question="显示用户表的10条用户数据")
    messages = await receive_until(communicator, "trace_completed")
    assert [m["seq"] for m in messages] == await stored_original_seqs(messages[0]["trace_id"])
    assert reads == []
    await communicator.disconnect()


async def test_an_original_client_that_reconnects_and_does_not_resume_follows_the_run_in_its_protocol(slow_llm):
    tab, _ = await opened("/ws/react-follow")
    await send(tab, action="start_agent", question="how many users?")
    first = await receive_until(tab, "think_completed")
    await tab.disconnect()
    again, hello = await opened("/ws/react-follow")
    assert hello["data"]["active_trace_id"] == first[0]["trace_id"]
    rest = [known_to_the_original_client(m) for m in await receive_until(again, "trace_completed")]
    expected = [seq for seq in await stored_original_seqs(first[0]["trace_id"]) if seq > hello["data"]["last_seq"]]
    assert [m["seq"] for m in rest] == expected
    await again.disconnect()


async def test_an_original_client_whose_resume_comes_after_the_hold_gets_each_original_event_once(
    slow_llm, monkeypatch
):
    from traces.live import delivery

    monkeypatch.setattr(delivery, "HOLD_SECONDS", 0.1)
    tab, _ = await opened("/ws/react-late")
    await send(tab, action="start_agent", question="how many users?")
    first = await receive_until(tab, "think_completed")
    trace_id = first[0]["trace_id"]
    await tab.disconnect()
    await asyncio.sleep(0.5)
    again, hello = await opened("/ws/react-late")
    live = [known_to_the_original_client(await receive(again))]  # the hold ran out: live events come unasked
    assert live[0]["seq"] > hello["data"]["last_seq"]
    await send(again, action="subscribe_trace", trace_id=trace_id, after_seq=first[-1]["seq"])
    rest = live + await receive_until(again, "trace_completed")
    while not await again.receive_nothing(0.5):  # the skipped ones can come after the end
        rest.append(await receive(again))
    seqs = [known_to_the_original_client(m)["seq"] for m in first + rest]
    assert sorted(seqs) == await stored_original_seqs(trace_id)  # every original event exactly once
    await again.disconnect()


async def test_subscribe_trace_of_another_sessions_run_answers_the_full_protocol_on_an_original_socket(slow_llm):
    worker, _ = await opened("/ws/elsewhere")
    watcher, _ = await opened("/ws/watching")
    await send(worker, action="start_agent", question="how many users?")
    started = await receive_until(worker, "trace_started")
    trace_id = started[-1]["trace_id"]
    await send(watcher, action="subscribe_trace", trace_id=trace_id, after_seq=0)
    messages = await receive_until(watcher, "trace_completed", timeout=60)
    assert {m["event_type"] for m in messages} >= EXTENSION_EVENTS
    assert [m["seq"] for m in messages] == [seq for seq, _ in await stored(trace_id)]
    # The run's own session, on an original socket, is its live stream: the original types only.
    own = [known_to_the_original_client(m) for m in started + await receive_until(worker, "trace_completed")]
    assert [m["seq"] for m in own] == await stored_original_seqs(trace_id)
    await worker.disconnect()
    await watcher.disconnect()


async def test_replay_trace_answers_the_full_protocol_on_an_original_socket():
    communicator, _ = await opened("/ws/react-replay")
    await send(communicator, action="start_agent", question="显示用户表的10条用户数据")
    live = await receive_until(communicator, "trace_completed")
    trace_id = live[0]["trace_id"]
    await send(communicator, action="replay_trace", trace_id=trace_id, speed=0)
    replayed = await receive_until(communicator, "replay_completed")
    body = replayed[1:-1]
    assert [m["seq"] for m in body] == [seq for seq, _ in await stored(trace_id)]
    assert {"step_started", "think_started", "tool_started", "progress_update"} <= {m["event_type"] for m in body}
    assert [m for m in body if m["event_type"] in ORIGINAL_CLIENT_KNOWS] == [{**m, "replay": True} for m in live]
    await communicator.disconnect()


def test_the_original_event_types_are_those_the_original_server_sent():
    assert protocol.ORIGINAL_TRACE_EVENTS | {"connection_established", "error", "pong"} == ORIGINAL_CLIENT_KNOWS
