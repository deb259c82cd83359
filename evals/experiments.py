"""An experiment: every item of a dataset run through the agent as an ordinary trace (stored,
published live in the experiment's session), then judged against its item.

The runs go through the same code as the live page's and ``runagent``'s (``run_trace``), at most
``concurrency`` at a time. An item is judged by what it expects: its ``expected_sql`` by execution
accuracy (``agents.execution_accuracy``) on the agent's last SQL that ran, its ``expected_answer`` by the
answer containing it (case-insensitive); it passes when every check it has passes, and an item
with neither is run but not counted.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

from django.db.models import Q
from django.utils import timezone

from agents.chat import ChatModel
from agents.config import agent_database
from agents.events import TraceOutcome
from agents.execution_accuracy import Outcome, SqlJudgement, judge_sql
from agents.judge import judge_agent, judge_question, parse_verdict
from agents.loop import Admission, AgentResult
from evals.models import Dataset, DatasetItem, Experiment, ExperimentItem
from traces.access import SessionKey
from traces.live.agent_runs import run_trace
from traces.live.sessions import SessionRuns
from traces.models import Run, Score, Trace
from traces.runtime import Runtime
from traces.scores import record_score
from traces.store.pool import pooled


@dataclass
class ItemResult:
    """One item's result, as ``evaluate --json`` prints it."""

    item: int
    question: str
    trace_id: str
    passed: bool | None
    sql: str | None
    execution: str = ""
    reason: str = ""
    answer_matched: bool | None = None
    duration_ms: int | None = None
    total_tokens: int = 0
    cost: float = 0.0
    steps: int = 0
    error: str = ""
    scores: dict[str, Any] = field(default_factory=dict)
    judge_error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def verdict(passed: bool | None) -> str:
    """An item's result in a word, as the pages show it."""
    return "not judged" if passed is None else "passed" if passed else "failed"


def last_sql(trace_id: uuid.UUID) -> str | None:
    """The trace's last SQL that ran successfully (its last ``run_sql`` tool run that succeeded)."""
    run = (
        Run.objects.filter(trace_id=trace_id, run_type=Run.Type.TOOL, name="run_sql", status=Run.Status.SUCCESS)
        .order_by("-start_time")
        .only("inputs")
        .first()
    )
    sql = run.inputs.get("sql") if run is not None and isinstance(run.inputs, dict) else None
    return sql if isinstance(sql, str) and sql.strip() else None


async def judge(item: DatasetItem, trace_id: uuid.UUID, result: AgentResult) -> tuple[str | None, SqlJudgement | None]:
    """The agent's SQL the verdict uses, and the execution verdict on it (None without expected SQL)."""
    sql = await pooled(last_sql)(trace_id)
    if not item.expected_sql:
        return sql, None
    return sql, await judge_sql(agent_database(), item.expected_sql, sql)


def record(
    experiment: Experiment,
    item: DatasetItem,
    trace_id: uuid.UUID,
    result: AgentResult,
    sql: str | None,
    execution: SqlJudgement | None,
) -> ItemResult:
    """Record an item's verdicts: as scores on its trace, and as the experiment's row."""
    trace = Trace.objects.only("duration_ms", "total_tokens", "total_cost", "status", "error").get(pk=trace_id)
    checks: list[bool] = []
    scores: dict[str, Any] = {}
    if execution is not None:
        checks.append(execution.passed)
        scores["execution_accuracy"] = execution.passed
        record_score(trace_id, "execution_accuracy", execution.passed, source="execution", comment=execution.reason)
    answer_matched = None
    if item.expected_answer:
        answer_matched = item.expected_answer.casefold() in (result.final_response or "").casefold()
        checks.append(answer_matched)
        scores["answer_match"] = answer_matched
        record_score(trace_id, "answer_match", answer_matched, source="answer", comment=item.expected_answer[:200])
    outcome = ItemResult(
        item=item.pk,
        question=item.question,
        trace_id=str(trace_id),
        passed=all(checks) if checks else None,
        sql=sql,
        execution=str(execution.outcome) if execution is not None else "",
        reason=execution.reason if execution is not None else "",
        answer_matched=answer_matched,
        duration_ms=trace.duration_ms,
        total_tokens=trace.total_tokens,
        cost=float(trace.total_cost),
        steps=result.steps,
        error=trace.error if trace.status == Trace.Status.ERROR else "",
        scores=scores,
    )
    ExperimentItem.objects.update_or_create(
        experiment=experiment,
        item=item,
        defaults={
            "trace_id": trace_id,
            "passed": outcome.passed,
            "execution": outcome.execution,
            "reason": outcome.reason,
            "answer_matched": answer_matched,
            "sql": sql or "",
            "duration_ms": trace.duration_ms,
            "total_tokens": trace.total_tokens,
            "cost": trace.total_cost,
            "steps": result.steps,
            "error": outcome.error,
        },
    )
    return outcome


