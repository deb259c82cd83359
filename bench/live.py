"""Live fan-out: N sessions each running R traces back to back, against tracesite and the baselines.

    python bench/live.py --server emitter --sessions 10 50 200 --traces 5 --repeat 5
    python bench/live.py --server emitter --backend mysql --processes 2 --sessions 50
    python bench/live.py --server fastapi --sessions 50          # the original guide's design
    python bench/live.py --server websockets --sessions 50       # bare websockets: the ceiling
    python bench/live.py --server agent --sessions 50            # the real built-in agent
    python bench/live.py --server emitter --gap-ms 50            # paced like an agent: latency below saturation
    python bench/live.py --server emitter --asgi uvicorn         # tracesite under uvicorn instead of daphne
    python bench/live.py --server agent --profile                # + where the server's time went (py-spy)

Servers:
  emitter     tracesite under daphne (bench/emitter.py): the product with its agent replaced by
              one that emits a recorded 36-event trace; every event is persisted and published.
  agent       tracesite under daphne with the built-in model doing its real SQL work.
  fastapi     bench/baseline_fastapi.py under uvicorn: sockets in a dict, pydantic, no storage.
  websockets  bench/baseline_websockets.py: pre-serialised messages, nothing else.

Backends (tracesite only): ``embedded`` (SQLite + in-memory layer, a fresh data directory) or
``mysql`` (MariaDB database ``tracesite_bench_live`` re-created, Redis db 13 flushed; override
with BENCH_MYSQL_URL / BENCH_REDIS_URL; the agent's database is then MariaDB too, ``…_agent``, and
each run prints how many connections MariaDB accepted during it). Clients run in ``--clients``
separate processes. ``--profile`` samples each server with py-spy (the thread holding the GIL) and
prints the share of its samples by what they were spent on: the agent, storing, the recorder's
queue, the sockets, the bus, the event loop.
Each event's latency is its ``timestamp`` (set when the agent emitted it) to its arrival.
Prints one row per run and the medians, with delivered and stored counts (stored only for tracesite)
and where the machine's CPU went: cores busy in the servers, the clients and (``mysql``) MariaDB +
Redis, and the servers' CPU time per event delivered.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import multiprocessing
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
QUESTION = "显示用户表的10条用户数据"
STALL_SECONDS = 30.0
MYSQL_URL = os.environ.get("BENCH_MYSQL_URL", "mysql://root@127.0.0.1:3306/tracesite_bench_live")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")


# ---------------------------------------------------------------------------------- clients


def parse_time(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


async def session(url: str, traces: int, latencies: list[float], counts: list[int]) -> None:
    import websockets

    async with websockets.connect(url, max_size=None, compression=None, open_timeout=60) as ws:
        json.loads(await ws.recv())
        for _ in range(traces):
            await ws.send(json.dumps({"action": "start_agent", "question": QUESTION}))
            while True:
                try:
                    message = json.loads(await asyncio.wait_for(ws.recv(), STALL_SECONDS))
                except TimeoutError:
                    counts[1] += 1  # a session that stopped receiving: reported, not waited for
                    return
                received = time.time()
                if "seq" in message:
                    latencies.append((received - parse_time(message["timestamp"])) * 1000)
                    counts[0] += 1
                elif message["event_type"] == "error":
                    raise RuntimeError(f"server error: {message['data']}")
                if message["event_type"] == "trace_completed":
                    break


def client(urls: list[str], traces: int, start, queue) -> None:
    latencies: list[float] = []
    counts = [0, 0]  # events received, sessions stalled

    async def run() -> None:
        await asyncio.gather(*(session(url, traces, latencies, counts) for url in urls))

    start.wait()
    cpu = time.process_time()
    try:
        asyncio.run(run())
        queue.put((counts[0], latencies, None, counts[1], time.process_time() - cpu))
    except BaseException as exc:  # whatever it was, the parent must hear of it
        import traceback

        queue.put((counts[0], latencies, "".join(traceback.format_exception(exc))[-3000:], counts[1], 0.0))


def swarm(urls: list[str], traces: int, processes: int) -> tuple[int, list[float], float, float]:
    """Run every session (one URL each) from ``processes`` client processes; returns delivered,
    latencies, seconds, and the CPU seconds the clients used."""
    context = multiprocessing.get_context("spawn")
    queue, start = context.Queue(), context.Event()
    workers = [
        context.Process(target=client, args=(urls[i::processes], traces, start, queue)) for i in range(processes)
    ]
    for worker in workers:
        worker.start()
    time.sleep(1.0)  # let the clients import before the clock starts
    started = time.perf_counter()
    start.set()
    results = []
    while len(results) < len(workers):
        try:
            results.append(queue.get(timeout=5))
        except Exception:
            if all(not worker.is_alive() for worker in workers) and queue.empty():
                raise RuntimeError(
                    f"client processes exited without results: {[w.exitcode for w in workers]}"
                ) from None
    elapsed = time.perf_counter() - started
    for worker in workers:
        worker.join()
    errors = [r[2] for r in results if r[2]]
    if errors:
        raise RuntimeError(f"client failed: {errors[0]}")
    stalled = sum(r[3] for r in results)
    if stalled:
        print(f"WARNING: {stalled} session(s) received nothing for {STALL_SECONDS:g} s and were abandoned", flush=True)
    return sum(r[0] for r in results), sorted(v for r in results for v in r[1]), elapsed, sum(r[4] for r in results)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes have used (Linux /proc)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def children(pids: list[int]) -> list[int]:
    """The child processes of ``pids`` (a server's history writer process)."""
    found = []
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                found.extend(int(child) for child in (task / "children").read_text().split())
            except OSError:
                continue
    return found


def pids_named(*names: str) -> list[int]:
    """Processes whose command is one of ``names`` (the database and Redis the servers use)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() in names:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


# ---------------------------------------------------------------------------------- servers


def wait_for_port(port: int, process: subprocess.Popen, seconds: float = 60) -> None:
    import socket

    deadline = time.time() + seconds
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port}")


def _data_dir() -> str:
    """A data directory for one benchmark's servers, removed when the benchmark ends (an ingest
    run leaves a database of a few hundred MB)."""
    path = tempfile.mkdtemp(prefix="tracesite-bench-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def tracesite_env(backend: str, sessions: int) -> dict[str, str]:
    env = {
        **os.environ,
        "TRACESITE_ENV_FILE": "",
        "OPENAI_API_KEY": "",
        "LOG_LEVEL": os.environ.get(
            "BENCH_LOG_LEVEL", "WARNING"
        ),  # INFO shows the servers' conflicts, starts and stops
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": "bench-" + "x" * 50,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "TRACE_REQUIRE_AUTH": "0",
        # Bench clients start their next trace the moment one ends: with the built-in model that
        # is faster than the per-socket flood limit (10 messages/s) allows a person.
        "TRACE_RATE_LIMIT": "1000",
        "TRACESITE_DATA_DIR": _data_dir(),
        "PYTHONPATH": str(ROOT),
    }
    # A server with DEBUG off starts only with its static files collected, as deployed.
    env["STATIC_ROOT"] = str(Path(env["TRACESITE_DATA_DIR"]) / "static")
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput"], cwd=ROOT, env=env, check=True, capture_output=True
    )
    if backend == "mysql":
        import MySQLdb
        import redis

        parts = urlsplit(MYSQL_URL)
        conn = MySQLdb.connect(
            host=parts.hostname, port=parts.port or 3306, user=parts.username or "root", passwd=parts.password or ""
        )
        name = parts.path.lstrip("/")
        conn.cursor().execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.cursor().execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        conn.close()
        redis.Redis.from_url(REDIS_URL).flushdb()
        agent = f"{name}_agent"
        conn = MySQLdb.connect(
            host=parts.hostname, port=parts.port or 3306, user=parts.username or "root", passwd=parts.password or ""
        )
        conn.cursor().execute(f"DROP DATABASE IF EXISTS `{agent}`")
        conn.cursor().execute(f"CREATE DATABASE `{agent}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        conn.close()
        env.update(DATABASE_URL=MYSQL_URL, REDIS_URL=REDIS_URL, MYSQL_HOST=parts.hostname or "127.0.0.1",
                   MYSQL_PORT=str(parts.port or 3306), MYSQL_USER=parts.username or "root",
                   MYSQL_PASSWORD=parts.password or "", MYSQL_DATABASE=agent)  # fmt: skip
    else:
        env.pop("DATABASE_URL", None)
        env.pop("REDIS_URL", None)
    return env


def start_servers(
    kind: str, backend: str, processes: int, port: int, sessions: int, asgi: str = "daphne", gap_ms: float = 0
) -> tuple[list[subprocess.Popen], dict[str, str]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_EVENT_GAP_MS": str(gap_ms)}
    if kind in ("emitter", "agent"):
        env = {**tracesite_env(backend, sessions), "BENCH_EVENT_GAP_MS": str(gap_ms)}
        if kind == "emitter":
            # The stand-in agent waits like one that waits on a model: every session runs at once, as
            # on the baselines, so that the offered load is the one stated (the built-in agent keeps
            # the default limit, and sessions beyond it queue).
            env["TRACE_MAX_CONCURRENT_RUNS"] = str(max(sessions, 32))
        for command in (["migrate", "--noinput", "-v0"], ["seeddemo", "-v0"]):
            subprocess.run(
                [sys.executable, "manage.py", *command], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL
            )
        target = "bench.emitter:application" if kind == "emitter" else "tracesite.asgi:application"
        if asgi == "uvicorn":
            commands = [
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    target,
                    "--port",
                    str(port + i),
                    "--log-level",
                    "warning",
                    "--ws-per-message-deflate",
                    "false",
                ]
                for i in range(processes)
            ]
        else:
            commands = [
                [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port + i), target]
                for i in range(processes)
            ]
    elif kind == "fastapi":
        commands = [
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bench.baseline_fastapi:app",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ]
        ]
    else:
        commands = [[sys.executable, "bench/baseline_websockets.py", "--port", str(port)]]
    log = open(Path(tempfile.gettempdir()) / "tracesite-bench-server.log", "w")  # noqa: SIM115
    servers = [
        subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT) for command in commands
    ]
    for i, server in enumerate(servers):
        wait_for_port(port + i, server)
    return servers, env


def manage_shell(env: dict[str, str], code: str) -> str:
    """The last line ``code`` prints, run by ``manage.py shell`` in a process of its own."""
    out = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip().splitlines()[-1]


def stored_events(env: dict[str, str], prefix: str) -> int:
    """Events persisted for the traces of sessions named ``prefix…``, read by a separate process."""
    code = (
        "from traces.models import Event; "
        f"print(Event.objects.filter(trace__session_id__startswith={prefix!r}).count())"
    )
    return int(manage_shell(env, code).split()[-1])


def mysql_connections() -> int:
    """MariaDB's count of connections it has accepted since it started."""
    import MySQLdb

    parts = urlsplit(MYSQL_URL)
    conn = MySQLdb.connect(
        host=parts.hostname, port=parts.port or 3306, user=parts.username or "root", passwd=parts.password or ""
    )
    try:
        cursor = conn.cursor()
        cursor.execute("SHOW GLOBAL STATUS LIKE 'Connections'")
        return int(cursor.fetchone()[1])
    finally:
        conn.close()


