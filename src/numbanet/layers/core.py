"""Dense, Flatten, Reshape, Permute, Dropout, Lambda and the activation layers; PReLU and
ActivityRegularization, written with ``nb.ops``."""
import math

import numpy as np

from .. import activations, initializers, ops
from .. import validation as V
from .base import Layer, Seeded, check_features, check_positive_int, fmt_shape


def _last(layer, what):
    """The context of the layer's last ``forward`` (the single-layer API)."""
    if not layer._forwarded:
        raise RuntimeError(f"{layer!r}: no forward() yet, so there is no {what}")
    return layer._last


class _Logits:
    """A layer whose context keeps its pre-activation output as entry 1, which a loss given
    ``from_logits`` fuses with (``_logits(ctx)``); ``logits`` is that of the last ``forward``."""

    @property
    def logits(self):
        """The pre-activation output of the last ``forward``."""
        return self._logits(_last(self, "logits"))

    @staticmethod
    def _logits(ctx):
        return ctx[1]


class _Affine(_Logits, Layer):
    """Shared by Dense and Conv2D: a kernel, an optional bias and an optional activation.

    ``_backward(..., pre_activation=True)`` takes the gradient with respect to the
    pre-activation output, which lets a model fuse softmax with cross-entropy (gradient
    ``p - y``). A call's context holds its input, pre-activation ``z`` and output ``y``.
    """

    def __init__(self, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        where = f"{type(self).__name__} {self.name!r}"
        self.activation = activations.check_name(activation, where)
        self.act = activations.ActivationOp(self.activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer, f"{where} kernel_initializer")
        self.bias_initializer = initializers.get(bias_initializer, f"{where} bias_initializer")
        self._init_specs = self._keep_specs(kernel_initializer=kernel_initializer,
                                            bias_initializer=bias_initializer)
        self.kernel_regularizer = None
        if kernel_regularizer is not None:
            from .. import regularizers
            self.kernel_regularizer = regularizers.get(kernel_regularizer)

    def create_affine(self, kernel_shape, bias_size, fan_in, fan_out):
        self.add_param("kernel", kernel_shape, self.kernel_initializer, fan_in, fan_out)
        if self.use_bias:
            self.add_param("bias", (bias_size,), self.bias_initializer, fan_in, fan_out)
        self.bias_size = bias_size
        self.set_backend(self.backend)

    def set_backend(self, backend):
        super().set_backend(backend)
        if not self.use_bias and hasattr(self, "bias_size"):
            self._zero_bias = backend.zeros((self.bias_size,), self.dtype)

    @property
    def bias(self):
        """The bias, or zeros when ``use_bias=False`` (the kernels always add one)."""
        return self.params["bias"] if self.use_bias else self._zero_bias

    def _bias_grad(self, grads):
        """Where the bias gradient goes (scratch when there is no bias)."""
        return grads["bias"] if self.use_bias else \
            self.backend.empty((self.bias_size,), self.dtype)

    def affine_forward(self, kernel, args, shape):
        """``kernel`` (dense_forward / conv2d_forward) of ``args`` into a new ``shape`` array,
        then the activation: both in one kernel (``<kernel>_activation``, which also keeps the
        pre-activation for backward) when the activation is elementwise. Returns (z, y)."""
        be = self.backend
        z = be.empty(shape, self.dtype)
        if not self.act.fusable:
            getattr(be, kernel)(*args, z)
            return z, self.act.forward(be, z)
        y = be.empty(shape, self.dtype)
        getattr(be, kernel + "_activation")(*args, self.act.code, self.act.alpha, z, y)
        return z, y

    def activation_grad(self, ctx, grad_out, pre_activation):
        return grad_out if pre_activation else self.act.backward(self.backend, ctx[1], ctx[2],
                                                                 grad_out)

    def _backward(self, ctx, grad_out, sink, need, pre_activation=False):
        """The activation's gradient ``g``, then ``_param_grads(ctx, g, grads, accumulate)``
        when the sink wants this layer's gradients and ``_input_grad(ctx, g)`` when ``need``."""
        g = self.activation_grad(ctx, grad_out, pre_activation)
        pg = sink.layer_grads(self)
        if pg is not None:
            self._param_grads(ctx, g, *pg)
        return self._input_grad(ctx, g) if need else None


class Dense(_Affine):
    """Fully connected layer: ``activation(x @ kernel + bias)``; kernel is (in_features, units).

    On input of any rank the product runs over the last axis, as Keras: (batch, ..., in) ->
    (batch, ..., units); a mask (per position) passes through.
    """

    supports_masking = True
    free_axes = "leading"

    def __init__(self, units, activation=None, **kwargs):
        super().__init__(activation=activation, **kwargs)
        self.units = check_positive_int(units, "units", f"Dense {self.name!r}")

    def compute_output_shape(self, input_shape):
        if not input_shape or input_shape[-1] is None:
            raise ValueError(f"{self!r}: needs input with a known last axis (features), got "
                             f"input shape {(None,) + tuple(input_shape)}")
        return tuple(input_shape[:-1]) + (self.units,)

    def create_params(self, input_shape):
        f = input_shape[-1]
        self.create_affine((f, self.units), self.units, f, self.units)

    def _forward(self, x, training):
        be = self.backend
        check_features(self, x, -1, "kernel")
        shape = tuple(x.shape)
        rows = shape[0] if len(shape) == 2 else math.prod(shape[:-1])
        x2 = x if len(shape) == 2 else be.kernel_view(x, (rows, shape[-1]))
        z, y = self.affine_forward("dense_forward", (x2, self.params["kernel"], self.bias),
                                   (rows, self.units))
        out = y if len(shape) == 2 else y.reshape(shape[:-1] + (self.units,))
        return out, (x2, z, y, shape)

    def _backward(self, ctx, grad_out, sink, need, pre_activation=False):
        be = self.backend
        x2, z, y, shape = ctx
        if len(shape) != 2:
            grad_out = be.kernel_view(grad_out, tuple(z.shape))
        g = grad_out if pre_activation or self.act.is_identity else \
            self.act.backward(be, z, y, grad_out)
        pg = sink.layer_grads(self)
        if pg is not None:
            grads, accumulate = pg
            be.dense_backward_weight(x2, g, accumulate, grads["kernel"],
                                     grads["bias"] if self.use_bias else self._bias_grad(grads))
        if not need:
            return None
        grad_in = be.empty(shape, self.dtype)
        be.dense_backward_input(g, self.params["kernel"],
                                grad_in if len(shape) == 2 else
                                be.kernel_view(grad_in, tuple(x2.shape)))
        return grad_in

    @staticmethod
    def _logits(ctx):
        x2, z, y, shape = ctx
        return z if len(shape) == 2 else z.reshape(tuple(shape[:-1]) + (int(z.shape[1]),))


class Flatten(Layer):
    """(N, d1, d2, ...) -> (N, d1*d2*...)."""

    def compute_output_shape(self, input_shape):
        if any(d is None for d in input_shape):
            raise ValueError(f"{self!r}: cannot flatten input of shape "
                             f"{(None,) + tuple(input_shape)} with sizes known only at run time")
        return (int(np.prod(input_shape)),)

    def _forward(self, x, training):
        return x.reshape((x.shape[0],) + self.output_shape), tuple(x.shape)

    def _backward(self, ctx, grad_out, sink, need):
        return grad_out.reshape(ctx) if need else None


class Reshape(Layer):
    """Reshape each sample to ``target_shape`` (one entry may be -1)."""

    def __init__(self, target_shape, **kwargs):
        super().__init__(**kwargs)
        shape = tuple(target_shape) if isinstance(target_shape, (tuple, list)) else None
        if not shape or any(isinstance(d, bool) or not isinstance(d, (int, np.integer))
                            or (d < 1 and d != -1) for d in shape) or shape.count(-1) > 1:
            raise ValueError(f"Reshape {self.name!r}: target_shape must be a tuple of positive "
                             f"ints with at most one -1, got {target_shape!r}")
        self.target_shape = tuple(int(d) for d in shape)

    def compute_output_shape(self, input_shape):
        if any(d is None for d in input_shape):
            raise ValueError(f"{self!r}: needs a fully known input shape, got "
                             f"{(None,) + tuple(input_shape)}")
        size, known = int(np.prod(input_shape)), int(np.prod([d for d in self.target_shape if d != -1]))
        shape = tuple(size // known if d == -1 else d for d in self.target_shape)
        if int(np.prod(shape)) != size:
            raise ValueError(f"{self!r}: cannot reshape input of shape {(None,) + tuple(input_shape)} "
                             f"({size} values per sample) to {(None,) + self.target_shape}")
        return shape

    def _forward(self, x, training):
        return x.reshape((x.shape[0],) + self.output_shape), tuple(x.shape)

    def _backward(self, ctx, grad_out, sink, need):
        return grad_out.reshape(ctx) if need else None


class Permute(Layer):
    """Permute the non-batch axes: ``dims`` is a permutation of 1..rank (Keras), e.g.
    ``Permute((2, 1))`` swaps the two axes of (batch, a, b)."""

    def __init__(self, dims, **kwargs):
        super().__init__(**kwargs)
        d = tuple(dims) if isinstance(dims, (tuple, list)) else None
        if not d or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in d) \
                or sorted(d) != list(range(1, len(d) + 1)):
            raise ValueError(f"Permute {self.name!r}: dims must be a permutation of 1..rank "
                             f"(axis 0 is the batch), got {dims!r}")
        self.dims = tuple(int(v) for v in d)

    def compute_output_shape(self, input_shape):
        if len(input_shape) != len(self.dims):
            raise ValueError(f"{self!r}: dims {self.dims} for input of shape "
                             f"{(None,) + tuple(input_shape)}")
        return tuple(input_shape[d - 1] for d in self.dims)

    def _forward(self, x, training):
        from ..ops import _TRANSPOSE
        return _TRANSPOSE.forward(self.backend, x, (0,) + self.dims)

    def _backward(self, ctx, grad_out, sink, need):
        from ..ops import _TRANSPOSE
        return _TRANSPOSE.backward(ctx, grad_out, [True])[0] if need else None


class Dropout(Seeded, Layer):
    """Inverted dropout: zeroes a ``rate`` fraction in training, scales the rest by 1/(1-rate)."""

    supports_masking = True
    free_axes = "all"
    output_layout = "keep"

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not V.is_real(rate) or not 0.0 <= rate < 1.0:
            raise ValueError(f"Dropout {self.name!r}: rate must be a float in [0, 1), got {rate!r}")
        self.rate = float(rate)
        self._set_seed(seed, f"Dropout {self.name!r}")

    def create_params(self, input_shape):
        self._new_rng()

    @property
    def mask(self):
        """The mask of the last ``forward`` (None outside training)."""
        return None if self._last is None else self._last

    def _forward(self, x, training):
        if not training or self.rate == 0.0:
            return x, None
        be = self.backend
        shape = tuple(x.shape)
        size = math.prod(shape)
        u = be.uniform(shape, self.dtype, self.rng)
        out, mask = be.empty(shape, self.dtype), be.empty(shape, self.dtype)
        v = lambda a: be.kernel_view(a, (size,))                       # noqa: E731
        be.dropout_forward(v(x), v(u), self.rate, v(out), v(mask))
        return out, mask

    def _backward(self, mask, grad_out, sink, need):
        if not need:
            return None
        if mask is None:
            return grad_out
        be = self.backend
        size = math.prod(tuple(grad_out.shape))
        grad_in = be.empty(tuple(grad_out.shape), self.dtype)
        v = lambda a: be.kernel_view(a, (size,))                       # noqa: E731
        be.dropout_backward(v(grad_out), v(mask), v(grad_in))
        return grad_in


class Activation(_Logits, Layer):
    """Applies a named activation (``Activation("relu")``)."""

    supports_masking = True
    free_axes = "all"
    output_layout = "keep"

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self.activation = activations.check_name(activation, f"{type(self).__name__} {self.name!r}")
        self.act = activations.ActivationOp(self.activation, self._alpha())

    def _alpha(self):
        return None

    def _forward(self, x, training):
        y = self.act.forward(self.backend, x)
        return y, (None, x, y)

    def _backward(self, ctx, grad_out, sink, need, pre_activation=False):
        if not need:
            return None
        return grad_out if pre_activation else self.act.backward(self.backend, ctx[1], ctx[2],
                                                                 grad_out)


def _fixed(act_name, doc):
    """An activation layer class with its activation fixed by name."""
    class _Fixed(Activation):
        __doc__ = doc
        _config_skip = ("activation",)

        def __init__(self, **kwargs):
            super().__init__(act_name, **kwargs)
    return _Fixed


class ReLU(_fixed("relu", "max(x, 0).")):
    pass


class Sigmoid(_fixed("sigmoid", "1 / (1 + exp(-x)).")):
    pass


class Tanh(_fixed("tanh", "tanh(x).")):
    pass


class Softplus(_fixed("softplus", "log(1 + exp(x)), computed stably.")):
    pass


class Softmax(_fixed("softmax", "Row-wise softmax over the last axis.")):
    pass


class _Parametrized(Activation):
    """An activation layer with one float parameter stored under ``param``, given by keyword
    or as the first positional argument (``LeakyReLU(0.2)``, as Keras and PyTorch)."""

    param, act_name, default = None, None, None
    _config_skip = ("activation",)

    def __init__(self, *args, **kwargs):
        if len(args) > 1:
            raise TypeError(f"{type(self).__name__}: takes one positional argument "
                            f"({self.param}), got {len(args)}")
        if args:
            if self.param in kwargs:
                raise TypeError(f"{type(self).__name__}: {self.param} given twice")
            kwargs[self.param] = args[0]
        value = kwargs.pop(self.param, self.default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            raise ValueError(f"{type(self).__name__}: {self.param} must be a finite float, "
                             f"got {value!r}")
        setattr(self, self.param, float(value))
        super().__init__(self.act_name, **kwargs)

    @classmethod
    def _constructor_names(cls):
        return [cls.param] + super()._constructor_names()

    def _alpha(self):
        return getattr(self, self.param)

    def get_config(self):
        return {**super().get_config(), self.param: getattr(self, self.param)}


class LeakyReLU(_Parametrized):
    """x if x > 0 else negative_slope * x (Keras default slope 0.3)."""
    param, act_name, default = "negative_slope", "leaky_relu", 0.3


class ELU(_Parametrized):
    """x if x > 0 else alpha * (exp(x) - 1)."""
    param, act_name, default = "alpha", "elu", 1.0


class GELU(Activation):
    """Gaussian error linear unit: exact (erf) or, with ``approximate=True``, the tanh form."""
    _config_skip = ("activation",)

    def __init__(self, approximate=False, **kwargs):
        self.approximate = bool(approximate)
        super().__init__("gelu_tanh" if self.approximate else "gelu", **kwargs)


class Lambda(Layer):
    """A function of tensors as a layer (Keras' ``Lambda``), e.g.
    ``Lambda(lambda t: nb.ops.square(t))``: written with ``nb.ops`` and differentiated like a
    layer's ``call``; called on a list, the function gets the list. ``arguments``: keyword
    arguments passed to the function. ``output_shape`` is taken for Keras code and not needed:
    the output's shape comes from running the function. A model holding a Lambda has no config
    (its function is Python code): save its weights with ``save_weights``."""

    def __init__(self, function, output_shape=None, arguments=None, **kwargs):
        super().__init__(**kwargs)
        if not callable(function):
            raise TypeError(f"Lambda: function must be callable, got {type(function).__name__}")
        if output_shape is not None and not callable(output_shape) and \
                not isinstance(output_shape, (tuple, list)):
            raise TypeError(f"Lambda: output_shape must be a tuple, a function or None, got "
                            f"{output_shape!r}")
        if arguments is not None and not isinstance(arguments, dict):
            raise TypeError(f"Lambda: arguments must be a dict of keyword arguments, got "
                            f"{type(arguments).__name__}")
        self.function, self.arguments = function, dict(arguments or {})

    def checks_input_shape(self):
        return False                    # any input the function takes, as a call() layer

    def call(self, inputs):
        return self.function(inputs, **self.arguments)

    def get_config(self):
        raise NotImplementedError(
            f"{self!r} wraps a Python function, which cannot be saved as a config; save the "
            f"weights with save_weights(path) and rebuild the model in code before "
            f"load_weights(path)")


def _penalty(x, l1, l2):
    """l1 * sum|x| + l2 * sum(x^2) with ``nb.ops`` (a regularizer's formula, differentiable)."""
    total = None
    if l1:
        total = l1 * ops.sum(ops.abs(x))
    if l2:
        term = l2 * ops.sum(ops.square(x))
        total = term if total is None else total + term
    return total


class PReLU(Layer):
    """Parametric ReLU (Keras): ``x`` where x >= 0, ``alpha * x`` elsewhere, with a trainable
    ``alpha`` per input entry (Keras' default initializer: zeros, a plain ReLU at first).
    ``shared_axes`` (axes counted with the batch, an int or a list) share one alpha along
    them: for NCHW images ``shared_axes=[2, 3]`` gives one per channel, as ``torch.nn.PReLU(C)``
    (Keras' ``[1, 2]`` is the same for its NHWC images). ``alpha_regularizer`` adds its penalty
    of alpha to the loss at each call; ``alpha_constraint`` is not supported. Written with
    ``nb.ops``."""

    supports_masking = True
    output_layout = "keep"

    def __init__(self, alpha_initializer="Zeros", alpha_regularizer=None, shared_axes=None,
                 **kwargs):
        super().__init__(**kwargs)
        where = f"PReLU {self.name!r}"
        self.alpha_initializer = initializers.get(alpha_initializer,
                                                  f"{where} alpha_initializer")
        self._keep_specs(alpha_initializer=alpha_initializer)
        from .. import regularizers
        self.alpha_regularizer = regularizers.get(alpha_regularizer,
                                                  f"{where} alpha_regularizer")
        axes = [shared_axes] if V.is_int(shared_axes) else shared_axes
        if shared_axes is not None and (not isinstance(axes, (list, tuple)) or not all(
                V.is_int(a) and a >= 1 for a in axes)):
            raise ValueError(f"{where}: shared_axes must be None, an int or a list of ints >= 1 "
                             f"(axis 0 is the batch), got {shared_axes!r}")
        self.shared_axes = None if shared_axes is None else sorted({int(a) for a in axes})

    @property
    def free_axes(self):
        """The shared axes (one alpha along them) may change size between calls."""
        return tuple(a - 1 for a in self.shared_axes or ()) or None

    def compute_output_shape(self, input_shape):
        bad = [a for a in self.shared_axes or () if a > len(input_shape)]
        if bad:
            raise ValueError(f"{self!r}: shared_axes {self.shared_axes} names axis {bad[0]}, "
                             f"but the input shape {fmt_shape(input_shape)} has axes 1.."
                             f"{len(input_shape)} besides the batch")
        unknown = [k + 1 for k, d in enumerate(input_shape)
                   if d is None and k + 1 not in (self.shared_axes or ())]
        if unknown:
            raise ValueError(f"{self!r}: alpha needs known sizes on the axes it does not share, "
                             f"got input shape {fmt_shape(input_shape)} (axis {unknown[0]}); "
                             f"share it with shared_axes=[{unknown[0]}]")
        return input_shape

    def create_params(self, input_shape):
        shape = tuple(1 if k + 1 in (self.shared_axes or ()) else d
                      for k, d in enumerate(input_shape))
        self.alpha = self.add_weight("alpha", shape, self.alpha_initializer)

    def call(self, x):
        if self.alpha_regularizer is not None:
            penalty = _penalty(self.alpha, self.alpha_regularizer.l1, self.alpha_regularizer.l2)
            if penalty is not None:
                self.add_loss(penalty)
        return ops.relu(x) - self.alpha * ops.relu(-x)


class ActivityRegularization(Layer):
    """Passes its input through and adds ``(l1 * sum|x| + l2 * sum(x^2)) / batch`` to the loss
    (Keras: an activity regularizer's penalty divided by the batch size)."""

    supports_masking = True
    free_axes = "all"
    output_layout = "keep"

    def __init__(self, l1=0.0, l2=0.0, **kwargs):
        super().__init__(**kwargs)
        from ..regularizers import _factor
        where = f"ActivityRegularization {self.name!r}"
        self.l1, self.l2 = _factor(l1, "l1", where), _factor(l2, "l2", where)

    def call(self, x):
        penalty = _penalty(x, self.l1, self.l2)
        if penalty is not None:
            self.add_loss(penalty / float(x.shape[0]))
        return x
