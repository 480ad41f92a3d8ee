"""``clipcov embed --relabel``: recompute ``labels/`` for a new class vocabulary from the stored
embeddings (no image is read). Works on clipcov's folders and on clip-retrieval's inference output.

The new ``labels/`` folder (with its ``class_emb.npy``) is built aside and swapped in whole, then
``clipcov.json`` records the new vocabulary.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow.parquet as pq

from clipcov_cli.embed import manifest as mf
from clipcov_cli.embed.config import EmbedConfig
from clipcov_cli.embed.model import load_model
from clipcov_cli.embed.parts import EmbedSummary
from clipcov_cli.embed.progress import embed_progress
from clipcov_cli.embed.vocab import label_class_embeddings, load_vocabulary
from clipcov_cli.embed.writer import CLASS_EMB, Layout, labels_table, save_npy, save_parquet
from clipcov_cli.errors import ClipcovError
from clipcov_cli.utils.atomic import atomic_dir


def _foreign_parts(layout: Layout) -> list[str]:
    """Parts of a folder without clipcov.json (clip-retrieval's output), from ``img_emb/`` names."""
    parts = sorted(p.stem[len("img_emb_"):] for p in (layout.root / "img_emb").glob("img_emb_*.npy"))
    if not parts:
        raise ClipcovError(f"{layout.root} is not an embeddings folder (no clipcov.json, no img_emb/*.npy)")
    return parts


def _part_keys(layout: Layout, part: str, rows: int) -> list[str]:
    path = layout.meta(part)
    if path.exists():
        names = pq.read_schema(path).names
        for col in ("key", "image_path"):
            if col in names:
                return [str(k) for k in pq.read_table(path, columns=[col])[col].to_pylist()]
    return [f"{part}_{i}" for i in range(rows)]


def _load_part(layout: Layout, part: str, dim: int) -> tuple[np.ndarray, np.ndarray]:
    img_path, txt_path = layout.img(part), layout.txt(part)
    if not txt_path.exists():
        raise ClipcovError(f"{txt_path} is missing: relabelling needs the caption embeddings (text_emb/)")
    img, txt = np.load(img_path, mmap_mode="r"), np.load(txt_path, mmap_mode="r")
    if img.shape != txt.shape or img.shape[1] != dim:
        raise ClipcovError(f"part {part}: embeddings of shape {img.shape} / {txt.shape} do not fit the "
                           f"model's dimension {dim}: relabel with the model that made them")
    return img, txt


def _record(layout: Layout) -> tuple[dict[str, Any] | None, list[str]]:
    record = mf.read_manifest(layout.manifest)
    if record is None:
        return None, _foreign_parts(layout)
    if not record.get("complete"):
        raise ClipcovError(f"{layout.root} is not complete: finish it first (re-run `clipcov embed`), then --relabel")
    return record, list(record["parts_done"])


def run_relabel(cfg: EmbedConfig, echo: Callable[[str], None]):
    layout = Layout(cfg.out_dir)
    if not layout.root.is_dir():
        raise ClipcovError(f"embeddings folder {layout.root} does not exist")
    record, parts = _record(layout)
    vocab = load_vocabulary(*cfg.vocabulary_args(record if cfg.classes is None else None))
    start = time.perf_counter()
    # k-means on a clipcov folder needs no model: the clusters come from the stored image embeddings
    base = record if vocab.is_kmeans and record is not None else _checked_base(cfg, layout, record, parts, vocab, echo)
    base = {**base, **mf.vocabulary_record(vocab)}
    if vocab.is_kmeans:
        from clipcov_cli.embed.kmeans_labels import kmeans_labels

        grouping = kmeans_labels(layout, parts, vocab.kmeans_k or 0, vocab.seed, echo)
        manifest = mf.with_kmeans_labels(base, grouping)
    else:
        manifest = mf.with_parts(base, parts)
    mf.write_manifest(layout.manifest, manifest)
    return EmbedSummary(layout.root, len(parts), 0, manifest["rows"], (record or {}).get("skipped", {}),
                        seconds=time.perf_counter() - start, relabelled=True)


def _checked_base(cfg: EmbedConfig, layout: Layout, record, parts: list[str], vocab,
                  echo: Callable[[str], None]) -> dict[str, Any]:
    """Load the model (refusing other weights than the folder's), write the vocabulary's labels
    (not for k-means: the caller clusters), return the manifest to build on."""
    spec = cfg.model_spec(record)
    loaded = load_model(spec)
    if record is not None and record.get("weights_sha256") != loaded.weights_fingerprint:
        raise ClipcovError(f"{layout.root} was embedded with weights {record.get('weights_sha256')}, not "
                           f"{loaded.weights_fingerprint}: relabel with the model that made it (--pretrained)")
    if not vocab.is_kmeans:
        echo(f"embedding {len(vocab.names)} class names x {len(vocab.templates)} templates ...")
        with embed_progress(len(vocab.names) * len(vocab.templates), "class text", unit="prompts") as advance:
            class_emb = label_class_embeddings(loaded, vocab, cfg.batch_size, on_progress=advance)
        _write_labels(layout, parts, class_emb, loaded.dim)
    if record is not None:
        return record
    stats = {p: {"rows": int(np.load(layout.img(p), mmap_mode="r").shape[0]), "skipped": {}} for p in parts}
    return {**mf.new_manifest(loaded, spec, vocab, None, parts), "source": "clip-retrieval", "parts_done": parts,
            "part_stats": stats}


def _write_labels(layout: Layout, parts: list[str], class_emb: np.ndarray, dim: int) -> int:
    rows = 0
    with atomic_dir(layout.root / "labels") as tmp, embed_progress(len(parts), "relabel", unit="parts") as advance:
        save_npy(Path(tmp) / CLASS_EMB, class_emb)
        for part in parts:
            img, txt = _load_part(layout, part, dim)
            keys = _part_keys(layout, part, len(img))
            save_parquet(layout.labels(part, Path(tmp)), labels_table(keys, img, txt, class_emb))
            rows += len(keys)
            advance(1)
    return rows
