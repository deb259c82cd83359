"""``/api/traces/<trace_id>/scores``: scores from any agent or evaluator, with an API token.

``POST`` records a score (``traces.scores.record_score``, source ``api``, the token's user its
author) from a JSON object ``{"name", "value", "comment"?, "run_id"?}`` and answers 201 with it;
``GET`` lists the trace's scores. Answers are JSON; an error is ``{"error": "<why>"}``: 400 for a
body or score that cannot be recorded, 401 without a valid token (``Authorization: Bearer
ts_…``), 404 for a trace the token's user may not see, as for one that is not here, 413 for a
body over ``MAX_BODY_BYTES``.

A trace is named by its id (a UUID, with or without dashes) or, for one sent over OpenTelemetry,
by its 32-hex OpenTelemetry trace id: a trace whose id is the value given is taken first, then the
trace ingested under that OpenTelemetry id (``traces.ingest.ingestor.trace_uuid``). A run is named
by its id (a UUID) or, in an ingested trace, by its span's 16-hex id.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from typing import Any

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from agents.events import format_timestamp
from traces.ingest.ingestor import run_id as span_run_id
from traces.ingest.ingestor import trace_uuid
from traces.models import ApiToken, Score, Trace
from traces.scores import InvalidScore, record_score

MAX_BODY_BYTES = 64 * 1024
FIELDS = {"name", "value", "comment", "run_id"}
OTEL_TRACE_ID = re.compile(r"[0-9a-fA-F]{32}")
SPAN_ID = re.compile(r"[0-9a-fA-F]{16}")


def _error(status: int, reason: str, **headers: str) -> JsonResponse:
    response = JsonResponse({"error": reason}, status=status)
    for name, value in headers.items():
        response[name] = value
    return response


def _bearer(request: HttpRequest) -> str:
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    return key.strip() if scheme.lower() == "bearer" else ""


def _trace(user: Any, given: str) -> Trace | None:
    """The trace ``given`` names that ``user`` may see (see the module's docstring), or None."""
    candidates = []
    with contextlib.suppress(ValueError):
        candidates.append(uuid.UUID(given))
    if OTEL_TRACE_ID.fullmatch(given):
        candidates.append(trace_uuid(given.lower()))
    if not candidates:
        return None
    found = {trace.pk: trace for trace in Trace.objects.visible_to(user).filter(pk__in=candidates).only("pk")}
    return next((found[key] for key in candidates if key in found), None)


def _run(trace: Trace, given: Any) -> uuid.UUID | None:
    """The run id ``given`` (a UUID, or a span's 16-hex id), or None when none is given."""
    if given is None:
        return None
    if isinstance(given, str):
        if SPAN_ID.fullmatch(given):
            return span_run_id(trace.pk, given.lower())
        try:
            return uuid.UUID(given)
        except ValueError:
            pass
    raise InvalidScore("run_id must be a run's id (a UUID) or a span's id (16 hex digits)")


def score_document(score: Score) -> dict[str, Any]:
    return {
        "id": score.pk,
        "trace_id": str(score.trace_id),
        "run_id": str(score.run_id) if score.run_id else None,
        "name": score.name,
        "value": score.value,
        "data_type": score.data_type,
        "source": score.source,
        "comment": score.comment,
        "created_at": format_timestamp(score.created_at),
    }


@csrf_exempt  # token-authenticated, never by a browser's cookies
@login_not_required  # checks its own callers' tokens
@require_http_methods(["GET", "POST"])
def trace_scores(request: HttpRequest, trace_id: str) -> JsonResponse:
    user = ApiToken.authenticate(_bearer(request))
    if user is None:
        return _error(
            401,
            "a valid API token is needed: Authorization: Bearer ts_…",
            **{"WWW-Authenticate": 'Bearer realm="tracesite"'},
        )
    trace = _trace(user, trace_id)
    if trace is None:
        return _error(404, "no such trace")
    if request.method == "GET":
        return JsonResponse({"scores": [score_document(score) for score in trace.scores.all()]})
    declared = request.headers.get("Content-Length", "")
    if (declared.isdigit() and int(declared) > MAX_BODY_BYTES) or len(request.body) > MAX_BODY_BYTES:
        return _error(413, f"the body is larger than {MAX_BODY_BYTES:,} bytes")
    try:
        body = json.loads(request.body)
    except (ValueError, RecursionError):
        return _error(400, "the body is not JSON")
    if not isinstance(body, dict):
        return _error(400, 'the body must be a JSON object: {"name": …, "value": …}')
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        return _error(400, f"unknown field(s): {', '.join(unknown)[:200]}; a score has {', '.join(sorted(FIELDS))}")
    for field in ("name", "value"):
        if field not in body:
            return _error(400, f"{field} is required")
    try:
        score = record_score(
            trace.pk,
            body["name"],
            body["value"],
            source=Score.Source.API,
            comment=body.get("comment", ""),
            run_id=_run(trace, body.get("run_id")),
            author=user,
        )
    except InvalidScore as exc:
        return _error(400, str(exc))
    return JsonResponse(score_document(score), status=201)
