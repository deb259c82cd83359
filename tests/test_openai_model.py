"""The agent through the real openai client against a local chat-completions server."""

from __future__ import annotations

import asyncio
import logging

import pytest

from agents.events import EventType, RunStatus, TraceOutcome
from agents.loop import Agent
from agents.openai_model import OpenAIChatModel
from agents.sink import ListSink
from agents.tools import QueryTool, SchemaTool
from tests.fake_openai import FakeOpenAI, Reply, tool

QUESTION = "显示用户表的10条用户数据"


@pytest.fixture
def llm():
    with FakeOpenAI() as server:
        yield server


def make_agent(llm: FakeOpenAI, database, *, stream: bool = True, max_retries: int = 2, max_steps: int = 10) -> Agent:
    model = OpenAIChatModel(
        api_key="sk-test", base_url=llm.url, model="gpt-4o-mini", timeout=10, max_retries=max_retries, stream=stream
    )
    return Agent(model, [SchemaTool(database), QueryTool(database)], max_steps=max_steps)


def script_full_run(llm: FakeOpenAI) -> None:
    llm.script(
        Reply("Let me look at the tables.", [tool("describe_schema", {})], usage=(120, 12)),
        Reply("", [tool("describe_schema", {"table": "users"})], usage=(300, 10)),
        Reply("", [tool("run_sql", {"sql": "SELECT id, name FROM users ORDER BY id LIMIT 10"})], usage=(500, 20)),
        Reply("Here are the first 10 users: Alice, Bob, Charlie and 7 more.", usage=(700, 30)),
    )


@pytest.mark.parametrize("stream", [True, False], ids=["streaming", "json"])
async def test_it_runs_a_full_tool_calling_trace(llm, demo_sqlite, stream):
    script_full_run(llm)
    sink = ListSink()
    result = await make_agent(llm, demo_sqlite, stream=stream).run(QUESTION, sink)

    assert result.status == TraceOutcome.SUCCESS
    assert result.final_response.startswith("Here are the first 10 users")
    assert result.total_tokens == 132 + 310 + 520 + 730
    assert result.total_cost == pytest.approx((1620 * 0.15 + 72 * 0.60) / 1e6)
    kinds = [e["event_type"] for e in sink.events]
    assert kinds[0] == "trace_started" and kinds[-1] == "trace_completed"
    assert kinds.count("think_completed") == 4 and kinds.count("tool_completed") == 3
    query = next(e for e in sink.of_type(EventType.TOOL_COMPLETED) if e["data"]["name"] == "run_sql")["data"]
    assert query["inputs"] == {"sql": "SELECT id, name FROM users ORDER BY id LIMIT 10"}
    assert query["outputs"]["rows"][:3] == [[1, "Alice"], [2, "Bob"], [3, "Charlie"]]
    assert len(query["outputs"]["rows"]) == 10
    think = sink.of_type(EventType.THINK_COMPLETED)[0]["data"]
    assert think["token_usage"] == {"prompt_tokens": 120, "completion_tokens": 12, "total_tokens": 132}
    assert think["model"] == "gpt-4o-mini-2024-07-18"
    assert think["outputs"]["tool_calls"][0]["function"]["name"] == "describe_schema"
    assert QUESTION in think["inputs"]["content"]
    # What the model was sent: tools, then the tool results in OpenAI's message format.
    first, last = llm.requests[0]["body"], llm.requests[-1]["body"]
    assert {t["function"]["name"] for t in first["tools"]} == {"describe_schema", "run_sql"}
    assert llm.requests[0]["auth"] == "Bearer sk-test"
    assert [m["role"] for m in last["messages"]][-2:] == ["assistant", "tool"]
    assert '"Alice"' in last["messages"][-1]["content"]
    if stream:
        assert first["stream"] is True and first["stream_options"] == {"include_usage": True}


