"""manage.py evaluate: a dataset run through the built-in agent as an experiment, every item an
ordinary stored trace, judged by execution accuracy and expected answer; the exit codes of
--min-accuracy and --compare-to."""

from __future__ import annotations

import asyncio
import io
import json

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from evals.datasets import Item, add_items
from evals.models import Experiment, ExperimentItem
from tests.fake_openai import FakeOpenAI, Reply
from traces.models import Event, Score, Trace

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("configured_agent_db")]

ITEMS = [
    # the agent orders by count; the expected SQL by country: the same rows, another order
    Item("how many orders per country?", "SELECT country, COUNT(*) FROM orders GROUP BY country ORDER BY country"),
    # deliberately wrong: counts products, not users
    Item("how many users are there?", "SELECT COUNT(*) FROM products"),
    # an expected SQL that is not SQL: not comparable, so not passed
    Item("how many orders are there?", "SELEC COUNT(*) FROM orders"),
    Item("which country has the most users?", expected_answer="CANADA"),
    Item("which country has the most users?", expected_answer="Atlantis"),
    Item("show 10 users"),  # nothing judges it: run, not counted
]


def evaluate(*args: str) -> tuple[list[dict], int]:
    """evaluate's JSON lines, and its exit status."""
    out = io.StringIO()
    try:
        call_command("evaluate", *args, "--json", stdout=out, stderr=io.StringIO())
        status = 0
    except SystemExit as exit:
        status = int(exit.code or 0)
    return [json.loads(line) for line in out.getvalue().splitlines()], status


def test_an_experiment_judges_every_item_by_the_definition():
    add_items("shop", None, ITEMS)
    lines, status = evaluate("shop", "--concurrency", "3", "--name", "first")
    assert status == 0
    *items, summary = lines
    by_question = {}
    for line in items:
        by_question.setdefault(line["question"], []).append(line)
    assert len(items) == len(ITEMS)
    assert by_question["how many orders per country?"][0]["passed"] is True
    assert by_question["how many orders per country?"][0]["sql"].startswith("SELECT country, COUNT(*)")
    wrong = by_question["how many users are there?"][0]
    assert wrong["passed"] is False and wrong["sql"] == "SELECT COUNT(*) AS row_count FROM users"
    assert wrong["execution"] == "different" and wrong["scores"] == {"execution_accuracy": False}
    broken = by_question["how many orders are there?"][0]
    assert broken["passed"] is False and broken["execution"] == "expected_failed"
    answers = sorted(
        (line["passed"], line["scores"]["answer_match"]) for line in by_question["which country has the most users?"]
    )
    assert answers == [(False, False), (True, True)]  # "CANADA" is in the answer, case aside
    assert by_question["show 10 users"][0]["passed"] is None and by_question["show 10 users"][0]["scores"] == {}

    assert summary["items"] == 6 and summary["judged"] == 5 and summary["passed"] == 2
    assert summary["execution_accuracy"] == pytest.approx(1 / 3)
    assert summary["answer_accuracy"] == pytest.approx(1 / 2)
    assert summary["errors"] == 0 and summary["total_tokens"] > 0 and summary["p50_ms"] is not None
    assert summary["dataset"] == "shop"

    # Every item is an ordinary stored trace, with its verdicts as scores on it.
    experiment = Experiment.objects.get(pk=summary["experiment_id"])
    assert experiment.status == Experiment.Status.FINISHED and experiment.summary == summary
    traces = Trace.objects.filter(pk__in=[line["trace_id"] for line in items])
    assert {t.status for t in traces} == {"success"} and len(traces) == 6
    assert {t.session_id for t in traces} == {f"experiment-{experiment.pk}"}
    assert all(Event.objects.filter(trace=t).count() == t.last_seq > 0 for t in traces)
    assert ExperimentItem.objects.filter(experiment=experiment).count() == 6
    score = Score.objects.get(trace_id=wrong["trace_id"], name="execution_accuracy")
    assert score.value is False and score.source == "execution"


def test_min_accuracy_and_regressions_set_the_exit_status():
    add_items("gate", None, [Item("how many users are there?", "SELECT COUNT(*) FROM users")])
    lines, status = evaluate("gate", "--name", "baseline", "--min-accuracy", "1")
    assert status == 0 and lines[-1]["passed"] == 1
    # The item's expectation changes so that the same agent now fails it: a regression.
    Experiment.objects.get(name="baseline").dataset.items.update(expected_sql="SELECT COUNT(*) FROM orders")
    lines, status = evaluate("gate", "--compare-to", "baseline")
    assert status == 0  # regressions are reported, not failed, without --fail-on-regression
    assert lines[-1]["regressions"] == [{"item": lines[0]["item"], "question": "how many users are there?"}]
    _, status = evaluate("gate", "--compare-to", "baseline", "--fail-on-regression")
    assert status == 1
    _, status = evaluate("gate", "--min-accuracy", "0.5")
    assert status == 1


def test_its_options_are_checked_before_anything_runs():
    add_items("opts", None, [Item("how many users are there?")])
    for args, message in [
        (("nope",), "no dataset named 'nope'"),
        (("opts", "--model", "o1-pro-most-expensive"), "--model must be one of"),
        (("opts", "--concurrency", "0"), "--concurrency must be between"),
        (("opts", "--min-accuracy", "80"), "--min-accuracy is a share"),
        (("opts", "--compare-to", "never-ran"), "no experiment 'never-ran'"),
        (("opts", "--fail-on-regression"), "needs --compare-to"),
    ]:
        with pytest.raises(CommandError, match=message):
            call_command("evaluate", *args, stdout=io.StringIO())
    assert not Experiment.objects.exists()


