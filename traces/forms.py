"""The history filters, validated by a form so bad query strings are ignored, not errors."""

from __future__ import annotations

from django import forms
from django.db.models import Q

from traces.models import Trace

SORTS = {
    "newest": ["-started_at", "-id"],
    "oldest": ["started_at", "id"],
    "slowest": ["-duration_ms", "-id"],
    "tokens": ["-total_tokens", "-id"],
}


class HistoryFilter(forms.Form):
    q = forms.CharField(required=False, max_length=200, label="Search")
    status = forms.ChoiceField(required=False, choices=[("", "Any status"), *Trace.Status.choices])
    agent = forms.CharField(required=False, max_length=100)
    model = forms.CharField(required=False, max_length=100)
    source = forms.ChoiceField(required=False, choices=[("", "Any source"), *Trace.Source.choices])
    session = forms.CharField(required=False, max_length=100)
    since = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    min_ms = forms.IntegerField(required=False, min_value=0, label="Slower than (ms)")
    # The declarative metaclass moves fields off the class, so this does not hide BaseForm.has_error().
    has_error = forms.BooleanField(required=False, label="Has an error")  # type: ignore[assignment]
    feedback = forms.ChoiceField(
        required=False, choices=[("", "Any feedback"), ("up", "👍"), ("down", "👎"), ("none", "None")]
    )
    sort = forms.ChoiceField(required=False, choices=[(key, key.title()) for key in SORTS])

    @property
    def newest_first(self) -> bool:
        return not self.is_bound or not self.is_valid() or self.cleaned_data["sort"] in ("", "newest")

    def apply(self, traces):
        if not self.is_valid():
            return traces.order_by(*SORTS["newest"])
        data = self.cleaned_data
        traces = traces.search(data["q"] or "")
        for field, key in (
            ("status", "status"),
            ("agent_name", "agent"),
            ("model", "model"),
            ("source", "source"),
            ("session_id", "session"),
        ):
            if data[key]:
                traces = traces.filter(**{field: data[key]})
        traces = traces.started_between(data["since"], data["until"])
        if data["min_ms"] is not None:
            traces = traces.filter(duration_ms__gte=data["min_ms"])
        if data["has_error"]:
            traces = traces.filter(Q(status=Trace.Status.ERROR) | ~Q(error=""))
        feedback = {"up": 1, "down": -1}.get(data["feedback"])
        if feedback:
            traces = traces.filter(feedback=feedback)
        elif data["feedback"] == "none":
            traces = traces.filter(feedback__isnull=True)
        return traces.order_by(*SORTS[data["sort"] or "newest"])
