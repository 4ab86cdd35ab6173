"""The ``.npz`` formats: a generic npz (``x_train``, ``y_train``, ``x_test``, ``y_test``, optional
``class_names``) and Kuzushiji-49 (four npz files, each array under ``arr_0``). Pickled objects
are never loaded.
"""

from __future__ import annotations

import csv
import io
import os

import numpy as np

from invtransfer.data.formats.common import (
    Download, RawDataset, Source, _check_counts, _check_labels, _check_nonempty, _Context, _finish, _read_bytes)
from invtransfer.errors import InvTransferError

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

def find_npz(npz_file: str, roots: list[str]) -> RawDataset:
    """Read the generic npz named by ``npz_file``: an absolute path, else looked for in the current
    directory (as the shell would), then under each data root in ``roots``."""
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


K49 = Source(
    "k49", ("k49", "K49"),
    detect=lambda d, o: d if os.path.isfile(os.path.join(d, K49_FILES["x_train"])) else None,
    read=lambda path, o: read_k49(path, strict_checksums=o.strict_checksums),
    accepted=", ".join(K49_FILES.values()) + " (optional k49_classmap.csv)",
    digests={
        "k49-train-imgs.npz": ("7ac088b20481cf51dcd01ceaab89d821",),
        "k49-train-labels.npz": ("44a8e1b893f81e63ff38d73cad420f7a",),
        "k49-test-imgs.npz": ("d352e201d846ce6b94f42c990966f374",),
        "k49-test-labels.npz": ("4da6f7a62e67a832d5eb1bd85c5ee448",),
    },
    download=Download("k49", "https://codh.rois.ac.jp/kmnist/dataset/k49", tuple(K49_FILES.values())))

#: A generic npz is named by the npz_file option (:func:`find_npz`), not found by its folder.
NPZ = Source("npz", (), detect=None, read=None)
