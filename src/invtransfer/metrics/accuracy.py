"""Classification metrics for long-tailed evaluation.

This module owns the confusion matrix and the summary every evaluation reports: top-1 error and
accuracy, balanced accuracy (mean per-class recall), per-class accuracy and the usual
many/medium/few-shot accuracies, where a class's shot group is decided by its number of
*training* images (:data:`SHOT_GROUPS`). All numbers are percentages; results are plain Python
types so they serialise to JSON directly (``None`` becomes ``null``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from invtransfer.errors import InvTransferError

#: Shot groups by training-set class size n, with inclusive bounds: many n > 100,
#: medium 20 <= n <= 100, few n < 20.
SHOT_GROUPS: dict[str, tuple[int, float]] = {
    "many": (101, float("inf")),
    "medium": (20, 100),
    "few": (0, 19),
}


def shot_group(n_train: int) -> str:
    """Name of the shot group ("many", "medium" or "few") of a class with ``n_train`` images."""
    if n_train > 100:
        return "many"
    if n_train >= 20:
        return "medium"
    return "few"


def _as_labels(x: Any, what: str, num_classes: int) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise InvTransferError(f"{what} must be a 1-D array of class indices, got shape {arr.shape}.")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise InvTransferError(f"{what} must hold integer class indices, got dtype {arr.dtype}.")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        raise InvTransferError(
            f"{what} holds class indices outside 0..{num_classes - 1} "
            f"(min {arr.min()}, max {arr.max()}).")
    return arr


def confusion_matrix(preds: np.ndarray | torch.Tensor, targets: np.ndarray | torch.Tensor,
                     num_classes: int) -> np.ndarray:
    """``(C, C)`` int64 counts; row = true class, column = predicted class."""
    if num_classes < 1:
        raise InvTransferError(f"num_classes must be at least 1, got {num_classes}.")
    p = _as_labels(preds, "preds", num_classes)
    t = _as_labels(targets, "targets", num_classes)
    if p.shape != t.shape:
        raise InvTransferError(
            f"preds and targets must have the same length, got {p.size} and {t.size}.")
    flat = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(np.int64)


def _mean_or_none(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def classification_metrics(preds: np.ndarray | torch.Tensor, targets: np.ndarray | torch.Tensor,
                           num_classes: int, train_class_counts: Sequence[int]) -> dict[str, Any]:
    """Error, accuracy, balanced and per-class accuracy, and shot-group accuracy (all in %).

    ``preds`` and ``targets`` are integer class indices. Per-class accuracy is ``None`` for a
    class absent from ``targets``; balanced accuracy averages over the classes present. A shot
    group's accuracy averages the per-class accuracy of its classes that are present in
    ``targets`` and is ``None`` when there are none; ``shot_group_sizes`` counts all classes of
    each group by training size, present in ``targets`` or not.
    """
    counts = np.asarray(list(train_class_counts))
    if counts.shape != (num_classes,):
        raise InvTransferError(
            f"train_class_counts must list one training-set size per class ({num_classes}), "
            f"got {counts.size}.")
    if np.any(counts < 0):
        raise InvTransferError(f"train_class_counts must not be negative, got {counts.tolist()}.")
    cm = confusion_matrix(preds, targets, num_classes)
    n = int(cm.sum())
    if n == 0:
        raise InvTransferError("classification_metrics: no predictions to score (empty preds/targets).")

    correct = np.diag(cm)
    support = cm.sum(axis=1)
    per_class: list[float | None] = [
        100.0 * float(correct[c]) / float(support[c]) if support[c] > 0 else None
        for c in range(num_classes)
    ]
    accuracy = 100.0 * float(correct.sum()) / n
    groups = [shot_group(int(k)) for k in counts]

    def group_acc(name: str) -> float | None:
        return _mean_or_none([a for a, g in zip(per_class, groups) if g == name and a is not None])

    return {
        "error": 100.0 - accuracy,
        "accuracy": accuracy,
        "balanced_accuracy": _mean_or_none([a for a in per_class if a is not None]),
        "per_class_accuracy": per_class,
        "many_shot_accuracy": group_acc("many"),
        "medium_shot_accuracy": group_acc("medium"),
        "few_shot_accuracy": group_acc("few"),
        "shot_group_sizes": {g: groups.count(g) for g in ("many", "medium", "few")},
        "confusion_matrix": cm.tolist(),
        "n": n,
    }
