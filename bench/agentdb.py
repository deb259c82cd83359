"""The agent on a production-size database: schema tools and simple questions over a table of millions.

    python bench/agentdb.py --backend sqlite --rows 6000000
    python bench/agentdb.py --backend mysql --rows 6000000       # BENCH_MYSQL_URL, default root@127.0.0.1

It builds the agent's database once (the demo shop plus ``page_views`` with --rows rows, filled by
one INSERT ... SELECT from a generated sequence, then analysed) and keeps it for the next run
(--rebuild to start again). Then it prints:

1. the schema tool in one process: the first call (cold cache: one introspection) and the median
   and p95 of the next --repeat calls, for the table list and for describing ``page_views``,
   beside what one exact ``COUNT(*)`` of that table costs (what every schema call used to run);
2. ``manage.py runagent`` with the built-in model, one process per question: its wall time and
   the durations of the trace's tool runs as stored, for schema questions and simple queries.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tracesite.settings")

QUESTIONS = [
    "what tables are there?",
    "describe the page_views table",
    "show 5 page views",
    "how many users are there?",
    "how many page views are there?",
    "average duration_ms of page views",
    "top 3 page views by duration_ms",
]

# page_views: id, user_id (1..300), url (one of 50), country (one of 10), duration_ms, viewed_at (2 years).
SQLITE_FILL = """
WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < {rows})
INSERT INTO page_views SELECT n, 1 + (n * 7919) % 300, '/page/' || ((n * 31) % 50),
  CASE (n * 13) % 10 WHEN 0 THEN 'China' WHEN 1 THEN 'Germany' WHEN 2 THEN 'Japan' WHEN 3 THEN 'Brazil'
  WHEN 4 THEN 'India' WHEN 5 THEN 'France' WHEN 6 THEN 'Canada' WHEN 7 THEN 'Australia'
  WHEN 8 THEN 'United Kingdom' ELSE 'United States' END,
  (n * 104729) % 60000, datetime('2024-01-01', '+' || (n % 63072000) || ' seconds')
FROM seq
"""
MYSQL_FILL = """
INSERT INTO page_views SELECT seq, 1 + (seq * 7919) % 300, CONCAT('/page/', (seq * 31) % 50),
  ELT(1 + (seq * 13) % 10, 'China', 'Germany', 'Japan', 'Brazil', 'India', 'France', 'Canada', 'Australia',
      'United Kingdom', 'United States'),
  (seq * 104729) % 60000, TIMESTAMP('2024-01-01') + INTERVAL (seq % 63072000) SECOND
