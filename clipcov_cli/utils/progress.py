"""Progress of long jobs on stderr: a transient rich bar on a terminal; plain lines otherwise.

With stderr redirected to a file (nohup, Slurm, ``2> log``) a bar would print nothing until the end,
so a line such as ``embedding: 1,200/10,000 samples (12%), 340 samples/s, ETA 0:00:26`` is printed
every ``CLIPCOV_PROGRESS_SECONDS`` seconds (default 30), and one at the end of each phase."""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.text import Text

from clipcov_cli.utils.console import err_console

DEFAULT_SECONDS = 30.0


def interval() -> float:
    """Seconds between plain progress lines (``CLIPCOV_PROGRESS_SECONDS``)."""
    try:
        return max(0.0, float(os.environ.get("CLIPCOV_PROGRESS_SECONDS", DEFAULT_SECONDS)))
    except ValueError:
        return DEFAULT_SECONDS


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def progress_line(label: str, done: int, total: int | None, unit: str, seconds: float) -> str:
    """``label: done/total unit (pct%), rate unit/s, ETA h:mm:ss`` (what is known of it)."""
    rate = done / seconds if seconds > 0 else 0.0
    text = f"{label}: {done:,}" + (f"/{total:,}" if total else "") + f" {unit}"
    if total:
        text += f" ({100 * done / total:.0f}%)"
    text += f", {rate:,.1f} {unit}/s" if rate else ""
    if total and rate and done < total:
        text += f", ETA {_clock((total - done) / rate)}"
    return text + f", {_clock(seconds)} elapsed"


@dataclass
class PlainProgress:
    """Counts and prints a line when ``every`` seconds have passed since the last one."""

    label: str
    total: int | None
    unit: str
    every: float
    echo: Callable[[str], None]
    done: int = 0
    start: float = field(default_factory=time.monotonic)
    last: float = field(default_factory=time.monotonic)

    def advance(self, n: int) -> None:
        self.update(self.done + n)

    def update(self, done: int, total: int | None = None, label: str | None = None) -> None:
        if label is not None and label != self.label:
            self.finish()
            self.label, self.start, self.last = label, time.monotonic(), time.monotonic()
        self.done, self.total = done, total if total is not None else self.total
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self.echo(progress_line(self.label, self.done, self.total, self.unit, now - self.start))

    def finish(self) -> None:
        """The phase's last line, if it ran for at least the interval (short phases stay quiet)."""
        if self.done and time.monotonic() - self.start >= self.every:
            self.echo(progress_line(self.label, self.done, self.total, self.unit, time.monotonic() - self.start))


class RateColumn(ProgressColumn):
    """Items per second."""

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        unit = task.fields.get("unit", "samples")
        return Text(f"{speed:,.0f} {unit}/s" if speed else f"- {unit}/s", style="progress.data.speed")


def _echo(line: str) -> None:
    err_console.print(line, highlight=False, markup=False, soft_wrap=True)


@contextlib.contextmanager
def job_progress(total: int | None, label: str, unit: str = "samples") -> Iterator[PlainProgress | "_Bar"]:
    """An object with ``advance(n)`` and ``update(done, total=None, label=None)``: a rich bar on a
    terminal, plain periodic lines when stderr is not one."""
    if not err_console.is_terminal:
        plain = PlainProgress(label, total, unit, interval(), _echo)
        yield plain
        plain.finish()  # not after an error: the error is the last line
        return
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
                   TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=err_console, transient=True)
    with bar:
        yield _Bar(bar, bar.add_task(label, total=total, unit=unit))


@dataclass
class _Bar:
    bar: Progress
    task: int

    def advance(self, n: int) -> None:
        self.bar.advance(self.task, n)

    def update(self, done: int, total: int | None = None, label: str | None = None) -> None:
        kw = {"description": label} if label is not None else {}
        self.bar.update(self.task, completed=done, total=total, **kw)


@contextlib.contextmanager
def job_phase(label: str) -> Iterator[None]:
    """A phase whose size is unknown: nothing on a terminal; in a log file a line at its start, one every ``CLIPCOV_PROGRESS_SECONDS`` while it runs, and one at its end."""
    if err_console.is_terminal:  # the command's own bar or spinner shows it (one live display at a time)
        yield
        return
    import threading

    start, stop = time.monotonic(), threading.Event()

    def beat() -> None:
        while not stop.wait(max(interval(), 0.05)):
            _echo(f"{label}: running, {_clock(time.monotonic() - start)} elapsed")

    thread = threading.Thread(target=beat, name="clipcov-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
    if (took := time.monotonic() - start) >= interval():  # short phases stay quiet
        _echo(f"{label}: done in {_clock(took)}")
