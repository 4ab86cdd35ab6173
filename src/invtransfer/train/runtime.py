"""Where and how a job runs: device, autocast, CUDA out-of-memory errors, the versions that ran.

Every job (classifier and generator training, evaluation, invariance, generator quality) picks
its device and autocast dtype here, so ``device=auto`` and ``amp=auto`` mean the same
everywhere, and records :func:`versions` in its outputs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import torch

import invtransfer
from invtransfer.errors import InvTransferError
from invtransfer.fileio import atomic_write_bytes


def resolve_device(name: str) -> torch.device:
    """``auto`` (cuda, then mps, then cpu) or the named device, which must be available."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InvTransferError("config key 'device=cuda' but CUDA is not available here; use device=auto or cpu.")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InvTransferError("config key 'device=mps' but MPS is not available here; use device=auto or cpu.")
    return torch.device(name)


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``amp`` (auto, bf16, off) on ``device``; None = full precision."""
    if amp == "bf16" or (amp == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def autocast(device: torch.device | str, amp_dtype: torch.dtype | None):
    """``torch.autocast`` to ``amp_dtype`` on ``device``, or a disabled one when it is None."""
    device_type = device if isinstance(device, str) else device.type
    return torch.autocast(device_type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None)


def without_out_of_memory(fn, what: str, key: str, value: int, largest: int, note=""):
    """``fn()``, with a CUDA out-of-memory error turned into an :class:`InvTransferError` naming the
    batch-size ``key`` (set to ``value``; ``largest`` = the largest batch actually tried) and a
    smaller value, half the largest batch. Nothing is written on the way out. ``note`` (a string,
    or a function of the suggested value returning one) ends the message."""
    try:
        return fn()
    except torch.cuda.OutOfMemoryError:
        pass  # leave the handler first: its traceback holds the failed batch's tensors
    torch.cuda.empty_cache()
    smaller = max(1, largest // 2)
    if largest > 1:
        advice = f"use a smaller one, e.g. {key}={smaller}"
        if largest < value:
            advice += f" (the largest batch was {largest} images)"
    else:
        advice = "a single image does not fit: use a smaller model or a device with more memory"
    raise InvTransferError(f"CUDA ran out of memory {what} with {key}={value}; {advice}."
                           f"{note(smaller) if callable(note) else note}")


def versions() -> dict:
    """Package, torch and git commit of the code that ran."""
    commit = None
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"invtransfer": invtransfer.__version__, "torch": torch.__version__, "python": sys.version.split()[0],
            "git_commit": commit}


def json_dump(path: str, obj: Any) -> None:
    """``obj`` as indented JSON in ``path``, written atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


__all__ = ["resolve_device", "autocast_dtype", "autocast", "without_out_of_memory", "versions", "json_dump"]
