"""Keras' reshaping and wrapper layers written with ``nb.ops`` (their gradients come from the
tape of the call): Identity, RepeatVector, TimeDistributed, ZeroPadding1D, ZeroPadding2D,
Cropping1D, Cropping2D and UpSampling1D. Images are NCHW, as for Conv2D; 1-D inputs are
(batch, steps, features) unless ``data_format="channels_first"`` says (batch, channels, length)."""
import numpy as np

from .. import engine, ops
from ..registry import serialize
from .base import Layer, check_positive_int, fmt_shape
from .sequence import _LAYOUT_TEXT, _StepsFirst1D

__all__ = ["Identity", "RepeatVector", "TimeDistributed", "ZeroPadding1D", "ZeroPadding2D",
           "Cropping1D", "Cropping2D", "UpSampling1D"]


class Identity(Layer):
    """Returns its input unchanged (Keras' ``Identity``), mask included: a placeholder where a
    model's structure wants a layer."""

    supports_masking = True
    free_axes = "all"
    output_layout = "keep"

    def _forward(self, x, training):
        return x, None

    def _backward(self, ctx, grad_out, sink, need):
        return grad_out if need else None


class RepeatVector(Layer):
    """Repeats a (batch, features) input ``n`` times: (batch, n, features), e.g. to feed an
    encoder's summary vector to every step of a seq2seq decoder."""

    output_layout = "channels_last"

    def __init__(self, n, **kwargs):
        super().__init__(**kwargs)
        self.n = check_positive_int(n, "n", f"RepeatVector {self.name!r}")

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 1:
            raise ValueError(f"{self!r}: expects 2-D input (batch, features), got input shape "
                             f"{fmt_shape(input_shape)}")
        return (self.n, input_shape[0])

    def call(self, x):
        n, f = (int(d) for d in x.shape)
        return ops.broadcast_to(ops.reshape(x, (n, 1, f)), (n, self.n, f))


class TimeDistributed(Layer):
    """Applies ``layer`` to every step of (batch, steps, ...) input: the steps are folded into
    the batch, so ``layer`` runs once on (batch * steps, ...), and its output is unfolded to
    (batch, steps, ...). The weights are ``layer``'s, shared by all steps. The number of steps
    may change between calls; a (batch, steps) mask passes through. The config nests
    ``layer``'s as ``{"class_name", "config"}`` (Keras)."""

    _config_skip = ("layer",)       # written by get_config
    supports_masking = True
    free_axes = (0,)
    output_layout = "channels_last"

    def __init__(self, layer, **kwargs):
        if not isinstance(layer, Layer):
            raise ValueError(f"TimeDistributed: layer must be a Layer instance, got "
                             f"{type(layer).__name__}")
        if layer.multi_input:
            raise ValueError(f"TimeDistributed: layer must take one input, got {layer!r} "
                             f"(it takes a list)")
        super().__init__(**kwargs)
        self.layer = layer

    def build(self, input_shape):
        if self.dtype is None:
            self.dtype = self.layer.dtype or np.dtype(np.float32)
        if len(input_shape) < 2:
            raise ValueError(f"{self!r}: expects input of at least 3 dimensions (batch, steps, "
                             f"...), got input shape {fmt_shape(input_shape)}")
        inner = self.layer
        if not inner.built:
            inner.dtype = inner.dtype or self.dtype
            inner._move_to(self.backend)
            inner.build(tuple(input_shape[1:]))
        super().build(input_shape)
        # the inner layer's own free axes stay free here
        self.input_shape = (None,) + tuple(inner.input_shape)
        self.output_shape = self.compute_output_shape(self.input_shape)

    def compute_output_shape(self, input_shape):
        if len(input_shape) < 2:
            raise ValueError(f"{self!r}: expects input of at least 3 dimensions (batch, steps, "
                             f"...), got input shape {fmt_shape(input_shape)}")
        inner = self.layer
        step = tuple(input_shape[1:])
        out = inner.output_shape_for(step) if inner.built else inner.compute_output_shape(step)
        if isinstance(out, list):
            raise ValueError(f"{self!r}: {inner!r} gives several outputs; TimeDistributed "
                             f"takes a layer with one")
        return (input_shape[0],) + tuple(out)

    def call(self, x, training=False):
        shape = tuple(int(d) for d in x.shape)
        y = self.layer(ops.reshape(x, (shape[0] * shape[1],) + shape[2:]), training=training)
        return ops.reshape(y, shape[:2] + tuple(int(d) for d in y.shape[1:]))

    def get_config(self):
        return {**super().get_config(), "layer": serialize(self.layer)}

    @classmethod
    def from_config(cls, config):
        from . import REGISTRY
        config = dict(config)
        return cls(REGISTRY.deserialize(config.pop("layer")), **config)


