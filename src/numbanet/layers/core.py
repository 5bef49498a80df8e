"""Dense, Flatten, Reshape, Dropout and the activation layers."""
import numpy as np

from .. import activations, initializers
from .. import random as _random
from .base import Layer, check_positive_int


class _Affine(Layer):
    """Shared by Dense and Conv2D: a kernel, an optional bias and an optional activation.

    ``backward(g, pre_activation=True)`` takes the gradient with respect to the pre-activation
    output, which lets the model fuse softmax with cross-entropy (gradient ``p - y``).
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
        self._init_specs = (kernel_initializer, bias_initializer)
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

    def bias_grad(self):
        """Where the bias gradient goes (scratch when there is no bias)."""
        return self.grads["bias"] if self.use_bias else \
            self.backend.empty((self.bias_size,), self.dtype)

    @property
    def logits(self):
        """The pre-activation output of the last forward pass."""
        return self.act.x

    def activate(self, z):
        return self.act.forward(self.backend, z)

    def affine_forward(self, kernel, args, shape):
        """``kernel`` (dense_forward / conv2d_forward) of ``args`` into a new ``shape`` array,
        then the activation: both in one kernel (``<kernel>_activation``, which also keeps the
        pre-activation for backward) when the activation is elementwise."""
        be = self.backend
        z = be.empty(shape, self.dtype)
        if not self.act.fusable:
            getattr(be, kernel)(*args, z)
            return self.activate(z)
        y = be.empty(shape, self.dtype)
        getattr(be, kernel + "_activation")(*args, self.act.code, self.act.alpha, z, y)
        return self.act.record(z, y)

    def activation_grad(self, grad_out, pre_activation):
        return grad_out if pre_activation else self.act.backward(self.backend, grad_out)

    def get_config(self):
        return {**super().get_config(), "activation": self.activation, "use_bias": self.use_bias,
                "kernel_initializer": initializers.serialize(self._init_specs[0]),
                "bias_initializer": initializers.serialize(self._init_specs[1]),
                "kernel_regularizer": self._regularizer_config()}

    def _regularizer_config(self):
        if self.kernel_regularizer is None:
            return None
        from .. import regularizers
        return regularizers.serialize(self.kernel_regularizer)


class Dense(_Affine):
    """Fully connected layer: ``activation(x @ kernel + bias)``; kernel is (in_features, units)."""

    def __init__(self, units, activation=None, **kwargs):
        super().__init__(activation=activation, **kwargs)
        self.units = check_positive_int(units, "units", f"Dense {self.name!r}")

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 1:
            raise ValueError(f"{self!r}: expects 2-D input (batch, features), got input shape "
                             f"{(None,) + tuple(input_shape)}; add a Flatten layer before it")
        return (self.units,)

    def create_params(self, input_shape):
        self.create_affine((input_shape[0], self.units), self.units, input_shape[0], self.units)

    def call(self, x, training):
        self.x = x
        return self.affine_forward("dense_forward", (x, self.params["kernel"], self.bias),
                                   (x.shape[0], self.units))

    def backward(self, grad_out, pre_activation=False):
        be = self.backend
        g = self.activation_grad(grad_out, pre_activation)
        be.dense_backward_weight(self.x, g, False, self.grads["kernel"], self.bias_grad())
        if not self.needs_input_grad:
            return None
        grad_in = be.empty(self.x.shape, self.dtype)
        be.dense_backward_input(g, self.params["kernel"], grad_in)
        return grad_in

    def get_config(self):
        return {**super().get_config(), "units": self.units}


class Flatten(Layer):
    """(N, d1, d2, ...) -> (N, d1*d2*...)."""

    def compute_output_shape(self, input_shape):
        return (int(np.prod(input_shape)),)

    def call(self, x, training):
        return x.reshape((x.shape[0],) + self.output_shape)

    def backward(self, grad_out):
        return grad_out.reshape((grad_out.shape[0],) + self.input_shape)


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
        size, known = int(np.prod(input_shape)), int(np.prod([d for d in self.target_shape if d != -1]))
        shape = tuple(size // known if d == -1 else d for d in self.target_shape)
        if int(np.prod(shape)) != size:
            raise ValueError(f"{self!r}: cannot reshape input of shape {(None,) + tuple(input_shape)} "
                             f"({size} values per sample) to {(None,) + self.target_shape}")
        return shape

    def call(self, x, training):
        return x.reshape((x.shape[0],) + self.output_shape)

    def backward(self, grad_out):
        return grad_out.reshape((grad_out.shape[0],) + self.input_shape)

    def get_config(self):
        return {**super().get_config(), "target_shape": list(self.target_shape)}


class Dropout(Layer):
    """Inverted dropout: zeroes a ``rate`` fraction in training, scales the rest by 1/(1-rate)."""

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
            raise ValueError(f"Dropout {self.name!r}: rate must be a float in [0, 1), got {rate!r}")
        if seed is not None:
            check_positive_int(seed, "seed", f"Dropout {self.name!r}", allow_zero=True)
        self.rate, self.seed = float(rate), seed
        self.rng = None
        self.mask = None

    def create_params(self, input_shape):
        self.rng = np.random.default_rng(self.seed) if self.seed is not None else _random.spawn()

    def rng_state(self):
        return self.rng.bit_generator.state

    def set_rng_state(self, state):
        self.rng.bit_generator.state = state

    def call(self, x, training):
        if not training or self.rate == 0.0:
            self.mask = None
            return x
        be = self.backend
        u = be.uniform(x.shape, self.dtype, self.rng)
        out, self.mask = be.empty(x.shape, self.dtype), be.empty(x.shape, self.dtype)
        be.dropout_forward(x.reshape(-1), u.reshape(-1), self.rate, out.reshape(-1),
                           self.mask.reshape(-1))
        return out

    def backward(self, grad_out):
        if self.mask is None:
            return grad_out
        grad_in = self.backend.empty(grad_out.shape, self.dtype)
        self.backend.dropout_backward(grad_out.reshape(-1), self.mask.reshape(-1),
                                      grad_in.reshape(-1))
        return grad_in

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


class Activation(Layer):
    """Applies a named activation (``Activation("relu")``)."""

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self.activation = activations.check_name(activation, f"{type(self).__name__} {self.name!r}")
        self.act = activations.ActivationOp(self.activation, self._alpha())

    def _alpha(self):
        return None

    @property
    def logits(self):
        return self.act.x

    def call(self, x, training):
        return self.act.forward(self.backend, x)

    def backward(self, grad_out, pre_activation=False):
        return grad_out if pre_activation else self.act.backward(self.backend, grad_out)

    def get_config(self):
        return {**super().get_config(), "activation": self.activation}


def _fixed(act_name, doc):
    """An activation layer class with its activation fixed by name."""
    class _Fixed(Activation):
        __doc__ = doc

        def __init__(self, **kwargs):
            super().__init__(act_name, **kwargs)

        def get_config(self):
            config = super().get_config()
            del config["activation"]
            return config
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
    """An activation layer with one float parameter stored under ``param``."""

    param, act_name, default = None, None, None

    def __init__(self, **kwargs):
        value = kwargs.pop(self.param, self.default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            raise ValueError(f"{type(self).__name__}: {self.param} must be a finite float, "
                             f"got {value!r}")
        setattr(self, self.param, float(value))
        super().__init__(self.act_name, **kwargs)

    def _alpha(self):
        return getattr(self, self.param)

    def get_config(self):
        config = super().get_config()
        del config["activation"]
        return {**config, self.param: getattr(self, self.param)}


class LeakyReLU(_Parametrized):
    """x if x > 0 else negative_slope * x (Keras default slope 0.3)."""
    param, act_name, default = "negative_slope", "leaky_relu", 0.3


class ELU(_Parametrized):
    """x if x > 0 else alpha * (exp(x) - 1)."""
    param, act_name, default = "alpha", "elu", 1.0


class GELU(Activation):
    """Gaussian error linear unit: exact (erf) or, with ``approximate=True``, the tanh form."""

    def __init__(self, approximate=False, **kwargs):
        self.approximate = bool(approximate)
        super().__init__("gelu_tanh" if self.approximate else "gelu", **kwargs)

    def get_config(self):
        config = super().get_config()
        del config["activation"]
        return {**config, "approximate": self.approximate}
