"""The trace in a terminal, event by event (``runagent``, ``replaytrace``).

On a terminal the answer is rendered from markdown in a box and SQL is highlighted. Into a pipe
or a file, what the model and the agent wrote (answers, SQL, tool arguments) is printed as
written, each line whole, so that it can be read back or copied: rich would otherwise break it
at 80 columns.
"""

from __future__ import annotations

from typing import IO, Any, cast

from django.core.management.base import OutputWrapper
from rich.console import Console
from rich.markdown import Markdown
from rich.panel import Panel
from rich.status import Status
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from agents.events import EventType, RunFields, StopReason, TokenUsage, TraceCompleted, TraceStarted

MAX_ROWS = 20


def terminal_stream(output: OutputWrapper) -> IO[str]:
    """The stream under a management command's ``self.stdout``, for writers that end their own lines."""
    return cast(IO[str], output._out)


class TerminalView:
    """Renders protocol envelopes; ``quiet`` shows only the final answer (errors are the caller's to report)."""

    def __init__(self, console: Console | None = None, quiet: bool = False) -> None:
        self.console = console or Console()
        self.quiet = quiet
        self.spinner: Status | None = None
        self.shown_errors: set[str] = set()  # error texts already on screen, not to be repeated

    def __call__(self, message: dict[str, Any]) -> None:
        kind = message["event_type"]
        data = message.get("data") or {}
        if self.quiet:
            if kind == EventType.TRACE_COMPLETED and data.get("final_response"):
                self._write(Text(data["final_response"]))
            return
        handler = getattr(self, f"on_{kind}", None)
        if handler is not None:
            handler(data)

    def _write(self, text: Text) -> None:
        """Text as written: a terminal wraps it for reading; a pipe or a file gets each line whole."""
        self.console.print(text, soft_wrap=not self.console.is_terminal)

    def _sql(self, sql: str) -> None:
        if self.console.is_terminal:
            self.console.print(Syntax(sql, "sql", word_wrap=True))
        else:
            self._write(Text(sql))

    def _error(self, text: str, error: str) -> None:
        if error not in self.shown_errors:
            self.shown_errors.add(error)
            self._write(Text(text, style="red"))

    def _spin(self, text: str) -> None:
        self._stop()
        if self.console.is_terminal:
            spinner = self.spinner = self.console.status(text)
            spinner.start()

    def _stop(self) -> None:
        if self.spinner is not None:
            self.spinner.stop()
            self.spinner = None

    def on_trace_started(self, data: TraceStarted) -> None:
        model = (data.get("metadata") or {}).get("model", "")
        body = Text(data.get("request", ""), style="bold")
        self.console.print(Panel(body, title=f"{data.get('agent_name')} · {model}", expand=False))
        # Below the box, not in its border, where a short question would cut it: the id replaytrace takes.
        self._write(Text(f"trace {data.get('trace_id')}", style="dim"))

    def on_step_started(self, data: RunFields) -> None:
        self.console.rule(Text(data.get("name", ""), style="cyan"), align="left")

    def on_think_started(self, data: RunFields) -> None:
        self._spin("Thinking…")

    def on_think_completed(self, data: RunFields) -> None:
        self._stop()
        usage = data.get("token_usage") or TokenUsage(prompt_tokens=0, completion_tokens=0, total_tokens=0)
        self.console.print(
            Text(
                f"think · {data.get('duration_ms')} ms · {usage.get('total_tokens', 0)} tokens · "
                f"{data.get('model', '')}",
                style="dim",
            )
        )
        content = (data.get("outputs") or {}).get("content")
        if content and (data.get("outputs") or {}).get("tool_calls"):
            self._write(Text(content))
        for call in (data.get("outputs") or {}).get("tool_calls") or []:
            function = call.get("function", {})
            self._write(Text(f"→ {function.get('name')}({function.get('arguments')})", style="magenta"))

    def on_tool_started(self, data: RunFields) -> None:
        self._spin(f"Running {data.get('name')}…")

    def on_tool_completed(self, data: RunFields) -> None:
        self._stop()
        outputs = data.get("outputs") or {}
        self.console.print(Text(f"tool {data.get('name')} · {data.get('duration_ms')} ms", style="dim"))
        if outputs.get("sql"):
            self._sql(outputs["sql"])
        if outputs.get("columns"):
            table = Table(show_lines=False, header_style="bold")
            for column in outputs["columns"]:
                table.add_column(str(column))
            rows = outputs.get("rows") or []
            for row in rows[:MAX_ROWS]:
                table.add_row(*["" if v is None else str(v) for v in row])
            self.console.print(table)
            if len(rows) > MAX_ROWS or outputs.get("truncated"):
                self.console.print(
                    Text(
                        f"({len(rows)} rows{', more in the database' if outputs.get('truncated') else ''})", style="dim"
                    )
                )

    def on_run_error(self, data: RunFields) -> None:
        self._stop()
        error = data.get("error") or ""
        self._error(f"✗ {data.get('name')} {data.get('status')}: {data.get('error_type')}: {error}", error)
        sql = (data.get("outputs") or {}).get("sql")
        if sql:
            self._sql(sql)

    def on_trace_completed(self, data: TraceCompleted) -> None:
        self._stop()
        status = data.get("status")
        style = {"success": "green", "error": "red", "cancelled": "yellow"}.get(status, "white")
        at_limit = data.get("stopped_by") == StopReason.MAX_STEPS
        if data.get("final_response"):
            self._answer(data["final_response"], "Best answer at the step limit" if at_limit else "Answer", style)
        error = data.get("error")
        if error:
            self._error(f"{data.get('error_type')}: {error}", error)
        self.console.print(
            Text(
                f"{'stopped at the step limit' if at_limit else status} · {data.get('duration_ms')} ms · "
                f"{data.get('total_runs')} runs · {data.get('total_tokens')} tokens · "
                f"${data.get('total_cost', 0):.6f}",
                style=f"bold {style}",
            )
        )

    def _answer(self, text: str, title: str, style: str) -> None:
        if self.console.is_terminal:
            self.console.print(Panel(Markdown(text), title=title, border_style=style))
        else:
            self.console.rule(Text(title, style=style), align="left")
            self._write(Text(text))
