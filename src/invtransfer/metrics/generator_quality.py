"""How good a trained generator is: class preservation, nuisance diversity, reconstruction.

``invtransfer generator-quality`` (:func:`generator_quality`) measures a generator on held-out
images of a dataset against the dataset's true synthetic nuisance:

* class preservation -- a classifier trained on untransformed data classifies the generated
  images about as well as truly transformed ones;
* diversity -- a per-nuisance statistic (:data:`DIVERSITY_STATISTICS`) of several random-style
  decodes of one image, beside the same statistic of the true transform;
* reconstruction -- L1 of ``x`` and its decode with its own style.
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import torch

from invtransfer.data import batches, datasets
from invtransfer.data import nuisance as nuisance_ops
from invtransfer.data.datasets import DatasetConfig
from invtransfer.errors import InvTransferError
from invtransfer.train.inference import (
    NuisanceSampler,
    check_compatible,
    load_classifier,
    load_generator,
    predict_logits,
    to_unit_range,
)
from invtransfer.train.runtime import resolve_device

DIVERSITY_STATISTICS = {
    "bg": "std across draws of the mean intensity (0..255) of the source's background pixels",
    "dil": "std across draws of the stroke mass (sum of pixel intensities / 255)",
    "rot": "mean absolute pixel difference (0..255) between two draws of the same image "
           "(reported in the *_std fields)",
}


def _diversity(name: str, draws: torch.Tensor, base: torch.Tensor) -> float:
    """The nuisance's diversity statistic of ``draws`` (N, S, C, H, W) of ``base`` (N, C, H, W), pixels."""
    if name == "bg":
        mask = (base < nuisance_ops.BACKGROUND_THRESHOLD).all(1)  # (N, H, W): background in the source
        area = mask.sum((1, 2)).float()
        level = (draws * mask[:, None, None]).sum((2, 3, 4)) / (area[:, None] * draws.shape[2]).clamp_min(1)
        per_image = level.std(1, unbiased=False)[area > 0]  # images without background say nothing
    elif name == "dil":
        per_image = (draws.sum((2, 3, 4)) / 255.0).std(1, unbiased=False)
    else:
        s = draws.shape[1]
        diffs = [(draws[:, i] - draws[:, j]).abs().mean((1, 2, 3)) for i in range(s) for j in range(i + 1, s)]
        per_image = torch.stack(diffs, 1).mean(1)
    return float(per_image.mean()) if per_image.numel() else float("nan")