def start_profilers(servers: list[subprocess.Popen]) -> list[tuple[subprocess.Popen, Path]]:
    profilers = []
    for server in servers:
        output = Path(tempfile.mkdtemp(prefix="tracesite-profile-")) / f"server-{server.pid}.txt"
        # --gil: only samples of the thread holding the GIL, i.e. where the one core of Python goes.
        command = ["py-spy", "record", "--pid", str(server.pid), "--format", "raw", "--output", str(output),
                   "--rate", "250", "--nonblocking", "--gil"]  # fmt: skip
        py_spy = Path(sys.executable).with_name("py-spy")
        command[0] = str(py_spy) if py_spy.exists() else "py-spy"
        profilers.append((subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), output))
    time.sleep(1.0)  # attached before the clock starts
    return profilers


# What a GIL-holding sample is spent on: the writer thread's whole stack is storing; otherwise the
# innermost frame of the project's own code decides (a library call counts for its caller).
FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^:)]+)")
OWNERS = [
    ("recorder (numbering, queueing)", ("traces/recorder.py", "traces/runner.py")),
    ("the stand-in agent", ("scripted.py", "bench/")),
    ("the agent", ("agents/",)),
    ("bus to other processes", ("traces/bus.py", "traces/layer.py")),
    ("sockets (hub, outbox, consumer, daphne)", ("traces/", "tracesite/")),
]


