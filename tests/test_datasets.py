"""Dataset presets: building, variants, validation splits, caching, the `data` CLI."""

import json

import numpy as np
import pytest

from conftest import make_images, tiny_data_overrides
from invtransfer import cli
from invtransfer.data import datasets
from invtransfer.errors import InvTransferError


def build(npz, **kw):
    return datasets.build_dataset(tiny_data_overrides(npz, **kw))


def test_counts_and_first_n_selection(tiny_npz):
    ds = build(tiny_npz, nuisance="none")
    assert ds.train_class_counts == [40, 20, 8, 4]
    raw = np.load(tiny_npz)
    # the K49-style split holds out 20% first; the subset is the first n of the remaining, in order
    for c, n in enumerate([40, 20, 8, 4]):
        got = ds.x_train[ds.y_train == c]
        assert len(got) == n
    # val (20% of 240) is disjoint from train and transformed like test; test is the full official test set
    assert len(ds.y_val) == 48 and len(ds.y_test) == len(raw["y_test"])
    assert np.array_equal(ds.x_test, raw["x_test"])  # nuisance none: untouched


def test_bg_nuisance_changes_only_zero_pixels(tiny_npz):
    clean = build(tiny_npz, nuisance="none")
    bg = build(tiny_npz, nuisance="bg")
    assert np.array_equal(bg.y_train, clean.y_train) and np.array_equal(bg.x_train_base, clean.x_train)
    zero = clean.x_train == 0
    assert np.array_equal(bg.x_train[~zero], clean.x_train[~zero])
    assert bg.x_train[zero].max() <= 99
    # one value per image (each example transformed once with its own draw)
    per_image = [np.unique(bg.x_train[i][zero[i]]) for i in range(len(bg.x_train))]
    assert all(len(u) == 1 for u in per_image)
    assert len({int(u[0]) for u in per_image}) > 10


def test_instances_differ_and_seeds_reproduce(tiny_npz):
    a = build(tiny_npz, nuisance="rot", class_order="random", instance=0)
    b = build(tiny_npz, nuisance="rot", class_order="random", instance=0)
    c = build(tiny_npz, nuisance="rot", class_order="random", instance=1)
    assert np.array_equal(a.x_train, b.x_train) and a.fingerprint == b.fingerprint
    assert a.fingerprint != c.fingerprint
    assert sorted(a.train_class_counts) == sorted(c.train_class_counts) == [4, 8, 20, 40]
    assert a.train_class_counts != c.train_class_counts or not np.array_equal(a.x_train, c.x_train)


def test_theta_variant_has_few_base_images(tiny_npz):
    ds = build(tiny_npz, nuisance="dil", variant="theta", theta_base_images=3)
    assert ds.train_class_counts == [40, 20, 8, 4]
    for c in range(4):
        base = ds.x_train_base[ds.y_train == c]
        assert len(np.unique(base.reshape(len(base), -1), axis=0)) <= 3


def test_splice_transforms_only_one_rank(tiny_npz):
    clean = build(tiny_npz, nuisance="none")
    sp = build(tiny_npz, nuisance="bg", variant="splice", splice_rank=1)  # class 1 (index order)
    changed = np.array([not np.array_equal(a, b) for a, b in zip(sp.x_train, clean.x_train)])
    assert changed[sp.y_train == 1].mean() > 0.9 and not changed[sp.y_train != 1].any()


def test_variants_carry_their_own_label_so_reports_never_pool_them_with_the_standard_set(tiny_npz):
    assert build(tiny_npz, nuisance="dil").label == build(tiny_npz, nuisance="dil").name
    name = build(tiny_npz, nuisance="dil").name
    assert build(tiny_npz, nuisance="dil", variant="theta").label == f"{name}-theta"
    assert build(tiny_npz, nuisance="bg", variant="splice", splice_rank=3).label == f"{name}-splice3"


def test_holdout_validation_keeps_training_counts(tmp_path):
    x, y = make_images(30, num_classes=3, size=8, channels=3)
    path = tmp_path / "rgb.npz"
    np.savez(path, x_train=x, y_train=y, x_test=x[:9], y_test=y[:9])
    ds = datasets.build_dataset({"name": "cifar10-lt", "source": "npz", "npz_file": str(path), "n_max": 30,
                                 "imbalance_ratio": 10, "val_per_class": 5})
    assert ds.train_class_counts == [30, 9, 3]
    assert np.bincount(ds.y_val, minlength=3).tolist() == [0, 5, 5]  # class 0 has no unused images
    assert ds.image_shape == (3, 8, 8)


