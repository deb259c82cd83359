"""What a server needs before it can serve its pages, checked at its start and by ``check --deploy``.

With DEBUG off, static files are served from ``STATIC_ROOT`` under hashed names read from the
manifest ``collectstatic`` writes; a file missing from it makes every page that links to it a
500. A server refuses to start without it (``traces.runtime``), and ``manage.py check --deploy``
warns (a warning, not an error: ``migrate`` and ``collectstatic`` itself must still run).
"""

from __future__ import annotations

import json
import os
from itertools import islice
from typing import Any

from django.contrib.staticfiles import finders
from django.contrib.staticfiles.storage import ManifestFilesMixin, staticfiles_storage
from django.core.checks import Tags, Warning, register

# collectstatic's own default --ignore patterns: what it leaves out, the manifest does not list.
COLLECTSTATIC_IGNORES = ["CVS", ".*", "*~"]
SHOWN = 3


def uncollected_static_files() -> str | None:
    """Why the pages cannot render with the configured static files storage, or None if they can
    (a storage without a manifest, as with DEBUG on, serves straight from the source folders)."""
    storage: Any = staticfiles_storage  # the stubs' plain Storage cannot also be a ManifestFilesMixin
    if not isinstance(storage, ManifestFilesMixin):
        return None
    manifest: Any = storage
    where = os.path.join(manifest.location, manifest.manifest_name)
    collect = f"run `python manage.py collectstatic --noinput` (STATIC_ROOT={manifest.location})"
    content: str | None = manifest.read_manifest()
    if content is None:
        return f"the static files are not collected ({where} does not exist): {collect}"
    try:
        collected = json.loads(content)["paths"]
    except (ValueError, KeyError, TypeError):
        return f"the static files manifest {where} cannot be read: {collect} again"
    missing = [name for name in _source_files() if name not in collected]
    if missing:
        listed = ", ".join(islice(missing, SHOWN))
        if len(missing) > SHOWN:
            listed += f" and {len(missing) - SHOWN} more"
        return f"static files were added since they were collected ({listed}): {collect} again"
    return None


def _source_files() -> list[str]:
    """The names ``collectstatic`` gives the files the finders find."""
    names = []
    for finder in finders.get_finders():
        for path, storage in finder.list(COLLECTSTATIC_IGNORES):
            prefix = getattr(storage, "prefix", None)
            name = os.path.join(prefix, path) if prefix else path
            names.append(name.replace(os.sep, "/"))
    return names


@register(Tags.staticfiles, deploy=True)
def static_files_collected(app_configs: object = None, **kwargs: object) -> list[Warning]:
    problem = uncollected_static_files()
    if problem is None:
        return []
    return [
        Warning(
            f"Pages would fail to render: {problem}.",
            hint="Until then a server refuses to start, saying the same.",
            id="tracesite.W001",
        )
    ]
