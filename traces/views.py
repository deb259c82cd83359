from __future__ import annotations

import datetime as dt

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.paginator import Paginator
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render

from traces import protocol
from traces.models import Trace
from traces.serializers import trace_document

PAGE_SIZE = 50


def live(request: HttpRequest) -> HttpResponse:
    recent = Trace.objects.visible_to(request.user)[:10]
    return render(request, "traces/live.html", {"recent": recent, "model_name": _model_label()})


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


def health(request: HttpRequest) -> JsonResponse:
    checks = {"database": _check_database(), "channel_layer": _check_channel_layer()}
    healthy = all(value == "ok" for value in checks.values())
    body = {
        "status": "healthy" if healthy else "unhealthy",
        "timestamp": protocol.format_timestamp(protocol.utcnow()),
        "server_version": protocol.SERVER_VERSION,
        "checks": checks,
        "running_traces": Trace.objects.running().count() if checks["database"] == "ok" else None,
    }
    return JsonResponse(body, status=200 if healthy else 503)


def _check_database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return "ok"
    except Exception as exc:
        return f"error: {exc}"


def _check_channel_layer() -> str:
    layer = get_channel_layer()
    if layer is None:
        return "error: no channel layer configured"
    try:
        async_to_sync(layer.group_send)("health.check", {"type": "health.check"})
        return "ok"
    except Exception as exc:
        return f"error: {exc}"


def _model_label() -> str:
    return settings.OPENAI_MODEL if settings.OPENAI_API_KEY else "builtin (offline)"
