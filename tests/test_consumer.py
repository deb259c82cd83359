"""The live WebSocket, through the real ASGI stack with WebsocketCommunicator."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from channels.db import database_sync_to_async

from agents.events import EventType
from tests.live import connect, receive, receive_until, send
from traces import protocol
from traces.access import SessionKey
from traces.models import ApiToken, Event, Trace
from traces.protocol import CloseCode

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("configured_agent_db")]

ORIGINAL_EVENTS = {"trace_started", "think_completed", "tool_completed", "status_update", "trace_completed"}


async def opened(path: str = "/ws/session_xyz789", headers=None):
    communicator = connect(path, headers)
    connected, _ = await communicator.connect()
    assert connected
    hello = await receive(communicator)
    assert hello["event_type"] == "connection_established"
    return communicator, hello


async def test_it_plays_the_original_client_flow():
    """Exactly what the original guide's JavaScript client does."""
    communicator, hello = await opened()
    assert hello["data"]["status"] == "connected" and hello["data"]["session_id"] == "session_xyz789"
    assert hello["session_id"] == "session_xyz789" and hello["message_id"]
    await send(communicator, action="start_agent", question="显示用户表的10条用户数据")
    messages = await receive_until(communicator, "trace_completed")
    kinds = [m["event_type"] for m in messages]
    assert set(kinds) >= ORIGINAL_EVENTS
    assert kinds[0] == "trace_started"
    started = messages[0]["data"]
    assert started["trace_name"] == "sql_agent_execution" and started["request"] == "显示用户表的10条用户数据"
    think = next(m for m in messages if m["event_type"] == "think_completed")["data"]
    assert {
        "run_id",
        "trace_id",
        "parent_run_id",
        "name",
        "run_type",
        "status",
        "start_time",
        "end_time",
        "duration_ms",
        "inputs",
        "outputs",
        "error",
        "error_type",
        "metadata",
    } <= think.keys()
    tool = next(m for m in messages if m["event_type"] == "tool_completed" and m["data"]["name"] == "run_sql")["data"]
    assert "Alice" in tool["outputs"]["output"]
    done = messages[-1]["data"]
    assert done["status"] == "success" and "Alice" in done["final_response"]
    seqs = [m["seq"] for m in messages]
    assert seqs == sorted(set(seqs))  # in order, once; gaps where extension events were left out
    assert set(kinds) <= protocol.ORIGINAL_TRACE_EVENTS
    await communicator.disconnect()


async def test_it_refuses_an_invalid_session_id():
    communicator = connect("/ws/bad%20id!")
    await communicator.connect()
    assert (await communicator.receive_output())["code"] == CloseCode.INVALID_SESSION


@pytest.mark.parametrize(
    "frame, detail",
    [
        ("not json", "not valid JSON"),
        ("[1,2,3]", "JSON object"),
        ('{"action": "fly"}', "unknown action"),
        ('{"action": "start_agent"}', "'question' is required"),
        ('{"action": "start_agent", "question": ""}', "must not be empty"),
        (json.dumps({"action": "start_agent", "question": "x" * 4001}), "longer than 4000"),
        (json.dumps({"action": "ping", "pad": "x" * 70000}), "larger than"),
        ('{"action": "subscribe_trace", "trace_id": "nope"}', "not a valid trace id"),
    ],
)
async def test_it_answers_bad_input_with_an_error_and_stays_open(frame, detail):
    communicator, _ = await opened("/ws/bad-input")
    await communicator.send_to(text_data=frame)
    error = await receive(communicator)
    assert error["event_type"] == "error" and error["data"]["error"] == "Invalid message format"
    assert detail in error["data"]["detail"]
    await send(communicator, action="ping", client_time=42)
    assert (await receive(communicator))["data"]["client_time"] == 42
    await communicator.disconnect()


async def test_it_answers_binary_garbage_with_an_error():
    communicator, _ = await opened("/ws/binary")
    await communicator.send_to(bytes_data=b"\xff\x00\xfe")
    assert (await receive(communicator))["data"]["error"] == "Invalid message format"
    await communicator.disconnect()


async def test_it_refuses_unknown_traces():
    communicator, _ = await opened("/ws/unknown")
    for action in ("subscribe_trace", "replay_trace"):
        await send(communicator, action=action, trace_id=str(uuid.uuid4()))
        error = await receive(communicator)
        assert error["event_type"] == "error" and error["data"]["error"] == "not_found"
    await send(communicator, action="cancel_agent")
    assert (await receive(communicator))["data"]["error"] == "not_found"
    await communicator.disconnect()


