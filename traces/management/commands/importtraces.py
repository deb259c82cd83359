"""Load a JSONL export (from exporttraces) into this instance; traces already here are skipped."""

import contextlib
import json

from django.core.management.base import BaseCommand, CommandError

from traces.transfer import import_document, link_reruns


class Command(BaseCommand):
    help = "Import traces from a JSONL file written by exporttraces (idempotent by trace id)."

    def add_arguments(self, parser):
        parser.add_argument("file", help="The JSONL file ('-' for stdin).")

    def handle(self, *args, file: str, **options):
        import sys

        imported = skipped = 0
        links: dict[str, str] = {}
        with contextlib.nullcontext(sys.stdin) if file == "-" else open(file, encoding="utf-8") as stream:
            for number, line in enumerate(stream, start=1):
                if not line.strip():
                    continue
                try:
                    document = json.loads(line)
                except ValueError as exc:
                    raise CommandError(f"line {number} is not JSON: {exc}") from None
                if import_document(document):
                    imported += 1
                    if document.get("rerun_of"):
                        links[document["id"]] = document["rerun_of"]
                else:
                    skipped += 1
        link_reruns(links)
        self.stdout.write(self.style.SUCCESS(f"Imported {imported} traces; {skipped} were already here."))
