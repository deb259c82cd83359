"""The OpenAI Agents SDK's traces in tracesite, each step live as it starts.

    from agents import set_trace_processors
    from tracesite_client.agents_sdk import TracesiteProcessor

    set_trace_processors([TracesiteProcessor("http://localhost:8000", token="ts_…")])

``TracesiteProcessor`` implements the SDK's ``TracingProcessor`` interface (it is duck-typed, so
this module imports nothing of the SDK: the SDK's package is called ``agents``, a name other
projects use too). An SDK trace becomes one trace in tracesite, under a root run named after the
workflow; its spans become runs:

- ``generation`` and ``response``: an LLM call, with its model, messages in and out, and tokens;
- ``function``: a tool call, with its arguments and its output;
- ``agent``: an agent's run; ``task`` (one ``Runner.run``), ``turn``, ``handoff``, ``guardrail``,
  ``custom`` and any other kind: a step with what the span carries.

The SDK's ids (``trace_<32 hex>``, ``span_<24 hex>``) become OTLP ids: a trace id's hex digits,
a span id's hash. The trace's ``group_id`` is the session. The first user message an LLM call was
sent is the trace's question; the last answer without tool calls is its answer. Spans are sent
by the same background sender as ``tracesite_client.Tracesite``: nothing here blocks or raises
into the agent.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from tracesite_client.client import _plain, tool_calls_of
from tracesite_client.otlp import SpanRecord, to_json
from tracesite_client.sender import Sender, resource

logger = logging.getLogger("tracesite_client")

TRACE_ID = re.compile(r"^trace_([0-9a-f]{32})$")
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def trace_hex(sdk_trace_id: str) -> str:
    """``trace_<32 hex>`` → the 32 hex digits; any other id → a hash of it."""
    found = TRACE_ID.match(sdk_trace_id)
    return found.group(1) if found else hashlib.blake2b(sdk_trace_id.encode(), digest_size=16).hexdigest()


def span_hex(sdk_id: str) -> str:
    """An SDK span id (``span_<24 hex>``, or anything) → 16 hex digits."""
    return hashlib.blake2b(sdk_id.encode(), digest_size=8).hexdigest()


def root_hex(sdk_trace_id: str) -> str:
    """The id of the root run that stands for the SDK trace itself."""
    return span_hex(f"{sdk_trace_id}:root")


def _nanos(iso: str | None) -> int:
    if not iso:
        return time.time_ns()
    try:
        moment = dt.datetime.fromisoformat(iso)
    except ValueError:
        return time.time_ns()
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return (moment - EPOCH) // dt.timedelta(microseconds=1) * 1000


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # content parts
        texts = []
        for part in value:
            part = _plain(part)
            if isinstance(part, dict):
                texts.append(str(part.get("text") or part.get("refusal") or part.get("transcript") or ""))
            else:
                texts.append(str(part))
        return "\n".join(t for t in texts if t)
    return to_json(_plain(value))


def chat_messages(items: Any) -> list[dict[str, Any]]:
    """Chat Completions messages or Responses API items (or a whole Response) as chat messages."""
    items = _plain(items)
    if items is None:
        return []
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    if isinstance(items, dict):
        items = [items]
    messages: list[dict[str, Any]] = []
    for item in items:
        item = _plain(item)
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if item.get("object") == "response" or (kind is None and isinstance(item.get("output"), list)):
            messages += chat_messages(item.get("output"))
        elif kind == "function_call":
            call = tool_calls_of([{"id": item.get("call_id") or item.get("id"), **item}])
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"] += call
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": call})
        elif kind == "function_call_output":
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": _text(item.get("output"))})
        elif item.get("role"):
            message: dict[str, Any] = {"role": item["role"], "content": _text(item.get("content"))}
            if item.get("tool_calls"):
                message["tool_calls"] = tool_calls_of(item["tool_calls"])
            if item.get("tool_call_id"):
                message["tool_call_id"] = item["tool_call_id"]
            messages.append(message)
    return messages


def _usage(usage: Any) -> dict[str, int]:
    usage = _plain(usage) or {}
    if not isinstance(usage, dict):
        return {}
    found = {}
    for key, names in (
        ("gen_ai.usage.input_tokens", ("input_tokens", "prompt_tokens")),
        ("gen_ai.usage.output_tokens", ("output_tokens", "completion_tokens")),
    ):
        for name in names:
            if isinstance(usage.get(name), int):
                found[key] = usage[name]
                break
    return found


def _llm_call(model: Any, config: Any, inputs: Any, outputs: Any, usage: Any) -> dict[str, Any]:
    attributes: dict[str, Any] = {"tracesite.run_type": "think", "gen_ai.operation.name": "chat"}
    if model:
        attributes["gen_ai.request.model"] = str(model)
    for key, value in (_plain(config) or {}).items():
        if isinstance(value, str | int | float | bool):
            attributes[f"gen_ai.request.{key}"] = value
    if inputs is not None:
        attributes["gen_ai.input.messages"] = chat_messages(inputs)
    if outputs is not None:
        attributes["gen_ai.output.messages"] = chat_messages(outputs)
    attributes.update(_usage(usage))
    return attributes


def describe(data: Any) -> tuple[str, dict[str, Any]]:
    """A span's data as (run name, attributes)."""
    kind = str(getattr(data, "type", "") or "span")
    if kind == "generation":
        attributes = _llm_call(data.model, data.model_config, data.input, data.output, data.usage)
        return f"generation {data.model or ''}".strip(), attributes
    if kind == "response":
        response = _plain(data.response) or {}
        model = response.get("model") if isinstance(response, dict) else None
        usage = data.usage or (response.get("usage") if isinstance(response, dict) else None)
        outputs = response.get("output") if isinstance(response, dict) and response else None
        return f"response {model or ''}".strip(), _llm_call(model, None, data.input, outputs, usage)
    if kind == "function":
        attributes = {
            "tracesite.run_type": "tool",
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": data.name,
            "gen_ai.tool.call.arguments": data.input or "",
        }
        if data.output is not None:
            output = _plain(data.output)
            attributes["gen_ai.tool.call.result"] = output if isinstance(output, str) else to_json(output)
        if data.mcp_data:
            attributes["agents.mcp_data"] = data.mcp_data
        return data.name, attributes
    step: dict[str, Any] = {"tracesite.run_type": "agent"}
    if kind == "agent":
        step["gen_ai.agent.name"] = data.name
        step["tracesite.inputs"] = {
            k: v
            for k, v in (("tools", data.tools), ("handoffs", data.handoffs), ("output_type", data.output_type))
            if v
        }
        return data.name, step
    if kind == "handoff":
        step["tracesite.inputs"] = {"from_agent": data.from_agent, "to_agent": data.to_agent}
        return f"handoff {data.from_agent} → {data.to_agent}", step
    if kind == "guardrail":
        step["tracesite.outputs"] = {"triggered": bool(data.triggered)}
        return f"guardrail {data.name}", step
    if kind == "custom":
        step["tracesite.inputs"] = _plain(data.data) or {}
        return data.name, step
    if kind in ("task", "turn"):
        step["tracesite.outputs"] = {"usage": data.usage} if data.usage else {}
        name = f"Runner.run ({data.name})" if kind == "task" else f"turn {data.turn} ({data.agent_name})"
        return name, step
    exported = data.export() if hasattr(data, "export") else {}
    step["tracesite.outputs"] = exported if isinstance(exported, dict) else {"output": exported}
    return str(getattr(data, "name", "") or kind), step


