"""POST /v1/traces: OTLP/HTTP exports recorded as traces like the built-in agent's, through the
real ASGI app (Django's AsyncClient), the real store and both databases' SQL."""

from __future__ import annotations

import base64
import gzip
import json
import time
import uuid
import zlib

import pytest
from channels.db import database_sync_to_async
from channels.testing import HttpCommunicator
from django.core.asgi import get_asgi_application
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto

from tests.factories import make_trace
from tests.live import connect, receive, receive_until, send
from traces.ingest.ingestor import RUN_NAMESPACE, run_id, run_text_id, trace_uuid
from traces.models import ApiToken, Event, Run, Trace
from traces.receiver import OtlpEndpoint
from traces.runtime import get_runtime

pytestmark = [pytest.mark.django_db(transaction=True)]

T0 = time.time() - 10
QUESTION = "how many orders per country?"


def attributes(values: dict) -> list[dict]:
    out = []
    for key, value in values.items():
        if isinstance(value, bool):
            v = {"boolValue": value}
        elif isinstance(value, int):
            v = {"intValue": str(value)}
        else:
            v = {"stringValue": value if isinstance(value, str) else json.dumps(value)}
        out.append({"key": key, "value": v})
    return out


def span(trace: str, span_id: str, parent: str | None, name: str, attrs: dict, start: float, end: float, **extra):
    return {
        "traceId": trace,
        "spanId": span_id,
        "parentSpanId": parent or "",
        "name": name,
        "startTimeUnixNano": str(int((T0 + start) * 1e9)),
        "endTimeUnixNano": str(int((T0 + end) * 1e9)),
        "attributes": attributes(attrs),
        **extra,
    }


def export(*spans: dict, service: str = "shop-agent") -> dict:
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": attributes({"service.name": service})},
                "scopeSpans": [{"scope": {"name": "test"}, "spans": list(spans)}],
            }
        ]
    }


def pending(real: dict) -> dict:
    """Logfire's pending copy of a span: a child of it, carrying its parent's id."""
    copy = dict(real)
    copy["spanId"] = real["spanId"][::-1]
    copy["parentSpanId"] = real["spanId"]
    copy["endTimeUnixNano"] = real["startTimeUnixNano"]
    copy["attributes"] = [
        *real["attributes"],
        *attributes({"logfire.span_type": "pending_span", "logfire.pending_parent_id": real["parentSpanId"]}),
    ]
    return copy


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes([*out, value])


def nested_object(depth: int) -> str:
    """A JSON object nested ``depth`` deep."""
    return '{"a": ' * depth + "1" + "}" * depth


TRACE = "5b8efff798038103d269b633813fc60c"
ROOT, THINK, TOOL, ANSWER = "eee19b7ec3c1b174", "0102030405060708", "1112131415161718", "2122232425262728"


def agent_spans() -> list[dict]:
    return [
        span(TRACE, ROOT, None, "invoke_agent shop", {"gen_ai.operation.name": "invoke_agent", "input.value": QUESTION,
             "output.value": "France leads with 3 orders."}, 0, 3),
        span(TRACE, THINK, ROOT, "chat gpt-4o-mini", {
            "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.usage.input_tokens": 120, "gen_ai.usage.output_tokens": 30,
            "gen_ai.input.messages": [{"role": "system", "content": "You answer from SQL."},
                                      {"role": "user", "content": QUESTION}],
            "gen_ai.output.messages": [{"role": "assistant", "parts": [{"type": "tool_call", "id": "c1", "name": "run_sql",
                                        "arguments": {"sql": "SELECT country, COUNT(*) FROM orders GROUP BY country"}}]}],
        }, 0.1, 1),
        span(TRACE, TOOL, ROOT, "execute_tool run_sql", {
            "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "run_sql",
            "gen_ai.tool.call.arguments": {"sql": "SELECT country, COUNT(*) FROM orders GROUP BY country"},
            "gen_ai.tool.call.result": "France 3",
        }, 1, 2),
        span(TRACE, ANSWER, ROOT, "chat gpt-4o-mini", {
            "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.usage.input_tokens": 200, "gen_ai.usage.output_tokens": 20,
            "gen_ai.output.messages": [{"role": "assistant", "content": "France leads with 3 orders."}],
        }, 2, 2.9),
    ]  # fmt: skip


@pytest.fixture
async def token(django_user_model):
    def issue():
        user = django_user_model.objects.create_user("ingest", password="x")
        return user, ApiToken.issue(user, "otel")[1]

    return await database_sync_to_async(issue)()


