"""Execution accuracy: whether the agent's SQL returns what an item's expected SQL returns.

``judge_sql(database, expected_sql, actual_sql, max_rows=10_000)`` implements this definition:

- Both queries run on the agent's database through ``SqlDatabase.run_exact``: checked by the
  guard, on the read-only connection, under the statement time limit, but without the agent's
  row cap. Their bound is ``max_rows`` rows (10,000 by default); a LIMIT a query has of its own
  is kept as written (``LIMIT 10`` means 10 rows).
- The two results are equal when they have the same number of columns and the same rows as
  multisets: row order and column names are ignored, column order is kept, and a row that comes
  twice in one must come twice in the other.
- Values are compared after ``comparable()``:
  numbers (integers, decimals, floats; a boolean as 0 or 1) rounded half away from zero to
  6 decimal places, a float read by its shortest decimal text, so 1 == 1.0 == Decimal("1.000000")
  == 1.0000001 and 1 != 1.00001;
  dates, times and datetimes by their ISO text (``2024-05-01``, ``09:30:00``, ``2024-05-01 09:30:00``
  with a space, as SQL writes it; a MySQL TIME as ``[-]HH:MM:SS[.ffffff]``), so a date equals a
  string with the same text (SQLite keeps dates as text);
  strings exactly (case and spaces count; the text "1" is not the number 1);
  NULL equal to NULL;
  bytes by their content, never equal to a string (shown as ``0x`` and hex digits);
  NaN equal to nothing (neither database returns one).
- The outcome, decided in this order:

  ====================  ==============  =====================================================
  outcome               verdict         when
  ====================  ==============  =====================================================
  ``expected_refused``  not comparable  the guard refuses the expected SQL
  ``expected_failed``   not comparable  the expected SQL cannot be parsed (a syntax error), or
                                        fails on the database (an error, the time limit)
  ``too_many_rows``     not comparable  the expected SQL returns more than ``max_rows`` rows
  ``no_sql``            failed          the agent ran no SQL (``None`` or blank)
  ``actual_refused``    failed          the guard refuses the agent's SQL
  ``actual_failed``     failed          the agent's SQL cannot be parsed, or fails on the database
  ``different``         failed          the results differ, or the agent's SQL returns more than
                                        ``max_rows`` rows (the expected one did not: they differ)
  ``equal``             passed          the results are equal
  ====================  ==============  =====================================================

Which SQL of a trace counts as the agent's is the caller's choice; this module only judges it.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Context, Decimal
from enum import StrEnum
from typing import Any

from agents.database import ExactResult, QueryError, SqlDatabase, to_json_value
from agents.events import clip
from agents.guard import SqlNotParsed, SqlRejected

MAX_ROWS = 10_000
PLACES = Decimal("0.000001")  # numbers are compared at 6 decimal places
SHOWN_CHARS = 200  # a text in a differing row, as shown


class Verdict(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    NOT_COMPARABLE = "not_comparable"  # the item cannot judge: its expected SQL is broken or too big


class Outcome(StrEnum):
    """What happened, more precisely than the verdict; each outcome has one verdict."""

    EQUAL = "equal"
    DIFFERENT = "different"
    NO_SQL = "no_sql"
    ACTUAL_REFUSED = "actual_refused"
    ACTUAL_FAILED = "actual_failed"
    EXPECTED_REFUSED = "expected_refused"
    EXPECTED_FAILED = "expected_failed"
    TOO_MANY_ROWS = "too_many_rows"

    @property
    def verdict(self) -> Verdict:
        if self is Outcome.EQUAL:
            return Verdict.PASSED
        if self in {Outcome.EXPECTED_REFUSED, Outcome.EXPECTED_FAILED, Outcome.TOO_MANY_ROWS}:
            return Verdict.NOT_COMPARABLE
        return Verdict.FAILED


@dataclass(frozen=True)
class SqlJudgement:
    outcome: Outcome
    reason: str  # one line, for people
    expected_rows: int | None  # None: it did not run, failed, or returned more than max_rows
    actual_rows: int | None
    expected_only: list[Any] | None = None  # the first expected row the agent's result lacks (JSON values)
    actual_only: list[Any] | None = None  # the first row of the agent's result that was not expected

    @property
    def verdict(self) -> Verdict:
        return self.outcome.verdict

    @property
    def passed(self) -> bool:
        return self.outcome is Outcome.EQUAL


async def judge_sql(
    database: SqlDatabase, expected_sql: str, actual_sql: str | None, max_rows: int = MAX_ROWS
) -> SqlJudgement:
    """Run both queries and judge the agent's by the definition in this module's docstring."""
    try:
        expected = await database.run_exact(expected_sql, max_rows)
    except (SqlNotParsed, QueryError) as exc:
        return SqlJudgement(Outcome.EXPECTED_FAILED, f"the expected SQL failed: {_line(exc)}", None, None)
    except SqlRejected as exc:
        return SqlJudgement(Outcome.EXPECTED_REFUSED, f"the guard refuses the expected SQL: {_line(exc)}", None, None)
    if expected.more:
        reason = f"the expected SQL returns more than {max_rows:,} rows"
        return SqlJudgement(Outcome.TOO_MANY_ROWS, reason, None, None)
    expected_rows = len(expected.rows)
    if actual_sql is None or not actual_sql.strip():
        return SqlJudgement(Outcome.NO_SQL, "the agent ran no SQL", expected_rows, None)
    try:
        actual = await database.run_exact(actual_sql, max_rows)
    except (SqlNotParsed, QueryError) as exc:
        return SqlJudgement(Outcome.ACTUAL_FAILED, f"the agent's SQL failed: {_line(exc)}", expected_rows, None)
    except SqlRejected as exc:
        reason = f"the guard refuses the agent's SQL: {_line(exc)}"
        return SqlJudgement(Outcome.ACTUAL_REFUSED, reason, expected_rows, None)
    if actual.more:
        reason = f"the agent's SQL returns more than {max_rows:,} rows, the expected {_rows(expected_rows)}"
        return SqlJudgement(Outcome.DIFFERENT, reason, expected_rows, None)
    return compare_results(expected, actual)


def compare_results(expected: ExactResult, actual: ExactResult) -> SqlJudgement:
    """``equal`` or ``different``, by the definition in this module's docstring."""
    counts = len(expected.rows), len(actual.rows)
    if len(expected.columns) != len(actual.columns):
        reason = f"the agent's result has {len(actual.columns)} columns, the expected {len(expected.columns)}"
        return SqlJudgement(Outcome.DIFFERENT, reason, *counts, _first(expected.rows), _first(actual.rows))
    expected_keys = [comparable_row(row) for row in expected.rows]
    actual_keys = [comparable_row(row) for row in actual.rows]
    missing = Counter(expected_keys) - Counter(actual_keys)
    extra = Counter(actual_keys) - Counter(expected_keys)
    if not missing and not extra:
        return SqlJudgement(Outcome.EQUAL, f"the same {_rows(counts[0])}", *counts)
    reason = (
        f"{_rows(missing.total())} of the expected {counts[0]:,} missing, "
        f"{_rows(extra.total())} of the agent's {counts[1]:,} not expected"
    )
    return SqlJudgement(
        Outcome.DIFFERENT,
        reason,
        *counts,
        _first(expected.rows, lambda index: expected_keys[index] in missing),
        _first(actual.rows, lambda index: actual_keys[index] in extra),
    )


