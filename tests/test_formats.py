"""Tests for invtransfer.data.formats: every official format round-trips exactly, data roots
resolve in order, and every bad input is an InvTransferError naming the file."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import struct
import tarfile
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from invtransfer.data import formats
from invtransfer.data.formats import (
    RawDataset, data_roots, load_source, parse_cifar_bin, read_cifar10, read_cifar100, read_gtsrb,
    read_idx, read_idx_dataset, read_k49, read_npz, read_tinyimagenet, restricted_pickle_loads)
from invtransfer.errors import InvTransferError

RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """No user data root leaks in: no $INVTRANSFER_DATA, and ./data is inside tmp_path."""
    monkeypatch.delenv("INVTRANSFER_DATA", raising=False)
    monkeypatch.chdir(tmp_path)


def images(n: int, h: int = 32, w: int = 32, c: int | None = 3) -> np.ndarray:
    shape = (n, h, w) if c is None else (n, h, w, c)
    return RNG.integers(0, 256, size=shape, dtype=np.uint8)


def check(ds: RawDataset, x_train, y_train, x_test, y_test, names) -> None:
    assert ds.x_train.dtype == np.uint8 and ds.x_train.ndim == 4
    assert ds.y_train.dtype == np.int64 and ds.y_test.dtype == np.int64
    if x_train.ndim == 3:
        x_train, x_test = x_train[..., None], x_test[..., None]
    np.testing.assert_array_equal(ds.x_train, x_train)
    np.testing.assert_array_equal(ds.x_test, x_test)
    np.testing.assert_array_equal(ds.y_train, y_train)
    np.testing.assert_array_equal(ds.y_test, y_test)
    assert ds.class_names == list(names)
    assert all(os.path.isabs(s) for s in ds.sources) and ds.sources


# ----------------------------------------------------------------------------- writers

def planes(x: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) -> (N, 3072) as R, G, B planes, row-major (the CIFAR layout)."""
    return x.transpose(0, 3, 1, 2).reshape(len(x), 3072)


def cifar_data(c100: bool = False):
    n_train = [3, 2, 2, 2, 3] if not c100 else [12]
    parts = [(images(n), RNG.integers(0, 100 if c100 else 10, n)) for n in n_train]
    xt, yt = images(5), RNG.integers(0, 100 if c100 else 10, 5)
    return parts, (xt, yt)


def write_cifar10_py(folder, parts, test) -> list[str]:
    d = os.path.join(folder, "cifar-10-batches-py")
    os.makedirs(d)
    # Bytes keys and protocol 2, like the official Python 2 pickles.
    for i, (x, y) in enumerate(parts, 1):
        with open(os.path.join(d, f"data_batch_{i}"), "wb") as f:
            pickle.dump({b"batch_label": b"b", b"labels": [int(v) for v in y],
                         b"data": planes(x), b"filenames": [b"f"] * len(y)}, f, protocol=2)
    with open(os.path.join(d, "test_batch"), "wb") as f:
        pickle.dump({b"labels": [int(v) for v in test[1]], b"data": planes(test[0])}, f,
                    protocol=2)
    names = [f"class{i}" for i in range(10)]
    with open(os.path.join(d, "batches.meta"), "wb") as f:
        pickle.dump({b"label_names": [n.encode() for n in names], b"num_vis": 3072}, f,
                    protocol=2)
    return names


def cifar_records(x, *labels) -> bytes:
    cols = [np.asarray(lab, np.uint8)[:, None] for lab in labels]
    return np.concatenate(cols + [planes(x)], axis=1).tobytes()


def write_cifar10_bin(folder, parts, test) -> list[str]:
    d = os.path.join(folder, "cifar-10-batches-bin")
    os.makedirs(d)
    for i, (x, y) in enumerate(parts, 1):
        with open(os.path.join(d, f"data_batch_{i}.bin"), "wb") as f:
            f.write(cifar_records(x, y))
    with open(os.path.join(d, "test_batch.bin"), "wb") as f:
        f.write(cifar_records(*test))
    names = [f"bin{i}" for i in range(10)]
    with open(os.path.join(d, "batches.meta.txt"), "w") as f:
        f.write("\n".join(names) + "\n\n")
    return names


def write_cifar100(folder, x, fine, xt, fine_t, layout: str):
    coarse, coarse_t = fine // 5, fine_t // 5
    fine_names = [f"fine{i}" for i in range(100)]
    coarse_names = [f"coarse{i}" for i in range(20)]
    if layout == "py":
        d = os.path.join(folder, "cifar-100-python")
        os.makedirs(d)
        for name, xx, f_, c_ in (("train", x, fine, coarse), ("test", xt, fine_t, coarse_t)):
            with open(os.path.join(d, name), "wb") as f:
                pickle.dump({b"data": planes(xx), b"fine_labels": [int(v) for v in f_],
                             b"coarse_labels": [int(v) for v in c_]}, f, protocol=2)
        with open(os.path.join(d, "meta"), "wb") as f:
            pickle.dump({b"fine_label_names": [n.encode() for n in fine_names],
                         b"coarse_label_names": [n.encode() for n in coarse_names]}, f,
                        protocol=2)
    else:
        d = os.path.join(folder, "cifar-100-binary")
        os.makedirs(d)
        for name, xx, f_, c_ in (("train", x, fine, coarse), ("test", xt, fine_t, coarse_t)):
            with open(os.path.join(d, f"{name}.bin"), "wb") as f:
                f.write(cifar_records(xx, c_, f_))
        with open(os.path.join(d, "fine_label_names.txt"), "w") as f:
            f.write("\n".join(fine_names) + "\n")
        with open(os.path.join(d, "coarse_label_names.txt"), "w") as f:
            f.write("\n".join(coarse_names) + "\n")
    return coarse, coarse_t, fine_names, coarse_names


