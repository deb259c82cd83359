"""Datasets of questions with what a right answer holds, and experiments that run a dataset's
questions through the agent, each item an ordinary trace judged against its item."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from traces.models import Trace


class DatasetQuerySet(models.QuerySet):
    def named(self, name: str, owner_id: int | None):
        """The dataset called ``name`` of ``owner_id`` (None: of nobody)."""
        return (
            self.filter(name=name, owner_id=owner_id)
            if owner_id is not None
            else self.filter(name=name, owner__isnull=True)
        )


class Dataset(models.Model):
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="datasets"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = DatasetQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            # A name is unique per owner: commands find a dataset by it. (Among the datasets nobody
            # owns, NULL owners differ for the database: ``DatasetQuerySet.named`` keeps those unique.)
            models.UniqueConstraint(fields=["owner", "name"], name="dataset_owner_name_uniq"),
        ]

    def __str__(self) -> str:
        return self.name


class DatasetItem(models.Model):
    """A question, and optionally what judges the agent's answer to it: the SQL whose result its
    SQL must give (execution accuracy), a text its answer must contain (case-insensitive)."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="items")
    question = models.TextField()
    expected_sql = models.TextField(blank=True)
    expected_answer = models.TextField(blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    source_trace = models.ForeignKey(
        Trace, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", help_text="The trace it came from."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.question[:80]

    @property
    def judged(self) -> bool:
        """Whether anything judges it: an item with neither expectation is run but not counted."""
        return bool(self.expected_sql or self.expected_answer)


class Experiment(models.Model):
    """One run of a dataset's items through the agent, with one configuration."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        FINISHED = "finished", "Finished"
        INTERRUPTED = "interrupted", "Interrupted"

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="experiments")
    name = models.CharField(max_length=200)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="experiments"
    )
    model = models.CharField(max_length=100, blank=True)
    max_steps = models.PositiveIntegerField(null=True, blank=True)
    concurrency = models.PositiveSmallIntegerField(default=4)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    summary = models.JSONField(default=dict, blank=True, help_text="Accuracy, latency, tokens and cost, at its end.")

    class Meta:
        ordering = ["-started_at"]
        indexes = [
            # A dataset's experiments, newest first (its page, and --compare-to by name).
            models.Index(fields=["dataset", "-started_at"], name="experiment_dataset_started_idx"),
        ]

    def __str__(self) -> str:
        return self.name


class ExperimentItem(models.Model):
    """One dataset item as an experiment ran it: its trace and the verdicts on it."""

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="results")
    item = models.ForeignKey(DatasetItem, on_delete=models.CASCADE, related_name="results")
    trace = models.ForeignKey(Trace, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    passed = models.BooleanField(null=True, help_text="Null: nothing judges the item.")
    execution = models.CharField(max_length=32, blank=True, help_text="The execution-accuracy verdict.")
    reason = models.TextField(blank=True)
    answer_matched = models.BooleanField(null=True)
    sql = models.TextField(blank=True, help_text="The agent's SQL the verdict used.")
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    total_tokens = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(max_digits=14, decimal_places=8, default=0)
    steps = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["item_id"]
        constraints = [models.UniqueConstraint(fields=["experiment", "item"], name="experiment_item_uniq")]

    def __str__(self) -> str:
        return f"{self.experiment} / {self.item}"
