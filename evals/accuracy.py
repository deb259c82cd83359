"""Each dataset's execution accuracy over its experiments, for the dashboard's chart.

Accuracy is ``evals.experiments.summarize``'s: the share of an experiment's items with expected
SQL whose execution verdict is ``equal``, counted here in one grouped query over the rows (so a
running experiment has its accuracy so far too).
"""

from __future__ import annotations

from typing import Any

from django.db.models import Count, Q, QuerySet

from agents.execution_accuracy import Outcome
from evals.models import Experiment, ExperimentItem

# The most recent experiments charted: the chart is about a trend, and the query stays bounded.
MAX_EXPERIMENTS = 500


def accuracy_series(experiments: QuerySet[Experiment]) -> dict[str, Any]:
    """What ``static/traces/dashboard.js`` draws: experiment start times (Unix seconds, ascending)
    and, per dataset, its accuracy at each (None where another dataset's experiment started)."""
    # A row per experiment, the newest MAX_EXPERIMENTS kept here: MariaDB takes no LIMIT in an IN
    # subquery, and the rows are per experiment, not per item.
    rows = list(
        ExperimentItem.objects.filter(experiment__in=experiments.values("pk"))
        .exclude(item__expected_sql="")
        .values("experiment_id", "experiment__started_at", "experiment__dataset_id", "experiment__dataset__name")
        .annotate(judged=Count("id"), equal=Count("id", filter=Q(execution=Outcome.EQUAL)))
        .order_by("experiment__started_at", "experiment_id")
    )[-MAX_EXPERIMENTS:]
    x = [int(row["experiment__started_at"].timestamp()) for row in rows]
    series: dict[int, dict[str, Any]] = {}
    for index, row in enumerate(rows):
        dataset = series.setdefault(
            row["experiment__dataset_id"],
            {
                "dataset": row["experiment__dataset_id"],
                "label": row["experiment__dataset__name"],
                "values": [None] * len(rows),
            },
        )
        dataset["values"][index] = round(row["equal"] / row["judged"], 4)
    experiment_ids = [row["experiment_id"] for row in rows]
    return {"x": x, "experiments": experiment_ids, "series": sorted(series.values(), key=lambda s: s["label"])}
