"""Trained models in use: load a classifier or a generator, predict, evaluate, sample nuisances.

What every consumer of a finished run needs, in one place below the metrics that use it:

* :func:`load_classifier` -- the classifier of a run directory, ``model.pt`` or ``checkpoint.pt``,
  with its dataset metadata (normaliser, class sizes, fingerprint); :func:`predict_logits` and
  :func:`evaluate_split` run it on uint8 images; :func:`evaluate_checkpoint` is
  ``invtransfer evaluate``.
* :func:`load_generator` -- the frozen MUNIT generator of a run (``generator.pt`` or ``state.pt``);
  :class:`NuisanceSampler` maps a batch to random-style decodes ``decode(content(x), s)``,
  ``s ~ N(0, I)``, in a classifier's input normalisation (what GIT and invariance measurement
  call); :func:`check_compatible` refuses images of another shape.

Checkpoints are read with :func:`invtransfer.train.checkpoint.load_checkpoint`
(``weights_only=True``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import torch

from invtransfer.config import from_dict, to_dict
from invtransfer.data import batches, datasets
from invtransfer.data.datasets import DatasetConfig
from invtransfer.errors import InvTransferError
from invtransfer.metrics.accuracy import classification_metrics
from invtransfer.models.munit import MunitArch, MunitGenerator
from invtransfer.models.resnet_cifar import build_model
from invtransfer.train import losses
from invtransfer.train.checkpoint import load_checkpoint
from invtransfer.train.configs import TrainConfig
from invtransfer.train.runtime import autocast, autocast_dtype, resolve_device, without_out_of_memory

# The files of a run directory that hold a trained model, the preferred one first.
CLASSIFIER_FILES = ("model.pt", "checkpoint.pt")
GENERATOR_FILES = ("generator.pt", "state.pt")


def _first_file(folder: str, names: tuple[str, ...]) -> str | None:
    """The first of ``names`` that is a file in ``folder``, or None."""
    return next((os.path.join(folder, f) for f in names if os.path.isfile(os.path.join(folder, f))), None)


# --------------------------------------------------------------------------------------------
# Classifiers


@torch.no_grad()
def predict_logits(model: torch.nn.Module, images_uint8: torch.Tensor, normalizer: batches.Normalizer,
                   batch_size: int = 1024, amp_dtype: torch.dtype | None = None,
                   channels_last: bool = False, progress: bool = False) -> torch.Tensor:
    """Logits (float32, on the images' device) of uint8 (N, C, H, W) images, in eval mode
    (``progress``: a progress bar over the batches on stderr)."""
    from tqdm import tqdm

    was_training = model.training
    model.eval()
    out = []
    starts = range(0, len(images_uint8), batch_size)
    for i in tqdm(starts, desc="evaluating", unit="batch", leave=False, dynamic_ncols=True, file=sys.stderr,
                  disable=not progress):
        x = normalizer(images_uint8[i:i + batch_size])
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(x.device, amp_dtype):
            out.append(model(x).float())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def evaluate_split(model, images, labels, normalizer, train_class_counts, **kw) -> dict:
    """classification_metrics of a model on one split (uint8 images and labels on one device)."""
    logits = predict_logits(model, images, normalizer, **kw)
    return classification_metrics(logits.argmax(1).cpu().numpy(), labels.cpu().numpy(), len(train_class_counts),
                                  train_class_counts)


def _check_dataset_meta(meta: dict, channels: int) -> None:
    """Raise (ValueError, KeyError, TypeError) unless a checkpoint's dataset meta is usable as is."""
    n = len(meta["class_names"])
    if not isinstance(meta["fingerprint"], str) or [int(v) for v in meta["image_shape"]][0] != channels \
            or len(meta["image_shape"]) != 3 or len([int(v) for v in meta["train_class_counts"]]) != n \
            or sorted(meta["normalizer"]) != ["mean", "std"] \
            or any(len([float(v) for v in meta["normalizer"][k]]) != channels for k in ("mean", "std")):
        raise ValueError("its dataset metadata (fingerprint, image_shape, train_class_counts, normalizer) does not "
                         "match the model")


#: Which weights of a run load_classifier returns: the run's own choice, or one policy's.
WEIGHTS = ("selected", "best_val", "last", "other")


def load_classifier(path: str, device: str | torch.device = "cpu",
                    weights: str = "selected") -> tuple[torch.nn.Module, dict]:
    """A trained classifier from a run directory, its ``model.pt`` or its ``checkpoint.pt``.

    Returns the model (eval mode, on ``device``) and the checkpoint's metadata (config, dataset
    meta with the normaliser, ``selected_weights``: which weights these are and why,
    ``logit_scale``). A cosine-head model outputs the logits its loss trained: LDAM's ``s`` times
    the cosines (``LongTailLoss.logit_scale``), so that its softmax (eKLD, the GIT filter, the
    class-consistency term) is the one training shaped; argmax predictions are unchanged.

    ``weights``: ``selected`` (the run's ``select`` policy: model.pt, or a full checkpoint's best
    validation weights so far under ``select=val``); ``best_val`` or ``last``, one policy's weights
    whatever the run selected, from the run's full ``checkpoint.pt`` (which tracks both; ``last``
    only once the run has finished); ``other``: the policy the run did not select. Comparing a
    method under both policies needs the second (see docs/design.md#model-selection).
    """
    if weights not in WEIGHTS:
        raise InvTransferError(f"weights={weights!r}: expected one of {', '.join(WEIGHTS)}.")
    if weights != "selected":
        path = _full_checkpoint(path)
    elif os.path.isdir(path):
        found = _first_file(path, CLASSIFIER_FILES)
        if found is None:
            raise InvTransferError(f"{path} holds neither model.pt nor checkpoint.pt; expected a classifier "
                                   f"run directory or checkpoint file.")
        path = found
    ck = load_checkpoint(path, "classifier")
    try:
        cfg = from_dict(TrainConfig, ck["config"])
        meta = ck["dataset"]
        state, selected = ck["model"], ck.get("selected_weights")
        if weights == "selected":
            if ck.get("state") == "full" and cfg.select == "val" and ck.get("best_model") is not None:
                state = ck["best_model"]
        else:
            state, selected = _policy_weights(ck, cfg, weights, path)
        c = meta["image_shape"][0]
        model = build_model(cfg.model, len(meta["class_names"]), in_channels=c, cosine_head=cfg.uses_cosine_head)
        model.load_state_dict(state)
        # the logits the loss trained (LDAM: s x cosines), so that probabilities mean what they did in training
        scale = losses.LOSSES[cfg.loss.name].logit_scale(cfg.loss.options()) if cfg.uses_cosine_head else 1.0
        if scale != 1.0:
            model.fc.scale = scale
        meta = dict(meta, config=to_dict(cfg), path=path, selected_weights=selected, logit_scale=scale)
        _check_dataset_meta(meta, c)
    except (KeyError, TypeError, RuntimeError, ValueError, IndexError, AttributeError) as e:
        raise InvTransferError(f"checkpoint {path} does not hold a consistent classifier ({type(e).__name__}: "
                               f"{str(e).splitlines()[0][:200] if str(e) else ''}).") from None
    model.to(device).eval()
    return model, meta


def _full_checkpoint(path: str) -> str:
    """A run's full checkpoint.pt, from its directory, its model.pt (which holds the selected weights
    only) or the checkpoint itself."""
    if os.path.isdir(path) or os.path.basename(path) == "model.pt":
        folder = path if os.path.isdir(path) else os.path.dirname(path)
        path = os.path.join(folder, "checkpoint.pt")
        if not os.path.isfile(path):
            raise InvTransferError(f"{folder} holds no checkpoint.pt: one selection policy's weights (weights=best_val, "
                                   f"last or other) are kept only in a run's full checkpoint.")
    return path


def _policy_weights(ck: dict, cfg, weights: str, path: str) -> tuple[dict, dict]:
    """The state dict and ``selected_weights`` record of one selection policy in a full checkpoint."""
    if ck.get("state") != "full":
        raise InvTransferError(f"{path} holds one set of weights (the selected ones), not a full checkpoint; "
                               f"weights={weights} needs the run's checkpoint.pt.")
    which = ("last" if cfg.select == "val" else "best_val") if weights == "other" else weights
    epochs, done = cfg.optim.epochs, int(ck["epoch"])
    if which == "last":
        if done != epochs:
            raise InvTransferError(f"{path} is after epoch {done} of {epochs}: the last epoch's weights do not "
                                   f"exist until the run has finished.")
        return ck["model"], {"which": "last", "epoch": epochs, "why": "weights=last"}
    best = ck.get("best") or {}
    if ck.get("best_model") is None or int(best.get("epoch", -1)) < 0:
        raise InvTransferError(f"{path} has no validation-selected weights (the run has no validation split, or "
                               f"was never evaluated on it); weights=best_val needs them.")
    return ck["best_model"], {"which": "best_val", "epoch": int(best["epoch"]), "why": (
        f"weights={weights}: highest validation balanced accuracy ({float(best['balanced_accuracy']):.2f}%)")}


def same_weights_under_both_policies(path: str) -> int | None:
    """The epoch whose weights both selection policies keep (the best validation epoch is the
    last), or None when they differ; ``path``: a run directory, its model.pt or checkpoint.pt."""
    ck = load_checkpoint(_full_checkpoint(path), "classifier")
    try:
        epochs = from_dict(TrainConfig, ck["config"]).optim.epochs
        best = int((ck.get("best") or {}).get("epoch", -1))
    except (KeyError, TypeError, ValueError):
        return None
    return epochs if best == epochs and int(ck.get("epoch", -1)) == epochs else None


def trained_on_instance(meta: dict) -> int | None:
    """The dataset instance a trained model's run used: its training config's data.instance."""
    data = (meta.get("config") or {}).get("data") or {}
    return data.get("instance") if isinstance(data, dict) else None


def check_trained_on(meta: dict, name: str, fingerprint: str, *, model: str, what: str, override: str,
                     command: str, file: str, advice: str, nuisance: str | None = None, instance: int | None = None,
                     allow_other_dataset: bool = False) -> None:
    """Refuse (InvTransferError) a trained model whose checkpoint metadata ``meta`` does not record
    the dataset ``name`` with ``fingerprint`` (its preset, instance, nuisance, every other option
    and the same source files), unless ``allow_other_dataset``.

    In the message: ``model`` names the model (e.g. ``"generator runs/g/generator.pt"``), ``what``
    the other side, ``override`` the switch that allows a deliberate transfer, ``command`` and
    ``file`` the command that trains such a model and the file it writes, ``advice`` why and
    what to train instead.
    """
    if allow_other_dataset:
        return
    if not meta.get("name") or not meta.get("fingerprint"):
        raise InvTransferError(
            f"{model} does not record the dataset it was trained on (its 'dataset' entry has no name "
            f"or fingerprint), so it cannot be checked against {what} ({name!r}, fingerprint {fingerprint}). "
            f"Use a {file} written by {command}, or pass {override} to use it anyway.")
    if meta["fingerprint"] == fingerprint:
        return
    theirs = {"dataset": meta.get("name"), "instance": trained_on_instance(meta), "nuisance": meta.get("nuisance")}
    mine = {"dataset": name, "instance": instance, "nuisance": nuisance}
    differ = [f"{k} {theirs[k]!r} vs {mine[k]!r}" for k in theirs
              if mine[k] is not None and theirs[k] is not None and theirs[k] != mine[k]]
    why = ("; ".join(differ) if differ else
           "same preset, instance and nuisance, but other dataset options or source files")
    raise InvTransferError(
        f"{model} was trained on dataset {meta.get('name')!r} (fingerprint {meta['fingerprint']}), but "
        f"{what} is {name!r} (fingerprint {fingerprint}): {why}. {advice} ({command} ... data.name={name}"
        f"{f' data.instance={instance}' if instance is not None else ''}), or pass {override} for a "
        f"deliberate transfer.")


def _channel_stats(values: Sequence[float], channels: int, what: str) -> list[float]:
    out = [float(v) for v in values]
    if len(out) != channels:
        raise InvTransferError(f"{what} has {len(out)} entries; the images have {channels} channel(s).")
    return out


class FrozenClassifier:
    """A trained classifier, frozen (eval mode, no parameter gradients), that takes images in any
    per-channel normalisation and converts them to its own.

    ``clf(x, mean, std)`` returns float32 logits of ``x = (p - mean) / std`` (pixels ``p`` in
    [0, 1]; images in [-1, 1] are ``mean = std = 0.5``): the images are mapped to the
    classifier's normaliser ``(p - clf.mean) / clf.std`` first (unchanged when the two are
    equal), so it sees the same pixels whatever the caller's normalisation. Gradients flow to
    ``x`` (the weights get none); wrap the call in ``torch.inference_mode()`` when none are
    needed. ``meta`` holds what the checkpoint records (dataset name, fingerprint, image shape,
    class names, normaliser, config, ``path``), :func:`load_frozen_classifier` fills it.
    """

    def __init__(self, model: torch.nn.Module, mean: Sequence[float], std: Sequence[float], *,
                 meta: dict | None = None, amp: str = "auto") -> None:
        if not isinstance(model, torch.nn.Module):
            raise InvTransferError(f"a frozen classifier needs a torch.nn.Module, got {type(model).__name__}.")
        self.model = model.eval().requires_grad_(False)
        self.mean, self.std = [float(v) for v in mean], [float(v) for v in std]
        if len(self.mean) != len(self.std) or not self.mean or min(self.std) <= 0:
            raise InvTransferError(f"the classifier's normaliser needs one mean and one std > 0 per channel; got "
                                   f"mean={self.mean}, std={self.std}.")
        self.meta: dict = dict(meta or {})
        tensors = list(model.parameters()) or list(model.buffers())
        self.device = tensors[0].device if tensors else torch.device("cpu")
        self.amp_dtype = autocast_dtype(amp, self.device)
        self._affine: dict = {}  # (mean, std, device) -> (scale, shift) tensors, made once

    @property
    def path(self) -> str | None:
        """The checkpoint file it was loaded from."""
        return self.meta.get("path")

    def _conversion(self, mean: Sequence[float], std: Sequence[float], device: torch.device):
        key = (tuple(float(v) for v in mean), tuple(float(v) for v in std), device)
        if key not in self._affine:
            m1 = _channel_stats(key[0], len(self.mean), "the images' normalisation mean")
            s1 = _channel_stats(key[1], len(self.std), "the images' normalisation std")
            if m1 == self.mean and s1 == self.std:
                self._affine[key] = None
            else:  # x' = (x * s1 + m1 - m2) / s2
                f64 = dict(dtype=torch.float64)
                m1t, s1t, m2, s2 = (torch.tensor(v, **f64) for v in (m1, s1, self.mean, self.std))
                self._affine[key] = tuple(t.float().view(1, -1, 1, 1).to(device) for t in (s1t / s2, (m1t - m2) / s2))
        return self._affine[key]

    def __call__(self, x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
        """Float32 logits of ``x`` (normalised with ``mean``/``std``), mapped to this classifier's
        normaliser first; differentiable with respect to ``x``."""
        conversion = self._conversion(mean, std, self.device)
        x = x.to(self.device, torch.float32)
        if conversion is not None:
            x = x * conversion[0] + conversion[1]
        with autocast(self.device, self.amp_dtype):
            return self.model(x).float()

    def provenance(self) -> dict:
        """What a run records about a classifier it used (path, dataset, fingerprint, instance, weights)."""
        m = self.meta
        return {"path": os.path.abspath(m["path"]) if m.get("path") else None, "dataset": m.get("name"),
                "dataset_fingerprint": m.get("fingerprint"), "instance": trained_on_instance(m),
                "selected_weights": m.get("selected_weights")}

    def check_run(self, image_shape: Sequence[int], class_names: Sequence[str], name: str, fingerprint: str, *,
                  key: str, override: str, nuisance: str | None = None, instance: int | None = None,
                  allow_other_dataset: bool = False) -> None:
        """Refuse (InvTransferError naming config ``key`` and the file) a classifier whose images or
        classes differ from the run's dataset (always), or that was trained on another dataset
        (unless ``allow_other_dataset``, which ``override`` sets)."""
        where = f"config key {key!r}: classifier {self.path or '(loaded)'}"
        theirs = tuple(int(v) for v in self.meta.get("image_shape", ()))
        if theirs != tuple(int(v) for v in image_shape):
            raise InvTransferError(f"{where} takes images of shape (C, H, W) = {theirs}, but dataset {name!r} has "
                                   f"{tuple(int(v) for v in image_shape)}; use a classifier trained on this dataset.")
        classes = len(self.meta.get("class_names", ()))
        if classes != len(class_names):
            raise InvTransferError(f"{where} has {classes} classes, but dataset {name!r} has {len(class_names)}; use a "
                                   f"classifier trained on this dataset.")
        check_trained_on(self.meta, name, fingerprint, model=where, what="the dataset of this run",
                         override=override, nuisance=nuisance, instance=instance,
                         allow_other_dataset=allow_other_dataset, command="invtransfer train", file="model.pt",
                         advice="A reference classifier judges classes as the training set it saw defines them; "
                                "train one on this dataset")


def load_frozen_classifier(path: str, device: str | torch.device = "cpu", *, amp: str = "auto") -> FrozenClassifier:
    """The :class:`FrozenClassifier` of a classifier run directory, its ``model.pt`` or a
    ``checkpoint.pt`` (:func:`load_classifier`: ``torch.load(weights_only=True)``; a full
    checkpoint of a ``select=val`` run gives its best validation weights so far), with its own
    normaliser and its checkpoint's metadata."""
    model, meta = load_classifier(os.fspath(path), device)
    return FrozenClassifier(model, meta["normalizer"]["mean"], meta["normalizer"]["std"], meta=meta, amp=amp)


def rebuilt_dataset(meta: dict, path: str) -> datasets.LTDataset:
    """The dataset a loaded classifier (``load_classifier``'s meta) was trained on, rebuilt from its
    config and refused unless it has the training run's fingerprint (``path`` names it in the error)."""
    ds = datasets.build_dataset(from_dict(DatasetConfig, meta["config"]["data"]))
    if ds.fingerprint != meta["fingerprint"]:
        raise InvTransferError(f"the dataset rebuilt for {path} has fingerprint {ds.fingerprint}, but the "
                               f"classifier was trained on {meta['fingerprint']} (source files changed).")
    return ds


def evaluate_checkpoint(path: str, split: str = "test", device: str = "auto", batch_size: int = 1024,
                        progress: bool = False) -> dict:
    """Metrics of a trained classifier on its dataset's val or test split (``batch_size`` images a
    forward pass: ``invtransfer evaluate --batch-size``; ``progress``: a progress bar on stderr)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvTransferError(f"--batch-size must be a positive integer, got {batch_size!r}.")
    dev = resolve_device(device)
    model, meta = load_classifier(path, dev)
    ds = rebuilt_dataset(meta, path)
    x, y = (ds.x_val, ds.y_val) if split == "val" else (ds.x_test, ds.y_test)
    normalizer = batches.Normalizer(**meta["normalizer"])
    images, labels = batches.to_device_images(x, dev), torch.from_numpy(y).to(dev)
    m = without_out_of_memory(
        lambda: evaluate_split(model, images, labels, normalizer, meta["train_class_counts"], batch_size=batch_size,
                               progress=progress),
        f"evaluating the {split} split of {path}", "--batch-size", batch_size, min(batch_size, len(labels)),
        " Nothing was written.")
    return dict(m, split=split, checkpoint=meta["path"], dataset=ds.name, selected_weights=meta["selected_weights"])

# --------------------------------------------------------------------------------------------
# Generators


def to_unit_range(pixels: torch.Tensor) -> torch.Tensor:
    """Pixels 0..255 -> [-1, 1] (MUNIT's input range)."""
    return pixels.float() / 127.5 - 1.0


def to_pixels(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> float pixels 0..255."""
    return (x.float() + 1.0) * 127.5


def load_generator(path: str, device: str | torch.device = "cpu") -> tuple[MunitGenerator, dict]:
    """The frozen generator (eval mode, on ``device``) of a run directory, generator.pt or state.pt.

    Returns it with the checkpoint's metadata: dataset meta (image_shape, fingerprint, ...),
    ``arch``, ``config``, ``iteration``, ``images_seen`` and ``path``.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        found = _first_file(path, GENERATOR_FILES)
        if found is None:
            other = _first_file(path, CLASSIFIER_FILES)
            what = f" (it holds {os.path.basename(other)}: a classifier run directory?)" if other else ""
            raise InvTransferError(f"{path} holds neither generator.pt nor state.pt{what}; expected a generator run "
                                   f"directory (from invtransfer train-generator) or its checkpoint file.")
        path = found
    ck = load_checkpoint(path, "generator")
    try:
        arch = from_dict(MunitArch, ck["arch"])
        gen = MunitGenerator(arch)
        gen.load_state_dict(ck["generator"])
        meta = dict(ck["dataset"], arch=ck["arch"], config=ck.get("config"), iteration=int(ck["iteration"]),
                    images_seen=int(ck["images_seen"]), path=path)
    except (KeyError, TypeError, RuntimeError, AttributeError, ValueError, IndexError) as e:
        raise InvTransferError(f"checkpoint {path} does not hold a consistent generator ({type(e).__name__}: "
                               f"{str(e).splitlines()[0][:200] if str(e) else ''}).") from None
    gen.to(device).eval().requires_grad_(False)
    return gen, meta


def check_compatible(gen: MunitGenerator, image_shape: Sequence[int], what: str) -> None:
    """Raise unless ``(C, H, W)`` images of ``what`` fit the generator."""
    want = (gen.arch.channels, gen.arch.image_size, gen.arch.image_size)
    if tuple(int(v) for v in image_shape) != want:
        raise InvTransferError(f"{what} has images of shape (C, H, W) = {tuple(image_shape)}, but the generator "
                               f"was trained on {want}.")


class NuisanceSampler:
    """Random-style decodes of a frozen generator, in a classifier's input normalisation.

    ``sampler(x, mean, std, generator)`` maps a normalised batch (``x = (p - mean) / std`` with
    pixels ``p`` in [0, 1]) to [-1, 1], encodes its content, decodes with ``s ~ N(0, I)`` drawn from
    ``generator`` (all styles in one draw, so chunking never changes the result) and returns the
    result in the same normalisation, on ``x``'s device, float32, without gradient history.
    ``sampler(x, mean, std, styles=s)`` takes the (N, style_dim) styles instead (GIT draws those
    of a whole global batch and gives each process its rows).
    """

    def __init__(self, generator: MunitGenerator, *, chunk_size: int = 1024, amp: str = "auto") -> None:
        if chunk_size < 1:
            raise InvTransferError(f"chunk_size must be >= 1, got {chunk_size}.")
        self.gen = generator.eval().requires_grad_(False)
        self.chunk_size = chunk_size
        self.device = next(generator.parameters()).device
        self.amp_dtype = autocast_dtype(amp, self.device)
        self._stats: dict = {}  # (mean, std) -> device tensors, made once (no host copy per call)

    @classmethod
    def from_path(cls, path: str, device: str | torch.device = "cpu", **kw) -> "NuisanceSampler":
        """A sampler over :func:`load_generator` of ``path``."""
        return cls(load_generator(path, device)[0], **kw)

    def __call__(self, x_normalised: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                 generator: torch.Generator | None = None, *, styles: torch.Tensor | None = None) -> torch.Tensor:
        a = self.gen.arch
        want = (a.channels, a.image_size, a.image_size)
        if not isinstance(x_normalised, torch.Tensor) or x_normalised.dim() != 4 \
                or tuple(x_normalised.shape[1:]) != want:
            got = tuple(x_normalised.shape) if isinstance(x_normalised, torch.Tensor) else type(x_normalised).__name__
            raise InvTransferError(f"nuisance sampler input has shape {got}; the generator takes (N, C, H, W) "
                                   f"with (C, H, W) = {want}.")
        if len(mean) != a.channels or len(std) != a.channels:
            raise InvTransferError(f"normalisation mean/std have {len(mean)}/{len(std)} entries; the generator's "
                                   f"images have {a.channels} channel(s).")
        out_device = x_normalised.device
        key = (tuple(float(v) for v in mean), tuple(float(v) for v in std))
        if key not in self._stats:
            self._stats[key] = tuple(torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1).to(self.device)
                                     for v in key)
        m, s = self._stats[key]
        if styles is None:
            if generator is None:
                raise InvTransferError("the nuisance sampler needs a generator or the styles.")
            styles = torch.randn(x_normalised.shape[0], a.style_dim, generator=generator, device=generator.device)
        elif tuple(styles.shape) != (x_normalised.shape[0], a.style_dim):
            raise InvTransferError(f"styles have shape {tuple(styles.shape)}; expected "
                                   f"{(x_normalised.shape[0], a.style_dim)}.")
        styles = batches.to_device(styles, self.device)
        outs = []
        with torch.inference_mode():
            for i in range(0, x_normalised.shape[0], self.chunk_size):
                x = x_normalised[i:i + self.chunk_size].to(self.device, torch.float32)
                x = (x * s + m) * 2.0 - 1.0
                with autocast(self.device, self.amp_dtype):
                    y = self.gen.decode(self.gen.content_encoder(x), styles[i:i + self.chunk_size])
                outs.append(((y.float() + 1.0) / 2.0 - m) / s)
        out = torch.cat(outs) if outs else x_normalised.new_empty((0, *want), dtype=torch.float32)
        # A clone outside inference mode is an ordinary tensor, so callers may use it in autograd
        # (e.g. as classifier input in GIT); inference tensors cannot be saved for backward.
        return out.to(out_device).clone()


__all__ = ["load_classifier", "WEIGHTS", "same_weights_under_both_policies", "load_frozen_classifier",
           "FrozenClassifier", "check_trained_on", "trained_on_instance",
           "predict_logits", "evaluate_split", "evaluate_checkpoint", "load_generator", "check_compatible",
           "NuisanceSampler", "to_unit_range", "to_pixels"]
