"""Shared option helpers of the commands.

- The closed sets of option values, used as ``Literal[...]`` annotations (Typer makes them click
  choices): listed in --help, completed by the shell
  (`clipcov --install-completion`), refused with the list when mistyped. Literal here so that --help
  does not import the libraries (tests check that each equals the library's own set); the methods
  are the registry's own names (``select/methods/__init__.py`` imports no method).
- :func:`renamed`: a flag renamed for one meaning per name across commands keeps its old name,
  hidden, for one release, with a warning."""

from __future__ import annotations

import re

import typer

from clipcov_cli.select.methods import METHODS as _METHOD_REGISTRY

METHODS = tuple(_METHOD_REGISTRY)  # the registry's names (importing it loads no method)
R_MODES = ("auto", "exact", "mean")  # select.methods.clipcov.R_MODES
ENGINES = ("local", "ray")  # distribute.base.ENGINES
PRECISIONS = ("fp32", "fp16", "bf16", "amp")  # embed.model.PRECISIONS
INPUT_FORMATS = ("txt", "csv", "tsv", "txt.gz", "csv.gz", "tsv.gz", "parquet")  # download.config.INPUT_FORMATS
RESIZE_MODES = ("no", "border", "keep_ratio", "keep_ratio_largest", "center_crop")  # download.config.RESIZE_MODES
RECIPES = ("paper", "tiny")  # pretrain.recipes.RECIPES
TASKS = ("zeroshot", "retrieval")  # evaluate.runner.TASKS
DEVICES = ("auto", "cpu", "cuda")


def parse_device(value: str) -> str:
    """auto, cpu, cuda, or one GPU as cuda:N."""
    if value in DEVICES or re.fullmatch(r"cuda:\d+", value):
        return value
    raise typer.BadParameter(f"{value!r} is not one of auto, cpu, cuda, cuda:N")


def complete_device(ctx, param, incomplete: str) -> list[str]:
    return [d for d in DEVICES if d.startswith(incomplete)]


def renamed(old_value, old: str, new_value, new: str):
    """The value of a renamed flag: the old spelling's, with a warning, when only it was given."""
    if old_value is None:
        return new_value
    from clipcov_cli.utils.console import err_console

    err_console.print(f"warning: {old} is deprecated here and will be removed in the next release: use {new}",
                      markup=False, highlight=False)
    return old_value
