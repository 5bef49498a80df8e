"""Conv2D, Conv2DTranspose, 2-D pooling and upsampling layers (NCHW inputs, OIHW kernels)."""
import warnings

import numpy as np

from ..kernels.scalar import BINARY_CODES
from .base import Layer, check_features, check_pair, check_positive_int
from .core import _Affine

_ADD = BINARY_CODES.index("add")


def _padding_spec(padding, where):
    """"valid", "same", an int or a pair of ints -> canonical form."""
    if isinstance(padding, str):
        if padding.lower() not in ("valid", "same"):
            raise ValueError(f"{where}: padding must be 'valid', 'same', an int or a pair of ints, "
                             f"got {padding!r}")
        return padding.lower()
    return check_pair(padding, "padding", where, allow_zero=True)


def _output_and_pad(size, k, stride, dilation, padding, axis):
    """Output length and top/left padding along one axis.

    'same' follows Keras/TensorFlow: ceil(size / stride) outputs, the extra padding at the end.
    An explicit padding pads both ends (PyTorch).
    """
    span = dilation * (k - 1) + 1
    if padding == "valid":
        return (size - span) // stride + 1, 0
    if padding == "same":
        out = -(-size // stride)
        total = max((out - 1) * stride + span - size, 0)
        return out, total // 2
    p = padding[axis]
    return (size + 2 * p - span) // stride + 1, p


# Keras' images are (height, width, channels); ours PyTorch's (channels, height, width).
_LAYOUT_HINT = ("numbanet's 2-D layers take (channels, height, width) images (PyTorch's NCHW); "
                "images stored as (height, width, channels) (Keras' default) need "
                "x.transpose(0, 3, 1, 2) and input_shape=(channels, height, width)")


def _spatial_output(layer, input_shape, kernel, strides, dilation, padding):
    if len(input_shape) != 3:
        raise ValueError(f"{layer!r}: expects 4-D input (batch, channels, height, width), got "
                         f"input shape {(None,) + tuple(input_shape)}")
    if any(d is None for d in input_shape):
        raise ValueError(f"{layer!r}: needs known channels, height and width, got input shape "
                         f"{(None,) + tuple(input_shape)}")
    dims, pads = [], []
    for axis in (0, 1):
        o, p = _output_and_pad(input_shape[1 + axis], kernel[axis], strides[axis], dilation[axis],
                               padding, axis)
        if o < 1:
            raise ValueError(f"{layer!r}: window {kernel} (dilation {dilation}) does not fit input "
                             f"of shape {(None,) + tuple(input_shape)} with padding {padding!r}; "
                             f"{_LAYOUT_HINT}")
        dims.append(o)
        pads.append(p)
    c, h, w = input_shape
    if c == h >= 8 and w in (1, 3, 4):      # (28, 28, 1), (32, 32, 3): square images, last
        warnings.warn(f"{layer!r}: input shape {(None,) + tuple(input_shape)} looks like "
                      f"(height, width, channels) images; {_LAYOUT_HINT}", UserWarning,
                      stacklevel=2)
    return tuple(dims), tuple(pads)


class Conv2D(_Affine):
    """2-D convolution (cross-correlation, as in Keras and PyTorch) over NCHW input.

    ``kernel`` has shape (filters, in_channels, kh, kw); ``padding`` is "valid", "same" (Keras:
    ceil(size / stride) outputs) or an explicit int / pair (PyTorch).
    """

    def __init__(self, filters, kernel_size, strides=1, padding="valid", dilation_rate=1,
                 activation=None, **kwargs):
        super().__init__(activation=activation, **kwargs)
        where = f"Conv2D {self.name!r}"
        self.filters = check_positive_int(filters, "filters", where)
        self.kernel_size = check_pair(kernel_size, "kernel_size", where)
        self.strides = check_pair(strides, "strides", where)
        self.dilation_rate = check_pair(dilation_rate, "dilation_rate", where)
        self.padding = _padding_spec(padding, where)

    def compute_output_shape(self, input_shape):
        (oh, ow), self.pads = _spatial_output(self, input_shape, self.kernel_size, self.strides,
                                              self.dilation_rate, self.padding)
        return (self.filters, oh, ow)

    def create_params(self, input_shape):
        c, (kh, kw) = input_shape[0], self.kernel_size
        self.create_affine((self.filters, c, kh, kw), self.filters, c * kh * kw,
                           self.filters * kh * kw)

    def _geometry(self):
        return (*self.strides, *self.pads, *self.dilation_rate)

    def _forward(self, x, training):
        check_features(self, x, 1, "kernel", 1, "channels")
        z, y = self.affine_forward("conv2d_forward",
                                   (x, self.params["kernel"], self.bias, *self._geometry()),
                                   (x.shape[0],) + self.output_shape)
        return y, (x, z, y)

    def _param_grads(self, ctx, g, grads, accumulate):
        if self.use_bias:
            self.backend.conv2d_backward_params(ctx[0], g, *self._geometry(), accumulate,
                                                grads["kernel"], grads["bias"])
        else:
            self.backend.conv2d_backward_weight(ctx[0], g, *self._geometry(), accumulate,
                                                grads["kernel"])

    def _input_grad(self, ctx, g):
        grad_in = self.backend.empty(tuple(ctx[0].shape), self.dtype)
        self.backend.conv2d_backward_input(g, self.params["kernel"], *self._geometry(), grad_in)
        return grad_in


def _transpose_output_and_pad(size, k, stride, dilation, padding, output_padding, axis):
    """Output length of a transposed convolution along one axis and the top/left padding of the
    convolution it is the adjoint of (the one mapping that output length back to ``size``).

    'valid' and 'same' follow Keras (without output_padding: size * stride + max(span - stride, 0)
    and size * stride; with it: (size - 1) * stride + span - 2 * pad + output_padding, pad 0 or
    span // 2), padding as Conv2D's on that length. An explicit padding is PyTorch's:
    (size - 1) * stride - 2 * pad + span + output_padding.
    """
    span = dilation * (k - 1) + 1
    op = None if output_padding is None else output_padding[axis]
    if padding == "valid":
        if op is None:
            return size * stride + max(span - stride, 0), 0
        return (size - 1) * stride + span + op, 0
    if padding == "same":
        out = size * stride if op is None else (size - 1) * stride + span % 2 + op
        return out, max((size - 1) * stride + span - out, 0) // 2
    p = padding[axis]
    return (size - 1) * stride - 2 * p + span + (op or 0), p


class Conv2DTranspose(_Affine):
    """Transposed 2-D convolution over NCHW input: the adjoint (input gradient) of a Conv2D with
    the same kernel_size, strides, padding and dilation_rate, plus a bias.

    ``kernel`` has shape (in_channels, filters, kh, kw), PyTorch's ConvTranspose2d weight.
    ``padding`` "valid" / "same" has Keras' meaning ("same" with stride s gives s times the input
    size), an int / pair PyTorch's; ``output_padding`` (each less than the stride or the
    dilation, as PyTorch) adds rows / columns at the bottom / right. The forward pass runs the
    convolution's input-gradient kernel; the backward the convolution forward (input gradient)
    and its weight gradient.
    """

    def __init__(self, filters, kernel_size, strides=1, padding="valid", output_padding=None,
                 dilation_rate=1, activation=None, **kwargs):
        super().__init__(activation=activation, **kwargs)
        where = f"Conv2DTranspose {self.name!r}"
        self.filters = check_positive_int(filters, "filters", where)
        self.kernel_size = check_pair(kernel_size, "kernel_size", where)
        self.strides = check_pair(strides, "strides", where)
        self.dilation_rate = check_pair(dilation_rate, "dilation_rate", where)
        self.padding = _padding_spec(padding, where)
        self.output_padding = None
        if output_padding is not None:
            op = check_pair(output_padding, "output_padding", where, allow_zero=True)
            limit = tuple(max(s, d) for s, d in zip(self.strides, self.dilation_rate))
            if any(o >= m for o, m in zip(op, limit)):
                raise ValueError(f"{where}: output_padding must be smaller than the stride or the "
                                 f"dilation along each axis (less than {limit}), got "
                                 f"{output_padding!r} with strides {self.strides} and "
                                 f"dilation_rate {self.dilation_rate}")
            self.output_padding = op

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 3 or any(d is None for d in input_shape):
            raise ValueError(f"{self!r}: expects 4-D input (batch, channels, height, width) with "
                             f"known channels, height and width, got input shape "
                             f"{(None,) + tuple(input_shape)}")
        dims, pads = [], []
        for axis in (0, 1):
            o, p = _transpose_output_and_pad(input_shape[1 + axis], self.kernel_size[axis],
                                             self.strides[axis], self.dilation_rate[axis],
                                             self.padding, self.output_padding, axis)
            if o < 1:
                raise ValueError(f"{self!r}: padding {self.padding!r} with "
                                 f"kernel_size {self.kernel_size}, strides {self.strides} and "
                                 f"output_padding {self.output_padding} leaves no output for "
                                 f"input of shape {(None,) + tuple(input_shape)}")
            dims.append(o)
            pads.append(p)
        self.pads = tuple(pads)
        return (self.filters, *dims)

    def create_params(self, input_shape):
        c, (kh, kw) = input_shape[0], self.kernel_size
        self.in_channels = c
        # fans as Keras counts them for its (kh, kw, filters, in_channels) kernel
        self.create_affine((c, self.filters, kh, kw), self.filters, self.filters * kh * kw,
                           c * kh * kw)

    def set_backend(self, backend):
        super().set_backend(backend)
        if hasattr(self, "in_channels"):
            # the convolution run by backward adds a bias: a zero one of in_channels
            self._zero_in = backend.zeros((self.in_channels,), self.dtype)

    def _geometry(self):
        return (*self.strides, *self.pads, *self.dilation_rate)

    def _forward(self, x, training):
        be = self.backend
        check_features(self, x, 1, "kernel", 0, "channels")
        n, f, oh, ow = (int(x.shape[0]),) + tuple(self.output_shape)
        z = be.empty((n, f, oh, ow), self.dtype)
        be.conv2d_backward_input(x, self.params["kernel"], *self._geometry(), z)
        if self.use_bias:
            # z += bias over the channel axis, in place (each element read and written once)
            zf = be.kernel_view(z, (z.size,))
            be.binary_forward(_ADD, zf, self.params["bias"], (1, 1, 1, n, f, oh * ow),
                              (0, 0, 0, f * oh * ow, oh * ow, 1), (0, 0, 0, 0, 1, 0), zf)
        y = self.act.forward(be, z)
        return y, (x, z, y)

    def _param_grads(self, ctx, g, grads, accumulate):
        # d/dw of <conv2d_backward_input(x, w), g> is the convolution's weight gradient with
        # g as its input and x as its output gradient
        self.backend.conv2d_backward_weight(g, ctx[0], *self._geometry(), accumulate,
                                            grads["kernel"])
        if self.use_bias:
            self.backend.conv2d_backward_bias(g, accumulate, grads["bias"])

    def _input_grad(self, ctx, g):
        grad_in = self.backend.empty(tuple(ctx[0].shape), self.dtype)
        self.backend.conv2d_forward(g, self.params["kernel"], self._zero_in, *self._geometry(),
                                    grad_in)
        return grad_in


class _Pool2D(Layer):
    def __init__(self, pool_size=2, strides=None, padding="valid", **kwargs):
        super().__init__(**kwargs)
        where = f"{type(self).__name__} {self.name!r}"
        self.pool_size = check_pair(pool_size, "pool_size", where)
        self.strides = self.pool_size if strides is None else check_pair(strides, "strides", where)
        self.padding = _padding_spec(padding, where)

    def compute_output_shape(self, input_shape):
        (oh, ow), self.pads = _spatial_output(self, input_shape, self.pool_size, self.strides,
                                              (1, 1), self.padding)
        if not isinstance(self.padding, str) and any(
                p > k // 2 for p, k in zip(self.padding, self.pool_size)):
            raise ValueError(f"{self!r}: padding {self.padding} must be at most half the pool "
                             f"size {self.pool_size}")
        return (input_shape[0], oh, ow)

    def _geometry(self):
        return (*self.pool_size, *self.strides, *self.pads)


class MaxPool2D(_Pool2D):
    """Max over each window; the gradient goes to the window's maximum."""

    def _forward(self, x, training):
        be = self.backend
        shape = (x.shape[0],) + self.output_shape
        out = be.empty(shape, self.dtype)
        argmax = be.empty(shape, np.int64)
        be.max_pool2d_forward(x, *self._geometry(), out, argmax)
        return out, argmax

    def _backward(self, argmax, grad_out, sink, need):
        if not need:
            return None
        grad_in = self.backend.empty((grad_out.shape[0],) + self.input_shape, self.dtype)
        self.backend.max_pool2d_backward(grad_out, argmax, grad_in)
        return grad_in


class AvgPool2D(_Pool2D):
    """Mean over each window (padded cells are not counted)."""

    def _forward(self, x, training):
        out = self.backend.empty((x.shape[0],) + self.output_shape, self.dtype)
        self.backend.avg_pool2d_forward(x, *self._geometry(), out)
        return out, None

    def _backward(self, ctx, grad_out, sink, need):
        if not need:
            return None
        grad_in = self.backend.empty((grad_out.shape[0],) + self.input_shape, self.dtype)
        self.backend.avg_pool2d_backward(grad_out, *self._geometry(), grad_in)
        return grad_in


MaxPooling2D, AveragePooling2D = MaxPool2D, AvgPool2D


class UpSampling2D(Layer):
    """Repeats each pixel of NCHW input ``size`` = (rows, columns) times (nearest-neighbour
    upsampling, Keras' ``interpolation="nearest"``); the gradient of a pixel is the sum over its
    copies."""

    INTERPOLATIONS = ("nearest",)

    def __init__(self, size=(2, 2), interpolation="nearest", **kwargs):
        super().__init__(**kwargs)
        where = f"UpSampling2D {self.name!r}"
        self.size = check_pair(size, "size", where)
        if not isinstance(interpolation, str) or interpolation not in self.INTERPOLATIONS:
            raise ValueError(f"{where}: interpolation must be one of "
                             f"{', '.join(map(repr, self.INTERPOLATIONS))} (the only ones "
                             f"supported), got {interpolation!r}")
        self.interpolation = interpolation

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"{self!r}: expects 4-D input (batch, channels, height, width), got "
                             f"input shape {(None,) + tuple(input_shape)}")
        c, h, w = input_shape
        return (c, None if h is None else h * self.size[0], None if w is None else w * self.size[1])

    def _forward(self, x, training):
        n, c, h, w = (int(d) for d in x.shape)
        out = self.backend.empty((n, c, h * self.size[0], w * self.size[1]), self.dtype)
        self.backend.upsample2d_forward(x, *self.size, out)
        return out, (n, c, h, w)

    def _backward(self, shape, grad_out, sink, need):
        if not need:
            return None
        grad_in = self.backend.empty(shape, self.dtype)
        self.backend.upsample2d_backward(grad_out, *self.size, grad_in)
        return grad_in


class _GlobalPool2D(Layer):
    """Global pooling over the spatial axes of NCHW images: (N, C, H, W) -> (N, C), or
    (N, C, 1, 1) with ``keepdims=True``; the kernels see (N * C, H * W) rows."""

    def __init__(self, keepdims=False, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(keepdims, (bool, np.bool_)):
            raise ValueError(f"{type(self).__name__} {self.name!r}: keepdims must be True or "
                             f"False, got {keepdims!r}")
        self.keepdims = bool(keepdims)

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 3 or input_shape[0] is None:
            raise ValueError(f"{self!r}: expects 4-D input (batch, channels, height, width) with "
                             f"known channels, got input shape {(None,) + tuple(input_shape)}")
        c = input_shape[0]
        return (c, 1, 1) if self.keepdims else (c,)

    def _rows(self, x):
        n, c, h, w = (int(d) for d in x.shape)
        return n * c, h * w, (n, c, h, w)

    def _out(self, be, n, c):
        return be.empty((n, c, 1, 1) if self.keepdims else (n, c), self.dtype)


class GlobalAveragePooling2D(_GlobalPool2D):
    """The mean of each feature map."""

    def _forward(self, x, training):
        be = self.backend
        rows, cols, shape = self._rows(x)
        out = self._out(be, *shape[:2])
        be.global_avg_pool_forward(be.kernel_view(x, (rows, cols)), be.kernel_view(out, (rows,)))
        return out, shape

    def _backward(self, shape, grad_out, sink, need):
        if not need:
            return None
        be = self.backend
        rows, cols = shape[0] * shape[1], shape[2] * shape[3]
        grad_in = be.empty(shape, self.dtype)
        be.global_avg_pool_backward(be.kernel_view(grad_out, (rows,)),
                                    be.kernel_view(grad_in, (rows, cols)))
        return grad_in


class GlobalMaxPooling2D(_GlobalPool2D):
    """The maximum of each feature map (the gradient goes to its first maximum)."""

    def _forward(self, x, training):
        be = self.backend
        rows, cols, shape = self._rows(x)
        out = self._out(be, *shape[:2])
        argmax = be.empty((rows,), np.int64)
        be.global_max_pool_forward(be.kernel_view(x, (rows, cols)), be.kernel_view(out, (rows,)),
                                   argmax)
        return out, (shape, argmax)

    def _backward(self, ctx, grad_out, sink, need):
        if not need:
            return None
        be = self.backend
        shape, argmax = ctx
        rows, cols = shape[0] * shape[1], shape[2] * shape[3]
        grad_in = be.empty(shape, self.dtype)
        be.global_max_pool_backward(be.kernel_view(grad_out, (rows,)), argmax,
                                    be.kernel_view(grad_in, (rows, cols)))
        return grad_in


GlobalAvgPool2D, GlobalMaxPool2D = GlobalAveragePooling2D, GlobalMaxPooling2D
