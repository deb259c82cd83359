"""Fill the agent's database with the demo shop (users, products, orders, order_items)."""

from django.core.management.base import BaseCommand, CommandError

from agents import demo


class Command(BaseCommand):
    help = "Create the demo shop tables in the agent's database (idempotent; deterministic data)."

    def add_arguments(self, parser):
        parser.add_argument("--database", default="agent", help="Database alias to fill (default: agent).")
        parser.add_argument("--force", action="store_true", help="Drop and recreate the demo tables if they exist.")

    def handle(self, *args, database: str, force: bool, **options):
        try:
            written = demo.seed(database, force=force)
        except Exception as exc:
            raise CommandError(f"could not seed the demo data: {exc}") from exc
        if not written:
            self.stdout.write("Demo data already present; nothing to do (use --force to recreate).")
            return
        summary = ", ".join(f"{count} {table}" for table, count in written.items())
        self.stdout.write(self.style.SUCCESS(f"Demo shop created: {summary}."))
