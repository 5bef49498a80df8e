"""Pieces the convolution strategies share (CPU): the pass codes of their one-function-per-
strategy workers, and the bias gradient's per-plane sums."""
import numpy as np
from numba import njit

from ._jit import HELPER

# Which pass a strategy's worker runs (one compiled function per strategy does all three, so a
# model that trains compiles it once).
FORWARD, BACKWARD_INPUT, BACKWARD_WEIGHT = 0, 1, 2


@njit(**HELPER)
def plane_sums(g, n0, n1, planes):
    """planes[n, k] = sum of g[n, k] over the positions, n0 <= n < n1, in the data's dtype.

    One BLAS matrix-vector product per image (g[n] as K x positions, times ones): vectorized,
    and the same bits wherever it is called from, so the bias gradient fused into a
    weight-gradient pass equals conv2d_backward_bias's. (A loop in a fixed order, which LLVM may
    not vectorize without fastmath, ran at a third of the speed: 0.65 ms of a first layer's
    2.3 ms backward pass, batch 128, K 32, 28x28.)"""
    K, P = g.shape[1], g.shape[2] * g.shape[3]
    ones = np.ones(P, g.dtype)
    for n in range(n0, n1):
        np.dot(g[n].reshape(K, P), ones, planes[n])


@njit(cache=True)
def bias_gradient(planes, accumulate, grad_b):
    """grad_b[k] = (or +=, with ``accumulate``) the sum over n of planes[n, k], in float64 and in
    order of n."""
    N, K = planes.shape
    for k in range(K):
        s = 0.0
        for n in range(N):
            s += planes[n, k]
        grad_b[k] = grad_b[k] + s if accumulate else s
