"""Differentiable operations on tensors (``nb.ops``), NumPy broadcasting, on the CPU and the GPU.

Each op is an :class:`Op`: ``forward(backend, ...)`` runs its kernel(s) (``kernels/<device>/ops.py``
and the activation kernels) and returns the output and a context; ``backward(ctx, grad, need)``
returns the gradient of each input, with its own kernels or as a composition of ops' kernels.
Calling an op on tensors records it on the active :class:`~numbanet.GradientTape` s.

Operands may be :class:`~numbanet.engine.Tensor` s, :class:`~numbanet.engine.Variable` s (layer
weights), NumPy arrays or Python numbers. Tensors decide the device and the float dtype: a host
array or a number is converted to the dtype of the tensor operands (float32 unless one of them
is float64; with no tensor operand, a float64 NumPy array stays float64). Python numbers do not
broadcast at all: ``x * 2`` is one elementwise kernel.
"""
import builtins
import math
import numbers

import numpy as np

from . import engine
from .engine import (Tensor, Variable, _TensorLike, backend_of, convert_to_tensor, record,
                     to_backend)
from .kernels.scalar import BINARY_CODES, MAX_RANK, UNARY_CODES

__all__ = ["convert_to_tensor", "add", "subtract", "multiply", "divide", "negative", "power",
           "matmul", "sum", "mean", "max", "square", "sqrt", "exp", "log", "abs", "maximum",
           "minimum", "clip", "where", "reshape", "transpose", "concatenate", "stack", "take",
           "softmax", "log_softmax", "sigmoid", "tanh", "relu", "getitem", "expand_dims",
           "squeeze", "broadcast_to", "stop_gradient", "zeros_like", "ones_like", "cast",
           "sign", "equal", "not_equal", "greater", "greater_equal", "less", "less_equal",
           "argmax", "argmin", "shape", "leaky_relu", "elu", "gelu", "softplus", "silu",
           "swish", "selu", "relu6", "min", "var", "std", "norm", "logsumexp", "zeros", "ones",
           "arange", "one_hot"]

_U = {name: i for i, name in enumerate(UNARY_CODES)}
_B = {name: i for i, name in enumerate(BINARY_CODES)}


# ---------------------------------------------------------------------------------------------
# operands

def _is_number(v):
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) and \
        not isinstance(v, np.ndarray)


def _float_dtype(values):
    """The float dtype of an op on ``values``: float64 if a tensor operand is float64, else
    float32; with no tensor operand, float64 if a NumPy operand is float64."""
    tensors = [v for v in values if isinstance(v, _TensorLike)]
    pool = tensors or [v for v in values if isinstance(v, np.ndarray)]
    return np.dtype(np.float64) if any(np.dtype(v.dtype) == np.float64 for v in pool) \
        else np.dtype(np.float32)


def _value(be, v, dtype, what):
    """The backend array of operand ``v`` cast to ``dtype`` (None stays None)."""
    if isinstance(v, _TensorLike):
        a = v.value
        if np.dtype(a.dtype) == dtype:
            return a
        return to_backend(be, v.backend.to_numpy(a), dtype)
    try:
        host = np.asarray(v)
    except Exception as e:
        raise TypeError(f"{what}: could not convert {type(v).__name__} to an array ({e})") from None
    if host.dtype.kind not in "biuf":
        raise TypeError(f"{what}: expected numbers, got dtype {host.dtype}")
    return to_backend(be, host, dtype)


def _tracked(v):
    """What the tape sees of an operand: the tensor or variable, or None for a constant."""
    return v if isinstance(v, (Tensor, Variable)) else None


def _wrap(be, out, op, ctx, inputs):
    t = Tensor(out, be)
    if engine.recording():
        record(op, ctx, [_tracked(v) for v in inputs], [t])
    return t


def _shape(a):
    return tuple(int(d) for d in a.shape)


def _flat(be, a):
    return be.kernel_view(a, (int(math.prod(_shape(a))),))


def _contiguous_strides(shape):
    strides, step = [], 1
    for d in reversed(shape):
        strides.append(step)
        step *= d
    return tuple(reversed(strides))


def _pad(values, fill):
    values = tuple(int(v) for v in values)
    if len(values) > MAX_RANK:
        raise ValueError(f"ops support arrays of up to {MAX_RANK} dimensions after merging "
                         f"contiguous ones, got {len(values)}")
    return (fill,) * (MAX_RANK - len(values)) + values


def _collapse(shape, *strides):
    """Drop size-1 dimensions and merge adjacent ones that every operand steps through
    contiguously; returns (shape, strides...) padded to MAX_RANK."""
    dims = [(d, [s[i] for s in strides]) for i, d in enumerate(shape) if d != 1]
    merged = []
    for d, st in dims:
        if merged:
            pd, pst = merged[-1]
            if all(ps == s * d for ps, s in zip(pst, st)):
                merged[-1] = (pd * d, st)
                continue
        merged.append((d, st))
    out_shape = _pad([d for d, _ in merged], 1)
    out_strides = [_pad([st[k] for _, st in merged], 0) for k in range(len(strides))]
    return (out_shape, *out_strides)


def broadcast_shapes(what, *shapes):
    try:
        return tuple(int(d) for d in np.broadcast_shapes(*shapes))
    except ValueError:
        raise ValueError(f"{what}: shapes {' and '.join(str(tuple(s)) for s in shapes)} do not "
                         f"broadcast together") from None


def _bstrides(shape, out_shape):
    """Element strides of a C-contiguous array of ``shape`` broadcast to ``out_shape``."""
    own = _contiguous_strides(shape)
    lead = len(out_shape) - len(shape)
    return tuple(0 if i < lead or shape[i - lead] == 1 else own[i - lead]
                 for i in range(len(out_shape)))


def reduce_to(be, g, shape):
    """Sum the gradient ``g`` (of a broadcast result) back to an operand of ``shape``."""
    gshape = _shape(g)
    shape = tuple(shape)
    if gshape == shape:
        return g
    lead = len(gshape) - len(shape)
    full = (1,) * lead + shape
    gstr = _contiguous_strides(gshape)
    keep = [(d, s) for d, s, f in zip(gshape, gstr, full) if f != 1 or d == 1]
    red = [(d, s) for d, s, f in zip(gshape, gstr, full) if f == 1 and d != 1]
    out = be.empty(shape, g.dtype)
    _reduce(be, "reduce_sum", g, keep, red, out, 1.0)
    return out


def _reduce(be, kernel, x, keep, red, out, scale=None):
    """Run reduce_sum / reduce_max of ``x`` over index spaces ``keep`` and ``red`` (lists of
    (size, stride)) into ``out``."""
    ks, kst = _collapse([d for d, _ in keep], [s for _, s in keep])
    rs, rst = _collapse([d for d, _ in red], [s for _, s in red])
    args = (_flat(be, x), ks, kst, rs, rst)
    if scale is not None:
        args += (scale,)
    getattr(be, kernel)(*args, _flat(be, out))