async def test_it_streams_text_as_think_deltas(llm, demo_sqlite):
    llm.script(Reply("one two three four five six seven eight", usage=(10, 8), chunk_delay=0.03))
    sink = ListSink()
    result = await make_agent(llm, demo_sqlite).run("say something", sink)
    deltas = sink.of_type(EventType.THINK_DELTA)
    assert len(deltas) >= 2  # throttled, but more than one
    assert "".join(d["data"]["delta"] for d in deltas) == "one two three four five six seven eight"
    think_run = sink.of_type(EventType.THINK_COMPLETED)[0]["data"]
    assert {d["data"]["run_id"] for d in deltas} == {think_run["run_id"]}
    assert think_run["token_usage"]["total_tokens"] == 18
    assert result.final_response == "one two three four five six seven eight"


async def test_streamed_text_is_bounded_like_the_final_text(llm, demo_sqlite):
    """A model that streams far more than AGENT_MAX_TEXT_CHARS: think_delta carries at most that
    much, then says it was cut; the clipped whole still ends the call."""
    llm.script(Reply(" ".join(f"word{i:05}" for i in range(2000)), usage=(10, 2000)))  # 20,000 characters
    model = OpenAIChatModel(api_key="sk-test", base_url=llm.url, model="gpt-4o-mini", timeout=10, stream=True)
    sink = ListSink()
    await Agent(model, [SchemaTool(demo_sqlite), QueryTool(demo_sqlite)], max_text_chars=1000).run("talk", sink)
    streamed = "".join(d["data"]["delta"] for d in sink.of_type(EventType.THINK_DELTA))
    assert streamed.startswith("word00000 word00001") and streamed.endswith("… [streamed text cut at 1,000 characters]")
    assert len(streamed) == 1000 + len("… [streamed text cut at 1,000 characters]")
    think = sink.of_type(EventType.THINK_COMPLETED)[0]["data"]
    assert think["outputs"]["content"].endswith("[truncated: 19,999 characters in all]")


async def test_it_retries_a_429_and_succeeds(llm, demo_sqlite):
    llm.script(Reply(status=429), Reply(status=429), Reply("All good.", usage=(5, 3)))
    sink = ListSink()
    result = await make_agent(llm, demo_sqlite, max_retries=3).run("hello", sink)
    assert result.status == TraceOutcome.SUCCESS and result.final_response == "All good."
    assert len(llm.requests) == 3
    assert not sink.of_type(EventType.RUN_ERROR)


async def test_it_ends_the_trace_in_error_after_repeated_500s(llm, demo_sqlite):
    llm.default = Reply(status=500)
    sink = ListSink()
    result = await make_agent(llm, demo_sqlite, max_retries=2).run("hello", sink)
    assert result.status == TraceOutcome.ERROR
    assert "HTTP 500" in result.error
    assert len(llm.requests) == 3  # the first try and two retries
    errors = sink.of_type(EventType.RUN_ERROR)
    assert errors[0]["data"]["run_type"] == "think" and errors[0]["data"]["error_type"] == "InternalServerError"
    completed = sink.of_type(EventType.TRACE_COMPLETED)[0]["data"]
    assert completed["status"] == "error" and "HTTP 500" in completed["error"]
    status = sink.of_type(EventType.STATUS_UPDATE)[-1]["data"]
    assert status["agent_state"] == "ERROR"


async def test_it_feeds_back_invalid_tool_arguments_and_recovers(llm, demo_sqlite):
    llm.script(
        Reply("", [tool("run_sql", '{"sql": "SELECT COUNT(*) FROM users"')]),  # missing brace
        Reply("", [tool("run_sql", {"sql": "SELECT COUNT(*) AS n FROM users"})]),
        Reply("There are 300 users."),
    )
    sink = ListSink()
    result = await make_agent(llm, demo_sqlite).run("how many users?", sink)
    assert result.status == TraceOutcome.SUCCESS and result.final_response == "There are 300 users."
    error = sink.of_type(EventType.RUN_ERROR)[0]["data"]
    assert (
        error["name"] == "run_sql" and error["error_type"] == "InvalidArguments" and error["status"] == RunStatus.ERROR
    )
    fed_back = llm.requests[1]["body"]["messages"][-1]
    assert fed_back["role"] == "tool" and "invalid JSON" in fed_back["content"]
    assert sink.of_type(EventType.TOOL_COMPLETED)[0]["data"]["outputs"]["rows"] == [[300]]


