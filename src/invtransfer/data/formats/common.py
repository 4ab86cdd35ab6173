"""What every reader shares: the uniform result (:class:`RawDataset`), the record that describes one
source (:class:`Source`), checksum and copy tables, and the integrity policy of one load
(:class:`_Context`): a file that is not the official one is a warning in
:attr:`RawDataset.warnings`, or an error with ``strict_checksums``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from invtransfer.errors import InvTransferError


@dataclass
class RawDataset:
    """A dataset as read from disk: uint8 images (N, H, W, C), int64 labels, class names."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    sources: list[str]
    warnings: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass(frozen=True)
class Options:
    """The reading options of one load (the dataset options that concern the source files)."""

    strict_checksums: bool = False
    cifar100_labels: str = "fine"
    gtsrb_size: int = 32
    gtsrb_roi_crop: bool = False


@dataclass(frozen=True)
class Download:
    """Where ``invtransfer data download`` fetches a source: ``{url}/{file}`` for each file, into
    ``<data root>/<folder>`` (a folder where :func:`~invtransfer.data.formats.load_source` finds it)."""

    folder: str
    url: str
    files: tuple[str, ...]


@dataclass(frozen=True)
class Source:
    """One dataset source: everything the registry needs to find, read, verify and fetch it."""

    name: str
    #: sub-folders of a data root where it usually lives; the root itself is searched after them
    folders: tuple[str, ...]
    #: the path to read inside one existing folder, or None (None for npz: it is named by npz_file)
    detect: Callable[[str, Options], str | None] | None
    #: read what :attr:`detect` found
    read: Callable[[str, Options], RawDataset] | None
    #: the layouts it accepts, for the error message when it is not found
    accepted: str = ""
    #: known official digests by file name (32 hex digits = md5, 64 = sha256); any one match counts
    digests: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: copies known NOT to be official, by file name: sha256 -> what the file is
    copies: dict[str, dict[str, str]] = field(default_factory=dict)
    download: Download | None = None
    #: how to obtain it when it cannot be downloaded
    obtain: str = ""
    #: a file in a data root itself, tried after the folders (GTSRB's resized npz), or None
    root_file: Callable[[str, Options], str | None] | None = None


#: Official digests and known copies of every source, by source and file name: filled from the
#: :class:`Source` records by the registry; looked up when a file is read.
KNOWN_DIGESTS: dict[str, dict[str, tuple[str, ...]]] = {}
KNOWN_COPIES: dict[str, dict[str, dict[str, str]]] = {}


def _algo(digest: str) -> str:
    return "md5" if len(digest) == 32 else "sha256"


def file_digest(path: str, algo: str = "md5") -> str:
    """Hex digest (``md5`` or ``sha256``) of a file, read in 1 MiB chunks."""
    h = hashlib.new(algo)
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError as e:
        raise InvTransferError(f"Cannot read {path} to check its checksum: {e}.") from e
    return h.hexdigest()


