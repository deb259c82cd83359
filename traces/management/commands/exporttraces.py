"""Export traces with their runs and events, one JSON document per line (or a CSV of traces)."""

import contextlib
import datetime as dt

from django.core.management.base import BaseCommand, CommandError

from traces.live.terminal import terminal_stream
from traces.models import Trace
from traces.store.transfer import export_csv, export_jsonl


class Command(BaseCommand):
    help = "Stream traces to a file or stdout, in constant memory. JSONL holds runs and events too."

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
        try:
            traces = Trace.objects.started_between(
                dt.date.fromisoformat(since) if since else None, dt.date.fromisoformat(until) if until else None
            )
        except (ValueError, OverflowError) as exc:  # not a date; the last day there is
            raise CommandError(f"dates are YYYY-MM-DD: {exc}") from None
        if status:
            traces = traces.filter(status__in=status)
        if agent:
            traces = traces.filter(agent_name=agent)
        chunks = export_jsonl(traces) if format == "jsonl" else export_csv(traces)
        count = 0
        try:
            with (
                open(output, "w", encoding="utf-8", newline="")
                if output
                else contextlib.nullcontext(terminal_stream(self.stdout)) as stream
            ):
                for chunk in chunks:
                    stream.write(chunk)
                    count += format == "jsonl"
        except OSError as exc:  # a directory that is not there, a full disk, a closed pipe
            raise CommandError(f"cannot write {output or 'the output'}: {exc.strerror or exc}") from None
        if output:
            self.stderr.write(f"Wrote {output}" + (f" ({count} traces)" if format == "jsonl" else ""))
