"""The store's SQL: one ``executemany`` for a batch's rows of one model, built once per database.

The ORM's ``bulk_create`` compiles its SQL on every call, and every batch of every trace is
written here. These statements are built once per database vendor from Django's own parts
(``quote_name``, ``on_conflict_suffix_sql``, ``get_db_prep_save``), so they are the SQL the ORM
would write.
"""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any, cast

from django.conf import settings
from django.db import connection, models
from django.db.models.constants import OnConflict

from agents.events import to_json
from traces.models import Event, Run, Trace
from traces.store.projection import PROGRESS_FIELDS

# SQLite runs an executemany row by row, letting other threads have the GIL between rows (and
# waiting up to a switch interval to get it back): one statement for many rows is one step.
MULTI_ROW = 100


def _converter(field: models.Field) -> Callable[[Any], Any]:
    """``field.get_db_prep_save`` for this connection, without the generic path's dispatch for the
    types every event writes: UUIDs, aware datetimes and JSON take the vendors' steps directly;
    anything else goes the generic way."""
    kind = field.get_internal_type()
    target = getattr(field, "target_field", None)
    if kind == "UUIDField" or (
        kind == "ForeignKey" and target is not None and target.get_internal_type() == "UUIDField"
    ):
        if connection.features.has_native_uuid_field:
            return lambda value: value if value is None or isinstance(value, uuid.UUID) else uuid.UUID(str(value))
        return lambda value: (
            None if value is None else (value.hex if isinstance(value, uuid.UUID) else uuid.UUID(str(value)).hex)
        )
    if kind == "DateTimeField":
        adapt = connection.ops.adapt_datetimefield_value
        if settings.USE_TZ and connection.timezone_name == "UTC":
            # The vendors' step for an aware datetime is make_naive in the connection's zone, then
            # str(): for the UTC datetimes the store makes, that is the text without "+00:00".
            return lambda value: (
                value.isoformat(" ")[:-6] if type(value) is dt.datetime and value.tzinfo is dt.UTC
                else None if value is None else adapt(value)
            )  # fmt: skip
        return lambda value: None if value is None else adapt(value)
    if kind == "JSONField":
        return lambda value: None if value is None else to_json(value)
    if kind == "DecimalField":  # the vendors take a finite Decimal as it is (0, the default, is one)
        decimal = functools.partial(_prep, field, connection)
        return lambda value: (
            value if type(value) is Decimal and value.is_finite() else ZERO if value == 0 and type(value) is int
            else decimal(value)
        )  # fmt: skip
    if kind == "ForeignKey" and target is not None and target.get_internal_type() in _INTEGER_KEYS:
        key = functools.partial(_prep, field, connection)
        return lambda value: value if value is None or type(value) is int else key(value)
    if kind in _PLAIN:  # str and int go to the driver as they are
        plain, generic = _PLAIN[kind], functools.partial(_prep, field, connection)
        return lambda value: value if value is None or type(value) is plain else generic(value)
    return functools.partial(_prep, field, connection)


ZERO = Decimal(0)
_INTEGER_KEYS = {"AutoField", "BigAutoField", "IntegerField", "BigIntegerField"}
_PLAIN = {
    "CharField": str, "TextField": str, "IntegerField": int, "PositiveIntegerField": int,
    "SmallIntegerField": int, "BigIntegerField": int, "PositiveSmallIntegerField": int,
}  # fmt: skip


def _prep(field: models.Field, db: Any, value: Any) -> Any:
    return field.get_db_prep_save(value, db)