def test_cache_is_reused_and_invalidated(tiny_npz, tmp_path, monkeypatch):
    a = build(tiny_npz, nuisance="bg")
    cached = list((tmp_path / "cache").glob("fmnist-dil-lt-*.npz"))
    assert len(cached) == 1 and a.fingerprint in cached[0].name
    calls = []
    monkeypatch.setattr(datasets, "_build", lambda *a, **k: calls.append(1))
    b = build(tiny_npz, nuisance="bg")  # from the cache: _build not called
    assert not calls and np.array_equal(a.x_train, b.x_train)
    monkeypatch.undo()
    monkeypatch.setenv("INVTRANSFER_CACHE", str(tmp_path / "cache"))
    c = build(tiny_npz, nuisance="bg", seed=1)  # a changed option never reuses the cache
    assert c.fingerprint != a.fingerprint
    # a changed source file changes the fingerprint too
    raw = dict(np.load(tiny_npz))
    raw["x_train"] = raw["x_train"].copy()
    raw["x_train"][0, 0, 0, 0] ^= 1
    np.savez(tiny_npz, **raw)
    assert build(tiny_npz, nuisance="bg").fingerprint != a.fingerprint


def test_corrupt_cache_is_rebuilt(tiny_npz, tmp_path):
    a = build(tiny_npz, nuisance="none")
    (cached,) = (tmp_path / "cache").glob("fmnist-dil-lt-*.npz")
    cached.write_bytes(b"garbage")
    b = build(tiny_npz, nuisance="none")
    assert np.array_equal(a.x_train, b.x_train)


@pytest.mark.parametrize("opts, needle", [
    ({"name": "cifar10lt"}, "'cifar10lt' is not allowed.*Did you mean 'cifar10-lt'"),
    ({"imbalance_ratio": 0.5}, "imbalance_ratio.*>= 1"),
    ({"zipf_alpha": 0}, "zipf_alpha.*> 0"),
    ({"num_classes": 9}, "num_classes.*only 4 classes"),
    ({"profile": "list", "counts": [1, 2]}, "counts|length"),
    ({"variant": "theta", "nuisance": "none"}, "needs a nuisance"),
    ({"npz_file": "/nonexistent/x.npz"}, "x.npz"),
])
def test_bad_options(tiny_npz, opts, needle):
    with pytest.raises(InvTransferError, match=needle):
        datasets.build_dataset(tiny_data_overrides(tiny_npz, **opts))


def test_too_few_images_without_cycling(tiny_npz):
    with pytest.raises(InvTransferError, match="class"):
        datasets.build_dataset(tiny_data_overrides(tiny_npz, counts=[400, 20, 8, 4], allow_cycling=False))


def test_npz_file_implies_the_npz_source(tmp_path, tiny_npz):
    """npz_file= reads that file (it used to be ignored without source=npz: the preset's own data
    was read, with no warning); npz_file with another source is refused."""
    ds = datasets.build_dataset({"name": "cifar10-lt", "npz_file": str(tiny_npz), "n_max": 40, "val_per_class": 5})
    assert ds.sources == [str(tiny_npz)] and ds.config["source"] == "npz" and ds.image_shape == (1, 12, 12)
    with pytest.raises(InvTransferError, match="npz_file=.* and source='cifar10' contradict each other"):
        datasets.build_dataset({"name": "cifar10-lt", "npz_file": str(tiny_npz), "source": "cifar10"})
    # a relative npz_file is looked for in the current directory, then under the data roots
    (tmp_path / "roots").mkdir()
    (tmp_path / "roots" / "mine.npz").write_bytes(tiny_npz.read_bytes())
    ds = datasets.build_dataset(tiny_data_overrides("mine.npz", data_root=str(tmp_path / "roots")))
    assert ds.sources == [str(tmp_path / "roots" / "mine.npz")]


@pytest.mark.parametrize("name", sorted(datasets.PRESETS))
@pytest.mark.parametrize("extra", [{}, {"source": "npz", "npz_file": "x.npz"}, {"npz_file": "x.npz"},
                                   {"source": "gtsrb"}, {"allow_cycling": True}])
def test_resolving_twice_changes_nothing(name, extra):
    """`data` resolves once to print and build_dataset again: a resolved config must resolve to itself."""
    once = datasets.resolve(datasets.DatasetConfig(name=name, **extra))
    assert datasets.resolve(once) == once


