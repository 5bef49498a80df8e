"""``keras.utils`` names a Keras user reaches for, on numbanet's own implementations."""
import random

import numpy as np

from . import random as _random
from .data import one_hot
from .text.sequences import pad_sequences

__all__ = ["to_categorical", "normalize", "pad_sequences", "set_random_seed"]


def to_categorical(x, num_classes=None):
    """Class labels -> one-hot rows, as ``keras.utils.to_categorical``: shape
    ``x.shape + (num_classes,)``, a trailing axis of size 1 dropped first ((N, 1) -> (N, C)).
    float32 (Keras gives float64; numbanet models train in float32). Bad labels raise as
    ``numbanet.data.one_hot`` does."""
    x = np.asarray(x)
    if x.ndim > 1 and x.shape[-1] == 1:
        x = x.reshape(x.shape[:-1])
    return one_hot(x, num_classes)


def normalize(x, axis=-1, order=2):
    """``x`` divided by its ``order``-norm along ``axis`` (``keras.utils.normalize``; an all-zero
    slice stays zero)."""
    x = np.asarray(x)
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"normalize: axis must be an integer, got {axis!r}")
    if x.dtype.kind not in "iuf" or x.dtype == np.bool_:
        raise TypeError(f"normalize: x must be numeric, got dtype {x.dtype}")
    if isinstance(order, bool) or order not in (1, 2, np.inf, -np.inf) and \
            not (isinstance(order, (int, float)) and order > 0):
        raise ValueError(f"normalize: order must be a positive number or inf, got {order!r}")
    norm = np.atleast_1d(np.linalg.norm(x, order, axis, keepdims=True))
    norm[norm == 0] = 1
    return x / norm


def set_random_seed(seed):
    """Seed Python's ``random``, NumPy's global generator and numbanet's (``nb.seed``), as
    ``keras.utils.set_random_seed`` seeds Python, NumPy and the backend: a script that shuffles
    with ``np.random`` reruns the same."""
    _random.seed(seed)             # checks seed: a non-negative integer
    random.seed(int(seed))
    np.random.seed(int(seed) % 2**32)
