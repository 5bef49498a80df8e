"""Weight regularizers (Keras names and semantics): ``L1``, ``L2`` and ``L1L2`` (elastic net).

penalty(w) = l1 * sum|w| + l2 * sum(w^2) (no 1/2 on the L2 term, as Keras), so its gradient is
l1 * sign(w) + 2 * l2 * w. A layer with ``kernel_regularizer=`` keeps the regularizer; the model
adds ``reg.penalty(backend, kernel)`` to the reported loss and, after the backward pass, calls
``reg.add_gradient(backend, kernel, kernel_grad)``, which adds the penalty's gradient into the
kernel's gradient in place. Both run the ``regularization`` kernels on the layer's backend.
"""
import math

import numpy as np

from .backend import get_backend

__all__ = ["Regularizer", "L1", "L2", "L1L2", "get", "serialize"]


def _factor(value, name, where):
    """A validated regularization factor: a finite, non-negative real number."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or value < 0:
        raise ValueError(f"{where}: {name} must be a finite non-negative number, got {value!r}")
    return float(value)


class Regularizer:
    """Elastic-net penalty with factors ``self.l1`` and ``self.l2`` (set by the subclasses)."""

    l1 = 0.0
    l2 = 0.0

    def penalty(self, backend, w):
        """The penalty of the backend array ``w`` as a backend array of shape (1,), w's dtype."""
        out = backend.empty((1,), w.dtype)
        backend.l1l2_penalty(w.reshape(w.size), self.l1, self.l2, out)
        return out

    def add_gradient(self, backend, w, grad):
        """grad += d penalty / d w, in place (``grad`` has w's shape, C-contiguous)."""
        if self.l1 or self.l2:
            backend.l1l2_penalty_backward(w.reshape(w.size), self.l1, self.l2,
                                          grad.reshape(grad.size))

    def __call__(self, w):
        """The penalty of a host array as a Python float (computed by the CPU kernel)."""
        w = np.asarray(w)
        dtype = w.dtype if w.dtype in (np.float32, np.float64) else np.float64
        w = np.ascontiguousarray(w, dtype=dtype)
        return float(self.penalty(get_backend("cpu"), w)[0])

    def get_config(self):
        return {"l1": self.l1, "l2": self.l2}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash((type(self).__name__, self.l1, self.l2))

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class L1(Regularizer):
    """l1 * sum|w|."""

    def __init__(self, l1=0.01):
        self.l1 = _factor(l1, "l1", "L1")

    def get_config(self):
        return {"l1": self.l1}


class L2(Regularizer):
    """l2 * sum(w^2)."""

    def __init__(self, l2=0.01):
        self.l2 = _factor(l2, "l2", "L2")

    def get_config(self):
        return {"l2": self.l2}


class L1L2(Regularizer):
    """Elastic net: l1 * sum|w| + l2 * sum(w^2)."""

    def __init__(self, l1=0.0, l2=0.0):
        self.l1 = _factor(l1, "l1", "L1L2")
        self.l2 = _factor(l2, "l2", "L1L2")


CLASSES = {cls.__name__: cls for cls in (L1, L2, L1L2)}
# Names, as Keras' shortcuts: "l1" and "l2" use the class defaults (0.01); "l1_l2" is Keras 2's
# ``l1_l2()`` (0.01 each), since an all-zero regularizer by name would be pointless.
NAMES = {"l1": lambda: L1(), "l2": lambda: L2(), "l1_l2": lambda: L1L2(l1=0.01, l2=0.01)}


def get(identifier, where="regularizer"):
    """A regularizer from None (-> None), a name ("l1", "l2", "l1_l2"), an instance, or a
    ``{"class_name", "config"}`` dict (as written by :func:`serialize`)."""
    if identifier is None or isinstance(identifier, Regularizer):
        return identifier
    if isinstance(identifier, str):
        key = identifier.lower()
        if key in NAMES:
            return NAMES[key]()
        raise ValueError(f"{where}: unknown regularizer {identifier!r}; valid names are "
                         f"{', '.join(NAMES)}")
    if isinstance(identifier, dict):
        name, config = identifier.get("class_name"), identifier.get("config", {})
        if name in CLASSES and isinstance(config, dict):
            try:
                return CLASSES[name].from_config(config)
            except TypeError as e:
                raise ValueError(f"{where}: bad config for {name}: {config!r} ({e})") from None
        raise ValueError(f"{where}: cannot build a regularizer from {identifier!r}; expected "
                         f"{{'class_name': one of {', '.join(CLASSES)}, 'config': {{...}}}}")
    raise ValueError(f"{where}: expected None, a name ({', '.join(NAMES)}), a regularizer or a "
                     f"config dict, got {identifier!r}")


def serialize(regularizer):
    """A JSON-serializable form: None, or ``{"class_name": ..., "config": {...}}``."""
    reg = get(regularizer)
    if reg is None:
        return None
    if type(reg).__name__ not in CLASSES:
        raise ValueError(f"cannot save the custom regularizer {reg!r}; use one of "
                         f"{', '.join(CLASSES)}")
    return {"class_name": type(reg).__name__, "config": reg.get_config()}
