from __future__ import annotations

import asyncio
import os

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.paginator import Paginator
from django.db import close_old_connections, connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess

from agents.config import model_label
from traces import protocol
from traces.live import running_agents, sockets
from traces.models import Trace
from traces.serializers import trace_document

PAGE_SIZE = 50


def live(request: HttpRequest) -> HttpResponse:
    recent = Trace.objects.visible_to(request.user)[:10]
    return render(request, "traces/live.html", {"recent": recent, "model_name": model_label()})


def trace_list(request: HttpRequest) -> HttpResponse:
    traces = Trace.objects.visible_to(request.user).search(request.GET.get("q", ""))
    status = request.GET.get("status")
    if status in Trace.Status.values:
        traces = traces.filter(status=status)
    page = Paginator(traces, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "traces/trace_list.html", {"page": page, "q": request.GET.get("q", ""), "status": status, "statuses": Trace.Status.choices})


def trace_detail(request: HttpRequest, trace_id) -> HttpResponse:
    trace = get_object_or_404(Trace.objects.visible_to(request.user), pk=trace_id)
    runs = list(trace.runs.all())
    events = list(trace.events.only("seq", "event_type", "timestamp", "message_id"))
    return render(request, "traces/trace_detail.html", {"trace": trace, "runs": runs, "events": events})


def trace_export(request: HttpRequest, trace_id) -> JsonResponse:
    trace = get_object_or_404(Trace.objects.visible_to(request.user), pk=trace_id)
    response = JsonResponse(trace_document(trace), json_dumps_params={"ensure_ascii": False})
    response["Content-Disposition"] = f'attachment; filename="trace-{trace.pk}.json"'
    return response


async def health(request: HttpRequest) -> JsonResponse:
    """200 when healthy; 503 "degraded" without the channel layer, "unhealthy" without the database."""
    database, layer = await asyncio.gather(_check_database(), _check_channel_layer())
    status = "unhealthy" if database != "ok" else "degraded" if layer != "ok" else "healthy"
    body = {
        "status": status,
        "timestamp": protocol.format_timestamp(protocol.utcnow()),
        "server_version": protocol.SERVER_VERSION,
        "active_connections": sockets.connections,
        "active_sessions": len(sockets.sessions),
        "running_agents": running_agents(),
        "model": model_label(),
        "checks": {"database": database, "channel_layer": layer},
    }
    return JsonResponse(body, status=200 if status == "healthy" else 503)


async def _check_database() -> str:
    def check() -> str:
        close_old_connections()
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            return "ok"
        except Exception as exc:
            return f"error: {exc}"

    return await sync_to_async(check)()


async def _check_channel_layer() -> str:
    layer = get_channel_layer()
    if layer is None:
        return "error: no channel layer configured"
    try:
        async with asyncio.timeout(2):
            await layer.group_send("health.check", {"type": "health.check"})
        return "ok"
    except Exception as exc:
        return f"error: {exc!r}"


def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text format; aggregated across processes when PROMETHEUS_MULTIPROC_DIR is set."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


