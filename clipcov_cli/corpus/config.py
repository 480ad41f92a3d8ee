"""Knobs of the synthetic web-like corpus, with their stated defaults."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from clipcov_cli.errors import ClipcovError


@dataclass(frozen=True)
class CorpusConfig:
    """Everything that determines the corpus. Same config -> identical bytes.

    Noise fractions are fractions of the web corpus; the kinds are exclusive (a sample is clean,
    mismatched, a near-duplicate, or junk), and counts are rounded from the fractions.
    """

    seed: int = 0
    n_web: int = 3000
    n_proxy_per_class: int = 50
    n_test_per_class: int = 20
    n_classes: int = 24
    image_size: int = 64
    mismatch_frac: float = 0.35
    duplicate_frac: float = 0.10
    junk_frac: float = 0.05
    zipf_exponent: float = 1.0
    max_group_size: int = 4
    jpeg_quality: int = 90
    shard_size: int = 1000

    def __post_init__(self) -> None:
        from clipcov_cli.corpus.concepts import max_classes

        if not 1 <= self.n_classes <= max_classes():
            raise ClipcovError(f"n_classes must be in [1, {max_classes()}], got {self.n_classes}")
        for name in ("mismatch_frac", "duplicate_frac", "junk_frac"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise ClipcovError(f"{name} must be in [0, 1), got {v}")
        if self.mismatch_frac + self.duplicate_frac + self.junk_frac >= 1.0:
            raise ClipcovError("noise fractions must sum to less than 1")
        if self.n_web < 10 or self.image_size < 16 or self.shard_size < 1:
            raise ClipcovError("n_web >= 10, image_size >= 16 and shard_size >= 1 are required")
        if self.zipf_exponent < 0:
            raise ClipcovError("zipf_exponent must be >= 0")

    def to_dict(self) -> dict:
        return asdict(self)
