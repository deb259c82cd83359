"""Read-only admin over the trace history: recorded data is never added or edited here."""

from django.contrib import admin
from django.utils.html import format_html

from traces import protocol
from traces.models import Event, Run, Trace


class ReadOnlyMixin:
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class RunInline(ReadOnlyMixin, admin.TabularInline):
    model = Run
    fields = ["name", "run_type", "status", "start_time", "duration_ms", "total_tokens", "error_type"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True


@admin.register(Trace)
class TraceAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["started_at", "short_request", "status", "agent_name", "model", "source", "duration_ms", "total_tokens"]
    list_filter = ["status", "agent_name", "source", ("started_at", admin.DateFieldListFilter)]
    search_fields = ["request", "final_response"]
    date_hierarchy = None
    list_select_related = False
    show_full_result_count = False  # one COUNT(*) per page, not two
    readonly_fields = [f.name for f in Trace._meta.fields]
    inlines = [RunInline]

    @admin.display(description="Question", ordering="request")
    def short_request(self, obj: Trace) -> str:
        return obj.request[:80]


@admin.register(Run)
class RunAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["start_time", "name", "run_type", "status", "duration_ms", "trace_id"]
    list_filter = ["run_type", "status"]
    search_fields = ["=trace__id", "name"]
    show_full_result_count = False
    readonly_fields = [f.name for f in Run._meta.fields]


@admin.register(Event)
class EventAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["timestamp", "trace_id", "seq", "event_type", "message_id"]
    list_filter = ["event_type"]
    search_fields = ["=trace__id", "message_id"]
    show_full_result_count = False
    fields = ["trace", "seq", "event_type", "timestamp", "message_id", "run_id", "pretty_envelope"]
    readonly_fields = fields

    @admin.display(description="Envelope")
    def pretty_envelope(self, obj: Event):
        import json

        text = json.dumps(protocol.loads(obj.envelope), indent=2, ensure_ascii=False)
        return format_html("<details open><summary>JSON</summary><pre>{}</pre></details>", text)
