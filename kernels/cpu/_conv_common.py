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

    The sum runs in 8 interleaved accumulators (kept in registers, and added up as one vector
    by LLVM) combined in a fixed order at the end, without fastmath: the same bits wherever it
    is compiled, so the bias gradient fused into a weight-gradient pass equals
    conv2d_backward_bias's."""
    K, P = g.shape[1], g.shape[2] * g.shape[3]
    gf = g.reshape(-1)
    P8 = P - P % 8
    zero = np.zeros(1, g.dtype)[0]
    for n in range(n0, n1):
        for k in range(K):
            base = np.uint64((n * K + k) * P)
            a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = zero
            for p0 in range(0, P8, 8):
                q = base + np.uint64(p0)
                a0 += gf[q]
                a1 += gf[q + np.uint64(1)]
                a2 += gf[q + np.uint64(2)]
                a3 += gf[q + np.uint64(3)]
                a4 += gf[q + np.uint64(4)]
                a5 += gf[q + np.uint64(5)]
                a6 += gf[q + np.uint64(6)]
                a7 += gf[q + np.uint64(7)]
            s = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))
            for p in range(P8, P):
                s += gf[base + np.uint64(p)]
            planes[n, k] = s


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
