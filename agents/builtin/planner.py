"""From a parsed question and the schema seen so far, the next step: a tool call, or the answer.

Like an LLM, the planner sees only the conversation. It lists the tables, describes the one the
question is about (and a table a foreign key leads to, when it groups or filters by it), then
writes one read-only statement from the question and the live schema, and answers from its rows.
When a part of the question matches nothing in the schema it says so instead of guessing.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from sqlglot import exp

from agents.builtin.question import Filter, Question, parse
from agents.builtin.schema import Column, Schema, Table, Words, score
from agents.builtin.vocabulary import own_names
from agents.chat import ToolCall


@dataclass
class Unmapped:
    """The question cannot be answered from this schema; ``reason`` says which part did not match."""

    reason: str | None


@dataclass
class Unfinished:
    """The steps ran out (the last call comes without tools) before the statement could run."""


@dataclass
class Describe:
    """The plan needs this table's columns first."""

    table: str


@dataclass
class Join:
    """A table reached through a foreign key of the main table."""

    table: Table
    alias: str
    on: str  # the join condition, quoted


@dataclass
class Plan:
    sql: str
    question: Question
    table: Table
    note: str = ""  # what the answer should say about how it read the question


class Conversation:
    """What the planner knows from the messages so far."""

    def __init__(self, messages: list[dict[str, Any]], today: dt.date | None = None) -> None:
        self.question_text = next((m["content"] for m in messages if m["role"] == "user"), "") or ""
        self.question = parse(self.question_text, today)
        self.chinese = self.question.chinese
        self.schema = Schema()
        self.listed = False
        self.query: dict[str, Any] | None = None
        self.query_sql = ""
        self.query_error = ""
        self.calls = 0
        calls: dict[str, tuple[str, dict]] = {}
        for message in messages:
            for call in message.get("tool_calls") or []:
                function = call["function"]
                try:
                    arguments = json.loads(function.get("arguments") or "{}")
                except ValueError:
                    arguments = {}
                calls[call["id"]] = (function["name"], arguments)
                self.calls += 1
            if message["role"] != "tool":
                continue
            name, arguments = calls.get(message.get("tool_call_id") or "", ("", {}))
            content = message.get("content") or ""
            if content.startswith("Error:"):
                if name == "run_sql":
                    self.query_error, self.query_sql = content[len("Error:") :].strip(), arguments.get("sql", "")
                continue
            try:
                body = json.loads(content)
            except ValueError:
                continue
            if name == "describe_schema" and "tables" in body:
                self.schema.add_listing(body)
                self.listed = True
            elif name == "describe_schema" and "columns" in body:
                self.schema.add_description(body)
            elif name == "run_sql":
                self.query, self.query_sql, self.query_error = body, arguments.get("sql", ""), ""

    def t(self, en: str, zh: str) -> str:
        return zh if self.chinese else en

    def call(self, name: str, arguments: dict[str, Any]) -> ToolCall:
        return ToolCall(f"call_{self.calls + 1}", name, json.dumps(arguments, ensure_ascii=False))

    # ------------------------------------------------------------------ the next step

    def next_step(self, tools_available: bool) -> ToolCall | Plan | Unmapped | Unfinished | str:
        """A tool call to make, the plan whose query has run (answer from it), a refusal, a call it
        could not make (no tools: the step limit), or a text answer."""
        question = self.question
        if not self.listed:
            return self.call("describe_schema", {}) if tools_available else Unfinished()
        if question.kind == "tables":
            return "tables"
        if question.kind == "unknown":
            return Unmapped(None)
        table = self.main_table()
        if table is None:
            return Unmapped(self.t("No table in the database matches the question.", "数据库里没有与问题对应的表。"))
        if table.columns is None:
            return self.call("describe_schema", {"table": table.name}) if tools_available else Unfinished()
        if question.kind == "describe":
            return "describe"
        plan = self.plan(question, table)
        if isinstance(plan, Describe):
            return self.call("describe_schema", {"table": plan.table}) if tools_available else Unfinished()
        if isinstance(plan, Unmapped) or self.query is not None or self.query_error:
            return plan
        return self.call("run_sql", {"sql": plan.sql}) if tools_available else Unfinished()

    def main_table(self) -> Table | None:
        """The table the question is about: the one it names, unless what it measures lives elsewhere
        ("average salary per department": the salaries are in employees, not in departments)."""
        question = self.question
        if question.kind == "superlative" and question.measure:
            counted = self.schema.named_table(question.measure)  # "which department has the most employees"
            if counted is not None and not _lists(counted, question.measure, own_only=True):
                return counted
        named = self.schema.named_table(question.rest)
        measure = question.measure if question.kind in ("group", "aggregate", "superlative") else ""
        if named is not None and measure and question.function != "COUNT" and not _lists(named, measure):
            holder = self.schema.table_with([measure])
            if holder is not None:
                return holder
        if named is not None:
            return named
        phrases = [p for p in (question.measure, question.group, question.subject, question.implied) if p]
        phrases += [f.column or f.implied for f in question.filters if f.column or f.implied]
        return self.schema.table_with(phrases) if phrases else None

    # ------------------------------------------------------------------ SQL

    def ident(self, name: str) -> str:
        return _ident(name, self.schema.vendor)

    def literal(self, value: Any, column: Column | None = None) -> str:
        if isinstance(value, (int, float)) and (column is None or column.numeric):
            return repr(value) if isinstance(value, float) else str(value)
        if isinstance(value, str) and column is not None and column.numeric:
            try:
                return str(float(value)) if "." in value else str(int(value))
            except ValueError:
                pass
        return exp.Literal.string(str(value)).sql(dialect=self.schema.vendor)

    def plan(self, question: Question, table: Table) -> Plan | Describe | Unmapped:
        builder = _Builder(self, question, table)
        return builder.build()

    def unmapped_column(self, table: Table, words: str) -> Unmapped:
        return Unmapped(
            self.t(
                f"The table {table.name} has no column matching “{words}”.",
                f"表 {table.name} 没有与“{words}”对应的列。",
            )
        )


