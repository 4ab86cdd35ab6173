"""Files that survive crashes and full disks: atomic writes, stale temporaries, run-directory locks.

* :func:`atomic_write_bytes` writes to a temporary file in the target's folder, fsyncs it and
  renames it over the target, so a crash or ``kill -9`` at any moment leaves either the previous
  or the new file, never half of one. A failed write (disk full, permissions) is an
  :class:`~invtransfer.errors.InvTransferError` naming the file and the reason ("no space left on
  device"); the previous file stays byte-identical. :func:`invtransfer.train.checkpoint.atomic_save`
  does the same for ``torch.save``.
* Temporary files are named ``.tmp-XXXXXXXX<target name>``. Readers only ever open final names,
  so a temporary left by a killed writer is never taken for the file. The next atomic write of
  the same target removes such leftovers once they are older than both this process and
  :data:`STALE_TEMP_AGE_S` seconds (a temporary another live process is writing is younger: its
  modification time moves with every write).
* :class:`RunLock` is an exclusive ``fcntl.flock`` on ``<run dir>/.lock``, held while a process
  trains in that directory, so two processes (two ``resume=true`` of one run, or an
  ``overwrite=true`` of a running run) never write one run directory. The kernel releases it
  when the process ends, however it ends.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import tempfile
import time
from collections.abc import Callable
from typing import Any, BinaryIO

from invtransfer.errors import InvTransferError

try:  # POSIX only; elsewhere runs are simply not locked
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = ["atomic_write_bytes", "write_error", "temp_file", "open_mode", "remove_stale_temps", "RunLock", "check_run_name",
           "STALE_TEMP_AGE_S"]

#: Temporaries younger than this (seconds) are never removed, whoever wrote them.
STALE_TEMP_AGE_S = 60.0
_PROCESS_START = time.time()
_TEMP_PREFIX = ".tmp-"


def write_error(path: str, e: OSError) -> InvTransferError:
    """The user-facing error of a failed write of ``path``."""
    if e.errno == errno.ENOSPC:
        why = "no space left on device"
    elif e.errno == getattr(errno, "EDQUOT", None):
        why = "disk quota exceeded"
    else:
        why = e.strerror or str(e) or type(e).__name__
    kept = " The previous file there is unchanged." if os.path.exists(path) else ""
    return InvTransferError(f"could not write {path}: {why}.{kept}")


def _is_temp_of(fname: str, target: str) -> bool:
    # tempfile's random part: 8 characters of [a-z0-9_]
    return re.fullmatch(re.escape(_TEMP_PREFIX) + r"[a-z0-9_]{8}" + re.escape(target), fname) is not None


def remove_stale_temps(folder: str, target: str, now: float | None = None) -> list[str]:
    """Remove leftover temporaries of ``folder/target`` (see the module docstring); returns them."""
    cutoff = min(_PROCESS_START, (time.time() if now is None else now) - STALE_TEMP_AGE_S)
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for fname in names:
        if not _is_temp_of(fname, target):
            continue
        path = os.path.join(folder, fname)
        try:
            if os.stat(path).st_mtime < cutoff:
                os.unlink(path)
                removed.append(path)
        except OSError:  # gone meanwhile, or not ours to remove
            pass
    return removed


def current_umask() -> int:
    """The process's umask (read from /proc where possible: setting it to read it is not thread-safe)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def open_mode(path: str) -> int:
    """The permission bits plain ``open(path, "w")`` would leave: an existing file keeps its mode, a new
    one gets 0o666 less the umask."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~current_umask()


def temp_file(path: str) -> tuple[int, str]:
    """Create the temporary for an atomic write of ``path`` (after removing stale ones): (fd, name).

    ``mkstemp`` makes it 0600 whatever the umask; it gets the mode plain ``open()`` would give
    ``path`` (:func:`open_mode`), so outputs on a shared machine are as readable as any other file.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    remove_stale_temps(folder, os.path.basename(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=_TEMP_PREFIX, suffix=os.path.basename(path))
    try:
        os.fchmod(fd, open_mode(path))
    except OSError:
        os.close(fd)
        os.unlink(tmp)
        raise
    return fd, tmp


def fsync_dir(folder: str) -> None:
    """Make a rename in ``folder`` durable (best effort; not every system can fsync a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str, write: Callable[[BinaryIO], object]) -> None:
    """``write(fh)`` into a temporary file in the same folder, fsync, rename onto ``path``: readers
    never see half a file, and a failure (an ``OSError`` becomes our error naming ``path``; any
    other exception propagates) leaves the previous file as it was and no temporary behind."""
    tmp = None
    try:
        fd, tmp = temp_file(path)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
        fsync_dir(os.path.dirname(os.path.abspath(path)))
    except OSError as e:
        raise write_error(path, e) from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (:func:`atomic_write`)."""
    atomic_write(path, lambda fh: fh.write(data))


def check_run_name(name: str | None, key: str = "name") -> None:
    """A run name is one plain directory name: ``overwrite=true`` deletes ``out_dir/<name>``."""
    if name is None:
        return
    seps = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    if not name.strip() or name in (".", "..") or any(s in name for s in seps) or "\0" in name:
        raise InvTransferError(f"config key '{key}'={name!r} must be a plain directory name (not empty, '.' or "
                               f"'..', no '/'): it names the run directory under out_dir, which overwrite=true "
                               f"deletes.")


class RunLock:
    """Exclusive lock of a run directory while one process trains in it (context manager)."""

    NAME = ".lock"

    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir
        self._fh: Any = None

    def acquire(self, record: bool = True) -> "RunLock":
        """Take the lock or raise naming the holder; ``record`` writes this process's id into it."""
        if fcntl is None:  # pragma: no cover
            return self
        fh = open(os.path.join(self.run_dir, self.NAME), "a+", encoding="utf-8")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            fh.seek(0)
            holder = fh.read().strip()
            fh.close()
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                who = f" (process {holder})" if holder.isdigit() else ""
                raise InvTransferError(
                    f"run directory {self.run_dir} is in use by another process{who}: two processes must never "
                    f"write one run. Wait for it to finish or stop it (it saves on SIGTERM), then resume; or choose "
                    f"another name=...") from None
            return self  # the file system cannot lock (some network file systems): go on unlocked
        if record:
            fh.seek(0)
            fh.truncate()
            fh.write(f"{os.getpid()}\n")
            fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            try:
                fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            finally:
                self._fh.close()
                self._fh = None

    @classmethod
    def check_free(cls, run_dir: str) -> None:
        """Raise if another process holds ``run_dir``'s lock (before deleting or resuming it)."""
        if os.path.isdir(run_dir):
            cls(run_dir).acquire(record=False).release()

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def prepare_run_dir(out_dir: str, name: str, resume: bool, overwrite: bool) -> str:
    """``out_dir/name`` ready for a run: reused only with ``resume``, replaced only with
    ``overwrite``, and never while another process holds its lock."""
    import shutil

    run_dir = os.path.join(out_dir, name)
    if os.path.exists(run_dir):
        if resume or overwrite:
            RunLock.check_free(run_dir)  # never resume or delete a run another process is writing
        if resume:
            return run_dir
        if overwrite:
            shutil.rmtree(run_dir)
        else:
            raise InvTransferError(f"run directory {run_dir} already exists; pass resume=true to continue it "
                                   f"or overwrite=true to replace it (or choose another name=...).")
    elif resume:
        raise InvTransferError(f"resume=true but run directory {run_dir} does not exist.")
    os.makedirs(run_dir)
    return run_dir
