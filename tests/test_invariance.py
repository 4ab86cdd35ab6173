"""eKLD and consistency: zero for invariant cases, positive otherwise (the CLI on a trained run:
test_cli.py)."""

import numpy as np
import pytest
import torch

from invtransfer.data.batches import Normalizer
from invtransfer.metrics import invariance


class ConstantModel(torch.nn.Module):
    """Ignores its input: perfectly invariant."""

    def __init__(self, k=4):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.randn(k))

    def forward(self, x):
        return self.logits.expand(x.shape[0], -1)


class PixelSumModel(torch.nn.Module):
    """Logits depend on total brightness: not invariant to BG."""

    def forward(self, x):
        s = x.flatten(1).mean(1, keepdim=True)
        return torch.cat([s, -s, 2 * s, torch.zeros_like(s)], 1) * 3


def data(n=30, k=4):
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(n * k, 1, 8, 8)
    x[:, :, 2:6, 2:6] = torch.rand(n * k, 1, 1, 1, generator=g) * 200 + 50
    return x, np.repeat(np.arange(k), n)


NORM = Normalizer([0.2], [0.3])


def test_ekld_zero_for_input_ignoring_model():
    x, y = data()
    res = invariance.measure_invariance(ConstantModel(), NORM(x), y, [100, 50, 10, 5],
                                        invariance.true_transform("bg", NORM), images_per_class=10, draws=20)
    assert all(p["ekld"] == pytest.approx(0, abs=1e-7) for p in res["per_class"])
    assert all(p["consistency"] == 1.0 for p in res["per_class"])


def test_ekld_zero_for_identity_transform():
    x, y = data()
    res = invariance.measure_invariance(PixelSumModel(), NORM(x), y, [100, 50, 10, 5],
                                        invariance.identity_transform, images_per_class=10, draws=5)
    assert max(p["ekld"] for p in res["per_class"]) == pytest.approx(0, abs=1e-6)
    assert res["mean_consistency"] == 1.0


def test_ekld_positive_for_non_invariant_model_and_matches_direct_formula():
    x, y = data()
    xn = NORM(x)
    tf = invariance.true_transform("bg", NORM)
    res = invariance.measure_invariance(PixelSumModel(), xn, y, [100, 50, 10, 5], tf, images_per_class=6,
                                        draws=7, seed=3, batch_size=12)
    assert all(p["ekld"] > 1e-4 for p in res["per_class"])
    # direct computation for class 0, same draws: images 0..5 of class 0, chunks of 2 draws
    m = PixelSumModel()
    xc = xn[np.flatnonzero(y == 0)[:6]]
    logp = torch.log_softmax(m(xc), 1)
    kls = []
    for chunk, k in enumerate([2, 2, 2, 1]):
        g = invariance.step_generator(3, 0, chunk, stream=7)
        logq = torch.log_softmax(m(tf(xc.repeat(k, 1, 1, 1), g)), 1)
        lp = logp.repeat(k, 1)
        kls.append((lp.exp() * (lp - logq)).sum(1))
    assert res["per_class"][0]["ekld"] == pytest.approx(float(torch.cat(kls).mean()), rel=1e-5)
    assert set(res) >= {"transform", "draws", "images_per_class", "per_class", "spearman_rho", "spearman_p",
                        "mean_ekld_smallest_third"}


def test_progress_bar_only_on_request_and_same_numbers(capsys):
    x, y = data()
    args = (PixelSumModel(), NORM(x), y, [100, 50, 10, 5], invariance.true_transform("bg", NORM))
    quiet = invariance.measure_invariance(*args, images_per_class=5, draws=4)
    assert capsys.readouterr().err == ""
    shown = invariance.measure_invariance(*args, images_per_class=5, draws=4, progress=True)
    assert "eKLD (custom)" in capsys.readouterr().err and shown == quiet


def test_cycling_and_smallest_third():
    idx = invariance.select_per_class(np.array([0, 1, 0, 1, 1]), 2, 4)
    assert idx.tolist() == [[0, 2, 0, 2], [1, 3, 4, 1]]
    with pytest.raises(Exception, match="no held-out images"):
        invariance.select_per_class(np.array([0, 0]), 2, 3)