async def test_it_rate_limits_and_closes_a_flood(settings):
    settings.TRACE_RATE_LIMIT = 5
    communicator, _ = await opened("/ws/flood")
    for _ in range(40):
        await send(communicator, action="ping")
    replies = []
    while True:
        output = await communicator.receive_output(timeout=5)
        if output["type"] == "websocket.close":
            assert output["code"] == CloseCode.FLOODING
            break
        replies.append(json.loads(output["text"]))
    assert sum(r["event_type"] == "pong" for r in replies) == 5
    assert {r["data"]["error"] for r in replies if r["event_type"] == "error"} == {"rate_limited"}


async def test_it_allows_one_running_agent_per_session():
    communicator, _ = await opened("/ws/busy")
    await send(communicator, action="start_agent", question="how many users?")
    await send(communicator, action="start_agent", question="how many orders?")
    messages = await receive_until(communicator, "trace_completed")
    errors = [m for m in messages if m["event_type"] == "error"]
    assert [e["data"]["error"] for e in errors] == ["agent_busy"]
    assert await Trace.objects.acount() == 1
    await communicator.disconnect()


async def test_a_question_right_after_trace_completed_is_not_refused_as_busy(monkeypatch):
    """The client may see trace_completed before the finished run has tidied up (here: slowly)."""
    from traces.live import sessions

    real_run_trace = sessions.run_trace

    async def slow_to_tidy_up(*args, **kwargs):
        result = await real_run_trace(*args, **kwargs)
        await asyncio.sleep(0.3)
        return result

    monkeypatch.setattr(sessions, "run_trace", slow_to_tidy_up)
    communicator, _ = await opened("/ws/back-to-back")
    for question in (
        "how many users?",
        "how many orders?",
        "top 5 products by price",
        "how many users?",
        "how many orders?",
    ):
        await send(communicator, action="start_agent", question=question)
        messages = await receive_until(communicator, "trace_completed")
        assert not [m for m in messages if m["event_type"] == "error"], messages
    assert await Trace.objects.acount() == 5
    await communicator.disconnect()


async def test_a_run_beyond_the_limit_waits_its_turn_and_says_so(settings, slow_llm):
    settings.TRACE_MAX_CONCURRENT_RUNS = 1
    first, _ = await opened("/ws/limit-a?protocol=2")
    second, _ = await opened("/ws/limit-b?protocol=2")
    await send(first, action="start_agent", question="how many users?")
    await receive_until(first, "think_delta")  # running, for seconds
    await send(second, action="start_agent", question="how many orders?")
    queued = await receive_until(second, "status_update")
    assert queued[-1]["data"]["agent_state"] == "IDLE" and queued[-1]["data"]["message"].startswith("Queued: next")
    assert not [m for m in queued if m["event_type"] == "error"]
    assert await second.receive_nothing(0.5)  # it waits: no step starts while the first one runs
    await send(first, action="cancel_agent")
    await receive_until(first, "trace_completed")
    rest = await receive_until(second, "trace_completed", timeout=60)  # its turn came
    assert next(m["data"]["agent_state"] for m in rest if m["event_type"] == "status_update") == "RUNNING"
    assert rest[-1]["data"]["status"] == "success"
    await first.disconnect()
    await second.disconnect()


async def test_queued_runs_move_up_and_a_full_queue_refuses_with_a_retry_hint(settings, slow_llm):
    settings.TRACE_MAX_CONCURRENT_RUNS = 1
    settings.TRACE_MAX_QUEUED_RUNS = 2
    sockets = [(await opened(f"/ws/queue-{i}?protocol=2"))[0] for i in range(4)]
    await send(sockets[0], action="start_agent", question="how many users?")
    await receive_until(sockets[0], "think_delta")
    for socket in sockets[1:3]:
        await send(socket, action="start_agent", question="how many users?")
        await receive_until(socket, "status_update")
    await send(sockets[3], action="start_agent", question="how many users?")
    refused = (await receive_until(sockets[3], "error"))[-1]["data"]
    assert refused["error"] == "server_busy" and refused["retry_after"] > 0
    await send(sockets[0], action="cancel_agent")  # the first ends: the second starts, the third moves up
    moved = await receive_until(
        sockets[2], "status_update", message="Queued: next to start; the server runs 1 agents at a time"
    )
    assert moved[-1]["data"]["agent_state"] == "IDLE"
    for socket in sockets[1:3]:
        await send(socket, action="cancel_agent")
    for socket in sockets:
        await socket.disconnect()


