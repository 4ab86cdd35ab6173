"""The one classifier training loop: long-tail rules, schedule, evaluation, checkpoints, outputs.

The config is :class:`~invtransfer.train.configs.TrainConfig`; what every training run shares
(run directory, resume, clock, stops) is :class:`~invtransfer.train.scaffold.TrainingRun`; loading
a finished run is :mod:`invtransfer.train.inference`.

Single process::

    invtransfer train configs/cifar10_lt/ce_drs.yaml seed=1
    invtransfer train configs/fmnist_lt/ce.yaml data.name=fmnist-bg-lt data.instance=2 optim.epochs=10

Several processes (DistributedDataParallel; gloo on CPU, NCCL on GPUs; see
:mod:`invtransfer.train.distributed`): ``optim.batch_size`` stays the global batch and the global
sample is the single process's::

    torchrun --standalone --nproc_per_node 4 -m invtransfer train configs/cifar10_lt/ce_drs.yaml sync_bn=true

Rules (docs/design.md#classifiers; epochs count from 0, E1 = ``switch_epoch``, default ``optim.decay1_epoch``):

* ``erm``      uniform shuffle, unweighted loss.
* ``resample`` class-balanced sampling (weight 1/n_c, with replacement) from the start.
* ``reweight`` class-balanced loss weights (effective number, beta) from the start.
* ``drs``      deferred re-sampling: uniform before E1, class-balanced from epoch E1 on.
* ``drw``      deferred re-weighting: weights from epoch E1 on (LDAM-DRW = ``loss.name=ldam rule=drw``).

Schedule: linear warm-up ``lr * (e + 1) / warmup_epochs`` for e < warmup_epochs, then ``lr``,
``lr * decay1_factor`` from E1 and ``lr * decay2_factor`` from E2 (as LDAM-DRW's code), or cosine.
A shorter run keeps the preset's shape with ``optim.scale_to_epochs=N`` (see
:class:`~invtransfer.train.configs.OptimConfig`).

Model selection: ``select=val`` keeps the weights with the best validation balanced accuracy
(evaluated every ``eval_every`` epochs and at the last epoch); ``select=last`` keeps the last
epoch's. The test set is evaluated once, at the end, with the selected weights; which and why is
recorded in ``results.json``.

Exact resume: all randomness of a step derives from ``(seed, epoch, step)`` (see
:mod:`invtransfer.data.batches`), and checkpoints hold model, optimiser, position, running
epoch statistics and the best weights so far, so ``resume=true`` reproduces an uninterrupted
run's final weights bit for bit on CPU.

Out of memory: a CUDA out-of-memory error in a training step or an evaluation stops the run (or
``invtransfer evaluate``) with an :class:`InvTransferError` naming the batch-size key and value
and a smaller value to try (half the largest batch that was tried), before anything is written.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import torch

from invtransfer.data import augment, batches, datasets
from invtransfer.data.augment import BatchAugment, MixedTargets, Policy
from invtransfer.config import to_dict
from invtransfer.errors import InvTransferError
from invtransfer.git import ClassFilter, GitMixer, MixPlan, load_class_filter, load_generator
from invtransfer.git import keep_probability as git_keep_probability  # noqa: F401 (re-exported: it lived here)
from invtransfer.models.resnet_cifar import build_model
from invtransfer.plots import plot_against_class_size
from invtransfer.train import distributed, losses
from invtransfer.train.checkpoint import (  # noqa: F401 (TrainingInterrupted: re-exported)
    StopSignals,
    TrainingInterrupted,
    atomic_save,
    check_resumable,
    load_checkpoint,
    log_lines_upto,
    run_locked,
)
from invtransfer.train.configs import (  # noqa: F401 (re-exported: the configs lived here)
    RULES,
    GitConfig,
    LossConfig,
    OptimConfig,
    TrainConfig,
    learning_rate,
    method_label,
)
from invtransfer.train.sam import SharpnessAware, tail_classes
from invtransfer.train.inference import (  # noqa: F401 (re-exported: they lived here)
    NuisanceSampler,
    check_compatible,
    evaluate_checkpoint,
    evaluate_split,
    load_classifier,
    predict_logits,
)
from invtransfer.train.runtime import (  # noqa: F401 (resolve_device, autocast_dtype: re-exported)
    autocast,
    autocast_dtype,
    json_dump,
    resolve_device,
    versions,
    without_out_of_memory,
)
from invtransfer.train.scaffold import TrainingRun, append_log, dataset_meta, require_training_images


# Keys that may differ between a run and its resumption.
_RESUME_FREE = ("resume", "overwrite", "quiet", "device", "tensorboard", "compile", "checkpoint_every", "select",
                "eval_batch_size",  # evaluation only: the answer to an out-of-memory error while evaluating
                "data.data_root", "data.cache_dir", "data.strict_checksums",
                "name", "out_dir",  # where the run lives: auto-named and moved runs must resume
                "keep_checkpoints", "init_from",  # where a run started from does not matter once it has a checkpoint
                "git.allow_other_dataset")  # a check at start-up, not part of training
# Keys that may differ between a run and the run it forks from (init_from): GIT changes nothing
# before its first epoch, because every random draw derives from (seed, epoch, step).
_FORK_FREE = _RESUME_FREE + ("git.", "method")


def _summary_writer_class():
    """TensorBoard's SummaryWriter, or the error that tensorboard=true needs the package."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise InvTransferError("config key 'tensorboard=true' needs the tensorboard package (pip install "
                               "tensorboard), which is not installed; install it or leave tensorboard=false.") from None
    return SummaryWriter


@dataclass
class BatchPlan:
    """Every random decision about one GLOBAL training batch, made on the CPU (see plan_batch)."""

    index: torch.Tensor  # (B,) training images of the slots
    augment: batches.AugmentParams  # their augmentation draws
    labels: torch.Tensor  # (B,) labels, after GIT's replacements
    gen_slots: torch.Tensor  # (k,) slots that GIT fills with generated samples
    gen_index: torch.Tensor  # (k,) second-stream images they are generated from
    gen_augment: batches.AugmentParams | None = None  # their augmentation draws (crop unset: git.input_crop=false)
    git: MixPlan | None = None  # GIT's decisions: the slots again, their labels and random styles
    # git.filter: (k,) bool, which generated slots the filter accepted (the rejected keep their real
    # row and label); set once the batch is materialised (None: no filter, or not yet known)
    accepted: torch.Tensor | None = None

    @property
    def generated(self) -> int:
        """Slots that went through the generator (with git.filter: before filtering)."""
        return len(self.gen_slots)

    @property
    def gen_styles(self) -> torch.Tensor | None:
        """(k, style_dim) random styles of the generated slots."""
        return None if self.git is None else self.git.styles


