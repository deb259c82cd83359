"""OpenTelemetry apps exporting to a real daphne: the SDK's OTLP/HTTP exporter with
PendingSpanProcessor (each step live while its span is open), an OTLP/JSON body, and
openinference's instrumentation of the real openai client."""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
import subprocess
import sys
import time
import urllib.request

import openai
import pytest
from google.protobuf.json_format import MessageToDict
from openinference.instrumentation.openai import OpenAIInstrumentor
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import format_trace_id
from websockets.sync.client import connect

from tests.fake_openai import FakeOpenAI, Reply, tool
from tests.servers import ROOT, completed_trace, daphne, read_until
from traces.ingest.ingestor import trace_uuid
from traces.models import ApiToken, Run, Trace
from tracesite_client.otel import PendingSpanProcessor

pytestmark = [pytest.mark.django_db(transaction=True)]

QUESTION = "how many orders per country?"
SQL = "SELECT country, COUNT(*) FROM orders GROUP BY country"
ANSWER = "France leads with 3 orders."
RUN_SQL = {
    "type": "function",
    "function": {
        "name": "run_sql",
        "description": "Run one read-only SQL query.",
        "parameters": {"type": "object", "properties": {"sql": {"type": "string"}}, "required": ["sql"]},
    },
}


@pytest.fixture
def token(django_user_model) -> str:
    user = django_user_model.objects.create_user("otel-owner", password="x")
    return ApiToken.issue(user, "otel")[1]


@pytest.fixture
def server():
    with daphne(TRACE_OTLP_COMPLETE_AFTER_SECONDS="0.2") as host:
        yield host


def tracer_provider(host: str, token: str, service: str) -> TracerProvider:
    """What an app does: its BatchSpanProcessor with an OTLP exporter, and the pending copies."""
    endpoint, headers = f"http://{host}/v1/traces", {"Authorization": f"Bearer {token}"}
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, headers=headers), schedule_delay_millis=100)
    )
    provider.add_span_processor(PendingSpanProcessor(OTLPSpanExporter(endpoint=endpoint, headers=headers)))
    return provider


def finished(trace_hex: str) -> Trace:
    return completed_trace(trace_uuid(trace_hex))


def test_an_open_span_is_shown_live_and_the_trace_completes_when_its_root_ends(server, token):
    provider = tracer_provider(server, token, "shop-agent")
    tracer = provider.get_tracer("shop")
    with connect(f"ws://{server}/ws/otel-watcher?protocol=2") as ws:
        assert json.loads(ws.recv(timeout=10))["event_type"] == "connection_established"
        ws.send(json.dumps({"action": "subscribe_all"}))
        root_attributes = {"gen_ai.operation.name": "invoke_agent", "input.value": QUESTION}
        with tracer.start_as_current_span("invoke_agent shop", attributes=root_attributes) as root:
            trace_id = str(trace_uuid(format_trace_id(root.get_span_context().trace_id)))
            started = read_until(ws, "trace_started")[-1]
            assert started["trace_id"] == trace_id and started["data"]["request"] == QUESTION
            ws.send(json.dumps({"action": "subscribe_trace", "trace_id": trace_id, "after_seq": 0}))
            assert read_until(ws, "step_started")[-1]["data"]["status"] == "running"
            tool_attributes = {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "run_sql",
                "gen_ai.tool.call.arguments": json.dumps({"sql": SQL}),
            }
            with tracer.start_as_current_span("execute_tool run_sql", attributes=tool_attributes) as step:
                running = read_until(ws, "tool_started")[-1]["data"]  # while the span is open
                assert running["name"] == "run_sql" and running["status"] == "running"
                assert running["inputs"] == {"sql": SQL}
                step.set_attribute("gen_ai.tool.call.result", "France 3")
            done = read_until(ws, "tool_completed")[-1]["data"]
            assert done["status"] == "success" and done["outputs"]["output"] == "France 3"
            assert Trace.objects.get(pk=trace_id).status == Trace.Status.RUNNING  # its root is open
            root.set_attribute("output.value", ANSWER)
        completed = read_until(ws, "trace_completed")[-1]["data"]
        assert completed["status"] == "success" and completed["final_response"] == ANSWER
    provider.shutdown()

    trace = finished(trace_id)
    assert trace.source == Trace.Source.OTEL and trace.agent_name == "shop-agent" and trace.request == QUESTION
    runs = {run.name: run for run in Run.objects.filter(trace=trace)}
    assert set(runs) == {"invoke_agent shop", "run_sql"}  # the pending copies are not runs of their own
    assert runs["run_sql"].parent_id == runs["invoke_agent shop"].pk and runs["run_sql"].outputs["sql"] == SQL
    assert all(run.status == Run.Status.SUCCESS for run in runs.values())


