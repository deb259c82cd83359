"""Show a stored trace in the terminal as runagent showed it live, at its original pace or faster."""

import re
import time

from django.core.management.base import BaseCommand, CommandError
from rich.console import Console

from traces import protocol
from traces.live.terminal import TerminalView, terminal_stream
from traces.models import Trace

HEX = re.compile(r"[0-9a-f]{1,32}")
GROUPS = ((0, 8), (8, 12), (12, 16), (16, 20), (20, 32))  # a UUID's hex digits between its dashes


def find_trace(prefix: str) -> Trace:
    """The trace whose id starts with ``prefix`` (dashes optional); CommandError if there is none or several."""
    digits = prefix.strip().lower().replace("-", "")
    if not HEX.fullmatch(digits):
        raise CommandError(f"no trace {prefix}: a trace id is hexadecimal digits and dashes")
    # The id's text form as far as given: it matches a native UUID column and a char(32) one alike.
    canonical = "-".join(digits[start:end] for start, end in GROUPS if digits[start:end])
    matches = Trace.objects.filter(pk__startswith=canonical)
    count = matches.count()
    if not count:
        raise CommandError(f"no trace {prefix}")
    if count > 1:
        raise CommandError(f"{count} traces have an id starting with {prefix}; give more of it")
    return matches.get()


class Command(BaseCommand):
    help = "Re-render a stored trace in the terminal. --speed 1 is the original timing, 0 as fast as possible."

    def add_arguments(self, parser):
        parser.add_argument("trace_id", help="The trace's id, or enough of its start to be unique.")
        parser.add_argument(
            "--speed", type=float, default=0.0, help="1 = original timing, N = N× faster, 0 = instant (default)."
        )

    def handle(self, *args, trace_id: str, speed: float, **options):
        if speed < 0:
            raise CommandError("--speed must be 0 or more")
        trace = find_trace(trace_id)
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
