"""How a span of each instrumentation convention becomes a run: type, messages, tokens, tools."""

from __future__ import annotations

import datetime as dt
import json

from agents.events import RunType
from traces.ingest.otlp import Span
from traces.ingest.spans import view


def span(attributes: dict, name: str = "span") -> Span:
    now = dt.datetime.now(dt.UTC)
    return Span("ab" * 16, "cd" * 8, None, name, now, now, attributes, {}, [], 0, "")


def test_opentelemetry_genai_chat_with_current_attribute_names():
    run = view(
        span(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.response.model": "gpt-4o-2024-08-06",
                "gen_ai.request.temperature": 0.2,
                "gen_ai.usage.input_tokens": 10,
                "gen_ai.usage.output_tokens": 4,
                "gen_ai.system_instructions": json.dumps([{"type": "text", "content": "Be brief."}]),
                "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": "hi"}]}]),
                "gen_ai.output.messages": json.dumps(
                    [{"role": "assistant", "parts": [{"type": "text", "content": "hello"}]}]
                ),
            }
        )
    )
    assert run.run_type == RunType.THINK and run.model == "gpt-4o-2024-08-06"
    assert (run.prompt_tokens, run.completion_tokens) == (10, 4)
    assert run.inputs["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert run.inputs["messages"][1]["content"] == "hi" and run.inputs["content"] == "hi"
    assert run.outputs == {"content": "hello", "tool_calls": []} and run.answer == "hello"
    assert run.metadata["parameters"]["temperature"] == 0.2


def test_openllmetry_flattened_prompts_and_deprecated_token_names():
    run = view(
        span(
            {
                "gen_ai.system": "openai",
                "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.usage.prompt_tokens": 30,
                "gen_ai.usage.completion_tokens": 5,
                "gen_ai.prompt.0.role": "system",
                "gen_ai.prompt.0.content": "You write SQL.",
                "gen_ai.prompt.1.role": "user",
                "gen_ai.prompt.1.content": "count users",
                "gen_ai.completion.0.role": "assistant",
                "gen_ai.completion.0.tool_calls.0.name": "run_sql",
                "gen_ai.completion.0.tool_calls.0.arguments": '{"sql": "SELECT COUNT(*) FROM users"}',
            }
        )
    )
    assert run.run_type == RunType.THINK and (run.prompt_tokens, run.completion_tokens) == (30, 5)
    assert [m["content"] for m in run.inputs["messages"]] == ["You write SQL.", "count users"]
    call = run.outputs["tool_calls"][0]["function"]
    assert call == {"name": "run_sql", "arguments": '{"sql": "SELECT COUNT(*) FROM users"}'}
    assert run.tool_calls and not run.answer  # asked for a tool: not the final answer


def test_openinference_llm_tool_and_chain_spans():
    llm = view(
        span(
            {
                "openinference.span.kind": "LLM",
                "llm.model_name": "claude-3-5-sonnet",
                "llm.token_count.prompt": 12,
                "llm.token_count.completion": 3,
                "llm.input_messages.0.message.role": "user",
                "llm.input_messages.0.message.content": "weather?",
                "llm.output_messages.0.message.role": "assistant",
                "llm.output_messages.0.message.tool_calls.0.tool_call.function.name": "get_weather",
                "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments": '{"city": "Paris"}',
                "llm.invocation_parameters": '{"temperature": 0}',
                "llm.tools.0.tool.json_schema": '{"type": "function", "function": {"name": "get_weather"}}',
            }
        )
    )
    assert llm.run_type == RunType.THINK and llm.model == "claude-3-5-sonnet"
    assert llm.inputs["messages"] == [{"role": "user", "content": "weather?"}]
    assert llm.outputs["tool_calls"][0]["function"]["name"] == "get_weather"
    assert llm.metadata["parameters"] == {"temperature": 0}
    assert llm.inputs["tools"][0]["function"]["name"] == "get_weather"

    tool = view(
        span(
            {
                "openinference.span.kind": "TOOL",
                "tool.name": "query_db",
                "input.value": '{"query": "SELECT 1"}',
                "output.value": '{"columns": ["x"], "rows": [[1]]}',
            }
        )
    )
    assert tool.run_type == RunType.TOOL and tool.name == "query_db"
    assert tool.outputs["sql"] == "SELECT 1"  # the SQL view of native tool calls
    assert tool.outputs["columns"] == ["x"] and tool.outputs["rows"] == [[1]]

    chain = view(span({"openinference.span.kind": "CHAIN", "input.value": "how many users?", "output.value": "3"}))
    assert chain.run_type == RunType.AGENT and chain.question == "how many users?" and chain.answer == "3"


def test_a_span_of_no_known_convention_is_a_step_that_keeps_its_attributes():
    run = view(span({"http.method": "GET", "db.system": "postgresql"}, name="fetch"))
    assert run.run_type == RunType.AGENT and run.name == "fetch"
    assert run.metadata["attributes"] == {"http.method": "GET", "db.system": "postgresql"}


def test_tracesite_attributes_come_first():
    run = view(
        span(
            {
                "gen_ai.operation.name": "chat",
                "tracesite.run_type": "tool",
                "gen_ai.tool.name": "lookup",
                "tracesite.inputs": '{"id": 7}',
                "tracesite.outputs": '{"output": "found"}',
            }
        )
    )
    assert run.run_type == RunType.TOOL and run.inputs == {"id": 7} and run.outputs == {"output": "found"}


def test_json_attributes_python_reads_are_read_too_and_broken_ones_stay_text():
    """Fast JSON first; what only Python's json reads (NaN, integers over 64 bits) still parses."""
    run = view(
        span(
            {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "score",
                "gen_ai.tool.call.arguments": '{"limit": 123456789012345678901234567890, "floor": NaN}',
                "gen_ai.tool.call.result": '{"columns": ["a"], "rows": [[1]',  # cut short
            }
        )
    )
    assert run.inputs["limit"] == 123456789012345678901234567890
    assert run.inputs["floor"] != run.inputs["floor"]  # NaN
    assert run.outputs == {"output": '{"columns": ["a"], "rows": [[1]'}
