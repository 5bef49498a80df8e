"""2-D convolution kernels (NCHW input, OIHW weight), CPU.

Every image is first copied into a zero-padded scratch ``xp`` (C, Hp, Wp) covering exactly the
cells the output reads (Hp = (OH-1)*sh + (KH-1)*dh + 1, likewise Wp; top/left padding pad_h/pad_w,
bottom/right padding whatever the output shape implies, possibly a crop), so no inner loop tests
bounds. Then one of two strategies, picked from the shape:

* GEMM (C*KH*KW > _DIRECT_MAX_CKK): im2col of a chunk of images into ``col`` (C*KH*KW, n*OH*OW)
  (parallel over images), one BLAS GEMM through ``np.dot``, and a parallel scatter back to NCHW.
  Chunks keep ``col`` a few MB (cache-resident, no huge allocations).
* direct (few input channels, e.g. a first layer): a GEMM would be thin and memory-bound, so each
  output plane is accumulated tap by tap. With unit strides output cell (oh, ow) reads flat index
  q + i*dh*Wp + j*dw of a padded plane, q = oh*Wp + ow, so a plane is one long contiguous loop per
  kernel tap over a "wide" (OH, Wp) output whose extra Wp - OW columns per row are dropped.

Inner loops read through slices (``row[o:o + L]``) rather than ``row[q + o]``: a possibly negative
index makes Numba emit a wraparound test per element, which blocks vectorization.
"""
import numpy as np
from numba import njit, prange

_FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

# Multiply-adds below which a call runs serially (thread start-up would cost more than it saves).
_PARALLEL_MIN_WORK = 1 << 20
# C*KH*KW at or below which the direct kernels beat im2col + GEMM.
_DIRECT_MAX_CKK = 16
# Bytes of im2col matrix per chunk of images on the GEMM path.
_CHUNK_BYTES = 8 << 20
# Image chunks the direct weight gradient is split into (fixed, so results do not depend on the
# thread count); each chunk sums into its own float64 partial gradient.
_WEIGHT_CHUNKS = 16


# ---------------------------------------------------------------------------------------------
# padded images
# ---------------------------------------------------------------------------------------------

@njit(cache=True)
def _padded_extent(OH, OW, KH, KW, sh, sw, dh, dw):
    """(Hp, Wp): the padded-input extent the output reads."""
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
            src = x[n, c, h, w0:w1]
            dst = xp[c, h + ph, w0 + pw:w1 + pw]
            for t in range(w1 - w0):
                dst[t] = src[t]


@njit(cache=True)
def _crop_image(dxp, n, ph, pw, grad_in):
    """grad_in[n] = the image part of the padded gradient dxp (zero where dxp does not reach)."""
    C, H, W = grad_in.shape[1], grad_in.shape[2], grad_in.shape[3]
    Hp, Wp = dxp.shape[1], dxp.shape[2]
    w0, w1 = max(0, -pw), max(max(0, -pw), min(W, Wp - pw))
    for c in range(C):
        for h in range(H):
            dst = grad_in[n, c, h]
            for t in range(W):
                dst[t] = 0.0
            hp = h + ph
            if 0 <= hp < Hp:
                src = dxp[c, hp, w0 + pw:w1 + pw]
                d2 = dst[w0:w1]
                for t in range(w1 - w0):
                    d2[t] = src[t]


# ---------------------------------------------------------------------------------------------
# GEMM path: im2col / col2im over a chunk of images, (K, n*P) <-> (n, K, P) layout changes
# ---------------------------------------------------------------------------------------------

@njit(cache=True)
def _im2col_image(x, n, KH, KW, sh, sw, ph, pw, dh, dw, OH, OW, col, c0):
    """col[(c*KH+i)*KW+j, c0 + oh*OW + ow] = padded x[n, c, oh*sh + i*dh, ow*sw + j*dw]."""
    C = x.shape[1]
    Hp, Wp = _padded_extent(OH, OW, KH, KW, sh, sw, dh, dw)
    xp = np.empty((C, Hp, Wp), x.dtype)
    _pad_image(x, n, ph, pw, xp)
    for c in range(C):
        for i in range(KH):
            for j in range(KW):
                row = col[(c * KH + i) * KW + j]
                for oh in range(OH):
                    dst = row[c0 + oh * OW:c0 + (oh + 1) * OW]
                    if sw == 1:
                        src = xp[c, oh * sh + i * dh, j * dw:]
                        for ow in range(OW):
                            dst[ow] = src[ow]
                    else:
                        srcs = xp[c, oh * sh + i * dh, j * dw::sw]
                        for ow in range(OW):
                            dst[ow] = srcs[ow]


