"""Load a JSONL export (from exporttraces) into this instance; traces already here are skipped."""

import contextlib
import sys

from django.core.management.base import BaseCommand, CommandError

from traces.store.transfer import InvalidLine, import_jsonl


class Command(BaseCommand):
    help = "Import traces from a JSONL file written by exporttraces (idempotent by trace id)."

    def add_arguments(self, parser):
        parser.add_argument("file", help="The JSONL file ('-' for stdin).")

    def handle(self, *args, file: str, **options):
        try:
            with contextlib.nullcontext(sys.stdin) if file == "-" else open(file, encoding="utf-8") as lines:
                imported, skipped = import_jsonl(lines)
        except OSError as exc:
            raise CommandError(f"cannot read {file}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise CommandError(f"{file} is not UTF-8 text") from None
        except InvalidLine as exc:
            raise CommandError(f"{file}, {exc}") from None
        self.stdout.write(self.style.SUCCESS(f"Imported {imported} traces; {skipped} were already here."))
