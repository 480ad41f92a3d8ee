"""What `clipcov demo` runs: sizes, budget, seeds, training length. ``quick`` is the test-suite size."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

METHODS = ("clipcov", "random", "clip-score", "semdedup", "negclip-loss")


@dataclass(frozen=True)
class DemoConfig:
    out: Path
    quick: bool = False
    corpus_seed: int = 0
    seeds: tuple[int, ...] = (0, 1, 2)
    budget: str = "30%"
    methods: tuple[str, ...] = METHODS
    n_web: int = 3000
    n_proxy_per_class: int = 50
    n_test_per_class: int = 20
    proxy_epochs: int = 8
    epochs: int = 8
    batch_size: int = 64
    workers: int = 1

    @classmethod
    def make(cls, out: Path, quick: bool) -> "DemoConfig":
        if quick:
            return cls(out=out, quick=True, seeds=(0,), n_web=1000, n_proxy_per_class=20, n_test_per_class=10,
                       proxy_epochs=3, epochs=3)
        return cls(out=out)

    @property
    def corpus_dir(self) -> Path:
        return self.out / "corpus"

    @property
    def dataset_dir(self) -> Path:
        return self.out / "dataset"

    @property
    def emb_dir(self) -> Path:
        return self.out / "dataset" / "embeddings"

    def subset_dir(self, method: str, seed: int) -> Path:
        # deterministic methods do not depend on the seed, seeded ones do
        return self.out / "subsets" / (f"{method}-s{seed}" if method in ("random", "negclip-loss", "semdedup") else method)

    def run_dir(self, name: str) -> Path:
        return self.out / "runs" / name
