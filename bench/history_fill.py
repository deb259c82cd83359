"""A history of realistic traces written straight into the tables, for bench/history.py.

Each trace is what the built-in SQL agent leaves after one step: a step run with a think run and
a ``run_sql`` tool run under it, and 10 events. Tokens, cost, durations, outcomes, owners, models,
agents and sessions are spread the way a shared deployment's are (one big ``cli`` session), the
questions are English or Chinese with a part of their own, and the traces started over the last
90 days. The same seed gives the same history.

The rows bypass the ORM and the trace writer: SQLite through ``executemany`` in large transactions
with the journal, syncs and foreign key checks off, MariaDB through ``LOAD DATA LOCAL INFILE`` (multi-row INSERTs when
the server refuses local files) with unique and foreign key checks off. Trace and run ids are sorted
before they are handed out, so every primary key and ``(trace, seq)`` index is appended to rather
than written at random pages: what takes a writer 15 minutes through the ORM takes a few here.
Columns the generator does not know (added by later migrations) get their field's default.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from django.db import connection
from django.db.models import Model

from agents.events import EventType, RunStatus, RunType
from traces.models import Event, Run, Trace

USERS = 5  # owners bench_user1..5; one trace in six has no owner
BIG_SESSION = "cli"  # the session a fifth of the traces share
AGENTS = ["sql_agent"] * 8 + ["sales_agent", "support_agent"]
MODELS = ["gpt-4o-mini", "gpt-4o-mini", "gpt-4o", "claude-3-5-sonnet", "deepseek-chat", "builtin"]
PRICES = {  # USD per 1,000 prompt / completion tokens
    "gpt-4o-mini": (0.00015, 0.0006),
    "gpt-4o": (0.0025, 0.01),
    "claude-3-5-sonnet": (0.003, 0.015),
    "deepseek-chat": (0.00027, 0.0011),
    "builtin": (0.0, 0.0),
}
QUESTIONS = [
    "how many orders per country last week?",
    "top 10 products by price",
    "latest orders of our best customer",
    "average basket size by region",
    "显示用户表的前 10 条用户数据",
    "用户的平均年龄是多少？",
    "每个城市的订单数量",
]
SQL = [
    "SELECT country, COUNT(*) FROM orders GROUP BY country",
    "SELECT name, price FROM products ORDER BY price DESC LIMIT 10",
    "SELECT * FROM orders WHERE customer_id = ? ORDER BY created_at DESC LIMIT 20",
    "SELECT AVG(age) FROM users",
]
ERRORS = [
    ("OperationalError", "no such column: user_age"),
    ("TimeoutError", "the query ran longer than 30 s"),
    ("RateLimitError", "429 Too Many Requests from the model provider"),
]
DAYS = 90
EVENTS_PER_TRACE = 10


@dataclass
class Rows:
    """One chunk of the history: rows in the generator's column order (``TRACE_COLUMNS``...)."""

    traces: list[tuple]
    runs: list[tuple]
    events: list[tuple]


TRACE_COLUMNS = [
    "id", "name", "session_id", "agent_name", "request", "final_response", "status", "max_steps",
    "current_step", "model", "source", "owner_id", "rerun_of_id", "started_at", "ended_at", "duration_ms",
    "prompt_tokens", "completion_tokens", "total_tokens", "total_cost", "total_runs", "last_seq", "error",
    "error_type", "metadata", "runner", "feedback", "feedback_comment",
]  # fmt: skip
RUN_COLUMNS = [
    "id", "trace_id", "parent_id", "name", "run_type", "status", "start_time", "end_time", "duration_ms",
    "inputs", "outputs", "error", "error_type", "metadata", "prompt_tokens", "completion_tokens",
    "total_tokens", "cost",
]  # fmt: skip
EVENT_COLUMNS = ["trace_id", "seq", "event_type", "timestamp", "message_id", "run_id", "envelope"]


def reference(n: int) -> str:
    """The part of the ``n``-th trace's question no other question has."""
    return f"#{n:07d}"


def sorted_ids(count: int, rng: random.Random, order: Callable[[uuid.UUID], Any]) -> list[uuid.UUID]:
    return sorted((uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(count)), key=order)


