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
``batchnorm_backward(x3, grad_out3, gamma, mean, invstd, grad_in3, grad_gamma, grad_beta)``
    gradient of the training-mode forward (the batch statistics depend on x).
``batchnorm_backward_infer(x3, grad_out3, gamma, running_mean, running_var, eps, grad_in3,
grad_gamma, grad_beta)``
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
``layernorm_backward(x2, grad_out2, gamma, mean, invstd, grad_in2, grad_gamma, grad_beta)``

Precision: sums run in float64, two-pass (mean first, then squared deviations from it), and the
normalization itself is evaluated in float64, so float32 inputs with a mean far from zero keep
their precision. Reductions over the batch are split into a fixed number of row chunks whose
float64 partials are added in order: results do not depend on the thread count.

Parallelism: ``prange`` over row chunks (reductions), images or rows (elementwise passes) once an
array has ``_PAR_MIN`` elements; serial loops below that. Inner loops run along contiguous memory
(along S, or along C when S = 1).
"""
import math

import numpy as np
from numba import njit, prange

_FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

# Elements at or above which the prange paths run (thread start-up costs a few us; these
# passes move ~1-2 ns an element serially).
_PAR_MIN = 1 << 15
# Fixed number of row chunks of a reduction over the batch (deterministic partial sums).
_CHUNKS = 16


# ---------------------------------------------------------------------------------------------
# batch normalization helpers
# ---------------------------------------------------------------------------------------------

@njit(cache=True, fastmath=_FASTMATH)
def _bn_chunk_sums(x, g, center, use_g, squared, lo, hi, part):
    """part[c] = sum over n in [lo, hi) and s of v, float64, where v is (x - center[c]) squared
    when ``squared``, times g when ``use_g``, else (x - center[c]); g is grad_out (N, C, S)."""
    nc, ns = x.shape[1], x.shape[2]
    for c in range(nc):
        part[c] = 0.0
    for n in range(lo, hi):
        for c in range(nc):
            m = center[c]
            acc = 0.0
            if use_g:
                for s in range(ns):
                    acc += g[n, c, s] * (x[n, c, s] - m)
            elif squared:
                for s in range(ns):
                    d = x[n, c, s] - m
                    acc += d * d
            else:
                for s in range(ns):
                    acc += x[n, c, s] - m
            part[c] += acc


@njit(cache=True, fastmath=_FASTMATH)
def _bn_chunk_gsums(g, lo, hi, part):
    """part[c] = sum over n in [lo, hi) and s of g[n, c, s], float64."""
    nc, ns = g.shape[1], g.shape[2]
    for c in range(nc):
        part[c] = 0.0
    for n in range(lo, hi):
        for c in range(nc):
            acc = 0.0
            for s in range(ns):
                acc += g[n, c, s]
            part[c] += acc


@njit(cache=True, parallel=True)
def _bn_channel_sums(x, g, center, use_g, squared, parallel, out):
    """out[c] = sum over (n, s) of the value _bn_chunk_sums describes, in fixed row chunks."""
    n = x.shape[0]
    nch = min(n, _CHUNKS)
    part = np.empty((nch, x.shape[1]))
    if parallel:
        for k in prange(nch):
            _bn_chunk_sums(x, g, center, use_g, squared, k * n // nch, (k + 1) * n // nch,
                           part[k])
    else:
        for k in range(nch):
            _bn_chunk_sums(x, g, center, use_g, squared, k * n // nch, (k + 1) * n // nch,
                           part[k])
    for c in range(x.shape[1]):
        acc = 0.0
        for k in range(nch):
            acc += part[k, c]
        out[c] = acc


@njit(cache=True, parallel=True)
def _bn_channel_gsums(g, parallel, out):
    """out[c] = sum over (n, s) of g[n, c, s], in fixed row chunks."""
    n = g.shape[0]
    nch = min(n, _CHUNKS)
    part = np.empty((nch, g.shape[1]))
    if parallel:
        for k in prange(nch):
            _bn_chunk_gsums(g, k * n // nch, (k + 1) * n // nch, part[k])
    else:
        for k in range(nch):
            _bn_chunk_gsums(g, k * n // nch, (k + 1) * n // nch, part[k])
    for c in range(g.shape[1]):
        acc = 0.0
        for k in range(nch):
            acc += part[k, c]
        out[c] = acc


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


@njit(cache=True, parallel=True, fastmath=_FASTMATH)
def _bn_apply(x, g, center, a, b, k, out):
    """out = a * g + k * (x - center) + b per channel: parallel over images, or over the
    channels of a single image."""
    if x.size < _PAR_MIN:
        for n in range(x.shape[0]):
            _bn_image(x, g, center, a, b, k, n, out)
    elif x.shape[0] > 1:
        for n in prange(x.shape[0]):
            _bn_image(x, g, center, a, b, k, n, out)
    else:
        for c in prange(x.shape[1]):
            _bn_segment(x, g, center, a, b, k, 0, c, out)


# ---------------------------------------------------------------------------------------------
# batch normalization
# ---------------------------------------------------------------------------------------------

@njit(cache=True)
def batchnorm_forward_train(x3, gamma, beta, eps, out, mean, invstd):
    """Per-channel batch statistics of x3 (N, C, S) over N and S (biased variance), and
    out = (x - mean) * invstd * gamma + beta; writes mean (C,) and invstd (C,)."""
    nc = x3.shape[1]
    count = x3.shape[0] * x3.shape[2]
    par = x3.size >= _PAR_MIN
    zero = np.zeros(nc)
    mu = np.empty(nc)
    _bn_channel_sums(x3, x3, zero, False, False, par, mu)
    for c in range(nc):
        mu[c] /= count
    var = np.empty(nc)
    _bn_channel_sums(x3, x3, mu, False, True, par, var)
    scale = np.empty(nc)
    shift = np.empty(nc)
    for c in range(nc):
        inv = 1.0 / math.sqrt(var[c] / count + eps)
        mean[c] = mu[c]
        invstd[c] = inv
        scale[c] = gamma[c] * inv
        shift[c] = beta[c]
    _bn_apply(x3, x3, mu, zero, shift, scale, out)


@njit(cache=True)
def batchnorm_forward_infer(x3, gamma, beta, running_mean, running_var, eps, out):
    """out = (x - running_mean) / sqrt(running_var + eps) * gamma + beta, per channel."""
    nc = x3.shape[1]
    mu = np.empty(nc)
    scale = np.empty(nc)
    shift = np.empty(nc)
    for c in range(nc):
        mu[c] = running_mean[c]
        scale[c] = gamma[c] / math.sqrt(running_var[c] + eps)
        shift[c] = beta[c]
    _bn_apply(x3, x3, mu, np.zeros(nc), shift, scale, out)


@njit(cache=True)
def batchnorm_backward(x3, grad_out3, gamma, mean, invstd, grad_in3, grad_gamma, grad_beta):
    """Gradient of the training-mode forward, with xhat = (x - mean) * invstd, M = N*S:
    grad_beta = sum g, grad_gamma = sum g * xhat,
    grad_in = gamma * invstd * (g - grad_beta / M - xhat * grad_gamma / M)."""
    nc = x3.shape[1]
    count = x3.shape[0] * x3.shape[2]
    par = x3.size >= _PAR_MIN
    mu = np.empty(nc)
    for c in range(nc):
        mu[c] = mean[c]
    sg = np.empty(nc)
    sgx = np.empty(nc)
    _bn_channel_gsums(grad_out3, par, sg)
    _bn_channel_sums(x3, grad_out3, mu, True, False, par, sgx)
    a = np.empty(nc)
    k = np.empty(nc)
    b = np.empty(nc)
    for c in range(nc):
        inv = np.float64(invstd[c])
        gi = gamma[c] * inv
        grad_beta[c] = sg[c]
        grad_gamma[c] = sgx[c] * inv
        a[c] = gi
        k[c] = -gi * inv * inv * sgx[c] / count
        b[c] = -gi * sg[c] / count
    _bn_apply(x3, grad_out3, mu, a, b, k, grad_in3)


@njit(cache=True)
def batchnorm_backward_infer(x3, grad_out3, gamma, running_mean, running_var, eps, grad_in3,
                             grad_gamma, grad_beta):
    """Gradient of the inference-mode forward (statistics fixed): with
    invstd = 1/sqrt(running_var + eps), grad_in = g * gamma * invstd,
    grad_gamma = sum g * (x - running_mean) * invstd, grad_beta = sum g."""
    nc = x3.shape[1]
    par = x3.size >= _PAR_MIN
    mu = np.empty(nc)
    for c in range(nc):
        mu[c] = running_mean[c]
    sg = np.empty(nc)
    sgx = np.empty(nc)
    _bn_channel_gsums(grad_out3, par, sg)
    _bn_channel_sums(x3, grad_out3, mu, True, False, par, sgx)
    a = np.empty(nc)
    zero = np.zeros(nc)
    for c in range(nc):
        inv = 1.0 / math.sqrt(running_var[c] + eps)
        grad_beta[c] = sg[c]
        grad_gamma[c] = sgx[c] * inv
        a[c] = gamma[c] * inv
    _bn_apply(x3, grad_out3, mu, a, zero, zero, grad_in3)


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


@njit(cache=True, parallel=True)
def layernorm_forward(x2, gamma, beta, eps, out, mean, invstd):
    """Each row of x2 (R, D) normalized over its D features (biased variance):
    out = (x - mean) * invstd * gamma + beta; writes mean (R,) and invstd (R,)."""
    rows = x2.shape[0]
    if x2.size < _PAR_MIN:
        for r in range(rows):
            _ln_row(x2, gamma, beta, eps, out, mean, invstd, r)
    else:
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


@njit(cache=True, parallel=True)
def layernorm_backward(x2, grad_out2, gamma, mean, invstd, grad_in2, grad_gamma, grad_beta):
    """With xhat = (x - mean) * invstd per row and gg = g * gamma:
    grad_in = invstd * (gg - mean_row(gg) - xhat * mean_row(gg * xhat)),
    grad_gamma = sum over rows of g * xhat, grad_beta = sum over rows of g."""
    rows, d = x2.shape
    nch = min(rows, _CHUNKS)
    part = np.empty((nch, 2, d))
    if x2.size < _PAR_MIN:
        for k in range(nch):
            _ln_backward_rows(x2, grad_out2, gamma, mean, invstd, k * rows // nch,
                              (k + 1) * rows // nch, grad_in2, part[k])
    else:
        for k in prange(nch):
            _ln_backward_rows(x2, grad_out2, gamma, mean, invstd, k * rows // nch,
                              (k + 1) * rows // nch, grad_in2, part[k])
    for j in range(d):
        a = 0.0
        b = 0.0
        for k in range(nch):
            a += part[k, 0, j]
            b += part[k, 1, j]
        grad_gamma[j] = a
        grad_beta[j] = b
