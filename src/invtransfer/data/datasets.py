"""Named long-tailed dataset presets, building them from source files, and caching the result.

A dataset is described by one :class:`DatasetConfig`: a preset ``name`` (``cifar10-lt``,
``fmnist-dil-lt``, ``gtsrb-lt``, ...) whose values fill every option left at ``None``, plus any
option the user overrides (``imbalance_ratio=50``, ``instance=3``, ``nuisance=bg``, ...).
:func:`build_dataset` turns it into an :class:`LTDataset` of uint8 arrays:

    source files -> official train/test -> validation split -> class sizes (profile, class order)
    -> long-tailed subset (first n or seeded shuffle; theta / splice variants)
    -> synthetic nuisance applied once per stored example (ROT / BG / DIL) -> cached npz

Decisions where the paper is silent (see also README):

* Seeds. Every random choice (validation split, class-to-rank order, nuisance parameters of
  train / val / test) draws from its own stream derived from ``(seed, instance, purpose)``, so
  instance ``i`` is reproducible and instances differ in class order *and* transform draws.
* Validation. K49-style presets (``val_mode=fraction``) split the official training set 80/20
  before subsampling, as the paper does; the 20% is transformed like the test set.
  CIFAR-LT, GTSRB-LT and TinyImageNet-LT (``val_mode=holdout``) draw ``val_per_class`` images
  per class from training images the long-tailed subset did not use, so the published training
  counts stay exact. A class whose training images are all used (CIFAR-10-LT's head class uses
  all 5,000) has fewer or no validation images; validation metrics average over classes present.
* GTSRB-LT (not published): classes ranked by their number of official training images
  (largest first, ties by class index), sizes ``max(int(1500 / k**alpha), 15)`` with
  ``alpha = ln(100) / ln(43)`` so the imbalance ratio is 100 and no class needs more images
  than it has. Images are drawn per class by a seeded shuffle (``selection=shuffle``, seed 0),
  not first-n: the official training set is stored as tracks of 30 consecutive frames of one
  physical sign, so the first 15 images of a class are half of one track (one sign, near-identical
  frames) and most classes would hold 1-3 signs. Measured with first-n (CE+DRS, 55 epochs):
  training accuracy 100%, validation balanced accuracy 29%. The validation images (unused frames)
  then share tracks with training images, so the GTSRB presets report the last epoch.
* TinyImageNet-LT (no details published): exactly like CIFAR-100-LT (exponential, n_max 500,
  rho 100, first n); the official val set is the test set.
* Splice variant: only the class of rank ``splice_rank`` is transformed, in train, val and
  test alike, so the control's test distribution matches its training distribution.

The cache is an npz under ``cache_dir`` named by a fingerprint of the source files' contents
and the resolved options: a changed option or file never reuses a stale cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import zlib
from dataclasses import dataclass, field

import numpy as np
import torch

from invtransfer.config import from_dict, option, to_dict
from invtransfer.data import formats, longtail, nuisance
from invtransfer.errors import InvTransferError, suggest
from invtransfer.fileio import atomic_write_bytes  # noqa: F401 (re-exported: callers import it from here)

#: Bumped whenever building changes in a way that changes the stored arrays.
BUILD_VERSION = 1

_GTSRB_ALPHA = math.log(100) / math.log(43)

# Each preset lists the resolved values of every option left at None in DatasetConfig.
_K49_STYLE = dict(profile="zipf", zipf_alpha=2.0, zipf_first=4800, zipf_min=5, class_order="random",
                  selection="first", allow_cycling=True, val_mode="fraction", val_fraction=0.2,
                  val_per_class=None, imbalance_ratio=None, n_max=None, counts=None)
_CIFAR_STYLE = dict(profile="exp", imbalance_ratio=100.0, class_order="index", selection="first",
                    allow_cycling=False, val_mode="holdout", val_per_class=20, val_fraction=None,
                    zipf_alpha=None, zipf_first=None, zipf_min=None, counts=None, nuisance="none")
PRESETS: dict[str, dict] = {
    "cifar10-lt": dict(_CIFAR_STYLE, source="cifar10", n_max=5000),
    "cifar100-lt": dict(_CIFAR_STYLE, source="cifar100", n_max=500),
    "tinyimagenet-lt": dict(_CIFAR_STYLE, source="tinyimagenet", n_max=500),
    "gtsrb-lt": dict(_CIFAR_STYLE, source="npz", npz_file="gtsrb32.npz", profile="zipf",
                     zipf_alpha=_GTSRB_ALPHA, zipf_first=1500, zipf_min=15, imbalance_ratio=None,
                     n_max=None, class_order="size", selection="shuffle"),
}
for _base in ("fmnist", "k49"):
    for _t in nuisance.NUISANCES:
        PRESETS[f"{_base}-{_t}-lt"] = dict(_K49_STYLE, source="fashion-mnist" if _base == "fmnist" else "k49",
                                           nuisance=_t)
    PRESETS[f"{_base}-lt"] = dict(_K49_STYLE, source="fashion-mnist" if _base == "fmnist" else "k49",
                                  nuisance="none")


@dataclass
class DatasetConfig:
    """How to build one long-tailed dataset. ``None`` means "the preset's value"."""

    name: str = option("fmnist-dil-lt", "dataset preset", choices=tuple(PRESETS))
    data_root: str | None = option(None, "folder holding the source files (else $INVTRANSFER_DATA, ./data, ...)")
    cache_dir: str | None = option(None, "where built datasets are cached (else $INVTRANSFER_CACHE or "
                                         "~/.cache/invtransfer/datasets)")
    seed: int = option(0, "base seed of every random choice in building", ge=0)
    instance: int = option(0, "dataset instance (seeds class order and nuisance draws)", ge=0)
    source: str | None = option(None, "source dataset", choices=formats.SOURCES)
    npz_file: str | None = option(None, "generic npz file (absolute, or relative to the data root)")
    num_classes: int | None = option(None, "keep only the first N classes of the source", ge=2)
    profile: str | None = option(None, "class-size profile", choices=("exp", "step", "zipf", "list", "none"))
    n_max: int | None = option(None, "largest class size (exp/step)", ge=1)
    imbalance_ratio: float | None = option(None, "rho = n_max / n_min (exp/step)", ge=1)
    zipf_alpha: float | None = option(None, "Zipf exponent alpha", gt=0)
    zipf_first: int | None = option(None, "Zipf size of rank 1", ge=1)
    zipf_min: int | None = option(None, "Zipf minimum class size", ge=1)
    counts: list[int] | None = option(None, "explicit per-rank class sizes (profile=list)", ge=0)
    class_order: str | None = option(None, "which class gets which rank", choices=("index", "random", "size"))
    selection: str | None = option(None, "first n images per class, or a seeded shuffle first (LDAM-DRW)",
                                   choices=("first", "shuffle"))
    selection_seed: int = option(0, "seed of selection=shuffle (LDAM-DRW uses 0)", ge=0)
    allow_cycling: bool | None = option(None, "repeat a class's images when it has fewer than its size")
    val_mode: str | None = option(None, "validation split", choices=("fraction", "holdout"))
    val_fraction: float | None = option(None, "fraction of the official train set held out (fraction mode)",
                                        gt=0, lt=1)
    val_per_class: int | None = option(None, "validation images per class (holdout mode)", ge=0)
    nuisance: str | None = option(None, "synthetic nuisance applied once per example",
                                  choices=("none",) + nuisance.NUISANCES)
    variant: str = option("standard", "standard; theta (5 base images per class, Zipf number of transformed "
                                      "copies); splice (only one rank transformed)",
                          choices=("standard", "theta", "splice"))
    theta_base_images: int = option(5, "base images per class in the theta variant", ge=1)
    splice_rank: int = option(0, "rank (0 = largest) of the transformed class in the splice variant", ge=0)
    strict_checksums: bool = option(False, "a checksum mismatch is an error rather than a warning")
    cifar100_labels: str = option("fine", "CIFAR-100 label set", choices=("fine", "coarse"))
    gtsrb_roi_crop: bool = option(False, "crop GTSRB images to their ROI before resizing (official layout)")

    def validate(self) -> None:
        if self.counts is not None and any(c < 0 for c in self.counts):
            raise InvTransferError("config key 'counts': class sizes must be >= 0.")


@dataclass
class LTDataset:
    """A built long-tailed dataset: uint8 images (N, H, W, C) and int64 labels per split."""

    name: str
    class_names: list[str]
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    train_class_counts: list[int]
    nuisance: str  # the true synthetic transform ("none" if none)
    sources: list[str]
    fingerprint: str
    config: dict  # the resolved DatasetConfig
    warnings: list[str] = field(default_factory=list)
    #: the training images before the nuisance (oracle training re-transforms these online)
    x_train_base: np.ndarray | None = None
    #: per class, how many stored training examples repeat an image already in the class
    #: (allow_cycling, or the theta variant's base images); None only for a cache of an older build
    train_repeats: list[int] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def label(self) -> str:
        """The name results and reports group runs by: the preset's name, with the variant appended
        when it is not the standard one (``fmnist-dil-lt-theta``, ``fmnist-dil-lt-splice9``), so that
        a control is never averaged with the protocol it controls for."""
        variant = self.config.get("variant", "standard")
        if variant == "standard":
            return self.name
        suffix = f"splice{self.config.get('splice_rank', 0)}" if variant == "splice" else variant
        return f"{self.name}-{suffix}"

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) as the models see it."""
        n, h, w, c = self.x_train.shape
        return (c, h, w)

    def info(self) -> dict:
        """What ``invtransfer data NAME --json`` prints."""
        counts = self.train_class_counts
        return {"name": self.name, "class_names": self.class_names, "train_class_counts": counts,
                "train_size": int(len(self.y_train)), "val_size": int(len(self.y_val)),
                "test_size": int(len(self.y_test)), "image_shape": list(self.image_shape),
                "imbalance_ratio": longtail.imbalance_ratio(counts), "nuisance": self.nuisance,
                "repeated_train_images": sum(self.train_repeats or []), "train_repeats": self.train_repeats,
                "sources": self.sources, "fingerprint": self.fingerprint, "warnings": self.warnings}

    def repeat_warning(self) -> str | None:
        """The warning that training images are repeated (allow_cycling), or None."""
        if not any(self.train_repeats or []) or self.config.get("variant") == "theta":
            return None  # theta repeats its few base images by design
        short = [(c, n - r, n) for c, (n, r) in enumerate(zip(self.train_class_counts, self.train_repeats)) if r]
        shown = ", ".join(f"{self.class_names[c]!r} {u:,} images for {n:,}" for c, u, n in short[:5])
        more = f" and {len(short) - 5} more classes" if len(short) > 5 else ""
        return (f"{sum(self.train_repeats):,} of the {len(self.y_train):,} training examples of {self.name} repeat an "
                f"image of their class (allow_cycling=true): {shown}{more}. Each class has fewer images than its "
                f"size; set allow_cycling=false to refuse, or lower the class sizes.")


