"""The trace in a terminal, event by event (``runagent``, ``replaytrace``)."""

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

from agents.events import EventType, RunFields, TokenUsage, TraceCompleted, TraceStarted

MAX_ROWS = 20


def terminal_stream(output: OutputWrapper) -> IO[str]:
    """The stream under a management command's ``self.stdout``, for writers that end their own lines."""
    return cast(IO[str], output._out)


class TerminalView:
    """Renders protocol envelopes; ``quiet`` shows only the final answer."""

    def __init__(self, console: Console | None = None, quiet: bool = False) -> None:
        self.console = console or Console()
        self.quiet = quiet
        self.spinner: Status | None = None

    def __call__(self, message: dict[str, Any]) -> None:
        kind = message["event_type"]
        data = message.get("data") or {}
        if self.quiet:
            if kind == EventType.TRACE_COMPLETED:
                self.console.print(data.get("final_response") or data.get("error") or "", markup=False, highlight=False)
            return
        handler = getattr(self, f"on_{kind}", None)
        if handler is not None:
            handler(data)

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
        self.console.print(
            Panel(
                body,
                title=f"{data.get('agent_name')} · {model}",
                subtitle=f"trace {data.get('trace_id')}",
                expand=False,
            )
        )

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
            self.console.print(Text(content))
        for call in (data.get("outputs") or {}).get("tool_calls") or []:
            function = call.get("function", {})
            self.console.print(Text(f"→ {function.get('name')}({function.get('arguments')})", style="magenta"))

    def on_tool_started(self, data: RunFields) -> None:
        self._spin(f"Running {data.get('name')}…")

    def on_tool_completed(self, data: RunFields) -> None:
        self._stop()
        outputs = data.get("outputs") or {}
        self.console.print(Text(f"tool {data.get('name')} · {data.get('duration_ms')} ms", style="dim"))
        if outputs.get("sql"):
            self.console.print(Syntax(outputs["sql"], "sql", word_wrap=True))
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
        self.console.print(
            Text(
                f"✗ {data.get('name')} {data.get('status')}: {data.get('error_type')}: {data.get('error')}", style="red"
            )
        )
        sql = (data.get("outputs") or {}).get("sql")
        if sql:
            self.console.print(Syntax(sql, "sql", word_wrap=True))

    def on_trace_completed(self, data: TraceCompleted) -> None:
        self._stop()
        status = data.get("status")
        style = {"success": "green", "error": "red", "cancelled": "yellow"}.get(status, "white")
        if data.get("final_response"):
            self.console.print(Panel(Markdown(data["final_response"]), title="Answer", border_style=style))
        if data.get("error"):
            self.console.print(Text(f"{data.get('error_type')}: {data['error']}", style="red"))
        self.console.print(
            Text(
                f"{status} · {data.get('duration_ms')} ms · {data.get('total_runs')} runs · "
                f"{data.get('total_tokens')} tokens · ${data.get('total_cost', 0):.6f}",
                style=f"bold {style}",
            )
        )
