"""2-D convolution kernels (NCHW input, OIHW weight), CPU.

Two strategies, picked per call from the problem shape:

* GEMM: im2col of the whole batch into ``col`` (C*KH*KW, N*OH*OW) (parallel over images), one
  BLAS GEMM through ``np.dot``, and a parallel scatter back to NCHW. Used when the reduction
  C*KH*KW is wide enough for BLAS to pay for the im2col copy.
* direct: for few input channels (a first layer: C*KH*KW tiny) a GEMM is a thin, memory-bound
  product, so each output plane is accumulated in place from shifted input rows instead; the
  innermost loop runs along a contiguous row and vectorizes.

Padding: ``pad_h``/``pad_w`` are the top/left padding; the bottom/right padding is whatever the
output shape implies. Input positions outside the image read as zero.
"""
import numpy as np
from numba import njit, prange

_FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

# Multiply-adds below which a call runs serially (thread start-up would cost more than it saves).
_PARALLEL_MIN_WORK = 1 << 20
# C*KH*KW at or below which the direct kernels beat im2col + GEMM.
_DIRECT_MAX_CKK = 16
# Image chunks the direct weight gradient is split into (fixed, so results do not depend on the
# thread count); each chunk sums into its own float64 partial gradient.
_WEIGHT_CHUNKS = 16


# ---------------------------------------------------------------------------------------------
# index helpers
# ---------------------------------------------------------------------------------------------

@njit(cache=True)
def _valid_range(n_out, n_in, stride, off):
    """[lo, hi): the output positions o with 0 <= o*stride + off < n_in, clipped to [0, n_out)."""
    lo = 0 if off >= 0 else (stride - 1 - off) // stride
    hi = (n_in - off + stride - 1) // stride if n_in - off > 0 else 0
    lo = min(lo, n_out)
    hi = max(lo, min(hi, n_out))
    return lo, hi


@njit(cache=True)
def _col_ranges(KW, OW, W, sw, pw, dw):
    """Valid output-column range [lo[j], hi[j]) and input offset off[j] for each kernel column j."""
    lo = np.empty(KW, np.int64)
    hi = np.empty(KW, np.int64)
    off = np.empty(KW, np.int64)
    for j in range(KW):
        off[j] = j * dw - pw
        lo[j], hi[j] = _valid_range(OW, W, sw, off[j])
    return lo, hi, off


# ---------------------------------------------------------------------------------------------
# im2col / col2im
# ---------------------------------------------------------------------------------------------

@njit(cache=True)
def _im2col_image(x, n, KH, KW, sh, sw, ph, dh, OH, OW, lo, hi, off, col, c0):
    """col[(c*KH+i)*KW+j, c0 + oh*OW + ow] = x[n, c, oh*sh-ph+i*dh, ow*sw+off[j]] (0 outside)."""
    C, H = x.shape[1], x.shape[2]
    for c in range(C):
        for i in range(KH):
            for j in range(KW):
                r = (c * KH + i) * KW + j
                row = col[r]
                a, z, o = lo[j], hi[j], off[j]
                for oh in range(OH):
                    h = oh * sh - ph + i * dh
                    base = c0 + oh * OW
                    if h < 0 or h >= H:
                        for ow in range(OW):
                            row[base + ow] = 0.0
                        continue
                    xr = x[n, c, h]
                    for ow in range(a):
                        row[base + ow] = 0.0
                    if sw == 1:
                        for ow in range(a, z):
                            row[base + ow] = xr[ow + o]
                    else:
                        for ow in range(a, z):
                            row[base + ow] = xr[ow * sw + o]
                    for ow in range(z, OW):
                        row[base + ow] = 0.0


@njit(cache=True, parallel=True)
def _im2col_par(x, KH, KW, sh, sw, ph, dh, OH, OW, lo, hi, off, col):
    P = OH * OW
    for n in prange(x.shape[0]):
        _im2col_image(x, n, KH, KW, sh, sw, ph, dh, OH, OW, lo, hi, off, col, n * P)


@njit(cache=True)
def _im2col_ser(x, KH, KW, sh, sw, ph, dh, OH, OW, lo, hi, off, col):
    P = OH * OW
    for n in range(x.shape[0]):
        _im2col_image(x, n, KH, KW, sh, sw, ph, dh, OH, OW, lo, hi, off, col, n * P)


