"""Normalization kernels on the GPU: batch normalization over (N, C, S), layer normalization over
(R, D). Same public launchers, arguments and semantics as kernels/cpu/normalization.py (see its
docstring for the contract: biased variance for normalization, PyTorch's unbiased variance and
Keras' momentum for the running statistics).

* Batch normalization: one block per channel (grid-stride over channels when C exceeds the grid
  cap). The block walks the channel's N*S values with a flat index (coalesced along S), sums in
  float64 and reduces with ``block_sum``: two passes (mean, then squared deviations), then the
  normalization, all in one launch. The backward pass is the same shape: two sums, then grad_in.
  Inference forward is elementwise (grid-stride); the running-statistics update is one tiny launch.
* Layer normalization: the row-wise layout of ``_common`` (``lanes`` threads per row, ``rows``
  rows per block, ``row_sum``), one launch for the forward pass and two for the backward: grad_in
  row-wise, then the gamma/beta gradients as column sums (threads along features, each summing a
  strided set of rows, the partials added in a fixed order through shared memory).

Every sum is float64 in a fixed order: results are deterministic. The backward passes'
``accumulate`` adds the gamma/beta gradients into the existing values in their final store
(float64 sum, rounded once); grad_in is always written.
"""
import math

import numba
from numba import cuda

from ._common import (A1, A2, A3, Bool, Float, Int, MAX_THREADS, ROW_LANES, ROW_ROWS, block_sum,
                      config, grid_1d, grid_rows, kernel, row_loop, row_sum)


def _channel_grid(channels):
    """(blocks, threads): one block per channel, capped at ``config.max_blocks``."""
    return max(1, min(channels, config.max_blocks)), config.threads


# ---------------------------------------------------------------------------------------------
# batch normalization

