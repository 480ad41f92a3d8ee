"""Orchestration of ``clipcov embed``: validate, load, resume, stream parts, report.

Everything is checked (dataset, vocabulary, model, the existing folder's record) before the first
byte is written. Then the class text embeddings are computed (or reused from ``labels/``), the
pending shards are streamed through the reader, the mapper and the writer, and each finished part
is added to ``clipcov.json``. Re-running resumes at the first unfinished part.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

from clipcov_cli.embed import manifest as mf
from clipcov_cli.embed.config import EmbedConfig, model_threads
from clipcov_cli.embed.model import LoadedModel, ModelSpec, file_sha256, load_model
from clipcov_cli.embed.progress import embed_progress
from clipcov_cli.embed.vocab import Vocabulary, label_class_embeddings, load_vocabulary
from clipcov_cli.embed.parts import EmbedSummary, check_record, embed_parts, reusable_class_emb
from clipcov_cli.embed.writer import EMBED_OWNED, Layout, PartBuffer, save_npy, write_part
from clipcov_cli.errors import ClipcovError, JobFailed, first_line
from clipcov_cli.utils.overwrite import check_replaceable

Echo = Callable[[str], None]


def _existing(layout: Layout, overwrite: bool) -> dict[str, Any] | None:
    """The folder's record; an error for a non-empty folder that is not a clipcov embeddings folder."""
    if overwrite:
        try:
            return mf.read_manifest(layout.manifest)
        except ClipcovError:
            return None
    record = mf.read_manifest(layout.manifest)
    if record is None and layout.root.exists() and any(layout.root.iterdir()):
        raise ClipcovError(f"{layout.root} exists and is not a clipcov embeddings folder (no clipcov.json): "
                           "choose another --out, or pass --overwrite to replace its embeddings")
    return record


def _already_complete(record: dict[str, Any] | None, spec: ModelSpec, vocab: Vocabulary,
                      stems: list[str], cfg: EmbedConfig) -> bool:
    """A finished folder made with what this run asks for (checked without loading the model)."""
    if record is None or cfg.overwrite or not record.get("complete") or set(stems) - set(record["parts_done"]):
        return False
    if record.get("vocabulary_hash") != vocab.hash or record.get("precision") != spec.precision:
        return False
    if spec.pretrained_is_path:
        same_weights = record.get("weights_sha256") == file_sha256(Path(spec.pretrained).expanduser())
    else:
        same_weights = record.get("pretrained") == spec.pretrained
    same_model = record.get("model") == (Path(spec.model_config).stem if spec.model_config else spec.model)
    same_dir = record.get("dataset_dir") == str(cfg.dataset_dir.resolve())
    return same_weights and same_model and same_dir


@contextlib.contextmanager
def _cpu_threads(cfg: EmbedConfig, device: str):
    """Run the model with :func:`model_threads` torch threads on CPU; restore the count afterwards."""
    import torch

    previous = torch.get_num_threads()
    if device == "cpu":
        torch.set_num_threads(model_threads(cfg.threads, cfg.workers))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _class_embeddings(layout: Layout, loaded: LoadedModel, vocab: Vocabulary, reuse: bool,
                      batch_size: int, echo: Echo) -> np.ndarray | None:
    """The (K, d) class text embeddings: reused from ``labels/`` on resume, else computed and saved.
    None for ``--classes kmeans`` (no class text: the labels are made once every part is embedded)."""
    if vocab.is_kmeans:
        return None
    if reuse:
        emb = reusable_class_emb(layout, vocab, loaded.dim)
        if emb is not None:
            return emb
    total = len(vocab.names) * len(vocab.templates)
    echo(f"embedding {len(vocab.names)} class names x {len(vocab.templates)} templates ...")
    with embed_progress(total, "class text", unit="prompts") as advance:
        emb = label_class_embeddings(loaded, vocab, batch_size, on_progress=advance)
    save_npy(layout.class_emb, emb)
    return emb


@contextlib.contextmanager
def _worker_failures():
    """A decode worker that dies (out of memory, a crash in an image library) fails the job, resumably."""
    try:
        yield
    except RuntimeError as exc:
        if "DataLoader worker" not in str(exc):
            raise
        raise JobFailed(f"a decode worker died ({first_line(exc)}); finished parts are kept: "
                        "re-run to resume (fewer --workers or a smaller --batch-size use less memory)") from None


