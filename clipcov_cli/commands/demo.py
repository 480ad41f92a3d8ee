"""`clipcov demo`: run the whole loop on the embedded synthetic corpus and print the comparison."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from clipcov_cli.utils.console import console, err_console

EPILOG = """\
Examples:\n\n
  clipcov demo                       # full: 5 seeds, budgets 10% and 30%, about 15 minutes on 2 CPU cores\n\n
  clipcov demo --quick --out /tmp/d  # one seed, fewer epochs: about 3 minutes\n\n
Re-running with the same --out resumes: finished stages are skipped.
"""


def demo(
    out: Path = typer.Option(Path("clipcov-demo"), "--out", "-o", help="Folder for everything the demo makes."),
    quick: bool = typer.Option(False, "--quick", help="One seed, a smaller corpus and test split, fewer epochs (about 3 minutes)."),
) -> None:
    """Generate a web-like corpus, serve and download it, embed, select with ClipCov and the baselines,
    train a tiny CLIP on each subset, and compare zero-shot accuracy."""
    from clipcov_cli.demo.config import DemoConfig
    from clipcov_cli.demo.runner import run_demo

    cfg = DemoConfig.make(out, quick)

    def echo(message) -> None:
        if isinstance(message, str):
            err_console.print(f"[bold cyan]demo[/] {message}", highlight=False)
        else:  # the comparison table: wide enough for "12.3 ± 4.5" columns even in a pipe
            Console(width=max(console.width, 160)).print(message)

    result = run_demo(cfg, echo)
    err_console.print(f"report: {result.report}\nresults: {result.results}\nwall time: {result.seconds:.0f}s")


def register(app: typer.Typer) -> None:
    app.command("demo", help="Run the whole loop on the embedded web-like demo corpus and compare methods.",
                epilog=EPILOG, short_help="The whole loop on a built-in corpus. e.g. clipcov demo --quick")(demo)
