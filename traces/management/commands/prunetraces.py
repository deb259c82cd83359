"""Retention: delete finished traces older than an age, in batches."""

from django.core.management.base import BaseCommand, CommandError

from traces.management.progress import progress_bar
from traces.models import Trace
from traces.store.retention import parse_age, prunable, prune


class Command(BaseCommand):
    help = (
        "Delete finished traces older than --older-than (e.g. 30d), oldest first, a short transaction per batch. "
        "Schedule it with cron. A progress bar goes to stderr on a terminal; --verbosity 2 says the longest "
        "transaction."
    )

    def add_arguments(self, parser):
        parser.add_argument("--older-than", required=True, help="Age such as 30d, 12h or 2w.")
        parser.add_argument(
            "--status",
            action="append",
            choices=[s for s in Trace.Status.values if s != "running"],
            help="Only this status (repeatable).",
        )
        parser.add_argument("--dry-run", action="store_true", help="Say how many would go; delete nothing.")
        parser.add_argument(
            "--pause",
            type=float,
            default=None,
            help="Seconds to rest between batches (default: as long as the last batch's transaction took).",
        )

    def handle(self, *args, older_than: str, status, dry_run: bool, pause: float | None, **options):
        try:
            age = parse_age(older_than)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        traces = prunable(age, status)
        if dry_run:
            self.stdout.write(f"Would delete {traces.count()} traces older than {older_than}.")
            return
        with progress_bar(self.stderr, "Deleting", traces.count) as progress:
            pruned = prune(traces, pause, progress)
        self.stdout.write(self.style.SUCCESS(f"Deleted {pruned.traces} traces older than {older_than}."))
        if options["verbosity"] >= 2:
            self.stdout.write(
                f"In {pruned.batches} batch{'es' if pruned.batches != 1 else ''}; "
                f"the longest held its transaction {pruned.longest * 1000:.0f} ms."
            )
