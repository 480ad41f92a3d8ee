"""What ClipCov's per-class units are built from: each class' valid rows, in key order.

A unit sees its class' rows in ascending *key* order (read in example order, then permuted by
``ClassBlock.perm`` unless they already are in key order), so every per-class number is computed
from the same arrays whatever order the corpus' rows come in; ``Plan.rank`` breaks the merge's ties
across classes by key."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clipcov_cli.errors import ClipcovError
from clipcov_cli.select.base import EmbeddingSet
from clipcov_cli.select.clipcov.sources import GroupedRows
from clipcov_cli.select.keys import key_order


@dataclass(frozen=True)
class ClassBlock:
    k: int
    rows: np.ndarray  # example indices of the class' valid rows, ascending
    keep: np.ndarray  # the valid mask over the class' grouped rows
    perm: np.ndarray | None  # the rows as read, permuted into key order (None: already in key order)


@dataclass(frozen=True)
class Plan:
    """What the units are built from: the grouped rows, the valid rows, the key order."""

    grouped: GroupedRows
    labels: np.ndarray  # (n,) int64
    label_sim: np.ndarray
    n_valid: int
    forced: np.ndarray | None  # (n,) bool: rows the greedy starts with (select --keep)
    by_key: np.ndarray  # example indices in key order: ties break by key
    rank: np.ndarray  # each example's key rank
    blocks: tuple[ClassBlock, ...]
    index_of: dict  # class -> its valid rows' example indices in key order


def plan_classes(embeddings: EmbeddingSet, grouped: GroupedRows, kept: np.ndarray | None) -> Plan:
    """Each class' valid rows (rows valid for the caller and for the scan) and their key order;
    ``kept``: rows the greedy must start with (``select --keep``)."""
    valid = np.asarray(embeddings.valid) & grouped.valid
    forced = None
    if kept is not None:
        if not valid[kept].all():
            raise ClipcovError(f"{int((~valid[kept]).sum())} kept row(s) have no valid embedding (NaN or zero)")
        forced = np.zeros(embeddings.n, bool)
        forced[kept] = True
    by_key = key_order(embeddings.keys)
    rank = np.empty(embeddings.n, np.int64)
    rank[by_key] = np.arange(embeddings.n, dtype=np.int64)
    blocks = []
    for k in range(len(grouped.starts) - 1):
        s, e = int(grouped.starts[k]), int(grouped.starts[k + 1])
        if e > s:
            rows = grouped.order[s:e]
            keep = valid[rows]
            if keep.any():
                blocks.append(ClassBlock(k, rows[keep], keep, key_permutation(rank[rows[keep]])))
    index_of = {b.k: b.rows if b.perm is None else b.rows[b.perm] for b in blocks}
    return Plan(grouped, np.asarray(embeddings.pseudo_label).astype(np.int64), np.asarray(embeddings.label_sim),
                 int(valid.sum()), forced, by_key, rank, tuple(blocks), index_of)


def key_permutation(ranks: np.ndarray) -> np.ndarray | None:
    """The permutation putting rows of these key ranks in ascending key order; None when they already are."""
    if len(ranks) < 2 or bool(np.all(ranks[1:] > ranks[:-1])):
        return None
    return np.argsort(ranks, kind="stable")
