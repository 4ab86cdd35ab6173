"""Per-class invariance (eKLD) of any PyTorch classifier, on images as you have them.

``eKLD_c`` is the mean KL divergence ``KL(p(.|x) || p(.|x'))`` between the classifier's softmax on
a held-out image ``x`` of class ``c`` and on a transformed copy ``x'`` of the same image
(docs/design.md#measurement); consistency is the fraction of draws whose prediction is unchanged. A network that
transfers an invariance to its small classes has a small eKLD there too; the paper finds that
eKLD grows as classes get smaller.

::

    from invtransfer.invariance import ekld, plot_ekld_vs_class_size

    res = ekld(model, x_test_uint8, y_test, "rot", normalize=my_normalize, class_sizes=train_counts)
    res["per_class"]          # [{"class": 0, "class_size": 5000, "ekld": 0.012, "consistency": 0.98}, ...]
    res["spearman_rho"]       # trend of eKLD with class size (negative: small classes less invariant)
    plot_ekld_vs_class_size(res, path="ekld.png")

``res["per_class"]`` is a list of records: ``pandas.DataFrame(res["per_class"])`` is a table.
The measurement is the one ``invtransfer invariance`` makes (the same function computes it): for
each class the first ``images_per_class`` images of that class in ``images`` (cycled if fewer),
``draws`` transformed copies of each, all randomness from ``seed``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import torch

from invtransfer.data import nuisance as nuisance_ops
from invtransfer.data.batches import Normalizer
from invtransfer.errors import InvTransferError
from invtransfer.git import FrozenGenerator, load_generator
from invtransfer.metrics.invariance import draw_ekld, measure_invariance, true_transform

__all__ = ["TRANSFORMS", "ekld", "plot_ekld_vs_class_size"]

TRANSFORMS = nuisance_ops.NUISANCES  # the synthetic nuisances known by name: rot, bg, dil

Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


class _Normalized(torch.nn.Module):
    """``model(normalize(x))``: measure_invariance sees images in the user's units."""

    def __init__(self, model: torch.nn.Module, normalize: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.model = model  # a child module, so eval()/train() reach it
        self.normalize = normalize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalize(x))


