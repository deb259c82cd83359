"""Spans as OTLP/JSON, built by hand: the shape ``POST /v1/traces`` takes as ``application/json``.

OTLP/JSON writes trace and span ids as lowercase hex, 64-bit integers as strings and attribute
values as ``{"stringValue": …}``-style objects. Lists and dicts are sent as JSON strings, which is
how the GenAI conventions carry messages and tool arguments.

A span that has started but not ended is announced by its *pending copy* (Logfire's convention,
which the server reads): a span of its own, a child of the real one, with the real span's
attributes plus ``logfire.span_type = "pending_span"`` and ``logfire.pending_parent_id`` (the real
span's parent, or ``""`` for a root), starting and ending when the real span started.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

PENDING_TYPE = "logfire.span_type"
PENDING_PARENT = "logfire.pending_parent_id"
PENDING = "pending_span"

STATUS_ERROR = 2
KIND_INTERNAL = 1
SCOPE = "tracesite_client"


def new_trace_id() -> str:
    """122 random bits in the shape of a version-4 UUID: tracesite keeps a trace under its id as a
    UUID, and MariaDB's UUID columns refuse some 128-bit values that are not RFC 4122 UUIDs."""
    return uuid.uuid4().hex


def new_span_id() -> str:
    return secrets.token_hex(8)


def to_json(value: Any) -> str:
    """``value`` as JSON text; what JSON cannot hold is written as its ``str()``."""
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (ValueError, TypeError, RecursionError):  # a cycle, keys JSON cannot have
        return repr(value)


def any_value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, str):
        return {"stringValue": value}
    return {"stringValue": to_json(value)}


def key_values(attributes: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": key, "value": any_value(value)} for key, value in attributes.items() if value is not None]


@dataclass
class SpanRecord:
    """One span as this package sends it: mutable until it ends."""

    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits
    parent_id: str | None
    name: str
    attributes: dict[str, Any] = field(default_factory=dict)
    start_ns: int = field(default_factory=time.time_ns)
    end_ns: int | None = None
    error: tuple[str, str] | None = None  # (type, message)
    events: list[dict[str, Any]] = field(default_factory=list)

    def fail(self, error_type: str, message: str, stacktrace: str = "") -> None:
        self.error = (error_type, message)
        attributes = {"exception.type": error_type, "exception.message": message}
        if stacktrace:
            attributes["exception.stacktrace"] = stacktrace
        self.events.append({"name": "exception", "time_ns": time.time_ns(), "attributes": attributes})

    def pending(self) -> dict[str, Any]:
        """The pending copy that says this span has started."""
        attributes = {**self.attributes, PENDING_TYPE: PENDING, PENDING_PARENT: self.parent_id or ""}
        return _span(self.trace_id, new_span_id(), self.span_id, self.name, attributes, self.start_ns, self.start_ns)

    def final(self) -> dict[str, Any]:
        """The span as it ended."""
        body = _span(
            self.trace_id,
            self.span_id,
            self.parent_id,
            self.name,
            self.attributes,
            self.start_ns,
            self.end_ns or time.time_ns(),
        )
        if self.events:
            body["events"] = [
                {"name": e["name"], "timeUnixNano": str(e["time_ns"]), "attributes": key_values(e["attributes"])}
                for e in self.events
            ]
        if self.error is not None:
            body["status"] = {"code": STATUS_ERROR, "message": self.error[1]}
        return body


def _span(
    trace_id: str, span_id: str, parent_id: str | None, name: str, attributes: dict[str, Any], start: int, end: int
) -> dict[str, Any]:
    return {
        "traceId": trace_id,
        "spanId": span_id,
        "parentSpanId": parent_id or "",
        "name": name,
        "kind": KIND_INTERNAL,
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(end),
        "attributes": key_values(attributes),
    }


def export_request(spans: list[dict[str, Any]], resource: dict[str, Any], version: str) -> dict[str, Any]:
    """An ``ExportTraceServiceRequest`` with ``spans`` under one resource."""
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": key_values(resource)},
                "scopeSpans": [{"scope": {"name": SCOPE, "version": version}, "spans": spans}],
            }
        ]
    }
