"""``--classes kmeans[:K]``: pseudo-classes from spherical k-means over the stored image embeddings.

No vocabulary, no text model: the classes are K clusters of the proxy's image embeddings, made
with faiss through :mod:`clipcov_cli.utils.kmeans` (the module semdedup uses too). It runs on the
finished parts (after the embedding pass of either engine, on the driver; or with ``--relabel``),
streaming one part at a time, so memory holds the sample, the K x d sums and one part:

1. **sample**: the ``min(n, 256 K)`` rows with the smallest seeded key hashes (the same rows
   whatever the order or the number of parts);
2. **centroids**: faiss' spherical k-means on the sample in (hash, key) order, ``seed`` for its
   initialisation: the same keys give the same centroids;
3. **assignment**: each row's nearest centroid (``pseudo_label``, ``top_sim``, ``margin``: the
   label formulas of a vocabulary with the centroids, at float16 precision, as class embeddings:
   exact dot products, see :mod:`clipcov_cli.embed.labels`), and per cluster the sum
   of the caption embeddings in exact fixed point (float16 values are multiples of 2^-24: int64
   sums do not depend on the order rows come in);
4. **label agreement**: ``label_sim`` is the caption's cosine to its cluster's *mean caption
   embedding* (normalized), the k-means counterpart of a class name's text embedding.

``labels/`` is built aside and swapped in whole, with ``centroids.npy`` (the image centroids) and
``class_emb.npy`` (the clusters' mean caption embeddings, so ``label_sim = <t_i, class_emb[y_i]>``
as for a vocabulary). An interrupted run starts this stage again from its first pass (it reads only
the stored embeddings); the embedded parts are kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow.parquet as pq

from clipcov_cli.embed.labels import half_values, label_agreement, labels_with_margin
from clipcov_cli.embed.progress import embed_progress
from clipcov_cli.embed.writer import CLASS_EMB, Layout, make_labels_table, save_npy, save_parquet
from clipcov_cli.errors import ClipcovError
from clipcov_cli.utils.atomic import atomic_dir
from clipcov_cli.utils.kmeans import DEFAULT_ITERATIONS, HashSample, sample_size, train_spherical

CENTROIDS = "centroids.npy"
FIXED = float(2 ** 24)  # float16 values of magnitude <= 1 are exact multiples of 2^-24
INERTIA_FIXED = float(2 ** 32)
MIN_K, MAX_K = 10, 1000


def default_k(n: int) -> int:
    """The default number of clusters: n / 1000 rounded, clamped to [10, 1000], at most n."""
    return max(1, min(n, max(MIN_K, min(MAX_K, round(n / 1000)))))


def _read(layout: Layout, part: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    from clipcov_cli.embed.relabel import _load_part, _part_keys

    img = np.load(layout.img(part), mmap_mode="r")
    img, txt = _load_part(layout, part, img.shape[1])
    return _part_keys(layout, part, len(img)), img, txt


def _sample(layout: Layout, parts: list[str], m: int, d: int, seed: int, advance) -> np.ndarray:
    sample = HashSample(m, d, seed)
    for part in parts:
        keys, img, _ = _read(layout, part)
        sample.add(keys, img)
        advance(1)
    return sample.training_rows()


def _caption_sums(txt: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """Per cluster, the exact int64 fixed-point sum of the float16 caption rows (chunked)."""
    sums = np.zeros((k, txt.shape[1]), np.int64)
    for s in range(0, len(y), 8192):
        t = (np.asarray(txt[s:s + 8192], np.float64) * FIXED).astype(np.int64)
        yy = y[s:s + 8192]
        order = np.argsort(yy, kind="stable")
        present, starts = np.unique(yy[order], return_index=True)
        if len(present):
            sums[present] += np.add.reduceat(t[order], starts, axis=0)
    return sums


def _assign(layout: Layout, parts: list[str], centroids: np.ndarray, tmp: Path, advance) -> tuple[np.ndarray, float]:
    """Labels without ``label_sim`` into ``tmp`` part by part; the caption sums and the inertia."""
    sums = np.zeros((len(centroids), centroids.shape[1]), np.int64)
    inertia = 0
    for part in parts:
        keys, img, txt = _read(layout, part)
        y, top, margin = labels_with_margin(img, centroids)
        sums += _caption_sums(txt, y, len(centroids))
        inertia += int(np.rint((1.0 - top.astype(np.float64)) * INERTIA_FIXED).astype(np.int64).sum())
        save_parquet(layout.labels(part, tmp), make_labels_table(keys, y, np.full(len(y), np.nan), top, margin))
        advance(1)
    return sums, inertia / INERTIA_FIXED


def mean_caption_embeddings(sums: np.ndarray) -> np.ndarray:
    """(K, d) float32 unit rows at float16 precision from the fixed-point sums (a cluster without rows: zeros)."""
    m = sums.astype(np.float64) / FIXED
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    return half_values(m / np.maximum(norms, 1e-300))


def _agreement(layout: Layout, parts: list[str], means: np.ndarray, tmp: Path, advance) -> None:
    for part in parts:
        path = layout.labels(part, tmp)
        t = pq.read_table(path)
        y = t["pseudo_label"].to_numpy()
        _, _, txt = _read(layout, part)
        table = make_labels_table(t["key"].to_pylist(), y, label_agreement(txt, means, y),
                                  t["top_sim"].to_numpy(), t["margin"].to_numpy())
        save_parquet(path, table)
        advance(1)


def kmeans_labels(layout: Layout, parts: list[str], k_asked: int, seed: int, echo: Callable[[str], None],
                  iterations: int = DEFAULT_ITERATIONS) -> dict:
    """Write ``labels/`` for K = ``k_asked`` (0: :func:`default_k`) clusters; return the grouping record."""
    import faiss

    shapes = [np.load(layout.img(p), mmap_mode="r").shape for p in parts]
    n, d = sum(s[0] for s in shapes), (shapes[0][1] if shapes else 0)
    k = k_asked or default_k(n)
    if n == 0 or k > n:
        raise ClipcovError(f"--classes kmeans:{k} needs at least {k} rows; {layout.root} has {n}")
    m = sample_size(n, k)
    echo(f"k-means: {k} clusters from a sample of {m:,} of {n:,} rows (seed {seed}) ...")
    with atomic_dir(layout.root / "labels") as tmp, embed_progress(3 * len(parts), "k-means", unit="passes") as adv:
        centroids, objective = train_spherical(_sample(layout, parts, m, d, seed, adv), k, iterations, seed)
        centroids = half_values(centroids)  # as used by the (exact) assignment
        sums, inertia = _assign(layout, parts, centroids, tmp, adv)
        means = mean_caption_embeddings(sums)
        save_npy(tmp / CENTROIDS, centroids)
        save_npy(tmp / CLASS_EMB, means)
        _agreement(layout, parts, means, tmp, adv)
    return {"kind": "kmeans", "k": k, "k_asked": k_asked or "auto", "seed": seed, "iterations": iterations,
            "sample": m, "inertia": inertia, "sample_objective": objective, "library": f"faiss {faiss.__version__}"}
