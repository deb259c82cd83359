"""The agent's database: schema introspection and guarded, read-only, time-limited queries.

Queries never use Django's connection for the ``agent`` alias (that one can write: it is what
``seeddemo`` uses). Each query opens its own read-only connection from the same settings:
SQLite with ``mode=ro`` and ``query_only``; MySQL/MariaDB inside a READ ONLY transaction with a
statement time limit (``max_statement_time`` on MariaDB, ``MAX_EXECUTION_TIME`` on MySQL).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from agents import guard

ALIASES_RE = re.compile(r"aliases:\s*([^*]+?)\s*(?:\*/|$)", re.I)


class QueryError(Exception):
    """The database refused or failed the query (syntax, unknown column, time limit...)."""

    def __init__(self, message: str, error_type: str = "QueryError"):
        super().__init__(message)
        self.error_type = error_type


@dataclass
class QueryResult:
    sql: str
    columns: list[str]
    rows: list[list[Any]]
    truncated: bool
    duration_ms: int


@dataclass
class Column:
    name: str
    type: str
    nullable: bool
    key: str = ""  # PRI, FK -> table.column, UNI...
    aliases: list[str] = field(default_factory=list)
    samples: list[Any] = field(default_factory=list)


@dataclass
class Table:
    name: str
    aliases: list[str] = field(default_factory=list)
    columns: list[Column] = field(default_factory=list)
    row_count: int | None = None


def _aliases(comment: str | None) -> list[str]:
    match = ALIASES_RE.search(comment or "")
    return [a.strip() for a in match.group(1).split(",") if a.strip()] if match else []


def to_json_value(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else str(value)
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() and abs(value) < 2**53 else float(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat(sep=" ") if isinstance(value, dt.datetime) else value.isoformat()
    if isinstance(value, dt.timedelta):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return "0x" + raw.hex()
    return str(value)


class SqlDatabase:
    """One agent database, built from a Django-style settings dict."""

    def __init__(self, settings: dict, row_limit: int = 200, timeout: float = 5.0) -> None:
        engine = settings["ENGINE"]
        if engine.endswith("sqlite3"):
            self.vendor = "sqlite"
        elif engine.endswith("mysql"):
            self.vendor = "mysql"
        else:
            raise ValueError(f"unsupported database engine for the agent: {engine}")
        self.settings = settings
        self.row_limit = row_limit
        self.timeout = timeout
        self.name = settings["NAME"] if self.vendor == "mysql" else None
        self._mariadb: bool | None = None

    @property
    def dialect_label(self) -> str:
        if self.vendor == "sqlite":
            return "SQLite"
        return "MariaDB" if self._mariadb else "MySQL"

    # ------------------------------------------------------------------ connections

    def _connect(self):
        if self.vendor == "sqlite":
            conn = sqlite3.connect(f"file:{self.settings['NAME']}?mode=ro", uri=True, timeout=self.timeout, check_same_thread=False)
            conn.execute("PRAGMA query_only = 1")
            return conn
        import MySQLdb

        options = self.settings.get("OPTIONS", {})
        conn = MySQLdb.connect(
            host=self.settings.get("HOST") or "127.0.0.1", port=int(self.settings.get("PORT") or 3306),
            user=self.settings.get("USER") or "", passwd=self.settings.get("PASSWORD") or "",
            db=self.settings["NAME"], charset=options.get("charset", "utf8mb4"), connect_timeout=10,
        )
        cursor = conn.cursor()
        if self._mariadb is None:
            cursor.execute("SELECT VERSION()")
            self._mariadb = "mariadb" in cursor.fetchone()[0].lower()
        if self._mariadb:
            cursor.execute("SET SESSION max_statement_time = %s", [self.timeout])
        else:
            cursor.execute("SET SESSION MAX_EXECUTION_TIME = %s", [int(self.timeout * 1000)])
        cursor.execute("SET SESSION TRANSACTION READ ONLY")
        cursor.execute("START TRANSACTION READ ONLY")
        return conn

    # ------------------------------------------------------------------ queries

    async def run(self, sql: str) -> QueryResult:
        """Check ``sql`` with the guard and run it. Raises guard.SqlRejected or QueryError.

        Cancelling the awaiting task abandons the query: SQLite is interrupted, MySQL's is killed.
        """
        checked = guard.check(sql, self.vendor, self.row_limit, database=self.name)
        state = _QueryState()
        task = asyncio.get_running_loop().run_in_executor(None, self._execute, checked, state)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            state.cancel()
            task.add_done_callback(lambda f: f.cancelled() or f.exception())  # the abandoned query's outcome is not needed
            raise

    def _execute(self, checked: guard.CheckedSql, state: "_QueryState") -> QueryResult:
        started = time.perf_counter()
        try:
            conn = self._connect()
        except Exception as exc:
            raise QueryError(f"cannot connect to the agent's database: {exc}", "ConnectionError") from None
        state.attach(self, conn)
        try:
            if self.vendor == "sqlite":
                deadline = started + self.timeout
                conn.set_progress_handler(lambda: int(state.cancelled or time.perf_counter() > deadline), 1000)
            cursor = conn.cursor()
            try:
                cursor.execute(checked.sql)
                columns = [d[0] for d in cursor.description or []]
                raw = cursor.fetchmany(self.row_limit + 1) if cursor.description else []
            except Exception as exc:
                raise self._query_error(exc, state, started) from None
            truncated = len(raw) > self.row_limit
            rows = [[to_json_value(v) for v in row] for row in raw[: self.row_limit]]
            return QueryResult(checked.sql, columns, rows, truncated, int((time.perf_counter() - started) * 1000))
        finally:
            state.detach()
            try:
                if self.vendor == "mysql":
                    conn.rollback()
                conn.close()
            except Exception:
                pass

    def _query_error(self, exc: Exception, state: "_QueryState", started: float) -> QueryError:
        text = str(exc.args[1] if len(getattr(exc, "args", ())) > 1 else exc)
        if state.cancelled:
            return QueryError("the query was cancelled", "Cancelled")
        elapsed = time.perf_counter() - started
        if (self.vendor == "sqlite" and "interrupted" in text) or "max_statement_time" in text or "maximum statement execution time" in text.lower() or (elapsed >= self.timeout and "interrupt" in text.lower()):
            return QueryError(f"the query ran longer than the {self.timeout:g} s limit and was stopped", "QueryTimeout")
        if "read only" in text.lower() or "readonly" in text.lower():
            return QueryError(f"the agent's connection is read-only: {text}", "ReadOnly")
        return QueryError(text, type(exc).__name__)

    # ------------------------------------------------------------------ schema

    def _schema_rows(self, sql: str, params: list | None = None) -> list[tuple]:
        conn = self._connect()
        try:
            cursor = conn.cursor()
            cursor.execute(sql, params or [])
            return list(cursor.fetchall())
        finally:
            conn.close()

    def tables(self) -> list[Table]:
        """Every table with its aliases and row count."""
        if self.vendor == "sqlite":
            found = [
                Table(name, _aliases(_sqlite_head(create)))
                for name, create in self._schema_rows("SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
            ]
        else:
            found = [
                Table(name, _aliases(comment), row_count=rows)
                for name, comment, rows in self._schema_rows(
                    "SELECT TABLE_NAME, TABLE_COMMENT, TABLE_ROWS FROM information_schema.TABLES "
                    "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE IN ('BASE TABLE', 'VIEW') ORDER BY TABLE_NAME")
            ]
        counts = self._counts([t.name for t in found])
        for table in found:
            table.row_count = counts.get(table.name, table.row_count)
        return found

    def _counts(self, names: list[str]) -> dict[str, int]:
        if not names:
            return {}
        quote = (lambda n: f'"{n}"') if self.vendor == "sqlite" else (lambda n: f"`{n}`")
        union = " UNION ALL ".join(f"SELECT '{n.replace(chr(39), '')}', COUNT(*) FROM {quote(n)}" for n in names)
        try:
            return {name: int(count) for name, count in self._schema_rows(union)}
        except Exception:
            return {}

    def describe(self, table_name: str) -> Table:
        """Columns (type, key, nullability, aliases) and a few sample values of one table."""
        tables = {t.name.lower(): t for t in self.tables()}
        table = tables.get(table_name.lower())
        if table is None:
            raise QueryError(f"no table named {table_name!r}; tables: {', '.join(sorted(t.name for t in tables.values()))}", "UnknownTable")
        if self.vendor == "sqlite":
            create = self._schema_rows("SELECT sql FROM sqlite_master WHERE name = ?", [table.name])[0][0] or ""
            comments = _sqlite_column_comments(create)
            foreign = {row[3]: f"FK -> {row[2]}.{row[4]}" for row in self._schema_rows(f'PRAGMA foreign_key_list("{table.name}")')}
            for _, name, type_, notnull, _, pk in self._schema_rows(f'PRAGMA table_info("{table.name}")'):
                key = "PRI" if pk else foreign.get(name, "")
                table.columns.append(Column(name, type_ or "", not notnull, key, _aliases(comments.get(name))))
        else:
            foreign = {
                col: f"FK -> {ref_table}.{ref_col}"
                for col, ref_table, ref_col in self._schema_rows(
                    "SELECT COLUMN_NAME, REFERENCED_TABLE_NAME, REFERENCED_COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE "
                    "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s AND REFERENCED_TABLE_NAME IS NOT NULL", [table.name])
            }
            for name, type_, nullable, key, comment in self._schema_rows(
                "SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLUMN_KEY, COLUMN_COMMENT FROM information_schema.COLUMNS "
                "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION", [table.name]):
                table.columns.append(Column(name, type_, nullable == "YES", foreign.get(name, key or ""), _aliases(comment)))
        quote = '"' if self.vendor == "sqlite" else "`"
        samples = self._schema_rows(f"SELECT * FROM {quote}{table.name}{quote} LIMIT 3")
        for index, column in enumerate(table.columns):
            column.samples = [to_json_value(row[index]) for row in samples]
        return table


def _sqlite_head(create: str | None) -> str:
    return (create or "").split("\n", 1)[0]


def _sqlite_column_comments(create: str) -> dict[str, str]:
    comments = {}
    for line in create.splitlines()[1:]:
        match = re.match(r'\s*["`\[]?(\w+)["`\]]?\s+.*?/\*(.*?)\*/', line)
        if match:
            comments[match.group(1)] = match.group(2)
    return comments


class _QueryState:
    """Lets a cancelled task stop the query running on a worker thread."""

    def __init__(self) -> None:
        self.cancelled = False
        self._lock = threading.Lock()
        self._db: SqlDatabase | None = None
        self._conn = None

    def attach(self, db: SqlDatabase, conn) -> None:
        # The MySQL thread id is read here, on the connection's own thread.
        thread_id = conn.thread_id() if db.vendor == "mysql" else None
        with self._lock:
            self._db, self._conn, self._thread_id = db, conn, thread_id

    def detach(self) -> None:
        with self._lock:
            self._conn = None

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            conn, db = self._conn, self._db
        if conn is None or db is None:
            return
        if db.vendor == "sqlite":
            conn.interrupt()
        else:
            threading.Thread(target=_kill_mysql_query, args=(db, self._thread_id), daemon=True).start()


def _kill_mysql_query(db: SqlDatabase, thread_id: int) -> None:
    try:
        import MySQLdb

        options = db.settings.get("OPTIONS", {})
        killer = MySQLdb.connect(
            host=db.settings.get("HOST") or "127.0.0.1", port=int(db.settings.get("PORT") or 3306),
            user=db.settings.get("USER") or "", passwd=db.settings.get("PASSWORD") or "",
            charset=options.get("charset", "utf8mb4"), connect_timeout=5,
        )
        try:
            killer.cursor().execute(f"KILL QUERY {int(thread_id)}")
        finally:
            killer.close()
    except Exception:
        pass  # the time limit still stops it