class Response:
    """An answer of the OTLP endpoint, read as a test reads one."""

    def __init__(self, answer: dict) -> None:
        self.status_code = answer["status"]
        self.content = answer["body"]
        self.headers = {name.decode().lower(): value.decode() for name, value in answer["headers"]}

    def __getitem__(self, name: str) -> str:
        return self.headers[name.lower()]

    def json(self):
        return json.loads(self.content)


@pytest.fixture
async def post(token, settings):
    """POST to ``/v1/traces`` through the server's ASGI application (Django's behind it)."""
    settings.TRACE_OTLP_COMPLETE_AFTER_SECONDS = 0.0
    endpoint = OtlpEndpoint(get_asgi_application())
    _, key = token

    async def send(
        body, content_type="application/json", key=key, encoding=None, method="POST", host="testserver", forwarded=None
    ):
        if isinstance(body, dict):
            body = json.dumps(body).encode()
        headers = [(b"host", host.encode()), (b"content-type", content_type.encode())]
        if forwarded:
            headers.append((b"x-forwarded-host", forwarded.encode()))
        if encoding:
            headers.append((b"content-encoding", encoding.encode()))
        if key:
            headers.append((b"authorization", f"Bearer {key}".encode()))
        communicator = HttpCommunicator(endpoint, method, "/v1/traces", body=body, headers=headers)
        return Response(await communicator.get_response(timeout=60))

    yield send
    await get_runtime().store.drain()


async def settle() -> None:
    await get_runtime().ingestor.sweep(now=time.monotonic() + 10)
    await get_runtime().store.drain()


async def test_a_json_export_becomes_a_trace_with_typed_runs(post, token):
    response = await post(export(*agent_spans()))
    assert response.status_code == 200 and response.json() == {}
    await settle()

    trace = await Trace.objects.aget(pk=trace_uuid(TRACE))
    assert trace.source == Trace.Source.OTEL and trace.owner_id == token[0].pk
    assert trace.status == Trace.Status.SUCCESS and trace.request == QUESTION
    assert trace.final_response == "France leads with 3 orders."
    assert trace.agent_name == "shop-agent" and trace.total_tokens == 370 and trace.duration_ms == 3000
    assert trace.total_cost > 0  # gpt-4o-mini is in the price table

    runs = {run.name: run async for run in Run.objects.filter(trace=trace)}
    root = runs["invoke_agent shop"]
    assert root.run_type == Run.Type.AGENT and root.parent_id is None
    think = await Run.objects.filter(trace=trace, run_type=Run.Type.THINK).order_by("start_time").afirst()
    assert think.parent_id == root.pk and think.prompt_tokens == 120 and think.completion_tokens == 30
    assert [m["role"] for m in think.inputs["messages"]] == ["system", "user"]
    assert think.outputs["tool_calls"][0]["function"]["name"] == "run_sql"
    tool = runs["run_sql"]
    assert tool.run_type == Run.Type.TOOL and tool.outputs["output"] == "France 3"
    assert tool.outputs["sql"].startswith("SELECT country")  # the SQL view of native tool calls
    assert tool.pk == run_id(trace_uuid(TRACE), TOOL)

    events = [e async for e in Event.objects.filter(trace=trace).order_by("seq")]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    kinds = [e.event_type for e in events]
    assert kinds[0] == "trace_started" and kinds[-1] == "trace_completed"
    assert kinds.count("think_completed") == 2 and kinds.count("tool_completed") == 1


async def test_protobuf_gzip_and_deflate_bodies_and_base64_ids(post):
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                scope_spans=[
                    ScopeSpans(
                        spans=[
                            SpanProto(
                                trace_id=bytes.fromhex(TRACE),
                                span_id=bytes.fromhex(ROOT),
                                name="root",
                                start_time_unix_nano=int(T0 * 1e9),
                                end_time_unix_nano=int((T0 + 1) * 1e9),
                                attributes=[KeyValue(key="input.value", value=AnyValue(string_value=QUESTION))],
                            )
                        ]
                    )
                ]
            )
        ]
    )
    response = await post(gzip.compress(request.SerializeToString()), "application/x-protobuf", encoding="gzip")
    assert response.status_code == 200 and response["Content-Type"] == "application/x-protobuf"
    ExportTraceServiceResponse().ParseFromString(response.content)

    # The same trace, another span, as JSON with base64 ids, deflated.
    child = span(TRACE, THINK, ROOT, "step", {}, 0.1, 0.5)
    child["traceId"] = base64.b64encode(bytes.fromhex(TRACE)).decode()
    child["spanId"] = base64.b64encode(bytes.fromhex(THINK)).decode()
    child["parentSpanId"] = base64.b64encode(bytes.fromhex(ROOT)).decode()
    response = await post(zlib.compress(json.dumps(export(child)).encode()), encoding="deflate")
    assert response.status_code == 200
    await settle()
    runs = [run async for run in Run.objects.filter(trace_id=trace_uuid(TRACE))]
    assert {r.pk for r in runs} == {run_id(trace_uuid(TRACE), ROOT), run_id(trace_uuid(TRACE), THINK)}
    assert next(r for r in runs if r.pk == run_id(trace_uuid(TRACE), THINK)).parent_id == run_id(
        trace_uuid(TRACE), ROOT
    )


