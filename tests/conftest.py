"""Shared fixtures: services (MariaDB, Redis), users, sample traces."""

from __future__ import annotations

import asyncio
import inspect
import io
import os
import socket
import uuid
from urllib.parse import urlsplit

import pytest

# The browser fixtures (Chromium, a page) for every browser test file.
pytest_plugins = ["tests.pages"]

IN_CI = os.environ.get("CI", "").lower() == "true"
TEST_MYSQL_URL = os.environ.get("TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=1):
            return True
    except OSError:
        return False


def require_service(name: str, url: str, default_port: int, how: str) -> None:
    """In CI a missing service fails the test; on a developer machine it skips, saying how to run it."""
    if _reachable(url, default_port):
        return
    message = f"{name} is not reachable at {url}; {how}"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def mysql_url() -> str:
    require_service("MariaDB/MySQL", TEST_MYSQL_URL, 3306, "start it or set TEST_MYSQL_URL to run this test")
    try:
        import MySQLdb  # noqa: F401
    except ImportError:
        if IN_CI:
            pytest.fail("mysqlclient is not installed (pip install -r requirements-mysql.txt)")
        pytest.skip("mysqlclient is not installed (pip install -r requirements-mysql.txt)")
    return TEST_MYSQL_URL


@pytest.fixture(scope="session")
def redis_url() -> str:
    require_service("Redis", TEST_REDIS_URL, 6379, "start it or set TEST_REDIS_URL to run this test")
    return TEST_REDIS_URL


@pytest.fixture
def redis_layer(redis_url):
    from channels_redis.core import RedisChannelLayer

    from tracesite.env import redis_hosts

    return RedisChannelLayer(
        hosts=redis_hosts(redis_url), prefix=f"test{uuid.uuid4().hex[:8]}", capacity=10000, expiry=300
    )


@pytest.fixture
def staff_user(django_user_model):
    return django_user_model.objects.create_user(
        "alice", "alice@example.com", "pw-alice-123", is_staff=True, is_superuser=True
    )


@pytest.fixture
def staff_client(client, staff_user):
    client.force_login(staff_user)
    return client


@pytest.fixture
def make_trace():
    from tests.factories import make_trace as factory

    return factory


@pytest.fixture(scope="session")
def demo_sqlite(tmp_path_factory):
    from tests.agentdb import sqlite_database

    return sqlite_database(tmp_path_factory.mktemp("agentdb") / "demo.sqlite3", "demo")


@pytest.fixture(scope="session")
def library_sqlite(tmp_path_factory):
    from tests.agentdb import sqlite_database

    return sqlite_database(tmp_path_factory.mktemp("agentdb") / "library.sqlite3", "library")


@pytest.fixture(scope="session")
def demo_mysql(mysql_url):
    from tests.agentdb import mysql_database

    with mysql_database(mysql_url, "demo") as database:
        yield database


@pytest.fixture(scope="session")
def library_mysql(mysql_url):
    from tests.agentdb import mysql_database

    with mysql_database(mysql_url, "library") as database:
        yield database


@pytest.fixture(params=["sqlite", "mysql"])
def demo_db(request):
    """The demo shop on SQLite, then on MariaDB."""
    return request.getfixturevalue(f"demo_{request.param}")


@pytest.fixture(params=["sqlite", "mysql"])
def library_db(request):
    return request.getfixturevalue(f"library_{request.param}")


@pytest.fixture(scope="session")
def company_sqlite(tmp_path_factory):
    from tests.agentdb import sqlite_database

    return sqlite_database(tmp_path_factory.mktemp("agentdb") / "company.sqlite3", "company")


@pytest.fixture(scope="session")
def company_mysql(mysql_url):
    from tests.agentdb import mysql_database

    with mysql_database(mysql_url, "company") as database:
        yield database


@pytest.fixture(params=["sqlite", "mysql"])
def company_db(request):
    """Employees, departments, customers, products, orders: English names, no alias comments."""
    return request.getfixturevalue(f"company_{request.param}")


@pytest.fixture(scope="session")
def configured_agent_db(django_db_blocker):
    """The agent database from settings (what runagent and the consumer use), seeded."""
    from django.core.management import call_command

    from agents.management.commands.seeddemo import Command as SeedShop

    with django_db_blocker.unblock():
        call_command(SeedShop(), verbosity=0)  # the shop alone: the demo dataset is Django's database's


@pytest.fixture
def slow_llm(settings):
    """The OpenAI path against a local server whose answers stream slowly: runs last seconds."""
    from tests.fake_openai import FakeOpenAI, Reply, tool

    with FakeOpenAI() as server:
        server.script(
            Reply("Looking at the tables.", [tool("describe_schema", {})], usage=(50, 5), chunk_delay=0.05),
            Reply(
                "", [tool("run_sql", {"sql": "SELECT id, name FROM users LIMIT 3"})], usage=(80, 8), chunk_delay=0.05
            ),
        )
        server.default = Reply(" ".join(f"w{i}" for i in range(60)), usage=(100, 60), chunk_delay=0.05)
        settings.OPENAI_API_KEY = "sk-test"
        settings.OPENAI_BASE_URL = server.url
        settings.OPENAI_MAX_RETRIES = 0
        yield server


@pytest.fixture(autouse=True)
def fresh_channel_layer():
    """Each test runs on an event loop of its own, and a channel layer holds state bound to one
    loop (channels-redis's receive lock, the in-memory layer's queues): a socket or run still
    receiving when its test ended would leave the next test a layer it cannot use. A server
    process has one loop; each test gets its own layer."""
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """The runtime a test's in-process server started (its store, heartbeat, reaper...) is stopped
    as a server stops it, on the test's event loop, before the test's database goes away."""
    from traces.runtime import all_loops_runtimes

    for loop, runtime in all_loops_runtimes():
        if not runtime.stopped and not loop.is_closed() and not loop.is_running():
            loop.run_until_complete(runtime.stop(seconds=5))
    return (yield)


def pytest_collection_modifyitems(items):
    for item in items:
        if inspect.iscoroutinefunction(getattr(item, "obj", None)):
            item.fixturenames.insert(0, "tasks_end_when_cancelled")  # first up, last down


@pytest.fixture
async def tasks_end_when_cancelled():
    """After an async test, every task it left running must end when cancelled.

    The event loop's close would cancel them too, then wait for ever for one that swallows its
    cancellation (a retry loop catching the error a library turned it into). This names that
    task and shows where it is, instead of a test that hangs until its timeout.
    """
    yield
    current = asyncio.current_task()
    left = {task for task in asyncio.all_tasks() if task is not current and not task.done()}
    for _ in range(2):  # a second cancel, as the loop's close would send
        if not left:
            return
        for task in left:
            task.cancel()
        _, left = await asyncio.wait(left, timeout=10)
    stacks = []
    for task in left:
        buffer = io.StringIO()
        task.print_stack(file=buffer)
        stacks.append(buffer.getvalue())
        asyncio.tasks._unregister_task(task)  # so that closing the loop does not wait for it
    pytest.fail("tasks that do not end when cancelled:\n" + "\n".join(stacks), pytrace=False)