# ---------------------------------------------------------------------------------------------
# the Op protocol

class Op:
    """A differentiable operation: ``forward`` returns (output, context); ``backward(ctx, g,
    need)`` the gradients of the inputs (None where ``need`` is False)."""

    name = None

    def backward(self, ctx, g, need):
        raise NotImplementedError

    def __repr__(self):
        return f"<op {self.name}>"


class _Unary(Op):
    def __init__(self, name):
        self.name, self.code = name, _U[name]

    def run(self, x, alpha=0.0, beta=0.0):
        be = backend_of(x)
        a = _value(be, x, _float_dtype([x]), self.name)
        out, ctx = self.forward(be, a, alpha, beta)
        return _wrap(be, out, self, ctx, [x])

    def forward(self, be, a, alpha=0.0, beta=0.0):
        out = be.empty(_shape(a), a.dtype)
        be.unary_forward(self.code, _flat(be, a), float(alpha), float(beta), _flat(be, out))
        return out, (be, a, out, alpha, beta)

    def backward(self, ctx, g, need):
        be, a, out, alpha, beta = ctx
        gin = be.empty(_shape(a), a.dtype)
        be.unary_backward(self.code, _flat(be, a), _flat(be, out), _flat(be, g), float(alpha),
                          float(beta), _flat(be, gin))
        return [gin]


class _ActivationOp(Op):
    """An activation through its kernels (``<name>_forward``/``_backward``, ``alpha``: the
    leaky_relu slope or the elu alpha)."""

    def __init__(self, name):
        self.name = name

    def run(self, x, alpha=0.0):
        be = backend_of(x)
        a = _value(be, x, _float_dtype([x]), self.name)
        out = be.empty(_shape(a), a.dtype)
        getattr(be, self.name + "_forward")(_flat(be, a), float(alpha), _flat(be, out))
        return _wrap(be, out, self, (be, a, out, float(alpha)), [x])

    def backward(self, ctx, g, need):
        be, a, out, alpha = ctx
        gin = be.empty(_shape(a), a.dtype)
        getattr(be, self.name + "_backward")(_flat(be, a), _flat(be, out), _flat(be, g), alpha,
                                             _flat(be, gin))
        return [gin]


class _Binary(Op):
    """Elementwise a (op) b with broadcasting."""

    def __init__(self, name):
        self.name, self.code = name, _B[name]

    def run(self, x, y):
        be = backend_of(x, y)
        dt = _float_dtype([x, y])
        a, b = _value(be, x, dt, self.name), _value(be, y, dt, self.name)
        out, ctx = self.forward(be, a, b)
        return _wrap(be, out, self, ctx, [x, y])

    def forward(self, be, a, b):
        """a (op) b on backend arrays of one dtype -> (out, ctx)."""
        sa, sb = _shape(a), _shape(b)
        shape = sa if sa == sb else broadcast_shapes(self.name, sa, sb)
        out = be.empty(shape, a.dtype)
        geo = _collapse(shape, _bstrides(sa, shape), _bstrides(sb, shape))
        be.binary_forward(self.code, _flat(be, a), _flat(be, b), *geo, _flat(be, out))
        return out, (be, a, b, shape, geo)

    def backward(self, ctx, g, need):
        be, a, b, shape, geo = ctx
        sa, sb = _shape(a), _shape(b)
        if self.name in ("add", "subtract"):
            ga = reduce_to(be, g, sa) if need[0] else None
            gb = None
            if need[1]:
                if self.name == "add":
                    gb = reduce_to(be, g, sb)
                elif sb == shape:
                    gb = be.empty(sb, g.dtype)
                    be.unary_forward(_U["neg"], _flat(be, g), 0.0, 0.0, _flat(be, gb))
                else:
                    gb = reduce_to(be, g, sb)
                    be.unary_forward(_U["neg"], _flat(be, gb), 0.0, 0.0, _flat(be, gb))
            return [ga, gb]
        fa, fb = be.empty(shape, g.dtype), be.empty(shape, g.dtype)
        be.binary_backward(self.code, _flat(be, a), _flat(be, b), _flat(be, g), *geo,
                           _flat(be, fa), _flat(be, fb))
        return [reduce_to(be, fa, sa) if need[0] else None,
                reduce_to(be, fb, sb) if need[1] else None]


class _Compare(_Binary):
    """An elementwise comparison: 1.0 where true, else 0.0, in the operands' float dtype. It is
    not differentiable: the tape sees its result as a constant (as ``where``'s condition), so
    no gradient reaches the operands through it."""

    def run(self, x, y):
        be = backend_of(x, y)
        dt = _float_dtype([x, y])
        out, _ = self.forward(be, _value(be, x, dt, self.name), _value(be, y, dt, self.name))
        return _wrap(be, out, self, None, [None, None])

    def backward(self, ctx, g, need):
        return [None, None]


class _Sign(_Unary):
    """sign(x): -1, 0 or 1 (NaN stays NaN); its gradient is zero (as torch.sign's)."""

    def backward(self, ctx, g, need):
        be, a = ctx[:2]
        return [be.zeros(_shape(a), a.dtype)]


_ADD, _SUB, _MUL, _DIV = (_Binary(n) for n in ("add", "subtract", "multiply", "divide"))
_MAXIMUM, _MINIMUM = _Binary("maximum"), _Binary("minimum")
_EQUAL, _NOT_EQUAL, _GREATER, _GREATER_EQUAL, _LESS, _LESS_EQUAL = (
    _Compare(n) for n in ("equal", "not_equal", "greater", "greater_equal", "less",
                          "less_equal"))
_NEG, _SQUARE, _SQRT, _EXP, _LOG, _ABS, _POWER, _CLIP, _AFFINE, _RDIV = (
    _Unary(n) for n in ("neg", "square", "sqrt", "exp", "log", "abs", "power", "clip", "affine",
                        "rdiv"))
_SIGN = _Sign("sign")
_ACTIVATIONS = {n: _ActivationOp(n) for n in ("sigmoid", "tanh", "relu", "leaky_relu", "elu",
                                               "gelu", "gelu_tanh", "softplus")}
_SIGMOID, _TANH, _RELU = _ACTIVATIONS["sigmoid"], _ACTIVATIONS["tanh"], _ACTIVATIONS["relu"]


def _scalar_operand(v):
    """A Python number (or a NumPy scalar) operand as a float, else None."""
    if _is_number(v) or (isinstance(v, np.generic) and np.dtype(v.dtype).kind in "iuf"):
        return float(v)
    return None


def add(x, y):
    """x + y (broadcasting)."""
    s = _scalar_operand(y)
    if s is not None and isinstance(x, _TensorLike):
        return _AFFINE.run(x, 1.0, s)
    s = _scalar_operand(x)
    if s is not None and isinstance(y, _TensorLike):
        return _AFFINE.run(y, 1.0, s)
    return _ADD.run(x, y)


