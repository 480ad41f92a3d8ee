"""Pure metric functions: zero-shot top-k accuracy, mean per-class recall and retrieval recall@k both ways."""

from __future__ import annotations

import numpy as np


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of rows whose label is among the k highest logits (ties: lower class index first)."""
    order = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return float(np.mean((order == labels[:, None]).any(axis=1)))


def mean_per_class_recall(logits: np.ndarray, labels: np.ndarray) -> float:
    """Balanced accuracy: the mean over the classes present in ``labels`` of the share of their
    images predicted as them (top-1; ties: lower class index). A model that predicts one class
    everywhere scores 1 / classes, whatever that class' share of the images."""
    pred = np.argmax(logits, axis=1)
    classes = np.unique(labels)
    return float(np.mean([np.mean(pred[labels == c] == c) for c in classes]))


def recall_at_k(sim: np.ndarray, k: int) -> float:
    """Queries are rows; row i's match is column i. Fraction with the match among the top k."""
    order = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    return float(np.mean((order == np.arange(len(sim))[:, None]).any(axis=1)))