def otlp_json(spans) -> bytes:
    """The SDK's spans as an OTLP/JSON body: protobuf's JSON mapping, with ids in hex."""
    document = MessageToDict(encode_spans(spans))
    for resource in document["resourceSpans"]:
        for scope in resource["scopeSpans"]:
            for span in scope["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
    return json.dumps(document).encode()


def post(host: str, token: str, body: bytes) -> dict:
    request = urllib.request.Request(
        f"http://{host}/v1/traces",
        data=gzip.compress(body),
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip", "Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200 and response.headers["Content-Type"] == "application/json"
        return json.loads(response.read())


def test_an_otlp_json_body_with_pending_copies_then_the_spans(server, token):
    pending, ended = InMemorySpanExporter(), InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "json-agent"}))
    provider.add_span_processor(SimpleSpanProcessor(ended))
    provider.add_span_processor(PendingSpanProcessor(pending, schedule_delay_millis=10))
    tracer = provider.get_tracer("json")
    with tracer.start_as_current_span("agent", attributes={"tracesite.question": QUESTION}) as root:
        with tracer.start_as_current_span("think", attributes={"gen_ai.operation.name": "chat"}) as think:
            think.set_attributes({"gen_ai.request.model": "gpt-4o-mini", "gen_ai.usage.input_tokens": 50})
            assert provider.force_flush()
            copies = pending.get_finished_spans()
        root.set_attribute("tracesite.answer", ANSWER)
    trace_hex = format_trace_id(root.get_span_context().trace_id)

    assert [c.attributes["logfire.span_type"] for c in copies] == ["pending_span", "pending_span"]
    assert post(server, token, otlp_json(copies)) == {}
    deadline = time.monotonic() + 10
    while Run.objects.filter(trace_id=trace_uuid(trace_hex)).count() < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    runs = Run.objects.filter(trace_id=trace_uuid(trace_hex))
    assert sorted(r.run_type for r in runs) == ["agent", "think"] and {r.status for r in runs} == {"running"}

    assert post(server, token, otlp_json(ended.get_finished_spans())) == {}
    trace = finished(trace_hex)
    assert trace.request == QUESTION and trace.final_response == ANSWER and trace.agent_name == "json-agent"
    think_run = Run.objects.get(trace=trace, run_type=Run.Type.THINK)
    assert think_run.prompt_tokens == 50 and think_run.status == Run.Status.SUCCESS
    provider.shutdown()


