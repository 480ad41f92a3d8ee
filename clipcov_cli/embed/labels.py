"""Per-example label formulas of the method (pure functions on arrays).

- pseudo-label ``y_i = argmax_c <v_i, z_c>`` and the image's top class similarity ``<v_i, z_{y_i}>``
- label agreement ``l_i = <t_i, z_{y_i}>`` (does the caption talk about the class the image shows)
- the top-1/top-2 margin ``<v_i, z_{y_i}> - max_{c != y_i} <v_i, z_c>`` (how sure the label is; 0 with one class)

They are computed from the *stored* float16 embeddings and class embeddings at float16 precision
(:func:`half_values`: the class embeddings are saved that way), in float64, where every product is a
multiple of 2^-48 and every partial sum is below 32 in magnitude: the dot products are **exact**, so
a row's label and similarities do not depend on where it sits in a BLAS block (the order rows
arrive in), and a brute-force check on the files reproduces them. The similarities are stored as
float32 (rounded once). Ties in the argmax go to the lower class index (numpy's argmax).
"""

from __future__ import annotations

import numpy as np

LABEL_CHUNK = 8192


def pseudo_labels(img: np.ndarray, class_emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(pseudo_label int64, top_sim float32)`` for image rows ``img`` (n, d) and classes (K, d)."""
    labels, top, _ = labels_with_margin(img, class_emb)
    return labels, top


def half_values(x: np.ndarray) -> np.ndarray:
    """A float32 copy of ``x`` rounded to float16 values: the precision of class embeddings and centroids."""
    return np.asarray(x, np.float32).astype(np.float16).astype(np.float32)


def _exact(x: np.ndarray) -> np.ndarray:
    """float16 values (a no-op on stored embeddings) as float64, where their dot products are exact."""
    return np.asarray(x, np.float16).astype(np.float64)


def labels_with_margin(img: np.ndarray, class_emb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(pseudo_label int64, top_sim float32, margin float32)``: the margin is the top similarity
    minus the second highest (0 when there is a single class)."""
    z = _exact(class_emb)
    labels = np.empty(len(img), dtype=np.int64)
    top = np.empty(len(img), dtype=np.float32)
    margin = np.zeros(len(img), dtype=np.float32)
    for s in range(0, len(img), LABEL_CHUNK):
        sims = _exact(img[s:s + LABEL_CHUNK]) @ z.T
        rows = np.arange(len(sims))
        y = np.argmax(sims, axis=1)
        labels[s:s + len(sims)] = y
        best = sims[rows, y]
        top[s:s + len(sims)] = best
        if z.shape[0] > 1:
            sims[rows, y] = -np.inf
            margin[s:s + len(sims)] = best - sims.max(axis=1)
    return labels, top, margin


def label_agreement(txt: np.ndarray, class_emb: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``l_i = <t_i, z_{y_i}>`` float32 for caption rows ``txt`` and pseudo-labels ``labels``."""
    z = _exact(class_emb)
    out = np.empty(len(txt), dtype=np.float32)
    y = np.asarray(labels, dtype=np.int64)
    for s in range(0, len(txt), LABEL_CHUNK):
        out[s:s + LABEL_CHUNK] = np.einsum("ij,ij->i", _exact(txt[s:s + LABEL_CHUNK]), z[y[s:s + LABEL_CHUNK]])
    return out