async def test_a_retried_export_and_late_pending_copies_change_nothing(post):
    spans = agent_spans()
    assert (await post(export(*spans))).status_code == 200
    await settle()
    before = await Event.objects.acount()
    assert (await post(export(*spans))).status_code == 200  # retried
    assert (await post(export(*(pending(s) for s in spans)))).status_code == 200  # pending after final
    await settle()
    assert await Event.objects.acount() == before
    assert await Run.objects.acount() == 4


async def test_pending_spans_show_runs_as_they_start_and_their_end_updates_them_in_place(post):
    root, think, *_ = agent_spans()
    assert (await post(export(pending(root), pending(think)))).status_code == 200
    await get_runtime().store.drain()
    trace = await Trace.objects.aget(pk=trace_uuid(TRACE))
    assert trace.status == Trace.Status.RUNNING and trace.request == QUESTION
    runs = {run.pk: run async for run in Run.objects.filter(trace=trace)}
    assert set(runs) == {
        run_id(trace_uuid(TRACE), ROOT),
        run_id(trace_uuid(TRACE), THINK),
    }  # the real spans' runs, not the copies'
    assert all(run.status == Run.Status.RUNNING for run in runs.values())
    assert runs[run_id(trace_uuid(TRACE), THINK)].parent_id == run_id(trace_uuid(TRACE), ROOT)
    kinds = [e async for e in Event.objects.filter(trace=trace).order_by("seq").values_list("event_type", flat=True)]
    assert kinds == ["trace_started", "step_started", "think_started"]

    await settle()
    assert (await Trace.objects.aget(pk=trace.pk)).status == Trace.Status.RUNNING  # its root is open

    assert (await post(export(think, root))).status_code == 200
    await settle()
    trace = await Trace.objects.aget(pk=trace.pk)
    assert trace.status == Trace.Status.SUCCESS
    assert await Run.objects.filter(trace=trace).acount() == 2
    assert not await Run.objects.filter(trace=trace, status=Run.Status.RUNNING).aexists()


async def test_a_child_before_its_parent_waits_under_a_placeholder_that_becomes_the_parent(post):
    root, think, tool, answer = agent_spans()
    assert (await post(export(tool))).status_code == 200
    await get_runtime().store.drain()
    placeholder = await Run.objects.aget(pk=run_id(trace_uuid(TRACE), ROOT))
    assert placeholder.status == Run.Status.RUNNING and "waiting" in placeholder.name
    assert (await Run.objects.aget(pk=run_id(trace_uuid(TRACE), TOOL))).parent_id == placeholder.pk

    assert (await post(export(root, think, answer))).status_code == 200
    await settle()
    root_run = await Run.objects.aget(pk=run_id(trace_uuid(TRACE), ROOT))
    assert root_run.name == "invoke_agent shop" and root_run.status == Run.Status.SUCCESS
    trace = await Trace.objects.aget(pk=trace_uuid(TRACE))
    assert trace.status == Trace.Status.SUCCESS and trace.total_runs == 4


async def test_errors_and_exceptions_become_run_errors(post):
    root, think, tool, _ = agent_spans()
    tool["status"] = {"code": 2, "message": "syntax error"}
    tool["events"] = [
        {"name": "exception", "timeUnixNano": tool["endTimeUnixNano"],
         "attributes": attributes({"exception.type": "OperationalError", "exception.message": "near FROM: syntax error"})}
    ]  # fmt: skip
    root["status"] = {"code": 2, "message": "the agent gave up"}
    assert (await post(export(root, think, tool))).status_code == 200
    await settle()
    run = await Run.objects.aget(pk=run_id(trace_uuid(TRACE), TOOL))
    assert run.status == Run.Status.ERROR and run.error_type == "OperationalError"
    assert run.error == "near FROM: syntax error"
    assert await Event.objects.filter(trace_id=trace_uuid(TRACE), event_type="run_error").aexists()
    trace = await Trace.objects.aget(pk=trace_uuid(TRACE))
    assert trace.status == Trace.Status.ERROR and trace.error == "the agent gave up"