@njit(cache=True)
def _col2im_image(col, c0, n, KH, KW, sh, sw, ph, pw, dh, dw, OH, OW, grad_in):
    """grad_in[n] = the sum of the col entries over the input cells they were gathered from."""
    C = grad_in.shape[1]
    Hp, Wp = _padded_extent(OH, OW, KH, KW, sh, sw, dh, dw)
    dxp = np.zeros((C, Hp, Wp), grad_in.dtype)
    for c in range(C):
        for i in range(KH):
            for j in range(KW):
                row = col[(c * KH + i) * KW + j]
                for oh in range(OH):
                    src = row[c0 + oh * OW:c0 + (oh + 1) * OW]
                    if sw == 1:
                        dst = dxp[c, oh * sh + i * dh, j * dw:]
                        for ow in range(OW):
                            dst[ow] += src[ow]
                    else:
                        dsts = dxp[c, oh * sh + i * dh, j * dw::sw]
                        for ow in range(OW):
                            dsts[ow] += src[ow]
    _crop_image(dxp, n, ph, pw, grad_in)


@njit(cache=True)
def _unfold_image(res, b, n, i, out3):
    """out3[n, k, :] = res[k, i*P:(i+1)*P] + b[k] (image n is the i-th of its chunk)."""
    K, P = out3.shape[1], out3.shape[2]
    for k in range(K):
        bk = b[k]
        src = res[k, i * P:(i + 1) * P]
        dst = out3[n, k]
        for p in range(P):
            dst[p] = src[p] + bk


@njit(cache=True)
def _fold_image(g3, n, i, gT):
    """gT[k, i*P:(i+1)*P] = g3[n, k, :]."""
    K, P = g3.shape[1], g3.shape[2]
    for k in range(K):
        src = g3[n, k]
        dst = gT[k, i * P:(i + 1) * P]
        for p in range(P):
            dst[p] = src[p]


@njit(cache=True, parallel=True)
def _im2col_fold_par(x, g3, n0, n1, KH, KW, sh, sw, ph, pw, dh, dw, OH, OW, col, gT):
    """im2col of images n0..n1-1 (when col has rows) and fold of their gradient (when gT has)."""
    P = OH * OW
    for n in prange(n0, n1):
        if col.shape[0] > 0:
            _im2col_image(x, n, KH, KW, sh, sw, ph, pw, dh, dw, OH, OW, col, (n - n0) * P)
        if gT.shape[0] > 0:
            _fold_image(g3, n, n - n0, gT)


@njit(cache=True)
def _im2col_fold_ser(x, g3, n0, n1, KH, KW, sh, sw, ph, pw, dh, dw, OH, OW, col, gT):
    P = OH * OW
    for n in range(n0, n1):
        if col.shape[0] > 0:
            _im2col_image(x, n, KH, KW, sh, sw, ph, pw, dh, dw, OH, OW, col, (n - n0) * P)
        if gT.shape[0] > 0:
            _fold_image(g3, n, n - n0, gT)


@njit(cache=True)
def _im2col_fold(x, g3, n0, n1, KH, KW, sh, sw, ph, pw, dh, dw, OH, OW, col, gT, parallel):
    if parallel:
        _im2col_fold_par(x, g3, n0, n1, KH, KW, sh, sw, ph, pw, dh, dw, OH, OW, col, gT)
    else:
        _im2col_fold_ser(x, g3, n0, n1, KH, KW, sh, sw, ph, pw, dh, dw, OH, OW, col, gT)


@njit(cache=True, parallel=True)
def _unfold_par(res, b, n0, n1, out3):
    for n in prange(n0, n1):
        _unfold_image(res, b, n, n - n0, out3)


@njit(cache=True, parallel=True)
def _col2im_par(dcol, n0, n1, KH, KW, sh, sw, ph, pw, dh, dw, OH, OW, grad_in):
    P = OH * OW
    for n in prange(n0, n1):
        _col2im_image(dcol, (n - n0) * P, n, KH, KW, sh, sw, ph, pw, dh, dw, OH, OW, grad_in)