def subtract(x, y):
    """x - y (broadcasting)."""
    s = _scalar_operand(y)
    if s is not None and isinstance(x, _TensorLike):
        return _AFFINE.run(x, 1.0, -s)
    s = _scalar_operand(x)
    if s is not None and isinstance(y, _TensorLike):
        return _AFFINE.run(y, -1.0, s)
    return _SUB.run(x, y)


def multiply(x, y):
    """x * y (broadcasting)."""
    s = _scalar_operand(y)
    if s is not None and isinstance(x, _TensorLike):
        return _AFFINE.run(x, s, 0.0)
    s = _scalar_operand(x)
    if s is not None and isinstance(y, _TensorLike):
        return _AFFINE.run(y, s, 0.0)
    return _MUL.run(x, y)


def divide(x, y):
    """x / y (broadcasting)."""
    s = _scalar_operand(y)
    if s is not None and s != 0 and isinstance(x, _TensorLike):
        return _AFFINE.run(x, 1.0 / s, 0.0)
    s = _scalar_operand(x)
    if s is not None and isinstance(y, _TensorLike):
        return _RDIV.run(y, s, 0.0)
    return _DIV.run(x, y)


def negative(x):
    """-x."""
    return _NEG.run(x)


def power(x, exponent):
    """x ** exponent for a scalar ``exponent`` (NaN for a negative x and a non-integer exponent,
    as PyTorch)."""
    e = _scalar_operand(exponent)
    if e is None:
        raise TypeError(f"power: the exponent must be a Python number, got "
                        f"{type(exponent).__name__}")
    if e == 2.0:
        return _SQUARE.run(x)
    if e == 1.0:
        return _AFFINE.run(x, 1.0, 0.0)
    return _POWER.run(x, e)


def square(x):
    return _SQUARE.run(x)


def sqrt(x):
    return _SQRT.run(x)


def exp(x):
    return _EXP.run(x)


def log(x):
    return _LOG.run(x)


def abs(x):  # noqa: A001  (nb.ops.abs, as keras.ops.abs)
    return _ABS.run(x)


def clip(x, x_min, x_max):
    """x clipped to [x_min, x_max] (gradient 1 inside, inclusive, 0 outside)."""
    lo, hi = _scalar_operand(x_min), _scalar_operand(x_max)
    if lo is None or hi is None:
        raise TypeError("clip: x_min and x_max must be numbers")
    if lo > hi:
        raise ValueError(f"clip: x_min {lo} is greater than x_max {hi}")
    return _CLIP.run(x, lo, hi)


def maximum(x, y):
    """Elementwise maximum (broadcasting; on ties the gradient is split equally, as PyTorch)."""
    return _MAXIMUM.run(x, y)


def minimum(x, y):
    """Elementwise minimum (broadcasting; ties split the gradient equally)."""
    return _MINIMUM.run(x, y)


def sign(x):
    """-1 where x < 0, 0 where x == 0, 1 where x > 0, NaN where x is NaN (as ``np.sign``;
    ``torch.sign`` gives 0 for NaN). Its gradient is zero everywhere (as torch)."""
    return _SIGN.run(x)


# The comparisons: numbanet has no bool tensors, so they give floats, 1.0 where true and 0.0
# where false (false wherever an operand is NaN, except for not_equal), in the operands' float
# dtype (float32 unless a tensor operand is float64; integer operands are compared as such
# floats, exact up to 2**24 in float32). ``where`` takes them as conditions, ``cast`` /
# ``mean`` / ``sum`` count them. They are not differentiable: no gradient flows through them.
# The operators ``<  <=  >  >=`` call them; ``==`` and ``!=`` stay identity comparisons (tensors
# and variables are dictionary keys and set members), so ``equal`` / ``not_equal`` are the
# elementwise forms.

def equal(x, y):
    """1.0 where x == y, else 0.0 (broadcasting; numbers allowed on either side)."""
    return _EQUAL.run(x, y)


def not_equal(x, y):
    """1.0 where x != y (and where either is NaN), else 0.0."""
    return _NOT_EQUAL.run(x, y)


def greater(x, y):
    """1.0 where x > y, else 0.0 (``x > y``)."""
    return _GREATER.run(x, y)


def greater_equal(x, y):
    """1.0 where x >= y, else 0.0 (``x >= y``)."""
    return _GREATER_EQUAL.run(x, y)


def less(x, y):
    """1.0 where x < y, else 0.0 (``x < y``)."""
    return _LESS.run(x, y)


def less_equal(x, y):
    """1.0 where x <= y, else 0.0 (``x <= y``)."""
    return _LESS_EQUAL.run(x, y)


def sigmoid(x):
    return _SIGMOID.run(x)


def tanh(x):
    return _TANH.run(x)


def relu(x):
    return _RELU.run(x)


def leaky_relu(x, negative_slope=0.2):
    """x where x > 0, else negative_slope * x (Keras' default slope 0.2)."""
    return _ACTIVATIONS["leaky_relu"].run(x, _number(negative_slope, "leaky_relu",
                                                     "negative_slope"))


def elu(x, alpha=1.0):
    """x where x > 0, else alpha * (exp(x) - 1)."""
    return _ACTIVATIONS["elu"].run(x, _number(alpha, "elu", "alpha"))


def gelu(x, approximate=True):
    """x * Phi(x); ``approximate=True`` (Keras' default) is the tanh form, False the exact erf
    one (torch's default)."""
    if not isinstance(approximate, (bool, np.bool_)):
        raise TypeError(f"gelu: approximate must be True or False, got {approximate!r}")
    return _ACTIVATIONS["gelu_tanh" if approximate else "gelu"].run(x)


def softplus(x):
    """log(1 + exp(x)), stable for large |x|."""
    return _ACTIVATIONS["softplus"].run(x)


def silu(x):
    """x * sigmoid(x) (swish)."""
    return multiply(x, sigmoid(x))


swish = silu


def selu(x):
    """scale * elu(x, alpha) with the self-normalizing constants of Klambauer et al. 2017."""
    return multiply(elu(x, 1.6732632423543772), 1.0507009873554805)


def relu6(x):
    """min(max(x, 0), 6)."""
    return minimum(relu(x), 6.0)


def _number(v, what, name):
    if not _is_number(v) or not math.isfinite(v):
        raise ValueError(f"{what}: {name} must be a finite number, got {v!r}")
    return float(v)


# ---------------------------------------------------------------------------------------------
# where

class _Where(Op):
    name = "where"

    def run(self, cond, x, y):
        be = backend_of(cond, x, y)
        dt = _float_dtype([x, y])
        c = _cond(be, cond, dt)
        a, b = _value(be, x, dt, "where"), _value(be, y, dt, "where")
        sc, sa, sb = _shape(c), _shape(a), _shape(b)
        shape = broadcast_shapes("where", sc, sa, sb)
        out = be.empty(shape, dt)
        geo = _collapse(shape, _bstrides(sc, shape), _bstrides(sa, shape), _bstrides(sb, shape))
        be.where_forward(_flat(be, c), _flat(be, a), _flat(be, b), *geo, _flat(be, out))
        return _wrap(be, out, self, (be, c, sa, sb, shape), [None, x, y])

    def backward(self, ctx, g, need):
        be, c, sa, sb, shape = ctx
        geo = _collapse(shape, _bstrides(_shape(c), shape))
        fa, fb = be.empty(shape, g.dtype), be.empty(shape, g.dtype)
        be.where_backward(_flat(be, c), _flat(be, g), *geo, _flat(be, fa), _flat(be, fb))
        return [None, reduce_to(be, fa, sa) if need[1] else None,
                reduce_to(be, fb, sb) if need[2] else None]


