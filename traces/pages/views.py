from __future__ import annotations

import functools
import os
import uuid
from typing import Any
from urllib.parse import urlencode

from django.contrib.auth.decorators import login_not_required
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess

from agents.config import model_label
from agents.events import format_timestamp, utcnow
from traces import protocol, search_index
from traces.access import visible_filter
from traces.live.sessions import sockets
from traces.models import Trace
from traces.pages import health as health_checks
from traces.pages import pagination, stats, tree
from traces.pages.compare import compare
from traces.pages.forms import CompareForm, HistoryFilter
from traces.pages.pagination import Total, keyset_page, numbered_page, page_number
from traces.runtime import running_agents
from traces.scores import MAX_COMMENT_CHARS, record_feedback
from traces.store.serializers import trace_document

PAGE_SIZE = 50
MAX_RERUNS = 200  # of a trace's runs again, the most its page reads before the viewer's filter
EXAMPLE_QUESTIONS = [
    "显示用户表的10条用户数据",
    "how many orders per country?",
    "top 5 products by price",
    "用户的平均年龄",
    "latest 5 orders",
    "what tables are there?",
]


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
    number = page_number(request.GET.get("page"))
    cursor = {key: request.GET.get(key) for key in ("after", "before")}
    # The default view: keyset pages, as fast at the 2,000th page as at the first; ?page=N
    # alone jumps to a page by number.
    keyset = form.newest_first and (any(cursor.values()) or "page" not in request.GET)
    traces = form.apply(_visible(request), search=not keyset).defer("metadata", "error", "feedback_comment")
    if not form.search_term:  # the answer is read only to show where a search found it
        traces = traces.defer("final_response")
    query = request.GET.copy()
    for key in ("page", "after", "before"):
        query.pop(key, None)
    if keyset:
        page = keyset_page(
            traces,
            after=cursor["after"],
            before=cursor["before"],
            number=number,
            size=PAGE_SIZE,
            search=form.search_term,
        )
    else:
        page = numbered_page(traces, number, PAGE_SIZE)
        if not page.items and page.number > 1:
            raise Http404("past the last page of the history")
        page.search_capped = form.search_capped
    return render(
        request,
        "traces/trace_list.html",
        {
            "form": form,
            "query": query.urlencode(),
            "newest_first": form.newest_first,
            "page": page,
            "rows": [(trace, form.where_matched(trace)) for trace in page.items],
            "search_limit": search_index.ID_LIMIT,
        },
    )


def session_detail(request: HttpRequest, session_id: str) -> HttpResponse:
    """A session's traces, newest first, a page at a time (keyset, like the history), under the
    totals of the session, over trace_session_started_idx: of all its traces up to
    ``pagination.COUNT_LIMIT``, of the newest that many past it ("10,000+ traces")."""
    traces = _visible(request).for_session(session_id)
    totals = traces.totals(pagination.COUNT_LIMIT)
    if not totals["count"]:
        raise Http404("no traces in this session")
    page = keyset_page(
        traces.defer("metadata", "error", "feedback_comment", "final_response"),
        after=request.GET.get("after"),
        before=request.GET.get("before"),
        number=page_number(request.GET.get("page")),
        size=PAGE_SIZE,
        total=Total(totals["count"], totals["more"]),
    )
    return render(request, "traces/session_detail.html", {"session_id": session_id, "page": page, "totals": totals})


def trace_detail(request: HttpRequest, trace_id) -> HttpResponse:
    """The trace's summary, and the first screen of its run tree read from its rows; the page asks
    ``traces.pages.tree`` for the rest as it is scrolled, expanded, searched or selected, and for the
    events when their tabs are opened. Of the trace's runs again, only those its viewer may see are
    listed (another user may have run the same trace again)."""
    trace = get_object_or_404(_visible(request).select_related("rerun_of"), pk=trace_id)
    # The summary (with its last seq) before the runs: a live page follows the events after that
    # seq, so a run that changes in between is sent again rather than missed.
    summary = {
        "id": str(trace.pk),
        "status": trace.status,
        "request": trace.request,
        "final_response": trace.final_response,
        "error": trace.error or None,
        "error_type": trace.error_type or None,
        "started_at": format_timestamp(trace.started_at),
        "ended_at": format_timestamp(trace.ended_at) if trace.ended_at else None,
        "duration_ms": trace.duration_ms,
        "last_seq": trace.last_seq,
    }
    return render(
        request,
        "traces/trace_detail.html",
        {
            "trace": trace,
            "tree": {"trace": summary, "pages": tree.first_screen(trace)},
            "runs": trace.total_runs,  # the projection keeps it: the sum of its runs, never a second count
            "scores": list(trace.scores.select_related("run").defer("run__inputs", "run__outputs", "run__metadata")),
            "reruns": _reruns(request, trace),
        },
    )


