"""Datasets in and out: JSONL (an object per line) or CSV with a header, the fields of an item."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from django.db import transaction

from evals.models import Dataset, DatasetItem

FIELDS = ("question", "expected_sql", "expected_answer", "metadata")
MAX_QUESTION_CHARS = 4000  # as a question asked on the live page
MAX_TEXT_CHARS = 100_000
MAX_LINE_CHARS = 1024 * 1024


class BadItems(ValueError):
    """Lines of a file that are not items: ``problems`` says which and why (``file:line: reason``)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(f"{len(problems)} bad line(s): " + "; ".join(problems[:5]))
        self.problems = problems


@dataclass(frozen=True)
class Item:
    question: str
    expected_sql: str = ""
    expected_answer: str = ""
    metadata: dict[str, Any] | None = None


def item_of(record: Any) -> Item:
    """An item from one parsed record, or ValueError saying what is wrong with it."""
    if not isinstance(record, dict):
        raise ValueError("not an object with a question")
    unknown = sorted(set(record) - set(FIELDS))
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(unknown)} (fields: {', '.join(FIELDS)})")
    question = record.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ValueError("'question' is missing or empty")
    if len(question) > MAX_QUESTION_CHARS:
        raise ValueError(f"'question' is longer than {MAX_QUESTION_CHARS} characters")
    texts = {}
    for name in ("expected_sql", "expected_answer"):
        value = record.get(name) or ""
        if not isinstance(value, str):
            raise ValueError(f"'{name}' must be text")
        if len(value) > MAX_TEXT_CHARS:
            raise ValueError(f"'{name}' is longer than {MAX_TEXT_CHARS} characters")
        texts[name] = value.strip()
    metadata = record.get("metadata") or {}
    if isinstance(metadata, str):  # a CSV cell
        try:
            metadata = json.loads(metadata)
        except ValueError:
            raise ValueError("'metadata' is not JSON") from None
    if not isinstance(metadata, dict):
        raise ValueError("'metadata' must be a JSON object")
    return Item(question.strip(), texts["expected_sql"], texts["expected_answer"], metadata)


def _records(name: str, file: TextIO) -> Iterator[tuple[int, Any]]:
    """(line number, a parsed record or the ValueError saying why it is not one)."""
    if name.lower().endswith(".csv"):
        reader = csv.DictReader(file)
        try:
            for record in reader:
                if None in record:
                    yield reader.line_num, ValueError("more cells than the header has columns")
                else:
                    yield reader.line_num, record
        except csv.Error as exc:
            yield reader.line_num, ValueError(f"not CSV ({exc})")
        return
    number = 0
    while line := file.readline(MAX_LINE_CHARS + 1):  # bounded: a file without newlines is not read whole
        number += 1
        if len(line) > MAX_LINE_CHARS:
            yield number, ValueError(f"longer than {MAX_LINE_CHARS:,} characters")
            return  # where the next line starts is unknown
        if line.strip():
            try:
                yield number, json.loads(line)
            except (ValueError, RecursionError) as exc:
                yield number, ValueError(f"not JSON ({str(exc).splitlines()[0][:100]})")


def read_items(path: Path) -> list[Item]:
    """Every item of ``path`` (``.csv``: CSV with a header; otherwise JSONL), or BadItems naming
    every bad line: a file is imported whole or not at all."""
    with open(path, encoding="utf-8", newline="") as file:
        return parse_items(str(path), file)


def parse_items(name: str, file: TextIO) -> list[Item]:
    """``read_items`` of an open file (an upload) called ``name``: its suffix says CSV or JSONL,
    and the problems name it."""
    items, problems = [], []
    try:
        for number, record in _records(name, file):
            try:
                if isinstance(record, ValueError):
                    raise record
                items.append(item_of(record))
            except ValueError as exc:
                problems.append(f"{name}:{number}: {exc}")
    except UnicodeDecodeError:
        problems.append(f"{name}: not UTF-8 text")
    if problems:
        raise BadItems(problems)
    return items


@transaction.atomic
def add_items(name: str, owner_id: int | None, items: list[Item], description: str = "") -> tuple[Dataset, bool]:
    """Add ``items`` to the dataset ``name`` of ``owner_id``, made if there is none; True if it was made."""
    dataset = Dataset.objects.select_for_update().named(name, owner_id).first()
    created = dataset is None
    if dataset is None:
        dataset = Dataset.objects.create(name=name, owner_id=owner_id, description=description)
    DatasetItem.objects.bulk_create(
        DatasetItem(
            dataset=dataset,
            question=item.question,
            expected_sql=item.expected_sql,
            expected_answer=item.expected_answer,
            metadata=item.metadata or {},
        )
        for item in items
    )
    return dataset, created


def item_records(dataset: Dataset) -> Iterator[dict[str, Any]]:
    """The dataset's items as the records ``read_items`` reads back."""
    for item in dataset.items.order_by("id").iterator():
        record: dict[str, Any] = {"question": item.question}
        if item.expected_sql:
            record["expected_sql"] = item.expected_sql
        if item.expected_answer:
            record["expected_answer"] = item.expected_answer
        if item.metadata:
            record["metadata"] = item.metadata
        yield record