def test_repeated_images_are_an_explicit_choice_and_reported(tiny_npz, capsys):
    """A K49-style preset repeats images of a short class (allow_cycling) on its own data; on other
    data that must be asked for, and the repeats are reported in the info, its JSON and warnings."""
    short = tiny_data_overrides(tiny_npz, counts=[100, 20, 8, 4])
    with pytest.raises(InvTransferError, match=r"class 0 needs 100 examples but only \d+ .*allow_cycling=true"
                                               r".*repeats images only on its own source \(fashion-mnist\)"):
        datasets.build_dataset(short)
    ds = datasets.build_dataset(dict(short, allow_cycling=True))
    assert ds.train_class_counts == [100, 20, 8, 4]
    n0 = len(np.unique(ds.x_train_base[ds.y_train == 0].reshape(100, -1), axis=0))
    assert ds.train_repeats == [100 - n0, 0, 0, 0] and ds.info()["repeated_train_images"] == 100 - n0
    assert len(ds.warnings) == 1 and f"{100 - n0} of the 132 training examples" in ds.warnings[0]
    assert f"'a' {n0} images for 100" in ds.warnings[0]
    again = datasets.build_dataset(dict(short, allow_cycling=True))  # from the cache: reported the same
    assert again.warnings == ds.warnings and again.train_repeats == ds.train_repeats
    args = [f"{k}={json.dumps(v) if isinstance(v, list) else v}" for k, v in short.items() if k != "name"]
    assert cli.main(["data", "fmnist-dil-lt", *args, "allow_cycling=true", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["repeated_train_images"] == 100 - n0 and "warning: " in err and "repeat" in err
    # without repeats: nothing reported
    plain = datasets.build_dataset(tiny_data_overrides(tiny_npz))
    assert plain.train_repeats == [0, 0, 0, 0] and plain.warnings == []


def test_a_missing_data_root_is_a_warning_naming_where_the_data_came_from(tmp_path, tiny_npz, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.npz").write_bytes(tiny_npz.read_bytes())
    ds = datasets.build_dataset(tiny_data_overrides("x.npz", data_root=str(tmp_path / "nonexistent")))
    assert len(ds.warnings) == 1 and f"data_root {tmp_path / 'nonexistent'} does not exist" in ds.warnings[0]
    assert str(tmp_path / "data" / "x.npz") in ds.warnings[0]
    # the same dataset through another root, now from the cache, has no such warning
    assert datasets.build_dataset(tiny_data_overrides("x.npz")).warnings == []


def test_data_cli_json_and_preview(tiny_npz, tmp_path, capsys):
    args = [f"{k}={json.dumps(v) if isinstance(v, list) else v}" for k, v in tiny_data_overrides(tiny_npz).items()
            if k != "name"]
    png = tmp_path / "p.png"
    assert cli.main(["data", "fmnist-dil-lt", *args, "--json", "--preview", str(png)]) == 0
    info = json.loads(capsys.readouterr().out)
    for key in ("class_names", "train_class_counts", "val_size", "test_size", "imbalance_ratio", "sources",
                "fingerprint"):
        assert key in info
    assert info["train_class_counts"] == [40, 20, 8, 4] and info["imbalance_ratio"] == 10.0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cli.main(["data", "cifar10lt"]) == 2
    assert "Did you mean 'cifar10-lt'" in capsys.readouterr().err


def test_gtsrb_lt_draws_each_class_across_its_tracks(tmp_path):
    # GTSRB's official training set is stored as tracks of 30 consecutive frames of one sign; the
    # preset must not take a class's first n frames (its smallest classes would be half a track)
    rng = np.random.default_rng(0)
    sizes = [1600 - 20 * c for c in range(43)]
    y = np.concatenate([np.full(n, c, dtype=np.int64) for c, n in enumerate(sizes)])
    track = np.concatenate([np.arange(n) // 30 for n in sizes])  # stored track by track, as GTSRB is
    x = rng.integers(0, 256, (len(y), 4, 4, 3), dtype=np.uint8)
    x[:, 0, 0, 0] = track
    np.savez(tmp_path / "gtsrb32.npz", x_train=x, y_train=y, x_test=x[:43], y_test=np.arange(43))
    ds = datasets.build_dataset({"name": "gtsrb-lt", "data_root": str(tmp_path)}, use_cache=False)
    assert ds.train_class_counts[:2] == [1500, 641] and min(ds.train_class_counts) == 15
    smallest = ds.y_train == int(np.argmin(np.bincount(ds.y_train, minlength=43)))
    assert len(np.unique(ds.x_train[smallest][:, 0, 0, 0])) >= 10  # first-n: 1 track
    again = datasets.build_dataset({"name": "gtsrb-lt", "data_root": str(tmp_path)}, use_cache=False)
    assert np.array_equal(again.x_train, ds.x_train)  # seeded
