"""Download the official dataset files into a data root, verified against known checksums.

This module owns fetching: atomic verified writes and the Tiny ImageNet unzip. What to fetch (the
official URLs of each downloadable dataset and the folder they go to, chosen so
:func:`invtransfer.data.formats.load_source` finds them) and the checksums come from each source's
record (:data:`invtransfer.data.formats.REGISTRY`). Only ``urllib`` is used.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile

from invtransfer.data import formats
from invtransfer.errors import InvTransferError, suggest
from invtransfer.fileio import open_mode

__all__ = ["DOWNLOADABLE", "OFFICIAL", "download"]

# name -> (folder under the data root, official base URL, file names), from the sources' records
# (:data:`invtransfer.data.formats.REGISTRY`).
OFFICIAL: dict[str, tuple[str, str, tuple[str, ...]]] = {
    name: (s.download.folder, s.download.url, s.download.files) for name, s in formats.REGISTRY.items() if s.download}

DOWNLOADABLE = tuple(OFFICIAL)

_CHUNK = 1 << 20


def _expected(name: str, filename: str) -> tuple[str, ...]:
    return tuple(formats.KNOWN_DIGESTS.get(name, {}).get(filename, ()))


def _algo(digest: str) -> str:
    return "md5" if len(digest) == 32 else "sha256"


def _matches(digests: dict[str, str], expected: tuple[str, ...]) -> bool:
    return any(digests.get(_algo(d)) == d.lower() for d in expected)


def _describe(digests: dict[str, str], expected: tuple[str, ...]) -> tuple[str, str]:
    exp = " or ".join(f"{_algo(d)} {d}" for d in expected)
    got = ", ".join(f"{a} {digests[a]}" for a in sorted({_algo(d) for d in expected}))
    return exp, got


def _fetch(url: str, folder: str, filename: str, algos: set[str]) -> tuple[str, dict[str, str]]:
    """Stream ``url`` into a temp file in ``folder``; return its path and digests."""
    hashes = {a: hashlib.new(a) for a in algos}
    fd, tmp = tempfile.mkstemp(prefix=f".{filename}.", suffix=".part", dir=folder)
    try:
        os.fchmod(fd, open_mode(os.path.join(folder, filename)))  # mkstemp's 0600 would survive the rename
        with os.fdopen(fd, "wb") as out:
            with urllib.request.urlopen(url, timeout=60) as resp:
                total = int(resp.headers.get("Content-Length") or 0)
                done = 0
                while chunk := resp.read(_CHUNK):
                    out.write(chunk)
                    for h in hashes.values():
                        h.update(chunk)
                    done += len(chunk)
            if total and done != total:
                raise InvTransferError(f"Download of {url} stopped after {done} of {total} bytes; "
                                       f"try again.")
    except BaseException as e:
        os.unlink(tmp)
        if isinstance(e, (urllib.error.URLError, http.client.HTTPException, OSError, ValueError)):
            raise InvTransferError(f"Could not download {url}: {e}. Check the network, or pass "
                                   f"base_url / set INVTRANSFER_DOWNLOAD_BASE to a mirror.") from e
        raise
    print(f"  {done / 1e6:.1f} MB", file=sys.stderr)
    return tmp, {a: h.hexdigest() for a, h in hashes.items()}


def _unzip(archive: str, root: str, target: str, force: bool) -> None:
    """Unpack ``archive`` into ``root`` via a temporary folder, so a failure leaves no half tree."""
    if os.path.isdir(target) and not force:
        return
    tmp = tempfile.mkdtemp(prefix=".unzip-", dir=root)
    try:
        with zipfile.ZipFile(archive) as z:
            for member in z.namelist():
                parts = member.replace("\\", "/").split("/")
                if member.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
                    raise InvTransferError(f"{archive} contains the unsafe path {member!r}; "
                                           f"refusing to unpack it.")
            z.extractall(tmp)
        unpacked = os.path.join(tmp, os.path.basename(target))
        if not os.path.isdir(unpacked):
            raise InvTransferError(f"{archive} does not contain {os.path.basename(target)}/.")
        if os.path.isdir(target):
            shutil.rmtree(target)
        os.replace(unpacked, target)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise InvTransferError(f"Could not unpack {archive} ({e}); delete it and download "
                               f"again.") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def download(name: str, data_root: str, *, base_url: str | None = None,
             force: bool = False) -> list[str]:
    """Download the official files of ``name`` into ``<data_root>/<folder>/``; return their paths.

    Each file is fetched from ``f"{base}/{filename}"``, where ``base`` is ``base_url``, else
    ``$INVTRANSFER_DOWNLOAD_BASE``, else the official host. It is written to a temporary file
    next to its destination, its checksum is verified, and only then is it moved into place.
    Files already present with the right checksum are skipped unless ``force``. A file with no
    known checksum is kept with a warning. Tiny ImageNet is unzipped into the data root.
    """
    if name not in OFFICIAL:
        if name in formats.SOURCES:
            raise InvTransferError(f"{name!r} cannot be downloaded by invtransfer; place its files "
                                   f"in a data root yourself. Downloadable: "
                                   f"{', '.join(OFFICIAL)}.")
        raise InvTransferError(f"Unknown dataset {name!r}; downloadable: {', '.join(OFFICIAL)}."
                               f"{suggest(name, OFFICIAL)}")
    sub, official, filenames = OFFICIAL[name]
    base = (base_url or os.environ.get("INVTRANSFER_DOWNLOAD_BASE") or official).rstrip("/")
    root = os.path.abspath(os.path.expanduser(data_root))
    folder = os.path.join(root, sub) if sub else root
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise InvTransferError(f"Cannot create {folder}: {e}.") from e
    paths = []
    fetched = False
    for filename in filenames:
        url = f"{base}/{filename}"
        dest = os.path.join(folder, filename)
        expected = _expected(name, filename)
        if os.path.isfile(dest) and not force:
            if not expected:
                print(f"{dest}: present (no known checksum), kept", file=sys.stderr)
                paths.append(dest)
                continue
            have = {a: formats.file_digest(dest, a) for a in {_algo(d) for d in expected}}
            if _matches(have, expected):
                print(f"{dest}: present, checksum ok", file=sys.stderr)
                paths.append(dest)
                continue
            print(f"{dest}: present but checksum differs, downloading again", file=sys.stderr)
        print(f"downloading {url} -> {dest}", file=sys.stderr)
        tmp, got = _fetch(url, folder, filename, {_algo(d) for d in expected} or {"sha256"})
        if expected and not _matches(got, expected):
            os.unlink(tmp)
            exp, found = _describe(got, expected)
            raise InvTransferError(f"Checksum mismatch for {url}: expected {exp}, got {found}. "
                                   f"The download was deleted; the server (or a mirror) sent a "
                                   f"different or damaged file.")
        if not expected:
            warnings.warn(f"No known checksum for {filename} ({name}); kept {dest} unverified "
                          f"(sha256 {got['sha256']}).", stacklevel=2)
        os.replace(tmp, dest)
        fetched = True
        paths.append(dest)
    if name == "tinyimagenet":
        target = os.path.join(root, "tiny-imagenet-200")
        _unzip(paths[0], root, target, force or fetched)
        paths.append(target)
    return paths
