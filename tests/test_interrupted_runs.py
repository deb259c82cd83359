"""No run is left "running" for ever: a process that dies (kill -9) has its runs closed by the
reaper of another, a server stopped with SIGTERM closes its own, and ``runagent | head`` cancels."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import uuid
from decimal import Decimal

import pytest
import websockets
from asgiref.sync import sync_to_async
from django.utils import timezone

from tests.factories import make_trace
from tests.servers import ROOT, daphne_server, database_url
from traces import protocol
from traces.live.hub import Hub
from traces.models import Event, Run, Runner, Trace
from traces.store.event_store import EventStore
from traces.store.liveness import close_orphans

pytestmark = pytest.mark.django_db(transaction=True)


def runner(seen_seconds_ago: float) -> Runner:
    now = timezone.now()
    return Runner.objects.create(
        id=uuid.uuid4().hex, host="h", pid=1, kind="server", started_at=now,
        seen_at=now - dt.timedelta(seconds=seen_seconds_ago),
    )  # fmt: skip


def running_trace(runner_id: str, **fields) -> Trace:
    trace = make_trace("a question", status=Trace.Status.RUNNING, runner=runner_id, **fields)
    Run.objects.filter(trace=trace).update(status=Run.Status.RUNNING)
    return trace


class Feed:
    """A socket following the all-traces feed, keeping what it is handed."""

    def __init__(self) -> None:
        self.events: list = []

    def offer(self, event) -> None:
        self.events.append(event)

    offer_feed = offer

    def catch_up(self) -> None:
        pass


async def test_a_trace_whose_runner_stopped_beating_is_closed_as_interrupted(settings):
    settings.TRACE_RUNNER_TIMEOUT = 60
    dead, alive = await sync_to_async(runner)(600), await sync_to_async(runner)(5)
    orphan = await sync_to_async(running_trace)(dead.id, total_cost=Decimal("0.25"))
    healthy = await sync_to_async(running_trace)(alive.id)
    hub, feed = Hub(), Feed()
    hub.join_feed(feed)
    store = EventStore(hub=hub)
    assert await close_orphans(store) == [orphan.pk]
    await store.drain()
    after = await Trace.objects.aget(pk=orphan.pk)
    assert after.status == "error" and after.error_type == "Interrupted" and after.last_seq == orphan.last_seq + 1
    assert "interrupted" in after.error
    assert (after.total_tokens, after.total_cost, after.total_runs) == (120, Decimal("0.25"), 3)  # the rows' own
    last = await Event.objects.aget(trace=orphan, seq=after.last_seq)
    message = protocol.loads(last.envelope)
    assert message["event_type"] == "trace_completed" and message["data"]["status"] == "error"
    assert (message["data"]["total_tokens"], message["data"]["total_runs"]) == (120, 3)
    assert [event.text for event in feed.events] == [last.envelope]  # delivered as stored, to the feed too
    assert not await Run.objects.filter(trace=orphan, status="running").aexists()
    closed_run = await Run.objects.filter(trace=orphan, run_type="tool").afirst()
    assert closed_run.status == "error" and closed_run.error_type == "Interrupted"
    assert (await Trace.objects.aget(pk=healthy.pk)).status == "running"
    assert await close_orphans(store) == []  # closed once
    await store.aclose()


async def test_a_trace_with_no_runner_is_closed_only_when_stale():
    old = await sync_to_async(running_trace)("", started_at=timezone.now() - dt.timedelta(hours=2))
    recent = await sync_to_async(running_trace)("")
    store = EventStore(hub=Hub())
    assert await close_orphans(store) == [old.pk]
    assert (await Trace.objects.aget(pk=recent.pk)).status == "running"
    await store.aclose()


async def test_two_reapers_close_a_trace_once():
    """Two processes reaping at the same moment: one closes it, the other finds it moved."""
    orphan = await sync_to_async(running_trace)((await sync_to_async(runner)(600)).id)
    first, second = EventStore(hub=Hub()), EventStore(hub=Hub())
    closed = await asyncio.gather(close_orphans(first), close_orphans(second))
    assert sorted(map(len, closed)) == [0, 1]
    seqs = [seq async for seq in Event.objects.filter(trace=orphan).order_by("seq").values_list("seq", flat=True)]
    assert seqs == list(range(1, orphan.last_seq + 2))  # one more, once
    await first.aclose()
    await second.aclose()


async def wait_for_status(trace_id: str, *, not_: str = "running", seconds: float = 30) -> Trace:
    for _ in range(int(seconds * 10)):
        trace = await Trace.objects.aget(pk=trace_id)
        if trace.status != not_:
            return trace
        await asyncio.sleep(0.1)
    return trace


def slow(llm) -> dict:
    return {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": llm.url, "OPENAI_MAX_RETRIES": "0"}


async def start_run(host: str, session: str) -> tuple[str, int]:
    async with websockets.connect(f"ws://{host}/ws/{session}?protocol=2") as ws:
        json.loads(await ws.recv())
        await ws.send(json.dumps({"action": "start_agent", "question": "how many users?"}))
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if message["event_type"] == "think_delta":  # running, for seconds yet
                return message["trace_id"], message["seq"]


@pytest.mark.usefixtures("configured_agent_db")
async def test_runs_of_a_killed_server_are_closed_by_another_and_followers_see_it(slow_llm):
    env = {"TRACE_RUNNER_TIMEOUT": "1", **slow(slow_llm)}
    with daphne_server(**env) as first:
        trace_id, _ = await start_run(first.host, "killed")
        first.process.send_signal(signal.SIGKILL)  # no chance to close anything
        first.process.wait(10)
    assert (await Trace.objects.aget(pk=trace_id)).status == "running"
    await asyncio.sleep(1.5)  # longer than TRACE_RUNNER_TIMEOUT without a heartbeat
    with daphne_server(**env) as second:
        async with websockets.connect(f"ws://{second.host}/ws/watcher") as ws:  # the process starts serving
            json.loads(await ws.recv())
            await ws.send(json.dumps({"action": "subscribe_trace", "trace_id": trace_id}))
            messages = []
            async with asyncio.timeout(30):
                while not messages or messages[-1]["event_type"] != "trace_completed":
                    messages.append(json.loads(await ws.recv()))
    assert messages[-1]["data"]["status"] == "error" and "interrupted" in messages[-1]["data"]["error"]
    assert [m["seq"] for m in messages] == list(range(1, len(messages) + 1))  # its seq continues, no gap
    trace = await Trace.objects.aget(pk=trace_id)
    assert trace.status == "error" and trace.error_type == "Interrupted"


@pytest.mark.usefixtures("configured_agent_db")
@pytest.mark.parametrize("asgi", ["daphne", "uvicorn"])
async def test_a_restarted_server_closes_a_killed_ones_runs_with_no_client_connecting(slow_llm, asgi):
    """The heartbeat and the reaper start with the process, not with its first socket: a server
    behind a load balancer whose sockets all land elsewhere still closes the dead one's runs."""
    env = {"TRACE_RUNNER_TIMEOUT": "1", "TRACE_REAP_SECONDS": "0.2", **slow(slow_llm)}
    with daphne_server(**env) as first:
        trace_id, _ = await start_run(first.host, "killed-quietly")
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(10)
    assert (await Trace.objects.aget(pk=trace_id)).status == "running"
    with daphne_server(asgi, **env) as second:  # nothing ever connects to it
        trace = await wait_for_status(trace_id, seconds=15)  # 1 s of silence, then a reap 0.2 s later
        log = second.log.read_text()
    assert trace.status == "error" and trace.error_type == "Interrupted", log[-3000:]
    assert "websocket opened" not in log and "GET /" not in log
    last = await Event.objects.filter(trace_id=trace_id).order_by("-seq").afirst()
    assert last.event_type == "trace_completed" and last.seq == trace.last_seq


