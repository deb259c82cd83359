"""OTLP/HTTP trace requests: the body (protobuf or JSON, plain, gzip or deflate) decoded into
plain spans, and the answer in the request's encoding.

Parsing is ``opentelemetry-proto``'s. Its JSON mapping is protobuf's, which differs from
OTLP/JSON in one way that matters: OTLP/JSON sends trace and span ids as hex, protobuf's JSON as
base64. Ids are taken in either form. Limits hold before and after decompression: a body is
inflated in chunks and refused as soon as it grows past ``max_bytes``; a JSON body nested deeper
than ``MAX_BODY_DEPTH`` is refused too.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import functools
import json
import zlib
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
TRUNCATED = "… [truncated: {size:,} bytes in all]"
# Levels of lists and objects in an OTLP/JSON body, at most. Protobuf's reader takes 100 nested
# messages, two levels each at most (the message and the list it is in), so no export it would
# take is refused; a deeper body is, before code that recurses over it reaches Python's limit.
MAX_BODY_DEPTH = 200
TOO_DEEP = f"the body is not an OTLP export: JSON nested deeper than {MAX_BODY_DEPTH} levels"


class OtlpError(Exception):
    """A request that cannot be taken: its HTTP status and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclasses.dataclass
class SpanEvent:
    name: str
    time: dt.datetime | None
    attributes: dict[str, Any]


@dataclasses.dataclass
class Span:
    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits
    parent_span_id: str | None
    name: str
    start: dt.datetime | None
    end: dt.datetime | None  # None: still open (a pending span)
    attributes: dict[str, Any]
    resource: dict[str, Any]
    events: list[SpanEvent]
    status_code: int  # 0 unset, 1 ok, 2 error
    status_message: str
    scope: str = ""

    @functools.cached_property
    def pending(self) -> bool:
        """Logfire's convention: a copy of a span sent when it starts, before it ends."""
        return self.attributes.get("logfire.span_type") == "pending_span"


def content_type(header: str) -> str:
    kind = header.split(";", 1)[0].strip().lower()
    if kind in (PROTOBUF, "application/protobuf"):
        return PROTOBUF
    if kind == JSON:
        return JSON
    raise OtlpError(415, f"unsupported content type {kind or '(none)'!r}: send {PROTOBUF} or {JSON}")