def _stream_parts(cfg: EmbedConfig, layout: Layout, loaded: LoadedModel, pending: list[Path],
                  class_emb: np.ndarray, manifest: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """Embed and write the pending shards; return the final manifest and the samples read."""
    from clipcov_cli.embed.mapper import embed_batches
    from clipcov_cli.embed.reader import expected_total, load_batches

    total = expected_total(pending)
    batches = load_batches(pending, loaded.preprocess, loaded.tokenizer, cfg.batch_size, cfg.workers)
    buffers: dict[str, PartBuffer] = {}
    read = 0
    with embed_progress(total, "embedding") as advance, _worker_failures():
        for eb in embed_batches(batches, loaded):
            buffers.setdefault(eb.part, PartBuffer(eb.part)).add(eb)
            read += eb.read
            advance(eb.read)
            if eb.last:
                stats = write_part(layout, buffers.pop(eb.part), class_emb, loaded.dim)
                manifest = mf.mark_done(manifest, eb.part, stats)
                mf.write_manifest(layout.manifest, manifest)
    return manifest, read


def _prepare(cfg: EmbedConfig):
    from clipcov_cli.embed.shards import list_shards

    shards = list_shards(cfg.dataset_dir)
    layout = Layout(cfg.out_dir)
    if cfg.overwrite:
        check_replaceable(layout.root, EMBED_OWNED, (cfg.dataset_dir,))
    record = _existing(layout, cfg.overwrite)
    spec = cfg.model_spec(record)
    vocab = load_vocabulary(*cfg.vocabulary_args(record))
    return shards, layout, record, spec, vocab


def run_embed(cfg: EmbedConfig, echo: Echo = lambda m: None) -> EmbedSummary:
    """Embed the dataset folder into ``cfg.out_dir`` (or relabel it with ``cfg.relabel``), then
    diagnose its labels."""
    import dataclasses

    summary = _run(cfg, echo)
    return dataclasses.replace(summary, diagnostics=diagnose(summary.out_dir))


def diagnose(root: Path):
    """The label diagnostics of a finished embeddings folder (None without labels)."""
    from clipcov_cli.embed.diagnostics import folder_diagnostics

    record = mf.read_manifest(Layout(root).manifest)
    if record is None or not record.get("complete"):
        return None
    return folder_diagnostics(root, record["parts_done"], (record.get("classes") or {}).get("count"))


def _run(cfg: EmbedConfig, echo: Echo) -> EmbedSummary:
    if cfg.relabel:
        from clipcov_cli.embed.relabel import run_relabel

        return run_relabel(cfg, echo)
    shards, layout, record, spec, vocab = _prepare(cfg)
    stems = [p.stem for p in shards]
    if _already_complete(record, spec, vocab, stems, cfg):
        echo(f"{layout.root} is already complete ({len(record['parts'])} parts, {record['rows']} rows): "
             "nothing to do (pass --overwrite to recompute)")
        return EmbedSummary(layout.root, len(record["parts"]), 0, record["rows"], record["skipped"], already_complete=True)
    if cfg.engine == "ray":
        from clipcov_cli.embed.ray_engine import run_embed_ray

        return run_embed_ray(cfg, layout, spec, vocab, shards, record, echo)
    loaded = load_model(spec)
    proposed = mf.new_manifest(loaded, spec, vocab, cfg.dataset_dir, stems)
    check_record(layout, record, proposed, cfg)
    return _embed(cfg, layout, loaded, vocab, shards, record, proposed, echo)


def _embed(cfg, layout, loaded, vocab, shards, record, proposed, echo) -> EmbedSummary:
    def class_emb(resume: bool) -> np.ndarray:
        return _class_embeddings(layout, loaded, vocab, resume, cfg.batch_size, echo)

    def stream(pending: list[Path], emb: np.ndarray, manifest: dict[str, Any]) -> tuple[dict[str, Any], int]:
        return _stream_parts(cfg, layout, loaded, pending, emb, manifest)

    with _cpu_threads(cfg, loaded.device):
        return embed_parts(cfg, layout, shards, record, proposed, class_emb, stream, echo)