def _cond(be, cond, dt):
    """A condition as a float array of ``dt`` (1 where true)."""
    if isinstance(cond, _TensorLike):
        if cond.dtype == dt:
            return cond.value
        return be.asarray((cond.backend.to_numpy(cond.value) != 0).astype(dt))
    return be.asarray((np.asarray(cond) != 0).astype(dt))


_WHERE = _Where()


def where(condition, x, y):
    """x where ``condition`` is true (nonzero), else y (broadcasting); no gradient flows to the
    condition."""
    return _WHERE.run(condition, x, y)


# ---------------------------------------------------------------------------------------------
# reductions

def _axes(axis, ndim, what):
    if axis is None:
        return tuple(range(ndim))
    axes = tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)
    out = []
    for a in axes:
        if isinstance(a, bool) or not isinstance(a, (int, np.integer)) or not -ndim <= a < ndim:
            raise ValueError(f"{what}: axis {axis!r} out of range for an array of {ndim} "
                             f"dimensions")
        out.append(int(a) % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"{what}: repeated axis in {axis!r}")
    return tuple(sorted(out))


def _reduced_shape(shape, axes, keepdims):
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _split(shape, axes):
    st = _contiguous_strides(shape)
    keep = [(d, s) for i, (d, s) in enumerate(zip(shape, st)) if i not in axes]
    red = [(d, s) for i, (d, s) in enumerate(zip(shape, st)) if i in axes]
    return keep, red


def broadcast_into(be, g, shape, axes, scale=1.0):
    """``g`` (of the reduced shape) broadcast back over ``axes`` to ``shape``, times ``scale``."""
    out = be.empty(shape, g.dtype)
    kshape = tuple(1 if i in axes else d for i, d in enumerate(shape))
    gst = _bstrides(kshape, shape)
    geo = _collapse(shape, gst, _contiguous_strides(shape))
    be.strided_copy(_flat(be, g), 0, geo[0], geo[1], False, _flat(be, out), 0, geo[2])
    if scale != 1.0:
        be.unary_forward(_U["affine"], _flat(be, out), float(scale), 0.0, _flat(be, out))
    return out


class _Sum(Op):
    def __init__(self, name, mean):
        self.name, self.mean = name, mean

    def run(self, x, axis=None, keepdims=False):
        be = backend_of(x)
        a = _value(be, x, _float_dtype([x]), self.name)
        shape = _shape(a)
        axes = _axes(axis, len(shape), self.name)
        count = int(math.prod(shape[i] for i in axes))
        if self.mean and count == 0:
            raise ValueError(f"mean: reducing over an empty axis of shape {shape}")
        scale = 1.0 / count if self.mean else 1.0
        out = be.empty(_reduced_shape(shape, axes, keepdims), a.dtype)
        keep, red = _split(shape, axes)
        _reduce(be, "reduce_sum", a, keep, red, out, scale)
        return _wrap(be, out, self, (be, shape, axes, scale), [x])

    def backward(self, ctx, g, need):
        be, shape, axes, scale = ctx
        return [broadcast_into(be, g, shape, axes, scale)]


class _Max(Op):
    name = "max"

    def run(self, x, axis=None, keepdims=False):
        be = backend_of(x)
        a = _value(be, x, _float_dtype([x]), "max")
        shape = _shape(a)
        axes = _axes(axis, len(shape), "max")
        if any(shape[i] == 0 for i in axes):
            raise ValueError(f"max: reducing over an empty axis of shape {shape}")
        out = be.empty(_reduced_shape(shape, axes, keepdims), a.dtype)
        keep, red = _split(shape, axes)
        _reduce(be, "reduce_max", a, keep, red, out)
        return _wrap(be, out, self, (be, a, out, axes), [x])

    def backward(self, ctx, g, need):
        """The gradient is split equally among the elements equal to the maximum (as PyTorch's
        amax): mask * g / count."""
        be, a, out, axes = ctx
        shape = _shape(a)
        kshape = tuple(1 if i in axes else d for i, d in enumerate(shape))
        m = be.kernel_view(out, kshape) if be.is_device else out.reshape(kshape)
        mask = be.empty(shape, a.dtype)
        geo = _collapse(shape, _contiguous_strides(shape), _bstrides(kshape, shape))
        be.binary_forward(_B["equal"], _flat(be, a), _flat(be, m), *geo, _flat(be, mask))
        count = be.empty(kshape, a.dtype)
        keep, red = _split(shape, axes)
        _reduce(be, "reduce_sum", mask, keep, red, count, 1.0)
        share = be.empty(kshape, a.dtype)
        geo1 = _collapse(kshape, _contiguous_strides(kshape), _contiguous_strides(kshape))
        be.binary_forward(_B["divide"], _flat(be, g), _flat(be, count), *geo1, _flat(be, share))
        gin = be.empty(shape, a.dtype)
        be.binary_forward(_B["multiply"], _flat(be, mask), _flat(be, share), *geo,
                          _flat(be, gin))
        return [gin]


_SUM, _MEAN, _MAX = _Sum("sum", False), _Sum("mean", True), _Max()


def sum(x, axis=None, keepdims=False):  # noqa: A001
    """Sum over ``axis`` (an int, a tuple, or None for all)."""
    return _SUM.run(x, axis, keepdims)


def mean(x, axis=None, keepdims=False):
    """Mean over ``axis``."""
    return _MEAN.run(x, axis, keepdims)


def max(x, axis=None, keepdims=False):  # noqa: A001
    """Maximum over ``axis`` (NaN propagates; ties share the gradient equally)."""
    return _MAX.run(x, axis, keepdims)


def min(x, axis=None, keepdims=False):  # noqa: A001
    """Minimum over ``axis`` (as ``-max(-x)``: NaN propagates, ties share the gradient)."""
    return negative(max(negative(x), axis, keepdims))


def var(x, axis=None, keepdims=False):
    """Variance over ``axis`` (population: divided by the count, as Keras and NumPy)."""
    centred = subtract(x, mean(x, axis, keepdims=True))
    return mean(square(centred), axis, keepdims)


def std(x, axis=None, keepdims=False):
    """Standard deviation over ``axis`` (population)."""
    return sqrt(var(x, axis, keepdims))


