"""Classification losses for long-tailed training, and class-balanced ("effective number") weights.

This module owns the loss functions a classifier can be trained with -- cross entropy, focal
loss, LDAM (Cao et al. 2019), Balanced Softmax (Ren et al. 2020) and logit adjustment (Menon et
al. 2021) -- and :func:`effective_number_weights` (Cui et al. 2019), the per-class weights the
Reweight and DRW rules pass to a loss.

Every loss takes ``forward(logits, targets, class_weight=None)``. A per-class ``class_weight``
is applied as ``F.cross_entropy(weight=...)`` with ``reduction='mean'`` does, i.e. the weighted
mean ``sum_i w_{y_i} l_i / sum_i w_{y_i}``, as the LDAM-DRW code does -- except for the focal
loss, see :class:`FocalLoss`. Per-class constants (log class sizes, margins) are registered
buffers, so ``.to(device)`` moves them with the module.

Mixed targets (mixup, CutMix: :class:`~invtransfer.data.augment.MixedTargets`, row ``i`` made of
``lam`` of class ``a_i`` and ``1 - lam`` of class ``b_i``) are accepted by every loss as

    ``loss(z, (a, b, lam)) = lam * loss(z, a) + (1 - lam) * loss(z, b)``

with each term the loss as defined for hard labels, class weights included (each term's
weighted mean uses the weights of its own labels). What that means per loss:

* CE: equal to cross entropy with the soft targets ``lam * e_a + (1 - lam) * e_b`` (unweighted).
* Balanced Softmax / logit adjustment: the prior ``log n_j`` (``tau log pi_j``) is added to the
  *logits*, whatever the target, so the mixture equals cross entropy of the adjusted logits with
  the soft targets: the priors are on the logits, the mixing on the targets, and the two commute.
* LDAM: each term subtracts the margin of its own class from its own target logit, ``lam *
  CE(s (z - m_a e_a), a) + (1 - lam) * CE(s (z - m_b e_b), b)``. A margin is a property of a
  (label, logit) pair -- the tail class's logit must win by ``m_y`` -- so each label of the mix
  asks its own margin, weighted by its share. (Subtracting ``lam m_a e_a + (1 - lam) m_b e_b``
  inside one soft-target cross entropy would be another loss, which no paper defines.)
* Focal: each term is modulated by its own label's probability.

With ``lam`` in {0, 1} every form is the loss of the hard labels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invtransfer.data.augment import MixedTargets
from invtransfer.errors import InvTransferError, suggest


def _check_counts(class_counts: Sequence[int], what: str, allow_zero: bool) -> np.ndarray:
    counts = np.asarray(list(class_counts))
    if counts.ndim != 1 or counts.size == 0:
        raise InvTransferError(f"{what}: class_counts must be a non-empty list of per-class "
                               f"training-set sizes, got {list(class_counts)!r}.")
    if not np.issubdtype(counts.dtype, np.number) or np.any(counts != np.round(counts)):
        raise InvTransferError(f"{what}: class_counts must be whole numbers, got {counts.tolist()!r}.")
    counts = counts.astype(np.int64)
    if np.any(counts < 0):
        raise InvTransferError(f"{what}: class_counts must not be negative, got {counts.tolist()!r}.")
    if not allow_zero and np.any(counts == 0):
        empty = np.flatnonzero(counts == 0).tolist()
        raise InvTransferError(
            f"{what}: every class needs at least one training image, but class(es) {empty} have "
            f"none (class_counts={counts.tolist()!r}); this loss uses per-class sizes that are "
            f"undefined for an empty class.")
    return counts


def effective_number_weights(class_counts: Sequence[int], beta: float = 0.9999) -> torch.Tensor:
    """Class-balanced weights of Cui et al. (2019): ``(1 - beta) / (1 - beta ** n_c)``.

    Normalised to sum to the number of classes C, as the LDAM-DRW code does; ``beta = 0`` gives
    all ones. Returns a float32 tensor of shape ``(C,)``. A class with no images is an error.
    """
    if not 0.0 <= beta < 1.0:
        raise InvTransferError(f"effective_number_weights: beta must be in [0, 1), got {beta}.")
    counts = _check_counts(class_counts, "effective_number_weights", allow_zero=False)
    # float64: with beta = 0.9999 and n ~ 1, 1 - beta ** n is ~1e-4 and float32 loses digits.
    weights = (1.0 - beta) / (1.0 - np.power(beta, counts.astype(np.float64)))
    weights = weights / weights.sum() * counts.size
    return torch.tensor(weights, dtype=torch.float32)


class LongTailLoss(nn.Module):
    """Base class: a classification loss that may depend on the training class sizes.

    Class attributes: ``name`` (its key in :data:`LOSSES`, the value of ``loss.name``), ``label``
    (its name in method labels such as ``CE+DRS``), ``needs_cosine_head`` (True when the loss
    expects cosine-similarity logits in [-1, 1], i.e. LDAM, so the trainer builds the model with
    ``cosine_head=True`` unless the config says otherwise) and ``options`` (the ``loss.*`` config
    keys it takes, each with its constructor argument). Instances have ``num_classes``.
    Subclasses implement :meth:`_loss`; a loss that scales the model's outputs before its softmax
    says by how much in :meth:`logit_scale`.
    """

    name: str = ""
    label: str = ""
    needs_cosine_head: bool = False
    options: dict[str, str] = {}

    @classmethod
    def logit_scale(cls, options: dict) -> float:
        """The factor between the model's outputs and the logits whose softmax the loss trains
        (LDAM: ``s``, as cosines in [-1, 1] would give a near-uniform softmax): what a trained
        model's outputs are multiplied by wherever its probabilities are used (eKLD, the GIT
        filter, the generator's class-consistency term). ``options``: ``LossConfig.options()``."""
        return 1.0
    # With a class weight, the batch is reduced by the weighted mean sum(w_i l_i) / sum(w_i)
    # (False: a plain mean, as focal's); multi-process training needs to know which.
    weighted_mean: bool = True

    def __init__(self, class_counts: Sequence[int], *, allow_zero_counts: bool = True) -> None:
        super().__init__()
        counts = _check_counts(class_counts, f"loss {self.name!r}", allow_zero=allow_zero_counts)
        self.num_classes = int(counts.size)
        self.register_buffer("class_counts", torch.tensor(counts, dtype=torch.float32))

    def forward(self, logits: Tensor, targets: Tensor | MixedTargets, class_weight: Tensor | None = None) -> Tensor:
        """Scalar loss for ``logits`` (N, C) and integer ``targets`` (N,), or mixed targets
        (``lam * loss(a) + (1 - lam) * loss(b)``, see the module docstring).

        ``class_weight`` (C,) optionally weights each example by the weight of its class.
        """
        if logits.dim() != 2 or logits.shape[1] != self.num_classes:
            raise InvTransferError(
                f"loss {self.name!r}: expected logits of shape (N, {self.num_classes}), "
                f"got {tuple(logits.shape)}.")
        if class_weight is not None:
            if class_weight.shape != (self.num_classes,):
                raise InvTransferError(
                    f"loss {self.name!r}: class_weight must have shape ({self.num_classes},), "
                    f"got {tuple(class_weight.shape)}.")
            class_weight = class_weight.to(device=logits.device, dtype=logits.dtype)
        if isinstance(targets, MixedTargets):
            (a, lam), (b, rest) = targets.terms()
            return lam * self._loss(logits, a, class_weight) + rest * self._loss(logits, b, class_weight)
        return self._loss(logits, targets, class_weight)

    def _loss(self, logits: Tensor, targets: Tensor, class_weight: Tensor | None) -> Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}"