async def test_an_open_span_without_news_is_abandoned_and_its_trace_ends(post, settings):
    settings.TRACE_OTLP_ABANDON_SECONDS = 30
    root, think, *_ = agent_spans()
    assert (await post(export(pending(root), think))).status_code == 200
    await get_runtime().ingestor.sweep(now=time.monotonic() + 5)
    await get_runtime().store.drain()
    assert (await Trace.objects.aget(pk=trace_uuid(TRACE))).status == Trace.Status.RUNNING
    await get_runtime().ingestor.sweep(now=time.monotonic() + 31)  # abandons the root
    await get_runtime().ingestor.sweep(now=time.monotonic() + 31)  # then completes the trace
    await get_runtime().store.drain()
    trace = await Trace.objects.aget(pk=trace_uuid(TRACE))
    assert trace.status == Trace.Status.ERROR and "abandoned" in trace.error
    root_run = await Run.objects.aget(pk=run_id(trace_uuid(TRACE), ROOT))
    assert root_run.status == Run.Status.ERROR and root_run.error_type == "Abandoned"


async def test_bad_requests_get_clear_statuses_and_store_nothing(post, token, django_user_model, settings):
    body = export(*agent_spans())
    assert (await post(body, key="")).status_code == 401
    assert (await post(body, key="ts_not-a-token")).status_code == 401
    assert (await post(body, content_type="text/plain")).status_code == 415
    assert (await post(body, encoding="br")).status_code == 415
    assert (await post(b"\x0a\xff\xff\xff", "application/x-protobuf")).status_code == 400
    assert (await post(b"{not json")).status_code == 400
    assert (await post(b"[1, 2]")).status_code == 400
    bad_id = export(span("xyz", ROOT, None, "root", {}, 0, 1))
    response = await post(bad_id)
    assert response.status_code == 400 and "bad id" in response.json()["message"]
    assert (await post(b"not gzip", encoding="gzip")).status_code == 400
    response = await post(body, method="GET")
    assert response.status_code == 405 and response["Allow"] == "POST"
    response = await post(body, host="attacker.example")
    assert response.status_code == 400 and b"ALLOWED_HOSTS" in response.content
    settings.USE_X_FORWARDED_HOST = True  # behind a proxy, the host it was asked for
    assert (await post(body, host="testserver", forwarded="attacker.example")).status_code == 400
    settings.USE_X_FORWARDED_HOST = False
    assert await Trace.objects.acount() == 0

    # Revoked: refused from then on.
    _, key = token
    await database_sync_to_async(
        lambda: ApiToken.objects.filter(key_hash=ApiToken.hash(key)).update(revoked_at="2026-01-01T00:00:00Z")
    )()
    assert (await post(body)).status_code == 401


async def test_bodies_over_the_limit_are_refused_before_and_after_decompression(post, settings):
    settings.TRACE_OTLP_MAX_BODY_BYTES = 64 * 1024
    assert (await post(b"{" + b" " * (70 * 1024) + b"}")).status_code == 413
    bomb = gzip.compress(b" " * (50 * 1024 * 1024))  # 50 MiB of spaces in ~50 KiB
    assert len(bomb) < 64 * 1024
    response = await post(bomb, encoding="gzip")
    assert response.status_code == 413 and "decompressed" in response.json()["message"]
    assert await Trace.objects.acount() == 0


async def test_spans_over_the_per_request_limit_and_long_attributes(post, settings):
    settings.TRACE_OTLP_MAX_SPANS = 2
    settings.TRACE_OTLP_MAX_ATTRIBUTE_BYTES = 1024
    root, think, tool, _ = agent_spans()
    tool["attributes"] += attributes({"gen_ai.tool.call.result": "x" * 5000})
    response = await post(export(root, tool, think))
    assert response.status_code == 200
    assert response.json()["partialSuccess"]["rejectedSpans"] == "1"
    await settle()
    run = await Run.objects.aget(pk=run_id(trace_uuid(TRACE), TOOL))
    assert run.outputs["output"].endswith("[truncated: 5,000 bytes in all]") and len(run.outputs["output"]) < 1100


