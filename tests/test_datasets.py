"""numbanet.datasets: packaged digits, the IDX parser and the MNIST-style loaders.

Nothing here touches the network: IDX files are written by the tests, and the download path is
exercised with a fake ``urlopen``.
"""
import gzip
import hashlib
import io
import struct
import urllib.error
import urllib.request

import numpy as np
import pytest

import numbanet.datasets as ds
from numbanet.datasets import load_digits, load_fashion_mnist, load_mnist, read_idx

_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D,
          np.float64: 0x0E}
_NAMES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
          "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}


def idx_bytes(arr, code=None):
    """Encode ``arr`` as an IDX file (written independently of the parser under test)."""
    arr = np.asarray(arr)
    code = _CODES[arr.dtype.type] if code is None else code
    header = bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write(path, data, gz=False):
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def make_set(directory, rng, n_train=5, n_test=3, gz=(False, True, True, False)):
    """Write a small MNIST-shaped data set; returns the arrays written."""
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train_images": rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, size=n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, size=n_test, dtype=np.uint8),
    }
    arrays["train_images"][0, 0, :2] = (0, 255)  # both ends of the range
    for (key, arr), z in zip(arrays.items(), gz):
        write(directory / _NAMES[key], idx_bytes(arr), gz=z)
    return arrays


# ----------------------------------------------------------------------------- digits

def test_load_digits_shape_dtype_range_and_counts():
    x, y = load_digits()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0
    np.testing.assert_array_equal(np.unique(x * 16), np.arange(17))  # exact multiples of 1/16
    np.testing.assert_array_equal(np.bincount(y),
                                  [178, 182, 177, 183, 181, 182, 181, 179, 174, 180])


def test_load_digits_deterministic_and_fresh_arrays():
    x1, y1 = load_digits()
    x2, y2 = load_digits()
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    x1[0] = 5  # callers may modify what they get
    assert load_digits()[0][0].max() <= 1
    # a well-known sample: the first image is a zero with an empty border column
    assert y2[0] == 0 and np.all(x2[0, 0, :, 0] == 0)


def test_digits_npz_is_plain_uint8():
    from importlib import resources
    with resources.files("numbanet.datasets").joinpath("digits.npz").open("rb") as f:
        with np.load(f, allow_pickle=False) as npz:
            assert sorted(npz.files) == ["images", "labels"]
            assert npz["images"].dtype == np.uint8 and npz["labels"].dtype == np.uint8
            assert npz["images"].max() == 16 and npz["labels"].max() == 9


# ----------------------------------------------------------------------------- read_idx

@pytest.mark.parametrize("dtype", list(_CODES))
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip(tmp_path, rng, dtype, gz):
    arr = (rng.normal(size=(3, 1, 4)) * 100).astype(dtype)
    p = write(tmp_path / "a-idx3", idx_bytes(arr), gz=gz)
    out = read_idx(p)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    assert out.shape == (3, 1, 4)
    np.testing.assert_array_equal(out, arr)
    out[0] = 0  # writable


def test_read_idx_empty_dimension_and_1d(tmp_path):
    assert read_idx(write(tmp_path / "e", idx_bytes(np.zeros((0, 28, 28), np.uint8)))).shape \
        == (0, 28, 28)
    np.testing.assert_array_equal(
        read_idx(write(tmp_path / "l", idx_bytes(np.array([7, 1], np.uint8)))), [7, 1])


@pytest.mark.parametrize("data, message", [
    (b"", "0 bytes is too short"),
    (b"\x00\x00", "2 bytes is too short"),
    (b"PK\x03\x04rest", "bad magic number 0x504b0304"),
    (b"\x00\x00\x07\x01\x00\x00\x00\x01x", "unknown data type code 0x07"),
    (b"\x00\x00\x08\x00", "header says 0 dimensions"),
    (b"\x00\x00\x08\x03\x00\x00\x00\x02\x00\x00", "truncated header: 3 dimensions need 16 bytes"),
    (idx_bytes(np.zeros((2, 3), np.uint8))[:-1], r"truncated: shape \(2, 3\) of uint8 needs 6 "
                                                  r"data bytes, found 5"),
    (idx_bytes(np.zeros((2, 3), np.int32))[:-2], r"truncated: shape \(2, 3\) of int32 needs 24"),
    (idx_bytes(np.zeros(4, np.uint8)) + b"\x00", "has trailing bytes"),
])
def test_read_idx_errors_name_the_file(tmp_path, data, message):
    p = write(tmp_path / "bad-file", data)
    with pytest.raises(ValueError, match=message) as e:
        read_idx(p)
    assert str(p) in str(e.value)


