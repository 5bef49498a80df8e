"""2-D convolution kernels (NCHW input, OIHW weight) on the GPU: implicit GEMM.

Each pass is the shared tiled GEMM (kernels/cuda/_gemm.py) with index functions that gather the
im2col matrix on the fly (the matrix is never stored; positions outside the image read as 0):

* forward: out[n, k, p] = sum_r w[k, r] * col[r, (n, p)] + b[k]; M = K, N = batch*OH*OW,
  K = C*KH*KW; the bias is added in the epilogue, and with an activation
  (``conv2d_forward_activation``) the epilogue also applies it, writing both.
* backward input: grad_in[n, c, q] = sum_(k,kh,kw) w[k, c, kh, kw] * grad_out[n, k, oh, ow] over
  the output positions whose window covers input q (a gather: no atomics, every element written
  once); M = C, N = batch*H*W, K = K*KH*KW.
* backward weight: grad_w[k, r] = sum_(n, p) grad_out[n, k, p] * col[r, (n, p)]; M = K,
  N = C*KH*KW, K = batch*OH*OW: a long reduction, so split-K (deterministic) usually applies.
* backward bias: one block per output channel, a shared-memory block sum; or, with the weight
  gradient (``conv2d_backward_params``), one more output column of that GEMM against ones.
* ``accumulate`` (weight and bias gradients): the epilogue (or the bias kernel's store) adds into
  the existing gradient instead of storing; the GEMM carries it in its ``act`` slot.

No integer division in the K loop: the GEMM's row/column contexts decompose the M and N indices
once per thread, and a small int64 table (built on the host, cached per geometry on the device)
holds the offsets of each K index. Operands are passed flat (1-D) and addressed with them; the
loads index with unsigned integers (every address they form is in range), which spares the
negative-index wrap code of signed indexing.

``geo`` = (C, H, W, KH, KW, OH, OW, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, K).
"""
from collections import OrderedDict

import numpy as np
from numba import cuda

from .. import scalar
from ._common import (A1, A3, Bool, MAX_THREADS, block_sum, config, flat, kernel, launcher, scratch,
                      view)
from ._gemm import Affine, gemm
from .activations import _activate

_NGEO = 14


@cuda.jit(device=True)
def _inside(i, n):
    """0 <= i < n, as one 32-bit unsigned compare (``_geo`` keeps |i| and n below 2**31)."""
    return np.uint32(i) < np.uint32(n)


# ---------------------------------------------------------------------------------- forward
@cuda.jit(device=True)
def _fwd_col(x, geo, j):
    """Column j = (n, oh, ow) of im2col: (offset of x[n, 0, ih0, iw0], ih0, iw0)."""
    C, H, W, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw, K = geo
    P = OH * OW
    n = j // P
    p = j - n * P
    oh = p // OW
    ih0 = oh * sh - ph
    iw0 = (p - oh * OW) * sw - pw
    return n * C * H * W + ih0 * W + iw0, ih0, iw0


@cuda.jit(device=True)
def _fwd_ld_x(x, geo, T, r, j, base, ih0, iw0):
    """im2col[r, j]: T[r] = (offset of tap r = (c, kh, kw), kh*dh, kw*dw); 0 outside the image."""
    u = np.uint64(r)
    ih = ih0 + T[u, 1]
    iw = iw0 + T[u, 2]
    if _inside(ih, geo[1]) and _inside(iw, geo[2]):
        return x[np.uint64(base + T[u, 0])]
    return x.dtype.type(0)


@cuda.jit(device=True)
def _fwd_w_row(w, geo, k):
    """Row k of the weight matrix (K, C*KH*KW), passed flat."""
    return k * geo[0] * geo[3] * geo[4]


_FWD_W = Affine(_fwd_w_row)


@cuda.jit(device=True)
def _fwd_store(out, b, unused, geo, act, alpha, k, j, v):
    """out[n, k, p] = v + b[k] with j = (n, p); out viewed as (N, K, OH*OW)."""
    P = geo[5] * geo[6]
    n = j // P
    out[n, k, j - n * P] = v + b[k]


@cuda.jit(device=True)
def _fwd_store_act(out, b, pre, geo, act, alpha, k, j, v):
    """pre[n, k, p] = v + b[k] and out[n, k, p] = its activation."""
    P = geo[5] * geo[6]
    n = j // P
    z = v + b[k]
    pre[n, k, j - n * P] = z
    out[n, k, j - n * P] = _activate(act, z, alpha)