def iso(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="milliseconds") + "Z"


class Generator:
    """The rows of traces ``start``..``stop``."""

    def __init__(self, count: int, owners: Sequence[int], seed: int, uuids: UuidColumn):
        rng = random.Random(seed)
        self.count = count
        self.owners = [*owners, None]
        self.trace_ids = sorted_ids(count, rng, uuids.order)
        self.run_ids = sorted_ids(count * 3, rng, uuids.order)
        self.uuid_text = uuids.text
        self.now = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
        self.seed = seed

    def rows(self, start: int, stop: int) -> Rows:
        rng = random.Random(self.seed * 1_000_003 + start)
        rows = Rows([], [], [])
        for n in range(start, stop):
            self._trace(n, rng, rows)
        return rows

    def _trace(self, n: int, rng: random.Random, rows: Rows) -> None:
        text = self.uuid_text
        trace_id = self.trace_ids[n]
        step_id, think_id, tool_id = self.run_ids[3 * n : 3 * n + 3]
        tid, sid, kid, lid = text(trace_id), text(step_id), text(think_id), text(tool_id)
        # Whole milliseconds, as the events carry them and the store writes them.
        started = self.now - dt.timedelta(milliseconds=rng.randrange(DAYS * 86_400_000))
        agent = rng.choice(AGENTS)
        model = rng.choice(MODELS)
        owner = rng.choice(self.owners)
        session = BIG_SESSION if rng.random() < 0.2 else f"s{rng.randrange(20_000)}"
        request = f"{rng.choice(QUESTIONS)} {reference(n)}"  # a part of its own, for a search
        sql = rng.choice(SQL)
        outcome = rng.random()
        status = RunStatus.SUCCESS if outcome < 0.86 else RunStatus.ERROR if outcome < 0.96 else RunStatus.CANCELLED
        error_type, error = rng.choice(ERRORS) if status == RunStatus.ERROR else ("", "")
        think_ms = int(rng.lognormvariate(6.8, 0.7))  # about 900 ms, a long tail
        tool_ms = int(rng.lognormvariate(3.5, 1.2))  # about 30 ms, some seconds
        duration = think_ms + tool_ms + rng.randrange(5, 60)
        prompt, completion = rng.randrange(400, 4000), rng.randrange(30, 900)
        per_prompt, per_completion = PRICES[model]
        cost = round(prompt / 1000 * per_prompt + completion / 1000 * per_completion, 8)
        rows_found = rng.randrange(0, 200)
        answer = (
            f"Found {rows_found} rows for #{n}." if rng.random() < 0.6 else f"共找到 {rows_found} 行（#{n}）。"
        ) if status == RunStatus.SUCCESS else ""  # fmt: skip

        think_start = started + dt.timedelta(milliseconds=3)
        think_end = think_start + dt.timedelta(milliseconds=think_ms)
        tool_start = think_end + dt.timedelta(milliseconds=1)
        tool_end = tool_start + dt.timedelta(milliseconds=tool_ms)
        ended = started + dt.timedelta(milliseconds=duration)
        tool_status = status  # the tool call is what failed, or was cancelled
        metadata = {"model": model, "tools": ["run_sql"]}
        think_in = {"messages": [{"role": "user", "content": request}], "model": model}
        think_out = {"content": f"I will query the database.\n```sql\n{sql}\n```", "tool_calls": ["run_sql"]}
        tool_in = {"sql": sql}
        tool_out = {"columns": ["name", "value"], "rows": [["a", rows_found]], "row_count": rows_found}
        usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

        # Each id and moment is written several times: formatted once.
        trace_hex, trace_dashed = trace_id.hex, str(trace_id)
        step, think, tool = str(step_id), str(think_id), str(tool_id)
        stored = {step: sid, think: kid, tool: lid}
        moments = (started, think_start, think_end, tool_start, tool_end, ended)
        stamps = {moment: iso(moment) for moment in moments}
        column = {moment: moment.isoformat(" ", "microseconds") for moment in moments}

        def run(run_id, parent, name, kind, state, begin, end, inputs, outputs, **extra) -> dict[str, Any]:
            return {
                "run_id": run_id,
                "trace_id": trace_dashed,
                "parent_run_id": parent,
                "name": name,
                "run_type": kind,
                "status": state,
                "start_time": stamps[begin],
                "end_time": stamps[end] if end else None,
                "duration_ms": (end - begin) // dt.timedelta(milliseconds=1) if end else None,
                "inputs": inputs,
                "outputs": outputs,
                "error": error or None if state == RunStatus.ERROR else None,
                "error_type": error_type or None if state == RunStatus.ERROR else None,
                "metadata": {},
                **extra,
            }

        tool_event = EventType.RUN_ERROR if tool_status == RunStatus.ERROR else EventType.TOOL_COMPLETED
        timeline: list[tuple[EventType, dt.datetime, str | None, dict[str, Any]]] = [
            (EventType.TRACE_STARTED, started, None, {
                "trace_id": trace_dashed, "trace_name": f"{agent}_execution", "request": request,
                "agent_name": agent, "max_steps": 10, "metadata": metadata,
            }),
            (EventType.STEP_STARTED, started, step,
                run(step, None, "step_1", RunType.AGENT, RunStatus.RUNNING, started, None, {"step": 1}, {})),
            (EventType.THINK_STARTED, think_start, think,
                run(think, step, "think", RunType.THINK, RunStatus.RUNNING, think_start, None, think_in, {})),
            (EventType.THINK_COMPLETED, think_end, think,
                run(think, step, "think", RunType.THINK, RunStatus.SUCCESS, think_start, think_end, think_in,
                    think_out, token_usage=usage, model=model, cost=cost)),
            (EventType.STATUS_UPDATE, think_end, None, {
                "current_step": 1, "max_steps": 10, "agent_state": "RUNNING", "message": "Running run_sql",
                "progress_percentage": 50,
            }),
            (EventType.TOOL_STARTED, tool_start, tool,
                run(tool, step, "run_sql", RunType.TOOL, RunStatus.RUNNING, tool_start, None, tool_in, {})),
            (tool_event, tool_end, tool,
                run(tool, step, "run_sql", RunType.TOOL, tool_status, tool_start, tool_end, tool_in,
                    tool_out if tool_status == RunStatus.SUCCESS else {})),
            (EventType.RUN_COMPLETED, ended, step,
                run(step, None, "step_1", RunType.AGENT, status, started, ended, {"step": 1}, {})),
            (EventType.PROGRESS_UPDATE, ended, None, {
                "current_step": 1, "total_steps": 1, "step_name": "answer", "step_description": "Answered",
                "percentage": 100,
            }),
            (EventType.TRACE_COMPLETED, ended, None, {
                "trace_id": trace_dashed, "duration_ms": duration, "total_runs": 3, "status": status,
                "total_cost": cost, "total_tokens": prompt + completion, "final_response": answer,
                "stopped_by": {"success": "answer", "error": "error", "cancelled": "cancelled"}[status],
                "error": error or None, "error_type": error_type or None,
            }),
        ]  # fmt: skip
        for seq, (event_type, moment, run_id, data) in enumerate(timeline, start=1):
            message_id = f"{event_type}_{trace_hex}_{seq}"
            envelope = {
                "event_type": str(event_type),
                "timestamp": stamps[moment],
                "message_id": message_id,
                "session_id": session,
                "data": data,
                "trace_id": trace_dashed,
                "seq": seq,
                "replay": False,
            }
            rows.events.append(
                (tid, seq, str(event_type), column[moment], message_id,
                 stored[run_id] if run_id else None, orjson.dumps(envelope).decode())
            )  # fmt: skip

        def dumps(value: dict) -> str:
            return orjson.dumps(value).decode()

        rows.runs += [
            (sid, tid, None, "step_1", RunType.AGENT.value, status.value, column[started],
             column[ended], duration, '{"step": 1}', "{}", error, error_type, "{}", 0, 0, 0, "0"),
            (kid, tid, sid, "think", RunType.THINK.value, RunStatus.SUCCESS.value,
             column[think_start], column[think_end], think_ms,
             dumps(think_in), dumps(think_out), "", "", "{}", prompt, completion, prompt + completion, f"{cost:.8f}"),
            (lid, tid, sid, "run_sql", RunType.TOOL.value, tool_status.value,
             column[tool_start], column[tool_end], tool_ms,
             dumps(tool_in), dumps(tool_out if tool_status == RunStatus.SUCCESS else {}),
             error if tool_status == RunStatus.ERROR else "", error_type if tool_status == RunStatus.ERROR else "",
             "{}", 0, 0, 0, "0"),
        ]  # fmt: skip
        rows.traces.append(
            (tid, f"{agent}_execution", session, agent, request, answer, status.value, 10, 1, model,
             "cli" if session == BIG_SESSION else "websocket", owner, None, column[started],
             column[ended], duration, prompt, completion, prompt + completion, f"{cost:.8f}",
             3, EVENTS_PER_TRACE, error, error_type, dumps(metadata), "", None, "")
        )  # fmt: skip


