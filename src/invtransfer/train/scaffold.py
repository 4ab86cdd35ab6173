"""What a classifier run and a generator run share: process group, dataset, run directory, time,
resume, logs and stops.

:class:`TrainingRun` is the scaffold both training loops build on
(:class:`~invtransfer.train.classifier.ClassifierRun`,
:class:`~invtransfer.train.generator.GeneratorRun`). Constructing one joins torchrun's process
group (if any), resolves the device and autocast dtype, builds the dataset (process 0 first, so
the others read its cache), lets the subclass check its options against the dataset
(:meth:`TrainingRun._configure`) and prepares the run directory. Its options are those of
:class:`~invtransfer.train.configs.RunOptions`.

A run's checkpoint (``checkpoint.pt`` or ``state.pt``) is a full training state; resuming one
refuses a checkpoint whose config differs in any key outside the subclass's ``resume_free``, and
drops the log lines the resumed run will write again. Wall time (and CPU time) add up over the
processes that worked on the run.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Callable

import torch

from invtransfer.config import dump_yaml, to_dict
from invtransfer.data import datasets
from invtransfer.data.datasets import DatasetConfig, LTDataset
from invtransfer.errors import InvTransferError
from invtransfer.fileio import atomic_write_bytes, prepare_run_dir
from invtransfer.train import distributed
from invtransfer.train.checkpoint import (
    StopSignals,
    TrainingInterrupted,
    check_resumable,
    load_checkpoint,
    log_lines_upto,
)
from invtransfer.train.runtime import autocast_dtype, resolve_device


def build_dataset_on_main_first(dist: distributed.Dist, cfg: DatasetConfig) -> LTDataset:
    """The dataset of ``cfg``, built by process 0 first (which writes the cache), then by the others
    (which read it)."""
    built: dict = {}
    dist.on_main(lambda: built.setdefault("ds", datasets.build_dataset(cfg)) and None)
    return built["ds"] if dist.is_main else datasets.build_dataset(cfg)


def require_training_images(ds: LTDataset) -> None:
    """Refuse a dataset with a class that has no training image (per-class sizes would be 0)."""
    counts = ds.train_class_counts
    if min(counts) == 0:
        empty = [ds.class_names[c] for c, n in enumerate(counts) if n == 0]
        raise InvTransferError(f"dataset {ds.name!r} has classes without training images: {empty[:5]}.")


def dataset_meta(ds: LTDataset, **extra) -> dict:
    """What a checkpoint records about its dataset (``extra``: the job's own entries)."""
    return {"name": ds.name, "fingerprint": ds.fingerprint, "class_names": ds.class_names,
            "train_class_counts": ds.train_class_counts, "image_shape": list(ds.image_shape),
            "nuisance": ds.nuisance, **extra}


def truncate_log(path: str, key: str, upto: int) -> None:
    """Keep the lines of the ``metrics.jsonl`` at ``path`` whose ``key`` is at most ``upto`` (the
    ones a resumed run does not write again); the file is rewritten only when a line goes."""
    if not os.path.isfile(path):
        return
    with open(path, "rb") as fh:
        raw = fh.read()
    kept = "".join(log_lines_upto(raw.decode("utf-8").splitlines(keepends=True), key, upto)).encode()
    if raw != kept:  # nothing to drop: a resume that fails early leaves the file as it was
        atomic_write_bytes(path, kept)


def append_log(path: str, record: dict) -> None:
    """One JSON line more in ``metrics.jsonl`` (a killed writer leaves at most a partial last line,
    which :func:`truncate_log` drops on resume)."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


def config_digest(cfg_dict: dict, ignore: tuple[str, ...] = ()) -> str:
    """Eight hex digits of what a config trains: every key (dotted) except those starting with one
    of ``ignore`` (where the run lives, how it reports), so equal digests mean equal training."""
    flat: dict = {}

    def walk(d: dict, prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            elif not f"{prefix}{k}".startswith(ignore):
                flat[f"{prefix}{k}"] = v

    walk(cfg_dict, "")
    return hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:8]


def launch_stamp() -> str:
    """The launch time to the second and a random tag: two launches in the same second, also on
    two machines writing one out_dir, get different stamps."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


class RunClock:
    """Wall and CPU seconds a run has trained, over all the processes that worked on it.

    ``start()`` begins this process's share; ``restore(ck)`` adds the earlier processes' time
    recorded in a checkpoint. CPU time is ``time.process_time()`` (all threads); a checkpoint
    written before CPU time was recorded makes it partial (``cpu_partial``).
    """

    def __init__(self) -> None:
        self.wall_before, self.cpu_before, self.cpu_partial = 0.0, 0.0, False
        self.start()

    def start(self) -> None:
        self.t_start, self.cpu_start = time.time(), time.process_time()

    def restore(self, ck: dict, logged_wall: Callable[[], float] = lambda: 0.0) -> None:
        """The earlier processes' time from checkpoint ``ck``; ``logged_wall()`` stands in for a
        checkpoint without ``wall_time_s``."""
        self.wall_before = float(ck["wall_time_s"]) if "wall_time_s" in ck else logged_wall()
        self.cpu_before = float(ck.get("cpu_time_s", 0.0))
        self.cpu_partial = "cpu_time_s" not in ck or bool(ck.get("cpu_time_partial", False))

    def wall(self) -> float:
        return self.wall_before + time.time() - self.t_start

    def cpu(self) -> float:
        return self.cpu_before + time.process_time() - self.cpu_start


class TrainingRun:
    """The scaffold of one training run; subclasses implement ``run()`` and set the class attributes.

    ``kind`` is the checkpoint format (``invtransfer/<kind>``), ``checkpoint_file`` the full-state
    file in the run directory, ``command`` the CLI command that resumes it, ``log_key`` the
    position key of ``metrics.jsonl`` records and ``resume_free`` the config keys (prefixes) a
    resumed run may change.
    """

    kind: str = ""
    checkpoint_file: str = ""
    command: str = ""
    log_key: str = ""
    resume_free: tuple[str, ...] = ()

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self.cfg_dict = to_dict(cfg)
        self.clock = RunClock()
        self.signals: StopSignals | None = None  # set while run() trains
        # torchrun's variables (if any) decide the process group and this process's device.
        self.dist, self.device = distributed.from_env(resolve_device(cfg.device))
        try:
            self.amp_dtype = autocast_dtype(cfg.amp, self.device)
            self.ds: LTDataset = build_dataset_on_main_first(self.dist, cfg.data)
            # The resolved dataset options, so that the run can be rebuilt exactly.
            self.cfg_dict["data"] = self.ds.config
            self._configure()
            self._setup()
            self.run_dir: str = self.dist.on_main(self._prepare_run_dir)
        except BaseException:
            self.dist.close()
            raise

    def _configure(self) -> None:
        """The job's checks and settings once the dataset is known (before the run directory)."""

    def _setup(self) -> None:
        """The job's state (model, optimiser, data on the device), after :meth:`_configure` and
        before the run directory exists, so a failure here leaves nothing behind; ``run()``
        then only starts (or restores) and loops."""

    def method_tag(self) -> str:
        """The method part of an automatic run name."""
        raise NotImplementedError

    def default_name(self) -> str:
        """The run directory's name when the config gives none, unique per configuration and per
        launch: ``<dataset>__i<instance>__<method>__s<seed>__<config digest>__<launch stamp>``."""
        parts = [self.ds.name, f"i{self.ds.config['instance']}", self.method_tag(), f"s{self.cfg.seed}",
                 config_digest(self.cfg_dict, self.resume_free), launch_stamp()]
        # One plain directory name whatever a user-given method label holds.
        return re.sub(r"[^A-Za-z0-9._-]+", "-", "__".join(parts))

    def _prepare_run_dir(self) -> str:
        cfg = self.cfg
        return prepare_run_dir(cfg.out_dir, cfg.name or self.default_name(), cfg.resume, cfg.overwrite)

    def path(self, *parts: str) -> str:
        return os.path.join(self.run_dir, *parts)

    def write_config(self) -> None:
        """``config.yaml``: the resolved config a new run starts from (process 0)."""
        if self.dist.is_main:
            atomic_write_bytes(self.path("config.yaml"), dump_yaml(self.cfg_dict).encode())

    def load_resumable(self) -> dict:
        """This run's checkpoint, refused unless it is a full state of the same config and data."""
        path = self.path(self.checkpoint_file)
        ck = load_checkpoint(path, self.kind)
        check_resumable(ck, path, type(self.cfg), self.cfg_dict, self.resume_free, self.run_dir, self.ds.fingerprint)
        return ck

    def truncate_log(self, upto: int) -> None:
        """Drop the log lines after position ``upto``, which the resumed run writes again (process 0)."""
        if self.dist.is_main:
            truncate_log(self.path("metrics.jsonl"), self.log_key, upto)

    def interrupted(self, where: str, what: str) -> TrainingInterrupted:
        """The error that ends a run stopped by a signal after ``what`` (its checkpoint) was saved."""
        signum = self.signals.signum if self.signals is not None else None
        return TrainingInterrupted(
            f"stopped by signal {signum} at {where}; {what} saved to {self.path(self.checkpoint_file)}. "
            f"Continue with: invtransfer {self.command} {self.path('config.yaml')} "
            f"name={os.path.basename(self.run_dir)} out_dir={self.cfg.out_dir} resume=true", signum)

    def agree_on_stop(self, stats: torch.Tensor) -> tuple[list[float], bool]:
        """Sums over the processes of the 1-D ``stats``, and whether any process got a signal by now
        (one collective). Every process then stops after the same step; a signal that arrives after
        the exchange counts at the next one, so the processes never disagree."""
        signum = float(self.signals.signum or 0) if self.signals is not None else 0.0
        *sums, signum = self.dist.gather_stats(torch.cat([stats.double().reshape(-1),
                                                          stats.new_tensor([signum], dtype=torch.float64)]))
        if signum and self.signals is not None:
            self.signals.signum = int(signum)
        return sums, bool(signum)

    def finish(self, write: Callable[[], dict]) -> dict:
        """``write()``'s outputs, by process 0; every process returns its value."""
        return self.dist.on_main(write)


__all__ = ["TrainingRun", "RunClock", "build_dataset_on_main_first", "require_training_images", "dataset_meta",
           "truncate_log", "append_log", "config_digest", "launch_stamp"]
