"""manage.py runagent: the trace live in the terminal, recorded like a browser run."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from traces.models import Event, Trace

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("configured_agent_db")]
ROOT = Path(__file__).resolve().parent.parent


def test_it_shows_the_trace_and_records_it_as_cli():
    out = io.StringIO()
    call_command("runagent", "显示用户表的10条用户数据", "--session", "term-1", stdout=out)
    text = out.getvalue()
    assert "显示用户表的10条用户数据" in text and "SELECT * FROM users LIMIT 10" in text
    assert "Alice" in text and "success" in text and "tokens" in text
    trace = Trace.objects.get()
    assert (trace.source, trace.session_id, trace.status) == ("cli", "term-1", "success")


def test_it_prints_one_envelope_per_line_with_json():
    out = io.StringIO()
    call_command("runagent", "how many orders per country?", "--json", stdout=out)
    lines = out.getvalue().splitlines()
    messages = [json.loads(line) for line in lines]
    assert messages[0]["event_type"] == "trace_started" and messages[-1]["event_type"] == "trace_completed"
    assert [m["seq"] for m in messages] == list(range(1, len(messages) + 1))
    trace_id = messages[0]["trace_id"]
    assert Event.objects.filter(trace_id=trace_id).count() == len(messages)


def test_it_prints_only_the_answer_with_quiet():
    import logging

    level = logging.getLogger("traces").level
    out = io.StringIO()
    call_command("runagent", "how many users?", "--quiet", stdout=out)
    assert out.getvalue().strip().startswith("The answer is **300**")
    assert logging.getLogger("traces").level == level  # the process's logging is left as it was


def test_it_rejects_bad_flags():
    with pytest.raises(CommandError, match="--max-steps"):
        call_command("runagent", "q", "--max-steps", "0")
    with pytest.raises(CommandError, match="--session"):
        call_command("runagent", "q", "--session", "bad id!")
    with pytest.raises(CommandError, match="no user named"):
        call_command("runagent", "q", "--user", "nobody")


def test_it_records_the_trace_for_the_named_user(django_user_model):
    user = django_user_model.objects.create_user("dana")
    call_command("runagent", "how many users?", "--user", "dana", "--quiet", stdout=io.StringIO())
    assert Trace.objects.get().owner == user


def test_it_cancels_cleanly_on_ctrl_c(settings, tmp_path):
    """A real process: SIGINT mid-run records the trace as cancelled and exits non-zero."""
    from django.db import connection

    env = {**os.environ, "TRACESITE_ENV_FILE": "", "OPENAI_API_KEY": "sk-test", "OPENAI_MAX_RETRIES": "0"}
    # A model endpoint that accepts the connection and never answers keeps the run in its think step.
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    env["OPENAI_BASE_URL"] = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    if connection.vendor == "sqlite":
        env["DATABASE_URL"] = f"sqlite:///{connection.settings_dict['NAME']}"
    else:
        s = connection.settings_dict
        env["DATABASE_URL"] = f"mysql://{s['USER']}:{s['PASSWORD']}@{s['HOST']}:{s['PORT']}/{s['NAME']}"
    process = subprocess.Popen(
        [sys.executable, "manage.py", "runagent", "how many users?", "--json"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 30
        while not Event.objects.filter(event_type="think_started").exists():
            assert time.time() < deadline, process.stderr.read() if process.poll() is not None else "no think_started"
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        listener.close()
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert "Cancelled" in stderr
    trace = Trace.objects.get()
    assert trace.status == Trace.Status.CANCELLED
    assert json.loads(stdout.splitlines()[-1])["data"]["status"] == "cancelled"


@pytest.mark.redis
async def test_it_publishes_live_to_a_shared_redis_layer(redis_url):
    """Browsers on other processes see a CLI run live when REDIS_URL is set."""
    import asyncio

    from django.db import connection

    from tests.test_recorder import Inbox
    from traces import protocol
    from traces.bus import Bus
    from traces.compat import RedisChannelLayer
    from traces.hub import Hub
    from tracesite.env import redis_hosts

    session = f"cli-live-{os.getpid()}"
    hub = Hub()  # this test process, as a server process with a socket on that session
    bus = Bus(hub, RedisChannelLayer(hosts=redis_hosts(redis_url)))
    await bus.start()
    inbox = Inbox()
    hub.join_session(protocol.session_group(session), inbox)
    env = {**os.environ, "TRACESITE_ENV_FILE": "", "REDIS_URL": redis_url, "OPENAI_API_KEY": ""}
    if connection.vendor == "sqlite":
        env["DATABASE_URL"] = f"sqlite:///{connection.settings_dict['NAME']}"
    else:
        s = connection.settings_dict
        env["DATABASE_URL"] = f"mysql://{s['USER']}:{s['PASSWORD']}@{s['HOST']}:{s['PORT']}/{s['NAME']}"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "manage.py",
        "runagent",
        "how many users?",
        "--session",
        session,
        "--quiet",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        while not inbox.events or protocol.loads(inbox.events[-1].text)["event_type"] != "trace_completed":
            await asyncio.sleep(0.05)
    received = [protocol.loads(event.text) for event in inbox.events]
    await bus.aclose()
    await hub.aclose()
    await process.communicate()
    assert process.returncode == 0
    assert [m["seq"] for m in received] == list(range(1, len(received) + 1))
    assert received[0]["data"]["request"] == "how many users?"
    await bus.layer.flush()
