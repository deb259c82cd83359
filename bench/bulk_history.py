"""A large history, quickly: N traces of E events each, written with plain multi-row inserts.

    TRACESITE_DATA_DIR=/tmp/big python bench/bulk_history.py --traces 1000000
    DATABASE_URL=mysql://root@127.0.0.1:3306/tracesite_big python bench/bulk_history.py --traces 1000000

Used by bench/export.py and bench/prune.py (``fill``). Traces start a second apart, newest now;
every second one is in the session "shared" (as every ``runagent`` without ``--session`` is), the
others in one of a thousand sessions. Rows skip the model layer: building 10 million Event
instances is most of the time bulk_create takes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tracesite.settings")

import django

django.setup()

from django.core.management import call_command
from django.db import connection, transaction
from django.utils import timezone

from agents.events import format_timestamp
from traces.models import Event, Trace

BATCH = 2_000  # traces per transaction
STATUSES = ["success", "success", "error", "cancelled"]
SHARED_SESSION = "shared"


def _insert(model, columns: list[str], rows: list[tuple]) -> None:
    table = connection.ops.quote_name(model._meta.db_table)
    names = ", ".join(connection.ops.quote_name(column) for column in columns)
    marks = ", ".join(["%s"] * len(columns))
    with connection.cursor() as cursor:
        cursor.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", rows)


TRACE_COLUMNS = [
    "id", "name", "session_id", "agent_name", "request", "final_response", "status", "max_steps",
    "current_step", "model", "source", "started_at", "ended_at", "duration_ms", "prompt_tokens",
    "completion_tokens", "total_tokens", "total_cost", "total_runs", "last_seq", "error", "error_type",
    "metadata", "runner", "feedback_comment",
]  # fmt: skip
EVENT_COLUMNS = ["trace_id", "seq", "event_type", "timestamp", "message_id", "envelope"]


def fill(count: int, events_per_trace: int = 10, *, oldest_days_ago: float = 0) -> None:
    """Adds traces until there are ``count``; the oldest starts ``oldest_days_ago`` days before
    the newest, at most (they are a second apart if that is closer)."""
    call_command("migrate", verbosity=0)
    have = Trace.objects.count()
    now = timezone.now()
    step = dt.timedelta(seconds=1)
    if oldest_days_ago:
        step = min(step, dt.timedelta(days=oldest_days_ago) / max(count, 1))
    id_field = Trace._meta.pk
    moment = connection.ops.adapt_datetimefield_value
    started = time.perf_counter()
    for start in range(have, count, BATCH):
        traces, events = [], []
        for i in range(start, min(count, start + BATCH)):
            trace_id = uuid.uuid4()
            key = id_field.get_db_prep_value(trace_id, connection)
            at = now - step * i
            stamp = format_timestamp(at)
            session = SHARED_SESSION if i % 2 else f"s{i % 1000}"
            traces.append(
                (key, "sql_agent_execution", session, "sql_agent", f"how many orders per country? #{i % 50}",
                 f"answer {i}", STATUSES[i % 4], 10, 3, "builtin", "websocket", moment(at),
                 moment(at + dt.timedelta(seconds=1)), 200 + i % 5000, 600, 400 + i % 700, 1000 + i % 700,
                 "0.00120000", 3, events_per_trace, "", "", "{}", "", "")
            )  # fmt: skip
            for seq in range(1, events_per_trace + 1):
                message_id = f"status_update_{trace_id.hex}_{seq}"
                envelope = (
                    f'{{"event_type":"status_update","timestamp":"{stamp}","message_id":"{message_id}",'
                    f'"session_id":"{session}","data":{{"current_step":{seq}}},"trace_id":"{trace_id}",'
                    f'"seq":{seq},"replay":false}}'
                )
                events.append((key, seq, "status_update", moment(at), message_id, envelope))
        with transaction.atomic():
            _insert(Trace, TRACE_COLUMNS, traces)
            _insert(Event, EVENT_COLUMNS, events)
        done = min(count, start + BATCH)
        rate = (done - have) / (time.perf_counter() - started)
        print(f"  {done:,} traces ({rate:,.0f}/s)", file=sys.stderr, end="\r")
    if count > have:
        print(file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--traces", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=10, help="Events per trace.")
    args = parser.parse_args()
    started = time.perf_counter()
    fill(args.traces, args.events)
    print(f"{Trace.objects.count():,} traces in {time.perf_counter() - started:.0f} s ({connection.vendor})")


if __name__ == "__main__":
    main()
