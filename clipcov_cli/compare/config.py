"""What `clipcov compare` runs: method variants, budgets, seeds, training length and evaluation data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clipcov_cli.errors import ClipcovError
from clipcov_cli.select.methods import METHODS as SELECT_METHODS

DEFAULT_METHODS = ("clipcov", "clipcov-kmeans", "random", "clip-score", "semdedup", "negclip-loss")
KMEANS = "clipcov-kmeans"  # ClipCov over k-means pseudo-classes (`clipcov-kmeans:K`; K by default: the vocabulary's size)
SEEDED = frozenset({"random", "semdedup", "negclip-loss"})  # methods whose selection depends on the seed
BASELINES = ("random", "clip-score")  # every row gets its paired difference against these
# the headline metric of each eval task, read by name in one place (compare.stages.read_metric)
# (names tried in order: clip_benchmark's first, then what older `clipcov eval` versions wrote)
HEADLINE = {"zeroshot": ("acc1", "top1"), "retrieval": ("image_to_text_R@1",)}
BALANCED = ("mean_per_class_recall",)  # zero-shot balanced accuracy, beside top-1


@dataclass(frozen=True)
class Variant:
    """A named way to select: a select method, its parameters, and optionally a labels/ folder that
    replaces the embeddings' own pseudo-labels (e.g. k-means pseudo-classes from `embed --relabel`)."""

    name: str
    method: str
    params: tuple[tuple[str, object], ...] = ()
    labels: Path | None = None
    kmeans: int | None = None  # labels made by the comparison: K k-means clusters (0: as many as the embeddings' classes)

    @property
    def seeded(self) -> bool:
        return self.method in SEEDED


def builtin_variant(name: str) -> Variant:
    """A variant by name: each select method under its own name, and ``clipcov-kmeans[:K]``: ClipCov
    with K k-means pseudo-classes of the proxy's image embeddings (`clipcov embed --relabel --classes
    kmeans:K`; without K, as many clusters as the embeddings have classes)."""
    base, _, k = name.partition(":")
    if base == KMEANS:
        if k and not (k.isdigit() and int(k) >= 1):
            raise ClipcovError(f"{name!r}: K in {KMEANS}:K must be a positive integer")
        # the row's name goes into folder names: no colon (clipcov-kmeans:50 -> clipcov-kmeans-50)
        return Variant(name=f"{KMEANS}-{int(k)}" if k else KMEANS, method="clipcov", kmeans=int(k) if k else 0)
    if name not in SELECT_METHODS:
        raise ClipcovError(f"unknown method {name!r}: use one of {', '.join((*SELECT_METHODS, KMEANS + '[:K]'))}")
    return Variant(name=name, method=name)


@dataclass(frozen=True)
class CompareConfig:
    dataset: Path  # WebDataset shards (img2dataset layout)
    embeddings: Path  # `clipcov embed` output for the dataset
    eval_data: Path  # labelled test split for `clipcov eval`
    out: Path
    budgets: tuple[str, ...] = ("10%", "30%")
    variants: tuple[Variant, ...] = tuple(builtin_variant(m) for m in DEFAULT_METHODS)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    epochs: int = 8
    batch_size: int = 64
    workers: int = 1
    model: str = "clipcov-tiny"  # the architecture trained on each subset
    recipe: str = "tiny"
    full: bool = True  # also train on the whole corpus: equal epochs, and equal steps for each budget
    device: str = "cpu"
    truth: Path | None = None  # optional uid -> kind/true_class sidecar (the demo corpus' truth.parquet)

    def __post_init__(self) -> None:
        if not self.budgets or not self.variants or not self.seeds:
            raise ClipcovError("compare needs at least one budget, one method and one seed")
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ClipcovError(f"method names repeat: {', '.join(names)}")
        if len(set(self.budgets)) != len(self.budgets):
            raise ClipcovError(f"budgets repeat: {', '.join(self.budgets)}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ClipcovError("epochs and batch size must be at least 1")

    def subset_dir(self, variant: Variant, budget: str, seed: int) -> Path:
        """Deterministic variants are selected once per budget, seeded ones once per seed."""
        tag = f"{variant.name}-{_budget_tag(budget)}"
        return self.out / "subsets" / (f"{tag}-s{seed}" if variant.seeded else tag)

    def run_dir(self, name: str) -> Path:
        return self.out / "runs" / name


def _budget_tag(budget: str) -> str:
    return budget.strip().replace("%", "pct").replace(".", "_")


def run_name(variant: str, budget: str, seed: int) -> str:
    return f"{variant}-{_budget_tag(budget)}-s{seed}"