@dataclass
class Table:
    """Where one generated row goes: the table, its columns, and the defaults of the columns the
    generator does not know (appended to each row)."""

    name: str
    columns: list[str]
    extra: tuple

    @classmethod
    def of(cls, model: type[Model], known: list[str]) -> Table:
        fields = {field.column: field for field in model._meta.concrete_fields}
        missing = [name for name in known if name not in fields and name != "id"]
        if missing:
            raise SystemExit(f"{model._meta.db_table} has no column {missing}: update bench/history_fill.py")
        extra = [field for column, field in fields.items() if column not in known and not field.primary_key]
        defaults = tuple(field.get_db_prep_save(field.get_default(), connection) for field in extra)
        return cls(model._meta.db_table, [*known, *(field.column for field in extra)], defaults)


class Loader:
    """Writes chunks of rows in bulk; a context manager that sets the database up for it and back."""

    def __enter__(self) -> Loader:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def write(self, table: Table, rows: list[tuple]) -> None:
        raise NotImplementedError

    def commit(self) -> None:
        raise NotImplementedError


class SqliteLoader(Loader):
    """Django's own connection, with the journal, syncs and foreign key checks off and a large cache
    for the fill only (each set back after): a crash mid-fill leaves a database to throw away, which
    is what a bench fill may do."""

    PRAGMAS = {
        "journal_mode": "OFF",
        "synchronous": "OFF",
        "foreign_keys": "OFF",
        "cache_size": "-1048576",
        "temp_store": "MEMORY",
    }

    def __init__(self, db: sqlite3.Connection):
        self.db = db
        self.before = {name: db.execute(f"PRAGMA {name}").fetchone()[0] for name in self.PRAGMAS}

    def __enter__(self) -> SqliteLoader:
        for name, value in self.PRAGMAS.items():
            try:
                self.db.execute(f"PRAGMA {name}={value}")
            except sqlite3.OperationalError:
                # Leaving WAL needs the database to itself: with another connection open (a server
                # process, the test suite's), the journal stays as it is and the fill is slower.
                if name != "journal_mode":
                    raise
        self.db.execute("BEGIN")
        return self

    def write(self, table: Table, rows: list[tuple]) -> None:
        marks = ", ".join("?" * len(table.columns))
        sql = f"INSERT INTO {table.name} ({', '.join(table.columns)}) VALUES ({marks})"
        self.db.executemany(sql, [row + table.extra for row in rows] if table.extra else rows)

    def commit(self) -> None:
        self.db.execute("COMMIT")
        self.db.execute("BEGIN")

    def __exit__(self, *exc: object) -> None:
        self.db.execute("COMMIT")
        for name, value in self.before.items():
            if self.db.execute(f"PRAGMA {name}").fetchone()[0] != value:
                self.db.execute(f"PRAGMA {name}={value}")