def category(frames: list[str]) -> str:
    if any(frame.startswith("_store (traces/recorder.py") for frame in frames):
        return "storing (the writer thread: rows, envelopes, the insert)"
    for frame in reversed(frames):
        match = FRAME.match(frame)
        if match is None:
            continue
        for name, prefixes in OWNERS:
            if match["file"].startswith(prefixes):
                return name
    text = ";".join(frames)
    if any(name in text for name in ("daphne/", "twisted/", "autobahn/", "uvicorn/", "websockets/")):
        return "sockets (hub, outbox, consumer, daphne)"
    if "redis/" in text or "channels_redis/" in text:
        return "bus to other processes"
    if "asyncio/" in text:
        return "event loop"
    return "other"


def stop_profilers(profilers: list[tuple[subprocess.Popen, Path]]) -> list[str]:
    """Stop sampling; per server, the share of GIL-holding samples by what they were spent on."""
    import signal

    lines = []
    for profiler, output in profilers:
        profiler.send_signal(signal.SIGINT)
        profiler.wait(60)
        total = 0
        shares: dict[str, int] = {}
        for line in output.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            samples = int(count)
            total += samples
            frames = [f.replace(f"{ROOT}/", "") for f in stack.split(";")]
            kind = category(frames)
            shares[kind] = shares.get(kind, 0) + samples
        breakdown = ", ".join(
            f"{kind} {n * 100 / max(total, 1):.1f} %" for kind, n in sorted(shares.items(), key=lambda kv: -kv[1])
        )
        lines.append(f"profile {output}: {total} samples holding the GIL: {breakdown}")
    return lines


