"""Export traces with their runs and events, one JSON document per line (or a CSV of traces)."""

import contextlib
import datetime as dt

from django.core.management.base import BaseCommand, CommandError

from traces.live.terminal import terminal_stream
from traces.management.progress import progress_bar
from traces.models import Trace
from traces.store.transfer import export_csv, export_jsonl

# Days whose start is a moment in every time zone (the first and the last day Python has are not).
FIRST_DAY, LAST_DAY = dt.date(2, 1, 1), dt.date(9998, 12, 31)


def _date(text: str | None) -> dt.date | None:
    if not text:
        return None
    try:
        day = dt.date.fromisoformat(text)
    except ValueError as exc:
        raise CommandError(f"dates are YYYY-MM-DD: {exc}") from None
    if not FIRST_DAY <= day <= LAST_DAY:
        raise CommandError(f"dates are YYYY-MM-DD from {FIRST_DAY} to {LAST_DAY}: not {text}")
    return day


class Command(BaseCommand):
    help = (
        "Stream traces to a file or stdout, in constant memory and in time proportional to their number. "
        "JSONL holds runs and events too. A progress bar goes to stderr when it is a terminal."
    )

    def add_arguments(self, parser):
        parser.add_argument("--since", help="Traces started on or after this date (YYYY-MM-DD).")
        parser.add_argument("--until", help="Traces started before the end of this date (YYYY-MM-DD).")
        parser.add_argument(
            "--status", action="append", choices=Trace.Status.values, help="Only this status (repeatable)."
        )
        parser.add_argument("--agent", help="Only this agent.")
        parser.add_argument(
            "--format",
            choices=["jsonl", "csv"],
            default="jsonl",
            help="jsonl (default): everything; csv: one row per trace.",
        )
        parser.add_argument("-o", "--output", help="File to write (default: stdout).")

    def handle(self, *args, since, until, status, agent, format, output, **options):
        traces = Trace.objects.started_between(_date(since), _date(until))
        if status:
            traces = traces.filter(status__in=status)
        if agent:
            traces = traces.filter(agent_name=agent)
        count = 0
        try:
            with (
                open(output, "w", encoding="utf-8", newline="")
                if output
                else contextlib.nullcontext(terminal_stream(self.stdout)) as stream,
                progress_bar(self.stderr, "Exporting", traces.count) as progress,
            ):
                chunks = export_jsonl(traces, progress) if format == "jsonl" else export_csv(traces, progress)
                for chunk in chunks:
                    stream.write(chunk)
                    count += format == "jsonl"
        except OSError as exc:  # a directory that is not there, a full disk, a closed pipe
            raise CommandError(f"cannot write {output or 'the output'}: {exc.strerror or exc}") from None
        if output:
            self.stderr.write(f"Wrote {output}" + (f" ({count} traces)" if format == "jsonl" else ""))