def test_the_judge_rates_each_answer_and_its_call_is_a_trace(settings):
    with FakeOpenAI() as llm:
        settings.OPENAI_API_KEY, settings.OPENAI_BASE_URL, settings.OPENAI_MAX_RETRIES = "sk-test", llm.url, 0
        llm.script(
            Reply('{"score": 5, "reason": "all there"}', usage=(80, 12)),
            Reply('Here is my grade: {"score": 2, "reason": "wrong count"}', usage=(80, 12)),
        )
        add_items(
            "judged",
            None,
            [Item("how many users are there?", expected_answer="300"), Item("how many orders?", expected_answer="7")],
        )
        # The agent is the built-in model; the judge, the configured endpoint's.
        lines, status = evaluate("judged", "--model", "builtin", "--judge", "--concurrency", "1")
    assert status == 0
    *items, summary = lines
    assert [line["scores"]["judge"] for line in items] == [1.0, 0.25]
    assert summary["judge_mean"] == pytest.approx(0.625)
    judge_traces = Trace.objects.filter(agent_name="judge")
    assert judge_traces.count() == 2 and {t.session_id for t in judge_traces} == {
        f"experiment-{summary['experiment_id']}"
    }
    sent = llm.requests[0]["body"]["messages"]
    assert sent[0]["content"].startswith("You grade the answer") and "Expected answer:\n300" in sent[1]["content"]
    score = Score.objects.get(trace_id=items[1]["trace_id"], name="judge")
    assert score.source == "judge" and score.comment == "2/5: wrong count"


def test_without_a_model_endpoint_the_judge_is_skipped_and_said_so():
    add_items("offline", None, [Item("how many users are there?", expected_answer="300")])
    err = io.StringIO()
    out = io.StringIO()
    call_command("evaluate", "offline", "--judge", "--json", stdout=out, stderr=err)
    assert "--judge is skipped: no model endpoint is configured" in err.getvalue()
    *items, summary = [json.loads(line) for line in out.getvalue().splitlines()]
    assert "judge" not in items[0]["scores"] and summary["judge_mean"] is None
    assert not Trace.objects.filter(agent_name="judge").exists()


async def test_an_experiments_runs_reach_an_original_client_of_its_session_as_ordinary_traces():
    """A client of the original protocol watching the experiment's session sees each item's run as
    it sees any run: the original event types only, each trace from trace_started to trace_completed."""
    from asgiref.sync import sync_to_async

    from evals.experiments import run_experiment
    from tests.live import connect, receive
    from traces import protocol
    from traces.runtime import get_runtime

    @sync_to_async
    def prepare() -> tuple[Experiment, list]:
        dataset, _ = add_items("watched", None, ITEMS[:2])
        experiment = Experiment.objects.create(dataset=dataset, name="watched", started_at=timezone.now())
        return experiment, list(dataset.items.all())

    experiment, items = await prepare()
    watcher = connect(f"/ws/experiment-{experiment.pk}")
    assert (await watcher.connect())[0]
    assert (await receive(watcher))["event_type"] == "connection_established"
    await run_experiment(experiment, items, runtime=get_runtime())
    await get_runtime().store.drain()
    seen: dict[str, list[str]] = {}
    while sum(kinds[-1:] == ["trace_completed"] for kinds in seen.values()) < 2:
        message = await receive(watcher)
        seen.setdefault(message["trace_id"], []).append(message["event_type"])
    original = protocol.streamed_events(protocol.ORIGINAL_PROTOCOL)
    assert len(seen) == 2 and all(kinds[0] == "trace_started" for kinds in seen.values())
    assert {kind for kinds in seen.values() for kind in kinds} <= original
    await watcher.disconnect()


async def test_a_servers_experiment_waits_its_turn_among_the_servers_runs(settings, slow_llm):
    """Run from a page, an experiment's items queue for the server's TRACE_MAX_CONCURRENT_RUNS
    with the live page's runs, and their traces say so, as a queued run's does."""
    from asgiref.sync import sync_to_async

    from evals.experiments import run_experiment
    from traces.runtime import get_runtime

    settings.TRACE_MAX_CONCURRENT_RUNS = 1

    @sync_to_async
    def prepare() -> tuple[Experiment, list]:
        dataset, _ = add_items("queued", None, [Item("how many users?"), Item("how many orders?")])
        experiment = Experiment.objects.create(dataset=dataset, name="q", concurrency=2, started_at=timezone.now())
        return experiment, list(dataset.items.all())

    experiment, items = await prepare()
    runs = get_runtime().runs
    most = 0

    async def watch() -> None:
        nonlocal most
        while True:
            most = max(most, runs.running)
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(watch())
    summary = await run_experiment(experiment, items, runtime=get_runtime(), runs=runs)
    watcher.cancel()
    assert summary["items"] == 2 and most == 1 and runs.running == 0

    @sync_to_async
    def queued_messages() -> list[str]:
        return [
            json.loads(event.envelope)["data"]["message"]
            for event in Event.objects.filter(
                trace__session_id=f"experiment-{experiment.pk}", event_type="status_update"
            )
        ]

    assert any(message.startswith("Queued: next to start") for message in await queued_messages())
