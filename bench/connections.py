"""Connection capacity: idle sockets held by one daphne process, and a broadcast that reaches them.

    python bench/connections.py --sockets 1000 5000
    python bench/connections.py --backend mysql --sockets 1000 5000

Starts tracesite (bench/emitter.py, so the broadcast trace costs nothing but the live path) on one
daphne process, opens N WebSockets from --clients processes (each its own session, each sending
``subscribe_all``), and reports the connect time, the server's RSS before and after (RSS per
socket), then starts one trace and counts the sockets its ``trace_started`` reaches through
the all-traces feed, and how long the last one waited.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.live import parse_time, tracesite_env, wait_for_port


def raise_nofile() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def holder(url: str, names: list[str], connected, go, results) -> None:
    """Open every socket, report, wait for the broadcast, report who got it."""
    raise_nofile()

    async def one(name: str, times: list[float], sockets: list) -> None:
        import websockets

        started = time.perf_counter()
        ws = await websockets.connect(
            f"{url}/ws/{name}", max_size=None, compression=None, open_timeout=120, ping_interval=None
        )
        await ws.recv()
        await ws.send(json.dumps({"action": "subscribe_all"}))
        times.append((time.perf_counter() - started) * 1000)
        sockets.append(ws)

    async def wait_broadcast(ws, arrivals: list[float]) -> None:
        try:
            async with asyncio.timeout(60):
                while True:
                    message = json.loads(await ws.recv())
                    if message["event_type"] == "trace_started":
                        arrivals.append((time.time() - parse_time(message["timestamp"])) * 1000)
                        return
        except TimeoutError:
            pass

    async def run() -> None:
        times: list[float] = []
        sockets: list = []
        semaphore = asyncio.Semaphore(100)  # at most 100 handshakes in flight per process

        async def limited(name: str) -> None:
            async with semaphore:
                await one(name, times, sockets)

        await asyncio.gather(*(limited(name) for name in names))
        connected.put(times)
        await asyncio.get_running_loop().run_in_executor(None, go.wait)
        arrivals: list[float] = []
        await asyncio.gather(*(wait_broadcast(ws, arrivals) for ws in sockets))
        results.put(arrivals)
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)

    asyncio.run(run())


async def start_one_trace(url: str) -> None:
    import websockets

    async with websockets.connect(f"{url}/ws/broadcaster", compression=None) as ws:
        await ws.recv()
        await ws.send(json.dumps({"action": "start_agent", "question": "broadcast"}))
        while json.loads(await ws.recv())["event_type"] != "trace_completed":
            pass


def measure(sockets: int, clients: int, backend: str, port: int) -> dict:
    env = tracesite_env(backend, 10)
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
    log = open(Path(tempfile.gettempdir()) / "tracesite-bench-connections.log", "w")  # noqa: SIM115
    server = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "bench.emitter:application"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=raise_nofile,
    )
    context = multiprocessing.get_context("spawn")
    try:
        wait_for_port(port, server)
        url = f"ws://127.0.0.1:{port}"
        asyncio.run(start_one_trace(url))  # warm up: imports, first database connection
        time.sleep(1)
        before = rss_kib(server.pid)
        connected, results, go = context.Queue(), context.Queue(), context.Event()
        names = [f"idle-{i}" for i in range(sockets)]
        workers = [
            context.Process(target=holder, args=(url, names[i::clients], connected, go, results))
            for i in range(clients)
        ]
        started = time.perf_counter()
        for worker in workers:
            worker.start()
        times = sorted(t for _ in workers for t in connected.get(timeout=600))
        connect_seconds = time.perf_counter() - started
        time.sleep(3)  # let the server settle
        after = rss_kib(server.pid)
        go.set()
        time.sleep(0.5)
        asyncio.run(start_one_trace(url))
        arrivals = sorted(a for _ in workers for a in results.get(timeout=120))
        for worker in workers:
            worker.join(30)
    finally:
        server.terminate()
        server.wait(15)
    return {
        "sockets": sockets,
        "connect_s": connect_seconds,
        "connect_p50": statistics.median(times),
        "connect_p99": times[int(0.99 * len(times))],
        "rss_before_mib": before / 1024,
        "rss_after_mib": after / 1024,
        "kib_per_socket": (after - before) / sockets,
        "reached": len(arrivals),
        "reach_p50": statistics.median(arrivals) if arrivals else None,
        "reach_max": arrivals[-1] if arrivals else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sockets", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--backend", choices=["embedded", "mysql"], default="embedded")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--port", type=int, default=8780)
    args = parser.parse_args()
    raise_nofile()
    print(
        "| backend | sockets | connect all (s) | connect p50 / p99 ms | RSS before → after MiB | KiB per socket | broadcast reached | reach p50 / max ms |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for sockets in args.sockets:
        r = measure(sockets, args.clients, args.backend, args.port)
        print(
            f"| {args.backend} | {sockets:,} | {r['connect_s']:.1f} | {r['connect_p50']:.0f} / {r['connect_p99']:.0f} | "
            f"{r['rss_before_mib']:.0f} → {r['rss_after_mib']:.0f} | {r['kib_per_socket']:.1f} | {r['reached']:,} / {sockets:,} | "
            f"{r['reach_p50']:.0f} / {r['reach_max']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
