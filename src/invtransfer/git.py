"""Generative Invariance Transfer (GIT) in your own training loop.

GIT (docs/design.md#git) replaces part of every training batch by generated images: a frozen MUNIT
generator, trained on the same long-tailed training set, redraws the nuisance (style) of images
from a second, independently drawn batch, and those images keep their own labels. Small classes
thereby see the nuisances that the large classes show.

::

    from invtransfer.git import GitMixer, load_generator

    gen = load_generator("runs/my-generator", device="cuda")         # frozen, eval mode
    mixer = GitMixer(gen, class_counts, gen_frac=0.5, seed=0, mean=MEAN, std=STD)
    for step, ((x, y), (x2, y2)) in enumerate(zip(loader, second_loader)):
        x, y = x.cuda(), y.cuda()
        if epoch >= git_epoch:
            x, y, replaced = mixer(x, y, x2.cuda(), y2, epoch=epoch, step=step)
        loss = criterion(model(x), y)

``second_loader`` is a second :class:`torch.utils.data.DataLoader` over the same training set
with the same kind of sampler as ``loader`` (class-balanced under DRS), so its batches are
independent of the main ones (``examples/train_with_git.py`` shows one).

What the mixer decides, from ``(seed, epoch, step)`` alone, on the CPU:

* the candidate slots: ``k = int(gen_frac * n)`` evenly spaced positions of an ``n``-image batch
  (``i * n // k``), not the last ``k``, so that every shard of a batch split across processes
  holds its share of generated images;
* which candidates are used: all of them with ``weighting="none"``; with ``"linear"`` the slot
  is kept with probability ``max((K - n_c) / (K - n_min), 0)`` for the class ``c`` of the
  second batch's image at that position; with ``"threshold"`` only if ``n_c <= K``;
* a random style ``s ~ N(0, I)`` per used slot.

A used slot ``i`` receives the generated version of the second batch's image ``i`` and its label;
the other rows stay as they were. When no slot is used the generator is not called.

Optionally a class filter (docs/design.md#git-filter) drops generated images whose content left
their class: a frozen reference classifier (e.g. the same long-tail method trained without GIT)
runs once over the generated images, and a slot is written only if it ranks the source class
first (``rule="top1"``, recommended) or gives it probability ``>= min_prob`` (``"prob"``); a
rejected slot keeps the main batch's real image and label::

    from invtransfer.git import load_class_filter

    keep = load_class_filter("runs/my-ce-drs", device="cuda", rule="top1")   # its own normaliser
    mixer = GitMixer(gen, class_counts, gen_frac=0.5, seed=0, mean=MEAN, std=STD, filter=keep)

Images are in any per-channel normalisation ``x = (p - mean) / std`` with pixels ``p`` in
[0, 1], stated once to the mixer (``mean=0, std=1``: images in [0, 1]). The generator runs in
inference mode under its own autocast setting (bf16 on CUDA by default), also when called
inside your ``torch.autocast`` region, and returns float32 images without gradient history
that can be trained on. Under DistributedDataParallel with a ``DistributedSampler`` each
process mixes its own batch: give each its ``rank`` so their style draws differ.
:class:`invtransfer.train.classifier.ClassifierRun` uses this mixer differently: it plans the
global batch once (:meth:`GitMixer.choose`, :meth:`GitMixer.draw_styles`) and each process
generates only its rows (:meth:`GitMixer.replace` with ``rows``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch

from invtransfer.data.batches import step_generator, to_device
from invtransfer.errors import InvTransferError
from invtransfer.models.munit import MunitGenerator
from invtransfer.train.configs import FILTER_RULES
from invtransfer.train.inference import (
    FrozenClassifier,
    NuisanceSampler,
    check_trained_on,
    load_frozen_classifier,
    trained_on_instance,
)
from invtransfer.train.inference import load_generator as _load_generator_module

__all__ = ["WEIGHTINGS", "FILTER_RULES", "FrozenGenerator", "load_generator", "keep_probability", "ClassFilter",
           "load_class_filter", "MixPlan", "MixedBatch", "GitMixer"]

WEIGHTINGS = ("none", "linear", "threshold")

# The random stream of GIT's decisions in step_generator(seed, epoch, step, stream): stream 1 is
# the main batch's augmentation in the engine, stream 2 GIT's (the engine's plans, rank 0).
_STREAM = 2
_RANK_STREAMS = 1000  # rank r > 0 draws from stream 1000 + r: never one the engine uses


class FrozenGenerator(NuisanceSampler):
    """A trained generator, frozen (eval mode, no gradients), with where it came from.

    ``gen(x, mean, std, generator)`` returns random-style decodes of the normalised batch ``x``
    in the same normalisation (``styles=`` instead of ``generator`` gives the styles, shape
    ``(N, style_dim)``). ``meta`` holds what ``generator.pt`` records: the dataset it was
    trained on (``name``, ``nuisance``, ``fingerprint``, ``config``), ``iteration``,
    ``images_seen`` and ``path``.
    """

    def __init__(self, module: MunitGenerator, meta: dict | None = None, *, chunk_size: int = 1024,
                 amp: str = "auto") -> None:
        super().__init__(module, chunk_size=chunk_size, amp=amp)
        self.meta: dict = dict(meta or {})

    @property
    def style_dim(self) -> int:
        """Length of a style code."""
        return int(self.gen.arch.style_dim)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images it takes and returns."""
        a = self.gen.arch
        return (int(a.channels), int(a.image_size), int(a.image_size))

    @property
    def path(self) -> str | None:
        """The checkpoint file it was loaded from."""
        return self.meta.get("path")

    def provenance(self) -> dict:
        """What ``results.json`` records about a generator a run used."""
        m = self.meta
        return {"path": os.path.abspath(m["path"]) if m.get("path") else None, "dataset": m.get("name"),
                "dataset_fingerprint": m.get("fingerprint"), "nuisance": m.get("nuisance"),
                "instance": trained_on_instance(m), "iteration": m.get("iteration"),
                "images_seen": m.get("images_seen")}

    def check_dataset(self, name: str, fingerprint: str, *, what: str, override: str,
                      nuisance: str | None = None, instance: int | None = None,
                      allow_other_dataset: bool = False) -> None:
        """Refuse (InvTransferError) unless the generator was trained on the dataset ``name`` with
        ``fingerprint`` (its preset, instance, nuisance and every other option, and the same source
        files), unless ``allow_other_dataset``. ``what`` names the other side in the message and
        ``override`` the switch that allows a deliberate transfer."""
        check_trained_on(self.meta, name, fingerprint, model=f"generator {self.meta.get('path') or 'the generator'}",
                         what=what, override=override, command="invtransfer train-generator", file="generator.pt",
                         advice="A generator models the nuisances of the training set it saw; train one on this "
                                "dataset",
                         nuisance=nuisance, instance=instance, allow_other_dataset=allow_other_dataset)


