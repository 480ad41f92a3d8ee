"""Reading the dataset folder: stream each tar shard with webdataset, decode and preprocess images,
tokenize captions, and cut the samples into batches that never cross a shard (= part) boundary.

Bad samples never stop a run: each one becomes a skip record ``{shard, key, reason, error}``
(reasons: ``decode_error``, ``missing_image``, ``empty_caption``, ``incomplete_sample``, and
``truncated_tar`` / ``unreadable_tar`` once per shard whose tar stream breaks; what was read before
the break is kept). Decoding runs in ``torch.utils.data.DataLoader`` workers, each worker taking
whole shards (``shards[worker::workers]``), so a part's batches are always the same whatever the
number of workers.
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from torch.utils.data import DataLoader, IterableDataset

from clipcov_cli.embed.shards import expected_samples, expected_total, list_shards  # noqa: F401 - re-exported

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
REASONS = ("decode_error", "missing_image", "empty_caption", "incomplete_sample", "truncated_tar", "unreadable_tar")


@dataclass
class Batch:
    """Up to ``batch_size`` decoded samples of one part, in source order, plus the part's skip
    records met while reading them. ``last`` marks the part's final batch."""

    part: str
    keys: list[str]
    captions: list[str]
    meta: list[dict[str, Any]]
    images: Any  # FloatTensor (n, 3, H, W), or None when n == 0
    tokens: Any  # LongTensor (n, context), or None when n == 0
    skipped: list[dict[str, Any]] = field(default_factory=list)
    last: bool = False

    @property
    def read(self) -> int:
        """Samples read from the shard for this batch (embedded + skipped ones)."""
        return len(self.keys) + sum(1 for s in self.skipped if s.get("key") is not None)


def _skip(shard: str, key: str | None, reason: str, error: str = "") -> dict[str, Any]:
    return {"shard": shard, "key": key, "reason": reason, "error": error}


def _tar_error(shard: str, exn: BaseException) -> dict[str, Any]:
    msg = str(exn.args[0]) if getattr(exn, "args", None) else type(exn).__name__
    truncated = isinstance(exn, (EOFError, tarfile.ReadError)) or "unexpected end" in msg
    return _skip(shard, None, "truncated_tar" if truncated else "unreadable_tar", msg.split(" @ ")[0])