@kernel
def _bn_forward_train(x: A3, gamma: A1, beta: A1, eps: Float, out: A3, mean: A1, invstd: A1):
    sh = cuda.shared.array(MAX_THREADS, numba.float64)
    nc = x.shape[1]
    ns = x.shape[2]
    m = x.shape[0] * ns
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    for c in range(cuda.blockIdx.x, nc, cuda.gridDim.x):
        acc = 0.0
        for i in range(t, m, nt):
            acc += x[i // ns, c, i % ns]
        mu = block_sum(sh, acc) / m
        acc = 0.0
        for i in range(t, m, nt):
            d = x[i // ns, c, i % ns] - mu
            acc += d * d
        inv = 1.0 / math.sqrt(block_sum(sh, acc) / m + eps)
        a = gamma[c] * inv
        b = beta[c]
        for i in range(t, m, nt):
            n = i // ns
            s = i - n * ns
            out[n, c, s] = (x[n, c, s] - mu) * a + b
        if t == 0:
            mean[c] = mu
            invstd[c] = inv


@kernel
def _bn_forward_infer(x: A3, gamma: A1, beta: A1, running_mean: A1, running_var: A1, eps: Float,
                      out: A3):
    nc = x.shape[1]
    ns = x.shape[2]
    plane = nc * ns
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        n = i // plane
        r = i - n * plane
        c = r // ns
        s = r - c * ns
        a = gamma[c] / math.sqrt(running_var[c] + eps)
        out[n, c, s] = (x[n, c, s] - numba.float64(running_mean[c])) * a + beta[c]


@cuda.jit(device=True)
def _channel_grad_sums(sh, x, g, c, center):
    """(sum g, sum g * (x - center)) over channel c, float64, to every thread of the block."""
    ns = x.shape[2]
    m = x.shape[0] * ns
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    sg = 0.0
    sgx = 0.0
    for i in range(t, m, nt):
        n = i // ns
        s = i - n * ns
        gv = g[n, c, s]
        sg += gv
        sgx += gv * (x[n, c, s] - center)
    return block_sum(sh, sg), block_sum(sh, sgx)


@cuda.jit(device=True)
def _store_param_grads(accumulate, grad_gamma, grad_beta, j, a, b):
    """grad_gamma[j] = a and grad_beta[j] = b, or += with ``accumulate``."""
    grad_gamma[j] = grad_gamma[j] + a if accumulate else a
    grad_beta[j] = grad_beta[j] + b if accumulate else b


@kernel
def _bn_backward(x: A3, g: A3, gamma: A1, mean: A1, invstd: A1, accumulate: Bool, grad_in: A3,
                 grad_gamma: A1, grad_beta: A1):
    sh = cuda.shared.array(MAX_THREADS, numba.float64)
    nc = x.shape[1]
    ns = x.shape[2]
    m = x.shape[0] * ns
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    for c in range(cuda.blockIdx.x, nc, cuda.gridDim.x):
        mu = numba.float64(mean[c])
        inv = numba.float64(invstd[c])
        sg, sgx = _channel_grad_sums(sh, x, g, c, mu)
        a = gamma[c] * inv
        k = -a * inv * inv * sgx / m
        b = -a * sg / m
        for i in range(t, m, nt):
            n = i // ns
            s = i - n * ns
            grad_in[n, c, s] = a * g[n, c, s] + k * (x[n, c, s] - mu) + b
        if t == 0:
            _store_param_grads(accumulate, grad_gamma, grad_beta, c, sgx * inv, sg)


@kernel
def _bn_backward_infer(x: A3, g: A3, gamma: A1, running_mean: A1, running_var: A1, eps: Float,
                       accumulate: Bool, grad_in: A3, grad_gamma: A1, grad_beta: A1):
    sh = cuda.shared.array(MAX_THREADS, numba.float64)
    nc = x.shape[1]
    ns = x.shape[2]
    m = x.shape[0] * ns
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    for c in range(cuda.blockIdx.x, nc, cuda.gridDim.x):
        inv = 1.0 / math.sqrt(running_var[c] + eps)
        sg, sgx = _channel_grad_sums(sh, x, g, c, numba.float64(running_mean[c]))
        a = gamma[c] * inv
        for i in range(t, m, nt):
            n = i // ns
            s = i - n * ns
            grad_in[n, c, s] = a * g[n, c, s]
        if t == 0:
            _store_param_grads(accumulate, grad_gamma, grad_beta, c, sgx * inv, sg)


@kernel
def _bn_update_running(running_mean: A1, running_var: A1, mean: A1, invstd: A1, eps: Float,
                       momentum: Float, count: Int):
    unbias = count / (count - 1.0) if count > 1 else 1.0
    for c in range(cuda.grid(1), running_mean.size, cuda.gridsize(1)):
        inv = numba.float64(invstd[c])
        var = max(1.0 / (inv * inv) - eps, 0.0) * unbias
        running_mean[c] = momentum * running_mean[c] + (1.0 - momentum) * mean[c]
        running_var[c] = momentum * running_var[c] + (1.0 - momentum) * var


def batchnorm_forward_train(x3, gamma, beta, eps, out, mean, invstd):
    """Batch statistics per channel of x3 (N, C, S) over N and S (biased variance);
    out = (x - mean) * invstd * gamma + beta; writes mean (C,) and invstd (C,)."""
    _bn_forward_train[_channel_grid(x3.shape[1])](x3, gamma, beta, eps, out, mean, invstd)


def batchnorm_forward_infer(x3, gamma, beta, running_mean, running_var, eps, out):
    """out = (x - running_mean) / sqrt(running_var + eps) * gamma + beta, per channel."""
    _bn_forward_infer[grid_1d(x3.size)](x3, gamma, beta, running_mean, running_var, eps, out)


def batchnorm_backward(x3, grad_out3, gamma, mean, invstd, accumulate, grad_in3, grad_gamma,
                       grad_beta):
    """Gradient of the training-mode forward (batch statistics depend on x); grad_gamma and
    grad_beta added into with ``accumulate``."""
    _bn_backward[_channel_grid(x3.shape[1])](x3, grad_out3, gamma, mean, invstd, accumulate,
                                             grad_in3, grad_gamma, grad_beta)


def batchnorm_backward_infer(x3, grad_out3, gamma, running_mean, running_var, eps, accumulate,
                             grad_in3, grad_gamma, grad_beta):
    """Gradient of the inference-mode forward: grad_in = g * gamma / sqrt(running_var + eps);
    grad_gamma and grad_beta added into with ``accumulate``."""
    _bn_backward_infer[_channel_grid(x3.shape[1])](x3, grad_out3, gamma, running_mean,
                                                   running_var, eps, accumulate, grad_in3,
                                                   grad_gamma, grad_beta)


def batchnorm_update_running(running_mean, running_var, mean, invstd, eps, momentum, count):
    """In place: running = momentum * running + (1 - momentum) * batch statistic (unbiased
    batch variance for count > 1)."""
    _bn_update_running[grid_1d(running_mean.size)](running_mean, running_var, mean, invstd,
                                                   eps, momentum, count)


# ---------------------------------------------------------------------------------------------
# layer normalization

@kernel
def _ln_forward(x: A2, gamma: A1, beta: A1, eps: Float, out: A2, mean: A1, invstd: A1):
    sh = cuda.shared.array((ROW_ROWS, ROW_LANES), numba.float64)
    rows = x.shape[0]
    d = x.shape[1]
    tx = cuda.threadIdx.x
    lanes = cuda.blockDim.x
    first, stop, step = row_loop(rows)
    for r in range(first, stop, step):
        live = r < rows
        acc = 0.0
        if live:
            for j in range(tx, d, lanes):
                acc += x[r, j]
        mu = row_sum(sh, acc) / d
        acc = 0.0
        if live:
            for j in range(tx, d, lanes):
                v = x[r, j] - mu
                acc += v * v
        inv = 1.0 / math.sqrt(row_sum(sh, acc) / d + eps)
        if live:
            for j in range(tx, d, lanes):
                out[r, j] = (x[r, j] - mu) * inv * gamma[j] + beta[j]
            if tx == 0:
                mean[r] = mu
                invstd[r] = inv


@kernel
def _ln_backward_input(x: A2, g: A2, gamma: A1, mean: A1, invstd: A1, grad_in: A2):
    sh = cuda.shared.array((ROW_ROWS, ROW_LANES), numba.float64)
    rows = x.shape[0]
    d = x.shape[1]
    tx = cuda.threadIdx.x
    lanes = cuda.blockDim.x
    first, stop, step = row_loop(rows)
    for r in range(first, stop, step):
        live = r < rows
        mu = 0.0
        inv = 0.0
        s1 = 0.0
        s2 = 0.0
        if live:
            mu = numba.float64(mean[r])
            inv = numba.float64(invstd[r])
            for j in range(tx, d, lanes):
                gg = g[r, j] * gamma[j]
                s1 += gg
                s2 += gg * (x[r, j] - mu) * inv
        s1 = row_sum(sh, s1) / d
        s2 = row_sum(sh, s2) / d
        if live:
            for j in range(tx, d, lanes):
                grad_in[r, j] = inv * (g[r, j] * gamma[j] - s1 - (x[r, j] - mu) * inv * s2)


@kernel
def _ln_backward_params(x: A2, g: A2, mean: A1, invstd: A1, accumulate: Bool, grad_gamma: A1,
                        grad_beta: A1):
    sa = cuda.shared.array((ROW_ROWS, ROW_LANES), numba.float64)
    sb = cuda.shared.array((ROW_ROWS, ROW_LANES), numba.float64)
    rows = x.shape[0]
    d = x.shape[1]
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    lanes = cuda.blockDim.x
    rpb = cuda.blockDim.y
    for j0 in range(cuda.blockIdx.x * lanes, d, cuda.gridDim.x * lanes):
        j = j0 + tx
        a = 0.0
        b = 0.0
        if j < d:
            for r in range(ty, rows, rpb):
                gv = g[r, j]
                a += gv * ((x[r, j] - numba.float64(mean[r])) * invstd[r])
                b += gv
        sa[ty, tx] = a
        sb[ty, tx] = b
        cuda.syncthreads()
        if ty == 0 and j < d:
            for k in range(1, rpb):
                a += sa[k, tx]
                b += sb[k, tx]
            _store_param_grads(accumulate, grad_gamma, grad_beta, j, a, b)
        cuda.syncthreads()


def layernorm_forward(x2, gamma, beta, eps, out, mean, invstd):
    """Each row of x2 (R, D) normalized over its D features (biased variance):
    out = (x - mean) * invstd * gamma + beta; writes mean (R,) and invstd (R,)."""
    _ln_forward[grid_rows(x2.shape[0])](x2, gamma, beta, eps, out, mean, invstd)


def layernorm_backward(x2, grad_out2, gamma, mean, invstd, accumulate, grad_in2, grad_gamma,
                       grad_beta):
    """grad_in row-wise; grad_gamma = sum over rows of g * xhat, grad_beta = sum of g (both
    added into the existing values with ``accumulate``)."""
    _ln_backward_input[grid_rows(x2.shape[0])](x2, grad_out2, gamma, mean, invstd, grad_in2)
    lanes, rpb = config.row_block
    blocks = max(1, min(-(-x2.shape[1] // lanes), config.max_blocks))
    _ln_backward_params[blocks, (lanes, rpb)](x2, grad_out2, mean, invstd, accumulate, grad_gamma,
                                              grad_beta)
