"""Memory over epochs: the real training engine, in this process, on tiny data; memory must not grow.

Runs ``invtransfer.train.classifier.train`` (the code of ``invtransfer train``: sampling,
augmentation, forward/backward, validation every epoch, a checkpoint every epoch, the log) for
``--epochs`` epochs on a small synthetic long-tailed set, and after every epoch records

* ``rss_mib``: resident memory after the epoch (``VmRSS`` of /proc/self/status, after
  ``gc.collect()`` and glibc's ``malloc_trim(0)``, so freed blocks kept by malloc do not count;
  where /proc is missing, the peak below),
* ``objects``: the number of objects the garbage collector tracks, torch's storage wrappers
  aside (a leak of small Python objects, invisible in RSS, shows here),
* ``peak_mib``: the peak resident memory during the epoch (``VmHWM``, reset at every epoch start
  through /proc/self/clear_refs; elsewhere the process peak from ``resource.getrusage``),
* ``py_heap_mib`` (with ``--tracemalloc``): memory held by Python objects (tracemalloc; slow).

Memory must not grow from epoch to epoch: after a warm-up (allocator pools, lazy imports and
the first best-weights copy settle in the first epochs), the resident memory of the last epoch
may exceed that of epoch ``--baseline-epoch`` by at most ``--tolerance-mib`` (default 2 MiB:
measured after ``malloc_trim`` it moves by under 0.5 MiB between epochs, with one-time steps when
the schedule or the sampler switches; keeping one copy of resnet20's weights per epoch adds
1.1 MiB per epoch, one batch's activations per step far more). The exit status is 1 when it
does.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/memory_epochs.py                 # 20 epochs, a table
    OMP_NUM_THREADS=1 python benchmarks/memory_epochs.py --epochs 6 --json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import tempfile
import time
import tracemalloc

import numpy as np
import torch

from invtransfer.config import from_dict
from invtransfer.train import classifier

_MIB = 1024.0 * 1024.0


def _status_kib(field: str) -> float | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def _process_peak_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / _MIB if sys.platform == "darwin" else peak / 1024.0  # bytes on macOS, KiB elsewhere


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _trim_heap() -> None:
    """Give freed heap back to the system (glibc), so RSS shows live memory, not malloc's pools."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def rss_mib() -> float:
    kib = _status_kib("VmRSS")
    return kib / 1024.0 if kib is not None else _process_peak_mib()


def peak_mib(resettable: bool) -> float:
    kib = _status_kib("VmHWM") if resettable else None
    return kib / 1024.0 if kib is not None else _process_peak_mib()


def python_objects() -> int:
    """Objects the garbage collector tracks, less torch's storage wrappers: a tensor's
    ``UntypedStorage`` Python object is created the first time it is serialised and then lives
    as long as the tensor does, so their number follows the live tensors (whose memory RSS
    shows) and steps up once when a new set of tensors is first checkpointed."""
    return sum(1 for o in gc.get_objects() if type(o) is not torch.UntypedStorage)


def write_data(path: str, per_class: tuple[int, ...] = (400, 200, 100, 50), size: int = 16, seed: int = 0) -> str:
    """A long-tailed 4-class set of grey squares (each class its own band), as a generic npz."""
    rng = np.random.default_rng(seed)

    def images(counts):
        xs, ys = [], []
        for c, n in enumerate(counts):
            x = rng.integers(0, 30, (n, size, size, 1)).astype(np.uint8)
            r0 = 1 + 3 * c
            x[:, r0:r0 + 3, 2:size - 2] = rng.integers(150, 255, (n, 1, 1, 1))
            xs.append(x)
            ys.append(np.full(n, c))
        return np.concatenate(xs), np.concatenate(ys)

    x, y = images(per_class)
    xt, yt = images((25,) * len(per_class))
    np.savez(path, x_train=x, y_train=y, x_test=xt, y_test=yt)
    return path