def load_generator(path: str | os.PathLike, device: str | torch.device = "cpu", *, chunk_size: int = 1024,
                   amp: str = "auto") -> FrozenGenerator:
    """The frozen generator of a generator run directory, its ``generator.pt`` or ``state.pt``.

    ``amp``: ``"auto"`` decodes in bf16 autocast on CUDA and float32 elsewhere, ``"bf16"`` always,
    ``"off"`` never. ``chunk_size`` images are decoded at a time. Checkpoints are read with
    ``torch.load(weights_only=True)``; a file that is not a consistent generator is an
    :class:`~invtransfer.errors.InvTransferError`.
    """
    module, meta = _load_generator_module(os.fspath(path), device)
    return FrozenGenerator(module, meta, chunk_size=chunk_size, amp=amp)


def keep_probability(weighting: str, class_counts: Sequence[int], threshold: int | None = None) -> torch.Tensor:
    """Per-class probability (float64, one entry per class) that a generated slot is used (docs/design.md#git).

    ``none``: 1. ``linear``: ``max((K - n_c) / (K - n_min), 0)``, K > n_min. ``threshold``:
    1 for ``n_c <= K``, else 0.
    """
    if weighting not in WEIGHTINGS:
        raise InvTransferError(f"GIT weighting {weighting!r} is not one of {', '.join(WEIGHTINGS)}.")
    n = torch.tensor([int(c) for c in class_counts], dtype=torch.float64)
    if len(n) == 0 or bool((n < 1).any()):
        raise InvTransferError(f"GIT needs a training count >= 1 for every class; got class_counts={list(class_counts)}.")
    if weighting == "none":
        return torch.ones_like(n)
    if threshold is None:
        raise InvTransferError(f"GIT weighting {weighting!r} needs a class-size threshold K "
                               f"(config key 'git.class_size_threshold'; e.g. 500 on CIFAR-10-LT).")
    if weighting == "threshold":
        return (n <= threshold).double()
    n_min = float(n.min())
    if threshold <= n_min:
        raise InvTransferError(f"config key 'git.class_size_threshold'={threshold} must exceed the smallest class "
                               f"size ({int(n_min)}) for linear weighting.")
    return ((threshold - n) / (threshold - n_min)).clamp_min(0.0)


