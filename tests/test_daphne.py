"""The live service under a real daphne on loopback, driven by a plain WebSocket client."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets
from channels.db import database_sync_to_async

from tests.servers import RedisServer, daphne, daphne_server, http_get
from traces.models import ApiToken, Trace

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("configured_agent_db")]


async def recv(ws, timeout: float = 30) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def until(ws, event_type: str, timeout: float = 60) -> list[dict]:
    messages = []
    async with asyncio.timeout(timeout):
        while True:
            messages.append(json.loads(await ws.recv()))
            if messages[-1]["event_type"] == event_type:
                return messages


def slow_env(llm) -> dict:
    return {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": llm.url, "OPENAI_MAX_RETRIES": "0"}


async def test_it_serves_the_original_javascript_client_flow():
    """new WebSocket(url); onopen → send start_agent; onmessage → switch (event_type)."""
    with daphne() as host:
        async with websockets.connect(f"ws://{host}/ws/session_xyz789") as ws:
            hello = await recv(ws)
            assert hello["event_type"] == "connection_established" and hello["data"]["status"] == "connected"
            await ws.send(json.dumps({"action": "start_agent", "question": "显示用户表的10条用户数据"}))
            handled = {
                "trace_started": 0,
                "think_completed": 0,
                "tool_completed": 0,
                "status_update": 0,
                "trace_completed": 0,
            }
            for message in await until(ws, "trace_completed"):
                if message["event_type"] in handled:
                    handled[message["event_type"]] += 1
            assert all(handled.values()), handled
            assert "Alice" in message["data"]["final_response"]
        status, body = http_get(f"http://{host}/health")
        assert status == 200 and json.loads(body)["status"] == "healthy"
        status, body = http_get(f"http://{host}/metrics")
        assert status == 200 and b'tracesite_runs_total{status="success"} 1.0' in body


async def test_two_tabs_share_a_session_and_a_reconnect_resumes_without_gap_or_duplicate(slow_llm):
    with daphne(**slow_env(slow_llm)) as host:
        url = f"ws://{host}/ws/tabs?protocol=2"
        async with websockets.connect(url) as tab1, websockets.connect(url) as tab2:
            await recv(tab1), await recv(tab2)
            await tab1.send(json.dumps({"action": "start_agent", "question": "how many users?"}))
            seen = await until(tab2, "think_completed")
            await tab2.close()  # the network drops
            async with websockets.connect(url) as again:
                hello = await recv(again)
                assert hello["data"]["active_trace_id"] == seen[0]["trace_id"]
                await again.send(
                    json.dumps(
                        {"action": "subscribe_trace", "trace_id": seen[0]["trace_id"], "after_seq": seen[-1]["seq"]}
                    )
                )
                seen += await until(again, "trace_completed")
            first_tab = await until(tab1, "trace_completed")
        assert [m["seq"] for m in seen] == list(range(1, len(seen) + 1))
        assert [m["seq"] for m in first_tab] == [m["seq"] for m in seen]


async def test_it_replays_as_fast_as_possible_and_refuses_unknown_traces():
    with daphne() as host:
        async with websockets.connect(f"ws://{host}/ws/replay?protocol=2") as ws:
            await recv(ws)
            await ws.send(json.dumps({"action": "start_agent", "question": "how many users?"}))
            live = await until(ws, "trace_completed")
            await ws.send(json.dumps({"action": "replay_trace", "trace_id": live[0]["trace_id"], "speed": 0}))
            replayed = await until(ws, "replay_completed")
            assert [m["message_id"] for m in replayed[1:-1]] == [m["message_id"] for m in live]
            await ws.send(json.dumps({"action": "replay_trace", "trace_id": "00000000-0000-0000-0000-000000000000"}))
            assert (await recv(ws))["data"]["error"] == "not_found"


def without_grant_warnings(log: str) -> str:
    """The log less the warnings about the agent's database user's grants: CI's MariaDB run seeds
    the agent's shop as root, and is warned so at every start (tests/test_agent_grants.py)."""
    return "\n".join(line for line in log.splitlines() if "the agent's database user" not in line)


