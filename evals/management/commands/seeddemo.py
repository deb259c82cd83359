"""The demo shop (``agents``' seeddemo), and its dataset for ``evaluate demo-shop``."""

from __future__ import annotations

from agents.management.commands import seeddemo
from evals.demo import NAME, seed_dataset


class Command(seeddemo.Command):
    help = seeddemo.Command.help + f" Also creates the dataset {NAME!r} over it (python manage.py evaluate {NAME})."

    def handle(self, *args, **options):
        super().handle(*args, **options)
        if seed_dataset():
            self.stdout.write(self.style.SUCCESS(f"Dataset {NAME!r} created: python manage.py evaluate {NAME}"))
