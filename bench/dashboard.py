"""The dashboard at scale: server time of /dashboard/ for each range over N traces.

    TRACESITE_DATA_DIR=/tmp/bench python bench/dashboard.py --traces 100000
    DATABASE_URL=mysql://root@127.0.0.1:3306/tracesite_bench python bench/dashboard.py --traces 100000

It fills the configured database (migrating it first) up to N traces spread over the last 90 days
(six owners, three models, two tool calls each, one of them ``run_sql``), seals the dashboard's
hourly sums with ``rebuildrollups`` (timed), then times each range's page through Django's test
client (median of --repeat runs), for everyone (auth off) and for one user (auth on): read from
the sealed hours, and read from the traces alone (the seal set aside, as before the first sweep).
``measure()`` is the part another script can call on a database it filled itself.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import statistics
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tracesite.settings")
os.environ.setdefault("DJANGO_ALLOWED_HOSTS", "testserver")

import django

django.setup()

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection, reset_queries
from django.test import Client
from django.utils import timezone

from traces.models import RollupSeal, Run, Trace
from traces.pages import stats

SPAN = dt.timedelta(days=90)
MODELS = ["builtin", "gpt-4o-mini", "gpt-4o"]


def fill(count: int) -> None:
    users = [get_user_model().objects.get_or_create(username=f"bench-{n}")[0] for n in range(5)]
    owners = [*users, None]
    have = Trace.objects.count()
    now = timezone.now()
    step = SPAN / count
    batch = 2000
    for start in range(have, count, batch):
        traces, runs = [], []
        for i in range(start, min(count, start + batch)):
            trace_id = uuid.uuid4()
            started = now - step * i
            owner = owners[i % len(owners)]
            traces.append(
                Trace(
                    id=trace_id,
                    name="sql_agent_execution",
                    agent_name="sql_agent",
                    request=f"how many orders per country? #{i % 50}",
                    status=["success", "success", "error", "cancelled"][i % 4],
                    started_at=started,
                    ended_at=started + dt.timedelta(seconds=1),
                    duration_ms=200 + (i * 7919) % 9000,
                    model=MODELS[i % 3],
                    owner=owner,
                    total_tokens=1000 + i % 700,
                    total_cost=Decimal("0.0001") * (i % 9),
                    last_seq=10,
                )
            )
            for name, ms in (("run_sql", 5 + (i * 104729) % 5000), ("describe_schema", 3)):
                runs.append(
                    Run(
                        trace_id=trace_id,
                        name=name,
                        run_type=Run.Type.TOOL,
                        status=Run.Status.ERROR if i % 13 == 0 else Run.Status.SUCCESS,
                        start_time=started,
                        duration_ms=ms,
                        inputs={"sql": f"SELECT {i}"} if name == "run_sql" else {},
                    )
                )
        Trace.objects.bulk_create(traces)
        Run.objects.bulk_create(runs, batch_size=5000)
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


def measure(repeat: int = 5) -> None:
    """Print the dashboard's time for each range and viewer, sealed and from the traces alone."""
    settings.DEBUG = True  # to count queries
    started = time.perf_counter()
    call_command("rebuildrollups", stdout=io.StringIO())
    print(f"rebuildrollups: {time.perf_counter() - started:.1f} s ({connection.vendor})")
    user = get_user_model().objects.get(username="bench-0")
    print(f"{'range':6} {'viewer':10} {'sealed ms':>10} {'queries':>8} {'from traces ms':>15} {'queries':>8}")
    for viewer in ("everyone", "one user"):
        client = Client()
        settings.TRACE_REQUIRE_AUTH = viewer == "one user"
        if settings.TRACE_REQUIRE_AUTH:
            client.force_login(user)
        for key in stats.RANGES:
            url = f"/dashboard/?range={key}"
            sealed_ms, sealed_queries = timed(client, url, repeat)
            seal = RollupSeal.objects.get()
            RollupSeal.objects.update(sealed_until=None)
            try:
                rows_ms, rows_queries = timed(client, url, max(1, repeat // 2))
            finally:
                RollupSeal.objects.update(sealed_until=seal.sealed_until)
            print(f"{key:6} {viewer:10} {sealed_ms:10.1f} {sealed_queries:8d} {rows_ms:15.1f} {rows_queries:8d}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--traces", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    fill(args.traces)
    print(
        f"filled {Trace.objects.count()} traces / {Run.objects.count()} runs in "
        f"{time.perf_counter() - started:.0f} s ({connection.vendor})"
    )
    measure(args.repeat)


if __name__ == "__main__":
    main()
