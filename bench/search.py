"""Searching the history at scale: the history page's server time for a search over N traces,
through the search index and by the bounded scan.

    TRACESITE_DATA_DIR=/tmp/bench-search python bench/search.py --traces 100000
    DATABASE_URL=mysql://root@127.0.0.1:3306/tracesite_bench_search python bench/search.py --traces 100000

Use a database of its own: it migrates it, and fills it (traces only, no events) with the index
dropped, then adds the index back with its migration, timing the backfill. Then it times the
history page searching for each term (median of --repeat runs) and prints one line per term,
saying whether the index answered it or a scan of the newest traces did.
"""

from __future__ import annotations

import argparse
import datetime as dt
import html
import os
import re
import statistics
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tracesite.settings")
os.environ.setdefault("DJANGO_ALLOWED_HOSTS", "testserver")

import django

django.setup()

from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.utils import timezone

from traces.models import Trace

QUESTIONS = [
    "显示用户表的{}条用户数据",
    "how many orders per country? #{}",
    "top {} products by price",
    "用户的平均年龄 {}",
    "latest {} orders and their customers, with the shipping address of each",
]
ANSWERS = [
    "Here are the {} rows you asked for: the orders table joined to customers.",
    "共 {} 行，按国家分组。",
    "The query failed: no such column price_{}.",
]
TERMS = {
    "English, a fifth of the traces": "orders per country",
    "English, one trace": "answer 99999 ",
    "Chinese, two fifths": "用户数据",
    "Chinese, one character": "用",
    "English, two characters": "pr",
    "a term that matches nothing": "zebra crossing",
}


def fill(count: int) -> None:
    now = timezone.now()
    have = Trace.objects.count()
    batch = 5000
    for start in range(have, count, batch):
        Trace.objects.bulk_create(
            [
                Trace(
                    id=uuid.uuid4(),
                    name="sql_agent_execution",
                    agent_name="sql_agent",
                    request=QUESTIONS[i % 5].format(i % 50),
                    final_response=f"answer {i} " + ANSWERS[i % 3].format(i % 50),
                    status=["success", "success", "error", "cancelled"][i % 4],
                    started_at=now - dt.timedelta(seconds=i * 7),
                    model="builtin",
                    session_id=f"s{i % 1000}",
                )
                for i in range(start, min(count, start + batch))
            ]
        )


def timed(client: Client, url: str, repeat: int) -> tuple[float, str]:
    """The median time of the page in ms, and the query of its link to the next page ("" if none)."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.status_code
    link = re.search(r'href="\?([^"]*)" rel="next"', response.content.decode())
    return statistics.median(times), html.unescape(link.group(1)) if link else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--traces", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    if Trace.objects.count() < args.traces:
        call_command("migrate", "traces", "0009", verbosity=0)
        started = time.perf_counter()
        fill(args.traces)
        print(f"filled {Trace.objects.count()} traces in {time.perf_counter() - started:.1f} s ({connection.vendor})")
        started = time.perf_counter()
        call_command("migrate", "traces", "0010", verbosity=0)
        print(f"migration 0011_trace_search (index and backfill): {time.perf_counter() - started:.1f} s")
    client = Client()
    print(f"{Trace.objects.count()} traces on {connection.vendor}")
    print("median ms of the history page: the first, the tenth (following each page's link to the")
    print("next), and the first in another order (slowest first, numbered pages)")
    print(f"{'search':34} {'how':24} {'first':>8} {'tenth':>8} {'slowest':>8}")
    for name, term in TERMS.items():
        plan = Trace.objects.search_plan(term)
        how = "index" if plan.indexed else f"scan of newest {plan.scan_rows:,}"
        first, link = timed(client, "/traces/?" + urlencode({"q": term}), args.repeat)
        tenth = "-"  # fewer pages
        for page in range(2, 11):
            if not link:
                break
            ms, link = timed(client, "/traces/?" + link, 1)
            tenth = f"{ms:.1f}" if page == 10 else "-"
        slowest, _ = timed(client, "/traces/?" + urlencode({"q": term, "sort": "slowest"}), args.repeat)
        print(f"{name:34} {how:24} {first:8.1f} {tenth:>8} {slowest:8.1f}")


if __name__ == "__main__":
    main()
