"""History at scale: server time and query count of the history pages over N traces.

    TRACESITE_DATA_DIR=/tmp/bench python bench/history.py --traces 100000
    DATABASE_URL=mysql://root@127.0.0.1:3306/tracesite_bench python bench/history.py --traces 100000

It fills the configured database (migrating it first) with N traces of 10 events each, then times
each page through Django's test client (median of --repeat runs) and prints one line per page,
then exports a quarter of the traces and all of them with ``exporttraces``, each in a process of
its own, with its time, query count and peak memory.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tracesite.settings")
os.environ.setdefault("DJANGO_ALLOWED_HOSTS", "testserver")

import django

django.setup()

from django.conf import settings
from django.core.management import call_command
from django.db import connection, reset_queries
from django.test import Client
from django.utils import timezone

from agents.events import EventType
from traces import protocol
from traces.models import Event, Trace

QUESTIONS = [
    "显示用户表的{}条用户数据",
    "how many orders per country? #{}",
    "top {} products by price",
    "用户的平均年龄 {}",
    "latest {} orders",
]


def fill(count: int, events_per_trace: int = 10) -> None:
    have = Trace.objects.count()
    now = timezone.now()
    batch = 2000
    for start in range(have, count, batch):
        traces, events = [], []
        for i in range(start, min(count, start + batch)):
            trace_id = uuid.uuid4()
            started = now - dt.timedelta(seconds=i * 7)
            traces.append(
                Trace(
                    id=trace_id,
                    name="sql_agent_execution",
                    agent_name="sql_agent",
                    request=QUESTIONS[i % 5].format(i % 50),
                    final_response=f"answer {i} 共 {i % 50} 行",
                    status=["success", "success", "error", "cancelled"][i % 4],
                    started_at=started,
                    ended_at=started + dt.timedelta(seconds=1),
                    duration_ms=200 + i % 5000,
                    model="builtin",
                    source="websocket",
                    session_id=f"s{i % 1000}",
                    total_tokens=1000 + i % 700,
                    last_seq=events_per_trace,
                )
            )
            for seq in range(1, events_per_trace + 1):
                message = protocol.envelope(
                    EventType.STATUS_UPDATE,
                    {"current_step": seq},
                    session_id="s",
                    trace_id=trace_id,
                    seq=seq,
                    timestamp=started,
                )
                events.append(
                    Event(
                        trace_id=trace_id,
                        seq=seq,
                        event_type="status_update",
                        timestamp=started,
                        message_id=message["message_id"],
                        envelope=protocol.dumps(message),
                    )
                )
        Trace.objects.bulk_create(traces)
        Event.objects.bulk_create(events, batch_size=5000)
        print(f"  {min(count, start + batch)} traces", file=sys.stderr, end="\r")


def timed(client: Client, url: str, repeat: int) -> tuple[float, int]:
    times, queries = [], 0
    for _ in range(repeat):
        reset_queries()
        started = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (url, response.status_code)
        queries = len(connection.queries)
    return statistics.median(times), queries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--traces", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    settings.DEBUG = True  # to count queries
    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    fill(args.traces)
    print(
        f"filled {Trace.objects.count()} traces / {Event.objects.count()} events in {time.perf_counter() - started:.0f} s ({connection.vendor})"
    )
    client = Client()
    sample = Trace.objects.order_by("-started_at").first()
    from urllib.parse import quote

    from traces.pages.pagination import encode

    deep = Trace.objects.order_by("-started_at", "-id")[min(49_950, Trace.objects.count() - 1)]
    pages = {
        "history, first page": "/traces/",
        "history, 1000 pages deep (keyset)": f"/traces/?after={quote(encode(deep))}",
        "history, ?page=1000 (offset)": "/traces/?page=1000",
        "search, English": "/traces/?q=orders+per+country",
        "search, Chinese": "/traces/?q=%E7%94%A8%E6%88%B7%E6%95%B0%E6%8D%AE",
        "search, a term in one trace (full scan)": "/traces/?q=answer+99999+",
        "filter, status=error": "/traces/?status=error",
        "filter, slower than 4000 ms": "/traces/?min_ms=4000",
        "session view": "/sessions/s7/",
        "trace detail": f"/traces/{sample.pk}/",
        "dashboard, 7 days": "/dashboard/?range=7d",
    }
    print(f"{'page':36} {'median ms':>10} {'queries':>8}")
    for name, url in pages.items():
        ms, queries = timed(client, url, args.repeat)
        print(f"{name:36} {ms:10.1f} {queries:8d}")
    print(
        f"\n{'exporttraces (JSONL)':36} {'traces':>8} {'seconds':>8} {'MiB out':>8} {'queries':>8} {'peak RSS MiB':>13}"
    )
    for name, options in (("status=error (a quarter)", ["--status", "error"]), ("everything", [])):
        traces, seconds, size, queries, peak = export(options)
        print(f"{name:36} {traces:8d} {seconds:8.1f} {size / 2**20:8.1f} {queries:8d} {peak:13.1f}")


EXPORT = """
import sys, time
import django
django.setup()
from django.core.management import call_command
from django.db import connection
queries = 0
def count(execute, sql, params, many, context):
    global queries
    queries += 1
    return execute(sql, params, many, context)
started = time.perf_counter()
with connection.execute_wrapper(count):
    call_command("exporttraces", *sys.argv[1:], stderr=open("/dev/null", "w"))
# VmHWM, not ru_maxrss: Linux carries the forking parent's peak into ru_maxrss across exec.
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(time.perf_counter() - started, queries, peak / 1024)
"""


def export(options: list[str]) -> tuple[int, float, int, int, float]:
    """exporttraces in a process of its own, DEBUG off as deployed: its time, query count and peak RSS
    (constant memory: about the same peak for any count)."""
    import subprocess
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".jsonl") as out:
        env = {
            **os.environ,
            "DJANGO_DEBUG": "0",
            "DJANGO_SECRET_KEY": "bench-" + "x" * 50,
            "DJANGO_ALLOWED_HOSTS": "localhost",
        }
        result = subprocess.run(
            [sys.executable, "-c", EXPORT, *options, "-o", out.name],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent.parent,
            env=env,
        )
        seconds, queries, peak = result.stdout.split()
        with open(out.name, "rb") as written:
            traces = sum(1 for _ in written)
        return traces, float(seconds), os.path.getsize(out.name), int(queries), float(peak)


if __name__ == "__main__":
    main()
