"""BatchNormalization and LayerNormalization (kernels: numbanet.kernels.<device>.normalization);
GroupNormalization and UnitNormalization, written with ``nb.ops``."""
import math

import numpy as np

from .. import initializers, ops
from .. import validation as V
from .base import Layer, check_features, fmt_shape


def _check_initializer(init, name, where):
    initializers.get(init, f"{where} {name}")
    return init


def _is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


class _Normalization(Layer):
    """Shared parts: epsilon, center/scale, gamma/beta as parameters or constants."""

    output_layout = "keep"

    def __init__(self, epsilon, center, scale, gamma_initializer, beta_initializer, **kwargs):
        super().__init__(**kwargs)
        where = f"{type(self).__name__} {self.name!r}"
        self.epsilon = V.POSITIVE(epsilon, "epsilon", where)
        self.center = V.FLAG(center, "center", where)
        self.scale = V.FLAG(scale, "scale", where)
        self.gamma_initializer = _check_initializer(gamma_initializer, "gamma_initializer", where)
        self.beta_initializer = _check_initializer(beta_initializer, "beta_initializer", where)

    def _create_affine(self, shape):
        """Parameters gamma and beta of ``shape`` (those enabled), constants for the others."""
        if self.scale:
            self.add_param("gamma", shape, self.gamma_initializer)
        if self.center:
            self.add_param("beta", shape, self.beta_initializer)
        self._constants()

    def _constants(self):
        """gamma = 1 / beta = 0 as backend arrays when they are not parameters."""
        size = int(np.prod(self.param_shape))
        self._ones = None if self.scale else self.backend.full((size,), 1.0, self.dtype)
        self._zeros = None if self.center else self.backend.zeros((size,), self.dtype)

    def set_backend(self, backend):
        super().set_backend(backend)
        if self.built:
            self._constants()

    def _flat(self, a):
        return a.reshape((int(np.prod(self.param_shape)),))

    def _gamma(self):
        return self._flat(self.params["gamma"]) if self.scale else self._ones

    def _beta(self):
        return self._flat(self.params["beta"]) if self.center else self._zeros

    def _param_grads(self, sink):
        """(grad_gamma, grad_beta, accumulate): flat output buffers from ``sink`` (scratch for
        the parameters the layer does not have, or that nobody wants)."""
        size = int(np.prod(self.param_shape))
        be = self.backend
        pg = sink.layer_grads(self)
        grads, accumulate = pg if pg is not None else ({}, False)
        gg = self._flat(grads["gamma"]) if "gamma" in grads else be.empty((size,), self.dtype)
        gb = self._flat(grads["beta"]) if "beta" in grads else be.empty((size,), self.dtype)
        return gg, gb, accumulate


