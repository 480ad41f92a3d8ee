"""Seeded, order-independent spherical k-means (faiss), shared by ``embed --classes kmeans`` and semdedup.

faiss' k-means draws its initial centroids (and the points it re-seeds empty clusters from) from the
*positions* of the training rows, so the same rows in another order would give other centroids. Here
the training rows are always put in a canonical order first: by a seeded 64-bit hash of the row's
key, ties by the key. The same keys give the same training array, hence the same centroids; the
assignment that follows is per row (nearest centroid, ties to the lower index). For corpora larger
than memory, :class:`HashSample` keeps the ``m`` rows with the smallest key hashes while the parts
stream by: the same set whatever the parts' order or size.
"""

from __future__ import annotations

import numpy as np

from clipcov_cli.utils.keyed import FNV_OFFSET, fnv1a, mix64

SAMPLE_PER_CENTROID = 256  # faiss' own default cap of training points per centroid
DEFAULT_ITERATIONS = 20


def key_hashes(keys, seed: int) -> np.ndarray:
    """A seeded 64-bit hash of each key: uint64 (n,). ``utils/keyed.py``'s FNV-1a and SplitMix64, here
    over the key's UTF-8 bytes from a seeded state (FNV's offset basis xor the mixed seed), then mixed.
    Not ``keyed.key_hashes`` + ``keyed_draws`` (code points, the seed mixed in after): that would move
    every k-means sample, hence the centroids, the labels and semdedup's selections."""
    keys = np.asarray(keys, dtype=str)
    n, width = len(keys), keys.dtype.itemsize // 4
    codes = np.ascontiguousarray(keys).view(np.uint32).reshape(n, width) if n and width else None
    if codes is not None and codes.max() < 128:  # ASCII: the code points are the UTF-8 bytes (no encoding)
        lengths = np.char.str_len(keys)
    else:
        raw = np.char.encode(keys, "utf-8")
        width = max(raw.dtype.itemsize, 1)
        codes = np.frombuffer(raw.tobytes(), np.uint8).reshape(n, width) if n else np.zeros((0, 1), np.uint8)
        lengths = np.char.str_len(raw) if n else np.zeros(0, np.int64)
    start = FNV_OFFSET ^ mix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], np.uint64))[0]
    return mix64(fnv1a(codes, lengths, start))


def canonical_order(keys, seed: int) -> np.ndarray:
    """Row indices sorted by (seeded key hash, key): the same rows' order whatever order they came in."""
    keys = np.asarray(keys, dtype=str)
    return np.lexsort((keys, key_hashes(keys, seed)))


class HashSample:
    """The ``m`` rows with the smallest (key hash, key), kept while parts stream by (float16 rows)."""

    def __init__(self, m: int, d: int, seed: int) -> None:
        self.m, self.seed = m, seed
        self.hashes = np.zeros(0, np.uint64)
        self.keys = np.zeros(0, dtype=str)
        self.rows = np.zeros((0, d), np.float16)

    def add(self, keys, rows) -> None:
        """Offer one part's ``keys`` and ``rows`` (array-like, e.g. a memory map: only candidates are read)."""
        keys = np.asarray(keys, dtype=str)
        h = key_hashes(keys, self.seed)
        cand = np.arange(len(keys))
        if len(self.hashes) >= self.m and len(self.hashes):
            cand = np.flatnonzero(h <= self.hashes[-1])
        if len(cand) == 0:
            return
        hashes = np.concatenate([self.hashes, h[cand]])
        all_keys = np.concatenate([self.keys, keys[cand]])
        all_rows = np.concatenate([self.rows, np.asarray(rows[cand] if len(cand) < len(keys) else rows[:], np.float16)])
        keep = np.lexsort((all_keys, hashes))[: self.m]
        self.hashes, self.keys, self.rows = hashes[keep], all_keys[keep], all_rows[keep]

    def training_rows(self) -> np.ndarray:
        """The sample as float32 rows, in canonical (hash, key) order."""
        return np.asarray(self.rows, np.float32)


def sample_size(n: int, k: int) -> int:
    return min(n, SAMPLE_PER_CENTROID * k)


def normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def train_spherical(X: np.ndarray, k: int, iterations: int, seed: int) -> tuple[np.ndarray, float]:
    """faiss' spherical k-means on the rows of ``X`` *as given* (put them in canonical order first):
    ``(centroids (k, d) float32 unit rows, faiss' final objective: the sum of the rows' cosine to
    their centroid)``. Every row is used for training (no subsampling by faiss)."""
    import faiss

    X = np.ascontiguousarray(normalize(X), np.float32)
    n, d = X.shape
    cp = faiss.ClusteringParameters()
    cp.niter, cp.seed, cp.spherical, cp.verbose = iterations, seed, True, False
    cp.min_points_per_centroid = 1  # small corpora are fine: no warning on stderr
    cp.max_points_per_centroid = max(1, -(-n // k))  # n <= k * max: faiss trains on every row
    clus = faiss.Clustering(d, k, cp)
    clus.train(X, faiss.IndexFlatIP(d))
    centroids = faiss.vector_to_array(clus.centroids).reshape(k, d)
    stats = clus.iteration_stats
    objective = float(stats.at(stats.size() - 1).obj) if stats.size() else float("nan")
    return normalize(centroids), objective


def spherical_kmeans(X: np.ndarray, keys, k: int, iterations: int = DEFAULT_ITERATIONS,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """In-memory, order-independent: ``(centroids (k, d), assignment (n,) int64)``. Training on every
    row in canonical key order; the assignment is each row's nearest centroid (ties: lower index)."""
    from clipcov_cli.embed.labels import pseudo_labels

    X = normalize(X)
    centroids, _ = train_spherical(X[canonical_order(keys, seed)], k, iterations, seed)
    assign, _ = pseudo_labels(X, centroids)
    return centroids, assign
