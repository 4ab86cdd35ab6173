"""Strong batch augmentation: kornia's auto-augmentation policies, mixup and CutMix, seeded per step.

These act on a whole composed training batch, after crop/flip (:mod:`invtransfer.data.batches`)
and after GIT has written its generated rows, in this order:

1. **Policy** (``augment.policy``): RandAugment (Cubuk et al. 2020), AutoAugment (Cubuk et al.
   2019, with one of kornia's learned policies: ``cifar10``, ``svhn`` or ``imagenet``) or
   TrivialAugment (Mueller & Hutter 2021), as implemented by ``kornia.augmentation.auto``. Kornia
   draws the operations once per call for all the images it is given (only probabilities and
   magnitudes are drawn per image); the papers draw them per image. So the batch is cut into
   groups of ``group`` consecutive rows and each group is one call with its own draw: a batch of
   128 in groups of 16 sees 8 independent draws of operations. Batches are in random order, so a
   group is a random set of images. The policies see 8-bit images (pixels rounded to 1/255),
   as the papers' PIL implementations do: posterize, solarize and equalize are defined on them.
   Grey images are augmented as RGB images with three equal channels, and stay grey.
2. **Mixing** (``augment.mixup=alpha``, ``augment.cutmix=alpha``): each row ``i`` is mixed with
   row ``partner[i]`` of a random permutation of the batch, with ``lam ~ Beta(alpha, alpha)``
   drawn once per batch. Mixup (Zhang et al. 2018): ``lam * x_i + (1 - lam) * x_partner``.
   CutMix (Yun et al. 2019): a box of area ``(1 - lam) * H * W`` at a uniform centre, clipped
   at the border, is taken from the partner, and ``lam`` is recomputed from the clipped box as
   the exact fraction of the row's own pixels. With both set, each step is mixup or CutMix
   with probability 1/2. The targets become :class:`MixedTargets`; every loss of
   :mod:`invtransfer.train.losses` takes them.

Determinism: every draw comes from :func:`batches.step_generator` of ``(seed, epoch, step)`` with
stream :data:`STREAM`, made on the CPU for the global batch, so a step's augmentation is the same
on resume, on every device count, and does not move the draws of crop/flip (stream 1) or GIT
(stream 2). Kornia draws from torch's global random generators; :meth:`Policy.__call__` runs it
inside :func:`torch.random.fork_rng`, seeded per group from the step's seed, so kornia's draws
are fixed by the step and the global generators are left as they were.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from invtransfer.errors import InvTransferError

POLICIES = ("none", "randaugment", "autoaugment", "trivialaugment")
AUTOAUGMENT_POLICIES = ("cifar10", "svhn", "imagenet")  # kornia's learned AutoAugment policies
MIXES = ("mixup", "cutmix")
#: The :func:`batches.step_generator` stream of the batch-level augmentation (1: crop/flip, 2: GIT).
STREAM = 3


def _seed_of(*key: int) -> int:
    """A 63-bit seed for torch.manual_seed from integers; distinct keys give unrelated seeds."""
    return int(np.random.SeedSequence(list(key)).generate_state(1, np.uint64)[0] >> 1)


def _kornia_policy(name: str, randaugment_n: int, randaugment_m: int, autoaugment_policy: str) -> torch.nn.Module:
    try:
        from kornia.augmentation import auto
    except ImportError as e:  # kornia is a dependency; an old one lacks the auto policies
        raise InvTransferError(f"config key 'augment.policy'={name!r} needs kornia >= 0.7 with "
                               f"kornia.augmentation.auto ({e}); pip install -U kornia.") from None
    if name == "randaugment":
        return auto.RandAugment(n=randaugment_n, m=randaugment_m)
    if name == "autoaugment":
        return auto.AutoAugment(policy=autoaugment_policy)
    return auto.TrivialAugment()


class Policy:
    """A kornia auto-augmentation policy applied per group of rows, its draws fixed by a seed.

    ``policy(pixels, seed)`` takes float images in [0, 1], ``(N, C, H, W)`` with C = 1 or 3, and
    returns the augmented images, float32 in [0, 1], on the same device; ``N`` may be any size.
    The same ``seed`` and images give the same output; the global random generators are not
    changed. ``randaugment_n``/``randaugment_m``: RandAugment's number of operations and magnitude
    (kornia's m in (0, 30) sets m/30 of each operation's range; 9 is torchvision's default of 9 out
    of 31 bins). ``autoaugment_policy``: which learned AutoAugment policy.
    """

    def __init__(self, name: str, *, group: int = 16, randaugment_n: int = 2, randaugment_m: int = 9,
                 autoaugment_policy: str = "cifar10") -> None:
        if name not in POLICIES or name == "none":
            raise InvTransferError(f"augmentation policy {name!r} is not one of "
                                   f"{', '.join(p for p in POLICIES if p != 'none')}.")
        if autoaugment_policy not in AUTOAUGMENT_POLICIES:
            raise InvTransferError(f"AutoAugment policy {autoaugment_policy!r} is not one of "
                                   f"{', '.join(AUTOAUGMENT_POLICIES)} (kornia's learned policies).")
        if group < 1:
            raise InvTransferError(f"augment.policy_group must be >= 1, got {group}.")
        self.name, self.group = name, int(group)
        self.module = _kornia_policy(name, randaugment_n, randaugment_m, autoaugment_policy)

    def __call__(self, pixels: Tensor, seed: int) -> Tensor:
        if pixels.dim() != 4 or pixels.shape[1] not in (1, 3):
            raise InvTransferError(f"augmentation policy {self.name!r} takes (N, C, H, W) images with 1 or 3 "
                                   f"channels, got shape {tuple(pixels.shape)}.")
        grey = pixels.shape[1] == 1
        x = pixels.float().expand(-1, 3, -1, -1) if grey else pixels.float()
        device = x.device
        forked = [device] if device.type == "cuda" else []
        out = []
        with torch.random.fork_rng(devices=forked, device_type=device.type if forked else "cuda"):
            for i, part in enumerate(x.split(self.group)):
                torch.manual_seed(_seed_of(seed, i))
                out.append(self.module(part))
        y = torch.cat(out).clamp(0.0, 1.0) if out else x
        return y[:, :1].contiguous() if grey else y

    def __repr__(self) -> str:
        return f"Policy({self.name!r}, group={self.group})"


@dataclass(frozen=True)
class MixedTargets:
    """Labels of a mixed batch: row ``i`` is ``lam`` of an image of class ``a[i]`` and ``1 - lam``
    of one of class ``b[i]``.

    A loss of such a batch is ``lam * loss(logits, a) + (1 - lam) * loss(logits, b)`` (see
    :class:`invtransfer.train.losses.LongTailLoss`); :meth:`soft` gives the equivalent
    probability targets of cross entropy.
    """

    a: Tensor  # (N,) int64
    b: Tensor  # (N,) int64
    lam: float

    def __len__(self) -> int:
        return len(self.a)

    def terms(self) -> tuple[tuple[Tensor, float], tuple[Tensor, float]]:
        """``((a, lam), (b, 1 - lam))``: each label set with the weight of its term."""
        return (self.a, self.lam), (self.b, 1.0 - self.lam)

    def soft(self, num_classes: int) -> Tensor:
        """(N, num_classes) float32 targets ``lam * onehot(a) + (1 - lam) * onehot(b)``; rows sum to 1."""
        eye = torch.eye(num_classes, device=self.a.device)
        return self.lam * eye[self.a] + (1.0 - self.lam) * eye[self.b]

    def to(self, device: str | torch.device) -> MixedTargets:
        return MixedTargets(self.a.to(device), self.b.to(device), self.lam)


@dataclass(frozen=True)
class MixDraw:
    """One batch's mixing decision (CPU): ``kind``, ``lam``, the partner of each row, CutMix's box."""

    kind: str  # "mixup" or "cutmix"
    lam: float  # weight of each row's own image and label
    partner: Tensor  # (n,) int64: row i is mixed with row partner[i]
    box: tuple[int, int, int, int] | None = None  # CutMix: (top, bottom, left, right) taken from the partner

    def images(self, x: Tensor, rows: tuple[int, int] | None = None) -> Tensor:
        """Rows ``[start, stop)`` (default all) of the mixed batch; ``x`` is the whole batch."""
        start, stop = rows if rows is not None else (0, x.shape[0])
        if x.shape[0] != len(self.partner):
            raise InvTransferError(f"mixing was drawn for a batch of {len(self.partner)} rows, got {x.shape[0]}.")
        own = x[start:stop]
        other = x[self.partner[start:stop].to(x.device)]
        if self.kind == "mixup":
            return self.lam * own + (1.0 - self.lam) * other
        top, bottom, left, right = self.box
        out = own.clone()
        out[:, :, top:bottom, left:right] = other[:, :, top:bottom, left:right]
        return out

    def targets(self, labels: Tensor, rows: tuple[int, int] | None = None) -> MixedTargets:
        """The :class:`MixedTargets` of rows ``[start, stop)``; ``labels`` are the whole batch's."""
        start, stop = rows if rows is not None else (0, len(labels))
        return MixedTargets(labels[start:stop], labels[self.partner[start:stop].to(labels.device)], self.lam)


