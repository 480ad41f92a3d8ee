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


def write_synthetic(root: Path, n: int, d: int = 512, k: int = 1000, part_rows: int = 1_000_000, seed: int = 0,
                    noise: float = 1.0) -> Path:
    """n pairs around k class centres (Zipf class sizes). Rows: image v = unit(z_c + noise), caption
    t = unit(z_c + noise), with noise of norm ~``noise``. Written once; reused if complete."""
    root = Path(root)
    if (root / "clipcov.json").exists() and json.loads((root / "clipcov.json").read_text()).get("rows") == n:
        return root
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(k, d)).astype(np.float32)
    Z /= np.linalg.norm(Z, axis=1, keepdims=True)
    labels = np.repeat(np.arange(k), zipf_sizes(n, k))
    rng.shuffle(labels)
    for sub in ("img_emb", "text_emb", "metadata", "labels"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    parts = []
    for p, s in enumerate(range(0, n, part_rows)):
        y = labels[s: s + part_rows]
        name = f"{p:05d}"
        parts.append(name)
        for sub, prefix in (("img_emb", "img_emb"), ("text_emb", "text_emb")):
            out = np.lib.format.open_memmap(root / sub / f"{prefix}_{name}.npy", mode="w+", dtype=np.float16, shape=(len(y), d))
            for c in range(0, len(y), 100_000):
                yy = y[c: c + 100_000]
                x = Z[yy] + rng.normal(size=(len(yy), d)).astype(np.float32) * (noise / np.sqrt(d))
                out[c: c + len(yy)] = x / np.linalg.norm(x, axis=1, keepdims=True)
            out.flush()
            del out
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