def inflate(body: bytes, encoding: str, max_bytes: int) -> bytes:
    """The body decompressed, refused (413) as soon as it would exceed ``max_bytes``."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding == "gzip":
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == "deflate":
        inflater = zlib.decompressobj()  # zlib-wrapped, as HTTP's "deflate" is
    else:
        raise OtlpError(415, f"unsupported content encoding {encoding!r}: send gzip, deflate or none")
    out = bytearray()
    try:
        data = inflater.decompress(body, max_bytes + 1 - len(out))
        out += data
        while inflater.unconsumed_tail and len(out) <= max_bytes:
            out += inflater.decompress(inflater.unconsumed_tail, max_bytes + 1 - len(out))
    except zlib.error as exc:
        raise OtlpError(400, f"the body is not valid {encoding}: {exc}") from None
    if len(out) > max_bytes:
        raise OtlpError(413, f"the body is larger than {max_bytes:,} bytes once decompressed")
    return bytes(out)


def parse(body: bytes, kind: str) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    if kind == PROTOBUF:
        try:
            request.ParseFromString(body)
        except DecodeError as exc:
            raise OtlpError(400, f"the body is not an OTLP ExportTraceServiceRequest: {exc}") from None
        return request
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise OtlpError(400, f"the body is not valid JSON: {exc}") from None
    except RecursionError:  # nested deeper than the parser goes (about 1,000 levels)
        raise OtlpError(400, TOO_DEEP) from None
    if not isinstance(document, dict):
        raise OtlpError(400, "the body must be a JSON object (an ExportTraceServiceRequest)")
    _ids_to_base64(document)
    try:
        json_format.ParseDict(document, request, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise OtlpError(400, f"the body is not an OTLP ExportTraceServiceRequest: {exc}") from None
    return request


ID_FIELDS = {"traceId": 16, "trace_id": 16, "spanId": 8, "span_id": 8, "parentSpanId": 8, "parent_span_id": 8}


def _ids_to_base64(node: Any, depth: int = 1) -> None:
    """OTLP/JSON's hex ids (base64 ones left as they are) as protobuf's JSON mapping reads them;
    refuses (400) a document nested deeper than ``MAX_BODY_DEPTH``, so it recurses no deeper."""
    if depth > MAX_BODY_DEPTH:
        raise OtlpError(400, TOO_DEEP)
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ID_FIELDS and isinstance(value, str):
                node[key] = _id_base64(value, ID_FIELDS[key])
            elif isinstance(value, (dict, list)):
                _ids_to_base64(value, depth + 1)
    else:
        for value in node:
            if isinstance(value, (dict, list)):
                _ids_to_base64(value, depth + 1)


def _id_base64(value: str, size: int) -> str:
    if value == "":
        return ""
    if len(value) == 2 * size:
        try:
            return base64.b64encode(bytes.fromhex(value)).decode()
        except ValueError:
            pass
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != size:
        raise OtlpError(400, f"bad id {value[:80]!r}: expected {2 * size} hex digits (or {size} bytes in base64)")
    return value


def answer(kind: str, rejected: int = 0, message: str = "") -> bytes:
    """``ExportTraceServiceResponse``, with ``partial_success`` when spans were dropped."""
    response = ExportTraceServiceResponse()
    if rejected or message:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = message
    if kind == PROTOBUF:
        return response.SerializeToString()
    return json.dumps(json_format.MessageToDict(response)).encode()


def error_body(kind: str, message: str) -> bytes:
    """A ``google.rpc.Status``-shaped error, as OTLP/HTTP asks for (JSON or protobuf)."""
    status = Status(code=3, message=message)  # INVALID_ARGUMENT
    if kind == PROTOBUF:
        return status.SerializeToString()
    return json.dumps({"code": 3, "message": message}).encode()


def _value(value: Any, limit: int) -> Any:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        text = value.string_value
        return text if len(text) <= limit // 4 else _clip(text, limit)
    if kind == "bool_value":
        return value.bool_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        return value.double_value
    if kind == "bytes_value":
        return _clip(base64.b64encode(value.bytes_value).decode(), limit)
    if kind == "array_value":
        return [_value(v, limit) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value, limit) for kv in value.kvlist_value.values}
    return None


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit // 4 or len(text.encode()) <= limit:
        return text
    cut = text.encode()[:limit].decode(errors="ignore")
    return cut + TRUNCATED.format(size=len(text.encode()))


def attributes(pairs: Any, limit: int) -> dict[str, Any]:
    return {kv.key: _value(kv.value, limit) for kv in pairs}


def _time(nanos: int) -> dt.datetime | None:
    if not nanos:
        return None
    return dt.datetime.fromtimestamp(nanos / 1e9, dt.UTC)


def spans(request: ExportTraceServiceRequest, attribute_limit: int) -> list[Span]:
    """Every span of the request, flattened, with its resource's attributes."""
    found: list[Span] = []
    for resource_spans in request.resource_spans:
        resource = attributes(resource_spans.resource.attributes, attribute_limit)
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope.name
            for span in scope_spans.spans:
                attrs = attributes(span.attributes, attribute_limit)
                pending = attrs.get("logfire.span_type") == "pending_span"
                parent = span.parent_span_id.hex() if span.parent_span_id else None
                if pending:
                    # A pending span is a child of the span it stands for; that one's parent is in
                    # logfire.pending_parent_id.
                    parent = str(attrs.get("logfire.pending_parent_id") or "") or None
                    parent = _hex_id(parent, 8) if parent else None
                found.append(
                    Span(
                        trace_id=span.trace_id.hex(),
                        span_id=(span.parent_span_id.hex() if pending and span.parent_span_id else span.span_id.hex()),
                        parent_span_id=parent,
                        name=span.name,
                        start=_time(span.start_time_unix_nano),
                        end=None if pending else _time(span.end_time_unix_nano),
                        attributes=attrs,
                        resource=resource,
                        events=[
                            SpanEvent(e.name, _time(e.time_unix_nano), attributes(e.attributes, attribute_limit))
                            for e in span.events
                        ],
                        status_code=int(span.status.code),
                        status_message=span.status.message,
                        scope=scope,
                    )
                )
    return found


def _hex_id(value: str, size: int) -> str | None:
    """A span id in an attribute: hex, or base64 from exporters that send that."""
    value = value.strip().lower() if len(value) == 2 * size else value.strip()
    if len(value) == 2 * size:
        try:
            bytes.fromhex(value)
            return value
        except ValueError:
            return None
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw.hex() if len(raw) == size else None
