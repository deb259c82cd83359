"""What every agent database does: guarded, read-only, time-limited queries and schema introspection.

Queries never use Django's connection for the ``agent`` alias (that one can write: it is what
``seeddemo`` uses). They run on a pool of read-only connections made from the same settings
(``agents.database.pool``). What differs between vendors (connecting read-only, the time limit,
cancelling, introspection, row estimates) is in a subclass each: ``SqliteDatabase`` and
``MysqlDatabase``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import datetime as dt
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

from agents import guard
from agents.database.pool import ConnectionPool, PoolTimeout
from agents.events import clip, json_size

ALIASES_RE = re.compile(r"aliases:\s*([^*]+?)\s*(?:\*/|$)", re.IGNORECASE)
T = TypeVar("T")


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
    truncated: bool  # more rows exist than are here (the row limit, or the result's size limit)
    duration_ms: int
    cut_cells: int = 0  # values cut to the cell limit, with a marker
    size_limited: bool = False  # rows left out because the result reached its size limit


@dataclass
class ExactResult:
    """Rows as the driver returns them (``Decimal``, ``date``, ``bytes``...), nothing cut or converted."""

    sql: str
    columns: list[str]
    rows: list[tuple[Any, ...]]
    more: bool  # more rows exist than ``max_rows``; they are not here
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
    estimated_rows: int | None = None  # from the database's statistics, never counted
    column_names: list[str] = field(default_factory=list)


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
    """One agent database, built from a Django-style settings dict.

    It keeps a pool of read-only connections (``pool_size``) and a cache of the schema, refreshed
    after ``schema_ttl`` seconds or when a query fails on a table or column that is not there.
    Row counts in the schema are the database's own estimates; nothing here counts rows.
    """

    #: The guard's dialect (``agents.guard``).
    vendor: str
    #: What the model is told it writes.
    dialect_family: str

    def __init__(
        self,
        settings: dict[str, Any],
        row_limit: int = 200,
        timeout: float = 5.0,
        pool_size: int = 4,
        schema_ttl: float = 300.0,
        cell_chars: int = 2000,
        result_bytes: int = 256 * 1024,
    ) -> None:
        self.settings = settings
        self.row_limit = row_limit
        self.timeout = timeout
        self.cell_chars = cell_chars  # a longer value is cut, with a marker
        self.result_bytes = result_bytes  # rows past this much JSON are left out, said in the result
        self.pool = ConnectionPool(self._connect, pool_size, check=self._ping)
        self.schema = SchemaCache(schema_ttl)
        self._privileges: tuple[float, list[str]] | None = None  # (when read, problems)

    @property
    def name(self) -> str | None:
        """The schema the guard keeps queries in (None where there is only one)."""
        return None

    @property
    def dialect_label(self) -> str:
        return self.dialect_family

    def close(self) -> None:
        self.pool.close()

    # ------------------------------------------------------------------ the vendor's part

    @abstractmethod
    def _connect(self) -> Any:
        """A new connection that cannot write, with the statement time limit set."""

    @abstractmethod
    def _canceller(self, conn: Any) -> Callable[[], None]:
        """Stops the statement running on ``conn``; called from another thread. Built on the connection's own thread."""

    def _before_query(self, conn: Any, state: _QueryState, deadline: float) -> None:  # noqa: B027 - optional
        """Arm a client-side time limit, where the server has none."""

    def _after_query(self, conn: Any) -> None:  # noqa: B027 - optional
        """Leave the connection as the pool hands it out (no transaction open, no handler armed)."""

    def _ping(self, conn: Any) -> bool:
        """Whether an idle connection still works."""
        return True

    @abstractmethod
    def _is_disconnect(self, exc: Exception) -> bool:
        """Whether the error means the connection itself is lost (it is not returned to the pool)."""

    @abstractmethod
    def _is_timeout(self, text: str, elapsed: float) -> bool:
        """Whether the error text says the statement was stopped for running too long."""

    @abstractmethod
    def _is_schema_error(self, text: str) -> bool:
        """Whether the error says a table or column does not exist (the cached schema may be stale)."""

    @abstractmethod
    def _table_list(self, conn: Any) -> list[Table]:
        """Every table and view, with aliases and the database's own row estimate where it keeps one."""

    @abstractmethod
    def _all_columns(self, conn: Any, tables: list[str]) -> dict[str, list[Column]]:
        """The columns of these tables, with keys and aliases."""

    @abstractmethod
    def quote(self, identifier: str) -> str: ...

    def _privilege_problems(self) -> list[str]:
        """What the database user may do beyond reading this database, one sentence each. None
        where there are no users (SQLite: the file is opened read-only, ``mode=ro``)."""
        return []

    # ------------------------------------------------------------------ connections

    @contextlib.contextmanager
    def connection(self, state: _QueryState | None = None) -> Iterator[Any]:
        """A pooled connection for one statement or one introspection; returned when done.

        It goes back to the pool unless it may be broken: its connection was lost, or its statement
        was cancelled (a cancel can land late, so the connection is not handed to another query).
        """
        try:
            conn = self.pool.acquire(timeout=self.timeout + 5)
        except PoolTimeout as exc:
            raise QueryError(str(exc), "PoolTimeout") from None
        except Exception as exc:  # noqa: BLE001 - whichever driver's error: the model reads it
            raise QueryError(f"cannot connect to the agent's database: {exc}", "ConnectionError") from None
        reuse = False
        try:
            yield conn
            reuse = True
        except Exception as exc:
            reuse = not self._is_disconnect(exc)
            raise
        finally:
            if state is not None and state.cancelled:
                reuse = False
            if reuse:
                try:
                    self._after_query(conn)
                except Exception:  # noqa: BLE001 - it cannot be reset: it is not reused
                    reuse = False
            self.pool.release(conn, reuse)

    # ------------------------------------------------------------------ queries

    async def run(self, sql: str) -> QueryResult:
        """Check ``sql`` with the guard and run it. Raises guard.SqlRejected or QueryError.

        Cancelling the awaiting task abandons the query: the database is told to stop it.
        """
        checked = guard.check(sql, self.vendor, self.row_limit, database=self.name)
        return await self._in_worker(lambda state: self._execute(checked, state))

    async def run_exact(self, sql: str, max_rows: int) -> ExactResult:
        """Check ``sql`` with the guard and run it like ``run`` (read-only connection, time limit,
        cancellable), but with ``max_rows`` as its row bound instead of ``row_limit``, and the values
        as the driver returns them, none cut and no size limit on the result: for comparing results
        (``agents.execution_accuracy``), not for the model to read.

        The guard's LIMIT is then ``max_rows + 1``, so that ``more`` can say there were more rows;
        a LIMIT of the query's own no larger than ``max_rows`` is kept as written.
        """
        checked = guard.check(sql, self.vendor, max_rows, database=self.name)
        return await self._in_worker(lambda state: self._execute_exact(checked, max_rows, state))

    async def _in_worker(self, work: Callable[[_QueryState], T]) -> T:
        state = _QueryState()
        task = asyncio.get_running_loop().run_in_executor(None, work, state)
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
        columns, raw = self._fetch_once_more_if_dropped(checked.sql, self.row_limit, state, started)
        rows, cut, size_limited = self._bounded(raw[: self.row_limit])
        truncated = len(raw) > self.row_limit or size_limited
        duration_ms = int((time.perf_counter() - started) * 1000)
        return QueryResult(checked.sql, columns, rows, truncated, duration_ms, cut, size_limited)

    def _execute_exact(self, checked: guard.CheckedSql, max_rows: int, state: _QueryState) -> ExactResult:
        started = time.perf_counter()
        columns, raw = self._fetch_once_more_if_dropped(checked.sql, max_rows, state, started)
        rows = [tuple(row) for row in raw[:max_rows]]
        duration_ms = int((time.perf_counter() - started) * 1000)
        return ExactResult(checked.sql, columns, rows, len(raw) > max_rows, duration_ms)

    def _fetch_once_more_if_dropped(
        self, sql: str, max_rows: int, state: _QueryState, started: float
    ) -> tuple[list[str], list[Any]]:
        """The columns and up to ``max_rows + 1`` rows; raises QueryError."""
        for attempt in (1, 2):
            try:
                return self._fetch(sql, max_rows, state, started)
            except QueryError:
                raise
            except Exception as exc:  # noqa: BLE001 - whichever driver's error: the model reads it
                if attempt == 1 and self._is_disconnect(exc) and not state.cancelled:
                    continue  # a pooled connection the server had dropped: once more, on a new one
                error = self._query_error(exc, state, started)
                if error.error_type == "SchemaChanged":
                    self.schema.invalidate()
                raise error from None
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _bounded(self, raw: list[Any]) -> tuple[list[list[Any]], int, bool]:
        """The rows as JSON values, long values cut to ``cell_chars``, no more rows than fit in
        ``result_bytes``: what one result may put in front of the model and into a trace event."""
        rows: list[list[Any]] = []
        cut = size = 0
        for raw_row in raw:
            values = [to_json_value(value) for value in raw_row]
            long = sum(1 for value in values if isinstance(value, str) and len(value) > self.cell_chars)
            row = [self._cell(value) for value in values] if long else values
            size += json_size(row) + 1
            if size > self.result_bytes and rows:
                return rows, cut, True
            cut += long
            rows.append(row)
        return rows, cut, False

    def _cell(self, value: Any) -> Any:
        """A value as it may appear in a result: a long text cut to ``cell_chars``, with a marker."""
        return clip(value, self.cell_chars) if isinstance(value, str) else value

    def _fetch(self, sql: str, max_rows: int, state: _QueryState, started: float) -> tuple[list[str], list[Any]]:
        with self.connection(state) as conn:
            state.attach(self._canceller(conn))
            try:
                self._before_query(conn, state, started + self.timeout)
                cursor = conn.cursor()
                cursor.execute(sql)
                columns = [d[0] for d in cursor.description or []]
                return columns, cursor.fetchmany(max_rows + 1) if cursor.description else []
            finally:
                state.detach()

    def _query_error(self, exc: Exception, state: _QueryState, started: float) -> QueryError:
        text = str(exc.args[1] if len(getattr(exc, "args", ())) > 1 else exc)
        if state.cancelled:
            return QueryError("the query was cancelled", "Cancelled")
        if self._is_timeout(text, time.perf_counter() - started):
            return QueryError(f"the query ran longer than the {self.timeout:g} s limit and was stopped", "QueryTimeout")
        if "read only" in text.lower() or "readonly" in text.lower():
            return QueryError(f"the agent's connection is read-only: {text}", "ReadOnly")
        if self._is_schema_error(text):
            return QueryError(text, "SchemaChanged")
        return QueryError(text, type(exc).__name__)

    # ------------------------------------------------------------------ grants

    def privilege_problems(self) -> list[str]:
        """What the database user may do beyond reading its own schema: write, read the server's
        files, see other sessions, administer the server, read other schemas (``agents.database.grants``).
        Read again after the schema's ``ttl``. Raises QueryError when the database cannot say."""
        if self._privileges is None or time.monotonic() - self._privileges[0] >= self.schema.ttl:
            try:
                problems = self._privilege_problems()
            except QueryError:
                raise
            except Exception as exc:  # noqa: BLE001 - whichever driver's error: the caller says it
                raise QueryError(f"cannot read the database user's grants: {exc}", type(exc).__name__) from None
            self._privileges = (time.monotonic(), problems)
        return self._privileges[1]

    # ------------------------------------------------------------------ schema

    def _schema_rows(self, conn: Any, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        cursor = conn.cursor()
        if params:
            cursor.execute(sql, params)
        else:
            cursor.execute(sql)
        return list(cursor.fetchall())

    def _introspect(self) -> dict[str, Table]:
        """The whole schema in one go: tables, estimates, columns, keys and aliases (no samples)."""
        with self.connection() as conn:
            tables = self._table_list(conn)
            columns = self._all_columns(conn, [t.name for t in tables])
        for table in tables:
            table.columns = columns.get(table.name, [])
        return {table.name: table for table in tables}

    def _schema(self, refresh: bool = False) -> dict[str, Table]:
        try:
            return self.schema.get(self._introspect, refresh=refresh)
        except QueryError:
            raise
        except Exception as exc:  # noqa: BLE001 - whichever driver's error: the model reads it
            raise QueryError(f"cannot read the schema: {exc}", type(exc).__name__) from None

    def tables(self) -> list[Table]:
        """Every table with its aliases, estimated row count and column names (the columns' details left out)."""
        return [
            dataclasses.replace(t, columns=[], column_names=[c.name for c in t.columns])
            for t in sorted(self._schema().values(), key=lambda t: t.name)
        ]

    def describe(self, table_name: str) -> Table:
        """Columns (type, key, nullability, aliases) and a few sample values of one table."""
        table = self._find(self._schema(), table_name)
        if table is None and self.schema.age() > 1.0:  # created since the cache was filled?
            table = self._find(self._schema(refresh=True), table_name)
        if table is None:
            known = ", ".join(sorted(self._schema()))
            raise QueryError(f"no table named {table_name!r}; tables: {known}", "UnknownTable")
        samples = self.schema.samples(table.name, lambda: self._samples(table))
        described = copy.deepcopy(table)
        for index, column in enumerate(described.columns):
            column.samples = [row[index] for row in samples if index < len(row)]
        return described

    @staticmethod
    def _find(schema: dict[str, Table], name: str) -> Table | None:
        return schema.get(name) or next((t for t in schema.values() if t.name.lower() == name.lower()), None)

    def _samples(self, table: Table) -> list[list[Any]]:
        with self.connection() as conn:
            rows = self._schema_rows(conn, f"SELECT * FROM {self.quote(table.name)} LIMIT 3")
        return [[self._cell(to_json_value(value)) for value in row] for row in rows]


class SchemaCache:
    """The schema of one database, kept ``ttl`` seconds; sample rows kept per table as long."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._tables: dict[str, Table] | None = None
        self._loaded = 0.0
        self._samples: dict[str, tuple[float, list[list[Any]]]] = {}
        self.loads = 0  # introspections over the cache's life: for tests and benchmarks

    def get(self, load: Callable[[], dict[str, Table]], refresh: bool = False) -> dict[str, Table]:
        with self._lock:  # one introspection at a time; the others wait for its result
            if refresh or self._tables is None or time.monotonic() - self._loaded >= self.ttl:
                self._tables = load()
                self._loaded = time.monotonic()
                self._samples.clear()
                self.loads += 1
            return self._tables

    def samples(self, table: str, load: Callable[[], list[list[Any]]]) -> list[list[Any]]:
        with self._lock:
            cached = self._samples.get(table)
        if cached is not None and time.monotonic() - cached[0] < self.ttl:
            return cached[1]
        rows = load()
        with self._lock:
            self._samples[table] = (time.monotonic(), rows)
        return rows

    def age(self) -> float:
        return time.monotonic() - self._loaded if self._tables is not None else float("inf")

    def invalidate(self) -> None:
        with self._lock:
            self._tables = None
            self._samples.clear()


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
