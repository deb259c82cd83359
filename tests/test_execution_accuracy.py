"""Execution accuracy: the agent's SQL passes when it returns the rows of the item's expected SQL
(``agents.execution_accuracy``), on SQLite and on MariaDB."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.database import ExactResult
from agents.execution_accuracy import Outcome, Verdict, comparable, compare_results, judge_sql
from tests.agentdb import library_rows

BOOKS = "SELECT id, title FROM books"


async def test_it_passes_the_same_query(library_db):
    judgement = await judge_sql(library_db, BOOKS, BOOKS)
    assert judgement.outcome is Outcome.EQUAL and judgement.verdict is Verdict.PASSED and judgement.passed
    assert judgement.expected_rows == judgement.actual_rows == 40
    assert judgement.reason == "the same 40 rows"


async def test_it_ignores_row_order(library_db):
    judgement = await judge_sql(library_db, f"{BOOKS} ORDER BY id", f"{BOOKS} ORDER BY title DESC")
    assert judgement.passed, judgement.reason


async def test_it_ignores_column_names(library_db):
    judgement = await judge_sql(library_db, "SELECT COUNT(*) FROM books", "SELECT COUNT(id) AS how_many FROM books")
    assert judgement.passed, judgement.reason


async def test_it_keeps_column_order(library_db):
    judgement = await judge_sql(library_db, "SELECT id, pages FROM books", "SELECT pages, id FROM books")
    assert judgement.outcome is Outcome.DIFFERENT and judgement.verdict is Verdict.FAILED


async def test_it_fails_a_missing_row_and_shows_it(library_db):
    judgement = await judge_sql(library_db, "SELECT id FROM books WHERE id <= 5", "SELECT id FROM books WHERE id < 5")
    assert judgement.outcome is Outcome.DIFFERENT
    assert (judgement.expected_rows, judgement.actual_rows) == (5, 4)
    assert judgement.expected_only == [5] and judgement.actual_only is None
    assert judgement.reason == "1 row of the expected 5 missing, 0 rows of the agent's 4 not expected"


async def test_it_fails_an_extra_row_and_shows_it(library_db):
    judgement = await judge_sql(library_db, "SELECT id FROM books WHERE id < 5", "SELECT id FROM books WHERE id <= 5")
    assert judgement.outcome is Outcome.DIFFERENT
    assert judgement.expected_only is None and judgement.actual_only == [5]


async def test_it_fails_a_different_number_of_columns(library_db):
    judgement = await judge_sql(library_db, "SELECT id FROM books", BOOKS)
    assert judgement.outcome is Outcome.DIFFERENT
    assert judgement.reason == "the agent's result has 2 columns, the expected 1"


async def test_it_counts_duplicate_rows(library_db):
    twice = "SELECT 1 UNION ALL SELECT 1"
    assert not (await judge_sql(library_db, twice, "SELECT 1")).passed
    assert not (await judge_sql(library_db, "SELECT 1", twice)).passed
    assert not (await judge_sql(library_db, twice, "SELECT 1 UNION SELECT 1")).passed
    assert (await judge_sql(library_db, twice, "SELECT 1 AS one UNION ALL SELECT 1.0")).passed


@pytest.mark.parametrize(
    ("actual", "passes"),
    [("SELECT 1", True), ("SELECT 1.0", True), ("SELECT 1.0000001", True), ("SELECT 1.00001", False),
     ("SELECT 0.9999996", True), ("SELECT 0.9999994", False), ("SELECT '1'", False)],
)  # fmt: skip
async def test_it_compares_numbers_at_six_decimal_places(library_db, actual, passes):
    judgement = await judge_sql(library_db, "SELECT 1", actual)
    assert judgement.passed is passes, judgement.reason


async def test_it_compares_a_decimal_sum_with_a_float_sum(library_db):
    decimal_sum = "SELECT SUM(price) FROM books"  # DECIMAL on MariaDB; SQLite keeps prices as floats
    float_sum = "SELECT SUM(price) + 0e0 FROM books"  # DOUBLE on both
    exact = sum(Decimal(f"{price:.2f}") for *_, price, _ in library_rows()["books"])
    kinds = {type((await library_db.run_exact(sql, 10)).rows[0][0]) for sql in (decimal_sum, float_sum)}
    assert kinds == ({Decimal, float} if library_db.vendor == "mysql" else {float})
    assert (await judge_sql(library_db, decimal_sum, float_sum)).passed
    assert (await judge_sql(library_db, f"SELECT {exact}", float_sum)).passed
    assert not (await judge_sql(library_db, f"SELECT {exact + Decimal('0.01')}", decimal_sum)).passed


async def test_it_compares_dates_and_times_by_their_iso_text(library_db):
    # Book 1 was published on 1963-02-02; loan 1 was made on 2025-02-02 at 05:11.
    assert (await judge_sql(library_db, "SELECT published FROM books WHERE id = 1", "SELECT '1963-02-02'")).passed
    loaned = "SELECT loaned_at FROM loans WHERE id = 1"
    assert (await judge_sql(library_db, loaned, "SELECT '2025-02-02 05:11:00'")).passed
    assert not (await judge_sql(library_db, loaned, "SELECT '2025-02-02T05:11:00'")).passed
    assert not (await judge_sql(library_db, loaned, "SELECT '2025-02-02'")).passed


async def test_it_holds_null_equal_to_null_only(library_db):
    assert (await judge_sql(library_db, "SELECT NULL", "SELECT NULL AS missing")).passed
    assert not (await judge_sql(library_db, "SELECT NULL", "SELECT 0")).passed
    assert not (await judge_sql(library_db, "SELECT NULL", "SELECT ''")).passed


async def test_it_compares_strings_exactly(library_db):
    assert not (await judge_sql(library_db, "SELECT 'Book 01'", "SELECT 'book 01'")).passed
    assert not (await judge_sql(library_db, "SELECT 'Book 01'", "SELECT 'Book 01 '")).passed


@pytest.mark.parametrize("actual", [None, "", "  \n"])
async def test_an_agent_that_ran_no_sql_fails(library_db, actual):
    judgement = await judge_sql(library_db, BOOKS, actual)
    assert judgement.outcome is Outcome.NO_SQL and judgement.verdict is Verdict.FAILED
    assert (judgement.expected_rows, judgement.actual_rows) == (40, None)


@pytest.mark.parametrize(
    "expected", ["SELECT title FROM books WHERE", "SELECT no_such_column FROM books", "SELECT * FROM no_such_table"]
)
async def test_an_expected_sql_that_fails_is_not_comparable(library_db, expected):
    judgement = await judge_sql(library_db, expected, BOOKS)
    assert judgement.outcome is Outcome.EXPECTED_FAILED and judgement.verdict is Verdict.NOT_COMPARABLE
    assert judgement.reason.startswith("the expected SQL failed: ") and "\n" not in judgement.reason


async def test_an_expected_sql_the_guard_refuses_is_not_comparable(library_db):
    judgement = await judge_sql(library_db, "DELETE FROM books", BOOKS)
    assert judgement.outcome is Outcome.EXPECTED_REFUSED and judgement.verdict is Verdict.NOT_COMPARABLE
    assert judgement.reason.startswith("the guard refuses the expected SQL: ")
    assert (await judge_sql(library_db, "SELECT COUNT(*) FROM books", "SELECT 40")).passed  # nothing was deleted


async def test_an_agent_sql_the_guard_refuses_fails(library_db):
    judgement = await judge_sql(library_db, BOOKS, "DROP TABLE books")
    assert judgement.outcome is Outcome.ACTUAL_REFUSED and judgement.verdict is Verdict.FAILED
    assert judgement.reason.startswith("the guard refuses the agent's SQL: ")


@pytest.mark.parametrize("actual", ["SELECT id, title FROM books WHERE", "SELECT id, no_such_column FROM books"])
async def test_an_agent_sql_that_fails_fails(library_db, actual):
    judgement = await judge_sql(library_db, BOOKS, actual)
    assert judgement.outcome is Outcome.ACTUAL_FAILED and judgement.verdict is Verdict.FAILED
    assert judgement.expected_rows == 40


async def test_an_expected_result_beyond_the_bound_is_not_comparable(library_db):
    judgement = await judge_sql(library_db, BOOKS, BOOKS, max_rows=39)
    assert judgement.outcome is Outcome.TOO_MANY_ROWS and judgement.verdict is Verdict.NOT_COMPARABLE
    assert judgement.reason == "the expected SQL returns more than 39 rows"
    assert (await judge_sql(library_db, BOOKS, BOOKS, max_rows=40)).passed


async def test_an_agent_result_beyond_the_bound_fails(library_db):
    judgement = await judge_sql(library_db, "SELECT COUNT(*) FROM books", BOOKS, max_rows=10)
    assert judgement.outcome is Outcome.DIFFERENT
    assert judgement.reason == "the agent's SQL returns more than 10 rows, the expected 1 row"


async def test_it_runs_past_the_agents_row_cap(library_db):
    cap = library_db.row_limit
    judgement = await judge_sql(library_db, "SELECT id FROM loans", "SELECT id FROM loans ORDER BY id DESC", cap // 2)
    assert judgement.outcome is Outcome.TOO_MANY_ROWS
    many = "SELECT a.id, b.id FROM loans a, books b"  # 4,800 rows, more than the agent may see
    judgement = await judge_sql(library_db, many, many)
    assert judgement.passed and judgement.expected_rows == 4_800 > cap


async def test_a_query_keeps_its_own_limit(library_db):
    result = await library_db.run_exact(f"{BOOKS} ORDER BY id LIMIT 3", max_rows=10)
    assert [row[0] for row in result.rows] == [1, 2, 3] and result.more is False
    judgement = await judge_sql(library_db, f"{BOOKS} ORDER BY id LIMIT 3", f"{BOOKS} WHERE id IN (3, 2, 1)")
    assert judgement.passed and judgement.expected_rows == 3


async def test_it_leaves_the_agents_own_row_cap_as_it_was(library_db):
    many = "SELECT a.id, b.id FROM loans a, books b"
    await judge_sql(library_db, many, many)
    result = await library_db.run(many)
    assert len(result.rows) == library_db.row_limit and result.truncated is True


@pytest.mark.parametrize(
    ("value", "text"),
    [(dt.date(2024, 5, 1), "2024-05-01"), (dt.datetime(2024, 5, 1, 9, 30), "2024-05-01 09:30:00"),
     (dt.time(9, 30, 5), "09:30:05"), (dt.timedelta(hours=36, minutes=5), "36:05:00"),
     (-dt.timedelta(minutes=90), "-01:30:00"), (dt.timedelta(seconds=1, microseconds=500), "00:00:01.000500")],
)  # fmt: skip
def test_it_reads_dates_and_times_as_iso_text(value, text):
    assert comparable(value) == text


def test_it_compares_bytes_by_content_never_as_text():
    assert comparable(b"\x01ab") == comparable(bytearray(b"\x01ab")) != comparable("\x01ab")
    assert comparable(b"ab") != comparable("0x6162")


def test_it_shows_bytes_as_hex():
    expected = ExactResult("", ["x"], [(b"\x01\xff",)], False, 0)
    actual = ExactResult("", ["x"], [(b"\x01",)], False, 0)
    assert compare_results(expected, actual).expected_only == ["0x01ff"]


@pytest.mark.parametrize(
    ("left", "right", "equal"),
    [(1, 1.0, True), (1, Decimal("1.000000"), True), (True, 1, True), (0.1 + 0.2, Decimal("0.3"), True),
     (Decimal("0.0000005"), Decimal("0.000001"), True), (Decimal("-0.0000004"), 0, True),
     (10**30 + 1, Decimal(10**30 + 1), True), (10**30 + 1, 10**30, False), (1e300, Decimal("1e300"), True),
     (float("inf"), float("inf"), True), (float("inf"), 10**400, False)],
)  # fmt: skip
def test_it_compares_numbers_rounded_half_away_from_zero(left, right, equal):
    assert (comparable(left) == comparable(right)) is equal


# Values the databases return: integers, decimals, floats, text, dates, NULL.
VALUES = st.one_of(
    st.none(),
    st.integers(-(10**12), 10**12),
    st.decimals(min_value=-(10**6), max_value=10**6, places=4),
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    st.text(max_size=5),
    st.dates(),
)


@st.composite
def results(draw) -> list[tuple]:
    width = draw(st.integers(1, 3))
    return draw(st.lists(st.tuples(*[VALUES] * width), max_size=8))


@given(results(), st.randoms(use_true_random=False))
def test_shuffling_rows_never_changes_the_verdict(rows, rng: random.Random):
    shuffled = rng.sample(rows, len(rows))
    columns = [f"c{i}" for i in range(len(rows[0]))] if rows else ["c0"]
    judgement = compare_results(ExactResult("", columns, rows, False, 0), ExactResult("", columns, shuffled, False, 0))
    assert judgement.passed, judgement.reason


@given(results().filter(bool), st.data())
def test_changing_one_value_always_fails(rows, data):
    row = data.draw(st.integers(0, len(rows) - 1))
    column = data.draw(st.integers(0, len(rows[0]) - 1))
    value = data.draw(VALUES.filter(lambda new: comparable(new) != comparable(rows[row][column])))
    changed = [list(r) for r in rows]
    changed[row][column] = value
    columns = [f"c{i}" for i in range(len(rows[0]))]
    expected = ExactResult("", columns, rows, False, 0)
    judgement = compare_results(expected, ExactResult("", columns, [tuple(r) for r in changed], False, 0))
    assert judgement.outcome is Outcome.DIFFERENT
