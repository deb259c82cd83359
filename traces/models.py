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
from django.db import connections, models
from django.db.models import Q, Subquery, Value
from django.db.models.expressions import RawSQL
from django.db.models.functions import Coalesce
from django.utils import timezone

from agents.events import EventType, RunStatus, RunType, TraceOutcome
from traces import search_index
from traces.access import visible_filter

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _contains(text: str) -> Q:
    return Q(request__icontains=text) | Q(final_response__icontains=text)


def _start_of(day: dt.date) -> dt.datetime:
    return timezone.make_aware(dt.datetime.combine(day, dt.time.min))


class TraceQuerySet(models.QuerySet):
    def running(self):
        return self.filter(status=Trace.Status.RUNNING)

    def finished(self):
        return self.exclude(status=Trace.Status.RUNNING)

    def search(self, text: str, limit: int | None = None):
        """A case-insensitive substring of the question or the answer. Found through the search
        index (``traces.search_index``), reading at most ``limit`` matches from it when given; a
        term shorter than the index serves, or a database without one, is looked for among the
        newest traces only (``search_plan`` says which)."""
        text = text.strip()
        if not text:
            return self
        traces = self.filter(_contains(text))
        plan = self.search_plan(text)
        if plan.indexed:
            vendor = connections[self.db].vendor
            if limit is None:
                sql, params = search_index.matching_ids(text, vendor)
            else:
                sql, params = search_index.limited_ids(text, vendor, limit)
            return traces.filter(pk__in=RawSQL(sql, params))
        # The oldest start among the newest ``scan_rows`` traces (all of them, when there are fewer).
        newest = Trace.objects.using(self.db).order_by("-started_at", "-id").values("started_at")
        oldest_scanned = Subquery(newest[plan.scan_rows - 1 : plan.scan_rows])
        return traces.filter(
            started_at__gte=Coalesce(oldest_scanned, Value(EPOCH), output_field=models.DateTimeField())
        )

    def search_page(self, text: str, size: int, *, oldest_first: bool = False) -> tuple[list, bool]:
        """The first ``size`` of these traces matching ``text``, newest first (or oldest first),
        and whether more may match than were found (the index had more than ``ID_LIMIT``).

        Its cost does not grow with the number of matches: a rare term (no more than ``FEW``
        matches in the index) is looked up in the index; for a common one the first
        ``SCAN_FIRST`` traces in that order are checked themselves, which finds its page at
        once, and only when they hold fewer than ``size`` matches is the index asked for the
        rest, among the traces past them (reading at most ``ID_LIMIT`` matches)."""
        text = text.strip()
        order = ("started_at", "id") if oldest_first else ("-started_at", "-id")
        if (
            not text
            or not self.search_plan(text).indexed
            or not search_index.more_than(text, search_index.FEW, self.db)  # a rare term
        ):
            return list(self.search(text).order_by(*order)[:size]), False
        scan = search_index.SCAN_FIRST
        edge = self.order_by(*order).values_list("started_at", "id")[scan - 1 : scan].first()
        if edge is None:  # fewer traces than a scan reads: the scan is the whole answer
            return list(self.filter(_contains(text)).order_by(*order)[:size]), False
        started_at, key = edge
        if oldest_first:
            scanned = Q(started_at__lt=started_at) | Q(started_at=started_at, id__lte=key)
            past = Q(started_at__gt=started_at) | Q(started_at=started_at, id__gt=key)
        else:
            scanned = Q(started_at__gt=started_at) | Q(started_at=started_at, id__gte=key)
            past = Q(started_at__lt=started_at) | Q(started_at=started_at, id__lt=key)
        rows = list(self.filter(scanned).filter(_contains(text)).order_by(*order)[:size])
        if len(rows) == size:
            return rows, False
        limit = search_index.ID_LIMIT
        rows += self.filter(past).search(text, limit).order_by(*order)[: size - len(rows)]
        return rows, search_index.more_than(text, limit, self.db)

    def search_plan(self, text: str) -> search_index.Plan:
        return search_index.plan(text.strip(), self.db)

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
    # Looked up through trace_owner_started_idx, which starts with it: one index less to write per trace.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="traces",
        db_index=False,
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
            # A user's traces, newest first: the dashboard's most frequent questions (its newest
            # traces of a range), and the history of a user who is not staff.
            models.Index(fields=["owner", "-started_at"], name="trace_owner_started_idx"),
            # History filtered by "slower than" (a few traces in a hundred: its count read every
            # trace without it), and sorted slowest first.
            models.Index(fields=["-duration_ms", "-id"], name="trace_duration_idx"),
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
    # Looked up through run_parent_start_idx, which starts with it.
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="children", db_index=False
    )
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
            # The run tree and waterfall of one trace, in (start_time, id) order; with the name, so
            # a search of the trace by name is checked in the index and reads only the hits' rows.
            models.Index(fields=["trace", "start_time", "id", "name"], name="run_trace_start_idx"),
            # A run's children a page at a time, in (start_time, id) order, and how many it has
            # (traces.pages.tree); it replaces the parent key's own index.
            models.Index(fields=["parent", "start_time", "id"], name="run_parent_start_idx"),
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


