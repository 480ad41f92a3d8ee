"""Recipes: named YAML presets for known URL lists (shipped: cc3m, cc12m) or a user's YAML file."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from clipcov_cli.errors import ClipcovError, first_line

KEYS = {"description", "input_format", "header", "columns", "url_col", "caption_col", "extra_cols", "image_size",
        "resize_mode", "processes", "threads", "shard_size", "retries", "timeout"}


def builtin_recipes() -> list[str]:
    return sorted(p.name[: -len(".yaml")] for p in resources.files("clipcov_cli.recipes").iterdir()
                  if p.name.endswith(".yaml"))


def load_recipe(name_or_path: str) -> dict[str, Any]:
    """The recipe's settings as a dict of DownloadConfig fields (``description`` dropped)."""
    if name_or_path in builtin_recipes():
        text = resources.files("clipcov_cli.recipes").joinpath(f"{name_or_path}.yaml").read_text()
        source = name_or_path
    else:
        path = Path(name_or_path)
        if not path.suffix.lower() in (".yaml", ".yml") or not path.is_file():
            raise ClipcovError(f"unknown recipe {name_or_path!r}: use one of {', '.join(builtin_recipes())} or a YAML file")
        text, source = path.read_text(), str(path)
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ClipcovError(f"recipe {source} is not valid YAML: {first_line(exc)}") from None
    if not isinstance(data, dict):
        raise ClipcovError(f"recipe {source} must be a mapping of settings")
    unknown = set(data) - KEYS
    if unknown:
        raise ClipcovError(f"recipe {source} has unknown keys: {', '.join(sorted(unknown))}")
    data.pop("description", None)
    for key in ("columns", "extra_cols"):
        if key in data:
            data[key] = tuple(str(c) for c in data[key])
    return data
