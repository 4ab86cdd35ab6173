"""The three scripts of examples/ run as a user runs them (subprocesses, tiny data, one thread):
generator on an npz -> a user's loop with GIT from an epoch on -> eKLD of its checkpoint."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import make_images

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def run_example(name, *args, tmp):
    env = dict(os.environ, OMP_NUM_THREADS="1", INVTRANSFER_CACHE=str(tmp / "cache"), CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", name), *map(str, args)], cwd=tmp, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A long-tailed npz (16x16 grey, class sizes 30, 12, 6, 3) and the examples' outputs."""
    tmp = tmp_path_factory.mktemp("examples")
    x, y = make_images(30, size=16, seed=1)
    xt, yt = make_images(5, size=16, seed=2)
    keep = np.concatenate([np.flatnonzero(y == c)[:n] for c, n in enumerate([30, 12, 6, 3])])
    np.savez(tmp / "lt.npz", x_train=x[keep], y_train=y[keep], x_test=xt, y_test=yt)
    return tmp


@pytest.fixture(scope="module")
def generator_run(work):
    out = run_example("train_generator.py", "--npz", work / "lt.npz", "--out", work / "gen", "--iterations", 2,
                      "--batch-size", 2, "--width", 8, "--styles", 3, "--grid", work / "grid.png", tmp=work)
    return out


@pytest.fixture(scope="module")
def trained(work, generator_run):
    return run_example("train_with_git.py", "--npz", work / "lt.npz", "--generator", work / "gen", "--epochs", 2,
                       "--git-epoch", 1, "--batch-size", 16, "--width", 8, "--out", work / "model.pt", tmp=work)


def test_train_generator_example(work, generator_run):
    assert (work / "gen" / "generator.pt").is_file()
    from PIL import Image
    with Image.open(work / "grid.png") as im:  # 4 classes x (input + 3 styles) cells of 16 px, scaled x4
        assert im.size == (4 * 16 * 4, 4 * 16 * 4)
    assert "4 classes x (input + 3 styles)" in generator_run


def test_train_with_git_example(work, trained):
    lines = [ln for ln in trained.splitlines() if ln.startswith("epoch")]
    # 51 images, batches of 16: GIT off in epoch 1, then int(0.5 * n) slots of each batch
    assert lines[0].endswith("generated 0") and lines[1].endswith(f"generated {8 + 8 + 8 + 1}")
    assert (work / "model.pt").is_file()


def test_measure_ekld_example(work, trained):
    out = run_example("measure_ekld.py", "--checkpoint", work / "model.pt", "--npz", work / "lt.npz",
                      "--images-per-class", 2, "--draws", 3, "--plot", work / "ekld.png", "--json", work / "e.json",
                      tmp=work)
    res = json.loads((work / "e.json").read_text())
    assert [p["class_size"] for p in res["per_class"]] == [30, 12, 6, 3]
    assert res["transform"] == "rot" and all(p["ekld"] >= 0 for p in res["per_class"])
    assert (work / "ekld.png").stat().st_size > 0 and "Spearman" in out