def _beta(alpha: float, g: torch.Generator) -> float:
    """One draw of Beta(alpha, alpha) from ``g`` (torch's Beta has no generator argument)."""
    rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=g)))
    return float(rng.beta(alpha, alpha))


def draw_mix(n: int, height: int, width: int, mixup: float, cutmix: float, g: torch.Generator) -> MixDraw | None:
    """Mixing of an ``n``-row batch of ``height`` x ``width`` images from ``g``; None when both alphas are 0."""
    if mixup < 0 or cutmix < 0 or not (math.isfinite(mixup) and math.isfinite(cutmix)):
        raise InvTransferError(f"augment.mixup and augment.cutmix must be finite and >= 0, got {mixup} and {cutmix}.")
    if mixup == 0 and cutmix == 0:
        return None
    if mixup > 0 and cutmix > 0:
        kind = "cutmix" if float(torch.rand((), generator=g)) < 0.5 else "mixup"
    else:
        kind = "mixup" if mixup > 0 else "cutmix"
    lam = _beta(mixup if kind == "mixup" else cutmix, g)
    partner = torch.randperm(n, generator=g)
    if kind == "mixup":
        return MixDraw(kind, lam, partner)
    # Yun et al.'s box: sides sqrt(1 - lam) of the image's, centre uniform, clipped at the border;
    # lam is then the exact share of the row's own pixels.
    cut = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * cut), int(width * cut)
    cy = int(torch.randint(0, height, (1,), generator=g))
    cx = int(torch.randint(0, width, (1,), generator=g))
    top, bottom = min(max(cy - cut_h // 2, 0), height), min(max(cy + cut_h // 2, 0), height)
    left, right = min(max(cx - cut_w // 2, 0), width), min(max(cx + cut_w // 2, 0), width)
    lam = 1.0 - (bottom - top) * (right - left) / (height * width)
    return MixDraw(kind, lam, partner, (top, bottom, left, right))


@dataclass(frozen=True)
class BatchDraw:
    """The batch-level augmentation draws of one step: the policy's seed and the mixing."""

    policy_seed: int | None = None
    mix: MixDraw | None = None


class BatchAugment:
    """Policy, then mixing, of a composed (normalised) training batch; see the module docstring.

    ``draw(n, height, width, g)`` makes a step's decisions from its generator on the CPU;
    ``images(x, draw, normalizer)`` applies them to the whole batch ``x`` and returns rows
    ``rows`` of the result; ``targets(labels, draw)`` gives their labels (a :class:`MixedTargets`
    when mixing, else the labels unchanged). ``normalizer`` maps pixels 0..255 to the batch's
    normalisation (``__call__``) and back (``to_pixels``).
    """

    def __init__(self, policy: Policy | None = None, mixup: float = 0.0, cutmix: float = 0.0) -> None:
        draw_mix(2, 2, 2, mixup, cutmix, torch.Generator())  # checks the alphas
        self.policy, self.mixup, self.cutmix = policy, float(mixup), float(cutmix)

    @property
    def active(self) -> bool:
        return self.policy is not None or self.mixes

    @property
    def mixes(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0

    def draw(self, n: int, height: int, width: int, g: torch.Generator) -> BatchDraw:
        seed = int(torch.randint(0, 2**62, (1,), generator=g)) if self.policy is not None else None
        return BatchDraw(seed, draw_mix(n, height, width, self.mixup, self.cutmix, g))

    def images(self, x: Tensor, draw: BatchDraw, normalizer, rows: tuple[int, int] | None = None) -> Tensor:
        if draw.policy_seed is not None:
            pixels = normalizer.to_pixels(x).round().clamp(0.0, 255.0) / 255.0  # 8-bit images
            x = normalizer(self.policy(pixels, draw.policy_seed) * 255.0)
        if draw.mix is not None:
            return draw.mix.images(x, rows)
        return x if rows is None else x[rows[0]:rows[1]]

    @staticmethod
    def targets(labels: Tensor, draw: BatchDraw, rows: tuple[int, int] | None = None) -> Tensor | MixedTargets:
        if draw.mix is not None:
            return draw.mix.targets(labels, rows)
        return labels if rows is None else labels[rows[0]:rows[1]]