async def rate(
    model: ChatModel,
    item: DatasetItem,
    result: AgentResult,
    outcome: ItemResult,
    *,
    runtime: Runtime,
    session: SessionKey,
    owner_id: int | None,
) -> None:
    """The LLM judge's rating of an item's answer, recorded as the ``judge`` score (0 to 1) on its
    trace; the judge's own call is a trace too. A judge that fails or answers off the rubric
    leaves no score, and says why in ``outcome.judge_error``."""
    judged = await run_trace(
        judge_question(item.question, result.final_response, item.expected_answer),
        store=runtime.store,
        runner=runtime.liveness.id,
        session=session,
        source=Trace.Source.CLI,
        owner_id=owner_id,
        agent=judge_agent(model),
    )
    try:
        if judged.status != TraceOutcome.SUCCESS:
            raise ValueError(f"the judge's call failed: {judged.error}")
        verdict = parse_verdict(judged.final_response)
    except ValueError as exc:
        outcome.judge_error = str(exc)
        return
    outcome.scores["judge"] = verdict.value
    comment = f"{verdict.score}/5: {verdict.reason}"
    trace_id = uuid.UUID(outcome.trace_id)
    await pooled(record_score)(trace_id, "judge", verdict.value, source="judge", comment=comment)


def percentile(values: list[int], fraction: float) -> int | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1)]


def summarize(experiment: Experiment) -> dict[str, Any]:
    """The experiment's figures from its rows (``evaluate``'s last JSON object, the pages)."""
    rows = list(experiment.results.select_related("item"))
    with_sql = [r for r in rows if r.item.expected_sql]
    with_answer = [r for r in rows if r.item.expected_answer]
    durations = [r.duration_ms for r in rows if r.duration_ms is not None]
    return {
        "experiment_id": experiment.pk,
        "name": experiment.name,
        "dataset": experiment.dataset.name,
        "model": experiment.model,
        "items": len(rows),
        "judged": sum(r.passed is not None for r in rows),
        "passed": sum(r.passed is True for r in rows),
        "execution_accuracy": (sum(r.execution == Outcome.EQUAL for r in with_sql) / len(with_sql))
        if with_sql
        else None,
        "answer_accuracy": (sum(bool(r.answer_matched) for r in with_answer) / len(with_answer))
        if with_answer
        else None,
        "p50_ms": percentile(durations, 0.5),
        "p95_ms": percentile(durations, 0.95),
        "mean_ms": round(statistics.fmean(durations)) if durations else None,
        "total_tokens": sum(r.total_tokens for r in rows),
        "total_cost": float(sum((r.cost for r in rows), Decimal(0))),
        "errors": sum(bool(r.error) for r in rows),
        "judge_mean": _mean(
            Score.objects.filter(
                trace_id__in=[r.trace_id for r in rows if r.trace_id], name="judge", source="judge"
            ).values_list("number", flat=True)
        ),
    }


def _mean(values) -> float | None:
    found = [v for v in values if v is not None]
    return round(statistics.fmean(found), 6) if found else None


def planned_items(experiment: Experiment):
    """The items an experiment runs: those its dataset had at its start (one added since is not
    in it; one deleted since takes its result along)."""
    return DatasetItem.objects.filter(dataset_id=experiment.dataset_id, created_at__lte=experiment.started_at).order_by(
        "id"
    )


