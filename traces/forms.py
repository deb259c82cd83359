"""The history filters, validated by a form: a bad value is shown as the field's error and left
out, and the valid filters (the search among them) still apply."""

from __future__ import annotations

import datetime as dt

from django import forms
from django.db.models import Q

from traces.models import Trace

SORTS = {
    "newest": ["-started_at", "-id"],
    "oldest": ["started_at", "id"],
    "slowest": ["-duration_ms", "-id"],
    "tokens": ["-total_tokens", "-id"],
}


# Dates a filter can take: wide enough for any trace, narrow enough that a day's bounds exist in every
# time zone (9999-12-31 has no next day to end it).
FIRST_DAY, LAST_DAY = dt.date(1970, 1, 1), dt.date(9998, 12, 31)


class DayField(forms.DateField):
    widget = forms.DateInput(attrs={"type": "date"})

    def to_python(self, value):
        day = super().to_python(value)
        if day is not None and not FIRST_DAY <= day <= LAST_DAY:
            raise forms.ValidationError(f"Enter a date between {FIRST_DAY} and {LAST_DAY}.", code="out_of_range")
        return day


class HistoryFilter(forms.Form):
    q = forms.CharField(required=False, max_length=200, label="Search")
    status = forms.ChoiceField(required=False, choices=[("", "Any status"), *Trace.Status.choices])
    agent = forms.CharField(required=False, max_length=100)
    model = forms.CharField(required=False, max_length=100)
    source = forms.ChoiceField(required=False, choices=[("", "Any source"), *Trace.Source.choices])
    session = forms.CharField(required=False, max_length=100)
    since = DayField(required=False)
    until = DayField(required=False)
    min_ms = forms.IntegerField(required=False, min_value=0, label="Slower than (ms)")
    # The declarative metaclass moves fields off the class, so this does not hide BaseForm.has_error().
    has_error = forms.BooleanField(required=False, label="Has an error")  # type: ignore[assignment]
    feedback = forms.ChoiceField(
        required=False, choices=[("", "Any feedback"), ("up", "👍"), ("down", "👎"), ("none", "None")]
    )
    sort = forms.ChoiceField(required=False, choices=[(key, key.title()) for key in SORTS])

    @property
    def valid_data(self) -> dict:
        """The fields that are valid, each with its value or its empty value: a bad one is left out."""
        if not self.is_bound:
            return {}
        self.is_valid()  # fills cleaned_data with the valid fields, errors with the others
        return self.cleaned_data

    @property
    def newest_first(self) -> bool:
        return self.valid_data.get("sort") in (None, "", "newest")

    def apply(self, traces):
        data = self.valid_data
        traces = traces.search(data.get("q") or "")
        for field, key in (
            ("status", "status"),
            ("agent_name", "agent"),
            ("model", "model"),
            ("source", "source"),
            ("session_id", "session"),
        ):
            if data.get(key):
                traces = traces.filter(**{field: data[key]})
        traces = traces.started_between(data.get("since"), data.get("until"))
        if data.get("min_ms") is not None:
            traces = traces.filter(duration_ms__gte=data["min_ms"])
        if data.get("has_error"):
            traces = traces.filter(Q(status=Trace.Status.ERROR) | ~Q(error=""))
        feedback = {"up": 1, "down": -1}.get(data.get("feedback") or "")
        if feedback:
            traces = traces.filter(feedback=feedback)
        elif data.get("feedback") == "none":
            traces = traces.filter(feedback__isnull=True)
        return traces.order_by(*SORTS[data.get("sort") or "newest"])