def norm(x, ord=None, axis=None, keepdims=False):  # noqa: A002
    """Vector norm over ``axis`` (all elements when None): ``ord`` None or 2 (Euclidean), or 1.
    The Euclidean norm's gradient is x / norm (NaN at an all-zero slice, as sqrt's)."""
    if ord in (None, 2) and not isinstance(ord, bool):
        return sqrt(sum(square(x), axis, keepdims))
    if ord == 1 and not isinstance(ord, bool):
        return sum(abs(x), axis, keepdims)
    raise ValueError(f"norm: ord must be None, 2 or 1 (vector norms), got {ord!r}")


def logsumexp(x, axis=None, keepdims=False):
    """log(sum(exp(x))) over ``axis``, shifted by the maximum so it neither overflows nor
    underflows (an all -inf slice gives NaN)."""
    shift = stop_gradient(max(x, axis, keepdims=True))
    out = log(sum(exp(subtract(x, shift)), axis, keepdims=True))
    out = add(out, shift)
    return out if keepdims else reshape(out, _shape(max(shift, axis, keepdims=False)))


class _ArgReduce(Op):
    """argmax / argmin: the index of the first largest (smallest) element along ``axis``, a NaN
    counting as both (as NumPy and torch). Indices are integers (int64, as NumPy and torch), a
    tensor on the operand's device that the tape takes as a constant; they are found by NumPy
    on a host copy of the operand."""

    def __init__(self, name):
        self.name = name

    def run(self, x, axis=None, keepdims=False):
        be = backend_of(x)
        a = x.backend.to_numpy(x.value) if isinstance(x, _TensorLike) else np.asarray(x)
        if a.dtype.kind not in "biuf":
            raise TypeError(f"{self.name}: expected numbers, got dtype {a.dtype}")
        if axis is not None:
            axis = _axis(axis, a.ndim, self.name)
        if (a.shape[axis] if axis is not None else a.size) == 0:
            raise ValueError(f"{self.name}: the {'axis' if axis is not None else 'array'} to "
                             f"search is empty (shape {a.shape}, axis {axis})")
        idx = getattr(np, self.name)(a, axis=axis, keepdims=bool(keepdims))
        return _wrap(be, to_backend(be, np.asarray(idx, np.int64)), self, None, [None])

    def backward(self, ctx, g, need):
        return [None]


_ARGMAX, _ARGMIN = _ArgReduce("argmax"), _ArgReduce("argmin")


def argmax(x, axis=None, keepdims=False):
    """Indices (int64) of the maxima along ``axis`` (of the flattened array when None); the
    first one on ties; not differentiable."""
    return _ARGMAX.run(x, axis, keepdims)


def argmin(x, axis=None, keepdims=False):
    """Indices (int64) of the minima along ``axis``; the first one on ties."""
    return _ARGMIN.run(x, axis, keepdims)


# ---------------------------------------------------------------------------------------------
# shapes: reshape, transpose, slicing, concatenation

