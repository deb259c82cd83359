"""Live fan-out: N sessions each running R traces back to back with the built-in model.

    python bench/live.py --sessions 50 --traces 5 --clients 2

Starts daphne on the embedded defaults in a fresh data directory (or on DATABASE_URL/REDIS_URL
if set), then drives it from --clients separate processes (one process saturates first).
Prints delivered events/s, traces/s, emit→receive latency p50/p99/max, and delivered vs stored.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


async def session(url: str, name: str, traces: int, latencies: list[float], counts: list[int]) -> None:
    import websockets

    async with websockets.connect(f"{url}/ws/{name}", max_size=None) as ws:
        json.loads(await ws.recv())
        for _ in range(traces):
            await ws.send(json.dumps({"action": "start_agent", "question": "显示用户表的10条用户数据"}))
            while True:
                message = json.loads(await ws.recv())
                received = time.time()
                if "seq" in message:
                    sent = datetime.strptime(message["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()
                    latencies.append((received - sent) * 1000)
                    counts[0] += 1
                if message["event_type"] == "trace_completed":
                    break


def client(url: str, names: list[str], traces: int, queue) -> None:
    latencies: list[float] = []
    counts = [0]

    async def run() -> None:
        await asyncio.gather(*(session(url, name, traces, latencies, counts) for name in names))

    asyncio.run(run())
    queue.put((counts[0], latencies))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--traces", type=int, default=5)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()

    data = tempfile.mkdtemp(prefix="tracesite-bench-")
    env = {**os.environ, "TRACESITE_DATA_DIR": data, "TRACESITE_ENV_FILE": "", "OPENAI_API_KEY": "", "LOG_LEVEL": "WARNING",
           "TRACE_MAX_CONCURRENT_RUNS": str(args.sessions * 2)}
    for command in (["migrate", "--noinput", "-v0"], ["seeddemo", "-v0"]):
        subprocess.run([sys.executable, "manage.py", *command], cwd=ROOT, env=env, check=True)
    server = subprocess.Popen([sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(args.port), "tracesite.asgi:application"],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(3)
        url = f"ws://127.0.0.1:{args.port}"
        names = [f"bench-{i}" for i in range(args.sessions)]
        queue = multiprocessing.Queue()
        started = time.perf_counter()
        workers = [multiprocessing.Process(target=client, args=(url, names[i::args.clients], args.traces, queue)) for i in range(args.clients)]
        for worker in workers:
            worker.start()
        results = [queue.get() for _ in workers]
        for worker in workers:
            worker.join()
        elapsed = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(10)
    delivered = sum(count for count, _ in results)
    latencies = sorted(value for _, values in results for value in values)
    stored = "?"
    if not os.environ.get("DATABASE_URL"):
        with sqlite3.connect(Path(data) / "tracesite.sqlite3") as db:
            stored = db.execute("SELECT COUNT(*) FROM traces_event").fetchone()[0]
    p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]  # noqa: E731
    print(f"sessions={args.sessions} traces/session={args.traces} client processes={args.clients}")
    print(f"delivered {delivered} events, stored {stored}, in {elapsed:.1f} s")
    print(f"events/s {delivered / elapsed:.0f}   traces/s {args.sessions * args.traces / elapsed:.1f}")
    print(f"latency ms p50 {statistics.median(latencies):.1f}  p99 {p(0.99):.1f}  max {latencies[-1]:.1f}")


if __name__ == "__main__":
    main()
