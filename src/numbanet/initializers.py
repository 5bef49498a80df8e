"""Weight initializers by name (Keras semantics: 'normal' variants draw from a truncated normal)."""
import re

import numpy as np

from . import random as _random

# Keras' variance-scaling normal uses a normal truncated at two standard deviations, whose
# standard deviation is this fraction of the untruncated one.
_TRUNC_STD = 0.87962566103423978


def _truncated_normal(rng, shape, std):
    """Normal(0, std) truncated to +-2 std, by redrawing the rejects."""
    out = rng.standard_normal(shape)
    bad = np.abs(out) > 2.0
    while bad.any():
        out[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(out) > 2.0
    return out * std


def _variance_scaling(scale, mode, distribution):
    def init(shape, fan_in, fan_out, dtype, rng):
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[mode]
        var = scale / max(1.0, fan)
        if distribution == "uniform":
            limit = np.sqrt(3.0 * var)
            return rng.uniform(-limit, limit, shape).astype(dtype)
        return _truncated_normal(rng, shape, np.sqrt(var) / _TRUNC_STD).astype(dtype)
    return init


def _constant(value):
    def init(shape, fan_in, fan_out, dtype, rng):
        return np.full(shape, value, dtype=dtype)
    return init


def _orthogonal(gain=1.0):
    """Rows (or columns) orthonormal, from the QR decomposition of a normal matrix (Saxe et al.)."""
    def init(shape, fan_in, fan_out, dtype, rng):
        rows = shape[0]
        cols = int(np.prod(shape)) // rows
        a = rng.standard_normal((max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(a)
        q *= np.sign(np.diag(r))            # make the decomposition unique
        if rows < cols:
            q = q.T
        return (gain * q.reshape(shape)).astype(dtype)
    return init


INITIALIZERS = {
    "glorot_uniform": _variance_scaling(1.0, "fan_avg", "uniform"),
    "glorot_normal": _variance_scaling(1.0, "fan_avg", "normal"),
    "he_uniform": _variance_scaling(2.0, "fan_in", "uniform"),
    "he_normal": _variance_scaling(2.0, "fan_in", "normal"),
    "lecun_uniform": _variance_scaling(1.0, "fan_in", "uniform"),
    "lecun_normal": _variance_scaling(1.0, "fan_in", "normal"),
    "zeros": _constant(0.0),
    "ones": _constant(1.0),
    "orthogonal": _orthogonal(),
    "truncated_normal": lambda shape, fan_in, fan_out, dtype, rng:
        _truncated_normal(rng, shape, 0.05).astype(dtype),
    "random_normal": lambda shape, fan_in, fan_out, dtype, rng:
        (rng.standard_normal(shape) * 0.05).astype(dtype),
    "random_uniform": lambda shape, fan_in, fan_out, dtype, rng:
        rng.uniform(-0.05, 0.05, shape).astype(dtype),
}
INITIALIZERS["uniform"] = INITIALIZERS["random_uniform"]       # Keras' Embedding default


class Constant:
    """Every element equal to ``value``."""

    def __init__(self, value=0.0):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            raise ValueError(f"Constant: value must be a finite number, got {value!r}")
        self.value = float(value)

    def __call__(self, shape, fan_in, fan_out, dtype, rng):
        return np.full(shape, self.value, dtype=dtype)


class TruncatedNormal:
    """Normal(mean, stddev) truncated to +-2 stddev (Keras' TruncatedNormal)."""

    def __init__(self, mean=0.0, stddev=0.05):
        if not (isinstance(stddev, (int, float)) and stddev > 0):
            raise ValueError(f"TruncatedNormal: stddev must be positive, got {stddev!r}")
        self.mean, self.stddev = float(mean), float(stddev)

    def __call__(self, shape, fan_in, fan_out, dtype, rng):
        return (self.mean + _truncated_normal(rng, shape, self.stddev)).astype(dtype)


class Orthogonal:
    """An orthogonal matrix (the kernel flattened to (shape[0], rest)) times ``gain``."""

    def __init__(self, gain=1.0):
        if not (isinstance(gain, (int, float)) and np.isfinite(gain)):
            raise ValueError(f"Orthogonal: gain must be a finite number, got {gain!r}")
        self.gain = float(gain)

    def __call__(self, shape, fan_in, fan_out, dtype, rng):
        return _orthogonal(self.gain)(shape, fan_in, fan_out, dtype, rng)


CLASSES = {cls.__name__: cls for cls in (Constant, TruncatedNormal, Orthogonal)}


def serialize(init):
    """A JSON-serializable form of an initializer given by name or as one of the classes above."""
    if isinstance(init, (str, dict)):
        return init
    if type(init).__name__ in CLASSES:
        return {"class_name": type(init).__name__, "config": dict(vars(init))}
    raise ValueError(f"cannot save the custom initializer {init!r}; use a name or one of "
                     f"{', '.join(CLASSES)}")


def get(name, where="initializer"):
    """An initializer ``f(shape, fan_in, fan_out, dtype, rng) -> ndarray`` by name, or a callable
    (a dict from ``serialize`` is turned back into its object)."""
    if isinstance(name, dict) and name.get("class_name") in CLASSES:
        return CLASSES[name["class_name"]](**name.get("config", {}))
    if callable(name):
        return name
    if isinstance(name, str):
        key = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()    # Keras' "HeNormal" too
        if key in INITIALIZERS:
            return INITIALIZERS[key]
    raise ValueError(f"{where}: unknown initializer {name!r}; valid names are "
                     f"{', '.join(sorted(INITIALIZERS))}")


def initialize(name, shape, fan_in, fan_out, dtype, rng=None):
    """Draw an array of ``shape`` with the named initializer from numbanet's global generator."""
    rng = _random.get_rng() if rng is None else rng
    return np.ascontiguousarray(get(name)(tuple(shape), fan_in, fan_out, np.dtype(dtype), rng),
                                dtype=dtype)
