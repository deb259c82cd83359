"""Who may see a dataset and its experiments, and who may change a dataset.

The traces' rule (``traces.access``) on the owner of each: with ``TRACE_REQUIRE_AUTH`` off
everyone sees and changes everything; with it on, a user sees their own datasets and experiments
(staff see all), and those nobody owns only with ``TRACE_SHARE_UNOWNED``. Changing a dataset (its
items, an import, adding traces to it) is for its owner and staff, as cancelling a run is. Anyone
who sees a dataset may run an experiment on it: the experiment, and its traces, are theirs; an
experiment is seen by whoever may see both it (its owner's traces) and its dataset.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models import QuerySet

from evals.models import Dataset, Experiment
from traces.access import can_cancel, can_view, user_id, visible_filter


def can_view_dataset(user: Any, owner_id: int | None) -> bool:
    return can_view(user, owner_id)


def can_edit_dataset(user: Any, owner_id: int | None) -> bool:
    return can_cancel(user, owner_id)


def can_change(user: Any, dataset: Dataset) -> bool:
    return can_edit_dataset(user, dataset.owner_id)


def visible_datasets(user: Any) -> QuerySet[Dataset]:
    return Dataset.objects.filter(visible_filter(user))


def editable_datasets(user: Any) -> QuerySet[Dataset]:
    """``can_edit_dataset`` as a query."""
    if not settings.TRACE_REQUIRE_AUTH or (user_id(user) is not None and user.is_staff):
        return Dataset.objects.all()
    if user_id(user) is None:
        return Dataset.objects.none()
    return Dataset.objects.filter(owner=user.pk)


def visible_experiments(user: Any) -> QuerySet[Experiment]:
    return Experiment.objects.filter(visible_filter(user), visible_filter(user, prefix="dataset__"))
