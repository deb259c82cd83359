"""Show a stored trace in the terminal as runagent showed it live, at its original pace or faster."""

import time
import uuid

from django.core.management.base import BaseCommand, CommandError
from rich.console import Console

from traces import protocol
from traces.models import Trace
from traces.terminal import TerminalView, terminal_stream


class Command(BaseCommand):
    help = "Re-render a stored trace in the terminal. --speed 1 is the original timing, 0 as fast as possible."

    def add_arguments(self, parser):
        parser.add_argument("trace_id", help="The trace's id.")
        parser.add_argument(
            "--speed", type=float, default=0.0, help="1 = original timing, N = N× faster, 0 = instant (default)."
        )

    def handle(self, *args, trace_id: str, speed: float, **options):
        try:
            trace = Trace.objects.get(pk=uuid.UUID(trace_id))
        except (ValueError, Trace.DoesNotExist):
            raise CommandError(f"no trace {trace_id}") from None
        if speed < 0:
            raise CommandError("--speed must be 0 or more")
        view = TerminalView(Console(file=terminal_stream(self.stdout), highlight=False))
        first = None
        started = time.monotonic()
        for timestamp, text in trace.events.order_by("seq").values_list("timestamp", "envelope").iterator():
            first = first or timestamp
            if speed > 0:
                delay = (timestamp - first).total_seconds() / speed - (time.monotonic() - started)
                if delay > 0:
                    time.sleep(delay)
            view(protocol.loads(text))