@njit(cache=True)
def _im2col(x, KH, KW, sh, sw, ph, pw, dh, dw, OH, OW, parallel):
    """The (C*KH*KW, N*OH*OW) im2col matrix of the whole batch."""
    N, C, H, W = x.shape
    lo, hi, off = _col_ranges(KW, OW, W, sw, pw, dw)
    col = np.empty((C * KH * KW, N * OH * OW), x.dtype)
    if parallel:
        _im2col_par(x, KH, KW, sh, sw, ph, dh, OH, OW, lo, hi, off, col)
    else:
        _im2col_ser(x, KH, KW, sh, sw, ph, dh, OH, OW, lo, hi, off, col)
    return col


@njit(cache=True)
def _col2im_image(col, c0, n, KH, KW, sh, sw, ph, dh, OH, OW, lo, hi, off, grad_in):
    """grad_in[n] = sum of col entries over the input cells they were gathered from."""
    C, H, W = grad_in.shape[1], grad_in.shape[2], grad_in.shape[3]
    g = grad_in[n]
    for c in range(C):
        for h in range(H):
            for w in range(W):
                g[c, h, w] = 0.0
    for c in range(C):
        for i in range(KH):
            for j in range(KW):
                row = col[(c * KH + i) * KW + j]
                a, z, o = lo[j], hi[j], off[j]
                for oh in range(OH):
                    h = oh * sh - ph + i * dh
                    if h < 0 or h >= H:
                        continue
                    gr = g[c, h]
                    base = c0 + oh * OW
                    if sw == 1:
                        for ow in range(a, z):
                            gr[ow + o] += row[base + ow]
                    else:
                        for ow in range(a, z):
                            gr[ow * sw + o] += row[base + ow]


@njit(cache=True, parallel=True)
def _col2im_par(col, KH, KW, sh, sw, ph, dh, OH, OW, lo, hi, off, grad_in):
    P = OH * OW
    for n in prange(grad_in.shape[0]):
        _col2im_image(col, n * P, n, KH, KW, sh, sw, ph, dh, OH, OW, lo, hi, off, grad_in)


@njit(cache=True)
def _col2im_ser(col, KH, KW, sh, sw, ph, dh, OH, OW, lo, hi, off, grad_in):
    P = OH * OW
    for n in range(grad_in.shape[0]):
        _col2im_image(col, n * P, n, KH, KW, sh, sw, ph, dh, OH, OW, lo, hi, off, grad_in)


# ---------------------------------------------------------------------------------------------
# (K, N*P) <-> (N, K, P) layout changes
# ---------------------------------------------------------------------------------------------

@njit(cache=True)
def _unfold_image(res, b, n, out3):
    """out3[n, k, :] = res[k, n*P:(n+1)*P] + b[k]."""
    K, P = out3.shape[1], out3.shape[2]
    c0 = n * P
    for k in range(K):
        bk = b[k]
        src = res[k]
        dst = out3[n, k]
        for p in range(P):
            dst[p] = src[c0 + p] + bk


@njit(cache=True, parallel=True)
def _unfold_par(res, b, out3):
    for n in prange(out3.shape[0]):
        _unfold_image(res, b, n, out3)


@njit(cache=True)
def _unfold_ser(res, b, out3):
    for n in range(out3.shape[0]):
        _unfold_image(res, b, n, out3)


@njit(cache=True)
def _fold_image(g3, n, gT):
    """gT[k, n*P:(n+1)*P] = g3[n, k, :]."""
    K, P = g3.shape[1], g3.shape[2]
    c0 = n * P
    for k in range(K):
        src = g3[n, k]
        dst = gT[k]
        for p in range(P):
            dst[c0 + p] = src[p]


@njit(cache=True, parallel=True)
def _fold_par(g3, gT):
    for n in prange(g3.shape[0]):
        _fold_image(g3, n, gT)


@njit(cache=True)
def _fold_ser(g3, gT):
    for n in range(g3.shape[0]):
        _fold_image(g3, n, gT)


@njit(cache=True)
def _fold(grad_out, parallel):
    """grad_out (N, K, OH, OW) as a (K, N*OH*OW) matrix."""
    N, K, OH, OW = grad_out.shape
    g3 = grad_out.reshape(N, K, OH * OW)
    gT = np.empty((K, N * OH * OW), grad_out.dtype)
    if parallel:
        _fold_par(g3, gT)
    else:
        _fold_ser(g3, gT)
    return gT


