"""Readers of the official on-disk formats of the datasets invtransfer works with.

This module owns three things:

* **Finding** a dataset: :func:`data_roots` lists the candidate data roots and
  :func:`load_source` searches them for a dataset's usual folders and files.
* **Parsing** every official format into one uniform :class:`RawDataset` (uint8 images
  ``(N, H, W, C)`` that always have a channel axis, int64 labels, class names): CIFAR-10/100
  (python pickles, binary batches, and the official ``.tar.gz`` archives read in place), IDX
  (MNIST, Fashion-MNIST, KMNIST), Kuzushiji-49 ``.npz``, a generic ``.npz``, the GTSRB
  ``.ppm`` + CSV layout and the Tiny ImageNet folder layout.
* **Integrity**: files are checked against a table of known official checksums
  (:data:`KNOWN_DIGESTS`); a mismatch is a warning in :attr:`RawDataset.warnings`, or an error
  with ``strict_checksums=True``. Every truncated, corrupt or unparsable file is an
  :class:`~invtransfer.errors.InvTransferError` naming the file and what was expected.

It does not download (see :mod:`invtransfer.data.download`), build long-tailed subsets or
transform images.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import importlib
import io
import math
import os
import pickle
import struct
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from invtransfer.errors import InvTransferError, suggest

__all__ = [
    "RawDataset", "SOURCES", "FOLDERS", "DOWNLOADABLE", "KNOWN_DIGESTS", "KNOWN_COPIES", "data_roots",
    "load_source", "read_cifar10", "read_cifar100", "parse_cifar_bin", "restricted_pickle_loads",
    "read_idx", "parse_idx", "read_idx_dataset", "read_k49", "read_npz", "read_gtsrb",
    "read_tinyimagenet", "file_digest",
]


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


SOURCES = ("cifar10", "cifar100", "fashion-mnist", "mnist", "kmnist", "k49", "gtsrb",
           "tinyimagenet", "npz")

# Sub-folders of a data root where a dataset usually lives. The root itself is searched too
# (after these), so a data root may also point straight at a dataset's folder, as Debian's
# /usr/share/datasets/fashion-mnist does. The ".../raw" entries are torchvision's layout.
FOLDERS: dict[str, tuple[str, ...]] = {
    "cifar10": ("cifar10", "cifar-10", "CIFAR10"),
    "cifar100": ("cifar100", "cifar-100", "CIFAR100"),
    "fashion-mnist": ("fashion-mnist", "fashion_mnist", "FashionMNIST", "FashionMNIST/raw"),
    "mnist": ("mnist", "MNIST", "MNIST/raw"),
    "kmnist": ("kmnist", "KMNIST", "KMNIST/raw"),
    "k49": ("k49", "K49"),
    "gtsrb": ("GTSRB", "gtsrb"),
    "tinyimagenet": ("tiny-imagenet-200", "tinyimagenet"),
    "npz": (),
}

DOWNLOADABLE = ("fashion-mnist", "mnist", "kmnist", "k49", "cifar10", "cifar100", "tinyimagenet")

# Known official digests per source and file name (32 hex digits = md5, 64 = sha256). Any one
# match counts. Fashion-MNIST has two official byte streams: zalando's files and Debian's
# repackaging, which only strips the gzip name field.
KNOWN_DIGESTS: dict[str, dict[str, tuple[str, ...]]] = {
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": (
            "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        "train-labels-idx1-ubyte.gz": (
            "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
            "25c81989df183df01b3e8a0aad5dffbe"),
        "t10k-images-idx3-ubyte.gz": (
            "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
            "bef4ecab320f06d8554ea6380940ec79"),
        "t10k-labels-idx1-ubyte.gz": (
            "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
            "bb300cfdad3c16e7a12a480ee83cd310"),
        # The same files uncompressed (a gunzipped download, torchvision's FashionMNIST/raw).
        "train-images-idx3-ubyte": ("f4a8712d7a061bf5bd6d2ca38dc4d50a",),
        "train-labels-idx1-ubyte": ("9018921c3c673c538a1fc5bad174d6f9",),
        "t10k-images-idx3-ubyte": ("8181f5470baa50b63fa0f6fddb340f0a",),
        "t10k-labels-idx1-ubyte": ("15d484375f8d13e6eb1aabb0c3f46965",),
    },
    "mnist": {
        "train-images-idx3-ubyte.gz": ("f68b3c2dcbeaaa9fbdd348bbdeb94873",),
        "train-labels-idx1-ubyte.gz": ("d53e105ee54ea40749a09fcbcd1e9432",),
        "t10k-images-idx3-ubyte.gz": ("9fb629c4189551a2d022fa330f9573f3",),
        "t10k-labels-idx1-ubyte.gz": ("ec29112dd5afa0611ce80d1b7f02629c",),
    },
    "kmnist": {
        "train-images-idx3-ubyte.gz": ("bdb82020997e1d708af4cf47b453dcf7",),
        "train-labels-idx1-ubyte.gz": ("e144d726b3acfaa3e44228e80efcd344",),
        "t10k-images-idx3-ubyte.gz": ("5c965bf0a639b31b8f53240b1b52f4d7",),
        "t10k-labels-idx1-ubyte.gz": ("7320c461ea6c1c855c0b718fb2a4b134",),
    },
    "k49": {
        "k49-train-imgs.npz": ("7ac088b20481cf51dcd01ceaab89d821",),
        "k49-train-labels.npz": ("44a8e1b893f81e63ff38d73cad420f7a",),
        "k49-test-imgs.npz": ("d352e201d846ce6b94f42c990966f374",),
        "k49-test-labels.npz": ("4da6f7a62e67a832d5eb1bd85c5ee448",),
    },
    "cifar10": {
        "cifar-10-python.tar.gz": ("c58f30108f718f92721af3b95e74349a",),
        "cifar-10-binary.tar.gz": ("c32a1d4ab5d03f1284b67883e8d87530",),
        "data_batch_1": ("c99cafc152244af753f735de768cd75f",),
        "data_batch_2": ("d4bba439e000b95fd0a9bffe97cbabec",),
        "data_batch_3": ("54ebc095f3ab1f0389bbae665268c751",),
        "data_batch_4": ("634d18415352ddfa80567beed471001a",),
        "data_batch_5": ("482c414d41f54cd18b22e5b47cb7c3cb",),
        "test_batch": ("40351d587109b95175f43aff81a1287e",),
        "batches.meta": ("5ff9c542aee3614f3951f8cda6e48888",),
    },
    "cifar100": {
        "cifar-100-python.tar.gz": ("eb9058c3a382ffc7106e4002c42a8d85",),
        "cifar-100-binary.tar.gz": ("03b5dce01913d631647c71ecec9e9cb8",),
        "train": ("16019d7e3df5f24257cddd939b257f8d",),
        "test": ("f0ef6b0ae62326f3e7ffdfab6717acfc",),
        "meta": ("7973b15100ade9c7d40fb424638fde48",),
    },
    "tinyimagenet": {
        "tiny-imagenet-200.zip": ("90528d7ca1a48142e341f4ef8d21d0de",),
    },
}

# Copies known NOT to be the official files, per source and file name: sha256 -> what the file
# is. No official digests are published for the CIFAR binary batches, so without this entry the
# partly-JPEG CIFAR-10 copy of the project's machines (its record counts are right) would pass
# for the official data; with it, it is named (a warning, or an error with strict_checksums).
_PARTLY_JPEG_CIFAR10 = (
    "the partly-JPEG CIFAR-10 copy that materialize_cifar10.py writes (original training order and "
    "labels; training images 4,000-49,999 and the test images outside a lossless subset went "
    "through JPEG at quality ~75, mean PSNR 30.5 dB; the test batch is ordered by class)")
KNOWN_COPIES: dict[str, dict[str, dict[str, str]]] = {
    "cifar10": {name: {digest: _PARTLY_JPEG_CIFAR10} for name, digest in (
        ("data_batch_1.bin", "333949a6a78a1f4add8a2ea152797cf44ba138082dc574c743bc4260fd023c11"),
        ("data_batch_2.bin", "106eeaad9f1fa7a999292fdafe68ee909080f58aee038a76994035aedf40ba26"),
        ("data_batch_3.bin", "99cb88ba00fca88bf28c517a74307b6b78a346c6ea747a561cb8e660c787d5cb"),
        ("data_batch_4.bin", "76b482bc3bb79c0370e48ea71bb6e4f567a3770d224dc09a9ddc8cfa2369f294"),
        ("data_batch_5.bin", "490f5ead4f04a3eb71d5898eb551e0d8d2c592feb778fb9b109a006b3f231495"),
        ("test_batch.bin", "fd64db5246e2bf26d52ea111aaf57946dc109f4dfa0750c3d14099ffa36839cd"))},
}

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck"]
FASHION_MNIST_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                       "Sneaker", "Bag", "Ankle boot"]
MNIST_NAMES = [str(i) for i in range(10)]
KMNIST_NAMES = ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"]
_IDX_NAMES = {"fashion-mnist": FASHION_MNIST_NAMES, "mnist": MNIST_NAMES, "kmnist": KMNIST_NAMES}


# --------------------------------------------------------------------------- integrity

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


# --------------------------------------------------------------------------- IDX

_IDX_DTYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_IDX_IMAGES, _IDX_LABELS = 0x00000803, 0x00000801


def _gunzip_if_needed(data: bytes, name: str, what: str) -> bytes:
    # Decide by the gzip magic rather than the file name: renamed files are common.
    if data[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise InvTransferError(f"{name} is a corrupt or truncated gzip file ({e}); expected "
                                   f"gzip-compressed {what}. Download it again.") from e
    if name.endswith(".gz"):
        raise InvTransferError(f"{name} is named .gz but is not gzip data (it starts with "
                               f"{data[:4].hex()}); expected gzip-compressed {what}.")
    return data


def _parse_idx(data: bytes, name: str) -> tuple[np.ndarray, int]:
    raw = _gunzip_if_needed(data, name, "an IDX file")
    if len(raw) < 4:
        raise InvTransferError(f"{name} is too short ({len(raw)} bytes) for an IDX file; expected "
                               f"a 4-byte magic number such as 0x00000803 (images) or "
                               f"0x00000801 (labels).")
    magic = struct.unpack(">I", raw[:4])[0]
    ndim = raw[3]
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or ndim == 0:
        raise InvTransferError(f"{name} has magic number 0x{magic:08X}, which is not an IDX "
                               f"header; expected 0x00000803 (uint8 images) or 0x00000801 (uint8 "
                               f"labels): two zero bytes, a dtype byte (0x08 = uint8) and the "
                               f"number of dimensions.")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise InvTransferError(f"{name} is truncated inside its IDX header: {ndim} dimensions need "
                               f"{header} header bytes, found {len(raw)}.")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = _IDX_DTYPES[raw[2]]
    count = math.prod(dims)
    expected, found = count * dtype.itemsize, len(raw) - header
    if expected != found:
        raise InvTransferError(f"{name}: the IDX header (magic 0x{magic:08X}, dims "
                               f"{'x'.join(map(str, dims))}, {dtype.name}) announces {expected} "
                               f"data bytes but the file holds {found}; it is truncated or "
                               f"corrupt.")
    arr = np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True), magic


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes (gzip-compressed or raw); ``name`` is used in error messages."""
    if not data:
        raise InvTransferError(f"{name} is empty (0 bytes); expected an IDX file.")
    return _parse_idx(data, name)[0]