class _Builder:
    """Turns one question over one described table into one statement."""

    def __init__(self, conversation: Conversation, question: Question, table: Table) -> None:
        self.c = conversation
        self.q = question
        self.table = table
        self.joins: dict[str, Join] = {}
        self.where: list[str] = []
        self.multi = False  # columns need their table's alias (a join)

    # the FROM clause and column references

    def col(self, column: Column, table: Table | None = None) -> str:
        table = table or self.table
        if not self.multi:
            return self.c.ident(column.name)
        alias = "t" if table is self.table else next(j.alias for j in self.joins.values() if j.table is table)
        return f"{alias}.{self.c.ident(column.name)}"

    def source(self) -> str:
        name = self.c.ident(self.table.name)
        if not self.joins:
            return name
        parts = [f"{name} t"] + [f"JOIN {self.c.ident(j.table.name)} {j.alias} ON {j.on}" for j in self.joins.values()]
        return " ".join(parts)

    def resolve(
        self, phrase: str, *, numeric: bool = False, date: bool = False
    ) -> tuple[Column, Table] | Describe | None:
        """A column ``phrase`` names, in the main table or, one foreign key away, in another."""
        schema = self.c.schema
        found = schema.column(self.table, phrase, numeric=numeric, date=date)
        if found is not None and not (found.references and not numeric):
            return found, self.table
        for fk in [c for c in self.table.columns or [] if c.references]:
            target_name = fk.references[0] if fk.references else ""
            target = schema.tables.get(target_name)
            words = Words(phrase)
            names_it = score(words, target_name, target.aliases if target else [])[0] > 0 or (
                score(words, fk.name, fk.aliases)[0] > 0
            )
            if target is None or (target.columns is None and not names_it and not _lists(target, phrase)):
                continue
            if target.columns is None:
                return Describe(target_name)
            column = schema.column(target, phrase, numeric=numeric, date=date)
            if column is None and names_it and not numeric and not date:
                column = target.label  # "per department": the department's name
            if column is not None and not column.references:
                self.join(fk, target)
                return column, target
        return (found, self.table) if found is not None else None

    def join(self, fk: Column, target: Table) -> None:
        if target.name not in self.joins and fk.references:
            alias = f"j{len(self.joins) + 1}"
            on = f"{alias}.{self.c.ident(fk.references[1])} = t.{self.c.ident(fk.name)}"
            self.joins[target.name] = Join(target, alias, on)
            self.multi = True

    # the parts of the question

    def apply_filters(self) -> Describe | Unmapped | None:
        for item in self.q.filters:
            condition = self.condition(item)
            if not isinstance(condition, str):
                return condition
            self.where.append(condition)
        if self.q.period is not None:
            column = self.c.schema.date_column(self.table, self.q.period.hint)
            if column is None:
                return Unmapped(
                    self.c.t(f"The table {self.table.name} has no date column.", f"表 {self.table.name} 没有日期列。")
                )
            reference = self.col(column)
            if self.q.period.start:
                self.where.append(f"{reference} >= '{self.q.period.start.isoformat()}'")
            if self.q.period.end:
                self.where.append(f"{reference} < '{self.q.period.end.isoformat()}'")
        return None

    def condition(self, item: Filter) -> str | Describe | Unmapped:
        numeric = item.op != "="
        words = item.column
        resolved: tuple[Column, Table] | Describe | None = None
        if words and not self.names_table(words):
            resolved = self.resolve(words, numeric=numeric)
            if isinstance(resolved, Describe):
                return resolved
        if resolved is None and numeric and (not words or self.names_table(words)):
            measure = self.c.schema.measure(self.table, item.implied)
            resolved = (measure, self.table) if measure is not None else None
        if not isinstance(resolved, tuple):
            return self.c.unmapped_column(self.table, words or item.implied or "?")
        column, table = resolved
        reference = self.col(column, table)
        values = [self.c.literal(v, column) for v in item.values]
        if item.op == "between":
            low, high = sorted(item.values, key=lambda v: float(v) if isinstance(v, (int, float)) else 0)
            return f"{reference} BETWEEN {self.c.literal(low, column)} AND {self.c.literal(high, column)}"
        return f"{reference} {item.op} {values[0]}"

    def names_table(self, words: str) -> bool:
        """Whether the words name the main table itself ("orders over 500": no column named)."""
        table_score = score(Words(words), self.table.name, self.table.aliases)[0]
        column = self.c.schema.column(self.table, words)
        column_score = score(Words(words), column.name, column.aliases)[0] if column else 0
        return table_score > 0 and table_score >= column_score

    def measure(self, numeric: bool = True) -> tuple[Column, Table] | Describe | Unmapped:
        phrase = self.q.measure
        resolved = None
        if phrase:
            resolved = self.resolve(phrase, numeric=numeric)
            if isinstance(resolved, Describe):
                return resolved
        if resolved is None:
            column = self.c.schema.measure(self.table, self.q.implied or phrase)
            if column is None:
                return Unmapped(
                    self.c.t(
                        f"I could not tell which numeric column of {self.table.name} the question is about.",
                        f"无法确定问题指的是表 {self.table.name} 的哪个数值列。",
                    )
                )
            resolved = (column, self.table)
        return resolved

    def where_clause(self, extra: list[str] | None = None) -> str:
        conditions = self.where + (extra or [])
        return f" WHERE {' AND '.join(conditions)}" if conditions else ""

    def order_key(self) -> str:
        pk = self.table.primary_key
        return f", {self.col(pk)}" if pk else ""

    def all_columns(self) -> str:
        return "t.*" if self.multi else "*"

    # the statement

    def build(self) -> Plan | Describe | Unmapped:
        q = self.q
        kind = q.kind
        if kind == "superlative":
            return self.superlative()
        if kind == "group":
            group = self.group()
            if not isinstance(group, tuple):
                return group
            problem = self.apply_filters()
            return problem if problem is not None else self.grouped(*group)
        problem = self.apply_filters()
        if problem is not None:
            return problem
        source, where = self.source(), self.where_clause()
        if kind == "rows":
            order = f" ORDER BY {self.col(self.table.primary_key)}" if self.where and self.table.primary_key else ""
            return self.done(f"SELECT {self.all_columns()} FROM {source}{where}{order} LIMIT {q.limit}")
        if kind == "count":
            return self.done(f"SELECT COUNT(*) AS row_count FROM {source}{where}")
        if kind == "latest":
            column = self.c.schema.date_column(self.table)
            if column is None:
                return Unmapped(
                    self.c.t(
                        f"The table {self.table.name} has no date column to sort by.",
                        f"表 {self.table.name} 没有可排序的日期列。",
                    )
                )
            return self.done(
                f"SELECT {self.all_columns()} FROM {source}{where} ORDER BY {self.col(column)} DESC LIMIT {q.limit}"
            )
        measured = self.measure()
        if not isinstance(measured, tuple):
            return measured
        column, table = measured
        reference = self.col(column, table)
        source, where = self.source(), self.where_clause()
        if kind == "top":
            direction = "DESC" if q.descending else "ASC"
            limit = q.limit or 10
            order = f"ORDER BY {reference} {direction}"
            if q.ties:  # every row as good as the last of the N
                nth = f"SELECT {reference} FROM {source}{where} {order} LIMIT 1 OFFSET {limit - 1}"
                tied = self.where_clause([f"{reference} {'>=' if q.descending else '<='} ({nth})"])
                return self.done(f"SELECT {self.all_columns()} FROM {source}{tied} {order}{self.order_key()}")
            return self.done(
                f"SELECT {self.all_columns()} FROM {source}{where} {order}{self.order_key()} LIMIT {limit}"
            )
        if kind == "aggregate":
            alias = self.c.ident(f"{q.function.lower()}_{column.name}")
            return self.done(f"SELECT {q.function}({reference}) AS {alias} FROM {source}{where}")
        return Unmapped(None)

    def group(self) -> tuple[Column, Table] | Describe | Unmapped:
        resolved = self.resolve(self.q.group)
        if isinstance(resolved, Describe):
            return resolved
        if resolved is None:
            return self.c.unmapped_column(self.table, self.q.group)
        column, table = resolved
        if column.references and table is self.table:  # grouping by an id: show what it names
            target = self.c.schema.tables.get(column.references[0])
            if target is not None and target.columns is None:
                return Describe(target.name)
            if target is not None and target.label is not None:
                self.join(column, target)
                return target.label, target
        return column, table

    def grouped(self, column: Column, table: Table) -> Plan | Describe | Unmapped:
        q = self.q
        group = self.col(column, table)
        if q.function == "COUNT":
            value, alias = "COUNT(*)", "row_count"
        else:
            measured = self.measure()
            if not isinstance(measured, tuple):
                return measured
            measure, measure_table = measured
            value = f"{q.function}({self.col(measure, measure_table)})"
            alias = self.c.ident(f"{q.function.lower()}_{measure.name}")
        return self.done(
            f"SELECT {group}, {value} AS {alias} FROM {self.source()}{self.where_clause()} "
            f"GROUP BY {group} ORDER BY {alias} DESC, {group}"
        )

    def superlative(self) -> Plan | Describe | Unmapped:
        """ "which X has the most Y" (the best group, ties kept) or "the most expensive Z" (the extreme rows)."""
        q = self.q
        subject = q.subject
        if subject and not self.names_table(subject):
            resolved = self.resolve(subject)
            if isinstance(resolved, Describe):
                return resolved
            if resolved is not None:
                return self.best_group(*resolved)
        problem = self.apply_filters()
        if problem is not None:
            return problem
        measured = self.measure()
        if not isinstance(measured, tuple):
            return measured
        column, table = measured
        reference = self.col(column, table)
        function = "MAX" if q.descending else "MIN"
        source = self.source()
        extreme = f"SELECT {function}({reference}) FROM {source}{self.where_clause()}"
        where = self.where_clause([f"{reference} = ({extreme})"])
        order = f" ORDER BY {self.col(self.table.primary_key)}" if self.table.primary_key else ""
        return self.done(f"SELECT {self.all_columns()} FROM {source}{where}{order}")

    def best_group(self, column: Column, table: Table) -> Plan | Describe | Unmapped:
        q = self.q
        if column.references and table is self.table:
            target = self.c.schema.tables.get(column.references[0])
            if target is not None and target.columns is None:
                return Describe(target.name)
            if target is not None and target.label is not None:
                self.join(column, target)
                column, table = target.label, target
        problem = self.apply_filters()
        if problem is not None:
            return problem
        group = self.col(column, table)
        best_of = "MAX" if q.descending else "MIN"
        measure_words = q.measure.strip()
        if (
            not measure_words
            or self.names_table(measure_words)
            or (not q.function and not self._numeric(measure_words))
        ):
            value, alias = "COUNT(*)", "row_count"
        else:
            measured = self.measure()
            if not isinstance(measured, tuple):
                return measured
            measure, measure_table = measured
            # "the most sales": summed; "the highest price": the largest single value.
            function = q.function or ("SUM" if q.extreme in ("most", "fewest", "least", "最多", "最少") else best_of)
            value = f"{function}({self.col(measure, measure_table)})"
            alias = self.c.ident(f"{function.lower()}_{measure.name}")
        source, where = self.source(), self.where_clause()
        values = f"SELECT {value} AS v FROM {source}{where} GROUP BY {group}"
        return self.done(
            f"SELECT {group}, {value} AS {alias} FROM {source}{where} GROUP BY {group} "
            f"HAVING {value} = (SELECT {best_of}(v) FROM ({values}) best) ORDER BY {group}"
        )

    def _numeric(self, words: str) -> bool:
        return self.c.schema.column(self.table, words, numeric=True) is not None

    def done(self, sql: str) -> Plan:
        return Plan(sql, self.q, self.table)


def _lists(table: Table, phrase: str, own_only: bool = False) -> bool:
    """Whether ``table`` has a column (not a key) the phrase names; from the table list before it is described."""
    words = Words(phrase)
    if table.columns is not None:
        columns = [(c.name, c.aliases) for c in table.columns if not c.primary and not c.references]
    else:
        columns = [
            (name, []) for name in table.column_names if name.lower() != "id" and not name.lower().endswith("_id")
        ]
    if own_only:
        return any(words.find(n) >= 0 for name, aliases in columns for n in own_names(name, aliases))
    return any(score(words, name, aliases)[0] > 0 for name, aliases in columns)


def _ident(name: str, vendor: str) -> str:
    import re

    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        return name
    return exp.to_identifier(name, quoted=True).sql(dialect=vendor)