async def test_a_span_for_another_users_trace_is_rejected_without_saying_whose_it_is(post, django_user_model):
    """Whoever exports a trace id first owns it. Another token's spans for it are rejected with the
    reason any trace id it may not write gets, which does not say that the trace exists."""
    assert (await post(export(*agent_spans()))).status_code == 200
    await settle()
    unowned = "0123456789abcdef0123456789abcdef"
    await database_sync_to_async(make_trace)("a runagent run without --user", id=trace_uuid(unowned))

    def other_key():
        user = django_user_model.objects.create_user("other", password="x")
        return ApiToken.issue(user, "other")[1]

    key = await database_sync_to_async(other_key)()
    intruder = span(TRACE, "3132333435363738", ROOT, "injected", {}, 1, 2)
    response = await post(export(intruder), key=key)
    partial = response.json()["partialSuccess"]
    assert response.status_code == 200 and partial["rejectedSpans"] == "1"
    assert partial["errorMessage"] == f"trace {TRACE}: this token may not write to it"
    assert not await Run.objects.filter(name="injected").aexists()
    response = await post(export(span(unowned, "3132333435363738", None, "injected", {}, 1, 2)), key=key)
    assert response.json()["partialSuccess"]["errorMessage"] == f"trace {unowned}: this token may not write to it"
    assert not await Run.objects.filter(name="injected").aexists()


async def test_a_socket_following_the_trace_sees_each_step_while_the_root_is_open(post):
    root, think, tool, _ = agent_spans()
    watcher = connect("/ws/watcher?protocol=2")
    assert (await watcher.connect())[0]
    await receive(watcher)  # connection_established
    await send(watcher, action="subscribe_all")
    assert (await post(export(pending(root)))).status_code == 200
    started = await receive_until(watcher, "trace_started")
    assert started[-1]["data"]["request"] == QUESTION
    await send(watcher, action="subscribe_trace", trace_id=str(trace_uuid(TRACE)), after_seq=0)
    await receive_until(watcher, "step_started")

    assert (await post(export(pending(think)))).status_code == 200
    await receive_until(watcher, "think_started")
    assert (await post(export(think, tool))).status_code == 200
    seen = await receive_until(watcher, "tool_completed")
    assert "think_completed" in [m["event_type"] for m in seen]
    assert (await Trace.objects.aget(pk=trace_uuid(TRACE))).status == Trace.Status.RUNNING
    await watcher.disconnect()


async def test_a_trace_id_every_database_stores_is_kept_and_any_other_maps_to_one(post):
    """MariaDB's UUID type refuses about a quarter of random 128-bit ids: those get a UUID derived
    from them, the same on every database, and the trace keeps the id its spans carry."""
    rfc = "4bf92f3577b34da6a3ce929d0e0e4736"  # version 4, variant 10xx: stored as it is
    other = "fec99b490d9df83676c7c9edca7a86d6"  # version f, variant 0xxx: refused by MariaDB as it is
    rfc_variant = "bc9d6ef65613c4a68058f8652f16d4ad"  # version c, variant 10xx: refused by MariaDB too
    assert trace_uuid(rfc) == uuid.UUID(rfc)
    assert trace_uuid(other) != uuid.UUID(other) and trace_uuid(other) == trace_uuid(other.upper())
    assert trace_uuid(rfc_variant) != uuid.UUID(rfc_variant)
    for trace_hex in (rfc, other, rfc_variant):
        assert (
            await post(export(span(trace_hex, ROOT, None, "root", {"input.value": QUESTION}, 0, 1)))
        ).status_code == 200
    await settle()
    for trace_hex in (rfc, other, rfc_variant):
        trace = await Trace.objects.aget(pk=trace_uuid(trace_hex))
        assert trace.metadata["otel_trace_id"] == trace_hex and trace.status == Trace.Status.SUCCESS


async def test_a_live_trace_gets_its_question_and_model_from_spans_that_come_later(post):
    """An agent (the Agents SDK) may start its root span before it knows the question, and no
    span of the first export may name a model."""
    root = span(TRACE, ROOT, None, "workflow", {}, 0, 3)
    _, think, _, answer = agent_spans()
    assert (await post(export(pending(root)))).status_code == 200
    assert (await post(export(think, answer, root))).status_code == 200
    await settle()
    trace = await Trace.objects.aget(pk=trace_uuid(TRACE))
    assert trace.request == QUESTION  # the first model call's user message
    assert trace.model == "gpt-4o-mini"