async def test_it_shares_a_session_between_tabs_and_reports_the_active_trace():
    tab1, _ = await opened("/ws/two-tabs")
    tab2, _ = await opened("/ws/two-tabs")
    await send(tab1, action="start_agent", question="显示用户表的10条用户数据")
    one = await receive_until(tab1, "trace_completed")
    two = await receive_until(tab2, "trace_completed")
    assert [m["seq"] for m in one] == [m["seq"] for m in two]
    await tab1.disconnect()
    await tab2.disconnect()


async def test_a_run_outlives_its_socket_and_a_reconnect_resumes_losslessly(slow_llm):
    tab, _ = await opened("/ws/resume?protocol=2")
    await send(tab, action="start_agent", question="显示用户表的10条用户数据")
    first = await receive_until(tab, "think_completed")
    trace_id = first[0]["trace_id"]
    await tab.disconnect()  # the browser closes mid-run
    await asyncio.sleep(0.5)  # the run goes on without it

    again, hello = await opened("/ws/resume?protocol=2")
    assert hello["data"]["active_trace_id"] == trace_id
    assert hello["data"]["last_seq"] > first[-1]["seq"]
    await asyncio.sleep(0.3)  # live events arrive before the client asks to resume: they are held
    await send(again, action="subscribe_trace", trace_id=trace_id, after_seq=first[-1]["seq"])
    rest = await receive_until(again, "trace_completed")
    seqs = [m["seq"] for m in first] + [m["seq"] for m in rest]
    assert seqs == list(range(1, len(seqs) + 1))  # every seq exactly once, in order
    trace = await Trace.objects.aget(pk=trace_id)
    assert trace.status == "success" and trace.last_seq == seqs[-1]
    await again.disconnect()


async def test_a_resume_that_comes_after_the_hold_still_gets_every_event_once(slow_llm, monkeypatch):
    """On a busy server the client's subscribe_trace can come after the hold ran out and live
    events were sent: the events in between come then, so no seq is missing or sent twice."""
    from traces.live import delivery

    monkeypatch.setattr(delivery, "HOLD_SECONDS", 0.1)
    tab, _ = await opened("/ws/late-resume?protocol=2")
    await send(tab, action="start_agent", question="显示用户表的10条用户数据")
    first = await receive_until(tab, "think_completed")
    trace_id = first[0]["trace_id"]
    await tab.disconnect()
    await asyncio.sleep(0.5)
    again, hello = await opened("/ws/late-resume?protocol=2")
    skipped_up_to = hello["data"]["last_seq"]
    assert skipped_up_to > first[-1]["seq"]
    live = [await receive(again)]  # the hold ran out: live events after last_seq come unasked
    assert live[0]["seq"] == skipped_up_to + 1
    await send(again, action="subscribe_trace", trace_id=trace_id, after_seq=first[-1]["seq"])
    rest = live + await receive_until(again, "trace_completed")
    seqs = [m["seq"] for m in first + rest]
    assert sorted(seqs) == list(range(1, seqs[-1] + 1))  # every seq exactly once
    late = [m["seq"] for m in rest if m["seq"] <= skipped_up_to]
    assert late == list(range(first[-1]["seq"] + 1, skipped_up_to + 1))  # the skipped ones, in order
    await again.disconnect()


async def test_a_reconnecting_client_that_does_not_resume_still_follows_the_run(slow_llm):
    tab, _ = await opened("/ws/follow?protocol=2")
    await send(tab, action="start_agent", question="how many users?")
    await receive_until(tab, "think_completed")
    await tab.disconnect()
    again, hello = await opened("/ws/follow?protocol=2")
    assert hello["data"]["active_trace_id"]
    rest = await receive_until(again, "trace_completed")
    seqs = [m["seq"] for m in rest]
    assert seqs == list(range(hello["data"]["last_seq"] + 1, seqs[-1] + 1))
    await again.disconnect()


