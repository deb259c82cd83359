"""Load a JSONL export (from exporttraces) into this instance; traces already here are skipped."""

import contextlib
import sys

from django.core.management.base import BaseCommand, CommandError

from traces.store.transfer import MAX_LINE_BYTES, InvalidLine, import_jsonl, user_named


class Command(BaseCommand):
    help = (
        "Import traces from a JSONL file written by exporttraces (idempotent by trace id). Each trace is "
        "--user's, else the user the export names as its owner if that user is here, else nobody's."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", help="The JSONL file ('-' for stdin).")
        parser.add_argument("--user", help="The user the imported traces belong to (a username).")
        parser.add_argument(
            "--max-line-bytes",
            type=int,
            default=MAX_LINE_BYTES,
            help=f"A line (one trace) longer than this stops the import there (default {MAX_LINE_BYTES:,}).",
        )

    def handle(self, *args, file: str, user: str | None, max_line_bytes: int, **options):
        owner = user_named(user) if user is not None else None
        if user is not None and owner is None:
            raise CommandError(f"no user {user!r}")
        if max_line_bytes < 1:
            raise CommandError("--max-line-bytes must be at least 1")
        try:
            with contextlib.nullcontext(sys.stdin.buffer) if file == "-" else open(file, "rb") as stream:
                imported, skipped = import_jsonl(stream, owner, max_line_bytes)
        except OSError as exc:
            raise CommandError(f"cannot read {file}: {exc.strerror}") from None
        except InvalidLine as exc:
            raise CommandError(f"{file}, {exc}") from None
        self.stdout.write(self.style.SUCCESS(f"Imported {imported} traces; {skipped} were already here."))
