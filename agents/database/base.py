"""What every agent database does: guarded, read-only, time-limited queries and schema introspection.

Queries never use Django's connection for the ``agent`` alias (that one can write: it is what
``seeddemo`` uses). Each query opens its own read-only connection from the same settings. What
differs between vendors (connecting read-only, the time limit, cancelling, introspection) is in
a subclass each: ``SqliteDatabase`` and ``MysqlDatabase``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from agents import guard

ALIASES_RE = re.compile(r"aliases:\s*([^*]+?)\s*(?:\*/|$)", re.IGNORECASE)


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


def aliases(comment: str | None) -> list[str]:
    """The other names a schema comment gives a table or column: ``aliases: 用户, 会员``."""
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


class SqlDatabase(ABC):
    """One agent database, built from a Django-style settings dict."""

    #: The guard's dialect (``agents.guard``).
    vendor: str
    #: What the model is told it writes.
    dialect_family: str

    def __init__(self, settings: dict[str, Any], row_limit: int = 200, timeout: float = 5.0) -> None:
        self.settings = settings
        self.row_limit = row_limit
        self.timeout = timeout

    @property
    def name(self) -> str | None:
        """The schema the guard keeps queries in (None where there is only one)."""
        return None

    @property
    def dialect_label(self) -> str:
        return self.dialect_family

    # ------------------------------------------------------------------ the vendor's part

    @abstractmethod
    def _connect(self) -> Any:
        """A new connection that cannot write, with the statement time limit set."""

    @abstractmethod
    def _canceller(self, conn: Any) -> Callable[[], None]:
        """Stops the statement running on ``conn``; called from another thread. Built on the connection's own thread."""

    def _before_query(self, conn: Any, state: _QueryState, deadline: float) -> None:  # noqa: B027 - optional
        """Arm a client-side time limit, where the server has none."""

    def _release(self, conn: Any) -> None:
        conn.close()

    @abstractmethod
    def _is_timeout(self, text: str, elapsed: float) -> bool:
        """Whether the error text says the statement was stopped for running too long."""

    @abstractmethod
    def _table_list(self) -> list[Table]:
        """Every table and view, with aliases (and the vendor's own row estimate, if it keeps one)."""

    @abstractmethod
    def _columns(self, table: str) -> list[Column]:
        """The columns of one table, with keys and aliases."""

    @abstractmethod
    def quote(self, identifier: str) -> str: ...

    # ------------------------------------------------------------------ queries

    async def run(self, sql: str) -> QueryResult:
        """Check ``sql`` with the guard and run it. Raises guard.SqlRejected or QueryError.

        Cancelling the awaiting task abandons the query: the database is told to stop it.
        """
        checked = guard.check(sql, self.vendor, self.row_limit, database=self.name)
        state = _QueryState()
        task = asyncio.get_running_loop().run_in_executor(None, self._execute, checked, state)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            state.cancel()
            task.add_done_callback(
                lambda f: f.cancelled() or f.exception()
            )  # the abandoned query's outcome is not needed
            raise

    def _execute(self, checked: guard.CheckedSql, state: _QueryState) -> QueryResult:
        started = time.perf_counter()
        try:
            conn = self._connect()
        except Exception as exc:  # noqa: BLE001 - whichever driver's error: the model reads it
            raise QueryError(f"cannot connect to the agent's database: {exc}", "ConnectionError") from None
        state.attach(self._canceller(conn))
        try:
            self._before_query(conn, state, started + self.timeout)
            cursor = conn.cursor()
            try:
                cursor.execute(checked.sql)
                columns = [d[0] for d in cursor.description or []]
                raw = cursor.fetchmany(self.row_limit + 1) if cursor.description else []
            except Exception as exc:  # noqa: BLE001 - whichever driver's error: the model reads it
                raise self._query_error(exc, state, started) from None
            truncated = len(raw) > self.row_limit
            rows = [[to_json_value(v) for v in row] for row in raw[: self.row_limit]]
            return QueryResult(checked.sql, columns, rows, truncated, int((time.perf_counter() - started) * 1000))
        finally:
            state.detach()
            with contextlib.suppress(Exception):  # the connection is being thrown away anyway
                self._release(conn)

    def _query_error(self, exc: Exception, state: _QueryState, started: float) -> QueryError:
        text = str(exc.args[1] if len(getattr(exc, "args", ())) > 1 else exc)
        if state.cancelled:
            return QueryError("the query was cancelled", "Cancelled")
        if self._is_timeout(text, time.perf_counter() - started):
            return QueryError(f"the query ran longer than the {self.timeout:g} s limit and was stopped", "QueryTimeout")
        if "read only" in text.lower() or "readonly" in text.lower():
            return QueryError(f"the agent's connection is read-only: {text}", "ReadOnly")
        return QueryError(text, type(exc).__name__)

    # ------------------------------------------------------------------ schema

    def _schema_rows(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        conn = self._connect()
        try:
            cursor = conn.cursor()
            cursor.execute(sql, params or [])
            return list(cursor.fetchall())
        finally:
            self._release(conn)

    def tables(self) -> list[Table]:
        """Every table with its aliases and row count."""
        found = self._table_list()
        counts = self._counts([t.name for t in found])
        for table in found:
            table.row_count = counts.get(table.name, table.row_count)
        return found

    def _counts(self, names: list[str]) -> dict[str, int]:
        if not names:
            return {}
        union = " UNION ALL ".join(f"SELECT '{n.replace(chr(39), '')}', COUNT(*) FROM {self.quote(n)}" for n in names)
        try:
            return {name: int(count) for name, count in self._schema_rows(union)}
        except Exception:  # noqa: BLE001 - counts are a nicety; the listing stands without them
            return {}

    def describe(self, table_name: str) -> Table:
        """Columns (type, key, nullability, aliases) and a few sample values of one table."""
        tables = {t.name.lower(): t for t in self.tables()}
        table = tables.get(table_name.lower())
        if table is None:
            known = ", ".join(sorted(t.name for t in tables.values()))
            raise QueryError(f"no table named {table_name!r}; tables: {known}", "UnknownTable")
        table.columns = self._columns(table.name)
        samples = self._schema_rows(f"SELECT * FROM {self.quote(table.name)} LIMIT 3")
        for index, column in enumerate(table.columns):
            column.samples = [to_json_value(row[index]) for row in samples]
        return table


class _QueryState:
    """Lets a cancelled task stop the query running on a worker thread."""

    def __init__(self) -> None:
        self.cancelled = False
        self._lock = threading.Lock()
        self._stop: Callable[[], None] | None = None

    def attach(self, stop: Callable[[], None]) -> None:
        with self._lock:
            self._stop = stop

    def detach(self) -> None:
        with self._lock:
            self._stop = None

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            stop = self._stop
        if stop is not None:
            stop()
