"""Small image data sets, as float32 NCHW arrays scaled to [0, 1] with int64 labels.

- ``load_digits()``: 8x8 handwritten digits shipped inside the package (no network).
- ``load_mnist()`` / ``load_fashion_mnist()``: read the four standard IDX files from a directory,
  optionally downloading them first (``download=True``), checked against known MD5 sums.
- ``read_idx(path)``: the IDX parser behind them, for any IDX file (raw or gzipped).
"""
import gzip
import hashlib
import http.client
import math
import os
import shutil
import urllib.error
import urllib.request
import zlib
from importlib import resources
from pathlib import Path

import numpy as np

__all__ = ["load_digits", "load_mnist", "load_fashion_mnist", "read_idx", "default_cache_dir"]


# ----------------------------------------------------------------------------- digits

def load_digits():
    """The 8x8 handwritten digits: 1797 images of the digits 0-9.

    Returns ``(x, y)``: ``x`` float32 of shape (1797, 1, 8, 8), pixel counts 0..16 divided by 16
    so they lie in [0, 1]; ``y`` int64 labels 0..9.

    The data is the copy scikit-learn ships (``sklearn.datasets.load_digits``), which is the test
    part of the UCI ML "Optical Recognition of Handwritten Digits" data set:
    E. Alpaydin and C. Kaynak (1998), UCI Machine Learning Repository. 32x32 bitmaps from NIST
    preprocessing, counted in non-overlapping 4x4 blocks, give 8x8 images of integers 0..16.
    It is stored in the package as ``digits.npz`` (uint8 ``images`` and ``labels``), so loading
    needs neither the network nor scikit-learn.
    """
    ref = resources.files(__name__).joinpath("digits.npz")
    with ref.open("rb") as f, np.load(f, allow_pickle=False) as npz:
        images = npz["images"]
        labels = npz["labels"]
    if images.shape != (1797, 8, 8) or labels.shape != (1797,):
        raise ValueError(f"load_digits: the packaged digits.npz is damaged: images "
                         f"{images.shape}, labels {labels.shape}, expected (1797, 8, 8) and "
                         f"(1797,)")
    x = images.astype(np.float32).reshape(-1, 1, 8, 8) / np.float32(16.0)
    return x, labels.astype(np.int64)


# ----------------------------------------------------------------------------- IDX parsing

# IDX type code -> big-endian NumPy dtype
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_bytes(path):
    """The file's bytes, gunzipped when it starts with the gzip magic number."""
    path = Path(path)
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(f"IDX file {path}: corrupt or truncated gzip data ({e})") from None
    return data


