"""prunetraces beside live traffic: the longest transaction it holds, and the live latency meanwhile.

    python bench/prune.py --traces 200000                    # SQLite, a fresh data directory
    python bench/prune.py --traces 200000 --backend mysql    # MariaDB tracesite_bench_prune + Redis db 12

Starts tracesite with the scripted agent under daphne (bench/emitter.py, as bench/live.py does),
fills its database with --traces traces of --events events (bench/bulk_history.py), measures the
live event latency alone, then runs ``prunetraces --verbosity 2`` of the older half while the same
live load runs again and again until it ends. Prints the prune's time and its longest
transaction, and the live p50/p99 alone and during the prune.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("BENCH_MYSQL_URL", "mysql://root@127.0.0.1:3306/tracesite_bench_prune")
os.environ.setdefault("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")

from bench.live import start_servers, swarm


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else math.nan


def live_round(port: int, sessions: int, traces: int, label: str) -> list[float]:
    urls = [f"ws://127.0.0.1:{port}/ws/{label}{i}?protocol=2" for i in range(sessions)]
    _, latencies, _, _ = swarm(urls, traces, processes=1)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--traces", type=int, default=200_000)
    parser.add_argument("--events", type=int, default=10, help="Events per trace.")
    parser.add_argument("--backend", choices=["embedded", "mysql"], default="embedded")
    parser.add_argument("--sessions", type=int, default=10, help="Live sessions in each round.")
    parser.add_argument("--live-traces", type=int, default=2, help="Traces per live session in each round.")
    parser.add_argument("--port", type=int, default=8791)
    args = parser.parse_args()

    servers, env = start_servers("emitter", args.backend, 1, args.port, args.sessions)
    try:
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "bench/bulk_history.py", "--traces", str(args.traces), "--events", str(args.events)],
            cwd=ROOT,
            env=env,
            check=True,
            stderr=subprocess.DEVNULL,
        )
        print(f"filled {args.traces:,} traces × {args.events} events in {time.perf_counter() - started:.0f} s")
        alone = live_round(args.port, args.sessions, args.live_traces, "alone")
        # Traces start a second apart, the newest now: the older half started before this many hours ago.
        hours = math.ceil(args.traces / 2 / 3600)
        prune = subprocess.Popen(
            [sys.executable, "manage.py", "prunetraces", "--older-than", f"{hours}h", "--verbosity", "2"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        started = time.perf_counter()
        during: list[float] = []
        rounds = 0
        while prune.poll() is None:
            during += live_round(args.port, args.sessions, args.live_traces, f"during{rounds}-")
            rounds += 1
        seconds = time.perf_counter() - started
        output = prune.stdout.read() if prune.stdout else ""
        if prune.returncode:
            raise SystemExit(f"prunetraces failed ({prune.returncode}): {output}")
    finally:
        for server in servers:
            server.terminate()
            server.wait()
    deleted = re.search(r"Deleted (\d+) traces", output)
    longest = re.search(r"longest held its transaction (\d+) ms", output)
    print(
        f"{args.backend}: pruned {int(deleted.group(1)) if deleted else 0:,} traces "
        f"({args.events} events each) in {seconds:.1f} s; longest transaction "
        f"{longest.group(1) if longest else '?'} ms"
    )
    print(f"live alone:        p50 {statistics.median(alone):7.1f} ms  p99 {percentile(alone, 0.99):7.1f} ms")
    print(
        f"live during prune: p50 {statistics.median(during):7.1f} ms  p99 {percentile(during, 0.99):7.1f} ms"
        f"  ({len(during):,} events, {rounds} rounds)"
    )


if __name__ == "__main__":
    main()