@pytest.mark.usefixtures("configured_agent_db")
async def test_a_server_stopped_with_sigterm_closes_its_runs(slow_llm):
    with daphne_server(**slow(slow_llm)) as server:
        trace_id, _ = await start_run(server.host, "stopping")
        server.process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(server.process.wait, 30)
    trace = await Trace.objects.aget(pk=trace_id)
    assert trace.status == "error" and "shutting down" in trace.error, server.log.read_text()[-2000:]
    last = await Event.objects.filter(trace_id=trace_id).order_by("-seq").afirst()
    assert last.event_type == "trace_completed" and last.seq == trace.last_seq
    assert not await Runner.objects.filter(pid=server.process.pid).aexists()  # it left cleanly


@pytest.mark.usefixtures("configured_agent_db")
async def test_runagent_whose_reader_goes_away_cancels_and_records_its_run(slow_llm):
    env = {**os.environ, "TRACESITE_ENV_FILE": "", "DATABASE_URL": database_url(), **slow(slow_llm)}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "manage.py", "runagent", "how many users?", "--json", "--session", "piped",
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    first = json.loads(await asyncio.wait_for(process.stdout.readline(), 30))  # `| head -1`
    process.stdout.feed_eof()
    process._transport.get_pipe_transport(1).close()  # the reader is gone
    code = await asyncio.wait_for(process.wait(), 60)
    assert code == 141, (await process.stderr.read()).decode()[-2000:]
    trace = await sync_to_async(Trace.objects.get)(pk=first["trace_id"])
    assert trace.status == "cancelled"


@pytest.mark.usefixtures("configured_agent_db")
async def test_under_uvicorn_a_stop_closes_the_runs_too(slow_llm, tmp_path):
    from tests.servers import free_port, wait_for_port

    port = free_port()
    env = {**os.environ, "TRACESITE_ENV_FILE": "", "DATABASE_URL": database_url(), **slow(slow_llm)}
    with open(tmp_path / "uvicorn.log", "w+") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "tracesite.asgi:application", "--port", str(port), "--lifespan", "on",
             "--ws", "websockets"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_for_port(port, process=server)
            trace_id, _ = await start_run(f"127.0.0.1:{port}", "uvicorn-stop")
            server.send_signal(signal.SIGTERM)
            await asyncio.to_thread(server.wait, 30)
        finally:
            if server.poll() is None:
                server.kill()
    trace = await Trace.objects.aget(pk=trace_id)
    assert trace.status == "error" and "shutting down" in trace.error, (tmp_path / "uvicorn.log").read_text()[-2000:]