class ClassFilter:
    """Keeps a generated image only where a frozen reference classifier still sees its source class.

    GIT's generated images keep their source's label; a generator that moves the content to
    another class (docs/design.md#git-filter) then trains on a wrong label. The filter runs the
    reference classifier once over the generated images of a step (nothing else) and keeps slot
    ``i`` with rule ``"top1"`` if the classifier ranks the source class ``y_i`` first, with
    ``"prob"`` if it gives it softmax probability ``>= min_prob``. A rejected slot keeps the
    real image and label of the main batch, so the batch size and the sampler's class balance
    stay as they are. ``top1`` is the recommended rule: it needs no threshold and does not
    depend on the scale of the logits, whereas a fixed probability threshold interacts with the
    classifier's calibration, which differs with class size under a long tail.

    ``classifier``: a :class:`~invtransfer.train.inference.FrozenClassifier` (its own
    normaliser; :func:`load_class_filter` loads one from a run), or any ``torch.nn.Module`` with
    its input normalisation ``mean``/``std`` (in [0, 1] pixel units). ``filter(images, labels,
    mean, std)`` takes the generated images in the caller's normalisation and returns the keep
    mask (bool, CPU, one host synchronisation).
    """

    def __init__(self, classifier: FrozenClassifier | torch.nn.Module, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, *, rule: str = "top1", min_prob: float = 0.5,
                 amp: str = "auto") -> None:
        if rule not in FILTER_RULES:
            raise InvTransferError(f"class filter rule {rule!r} is not one of {', '.join(FILTER_RULES)} (top1: the "
                                   f"reference classifier ranks the source class first; prob: gives it probability "
                                   f">= min_prob).")
        if isinstance(min_prob, bool) or not isinstance(min_prob, (int, float)) or not 0 < min_prob <= 1:
            raise InvTransferError(f"class filter min_prob must be a probability in (0, 1], got {min_prob!r}.")
        if isinstance(classifier, FrozenClassifier):
            if mean is not None or std is not None:
                raise InvTransferError("a FrozenClassifier brings its own normaliser: pass mean/std only with a "
                                       "plain torch.nn.Module.")
            self.classifier = classifier
        elif mean is None or std is None:
            raise InvTransferError("ClassFilter needs the reference classifier's input normalisation: mean and std "
                                   "(or a FrozenClassifier from invtransfer.git.load_class_filter).")
        else:
            self.classifier = FrozenClassifier(classifier, mean, std, amp=amp)
        self.rule, self.min_prob = rule, float(min_prob)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, mean: Sequence[float],
                 std: Sequence[float]) -> torch.Tensor:
        """(N,) bool CPU mask of the generated ``images`` (normalised with ``mean``/``std``) to keep,
        each judged against its source class in ``labels``."""
        if len(labels) != images.shape[0]:
            raise InvTransferError(f"class filter: {images.shape[0]} images but {len(labels)} labels.")
        if len(labels) == 0:
            return torch.zeros(0, dtype=torch.bool)
        with torch.inference_mode():
            logits = self.classifier(images, mean, std)
            target = labels.to(logits.device).long()
            if bool((target < 0).any()) or bool((target >= logits.shape[1]).any()):
                raise InvTransferError(f"class filter: labels must lie in 0..{logits.shape[1] - 1} (the reference "
                                       f"classifier's classes); got {sorted(set(labels.tolist()))}.")
            if self.rule == "top1":
                keep = logits.argmax(1) == target
            else:
                keep = logits.softmax(1).gather(1, target[:, None]).squeeze(1) >= self.min_prob
            return keep.cpu()

    def provenance(self) -> dict:
        """What ``results.json`` records about the filter: rule, threshold, reference classifier."""
        return {"rule": self.rule, "min_prob": self.min_prob if self.rule == "prob" else None,
                "classifier": self.classifier.provenance()}

    def __repr__(self) -> str:
        extra = f", min_prob={self.min_prob}" if self.rule == "prob" else ""
        return f"ClassFilter(rule={self.rule!r}{extra}, classifier={self.classifier.path or 'loaded'})"


