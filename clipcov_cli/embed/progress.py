"""A rich progress bar on stderr with samples/s and ETA."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.text import Text

from clipcov_cli.utils.console import err_console


class RateColumn(ProgressColumn):
    """Items per second."""

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        unit = task.fields.get("unit", "samples")
        return Text(f"{speed:,.0f} {unit}/s" if speed else f"- {unit}/s", style="progress.data.speed")


@contextlib.contextmanager
def embed_progress(total: int | None, label: str, unit: str = "samples") -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``; the bar is transient and off when stderr is not a terminal."""
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        console=err_console, transient=True, disable=not err_console.is_terminal,
    )
    with progress:
        task = progress.add_task(label, total=total, unit=unit)
        yield lambda n: progress.advance(task, n)
