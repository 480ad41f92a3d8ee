"""Write a selection (contract 3): ``selection.parquet`` and ``manifest.json``, as one atomic folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clipcov_cli.select.base import EmbeddingSet, Selection
from clipcov_cli.select.keys import keys_to_arrow, numbers_to_arrow
from clipcov_cli.utils.atomic import atomic_dir, write_json

FORMAT_VERSION = 1


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
    with atomic_dir(out) as tmp:
        pq.write_table(table, tmp / "selection.parquet")
        write_json(tmp / "manifest.json", manifest | {"format_version": FORMAT_VERSION})