class CrossEntropyLoss(LongTailLoss):
    """Plain (optionally class-weighted) cross entropy."""

    name, label = "ce", "CE"

    def _loss(self, logits: Tensor, targets: Tensor, class_weight: Tensor | None) -> Tensor:
        return F.cross_entropy(logits, targets, weight=class_weight)


class FocalLoss(LongTailLoss):
    """Focal loss in the form of the LDAM-DRW code (Lin et al. 2017).

    ``l = CE(logits, y, weight=class_weight, reduction='none')``, ``p = exp(-l)``,
    ``loss = mean((1 - p) ** gamma * l)``. Two consequences of copying that form: the class
    weight enters *inside* the exponential (``p`` is ``p_y ** w_y``, not the model's
    probability ``p_y``), and the batch is reduced by a plain mean, not the weighted mean the
    other losses use. With ``gamma = 0`` and no class weight it equals cross entropy.
    """

    name, label = "focal", "Focal"
    options = {"focal_gamma": "gamma"}
    weighted_mean = False

    def __init__(self, class_counts: Sequence[int], gamma: float = 1.0) -> None:
        if gamma < 0:
            raise InvTransferError(f"loss 'focal': focal_gamma must be >= 0, got {gamma}.")
        super().__init__(class_counts)
        self.gamma = float(gamma)

    def _loss(self, logits: Tensor, targets: Tensor, class_weight: Tensor | None) -> Tensor:
        ce = F.cross_entropy(logits, targets, weight=class_weight, reduction="none")
        p = torch.exp(-ce)
        return ((1.0 - p) ** self.gamma * ce).mean()

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, gamma={self.gamma}"


