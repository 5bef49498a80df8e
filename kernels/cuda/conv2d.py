"""2-D convolution kernels (NCHW input, OIHW weight) on the GPU: implicit GEMM.

Each pass is the shared tiled GEMM (kernels/cuda/_gemm.py) with index functions that gather the
im2col matrix on the fly (the matrix is never stored; positions outside the image read as 0):

* forward: out[n, k, p] = sum_r w[k, r] * col[r, (n, p)] + b[k]; M = K, N = batch*OH*OW,
  K = C*KH*KW; the bias is added in the epilogue.
* backward input: grad_in[n, c, q] = sum_(k,kh,kw) w[k, c, kh, kw] * grad_out[n, k, oh, ow] over
  the output positions whose window covers input q (a gather: no atomics, every element written
  once); M = C, N = batch*H*W, K = K*KH*KW.
* backward weight: grad_w[k, r] = sum_(n, p) grad_out[n, k, p] * col[r, (n, p)]; M = K,
  N = C*KH*KW, K = batch*OH*OW: a long reduction, so split-K (deterministic) usually applies.
* backward bias: one block per output channel, a shared-memory block sum.

``geo`` = (C, H, W, KH, KW, OH, OW, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w).
"""
import numpy as np
from numba import cuda

from ._common import MAX_THREADS, block_sum, config, kernel
from ._gemm import gemm, ld_rows


@cuda.jit(device=True)
def _ld_col(x, geo, r, j):
    """im2col[r, j] of the input x: r = (c, kh, kw), j = (n, oh, ow); 0 outside the image."""
    C, H, W, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw = geo
    P = OH * OW
    n = j // P
    p = j - n * P
    oh = p // OW
    ow = p - oh * OW
    KK = KH * KW
    c = r // KK
    q = r - c * KK
    kh = q // KW
    kw = q - kh * KW
    ih = oh * sh - ph + kh * dh
    iw = ow * sw - pw + kw * dw
    if ih >= 0 and ih < H and iw >= 0 and iw < W:
        return x[n, c, ih, iw]
    return x.dtype.type(0)


@cuda.jit(device=True)
def _store_out(out, b, geo, k, j, v):
    """out[n, k, p] = v + b[k] with j = (n, p); out viewed as (N, K, OH*OW)."""
    P = geo[5] * geo[6]
    n = j // P
    out[n, k, j - n * P] = v + b[k]


@cuda.jit(device=True)
def _ld_w_ct(w, geo, c, r):
    """A of backward input: w[k, c, kh, kw] with r = (k, kh, kw)."""
    KK = geo[3] * geo[4]
    k = r // KK
    q = r - k * KK
    kh = q // geo[4]
    return w[k, c, kh, q - kh * geo[4]]


@cuda.jit(device=True)
def _ld_gout_at_input(g, geo, r, j):
    """B of backward input: grad_out[n, k, oh, ow] with r = (k, kh, kw), j = (n, ih, iw) and
    (oh, ow) the output whose tap (kh, kw) reads input (ih, iw); 0 when there is none."""
    C, H, W, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw = geo
    HW = H * W
    n = j // HW
    q = j - n * HW
    ih = q // W
    iw = q - ih * W
    KK = KH * KW
    k = r // KK
    t = r - k * KK
    kh = t // KW
    kw = t - kh * KW
    th = ih + ph - kh * dh
    tw = iw + pw - kw * dw
    if th < 0 or tw < 0:
        return g.dtype.type(0)
    oh = th // sh
    ow = tw // sw
    if oh * sh != th or ow * sw != tw or oh >= OH or ow >= OW:
        return g.dtype.type(0)
    return g[n, k, oh, ow]


@cuda.jit(device=True)
def _store_plain3(out, unused, geo, c, j, v):
    """out[n, c, q] = v with j = (n, q); out viewed as (N, C, H*W)."""
    HW = geo[1] * geo[2]
    n = j // HW
    out[n, c, j - n * HW] = v


