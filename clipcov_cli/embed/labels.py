"""Per-example label formulas of the method (pure functions on arrays, float32).

- pseudo-label ``y_i = argmax_c <v_i, z_c>`` and the image's top class similarity ``<v_i, z_{y_i}>``
- label agreement ``l_i = <t_i, z_{y_i}>`` (does the caption talk about the class the image shows)
- the top-1/top-2 margin ``<v_i, z_{y_i}> - max_{c != y_i} <v_i, z_c>`` (how sure the label is; 0 with one class)

They are computed from the *stored* float16 embeddings cast to float32, so a brute-force check on
the files reproduces them. Ties in the argmax go to the lower class index (numpy's argmax).
"""

from __future__ import annotations

import numpy as np

LABEL_CHUNK = 8192


def pseudo_labels(img: np.ndarray, class_emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(pseudo_label int64, top_sim float32)`` for image rows ``img`` (n, d) and classes (K, d)."""
    labels, top, _ = labels_with_margin(img, class_emb)
    return labels, top


def labels_with_margin(img: np.ndarray, class_emb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(pseudo_label int64, top_sim float32, margin float32)``: the margin is the top similarity
    minus the second highest (0 when there is a single class)."""
    z = np.asarray(class_emb, dtype=np.float32)
    labels = np.empty(len(img), dtype=np.int64)
    top = np.empty(len(img), dtype=np.float32)
    margin = np.zeros(len(img), dtype=np.float32)
    for s in range(0, len(img), LABEL_CHUNK):
        sims = np.asarray(img[s:s + LABEL_CHUNK], dtype=np.float32) @ z.T
        rows = np.arange(len(sims))
        y = np.argmax(sims, axis=1)
        labels[s:s + len(sims)] = y
        top[s:s + len(sims)] = sims[rows, y]
        if z.shape[0] > 1:
            sims[rows, y] = -np.inf
            margin[s:s + len(sims)] = top[s:s + len(sims)] - sims.max(axis=1)
    return labels, top, margin


def label_agreement(txt: np.ndarray, class_emb: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``l_i = <t_i, z_{y_i}>`` float32 for caption rows ``txt`` and pseudo-labels ``labels``."""
    z = np.asarray(class_emb, dtype=np.float32)
    t = np.asarray(txt, dtype=np.float32)
    return np.einsum("ij,ij->i", t, z[np.asarray(labels, dtype=np.int64)]).astype(np.float32)
