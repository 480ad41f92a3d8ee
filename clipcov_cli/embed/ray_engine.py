"""``clipcov embed --engine ray``: one Ray task per input shard, running the local run's core.

The unit of work is a whole shard, which is also the unit of output (one part) and of resume (one
entry in ``parts_done``). A Ray worker builds the model itself from a picklable :class:`WorkerSpec`
(the frozen :class:`ModelSpec` plus its thread count) and keeps it for the next shards it gets (one
model per worker process), streams the shard with the same reader (:func:`iter_shard_batches`: the
same batches as the local run), embeds it with the same core (:func:`embed_batches`) and writes the
part with the same writer (:func:`write_part`, every file atomic) into the output folder, which is
on storage the workers share. The driver only does the bookkeeping of the local run (resume,
``clipcov.json`` after each finished part, the skip report) through :func:`embed_parts`.

Why not Ray Data ``map_batches``: a part must hold exactly one shard's rows in tar order, in the
batches the local run makes (a model batch's rows are computed together, so another batching may
change the last bits). Ray Data re-blocks rows across files and does not keep their order, so the
parts would have to be regrouped and re-batched after the fact. Per-shard tasks give the same bytes
as the local run, the retry unit Ray needs (a task whose worker dies is re-run from the shard's
start, and the part's files only appear, atomically, once it finished), and no extra shuffle.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from clipcov_cli.embed import manifest as mf
from clipcov_cli.embed.config import EmbedConfig
from clipcov_cli.embed.model import LoadedModel, ModelSpec, load_model
from clipcov_cli.embed.parts import check_record, embed_parts, reusable_class_emb
from clipcov_cli.embed.vocab import Vocabulary
from clipcov_cli.embed.writer import Layout, save_npy

#: Fault injection for the tests (and for trying a cluster's retries): ``PART:MARKER_FILE``. The
#: worker embedding part ``PART`` deletes ``MARKER_FILE`` (when it exists) after the part's first
#: batch and kills its own process, so Ray has to re-run the shard on a new worker.
FAULT_ENV = "CLIPCOV_EMBED_FAULT"


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to build the model: no model object is ever shipped."""

    spec: ModelSpec  # paths absolute
    threads: int  # torch threads (the CPUs the worker reserves)


@dataclass(frozen=True)
class ProbeUnit:
    worker: WorkerSpec
    vocab: Vocabulary | None  # None: the folder's class embeddings are reused
    batch_size: int


@dataclass(frozen=True)
class ShardUnit:
    worker: WorkerSpec
    shard: Path  # absolute
    out_dir: Path  # absolute
    batch_size: int
    labels: bool = True  # False with --classes kmeans: the driver labels the parts once all are embedded


_MODELS: dict[WorkerSpec, LoadedModel] = {}


def worker_model(worker: WorkerSpec) -> LoadedModel:
    """The worker process's model, built on first use (one model per worker process)."""
    import torch

    torch.set_num_threads(worker.threads)
    loaded = _MODELS.get(worker)
    if loaded is None:
        _MODELS.clear()
        loaded = _MODELS[worker] = load_model(worker.spec)
    return loaded


def probe(unit: ProbeUnit) -> tuple[dict[str, Any], np.ndarray | None]:
    """On a worker: the model's record for ``clipcov.json`` and, if asked, the class text embeddings."""
    from clipcov_cli.embed.vocab import label_class_embeddings

    loaded = worker_model(unit.worker)
    emb = label_class_embeddings(loaded, unit.vocab, unit.batch_size) if unit.vocab is not None else None
    return mf.model_record(loaded, unit.worker.spec), emb


def _fault(part: str) -> None:
    value = os.environ.get(FAULT_ENV, "")
    target, _, marker = value.partition(":")
    if target == part and marker and os.path.exists(marker):
        os.unlink(marker)
        os._exit(3)  # the real process dies, as on a lost node or an OOM kill


