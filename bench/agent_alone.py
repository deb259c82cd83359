"""The built-in agent alone: how many events per second its own work allows, with nothing stored or sent.

    python bench/agent_alone.py --sessions 50 --traces 5 --repeat 5

The same load as ``bench/live.py --server agent`` (sessions running traces back to back on one
event loop, the same question, the offline model over the demo database), but each trace's
events go to an in-memory list (``agents.sink.ListSink``): no recorder, no database writes, no
sockets. What it prints is the ceiling for any live path that runs this agent in one process:
events per second and the agent's CPU time per event.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
QUESTION = "显示用户表的10条用户数据"


def prepare() -> None:
    """A fresh data directory with the demo database, as ``bench/live.py`` gives its servers."""
    os.environ["TRACESITE_DATA_DIR"] = path = tempfile.mkdtemp(prefix="tracesite-bench-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    os.environ["TRACESITE_ENV_FILE"] = ""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tracesite.settings")
    for command in (["migrate", "--noinput", "-v0"], ["seeddemo", "-v0"]):
        subprocess.run([sys.executable, "manage.py", *command], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    import django

    django.setup()


async def session(agent, traces: int) -> int:
    from agents.sink import ListSink

    events = 0
    for _ in range(traces):
        sink = ListSink()
        await agent.run(QUESTION, sink)
        events += len(sink.events)
    return events


async def run_once(sessions: int, traces: int) -> tuple[int, float, float]:
    from agents.config import build_agent

    agent = build_agent()
    await session(agent, 1)  # warm: the schema cache, the database connections
    cpu, wall = time.process_time(), time.perf_counter()
    counts = await asyncio.gather(*(session(agent, traces) for _ in range(sessions)))
    return sum(counts), time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--traces", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    prepare()
    rates = []
    for run in range(args.repeat):
        events, wall, cpu = asyncio.run(run_once(args.sessions, args.traces))
        rates.append(events / wall)
        print(
            f"agent alone {args.sessions}x{args.traces} run {run + 1}: {events} events in {wall:.2f} s, "
            f"{events / wall:,.0f} events/s, {events / (args.sessions * args.traces):.1f} events a trace, "
            f"CPU {cpu / events * 1e6:.0f} µs/event",
            flush=True,
        )
    print(f"median: {statistics.median(rates):,.0f} events/s")


if __name__ == "__main__":
    main()
