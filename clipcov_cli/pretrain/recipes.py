"""Training recipes: `paper` (the reported setting) and `tiny` (minutes on a CPU)."""

from __future__ import annotations

from dataclasses import dataclass

from clipcov_cli.errors import ClipcovError


@dataclass(frozen=True)
class Recipe:
    model: str
    epochs: int
    batch_size: int
    lr: float
    wd: float
    warmup: int  # steps
    workers: int


RECIPES: dict[str, Recipe] = {
    # ClipCov's reported setting: ResNet-50 CLIP, 30 epochs, batch 512, lr 5e-4, wd 0.1, cosine with warmup
    "paper": Recipe(model="RN50", epochs=30, batch_size=512, lr=5e-4, wd=0.1, warmup=1000, workers=8),
    # the built-in tiny ViT (64 px, embed dim 64): trains on 2 CPU cores in minutes
    "tiny": Recipe(model="clipcov-tiny", epochs=10, batch_size=64, lr=1e-3, wd=0.1, warmup=20, workers=1),
}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ClipcovError(f"unknown recipe {name!r}: use one of {', '.join(RECIPES)}")
    return RECIPES[name]
