"""Random numbers: one global generator, so ``nb.seed(n)`` makes initialization, shuffling,
dropout masks and ``nb.random.normal`` / ``uniform`` reproducible, on both devices."""
import numbers

import numpy as np

_rng = np.random.default_rng()


def seed(n):
    """Seed numbanet's global generator (weights, shuffling, dropout masks, random tensors)."""
    global _rng
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {n!r}")
    _rng = np.random.default_rng(int(n))


def get_rng():
    """The global generator (re-read after every ``seed``)."""
    return _rng


def spawn():
    """A new generator drawn from the global one (for a layer or a data loader of its own)."""
    return np.random.default_rng(_rng.integers(0, 2**63 - 1))


def _draw(what, shape, dtype, seed, a, b, names):
    """(backend, generator, shape, dtype) for a random tensor, after checking the arguments."""
    from . import engine
    from .layers.base import check_dtype
    where = f"nb.random.{what}"
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    try:
        shape = tuple(int(d) for d in shape)
    except TypeError:
        raise ValueError(f"{where}: shape must be a tuple of sizes, got {shape!r}") from None
    if any(d < 0 for d in shape):
        raise ValueError(f"{where}: shape must hold sizes >= 0, got {shape}")
    dtype = check_dtype(dtype, where)
    for name, v in zip(names, (a, b)):
        if not isinstance(v, numbers.Real) or isinstance(v, bool) or not np.isfinite(v):
            raise ValueError(f"{where}: {name} must be a finite number, got {v!r}")
    if seed is None:
        rng = _rng
    elif isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0:
        rng = np.random.default_rng(int(seed))
    else:
        raise ValueError(f"{where}: seed must be None or an integer >= 0, got {seed!r}")
    return engine.current_backend(), rng, shape, dtype


def _affine(t, scale, shift):
    if scale != 1.0:
        t = t * scale
    if shift != 0.0:
        t = t + shift
    return t


def normal(shape, mean=0.0, stddev=1.0, dtype="float32", seed=None):
    """A tensor of normal numbers (``mean``, ``stddev``) on the current device: inside a layer's
    or a model's ``call``, that layer's device. ``seed=None`` draws from the global generator
    (reproducible after ``nb.seed``); an integer seed gives the same numbers at every call. A
    constant under a ``GradientTape``: ``mu + exp(0.5 * log_var) * eps`` differentiates through
    ``mu`` and ``log_var``."""
    from .engine import Tensor
    be, rng, shape, dtype = _draw("normal", shape, dtype, seed, mean, stddev, ("mean", "stddev"))
    return _affine(Tensor(be.normal(shape, dtype, rng), be), float(stddev), float(mean))


def uniform(shape, minval=0.0, maxval=1.0, dtype="float32", seed=None):
    """A tensor of uniform numbers in [minval, maxval) on the current device (see ``normal``
    for the device and ``seed``)."""
    from .engine import Tensor
    be, rng, shape, dtype = _draw("uniform", shape, dtype, seed, minval, maxval,
                                  ("minval", "maxval"))
    if not maxval > minval:
        raise ValueError(f"nb.random.uniform: maxval must be greater than minval, got "
                         f"minval={minval!r}, maxval={maxval!r}")
    return _affine(Tensor(be.uniform(shape, dtype, rng), be), float(maxval) - float(minval),
                   float(minval))