def comparable_row(row: Sequence[Any]) -> tuple[Hashable, ...]:
    return tuple(comparable(value) for value in row)


def comparable(value: Any) -> Hashable:
    """A database value as it is compared: equal values of the definition give equal results here."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float, Decimal)):  # bool is an int
        return _rounded(value)
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return _mysql_time(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return str(value)


def _rounded(value: int | float | Decimal) -> Decimal:
    number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if not number.is_finite():
        return number
    # Enough digits for the integer part and six places: quantize refuses to round to fewer.
    return number.quantize(PLACES, rounding=ROUND_HALF_UP, context=Context(prec=max(28, number.adjusted() + 8)))


def _mysql_time(value: dt.timedelta) -> str:
    """A MySQL TIME (which mysqlclient reads as a timedelta) as MySQL writes it: ``-01:30:00``, ``36:00:00.5``."""
    micros = abs(value) // dt.timedelta(microseconds=1)
    seconds, micro = divmod(micros, 1_000_000)
    text = f"{'-' if value < dt.timedelta(0) else ''}{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    return f"{text}.{micro:06d}" if micro else text


def _first(rows: list[tuple[Any, ...]], wanted: Callable[[int], bool] | None = None) -> list[Any] | None:
    """The first row (that ``wanted(index)`` accepts), as JSON values for display."""
    for index, row in enumerate(rows):
        if wanted is None or wanted(index):
            return [_shown(value) for value in row]
    return None


def _shown(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "0x" + bytes(value).hex()
    shown = to_json_value(value)
    return clip(shown, SHOWN_CHARS) if isinstance(shown, str) else shown


def _rows(count: int) -> str:
    return f"{count:,} row" + ("" if count == 1 else "s")


def _line(exc: Exception) -> str:
    return " ".join(str(exc).split())