def tar_folder(folder: str, archive: str) -> str:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=os.path.basename(folder))
    return archive


def idx_bytes(a: np.ndarray, gz: bool) -> bytes:
    magic = 0x00000800 | a.ndim
    raw = struct.pack(">I", magic) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()
    return gzip.compress(raw) if gz else raw


def write_idx_folder(folder, gz: bool = True, n: int = 20, nt: int = 10):
    os.makedirs(folder, exist_ok=True)
    x, y = images(n, 28, 28, None), RNG.integers(0, 10, n).astype(np.uint8)
    xt, yt = images(nt, 28, 28, None), RNG.integers(0, 10, nt).astype(np.uint8)
    for stem, a in (("train-images-idx3-ubyte", x), ("train-labels-idx1-ubyte", y),
                    ("t10k-images-idx3-ubyte", xt), ("t10k-labels-idx1-ubyte", yt)):
        with open(os.path.join(folder, stem + (".gz" if gz else "")), "wb") as f:
            f.write(idx_bytes(a, gz))
    return x, y, xt, yt


def write_k49(folder: Path, n=20, nt=10, **replace) -> Path:
    rng = np.random.default_rng(0)
    arrays = {"k49-train-imgs.npz": rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
              "k49-train-labels.npz": np.arange(n) % 49,
              "k49-test-imgs.npz": rng.integers(0, 256, (nt, 28, 28), dtype=np.uint8),
              "k49-test-labels.npz": np.arange(nt) % 49}
    arrays.update(replace)
    folder.mkdir(parents=True, exist_ok=True)
    for name, a in arrays.items():
        np.savez(folder / name, arr_0=a)
    return folder


def write_npz(path, **arrays) -> str:
    np.savez(path, **arrays)
    return str(path)


# ----------------------------------------------------------------------------- CIFAR

def test_cifar10_python_layout(tmp_path):
    parts, test = cifar_data()
    names = write_cifar10_py(tmp_path, parts, test)
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    ds = read_cifar10(str(tmp_path / "cifar-10-batches-py"))
    check(ds, x, y, *test, names)
    assert len(ds.sources) == 7
    # Our small files carry the official names, so they cannot match the official md5s.
    assert any("data_batch_1" in w and "c99cafc152244af753f735de768cd75f" in w
               for w in ds.warnings)
    check(load_source("cifar10", str(tmp_path)), x, y, *test, names)


def test_cifar10_binary_layout_and_both_tarballs(tmp_path):
    parts, test = cifar_data()
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    py_names = write_cifar10_py(tmp_path / "py", parts, test)
    bin_names = write_cifar10_bin(tmp_path / "bin", parts, test)
    ds = read_cifar10(str(tmp_path / "bin" / "cifar-10-batches-bin"))
    check(ds, x, y, *test, bin_names)
    # no official digests are published for the binary batches, but their record counts are known
    assert len(ds.warnings) == 1 and "do not hold the official numbers of images" in ds.warnings[0]
    assert "data_batch_1.bin holds 3 (official: 10,000)" in ds.warnings[0]

    root = tmp_path / "root"
    os.makedirs(root / "cifar10")
    py_tar = tar_folder(str(tmp_path / "py" / "cifar-10-batches-py"),
                        str(root / "cifar10" / "cifar-10-python.tar.gz"))
    bin_tar = tar_folder(str(tmp_path / "bin" / "cifar-10-batches-bin"),
                         str(tmp_path / "cifar-10-binary.tar.gz"))
    ds = load_source("cifar10", str(root))
    check(ds, x, y, *test, py_names)
    assert ds.sources == [py_tar]
    assert len(ds.warnings) == 2 and "c58f30108f718f92721af3b95e74349a" in ds.warnings[0]
    assert "cifar-10-python.tar.gz:cifar-10-batches-py/test_batch holds 5 (official: 10,000)" in ds.warnings[1]
    ds = read_cifar10(bin_tar)
    check(ds, x, y, *test, bin_names)
    assert not os.path.exists(tmp_path / "cifar-10-batches-bin")  # read in place


@pytest.mark.parametrize("layout", ["py", "bin"])
def test_cifar100_fine_and_coarse(tmp_path, layout):
    x, fine = images(8), RNG.integers(0, 100, 8)
    xt, fine_t = images(4), RNG.integers(0, 100, 4)
    coarse, coarse_t, fine_names, coarse_names = write_cifar100(tmp_path, x, fine, xt, fine_t,
                                                                layout)
    check(load_source("cifar100", str(tmp_path)), x, fine, xt, fine_t, fine_names)
    check(load_source("cifar100", str(tmp_path), cifar100_labels="coarse"), x, coarse, xt,
          coarse_t, coarse_names)
    sub = "cifar-100-python" if layout == "py" else "cifar-100-binary"
    archive = tar_folder(str(tmp_path / sub), str(tmp_path / f"{sub}.tar.gz"))
    check(read_cifar100(archive, labels="coarse"), x, coarse, xt, coarse_t, coarse_names)
    with pytest.raises(InvTransferError, match="coarse"):
        load_source("cifar100", str(tmp_path), cifar100_labels="corse")