# ---------------------------------------------------------------------------------------------
# direct kernels (small C*KH*KW)
#
# Each image is first copied into a zero-padded scratch ``xp`` (C, Hp, Wp) that covers exactly the
# cells the output reads (Hp = (OH-1)*sh + (KH-1)*dh + 1, likewise Wp), so no loop below tests
# bounds. With unit strides output cell (oh, ow) reads xp[c, oh + i*dh, ow + j*dw], i.e. flat
# index q + i*dh*Wp + j*dw with q = oh*Wp + ow: a whole plane is then one long contiguous loop per
# kernel tap, on a "wide" (OH, Wp) output whose Wp - OW extra columns per row are discarded.
# ---------------------------------------------------------------------------------------------

@njit(cache=True)
def _padded_extent(OH, OW, KH, KW, sh, sw, dh, dw):
    return (OH - 1) * sh + (KH - 1) * dh + 1, (OW - 1) * sw + (KW - 1) * dw + 1


@njit(cache=True)
def _pad_image(x, n, ph, pw, xp):
    """xp = zeros with image n of x at offset (ph, pw), cropped to xp's extent."""
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    Hp, Wp = xp.shape[1], xp.shape[2]
    xp[:] = 0.0
    h0, h1 = max(0, -ph), min(H, Hp - ph)
    w0, w1 = max(0, -pw), min(W, Wp - pw)
    for c in range(C):
        for h in range(h0, h1):
            src = x[n, c, h]
            dst = xp[c, h + ph]
            for w in range(w0, w1):
                dst[w + pw] = src[w]


@njit(cache=True)
def _wide_grad(g, n, k, Wp, gw):
    """gw (flat (OH-1)*Wp + OW) = g[n, k] laid out with row stride Wp, zeros in between rows."""
    OH, OW = g.shape[2], g.shape[3]
    for oh in range(OH):
        src = g[n, k, oh]
        base = oh * Wp
        for ow in range(OW):
            gw[base + ow] = src[ow]
        if oh < OH - 1:
            for ow in range(OW, Wp):
                gw[base + ow] = 0.0


@njit(cache=True, fastmath=_FASTMATH)
def _direct_forward_image(x, w, b, n, sh, sw, ph, pw, dh, dw, out):
    K, C, KH, KW = w.shape
    OH, OW = out.shape[2], out.shape[3]
    Hp, Wp = _padded_extent(OH, OW, KH, KW, sh, sw, dh, dw)
    xp = np.empty((C, Hp, Wp), x.dtype)
    _pad_image(x, n, ph, pw, xp)
    if sh == 1 and sw == 1:
        L = (OH - 1) * Wp + OW
        xf = xp.reshape(C, Hp * Wp)
        acc = np.empty(L, x.dtype)
        for k in range(K):
            bk = b[k]
            for q in range(L):
                acc[q] = bk
            for c in range(C):
                xr = xf[c]
                for i in range(KH):
                    for j in range(KW):
                        wv = w[k, c, i, j]
                        o = i * dh * Wp + j * dw
                        for q in range(L):
                            acc[q] += wv * xr[q + o]
            for oh in range(OH):
                dst = out[n, k, oh]
                base = oh * Wp
                for ow in range(OW):
                    dst[ow] = acc[base + ow]
    else:
        for k in range(K):
            bk = b[k]
            for oh in range(OH):
                orow = out[n, k, oh]
                for ow in range(OW):
                    orow[ow] = bk
                for c in range(C):
                    for i in range(KH):
                        xr = xp[c, oh * sh + i * dh]
                        for j in range(KW):
                            wv = w[k, c, i, j]
                            o = j * dw
                            for ow in range(OW):
                                orow[ow] += wv * xr[ow * sw + o]


@njit(cache=True, parallel=True)
def _direct_forward_par(x, w, b, sh, sw, ph, pw, dh, dw, out):
    for n in prange(x.shape[0]):
        _direct_forward_image(x, w, b, n, sh, sw, ph, pw, dh, dw, out)


