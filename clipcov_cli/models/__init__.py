"""Built-in open_clip model configs shipped with clipcov, and registration of custom ones.

open_clip has no flag for a custom architecture: a config JSON is registered under a name with
``open_clip.add_model_config`` and then created by that name, in the same process.
"""

from __future__ import annotations

import json
from pathlib import Path

from clipcov_cli.errors import ClipcovError

BUILTIN_DIR = Path(__file__).resolve().parent
TINY_MODEL = "clipcov-tiny"


def builtin_config_path(name: str) -> Path:
    return BUILTIN_DIR / f"{name}.json"


def register_model_config(path: str | Path | None = None, name: str | None = None) -> str:
    """Register an open_clip model config (a JSON file) and return the name to create it by.

    With ``path=None`` the built-in configs (``clipcov-tiny``) are registered and ``name`` returned.
    A file registers under its stem unless ``name`` is given.
    """
    import open_clip

    if path is None:
        for p in sorted(BUILTIN_DIR.glob("*.json")):
            open_clip.add_model_config(p)
        return name or TINY_MODEL
    p = Path(path)
    if not p.is_file():
        raise ClipcovError(f"model config {p} does not exist")
    try:
        cfg = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise ClipcovError(f"model config {p} is not readable JSON: {exc}") from None
    if not isinstance(cfg, dict) or not {"embed_dim", "vision_cfg", "text_cfg"} <= set(cfg):
        raise ClipcovError(f"model config {p} lacks embed_dim, vision_cfg or text_cfg")
    model_name = name or p.stem
    if model_name != p.stem:
        # open_clip registers a file under its stem; copy it under the wanted name.
        import tempfile

        tmp = Path(tempfile.mkdtemp(prefix="clipcov-cfg-")) / f"{model_name}.json"
        tmp.write_text(json.dumps(cfg))
        p = tmp
    open_clip.add_model_config(p)
    return model_name