async def test_it_cancels_a_run(slow_llm):
    communicator, _ = await opened("/ws/cancel?protocol=2")
    await send(communicator, action="start_agent", question="显示用户表的10条用户数据")
    await receive_until(communicator, "think_delta")
    await send(communicator, action="cancel_agent")
    messages = await receive_until(communicator, "trace_completed")
    assert messages[-1]["data"]["status"] == "cancelled"
    statuses = [m["data"]["agent_state"] for m in messages if m["event_type"] == "status_update"]
    assert statuses[-1] == "CANCELLED"
    assert (await Trace.objects.aget(pk=messages[-1]["trace_id"])).status == "cancelled"
    # The session is free again.
    await send(communicator, action="start_agent", question="how many users?")
    assert (await receive_until(communicator, "trace_started"))[-1]["data"]["request"] == "how many users?"
    await send(communicator, action="cancel_agent")
    await receive_until(communicator, "trace_completed")
    await communicator.disconnect()


async def test_it_replays_at_the_original_timing(slow_llm):
    communicator, _ = await opened("/ws/replay-timing")
    await send(communicator, action="start_agent", question="how many users?")
    live = await receive_until(communicator, "trace_completed")
    trace_id = live[0]["trace_id"]
    span = await database_sync_to_async(
        lambda: list(Event.objects.filter(trace_id=trace_id).order_by("seq").values_list("timestamp", flat=True))
    )()
    original = (span[-1] - span[0]).total_seconds()
    for speed, expected in ((1, original), (4, original / 4)):
        started = asyncio.get_running_loop().time()
        await send(communicator, action="replay_trace", trace_id=trace_id, speed=speed)
        await receive_until(communicator, "replay_completed", timeout=60)
        took = asyncio.get_running_loop().time() - started
        assert expected * 0.9 - 0.05 <= took <= expected * 1.5 + 0.5, (speed, took, expected)
    await communicator.disconnect()


async def test_a_replay_can_be_cancelled(slow_llm):
    communicator, _ = await opened("/ws/replay-cancel")
    await send(communicator, action="start_agent", question="how many users?")
    live = await receive_until(communicator, "trace_completed")
    trace_id = live[0]["trace_id"]
    await send(communicator, action="replay_trace", trace_id=trace_id, speed=1)
    await receive_until(communicator, "replay_started")
    await send(communicator, action="unsubscribe_trace", trace_id=trace_id)
    await asyncio.sleep(0.2)
    while not await communicator.receive_nothing(0.3):
        message = await receive(communicator)
        assert message["event_type"] != "replay_completed"
    await communicator.disconnect()


async def test_it_replays_a_stored_trace_as_fast_as_possible():
    communicator, _ = await opened("/ws/replay?protocol=2")
    await send(communicator, action="start_agent", question="how many users?")
    live = await receive_until(communicator, "trace_completed")
    trace_id = live[0]["trace_id"]
    await send(communicator, action="replay_trace", trace_id=trace_id, speed=0)
    replayed = await receive_until(communicator, "replay_completed")
    assert replayed[0]["event_type"] == "replay_started" and replayed[0]["data"]["events"] == len(live)
    body = replayed[1:-1]
    assert all(m["replay"] is True for m in body)
    assert [(m["message_id"], m["seq"], m["data"]) for m in body] == [
        (m["message_id"], m["seq"], m["data"]) for m in live
    ]
    await communicator.disconnect()


async def test_it_streams_every_trace_start_and_end_with_subscribe_all():
    watcher, _ = await opened("/ws/watcher")
    await send(watcher, action="subscribe_all")
    await asyncio.sleep(0.05)
    worker, _ = await opened("/ws/worker")
    await send(worker, action="start_agent", question="how many users?")
    feed = await receive_until(watcher, "trace_completed")
    assert [m["event_type"] for m in feed] == ["trace_started", "trace_completed"]
    await watcher.disconnect()
    await worker.disconnect()


async def test_it_answers_ping_with_pong():
    communicator, _ = await opened("/ws/ping")
    await send(communicator, action="ping", client_time="2025-09-24T12:00:00.000Z")
    pong = await receive(communicator)
    assert pong["event_type"] == "pong" and pong["data"]["client_time"] == "2025-09-24T12:00:00.000Z"
    assert "seq" not in pong
    await communicator.disconnect()


