"""Soak: continuous runs from many sessions with random disconnects; checks for loss and leaks.

    python bench/soak.py --minutes 10 --sessions 20
    python bench/soak.py --minutes 10 --sessions 20 --backend mysql

Starts tracesite (the real built-in agent) on one daphne process. Each session runs traces
back to back; at random moments (--drop, per event) it drops its socket, waits up to a second,
reconnects and resumes with ``subscribe_trace`` + ``after_seq`` as the live page does. Every
30 s it samples the server's RSS, its open database connections (files open on the SQLite
database, or MariaDB connections to the history database) and its threads.

At the end it checks, and exits non-zero if any fails:
- every trace a session started reached the client as seq 1..last exactly once (in order,
  except where a resume came after the server's reconnect hold; those are counted);
- every such trace is stored with a final status and exactly those events;
- RSS, database connections and threads at the end are no higher than a bound over the
  sample taken after the first minute (warm-up): flat, no leak.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.live import tracesite_env, wait_for_port
from traces.store.pool import THREADS

QUESTIONS = ["显示用户表的10条用户数据", "how many orders per country?", "top 5 products by price", "用户的平均年龄"]


class Session:
    def __init__(self, name: str, rng: random.Random) -> None:
        self.name = name
        self.rng = rng
        self.received: dict[str, list[int]] = {}  # trace id -> seqs in arrival order
        self.completed: set[str] = set()
        self.drops = 0

    async def run(self, url: str, deadline: float, drop: float) -> None:
        import websockets

        current: str | None = None
        while time.time() < deadline or current is not None:
            try:
                # max_queue=None: it reads on while it closes, as a browser does (with websockets' default
                # of 16 it stops reading mid-burst and its close waits out its own 10 s timeout).
                async with websockets.connect(
                    f"{url}/ws/{self.name}?protocol=2", max_size=None, max_queue=None, compression=None, open_timeout=60
                ) as ws:
                    hello = json.loads(await ws.recv())["data"]
                    if current is not None:
                        last = max(self.received[current], default=0)
                        await ws.send(json.dumps({"action": "subscribe_trace", "trace_id": current, "after_seq": last}))
                    elif hello["active_trace_id"]:
                        raise RuntimeError(f"{self.name}: server reports an active trace the client does not know")
                    asked = False
                    while True:
                        if current is None and not asked:
                            if time.time() >= deadline:
                                return
                            await ws.send(json.dumps({"action": "start_agent", "question": self.rng.choice(QUESTIONS)}))
                            asked = True
                        message = json.loads(await ws.recv())
                        kind = message["event_type"]
                        if kind == "error":
                            raise RuntimeError(f"{self.name}: {message['data']}")
                        if "seq" not in message:
                            continue
                        trace_id = message["trace_id"]
                        if current is None and kind == "trace_started":
                            current, asked = trace_id, False
                        self.received.setdefault(trace_id, []).append(message["seq"])
                        if kind == "trace_completed":
                            self.completed.add(trace_id)
                            current = None
                            continue
                        if self.rng.random() < drop:
                            self.drops += 1
                            break  # leave the block: the socket closes mid-trace
                await asyncio.sleep(self.rng.random())
            except (OSError, websockets.ConnectionClosed):
                await asyncio.sleep(1)


def connections(env: dict[str, str], pid: int) -> int:
    if env.get("DATABASE_URL"):
        import MySQLdb

        parts = urlsplit(env["DATABASE_URL"])
        conn = MySQLdb.connect(
            host=parts.hostname, port=parts.port or 3306, user=parts.username or "root", passwd=parts.password or ""
        )
        try:
            cursor = conn.cursor()
            cursor.execute(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = %s", (parts.path.lstrip("/"),)
            )
            return int(cursor.fetchone()[0])
        finally:
            conn.close()
    database = str(Path(env["TRACESITE_DATA_DIR"]) / "tracesite.sqlite3")
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd) == database:
                count += 1
        except OSError:
            pass
    return count


def rss_mib(pid: int) -> int:
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(status["VmRSS"].split()[0]) // 1024


def writer_pids(pid: int) -> list[int]:
    """The server's history writer process (TRACE_WRITER_PROCESS), if it has one."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            for child in (task / "children").read_text().split():
                if b"traces.writer_entry" in Path(f"/proc/{child}/cmdline").read_bytes():
                    found.append(int(child))
        except OSError:
            continue
    return found


def sample(env: dict[str, str], pid: int) -> dict[str, int]:
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {
        "rss_mib": int(status["VmRSS"].split()[0]) // 1024,
        "writer_rss_mib": sum(rss_mib(child) for child in writer_pids(pid)),
        "db_connections": connections(env, pid),
        "threads": int(status["Threads"]),
    }


