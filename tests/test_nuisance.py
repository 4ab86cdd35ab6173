"""Tests for invtransfer.data.nuisance: parameter draws and the ROT / BG / DIL transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from invtransfer.data import nuisance as nu
from invtransfer.errors import InvTransferError


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_images(n: int = 6, c: int = 1, size: int = 12, seed: int = 0) -> torch.Tensor:
    g = _gen(seed)
    x = torch.randint(0, 256, (n, c, size, size), generator=g).float()
    x[torch.rand(x.shape, generator=g) < 0.4] = 0.0  # plenty of background pixels
    return x


# --------------------------------------------------------------------------- parameters


def test_sample_rot_range():
    p = nu.sample_params("rot", 20000, _gen())
    assert p.shape == (20000,) and p.is_floating_point()
    assert p.min() >= -180 and p.max() < 180
    assert p.min() < -175 and p.max() > 175  # actually spans the range
    assert abs(p.mean().item()) < 5


def test_sample_bg_values():
    p = nu.sample_params("bg", 20000, _gen())
    assert p.dtype == torch.int64
    assert sorted(torch.unique(p).tolist()) == list(range(100))


def test_sample_dil_codes_and_probability():
    n = 20000
    p = nu.sample_params("dil", n, _gen(1))
    assert p.dtype == torch.int64
    assert set(torch.unique(p).tolist()) == {2, 3, 4, -1, -2}
    frac = (p > 0).float().mean().item()
    assert abs(frac - 0.6) < 4 * (0.6 * 0.4 / n) ** 0.5
    # sizes uniform within each branch
    dil_sizes = torch.bincount(p[p > 0])[2:].float() / (p > 0).sum()
    assert torch.all((dil_sizes - 1 / 3).abs() < 0.03)


def test_sample_seeded():
    for name in nu.NUISANCES:
        a = nu.sample_params(name, 50, _gen(3))
        assert torch.equal(a, nu.sample_params(name, 50, _gen(3)))
        assert not torch.equal(a, nu.sample_params(name, 50, _gen(4)))


def test_check_name():
    assert nu.check_name("ROT") == "rot"
    with pytest.raises(InvTransferError, match="Did you mean 'rot'"):
        nu.check_name("rotate")
    with pytest.raises(InvTransferError):
        nu.sample_params("blur", 3)
    with pytest.raises(InvTransferError, match="n must be"):
        nu.sample_params("rot", -1)


def test_apply_input_errors():
    x = torch.zeros(2, 1, 8, 8)
    with pytest.raises(InvTransferError, match="one entry per image"):
        nu.apply("bg", x, torch.tensor([1, 2, 3]))
    with pytest.raises(InvTransferError, match=r"\(N, C, H, W\)"):
        nu.apply("bg", x[0], torch.tensor([1]))
    with pytest.raises(InvTransferError, match="float"):
        nu.apply("bg", x.to(torch.uint8), torch.tensor([1, 2]))
    with pytest.raises(InvTransferError, match="kernel code"):
        nu.apply("dil", x, torch.tensor([0, 2]))
    with pytest.raises(InvTransferError, match="Did you mean 'dil'"):
        nu.apply("dilate", x, torch.tensor([2, 2]))


# --------------------------------------------------------------------------- BG


def test_bg_fills_only_zero_pixels():
    x = _random_images(4)
    v = torch.tensor([0, 7, 50, 99])
    y = nu.apply("bg", x, v)
    zero = x == 0
    assert torch.equal(y[~zero], x[~zero])
    for i in range(4):
        assert torch.all(y[i][zero[i]] == v[i])


def test_bg_multichannel_and_threshold():
    x = torch.zeros(1, 3, 2, 2)
    x[0, 0, 0, 0] = 10.0  # one channel non-zero: not background
    x[0, :, 0, 1] = 0.3   # < 0.5 in every channel (normalisation round trip): background
    x[0, :, 1, 1] = 200.0
    y = nu.apply("bg", x, torch.tensor([42]))
    assert torch.equal(y[0, :, 0, 0], torch.tensor([10.0, 0.0, 0.0]))
    assert torch.all(y[0, :, 0, 1] == 42) and torch.all(y[0, :, 1, 0] == 42)
    assert torch.all(y[0, :, 1, 1] == 200)


# --------------------------------------------------------------------------- DIL


def _opencv_reference(img: np.ndarray, code: int) -> np.ndarray:
    """cv2.dilate / cv2.erode with default anchor (k//2) and border, written out with loops."""
    k, a = abs(code), abs(code) // 2
    h, w = img.shape
    out = np.empty_like(img)
    for y in range(h):
        for x in range(w):
            win = img[max(y - a, 0):min(y - a + k, h), max(x - a, 0):min(x - a + k, w)]
            out[y, x] = win.max() if code > 0 else win.min()
    return out


def test_dil_single_pixel_k3_square():
    x = torch.zeros(1, 1, 7, 7)
    x[0, 0, 3, 3] = 255
    expected = np.zeros((7, 7), np.float32)
    expected[2:5, 2:5] = 255
    assert np.array_equal(nu.apply("dil", x, torch.tensor([3]))[0, 0].numpy(), expected)


def test_dil_even_kernels_anchor():
    x = torch.zeros(1, 1, 7, 7)
    x[0, 0, 3, 3] = 255
    expected2 = np.zeros((7, 7), np.float32)
    expected2[3:5, 3:5] = 255  # OpenCV anchor (1, 1): grows down and right
    assert np.array_equal(nu.apply("dil", x, torch.tensor([2]))[0, 0].numpy(), expected2)
    expected4 = np.zeros((7, 7), np.float32)
    expected4[2:6, 2:6] = 255  # anchor (2, 2): one up/left, two down/right
    assert np.array_equal(nu.apply("dil", x, torch.tensor([4]))[0, 0].numpy(), expected4)
    hole = torch.full((1, 1, 7, 7), 255.0)
    hole[0, 0, 3, 3] = 0
    expected_e = np.full((7, 7), 255, np.float32)
    expected_e[3:5, 3:5] = 0  # erosion grows a dark pixel down and right too
    assert np.array_equal(nu.apply("dil", hole, torch.tensor([-2]))[0, 0].numpy(), expected_e)


def test_dil_matches_opencv_reference_and_borders():
    x = _random_images(5, size=9, seed=2)
    codes = torch.tensor([2, 3, 4, -2, -1])
    y = nu.apply("dil", x, codes)
    for i, code in enumerate(codes.tolist()):
        assert np.array_equal(y[i, 0].numpy(), _opencv_reference(x[i, 0].numpy(), code)), code
    flat = torch.full((2, 1, 6, 6), 77.0)  # outside pixels must never win at the border
    assert torch.equal(nu.apply("dil", flat, torch.tensor([4, -2])), flat)


def test_dil_monotone_and_identity():
    x = _random_images(8, c=2, seed=5)
    codes = nu.sample_params("dil", 8, _gen(9))
    y = nu.apply("dil", x, codes)
    grow, shrink = codes > 0, codes < 0
    assert torch.all(y[grow] >= x[grow]) and torch.all(y[shrink] <= x[shrink])
    assert torch.equal(nu.apply("dil", x, torch.full((8,), -1)), x)


# --------------------------------------------------------------------------- ROT


def _pattern(size: int = 11) -> torch.Tensor:
    g = torch.Generator().manual_seed(11)
    return (torch.rand(1, 1, size, size, generator=g) * 255).float()


def test_rot_shape_and_zero_angle():
    x = _random_images(3, c=3, size=10)
    y = nu.apply("rot", x, torch.tensor([0.0, 33.0, -150.0]))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.allclose(y[0], x[0], atol=1e-3)
    assert y.min() >= 0 and y.max() <= 255  # bicubic overshoot clamped


def test_rot_90_is_counter_clockwise():
    x = _pattern()
    y = nu.apply("rot", x, torch.tensor([90.0]))[0, 0].numpy()
    ccw = np.rot90(x[0, 0].numpy(), k=1)  # np.rot90 k=1 turns counter-clockwise as displayed
    assert np.allclose(y[2:-2, 2:-2], ccw[2:-2, 2:-2], atol=0.05)
    cw = np.rot90(x[0, 0].numpy(), k=-1)
    assert not np.allclose(y[2:-2, 2:-2], cw[2:-2, 2:-2], atol=1.0)


def test_rot_180_twice_identity():
    x = _pattern(12)
    once = nu.apply("rot", x, torch.tensor([180.0]))
    twice = nu.apply("rot", once, torch.tensor([180.0]))
    assert torch.allclose(twice[..., 2:-2, 2:-2], x[..., 2:-2, 2:-2], atol=0.05)


def test_rot_general_angle_moves_mass_around_centre():
    x = torch.zeros(1, 1, 21, 21)
    x[0, 0, 10, 16] = 255  # right of centre
    y = nu.apply("rot", x, torch.tensor([90.0]))
    assert y[0, 0, 4, 10] > 250  # now above the centre (counter-clockwise)
    y30 = nu.apply("rot", x, torch.tensor([30.0]))[0, 0]
    r, c = divmod(int(y30.argmax()), 21)
    assert (r, c) == (10 - 3, 10 + 5)  # 6 px at 30 degrees: (-6 sin 30, 6 cos 30) ~ (-3, 5.2)


# --------------------------------------------------------------------------- batching and uint8


@pytest.mark.parametrize("name", nu.NUISANCES)
def test_batched_equals_per_sample(name):
    x = _random_images(6, c=2, size=10, seed=7)
    params = nu.sample_params(name, 6, _gen(8))
    if name == "dil":
        params = torch.tensor([2, 3, 4, -1, -2, 3])
    batched = nu.apply(name, x, params)
    single = torch.cat([nu.apply(name, x[i:i + 1], params[i:i + 1]) for i in range(6)])
    assert torch.allclose(batched, single, atol=1e-4)


@pytest.mark.parametrize("name", nu.NUISANCES)
def test_transform_uint8(name):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (7, 10, 10, 1), dtype=np.uint8)
    imgs[imgs < 90] = 0
    params = nu.sample_params(name, 7, _gen(1))
    out = nu.transform_uint8(name, imgs, params, batch_size=3)
    assert out.dtype == np.uint8 and out.shape == imgs.shape
    ref = nu.apply(name, torch.from_numpy(imgs).permute(0, 3, 1, 2).float(), params)
    ref = ref.round().clamp(0, 255).permute(0, 2, 3, 1).numpy().astype(np.uint8)
    assert np.array_equal(out, ref)  # chunking changes nothing; rounding, not truncation


def test_transform_uint8_rounds():
    imgs = np.full((1, 8, 8, 1), 100, np.uint8)
    imgs[0, 2:6, 2:6] = 0
    out = nu.transform_uint8("rot", imgs, torch.tensor([45.0]))
    ref = nu.apply("rot", torch.from_numpy(imgs).permute(0, 3, 1, 2).float(), torch.tensor([45.0]))
    frac = ref - ref.floor()
    assert (frac > 0.5).any()  # the check below would not see truncation otherwise
    assert np.array_equal(out[..., 0], ref[:, 0].round().numpy().astype(np.uint8))


def test_transform_uint8_errors():
    with pytest.raises(InvTransferError, match="uint8"):
        nu.transform_uint8("bg", np.zeros((2, 4, 4, 1), np.float32), torch.tensor([1, 2]))
    with pytest.raises(InvTransferError, match=r"\(N, H, W, C\)"):
        nu.transform_uint8("bg", np.zeros((2, 4, 4), np.uint8), torch.tensor([1, 2]))
    with pytest.raises(InvTransferError, match="one entry per image"):
        nu.transform_uint8("bg", np.zeros((2, 4, 4, 1), np.uint8), torch.tensor([1]))