def test_cifar_truncated_bin_and_corrupt_tar(tmp_path):
    parts, test = cifar_data()
    write_cifar10_bin(tmp_path, parts, test)
    path = tmp_path / "cifar-10-batches-bin" / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(InvTransferError, match=r"data_batch_3\.bin.*multiple of 3073"):
        load_source("cifar10", str(tmp_path))
    path.write_bytes(b"")
    with pytest.raises(InvTransferError, match=r"data_batch_3\.bin is empty"):
        load_source("cifar10", str(tmp_path))

    os.makedirs(tmp_path / "t")
    write_cifar10_py(tmp_path / "src", parts, test)
    good = tar_folder(str(tmp_path / "src" / "cifar-10-batches-py"), str(tmp_path / "t" / "x.tgz"))
    data = open(good, "rb").read()
    bad = tmp_path / "t" / "cifar-10-python.tar.gz"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvTransferError, match="cifar-10-python.tar.gz is a corrupt or truncated"):
        read_cifar10(str(bad))
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(flipped))
    with pytest.raises(InvTransferError, match="cifar-10-python.tar.gz"):
        read_cifar10(str(bad))


def test_cifar_batches_cut_at_a_record_boundary_are_not_official(tmp_path, monkeypatch):
    """A batch cut at a record boundary parses cleanly; only the official count of images tells it
    apart: a warning naming the file and both counts, an error with strict_checksums (it used to be
    accepted with no warning even then). The tiny batches here stand in for the official sizes."""
    parts, test = cifar_data()
    write_cifar10_bin(tmp_path, parts, test)
    write_cifar10_py(tmp_path / "py", parts, test)
    records = formats.cifar.SPECS["cifar10"].records
    for name, n in zip([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], [3, 2, 2, 2, 3, 5]):
        monkeypatch.setitem(records, name, n)
        monkeypatch.setitem(records, name + ".bin", n)
    assert load_source("cifar10", str(tmp_path)).warnings == []
    path = tmp_path / "cifar-10-batches-bin" / "test_batch.bin"
    path.write_bytes(path.read_bytes()[:2 * 3073])
    ds = load_source("cifar10", str(tmp_path))
    assert len(ds.y_test) == 2 and len(ds.warnings) == 1
    assert f"{path} holds 2 (official: 5)" in ds.warnings[0] and "cut at a record boundary" in ds.warnings[0]
    with pytest.raises(InvTransferError, match=r"test_batch\.bin holds 2 \(official: 5\).*strict_checksums is on"):
        load_source("cifar10", str(tmp_path), strict_checksums=True)
    # the python batches are counted the same way
    py = tmp_path / "py" / "cifar-10-batches-py"
    with open(py / "data_batch_2", "wb") as f:
        pickle.dump({b"labels": [int(v) for v in parts[1][1][:1]], b"data": planes(parts[1][0][:1])}, f, protocol=2)
    warnings = read_cifar10(str(py)).warnings  # (+ the md5 mismatches of these made-up files)
    assert any(f"{py / 'data_batch_2'} holds 1 (official: 2)" in w for w in warnings)


def test_a_known_modified_copy_is_named_and_refused_when_strict(tmp_path, monkeypatch):
    """Files known not to be official (the partly-JPEG CIFAR-10 copy of the project's machines) are
    named in a warning; strict_checksums refuses them with the same explanation."""
    parts, test = cifar_data()
    write_cifar10_bin(tmp_path, parts, test)
    path = tmp_path / "cifar-10-batches-bin" / "data_batch_2.bin"
    copy = {"data_batch_2.bin": {hashlib.sha256(path.read_bytes()).hexdigest(): "the copy made by the test"}}
    monkeypatch.setitem(formats.KNOWN_COPIES, "cifar10", copy)
    ds = load_source("cifar10", str(tmp_path))
    assert f"{path} is not the official cifar10 file but the copy made by the test" in ds.warnings[0]
    with pytest.raises(InvTransferError, match=r"data_batch_2\.bin is not the official cifar10 file but the copy "
                                               r"made by the test.*strict_checksums is on"):
        load_source("cifar10", str(tmp_path), strict_checksums=True)
    data = bytearray(path.read_bytes())
    data[5] ^= 1  # one pixel: another file of that name is not taken for the copy
    path.write_bytes(bytes(data))
    assert not any("made by the test" in w for w in load_source("cifar10", str(tmp_path)).warnings)


