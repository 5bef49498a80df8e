"""Weight regularization kernels on flat 1-D arrays: the elastic-net penalty and its gradient.

Keras semantics: penalty = l1 * sum|w| + l2 * sum(w^2) (no factor 1/2 on the L2 term), so its
gradient is l1 * sign(w) + 2 * l2 * w. Memory-bound loops: serial below ``_PAR_MIN``, ``prange``
above.
"""
import numpy as np
from numba import njit, prange

from ._threads import split_kernel

_PAR_MIN = 1 << 18
_FM = {"reassoc", "contract"}


@njit(inline="always")
def _sign(v):
    """-1, 0 or +1 (NaN stays NaN, as np.sign)."""
    if v > 0:
        return 1.0
    if v < 0:
        return -1.0
    return v * 0.0


@split_kernel(0, _PAR_MIN, fastmath=_FM, error_model="numpy")
def l1l2_penalty(w, l1, l2, out):
    """out[0] = l1 * sum|w| + l2 * sum(w * w), both sums accumulated in float64."""
    n = w.size
    s1 = 0.0
    s2 = 0.0
    for i in prange(n):
        v = np.float64(w[i])
        s1 += abs(v)
        s2 += v * v
    out[0] = l1 * s1 + l2 * s2


@njit(inline="always")
def _penalty_grad_one(w, l1, two_l2, grad, i):
    v = np.float64(w[i])
    grad[i] += l1 * _sign(v) + two_l2 * v


@split_kernel(0, _PAR_MIN, error_model="numpy")
def l1l2_penalty_backward(w, l1, l2, grad):
    """grad += l1 * sign(w) + 2 * l2 * w.

    ACCUMULATES into ``grad`` in place (it holds the loss gradient of ``w`` already); this is the
    one kernel of the tree that adds to its output instead of overwriting it.
    """
    n = w.size
    two_l2 = 2.0 * l2
    for i in prange(n):
        _penalty_grad_one(w, l1, two_l2, grad, i)
