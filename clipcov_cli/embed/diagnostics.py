"""Label diagnostics: can the pseudo-labels be trusted as ClipCov's classes?

One pure function, :func:`label_diagnostics`, computes from the labels (and, where stored, each
row's top similarity and top-1/top-2 margin): the classes used of K, the largest class' share
against the fair share 1/K, the normalized entropy of the class histogram (1: every class equally
full, 0: one class holds everything), the mean top similarity and the mean margin. The labels have
*collapsed* when the largest class holds more than 5x its fair share, or fewer than half the classes
are used; then :attr:`LabelDiagnostics.warning` is a one-line warning pointing to ``--classes kmeans``.
``embed``'s summary, ``select --dry-run`` and the subset's ``manifest.json`` show them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

COLLAPSE_SHARE = 5.0  # largest class above 5x 1/K
MIN_USED = 0.5  # fewer than half the classes used


@dataclass(frozen=True)
class LabelDiagnostics:
    rows: int
    k: int
    used: int
    largest_class: int
    largest_share: float
    fair_share: float
    entropy: float  # normalized: H(p) / log K (1.0 when K == 1)
    mean_top_sim: float | None = None
    mean_margin: float | None = None

    @property
    def collapsed(self) -> bool:
        return self.rows > 0 and (self.largest_share > COLLAPSE_SHARE * self.fair_share or self.used < MIN_USED * self.k)

    @property
    def warning(self) -> str | None:
        if not self.collapsed:
            return None
        return (f"warning: the labels look collapsed ({self.used} of {self.k} classes used, the largest holds "
                f"{100 * self.largest_share:.1f}% against a fair {100 * self.fair_share:.1f}%): ClipCov's classes "
                "may be meaningless for this corpus; try `clipcov embed --relabel --classes kmeans EMB_DIR`")

    def as_dict(self) -> dict:
        return {**asdict(self), "collapsed": self.collapsed}

    def rows_for_table(self) -> list[tuple[str, str]]:
        out = [("classes used", f"{self.used:,} of {self.k:,}"),
               ("largest class", f"{self.largest_class} with {100 * self.largest_share:.1f}% of rows "
                                 f"(fair share 1/K = {100 * self.fair_share:.2f}%)"),
               ("label entropy", f"{self.entropy:.3f} (normalized; 1 = balanced)")]
        if self.mean_top_sim is not None:
            out.append(("mean top similarity", f"{self.mean_top_sim:.4f}"))
        if self.mean_margin is not None:
            out.append(("mean top-1/top-2 margin", f"{self.mean_margin:.4f}"))
        return out


def _mean(x: np.ndarray | None) -> float | None:
    if x is None:
        return None
    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x)]
    return float(x.mean()) if len(x) else None


def label_diagnostics(labels: np.ndarray, k: int | None = None, top_sim: np.ndarray | None = None,
                      margin: np.ndarray | None = None) -> LabelDiagnostics:
    """The diagnostics of ``labels`` (class indices) over ``k`` classes (default: max label + 1)."""
    labels = np.asarray(labels, np.int64)
    k = int(k) if k else (int(labels.max()) + 1 if len(labels) else 1)
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    n = int(labels.size)
    p = counts[counts > 0] / max(n, 1)
    entropy = float(-(p * np.log(p)).sum() / math.log(k)) if k > 1 and n else 1.0
    largest = int(np.argmax(counts)) if n else 0
    return LabelDiagnostics(rows=n, k=k, used=int(np.count_nonzero(counts)), largest_class=largest,
                            largest_share=float(counts[largest] / n) if n else 0.0, fair_share=1.0 / k,
                            entropy=entropy, mean_top_sim=_mean(top_sim), mean_margin=_mean(margin))


def read_label_columns(root: Path, parts: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """``(pseudo_label, top_sim or None, margin or None)`` of every part's labels, in part order
    (folders written before the margin column, or by other tools, lack some columns)."""
    import pyarrow.parquet as pq

    from clipcov_cli.layout import Layout
    from clipcov_cli.select.keys import numbers_to_numpy  # read from the Arrow buffers: no pandas import

    cols: dict[str, list[np.ndarray]] = {"pseudo_label": [], "top_sim": [], "margin": []}
    for part in parts:
        with pq.ParquetFile(Layout(root).labels(part)) as lfile:  # not read_table: no pyarrow.dataset (nor pandas) import
            names = set(lfile.schema_arrow.names)
            table = lfile.read(columns=[c for c in cols if c in names])
        for c in cols:
            cols[c].append(numbers_to_numpy(table[c], table[c].type.to_pandas_dtype()) if c in names else None)
    labels = np.concatenate(cols["pseudo_label"]) if parts else np.zeros(0, np.int64)
    optional = [np.concatenate(v) if v and all(x is not None for x in v) else None for v in (cols["top_sim"], cols["margin"])]
    return labels, optional[0], optional[1]


def folder_diagnostics(root: Path, parts: Sequence[str], k: int | None) -> LabelDiagnostics | None:
    """The diagnostics of an embeddings folder's ``labels/`` (None without labels)."""
    if not parts or not all((root / "labels" / f"labels_{p}.parquet").exists() for p in parts):
        return None
    labels, top, margin = read_label_columns(root, parts)
    return label_diagnostics(labels, k, top, margin)
