"""CLI commands, one module each. Every module has ``register(app)`` and stays thin: parse options,
build a frozen config, call the library, report."""

from __future__ import annotations

import importlib
from types import ModuleType

# Pipeline order; this is also the order of `clipcov --help`.
COMMANDS: tuple[str, ...] = ("download", "embed", "select", "export", "pretrain", "eval", "compare", "demo")


def ordered() -> list[ModuleType]:
    return [importlib.import_module(f"clipcov_cli.commands.{name}") for name in COMMANDS]
