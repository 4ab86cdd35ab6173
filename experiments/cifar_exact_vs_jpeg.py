"""Per-class test accuracy of CIFAR-10 classifiers on the exact and on the JPEG-compressed test images.

The CIFAR-10 copy of this project's machines (``../shared/data/README.md``) is exact for training
images 0..3999 and test images 0..999 of the original order; every other image went through JPEG
(quality about 75). In CIFAR-10-LT (imbalance 100, first n_i images of each class) the training
images of classes 5-9 are then all exact, while classes 0-4 are mostly JPEG copies: the JPEG
artefacts themselves are a feature that separates head from tail classes in training, and 90 %
of the test images carry them. This script measures what that does, per class, by splitting the
test set into its exact images (found by their pixels in the lossless subset) and the rest::

    python experiments/cifar_exact_vs_jpeg.py --exact-npz ../shared/data/cifar10_lossless_subset.npz \\
        RUN [RUN ...] [--json out.json]

Each RUN is a classifier run directory (its selected weights, as ``invtransfer evaluate``; or
``--weights best_val|last|other`` from its checkpoint.pt) or a ``model.pt``/``checkpoint.pt``.
The dataset is rebuilt from the run's own config (data root from ``INVTRANSFER_DATA``) and must
have the run's fingerprint.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from invtransfer.data import batches
from invtransfer.errors import InvTransferError
from invtransfer.metrics.accuracy import classification_metrics
from invtransfer.train.inference import WEIGHTS, load_classifier, predict_logits, rebuilt_dataset


def exact_mask(x_test: np.ndarray, exact_npz: str) -> np.ndarray:
    """Which test images (uint8, N x H x W x C or N x C x H x W) equal, pixel for pixel, one of
    the lossless subset's ``x_test`` images (N x 32 x 32 x 3)."""
    try:
        with np.load(exact_npz) as z:
            exact = z["x_test"]
    except (OSError, KeyError, ValueError) as e:
        raise InvTransferError(f"{exact_npz}: expected the lossless CIFAR-10 subset (an npz with x_test, "
                               f"uint8 N x 32 x 32 x 3): {e}") from None
    hwc = x_test if x_test.shape[-1] == 3 else x_test.transpose(0, 2, 3, 1)
    known = {img.tobytes() for img in np.ascontiguousarray(exact)}
    return np.array([np.ascontiguousarray(img).tobytes() in known for img in hwc])


def measure(run: str, exact_npz: str, weights: str = "selected") -> dict:
    model, meta = load_classifier(run, "cpu", weights=weights)
    ds = rebuilt_dataset(meta, run)
    mask = exact_mask(ds.x_test, exact_npz)
    images = batches.to_device_images(ds.x_test, torch.device("cpu"))
    with torch.no_grad():
        pred = predict_logits(model, images, batches.Normalizer(**meta["normalizer"]), batch_size=500).argmax(1)
    pred, y, n = pred.numpy(), ds.y_test, len(meta["class_names"])
    out = {"run": run, "selected_weights": meta["selected_weights"], "train_class_counts": meta["train_class_counts"]}
    for part, m in (("exact", mask), ("jpeg", ~mask)):
        out[part] = score(pred, y, m, n, meta["train_class_counts"])
    return out


def score(pred: np.ndarray, y: np.ndarray, mask: np.ndarray, n_classes: int, train_class_counts: list[int]) -> dict:
    """Accuracy, balanced accuracy and per-class accuracy (with each class's image count) of the
    predictions where ``mask`` holds."""
    met = classification_metrics(pred[mask], y[mask], n_classes, train_class_counts)
    support = np.bincount(y[mask], minlength=n_classes)
    return {"images": int(mask.sum()), "accuracy": met["accuracy"], "balanced_accuracy": met["balanced_accuracy"],
            "per_class": [{"class": c, "images": int(support[c]), "accuracy": a}
                          for c, a in enumerate(met["per_class_accuracy"])]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", help="classifier run directories (or model.pt / checkpoint.pt)")
    ap.add_argument("--exact-npz", required=True, help="cifar10_lossless_subset.npz (x_test: the exact test images)")
    ap.add_argument("--json", help="also write the measurements to this file")
    ap.add_argument("--weights", choices=WEIGHTS, default="selected",
                    help="which weights of each run (load_classifier): its selected ones, or one selection policy's "
                         "from its checkpoint.pt")
    a = ap.parse_args(argv)
    try:
        results = [measure(r, a.exact_npz, a.weights) for r in a.runs]
    except InvTransferError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for r in results:
        print(f"{r['run']} ({r['selected_weights']['which']}, epoch {r['selected_weights']['epoch']})")
        print("  class  train size  exact acc %  (n)   jpeg acc %  (n)")
        for e, j, size in zip(r["exact"]["per_class"], r["jpeg"]["per_class"], r["train_class_counts"]):
            print(f"  {e['class']:5d} {size:11d} {e['accuracy']:12.1f} {e['images']:4d} {j['accuracy']:12.1f} {j['images']:4d}")
        print(f"  balanced accuracy: exact {r['exact']['balanced_accuracy']:.2f} ({r['exact']['images']} images), "
              f"jpeg {r['jpeg']['balanced_accuracy']:.2f} ({r['jpeg']['images']} images)")
    if a.json:
        with open(a.json, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
