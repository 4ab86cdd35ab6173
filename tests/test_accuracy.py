"""Tests for invtransfer.metrics.accuracy on hand-built predictions with known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from invtransfer.errors import InvTransferError
from invtransfer.metrics.accuracy import classification_metrics, confusion_matrix, shot_group


def test_confusion_matrix_layout_and_sums() -> None:
    targets = [0, 0, 1, 2, 2, 2]
    preds = [0, 1, 1, 2, 0, 2]
    cm = confusion_matrix(np.array(preds), torch.tensor(targets), 3)
    assert cm.dtype == np.int64
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    assert cm.sum() == 6
    assert cm.sum(axis=1).tolist() == [2, 1, 3]  # rows: true-class support
    assert cm.sum(axis=0).tolist() == [2, 2, 2]  # columns: predicted counts


def test_shot_group_boundaries() -> None:
    assert [shot_group(n) for n in (0, 19, 20, 21, 99, 100, 101, 5000)] == [
        "few", "few", "medium", "medium", "medium", "medium", "many", "many"]


def test_classification_metrics_known_answers() -> None:
    # Training sizes: class 0 many (101), 1 medium (100, tie), 2 medium (20, tie), 3 few (19),
    # 4 few (5) but absent from the test set.
    counts = [101, 100, 20, 19, 5]
    targets = [0, 0, 0, 0, 1, 1, 2, 2, 2, 3]
    preds = [0, 0, 0, 1, 1, 0, 2, 4, 4, 3]
    m = classification_metrics(torch.tensor(preds), np.array(targets), 5, counts)
    assert m["n"] == 10
    assert m["accuracy"] == pytest.approx(60.0)
    assert m["error"] == pytest.approx(40.0)
    assert m["per_class_accuracy"][:4] == pytest.approx([75.0, 50.0, 100 / 3, 100.0])
    assert m["per_class_accuracy"][4] is None
    assert m["balanced_accuracy"] == pytest.approx((75 + 50 + 100 / 3 + 100) / 4)
    assert m["many_shot_accuracy"] == pytest.approx(75.0)
    assert m["medium_shot_accuracy"] == pytest.approx((50 + 100 / 3) / 2)
    assert m["few_shot_accuracy"] == pytest.approx(100.0)  # class 4 is absent, so only class 3
    assert m["shot_group_sizes"] == {"many": 1, "medium": 2, "few": 2}
    cm = np.array(m["confusion_matrix"])
    assert cm.shape == (5, 5) and cm.sum() == 10 and cm[4].sum() == 0 and cm[:, 4].sum() == 2
    json.dumps(m)  # plain Python types only


def test_empty_shot_group_is_none() -> None:
    m = classification_metrics([0, 1, 1], [0, 1, 0], 2, [500, 30])
    assert m["few_shot_accuracy"] is None
    assert m["shot_group_sizes"] == {"many": 1, "medium": 1, "few": 0}
    assert m["many_shot_accuracy"] == pytest.approx(50.0)
    assert m["medium_shot_accuracy"] == pytest.approx(100.0)
    assert "null" in json.dumps(m)


def test_group_with_all_classes_absent_is_none() -> None:
    m = classification_metrics([0, 0], [0, 0], 2, [500, 3])
    assert m["few_shot_accuracy"] is None and m["shot_group_sizes"]["few"] == 1
    assert m["balanced_accuracy"] == pytest.approx(100.0)


def test_bad_inputs() -> None:
    with pytest.raises(InvTransferError):
        confusion_matrix([0, 3], [0, 1], 3)  # index out of range
    with pytest.raises(InvTransferError):
        confusion_matrix([0, 1], [0], 3)  # length mismatch
    with pytest.raises(InvTransferError):
        confusion_matrix(np.array([0.0, 1.0]), [0, 1], 3)  # float predictions
    with pytest.raises(InvTransferError):
        classification_metrics([0], [0], 3, [10, 10])  # counts length
    with pytest.raises(InvTransferError):
        classification_metrics([], [], 2, [10, 10])  # nothing to score
