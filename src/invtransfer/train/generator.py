"""The MUNIT training loop (docs/design.md#generator) and its sample grids.

This module owns training the generative model whose architecture is in
:mod:`invtransfer.models.munit`:

* :class:`GeneratorTrainConfig` (in :mod:`invtransfer.train.configs`) and :func:`train` — one
  training run with run directory, ``metrics.jsonl``, sample grids, exact resume, clean stops on
  signals;
* :func:`write_sample_grid` — real / reconstruction / random-style decodes, one row per class.

Using a trained generator -- :func:`~invtransfer.train.inference.load_generator` and the
:class:`~invtransfer.train.inference.NuisanceSampler` that GIT and invariance measurement call --
is :mod:`invtransfer.train.inference`; measuring it is
:mod:`invtransfer.metrics.generator_quality`.

Single process::

    invtransfer train-generator configs/generator/fmnist_munit.yaml data.name=fmnist-dil-lt seed=1

Several processes (``batch_size`` stays the global batch per stream; see
:mod:`invtransfer.train.distributed`)::

    torchrun --standalone --nproc_per_node 2 -m invtransfer train-generator configs/generator/cifar10_munit.yaml

Every process draws both streams' global indices, flips and styles and takes its rows of each
stream. MUNIT has no batch-dependent layer (instance, layer and adaptive instance norms only),
so this is the single-process step exactly, up to the order of float sums. Gradients are
averaged by one all-reduce per network and step (:func:`distributed.average_gradients`) rather
than by a ``DistributedDataParallel`` wrapper: the step calls the encoders and the decoder
directly, not ``forward``, and freezes D during G's step, which DDP's forward hooks do not see.

Decisions where the paper is silent or leaves a choice (docs/design.md#generator):

* ONE generator and ONE discriminator shared by both "domains". MUNIT trains (G_a, D_a) and
  (G_b, D_b); here both domains are the same long-tailed set, so the two pairs would learn the
  same distribution and GIT would use G_a with a decoder that, during training, only decoded
  random styles of G_b's content codes. Sharing makes the random-style path used later
  (``G.decode(G.content(x), s)``) exactly the one trained, and halves parameters and compute.
  Both directions are still computed and summed: the two streams are concatenated into one
  batch of ``2 * batch_size`` images and every loss is the sum of the two halves' means
  (``2 * mean`` over the whole batch, since the halves have equal size).
* The two streams are independent class-balanced draws with replacement (weight 1/n_c per
  example), each with its own generator ``step_generator(seed, iteration, 0, stream)``; random
  styles come from a third stream. Nothing else is random after initialisation, so
  ``resume=true`` reproduces an uninterrupted run bit for bit on CPU.
* Learning rate ``lr * 0.5 ** (iteration // lr_step)`` (0-based iterations), MUNIT's StepLR.
  Adam's ``weight_decay`` is MUNIT's coupled L2 term. The content-reconstruction target
  ``content(x)`` is not detached, as in MUNIT.
* Time: ``wall_time_s`` (seconds) and ``cpu_time_s`` (``time.process_time()``: CPU seconds of
  all this process's threads, so up to ``wall_time_s * threads``) of the training loop, each
  summed over the run's processes (resumes included) through ``state.pt``. A state written
  before ``cpu_time_s`` existed counts as 0 CPU seconds, and ``cpu_time_partial: true`` in
  ``state.pt`` and ``summary.json`` then says the total misses those processes' time. With
  several torchrun processes both times are process 0's.
* "Images seen" counts one stream: ``iterations * batch_size``, so with the public batch size 1
  it equals the iteration count the paper's budgets quote (K49 10k, CIFAR 140k); ``images_per_s``
  in ``metrics.jsonl`` uses the same unit.
* ``arch.channels`` and ``arch.image_size`` default to the dataset's image shape; a value the
  user sets that differs is an error naming both.
* Optional class-consistency term (``class_consistency_weight > 0`` with a frozen ``classifier``;
  docs/design.md#generator-class-consistency): the cross-entropy of a classifier trained on the
  same long-tailed data on the random-style decodes, against the class of the content image
  (:func:`class_consistency_loss`), so that a decode keeps its content's class. Off by default:
  the loop is then MUNIT's, bit for bit.
"""