async def test_the_root_spans_input_and_output_are_the_question_and_answer_whatever_came_first(post):
    """A long run exports its steps as they end, and its root span last: the model's first prompt
    is no more than the question until the root says it."""
    root, think, tool, answer = agent_spans()
    think = json.loads(json.dumps(think).replace(QUESTION, "step 1: list the tables"))
    assert (await post(export(think, tool))).status_code == 200
    assert (await post(export(answer, root))).status_code == 200
    await settle()
    trace = await Trace.objects.aget(pk=trace_uuid(TRACE))
    assert trace.request == QUESTION
    assert trace.final_response == "France leads with 3 orders."


async def test_a_streamed_body_is_read_only_until_it_passes_the_limit(token, settings):
    settings.TRACE_OTLP_MAX_BODY_BYTES = 65536
    _, key = token
    chunk = b" " * 4096
    taken = 0

    async def receive():
        nonlocal taken
        taken += 1
        return {"type": "http.request", "body": chunk, "more_body": taken < 64}  # 256 KiB in all

    sent = []

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/traces",
        "headers": [(b"host", b"testserver"), (b"content-type", b"application/json"), (b"authorization", f"Bearer {key}".encode())],
    }  # fmt: skip
    await OtlpEndpoint(None)(scope, receive, send)
    assert sent[0]["status"] == 413 and b"larger than 65,536 bytes" in sent[1]["body"]
    assert taken == 65536 // 4096 + 1  # not a chunk more than it took to pass the limit


@pytest.mark.usefixtures("token")
def test_a_body_over_the_limit_is_refused_before_it_is_read():
    """Under uvicorn, which streams bodies to the application, a Content-Length over the limit is
    answered at once, and a request without a valid token before its body is read. (daphne reads a
    whole body before the application sees it: the README says to limit bodies at the proxy in
    front of it.)"""
    import http.client

    from tests.servers import uvicorn

    with uvicorn(TRACE_OTLP_MAX_BODY_BYTES="65536") as host:
        name, port = host.split(":")
        connection = http.client.HTTPConnection(name, int(port), timeout=10)
        connection.putrequest("POST", "/v1/traces")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(10 * 1024**3))  # 10 GiB announced, none sent
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 413 and b"larger than 65,536 bytes" in response.read()

        def chunks():
            for _ in range(64):
                yield b" " * 4096  # 256 KiB in all

        connection = http.client.HTTPConnection(name, int(port), timeout=10)
        connection.request(
            "POST", "/v1/traces", body=chunks(), headers={"Content-Type": "application/json"}, encode_chunked=True
        )
        assert connection.getresponse().status == 401

        connection = http.client.HTTPConnection(name, int(port), timeout=10)  # and it keeps serving
        connection.request("POST", "/v1/traces", body=b"{}", headers={"Content-Type": "application/json"})
        assert connection.getresponse().status == 401


def test_a_span_s_run_id_as_text_is_its_uuid5():
    for number in range(200):
        trace_id = uuid.uuid5(uuid.NAMESPACE_OID, str(number))
        span_hex = f"{number * 7919:016x}"
        expected = uuid.uuid5(RUN_NAMESPACE, f"{trace_id.hex}:{span_hex}")
        assert run_text_id(trace_id, span_hex) == str(expected)
        assert run_id(trace_id, span_hex) == expected


LOOP_TRACE = "6b8efff798038103d269b633813fc60c"
A, B = "0a0a0a0a0a0a0a0a", "0b0b0b0b0b0b0b0b"


async def test_spans_whose_parents_loop_are_refused_for_that_trace_only(post, async_client):
    """A under B under A cannot be drawn (or stored: each row's parent must exist first). Those
    spans are rejected with why; the export's other traces are stored, and nothing looks like the
    database is down: /health stays 200 and the next export is stored."""
    looped = [span(LOOP_TRACE, A, B, "a", {}, 0, 1), span(LOOP_TRACE, B, A, "b", {}, 0, 1)]
    response = await post(export(*looped, *agent_spans()))
    assert response.status_code == 200
    partial = response.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "2" and "parents form a loop" in partial["errorMessage"]
    await settle()
    assert not await Trace.objects.filter(pk=trace_uuid(LOOP_TRACE)).aexists()
    assert (await Trace.objects.aget(pk=trace_uuid(TRACE))).status == Trace.Status.SUCCESS
    health = await async_client.get("/health")
    assert health.status_code == 200 and json.loads(health.content)["status"] != "unhealthy"

    later = "7b8efff798038103d269b633813fc60c"
    assert (await post(export(span(later, ROOT, None, "root", {"input.value": QUESTION}, 0, 1)))).json() == {}
    await settle()
    assert (await Trace.objects.aget(pk=trace_uuid(later))).status == Trace.Status.SUCCESS