def test_read_idx_corrupt_and_truncated_gzip(tmp_path):
    good = gzip.compress(idx_bytes(np.arange(200, dtype=np.uint8).reshape(10, 20)))
    p = write(tmp_path / "cut.gz", good[: len(good) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated gzip") as e:
        read_idx(p)
    assert str(p) in str(e.value)
    p = write(tmp_path / "junk.gz", good[:10] + b"\xff" * 40)
    with pytest.raises(ValueError, match="corrupt or truncated gzip"):
        read_idx(p)
    # a gzip member that holds a truncated IDX file
    p = write(tmp_path / "short", idx_bytes(np.zeros((4, 4), np.uint8))[:-3], gz=True)
    with pytest.raises(ValueError, match="truncated: shape"):
        read_idx(p)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope")


# ----------------------------------------------------------------------------- load_mnist & co

@pytest.mark.parametrize("loader", [load_mnist, load_fashion_mnist])
def test_load_from_path_raw_and_gz(tmp_path, rng, loader):
    arrays = make_set(tmp_path / "d", rng)
    (x_tr, y_tr), (x_te, y_te) = loader(path=tmp_path / "d")
    assert x_tr.shape == (5, 1, 28, 28) and x_te.shape == (3, 1, 28, 28)
    assert x_tr.dtype == np.float32 and y_tr.dtype == np.int64 and y_te.dtype == np.int64
    assert x_tr.min() == 0.0 and x_tr.max() == 1.0 and x_te.min() >= 0 and x_te.max() <= 1
    np.testing.assert_array_equal(x_tr[:, 0], arrays["train_images"].astype(np.float32) / 255)
    np.testing.assert_array_equal(x_te[:, 0], arrays["test_images"].astype(np.float32) / 255)
    np.testing.assert_array_equal(y_tr, arrays["train_labels"])
    np.testing.assert_array_equal(y_te, arrays["test_labels"])
    # str paths work too, and all-gz / all-raw sets read the same
    for gz in ((True,) * 4, (False,) * 4):
        arrays = make_set(tmp_path / str(gz), rng, n_train=2, n_test=1, gz=gz)
        (x_tr, y_tr), _ = loader(path=str(tmp_path / str(gz)))
        np.testing.assert_array_equal(y_tr, arrays["train_labels"])


def test_default_dir_from_env_and_cache_dir(tmp_path, rng, monkeypatch):
    monkeypatch.setenv("NUMBANET_DATA", str(tmp_path / "env"))
    assert ds.default_cache_dir() == tmp_path / "env"
    a = make_set(tmp_path / "env" / "fashion_mnist", rng)
    (_, y), _ = load_fashion_mnist()
    np.testing.assert_array_equal(y, a["train_labels"])
    b = make_set(tmp_path / "root" / "mnist", rng, n_train=4)
    (x, y), _ = load_mnist(cache_dir=tmp_path / "root")
    assert len(x) == 4
    np.testing.assert_array_equal(y, b["train_labels"])
    monkeypatch.delenv("NUMBANET_DATA")
    assert ds.default_cache_dir().parts[-2:] == (".cache", "numbanet")


def test_missing_files_message(tmp_path, rng):
    with pytest.raises(FileNotFoundError) as e:
        load_mnist(path=tmp_path / "empty")
    msg = str(e.value)
    assert str(tmp_path / "empty") in msg
    for name in _NAMES.values():
        assert name in msg
    assert "download=True" in msg and "NUMBANET_DATA" in msg
    # only the absent file is named
    make_set(tmp_path / "d", rng)
    (tmp_path / "d" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="missing t10k-labels-idx1-ubyte") as e:
        load_fashion_mnist(path=tmp_path / "d")
    assert "train-images" not in str(e.value).split("missing")[1].split(".")[0]


def _corrupt(directory, key, data):
    for p in directory.glob(_NAMES[key] + "*"):
        p.unlink()
    return write(directory / _NAMES[key], data)


@pytest.mark.parametrize("key, data, message", [
    ("train_images", idx_bytes(np.zeros((5, 27, 28), np.uint8)),
     r"uint8 of shape \(5, 27, 28\); expected uint8 images of shape \(N, 28, 28\)"),
    ("train_images", idx_bytes(np.zeros((5, 28, 28), np.float32)), "holds float32"),
    ("test_labels", idx_bytes(np.zeros(3, np.int32)), "holds int32"),
    ("test_labels", idx_bytes(np.zeros((3, 1), np.uint8)), r"expected uint8 labels of shape"),
    ("train_labels", idx_bytes(np.array([0, 1, 2, 3, 12], np.uint8)), "holds label 12"),
    ("test_labels", idx_bytes(np.zeros(4, np.uint8)), "has 3 images but .* has 4 labels"),
    ("train_images", idx_bytes(np.zeros((5, 28, 28), np.uint8))[:-100], "truncated"),
    ("test_images", b"not an idx file at all", "bad magic number"),
])
def test_load_rejects_foreign_or_corrupt_files(tmp_path, rng, key, data, message):
    make_set(tmp_path, rng)
    p = _corrupt(tmp_path, key, data)
    with pytest.raises(ValueError, match=message) as e:
        load_mnist(path=tmp_path)
    assert str(p) in str(e.value)


def test_load_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="path .* or cache_dir .*not both"):
        load_mnist(path=tmp_path, cache_dir=tmp_path)
    with pytest.raises(TypeError, match="download must be True or False, got 'yes'"):
        load_mnist(path=tmp_path, download="yes")
    with pytest.raises(TypeError, match="path must be a str or os.PathLike, got int"):
        load_mnist(path=3)
    with pytest.raises(TypeError, match="cache_dir must be a str or os.PathLike, got list"):
        load_fashion_mnist(cache_dir=[])


def test_checksum_table_is_complete():
    for name, src in ds._SOURCES.items():
        assert set(src["md5"]) == {n + ".gz" for n in _NAMES.values()}
        assert all(len(h) == 32 and int(h, 16) >= 0 for h in src["md5"].values())
        assert all(m.endswith("/") for m in src["mirrors"])


# ----------------------------------------------------------------------------- download (faked)

class _FakeWeb:
    """Stands in for urllib.request.urlopen: serves bytes per file name, records the URLs."""

    def __init__(self, files, fail_hosts=()):
        self.files, self.fail_hosts, self.urls = files, fail_hosts, []

    def __call__(self, url, timeout=None):
        self.urls.append(url)
        if any(h in url for h in self.fail_hosts):
            raise urllib.error.URLError("unreachable (fake)")
        return io.BytesIO(self.files[url.rsplit("/", 1)[1]])


def _gz_set(rng):
    arrays = {k: (rng.integers(0, 256, size=(2, 28, 28), dtype=np.uint8) if "images" in k
                  else rng.integers(0, 10, size=2, dtype=np.uint8)) for k in _NAMES}
    return arrays, {_NAMES[k] + ".gz": gzip.compress(idx_bytes(a)) for k, a in arrays.items()}


def test_download_verifies_and_loads(tmp_path, rng, monkeypatch):
    arrays, files = _gz_set(rng)
    md5 = {n: hashlib.md5(b).hexdigest() for n, b in files.items()}
    mirrors = ds._SOURCES["mnist"]["mirrors"]
    monkeypatch.setitem(ds._SOURCES["mnist"], "md5", md5)
    # the first mirror is down, the second serves the files
    web = _FakeWeb(files, fail_hosts=(mirrors[0],))
    monkeypatch.setattr(urllib.request, "urlopen", web)
    (x, y), (xt, yt) = load_mnist(cache_dir=tmp_path, download=True)
    np.testing.assert_array_equal(yt, arrays["test_labels"])
    np.testing.assert_array_equal(x[:, 0], arrays["train_images"] / np.float32(255))
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == sorted(files)
    assert any(u.startswith(mirrors[1]) for u in web.urls)
    # present files are not fetched again
    web.urls.clear()
    load_mnist(cache_dir=tmp_path, download=True)
    assert web.urls == []


def test_download_only_missing_files(tmp_path, rng, monkeypatch):
    arrays, files = _gz_set(rng)
    monkeypatch.setitem(ds._SOURCES["fashion_mnist"], "md5",
                        {n: hashlib.md5(b).hexdigest() for n, b in files.items()})
    d = tmp_path / "mine"
    d.mkdir()
    (d / "train-images-idx3-ubyte").write_bytes(idx_bytes(arrays["train_images"]))
    web = _FakeWeb(files)
    monkeypatch.setattr(urllib.request, "urlopen", web)
    load_fashion_mnist(path=d, download=True)
    assert len(web.urls) == 3 and not any("train-images" in u for u in web.urls)


def test_download_checksum_mismatch_deletes_and_raises(tmp_path, rng, monkeypatch):
    _, files = _gz_set(rng)
    monkeypatch.setattr(urllib.request, "urlopen", _FakeWeb(files))  # real checksums kept
    with pytest.raises(ValueError, match="checksum mismatch for train-images-idx3-ubyte.gz.*"
                                         "expected f68b3c2dcbeaaa9fbdd348bbdeb94873"):
        load_mnist(cache_dir=tmp_path, download=True)
    assert list((tmp_path / "mnist").iterdir()) == []


def test_download_unreachable(tmp_path, rng, monkeypatch):
    _, files = _gz_set(rng)
    mirrors = ds._SOURCES["fashion_mnist"]["mirrors"]
    monkeypatch.setattr(urllib.request, "urlopen", _FakeWeb(files, fail_hosts=mirrors))
    with pytest.raises(OSError, match="could not download train-images-idx3-ubyte.gz") as e:
        load_fashion_mnist(cache_dir=tmp_path, download=True)
    for m in mirrors:
        assert m in str(e.value)
    assert list((tmp_path / "fashion_mnist").iterdir()) == []
