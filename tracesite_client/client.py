"""Trace an agent that has no OpenTelemetry: context managers and a decorator that send each
step to tracesite as it starts and as it ends.

    ts = Tracesite("http://localhost:8000", token="ts_…", service="my-agent")
    with ts.trace("how many orders per country?") as run:
        with ts.llm_call(model="gpt-4o-mini", messages=messages) as call:
            call.result(tool_calls=[{"name": "run_sql", "arguments": {"sql": sql}}], prompt_tokens=120)
        with ts.tool_call("run_sql", arguments={"sql": sql}) as tool:
            tool.result(rows)
        run.answer("France leads with 3 orders.")

Each span is a run of the trace: ``trace`` the root (the question and the answer), ``llm_call``
an LLM call, ``tool_call`` a tool call, ``step`` and ``@traced`` a step. The current span is kept
in a ``ContextVar``, so spans nest by themselves in threads started with
``contextvars.copy_context().run`` and in asyncio tasks (which copy the context they start in).
A span with no current span starts a trace of its own.

Sending never blocks or raises into the agent (``tracesite_client.sender``). An exception
leaving a ``with`` block is recorded as the span's error and raised on.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import functools
import inspect
import logging
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any, Self, TypeVar

from tracesite_client.otlp import SpanRecord, new_span_id, new_trace_id, to_json
from tracesite_client.sender import Sender, resource

logger = logging.getLogger("tracesite_client")

F = TypeVar("F", bound=Callable[..., Any])

_current: contextvars.ContextVar[Span | None] = contextvars.ContextVar("tracesite_client_span", default=None)


def _plain(value: Any) -> Any:
    """Objects of client libraries (pydantic models, such as the openai client's) as plain data."""
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        try:
            return dump(exclude_none=True)
        except Exception:  # noqa: BLE001 - any library's object; fall back to the value itself
            return value
    return value


def tool_calls_of(calls: Iterable[Any]) -> list[dict[str, Any]]:
    """Tool calls in the OpenAI shape, from that shape or ``{"name", "arguments", "id"}``."""
    found = []
    for index, call in enumerate(calls):
        call = _plain(call)
        if not isinstance(call, dict):
            continue
        function = call["function"] if isinstance(call.get("function"), dict) else call
        arguments = function.get("arguments")
        found.append(
            {
                "id": str(call.get("id") or f"call_{index}"),
                "type": "function",
                "function": {
                    "name": str(function.get("name") or ""),
                    "arguments": arguments if isinstance(arguments, str) else to_json(arguments or {}),
                },
            }
        )
    return found


class Span:
    """An open span of the trace; used as a context manager (``with`` or ``async with``)."""

    run_type = "agent"
    record: SpanRecord
    session: str | None

    def __init__(
        self,
        client: Tracesite,
        name: str,
        attributes: dict[str, Any],
        *,
        root: bool = False,
        session: str | None = None,
    ) -> None:
        self._client = client
        parent = None if root else _current.get()
        if parent is not None:
            trace_id, parent_id = parent.record.trace_id, parent.record.span_id
            self.session = parent.session
        else:
            trace_id, parent_id = new_trace_id(), None
            self.session = session or client.session
        self.record = SpanRecord(trace_id, new_span_id(), parent_id, name)
        self.record.attributes.update({"tracesite.run_type": self.run_type, **attributes})
        self._token: contextvars.Token[Span | None] | None = None
        self._ended = False

    @property
    def trace_id(self) -> str:
        """The trace's id: 32 hex digits, the trace's page is ``/traces/<its UUID form>/``."""
        return self.record.trace_id

    def set_attributes(self, attributes: dict[str, Any]) -> None:
        """Add attributes to the span: any OpenTelemetry name (``{"gen_ai.request.seed": 1}``)."""
        self.record.attributes.update(attributes)

    def fail(self, error: BaseException | str) -> None:
        """Mark the span failed without raising (an exception leaving the block does this too)."""
        if isinstance(error, BaseException):
            stack = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            self.record.fail(type(error).__name__, str(error) or type(error).__name__, stack)
        else:
            self.record.fail("Error", str(error))

    def start(self) -> Self:
        if self.session:
            self.record.attributes.setdefault("session.id", self.session)
        self.record.start_ns = time.time_ns()
        self._client._send(self.record, pending=True)
        self._token = _current.set(self)
        return self

    def end(self) -> None:
        if self._ended:
            return
        self._ended = True
        if self._token is not None:
            with contextlib.suppress(ValueError):  # ended in another context than it started in
                _current.reset(self._token)
            self._token = None
        self.record.end_ns = time.time_ns()
        self._client._send(self.record, pending=False)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is not None:
            self.fail(exc)
        self.end()

    async def __aenter__(self) -> Self:
        return self.start()

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.__exit__(exc_type, exc, tb)


class Step(Span):
    """A step of the agent (a run of type agent): what it was given and what it produced."""

    def output(self, value: Any) -> None:
        self.record.attributes["tracesite.outputs"] = value if isinstance(value, dict) else {"output": _plain(value)}


class TraceRun(Step):
    """The root of a trace: the question, and the answer once ``answer()`` is called."""

    def answer(self, text: str) -> None:
        self.record.attributes["tracesite.answer"] = text
        self.record.attributes["tracesite.outputs"] = {"answer": text}


class LlmCall(Span):
    """An LLM call: the messages sent, then what came back and the tokens it used."""

    run_type = "think"

    def result(
        self,
        content: str | None = None,
        tool_calls: Iterable[Any] | None = None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        model: str | None = None,
    ) -> None:
        message: dict[str, Any] = {"role": "assistant", "content": content}
        calls = tool_calls_of(tool_calls or [])
        if calls:
            message["tool_calls"] = calls
        attributes = self.record.attributes
        attributes["gen_ai.output.messages"] = [message]
        if prompt_tokens is not None:
            attributes["gen_ai.usage.input_tokens"] = int(prompt_tokens)
        if completion_tokens is not None:
            attributes["gen_ai.usage.output_tokens"] = int(completion_tokens)
        if model:
            attributes["gen_ai.response.model"] = model


class ToolCall(Span):
    """A tool call: its arguments, then its result. A result with ``columns`` and ``rows`` is
    shown as a table; an argument named ``sql`` (or ``query``) gets the SQL view."""

    run_type = "tool"

    def result(self, output: Any) -> None:
        output = _plain(output)
        self.record.attributes["gen_ai.tool.call.result"] = output if isinstance(output, str) else to_json(output)


class Tracesite:
    """A connection to a tracesite server: ``url`` (``http://localhost:8000``) and an API token
    (``python manage.py apitoken create USER``). ``service`` names the agent in the history.

    ``dropped`` and ``failed`` count what did not reach the server; ``flush(timeout)`` waits for
    what is queued, ``close()`` flushes and stops (it also runs when the interpreter exits).
    """

    def __init__(
        self,
        url: str,
        token: str,
        service: str = "my-agent",
        *,
        session: str | None = None,
        exit_timeout: float = 5.0,
        **sender_options: Any,
    ) -> None:
        self.service = service
        self.session = session
        self.sender = Sender(url, token, resource(service), **sender_options)
        self._exit_timeout = exit_timeout
        self._internal_errors = 0
        atexit.register(self._at_exit)

    # Counters.

    @property
    def dropped(self) -> int:
        return self.sender.dropped

    @property
    def failed(self) -> int:
        return self.sender.failed + self._internal_errors

    @property
    def sent(self) -> int:
        return self.sender.sent

    # Spans.

    def trace(self, question: str, *, name: str | None = None, session: str | None = None) -> TraceRun:
        """The root of a new trace (even inside another one); ``run.answer(text)`` gives its
        answer. ``session`` groups traces (``/sessions/<id>/``) and is the live session."""
        attributes = {"tracesite.question": question, "tracesite.inputs": {"question": question}}
        return TraceRun(self, name or self.service, attributes, root=True, session=session)

    def llm_call(
        self,
        model: str,
        messages: Iterable[Any] = (),
        *,
        name: str | None = None,
        tools: Iterable[Any] | None = None,
        **parameters: Any,
    ) -> LlmCall:
        """An LLM call to ``model`` with ``messages`` (``[{"role", "content"}, …]``); ``tools``
        are the tools offered, ``parameters`` the request's (``temperature=0`` …)."""
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": model,
            "gen_ai.input.messages": [_plain(m) for m in messages],
        }
        if tools is not None:
            attributes["gen_ai.tool.definitions"] = [_plain(t) for t in tools]
        for key, value in parameters.items():
            attributes[f"gen_ai.request.{key}"] = value
        return LlmCall(self, name or f"chat {model}", attributes)

    def tool_call(self, name: str, arguments: dict[str, Any] | None = None, *, call_id: str | None = None) -> ToolCall:
        """A call of the tool ``name`` with ``arguments``; ``tool.result(output)`` gives its result."""
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": name,
            "gen_ai.tool.call.arguments": arguments or {},
        }
        if call_id:
            attributes["gen_ai.tool.call.id"] = call_id
        return ToolCall(self, name, attributes)

    def step(self, name: str, inputs: dict[str, Any] | None = None) -> Step:
        """A step of the agent; ``step.output(value)`` gives what it produced."""
        return Step(self, name, {"tracesite.inputs": inputs or {}})

    def traced(self, name: str | Callable[..., Any] | None = None, *, capture: bool = True) -> Any:
        """A decorator: each call of the function (sync or async) is a step, with its arguments
        as inputs and its return value as output (``capture=False`` records neither).
        ``@ts.traced``, ``@ts.traced("name")``."""
        if callable(name):
            return self.traced()(name)

        def decorate(function: F) -> F:
            label = name or function.__qualname__
            signature = inspect.signature(function)

            def open_step(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Step:
                inputs: dict[str, Any] = {}
                if capture:
                    try:
                        bound = signature.bind_partial(*args, **kwargs)
                        inputs = {k: _plain(v) for k, v in bound.arguments.items() if k not in ("self", "cls")}
                    except TypeError:
                        inputs = {}
                return self.step(label, inputs)

            if inspect.iscoroutinefunction(function):

                @functools.wraps(function)
                async def run_async(*args: Any, **kwargs: Any) -> Any:
                    with open_step(args, kwargs) as step:
                        value = await function(*args, **kwargs)
                        if capture:
                            step.output(value)
                        return value

                return run_async  # type: ignore[return-value]

            @functools.wraps(function)
            def run(*args: Any, **kwargs: Any) -> Any:
                with open_step(args, kwargs) as step:
                    value = function(*args, **kwargs)
                    if capture:
                        step.output(value)
                    return value

            return run  # type: ignore[return-value]

        return decorate

    # Delivery.

    def _send(self, record: SpanRecord, pending: bool) -> None:
        try:
            self.sender.submit(record.pending() if pending else record.final())
        except Exception as exc:  # noqa: BLE001 - a span that cannot be encoded must not stop the agent
            self._internal_errors += 1
            logger.warning("tracesite: span %r not sent: %r", record.name, exc)

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until every span so far has been sent (or given up on); False on timeout."""
        return self.sender.flush(timeout)

    def close(self, timeout: float | None = 10.0) -> bool:
        atexit.unregister(self._at_exit)
        return self.sender.close(timeout)

    def _at_exit(self) -> None:
        self.sender.close(self._exit_timeout)

    def __enter__(self) -> Tracesite:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
