"""Activation kernels: flat 1-D arrays (softmax: 2-D, row-wise); outputs may alias inputs.

``NAME_forward(x, alpha, out)`` and ``NAME_backward(x, y, grad_out, alpha, grad_in)`` with
``x``/``y`` the forward input/output; ``alpha`` is the leaky_relu slope / elu alpha and ignored by
the others. The scalar maths lives in ``kernels/scalar.py`` (shared with the CUDA kernels); the
elementwise kernels are made from it by ``_elementwise``, one pair per name of
``scalar.ACTIVATION_CODES``.

Each kernel is one ``prange`` loop compiled twice, serially for small arrays and in parallel (2
threads here) for large ones, each copy at its first call (see ``_threads.split_parallel``); the
threshold is set from measurements (see ``_PAR_MIN``). ``error_model="numpy"``: IEEE division
(no per-division zero check, 10-40% faster loops; nothing here divides by zero anyway).

Note: ``cache=True`` does not notice edits to ``scalar.py`` (Numba only checks this file's own
timestamp): delete ``kernels/cpu/__pycache__`` after changing it.
"""
import math

from numba import njit, prange
from numba.extending import register_jitable

from .. import scalar
from ._threads import split_parallel

# Sizes at or above which the prange path runs (measured on the shared 2-core machine, best of
# many runs, serial vs 2 threads): kernels calling exp/erf/tanh gain 1.4x at 1e4 elements and
# 1.7-2.5x at 1e6; the memory-bound ones (linear, relu, leaky_relu) lose below ~1e5 (thread
# start-up ~3 us) and gain 1.6-1.9x at 1e6.
_PAR_MIN = 1 << 14          # transcendental kernels
_PAR_MIN_CHEAP = 1 << 18    # linear, relu, leaky_relu

_CHEAP = ("linear", "relu", "leaky_relu")


def _elementwise(name):
    """(NAME_forward, NAME_backward) of activation ``name``: its scalar functions from
    ``kernels/scalar.py`` applied elementwise, serially below the _PAR_MIN threshold and with
    ``prange`` above (_threads.split_parallel). The scalar functions are made callable from
    compiled code with ``register_jitable``, not wrapped as dispatchers: the kernels are
    closures, numba keys their
    on-disk cache by the pickled closure cells, and a plain function pickles to the same bytes in
    every process, a dispatcher does not (a per-process id), so a warm start would never hit."""
    scalar_f = getattr(scalar, name)
    f = register_jitable(scalar_f)
    f_grad = register_jitable(getattr(scalar, name + "_grad"))
    par_min = _PAR_MIN_CHEAP if name in _CHEAP else _PAR_MIN

    def forward(x, alpha, out):
        for i in prange(x.size):
            out[i] = f(x[i], alpha)

    def backward(x, y, grad_out, alpha, grad_in):
        for i in prange(x.size):
            grad_in[i] = grad_out[i] * f_grad(x[i], y[i], alpha)

    doc = (scalar_f.__doc__ or "").strip().splitlines()
    forward.__doc__ = f"out = {name}(x) elementwise" + (f": {doc[0]}" if doc else ".")
    backward.__doc__ = f"grad_in = grad_out * {name}'(x) elementwise."
    return (split_parallel(forward, name + "_forward", 0, par_min, error_model="numpy"),
            split_parallel(backward, name + "_backward", 0, par_min, error_model="numpy"))


for _name in scalar.ACTIVATION_CODES:
    globals()[_name + "_forward"], globals()[_name + "_backward"] = _elementwise(_name)


def _fused_forward_kernel(activation, pre, out):
    """The NAME_forward kernel of activation code ``activation`` (scalar.ACTIVATION_CODES), the
    second half of the CPU fused forwards; bad arguments raise ValueError
    (``scalar.fused_activation``)."""
    return globals()[scalar.fused_activation(activation, pre, out) + "_forward"]


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


def _softmax_forward(x, alpha, out):
    """Row-wise softmax of x (rows, cols), stable (row max subtracted)."""
    for r in prange(x.shape[0]):
        _softmax_row(x, out, r)


def _softmax_backward(x, y, grad_out, alpha, grad_in):
    """grad_in = y * (grad_out - sum_row(grad_out * y)), row-wise."""
    for r in prange(y.shape[0]):
        _softmax_backward_row(y, grad_out, grad_in, r)


softmax_forward = split_parallel(_softmax_forward, "softmax_forward", 0, _PAR_MIN,
                                 error_model="numpy")
softmax_backward = split_parallel(_softmax_backward, "softmax_backward", 1, _PAR_MIN_CHEAP,
                                  error_model="numpy")