async def test_it_requires_a_login_or_token_when_auth_is_on(settings, django_user_model):
    settings.TRACE_REQUIRE_AUTH = True
    communicator = connect("/ws/private")
    await communicator.connect()
    assert (await communicator.receive_output())["code"] == CloseCode.UNAUTHORIZED

    user = await database_sync_to_async(django_user_model.objects.create_user)("erin")
    token, key = await database_sync_to_async(ApiToken.issue)(user, "tests")
    communicator = connect(f"/ws/private?token={key}")
    connected, _ = await communicator.connect()
    assert connected
    hello = await receive(communicator)
    assert hello["data"]["user"] == "erin"
    await communicator.disconnect()

    await database_sync_to_async(ApiToken.objects.filter(pk=token.pk).update)(revoked_at="2025-01-01T00:00:00Z")
    communicator = connect(f"/ws/private?token={key}")
    await communicator.connect()
    assert (await communicator.receive_output())["code"] == CloseCode.UNAUTHORIZED


async def test_a_user_cannot_follow_someone_elses_trace(settings, django_user_model):
    settings.TRACE_REQUIRE_AUTH = True
    owner = await database_sync_to_async(django_user_model.objects.create_user)("owner")
    other = await database_sync_to_async(django_user_model.objects.create_user)("other")
    _, owner_key = await database_sync_to_async(ApiToken.issue)(owner, "t")
    _, other_key = await database_sync_to_async(ApiToken.issue)(other, "t")
    mine, _ = await opened(f"/ws/shared-name?token={owner_key}")
    await send(mine, action="start_agent", question="how many users?")
    messages = await receive_until(mine, "trace_completed")
    theirs, hello = await opened(f"/ws/shared-name?token={other_key}")
    assert hello["data"]["active_trace_id"] is None  # same session id, another user: another session
    await send(theirs, action="subscribe_trace", trace_id=messages[0]["trace_id"])
    refusal = (await receive(theirs))["data"]
    unknown = str(uuid.uuid4())
    await send(theirs, action="replay_trace", trace_id=unknown)
    # Not found, as a trace that does not exist: the answer does not say whether it does.
    assert refusal == {**(await receive(theirs))["data"], "detail": f"no trace {messages[0]['trace_id']}"}
    assert refusal["error"] == "not_found"
    assert await theirs.receive_nothing(0.2)
    await mine.disconnect()
    await theirs.disconnect()


async def opens(origin: str | None, host: str = "localhost:8000", **extra: str) -> bool:
    headers = [(b"host", host.encode())] + ([(b"origin", origin.encode())] if origin is not None else [])
    headers += [(name.encode(), value.encode()) for name, value in extra.items()]
    communicator = connect("/ws/origin", headers=headers)
    connected, _ = await communicator.connect()
    if connected:
        await communicator.disconnect()
    return connected


async def test_a_browser_socket_must_come_from_the_same_scheme_host_and_port_or_a_configured_origin(settings):
    settings.ALLOWED_HOSTS = ["localhost", "traces.example.com"]
    settings.TRACE_ALLOWED_ORIGINS = ["http://localhost:3000"]
    assert await opens("http://localhost:8000")  # the page this server served
    assert await opens(None)  # not a browser page: on to authentication
    assert not await opens("http://evil.example.com")
    assert not await opens("http://localhost:9999")  # another port of the same host: another origin
    assert not await opens("https://localhost:8000")  # another scheme
    assert not await opens("null")
    assert await opens("http://localhost:3000") and not await opens("http://localhost:3001")
    assert not await opens("http://evil.example.com", host="evil.example.com")  # a host not served
    assert not await opens("https://traces.example.com", host="traces.example.com")  # plain ws
    # Behind a TLS proxy, the scheme it forwarded: tests/test_proxies.py.
    settings.CSRF_TRUSTED_ORIGINS = ["https://*.example.com"]
    assert await opens("https://app.example.com", host="traces.example.com")


async def test_every_event_a_client_saw_is_stored():
    communicator, _ = await opened("/ws/stored?protocol=2")
    await send(communicator, action="start_agent", question="top 5 products by price")
    messages = await receive_until(communicator, "trace_completed")
    stored = {e.message_id async for e in Event.objects.filter(trace_id=messages[0]["trace_id"])}
    assert {m["message_id"] for m in messages} == stored
    await communicator.disconnect()


