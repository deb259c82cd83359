"""The small client (tracesite_client.Tracesite) against a real daphne: each step is live while it
runs, the trace is stored like any other, errors are recorded and raised on, and a server that is
down never stops the agent."""

from __future__ import annotations

import asyncio
import contextvars
import gzip
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from websockets.sync.client import connect

from tests.servers import ROOT, completed_trace, daphne, free_port, read_until
from traces.ingest import otlp
from traces.models import ApiToken, Run, Trace
from tracesite_client import Tracesite

pytestmark = [pytest.mark.django_db(transaction=True)]

QUESTION = "how many orders per country?"
SQL = "SELECT country, COUNT(*) AS orders FROM orders GROUP BY country"
ANSWER = "France leads with 3 orders."
SYSTEM = {"role": "system", "content": "You answer from SQL."}


@pytest.fixture
def token(django_user_model) -> str:
    user = django_user_model.objects.create_user("agent-owner", password="x")
    return ApiToken.issue(user, "client")[1]


@pytest.fixture
def server():
    with daphne(TRACE_OTLP_COMPLETE_AFTER_SECONDS="0.2") as host:
        yield host


def finished(trace_id: str) -> Trace:
    return completed_trace(uuid.UUID(trace_id))


def test_it_shows_each_step_live_and_stores_the_question_answer_model_tokens_and_sql(server, token):
    with (
        Tracesite(f"http://{server}", token, service="shop-agent") as ts,
        connect(f"ws://{server}/ws/watcher?protocol=2") as ws,
    ):
        assert json.loads(ws.recv(timeout=10))["event_type"] == "connection_established"
        ws.send(json.dumps({"action": "subscribe_all"}))
        with ts.trace(QUESTION, session="client-test") as run:
            started = read_until(ws, "trace_started")[-1]
            assert started["data"]["request"] == QUESTION and started["trace_id"] == str(uuid.UUID(run.trace_id))
            ws.send(json.dumps({"action": "subscribe_trace", "trace_id": started["trace_id"], "after_seq": 0}))
            read_until(ws, "step_started")
            with ts.llm_call(
                model="gpt-4o-mini", messages=[SYSTEM, {"role": "user", "content": QUESTION}], temperature=0
            ) as call:
                assert read_until(ws, "think_started")[-1]["data"]["status"] == "running"  # before it ends
                call.result(
                    tool_calls=[{"name": "run_sql", "arguments": {"sql": SQL}}], prompt_tokens=120, completion_tokens=30
                )
            read_until(ws, "think_completed")
            with ts.tool_call("run_sql", arguments={"sql": SQL}) as tool:
                assert read_until(ws, "tool_started")[-1]["data"]["name"] == "run_sql"
                tool.result({"columns": ["country", "orders"], "rows": [["France", 3], ["Spain", 1]]})
            read_until(ws, "tool_completed")
            with ts.llm_call(model="gpt-4o-mini", messages=[{"role": "user", "content": QUESTION}]) as call:
                call.result(content=ANSWER, prompt_tokens=200, completion_tokens=20)
            run.answer(ANSWER)
        completed = read_until(ws, "trace_completed")[-1]
        assert completed["data"]["status"] == "success" and completed["data"]["final_response"] == ANSWER
        assert (
            ts.flush(10) and ts.dropped == 0 and ts.failed == 0 and ts.sent == 8
        )  # four spans, each started and ended

    trace = finished(run.trace_id)
    assert trace.source == Trace.Source.SDK and trace.agent_name == "shop-agent"
    assert trace.request == QUESTION and trace.final_response == ANSWER and trace.session_id == "client-test"
    assert trace.total_tokens == 370 and trace.total_cost > 0
    root = Run.objects.get(trace=trace, parent=None)
    assert root.run_type == Run.Type.AGENT and root.outputs == {"answer": ANSWER}
    first, second = Run.objects.filter(trace=trace, run_type=Run.Type.THINK).order_by("start_time")
    assert first.parent_id == root.pk and first.metadata["model"] == "gpt-4o-mini"
    assert (first.prompt_tokens, first.completion_tokens) == (120, 30)
    assert [m["role"] for m in first.inputs["messages"]] == ["system", "user"]
    assert first.outputs["tool_calls"][0]["function"] == {"name": "run_sql", "arguments": json.dumps({"sql": SQL})}
    assert first.metadata["parameters"]["temperature"] == 0
    assert second.outputs["content"] == ANSWER
    tool = Run.objects.get(trace=trace, run_type=Run.Type.TOOL)
    assert tool.name == "run_sql" and tool.parent_id == root.pk and tool.inputs == {"sql": SQL}
    assert tool.outputs["sql"] == SQL  # the SQL view
    assert tool.outputs["rows"] == [["France", 3], ["Spain", 1]]
    assert not Run.objects.filter(trace=trace, status=Run.Status.RUNNING).exists()