from __future__ import annotations

import io
import math
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from invtransfer.config import to_dict
from invtransfer.data import batches, datasets
from invtransfer.data.datasets import LTDataset
from invtransfer.errors import InvTransferError
from invtransfer.models.munit import (  # noqa: F401 (MunitArch re-exported)
    Discriminator,
    MunitArch,
    MunitGenerator,
    init_munit_weights,
    lsgan_d_loss,
    lsgan_g_loss,
)
from invtransfer.train import distributed
from invtransfer.train.checkpoint import StopSignals, atomic_save, run_locked
from invtransfer.train.configs import GeneratorArch, GeneratorTrainConfig  # noqa: F401 (re-exported)
from invtransfer.train.inference import (  # noqa: F401 (re-exported: they lived here)
    FrozenClassifier,
    NuisanceSampler,
    check_compatible,
    load_frozen_classifier,
    load_generator,
    to_pixels,
    to_unit_range,
)
from invtransfer.train.runtime import autocast, json_dump, versions
from invtransfer.train.scaffold import TrainingRun, append_log, dataset_meta, require_training_images

# Streams of batches.step_generator used by one iteration (distinct so they never correlate).
STREAM_A, STREAM_B, STREAM_STYLE = 1, 2, 3
# MUNIT's loss terms, logged in metrics.jsonl (loss_recon_cycle only when recon_cycle_weight > 0) ...
LOSS_KEYS = ("loss_d", "loss_g", "loss_adv", "loss_recon_x", "loss_recon_s", "loss_recon_c", "loss_recon_cycle")
# ... and the optional class-consistency term (only when class_consistency_weight > 0)
CLASS_KEY = "loss_class"
GRID_STYLES = 6  # random-style columns of the training sample grids


# Keys that may differ between a run and its resumption ('iterations': a run can be extended,
# since the schedule depends on the iteration only).
_RESUME_FREE = ("resume", "overwrite", "quiet", "device", "compile", "checkpoint_every", "sample_every",
                "log_every", "iterations", "data.data_root", "data.cache_dir", "data.strict_checksums",
                "name", "out_dir",  # where the run lives: auto-named and moved runs must resume
                "classifier_allow_other_dataset")  # a check at start-up, not part of training