async def test_a_loop_closed_by_a_later_export_is_refused_then(post):
    assert (await post(export(span(LOOP_TRACE, A, B, "a", {}, 0, 1)))).json() == {}  # B not here yet
    response = await post(export(span(LOOP_TRACE, B, A, "b", {}, 0, 1)))
    assert response.json()["partialSuccess"]["rejectedSpans"] == "1"
    placeholder = await Run.objects.aget(pk=run_id(trace_uuid(LOOP_TRACE), B))
    assert placeholder.metadata.get("placeholder") and placeholder.parent_id is None


async def test_a_self_parent_span_is_refused_and_its_trace_completes(post):
    root, think, tool, answer = agent_spans()
    think["parentSpanId"] = think["spanId"]
    response = await post(export(root, think, tool, answer))
    partial = response.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "1" and "its own parent" in partial["errorMessage"]
    await settle()
    trace = await Trace.objects.aget(pk=trace_uuid(TRACE))
    assert trace.status == Trace.Status.SUCCESS and trace.total_runs == 3


async def test_a_trace_of_a_self_parent_span_alone_is_not_recorded(post):
    lonely = span(LOOP_TRACE, A, A, "a", {}, 0, 1)
    assert (await post(export(lonely))).json()["partialSuccess"]["rejectedSpans"] == "1"
    await settle()
    assert not await Trace.objects.filter(pk=trace_uuid(LOOP_TRACE)).aexists()
    assert trace_uuid(LOOP_TRACE) not in get_runtime().ingestor.traces  # nothing kept for it either


async def test_a_trace_that_cannot_complete_is_closed_by_the_abandon_sweep(post, settings):
    """A child whose parent and root never come: no news for TRACE_OTLP_ABANDON_SECONDS, and the
    trace ends with what it has, its placeholder closed."""
    settings.TRACE_OTLP_ABANDON_SECONDS = 30
    _, _, tool, _ = agent_spans()
    assert (await post(export(tool))).status_code == 200
    await get_runtime().ingestor.sweep(now=time.monotonic() + 5)
    await get_runtime().store.drain()
    assert (await Trace.objects.aget(pk=trace_uuid(TRACE))).status == Trace.Status.RUNNING
    await get_runtime().ingestor.sweep(now=time.monotonic() + 31)
    await get_runtime().store.drain()
    trace = await Trace.objects.aget(pk=trace_uuid(TRACE))
    assert trace.status == Trace.Status.ERROR and "abandoned" in trace.error
    assert not await Run.objects.filter(trace=trace, status=Run.Status.RUNNING).aexists()


async def test_an_idle_sweep_reads_nothing(post, monkeypatch):
    """Traces waiting for news cost the sweeper nothing until one is due: it reads the front of
    the queue and stops (15,000 such traces once kept it at 5 % of a core while idle)."""
    from traces.ingest import ingestor

    for n in range(50):
        trace_hex = uuid.UUID(int=n + 1, version=4).hex
        assert (await post(export(pending(span(trace_hex, ROOT, None, "root", {}, 0, 1))))).status_code == 200
    await get_runtime().store.drain()
    reads = []
    real_rows = ingestor._rows

    async def counted(trace_ids):
        reads.append(len(trace_ids))
        return await real_rows(trace_ids)

    monkeypatch.setattr(ingestor, "_rows", counted)
    await get_runtime().ingestor.sweep(now=time.monotonic() + 60)
    assert reads == []  # none is due: no query, and the queue was read only up to its first entry
    await get_runtime().ingestor.sweep(now=time.monotonic() + 3600)
    assert reads == [50]  # all due at once: one query for them all


