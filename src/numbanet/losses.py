"""Losses (Keras names and semantics: probabilities by default, mean over the batch).

``loss(y_true, y_pred) -> float`` and ``loss.gradient(y_true, y_pred)`` work on NumPy arrays;
the model calls ``forward``/``backward`` with its backend so the arithmetic stays on the device.
"""
import numpy as np

from .backend import get_backend

EPSILON = 1e-7


class Loss:
    """Base class: binds ``<kernel>_forward``/``<kernel>_backward`` (``_logits`` when asked)."""

    kernel = None
    fuses_with = None          # the output activation whose gradient this loss can absorb
    sparse = False

    def __init__(self, from_logits=False, name=None):
        self.from_logits = bool(from_logits)
        self.name = name or type(self).__name__

    def _args(self):
        return ()

    def _kernel(self, logits):
        if logits:
            return self.kernel + "_logits", ()
        return self.kernel, self._args()

    def prepare_targets(self, y_true, output_shape, dtype):
        """Check ``y_true`` against the model's per-sample ``output_shape``; return a C-contiguous
        host array of the dtype the kernels take."""
        y = np.asarray(y_true)
        if y.dtype.kind not in "fiub":
            raise TypeError(f"{self.name}: targets must be numeric, got dtype {y.dtype}")
        expected = tuple(output_shape)
        if y.shape[1:] != expected and not (y.ndim == 1 and expected == (1,)):
            raise ValueError(f"{self.name}: targets of shape {y.shape} do not match the model "
                             f"output shape {(None,) + expected}")
        return np.ascontiguousarray(y.reshape((len(y),) + expected), dtype=dtype)

    def forward(self, backend, y_true, y_pred, logits=False):
        """Mean loss as a backend array of shape (1,)."""
        name, args = self._kernel(logits or self.from_logits)
        out = backend.empty((1,), y_pred.dtype)
        getattr(backend, name + "_forward")(y_true, self._2d(y_pred), *args, out)
        return out

    def backward(self, backend, y_true, y_pred, logits=False):
        """d(mean loss)/d(y_pred) (or d/d(logits)) as a backend array shaped like ``y_pred``."""
        name, args = self._kernel(logits or self.from_logits)
        grad = backend.empty(y_pred.shape, y_pred.dtype)
        getattr(backend, name + "_backward")(y_true, self._2d(y_pred), *args, self._2d(grad))
        return grad

    def _2d(self, a):
        return a.reshape(a.shape[0], -1)

    def _host(self, y_true, y_pred):
        y_pred = np.asarray(y_pred)
        if y_pred.dtype not in (np.float32, np.float64):
            y_pred = y_pred.astype(np.float64 if y_pred.dtype.kind == "f" else np.float32)
        if y_pred.ndim < 1 or len(y_pred) < 1:
            raise ValueError(f"{self.name}: y_pred must have a non-empty batch axis, got shape "
                             f"{y_pred.shape}")
        y_pred = np.ascontiguousarray(y_pred)
        shape = y_pred.shape[1:] if y_pred.ndim > 1 else (1,)
        y_true = self.prepare_targets(y_true, shape, self._target_dtype(y_pred.dtype))
        if len(y_true) != len(y_pred):
            raise ValueError(f"{self.name}: y_true has {len(y_true)} samples, y_pred "
                             f"{len(y_pred)}")
        return y_true, y_pred.reshape((len(y_pred),) + shape)

    def _target_dtype(self, dtype):
        return dtype

    def __call__(self, y_true, y_pred):
        y_true, y_pred = self._host(y_true, y_pred)
        return float(self.forward(get_backend("cpu"), y_true, y_pred)[0])

    def gradient(self, y_true, y_pred):
        shape = np.shape(y_pred)
        y_true, y_pred = self._host(y_true, y_pred)
        return self.backward(get_backend("cpu"), y_true, y_pred).reshape(shape)

    def get_config(self):
        return {"from_logits": self.from_logits, "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class MeanSquaredError(Loss):
    """mean((y_pred - y_true)^2)."""
    kernel = "mse"

    def __init__(self, name=None):
        super().__init__(False, name)

    def _kernel(self, logits):
        return self.kernel, ()

    def get_config(self):
        return {"name": self.name}


class MeanAbsoluteError(MeanSquaredError):
    """mean(|y_pred - y_true|)."""
    kernel = "mae"


class Huber(MeanSquaredError):
    """Quadratic for |error| <= delta, linear beyond."""
    kernel = "huber"

    def __init__(self, delta=1.0, name=None):
        super().__init__(name)
        if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not delta > 0 \
                or not np.isfinite(delta):
            raise ValueError(f"Huber: delta must be a positive finite float, got {delta!r}")
        self.delta = float(delta)

    def _kernel(self, logits):
        return self.kernel, (self.delta,)

    def get_config(self):
        return {**super().get_config(), "delta": self.delta}


class BinaryCrossentropy(Loss):
    """Binary crossentropy on probabilities (clipped to [1e-7, 1 - 1e-7]) or logits."""
    kernel = "binary_crossentropy"
    fuses_with = "sigmoid"

    def _args(self):
        return (EPSILON,)


class CategoricalCrossentropy(BinaryCrossentropy):
    """Crossentropy against one-hot (or soft) targets; the softmax output's gradient fuses to p - y."""
    kernel = "categorical_crossentropy"
    fuses_with = "softmax"


class SparseCategoricalCrossentropy(CategoricalCrossentropy):
    """Crossentropy against integer class labels."""
    kernel = "sparse_categorical_crossentropy"
    sparse = True

    def prepare_targets(self, y_true, output_shape, dtype):
        y = np.asarray(y_true)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:
            raise ValueError(f"{self.name}: labels must have shape (batch,), got {y.shape}")
        if len(output_shape) != 1:
            raise ValueError(f"{self.name}: needs model outputs of shape (batch, classes), got "
                             f"{(None,) + tuple(output_shape)}")
        if y.dtype.kind == "f":
            if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
                raise ValueError(f"{self.name}: labels must be integers, got non-integer values")
        elif y.dtype.kind not in "iub":
            raise TypeError(f"{self.name}: labels must be integers, got dtype {y.dtype}")
        classes = output_shape[0]
        bad = np.flatnonzero((y < 0) | (y >= classes))
        if bad.size:
            raise ValueError(f"{self.name}: labels must be in [0, {classes}), got {y[bad[0]].item()!r} "
                             f"at index {bad[0]}")
        return np.ascontiguousarray(y, dtype=np.int64)


LOSSES = {
    "mse": MeanSquaredError, "mean_squared_error": MeanSquaredError,
    "mae": MeanAbsoluteError, "mean_absolute_error": MeanAbsoluteError,
    "huber": Huber,
    "binary_crossentropy": BinaryCrossentropy,
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
}
CLASSES = {cls.__name__: cls for cls in set(LOSSES.values())}


def get(loss):
    """A loss instance from a name or an instance."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, str) and loss.lower() in LOSSES:
        return LOSSES[loss.lower()]()
    raise ValueError(f"unknown loss {loss!r}; valid names are {', '.join(sorted(LOSSES))}")


def register(cls, *names):
    """Make a loss class known by name and to ``load_model``."""
    CLASSES[cls.__name__] = cls
    for n in names:
        LOSSES[n] = cls
    return cls