def resolve(cfg: DatasetConfig) -> DatasetConfig:
    """Fill every ``None`` option from the preset; the result is what gets fingerprinted and saved."""
    if cfg.name not in PRESETS:
        raise InvTransferError(f"unknown dataset {cfg.name!r}.{suggest(cfg.name, PRESETS)} "
                               f"Known datasets: {', '.join(PRESETS)}.")
    preset = PRESETS[cfg.name]
    values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    if values["npz_file"] is not None:
        # npz_file names the data to read; it must never be dropped in favour of the preset's own.
        # (The preset's own npz_file is allowed beside another source: resolving twice fills it.)
        if values["source"] is None:
            values["source"] = "npz"
        elif values["source"] != "npz" and values["npz_file"] != preset.get("npz_file"):
            raise InvTransferError(f"dataset options npz_file={values['npz_file']!r} and source={values['source']!r} "
                                   f"contradict each other: npz_file is the data of source=npz. Drop source= to "
                                   f"read the npz file, or drop npz_file to read {values['source']}.")
    if values["allow_cycling"] is None and values["source"] not in (None, preset["source"]):
        # A preset repeats images (allow_cycling) only on the data it was designed for; on other
        # data, repeating must be the user's explicit choice.
        values["allow_cycling"] = False
    for k, v in preset.items():
        if values.get(k) is None:
            values[k] = v
    if values["source"] == "npz" and not values["npz_file"]:
        raise InvTransferError("dataset option 'npz_file' is required with source=npz "
                               "(a file with x_train, y_train, x_test, y_test).")
    if values["profile"] == "list" and not values["counts"]:
        raise InvTransferError("dataset option 'counts' is required with profile=list, e.g. counts=[500,100,10].")
    if values["variant"] != "standard" and values["nuisance"] == "none":
        raise InvTransferError(f"dataset variant {values['variant']!r} needs a nuisance (nuisance=rot|bg|dil).")
    return from_dict(DatasetConfig, values)