def embed_shard(unit: ShardUnit) -> tuple[str, dict[str, Any], int]:
    """On a worker: embed one shard and write its part; return ``(part, stats, samples read)``."""
    from clipcov_cli.embed.mapper import embed_batches
    from clipcov_cli.embed.reader import iter_shard_batches
    from clipcov_cli.embed.writer import PartBuffer, write_part

    loaded = worker_model(unit.worker)
    layout = Layout(unit.out_dir)
    class_emb = np.load(layout.class_emb) if unit.labels else None
    buffer = PartBuffer(unit.shard.stem)
    read = 0
    batches = iter_shard_batches(unit.shard, loaded.preprocess, loaded.tokenizer, unit.batch_size)
    for eb in embed_batches(batches, loaded):
        buffer.add(eb)
        read += eb.read
        _fault(buffer.part)
    return buffer.part, write_part(layout, buffer, class_emb, loaded.dim), read


def _portable(spec: ModelSpec) -> ModelSpec:
    """The spec with absolute paths (workers do not share the driver's working folder)."""
    pretrained = str(Path(spec.pretrained).expanduser().resolve()) if spec.pretrained_is_path else spec.pretrained
    config = Path(spec.model_config).expanduser().resolve() if spec.model_config else None
    return replace(spec, pretrained=pretrained, model_config=config)


def _gpus(cfg: EmbedConfig, spec: ModelSpec, cluster_gpus: float) -> float:
    if cfg.num_gpus_per_worker is not None:
        return cfg.num_gpus_per_worker
    if spec.device == "cpu":
        return 0.0
    return 1.0 if spec.device.startswith("cuda") or cluster_gpus > 0 else 0.0


def run_embed_ray(cfg: EmbedConfig, layout: Layout, spec: ModelSpec, vocab: Vocabulary, shards: list[Path],
                  record: dict[str, Any] | None, echo: Callable[[str], None]):
    from clipcov_cli.distribute import make_distributor
    from clipcov_cli.embed.progress import embed_progress
    from clipcov_cli.embed.reader import expected_total

    threads = cfg.threads if cfg.threads > 0 else 1
    resume = record is not None and not cfg.overwrite
    with make_distributor("ray", ray_address=cfg.ray_address, cpus_per_task=threads) as dist:
        dist.gpus_per_task = _gpus(cfg, spec, dist.cluster_gpus())
        if spec.device.startswith("cuda") and dist.gpus_per_task == 0:
            from clipcov_cli.errors import ClipcovError

            raise ClipcovError("--device cuda with --num-gpus-per-worker 0: Ray would hide the GPUs from the workers")
        worker = WorkerSpec(_portable(spec), threads)
        reused = reusable_class_emb(layout, vocab, None) if resume and not vocab.is_kmeans else None
        if reused is None and not vocab.is_kmeans:
            echo(f"embedding {len(vocab.names)} class names x {len(vocab.templates)} templates on a Ray worker ...")
        unit = ProbeUnit(worker, None if reused is not None or vocab.is_kmeans else vocab, cfg.batch_size)
        [(_, (model_rec, computed))] = list(dist.imap_unordered(probe, [unit]))
        if reused is not None and reused.shape[1] != model_rec["dim"]:
            reused = None
            [(_, (model_rec, computed))] = list(dist.imap_unordered(probe, [replace(unit, vocab=vocab)]))
        proposed = mf.manifest_from_record(model_rec, vocab, cfg.dataset_dir, [p.stem for p in shards])
        check_record(layout, record, proposed, cfg)

        def class_emb(_resume: bool) -> np.ndarray | None:
            if vocab.is_kmeans:
                return None  # the k-means labels are made on the driver once every part is embedded
            if reused is not None:
                return reused
            save_npy(layout.class_emb, computed)
            return computed

        def stream(pending: list[Path], _emb: np.ndarray, manifest: dict[str, Any]) -> tuple[dict[str, Any], int]:
            units = [ShardUnit(worker, p.resolve(), layout.root.resolve(), cfg.batch_size, not vocab.is_kmeans)
                     for p in pending]
            read = 0
            with embed_progress(expected_total(pending), "embedding") as advance:
                for _, (part, stats, n) in dist.imap_unordered(embed_shard, units):
                    manifest = mf.mark_done(manifest, part, stats)
                    mf.write_manifest(layout.manifest, manifest)
                    read += n
                    advance(n)
            return manifest, read

        return embed_parts(cfg, layout, shards, record, proposed, class_emb, stream, echo)