async def test_an_export_reaches_only_its_owners_session_whatever_session_id_it_names(post, token, settings):
    """With auth on, a session id naming another user's namespace (``u<id>.<session>``) or the same
    bare id stays in the exporter's own namespace."""
    settings.TRACE_REQUIRE_AUTH = True
    exporter, exporters_key = token
    victim, victims_key = await database_sync_to_async(
        lambda: ApiToken.issue(type(exporter).objects.create_user("vic"), "t")
    )()
    victim_id = victim.user_id

    async def socket(path: str):
        communicator = connect(path)
        assert (await communicator.connect())[0]
        assert (await receive(communicator))["event_type"] == "connection_established"
        return communicator

    victims = await socket(f"/ws/tab?token={victims_key}")
    exporters = await socket(f"/ws/tab?token={exporters_key}")
    for number, session in enumerate((f"u{victim_id}.tab", "tab")):
        trace = f"{number + 1:032x}"
        root = span(trace, ROOT, None, "agent", {"session.id": session}, 0, 1)
        assert (await post(export(root))).status_code == 200
    await settle()
    assert await victims.receive_nothing(0.5)
    assert (await receive_until(exporters, "trace_started"))[-1]["data"]["trace_id"]  # the exporter's own "tab"
    await victims.disconnect()
    await exporters.disconnect()


async def test_spans_dated_before_2000_or_more_than_a_day_ahead_are_rejected(post):
    """They would pin their trace to the top (or the bottom) of the history."""
    ahead = time.time() + 2 * 86400 - T0
    ancient = 946684800 - 1 - T0  # a second before 2000-01-01
    root, think, tool, answer = agent_spans()
    future = span(TRACE, "3132333435363738", ROOT, "from the future", {}, ahead, ahead + 1)
    past = span(TRACE, "4142434445464748", ROOT, "from the past", {}, ancient, ancient + 1)
    ends_ahead = span(TRACE, "5152535455565758", ROOT, "ends ahead", {}, 1, ahead)
    response = await post(export(root, think, future, past, ends_ahead, tool, answer))
    partial = response.json()["partialSuccess"]
    assert response.status_code == 200 and partial["rejectedSpans"] == "3"
    for span_id in ("3132333435363738", "4142434445464748", "5152535455565758"):
        reason = f"span {span_id} of trace {TRACE}: dated before 2000-01-01 or more than a day ahead"
        assert reason in partial["errorMessage"]
    await settle()
    trace = await Trace.objects.aget(pk=trace_uuid(TRACE))
    assert trace.status == Trace.Status.SUCCESS and abs(trace.started_at.timestamp() - T0) < 1
    assert await Run.objects.filter(trace=trace).acount() == 4
    lonely = span("00112233445566778899aabbccddeeff", ROOT, None, "alone in the future", {}, ahead, ahead + 1)
    assert (await post(export(lonely))).json()["partialSuccess"]["rejectedSpans"] == "1"
    assert not await Trace.objects.filter(pk=trace_uuid("00112233445566778899aabbccddeeff")).aexists()


async def test_json_nested_too_deeply_is_a_clear_answer_not_a_server_error(post):
    deep = ("[" * 1000 + "]" * 1000).encode()
    for body in (
        b'{"resourceSpans": ' + deep + b"}",
        b'{"resourceSpans": [{"resource": {"attributes": ' + deep + b"}}]}",
    ):
        response = await post(body)
        assert response.status_code == 400 and "nested deeper than" in response.json()["message"]
    # Protobuf: an attribute holding key-value lists 1,000 deep, encoded here (protobuf's own
    # writer refuses to): KeyValue.value is field 2, AnyValue.kvlist_value 6, KeyValueList.values 1.
    nested = KeyValue(key="deep", value=AnyValue(string_value="x")).SerializeToString()
    for _ in range(1000):
        nested = KeyValue(key="deep").SerializeToString() + field(2, field(6, field(1, nested)))
    deep_span = SpanProto(trace_id=bytes.fromhex(TRACE), span_id=bytes.fromhex(ROOT), name="deep").SerializeToString()
    deep_span += field(9, nested)  # Span.attributes
    body = field(1, field(2, field(2, deep_span)))  # request.resource_spans[0].scope_spans[0].spans[0]
    response = await post(body, "application/x-protobuf")
    assert response.status_code == 400 and b"MaxDepth" in response.content
    assert await Trace.objects.acount() == 0

    root, think, tool, answer = agent_spans()
    tool["attributes"] += attributes({"gen_ai.tool.call.result": nested_object(1000)})
    response = await post(export(root, think, tool, answer))
    assert response.status_code == 200 and response.json() == {}
    await settle()
    run = await Run.objects.aget(pk=run_id(trace_uuid(TRACE), TOOL))
    assert run.outputs["output"] == nested_object(1000)  # the text as it came
