"""Run a dataset through the agent as an experiment, judge every item, and gate on the result."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agents.chat import ChatModel
from agents.config import allowed_models, chat_model, endpoint_configured, model_label
from evals.experiments import ItemResult, find_experiment, regressions, run_experiment
from evals.management.users import user_id
from evals.models import Dataset, Experiment
from traces import protocol
from traces.live.terminal import terminal_stream
from traces.runtime import Runtime

EXIT_FAILED = 1
MAX_CONCURRENCY = 32


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


class Command(BaseCommand):
    help = (
        "Run every question of a dataset through the agent as an experiment (each an ordinary, live "
        "trace), judge it by execution accuracy and expected answer, and exit 1 when --min-accuracy "
        "is not reached or, with --fail-on-regression, when an item that passed in --compare-to fails."
    )

    def add_arguments(self, parser):
        parser.add_argument("dataset", help="The dataset's name.")
        parser.add_argument("--name", help="The experiment's name (default: the dataset's name and the time).")
        parser.add_argument("--model", help="The model (one of TRACE_ALLOWED_MODELS, or builtin).")
        parser.add_argument("--max-steps", type=int, help="Step limit per item (default AGENT_MAX_STEPS).")
        parser.add_argument("--concurrency", type=int, default=4, help="Items run at once (default 4).")
        parser.add_argument("--user", help="Who owns the dataset, the experiment and its traces (default: none).")
        parser.add_argument(
            "--compare-to", help="An experiment's id, or name (its latest), to list the items that regressed."
        )
        parser.add_argument(
            "--fail-on-regression", action="store_true", help="Exit 1 if an item that passed in --compare-to fails."
        )
        parser.add_argument("--min-accuracy", type=float, help="Exit 1 below this share (0–1) of judged items passing.")
        parser.add_argument(
            "--json", action="store_true", help="One JSON object per item as it finishes, then the summary."
        )
        parser.add_argument(
            "--judge",
            action="store_true",
            help="Also have the configured model (OPENAI_MODEL) rate each answer on a rubric (a 'judge' score "
            "0–1); skipped without a model endpoint.",
        )

    def handle(self, *args, **options):
        owner_id = user_id(options["user"])
        dataset = Dataset.objects.named(options["dataset"], owner_id).first()
        if dataset is None:
            raise CommandError(f"no dataset named {options['dataset']!r} (dataset list shows them)")
        model = options["model"]
        if model is not None and model not in allowed_models():
            raise CommandError(f"--model must be one of: {', '.join(allowed_models())} (TRACE_ALLOWED_MODELS)")
        max_steps = options["max_steps"]
        if max_steps is not None and not 1 <= max_steps <= protocol.MAX_STEPS_LIMIT:
            raise CommandError(f"--max-steps must be between 1 and {protocol.MAX_STEPS_LIMIT}")
        if not 1 <= options["concurrency"] <= MAX_CONCURRENCY:
            raise CommandError(f"--concurrency must be between 1 and {MAX_CONCURRENCY}")
        minimum = options["min_accuracy"]
        if minimum is not None and not 0 <= minimum <= 1:
            raise CommandError("--min-accuracy is a share between 0 and 1, e.g. 0.8")
        other = None
        if options["compare_to"]:
            other = find_experiment(options["compare_to"], dataset)
            if other is None:
                raise CommandError(f"no experiment {options['compare_to']!r} to compare to")
        elif options["fail_on_regression"]:
            raise CommandError("--fail-on-regression needs --compare-to")
        judge_model = None
        if options["judge"]:
            if endpoint_configured():
                judge_model = chat_model()
            else:
                self.stderr.write(
                    self.style.WARNING(
                        "--judge is skipped: no model endpoint is configured (OPENAI_API_KEY, OPENAI_BASE_URL), "
                        "and the built-in model cannot judge"
                    )
                )
        items = list(dataset.items.order_by("id"))
        if not items:
            raise CommandError(f"dataset {dataset.name!r} has no items")
        experiment = Experiment.objects.create(
            dataset=dataset,
            name=options["name"] or f"{dataset.name} {timezone.localtime():%Y-%m-%d %H:%M:%S}",
            owner_id=owner_id,
            model=model or model_label(),  # the model it runs with, as the pages show it
            max_steps=max_steps,
            concurrency=options["concurrency"],
            started_at=timezone.now(),
        )
        logging.getLogger("traces").setLevel(logging.WARNING)  # a line per run would bury the progress
        summary = asyncio.run(self._run(experiment, items, as_json=options["json"], judge_model=judge_model))
        regressed = regressions(experiment, other) if other is not None else []
        self._report(summary, other, regressed, as_json=options["json"])
        judged = summary["judged"]
        accuracy = summary["passed"] / judged if judged else None
        failed = []
        if minimum is not None and (accuracy is None or accuracy < minimum):
            failed.append(f"accuracy {percent(accuracy)} is below --min-accuracy {minimum:.1%}")
        if regressed and options["fail_on_regression"]:
            failed.append(f"{len(regressed)} item(s) regressed against {other}")
        if failed:
            self.stderr.write("; ".join(failed))
            sys.exit(EXIT_FAILED)

    async def _run(
        self, experiment: Experiment, items: list, *, as_json: bool, judge_model: ChatModel | None
    ) -> dict[str, Any]:
        async with Runtime(kind="cli") as runtime:
            if as_json:

                def show(outcome: ItemResult) -> None:
                    self.stdout.write(json.dumps(outcome.as_dict(), ensure_ascii=False))
                    self.stdout.flush()

                return await run_experiment(
                    experiment, items, runtime=runtime, on_outcome=show, judge_model=judge_model
                )
            console = Console(file=terminal_stream(self.stdout), highlight=False)
            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            with Progress(*columns, console=console, transient=not console.is_terminal) as progress:
                task = progress.add_task(f"{experiment.name}: 0 passed", total=len(items))
                passed = 0

                def advance(outcome: ItemResult) -> None:
                    nonlocal passed
                    passed += outcome.passed is True
                    progress.update(task, advance=1, description=f"{experiment.name}: {passed} passed")

                return await run_experiment(
                    experiment, items, runtime=runtime, on_outcome=advance, judge_model=judge_model
                )

    def _report(self, summary: dict[str, Any], other: Experiment | None, regressed: list, *, as_json: bool) -> None:
        if as_json:
            if other is not None:
                summary = {
                    **summary,
                    "compared_to": other.pk,
                    "regressions": [{"item": r.item_id, "question": r.item.question} for r in regressed],
                }
            self.stdout.write(json.dumps(summary, ensure_ascii=False))
            return
        self.stdout.write(
            f"experiment {summary['experiment_id']} ({summary['name']}): {summary['passed']} of "
            f"{summary['judged']} judged items passed; execution accuracy "
            f"{percent(summary['execution_accuracy'])}, answer accuracy {percent(summary['answer_accuracy'])}; "
            f"p50 {summary['p50_ms']} ms, p95 {summary['p95_ms']} ms; {summary['total_tokens']} tokens, "
            f"${summary['total_cost']:.4f}; {summary['errors']} error(s)"
            + (f"; the judge's mean {summary['judge_mean']:.2f}" if summary.get("judge_mean") is not None else "")
        )
        if other is not None:
            self.stdout.write(f"against experiment {other.pk} ({other.name}): {len(regressed)} regression(s)")
            for row in regressed:
                self.stdout.write(f"  regressed: {row.item.question}")
