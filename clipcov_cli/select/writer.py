"""Write a selection (contract 3): ``selection.parquet`` and ``manifest.json``, as one atomic folder."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clipcov_cli.select.base import EmbeddingSet, Selection
from clipcov_cli.select.keys import keys_to_arrow, numbers_to_arrow
from clipcov_cli.utils.atomic import atomic_dir, write_json
from clipcov_cli.utils.overwrite import Owned, is_temporary

FORMAT_VERSION = 1
WRITES = ("selection.parquet", "manifest.json")


def _is_subset(out: Path) -> bool:
    """``out`` holds a manifest that `clipcov select` wrote."""
    try:
        m = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(m, dict) and {"method", "budget", "source"} <= m.keys()


def _select_writes(entry: Path) -> bool:
    """A name select writes, or the subset's export in ``shards/`` (made from the selection replaced)."""
    if entry.name in WRITES or is_temporary(entry):
        return True
    from clipcov_cli.export.layout import EXPORT_OWNED

    return entry.name == "shards" and entry.is_dir() and EXPORT_OWNED.marked(entry) and \
        all(EXPORT_OWNED.ours(p) for p in entry.iterdir())


SELECT_OWNED = Owned("select", "manifest.json", _is_subset, _select_writes)


def selection_table(emb: EmbeddingSet, sel: Selection) -> pa.Table:
    idx = sel.indices
    cols: dict[str, object] = {
        "key": keys_to_arrow(np.asarray(emb.keys)[idx]),
        "rank": numbers_to_arrow(np.arange(len(idx), dtype=np.int64)),
        "gain": numbers_to_arrow(np.asarray(sel.score, np.float64)),
        "pseudo_label": numbers_to_arrow(np.asarray(emb.pseudo_label)[idx].astype(np.int64)
                                         if emb.pseudo_label is not None else np.full(len(idx), -1, np.int64)),
    }
    for name, values in sel.terms.items():
        if name not in cols:
            cols[name] = numbers_to_arrow(np.asarray(values))
    return pa.table(cols)


def write_subset(out: Path, table: pa.Table, manifest: dict, overwrite: bool) -> None:
    """Replace ``out`` as a whole (or create it): never leaves a half-written folder."""
    del overwrite  # the caller has checked; atomic_dir replaces an existing folder in one rename
    remove_stale_temporaries(out)
    with atomic_dir(out) as tmp:
        pq.write_table(table, tmp / "selection.parquet")
        write_json(tmp / "manifest.json", manifest | {"format_version": FORMAT_VERSION})


def remove_stale_temporaries(out: Path) -> None:
    """The temporary folders a killed run left beside ``out`` (``.NAME.XXXXXXXX.tmp`` and ``.NAME.old``
    of atomic_dir), when they hold only what select writes."""
    pattern = re.compile(rf"\.{re.escape(out.name)}\.([a-z0-9_]{{8}}\.tmp|old)")
    if not out.parent.is_dir():
        return
    for p in out.parent.iterdir():
        if pattern.fullmatch(p.name) and p.is_dir() and not p.is_symlink() and \
                all(q.name in WRITES or is_temporary(q) for q in p.iterdir()):
            shutil.rmtree(p, ignore_errors=True)
