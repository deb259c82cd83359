from __future__ import annotations

import datetime as dt
import os
import uuid
from typing import Any

from django.contrib.auth.decorators import login_not_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess

from agents.config import model_label
from agents.events import format_timestamp, utcnow
from traces import health as health_checks
from traces import protocol, stats
from traces.compare import compare
from traces.forms import HistoryFilter
from traces.live import running_agents, sockets
from traces.models import Run, Trace
from traces.pagination import keyset_page
from traces.serializers import trace_document

PAGE_SIZE = 50
EXAMPLE_QUESTIONS = [
    "显示用户表的10条用户数据",
    "how many orders per country?",
    "top 5 products by price",
    "用户的平均年龄",
    "latest 5 orders",
    "what tables are there?",
]
DASHBOARD_RANGES = {
    "24h": dt.timedelta(hours=24),
    "7d": dt.timedelta(days=7),
    "30d": dt.timedelta(days=30),
    "90d": dt.timedelta(days=90),
}


def _visible(request: HttpRequest):
    return Trace.objects.visible_to(request.user)


@require_http_methods(["GET", "HEAD", "POST"])
def live(request: HttpRequest) -> HttpResponse:
    """The live page. ``?rerun=<id>`` fills in that trace's question; only a POST of the detail
    page's "Run again" form (CSRF-checked) starts it on load, never a link or a reload."""
    rerun = None
    wanted = request.POST.get("rerun") if request.method == "POST" else request.GET.get("rerun")
    if wanted:
        rerun = _visible(request).filter(pk=_uuid_or_none(wanted)).only("id", "request").first()
    return render(
        request,
        "traces/live.html",
        {
            "recent": _visible(request)[:15],
            "model_name": model_label(),
            "examples": EXAMPLE_QUESTIONS,
            "rerun": rerun,
            "autostart": rerun is not None and request.method == "POST",
        },
    )


def trace_list(request: HttpRequest) -> HttpResponse:
    form = HistoryFilter(request.GET or None)
    traces = form.apply(_visible(request)).defer("metadata", "final_response", "error")
    query = request.GET.copy()
    for key in ("page", "after"):
        query.pop(key, None)
    context: dict[str, Any] = {"form": form, "query": query.urlencode()}
    if form.newest_first and "page" not in request.GET:
        # The default view: keyset pages, as fast at the 2,000th page as at the first.
        keyset = context["keyset"] = keyset_page(traces, request.GET.get("after"), PAGE_SIZE)
        context["rows"] = keyset.items
    else:
        page = context["page"] = Paginator(traces, PAGE_SIZE).get_page(request.GET.get("page"))
        context["rows"] = page.object_list
    return render(request, "traces/trace_list.html", context)


def session_detail(request: HttpRequest, session_id: str) -> HttpResponse:
    traces = list(_visible(request).for_session(session_id).order_by("started_at", "id")[:500])
    if not traces:
        raise Http404("no traces in this session")
    return render(
        request,
        "traces/session_detail.html",
        {"session_id": session_id, "traces": traces, "total_tokens": sum(t.total_tokens for t in traces)},
    )


def trace_detail(request: HttpRequest, trace_id) -> HttpResponse:
    trace = get_object_or_404(_visible(request).select_related("rerun_of"), pk=trace_id)
    runs = list(trace.runs.order_by("start_time", "id"))
    events = [protocol.loads(text) for text in trace.events.order_by("seq").values_list("envelope", flat=True)]
    return render(
        request,
        "traces/trace_detail.html",
        {
            "trace": trace,
            "tree": run_tree(runs),
            "waterfall": waterfall(trace, runs),
            "events": events,
            "runs_json": {str(r.pk): run_view(r) for r in runs},
            "reruns": list(trace.reruns.only("id", "status", "started_at")[:20]),
        },
    )


def trace_export(request: HttpRequest, trace_id) -> JsonResponse:
    trace = get_object_or_404(_visible(request), pk=trace_id)
    response = JsonResponse(trace_document(trace), json_dumps_params={"ensure_ascii": False})
    response["Content-Disposition"] = f'attachment; filename="trace-{trace.pk}.json"'
    return response


