"""What the traces' pages offer of evaluation, without the traces app knowing of it: the history
and the trace page show "Add to dataset" when ``evaluation.datasets`` has any, the dashboard
charts accuracy from ``evaluation.accuracy_url``. Nothing is queried unless a template reads it."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from django.http import HttpRequest
from django.urls import reverse

from evals.access import editable_datasets
from evals.models import Dataset


class Evaluation:
    def __init__(self, user: Any) -> None:
        self.user = user

    @cached_property
    def datasets(self) -> list[Dataset]:
        """The datasets the user may add traces to."""
        return list(editable_datasets(self.user).only("id", "name"))

    @property
    def add_traces_url(self) -> str:
        return reverse("evals:add_traces")

    @property
    def accuracy_url(self) -> str:
        return reverse("evals:accuracy")


def evaluation(request: HttpRequest) -> dict[str, Evaluation]:
    return {"evaluation": Evaluation(getattr(request, "user", None))}
