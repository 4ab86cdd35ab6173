"""Tests for invtransfer.data.download against a local http.server on 127.0.0.1 (no network)."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import os
import struct
import threading
import zipfile

import numpy as np
import pytest
from PIL import Image

from invtransfer.data import download as dl
from invtransfer.data import formats
from invtransfer.data.download import download
from invtransfer.data.formats import load_source
from invtransfer.errors import InvTransferError

IDX = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
       "t10k-labels-idx1-ubyte.gz")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def log_message(self, *args) -> None:  # keep the test output clean
        pass

    def do_GET(self) -> None:
        _Quiet.requests.append(self.path)
        super().do_GET()


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A folder served over HTTP on 127.0.0.1; yields (folder, base URL)."""
    monkeypatch.delenv("INVTRANSFER_DOWNLOAD_BASE", raising=False)
    monkeypatch.delenv("INVTRANSFER_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "www"
    folder.mkdir()
    handler = functools.partial(_Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    _Quiet.requests = []
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def idx_gz(a: np.ndarray) -> bytes:
    head = struct.pack(">I", 0x800 | a.ndim) + struct.pack(f">{a.ndim}I", *a.shape)
    return gzip.compress(head + a.tobytes())


def serve_mnist(folder, monkeypatch) -> dict[str, bytes]:
    """Small real IDX files; the checksum table is pointed at their md5s."""
    rng = np.random.default_rng(1)
    files = {
        IDX[0]: idx_gz(rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)),
        IDX[1]: idx_gz(np.arange(6, dtype=np.uint8)),
        IDX[2]: idx_gz(rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)),
        IDX[3]: idx_gz(np.array([3, 1, 2], np.uint8)),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    monkeypatch.setitem(formats.KNOWN_DIGESTS, "mnist",
                        {n: (hashlib.md5(d).hexdigest(),) for n, d in files.items()})
    return files


def test_download_happy_path_then_skip_then_force(served, tmp_path, monkeypatch):
    www, base = served
    files = serve_mnist(www, monkeypatch)
    root = tmp_path / "root"
    paths = download("mnist", str(root), base_url=base)
    assert paths == [str(root / "mnist" / n) for n in IDX]
    for n, data in files.items():
        assert (root / "mnist" / n).read_bytes() == data
    assert sorted(os.listdir(root / "mnist")) == sorted(IDX)  # no temp files left
    mask = os.umask(0o022)
    os.umask(mask)
    # the umask's permissions, as a plain open() gives (the temporary file's 0600 used to stay)
    assert {os.stat(p).st_mode & 0o777 for p in paths} == {0o666 & ~mask}
    ds = load_source("mnist", str(root), strict_checksums=True)
    assert ds.x_train.shape == (6, 28, 28, 1) and ds.warnings == []
    np.testing.assert_array_equal(ds.y_test, [3, 1, 2])

    _Quiet.requests = []
    assert download("mnist", str(root), base_url=base) == paths
    assert _Quiet.requests == []  # present with the right checksum: skipped
    download("mnist", str(root), base_url=base, force=True)
    assert sorted(_Quiet.requests) == sorted(f"/{n}" for n in IDX)

    # A damaged local copy is fetched again; the mirror comes from the environment.
    (root / "mnist" / IDX[1]).write_bytes(b"damaged")
    _Quiet.requests = []
    monkeypatch.setenv("INVTRANSFER_DOWNLOAD_BASE", base + "/")
    download("mnist", str(root))
    assert _Quiet.requests == [f"/{IDX[1]}"]
    assert (root / "mnist" / IDX[1]).read_bytes() == files[IDX[1]]


def test_checksum_mismatch_leaves_nothing(served, tmp_path, monkeypatch):
    www, base = served
    serve_mnist(www, monkeypatch)
    wrong = "0" * 32
    monkeypatch.setitem(formats.KNOWN_DIGESTS["mnist"], IDX[2], (wrong,))
    root = tmp_path / "root"
    with pytest.raises(InvTransferError) as err:
        download("mnist", str(root), base_url=base)
    msg = str(err.value)
    actual = hashlib.md5((www / IDX[2]).read_bytes()).hexdigest()
    assert f"{base}/{IDX[2]}" in msg and wrong in msg and actual in msg
    assert not (root / "mnist" / IDX[2]).exists()
    assert sorted(os.listdir(root / "mnist")) == sorted(IDX[:2])  # no .part file either


def test_unreachable_and_missing_urls(served, tmp_path, monkeypatch):
    www, base = served
    serve_mnist(www, monkeypatch)
    os.remove(www / IDX[0])
    with pytest.raises(InvTransferError, match=rf"Could not download {base}/{IDX[0]}.*404"):
        download("mnist", str(tmp_path / "r1"), base_url=base)
    # Port 1 on localhost: nothing listens there, so the connection is refused at once.
    with pytest.raises(InvTransferError, match=rf"Could not download http://127.0.0.1:1/{IDX[0]}"):
        download("mnist", str(tmp_path / "r2"), base_url="http://127.0.0.1:1")
    assert os.listdir(tmp_path / "r1" / "mnist") == []
    assert os.listdir(tmp_path / "r2" / "mnist") == []


def test_unknown_checksum_warns_and_keeps(served, tmp_path, monkeypatch):
    www, base = served
    files = serve_mnist(www, monkeypatch)
    monkeypatch.setitem(formats.KNOWN_DIGESTS, "mnist", {})
    with pytest.warns(UserWarning, match="No known checksum for") as record:
        download("mnist", str(tmp_path / "root"), base_url=base)
    assert len(record) == 4 and "train-images-idx3-ubyte.gz" in str(record[0].message)
    assert (tmp_path / "root" / "mnist" / IDX[0]).read_bytes() == files[IDX[0]]


def test_unknown_or_undownloadable_names(tmp_path):
    with pytest.raises(InvTransferError, match="Did you mean 'kmnist'"):
        download("kmnsit", str(tmp_path))
    with pytest.raises(InvTransferError, match="'gtsrb' cannot be downloaded"):
        download("gtsrb", str(tmp_path))
    assert set(dl.DOWNLOADABLE) == set(dl.OFFICIAL) == set(formats.DOWNLOADABLE)


def test_tinyimagenet_is_unzipped_into_the_root(served, tmp_path, monkeypatch):
    www, base = served
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("tiny-imagenet-200/wnids.txt", "n01\n")
        z.writestr("tiny-imagenet-200/words.txt", "n01\tgoldfish, Carassius auratus\n")
        jpeg = io.BytesIO()
        Image.new("RGB", (64, 64), (10, 200, 30)).save(jpeg, format="JPEG")
        z.writestr("tiny-imagenet-200/train/n01/images/n01_0.JPEG", jpeg.getvalue())
        z.writestr("tiny-imagenet-200/val/images/val_0.JPEG", jpeg.getvalue())
        z.writestr("tiny-imagenet-200/val/val_annotations.txt", "val_0.JPEG\tn01\t0\t0\t9\t9\n")
    (www / "tiny-imagenet-200.zip").write_bytes(buf.getvalue())
    monkeypatch.setitem(formats.KNOWN_DIGESTS, "tinyimagenet",
                        {"tiny-imagenet-200.zip": (hashlib.md5(buf.getvalue()).hexdigest(),)})
    root = tmp_path / "root"
    paths = download("tinyimagenet", str(root), base_url=base)
    assert paths == [str(root / "tiny-imagenet-200.zip"), str(root / "tiny-imagenet-200")]
    ds = load_source("tinyimagenet", str(root))
    assert ds.class_names == ["goldfish"] and ds.x_train.shape == (1, 64, 64, 3)
    assert sorted(os.listdir(root)) == ["tiny-imagenet-200", "tiny-imagenet-200.zip"]


def test_zip_with_unsafe_paths_is_refused(served, tmp_path, monkeypatch):
    www, base = served
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("tiny-imagenet-200/wnids.txt", "n01\n")
        z.writestr("../escaped.txt", "x")
    (www / "tiny-imagenet-200.zip").write_bytes(buf.getvalue())
    monkeypatch.setitem(formats.KNOWN_DIGESTS, "tinyimagenet",
                        {"tiny-imagenet-200.zip": (hashlib.md5(buf.getvalue()).hexdigest(),)})
    with pytest.raises(InvTransferError, match="unsafe path '../escaped.txt'"):
        download("tinyimagenet", str(tmp_path / "root"), base_url=base)
    assert not (tmp_path / "escaped.txt").exists()
    assert sorted(os.listdir(tmp_path / "root")) == ["tiny-imagenet-200.zip"]
