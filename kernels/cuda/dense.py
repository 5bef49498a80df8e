"""Dense (fully connected) layer kernels on the GPU: variants of the shared tiled GEMM
(kernels/cuda/_gemm.py), one launch each (split-K partial tiles are summed by the last block).

* forward: out = x @ w + b, the bias added in the GEMM epilogue; with an activation
  (``dense_forward_activation``) the epilogue also applies it, writing both.
* backward input: grad_in = grad_out @ w.T (w read transposed, no copy).
* backward weight: grad_w = x.T @ grad_out, and grad_b = column sums of grad_out from the same
  GEMM: A gets one extra row of ones (row I), whose output row is the bias gradient. With
  ``accumulate`` (passed in the epilogue's ``act`` slot) the epilogue adds into both.
"""
import numpy as np
from numba import cuda

from .. import scalar
from ._common import flat, launcher
from ._gemm import cols, gemm, rows
from .activations import _activate

# Operands are passed flat, with geo = (row length of A, row length of B) as stored; x.T of the
# weight gradient (with its row of ones) is read through an index function instead.
_A_ROWS, _B_ROWS, _B_COLS = rows(0), rows(1), cols(1)


@cuda.jit(device=True)
def _store_bias(out, b, unused, geo, act, alpha, m, n, v):
    out[m, n] = v + b[n]


@cuda.jit(device=True)
def _store_bias_act(out, b, pre, geo, act, alpha, m, n, v):
    z = v + b[n]
    pre[m, n] = z
    out[m, n] = _activate(act, z, alpha)


@cuda.jit(device=True)
def _store_plain(out, unused, unused_e, geo, act, alpha, m, n, v):
    out[m, n] = v


@cuda.jit(device=True)
def _ld_xt_ones(x, geo, T, m, k, c0, c1, c2):
    """A = [x.T; ones]: (I + 1) x N."""
    if m == x.shape[1]:
        return x.dtype.type(1)
    return x[np.uint64(k), np.uint64(m)]


@cuda.jit(device=True)
def _store_w_b(grad_w, grad_b, unused, geo, act, alpha, m, n, v):
    """Row I of the product is grad_b, the others grad_w; ``act`` non-zero: add into them."""
    if m == grad_w.shape[0]:
        grad_b[n] = grad_b[n] + v if act else v
    else:
        grad_w[m, n] = grad_w[m, n] + v if act else v


_fwd = gemm("dense._fwd", (1, 1, 2, 1, 1), 2, _A_ROWS, _B_COLS, _store_bias,
            a_kfast=True, b_kfast=False)
_fwd_act = gemm("dense._fwd_act", (1, 1, 2, 1, 2), 2, _A_ROWS, _B_COLS, _store_bias_act,
                a_kfast=True, b_kfast=False)
_bwd_in = gemm("dense._bwd_in", (1, 1, 2, 2, 1), 2, _A_ROWS, _B_ROWS, _store_plain,
               a_kfast=True, b_kfast=True)
_bwd_w = gemm("dense._bwd_w", (2, 1, 2, 1, 1), 2, _ld_xt_ones, _B_COLS, _store_w_b,
              a_kfast=False, b_kfast=False)


@launcher
def dense_forward(x, w, b, out):
    """out (N, U) = x (N, I) @ w (I, U) + b (U,)."""
    n, i = x.shape
    _fwd(flat(x), flat(w), out, b, n, w.shape[1], i, (i, w.shape[1]))


@launcher
def dense_forward_activation(x, w, b, activation, alpha, pre, out):
    """pre = x @ w + b and out = its activation (``activation``: a code of
    kernels/scalar.py ACTIVATION_CODES, ``alpha`` its parameter), in one launch."""
    scalar.fused_activation(activation, pre, out)
    n, i = x.shape
    _fwd_act(flat(x), flat(w), out, b, n, w.shape[1], i, (i, w.shape[1]), E=pre,
             act=activation, alpha=alpha)


@launcher
def dense_backward_input(grad_out, w, grad_in):
    """grad_in (N, I) = grad_out (N, U) @ w.T."""
    n, u = grad_out.shape
    _bwd_in(flat(grad_out), flat(w), grad_in, grad_in, n, w.shape[0], u, (u, u))


@launcher
def dense_backward_weight(x, grad_out, accumulate, grad_w, grad_b):
    """grad_w (I, U) = x.T @ grad_out; grad_b (U,) = grad_out summed over the batch; both added
    into the existing gradients with ``accumulate``."""
    n, i = x.shape
    _bwd_w(x, flat(grad_out), grad_w, grad_b, i + 1, grad_out.shape[1], n,
           (i, grad_out.shape[1]), act=int(bool(accumulate)))
