"""Checkpoints that survive crashes, and clean stops on signals.

* :func:`atomic_save` writes to a temporary file in the target folder, fsyncs it and renames it
  over the old file, so a crash or ``kill -9`` at any moment leaves either the previous or the
  new checkpoint, never half of one. A failed write (disk full, permissions) is an
  :class:`InvTransferError` saying why, and the previous checkpoint stays byte-identical.
  Temporaries left by killed writers are removed by a later save (:mod:`invtransfer.fileio`,
  which also holds :class:`RunLock`, the lock a training process holds on its run directory).
* :func:`load_checkpoint` always uses ``torch.load(..., weights_only=True)`` (no arbitrary
  unpickling) and checks the ``format`` tag, so a truncated file, a foreign file or a file of
  another kind gets a clear error.
* :class:`StopSignals` turns SIGINT/SIGTERM into a flag the training loops poll after each
  step; they then save and raise :class:`TrainingInterrupted`.
* :func:`log_lines_upto` keeps the ``metrics.jsonl`` lines a resumed run keeps, dropping the
  half line a killed process may leave.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import pickle
import signal
import warnings
from typing import Any

import torch

from invtransfer.config import diff_configs, from_dict, to_dict
from invtransfer.errors import InvTransferError
from invtransfer.fileio import RunLock, atomic_write, check_run_name, write_error  # noqa: F401


class TrainingInterrupted(InvTransferError):
    """Raised after a signal stopped training and its checkpoint was written."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


class _RecordingWriter:
    """The file as torch.save sees it: keeps the OSError of a failed write, which torch's zip
    writer reports only as a RuntimeError ("unexpected pos ..."), so the reason is not lost."""

    def __init__(self, fh) -> None:
        self.fh = fh
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self.fh.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.fh.flush()


def atomic_save(obj: Any, path: str) -> None:
    """``torch.save`` to ``path`` atomically (temp file + fsync + rename).

    A failed write (disk full, ...) is an :class:`InvTransferError` saying why, and the previous
    file stays byte-identical. Temporaries left by killed writers are removed by a later save of
    the same file (:func:`invtransfer.fileio.remove_stale_temps`).
    """
    writer = None

    def write(fh) -> None:
        nonlocal writer
        writer = _RecordingWriter(fh)
        torch.save(obj, writer)

    try:
        atomic_write(path, write)
    except RuntimeError:
        if writer is None or writer.error is None:
            raise  # not a write failure (e.g. an object torch cannot save): a bug, keep the traceback
        raise write_error(path, writer.error) from None


def _first_line(text: str) -> str:
    return text.splitlines()[0][:200] if text.strip() else ""


def load_checkpoint(path: str, kind: str | None = None) -> dict:
    """Load one of our checkpoints safely; ``kind`` checks its ``format`` tag (e.g. 'classifier')."""
    if not os.path.isfile(path):
        raise InvTransferError(f"checkpoint {path} does not exist.")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol N" of a garbage file
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        if "weights only load failed" not in text.lower():  # garbage bytes, not a refused object
            raise InvTransferError(f"checkpoint {path} is truncated or not a PyTorch checkpoint "
                                   f"(UnpicklingError: {_first_line(text)}).") from None
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        why = next((ln for ln in lines if "GLOBAL" in ln or "Unsupported" in ln or "unsupported" in ln),
                   lines[1] if len(lines) > 1 else _first_line(text))
        raise InvTransferError(f"checkpoint {path} was refused and nothing in it was run: it holds objects other "
                               f"than tensors and plain data ({why[:200]}). Only invtransfer checkpoints can be "
                               f"loaded; a file from an untrusted source may be malicious.") from None
    except Exception as e:  # noqa: BLE001 - torch.load of damaged bytes raises almost any type
        # (RuntimeError, EOFError, BadZipFile, struct.error, IndexError, KeyError, AssertionError, ...)
        raise InvTransferError(f"checkpoint {path} is truncated or not a PyTorch checkpoint "
                               f"({type(e).__name__}: {_first_line(str(e))}).") from None
    fmt = obj.get("format") if isinstance(obj, dict) else None
    if not isinstance(fmt, str) or not fmt.startswith("invtransfer/"):
        raise InvTransferError(f"checkpoint {path} is not an invtransfer checkpoint (no 'format' tag).")
    if kind is not None and fmt != f"invtransfer/{kind}":
        raise InvTransferError(f"checkpoint {path} is a {fmt.split('/', 1)[1]} checkpoint; expected a {kind} "
                               f"checkpoint.")
    return obj