async def test_a_flood_is_rate_limited_then_closed_and_logged_once():
    with daphne_server(TRACE_RATE_LIMIT="5") as server:
        host = server.host
        async with websockets.connect(f"ws://{host}/ws/flood") as ws:
            await recv(ws)
            errors = 0
            with pytest.raises(websockets.ConnectionClosed) as closed:
                for _ in range(2000):
                    await ws.send('{"action": "ping"}')
                while True:
                    message = await recv(ws)
                    errors += message["event_type"] == "error" and message["data"]["error"] == "rate_limited"
            assert errors > 0 and closed.value.rcvd.code == 4429
        # The server is fine.
        async with websockets.connect(f"ws://{host}/ws/after-flood") as ws:
            assert (await recv(ws))["event_type"] == "connection_established"
        log = server.log.read_text()
    assert log.count("closing a flooding socket") == 1, log[-2000:]
    flood = "WARNING traces.consumers closing a flooding socket"
    assert "WARNING" not in without_grant_warnings(log).replace(flood, ""), log[-2000:]


@pytest.mark.parametrize("path", ["/ws/a/b", "/ws/../../etc/passwd", "/ws/%2e%2e%2fadmin", "/", "/admin/"])
async def test_a_websocket_on_any_other_path_is_closed_4400_without_an_error(path):
    with daphne_server() as server:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            async with websockets.connect(f"ws://{server.host}{path}") as ws:
                await recv(ws)
        assert closed.value.rcvd.code == 4400  # daphne sends no close reason
        async with websockets.connect(f"ws://{server.host}/ws/fine") as ws:  # and the server is fine
            assert (await recv(ws))["event_type"] == "connection_established"
        log = server.log.read_text()
    assert "Traceback" not in log and " ERROR " not in log and " WARNING " not in without_grant_warnings(log), log
    assert "no endpoint at" in log


async def test_auth_on_needs_a_token_and_auth_off_does_not(django_user_model):
    user = await database_sync_to_async(django_user_model.objects.create_user)("frank")
    _, key = await database_sync_to_async(ApiToken.issue)(user, "daphne test")
    with daphne(TRACE_REQUIRE_AUTH="true") as host:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            async with websockets.connect(f"ws://{host}/ws/auth") as ws:
                await recv(ws)
        assert closed.value.rcvd.code == 4001
        async with websockets.connect(f"ws://{host}/ws/auth?token={key}") as ws:
            assert (await recv(ws))["data"]["user"] == "frank"
    with daphne(TRACE_REQUIRE_AUTH="false") as host:
        async with websockets.connect(f"ws://{host}/ws/auth") as ws:
            assert (await recv(ws))["data"]["user"] is None


@pytest.mark.redis
async def test_two_daphne_processes_share_runs_through_redis(redis_url, slow_llm):
    env = {"REDIS_URL": redis_url.rsplit("/", 1)[0] + "/12", **slow_env(slow_llm)}
    with daphne(**env) as a, daphne(**env) as b:
        async with (
            websockets.connect(f"ws://{a}/ws/scale-a?protocol=2") as on_a,
            websockets.connect(f"ws://{b}/ws/scale-b") as on_b,
        ):
            await recv(on_a), await recv(on_b)
            await on_b.send(json.dumps({"action": "subscribe_all"}))
            await asyncio.sleep(0.2)
            await on_a.send(json.dumps({"action": "start_agent", "question": "how many users?"}))
            started = (await until(on_b, "trace_started"))[-1]
            await on_b.send(json.dumps({"action": "subscribe_trace", "trace_id": started["trace_id"], "after_seq": 0}))
            through_b = [m for m in await until(on_b, "trace_completed") if m.get("trace_id") == started["trace_id"]]
            through_a = await until(on_a, "trace_completed")
        assert [m["seq"] for m in through_b] == list(range(1, len(through_b) + 1))
        assert [m["message_id"] for m in through_b] == [m["message_id"] for m in through_a]
        # Cancel from process B reaches the run in process A.
        async with (
            websockets.connect(f"ws://{a}/ws/scale-c") as on_a,
            websockets.connect(f"ws://{b}/ws/scale-c?protocol=2") as on_b,
        ):
            await recv(on_a), await recv(on_b)
            await on_a.send(json.dumps({"action": "start_agent", "question": "how many users?"}))
            await until(on_b, "think_delta")
            await on_b.send(json.dumps({"action": "cancel_agent"}))
            assert (await until(on_a, "trace_completed"))[-1]["data"]["status"] == "cancelled"


