"""The server's memory while clients that never read ask for replays of a large trace.

    python bench/replay_memory.py                   # 5 clients, a 20 MB trace, embedded defaults
    python bench/replay_memory.py --clients 12
    python bench/replay_memory.py --events 20000 --event-bytes 1000   # the same 20 MB in small events
    python bench/replay_memory.py --backend mysql

Stores a trace of ``--events`` events of about ``--event-bytes`` each (20 MB with the defaults), starts one
daphne process on that database, and opens ``--clients`` WebSockets that ask for
``replay_trace`` at speed 0 and then never read (a small receive buffer, a client library that
stops reading after one message). Samples the daphne process's resident memory (VmRSS) every
0.1 s: before the clients, the highest while they are connected, and after the server has
dropped them as slow clients (``TRACE_SLOW_CLIENT_SECONDS``) and they have gone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.live import tracesite_env, wait_for_port

MYSQL_URL = os.environ.get("BENCH_MYSQL_URL", "mysql://root@127.0.0.1:3306/tracesite_bench_replay_memory")


def store_trace(events: int, size: int) -> str:
    """A finished trace of ``events`` status updates of about ``size`` bytes each, written in bulk."""
    from django.utils import timezone

    from agents.events import EventType
    from traces import protocol
    from traces.models import Event, Trace

    trace = Trace.objects.create(
        name="big", agent_name="sql_agent", request="big", status=Trace.Status.SUCCESS,
        started_at=timezone.now(), last_seq=events,
    )  # fmt: skip
    rows = []
    for seq in range(1, events + 1):
        message = protocol.envelope(
            EventType.STATUS_UPDATE,
            {"current_step": seq, "message": "x" * (size - 250)},
            session_id="s",
            trace_id=trace.pk,
            seq=seq,
        )
        rows.append(
            Event(
                trace=trace, seq=seq, event_type=EventType.STATUS_UPDATE, timestamp=trace.started_at,
                message_id=message["message_id"], envelope=protocol.dumps(message),
            )
        )  # fmt: skip
        if len(rows) == 1000:
            Event.objects.bulk_create(rows)
            rows = []
    Event.objects.bulk_create(rows)
    return str(trace.pk)


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def stuck_clients(port: int, trace_id: str, clients: int, pid: int, hold: float) -> tuple[float, list]:
    """Open ``clients`` sockets that ask for the replay and never read; the peak RSS while they hold."""
    import websockets

    opened = []
    for number in range(clients):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        ws = await websockets.connect(
            f"ws://127.0.0.1:{port}/ws/stuck-{number}", sock=sock, max_queue=1, max_size=None, compression=None
        )
        await ws.recv()
        await ws.send(json.dumps({"action": "replay_trace", "trace_id": trace_id, "speed": 0}))
        opened.append(ws)
    peak, deadline = 0.0, time.monotonic() + hold
    while time.monotonic() < deadline:
        peak = max(peak, rss_mib(pid))
        await asyncio.sleep(0.1)
    return peak, opened


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["embedded", "mysql"], default="embedded")
    parser.add_argument("--events", type=int, default=2500, help="events in the trace (default: 20 MB of them)")
    parser.add_argument("--event-bytes", type=int, default=8000, help="about this many bytes an event")
    parser.add_argument("--clients", type=int, default=5)
    parser.add_argument("--slow-seconds", type=float, default=10.0, help="TRACE_SLOW_CLIENT_SECONDS")
    parser.add_argument("--port", type=int, default=8776)
    args = parser.parse_args()

    if args.backend == "mysql":
        import bench.live

        bench.live.MYSQL_URL = MYSQL_URL
    env = tracesite_env(args.backend, 10)
    env["TRACE_SLOW_CLIENT_SECONDS"] = str(args.slow_seconds)
    os.environ.update(
        {k: v for k, v in env.items() if k in ("DATABASE_URL", "REDIS_URL", "TRACESITE_DATA_DIR", "TRACESITE_ENV_FILE")}
    )
    os.environ.update(DJANGO_SETTINGS_MODULE="tracesite.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", "--noinput", verbosity=0)
    trace_id = store_trace(args.events, args.event_bytes)
    print(f"stored a trace of {args.events} events, about {args.events * args.event_bytes / 1e6:.0f} MB")

    log = open(Path(tempfile.gettempdir()) / "tracesite-bench-replay-memory.log", "w")  # noqa: SIM115
    server = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(args.port), "tracesite.asgi:application"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(args.port, server)
        time.sleep(1)
        before = rss_mib(server.pid)

        async def run() -> tuple[float, float]:
            peak, opened = await stuck_clients(args.port, trace_id, args.clients, server.pid, args.slow_seconds - 1)
            await asyncio.sleep(3)  # past TRACE_SLOW_CLIENT_SECONDS: the server has dropped them
            for ws in opened:
                ws.transport.abort()
            await asyncio.sleep(2)
            return peak, rss_mib(server.pid)

        peak, after = asyncio.run(run())
    finally:
        server.terminate()
        server.wait(15)
    print(f"daphne RSS: before {before:.0f} MiB, peak with {args.clients} stuck replays {peak:.0f} MiB "
          f"(+{peak - before:.0f}), after they were dropped {after:.0f} MiB (+{after - before:.0f})")  # fmt: skip
    print(
        f"\n| {args.backend} | {args.clients} stuck replays of {args.events} events | +{peak - before:.0f} MiB peak |"
    )


if __name__ == "__main__":
    main()