@require_POST
def trace_feedback(request: HttpRequest, trace_id) -> HttpResponse:
    trace = get_object_or_404(_visible(request), pk=trace_id)
    rating = {"up": 1, "down": -1, "clear": None}.get(request.POST.get("rating", ""), trace.feedback)
    Trace.objects.filter(pk=trace.pk).update(
        feedback=rating, feedback_comment=request.POST.get("comment", trace.feedback_comment)[:4000]
    )
    return redirect("traces:detail", trace_id=trace.pk)


def trace_compare(request: HttpRequest) -> HttpResponse:
    ids = [_uuid_or_none(request.GET.get(key, "")) for key in ("a", "b")]
    traces = {t.pk: t for t in _visible(request).filter(pk__in=[i for i in ids if i])}
    if not all(i in traces for i in ids):
        raise Http404("choose two traces: /traces/compare/?a=<id>&b=<id>")
    a, b = traces[ids[0]], traces[ids[1]]
    return render(request, "traces/compare.html", {"a": a, "b": b, "rows": compare(a, b)})


def dashboard(request: HttpRequest) -> HttpResponse:
    key = request.GET.get("range") or "7d"
    if key not in DASHBOARD_RANGES:
        key = "7d"
    since = timezone.now() - DASHBOARD_RANGES[key]
    numbers = stats.dashboard(_visible(request), since, hourly=key == "24h")
    return render(
        request,
        "traces/dashboard.html",
        {
            **numbers,
            "range": key,
            "ranges": list(DASHBOARD_RANGES),
            "since": since,
            "runs_chart": stats.bar_chart(numbers["buckets"], ["success", "error", "cancelled", "running"]),
            "tokens_chart": stats.bar_chart(numbers["buckets"], ["tokens"]),
        },
    )


def run_tree(runs: list[Run]) -> list[dict]:
    """Steps with their think and tool runs under them."""
    children: dict = {}
    for run in runs:
        children.setdefault(run.parent_id, []).append(run)
    return [{"run": step, "children": children.get(step.pk, [])} for step in children.get(None, [])]


def waterfall(trace: Trace, runs: list[Run]) -> list[dict]:
    """Each run's offset and width as a percentage of the trace's span."""
    if not runs:
        return []
    start = min(r.start_time for r in runs)
    end = max((r.end_time or r.start_time) for r in runs)
    span = max((end - start).total_seconds(), 0.001)
    rows = []
    for run in runs:
        offset = (run.start_time - start).total_seconds() / span * 100
        width = max(((run.end_time or run.start_time) - run.start_time).total_seconds() / span * 100, 0.4)
        rows.append(
            {
                "run": run,
                "offset": round(offset, 2),
                "width": round(min(width, 100 - offset), 2),
                "depth": 0 if run.parent_id is None else 1,
            }
        )
    return rows


def run_view(run: Run) -> dict:
    return {
        "name": run.name,
        "run_type": run.run_type,
        "status": run.status,
        "duration_ms": run.duration_ms,
        "inputs": run.inputs,
        "outputs": run.outputs,
        "error": run.error,
        "error_type": run.error_type,
        "tokens": run.total_tokens,
    }


def _uuid_or_none(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except (ValueError, TypeError):
        return None


@login_not_required
async def health(request: HttpRequest) -> JsonResponse:
    """``traces.health``: 200 while it serves (healthy, or degraded: live delivery between processes
    or the model endpoint failing), 503 when unhealthy; the status for anybody, the details for monitoring."""
    status, results = await health_checks.checks()
    body: dict[str, Any] = {"status": status}
    if await health_checks.monitoring_allowed(request):
        body |= {
            "timestamp": format_timestamp(utcnow()),
            "server_version": protocol.SERVER_VERSION,
            "active_connections": sockets.connections,
            "active_sessions": len(sockets.sessions),
            "running_agents": running_agents(),
            "model": model_label(),
            "checks": results,
        }
    return JsonResponse(body, status=503 if status == "unhealthy" else 200)


@login_not_required
async def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text format; aggregated across processes when PROMETHEUS_MULTIPROC_DIR is set.
    For monitoring only (``traces.health.monitoring_allowed``)."""
    if not await health_checks.monitoring_allowed(request):
        response = HttpResponse(
            "metrics need TRACE_METRICS_TOKEN or a staff user's API token (Authorization: Bearer …), "
            "a staff login, or an address in TRACE_MONITORING_IPS\n",
            status=401,
            content_type="text/plain",
        )
        response["WWW-Authenticate"] = 'Bearer realm="tracesite metrics"'
        return response
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
