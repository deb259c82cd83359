"""The OpenAI Agents SDK with TracesiteProcessor: a real Agent with a function tool, run by the
SDK's Runner against the local chat-completions server, traced into a real daphne.

The SDK's package is named ``agents``, like this project's, so it lives in a directory of its own
(``make install-dev``: ``.venv/agents-sdk``) and the agent runs in a subprocess that puts that
directory first on its path, from a directory where the project's ``agents`` is not found.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import IN_CI
from tests.fake_openai import FakeOpenAI, Reply, tool
from tests.servers import ROOT, daphne
from traces.models import ApiToken, Run, Trace

pytestmark = [pytest.mark.django_db(transaction=True)]

SDK = Path(sys.prefix) / "agents-sdk"
QUESTION = "how many orders per country?"
SQL = "SELECT country, COUNT(*) FROM orders GROUP BY country"
ANSWER = "France leads with 3 orders."

AGENT = """
import asyncio, json, sys, time
from pathlib import Path

import agents
from agents import Agent, OpenAIChatCompletionsModel, RunConfig, Runner, function_tool, set_trace_processors
from openai import AsyncOpenAI

from tracesite_client.agents_sdk import TracesiteProcessor

url, token, model_url, go_on, trace_id = sys.argv[1:6]
processor = TracesiteProcessor(url, token, service="sdk-agent")
set_trace_processors([processor])  # instead of the SDK's exporter to OpenAI


@function_tool
def run_sql(sql: str) -> str:
    \"\"\"Run one read-only SQL query.\"\"\"
    deadline = time.monotonic() + 30
    while not Path(go_on).exists() and time.monotonic() < deadline:  # the test looks at the open tool call
        time.sleep(0.05)
    return "France 3"


model = OpenAIChatCompletionsModel(model="gpt-4o-mini", openai_client=AsyncOpenAI(api_key="sk-test", base_url=model_url))
agent = Agent(name="Shop analyst", instructions="You answer from SQL.", tools=[run_sql], model=model)
config = RunConfig(workflow_name="shop workflow", group_id="sdk-session", trace_id=trace_id)
result = asyncio.run(Runner.run(agent, "how many orders per country?", run_config=config))
processor.force_flush()
print(json.dumps({"sdk": agents.__file__, "answer": result.final_output, "dropped": processor.dropped, "failed": processor.failed}))
"""


@pytest.fixture
def sdk() -> Path:
    if not (SDK / "agents" / "tracing").is_dir():
        message = f"the OpenAI Agents SDK is not in {SDK}: make install-dev installs it (requirements-agents-sdk.txt)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return SDK


@pytest.fixture
def token(django_user_model) -> str:
    user = django_user_model.objects.create_user("sdk-owner", password="x")
    return ApiToken.issue(user, "agents-sdk")[1]


def wait_for(query, seconds: float = 30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = query()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"nothing found within {seconds} s")


def test_an_sdk_run_is_one_trace_with_its_agent_llm_calls_and_tool_call(sdk, token, tmp_path):
    go_on, trace_id = tmp_path / "go-on", uuid.uuid4()
    with FakeOpenAI() as llm, daphne(TRACE_OTLP_COMPLETE_AFTER_SECONDS="0.2") as host:
        llm.script(Reply("", [tool("run_sql", {"sql": SQL})], usage=(120, 30)), Reply(ANSWER, usage=(200, 20)))
        env = {**os.environ, "PYTHONPATH": f"{sdk}{os.pathsep}{ROOT}", "OPENAI_API_KEY": ""}
        agent = subprocess.Popen(
            [sys.executable, "-c", AGENT, f"http://{host}", token, llm.url, str(go_on), f"trace_{trace_id.hex}"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            # While the tool runs, its run is stored as running: sent when the span started.
            running = wait_for(lambda: Run.objects.filter(run_type=Run.Type.TOOL, status=Run.Status.RUNNING).first())
            assert running.name == "run_sql"
            assert Trace.objects.get(pk=running.trace_id).status == Trace.Status.RUNNING
            go_on.touch()
            out, err = agent.communicate(timeout=60)
        finally:
            if agent.poll() is None:
                agent.kill()
        assert agent.returncode == 0, err[-3000:]
        report = json.loads(out.splitlines()[-1])
        assert report["sdk"].startswith(str(sdk))  # the SDK, not this project's agents package
        assert report == {**report, "answer": ANSWER, "dropped": 0, "failed": 0}
        trace = wait_for(lambda: Trace.objects.exclude(status=Trace.Status.RUNNING).first())

    assert trace.pk == running.trace_id == trace_id and trace.status == Trace.Status.SUCCESS  # trace_<32 hex>
    assert trace.source == Trace.Source.SDK and trace.agent_name == "sdk-agent" and trace.name == "shop workflow"
    assert trace.session_id == "sdk-session" and trace.request == QUESTION and trace.final_response == ANSWER
    assert trace.total_tokens == 370
    runs = list(Run.objects.filter(trace=trace))
    root = next(r for r in runs if r.parent_id is None)
    assert root.name == "shop workflow" and root.run_type == Run.Type.AGENT
    agent_run = next(r for r in runs if r.name == "Shop analyst")
    assert agent_run.run_type == Run.Type.AGENT and agent_run.inputs["tools"] == ["run_sql"]
    first, second = sorted((r for r in runs if r.run_type == Run.Type.THINK), key=lambda r: r.start_time)
    assert first.metadata["model"] == "gpt-4o-mini" and (first.prompt_tokens, first.completion_tokens) == (120, 30)
    assert (second.prompt_tokens, second.completion_tokens) == (200, 20)
    assert [m["role"] for m in first.inputs["messages"]] == ["system", "user"]
    assert first.outputs["tool_calls"][0]["function"]["name"] == "run_sql"
    assert second.outputs["content"] == ANSWER
    tool_run = next(r for r in runs if r.run_type == Run.Type.TOOL)
    assert tool_run.pk == running.pk and tool_run.status == Run.Status.SUCCESS
    assert (
        tool_run.inputs == {"sql": SQL} and tool_run.outputs["output"] == "France 3" and tool_run.outputs["sql"] == SQL
    )
    ancestors, parent = [], tool_run.parent_id
    by_id = {r.pk: r for r in runs}
    while parent is not None:
        ancestors.append(by_id[parent].name)
        parent = by_id[parent].parent_id
    assert ancestors == ["turn 1 (Shop analyst)", "Shop analyst", "Runner.run (shop workflow)", "shop workflow"]
    assert not any(r.status == Run.Status.RUNNING or "waiting for span" in r.name for r in runs)


def readme_snippet(marker: str) -> str:
    """The README's snippet for one way of tracing an agent (its section, the block with ``marker``)."""
    section = (ROOT / "README.md").read_text().split("\n## Trace your own agent\n", 1)[1].split("\n## ", 1)[0]
    return next(block for block in re.findall(r"```python\n(.*?)```", section, re.S) if marker in block)


