"""What an OpenTelemetry span is in the run tree: an LLM call (think), a tool call or a step, with
the inputs, outputs, model and token usage the instrumentation recorded.

A span is read by, in this order: ``tracesite.*`` attributes (set by this project's client and
processors), the OpenTelemetry GenAI conventions (current and deprecated names, OpenLLMetry's
flattened ``gen_ai.prompt.N.*``), OpenInference (Phoenix, Arize). Anything else is a step that
keeps its attributes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from typing import Any

import orjson

from agents.events import RunStatus, RunType, format_timestamp
from traces.ingest.otlp import Span
from traces.protocol import nested_deeper

THINK_OPERATIONS = {"chat", "text_completion", "generate_content", "completion", "responses"}
AGENT_OPERATIONS = {"invoke_agent", "create_agent"}
OPENINFERENCE_KINDS = {"LLM": RunType.THINK, "TOOL": RunType.TOOL, "AGENT": RunType.AGENT, "CHAIN": RunType.AGENT}
SQL_KEYS = ("sql", "query", "statement")
# The model of an LLM call: the one that answered, else the one asked for.
MODEL_KEYS = ("gen_ai.response.model", "gen_ai.request.model", "llm.model_name")
SESSION_KEYS = ("session.id", "gen_ai.conversation.id", "tracesite.session_id")
SESSION_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")
MAX_SPAN_EVENTS = 50  # span events kept in a run's metadata
MAX_ATTRIBUTE_DEPTH = 64  # levels of lists and objects read from an attribute's JSON (see _json)
SQL_START = re.compile(r"^\s*(select|with|show|describe|explain|insert|update|delete)\b", re.IGNORECASE)


@dataclasses.dataclass
class RunView:
    """A span as the run tree shows it."""

    run_type: RunType
    name: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    metadata: dict[str, Any]
    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    question: str = ""  # for a root span: the trace's question
    answer: str = ""  # for a root span, or an LLM call that answered without tool calls
    tool_calls: bool = False


def _json(value: Any) -> Any:
    """An attribute's value read as JSON when it is an object or an array, else as it is. One nested
    deeper than ``MAX_ATTRIBUTE_DEPTH`` stays text: nothing of it is lost, and nothing that
    recurses over it later (storing it, the pages) meets a structure that deep."""
    if isinstance(value, str):
        text = value.strip()
        if text[:1] in "[{":
            try:
                parsed = orjson.loads(text)
            except orjson.JSONDecodeError:
                try:  # what orjson refuses and Python's json reads: NaN, integers over 64 bits
                    parsed = json.loads(text)
                except (ValueError, RecursionError):  # not JSON, or nested deeper than it reads
                    return value
            if text.count("[") + text.count("{") > MAX_ATTRIBUTE_DEPTH and nested_deeper(parsed, MAX_ATTRIBUTE_DEPTH):
                return value
            return parsed
    return value


def _int(value: Any) -> int:
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def unflatten(attributes: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    """``prefix.0.role``, ``prefix.0.content``, ``prefix.1.tool_calls.0.name`` … as a list of dicts."""
    if prefix + ".0." not in _prefixes(attributes):
        return []
    items: dict[int, dict[str, Any]] = {}
    for key, value in attributes.items():
        if not key.startswith(prefix + "."):
            continue
        index, _, rest = key[len(prefix) + 1 :].partition(".")
        if not index.isdigit() or not rest:
            continue
        node = items.setdefault(int(index), {})
        parts = rest.split(".")
        for i, part in enumerate(parts[:-1]):
            following = parts[i + 1]
            if part.isdigit():
                continue
            if following.isdigit():
                node = node.setdefault(part, {}).setdefault(int(following), {})
            else:
                node = node.setdefault(part, {})
        node[parts[-1]] = value
    return [_lists(items[i]) for i in sorted(items)]


_PREFIXES_OF: dict[int, tuple[dict[str, Any], set[str]]] = {}


def _prefixes(attributes: dict[str, Any]) -> set[str]:
    """The ``name.0.`` prefixes of flattened lists among the keys, found once per span."""
    cached = _PREFIXES_OF.get(id(attributes))
    if cached is not None and cached[0] is attributes:
        return cached[1]
    found = set()
    for key in attributes:
        first = key.find(".0.")
        while first != -1:
            found.add(key[: first + 3])
            first = key.find(".0.", first + 1)
    _PREFIXES_OF.clear()  # one span at a time
    _PREFIXES_OF[id(attributes)] = (attributes, found)
    return found


def _lists(node: Any) -> Any:
    if isinstance(node, dict):
        if node and all(isinstance(k, int) for k in node):
            return [_lists(node[k]) for k in sorted(node)]
        return {k: _lists(v) for k, v in node.items()}
    return node


def _message(entry: dict[str, Any]) -> dict[str, Any]:
    """A chat message in the OpenAI shape the run panel shows, from any of the conventions."""
    entry = entry.get("message", entry)  # OpenInference nests under "message"
    role = entry.get("role") or "?"
    content = entry.get("content")
    if content is None and isinstance(entry.get("parts"), list):  # GenAI: parts
        texts, calls = [], []
        for part in entry["parts"]:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "text":
                texts.append(_text(part.get("content")))
            elif part.get("type") == "tool_call":
                calls.append({"id": part.get("id"), "name": part.get("name"), "arguments": part.get("arguments")})
            elif part.get("type") == "tool_call_response":
                texts.append(_text(part.get("response") or part.get("result")))
        content = "\n".join(texts)
        if calls:
            entry = {**entry, "tool_calls": calls}
    if content is None and isinstance(entry.get("contents"), list):  # OpenInference multimodal
        content = "\n".join(
            _text(c.get("message_content", c).get("text")) for c in entry["contents"] if isinstance(c, dict)
        )
    message: dict[str, Any] = {"role": role, "content": _text(content) if content is not None else None}
    found = entry.get("tool_calls")
    if isinstance(found, list) and found:
        message["tool_calls"] = [_tool_call(c) for c in found if isinstance(c, dict)]
    if entry.get("tool_call_id"):
        message["tool_call_id"] = entry["tool_call_id"]
    return message


def _tool_call(call: dict[str, Any]) -> dict[str, Any]:
    call = call.get("tool_call", call)
    function: dict[str, Any] = call["function"] if isinstance(call.get("function"), dict) else call
    arguments = function.get("arguments")
    return {
        "id": call.get("id") or "",
        "type": "function",
        "function": {
            "name": function.get("name") or "",
            "arguments": _text(arguments) if arguments is not None else "",
        },
    }


def _messages(value: Any) -> list[dict[str, Any]]:
    value = _json(value)
    if isinstance(value, dict):
        value = value.get("messages", [value])
    if not isinstance(value, list):
        return [{"role": "user", "content": _text(value)}] if value else []
    return [_message(v) for v in value if isinstance(v, dict)]


def _arguments(value: Any) -> dict[str, Any]:
    value = _json(value)
    if isinstance(value, dict):
        return value
    return {} if value in (None, "") else {"arguments": value}


def _with_sql(arguments: dict[str, Any], outputs: dict[str, Any]) -> None:
    """A SQL string among a tool's arguments gets the same SQL view as the built-in agent's."""
    for key in SQL_KEYS:
        value = arguments.get(key)
        if isinstance(value, str) and SQL_START.match(value):
            outputs.setdefault("sql", value)
            return


def _result(value: Any) -> dict[str, Any]:
    value = _json(value)
    if isinstance(value, dict) and isinstance(value.get("columns"), list) and isinstance(value.get("rows"), list):
        return {"output": _text(value), "columns": value["columns"], "rows": value["rows"]}
    return {"output": _text(value)}


def view(span: Span) -> RunView:
    a = span.attributes
    kind = str(a.get("tracesite.run_type") or "")
    operation = str(a.get("gen_ai.operation.name") or "")
    openinference = str(a.get("openinference.span.kind") or "").upper()
    if kind in (RunType.THINK, RunType.TOOL, RunType.AGENT):
        run_type = RunType(kind)
    elif operation in THINK_OPERATIONS or (not operation and any(k.startswith("gen_ai.prompt") for k in a)):
        run_type = RunType.THINK
    elif operation == "execute_tool":
        run_type = RunType.TOOL
    elif operation in AGENT_OPERATIONS:
        run_type = RunType.AGENT
    elif openinference in OPENINFERENCE_KINDS:
        run_type = OPENINFERENCE_KINDS[openinference]
    else:
        run_type = RunType.AGENT
    metadata: dict[str, Any] = {"span_name": span.name, "span_kind": openinference or operation or "span"}
    if span.scope:
        metadata["instrumentation"] = span.scope
    result = RunView(run_type, span.name, {}, {}, metadata)
    if run_type == RunType.THINK:
        _think(span, result)
    elif run_type == RunType.TOOL:
        _tool(span, result)
    else:
        _step(span, result)
    if "tracesite.inputs" in a:
        result.inputs = _arguments(a["tracesite.inputs"])
    if "tracesite.outputs" in a:
        outputs = _json(a["tracesite.outputs"])
        result.outputs = outputs if isinstance(outputs, dict) else {"output": _text(outputs)}
    if a.get("tracesite.question"):
        result.question = _text(a["tracesite.question"])
    if a.get("tracesite.answer"):
        result.answer = _text(a["tracesite.answer"])
    known = ("gen_ai.", "llm.", "input.", "output.", "tool.", "tracesite.", "logfire.", "openinference.")
    extra = {k: v for k, v in a.items() if not k.startswith(known)}
    if extra:
        metadata["attributes"] = extra
    return result


def model_of(attributes: dict[str, Any]) -> str:
    return _text(next((attributes[key] for key in MODEL_KEYS if attributes.get(key)), ""))


def _think(span: Span, result: RunView) -> None:
    a = span.attributes
    result.model = model_of(a)
    result.prompt_tokens = _int(
        a.get("gen_ai.usage.input_tokens") or a.get("gen_ai.usage.prompt_tokens") or a.get("llm.token_count.prompt")
    )
    result.completion_tokens = _int(
        a.get("gen_ai.usage.output_tokens")
        or a.get("gen_ai.usage.completion_tokens")
        or a.get("llm.token_count.completion")
    )
    messages = (
        _messages(a["gen_ai.input.messages"])
        if "gen_ai.input.messages" in a
        else _messages(a["gen_ai.prompt"])
        if "gen_ai.prompt" in a
        else [_message(m) for m in unflatten(a, "gen_ai.prompt")]
        or [_message(m) for m in unflatten(a, "llm.input_messages")]
        or _messages(a.get("input.value"))
    )
    system = _json(a.get("gen_ai.system_instructions"))
    if isinstance(system, list):  # parts: [{"type": "text", "content": …}]
        system = "\n".join(_text(p.get("content")) if isinstance(p, dict) else _text(p) for p in system)
    if system:
        messages.insert(0, {"role": "system", "content": _text(system)})
    outputs = (
        _messages(a["gen_ai.output.messages"])
        if "gen_ai.output.messages" in a
        else _messages(a["gen_ai.completion"])
        if "gen_ai.completion" in a
        else [_message(m) for m in unflatten(a, "gen_ai.completion")]
        or [_message(m) for m in unflatten(a, "llm.output_messages")]
        or _messages(a.get("output.value"))
    )
    content = "\n".join(m["content"] for m in outputs if m.get("content"))
    calls = [call for m in outputs for call in m.get("tool_calls", [])]
    last_user = next((m["content"] for m in reversed(messages) if m.get("role") == "user" and m.get("content")), "")
    result.inputs = {"content": last_user, "messages": messages, "message_count": len(messages)}
    tools = a.get("gen_ai.tool.definitions") or a.get("llm.tools")
    if tools:
        result.inputs["tools"] = _json(tools)
    elif any(k.startswith("llm.tools.") for k in a):
        result.inputs["tools"] = [_json(t.get("tool", t).get("json_schema")) for t in unflatten(a, "llm.tools")]
    result.outputs = {"content": content, "tool_calls": calls}
    parameters = _json(a.get("llm.invocation_parameters")) or {
        k.removeprefix("gen_ai.request."): v for k, v in a.items() if k.startswith("gen_ai.request.")
    }
    if parameters:
        result.metadata["parameters"] = parameters
    if result.model:
        result.metadata["model"] = result.model
    result.tool_calls = bool(calls)
    if content and not calls:
        result.answer = content


def _tool(span: Span, result: RunView) -> None:
    a = span.attributes
    result.name = _text(a.get("gen_ai.tool.name") or a.get("tool.name") or span.name)
    arguments = _arguments(
        a.get("gen_ai.tool.call.arguments") or a.get("tool.parameters") or a.get("input.value") or ""
    )
    result.inputs = arguments
    value = a.get("gen_ai.tool.call.result", a.get("output.value"))
    result.outputs = _result(value) if value is not None else {}
    _with_sql(arguments, result.outputs)
    if a.get("gen_ai.tool.call.id"):
        result.metadata["tool_call_id"] = a["gen_ai.tool.call.id"]


def _step(span: Span, result: RunView) -> None:
    a = span.attributes
    name = a.get("gen_ai.agent.name")
    if name:
        result.name = _text(name)
    value_in = a.get("input.value")
    value_out = a.get("output.value")
    if value_in is not None:
        parsed = _json(value_in)
        result.inputs = parsed if isinstance(parsed, dict) else {"input": _text(parsed)}
        result.question = _question(parsed)
    if value_out is not None:
        parsed = _json(value_out)
        result.outputs = parsed if isinstance(parsed, dict) else {"output": _text(parsed)}
        result.answer = _answer(parsed)


def _question(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        for key in ("question", "input", "query", "prompt", "message", "messages"):
            if key in value:
                found = value[key]
                if isinstance(found, list):
                    users = [m for m in _messages(found) if m.get("role") == "user"]
                    return users[-1]["content"] if users else ""
                return _text(found)
    if isinstance(value, list):
        users = [m for m in _messages(value) if m.get("role") == "user"]
        return (users[-1]["content"] or "") if users else ""
    return _text(value)


def _answer(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        for key in ("answer", "output", "final_output", "content", "response", "result"):
            if key in value:
                return _text(value[key])
    return _text(value)


# ---------------------------------------------------------------------------- a span, read once


@dataclasses.dataclass(slots=True)
class SpanRecord:
    """What recording a span needs of it, read where the export is decoded (traces.ingest.decoding):
    its place in the tree, its outcome and its run view, without its raw attributes."""

    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits
    parent_span_id: str | None
    name: str
    start: dt.datetime | None
    end: dt.datetime | None
    pending: bool  # a copy sent when the span started (Logfire's convention)
    status: RunStatus
    error: str | None
    error_type: str | None
    events: list[dict[str, Any]]  # its span events, for the run's metadata
    view: RunView
    session: str  # the live session its trace belongs to
    service: str  # the agent's name
    source: str  # otel, or sdk for tracesite_client
    question: str  # tracesite.question, which a pending copy may say before its span ends


def record(span: Span) -> SpanRecord:
    status, error, error_type = _outcome(span)
    return SpanRecord(
        trace_id=span.trace_id,
        span_id=span.span_id,
        parent_span_id=span.parent_span_id,
        name=span.name,
        start=span.start,
        end=span.end,
        pending=span.pending,
        status=status,
        error=error,
        error_type=error_type,
        events=[
            {"name": e.name, "time": format_timestamp(e.time) if e.time else None, "attributes": e.attributes}
            for e in span.events[:MAX_SPAN_EVENTS]
        ],
        view=view(span),
        session=session_of(span),
        service=service_of(span),
        source=source_of(span),
        question=_text(span.attributes.get("tracesite.question") or ""),
    )


def session_of(span: Span) -> str:
    for source in (span.attributes, span.resource):
        for key in SESSION_KEYS:
            if source.get(key):
                return SESSION_CHARS.sub("-", str(source[key]))[:100] or "otel"
    service = str(span.resource.get("service.name") or "otel")
    return SESSION_CHARS.sub("-", f"otel-{service}")[:100]


def service_of(span: Span) -> str:
    return str(
        span.resource.get("openinference.project.name")
        or span.attributes.get("openinference.project.name")
        or span.resource.get("service.name")
        or "otel"
    )[:100]


def source_of(span: Span) -> str:
    return "sdk" if span.resource.get("tracesite.source") == "sdk" else "otel"


def _outcome(span: Span) -> tuple[RunStatus, str | None, str | None]:
    exceptions = [e for e in span.events if e.name == "exception"]
    if span.status_code == 2 or exceptions:
        last = exceptions[-1].attributes if exceptions else {}
        error = str(last.get("exception.message") or span.status_message or "error")
        return RunStatus.ERROR, error, str(last.get("exception.type") or "SpanError")[:100]
    return RunStatus.SUCCESS, None, None


def answer_of(outputs: Any) -> str:
    """A root run's answer from its stored outputs (for a trace read back from the database)."""
    return _answer(outputs) if outputs else ""