@njit(cache=True, fastmath=_FASTMATH)
def _direct_backward_input_image(grad_out, w, n, sh, sw, ph, pw, dh, dw, grad_in):
    C, H, W = grad_in.shape[1], grad_in.shape[2], grad_in.shape[3]
    K, KH, KW = w.shape[0], w.shape[2], w.shape[3]
    OH, OW = grad_out.shape[2], grad_out.shape[3]
    Hp, Wp = _padded_extent(OH, OW, KH, KW, sh, sw, dh, dw)
    dxp = np.zeros((C, Hp, Wp), grad_in.dtype)
    if sh == 1 and sw == 1:
        L = (OH - 1) * Wp + OW
        dxf = dxp.reshape(C, Hp * Wp)
        gw = np.empty(L, grad_in.dtype)
        for k in range(K):
            _wide_grad(grad_out, n, k, Wp, gw)
            for c in range(C):
                dr = dxf[c]
                for i in range(KH):
                    for j in range(KW):
                        wv = w[k, c, i, j]
                        o = i * dh * Wp + j * dw
                        for q in range(L):
                            dr[q + o] += wv * gw[q]
    else:
        for k in range(K):
            for oh in range(OH):
                gr = grad_out[n, k, oh]
                for c in range(C):
                    for i in range(KH):
                        dr = dxp[c, oh * sh + i * dh]
                        for j in range(KW):
                            wv = w[k, c, i, j]
                            o = j * dw
                            for ow in range(OW):
                                dr[ow * sw + o] += wv * gr[ow]
    for c in range(C):
        for h in range(H):
            dst = grad_in[n, c, h]
            hp = h + ph
            if hp < 0 or hp >= Hp:
                for ww in range(W):
                    dst[ww] = 0.0
                continue
            src = dxp[c, hp]
            for ww in range(W):
                wp = ww + pw
                dst[ww] = src[wp] if 0 <= wp < Wp else 0.0


@njit(cache=True, parallel=True)
def _direct_backward_input_par(grad_out, w, sh, sw, ph, pw, dh, dw, grad_in):
    for n in prange(grad_in.shape[0]):
        _direct_backward_input_image(grad_out, w, n, sh, sw, ph, pw, dh, dw, grad_in)


@njit(cache=True, fastmath=_FASTMATH)
def _direct_backward_weight_images(x, grad_out, n0, n1, sh, sw, ph, pw, dh, dw, acc):
    """acc (K, C, KH, KW) float64 += the weight gradient of images n0..n1-1."""
    C = x.shape[1]
    K, KH, KW = acc.shape[0], acc.shape[2], acc.shape[3]
    OH, OW = grad_out.shape[2], grad_out.shape[3]
    Hp, Wp = _padded_extent(OH, OW, KH, KW, sh, sw, dh, dw)
    xp = np.empty((C, Hp, Wp), x.dtype)
    xf = xp.reshape(C, Hp * Wp)
    L = (OH - 1) * Wp + OW
    gw = np.empty(L, x.dtype)
    zero = np.zeros(1, x.dtype)[0]          # per-dot sums in the input dtype (vectorize fully)
    for n in range(n0, n1):
        _pad_image(x, n, ph, pw, xp)
        for k in range(K):
            if sh == 1 and sw == 1:
                _wide_grad(grad_out, n, k, Wp, gw)
                for c in range(C):
                    xr = xf[c]
                    for i in range(KH):
                        for j in range(KW):
                            o = i * dh * Wp + j * dw
                            s = zero
                            for q in range(L):
                                s += gw[q] * xr[q + o]
                            acc[k, c, i, j] += s
            else:
                for c in range(C):
                    for i in range(KH):
                        for j in range(KW):
                            o = j * dw
                            s = zero
                            for oh in range(OH):
                                gr = grad_out[n, k, oh]
                                xr = xp[c, oh * sh + i * dh]
                                for ow in range(OW):
                                    s += gr[ow] * xr[ow * sw + o]
                            acc[k, c, i, j] += s


@njit(cache=True, parallel=True)
def _direct_backward_weight_par(x, grad_out, sh, sw, ph, pw, dh, dw, partial):
    """partial[t] accumulates the gradient of the t-th contiguous chunk of images."""
    T = partial.shape[0]
    N = x.shape[0]
    for t in prange(T):
        _direct_backward_weight_images(x, grad_out, t * N // T, (t + 1) * N // T,
                                       sh, sw, ph, pw, dh, dw, partial[t])


# ---------------------------------------------------------------------------------------------
# public kernels
# ---------------------------------------------------------------------------------------------

