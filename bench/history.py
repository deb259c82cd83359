"""History at scale: the history's pages, searches, dashboard, admin and export over N traces.

    python bench/history.py --backend sqlite --traces 1000000 --keep
    python bench/history.py --backend mysql --traces 1000000 --keep --buffer-pool 2G
    TRACESITE_DATA_DIR=/tmp/bench python bench/history.py --traces 1000   # the configured database

``--backend sqlite`` keeps its database in ``--store`` (history-N.sqlite3), ``--backend mysql``
in the MariaDB database ``tracesite_history_<N>`` (1m for a million; BENCH_MYSQL_URL names the
server, root@127.0.0.1 by default); without ``--backend`` the configured database is used, and
must be empty or hold exactly N traces. ``--keep`` reuses a kept database that holds N traces,
migrating it first; otherwise it is made again and filled in bulk (``bench/history_fill.py``) with
N traces of 10 events. Any ``rebuild…`` management command (derived tables a raw fill does not
write) then runs.

Each page is timed through Django's test client (median of --repeat runs; once if slower than 2 s) twice: as an anonymous
visitor with TRACE_REQUIRE_AUTH off, and as a logged-in user who is not staff with it on (the
visibility filter is then part of every query); the admin's lists as a superuser. Then
``exporttraces`` writes every trace, in a process of its own. Each figure is printed beside its
target.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
STORE = Path("/var/tmp/tracesite-history")
PAGE_MS, SEARCH_MS, DASHBOARD_MS, EXPORT_RATE = 100, 300, 100, 5000
# A page this slow is timed once: it is far past its target, and five runs of a 30 s page cost minutes.
TIMED_ONCE_MS = 2000


def label(count: int) -> str:
    """1000000 → 1m, 100000 → 100k: the name of a kept MariaDB database."""
    for size, suffix in ((1_000_000, "m"), (1_000, "k")):
        if count >= size and count % size == 0:
            return f"{count // size}{suffix}"
    return str(count)


def parse_size(text: str) -> int:
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    text = text.strip().upper()
    return int(float(text[:-1]) * units[text[-1]]) if text[-1:] in units else int(text)


def mysql_server(url: str):
    import MySQLdb

    parts = urlsplit(url)
    return MySQLdb.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=parts.username or "root",
        password=parts.password or "",
        charset="utf8mb4",
    )


class KeptDatabase:
    """The database of a ``--backend`` run, outside the repository; ``prepare`` says whether it
    already holds ``count`` traces (reused with ``keep``) or was made again, empty."""

    url: str

    def prepare(self, count: int, keep: bool) -> bool:
        raise NotImplementedError


class KeptSqlite(KeptDatabase):
    def __init__(self, store: Path, count: int):
        self.path = store / f"history-{count}.sqlite3"
        self.url = f"sqlite:///{self.path}"

    def prepare(self, count: int, keep: bool) -> bool:
        if keep and self.path.exists():
            try:
                with sqlite3.connect(self.path) as db:
                    if db.execute("SELECT COUNT(*) FROM traces_trace").fetchone()[0] == count:
                        return True
            except sqlite3.DatabaseError:
                pass  # not a filled history: made again below
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        return False


class KeptMysql(KeptDatabase):
    def __init__(self, server_url: str, count: int):
        self.server_url = server_url.rstrip("/") + "/"
        self.name = f"tracesite_history_{label(count)}"
        self.url = self.server_url + self.name

    def prepare(self, count: int, keep: bool) -> bool:
        import MySQLdb

        server = mysql_server(self.server_url)
        cursor = server.cursor()
        if keep:
            try:
                cursor.execute(f"SELECT COUNT(*) FROM `{self.name}`.traces_trace")
                if cursor.fetchone()[0] == count:
                    return True
            except MySQLdb.Error:
                pass  # no such database or table: made below
        cursor.execute(f"DROP DATABASE IF EXISTS `{self.name}`")
        cursor.execute(f"CREATE DATABASE `{self.name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        server.close()
        return False


class BufferPool:
    """``SET GLOBAL innodb_buffer_pool_size`` for the run (MariaDB resizes it online), then back."""

    def __init__(self, server_url: str, size: int):
        self.server = mysql_server(server_url)
        self.size = size
        self.before = self.current()

    def current(self) -> int:
        cursor = self.server.cursor()
        cursor.execute("SELECT @@innodb_buffer_pool_size")
        return int(cursor.fetchone()[0])

    def resize(self, size: int) -> None:
        self.server.cursor().execute(f"SET GLOBAL innodb_buffer_pool_size = {int(size)}")
        for _ in range(600):  # the resize finishes in the background
            cursor = self.server.cursor()
            cursor.execute("SHOW STATUS LIKE 'Innodb_buffer_pool_resize_status'")
            row = cursor.fetchone()
            if row is None or not row[1] or "complete" in row[1].lower() or "finished" in row[1].lower():
                return
            time.sleep(0.2)

    def __enter__(self) -> BufferPool:
        self.resize(self.size)
        print(f"innodb_buffer_pool_size set to {self.current() / 2**30:.2f} GiB for this run", flush=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.resize(self.before)
        print(f"innodb_buffer_pool_size restored to {self.current() / 2**30:.2f} GiB")
        self.server.close()


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--traces", type=int, default=100_000, help="How many traces (10 events each).")
    parser.add_argument("--repeat", type=int, default=5, help="Runs of each page; the median is printed.")
    parser.add_argument(
        "--backend", choices=["sqlite", "mysql"], help="A kept database of its own (default: the configured one)."
    )
    parser.add_argument("--keep", action="store_true", help="Reuse the kept database if it holds --traces traces.")
    parser.add_argument("--store", type=Path, default=STORE, help=f"Where SQLite databases are kept ({STORE}).")
    parser.add_argument(
        "--buffer-pool", type=parse_size, help="MariaDB's innodb_buffer_pool_size for the run, e.g. 2G."
    )
    parser.add_argument("--no-export", action="store_true", help="Leave out the export.")
    return parser.parse_args()


def main() -> None:
    args = arguments()
    if args.buffer_pool and args.backend != "mysql":
        raise SystemExit("--buffer-pool is for --backend mysql")
    server_url = os.environ.get("BENCH_MYSQL_URL", "mysql://root@127.0.0.1:3306/")
    kept: KeptDatabase | None = None
    if args.backend == "sqlite":
        kept = KeptSqlite(args.store, args.traces)
    elif args.backend == "mysql":
        kept = KeptMysql(server_url, args.traces)
    reuse = False
    if kept is not None:
        reuse = kept.prepare(args.traces, args.keep)
        os.environ["DATABASE_URL"] = kept.url
        os.environ.setdefault("TRACESITE_DATA_DIR", str(args.store))
        args.store.mkdir(parents=True, exist_ok=True)
    pool = BufferPool(server_url, args.buffer_pool) if args.buffer_pool else None
    if pool is not None:
        with pool:
            run(args, reuse)
    else:
        run(args, reuse)


def run(args: argparse.Namespace, reuse: bool) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tracesite.settings")
    os.environ.setdefault("DJANGO_ALLOWED_HOSTS", "testserver")
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command, get_commands
    from django.db import connection
    from history_fill import timed_fill

    from traces.models import Event, Run, Trace

    settings.DEBUG = True  # to count queries
    started = time.perf_counter()
    call_command("migrate", verbosity=0)
    print(f"migrated in {time.perf_counter() - started:.1f} s", flush=True)
    users = bench_users()
    have = Trace.objects.count()
    if have != args.traces:
        if have:
            raise SystemExit(f"the database holds {have} traces, not {args.traces}: give an empty one, or --backend")
        seconds = timed_fill(args.traces, [user.pk for user in users], lambda line: print(line, file=sys.stderr))
        events = Event.objects.count()
        print(
            f"filled {args.traces} traces / {events} events in {seconds:.1f} s: "
            f"{args.traces / seconds:,.0f} traces/s, {events / seconds:,.0f} events/s ({connection.vendor})",
            flush=True,
        )
    else:
        print(f"reused {have} traces{' (kept)' if reuse else ''}")
    for name in sorted(command for command in get_commands() if command.startswith("rebuild")):
        started = time.perf_counter()
        call_command(name, verbosity=0)
        print(f"{name} in {time.perf_counter() - started:.1f} s", flush=True)
    describe(Trace, Run, Event)
    figures = Figures(args.repeat)
    figures.pages(users)
    if not args.no_export:
        figures.export()
    print(f"\n{figures.met} met, {figures.missed} missed")


def bench_users():
    """The five owners of the filled traces, none of them staff; and ``bench_admin``, a superuser
    for the admin's lists."""
    from django.contrib.auth import get_user_model

    User = get_user_model()
    users = []
    for n in range(1, 6):
        user, _ = User.objects.get_or_create(username=f"bench_user{n}")
        users.append(user)
    admin, created = User.objects.get_or_create(username="bench_admin", defaults={"is_staff": True})
    if created or not admin.is_superuser:
        admin.is_staff = admin.is_superuser = True
        admin.save()
    return users


