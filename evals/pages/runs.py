"""Experiments run from the dataset page, and their progress.

"Run experiment" makes the experiment and hands its run to the server process's runtime
(``Runtime.spawn``): it goes on after the response, on the server's event loop, through
``run_experiment`` (every item an ordinary trace, as ``evaluate`` runs them), and is recorded as
interrupted if the server stops first. So the view is async: it runs on that event loop, whose
runtime is the server's. The progress is read from the database, so any server process answers it.
"""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from evals.access import visible_datasets, visible_experiments
from evals.experiments import planned_items, progress, run_experiment, verdict
from evals.models import Experiment
from evals.pages.datasets import render_dataset
from evals.pages.forms import RunForm
from traces.access import user_id
from traces.runtime import get_runtime


@require_POST
async def experiment_run(request: HttpRequest, pk: int) -> HttpResponse:
    user = await request.auser()
    dataset = await visible_datasets(user).filter(pk=pk).afirst()
    if dataset is None:
        raise Http404("no such dataset")
    form = RunForm(request.POST)
    if form.is_valid() and not await dataset.items.aexists():
        form.add_error(None, "The dataset has no items to run.")
    if not form.is_valid():
        return await sync_to_async(render_dataset)(request, dataset, run_form=form, status=400)
    data = form.cleaned_data
    started = timezone.now()
    experiment = await Experiment.objects.acreate(
        dataset=dataset,
        name=data["name"] or f"{dataset.name} {timezone.localtime(started):%Y-%m-%d %H:%M:%S}",
        owner_id=user_id(user),
        model=data["model"],
        max_steps=data["max_steps"],
        concurrency=data["concurrency"],
        started_at=started,
    )
    items = [item async for item in planned_items(experiment)]
    runtime = get_runtime()
    try:
        runtime.spawn(
            run_experiment(experiment, items, runtime=runtime, runs=runtime.runs), name=f"experiment-{experiment.pk}"
        )
    except RuntimeError:  # the server is stopping
        await Experiment.objects.filter(pk=experiment.pk).aupdate(
            status=Experiment.Status.INTERRUPTED, ended_at=timezone.now()
        )
        return HttpResponse("The server is shutting down: run the experiment again later.\n", status=503)
    messages.success(request, f"Experiment “{experiment.name}” started: {len(items)} item(s).")
    return HttpResponseRedirect(reverse("evals:dataset", args=[dataset.pk]) + "#progress")


@never_cache
def experiment_progress(request: HttpRequest, pk: int) -> JsonResponse:
    """``evals.experiments.progress``, each done item's trace as the link to its page."""
    experiment = get_object_or_404(
        visible_experiments(request.user).only("status", "summary", "dataset_id", "started_at"), pk=pk
    )
    body = progress(experiment)
    body["results"] = [
        {
            "item": row["item_id"],
            "verdict": verdict(row["passed"]),
            "trace_url": reverse("traces:detail", args=[row["trace_id"]]) if row["trace_id"] else None,
        }
        for row in body["results"]
    ]
    return JsonResponse(body)
