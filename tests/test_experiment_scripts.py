"""The scripts under experiments/: the shell drivers pass the right commands (run against a
recording stub binary); the CIFAR exact/JPEG split finds the exact images and scores each part."""

import importlib.util
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from invtransfer.errors import InvTransferError

ROOT = Path(__file__).resolve().parents[1]


def _stub(tmp_path: Path) -> tuple[Path, Path]:
    """A fake `invtransfer` that appends its arguments to a file, one call per line."""
    calls = tmp_path / "calls.txt"
    stub = tmp_path / "invtransfer"
    stub.write_text(f'#!/usr/bin/env bash\necho "$*" >> {calls}\n')
    stub.chmod(0o755)
    return stub, calls


def _run_baselines(tmp_path: Path, **env: str) -> list[str]:
    stub, calls = _stub(tmp_path)
    out = tmp_path / "runs"
    subprocess.run(["bash", str(ROOT / "experiments/fmnist_baselines.sh"), "fmnist-dil-lt", str(out)],
                   env={**os.environ, "INVTRANSFER_BIN": str(stub), **env}, check=True,
                   capture_output=True, text=True)
    return calls.read_text().splitlines()


def test_baselines_script_runs_every_seed_and_method_and_passes_extra_overrides(tmp_path):
    lines = _run_baselines(tmp_path, SEEDS="0 2", METHODS="ce ce_drs", EXTRA="select=val optim.epochs=3")
    assert len(lines) == 4
    for line, (seed, method) in zip(lines, [(0, "ce"), (0, "ce_drs"), (2, "ce"), (2, "ce_drs")]):
        assert line.startswith(f"train configs/fmnist_lt/{method}.yaml data.name=fmnist-dil-lt seed={seed} ")
        assert f"name=fmnist-dil-lt__{method}__s{seed}" in line
        assert line.endswith("resume=false quiet=true select=val optim.epochs=3")


def test_baselines_script_skips_finished_runs_and_resumes_interrupted_ones(tmp_path):
    out = tmp_path / "runs"
    (out / "fmnist-dil-lt__ce__s0").mkdir(parents=True)
    (out / "fmnist-dil-lt__ce__s0/results.json").write_text("{}")
    (out / "fmnist-dil-lt__ce_drs__s0").mkdir()
    (out / "fmnist-dil-lt__ce_drs__s0/checkpoint.pt").write_bytes(b"x")
    lines = _run_baselines(tmp_path, SEEDS="0")
    assert len(lines) == 1 and "name=fmnist-dil-lt__ce_drs__s0" in lines[0]
    assert lines[0].endswith("resume=true quiet=true")


def _exact_vs_jpeg():
    spec = importlib.util.spec_from_file_location("cifar_exact_vs_jpeg", ROOT / "experiments/cifar_exact_vs_jpeg.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_exact_vs_jpeg_finds_the_exact_images_in_either_layout_and_scores_each_part(tmp_path):
    mod = _exact_vs_jpeg()
    rng = np.random.default_rng(0)
    test = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    exact = test[[1, 4, 9]].copy()
    test[4, 0, 0, 0] ^= 1  # one pixel off: a lossy copy, not the exact image
    np.savez(tmp_path / "exact.npz", x_test=exact)
    want = np.zeros(12, bool)
    want[[1, 9]] = True
    assert np.array_equal(mod.exact_mask(test, str(tmp_path / "exact.npz")), want)
    assert np.array_equal(mod.exact_mask(test.transpose(0, 3, 1, 2), str(tmp_path / "exact.npz")), want)

    y = np.array([0, 0, 1, 1, 0, 1])
    pred = np.array([0, 1, 1, 1, 0, 0])
    mask = np.array([True, True, True, False, False, False])
    scored = mod.score(pred, y, mask, 3, [10, 5, 1])
    assert scored["per_class"] == [{"class": 0, "images": 2, "accuracy": 50.0},
                                   {"class": 1, "images": 1, "accuracy": 100.0},
                                   {"class": 2, "images": 0, "accuracy": None}]
    assert scored["images"] == 3 and scored["balanced_accuracy"] == 75.0  # the classes present only
    assert scored["accuracy"] == pytest.approx(200 / 3)
    with pytest.raises(InvTransferError, match="lossless CIFAR-10 subset"):
        mod.exact_mask(test, str(tmp_path / "missing.npz"))
