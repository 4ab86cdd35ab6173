"""Device-resident data, seeded samplers and batched augmentation.

The whole training set lives on the training device as one uint8 tensor (N, C, H, W); a batch is
an index tensor into it. Every random choice of a step (which examples, crop offsets, flips,
oracle transform draws) comes from a generator seeded by ``(seed, epoch, step, stream)``, so a
run can stop at any step and resume bit for bit without saving RNG state, and the samples of an
epoch do not depend on how many processes share it.

Augmentation is batched tensor ops: zero-padded random crop (padding in pixel space, before
normalisation, as the reference torchvision pipeline does), horizontal flip, the true synthetic
nuisance for oracle training, then per-channel normalisation with the training set's mean/std.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from invtransfer.data import nuisance as nuisance_ops

SAMPLERS = ("uniform", "balanced")
AUGMENTATIONS = ("none", "crop_flip", "crop")


def step_generator(seed: int, epoch: int, step: int, stream: int = 0, device: str | torch.device = "cpu") -> torch.Generator:
    """A generator for one step (>= -1; -1 = the epoch's sampler) of one stream; distinct keys never collide."""
    g = torch.Generator(device=device)
    g.manual_seed(int(np.random.SeedSequence([seed, epoch, step + 1, stream]).generate_state(1, np.uint64)[0] >> 1))
    return g


def channel_stats(x_uint8_nhwc: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of a uint8 image array, in [0, 1] units."""
    x = x_uint8_nhwc.reshape(-1, x_uint8_nhwc.shape[-1]).astype(np.float64) / 255.0
    return x.mean(0).tolist(), np.maximum(x.std(0), 1e-6).tolist()


def to_device_images(x_uint8_nhwc: np.ndarray, device: str | torch.device) -> torch.Tensor:
    """uint8 (N, H, W, C) numpy -> uint8 (N, C, H, W) tensor on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(x_uint8_nhwc.transpose(0, 3, 1, 2))).to(device)


def epoch_indices(sampler: str, labels: torch.Tensor, class_counts: torch.Tensor, seed: int, epoch: int,
                  stream: int = 0) -> torch.Tensor:
    """All example indices of one epoch, in order (len == number of training examples).

    ``uniform`` is a seeded shuffle; ``balanced`` draws with replacement with per-example weight
    1 / n_c (class-balanced resampling, as DRS and the generator's streams use). Different
    ``stream`` values give independent epochs (GIT's second stream).
    """
    g = step_generator(seed, epoch, -1, stream=stream)
    n = len(labels)
    if sampler == "uniform":
        return torch.randperm(n, generator=g)
    if sampler == "balanced":
        weights = 1.0 / class_counts.double()[labels.cpu()]
        return torch.multinomial(weights, n, replacement=True, generator=g)
    raise ValueError(f"unknown sampler {sampler!r}")


def random_crop(x: torch.Tensor, padding: int, g: torch.Generator) -> torch.Tensor:
    """Zero-pad by ``padding`` and take one random crop of the original size per image (batched)."""
    n, c, h, w = x.shape
    xp = F.pad(x, (padding, padding, padding, padding))
    oy = torch.randint(0, 2 * padding + 1, (n,), generator=g).to(x.device)
    ox = torch.randint(0, 2 * padding + 1, (n,), generator=g).to(x.device)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (n, h, 1)
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, :]  # (n, 1, w)
    batch = torch.arange(n, device=x.device)[:, None, None]
    return xp.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def random_flip(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Flip each image horizontally with probability 1/2."""
    flip = (torch.rand(x.shape[0], generator=g) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(3), x)


@dataclass
class Normalizer:
    """Per-channel normalisation of pixel values (the classifier's input space)."""

    mean: list[float]  # [0, 1] units
    std: list[float]

    def _stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = torch.tensor(self.mean, device=x.device, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
        s = torch.tensor(self.std, device=x.device, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
        return m, s

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels (uint8 or float, 0..255) -> normalised float32."""
        m, s = self._stats(pixels)
        return (pixels.float() - m) / s

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised -> float pixels 0..255 (not rounded)."""
        m, s = self._stats(x)
        return x.float() * s + m


@dataclass
class Augmenter:
    """Batched training-time augmentation (and the oracle's online true transform)."""

    normalizer: Normalizer
    augment: str = "none"  # one of AUGMENTATIONS
    padding: int = 4
    oracle_nuisance: str = "none"  # the true transform, applied to every example when != "none"

    def __call__(self, images_uint8: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        x = images_uint8
        if self.oracle_nuisance != "none":
            params = nuisance_ops.sample_params(self.oracle_nuisance, x.shape[0], g).to(x.device)
            x = nuisance_ops.apply(self.oracle_nuisance, x.float(), params)
        if self.augment in ("crop", "crop_flip"):
            x = random_crop(x, self.padding, g)
        if self.augment == "crop_flip":
            x = random_flip(x, g)
        return self.normalizer(x)
