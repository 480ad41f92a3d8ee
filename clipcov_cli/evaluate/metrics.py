"""Pure metric functions: zero-shot top-k accuracy and retrieval recall@k both ways."""

from __future__ import annotations

import numpy as np


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of rows whose label is among the k highest logits (ties: lower class index first)."""
    order = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return float(np.mean((order == labels[:, None]).any(axis=1)))


def recall_at_k(sim: np.ndarray, k: int) -> float:
    """Queries are rows; row i's match is column i. Fraction with the match among the top k."""
    order = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    return float(np.mean((order == np.arange(len(sim))[:, None]).any(axis=1)))
