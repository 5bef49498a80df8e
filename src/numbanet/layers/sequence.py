"""Sequence layers: Embedding, Masking, Conv1D, the 1-D pools and global pools.

Sequences are batch-major, in one of two layouts, chosen per layer by ``data_format``:

* "channels_last": (batch, steps, features), Keras' layout. Embedding, Masking, the recurrent
  and attention layers give it; the global 1-D pools take it by default.
* "channels_first": (batch, channels, length), PyTorch's (like Conv2D's NCHW). Conv1D and the
  1-D pools take it when ``data_format`` is not given (what they always took).

Conv1D and the 1-D pools run the 2-D kernels on (batch, channels, 1, length); with
"channels_last" they transpose their input to that layout and their output (and gradients)
back. Their kernel is (filters, in_channels, kernel_size) in both layouts.

A layout mix-up is refused when a graph (Sequential or functional model) is built: a Conv1D or
1-D pool left without ``data_format`` whose input is (batch, steps, features) (from an
Embedding, a recurrent or attention layer, Masking, or a channels_last Conv1D, also through
Dropout, activations, normalization or merges) would convolve over the features, and a global
pool left without it whose input comes from a channels_first Conv1D or pool would pool over the
channels: both raise a ValueError naming the two layers and the ``data_format`` to pass. An
explicit ``data_format`` is never second-guessed; where the graph does not tell (an
``nb.Input`` of floats, a Permute, a layer called on arrays) the default stands. So the Keras
text CNN is ``Embedding -> Conv1D(64, 5, data_format="channels_last") -> GlobalMaxPooling1D()``.

Masks (Keras): an Embedding with ``mask_zero=True`` or a Masking layer gives a (batch, steps)
mask that the layers after it use: recurrent layers skip masked steps, global pools and losses
ignore them (Conv1D and the 1-D pools drop it: their outputs mix neighbouring steps).
"""
import math

import numpy as np

from .. import initializers, ops
from .base import Layer, check_features, check_positive_int
from .core import _Affine

__all__ = ["Embedding", "Masking", "Conv1D", "MaxPool1D", "AvgPool1D",
           "GlobalAveragePooling1D", "GlobalMaxPooling1D"]


