"""Activation functions by name, dispatched to the ``<name>_forward``/``<name>_backward`` kernels."""
import math

from .kernels.scalar import ACTIVATION_CODES, DEFAULT_ALPHA

# name -> (kernel name, default alpha): the elementwise activations of kernels/scalar.py and softmax
ACTIVATIONS = {name: (name, DEFAULT_ALPHA.get(name, 0.0))
               for name in ACTIVATION_CODES + ("softmax",)}


def check_name(name, where="activation"):
    """Validate an activation name (None means linear) and return the canonical name."""
    if name is None:
        return "linear"
    if not isinstance(name, str) or name.lower() not in ACTIVATIONS:
        raise ValueError(f"{where}: unknown activation {name!r}; valid names are "
                         f"{', '.join(sorted(ACTIVATIONS))}")
    return name.lower()


class ActivationOp:
    """One activation applied through the backend's kernels (stateless: the caller keeps the
    forward's input and output for backward).

    Elementwise activations run on the flattened array; softmax runs row-wise over the last axis.
    """

    def __init__(self, name, alpha=None):
        self.name = check_name(name)
        kernel, default = ACTIVATIONS[self.name]
        self.alpha = float(default if alpha is None else alpha)
        self.kernel = kernel
        self.code = ACTIVATION_CODES.index(kernel) if kernel in ACTIVATION_CODES else None

    @property
    def is_identity(self):
        return self.name == "linear"

    @property
    def fusable(self):
        """Elementwise and not the identity: a producing kernel can apply it (``code``)."""
        return self.code is not None and not self.is_identity

    def _view(self, backend, a):
        shape = tuple(a.shape)      # device arrays' shapes may not index from the end
        size = math.prod(shape)
        return backend.kernel_view(
            a, (size // shape[-1], shape[-1]) if self.name == "softmax" else (size,))

    def forward(self, backend, x, out=None):
        """The activation of ``x``; written into ``out`` when given (may be ``x`` itself unless
        backward needs ``x``)."""
        if self.is_identity:
            return x
        if out is None:
            out = backend.empty(x.shape, x.dtype)
        getattr(backend, self.kernel + "_forward")(self._view(backend, x), self.alpha,
                                                   self._view(backend, out))
        return out

    def backward(self, backend, x, y, grad_out):
        """d loss / d x from d loss / d y, given the forward's input ``x`` and output ``y``."""
        if self.is_identity:
            return grad_out
        grad_in = backend.empty(grad_out.shape, grad_out.dtype)
        getattr(backend, self.kernel + "_backward")(
            self._view(backend, x), self._view(backend, y),
            self._view(backend, grad_out), self.alpha, self._view(backend, grad_in))
        return grad_in