def load_class_filter(path: str | os.PathLike, device: str | torch.device = "cpu", *, rule: str = "top1",
                      min_prob: float = 0.5, amp: str = "auto") -> ClassFilter:
    """A :class:`ClassFilter` over the frozen classifier of a classifier run directory, its
    ``model.pt`` or a ``checkpoint.pt`` (read with ``torch.load(weights_only=True)``), with that
    classifier's own normaliser. Check it against your data with
    ``filter.classifier.check_run(...)``."""
    return ClassFilter(load_frozen_classifier(os.fspath(path), device, amp=amp), rule=rule, min_prob=min_prob)


@dataclass
class MixPlan:
    """GIT's decisions for one batch (CPU tensors): which slots get generated images, their labels
    (the second batch's at those slots) and their styles."""

    slots: torch.Tensor  # (k,) int64, ascending positions in the batch
    labels: torch.Tensor  # (k,) int64
    styles: torch.Tensor  # (k, style_dim) float32

    @property
    def size(self) -> int:
        """Number of slots that get generated images."""
        return len(self.slots)

    def within(self, start: int, stop: int) -> torch.Tensor:
        """(k,) bool: the planned slots among rows ``[start, stop)`` of the batch."""
        return (self.slots >= start) & (self.slots < stop)


class MixedBatch(NamedTuple):
    """What :meth:`GitMixer.__call__` returns: unpack as ``x, y, replaced``."""

    x: torch.Tensor  # the batch with the replaced slots holding generated images
    y: torch.Tensor  # labels: the second batch's at the replaced slots
    replaced: torch.Tensor  # (k,) int64 CPU positions that were replaced


