"""The agent's database on production sizes: row counts come from the database's statistics (never
counted), the schema is cached and refreshed when it changes, and connections are pooled."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3

import pytest

from agents.database import QueryError, open_database
from agents.database.base import SqlDatabase
from tests.agentdb import _mysql_connect, mysql_database, sqlite_database
from tracesite import env


class Recording:
    """Records every statement the database's connections run."""

    def __init__(self, database: SqlDatabase) -> None:
        self.statements: list[str] = []
        connect = database.pool._connect

        def recording_connect():
            return _RecordingConnection(connect(), self.statements)

        database.pool._connect = recording_connect


class _RecordingConnection:
    def __init__(self, connection, statements: list[str]) -> None:
        self._connection, self._statements = connection, statements

    def cursor(self):
        return _RecordingCursor(self._connection.cursor(), self._statements)

    def __getattr__(self, name):
        return getattr(self._connection, name)


class _RecordingCursor:
    def __init__(self, cursor, statements: list[str]) -> None:
        self._cursor, self._statements = cursor, statements

    def execute(self, sql, *args):
        self._statements.append(sql)
        return self._cursor.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self._cursor, name)


@pytest.fixture(params=["sqlite", "mysql"])
def fresh_demo(request, tmp_path):
    """A demo database of its own (its cache and pool start empty), with a writer beside it."""
    if request.param == "sqlite":
        path = tmp_path / "demo.sqlite3"
        database = sqlite_database(path, "demo")

        @contextlib.contextmanager
        def writer():
            conn = sqlite3.connect(path)
            try:
                yield conn.cursor()
                conn.commit()
            finally:
                conn.close()

        yield database, writer
        database.close()
        return
    url = request.getfixturevalue("mysql_url")
    with mysql_database(url, "demo") as database:

        @contextlib.contextmanager
        def writer():
            conn, _ = _mysql_connect(url, database.name)
            try:
                yield conn.cursor()
                conn.commit()
            finally:
                conn.close()

        yield database, writer
        database.close()


def test_the_schema_shows_estimates_and_counts_nothing(fresh_demo):
    database, _ = fresh_demo
    recording = Recording(database)
    tables = {t.name: t for t in database.tables()}
    described = database.describe("users")
    assert set(tables) == {"users", "orders", "products", "order_items"}
    assert tables["users"].estimated_rows is not None and tables["users"].estimated_rows > 0
    assert described.estimated_rows == tables["users"].estimated_rows and described.columns[0].samples
    assert not [sql for sql in recording.statements if "count(" in sql.lower()]


def test_a_sqlite_estimate_is_what_analyze_saw_not_a_count(tmp_path):
    path = tmp_path / "growing.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE visits (id INTEGER PRIMARY KEY, page TEXT)")
        conn.executemany("INSERT INTO visits (page) VALUES (?)", [("/",)] * 300)
        conn.execute("ANALYZE")
        conn.executemany("INSERT INTO visits (page) VALUES (?)", [("/",)] * 50)
    database = open_database(env.sqlite_database(path))
    assert [t.estimated_rows for t in database.tables()] == [300]
    assert asyncio.run(database.run("SELECT COUNT(*) FROM visits")).rows == [[350]]  # counted only when asked
    never = tmp_path / "never.sqlite3"
    with sqlite3.connect(never) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    assert [t.estimated_rows for t in open_database(env.sqlite_database(never)).tables()] == [None]


def test_the_schema_is_read_once_then_served_from_the_cache(fresh_demo):
    database, _ = fresh_demo
    recording = Recording(database)
    database.tables()
    database.describe("orders")
    read = len(recording.statements)
    for _ in range(5):
        database.tables()
        database.describe("orders")
        database.describe("users")
    assert database.schema.loads == 1
    assert len(recording.statements) == read + 1  # users' sample rows, once; nothing else


