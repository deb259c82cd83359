"""Every module the server runs imports with the runtime requirements alone: CI also runs this file
(with the OTLP, consumer and page tests) in a virtual environment built from requirements.txt and
requirements-mysql.txt plus the test runner, so a package that only the development requirements
bring in fails there."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("agents", "traces", "evals", "tracesite")


def modules() -> list[str]:
    found = []
    for package in PACKAGES:
        found.append(package)
        for module in pkgutil.walk_packages([str(ROOT / package)], prefix=f"{package}."):
            found.append(module.name)
    return sorted(found)


def test_it_finds_the_modules():
    names = modules()
    assert "traces.store.projection" in names and "traces.ingest.otlp" in names and "tracesite.asgi" in names
    assert len(names) > 80


@pytest.mark.parametrize("name", modules())
def test_every_module_imports(name):
    importlib.import_module(name)