@cuda.jit(device=True)
def _ld_gout_rows(g, geo, k, r):
    """A of backward weight: grad_out[n, k, p] with r = (n, p); g viewed as (N, K, OH*OW)."""
    P = geo[5] * geo[6]
    n = r // P
    return g[n, k, r - n * P]


@cuda.jit(device=True)
def _ld_col_t(x, geo, r, j):
    """B of backward weight: im2col transposed, B[r, j] = col[j, r]."""
    return _ld_col(x, geo, j, r)


@cuda.jit(device=True)
def _store_rows(out, unused, geo, m, j, v):
    out[m, j] = v


_fwd = gemm("conv2d._fwd", 2, 4, 3, 1, 13, ld_rows, _ld_col, _store_out,
            a_kfast=True, b_kfast=False)
_bwd_in = gemm("conv2d._bwd_in", 4, 4, 3, 3, 13, _ld_w_ct, _ld_gout_at_input, _store_plain3,
               a_kfast=True, b_kfast=False)
_bwd_w = gemm("conv2d._bwd_w", 3, 4, 2, 2, 13, _ld_gout_rows, _ld_col_t, _store_rows,
              a_kfast=True, b_kfast=True)


def _geo(x_shape, w_shape, o_shape, sh, sw, ph, pw, dh, dw):
    _, C, H, W = x_shape
    _, _, KH, KW = w_shape
    return (C, H, W, KH, KW, o_shape[2], o_shape[3], sh, sw, ph, pw, dh, dw)


def conv2d_forward(x, w, b, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, out):
    """out (N,K,OH,OW) = conv(x (N,C,H,W), w (K,C,KH,KW)) + b (K,)."""
    N, C, H, W = x.shape
    K, _, KH, KW = w.shape
    OH, OW = out.shape[2], out.shape[3]
    geo = _geo(x.shape, w.shape, out.shape, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w)
    _fwd(w.reshape(K, C * KH * KW), x, out.reshape(N, K, OH * OW), b,
         K, N * OH * OW, C * KH * KW, geo)


def conv2d_backward_input(grad_out, w, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, grad_in):
    """grad_in (N,C,H,W) = d(sum(out * grad_out)) / dx, every element written."""
    N, C, H, W = grad_in.shape
    K, _, KH, KW = w.shape
    geo = _geo(grad_in.shape, w.shape, grad_out.shape, stride_h, stride_w, pad_h, pad_w,
               dil_h, dil_w)
    gi3 = grad_in.reshape(N, C, H * W)
    _bwd_in(w, grad_out, gi3, gi3, C, N * H * W, K * KH * KW, geo)


def conv2d_backward_weight(x, grad_out, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, grad_w):
    """grad_w (K,C,KH,KW) = d(sum(out * grad_out)) / dw."""
    N, C, H, W = x.shape
    K, _, KH, KW = grad_w.shape
    OH, OW = grad_out.shape[2], grad_out.shape[3]
    geo = _geo(x.shape, grad_w.shape, grad_out.shape, stride_h, stride_w, pad_h, pad_w,
               dil_h, dil_w)
    gw2 = grad_w.reshape(K, C * KH * KW)
    _bwd_w(grad_out.reshape(N, K, OH * OW), x, gw2, gw2, K, C * KH * KW, N * OH * OW, geo)


@kernel("A3 A1")
def _bias_grad(g3, grad_b):
    """One block per channel k (grid-stride over channels): grad_b[k] = sum of g3[:, k, :]."""
    sh = cuda.shared.array(MAX_THREADS, np.float64)
    N, K, P = g3.shape
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    for k in range(cuda.blockIdx.x, K, cuda.gridDim.x):
        acc = 0.0
        for e in range(t, N * P, nt):
            n = e // P
            acc += g3[n, k, e - n * P]
        total = block_sum(sh, acc)
        if t == 0:
            grad_b[k] = total


def conv2d_backward_bias(grad_out, grad_b):
    """grad_b[k] = sum of grad_out[:, k] over the batch and positions."""
    N, K, OH, OW = grad_out.shape
    if K:
        _bias_grad[min(K, config.max_blocks), config.threads](
            grad_out.reshape(N, K, OH * OW), grad_b)
