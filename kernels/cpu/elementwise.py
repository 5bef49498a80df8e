"""Elementwise kernels on flat 1-D arrays (outputs may alias inputs): dropout, sum of squares,
scaling. Memory-bound loops: serial below ``_PAR_MIN``, ``prange`` above (2 threads here gain
~1.5-1.9x at 1e6 elements, nothing below ~1e5)."""
import numpy as np
from numba import njit, prange

from ._threads import split_kernel

_PAR_MIN = 1 << 18
_FM = {"reassoc", "contract"}


@njit(inline="always")
def _dropout_one(x, u, keep_scale, rate, out, mask, i):
    xi = x[i]
    mask[i] = keep_scale if u[i] >= rate else 0.0
    out[i] = xi * mask[i]


@split_kernel(0, _PAR_MIN, error_model="numpy")
def dropout_forward(x, u, rate, out, mask):
    """mask = (u >= rate) / (1 - rate) (0 everywhere when rate >= 1); out = x * mask."""
    n = x.size
    keep_scale = 1.0 / (1.0 - rate) if rate < 1.0 else 0.0
    for i in prange(n):
        _dropout_one(x, u, keep_scale, rate, out, mask, i)


@split_kernel(0, _PAR_MIN, error_model="numpy")
def dropout_backward(grad_out, mask, grad_in):
    """grad_in = grad_out * mask."""
    n = grad_out.size
    for i in prange(n):
        grad_in[i] = grad_out[i] * mask[i]


@split_kernel(0, _PAR_MIN, fastmath=_FM, error_model="numpy")
def sum_squares(x, out):
    """out[0] = sum(x * x), accumulated in float64 (gradient norms, clipping)."""
    n = x.size
    total = 0.0
    for i in prange(n):
        v = np.float64(x[i])
        total += v * v
    out[0] = total


@split_kernel(0, _PAR_MIN, error_model="numpy")
def scale(x, factor, out):
    """out = x * factor."""
    n = x.size
    for i in prange(n):
        out[i] = x[i] * factor