async def test_it_feeds_back_a_rejected_query(llm, demo_sqlite):
    llm.script(
        Reply("", [tool("run_sql", {"sql": "DELETE FROM users"})]),
        Reply("", [tool("run_sql", {"sql": "SELECT COUNT(*) FROM users"})]),
        Reply("300."),
    )
    sink = ListSink()
    await make_agent(llm, demo_sqlite).run("delete everyone", sink)
    error = sink.of_type(EventType.RUN_ERROR)[0]["data"]
    assert error["error_type"] == "SqlRejected" and error["outputs"]["guard"] == "rejected"
    assert "rejected by the SQL guard" in llm.requests[1]["body"]["messages"][-1]["content"]


async def test_it_stops_a_model_that_never_stops_at_max_steps_and_records_an_error(llm, demo_sqlite):
    llm.script(*[Reply("", [tool("describe_schema", {})], usage=(10, 2))] * 3, Reply("Probably 300 users."))
    sink = ListSink()
    result = await make_agent(llm, demo_sqlite, max_steps=3).run("loop forever", sink)
    # The last call has no tools and asks for the best answer so far.
    assert "tools" not in llm.requests[-1]["body"]
    assert "step limit" in llm.requests[-1]["body"]["messages"][-1]["content"]
    assert len(llm.requests) == 4
    steps = [e["data"]["name"] for e in sink.of_type(EventType.STEP_STARTED)]
    assert steps == ["step_1", "step_2", "step_3", "final_answer"]
    # Not answered within the steps allowed: an error, keeping the best answer it gave.
    assert (result.status, result.stopped_by, result.error_type) == (
        TraceOutcome.ERROR,
        "max_steps",
        "StepLimitReached",
    )
    completed = sink.of_type(EventType.TRACE_COMPLETED)[0]["data"]
    assert (completed["status"], completed["stopped_by"]) == ("error", "max_steps")
    assert completed["error"] == "stopped at the limit of 3 steps" and completed["error_type"] == "StepLimitReached"
    assert completed["final_response"] == result.final_response == "Probably 300 users."
    status = sink.of_type(EventType.STATUS_UPDATE)[-1]["data"]
    assert (status["agent_state"], status["message"]) == ("ERROR", "Stopped at the limit of 3 steps")


async def test_a_base_url_without_v1_is_named_instead_of_the_404_page(llm, demo_sqlite):
    base_url = llm.url.removesuffix("/v1")
    model = OpenAIChatModel(api_key="sk-test", base_url=base_url, model="qwen2.5:7b", max_retries=0)
    sink = ListSink()
    result = await Agent(model, [SchemaTool(demo_sqlite)]).run("hello", sink)
    assert llm.misses == ["/chat/completions"]  # the server's HTML 404 page
    assert (result.status, result.error_type) == (TraceOutcome.ERROR, "NotFoundError")
    assert result.error == (
        f"the model endpoint {base_url} answered HTTP 404 for /chat/completions: "
        "check that OPENAI_BASE_URL ends with /v1"
    )
    # A model the server does not have is a 404 too, whose own message says more than the hint.
    llm.script(Reply(status=404))
    model = OpenAIChatModel(api_key="sk-test", base_url=llm.url, model="nope", max_retries=0)
    result = await Agent(model, []).run("hello", ListSink())
    assert result.error == "the model endpoint answered HTTP 404: scripted 404"


