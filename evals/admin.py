"""Datasets are edited in the admin; experiments are a record of runs, read-only like the traces."""

from __future__ import annotations

from django.contrib import admin

from evals.models import Dataset, DatasetItem, Experiment, ExperimentItem


class DatasetItemInline(admin.TabularInline):
    model = DatasetItem
    fields = ("question", "expected_sql", "expected_answer", "metadata")
    extra = 0


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "created_at")
    search_fields = ("name", "description")
    list_filter = ("owner",)
    inlines = [DatasetItemInline]


class ReadOnly:
    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class ExperimentItemInline(ReadOnly, admin.TabularInline):
    model = ExperimentItem
    fields = ("item", "passed", "execution", "answer_matched", "sql", "duration_ms", "total_tokens", "trace")
    readonly_fields = fields
    extra = 0


@admin.register(Experiment)
class ExperimentAdmin(ReadOnly, admin.ModelAdmin):
    list_display = ("name", "dataset", "model", "status", "started_at")
    list_filter = ("status", "started_at")
    search_fields = ("name",)
    inlines = [ExperimentItemInline]