def describe(*models) -> None:
    """The backend, its size and its configuration: figures mean nothing without them."""
    from django.db import connection

    counts = ", ".join(f"{model.objects.count():,} {model._meta.model_name}s" for model in models)
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            path = Path(connection.settings_dict["NAME"])
            cursor.execute("PRAGMA journal_mode")
            journal = cursor.fetchone()[0]
            print(f"SQLite {sqlite3.sqlite_version}, {path}: {path.stat().st_size / 2**30:.2f} GiB, journal {journal}")
        else:
            cursor.execute(
                "SELECT VERSION(), @@innodb_buffer_pool_size, @@innodb_flush_log_at_trx_commit,"
                " (SELECT SUM(data_length + index_length) FROM information_schema.tables WHERE table_schema = DATABASE())"
            )
            version, pool, flush, size = cursor.fetchone()
            print(
                f"MariaDB {version}, database {connection.settings_dict['NAME']}: {int(size or 0) / 2**30:.2f} GiB; "
                f"innodb_buffer_pool_size {int(pool) / 2**30:.2f} GiB, innodb_flush_log_at_trx_commit {flush}"
            )
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"{counts}; load average {load} on {os.cpu_count()} cores", flush=True)


@dataclass
class Page:
    name: str
    url: str
    target_ms: int