def read_idx(path: str) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw): checks magic, dims and the exact data length."""
    return _parse_idx(_read_bytes(path, "an IDX file"), os.path.abspath(path))[0]


IDX_FILES = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
             "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}


def _idx_path(folder: str, stem: str) -> str | None:
    for name in (stem + ".gz", stem):
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    return None


def read_idx_dataset(folder: str, source: str = "mnist", *,
                     strict_checksums: bool = False) -> RawDataset:
    """Read MNIST-style IDX files (``train-images-idx3-ubyte[.gz]`` etc.) from ``folder``.

    ``source`` ("mnist", "fashion-mnist" or "kmnist") picks the class names and the checksum
    table.
    """
    if source not in _IDX_NAMES:
        raise InvTransferError(f"IDX source must be one of {', '.join(_IDX_NAMES)}, got "
                               f"{source!r}.{suggest(source, _IDX_NAMES)}")
    ctx = _Context(strict_checksums)
    names = _IDX_NAMES[source]
    arrays: dict[str, np.ndarray] = {}
    paths: dict[str, str] = {}
    for key, stem in IDX_FILES.items():
        path = _idx_path(folder, stem)
        if path is None:
            raise InvTransferError(f"{source}: missing {os.path.join(folder, stem)}.gz (or the "
                                   f"uncompressed {stem}); a {source} folder needs "
                                   f"{', '.join(IDX_FILES.values())} (each .gz or raw).")
        path = os.path.abspath(path)
        ctx.verify(path, source)
        arr, magic = _parse_idx(_read_bytes(path, "an IDX file"), path)
        want = _IDX_IMAGES if key.startswith("x") else _IDX_LABELS
        if magic != want:
            kind = "uint8 images (3 dims)" if want == _IDX_IMAGES else "uint8 labels (1 dim)"
            raise InvTransferError(f"{path} has IDX magic 0x{magic:08X}; expected 0x{want:08X} "
                                   f"for {kind}.")
        ctx.used(path)
        arrays[key], paths[key] = arr, path
    for split in ("train", "test"):
        _check_counts(len(arrays[f"x_{split}"]), len(arrays[f"y_{split}"]), paths[f"x_{split}"],
                      paths[f"y_{split}"])
        _check_labels(arrays[f"y_{split}"], len(names), paths[f"y_{split}"])
    return _finish(arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"],
                   names, ctx)


# --------------------------------------------------------------------------- npz

def _npz_arrays(path: str, required: tuple[str, ...],
                optional: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Load the named arrays of an .npz file (never unpickling), wrapping every numpy error."""
    path = os.path.abspath(path)
    _check_nonempty(path, "an .npz archive")
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as e:  # numpy raises many types (BadZipFile, ValueError, OSError, EOFError)
        raise InvTransferError(f"{path} cannot be read as an .npz archive ({type(e).__name__}: "
                               f"{e}); expected a zip of .npy arrays without pickled objects."
                               ) from e
    if not hasattr(archive, "files"):
        raise InvTransferError(f"{path} holds a single .npy array, not an .npz archive; expected "
                               f"an archive with keys {', '.join(required)}.")
    try:
        missing = [k for k in required if k not in archive.files]
        if missing:
            raise InvTransferError(f"{path} lacks the key(s) {', '.join(missing)}; expected "
                                   f"{', '.join(required)} (found: "
                                   f"{', '.join(archive.files) or 'no arrays'}).")
        out = {}
        for key in required + tuple(k for k in optional if k in archive.files):
            try:
                out[key] = archive[key]
            except Exception as e:  # corrupt member: zlib, zipfile, format or pickle errors
                raise InvTransferError(f"{path}: array {key!r} cannot be read "
                                       f"({type(e).__name__}: {e}); the file is truncated or "
                                       f"corrupt, or holds pickled objects (refused).") from e
        return out
    finally:
        archive.close()


