"""IDX files (MNIST, Fashion-MNIST, KMNIST): ``train-images-idx3-ubyte[.gz]`` and its three siblings.

Each file is checked for its magic number, dimensions and exact data length; ``.gz`` or not is
decided by the gzip magic, not the name.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib

import numpy as np

from invtransfer.data.formats.common import (
    Download, RawDataset, Source, _check_counts, _check_labels, _Context, _finish, _read_bytes)
from invtransfer.errors import InvTransferError, suggest

FASHION_MNIST_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                       "Sneaker", "Bag", "Ankle boot"]
MNIST_NAMES = [str(i) for i in range(10)]
KMNIST_NAMES = ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"]
_IDX_NAMES = {"fashion-mnist": FASHION_MNIST_NAMES, "mnist": MNIST_NAMES, "kmnist": KMNIST_NAMES}


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



_GZ_FILES = tuple(stem + ".gz" for stem in IDX_FILES.values())


def _source(name: str, folders: tuple[str, ...], url: str, digests: dict[str, tuple[str, ...]]) -> Source:
    return Source(
        name, folders,
        detect=lambda d, o: d if _idx_path(d, IDX_FILES["x_train"]) else None,
        read=lambda path, o: read_idx_dataset(path, name, strict_checksums=o.strict_checksums),
        accepted="train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
                 "t10k-labels-idx1-ubyte (each .gz or raw)",
        digests=digests, download=Download(name, url, _GZ_FILES))


# Fashion-MNIST has two official byte streams: zalando's files and Debian's repackaging, which only
# strips the gzip name field. The ".../raw" folders are torchvision's layout.
SOURCES = (
    _source("fashion-mnist", ("fashion-mnist", "fashion_mnist", "FashionMNIST", "FashionMNIST/raw"),
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com", {
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
    }),
    # The MNIST host (yann.lecun.com) is often down, so its files come from PyTorch's S3 mirror
    # (same md5s).
    _source("mnist", ("mnist", "MNIST", "MNIST/raw"), "https://ossci-datasets.s3.amazonaws.com/mnist", {
        "train-images-idx3-ubyte.gz": ("f68b3c2dcbeaaa9fbdd348bbdeb94873",),
        "train-labels-idx1-ubyte.gz": ("d53e105ee54ea40749a09fcbcd1e9432",),
        "t10k-images-idx3-ubyte.gz": ("9fb629c4189551a2d022fa330f9573f3",),
        "t10k-labels-idx1-ubyte.gz": ("ec29112dd5afa0611ce80d1b7f02629c",),
    }),
    _source("kmnist", ("kmnist", "KMNIST", "KMNIST/raw"), "https://codh.rois.ac.jp/kmnist/dataset/kmnist", {
        "train-images-idx3-ubyte.gz": ("bdb82020997e1d708af4cf47b453dcf7",),
        "train-labels-idx1-ubyte.gz": ("e144d726b3acfaa3e44228e80efcd344",),
        "t10k-images-idx3-ubyte.gz": ("5c965bf0a639b31b8f53240b1b52f4d7",),
        "t10k-labels-idx1-ubyte.gz": ("7320c461ea6c1c855c0b718fb2a4b134",),
    }),
)
