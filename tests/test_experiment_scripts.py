"""The shell drivers under experiments/ pass the right commands (run against a recording stub binary)."""

import os
import subprocess
from pathlib import Path

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
