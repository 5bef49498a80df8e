"""Activation kernels: flat 1-D arrays (softmax: 2-D, row-wise); outputs may alias inputs.

``NAME_forward(x, alpha, out)`` and ``NAME_backward(x, y, grad_out, alpha, grad_in)`` with
``x``/``y`` the forward input/output; ``alpha`` is the leaky_relu slope / elu alpha and ignored by
the others. The scalar maths lives in ``kernels/scalar.py`` (shared with the CUDA kernels).

Each kernel has a serial loop for small arrays and a ``prange`` loop (2 threads here) for large
ones; the threshold is set from measurements (see ``_PAR_MIN``). ``error_model="numpy"``: IEEE
division (no per-division zero check, 10-40% faster loops; nothing here divides by zero anyway).

Note: ``cache=True`` does not notice edits to ``scalar.py`` (Numba only checks this file's own
timestamp): delete ``kernels/cpu/__pycache__`` after changing it.
"""
import math

from numba import njit, prange

from .. import scalar

# Sizes at or above which the prange path runs (measured on the shared 2-core machine, best of
# many runs, serial vs 2 threads): kernels calling exp/erf/tanh gain 1.4x at 1e4 elements and
# 1.7-2.5x at 1e6; the memory-bound ones (linear, relu, leaky_relu) lose below ~1e5 (thread
# start-up ~3 us) and gain 1.6-1.9x at 1e6.
_PAR_MIN = 1 << 14          # transcendental kernels
_PAR_MIN_CHEAP = 1 << 18    # linear, relu, leaky_relu

_linear = njit(inline="always")(scalar.linear)
_linear_grad = njit(inline="always")(scalar.linear_grad)
_relu = njit(inline="always")(scalar.relu)
_relu_grad = njit(inline="always")(scalar.relu_grad)
_leaky_relu = njit(inline="always")(scalar.leaky_relu)
_leaky_relu_grad = njit(inline="always")(scalar.leaky_relu_grad)
_elu = njit(inline="always")(scalar.elu)
_elu_grad = njit(inline="always")(scalar.elu_grad)
_gelu = njit(inline="always")(scalar.gelu)
_gelu_grad = njit(inline="always")(scalar.gelu_grad)
_gelu_tanh = njit(inline="always")(scalar.gelu_tanh)
_gelu_tanh_grad = njit(inline="always")(scalar.gelu_tanh_grad)
_sigmoid = njit(inline="always")(scalar.sigmoid)
_sigmoid_grad = njit(inline="always")(scalar.sigmoid_grad)
_tanh = njit(inline="always")(scalar.tanh)
_tanh_grad = njit(inline="always")(scalar.tanh_grad)
_softplus = njit(inline="always")(scalar.softplus)
_softplus_grad = njit(inline="always")(scalar.softplus_grad)


def _fused_forward_kernel(activation, pre, out):
    """The NAME_forward kernel of activation code ``activation`` (scalar.ACTIVATION_CODES), the
    second half of the CPU fused forwards; bad arguments raise ValueError
    (``scalar.fused_activation``)."""
    return globals()[scalar.fused_activation(activation, pre, out) + "_forward"]


# ------------------------------------------------------------------------------------- linear
@njit(cache=True, parallel=True, error_model="numpy")
def linear_forward(x, alpha, out):
    """out = x."""
    n = x.size
    if n < _PAR_MIN_CHEAP:
        for i in range(n):
            out[i] = _linear(x[i])
    else:
        for i in prange(n):
            out[i] = _linear(x[i])


@njit(cache=True, parallel=True, error_model="numpy")
def linear_backward(x, y, grad_out, alpha, grad_in):
    """grad_in = grad_out."""
    n = x.size
    if n < _PAR_MIN_CHEAP:
        for i in range(n):
            grad_in[i] = grad_out[i] * _linear_grad(x[i], y[i])
    else:
        for i in prange(n):
            grad_in[i] = grad_out[i] * _linear_grad(x[i], y[i])


# ------------------------------------------------------------------------------------- relu
@njit(cache=True, parallel=True, error_model="numpy")
def relu_forward(x, alpha, out):
    """out = max(x, 0)."""
    n = x.size
    if n < _PAR_MIN_CHEAP:
        for i in range(n):
            out[i] = _relu(x[i])
    else:
        for i in prange(n):
            out[i] = _relu(x[i])


