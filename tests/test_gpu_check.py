"""benchmarks/gpu_check.sh in its tiny CPU mode: the GPU check's whole code path on tiny data."""

import json
import os
import subprocess
import sys

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
