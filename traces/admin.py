"""Read-only admin over the trace history: recorded data is never added or edited here.

Its lists stay fast over millions of rows: each is ordered the way an index reads, counts no
further than ``COUNT_LIMIT`` rows ("10,000+ traces"), and filters on columns that are indexed or
have fixed choices (a filter of any other column lists its values with a scan of the table).
"""

from functools import cached_property

from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.db import transaction
from django.utils import timezone
from django.utils.html import format_html

from traces import protocol
from traces.access import visible_filter
from traces.models import ApiToken, Event, Run, Score, Trace
from traces.pages.pagination import bounded_count
from traces.store import rollups


class BoundedPaginator(Paginator):
    """Counts at most ``COUNT_LIMIT`` rows: an exact COUNT of ten million events takes a second.
    Past the limit the list shows "10,000+" and its last page is the limit's."""

    @cached_property
    def total(self):
        return bounded_count(self.object_list)

    @cached_property
    def count(self) -> int:
        return self.total.count

    @property
    def more(self) -> bool:
        return self.total.more


class ReadOnlyMixin:
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class VisibleTracesAdmin(admin.ModelAdmin):
    """Only what ``traces.access`` lets the user see (staff see every trace under today's rule).
    A delete makes the dashboard's sums of the hours of the traces it touches stale."""

    trace_prefix = ""  # the path from the model to its trace
    paginator = BoundedPaginator
    show_full_result_count = False  # no second, unfiltered count
    date_hierarchy = None  # its links are a scan of the table's dates

    def get_queryset(self, request):
        return super().get_queryset(request).filter(visible_filter(request.user, self.trace_prefix))

    def delete_model(self, request, obj) -> None:
        with transaction.atomic():
            self._mark_stale(type(obj).objects.filter(pk=obj.pk))
            super().delete_model(request, obj)

    def delete_queryset(self, request, queryset) -> None:
        with transaction.atomic():
            self._mark_stale(queryset)
            super().delete_queryset(request, queryset)

    def _mark_stale(self, queryset) -> None:
        rollups.mark_stale(queryset.values_list(f"{self.trace_prefix}started_at", flat=True))


RUN_INLINE_FIELDS = ("name", "run_type", "status", "start_time", "duration_ms", "total_tokens", "error_type")
EVENT_FIELDS = ("trace", "seq", "event_type", "timestamp", "message_id", "run_id", "pretty_envelope")


class RunInline(ReadOnlyMixin, admin.TabularInline):
    model = Run
    fields = RUN_INLINE_FIELDS
    readonly_fields = RUN_INLINE_FIELDS
    extra = 0
    can_delete = False
    show_change_link = True


SCORE_FIELDS = ("name", "shown_value", "data_type", "source", "run", "author", "created_at", "long_comment")


class ScoreDisplay:
    @admin.display(description="Value")
    def shown_value(self, obj: Score):
        return obj.value

    @admin.display(description="Comment")
    def long_comment(self, obj: Score):
        if not obj.comment:
            return "–"
        return format_html("<details><summary>{}</summary>{}</details>", obj.comment[:60], obj.comment)


class ScoreInline(ReadOnlyMixin, ScoreDisplay, admin.TabularInline):
    model = Score
    fields = SCORE_FIELDS
    readonly_fields = SCORE_FIELDS
    extra = 0
    can_delete = False
    show_change_link = True

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("run", "author").defer("run__inputs", "run__outputs")


@admin.register(Trace)
class TraceAdmin(ReadOnlyMixin, VisibleTracesAdmin):
    list_display = [
        "started_at",
        "short_request",
        "status",
        "agent_name",
        "model",
        "source",
        "duration_ms",
        "total_tokens",
    ]
    # Not agent_name: its filter lists every agent with a scan of the traces (?agent_name= still works).
    list_filter = ["status", "source", ("started_at", admin.DateFieldListFilter)]
    search_fields = ["request", "final_response"]
    ordering = ["-started_at", "-id"]  # trace_started_idx
    readonly_fields = [f.name for f in Trace._meta.fields]
    inlines = [ScoreInline, RunInline]

    @admin.display(description="Question", ordering="request")
    def short_request(self, obj: Trace) -> str:
        return obj.request[:80]


@admin.register(Run)
class RunAdmin(ReadOnlyMixin, VisibleTracesAdmin):
    trace_prefix = "trace__"
    list_display = ["start_time", "name", "run_type", "status", "duration_ms", "trace_id"]
    list_filter = ["run_type", "status"]
    search_fields = ["=trace__id", "name"]
    # run_trace_start_idx (whose rows end with the id on MariaDB), not a sort of every run by time.
    ordering = ["trace_id", "start_time", "id"]
    readonly_fields = [f.name for f in Run._meta.fields]


@admin.register(Score)
class ScoreAdmin(ReadOnlyMixin, ScoreDisplay, VisibleTracesAdmin):
    trace_prefix = "trace__"
    list_display = ["created_at", "name", "shown_value", "source", "trace_id", "run_id"]
    list_filter = ["source", "data_type", ("created_at", admin.DateFieldListFilter)]
    search_fields = ["=trace__id", "name"]
    fields = ("trace", *SCORE_FIELDS)
    readonly_fields = fields


@admin.register(Event)
class EventAdmin(ReadOnlyMixin, VisibleTracesAdmin):
    trace_prefix = "trace__"
    list_display = ["timestamp", "trace_id", "seq", "event_type", "message_id"]
    list_filter = ["event_type"]
    search_fields = ["=trace__id", "message_id"]
    ordering = ["-id"]  # newest first, by the primary key
    fields = EVENT_FIELDS
    readonly_fields = EVENT_FIELDS

    @admin.display(description="Envelope")
    def pretty_envelope(self, obj: Event):
        import json

        text = json.dumps(protocol.loads(obj.envelope), indent=2, ensure_ascii=False)
        return format_html("<details open><summary>JSON</summary><pre>{}</pre></details>", text)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens are issued here (the key is shown once, on save) and revoked, never edited."""

    list_display = ["key_prefix", "name", "user", "created_at", "last_used_at", "revoked_at"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "user__username", "key_prefix"]
    fields = ["user", "name"]
    actions = ["revoke"]

    def has_change_permission(self, request, obj=None):
        return obj is None and super().has_change_permission(request, obj)

    def save_model(self, request, obj, form, change):
        token, key = ApiToken.issue(obj.user, obj.name)
        obj.pk = token.pk
        messages.warning(request, f"Token for {obj.user}: {key} — copy it now, it is not shown again.")

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request, queryset):
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {count} token(s).")
