"""Weight initializers by name (Keras semantics: 'normal' variants draw from a truncated normal)."""
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


INITIALIZERS = {
    "glorot_uniform": _variance_scaling(1.0, "fan_avg", "uniform"),
    "glorot_normal": _variance_scaling(1.0, "fan_avg", "normal"),
    "he_uniform": _variance_scaling(2.0, "fan_in", "uniform"),
    "he_normal": _variance_scaling(2.0, "fan_in", "normal"),
    "lecun_uniform": _variance_scaling(1.0, "fan_in", "uniform"),
    "lecun_normal": _variance_scaling(1.0, "fan_in", "normal"),
    "zeros": _constant(0.0),
    "ones": _constant(1.0),
}


def get(name, where="initializer"):
    """An initializer ``f(shape, fan_in, fan_out, dtype, rng) -> ndarray`` by name, or a callable."""
    if callable(name):
        return name
    if isinstance(name, str) and name.lower() in INITIALIZERS:
        return INITIALIZERS[name.lower()]
    raise ValueError(f"{where}: unknown initializer {name!r}; valid names are "
                     f"{', '.join(sorted(INITIALIZERS))}")


def initialize(name, shape, fan_in, fan_out, dtype, rng=None):
    """Draw an array of ``shape`` with the named initializer from numbanet's global generator."""
    rng = _random.get_rng() if rng is None else rng
    return np.ascontiguousarray(get(name)(tuple(shape), fan_in, fan_out, np.dtype(dtype), rng),
                                dtype=dtype)
