"""Who may see a dataset and its experiments, and who may change a dataset.

The traces' rule (``traces.access``) on the owner of each: with ``TRACE_REQUIRE_AUTH`` off
everyone sees and changes everything; with it on, a user sees their own datasets and experiments
(staff see all), and those nobody owns only with ``TRACE_SHARE_UNOWNED``. Changing a dataset (its
items, an import) is for its owner and staff, as cancelling a run is. Anyone who sees a dataset
may run an experiment on it: the experiment, and its traces, are theirs.
"""

from __future__ import annotations

from typing import Any

from evals.models import Dataset, Experiment
from traces.access import can_cancel, visible_filter


def visible_datasets(user: Any):
    return Dataset.objects.filter(visible_filter(user))


def visible_experiments(user: Any):
    return Experiment.objects.filter(visible_filter(user))


def can_change(user: Any, dataset: Dataset) -> bool:
    return can_cancel(user, dataset.owner_id)
