"""benchmarks/gpu_check.sh in its tiny CPU mode: the GPU check's whole code path on tiny data, and its
carried-wheel install (step 1) and real-data branch (step 2) on stub wheels and stub data."""

import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def test_gpu_check_tiny_mode_runs_the_pipeline_and_writes_its_summary(tmp_path):
    env = dict(os.environ, GPU_CHECK_TINY="1", OUT=str(tmp_path / "out"), GPU_CHECK_WORK=str(tmp_path / "work"),
               PYTHON=sys.executable, OMP_NUM_THREADS="1", GPU_CHECK_LIMIT_S="300")
    proc = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "gpu_check.sh")], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert summary["ok"] and summary["tiny"]
    runs = summary["runs"]
    assert runs["generator"]["finished"] and runs["generator"]["iterations"] == 3
    for name in ("ce_drs", "ce_drs_git"):
        assert runs[name]["finished"] and runs[name]["epochs_done"] == 2
        assert 0 <= runs[name]["test_error"] <= 100 and runs[name]["timing"]["rc"] == 0
    assert runs["ce_drs_git"]["git_epochs"] == 1 and runs["ce_drs_git"]["generated"] > 0
    assert runs["ce_drs"]["git_epochs"] == 0
    # CE+DRS+GIT started from CE+DRS's checkpoint at GIT's first epoch (E1 + 1 = 1 here)
    assert runs["ce_drs_git"]["started_from"]["epoch"] == 1
    assert runs["ce_drs_git"]["started_from"]["checkpoint"].endswith("checkpoint_e1.pt")
    log = (tmp_path / "out" / "gpu_check.log").read_text()
    assert "training CE+DRS+GIT" in log and (tmp_path / "out" / "ce_drs_git" / "results.json").is_file()


def run_gpu_check(tmp_path, **env_extra):
    env = dict(os.environ, GPU_CHECK_TINY="1", OUT=str(tmp_path / "out"), GPU_CHECK_WORK=str(tmp_path / "work"),
               PYTHON=sys.executable, OMP_NUM_THREADS="1", GPU_CHECK_LIMIT_S="300")
    env.update(env_extra)
    proc = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "gpu_check.sh")], env=env, capture_output=True,
                          text=True, timeout=300)
    return proc, (tmp_path / "out" / "gpu_check.log").read_text()


def stub_wheel(folder, module, version="0.0.1"):
    """A pure-Python wheel holding an empty package ``module``."""
    import base64
    import hashlib
    import zipfile

    info = f"{module}-{version}.dist-info"
    files = {f"{module}/__init__.py": b"STUB = True\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {module}\nVersion: {version}\n".encode(),
             f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
                     f"{len(data)}\n" for name, data in files.items()) + f"{info}/RECORD,,\n"
    path = folder / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in {**files, f"{info}/RECORD": record.encode()}.items():
            z.writestr(name, data)
    return path


def test_gpu_check_installs_carried_wheels_and_names_what_is_missing(tmp_path):
    # A Python without site-packages (pip aside) stands for a machine that lacks our packages.
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\nif [ "$1" = -m ] && [ "$2" = pip ]; then exec {sys.executable} "$@"; fi\n'
                      f'exec {sys.executable} -S "$@"\n')
    python.chmod(0o755)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    everything = "torch numpy yaml kornia tqdm matplotlib scipy PIL"
    proc, log = run_gpu_check(tmp_path, PYTHON=str(python), GPU_CHECK_WHEELS=str(wheels))  # no wheels
    assert proc.returncode == 1 and f"missing Python packages: {everything} (carry their wheels in {wheels}/" in log
    assert "installing" not in log

    stub_wheel(wheels, "kornia")
    proc, log = run_gpu_check(tmp_path, PYTHON=str(python), GPU_CHECK_WHEELS=str(wheels), GPU_CHECK_UNTIL="packages")
    assert f"installing 1 carried wheels into {tmp_path / 'work' / 'site'}" in log
    assert (tmp_path / "work" / "site" / "kornia" / "__init__.py").is_file()
    # the installed package is found (on PYTHONPATH); the others are named
    assert proc.returncode == 1 and f"missing Python packages: {everything.replace('kornia ', '')} (" in log

    # with every package present, step 1 passes (and GPU_CHECK_UNTIL stops after it)
    proc, log = run_gpu_check(tmp_path, GPU_CHECK_WHEELS=str(wheels), GPU_CHECK_UNTIL="packages")
    assert proc.returncode == 0 and "packages ready" in log and "building" not in log, log


def write_cifar_bin(folder, per_class=40, test_per_class=5, seed=0):
    """CIFAR-10's official binary layout (5 training batches, test batch, names), tiny."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    y = np.tile(np.arange(10), per_class).astype(np.uint8)  # classes interleaved, as in the real batches
    yt = np.tile(np.arange(10), test_per_class).astype(np.uint8)
    for name, labels, parts in (("data_batch", y, 5), ("test_batch", yt, 1)):
        records = np.concatenate([labels[:, None], rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)], 1)
        for i, part in enumerate(np.array_split(records, parts)):
            (folder / (f"{name}_{i + 1}.bin" if parts > 1 else f"{name}.bin")).write_bytes(part.tobytes())
    (folder / "batches.meta.txt").write_text("\n".join(f"class{c}" for c in range(10)) + "\n")


def test_gpu_check_real_data_branch_on_stub_data(tmp_path):
    tiny_counts = [20, 15, 12, 10, 8, 6, 5, 4, 3, 3]  # gpu_check.sh's tiny profile
    # .gpu_data in its npz form: materialize_cifar10.py writes cifar-10-batches-bin/ into its argument
    data = tmp_path / "gpu_data"
    data.mkdir()
    (data / "materialize_cifar10.py").write_text(
        "import sys, pathlib\n"
        f"sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})\n"
        "from test_gpu_check import write_cifar_bin\n"
        "write_cifar_bin(pathlib.Path(sys.argv[1]) / 'cifar-10-batches-bin')\n"
        "print('materialized', sys.argv[1])\n")
    for attempt in range(2):
        proc, log = run_gpu_check(tmp_path, GPU_CHECK_DATA=str(data), GPU_CHECK_UNTIL="data")
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        # materialised once into the work folder, then reused
        assert ("writing CIFAR-10 binary batches" in log) == ("materialized" in log) == (attempt == 0), log
        assert f"data.data_root={tmp_path / 'work' / 'data'}" in log
        info = json.loads((tmp_path / "out" / "dataset.json").read_text())
        assert info["name"] == "cifar10-lt" and info["train_class_counts"] == tiny_counts
        assert info["test_size"] == 50 and info["image_shape"] == [3, 32, 32]

    # .gpu_data holding the binary batches themselves: read in place
    data = tmp_path / "gpu_data_bin"
    write_cifar_bin(data / "cifar-10-batches-bin", seed=1)
    proc, log = run_gpu_check(tmp_path, GPU_CHECK_DATA=str(data), GPU_CHECK_UNTIL="data")
    assert proc.returncode == 0 and f"data.data_root={data} " in log and "writing" not in log, log
    assert json.loads((tmp_path / "out" / "dataset.json").read_text())["train_class_counts"] == tiny_counts

    # neither: the script says what it expected
    (tmp_path / "empty").mkdir()
    proc, log = run_gpu_check(tmp_path, GPU_CHECK_DATA=str(tmp_path / "empty"))
    assert proc.returncode == 1 and "no CIFAR-10 in" in log and "expected cifar-10-batches-bin/" in log