@pytest.mark.redis
async def test_a_run_survives_redis_going_away_and_delivery_resumes(slow_llm):
    redis = RedisServer()
    redis.start()
    try:
        with daphne(REDIS_URL=redis.url, TRACE_GROUP_REFRESH="0.5", **slow_env(slow_llm)) as host:
            url = f"ws://{host}/ws/redis-fault?protocol=2"
            seen: list[dict] = []
            async with websockets.connect(url) as ws:
                await recv(ws)
                await ws.send(json.dumps({"action": "start_agent", "question": "how many users?"}))
                seen += await until(ws, "think_completed")
                redis.stop()
                try:
                    async with asyncio.timeout(3):
                        while True:
                            seen.append(json.loads(await ws.recv()))
                except (TimeoutError, websockets.ConnectionClosed):
                    pass
            status, body = http_get(f"http://{host}/health")
            assert status == 200 and json.loads(body)["status"] == "degraded"  # it still serves
            trace_id = seen[0]["trace_id"]
            for _ in range(300):  # the run completes and is stored without Redis
                if (await Trace.objects.aget(pk=trace_id)).status != "running":
                    break
                await asyncio.sleep(0.1)
            assert (await Trace.objects.aget(pk=trace_id)).status == "success"
            redis.start()
            await asyncio.sleep(1)
            assert http_get(f"http://{host}/health")[0] == 200
            async with websockets.connect(url) as ws:
                await recv(ws)
                await ws.send(
                    json.dumps({"action": "subscribe_trace", "trace_id": trace_id, "after_seq": seen[-1]["seq"]})
                )
                seen += await until(ws, "trace_completed")
            assert [m["seq"] for m in seen] == list(range(1, len(seen) + 1))
            async with websockets.connect(url) as ws:  # live again
                await recv(ws)
                await ws.send(json.dumps({"action": "start_agent", "question": "how many users?"}))
                assert (await until(ws, "trace_completed"))[-1]["data"]["status"] == "success"
    finally:
        redis.stop()


async def test_a_message_over_the_size_limit_closes_with_1009_and_the_server_goes_on():
    with daphne_server() as server:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            async with websockets.connect(f"ws://{server.host}/ws/huge", max_size=None) as ws:
                await recv(ws)
                await ws.send('{"action": "ping", "pad": "' + "x" * (1536 * 1024) + '"}')
                await recv(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009  # message too big, not a drop
        async with websockets.connect(f"ws://{server.host}/ws/after-huge") as ws:
            assert (await recv(ws))["event_type"] == "connection_established"
        log = server.log.read_text()
    assert "Traceback" not in log, log


@pytest.mark.redis
async def test_with_redis_down_new_sockets_are_served_runs_and_history_included():
    redis = RedisServer()  # never started: its port refuses connections
    with daphne_server(REDIS_URL=redis.url) as server:
        host = server.host
        async with websockets.connect(f"ws://{host}/ws/no-redis?protocol=2") as ws:
            assert (await recv(ws))["event_type"] == "connection_established"
            await ws.send(json.dumps({"action": "start_agent", "question": "how many users?"}))
            live = await until(ws, "trace_completed")  # this process's sockets need no Redis
            assert live[-1]["data"]["status"] == "success"
            await asyncio.sleep(2)  # the socket stays open
            await ws.send(json.dumps({"action": "ping"}))
            assert (await recv(ws))["event_type"] == "pong"
        async with websockets.connect(f"ws://{host}/ws/no-redis-2") as ws:
            await recv(ws)
            await ws.send(json.dumps({"action": "subscribe_trace", "trace_id": live[0]["trace_id"], "after_seq": 0}))
            history = await until(ws, "trace_completed")
            assert [m["seq"] for m in history] == [m["seq"] for m in live]
            await ws.send(json.dumps({"action": "replay_trace", "trace_id": live[0]["trace_id"], "speed": 0}))
            assert (await until(ws, "replay_completed"))[-1]["event_type"] == "replay_completed"
        status, body = http_get(f"http://{host}/health")
        assert status == 200 and json.loads(body)["status"] == "degraded"
        log = server.log.read_text()
    assert "Traceback" not in log and " ERROR " not in log, log
    assert log.count("live delivery failing") == 1, log
