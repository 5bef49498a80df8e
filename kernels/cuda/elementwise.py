"""Elementwise kernels on flat 1-D device arrays (outputs may alias inputs): dropout, sum of
squares, scaling. Grid-stride loops, one launch per call; sum_squares is a deterministic
one-launch grid reduction (float64 partials, the last block adds them in order)."""
import numpy as np
from numba import cuda

from ._common import (A1, D1, Float, MAX_THREADS, N1, grid_1d, grid_sum_store, kernel, launcher,
                      reduction_args)


@kernel
def _dropout_fwd(x: A1, u: A1, rate: Float, keep_scale: Float, out: A1, mask: A1):
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        xi = x[i]
        m = mask.dtype.type(keep_scale if u[i] >= rate else 0.0)
        mask[i] = m
        out[i] = xi * m


@launcher
def dropout_forward(x, u, rate, out, mask):
    """mask = (u >= rate) / (1 - rate) (0 everywhere when rate >= 1); out = x * mask."""
    keep_scale = 1.0 / (1.0 - rate) if rate < 1.0 else 0.0
    if x.size:
        _dropout_fwd[grid_1d(x.size)](x, u, rate, keep_scale, out, mask)


@kernel
def _dropout_bwd(grad_out: A1, mask: A1, grad_in: A1):
    for i in range(cuda.grid(1), grad_out.size, cuda.gridsize(1)):
        grad_in[i] = grad_out[i] * mask[i]


@launcher
def dropout_backward(grad_out, mask, grad_in):
    """grad_in = grad_out * mask."""
    if grad_out.size:
        _dropout_bwd[grid_1d(grad_out.size)](grad_out, mask, grad_in)


@kernel
def _sum_squares(x: A1, out: A1, partials: D1, count: N1):
    sh = cuda.shared.array(MAX_THREADS, np.float64)
    flag = cuda.shared.array(1, np.int32)
    acc = 0.0
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        v = np.float64(x[i])
        acc += v * v
    grid_sum_store(sh, flag, acc, partials, count, out, 1.0)


@launcher
def sum_squares(x, out):
    """out[0] = sum(x * x), accumulated in float64."""
    grid = grid_1d(x.size)
    _sum_squares[grid](x, out, *reduction_args("sum_squares", grid[0]))


@kernel
def _scale(x: A1, factor: Float, out: A1):
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        out[i] = x[i] * factor


@launcher
def scale(x, factor, out):
    """out = x * factor."""
    if x.size:
        _scale[grid_1d(x.size)](x, factor, out)
