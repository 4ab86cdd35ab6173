"""The configs of the two training jobs: every key of ``invtransfer train`` and ``train-generator``.

:class:`TrainConfig` (a classifier run, with :class:`OptimConfig`, :class:`LossConfig` and
:class:`GitConfig`) and :class:`GeneratorTrainConfig` (a MUNIT run, with :class:`GeneratorArch`)
are loaded from YAML and ``key=value`` overrides by :mod:`invtransfer.config`, which checks types,
ranges and choices; each ``validate`` checks what involves several keys. The run loops live in
:mod:`invtransfer.train.classifier` and :mod:`invtransfer.train.generator`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from invtransfer.config import option
from invtransfer.data import augment, batches
from invtransfer.data.datasets import DatasetConfig
from invtransfer.errors import InvTransferError
from invtransfer.fileio import check_run_name
from invtransfer.models.munit import MunitArch
from invtransfer.models.resnet_cifar import MODELS
from invtransfer.train import losses, sam

RULES = ("erm", "resample", "reweight", "drs", "drw")
# Rules of GIT's class filter (invtransfer.git.ClassFilter): top1 or a probability threshold.
FILTER_RULES = ("top1", "prob")


@dataclass
class OptimConfig:
    """SGD and its schedule (docs/design.md#classifiers: CIFAR 200/160/180, K49 50/30/40)."""

    epochs: int = option(200, "training epochs", ge=1)
    batch_size: int = option(128, "batch size", ge=1)
    lr: float = option(0.1, "peak learning rate", gt=0)
    momentum: float = option(0.9, "SGD momentum", ge=0, lt=1)
    weight_decay: float = option(2e-4, "weight decay", ge=0)
    warmup_epochs: int = option(5, "linear warm-up epochs", ge=0)
    schedule: str = option("step", "step decays at E1/E2, or cosine after warm-up", choices=("step", "cosine"))
    decay1_epoch: int = option(160, "E1: first decay (and default DRS/DRW switch)", ge=0)
    decay2_epoch: int = option(180, "E2: second decay", ge=0)
    decay1_factor: float = option(0.01, "lr factor from E1", gt=0)
    decay2_factor: float = option(1e-4, "lr factor from E2", gt=0)
    scale_to_epochs: int | None = option(None, "train this many epochs on the schedule above, scaled: warm-up, E1 "
                                               "and E2 keep their fraction of optim.epochs (e.g. 20 on the CIFAR "
                                               "schedule 200/160/180 with warm-up 5: 20 epochs, warm-up 1, E1 16, "
                                               "E2 18)", ge=1)
    sam_rho: float = option(0.0, "SAM's radius rho (Foret et al. 2021): the gradient is taken at the weights moved "
                                 "by rho along the normalised gradient; 0: off (plain SGD). Costs a second "
                                 "forward/backward per step", ge=0)
    sam_classes: str = option("all", "all: SAM's perturbation from the whole loss; tail: from the loss of the tail "
                                     "classes' examples only (n_c <= optim.sam_tail_threshold)", choices=sam.SAM_CLASSES)
    sam_tail_threshold: int | None = option(None, "K of sam_classes=tail: the classes with at most K training images",
                                            ge=1)
    sam_start_epoch: int = option(0, "first epoch (0-based) with SAM; plain SGD before (scaled with "
                                     "optim.scale_to_epochs)", ge=0)

    def __post_init__(self) -> None:
        # Scaled on construction, so that the config, config.yaml and results.json hold the epochs
        # the run trains; scaling a scaled config (epochs == scale_to_epochs) changes nothing.
        if self.scale_to_epochs is not None and self.scale_to_epochs != self.epochs:
            self.sam_start_epoch = int(math.floor(self.sam_start_epoch * self.scale_to_epochs / self.epochs + 0.5))
            self.epochs, self.warmup_epochs, self.decay1_epoch, self.decay2_epoch = scaled_schedule(
                self.epochs, self.warmup_epochs, self.decay1_epoch, self.decay2_epoch, self.scale_to_epochs)

    def validate(self) -> None:
        # Every conflict in one message, so that a schedule is put right in one go, not one error at a time.
        w, e1, e2, n = self.warmup_epochs, self.decay1_epoch, self.decay2_epoch, self.epochs
        problems = []
        if e1 >= n:
            problems.append(f"config key 'optim.decay1_epoch' (E1={e1}) must be smaller than optim.epochs={n}")
        if e2 <= e1:
            problems.append(f"config key 'optim.decay2_epoch' (E2={e2}) must be larger than optim.decay1_epoch "
                            f"(E1={e1})")
        if self.schedule == "step" and w > e1 and e1 < n:
            last = min(w, n) - 1
            epochs = f"epoch {e1}" if last == e1 else f"epochs {e1} to {last}"
            problems.append(f"config key 'optim.warmup_epochs'={w} reaches past optim.decay1_epoch (E1={e1}): the "
                            f"warm-up's rising learning rate would replace the first decay in {epochs} (counted "
                            f"from 0); use warmup_epochs <= E1")
        if self.schedule == "cosine" and w > n:
            problems.append(f"config key 'optim.warmup_epochs'={w} is longer than optim.epochs={n}: the run would end "
                            f"inside the warm-up")
        if self.sam_rho > 0 and self.sam_classes == "tail" and self.sam_tail_threshold is None:
            problems.append("config key 'optim.sam_tail_threshold' (K) is required with optim.sam_classes=tail (e.g. "
                            "100 on CIFAR-10-LT: its 2 smallest classes)")
        if self.sam_rho > 0 and self.sam_start_epoch >= n:
            problems.append(f"config key 'optim.sam_start_epoch'={self.sam_start_epoch} is not before optim.epochs={n}: "
                            f"SAM would never run")
        if problems:
            how = (f" These are the values optim.scale_to_epochs={self.scale_to_epochs} scaled the schedule to."
                   if self.scale_to_epochs is not None else
                   " To train a shorter schedule, keep optim.epochs at the schedule's full length and set "
                   "optim.scale_to_epochs to the epochs to train: warm-up, E1 and E2 then keep their fraction of it.")
            raise InvTransferError("; ".join(problems) + "." + how)


def scaled_schedule(epochs: int, warmup: int, e1: int, e2: int, to: int) -> tuple[int, int, int, int]:
    """``(epochs, warmup, E1, E2)`` of a schedule of ``epochs`` scaled to ``to`` epochs: each keeps its
    fraction, rounded half up; E1 stays within the run and at or after the warm-up, E2 after E1."""
    def scale(x: int) -> int:
        return int(math.floor(x * to / epochs + 0.5))

    w = scale(warmup)
    s1 = min(max(scale(e1), w), to - 1)
    return to, w, s1, max(scale(e2), s1 + 1)


@dataclass
class LossConfig:
    name: str = option("ce", "loss", choices=losses.LOSSES)
    focal_gamma: float = option(1.0, "focal loss gamma", ge=0)
    ldam_max_margin: float = option(0.5, "LDAM largest margin", gt=0)
    ldam_scale: float = option(30.0, "LDAM logit scale s", gt=0)
    logit_adjust_tau: float = option(1.0, "logit adjustment tau", ge=0)
    reweight_beta: float = option(0.9999, "effective-number beta of reweight/DRW", ge=0, lt=1)

    def options(self) -> dict[str, float]:
        """The values of the keys the losses take (each loss uses its own: ``LOSSES[name].options``)."""
        return {key: getattr(self, key) for cls in losses.LOSSES.values() for key in cls.options}


@dataclass
class GitConfig:
    """Generative Invariance Transfer (docs/design.md#git): generated samples replace part of each batch."""

    generator: str | None = option(None, "generator run directory or generator.pt; setting it enables GIT")
    gen_frac: float = option(0.5, "fraction of every batch (evenly spaced slots) given to generated samples", ge=0, le=1)
    start_epoch: int | None = option(None, "first epoch (0-based) with GIT; default E1 + 1, as published", ge=0)
    weighting: str = option("none", "none: every slot; linear: keep with prob max((K-n_c)/(K-n_min), 0); "
                                    "threshold: only classes with n_c <= K", choices=("none", "linear", "threshold"))
    class_size_threshold: int | None = option(None, "K of the linear/threshold weighting", ge=1)
    input_crop: bool = option(True, "random-crop the generator's input images as training images are cropped; "
                                    "false: only flip them when the dataset's augmentation flips (the official "
                                    "code's behaviour; GTSRB-LT, which never flips, then feeds them unchanged). "
                                    "The random draws are the same either way")
    allow_other_dataset: bool = option(False, "accept a generator (and a git.filter_classifier) trained on another "
                                              "dataset, nuisance, instance or dataset options (a deliberate "
                                              "transfer); otherwise refused")
    filter: str = option("none", "class filter on generated samples (docs/design.md#git-filter): a frozen reference "
                                 "classifier (git.filter_classifier) judges each generated image once; a rejected slot "
                                 "keeps its real image and label. top1: keep if it ranks the source class first "
                                 "(recommended: no threshold, independent of the logits' scale); prob: keep if it "
                                 "gives the source class probability >= git.filter_min_prob (a fixed threshold "
                                 "interacts with the classifier's calibration, which differs by class size); "
                                 "none: off", choices=("none",) + FILTER_RULES)
    filter_classifier: str | None = option(None, "reference classifier of git.filter: a classifier run directory, "
                                                 "its model.pt or a checkpoint file (e.g. this method's run without "
                                                 "GIT, or its checkpoint_eN.pt at E1), trained on this run's dataset "
                                                 "(else refused, unless git.allow_other_dataset=true)")
    filter_min_prob: float = option(0.5, "git.filter=prob: the smallest probability of the source class that keeps "
                                         "a generated slot", gt=0, le=1)

    def validate(self) -> None:
        if self.weighting != "none" and self.class_size_threshold is None:
            raise InvTransferError(f"config key 'git.class_size_threshold' (K) is required with "
                                   f"git.weighting={self.weighting} (e.g. 500 on CIFAR-10-LT, 100 on CIFAR-100-LT).")
        if self.filter != "none" and not self.filter_classifier:
            raise InvTransferError(f"config key 'git.filter_classifier' is required with git.filter={self.filter}: "
                                   f"the reference classifier that judges the generated images (a classifier run "
                                   f"directory or its model.pt, trained on this dataset without GIT).")
        if self.filter == "none" and self.filter_classifier:
            raise InvTransferError(f"config key 'git.filter_classifier'={self.filter_classifier!r} is set but "
                                   f"git.filter=none, so it would not be used; set git.filter=top1 (or prob) to filter "
                                   f"generated samples, or leave git.filter_classifier unset.")
        if self.filter != "none" and not self.generator:
            raise InvTransferError(f"config key 'git.filter'={self.filter} filters GIT's generated samples, but "
                                   f"git.generator is not set (GIT is off); set git.generator or git.filter=none.")
        if not math.isfinite(self.filter_min_prob):
            raise InvTransferError(f"config key 'git.filter_min_prob' must be a probability in (0, 1], got "
                                   f"{self.filter_min_prob}.")


@dataclass
class AugmentConfig:
    """Training-time augmentation: crop/flip (:mod:`invtransfer.data.batches`), then a policy and
    mixup/CutMix (:mod:`invtransfer.data.augment`).

    A plain value, ``augment: crop_flip``, sets ``crop``: the key's whole meaning before it had
    sub-keys, so old configs, command lines and checkpoints keep working.
    """

    shorthand = "crop"  # not a field (no annotation): see invtransfer.config
    crop: str = option("crop_flip", "batched zero-padded random crop (crop_padding) and horizontal flip",
                       choices=batches.AUGMENTATIONS)
    policy: str = option("none", "kornia's auto-augmentation policy, after crop/flip and GIT's rows",
                         choices=augment.POLICIES)
    autoaugment_policy: str = option("cifar10", "which learned AutoAugment policy (kornia's)",
                                     choices=augment.AUTOAUGMENT_POLICIES)
    randaugment_n: int = option(2, "RandAugment: operations per image", ge=1, le=15)
    randaugment_m: int = option(9, "RandAugment: magnitude, m/30 of each operation's range (torchvision's default: "
                                   "9 of 31 bins)", gt=0, lt=30)
    policy_group: int = option(16, "rows per draw of the policy's operations (kornia draws them once per call; the "
                                   "papers per image)", ge=1)
    mixup: float = option(0.0, "alpha of mixup's Beta(alpha, alpha); 0: off", ge=0)
    cutmix: float = option(0.0, "alpha of CutMix's Beta(alpha, alpha); 0: off. Both set: one of the two per step, "
                                "1/2 each", ge=0)

    def validate(self) -> None:
        for key in ("mixup", "cutmix"):
            if not math.isfinite(getattr(self, key)):
                raise InvTransferError(f"config key 'augment.{key}' must be a finite alpha >= 0 (0: off), got "
                                       f"{getattr(self, key)}.")


@dataclass
class RunOptions:
    """Where and how a training run runs; both job configs have these keys (at the top level).

    Subclasses redeclare a key where their default differs (a redeclared key keeps its place).
    """

    device: str = option("auto", "auto picks cuda, then mps, then cpu", choices=("auto", "cpu", "cuda", "mps"))
    amp: str = option("auto", "autocast: auto = bf16 on CUDA only", choices=("auto", "bf16", "off"))
    channels_last: bool = option(True, "channels_last memory format of models and batches (faster on CPU and GPU)")
    compile: bool = option(False, "torch.compile the model's computations")
    out_dir: str = option("runs", "parent folder of run directories")
    name: str | None = option(None, "run directory name under out_dir (default: dataset__i<instance>__method"
                                    "__s<seed>__<config digest>__<launch time and random tag>, unique per "
                                    "configuration and launch)")
    resume: bool = option(False, "continue the run in out_dir/<name> from its checkpoint")
    overwrite: bool = option(False, "delete an existing out_dir/<name> and start over")
    checkpoint_every: int = option(5, "write a checkpoint every N epochs (and at the end)", ge=1)
    quiet: bool = option(False, "log lines on stdout instead of progress bars")

    def validate(self) -> None:
        if self.resume and self.overwrite:
            raise InvTransferError("config keys 'resume' and 'overwrite' cannot both be true.")
        if self.resume and not self.name:
            raise InvTransferError("config key 'resume=true' needs 'name' (the run directory under out_dir).")
        check_run_name(self.name)


@dataclass
class TrainConfig(RunOptions):
    """One classifier training run."""

    data: DatasetConfig = field(default_factory=DatasetConfig)
    model: str = option("resnet32", "architecture", choices=MODELS)
    cosine_head: bool | None = option(None, "cosine classifier head (default: only with the LDAM loss)")
    loss: LossConfig = field(default_factory=LossConfig)
    rule: str = option("erm", "long-tail rule", choices=RULES)
    switch_epoch: int | None = option(None, "E1 of DRS/DRW (default optim.decay1_epoch)", ge=0)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    crop_padding: int = option(4, "zero padding of the random crop", ge=0)
    oracle: bool = option(False, "apply the dataset's true nuisance online to every training example")
    git: GitConfig = field(default_factory=GitConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    select: str = option("val", "weights evaluated on test: best validation balanced accuracy, or last epoch",
                         choices=("val", "last"))
    eval_every: int = option(1, "validate every N epochs (and at the last)", ge=1)
    eval_batch_size: int = option(1024, "batch size of evaluation", ge=1)
    seed: int = option(0, "training seed (init, sampling, augmentation)", ge=0)
    sync_bn: bool = option(False, "multi-process runs: batch-norm statistics of the global batch rather than "
                                  "of each process's shard")
    method: str | None = option(None, "method label in reports (default derived from loss/rule)")
    keep_checkpoints: list[int] = option(default_factory=list, help="also keep the checkpoint taken after each of "
                                         "these epochs, as checkpoint_eN.pt (a fork point for init_from)")
    init_from: str | None = option(None, "start from another run's checkpoint (file, or run directory for its "
                                         "checkpoint.pt) whose config differs from this one only in git.* keys "
                                         "and was taken no later than this run's first GIT epoch: the shared "
                                         "epochs are not trained twice, and the result equals a run from scratch")
    tensorboard: bool = option(False, "opt-in: also write the per-epoch scalars of metrics.jsonl to "
                                      "runs/<name>/tensorboard/ (needs the tensorboard package; asking for it "
                                      "without the package is an error before the run directory is made)")

    def validate(self) -> None:
        if self.switch_epoch is not None and self.switch_epoch >= self.optim.epochs:
            raise InvTransferError(f"config key 'switch_epoch' (E1={self.switch_epoch}) must be smaller than "
                                   f"optim.epochs={self.optim.epochs} (optim.scale_to_epochs scales the optim.* "
                                   f"epochs only; leave switch_epoch unset to switch at optim.decay1_epoch).")
        super().validate()
        if self.oracle and self.git.generator:
            raise InvTransferError("config keys 'oracle=true' and 'git.generator' exclude each other: the oracle "
                                   "is the control that replaces the generator by the true transform.")

    @property
    def uses_cosine_head(self) -> bool:
        """``cosine_head``, by default what the loss needs (LDAM's cosine logits)."""
        return self.cosine_head if self.cosine_head is not None else losses.LOSSES[self.loss.name].needs_cosine_head

    @property
    def e1(self) -> int:
        return self.optim.decay1_epoch if self.switch_epoch is None else self.switch_epoch

    @property
    def git_start(self) -> int | None:
        """First GIT epoch (0-based): DRS resamples from E1, GIT starts the epoch after, as published."""
        if not self.git.generator:
            return None
        return self.e1 + 1 if self.git.start_epoch is None else self.git.start_epoch


def method_label(cfg: TrainConfig) -> str:
    """'CE', 'CE+DRS', 'LDAM-DRW', 'Focal', 'BalancedSoftmax+DRS', ... (+Oracle), then the options
    that change training (+RandAugment, +Mixup, +CutMix, +SAM or +TailSAM), then +GIT (+Filter
    when git.filter judges its samples)."""
    if cfg.method:
        return cfg.method
    base = losses.LOSSES[cfg.loss.name].label
    label = base if cfg.rule == "erm" else (f"{base}-DRW" if cfg.loss.name == "ldam" and cfg.rule == "drw"
                                            else f"{base}+{cfg.rule.upper() if cfg.rule in ('drs', 'drw') else cfg.rule}")
    a, o = cfg.augment, cfg.optim
    options = [{"randaugment": "RandAugment", "autoaugment": "AutoAugment", "trivialaugment": "TrivialAugment"}
               .get(a.policy, ""), "Mixup" if a.mixup > 0 else "", "CutMix" if a.cutmix > 0 else "",
               ("TailSAM" if o.sam_classes == "tail" else "SAM") if o.sam_rho > 0 else ""]
    return (label + ("+Oracle" if cfg.oracle else "") + "".join(f"+{x}" for x in options if x)
            + ("+GIT" if cfg.git.generator else "")
            + ("+Filter" if cfg.git.generator and cfg.git.filter != "none" else ""))


def learning_rate(o: OptimConfig, epoch: int) -> float:
    """The learning rate of a whole epoch (0-based), as LDAM-DRW's schedule sets it per epoch."""
    if epoch < o.warmup_epochs:
        return o.lr * (epoch + 1) / o.warmup_epochs
    if o.schedule == "cosine":
        t = (epoch - o.warmup_epochs) / max(1, o.epochs - o.warmup_epochs)
        return o.lr * 0.5 * (1.0 + math.cos(math.pi * t))
    if epoch >= o.decay2_epoch:
        return o.lr * o.decay2_factor
    if epoch >= o.decay1_epoch:
        return o.lr * o.decay1_factor
    return o.lr


@dataclass
class GeneratorArch(MunitArch):
    """MunitArch whose channels and image size default to the dataset's (None = take them)."""

    channels: int | None = option(None, "image channels (default: the dataset's)", ge=1)
    image_size: int | None = option(None, "square image side (default: the dataset's)", ge=1)

    def validate(self) -> None:
        # Size-dependent checks need the image shape; they run in resolve() once it is known.
        if self.channels is not None and self.image_size is not None:
            super().validate()

    def resolve(self, image_shape: Sequence[int], dataset: str) -> MunitArch:
        """The full architecture for a dataset of ``(C, H, W)`` images; contradictions are errors."""
        c, h, w = (int(v) for v in image_shape)
        if h != w:
            raise InvTransferError(f"dataset {dataset!r} has {h}x{w} images; MUNIT here needs square images.")
        for key, mine, theirs, what in (("channels", self.channels, c, "channels"),
                                        ("image_size", self.image_size, h, "image side")):
            if mine is not None and mine != theirs:
                raise InvTransferError(
                    f"config key 'arch.{key}'={mine} contradicts dataset {dataset!r}, whose images have "
                    f"{what} {theirs} (C, H, W) = {(c, h, w)}; leave arch.{key} unset (it is taken from the "
                    f"dataset) or use a dataset with {key}={mine}.")
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(MunitArch)}
        arch = MunitArch(**dict(values, channels=c, image_size=h))
        arch.validate()
        return arch


@dataclass
class GeneratorTrainConfig(RunOptions):
    """One MUNIT training run: the paper's values, except batch size 4 and lr 2e-4 (the paper: 1 and
    1e-4). At the same CPU time (one Fashion-MNIST-DIL-LT run per setting, one seed; RESULTS.md,
    "MUNIT batch size at equal time"), batch 4 with the learning rate scaled by sqrt(batch)
    preserved classes best (+2 points over batch 1), came closest to the true nuisance diversity,
    and matched batch 1's reconstruction L1 within 0.002 (0.070 against 0.068); batch 16 was worse
    than batch 4 on all three. 10k iterations at batch 1 = 2500 here, in images seen."""

    data: DatasetConfig = field(default_factory=DatasetConfig)
    arch: GeneratorArch = field(default_factory=GeneratorArch)
    iterations: int = option(2500, "training iterations (one discriminator and one generator step each)", ge=1)
    batch_size: int = option(4, "images per stream per iteration (the paper used 1)", ge=1)
    lr: float = option(2e-4, "Adam learning rate of generator and discriminator (the paper: 1e-4 at batch 1)",
                       gt=0)
    beta1: float = option(0.5, "Adam beta1", ge=0, lt=1)
    beta2: float = option(0.999, "Adam beta2", ge=0, lt=1)
    weight_decay: float = option(1e-4, "Adam (L2) weight decay", ge=0)
    lr_step: int = option(25000, "halve the learning rate every lr_step iterations (the paper: 100k "
                          "images)", ge=1)
    gan_weight: float = option(1.0, "weight of the adversarial loss", ge=0)
    recon_x_weight: float = option(10.0, "weight of the image reconstruction L1", ge=0)
    recon_s_weight: float = option(1.0, "weight of the random-style reconstruction L1", ge=0)
    recon_c_weight: float = option(1.0, "weight of the content reconstruction L1", ge=0)
    recon_cycle_weight: float = option(0.0, "weight of the explicit cycle L1 (x -> random style -> own style)",
                                       ge=0)
    flip: bool = option(True, "random horizontal flip of both streams")
    seed: int = option(0, "training seed (init, sampling, flips, styles)", ge=0)
    checkpoint_every: int = option(1000, "write state.pt every N iterations (and at the end)", ge=1)  # RunOptions'
    sample_every: int = option(1000, "write samples_<iteration>.png every N iterations", ge=1)
    log_every: int = option(50, "append to metrics.jsonl every N iterations (and at the end)", ge=1)
    class_consistency_weight: float = option(0.0, "weight of the class-consistency term (docs/design.md#generator-"
                                                  "class-consistency): cross-entropy of the frozen 'classifier' on "
                                                  "the random-style decodes against their content image's class; "
                                                  "0: off (MUNIT's loss as before)", ge=0)
    classifier: str | None = option(None, "frozen classifier of the class-consistency term: a classifier run "
                                          "directory or its model.pt, trained on this long-tailed dataset (e.g. "
                                          "CE+DRS); required when class_consistency_weight > 0")
    classifier_allow_other_dataset: bool = option(False, "accept a 'classifier' trained on another dataset, "
                                                         "nuisance, instance or dataset options; otherwise refused")

    def validate(self) -> None:
        super().validate()
        w = self.class_consistency_weight
        if not math.isfinite(w):
            raise InvTransferError(f"config key 'class_consistency_weight' must be a finite weight >= 0 (0: off), "
                                   f"got {w}.")
        if w > 0 and not self.classifier:
            raise InvTransferError(f"config key 'classifier' is required with class_consistency_weight={w}: the "
                                   f"frozen classifier (a classifier run directory or its model.pt, trained on this "
                                   f"dataset) whose cross-entropy on the decodes the term adds.")
        if w == 0 and self.classifier:
            raise InvTransferError(f"config key 'classifier'={self.classifier!r} is set but class_consistency_weight "
                                   f"is 0, so it would not be used; set class_consistency_weight > 0 (e.g. 1.0) or "
                                   f"leave classifier unset.")