class _Context:
    """State of one load call: checksum policy, digests already computed, files read, warnings."""

    def __init__(self, strict: bool = False) -> None:
        self.strict = strict
        self.warnings: list[str] = []
        self.sources: list[str] = []
        self._digests: dict[tuple[str, str], str] = {}
        self._copies: dict[str, list[str]] = {}  # known modified copy -> its files read so far

    def used(self, path: str) -> None:
        path = os.path.abspath(path)
        if path not in self.sources:
            self.sources.append(path)

    def _digest(self, path: str, algo: str) -> str:
        key = (path, algo)
        if key not in self._digests:
            self._digests[key] = file_digest(path, algo)
        return self._digests[key]

    def verify(self, path: str, source: str) -> None:
        name = os.path.basename(path)
        expected = KNOWN_DIGESTS.get(source, {}).get(name)
        copies = KNOWN_COPIES.get(source, {}).get(name)
        if not expected and not copies:
            return
        path = os.path.abspath(path)
        found: dict[str, str] = {}
        # Lazily: hash only with the algorithms needed, stop at the first match, never twice.
        for want in expected or ():
            algo = _algo(want)
            found[algo] = self._digest(path, algo)
            if found[algo] == want.lower():
                return
        copy = copies.get(self._digest(path, "sha256")) if copies else None
        if copy:
            # One warning per copy, naming all its files (not one long paragraph per file).
            files = self._copies.setdefault(copy, [])
            old = self._copy_message(files, source, copy) if files else None
            files.append(path)
            msg = self._copy_message(files, source, copy)
            if old in self.warnings and not self.strict:
                self.warnings[self.warnings.index(old)] = msg
            else:
                self.not_official(msg)
        elif expected:
            exp = " or ".join(f"{_algo(d)} {d}" for d in expected)
            got = ", ".join(f"{a} {d}" for a, d in found.items())
            self.not_official(f"Checksum mismatch for {path}: expected {exp}, found {got}. This is not "
                              f"the official {source} file but a modified copy (re-encoded, repackaged "
                              f"or corrupted); results computed on it may differ from published "
                              f"numbers.")

    @staticmethod
    def _copy_message(files: list[str], source: str, copy: str) -> str:
        what = (f"{files[0]} is not the official {source} file" if len(files) == 1 else
                f"{', '.join(files[:-1])} and {files[-1]} are not the official {source} files")
        return (f"{what} but {copy}. Results computed on it differ from published numbers; report them "
                f"as measured on this copy.")

    def not_official(self, msg: str) -> None:
        """Evidence that a file is not the official one: a warning, or an error when strict."""
        if self.strict:
            raise InvTransferError(msg + " (strict_checksums is on: it accepts only files that match "
                                         "the official ones; turn it off to load this anyway.)")
        if msg not in self.warnings:
            self.warnings.append(msg)


def _read_bytes(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise InvTransferError(f"Cannot read {path} ({e}); expected {what}.") from e
    if not data:
        raise InvTransferError(f"{path} is empty (0 bytes); expected {what}. Delete it and "
                               f"download the dataset again.")
    return data


def _check_nonempty(path: str, what: str) -> None:
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise InvTransferError(f"Cannot read {path} ({e}); expected {what}.") from e
    if size == 0:
        raise InvTransferError(f"{path} is empty (0 bytes); expected {what}. Delete it and "
                               f"download the dataset again.")


def _finish(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
            class_names: list[str], ctx: _Context) -> RawDataset:
    def images(a: np.ndarray) -> np.ndarray:
        a = np.ascontiguousarray(a, dtype=np.uint8)
        return a[..., None] if a.ndim == 3 else a

    return RawDataset(images(x_train), np.ascontiguousarray(y_train, dtype=np.int64),
                      images(x_test), np.ascontiguousarray(y_test, dtype=np.int64),
                      [str(c) for c in class_names], list(ctx.sources), list(ctx.warnings))


def _check_labels(labels: np.ndarray, n_classes: int, name: str, what: str = "labels") -> None:
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        bad = labels[(labels < 0) | (labels >= n_classes)]
        raise InvTransferError(f"{name}: {what} must lie in 0..{n_classes - 1}, found "
                               f"{int(bad[0])} ({len(bad)} out-of-range labels); the file is "
                               f"corrupt or not from this dataset.")


def _check_counts(n_images: int, n_labels: int, images: str, labels: str) -> None:
    if n_images != n_labels:
        raise InvTransferError(f"{images} holds {n_images} images but {labels} holds {n_labels} "
                               f"labels; they must match one to one (a truncated or mismatched "
                               f"file).")



def _decode_image(path: str, what: str) -> Any:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except FileNotFoundError as e:
        raise InvTransferError(f"{path} is missing; expected {what}.") from e
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError
        raise InvTransferError(f"{path} cannot be decoded ({type(e).__name__}: {e}); expected "
                               f"{what}.") from e

