"""invtransfer.invariance.ekld: the measurement of `invtransfer invariance`, on any model and images
as the user has them."""

import numpy as np
import pytest
import torch

from conftest import make_images
from git_reference_setup import write_generator
from invtransfer.data.batches import Normalizer
from invtransfer.errors import InvTransferError
from invtransfer.git import load_generator
from invtransfer.invariance import ekld, plot_ekld_vs_class_size
from invtransfer.metrics.invariance import measure_invariance, true_transform


def small_model(seed=0, channels=1):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(channels, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
                               torch.nn.Flatten(), torch.nn.Linear(16, 4))


@pytest.fixture
def held_out():
    x, y = make_images(6, size=12, seed=3)  # uint8 NHWC, 4 classes
    return torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), y


SIZES = [40, 20, 8, 4]


def test_ekld_equals_measure_invariance_on_the_same_inputs(held_out):
    x, y = held_out
    model = small_model()
    norm = Normalizer([0.2], [0.3])
    xn = norm(x)

    def jitter(t, g):  # any transform of the images as given
        return t + 0.3 * torch.randn(t.shape, generator=g)

    kw = dict(images_per_class=3, draws=5, seed=4)
    want = measure_invariance(model, xn, y, SIZES, jitter, transform_name="jitter", **kw)
    got = ekld(model, xn, y, jitter, normalize=lambda t: t, class_sizes=SIZES, **kw)
    assert got == want
    # uint8 images with a normalisation and a named true transform: the same numbers as the CLI's
    # path (normalised images, the transform through the normaliser), up to float rounding
    want = measure_invariance(model, xn, y, SIZES, true_transform("bg", norm), transform_name="bg", **kw)
    got = ekld(model, x, y, "bg", normalize=norm, class_sizes=SIZES, **kw)
    assert [p["class"] for p in got["per_class"]] == [0, 1, 2, 3]
    assert [p["ekld"] for p in got["per_class"]] == pytest.approx([p["ekld"] for p in want["per_class"]], rel=1e-4)
    assert got["spearman_rho"] == pytest.approx(want["spearman_rho"])
    assert max(p["ekld"] for p in got["per_class"]) > 0
    # float images in [0, 1] are the same images
    flt = ekld(model, x.float() / 255, y, "bg", normalize=lambda t: norm(t * 255), class_sizes=SIZES, **kw)
    assert [p["ekld"] for p in flt["per_class"]] == pytest.approx([p["ekld"] for p in got["per_class"]], rel=1e-4)


def test_ekld_is_zero_for_a_model_that_ignores_its_input(held_out):
    x, y = held_out

    class Constant(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.logits = torch.nn.Parameter(torch.tensor([0.5, -1.0, 2.0, 0.0]))

        def forward(self, t):
            return self.logits.expand(t.shape[0], -1)

    res = ekld(Constant(), x, y, "rot", class_sizes=SIZES, images_per_class=4, draws=3)
    assert all(p["ekld"] == 0 and p["consistency"] == 1 for p in res["per_class"])
    assert res["mean_ekld"] == 0 and res["spearman_rho"] is None  # undefined for a constant eKLD


def test_ekld_without_class_sizes_has_no_trend_and_restores_the_mode(held_out, tmp_path):
    x, y = held_out
    model = small_model().train()
    res = ekld(model, x.numpy(), y, "dil", images_per_class=2, draws=2)
    assert model.training  # put back as it was
    assert [p["class_size"] for p in res["per_class"]] == [None] * 4
    assert res["spearman_rho"] is None and res["mean_ekld_smallest_third"] is None
    with pytest.raises(InvTransferError, match="class_sizes="):
        plot_ekld_vs_class_size(res)
    sized = ekld(model, x, y, "dil", class_sizes=SIZES, images_per_class=2, draws=2)
    fig = plot_ekld_vs_class_size([sized, sized], ["a", "b"], path=tmp_path / "e.png")
    assert (tmp_path / "e.png").stat().st_size > 0 and len(fig.axes[0].lines) == 2


def test_ekld_under_a_loaded_generator(tmp_path):
    x, y = make_images(3, size=16, seed=3)
    x = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    gen = load_generator(write_generator(tmp_path / "g.pt", size=16))
    model = small_model()
    norm = Normalizer([0.2], [0.3])
    kw = dict(images_per_class=2, draws=2, seed=1)
    got = ekld(model, x, y, gen, normalize=norm, class_sizes=SIZES, **kw)
    want = measure_invariance(model, norm(x), y, SIZES, lambda t, g: gen(t, norm.mean, norm.std, g), **kw)
    assert [p["ekld"] for p in got["per_class"]] == pytest.approx([p["ekld"] for p in want["per_class"]], rel=1e-3)
    by_path = ekld(model, x, y, f"generator:{tmp_path / 'g.pt'}", normalize=norm, class_sizes=SIZES, **kw)
    assert [p["ekld"] for p in by_path["per_class"]] == [p["ekld"] for p in got["per_class"]]


def test_ekld_bad_input(held_out):
    x, y = held_out
    model = small_model()
    with pytest.raises(InvTransferError, match="not one of rot, bg, dil"):
        ekld(model, x, y, "blur")
    with pytest.raises(InvTransferError, match="24 images but 3 labels"):
        ekld(model, x, y[:3], "rot")
    with pytest.raises(InvTransferError, match=r"\(N, C, H, W\)"):
        ekld(model, x[0], y, "rot")
    with pytest.raises(InvTransferError, match="uint8 .* or float"):
        ekld(model, x.long(), y, "rot")
    with pytest.raises(InvTransferError, match="draws must be an integer >= 1"):
        ekld(model, x, y, "rot", draws=0)
    with pytest.raises(InvTransferError, match="labels must lie in 0..1"):
        ekld(model, x, y, "rot", class_sizes=[5, 5])
    with pytest.raises(InvTransferError, match="class 3 has no held-out images"):
        ekld(model, x[y != 3], y[y != 3], "rot", num_classes=4)
    assert np.isfinite(ekld(model, x, y, "rot", images_per_class=1, draws=1)["mean_ekld"])