def _target_shape(shape, new, what):
    new = tuple(new) if isinstance(new, (tuple, list)) else (new,)
    size = int(math.prod(shape))
    if any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < -1 for d in new) \
            or list(new).count(-1) > 1:
        raise ValueError(f"{what}: bad target shape {new!r}")
    known = int(math.prod(d for d in new if d != -1))
    if -1 in new:
        if known == 0 or size % known:
            raise ValueError(f"{what}: cannot reshape an array of shape {shape} to {new}")
        new = tuple(size // known if d == -1 else int(d) for d in new)
    if int(math.prod(new)) != size:
        raise ValueError(f"{what}: cannot reshape an array of shape {shape} ({size} elements) "
                         f"to {tuple(new)}")
    return tuple(int(d) for d in new)


def _reshape_array(be, a, shape):
    shape = tuple(shape)
    return a.reshape(shape) if _shape(a) != shape else a


class _Reshape(Op):
    name = "reshape"

    def run(self, x, shape):
        be = backend_of(x)
        a = _value(be, x, x.dtype if isinstance(x, _TensorLike) else _float_dtype([x]),
                   "reshape")
        new = _target_shape(_shape(a), shape, "reshape")
        return _wrap(be, _reshape_array(be, a, new), self, (be, _shape(a)), [x])

    def backward(self, ctx, g, need):
        be, shape = ctx
        return [_reshape_array(be, g, shape)]


_RESHAPE = _Reshape()


def reshape(x, shape):
    """``x`` with a new shape (one entry may be -1); a view where the device allows."""
    return _RESHAPE.run(x, shape)


def _copy_strided(be, src, src_off, shape, src_strides, dst, dst_off, dst_strides,
                  accumulate=False):
    geo = _collapse(shape, src_strides, dst_strides)
    be.strided_copy(_flat(be, src), int(src_off), geo[0], geo[1], bool(accumulate),
                    _flat(be, dst), int(dst_off), geo[2])


def _permute(be, a, perm):
    shape = _shape(a)
    st = _contiguous_strides(shape)
    out_shape = tuple(shape[p] for p in perm)
    out = be.empty(out_shape, a.dtype)
    _copy_strided(be, a, 0, out_shape, tuple(st[p] for p in perm), out, 0,
                  _contiguous_strides(out_shape))
    return out


class _Transpose(Op):
    name = "transpose"

    def run(self, x, axes=None):
        be = backend_of(x)
        a = _value(be, x, x.dtype if isinstance(x, _TensorLike) else _float_dtype([x]),
                   "transpose")
        n = len(_shape(a))
        perm = tuple(range(n))[::-1] if axes is None else tuple(int(p) % n if
                                                                -n <= int(p) < n else -1
                                                                for p in axes)
        if sorted(perm) != list(range(n)):
            raise ValueError(f"transpose: axes {axes!r} is not a permutation of the "
                             f"{n} axes of shape {_shape(a)}")
        if perm == tuple(range(n)):
            return _wrap(be, a, _RESHAPE, (be, _shape(a)), [x])
        out, ctx = self.forward(be, a, perm)
        return _wrap(be, out, self, ctx, [x])

    def forward(self, be, a, perm):
        return _permute(be, a, perm), (be, tuple(int(i) for i in np.argsort(perm)))

    def backward(self, ctx, g, need):
        be, inverse = ctx
        return [_permute(be, g, inverse)]


_TRANSPOSE = _Transpose()


def transpose(x, axes=None):
    """Permute the axes (reversed when ``axes`` is None)."""
    return _TRANSPOSE.run(x, axes)


def _index_plan(shape, key):
    """Basic indexing (ints, slices, Ellipsis, None) -> (offset, result shape, result strides in
    elements of the contiguous source)."""
    key = key if isinstance(key, tuple) else (key,)
    for k in key:
        if not (k is None or k is Ellipsis or isinstance(k, slice) or
                (isinstance(k, (int, np.integer)) and not isinstance(k, bool))):
            raise TypeError(f"tensor indexing takes ints, slices, None and Ellipsis, got "
                            f"{type(k).__name__}; gather with nb.ops.take(x, indices, axis)")
    if builtins.sum(k is Ellipsis for k in key) > 1:
        raise IndexError("an index can only have a single ellipsis")
    used = builtins.sum(1 for k in key if k is not None and k is not Ellipsis)
    if used > len(shape):
        raise IndexError(f"too many indices for a tensor of shape {shape}")
    if Ellipsis in key:
        i = key.index(Ellipsis)
        key = key[:i] + (slice(None),) * (len(shape) - used) + key[i + 1:]
    else:
        key = key + (slice(None),) * (len(shape) - used)
    st = _contiguous_strides(shape)
    offset, out_shape, out_strides, dim = 0, [], [], 0
    for k in key:
        if k is None:
            out_shape.append(1)
            out_strides.append(0)
            continue
        size = shape[dim]
        if isinstance(k, slice):
            start, stop, step = k.indices(size)
            n = len(range(start, stop, step))
            offset += start * st[dim] if n else 0
            out_shape.append(n)
            out_strides.append(step * st[dim])
        else:
            i = int(k)
            if not -size <= i < size:
                raise IndexError(f"index {i} is out of bounds for axis {dim} with size {size}")
            offset += (i % size) * st[dim]
        dim += 1
    return offset, tuple(out_shape), tuple(out_strides)


class _GetItem(Op):
    name = "getitem"

    def run(self, x, key):
        be = backend_of(x)
        a = _value(be, x, x.dtype if isinstance(x, _TensorLike) else _float_dtype([x]),
                   "getitem")
        shape = _shape(a)
        offset, out_shape, strides = _index_plan(shape, key)
        out = be.empty(out_shape, a.dtype)
        if math.prod(out_shape):
            _copy_strided(be, a, offset, out_shape, strides, out, 0,
                          _contiguous_strides(out_shape))
        return _wrap(be, out, self, (be, shape, offset, out_shape, strides), [x])

    def backward(self, ctx, g, need):
        be, shape, offset, out_shape, strides = ctx
        gin = be.zeros(shape, g.dtype)
        if math.prod(out_shape):
            _copy_strided(be, g, 0, out_shape, _contiguous_strides(out_shape), gin, offset,
                          strides)
        return [gin]


_GETITEM = _GetItem()


def getitem(x, key):
    """``x[key]`` for basic indexing (ints, slices with steps, None, Ellipsis); the result is a
    copy."""
    return _GETITEM.run(x, key)


def _axis(axis, ndim, what):
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or \
            not -ndim <= axis < ndim:
        raise ValueError(f"{what}: axis {axis!r} out of range for {ndim} dimensions")
    return int(axis) % ndim


class _Concatenate(Op):
    name = "concatenate"

    def run(self, xs, axis=0):
        xs = list(xs)
        if not xs:
            raise ValueError("concatenate: needs at least one array")
        be = backend_of(*xs)
        dt = _float_dtype(xs)
        arrays = [_value(be, x, dt, "concatenate") for x in xs]
        out, ctx = self.forward(be, arrays, axis)
        return _wrap(be, out, self, ctx, xs)

    def forward(self, be, arrays, axis):
        """The arrays joined along ``axis`` -> (out, ctx)."""
        dt = np.dtype(arrays[0].dtype)
        shapes = [_shape(a) for a in arrays]
        nd = len(shapes[0])
        if nd == 0:
            raise ValueError("concatenate: zero-dimensional arrays cannot be concatenated")
        ax = _axis(axis, nd, "concatenate")
        for s in shapes[1:]:
            if len(s) != nd or any(d != e for i, (d, e) in enumerate(zip(s, shapes[0]))
                                   if i != ax):
                raise ValueError(f"concatenate: shapes {shapes} differ outside axis {axis}")
        out_shape = tuple(builtins.sum(s[ax] for s in shapes) if i == ax else d
                          for i, d in enumerate(shapes[0]))
        out = be.empty(out_shape, dt)
        ost = _contiguous_strides(out_shape)
        start = 0
        for a, s in zip(arrays, shapes):
            if math.prod(s):
                _copy_strided(be, a, 0, s, _contiguous_strides(s), out, start * ost[ax], ost)
            start += s[ax]
        return out, (be, shapes, ax, out_shape)

    def backward(self, ctx, g, need):
        be, shapes, ax, out_shape = ctx
        ost = _contiguous_strides(out_shape)
        grads, start = [], 0
        for s, n in zip(shapes, need):
            if n:
                gi = be.empty(s, g.dtype)
                if math.prod(s):
                    _copy_strided(be, g, start * ost[ax], s, ost, gi, 0, _contiguous_strides(s))
                grads.append(gi)
            else:
                grads.append(None)
            start += s[ax]
        return grads


_CONCATENATE = _Concatenate()


def concatenate(xs, axis=0):
    """Join arrays along an existing axis."""
    return _CONCATENATE.run(xs, axis)


def expand_dims(x, axis):
    """Insert a size-1 axis at ``axis``."""
    shape = x.shape if isinstance(x, _TensorLike) else np.shape(x)
    nd = len(shape) + 1
    ax = _axis(axis, nd, "expand_dims")
    return reshape(x, tuple(shape[:ax]) + (1,) + tuple(shape[ax:]))


def squeeze(x, axis=None):
    """Remove size-1 axes (all, or ``axis``)."""
    shape = tuple(x.shape if isinstance(x, _TensorLike) else np.shape(x))
    if axis is None:
        new = tuple(d for d in shape if d != 1)
    else:
        axes = _axes(axis, len(shape), "squeeze")
        bad = [a for a in axes if shape[a] != 1]
        if bad:
            raise ValueError(f"squeeze: axis {bad[0]} of shape {shape} is not of size 1")
        new = tuple(d for i, d in enumerate(shape) if i not in axes)
    return reshape(x, new)


def stack(xs, axis=0):
    """Join arrays of one shape along a new axis."""
    xs = list(xs)
    if not xs:
        raise ValueError("stack: needs at least one array")
    shapes = {tuple(x.shape if isinstance(x, _TensorLike) else np.shape(x)) for x in xs}
    if len(shapes) != 1:
        raise ValueError(f"stack: arrays must have one shape, got {sorted(shapes)}")
    nd = len(next(iter(shapes))) + 1
    ax = _axis(axis, nd, "stack")
    return concatenate([expand_dims(x, ax) for x in xs], axis=ax)


class _BroadcastTo(Op):
    name = "broadcast_to"

    def run(self, x, shape):
        be = backend_of(x)
        a = _value(be, x, _float_dtype([x]), "broadcast_to")
        shape = tuple(int(d) for d in shape)
        src = _shape(a)
        if broadcast_shapes("broadcast_to", src, shape) != shape:
            raise ValueError(f"broadcast_to: cannot broadcast shape {src} to {shape}")
        out = be.empty(shape, a.dtype)
        _copy_strided(be, a, 0, shape, _bstrides(src, shape), out, 0, _contiguous_strides(shape))
        return _wrap(be, out, self, (be, src), [x])

    def backward(self, ctx, g, need):
        be, src = ctx
        return [reduce_to(be, g, src)]


_BROADCAST = _BroadcastTo()


def broadcast_to(x, shape):
    return _BROADCAST.run(x, shape)


# ---------------------------------------------------------------------------------------------
# matmul

def _mm_operand(shape, which):
    """(batch shape, rows, cols, squeeze flag) of a matmul operand (1-D operands promoted)."""
    if len(shape) == 0:
        raise ValueError("matmul: operands must have at least one dimension")
    if len(shape) == 1:
        return (), (1, shape[0]) if which == "a" else (shape[0], 1), True
    return tuple(shape[:-2]), tuple(shape[-2:]), False


class _MatMul(Op):
    name = "matmul"

    def run(self, x, y):
        be = backend_of(x, y)
        dt = _float_dtype([x, y])
        a, b = _value(be, x, dt, "matmul"), _value(be, y, dt, "matmul")
        sa, sb = _shape(a), _shape(b)
        ba, (m, ka), sqa = _mm_operand(sa, "a")
        bb, (kb, n), sqb = _mm_operand(sb, "b")
        if ka != kb:
            raise ValueError(f"matmul: shapes {sa} and {sb} are not aligned ({ka} != {kb})")
        batch = broadcast_shapes("matmul", ba, bb)
        plan = (ba, bb, batch, m, n, ka)
        out = be.empty(batch + (m, n), dt)
        _mm(be, a, b, ba, bb, batch, m, n, ka, False, False, out)
        shape = batch + ((m,) if not sqa else ()) + ((n,) if not sqb else ())
        out = _reshape_array(be, out, shape)
        return _wrap(be, out, self, (be, a, b, plan), [x, y])

    def backward(self, ctx, g, need):
        be, a, b, (ba, bb, batch, m, n, k) = ctx
        g = _reshape_array(be, g, batch + (m, n))
        ga = gb = None
        if need[0]:      # dA = g @ B^T, per output batch, then summed over A's broadcast
            full = be.empty(batch + (m, k), g.dtype)
            _mm(be, g, b, batch, bb, batch, m, k, n, False, True, full)
            ga = _reshape_array(be, reduce_to(be, full, ba + (m, k)), _shape(a))
        if need[1]:      # dB = A^T @ g
            if not bb and ba and _shape(a)[-2:] == (m, k):     # fold A's batch into the sum
                rows = int(math.prod(batch)) * m
                full = be.empty((k, n), g.dtype)
                _mm(be, _reshape_array(be, a, (rows, k)), _reshape_array(be, g, (rows, n)),
                    (), (), (), k, n, rows, True, False, full)
                gb = full
            else:
                full = be.empty(batch + (k, n), g.dtype)
                _mm(be, a, g, ba, batch, batch, k, n, m, True, False, full)
                gb = reduce_to(be, full, bb + (k, n))
            gb = _reshape_array(be, gb, _shape(b))
        return [ga, gb]


def _mm(be, a, b, ba, bb, batch, m, n, k, ta, tb, out, accumulate=False):
    """out (batch, m, n) = op(a) @ op(b) through matmul_forward; ``a`` holds matrices of ``ba``
    batches (broadcast to ``batch``), stored (k, m) when ``ta`` else (m, k); likewise b.
    Empty operands call no kernel: an empty ``out`` has nothing to write, and a sum over k = 0
    terms is zero."""
    if m * n * math.prod(batch) == 0:
        return
    if k == 0:
        if not accumulate:
            be.fill_(out, 0.0)
        return
    lda = m if ta else k
    ldb = k if tb else n
    a_mat, b_mat = m * k, k * n
    astr = _bstrides(ba + (1,), batch + (1,))[:-1] if batch else ()
    bstr = _bstrides(bb + (1,), batch + (1,))[:-1] if batch else ()
    astr = tuple(s * a_mat for s in astr)
    bstr = tuple(s * b_mat for s in bstr)
    shape, sa, sb = _collapse(batch, astr, bstr) if batch else (_pad((), 1), _pad((), 0),
                                                                  _pad((), 0))
    be.matmul_forward(_flat(be, a), _flat(be, b), shape, sa, sb, m, n, k, lda, ldb, bool(ta),
                      bool(tb), bool(accumulate), _flat(be, out))


_MATMUL = _MatMul()


def matmul(x, y):
    """Matrix product with NumPy's rules: batched over leading axes (broadcasting), 1-D operands
    promoted and squeezed."""
    return _MATMUL.run(x, y)


# ---------------------------------------------------------------------------------------------
# take

class _Take(Op):
    name = "take"

    def run(self, x, indices, axis=None):
        be = backend_of(x)
        a = _value(be, x, x.dtype if isinstance(x, _TensorLike) else _float_dtype([x]), "take")
        if axis is None:
            a = _reshape_array(be, a, (int(math.prod(_shape(a))),))
            axis = 0
        shape = _shape(a)
        ax = _axis(axis, len(shape), "take")
        n = shape[ax]
        idx_host = indices.numpy() if isinstance(indices, _TensorLike) else np.asarray(indices)
        if idx_host.dtype.kind not in "iu" and not (idx_host.dtype.kind == "f" and idx_host.size
                                                    and np.all(idx_host == np.round(idx_host))):
            if idx_host.size:
                raise TypeError(f"take: indices must be integers, got dtype {idx_host.dtype}")
        idx = idx_host.astype(np.int64).reshape(-1)
        bad = np.flatnonzero((idx < -n) | (idx >= n))
        if bad.size:
            raise IndexError(f"take: index {idx[bad[0]]} is out of bounds for axis {ax} with "
                             f"size {n}")
        idx = np.where(idx < 0, idx + n, idx)
        outer, inner = int(math.prod(shape[:ax])), int(math.prod(shape[ax + 1:]))
        out_shape = shape[:ax] + tuple(idx_host.shape) + shape[ax + 1:]
        out = be.empty(out_shape, a.dtype)
        d_idx = be.asarray(idx)
        be.take_forward(_flat(be, a), d_idx, outer, n, inner, _flat(be, out))
        return _wrap(be, out, self, (be, _shape(x.value if isinstance(x, _TensorLike) else a),
                                     shape, d_idx, outer, n, inner), [x])

    def backward(self, ctx, g, need):
        be, orig, shape, d_idx, outer, n, inner = ctx
        gin = be.empty(shape, g.dtype)
        be.take_backward(_flat(be, g), d_idx, outer, n, inner, False, _flat(be, gin))
        return [_reshape_array(be, gin, orig)]


_TAKE = _Take()


def take(x, indices, axis=None):
    """Elements of ``x`` at integer ``indices`` along ``axis`` (the flattened array when None),
    as ``np.take``; negative indices count from the end; an index out of range is an error.
    Repeated indices add their gradients."""
    return _TAKE.run(x, indices, axis)


# ---------------------------------------------------------------------------------------------
# softmax and log_softmax

class _RowOp(Op):
    """Row-wise over the last axis: softmax (the activation kernels) and log_softmax."""

    def __init__(self, name, kernel):
        self.name, self.kernel = name, kernel

    def run(self, x):
        be = backend_of(x)
        a = _value(be, x, _float_dtype([x]), self.name)
        shape = _shape(a)
        if not shape:
            raise ValueError(f"{self.name}: needs at least one dimension")
        cols = shape[-1]
        rows = int(math.prod(shape)) // builtins.max(cols, 1)
        out = be.empty(shape, a.dtype)
        v = lambda arr: be.kernel_view(arr, (rows, cols))          # noqa: E731
        if self.kernel == "softmax":
            be.softmax_forward(v(a), 0.0, v(out))
        else:
            be.log_softmax_forward(v(a), v(out))
        return _wrap(be, out, self, (be, a, out, rows, cols), [x])

    def backward(self, ctx, g, need):
        be, a, out, rows, cols = ctx
        gin = be.empty(_shape(a), a.dtype)
        v = lambda arr: be.kernel_view(arr, (rows, cols))          # noqa: E731
        if self.kernel == "softmax":
            be.softmax_backward(v(a), v(out), v(g), 0.0, v(gin))
        else:
            be.log_softmax_backward(v(out), v(g), v(gin))
        return [gin]


_SOFTMAX, _LOG_SOFTMAX = _RowOp("softmax", "softmax"), _RowOp("log_softmax", "log_softmax")


def _along(op, x, axis):
    nd = len(x.shape if isinstance(x, _TensorLike) else np.shape(x))
    ax = _axis(axis, nd, op.name)
    if ax == nd - 1:
        return op.run(x)
    perm = list(range(nd))
    perm[ax], perm[-1] = perm[-1], perm[ax]
    return transpose(op.run(transpose(x, perm)), perm)


def softmax(x, axis=-1):
    """exp(x) / sum(exp(x)) along ``axis`` (stable)."""
    return _along(_SOFTMAX, x, axis)


def log_softmax(x, axis=-1):
    """x - logsumexp(x) along ``axis`` (stable)."""
    return _along(_LOG_SOFTMAX, x, axis)


# ---------------------------------------------------------------------------------------------
# constants

def stop_gradient(x):
    """``x`` as a constant: no gradient flows through it."""
    t = convert_to_tensor(x)
    return Tensor(t.value, t.backend)


def shape(x):
    """The shape of ``x`` as a tuple of ints (Keras' ``ops.shape``, the same as ``x.shape``);
    on a graph tensor the sizes known only at run time (the batch...) are None."""
    return tuple(x.shape) if hasattr(x, "shape") else np.shape(x)


def _constant(array, dtype, device, what):
    dtype = np.dtype("float32" if dtype is None else dtype)
    if dtype.kind not in "iuf":
        raise ValueError(f"{what}: dtype must be a float or integer dtype, got {dtype}")
    return convert_to_tensor(array.astype(dtype, copy=False), dtype=dtype, device=device)


def zeros(shape, dtype="float32", device=None):
    """A new tensor of zeros (a constant: no gradient)."""
    return _constant(np.zeros(_shape_arg(shape, "zeros")), dtype, device, "zeros")


def ones(shape, dtype="float32", device=None):
    """A new tensor of ones (a constant)."""
    return _constant(np.ones(_shape_arg(shape, "ones")), dtype, device, "ones")


def arange(start, stop=None, step=1, dtype=None, device=None):
    """Evenly spaced values in [start, stop) (``arange(n)``: 0..n-1), int64 for integer
    arguments as NumPy, else float32 unless ``dtype`` says otherwise."""
    bounds = (("start", start), ("stop", stop), ("step", step))
    for name, v in bounds:
        if not (v is None and name == "stop") and (not _is_number(v) or not math.isfinite(v)):
            raise ValueError(f"arange: {name} must be a finite number, got {v!r}")
    if step == 0:
        raise ValueError("arange: step must not be 0, got 0")
    values = np.arange(start, stop, step) if stop is not None else np.arange(start, step=step)
    if dtype is None:
        dtype = np.int64 if values.dtype.kind in "iu" else np.float32
    return _constant(values, dtype, device, "arange")


def one_hot(x, num_classes, dtype="float32"):
    """Integer labels -> one-hot rows along a new last axis (a constant, on ``x``'s device);
    labels out of [0, num_classes) raise (``numbanet.data.one_hot``'s checks)."""
    from .data import one_hot as host_one_hot
    device = x.device if isinstance(x, _TensorLike) else None
    labels = x.numpy() if isinstance(x, _TensorLike) else np.asarray(x)
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise ValueError(f"one_hot: num_classes must be a positive integer, got {num_classes!r}")
    return _constant(host_one_hot(labels, int(num_classes)), dtype, device, "one_hot")


def _shape_arg(shape, what):
    shape = (shape,) if isinstance(shape, (int, np.integer)) else shape
    try:
        shape = tuple(shape)
    except TypeError:
        raise ValueError(f"{what}: shape must be an int or a tuple of ints, got "
                         f"{shape!r}") from None
    if not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0
               for d in shape):
        raise ValueError(f"{what}: shape must be non-negative ints, got {shape!r}")
    return shape