# What the snippet leaves to the SDK's defaults, pointed at the local server: it serves chat
# completions (the SDK's default is the Responses API) at OPENAI_BASE_URL.
LOCAL_MODEL = "from agents import set_default_openai_api\nset_default_openai_api('chat_completions')\n"


def test_the_readme_snippet_runs_as_written(sdk, token, tmp_path):
    code = readme_snippet("TracesiteProcessor(")
    with FakeOpenAI() as llm, daphne(TRACE_OTLP_COMPLETE_AFTER_SECONDS="0.2") as host:
        llm.script(Reply("", [tool("run_sql", {"sql": SQL})], usage=(120, 30)), Reply(ANSWER, usage=(200, 20)))
        code = LOCAL_MODEL + code.replace("http://localhost:8000", f"http://{host}").replace("ts_...", token)
        env = {
            **os.environ,
            "PYTHONPATH": f"{sdk}{os.pathsep}{ROOT}",
            "OPENAI_API_KEY": "sk-test",
            "OPENAI_BASE_URL": llm.url,
        }
        result = subprocess.run(
            [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0 and result.stdout.strip() == ANSWER, result.stderr[-3000:]
        trace = wait_for(lambda: Trace.objects.exclude(status=Trace.Status.RUNNING).first())

    assert trace.status == Trace.Status.SUCCESS and trace.source == Trace.Source.SDK
    assert trace.request == QUESTION and trace.final_response == ANSWER and trace.agent_name == "shop-agent"
    assert trace.name == "Agent workflow"  # the SDK's default workflow name
    tool_run = Run.objects.get(trace=trace, run_type=Run.Type.TOOL)
    assert tool_run.name == "run_sql" and tool_run.inputs == {"sql": SQL} and tool_run.outputs["output"] == "France 3"