def _subseed(cfg: DatasetConfig, purpose: str) -> int:
    """An independent, reproducible seed for one purpose of one instance."""
    ss = np.random.SeedSequence([cfg.seed, cfg.instance, zlib.crc32(purpose.encode())])
    return int(ss.generate_state(1, dtype=np.uint32)[0])


def default_cache_dir() -> str:
    return os.environ.get("INVTRANSFER_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                               "invtransfer", "datasets")


def _file_digest(path: str, memo_dir: str) -> str:
    """sha256 of a source file, memoised by (path, size, mtime) so repeated builds stay instant."""
    st = os.stat(path)
    key = f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}"
    memo_path = os.path.join(memo_dir, "digests.json")
    memo = {}
    if os.path.isfile(memo_path):
        try:
            with open(memo_path, encoding="utf-8") as fh:
                memo = json.load(fh)
        except (OSError, ValueError):
            memo = {}
    if key in memo:
        return memo[key]
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    memo[key] = h.hexdigest()
    try:
        atomic_write_bytes(memo_path, json.dumps(memo, indent=0).encode())
    except InvTransferError:
        pass  # only a speed-up: the next build hashes the file again
    return memo[key]


def _load_raw(cfg: DatasetConfig) -> formats.RawDataset:
    raw = formats.load_source(cfg.source, cfg.data_root, npz_file=cfg.npz_file, strict_checksums=cfg.strict_checksums,
                              cifar100_labels=cfg.cifar100_labels, gtsrb_roi_crop=cfg.gtsrb_roi_crop)
    if cfg.num_classes is not None:
        total = len(raw.class_names)
        if cfg.num_classes > total:
            raise InvTransferError(f"dataset option 'num_classes'={cfg.num_classes} but {cfg.source} has only "
                                   f"{total} classes.")
        keep_tr, keep_te = raw.y_train < cfg.num_classes, raw.y_test < cfg.num_classes
        raw = dataclasses.replace(raw, x_train=raw.x_train[keep_tr], y_train=raw.y_train[keep_tr],
                                  x_test=raw.x_test[keep_te], y_test=raw.y_test[keep_te],
                                  class_names=raw.class_names[:cfg.num_classes])
    return raw


