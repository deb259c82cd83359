"""/health and /metrics."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading

import pytest
from django.db import connection

from agents.chat import ENDPOINT_HEALTH, ChatModelError
from traces.models import ApiToken, Event

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def monitoring(settings):
    """The test client's address (127.0.0.1) may read the details."""
    settings.TRACE_MONITORING_IPS = ["127.0.0.1"]


@pytest.fixture
def model_endpoint_fresh():
    ENDPOINT_HEALTH.succeeded()
    ENDPOINT_HEALTH.last_ok = None
    yield ENDPOINT_HEALTH
    ENDPOINT_HEALTH.succeeded()
    ENDPOINT_HEALTH.last_ok = None


async def test_it_reports_healthy_with_counts(async_client, monitoring, model_endpoint_fresh):
    response = await async_client.get("/health")
    body = json.loads(response.content)
    assert response.status_code == 200
    assert body["status"] == "healthy"
    assert body["checks"] == {"database": "ok", "history_writer": "ok", "channel_layer": "ok", "model": "ok"}
    for key in ("timestamp", "active_connections", "active_sessions", "running_agents"):
        assert key in body


async def test_it_is_degraded_without_the_channel_layer(async_client, settings, monitoring):
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "traces.live.layer.BestEffortLayer",
            "CONFIG": {
                "backend": "channels_redis.core.RedisChannelLayer",
                "config": {"hosts": ["redis://127.0.0.1:1/0"]},
            },
        }
    }
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    try:
        response = await async_client.get("/health")
        body = json.loads(response.content)
        assert response.status_code == 200 and body["status"] == "degraded"  # it serves: stay in the pool
        assert body["checks"]["database"] == "ok" and body["checks"]["channel_layer"].startswith("error")
    finally:
        channel_layers.backends.clear()


def test_it_exposes_prometheus_metrics(client, monitoring):
    response = client.get("/metrics")
    text = response.content.decode()
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    for name in (
        "tracesite_websocket_connections",
        "tracesite_messages_in_total",
        "tracesite_runs_total",
        "tracesite_run_duration_seconds",
        "tracesite_event_persist_seconds",
        "tracesite_llm_tokens_total",
        "tracesite_tool_calls_total",
        "tracesite_messages_rejected_total",
    ):
        assert f"# TYPE {name.removesuffix('_total')}" in text


@pytest.fixture
def production(settings):
    settings.DEBUG = False
    settings.TRACE_METRICS_TOKEN = "scrape-secret-1"
    settings.TRACE_MONITORING_IPS = []


def test_anybody_gets_the_status_and_only_monitoring_gets_the_details_and_metrics(
    client, production, settings, django_user_model
):
    body = json.loads(client.get("/health").content)
    assert body == {"status": "healthy"}  # a load balancer's answer: nothing about the inside
    refused = client.get("/metrics")
    assert refused.status_code == 401 and refused["WWW-Authenticate"].startswith("Bearer")
    assert b"tracesite_" not in refused.content

    def allowed(**headers) -> bool:
        detailed = "checks" in json.loads(client.get("/health", **headers).content)
        metrics = client.get("/metrics", **headers).status_code == 200
        assert detailed == metrics
        return detailed

    assert allowed(HTTP_AUTHORIZATION="Bearer scrape-secret-1")
    assert not allowed(HTTP_AUTHORIZATION="Bearer scrape-secret-2")
    staff = django_user_model.objects.create_user("ops", is_staff=True)
    user = django_user_model.objects.create_user("dana")
    _, staff_key = ApiToken.issue(staff, "prometheus")
    _, user_key = ApiToken.issue(user, "cli")
    assert allowed(HTTP_AUTHORIZATION=f"Bearer {staff_key}")
    assert not allowed(HTTP_AUTHORIZATION=f"Bearer {user_key}")  # a user's token is for their traces
    settings.TRACE_MONITORING_IPS = ["10.1.0.0/16"]
    assert allowed(REMOTE_ADDR="10.1.2.3") and not allowed(REMOTE_ADDR="10.2.0.1")
    client.force_login(user)
    assert not allowed()
    client.force_login(staff)
    assert allowed()


def test_a_bad_monitoring_network_stops_start_up(monkeypatch):
    from django.core.exceptions import ImproperlyConfigured

    from tracesite import env

    monkeypatch.setenv("TRACE_MONITORING_IPS", "10.0.0.0/8, not-an-address")
    with pytest.raises(ImproperlyConfigured, match="TRACE_MONITORING_IPS"):
        env.networks("TRACE_MONITORING_IPS")