def learning_rate(cfg: GeneratorTrainConfig, iteration: int) -> float:
    """MUNIT's StepLR: ``lr`` halved every ``lr_step`` iterations (0-based)."""
    return cfg.lr * 0.5 ** (iteration // cfg.lr_step)


def example_weights(labels: torch.Tensor, class_counts: Sequence[int]) -> torch.Tensor:
    """Class-balanced sampling weight 1/n_c of every training example (float64, CPU)."""
    return 1.0 / torch.tensor(list(class_counts), dtype=torch.float64)[labels.cpu()]


def stream_indices(weights: torch.Tensor, batch_size: int, seed: int, iteration: int,
                   stream: int) -> tuple[torch.Tensor, torch.Generator]:
    """One stream's class-balanced draw (with replacement) at ``iteration``, and its generator.

    The generator is returned so the same stream goes on to draw the batch's flips.
    """
    g = batches.step_generator(seed, iteration, 0, stream=stream)
    return torch.multinomial(weights, batch_size, replacement=True, generator=g), g


def _l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # float32 whatever the autocast dtype; 2x = sum of the two streams' equal-size means.
    return 2.0 * F.l1_loss(a.float(), b.float())


def class_consistency_loss(classifier: FrozenClassifier, decodes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The class-consistency term of the generator's loss (docs/design.md#generator-class-consistency).

    For the random-style decodes ``x~_i = decode(content(x_i), s_i)``, ``s_i ~ N(0, I)``, of the
    two streams' images ``x_i`` (MUNIT's cross-domain translations: content of one image, style
    of the other domain drawn from the prior) with content classes ``y_i``, and a frozen
    classifier ``f`` trained on the same long-tailed data::

        L_class = 2 * (1 / 2B) * sum_i CE(f(T(x~_i)), y_i)
                = mean_{i in A} CE(f(T(x~_i)), y_i) + mean_{i in B} CE(f(T(x~_i)), y_i)

    with ``CE(z, y) = -log softmax(z)_y`` and ``T`` the map from the generator's range [-1, 1]
    to the classifier's normaliser, ``T(x) = ((x + 1) / 2 - mean) / std``; the sum of the two
    streams' means like MUNIT's other terms. This is the semantic-consistency loss of domain
    adaptation (CyCADA's semantic loss, with the source classifier as the fixed judge) applied
    within one domain: the decodes should keep their content's class whatever the style. ``f``
    is frozen (eval mode, no parameter gradients), but the gradient flows through it to the
    decodes and so to the generator. ``decodes`` are in [-1, 1], ``labels`` on their device.
    """
    c = decodes.shape[1]
    logits = classifier(decodes, [0.5] * c, [0.5] * c)  # [-1, 1] is mean 0.5, std 0.5 in [0, 1] pixel units
    return 2.0 * F.cross_entropy(logits, labels.to(logits.device))


# --------------------------------------------------------------------------------------------
# Sample grids


def grid_sources(ds: LTDataset) -> tuple[np.ndarray, list[str]]:
    """One held-out image per class (the first val image; a training image where val has none).

    Returns uint8 ``(K, H, W, C)`` images and one row label per class.
    """
    images, labels = [], []
    for c, name in enumerate(ds.class_names):
        val = np.flatnonzero(ds.y_val == c)
        if len(val):
            images.append(ds.x_val[val[0]])
            labels.append(name)
        else:  # e.g. CIFAR-10-LT's head class uses every training image, so has no val images
            train = np.flatnonzero(ds.y_train == c)
            if len(train):
                images.append(ds.x_train[train[0]])
                labels.append(f"{name} (train)")
    if not images:
        raise InvTransferError(f"dataset {ds.name!r} has no images to sample from.")
    return np.stack(images), labels


def grid_styles(style_dim: int, n: int, seed: int) -> torch.Tensor:
    """``n`` fixed style codes (the same for every row and every iteration of a run)."""
    g = batches.step_generator(seed, 0, 0, stream=STREAM_STYLE + 100)
    return torch.randn(n, style_dim, generator=g)


def sample_grid(gen: MunitGenerator, images_uint8_nhwc: np.ndarray, styles: torch.Tensor,
                amp_dtype: torch.dtype | None = None, scale: int = 1) -> np.ndarray:
    """uint8 RGB grid: one row per image with [real | reconstruction | one decode per style].

    Cells are enlarged ``scale`` times (nearest neighbour) and separated by 2 white pixels.
    """
    p = next(gen.parameters())
    x = to_unit_range(batches.to_device_images(images_uint8_nhwc, p.device))
    k, n = x.shape[0], styles.shape[0]
    with torch.inference_mode(), autocast(p.device, amp_dtype):
        content, style = gen.encode(x)
        recon = gen.decode(content, style)
        decoded = gen.decode(content.repeat_interleave(n, 0), styles.to(p.device).repeat(k, 1))
    cols = torch.cat([x[:, None], recon.float()[:, None], decoded.float().view(k, n, *x.shape[1:])], 1)
    cells = to_pixels(cols).round().clamp(0, 255).to(torch.uint8).cpu()  # (k, 2+n, C, H, W)
    if cells.shape[2] == 1:
        cells = cells.expand(-1, -1, 3, -1, -1)
    if scale > 1:
        cells = cells.repeat_interleave(scale, 3).repeat_interleave(scale, 4)
    pad = 2
    cells = F.pad(cells, (pad, 0, pad, 0), value=255)  # white separators
    k, m, c, h, w = cells.shape
    grid = cells.permute(0, 3, 1, 4, 2).reshape(k * h, m * w, c)
    return F.pad(grid.permute(2, 0, 1), (0, pad, 0, pad), value=255).permute(1, 2, 0).numpy()


def write_sample_grid(path: str, gen: MunitGenerator, ds: LTDataset, n_styles: int = GRID_STYLES,
                      seed: int = 0, amp_dtype: torch.dtype | None = None) -> str:
    """PNG of :func:`sample_grid` over :func:`grid_sources` of ``ds`` with fixed seeded styles.

    Small images are enlarged to cells of at least 64 pixels so the grid is readable as is.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images, _ = grid_sources(ds)
    scale = max(1, 64 // images.shape[1])
    grid = sample_grid(gen, images, grid_styles(gen.style_dim, n_styles, seed), amp_dtype, scale=scale)
    buf = io.BytesIO()
    plt.imsave(buf, grid, format="png")
    datasets.atomic_write_bytes(path, buf.getvalue())  # readers never see half a PNG; a full disk is named
    return path


# --------------------------------------------------------------------------------------------
# Training


class GeneratorRun(TrainingRun):
    """State and outputs of one MUNIT training run; :meth:`run` does the work."""

    kind, checkpoint_file, command, log_key, resume_free = "generator", "state.pt", "train-generator", "iteration", \
        _RESUME_FREE

    def _configure(self) -> None:
        cfg, ds = self.cfg, self.ds
        self.arch = cfg.arch.resolve(ds.image_shape, ds.name)
        n = len(ds.y_train)
        if cfg.batch_size > n:
            raise InvTransferError(f"config key 'batch_size'={cfg.batch_size} is larger than the "
                                   f"{n} training images of dataset {ds.name!r}; use batch_size <= {n}.")
        self.dist.check_batch_size(cfg.batch_size, "batch_size")
        # The resolved architecture, so that the run can be rebuilt exactly.
        self.cfg_dict["arch"] = to_dict(self.arch)
        self.classifier = self._consistency_classifier()

    def _consistency_classifier(self) -> FrozenClassifier | None:
        """The frozen classifier of the class-consistency term, loaded and checked against the
        run's dataset (images, classes, fingerprint) before the run directory exists."""
        cfg, ds = self.cfg, self.ds
        if cfg.class_consistency_weight <= 0:
            return None
        key, path = "classifier", cfg.classifier
        if not os.path.exists(path):
            raise InvTransferError(f"config key {key!r}={path!r}: no such file or directory; expected a classifier "
                                   f"run directory (model.pt or checkpoint.pt in it) or checkpoint file.")
        try:
            clf = load_frozen_classifier(path, self.device, amp=cfg.amp)
        except InvTransferError as e:
            raise InvTransferError(f"config key {key!r}={path!r}: {e}") from None
        clf.check_run(ds.image_shape, ds.class_names, ds.name, ds.fingerprint, key=key,
                      override="classifier_allow_other_dataset=true", nuisance=ds.nuisance,
                      instance=ds.config["instance"], allow_other_dataset=cfg.classifier_allow_other_dataset)
        return clf

    def method_tag(self) -> str:
        return "munit"

    # ----------------------------------------------------------------- set-up
    def _setup(self) -> None:
        cfg, ds = self.cfg, self.ds
        require_training_images(ds)
        torch.manual_seed(cfg.seed)
        self.gen = MunitGenerator(self.arch)
        self.disc = Discriminator(self.arch)
        init_munit_weights(self.gen, self.disc)
        self.gen.to(self.device)
        self.disc.to(self.device)
        if cfg.channels_last:
            self.gen.to(memory_format=torch.channels_last)
            self.disc.to(memory_format=torch.channels_last)
        betas = (cfg.beta1, cfg.beta2)
        self.opt_g = torch.optim.Adam(self.gen.parameters(), lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay)
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay)
        self.x_train = batches.to_device_images(ds.x_train, self.device)
        self.weights = example_weights(torch.from_numpy(ds.y_train), ds.train_class_counts)
        # the content images' classes, for the class-consistency term only
        self.y_train = torch.from_numpy(ds.y_train).to(self.device) if self.classifier is not None else None
        self.d_losses = torch.compile(self._d_losses) if cfg.compile else self._d_losses
        self.g_losses = torch.compile(self._g_losses) if cfg.compile else self._g_losses

    # ----------------------------------------------------------------- one iteration
    def batch(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Both streams' images in [-1, 1], concatenated ``(2B, C, H, W)``, and their indices.

        With several processes: this process's rows of each stream (``2B / W`` images).
        """
        cfg = self.cfg
        start, stop = self.dist.shard(cfg.batch_size)
        xs, idxs = [], []
        for stream in (STREAM_A, STREAM_B):
            idx, g = stream_indices(self.weights, cfg.batch_size, cfg.seed, iteration, stream)
            flip = torch.rand(cfg.batch_size, generator=g) < 0.5 if cfg.flip else None  # the global draws
            idx = idx[start:stop]
            x = self.x_train[batches.to_device(idx, self.device)]
            if flip is not None:
                x = batches.flip_where(x, flip[start:stop])
            xs.append(x)
            idxs.append(idx)
        x = to_unit_range(torch.cat(xs))
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, torch.cat(idxs)

    def _autocast(self):
        return autocast(self.device, self.amp_dtype)

    def _d_losses(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            with torch.no_grad():
                fake = self.gen.decode(self.gen.content_encoder(x), style)
            # The discriminator has no batch-dependent layer, so one pass over real and fake is
            # the same as MUNIT's two passes.
            out = self.disc(torch.cat([x, fake.to(x.dtype)]))
        real_out, fake_out = out.chunk(2)
        return 2.0 * lsgan_d_loss(real_out, fake_out)  # both directions summed

    def _g_losses(self, x: torch.Tensor, style: torch.Tensor,
                  labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """MUNIT's generator terms and their weighted sum ``loss_g``; with ``labels`` (the content
        images' classes) also the class-consistency term ``loss_class``."""
        cfg = self.cfg
        with self._autocast():
            content, own_style = self.gen.encode(x)
            # Reconstruction (own style) and translation (random style) in one decoder pass.
            out = self.gen.decode(torch.cat([content, content]), torch.cat([own_style, style]))
            recon, fake = out.chunk(2)
            fake_content, fake_style = self.gen.encode(fake)
            terms = {"loss_adv": 2.0 * lsgan_g_loss(self.disc(fake)),
                     "loss_recon_x": _l1(recon, x),
                     "loss_recon_s": _l1(fake_style, style),
                     "loss_recon_c": _l1(fake_content, content)}
            if cfg.recon_cycle_weight > 0:
                terms["loss_recon_cycle"] = _l1(self.gen.decode(fake_content, own_style), x)
            if labels is not None:
                terms[CLASS_KEY] = class_consistency_loss(self.classifier, fake, labels)
        total = (cfg.gan_weight * terms["loss_adv"] + cfg.recon_x_weight * terms["loss_recon_x"]
                 + cfg.recon_s_weight * terms["loss_recon_s"] + cfg.recon_c_weight * terms["loss_recon_c"])
        if "loss_recon_cycle" in terms:
            total = total + cfg.recon_cycle_weight * terms["loss_recon_cycle"]
        if CLASS_KEY in terms:
            total = total + cfg.class_consistency_weight * terms[CLASS_KEY]
        terms["loss_g"] = total
        return terms

    def train_step(self, iteration: int) -> dict[str, torch.Tensor]:
        """One discriminator step then one generator step; returns the detached loss terms."""
        x, idx = self.batch(iteration)
        # the content classes of both streams' rows (class-consistency term only; drawn with the rows)
        labels = None if self.y_train is None else self.y_train[batches.to_device(idx, self.device)]
        g = batches.step_generator(self.cfg.seed, iteration, 0, stream=STREAM_STYLE)
        b = self.cfg.batch_size
        styles = torch.randn(2, 2 * b, self.arch.style_dim, generator=g)  # the global batch's styles
        if self.dist.enabled:  # this process's rows of stream A, then of stream B
            start, stop = self.dist.shard(b)
            styles = torch.cat([styles[:, start:stop], styles[:, b + start:b + stop]], 1)
        styles = batches.to_device(styles, self.device)
        d_loss = self.d_losses(x, styles[0])
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        distributed.average_gradients(list(self.disc.parameters()), self.dist)
        self.opt_d.step()
        # The generator step needs gradients through D's input, not for D's weights.
        self.disc.requires_grad_(False)
        try:
            terms = self.g_losses(x, styles[1]) if labels is None else self.g_losses(x, styles[1], labels)
            self.opt_g.zero_grad(set_to_none=True)
            terms["loss_g"].backward()
            distributed.average_gradients(list(self.gen.parameters()), self.dist)
            self.opt_g.step()
        finally:
            self.disc.requires_grad_(True)
        terms["loss_d"] = d_loss
        return {k: v.detach() for k, v in terms.items()}

    # ----------------------------------------------------------------- checkpoints
    def _state(self, iteration: int, running: dict) -> dict:
        return {"format": "invtransfer/generator", "state": "full", "config": self.cfg_dict,
                "arch": to_dict(self.arch), "generator": self.gen.state_dict(),
                "discriminator": self.disc.state_dict(), "opt_g": self.opt_g.state_dict(),
                "opt_d": self.opt_d.state_dict(), "iteration": iteration,
                "images_seen": iteration * self.cfg.batch_size, "running": running,
                "dataset": dataset_meta(self.ds, config=self.ds.config), "wall_time_s": self.clock.wall(),
                "cpu_time_s": self.clock.cpu(), "cpu_time_partial": self.clock.cpu_partial}

    def save_state(self, iteration: int, running: dict) -> None:
        if self.dist.is_main:  # the processes' states are identical; process 0 writes
            atomic_save(self._state(iteration, running), self.path("state.pt"))

    def _restore(self) -> tuple[int, dict]:
        ck = self.load_resumable()
        self.gen.load_state_dict(ck["generator"])
        self.disc.load_state_dict(ck["discriminator"])
        self.opt_g.load_state_dict(ck["opt_g"])
        self.opt_d.load_state_dict(ck["opt_d"])
        self.clock.restore(ck)  # the earlier processes' time
        return int(ck["iteration"]), dict(ck["running"])

    # ----------------------------------------------------------------- the loop
    def run(self) -> dict:
        """Train (or resume) and write every output; returns the summary in ``summary.json``."""
        cfg = self.cfg
        self.clock.start()
        iteration, running = self._start()
        bar = self._progress(iteration)
        self.gen.train()
        self.disc.train()
        with StopSignals() as self.signals:
            while iteration < cfg.iterations:
                lr = self._set_learning_rate(iteration)
                t0 = time.time()
                terms = self.train_step(iteration)
                values, stop = self._reduce(terms)
                self._count(running, terms, values, iteration, t0)
                iteration += 1
                if bar is not None:
                    bar.update(1)
                if iteration % cfg.log_every == 0 or iteration == cfg.iterations:
                    if self.dist.is_main:
                        self._log(iteration, lr, running, bar)
                    running = {}
                if self.dist.is_main and iteration % cfg.sample_every == 0:
                    write_sample_grid(self.path(f"samples_{iteration:07d}.png"), self.gen, self.ds, seed=cfg.seed,
                                      amp_dtype=self.amp_dtype)
                saved = iteration % cfg.checkpoint_every == 0 or iteration == cfg.iterations
                if saved or stop:
                    self.save_state(iteration, running)
                if stop:
                    self._stop(iteration, bar)
        if bar is not None:
            bar.close()
        return self.finish(lambda: self._write_outputs(iteration, self.clock.wall(), self.clock.cpu()))

    def _start(self) -> tuple[int, dict]:
        """Iteration and running statistics to start from: the state's when resuming, else the
        beginning (a new run also writes config.yaml)."""
        if self.cfg.resume:
            iteration, running = self._restore()
            self.truncate_log(iteration)
            return iteration, running
        self.write_config()
        return 0, {}

    def _progress(self, iteration: int):
        cfg = self.cfg
        if not self.dist.is_main or cfg.quiet or iteration >= cfg.iterations:
            return None
        from tqdm import tqdm
        return tqdm(total=cfg.iterations, initial=iteration, desc="munit", dynamic_ncols=True, file=sys.stderr)

    def _set_learning_rate(self, iteration: int) -> float:
        lr = learning_rate(self.cfg, iteration)
        for opt in (self.opt_g, self.opt_d):
            for group in opt.param_groups:
                group["lr"] = lr
        return lr

    def _reduce(self, terms: dict[str, torch.Tensor]) -> tuple[torch.Tensor, bool]:
        """The loss terms as host floats (means over processes), and whether to stop after this
        iteration (a signal here or, with several processes, in any of them)."""
        values = torch.stack([terms[k].float() for k in terms])
        stop = self.signals.stop
        if self.dist.enabled:
            sums, stop = self.agree_on_stop(values)
            values = torch.tensor(sums, dtype=torch.float64) / self.dist.world_size
        return values.cpu(), stop  # one sync per iteration

    def _count(self, running: dict, terms: dict, values: torch.Tensor, iteration: int, t0: float) -> None:
        """Add one iteration to the running statistics; a non-finite loss stops the run."""
        if not bool(torch.isfinite(values).all()):
            bad = [k for k, v in zip(terms, values.tolist()) if not math.isfinite(v)]
            raise InvTransferError(
                f"non-finite loss ({', '.join(bad)}) at iteration {iteration}; the run stopped. The last "
                f"good state is {self.path('state.pt')} (if one was written); try a smaller lr.")
        for k, v in zip(terms, values.tolist()):
            running[k] = running.get(k, 0.0) + v
        running["n"] = running.get("n", 0) + 1
        running["time"] = running.get("time", 0.0) + time.time() - t0

    def _stop(self, iteration: int, bar) -> None:
        """End the run, whose state after ``iteration`` was saved, with :class:`TrainingInterrupted`."""
        self.dist.barrier()
        if bar is not None:
            bar.close()
        raise self.interrupted(f"iteration {iteration}/{self.cfg.iterations}", "state")

    def _log(self, iteration: int, lr: float, running: dict, bar) -> None:
        n = max(running.get("n", 0), 1)
        its = running.get("n", 0) / max(running.get("time", 0.0), 1e-9)
        record: dict[str, Any] = {"iteration": iteration, "lr": lr,
                                  **{k: running[k] / n for k in (*LOSS_KEYS, CLASS_KEY) if k in running},
                                  "iterations_per_s": its, "images_per_s": its * self.cfg.batch_size,
                                  "images_seen": iteration * self.cfg.batch_size}
        append_log(self.path("metrics.jsonl"), record)
        if bar is not None:
            bar.set_postfix(d=f"{record['loss_d']:.3f}", g=f"{record['loss_g']:.3f}",
                            x=f"{record['loss_recon_x']:.3f}", ips=f"{record['images_per_s']:.0f}")
        else:
            extra = f" class {record[CLASS_KEY]:.4f}" if CLASS_KEY in record else ""
            print(f"iteration {iteration}/{self.cfg.iterations} d {record['loss_d']:.4f} g {record['loss_g']:.4f} "
                  f"adv {record['loss_adv']:.4f} recon_x {record['loss_recon_x']:.4f} "
                  f"recon_s {record['loss_recon_s']:.4f} recon_c {record['loss_recon_c']:.4f}{extra} lr {lr:.3g} "
                  f"{record['images_per_s']:.1f} img/s", flush=True)

    def _write_outputs(self, iteration: int, wall_time: float, cpu_time: float) -> dict:
        cfg = self.cfg
        atomic_save({"format": "invtransfer/generator", "state": "weights", "config": self.cfg_dict,
                     "arch": to_dict(self.arch), "generator": self.gen.state_dict(),
                     "dataset": dataset_meta(self.ds, config=self.ds.config), "iteration": iteration,
                     "images_seen": iteration * cfg.batch_size}, self.path("generator.pt"))
        write_sample_grid(self.path("samples_final.png"), self.gen, self.ds, seed=cfg.seed, amp_dtype=self.amp_dtype)
        summary = {"dataset": self.ds.name, "seed": cfg.seed, "iterations": iteration,
                   "images_seen": iteration * cfg.batch_size, "batch_size": cfg.batch_size,
                   "wall_time_s": wall_time, "cpu_time_s": cpu_time, "cpu_time_partial": self.clock.cpu_partial,
                   "device": str(self.device), "versions": versions(),
                   "dataset_fingerprint": self.ds.fingerprint, "run_dir": self.run_dir,
                   "class_consistency": None if self.classifier is None else dict(
                       self.classifier.provenance(), weight=cfg.class_consistency_weight,
                       allow_other_dataset=cfg.classifier_allow_other_dataset)}
        json_dump(self.path("summary.json"), summary)
        print(f"generator trained for {iteration} iterations ({summary['images_seen']} images per stream); "
              f"outputs in {self.run_dir}", flush=True)
        return summary


def train(cfg: GeneratorTrainConfig) -> dict:
    """Run (or resume) one MUNIT training; returns ``summary.json``'s content."""
    return run_locked(GeneratorRun(cfg))


__all__ = ["GeneratorTrainConfig", "GeneratorArch", "GeneratorRun", "train", "write_sample_grid", "sample_grid",
           "grid_sources", "learning_rate", "stream_indices", "example_weights", "class_consistency_loss"]
