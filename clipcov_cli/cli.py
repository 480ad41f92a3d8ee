"""The ``clipcov`` command line: a thin Typer layer over the library packages.

Each command lives in ``clipcov_cli/commands/<name>.py``, parses its options, builds a frozen
config dataclass, calls the library and reports. Commands are registered here, in pipeline order.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys

# img2dataset imports albumentations, which would check online for updates.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import typer  # noqa: E402

from clipcov_cli import __version__  # noqa: E402
from clipcov_cli.errors import ClipcovError  # noqa: E402
from clipcov_cli.utils.console import err_console  # noqa: E402

app = typer.Typer(
    name="clipcov",
    help=(
        "Curate image-caption corpora for CLIP pretraining.\n\n"
        "Pipeline: download -> embed -> select -> export -> pretrain -> eval.\n\n"
        "Example: clipcov download cc3m.tsv --recipe cc3m --out cc3m/ && clipcov embed cc3m/ && "
        "clipcov select cc3m/ --budget 10% --out subset/"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"clipcov {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Curate image-caption corpora for CLIP pretraining."""


def _register_commands() -> None:
    # One import and one register() call per command, in pipeline order.
    from clipcov_cli import commands

    for module in commands.ordered():
        module.register(app)


_register_commands()


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app; user errors become one line on stderr and a non-zero exit."""
    # At exit, the interpreter's last garbage collections would walk every object still alive (about
    # 0.5 s once torch is loaded); frozen, they are skipped. Objects are still released as usual.
    atexit.register(gc.freeze)
    try:
        app(args=argv, standalone_mode=True)
    except ClipcovError as exc:
        from rich.markup import escape  # messages hold brackets ("clipcov[ray]", "[default: ...]")

        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]: re-run the same command to resume")
        sys.exit(130)