@njit(cache=True, parallel=True, error_model="numpy")
def relu_backward(x, y, grad_out, alpha, grad_in):
    """grad_in = grad_out where x > 0, else 0."""
    n = x.size
    if n < _PAR_MIN_CHEAP:
        for i in range(n):
            grad_in[i] = grad_out[i] * _relu_grad(x[i], y[i])
    else:
        for i in prange(n):
            grad_in[i] = grad_out[i] * _relu_grad(x[i], y[i])


# ------------------------------------------------------------------------------------- leaky_relu
@njit(cache=True, parallel=True, error_model="numpy")
def leaky_relu_forward(x, alpha, out):
    """out = x for x >= 0, alpha * x below."""
    n = x.size
    if n < _PAR_MIN_CHEAP:
        for i in range(n):
            out[i] = _leaky_relu(x[i], alpha)
    else:
        for i in prange(n):
            out[i] = _leaky_relu(x[i], alpha)


@njit(cache=True, parallel=True, error_model="numpy")
def leaky_relu_backward(x, y, grad_out, alpha, grad_in):
    """grad_in = grad_out for x > 0, alpha * grad_out otherwise."""
    n = x.size
    if n < _PAR_MIN_CHEAP:
        for i in range(n):
            grad_in[i] = grad_out[i] * _leaky_relu_grad(x[i], y[i], alpha)
    else:
        for i in prange(n):
            grad_in[i] = grad_out[i] * _leaky_relu_grad(x[i], y[i], alpha)


# ------------------------------------------------------------------------------------- elu
@njit(cache=True, parallel=True, error_model="numpy")
def elu_forward(x, alpha, out):
    """out = x for x >= 0, alpha * expm1(x) below."""
    n = x.size
    if n < _PAR_MIN:
        for i in range(n):
            out[i] = _elu(x[i], alpha)
    else:
        for i in prange(n):
            out[i] = _elu(x[i], alpha)


@njit(cache=True, parallel=True, error_model="numpy")
def elu_backward(x, y, grad_out, alpha, grad_in):
    """grad_in = grad_out for x > 0, grad_out * alpha * exp(x) otherwise."""
    n = x.size
    if n < _PAR_MIN:
        for i in range(n):
            grad_in[i] = grad_out[i] * _elu_grad(x[i], y[i], alpha)
    else:
        for i in prange(n):
            grad_in[i] = grad_out[i] * _elu_grad(x[i], y[i], alpha)


# ------------------------------------------------------------------------------------- gelu
@njit(cache=True, parallel=True, error_model="numpy")
def gelu_forward(x, alpha, out):
    """Exact GELU: out = x * Phi(x) (normal CDF through erfc)."""
    n = x.size
    if n < _PAR_MIN:
        for i in range(n):
            out[i] = _gelu(x[i])
    else:
        for i in prange(n):
            out[i] = _gelu(x[i])


@njit(cache=True, parallel=True, error_model="numpy")
def gelu_backward(x, y, grad_out, alpha, grad_in):
    """grad_in = grad_out * (Phi(x) + x phi(x))."""
    n = x.size
    if n < _PAR_MIN:
        for i in range(n):
            grad_in[i] = grad_out[i] * _gelu_grad(x[i], y[i])
    else:
        for i in prange(n):
            grad_in[i] = grad_out[i] * _gelu_grad(x[i], y[i])


