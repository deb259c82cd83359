"""The agent's queries run on a connection that cannot write, under a time limit, and can be abandoned."""

from __future__ import annotations

import asyncio
import time

import pytest

from agents import guard
from agents.database import QueryError

SLOW = "SELECT COUNT(*) FROM order_items a, order_items b, order_items c WHERE a.quantity + b.quantity > c.quantity"


def run_unguarded(database, sql: str):
    """Bypass the guard to prove the connection itself refuses to write."""
    return database._execute(guard.CheckedSql(sql, "select", False), _state())


def _state():
    from agents.database.base import _QueryState

    return _QueryState()


def test_it_cannot_write_even_past_the_guard(demo_db):
    with pytest.raises(QueryError) as caught:
        run_unguarded(demo_db, "DELETE FROM users")
    assert caught.value.error_type in {"ReadOnly", "OperationalError"}
    assert asyncio.run(demo_db.run("SELECT COUNT(*) FROM users")).rows == [[300]]


@pytest.mark.parametrize("db", ["sqlite", "mysql"])
def test_it_stops_a_query_at_the_time_limit(db, request, tmp_path):
    if db == "sqlite":
        from tests.agentdb import sqlite_database

        database = sqlite_database(tmp_path / "demo.sqlite3", "demo", timeout=0.5)
        return _assert_times_out(database)
    from tests.agentdb import mysql_database

    with mysql_database(request.getfixturevalue("mysql_url"), "demo", timeout=0.5) as database:
        _assert_times_out(database)


def _assert_times_out(database) -> None:
    started = time.perf_counter()
    with pytest.raises(QueryError) as caught:
        asyncio.run(database.run(SLOW))
    assert caught.value.error_type == "QueryTimeout", caught.value
    assert "0.5 s limit" in str(caught.value)
    assert time.perf_counter() - started < 5
    # Queries run without the row cap, for comparing results, keep the time limit.
    with pytest.raises(QueryError) as caught:
        asyncio.run(database.run_exact(SLOW, max_rows=10_000))
    assert caught.value.error_type == "QueryTimeout", caught.value


async def test_it_abandons_a_query_when_cancelled(demo_db):
    task = asyncio.create_task(demo_db.run(SLOW))
    await asyncio.sleep(0.3)
    started = time.perf_counter()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.perf_counter() - started < 1
    # The database is free again right away.
    assert (await demo_db.run("SELECT COUNT(*) FROM products")).rows == [[31]]


async def test_it_caps_rows_and_says_so(demo_db):
    demo_db_rows = demo_db.row_limit
    result = await demo_db.run("SELECT * FROM order_items")
    assert len(result.rows) == demo_db_rows and result.truncated is True
    assert result.sql.endswith(f"LIMIT {demo_db_rows + 1}")
    small = await demo_db.run("SELECT * FROM users LIMIT 3")
    assert len(small.rows) == 3 and small.truncated is False


async def test_it_runs_an_exact_query_with_a_row_bound_of_its_own(demo_db):
    bound = demo_db.row_limit + 50
    result = await demo_db.run_exact("SELECT * FROM order_items", max_rows=bound)
    assert len(result.rows) == bound and result.more is True
    assert result.sql.endswith(f"LIMIT {bound + 1}")
    small = await demo_db.run_exact("SELECT id FROM users ORDER BY id LIMIT 3", max_rows=bound)
    assert result.sql != small.sql and small.sql.endswith("LIMIT 3")
    assert small.rows == [(1,), (2,), (3,)] and small.more is False


def test_it_reads_aliases_declared_in_the_schema(demo_db):
    tables = {t.name: t for t in demo_db.tables()}
    assert "用户" in tables["users"].aliases and "订单" in tables["orders"].aliases
    # The database's own estimate (ANALYZE ran when the demo was seeded): exact on SQLite, close on InnoDB.
    assert (
        tables["order_items"].estimated_rows == 5010
        if demo_db.vendor == "sqlite"
        else 2500 < tables["order_items"].estimated_rows < 10000
    )
    orders = demo_db.describe("orders")
    columns = {c.name: c for c in orders.columns}
    assert columns["user_id"].key == "FK -> users.id"
    assert columns["id"].key == "PRI"
    assert "国家" in columns["country"].aliases
    assert len(columns["status"].samples) == 3
    with pytest.raises(QueryError, match="no table named"):
        demo_db.describe("spaceships")