def _rank_counts(cfg: DatasetConfig, num_classes: int) -> list[int]:
    return longtail.class_counts(cfg.profile, num_classes, n_max=cfg.n_max, imbalance_ratio=cfg.imbalance_ratio,
                                 alpha=cfg.zipf_alpha, first=cfg.zipf_first, minimum=cfg.zipf_min,
                                 counts=cfg.counts)


def _rank_to_class(cfg: DatasetConfig, labels: np.ndarray, num_classes: int) -> np.ndarray:
    if cfg.class_order == "size":
        available = np.bincount(labels, minlength=num_classes)
        return np.lexsort((np.arange(num_classes), -available))  # largest first, ties by index
    return longtail.rank_to_class(num_classes, cfg.class_order, _subseed(cfg, "class_order"))


def _transform(cfg: DatasetConfig, x: np.ndarray, y: np.ndarray, purpose: str,
               only_class: int | None) -> np.ndarray:
    """Apply the dataset's nuisance once per example with freshly drawn parameters."""
    if cfg.nuisance == "none" or len(x) == 0:
        return x
    gen = torch.Generator().manual_seed(_subseed(cfg, "nuisance/" + purpose))
    params = nuisance.sample_params(cfg.nuisance, len(x), gen)
    if only_class is None:
        return nuisance.transform_uint8(cfg.nuisance, x, params)
    out = x.copy()
    sel = np.flatnonzero(y == only_class)
    if len(sel):
        out[sel] = nuisance.transform_uint8(cfg.nuisance, x[sel], params[torch.as_tensor(sel)])
    return out


