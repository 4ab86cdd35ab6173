"""Tiny ImageNet: the official ``tiny-imagenet-200/`` folder layout; its validation set serves as the
test set (the official test labels are not public)."""

from __future__ import annotations

import os

import numpy as np

from invtransfer.data.formats.common import Download, RawDataset, Source, _Context, _decode_image, _finish, _read_bytes
from invtransfer.errors import InvTransferError

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


SOURCE = Source(
    "tinyimagenet", ("tiny-imagenet-200", "tinyimagenet"),
    detect=lambda d, o: d if os.path.isfile(os.path.join(d, "wnids.txt")) else None,
    read=lambda path, o: read_tinyimagenet(path),
    accepted="tiny-imagenet-200/ (wnids.txt, words.txt, train/, val/)",
    digests={"tiny-imagenet-200.zip": ("90528d7ca1a48142e341f4ef8d21d0de",)},
    # The zip unpacks to tiny-imagenet-200/, so it goes straight into the data root.
    download=Download("", "http://cs231n.stanford.edu", ("tiny-imagenet-200.zip",)))
