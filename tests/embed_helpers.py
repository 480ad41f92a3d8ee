"""Helpers for the embed tests: img2dataset-layout shards written with webdataset's TarWriter and a
tiny open_clip model (``clipcov-tiny``) with random weights saved to a local checkpoint."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

CLASSES = ("cat", "dog", "car", "tree", "house", "boat", "bird", "flower")
TEMPLATES = ("a photo of a {}.", "a picture of the {}.", "{} in the wild.")


def jpeg_bytes(rng: np.random.Generator, size: int = 48) -> bytes:
    from PIL import Image

    base = rng.integers(0, 256, size=3)
    noise = rng.integers(-40, 40, size=(size, size, 3))
    arr = np.clip(base + noise, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def sample(shard: int, i: int, rng: np.random.Generator, caption: str | None = None, image: bytes | None = None) -> dict:
    key = f"{shard:05d}{i:04d}"
    caption = f"a photo of a {CLASSES[int(rng.integers(len(CLASSES)))]} number {i}" if caption is None else caption
    meta = {"url": f"http://127.0.0.1/img/{key}.jpg", "caption": caption, "key": key, "status": "success",
            "error_message": None, "width": 48, "height": 48, "uid": f"u{key}", "exif": {"a": 1}}
    return {"__key__": key, "jpg": jpeg_bytes(rng) if image is None else image, "txt": caption,
            "json": json.dumps(meta).encode()}


def write_shard(folder: Path, shard: int, samples: list[dict]) -> Path:
    import webdataset as wds

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{shard:05d}.tar"
    with wds.TarWriter(str(path)) as sink:
        for s in samples:
            sink.write(s)
    (folder / f"{shard:05d}_stats.json").write_text(json.dumps({"count": len(samples), "successes": len(samples)}))
    return path


def make_dataset(folder: Path, shards: int = 3, per_shard: int = 12, seed: int = 0) -> list[list[str]]:
    """Write ``shards`` clean shards; return the keys of each, in order."""
    rng = np.random.default_rng(seed)
    keys = []
    for s in range(shards):
        samples = [sample(s, i, rng) for i in range(per_shard)]
        write_shard(folder, s, samples)
        keys.append([x["__key__"] for x in samples])
    return keys


def tiny_checkpoint(path: Path, seed: int = 0, wrap: bool = False) -> Path:
    """Random clipcov-tiny weights saved as a state dict (or an open_clip_train checkpoint if ``wrap``)."""
    import open_clip
    import torch

    from clipcov_cli.models import register_model_config

    name = register_model_config()
    torch.manual_seed(seed)
    model = open_clip.create_model(name)
    state = model.state_dict()
    if wrap:
        state = {"epoch": 1, "name": "tiny", "state_dict": {f"module.{k}": v for k, v in state.items()}}
    torch.save(state, path)
    return path


def vocab_files(folder: Path) -> tuple[Path, Path]:
    classes, templates = folder / "classes.txt", folder / "templates.txt"
    classes.write_text("\n".join(CLASSES) + "\n")
    templates.write_text("\n".join(TEMPLATES) + "\n")
    return classes, templates