# ---------------------------------------------------------------------------------- backward input
@cuda.jit(device=True)
def _bin_row(w, geo, c):
    return c * geo[3] * geo[4], 0, 0


@cuda.jit(device=True)
def _bin_ld_w(w, geo, T, c, r, c_off, u1, u2):
    """A[c, r] = w[k, c, kh, kw], r = (k, kh, kw): T[r, 0] = offset of w[k, 0, kh, kw]."""
    return w[np.uint64(T[np.uint64(r), 0] + c_off)]


@cuda.jit(device=True)
def _bin_col(g, geo, j):
    """Column j = (n, ih, iw): (offset of grad_out[n], ih + pad_h, iw + pad_w)."""
    C, H, W, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw, K = geo
    HW = H * W
    n = j // HW
    q = j - n * HW
    ih = q // W
    return n * K * OH * OW, ih + ph, q - ih * W + pw


@cuda.jit(device=True)
def _bin_ld_g(g, geo, T, r, j, base, th0, tw0):
    """grad_out[n, k, oh, ow] for the output (oh, ow) whose tap (kh, kw) reads input (ih, iw);
    0 when there is none. T[r] = (_, offset of grad_out[0, k], kh*dh, kw*dw)."""
    sh, sw, OH, OW = geo[7], geo[8], geo[5], geo[6]
    u = np.uint64(r)
    oh = th0 - T[u, 2]
    ow = tw0 - T[u, 3]
    if sh != 1 or sw != 1:
        if oh < 0 or ow < 0:
            return g.dtype.type(0)
        th, tw = oh, ow
        oh = np.int64(np.uint32(th) // np.uint32(sh))      # th, tw >= 0: 32-bit division
        ow = np.int64(np.uint32(tw) // np.uint32(sw))
        if oh * sh != th or ow * sw != tw:
            return g.dtype.type(0)
    if _inside(oh, OH) and _inside(ow, OW):
        return g[np.uint64(base + T[u, 1] + oh * OW + ow)]
    return g.dtype.type(0)


@cuda.jit(device=True)
def _bin_store(gi, unused, unused_e, geo, act, alpha, c, j, v):
    """grad_in[n, c, q] = v with j = (n, q); grad_in viewed as (N, C, H*W)."""
    HW = geo[1] * geo[2]
    n = j // HW
    gi[n, c, j - n * HW] = v


# ---------------------------------------------------------------------------------- backward weight
@cuda.jit(device=True)
def _bw_row(g, geo, k):
    return k * geo[5] * geo[6], 0, 0


@cuda.jit(device=True)
def _bw_ld_g(g, geo, T, k, r, k_off, u1, u2):
    """A[k, r] = grad_out[n, k, p], r = (n, p): T[r, 3] = offset of grad_out[n, 0, p]."""
    return g[np.uint64(T[np.uint64(r), 3] + k_off)]


@cuda.jit(device=True)
def _bw_col(x, geo, j):
    """Column j = (c, kh, kw): (offset of x[0, c, kh*dh, kw*dw], kh*dh, kw*dw); the extra column
    j = C*KH*KW (bias gradient) is a column of ones, marked by offset -1."""
    C, H, W, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw, K = geo
    KK = KH * KW
    if j == C * KK:
        return -1, 0, 0
    c = j // KK
    q = j - c * KK
    kh = q // KW
    kw = q - kh * KW
    return c * H * W + kh * dh * W + kw * dw, kh * dh, kw * dw


@cuda.jit(device=True)
def _bw_ld_x(x, geo, T, r, j, off, dkh, dkw):
    """im2col[j, r], r = (n, oh, ow): T[r] = (offset of x[n, 0, ih0, iw0], ih0, iw0, _)."""
    if off < 0:
        return x.dtype.type(1)
    u = np.uint64(r)
    ih = T[u, 1] + dkh
    iw = T[u, 2] + dkw
    if _inside(ih, geo[1]) and _inside(iw, geo[2]):
        return x[np.uint64(T[u, 0] + off)]
    return x.dtype.type(0)


@cuda.jit(device=True)
def _bw_store(gw, gb, unused, geo, act, alpha, k, j, v):
    """Column C*KH*KW is the bias gradient; ``act`` non-zero: add into the gradients."""
    if j == gw.shape[1]:
        gb[k] = gb[k] + v if act else v
    else:
        gw[k, j] = gw[k, j] + v if act else v


_fwd = gemm("conv2d._fwd", (1, 1, 3, 1, 1), _NGEO, _FWD_W, _fwd_ld_x, _fwd_store,
            a_kfast=True, b_kfast=False, b_ctx=_fwd_col)
_fwd_act = gemm("conv2d._fwd_act", (1, 1, 3, 1, 3), _NGEO, _FWD_W, _fwd_ld_x, _fwd_store_act,
                a_kfast=True, b_kfast=False, b_ctx=_fwd_col)
_bwd_in = gemm("conv2d._bwd_in", (1, 1, 3, 3, 1), _NGEO, _bin_ld_w, _bin_ld_g, _bin_store,
               a_kfast=True, b_kfast=False, a_ctx=_bin_row, b_ctx=_bin_col)
_bwd_w = gemm("conv2d._bwd_w", (1, 1, 2, 1, 1), _NGEO, _bw_ld_g, _bw_ld_x, _bw_store,
              a_kfast=True, b_kfast=True, a_ctx=_bw_row, b_ctx=_bw_col)


# ---------------------------------------------------------------------------------- K-index tables
_tables = OrderedDict()


def _table(kind, *key):
    """The int64 offset table of one pass and geometry, on the device (small LRU cache)."""
    k = (kind, *key)
    t = _tables.get(k)
    if t is None:
        t = cuda.to_device(_TABLE_BUILDERS[kind](*key))
        _tables[k] = t
        if len(_tables) > 32:
            _tables.popitem(last=False)
    else:
        _tables.move_to_end(k)
    return t


def _taps(C, KH, KW, dh, dw):
    c, kh, kw = (a.ravel() for a in np.meshgrid(np.arange(C), np.arange(KH), np.arange(KW),
                                               indexing="ij"))
    return c, kh * dh, kw * dw


def _fwd_table(C, H, W, KH, KW, dh, dw):
    """r = (c, kh, kw) -> (offset of x[0, c, kh*dh, kw*dw], kh*dh, kw*dw)."""
    c, dkh, dkw = _taps(C, KH, KW, dh, dw)
    return np.stack([c * H * W + dkh * W + dkw, dkh, dkw], axis=1).astype(np.int64)


def _bin_table(K, C, KH, KW, OH, OW, dh, dw):
    """r = (k, kh, kw) -> (offset of w[k, 0, kh, kw], offset of grad_out[0, k], kh*dh, kw*dw)."""
    k, dkh, dkw = _taps(K, KH, KW, dh, dw)
    kh, kw = dkh // max(dh, 1), dkw // max(dw, 1)
    return np.stack([k * C * KH * KW + kh * KW + kw, k * OH * OW, dkh, dkw],
                    axis=1).astype(np.int64)


def _bw_table(N, C, H, W, K, OH, OW, sh, sw, ph, pw):
    """r = (n, oh, ow) -> (offset of x[n, 0, ih0, iw0], ih0, iw0, offset of grad_out[n, 0, p])."""
    n, oh, ow = (a.ravel() for a in np.meshgrid(np.arange(N), np.arange(OH), np.arange(OW),
                                               indexing="ij"))
    ih0, iw0 = oh * sh - ph, ow * sw - pw
    return np.stack([n * C * H * W + ih0 * W + iw0, ih0, iw0, n * K * OH * OW + oh * OW + ow],
                    axis=1).astype(np.int64)


_TABLE_BUILDERS = {"fwd": _fwd_table, "bin": _bin_table, "bw": _bw_table}


def _geo(C, H, W, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw, K):
    """The geometry tuple; image coordinates must fit the kernels' 32-bit bounds checks."""
    for side, size, out, stride, pad, k, dil in (("height", H, OH, sh, ph, KH, dh),
                                                  ("width", W, OW, sw, pw, KW, dw)):
        reach = size + pad + max(out - 1, 0) * stride + max(k - 1, 0) * dil
        if reach >= 1 << 31:
            raise ValueError(f"conv2d: image {side} {size} with padding {pad}, stride {stride}, "
                             f"dilation {dil} and {out} outputs reaches coordinate {reach}; "
                             f"the CUDA kernels need coordinates below 2**31")
    return tuple(int(v) for v in (C, H, W, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw, K))


def _forward(variant, x, w, b, geometry, out, **epilogue):
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w = geometry
    N, C, H, W = x.shape
    K, _, KH, KW = w.shape
    OH, OW = out.shape[2], out.shape[3]
    geo = _geo(C, H, W, KH, KW, OH, OW, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, K)
    variant(flat(w), flat(x), view(out, N, K, OH * OW), b,
            K, N * OH * OW, C * KH * KW, geo, _table("fwd", C, H, W, KH, KW, dil_h, dil_w),
            **epilogue)


@launcher
def conv2d_forward(x, w, b, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, out):
    """out (N,K,OH,OW) = conv(x (N,C,H,W), w (K,C,KH,KW)) + b (K,)."""
    _forward(_fwd, x, w, b, (stride_h, stride_w, pad_h, pad_w, dil_h, dil_w), out)


@launcher
def conv2d_forward_activation(x, w, b, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
                              activation, alpha, pre, out):
    """pre = conv(x, w) + b and out = its activation (``activation``: a code of
    kernels/scalar.py ACTIVATION_CODES, ``alpha`` its parameter), in one launch."""
    scalar.fused_activation(activation, pre, out)
    N, K = out.shape[0], out.shape[1]
    _forward(_fwd_act, x, w, b, (stride_h, stride_w, pad_h, pad_w, dil_h, dil_w), out,
             E=view(pre, N, K, out.shape[2] * out.shape[3]), act=activation, alpha=alpha)


@launcher
def conv2d_backward_input(grad_out, w, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, grad_in):
    """grad_in (N,C,H,W) = d(sum(out * grad_out)) / dx, every element written."""
    N, C, H, W = grad_in.shape
    K, _, KH, KW = w.shape
    OH, OW = grad_out.shape[2], grad_out.shape[3]
    geo = _geo(C, H, W, KH, KW, OH, OW, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, K)
    gi3 = view(grad_in, N, C, H * W)
    _bwd_in(flat(w), flat(grad_out), gi3, gi3, C, N * H * W,
            K * KH * KW, geo, _table("bin", K, C, KH, KW, OH, OW, dil_h, dil_w))


def _backward_weight(x, grad_out, geometry, accumulate, grad_w, grad_b):
    """grad_w (and grad_b, as the GEMM's extra column of ones, when given) in one launch, added
    into them with ``accumulate``."""
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w = geometry
    N, C, H, W = x.shape
    K, _, KH, KW = grad_w.shape
    OH, OW = grad_out.shape[2], grad_out.shape[3]
    geo = _geo(C, H, W, KH, KW, OH, OW, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, K)
    CKK = C * KH * KW
    _bwd_w(flat(grad_out), flat(x), view(grad_w, K, CKK),
           grad_b if grad_b is not None else scratch("conv2d.no_bias", K, grad_w.dtype),
           K, CKK + (grad_b is not None), N * OH * OW, geo,
           _table("bw", N, C, H, W, K, OH, OW, stride_h, stride_w, pad_h, pad_w),
           act=int(bool(accumulate)))


@launcher
def conv2d_backward_weight(x, grad_out, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, accumulate,
                           grad_w):
    """grad_w (K,C,KH,KW) = d(sum(out * grad_out)) / dw, or grad_w += it with ``accumulate``."""
    _backward_weight(x, grad_out, (stride_h, stride_w, pad_h, pad_w, dil_h, dil_w), accumulate,
                     grad_w, None)


@launcher
def conv2d_backward_params(x, grad_out, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, accumulate,
                           grad_w, grad_b):
    """grad_w and grad_b (K,) in one launch: the bias gradient is the weight-gradient GEMM's
    extra output column, against a column of ones; added into them with ``accumulate``."""
    _backward_weight(x, grad_out, (stride_h, stride_w, pad_h, pad_w, dil_h, dil_w), accumulate,
                     grad_w, grad_b)


@kernel
def _bias_grad(g3: A3, accumulate: Bool, grad_b: A1):
    """One block per channel k (grid-stride over channels): grad_b[k] = sum of g3[:, k, :]
    (+= with ``accumulate``)."""
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
            grad_b[k] = grad_b[k] + total if accumulate else total


@launcher
def conv2d_backward_bias(grad_out, accumulate, grad_b):
    """grad_b[k] = sum of grad_out[:, k] over the batch and positions (+= with ``accumulate``)."""
    N, K, OH, OW = grad_out.shape
    if K:
        _bias_grad[min(K, config.max_blocks), config.threads](
            view(grad_out, N, K, OH * OW), accumulate, grad_b)
