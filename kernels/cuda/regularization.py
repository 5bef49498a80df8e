"""Weight regularization kernels on flat 1-D device arrays (see kernels/cpu/regularization.py for
the contract): the elastic-net penalty as a deterministic one-launch grid reduction (float64
partials, the last block adds them in block order), and its gradient added into ``grad`` in place
by a grid-stride loop."""
import numpy as np
from numba import cuda

from ._common import A1, D1, Float, MAX_THREADS, N1, grid_1d, grid_sum_store, kernel, reduction_args


@kernel
def _l1l2_penalty(w: A1, l1: Float, l2: Float, out: A1, partials: D1, count: N1):
    sh = cuda.shared.array(MAX_THREADS, np.float64)
    flag = cuda.shared.array(1, np.int32)
    acc = 0.0
    for i in range(cuda.grid(1), w.size, cuda.gridsize(1)):
        v = np.float64(w[i])
        acc += l1 * abs(v) + l2 * (v * v)
    grid_sum_store(sh, flag, acc, partials, count, out, 1.0)


def l1l2_penalty(w, l1, l2, out):
    """out[0] = l1 * sum|w| + l2 * sum(w * w), accumulated in float64."""
    grid = grid_1d(w.size)
    _l1l2_penalty[grid](w, l1, l2, out, *reduction_args("l1l2_penalty", grid[0]))


@kernel
def _l1l2_penalty_bwd(w: A1, l1: Float, two_l2: Float, grad: A1):
    for i in range(cuda.grid(1), w.size, cuda.gridsize(1)):
        v = np.float64(w[i])
        s = 1.0 if v > 0.0 else (-1.0 if v < 0.0 else v * 0.0)
        grad[i] += l1 * s + two_l2 * v


def l1l2_penalty_backward(w, l1, l2, grad):
    """grad += l1 * sign(w) + 2 * l2 * w. ACCUMULATES into ``grad`` in place."""
    if w.size:
        _l1l2_penalty_bwd[grid_1d(w.size)](w, l1, 2.0 * l2, grad)