def _device_of(model: torch.nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def _as_images(images, device: torch.device) -> tuple[torch.Tensor, float]:
    """Float32 (N, C, H, W) images on ``device`` in the user's units, and pixels per unit (255
    for uint8 input, whose units are 0..255 pixels; 1 for float input, taken to lie in [0, 1])."""
    t = torch.as_tensor(images)
    if t.dim() != 4:
        raise InvTransferError(f"images must be (N, C, H, W); got shape {tuple(t.shape)} (numpy NHWC arrays: "
                               f"x.transpose(0, 3, 1, 2)).")
    if t.dtype == torch.uint8:
        return t.to(device).float(), 1.0
    if t.is_floating_point():
        return t.to(device, torch.float32), 255.0
    raise InvTransferError(f"images must be uint8 (pixels 0..255) or float (pixels in [0, 1]); got {t.dtype}.")


def _transform(transform, channels: int, pixels_per_unit: float, device: torch.device) -> tuple[Transform, str]:
    """The transform as a function of images in the user's units, and its name for the result."""
    # x = (p - 0) / std with pixels p in [0, 1]: the user's units as a normalisation
    units = Normalizer([0.0] * channels, [pixels_per_unit / 255.0] * channels)
    if isinstance(transform, str) and transform.startswith("generator:"):
        transform = load_generator(transform.split(":", 1)[1], device)
    if isinstance(transform, str):
        if transform not in TRANSFORMS:
            raise InvTransferError(f"transform {transform!r} is not one of {', '.join(TRANSFORMS)} (a synthetic "
                                   f"nuisance), 'generator:PATH', a loaded generator or a callable (x, generator) -> x.")
        return true_transform(transform, units), transform
    if isinstance(transform, FrozenGenerator):
        gen = transform
        if gen.image_shape[0] != channels:
            raise InvTransferError(f"the generator takes {gen.image_shape[0]}-channel images; these have {channels}.")
        return (lambda x, g: gen(x, units.mean, units.std, g)), f"generator:{gen.path or 'loaded'}"
    if callable(transform):
        return transform, getattr(transform, "__name__", type(transform).__name__)
    raise InvTransferError(f"transform must be a name ({', '.join(TRANSFORMS)}), 'generator:PATH', a generator from "
                           f"invtransfer.git.load_generator or a callable (x, generator) -> x; got "
                           f"{type(transform).__name__}.")


def ekld(model: torch.nn.Module, images: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray | Sequence[int],
         transform: str | FrozenGenerator | Transform, *,
         normalize: Callable[[torch.Tensor], torch.Tensor] | None = None,
         class_sizes: Sequence[int] | None = None, num_classes: int | None = None, images_per_class: int = 40,
         draws: int = 100, seed: int = 0, batch_size: int = 2000, device: str | torch.device | None = None,
         progress: bool = False) -> dict:
    """Per-class eKLD and consistency of ``model`` under ``transform``.

    ``images``: held-out images (N, C, H, W), uint8 (pixels 0..255) or float (pixels in [0, 1]),
    tensor or numpy array; ``labels`` their classes. ``normalize`` maps a float batch in the
    units of ``images`` (uint8 input arrives as floats 0..255) to the model's input; default:
    scale to [0, 1]. ``transform`` is one of :data:`TRANSFORMS` (the true synthetic nuisance),
    ``"generator:PATH"`` or a :class:`~invtransfer.git.FrozenGenerator` (random-style decodes),
    or any callable ``(x, generator) -> x'`` on batches in the units of ``images`` drawing its
    randomness from the ``torch.Generator`` it is given (on the CPU).

    ``class_sizes`` (training images per class) add the trend: each record's ``class_size``,
    the Spearman correlation of eKLD with class size and the mean eKLD of the smallest third of
    classes; without them these are ``None``. The classes are ``0 .. num_classes - 1``
    (default: ``len(class_sizes)``, else the largest label + 1); each needs one image.
    The model runs on ``device`` (default: where its parameters are) in eval mode, and is
    put back in its previous mode; ``progress`` shows a progress bar on stderr. Returns a dict: ``per_class`` (records with ``class``,
    ``class_size``, ``ekld``, ``consistency``), ``mean_ekld``, ``mean_consistency``,
    ``spearman_rho``, ``spearman_p``, ``mean_ekld_smallest_third`` and the settings.
    """
    for key, value, low in (("images_per_class", images_per_class, 1), ("draws", draws, 1),
                            ("batch_size", batch_size, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise InvTransferError(f"{key} must be an integer >= {low}, got {value!r}.")
    if not isinstance(model, torch.nn.Module):
        raise InvTransferError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    dev = torch.device(device) if device is not None else _device_of(model)
    x, pixels_per_unit = _as_images(images, dev)
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).astype(np.int64).reshape(-1)
    if len(y) != len(x):
        raise InvTransferError(f"{len(x)} images but {len(y)} labels.")
    if class_sizes is not None:
        class_sizes = [int(n) for n in class_sizes]
        if num_classes is not None and num_classes != len(class_sizes):
            raise InvTransferError(f"num_classes={num_classes} but class_sizes has {len(class_sizes)} entries.")
        num_classes = len(class_sizes)
    elif num_classes is None:
        num_classes = int(y.max()) + 1 if len(y) else 0
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise InvTransferError(f"labels must lie in 0..{num_classes - 1}; got {int(y.min())}..{int(y.max())}.")
    tf, name = _transform(transform, x.shape[1], pixels_per_unit, dev)
    wrapped = _Normalized(model, normalize if normalize is not None else (lambda t: t / (255.0 / pixels_per_unit)))
    return measure_invariance(wrapped, x, y, class_sizes, tf, images_per_class=images_per_class, draws=draws,
                              seed=seed, batch_size=batch_size, transform_name=name, num_classes=num_classes,
                              progress=progress)


def plot_ekld_vs_class_size(results: dict | Sequence[dict], labels: Sequence[str] | None = None, *,
                            path: str | os.PathLike | None = None, ax=None, title: str = ""):
    """Per-class eKLD against training class size (log x axis), one series per result of
    :func:`ekld` (measured with ``class_sizes``). Draws on ``ax`` if given, else on a new figure;
    writes ``path`` (PNG, PDF, ...) if given. Returns the matplotlib Figure."""
    results = [results] if isinstance(results, dict) else list(results)
    labels = list(labels) if labels is not None else [f"run {i + 1}" for i in range(len(results))]
    if ax is None:
        from matplotlib.figure import Figure  # no pyplot: no global state, any backend

        fig = Figure(figsize=(5, 3.6))
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    draw_ekld(ax, results, labels, title)
    if path is not None:
        fig.tight_layout()
        fig.savefig(os.fspath(path), dpi=90)
    return fig
