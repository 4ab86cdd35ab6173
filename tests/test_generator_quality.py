"""invtransfer.metrics.generator_quality: the diversity statistics and the whole measurement."""

import numpy as np
import pytest
import torch

from invtransfer.config import from_dict
from invtransfer.data import nuisance as nuisance_ops
from invtransfer.data.datasets import DatasetConfig
from invtransfer.errors import InvTransferError
from invtransfer.metrics import generator_quality
from invtransfer.train import classifier, generator
from test_generator import _one_thread, data_dict, npz16, tiny_cfg  # noqa: F401 (fixtures)


def test_dil_diversity_is_the_spread_of_stroke_mass():
    # draws (N=2 images, S=3 draws) whose pixel sums are known: k pixels at 255 = stroke mass k
    masses = [[1, 2, 3], [0, 0, 4]]
    draws = torch.zeros(2, 3, 1, 4, 4)
    for i, row in enumerate(masses):
        for j, k in enumerate(row):
            draws[i, j, 0].view(-1)[torch.arange(k) * 3] = 255  # spread-out stroke pixels
    draws[0, 2] = 0
    draws[0, 2, 0, 1:4, 1:3] = 127.5  # six half-intensity pixels: also mass 3
    assert [[float(d.sum() / 255) for d in row] for row in draws] == masses
    want = (np.std([1, 2, 3]) + np.std([0, 0, 4])) / 2  # population std per image, mean over images
    got = generator_quality._diversity("dil", draws, base=torch.zeros(2, 1, 4, 4))
    assert got == pytest.approx(want, rel=1e-6) and want == pytest.approx((2 / 3) ** 0.5 / 2 + 32 ** 0.5 / 6)


def test_bg_diversity_is_the_spread_of_background_intensity():
    # 3-channel 4x4 sources: image 0 has 4 foreground pixels (one bright in a single channel only),
    # image 1 has 8, image 2 no background at all (it says nothing and is left out)
    base = torch.zeros(3, 3, 4, 4)
    base[0, :, 0, :3] = 200
    base[0, 1, 3, 3] = 90  # foreground: not below the threshold in every channel
    base[1, :, :2] = 255
    base[2] = 255
    levels = [[10, 40, 70], [0, 0, 90], [5, 50, 250]]  # background level of each draw (channel mean)
    draws = torch.empty(3, 3, 3, 4, 4)
    for i, row in enumerate(levels):
        for j, v in enumerate(row):
            draws[i, j] = torch.tensor([v - 6.0, v, v + 6.0]).view(3, 1, 1)  # channels average to v
            foreground = ~(base[i] < nuisance_ops.BACKGROUND_THRESHOLD).all(0)
            draws[i, j][:, foreground] = 37.0 * (j + 1) + i  # foreground pixels must not count
    want = (np.std(levels[0]) + np.std(levels[1])) / 2  # sqrt(600) and sqrt(1800)
    got = generator_quality._diversity("bg", draws, base)
    assert got == pytest.approx(want, rel=1e-5) and want == pytest.approx((600 ** 0.5 + 1800 ** 0.5) / 2)
    # no source with a background: no statistic
    assert np.isnan(generator_quality._diversity("bg", draws[2:], base[2:]))


def test_generator_quality_with_and_without_classifier(npz16, tmp_path, capsys):
    generator.train(tiny_cfg(npz16, tmp_path))
    data_cfg = from_dict(DatasetConfig, data_dict(npz16))
    q = generator_quality.generator_quality(str(tmp_path / "gen"), data_cfg, n_per_class=3, styles=4, device="cpu")
    for k in ("class_preservation", "diversity", "reconstruction_l1", "n_images", "styles"):
        assert k in q, k
    assert q["class_preservation"] is None and "skipped" in q["note"]
    assert (q["n_images"], q["styles"]) == (12, 4) and 0 < q["reconstruction_l1"] < 2
    d = q["diversity"]
    assert d["statistic"] == "bg" and set(d) >= {"generated_std", "true_std", "ratio"}
    # the true BG draws are uniform on 0..99, so their background std is near 100 / sqrt(12)
    assert 15 < d["true_std"] < 40 and d["ratio"] == pytest.approx(d["generated_std"] / d["true_std"])
    # decoded in small batches behind a progress bar: the same numbers as one batch
    shown = generator_quality.generator_quality(str(tmp_path / "gen"), data_cfg, n_per_class=3, styles=4,
                                                device="cpu", batch_size=5, progress=True)
    assert "generator quality" in capsys.readouterr().err
    assert shown["diversity"] == pytest.approx(q["diversity"])
    assert shown["reconstruction_l1"] == pytest.approx(q["reconstruction_l1"])
    # a classifier trained on the untransformed base data (1 short epoch is enough to test the plumbing)
    clf_cfg = from_dict(classifier.TrainConfig, {
        "data": data_dict(npz16, nuisance="none"), "model": "resnet20", "augment": "none",
        "optim": {"epochs": 1, "batch_size": 32, "warmup_epochs": 0, "decay1_epoch": 0, "decay2_epoch": 1},
        "select": "last", "out_dir": str(tmp_path), "name": "clf", "quiet": True, "device": "cpu"})
    classifier.train(clf_cfg)
    q = generator_quality.generator_quality(str(tmp_path / "gen"), data_cfg, classifier_path=str(tmp_path / "clf"),
                                            n_per_class=3, styles=4, device="cpu")
    p = q["class_preservation"]
    for k in ("generated_accuracy", "true_transform_accuracy", "difference"):
        assert 0 <= abs(p[k]) <= 100, k
    assert p["difference"] == pytest.approx(p["generated_accuracy"] - p["true_transform_accuracy"])
    with pytest.raises(InvTransferError, match="is a classifier checkpoint; expected a generator"):
        generator.load_generator(str(tmp_path / "clf" / "model.pt"))
    with pytest.raises(InvTransferError, match="holds model.pt: a classifier run directory"):
        generator.load_generator(str(tmp_path / "clf"))