async def test_events_this_process_never_heard_of_still_arrive(monkeypatch):
    """A batch another process stored can be lost on its way here (a Redis blip): a quiet,
    unfinished trace is caught up from the database."""
    from traces.live import delivery
    from traces.live.hub import Hub
    from traces.runtime import get_runtime
    from traces.store.event_store import EventStore
    from traces.store.recorder import TraceRecorder

    monkeypatch.setattr(delivery, "CATCH_UP_SECONDS", 0.2)
    communicator, _ = await opened("/ws/dropped")
    recorder = TraceRecorder(get_runtime().store, session=SessionKey("dropped"))
    await recorder.emit(EventType.TRACE_STARTED, {"trace_id": str(recorder.trace_id), "request": "q", "metadata": {}})
    await recorder.flush()
    assert (await receive(communicator))["seq"] == 1
    # The rest is stored but never delivered here, as if it came from a process whose batches were lost.
    silent = EventStore(hub=Hub())
    recorder.store = silent
    for step in range(1, 4):
        await recorder.emit(EventType.STATUS_UPDATE, {"current_step": step})
    await recorder.emit(
        EventType.TRACE_COMPLETED, {"trace_id": str(recorder.trace_id), "status": "success", "final_response": "ok"}
    )
    messages = await receive_until(communicator, "trace_completed", timeout=20)
    assert [m["seq"] for m in messages] == [2, 3, 4, 5]
    assert await communicator.receive_nothing(0.6)  # finished: no more catching up, nothing twice
    await silent.aclose()
    await communicator.disconnect()


async def test_a_resume_gets_every_event_when_publishing_lags_behind_storing():
    """Publishing runs a little behind storing: a client can reconnect when its trace is already
    finished in the database (so the hello reports no running trace) and still receive live
    events of it. Its subscribe_trace + after_seq must still get every event exactly once."""
    from traces.live.hub import Hub
    from traces.runtime import get_runtime
    from traces.store.event_store import EventStore, StoredEvent
    from traces.store.recorder import TraceRecorder

    silent = EventStore(hub=Hub())  # stored, not yet delivered
    recorder = TraceRecorder(silent, session=SessionKey("lagging"))
    await recorder.emit(EventType.TRACE_STARTED, {"trace_id": str(recorder.trace_id), "request": "q", "metadata": {}})
    for step in range(1, 5):
        await recorder.emit(EventType.STATUS_UPDATE, {"current_step": step})
    await recorder.emit(
        EventType.TRACE_COMPLETED, {"trace_id": str(recorder.trace_id), "status": "success", "final_response": "ok"}
    )
    await recorder.flush()
    await silent.aclose()

    again, hello = await opened("/ws/lagging")
    assert hello["data"]["active_trace_id"] is None  # finished, as far as the database knows
    stored = await database_sync_to_async(
        lambda: list(
            Event.objects.filter(trace_id=recorder.trace_id)
            .order_by("seq")
            .values_list("seq", "event_type", "envelope")
        )
    )()
    # The lagging batch arrives now, with seq 4..6 (the last one the trace's end).
    get_runtime().hub.deliver(
        [
            StoredEvent(str(recorder.trace_id), seq, protocol.session_group("lagging"), None, kind, text)
            for seq, kind, text in stored[3:]
        ]
    )
    await send(again, action="subscribe_trace", trace_id=str(recorder.trace_id), after_seq=1)
    messages = await receive_until(again, "trace_completed")
    assert [m["seq"] for m in messages] == [2, 3, 4, 5, 6]
    assert await again.receive_nothing(0.3)
    await again.disconnect()


def _background_tasks() -> list[asyncio.Task]:
    """The sockets' writer tasks and their timers."""
    return [
        t
        for t in asyncio.all_tasks()
        if t.get_name().startswith("outbox-") or getattr(t.get_coro(), "__qualname__", "").startswith("Outbox.")
    ]


async def _background_tasks_after_cancelling() -> list[asyncio.Task]:
    """The consumers' background tasks still running once cancelled ones have had time to end."""
    for _ in range(100):
        if not _background_tasks():
            return []
        await asyncio.sleep(0.01)
    return _background_tasks()


async def test_a_client_gone_mid_run_ends_its_socket_cleanly():
    """Daphne raises when the app sends on a closed connection; the socket stops sending instead of crashing."""
    from channels.testing import WebsocketCommunicator

    from traces.live.sessions import sockets
    from tracesite.asgi import application

    gone = False

    async def server(scope, receive, send):
        async def send_or_raise(message):
            if gone and message["type"] == "websocket.send":
                raise OSError("Attempt to send on a closed protocol")
            await send(message)

        await application(scope, receive, send_or_raise)

    before = sockets.connections
    communicator = WebsocketCommunicator(server, "/ws/gone-mid-run")
    assert (await communicator.connect())[0]
    await receive(communicator)
    await send(communicator, action="start_agent", question="显示用户表的10条用户数据")
    await receive_until(communicator, "trace_started")
    gone = True
    await asyncio.sleep(0.5)  # the run goes on; the socket's sends fail
    assert not communicator.future.done()  # it did not crash
    await communicator.disconnect()
    assert communicator.future.done() and communicator.future.exception() is None
    assert sockets.connections == before and not await _background_tasks_after_cancelling()


