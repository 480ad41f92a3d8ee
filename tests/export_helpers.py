"""Source datasets and subsets for the export tests: img2dataset-style shards made with
webdataset's TarWriter (plus the per-shard parquet), and a subset folder as `select` writes it."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import webdataset as wds


def jpeg(value: int, size: int = 24) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), value % 256, np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def make_source(root: Path, shards: int = 4, per: int = 50, real_jpeg: bool = False, seed: int = 0) -> dict[str, dict[str, bytes]]:
    """Shards ``{s:05d}.tar`` + ``{s:05d}.parquet``; every 7th sample also has a ``cls`` member,
    every 11th has no ``json``. Returns key -> {ext: bytes} (the ground truth)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    samples: dict[str, dict[str, bytes]] = {}
    for s in range(shards):
        keys = []
        with open(root / f"{s:05d}.tar", "wb") as f:
            w = wds.TarWriter(f)  # defaults, as img2dataset uses it (pax headers, real mtimes)
            for i in range(per):
                key = f"{s:05d}{i:04d}"
                n = s * per + i
                sample = {"jpg": jpeg(n) if real_jpeg else rng.bytes(int(rng.integers(100, 1500))),
                          "txt": f"a photo number {n}".encode()}
                if n % 11:
                    sample["json"] = json.dumps({"key": key, "caption": f"a photo number {n}"}).encode()
                if n % 7 == 0:
                    sample["cls"] = str(n % 5).encode()
                w.write({"__key__": key, **sample})
                samples[key] = sample
                keys.append(key)
            w.close()
        pq.write_table(pa.table({"key": keys, "status": ["success"] * per, "caption": [""] * per}),
                       root / f"{s:05d}.parquet")
    return samples


def make_subset(root: Path, keys: list[str], dataset: Path | None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"key": keys, "rank": list(range(len(keys))), "gain": [1.0] * len(keys)}),
                   root / "selection.parquet")
    (root / "manifest.json").write_text(json.dumps(
        {"format_version": 1, "source": {"dataset_dir": str(dataset) if dataset else None}}))
    return root


def read_back(shards: Path) -> list[dict]:
    return list(wds.WebDataset(sorted(map(str, shards.glob("*.tar"))), shardshuffle=False))


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` (relative path -> sha256): what "intact" means in the --overwrite tests."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def pipeline_dataset(tmp_path: Path) -> Path:
    """A dataset folder as the pipeline leaves it: source shards plus embeddings/ with labels, in
    ``tmp_path/parent/ds`` beside a user's own file ``tmp_path/parent/notes.txt``."""
    from tests.select_helpers import clustered, write_embeddings_folder

    ds = tmp_path / "parent" / "ds"
    make_source(ds, shards=2, per=20)
    V, T, labels, Z = clustered(40, 8, 3, seed=1)
    keys = np.array([f"{s:05d}{i:04d}" for s in range(2) for i in range(20)])
    sim = np.einsum("ij,ij->i", T.astype(np.float32), Z[labels])
    emb = write_embeddings_folder(ds / "embeddings", V, T, keys, labels, sim, parts=2)
    meta = json.loads((emb / "clipcov.json").read_text())
    (emb / "clipcov.json").write_text(json.dumps(meta | {"dataset_dir": str(ds.resolve())}))
    (tmp_path / "parent" / "notes.txt").write_text("the user's own file\n")
    return ds