def test_openinference_instrumented_openai_calls_land_on_the_right_runs(server, token):
    with FakeOpenAI() as llm:
        llm.script(
            Reply("", [tool("run_sql", {"sql": SQL})], usage=(120, 30)),
            Reply(ANSWER, usage=(200, 20)),
        )
        provider = tracer_provider(server, token, "openinference-agent")
        instrumentor = OpenAIInstrumentor()
        instrumentor.instrument(tracer_provider=provider)
        try:
            client = openai.OpenAI(api_key="sk-test", base_url=llm.url, max_retries=0)
            tracer = provider.get_tracer("agent")
            messages = [{"role": "system", "content": "You answer from SQL."}, {"role": "user", "content": QUESTION}]
            agent_attributes = {"openinference.span.kind": "AGENT", "input.value": QUESTION}
            with tracer.start_as_current_span("agent", attributes=agent_attributes) as root:
                first = client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=[RUN_SQL])
                call = first.choices[0].message.tool_calls[0]
                tool_attributes = {
                    "openinference.span.kind": "TOOL",
                    "tool.name": call.function.name,
                    "input.value": call.function.arguments,
                }
                with tracer.start_as_current_span("run_sql", attributes=tool_attributes) as step:
                    step.set_attribute("output.value", "France 3")
                messages += [first.choices[0].message.model_dump(exclude_none=True)]
                messages += [{"role": "tool", "tool_call_id": call.id, "content": "France 3"}]
                stream = client.chat.completions.create(
                    model="gpt-4o-mini", messages=messages, stream=True, stream_options={"include_usage": True}
                )
                answer = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
                root.set_attribute("output.value", answer)
        finally:
            instrumentor.uninstrument()
            provider.shutdown()
    trace_hex = format_trace_id(root.get_span_context().trace_id)

    trace = finished(trace_hex)
    assert trace.request == QUESTION and trace.final_response == ANSWER and trace.total_tokens == 370
    root_run = Run.objects.get(trace=trace, parent=None)
    first_call, second_call = Run.objects.filter(trace=trace, run_type=Run.Type.THINK).order_by("start_time")
    assert first_call.parent_id == second_call.parent_id == root_run.pk
    assert first_call.metadata["model"] == "gpt-4o-mini-2024-07-18"  # the model that answered
    assert (first_call.prompt_tokens, first_call.completion_tokens) == (120, 30)
    assert (second_call.prompt_tokens, second_call.completion_tokens) == (200, 20)
    assert [m["role"] for m in first_call.inputs["messages"]] == ["system", "user"]
    assert first_call.inputs["tools"] == [RUN_SQL]  # the tools offered
    assert first_call.outputs["tool_calls"][0]["function"] == {"name": "run_sql", "arguments": json.dumps({"sql": SQL})}
    assert [m["role"] for m in second_call.inputs["messages"]] == ["system", "user", "assistant", "tool"]
    assert second_call.outputs["content"] == ANSWER
    tool_run = Run.objects.get(trace=trace, run_type=Run.Type.TOOL)
    assert tool_run.name == "run_sql" and tool_run.inputs == {"sql": SQL} and tool_run.outputs["sql"] == SQL


class FixedTraceId(RandomIdGenerator):
    def __init__(self, trace_hex: str) -> None:
        self.trace_id = int(trace_hex, 16)

    def generate_trace_id(self) -> int:
        return self.trace_id


def test_any_trace_id_is_stored(server, token):
    """OTLP trace ids are any 128 bits; this one is no RFC 4122 UUID (version 15, variant 0), which
    MariaDB's UUID type would refuse as it is."""
    trace_hex = "fec99b490d9df83676c7c9edca7a86d6"
    ended = InMemorySpanExporter()
    provider = TracerProvider(id_generator=FixedTraceId(trace_hex))
    provider.add_span_processor(SimpleSpanProcessor(ended))
    with provider.get_tracer("ids").start_as_current_span("agent", attributes={"tracesite.question": QUESTION}):
        pass
    assert post(server, token, otlp_json(ended.get_finished_spans())) == {}
    assert finished(trace_hex).request == QUESTION


def readme_snippet(marker: str) -> str:
    """The README's snippet for one way of tracing an agent (its section, the block with ``marker``)."""
    section = (ROOT / "README.md").read_text().split("\n## Trace your own agent\n", 1)[1].split("\n## ", 1)[0]
    return next(block for block in re.findall(r"```python\n(.*?)```", section, re.S) if marker in block)


def test_the_readme_snippet_runs_as_written(server, token, tmp_path):
    code = readme_snippet("PendingSpanProcessor(")
    code = code.replace("http://localhost:8000", f"http://{server}").replace("ts_...", token)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0 and not result.stderr, result.stderr

    trace = finished(Trace.objects.get().metadata["otel_trace_id"])
    assert trace.status == Trace.Status.SUCCESS and trace.source == Trace.Source.OTEL
    assert trace.request == QUESTION and trace.final_response == ANSWER and trace.agent_name == "shop-agent"
    tool_run = Run.objects.get(trace=trace, run_type=Run.Type.TOOL)
    assert tool_run.name == "run_sql" and tool_run.outputs["sql"] == SQL and tool_run.outputs["output"] == "France 3"