@njit(cache=True)
def _chunk(N, per_image):
    """Images per chunk so that a chunk's im2col matrix stays near _CHUNK_BYTES."""
    return max(1, min(N, _CHUNK_BYTES // max(per_image, 1)))


# ---------------------------------------------------------------------------------------------
# direct path (small C*KH*KW)
# ---------------------------------------------------------------------------------------------

@njit(cache=True)
def _wide_grad(g, n, k, Wp, gw):
    """gw (flat, (OH-1)*Wp + OW) = g[n, k] laid out with row stride Wp, zeros between rows."""
    OH, OW = g.shape[2], g.shape[3]
    for oh in range(OH):
        src = g[n, k, oh]
        dst = gw[oh * Wp:oh * Wp + OW]
        for ow in range(OW):
            dst[ow] = src[ow]
        if oh < OH - 1:
            gap = gw[oh * Wp + OW:(oh + 1) * Wp]
            for t in range(Wp - OW):
                gap[t] = 0.0


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
                for i in range(KH):
                    for j in range(KW):
                        wv = w[k, c, i, j]
                        o = i * dh * Wp + j * dw
                        xs = xf[c, o:o + L]
                        for q in range(L):
                            acc[q] += wv * xs[q]
            for oh in range(OH):
                dst = out[n, k, oh]
                src = acc[oh * Wp:oh * Wp + OW]
                for ow in range(OW):
                    dst[ow] = src[ow]
    else:
        for k in range(K):
            bk = b[k]
            for oh in range(OH):
                orow = out[n, k, oh]
                for ow in range(OW):
                    orow[ow] = bk
                for c in range(C):
                    for i in range(KH):
                        for j in range(KW):
                            wv = w[k, c, i, j]
                            xs = xp[c, oh * sh + i * dh, j * dw::sw]
                            for ow in range(OW):
                                orow[ow] += wv * xs[ow]


@njit(cache=True, parallel=True)
def _direct_forward_par(x, w, b, sh, sw, ph, pw, dh, dw, out):
    for n in prange(x.shape[0]):
        _direct_forward_image(x, w, b, n, sh, sw, ph, pw, dh, dw, out)


@njit(cache=True, fastmath=_FASTMATH)
def _direct_backward_input_image(grad_out, w, n, sh, sw, ph, pw, dh, dw, grad_in):
    C = grad_in.shape[1]
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
                for i in range(KH):
                    for j in range(KW):
                        wv = w[k, c, i, j]
                        o = i * dh * Wp + j * dw
                        ds = dxf[c, o:o + L]
                        for q in range(L):
                            ds[q] += wv * gw[q]
    else:
        for k in range(K):
            for oh in range(OH):
                gr = grad_out[n, k, oh]
                for c in range(C):
                    for i in range(KH):
                        for j in range(KW):
                            wv = w[k, c, i, j]
                            ds = dxp[c, oh * sh + i * dh, j * dw::sw]
                            for ow in range(OW):
                                ds[ow] += wv * gr[ow]
    _crop_image(dxp, n, ph, pw, grad_in)


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
    zero = np.zeros(1, x.dtype)[0]          # per-plane sums in the input dtype vectorize fully
    for n in range(n0, n1):
        _pad_image(x, n, ph, pw, xp)
        for k in range(K):
            if sh == 1 and sw == 1:
                _wide_grad(grad_out, n, k, Wp, gw)
                for c in range(C):
                    for i in range(KH):
                        for j in range(KW):
                            o = i * dh * Wp + j * dw
                            xs = xf[c, o:o + L]
                            s = zero
                            for q in range(L):
                                s += gw[q] * xs[q]
                            acc[k, c, i, j] += s
            else:
                for c in range(C):
                    for i in range(KH):
                        for j in range(KW):
                            s = zero
                            for oh in range(OH):
                                gr = grad_out[n, k, oh]
                                xs = xp[c, oh * sh + i * dh, j * dw::sw]
                                for ow in range(OW):
                                    s += gr[ow] * xs[ow]
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
# bias gradient
# ---------------------------------------------------------------------------------------------

@njit(cache=True, fastmath=_FASTMATH)
def _bias_sum(g3, k):
    """sum of g3[:, k, :]: per-plane sums in the input dtype, accumulated in float64."""
    s = 0.0
    zero = np.zeros(1, g3.dtype)[0]
    for n in range(g3.shape[0]):
        row = g3[n, k]
        t = zero
        for p in range(g3.shape[2]):
            t += row[p]
        s += t
    return s


@njit(cache=True, parallel=True)
def _bias_par(g3, grad_b):
    for k in prange(g3.shape[1]):
        grad_b[k] = _bias_sum(g3, k)


# ---------------------------------------------------------------------------------------------
# public kernels
# ---------------------------------------------------------------------------------------------

@njit(cache=True)
def _use_parallel(N, K, OH, OW, CKK):
    return N > 1 and N * K * OH * OW * CKK >= _PARALLEL_MIN_WORK


@njit(cache=True)
def conv2d_forward(x, w, b, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, out):
    """out = conv(x, w) + b: x (N,C,H,W), w (K,C,KH,KW), b (K,), out (N,K,OH,OW)."""
    N, C = x.shape[0], x.shape[1]
    K, KH, KW = w.shape[0], w.shape[2], w.shape[3]
    OH, OW = out.shape[2], out.shape[3]
    CKK, P = C * KH * KW, OH * OW
    parallel = _use_parallel(N, K, OH, OW, CKK)
    geo = (stride_h, stride_w, pad_h, pad_w, dil_h, dil_w)
    if CKK <= _DIRECT_MAX_CKK:
        if parallel:
            _direct_forward_par(x, w, b, *geo, out)
        else:
            for n in range(N):
                _direct_forward_image(x, w, b, n, *geo, out)
        return
    wm = w.reshape(K, CKK)
    out3 = out.reshape(N, K, P)
    nb = _chunk(N, CKK * P * x.itemsize)
    colbuf = np.empty(CKK * nb * P, x.dtype)
    resbuf = np.empty(K * nb * P, x.dtype)
    nogT = np.empty((0, 1), x.dtype)
    for n0 in range(0, N, nb):
        n1 = min(N, n0 + nb)
        m = (n1 - n0) * P
        col = colbuf[:CKK * m].reshape(CKK, m)
        res = resbuf[:K * m].reshape(K, m)
        _im2col_fold(x, out3, n0, n1, KH, KW, *geo, OH, OW, col, nogT, parallel)
        np.dot(wm, col, res)
        if parallel:
            _unfold_par(res, b, n0, n1, out3)
        else:
            for n in range(n0, n1):
                _unfold_image(res, b, n, n - n0, out3)


@njit(cache=True)
def conv2d_backward_input(grad_out, w, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, grad_in):
    """grad_in = d(sum(out * grad_out)) / dx, written in full."""
    N, C = grad_in.shape[0], grad_in.shape[1]
    K, KH, KW = w.shape[0], w.shape[2], w.shape[3]
    OH, OW = grad_out.shape[2], grad_out.shape[3]
    CKK, P = C * KH * KW, OH * OW
    parallel = _use_parallel(N, K, OH, OW, CKK)
    geo = (stride_h, stride_w, pad_h, pad_w, dil_h, dil_w)
    if CKK <= _DIRECT_MAX_CKK:
        if parallel:
            _direct_backward_input_par(grad_out, w, *geo, grad_in)
        else:
            for n in range(N):
                _direct_backward_input_image(grad_out, w, n, *geo, grad_in)
        return
    wmT = np.ascontiguousarray(w.reshape(K, CKK).T)
    g3 = grad_out.reshape(N, K, P)
    nb = _chunk(N, CKK * P * grad_in.itemsize)
    gTbuf = np.empty(K * nb * P, grad_in.dtype)
    dcolbuf = np.empty(CKK * nb * P, grad_in.dtype)
    nocol = np.empty((0, 1), grad_in.dtype)
    for n0 in range(0, N, nb):
        n1 = min(N, n0 + nb)
        m = (n1 - n0) * P
        gT = gTbuf[:K * m].reshape(K, m)
        dcol = dcolbuf[:CKK * m].reshape(CKK, m)
        _im2col_fold(grad_in, g3, n0, n1, KH, KW, *geo, OH, OW, nocol, gT, parallel)
        np.dot(wmT, gT, dcol)
        if parallel:
            _col2im_par(dcol, n0, n1, KH, KW, *geo, OH, OW, grad_in)
        else:
            for n in range(n0, n1):
                _col2im_image(dcol, (n - n0) * P, n, KH, KW, *geo, OH, OW, grad_in)


@njit(cache=True)
def conv2d_backward_weight(x, grad_out, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, grad_w):
    """grad_w = d(sum(out * grad_out)) / dw."""
    N, C = x.shape[0], x.shape[1]
    K, KH, KW = grad_w.shape[0], grad_w.shape[2], grad_w.shape[3]
    OH, OW = grad_out.shape[2], grad_out.shape[3]
    CKK, P = C * KH * KW, OH * OW
    parallel = _use_parallel(N, K, OH, OW, CKK)
    geo = (stride_h, stride_w, pad_h, pad_w, dil_h, dil_w)
    gw2 = grad_w.reshape(K, CKK)
    if CKK <= _DIRECT_MAX_CKK:
        T = min(N, _WEIGHT_CHUNKS) if parallel else 1
        partial = np.zeros((T, K, C, KH, KW), np.float64)
        if parallel:
            _direct_backward_weight_par(x, grad_out, *geo, partial)
        else:
            _direct_backward_weight_images(x, grad_out, 0, N, *geo, partial[0])
        acc = partial.sum(axis=0).reshape(K, CKK)
    else:
        g3 = grad_out.reshape(N, K, P)
        nb = _chunk(N, CKK * P * x.itemsize)
        colbuf = np.empty(CKK * nb * P, x.dtype)
        gTbuf = np.empty(K * nb * P, x.dtype)
        acc = np.zeros((K, CKK), np.float64)
        for n0 in range(0, N, nb):
            n1 = min(N, n0 + nb)
            m = (n1 - n0) * P
            col = colbuf[:CKK * m].reshape(CKK, m)
            gT = gTbuf[:K * m].reshape(K, m)
            _im2col_fold(x, g3, n0, n1, KH, KW, *geo, OH, OW, col, gT, parallel)
            acc += np.dot(gT, col.T)
    for k in range(K):
        for r in range(CKK):
            gw2[k, r] = acc[k, r]


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
