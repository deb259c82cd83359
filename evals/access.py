"""Who may see a dataset (and its experiments), and who may add to it.

The traces' rule (``traces.access``), applied to the dataset's owner: with ``TRACE_REQUIRE_AUTH``
off everyone sees and edits every dataset; with it on, staff see and edit all, other users their
own, and the datasets nobody owns are seen only with ``TRACE_SHARE_UNOWNED`` (and edited only by
staff). An experiment is visible to whoever may see its dataset.
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
    return Experiment.objects.filter(visible_filter(user, prefix="dataset__"))
