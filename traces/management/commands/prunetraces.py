"""Retention: delete finished traces older than an age, in batches."""

from django.core.management.base import BaseCommand, CommandError

from traces.models import Trace
from traces.store.retention import parse_age, prunable, prune


class Command(BaseCommand):
    help = "Delete finished traces older than --older-than (e.g. 30d), a batch at a time. Schedule it with cron."

    def add_arguments(self, parser):
        parser.add_argument("--older-than", required=True, help="Age such as 30d, 12h or 2w.")
        parser.add_argument(
            "--status",
            action="append",
            choices=[s for s in Trace.Status.values if s != "running"],
            help="Only this status (repeatable).",
        )
        parser.add_argument("--dry-run", action="store_true", help="Say how many would go; delete nothing.")
        parser.add_argument("--pause", type=float, default=0.0, help="Seconds to rest between batches.")

    def handle(self, *args, older_than: str, status, dry_run: bool, pause: float, **options):
        try:
            age = parse_age(older_than)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        traces = prunable(age, status)
        if dry_run:
            self.stdout.write(f"Would delete {traces.count()} traces older than {older_than}.")
            return
        deleted = prune(traces, pause)
        self.stdout.write(self.style.SUCCESS(f"Deleted {deleted} traces older than {older_than}."))
