"""MySQL and MariaDB for the agent: a READ ONLY transaction, the server's statement time limit
(``max_statement_time`` on MariaDB, ``MAX_EXECUTION_TIME`` on MySQL), ``KILL QUERY`` to cancel;
the user's ``SHOW GRANTS`` for what it may do beyond reading (``agents.database.grants``)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from agents.database.base import Column, SqlDatabase, Table, aliases
from agents.database.grants import grant_problems

COLUMNS_SQL = """
SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLUMN_KEY, COLUMN_COMMENT FROM information_schema.COLUMNS
WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME, ORDINAL_POSITION
"""
FOREIGN_KEYS_SQL = """
SELECT TABLE_NAME, COLUMN_NAME, REFERENCED_TABLE_NAME, REFERENCED_COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE
WHERE TABLE_SCHEMA = DATABASE() AND REFERENCED_TABLE_NAME IS NOT NULL
"""
# Lost connections (server gone, restarted, timed out): such a connection is not pooled again.
DISCONNECTS = {2006, 2013, 2055}
# Unknown table, unknown column: the cached schema may be stale.
SCHEMA_ERRORS = ("doesn't exist", "Unknown column", "Unknown table")


class MysqlDatabase(SqlDatabase):
    vendor = "mysql"
    dialect_family = "MySQL/MariaDB"

    def __init__(self, settings: dict[str, Any], **options: Any) -> None:
        super().__init__(settings, **options)
        self._mariadb: bool | None = None  # known after the first connection

    @property
    def name(self) -> str | None:
        return self.settings["NAME"]

    @property
    def dialect_label(self) -> str:
        return "MariaDB" if self._mariadb else "MySQL"

    def _connect_args(self, with_database: bool = True) -> dict[str, Any]:
        options = self.settings.get("OPTIONS", {})
        args = {
            "host": self.settings.get("HOST") or "127.0.0.1",
            "port": int(self.settings.get("PORT") or 3306),
            "user": self.settings.get("USER") or "",
            "passwd": self.settings.get("PASSWORD") or "",
            "charset": options.get("charset", "utf8mb4"),
            "connect_timeout": 10,
        }
        if with_database:
            args["db"] = self.settings["NAME"]
        return args

    def _connect(self) -> Any:
        import MySQLdb

        conn = MySQLdb.connect(**self._connect_args())
        cursor = conn.cursor()
        if self._mariadb is None:
            cursor.execute("SELECT VERSION()")
            self._mariadb = "mariadb" in cursor.fetchone()[0].lower()
        if self._mariadb:
            cursor.execute("SET SESSION max_statement_time = %s", [self.timeout])
        else:
            cursor.execute("SET SESSION MAX_EXECUTION_TIME = %s", [int(self.timeout * 1000)])
        # Every transaction of this session is read-only (autocommit is off: each statement runs in one).
        cursor.execute("SET SESSION TRANSACTION READ ONLY")
        return conn

    def _privilege_problems(self) -> list[str]:
        with self.connection() as conn:
            grants = [row[0] for row in self._schema_rows(conn, "SHOW GRANTS")]
        return grant_problems(grants, self.settings["NAME"])

    def _after_query(self, conn: Any) -> None:
        conn.rollback()  # end the read-only transaction: no snapshot or metadata lock held while idle

    def _ping(self, conn: Any) -> bool:
        try:
            conn.ping()
        except Exception:  # noqa: BLE001 - any failure: open a new one
            return False
        return True

    def _is_disconnect(self, exc: Exception) -> bool:
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
        return code in DISCONNECTS or type(exc).__name__ == "InterfaceError"

    def _canceller(self, conn: Any) -> Callable[[], None]:
        thread_id = conn.thread_id()  # read here, on the connection's own thread

        def cancel() -> None:
            threading.Thread(target=self._kill, args=(thread_id,), daemon=True).start()

        return cancel

    def _kill(self, thread_id: int) -> None:
        import MySQLdb

        try:
            killer = MySQLdb.connect(**{**self._connect_args(with_database=False), "connect_timeout": 5})
            try:
                killer.cursor().execute(f"KILL QUERY {int(thread_id)}")
            finally:
                killer.close()
        except Exception:  # noqa: BLE001 - the statement time limit still stops it
            pass

    def _is_timeout(self, text: str, elapsed: float) -> bool:
        lowered = text.lower()
        return (
            "max_statement_time" in text
            or "maximum statement execution time" in lowered
            or (elapsed >= self.timeout and "interrupt" in lowered)
        )

    def _is_schema_error(self, text: str) -> bool:
        return any(marker in text for marker in SCHEMA_ERRORS)

    def quote(self, identifier: str) -> str:
        return "`" + identifier.replace("`", "``") + "`"

    def _table_list(self, conn: Any) -> list[Table]:
        # TABLE_ROWS: the storage engine's estimate (InnoDB samples pages), free to read.
        rows = self._schema_rows(
            conn,
            "SELECT TABLE_NAME, TABLE_COMMENT, TABLE_ROWS FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE IN ('BASE TABLE', 'VIEW') ORDER BY TABLE_NAME",
        )
        return [
            Table(name, aliases(comment), estimated_rows=int(count) if count is not None else None)
            for name, comment, count in rows
        ]

    def _all_columns(self, conn: Any, tables: list[str]) -> dict[str, list[Column]]:
        foreign = {
            (table, column): f"FK -> {ref_table}.{ref_column}"
            for table, column, ref_table, ref_column in self._schema_rows(conn, FOREIGN_KEYS_SQL)
        }
        columns: dict[str, list[Column]] = {}
        for table, name, type_, nullable, key, comment in self._schema_rows(conn, COLUMNS_SQL):
            column = Column(name, type_, nullable == "YES", foreign.get((table, name), key or ""), aliases(comment))
            columns.setdefault(table, []).append(column)
        return columns