def _as_images(a: np.ndarray, path: str, key: str) -> np.ndarray:
    if a.dtype != np.uint8:
        raise InvTransferError(f"{path}: {key!r} has dtype {a.dtype}; expected uint8 images.")
    if a.ndim == 3:
        return a[..., None]
    if a.ndim == 4 and 1 <= a.shape[3] <= 4:
        return a
    raise InvTransferError(f"{path}: {key!r} has shape {a.shape}; expected (N, H, W) or "
                           f"(N, H, W, C) with C in 1..4.")


def _as_labels(a: np.ndarray, n: int, path: str, key: str) -> np.ndarray:
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1 or a.dtype.kind not in "iu":
        raise InvTransferError(f"{path}: {key!r} has dtype {a.dtype} and shape {a.shape}; "
                               f"expected a 1-D integer label array.")
    if len(a) != n:
        raise InvTransferError(f"{path}: {key!r} holds {len(a)} labels but the images hold {n}; "
                               f"they must match one to one.")
    if a.size and a.dtype.kind == "i" and int(a.min()) < 0:
        raise InvTransferError(f"{path}: {key!r} has negative labels (min {int(a.min())}); "
                               f"expected class indices 0..C-1.")
    if a.size and int(a.max()) > np.iinfo(np.int64).max:
        raise InvTransferError(f"{path}: {key!r} has labels too large for int64.")
    return a.astype(np.int64)


def read_npz(path: str) -> RawDataset:
    """Read a generic .npz: ``x_train``, ``y_train``, ``x_test``, ``y_test``, [``class_names``].

    Images are uint8 (N, H, W) or (N, H, W, C); labels integers. The classes are 0..max label
    (over train and test), or ``len(class_names)`` when that key is present. Every class must
    have at least one training image. Extra keys are ignored; pickled objects are never loaded.
    """
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise InvTransferError(f"{path} does not exist; expected an .npz file with keys x_train, "
                               f"y_train, x_test, y_test.")
    arrs = _npz_arrays(path, ("x_train", "y_train", "x_test", "y_test"), ("class_names",))
    x_train = _as_images(arrs["x_train"], path, "x_train")
    x_test = _as_images(arrs["x_test"], path, "x_test")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise InvTransferError(f"{path}: 'x_train' images are {x_train.shape[1:]} but 'x_test' "
                               f"images are {x_test.shape[1:]}; expected the same (H, W, C).")
    y_train = _as_labels(arrs["y_train"], len(x_train), path, "y_train")
    y_test = _as_labels(arrs["y_test"], len(x_test), path, "y_test")
    if len(y_train) == 0:
        raise InvTransferError(f"{path}: 'x_train' holds no images.")
    if "class_names" in arrs:
        cn = arrs["class_names"]
        if cn.ndim != 1 or cn.dtype.kind not in "US":
            raise InvTransferError(f"{path}: 'class_names' has dtype {cn.dtype} and shape "
                                   f"{cn.shape}; expected a 1-D array of strings.")
        try:
            names = [c.decode("utf-8") if isinstance(c, bytes) else str(c) for c in cn.tolist()]
        except UnicodeDecodeError as e:
            raise InvTransferError(f"{path}: 'class_names' is not valid UTF-8 ({e}).") from e
        n_classes = len(names)
        for key, y in (("y_train", y_train), ("y_test", y_test)):
            if y.size and int(y.max()) >= n_classes:
                raise InvTransferError(f"{path}: {key!r} has label {int(y.max())} but "
                                       f"'class_names' names only {n_classes} classes "
                                       f"(0..{n_classes - 1}).")
    else:
        n_classes = int(max(y_train.max(), y_test.max() if y_test.size else 0)) + 1
        names = [str(i) for i in range(n_classes)]
    counts = np.bincount(y_train, minlength=n_classes)
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        shown = ", ".join(map(str, empty[:10])) + (", ..." if len(empty) > 10 else "")
        raise InvTransferError(f"{path}: 'y_train' has no image of class(es) {shown} out of "
                               f"0..{n_classes - 1}; every class needs at least one training "
                               f"image (renumber the classes).")
    ctx = _Context()
    ctx.used(path)
    return _finish(x_train, y_train, x_test, y_test, names, ctx)


K49_FILES = {"x_train": "k49-train-imgs.npz", "y_train": "k49-train-labels.npz",
             "x_test": "k49-test-imgs.npz", "y_test": "k49-test-labels.npz"}


def read_k49(folder: str, *, strict_checksums: bool = False) -> RawDataset:
    """Read Kuzushiji-49 (``k49-*-imgs.npz``/``k49-*-labels.npz``, arrays under ``arr_0``).

    Class names come from ``k49_classmap.csv`` (the character) when present, else "0".."48".
    """
    ctx = _Context(strict_checksums)
    arrays: dict[str, np.ndarray] = {}
    paths: dict[str, str] = {}
    for key, name in K49_FILES.items():
        path = os.path.abspath(os.path.join(folder, name))
        if not os.path.isfile(path):
            raise InvTransferError(f"k49: missing {path}; a Kuzushiji-49 folder needs "
                                   f"{', '.join(K49_FILES.values())}.")
        ctx.verify(path, "k49")
        a = _npz_arrays(path, ("arr_0",))["arr_0"]
        if key.startswith("x"):
            if a.dtype != np.uint8 or a.ndim != 3:
                raise InvTransferError(f"{path}: 'arr_0' has dtype {a.dtype} and shape {a.shape};"
                                       f" expected uint8 images (N, 28, 28).")
        elif a.ndim != 1 or a.dtype.kind not in "iu":
            raise InvTransferError(f"{path}: 'arr_0' has dtype {a.dtype} and shape {a.shape}; "
                                   f"expected a 1-D integer label array.")
        ctx.used(path)
        arrays[key], paths[key] = a, path
    names = [str(i) for i in range(49)]
    classmap = os.path.join(folder, "k49_classmap.csv")
    if os.path.isfile(classmap):
        names = _read_k49_classmap(classmap)
        ctx.used(classmap)
    for split in ("train", "test"):
        _check_counts(len(arrays[f"x_{split}"]), len(arrays[f"y_{split}"]), paths[f"x_{split}"],
                      paths[f"y_{split}"])
        _check_labels(arrays[f"y_{split}"].astype(np.int64), len(names), paths[f"y_{split}"])
    return _finish(arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"],
                   names, ctx)


