"""Per-class invariance of a classifier: eKLD and consistency (docs/design.md#measurement).

``eKLD_c = E_{x in class c, x' ~ T(.|x)} KL(p(.|x) || p(.|x'))`` with natural logs and
``p = softmax(classifier)``, estimated on held-out images of class c: ``images_per_class`` images
(the first of the class in split order, cycled if fewer), ``draws`` transformed copies of each,
and the SAME image x on both sides of the KL (the public code pairs x with a transform of a
different image; we do not). Consistency is the fraction of draws whose argmax equals the argmax
on x. The trend against training class size is summarised by the Spearman correlation.

A transform is any callable ``(x_normalised, generator) -> x'_normalised``:

* :func:`true_transform` applies the dataset's known synthetic nuisance (ROT/BG/DIL) in pixel
  space. It is applied to the *untransformed* held-out images: every nuisance's support contains
  the identity (angle 0, background 0, erosion of size 1), so x is a legitimate sample and x' a
  fresh draw of the same image; re-transforming an already transformed image would, for BG,
  change nothing (its background is no longer 0).
* a learned generator (``generator:PATH``) is applied to the held-out images as stored, the data
  it was trained on.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from invtransfer.config import from_dict
from invtransfer.data import datasets
from invtransfer.data import nuisance as nuisance_ops
from invtransfer.data.batches import Normalizer, step_generator, to_device_images
from invtransfer.errors import InvTransferError
from invtransfer.git import load_generator
from invtransfer.train.inference import check_compatible, load_classifier
from invtransfer.train.runtime import resolve_device

Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def true_transform(name: str, normalizer: Normalizer) -> Transform:
    """The synthetic nuisance ``name`` as a transform of normalised images."""
    name = nuisance_ops.check_name(name)

    def apply(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        params = nuisance_ops.sample_params(name, x.shape[0], g).to(x.device)
        return normalizer(nuisance_ops.apply(name, normalizer.to_pixels(x), params))

    return apply


def identity_transform(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:  # noqa: ARG001
    return x


def select_per_class(labels: np.ndarray, num_classes: int, images_per_class: int) -> np.ndarray:
    """(num_classes, images_per_class) indices: the first images of each class, cycled if fewer."""
    out = np.empty((num_classes, images_per_class), dtype=np.int64)
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        if len(idx) == 0:
            raise InvTransferError(f"class {c} has no held-out images; eKLD needs at least one per class.")
        out[c] = idx[np.arange(images_per_class) % len(idx)]
    return out


@torch.inference_mode()
def measure_invariance(model: torch.nn.Module, images: torch.Tensor, labels: np.ndarray | torch.Tensor,
                       class_sizes: Sequence[int] | None, transform: Transform, *, images_per_class: int = 40,
                       draws: int = 100, seed: int = 0, batch_size: int = 2000,
                       transform_name: str = "custom", num_classes: int | None = None,
                       progress: bool = False) -> dict:
    """eKLD and consistency per class of ``model`` under ``transform``.

    ``images`` are held-out images already in the classifier's normalisation (N, C, H, W), on the
    model's device; ``class_sizes`` are the training class sizes (for the trend statistics;
    ``None``: the classes are ``0 .. num_classes - 1`` and every trend field is ``None``).
    Randomness comes from ``seed`` only, so the measurement is reproducible. ``progress`` shows a
    progress bar (class x draws) on stderr.
    """
    from scipy import stats
    from tqdm import tqdm

    labels = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if class_sizes is None and num_classes is None:
        raise InvTransferError("measure_invariance needs class_sizes or num_classes.")
    num_classes = len(class_sizes) if class_sizes is not None else int(num_classes)
    chosen = select_per_class(labels, num_classes, images_per_class)
    was_training = model.training
    model.eval()
    draws_per_chunk = max(1, batch_size // images_per_class)
    per_class = []
    bar = tqdm(total=num_classes * draws, desc=f"eKLD ({transform_name})", unit="draw", leave=False,
               dynamic_ncols=True, file=sys.stderr, disable=not progress)
    for c in range(num_classes):
        x = images[torch.as_tensor(chosen[c], device=images.device)]
        logp = F.log_softmax(model(x).float(), dim=1)  # (n, K)
        pred = logp.argmax(1)
        kl_sum, agree, done, chunk = 0.0, 0, 0, 0
        while done < draws:
            k = min(draws_per_chunk, draws - done)
            g = step_generator(seed, c, chunk, stream=7)
            xr = x.repeat(k, 1, 1, 1)  # draw-major: row d*n + i is image i
            logq = F.log_softmax(model(transform(xr, g)).float(), dim=1)
            lp = logp.repeat(k, 1)
            kl = (lp.exp() * (lp - logq)).sum(1)
            kl_sum += float(kl.clamp_min(0).sum())
            agree += int((logq.argmax(1) == pred.repeat(k)).sum())
            done += k
            chunk += 1
            bar.update(k)
        total = images_per_class * draws
        per_class.append({"class": c, "class_size": None if class_sizes is None else int(class_sizes[c]),
                          "ekld": kl_sum / total, "consistency": agree / total})
    bar.close()
    model.train(was_training)
    ekld = np.array([p["ekld"] for p in per_class])
    rho = pval = tail = None  # undefined without class sizes, or for constant inputs
    if class_sizes is not None:
        sizes = np.array([p["class_size"] for p in per_class], dtype=float)
        if len(set(sizes)) > 1 and np.ptp(ekld) > 0:
            rho, pval = (float(v) for v in stats.spearmanr(sizes, ekld))
        third = max(1, math.ceil(num_classes / 3))
        tail = float(ekld[np.argsort(sizes, kind="stable")[:third]].mean())
    return {"transform": transform_name, "draws": draws, "images_per_class": images_per_class, "seed": seed,
            "per_class": per_class, "spearman_rho": rho, "spearman_p": pval,
            "mean_ekld": float(ekld.mean()), "mean_ekld_smallest_third": tail,
            "mean_consistency": float(np.mean([p["consistency"] for p in per_class]))}


def draw_ekld(ax, results: Sequence[dict], labels: Sequence[str], title: str = "") -> None:
    """Per-class eKLD against training class size (log x) on ``ax``, one series per result."""
    if not results or len(labels) != len(results):
        raise InvTransferError(f"an eKLD plot needs one label per result; got {len(results)} result(s) and "
                               f"{len(labels)} label(s).")
    if any(p.get("class_size") is None for r in results for p in r["per_class"]):
        raise InvTransferError("an eKLD plot needs results measured with the training class sizes "
                               "(class_sizes=); without them there is no x axis.")
    for res, label in zip(results, labels):
        pts = sorted((p["class_size"], p["ekld"]) for p in res["per_class"])
        rho = res.get("spearman_rho")
        ax.plot(*zip(*pts), marker="o", ms=4, lw=0.8, alpha=0.85,
                label=f"{label} (Spearman {rho:+.2f})" if rho is not None else label)
    ax.set(xscale="log", xlabel="training images in class", ylabel="eKLD (nats)",
           title=title or f"eKLD vs class size ({results[0]['transform']}, {results[0]['draws']} draws)")
    ax.legend(fontsize=7)


def plot_ekld(results: Sequence[dict], labels: Sequence[str], path: str, title: str = "") -> None:
    """Per-class eKLD against training class size (log x), one series per result, written to ``path``."""
    from matplotlib.figure import Figure  # no pyplot: no global state, any backend

    fig = Figure(figsize=(5, 3.6))
    draw_ekld(fig.add_subplot(), results, labels, title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def measure_checkpoint(checkpoint: str, transform: str, *, split: str = "test", images_per_class: int = 40,
                       draws: int = 100, seed: int = 0, device: str = "auto", allow_other_dataset: bool = False,
                       progress: bool = False, weights: str = "selected") -> dict:
    """:func:`measure_invariance` of a trained classifier on its own dataset's held-out split.

    ``transform`` is ``rot``, ``bg``, ``dil`` (the true synthetic nuisance, applied to the
    untransformed held-out images) or ``generator:PATH`` (a trained generator, applied to the
    held-out images as stored). A generator trained on another dataset, nuisance, instance or
    dataset options than the classifier is refused unless ``allow_other_dataset``; the result
    records the generator used (``generator``: path, dataset, fingerprint, iteration, images seen).
    ``weights``: which of the run's weights (``load_classifier``: selected, best_val, last or
    other); the result records them (``weights``: which, epoch).
    """
    dev = resolve_device(device)
    model, meta = load_classifier(checkpoint, dev, weights=weights)
    normalizer = Normalizer(**meta["normalizer"])
    data_cfg = from_dict(datasets.DatasetConfig, meta["config"]["data"])
    used = None
    if transform.startswith("generator:"):
        sampler = load_generator(transform.split(":", 1)[1], device=dev)
        check_compatible(sampler.gen, meta["image_shape"], f"the classifier's dataset {data_cfg.name!r}")
        sampler.check_dataset(meta["name"], meta["fingerprint"], nuisance=meta.get("nuisance"),
                              instance=data_cfg.instance, what=f"the dataset of classifier {meta['path']}",
                              override="--allow-other-dataset", allow_other_dataset=allow_other_dataset)
        used = dict(sampler.provenance(), allow_other_dataset=allow_other_dataset)
        tf: Transform = lambda x, g: sampler(x, normalizer.mean, normalizer.std, g)  # noqa: E731
        ds = datasets.build_dataset(data_cfg)
    elif transform in nuisance_ops.NUISANCES:
        if meta.get("nuisance") not in (transform, "none"):
            raise InvTransferError(f"transform {transform!r} is not the nuisance of the classifier's dataset "
                                   f"({data_cfg.name}: {meta.get('nuisance')}); pass --transform "
                                   f"{meta.get('nuisance')} or generator:PATH.")
        tf = true_transform(transform, normalizer)
        # the same split and selection, without the stored transform (see module docstring)
        ds = datasets.build_dataset(dataclasses.replace(data_cfg, nuisance="none", variant="standard"))
    else:
        raise InvTransferError(f"unknown transform {transform!r}; expected one of "
                               f"{', '.join(nuisance_ops.NUISANCES)} or generator:PATH.")
    x, y = (ds.x_val, ds.y_val) if split == "val" else (ds.x_test, ds.y_test)
    images = normalizer(to_device_images(x, dev))
    out = measure_invariance(model, images, y, meta["train_class_counts"], tf, images_per_class=images_per_class,
                             draws=draws, seed=seed, transform_name=transform, progress=progress)
    return dict(out, split=split, checkpoint=meta["path"], dataset=data_cfg.name, generator=used,
                weights=meta.get("selected_weights"))


__all__ = ["Transform", "true_transform", "identity_transform", "select_per_class", "measure_invariance",
           "draw_ekld", "plot_ekld", "measure_checkpoint"]