async def test_a_socket_the_server_cancels_leaves_nothing_running():
    """Daphne kills an app that is slow to close after a disconnect: its tasks and counts must go with it."""
    from traces.live.sessions import sockets

    before = sockets.connections
    communicator, _ = await opened("/ws/cancelled")
    assert sockets.connections == before + 1 and len(_background_tasks()) == 1
    communicator.future.cancel()
    with pytest.raises(asyncio.CancelledError):
        await communicator.future
    assert sockets.connections == before and not await _background_tasks_after_cancelling()


async def test_a_socket_that_cannot_go_on_sending_is_closed_not_left_silent(monkeypatch):
    """A backfill whose database read fails ends the socket's writer: the socket is closed with
    1011, so its client reconnects and resumes, instead of staying connected and hearing nothing."""
    from django.db import OperationalError

    from tests.factories import make_trace
    from traces import consumers

    trace = await database_sync_to_async(make_trace)("q")

    async def failing(*args, **kwargs):
        raise OperationalError("the history went away")

    monkeypatch.setattr(consumers, "_events_after", failing)
    communicator, _ = await opened("/ws/cannot-send")
    await send(communicator, action="subscribe_trace", trace_id=str(trace.pk), after_seq=0)
    closed = await communicator.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": 1011}
    await communicator.disconnect()


async def test_a_user_past_the_socket_cap_is_refused_with_4408_and_others_are_not(settings, django_user_model):
    settings.TRACE_REQUIRE_AUTH = True
    settings.TRACE_MAX_SOCKETS_PER_USER = 2
    greedy = await database_sync_to_async(django_user_model.objects.create_user)("greedy")
    modest = await database_sync_to_async(django_user_model.objects.create_user)("modest")
    _, greedy_key = await database_sync_to_async(ApiToken.issue)(greedy, "t")
    _, modest_key = await database_sync_to_async(ApiToken.issue)(modest, "t")
    first, _ = await opened(f"/ws/a?token={greedy_key}")
    second, _ = await opened(f"/ws/b?token={greedy_key}")
    third = connect(f"/ws/c?token={greedy_key}")
    await third.connect()
    close = await third.receive_output()
    assert close["code"] == CloseCode.TOO_MANY_SOCKETS == 4408
    assert close["reason"] == "too many open sockets for this user (at most 2)"
    others, _ = await opened(f"/ws/a?token={modest_key}")  # another user is not counted with them
    await first.disconnect()
    again, _ = await opened(f"/ws/c?token={greedy_key}")  # a closed socket frees its place
    for communicator in (second, others, again):
        await communicator.disconnect()


async def test_start_agent_may_name_only_an_allowed_model(settings):
    """The endpoint is paid for: a client picks among TRACE_ALLOWED_MODELS (by default the configured
    model) or the offline built-in one, never any name it likes."""
    settings.OPENAI_MODEL = "gpt-4o-mini"
    settings.TRACE_ALLOWED_MODELS = []
    communicator, _ = await opened("/ws/models")
    await send(communicator, action="start_agent", question="how many users?", model="o1-pro-most-expensive")
    refusal = (await receive(communicator))["data"]
    assert refusal == {"error": "Invalid message format", "detail": "'model' must be one of: gpt-4o-mini, builtin"}
    await send(communicator, action="start_agent", question="how many users?", model="builtin")
    assert (await receive_until(communicator, "trace_completed"))[-1]["data"]["status"] == "success"
    await communicator.disconnect()
    settings.TRACE_ALLOWED_MODELS = ["gpt-4o", "gpt-4o-mini"]
    communicator, _ = await opened("/ws/models-2")
    await send(communicator, action="start_agent", question="how many users?", model="o1-pro-most-expensive")
    assert (await receive(communicator))["data"]["detail"] == "'model' must be one of: gpt-4o, gpt-4o-mini, builtin"
    await communicator.disconnect()