def stored(env: dict[str, str], trace_ids: list[str]) -> dict[str, tuple[str, list[int]]]:
    code = (
        "import json, sys; from traces.models import Trace, Event; ids = json.load(sys.stdin); out = {}\n"
        "for t in Trace.objects.filter(id__in=ids):\n"
        "    out[str(t.id)] = (t.status, list(Event.objects.filter(trace=t).order_by('seq').values_list('seq', flat=True)))\n"
        "print(json.dumps(out))"
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=env,
        input=json.dumps(trace_ids),
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


async def soak(
    url: str, sessions: list[Session], minutes: float, drop: float, env: dict[str, str], pid: int
) -> list[dict]:
    deadline = time.time() + minutes * 60
    every = min(30.0, minutes * 60 / 4)
    samples: list[dict] = []
    tasks = [asyncio.create_task(s.run(url, deadline, drop)) for s in sessions]
    started = time.time()
    while not all(t.done() for t in tasks):
        await asyncio.sleep(1)
        if time.time() - started >= every * len(samples):
            row = {
                "t": round(time.time() - started),
                **sample(env, pid),
                "traces": sum(len(s.completed) for s in sessions),
                "drops": sum(s.drops for s in sessions),
            }
            samples.append(row)
            print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    for task in tasks:
        task.result()  # raise what a session raised
    await asyncio.sleep(2)
    samples.append(
        {
            "t": round(time.time() - started),
            **sample(env, pid),
            "traces": sum(len(s.completed) for s in sessions),
            "drops": sum(s.drops for s in sessions),
        }
    )
    print(" ".join(f"{k}={v}" for k, v in samples[-1].items()), flush=True)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--drop", type=float, default=0.01, help="chance of dropping the socket after each event")
    parser.add_argument("--backend", choices=["embedded", "mysql"], default="embedded")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--port", type=int, default=8785)
    args = parser.parse_args()

    env = tracesite_env(args.backend, args.sessions)
    for command in (["migrate", "--noinput", "-v0"], ["seeddemo", "-v0"]):
        subprocess.run(
            [sys.executable, "manage.py", *command], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL
        )
    log = open(Path(tempfile.gettempdir()) / "tracesite-bench-soak.log", "w")  # noqa: SIM115
    server = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(args.port), "tracesite.asgi:application"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    rng = random.Random(args.seed)
    sessions = [Session(f"soak-{i}", random.Random(rng.random())) for i in range(args.sessions)]
    try:
        wait_for_port(args.port, server)
        samples = asyncio.run(soak(f"ws://127.0.0.1:{args.port}", sessions, args.minutes, args.drop, env, server.pid))
    finally:
        server.terminate()
        server.wait(15)

    failures = []
    received = {trace: seqs for s in sessions for trace, seqs in s.received.items()}
    rows = stored(env, list(received))
    reordered = 0
    for trace, seqs in received.items():
        if sorted(seqs) != list(range(1, len(seqs) + 1)):
            failures.append(f"trace {trace}: received seqs duplicated or with a gap: {seqs[:50]}")
        elif seqs != sorted(seqs):
            reordered += 1  # a resume that came after the server's reconnect hold: complete, late
        status, stored_seqs = rows.get(trace, (None, []))
        if status in (None, "running"):
            failures.append(f"trace {trace}: stored status {status!r}")
        if stored_seqs != sorted(seqs):
            failures.append(f"trace {trace}: stored {len(stored_seqs)} events, client received {len(seqs)}")
    warm = next(
        s for s in samples if s["t"] >= min(60, args.minutes * 30)
    )  # after warm-up: a minute, or half a short run
    end = samples[-1]
    if end["rss_mib"] > warm["rss_mib"] * 1.25 + 10:
        failures.append(f"RSS grew from {warm['rss_mib']} MiB after warm-up to {end['rss_mib']} MiB")
    if end["writer_rss_mib"] > warm["writer_rss_mib"] * 1.25 + 10:
        failures.append(
            f"the writer process's RSS grew from {warm['writer_rss_mib']} MiB after warm-up to {end['writer_rss_mib']} MiB"
        )
    if end["db_connections"] > max(warm["db_connections"], THREADS + 1):  # readers + the recorder's writer
        failures.append(f"database connections grew from {warm['db_connections']} to {end['db_connections']}")
    if end["threads"] > warm["threads"] + 2:
        failures.append(f"threads grew from {warm['threads']} to {end['threads']}")

    events = sum(len(seqs) for seqs in received.values())
    print(
        f"\n{args.backend}: {args.minutes} min, {args.sessions} sessions, {len(received)} traces, {events} events, "
        f"{sum(s.drops for s in sessions)} dropped sockets, {reordered} traces completed out of order by a late resume; RSS {warm['rss_mib']} → {end['rss_mib']} MiB (writer process {warm['writer_rss_mib']} → {end['writer_rss_mib']} MiB), "
        f"database connections {warm['db_connections']} → {end['db_connections']}, threads {warm['threads']} → {end['threads']}"
    )
    for failure in failures[:20]:
        print("FAIL", failure)
    print(
        "OK: no loss, every trace stored with its final status, nothing leaked"
        if not failures
        else f"{len(failures)} failure(s)"
    )
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
