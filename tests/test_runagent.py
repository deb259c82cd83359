"""manage.py runagent: the trace live in the terminal, recorded like a browser run."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from tests.fake_openai import FakeOpenAI, Reply, tool
from traces.models import Event, Run, Trace

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("configured_agent_db")]
ROOT = Path(__file__).resolve().parent.parent
# Longer than the 80 columns rich assumes when the output is not a terminal.
LONG_SQL = (
    "SELECT id, name, email, age, country, city, created_at FROM users "
    "WHERE age BETWEEN 20 AND 60 ORDER BY created_at DESC, id LIMIT 5"
)


@pytest.fixture
def llm(settings):
    """runagent's model is the OpenAI path, against a local chat-completions server."""
    with FakeOpenAI() as server:
        settings.OPENAI_API_KEY = "sk-test"
        settings.OPENAI_BASE_URL = server.url
        settings.OPENAI_MAX_RETRIES = 0
        yield server


def closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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


@pytest.mark.parametrize("question", ["", "   "])
def test_it_refuses_an_empty_question_and_stores_nothing(question):
    with pytest.raises(CommandError, match="the question is empty"):
        call_command("runagent", question, stdout=io.StringIO())
    assert not Trace.objects.exists()


def test_it_prints_the_whole_trace_id_that_replaytrace_takes():
    out = io.StringIO()
    call_command("runagent", "how many users?", stdout=out)
    trace = Trace.objects.get()
    assert f"trace {trace.pk}" in out.getvalue().splitlines()


@pytest.mark.parametrize("flags", [["--quiet"], []], ids=["quiet", "full"])
def test_into_a_pipe_it_leaves_long_lines_whole(llm, flags):
    """Not a terminal: what the model and the agent wrote is printed as written, not cut at 80 columns."""
    answer = f"The five newest users aged 20 to 60, from this query:\n\n```sql\n{LONG_SQL}\n```"
    llm.script(Reply("", [tool("run_sql", {"sql": LONG_SQL})]), Reply(answer))
    out = io.StringIO()
    call_command("runagent", "the newest users aged 20 to 60", *flags, stdout=out)
    lines = out.getvalue().splitlines()
    assert LONG_SQL in lines  # the answer's code fence, unbroken
    assert "The five newest users aged 20 to 60, from this query:" in lines
    if not flags:
        executed = Run.objects.get(name="run_sql").outputs["sql"]
        assert len(executed) > 80 and executed in lines
        assert f"→ run_sql({json.dumps({'sql': LONG_SQL})})" in lines


def test_a_run_stopped_by_the_step_limit_is_an_error_that_says_so():
    out = io.StringIO()
    with pytest.raises(CommandError, match=r"stopped at the limit of 1 step\b.*--max-steps"):
        call_command("runagent", "how many users?", "--max-steps", "1", stdout=out)
    trace = Trace.objects.get()
    assert (trace.status, trace.error_type, trace.error) == (
        "error",
        "StepLimitReached",
        "stopped at the limit of 1 step",
    )
    # The built-in model's last word says why it has no answer, not that it could not read the question.
    assert "step limit" in trace.final_response and "could not map" not in trace.final_response
    text = out.getvalue()
    assert "Best answer at the step limit" in text and "stopped at the step limit" in text
    assert trace.final_response in text


def test_it_warns_that_a_model_without_an_endpoint_is_the_built_in_one(settings):
    settings.OPENAI_API_KEY = settings.OPENAI_BASE_URL = ""
    err = io.StringIO()
    call_command("runagent", "how many users?", "--model", "gpt-4o", "--quiet", stdout=io.StringIO(), stderr=err)
    assert "--model gpt-4o is ignored" in err.getvalue() and "built-in offline model" in err.getvalue()
    assert Trace.objects.get().model == "builtin"


def test_it_keeps_the_model_clients_request_log_out_of_its_output_unless_verbose(llm, settings, caplog):
    settings.OPENAI_MAX_RETRIES = 1
    caplog.set_level(logging.INFO)
    llm.script(Reply(status=500), Reply("There are 300 users."))
    call_command("runagent", "how many users?", "--quiet", stdout=io.StringIO())
    assert len(llm.requests) == 2  # retried
    assert not [r for r in caplog.records if r.name.startswith(("openai", "httpx"))]
    llm.script(Reply(status=500), Reply("There are 300 users."))
    call_command("runagent", "how many users?", "--quiet", verbosity=2, stdout=io.StringIO())
    assert "Retrying request" in caplog.text


@pytest.mark.parametrize("flags", [[], ["--quiet"], ["--json"]], ids=["view", "quiet", "json"])
def test_a_connection_error_names_the_endpoint_once(settings, flags):
    url = f"http://127.0.0.1:{closed_port()}/v1"
    settings.OPENAI_API_KEY, settings.OPENAI_BASE_URL, settings.OPENAI_MAX_RETRIES = "sk-test", url, 1
    out = io.StringIO()
    with pytest.raises(CommandError) as raised:
        call_command("runagent", "how many users?", *flags, stdout=out)
    error = Trace.objects.get().error
    assert error == f"cannot reach the model endpoint {url}: Connection refused"
    shown = str(raised.value) + ("" if "--json" in flags else out.getvalue())  # --json is for programs
    assert shown.count(url) == 1, shown


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
    from traces.compat import RedisChannelLayer
    from traces.live.bus import Bus
    from traces.live.hub import Hub
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
