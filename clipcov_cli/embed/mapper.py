"""The embedding core: batches in, unit embeddings out.

:func:`embed_batches` takes any iterable of reader batches and a loaded model and yields, per
batch, float16 unit-norm image and caption embeddings (normalized in float32, then rounded). It
holds no state, reads and writes no files, so the local runner and a cluster engine (Ray actors)
run the very same code; :func:`embed_arrays` is the same core on plain tensors.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import numpy as np


@dataclass
class EmbeddedBatch:
    """A reader batch's rows with their embeddings (images and tokens dropped)."""

    part: str
    keys: list[str]
    captions: list[str]
    meta: list[dict[str, Any]]
    img: np.ndarray  # (n, d) float16, unit rows
    txt: np.ndarray  # (n, d) float16, unit rows
    skipped: list[dict[str, Any]] = field(default_factory=list)
    last: bool = False

    @property
    def read(self) -> int:
        """Samples read from the shard for this batch (embedded + skipped ones)."""
        return len(self.keys) + sum(1 for s in self.skipped if s.get("key") is not None)


def _context(loaded):
    import torch

    if loaded.autocast:
        device_type = "cuda" if str(loaded.device).startswith("cuda") else "cpu"
        dtype = torch.float16 if device_type == "cuda" else torch.bfloat16
        return torch.autocast(device_type=device_type, dtype=dtype)
    return contextlib.nullcontext()


def _normalized(features) -> Any:
    import torch

    return torch.nn.functional.normalize(features.float(), dim=-1).cpu()


def encode_image(loaded, images) -> Any:
    """Unit float32 image embeddings (CPU tensor) of a preprocessed image batch."""
    import torch

    dtype = next(loaded.model.parameters()).dtype
    with torch.inference_mode(), _context(loaded):
        return _normalized(loaded.model.encode_image(images.to(loaded.device, dtype=dtype, non_blocking=True)))


def encode_text(loaded, tokens) -> Any:
    """Unit float32 text embeddings (CPU tensor) of a tokenized batch."""
    import torch

    with torch.inference_mode(), _context(loaded):
        return _normalized(loaded.model.encode_text(tokens.to(loaded.device, non_blocking=True)))


def embed_arrays(loaded, images, tokens) -> tuple[np.ndarray, np.ndarray]:
    """``(img, txt)`` float16 unit rows for image and token tensors of the same n (n may be 0)."""
    if images is None or len(images) == 0:
        empty = np.zeros((0, loaded.dim), dtype=np.float16)
        return empty, empty.copy()
    img = encode_image(loaded, images).numpy().astype(np.float16)
    txt = encode_text(loaded, tokens).numpy().astype(np.float16)
    return img, txt


def embed_batches(batches: Iterable[Any], loaded) -> Iterator[EmbeddedBatch]:
    """For each reader batch (``part, keys, captions, meta, images, tokens, skipped, last``), its embeddings."""
    for b in batches:
        img, txt = embed_arrays(loaded, b.images, b.tokens)
        yield EmbeddedBatch(part=b.part, keys=list(b.keys), captions=list(b.captions), meta=list(b.meta),
                            img=img, txt=txt, skipped=list(b.skipped), last=b.last)
