"""GTSRB: the official ``Final_Training/Images/000NN/*.ppm`` + ``GT-000NN.csv`` and
``Final_Test/Images/*.ppm`` + ``GT-final_test.csv`` layout, resized (optionally ROI-cropped), or a
copy already resized to ``gtsrb<size>.npz``.
"""

from __future__ import annotations

import csv
import io
import os

import numpy as np

from invtransfer.data.formats.common import (
    Options, RawDataset, Source, _check_labels, _Context, _decode_image, _finish, _read_bytes)
from invtransfer.data.formats.npz import read_npz
from invtransfer.errors import InvTransferError

_GT_COLUMNS = ("Filename", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2", "ClassId")


def read_gt_csv(path: str) -> list[tuple[str, int, int, int, int, int]]:
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
        for fname, x1, y1, x2, y2, cid in read_gt_csv(gt):
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
    for fname, x1, y1, x2, y2, cid in read_gt_csv(test_csv):
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


def _read(path: str, o: Options) -> RawDataset:
    return read_npz(path) if path.endswith(".npz") else read_gtsrb(path, size=o.gtsrb_size, roi_crop=o.gtsrb_roi_crop)


def _resized_copy(root: str, o: Options) -> str | None:
    # A copy already resized to this size (like the project's gtsrb32.npz) stands in for the
    # originals: it was resized from the whole image, the same as roi_crop=False.
    return None if o.gtsrb_roi_crop else os.path.join(root, f"gtsrb{o.gtsrb_size}.npz")


SOURCE = Source(
    "gtsrb", ("GTSRB", "gtsrb"),
    detect=lambda d, o: d if os.path.isdir(os.path.join(d, "Final_Training", "Images")) else None,
    read=_read, root_file=_resized_copy,
    accepted="GTSRB/Final_Training/Images/000NN/*.ppm + GT-000NN.csv and "
             "GTSRB/Final_Test/Images/*.ppm + GT-final_test.csv, or a pre-resized "
             "gtsrb<size>.npz (no ROI crop)",
    obtain="Download the official GTSRB_Final_Training_Images.zip, GTSRB_Final_Test_Images.zip "
           "and GTSRB_Final_Test_GT.zip and unzip them into a data root")