class Figures:
    """Times pages and the export, printing each beside its target and counting the targets met."""

    def __init__(self, repeat: int):
        self.repeat = repeat
        self.met = self.missed = 0

    def verdict(self, met: bool) -> str:
        if met:
            self.met += 1
        else:
            self.missed += 1
        return "met" if met else "MISSED"

    def pages(self, users) -> None:
        from django.test import Client, override_settings

        admin = type(users[0]).objects.get(username="bench_admin")
        viewers = [
            ("anonymous, TRACE_REQUIRE_AUTH off", False, None),
            (f"{users[0]}, not staff, auth on", True, users[0]),
        ]
        for who, require_auth, user in viewers:
            with override_settings(TRACE_REQUIRE_AUTH=require_auth):
                client = Client()
                if user is not None:
                    client.force_login(user)
                self.table(who, client, history_pages(user))
        with override_settings(TRACE_REQUIRE_AUTH=True):
            client = Client()
            client.force_login(admin)
            self.table(
                "admin changelists, superuser",
                client,
                [Page(f"admin, {name}s", f"/admin/traces/{name}/", SEARCH_MS) for name in ("trace", "run", "event")],
            )

    def table(self, title: str, client, pages: list[Page]) -> None:
        client.get("/traces/")  # not timed: the first request of a client loads templates and sessions
        print(f"\n{title}\n{'page':46} {'median ms':>10} {'queries':>8} {'target':>8}")
        for page in pages:
            ms, queries = timed(client, page.url, self.repeat)
            verdict = self.verdict(ms <= page.target_ms)
            print(f"{page.name:46} {ms:10.1f} {queries:8d} {page.target_ms:6d}ms {verdict}", flush=True)

    def export(self) -> None:
        print(
            f"\n{'exporttraces (JSONL)':28} {'traces':>9} {'seconds':>8} {'traces/s':>9} {'MiB out':>8} {'queries':>8} {'peak RSS MiB':>13}"
        )
        for name, options in (("status=error", ["--status", "error"]), ("everything", [])):
            traces, seconds, size, queries, peak = export(options)
            rate = traces / seconds if seconds else 0.0
            verdict = self.verdict(rate >= EXPORT_RATE)
            print(
                f"{name:28} {traces:9d} {seconds:8.1f} {rate:9.0f} {size / 2**20:8.1f} {queries:8d} {peak:13.1f}"
                f"  target {EXPORT_RATE}/s {verdict}",
                flush=True,
            )


