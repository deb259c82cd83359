"""Exports of one agent's traces reach any server process, in any order (a round-robin load
balancer, a restart): each trace is stored whole, with the totals of its runs, and no export is
answered 503. Real daphne processes sharing this test's database (and Redis, on MariaDB + Redis)."""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request
import uuid
from decimal import Decimal

import pytest
from django.db.models import Sum

from agents.pricing import PriceTable
from tests.servers import completed_trace, daphne_server
from tests.test_otlp_ingest import attributes, pending
from traces.ingest.ingestor import trace_uuid
from traces.models import ApiToken, Run, Trace

pytestmark = [pytest.mark.django_db(transaction=True)]

TRACES = 6
MODEL = "gpt-4o-mini"
SERVER = {"TRACE_OTLP_COMPLETE_AFTER_SECONDS": "0.3"}


@pytest.fixture
def token(django_user_model) -> str:
    user = django_user_model.objects.create_user("agent", password="x")
    return ApiToken.issue(user, "otel")[1]


def trace_hex(i: int) -> str:
    return uuid.UUID(int=i + 1, version=4).hex  # RFC 4122 ids: stored as they are


def span(trace: int, span_id: str, parent: str | None, name: str, attrs: dict, start: float, end: float) -> dict:
    base = 1_760_000_000 + trace * 100
    return {
        "traceId": trace_hex(trace),
        "spanId": span_id,
        "parentSpanId": parent or "",
        "name": name,
        "startTimeUnixNano": str(int((base + start) * 1e9)),
        "endTimeUnixNano": str(int((base + end) * 1e9)),
        "attributes": attributes(attrs),
    }


ROOT = "a000000000000001"


def call(trace: int, n: int) -> dict:
    """The trace's n-th model call: n × 100 prompt tokens, n × 10 completion tokens."""
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.request.model": MODEL,
             "gen_ai.usage.input_tokens": 100 * n, "gen_ai.usage.output_tokens": 10 * n}  # fmt: skip
    return span(trace, f"b00000000000000{n}", ROOT, f"chat {n}", attrs, n, n + 0.5)


def root(trace: int) -> dict:
    attrs = {"gen_ai.operation.name": "invoke_agent", "input.value": f"question {trace}", "output.value": "done"}
    return span(trace, ROOT, None, "invoke_agent", attrs, 0, 9)


def export(*spans: dict) -> bytes:
    resource = {"attributes": attributes({"service.name": "balanced-agent"})}
    return json.dumps({"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": list(spans)}]}]}).encode()


def post(host: str, token: str, body: bytes) -> dict:
    request = urllib.request.Request(
        f"http://{host}/v1/traces",
        data=body,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{exc.code} from {host}: {exc.read()[:500]!r}") from None


@pytest.mark.usefixtures("configured_agent_db")
def test_exports_alternating_between_two_processes_and_a_restart_keep_the_runs_totals(token):
    every = range(TRACES)
    with daphne_server(**SERVER) as first, daphne_server(**SERVER) as second:
        # Each export carries a part of every trace; they go to the two processes in turn.
        assert post(first.host, token, export(*(pending(root(t)) for t in every), *(call(t, 1) for t in every))) == {}
        assert post(second.host, token, export(*(call(t, 2) for t in every))) == {}
        assert post(first.host, token, export(*(call(t, 3) for t in every))) == {}
        assert post(second.host, token, export(*(call(t, 4) for t in every))) == {}
        first.process.send_signal(signal.SIGKILL)  # gone without a word, its view of the traces with it
        first.process.wait(10)
        with daphne_server(**SERVER) as restarted:
            assert post(restarted.host, token, export(*(call(t, 5) for t in every))) == {}
            assert post(second.host, token, export(*(call(t, 6) for t in every), *(root(t) for t in every))) == {}
            traces = [completed_trace(trace_uuid(trace_hex(t)), seconds=30) for t in every]

    price = Decimal(str(PriceTable.from_file(None).cost(MODEL, _usage(100, 10))))
    for trace in traces:
        assert trace.status == Trace.Status.SUCCESS, trace.error
        runs = Run.objects.filter(trace=trace)
        sums = runs.aggregate(Sum("prompt_tokens"), Sum("completion_tokens"), Sum("total_tokens"), Sum("cost"))
        assert (trace.prompt_tokens, trace.completion_tokens, trace.total_tokens) == (2100, 210, 2310)
        assert (sums["prompt_tokens__sum"], sums["completion_tokens__sum"], sums["total_tokens__sum"]) == (
            2100,
            210,
            2310,
        )
        assert trace.total_cost == sums["cost__sum"] and trace.total_cost > 0
        assert abs(trace.total_cost - price * 21) <= Decimal("0.00000021")  # 1 + 2 + … + 6 calls' worth
        assert trace.total_runs == runs.count() == 7  # the root and six calls, each once
        assert trace.request == f"question {traces.index(trace)}" and trace.final_response == "done"
        seqs = list(trace.events.order_by("seq").values_list("seq", flat=True))
        assert seqs == list(range(1, trace.last_seq + 1))
        assert trace.events.filter(event_type="trace_completed").count() == 1


def _usage(prompt: int, completion: int):
    from agents.chat import Usage

    return Usage(prompt, completion, prompt + completion)
