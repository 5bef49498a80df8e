"""Normalization kernels (CPU): batch normalization over (N, C, S), layer normalization over (R, D).

Batch normalization sees its input as ``x3`` of shape (N, C, S): the layer passes an NCHW batch
as (N, C, H*W) and a Dense output (N, F) as (N, F, 1) (any single normalized axis works the same
way: everything before it is "N", everything after it "S"). Statistics are per channel c over N
and S. Layer normalization sees (R, D): R rows (the batch and leading axes), each normalized over
its D trailing features.

Contract (outputs last; every array of one float dtype, float32 or float64; eps, momentum Python
floats, count a Python int):

``batchnorm_forward_train(x3, gamma, beta, eps, out, mean, invstd)``
    mean[c], var[c] = batch mean and *biased* variance of x3[:, c, :]; invstd = 1/sqrt(var + eps);
    out = (x - mean) * invstd * gamma + beta.
``batchnorm_forward_infer(x3, gamma, beta, running_mean, running_var, eps, out)``
    out = (x - running_mean) / sqrt(running_var + eps) * gamma + beta.
``batchnorm_backward(x3, grad_out3, gamma, mean, invstd, accumulate, grad_in3, grad_gamma,
grad_beta)``
    gradient of the training-mode forward (the batch statistics depend on x).
``batchnorm_backward_infer(x3, grad_out3, gamma, running_mean, running_var, eps, accumulate,
grad_in3, grad_gamma, grad_beta)``
    gradient of the inference-mode forward, a per-channel affine map:
    grad_in = grad_out * gamma / sqrt(running_var + eps).
``batchnorm_update_running(running_mean, running_var, mean, invstd, eps, momentum, count)``
    in place: running = momentum * running + (1 - momentum) * batch (Keras momentum, 0.99 by
    default; PyTorch's momentum is 1 - this). The batch variance is recovered as
    1/invstd**2 - eps and made unbiased with count / (count - 1) like PyTorch (count = N*S, the
    values per channel; count 1 keeps the biased value 0). In float32 the recovery loses
    ~eps/var * 6e-8 relative, harmless for running statistics.
``layernorm_forward(x2, gamma, beta, eps, out, mean, invstd)``
    per row r: mean[r], biased var over D; out = (x - mean) * invstd * gamma + beta
    (gamma, beta: (D,); mean, invstd: (R,)).
``layernorm_backward(x2, grad_out2, gamma, mean, invstd, accumulate, grad_in2, grad_gamma,
grad_beta)``

The backward passes take ``accumulate``: when true, grad_gamma and grad_beta are added into
(their float64 sums added to the existing values, then rounded once) instead of overwritten, so a
layer called several times in one step sums its calls' gradients; grad_in is always written.

Precision: sums run in float64, two-pass (mean first, then squared deviations from it), and the
normalization itself is evaluated in float64, so float32 inputs with a mean far from zero keep
their precision. Reductions over the batch are split into a fixed number of row chunks whose
float64 partials are added in order: results do not depend on the thread count.

Parallelism: ``prange`` over row chunks (reductions), images or rows (elementwise passes), each
loop compiled serially and run so below ``_PAR_MIN`` elements and compiled with ``parallel=True``
at the first larger call (``_threads.split_kernel``); the batch normalization kernels run their
passes from Python, so a small model never compiles a parfor copy. Inner loops run along contiguous memory
(along S, or along C when S = 1).
"""
import math

import numpy as np
from numba import njit, prange

from ._threads import split_kernel

_FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

# Elements at or above which the prange paths run: thread start-up costs a few us, and a serial
# pass takes ~0.3-1 ns an element here, so smaller arrays are done before threads would start.
_PAR_MIN = 1 << 15
# Fixed number of row chunks of a reduction over the batch (deterministic partial sums).
_CHUNKS = 16


# ---------------------------------------------------------------------------------------------
# batch normalization helpers
# ---------------------------------------------------------------------------------------------