def generator_quality(generator_path: str, data_cfg: DatasetConfig, *, classifier_path: str | None = None,
                      n_per_class: int = 20, styles: int = 8, seed: int = 0, device: str = "auto",
                      batch_size: int = 1024, progress: bool = False) -> dict:
    """Class preservation, nuisance diversity and reconstruction of a generator on held-out images.

    Held-out images are the first ``n_per_class`` val images of each class of ``data_cfg``'s
    dataset; their untransformed versions come from the same dataset built with
    ``nuisance=none`` (and ``variant=standard``): the validation split does not depend on the
    nuisance, so both builds hold the same source images in the same order (checked by label).
    The generator transforms the dataset's own val images (what it sees in GIT); the true
    nuisance is applied, with ``styles`` fresh draws, to the untransformed ones. A dataset
    without a synthetic nuisance gets ``diversity`` null and no true-transform accuracy.
    ``progress`` shows a progress bar over the generator's batches on stderr.
    """
    from tqdm import tqdm

    if n_per_class < 1 or styles < 2:
        raise InvTransferError(f"generator quality needs n_per_class >= 1 and styles >= 2 "
                               f"(got {n_per_class}, {styles}).")
    dev = resolve_device(device)
    gen, gmeta = load_generator(generator_path, dev)
    ds = datasets.build_dataset(data_cfg)
    check_compatible(gen, ds.image_shape, f"dataset {ds.name!r}")
    keep = np.concatenate([np.flatnonzero(ds.y_val == c)[:n_per_class] for c in range(ds.num_classes)])
    if len(keep) == 0:
        raise InvTransferError(f"dataset {ds.name!r} has no validation images to evaluate the generator on.")
    y = torch.from_numpy(ds.y_val[keep]).to(dev)
    x_in = batches.to_device_images(ds.x_val[keep], dev).float()  # pixels, as the generator sees them
    base = None
    if ds.nuisance != "none":
        base_cfg = dataclasses.replace(data_cfg, nuisance="none", variant="standard")
        base_ds = datasets.build_dataset(base_cfg)
        if not np.array_equal(base_ds.y_val, ds.y_val):
            raise InvTransferError(f"the untransformed build of {ds.name!r} has another validation split; cannot "
                                   f"pair held-out images with their sources.")
        base = batches.to_device_images(base_ds.x_val[keep], dev).float()
    n, c = x_in.shape[0], x_in.shape[1]
    sampler = NuisanceSampler(gen, chunk_size=batch_size)
    g = torch.Generator().manual_seed(seed)
    zeros, ones = [0.0] * c, [1.0] * c  # normalisation = pixels / 255
    rep = x_in.repeat_interleave(styles, 0)
    # All styles in one draw, as the sampler draws them, then decoded batch by batch for the bar:
    # the same numbers as one sampler call (its chunks are these batches).
    codes = torch.randn(n * styles, gen.arch.style_dim, generator=g, device=g.device)
    starts = range(0, n * styles, batch_size)
    bar = tqdm(total=len(starts) + len(range(0, n, batch_size)), desc="generator quality", unit="batch",
               leave=False, dynamic_ncols=True, file=sys.stderr, disable=not progress)
    decoded = []
    for i in starts:
        decoded.append(sampler(rep[i:i + batch_size] / 255.0, zeros, ones, styles=codes[i:i + batch_size]))
        bar.update(1)
    generated = torch.cat(decoded).mul_(255.0).clamp_(0, 255)  # (n * styles, C, H, W)
    true = None
    if base is not None:
        params = nuisance_ops.sample_params(ds.nuisance, n * styles, batches.step_generator(seed, 0, 0, stream=7))
        base_rep = base.repeat_interleave(styles, 0)
        true = torch.cat([nuisance_ops.apply(ds.nuisance, base_rep[i:i + batch_size], params[i:i + batch_size].to(dev))
                          for i in range(0, n * styles, batch_size)])

    # (3) reconstruction
    with torch.inference_mode():
        rec = []
        for i in range(0, n, batch_size):
            xb = to_unit_range(x_in[i:i + batch_size])
            rec.append((gen(xb).float() - xb).abs().mean((1, 2, 3)))
            bar.update(1)
        reconstruction_l1 = float(torch.cat(rec).mean())
    bar.close()

    # (2) diversity
    diversity = None
    if base is not None:
        shape = (n, styles, *x_in.shape[1:])
        gen_stat = _diversity(ds.nuisance, generated.view(shape), base)
        true_stat = _diversity(ds.nuisance, true.view(shape), base)
        diversity = {"statistic": ds.nuisance, "description": DIVERSITY_STATISTICS[ds.nuisance],
                     "generated_std": gen_stat, "true_std": true_stat,
                     "ratio": gen_stat / true_stat if true_stat > 0 else None}

    # (1) class preservation
    preservation, note = None, None
    if classifier_path is None:
        note = "class preservation skipped: no classifier given (--classifier RUN trained on untransformed data)"
    else:
        model, cmeta = load_classifier(classifier_path, dev)
        check_compatible(gen, cmeta["image_shape"], f"classifier {classifier_path}")
        if len(cmeta["class_names"]) != ds.num_classes:
            raise InvTransferError(f"classifier {classifier_path} has {len(cmeta['class_names'])} classes; dataset "
                                   f"{ds.name!r} has {ds.num_classes}.")
        normalizer = batches.Normalizer(**cmeta["normalizer"])
        if cmeta["nuisance"] != "none":
            note = (f"classifier {cmeta['path']} was trained on {cmeta['name']!r} with nuisance "
                    f"{cmeta['nuisance']!r}; class preservation is meant for a classifier of untransformed data")

        def accuracy(pixels: torch.Tensor, labels: torch.Tensor) -> float:
            logits = predict_logits(model, pixels, normalizer, batch_size=batch_size)
            return 100.0 * float((logits.argmax(1) == labels).float().mean())

        y_rep = y.repeat_interleave(styles)
        gen_acc = accuracy(generated, y_rep)
        true_acc = accuracy(true, y_rep) if true is not None else None
        preservation = {"generated_accuracy": gen_acc, "true_transform_accuracy": true_acc,
                        "difference": gen_acc - true_acc if true_acc is not None else None,
                        "input_accuracy": accuracy(x_in, y), "classifier": cmeta["path"],
                        "classifier_dataset": cmeta["name"]}
    return {"generator": gmeta["path"], "dataset": ds.name, "nuisance": ds.nuisance,
            "class_preservation": preservation, "diversity": diversity, "reconstruction_l1": reconstruction_l1,
            "n_images": int(n), "styles": int(styles), "seed": seed, "note": note,
            "generator_iterations": gmeta["iteration"], "generator_images_seen": gmeta["images_seen"]}


__all__ = ["generator_quality", "DIVERSITY_STATISTICS"]