def _read_k49_classmap(path: str) -> list[str]:
    text = _read_bytes(path, "k49_classmap.csv (index,codepoint,char)")
    try:
        rows = list(csv.reader(io.StringIO(text.decode("utf-8-sig"))))
    except (UnicodeDecodeError, csv.Error) as e:
        raise InvTransferError(f"{path} is not a UTF-8 CSV ({e}); expected columns "
                               f"index,codepoint,char.") from e
    names: dict[int, str] = {}
    for i, row in enumerate(rows, 1):
        if not row or (i == 1 and not row[0].strip().isdigit()):
            continue  # the header line
        try:
            names[int(row[0])] = row[2].strip() if len(row) > 2 and row[2].strip() else row[0]
        except ValueError as e:
            raise InvTransferError(f"{path}, line {i}: expected index,codepoint,char with an "
                                   f"integer index, found {row!r}.") from e
    if sorted(names) != list(range(49)):
        raise InvTransferError(f"{path} maps indices {sorted(names)[:5]}...; expected exactly "
                               f"the 49 indices 0..48.")
    return [names[i] for i in range(49)]


# --------------------------------------------------------------------------- CIFAR

def _numpy_global(module: str, name: str) -> Any:
    # Pickles from numpy < 2 name numpy.core.multiarray; numpy >= 2 moved it to numpy._core
    # (importing numpy.core there only warns), so resolve the new location first.
    if module.endswith("multiarray"):
        for mod in ("numpy._core.multiarray", "numpy.core.multiarray"):
            try:
                return getattr(importlib.import_module(mod), name)
            except (ImportError, AttributeError):
                continue
    return getattr(importlib.import_module(module), name)


_PICKLE_ALLOWED = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
})


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can only build numpy arrays: a CIFAR batch needs nothing else, and any
    other global (os.system, builtins.open, ...) would let a crafted file run code."""

    def __init__(self, data: bytes, name: str) -> None:
        super().__init__(io.BytesIO(data), encoding="bytes")
        self._name = name

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PICKLE_ALLOWED:
            return _numpy_global(module, name)
        raise InvTransferError(f"{self._name}: refusing to unpickle the global {module}.{name}. "
                               f"An official CIFAR python batch only needs numpy arrays, so this "
                               f"file is not one (it may be malicious); nothing was executed.")

    def persistent_load(self, pid: Any) -> Any:
        raise InvTransferError(f"{self._name}: refusing a persistent id in the pickle; an "
                               f"official CIFAR python batch has none.")


def restricted_pickle_loads(data: bytes, name: str = "<bytes>") -> Any:
    """Unpickle ``data`` allowing only the numpy globals a CIFAR python batch needs."""
    if not data:
        raise InvTransferError(f"{name} is empty (0 bytes); expected a CIFAR python batch.")
    try:
        return _RestrictedUnpickler(data, name).load()
    except InvTransferError:
        raise
    except Exception as e:  # garbage bytes raise almost any type (ValueError, KeyError, ...)
        raise InvTransferError(f"{name} is not a readable pickle ({type(e).__name__}: {e}); "
                               f"expected a CIFAR python batch (a pickled dict of numpy arrays)."
                               ) from e


def _str_keys(obj: Any, name: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise InvTransferError(f"{name} unpickles to a {type(obj).__name__}; expected a dict "
                               f"(a CIFAR python batch).")
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in obj.items()}


def _names_list(value: Any, n: int, name: str, key: str) -> list[str]:
    if not isinstance(value, (list, tuple)) or len(value) != n or not all(
            isinstance(v, (str, bytes)) for v in value):
        raise InvTransferError(f"{name}: {key!r} must be a list of {n} class names.")
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in value]


def _cifar_py_batch(data: bytes, name: str, label_key: str,
                    n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    d = _str_keys(restricted_pickle_loads(data, name), name)
    for key in ("data", label_key):
        if key not in d:
            raise InvTransferError(f"{name} has no {key!r} entry; expected a CIFAR python batch "
                                   f"with 'data' and {label_key!r} (found "
                                   f"{', '.join(sorted(d)) or 'nothing'}).")
    x = d["data"]
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
        desc = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
        raise InvTransferError(f"{name}: 'data' is {desc}; expected a uint8 array (N, 3072).")
    try:
        y = np.asarray(d[label_key])
    except Exception as e:  # ragged or odd objects
        raise InvTransferError(f"{name}: {label_key!r} is not a list of integers ({e}).") from e
    if y.ndim != 1 or (y.size and y.dtype.kind not in "iu"):
        raise InvTransferError(f"{name}: {label_key!r} has dtype {y.dtype} and shape {y.shape}; "
                               f"expected a list of integer labels.")
    y = y.astype(np.int64)
    _check_counts(len(x), len(y), f"{name} ('data')", f"{name} ({label_key!r})")
    _check_labels(y, n_classes, name, repr(label_key))
    return x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), y


_CIFAR_LABELS = {"fine": 100, "coarse": 20}


def parse_cifar_bin(data: bytes, name: str = "<bytes>", *, cifar100: bool = False,
                    labels: str = "fine") -> tuple[np.ndarray, np.ndarray]:
    """Parse a CIFAR binary batch into (uint8 images (N, 32, 32, 3), int64 labels).

    CIFAR-10 records are 1 label byte + 3072 pixel bytes (R, G, B planes of 32x32, row-major);
    CIFAR-100 records are coarse label byte + fine label byte + 3072 pixel bytes.
    """
    rec = 3074 if cifar100 else 3073
    what = ("CIFAR-100 binary records of 3074 bytes (coarse label, fine label, 3072 pixels)"
            if cifar100 else "CIFAR-10 binary records of 3073 bytes (label, 3072 pixels)")
    if len(data) == 0 or len(data) % rec:
        raise InvTransferError(f"{name} has {len(data)} bytes, not a positive multiple of {rec}; "
                               f"expected {what}. The file is truncated or of another kind.")
    a = np.frombuffer(data, dtype=np.uint8).reshape(-1, rec)
    if cifar100:
        y, n = (a[:, 1], 100) if labels == "fine" else (a[:, 0], 20)
    else:
        y, n = a[:, 0], 10
    y = y.astype(np.int64)
    _check_labels(y, n, name, f"{labels} labels" if cifar100 else "labels")
    x = a[:, rec - 3072:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x), y


def _text_names(data: bytes, n: int, name: str) -> list[str]:
    names = [ln.strip() for ln in data.decode("utf-8", "replace").splitlines() if ln.strip()]
    if len(names) != n:
        raise InvTransferError(f"{name} lists {len(names)} class names; expected {n}, one per "
                               f"line.")
    return names


@dataclass(frozen=True)
class _CifarSpec:
    source: str
    py_dir: str
    bin_dir: str
    py_tar: str
    bin_tar: str
    py_train: tuple[str, ...]
    py_test: tuple[str, ...]
    py_meta: str
    bin_train: tuple[str, ...]
    bin_test: tuple[str, ...]
    #: images in each official batch file (python and binary alike): a file cut at a record
    #: boundary parses cleanly, so only its count tells it from the official one
    records: dict[str, int]


_CIFAR_SPECS = {
    "cifar10": _CifarSpec("cifar10", "cifar-10-batches-py", "cifar-10-batches-bin",
                          "cifar-10-python.tar.gz", "cifar-10-binary.tar.gz",
                          tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                          "batches.meta", tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
                          ("test_batch.bin",),
                          {f"{stem}{ext}": 10000 for stem in [f"data_batch_{i}" for i in range(1, 6)]
                           + ["test_batch"] for ext in ("", ".bin")}),
    "cifar100": _CifarSpec("cifar100", "cifar-100-python", "cifar-100-binary",
                           "cifar-100-python.tar.gz", "cifar-100-binary.tar.gz", ("train",),
                           ("test",), "meta", ("train.bin",), ("test.bin",),
                           {"train": 50000, "test": 10000, "train.bin": 50000, "test.bin": 10000}),
}


def _check_records(counts: list[tuple[str, str, int]], spec: _CifarSpec, ctx: _Context) -> None:
    """Compare each batch's number of images with the official count (``(name, path, n)`` each)."""
    off = [f"{path} holds {n:,} (official: {spec.records[name]:,})" for name, path, n in counts
           if n != spec.records[name]]
    if off:
        ctx.not_official(f"The {spec.source} batches do not hold the official numbers of images: "
                         f"{'; '.join(off)}. A file cut at a record boundary, or a subset that is not "
                         f"the official dataset; results computed on it are not comparable with "
                         f"published numbers.")