class ClassifierRun(TrainingRun):
    """State and outputs of one training run; :meth:`run` does the work."""

    kind, checkpoint_file, command, log_key, resume_free = "classifier", "checkpoint.pt", "train", "epoch", _RESUME_FREE

    def __init__(self, cfg: TrainConfig):
        self.method = method_label(cfg)
        self.forked: dict | None = None  # init_from's checkpoint and position, once started from one
        # The best validation score so far and its weights (select=val); checkpoints carry them.
        self.best: dict = {"epoch": -1, "balanced_accuracy": -1.0}
        self.best_model: dict | None = None
        self._agreed_stop = False  # several processes: some process got a signal by the last step's exchange
        super().__init__(cfg)

    def _configure(self) -> None:
        cfg = self.cfg
        if cfg.oracle and self.ds.nuisance == "none":
            raise InvTransferError(f"config key 'oracle=true' needs a dataset with a synthetic nuisance; "
                                   f"{self.ds.name!r} has none (use e.g. fmnist-bg-lt).")
        self._summary_writer = _summary_writer_class() if cfg.tensorboard and self.dist.is_main else None
        o = cfg.optim
        # Tail-class SAM's classes (bool, CPU), checked before the run directory exists.
        self.tail_cpu = (tail_classes(self.ds.train_class_counts, o.sam_tail_threshold)
                         if o.sam_rho > 0 and o.sam_classes == "tail" else None)
        self.nuisance_sampler = None
        if cfg.git.generator:
            # Loaded and checked before the run directory exists: a refused generator leaves nothing.
            ds = self.ds
            self.nuisance_sampler = load_generator(cfg.git.generator, self.device)
            check_compatible(self.nuisance_sampler.gen, ds.image_shape, f"dataset {ds.name!r}")
            self.nuisance_sampler.check_dataset(
                ds.name, ds.fingerprint, nuisance=ds.nuisance, instance=ds.config["instance"],
                what="the dataset of this run", override="git.allow_other_dataset=true",
                allow_other_dataset=cfg.git.allow_other_dataset)
        self.class_filter = self._class_filter()

    def _class_filter(self) -> ClassFilter | None:
        """GIT's class filter (``git.filter``) over its frozen reference classifier, loaded and
        checked against the run's dataset (images, classes, fingerprint) before the run directory
        exists."""
        g, ds = self.cfg.git, self.ds
        if g.filter == "none":
            return None
        key = "git.filter_classifier"
        path = g.filter_classifier
        if not os.path.exists(path):
            raise InvTransferError(f"config key {key!r}={path!r}: no such file or directory; expected a classifier "
                                   f"run directory (model.pt or checkpoint.pt in it) or checkpoint file.")
        try:
            class_filter = load_class_filter(path, self.device, rule=g.filter, min_prob=g.filter_min_prob,
                                             amp=self.cfg.amp)
        except InvTransferError as e:
            raise InvTransferError(f"config key {key!r}={path!r}: {e}") from None
        class_filter.classifier.check_run(ds.image_shape, ds.class_names, ds.name, ds.fingerprint, key=key,
                                          override="git.allow_other_dataset=true", nuisance=ds.nuisance,
                                          instance=ds.config["instance"], allow_other_dataset=g.allow_other_dataset)
        return class_filter

    def method_tag(self) -> str:
        return self.method.replace("+", "-")

    # ----------------------------------------------------------------- set-up
    def _setup(self) -> None:
        cfg, ds = self.cfg, self.ds
        torch.manual_seed(cfg.seed)
        counts = ds.train_class_counts
        require_training_images(ds)
        self.loss_fn = losses.build_loss(cfg.loss.name, counts, **cfg.loss.options()).to(self.device)
        c, h, w = ds.image_shape
        self.model = build_model(cfg.model, ds.num_classes, in_channels=c,
                                 cosine_head=cfg.uses_cosine_head).to(self.device)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.train_model = self.model
        if self.dist.enabled:
            self.dist.check_batch_size(cfg.optim.batch_size, "optim.batch_size")
            last = len(ds.y_train) % cfg.optim.batch_size
            if 0 < last < self.dist.world_size:
                raise InvTransferError(f"the last batch of an epoch has {last} image(s), fewer than the "
                                       f"{self.dist.world_size} processes; choose another optim.batch_size.")
            if cfg.sync_bn:
                self.model = distributed.convert_sync_batchnorm(self.model, self.device)
            from torch.nn.parallel import DistributedDataParallel

            self.train_model = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if cfg.compile:
            self.train_model = torch.compile(self.train_model)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                                         weight_decay=cfg.optim.weight_decay)
        self.class_weight_cpu = losses.effective_number_weights(counts, cfg.loss.reweight_beta)
        self.class_weight = self.class_weight_cpu.to(self.device)
        self.normalizer = batches.Normalizer(*batches.channel_stats(ds.x_train))
        train_images = ds.x_train_base if cfg.oracle else ds.x_train
        self.x_train = batches.to_device_images(train_images, self.device)
        # Labels stay on the host too: batches are planned there (no device round trips per step).
        self.y_train_cpu = torch.from_numpy(ds.y_train)
        self.y_train = self.y_train_cpu.to(self.device)
        self.counts_t = torch.tensor(counts)
        self.x_val = batches.to_device_images(ds.x_val, self.device)
        self.y_val = torch.from_numpy(ds.y_val).to(self.device)
        self.augmenter = batches.Augmenter(self.normalizer, cfg.augment.crop, cfg.crop_padding,
                                           ds.nuisance if cfg.oracle else "none")
        self.batch_augment = self._strong_augment()
        self.sam = self._sharpness_aware()
        self.mixer = None
        if self.nuisance_sampler is not None:
            # The public mixer (invtransfer.git) makes GIT's decisions and writes the generated slots.
            self.mixer = GitMixer(self.nuisance_sampler, counts, gen_frac=cfg.git.gen_frac,
                                  weighting=cfg.git.weighting, class_size_threshold=cfg.git.class_size_threshold,
                                  seed=cfg.seed, mean=self.normalizer.mean, std=self.normalizer.std,
                                  filter=self.class_filter)

    def _strong_augment(self) -> BatchAugment | None:
        """The policy and mixing of ``augment.*`` (data/augment.py), or None when both are off."""
        a = self.cfg.augment
        policy = None if a.policy == "none" else Policy(
            a.policy, group=a.policy_group, randaugment_n=a.randaugment_n, randaugment_m=a.randaugment_m,
            autoaugment_policy=a.autoaugment_policy)
        strong = BatchAugment(policy, mixup=a.mixup, cutmix=a.cutmix)
        return strong if strong.active else None

    def _sharpness_aware(self) -> SharpnessAware | None:
        """SAM around the SGD step (train/sam.py) when ``optim.sam_rho > 0``."""
        o = self.cfg.optim
        if o.sam_rho <= 0:
            return None
        if self.tail_cpu is not None:
            # Tail-class SAM's ascent loss: the class weights (ones without reweighting) on the
            # tail classes only; on the host for the processes' loss shares, on the device for the loss.
            tail = self.tail_cpu.float()
            self.tail_weight_cpu = {False: tail, True: self.class_weight_cpu * tail}
            self.tail_weight = {k: v.to(self.device) for k, v in self.tail_weight_cpu.items()}
        return SharpnessAware(self.model.parameters(), o.sam_rho)

    def sam_active(self, epoch: int) -> bool:
        return self.sam is not None and epoch >= self.cfg.optim.sam_start_epoch

    def sampler_for(self, epoch: int) -> str:
        rule = self.cfg.rule
        return "balanced" if rule == "resample" or (rule == "drs" and epoch >= self.cfg.e1) else "uniform"

    def git_active(self, epoch: int) -> bool:
        return self.cfg.git_start is not None and epoch >= self.cfg.git_start

    def class_weight_for(self, epoch: int) -> torch.Tensor | None:
        rule = self.cfg.rule
        return self.class_weight if rule == "reweight" or (rule == "drw" and epoch >= self.cfg.e1) else None

    # ----------------------------------------------------------------- checkpoints
    def _state(self, epoch: int, step: int, running: dict) -> dict:
        return {"format": "invtransfer/classifier", "state": "full", "config": self.cfg_dict,
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "epoch": epoch, "step": step, "running": running, "best": self.best,
                "best_model": self.best_model, "dataset": self._dataset_meta(),
                "torch_rng": torch.get_rng_state(), "forked": self.forked, "wall_time_s": self.clock.wall()}

    def _dataset_meta(self) -> dict:
        return dataset_meta(self.ds, normalizer={"mean": self.normalizer.mean, "std": self.normalizer.std})

    def save_checkpoint(self, epoch: int, step: int, running: dict) -> None:
        if self.dist.is_main:  # the processes' states are identical; process 0 writes
            state = self._state(epoch, step, running)
            atomic_save(state, self.path("checkpoint.pt"))
            if step == 0 and epoch in self.cfg.keep_checkpoints:
                atomic_save(state, self.path(f"checkpoint_e{epoch}.pt"))

    def _load_state(self, ck: dict) -> None:
        """Model, optimiser, best weights so far and RNG of a full checkpoint."""
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.best, self.best_model = ck["best"], ck["best_model"]
        torch.set_rng_state(ck["torch_rng"])

    def _restore(self) -> tuple[int, int, dict]:
        ck = self.load_resumable()
        self._load_state(ck)
        self.forked = ck.get("forked")
        self.clock.restore(ck, lambda: self._logged_time(int(ck["epoch"])))
        return int(ck["epoch"]), int(ck["step"]), dict(ck["running"])

    def _fork(self) -> tuple[int, int, dict]:
        """Start from ``init_from``: another run's state at a point before this run differs from it."""
        cfg = self.cfg
        path = cfg.init_from
        if os.path.isdir(path):
            path = os.path.join(path, "checkpoint.pt")
        if not os.path.isfile(path):
            raise InvTransferError(f"config key 'init_from'={cfg.init_from!r}: no such checkpoint file; expected a "
                                   f"classifier checkpoint (e.g. runs/NAME/checkpoint_e31.pt) or run directory.")
        ck = load_checkpoint(path, "classifier")
        check_resumable(ck, path, TrainConfig, self.cfg_dict, _FORK_FREE, self.run_dir, self.ds.fingerprint,
                        action="start from")
        # at today's defaults, so keys added since that run started do not count as differences
        src_git = dict(to_dict(GitConfig()), **(ck["config"].get("git") or {}))
        if src_git.get("generator") and src_git != self.cfg_dict["git"]:
            raise InvTransferError(f"config key 'init_from'={cfg.init_from!r}: that run uses GIT with other "
                                   f"settings; start only from a run without GIT or with the same git.* keys.")
        epoch, step = int(ck["epoch"]), int(ck["step"])
        first = cfg.git_start if cfg.git_start is not None and not src_git.get("generator") else cfg.optim.epochs
        if (epoch, step) > (first, 0):
            raise InvTransferError(f"config key 'init_from'={cfg.init_from!r}: its checkpoint is at epoch {epoch} "
                                   f"step {step}, after this run's first GIT epoch ({first}), where the two runs "
                                   f"already differ. Use a checkpoint taken after at most {first} epochs "
                                   f"(keep_checkpoints=[{first}] in the run it starts from).")
        self._load_state(ck)
        # The source's log of the shared epochs becomes this run's (curves and CSV stay complete).
        src_log = os.path.join(os.path.dirname(path), "metrics.jsonl")
        if self.dist.is_main and os.path.isfile(src_log):
            with open(src_log, encoding="utf-8") as fh:
                lines = log_lines_upto(fh, "epoch", epoch)
            datasets.atomic_write_bytes(self.path("metrics.jsonl"), "".join(lines).encode())
        self.forked = {"checkpoint": os.path.abspath(path), "epoch": epoch, "step": step,
                       "wall_time_s": ck.get("wall_time_s")}
        print(f"starting from {path} (epoch {epoch}, step {step}); epochs up to there are that run's", flush=True)
        return epoch, step, dict(ck["running"])

    def _logged_time(self, epoch: int) -> float:
        """Training time of the logged epochs up to ``epoch``: the wall time of a checkpoint written
        before checkpoints recorded it (evaluation and set-up not included)."""
        try:
            with open(self.path("metrics.jsonl"), encoding="utf-8") as fh:
                lines = log_lines_upto(fh, "epoch", epoch)
            return float(sum(json.loads(ln).get("epoch_time_s", 0.0) for ln in lines))
        except OSError:
            return 0.0

    def wall_time(self) -> float:
        """Seconds this run has trained, over all its processes (a resumed run adds the time up to
        its checkpoint; work redone after an interruption counts once; a run started with
        ``init_from`` does not count the epochs it started from: ``started_from`` has those)."""
        return self.clock.wall()

    # ----------------------------------------------------------------- the loop
    def run(self) -> dict:
        """Train (or resume) and write every output; returns ``results.json``'s content."""
        o = self.cfg.optim
        self.clock.start()
        epoch, start_step, running = self._start()
        tb = self._tensorboard()
        steps = math.ceil(len(self.y_train) / o.batch_size)
        with StopSignals() as self.signals:
            while epoch < o.epochs:
                lr = self._set_learning_rate(epoch)
                order = self._epoch_order(epoch)
                running = running or {"loss": 0.0, "correct": 0, "seen": 0, "time": 0.0, "generated": 0}
                bar = self._progress(epoch, steps, start_step)
                self.model.train()
                t0 = time.time()
                for step in range(start_step, steps):
                    bidx, bidx2 = order(step)
                    loss, correct, plan = self._guarded_step(bidx, epoch, step, steps, bidx2)
                    self._count(running, loss, correct, plan, len(bidx), epoch, step, steps)
                    self._show(bar, running, lr, t0)
                    if self._stop_requested():
                        self._stop(epoch, step + 1, steps, running, t0, bar)
                if bar is not None:
                    bar.close()
                running["time"] += time.time() - t0
                self._check_finite_weights(epoch, steps, steps)  # before this epoch is logged or checkpointed
                self._log_epoch(epoch, lr, running, tb)
                epoch, start_step, running = epoch + 1, 0, {}
                self._checkpoint_after(epoch)
        if tb is not None:
            tb.close()
        return self.finish(lambda: self._write_results(self.wall_time()))

    def _start(self) -> tuple[int, int, dict]:
        """Epoch, step and running statistics to start from: the checkpoint's when resuming,
        ``init_from``'s when forking, else the beginning (a new run also writes config.yaml)."""
        if self.cfg.resume:
            position = self._restore()
            self.truncate_log(position[0])
            return position
        position = self._fork() if self.cfg.init_from else (0, 0, {})  # every process loads the same state
        self.write_config()
        return position

    def _set_learning_rate(self, epoch: int) -> float:
        lr = learning_rate(self.cfg.optim, epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def _epoch_order(self, epoch: int):
        """``order(step)``: the step's global batch indices and, with GIT, its second stream's."""
        cfg, bs = self.cfg, self.cfg.optim.batch_size
        # Epoch indices stay on the host, where each step's batch is planned.
        idx = batches.epoch_indices(self.sampler_for(epoch), self.y_train_cpu, self.counts_t, cfg.seed, epoch)
        # GIT's second stream: same sampler as the main one, independent draws.
        idx2 = batches.epoch_indices(self.sampler_for(epoch), self.y_train_cpu, self.counts_t, cfg.seed, epoch,
                                     stream=2) if self.git_active(epoch) else None
        return lambda step: (idx[step * bs:(step + 1) * bs],
                             None if idx2 is None else idx2[step * bs:(step + 1) * bs])

    def _guarded_step(self, bidx: torch.Tensor, epoch: int, step: int, steps: int,
                      bidx2: torch.Tensor | None) -> tuple[float, int, BatchPlan]:
        """:meth:`_train_step`, with CUDA running out of memory turned into a clear error."""
        o = self.cfg.optim
        return without_out_of_memory(
            lambda: self._train_step(bidx, epoch, step, self.class_weight_for(epoch), bidx2),
            f"in training step {step + 1}/{steps} of epoch {epoch + 1}/{o.epochs}", "optim.batch_size",
            o.batch_size, min(o.batch_size, len(self.y_train)),
            lambda _: self._stopped() + " A smaller batch size makes another run, which cannot resume this "
                                        "one's checkpoint: start it with overwrite=true or another name=.")

    def _count(self, running: dict, loss: float, correct: int, plan: BatchPlan, n: int, epoch: int, step: int,
               steps: int) -> None:
        """Add one step to the epoch's running statistics; a non-finite loss stops the run.

        ``generated`` counts the slots the generator filled; with git.filter, ``git_filter_proposed``
        and ``git_filter_accepted`` count them per class before and after the filter (global counts:
        every process holds the whole batch's decisions, see :meth:`_filtered`). Like the other
        statistics they live in ``running``, which checkpoints carry, so a resumed epoch counts on.
        """
        running["generated"] = running.get("generated", 0) + plan.generated
        if plan.accepted is not None:
            k = len(self.counts_t)
            for key, labels in (("git_filter_proposed", plan.git.labels),
                                ("git_filter_accepted", plan.git.labels[plan.accepted])):
                counts = torch.bincount(labels, minlength=k).tolist()
                running[key] = [a + b for a, b in zip(running.get(key) or [0] * k, counts)]
        if not math.isfinite(loss):
            raise InvTransferError(
                f"non-finite training loss ({loss}) in step {step + 1}/{steps} of epoch {epoch + 1}/"
                f"{self.cfg.optim.epochs}; the run stopped. The last good checkpoint is "
                f"{self.path('checkpoint.pt')} (if one was written); try a smaller optim.lr.")
        running["loss"] += loss * n
        running["correct"] += correct
        running["seen"] += n

    @staticmethod
    def _show(bar, running: dict, lr: float, t0: float) -> None:
        if bar is not None:
            el = running["time"] + time.time() - t0
            bar.set_postfix(loss=f"{running['loss'] / running['seen']:.3f}",
                            acc=f"{100 * running['correct'] / running['seen']:.1f}", lr=f"{lr:.3g}",
                            **{"img/s": f"{running['seen'] / max(el, 1e-9):.0f}"})
            bar.update(1)

    def _stop_requested(self) -> bool:
        """Whether to stop after this step: a signal here or, with several processes, in any of
        them by this step's exchange (see :meth:`_train_step`), so that all stop in the same step."""
        return self._agreed_stop if self.dist.enabled else self.signals.stop

    def _stop(self, epoch: int, step: int, steps: int, running: dict, t0: float, bar) -> None:
        """Save the state after ``step`` of ``epoch`` and end the run with :class:`TrainingInterrupted`."""
        running["time"] += time.time() - t0
        self._check_finite_weights(epoch, step, steps)
        self.save_checkpoint(epoch, step, running)
        self.dist.barrier()
        if bar is not None:
            bar.close()
        raise self.interrupted(f"epoch {epoch} step {step}/{steps}", "checkpoint")

    def _log_epoch(self, epoch: int, lr: float, running: dict, tb) -> None:
        """The epoch's record in metrics.jsonl, the terminal and TensorBoard (process 0)."""
        if not self.dist.is_main:
            return
        record = self._end_epoch(epoch, lr, running)
        if tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and v is not None:
                    tb.add_scalar(k, v, epoch)

    def _checkpoint_after(self, epochs_done: int) -> None:
        cfg = self.cfg
        if epochs_done % cfg.checkpoint_every == 0 or epochs_done == cfg.optim.epochs \
                or epochs_done in cfg.keep_checkpoints:
            self.save_checkpoint(epochs_done, 0, {})

    def plan_batch(self, bidx: torch.Tensor, epoch: int, step: int,
                   bidx2: torch.Tensor | None = None) -> BatchPlan:
        """The random decisions of one global batch, made on the CPU with the step's generators.

        Stream 1 draws the augmentation of the batch; with GIT (``bidx2`` = the second stream's
        indices at the same positions) the mixer's stream 2 decides which of ``k = gen_frac * n``
        evenly spaced candidate slots are generated (:meth:`GitMixer.choose`), then draws those
        sources' augmentation and their random styles (:meth:`GitMixer.draw_styles`). Evenly spaced
        (not the last k): with several processes each one's contiguous shard then holds its share
        of the generated slots, so the generator's cost is split and no process's batch-norm
        statistics come from generated images alone. With ``git.input_crop=false`` the sources'
        crop offsets are still drawn, so every later draw is the same, but not applied.
        """
        bidx = bidx.cpu()
        g = batches.step_generator(self.cfg.seed, epoch, step, stream=1)
        augment = self.augmenter.sample(len(bidx), g)
        labels = self.y_train_cpu[bidx]  # a copy (advanced indexing), safe to overwrite
        none = torch.zeros(0, dtype=torch.long)
        plan = BatchPlan(bidx, augment, labels, none, none)
        if bidx2 is not None and self.mixer is not None:
            g2 = self.mixer.rng(epoch, step)
            bidx2 = bidx2.cpu()
            labels2 = self.y_train_cpu[bidx2]
            slots = self.mixer.choose(labels2, g2)
            if len(slots):
                plan.gen_slots, plan.gen_index = slots, bidx2[slots]
                plan.gen_augment = self.augmenter.sample(len(slots), g2)
                if not self.cfg.git.input_crop:
                    plan.gen_augment.crop = None
                plan.git = MixPlan(slots, labels2[slots], self.mixer.draw_styles(len(slots), g2))
                labels[slots] = plan.git.labels
        return plan

    def materialize(self, plan: BatchPlan, rows: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images and labels of rows ``[start, stop)`` (default all) of a planned batch.

        Only the generated slots among those rows go through the generator (nothing is generated
        and thrown away). With ``git.filter`` the mixer writes only the generated images its
        class filter accepts; :meth:`_filtered` then gives the rejected slots back their real
        labels in the plan (the global batch's, which the losses' shares and mixing read).
        """
        start, stop = rows if rows is not None else (0, len(plan.index))
        dev = self.device
        x = self.augmenter.apply(self.x_train[batches.to_device(plan.index[start:stop], dev)],
                                 plan.augment.select(slice(start, stop)))
        if plan.git is not None:
            mine = plan.git.within(start, stop)
            accepted = torch.zeros(0, dtype=torch.bool)
            if bool(mine.any()):
                x2 = self.augmenter.apply(self.x_train[batches.to_device(plan.gen_index[mine], dev)],
                                          plan.gen_augment.select(mine))
                accepted = self.mixer.replace_accepted(x, plan.git, x2, rows=(start, stop))
            if self.mixer.filter is not None:
                self._filtered(plan, mine, accepted, (start, stop))
        y = batches.to_device(plan.labels[start:stop], dev)
        return x, y

    def _filtered(self, plan: BatchPlan, mine: torch.Tensor, accepted: torch.Tensor, rows: tuple[int, int]) -> None:
        """Record git.filter's decisions in the plan: ``plan.accepted`` over all generated slots and,
        for each rejected one, the main batch's real label in ``plan.labels``.

        ``accepted`` covers this process's slots (``mine``). With several processes every one
        calls this in the same steps (the plan is global) and one all-gather of a flag per row
        gives each the whole batch's decisions, so all agree on the global labels; the per-class
        counts of the epoch then come from the same decisions on every process.
        """
        n = len(plan.index)
        decided = torch.zeros(plan.generated, dtype=torch.bool)
        decided[torch.nonzero(mine).flatten()[accepted]] = True
        known = mine
        if self.dist.enabled:
            flags = torch.zeros(rows[1] - rows[0], dtype=torch.float32)
            flags[plan.gen_slots[decided] - rows[0]] = 1.0
            flags = self.dist.gather_rows(flags.to(self.dist.device), n).cpu()
            decided, known = flags[plan.gen_slots] > 0.5, torch.ones_like(mine)
        rejected = plan.gen_slots[known & ~decided]
        plan.labels[rejected] = self.y_train_cpu[plan.index[rejected]]
        plan.accepted = decided if bool(known.all()) else None

    def compose_batch(self, bidx: torch.Tensor, epoch: int, step: int, bidx2: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor | MixedTargets, int]:
        """The normalised training batch and targets of one step (GIT's generated slots, then the
        policy and mixing of ``augment.*``)."""
        plan = self.plan_batch(bidx, epoch, step, bidx2)
        x, y = self.materialize(plan)
        x, y, _ = self.strong_augment(x, y, plan, (0, len(plan.index)), epoch, step)
        return x, y, plan.generated

    def strong_augment(self, x: torch.Tensor, y: torch.Tensor, plan: BatchPlan, rows: tuple[int, int], epoch: int,
                       step: int) -> tuple[torch.Tensor, torch.Tensor | MixedTargets, torch.Tensor | MixedTargets]:
        """``augment.policy`` and mixing (data/augment.py) of this process's rows ``x``, ``y`` of a
        composed batch; also returns the global batch's targets (host), which the losses' shares need.

        They act on the batch as GIT left it, so generated rows are augmented and mixed like real
        ones. Both need the whole batch (policy groups and mixing partners cross the processes'
        shards), so several processes gather it and each applies the same draws to all of it.
        """
        if self.batch_augment is None:
            return x, y, plan.labels
        n = len(plan.index)
        g = batches.step_generator(self.cfg.seed, epoch, step, stream=augment.STREAM)
        draw = self.batch_augment.draw(n, x.shape[-2], x.shape[-1], g)
        x = self.batch_augment.images(self.dist.gather_rows(x, n), draw, self.normalizer, rows)
        targets = self.batch_augment.targets(plan.labels, draw)
        if not isinstance(targets, MixedTargets):
            return x, y, targets
        mine = self.batch_augment.targets(plan.labels, draw, rows)
        return x, MixedTargets(batches.to_device(mine.a, self.device), batches.to_device(mine.b, self.device),
                               mine.lam), targets

    def _train_step(self, bidx: torch.Tensor, epoch: int, step: int, weight: torch.Tensor | None,
                    bidx2: torch.Tensor | None = None) -> tuple[float, int, BatchPlan]:
        """One optimiser step on the global batch ``bidx``; returns its loss, correct count and plan
        (generated slots and, with git.filter, the filter's decisions).

        With several processes each builds and forwards its shard; the shard's loss is scaled so
        that DDP's gradient average is the global batch's gradient. One host synchronisation per
        step: the loss (an all-reduce with several processes), needed for the non-finite check.
        """
        plan = self.plan_batch(bidx, epoch, step, bidx2)
        rows = self.dist.shard(len(plan.index))
        x, y = self.materialize(plan, rows)
        x, y, targets = self.strong_augment(x, y, plan, rows, epoch, step)
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.sam_active(epoch) and self._has_ascent(targets):
            loss, logits = self._sam_update(x, y, targets, rows, weight)
        else:
            loss, logits = self._sgd_update(x, y, targets, rows, weight)
        # Mixed rows count as correct for the label with the larger share.
        hard = y if not isinstance(y, MixedTargets) else (y.a if y.lam >= 0.5 else y.b)
        correct = (logits.argmax(1) == hard).sum()
        if not self.dist.enabled:
            loss_value, correct_value = torch.stack([loss.detach(), correct.to(loss.dtype)]).tolist()
            return loss_value, int(correct_value), plan
        stats = torch.stack([loss.detach().double(), correct.double()])
        (loss_sum, correct_sum), self._agreed_stop = self.agree_on_stop(stats)
        return loss_sum / self.dist.world_size, int(correct_sum), plan

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.amp_dtype):
            return self.train_model(x)

    def _sgd_update(self, x: torch.Tensor, y, targets, rows: tuple[int, int],
                    weight: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward, loss, backward and optimiser step; returns the loss and the logits."""
        logits = self._forward(x)
        loss = self.shard_loss(logits.float(), y, targets, rows, weight)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss, logits

    def _sam_update(self, x: torch.Tensor, y, targets, rows: tuple[int, int],
                    weight: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM's step (train/sam.py): gradient at the weights (of the tail classes' loss with
        sam_classes=tail), gradient of the loss at the perturbed weights, optimiser step at the
        weights. Returns the loss and logits at the weights, as the plain step does."""
        seen: dict[str, torch.Tensor] = {}

        def ascent() -> torch.Tensor:
            seen["logits"] = logits = self._forward(x)
            seen["loss"] = self.shard_loss(logits.float(), y, targets, rows, weight)
            if self.tail_cpu is None:
                return seen["loss"]
            return self.shard_loss(logits.float(), y, targets, rows, weight, tail=True)

        def descent() -> torch.Tensor:
            seen["perturbed"] = self.shard_loss(self._forward(x).float(), y, targets, rows, weight)
            return seen["perturbed"]

        self.sam.gradient(ascent, descent, self.model)
        self.optimizer.step()
        # A non-finite loss at the perturbed weights stops the run like one at the weights
        # (0 * inf and 0 * nan are nan; 0 * a finite loss adds nothing).
        return seen["loss"] + 0.0 * seen["perturbed"].detach(), seen["logits"]

    def _has_ascent(self, targets) -> bool:
        """Whether SAM's perturbation can be nonzero: always, except for tail-class SAM on a
        global batch without a tail example (its step is then the plain one)."""
        if self.tail_cpu is None:
            return True
        return any(bool(self.tail_cpu[labels].any()) for labels, _ in _terms(targets))

    def shard_loss(self, logits: torch.Tensor, y, targets, rows: tuple[int, int], weight: torch.Tensor | None,
                   tail: bool = False) -> torch.Tensor:
        """This process's share of the global batch's mean loss.

        ``y``: the targets of its rows ``rows`` (labels or :class:`MixedTargets`); ``targets``: the
        global batch's, on the host. Each term of mixed targets is a mean with its own labels'
        weights, so each gets its own share (:meth:`Dist.loss_scale`). ``tail``: the loss of the
        tail classes' examples only (tail-class SAM's ascent), a term without such an example 0.
        """
        if not tail and not self.dist.enabled:
            return self.loss_fn(logits, y, class_weight=weight)
        per_class, per_class_cpu = weight, (None if weight is None else self.class_weight_cpu)
        if tail:
            per_class_cpu = self.tail_weight_cpu[weight is not None]
            per_class = self.tail_weight[weight is not None]
        weighted = per_class is not None and self.loss_fn.weighted_mean
        total = None
        for (local, lam), (labels, _) in zip(_terms(y), _terms(targets)):
            mean_weights = per_class_cpu[labels] if weighted else torch.ones(len(labels))
            if weighted and not bool(mean_weights[rows[0]:rows[1]].any()):
                term = logits.sum() * 0.0  # no example of weight > 0 here: 0, not 0/0 (graph kept for DDP)
            else:
                term = self.loss_fn(logits, local, class_weight=per_class) * self.dist.loss_scale(mean_weights, rows)
            term = term if lam == 1.0 else lam * term
            total = term if total is None else total + term
        return total

    def _progress(self, epoch: int, steps: int, start_step: int):
        if self.cfg.quiet or not self.dist.is_main:
            return None
        from tqdm import tqdm
        return tqdm(total=steps, initial=start_step, desc=f"epoch {epoch + 1}/{self.cfg.optim.epochs}",
                    leave=False, dynamic_ncols=True, file=sys.stderr)

    def _evaluate(self, images, labels, what: str) -> dict:
        bs = self.cfg.eval_batch_size
        return without_out_of_memory(
            lambda: evaluate_split(self.model, images, labels, self.normalizer, self.ds.train_class_counts,
                                   batch_size=bs, amp_dtype=self.amp_dtype, channels_last=self.cfg.channels_last),
            f"evaluating {what}", "eval_batch_size", bs, min(bs, len(labels)),
            lambda smaller: self._stopped() + (f" It continues with resume=true eval_batch_size={smaller} (the "
                                               f"evaluation batch size does not change training)."
                                               if os.path.isfile(self.path("checkpoint.pt")) else ""))

    def _stopped(self) -> str:
        """Where a run that stopped on an error stands (nothing is written on the way out)."""
        ck = self.path("checkpoint.pt")
        return (f" The run stopped; its last checkpoint, {ck}, is as it was." if os.path.isfile(ck)
                else " The run stopped before its first checkpoint.")

    def _check_finite_weights(self, epoch: int, done: int, steps: int) -> None:
        """Refuse to log or checkpoint weights that an optimiser step made non-finite (the loss of
        that step was finite: it is computed before the step)."""
        state = {k: v for k, v in self.model.state_dict().items() if v.is_floating_point()}
        finite = torch.stack([v.isfinite().all() for v in state.values()])
        if not bool(finite.all()):  # one host synchronisation
            bad = [k for k, ok in zip(state, finite.tolist()) if not ok]
            raise InvTransferError(
                f"non-finite model weights ({bad[0]}{f' and {len(bad) - 1} more' if len(bad) > 1 else ''}) after "
                f"step {done}/{steps} of epoch {epoch + 1}/{self.cfg.optim.epochs}, although every training loss was finite; "
                f"they were not saved."
                f"{self._stopped()} Try a smaller optim.lr.")

    def _end_epoch(self, epoch: int, lr: float, running: dict) -> dict:
        cfg = self.cfg
        record: dict[str, Any] = {"epoch": epoch + 1, "lr": lr, "sampler": self.sampler_for(epoch),
                                  "reweighted": self.class_weight_for(epoch) is not None,
                                  "git": self.git_active(epoch), "generated": running.get("generated", 0),
                                  "train_loss": running["loss"] / max(running["seen"], 1),
                                  "train_accuracy": 100.0 * running["correct"] / max(running["seen"], 1),
                                  "images_per_s": running["seen"] / max(running["time"], 1e-9),
                                  "epoch_time_s": running["time"]}
        if self.class_filter is not None and self.git_active(epoch):
            zeros = [0] * len(self.counts_t)
            record.update(git_filter_proposed=running.get("git_filter_proposed") or zeros,
                          git_filter_accepted=running.get("git_filter_accepted") or zeros)
        last = epoch + 1 == cfg.optim.epochs
        if len(self.y_val) and ((epoch + 1) % cfg.eval_every == 0 or last):
            m = self._evaluate(self.x_val, self.y_val, f"the validation split after epoch {epoch + 1}/{cfg.optim.epochs}")
            record.update(val_error=m["error"], val_balanced_accuracy=m["balanced_accuracy"])
            # Tracked whatever `select` says, so a finished run can be re-finished with the other
            # policy (resume=true select=...: the loop is done, only the outputs are rewritten).
            if m["balanced_accuracy"] > self.best["balanced_accuracy"]:
                self.best = {"epoch": epoch + 1, "balanced_accuracy": m["balanced_accuracy"]}
                self.best_model = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        append_log(self.path("metrics.jsonl"), record)
        msg = (f"epoch {epoch + 1}/{cfg.optim.epochs} loss {record['train_loss']:.4f} "
               f"acc {record['train_accuracy']:.2f} lr {lr:.3g} {record['images_per_s']:.0f} img/s")
        if "val_balanced_accuracy" in record:
            msg += f" val bal-acc {record['val_balanced_accuracy']:.2f}"
        print(msg, file=sys.stderr if not cfg.quiet else sys.stdout, flush=True)
        return record

    def _tensorboard(self):
        """A SummaryWriter on runs/<name>/tensorboard (tensorboard=true, process 0), else None."""
        return None if self._summary_writer is None else self._summary_writer(self.path("tensorboard"))

    # ----------------------------------------------------------------- the end
    def _write_results(self, wall_time: float) -> dict:
        cfg, ds = self.cfg, self.ds
        x_test = batches.to_device_images(ds.x_test, self.device)
        y_test = torch.from_numpy(ds.y_test).to(self.device)
        # The other policy's test metrics too, where it picks other weights: the selection can
        # decide a comparison (a CE+DRS run that peaks before DRS), so every run reports both.
        other = None
        if self.best_model is not None and self.best["epoch"] != cfg.optim.epochs:
            last = None if cfg.select == "val" else {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            if last is not None:
                self.model.load_state_dict(self.best_model)
            m = self._evaluate(x_test, y_test, "the test split")
            other = {"which": "last" if cfg.select == "val" else "best_val",
                     "epoch": cfg.optim.epochs if cfg.select == "val" else self.best["epoch"],
                     **{f"test_{k}": m[k] for k in ("error", "balanced_accuracy")},
                     **{k: m[k] for k in ("many_shot_accuracy", "medium_shot_accuracy", "few_shot_accuracy",
                                          "per_class_accuracy")}}
            if last is not None:  # select=val loads the best weights below
                self.model.load_state_dict(last)
        if cfg.select == "val" and self.best_model is not None:
            self.model.load_state_dict(self.best_model)
            selected = {"which": "best_val", "epoch": self.best["epoch"],
                        "why": f"highest validation balanced accuracy ({self.best['balanced_accuracy']:.2f}%) "
                               f"over epochs evaluated every {cfg.eval_every}"}
        else:
            why = "select=last" if cfg.select == "last" else "no validation images, so the last epoch"
            selected = {"which": "last", "epoch": cfg.optim.epochs, "why": why}
        test = self._evaluate(x_test, y_test, "the test split")
        atomic_save({"format": "invtransfer/classifier", "state": "weights", "config": self.cfg_dict,
                     "model": self.model.state_dict(), "dataset": self._dataset_meta(),
                     "selected_weights": selected}, self.path("model.pt"))
        results = {"dataset": ds.label, "method": self.method, "seed": cfg.seed, "instance": ds.config["instance"],
                   "train_class_counts": ds.train_class_counts, "test_error": test["error"],
                   "test_accuracy": test["accuracy"], "test_balanced_accuracy": test["balanced_accuracy"],
                   "per_class_accuracy": test["per_class_accuracy"],
                   "many_shot_accuracy": test["many_shot_accuracy"],
                   "medium_shot_accuracy": test["medium_shot_accuracy"],
                   "few_shot_accuracy": test["few_shot_accuracy"], "shot_group_sizes": test["shot_group_sizes"],
                   "confusion_matrix": test["confusion_matrix"], "selected_weights": selected,
                   "other_selection": other,
                   "wall_time_s": wall_time, "started_from": self.forked, "device": str(self.device),
                   "git_generator": self._generator_used(), "git_filter": self._filter_used(),
                   "versions": versions(),
                   "dataset_fingerprint": ds.fingerprint, "dataset_warnings": ds.warnings, "config": self.cfg_dict}
        json_dump(self.path("results.json"), results)
        self._write_csv()
        self._plots(results)
        print(f"test error {test['error']:.2f}%  balanced accuracy {test['balanced_accuracy']:.2f}%  "
              f"({selected['which']} weights, epoch {selected['epoch']}); outputs in {self.run_dir}", flush=True)
        return results

    def _generator_used(self) -> dict | None:
        """Which generator GIT used: path, its training data's name, instance and fingerprint,
        its iteration and images seen, and whether another dataset's generator was allowed."""
        if self.nuisance_sampler is None:
            return None
        return dict(self.nuisance_sampler.provenance(), allow_other_dataset=self.cfg.git.allow_other_dataset)

    def _filter_used(self) -> dict | None:
        """git.filter's rule, threshold and reference classifier (path, dataset, fingerprint), and
        whether another dataset's classifier was allowed."""
        if self.class_filter is None:
            return None
        return dict(self.class_filter.provenance(), allow_other_dataset=self.cfg.git.allow_other_dataset)

    def _records(self) -> list[dict]:
        with open(self.path("metrics.jsonl"), encoding="utf-8") as fh:
            return [json.loads(ln) for ln in fh if ln.strip()]

    def _write_csv(self) -> None:
        records = self._records()
        keys = sorted({k for r in records for k in r}, key=lambda k: (k != "epoch", k))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        writer.writerows(records)
        datasets.atomic_write_bytes(self.path("metrics.csv"), buf.getvalue().encode())

    def _plots(self, results: dict) -> None:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        records = self._records()
        ep = [r["epoch"] for r in records]
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
        axes[0].plot(ep, [r["train_loss"] for r in records])
        axes[0].set(title="training loss", xlabel="epoch")
        axes[1].plot(ep, [r["train_accuracy"] for r in records], label="train (sampled batches)")
        val = [(r["epoch"], r["val_balanced_accuracy"]) for r in records if "val_balanced_accuracy" in r]
        if val:
            axes[1].plot(*zip(*val), marker=".", label="val balanced")
        axes[1].set(title="accuracy (%)", xlabel="epoch")
        axes[1].legend(fontsize=7)
        axes[2].plot(ep, [r["lr"] for r in records])
        axes[2].set(title="learning rate", xlabel="epoch", yscale="log")
        fig.suptitle(f"{results['dataset']} {results['method']} seed {results['seed']}", fontsize=9)
        fig.tight_layout()
        fig.savefig(self.path("curves.png"), dpi=90)
        plt.close(fig)
        plot_per_class_accuracy([results], self.path("per_class_accuracy.png"))


def _terms(targets) -> tuple:
    """``((labels, weight), ...)``: one term of hard labels, or the two of mixed targets."""
    return targets.terms() if isinstance(targets, MixedTargets) else ((targets, 1.0),)


def plot_per_class_accuracy(results: list[dict], path: str) -> None:
    """Per-class test accuracy against training class size (log x), one series per result."""
    plot_against_class_size({f"{r['method']} (s{r['seed']})": list(zip(r["train_class_counts"], r["per_class_accuracy"]))
                             for r in results}, path, ylabel="test accuracy (%)",
                            title=f"{results[0]['dataset']}: per-class accuracy vs class size")


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) one classifier training; returns ``results.json``'s content."""
    return run_locked(ClassifierRun(cfg))


__all__ = ["TrainConfig", "OptimConfig", "LossConfig", "train", "load_classifier", "evaluate_checkpoint",
           "learning_rate", "method_label", "predict_logits"]