@dataclass
class _TraceState:
    root: SpanRecord
    session: str | None
    question: str = ""
    answer: str = ""
    error: tuple[str, str] | None = None


class TracesiteProcessor:
    """The SDK's ``TracingProcessor`` sending to tracesite at ``url`` with an API ``token``;
    ``service`` names the agent in the history. ``dropped`` and ``failed`` count what did not
    reach the server."""

    def __init__(self, url: str, token: str, service: str = "openai-agents", **sender_options: Any) -> None:
        self.sender = Sender(url, token, resource(service), **sender_options)
        self._traces: dict[str, _TraceState] = {}
        self._lock = threading.Lock()
        self._errors = 0

    @property
    def dropped(self) -> int:
        return self.sender.dropped

    @property
    def failed(self) -> int:
        return self.sender.failed + self._errors

    # The SDK's interface: each call returns at once and never raises.

    def on_trace_start(self, trace: Any) -> None:
        self._guard(self._trace_start, trace)

    def on_trace_end(self, trace: Any) -> None:
        self._guard(self._trace_end, trace)

    def on_span_start(self, span: Any) -> None:
        self._guard(self._span, span, False)

    def on_span_end(self, span: Any) -> None:
        self._guard(self._span, span, True)

    def force_flush(self) -> None:
        self.sender.flush(30.0)

    def shutdown(self, timeout: float | None = None) -> None:
        self.sender.close(10.0 if timeout is None else timeout)

    # The mapping.

    def _guard(self, method: Any, *args: Any) -> None:
        try:
            method(*args)
        except Exception as exc:  # noqa: BLE001 - the SDK calls this inline: nothing may reach the agent
            self._errors += 1
            if self._errors == 1:
                logger.warning("tracesite: an Agents SDK span could not be sent: %r", exc)

    def _trace_start(self, trace: Any) -> None:
        sdk_id = str(trace.trace_id)
        group = getattr(trace, "group_id", None)
        root = SpanRecord(trace_hex(sdk_id), root_hex(sdk_id), None, str(trace.name or "Agent workflow"))
        root.attributes["tracesite.run_type"] = "agent"
        inputs: dict[str, Any] = {"workflow": root.name}
        if getattr(trace, "metadata", None):
            inputs["metadata"] = trace.metadata
        root.attributes["tracesite.inputs"] = inputs
        if group:
            root.attributes["session.id"] = str(group)
        with self._lock:
            self._traces[sdk_id] = _TraceState(root, str(group) if group else None)
        self.sender.submit(root.pending())

    def _trace_end(self, trace: Any) -> None:
        with self._lock:
            state = self._traces.pop(str(trace.trace_id), None)
        if state is None:
            return
        root = state.root
        if state.question:
            root.attributes["tracesite.question"] = state.question
            root.attributes["tracesite.inputs"] = {**root.attributes["tracesite.inputs"], "question": state.question}
        if state.answer:
            root.attributes["tracesite.answer"] = state.answer
            root.attributes["tracesite.outputs"] = {"answer": state.answer}
        if state.error:
            root.fail(*state.error)
        root.end_ns = time.time_ns()
        self.sender.submit(root.final())

    def _span(self, span: Any, ended: bool) -> None:
        sdk_trace = str(span.trace_id)
        parent = span.parent_id
        name, attributes = describe(span.span_data)
        record = SpanRecord(
            trace_hex(sdk_trace),
            span_hex(str(span.span_id)),
            span_hex(str(parent)) if parent else root_hex(sdk_trace),
            name,
            attributes,
            _nanos(span.started_at),
        )
        with self._lock:
            state = self._traces.get(sdk_trace)
        if state is not None and state.session:
            attributes["session.id"] = state.session
        if not ended:
            self.sender.submit(record.pending())
            return
        record.end_ns = _nanos(span.ended_at)
        error = span.error
        if error:
            message = str(error.get("message") or "error")
            data = error.get("data") or {}
            detail = data.get("error") if isinstance(data, dict) else None
            record.fail("AgentsSDKError", f"{message}: {detail}" if detail else message)
            if state is not None and parent is None and attributes["tracesite.run_type"] == "agent":
                state.error = record.error
        if state is not None and attributes["tracesite.run_type"] == "think":
            self._remember(state, attributes)
        self.sender.submit(record.final())

    @staticmethod
    def _remember(state: _TraceState, attributes: dict[str, Any]) -> None:
        """The trace's question (the first user message sent) and answer (the last text reply)."""
        if not state.question:
            users = [m for m in attributes.get("gen_ai.input.messages", []) if m["role"] == "user" and m["content"]]
            if users:
                state.question = users[-1]["content"]
        for message in attributes.get("gen_ai.output.messages", []):
            if message.get("content") and not message.get("tool_calls"):
                state.answer = message["content"]
