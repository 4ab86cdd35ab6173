"""Readers of the official on-disk formats of the datasets invtransfer works with, and the registry
that finds them.

Every source is one :class:`~invtransfer.data.formats.common.Source` record in :data:`REGISTRY`:
its usual folders, how to detect it in a folder, its reader, its known official checksums (and
known non-official copies) and where ``invtransfer data download`` fetches it. One module per
format family holds the readers and the records:

* :mod:`~invtransfer.data.formats.cifar`: CIFAR-10/100 (python pickles, binary batches, and the
  official ``.tar.gz`` archives read in place);
* :mod:`~invtransfer.data.formats.idx`: MNIST, Fashion-MNIST, KMNIST (IDX, ``.gz`` or raw);
* :mod:`~invtransfer.data.formats.npz`: Kuzushiji-49 and a generic ``.npz``;
* :mod:`~invtransfer.data.formats.gtsrb`: the GTSRB ``.ppm`` + CSV layout (or a resized npz);
* :mod:`~invtransfer.data.formats.tinyimagenet`: the Tiny ImageNet folder layout;
* :mod:`~invtransfer.data.formats.common`: the uniform :class:`RawDataset` (uint8 images
  ``(N, H, W, C)`` that always have a channel axis, int64 labels, class names) and the integrity
  policy: a file that is not the official one (another checksum, another number of records, a
  known modified copy) is a warning in :attr:`RawDataset.warnings`, or an error with
  ``strict_checksums=True``. Every truncated, corrupt or unparsable file is an
  :class:`~invtransfer.errors.InvTransferError` naming the file and what was expected.

Finding: :func:`data_roots` lists the candidate data roots and :func:`load_source` searches them
for a source's usual folders and files. This package does not download (see
:mod:`invtransfer.data.download`), build long-tailed subsets or transform images.
"""

from __future__ import annotations

import os

from invtransfer.data.formats import cifar, gtsrb, idx, npz, tinyimagenet
from invtransfer.data.formats.cifar import parse_cifar_bin, read_cifar10, read_cifar100, restricted_pickle_loads
from invtransfer.data.formats.common import (
    KNOWN_COPIES, KNOWN_DIGESTS, Options, RawDataset, Source, file_digest)
from invtransfer.data.formats.gtsrb import read_gtsrb
from invtransfer.data.formats.idx import parse_idx, read_idx, read_idx_dataset
from invtransfer.data.formats.npz import read_k49, read_npz
from invtransfer.data.formats.tinyimagenet import read_tinyimagenet
from invtransfer.errors import InvTransferError, suggest

__all__ = [
    "RawDataset", "Source", "REGISTRY", "SOURCES", "FOLDERS", "DOWNLOADABLE", "KNOWN_DIGESTS", "KNOWN_COPIES",
    "data_roots", "load_source", "read_cifar10", "read_cifar100", "parse_cifar_bin", "restricted_pickle_loads",
    "read_idx", "parse_idx", "read_idx_dataset", "read_k49", "read_npz", "read_gtsrb",
    "read_tinyimagenet", "file_digest",
]

#: Every source, by name, in the order they are listed to users.
REGISTRY: dict[str, Source] = {s.name: s for s in (
    *cifar.SOURCES, *idx.SOURCES, npz.K49, gtsrb.SOURCE, tinyimagenet.SOURCE, npz.NPZ)}
SOURCES = tuple(REGISTRY)
#: Sub-folders of a data root where a source usually lives. The root itself is searched too
#: (after these), so a data root may also point straight at a dataset's folder, as Debian's
#: /usr/share/datasets/fashion-mnist does.
FOLDERS: dict[str, tuple[str, ...]] = {name: s.folders for name, s in REGISTRY.items()}
DOWNLOADABLE = tuple(name for name, s in REGISTRY.items() if s.download)
KNOWN_DIGESTS.update({name: s.digests for name, s in REGISTRY.items() if s.digests})
KNOWN_COPIES.update({name: s.copies for name, s in REGISTRY.items() if s.copies})


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


def load_source(source: str, data_root: str | None = None, *, npz_file: str | None = None,
                strict_checksums: bool = False, cifar100_labels: str = "fine",
                gtsrb_size: int = 32, gtsrb_roi_crop: bool = False) -> RawDataset:
    """Find ``source`` under the candidate data roots (:func:`data_roots`) and read it.

    For ``source="npz"``, ``npz_file`` names the file (absolute, relative to the current
    directory, or relative to a data root). Checksum mismatches are warnings in the result, or
    errors with ``strict_checksums``. A ``data_root`` that does not exist is a warning naming
    where the data was read from instead.
    """
    roots = data_roots(data_root, source)  # also validates the name
    raw = _load_from(roots, REGISTRY[source], npz_file, Options(strict_checksums, cifar100_labels, gtsrb_size,
                                                                 gtsrb_roi_crop))
    root = os.path.abspath(os.path.expanduser(str(data_root))) if data_root else None
    if root and not os.path.isdir(root):
        # Found under another root: say so, or a mistyped data_root silently reads other data.
        raw.warnings.insert(0, f"data_root {root} does not exist (or is not a folder); {source} was read "
                               f"from {os.path.commonpath(raw.sources) if raw.sources else 'another root'} "
                               f"instead (searched in order: {', '.join(roots)}).")
    return raw


def _load_from(roots: list[str], source: Source, npz_file: str | None, o: Options) -> RawDataset:
    if o.cifar100_labels not in cifar._CIFAR_LABELS:
        raise InvTransferError(f"cifar100_labels must be 'fine' or 'coarse', got "
                               f"{o.cifar100_labels!r}.{suggest(o.cifar100_labels, cifar._CIFAR_LABELS)}")
    if source.name == "gtsrb" and (not isinstance(o.gtsrb_size, int) or isinstance(o.gtsrb_size, bool)
                                   or o.gtsrb_size < 1):
        raise InvTransferError(f"gtsrb_size must be a positive integer, got {o.gtsrb_size!r}.")
    if source.detect is None:  # the generic npz: named by npz_file, not found by its folder
        if not npz_file:
            raise InvTransferError("The 'npz' source needs npz_file: the path of an .npz with "
                                   "x_train, y_train, x_test, y_test (+ optional class_names).")
        return npz.find_npz(npz_file, roots)
    searched: list[str] = []
    for root in roots:
        for d in [os.path.join(root, f) for f in source.folders] + [root]:
            searched.append(d)
            path = source.detect(d, o) if os.path.isdir(d) else None
            if path is not None:
                return source.read(path, o)
        cand = source.root_file(root, o) if source.root_file else None
        if cand is not None:
            searched.append(cand)
            if os.path.isfile(cand):
                return source.read(cand, o)
    hint = (f"Run `invtransfer data download {source.name}` to fetch it into a data root" if source.download else
            source.obtain)
    raise InvTransferError(
        f"Could not find {source.name} data. Searched:\n  " + "\n  ".join(dict.fromkeys(searched))
        + f"\nAccepted: {source.accepted}.\n{hint}, or pass data_root / set INVTRANSFER_DATA to the "
          f"folder that holds it.")
