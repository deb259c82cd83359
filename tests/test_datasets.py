"""Datasets from files: JSONL and CSV imported whole or not at all, exported back, listed."""

from __future__ import annotations

import json
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from evals.models import Dataset

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("dataset", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_it_imports_jsonl_and_exports_it_back(tmp_path):
    items = [
        {"question": "how many users?", "expected_sql": "SELECT COUNT(*) FROM users", "metadata": {"level": 1}},
        {"question": "显示用户表的10条用户数据", "expected_answer": "Alice"},
    ]
    source = tmp_path / "shop.jsonl"
    source.write_text("\n".join(json.dumps(item, ensure_ascii=False) for item in items) + "\n\n")
    out, _ = run("import", "shop", str(source), "--description", "the demo shop")
    assert "dataset 'shop' created with 2 item(s)" in out
    dataset = Dataset.objects.get(name="shop")
    assert dataset.description == "the demo shop" and dataset.owner is None
    exported = tmp_path / "back.jsonl"
    run("export", "shop", "-o", str(exported))
    assert [json.loads(line) for line in exported.read_text().splitlines()] == items


def test_it_imports_csv_with_a_header(tmp_path):
    source = tmp_path / "shop.csv"
    source.write_text(
        'question,expected_sql,expected_answer,metadata\n"how many, in all?",SELECT 1,,"{""a"": 1}"\nand then?,,yes,\n'
    )
    run("import", "csv", str(source))
    items = list(
        Dataset.objects.get(name="csv").items.values("question", "expected_sql", "expected_answer", "metadata")
    )
    assert items == [
        {"question": "how many, in all?", "expected_sql": "SELECT 1", "expected_answer": "", "metadata": {"a": 1}},
        {"question": "and then?", "expected_sql": "", "expected_answer": "yes", "metadata": {}},
    ]


def test_bad_lines_are_named_with_file_and_line_and_nothing_is_imported(tmp_path):
    source = tmp_path / "bad.jsonl"
    source.write_text(
        '{"question": "fine"}\n'
        "not json\n"
        '{"question": ""}\n'
        '{"question": "q", "expected": "typo"}\n'
        '["a list"]\n'
        '{"question": "q", "metadata": [1]}\n'
    )
    err = StringIO()
    with pytest.raises(CommandError, match="5 bad line"):
        call_command("dataset", "import", "bad", str(source), stderr=err)
    lines = err.getvalue().splitlines()
    assert [line.split(": ", 1)[0] for line in lines] == [f"{source}:{n}" for n in (2, 3, 4, 5, 6)]
    assert "unknown field(s) expected" in lines[2] and "'question' is missing or empty" in lines[1]
    assert not Dataset.objects.filter(name="bad").exists()


def test_importing_into_an_existing_name_adds_items_and_says_so(tmp_path):
    source = tmp_path / "one.jsonl"
    source.write_text('{"question": "first"}\n')
    run("import", "grows", str(source))
    out, _ = run("import", "grows", str(source))
    assert "already existed: added to it (2 items now)" in out
    assert Dataset.objects.filter(name="grows").count() == 1
    out, _ = run("list")
    assert "grows\t2 items\t0 experiments" in out


def test_a_line_without_end_stops_the_import_with_one_line():
    result = subprocess.run(
        [sys.executable, "manage.py", "dataset", "import", "endless", "/dev/zero"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "/dev/zero:1: longer than 1,048,576 characters" in result.stderr


def test_unknown_names_and_users_are_clear_errors(tmp_path):
    with pytest.raises(CommandError, match="no dataset named 'nope'"):
        run("export", "nope")
    with pytest.raises(CommandError, match="no user named 'ghost'"):
        run("list", "--user", "ghost")
    with pytest.raises(CommandError, match="cannot read"):
        run("import", "x", str(tmp_path / "missing.jsonl"))