def _build(cfg: DatasetConfig, raw: formats.RawDataset, fingerprint: str) -> LTDataset:
    num_classes = len(raw.class_names)
    y = raw.y_train
    rank_counts = _rank_counts(cfg, num_classes)
    order = _rank_to_class(cfg, y, num_classes)
    counts = longtail.counts_by_class(rank_counts, order)
    if cfg.val_mode == "fraction":
        pool, val_idx = longtail.split_fraction(y, cfg.val_fraction, _subseed(cfg, "val_split"))
    else:
        pool, val_idx = None, None
    if cfg.variant == "theta":
        # Only transformation diversity is long-tailed: every class keeps the same few base
        # images, repeated (each copy with its own transform draw) up to its Zipf size.
        pool = longtail.select_first_n(y, [cfg.theta_base_images] * num_classes, pool=pool)
        pool = np.sort(pool)
        train_idx = longtail.select_first_n(y, counts, cycle=True, pool=pool)
    elif cfg.selection == "first":
        try:
            train_idx = longtail.select_first_n(y, counts, cycle=bool(cfg.allow_cycling), pool=pool)
        except InvTransferError as e:
            preset = PRESETS[cfg.name]
            why = (f" The preset {cfg.name} repeats images only on its own source ({preset['source']}), not on "
                   f"source={cfg.source}." if preset.get("allow_cycling") and cfg.source != preset["source"] else "")
            raise InvTransferError(f"dataset {cfg.name!r}: {e}.{why}") from None
    else:
        train_idx = longtail.select_shuffled(y, counts, cfg.selection_seed, pool=pool)
    if val_idx is None:
        val_idx = longtail.balanced_holdout(y, train_idx, cfg.val_per_class, _subseed(cfg, "val_split"))
    only = int(order[cfg.splice_rank]) if cfg.variant == "splice" else None
    if only is not None and cfg.splice_rank >= num_classes:
        raise InvTransferError(f"dataset option 'splice_rank'={cfg.splice_rank} but there are only "
                               f"{num_classes} classes (ranks 0..{num_classes - 1}).")
    x_train = _transform(cfg, raw.x_train[train_idx], y[train_idx], "train", only)
    x_val = _transform(cfg, raw.x_train[val_idx], y[val_idx], "val", only)
    x_test = _transform(cfg, raw.x_test, raw.y_test, "test", only)
    return LTDataset(name=cfg.name, class_names=list(raw.class_names), x_train=x_train, y_train=y[train_idx],
                     x_val=x_val, y_val=y[val_idx], x_test=x_test, y_test=raw.y_test.astype(np.int64),
                     train_class_counts=[int(c) for c in np.bincount(y[train_idx], minlength=num_classes)],
                     nuisance=cfg.nuisance, sources=list(raw.sources), fingerprint=fingerprint,
                     config=to_dict(cfg), warnings=list(raw.warnings),
                     x_train_base=raw.x_train[train_idx] if cfg.nuisance != "none" else None,
                     train_repeats=_repeats(y, train_idx, num_classes))


def _repeats(labels: np.ndarray, idx: np.ndarray, num_classes: int) -> list[int]:
    """Per class: selected indices minus distinct selected indices."""
    chosen = np.bincount(labels[idx], minlength=num_classes)
    distinct = np.bincount(labels[np.unique(idx)], minlength=num_classes)
    return [int(v) for v in chosen - distinct]