async def test_a_base_url_without_a_key_is_called_with_a_placeholder_key(llm, settings, caplog):
    from agents.config import PLACEHOLDER_KEY, chat_model, model_label

    settings.OPENAI_API_KEY, settings.OPENAI_BASE_URL, settings.OPENAI_MODEL = "", llm.url, "qwen2.5:7b"
    caplog.set_level(logging.INFO, logger="agents.config")
    model = chat_model()
    assert (model.name, model.offline, model_label()) == ("qwen2.5:7b", False, "qwen2.5:7b")
    assert f"OPENAI_BASE_URL is set without OPENAI_API_KEY: calling {llm.url} with a placeholder key" in caplog.text
    llm.script(Reply("Hello."))
    result = await Agent(model, []).run("hi", ListSink())
    assert result.final_response == "Hello."
    assert llm.requests[0]["auth"] == f"Bearer {PLACEHOLDER_KEY}" and llm.requests[0]["body"]["model"] == "qwen2.5:7b"
    settings.OPENAI_BASE_URL = ""  # nothing configured: the built-in model
    assert chat_model("gpt-4o").offline and model_label() == "builtin"


async def test_it_runs_several_tool_calls_of_one_turn_concurrently(llm, demo_sqlite):
    llm.script(
        Reply(
            "",
            [
                tool("run_sql", {"sql": "SELECT COUNT(*) FROM users"}),
                tool("run_sql", {"sql": "SELECT COUNT(*) FROM orders"}),
            ],
        ),
        Reply("300 users, 2000 orders."),
    )
    sink = ListSink()
    await make_agent(llm, demo_sqlite).run("users and orders?", sink)
    kinds = [e["event_type"] for e in sink.events if e["event_type"] in ("tool_started", "tool_completed")]
    assert kinds[:2] == ["tool_started", "tool_started"]  # both started before either finished
    tool_messages = [m for m in llm.requests[1]["body"]["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_messages] == ["call_0", "call_1"]


async def test_it_cancels_mid_stream(llm, demo_sqlite):
    llm.script(Reply(" ".join(["word"] * 200), chunk_delay=0.02))
    sink = ListSink()
    task = asyncio.create_task(make_agent(llm, demo_sqlite).run("talk slowly", sink))
    while not sink.of_type(EventType.THINK_DELTA):
        await asyncio.sleep(0.01)
    task.cancel()
    result = await task
    assert result.status == TraceOutcome.CANCELLED
    completed = sink.of_type(EventType.TRACE_COMPLETED)[0]["data"]
    assert completed["status"] == "cancelled"
    cancelled = sink.of_type(EventType.RUN_ERROR)
    assert [e["data"]["run_type"] for e in cancelled] == ["think"] and cancelled[0]["data"]["status"] == "cancelled"
    assert sink.of_type(EventType.STATUS_UPDATE)[-1]["data"]["agent_state"] == "CANCELLED"
    await asyncio.sleep(0.3)
    assert llm.disconnects == 1  # the stream was abandoned, not read to the end


@pytest.mark.parametrize("after", ["trace_started", "status_update", "step_started", "think_started"])
async def test_a_cancel_at_any_point_still_completes_the_trace(llm, demo_sqlite, after):
    llm.default = Reply(" ".join(["word"] * 50), chunk_delay=0.02)
    sink = ListSink()
    reached = asyncio.Event()
    original = sink.emit

    async def emit(event_type, data, timestamp=None):
        message = await original(event_type, data, timestamp)
        if event_type == after and not reached.is_set():
            reached.set()
            await asyncio.sleep(0.05)  # the cancel lands while the agent is emitting
        return message

    sink.emit = emit
    task = asyncio.create_task(make_agent(llm, demo_sqlite).run("q", sink))
    await reached.wait()
    task.cancel()
    result = await task
    assert result.status == TraceOutcome.CANCELLED
    assert sink.events[-1]["event_type"] == "trace_completed" and sink.events[-1]["data"]["status"] == "cancelled"
