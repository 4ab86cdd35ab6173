"""Tests for invtransfer.data.longtail: profiles, ranks, subset selection, validation splits."""

from __future__ import annotations

import numpy as np
import pytest

from invtransfer.data import longtail as lt
from invtransfer.errors import InvTransferError

# --------------------------------------------------------------------------- profiles


def test_cifar10_lt_counts_exact():
    counts = lt.class_counts("exp", 10, n_max=5000, imbalance_ratio=100)
    assert counts == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert sum(counts) == 12406
    assert lt.exponential_profile(5000, 10, 100) == counts


def test_cifar100_lt_sum():
    counts = lt.class_counts("exp", 100, n_max=500, imbalance_ratio=100)
    assert len(counts) == 100 and sum(counts) == 10847
    assert counts[0] == 500 and counts[-1] == 5
    assert all(a >= b for a, b in zip(counts, counts[1:]))


def test_exp_ratio_one_is_balanced():
    assert lt.exponential_profile(100, 4, 1) == [100] * 4
    assert lt.exponential_profile(100, 1, 50) == [100]


def test_k49_zipf():
    counts = lt.class_counts("zipf", 49)
    assert sum(counts) == 7822
    assert counts[:11] == [4800, 1200, 533, 300, 192, 133, 97, 75, 59, 48, 39]
    assert counts[27] > 5  # rank 28
    assert counts[28:] == [5] * (49 - 28)  # 5 from rank 29 on
    assert lt.zipf_profile(49, alpha=2.0, first=4800, minimum=5) == counts
    assert lt.zipf_profile(3, alpha=1.0, first=90, minimum=1) == [90, 45, 30]


def test_step_profile():
    assert lt.class_counts("step", 10, n_max=5000, imbalance_ratio=100) == [5000] * 5 + [50] * 5
    assert lt.step_profile(500, 5, 10) == [500, 500, 50, 50, 50]


def test_list_and_none_profiles():
    assert lt.class_counts("list", 3, counts=[7, 0, 2]) == [7, 0, 2]
    assert lt.class_counts("list", 2, counts=np.array([4, 1])) == [4, 1]
    assert lt.class_counts("none", 3, n_max=12) == [12, 12, 12]


@pytest.mark.parametrize(
    "profile, kwargs, needle",
    [
        ("exp", dict(n_max=500, imbalance_ratio=0.5), "imbalance_ratio must be >= 1"),
        ("step", dict(n_max=500, imbalance_ratio=0.01), "imbalance_ratio must be >= 1"),
        ("exp", dict(n_max=500, imbalance_ratio=float("nan")), "imbalance_ratio"),
        ("exp", dict(n_max=0, imbalance_ratio=100), "n_max"),
        ("exp", dict(imbalance_ratio=100), "n_max"),
        ("exp", dict(n_max=500), "imbalance_ratio"),
        ("zipf", dict(alpha=0), "alpha"),
        ("zipf", dict(alpha=-1.0), "alpha"),
        ("zipf", dict(first=0), "first"),
        ("zipf", dict(minimum=0), "minimum"),
        ("list", dict(counts=[1, 2]), "counts has 2 entries"),
        ("list", dict(counts=[1, -2, 3]), "counts[1]"),
        ("list", dict(), "counts"),
        ("expo", dict(n_max=5, imbalance_ratio=2), "Did you mean 'exp'"),
    ],
)
def test_bad_options(profile, kwargs, needle):
    with pytest.raises(InvTransferError) as info:
        lt.class_counts(profile, 3, **kwargs)
    assert needle in str(info.value)


def test_rho_message_is_the_documented_one():
    with pytest.raises(InvTransferError, match=r"rho = n_max/n_min, e\.g\. 100"):
        lt.exponential_profile(5000, 10, 0.01)


def test_imbalance_ratio():
    assert lt.imbalance_ratio([5000, 2997, 50]) == 100.0
    assert lt.imbalance_ratio([10, 0, 5]) == 2.0  # empty classes ignored
    with pytest.raises(InvTransferError):
        lt.imbalance_ratio([0, 0])


# --------------------------------------------------------------------------- ranks


def test_rank_to_class():
    assert lt.rank_to_class(5, "index", seed=3).tolist() == [0, 1, 2, 3, 4]
    a = lt.rank_to_class(49, "random", seed=1)
    assert sorted(a.tolist()) == list(range(49))
    assert np.array_equal(a, lt.rank_to_class(49, "random", seed=1))
    assert not np.array_equal(a, lt.rank_to_class(49, "random", seed=2))
    with pytest.raises(InvTransferError, match="random"):
        lt.rank_to_class(5, "randm", seed=0)


def test_counts_by_class():
    perm = np.array([2, 0, 1])  # rank 0 -> class 2, rank 1 -> class 0, rank 2 -> class 1
    assert lt.counts_by_class([30, 20, 10], perm) == [20, 10, 30]
    with pytest.raises(InvTransferError, match="permutation"):
        lt.counts_by_class([30, 20, 10], np.array([0, 0, 1]))


# --------------------------------------------------------------------------- subset selection

# Interleaved labels so "first n in original order" differs from any sorted-by-class choice.
LABELS = np.array([1, 0, 2, 0, 1, 0, 2, 1, 0, 1, 0, 2])  # class 0 at 1,3,5,8,10; 1 at 0,4,7,9; 2 at 2,6,11