def _fingerprint(cfg: DatasetConfig, source_digests: dict[str, str]) -> str:
    options = {k: v for k, v in to_dict(cfg).items() if k not in ("data_root", "cache_dir", "strict_checksums")}
    blob = json.dumps({"version": BUILD_VERSION, "options": options,
                       "sources": sorted(source_digests.values())}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


_NOT_CACHED = "the dataset was built but not cached"


def _save_cache(path: str, ds: LTDataset) -> None:
    meta = {k: getattr(ds, k) for k in ("name", "class_names", "train_class_counts", "nuisance", "sources",
                                        "fingerprint", "config", "warnings", "train_repeats")}
    import io
    buf = io.BytesIO()
    extra = {} if ds.x_train_base is None else {"x_train_base": ds.x_train_base}
    np.savez(buf, x_train=ds.x_train, y_train=ds.y_train, x_val=ds.x_val, y_val=ds.y_val,
             x_test=ds.x_test, y_test=ds.y_test, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **extra)
    try:
        atomic_write_bytes(path, buf.getvalue())  # all or nothing: a failed write leaves no cache file
    except InvTransferError as e:
        # The cache only saves rebuilding; the dataset in hand is complete, so go on without it.
        ds.warnings.append(f"{_NOT_CACHED} ({e}); the next use rebuilds it.")


def _load_cache(path: str) -> LTDataset | None:
    """A cached dataset, or None if the cache file is missing or unreadable (then it is rebuilt)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes().decode())
            arrays = {k: z[k] for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")}
            arrays["x_train_base"] = z["x_train_base"] if "x_train_base" in z.files else None
        if meta.get("train_repeats") is None:
            return None  # written before repeats were counted: rebuilt (same arrays) so they are reported
        return LTDataset(**arrays, **meta)
    except Exception:  # noqa: BLE001 - any damage (truncated zip, bad CRC, foreign or old file): rebuild
        return None


def build_dataset(cfg: DatasetConfig | dict | None = None, *, use_cache: bool = True, **overrides) -> LTDataset:
    """Build (or load from cache) the long-tailed dataset that ``cfg`` describes."""
    if cfg is None or isinstance(cfg, dict):
        cfg = from_dict(DatasetConfig, dict(cfg or {}, **overrides))
    elif overrides:
        cfg = dataclasses.replace(cfg, **overrides)
    cfg = resolve(cfg)
    cache_dir = cfg.cache_dir or default_cache_dir()
    # Reading the source files is cheap next to building (decompression, no transforms) and
    # tells exactly which files the dataset comes from, so the fingerprint covers them.
    raw = _load_raw(cfg)
    os.makedirs(cache_dir, exist_ok=True)
    digests = {p: _file_digest(p, cache_dir) for p in raw.sources}
    fingerprint = _fingerprint(cfg, digests)
    cache_path = os.path.join(cache_dir, f"{cfg.name}-{fingerprint}.npz")
    ds = _load_cache(cache_path) if use_cache and os.path.isfile(cache_path) else None
    if ds is None:
        ds = _build(cfg, raw, fingerprint)
        if use_cache:
            _save_cache(cache_path, ds)
    # The warnings of this read of the source files (data_root, checksums), not the cached ones.
    ds.warnings = list(raw.warnings) + [w for w in [ds.repeat_warning()] if w] + \
        [w for w in ds.warnings if w.startswith(_NOT_CACHED)]
    return ds


def preview(ds: LTDataset, path: str, per_class: int = 8, max_classes: int = 20) -> str:
    """Write a PNG grid: one row per class, largest class first, a few training images each."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = sorted(range(ds.num_classes), key=lambda c: (-ds.train_class_counts[c], c))[:max_classes]
    fig, axes = plt.subplots(len(order), per_class, figsize=(per_class * 0.9 + 2.2, len(order) * 0.9 + 0.4),
                             squeeze=False)
    for row, c in enumerate(order):
        idx = np.flatnonzero(ds.y_train == c)[:per_class]
        for col in range(per_class):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if col < len(idx):
                img = ds.x_train[idx[col]]
                ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=255)
        axes[row, 0].set_ylabel(f"{ds.class_names[c]}\n(n={ds.train_class_counts[c]})", rotation=0,
                                ha="right", va="center", fontsize=7)
    fig.suptitle(f"{ds.name} (fingerprint {ds.fingerprint}): training images, largest class first", fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
