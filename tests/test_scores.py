"""Scores on traces: recorded through the scores API with an API token, replaced when recorded
again, the trace's Good/Bad feedback as a score, and an ingested trace named by its
OpenTelemetry ids."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from channels.testing import HttpCommunicator
from django.core.asgi import get_asgi_application
from django.db import connection
from django.urls import reverse

from tests.factories import make_trace
from tests.test_otlp_ingest import TOOL, TRACE, agent_spans, export, settle
from traces.ingest.ingestor import run_id, trace_uuid
from traces.models import ApiToken, Run, Score, Trace
from traces.receiver import OtlpEndpoint
from traces.runtime import get_runtime
from traces.scores import InvalidScore, record_score
from traces.store.serializers import trace_document
from traces.store.transfer import import_document


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice-agent", password="x")


@pytest.fixture
def key(alice) -> str:
    return ApiToken.issue(alice, "evaluator")[1]


def scores_url(trace_id) -> str:
    return reverse("traces:scores", args=[str(trace_id)])


def post_score(client, trace_id, body, key: str | None):
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return client.post(scores_url(trace_id), data, content_type="application/json", headers=headers)


def get_scores(client, trace_id, key: str | None):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return client.get(scores_url(trace_id), headers=headers)


# The scores API


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("value", "data_type", "number", "category"),
    [
        (0.75, "numeric", 0.75, ""),
        (3, "numeric", 3.0, ""),
        (True, "boolean", 1.0, ""),
        (False, "boolean", 0.0, ""),
        ("wrong table", "categorical", None, "wrong table"),
    ],
)
def test_it_records_a_score_from_an_api_token_and_answers_with_it(
    client, settings, alice, key, value, data_type, number, category
):
    settings.TRACE_REQUIRE_AUTH = True
    trace = make_trace(owner=alice)
    response = post_score(client, trace.pk, {"name": "correct", "value": value, "comment": "checked by CI"}, key)
    assert response.status_code == 201
    answer = response.json()
    assert answer["value"] == value and answer["data_type"] == data_type
    assert answer | {"id": None, "created_at": None, "value": None} == {
        "id": None,
        "trace_id": str(trace.pk),
        "run_id": None,
        "name": "correct",
        "value": None,
        "data_type": data_type,
        "source": "api",
        "comment": "checked by CI",
        "created_at": None,
    }
    score = Score.objects.get(pk=answer["id"])
    assert (score.number, score.category, score.value) == (number, category, value)
    assert score.source == Score.Source.API and score.author == alice and score.trace_id == trace.pk


@pytest.mark.django_db
def test_a_score_may_be_on_one_of_the_traces_runs(client, key):
    trace = make_trace()
    tool = Run.objects.get(trace=trace, name="run_0")
    response = post_score(client, trace.pk, {"name": "useful", "value": True, "run_id": str(tool.pk)}, key)
    assert response.status_code == 201 and response.json()["run_id"] == str(tool.pk)
    assert Score.objects.get().run == tool


@pytest.mark.django_db
def test_recording_a_score_again_replaces_it(client, key):
    trace = make_trace()
    tool = Run.objects.get(trace=trace, name="run_0")
    assert post_score(client, trace.pk, {"name": "correct", "value": False}, key).status_code == 201
    second = post_score(client, trace.pk, {"name": "correct", "value": True, "comment": "fixed"}, key)
    assert second.status_code == 201
    assert [(s.name, s.value, s.comment) for s in Score.objects.all()] == [("correct", True, "fixed")]
    # Another source, or a run of the trace, has a score of its own.
    record_score(trace.pk, "correct", 0.5, source=Score.Source.JUDGE)
    record_score(trace.pk, "correct", 1, source=Score.Source.API, run_id=tool.pk)
    record_score(trace.pk, "correct", 0.25, source=Score.Source.JUDGE)
    assert sorted((s.source, s.run_id is not None, s.value) for s in Score.objects.all()) == [
        ("api", False, True),
        ("api", True, 1.0),
        ("judge", False, 0.25),
    ]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("{not json", "the body is not JSON"),
        (b"\xff\xfe", "the body is not JSON"),
        ("[1, 2]", "the body must be a JSON object"),
        ({"value": 1}, "name is required"),
        ({"name": "correct"}, "value is required"),
        ({"name": "  ", "value": 1}, "a score needs a name"),
        ({"name": 7, "value": 1}, "a score needs a name"),
        ({"name": "n" * 101, "value": 1}, "the name is longer than 100 characters"),
        ({"name": "correct", "value": None}, "the value must be a number, a boolean or a category"),
        ({"name": "correct", "value": [1]}, "the value must be a number, a boolean or a category"),
        ({"name": "correct", "value": {"a": 1}}, "the value must be a number, a boolean or a category"),
        ('{"name": "correct", "value": NaN}', "a numeric value must be a finite number"),
        ('{"name": "correct", "value": 1e400}', "a numeric value must be a finite number"),
        ({"name": "correct", "value": 10**400}, "a numeric value must be a finite number"),
        ({"name": "correct", "value": ""}, "a category must not be empty"),
        ({"name": "correct", "value": "c" * 101}, "a category is longer than 100 characters"),
        ({"name": "correct", "value": 1, "comment": "c" * 4001}, "the comment is longer than 4,000 characters"),
        ({"name": "correct", "value": 1, "comment": 5}, "the comment must be text"),
        ({"name": "correct", "value": 1, "run_id": "step 1"}, "run_id must be a run's id (a UUID) or a span's id"),
        ({"name": "correct", "value": 1, "run_id": 12}, "run_id must be a run's id (a UUID) or a span's id"),
        ({"name": "correct", "value": 1, "run_id": str(uuid.UUID(int=7))}, "is not a run of this trace"),
        ({"name": "correct", "value": 1, "run_id": "0102030405060708"}, "is not a run of this trace"),
        ({"name": "correct", "value": 1, "source": "human"}, "unknown field(s): source"),
    ],
)
def test_a_score_that_cannot_be_recorded_is_a_400_with_its_reason(client, key, body, reason):
    trace = make_trace()
    response = post_score(client, trace.pk, body, key)
    assert response.status_code == 400
    assert reason in response.json()["error"]
    assert not Score.objects.exists()


@pytest.mark.django_db
def test_a_run_of_another_trace_is_not_a_run_of_this_one(client, key):
    trace, other = make_trace(), make_trace()
    elsewhere = Run.objects.filter(trace=other).first()
    response = post_score(client, trace.pk, {"name": "correct", "value": 1, "run_id": str(elsewhere.pk)}, key)
    assert response.status_code == 400 and "is not a run of this trace" in response.json()["error"]


@pytest.mark.django_db
def test_a_body_over_64_kib_is_refused(client, key):
    trace = make_trace()
    response = post_score(client, trace.pk, {"name": "correct", "value": 1, "padding": "x" * 70_000}, key)
    assert response.status_code == 413 and "65,536 bytes" in response.json()["error"]
    assert not Score.objects.exists()


@pytest.mark.django_db
def test_without_a_valid_token_it_is_a_401_also_with_auth_on(client, settings, alice, key, staff_user):
    settings.TRACE_REQUIRE_AUTH = True
    trace = make_trace(owner=alice)
    revoked, revoked_key = ApiToken.issue(alice, "old")
    ApiToken.objects.filter(pk=revoked.pk).update(revoked_at=trace.started_at)
    client.force_login(staff_user)  # a login is not a token: the API takes tokens only
    for token in (None, "ts_not-a-token", revoked_key, key.removeprefix("ts_")):
        for response in (
            post_score(client, trace.pk, {"name": "a", "value": 1}, token),
            get_scores(client, trace.pk, token),
        ):
            assert response.status_code == 401 and response["WWW-Authenticate"] == 'Bearer realm="tracesite"'
            assert "API token" in response.json()["error"]
    assert not Score.objects.exists()


@pytest.mark.django_db
def test_a_trace_the_token_may_not_see_is_not_found_like_one_that_is_not_here(client, settings, django_user_model, key):
    settings.TRACE_REQUIRE_AUTH = True
    bob = django_user_model.objects.create_user("bob", password="x")
    theirs, ownerless = make_trace(owner=bob), make_trace(owner=None)
    answers = set()
    for trace_id in (theirs.pk, ownerless.pk, uuid.uuid4(), "not-an-id", TRACE):
        posted = post_score(client, trace_id, {"name": "correct", "value": 1}, key)
        listed = get_scores(client, trace_id, key)
        assert posted.status_code == listed.status_code == 404
        answers |= {posted.content, listed.content}
    assert answers == {b'{"error": "no such trace"}'}
    assert not Score.objects.exists()
    settings.TRACE_SHARE_UNOWNED = True
    assert post_score(client, ownerless.pk, {"name": "correct", "value": 1}, key).status_code == 201
    staff_key = ApiToken.issue(django_user_model.objects.create_user("sam", is_staff=True), "ci")[1]
    assert post_score(client, theirs.pk, {"name": "correct", "value": 1}, staff_key).status_code == 201


@pytest.mark.django_db
def test_it_lists_the_traces_scores(client, key):
    trace, other = make_trace(), make_trace()
    record_score(trace.pk, "correct", True, source=Score.Source.EXECUTION, comment="same rows")
    record_score(trace.pk, "latency", 1.5, source=Score.Source.JUDGE)
    record_score(other.pk, "correct", False, source=Score.Source.EXECUTION)
    response = get_scores(client, trace.pk, key)
    assert response.status_code == 200
    assert [(s["name"], s["value"], s["source"], s["comment"]) for s in response.json()["scores"]] == [
        ("correct", True, "execution", "same rows"),
        ("latency", 1.5, "judge", ""),
    ]
    assert client.put(scores_url(trace.pk), headers={"Authorization": f"Bearer {key}"}).status_code == 405


@pytest.mark.django_db
def test_a_trace_may_be_named_by_its_id_without_dashes(client, key):
    trace = make_trace()
    assert post_score(client, trace.pk.hex, {"name": "correct", "value": 1}, key).status_code == 201
    assert len(get_scores(client, trace.pk.hex.upper(), key).json()["scores"]) == 1


@pytest.mark.django_db
def test_a_trace_with_the_id_given_comes_before_one_ingested_under_it_as_an_opentelemetry_id(client, key):
    if connection.vendor == "mysql":
        pytest.skip("MariaDB stores no trace under such an id: only its mapped one can exist there")
    otel_id = "fec99b490d9df83676c7c9edca7a86d6"  # not an RFC 4122 UUID: ingest maps it to another
    ingested = make_trace(id=trace_uuid(otel_id), source=Trace.Source.OTEL)
    assert post_score(client, otel_id, {"name": "correct", "value": 1}, key).json()["trace_id"] == str(ingested.pk)
    same = make_trace(id=uuid.UUID(otel_id))
    assert post_score(client, otel_id, {"name": "correct", "value": 0}, key).json()["trace_id"] == str(same.pk)


@pytest.mark.django_db(transaction=True)
async def test_an_ingested_trace_and_its_runs_are_named_by_their_opentelemetry_ids(settings, async_client, alice, key):
    settings.TRACE_OTLP_COMPLETE_AFTER_SECONDS = 0.0
    body = json.dumps(export(*agent_spans())).encode()
    headers = [
        (b"host", b"testserver"),
        (b"content-type", b"application/json"),
        (b"authorization", f"Bearer {key}".encode()),
    ]
    sent = await HttpCommunicator(
        OtlpEndpoint(get_asgi_application()), "POST", "/v1/traces", body, headers
    ).get_response(timeout=60)
    assert sent["status"] == 200
    await settle()

    auth = {"Authorization": f"Bearer {key}"}
    readme_body = {"name": "sql correct", "value": True, "comment": "same rows as the reference", "run_id": TOOL}
    response = await async_client.post(scores_url(TRACE), readme_body, content_type="application/json", headers=auth)
    assert response.status_code == 201
    trace_id = trace_uuid(TRACE)
    assert response.json()["trace_id"] == str(trace_id) and response.json()["run_id"] == str(run_id(trace_id, TOOL))
    tool = await Run.objects.aget(trace_id=trace_id, name="run_sql")
    score = await Score.objects.select_related("run").aget()
    assert score.run == tool and score.value is True
    # Hex digits in either case; the same run's score again replaces it.
    again = readme_body | {"value": False, "run_id": TOOL.upper()}
    assert (
        await async_client.post(scores_url(TRACE.upper()), again, content_type="application/json", headers=auth)
    ).status_code == 201
    listed = await async_client.get(scores_url(TRACE), headers=auth)
    assert [(s["name"], s["value"], s["run_id"]) for s in listed.json()["scores"]] == [
        ("sql correct", False, str(tool.pk))
    ]
    await get_runtime().store.drain()


# Recording scores in code


@pytest.mark.django_db
def test_record_score_says_why_it_cannot_record_a_score():
    trace = make_trace()
    with pytest.raises(InvalidScore, match="the source must be one of execution, answer, judge, human, api"):
        record_score(trace.pk, "correct", True, source="robot")
    with pytest.raises(InvalidScore, match="run_id is not a UUID"):
        record_score(trace.pk, "correct", True, source=Score.Source.JUDGE, run_id="step 1")
    with pytest.raises(Trace.DoesNotExist):
        record_score(uuid.uuid4(), "correct", True, source=Score.Source.JUDGE)


# Feedback


@pytest.mark.django_db
def test_good_or_bad_feedback_is_the_traces_human_feedback_score_and_clearing_it_deletes_it(client, staff_user):
    trace = make_trace()
    client.force_login(staff_user)
    url = reverse("traces:feedback", args=[trace.pk])

    client.post(url, {"rating": "up", "comment": "right rows"})
    score = Score.objects.get()
    assert (score.name, score.value, score.source, score.comment) == ("feedback", True, "human", "right rows")
    assert score.author == staff_user and score.data_type == Score.DataType.BOOLEAN

    client.post(url, {"rating": "down", "comment": "wrong table"})
    client.post(url, {"rating": "keep", "comment": "wrong table, and slow"})
    assert [(s.name, s.value, s.comment) for s in Score.objects.all()] == [("feedback", False, "wrong table, and slow")]

    client.post(url, {"rating": "clear"})
    assert not Score.objects.exists()
    trace.refresh_from_db()
    assert trace.feedback is None


@pytest.mark.django_db
def test_an_imported_traces_feedback_becomes_its_feedback_score():
    trace = make_trace()
    document = json.loads(json.dumps(trace_document(trace))) | {"feedback": -1, "feedback_comment": "wrong table"}
    Trace.objects.filter(pk=trace.pk).delete()
    assert import_document(document)
    score = Score.objects.get()
    assert (score.trace_id, score.name, score.value, score.source, score.comment) == (
        trace.pk,
        "feedback",
        False,
        "human",
        "wrong table",
    )


# The trace page


@pytest.mark.django_db
def test_the_trace_page_shows_its_scores_escaped_with_a_link_to_a_scored_run(client):
    trace = make_trace()
    tool = Run.objects.get(trace=trace, name="run_0")
    record_score(trace.pk, "correct", False, source=Score.Source.EXECUTION, comment="<script>alert(1)</script>")
    record_score(trace.pk, "latency", 0.125, source=Score.Source.JUDGE, run_id=tool.pk)
    record_score(trace.pk, "<b>tone</b>", "<i>curt</i>", source=Score.Source.API)
    body = client.get(reverse("traces:detail", args=[trace.pk])).content.decode()
    table = body[body.index('<table class="scores"') : body.index("</table>", body.index('<table class="scores"'))]
    assert '<td>correct</td><td class="score-value">✗ failed</td><td>Execution</td><td>–</td>' in table
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in table and "<script>alert" not in body
    assert f'<a href="#run={tool.pk}" data-run-link="{tool.pk}">run_0</a>' in table and ">0.125<" in table
    assert "&lt;b&gt;tone&lt;/b&gt;" in table and "&lt;i&gt;curt&lt;/i&gt;" in table and "<i>curt" not in body


@pytest.mark.django_db
def test_a_trace_without_scores_has_no_scores_table(client):
    trace = make_trace()
    assert "data-scores" not in client.get(reverse("traces:detail", args=[trace.pk])).content.decode()


# The history filter


def history(client, **query) -> str:
    return client.get(reverse("traces:list"), query).content.decode()


@pytest.fixture
def scored(db):
    """Four traces: a passed and a failed verdict, a number, a category; and one with no score."""
    traces = {name: make_trace(name) for name in ("passed", "failed", "numbered", "labelled", "unscored")}
    record_score(traces["passed"].pk, "correct", True, source=Score.Source.EXECUTION)
    record_score(traces["failed"].pk, "correct", False, source=Score.Source.EXECUTION)
    record_score(traces["numbered"].pk, "quality", 0.8, source=Score.Source.JUDGE)
    record_score(traces["labelled"].pk, "quality", "hallucinated", source=Score.Source.JUDGE)
    return traces


def shown(body: str, scored: dict) -> set[str]:
    return {name for name, trace in scored.items() if f'data-trace-row="{trace.pk}"' in body}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"score": "correct"}, {"passed", "failed"}),
        ({"score": "correct", "score_verdict": "passed"}, {"passed"}),
        ({"score": "correct", "score_verdict": "failed"}, {"failed"}),
        ({"score": "correct", "score_min": "0.5"}, {"passed"}),
        ({"score": "quality", "score_min": "0.5", "score_max": "0.9"}, {"numbered"}),
        ({"score": "quality", "score_max": "0.5"}, set()),
        ({"score": "quality", "score_category": "hallucinated"}, {"labelled"}),
        ({"score": "quality", "score_verdict": "passed"}, set()),
        ({"score": "nobody-scores-this"}, set()),
    ],
)
def test_the_history_filters_by_a_scores_name_verdict_range_or_category(client, scored, query, expected):
    assert shown(history(client, **query), scored) == expected


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "field", "message", "expected"),
    [
        ({"score_verdict": "passed"}, "score_verdict", "Name the score to filter by.", "all"),
        ({"score_min": "0.5"}, "score_min", "Name the score to filter by.", "all"),
        ({"score_category": "hallucinated"}, "score_category", "Name the score to filter by.", "all"),
        ({"score": "quality", "score_min": "0.5", "score_max": "0.1"}, "score_max", "no lower", {"numbered"}),
        ({"score": "quality", "score_min": "lots"}, "score_min", "Enter a number.", {"numbered", "labelled"}),
        ({"score": "quality", "score_max": "inf"}, "score_max", "Enter a number.", {"numbered", "labelled"}),
        (
            {"score": "correct", "score_verdict": "maybe"},
            "score_verdict",
            "Select a valid choice.",
            {"passed", "failed"},
        ),
    ],
)
def test_a_bad_score_filter_is_shown_next_to_its_field_and_the_rest_still_applies(
    client, scored, query, field, message, expected
):
    body = history(client, **query)
    label = re.search(rf'<label class="invalid">[^<]*<[^>]*name="{field}".*?</label>', body, re.S)
    assert label is not None and message in label.group(0)
    assert shown(body, scored) == (set(scored) if expected == "all" else expected)


@pytest.mark.django_db
def test_the_score_filter_keeps_the_history_at_a_constant_number_of_queries(client, django_assert_max_num_queries):
    for i in range(30):
        trace = make_trace(f"question {i}")
        record_score(trace.pk, "correct", i % 2 == 0, source=Score.Source.EXECUTION)
        record_score(trace.pk, "quality", i / 30, source=Score.Source.JUDGE)
    for query, count in (
        ({"score": "correct", "score_verdict": "passed"}, 15),
        ({"score": "quality", "score_min": "0.2", "score_max": "0.8", "sort": "slowest"}, 19),
    ):
        with django_assert_max_num_queries(2):
            response = client.get(reverse("traces:list"), query)
        assert f"· {count} traces</span>" in response.content.decode()


# The admin


@pytest.mark.django_db
def test_the_admin_shows_scores_read_only_and_on_their_traces_page(staff_client):
    trace = make_trace()
    score = record_score(trace.pk, "correct", True, source=Score.Source.EXECUTION, comment="<script>x</script>")
    body = staff_client.get(reverse("admin:traces_trace_change", args=[trace.pk])).content.decode()
    assert "correct" in body and "Execution" in body and "&lt;script&gt;x&lt;/script&gt;" in body
    listing = staff_client.get(reverse("admin:traces_score_changelist"), {"source__exact": "execution"})
    assert listing.status_code == 200 and "correct" in listing.content.decode()
    page = staff_client.get(reverse("admin:traces_score_change", args=[score.pk])).content.decode()
    assert "<script>x</script>" not in page and 'name="_save"' not in page
    assert staff_client.get(reverse("admin:traces_score_add")).status_code == 403
