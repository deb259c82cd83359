"""Fuzz the SQL guard and the client-message validator for a fixed time.

    python bench/fuzz.py guard --minutes 10
    python bench/fuzz.py validator --minutes 10

Runs hypothesis rounds with fresh random seeds until the time is up. Properties:

guard      ``agents.guard.check`` returns or raises ``SqlRejected``, nothing else; a statement it
           accepts for SQLite, run on a writable copy of the demo database, changes no row, no
           schema and attaches nothing (an oracle independent of the guard's own parse); for
           MySQL, what it returns parses back to one SELECT/SHOW/DESCRIBE.
validator  ``traces.protocol.parse_client_message`` returns a known action or raises
           ``ProtocolError``, nothing else, and the answer the consumer would send (the error,
           or the pong echoing ``client_time``) serialises.

A failure's shrunk input is appended to ``tests/fuzz_regressions.jsonl``, which
``tests/test_fuzz_regressions.py`` replays on every test run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import sys
import time
from pathlib import Path

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tracesite.settings")
REGRESSIONS = ROOT / "tests" / "fuzz_regressions.jsonl"

WORDS = [
    "SELECT",
    "*",
    "FROM",
    "users",
    "orders",
    "products",
    "order_items",
    "WHERE",
    "id",
    "=",
    "1",
    ";",
    "DELETE",
    "UPDATE",
    "SET",
    "name",
    "'x'",
    "INSERT",
    "INTO",
    "VALUES",
    "(1)",
    "DROP",
    "TABLE",
    "CREATE",
    "ALTER",
    "UNION",
    "ALL",
    "LIMIT",
    "10",
    "/*",
    "*/",
    "--",
    "#",
    "\n",
    "/*!",
    "/*M!",
    "@a",
    "@@version",
    ":=",
    "FOR UPDATE",
    "LOCK IN SHARE MODE",
    "OUTFILE",
    "DUMPFILE",
    "'/tmp/x'",
    "WITH",
    "RECURSIVE",
    "t",
    "AS",
    "(SELECT 1)",
    "TRUNCATE",
    "REPLACE",
    "GRANT",
    "REVOKE",
    "COMMIT",
    "BEGIN",
    "ROLLBACK",
    "SAVEPOINT",
    ",",
    "COUNT(*)",
    "JOIN",
    "ON",
    "mysql.user",
    "information_schema.tables",
    "sqlite_master",
    "PRAGMA",
    "ATTACH",
    "DETACH",
    "DATABASE",
    "'x.db'",
    "VACUUM",
    "RETURNING",
    "ORDER BY",
    "age",
    "GROUP BY",
    "country",
    "HAVING",
    "INTO",
    "@v",
    "HANDLER",
    "CALL",
    "DO",
    "LOAD",
    "DATA",
    "INFILE",
    "SHOW",
    "TABLES",
    "DESCRIBE",
    "EXPLAIN",
    "ANALYZE",
    "QUERY PLAN",
    "PROCESSLIST",
    "KILL",
    "SET GLOBAL",
    "PREPARE",
    "EXECUTE",
    "USE",
    "FLUSH",
    "RENAME",
    "CAST(",
    ")",
    "(",
    "CASE WHEN",
    "THEN",
    "ELSE",
    "END",
    "`users`",
    '"users"',
    "[users]",
    "\\g",
    "0x41",
    "X'41'",
    "NULL",
    "?",
    ":name",
    "$1",
    "/**/",
    "ROW_NUMBER() OVER ()",
    "JSON_EXTRACT(",
    "randomblob(1000000000)",
]
FUNCTIONS = [
    "sleep",
    "benchmark",
    "load_file",
    "get_lock",
    "load_extension",
    "readfile",
    "writefile",
    "sys_exec",
    "count",
    "sum",
    "upper",
    "length",
    "substr",
    "coalesce",
    "random",
    "zeroblob",
    "char",
    "hex",
]
SQL = st.one_of(
    st.lists(st.sampled_from(WORDS), min_size=1, max_size=16).map(" ".join),
    st.builds(
        lambda f, inner: f"SELECT {f}({inner}) FROM users",
        st.sampled_from(FUNCTIONS),
        st.sampled_from(["1", "name", "'a'", "*", ""]),
    ),
    st.lists(st.one_of(st.sampled_from(WORDS), st.text(max_size=8)), min_size=1, max_size=10).map(" ".join),
    st.text(max_size=200),
)

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=60),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=16,
)
FIELDS = ["action", "trace_id", "after_seq", "speed", "client_time", "question", "model", "max_steps", "rerun_of"]
ACTIONS = [
    "start_agent",
    "cancel_agent",
    "subscribe_trace",
    "unsubscribe_trace",
    "subscribe_all",
    "replay_trace",
    "ping",
    "",
    "START_AGENT",
    "ping ",
    "__class__",
    "action_ping",
]
SPECIAL = st.sampled_from(
    [
        0,
        -1,
        1.5,
        1e308,
        -0.0,
        2**63,
        "1",
        "00000000-0000-0000-0000-000000000000",
        "not-a-uuid",
        "x" * 5000,
        True,
        None,
        [],
        {},
    ]
)
MESSAGES = st.builds(
    lambda action, extra: {"action": action, **extra},
    st.sampled_from(ACTIONS) | st.text(max_size=20),
    st.dictionaries(st.sampled_from(FIELDS[1:]), JSON | SPECIAL, max_size=5),
)
FRAMES = st.one_of(
    MESSAGES.map(lambda m: ("text", json.dumps(m))),
    JSON.map(lambda m: ("text", json.dumps(m))),
    st.text(max_size=300).map(lambda t: ("text", t)),
    st.binary(max_size=300).map(lambda b: ("bytes", b)),
    MESSAGES.map(lambda m: ("bytes", json.dumps(m).encode())),
)


# ---------------------------------------------------------------------------------- properties


def demo_copy() -> sqlite3.Connection:
    from agents import demo

    conn = sqlite3.connect(":memory:")
    demo.create(conn.cursor(), "sqlite", "?")
    conn.commit()
    return conn


def check_guard(sql: str, vendor: str, conn: sqlite3.Connection | None) -> None:
    import sqlglot
    from sqlglot import exp

    from agents.guard import SqlRejected, check

    try:
        checked = check(sql, vendor, row_limit=50)
    except SqlRejected:
        return
    statements = [s for s in sqlglot.parse(checked.sql, read=vendor) if s is not None]
    assert len(statements) == 1 or checked.kind == "describe", (
        f"accepted {sql!r} as {checked.sql!r}, which does not parse back"
    )
    if vendor == "mysql":
        statements = [s for s in sqlglot.parse(checked.sql, read="mysql") if s is not None]
        assert len(statements) == 1, f"accepted {sql!r} as {checked.sql!r}: {len(statements)} statements"
        assert isinstance(
            statements[0], (exp.Select, exp.Union, exp.Intersect, exp.Except, exp.Show, exp.Describe, exp.Command)
        ), f"accepted {sql!r} as {type(statements[0]).__name__}"
        return
    before = (
        conn.total_changes,
        conn.execute("SELECT COUNT(*), group_concat(sql) FROM sqlite_master").fetchone(),
        len(conn.execute("PRAGMA database_list").fetchall()),
    )
    deadline = time.monotonic() + 0.5
    conn.set_progress_handler(lambda: time.monotonic() > deadline, 10_000)
    try:
        conn.execute(checked.sql).fetchmany(50)
    except sqlite3.Error:
        pass  # failed in the database: fine, as long as it wrote nothing
    finally:
        conn.set_progress_handler(None, 0)
        if conn.in_transaction:
            conn.rollback()
    after = (
        conn.total_changes,
        conn.execute("SELECT COUNT(*), group_concat(sql) FROM sqlite_master").fetchone(),
        len(conn.execute("PRAGMA database_list").fetchall()),
    )
    assert after == before, f"accepted {sql!r} (ran {checked.sql!r}) and it changed the database"


def check_validator(kind: str, frame) -> None:
    from traces import protocol
    from traces.protocol import Action, ProtocolError, ServerEvent

    text, data = (frame, None) if kind == "text" else (None, frame)
    try:
        message = protocol.parse_client_message(text, data)
    except ProtocolError as exc:
        protocol.dumps(
            protocol.envelope(ServerEvent.ERROR, {"error": str(exc.error), "detail": exc.detail}, session_id="s")
        )
        return
    assert isinstance(message.action, Action)
    if message.action == Action.PING:
        protocol.dumps(
            protocol.envelope(ServerEvent.PONG, {"client_time": message.fields["client_time"]}, session_id="s")
        )
    if message.action == Action.REPLAY_TRACE:
        assert 0 <= message.fields["speed"] <= protocol.MAX_REPLAY_SPEED
    if message.action == Action.SUBSCRIBE_TRACE:
        assert isinstance(message.fields["after_seq"], int) and message.fields["after_seq"] >= 0
    if message.action == Action.START_AGENT:
        assert 0 < len(message.fields["question"]) <= protocol.MAX_QUESTION_CHARS


# ---------------------------------------------------------------------------------- driver


def fuzz(target: str, minutes: float, examples_per_round: int) -> int:
    import django

    django.setup()
    conn = demo_copy() if target == "guard" else None
    counter = {"examples": 0}
    last: dict = {}

    def make_prop():
        """A fresh hypothesis test per round (settings and seed decorate in place)."""
        if target == "guard":

            @given(SQL, st.sampled_from(["sqlite", "mysql"]))
            def prop(sql, vendor):
                counter["examples"] += 1
                try:
                    check_guard(sql, vendor, conn)
                except BaseException as exc:
                    last.update(input=[sql, vendor], error=repr(exc)[:500])
                    raise
        else:

            @given(FRAMES)
            def prop(frame):
                kind, value = frame
                counter["examples"] += 1
                try:
                    check_validator(kind, value)
                except BaseException as exc:
                    last.update(
                        input=[kind, value.decode("latin-1") if isinstance(value, bytes) else value],
                        error=repr(exc)[:500],
                    )
                    raise

        return prop

    deadline = time.time() + minutes * 60
    failures = 0
    rounds = 0
    while time.time() < deadline:
        rounds += 1
        run = settings(
            max_examples=examples_per_round,
            database=None,
            deadline=None,
            derandomize=False,
            suppress_health_check=list(HealthCheck),
            print_blob=False,
        )(seed(random.getrandbits(64))(make_prop()))
        try:
            run()
        except Exception as exc:
            failures += 1
            record = {"target": target, **last}
            print(f"FAILURE: {json.dumps(record, ensure_ascii=False)[:800]}\n  {type(exc).__name__}", flush=True)
            line = json.dumps({"target": target, "input": last.get("input")}, ensure_ascii=False)
            known = REGRESSIONS.read_text().splitlines() if REGRESSIONS.exists() else []
            if line not in known:
                with REGRESSIONS.open("a") as out:
                    out.write(line + "\n")
    print(f"{target}: {minutes:g} min, {rounds} rounds, {counter['examples']:,} examples, {failures} failure(s)")
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", choices=["guard", "validator"])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--examples-per-round", type=int, default=2000)
    args = parser.parse_args()
    sys.exit(1 if fuzz(args.target, args.minutes, args.examples_per_round) else 0)


if __name__ == "__main__":
    main()