class StopSignals:
    """Context manager: SIGINT/SIGTERM set ``self.signum`` instead of killing the process."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def _handler(self, signum, frame) -> None:  # noqa: ARG002
        self.signum = signum

    def __enter__(self) -> "StopSignals":
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[s] = signal.signal(s, self._handler)
            except ValueError:  # not the main thread: signals stay as they are
                pass
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)

    @property
    def stop(self) -> bool:
        return self.signum is not None


def run_locked(run) -> dict:
    """``run.run()`` of a classifier or generator run (with ``run_dir`` and ``dist``) under the
    run directory's lock; the run is freed and the process group left afterwards.

    ``run`` must be the caller's only reference (``run_locked(ClassifierRun(cfg))``): a run's
    state refers to itself in cycles, so it would otherwise live on until the cyclic collector
    happens to run, perhaps only while the interpreter shuts down, and with it the process group
    it holds through DDP's reducer; gloo's threads torn down then abort a finished process
    ("terminate called without an active exception", SIGABRT). Freed here, the group goes while
    the interpreter is whole."""
    dist, ok = run.dist, False
    try:
        # Process 0 writes the run directory; the lock keeps any other process out while it does.
        with RunLock(run.run_dir) if dist.is_main else contextlib.nullcontext():
            out = run.run()
        ok = True
        return out
    finally:
        del run
        gc.collect()
        dist.close(wait=ok)  # after the others only when all succeeded (a failed one never arrives)


def check_resumable(ck: dict, path: str, config_cls: type, cfg_dict: dict, resume_free: tuple[str, ...],
                    run_dir: str, fingerprint: str, action: str = "resume") -> None:
    """Refuse to resume from ``ck`` (loaded from ``path``) unless it is a full training state of
    the same config (keys starting with one of ``resume_free`` may differ) and dataset."""
    if ck.get("state") != "full":
        raise InvTransferError(f"{path} holds weights only, not a full training state (optimiser, position); "
                               f"cannot {action} it.")
    # Through the dataclass, so options added to the package since the run started compare at
    # their defaults instead of blocking the resume.
    try:
        saved = to_dict(from_dict(config_cls, ck["config"]))
    except InvTransferError:
        saved = ck["config"]
    differ = [k for k in diff_configs(saved, cfg_dict) if not k.startswith(resume_free)]
    if differ:
        raise InvTransferError(f"cannot {action} {path} in {run_dir}: the config differs from that run's in "
                               f"{', '.join(differ)}. Use the original values, or start a new run.")
    if ck["dataset"]["fingerprint"] != fingerprint:
        raise InvTransferError(f"cannot {action} {path} in {run_dir}: its dataset fingerprint "
                               f"{ck['dataset']['fingerprint']} "
                               f"differs from the rebuilt dataset's {fingerprint} (source files or build code "
                               f"changed).")


def log_lines_upto(lines, key: str, upto: int) -> list[str]:
    """The ``metrics.jsonl`` lines a resumed run keeps: records with ``record[key] <= upto``.

    A line that does not parse is dropped: a process killed while appending (``kill -9``, a full
    disk) leaves a partial last line, which must not stop the resume.
    """
    kept = []
    for ln in lines:
        try:
            record = json.loads(ln)
            if int(record[key]) <= upto:
                kept.append(ln if ln.endswith("\n") else ln + "\n")
        except (ValueError, TypeError, KeyError):
            continue
    return kept
