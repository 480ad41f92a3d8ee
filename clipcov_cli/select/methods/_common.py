"""Helpers shared by the selection methods: chunked passes over (memory-mapped) embeddings, and
top-B with a deterministic tie rule."""

from __future__ import annotations

from typing import Iterator

import numpy as np

CHUNK = 1 << 16


def chunks(n: int, size: int = CHUNK) -> Iterator[slice]:
    for s in range(0, n, size):
        yield slice(s, min(n, s + size))


def rowwise_dot(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """<a_i, b_i> for every row, returned in float32, one chunk at a time (memory-mapped inputs welcome).

    Computed in float64: for float16 unit rows every product is a multiple of 2**-48 and every partial
    sum is below 2, so the sum is exact whatever the order or vectorization, and a row's score cannot
    depend on where the row sits (then it is rounded once to float32)."""
    out = np.empty(A.shape[0], np.float32)
    for sl in chunks(A.shape[0]):
        out[sl] = np.einsum("ij,ij->i", np.asarray(A[sl], np.float64), np.asarray(B[sl], np.float64))
    return out


def top_b(score: np.ndarray, keys: np.ndarray, valid: np.ndarray, budget: int) -> np.ndarray:
    """Indices of the ``budget`` valid rows with the highest score, best first; ties by key (ascending).

    Only rows tied at the cut-off score are sorted by key, so this stays O(n) + O(B log B).
    """
    idx = np.flatnonzero(valid)
    s = score[idx]
    if budget < len(idx):
        cut = np.partition(s, len(s) - budget)[len(s) - budget]
        above = idx[s > cut]
        tied = idx[s == cut]
        tied = tied[np.argsort(keys[tied].astype(str), kind="stable")][: budget - len(above)]
        idx = np.concatenate([above, tied])
    order = np.lexsort((keys[idx].astype(str), -score[idx].astype(np.float64)))
    return idx[order]


def order_by_draw(rows: np.ndarray, draws: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """``rows`` sorted by their draw, ties (equal draws) by key."""
    return rows[np.lexsort((np.asarray(keys)[rows].astype(str), draws[rows]))]