def test_the_partly_jpeg_cifar10_copy_is_known():
    copies = formats.KNOWN_COPIES["cifar10"]
    assert sorted(copies) == sorted([f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"])
    assert all(len(d) == 1 and "partly-JPEG" in next(iter(d.values())) for d in copies.values())


class _Evil:
    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("how", ["os.system", "builtins.open"])
def test_malicious_pickle_is_refused(tmp_path, how):
    marker = tmp_path / "pwned"
    if how == "os.system":
        evil = pickle.dumps(_Evil(os.system, (f"touch {marker}",)), protocol=2)
    else:  # pickle would name io.open for open(); write the builtins.open call by hand
        evil = f"cbuiltins\nopen\n(V{marker}\nVw\ntR.".encode()
    # The payload sits in the 'data' entry of an otherwise normal batch dict.
    payload = b"\x80\x02}q\x00(C\x04dataq\x01" + evil.removeprefix(b"\x80\x02")[:-1] + \
        b"u."
    parts, test = cifar_data()
    write_cifar10_py(tmp_path, parts, test)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    batch.write_bytes(payload)
    forbidden = "system" if how == "os.system" else "builtins.open"
    with pytest.raises(InvTransferError, match=forbidden) as err:
        load_source("cifar10", str(tmp_path))
    assert str(batch) in str(err.value)
    with pytest.raises(InvTransferError, match="refusing"):
        restricted_pickle_loads(evil, "x")
    assert not marker.exists()


def test_cifar_missing_meta_and_bad_labels(tmp_path):
    x, fine = images(3), np.array([1, 2, 3])
    write_cifar100(tmp_path, x, fine, x, fine, "bin")
    os.remove(tmp_path / "cifar-100-binary" / "fine_label_names.txt")
    with pytest.raises(InvTransferError, match="fine_label_names.txt"):
        read_cifar100(str(tmp_path))
    data = bytearray(cifar_records(x, np.zeros(3), np.array([1, 200, 3])))
    with pytest.raises(InvTransferError, match=r"fine labels must lie in 0\.\.99, found 200"):
        parse_cifar_bin(bytes(data), "f.bin", cifar100=True)


# ----------------------------------------------------------------------------- IDX

@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path, gz):
    x, y, xt, yt = write_idx_folder(tmp_path / "data" / "mnist", gz=gz)
    ds = load_source("mnist")  # found in ./data/mnist
    check(ds, x, y, xt, yt, [str(i) for i in range(10)])
    assert ds.x_train.shape == (20, 28, 28, 1)
    suffix = ".gz" if gz else ""
    assert ds.sources[0] == str(tmp_path / "data" / "mnist" / f"train-images-idx3-ubyte{suffix}")
    np.testing.assert_array_equal(read_idx(ds.sources[1]), y)
    if gz:
        assert len(ds.warnings) == 4 and "f68b3c2dcbeaaa9fbdd348bbdeb94873" in ds.warnings[0]
    else:
        assert ds.warnings == []  # only the .gz files have known digests

    # the uncompressed Fashion-MNIST files have known official digests too
    write_idx_folder(tmp_path / "raw" / "fashion-mnist", gz=False)
    ds = load_source("fashion-mnist", str(tmp_path / "raw"))
    assert len(ds.warnings) == 4 and "f4a8712d7a061bf5bd6d2ca38dc4d50a" in ds.warnings[0]

    write_idx_folder(tmp_path / "k" / "kmnist")
    assert load_source("kmnist", str(tmp_path / "k")).class_names[:3] == ["o", "ki", "su"]
    write_idx_folder(tmp_path / "f" / "fashion-mnist")
    names = load_source("fashion-mnist", str(tmp_path / "f")).class_names
    assert names[0] == "T-shirt/top" and names[-1] == "Ankle boot"


def test_idx_errors(tmp_path):
    write_idx_folder(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-7]))
    with pytest.raises(InvTransferError, match=rf"{path}.*{20 * 784} data bytes.*holds "
                                               rf"{20 * 784 - 7}"):
        read_idx(str(path))
    path.write_bytes(gzip.compress(raw[:10]))
    with pytest.raises(InvTransferError, match="truncated inside its IDX header"):
        read_idx(str(path))
    path.write_bytes(gzip.compress(b"\x12\x34\x56\x78" + raw[4:]))
    with pytest.raises(InvTransferError, match="magic number 0x12345678"):
        read_idx(str(path))
    # A labels file in place of the images: valid IDX, wrong magic.
    path.write_bytes((tmp_path / "train-labels-idx1-ubyte.gz").read_bytes())
    with pytest.raises(InvTransferError, match="expected 0x00000803"):
        read_idx_dataset(str(tmp_path))
    path.write_bytes(gzip.compress(raw)[:-20])
    with pytest.raises(InvTransferError, match="corrupt or truncated gzip"):
        read_idx(str(path))
    path.write_bytes(b"\x1f\x8b" + b"\x00" * 30)
    with pytest.raises(InvTransferError, match="train-images-idx3-ubyte.gz"):
        read_idx(str(path))
    path.write_bytes(b"")
    with pytest.raises(InvTransferError, match="empty"):
        read_idx(str(path))

    write_idx_folder(tmp_path / "m", n=20)
    (tmp_path / "m" / "train-labels-idx1-ubyte.gz").write_bytes(
        idx_bytes(np.zeros(19, np.uint8), gz=True))
    with pytest.raises(InvTransferError, match="holds 20 images but .* holds 19 labels"):
        read_idx_dataset(str(tmp_path / "m"))
    (tmp_path / "m" / "train-labels-idx1-ubyte.gz").write_bytes(
        idx_bytes(np.full(20, 10, np.uint8), gz=True))
    with pytest.raises(InvTransferError, match=r"0\.\.9, found 10"):
        read_idx_dataset(str(tmp_path / "m"))
    os.remove(tmp_path / "m" / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(InvTransferError, match="t10k-labels-idx1-ubyte"):
        read_idx_dataset(str(tmp_path / "m"))


# ----------------------------------------------------------------------------- K49, npz

def test_k49_round_trip_and_classmap(tmp_path):
    d = tmp_path / "k49"
    os.makedirs(d)
    x, xt = images(49, 28, 28, None), images(6, 28, 28, None)
    y, yt = np.arange(49, dtype=np.uint8), RNG.integers(0, 49, 6).astype(np.uint8)
    for name, a in (("k49-train-imgs", x), ("k49-train-labels", y), ("k49-test-imgs", xt),
                    ("k49-test-labels", yt)):
        np.savez_compressed(d / f"{name}.npz", a)  # a positional array is stored as arr_0
    ds = load_source("k49", str(tmp_path))
    check(ds, x, y, xt, yt, [str(i) for i in range(49)])
    assert len(ds.warnings) == 4 and "7ac088b20481cf51dcd01ceaab89d821" in ds.warnings[0]
    (d / "k49_classmap.csv").write_text(
        "index,codepoint,char\n" + "".join(f"{i},U+{0x3042 + i:04X},{chr(0x3042 + i)}\n"
                                           for i in range(49)), encoding="utf-8")
    ds = read_k49(str(d))
    assert ds.class_names[0] == "あ" and len(ds.class_names) == 49
    np.savez(d / "k49-test-labels.npz", labels=yt)
    with pytest.raises(InvTransferError, match="k49-test-labels.npz lacks the key.*arr_0"):
        read_k49(str(d))


@pytest.mark.parametrize("channels", [None, 1, 3])
def test_generic_npz_round_trip(tmp_path, channels):
    x, xt = images(6, 8, 8, channels), images(3, 8, 8, channels)
    y, yt = np.array([0, 1, 2, 0, 1, 2], np.uint8), np.array([2, 1, 0])
    path = write_npz(tmp_path / "d.npz", x_train=x, y_train=y, x_test=xt, y_test=yt, extra=y)
    check(read_npz(path), x, y, xt, yt, ["0", "1", "2"])
    path = write_npz(tmp_path / "n.npz", x_train=x, y_train=y, x_test=xt, y_test=yt,
                     class_names=np.array(["cat", "dog", "emu"]))
    ds = load_source("npz", npz_file="n.npz")  # relative to the current directory
    check(ds, x, y, xt, yt, ["cat", "dog", "emu"])
    assert ds.sources == [path] and ds.warnings == []
    assert load_source("npz", str(tmp_path), npz_file="d.npz").num_classes == 3


def test_generic_npz_errors(tmp_path):
    x, y = images(4, 8, 8, None), np.array([0, 1, 1, 0])
    good = dict(x_train=x, y_train=y, x_test=x, y_test=y)

    def bad(match, **changes):
        arrays = {**good, **changes}
        path = write_npz(tmp_path / "bad.npz", **{k: v for k, v in arrays.items()
                                                  if v is not None})
        with pytest.raises(InvTransferError, match=match) as err:
            read_npz(path)
        assert "bad.npz" in str(err.value)

    bad("lacks the key.*y_train, x_test", y_train=None, x_test=None)
    bad("'x_train' has dtype float32", x_train=x.astype(np.float32))
    bad("'x_test' has shape", x_test=x[0])
    bad("'y_train' holds 3 labels but the images hold 4", y_train=y[:3])
    bad("'y_test' has negative labels", y_test=np.array([0, -1, 1, 0]))
    bad("'y_train' has dtype float64", y_train=y.astype(np.float64))
    bad("'y_test' has label 2 but 'class_names' names only 2", y_test=np.array([0, 2, 1, 0]),
        class_names=np.array(["a", "b"]))
    bad("'y_train' has no image of class.*2", y_train=np.array([0, 1, 3, 0]))
    with pytest.raises(InvTransferError, match="holds pickled objects|pickled"):
        read_npz(write_npz(tmp_path / "obj.npz", **{**good, "y_train": np.array(
            [0, 1, 1, "x"], dtype=object)}))
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not a zip at all")
    with pytest.raises(InvTransferError, match="junk.npz cannot be read as an .npz"):
        read_npz(str(tmp_path / "junk.npz"))
    with pytest.raises(InvTransferError, match="nope.npz.*searched"):
        load_source("npz", str(tmp_path), npz_file="nope.npz")


# ----------------------------------------------------------------------------- GTSRB

def write_gtsrb(root, roi_colour=(200, 10, 50), border=(0, 0, 0)):
    """Two classes of two images plus a 3-image test set; each image is one colour inside its
    ROI and another outside, so resized pixels can be checked exactly."""
    base = root / "GTSRB"
    sizes = [(30, 34), (40, 35), (29, 31)]
    expected = {"train": [], "test": []}

    def make(folder, name, i, cid, rows):
        w, h = sizes[i % 3]
        colour = tuple((c + 17 * i) % 256 for c in roi_colour)
        a = np.zeros((h, w, 3), np.uint8)
        a[:] = border
        a[5:h - 5, 6:w - 6] = colour
        Image.fromarray(a).save(folder / name, format="PPM")
        rows.append(f"{name};{w};{h};6;5;{w - 6};{h - 5};{cid}")
        return colour

    for cid in range(2):
        d = base / "Final_Training" / "Images" / f"{cid:05d}"
        os.makedirs(d)
        rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
        for j in range(2):
            expected["train"].append((make(d, f"{j:05d}_00000.ppm", 2 * cid + j, cid, rows), cid))
        (d / f"GT-{cid:05d}.csv").write_text("\n".join(rows) + "\n")
    d = base / "Final_Test" / "Images"
    os.makedirs(d)
    rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
    for j, cid in enumerate([1, 0, 1]):
        expected["test"].append((make(d, f"{j:05d}.ppm", j + 7, cid, rows), cid))
    (base / "GT-final_test.csv").write_text("\n".join(rows) + "\n")  # as GT zip unpacks
    return expected


def test_gtsrb_layout_with_and_without_roi_crop(tmp_path):
    expected = write_gtsrb(tmp_path)
    ds = load_source("gtsrb", str(tmp_path), gtsrb_size=12, gtsrb_roi_crop=True)
    assert ds.x_train.shape == (4, 12, 12, 3) and ds.x_test.shape == (3, 12, 12, 3)
    assert ds.class_names == ["0", "1"]
    for split, x, y in (("train", ds.x_train, ds.y_train), ("test", ds.x_test, ds.y_test)):
        colours = np.array([c for c, _ in expected[split]], np.uint8)
        np.testing.assert_array_equal(x, np.broadcast_to(colours[:, None, None], x.shape))
        np.testing.assert_array_equal(y, [cid for _, cid in expected[split]])
    ds = read_gtsrb(str(tmp_path / "GTSRB"), size=16)
    assert ds.x_train.shape == (4, 16, 16, 3)
    np.testing.assert_array_equal(ds.x_train[:, 0, 0], 0)  # border kept without ROI crop
    np.testing.assert_array_equal(ds.x_train[0, 8, 8], expected["train"][0][0])
    assert str(tmp_path / "GTSRB" / "GT-final_test.csv") in ds.sources


def test_gtsrb_errors(tmp_path):
    write_gtsrb(tmp_path)
    os.remove(tmp_path / "GTSRB" / "GT-final_test.csv")
    with pytest.raises(InvTransferError, match="GT-final_test.csv"):
        read_gtsrb(str(tmp_path))
    write_gtsrb(tmp_path / "b")
    ppm = tmp_path / "b" / "GTSRB" / "Final_Training" / "Images" / "00001" / "00000_00000.ppm"
    ppm.write_bytes(ppm.read_bytes()[:40])
    with pytest.raises(InvTransferError, match="00000_00000.ppm cannot be decoded"):
        read_gtsrb(str(tmp_path / "b"))
    csv_path = ppm.parent / "GT-00001.csv"
    csv_path.write_text("Filename;Width;Height\n")
    with pytest.raises(InvTransferError, match="GT-00001.csv lacks the column"):
        read_gtsrb(str(tmp_path / "b"))


def test_gtsrb_falls_back_to_resized_npz(tmp_path):
    x, y = images(2, 32, 32), np.array([0, 1])
    write_npz(tmp_path / "gtsrb32.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    check(load_source("gtsrb", str(tmp_path)), x, y, x, y, ["0", "1"])
    with pytest.raises(InvTransferError, match="Could not find gtsrb"):
        load_source("gtsrb", str(tmp_path), gtsrb_roi_crop=True)


# ----------------------------------------------------------------------------- Tiny ImageNet

def write_tiny(root) -> None:
    base = root / "tiny-imagenet-200"
    wnids = ["n02", "n01"]
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (base / "words.txt").write_text("n00\tentity\nn01\tgoldfish, Carassius auratus\n"
                                    "n02\tEuropean fire salamander, Salamandra salamandra\n")
    for w in wnids:
        d = base / "train" / w / "images"
        d.mkdir(parents=True)
        for j in (1, 0):
            Image.fromarray(images(1, 64, 64)[0]).save(d / f"{w}_{j}.JPEG", format="JPEG")
    ann = []
    for j, w in enumerate(["n01", "n02", "n01"]):
        grey = Image.fromarray(images(1, 64, 64, None)[0])  # grey JPEGs exist in the set
        grey.save(base / "val" / "images" / f"val_{j}.JPEG", format="JPEG")
        ann.append(f"val_{j}.JPEG\t{w}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(ann) + "\n")


def test_tinyimagenet_layout(tmp_path):
    write_tiny(tmp_path)
    ds = load_source("tinyimagenet", str(tmp_path))
    assert ds.x_train.shape == (4, 64, 64, 3) and ds.x_test.shape == (3, 64, 64, 3)
    assert ds.class_names == ["European fire salamander", "goldfish"]
    np.testing.assert_array_equal(ds.y_train, [0, 0, 1, 1])
    np.testing.assert_array_equal(ds.y_test, [1, 0, 1])
    # Files are sorted by name within a class.
    first = np.asarray(Image.open(tmp_path / "tiny-imagenet-200" / "train" / "n02" / "images"
                                  / "n02_0.JPEG").convert("RGB"))
    np.testing.assert_array_equal(ds.x_train[0], first)
    (tmp_path / "tiny-imagenet-200" / "val" / "val_annotations.txt").write_text("x\tn99\n")
    with pytest.raises(InvTransferError, match="val_annotations.txt, line 1"):
        read_tinyimagenet(str(tmp_path))


# ----------------------------------------------------------------------------- finding data

def test_data_roots_order(tmp_path, monkeypatch):
    assert data_roots(None, "mnist") == [str(tmp_path / "data")]
    monkeypatch.setenv("INVTRANSFER_DATA", str(tmp_path / "env"))
    assert data_roots(str(tmp_path / "opt"), "mnist") == [
        str(tmp_path / "opt"), str(tmp_path / "env"), str(tmp_path / "data")]
    assert data_roots(None, "fashion-mnist") == [
        str(tmp_path / "env"), str(tmp_path / "data"), "/usr/share/datasets/fashion-mnist"]

    env_x = write_idx_folder(tmp_path / "env" / "mnist")[0]
    cwd_x = write_idx_folder(tmp_path / "data" / "mnist")[0]
    opt_x = write_idx_folder(tmp_path / "opt")[0]  # files directly in the root also count
    np.testing.assert_array_equal(load_source("mnist", str(tmp_path / "opt")).x_train[..., 0],
                                  opt_x)
    np.testing.assert_array_equal(load_source("mnist").x_train[..., 0], env_x)
    monkeypatch.delenv("INVTRANSFER_DATA")
    np.testing.assert_array_equal(load_source("mnist").x_train[..., 0], cwd_x)


def test_missing_data_lists_searched_paths(tmp_path):
    with pytest.raises(InvTransferError) as err:
        load_source("cifar10", str(tmp_path / "nowhere"))
    msg = str(err.value)
    for path in (tmp_path / "nowhere", tmp_path / "nowhere" / "cifar10", tmp_path / "data"):
        assert f"\n  {path}\n" in msg + "\n"
    assert "cifar-10-python.tar.gz" in msg and "invtransfer data download cifar10" in msg
    with pytest.raises(InvTransferError, match="k49-train-imgs.npz"):
        load_source("k49", str(tmp_path))


def test_unknown_source_suggests():
    with pytest.raises(InvTransferError, match="Did you mean 'cifar10'"):
        load_source("cifar-10")
    with pytest.raises(InvTransferError, match="Did you mean 'fashion-mnist'"):
        load_source("fashion_mnist")


# ----------------------------------------------------------------------------- checksums

def test_checksum_warning_strict_match_and_hashing_once(tmp_path, monkeypatch):
    write_idx_folder(tmp_path / "fashion-mnist")
    calls = []
    real = formats.file_digest
    monkeypatch.setattr(formats.common, "file_digest", lambda p, a="md5": calls.append((p, a)) or
                        real(p, a))
    ds = load_source("fashion-mnist", str(tmp_path))
    assert len(ds.warnings) == 4
    w = ds.warnings[0]
    assert str(tmp_path / "fashion-mnist" / "train-images-idx3-ubyte.gz") in w
    assert "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7" in w
    assert "8d4fb7e6c68d591d4c3dfef9ec88bf0d" in w and "modified copy" in w
    assert sorted(calls) == sorted(set(calls)) and len(calls) == 8  # each file, each algo once

    with pytest.raises(InvTransferError, match="Checksum mismatch.*train-images.*strict"):
        load_source("fashion-mnist", str(tmp_path), strict_checksums=True)

    digests = {f: (hashlib.md5((tmp_path / "fashion-mnist" / f).read_bytes()).hexdigest(),)
               for f in os.listdir(tmp_path / "fashion-mnist")}
    monkeypatch.setitem(formats.KNOWN_DIGESTS, "fashion-mnist", digests)
    assert load_source("fashion-mnist", str(tmp_path), strict_checksums=True).warnings == []


# ----------------------------------------------------------------------------- fuzzing

# Random and mutated bytes into every reader: the only outcomes allowed are a valid result or
# InvTransferError. INVTRANSFER_FUZZ_EXAMPLES=5000 searches deeper than the suite's 50 per reader.
FUZZ = settings(max_examples=int(os.environ.get("INVTRANSFER_FUZZ_EXAMPLES", "50")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def _idx_like():
    head = st.tuples(st.sampled_from([0x08, 0x0B, 0x0D, 0x42]), st.integers(0, 4),
                     st.lists(st.integers(0, 5), min_size=0, max_size=4))
    return st.one_of(
        st.binary(max_size=300),
        st.builds(lambda h, tail: bytes([0, 0, h[0], h[1]]) + b"".join(
            struct.pack(">I", d) for d in h[2]) + tail, head, st.binary(max_size=200)))


def mutated(base: bytes):
    """Truncations, byte flips and insertions of a valid file, and plain random bytes."""
    def mutate(cut, flips, insert_at, inserted):
        b = bytearray(base[:cut])
        for pos, val in flips:
            if b:
                b[pos % len(b)] = val
        if insert_at is not None and b:
            i = insert_at % len(b)
            b[i:i] = inserted
        return bytes(b)
    return st.one_of(
        st.binary(max_size=400),
        st.builds(mutate, st.integers(0, len(base)), st.lists(st.tuples(st.integers(0, 1 << 30), st.integers(0, 255)),
                                                              max_size=4),
                  st.none() | st.integers(0, 1 << 30), st.binary(max_size=16)))


_VALID_IDX = idx_bytes(np.arange(60, dtype=np.uint8).reshape(3, 4, 5), gz=False)


@FUZZ
@given(data=st.one_of(_idx_like(), mutated(_VALID_IDX), mutated(gzip.compress(_VALID_IDX))), gz=st.booleans())
def test_fuzz_read_idx(fuzz_dir, data, gz):
    path = fuzz_dir / ("f.idx.gz" if gz else "f.idx")
    path.write_bytes(gzip.compress(data) if gz and data else data)
    try:
        a = read_idx(str(path))
    except InvTransferError:
        return
    assert isinstance(a, np.ndarray) and a.ndim >= 1


@FUZZ
@given(records=st.lists(st.tuples(st.integers(0, 12), st.binary(min_size=3072, max_size=3072)),
                        max_size=3),
       tail=st.binary(max_size=40))
def test_fuzz_cifar_bin(records, tail):
    data = b"".join(bytes([lab]) + px for lab, px in records) + tail
    try:
        x, y = parse_cifar_bin(data, "fuzz.bin")
    except InvTransferError:
        return
    assert x.shape == (len(records), 32, 32, 3) and y.max() < 10


def _pickle_like():
    value = st.recursive(st.none() | st.integers() | st.binary(max_size=20) | st.text(max_size=10),
                         lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=5),
                                                                             c, max_size=4),
                         max_leaves=10)
    arrays = st.builds(lambda n: np.zeros((n, 3072), np.uint8), st.integers(0, 2))
    obj = st.dictionaries(st.sampled_from([b"data", b"labels", "data", "x"]), value | arrays,
                          max_size=3)
    return st.one_of(
        st.binary(max_size=200),
        st.builds(lambda o, cut, proto: pickle.dumps(o, protocol=proto)[:cut], obj,
                  st.integers(0, 20000), st.sampled_from([0, 2, 4, 5])))


@FUZZ
@given(data=_pickle_like())
def test_fuzz_restricted_pickle(data):
    try:
        restricted_pickle_loads(data, "fuzz")
    except InvTransferError:
        return


def _npz_like():
    def build(n, kind, cut, flip):
        buf = io.BytesIO()
        x = np.zeros((n, 4, 4), np.uint8)
        y = np.arange(n) % 2 if kind else np.arange(n).astype(np.float32)
        np.savez(buf, x_train=x, y_train=y, x_test=x, y_test=y)
        raw = bytearray(buf.getvalue()[:cut])
        if flip is not None and raw:
            raw[flip % len(raw)] ^= 0x55
        return bytes(raw)
    return st.one_of(st.binary(max_size=300),
                     st.builds(build, st.integers(0, 3), st.booleans(), st.integers(0, 3000),
                               st.none() | st.integers(0, 3000)))


@FUZZ
@given(data=_npz_like())
def test_fuzz_read_npz(fuzz_dir, data):
    path = fuzz_dir / "f.npz"
    path.write_bytes(data)
    try:
        ds = read_npz(str(path))
    except InvTransferError:
        return
    assert ds.x_train.ndim == 4 and len(ds.x_train) == len(ds.y_train)


def test_arbitrary_zip_is_not_an_npz(tmp_path):
    # An arbitrary zip is a syntactically valid npz container; it must fail on the keys.
    with zipfile.ZipFile(tmp_path / "a.npz", "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(InvTransferError, match="lacks the key"):
        read_npz(str(tmp_path / "a.npz"))


def _npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


_K49_ARRAYS = {"k49-train-imgs.npz": np.zeros((6, 28, 28), np.uint8), "k49-train-labels.npz": np.arange(6),
               "k49-test-imgs.npz": np.zeros((3, 28, 28), np.uint8), "k49-test-labels.npz": np.arange(3) * 16}
_ARRAY = st.builds(lambda shape, dtype, fill: np.full(shape, fill).astype(dtype),
                   st.lists(st.integers(0, 5), max_size=4).map(tuple),
                   st.sampled_from([np.uint8, np.int64, np.int32, np.float32, np.bool_]), st.integers(-2, 60))


@FUZZ
@given(name=st.sampled_from(sorted(_K49_ARRAYS) + ["k49_classmap.csv"]), content=st.data())
def test_fuzz_read_k49(fuzz_dir, name, content):
    folder = fuzz_dir / "k49"
    write_k49(folder, **{k: v for k, v in _K49_ARRAYS.items()})
    if name.endswith(".csv"):
        text = "index,codepoint,char\n" + "".join(f"{i},U+{i:04X},c{i}\n" for i in range(49))
        data = content.draw(mutated(text.encode()))
    else:
        data = content.draw(st.one_of(mutated(_npz_bytes(arr_0=_K49_ARRAYS[name])),
                                      _ARRAY.map(lambda a: _npz_bytes(arr_0=a))))
    (folder / name).write_bytes(data)
    try:
        ds = read_k49(str(folder))
    except InvTransferError:
        return
    assert ds.x_train.ndim == 4 and len(ds.x_train) == len(ds.y_train) and ds.num_classes == 49
    assert ds.y_train.min() >= 0 and ds.y_train.max() < 49


_GT_HEADER = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n"
_GT_CELL = st.one_of(st.integers(-5, 100).map(str), st.text(alphabet="abc.;ppm 0-", max_size=6))


@FUZZ
@given(data=st.one_of(
    mutated((_GT_HEADER + "00000_00000.ppm;30;34;6;5;24;29;1\n00001_00000.ppm;40;35;6;5;34;30;1\n").encode()),
    st.lists(st.lists(_GT_CELL, min_size=0, max_size=9), max_size=4).map(
        lambda rows: (_GT_HEADER + "".join(";".join(r) + "\n" for r in rows)).encode())))
def test_fuzz_gtsrb_csv(fuzz_dir, data):
    path = fuzz_dir / "GT-00000.csv"
    path.write_bytes(data)
    try:
        rows = formats.gtsrb.read_gt_csv(str(path))
    except InvTransferError:
        return
    assert rows and all(isinstance(r[0], str) and all(isinstance(v, int) for v in r[1:]) for r in rows)
