"""A whole agent run, recorded: the persisted trace matches PROTOCOL.md."""

from __future__ import annotations

import pytest

from agents.events import PAYLOADS, RUN_EVENTS, EventType
from agents.loop import _message_view
from traces import protocol
from traces.access import SessionKey
from traces.live.agent_runs import run_trace
from traces.live.hub import Hub
from traces.models import Event, Run, Trace
from traces.store.recorder import EventStore

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("configured_agent_db")]

SEED_FIELDS = {
    EventType.TRACE_STARTED: {"trace_id", "trace_name", "request", "agent_name", "max_steps", "metadata"},
    EventType.STATUS_UPDATE: {"current_step", "max_steps", "agent_state", "message", "progress_percentage"},
    EventType.TRACE_COMPLETED: {
        "trace_id",
        "duration_ms",
        "total_runs",
        "status",
        "total_cost",
        "total_tokens",
        "final_response",
    },
    EventType.PROGRESS_UPDATE: {"current_step", "total_steps", "step_name", "step_description", "percentage"},
    EventType.THINK_DELTA: {"run_id", "delta"},
}


async def test_it_answers_the_original_question_with_a_complete_persisted_trace():
    store = EventStore(hub=Hub())
    seen = []
    result = await run_trace(
        "显示用户表的10条用户数据",
        session=SessionKey("session_xyz789"),
        source=Trace.Source.WEBSOCKET,
        listener=seen.append,
        store=store,
    )
    await store.drain()
    await store.aclose()

    trace = await Trace.objects.aget()
    assert trace.status == Trace.Status.SUCCESS and result.status == "success"
    assert trace.request == "显示用户表的10条用户数据"
    assert trace.model == "builtin" and trace.agent_name == "sql_agent" and trace.name == "sql_agent_execution"
    assert "| 1 | Alice |" in trace.final_response and trace.final_response.count("\n| ") == 11  # header + 10 rows
    assert trace.total_tokens > 0 and trace.duration_ms is not None and trace.ended_at is not None

    events = [e async for e in Event.objects.filter(trace=trace).order_by("seq")]
    assert [e.seq for e in events] == list(range(1, len(events) + 1)) == [m["seq"] for m in seen]
    envelopes = [protocol.loads(e.envelope) for e in events]
    assert envelopes == seen  # stored exactly as it was sent
    for envelope in envelopes:
        assert {
            "event_type",
            "timestamp",
            "message_id",
            "session_id",
            "data",
            "trace_id",
            "seq",
            "replay",
        } <= envelope.keys()
        kind = EventType(envelope["event_type"])
        if kind in RUN_EVENTS:
            assert PAYLOADS[kind].__required_keys__ <= envelope["data"].keys(), kind
        else:
            assert SEED_FIELDS[kind] <= envelope["data"].keys(), kind
            assert envelope["data"].keys() <= PAYLOADS[kind].__annotations__.keys(), kind  # nothing outside its type
    think = next(e for e in envelopes if e["event_type"] == "think_completed")["data"]
    assert {"content"} <= think["inputs"].keys() and {"content", "tool_calls"} <= think["outputs"].keys()
    assert {"prompt_tokens", "completion_tokens", "total_tokens"} == think["token_usage"].keys()
    query = next(e for e in envelopes if e["event_type"] == "tool_completed" and e["data"]["name"] == "run_sql")["data"]
    assert query["inputs"]["sql"] and query["outputs"]["sql"].startswith("SELECT")
    assert len(query["outputs"]["rows"]) == 10 and query["outputs"]["columns"][:2] == ["id", "name"]
    assert "Alice" in query["outputs"]["output"]

    # The run tree: steps at the top, think and tool runs under them.
    runs = [r async for r in Run.objects.filter(trace=trace)]
    steps = {r.id: r for r in runs if r.run_type == Run.Type.AGENT}
    assert len(steps) == 4 and all(r.parent_id is None for r in steps.values())
    children = [r for r in runs if r.run_type != Run.Type.AGENT]
    assert children and all(r.parent_id in steps for r in children)
    assert sum(r.total_tokens for r in runs if r.run_type == Run.Type.THINK) == trace.total_tokens
    assert trace.total_runs == len(runs)


async def test_each_model_call_records_what_it_was_sent_once_across_the_trace():
    """The system prompt, the question and every later message are recorded on the think run
    that first sent them, with the tools offered and the request's parameters."""
    store = EventStore(hub=Hub())
    seen = []
    await run_trace(
        "how many orders per country?",
        session=SessionKey("s1"),
        source=Trace.Source.WEBSOCKET,
        listener=seen.append,
        store=store,
    )
    await store.drain()
    await store.aclose()

    thinks = [m["data"] for m in seen if m["event_type"] == EventType.THINK_STARTED]
    assert len(thinks) >= 3
    first = thinks[0]["inputs"]
    assert [m["role"] for m in first["messages"]] == ["system", "user"] and first["messages_from"] == 0
    assert "read-only" in first["messages"][0]["content"]
    assert first["messages"][1]["content"] == "how many orders per country?"
    assert {tool["function"]["name"] for tool in first["tools"]} >= {"describe_schema", "run_sql"}
    # The schema once; later calls name the tools they were offered.
    assert all("tools" not in think["inputs"] for think in thinks[1:])
    assert all(think["inputs"]["tool_names"] == first["tool_names"] for think in thinks[:-1])
    assert thinks[0]["metadata"]["parameters"] == {"model": "builtin"}

    # Later calls carry only what was added since: the assistant's tool calls and their results.
    conversation = []
    for think in thinks:
        assert think["inputs"]["messages_from"] == len(conversation)
        conversation += think["inputs"]["messages"]
        assert think["inputs"]["message_count"] == len(conversation)
    second = thinks[1]["inputs"]["messages"]
    assert [m["role"] for m in second] == ["assistant", "tool"]
    tool_output = next(m for m in seen if m["event_type"] == EventType.TOOL_COMPLETED)["data"]["outputs"]["output"]
    assert second[1]["content"] == tool_output
    assert second[0]["tool_calls"][0]["function"]["name"] == "describe_schema"
    assert second[1]["tool_call_id"] == second[0]["tool_calls"][0]["id"]


def test_a_long_tool_result_keeps_its_beginning_among_the_messages_a_model_call_records():
    """The whole result is the tool run's output: the think run's copy is its beginning."""
    long = "x" * 5_000
    recorded = _message_view({"role": "tool", "tool_call_id": "c1", "content": long}, 100_000)
    assert recorded["content"].startswith("x" * 2_000) and "[truncated: 5,000 characters in all]" in recorded["content"]
    assert _message_view({"role": "user", "content": long}, 100_000)["content"] == long