# ---------------------------------------------------------------------------------- main


def percentile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", choices=["emitter", "agent", "fastapi", "websockets"], default="emitter")
    parser.add_argument("--backend", choices=["embedded", "mysql"], default="embedded")
    parser.add_argument(
        "--processes", type=int, default=1, help="daphne processes (tracesite only); sessions alternate"
    )
    parser.add_argument("--sessions", type=int, nargs="+", default=[50])
    parser.add_argument("--traces", type=int, default=5, help="traces per session, back to back")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--asgi", choices=["daphne", "uvicorn"], default="daphne", help="the server tracesite runs under"
    )
    parser.add_argument("--profile", action="store_true", help="sample the servers with py-spy (tracesite only)")
    parser.add_argument(
        "--gap-ms",
        type=float,
        default=0,
        help="pause between a trace's events (emitter and baselines): paces the load like an agent; 0 = back to back",
    )
    args = parser.parse_args()
    if args.server in ("fastapi", "websockets") and args.processes != 1:
        parser.error("the baselines run as one process")

    servers, env = start_servers(
        args.server, args.backend, args.processes, args.port, max(args.sessions), args.asgi, args.gap_ms
    )
    persisted = args.server in ("emitter", "agent")
    label = " ".join(
        filter(
            None,
            [
                args.server,
                args.backend if persisted else "",
                args.asgi if persisted and args.asgi != "daphne" else "",
                f"x{args.processes}",
                f"gap {args.gap_ms:g} ms" if args.gap_ms else "",
            ],
        )
    )
    summary = []
    services = pids_named("mariadbd", "mysqld", "redis-server") if args.backend == "mysql" and persisted else []
    profilers = start_profilers(servers) if args.profile else []
    try:
        for sessions in args.sessions:
            rows = []
            for run in range(args.repeat):
                prefix = f"b{sessions}r{run}-"
                query = "?protocol=2" if persisted else ""  # tracesite: every event type, as the live page asks
                urls = [
                    f"ws://127.0.0.1:{args.port + i % args.processes}/ws/{prefix}{i}{query}" for i in range(sessions)
                ]
                accepted = mysql_connections() if args.backend == "mysql" and persisted else None
                servers_cpu = cpu_seconds([server.pid for server in servers])
                writers = children([server.pid for server in servers])
                writers_cpu = cpu_seconds(writers)
                services_cpu = cpu_seconds(services)
                delivered, latencies, elapsed, clients_cpu = swarm(urls, args.traces, min(args.clients, sessions))
                servers_cpu = cpu_seconds([server.pid for server in servers]) - servers_cpu
                writers = writers or children([server.pid for server in servers])  # started during the run
                writers_cpu = cpu_seconds(writers) - (writers_cpu if writers_cpu else 0)
                services_cpu = cpu_seconds(services) - services_cpu
                if accepted is not None:
                    accepted = mysql_connections() - accepted - 1  # less this count's own connection
                stored = stored_events(env, prefix) if persisted else None
                row = {
                    "delivered": delivered,
                    "stored": stored,
                    "events_s": delivered / elapsed,
                    "traces_s": sessions * args.traces / elapsed,
                    "p50": statistics.median(latencies),
                    "p99": percentile(latencies, 0.99),
                    "max": latencies[-1],
                    # Where the machine's CPU went, in cores busy over the run: the servers, the
                    # client processes, MariaDB + Redis; and the servers' CPU per event delivered.
                    "cpu": {
                        "servers": servers_cpu / elapsed,
                        "writers": writers_cpu / elapsed,
                        "clients": clients_cpu / elapsed,
                        "services": services_cpu / elapsed,
                        "cores": os.cpu_count(),
                        "server_us_per_event": servers_cpu / max(delivered, 1) * 1e6,
                    },
                }
                rows.append(row)
                print(
                    f"{label} {sessions}x{args.traces} run {run + 1}: delivered {delivered} stored {stored} "
                    f"{row['events_s']:.0f} ev/s {row['traces_s']:.1f} traces/s p50 {row['p50']:.1f} "
                    f"p99 {row['p99']:.1f} max {row['max']:.1f} ms"
                    + f" | cores busy: servers {row['cpu']['servers']:.2f}"
                    + (f" their writer processes {row['cpu']['writers']:.2f}" if writers else "")
                    + f" clients {row['cpu']['clients']:.2f}"
                    + (f" mariadb+redis {row['cpu']['services']:.2f}" if services else "")
                    + f" of {os.cpu_count()}; server CPU {row['cpu']['server_us_per_event']:.0f} µs/event"
                    + (f" mariadb connections accepted {accepted}" if accepted is not None else ""),
                    flush=True,
                )
            median = {
                key: statistics.median(r[key] for r in rows) for key in ("events_s", "traces_s", "p50", "p99", "max")
            }
            lost = sum(r["delivered"] - r["stored"] for r in rows) if persisted else None
            summary.append((sessions, rows, median, lost))
    finally:
        shares = stop_profilers(profilers)
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait(15)
    for share in shares:
        print(share)
    print("\n| server | sessions × traces | events/s | traces/s | p50 ms | p99 ms | max ms | delivered − stored |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for sessions, _, m, lost in summary:
        print(
            f"| {label} | {sessions} × {args.traces} | {m['events_s']:,.0f} | {m['traces_s']:.1f} | {m['p50']:.1f} | "
            f"{m['p99']:.1f} | {m['max']:.1f} | {'n/a' if lost is None else lost} |"
        )
    print(
        json.dumps(
            {
                "label": label,
                "traces": args.traces,
                "results": [{"sessions": s, "median": m, "lost": lost, "runs": rows} for s, rows, m, lost in summary],
            }
        ),
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
