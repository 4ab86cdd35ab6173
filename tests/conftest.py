"""Shared fixtures: tiny datasets the tests write themselves (never the real data)."""

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test builds datasets into its own cache and sees no user data roots."""
    monkeypatch.setenv("INVTRANSFER_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("INVTRANSFER_DATA", raising=False)


def make_images(n_per_class, num_classes=4, size=12, channels=1, seed=0):
    """Class-dependent bright squares on a zero background, so a tiny net can learn them."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for c in range(num_classes):
        x = np.zeros((n_per_class, size, size, channels), np.uint8)
        r0 = 1 + (c * 3) % (size - 4)
        x[:, r0:r0 + 3, 2:size - 2, :] = rng.integers(150, 255, (n_per_class, 1, 1, channels))
        x += rng.integers(0, 20, x.shape).astype(np.uint8) * (x > 0)
        xs.append(x)
        ys.append(np.full(n_per_class, c))
    x, y = np.concatenate(xs), np.concatenate(ys).astype(np.int64)
    order = rng.permutation(len(y))
    return x[order], y[order]


@pytest.fixture
def tiny_npz(tmp_path):
    """A generic-npz dataset: 4 classes, 60 train / 15 test images per class, 12x12 grey."""
    x_train, y_train = make_images(60, seed=1)
    x_test, y_test = make_images(15, seed=2)
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
             class_names=np.array(["a", "b", "c", "d"]))
    return path


def tiny_data_overrides(npz_path, **extra):
    """Dataset options that turn a K49-style preset into a tiny long-tailed set from tiny_npz."""
    d = {"name": "fmnist-dil-lt", "source": "npz", "npz_file": str(npz_path), "profile": "list",
         "counts": [40, 20, 8, 4], "class_order": "index"}
    d.update(extra)
    return d
