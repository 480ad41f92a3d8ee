"""The ``clipcov`` command line: a thin Typer layer over the library packages.

Each command lives in ``clipcov_cli/commands/<name>.py``, parses its options, builds a frozen
config dataclass, calls the library and reports. Commands are registered here, in pipeline order.
"""

from __future__ import annotations

import gc
import os
import re
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
    add_completion=True,  # --install-completion / --show-completion: option names and choices
    pretty_exceptions_enable=False,
    # help text is plain text: "[default: ...]" and other brackets are shown as written, not read as rich markup
    rich_markup_mode=None,
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
    for command in app.registered_commands:  # examples keep their lines (plain help rewraps paragraphs)
        if command.epilog:
            command.epilog = "\n\n".join("\b\n" + p for p in re.split(r"\n\s*\n", command.epilog.strip()) if p.strip())


_register_commands()


def main(argv: list[str] | None = None) -> None:
    """Run the app in this interpreter: user errors become one line on stderr; ends with SystemExit
    (the exit code), as Click's standalone mode does."""
    sys.exit(_run(argv))


def entry() -> None:
    """The ``clipcov`` executable: :func:`main`, then the interpreter's normal exit (``SystemExit``
    with the status: other threads joined, ``atexit`` functions run, the streams flushed, Python's own
    status for a failed flush).

    ``gc.freeze()`` first: the objects the command leaves behind (440k once torch and open_clip are
    loaded) are no longer walked by the full garbage collections of the interpreter's teardown, which
    were most of its cost (1.4 s -> 0.3 s with torch, open_clip and webdataset loaded; measured in
    ``benchmarks/noop_commands.py``). They are not released one by one either (CPython does not
    promise ``__del__`` at exit); objects made afterwards (by threads still running, by ``atexit``
    functions) are collected as usual."""
    code = _run(None)
    gc.freeze()
    sys.exit(code)


# img2dataset's, clip-retrieval's and open_clip_train's spellings -> clipcov's (suggested when the
# command has it); other snake_case flags are suggested in their dashed form when the command has that
FOREIGN_FLAGS = {
    "--output_folder": "--out", "--output-folder": "--out", "--output_dir": "--out", "--output-dir": "--out",
    "--url_list": "URL_LIST (the first argument)", "--input_dataset": "DATASET_DIR (the first argument)",
    "--processes_count": "--processes", "--thread_count": "--threads", "--num_prepro_workers": "--workers",
    "--number_sample_per_shard": "--shard-size", "--clip_model": "--model", "--retries_count": "--retries",
    "--train-data": "DATA (the first argument)", "--train_data": "DATA (the first argument)",
}


def _foreign_flag(argv: list[str]) -> str | None:
    """A one-line "did you mean" for a flag another tool spells differently, or None."""
    import typer.main

    name = next((a for a in argv if not a.startswith("-")), None)
    command = typer.main.get_command(app).commands.get(name) if name else None  # type: ignore[attr-defined]
    if command is None:
        return None
    known = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
    for arg in argv[argv.index(name) + 1:]:
        if arg == "--":
            break
        flag = arg.split("=", 1)[0]
        if not flag.startswith("--") or flag in known:
            continue
        hint = FOREIGN_FLAGS.get(flag)
        if hint is None or (hint.startswith("--") and hint not in known):
            hint = flag.replace("_", "-") if flag.replace("_", "-") in known else None
        if hint is not None:
            return f"no such option {flag} for clipcov {name} (another tool's spelling): did you mean {hint}?"
    return None


def _run(argv: list[str] | None) -> int:
    """Run the app; return the process' exit code."""
    try:
        hint = _foreign_flag(list(sys.argv[1:] if argv is None else argv))
        if hint is not None:
            raise ClipcovError(hint)
        return _exit_code(_invoke(argv))
    except ClipcovError as exc:
        from rich.markup import escape  # messages hold brackets ("clipcov[ray]", "[default: ...]")

        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]: re-run the same command to resume")
        return 130
    except SystemExit as exc:  # standalone mode ends with it, success included
        return _exit_code(exc.code)
    return 0


def _click_exceptions():
    try:  # Typer >= 0.2x vendors click
        from typer._click import exceptions
    except ImportError:
        from click import exceptions
    return exceptions


def _invoke(argv: list[str] | None) -> object:
    """The app, with click's usage errors (a bad choice, a missing option) as one ``error:`` line."""
    exceptions = _click_exceptions()
    try:
        return app(args=argv, prog_name="clipcov", standalone_mode=False)
    except exceptions.ClickException as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `clipcov` alone: the help, as before
            typer.echo(exc.ctx.get_help())
            return exc.exit_code
        message = _usage_message(exc)
        raise ClipcovError(message, exit_code=exc.exit_code) from None
    except typer.Abort as exc:
        if isinstance(exc.__cause__ or exc.__context__, KeyboardInterrupt):
            raise KeyboardInterrupt from None
        err_console.print("aborted", highlight=False)
        return 1


def _usage_message(exc) -> str:
    """click's message, a bad choice as ``unknown --flag 'value': use one of a, b`` (plus where help is)."""
    text = " ".join(exc.format_message().split())
    m = re.search(r"'(?P<value>[^']*)' is not one of (?P<choices>.*?)\.?$", text)
    param = getattr(exc, "param", None)
    if m and param is not None and getattr(param, "opts", None):
        choices = ", ".join(c.strip().strip("'") for c in m.group("choices").split(","))
        return f"unknown {param.opts[0]} {m.group('value')!r}: use one of {choices}"
    ctx = getattr(exc, "ctx", None)
    where = f" (see {ctx.command_path} --help)" if ctx is not None else ""
    return text + where


def _exit_code(code: object) -> int:
    """``sys.exit``'s argument as an exit status (a message is printed to stderr: status 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1
