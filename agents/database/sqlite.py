"""SQLite for the agent: ``mode=ro`` and ``query_only``, a time limit through the progress handler,
row estimates from ``sqlite_stat1`` (written by ``ANALYZE``) when the database has them."""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from agents.database.base import Column, SqlDatabase, Table, _QueryState, aliases


class SqliteDatabase(SqlDatabase):
    vendor = "sqlite"
    dialect_family = "SQLite"

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            f"file:{self.settings['NAME']}?mode=ro", uri=True, timeout=self.timeout, check_same_thread=False
        )
        conn.execute("PRAGMA query_only = 1")
        return conn

    def _canceller(self, conn: sqlite3.Connection) -> Callable[[], None]:
        return conn.interrupt

    def _before_query(self, conn: sqlite3.Connection, state: _QueryState, deadline: float) -> None:
        # SQLite has no statement time limit of its own: the progress handler stops a statement
        # that runs past its deadline, or that was cancelled.
        conn.set_progress_handler(lambda: int(state.cancelled or time.perf_counter() > deadline), 1000)

    def _after_query(self, conn: sqlite3.Connection) -> None:
        conn.set_progress_handler(None, 0)
        if conn.in_transaction:
            conn.rollback()

    def _is_disconnect(self, exc: Exception) -> bool:
        return isinstance(exc, sqlite3.ProgrammingError)  # "Cannot operate on a closed database"

    def _is_timeout(self, text: str, elapsed: float) -> bool:
        return "interrupted" in text

    def _is_schema_error(self, text: str) -> bool:
        return text.startswith(("no such table", "no such column"))

    def quote(self, identifier: str) -> str:
        return '"' + identifier.replace('"', '""') + '"'

    def _table_list(self, conn: sqlite3.Connection) -> list[Table]:
        rows = self._schema_rows(
            conn,
            "SELECT name, sql FROM sqlite_master WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name",
        )
        estimates = self._estimates(conn)
        return [Table(name, aliases(_first_line(create)), estimated_rows=estimates.get(name)) for name, create in rows]

    def _estimates(self, conn: sqlite3.Connection) -> dict[str, int]:
        """Rows per table as ANALYZE last saw them: the first number of each ``sqlite_stat1`` entry."""
        try:
            rows = self._schema_rows(conn, "SELECT tbl, stat FROM sqlite_stat1")
        except sqlite3.OperationalError:  # never analysed: no estimates
            return {}
        estimates: dict[str, int] = {}
        for table, stat in rows:
            first = (stat or "").split(" ", 1)[0]
            if first.isdigit():
                estimates[table] = max(estimates.get(table, 0), int(first))
        return estimates

    def _all_columns(self, conn: sqlite3.Connection, tables: list[str]) -> dict[str, list[Column]]:
        return {table: self._columns(conn, table) for table in tables}

    def _columns(self, conn: sqlite3.Connection, table: str) -> list[Column]:
        create = self._schema_rows(conn, "SELECT sql FROM sqlite_master WHERE name = ?", [table])[0][0] or ""
        comments = _column_comments(create)
        foreign = {
            row[3]: f"FK -> {row[2]}.{row[4]}"
            for row in self._schema_rows(conn, f"PRAGMA foreign_key_list({self.quote(table)})")
        }
        columns = []
        for _, name, type_, notnull, _, pk in self._schema_rows(conn, f"PRAGMA table_info({self.quote(table)})"):
            key = "PRI" if pk else foreign.get(name, "")
            columns.append(Column(name, type_ or "", not notnull, key, aliases(comments.get(name))))
        return columns


def _first_line(create: str | None) -> str:
    """A table's comment, where the demo schema keeps it: on the CREATE TABLE line."""
    return (create or "").split("\n", 1)[0]


def _column_comments(create: str) -> dict[str, Any]:
    comments = {}
    for line in create.splitlines()[1:]:
        match = re.match(r'\s*["`\[]?(\w+)["`\]]?\s+.*?/\*(.*?)\*/', line)
        if match:
            comments[match.group(1)] = match.group(2)
    return comments
