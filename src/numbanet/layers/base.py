"""The Layer base class: building, shape and dtype checks, parameters and their gradients."""
import re

import numpy as np

from .. import initializers
from ..backend import get_backend

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_counts = {}


def _auto_name(cls):
    base = re.sub(r"(?<!^)(?=[A-Z][a-z])", "_", cls.__name__).lower()
    _counts[base] = _counts.get(base, 0) + 1
    return base if _counts[base] == 1 else f"{base}_{_counts[base] - 1}"


def check_dtype(dtype, where):
    """np.dtype of a float32/float64 spec (None passes through)."""
    if dtype is None:
        return None
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in FLOAT_DTYPES:
        raise ValueError(f"{where}: dtype must be float32 or float64, got {dtype!r}")
    return dt


def check_positive_int(value, name, where, allow_zero=False):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or \
            value < (0 if allow_zero else 1):
        kind = "a non-negative" if allow_zero else "a positive"
        raise ValueError(f"{where}: {name} must be {kind} integer, got {value!r}")
    return int(value)


def check_pair(value, name, where, allow_zero=False):
    """An int or a pair of ints -> a validated (a, b) tuple."""
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2:
        raise ValueError(f"{where}: {name} must be an int or a pair of ints, got {value!r}")
    return tuple(check_positive_int(v, name, where, allow_zero) for v in pair)


class Layer:
    """Base layer: ``build(input_shape)``, ``forward(x, training)``, ``backward(grad_out)``.

    ``params`` and ``grads`` are dicts with the same keys. Shapes exclude the batch axis. A layer
    builds itself on its first ``forward`` and takes its dtype from that input unless ``dtype=``
    says otherwise (float64 in -> float64; float32 otherwise).
    """

    def __init__(self, name=None, dtype=None):
        where = type(self).__name__
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"{where}: name must be a non-empty string, got {name!r}")
        self.name = name or _auto_name(type(self))
        self.dtype = check_dtype(dtype, f"{where} {self.name!r}")
        self.built = False
        self.params, self.grads = {}, {}
        # Non-trainable state saved with the model (e.g. running statistics).
        self.buffers = {}
        self.backend = get_backend("cpu")
        self.input_shape = self.output_shape = None
        # The model clears this on its first layer, whose input gradient nobody needs.
        self.needs_input_grad = True

    # -- building -------------------------------------------------------------------------------
    def build(self, input_shape):
        """Create the parameters for inputs of ``input_shape`` (without the batch axis)."""
        shape = tuple(input_shape)
        if not shape or any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1
                            for d in shape):
            raise ValueError(f"{self!r}: input shape must be a tuple of positive ints "
                             f"(batch axis excluded), got {input_shape!r}")
        self.input_shape = tuple(int(d) for d in shape)
        if self.dtype is None:
            self.dtype = np.dtype(np.float32)
        self.output_shape = self.compute_output_shape(self.input_shape)
        self.create_params(self.input_shape)
        self.built = True

    def compute_output_shape(self, input_shape):
        return input_shape

    def create_params(self, input_shape):
        """Subclasses with parameters create them here with ``add_param``."""

    def add_param(self, key, shape, initializer, fan_in=1, fan_out=1):
        value = initializers.initialize(initializer, shape, fan_in, fan_out, self.dtype)
        self.params[key] = self.backend.asarray(value)
        self.grads[key] = self.backend.zeros(tuple(shape), self.dtype)

    def set_backend(self, backend):
        """Switch to another backend; the model moves ``params``, ``grads`` and ``buffers``."""
        self.backend = backend

    # -- running --------------------------------------------------------------------------------
    def __call__(self, x, training=False):
        return self.forward(x, training)

    def forward(self, x, training=False):
        """Output for a batch ``x``; builds the layer on first use."""
        if not hasattr(x, "shape") or not hasattr(x, "dtype"):
            x = np.asarray(x)
        if not self.built:
            if np.dtype(x.dtype).kind not in "fiub":
                raise TypeError(f"{self!r}: expected a numeric array, got dtype {x.dtype}")
            if self.dtype is None and np.dtype(x.dtype) == np.float64:
                self.dtype = np.dtype(np.float64)
            self.build(x.shape[1:])
        x = self.check_input(x)
        return self.call(x, training)

    def check_input(self, x):
        """Reject a wrong rank or shape with a message naming this layer; cast host inputs."""
        expected = (None,) + self.input_shape
        if len(x.shape) != len(expected) or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"{self!r}: expected input of shape {expected} (None = batch), "
                             f"got {tuple(x.shape)}")
        if x.shape[0] < 1:
            raise ValueError(f"{self!r}: got an empty batch of shape {tuple(x.shape)}")
        if np.dtype(x.dtype) != self.dtype:
            if isinstance(x, np.ndarray) and not self.backend.is_device:
                if x.dtype.kind not in "fiub":
                    raise TypeError(f"{self!r}: expected a numeric array, got dtype {x.dtype}")
                return np.ascontiguousarray(x, dtype=self.dtype)
            raise TypeError(f"{self!r}: expected {self.dtype} input, got {x.dtype}")
        if isinstance(x, np.ndarray) and not x.flags.c_contiguous:
            x = np.ascontiguousarray(x)
        return x

    def call(self, x, training):
        raise NotImplementedError(f"{type(self).__name__} must define call()")

    def backward(self, grad_out):
        """d loss / d input from d loss / d output; fills ``self.grads``."""
        raise NotImplementedError(f"{type(self).__name__} must define backward()")

    # -- bookkeeping ----------------------------------------------------------------------------
    def count_params(self):
        return int(sum(int(np.prod(p.shape)) for p in self.params.values()))

    def get_config(self):
        """Constructor arguments (JSON-serializable), so ``type(layer)(**config)`` rebuilds it."""
        return {"name": self.name, "dtype": None if self.dtype is None else self.dtype.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"{type(self).__name__} {self.name!r}"