# ------------------------------------------------------------------------------------- gelu_tanh
@njit(cache=True, parallel=True, error_model="numpy")
def gelu_tanh_forward(x, alpha, out):
    """tanh-approximate GELU: out = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    n = x.size
    if n < _PAR_MIN:
        for i in range(n):
            out[i] = _gelu_tanh(x[i])
    else:
        for i in prange(n):
            out[i] = _gelu_tanh(x[i])


@njit(cache=True, parallel=True, error_model="numpy")
def gelu_tanh_backward(x, y, grad_out, alpha, grad_in):
    """grad_in = grad_out * d gelu_tanh / dx."""
    n = x.size
    if n < _PAR_MIN:
        for i in range(n):
            grad_in[i] = grad_out[i] * _gelu_tanh_grad(x[i], y[i])
    else:
        for i in prange(n):
            grad_in[i] = grad_out[i] * _gelu_tanh_grad(x[i], y[i])


# ------------------------------------------------------------------------------------- sigmoid
@njit(cache=True, parallel=True, error_model="numpy")
def sigmoid_forward(x, alpha, out):
    """out = 1 / (1 + exp(-x)), stable for large |x|."""
    n = x.size
    if n < _PAR_MIN:
        for i in range(n):
            out[i] = _sigmoid(x[i])
    else:
        for i in prange(n):
            out[i] = _sigmoid(x[i])


@njit(cache=True, parallel=True, error_model="numpy")
def sigmoid_backward(x, y, grad_out, alpha, grad_in):
    """grad_in = grad_out * sigmoid(x) (1 - sigmoid(x)), computed from x without cancellation."""
    n = x.size
    if n < _PAR_MIN:
        for i in range(n):
            grad_in[i] = grad_out[i] * _sigmoid_grad(x[i], y[i])
    else:
        for i in prange(n):
            grad_in[i] = grad_out[i] * _sigmoid_grad(x[i], y[i])


# ------------------------------------------------------------------------------------- tanh
@njit(cache=True, parallel=True, error_model="numpy")
def tanh_forward(x, alpha, out):
    """out = tanh(x)."""
    n = x.size
    if n < _PAR_MIN:
        for i in range(n):
            out[i] = _tanh(x[i])
    else:
        for i in prange(n):
            out[i] = _tanh(x[i])


@njit(cache=True, parallel=True, error_model="numpy")
def tanh_backward(x, y, grad_out, alpha, grad_in):
    """grad_in = grad_out * (1 - tanh(x)^2), computed from x without cancellation."""
    n = x.size
    if n < _PAR_MIN:
        for i in range(n):
            grad_in[i] = grad_out[i] * _tanh_grad(x[i], y[i])
    else:
        for i in prange(n):
            grad_in[i] = grad_out[i] * _tanh_grad(x[i], y[i])


# ------------------------------------------------------------------------------------- softplus
@njit(cache=True, parallel=True, error_model="numpy")
def softplus_forward(x, alpha, out):
    """out = log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|))."""
    n = x.size
    if n < _PAR_MIN:
        for i in range(n):
            out[i] = _softplus(x[i])
    else:
        for i in prange(n):
            out[i] = _softplus(x[i])


@njit(cache=True, parallel=True, error_model="numpy")
def softplus_backward(x, y, grad_out, alpha, grad_in):
    """grad_in = grad_out * sigmoid(x)."""
    n = x.size
    if n < _PAR_MIN:
        for i in range(n):
            grad_in[i] = grad_out[i] * _softplus_grad(x[i], y[i])
    else:
        for i in prange(n):
            grad_in[i] = grad_out[i] * _softplus_grad(x[i], y[i])


# ------------------------------------------------------------------------------------- softmax
@njit(inline="always")
def _softmax_row(x, out, r):
    """out[r] = softmax(x[r]): subtract the row max, exponentiate, normalise (float64 sum)."""
    cols = x.shape[1]
    if cols == 0:
        return
    m = x[r, 0]
    for j in range(1, cols):
        if x[r, j] > m:
            m = x[r, j]
    s = 0.0
    for j in range(cols):
        e = math.exp(x[r, j] - m)
        out[r, j] = e
        s += e
    inv = 1.0 / s
    for j in range(cols):
        out[r, j] = out[r, j] * inv


@njit(inline="always")
def _softmax_backward_row(y, grad_out, grad_in, r):
    """grad_in[r] = y (g - <g, y>) for the row r."""
    cols = y.shape[1]
    dot = 0.0
    for j in range(cols):
        dot += grad_out[r, j] * y[r, j]
    for j in range(cols):
        grad_in[r, j] = y[r, j] * (grad_out[r, j] - dot)


@njit(cache=True, parallel=True, error_model="numpy")
def softmax_forward(x, alpha, out):
    """Row-wise softmax of x (rows, cols), stable (row max subtracted)."""
    rows = x.shape[0]
    if x.size < _PAR_MIN:
        for r in range(rows):
            _softmax_row(x, out, r)
    else:
        for r in prange(rows):
            _softmax_row(x, out, r)


@njit(cache=True, parallel=True, error_model="numpy")
def softmax_backward(x, y, grad_out, alpha, grad_in):
    """grad_in = y * (grad_out - sum_row(grad_out * y)), row-wise."""
    rows = y.shape[0]
    if y.size < _PAR_MIN_CHEAP:
        for r in range(rows):
            _softmax_backward_row(y, grad_out, grad_in, r)
    else:
        for r in prange(rows):
            _softmax_backward_row(y, grad_out, grad_in, r)
