"""Device data, samplers and batched augmentation."""

import numpy as np
import pytest
import torch
from scipy import stats

from invtransfer.data import batches


def test_random_crop_matches_per_sample_reference():
    x = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    out = batches.random_crop(x, 2, g)
    g = torch.Generator().manual_seed(0)
    oy = torch.randint(0, 5, (6,), generator=g)
    ox = torch.randint(0, 5, (6,), generator=g)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(6):
        ref = padded[i, :, oy[i]:oy[i] + 8, ox[i]:ox[i] + 8]
        assert torch.equal(out[i], ref)
    assert out.dtype == torch.uint8 and out.shape == x.shape


def test_flip_flips_about_half_and_exactly():
    x = torch.arange(2 * 1 * 2 * 3, dtype=torch.float32).view(2, 1, 2, 3).repeat(200, 1, 1, 1)
    out = batches.random_flip(x, torch.Generator().manual_seed(1))
    flipped = (out != x).flatten(1).any(1)
    assert torch.equal(out[flipped], x[flipped].flip(3))
    assert torch.equal(out[~flipped], x[~flipped])
    assert 150 < int(flipped.sum()) < 250


def test_normalizer_round_trip_and_stats():
    x = np.random.default_rng(0).integers(0, 256, (50, 4, 4, 3), dtype=np.uint8)
    mean, std = batches.channel_stats(x)
    assert np.allclose(mean, x.reshape(-1, 3).mean(0) / 255)
    norm = batches.Normalizer(mean, std)
    t = batches.to_device_images(x, "cpu")
    z = norm(t)
    assert torch.allclose(z.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(norm.to_pixels(z), t.float(), atol=1e-3)


def test_uniform_epoch_is_a_permutation_and_seeded():
    labels = torch.tensor([0] * 90 + [1] * 9 + [2] * 1)
    counts = torch.tensor([90, 9, 1])
    a = batches.epoch_indices("uniform", labels, counts, seed=0, epoch=3)
    assert sorted(a.tolist()) == list(range(100))
    assert torch.equal(a, batches.epoch_indices("uniform", labels, counts, seed=0, epoch=3))
    assert not torch.equal(a, batches.epoch_indices("uniform", labels, counts, seed=0, epoch=4))


def test_balanced_epoch_has_uniform_class_frequencies():
    counts = [500, 100, 20, 5]
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    idx = batches.epoch_indices("balanced", labels, torch.tensor(counts), seed=0, epoch=0)
    assert len(idx) == len(labels)
    freq = np.bincount(labels[idx].numpy(), minlength=4)
    # chi-square goodness of fit against uniform: a 1/n_c sampler passes, a uniform one
    # (frequencies 500:100:20:5) would fail by hundreds of standard deviations.
    assert stats.chisquare(freq).pvalue > 0.001
    assert stats.chisquare(np.bincount(labels.numpy())).pvalue < 1e-10


def test_augmenter_oracle_applies_true_transform():
    x = torch.zeros(4, 1, 6, 6, dtype=torch.uint8)
    aug = batches.Augmenter(batches.Normalizer([0.0], [1 / 255]), augment="none", oracle_nuisance="bg")
    out = aug(x, torch.Generator().manual_seed(0))  # normalised = pixel values here
    # BG sets every zero pixel to the image's own v: each image constant, values in 0..99
    per_image = out.flatten(1)
    assert torch.all(per_image == per_image[:, :1])
    assert per_image.min() >= 0 and per_image.max() <= 99


def test_step_generators_are_independent():
    a = torch.rand(5, generator=batches.step_generator(0, 1, 2, 1))
    b = torch.rand(5, generator=batches.step_generator(0, 1, 2, 1))
    c = torch.rand(5, generator=batches.step_generator(0, 1, 3, 1))
    d = torch.rand(5, generator=batches.step_generator(0, 1, 2, 2))
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, d)


@pytest.mark.parametrize("augment", ["none", "crop", "crop_flip"])
def test_augmenter_shapes(augment):
    x = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    out = batches.Augmenter(batches.Normalizer([0.5] * 3, [0.25] * 3), augment)(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.float32