class BatchNormalization(_Normalization):
    """Batch normalization over every axis but ``axis`` (Ioffe & Szegedy, 2015).

    ``axis=1`` is the channel axis of NCHW images and the feature axis of (N, F) inputs; any other
    single non-batch axis works too; the other axes may have any size (None in ``nb.Input``), a
    different one at each call. ``training=True`` normalizes with the batch mean and biased
    variance and updates the moving statistics, Keras-style:
    ``moving = momentum * moving + (1 - momentum) * batch`` (PyTorch's momentum is
    ``1 - momentum``), the moving variance taking the unbiased batch variance as PyTorch does.
    ``training=False`` normalizes with the moving statistics; its backward pass is the gradient
    of that per-channel affine map. Parameters ``gamma``/``beta`` (when ``scale``/``center``),
    buffers ``moving_mean``/``moving_variance`` (saved with the model, not trained).
    """

    def __init__(self, axis=1, momentum=0.99, epsilon=1e-3, center=True, scale=True,
                 gamma_initializer="ones", beta_initializer="zeros",
                 moving_mean_initializer="zeros", moving_variance_initializer="ones", **kwargs):
        super().__init__(epsilon, center, scale, gamma_initializer, beta_initializer, **kwargs)
        where = f"BatchNormalization {self.name!r}"
        if not _is_int(axis) or axis == 0:
            raise ValueError(f"{where}: axis must be a non-zero int (axis 0 is the batch axis), "
                             f"got {axis!r}")
        self.axis = int(axis)
        self.momentum = V.PROBABILITY(momentum, "momentum", where)
        self.moving_mean_initializer = _check_initializer(moving_mean_initializer,
                                                          "moving_mean_initializer", where)
        self.moving_variance_initializer = _check_initializer(moving_variance_initializer,
                                                              "moving_variance_initializer", where)

    def compute_output_shape(self, input_shape):
        rank = len(input_shape) + 1
        if not -rank <= self.axis < rank or self.axis % rank == 0:
            raise ValueError(f"{self!r}: axis {self.axis} is not a non-batch axis of input shape "
                             f"{(None,) + tuple(input_shape)}")
        a = self.axis % rank
        if input_shape[a - 1] is None:
            raise ValueError(f"{self!r}: needs a known size on axis {self.axis}, got input shape "
                             f"{(None,) + tuple(input_shape)}")
        self._a = a
        self.param_shape = (input_shape[a - 1],)
        # the other axes may change size between calls (a sequence's length, an image's size)
        self.free_axes = tuple(i for i in range(rank - 1) if i != a - 1)
        return input_shape

    def create_params(self, input_shape):
        self._create_affine(self.param_shape)
        c = self.param_shape[0]
        for key, init in (("moving_mean", self.moving_mean_initializer),
                          ("moving_variance", self.moving_variance_initializer)):
            value = initializers.initialize(init, (c,), c, c, self.dtype)
            self.buffers[key] = self.backend.asarray(value, dtype=self.dtype)

    def _x3(self, a):
        """``a`` as (everything before the axis, the axis, everything after it)."""
        shape = tuple(int(d) for d in a.shape)
        return a.reshape((math.prod(shape[:self._a]), shape[self._a],
                          math.prod(shape[self._a + 1:])))

    def _forward(self, x, training):
        """Batch statistics in training (and the moving statistics updated), the moving ones in
        inference; a frozen layer (``trainable=False``) always runs in inference mode, as
        Keras."""
        be = self.backend
        check_features(self, x, self.axis, "moving_mean", what=f"entries on axis {self.axis}")
        x3 = self._x3(x)
        out = be.empty(tuple(x.shape), self.dtype)
        out3 = self._x3(out)
        rm, rv = self.buffers["moving_mean"], self.buffers["moving_variance"]
        if training and self.trainable:
            c = self.param_shape[0]
            mean, invstd = be.empty((c,), self.dtype), be.empty((c,), self.dtype)
            be.batchnorm_forward_train(x3, self._gamma(), self._beta(), self.epsilon, out3, mean,
                                       invstd)
            be.batchnorm_update_running(rm, rv, mean, invstd, self.epsilon, self.momentum,
                                        x3.shape[0] * x3.shape[2])
            return out, (x, True, mean, invstd)
        be.batchnorm_forward_infer(x3, self._gamma(), self._beta(), rm, rv, self.epsilon, out3)
        return out, (x, False, None, None)

    def _backward(self, ctx, grad_out, sink, need):
        be = self.backend
        x, training, mean, invstd = ctx
        x3, g3 = self._x3(x), self._x3(grad_out)
        grad_in = be.empty(tuple(x.shape), self.dtype)
        gg, gb, accumulate = self._param_grads(sink)
        if training:
            be.batchnorm_backward(x3, g3, self._gamma(), mean, invstd, accumulate,
                                  self._x3(grad_in), gg, gb)
        else:
            be.batchnorm_backward_infer(x3, g3, self._gamma(), self.buffers["moving_mean"],
                                        self.buffers["moving_variance"], self.epsilon,
                                        accumulate, self._x3(grad_in), gg, gb)
        return grad_in if need else None


