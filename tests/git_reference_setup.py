"""The tiny GIT run whose batches tests/data/git_engine_reference.pt records (see
tests/data/make_git_reference.py): 16x16 grey squares, class sizes [40, 20, 8, 4], crop and flip,
GIT in epoch 2 with the threshold weighting, so some candidate slots are dropped."""

import os

import numpy as np
import torch

from conftest import make_images, tiny_data_overrides
from invtransfer.config import from_dict, to_dict
from invtransfer.data import datasets
from invtransfer.models.munit import MunitArch, MunitGenerator
from invtransfer.train.checkpoint import atomic_save


def write_npz16(path) -> str:
    x, y = make_images(60, size=16, seed=1)
    xt, yt = make_images(15, size=16, seed=2)
    np.savez(path, x_train=x, y_train=y, x_test=xt, y_test=yt)
    return str(path)


def write_generator(path, data: dict | None = None, channels: int = 1, size: int = 16) -> str:
    """A small untrained generator.pt (seeded init). With ``data`` (dataset options) it records
    that dataset's name, nuisance, instance and fingerprint, as a trained generator does."""
    arch = MunitArch(channels=channels, image_size=size, width=8, n_res=1, mlp_dim=16, disc_width=8)
    torch.manual_seed(0)
    gen = MunitGenerator(arch)
    meta: dict = {"image_shape": [channels, size, size]}
    config = None  # a trained generator.pt holds its training config, whose data is the resolved dataset
    if data is not None:
        ds = datasets.build_dataset(from_dict(datasets.DatasetConfig, data))
        meta = {"name": ds.name, "fingerprint": ds.fingerprint, "nuisance": ds.nuisance, "config": ds.config,
                "image_shape": list(ds.image_shape), "class_names": ds.class_names,
                "train_class_counts": ds.train_class_counts}
        config = {"data": ds.config}
    atomic_save({"format": "invtransfer/generator", "state": "weights", "arch": to_dict(arch),
                 "generator": gen.state_dict(), "dataset": meta, "config": config, "iteration": 7, "images_seen": 28},
                str(path))
    return str(path)


def reference_config(tmp, **top):
    from invtransfer.train import classifier

    os.makedirs(tmp, exist_ok=True)
    npz = write_npz16(os.path.join(tmp, "tiny16.npz"))
    data = tiny_data_overrides(npz)
    d = {"data": data, "model": "resnet20", "augment": "crop_flip", "crop_padding": 2, "rule": "drs",
         "optim": {"epochs": 3, "batch_size": 16, "warmup_epochs": 1, "decay1_epoch": 1, "decay2_epoch": 2},
         "git": {"generator": write_generator(os.path.join(tmp, "gen.pt"), data), "gen_frac": 0.75,
                 "weighting": "threshold", "class_size_threshold": 8},
         "out_dir": os.path.join(tmp, "runs"), "name": "ref", "quiet": True, "select": "last"}
    d.update(top)
    return from_dict(classifier.TrainConfig, d)


def reference_run(tmp, **top):
    """The run (a ClassifierRun, not set up) and its first GIT epoch."""
    from invtransfer.train import classifier

    return classifier.ClassifierRun(reference_config(tmp, **top)), 2


def write_classifier(path, data: dict, *, bias=None, mean=None, std=None, seed: int = 0) -> str:
    """A classifier model.pt (resnet20, seeded init) as ``invtransfer train`` writes it, recording the
    dataset of ``data`` (dataset options) and the normaliser ``mean``/``std`` (default: the
    dataset's channel statistics). With ``bias`` (one value per class) its last layer's weights are
    zero and its biases ``bias``: it predicts the same logits for every image."""
    from invtransfer.data import batches
    from invtransfer.models.resnet_cifar import build_model
    from invtransfer.train import classifier
    from invtransfer.train.scaffold import dataset_meta

    ds = datasets.build_dataset(from_dict(datasets.DatasetConfig, data))
    cfg = from_dict(classifier.TrainConfig, {"data": ds.config, "model": "resnet20"})
    torch.manual_seed(seed)
    model = build_model("resnet20", ds.num_classes, in_channels=ds.image_shape[0])
    if bias is not None:
        with torch.no_grad():
            model.fc.weight.zero_()
            model.fc.bias.copy_(torch.tensor(bias, dtype=torch.float32))
    m, s = batches.channel_stats(ds.x_train)
    normalizer = {"mean": list(mean if mean is not None else m), "std": list(std if std is not None else s)}
    atomic_save({"format": "invtransfer/classifier", "state": "weights", "config": to_dict(cfg),
                 "model": model.state_dict(), "dataset": dataset_meta(ds, normalizer=normalizer),
                 "selected_weights": {"which": "last", "epoch": 0, "why": "written by a test"}}, str(path))
    return str(path)
