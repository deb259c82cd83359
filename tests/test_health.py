"""/health and /metrics."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.django_db(transaction=True)


async def test_it_reports_healthy_with_counts(async_client):
    response = await async_client.get("/health")
    body = json.loads(response.content)
    assert response.status_code == 200
    assert body["status"] == "healthy"
    assert body["checks"] == {"database": "ok", "channel_layer": "ok"}
    for key in ("timestamp", "active_connections", "active_sessions", "running_agents"):
        assert key in body


async def test_it_is_degraded_without_the_channel_layer(async_client, settings):
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "traces.layer.BestEffortLayer",
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
        assert response.status_code == 503 and body["status"] == "degraded"
        assert body["checks"]["database"] == "ok" and body["checks"]["channel_layer"].startswith("error")
    finally:
        channel_layers.backends.clear()


def test_it_exposes_prometheus_metrics(client):
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
