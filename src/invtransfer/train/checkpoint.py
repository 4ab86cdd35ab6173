"""Checkpoints that survive crashes, and clean stops on signals.

* :func:`atomic_save` writes to a temporary file in the target folder, fsyncs it and renames it
  over the old file, so a crash or ``kill -9`` at any moment leaves either the previous or the
  new checkpoint, never half of one. A failed write (disk full, permissions) is an
  :class:`InvTransferError` and the previous checkpoint stays.
* :func:`load_checkpoint` always uses ``torch.load(..., weights_only=True)`` (no arbitrary
  unpickling) and checks the ``format`` tag, so a truncated file, a foreign file or a file of
  another kind gets a clear error.
* :class:`StopSignals` turns SIGINT/SIGTERM into a flag the training loops poll after each
  step; they then save and raise :class:`TrainingInterrupted`.
"""

from __future__ import annotations

import errno
import os
import pickle
import signal
import tempfile
import zipfile
from typing import Any

import torch

from invtransfer.errors import InvTransferError


class TrainingInterrupted(InvTransferError):
    """Raised after a signal stopped training and its checkpoint was written."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


def atomic_save(obj: Any, path: str) -> None:
    """``torch.save`` to ``path`` atomically (temp file + fsync + rename)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".pt")
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        why = "no space left on device" if e.errno == errno.ENOSPC else (e.strerror or str(e))
        kept = " The previous file there is unchanged." if os.path.exists(path) else ""
        raise InvTransferError(f"could not write {path}: {why}.{kept}") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            try:
                os.unlink(tmp)
            except OSError:
                pass


def load_checkpoint(path: str, kind: str | None = None) -> dict:
    """Load one of our checkpoints safely; ``kind`` checks its ``format`` tag (e.g. 'classifier')."""
    if not os.path.isfile(path):
        raise InvTransferError(f"checkpoint {path} does not exist.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise InvTransferError(f"checkpoint {path} was refused: it holds objects other than tensors and plain "
                               f"data ({str(e).splitlines()[0][:200]}). Only invtransfer checkpoints can be "
                               f"loaded.") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise InvTransferError(f"checkpoint {path} is truncated or not a PyTorch checkpoint "
                               f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}).") from None
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
