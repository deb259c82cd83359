"""Inputs that once broke the SQL guard or the message validator under ``bench/fuzz.py``, kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.fuzz import check_guard, check_validator, demo_copy

CASES = [
    json.loads(line)
    for line in (Path(__file__).parent / "fuzz_regressions.jsonl").read_text().splitlines()
    if line.strip()
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c['target']}-{i}" for i, c in enumerate(CASES)])
def test_fuzz_finding_stays_fixed(case):
    if case["target"] == "guard":
        sql, vendor = case["input"]
        check_guard(sql, vendor, demo_copy() if vendor == "sqlite" else None)
        check_guard(sql, "sqlite", demo_copy())
    else:
        kind, value = case["input"]
        check_validator(kind, value.encode("latin-1") if kind == "bytes" else value)


def test_the_guard_rejects_an_empty_select():
    from agents.guard import SqlRejected, check

    for vendor in ("sqlite", "mysql"):
        with pytest.raises(SqlRejected, match="at least one column"):
            check("SELECT", vendor, row_limit=10)
        with pytest.raises(SqlRejected, match="at least one column"):
            check("SELECT * FROM (SELECT) AS t", vendor, row_limit=10)
