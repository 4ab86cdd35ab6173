"""Long-tailed subsets: class-size profiles, subset selection, validation splits, instances.

This module owns the arithmetic and index bookkeeping that turns a balanced labelled set into a
long-tailed one, and nothing else (no pixels, no files):

* class-size profiles by rank: exponential and step (Cao et al. 2019, LDAM-DRW), Zipf (the
  K49-LT sets of the GIT paper), an explicit list, or balanced (:func:`class_counts`);
* which class holds which rank (:func:`rank_to_class`): identity for CIFAR-LT, a seeded
  permutation per instance for K49-LT (instance ``i`` uses seed ``i``);
* which images form each class (:func:`select_first_n`, the GIT default, or
  :func:`select_shuffled`, the LDAM-DRW variant);
* validation splits (:func:`split_fraction` for the K49 80/20 split, :func:`balanced_holdout`
  for CIFAR-LT-like sets, which keeps the published training counts intact).

Every function returns plain ``int64`` index arrays into the caller's ``labels`` array, and
every bad option raises :class:`~invtransfer.errors.InvTransferError` naming it.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

import numpy as np

from invtransfer.errors import InvTransferError, suggest

PROFILES = ("exp", "step", "zipf", "list", "none")
ORDERS = ("index", "random")


# --------------------------------------------------------------------------- validation helpers

def _int_option(name: str, value: object, minimum: int) -> int:
    """``value`` as an int >= ``minimum``, or an error naming the option."""
    if isinstance(value, bool):
        raise InvTransferError(f"{name} must be an integer >= {minimum}, got {value!r}")
    try:
        as_int = operator.index(value)  # rejects 2.5 instead of silently truncating it
    except TypeError:
        if isinstance(value, float) and value.is_integer():
            as_int = int(value)
        else:
            raise InvTransferError(f"{name} must be an integer >= {minimum}, got {value!r}") from None
    if as_int < minimum:
        raise InvTransferError(f"{name} must be >= {minimum}, got {as_int}")
    return as_int


def _check_ratio(imbalance_ratio: object) -> float:
    try:
        rho = float(imbalance_ratio)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvTransferError(
            f"imbalance_ratio must be a number >= 1 (rho = n_max/n_min, e.g. 100), got {imbalance_ratio!r}"
        ) from None
    if not math.isfinite(rho) or rho < 1:
        raise InvTransferError(
            f"imbalance_ratio must be >= 1 (rho = n_max/n_min, e.g. 100), got {imbalance_ratio!r}"
        )
    return rho


def _as_labels(labels: object) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise InvTransferError(f"labels must be a 1-D array of class indices, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise InvTransferError(f"labels must be integer class indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and arr.min() < 0:
        raise InvTransferError(f"labels must be >= 0, found {int(arr.min())}")
    return arr


def _as_counts(counts: Sequence[int], name: str = "counts") -> list[int]:
    return [_int_option(f"{name}[{i}]", c, 0) for i, c in enumerate(counts)]


def _candidates(labels: np.ndarray, pool: np.ndarray | None) -> np.ndarray:
    """Indices that may be selected, ascending (= the original order of the data set)."""
    if pool is None:
        return np.arange(labels.size, dtype=np.int64)
    pool_arr = np.asarray(pool)
    if pool_arr.ndim != 1 or (pool_arr.size and not np.issubdtype(pool_arr.dtype, np.integer)):
        raise InvTransferError(f"pool must be a 1-D array of integer indices, got shape {pool_arr.shape} "
                               f"and dtype {pool_arr.dtype}")
    if pool_arr.size and (pool_arr.min() < 0 or pool_arr.max() >= labels.size):
        raise InvTransferError(f"pool indices must lie in [0, {labels.size}), got "
                               f"[{int(pool_arr.min())}, {int(pool_arr.max())}]")
    return np.unique(pool_arr.astype(np.int64))


def _by_class(labels: np.ndarray, candidates: np.ndarray, num_classes: int) -> list[np.ndarray]:
    """Candidate indices of each class 0..num_classes-1, each in original order."""
    cls = labels[candidates]
    if cls.size and cls.max() >= num_classes:
        raise InvTransferError(f"labels contain class {int(cls.max())} but counts has only "
                               f"{num_classes} entries (one per class is needed)")
    order = np.argsort(cls, kind="stable")  # stable keeps the original order within a class
    bounds = np.searchsorted(cls[order], np.arange(num_classes + 1))
    return [candidates[order[bounds[c]:bounds[c + 1]]] for c in range(num_classes)]


def _too_few(c: int, requested: int, available: int, pool: np.ndarray | None, hint: str) -> InvTransferError:
    where = " in the pool" if pool is not None else ""
    return InvTransferError(f"class {c} needs {requested} examples but only {available} are available{where}{hint}")


# --------------------------------------------------------------------------- profiles

def exponential_profile(n_max: int, num_classes: int, imbalance_ratio: float) -> list[int]:
    """Cao et al. (2019) exponential class sizes ``int(n_max * (1/rho) ** (i / (C - 1)))``, i = 0..C-1.

    The factor is computed as ``imb_factor = 1 / rho`` first, as the public LDAM-DRW/GIT code does,
    so the float rounding (and hence every truncated count) matches the published tables:
    CIFAR-10-LT (5000, rho 100) gives 5000, 2997, ..., 83, 50.
    """
    n_max = _int_option("n_max", n_max, 1)
    num_classes = _int_option("num_classes", num_classes, 1)
    imb_factor = 1.0 / _check_ratio(imbalance_ratio)
    if num_classes == 1:
        return [n_max]
    return [int(n_max * imb_factor ** (i / (num_classes - 1.0))) for i in range(num_classes)]


def step_profile(n_max: int, num_classes: int, imbalance_ratio: float) -> list[int]:
    """LDAM-DRW "step" sizes: the first ``C // 2`` classes get n_max, the rest ``int(n_max / rho)``.

    Computed as ``n_max * (1 / rho)`` like the public code. For odd C the public code returns only
    ``2 * (C // 2)`` sizes; here the extra (last) class joins the small half.
    """
    n_max = _int_option("n_max", n_max, 1)
    num_classes = _int_option("num_classes", num_classes, 1)
    small = int(n_max * (1.0 / _check_ratio(imbalance_ratio)))
    head = num_classes // 2
    return [n_max] * head + [small] * (num_classes - head)


def zipf_profile(num_classes: int, alpha: float = 2.0, first: int = 4800, minimum: int = 5) -> list[int]:
    """GIT K49-LT sizes ``max(int(first / k**alpha), minimum)`` for rank k = 1..C (K49: 7,822 images)."""
    num_classes = _int_option("num_classes", num_classes, 1)
    first = _int_option("first", first, 1)
    minimum = _int_option("minimum", minimum, 1)
    try:
        alpha = float(alpha)
    except (TypeError, ValueError):
        raise InvTransferError(f"alpha must be a number > 0, got {alpha!r}") from None
    if not math.isfinite(alpha) or alpha <= 0:
        raise InvTransferError(f"alpha must be > 0 (the Zipf exponent, e.g. 2.0), got {alpha!r}")
    return [max(int(first / k**alpha), minimum) for k in range(1, num_classes + 1)]


def class_counts(profile: str, num_classes: int, *, n_max: int | None = None,
                 imbalance_ratio: float | None = None, alpha: float | None = None,
                 first: int | None = None, minimum: int | None = None,
                 counts: Sequence[int] | None = None) -> list[int]:
    """Class sizes by rank for a named profile.

    ``exp`` / ``step`` need ``n_max`` and ``imbalance_ratio``; ``zipf`` takes ``alpha``, ``first``
    and ``minimum`` (defaults 2.0, 4800, 5); ``list`` takes explicit ``counts`` (one per class);
    ``none`` is balanced at ``n_max``. Options a profile does not use are ignored, so one config
    object can carry all of them.
    """
    if not isinstance(profile, str) or profile not in PROFILES:
        raise InvTransferError(f"unknown class-size profile {profile!r}; expected one of "
                               f"{', '.join(PROFILES)}.{suggest(str(profile), PROFILES)}")
    num_classes = _int_option("num_classes", num_classes, 1)

    def need(name: str, value: object) -> object:
        if value is None:
            raise InvTransferError(f"profile {profile!r} needs {name} to be set")
        return value

    if profile in ("exp", "step"):
        n = need("n_max", n_max)
        rho = need("imbalance_ratio", imbalance_ratio)
        fn = exponential_profile if profile == "exp" else step_profile
        return fn(n, num_classes, rho)  # type: ignore[arg-type]
    if profile == "zipf":
        return zipf_profile(num_classes, 2.0 if alpha is None else alpha,
                            4800 if first is None else first, 5 if minimum is None else minimum)
    if profile == "none":
        return [_int_option("n_max", need("n_max", n_max), 1)] * num_classes
    explicit = need("counts", counts)
    if isinstance(explicit, (str, bytes)) or not isinstance(explicit, (Sequence, np.ndarray)):
        raise InvTransferError(f"counts must be a list of {num_classes} non-negative integers, got {explicit!r}")
    if len(explicit) != num_classes:
        raise InvTransferError(f"counts has {len(explicit)} entries but num_classes is {num_classes}; "
                               "give one count per class")
    values = _as_counts(explicit)
    if not any(values):
        raise InvTransferError("counts are all 0; at least one class needs examples")
    return values


def imbalance_ratio(counts: Sequence[int]) -> float:
    """max/min class size over the classes with at least one example."""
    positive = [c for c in _as_counts(counts) if c > 0]
    if not positive:
        raise InvTransferError("imbalance_ratio needs at least one class with a positive count")
    return max(positive) / min(positive)


# --------------------------------------------------------------------------- ranks and instances

def rank_to_class(num_classes: int, order: str, seed: int) -> np.ndarray:
    """``perm[k]`` = the class that holds rank ``k`` (rank 0 = largest class).

    ``index``: class c has rank c (CIFAR-LT). ``random``: ``np.random.default_rng(seed)``
    permutation; the K49-LT instances use one seed each so each instance can be rebuilt (the
    public code does not seed them). ``seed`` is ignored for ``index``.
    """
    num_classes = _int_option("num_classes", num_classes, 1)
    if order == "index":
        return np.arange(num_classes, dtype=np.int64)
    if order == "random":
        return np.random.default_rng(seed).permutation(num_classes).astype(np.int64)
    raise InvTransferError(f"unknown rank order {order!r}; expected one of {', '.join(ORDERS)}."
                           f"{suggest(str(order), ORDERS)}")


def counts_by_class(rank_counts: Sequence[int], rank_to_class: np.ndarray) -> list[int]:
    """Reorder sizes given by rank into class-index order using a :func:`rank_to_class` permutation."""
    sizes = _as_counts(rank_counts, "rank_counts")
    perm = np.asarray(rank_to_class)
    if perm.ndim != 1 or len(perm) != len(sizes) or not np.array_equal(np.sort(perm), np.arange(len(sizes))):
        raise InvTransferError(f"rank_to_class must be a permutation of 0..{len(sizes) - 1} "
                               f"(one class per rank), got {perm.tolist()!r}")
    out = [0] * len(sizes)
    for rank, cls in enumerate(perm.tolist()):
        out[cls] = sizes[rank]
    return out


# --------------------------------------------------------------------------- subset selection

def select_first_n(labels: np.ndarray, counts: Sequence[int], *, cycle: bool = False,
                   pool: np.ndarray | None = None) -> np.ndarray:
    """Indices of the first ``counts[c]`` examples of each class c, in original order (GIT default).

    ``pool`` restricts the candidates (e.g. the train part of a train/val split); its order is
    ignored, the data set's order counts. A class with fewer candidates than requested is
    cycled through when ``cycle`` (K49 style: a class of size n still sees n stored pairs),
    otherwise an error names the class. Output: grouped by class, original order within a class.
    """
    labels = _as_labels(labels)
    sizes = _as_counts(counts)
    pool_arr = None if pool is None else np.asarray(pool)
    groups = _by_class(labels, _candidates(labels, pool_arr), len(sizes))
    parts = []
    for c, (idx, n) in enumerate(zip(groups, sizes)):
        if n <= idx.size:
            parts.append(idx[:n])
        elif cycle and idx.size:
            parts.append(np.resize(idx, n))  # np.resize repeats the array cyclically
        else:
            hint = "" if cycle else "; set the dataset option allow_cycling=true to repeat them"
            raise _too_few(c, n, idx.size, pool_arr, hint)
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def select_shuffled(labels: np.ndarray, counts: Sequence[int], seed: int, *,
                    pool: np.ndarray | None = None) -> np.ndarray:
    """LDAM-DRW subset: shuffle each class's indices, then keep the first ``counts[c]``.

    Uses one legacy ``np.random.RandomState(seed)`` per call and shuffles the classes present in
    ``labels`` in ascending order, which is exactly what ``np.random.seed(seed)`` followed by
    ``np.random.shuffle`` per class does in LDAM-DRW's ``IMBALANCECIFAR10``: with seed 0 and the
    full training set this reproduces its subsets. Output: grouped by class, shuffled order.
    """
    labels = _as_labels(labels)
    sizes = _as_counts(counts)
    pool_arr = None if pool is None else np.asarray(pool)
    groups = _by_class(labels, _candidates(labels, pool_arr), len(sizes))
    rng = np.random.RandomState(seed)
    parts = []
    for c, (idx, n) in enumerate(zip(groups, sizes)):
        idx = idx.copy()
        if idx.size:  # LDAM iterates over np.unique(targets): absent classes draw nothing
            rng.shuffle(idx)
        if n > idx.size:
            raise _too_few(c, n, idx.size, pool_arr, "")
        parts.append(idx[:n])
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


# --------------------------------------------------------------------------- validation splits

def split_fraction(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random split into (train, val) indices, each sorted ascending.

    ``round(val_fraction * N)`` images go to val. Not stratified: on the K49 train set (232k
    images, ~4.7k per class on average) a plain permutation leaves every class's share within a
    fraction of a percent of ``val_fraction``, and it is what "split 80/20" most plainly means.
    The first-n long-tailed subset is then taken from the train part (``pool=train``).
    """
    labels = _as_labels(labels)
    try:
        frac = float(val_fraction)
    except (TypeError, ValueError):
        raise InvTransferError(f"val_fraction must be a number in [0, 1), got {val_fraction!r}") from None
    if not 0.0 <= frac < 1.0:
        raise InvTransferError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    perm = np.random.default_rng(seed).permutation(labels.size)
    n_val = int(round(frac * labels.size))
    return np.sort(perm[n_val:]).astype(np.int64), np.sort(perm[:n_val]).astype(np.int64)


def balanced_holdout(labels: np.ndarray, exclude: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """``per_class`` seeded random examples of every class from the indices not in ``exclude``.

    For CIFAR-LT-like sets the training subset (``exclude``) keeps its published counts, and
    validation comes from the images the long-tailed subset left unused. A class with fewer
    unused images than ``per_class`` gives all of them: a smaller val class only widens that
    class's error bar, while taking from the training subset would change the counts being
    studied. Classes are 0..max(label). Returns indices sorted ascending.
    """
    labels = _as_labels(labels)
    per_class = _int_option("per_class", per_class, 0)
    excl = np.asarray(exclude)
    if excl.size and (not np.issubdtype(excl.dtype, np.integer) or excl.min() < 0 or excl.max() >= labels.size):
        raise InvTransferError(f"exclude must hold integer indices in [0, {labels.size})")
    unused = np.ones(labels.size, dtype=bool)
    unused[excl.astype(np.int64)] = False
    num_classes = int(labels.max()) + 1 if labels.size else 0
    groups = _by_class(labels, np.flatnonzero(unused).astype(np.int64), num_classes)
    rng = np.random.default_rng(seed)
    parts = [idx if idx.size <= per_class else rng.choice(idx, per_class, replace=False) for idx in groups]
    out = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    return np.sort(out).astype(np.int64)
