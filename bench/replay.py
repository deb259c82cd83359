"""Replay and detail of a 1,000-event trace.

    python bench/replay.py                      # embedded defaults, a fresh data directory
    python bench/replay.py --backend mysql      # MariaDB database tracesite_bench_replay

Records a 1,000-event trace through the real recorder (the recorded built-in run's steps
repeated, about 1 KB per event), starts daphne on the same database, and asks for
``replay_trace`` at speed 0 over a WebSocket: events/s from the request to
``replay_completed`` (median of --repeat). Then the trace detail page's server time and query
count through Django's test client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.live import tracesite_env, wait_for_port

MYSQL_URL = os.environ.get("BENCH_MYSQL_URL", "mysql://root@127.0.0.1:3306/tracesite_bench_replay")


async def record(events: int) -> uuid.UUID:
    from agents.events import EventType
    from bench.scripted import fresh_events
    from traces.access import SessionKey
    from traces.store.recorder import EventStore, TraceRecorder

    store = EventStore()
    recorder = TraceRecorder(session=SessionKey("replay-bench"), store=store)
    first, *_, last = fresh_events(recorder.trace_id)
    await recorder.emit(EventType(first[0]), first[1])
    emitted = 1
    while emitted < events - 1:
        for kind, data in fresh_events(recorder.trace_id)[1:-1]:
            if emitted == events - 1:
                break
            await recorder.emit(EventType(kind), data)
            emitted += 1
    await recorder.emit(EventType(last[0]), last[1])
    await store.drain()
    await store.aclose()
    return recorder.trace_id


async def replay(url: str, trace_id: uuid.UUID) -> tuple[int, float]:
    import websockets

    async with websockets.connect(url, max_size=None, compression=None) as ws:
        await ws.recv()
        # Timed from the request: what the client waits for, the server's reads of the trace included.
        started = time.perf_counter()
        await ws.send(json.dumps({"action": "replay_trace", "trace_id": str(trace_id), "speed": 0}))
        count = 0
        while True:
            message = json.loads(await ws.recv())
            if message["event_type"] == "replay_completed":
                return count, time.perf_counter() - started
            elif message.get("replay"):
                count += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["embedded", "mysql"], default="embedded")
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--port", type=int, default=8775)
    args = parser.parse_args()

    if args.backend == "mysql":
        os.environ["BENCH_MYSQL_URL"] = MYSQL_URL
        import bench.live

        bench.live.MYSQL_URL = MYSQL_URL
    env = tracesite_env(args.backend, 10)
    os.environ.update(
        {k: v for k, v in env.items() if k in ("DATABASE_URL", "REDIS_URL", "TRACESITE_DATA_DIR", "TRACESITE_ENV_FILE")}
    )
    os.environ.update(DJANGO_SETTINGS_MODULE="tracesite.settings", DJANGO_ALLOWED_HOSTS="testserver")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection, reset_queries
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    call_command("migrate", "--noinput", verbosity=0)
    started = time.perf_counter()
    trace_id = asyncio.run(record(args.events))
    print(f"recorded a {args.events}-event trace in {time.perf_counter() - started:.2f} s")

    log = open(Path(tempfile.gettempdir()) / "tracesite-bench-replay.log", "w")  # noqa: SIM115
    server = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(args.port), "tracesite.asgi:application"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(args.port, server)
        rates = []
        for run in range(args.repeat):
            count, seconds = asyncio.run(replay(f"ws://127.0.0.1:{args.port}/ws/replay-{run}", trace_id))
            assert count == args.events, count
            rates.append(count / seconds)
            print(f"replay run {run + 1}: {count} events in {seconds * 1000:.0f} ms, {count / seconds:,.0f} events/s")
    finally:
        server.terminate()
        server.wait(15)

    client = Client()
    timings = []
    for _ in range(args.repeat):
        reset_queries()
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            response = client.get(f"/traces/{trace_id}/")
            timings.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.status_code
    print(f"\n| {args.backend} | replay at speed 0 | {statistics.median(rates):,.0f} events/s |")
    print(
        f"| {args.backend} | detail page, {args.events} events | {statistics.median(timings):.1f} ms | {len(queries)} queries |"
    )


if __name__ == "__main__":
    main()
