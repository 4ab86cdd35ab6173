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

Each RUN is a classifier run directory (its selected weights, as ``invtransfer evaluate``) or a
``model.pt``/``checkpoint.pt``. The dataset is rebuilt from the run's own config (data root from
``INVTRANSFER_DATA``) and must have the run's fingerprint.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from invtransfer.config import from_dict
from invtransfer.data import batches, datasets
from invtransfer.data.datasets import DatasetConfig
from invtransfer.errors import InvTransferError
from invtransfer.train.inference import load_classifier, predict_logits


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


def per_class(pred: np.ndarray, y: np.ndarray, mask: np.ndarray, n_classes: int) -> list[dict]:
    rows = []
    for c in range(n_classes):
        sel = (y == c) & mask
        rows.append({"class": c, "images": int(sel.sum()),
                     "accuracy": float((pred[sel] == c).mean() * 100) if sel.any() else None})
    return rows


def measure(run: str, exact_npz: str) -> dict:
    model, meta = load_classifier(run, "cpu")
    ds = datasets.build_dataset(from_dict(DatasetConfig, meta["config"]["data"]))
    if ds.fingerprint != meta["fingerprint"]:
        raise InvTransferError(f"the dataset rebuilt for {run} has fingerprint {ds.fingerprint}, but the "
                               f"classifier was trained on {meta['fingerprint']}.")
    mask = exact_mask(ds.x_test, exact_npz)
    images = batches.to_device_images(ds.x_test, torch.device("cpu"))
    with torch.no_grad():
        pred = predict_logits(model, images, batches.Normalizer(**meta["normalizer"]), batch_size=500).argmax(1)
    pred, y, n = pred.numpy(), ds.y_test, len(meta["class_names"])
    out = {"run": run, "selected_weights": meta["selected_weights"], "train_class_counts": meta["train_class_counts"]}
    for part, m in (("exact", mask), ("jpeg", ~mask)):
        classes = per_class(pred, y, m, n)
        accs = [r["accuracy"] for r in classes if r["accuracy"] is not None]
        out[part] = {"images": int(m.sum()), "accuracy": float((pred[m] == y[m]).mean() * 100),
                     "balanced_accuracy": float(np.mean(accs)), "per_class": classes}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", help="classifier run directories (or model.pt / checkpoint.pt)")
    ap.add_argument("--exact-npz", required=True, help="cifar10_lossless_subset.npz (x_test: the exact test images)")
    ap.add_argument("--json", help="also write the measurements to this file")
    a = ap.parse_args(argv)
    try:
        results = [measure(r, a.exact_npz) for r in a.runs]
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
