"""Activation kernels on the GPU: flat 1-D device arrays (softmax: 2-D, row-wise); outputs may
alias inputs.

``NAME_forward(x, alpha, out)`` / ``NAME_backward(x, y, grad_out, alpha, grad_in)`` as on the CPU;
the scalar maths is ``kernels/scalar.py`` compiled as CUDA device functions. Every elementwise
kernel is one grid-stride launch, generated from its scalar function by ``_elementwise``.
Softmax runs ``lanes`` threads per row (block (lanes, rows), see ``_common.grid_rows``) with
shared-memory row reductions, so wide rows are read coalesced.
"""
import math

import numpy as np
from numba import cuda

from .. import scalar
from ._common import (ROW_LANES, ROW_ROWS, Kernel, device, grid_1d, grid_rows, launcher,
                      row_max, row_sum)


def _elementwise(name, f, f_grad, with_alpha):
    """(forward, backward) Kernels applying the device functions f / f_grad elementwise."""
    if with_alpha:
        def fwd(x, alpha, out):
            for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
                out[i] = f(x[i], alpha)

        def bwd(x, y, grad_out, alpha, grad_in):
            for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
                grad_in[i] = grad_out[i] * f_grad(x[i], y[i], alpha)
    else:
        def fwd(x, alpha, out):
            for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
                out[i] = f(x[i])

        def bwd(x, y, grad_out, alpha, grad_in):
            for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
                grad_in[i] = grad_out[i] * f_grad(x[i], y[i])
    kf, kb = cuda.jit(fwd), cuda.jit(bwd)
    return (Kernel(f"activations._{name}_forward", "A1 f A1", lambda dtype: kf),
            Kernel(f"activations._{name}_backward", "A1 A1 A1 f A1", lambda dtype: kb))


_linear, _relu, _leaky_relu, _elu, _gelu, _gelu_tanh, _sigmoid, _tanh, _softplus = (
    device(getattr(scalar, name)) for name in scalar.ACTIVATION_CODES)
_WITH_ALPHA = ("leaky_relu", "elu")
_K = {name: _elementwise(name, globals()["_" + name], device(getattr(scalar, name + "_grad")),
                         name in _WITH_ALPHA)
      for name in scalar.ACTIVATION_CODES}


_RELU, _LEAKY_RELU, _ELU, _GELU, _GELU_TANH, _SIGMOID, _TANH, _SOFTPLUS = (
    scalar.ACTIVATION_CODES.index(name) for name in ("relu", "leaky_relu", "elu", "gelu",
                                                     "gelu_tanh", "sigmoid", "tanh", "softplus"))


@cuda.jit(device=True)
def _activate(code, x, alpha):
    """Activation ``code`` (an index into scalar.ACTIVATION_CODES) of x: the epilogue of the
    fused forward GEMMs (dense_forward_activation, conv2d_forward_activation)."""
    if code == _RELU:
        return _relu(x)
    if code == _LEAKY_RELU:
        return _leaky_relu(x, alpha)
    if code == _ELU:
        return _elu(x, alpha)
    if code == _GELU:
        return _gelu(x)
    if code == _GELU_TANH:
        return _gelu_tanh(x)
    if code == _SIGMOID:
        return _sigmoid(x)
    if code == _TANH:
        return _tanh(x)
    if code == _SOFTPLUS:
        return _softplus(x)
    return _linear(x)


def _fwd(name, x, alpha, out):
    if x.size:
        _K[name][0][grid_1d(x.size)](x, alpha, out)


def _bwd(name, x, y, grad_out, alpha, grad_in):
    if x.size:
        _K[name][1][grid_1d(x.size)](x, y, grad_out, alpha, grad_in)


@launcher
def linear_forward(x, alpha, out):
    """out = x."""
    _fwd("linear", x, alpha, out)


@launcher
def linear_backward(x, y, grad_out, alpha, grad_in):
    """grad_in = grad_out."""
    _bwd("linear", x, y, grad_out, alpha, grad_in)


@launcher
def relu_forward(x, alpha, out):
    """out = max(x, 0)."""
    _fwd("relu", x, alpha, out)


@launcher
def relu_backward(x, y, grad_out, alpha, grad_in):
    """grad_in = grad_out * relu'(x)."""
    _bwd("relu", x, y, grad_out, alpha, grad_in)


@launcher
def leaky_relu_forward(x, alpha, out):
    """out = x for x >= 0, alpha * x below."""
    _fwd("leaky_relu", x, alpha, out)


