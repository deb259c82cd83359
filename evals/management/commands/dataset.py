"""Datasets from the terminal: import items from JSONL or CSV, export them, list the datasets."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Count

from evals.datasets import BadItems, add_items, item_records, read_items
from evals.management.users import user_id
from evals.models import Dataset


class Command(BaseCommand):
    help = (
        "Datasets of questions for `evaluate`: `dataset import NAME FILE` (JSONL, or CSV with a header; "
        "fields question, expected_sql, expected_answer, metadata), `dataset export NAME [-o FILE]`, `dataset list`."
    )

    def add_arguments(self, parser):
        commands = parser.add_subparsers(dest="command", required=True)
        add = commands.add_parser("import", help="Add a file's items to a dataset (made if there is none).")
        add.add_argument("name", help="The dataset's name.")
        add.add_argument("file", type=Path, help="JSONL (one object per line) or .csv with a header.")
        add.add_argument("--description", default="", help="The description of a new dataset.")
        out = commands.add_parser("export", help="Write a dataset's items as JSONL.")
        out.add_argument("name", help="The dataset's name.")
        out.add_argument("-o", "--output", type=Path, help="The file to write (default: standard output).")
        commands.add_parser("list", help="The datasets, their items and experiments.")
        for command in commands.choices.values():
            command.add_argument("--user", help="Whose datasets (default: those nobody owns).")

    def handle(self, *args, command: str, user: str | None, **options):
        owner_id = user_id(user)
        if command == "import":
            self._import(options["name"], options["file"], owner_id, options["description"])
        elif command == "export":
            self._export(options["name"], options["output"], owner_id)
        else:
            self._list(owner_id)

    def _import(self, name: str, path: Path, owner_id: int | None, description: str) -> None:
        if not name.strip() or len(name) > 100:
            raise CommandError("the dataset's name must be 1 to 100 characters")
        try:
            items = read_items(path)
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from None
        except BadItems as bad:
            for problem in bad.problems:
                self.stderr.write(problem)
            raise CommandError(f"{len(bad.problems)} bad line(s) in {path}; nothing was imported") from None
        if not items:
            raise CommandError(f"{path} holds no items")
        dataset, created = add_items(name, owner_id, items, description)
        total = dataset.items.count()
        verb = "created with" if created else f"already existed: added to it ({total} items now);"
        self.stdout.write(self.style.SUCCESS(f"dataset {name!r} {verb} {len(items)} item(s) from {path}"))

    def _dataset(self, name: str, owner_id: int | None) -> Dataset:
        dataset = Dataset.objects.named(name, owner_id).first()
        if dataset is None:
            raise CommandError(f"no dataset named {name!r}" + ("" if owner_id else " without an owner (--user)"))
        return dataset

    def _export(self, name: str, output: Path | None, owner_id: int | None) -> None:
        dataset = self._dataset(name, owner_id)
        try:
            stream = open(output, "w", encoding="utf-8") if output else sys.stdout  # noqa: SIM115
        except OSError as exc:
            raise CommandError(f"cannot write {output}: {exc.strerror or exc}") from None
        count = 0
        try:
            for record in item_records(dataset):
                stream.write(json.dumps(record, ensure_ascii=False) + "\n")
                count += 1
        finally:
            if output:
                stream.close()
        if output:
            self.stdout.write(f"wrote {count} item(s) of {name!r} to {output}")

    def _list(self, owner_id: int | None) -> None:
        rows = (
            (Dataset.objects.filter(owner_id=owner_id) if owner_id else Dataset.objects.filter(owner__isnull=True))
            .annotate(n_items=Count("items", distinct=True), n_experiments=Count("experiments", distinct=True))
            .order_by("name")
        )
        if not rows:
            self.stdout.write("no datasets (dataset import NAME FILE makes one)")
        for dataset in rows:
            self.stdout.write(f"{dataset.name}\t{dataset.n_items} items\t{dataset.n_experiments} experiments")