def _tsv(value: object) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, str):
        if "\\" in value or "\t" in value or "\n" in value:
            return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
        return value
    return str(value)


class MysqlLoader(Loader):
    """A connection of its own with ``local_infile``; unique and foreign key checks off for the fill
    (the rows are made unique and consistent by the generator)."""

    def __init__(self, settings: dict):
        import MySQLdb

        self.db = MySQLdb.connect(
            host=settings["HOST"] or "127.0.0.1",
            port=int(settings["PORT"] or 3306),
            user=settings["USER"],
            password=settings["PASSWORD"],
            database=settings["NAME"],
            charset="utf8mb4",
            local_infile=1,
        )
        cursor = self.db.cursor()
        cursor.execute("SELECT @@local_infile")
        self.infile = bool(cursor.fetchone()[0])

    def __enter__(self) -> MysqlLoader:
        cursor = self.db.cursor()
        cursor.execute(
            "SET SESSION unique_checks = 0, foreign_key_checks = 0, check_constraint_checks = 0, autocommit = 0"
        )
        return self

    def write(self, table: Table, rows: list[tuple]) -> None:
        cursor = self.db.cursor()
        columns = ", ".join(f"`{column}`" for column in table.columns)
        if not self.infile:
            marks = ", ".join(["%s"] * len(table.columns))
            sql = f"INSERT INTO `{table.name}` ({columns}) VALUES ({marks})"  # mysqlclient batches it
            for start in range(0, len(rows), 2000):
                cursor.executemany(sql, [row + table.extra for row in rows[start : start + 2000]])
            return
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".tsv", delete=False) as out:
            for row in rows:
                out.write("\t".join(map(_tsv, row + table.extra)))
                out.write("\n")
        try:
            cursor.execute(
                f"LOAD DATA LOCAL INFILE %s INTO TABLE `{table.name}` CHARACTER SET utf8mb4 ({columns})", [out.name]
            )
        finally:
            os.unlink(out.name)

    def commit(self) -> None:
        self.db.commit()

    def __exit__(self, *exc: object) -> None:
        self.db.commit()
        self.db.cursor().execute("SET SESSION unique_checks = 1, foreign_key_checks = 1, check_constraint_checks = 1")
        self.db.close()