def _reruns(request: HttpRequest, trace: Trace) -> list[Trace]:
    """The trace's runs again that the viewer may see. Read by ``rerun_of`` first: with the viewer's
    own filter in the same query, SQLite (which keeps no statistics here) walked all of the
    viewer's traces through the owner index, a second for a user of 166,700 traces."""
    again = list(Trace.objects.filter(rerun_of=trace).values_list("pk", flat=True)[:MAX_RERUNS])
    if not again:
        return []
    return list(_visible(request).filter(pk__in=again).only("id", "status", "started_at")[:20])


def trace_export(request: HttpRequest, trace_id) -> JsonResponse:
    trace = get_object_or_404(_visible(request), pk=trace_id)
    response = JsonResponse(trace_document(trace), json_dumps_params={"ensure_ascii": False})
    response["Content-Disposition"] = f'attachment; filename="trace-{trace.pk}.json"'
    return response


@require_POST
def trace_feedback(request: HttpRequest, trace_id) -> HttpResponse:
    trace = get_object_or_404(_visible(request), pk=trace_id)
    rating = {"up": 1, "down": -1, "clear": None}.get(request.POST.get("rating", ""), trace.feedback)
    comment = request.POST.get("comment", trace.feedback_comment)[:MAX_COMMENT_CHARS]
    author = request.user if request.user.is_authenticated else None
    with transaction.atomic():
        Trace.objects.filter(pk=trace.pk).update(feedback=rating, feedback_comment=comment)
        record_feedback(trace.pk, rating, comment, author=author)
    return redirect("traces:detail", trace_id=trace.pk)


def trace_compare(request: HttpRequest) -> HttpResponse:
    """Two traces side by side, ``?a=<id>&b=<id>`` (ids or their first characters). Without them,
    or with ids that are wrong, the page asks for them, saying what was wrong (404 when all that
    is wrong is an id no trace has). The history page sends the two rows picked there as
    ``?trace=<id>&trace=<id>``."""
    picked = request.GET.getlist("trace")
    if len(picked) == 2:
        return redirect(f"{reverse('traces:compare')}?{urlencode({'a': picked[0], 'b': picked[1]})}")
    asked = "a" in request.GET or "b" in request.GET
    form = CompareForm(request.GET if asked else None, traces=_visible(request))
    context: dict[str, Any] = {
        "form": form,
        "recent": _visible(request).only("id", "request", "model", "started_at")[:20],
        "picked": len(picked) if picked else None,
    }
    if form.is_valid():
        a, b = form.cleaned_data["a"], form.cleaned_data["b"]
        context |= {
            "a": a,
            "b": b,
            "rows": compare(a, b),
            "answers": {"a": a.final_response, "b": b.final_response},
        }
        return render(request, "traces/compare.html", context)
    status = 200
    if picked:
        status = 400
    elif form.is_bound:
        status = 404 if form.only_unknown else 400
    return render(request, "traces/compare.html", context, status=status)


def dashboard(request: HttpRequest) -> HttpResponse:
    key = request.GET.get("range") or stats.DEFAULT_RANGE
    if key not in stats.RANGES:
        key = stats.DEFAULT_RANGE
    numbers = stats.dashboard(functools.partial(visible_filter, request.user), stats.RANGES[key], timezone.now())
    return render(request, "traces/dashboard.html", {**numbers, "range": key, "ranges": list(stats.RANGES)})


def _uuid_or_none(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except (ValueError, TypeError):
        return None


@login_not_required
async def health(request: HttpRequest) -> JsonResponse:
    """``traces.pages.health``: 200 while it serves (healthy, or degraded: live delivery between processes
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
            "warnings": await health_checks.warnings(),
        }
    return JsonResponse(body, status=503 if status == "unhealthy" else 200)


@login_not_required
async def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text format; aggregated across processes when PROMETHEUS_MULTIPROC_DIR is set.
    For monitoring only (``traces.pages.health.monitoring_allowed``)."""
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