def zeros_like(x, dtype=None):
    t = convert_to_tensor(x)
    return Tensor(t.backend.zeros(t.shape, dtype or t.dtype), t.backend)


def ones_like(x, dtype=None):
    t = convert_to_tensor(x)
    return Tensor(t.backend.full(t.shape, 1.0, dtype or t.dtype), t.backend)


def cast(x, dtype):
    """``x`` converted to float ``dtype`` (float32 or float64); differentiable."""
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"cast: dtype must be float32 or float64, got {dtype}")
    if isinstance(x, _TensorLike) and x.dtype == dtype:
        return x if isinstance(x, Tensor) else _AFFINE.run(x, 1.0, 0.0)
    return _CAST.run(x, dtype)


class _Cast(Op):
    name = "cast"

    def run(self, x, dtype):
        be = backend_of(x)
        src = x.dtype if isinstance(x, _TensorLike) else np.asarray(x).dtype
        a = _value(be, x, dtype, "cast")
        return _wrap(be, a, self, (be, np.dtype(src)), [x])

    def backward(self, ctx, g, need):
        be, src = ctx
        if src.kind != "f":
            return [None]
        return [to_backend(be, be.to_numpy(g), src)]


_CAST = _Cast()


# ---------------------------------------------------------------------------------------------
# ops on symbolic tensors (functional graphs) become graph nodes

def _has_symbolic(values):
    from .functional import SymbolicTensor
    for v in values:
        if isinstance(v, SymbolicTensor):
            return True
        if isinstance(v, (list, tuple)) and _has_symbolic(v):
            return True
    return False


def _graph_aware(fn):
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if _has_symbolic(args) or _has_symbolic(kwargs.values()):
            from .functional import op_node
            return op_node(fn.__name__, args, kwargs)
        return fn(*args, **kwargs)
    return wrapper


for _name in __all__:
    if _name not in ("convert_to_tensor", "shape"):
        globals()[_name] = _graph_aware(globals()[_name])
del _name