class Embedding(Layer):
    """Integer ids of any shape -> vectors: ``params["embeddings"]`` (input_dim, output_dim),
    output shape = ids' shape + (output_dim,). Its backward adds each id's output gradient into
    that row (repeated ids add up, in a fixed order: deterministic on both devices). An id outside
    [0, input_dim) is an error naming the layer and the id, checked on the host. With
    ``mask_zero=True`` id 0 is padding: it gives the mask the following layers use (so
    input_dim counts it)."""

    input_kind = "int"
    supports_masking = True
    free_axes = "all"
    output_layout = "channels_last"             # ids (batch, steps) -> (batch, steps, output_dim)

    def __init__(self, input_dim, output_dim, embeddings_initializer="uniform", mask_zero=False,
                 **kwargs):
        super().__init__(**kwargs)
        where = f"Embedding {self.name!r}"
        self.input_dim = check_positive_int(input_dim, "input_dim", where)
        self.output_dim = check_positive_int(output_dim, "output_dim", where)
        if not isinstance(mask_zero, (bool, np.bool_)):
            raise ValueError(f"{where}: mask_zero must be True or False, got {mask_zero!r}")
        self.mask_zero = bool(mask_zero)
        self.embeddings_initializer = initializers.get(embeddings_initializer,
                                                       f"{where} embeddings_initializer")
        self._init_spec, = self._keep_specs(embeddings_initializer=embeddings_initializer)

    @property
    def produces_mask(self):
        return self.mask_zero

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.output_dim,)

    def create_params(self, input_shape):
        self.add_param("embeddings", (self.input_dim, self.output_dim),
                       self.embeddings_initializer, self.input_dim, self.output_dim)

    def check_input(self, x, index=0):
        if np.dtype(x.dtype).kind not in "iub":
            if np.dtype(x.dtype).kind == "f":
                host = self.backend.to_numpy(x)
                if not np.all(np.isfinite(host)) or np.any(host != np.round(host)):
                    raise TypeError(f"{self!r}: expects integer ids, got non-integer values of "
                                    f"dtype {x.dtype}")
                return self.backend.asarray(host.astype(np.int64))
            raise TypeError(f"{self!r}: expects integer ids, got dtype {x.dtype}")
        return super().check_input(x, index)

    def _ids(self, x):
        """(host ids, device int64 ids), after the range check."""
        host = np.asarray(self.backend.to_numpy(x)).reshape(-1)
        if host.size:
            lo, hi = host.min(), host.max()
            if lo < 0 or hi >= self.input_dim:
                i = int(np.flatnonzero((host < 0) | (host >= self.input_dim))[0])
                at = np.unravel_index(i, tuple(x.shape))
                raise ValueError(f"{self!r}: id {host[i]} at index {tuple(int(v) for v in at)} "
                                 f"is outside [0, {self.input_dim}) (input_dim={self.input_dim})")
        ids = host.astype(np.int64, copy=False)
        return host, (ids if not self.backend.is_device else self.backend.asarray(ids))

    def _forward(self, x, training):
        be = self.backend
        host, ids = self._ids(x)
        shape = tuple(int(d) for d in x.shape) + (self.output_dim,)
        out = be.empty(shape, self.dtype)
        w = self.params["embeddings"]
        be.take_forward(be.kernel_view(w, (w.size,)), ids, 1, self.input_dim, self.output_dim,
                        be.kernel_view(out, (math.prod(shape),)))
        return out, (ids, shape)

    def _backward(self, ctx, grad_out, sink, need):
        ids, shape = ctx
        pg = sink.layer_grads(self)
        if pg is not None:
            be = self.backend
            grads, accumulate = pg
            g = grads["embeddings"]
            be.take_backward(be.kernel_view(grad_out, (math.prod(shape),)), ids, 1,
                             self.input_dim, self.output_dim, accumulate,
                             be.kernel_view(g, (g.size,)))
        return None                     # integer ids have no gradient

    def compute_mask(self, inputs, mask):
        if not self.mask_zero:
            return mask
        host = np.asarray(self.backend.to_numpy(inputs))
        return self.backend.asarray((host != 0).astype(self.dtype or np.float32))


class Masking(Layer):
    """Masks every step whose features all equal ``mask_value`` (Keras): the output is the input
    with those steps zeroed, and its (batch, steps) mask tells the following layers to skip
    them."""

    supports_masking = True
    produces_mask = True
    free_axes = (0,)
    output_layout = "channels_last"

    def __init__(self, mask_value=0.0, **kwargs):
        super().__init__(**kwargs)
        if isinstance(mask_value, bool) or not isinstance(mask_value, (int, float)) or \
                not np.isfinite(mask_value):
            raise ValueError(f"Masking {self.name!r}: mask_value must be a finite number, got "
                             f"{mask_value!r}")
        self.mask_value = float(mask_value)

    def compute_output_shape(self, input_shape):
        if len(input_shape) < 2:
            raise ValueError(f"{self!r}: expects (batch, steps, features), got input shape "
                             f"{(None,) + tuple(input_shape)}")
        return input_shape

    def _step_mask(self, x):
        """(batch, steps) 1 where some feature differs from mask_value."""
        be = self.backend
        eq, _ = ops._EQUAL.forward(be, x, be.full((1,), self.mask_value, x.dtype))
        ne, _ = ops._AFFINE.forward(be, eq, -1.0, 1.0)
        shape = tuple(int(d) for d in x.shape)
        m = be.empty(shape[:2], x.dtype)
        keep, red = ops._split(shape, tuple(range(2, len(shape))))
        ops._reduce(be, "reduce_max", ne, keep, red, m)
        return m

    def _forward(self, x, training):
        be = self.backend
        m = self._step_mask(x)
        shape = tuple(int(d) for d in x.shape)
        mb = be.kernel_view(m, shape[:2] + (1,) * (len(shape) - 2))
        out, ctx = ops._MUL.forward(be, x, mb if be.is_device else m.reshape(mb.shape))
        return out, ctx

    def _backward(self, ctx, grad_out, sink, need):
        return ops._MUL.backward(ctx, grad_out, [need, False])[0] if need else None

    def compute_mask(self, inputs, mask):
        return self._step_mask(inputs)


