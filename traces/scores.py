"""Recording scores: the one writer of ``Score`` rows, for the scores API, the trace's feedback
and evaluations.

A trace has at most one score of a name from a source for itself and for each of its runs:
recording it again replaces it (its value, comment, author and time).
"""

from __future__ import annotations

import math
import uuid
from typing import Any

from django.db import transaction

from traces.models import Run, Score, Trace

MAX_NAME_CHARS = 100
MAX_CATEGORY_CHARS = 100
MAX_COMMENT_CHARS = 4000
FEEDBACK = "feedback"  # the name of the score the trace page's Good/Bad buttons give
FEEDBACK_VERDICTS = {1: True, -1: False}  # Trace.feedback -> the feedback score's value


class InvalidScore(ValueError):
    """A score that cannot be recorded; the message says why."""


def record_score(
    trace_id: uuid.UUID | str,
    name: str,
    value: bool | int | float | str,
    *,
    source: str,
    comment: str = "",
    run_id: uuid.UUID | str | None = None,
    author: Any = None,
) -> Score:
    """Record ``name`` = ``value`` on the trace (or on its run ``run_id``), replacing the score of
    that name from that ``source`` it had. A bool is a verdict, an int or a float a number, a str
    a category. Raises ``InvalidScore`` for a value, name, source, comment or run that cannot be
    recorded, and ``Trace.DoesNotExist`` for a trace that is not here."""
    fields = _fields(name, value, source, comment)
    run = _uuid(run_id, "run_id") if run_id is not None else None
    with transaction.atomic():
        # Scores of one trace are written one at a time: two writers of the same score would both
        # find nothing to replace and both add one.
        trace = Trace.objects.select_for_update().only("pk").get(pk=trace_id)
        if run is not None and not Run.objects.filter(pk=run, trace=trace).exists():
            raise InvalidScore(f"run {run} is not a run of this trace")
        same = Score.objects.filter(trace=trace, name=fields["name"], source=source)
        (same.filter(run_id=run) if run is not None else same.filter(run__isnull=True)).delete()
        return Score.objects.create(trace=trace, run_id=run, author=author, **fields)


def record_feedback(trace_id: uuid.UUID | str, rating: int | None, comment: str = "", *, author: Any = None) -> None:
    """The trace's Good (1) or Bad (-1) feedback as its human ``feedback`` score; no rating deletes it."""
    verdict = FEEDBACK_VERDICTS.get(rating) if isinstance(rating, int) else None
    if verdict is None:
        Score.objects.filter(trace_id=trace_id, run=None, name=FEEDBACK, source=Score.Source.HUMAN).delete()
        return
    record_score(
        trace_id, FEEDBACK, verdict, source=Score.Source.HUMAN, comment=comment[:MAX_COMMENT_CHARS], author=author
    )


def _uuid(value: uuid.UUID | str, what: str) -> uuid.UUID:
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except ValueError:
        raise InvalidScore(f"{what} is not a UUID") from None


def _fields(name: str, value: Any, source: str, comment: str) -> dict[str, Any]:
    if not isinstance(name, str) or not name.strip():
        raise InvalidScore("a score needs a name")
    name = name.strip()
    if len(name) > MAX_NAME_CHARS:
        raise InvalidScore(f"the name is longer than {MAX_NAME_CHARS} characters")
    if source not in Score.Source.values:
        raise InvalidScore(f"the source must be one of {', '.join(Score.Source.values)}")
    if not isinstance(comment, str):
        raise InvalidScore("the comment must be text")
    if len(comment) > MAX_COMMENT_CHARS:
        raise InvalidScore(f"the comment is longer than {MAX_COMMENT_CHARS:,} characters")
    fields: dict[str, Any] = {"name": name, "source": source, "comment": comment}
    if isinstance(value, bool):  # before int: a bool is an int too
        return fields | {"data_type": Score.DataType.BOOLEAN, "number": 1.0 if value else 0.0}
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise InvalidScore("a numeric value must be a finite number")
        return fields | {"data_type": Score.DataType.NUMERIC, "number": number}
    if isinstance(value, str):
        if not value.strip():
            raise InvalidScore("a category must not be empty")
        if len(value) > MAX_CATEGORY_CHARS:
            raise InvalidScore(f"a category is longer than {MAX_CATEGORY_CHARS} characters")
        return fields | {"data_type": Score.DataType.CATEGORICAL, "category": value}
    raise InvalidScore("the value must be a number, a boolean or a category (text)")
