"""The tool-calling agent loop (ReAct style, as in the MyAgent framework).

Each step is an ``agent`` run whose children are one ``think`` run (one model call) and the
``tool`` runs the model asked for (run concurrently). The loop stops at a final answer, at
``max_steps`` (then one last call without tools asks for the best answer so far, and the trace
ends as an error, ``StepLimitReached``, keeping that answer), on an error, or when its task is
cancelled. It reports everything through a TraceSink and knows nothing of WebSockets or Django
models.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from agents.chat import ChatModel, ChatModelError, Completion
from agents.events import (
    AgentState,
    EventType,
    ProgressUpdate,
    RunStatus,
    RunType,
    StatusUpdate,
    StopReason,
    ThinkDelta,
    TraceCompleted,
    TraceOutcome,
    TraceStarted,
    clip,
    is_interruption,
)
from agents.sink import TraceSink
from agents.tools import Tool, ToolError, ToolResult
from agents.tracing import LlmUsage, RunRecord, Tracer

SYSTEM_PROMPT = "\n".join(
    [
        "You are a careful data analyst with read-only access to an SQL database.",
        "Answer the user's question from the data, in the user's language.",
        "1. Call describe_schema (no arguments) to see the tables, then with a table name to see its columns.",
        "2. Write ONE read-only SQL statement and call run_sql. If it is refused or fails, read the error, fix the SQL "
        "and try again.",
        "3. Answer briefly and show the rows as a markdown table. Never invent data you have not queried.",
    ]
)
FINAL_PROMPT = (
    "You have reached the step limit. Give your best final answer now from what you already know, "
    "without calling tools."
)
STEP_LIMIT_REACHED = "StepLimitReached"  # the error_type of a run stopped by max_steps
DELTA_INTERVAL = 0.1  # seconds between think_delta events
# Waits for the run's turn; reports (e.g. "queued: 2 runs ahead") through the callback it is given.
Admission = Callable[[Callable[[str], Awaitable[None]]], Awaitable[None]]


@dataclass
class AgentResult:
    status: TraceOutcome
    final_response: str
    error: str | None = None
    error_type: str | None = None
    steps: int = 0
    total_tokens: int = 0
    total_cost: float = 0.0
    stopped_by: str = ""  # StopReason
    metadata: dict[str, Any] = field(default_factory=dict)


class Agent:
    name = "sql_agent"

    def __init__(
        self,
        model: ChatModel,
        tools: list[Tool],
        max_steps: int = 10,
        system_prompt: str = SYSTEM_PROMPT,
        max_text_chars: int = 100_000,
    ) -> None:
        self.max_text_chars = max_text_chars  # model text an event carries; beyond it, cut with a marker
        self.model = model
        self.tools = {tool.name: tool for tool in tools}
        self.max_steps = max_steps
        self.system_prompt = system_prompt

    async def run(
        self,
        question: str,
        sink: TraceSink,
        metadata: dict[str, Any] | None = None,
        admission: Admission | None = None,
    ) -> AgentResult:
        """Run to the end, whatever happens; cancelling the calling task ends the trace as cancelled.

        ``admission``, if given, is awaited after ``trace_started`` and before the first step: the
        run waits there for its turn (a server running as many agents as it may), reporting through
        the callback it is given, which emits a ``status_update`` (state ``IDLE``) with the message.
        """
        run = _Run(self, question, Tracer(sink), metadata or {})
        return await run.execute(admission)


class _Run:
    def __init__(self, agent: Agent, question: str, tracer: Tracer, metadata: dict[str, Any]) -> None:
        self.agent = agent
        self.question = question
        self.tracer = tracer
        self.metadata = metadata
        self.messages: list[dict[str, Any]] = [
            {"role": "system", "content": agent.system_prompt},
            {"role": "user", "content": question},
        ]
        self.messages_recorded = 0  # how many of self.messages a think run has recorded
        self.tools_recorded: list[dict] | None = None  # the tool schema a think run recorded last
        self.step = 0
        self.usage_total = 0
        self.cost_total = 0.0
        self.started = time.perf_counter()

    @property
    def max_steps(self) -> int:
        return self.agent.max_steps

    async def waiting(self, message: str) -> None:
        await self.status(AgentState.IDLE, message, 0)

    async def status(self, state: AgentState, message: str, progress: int) -> None:
        await self.tracer.emit(
            EventType.STATUS_UPDATE,
            StatusUpdate(
                current_step=self.step,
                max_steps=self.max_steps,
                agent_state=str(state),
                message=message,
                progress_percentage=progress,
            ),
        )

    async def execute(self, admission: Admission | None = None) -> AgentResult:
        try:
            await self.tracer.emit(
                EventType.TRACE_STARTED,
                TraceStarted(
                    trace_id=str(self.tracer.trace_id),
                    trace_name=f"{self.agent.name}_execution",
                    request=self.question,
                    agent_name=self.agent.name,
                    max_steps=self.max_steps,
                    metadata={
                        "model": self.agent.model.name,
                        "offline_model": self.agent.model.offline,
                        "tools": list(self.agent.tools),
                        **self.metadata,
                    },
                ),
            )
            if admission is not None:
                await admission(self.waiting)
            await self.status(AgentState.RUNNING, "Agent started", 0)
            answer, stopped_by = await self.loop()
        except asyncio.CancelledError as exc:
            _current_task().uncancel()  # the cancellation is handled: finish recording it
            if is_interruption(exc):  # the process is stopping, not the user cancelling
                return await _uninterruptible(
                    self.end(TraceOutcome.ERROR, "", StopReason.ERROR, str(exc.args[0]), "Interrupted")
                )
            return await _uninterruptible(
                self.end(TraceOutcome.CANCELLED, "", StopReason.CANCELLED, "Cancelled by the user", "Cancelled")
            )
        except ChatModelError as exc:
            return await _uninterruptible(self.end(TraceOutcome.ERROR, "", StopReason.ERROR, str(exc), exc.error_type))
        except Exception as exc:  # noqa: BLE001 - a bug or a lost database: end the trace, never leave it running
            return await _uninterruptible(
                self.end(TraceOutcome.ERROR, "", StopReason.ERROR, f"{type(exc).__name__}: {exc}", type(exc).__name__)
            )
        if stopped_by == StopReason.MAX_STEPS:
            # The question was not answered within the steps allowed: the trace is an error, and
            # keeps the best answer the last call gave.
            error = f"stopped at the limit of {_steps(self.max_steps)}"
            return await _uninterruptible(self.end(TraceOutcome.ERROR, answer, stopped_by, error, STEP_LIMIT_REACHED))
        return await _uninterruptible(self.end(TraceOutcome.SUCCESS, answer, stopped_by))

    async def loop(self) -> tuple[str, StopReason]:
        tools = [tool.spec() for tool in self.agent.tools.values()]
        while self.step < self.max_steps:
            self.step += 1
            step = await self.tracer.start(f"step_{self.step}", RunType.AGENT, inputs={"step": self.step})
            await self.status(AgentState.RUNNING, f"Step {self.step}: thinking", self._progress())
            completion = await self.think(step, tools)
            if completion.tool_calls:
                results = await asyncio.gather(*(self.call_tool(step, call) for call in completion.tool_calls))
                self.messages.extend(results)
                names = ", ".join(call.name for call in completion.tool_calls)
                await self.tracer.finish(step, outputs={"tool_calls": len(completion.tool_calls)})
                await self.progress(f"step_{self.step}", f"Called {names}")
                continue
            await self.tracer.finish(step, outputs={"content": completion.content})
            await self.progress(f"step_{self.step}", "Answered")
            return completion.content, StopReason.ANSWER
        # Step limit: one last call without tools for the best answer from what is known.
        self.step += 1
        step = await self.tracer.start(
            "final_answer", RunType.AGENT, inputs={"reason": str(StopReason.MAX_STEPS)}, metadata={"forced_final": True}
        )
        await self.status(
            AgentState.RUNNING, f"Reached the limit of {_steps(self.max_steps)}; asking for a final answer", 95
        )
        self.messages.append({"role": "user", "content": FINAL_PROMPT})
        completion = await self.think(step, None)
        await self.tracer.finish(step, outputs={"content": completion.content})
        return completion.content, StopReason.MAX_STEPS

    def _progress(self) -> int:
        return min(99, int((self.step - 1) * 100 / self.max_steps))

    async def progress(self, name: str, description: str) -> None:
        await self.tracer.emit(
            EventType.PROGRESS_UPDATE,
            ProgressUpdate(
                current_step=self.step,
                total_steps=self.max_steps,
                step_name=name,
                step_description=description,
                percentage=min(100, int(self.step * 100 / self.max_steps)),
            ),
        )

    async def think(self, step: RunRecord, tools: list[dict] | None) -> Completion:
        prompt = _pending_prompt(self.messages)
        # What the model is sent: each call records the messages added since the call before
        # (the first one has the system prompt), so a trace stores the conversation once.
        sent = [
            _message_view(message, self.agent.max_text_chars) for message in self.messages[self.messages_recorded :]
        ]
        inputs: dict[str, Any] = {
            "content": clip(prompt, self.agent.max_text_chars),
            "message_count": len(self.messages),
            "messages": sent,
            "messages_from": self.messages_recorded,
        }
        if tools:
            inputs["tool_names"] = [tool["function"]["name"] for tool in tools]
            if tools != self.tools_recorded:
                inputs["tools"] = tools  # their schema, when it differs from the one recorded before
                self.tools_recorded = tools
        self.messages_recorded = len(self.messages)
        run = await self.tracer.start(
            "think",
            RunType.THINK,
            step,
            inputs=inputs,
            metadata={"model": self.agent.model.name, "parameters": self.agent.model.parameters()},
        )
        deltas = _DeltaThrottle(self.tracer, run, self.agent.max_text_chars)
        try:
            completion = await self.agent.model.complete(list(self.messages), tools, on_text=deltas.add)
            await deltas.flush()
        except ChatModelError as exc:
            await deltas.flush()
            await self.tracer.finish(run, RunStatus.ERROR, error=str(exc), error_type=exc.error_type)
            await self.tracer.finish(step, RunStatus.ERROR, error=str(exc), error_type=exc.error_type)
            raise
        self.usage_total += completion.usage.total_tokens
        self.cost_total += completion.cost
        calls = [call.as_openai() for call in completion.tool_calls]
        await self.tracer.finish(
            run,
            outputs={"content": clip(completion.content, self.agent.max_text_chars), "tool_calls": calls},
            usage=LlmUsage(completion.usage.as_dict(), completion.model or self.agent.model.name, completion.cost),
        )
        assistant: dict[str, Any] = {"role": "assistant", "content": completion.content or None}
        if calls:
            assistant["tool_calls"] = calls
        self.messages.append(assistant)
        return completion

    async def call_tool(self, step: RunRecord, call) -> dict[str, Any]:
        """Run one tool call; its result (or error) is the tool message the model reads next."""
        try:
            arguments = json.loads(call.arguments or "{}")
            if not isinstance(arguments, dict):
                raise ValueError("arguments must be a JSON object")
        except ValueError as exc:
            arguments = {"_raw": call.arguments}
            parse_error: str | None = f"invalid JSON in the arguments of {call.name}: {exc}"
        else:
            parse_error = None
        run = await self.tracer.start(
            call.name, RunType.TOOL, step, inputs=arguments, metadata={"tool_call_id": call.id}
        )
        tool = self.agent.tools.get(call.name)
        try:
            if parse_error:
                raise ToolError(parse_error, "InvalidArguments")
            if tool is None:
                raise ToolError(
                    f"there is no tool named {call.name!r}; tools: {', '.join(self.agent.tools)}", "UnknownTool"
                )
            result: ToolResult = await tool.run(arguments)
        except ToolError as exc:
            await self.tracer.finish(
                run,
                RunStatus.ERROR,
                outputs={"output": f"Error: {exc}", **exc.outputs},
                error=str(exc),
                error_type=exc.error_type,
            )
            return {"role": "tool", "tool_call_id": call.id, "content": f"Error: {exc}"}
        except asyncio.CancelledError:
            raise
        await self.tracer.finish(run, outputs={"output": result.output, **result.outputs})
        return {"role": "tool", "tool_call_id": call.id, "content": result.output}

    async def end(
        self,
        outcome: TraceOutcome,
        answer: str,
        stopped_by: StopReason,
        error: str | None = None,
        error_type: str | None = None,
    ) -> AgentResult:
        run_status = {TraceOutcome.CANCELLED: RunStatus.CANCELLED}.get(outcome, RunStatus.ERROR)
        if self.tracer.open_runs:
            await self.tracer.close_open_runs(run_status, error or "stopped", error_type or "Stopped")
        state = {
            TraceOutcome.SUCCESS: AgentState.FINISHED,
            TraceOutcome.ERROR: AgentState.ERROR,
            TraceOutcome.CANCELLED: AgentState.CANCELLED,
        }[outcome]
        message = {
            TraceOutcome.SUCCESS: "Finished",
            TraceOutcome.ERROR: f"Failed: {error}",
            TraceOutcome.CANCELLED: "Cancelled",
        }[outcome]
        if stopped_by == StopReason.MAX_STEPS:
            message = f"Stopped at the limit of {_steps(self.max_steps)}"
        await self.status(state, message, 100 if outcome == TraceOutcome.SUCCESS else self._progress())
        duration_ms = int((time.perf_counter() - self.started) * 1000)
        data = TraceCompleted(
            trace_id=str(self.tracer.trace_id),
            duration_ms=duration_ms,
            total_runs=self.tracer.total_runs,
            status=str(outcome),
            total_cost=round(self.cost_total, 8),
            total_tokens=self.usage_total,
            final_response=answer,
            stopped_by=str(stopped_by),
        )
        if error:
            data["error"], data["error_type"] = error, error_type
        await self.tracer.emit(EventType.TRACE_COMPLETED, data)
        return AgentResult(outcome, answer, error, error_type, self.step, self.usage_total, self.cost_total, stopped_by)


async def _uninterruptible(coro):
    """Finish recording the end of a trace even if a cancel arrives meanwhile."""
    task = asyncio.ensure_future(coro)
    while True:
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                return task.result()
            _current_task().uncancel()


def _steps(count: int) -> str:
    return f"{count} step" if count == 1 else f"{count} steps"


def _current_task() -> asyncio.Task[Any]:
    task = asyncio.current_task()
    assert task is not None, "called outside a task"
    return task


# A tool result as a think run records it among the messages it was sent: the whole result is the
# tool run's output (and the think's ``inputs.content``), so the message keeps its beginning.
RECORDED_TOOL_RESULT_CHARS = 2_000


def _message_view(message: dict[str, Any], limit: int) -> dict[str, Any]:
    """A chat message as recorded on a think run: its text clipped to ``limit``."""
    view = dict(message)
    if view.get("role") == "tool":
        limit = min(limit, RECORDED_TOOL_RESULT_CHARS)
    if isinstance(view.get("content"), str):
        view["content"] = clip(view["content"], limit)
    return view


def _pending_prompt(messages: list[dict[str, Any]]) -> str:
    """The text the model is answering: the messages after its last turn."""
    tail = []
    for message in reversed(messages):
        if message["role"] == "assistant":
            break
        tail.append(message)
    parts = []
    for message in reversed(tail):
        if message["role"] == "system":
            continue
        label = "tool result" if message["role"] == "tool" else message["role"]
        parts.append(f"[{label}] {message.get('content') or ''}")
    return "\n\n".join(parts)


class _DeltaThrottle:
    """Batches streamed text into think_delta events at most every DELTA_INTERVAL seconds, and
    streams at most ``limit`` characters of a call's text, as the final text is clipped: a model
    that streams without end fills neither the history nor the sockets (think_completed still
    carries the clipped whole)."""

    def __init__(self, tracer: Tracer, run: RunRecord, limit: int) -> None:
        self.tracer = tracer
        self.run = run
        self.buffer: list[str] = []
        self.last = 0.0
        self.limit = limit
        self.room = limit  # characters that may still be streamed
        self.cut = False  # the limit was reached and said so

    async def add(self, text: str) -> None:
        if self.cut:
            return
        if len(text) > self.room:
            self.buffer.append(text[: self.room])
            self.buffer.append(f"… [streamed text cut at {self.limit:,} characters]")
            self.room, self.cut = 0, True
            await self.flush()
            return
        self.room -= len(text)
        self.buffer.append(text)
        if time.perf_counter() - self.last >= DELTA_INTERVAL:
            await self.flush()

    async def flush(self) -> None:
        if self.buffer:
            delta, self.buffer = "".join(self.buffer), []
            self.last = time.perf_counter()
            await self.tracer.emit(EventType.THINK_DELTA, ThinkDelta(run_id=str(self.run.run_id), delta=delta))
