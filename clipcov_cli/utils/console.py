"""Rich consoles: results go to stdout, progress and messages to stderr (so pipelines stay clean).

Written to a file or a pipe (nohup, Slurm, ``2> log``), messages are not wrapped at 80 columns:
each stays one line (``soft_wrap``), so a log can be grepped."""

from __future__ import annotations

from rich.console import Console


def _console(stderr: bool) -> Console:
    c = Console(stderr=stderr)
    if not c.is_terminal:
        c.soft_wrap = True
    return c


console = _console(stderr=False)
err_console = _console(stderr=True)
