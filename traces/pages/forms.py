"""The forms of the history pages.

The history filters: a bad value is shown as the field's error and left out, and the valid
filters (the search among them) still apply; a score filter is a score's name, and optionally
what it must be (a verdict, a range, a category), all met by one score of that name; where the
search matched is shown as text cut into parts, the matches marked, for the template to escape.
The compare form: two traces by id or by the first characters of an id.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass

from django import forms
from django.db.models import Q

from traces import search_index
from traces.models import Score, Trace

SCORE_CONDITIONS = ("score_verdict", "score_min", "score_max", "score_category")
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
    # A score filter: traces with a score of this name, and, if given, a verdict, a range or a category.
    score = forms.CharField(required=False, max_length=100, label="Score")
    score_verdict = forms.ChoiceField(
        required=False, label="Verdict", choices=[("", "Any verdict"), ("passed", "Passed"), ("failed", "Failed")]
    )
    score_min = forms.FloatField(required=False, label="Score ≥")
    score_max = forms.FloatField(required=False, label="Score ≤")
    score_category = forms.CharField(required=False, max_length=100, label="Category")
    sort = forms.ChoiceField(required=False, choices=[(key, key.title()) for key in SORTS])

    def clean(self) -> dict:
        super().clean()
        data = self.cleaned_data
        if not (data.get("score") or "").strip():
            for key in SCORE_CONDITIONS:
                if data.get(key) not in (None, ""):
                    self.add_error(key, "Name the score to filter by.")
        low, high = data.get("score_min"), data.get("score_max")
        if low is not None and high is not None and low > high:
            self.add_error("score_max", "Give a maximum no lower than the minimum.")
        return data

    @property
    def valid_data(self) -> dict:
        """The fields that are valid, each with its value or its empty value: a bad one is left out."""
        if not self.is_bound:
            return {}
        self.is_valid()  # fills cleaned_data with the valid fields, errors with the others
        return self.cleaned_data

    @property
    def search_term(self) -> str:
        return (self.valid_data.get("q") or "").strip()

    @property
    def search_partial(self) -> search_index.Plan | None:
        """How the search was made when it could not use the index (a short term, or no index on
        this database): it read only the newest ``scan_rows`` traces, so more may match."""
        term = self.search_term
        if not term:
            return None
        plan = Trace.objects.search_plan(term)
        return None if plan.indexed else plan

    @property
    def search_capped(self) -> bool:
        """The index has more matches than a search reads from it (``apply``)."""
        term = self.search_term
        if not term or not Trace.objects.search_plan(term).indexed:
            return False
        return search_index.more_than(term, search_index.ID_LIMIT)

    def where_matched(self, trace: Trace) -> Match | None:
        """Where the search found ``trace``: the question, the answer or both, as excerpts."""
        term = self.search_term
        if not term:
            return None
        match = Match(excerpt(trace.request, term), excerpt(trace.final_response, term))
        return match if match.question or match.answer else None

    @property
    def newest_first(self) -> bool:
        return self.valid_data.get("sort") in (None, "", "newest")

    def apply(self, traces, *, search: bool = True):
        """The traces the filters keep, in the chosen order; the search left out when not ``search``
        (newest first, the page looks its matches up itself: ``TraceQuerySet.search_page``). The
        search reads at most ``ID_LIMIT`` matches from the index (``search_capped`` says when
        there were more): a page in another order then sorts no more than those."""
        data = self.valid_data
        if search:
            traces = traces.search(data.get("q") or "", limit=search_index.ID_LIMIT)
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
        name = (data.get("score") or "").strip()
        if name:
            traces = traces.filter(pk__in=Score.objects.traces_matching(name, **self._score_conditions(data)))
        return traces.order_by(*SORTS[data.get("sort") or "newest"])

    @staticmethod
    def _score_conditions(data: dict) -> dict:
        conditions: dict = {}
        verdict = data.get("score_verdict")
        if verdict:
            conditions |= {"data_type": Score.DataType.BOOLEAN, "number": 1.0 if verdict == "passed" else 0.0}
        if data.get("score_min") is not None:
            conditions["number__gte"] = data["score_min"]
        if data.get("score_max") is not None:
            conditions["number__lte"] = data["score_max"]
        if data.get("score_category"):
            conditions["category"] = data["score_category"]
        return conditions


Part = tuple[str, bool]  # a piece of text, and whether it is a match


@dataclass(frozen=True)
class Match:
    question: list[Part]  # empty where the term is not found
    answer: list[Part]


def excerpt(text: str, term: str, width: int = 140) -> list[Part]:
    """The text around the first case-insensitive match of ``term``, in parts with each match
    marked; whitespace runs shown as one space; empty if there is no match.

    The database decides what matches (its collation may also fold accents); a match it finds
    that this does not is shown without an excerpt.
    """
    pattern = re.compile(re.escape(term), re.IGNORECASE)
    first = pattern.search(text)
    if first is None:
        return []
    start = max(0, first.start() - width // 3)
    end = max(first.end(), min(len(text), start + width))
    # Cut at a space near each end, if there is one, rather than in a word.
    if start > 0 and (space := re.search(r"\s", text[start : min(start + 20, first.start())])):
        start += space.end()
    if end < len(text) and (space := re.search(r"\s\S*$", text[max(first.end(), end - 20) : end])):
        end -= len(space.group())
    window = text[start:end]
    parts: list[Part] = [("…", False)] if start > 0 else []
    at = 0
    for found in pattern.finditer(window):
        parts += [(window[at : found.start()], False), (found.group(), True)]
        at = found.end()
    parts.append((window[at:], False))
    if end < len(text):
        parts.append(("…", False))
    return [(re.sub(r"\s+", " ", piece), hit) for piece, hit in parts if piece]


class CompareForm(forms.Form):
    """Two traces to compare, ``a`` and ``b``, each by its id or the first characters of it."""

    MIN_PREFIX = 4

    a = forms.CharField(required=False, max_length=40, label="Trace A")
    b = forms.CharField(required=False, max_length=40, label="Trace B")

    def __init__(self, data, traces) -> None:
        super().__init__(data)
        self.traces = traces  # the traces the user may see: the others are unknown ids
        for name in ("a", "b"):
            self.fields[name].widget.attrs.update(
                {"list": "recent-traces", "placeholder": "trace id, or its first characters", "autocomplete": "off"}
            )

    def clean_a(self) -> Trace:
        return self._trace("a")

    def clean_b(self) -> Trace:
        return self._trace("b")

    def _trace(self, name: str) -> Trace:
        text = self.cleaned_data.get(name, "")
        if not text:
            raise forms.ValidationError(f"Choose trace {name.upper()}.", code="required")
        key = text.strip().lower().replace("-", "")
        if not (self.MIN_PREFIX <= len(key) <= 32 and re.fullmatch("[0-9a-f]+", key)):
            raise forms.ValidationError(
                f"“{text}” is not a trace id: give the id, or at least its first {self.MIN_PREFIX} characters.",
                code="invalid",
            )
        whole = len(key) == 32
        found = list(self.traces.filter(pk=uuid.UUID(key))[:1] if whole else self.traces.filter(pk__startswith=key)[:2])
        if not found:
            raise forms.ValidationError(
                f"No trace has the id “{text}”." if whole else f"No trace has an id starting with “{text}”.",
                code="unknown",
            )
        if len(found) > 1:
            raise forms.ValidationError(
                f"More than one trace has an id starting with “{text}”: give more of it.", code="ambiguous"
            )
        return found[0]

    @property
    def only_unknown(self) -> bool:
        """Every error is an id that matches no trace (a 404 rather than a bad request)."""
        codes = {error.code for errors in self.errors.as_data().values() for error in errors}
        return codes == {"unknown"}