def test_an_exception_in_a_block_is_the_runs_error_and_is_raised_on(server, token):
    with Tracesite(f"http://{server}", token) as ts:
        with (
            pytest.raises(ZeroDivisionError),
            ts.trace("what is 1/0?") as run,
            ts.tool_call("divide", arguments={"a": 1, "b": 0}),
        ):
            print(1 / 0)
        assert ts.flush(10)
    trace = finished(run.trace_id)
    assert trace.status == Trace.Status.ERROR and "division by zero" in trace.error
    tool = Run.objects.get(trace=trace, run_type=Run.Type.TOOL)
    assert tool.status == Run.Status.ERROR and tool.error_type == "ZeroDivisionError"
    assert tool.error == "division by zero"


def test_steps_nest_across_threads_and_asyncio_tasks_and_the_decorator_records_arguments(server, token):
    with Tracesite(f"http://{server}", token) as ts:

        @ts.traced
        def lookup(table: str) -> dict:
            with ts.tool_call("describe_table", arguments={"table": table}) as tool:
                tool.result({"table": table, "columns": 3})
            return {"table": table}

        @ts.traced("summarize")
        async def summarize(text: str) -> str:
            await asyncio.sleep(0.01)
            return text.upper()

        async def both() -> list[str]:
            return await asyncio.gather(summarize("a"), summarize("b"))

        with ts.trace("fan out") as run:
            with ThreadPoolExecutor(2) as pool:
                for table in ("orders", "users"):
                    pool.submit(contextvars.copy_context().run, lookup, table).result()
            assert asyncio.run(both()) == ["A", "B"]
        assert ts.flush(10)

    trace = finished(run.trace_id)
    root = Run.objects.get(trace=trace, parent=None)
    lookups = Run.objects.filter(trace=trace, name__endswith="lookup")
    assert sorted(r.inputs["table"] for r in lookups) == ["orders", "users"]  # they start in the same ms
    assert all(r.parent_id == root.pk and r.outputs == {"table": r.inputs["table"]} for r in lookups)
    tools = Run.objects.filter(trace=trace, run_type=Run.Type.TOOL)
    assert {t.parent_id for t in tools} == {r.pk for r in lookups}  # each under its own thread's step
    summaries = Run.objects.filter(trace=trace, name="summarize")
    assert sorted(s.outputs["output"] for s in summaries) == ["A", "B"]
    assert {s.parent_id for s in summaries} == {root.pk}


def readme_snippet(marker: str) -> str:
    """The README's snippet for one way of tracing an agent (its section, the block with ``marker``)."""
    section = (ROOT / "README.md").read_text().split("\n## Trace your own agent\n", 1)[1].split("\n## ", 1)[0]
    return next(block for block in re.findall(r"```python\n(.*?)```", section, re.S) if marker in block)


def test_the_readme_snippet_runs_as_written(server, token, tmp_path):
    code = readme_snippet("from tracesite_client import Tracesite")
    code = code.replace("http://localhost:8000", f"http://{server}").replace("ts_...", token)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0 and not result.stderr, result.stderr

    trace = finished(Trace.objects.get().pk.hex)
    assert trace.status == Trace.Status.SUCCESS and trace.source == Trace.Source.SDK
    assert trace.request == QUESTION and trace.final_response == ANSWER and trace.agent_name == "shop-agent"
    names = sorted(Run.objects.filter(trace=trace).values_list("name", flat=True))
    assert names == ["chat gpt-4o-mini", "plan", "run_sql", "shop-agent"]
    assert Run.objects.get(trace=trace, name="plan").outputs == {"output": "ask the database"}


