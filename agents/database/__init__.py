"""The agent's database: ``open_database(settings)`` picks the vendor's class once."""

from __future__ import annotations

from typing import Any

from agents.database.base import Column, ExactResult, QueryError, QueryResult, SqlDatabase, Table, to_json_value
from agents.database.mysql import MysqlDatabase
from agents.database.sqlite import SqliteDatabase

__all__ = [
    "Column",
    "ExactResult",
    "MysqlDatabase",
    "QueryError",
    "QueryResult",
    "SqlDatabase",
    "SqliteDatabase",
    "Table",
    "open_database",
    "to_json_value",
]


def open_database(settings: dict[str, Any], **options: Any) -> SqlDatabase:
    """The agent database described by a Django-style settings dict (``DATABASES["agent"]``).

    ``options``: ``row_limit``, ``timeout`` (seconds per statement), ``pool_size``, ``schema_ttl``.
    """
    engine = settings["ENGINE"]
    vendor: type[SqlDatabase]
    if engine.endswith("sqlite3"):
        vendor = SqliteDatabase
    elif engine.endswith("mysql"):
        vendor = MysqlDatabase
    else:
        raise ValueError(f"unsupported database engine for the agent: {engine}")
    return vendor(settings, **options)