def test_a_query_on_a_table_that_is_gone_refreshes_the_cache(fresh_demo):
    database, writer = fresh_demo
    with writer() as cursor:
        cursor.execute("CREATE TABLE scratch (id INT PRIMARY KEY)")
    assert "scratch" in {t.name for t in database.tables()}
    with writer() as cursor:
        cursor.execute("DROP TABLE scratch")
    with pytest.raises(QueryError) as caught:
        asyncio.run(database.run("SELECT * FROM scratch"))
    assert caught.value.error_type == "SchemaChanged"
    assert "scratch" not in {t.name for t in database.tables()}
    assert database.schema.loads == 2


def test_a_table_created_after_the_cache_was_filled_can_be_described(fresh_demo, monkeypatch):
    database, writer = fresh_demo
    database.tables()
    monkeypatch.setattr(database.schema, "age", lambda: 10.0)  # filled a while ago
    with writer() as cursor:
        cursor.execute("CREATE TABLE latecomer (id INT PRIMARY KEY, label VARCHAR(20))")
    assert [c.name for c in database.describe("latecomer").columns] == ["id", "label"]


def test_the_cache_expires_after_its_ttl(tmp_path):
    database = sqlite_database(tmp_path / "demo.sqlite3", "demo")
    database.schema.ttl = 0.0
    database.tables()
    database.tables()
    assert database.schema.loads == 2


def test_queries_share_a_few_pooled_connections(fresh_demo):
    database, _ = fresh_demo

    async def many():
        for _ in range(20):
            await database.run("SELECT COUNT(*) FROM users")
        await asyncio.gather(*(database.run("SELECT name FROM users LIMIT 5") for _ in range(12)))

    asyncio.run(many())
    database.tables()
    assert 1 <= database.pool.opened <= database.pool.size


def test_no_new_mysql_connection_per_query(mysql_url):
    with mysql_database(mysql_url, "demo") as database:
        admin, _ = _mysql_connect(mysql_url)
        cursor = admin.cursor()

        def connections() -> int:
            cursor.execute("SHOW GLOBAL STATUS LIKE 'Connections'")
            return int(cursor.fetchone()[1])

        asyncio.run(database.run("SELECT 1"))  # the pool's first connection
        before = connections()
        for _ in range(30):
            asyncio.run(database.run("SELECT COUNT(*) FROM orders"))
            database.describe("orders")
        assert connections() - before <= 1  # the connection counter moves only for this test's own reads
        admin.close()
        database.close()


def test_a_pooled_connection_the_server_dropped_is_replaced(mysql_url):
    with mysql_database(mysql_url, "demo") as database:
        assert asyncio.run(database.run("SELECT COUNT(*) FROM users")).rows == [[300]]
        idle = database.pool._idle[-1][0]
        admin, _ = _mysql_connect(mysql_url)
        admin.cursor().execute(f"KILL CONNECTION {int(idle.thread_id())}")
        admin.close()
        assert asyncio.run(database.run("SELECT COUNT(*) FROM users")).rows == [[300]]
        database.close()


async def test_a_cancelled_query_does_not_hand_its_connection_on(fresh_demo):
    database, _ = fresh_demo
    slow = "SELECT COUNT(*) FROM order_items a, order_items b, order_items c WHERE a.quantity + b.quantity > c.quantity"
    await database.run("SELECT 1")
    opened = database.pool.opened
    task = asyncio.create_task(database.run(slow))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(50):  # the abandoned statement ends on its thread shortly after
        if database.pool.in_use == 0:
            break
        await asyncio.sleep(0.1)
    assert database.pool.idle == 0  # closed, not pooled: a late cancel must not reach another query
    assert (await database.run("SELECT COUNT(*) FROM products")).rows == [[31]]
    assert database.pool.opened == opened + 1


def test_the_process_shares_one_database_per_configuration(settings, tmp_path):
    from agents.config import agent_database, databases

    first, again = agent_database(), agent_database()
    assert first is again
    settings.AGENT_POOL_SIZE = 2
    other = agent_database()
    assert other is not first and other.pool.size == 2
    databases.close()