class _Files:
    """The member files of one CIFAR layout: a folder, or a tar archive read in memory."""

    def __init__(self, get: Callable[[str], tuple[bytes, str] | None], where: str) -> None:
        self._get = get
        self.where = where

    def get(self, name: str) -> tuple[bytes, str] | None:
        return self._get(name)

    def need(self, name: str, what: str) -> tuple[bytes, str]:
        got = self._get(name)
        if got is None:
            raise InvTransferError(f"{self.where} has no file {name!r}; expected {what}.")
        return got


def _dir_files(folder: str, ctx: _Context, source: str) -> _Files:
    def get(name: str) -> tuple[bytes, str] | None:
        path = os.path.abspath(os.path.join(folder, name))
        if not os.path.isfile(path):
            return None
        ctx.verify(path, source)
        data = _read_bytes(path, f"the {source} file {name}")
        ctx.used(path)
        return data, path
    return _Files(get, os.path.abspath(folder))


def _tar_files(archive: str, wanted: set[str], ctx: _Context, source: str) -> _Files:
    archive = os.path.abspath(archive)
    ctx.verify(archive, source)
    _check_nonempty(archive, "a tar archive")
    found: dict[str, tuple[bytes, str]] = {}
    # One sequential pass: seeking backwards in a .tar.gz means decompressing it again.
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                base = os.path.basename(member.name)
                if member.isfile() and base in wanted and base not in found:
                    f = tar.extractfile(member)
                    found[base] = (f.read() if f else b"", f"{archive}:{member.name}")
            # tarfile stops at the end-of-archive block; reading the compressed stream to its
            # end makes gzip check its CRC, so a corrupted byte anywhere is an error.
            while tar.fileobj.read(1 << 20):
                pass
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise InvTransferError(f"{archive} is a corrupt or truncated archive ({type(e).__name__}: "
                               f"{e}); expected the official {os.path.basename(archive)} "
                               f"(a gzip-compressed tar). Download it again.") from e
    ctx.used(archive)
    return _Files(found.get, archive)


def _cifar_layout(path: str, spec: _CifarSpec) -> str | None:
    """What kind of CIFAR layout sits at ``path``: 'py', 'bin', 'tar' or None."""
    if os.path.isfile(path):
        return "tar"
    if os.path.isfile(os.path.join(path, spec.py_train[0])):
        return "py"
    if os.path.isfile(os.path.join(path, spec.bin_train[0])):
        return "bin"
    return None


def _cifar_candidates(folder: str, spec: _CifarSpec) -> list[str]:
    return [folder, os.path.join(folder, spec.py_dir), os.path.join(folder, spec.bin_dir),
            os.path.join(folder, spec.py_tar), os.path.join(folder, spec.bin_tar)]


