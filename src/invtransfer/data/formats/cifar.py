"""CIFAR-10 and CIFAR-100: the python pickles, the binary batches, and the official ``.tar.gz``
archives of either, read in place (never unpacked).

Pickles go through a restricted unpickler that can only build numpy arrays. Every batch is
checked against its official number of images, since a binary batch cut at a record boundary
parses cleanly.
"""

from __future__ import annotations

import importlib
import io
import os
import pickle
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from invtransfer.data.formats.common import (
    Download, Options, RawDataset, Source, _check_counts, _check_labels, _check_nonempty, _Context, _finish,
    _read_bytes)
from invtransfer.errors import InvTransferError, suggest

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck"]

# Copies known NOT to be the official files, by file name: sha256 -> what the file
# is. No official digests are published for the CIFAR binary batches, so without this entry the
# partly-JPEG CIFAR-10 copy of the project's machines (its record counts are right) would pass
# for the official data; with it, it is named (a warning, or an error with strict_checksums).
_PARTLY_JPEG_CIFAR10 = (
    "the partly-JPEG CIFAR-10 copy that materialize_cifar10.py writes (original training order and "
    "labels; training images 4,000-49,999 and the test images outside a lossless subset went "
    "through JPEG at quality ~75, mean PSNR 30.5 dB; the test batch is ordered by class)")
_CIFAR10_COPIES = {name: {digest: _PARTLY_JPEG_CIFAR10} for name, digest in (
    ("data_batch_1.bin", "333949a6a78a1f4add8a2ea152797cf44ba138082dc574c743bc4260fd023c11"),
    ("data_batch_2.bin", "106eeaad9f1fa7a999292fdafe68ee909080f58aee038a76994035aedf40ba26"),
    ("data_batch_3.bin", "99cb88ba00fca88bf28c517a74307b6b78a346c6ea747a561cb8e660c787d5cb"),
    ("data_batch_4.bin", "76b482bc3bb79c0370e48ea71bb6e4f567a3770d224dc09a9ddc8cfa2369f294"),
    ("data_batch_5.bin", "490f5ead4f04a3eb71d5898eb551e0d8d2c592feb778fb9b109a006b3f231495"),
    ("test_batch.bin", "fd64db5246e2bf26d52ea111aaf57946dc109f4dfa0750c3d14099ffa36839cd"))}


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


SPECS = {
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
    return _read_cifar(path, SPECS["cifar10"], _Context(strict_checksums), "fine")


def read_cifar100(path: str, *, labels: str = "fine", strict_checksums: bool = False) -> RawDataset:
    """Read CIFAR-100 (``cifar-100-python/``, ``cifar-100-binary/`` or their archives).

    ``labels`` picks the 100 "fine" or the 20 "coarse" classes.
    """
    if labels not in _CIFAR_LABELS:
        raise InvTransferError(f"cifar100_labels must be 'fine' or 'coarse', got {labels!r}."
                               f"{suggest(labels, _CIFAR_LABELS)}")
    return _read_cifar(path, SPECS["cifar100"], _Context(strict_checksums), labels)


def _source(name: str, folders: tuple[str, ...], accepted: str, digests: dict[str, tuple[str, ...]],
            copies: dict[str, dict[str, str]] | None = None) -> Source:
    spec = SPECS[name]

    def detect(d: str, o: Options) -> str | None:
        return next((cand for cand in _cifar_candidates(d, spec) if _cifar_layout(cand, spec)), None)

    return Source(name, folders, detect=detect,
                  read=lambda path, o: _read_cifar(path, spec, _Context(o.strict_checksums), o.cifar100_labels),
                  accepted=accepted, digests=digests, copies=copies or {},
                  download=Download(name, "https://www.cs.toronto.edu/~kriz", (spec.py_tar,)))


SOURCES = (
    _source("cifar10", ("cifar10", "cifar-10", "CIFAR10"),
            "cifar-10-batches-py/ (data_batch_1..5, test_batch, batches.meta), "
            "cifar-10-batches-bin/ (data_batch_1..5.bin, test_batch.bin, batches.meta.txt), "
            "cifar-10-python.tar.gz or cifar-10-binary.tar.gz", {
        "cifar-10-python.tar.gz": ("c58f30108f718f92721af3b95e74349a",),
        "cifar-10-binary.tar.gz": ("c32a1d4ab5d03f1284b67883e8d87530",),
        "data_batch_1": ("c99cafc152244af753f735de768cd75f",),
        "data_batch_2": ("d4bba439e000b95fd0a9bffe97cbabec",),
        "data_batch_3": ("54ebc095f3ab1f0389bbae665268c751",),
        "data_batch_4": ("634d18415352ddfa80567beed471001a",),
        "data_batch_5": ("482c414d41f54cd18b22e5b47cb7c3cb",),
        "test_batch": ("40351d587109b95175f43aff81a1287e",),
        "batches.meta": ("5ff9c542aee3614f3951f8cda6e48888",),
    }, _CIFAR10_COPIES),
    _source("cifar100", ("cifar100", "cifar-100", "CIFAR100"),
            "cifar-100-python/ (train, test, meta), cifar-100-binary/ (train.bin, test.bin, "
            "fine_label_names.txt, coarse_label_names.txt), cifar-100-python.tar.gz or "
            "cifar-100-binary.tar.gz", {
        "cifar-100-python.tar.gz": ("eb9058c3a382ffc7106e4002c42a8d85",),
        "cifar-100-binary.tar.gz": ("03b5dce01913d631647c71ecec9e9cb8",),
        "train": ("16019d7e3df5f24257cddd939b257f8d",),
        "test": ("f0ef6b0ae62326f3e7ffdfab6717acfc",),
        "meta": ("7973b15100ade9c7d40fb424638fde48",),
    }),
)