def test_select_first_n_order():
    idx = lt.select_first_n(LABELS, [3, 2, 1])
    assert idx.tolist() == [1, 3, 5, 0, 4, 2]
    assert idx.dtype == np.int64
    assert lt.select_first_n(LABELS, [0, 4, 0]).tolist() == [0, 4, 7, 9]


def test_select_first_n_cycle():
    idx = lt.select_first_n(LABELS, [1, 0, 7], cycle=True)
    assert idx.tolist() == [1, 2, 6, 11, 2, 6, 11, 2]


def test_select_first_n_too_few():
    with pytest.raises(InvTransferError) as info:
        lt.select_first_n(LABELS, [1, 0, 4])
    msg = str(info.value)
    assert "class 2" in msg and "4" in msg and "3" in msg
    # the hint names the option users set (the dataset option), not this function's argument
    assert "allow_cycling=true" in msg and "cycle=True" not in msg
    with pytest.raises(InvTransferError, match="class 3"):  # no example at all, even with cycling
        lt.select_first_n(LABELS, [1, 0, 1, 2], cycle=True)


def test_select_first_n_pool():
    pool = np.array([10, 8, 9, 6, 5])  # order of the pool is irrelevant
    assert lt.select_first_n(LABELS, [2, 1, 1], pool=pool).tolist() == [5, 8, 9, 6]
    with pytest.raises(InvTransferError, match="pool"):
        lt.select_first_n(LABELS, [4, 0, 0], pool=pool)
    with pytest.raises(InvTransferError, match="pool"):
        lt.select_first_n(LABELS, [1, 0, 0], pool=np.array([99]))


def test_select_first_n_counts_length():
    with pytest.raises(InvTransferError, match="class 2"):
        lt.select_first_n(LABELS, [1, 1])


def test_select_shuffled():
    labels = np.repeat(np.arange(4), 50)
    counts = [40, 20, 10, 5]
    a = lt.select_shuffled(labels, counts, seed=0)
    assert np.array_equal(a, lt.select_shuffled(labels, counts, seed=0))
    assert not np.array_equal(a, lt.select_shuffled(labels, counts, seed=1))
    assert np.bincount(labels[a], minlength=4).tolist() == counts
    assert len(set(a.tolist())) == len(a)
    assert not np.array_equal(a, lt.select_first_n(labels, counts))


def test_select_shuffled_matches_ldam_recipe():
    labels = np.random.default_rng(5).integers(0, 3, 60)
    counts = [10, 5, 2]
    np.random.seed(0)  # what LDAM-DRW's IMBALANCECIFAR10 does before gen_imbalanced_data
    expected = []
    for c in np.unique(labels):
        idx = np.where(labels == c)[0]
        np.random.shuffle(idx)
        expected.extend(idx[: counts[c]].tolist())
    assert lt.select_shuffled(labels, counts, seed=0).tolist() == expected


def test_select_shuffled_pool():
    labels = np.repeat(np.arange(2), 20)
    pool = np.arange(0, 40, 2)
    idx = lt.select_shuffled(labels, [5, 5], seed=3, pool=pool)
    assert set(idx.tolist()) <= set(pool.tolist())
    with pytest.raises(InvTransferError, match="class 0"):
        lt.select_shuffled(labels, [11, 0], seed=3, pool=pool)


# --------------------------------------------------------------------------- validation splits


def test_split_fraction():
    labels = np.random.default_rng(0).integers(0, 5, 1000)
    train, val = lt.split_fraction(labels, 0.2, seed=7)
    assert len(val) == 200 and len(train) == 800
    assert np.intersect1d(train, val).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(1000))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)
    t2, v2 = lt.split_fraction(labels, 0.2, seed=7)
    assert np.array_equal(train, t2) and np.array_equal(val, v2)
    assert not np.array_equal(val, lt.split_fraction(labels, 0.2, seed=8)[1])
    with pytest.raises(InvTransferError, match="val_fraction"):
        lt.split_fraction(labels, 1.0, seed=0)


def test_balanced_holdout():
    labels = np.repeat(np.arange(3), [30, 20, 12])
    exclude = lt.select_first_n(labels, [20, 10, 8])
    val = lt.balanced_holdout(labels, exclude, per_class=5, seed=0)
    assert np.intersect1d(val, exclude).size == 0
    assert np.bincount(labels[val], minlength=3).tolist() == [5, 5, 4]  # class 2 has only 4 unused
    assert np.array_equal(val, lt.balanced_holdout(labels, exclude, per_class=5, seed=0))
    assert not np.array_equal(val, lt.balanced_holdout(labels, exclude, per_class=5, seed=1))
    with pytest.raises(InvTransferError, match="per_class"):
        lt.balanced_holdout(labels, exclude, per_class=-1, seed=0)


def test_longtail_end_to_end_k49_style():
    labels = np.random.default_rng(1).integers(0, 6, 600)
    train, _ = lt.split_fraction(labels, 0.2, seed=0)
    perm = lt.rank_to_class(6, "random", seed=4)
    counts = lt.counts_by_class(lt.class_counts("zipf", 6, first=200), perm)
    idx = lt.select_first_n(labels, counts, cycle=True, pool=train)
    assert np.bincount(labels[idx], minlength=6).tolist() == counts
    assert set(idx.tolist()) <= set(train.tolist())
