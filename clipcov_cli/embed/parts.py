"""Resume bookkeeping shared by the embed engines (local and Ray) and ``--relabel``: the summary,
clearing or resuming a folder, the existing record's check, the pending parts' run and the k-means
labels at the end. Its own module so that ``ray_engine`` and ``relabel`` import it, not the runner
(which imports them): no import cycle.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from clipcov_cli.embed import manifest as mf
from clipcov_cli.embed.config import EmbedConfig
from clipcov_cli.embed.vocab import Vocabulary
from clipcov_cli.embed.writer import OUTPUT_DIRS, Layout, merge_skipped
from clipcov_cli.errors import ClipcovError, JobFailed

Echo = Callable[[str], None]


@dataclass(frozen=True)
class EmbedSummary:
    out_dir: Path
    parts: int
    parts_done_now: int
    rows: int
    skipped: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    samples_read: int = 0
    already_complete: bool = False
    relabelled: bool = False
    diagnostics: Any = None  # LabelDiagnostics of labels/ (None without labels)

    @property
    def samples_per_s(self) -> float:
        return self.samples_read / self.seconds if self.seconds > 0 else 0.0


def _clear(layout: Layout) -> None:
    for name in OUTPUT_DIRS:
        shutil.rmtree(layout.root / name, ignore_errors=True)
    for path in (layout.manifest, layout.report):
        path.unlink(missing_ok=True)


def _remove_stale_temps(layout: Layout) -> None:
    """Temporary files left by a killed run (``.{name}.*.tmp``) are never parts: remove them."""
    for folder in [layout.root] + [layout.root / name for name in OUTPUT_DIRS]:
        for tmp in folder.glob(".*.tmp") if folder.is_dir() else ():
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)


def reusable_class_emb(layout: Layout, vocab: Vocabulary, dim: int | None) -> np.ndarray | None:
    """``labels/class_emb.npy`` when it fits the vocabulary (and ``dim`` when known), else None."""
    if not layout.class_emb.exists():
        return None
    emb = np.load(layout.class_emb)
    if emb.dtype == np.float32 and emb.ndim == 2 and emb.shape[0] == len(vocab.names) and dim in (None, emb.shape[1]):
        return emb
    return None


def check_record(layout: Layout, record: dict[str, Any] | None, proposed: dict[str, Any], cfg: EmbedConfig) -> None:
    """An existing folder made with other settings is an error (unless ``--overwrite``)."""
    if record is not None and not cfg.overwrite:
        diff = mf.mismatches(record, proposed)
        if diff:
            raise ClipcovError(f"{layout.root} was made with a different " + "; ".join(diff)
                               + ": pass --overwrite to recompute it, or choose another --out")


def embed_parts(cfg: EmbedConfig, layout: Layout, shards: list[Path], record: dict[str, Any] | None,
                proposed: dict[str, Any], class_emb_fn: Callable[[bool], np.ndarray],
                stream_fn: Callable[[list[Path], np.ndarray, dict[str, Any]], tuple[dict[str, Any], int]],
                echo: Echo) -> EmbedSummary:
    """Resume bookkeeping shared by the engines: clear or resume the folder, get the class embeddings
    (``class_emb_fn(resume)``), let the engine embed the pending shards (``stream_fn``, which marks
    each finished part in ``clipcov.json``), then check completeness and merge the skip reports."""
    resume = record is not None and not cfg.overwrite
    if cfg.overwrite:
        _clear(layout)
    _remove_stale_temps(layout)
    manifest = mf.with_parts(record, proposed["parts"]) if resume else proposed
    done = set(manifest["parts_done"])
    if (manifest.get("grouping") or {}).get("kind") == "kmeans" and set(manifest["parts"]) - done:
        manifest = {**manifest, "labels_pending": True}  # new parts: the clusters are made again
    missing = [p for p in manifest["parts"] if p not in done and p not in {s.stem for s in shards}]
    if missing:
        raise ClipcovError(f"shards {', '.join(missing[:5])} of the unfinished parts are gone from {cfg.dataset_dir}")
    pending = [s for s in shards if s.stem not in done]
    if resume and done:
        echo(f"resuming: {len(done)} of {len(manifest['parts'])} parts done, "
             + (f"next {pending[0].stem}" if pending else "the k-means labels left"))
    start = time.perf_counter()
    class_emb = class_emb_fn(resume)
    mf.write_manifest(layout.manifest, manifest)
    manifest, read = stream_fn(pending, class_emb, manifest)
    _remove_stale_temps(layout)  # a worker killed mid-part (then retried) may have left temporary files
    left = [p for p in manifest["parts"] if p not in manifest["parts_done"]]
    if left:
        raise JobFailed(f"{len(left)} parts were not finished ({', '.join(left[:5])}): re-run to resume")
    merge_skipped(layout, manifest["parts"])
    if manifest.get("labels_pending"):
        manifest = finish_kmeans(layout, manifest, echo)
    return EmbedSummary(layout.root, len(manifest["parts"]), len(pending), manifest["rows"], manifest["skipped"],
                        seconds=time.perf_counter() - start, samples_read=read)


def finish_kmeans(layout: Layout, manifest: dict[str, Any], echo: Echo) -> dict[str, Any]:
    """``--classes kmeans``: cluster the finished parts, write ``labels/``, record the grouping."""
    from clipcov_cli.embed.kmeans_labels import kmeans_labels

    record = manifest.get("grouping") or {}
    asked = record.get("k_asked", record.get("k"))  # K asked (an int), or "auto" / None: the default rule
    k = asked if isinstance(asked, int) else 0
    grouping = kmeans_labels(layout, list(manifest["parts"]), k, int(record.get("seed") or 0), echo)
    manifest = mf.with_kmeans_labels(manifest, grouping)
    mf.write_manifest(layout.manifest, manifest)
    return manifest
