"""Sum the dashboard's sealed hours again from the traces (``traces.store.rollups``)."""

import datetime as dt

from django.core.management.base import BaseCommand, CommandError

from traces.store.rollups import rebuild


def _day(text: str | None) -> dt.datetime | None:
    if text is None:
        return None
    try:
        return dt.datetime.combine(dt.date.fromisoformat(text), dt.time.min, tzinfo=dt.UTC)
    except ValueError:
        raise CommandError(f"{text!r} is not a date like 2026-01-31") from None


class Command(BaseCommand):
    help = (
        "Sum the dashboard's hourly rollups again from the traces: all of them (and seal the hours "
        "that have ended), or the UTC days from --since to --until. A server does this by itself "
        "for the hours that change; this is for a repair, or to seal a large history at once."
    )

    def add_arguments(self, parser):
        parser.add_argument("--since", help="First UTC day to sum again (YYYY-MM-DD); default: the first.")
        parser.add_argument("--until", help="Last UTC day to sum again (YYYY-MM-DD); default: the last sealed.")

    def handle(self, *args, since: str | None, until: str | None, **options):
        start, last = _day(since), _day(until)
        if start is not None and last is not None and last < start:
            raise CommandError("--until is before --since")
        end = last + dt.timedelta(hours=23) if last is not None else None
        tty = self.stdout.isatty()
        verbosity = options["verbosity"]

        def progress(moment: dt.datetime) -> None:
            # On a terminal a line that rewrites itself; elsewhere a line a day only when asked (-v 2).
            if verbosity < 1 or (not tty and verbosity < 2):
                return
            self.stdout.write(f"summed up to {moment:%Y-%m-%d %H:%M} UTC", ending="\r" if tty else "\n")
            self.stdout.flush()

        hours = rebuild(start, end, progress=progress)
        if tty and verbosity >= 1:
            self.stdout.write("")
        self.stdout.write(self.style.SUCCESS(f"Summed {hours} hours."))
