"""``clipcov.json``: what made an embeddings folder and which parts are finished.

Written atomically, first when a run starts (no part done) and again after each finished part,
so ``parts_done`` only ever lists parts whose files are all in place. Per-part stats are kept in
``part_stats`` and merged into ``rows`` and ``skipped``.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from clipcov_cli import __version__
from clipcov_cli.errors import ClipcovError
from clipcov_cli.utils.atomic import write_json

FORMAT_VERSION = 1


def read_manifest(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ClipcovError(f"{path} is not readable JSON ({exc}): pass --overwrite to recompute the folder") from None
    if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
        raise ClipcovError(f"{path} has an unknown format_version (this clipcov reads {FORMAT_VERSION})")
    return data


def vocabulary_record(vocab) -> dict[str, Any]:
    """The vocabulary's part of ``clipcov.json``. ``grouping`` says how the classes were made:
    ``{"kind": "vocabulary", "k"}``, or ``{"kind": "kmeans", "k", "seed", ...}`` (K, the inertia and
    the sample are filled in once the clustering has run; until then ``labels_pending`` is true)."""
    if vocab.is_kmeans:
        grouping = {"kind": "kmeans", "k": vocab.kmeans_k or None, "seed": vocab.seed}
    else:
        grouping = {"kind": "vocabulary", "k": len(vocab.names)}
    return {
        "classes": {"name": vocab.name, "hash": vocab.names_hash, "count": len(vocab.names), "names": list(vocab.names)},
        "templates": {"name": vocab.templates_name, "hash": vocab.templates_hash, "count": len(vocab.templates),
                      "templates": list(vocab.templates)},
        "vocabulary_hash": vocab.hash,
        "grouping": grouping,
        "labels_pending": vocab.is_kmeans,
    }


def with_kmeans_labels(manifest: dict[str, Any], grouping: dict[str, Any]) -> dict[str, Any]:
    """The manifest once the k-means labels are written: K cluster names, the grouping's figures."""
    k = int(grouping["k"])
    classes = {**manifest["classes"], "count": k, "names": [f"cluster {c}" for c in range(k)]}
    return _totals({**manifest, "classes": classes, "grouping": grouping, "labels_pending": False})


def model_record(loaded, spec) -> dict[str, Any]:
    return {
        "model": loaded.name,
        "model_config": str(Path(spec.model_config).resolve()) if spec.model_config else None,
        "pretrained": loaded.pretrained,
        "weights_sha256": loaded.weights_fingerprint,
        "precision": loaded.precision,
        "device": loaded.device,
        "dim": loaded.dim,
    }


def new_manifest(loaded, spec, vocab, dataset_dir: Path | None, parts: list[str]) -> dict[str, Any]:
    return manifest_from_record(model_record(loaded, spec), vocab, dataset_dir, parts)


def manifest_from_record(model: dict[str, Any], vocab, dataset_dir: Path | None, parts: list[str]) -> dict[str, Any]:
    """A new manifest from a :func:`model_record` (made where the model was loaded: here or in a worker)."""
    return {
        "format_version": FORMAT_VERSION,
        "tool": f"clipcov {__version__}",
        **model,
        **vocabulary_record(vocab),
        "dataset_dir": str(dataset_dir.resolve()) if dataset_dir else None,
        "parts": sorted(parts),
        "parts_done": [],
        "part_stats": {},
        "rows": 0,
        "skipped": {},
        "complete": not parts and not vocab.is_kmeans,
    }


def mismatches(existing: dict[str, Any], proposed: dict[str, Any]) -> list[str]:
    """What differs between a folder's record and this run, as readable phrases."""
    checks = [
        ("model", "model"), ("weights_sha256", "weights"), ("precision", "precision"),
        ("vocabulary_hash", "class vocabulary"), ("dataset_dir", "dataset folder"),
    ]
    out = []
    for key, what in checks:
        if existing.get(key) != proposed.get(key):
            out.append(f"{what} {existing.get(key)!r} (this run: {proposed.get(key)!r})")
    return out


def with_parts(manifest: dict[str, Any], parts: list[str]) -> dict[str, Any]:
    """The manifest expecting ``parts`` as well (new shards in the dataset folder)."""
    everything = sorted(set(manifest["parts"]) | set(parts))
    return _totals({**manifest, "parts": everything})


def mark_done(manifest: dict[str, Any], part: str, stats: dict[str, Any]) -> dict[str, Any]:
    done = sorted(set(manifest["parts_done"]) | {part})
    return _totals({**manifest, "parts_done": done, "part_stats": {**manifest["part_stats"], part: stats}})


def _totals(manifest: dict[str, Any]) -> dict[str, Any]:
    stats = manifest["part_stats"]
    skipped: Counter = Counter()
    for s in stats.values():
        skipped.update(s.get("skipped", {}))
    return {
        **manifest,
        "rows": sum(int(s.get("rows", 0)) for s in stats.values()),
        "skipped": dict(sorted(skipped.items())),
        "complete": set(manifest["parts"]) <= set(manifest["parts_done"]) and not manifest.get("labels_pending"),
    }


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    write_json(path, manifest)
