"""The dataset pages: the datasets a user may see, a new one (with a file of items), and a
dataset's items (added, edited, deleted, imported from a file) with the experiments run on it.

Who may see and change what is ``evals.access``; a dataset another user may not see is a 404, as
a trace is. Running an experiment from the dataset page, and its progress, are ``evals.pages.runs``.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.db.models import Count, IntegerField, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from evals.access import can_change, visible_datasets, visible_experiments
from evals.datasets import add_items
from evals.experiments import progress
from evals.models import Dataset, DatasetItem, Experiment
from evals.pages.forms import DatasetForm, ImportForm, ItemForm, RunForm
from traces.access import user_id
from traces.pages.pagination import numbered_page, page_number

ITEMS_PER_PAGE = 100
EXPERIMENTS_SHOWN = 50


def _count(queryset) -> Coalesce:
    """The number of rows of ``queryset`` (filtered on ``OuterRef("pk")``), as a subquery: counting
    two relations through joins would multiply their rows."""
    counted = queryset.order_by().values("dataset_id").annotate(n=Count("pk")).values("n")
    return Coalesce(Subquery(counted, output_field=IntegerField()), 0)


@require_http_methods(["GET", "HEAD", "POST"])
def dataset_list(request: HttpRequest) -> HttpResponse:
    """The datasets, with their items, their experiments and the latest one's accuracy; a POST
    makes a dataset, owned by the user, with the items of the file given."""
    form = DatasetForm(request.POST or None, request.FILES or None, owner_id=user_id(request.user))
    if request.method == "POST" and form.is_valid():
        dataset, _ = add_items(
            form.cleaned_data["name"],
            user_id(request.user),
            form.cleaned_data["file"],
            form.cleaned_data["description"],
        )
        messages.success(request, f"Dataset “{dataset.name}” created with {len(form.cleaned_data['file'])} item(s).")
        return redirect("evals:dataset", pk=dataset.pk)
    experiments = visible_experiments(request.user).filter(dataset=OuterRef("pk")).order_by("-started_at", "-pk")
    datasets = list(
        visible_datasets(request.user)
        .select_related("owner")
        .annotate(
            n_items=_count(DatasetItem.objects.filter(dataset=OuterRef("pk"))),
            n_experiments=_count(experiments),
            latest_id=Subquery(experiments.values("pk")[:1]),
        )
        .order_by("name", "pk")
    )
    latest = Experiment.objects.only("status", "summary").in_bulk([d.latest_id for d in datasets if d.latest_id])
    rows = [(dataset, latest.get(dataset.latest_id)) for dataset in datasets]
    return render(
        request, "evals/dataset_list.html", {"rows": rows, "form": form}, status=400 if form.is_bound else 200
    )


def _dataset(request: HttpRequest, pk: int, *, change: bool = False) -> Dataset:
    """The dataset ``pk`` if the user may see it (and, for ``change``, change it), else 404."""
    dataset = get_object_or_404(visible_datasets(request.user), pk=pk)
    if change and not can_change(request.user, dataset):
        raise Http404("only the dataset's owner may change it")
    return dataset


def dataset_detail(request: HttpRequest, pk: int) -> HttpResponse:
    return render_dataset(request, _dataset(request, pk))


def render_dataset(
    request: HttpRequest,
    dataset: Dataset,
    *,
    status: int = 200,
    item_form: ItemForm | None = None,
    import_form: ImportForm | None = None,
    run_form: RunForm | None = None,
) -> HttpResponse:
    """The dataset page, with the forms given (a form sent back with its errors) or empty ones."""
    items = dataset.items.order_by("id").defer("metadata")
    page = numbered_page(items, page_number(request.GET.get("page")), ITEMS_PER_PAGE)
    experiments = list(
        visible_experiments(request.user).filter(dataset=dataset).select_related("owner")[:EXPERIMENTS_SHOWN]
    )
    latest = experiments[0] if experiments else None
    # The latest experiment's progress, and its verdict on each item: the page's script keeps them
    # up to date while it runs.
    figures = progress(latest) if latest is not None else None
    results = {row["item_id"]: row for row in figures["results"]} if figures is not None else {}
    context: dict[str, Any] = {
        "dataset": dataset,
        "page": page,
        "rows": [(item, results.get(item.pk)) for item in page.items],
        "experiments": experiments,
        "latest": latest,
        "progress": figures,
        "may_change": can_change(request.user, dataset),
        "item_form": item_form or ItemForm(),
        "import_form": import_form or ImportForm(),
        "run_form": run_form or RunForm(),
    }
    return render(request, "evals/dataset_detail.html", context, status=status)


@require_POST
def dataset_import(request: HttpRequest, pk: int) -> HttpResponse:
    dataset = _dataset(request, pk, change=True)
    form = ImportForm(request.POST, request.FILES)
    if not form.is_valid():
        return render_dataset(request, dataset, import_form=form, status=400)
    add_items(dataset.name, dataset.owner_id, form.cleaned_data["file"])
    messages.success(request, f"Imported {len(form.cleaned_data['file'])} item(s).")
    return redirect("evals:dataset", pk=dataset.pk)


@require_POST
def item_add(request: HttpRequest, pk: int) -> HttpResponse:
    dataset = _dataset(request, pk, change=True)
    form = ItemForm(request.POST)
    if not form.is_valid():
        return render_dataset(request, dataset, item_form=form, status=400)
    item = form.item
    DatasetItem.objects.create(
        dataset=dataset,
        question=item.question,
        expected_sql=item.expected_sql,
        expected_answer=item.expected_answer,
        metadata=item.metadata or {},
    )
    messages.success(request, "Item added.")
    return redirect("evals:dataset", pk=dataset.pk)


@require_http_methods(["GET", "HEAD", "POST"])
def item_edit(request: HttpRequest, pk: int, item_pk: int) -> HttpResponse:
    dataset = _dataset(request, pk, change=True)
    item = get_object_or_404(dataset.items, pk=item_pk)
    if request.method == "POST":
        form = ItemForm(request.POST)
        if form.is_valid():
            edited = form.item
            item.question = edited.question
            item.expected_sql = edited.expected_sql
            item.expected_answer = edited.expected_answer
            item.metadata = edited.metadata or {}
            item.save(update_fields=["question", "expected_sql", "expected_answer", "metadata"])
            messages.success(request, "Item saved.")
            return redirect("evals:dataset", pk=dataset.pk)
    else:
        form = ItemForm.of(item.question, item.expected_sql, item.expected_answer, item.metadata)
    status = 400 if form.is_bound else 200
    return render(request, "evals/dataset_item.html", {"dataset": dataset, "item": item, "form": form}, status=status)


@require_POST
def item_delete(request: HttpRequest, pk: int, item_pk: int) -> HttpResponse:
    dataset = _dataset(request, pk, change=True)
    deleted, _ = dataset.items.filter(pk=item_pk).delete()  # with its results in the experiments
    if not deleted:
        raise Http404("no such item in this dataset")
    messages.success(request, "Item deleted.")
    return redirect("evals:dataset", pk=dataset.pk)
