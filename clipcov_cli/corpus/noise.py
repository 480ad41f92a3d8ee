"""Web noise: class frequencies and the assignment of noise kinds. Pure functions of a Generator."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KINDS: tuple[str, ...] = ("clean", "mismatched", "duplicate", "junk")


def zipf_probs(n_classes: int, exponent: float) -> np.ndarray:
    """P(class k) proportional to 1 / (k + 1) ** exponent (k = 0 is the most frequent)."""
    w = 1.0 / np.arange(1, n_classes + 1, dtype=np.float64) ** exponent
    return w / w.sum()


def kind_counts(n: int, mismatch: float, duplicate: float, junk: float) -> dict[str, int]:
    """Exact counts per kind, rounded from the fractions (so measured fractions are within 1/(2n))."""
    counts = {"mismatched": round(mismatch * n), "duplicate": round(duplicate * n), "junk": round(junk * n)}
    counts["clean"] = n - sum(counts.values())
    return counts


@dataclass(frozen=True)
class NoisePlan:
    """Per web sample (in final uid order): its kind, true class (-1 for junk), the class its caption
    describes (-1 for junk), and for a near-duplicate the position of its original (else -1)."""

    kind: np.ndarray  # (n,) object: one of KINDS
    true_class: np.ndarray  # (n,) int64
    caption_class: np.ndarray  # (n,) int64
    original: np.ndarray  # (n,) int64, -1 unless duplicate


def plan_noise(n: int, n_classes: int, probs: np.ndarray, counts: dict[str, int], max_group: int,
               rng: np.random.Generator) -> NoisePlan:
    """Decide, for ``n`` web samples, which are clean, mismatched, near-duplicates or junk."""
    n_base = counts["clean"] + counts["mismatched"]
    if counts["duplicate"] and counts["clean"] == 0:
        raise ValueError("near-duplicates need at least one clean sample to copy")
    base_class = rng.choice(n_classes, size=n_base, p=probs).astype(np.int64)
    base_kind = np.array(["clean"] * counts["clean"] + ["mismatched"] * counts["mismatched"], dtype=object)
    rng.shuffle(base_kind)
    caption_class = base_class.copy()
    mis = np.flatnonzero(base_kind == "mismatched")
    if n_classes > 1 and len(mis):
        shift = rng.integers(1, n_classes, size=len(mis))
        caption_class[mis] = (base_class[mis] + shift) % n_classes
    # near-duplicate groups: each copies a distinct clean original, 1..max_group-1 copies per group
    clean_idx = np.flatnonzero(base_kind == "clean")
    rng.shuffle(clean_idx)
    originals: list[int] = []
    remaining, g = counts["duplicate"], 0
    while remaining > 0:
        size = min(int(rng.integers(1, max(2, max_group))), remaining)
        originals.extend([int(clean_idx[g % len(clean_idx)])] * size)
        remaining -= size
        g += 1
    n_dup, n_junk = counts["duplicate"], counts["junk"]
    kind = np.concatenate([base_kind, np.array(["duplicate"] * n_dup + ["junk"] * n_junk, dtype=object)])
    true_class = np.concatenate([base_class, base_class[originals] if n_dup else np.zeros(0, np.int64),
                                 -np.ones(n_junk, np.int64)])
    cap_class = np.concatenate([caption_class, base_class[originals] if n_dup else np.zeros(0, np.int64),
                                -np.ones(n_junk, np.int64)])
    original = np.concatenate([-np.ones(n_base, np.int64), np.array(originals, np.int64), -np.ones(n_junk, np.int64)])
    # interleave: a random permutation gives final positions; remap originals to final positions
    perm = rng.permutation(n)  # final position i holds generated sample perm[i]
    where = np.empty(n, np.int64)
    where[perm] = np.arange(n)
    orig_final = np.where(original[perm] >= 0, where[np.maximum(original[perm], 0)], -1)
    return NoisePlan(kind=kind[perm], true_class=true_class[perm], caption_class=cap_class[perm], original=orig_final)