class LayerNormalization(_Normalization):
    """Layer normalization (Ba et al., 2016): each sample normalized over ``axis``, with
    per-feature ``gamma``/``beta`` of the normalized axes' shape. Same in training and inference.

    A mask (per position) passes through.
    ``axis=-1`` (Keras' default) normalizes over the last axis; a tuple of the trailing axes,
    e.g. ``axis=(1, 2, 3)`` on NCHW images, normalizes over all of them like
    ``torch.nn.LayerNorm((C, H, W))``. The normalized axes must be the trailing ones.
    """

    supports_masking = True

    def __init__(self, axis=-1, epsilon=1e-3, center=True, scale=True, gamma_initializer="ones",
                 beta_initializer="zeros", **kwargs):
        super().__init__(epsilon, center, scale, gamma_initializer, beta_initializer, **kwargs)
        where = f"LayerNormalization {self.name!r}"
        axes = tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)
        if not axes or not all(_is_int(a) for a in axes) or 0 in axes:
            raise ValueError(f"{where}: axis must be a non-zero int or a tuple of them (axis 0 is "
                             f"the batch axis), got {axis!r}")
        self.axis = int(axes[0]) if not isinstance(axis, (tuple, list)) else tuple(int(a)
                                                                                   for a in axes)

    def compute_output_shape(self, input_shape):
        rank = len(input_shape) + 1
        axes = self.axis if isinstance(self.axis, tuple) else (self.axis,)
        if any(not -rank <= a < rank for a in axes):
            raise ValueError(f"{self!r}: axis {self.axis} out of range for input shape "
                             f"{(None,) + tuple(input_shape)}")
        resolved = sorted({a % rank for a in axes})
        if 0 in resolved or resolved != list(range(rank - len(resolved), rank)):
            raise ValueError(f"{self!r}: axis {self.axis} must name the trailing non-batch axes "
                             f"of input shape {(None,) + tuple(input_shape)} (e.g. -1, or (1, 2, 3) "
                             f"for NCHW)")
        self.param_shape = tuple(input_shape[a - 1] for a in resolved)
        # the axes it does not normalize may change size between calls (a sequence's length)
        self.free_axes = tuple(i for i in range(rank - 1) if i + 1 not in resolved)
        return input_shape

    def create_params(self, input_shape):
        self._create_affine(self.param_shape)

    def _x2(self, a):
        d = int(np.prod(self.param_shape))
        return a.reshape((a.size // d, d))

    def _forward(self, x, training):
        be = self.backend
        got = tuple(int(d) for d in x.shape)
        if got[len(got) - len(self.param_shape):] != self.param_shape:
            raise ValueError(f"{self!r}: was built to normalize trailing axes of shape "
                             f"{self.param_shape}, got input shape {got}")
        x2 = self._x2(x)
        out = be.empty(tuple(x.shape), self.dtype)
        mean, invstd = be.empty((x2.shape[0],), self.dtype), be.empty((x2.shape[0],), self.dtype)
        be.layernorm_forward(x2, self._gamma(), self._beta(), self.epsilon, self._x2(out), mean,
                             invstd)
        return out, (x, mean, invstd)

    def _backward(self, ctx, grad_out, sink, need):
        be = self.backend
        x, mean, invstd = ctx
        grad_in = be.empty(tuple(x.shape), self.dtype)
        gg, gb, accumulate = self._param_grads(sink)
        be.layernorm_backward(self._x2(x), self._x2(grad_out), self._gamma(), mean, invstd,
                              accumulate, self._x2(grad_in), gg, gb)
        return grad_in if need else None


class GroupNormalization(_Normalization):
    """Group normalization (Wu & He, 2018; Keras): the channels on ``axis`` split into
    ``groups`` groups of consecutive channels, each sample normalized over each group's
    channels and all the other non-batch axes (biased variance), then a per-channel
    ``gamma``/``beta``. ``groups=-1`` is one group per channel (instance normalization), 1 is
    LayerNormalization over everything. Same in training and inference.

    ``axis=1`` by default, as BatchNormalization here: the channels of NCHW images (as
    ``torch.nn.GroupNorm``) and the features of (batch, features); Keras' default -1 is the
    channels of its NHWC images, so pass ``axis=-1`` for (batch, steps, features). The other
    axes may change size between calls. Written with ``nb.ops``."""

    def __init__(self, groups=32, axis=1, epsilon=1e-3, center=True, scale=True,
                 beta_initializer="zeros", gamma_initializer="ones", **kwargs):
        super().__init__(epsilon, center, scale, gamma_initializer, beta_initializer, **kwargs)
        where = f"GroupNormalization {self.name!r}"
        if not _is_int(groups) or not (groups >= 1 or groups == -1):
            raise ValueError(f"{where}: groups must be a positive int or -1 (one group per "
                             f"channel), got {groups!r}")
        self.groups = int(groups)
        if not _is_int(axis) or axis == 0:
            raise ValueError(f"{where}: axis must be a non-zero int (axis 0 is the batch axis), "
                             f"got {axis!r}")
        self.axis = int(axis)

    def compute_output_shape(self, input_shape):
        rank = len(input_shape) + 1
        if not -rank <= self.axis < rank or self.axis % rank == 0:
            raise ValueError(f"{self!r}: axis {self.axis} is not a non-batch axis of input shape "
                             f"{fmt_shape(input_shape)}")
        a = self.axis % rank
        c = input_shape[a - 1]
        if c is None:
            raise ValueError(f"{self!r}: needs a known number of channels on axis {self.axis}, "
                             f"got input shape {fmt_shape(input_shape)}")
        groups = c if self.groups == -1 else self.groups
        if groups > c or c % groups:
            raise ValueError(f"{self!r}: the {c} channels on axis {self.axis} (input shape "
                             f"{fmt_shape(input_shape)}) do not split into groups={self.groups} "
                             f"equal groups; give a divisor of {c} (or -1)")
        self._a, self._groups = a, groups
        self.param_shape = (c,)
        self.free_axes = tuple(i for i in range(rank - 1) if i != a - 1)
        return input_shape

    def create_params(self, input_shape):
        self.gamma = self.add_weight("gamma", self.param_shape, self.gamma_initializer) \
            if self.scale else None
        self.beta = self.add_weight("beta", self.param_shape, self.beta_initializer) \
            if self.center else None
        self._constants()

    def call(self, x):
        shape = tuple(int(d) for d in x.shape)
        a, g, c = self._a, self._groups, shape[self._a]
        if c != self.param_shape[0]:
            raise ValueError(f"{self!r}: was built for {self.param_shape[0]} channels on axis "
                             f"{self.axis}, got input shape {shape}")
        # (batch, before the axis, group, channels of the group, after the axis)
        grouped = ops.reshape(x, (shape[0], math.prod(shape[1:a]), g, c // g,
                                  math.prod(shape[a + 1:])))
        mean = ops.mean(grouped, axis=(1, 3, 4), keepdims=True)
        centered = grouped - mean
        var = ops.mean(ops.square(centered), axis=(1, 3, 4), keepdims=True)
        y = ops.reshape(centered / ops.sqrt(var + self.epsilon), shape)
        per_channel = tuple(c if k == a else 1 for k in range(len(shape)))
        if self.gamma is not None:
            y = y * ops.reshape(self.gamma, per_channel)
        if self.beta is not None:
            y = y + ops.reshape(self.beta, per_channel)
        return y


class UnitNormalization(Layer):
    """Scales each sample to unit L2 norm along ``axis`` (an int or a list of ints, the batch
    axis 0 excluded; Keras): ``x / max(||x||, 1e-12)``, as ``torch.nn.functional.normalize``.
    Written with ``nb.ops``."""

    supports_masking = True
    free_axes = "all"
    output_layout = "keep"

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        axes = list(axis) if isinstance(axis, (tuple, list)) else [axis]
        if not axes or not all(_is_int(a) and a != 0 for a in axes):
            raise ValueError(f"UnitNormalization {self.name!r}: axis must be a non-zero int or "
                             f"a list of them (axis 0 is the batch axis), got {axis!r}")
        self.axis = [int(a) for a in axes] if isinstance(axis, (tuple, list)) else int(axis)

    def _axes(self, rank):
        axes = self.axis if isinstance(self.axis, list) else [self.axis]
        bad = [a for a in axes if not -rank <= a < rank or a % rank == 0]
        if bad:
            raise ValueError(f"{self!r}: axis {self.axis} is not a non-batch axis of inputs of "
                             f"rank {rank} (the batch included)")
        return tuple(sorted({a % rank for a in axes}))

    def compute_output_shape(self, input_shape):
        self._axes(len(input_shape) + 1)
        return input_shape

    def call(self, x):
        return l2_normalize(x, self._axes(len(x.shape)), 1e-12)


def l2_normalize(x, axis, epsilon):
    """``x / max(||x||, epsilon)`` along ``axis`` (an int or a tuple of ints), with ``nb.ops``
    (Keras' ``ops.normalize``: ``x * min(rsqrt(sum(x^2)), 1 / epsilon)``). The floor sits under
    the square root (sqrt(max(sum(x^2), epsilon^2))), so a zero vector gets a zero gradient,
    not 0 * inf."""
    squares = ops.sum(ops.square(x), axis=axis, keepdims=True)
    return x / ops.sqrt(ops.maximum(squares, epsilon * epsilon))