class LDAMLoss(LongTailLoss):
    """Label-distribution-aware margin loss (Cao et al. 2019).

    Margins ``m_j = n_j ** (-1/4)`` rescaled so ``max_j m_j = max_margin``; the target logit
    (a cosine similarity) loses its class's margin and the result is scaled by ``s`` before a
    (weighted) cross entropy: ``CE(s * (z - m_y e_y), y, weight)``. With mixed targets each of the
    two labels asks its own margin, weighted by its share (module docstring).
    """

    name, label = "ldam", "LDAM"
    options = {"ldam_max_margin": "max_margin", "ldam_scale": "scale"}
    needs_cosine_head = True

    def __init__(self, class_counts: Sequence[int], max_margin: float = 0.5, scale: float = 30.0) -> None:
        if max_margin <= 0:
            raise InvTransferError(f"loss 'ldam': ldam_max_margin must be > 0, got {max_margin}.")
        if scale <= 0:
            raise InvTransferError(f"loss 'ldam': ldam_scale must be > 0, got {scale}.")
        super().__init__(class_counts, allow_zero_counts=False)
        margins = self.class_counts.double() ** -0.25
        margins = margins * (max_margin / margins.max())
        self.register_buffer("margins", margins.float())
        self.max_margin = float(max_margin)
        self.scale = float(scale)

    @classmethod
    def logit_scale(cls, options: dict) -> float:
        return float(options["ldam_scale"])  # the margin is a training device; the scale is the logits'

    def _loss(self, logits: Tensor, targets: Tensor, class_weight: Tensor | None) -> Tensor:
        # one_hot * margins puts m_y in the target column only; this avoids boolean indexing,
        # which torch.compile would have to treat as data-dependent.
        target_margin = F.one_hot(targets, self.num_classes).to(logits.dtype) * self.margins.to(logits.dtype)
        return F.cross_entropy(self.scale * (logits - target_margin), targets, weight=class_weight)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, max_margin={self.max_margin}, scale={self.scale}"


class BalancedSoftmaxLoss(LongTailLoss):
    """Balanced Softmax (Ren et al. 2020): ``CE(logits + log n_j, y, weight)``.

    Identical in value to :class:`LogitAdjustedLoss` with ``tau = 1``: ``log pi_j`` and
    ``log n_j`` differ by the constant ``log sum_j n_j``, which softmax ignores. Both names are
    kept because the literature uses both. With mixed targets the prior stays on the logits: the
    loss is the soft-target cross entropy of ``logits + log n_j`` (module docstring).
    """

    name, label = "balanced_softmax", "BalancedSoftmax"

    def __init__(self, class_counts: Sequence[int]) -> None:
        super().__init__(class_counts, allow_zero_counts=False)
        self.register_buffer("log_counts", torch.log(self.class_counts))

    def _loss(self, logits: Tensor, targets: Tensor, class_weight: Tensor | None) -> Tensor:
        return F.cross_entropy(logits + self.log_counts.to(logits.dtype), targets, weight=class_weight)


class LogitAdjustedLoss(LongTailLoss):
    """Logit-adjusted loss (Menon et al. 2021): ``CE(logits + tau * log pi_j, y, weight)``.

    ``pi_j = n_j / sum_k n_k`` is the training prior. With ``tau = 1`` this equals
    :class:`BalancedSoftmaxLoss` (see there).
    """

    name, label = "logit_adjust", "LogitAdjust"
    options = {"logit_adjust_tau": "tau"}

    def __init__(self, class_counts: Sequence[int], tau: float = 1.0) -> None:
        if not math.isfinite(tau):
            raise InvTransferError(f"loss 'logit_adjust': logit_adjust_tau must be finite, got {tau}.")
        super().__init__(class_counts, allow_zero_counts=False)
        self.tau = float(tau)
        log_prior = torch.log(self.class_counts.double() / self.class_counts.double().sum())
        self.register_buffer("log_prior", log_prior.float())

    def _loss(self, logits: Tensor, targets: Tensor, class_weight: Tensor | None) -> Tensor:
        adjusted = logits + self.tau * self.log_prior.to(logits.dtype)
        return F.cross_entropy(adjusted, targets, weight=class_weight)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, tau={self.tau}"


#: Every loss by name (``loss.name``): the one table that training, configs and labels read.
LOSSES: dict[str, type[LongTailLoss]] = {cls.name: cls for cls in (
    CrossEntropyLoss, FocalLoss, LDAMLoss, BalancedSoftmaxLoss, LogitAdjustedLoss)}


def build_loss(name: str, class_counts: Sequence[int], **options: float) -> LongTailLoss:
    """Build loss ``name`` (a key of :data:`LOSSES`) for a training set with the given per-class
    sizes. ``options`` are ``loss.*`` config values (``focal_gamma``, ``ldam_max_margin``,
    ``ldam_scale``, ``logit_adjust_tau``); each loss takes its own and ignores the others'."""
    if name not in LOSSES:
        raise InvTransferError(
            f"Unknown loss {name!r}; expected one of {', '.join(LOSSES)}.{suggest(name, LOSSES)}")
    known = {key for cls in LOSSES.values() for key in cls.options}
    unknown = sorted(set(options) - known)
    if unknown:
        raise InvTransferError(f"build_loss: unknown option(s) {', '.join(unknown)}; the losses take "
                               f"{', '.join(sorted(known))}.")
    cls = LOSSES[name]
    return cls(class_counts, **{arg: options[key] for key, arg in cls.options.items() if key in options})