def progress(experiment: Experiment) -> dict[str, Any]:
    """How far the experiment is: its status, the items done of its total, those passing of those
    judged so far, each done item's verdict and trace, and at its end its execution accuracy."""
    rows = list(experiment.results.order_by("item_id").values("item_id", "trace_id", "passed", "error"))
    total = planned_items(experiment).count()
    return {
        "status": experiment.status,
        "done": len(rows),
        "total": max(total, len(rows)),
        "passed": sum(row["passed"] is True for row in rows),
        "judged": sum(row["passed"] is not None for row in rows),
        "execution_accuracy": None
        if experiment.status == Experiment.Status.RUNNING
        else experiment.summary.get("execution_accuracy"),
        "results": rows,
    }


def regressions(current: Experiment, other: Experiment) -> list[ExperimentItem]:
    """The items that passed in ``other`` and do not pass in ``current``."""
    passed_before = set(other.results.filter(passed=True).values_list("item_id", flat=True))
    return list(
        current.results.filter(Q(passed=False) | Q(passed__isnull=True), item_id__in=passed_before)
        .select_related("item")
        .order_by("item_id")
    )


def find_experiment(reference: str, dataset: Dataset) -> Experiment | None:
    """An experiment by id, or by name (its latest of that name on ``dataset``, else anywhere)."""
    if reference.isdigit():
        found = Experiment.objects.filter(pk=int(reference)).first()
        if found is not None:
            return found
    named = Experiment.objects.filter(name=reference).order_by("-started_at")
    return named.filter(dataset=dataset).first() or named.first()


async def run_experiment(
    experiment: Experiment,
    items: list[DatasetItem],
    *,
    runtime: Runtime,
    on_outcome: Callable[[ItemResult], None] | None = None,
    judge_model: ChatModel | None = None,
    runs: SessionRuns | None = None,
) -> dict[str, Any]:
    """Run ``items`` through the agent for ``experiment``, at most its concurrency at once; each
    outcome goes to ``on_outcome`` as it is judged. With ``judge_model``, an LLM judge also rates
    each answer (``agents.judge``), its call a trace of its own in the experiment's session. With
    ``runs`` (a server's), each item also waits its turn among the server's runs
    (``SessionRuns.admitted``), as the live page's do. Returns the summary (also saved on it)."""
    slots = asyncio.Semaphore(experiment.concurrency)
    session = SessionKey.of(f"experiment-{experiment.pk}", experiment.owner_id)

    async def one(item: DatasetItem) -> None:
        async with slots:
            trace_id = uuid.uuid4()

            def run(admission: Admission | None) -> Awaitable[AgentResult]:
                return run_trace(
                    item.question,
                    store=runtime.store,
                    runner=runtime.liveness.id,
                    session=session,
                    source=Trace.Source.CLI,
                    owner_id=experiment.owner_id,
                    model=experiment.model or None,
                    max_steps=experiment.max_steps,
                    trace_id=trace_id,
                    admission=admission,
                )

            result = await (runs.admitted(run) if runs is not None else run(None))
            sql, execution = await judge(item, trace_id, result)
            outcome = await pooled(record)(experiment, item, trace_id, result, sql, execution)
            if judge_model is not None:
                await rate(
                    judge_model, item, result, outcome, runtime=runtime, session=session, owner_id=experiment.owner_id
                )
        if on_outcome is not None:
            on_outcome(outcome)

    try:
        await asyncio.gather(*(one(item) for item in items))
    except BaseException:
        await pooled(_end)(experiment, Experiment.Status.INTERRUPTED)
        raise
    return await pooled(_end)(experiment, Experiment.Status.FINISHED)


def _end(experiment: Experiment, status: str) -> dict[str, Any]:
    experiment.status = status
    experiment.ended_at = timezone.now()
    experiment.summary = summarize(experiment)
    experiment.save(update_fields=["status", "ended_at", "summary"])
    return experiment.summary
