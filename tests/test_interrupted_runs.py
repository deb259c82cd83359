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

import pytest
import websockets
from asgiref.sync import sync_to_async
from django.utils import timezone

from tests.factories import make_trace
from tests.servers import ROOT, daphne_server, database_url
from traces import protocol
from traces.models import Event, Run, Runner, Trace
from traces.runners import reap

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


def test_a_trace_whose_runner_stopped_beating_is_closed_as_interrupted(settings):
    settings.TRACE_RUNNER_TIMEOUT = 60
    dead, alive = runner(600), runner(5)
    orphan, healthy = running_trace(dead.id), running_trace(alive.id)
    closed = reap()
    assert [event.trace_id for event in closed] == [str(orphan.pk)]
    orphan.refresh_from_db()
    assert orphan.status == "error" and orphan.error_type == "Interrupted" and orphan.last_seq == 3
    assert "interrupted" in orphan.error
    last = Event.objects.get(trace=orphan, seq=3)
    message = protocol.loads(last.envelope)
    assert message["event_type"] == "trace_completed" and message["data"]["status"] == "error"
    assert closed[0].text == last.envelope and closed[0].boundary  # delivered as stored, to the feed too
    assert not Run.objects.filter(trace=orphan, status="running").exists()
    healthy.refresh_from_db()
    assert healthy.status == "running"
    assert reap() == []  # closed once


def test_a_trace_with_no_runner_is_closed_only_when_stale():
    old = running_trace("", started_at=timezone.now() - dt.timedelta(hours=2))
    recent = running_trace("")
    assert [e.trace_id for e in reap()] == [str(old.pk)]
    recent.refresh_from_db()
    assert recent.status == "running"


def test_two_reapers_close_a_trace_once():
    orphan = running_trace(runner(600).id)
    from traces.runners import close_interrupted

    now = timezone.now()
    first = close_interrupted(Trace.objects.get(pk=orphan.pk), now)
    second = close_interrupted(orphan, now)  # a stale view of it, as another process had
    assert first is not None and second is None
    assert list(Event.objects.filter(trace=orphan).values_list("seq", flat=True)) == [1, 2, 3]  # one more, once


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
