"""What `clipcov demo` runs: corpus sizes, seeds, budgets, training length. ``quick`` is the test-suite size."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clipcov_cli.compare.config import DEFAULT_METHODS, KMEANS, CompareConfig, builtin_variant

METHODS = DEFAULT_METHODS


@dataclass(frozen=True)
class DemoConfig:
    out: Path
    quick: bool = False
    corpus_seed: int = 0
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    budgets: tuple[str, ...] = ("10%", "30%")
    methods: tuple[str, ...] = METHODS
    n_web: int = 2000
    n_proxy_per_class: int = 2  # the proxy is shipped (scripts/train_demo_proxy.py): this split is not trained on
    n_test_per_class: int = 100
    epochs: int = 5
    batch_size: int = 64
    workers: int = 1

    @classmethod
    def make(cls, out: Path, quick: bool) -> "DemoConfig":
        if quick:  # the suite's end-to-end test: the k-means row is left to the full demo (and to compare's test)
            return cls(out=out, quick=True, seeds=(0,), n_web=1000, n_test_per_class=10, epochs=3,
                       methods=tuple(m for m in METHODS if m != KMEANS))
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

    @property
    def proxy_checkpoint(self) -> Path:
        return self.out / "proxy" / "proxy.pt"

    @property
    def proxy_templates(self) -> Path:
        return self.out / "proxy" / "templates.txt"

    def compare_config(self, layout) -> CompareConfig:
        """The comparison the demo runs on its corpus: `clipcov compare`'s code, the demo's sizes."""
        return CompareConfig(dataset=self.dataset_dir, embeddings=self.emb_dir, eval_data=layout.test_dir,
                             out=self.out, budgets=self.budgets, variants=tuple(builtin_variant(m) for m in self.methods),
                             seeds=self.seeds, epochs=self.epochs, batch_size=self.batch_size, workers=self.workers,
                             truth=layout.truth_path)