def measure(epochs: int, workdir: str, use_tracemalloc: bool = False, batch_size: int = 32,
            per_class: tuple[int, ...] = (400, 200, 100, 50)) -> list[dict]:
    """Train ``epochs`` epochs in this process; one record per epoch (see the module docstring)."""
    npz = write_data(os.path.join(workdir, "data.npz"), per_class)
    counts = [n - n // 10 - 1 for n in per_class]  # what the 10% validation split leaves, at most
    cfg = from_dict(classifier.TrainConfig, {
        "data": {"name": "fmnist-lt", "source": "npz", "npz_file": npz, "profile": "list", "counts": counts,
                 "class_order": "index", "allow_cycling": True,  # a few repeats: memory does not care
                 "val_mode": "fraction",
                 "val_fraction": 0.1, "cache_dir": os.path.join(workdir, "cache")},
        "model": "resnet20", "rule": "drs", "augment": "crop_flip", "crop_padding": 2, "device": "cpu",
        "optim": {"epochs": epochs, "batch_size": batch_size, "warmup_epochs": 1, "decay1_epoch": max(1, epochs // 2),
                  "decay2_epoch": max(2, epochs - 1), "lr": 0.05},
        "checkpoint_every": 1, "eval_every": 1, "quiet": True, "out_dir": os.path.join(workdir, "runs"),
        "name": "memory", "overwrite": True})
    records: list[dict] = []
    resettable = reset_peak()
    real_end_epoch = classifier.ClassifierRun._end_epoch
    t = [time.perf_counter()]

    def end_epoch(self, epoch, lr, running):
        out = real_end_epoch(self, epoch, lr, running)
        gc.collect()
        _trim_heap()
        rec = {"epoch": epoch + 1, "rss_mib": round(rss_mib(), 2), "peak_mib": round(peak_mib(resettable), 2),
               "objects": python_objects(), "seconds": round(time.perf_counter() - t[0], 2)}
        if use_tracemalloc:
            rec["py_heap_mib"] = round(tracemalloc.get_traced_memory()[0] / _MIB, 2)
        records.append(rec)
        reset_peak()
        t[0] = time.perf_counter()
        return out

    if use_tracemalloc:
        tracemalloc.start()
    classifier.ClassifierRun._end_epoch = end_epoch
    try:
        classifier.train(cfg)
    finally:
        classifier.ClassifierRun._end_epoch = real_end_epoch
        if use_tracemalloc:
            tracemalloc.stop()
    return records


def growth_mib(records: list[dict], baseline_epoch: int) -> float:
    """RSS after the last epoch minus RSS after epoch ``baseline_epoch`` (1-based)."""
    return records[-1]["rss_mib"] - records[baseline_epoch - 1]["rss_mib"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--baseline-epoch", type=int, default=2, help="epoch (1-based) growth is measured from")
    p.add_argument("--tolerance-mib", type=float, default=2.0)
    p.add_argument("--tracemalloc", action="store_true", help="also the Python heap per epoch (slow)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    if not 1 <= a.baseline_epoch < a.epochs:
        p.error("--baseline-epoch must lie in 1 .. epochs - 1")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    with tempfile.TemporaryDirectory() as tmp:
        records = measure(a.epochs, tmp, a.tracemalloc)
    growth = growth_mib(records, a.baseline_epoch)
    ok = growth <= a.tolerance_mib
    summary = {"epochs": a.epochs, "baseline_epoch": a.baseline_epoch, "growth_mib": round(growth, 2),
               "tolerance_mib": a.tolerance_mib, "ok": ok, "torch": torch.__version__,
               "threads": torch.get_num_threads(), "per_epoch": records}
    if a.json:
        print(json.dumps(summary, indent=2))
    else:
        cols = ["epoch", "rss_mib", "peak_mib", "objects", "seconds"] + (["py_heap_mib"] if a.tracemalloc else [])
        print("  ".join(f"{c:>11}" for c in cols))
        for r in records:
            print("  ".join(f"{r[c]:>11}" for c in cols))
        print(f"RSS growth from epoch {a.baseline_epoch} to epoch {a.epochs}: {growth:+.2f} MiB "
              f"(tolerance {a.tolerance_mib} MiB): {'ok' if ok else 'GROWS'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
