"""Pings on a socket while large OTLP exports are in flight: does ingesting them stall the server?

    python bench/big_exports.py                     # 3 concurrent exports of 10,000 spans × 34 attributes
    python bench/big_exports.py --exports 1         # one of them
    python bench/big_exports.py --trace-spans 10000 # each export one trace of 10,000 spans
    python bench/big_exports.py --json --spans 5000 # OTLP/JSON (about 14 MiB)
    python bench/big_exports.py --backend mysql

One daphne process. A WebSocket client sends ``ping`` every 10 ms and times each ``pong``
(answered on the server's event loop) from before the exports start until after the last is
answered; then ``--exports`` OTLP/protobuf exports of ``--spans`` spans each (traces of 10
spans, every span with 34 attributes: about 15 MiB a body) are posted at once. Prints the pings'
round trips while the exports were in flight (p50, p99, max) beside those before them, how long
each export took, and checks every span was stored.
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

from bench.live import manage_shell, percentile, tracesite_env, wait_for_port

ATTRIBUTES = 34
PING_SECONDS = 0.01


def kv(key: str, value) -> KeyValue:
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def body(export: int, spans: int, per_trace: int = 10, as_json: bool = False) -> bytes:
    """One export of ``spans`` spans: traces of a root and ``per_trace - 1`` calls, 34 attributes a span."""
    now = time.time_ns()
    found = []
    for number in range(spans // per_trace):
        trace_id = uuid.uuid5(uuid.NAMESPACE_OID, f"{export}:{number}").bytes
        root_id = (number * per_trace * 2 + 1).to_bytes(8, "big")
        for i in range(per_trace):
            think = i % 2 == 1
            attributes = (
                [kv("gen_ai.operation.name", "chat"), kv("gen_ai.request.model", "gpt-4o-mini"),
                 kv("gen_ai.usage.input_tokens", 120), kv("gen_ai.usage.output_tokens", 20),
                 kv("gen_ai.output.messages", json.dumps([{"role": "assistant", "content": f"step {i} " * 8}]))]
                if think
                else [kv("gen_ai.operation.name", "execute_tool" if i else "invoke_agent"), kv("gen_ai.tool.name", "run_sql"),
                      kv("input.value", f"question {number}"), kv("gen_ai.tool.call.result", "France 3\nSpain 2 " * 4),
                      kv("gen_ai.tool.call.arguments", json.dumps({"sql": "SELECT country, COUNT(*) FROM orders"}))]
            )  # fmt: skip
            while len(attributes) < ATTRIBUTES:
                attributes.append(kv(f"app.attribute.{len(attributes)}", f"value {len(attributes)} " + "x" * 10))
            found.append(
                Span(
                    trace_id=trace_id,
                    span_id=root_id if i == 0 else (number * per_trace * 2 + i + 1).to_bytes(8, "big"),
                    parent_span_id=b"" if i == 0 else root_id,
                    name="invoke_agent" if i == 0 else ("chat" if think else "run_sql"),
                    start_time_unix_nano=now - 100_000_000_000 + i * 1_000_000,
                    end_time_unix_nano=now - 90_000_000_000 + i * 1_000_000,
                    attributes=attributes,
                )
            )
    resource = Resource(attributes=[kv("service.name", "big-exports")])
    request = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=resource, scope_spans=[ScopeSpans(spans=found)])]
    )
    if as_json:
        from google.protobuf import json_format

        return json_format.MessageToJson(request, indent=None).encode()
    return request.SerializeToString()


async def ping(port: int, samples: list[tuple[float, float]], stop: threading.Event, ready: threading.Event) -> None:
    """(when, round trip) of a ping every PING_SECONDS."""
    import websockets

    async with websockets.connect(f"ws://127.0.0.1:{port}/ws/pinger?protocol=2", max_size=None) as socket:
        await socket.recv()
        ready.set()
        while not stop.is_set():
            sent = time.perf_counter()
            await socket.send(json.dumps({"action": "ping", "client_time": sent}))
            while True:
                message = json.loads(await socket.recv())
                if message["event_type"] == "pong":
                    break
            now = time.perf_counter()
            samples.append((sent, now - sent))
            await asyncio.sleep(max(0.0, PING_SECONDS - (now - sent)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["sqlite", "mysql"], default="sqlite")
    parser.add_argument("--exports", type=int, default=3)
    parser.add_argument("--spans", type=int, default=10_000)
    parser.add_argument("--trace-spans", type=int, default=10, help="spans a trace (10,000: one trace an export)")
    parser.add_argument("--json", action="store_true", help="OTLP/JSON bodies instead of protobuf")
    parser.add_argument("--port", type=int, default=8871)
    args = parser.parse_args()

    env = tracesite_env(args.backend, 1)
    env["TRACE_OTLP_COMPLETE_AFTER_SECONDS"] = "1"
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
    key = manage_shell(
        env,
        "from django.contrib.auth import get_user_model; from traces.models import ApiToken; "
        "user, _ = get_user_model().objects.get_or_create(username='bench'); print(ApiToken.issue(user, 'bench')[1])",
    )
    bodies = [body(n, args.spans, args.trace_spans, args.json) for n in range(args.exports)]
    kind = "application/json" if args.json else "application/x-protobuf"
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / "tracesite-bench-big-exports.log", "w")  # noqa: SIM115
    server = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(args.port), "tracesite.asgi:application"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for_port(args.port, server)
        time.sleep(2)  # the server's start-up (its writer and decoder processes) is behind it
        samples: list[tuple[float, float]] = []
        stop, ready = threading.Event(), threading.Event()
        pinger = threading.Thread(target=lambda: asyncio.run(ping(args.port, samples, stop, ready)), daemon=True)
        pinger.start()
        ready.wait(10)
        time.sleep(2)  # pings before the exports: the server at rest
        took: list[float] = []
        statuses: list[int] = []

        def post(data: bytes) -> None:
            connection = http.client.HTTPConnection("127.0.0.1", args.port, timeout=600)
            started = time.perf_counter()
            connection.request("POST", "/v1/traces", data, {"Content-Type": kind, "Authorization": f"Bearer {key}"})
            response = connection.getresponse()
            response.read()
            took.append(time.perf_counter() - started)
            statuses.append(response.status)

        first = time.perf_counter()
        senders = [threading.Thread(target=post, args=(data,)) for data in bodies]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
        last = time.perf_counter()
        time.sleep(0.5)
        stop.set()
        pinger.join(10)
        stored = int(manage_shell(env, "from traces.models import Run; print(Run.objects.count())"))
    finally:
        server.terminate()
        server.wait(30)

    def summary(rtts: list[float]) -> str:
        ms = sorted(1000 * r for r in rtts)
        if not ms:
            return "no samples"
        return f"p50 {percentile(ms, 0.5):.1f} ms, p99 {percentile(ms, 0.99):.1f} ms, max {ms[-1]:.1f} ms ({len(ms)} pings)"

    before = [rtt for at, rtt in samples if at < first]
    # A ping sent during the exports, or one sent earlier and answered during them.
    during = [rtt for at, rtt in samples if at + rtt >= first and at <= last]
    size = sum(map(len, bodies)) / len(bodies) / 2**20
    print(
        f"backend={args.backend} exports={args.exports} × {args.spans:,} spans × {ATTRIBUTES} attributes "
        f"({size:.1f} MiB each, {'JSON' if args.json else 'protobuf'}), {args.trace_spans:,} spans a trace"
    )
    print(f"  exports answered {statuses} in {', '.join(f'{t:.1f}' for t in sorted(took))} s")
    print(f"  pings at rest:             {summary(before)}")
    print(f"  pings during the exports:  {summary(during)}")
    print(f"  stored: {stored:,} runs of {args.exports * args.spans:,} spans")
    if set(statuses) != {200} or stored != args.exports * args.spans:
        raise SystemExit(f"FAILED: not every export was stored (see {log.name})")


if __name__ == "__main__":
    main()
