"""Run the agent in the terminal, watch its trace live, and record it like a browser-started run."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from rich.console import Console

from agents.config import BUILTIN, endpoint_configured
from agents.events import StopReason, TraceOutcome
from agents.loop import AgentResult
from traces import protocol
from traces.access import SessionKey
from traces.live.agent_runs import run_trace
from traces.live.terminal import TerminalView, terminal_stream
from traces.models import Trace
from traces.runtime import Runtime

EXIT_CANCELLED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports a writer killed by a closed pipe
# Quiet below -v 2, as the terminal view says it all: our own per-run lines, and the openai client
# and its HTTP library, which log each request and each retry ("Retrying request in …").
CHATTY_LOGGERS = ("traces", "openai", "httpx2")


def failure(result: AgentResult, shown: bool) -> str:
    """Why the command fails; the error itself only if the terminal view has not just shown it."""
    if result.stopped_by == StopReason.MAX_STEPS:
        answer = "the answer is the best it had by then" if result.final_response else "it has no answer"
        return f"the run {result.error}: {answer} (--max-steps allows more)"
    if shown:
        return f"the run failed ({result.error_type}, shown above); the trace is recorded as an error"
    return f"the run failed: {result.error}"


class Command(BaseCommand):
    help = (
        'Ask the agent a question, e.g. runagent "how many orders per country?". '
        "The trace is stored and published live."
    )

    def add_arguments(self, parser):
        parser.add_argument("question", help="The question for the agent.")
        parser.add_argument(
            "--model",
            help='Model name (default OPENAI_MODEL; "builtin" for the offline model). Other names need a model '
            "endpoint: OPENAI_API_KEY or OPENAI_BASE_URL.",
        )
        parser.add_argument("--max-steps", type=int, help="Step limit (default AGENT_MAX_STEPS).")
        parser.add_argument("--session", default="cli", help="Session id the trace belongs to (default: cli).")
        parser.add_argument("--user", help="Username the trace belongs to (default: none).")
        parser.add_argument(
            "--json", action="store_true", help="Print one protocol envelope per line and nothing else."
        )
        parser.add_argument("--quiet", action="store_true", help="Print only the final answer (errors go to stderr).")

    def handle(self, *args, question: str, model, max_steps, session, user, json: bool, quiet: bool, **options):
        question = question.strip()
        if not question:
            raise CommandError("the question is empty")
        if len(question) > protocol.MAX_QUESTION_CHARS:
            raise CommandError(f"the question is longer than {protocol.MAX_QUESTION_CHARS} characters")
        if not protocol.SESSION_ID_RE.fullmatch(session):
            raise CommandError("--session must match [A-Za-z0-9_.-]{1,100}")
        if max_steps is not None and not 1 <= max_steps <= protocol.MAX_STEPS_LIMIT:
            raise CommandError(f"--max-steps must be between 1 and {protocol.MAX_STEPS_LIMIT}")
        user_id = self._user_id(user)
        if model and model != BUILTIN and not endpoint_configured():
            self.stderr.write(
                self.style.WARNING(
                    f"--model {model} is ignored: no model endpoint is configured (OPENAI_API_KEY, "
                    "OPENAI_BASE_URL), so the built-in offline model answers."
                )
            )
        loggers = [logging.getLogger(name) for name in CHATTY_LOGGERS]
        levels = [logger.level for logger in loggers]
        if options["verbosity"] < 2:
            for logger in loggers:
                logger.setLevel(logging.WARNING)
        if json:

            def listener(message):
                self.stdout.write(protocol.dumps(message))
                self.stdout.flush()
        else:
            listener = TerminalView(Console(file=terminal_stream(self.stdout), highlight=False), quiet=quiet)
        try:
            result = asyncio.run(self._run(question, session, user_id, model, max_steps, listener))
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)
        if self.output_closed:
            sys.exit(EXIT_BROKEN_PIPE)  # the reader went away (``| head``): the run was cancelled and recorded
        if result.status == TraceOutcome.CANCELLED:
            self.stderr.write("Cancelled; the trace is recorded as cancelled.")
            sys.exit(EXIT_CANCELLED)
        if result.status != TraceOutcome.SUCCESS:
            shown = isinstance(listener, TerminalView) and result.error in listener.shown_errors
            raise CommandError(failure(result, shown))

    @staticmethod
    def _user_id(username: str | None) -> int | None:
        if not username:
            return None
        try:
            return get_user_model().objects.get(username=username).pk
        except get_user_model().DoesNotExist:
            raise CommandError(f"no user named {username!r}") from None

    async def _run(self, question, session, user_id, model, max_steps, listener):
        self.output_closed = False

        def show(message: dict) -> Any:
            """The view, until the reader of our output goes away: then the run is cancelled, as on Ctrl-C."""
            if self.output_closed:
                return None
            try:
                return listener(message)
            except (BrokenPipeError, SystemExit):  # rich turns a broken pipe into SystemExit(1)
                self.output_closed = True
                # Nothing more can be written there; at exit Python would still try to flush it.
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                task.cancel()
                return None

        # Leaving the runtime stores and publishes every event before the process exits.
        async with Runtime(kind="cli") as runtime:
            task = asyncio.create_task(
                run_trace(
                    question,
                    store=runtime.store,
                    runner=runtime.liveness.id,
                    session=SessionKey.of(session, user_id),
                    source=Trace.Source.CLI,
                    owner_id=user_id,
                    model=model,
                    max_steps=max_steps,
                    listener=show,
                )
            )
            loop = asyncio.get_running_loop()
            stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # Ctrl-C, kill, the terminal closing
            for stop in stops:
                loop.add_signal_handler(stop, task.cancel)
            try:
                return await task
            finally:
                for stop in stops:
                    loop.remove_signal_handler(stop)
