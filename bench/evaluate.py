"""An experiment of 200 items with the built-in model, and the live page meanwhile.

    python bench/evaluate.py                    # 200 items, concurrency 4, embedded defaults
    python bench/evaluate.py --items 50 --concurrency 8
    python bench/evaluate.py --backend mysql

One daphne process serves the live page; ``manage.py evaluate`` runs the experiment in a process
of its own, as a team's CI would, on the same database (and channel layer). The dataset is the
demo shop's questions repeated up to ``--items``. A WebSocket client of the live page that follows
every trace's start and end (``subscribe_all``) pings every 100 ms and a page client loads ``/`` every 500 ms, from before the experiment until after it; the
benchmark prints the experiment's wall time and summary, and the ping and page latencies at rest
and during the experiment.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.live import manage_shell, percentile, tracesite_env, wait_for_port

PING_SECONDS = 0.1
PAGE_SECONDS = 0.5


async def ping(port: int, samples: list, stop: threading.Event) -> None:
    import websockets

    async with websockets.connect(f"ws://127.0.0.1:{port}/ws/watcher?protocol=2", max_size=None) as socket:
        await socket.recv()
        await socket.send(json.dumps({"action": "subscribe_all"}))  # sees every trace start and end, as a watcher
        while not stop.is_set():
            sent = time.perf_counter()
            await socket.send(json.dumps({"action": "ping", "client_time": sent}))
            while json.loads(await socket.recv())["event_type"] != "pong":
                pass
            now = time.perf_counter()
            samples.append((sent, now - sent))
            await asyncio.sleep(max(0.0, PING_SECONDS - (now - sent)))


def load_pages(port: int, samples: list, stop: threading.Event) -> None:
    while not stop.is_set():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        sent = time.perf_counter()
        connection.request("GET", "/")
        response = connection.getresponse()
        response.read()
        assert response.status == 200, response.status
        now = time.perf_counter()
        samples.append((sent, now - sent))
        time.sleep(max(0.0, PAGE_SECONDS - (now - sent)))


def summary(samples: list[tuple[float, float]], start: float, end: float, during: bool) -> str:
    ms = sorted(
        1000 * rtt for at, rtt in samples if ((at + rtt >= start and at <= end) if during else at + rtt < start)
    )
    if not ms:
        return "no samples"
    return f"p50 {percentile(ms, 0.5):.1f} ms, p99 {percentile(ms, 0.99):.1f} ms, max {ms[-1]:.1f} ms ({len(ms)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["sqlite", "mysql"], default="sqlite")
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--port", type=int, default=8872)
    args = parser.parse_args()

    env = tracesite_env(args.backend, 1)
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
    subprocess.run([sys.executable, "manage.py", "seeddemo"], cwd=ROOT, env=env, check=True, capture_output=True)
    manage_shell(
        env,
        "from evals.demo import ITEMS; from evals.datasets import add_items; "
        f"items = (ITEMS * ({args.items} // len(ITEMS) + 1))[:{args.items}]; "
        "add_items('bench', None, items); print(len(items))",
    )
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / "tracesite-bench-evaluate.log", "w")  # noqa: SIM115
    server = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(args.port), "tracesite.asgi:application"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for_port(args.port, server)
        time.sleep(2)
        pings: list[tuple[float, float]] = []
        pages: list[tuple[float, float]] = []
        stop = threading.Event()
        clients = [
            threading.Thread(target=lambda: asyncio.run(ping(args.port, pings, stop)), daemon=True),
            threading.Thread(target=load_pages, args=(args.port, pages, stop), daemon=True),
        ]
        for client in clients:
            client.start()
        time.sleep(5)  # at rest
        start = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "manage.py", "evaluate", "bench", "--json", "--concurrency", str(args.concurrency)],
            cwd=ROOT, env=env, capture_output=True, text=True,
        )  # fmt: skip
        end = time.perf_counter()
        time.sleep(1)
        stop.set()
        for client in clients:
            client.join(30)
    finally:
        server.terminate()
        server.wait(30)
    if result.returncode != 0:
        raise SystemExit(f"evaluate failed ({result.returncode}): {result.stderr[-2000:]}")
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    final = lines[-1]
    print(
        f"backend={args.backend} items={args.items} concurrency={args.concurrency}: wall time {end - start:.1f} s "
        f"({args.items / (end - start):.1f} items/s, including the command's start-up)"
    )
    print(
        f"  {final['passed']} of {final['judged']} passed, execution accuracy {final['execution_accuracy']:.3f}, "
        f"items p50 {final['p50_ms']} ms, p95 {final['p95_ms']} ms, {final['errors']} error(s)"
    )
    print(f"  live page pings at rest:            {summary(pings, start, end, during=False)}")
    print(f"  live page pings during the run:     {summary(pings, start, end, during=True)}")
    print(f"  GET / at rest:                      {summary(pages, start, end, during=False)}")
    print(f"  GET / during the run:               {summary(pages, start, end, during=True)}")
    if len(lines) != args.items + 1 or final["items"] != args.items:
        raise SystemExit(f"FAILED: {len(lines) - 1} item lines for {args.items} items")


if __name__ == "__main__":
    main()
