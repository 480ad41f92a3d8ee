"""Synthetic embeddings for selection tests: clustered unit vectors, float16 like `embed` writes."""

from __future__ import annotations

import numpy as np

from clipcov_cli.select.base import EmbeddingSet


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered(n: int, d: int, k: int, seed: int = 0, spread: float = 0.6, sizes=None):
    """(V, T, labels, Z) float16 unit rows around k class centres; labels are the image argmax."""
    rng = np.random.default_rng(seed)
    Z = unit(rng.normal(size=(k, d)))
    y = rng.integers(0, k, size=n) if sizes is None else np.repeat(np.arange(k), sizes)
    V = unit(Z[y] + spread * rng.normal(size=(n, d)) / np.sqrt(d) * 4).astype(np.float16)
    T = unit(Z[y] + spread * rng.normal(size=(n, d)) / np.sqrt(d) * 4).astype(np.float16)
    labels = np.argmax(V.astype(np.float32) @ Z.T.astype(np.float32), axis=1)
    return V, T, labels, Z.astype(np.float32)


def embedding_set(V, T, labels, Z, keys=None, valid=None) -> EmbeddingSet:
    n = len(V)
    keys = np.array([f"{i:09d}" for i in range(n)]) if keys is None else keys
    label_sim = np.einsum("ij,ij->i", T.astype(np.float32), Z[labels]).astype(np.float32)
    return EmbeddingSet(img=V, txt=T, keys=keys, valid=np.ones(n, bool) if valid is None else valid,
                        pseudo_label=labels.astype(np.int64), label_sim=label_sim, num_classes=len(Z))


def write_embeddings_folder(root, V, T, keys, labels=None, label_sim=None, parts: int = 2, meta: bool = True):
    """Write a contract-2 embeddings folder (what `clipcov embed` writes) split into ``parts``."""
    import json
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(root)
    for sub in ("img_emb", "text_emb", "metadata") + (("labels",) if labels is not None else ()):
        (root / sub).mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, len(V), parts + 1).astype(int)
    names = []
    for p in range(parts):
        s, e = bounds[p], bounds[p + 1]
        name = f"{p:05d}"
        names.append(name)
        np.save(root / "img_emb" / f"img_emb_{name}.npy", V[s:e])
        np.save(root / "text_emb" / f"text_emb_{name}.npy", T[s:e])
        pq.write_table(pa.table({"key": [str(k) for k in keys[s:e]], "caption": ["c"] * (e - s), "shard": [name] * (e - s)}),
                       root / "metadata" / f"metadata_{name}.parquet")
        if labels is not None:
            pq.write_table(pa.table({"key": [str(k) for k in keys[s:e]], "pseudo_label": labels[s:e].astype(np.int64),
                                     "label_sim": label_sim[s:e].astype(np.float32),
                                     "top_sim": label_sim[s:e].astype(np.float32)}),
                           root / "labels" / f"labels_{name}.parquet")
    if meta:
        (root / "clipcov.json").write_text(json.dumps({
            "format_version": 1, "model": "test", "pretrained": "none", "dim": int(V.shape[1]),
            "classes": {"name": "test", "hash": "x", "count": int(labels.max()) + 1 if labels is not None else 0,
                        "names": [f"class{i}" for i in range(int(labels.max()) + 1)] if labels is not None else []},
            "dataset_dir": None, "rows": int(len(V)), "parts": names, "parts_done": names, "complete": True}))
    return root
