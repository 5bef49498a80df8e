"""Activation kernels on the GPU: flat 1-D device arrays (softmax: 2-D, row-wise); outputs may
alias inputs.

``NAME_forward(x, alpha, out)`` / ``NAME_backward(x, y, grad_out, alpha, grad_in)`` as on the CPU;
the scalar maths is ``kernels/scalar.py`` compiled as CUDA device functions. Every elementwise
kernel is one grid-stride launch, generated from its scalar function by ``_elementwise`` for every
name of ``scalar.ACTIVATION_CODES``.
Softmax runs ``lanes`` threads per row (block (lanes, rows), see ``_common.grid_rows``) with
shared-memory row reductions, so wide rows are read coalesced.
"""
import math

import numpy as np
from numba import cuda

from .. import scalar
from ._common import (A1, A2, ROW_LANES, ROW_ROWS, Float, Kernel, device, grid_1d, grid_rows,
                      launcher, row_loop, row_max_sumexp, row_sum)


def _elementwise(name):
    """(NAME_forward, NAME_backward) launchers of activation ``name``: its scalar functions from
    ``kernels/scalar.py`` as device functions, applied by one grid-stride kernel each."""
    scalar_f = getattr(scalar, name)
    f, f_grad = device(scalar_f), device(getattr(scalar, name + "_grad"))

    def fwd(x: A1, alpha: Float, out: A1):
        for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
            out[i] = f(x[i], alpha)

    def bwd(x: A1, y: A1, grad_out: A1, alpha: Float, grad_in: A1):
        for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
            grad_in[i] = grad_out[i] * f_grad(x[i], y[i], alpha)
    jf, jb = cuda.jit(fwd), cuda.jit(bwd)
    kf = Kernel(f"activations._{name}_forward", fwd, lambda dtype: jf)
    kb = Kernel(f"activations._{name}_backward", bwd, lambda dtype: jb)

    def forward(x, alpha, out):
        if x.size:
            kf[grid_1d(x.size)](x, alpha, out)

    def backward(x, y, grad_out, alpha, grad_in):
        if x.size:
            kb[grid_1d(x.size)](x, y, grad_out, alpha, grad_in)
    doc = (scalar_f.__doc__ or "").strip().splitlines()
    forward.__doc__ = f"out = {name}(x) elementwise" + (f": {doc[0]}" if doc else ".")
    backward.__doc__ = f"grad_in = grad_out * {name}'(x) elementwise."
    forward.__name__ = forward.__qualname__ = name + "_forward"
    backward.__name__ = backward.__qualname__ = name + "_backward"
    return launcher(forward), launcher(backward)


for _name in scalar.ACTIVATION_CODES:
    globals()[_name + "_forward"], globals()[_name + "_backward"] = _elementwise(_name)

# the epilogue of the fused forward GEMMs (dense_forward_activation, conv2d_forward_activation):
# activation ``code`` (an index into scalar.ACTIVATION_CODES) of x
_activate = scalar.activation_switch(device)[0]


# ------------------------------------------------------------------------------------- softmax
def _softmax_fwd(x: A2, alpha: Float, out: A2):
    sh = cuda.shared.array((ROW_ROWS, ROW_LANES), np.float64)
    rows, cols = x.shape
    first, stop, step = row_loop(rows)
    for r in range(first, stop, step):
        m, s = row_max_sumexp(sh, x, r, r < rows)
        if r < rows:
            inv = 1.0 / s
            for j in range(cuda.threadIdx.x, cols, cuda.blockDim.x):
                out[r, j] = math.exp(x[r, j] - m) * inv


def _softmax_bwd(x: A2, y: A2, grad_out: A2, alpha: Float, grad_in: A2):
    sh = cuda.shared.array((ROW_ROWS, ROW_LANES), np.float64)
    rows, cols = y.shape
    tx = cuda.threadIdx.x
    lanes = cuda.blockDim.x
    first, stop, step = row_loop(rows)
    for r in range(first, stop, step):
        live = r < rows
        dot = 0.0
        if live:
            for j in range(tx, cols, lanes):
                dot += grad_out[r, j] * y[r, j]
        dot = row_sum(sh, dot)
        if live:
            for j in range(tx, cols, lanes):
                grad_in[r, j] = y[r, j] * (grad_out[r, j] - dot)


_softmax_forward = Kernel("activations._softmax_forward", _softmax_fwd,
                          lambda dtype, k=cuda.jit(_softmax_fwd): k)
_softmax_backward = Kernel("activations._softmax_backward", _softmax_bwd,
                           lambda dtype, k=cuda.jit(_softmax_bwd): k)


@launcher
def softmax_forward(x, alpha, out):
    """Row-wise softmax of x (rows, cols), stable (row max subtracted)."""
    if x.size:
        _softmax_forward[grid_rows(x.shape[0])](x, alpha, out)


@launcher
def softmax_backward(x, y, grad_out, alpha, grad_in):
    """grad_in = y * (grad_out - sum_row(grad_out * y)), row-wise."""
    if y.size:
        _softmax_backward[grid_rows(y.shape[0])](x, y, grad_out, alpha, grad_in)