def _read_cifar(path: str, spec: _CifarSpec, ctx: _Context, labels: str) -> RawDataset:
    kind = _cifar_layout(path, spec)
    if kind is None:
        for cand in _cifar_candidates(path, spec)[1:]:
            kind = _cifar_layout(cand, spec)
            if kind:
                path = cand
                break
        else:
            raise InvTransferError(
                f"No {spec.source} data at {os.path.abspath(path)}; expected the folder "
                f"{spec.py_dir}/ ({', '.join(spec.py_train + spec.py_test)}, {spec.py_meta}), "
                f"the folder {spec.bin_dir}/ ({', '.join(spec.bin_train + spec.bin_test)}), or the "
                f"archive {spec.py_tar} or {spec.bin_tar}.")
    c100 = spec.source == "cifar100"
    if kind == "tar":
        wanted = set(spec.py_train + spec.py_test + spec.bin_train + spec.bin_test)
        wanted |= {spec.py_meta, "batches.meta.txt", "fine_label_names.txt",
                   "coarse_label_names.txt"}
        files = _tar_files(path, wanted, ctx, spec.source)
        kind = "py" if files.get(spec.py_train[0]) else "bin" if files.get(spec.bin_train[0]) \
            else None
        if kind is None:
            raise InvTransferError(f"{files.where} holds neither {spec.py_dir}/{spec.py_train[0]} "
                                   f"nor {spec.bin_dir}/{spec.bin_train[0]}; expected an official "
                                   f"{spec.source} archive.")
    else:
        files = _dir_files(path, ctx, spec.source)

    n_classes = (_CIFAR_LABELS[labels] if c100 else 10)
    counts: list[tuple[str, str, int]] = []
    if kind == "py":
        label_key = f"{labels}_labels" if c100 else "labels"

        def load(names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
            parts = []
            for n in names:
                data, where = files.need(n, f"a CIFAR python batch {n}")
                parts.append(_cifar_py_batch(data, where, label_key, n_classes))
                counts.append((n, where, len(parts[-1][1])))
            return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

        # CIFAR-10's names are well known; CIFAR-100's must come from its meta file.
        meta = files.need(spec.py_meta, "the pickled class names (fine_label_names, "
                                        "coarse_label_names)") if c100 else files.get(spec.py_meta)
        if meta is None:
            names = list(CIFAR10_NAMES)
        else:
            d = _str_keys(restricted_pickle_loads(*meta), meta[1])
            key = f"{labels}_label_names" if c100 else "label_names"
            if key not in d:
                raise InvTransferError(f"{meta[1]} has no {key!r} entry; expected the official "
                                       f"{spec.py_meta} pickle.")
            names = _names_list(d[key], n_classes, meta[1], key)
        x_train, y_train = load(spec.py_train)
        x_test, y_test = load(spec.py_test)
    else:
        def load(names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
            parts = []
            for n in names:
                data, where = files.need(n, "a CIFAR binary batch")
                parts.append(parse_cifar_bin(data, where, cifar100=c100, labels=labels))
                counts.append((n, where, len(parts[-1][1])))
            return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

        x_train, y_train = load(spec.bin_train)
        x_test, y_test = load(spec.bin_test)
        meta_name = f"{labels}_label_names.txt" if c100 else "batches.meta.txt"
        meta = files.need(meta_name, f"the {n_classes} {labels} class names, one per line") \
            if c100 else files.get(meta_name)
        names = _text_names(meta[0], n_classes, meta[1]) if meta else list(CIFAR10_NAMES)
    _check_records(counts, spec, ctx)
    return _finish(x_train, y_train, x_test, y_test, names, ctx)


def read_cifar10(path: str, *, strict_checksums: bool = False) -> RawDataset:
    """Read CIFAR-10 from ``cifar-10-batches-py/``, ``cifar-10-batches-bin/``, either official
    ``.tar.gz`` archive (read in memory, never unpacked), or a folder holding one of those."""
    return _read_cifar(path, _CIFAR_SPECS["cifar10"], _Context(strict_checksums), "fine")


def read_cifar100(path: str, *, labels: str = "fine", strict_checksums: bool = False) -> RawDataset:
    """Read CIFAR-100 (``cifar-100-python/``, ``cifar-100-binary/`` or their archives).

    ``labels`` picks the 100 "fine" or the 20 "coarse" classes.
    """
    if labels not in _CIFAR_LABELS:
        raise InvTransferError(f"cifar100_labels must be 'fine' or 'coarse', got {labels!r}."
                               f"{suggest(labels, _CIFAR_LABELS)}")
    return _read_cifar(path, _CIFAR_SPECS["cifar100"], _Context(strict_checksums), labels)


# --------------------------------------------------------------------------- GTSRB

_GT_COLUMNS = ("Filename", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2", "ClassId")


def _read_gt_csv(path: str) -> list[tuple[str, int, int, int, int, int]]:
    text = _read_bytes(path, "a GTSRB annotation CSV "
                             "(Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId)")
    try:
        rows = list(csv.reader(io.StringIO(text.decode("utf-8-sig")), delimiter=";"))
    except (UnicodeDecodeError, csv.Error) as e:
        raise InvTransferError(f"{path} is not a readable semicolon-separated CSV ({e}).") from e
    if not rows:
        raise InvTransferError(f"{path} has no header line; expected "
                               f"Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId.")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in _GT_COLUMNS if c not in header]
    if missing:
        raise InvTransferError(f"{path} lacks the column(s) {', '.join(missing)}; expected "
                               f"Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId "
                               f"(the test CSV with labels is GT-final_test.csv, from "
                               f"GTSRB_Final_Test_GT.zip).")
    idx = [header.index(c) for c in _GT_COLUMNS]
    out = []
    for line, row in enumerate(rows[1:], 2):
        if not any(cell.strip() for cell in row):
            continue
        try:
            cells = [row[i].strip() for i in idx]
            out.append((cells[0], *(int(c) for c in cells[1:])))
        except (IndexError, ValueError) as e:
            raise InvTransferError(f"{path}, line {line}: cannot parse {row!r} ({e}); expected "
                                   f"a file name and integer ROI and ClassId columns.") from e
    if not out:
        raise InvTransferError(f"{path} lists no images.")
    return out


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


def _gtsrb_image(path: str, roi: tuple[int, int, int, int], size: int, roi_crop: bool,
                 csv_path: str) -> np.ndarray:
    from PIL import Image

    im = _decode_image(path, "a GTSRB .ppm image")
    if roi_crop:
        x1, y1, x2, y2 = roi
        # ROI corners as in the CSV, the end exclusive like every common GTSRB loader; clipped
        # because a few annotations touch the border.
        x1, y1 = max(0, x1), max(0, y1)
        x2, y2 = min(im.width, x2), min(im.height, y2)
        if x2 <= x1 or y2 <= y1:
            raise InvTransferError(f"{csv_path}: the ROI {roi} of {os.path.basename(path)} is "
                                   f"empty inside its {im.width}x{im.height} image.")
        im = im.crop((x1, y1, x2, y2))
    return np.asarray(im.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def _gtsrb_test_csv(base: str) -> str | None:
    for cand in (os.path.join(base, "Final_Test", "Images", "GT-final_test.csv"),
                 os.path.join(base, "Final_Test", "GT-final_test.csv"),
                 os.path.join(base, "GT-final_test.csv"),
                 os.path.join(os.path.dirname(os.path.abspath(base)), "GT-final_test.csv")):
        if os.path.isfile(cand):
            return os.path.abspath(cand)
    return None


def read_gtsrb(folder: str, *, size: int = 32, roi_crop: bool = False) -> RawDataset:
    """Read the official GTSRB layout: ``Final_Training/Images/000NN/*.ppm`` + ``GT-000NN.csv``
    and ``Final_Test/Images/*.ppm`` + ``GT-final_test.csv`` (also looked for in ``GTSRB/`` and
    its parent). Images are optionally cropped to their ROI, then resized (bilinear) to
    ``size`` x ``size``. Class names are "0".."42". ``sources`` lists the CSVs and image folders.
    """
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise InvTransferError(f"gtsrb_size must be a positive integer, got {size!r}.")
    base = folder
    if not os.path.isdir(os.path.join(base, "Final_Training")) and \
            os.path.isdir(os.path.join(base, "GTSRB")):
        base = os.path.join(base, "GTSRB")
    base = os.path.abspath(base)
    train_dir = os.path.join(base, "Final_Training", "Images")
    if not os.path.isdir(train_dir):
        raise InvTransferError(f"No GTSRB training images at {train_dir}; expected "
                               f"Final_Training/Images/000NN/*.ppm with GT-000NN.csv per class "
                               f"(from GTSRB_Final_Training_Images.zip).")
    ctx = _Context()
    class_dirs = sorted(d for d in os.listdir(train_dir)
                        if d.isdigit() and os.path.isdir(os.path.join(train_dir, d)))
    if not class_dirs:
        raise InvTransferError(f"{train_dir} has no class folders 00000..00042.")
    xs, ys = [], []
    for d in class_dirs:
        cdir = os.path.join(train_dir, d)
        gt = os.path.join(cdir, f"GT-{d}.csv")
        if not os.path.isfile(gt):
            raise InvTransferError(f"Missing {gt}; every GTSRB class folder has its "
                                   f"GT-000NN.csv annotation file.")
        for fname, x1, y1, x2, y2, cid in _read_gt_csv(gt):
            xs.append(_gtsrb_image(os.path.join(cdir, fname), (x1, y1, x2, y2), size, roi_crop,
                                   gt))
            ys.append(cid)
        ctx.used(gt)
        ctx.used(cdir)
    test_dir = os.path.join(base, "Final_Test", "Images")
    test_csv = _gtsrb_test_csv(base)
    if test_csv is None:
        raise InvTransferError(f"No GT-final_test.csv (the GTSRB test labels) in {test_dir}, "
                               f"{os.path.join(base, 'Final_Test')}, {base} or its parent; "
                               f"unzip GTSRB_Final_Test_GT.zip there.")
    xt, yt = [], []
    for fname, x1, y1, x2, y2, cid in _read_gt_csv(test_csv):
        xt.append(_gtsrb_image(os.path.join(test_dir, fname), (x1, y1, x2, y2), size, roi_crop,
                               test_csv))
        yt.append(cid)
    ctx.used(test_csv)
    ctx.used(test_dir)
    y_train, y_test = np.asarray(ys, np.int64), np.asarray(yt, np.int64)
    n = int(max(y_train.max(), y_test.max())) + 1
    _check_labels(y_train, 43, train_dir, "ClassId")
    _check_labels(y_test, 43, test_csv, "ClassId")
    return _finish(np.stack(xs), y_train, np.stack(xt), y_test, [str(i) for i in range(n)], ctx)


# --------------------------------------------------------------------------- Tiny ImageNet

def _tiny_image(path: str) -> np.ndarray:
    im = _decode_image(path, "a 64x64 Tiny ImageNet JPEG")
    if im.size != (64, 64):
        raise InvTransferError(f"{path} is {im.width}x{im.height}; Tiny ImageNet images are "
                               f"64x64.")
    return np.asarray(im, dtype=np.uint8)


def read_tinyimagenet(folder: str) -> RawDataset:
    """Read Tiny ImageNet (``tiny-imagenet-200/``: wnids.txt, words.txt, train/, val/).

    Training classes follow ``wnids.txt`` order and files are sorted by name. The official
    validation set (``val/images`` + ``val_annotations.txt``, in that file's order) is returned
    as the test set, because the labels of the official test set are not public. Class names
    are the first synonym in ``words.txt``. ``sources`` lists the text files and image folders.
    """
    base = folder if os.path.isfile(os.path.join(folder, "wnids.txt")) else \
        os.path.join(folder, "tiny-imagenet-200")
    base = os.path.abspath(base)
    wnids_path = os.path.join(base, "wnids.txt")
    if not os.path.isfile(wnids_path):
        raise InvTransferError(f"No Tiny ImageNet at {base}: missing wnids.txt; expected the "
                               f"unzipped tiny-imagenet-200/ folder (wnids.txt, words.txt, "
                               f"train/<wnid>/images/*.JPEG, val/images, "
                               f"val/val_annotations.txt).")
    ctx = _Context()
    wnids = [w.strip() for w in _read_bytes(wnids_path, "one WordNet id per line")
             .decode("utf-8", "replace").splitlines() if w.strip()]
    if len(set(wnids)) != len(wnids):
        raise InvTransferError(f"{wnids_path} lists a WordNet id twice.")
    ctx.used(wnids_path)
    words: dict[str, str] = {}
    words_path = os.path.join(base, "words.txt")
    if os.path.isfile(words_path):
        for line in _read_bytes(words_path, "wnid<TAB>names lines").decode(
                "utf-8", "replace").splitlines():
            wnid, _, syn = line.partition("\t")
            if wnid.strip() and syn.strip():
                words[wnid.strip()] = syn.split(",")[0].strip()
        ctx.used(words_path)
    names = [words.get(w, w) for w in wnids]
    index = {w: i for i, w in enumerate(wnids)}

    train_files: list[tuple[str, int]] = []
    for i, w in enumerate(wnids):
        d = os.path.join(base, "train", w, "images")
        if not os.path.isdir(d):
            raise InvTransferError(f"Missing {d}; every class in wnids.txt needs "
                                   f"train/<wnid>/images/*.JPEG.")
        files = sorted(f for f in os.listdir(d) if f.lower().endswith((".jpeg", ".jpg")))
        if not files:
            raise InvTransferError(f"{d} holds no JPEG images.")
        train_files += [(os.path.join(d, f), i) for f in files]
        ctx.used(d)
    ann_path = os.path.join(base, "val", "val_annotations.txt")
    val_files: list[tuple[str, int]] = []
    for n, line in enumerate(_read_bytes(ann_path, "file<TAB>wnid<TAB>bbox lines").decode(
            "utf-8", "replace").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2 or parts[1].strip() not in index:
            raise InvTransferError(f"{ann_path}, line {n}: expected file<TAB>wnid<TAB>bbox with "
                                   f"a wnid from wnids.txt, found {line!r}.")
        val_files.append((os.path.join(base, "val", "images", parts[0].strip()),
                          index[parts[1].strip()]))
    ctx.used(ann_path)
    ctx.used(os.path.join(base, "val", "images"))

    def load(items: list[tuple[str, int]]) -> tuple[np.ndarray, np.ndarray]:
        x = np.empty((len(items), 64, 64, 3), np.uint8)
        for j, (p, _) in enumerate(items):
            x[j] = _tiny_image(p)
        return x, np.asarray([c for _, c in items], np.int64)

    x_train, y_train = load(train_files)
    x_test, y_test = load(val_files)
    return _finish(x_train, y_train, x_test, y_test, names, ctx)


# --------------------------------------------------------------------------- finding data

def data_roots(data_root: str | None, source: str) -> list[str]:
    """Candidate data roots, in search order (absolute, without duplicates).

    The ``data_root`` option (if given), ``$INVTRANSFER_DATA`` (if set; several roots may be
    joined with ``os.pathsep``), ``./data`` under the current directory, and for Fashion-MNIST
    also ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``).
    """
    if source not in SOURCES:
        raise InvTransferError(f"Unknown data source {source!r}; expected one of "
                               f"{', '.join(SOURCES)}.{suggest(source, SOURCES)}")
    roots: list[str] = []
    if data_root:
        roots.append(str(data_root))
    env = os.environ.get("INVTRANSFER_DATA")
    if env:
        roots += [p for p in env.split(os.pathsep) if p]
    roots.append(os.path.join(os.getcwd(), "data"))
    if source == "fashion-mnist":
        roots.append("/usr/share/datasets/fashion-mnist")
    out: list[str] = []
    for r in roots:
        r = os.path.abspath(os.path.expanduser(r))
        if r not in out:
            out.append(r)
    return out


_ACCEPTED = {
    "cifar10": "cifar-10-batches-py/ (data_batch_1..5, test_batch, batches.meta), "
               "cifar-10-batches-bin/ (data_batch_1..5.bin, test_batch.bin, batches.meta.txt), "
               "cifar-10-python.tar.gz or cifar-10-binary.tar.gz",
    "cifar100": "cifar-100-python/ (train, test, meta), cifar-100-binary/ (train.bin, test.bin, "
                "fine_label_names.txt, coarse_label_names.txt), cifar-100-python.tar.gz or "
                "cifar-100-binary.tar.gz",
    "idx": "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
           "t10k-labels-idx1-ubyte (each .gz or raw)",
    "k49": ", ".join(K49_FILES.values()) + " (optional k49_classmap.csv)",
    "gtsrb": "GTSRB/Final_Training/Images/000NN/*.ppm + GT-000NN.csv and "
             "GTSRB/Final_Test/Images/*.ppm + GT-final_test.csv, or a pre-resized "
             "gtsrb<size>.npz (no ROI crop)",
    "tinyimagenet": "tiny-imagenet-200/ (wnids.txt, words.txt, train/, val/)",
}


def _locate(source: str, root: str, size: int, roi_crop: bool,
            searched: list[str]) -> tuple[str, str] | None:
    """First (kind, path) of ``source`` inside ``root`` or its usual sub-folders."""
    for d in [os.path.join(root, f) for f in FOLDERS[source]] + [root]:
        searched.append(d)
        if not os.path.isdir(d):
            continue
        if source in _CIFAR_SPECS:
            for cand in _cifar_candidates(d, _CIFAR_SPECS[source]):
                if _cifar_layout(cand, _CIFAR_SPECS[source]):
                    return "cifar", cand
        elif source in _IDX_NAMES:
            if _idx_path(d, IDX_FILES["x_train"]):
                return "idx", d
        elif source == "k49":
            if os.path.isfile(os.path.join(d, K49_FILES["x_train"])):
                return "k49", d
        elif source == "gtsrb":
            if os.path.isdir(os.path.join(d, "Final_Training", "Images")):
                return "gtsrb", d
        elif source == "tinyimagenet":
            if os.path.isfile(os.path.join(d, "wnids.txt")):
                return "tinyimagenet", d
    if source == "gtsrb" and not roi_crop:
        # A copy already resized to this size (like the project's gtsrb32.npz) stands in for
        # the originals: it was resized from the whole image, the same as roi_crop=False.
        cand = os.path.join(root, f"gtsrb{size}.npz")
        searched.append(cand)
        if os.path.isfile(cand):
            return "npz", cand
    return None


def load_source(source: str, data_root: str | None = None, *, npz_file: str | None = None,
                strict_checksums: bool = False, cifar100_labels: str = "fine",
                gtsrb_size: int = 32, gtsrb_roi_crop: bool = False) -> RawDataset:
    """Find ``source`` under the candidate data roots (:func:`data_roots`) and read it.

    For ``source="npz"``, ``npz_file`` names the file (absolute, relative to the current
    directory, or relative to a data root). Checksum mismatches are warnings in the result, or
    errors with ``strict_checksums``.
    """
    roots = data_roots(data_root, source)  # also validates the name
    raw = _load_from(roots, source, npz_file=npz_file, strict_checksums=strict_checksums,
                     cifar100_labels=cifar100_labels, gtsrb_size=gtsrb_size, gtsrb_roi_crop=gtsrb_roi_crop)
    root = os.path.abspath(os.path.expanduser(str(data_root))) if data_root else None
    if root and not os.path.isdir(root):
        # Found under another root: say so, or a mistyped data_root silently reads other data.
        raw.warnings.insert(0, f"data_root {root} does not exist (or is not a folder); {source} was read "
                               f"from {os.path.commonpath(raw.sources) if raw.sources else 'another root'} "
                               f"instead (searched in order: {', '.join(roots)}).")
    return raw


def _load_from(roots: list[str], source: str, *, npz_file: str | None, strict_checksums: bool,
               cifar100_labels: str, gtsrb_size: int, gtsrb_roi_crop: bool) -> RawDataset:
    if cifar100_labels not in _CIFAR_LABELS:
        raise InvTransferError(f"cifar100_labels must be 'fine' or 'coarse', got "
                               f"{cifar100_labels!r}.{suggest(cifar100_labels, _CIFAR_LABELS)}")
    if source == "gtsrb" and (not isinstance(gtsrb_size, int) or isinstance(gtsrb_size, bool)
                              or gtsrb_size < 1):
        raise InvTransferError(f"gtsrb_size must be a positive integer, got {gtsrb_size!r}.")
    if source == "npz":
        if not npz_file:
            raise InvTransferError("The 'npz' source needs npz_file: the path of an .npz with "
                                   "x_train, y_train, x_test, y_test (+ optional class_names).")
        npz_file = os.path.expanduser(npz_file)
        if os.path.isabs(npz_file):
            return read_npz(npz_file)  # its error names the missing file
        # A relative path: as the shell would (the current directory), then under each data root.
        cands = [os.path.abspath(npz_file)] + [os.path.join(r, npz_file) for r in roots]
        for cand in cands:
            if os.path.isfile(cand):
                return read_npz(cand)
        raise InvTransferError(f"npz_file {npz_file!r} not found; searched:\n  "
                               + "\n  ".join(dict.fromkeys(cands))
                               + "\nExpected an .npz with keys x_train, y_train, x_test, y_test; pass "
                                 "data_root=FOLDER or an absolute npz_file=/path/file.npz.")
    searched: list[str] = []
    for root in roots:
        hit = _locate(source, root, gtsrb_size, gtsrb_roi_crop, searched)
        if hit is None:
            continue
        kind, path = hit
        if kind == "cifar":
            ctx = _Context(strict_checksums)
            return _read_cifar(path, _CIFAR_SPECS[source], ctx, cifar100_labels)
        if kind == "idx":
            return read_idx_dataset(path, source, strict_checksums=strict_checksums)
        if kind == "k49":
            return read_k49(path, strict_checksums=strict_checksums)
        if kind == "gtsrb":
            return read_gtsrb(path, size=gtsrb_size, roi_crop=gtsrb_roi_crop)
        if kind == "npz":
            return read_npz(path)
        return read_tinyimagenet(path)
    accepted = _ACCEPTED["idx" if source in _IDX_NAMES else source]
    hint = (f"Run `invtransfer data download {source}` to fetch it into a data root"
            if source in DOWNLOADABLE else
            "Download the official GTSRB_Final_Training_Images.zip, GTSRB_Final_Test_Images.zip "
            "and GTSRB_Final_Test_GT.zip and unzip them into a data root")
    raise InvTransferError(
        f"Could not find {source} data. Searched:\n  " + "\n  ".join(dict.fromkeys(searched))
        + f"\nAccepted: {accepted}.\n{hint}, or pass data_root / set INVTRANSFER_DATA to the "
          f"folder that holds it.")