class Insert:
    """``INSERT`` of a model's rows (dicts by attname, or tuples in ``names`` order), as an upsert
    on the primary key of the ``upsert`` fields if given."""

    def __init__(self, model: type[models.Model], names: list[str], upsert: list[str] | None = None) -> None:
        self.table = model._meta.db_table
        self.fields = [cast(models.Field, model._meta.get_field(name)) for name in names]
        self.columns = [f.column or f.attname for f in self.fields]
        self.defaults = [f.get_default() for f in self.fields]
        self.upsert = [cast(models.Field, model._meta.get_field(name)) for name in upsert or []]
        self._sql: dict[str, str] = {}
        self._converters: dict[str, list[Callable[[Any], Any]]] = {}

    def sql(self) -> str:
        key = connection.alias
        if key not in self._sql:
            quote = connection.ops.quote_name
            sql = (
                f"INSERT INTO {quote(self.table)} ({', '.join(map(quote, self.columns))}) "
                f"VALUES ({', '.join(['%s'] * len(self.columns))})"
            )
            if self.upsert:
                suffix = connection.ops.on_conflict_suffix_sql(
                    self.fields, OnConflict.UPDATE, [f.column or f.attname for f in self.upsert], ["id"]
                )
                sql = f"{sql} {suffix}"
            self._sql[key] = sql
        return self._sql[key]

    def converters(self) -> list[Callable[[Any], Any]]:
        if connection.alias not in self._converters:
            self._converters[connection.alias] = [_converter(f) for f in self.fields]
        return self._converters[connection.alias]

    def write(self, rows: Iterable[dict[str, Any] | tuple]) -> None:
        converters = self.converters()
        prepared = []
        for row in rows:
            if isinstance(row, dict):
                values = [row.get(f.attname, default) for f, default in zip(self.fields, self.defaults, strict=True)]
            else:
                values = list(row)
            prepared.append([convert(v) for convert, v in zip(converters, values, strict=True)])
        if not prepared:
            return
        with connection.cursor() as cursor:
            if connection.vendor == "sqlite" and not self.upsert and len(prepared) > 1:
                for start in range(0, len(prepared), MULTI_ROW):
                    chunk = prepared[start : start + MULTI_ROW]
                    cursor.execute(self.multi_row_sql(len(chunk)), [v for row in chunk for v in row])
            else:
                cursor.executemany(self.sql(), prepared)

    def multi_row_sql(self, rows: int) -> str:
        """``INSERT … VALUES (…), (…), …`` for ``rows`` rows."""
        key = f"{connection.alias}:{rows}"
        if key not in self._sql:
            one = f"({', '.join(['%s'] * len(self.columns))})"
            self._sql[key] = self.sql().replace(one, ", ".join([one] * rows))
        return self._sql[key]


class Update(Insert):
    """``UPDATE … SET <fields> WHERE id = %s`` for rows that exist (the first name is the id)."""

    def sql(self) -> str:
        key = connection.alias
        if key not in self._sql:
            quote = connection.ops.quote_name
            assignments = ", ".join(f"{quote(column)} = %s" for column in self.columns[1:])
            self._sql[key] = f"UPDATE {quote(self.table)} SET {assignments} WHERE {quote(self.columns[0])} = %s"
        return self._sql[key]

    def write(self, rows: Iterable[dict[str, Any] | tuple]) -> None:
        order = list(zip(self.fields, self.defaults, self.converters(), strict=True))
        order = order[1:] + order[:1]  # the id last, for the WHERE
        prepared = [
            [convert(row.get(f.attname, default)) for f, default, convert in order]
            for row in rows
            if isinstance(row, dict)
        ]
        if not prepared:
            return
        with connection.cursor() as cursor:
            cursor.executemany(self.sql(), prepared)


# A trace's whole row. Its upsert leaves alone what no event says: who it belongs to, where it
# came from, the process that runs it (ingest claims a trace it picks up with its own update), and
# the feedback someone may have left meanwhile.
_NOT_PROJECTED = {"id", "owner", "rerun_of", "session_id", "source", "runner", "feedback", "feedback_comment"}
TRACE_ROWS = Insert(
    Trace,
    [f.name for f in Trace._meta.concrete_fields],
    [f.name for f in Trace._meta.concrete_fields if f.name not in _NOT_PROJECTED],
)
# A running trace's row: what its events move (traces.store.projection.PROGRESS_FIELDS).
TRACE_PROGRESS = Update(Trace, ["id", *PROGRESS_FIELDS])
RUN_ROWS = Insert(
    Run,
    [f.name for f in Run._meta.concrete_fields],
    [f.name for f in Run._meta.concrete_fields if f.name not in {"id", "trace"}],
)
# Event rows, as tuples in this order.
EVENT_ROWS = Insert(Event, ["trace", "seq", "event_type", "timestamp", "message_id", "run_id", "envelope"])