@njit(cache=True)
def conv2d_forward(x, w, b, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, out):
    """out = conv(x, w) + b: x (N,C,H,W), w (K,C,KH,KW), b (K,), out (N,K,OH,OW)."""
    N, C, H, W = x.shape
    K, _, KH, KW = w.shape
    OH, OW = out.shape[2], out.shape[3]
    CKK = C * KH * KW
    parallel = N > 1 and N * K * OH * OW * CKK >= _PARALLEL_MIN_WORK
    if CKK <= _DIRECT_MAX_CKK:
        if parallel:
            _direct_forward_par(x, w, b, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, out)
        else:
            for n in range(N):
                _direct_forward_image(x, w, b, n, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, out)
        return
    col = _im2col(x, KH, KW, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, OH, OW, parallel)
    res = np.dot(w.reshape(K, CKK), col)
    out3 = out.reshape(N, K, OH * OW)
    if parallel:
        _unfold_par(res, b, out3)
    else:
        _unfold_ser(res, b, out3)


@njit(cache=True)
def conv2d_backward_input(grad_out, w, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, grad_in):
    """grad_in = d(sum(out * grad_out)) / dx, written in full."""
    N, C, H, W = grad_in.shape
    K, _, KH, KW = w.shape
    OH, OW = grad_out.shape[2], grad_out.shape[3]
    CKK = C * KH * KW
    parallel = N > 1 and N * K * OH * OW * CKK >= _PARALLEL_MIN_WORK
    if CKK <= _DIRECT_MAX_CKK:
        if parallel:
            _direct_backward_input_par(grad_out, w, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, grad_in)
        else:
            for n in range(N):
                _direct_backward_input_image(grad_out, w, n, stride_h, stride_w, pad_h, pad_w,
                                             dil_h, dil_w, grad_in)
        return
    lo, hi, off = _col_ranges(KW, OW, W, stride_w, pad_w, dil_w)
    gT = _fold(grad_out, parallel)
    dcol = np.dot(w.reshape(K, CKK).T, gT)
    if parallel:
        _col2im_par(dcol, KH, KW, stride_h, stride_w, pad_h, dil_h, OH, OW, lo, hi, off, grad_in)
    else:
        _col2im_ser(dcol, KH, KW, stride_h, stride_w, pad_h, dil_h, OH, OW, lo, hi, off, grad_in)


@njit(cache=True)
def conv2d_backward_weight(x, grad_out, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, grad_w):
    """grad_w = d(sum(out * grad_out)) / dw."""
    N, C, H, W = x.shape
    K, _, KH, KW = grad_w.shape
    OH, OW = grad_out.shape[2], grad_out.shape[3]
    CKK = C * KH * KW
    parallel = N > 1 and N * K * OH * OW * CKK >= _PARALLEL_MIN_WORK
    if CKK <= _DIRECT_MAX_CKK:
        T = min(N, _WEIGHT_CHUNKS) if parallel else 1
        partial = np.zeros((T, K, C, KH, KW), np.float64)
        if parallel:
            _direct_backward_weight_par(x, grad_out, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, partial)
        else:
            _direct_backward_weight_images(x, grad_out, 0, N, stride_h, stride_w, pad_h, pad_w,
                                           dil_h, dil_w, partial[0])
        for k in range(K):
            for c in range(C):
                for i in range(KH):
                    for j in range(KW):
                        s = 0.0
                        for t in range(T):
                            s += partial[t, k, c, i, j]
                        grad_w[k, c, i, j] = s
        return
    col = _im2col(x, KH, KW, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, OH, OW, parallel)
    gT = _fold(grad_out, parallel)
    gw = np.dot(gT, col.T)
    grad_w.reshape(K, CKK)[:, :] = gw


@njit(cache=True, fastmath=_FASTMATH)
def _bias_sum(g3, k):
    """sum of g3[:, k, :] (float64 accumulation)."""
    s = 0.0
    for n in range(g3.shape[0]):
        row = g3[n, k]
        for p in range(g3.shape[2]):
            s += row[p]
    return s


@njit(cache=True, parallel=True)
def _bias_par(g3, grad_b):
    for k in prange(g3.shape[1]):
        grad_b[k] = _bias_sum(g3, k)


@njit(cache=True)
def conv2d_backward_bias(grad_out, grad_b):
    """grad_b[k] = sum of grad_out[:, k] over batch and positions."""
    N, K, OH, OW = grad_out.shape
    g3 = grad_out.reshape(N, K, OH * OW)
    if N * K * OH * OW >= _PARALLEL_MIN_WORK and K > 1:
        _bias_par(g3, grad_b)
    else:
        for k in range(K):
            grad_b[k] = _bias_sum(g3, k)