def _conv1d_output_and_pad(length, k, stride, dilation, padding):
    """Output length and left padding of a 1-D window over ``length`` steps."""
    span = dilation * (k - 1) + 1
    if padding == "valid":
        return (length - span) // stride + 1, 0
    if padding == "same":
        out = -(-length // stride)
        return out, max((out - 1) * stride + span - length, 0) // 2
    if padding == "causal":
        left = span - 1
        return (length + left - span) // stride + 1, left
    return (length + 2 * padding - span) // stride + 1, padding


def _check_padding_1d(padding, where, causal=True):
    if isinstance(padding, str):
        p = padding.lower()
        allowed = ("valid", "same", "causal") if causal else ("valid", "same")
        if p not in allowed:
            raise ValueError(f"{where}: padding must be {', '.join(map(repr, allowed))} or an "
                             f"int, got {padding!r}")
        return p
    return check_positive_int(padding, "padding", where, allow_zero=True)


_FORMATS = ("channels_first", "channels_last")
_LAYOUT_TEXT = {"channels_first": "(batch, channels, length)",
                "channels_last": "(batch, steps, features)"}


def _check_data_format(data_format, where):
    if data_format is not None and data_format not in _FORMATS:
        raise ValueError(f"{where}: data_format must be 'channels_last' (batch, steps, "
                         f"features), 'channels_first' (batch, channels, length) or None, got "
                         f"{data_format!r}")
    return data_format


class _Layout1D:
    """``data_format`` of Conv1D and the 1-D pools: the kernels run on (batch, channels,
    length); a channels_last input is transposed to it (``_swap``) and the output back, in
    backward too. ``data_format=None`` means channels_first, and ``check_layout`` refuses it on
    a (batch, steps, features) input."""

    def _set_data_format(self, data_format, where):
        self._format_given = _check_data_format(data_format, where) is not None
        self.data_format = data_format or "channels_first"
        self._keep_specs(data_format=data_format)       # the config keeps None as None

    @property
    def _channels_last(self):
        return self.data_format == "channels_last"

    @property
    def free_axes(self):
        return (0,) if self._channels_last else (1,)    # the steps may change between calls

    @property
    def output_layout(self):
        return self.data_format

    def _swap(self, x):
        """(batch, a, b) -> a contiguous (batch, b, a) with channels_last, else ``x``."""
        return ops._permute(self.backend, x, (0, 2, 1)) if self._channels_last else x

    def _channels_length(self, input_shape):
        """(channels, length) of a per-sample input shape, after checking it."""
        if len(input_shape) != 2 or input_shape[1 if self._channels_last else 0] is None:
            raise ValueError(f"{self!r}: expects {_LAYOUT_TEXT[self.data_format]} input "
                             f"(data_format={self.data_format!r}) with a known number of "
                             f"channels, got input shape {(None,) + tuple(input_shape)}")
        return tuple(input_shape[::-1]) if self._channels_last else tuple(input_shape)

    def _laid_out(self, channels, length):
        return (length, channels) if self._channels_last else (channels, length)

    def check_layout(self, layouts):
        got = layouts[0]
        if self._format_given or got is None or got[0] != "channels_last":
            return
        raise ValueError(
            f"{self!r}: its input comes from {got[1]!r}, whose output is (batch, steps, "
            f"features) (Keras' layout), but data_format is not given, which means "
            f"channels_first (batch, channels, length): it would run along the features with "
            f"the steps as channels. Pass data_format=\"channels_last\" (Keras layout: along the "
            f"steps) or data_format=\"channels_first\" (PyTorch layout, to keep it)")


class Conv1D(_Layout1D, _Affine):
    """1-D convolution: kernel (filters, in_channels, kernel_size) (PyTorch's Conv1d) over
    (batch, channels, length) with ``data_format`` "channels_first" (the default, None), or
    over (batch, steps, channels) -> (batch, steps', filters) with "channels_last" (Keras; the
    activation then runs on that output, a softmax over the filters). ``padding`` "valid",
    "same" (Keras: ceil(length / stride) outputs), "causal" (left padding only: output t sees
    inputs <= t) or an int (both ends). Runs the Conv2D kernels on (batch, channels, 1,
    length)."""

    def __init__(self, filters, kernel_size, strides=1, padding="valid", dilation_rate=1,
                 activation=None, data_format=None, **kwargs):
        super().__init__(activation=activation, **kwargs)
        where = f"Conv1D {self.name!r}"
        self.filters = check_positive_int(filters, "filters", where)
        self.kernel_size = check_positive_int(_one(kernel_size), "kernel_size", where)
        self.strides = check_positive_int(_one(strides), "strides", where)
        self.dilation_rate = check_positive_int(_one(dilation_rate), "dilation_rate", where)
        self.padding = _check_padding_1d(padding, where)
        self._set_data_format(data_format, where)

    def compute_output_shape(self, input_shape):
        length = self._channels_length(input_shape)[1]
        if length is None:
            self.pad = None
            return self._laid_out(self.filters, None)
        out, self.pad = _conv1d_output_and_pad(length, self.kernel_size, self.strides,
                                               self.dilation_rate, self.padding)
        if out < 1:
            raise ValueError(f"{self!r}: kernel {self.kernel_size} (dilation "
                             f"{self.dilation_rate}) does not fit input of length {length} with "
                             f"padding {self.padding!r}")
        return self._laid_out(self.filters, out)

    def create_params(self, input_shape):
        c, k = self._channels_length(input_shape)[0], self.kernel_size
        self.create_affine((self.filters, c, k), self.filters, c * k, self.filters * k)

    def _geometry(self, length):
        out, pad = _conv1d_output_and_pad(length, self.kernel_size, self.strides,
                                          self.dilation_rate, self.padding)
        if out < 1:
            raise ValueError(f"{self!r}: kernel {self.kernel_size} (dilation "
                             f"{self.dilation_rate}) does not fit input of length {length}")
        return out, (1, self.strides, 0, pad, 1, self.dilation_rate)

    def _w4(self, w):
        f, c, k = w.shape
        return self.backend.kernel_view(w, (f, c, 1, k))

    def _forward(self, x, training):
        be = self.backend
        check_features(self, x, 2 if self._channels_last else 1, "kernel", 1, "channels")
        x = self._swap(x)
        n, c, length = (int(d) for d in x.shape)
        out_len, geo = self._geometry(length)
        x4 = be.kernel_view(x, (n, c, 1, length))
        args = (x4, self._w4(self.params["kernel"]), self.bias, *geo)
        shape4 = (n, self.filters, 1, out_len)
        if self._channels_last:     # activation on (batch, steps, filters): softmax over filters
            z4 = be.empty(shape4, self.dtype)
            be.conv2d_forward(*args, z4)
            z = self._swap(be.kernel_view(z4, (n, self.filters, out_len)))
            y = self.act.forward(be, z)
            return y, (x4, z, y, geo, (n, c, length))
        z4, y4 = self.affine_forward("conv2d_forward", args, shape4)
        y = y4.reshape((n, self.filters, out_len))
        return y, (x4, z4, y4, geo, (n, c, length))

    @staticmethod
    def _logits(ctx):
        z = ctx[1]                  # (n, filters, 1, length), or (n, steps, filters)
        return z.reshape((z.shape[0], z.shape[1], z.shape[3])) if len(z.shape) == 4 else z

    def _backward(self, ctx, grad_out, sink, need, pre_activation=False):
        be = self.backend
        x4, z, y, geo, shape = ctx
        if self._channels_last:
            g = self._swap(self.activation_grad((None, z, y), grad_out, pre_activation))
            g = be.kernel_view(g, (shape[0], self.filters, 1, int(z.shape[1])))
        else:
            g4 = be.kernel_view(grad_out, tuple(z.shape))
            g = self.activation_grad((None, z, y), g4, pre_activation)
        pg = sink.layer_grads(self)
        if pg is not None:
            grads, accumulate = pg
            gw = self._w4(grads["kernel"])
            if self.use_bias:
                be.conv2d_backward_params(x4, g, *geo, accumulate, gw, grads["bias"])
            else:
                be.conv2d_backward_weight(x4, g, *geo, accumulate, gw)
        if not need:
            return None
        grad_in = be.empty(shape, self.dtype)
        be.conv2d_backward_input(g, self._w4(self.params["kernel"]), *geo,
                                 be.kernel_view(grad_in, tuple(x4.shape)))
        return self._swap(grad_in)


def _one(v):
    """An int, or a 1-tuple / list of one int (Keras accepts both)."""
    if isinstance(v, (tuple, list)) and len(v) == 1:
        return v[0]
    return v


class _Pool1D(_Layout1D, Layer):
    """Pooling over the length of (batch, channels, length) (``data_format`` "channels_first",
    the default) or over the steps of (batch, steps, channels) ("channels_last"), on the 2-D
    pooling kernels."""

    kind = None

    def __init__(self, pool_size=2, strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(**kwargs)
        where = f"{type(self).__name__} {self.name!r}"
        self.pool_size = check_positive_int(_one(pool_size), "pool_size", where)
        self.strides = self.pool_size if strides is None else \
            check_positive_int(_one(strides), "strides", where)
        self.padding = _check_padding_1d(padding, where, causal=False)
        self._set_data_format(data_format, where)

    def _geometry(self, length):
        out, pad = _conv1d_output_and_pad(length, self.pool_size, self.strides, 1, self.padding)
        if out < 1:
            raise ValueError(f"{self!r}: pool {self.pool_size} does not fit input of length "
                             f"{length}")
        if not isinstance(self.padding, str) and self.padding > self.pool_size // 2:
            raise ValueError(f"{self!r}: padding {self.padding} must be at most half the pool "
                             f"size {self.pool_size}")
        return out, (1, self.pool_size, 1, self.strides, 0, pad)

    def compute_output_shape(self, input_shape):
        c, length = self._channels_length(input_shape)
        return self._laid_out(c, None if length is None else self._geometry(length)[0])

    def _forward(self, x, training):
        be = self.backend
        x = self._swap(x)
        n, c, length = (int(d) for d in x.shape)
        out_len, geo = self._geometry(length)
        x4 = be.kernel_view(x, (n, c, 1, length))
        out = be.empty((n, c, out_len), self.dtype)
        o4 = be.kernel_view(out, (n, c, 1, out_len))
        if self.kind == "max":
            argmax = be.empty((n, c, 1, out_len), np.int64)
            be.max_pool2d_forward(x4, *geo, o4, argmax)
            return self._swap(out), (argmax, geo, (n, c, length))
        be.avg_pool2d_forward(x4, *geo, o4)
        return self._swap(out), (None, geo, (n, c, length))

    def _backward(self, ctx, grad_out, sink, need):
        if not need:
            return None
        be = self.backend
        argmax, geo, (n, c, length) = ctx
        grad_out = self._swap(grad_out)
        grad_in = be.empty((n, c, length), self.dtype)
        g4 = be.kernel_view(grad_out, (n, c, 1, int(grad_out.shape[2])))
        gi4 = be.kernel_view(grad_in, (n, c, 1, length))
        if self.kind == "max":
            be.max_pool2d_backward(g4, argmax, gi4)
        else:
            be.avg_pool2d_backward(g4, *geo, gi4)
        return self._swap(grad_in)


class MaxPool1D(_Pool1D):
    """Max over windows along the length of (batch, channels, length) (or the steps of
    (batch, steps, channels) with ``data_format="channels_last"``)."""
    kind = "max"


class AvgPool1D(_Pool1D):
    """Mean over windows along the length of (batch, channels, length) (or the steps of
    (batch, steps, channels) with ``data_format="channels_last"``; padding not counted)."""
    kind = "avg"


class _StepsFirst1D:
    """``data_format`` of the 1-D layers whose default (None) is Keras' (batch, steps,
    features) ("channels_last"; "channels_first" is (batch, channels, length), Conv1D's
    default). Left at None, a graph refuses input from a channels_first Conv1D or 1-D pool;
    ``_misread`` says what reading it would do."""

    _misread = "it would read the channels as steps"

    def _set_data_format(self, data_format, where):
        self._format_given = _check_data_format(data_format, where) is not None
        self.data_format = data_format or "channels_last"
        self._keep_specs(data_format=data_format)

    def check_layout(self, layouts):
        got = layouts[0]
        if self._format_given or got is None or got[0] != "channels_first":
            return
        raise ValueError(
            f"{self!r}: its input comes from {got[1]!r}, whose output is (batch, channels, "
            f"length) (channels_first), but data_format is not given, which means channels_last "
            f"(batch, steps, features): {self._misread}. Pass data_format=\"channels_first\" "
            f"here, or give {got[1]!r} data_format=\"channels_last\" (Keras layout)")


class _GlobalPool1D(_StepsFirst1D, Layer):
    """Pooling over all the steps: (batch, steps, features) -> (batch, features) with
    ``data_format="channels_last"`` (Keras; the default, None), or (batch, channels, length) ->
    (batch, channels) with "channels_first". Masked steps are left out. Left at the default,
    it refuses (when a graph is built) an input from a channels_first Conv1D or 1-D pool."""

    uses_mask = True
    _misread = "it would pool over the channels"

    def __init__(self, data_format=None, keepdims=False, **kwargs):
        super().__init__(**kwargs)
        where = f"{type(self).__name__} {self.name!r}"
        self._set_data_format(data_format, where)
        if not isinstance(keepdims, (bool, np.bool_)):
            raise ValueError(f"{where}: keepdims must be True or False, got {keepdims!r}")
        self.keepdims = bool(keepdims)

    @property
    def _axis(self):
        return 1 if self.data_format == "channels_last" else 2

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 2:
            raise ValueError(f"{self!r}: expects 3-D input, got input shape "
                             f"{(None,) + tuple(input_shape)}")
        feat = input_shape[1] if self.data_format == "channels_last" else input_shape[0]
        if self.keepdims:
            return (1, feat) if self.data_format == "channels_last" else (feat, 1)
        return (feat,)

    def call(self, x, mask=None):
        if mask is not None:
            m = ops.reshape(mask, (x.shape[0], x.shape[1], 1) if self._axis == 1
                            else (x.shape[0], 1, x.shape[2]))
            return self._masked(x, m)
        return self._pool(x)


class GlobalAveragePooling1D(_GlobalPool1D):
    """The mean over the steps (of the unmasked ones, with a mask)."""

    def _pool(self, x):
        return ops.mean(x, axis=self._axis, keepdims=self.keepdims)

    def _masked(self, x, m):
        total = ops.sum(x * m, axis=self._axis, keepdims=self.keepdims)
        count = ops.maximum(ops.sum(m, axis=self._axis, keepdims=True), 1.0)
        return total / (count if self.keepdims else ops.squeeze(count, self._axis))


class GlobalMaxPooling1D(_GlobalPool1D):
    """The maximum over the steps (of the unmasked ones, with a mask; ties share the
    gradient). A sample with no unmasked step gives 0 and a zero gradient, as
    GlobalAveragePooling1D does (not the dtype's lowest value, which made losses overflow)."""

    def _pool(self, x):
        return ops.max(x, axis=self._axis, keepdims=self.keepdims)

    def _masked(self, x, m):
        lowest = np.finfo(x.dtype).min
        pooled = ops.max(ops.where(m, x, lowest), axis=self._axis, keepdims=self.keepdims)
        any_step = ops.max(m, axis=self._axis, keepdims=self.keepdims)
        return ops.where(any_step, pooled, 0.0)


MaxPooling1D, AveragePooling1D = MaxPool1D, AvgPool1D
