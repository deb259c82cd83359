"""The agent's database user is checked for grants beyond reading its own schema: at start-up in
the log, and in /health's details."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid

import pytest

from agents.database import open_database
from agents.database.grants import grant_problems
from tracesite import env

READER = ["GRANT USAGE ON *.* TO `agent`@`%`", "GRANT SELECT, SHOW VIEW ON `shop`.* TO `agent`@`%`"]


def test_a_reader_of_its_own_schema_has_no_problems():
    assert grant_problems(READER, "shop") == []
    assert grant_problems(["GRANT SELECT (id, name) ON `shop`.`users` TO `agent`@`%`"], "shop") == []
    assert grant_problems(["GRANT SELECT ON `shop_db`.* TO `agent`@`%`"], "shop_db") == []


@pytest.mark.parametrize(
    "grant, named",
    [
        ("GRANT FILE ON *.* TO `agent`@`%`", "holds FILE"),
        ("GRANT PROCESS ON *.* TO `agent`@`%`", "holds PROCESS"),
        ("GRANT SUPER ON *.* TO `agent`@`%`", "holds SUPER"),
        ("GRANT SELECT, INSERT ON `shop`.* TO `agent`@`%`", "can write: INSERT on `shop`.*"),
        ("GRANT UPDATE (name) ON `shop`.`users` TO `agent`@`%`", "can write: UPDATE on `shop`.`users`"),
        ("GRANT ALL PRIVILEGES ON `shop`.* TO `agent`@`%`", "can write: ALL PRIVILEGES on `shop`.*"),
        ("GRANT SELECT ON `shop`.* TO `agent`@`%` WITH GRANT OPTION", "can write: GRANT OPTION"),
        ("GRANT SELECT ON *.* TO `agent`@`%`", "grants outside its schema shop: SELECT on *.*"),
        ("GRANT SELECT ON `billing`.* TO `agent`@`%`", "grants outside its schema shop: SELECT on `billing`.*"),
        ("GRANT SELECT ON `sho%`.* TO `agent`@`%`", "grants outside its schema shop"),
        ("GRANT RELOAD, SHUTDOWN ON *.* TO `agent`@`%`", "server privileges: RELOAD, SHUTDOWN"),
    ],
)
def test_it_names_each_grant_beyond_reading(grant, named):
    problems = grant_problems([*READER, grant], "shop")
    assert any(named in problem for problem in problems), problems


def test_all_privileges_everywhere_is_every_problem():
    problems = grant_problems(["GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` WITH GRANT OPTION"], "shop")
    for named in ("can write", "holds FILE", "holds PROCESS", "holds SUPER", "outside its schema"):
        assert any(named in problem for problem in problems), (named, problems)


# --------------------------------------------------------------------------- against MariaDB


@contextlib.contextmanager
def mysql_user(url: str, database: str, *grants: str):
    """A throwaway user of the test server with these grants (``{db}`` is its schema), dropped afterwards."""
    from tests.agentdb import _mysql_connect

    name, password = f"tracesite_g_{uuid.uuid4().hex[:10]}", uuid.uuid4().hex
    admin, parts = _mysql_connect(url)
    cursor = admin.cursor()
    try:
        cursor.execute(f"CREATE USER '{name}'@'%' IDENTIFIED BY '{password}'")
        for grant in grants:
            cursor.execute(f"GRANT {grant.format(db=f'`{database}`')} TO '{name}'@'%'")
        yield env.mysql_database(database, name, password, parts.hostname or "127.0.0.1", parts.port or 3306)
    finally:
        cursor.execute(f"DROP USER IF EXISTS '{name}'@'%'")
        admin.close()


@pytest.mark.mysql
def test_a_user_with_file_and_insert_is_named_on_mariadb(mysql_url, demo_mysql):
    with mysql_user(mysql_url, demo_mysql.name, "FILE ON *.*", "SELECT, INSERT ON {db}.*") as settings:
        database = open_database(settings)
        try:
            problems = database.privilege_problems()
        finally:
            database.close()
    assert any("holds FILE" in p for p in problems), problems
    assert any("can write: INSERT" in p and demo_mysql.name in p for p in problems), problems


@pytest.mark.mysql
def test_a_user_with_select_on_its_schema_only_has_none_on_mariadb(mysql_url, demo_mysql):
    with mysql_user(mysql_url, demo_mysql.name, "SELECT ON {db}.*") as settings:
        database = open_database(settings)
        try:
            assert database.privilege_problems() == []
            assert asyncio.run(database.run("SELECT COUNT(*) FROM users")).rows == [[300]]
        finally:
            database.close()


def test_sqlite_has_no_users_to_check(demo_sqlite):
    assert demo_sqlite.privilege_problems() == []


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
async def test_the_server_warns_as_it_starts_and_health_lists_them(
    mysql_url, demo_mysql, settings, caplog, async_client
):
    from agents.config import databases
    from traces.runtime import get_runtime

    settings.TRACE_MONITORING_IPS = ["127.0.0.1"]
    with mysql_user(mysql_url, demo_mysql.name, "PROCESS ON *.*", "SELECT, DELETE ON {db}.*") as agent:
        settings.DATABASES = {**settings.DATABASES, "agent": agent}
        try:
            with caplog.at_level(logging.WARNING, logger="agents.config"):
                await get_runtime().start()
                for _ in range(100):
                    if "holds PROCESS" in caplog.text:
                        break
                    await asyncio.sleep(0.05)
            assert "holds PROCESS" in caplog.text and "can write: DELETE" in caplog.text
            body = json.loads((await async_client.get("/health")).content)
            assert body["status"] == "healthy"  # a warning, not a failure
            assert any("holds PROCESS" in w for w in body["warnings"]), body
        finally:
            databases.close()


@pytest.mark.django_db(transaction=True)
async def test_health_has_no_warnings_for_a_read_only_sqlite_database(async_client, settings, tmp_path):
    from tests.agentdb import sqlite_database

    settings.TRACE_MONITORING_IPS = ["127.0.0.1"]
    sqlite_database(tmp_path / "shop.sqlite3", "demo").close()
    # On SQLite whatever the run's agent database is (CI's MariaDB run seeds its shop as root).
    settings.DATABASES = {**settings.DATABASES, "agent": env.sqlite_database(tmp_path / "shop.sqlite3")}
    body = json.loads((await async_client.get("/health")).content)
    assert body["warnings"] == []