def iter_raw_samples(shard: Path, errors: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """webdataset's tar stream grouped by key; a broken stream ends it and adds one skip record."""
    from webdataset.tariterators import group_by_keys, tar_file_expander

    def handler(exn: BaseException) -> bool:
        errors.append(_tar_error(shard.stem, exn))
        return False

    try:
        with open(shard, "rb") as stream:
            files = tar_file_expander([{"url": str(shard), "stream": stream}], handler=handler)
            yield from group_by_keys(files, handler=handler)
    except OSError as exc:
        errors.append(_skip(shard.stem, None, "unreadable_tar", str(exc)))


def _caption(raw: dict[str, Any], meta: dict[str, Any]) -> str:
    text = raw.get("txt")
    caption = text.decode("utf-8", errors="replace") if isinstance(text, bytes) else meta.get("caption")
    return caption.strip() if isinstance(caption, str) else ""


def _meta(raw: dict[str, Any]) -> dict[str, Any]:
    try:
        meta = json.loads(raw["json"]) if "json" in raw else {}
    except (ValueError, UnicodeDecodeError):
        return {}
    return meta if isinstance(meta, dict) else {}


def decode_sample(raw: dict[str, Any], shard: str, preprocess: Callable) -> tuple[Any, dict[str, Any]]:
    """``(image tensor, {key, caption, meta})`` for a raw sample, or ``(None, skip record)``."""
    from PIL import Image

    key = raw["__key__"]
    meta = _meta(raw)
    caption = _caption(raw, meta)
    if not caption:
        return None, _skip(shard, key, "empty_caption")
    data = next((raw[e] for e in IMAGE_EXTS if e in raw), None)
    if data is None:
        return None, _skip(shard, key, "missing_image")
    try:
        with Image.open(io.BytesIO(data)) as im:
            image = im.convert("RGB")
        tensor = preprocess(image)
    except Exception as exc:  # PIL raises many types for a bad image; any of them skips the sample
        return None, _skip(shard, key, "decode_error", f"{type(exc).__name__}: {exc}"[:200])
    return tensor, {"key": key, "caption": caption, "meta": meta}


def _incomplete(raw: dict[str, Any], reference: set[str] | None) -> bool:
    return reference is not None and not reference <= set(raw)


def iter_shard_chunks(shard: Path, preprocess: Callable, batch_size: int) -> Iterator[tuple[list, list]]:
    """``(decoded samples, skip records)`` chunks of at most ``batch_size`` samples, in tar order.

    The final chunk may hold no sample (a shard of bad samples still yields one, empty chunk)."""
    errors: list[dict[str, Any]] = []
    samples: list[tuple[Any, dict]] = []
    skipped: list[dict[str, Any]] = []
    reference: set[str] | None = None
    emitted = False
    raws = iter_raw_samples(shard, errors)
    for raw in raws:
        reference = reference if reference is not None else set(raw)
        if errors and _incomplete(raw, reference):  # the sample the tar broke in
            skipped.append(_skip(shard.stem, raw["__key__"], "incomplete_sample", errors[0]["error"]))
            continue
        tensor, info = decode_sample(raw, shard.stem, preprocess)
        if tensor is None:
            skipped.append(info)
            continue
        samples.append((tensor, info))
        if len(samples) == batch_size:
            yield samples, skipped
            emitted, samples, skipped = True, [], []
    skipped.extend(errors)
    if samples or skipped or not emitted:
        yield samples, skipped


def _with_last(items: Iterable[Any]) -> Iterator[tuple[Any, bool]]:
    it = iter(items)
    try:
        prev = next(it)
    except StopIteration:
        return
    for item in it:
        yield prev, False
        prev = item
    yield prev, True


def make_batch(part: str, samples: list, skipped: list, last: bool, tokenizer: Callable) -> Batch:
    import torch

    infos = [info for _, info in samples]
    captions = [i["caption"] for i in infos]
    return Batch(
        part=part, keys=[i["key"] for i in infos], captions=captions, meta=[i["meta"] for i in infos],
        images=torch.stack([t for t, _ in samples]) if samples else None,
        tokens=tokenizer(captions) if samples else None, skipped=skipped, last=last,
    )


def iter_shard_batches(shard: Path, preprocess: Callable, tokenizer: Callable, batch_size: int) -> Iterator[Batch]:
    """The batches of one shard (one part), the final one with ``last=True``."""
    for (samples, skipped), last in _with_last(iter_shard_chunks(shard, preprocess, batch_size)):
        yield make_batch(shard.stem, samples, skipped, last, tokenizer)


class ShardBatches(IterableDataset):
    """An iterable over the batches of several shards; in DataLoader workers each takes whole shards."""

    def __init__(self, shards: list[Path], preprocess: Callable, tokenizer: Callable, batch_size: int) -> None:
        self.shards, self.preprocess, self.tokenizer, self.batch_size = list(shards), preprocess, tokenizer, batch_size

    def __iter__(self) -> Iterator[Batch]:
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        mine = self.shards if info is None else self.shards[info.id::info.num_workers]
        for shard in mine:
            yield from iter_shard_batches(shard, self.preprocess, self.tokenizer, self.batch_size)


def _identity(x: Any) -> Any:
    return x


def load_batches(shards: list[Path], preprocess: Callable, tokenizer: Callable, batch_size: int,
                 workers: int) -> Iterable[Batch]:
    """Batches of all ``shards``, decoded by ``workers`` processes (0: in this process).

    Batches of different shards may interleave; the batches of one shard come in order."""
    import inspect

    dataset = ShardBatches(shards, preprocess, tokenizer, batch_size)
    workers = min(workers, len(shards))
    if workers == 0:
        return iter(dataset)
    extra = {"in_order": False} if "in_order" in inspect.signature(DataLoader).parameters else {}
    return DataLoader(dataset, batch_size=None, num_workers=workers, collate_fn=_identity,
                      prefetch_factor=2, **extra)