def _padding_pairs(value, dims, name, where, axes):
    """Keras' padding/cropping argument for ``dims`` axes: an int (all sides), ``dims`` ints
    (both sides of each axis) or ``dims`` pairs (before, after) -> ``dims`` (before, after)
    pairs of ints >= 0."""
    def count(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0

    if count(value):
        return ((int(value),) * 2,) * dims
    if dims == 1 and isinstance(value, (tuple, list)) and len(value) == 2 and \
            all(count(v) for v in value):
        return ((int(value[0]), int(value[1])),)
    if isinstance(value, (tuple, list)) and len(value) == dims:
        if all(count(v) for v in value):
            return tuple((int(v), int(v)) for v in value)
        if all(isinstance(v, (tuple, list)) and len(v) == 2 and all(count(u) for u in v)
               for v in value):
            return tuple((int(v[0]), int(v[1])) for v in value)
    form = "an int or a pair (before, after)" if dims == 1 else \
        f"an int, {dims} ints ({axes}) or {dims} pairs ((before, after) per axis)"
    raise ValueError(f"{where}: {name} must be {form} of ints >= 0, got {value!r}")


class _Steps1D(_StepsFirst1D):
    """The 1-D layers here, along the steps of (batch, steps, features) by default (see
    ``_StepsFirst1D``)."""

    @property
    def _steps_axis(self):
        """The steps' axis of the per-sample shape."""
        return 0 if self.data_format == "channels_last" else 1

    @property
    def output_layout(self):
        return self.data_format

    @property
    def free_axes(self):
        return (self._steps_axis,)

    def _check_rank(self, input_shape):
        if len(input_shape) != 2:
            raise ValueError(f"{self!r}: expects 3-D input {_LAYOUT_TEXT[self.data_format]} "
                             f"(data_format={self.data_format!r}), got input shape "
                             f"{fmt_shape(input_shape)}")


def _zeros(layer, shape):
    return engine.Tensor(layer.backend.zeros(shape, layer.dtype), layer.backend)


def _pad(layer, x, pads, first_axis):
    """``x`` with ``pads`` (before, after) zeros along axes first_axis, first_axis + 1, ...
    (concatenations, so the gradient is the slice of the output's)."""
    for k, (before, after) in enumerate(pads):
        axis = first_axis + k
        shape = tuple(int(d) for d in x.shape)
        parts = [_zeros(layer, shape[:axis] + (before,) + shape[axis + 1:])] if before else []
        parts.append(x)
        if after:
            parts.append(_zeros(layer, shape[:axis] + (after,) + shape[axis + 1:]))
        if len(parts) > 1:
            x = ops.concatenate(parts, axis=axis)
    return x


def _grown(size, pair):
    return None if size is None else size + pair[0] + pair[1]


class ZeroPadding1D(_Steps1D, Layer):
    """Adds zeros before and after the steps of (batch, steps, features) input (Keras), or of
    (batch, channels, length) with ``data_format="channels_first"``. ``padding``: an int (both
    ends) or a pair (before, after)."""

    def __init__(self, padding=1, data_format=None, **kwargs):
        super().__init__(**kwargs)
        where = f"ZeroPadding1D {self.name!r}"
        self.padding = _padding_pairs(padding, 1, "padding", where, "")[0]
        self._set_data_format(data_format, where)

    def compute_output_shape(self, input_shape):
        self._check_rank(input_shape)
        out = list(input_shape)
        out[self._steps_axis] = _grown(out[self._steps_axis], self.padding)
        return tuple(out)

    def call(self, x):
        return _pad(self, x, [self.padding], 1 + self._steps_axis)


class Cropping1D(_Steps1D, Layer):
    """Removes steps at the start and end of (batch, steps, features) input (Keras), or of
    (batch, channels, length) with ``data_format="channels_first"``. ``cropping``: an int (both
    ends) or a pair (start, end)."""

    def __init__(self, cropping=(1, 1), data_format=None, **kwargs):
        super().__init__(**kwargs)
        where = f"Cropping1D {self.name!r}"
        self.cropping = _padding_pairs(cropping, 1, "cropping", where, "")[0]
        self._set_data_format(data_format, where)

    def _cropped(self, steps):
        if steps is None:
            return None
        left = steps - self.cropping[0] - self.cropping[1]
        if left < 1:
            raise ValueError(f"{self!r}: cropping {self.cropping} leaves nothing of {steps} "
                             f"steps")
        return left

    def compute_output_shape(self, input_shape):
        self._check_rank(input_shape)
        out = list(input_shape)
        out[self._steps_axis] = self._cropped(out[self._steps_axis])
        return tuple(out)

    def call(self, x):
        axis = 1 + self._steps_axis
        steps = int(x.shape[axis])
        self._cropped(steps)
        key = [slice(None)] * 3
        key[axis] = slice(self.cropping[0], steps - self.cropping[1])
        return ops.getitem(x, tuple(key))


class UpSampling1D(_Steps1D, Layer):
    """Repeats each step ``size`` times: (batch, steps, features) -> (batch, steps * size,
    features) (Keras), or along the length of (batch, channels, length) with
    ``data_format="channels_first"``; the gradient of a step is the sum over its copies."""

    def __init__(self, size=2, data_format=None, **kwargs):
        super().__init__(**kwargs)
        where = f"UpSampling1D {self.name!r}"
        self.size = check_positive_int(size, "size", where)
        self._set_data_format(data_format, where)

    def compute_output_shape(self, input_shape):
        self._check_rank(input_shape)
        out = list(input_shape)
        a = self._steps_axis
        out[a] = None if out[a] is None else out[a] * self.size
        return tuple(out)

    def call(self, x):
        n, a, b = (int(d) for d in x.shape)
        # a new axis after the steps' axis, broadcast to ``size`` copies, merged back into it
        if self.data_format == "channels_last":
            y = ops.broadcast_to(ops.reshape(x, (n, a, 1, b)), (n, a, self.size, b))
            return ops.reshape(y, (n, a * self.size, b))
        y = ops.broadcast_to(ops.reshape(x, (n, a, b, 1)), (n, a, b, self.size))
        return ops.reshape(y, (n, a, b * self.size))


class _Image2D(Layer):
    """Shared by ZeroPadding2D and Cropping2D: NCHW input, the pairs of the height and width."""

    def _check_rank(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"{self!r}: expects 4-D input (batch, channels, height, width), "
                             f"got input shape {fmt_shape(input_shape)}")


class ZeroPadding2D(_Image2D):
    """Adds rows and columns of zeros around NCHW images. ``padding`` as Keras: an int (all
    four sides), a pair (rows above and below, columns left and right) or
    ((top, bottom), (left, right))."""

    def __init__(self, padding=(1, 1), **kwargs):
        super().__init__(**kwargs)
        self.padding = _padding_pairs(padding, 2, "padding", f"ZeroPadding2D {self.name!r}",
                                      "height, width")

    def compute_output_shape(self, input_shape):
        self._check_rank(input_shape)
        c, h, w = input_shape
        return (c, _grown(h, self.padding[0]), _grown(w, self.padding[1]))

    def call(self, x):
        return _pad(self, x, self.padding, 2)


class Cropping2D(_Image2D):
    """Removes rows and columns at the borders of NCHW images. ``cropping`` as Keras: an int
    (all four sides), a pair (rows at top and bottom, columns at left and right) or
    ((top, bottom), (left, right))."""

    def __init__(self, cropping=((0, 0), (0, 0)), **kwargs):
        super().__init__(**kwargs)
        self.cropping = _padding_pairs(cropping, 2, "cropping", f"Cropping2D {self.name!r}",
                                       "height, width")

    def _cropped(self, size, pair, what):
        if size is None:
            return None
        if size - pair[0] - pair[1] < 1:
            raise ValueError(f"{self!r}: cropping {pair} leaves nothing of {what} {size} "
                             f"(cropping={self.cropping})")
        return size - pair[0] - pair[1]

    def compute_output_shape(self, input_shape):
        self._check_rank(input_shape)
        c, h, w = input_shape
        return (c, self._cropped(h, self.cropping[0], "height"),
                self._cropped(w, self.cropping[1], "width"))

    def call(self, x):
        n, c, h, w = (int(d) for d in x.shape)
        (t, b), (l, r) = self.cropping
        self._cropped(h, (t, b), "height")
        self._cropped(w, (l, r), "width")
        return ops.getitem(x, (slice(None), slice(None), slice(t, h - b), slice(l, w - r)))
