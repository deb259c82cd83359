"""The trace history: traces, their run tree, and the ordered event log.

The rows of Trace and Run are a projection of the event log (``traces.store.projection``), kept
up to date as events are stored; the events are the source of truth and hold the exact envelopes
that were sent.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from agents.events import EventType, RunStatus, RunType, TraceOutcome
from traces.access import visible_filter


def _start_of(day: dt.date) -> dt.datetime:
    return timezone.make_aware(dt.datetime.combine(day, dt.time.min))


class TraceQuerySet(models.QuerySet):
    def running(self):
        return self.filter(status=Trace.Status.RUNNING)

    def finished(self):
        return self.exclude(status=Trace.Status.RUNNING)

    def search(self, text: str):
        text = text.strip()
        if not text:
            return self
        return self.filter(Q(request__icontains=text) | Q(final_response__icontains=text))

    def started_between(self, since: dt.date | None, until: dt.date | None):
        """Started on ``since`` or later and on ``until`` or earlier (whole days, in the current time zone)."""
        traces = self
        if since is not None:
            traces = traces.filter(started_at__gte=_start_of(since))
        if until is not None:
            traces = traces.filter(started_at__lt=_start_of(until + dt.timedelta(days=1)))
        return traces

    def for_session(self, session_id: str):
        return self.filter(session_id=session_id)

    def totals(self, limit: int) -> dict:
        """Count, tokens, cost and errors of the newest ``limit`` traces, and ``more``: whether there
        are older ones. One aggregate over (started_at, id) order, and a second query only when
        there are ``limit``: a session of half a million traces took seconds to sum on SQLite."""
        newest = self.order_by("-started_at", "-id")[:limit]
        totals = newest.aggregate(
            count=models.Count("pk"),
            tokens=Coalesce(models.Sum("total_tokens"), 0),
            cost=Coalesce(models.Sum("total_cost"), Decimal(0)),
            errors=models.Count("pk", filter=Q(status=Trace.Status.ERROR)),
        )
        totals["more"] = totals["count"] >= limit and self.order_by("-started_at", "-id")[limit:].exists()
        return totals

    def visible_to(self, user):
        """The traces ``user`` may see (``traces.access``)."""
        return self.filter(visible_filter(user))


class Trace(models.Model):
    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        SUCCESS = TraceOutcome.SUCCESS, "Success"
        ERROR = TraceOutcome.ERROR, "Error"
        CANCELLED = TraceOutcome.CANCELLED, "Cancelled"

    class Source(models.TextChoices):
        WEBSOCKET = "websocket", "WebSocket"
        CLI = "cli", "Command line"
        IMPORT = "import", "Import"
        OTEL = "otel", "OpenTelemetry"
        SDK = "sdk", "Agents SDK / client"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    session_id = models.CharField(max_length=100, blank=True)
    agent_name = models.CharField(max_length=100)
    request = models.TextField(help_text="The question the agent was asked.")
    final_response = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    max_steps = models.PositiveIntegerField(default=10)
    current_step = models.PositiveIntegerField(default=0)
    model = models.CharField(max_length=100, blank=True)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.WEBSOCKET)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="traces"
    )
    rerun_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="reruns")
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    total_tokens = models.PositiveIntegerField(default=0)
    total_cost = models.DecimalField(max_digits=14, decimal_places=8, default=0)
    total_runs = models.PositiveIntegerField(default=0)
    last_seq = models.PositiveIntegerField(default=0, help_text="The seq of the last stored event.")
    error = models.TextField(blank=True)
    error_type = models.CharField(max_length=100, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    runner = models.CharField(max_length=32, blank=True, help_text="The process that runs (or ran) it: a Runner's id.")
    feedback = models.SmallIntegerField(null=True, blank=True, choices=[(1, "👍 Good"), (-1, "👎 Bad")])
    feedback_comment = models.TextField(blank=True)

    objects = TraceQuerySet.as_manager()

    class Meta:
        ordering = ["-started_at"]
        indexes = [
            # History list, newest first, and keyset pagination on (started_at, id).
            models.Index(fields=["-started_at", "-id"], name="trace_started_idx"),
            # History filtered by status (e.g. errors), and Trace.objects.running().
            models.Index(fields=["status", "-started_at"], name="trace_status_started_idx"),
            # Session view and the session's active trace on connect.
            models.Index(fields=["session_id", "-started_at"], name="trace_session_started_idx"),
            # History filtered by agent.
            models.Index(fields=["agent_name", "-started_at"], name="trace_agent_started_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.request[:60]} ({self.status})"


class Runner(models.Model):
    """A process that runs agents (a server process, a ``runagent`` command) and when it was last
    seen alive. A running trace whose runner has not been seen for a while was interrupted."""

    id = models.CharField(primary_key=True, max_length=32)
    host = models.CharField(max_length=200)
    pid = models.PositiveIntegerField()
    kind = models.CharField(max_length=16)  # server | cli
    started_at = models.DateTimeField()
    seen_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.kind} {self.host}:{self.pid}"


class Run(models.Model):
    """One node of the run tree: an agent step, or a think or tool run under a step."""

    class Type(models.TextChoices):
        AGENT = RunType.AGENT, "Agent step"
        THINK = RunType.THINK, "Think"
        TOOL = RunType.TOOL, "Tool"

    class Status(models.TextChoices):
        RUNNING = RunStatus.RUNNING, "Running"
        SUCCESS = RunStatus.SUCCESS, "Success"
        ERROR = RunStatus.ERROR, "Error"
        CANCELLED = RunStatus.CANCELLED, "Cancelled"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Looked up through run_trace_start_idx, which starts with it: one index less to write per run.
    trace = models.ForeignKey(Trace, on_delete=models.CASCADE, related_name="runs", db_index=False)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="children")
    name = models.CharField(max_length=200)
    run_type = models.CharField(max_length=16, choices=Type.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    start_time = models.DateTimeField()
    end_time = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    inputs = models.JSONField(default=dict, blank=True)
    outputs = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    error_type = models.CharField(max_length=100, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    total_tokens = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(max_digits=14, decimal_places=8, default=0, help_text="USD, for a model call.")

    class Meta:
        ordering = ["start_time"]
        indexes = [
            # The run tree and waterfall of one trace, in time order.
            models.Index(fields=["trace", "start_time"], name="run_trace_start_idx"),
            # Dashboard: tool calls by tool and status.
            models.Index(fields=["run_type", "name", "status"], name="run_type_name_status_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.run_type}, {self.status})"


class Event(models.Model):
    """One trace event exactly as it was sent, numbered 1, 2, 3... per trace with no gaps."""

    # Looked up through event_trace_seq_uniq, which starts with it: one index less to write per event.
    trace = models.ForeignKey(Trace, on_delete=models.CASCADE, related_name="events", db_index=False)
    seq = models.PositiveIntegerField()
    event_type = models.CharField(max_length=40, choices=[(t.value, t.value) for t in EventType])
    timestamp = models.DateTimeField()
    message_id = models.CharField(max_length=120)
    run_id = models.UUIDField(null=True, blank=True)
    envelope = models.TextField(help_text="The JSON message as sent to clients.")

    class Meta:
        ordering = ["trace", "seq"]
        constraints = [
            # No duplicate seq per trace; also the index that resume (seq > after_seq) and
            # replay (ordered by seq) read through.
            models.UniqueConstraint(fields=["trace", "seq"], name="event_trace_seq_uniq"),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.event_type}"


class ScoreQuerySet(models.QuerySet):
    def traces_matching(self, name: str, **conditions):
        """The ids of the traces with a score ``name`` meeting ``conditions`` (field lookups), as a subquery."""
        return self.filter(name=name, **conditions).values("trace_id")


class Score(models.Model):
    """A judgement of a trace, or of one of its runs: a name and a value (a number, a boolean or a
    category), who gave it (``source``) and why (``comment``). ``traces.scores.record_score`` writes
    them: one per trace, run, name and source."""

    class DataType(models.TextChoices):
        NUMERIC = "numeric", "Numeric"
        BOOLEAN = "boolean", "Boolean"
        CATEGORICAL = "categorical", "Categorical"

    class Source(models.TextChoices):
        EXECUTION = "execution", "Execution"
        ANSWER = "answer", "Answer"
        JUDGE = "judge", "Judge"
        HUMAN = "human", "Human"
        API = "api", "API"

    # Looked up through score_trace_name_idx, which starts with it: one index less to write per score.
    trace = models.ForeignKey(Trace, on_delete=models.CASCADE, related_name="scores", db_index=False)
    run = models.ForeignKey(Run, null=True, blank=True, on_delete=models.CASCADE, related_name="scores")
    name = models.CharField(max_length=100)
    data_type = models.CharField(max_length=16, choices=DataType.choices)
    # A number, or a boolean as 1 or 0: the history's range filter reads both from here.
    number = models.FloatField(null=True, blank=True)
    category = models.CharField(max_length=100, blank=True)
    source = models.CharField(max_length=16, choices=Source.choices)
    comment = models.TextField(blank=True)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    objects = ScoreQuerySet.as_manager()

    class Meta:
        ordering = ["name", "source", "created_at"]
        indexes = [
            # A trace's scores (its page, the scores API), and finding the score a new one replaces.
            models.Index(fields=["trace", "name"], name="score_trace_name_idx"),
            # The history filtered by a score: its traces by name and value, read from the index alone.
            models.Index(fields=["name", "number", "trace"], name="score_name_number_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.name} = {self.value} ({self.source})"

    @property
    def value(self) -> bool | float | str | None:
        if self.data_type == Score.DataType.BOOLEAN:
            return self.number == 1
        if self.data_type == Score.DataType.NUMERIC:
            return self.number
        return self.category


class ApiTokenQuerySet(models.QuerySet):
    def active(self):
        return self.filter(revoked_at__isnull=True)


class ApiToken(models.Model):
    """A secret for non-browser clients (``?token=``). Only its SHA-256 is stored."""

    PREFIX = "ts_"
    LAST_USED_EVERY = dt.timedelta(minutes=1)  # how fresh ``last_used_at`` is kept

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, help_text="What the token is for, e.g. 'ci dashboard'.")
    key_prefix = models.CharField(max_length=12, help_text="The first characters, to tell tokens apart.")
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.key_prefix}…)"

    @staticmethod
    def hash(key: str) -> str:
        import hashlib

        return hashlib.sha256(key.encode()).hexdigest()

    @classmethod
    def issue(cls, user, name: str) -> tuple[ApiToken, str]:
        """Create a token; the key is returned once and never stored."""
        import secrets

        key = cls.PREFIX + secrets.token_urlsafe(32)
        token = cls.objects.create(user=user, name=name, key_prefix=key[:10], key_hash=cls.hash(key))
        return token, key

    @classmethod
    def authenticate(cls, key: str):
        """The active user the key belongs to, or None."""
        if not key or not key.startswith(cls.PREFIX) or len(key) > 200:
            return None
        token = cls.objects.active().select_related("user").filter(key_hash=cls.hash(key)).first()
        if token is None or not token.user.is_active:
            return None
        now = timezone.now()
        if token.last_used_at is None or now - token.last_used_at >= cls.LAST_USED_EVERY:
            # Said once a minute, not on every request: an exporter sends several a second, and
            # each update was a write that waited for the history's writer on SQLite.
            cls.objects.filter(pk=token.pk).update(last_used_at=now)
        return token.user