def loader() -> Loader:
    """The bulk writer for Django's default database, which must be in autocommit mode."""
    if connection.vendor == "sqlite":
        connection.ensure_connection()
        return SqliteLoader(connection.connection)
    if connection.vendor == "mysql":
        return MysqlLoader(connection.settings_dict)
    raise SystemExit(f"no bulk fill for {connection.vendor}")


@dataclass(frozen=True)
class UuidColumn:
    """How the default database stores a UUIDField (``text``) and orders it in an index (``order``)."""

    text: Callable[[uuid.UUID], str]
    order: Callable[[uuid.UUID], Any]


def uuid_column() -> UuidColumn:
    """32 hex digits in a char(32), ordered as text; or MariaDB's native uuid, which stores and orders
    ``llllllll-mmmm-Vhhh-vsss-nnnnnnnnnnnn`` as ``nnnnnnnnnnnn-vsss-Vhhh-mmmm-llllllll``."""
    if Trace._meta.pk.db_type(connection) == "uuid":
        return UuidColumn(str, lambda value: (h := value.hex)[20:] + h[16:20] + h[12:16] + h[8:12] + h[:8])
    return UuidColumn(lambda value: value.hex, lambda value: value.int)


def fill(count: int, owners: Sequence[int], *, seed: int = 1, chunk: int = 20_000) -> Iterator[int]:
    """Write ``count`` traces into empty tables; yields the number written after each chunk."""
    tables = (Table.of(Trace, TRACE_COLUMNS), Table.of(Run, RUN_COLUMNS), Table.of(Event, EVENT_COLUMNS))
    generator = Generator(count, owners, seed, uuid_column())
    with loader() as bulk:
        for start in range(0, count, chunk):
            rows = generator.rows(start, min(count, start + chunk))
            for table, part in zip(tables, (rows.traces, rows.runs, rows.events), strict=True):
                bulk.write(table, part)
            bulk.commit()
            yield min(count, start + chunk)


def timed_fill(count: int, owners: Sequence[int], report: Callable[[str], None]) -> float:
    started = time.perf_counter()
    for done in fill(count, owners):
        rate = done / (time.perf_counter() - started)
        report(f"  {done:,} traces, {rate:,.0f} traces/s")
    return time.perf_counter() - started