@njit(cache=True, fastmath=_FASTMATH)
def _bn_chunk(x, g, center, mode, lo, hi, part):
    """Float64 sums over images n in [lo, hi) and positions s, per channel c, into part (2, C):
    mode 0: part[0] = sum (x - center); mode 1: part[0] = sum (x - center)**2;
    mode 2: part[0] = sum g and part[1] = sum g * (x - center) (g: grad_out, one pass)."""
    nc, ns = x.shape[1], x.shape[2]
    for c in range(nc):
        part[0, c] = 0.0
        part[1, c] = 0.0
    for n in range(lo, hi):
        for c in range(nc):
            m = center[c]
            a = 0.0
            b = 0.0
            if mode == 0:
                for s in range(ns):
                    a += x[n, c, s] - m
            elif mode == 1:
                for s in range(ns):
                    d = x[n, c, s] - m
                    a += d * d
            else:
                for s in range(ns):
                    gv = g[n, c, s]
                    a += gv
                    b += gv * (x[n, c, s] - m)
            part[0, c] += a
            part[1, c] += b


@split_kernel(0, _PAR_MIN)
def _bn_sums(x, g, center, mode, out):
    """out (2, C): the _bn_chunk sums over the whole batch, from a fixed set of row chunks
    added in order (the same result whatever the thread count)."""
    n = x.shape[0]
    nch = min(n, _CHUNKS)
    part = np.empty((nch, 2, x.shape[1]))
    for k in prange(nch):
        _bn_chunk(x, g, center, mode, k * n // nch, (k + 1) * n // nch, part[k])
    for c in range(x.shape[1]):
        a = 0.0
        b = 0.0
        for k in range(nch):
            a += part[k, 0, c]
            b += part[k, 1, c]
        out[0, c] = a
        out[1, c] = b


@njit(inline="always", fastmath=_FASTMATH)
def _bn_segment(x, g, center, a, b, k, n, c, out):
    """out[n, c, :] = a[c] * g + k[c] * (x - center[c]) + b[c], evaluated in float64 (the
    forward passes g = x and a = 0)."""
    m, ac, kc, bc = center[c], a[c], k[c], b[c]
    for s in range(x.shape[2]):
        out[n, c, s] = ac * g[n, c, s] + kc * (x[n, c, s] - m) + bc


@njit(inline="always", fastmath=_FASTMATH)
def _bn_image(x, g, center, a, b, k, n, out):
    """_bn_segment for every channel of image n; S = 1 (after Dense) runs along C instead."""
    if x.shape[2] == 1:
        for c in range(x.shape[1]):
            out[n, c, 0] = a[c] * g[n, c, 0] + k[c] * (x[n, c, 0] - center[c]) + b[c]
    else:
        for c in range(x.shape[1]):
            _bn_segment(x, g, center, a, b, k, n, c, out)


@split_kernel(0, _PAR_MIN, fastmath=_FASTMATH)
def _bn_apply(x, g, center, a, b, k, out):
    """out = a * g + k * (x - center) + b per channel: over images, or over the channels of a
    single image with S > 1."""
    if x.shape[0] > 1 or x.shape[2] == 1:
        for n in prange(x.shape[0]):
            _bn_image(x, g, center, a, b, k, n, out)
    else:
        for c in prange(x.shape[1]):
            _bn_segment(x, g, center, a, b, k, 0, c, out)


# ---------------------------------------------------------------------------------------------
# batch normalization
# ---------------------------------------------------------------------------------------------

@njit(cache=True)
def _bn_train_affine(sums, count, eps, gamma, beta, invstd):
    """(scale, shift) of the training forward from the sums of squared deviations in sums[0];
    writes invstd."""
    nc = sums.shape[1]
    scale = np.empty(nc)
    shift = np.empty(nc)
    for c in range(nc):
        inv = 1.0 / math.sqrt(sums[0, c] / count + eps)
        invstd[c] = inv
        scale[c] = gamma[c] * inv
        shift[c] = beta[c]
    return scale, shift


def batchnorm_forward_train(x3, gamma, beta, eps, out, mean, invstd):
    """Per-channel batch statistics of x3 (N, C, S) over N and S (biased variance), and
    out = (x - mean) * invstd * gamma + beta; writes mean (C,) and invstd (C,)."""
    nc = x3.shape[1]
    count = x3.shape[0] * x3.shape[2]
    sums = np.empty((2, nc))
    zero = np.zeros(nc)
    _bn_sums(x3, x3, zero, 0, sums)
    mu = sums[0] / count
    _bn_sums(x3, x3, mu, 1, sums)
    mean[:] = mu
    scale, shift = _bn_train_affine(sums, count, eps, gamma, beta, invstd)
    _bn_apply(x3, x3, mu, zero, shift, scale, out)


@njit(cache=True)
def _bn_infer_affine(gamma, beta, running_mean, running_var, eps):
    """(center, scale, shift) of the inference forward, float64."""
    nc = gamma.shape[0]
    mu = np.empty(nc)
    scale = np.empty(nc)
    shift = np.empty(nc)
    for c in range(nc):
        mu[c] = running_mean[c]
        scale[c] = gamma[c] / math.sqrt(running_var[c] + eps)
        shift[c] = beta[c]
    return mu, scale, shift


def batchnorm_forward_infer(x3, gamma, beta, running_mean, running_var, eps, out):
    """out = (x - running_mean) / sqrt(running_var + eps) * gamma + beta, per channel."""
    mu, scale, shift = _bn_infer_affine(gamma, beta, running_mean, running_var, eps)
    _bn_apply(x3, x3, mu, np.zeros(x3.shape[1]), shift, scale, out)


def _bn_backward(x3, grad_out3, gamma, center, invstd, train, accumulate, grad_in3, grad_gamma,
                 grad_beta):
    """Both backward passes, with xhat = (x - center) * invstd and M = N*S:
    grad_beta = sum g, grad_gamma = sum g * xhat (added into them with ``accumulate``), and
    grad_in = gamma * invstd * g, minus gamma * invstd * (sum g + xhat * sum g * xhat) / M in
    training mode."""
    sums = np.empty((2, x3.shape[1]))
    _bn_sums(x3, grad_out3, center, 2, sums)
    a, b, k = _bn_backward_affine(sums, x3.shape[0] * x3.shape[2], gamma, invstd, train,
                                  accumulate, grad_gamma, grad_beta)
    _bn_apply(x3, grad_out3, center, a, b, k, grad_in3)


@njit(cache=True)
def _bn_backward_affine(sums, count, gamma, invstd, train, accumulate, grad_gamma, grad_beta):
    """grad_beta, grad_gamma from the sums, and the (a, b, k) of grad_in = a * g + k * (x -
    center) + b."""
    nc = sums.shape[1]
    a = np.empty(nc)
    k = np.zeros(nc)
    b = np.zeros(nc)
    for c in range(nc):
        inv = invstd[c]
        gi = gamma[c] * inv
        sb, sg = sums[0, c], sums[1, c] * inv
        grad_beta[c] = grad_beta[c] + sb if accumulate else sb
        grad_gamma[c] = grad_gamma[c] + sg if accumulate else sg
        a[c] = gi
        if train:
            k[c] = -gi * inv * inv * sums[1, c] / count
            b[c] = -gi * sums[0, c] / count
    return a, b, k


def batchnorm_backward(x3, grad_out3, gamma, mean, invstd, accumulate, grad_in3, grad_gamma,
                       grad_beta):
    """Gradient of the training-mode forward, with xhat = (x - mean) * invstd, M = N*S:
    grad_beta = sum g, grad_gamma = sum g * xhat (+= with ``accumulate``),
    grad_in = gamma * invstd * (g - sum g / M - xhat * sum (g * xhat) / M)."""
    _bn_backward(x3, grad_out3, gamma, mean.astype(np.float64), invstd.astype(np.float64), True,
                 accumulate, grad_in3, grad_gamma, grad_beta)


def batchnorm_backward_infer(x3, grad_out3, gamma, running_mean, running_var, eps, accumulate,
                             grad_in3, grad_gamma, grad_beta):
    """Gradient of the inference-mode forward (statistics fixed): with
    invstd = 1/sqrt(running_var + eps), grad_in = g * gamma * invstd,
    grad_gamma = sum g * (x - running_mean) * invstd, grad_beta = sum g (+= with
    ``accumulate``)."""
    invstd = 1.0 / np.sqrt(running_var.astype(np.float64) + eps)
    _bn_backward(x3, grad_out3, gamma, running_mean.astype(np.float64), invstd, False, accumulate,
                 grad_in3, grad_gamma, grad_beta)


@njit(cache=True)
def batchnorm_update_running(running_mean, running_var, mean, invstd, eps, momentum, count):
    """In place: running = momentum * running + (1 - momentum) * batch statistic; the batch
    variance 1/invstd**2 - eps made unbiased by count / (count - 1) (count > 1)."""
    unbias = count / (count - 1.0) if count > 1 else 1.0
    for c in range(running_mean.shape[0]):
        inv = np.float64(invstd[c])
        var = max(1.0 / (inv * inv) - eps, 0.0) * unbias
        running_mean[c] = momentum * running_mean[c] + (1.0 - momentum) * mean[c]
        running_var[c] = momentum * running_var[c] + (1.0 - momentum) * var


# ---------------------------------------------------------------------------------------------
# layer normalization
# ---------------------------------------------------------------------------------------------

@njit(cache=True, fastmath=_FASTMATH)
def _ln_row(x, gamma, beta, eps, out, mean, invstd, r):
    """Row r: two-pass float64 statistics, then the affine normalization."""
    d = x.shape[1]
    acc = 0.0
    for j in range(d):
        acc += x[r, j]
    mu = acc / d
    acc = 0.0
    for j in range(d):
        t = x[r, j] - mu
        acc += t * t
    inv = 1.0 / math.sqrt(acc / d + eps)
    mean[r] = mu
    invstd[r] = inv
    for j in range(d):
        out[r, j] = (x[r, j] - mu) * inv * gamma[j] + beta[j]


@split_kernel(0, _PAR_MIN)
def layernorm_forward(x2, gamma, beta, eps, out, mean, invstd):
    """Each row of x2 (R, D) normalized over its D features (biased variance):
    out = (x - mean) * invstd * gamma + beta; writes mean (R,) and invstd (R,)."""
    rows = x2.shape[0]
    for r in prange(rows):
        _ln_row(x2, gamma, beta, eps, out, mean, invstd, r)


@njit(cache=True, fastmath=_FASTMATH)
def _ln_backward_rows(x, g, gamma, mean, invstd, lo, hi, grad_in, part):
    """Rows [lo, hi): grad_in, and part[0] += g * xhat, part[1] += g (float64, per feature)."""
    d = x.shape[1]
    for j in range(d):
        part[0, j] = 0.0
        part[1, j] = 0.0
    for r in range(lo, hi):
        mu = np.float64(mean[r])
        inv = np.float64(invstd[r])
        s1 = 0.0
        s2 = 0.0
        for j in range(d):
            xh = (x[r, j] - mu) * inv
            gg = g[r, j] * gamma[j]
            s1 += gg
            s2 += gg * xh
            part[0, j] += g[r, j] * xh
            part[1, j] += g[r, j]
        s1 /= d
        s2 /= d
        for j in range(d):
            xh = (x[r, j] - mu) * inv
            grad_in[r, j] = inv * (g[r, j] * gamma[j] - s1 - xh * s2)


@split_kernel(0, _PAR_MIN)
def layernorm_backward(x2, grad_out2, gamma, mean, invstd, accumulate, grad_in2, grad_gamma,
                       grad_beta):
    """With xhat = (x - mean) * invstd per row and gg = g * gamma:
    grad_in = invstd * (gg - mean_row(gg) - xhat * mean_row(gg * xhat)),
    grad_gamma = sum over rows of g * xhat, grad_beta = sum over rows of g (both added into the
    existing values with ``accumulate``)."""
    rows, d = x2.shape
    nch = min(rows, _CHUNKS)
    part = np.empty((nch, 2, d))
    for k in prange(nch):
        _ln_backward_rows(x2, grad_out2, gamma, mean, invstd, k * rows // nch,
                          (k + 1) * rows // nch, grad_in2, part[k])
    for j in range(d):
        a = 0.0
        b = 0.0
        for k in range(nch):
            a += part[k, 0, j]
            b += part[k, 1, j]
        grad_gamma[j] = grad_gamma[j] + a if accumulate else a
        grad_beta[j] = grad_beta[j] + b if accumulate else b
