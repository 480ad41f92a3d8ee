"""Zero-shot classification and image-text retrieval of one checkpoint."""

from __future__ import annotations

from itertools import islice
from pathlib import Path
from typing import Iterable

import numpy as np

from clipcov_cli.errors import ClipcovError
from clipcov_cli.evaluate.data import EvalSet
from clipcov_cli.evaluate.metrics import mean_per_class_recall, recall_at_k, topk_accuracy


def _encode_images(loaded, images: Iterable, batch: int) -> np.ndarray:
    """Embeddings of a stream of images, ``batch`` decoded images in memory at a time."""
    import torch

    out = []
    it = iter(images)
    with torch.no_grad():
        while chunk := list(islice(it, batch)):
            x = torch.stack([loaded.preprocess(im) for im in chunk]).to(loaded.device)
            f = loaded.model.encode_image(x).float()
            out.append((f / f.norm(dim=-1, keepdim=True)).cpu().numpy())
    return np.concatenate(out)


def _encode_texts(loaded, texts, batch: int) -> np.ndarray:
    import torch

    out = []
    with torch.no_grad():
        for s in range(0, len(texts), batch):
            f = loaded.model.encode_text(loaded.tokenizer(texts[s: s + batch]).to(loaded.device)).float()
            out.append((f / f.norm(dim=-1, keepdim=True)).cpu().numpy())
    return np.concatenate(out)


def zeroshot(loaded, es: EvalSet, templates: tuple[str, ...], batch: int = 128) -> dict[str, float]:
    from clipcov_cli.embed.vocab import Vocabulary, class_text_embeddings

    if not es.class_names:
        raise ClipcovError("zero-shot needs class names: pass --classes FILE or put classnames.txt in the data folder")
    labels = np.array(es.labels)
    if (labels < 0).any():
        raise ClipcovError("zero-shot needs labelled images (.cls in the shards, or class subfolders)")
    if labels.max() >= len(es.class_names):
        raise ClipcovError(f"labels go up to {labels.max()} but there are {len(es.class_names)} class names")
    vocab = Vocabulary(name="eval", names=tuple(es.class_names), hash="eval",
                       templates=tuple(t.replace("{c}", "{}") for t in templates))
    Z = class_text_embeddings(loaded, vocab)
    logits = _encode_images(loaded, es.images(), batch) @ Z.T
    k5 = min(5, len(es.class_names))
    # clip_benchmark's metric names (acc1, acc5, mean_per_class_recall)
    return {"acc1": topk_accuracy(logits, labels, 1), f"acc{k5}": topk_accuracy(logits, labels, k5),
            "mean_per_class_recall": mean_per_class_recall(logits, labels), "chance_acc1": 1.0 / len(es.class_names)}


def retrieval(loaded, es: EvalSet, batch: int = 128) -> dict[str, float]:
    if not all(es.captions):
        raise ClipcovError("retrieval needs a caption (.txt) for every image")
    sim = _encode_images(loaded, es.images(), batch) @ _encode_texts(loaded, es.captions, batch).T
    out = {}
    for k in (1, 5, 10):
        out[f"image_to_text_R@{k}"] = recall_at_k(sim, k)
        out[f"text_to_image_R@{k}"] = recall_at_k(sim.T, k)
    return out


def model_name_for(checkpoint: Path, model: str | None) -> str:
    """--model, else the `model:` line of open_clip_train's params.txt beside the checkpoint's run."""
    if model:
        return model
    for params in (checkpoint.parent.parent / "params.txt", checkpoint.parent / "params.txt"):
        if params.exists():
            for line in params.read_text().splitlines():
                if line.startswith("model:"):
                    return line.split(":", 1)[1].strip()
    raise ClipcovError(f"cannot tell the architecture of {checkpoint}: pass --model")
