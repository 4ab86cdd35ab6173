"""Device-resident data, seeded samplers and batched augmentation.

The whole training set lives on the training device as one uint8 tensor (N, C, H, W); a batch is
an index tensor into it. Every random choice of a step (which examples, crop offsets, flips,
oracle transform draws) comes from a generator seeded by ``(seed, epoch, step, stream)``, so a
run can stop at any step and resume bit for bit without saving RNG state, and the samples of an
epoch do not depend on how many processes share it.

Augmentation is batched tensor ops: zero-padded random crop (padding in pixel space, before
normalisation, as the reference torchvision pipeline does), horizontal flip, the true synthetic
nuisance for oracle training, then per-channel normalisation with the training set's mean/std.

Devices: every random draw is made on the CPU (the generators of :func:`step_generator` are CPU
generators), so a seed gives the same batch on every device; the small parameter tensors are
then copied to the data's device with ``non_blocking=True``, which for pageable host memory
stages the copy without waiting for the device's queue. Drawing and applying are separate
(:meth:`Augmenter.sample`, :meth:`Augmenter.apply`), so a process of a multi-process run draws
the parameters of the whole global batch and applies only its rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


def to_device(t: torch.Tensor, device: str | torch.device) -> torch.Tensor:
    """A small host tensor on ``device`` without a host-device synchronisation.

    Copies to a GPU go through pinned memory (the caching host allocator keeps the block until
    the copy has run), so they are asynchronous and safe; elsewhere this is ``t.to(device)``.
    """
    device = torch.device(device)
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def crop_offsets(n: int, padding: int, g: torch.Generator) -> torch.Tensor:
    """(n, 2) int64 crop offsets (row, column), each in 0 .. 2 * padding, drawn on the CPU."""
    oy = torch.randint(0, 2 * padding + 1, (n,), generator=g)
    ox = torch.randint(0, 2 * padding + 1, (n,), generator=g)
    return torch.stack([oy, ox], 1)


def crop_at(x: torch.Tensor, padding: int, offsets: torch.Tensor) -> torch.Tensor:
    """Zero-pad by ``padding`` and crop each image at its (row, column) offset to the original size."""
    n, c, h, w = x.shape
    xp = F.pad(x, (padding, padding, padding, padding))
    offsets = to_device(offsets, x.device)
    rows = (offsets[:, 0, None] + torch.arange(h, device=x.device))[:, :, None]  # (n, h, 1)
    cols = (offsets[:, 1, None] + torch.arange(w, device=x.device))[:, None, :]  # (n, 1, w)
    batch = torch.arange(n, device=x.device)[:, None, None]
    return xp.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def flip_where(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Flip horizontally the images whose entry of the (n,) bool ``flip`` is true."""
    return torch.where(to_device(flip, x.device)[:, None, None, None], x.flip(3), x)


def random_crop(x: torch.Tensor, padding: int, g: torch.Generator) -> torch.Tensor:
    """Zero-pad by ``padding`` and take one random crop of the original size per image (batched)."""
    return crop_at(x, padding, crop_offsets(x.shape[0], padding, g))


def random_flip(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Flip each image horizontally with probability 1/2."""
    return flip_where(x, torch.rand(x.shape[0], generator=g) < 0.5)


@dataclass
class Normalizer:
    """Per-channel normalisation of pixel values (the classifier's input space)."""

    mean: list[float]  # [0, 1] units
    std: list[float]
    # Per-device copies of the statistics: made once, so a step copies nothing from the host.
    _on_device: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def _stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.device not in self._on_device:
            m = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
            s = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
            self._on_device[x.device] = (m.to(x.device), s.to(x.device))
        return self._on_device[x.device]

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

    def sample(self, n: int, g: torch.Generator) -> AugmentParams:
        """The random draws of ``n`` images, on the CPU (nuisance, then crop rows, columns, flips)."""
        nuisance = (nuisance_ops.sample_params(self.oracle_nuisance, n, g)
                    if self.oracle_nuisance != "none" else None)
        crop = crop_offsets(n, self.padding, g) if self.augment in ("crop", "crop_flip") else None
        flip = torch.rand(n, generator=g) < 0.5 if self.augment == "crop_flip" else None
        return AugmentParams(nuisance, crop, flip)

    def apply(self, images_uint8: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        """Augmented, normalised float32 images (one row of ``params`` per image)."""
        x = images_uint8
        if params.nuisance is not None:
            x = nuisance_ops.apply(self.oracle_nuisance, x.float(), to_device(params.nuisance, x.device))
        if params.crop is not None:
            x = crop_at(x, self.padding, params.crop)
        if params.flip is not None:
            x = flip_where(x, params.flip)
        return self.normalizer(x)

    def __call__(self, images_uint8: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return self.apply(images_uint8, self.sample(images_uint8.shape[0], g))


@dataclass
class AugmentParams:
    """One batch's augmentation draws (CPU tensors, first dimension = image); ``None`` = not used."""

    nuisance: torch.Tensor | None = None  # (n,) parameters of the oracle's true transform
    crop: torch.Tensor | None = None  # (n, 2) crop offsets (row, column)
    flip: torch.Tensor | None = None  # (n,) bool

    def select(self, rows: slice | torch.Tensor) -> AugmentParams:
        """The draws of some images (a slice, a bool mask or an index tensor)."""
        return AugmentParams(*(None if t is None else t[rows] for t in (self.nuisance, self.crop, self.flip)))