class GitMixer:
    """Replaces planned slots of a batch by generated images of a second batch (module docstring).

    ``generator``: a :class:`FrozenGenerator` (:func:`load_generator`). ``class_counts``: the
    training set's images per class (the weighting's ``n_c``; labels index it). ``mean``/``std``:
    the per-channel normalisation of the images you pass, in [0, 1] pixel units (default 0 and 1:
    images in [0, 1]). ``seed`` and ``rank`` choose the random streams: the same seed, epoch and
    step give the same decisions. ``filter``: a :class:`ClassFilter`; a generated image it rejects
    is not written, so its slot keeps the main batch's real image and label (default: none).
    """

    def __init__(self, generator: NuisanceSampler, class_counts: Sequence[int], *, gen_frac: float = 0.5,
                 weighting: str = "none", class_size_threshold: int | None = None, seed: int = 0, rank: int = 0,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 filter: ClassFilter | None = None) -> None:  # noqa: A002 (the option's name)
        if not isinstance(generator, NuisanceSampler):
            raise InvTransferError(f"GitMixer needs a generator from invtransfer.git.load_generator, got "
                                   f"{type(generator).__name__}.")
        if isinstance(gen_frac, bool) or not isinstance(gen_frac, (int, float)) or not 0 <= gen_frac <= 1 \
                or not math.isfinite(gen_frac):
            raise InvTransferError(f"gen_frac must be a number in [0, 1], got {gen_frac!r}.")
        for key, value in (("seed", seed), ("rank", rank)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvTransferError(f"{key} must be an integer >= 0, got {value!r}.")
        self.generator = generator
        self.gen_frac = float(gen_frac)
        self.keep = keep_probability(weighting, class_counts, class_size_threshold)
        self.seed, self.rank = seed, rank
        self.stream = _STREAM if rank == 0 else _RANK_STREAMS + rank
        channels = int(generator.gen.arch.channels)
        self.mean = [0.0] * channels if mean is None else [float(v) for v in mean]
        self.std = [1.0] * channels if std is None else [float(v) for v in std]
        if len(self.mean) != channels or len(self.std) != channels or min(self.std) <= 0:
            raise InvTransferError(f"mean/std must have one entry per image channel ({channels}) and std > 0; got "
                                   f"mean={list(self.mean)}, std={list(self.std)}.")
        if filter is not None and not isinstance(filter, ClassFilter):
            raise InvTransferError(f"filter must be an invtransfer.git.ClassFilter (load_class_filter), got "
                                   f"{type(filter).__name__}.")
        self.filter = filter

    @property
    def style_dim(self) -> int:
        """Length of the generator's style code."""
        return int(self.generator.gen.arch.style_dim)

    def rng(self, epoch: int, step: int) -> torch.Generator:
        """The CPU generator of GIT's draws in one step (from seed, epoch, step and rank)."""
        return step_generator(self.seed, epoch, step, stream=self.stream)

    def candidate_slots(self, n: int) -> torch.Tensor:
        """The ``int(gen_frac * n)`` evenly spaced candidate positions of an ``n``-image batch."""
        k = int(n * self.gen_frac)
        return torch.arange(k) * n // k if k > 0 else torch.zeros(0, dtype=torch.long)

    def choose(self, labels2: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        """Slots used in a batch whose second batch has labels ``labels2`` (CPU, one per row):
        one uniform draw from ``rng`` per candidate slot, kept with its class's probability."""
        labels2 = labels2.cpu()
        slots = self.candidate_slots(len(labels2))
        if len(slots) == 0:
            return slots
        cand = labels2[slots].long()
        if bool((cand < 0).any()) or bool((cand >= len(self.keep)).any()):
            raise InvTransferError(f"second-batch labels must lie in 0..{len(self.keep) - 1} (one per entry of "
                                   f"class_counts); got {sorted(set(cand.tolist()))}.")
        use = torch.rand(len(slots), generator=rng, dtype=torch.float64) < self.keep[cand]
        return slots[use]

    def draw_styles(self, k: int, rng: torch.Generator) -> torch.Tensor:
        """(k, style_dim) styles ``s ~ N(0, I)`` from ``rng``."""
        return torch.randn(k, self.style_dim, generator=rng)

    def plan(self, labels2: torch.Tensor, *, epoch: int, step: int) -> MixPlan:
        """The decisions of one step: :meth:`choose`, then :meth:`draw_styles` from the same stream
        (nothing is drawn after the choice when no slot is used)."""
        labels2 = labels2.cpu().long()
        rng = self.rng(epoch, step)
        slots = self.choose(labels2, rng)
        styles = self.draw_styles(len(slots), rng) if len(slots) else torch.zeros(0, self.style_dim)
        return MixPlan(slots, labels2[slots], styles)

    def generate(self, sources: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
        """Decodes of normalised ``sources`` with ``styles``, in the same normalisation (float32)."""
        return self.generator(sources, self.mean, self.std, styles=styles)

    def replace(self, x: torch.Tensor, plan: MixPlan, sources: torch.Tensor, *, y: torch.Tensor | None = None,
                rows: tuple[int, int] | None = None) -> int:
        """Write generated images into the planned slots of ``x`` in place; return how many were
        written (:meth:`replace_accepted`, which says which)."""
        return int(self.replace_accepted(x, plan, sources, y=y, rows=rows).sum())

    def replace_accepted(self, x: torch.Tensor, plan: MixPlan, sources: torch.Tensor, *,
                         y: torch.Tensor | None = None, rows: tuple[int, int] | None = None) -> torch.Tensor:
        """Write generated images into the planned slots of ``x`` in place; return which were written.

        ``x`` (and ``y``, if given, whose written slots get the plan's labels) hold rows
        ``[start, stop)`` of the batch (default: all of it); ``sources`` are the second batch's
        images at the planned slots within those rows, in slot order. Every such slot is
        generated; with a :class:`ClassFilter` only those it accepts are written, the others keep
        their row of ``x`` and ``y``. Returns a bool CPU mask over those slots, in slot order (all
        true without a filter). Without such slots the generator is not called.
        """
        start, stop = rows if rows is not None else (0, x.shape[0])
        if stop - start != x.shape[0]:
            raise InvTransferError(f"rows={rows} span {stop - start} rows, but x has {x.shape[0]}.")
        mine = plan.within(start, stop)
        count = int(mine.sum())
        if sources.shape[0] != count:
            raise InvTransferError(f"{sources.shape[0]} source images for {count} planned slot(s) in rows "
                                   f"[{start}, {stop}); pass the second batch's images at exactly those slots.")
        accepted = torch.ones(count, dtype=torch.bool)
        if count == 0:
            return accepted
        slots, labels = plan.slots[mine] - start, plan.labels[mine]
        images = self.generate(sources, plan.styles[mine])
        if self.filter is not None:
            accepted = self.filter(images, labels, self.mean, self.std)
            if not bool(accepted.all()):
                slots, labels, images = slots[accepted], labels[accepted], images[to_device(accepted, images.device)]
        if len(slots) == 0:
            return accepted
        at = to_device(slots, x.device)
        x[at] = images.to(x.device, x.dtype)
        if y is not None:
            y[to_device(at, y.device)] = to_device(labels, y.device).to(y.dtype)
        return accepted

    def __call__(self, x: torch.Tensor, y: torch.Tensor, x2: torch.Tensor, y2: torch.Tensor, *, epoch: int,
                 step: int) -> MixedBatch:
        """The batch ``(x, y)`` with GIT's slots replaced by generated images of the second batch
        ``(x2, y2)`` (same normalisation; its first ``len(y)`` rows are used). The inputs are not
        modified: when slots are replaced, ``x`` and ``y`` are copies; otherwise they are returned
        as they are. Labels ``y2`` on the CPU avoid a device synchronisation. ``replaced`` lists the
        slots written: with a filter, the planned slots it accepted (:meth:`plan` gives all)."""
        for name, t in (("x", x), ("y", y), ("x2", x2), ("y2", y2)):
            if not isinstance(t, torch.Tensor):
                raise InvTransferError(f"{name} must be a torch.Tensor, got {type(t).__name__}.")
        n = len(y)
        if x.dim() != 4 or x.shape[0] != n or not x.is_floating_point():
            raise InvTransferError(f"x must be a float (N, C, H, W) batch with one row per label ({n}); got "
                                   f"{x.dtype} {tuple(x.shape)}.")
        if x2.shape[1:] != x.shape[1:] or x2.shape[0] != len(y2) or len(y2) < n:
            raise InvTransferError(f"the second batch must hold at least as many images as the first ({n}), one "
                                   f"per label, of the same shape; got x2 {tuple(x2.shape)} with {len(y2)} labels.")
        plan = self.plan(y2[:n], epoch=epoch, step=step)
        if plan.size == 0:
            return MixedBatch(x, y, plan.slots)
        x, y = x.clone(), y.clone()
        accepted = self.replace_accepted(x, plan, x2[to_device(plan.slots, x2.device)], y=y)
        return MixedBatch(x, y, plan.slots[accepted])

    def __repr__(self) -> str:
        return (f"GitMixer(gen_frac={self.gen_frac}, classes={len(self.keep)}, seed={self.seed}, rank={self.rank}, "
                f"style_dim={self.style_dim}{f', filter={self.filter!r}' if self.filter is not None else ''})")