def history_pages(user) -> list[Page]:
    """The pages a viewer (None: anonymous) is timed on, with the traces they may see."""
    import datetime as dt

    from django.utils import timezone
    from history_fill import BIG_SESSION, reference

    from traces.models import Trace
    from traces.pages.pagination import encode
    from traces.pages.views import PAGE_SIZE

    visible = Trace.objects.visible_to(user) if user is not None else Trace.objects.all()
    newest = visible.order_by("-started_at", "-id")
    count = Trace.objects.count()
    seen = visible.count()
    deep = newest[max(0, min(49_950, seen - 1))]
    far = min(1000, max(1, seen // PAGE_SIZE))  # the last page, in a small history
    sample = newest.first()
    assert sample is not None, "no trace to show"
    month_ago = timezone.localdate() - dt.timedelta(days=30)
    # The big shared session; in a tiny history the viewer may have no trace in it.
    session = BIG_SESSION if visible.for_session(BIG_SESSION).exists() else sample.session_id
    return [
        Page("history, first page", "/traces/", PAGE_MS),
        Page("history, 1000 pages deep (keyset after)", f"/traces/?after={quote(encode(deep))}", PAGE_MS),
        Page(f"history, ?page={far} (offset)", f"/traces/?page={far}", PAGE_MS),
        Page("filter, status=error", "/traces/?status=error", PAGE_MS),
        Page("filter, slower than 5000 ms", "/traces/?min_ms=5000", PAGE_MS),
        Page("filter, agent=support_agent", "/traces/?agent=support_agent", PAGE_MS),
        Page(
            "filter, a week a month ago",
            f"/traces/?since={month_ago}&until={month_ago + dt.timedelta(days=6)}",
            PAGE_MS,
        ),
        Page("search, English", "/traces/?q=orders+per+country", SEARCH_MS),
        Page("search, Chinese", f"/traces/?q={quote('用户数据')}", SEARCH_MS),
        Page("search, one character", f"/traces/?q={quote('用')}", SEARCH_MS),
        Page("search, one trace's own part", f"/traces/?q={quote(reference(count // 2))}", SEARCH_MS),
        Page("search, a term nothing has", "/traces/?q=zqxjvk", SEARCH_MS),
        Page(f"session view, {session!r}", f"/sessions/{quote(session)}/", PAGE_MS),
        Page("trace detail", f"/traces/{sample.pk}/", PAGE_MS),
        *(
            Page(f"dashboard, {span}", f"/dashboard/?range={span}", DASHBOARD_MS)
            for span in ("24h", "7d", "30d", "90d")
        ),
    ]


def timed(client, url: str, repeat: int) -> tuple[float, int]:
    from django.db import connection, reset_queries

    times, queries = [], 0
    for _ in range(repeat):
        reset_queries()
        started = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (url, response.status_code)
        queries = len(connection.queries)
        if times[-1] > TIMED_ONCE_MS:
            break
    return statistics.median(times), queries


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
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "export.jsonl"
        env = {
            **os.environ,
            "DJANGO_DEBUG": "0",
            "DJANGO_SECRET_KEY": "bench-" + "x" * 50,
            "DJANGO_ALLOWED_HOSTS": "localhost",
        }
        result = subprocess.run(
            [sys.executable, "-c", EXPORT, *options, "-o", str(out)],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
            env=env,
        )
        seconds, queries, peak = result.stdout.split()
        with open(out, "rb") as written:
            traces = sum(1 for _ in written)
        size = out.stat().st_size
        return traces, float(seconds), size, int(queries), float(peak)


if __name__ == "__main__":
    main()