FROM seq_1_to_{rows}
"""
CREATE = (
    "CREATE TABLE page_views (id {pk}, user_id INT NOT NULL, url VARCHAR(200) NOT NULL, "
    "country VARCHAR(60) NOT NULL, duration_ms INT NOT NULL, viewed_at DATETIME NOT NULL)"
)


def build_sqlite(path: Path, rows: int, rebuild: bool) -> None:
    from agents import demo

    if path.exists() and not rebuild:
        with sqlite3.connect(path) as conn:
            if conn.execute("SELECT COUNT(*) FROM page_views").fetchone()[0] == rows:
                return
    path.unlink(missing_ok=True)
    started = time.perf_counter()
    conn = sqlite3.connect(path)
    with conn:
        demo.create(conn.cursor(), "sqlite", "?")
        conn.execute(CREATE.format(pk="INTEGER PRIMARY KEY"))
        conn.execute(SQLITE_FILL.format(rows=rows))
        conn.execute("ANALYZE")
    conn.close()
    print(f"built {path} with {rows:,} page views in {time.perf_counter() - started:.0f} s")


def mysql_connect(url: str, database: str | None = None):
    import MySQLdb

    parts = urlsplit(url)
    args = {"host": parts.hostname or "127.0.0.1", "port": parts.port or 3306, "user": parts.username or "root"}
    args.update(passwd=parts.password or "", charset="utf8mb4", autocommit=True)
    return MySQLdb.connect(**args, **({"db": database} if database else {}))


def build_mysql(url: str, name: str, rows: int, rebuild: bool) -> None:
    from agents import demo

    admin = mysql_connect(url)
    cursor = admin.cursor()
    cursor.execute(
        "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = 'page_views'", [name]
    )
    if cursor.fetchone()[0] and not rebuild:
        cursor.execute(f"SELECT COUNT(*) FROM `{name}`.page_views")
        if cursor.fetchone()[0] == rows:
            return
    started = time.perf_counter()
    cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
    cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    conn = mysql_connect(url, name)
    cursor = conn.cursor()
    demo.create(cursor, "mysql", "%s")
    cursor.execute(CREATE.format(pk="INT PRIMARY KEY"))
    cursor.execute(MYSQL_FILL.format(rows=rows))  # MariaDB's sequence engine: no client round trips
    cursor.execute("ANALYZE TABLE page_views")
    cursor.fetchall()
    conn.close()
    admin.close()
    print(f"built {name} with {rows:,} page views in {time.perf_counter() - started:.0f} s")


def time_schema_tool(database_settings: dict, repeat: int) -> list[str]:
    import django

    django.setup()
    from agents.database import open_database
    from agents.tools import SchemaTool

    database = open_database(database_settings)
    tool = SchemaTool(database)
    lines = []
    for label, arguments in (("table list", {}), ("describe page_views", {"table": "page_views"})):
        started = time.perf_counter()
        asyncio.run(tool.run(arguments))
        first = (time.perf_counter() - started) * 1000
        timings = []
        for _ in range(repeat):
            started = time.perf_counter()
            asyncio.run(tool.run(arguments))
            timings.append((time.perf_counter() - started) * 1000)
        timings.sort()
        p95 = timings[min(len(timings) - 1, int(len(timings) * 0.95))]
        lines.append(f"| {label} | {first:.1f} | {statistics.median(timings):.2f} | {p95:.2f} |")
    started = time.perf_counter()
    count = asyncio.run(database.run("SELECT COUNT(*) FROM page_views")).rows[0][0]
    lines.append(
        f"| exact COUNT(*) of page_views ({count:,} rows), for comparison | {(time.perf_counter() - started) * 1000:.0f} | | |"
    )
    database.close()
    return lines


def time_runagent(env: dict[str, str]) -> list[str]:
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, check=True, capture_output=True
    )
    lines = []
    for question in QUESTIONS:
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "manage.py", "runagent", question, "--json", "--session", "bench"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        wall = (time.perf_counter() - started) * 1000
        if result.returncode != 0:
            lines.append(f"| {question} | failed: {result.stderr.strip()[-200:]} | | | |")
            continue
        import json

        events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
        tools = [
            e["data"]
            for e in events
            if e["event_type"] in ("tool_completed", "run_error") and e["data"].get("run_type") == "tool"
        ]
        schema = [t["duration_ms"] for t in tools if t["name"] == "describe_schema"]
        query = [t["duration_ms"] for t in tools if t["name"] == "run_sql"]
        done = next(e["data"] for e in events if e["event_type"] == "trace_completed")
        lines.append(
            f"| {question} | {wall:.0f} | {done['duration_ms']} | {', '.join(map(str, schema)) or '-'} | "
            f"{', '.join(map(str, query)) or '-'} | {done['status']} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["sqlite", "mysql"], default="sqlite")
    parser.add_argument("--rows", type=int, default=6_000_000)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--rebuild", action="store_true", help="build the database again even if it is there")
    parser.add_argument("--data-dir", default=str(Path(tempfile.gettempdir()) / "tracesite-bench-agentdb"))
    args = parser.parse_args()

    data_dir = Path(args.data_dir) / args.backend
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MYSQL_", "DATABASE_URL", "REDIS_URL", "OPENAI_"))}
    env.update(TRACESITE_DATA_DIR=str(data_dir), TRACESITE_ENV_FILE="", LOG_LEVEL="WARNING")
    if args.backend == "sqlite":
        build_sqlite(data_dir / "demo.sqlite3", args.rows, args.rebuild)
        from tracesite import env as settings_env

        database_settings = settings_env.sqlite_database(data_dir / "demo.sqlite3")
    else:
        url = os.environ.get("BENCH_MYSQL_URL", "mysql://root@127.0.0.1:3306/")
        name = "tracesite_bench_agent"
        build_mysql(url, name, args.rows, args.rebuild)
        parts = urlsplit(url)
        env.update(
            MYSQL_HOST=parts.hostname or "127.0.0.1",
            MYSQL_PORT=str(parts.port or 3306),
            MYSQL_USER=parts.username or "root",
            MYSQL_PASSWORD=parts.password or "",
            MYSQL_DATABASE=name,
        )
        from tracesite import env as settings_env

        database_settings = settings_env.mysql_database(
            name, env["MYSQL_USER"], env["MYSQL_PASSWORD"], env["MYSQL_HOST"], int(env["MYSQL_PORT"])
        )

    print(
        f"\n{args.backend}, page_views with {args.rows:,} rows: the schema tool in one process ({args.repeat} calls after the first)\n"
    )
    print("| call | first (ms) | then median (ms) | p95 (ms) |")
    print("|---|---:|---:|---:|")
    for line in time_schema_tool(database_settings, args.repeat):
        print(line)
    print(f"\n{args.backend}: manage.py runagent, built-in model, one process per question\n")
    print("| question | wall (ms) | trace (ms) | describe_schema runs (ms) | run_sql runs (ms) | status |")
    print("|---|---:|---:|---:|---:|---|")
    for line in time_runagent(env):
        print(line)


if __name__ == "__main__":
    main()