def test_the_package_needs_only_the_standard_library():
    """Neither OpenTelemetry, nor the SDK, nor anything of this project is imported by the client."""
    code = (
        "import sys\n"
        "for name in ('opentelemetry', 'google', 'django', 'agents', 'traces', 'tracesite', 'openai', 'pydantic'):\n"
        "    sys.modules[name] = None  # importing it raises ImportError\n"
        "import tracesite_client, tracesite_client.agents_sdk\n"
        "ts = tracesite_client.Tracesite('http://127.0.0.1:9', 'ts_x')\n"
        "print(ts.close(0))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    blocked = code.replace("'opentelemetry', ", "'json', ")  # the check can fail: json is needed
    assert subprocess.run([sys.executable, "-c", blocked], cwd=ROOT, env=env, capture_output=True).returncode != 0


def test_with_the_server_down_the_agent_runs_on_and_nothing_raises(caplog):
    caplog.set_level(logging.WARNING, logger="tracesite_client")
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    ts = Tracesite(down, "ts_whatever", max_queue=8, backoff=5.0, timeout=1.0)
    answers = []
    for i in range(20):
        with ts.trace(f"question {i}") as run:
            with ts.llm_call(model="m", messages=[{"role": "user", "content": "q"}]) as call:
                call.result(content=str(i))
            run.answer(str(i))
        answers.append(i)
    assert answers == list(range(20))  # the agent ran on

    began = time.monotonic()
    assert ts.flush(0.5) is False  # still retrying: the flush keeps its timeout
    assert time.monotonic() - began < 2
    assert ts.dropped > 0  # the queue is bounded
    assert ts.close(0.2) is False
    assert ts.sent == 0 and ts.dropped + ts.failed == 80  # 20 traces × 2 spans × (pending + final)
    warnings = [r for r in caplog.records if r.name == "tracesite_client" and r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [w.getMessage() for w in warnings]  # once, not per span or per retry
    assert "cannot reach" in warnings[0].getMessage() or "queue is full" in warnings[0].getMessage()


class ScriptedReceiver:
    """An HTTP server answering each export with the next scripted status, keeping what it got."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = deque(statuses)
        self.requests: list[tuple[dict, bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), body))
                status = receiver.statuses.popleft() if receiver.statuses else 200
                answer = b"{}" if status == 200 else b'{"code": 3, "message": "scripted"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                if status == 503:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(answer)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def spans(self, index: int) -> list[otlp.Span]:
        """The spans of one request, as the server's own OTLP decoder reads them."""
        return otlp.spans(otlp.parse(gzip.decompress(self.requests[index][1]), otlp.JSON), 65536)


def test_it_retries_429_and_503_and_gives_up_at_once_on_a_refused_token(caplog):
    caplog.set_level(logging.WARNING, logger="tracesite_client")
    receiver = ScriptedReceiver(503, 429, 200, 401)
    ts = Tracesite(receiver.url, "ts_key", service="retrying-agent", backoff=0.01)
    try:
        with ts.trace("how many users?") as run:
            assert ts.flush(10)  # the pending copy: refused twice, then taken
            run.answer("3")
        assert ts.flush(10)  # the span itself: 401, not retried
    finally:
        ts.close(1)
    assert len(receiver.requests) == 4 and ts.sent == 1 and ts.failed == 1 and ts.dropped == 0
    headers, body = receiver.requests[0]
    assert headers["Authorization"] == "Bearer ts_key" and headers["Content-Encoding"] == "gzip"
    assert headers["Content-Type"] == "application/json"
    assert receiver.requests[1][1] == receiver.requests[2][1] == body  # the same export, retried
    (pending,) = receiver.spans(0)
    assert pending.pending and pending.end is None and pending.parent_span_id is None
    assert pending.span_id == run.record.span_id and pending.trace_id == run.trace_id
    assert pending.resource["service.name"] == "retrying-agent" and pending.resource["tracesite.source"] == "sdk"
    (final,) = receiver.spans(3)
    assert not final.pending and final.span_id == run.record.span_id and final.end >= final.start
    assert final.attributes["tracesite.answer"] == "3"
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2  # once per outage: the 503s (the 429 and the recovery say nothing), the 401
    assert "HTTP 503" in warnings[0] and "HTTP 401" in warnings[1]


class RecordingServer:
    """An HTTP server that keeps the headers of every request, and answers each with ``status``
    (a redirect to ``location`` when it is one)."""

    def __init__(self, status: int = 200, location: str = "") -> None:
        self.headers: list[dict[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                server.headers.append(dict(self.headers))
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            do_GET = do_POST = do_HEAD = answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_the_token_is_never_sent_across_a_redirect_to_another_host(status):
    elsewhere = RecordingServer()  # another port: another origin
    redirecting = RecordingServer(status, location=f"{elsewhere.url}/v1/traces")
    ts = Tracesite(redirecting.url, "ts_secret", service="redirected-agent", max_retries=0)
    try:
        with ts.trace("how many users?") as run:
            run.answer("3")
        ts.flush(10)
    finally:
        ts.close(1)
        redirecting.close()
        elsewhere.close()
    assert redirecting.headers and all(h["Authorization"] == "Bearer ts_secret" for h in redirecting.headers)
    if status in (301, 302, 303):  # followed (as a GET, as urllib follows them)
        assert elsewhere.headers
    assert not [h for h in elsewhere.headers if "Authorization" in h]
