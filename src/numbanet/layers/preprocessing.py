"""Keras' Rescaling, Normalization and CategoryEncoding preprocessing layers, written with
``nb.ops``."""
import numpy as np

from .. import engine, ops
from .. import validation as V
from .base import Layer, fmt_shape

__all__ = ["Rescaling", "Normalization", "CategoryEncoding"]

#: Keras' backend.epsilon(): the floor of the standard deviation Normalization divides by
EPSILON = 1e-7


class Rescaling(Layer):
    """``x * scale + offset`` (Keras), e.g. ``Rescaling(1 / 255)`` for pixels in [0, 1] or
    ``Rescaling(1 / 127.5, offset=-1)`` for [-1, 1]."""

    supports_masking = True
    free_axes = "all"
    output_layout = "keep"

    def __init__(self, scale, offset=0.0, **kwargs):
        super().__init__(**kwargs)
        where = f"Rescaling {self.name!r}"
        for name, v in (("scale", scale), ("offset", offset)):
            if not V.is_real(v) or not np.isfinite(v):
                raise ValueError(f"{where}: {name} must be a finite float, got {v!r}")
        self.scale, self.offset = float(scale), float(offset)

    def call(self, x):
        return x * self.scale + self.offset


class Normalization(Layer):
    """Feature-wise standardization (Keras): ``(x - mean) / max(sqrt(variance), 1e-7)``, or
    with ``invert=True`` the inverse ``mean + x * max(sqrt(variance), 1e-7)``.

    ``axis``: the axis (or tuple of axes) of the input, batch axis 0 included, that keeps a
    mean and variance per index (-1: one per feature); the others are reduced; None: one mean
    and variance for all. The statistics come from ``mean=`` and ``variance=`` (broadcast to
    the kept axes' shape, both or neither), or from ``adapt(data)``: the mean and population
    variance of ``data`` over the reduced axes. They are non-trainable weights (``mean``,
    ``variance``), saved with the model."""

    supports_masking = True
    output_layout = "keep"
    _config_attrs = {"mean": "input_mean", "variance": "input_variance"}

    def __init__(self, axis=-1, mean=None, variance=None, invert=False, **kwargs):
        super().__init__(**kwargs)
        where = f"Normalization {self.name!r}"
        axes = (axis,) if isinstance(axis, (int, np.integer)) else axis
        if axis is not None and (not isinstance(axes, (tuple, list)) or any(
                isinstance(a, bool) or not isinstance(a, (int, np.integer)) for a in axes)):
            raise ValueError(f"{where}: axis must be an int, a tuple of ints or None, got "
                             f"{axis!r}")
        self.axis = None if axis is None else tuple(int(a) for a in axes)
        if (mean is None) != (variance is None):
            raise ValueError(f"{where}: give both mean and variance, or neither (to adapt()); "
                             f"got mean={mean!r}, variance={variance!r}")
        for name, v in (("mean", mean), ("variance", variance)):
            if v is not None and (np.asarray(v).dtype.kind not in "fiub" or
                                  not np.all(np.isfinite(np.asarray(v, dtype=float)))):
                raise ValueError(f"{where}: {name} must be finite numbers, got {v!r}")
        self.input_mean = None if mean is None else np.asarray(mean, dtype=float).tolist()
        self.input_variance = None if variance is None else \
            np.asarray(variance, dtype=float).tolist()
        self.invert = V.FLAG(invert, "invert", where)
        self._keep = None

    def _kept_axes(self, input_shape):
        """The kept axes (of the input with its batch axis), checked."""
        ndim = len(input_shape) + 1
        if self.axis is None:
            return ()
        bad = [a for a in self.axis if not -ndim <= a < ndim]
        if bad:
            raise ValueError(f"{self!r}: axis {self.axis} out of range for input of shape "
                             f"{fmt_shape(input_shape)} (axes -{ndim}..{ndim - 1})")
        keep = tuple(sorted({a % ndim for a in self.axis}))
        if 0 in keep:
            raise ValueError(f"{self!r}: axis {self.axis} keeps the batch axis 0; keep feature "
                             f"axes (1..{ndim - 1} or negative), or axis=None")
        unknown = [a for a in keep if input_shape[a - 1] is None]
        if unknown:
            raise ValueError(f"{self!r}: the kept axes {keep} must have known sizes, got input "
                             f"shape {fmt_shape(input_shape)}")
        return keep

    @property
    def free_axes(self):
        """The reduced axes may change size between calls."""
        if self._keep is None:
            return None
        return tuple(a - 1 for a in range(1, self._ndim) if a not in self._keep)

    def build(self, input_shape):
        self._keep = self._kept_axes(input_shape)
        self._ndim = len(input_shape) + 1
        super().build(input_shape)

    def create_params(self, input_shape):
        shape = tuple(input_shape[a - 1] for a in self._keep) or (1,)
        self.add_weight("mean", shape, "zeros", trainable=False)
        self.add_weight("variance", shape, "ones", trainable=False)
        if self.input_mean is not None:
            for name, v in (("mean", self.input_mean), ("variance", self.input_variance)):
                try:
                    value = np.broadcast_to(np.asarray(v, dtype=self.dtype), shape)
                except ValueError:
                    raise ValueError(f"{self!r}: {name} of shape {np.shape(v)} does not "
                                     f"broadcast to the kept axes' shape {shape}") from None
                self.backend.copy_(self.buffers[name], np.ascontiguousarray(value))

    def adapt(self, data):
        """Set the mean and the (population) variance from ``data`` (an array, batch axis
        first), per index of the kept axes; builds the layer on ``data``'s shape if needed."""
        if self.input_mean is not None:
            raise ValueError(f"{self!r}: adapt() is for a layer without mean= and variance=; "
                             f"this one was given them")
        a = np.asarray(data.numpy() if isinstance(data, engine._TensorLike) else data)
        if a.dtype.kind not in "fiub" or a.ndim < 1 or a.shape[0] < 1:
            raise ValueError(f"{self!r}: adapt() takes a numeric array of samples (batch axis "
                             f"first), got shape {a.shape} and dtype {a.dtype}")
        if not self.built:
            if self.dtype is None and a.dtype == np.float64:
                self.dtype = np.dtype(np.float64)
            self.build(a.shape[1:])
        elif len(a.shape) != self._ndim or any(a.shape[k] != self.input_shape[k - 1]
                                               for k in self._keep):
            raise ValueError(f"{self!r}: adapt() data of shape {a.shape} does not fit the "
                             f"layer's input shape {fmt_shape(self.input_shape)}")
        a = a.astype(np.float64)
        reduce = tuple(k for k in range(a.ndim) if k not in self._keep)
        mean, var = a.mean(axis=reduce), a.var(axis=reduce)
        for name, v in (("mean", mean), ("variance", var)):
            buf = self.buffers[name]
            self.backend.copy_(buf, np.ascontiguousarray(np.reshape(v, buf.shape),
                                                         dtype=self.dtype))

    def _broadcast(self, name):
        shape = tuple(1 if k not in self._keep else self.input_shape[k - 1]
                      for k in range(self._ndim))
        return ops.reshape(self._variable("buffer", name), shape)

    def call(self, x):
        mean, var = self._broadcast("mean"), self._broadcast("variance")
        std = ops.maximum(ops.sqrt(var), EPSILON)
        return mean + x * std if self.invert else (x - mean) / std


