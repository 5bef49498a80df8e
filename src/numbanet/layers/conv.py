"""Conv2D and 2-D pooling layers (NCHW inputs, OIHW kernels)."""
import numpy as np

from .base import Layer, check_pair, check_positive_int
from .core import _Affine


def _padding_spec(padding, where):
    """"valid", "same", an int or a pair of ints -> canonical form."""
    if isinstance(padding, str):
        if padding.lower() not in ("valid", "same"):
            raise ValueError(f"{where}: padding must be 'valid', 'same', an int or a pair of ints, "
                             f"got {padding!r}")
        return padding.lower()
    return check_pair(padding, "padding", where, allow_zero=True)


def _padding_config(padding):
    return padding if isinstance(padding, str) else list(padding)


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


def _spatial_output(layer, input_shape, kernel, strides, dilation, padding):
    if len(input_shape) != 3:
        raise ValueError(f"{layer!r}: expects 4-D input (batch, channels, height, width), got "
                         f"input shape {(None,) + tuple(input_shape)}")
    dims, pads = [], []
    for axis in (0, 1):
        o, p = _output_and_pad(input_shape[1 + axis], kernel[axis], strides[axis], dilation[axis],
                               padding, axis)
        if o < 1:
            raise ValueError(f"{layer!r}: window {kernel} (dilation {dilation}) does not fit input "
                             f"of shape {(None,) + tuple(input_shape)} with padding {padding!r}")
        dims.append(o)
        pads.append(p)
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

    def call(self, x, training):
        self.x = x
        return self.affine_forward("conv2d_forward",
                                   (x, self.params["kernel"], self.bias, *self._geometry()),
                                   (x.shape[0],) + self.output_shape)

    def backward(self, grad_out, pre_activation=False):
        be = self.backend
        g = self.activation_grad(grad_out, pre_activation)
        if self.use_bias:
            be.conv2d_backward_params(self.x, g, *self._geometry(), False, self.grads["kernel"],
                                      self.grads["bias"])
        else:
            be.conv2d_backward_weight(self.x, g, *self._geometry(), False, self.grads["kernel"])
        if not self.needs_input_grad:
            return None
        grad_in = be.empty(self.x.shape, self.dtype)
        be.conv2d_backward_input(g, self.params["kernel"], *self._geometry(), grad_in)
        return grad_in

    def get_config(self):
        return {**super().get_config(), "filters": self.filters,
                "kernel_size": list(self.kernel_size), "strides": list(self.strides),
                "padding": _padding_config(self.padding), "dilation_rate": list(self.dilation_rate)}


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

    def get_config(self):
        return {**super().get_config(), "pool_size": list(self.pool_size),
                "strides": list(self.strides), "padding": _padding_config(self.padding)}


class MaxPool2D(_Pool2D):
    """Max over each window; the gradient goes to the window's maximum."""

    def call(self, x, training):
        be = self.backend
        shape = (x.shape[0],) + self.output_shape
        out = be.empty(shape, self.dtype)
        self.argmax = be.empty(shape, np.int64)
        be.max_pool2d_forward(x, *self._geometry(), out, self.argmax)
        return out

    def backward(self, grad_out):
        grad_in = self.backend.empty((grad_out.shape[0],) + self.input_shape, self.dtype)
        self.backend.max_pool2d_backward(grad_out, self.argmax, grad_in)
        return grad_in


class AvgPool2D(_Pool2D):
    """Mean over each window (padded cells are not counted)."""

    def call(self, x, training):
        out = self.backend.empty((x.shape[0],) + self.output_shape, self.dtype)
        self.backend.avg_pool2d_forward(x, *self._geometry(), out)
        return out

    def backward(self, grad_out):
        grad_in = self.backend.empty((grad_out.shape[0],) + self.input_shape, self.dtype)
        self.backend.avg_pool2d_backward(grad_out, *self._geometry(), grad_in)
        return grad_in


MaxPooling2D, AveragePooling2D = MaxPool2D, AvgPool2D