@launcher
def leaky_relu_backward(x, y, grad_out, alpha, grad_in):
    """grad_in = grad_out for x > 0, alpha * grad_out otherwise."""
    _bwd("leaky_relu", x, y, grad_out, alpha, grad_in)


@launcher
def elu_forward(x, alpha, out):
    """out = x for x >= 0, alpha * expm1(x) below."""
    _fwd("elu", x, alpha, out)


@launcher
def elu_backward(x, y, grad_out, alpha, grad_in):
    """grad_in = grad_out for x > 0, grad_out * alpha * exp(x) otherwise."""
    _bwd("elu", x, y, grad_out, alpha, grad_in)


@launcher
def gelu_forward(x, alpha, out):
    """Exact GELU: out = x * Phi(x)."""
    _fwd("gelu", x, alpha, out)


@launcher
def gelu_backward(x, y, grad_out, alpha, grad_in):
    """grad_in = grad_out * (Phi(x) + x phi(x))."""
    _bwd("gelu", x, y, grad_out, alpha, grad_in)


@launcher
def gelu_tanh_forward(x, alpha, out):
    """tanh-approximate GELU."""
    _fwd("gelu_tanh", x, alpha, out)


@launcher
def gelu_tanh_backward(x, y, grad_out, alpha, grad_in):
    """grad_in = grad_out * d gelu_tanh / dx."""
    _bwd("gelu_tanh", x, y, grad_out, alpha, grad_in)


@launcher
def sigmoid_forward(x, alpha, out):
    """out = 1 / (1 + exp(-x)), stable."""
    _fwd("sigmoid", x, alpha, out)


@launcher
def sigmoid_backward(x, y, grad_out, alpha, grad_in):
    """grad_in = grad_out * sigmoid'(x)."""
    _bwd("sigmoid", x, y, grad_out, alpha, grad_in)


@launcher
def tanh_forward(x, alpha, out):
    """out = tanh(x)."""
    _fwd("tanh", x, alpha, out)


@launcher
def tanh_backward(x, y, grad_out, alpha, grad_in):
    """grad_in = grad_out * (1 - tanh(x)^2)."""
    _bwd("tanh", x, y, grad_out, alpha, grad_in)


@launcher
def softplus_forward(x, alpha, out):
    """out = log(1 + exp(x)), stable."""
    _fwd("softplus", x, alpha, out)


@launcher
def softplus_backward(x, y, grad_out, alpha, grad_in):
    """grad_in = grad_out * sigmoid(x)."""
    _bwd("softplus", x, y, grad_out, alpha, grad_in)


# ------------------------------------------------------------------------------------- softmax
def _softmax_fwd(x, alpha, out):
    sh = cuda.shared.array((ROW_ROWS, ROW_LANES), np.float64)
    rows, cols = x.shape
    tx = cuda.threadIdx.x
    lanes = cuda.blockDim.x
    rpb = cuda.blockDim.y
    for g in range(cuda.blockIdx.x, (rows + rpb - 1) // rpb, cuda.gridDim.x):
        r = g * rpb + cuda.threadIdx.y
        live = r < rows
        m = -math.inf
        if live:
            for j in range(tx, cols, lanes):
                v = x[r, j]
                if v > m or v != v:
                    m = v
        m = row_max(sh, m)
        s = 0.0
        if live:
            for j in range(tx, cols, lanes):
                s += math.exp(x[r, j] - m)
        s = row_sum(sh, s)
        if live:
            inv = 1.0 / s
            for j in range(tx, cols, lanes):
                out[r, j] = math.exp(x[r, j] - m) * inv


def _softmax_bwd(x, y, grad_out, alpha, grad_in):
    sh = cuda.shared.array((ROW_ROWS, ROW_LANES), np.float64)
    rows, cols = y.shape
    tx = cuda.threadIdx.x
    lanes = cuda.blockDim.x
    rpb = cuda.blockDim.y
    for g in range(cuda.blockIdx.x, (rows + rpb - 1) // rpb, cuda.gridDim.x):
        r = g * rpb + cuda.threadIdx.y
        live = r < rows
        dot = 0.0
        if live:
            for j in range(tx, cols, lanes):
                dot += grad_out[r, j] * y[r, j]
        dot = row_sum(sh, dot)
        if live:
            for j in range(tx, cols, lanes):
                grad_in[r, j] = y[r, j] * (grad_out[r, j] - dot)


_softmax_forward = Kernel("activations._softmax_forward", "A2 f A2",
                          lambda dtype, k=cuda.jit(_softmax_fwd): k)
_softmax_backward = Kernel("activations._softmax_backward", "A2 A2 A2 f A2",
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