class CategoryEncoding(Layer):
    """Integer ids in [0, num_tokens) to float vectors of ``num_tokens`` entries (Keras).

    ``output_mode="multi_hot"``: (batch, k) ids -> (batch, num_tokens), 1 for each id present
    in the sample; ``"count"``: how many times each occurs (weighted by the call argument
    ``count_weights``, of the ids' shape, when given; the output is differentiable in them);
    ``"one_hot"``: (batch,) or (batch, 1) -> (batch, num_tokens), (batch, k) ->
    (batch, k, num_tokens). A (batch,) input is one id per sample in every mode (Keras'
    multi_hot and count would encode the whole batch as one sample). Ids out of range are a
    ValueError. Written with ``nb.ops`` (comparisons with 0..num_tokens-1, then a max or a
    sum); ``sparse=True`` is not supported."""

    input_kind = "int"
    tensor_kwargs = ("count_weights",)
    MODES = ("multi_hot", "one_hot", "count")

    def __init__(self, num_tokens=None, output_mode="multi_hot", **kwargs):
        super().__init__(**kwargs)
        where = f"CategoryEncoding {self.name!r}"
        if num_tokens is None:
            raise ValueError(f"{where}: num_tokens must be set (the number of distinct ids, "
                             f"which are 0..num_tokens-1), got None")
        self.num_tokens = V.Integer(1)(num_tokens, "num_tokens", where)
        if output_mode == "binary":                 # Keras' former name
            output_mode = "multi_hot"
        self.output_mode = V.OneOf(*self.MODES)(output_mode, "output_mode", where)

    @property
    def free_axes(self):
        """The number of ids per sample may change between calls, except for one_hot (whose
        output keeps that axis unless it is 1)."""
        return None if self.output_mode == "one_hot" else "all"

    def compute_output_shape(self, input_shape):
        if len(input_shape) > 1:
            raise ValueError(f"{self!r}: expects ids of shape (batch,) or (batch, k), got input "
                             f"shape {fmt_shape(input_shape)}")
        if self.output_mode == "one_hot" and input_shape and input_shape[0] != 1:
            return (input_shape[0], self.num_tokens)
        return (self.num_tokens,)

    def call(self, inputs, count_weights=None):
        be = self.backend
        ids = be.to_numpy(inputs.value)
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_tokens or
                         (ids.dtype.kind == "f" and not np.all(ids == np.floor(ids)))):
            bad = ids[(ids < 0) | (ids >= self.num_tokens) | (ids != np.floor(ids))][0]
            raise ValueError(f"{self!r}: ids must be integers in [0, {self.num_tokens}) "
                             f"(num_tokens={self.num_tokens}), got {bad.item()!r}")
        if count_weights is not None:
            if self.output_mode != "count":
                raise ValueError(f"{self!r}: count_weights is for output_mode='count', not "
                                 f"{self.output_mode!r}")
            if tuple(count_weights.shape) != tuple(inputs.shape):
                raise ValueError(f"{self!r}: count_weights must have the ids' shape "
                                 f"{tuple(inputs.shape)}, got {tuple(count_weights.shape)}")
        n = int(inputs.shape[0])
        k = int(inputs.shape[1]) if len(inputs.shape) == 2 else 1
        tokens = engine.Tensor(be.asarray(np.arange(self.num_tokens, dtype=self.dtype)), be)
        hot = ops.equal(ops.reshape(ops.cast(inputs, self.dtype), (n, k, 1)), tokens)
        if self.output_mode == "one_hot":
            return ops.reshape(hot, (n, self.num_tokens) if k == 1 or len(inputs.shape) == 1
                               else (n, k, self.num_tokens))
        if self.output_mode == "multi_hot":
            return ops.max(hot, axis=1)
        if count_weights is not None:
            hot = hot * ops.reshape(ops.cast(count_weights, self.dtype), (n, k, 1))
        return ops.sum(hot, axis=1)
