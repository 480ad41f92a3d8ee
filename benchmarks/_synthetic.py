"""Synthetic clustered unit vectors in contract 2's layout (float16 parts, labels, clipcov.json)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def zipf_sizes(n: int, k: int, exponent: float = 1.0) -> np.ndarray:
    w = 1.0 / np.arange(1, k + 1) ** exponent
    sizes = np.floor(n * w / w.sum()).astype(np.int64)
    sizes[: n - sizes.sum()] += 1
    return sizes


CLIP_SUBSPACE = 32  # the CLIP-like regime's noise lives in this many directions (wide spread of similarities)


def _pairs_clusters(rng, Z, yy, noise: float):
    """unit(z_c + noise) for image and caption apart, noise of norm ~``noise``."""
    d = Z.shape[1]
    out = []
    for _ in range(2):
        x = Z[yy] + rng.normal(size=(len(yy), d)).astype(np.float32) * (noise / np.sqrt(d))
        out.append(x / np.linalg.norm(x, axis=1, keepdims=True))
    return out


def _pairs_clip(rng, Z, yy, basis):
    """CLIP-like: unit(0.1 m + 0.1 z_c + 0.1 u + 0.7 e) in squared norms, m the shared mean direction
    (``basis[0]``), u a per-pair content direction shared by image and caption, e noise in a
    CLIP_SUBSPACE-dimensional subspace apart per modality. Expected cosines: matched ~0.3, unmatched
    in the class ~0.2, across classes ~0.1; the low-rank noise spreads them (std ~0.1: some negative)."""
    n, d = len(yy), Z.shape[1]
    mean, sub = basis[0], basis[1:]
    u = rng.normal(size=(n, d)).astype(np.float32) / np.sqrt(d)
    base = np.sqrt(0.1) * (mean + Z[yy] + u)
    out = []
    for _ in range(2):
        e = rng.normal(size=(n, sub.shape[0])).astype(np.float32) @ sub / np.sqrt(sub.shape[0])
        x = base + np.sqrt(0.7) * e
        out.append(x / np.linalg.norm(x, axis=1, keepdims=True))
    return out


def write_synthetic(root: Path, n: int, d: int = 512, k: int = 1000, part_rows: int = 1_000_000, seed: int = 0,
                    noise: float = 1.0, zipf: float = 1.0, regime: str = "clusters") -> Path:
    """n pairs around k class centres (Zipf class sizes, exponent ``zipf``). ``regime`` "clusters":
    image v = unit(z_c + noise), caption t = unit(z_c + noise), noise of norm ~``noise``; "clip": see
    ``_pairs_clip``. Written once; reused if complete."""
    root = Path(root)
    if (root / "clipcov.json").exists():
        done = json.loads((root / "clipcov.json").read_text())
        if done.get("rows") == n and len(done.get("parts", ())) == -(-n // part_rows):
            return root
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(k, d)).astype(np.float32)
    Z /= np.linalg.norm(Z, axis=1, keepdims=True)
    basis = np.linalg.qr(rng.normal(size=(d, CLIP_SUBSPACE + 1)))[0].T.astype(np.float32)  # orthonormal rows
    if regime == "clip":  # centres orthogonal to the shared mean direction
        Z -= (Z @ basis[0])[:, None] * basis[0]
        Z /= np.linalg.norm(Z, axis=1, keepdims=True)
    labels = np.repeat(np.arange(k), zipf_sizes(n, k, zipf))
    rng.shuffle(labels)
    for sub in ("img_emb", "text_emb", "metadata", "labels"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    parts = []
    for p, s in enumerate(range(0, n, part_rows)):
        y = labels[s: s + part_rows]
        name = f"{p:05d}"
        parts.append(name)
        outs = [np.lib.format.open_memmap(root / sub / f"{sub}_{name}.npy", mode="w+", dtype=np.float16,
                                          shape=(len(y), d)) for sub in ("img_emb", "text_emb")]
        for c in range(0, len(y), 100_000):
            yy = y[c: c + 100_000]
            pair = _pairs_clip(rng, Z, yy, basis) if regime == "clip" else _pairs_clusters(rng, Z, yy, noise)
            for out, x in zip(outs, pair):
                out[c: c + len(yy)] = x
        for out in outs:
            out.flush()
        del outs
        T = np.load(root / "text_emb" / f"text_emb_{name}.npy", mmap_mode="r")
        label_sim = np.concatenate([np.einsum("ij,ij->i", np.asarray(T[c: c + 100_000], np.float32), Z[y[c: c + 100_000]])
                                    for c in range(0, len(y), 100_000)])
        keys = pa.array([f"{p:05d}{i:07d}" for i in range(len(y))], pa.string())
        pq.write_table(pa.table({"key": keys, "caption": pa.nulls(len(y), pa.string()), "shard": [name] * len(y)}),
                       root / "metadata" / f"metadata_{name}.parquet")
        pq.write_table(pa.table({"key": keys, "pseudo_label": pa.array(y.astype(np.int64)),
                                 "label_sim": pa.array(label_sim.astype(np.float32)),
                                 "top_sim": pa.array(label_sim.astype(np.float32))}),
                       root / "labels" / f"labels_{name}.parquet")
    (root / "clipcov.json").write_text(json.dumps({
        "format_version": 1, "model": "synthetic", "pretrained": "none", "dim": d,
        "classes": {"name": "synthetic", "hash": "-", "count": k, "names": [f"c{i}" for i in range(k)]},
        "dataset_dir": None, "rows": n, "parts": parts, "parts_done": parts, "complete": True}))
    return root
