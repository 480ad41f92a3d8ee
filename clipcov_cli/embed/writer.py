"""Writing the embeddings folder (contract 2, clip-retrieval's layout) one part at a time.

A part is one input shard. Its files are each written under a temporary name and renamed:
``img_emb/img_emb_{part}.npy``, ``text_emb/text_emb_{part}.npy`` (float16 unit rows),
``metadata/metadata_{part}.parquet`` (``key``, ``caption``, ``shard``, ``url`` and the other scalar
fields of the sample's .json), ``labels/labels_{part}.parquet`` (``key``, ``pseudo_label``,
``label_sim``, ``top_sim``, ``margin``; not with ``--classes kmeans``, whose labels are written once
every part is embedded) and ``skipped/skipped_{part}.jsonl``. The runner lists the part in
``clipcov.json`` only after all of them are in place.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clipcov_cli.embed.labels import label_agreement, labels_with_margin
from clipcov_cli.embed.mapper import EmbeddedBatch
from clipcov_cli.layout import CLASS_EMB, MANIFEST, OUTPUT_DIRS, SKIPPED_REPORT, Layout  # noqa: F401 - re-exported
from clipcov_cli.utils.atomic import atomic_path, write_text
from clipcov_cli.utils.overwrite import Owned, is_temporary

FIRST_COLUMNS = ("key", "caption", "shard", "url")
EMBED_OWNED = Owned("embed", MANIFEST, lambda root: (root / MANIFEST).is_file(),
                    lambda entry: entry.name in OUTPUT_DIRS + (MANIFEST, SKIPPED_REPORT) or is_temporary(entry))


@dataclass
class PartBuffer:
    """The embedded batches of one part, gathered until its last batch arrives."""

    part: str
    batches: list[EmbeddedBatch] = field(default_factory=list)

    def add(self, batch: EmbeddedBatch) -> None:
        self.batches.append(batch)

    @property
    def skipped(self) -> list[dict[str, Any]]:
        return [s for b in self.batches for s in b.skipped]

    def arrays(self, dim: int) -> tuple[np.ndarray, np.ndarray]:
        imgs = [b.img for b in self.batches] or [np.zeros((0, dim), np.float16)]
        txts = [b.txt for b in self.batches] or [np.zeros((0, dim), np.float16)]
        return np.concatenate(imgs).astype(np.float16), np.concatenate(txts).astype(np.float16)

    @property
    def keys(self) -> list[str]:
        return [k for b in self.batches for k in b.keys]


def save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)
        f.flush()
        os.fsync(f.fileno())


def save_parquet(path: Path, table: pa.Table) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        pq.write_table(table, f)
        f.flush()
        os.fsync(f.fileno())


def _column(values: list[Any]) -> pa.Array:
    try:
        arr = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        arr = pa.array([None if v is None else str(v) for v in values], pa.string())
    return arr.cast(pa.string()) if pa.types.is_null(arr.type) else arr


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def metadata_table(keys: list[str], captions: list[str], part: str, metas: list[dict[str, Any]]) -> pa.Table:
    """``key, caption, shard, url`` then the other scalar .json fields, in first-seen order."""
    extra: dict[str, None] = {}
    for m in metas:
        for k, v in m.items():
            if k not in FIRST_COLUMNS and _scalar(v):
                extra.setdefault(k, None)
    cols = {
        "key": pa.array(keys, pa.string()),
        "caption": pa.array(captions, pa.string()),
        "shard": pa.array([part] * len(keys), pa.string()),
        "url": pa.array([m.get("url") if isinstance(m.get("url"), str) else None for m in metas], pa.string()),
    }
    for name in extra:
        cols[name] = _column([m.get(name) if _scalar(m.get(name)) else None for m in metas])
    return pa.table(cols)


def labels_table(keys: list[str], img: np.ndarray, txt: np.ndarray, class_emb: np.ndarray) -> pa.Table:
    """``key, pseudo_label, label_sim, top_sim, margin`` in float32 from the stored (float16) embeddings."""
    y, top, margin = labels_with_margin(img, class_emb)
    return make_labels_table(keys, y, label_agreement(txt, class_emb, y), top, margin)


def make_labels_table(keys, y: np.ndarray, label_sim: np.ndarray, top: np.ndarray, margin: np.ndarray) -> pa.Table:
    return pa.table({
        "key": pa.array(list(keys), pa.string()),
        "pseudo_label": pa.array(y, pa.int64()),
        "label_sim": pa.array(label_sim, pa.float32()),
        "top_sim": pa.array(top, pa.float32()),
        "margin": pa.array(margin, pa.float32()),
    })


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


def write_part(layout: Layout, buffer: PartBuffer, class_emb: np.ndarray | None, dim: int) -> dict[str, Any]:
    """Write every file of a finished part (each atomically); return its stats ``{rows, skipped}``.
    Without ``class_emb`` (``--classes kmeans``: the labels need every part) no labels file is written."""
    img, txt = buffer.arrays(dim)
    keys = buffer.keys
    captions = [c for b in buffer.batches for c in b.captions]
    metas = [m for b in buffer.batches for m in b.meta]
    save_npy(layout.img(buffer.part), img)
    save_npy(layout.txt(buffer.part), txt)
    save_parquet(layout.meta(buffer.part), metadata_table(keys, captions, buffer.part, metas))
    if class_emb is not None:
        save_parquet(layout.labels(buffer.part), labels_table(keys, img, txt, class_emb))
    write_jsonl(layout.skipped(buffer.part), buffer.skipped)
    return {"rows": len(keys), "skipped": dict(sorted(Counter(s["reason"] for s in buffer.skipped).items()))}


def merge_skipped(layout: Layout, parts: list[str]) -> int:
    """Concatenate the parts' skip records into ``skipped.jsonl``; return how many there are."""
    lines = []
    for part in parts:
        path = layout.skipped(part)
        if path.exists():
            lines.extend(ln for ln in path.read_text().splitlines() if ln.strip())
    write_text(layout.report, "".join(ln + "\n" for ln in lines))
    return len(lines)
