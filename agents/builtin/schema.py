"""The schema as the built-in model has seen it through ``describe_schema``, and how the asker's
words find tables and columns in it: names, plurals, declared aliases, then the bilingual vocabulary."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any

from agents.builtin.vocabulary import CJK, own_names, related_words, singular

NUMERIC_TYPES = ("int", "decimal", "numeric", "float", "double", "real", "number", "money")
DATE_TYPES = ("date", "time")  # date, datetime, timestamp, time
LABEL_NAMES = ("name", "title", "label", "full_name")
MEASURES = ("price", "amount", "total", "salary", "revenue", "sales", "cost", "score", "quantity", "pages", "duration")


@dataclass
class Column:
    name: str
    type: str = ""
    key: str = ""
    aliases: list[str] = field(default_factory=list)
    nullable: bool = True

    @property
    def numeric(self) -> bool:
        return any(kind in self.type.lower() for kind in NUMERIC_TYPES)

    @property
    def date(self) -> bool:
        return any(kind in self.type.lower() for kind in DATE_TYPES)

    @property
    def primary(self) -> bool:
        return self.key == "PRI"

    @property
    def references(self) -> tuple[str, str] | None:
        """(table, column) of a foreign key."""
        match = re.match(r"FK -> (\w+)\.(\w+)", self.key or "")
        return (match.group(1), match.group(2)) if match else None


@dataclass
class Table:
    name: str
    aliases: list[str] = field(default_factory=list)
    estimated_rows: int | None = None
    column_names: list[str] = field(default_factory=list)  # from the table list, before it is described
    columns: list[Column] | None = None  # once described

    @property
    def primary_key(self) -> Column | None:
        return next((c for c in self.columns or [] if c.primary), None)

    @property
    def label(self) -> Column | None:
        """The column that names a row (name, title), to show instead of an id."""
        columns = self.columns or []
        return next((c for name in LABEL_NAMES for c in columns if c.name.lower() == name), None)


def table_from_listing(entry: dict[str, Any]) -> Table:
    return Table(entry["name"], entry.get("aliases") or [], entry.get("estimated_rows"), entry.get("columns") or [])


def table_from_description(body: dict[str, Any]) -> Table:
    columns = [
        Column(c["name"], c.get("type") or "", c.get("key") or "", c.get("aliases") or [], c.get("nullable", True))
        for c in body.get("columns") or []
    ]
    return Table(
        body["table"], body.get("aliases") or [], body.get("estimated_rows"), [c.name for c in columns], columns
    )


class Words:
    """The words of a piece of the question, for matching names against."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.lower = text.lower()
        tokens = re.findall(r"[a-z][a-z0-9_]*", self.lower)
        self.tokens = set(tokens) | {singular(t) for t in tokens}
        for a, b in itertools.pairwise(tokens):
            self.tokens |= {f"{a}_{b}", f"{a}_{singular(b)}", f"{a} {b}", f"{a} {singular(b)}"}

    def find(self, name: str) -> int:
        """Where ``name`` occurs (-1 if not)."""
        if CJK.search(name):
            return self.text.find(name)
        if name in self.tokens or singular(name) in self.tokens:
            match = re.search(rf"\b{re.escape(name.split('_')[0].split(' ')[0])}", self.lower)
            return match.start() if match else 0
        return -1


def score(words: Words, name: str, aliases: list[str]) -> tuple[float, int]:
    """How well these words name a table or column: (score, position); (0, -1) if they do not."""
    best: tuple[float, int] = (0.0, -1)
    own = own_names(name, aliases)
    for names, weight in ((own, 1.0), (related_words(own), 0.6)):
        for candidate in names:
            position = words.find(candidate)
            if position < 0:
                continue
            length = len(candidate) * (3 if CJK.search(candidate) else 1)
            value = length * weight
            if value > best[0]:
                best = (value, position)
    return best


class Schema:
    """The tables listed and described so far."""

    def __init__(self) -> None:
        self.tables: dict[str, Table] = {}
        self.dialect = "SQLite"

    @property
    def vendor(self) -> str:
        return "sqlite" if self.dialect == "SQLite" else "mysql"

    def add_listing(self, body: dict[str, Any]) -> None:
        self.dialect = body.get("dialect") or self.dialect
        for entry in body.get("tables") or []:
            self.tables.setdefault(entry["name"], table_from_listing(entry))

    def add_description(self, body: dict[str, Any]) -> None:
        self.tables[body["table"]] = table_from_description(body)

    def named_table(self, text: str) -> Table | None:
        """The table the question names, if it names one."""
        words = Words(text)
        ranked = []
        for table in self.tables.values():
            value, position = score(words, table.name, table.aliases)
            if value:
                ranked.append((value, -position, table.name))
        return self.tables[max(ranked)[2]] if ranked else None

    def table_with(self, phrases: list[str]) -> Table | None:
        """The table whose columns the phrases name best (the question names no table)."""
        ranked = []
        for table in self.tables.values():
            columns = table.columns or [Column(name) for name in table.column_names]
            total = 0.0
            for phrase in phrases:
                words = Words(phrase)
                total += max((score(words, c.name, c.aliases)[0] for c in columns), default=0.0)
            if total:
                ranked.append((total, table.name))
        return self.tables[max(ranked)[1]] if ranked else None

    def column(self, table: Table, phrase: str, *, numeric: bool = False, date: bool = False) -> Column | None:
        """The column of ``table`` that ``phrase`` names, optionally only among numeric or date columns."""
        if not phrase:
            return None
        words = Words(phrase)
        ranked = []
        for column in table.columns or []:
            if numeric and (not column.numeric or column.primary or column.references):
                continue  # keys are not measures
            if date and not column.date:
                continue
            value, position = score(words, column.name, column.aliases)
            if value:
                ranked.append((value, -position, column.name))
        if not ranked:
            return None
        name = max(ranked)[2]
        return next(c for c in table.columns or [] if c.name == name)

    def measure(self, table: Table, concept: str = "") -> Column | None:
        """The table's main numeric column: the one ``concept`` names, else a usual measure, else the first."""
        candidates = [c for c in table.columns or [] if c.numeric and not c.primary and not c.references]
        if concept:
            found = self.column(table, concept, numeric=True)
            if found is not None:
                return found
        for name in MEASURES:
            found = next((c for c in candidates if name in c.name.lower()), None)
            if found is not None:
                return found
        return candidates[0] if candidates else None

    def date_column(self, table: Table, hint: str = "") -> Column | None:
        dates = [c for c in table.columns or [] if c.date]
        if hint:
            found = self.column(table, hint, date=True)
            if found is not None:
                return found
        return next((c for c in dates if "creat" in c.name.lower()), dates[0] if dates else None)
