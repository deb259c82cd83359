"""The admin's lists over a large history: server time (median of --repeat) and query count.

    TRACESITE_DATA_DIR=/tmp/big python bench/admin_lists.py --traces 1000000
    DATABASE_URL=mysql://root@127.0.0.1:3306/tracesite_big python bench/admin_lists.py --traces 1000000

Fills the database first if it has fewer traces (bench/bulk_history.py), then prints one line per list.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tracesite.settings")
os.environ.setdefault("DJANGO_ALLOWED_HOSTS", "testserver")

import django

django.setup()

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, reset_queries
from django.test import Client

from bench.bulk_history import fill


def lists(traces: int) -> dict[str, str]:
    deep = max(1, min(50, traces // 100))  # page 50, or the last of a small history
    return {
        "traces": "/admin/traces/trace/",
        "traces, status=error": "/admin/traces/trace/?status__exact=error",
        f"traces, page {deep}": f"/admin/traces/trace/?p={deep}",
        "runs": "/admin/traces/run/",
        "events": "/admin/traces/event/",
        "events, event_type=status_update": "/admin/traces/event/?event_type__exact=status_update",
        f"events, page {deep}": f"/admin/traces/event/?p={deep}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--traces", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    fill(args.traces)
    settings.DEBUG = True  # to count queries
    user, _ = get_user_model().objects.get_or_create(username="bench-admin", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(user)
    print(f"{connection.vendor}, {args.traces:,} traces")
    for label, url in lists(args.traces).items():
        times, cpu = [], []
        for _ in range(args.repeat):
            reset_queries()
            started, started_cpu = time.perf_counter(), time.process_time()
            response = client.get(url)
            times.append((time.perf_counter() - started) * 1000)
            cpu.append((time.process_time() - started_cpu) * 1000)
            assert response.status_code == 200, (url, response.status_code)
        slowest = max(float(query["time"]) for query in connection.queries) * 1000
        print(
            f"  {label:<36} {statistics.median(times):7.0f} ms ({statistics.median(cpu):.0f} ms of CPU here)"
            f"  {len(connection.queries)} queries"
            f" (the slowest {slowest:.0f} ms)"
        )


if __name__ == "__main__":
    main()