class HeldLock:
    """Another client of the history database holding a lock that stops the recorder's writes."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.held = threading.Event()
        self.thread = threading.Thread(target=self._hold, daemon=True)

    def _hold(self) -> None:
        settings_dict = connection.settings_dict
        if connection.vendor == "sqlite":
            other = sqlite3.connect(settings_dict["NAME"], isolation_level=None)
            other.execute("BEGIN EXCLUSIVE")
        else:
            import MySQLdb

            other = MySQLdb.connect(
                host=settings_dict["HOST"], port=int(settings_dict["PORT"] or 3306), user=settings_dict["USER"],
                passwd=settings_dict["PASSWORD"], db=settings_dict["NAME"],
            )  # fmt: skip
            other.cursor().execute(f"LOCK TABLES {Event._meta.db_table} WRITE")
        self.held.set()
        self.release.wait(60)
        if connection.vendor == "sqlite":
            other.execute("ROLLBACK")
        else:
            other.cursor().execute("UNLOCK TABLES")
        other.close()

    def __enter__(self):
        self.thread.start()
        assert self.held.wait(10)
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.thread.join(10)


async def test_a_locked_history_table_makes_it_unhealthy_and_it_recovers(async_client, monitoring):
    with HeldLock():
        started = asyncio.get_running_loop().time()
        response = await async_client.get("/health")
        body = json.loads(response.content)
        assert response.status_code == 503 and body["status"] == "unhealthy", body
        assert body["checks"]["database"].startswith("error"), body
        assert asyncio.get_running_loop().time() - started < 10  # answered, not stuck behind the lock
    for _ in range(50):  # the probe that waited on the lock gives up or gets through
        response = await async_client.get("/health")
        if response.status_code == 200:
            break
        await asyncio.sleep(0.2)
    assert json.loads(response.content)["status"] == "healthy"


async def test_a_failing_model_endpoint_makes_it_degraded_until_a_call_succeeds(
    async_client, settings, model_endpoint_fresh, monitoring
):
    from agents.openai_model import OpenAIChatModel
    from tests.fake_openai import FakeOpenAI, Reply

    unreachable = OpenAIChatModel(api_key="sk-test", model="m", base_url="http://127.0.0.1:9/v1", max_retries=0)
    settings.OPENAI_API_KEY = "sk-test"
    with pytest.raises(ChatModelError):
        await unreachable.complete([{"role": "user", "content": "hi"}])
    response = await async_client.get("/health")
    body = json.loads(response.content)
    assert response.status_code == 200 and body["status"] == "degraded"  # the service is up; runs would fail
    assert "APIConnectionError" in body["checks"]["model"] and body["checks"]["database"] == "ok"
    with FakeOpenAI() as server:
        server.default = Reply("hello", usage=(3, 1))
        working = OpenAIChatModel(api_key="sk-test", model="m", base_url=server.url, max_retries=0)
        await working.complete([{"role": "user", "content": "hi"}])
    body = json.loads((await async_client.get("/health")).content)
    assert body["status"] == "healthy" and body["checks"]["model"] == "ok"


async def test_a_batch_waiting_on_the_database_makes_it_unhealthy(async_client, monitoring):
    from traces.runtime import get_runtime

    store = get_runtime().store
    store._answering.append(asyncio.get_running_loop().time() - 30)  # a batch sent 30 s ago (time.monotonic)
    try:
        body = json.loads((await async_client.get("/health")).content)
        assert body["status"] == "unhealthy" and "has waited" in body["checks"]["history_writer"]
    finally:
        store._answering.clear()


async def test_database_checks_at_the_same_moment_share_one_probe_and_agree(monkeypatch):
    """Checks that overlap (several load balancers, processes serving views concurrently): none is
    told the database is stuck because another check's probe is still running."""
    import time

    from traces.pages import health

    probe = health._probe_database
    calls = []

    def slower_probe() -> str:  # a database that takes a moment, as under load
        calls.append(1)
        time.sleep(0.3)
        return probe()

    monkeypatch.setattr(health, "_probe_database", slower_probe)
    results = await asyncio.gather(*(health.check_database() for _ in range(8)))
    assert results == ["ok"] * 8 and len(calls) == 1