class TraceHour(models.Model):
    """The traces that started in one UTC hour, of one owner and one model, summed: what the
    dashboard reads for the hours ``traces.store.rollups`` has sealed.

    ``latency`` is a histogram of ``duration_ms`` over ``traces.store.rollups.LATENCY_BUCKETS``, as
    a JSON object from bucket index to count with the empty buckets left out: it is only ever summed
    in Python, never filtered in SQL, and an hour's durations fill a few dozen of the ~370 buckets.
    """

    hour = models.DateTimeField()
    # Not a constraint: a user's deletion marks their hours stale, and the sweep moves their
    # traces (now nobody's) to the null owner; until then these rows name a user who is gone. Its
    # index finds those hours.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    model = models.CharField(max_length=100, blank=True)
    running = models.PositiveIntegerField(default=0)
    success = models.PositiveIntegerField(default=0)
    error = models.PositiveIntegerField(default=0)
    cancelled = models.PositiveIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    total_tokens = models.BigIntegerField(default=0)
    cost = models.DecimalField(max_digits=20, decimal_places=8, default=0)
    duration_ms = models.BigIntegerField(default=0)
    timed = models.PositiveIntegerField(default=0, help_text="Traces with a duration.")
    latency = models.JSONField(default=dict)

    class Meta:
        indexes = [
            # The dashboard: the sealed hours of a range; and recomputing an hour.
            models.Index(fields=["hour", "owner"], name="tracehour_hour_owner_idx"),
        ]


class LatencyDay(models.Model):
    """The ``TraceHour.latency`` histograms of a sealed UTC day of one owner, summed: a range of
    90 days reads 90 of them per owner rather than 2,160 hours' by model."""

    day = models.DateTimeField()
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,  # read through the (day or hour, owner) index
        related_name="+",
    )
    latency = models.JSONField(default=dict)

    class Meta:
        indexes = [
            # The dashboard: the whole days of a range.
            models.Index(fields=["day", "owner"], name="latencyday_day_owner_idx"),
        ]


class ToolHour(models.Model):
    """The tool calls of the traces that started in one UTC hour, of one owner, by tool name.

    ``slowest`` holds, for the ``run_sql`` tool, the ``[duration_ms, run id]`` of its
    ``traces.store.rollups.SLOWEST`` slowest calls with a duration: the dashboard's slowest SQL of
    a range is among those of its ten hours with the largest ``slowest_ms``."""

    hour = models.DateTimeField()
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,  # read through the (day or hour, owner) index
        related_name="+",
    )
    name = models.CharField(max_length=200)
    calls = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    duration_ms = models.BigIntegerField(default=0)
    timed = models.PositiveIntegerField(default=0, help_text="Calls with a duration.")
    slowest = models.JSONField(default=list)
    slowest_ms = models.PositiveIntegerField(null=True, help_text="The first of ``slowest``.")

    class Meta:
        indexes = [
            # The dashboard: the sealed hours of a range; and recomputing an hour.
            models.Index(fields=["hour", "owner"], name="toolhour_hour_owner_idx"),
        ]


class ToolDay(models.Model):
    """The ``ToolHour`` rows of a sealed UTC day of one owner and tool, summed (``slowest``: the
    day's ten slowest ``run_sql`` calls)."""

    day = models.DateTimeField()
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,  # read through the (day or hour, owner) index
        related_name="+",
    )
    name = models.CharField(max_length=200)
    calls = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    duration_ms = models.BigIntegerField(default=0)
    timed = models.PositiveIntegerField(default=0)
    slowest = models.JSONField(default=list)
    slowest_ms = models.PositiveIntegerField(null=True)

    class Meta:
        indexes = [
            # The dashboard: the whole days of a range.
            models.Index(fields=["day", "owner"], name="toolday_day_owner_idx"),
        ]


class RollupSeal(models.Model):
    """One row: the hours before ``sealed_until`` are summed in ``TraceHour`` and ``ToolHour``
    (except the ``StaleHour`` ones); later hours are read from the traces themselves."""

    sealed_until = models.DateTimeField(null=True)


class StaleHour(models.Model):
    """A sealed hour whose traces changed since it was summed: read from the traces until the sweep
    sums it again."""

    hour = models.DateTimeField(unique=True)
