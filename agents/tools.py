"""The tools the model may call. Name, description and JSON-schema parameters are what it sees."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from agents.database import QueryError, SqlDatabase
from agents.events import to_json
from agents.guard import SqlRejected


class ToolError(Exception):
    """The tool run failed; the message goes back to the model so it can correct itself."""

    def __init__(self, message: str, error_type: str = "ToolError", outputs: dict[str, Any] | None = None):
        super().__init__(message)
        self.error_type = error_type
        self.outputs = outputs or {}


@dataclass
class ToolResult:
    output: str  # the text the model reads
    outputs: dict[str, Any] = field(default_factory=dict)  # extra structured fields for the trace


class Tool(ABC):
    name: str
    description: str
    parameters: dict[str, Any]

    def spec(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }

    @abstractmethod
    async def run(self, arguments: dict[str, Any]) -> ToolResult: ...


MAX_LISTED_COLUMNS = 1000  # the table list names each table's columns up to this many in all
ESTIMATES_NOTE = "estimated from the database's statistics (null: none kept); SELECT COUNT(*) counts exactly"


class SchemaTool(Tool):
    name = "describe_schema"
    description = (
        "Look at the analytics database. Without arguments: list its tables with their estimated row counts "
        "and aliases (other names people use for them, e.g. in Chinese). With `table`: that table's columns "
        "(type, key, nullability, aliases) and a few sample values. Call this before writing SQL. Row counts "
        "here are the database's estimates; count with SQL when an exact number is asked for."
    )
    parameters = {
        "type": "object",
        "properties": {"table": {"type": "string", "description": "A table name from the table list."}},
        "additionalProperties": False,
    }

    def __init__(self, database: SqlDatabase) -> None:
        self.database = database

    async def run(self, arguments: dict[str, Any]) -> ToolResult:
        table = arguments.get("table")
        if table is not None and not isinstance(table, str):
            raise ToolError("`table` must be a string", "InvalidArguments")
        try:
            if not table:
                tables = await asyncio.to_thread(self.database.tables)
                listing = [
                    {
                        "name": t.name,
                        "estimated_rows": t.estimated_rows,
                        "aliases": t.aliases,
                        "columns": t.column_names,
                    }
                    for t in tables
                ]
                if sum(len(t.column_names) for t in tables) > MAX_LISTED_COLUMNS:  # a big schema: names on describe
                    for entry in listing:
                        del entry["columns"]
                return ToolResult(
                    to_json({"dialect": self.database.dialect_label, "row_counts": ESTIMATES_NOTE, "tables": listing}),
                    {
                        "columns": ["table", "rows (estimate)", "aliases"],
                        "rows": [[t.name, t.estimated_rows, ", ".join(t.aliases)] for t in tables],
                    },
                )
            described = await asyncio.to_thread(self.database.describe, table)
        except QueryError as exc:
            raise ToolError(str(exc), exc.error_type) from None
        columns = [
            {
                "name": c.name,
                "type": c.type,
                "nullable": c.nullable,
                "key": c.key,
                "aliases": c.aliases,
                "samples": c.samples,
            }
            for c in described.columns
        ]
        return ToolResult(
            to_json(
                {
                    "table": described.name,
                    "estimated_rows": described.estimated_rows,
                    "aliases": described.aliases,
                    "columns": columns,
                }
            ),
            {
                "columns": ["column", "type", "key", "nullable", "aliases", "samples"],
                "rows": [
                    [c.name, c.type, c.key, c.nullable, ", ".join(c.aliases), ", ".join(map(str, c.samples))]
                    for c in described.columns
                ],
            },
        )


class QueryTool(Tool):
    name = "run_sql"
    description = (
        "Run ONE read-only SQL statement on the analytics database and get the columns and rows back. "
        "Accepted: SELECT (WITH, UNION, joins, subqueries, window functions) calling ordinary scalar, "
        "aggregate, window, date, string, math and JSON-reading functions; SHOW [FULL] TABLES, "
        "SHOW COLUMNS/INDEX/CREATE TABLE <table>, SHOW TABLE STATUS (at most LIKE 'pattern', no WHERE); "
        "DESCRIBE <table>; EXPLAIN SELECT. Everything else is refused: writes, several statements, "
        "variables, server/user/session functions, SLEEP, LOAD_FILE, other schemas. At most {limit} rows "
        "come back; aggregate in SQL rather than fetching everything. Dialect: {dialect}."
    )
    parameters = {
        "type": "object",
        "properties": {"sql": {"type": "string", "description": "One read-only SQL statement."}},
        "required": ["sql"],
        "additionalProperties": False,
    }

    def __init__(self, database: SqlDatabase) -> None:
        self.database = database
        self.description = self.description.format(limit=database.row_limit, dialect=database.dialect_family)

    async def run(self, arguments: dict[str, Any]) -> ToolResult:
        sql = arguments.get("sql")
        if not isinstance(sql, str) or not sql.strip():
            raise ToolError("`sql` is required: one read-only SQL statement", "InvalidArguments")
        try:
            result = await self.database.run(sql)
        except SqlRejected as exc:
            raise ToolError(
                f"query rejected by the SQL guard: {exc}", "SqlRejected", {"sql": sql, "guard": "rejected"}
            ) from None
        except QueryError as exc:
            raise ToolError(
                f"the database returned an error: {exc}", exc.error_type, {"sql": sql, "guard": "allowed"}
            ) from None
        body = {
            "columns": result.columns,
            "rows": result.rows,
            "row_count": len(result.rows),
            "truncated": result.truncated,
        }
        notes = []
        if result.size_limited:
            notes.append(
                f"only the first {len(result.rows)} rows fit in the {self.database.result_bytes:,}-byte result limit"
            )
        elif result.truncated:
            notes.append(f"only the first {self.database.row_limit} rows are shown")
        if result.cut_cells:
            notes.append(
                f"{result.cut_cells} values longer than {self.database.cell_chars:,} characters were cut (marked)"
            )
        if notes:
            body["note"] = "; ".join(notes) + ": aggregate, filter or select fewer columns for the rest"
        return ToolResult(
            to_json(body),
            {
                "sql": result.sql,
                "guard": "allowed",
                "columns": result.columns,
                "rows": result.rows,
                "row_count": len(result.rows),
                "truncated": result.truncated,
                "cut_cells": result.cut_cells,
                "query_ms": result.duration_ms,
                **({"note": body["note"]} if "note" in body else {}),
            },
        )
