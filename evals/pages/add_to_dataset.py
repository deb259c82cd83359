"""Adding to a dataset from the history and from a trace's page: the ticked traces become items of a
dataset the user may edit (``evals.from_traces``). Only traces the user may see are added; the
page says how many were added, and how many were not."""

from __future__ import annotations

import uuid

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from evals.access import editable_datasets
from evals.from_traces import add_traces
from traces.models import Trace

# As many as a few pages of the history: one request's work stays bounded.
MAX_TRACES = 200


@require_POST
def add_to_dataset(request: HttpRequest) -> HttpResponse:
    dataset_id = request.POST.get("dataset", "")
    dataset = editable_datasets(request.user).filter(pk=int(dataset_id)).first() if dataset_id.isdigit() else None
    if dataset is None:
        raise Http404("no such dataset, or not one you may add to")
    ids = {_uuid(value) for value in request.POST.getlist("trace")} - {None}
    back = request.POST.get("next", "")
    context = {
        "dataset": dataset,
        "asked": len(ids),
        "back": back if url_has_allowed_host_and_scheme(back, {request.get_host()}, request.is_secure()) else "",
    }
    if not ids or len(ids) > MAX_TRACES:
        context["problem"] = (
            "Tick the traces to add." if not ids else f"Add at most {MAX_TRACES} traces at a time ({len(ids)} ticked)."
        )
        return render(request, "evals/traces_added.html", context, status=400)
    traces = Trace.objects.visible_to(request.user).filter(pk__in=ids).only("id", "request", "feedback")
    added = add_traces(dataset, traces)
    context |= {
        "added": added.items,
        "already": added.already,
        "not_added": len(ids) - len(added.items) - added.already,
    }
    return render(request, "evals/traces_added.html", context)


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None
