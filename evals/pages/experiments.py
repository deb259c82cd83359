"""An experiment's page, two experiments side by side, and each dataset's accuracy over its
experiments for the dashboard. An experiment is shown to whoever may see its dataset
(``evals.access``); to anybody else it does not exist (404)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render

from evals.access import visible_experiments
from evals.accuracy import accuracy_series
from evals.comparison import Change, deltas, pairs
from evals.experiments import summarize
from evals.models import Experiment

# The other experiments of the dataset offered by "Compare with…", newest first.
COMPARE_CHOICES = 50


def experiment(request: HttpRequest, experiment_id: int) -> HttpResponse:
    """The figures, and every item with its verdict; ``?failed=1``: the items that failed only."""
    found = get_object_or_404(visible_experiments(request.user).select_related("dataset"), pk=experiment_id)
    failed_only = request.GET.get("failed") == "1"
    rows = found.results.select_related("item").defer("item__metadata")
    if failed_only:
        rows = rows.filter(passed=False)
    others = (
        visible_experiments(request.user)
        .filter(dataset_id=found.dataset_id)
        .exclude(pk=found.pk)
        .only("id", "name", "model", "started_at")[:COMPARE_CHOICES]
    )
    return render(
        request,
        "evals/experiment.html",
        {
            "experiment": found,
            "summary": summarize(found),
            "rows": list(rows),
            "failed_only": failed_only,
            "others": list(others),
        },
    )


class ExperimentPair(forms.Form):
    """Two experiments to compare, ``a`` and ``b``, by id, among those the user may see."""

    a = forms.CharField(required=False, max_length=20, label="Experiment A")
    b = forms.CharField(required=False, max_length=20, label="Experiment B")

    def __init__(self, data: Any, experiments: QuerySet[Experiment]) -> None:
        super().__init__(data)
        self.experiments = experiments
        for name in ("a", "b"):
            self.fields[name].widget.attrs.update({"list": "recent-experiments", "placeholder": "experiment id"})

    def clean_a(self) -> Experiment:
        return self._experiment("a")

    def clean_b(self) -> Experiment:
        return self._experiment("b")

    def _experiment(self, name: str) -> Experiment:
        text = self.cleaned_data.get(name, "").strip()
        if not text:
            raise forms.ValidationError(f"Choose experiment {name.upper()}.", code="required")
        if not text.isdigit():
            raise forms.ValidationError(f"“{text}” is not an experiment id (a number).", code="invalid")
        found = self.experiments.filter(pk=int(text)).first()
        if found is None:
            raise forms.ValidationError(f"No experiment has the id {text}.", code="unknown")
        return found

    @property
    def only_unknown(self) -> bool:
        """Every error is an id that matches no experiment (a 404 rather than a bad request)."""
        codes = {error.code for errors in self.errors.as_data().values() for error in errors}
        return codes == {"unknown"}


def compare(request: HttpRequest) -> HttpResponse:
    """``?a=<id>&b=<id>``: the items side by side, regressions and fixes first, and how the figures
    moved. Without ids the page asks for them; with wrong ones it says what is wrong (400, or 404
    when all that is wrong is an id no visible experiment has). Experiments of different datasets
    are compared too, by dataset item, and the page says so."""
    visible = visible_experiments(request.user).select_related("dataset")
    asked = "a" in request.GET or "b" in request.GET
    form = ExperimentPair(request.GET if asked else None, experiments=visible)
    context: dict[str, Any] = {
        "form": form,
        "recent": visible.only("id", "name", "model", "started_at", "dataset__name")[:20],
    }
    if not form.is_valid():
        status = 200 if not form.is_bound else 404 if form.only_unknown else 400
        return render(request, "evals/compare.html", context, status=status)
    a, b = form.cleaned_data["a"], form.cleaned_data["b"]
    found = pairs(a, b)
    context |= {
        "a": a,
        "b": b,
        "same_dataset": a.dataset_id == b.dataset_id,
        "pairs": found,
        "regressed": sum(pair.change == Change.REGRESSED for pair in found),
        "fixed": sum(pair.change == Change.FIXED for pair in found),
        "deltas": deltas(summarize(a), summarize(b)),
    }
    return render(request, "evals/compare.html", context)


def accuracy(request: HttpRequest) -> JsonResponse:
    """Each visible dataset's execution accuracy over its experiments (``evals.accuracy``)."""
    return JsonResponse(accuracy_series(visible_experiments(request.user)), json_dumps_params={"ensure_ascii": False})