def read_idx(path):
    """Read one IDX file (raw or gzip-compressed) into a native-endian NumPy array.

    The header is two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions, then each dimension as a big-endian
    uint32; the data follows, big-endian, and must fill the rest of the file exactly. Anything
    else raises ValueError naming the file.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(f"IDX file {path}: {len(data)} bytes is too short for an IDX header "
                         f"(4 bytes at least)")
    if data[0] != 0 or data[1] != 0:
        raise ValueError(f"IDX file {path}: bad magic number 0x{data[:4].hex()} (an IDX file "
                         f"starts with two zero bytes); not an IDX file")
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"IDX file {path}: unknown data type code 0x{code:02x} (expected one "
                         f"of {', '.join(f'0x{c:02x}' for c in _IDX_DTYPES)})")
    if ndim == 0:
        raise ValueError(f"IDX file {path}: header says 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"IDX file {path}: truncated header: {ndim} dimensions need "
                         f"{header} bytes, the file has {len(data)}")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = math.prod(shape) * dtype.itemsize          # Python ints: no overflow
    got = len(data) - header
    if got != expected:
        what = "truncated" if got < expected else "has trailing bytes"
        raise ValueError(f"IDX file {path}: {what}: shape {shape} of {dtype.name} needs "
                         f"{expected:,} data bytes, found {got:,}")
    try:
        arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    except ValueError as e:
        raise ValueError(f"IDX file {path}: cannot read shape {shape} of {dtype.name} ({e})") \
            from None
    return arr.astype(dtype.newbyteorder("="))


# ----------------------------------------------------------------------------- MNIST-style sets

_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# MD5 of each published .gz file. These are the checksums published with the data sets and used
# by torchvision's MNIST/FashionMNIST loaders and many others; they identify the files, they are
# not a security measure.
_SOURCES = {
    "mnist": {
        "mirrors": ("https://ossci-datasets.s3.amazonaws.com/mnist/",
                    "https://storage.googleapis.com/cvdf-datasets/mnist/"),
        "md5": {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    },
    "fashion_mnist": {
        "mirrors": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/"
                    "data/fashion/"),
        "md5": {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    },
}

_DOWNLOAD_TIMEOUT_S = 60


def default_cache_dir():
    """Where data sets are cached: ``$NUMBANET_DATA`` if set, else ``~/.cache/numbanet``."""
    env = os.environ.get("NUMBANET_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "numbanet"


def _find(directory, base):
    """The raw or gzipped file for ``base`` in ``directory``, or None."""
    for name in (base, base + ".gz"):
        p = directory / name
        if p.is_file():
            return p
    return None


def _md5(path):
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _download(name, filename, directory):
    """Fetch ``filename`` from the first mirror that answers, verify its MD5, move it in place.

    A file whose checksum does not match is deleted and raises ValueError; if no mirror can be
    reached, OSError lists what each one answered.
    """
    src = _SOURCES[name]
    want = src["md5"][filename]
    target = directory / filename
    part = directory / (filename + ".part")
    errors = []
    for mirror in src["mirrors"]:
        url = mirror + filename
        try:
            with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as r, \
                    open(part, "wb") as f:
                shutil.copyfileobj(r, f)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            part.unlink(missing_ok=True)
            errors.append(f"{url}: {e}")
            continue
        got = _md5(part)
        if got != want:
            part.unlink(missing_ok=True)
            raise ValueError(f"{name}: checksum mismatch for {filename} downloaded from {url}: "
                             f"MD5 {got}, expected {want}; the partial file was deleted")
        os.replace(part, target)
        return target
    raise OSError(f"{name}: could not download {filename}; tried:\n  " + "\n  ".join(errors))


def _load_idx_set(name, title, path, download, cache_dir):
    func = f"load_{name}"
    if path is not None and cache_dir is not None:
        raise ValueError(f"{func}: give path (a directory holding the files) or cache_dir (the "
                         f"cache root), not both; got path={str(path)!r}, "
                         f"cache_dir={str(cache_dir)!r}")
    if not isinstance(download, (bool, np.bool_)):
        raise TypeError(f"{func}: download must be True or False, got {download!r}")
    for arg, v in (("path", path), ("cache_dir", cache_dir)):
        if v is not None and not isinstance(v, (str, os.PathLike)):
            raise TypeError(f"{func}: {arg} must be a str or os.PathLike, got "
                            f"{type(v).__name__}")
    if path is not None:
        directory = Path(path).expanduser()
    else:
        root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        directory = root / name

    found = {key: _find(directory, base) for key, base in _FILES.items()}
    missing = [_FILES[k] for k, p in found.items() if p is None]
    if missing and download:
        directory.mkdir(parents=True, exist_ok=True)
        for key, base in _FILES.items():
            if found[key] is None:
                found[key] = _download(name, base + ".gz", directory)
    elif missing:
        raise FileNotFoundError(
            f"{func}: {title} files not found in {directory}: missing "
            f"{', '.join(m + '[.gz]' for m in missing)}. Pass download=True to fetch them "
            f"into that directory, or copy the four IDX files "
            f"({', '.join(b + '.gz' for b in _FILES.values())}) there yourself, or pass "
            f"path=<directory holding them>. Without path the directory is <cache>/{name}, "
            f"<cache> being cache_dir, $NUMBANET_DATA or ~/.cache/numbanet.")

    arrays = {k: read_idx(p) for k, p in found.items()}
    out = []
    for split in ("train", "test"):
        ip, lp = found[f"{split}_images"], found[f"{split}_labels"]
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
            raise ValueError(f"{func}: {ip} holds {images.dtype} of shape {images.shape}; "
                             f"expected uint8 images of shape (N, 28, 28)")
        if labels.dtype != np.uint8 or labels.ndim != 1:
            raise ValueError(f"{func}: {lp} holds {labels.dtype} of shape {labels.shape}; "
                             f"expected uint8 labels of shape (N,)")
        if len(images) != len(labels):
            raise ValueError(f"{func}: {ip} has {len(images)} images but {lp} has "
                             f"{len(labels)} labels")
        if labels.size and labels.max() > 9:
            raise ValueError(f"{func}: {lp} holds label {int(labels.max())}; expected 0..9")
        x = images.reshape(-1, 1, 28, 28).astype(np.float32) / np.float32(255.0)
        out.append((x, labels.astype(np.int64)))
    return tuple(out)


def load_mnist(path=None, download=False, cache_dir=None):
    """MNIST handwritten digits (LeCun, Cortes, Burges): 60000 training and 10000 test images.

    Reads train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and
    t10k-labels-idx1-ubyte (each raw or ``.gz``) from the directory ``path``; by default from
    ``<cache>/mnist`` where ``<cache>`` is ``cache_dir``, ``$NUMBANET_DATA`` or
    ``~/.cache/numbanet``. With ``download=True`` missing files are fetched from public mirrors
    and checked against the published MD5 sums (a mismatch deletes the file and raises).

    Returns ``((x_train, y_train), (x_test, y_test))``: ``x`` float32 (N, 1, 28, 28) in [0, 1],
    ``y`` int64 labels 0..9. Every file's IDX header, size, dtype and shape are verified, so a
    corrupt, truncated or foreign file raises ValueError naming it; missing files raise
    FileNotFoundError saying where they were looked for.
    """
    return _load_idx_set("mnist", "MNIST", path, download, cache_dir)


def load_fashion_mnist(path=None, download=False, cache_dir=None):
    """Fashion-MNIST (Xiao, Rasul, Vollgraf, Zalando Research, 2017): 28x28 grey images of ten
    kinds of clothing, 60000 training and 10000 test, in MNIST's IDX format.

    Same files, arguments, checks and return values as ``load_mnist``; the default directory is
    ``<cache>/fashion_mnist``. Labels: 0 T-shirt/top, 1 trouser, 2 pullover, 3 dress, 4 coat,
    5 sandal, 6 shirt, 7 sneaker, 8 bag, 9 ankle boot.
    """
    return _load_idx_set("fashion_mnist", "Fashion-MNIST", path, download, cache_dir)
