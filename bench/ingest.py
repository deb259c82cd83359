"""OTLP ingestion: spans/s into one daphne process, and how soon a watcher sees them.

    python bench/ingest.py                       # 100,000 spans in exports of 512, embedded defaults
    python bench/ingest.py --backend mysql       # MariaDB/MySQL + Redis (TEST_MYSQL_URL, REDIS_URL)
    python bench/ingest.py --spans 20000 --senders 2

Each trace is an agent run of 10 spans (a root, 4 LLM calls, 5 tool calls) with GenAI attributes,
sent as OTLP/protobuf by ``--senders`` keep-alive HTTP clients, as OpenTelemetry's exporter
sends them. A WebSocket watcher follows the all-traces feed; for the first new trace of each
export it records the time from the request being sent to the trace's start arriving at the
watcher. Afterwards every span is checked to be stored (runs) and every trace completed.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from bench.live import children, cpu_seconds, manage_shell, percentile, tracesite_env, wait_for_port


def kv(key: str, value) -> KeyValue:
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def trace_bytes(number: int) -> bytes:
    """A random-looking 128-bit trace id, as OpenTelemetry makes them (most are no RFC 4122 UUID)."""
    return uuid.uuid5(uuid.NAMESPACE_OID, str(number)).bytes[::-1]


def trace_spans(number: int, now_ns: int) -> list[Span]:
    trace_id = trace_bytes(number)
    root_id = ((number + 1) << 8).to_bytes(8, "big")
    start = now_ns - 10_000_000_000
    spans = [
        Span(
            trace_id=trace_id, span_id=root_id, name="invoke_agent bench",
            start_time_unix_nano=start, end_time_unix_nano=start + 9_000_000,
            attributes=[kv("gen_ai.operation.name", "invoke_agent"), kv("input.value", f"question {number}"),
                        kv("output.value", f"answer {number}")],
        )
    ]  # fmt: skip
    for i in range(9):
        think = i % 2 == 0
        attributes = (
            [kv("gen_ai.operation.name", "chat"), kv("gen_ai.request.model", "gpt-4o-mini"),
             kv("gen_ai.usage.input_tokens", 120), kv("gen_ai.usage.output_tokens", 20),
             kv("gen_ai.output.messages", json.dumps([{"role": "assistant", "content": f"step {i}"}]))]
            if think
            else [kv("gen_ai.operation.name", "execute_tool"), kv("gen_ai.tool.name", "run_sql"),
                  kv("gen_ai.tool.call.arguments", json.dumps({"sql": "SELECT country, COUNT(*) FROM orders GROUP BY 1"})),
                  kv("gen_ai.tool.call.result", "France 3\nSpain 2")]
        )  # fmt: skip
        spans.append(
            Span(
                trace_id=trace_id,
                span_id=(((number + 1) << 8) + i + 1).to_bytes(8, "big"),
                parent_span_id=root_id,
                name="chat" if think else "execute_tool run_sql",
                start_time_unix_nano=start + (i + 1) * 1_000_000,
                end_time_unix_nano=start + (i + 1) * 1_000_000 + 800_000,
                attributes=attributes,
            )
        )
    spans.append(spans.pop(0))  # the root ends last, as exporters send it
    return spans


def exports(total: int, size: int) -> list[tuple[bytes, int]]:
    """Encoded requests of ``size`` spans, each with the number of the first trace it starts."""
    now_ns = time.time_ns()
    spans: list[tuple[int, Span]] = []
    for number in range(total // 10):
        spans.extend((number, span) for span in trace_spans(number, now_ns))
    bodies = []
    resource = Resource(attributes=[kv("service.name", "bench-agent")])
    for start in range(0, len(spans), size):
        chunk = spans[start : start + size]
        request = ExportTraceServiceRequest(
            resource_spans=[ResourceSpans(resource=resource, scope_spans=[ScopeSpans(spans=[s for _, s in chunk])])]
        )
        # The first trace this export starts (its first span is here, not in the export before).
        starts = next((n for i, (n, _) in enumerate(chunk) if start + i == 0 or spans[start + i - 1][0] != n), -1)
        bodies.append((request.SerializeToString(), starts))
    return bodies


def token(env: dict[str, str]) -> str:
    code = (
        "from django.contrib.auth import get_user_model; from traces.models import ApiToken; "
        "user, _ = get_user_model().objects.get_or_create(username='bench'); "
        "print(ApiToken.issue(user, 'bench')[1])"
    )
    return manage_shell(env, code)


def count(env: dict[str, str]) -> tuple[int, int, int]:
    code = (
        "from traces.models import Run, Trace; "
        "print(Run.objects.count(), Trace.objects.count(), Trace.objects.exclude(status='running').count())"
    )
    runs, traces, done = manage_shell(env, code).split()
    return int(runs), int(traces), int(done)


async def watch(
    port: int,
    sent: dict[int, float],
    numbers: dict[str, int],
    latencies: list[float],
    ready: threading.Event,
    stop: asyncio.Event,
):
    import websockets

    async with websockets.connect(f"ws://127.0.0.1:{port}/ws/bench-watcher?protocol=2", max_size=None) as socket:
        await socket.recv()
        await socket.send(json.dumps({"action": "subscribe_all"}))
        ready.set()
        while not stop.is_set():
            try:
                message = json.loads(await asyncio.wait_for(socket.recv(), 0.5))
            except TimeoutError:
                continue
            if message.get("event_type") != "trace_started":
                continue
            otel_id = (message["data"].get("metadata") or {}).get("otel_trace_id", "")
            number = numbers.get(otel_id, -1)
            if number in sent:
                latencies.append(time.perf_counter() - sent[number])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["sqlite", "mysql"], default="sqlite")
    parser.add_argument("--spans", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--port", type=int, default=8870)
    parser.add_argument("--rate", type=float, default=0, help="spans/s offered, paced (0: as fast as the senders go)")
    args = parser.parse_args()

    env = tracesite_env(args.backend, 1)
    env["TRACE_OTLP_COMPLETE_AFTER_SECONDS"] = "1"
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
    key = token(env)
    bodies = exports(args.spans, args.batch)
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / "tracesite-bench-ingest.log", "w")  # noqa: SIM115
    server = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(args.port), "tracesite.asgi:application"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for_port(args.port, server)
        sent: dict[int, float] = {}
        numbers = {trace_bytes(n).hex(): n for n in range(args.spans // 10)}
        latencies: list[float] = []
        ready = threading.Event()
        loop = asyncio.new_event_loop()
        stop = asyncio.Event()
        watcher = threading.Thread(
            target=lambda: loop.run_until_complete(watch(args.port, sent, numbers, latencies, ready, stop)),
            daemon=True,
        )
        watcher.start()
        ready.wait(10)

        queue = list(enumerate(bodies))
        lock = threading.Lock()
        statuses: dict[int, int] = {}

        def sender() -> None:
            connection = http.client.HTTPConnection("127.0.0.1", args.port, timeout=120)
            headers = {"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {key}"}
            while True:
                with lock:
                    if not queue:
                        break
                    _, (body, first_trace) = queue.pop(0)
                if args.rate:
                    with lock:
                        due = pace[0]
                        pace[0] = max(pace[0], time.perf_counter()) + args.batch / args.rate
                    time.sleep(max(0.0, due - time.perf_counter()))
                sent[first_trace] = time.perf_counter()
                connection.request("POST", "/v1/traces", body, headers)
                response = connection.getresponse()
                response.read()
                with lock:
                    statuses[response.status] = statuses.get(response.status, 0) + 1

        writers = children([server.pid])
        cpu_before = cpu_seconds([server.pid]), cpu_seconds(writers), time.process_time()
        started = time.perf_counter()
        pace = [started]
        threads = [threading.Thread(target=sender) for _ in range(args.senders)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        server_cpu = cpu_seconds([server.pid]) - cpu_before[0]
        writer_cpu = cpu_seconds(writers) - cpu_before[1]
        client_cpu = time.process_time() - cpu_before[2]
        while True:  # the last traces complete after their grace period
            runs, traces, done = count(env)
            if done >= args.spans // 10 or time.perf_counter() - started > elapsed + 120:
                break
            time.sleep(0.5)
        completed_after = time.perf_counter() - started - elapsed
        loop.call_soon_threadsafe(stop.set)
        watcher.join(5)
        print(
            f"backend={args.backend} spans={args.spans} batch={args.batch} senders={args.senders}"
            + (f" paced at {args.rate:,.0f} spans/s" if args.rate else "")
        )
        print(f"  HTTP statuses: {statuses}")
        print(f"  ingested {args.spans:,} spans in {elapsed:.2f} s: {args.spans / elapsed:,.0f} spans/s")
        print(
            f"  cores busy: server {server_cpu / elapsed:.2f}, its writer process {writer_cpu / elapsed:.2f}, "
            f"senders and watcher {client_cpu / elapsed:.2f} of {os.cpu_count()}; "
            f"CPU per span: server {server_cpu / args.spans * 1e6:.0f} µs, writer {writer_cpu / args.spans * 1e6:.0f} µs"
        )
        print(
            f"  stored: {runs:,} runs, {traces:,} traces, {done:,} completed {completed_after:.1f} s after the last export"
        )
        if latencies:
            ms = sorted(1000 * v for v in latencies)
            print(
                f"  request sent -> watcher sees its first new trace ({len(ms)} samples): "
                f"p50 {percentile(ms, 0.5):.1f} ms, p99 {percentile(ms, 0.99):.1f} ms, max {ms[-1]:.1f} ms"
            )
        if set(statuses) != {200} or runs != args.spans or done != args.spans // 10:
            raise SystemExit(f"FAILED: not every export was stored (see {log.name})")
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
