"""Atomic writes leave files with the permissions plain ``open()`` would (the umask, or the mode of
the file they replace), so outputs on a shared machine are readable by the group."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from invtransfer import fileio
from invtransfer.train.checkpoint import atomic_save


@pytest.fixture
def umask():
    """Set the process umask for one test (restored afterwards)."""
    before = os.umask(0o022)
    os.umask(before)
    yield lambda mask: os.umask(mask)
    os.umask(before)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_atomic_writes_honour_the_umask(tmp_path, umask, mask):
    umask(mask)
    fileio.atomic_write_bytes(str(tmp_path / "results.json"), b"{}")
    atomic_save({"x": torch.zeros(1)}, str(tmp_path / "checkpoint.pt"))
    with open(tmp_path / "plain.txt", "w") as fh:  # what plain open() gives, for comparison
        fh.write("x")
    assert mode(tmp_path / "results.json") == mode(tmp_path / "checkpoint.pt") == mode(tmp_path / "plain.txt")
    assert mode(tmp_path / "results.json") == 0o666 & ~mask


def test_a_replaced_file_keeps_its_mode(tmp_path, umask):
    umask(0o022)
    path = tmp_path / "report.md"
    fileio.atomic_write_bytes(str(path), b"one")
    os.chmod(path, 0o640)
    fileio.atomic_write_bytes(str(path), b"two")
    assert path.read_bytes() == b"two" and mode(path) == 0o640


def test_the_umask_is_read_without_changing_it(umask):
    umask(0o027)
    assert fileio.current_umask() == 0o027
    assert os.umask(0o027) == 0o027  # unchanged by the call
