"""A progress bar for the long history commands, on a terminal only."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from django.core.management.base import OutputWrapper
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from traces.live.terminal import terminal_stream


@contextmanager
def progress_bar(stderr: OutputWrapper, description: str, total: Callable[[], int]) -> Iterator[Callable[[int], None]]:
    """A function to call with each step's count of traces, shown as a bar on ``stderr`` when it
    is a terminal; otherwise nothing is written (a log or a pipe keeps only what the command says).
    ``total`` is called only for the bar: counting a large history is not free."""
    if not stderr.isatty():
        yield lambda done: None
        return
    console = Console(file=terminal_stream(stderr), force_terminal=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(description, total=total())
        yield lambda done: bar.advance(task, done)
