"""2-D convolution kernels (NCHW input, OIHW weight), CPU.

Every image is first copied into a zero-padded scratch ``xp`` (C, Hp, Wp) covering exactly the
cells the output reads (Hp = (OH-1)*sh + (KH-1)*dh + 1, likewise Wp; top/left padding pad_h/pad_w,
bottom/right padding whatever the output shape implies, possibly a crop), so no inner loop tests
bounds. Then one of two strategies, picked from the shape:

* GEMM (the general path): per image, im2col of a band of output rows into ``col``
  (C*KH*KW, rows*OW), one BLAS GEMM through ``np.dot`` (bands sized so that BLAS runs it on the
  calling thread), and a copy back to NCHW (plus bias). Images run in parallel (prange); the
  data of one band stays in cache from im2col through the GEMM to the scatter. Layers too large
  for such bands go to BLAS one whole image at a time (BLAS then threads each GEMM itself).
* direct (unit strides and C*KH*KW <= _DIRECT_MAX_CKK, e.g. a first layer): a GEMM would be thin
  and memory-bound, so each output plane is accumulated tap by tap. Output cell (oh, ow) reads
  flat index q + i*dh*Wp + j*dw of a padded plane, q = oh*Wp + ow, so a plane is one long
  contiguous loop per kernel tap over a "wide" (OH, Wp) output whose extra Wp - OW columns per
  row are dropped.

The weight gradient sums per-chunk float64 partials at the end, and the bias gradient per-channel
float64 sums: with ``accumulate`` that last step adds into grad_w / grad_b instead of storing
(in float64, then rounded once; a layer called several times in one step sums its calls'
gradients, with no extra pass).

Inner loops never index with ``row[q + o]``: a possibly negative index makes Numba emit a
wraparound test per element, which blocks vectorization. Long runs read through slices
(``row[o:o + L]``), short ones (im2col) through flat views with unsigned offsets.
"""
import numpy as np
from numba import njit, prange

from .activations import _fused_forward_kernel

_FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

# Multiply-adds below which a call runs serially (thread start-up would cost more than it saves).
_PARALLEL_MIN_WORK = 1 << 20
# C*KH*KW at or below which the direct kernels (unit strides) beat im2col + GEMM.
_DIRECT_MAX_CKK = 32
# GEMM path: largest M*N*K of one BLAS call made from a parallel loop. OpenBLAS runs calls up to
# 65536*4 single-threaded, so the images run in parallel on Numba's threads and BLAS never starts
# threads of its own inside them (two thread pools taking turns cost more than they gain).
_BAND_MNK = 1 << 18
# Image chunks a parallel weight gradient is split into (fixed, so results do not depend on the
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
def _copy_block(src, s0, s_step, dst, d0, d_step, rows, cols):
    """dst[d0 + r*d_step + t] = src[s0 + r*s_step + t] for r < rows, t < cols (flat arrays).

    Rows are short, so they are indexed with unsigned offsets: no slice set-up per row and no
    wraparound test per element."""
    colsu = np.uint64(max(cols, 0))
    for r in range(rows):
        a = np.uint64(s0 + r * s_step)
        b = np.uint64(d0 + r * d_step)
        for t in range(colsu):
            dst[b + t] = src[a + t]


@njit(cache=True)
def _pad_image(x, n, ph, pw, xp):
    """xp = zeros with image n of x at offset (ph, pw), cropped to xp's extent."""
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    Hp, Wp = xp.shape[1], xp.shape[2]
    xp[:] = 0.0
    h0, h1 = max(0, -ph), min(H, Hp - ph)
    w0, w1 = max(0, -pw), min(W, Wp - pw)
    xf, xpf = x.reshape(-1), xp.reshape(-1)
    for c in range(C):
        _copy_block(xf, ((n * C + c) * H + h0) * W + w0, W,
                    xpf, (c * Hp + h0 + ph) * Wp + w0 + pw, Wp, h1 - h0, w1 - w0)


@njit(cache=True)
def _crop_image(dxp, n, ph, pw, grad_in):
    """grad_in[n] = the image part of the padded gradient dxp (zero where dxp does not reach)."""
    C, H, W = grad_in.shape[1], grad_in.shape[2], grad_in.shape[3]
    Hp, Wp = dxp.shape[1], dxp.shape[2]
    h0, h1 = max(0, -ph), min(H, Hp - ph)
    w0, w1 = max(0, -pw), min(W, Wp - pw)
    if h1 - h0 < H or w1 - w0 < W:
        grad_in[n] = 0.0
    gf, df = grad_in.reshape(-1), dxp.reshape(-1)
    for c in range(C):
        _copy_block(df, (c * Hp + h0 + ph) * Wp + w0 + pw, Wp,
                    gf, ((n * C + c) * H + h0) * W + w0, W, h1 - h0, w1 - w0)


# ---------------------------------------------------------------------------------------------
# GEMM path: per image, im2col of a band of output rows, one np.dot, scatter back
# ---------------------------------------------------------------------------------------------

@njit(cache=True)
def _band_rows(K, CKK, OH, OW):
    """Output rows per band, so that one band's GEMM has K*CKK*rows*OW <= _BAND_MNK (0 when even
    one row is larger: then whole images go to BLAS one at a time and BLAS threads them)."""
    return min(OH, _BAND_MNK // max(K * CKK * OW, 1))


@njit(cache=True)
def _im2col_rows(xp, KH, KW, sh, sw, dh, dw, oh0, oh1, OW, col):
    """col[(c*KH+i)*KW+j, (oh-oh0)*OW + ow] = xp[c, oh*sh + i*dh, ow*sw + j*dw], oh0 <= oh < oh1.

    The runs copied are short (OW), so they index flat views with unsigned offsets: no slice
    set-up per run and no wraparound test per element."""
    C, Hp, Wp = xp.shape
    xf, cf = xp.reshape(-1), col.reshape(-1)
    M = col.shape[1]
    OWu, swu = np.uint64(OW), np.uint64(sw)
    for c in range(C):
        for i in range(KH):
            for j in range(KW):
                r = (c * KH + i) * KW + j
                for oh in range(oh0, oh1):
                    d0 = np.uint64(r * M + (oh - oh0) * OW)
                    s0 = np.uint64((c * Hp + oh * sh + i * dh) * Wp + j * dw)
                    if sw == 1:
                        for t in range(OWu):
                            cf[d0 + t] = xf[s0 + t]
                    else:
                        for t in range(OWu):
                            cf[d0 + t] = xf[s0 + t * swu]


@njit(cache=True)
def _col2im_rows(col, KH, KW, sh, sw, dh, dw, oh0, oh1, OW, dxp):
    """dxp[c, oh*sh + i*dh, ow*sw + j*dw] += col[(c*KH+i)*KW+j, (oh-oh0)*OW + ow]: the adjoint
    of _im2col_rows."""
    C, Hp, Wp = dxp.shape
    df, cf = dxp.reshape(-1), col.reshape(-1)
    M = col.shape[1]
    OWu, swu = np.uint64(OW), np.uint64(sw)
    for c in range(C):
        for i in range(KH):
            for j in range(KW):
                r = (c * KH + i) * KW + j
                for oh in range(oh0, oh1):
                    s0 = np.uint64(r * M + (oh - oh0) * OW)
                    d0 = np.uint64((c * Hp + oh * sh + i * dh) * Wp + j * dw)
                    if sw == 1:
                        for t in range(OWu):
                            df[d0 + t] += cf[s0 + t]
                    else:
                        for t in range(OWu):
                            df[d0 + t * swu] += cf[s0 + t]


@njit(cache=True)
def _gemm_forward_image(x, wm, b, n, KH, KW, sh, sw, ph, pw, dh, dw, band, out):
    """out[n] = wm @ im2col(x[n]) + b, one band of output rows at a time."""
    C = x.shape[1]
    K, CKK = wm.shape
    OH, OW = out.shape[2], out.shape[3]
    Hp, Wp = _padded_extent(OH, OW, KH, KW, sh, sw, dh, dw)
    xp = np.empty((C, Hp, Wp), x.dtype)
    _pad_image(x, n, ph, pw, xp)
    colbuf = np.empty(CKK * band * OW, x.dtype)
    resbuf = np.empty(K * band * OW, x.dtype)
    o3 = out.reshape(out.shape[0], K, OH * OW)
    for oh0 in range(0, OH, band):
        oh1 = min(OH, oh0 + band)
        m = (oh1 - oh0) * OW
        col = colbuf[:CKK * m].reshape(CKK, m)
        res = resbuf[:K * m].reshape(K, m)
        _im2col_rows(xp, KH, KW, sh, sw, dh, dw, oh0, oh1, OW, col)
        np.dot(wm, col, res)
        for k in range(K):
            bk = b[k]
            src = res[k]
            dst = o3[n, k, oh0 * OW:oh1 * OW]
            for q in range(m):
                dst[q] = src[q] + bk


@njit(cache=True)
def _gemm_backward_input_image(grad_out, wmT, n, KH, KW, sh, sw, ph, pw, dh, dw, band, grad_in):
    """grad_in[n] = col2im(wm.T @ grad_out[n]), one band of output rows at a time."""
    C = grad_in.shape[1]
    CKK, K = wmT.shape
    OH, OW = grad_out.shape[2], grad_out.shape[3]
    Hp, Wp = _padded_extent(OH, OW, KH, KW, sh, sw, dh, dw)
    dxp = np.zeros((C, Hp, Wp), grad_in.dtype)
    gbuf = np.empty(K * band * OW, grad_in.dtype)
    dbuf = np.empty(CKK * band * OW, grad_in.dtype)
    g3 = grad_out.reshape(grad_out.shape[0], K, OH * OW)
    for oh0 in range(0, OH, band):
        oh1 = min(OH, oh0 + band)
        m = (oh1 - oh0) * OW
        gt = gbuf[:K * m].reshape(K, m)
        for k in range(K):
            src = g3[n, k, oh0 * OW:oh1 * OW]
            dst = gt[k]
            for q in range(m):
                dst[q] = src[q]
        dcol = dbuf[:CKK * m].reshape(CKK, m)
        np.dot(wmT, gt, dcol)
        _col2im_rows(dcol, KH, KW, sh, sw, dh, dw, oh0, oh1, OW, dxp)
    _crop_image(dxp, n, ph, pw, grad_in)


@njit(cache=True)
def _weight_blocks(K, CKK, OH, OW):
    """(band, rb) for the weight gradient: bands of ``band`` output rows (the GEMM's reduction,
    kept long) times blocks of ``rb`` im2col rows, so that K*rb*band*OW <= _BAND_MNK; (0, 0) when
    even one output row of the gradient is too large for that."""
    band = min(OH, _BAND_MNK // max(K * 8 * OW, 1))
    if band == 0:
        band = 1 if K * OW <= _BAND_MNK else 0
    if band == 0:
        return 0, 0
    return band, max(1, min(CKK, _BAND_MNK // (K * band * OW)))


@njit(cache=True)
def _gemm_backward_weight_images(x, grad_out, n0, n1, KH, KW, sh, sw, ph, pw, dh, dw, band, rb,
                                 acc):
    """acc (K, C*KH*KW) float64 += sum over images n0..n1-1 of grad_out[n] @ im2col(x[n]).T, per
    band of output rows and block of rb im2col rows (one GEMM each, reducing over the band)."""
    C = x.shape[1]
    K, CKK = acc.shape
    OH, OW = grad_out.shape[2], grad_out.shape[3]
    Hp, Wp = _padded_extent(OH, OW, KH, KW, sh, sw, dh, dw)
    xp = np.empty((C, Hp, Wp), x.dtype)
    colbuf = np.empty(CKK * band * OW, x.dtype)
    gbuf = np.empty(K * band * OW, x.dtype)
    tmpbuf = np.empty(K * rb, x.dtype)
    g3 = grad_out.reshape(grad_out.shape[0], K, OH * OW)
    for n in range(n0, n1):
        _pad_image(x, n, ph, pw, xp)
        for oh0 in range(0, OH, band):
            oh1 = min(OH, oh0 + band)
            m = (oh1 - oh0) * OW
            col = colbuf[:CKK * m].reshape(CKK, m)
            _im2col_rows(xp, KH, KW, sh, sw, dh, dw, oh0, oh1, OW, col)
            gt = gbuf[:K * m].reshape(K, m)
            for k in range(K):
                src = g3[n, k, oh0 * OW:oh1 * OW]
                dst = gt[k]
                for q in range(m):
                    dst[q] = src[q]
            for r0 in range(0, CKK, rb):
                r1 = min(CKK, r0 + rb)
                tmp = tmpbuf[:K * (r1 - r0)].reshape(K, r1 - r0)
                np.dot(gt, col[r0:r1].T, tmp)
                for k in range(K):
                    for r in range(r1 - r0):
                        acc[k, r0 + r] += tmp[k, r]


# ---------------------------------------------------------------------------------------------
# direct path (small C*KH*KW)
# ---------------------------------------------------------------------------------------------

@njit(cache=True)
def _wide_grad(g, n, k, Wp, gw):
    """gw (flat, (OH-1)*Wp + OW) = g[n, k] laid out with row stride Wp. The Wp - OW gap cells
    between rows are never written: the caller zeroes ``gw`` once."""
    K, OH, OW = g.shape[1], g.shape[2], g.shape[3]
    _copy_block(g.reshape(-1), (n * K + k) * OH * OW, OW, gw, 0, Wp, OH, OW)


@njit(cache=True, fastmath=_FASTMATH)
def _direct_forward_image(x, w, b, n, ph, pw, dh, dw, out):
    """out[n] for unit strides: per output plane, one contiguous loop per kernel tap."""
    K, C, KH, KW = w.shape
    OH, OW = out.shape[2], out.shape[3]
    Hp, Wp = _padded_extent(OH, OW, KH, KW, 1, 1, dh, dw)
    xp = np.empty((C, Hp, Wp), x.dtype)
    _pad_image(x, n, ph, pw, xp)
    L = (OH - 1) * Wp + OW
    xf = xp.reshape(C, Hp * Wp)
    acc = np.empty(L, x.dtype)
    for k in range(K):
        bk = b[k]
        for q in range(L):
            acc[q] = bk
        for c in range(C):
            for i in range(KH):
                j = 0
                while j + 3 <= KW:          # three taps per pass: fewer loads/stores of acc
                    w0, w1, w2 = w[k, c, i, j], w[k, c, i, j + 1], w[k, c, i, j + 2]
                    o = i * dh * Wp + j * dw
                    x0 = xf[c, o:o + L]
                    x1 = xf[c, o + dw:o + dw + L]
                    x2 = xf[c, o + 2 * dw:o + 2 * dw + L]
                    for q in range(L):
                        acc[q] += w0 * x0[q] + w1 * x1[q] + w2 * x2[q]
                    j += 3
                while j < KW:
                    wv = w[k, c, i, j]
                    o = i * dh * Wp + j * dw
                    xs = xf[c, o:o + L]
                    for q in range(L):
                        acc[q] += wv * xs[q]
                    j += 1
        _copy_block(acc, 0, Wp, out.reshape(-1), (n * K + k) * OH * OW, OW, OH, OW)


@njit(cache=True, fastmath=_FASTMATH)
def _direct_backward_input_image(grad_out, w, n, ph, pw, dh, dw, grad_in):
    """grad_in[n] for unit strides: each kernel tap scatters a whole (wide) gradient plane."""
    C = grad_in.shape[1]
    K, KH, KW = w.shape[0], w.shape[2], w.shape[3]
    OH, OW = grad_out.shape[2], grad_out.shape[3]
    Hp, Wp = _padded_extent(OH, OW, KH, KW, 1, 1, dh, dw)
    dxp = np.zeros((C, Hp, Wp), grad_in.dtype)
    L = (OH - 1) * Wp + OW
    dxf = dxp.reshape(C, Hp * Wp)
    gw = np.zeros(L, grad_in.dtype)
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
    _crop_image(dxp, n, ph, pw, grad_in)


@njit(cache=True, fastmath=_FASTMATH)
def _direct_backward_weight_images(x, grad_out, n0, n1, ph, pw, dh, dw, acc):
    """acc (K, C, KH, KW) float64 += the weight gradient of images n0..n1-1 (unit strides):
    one dot product of a wide gradient plane with a shifted padded input plane per tap."""
    C = x.shape[1]
    K, KH, KW = acc.shape[0], acc.shape[2], acc.shape[3]
    OH, OW = grad_out.shape[2], grad_out.shape[3]
    Hp, Wp = _padded_extent(OH, OW, KH, KW, 1, 1, dh, dw)
    xp = np.empty((C, Hp, Wp), x.dtype)
    xf = xp.reshape(C, Hp * Wp)
    L = (OH - 1) * Wp + OW
    gw = np.zeros(L, x.dtype)
    zero = np.zeros(1, x.dtype)[0]          # per-plane sums in the input dtype vectorize fully
    for n in range(n0, n1):
        _pad_image(x, n, ph, pw, xp)
        for k in range(K):
            _wide_grad(grad_out, n, k, Wp, gw)
            for c in range(C):
                for i in range(KH):
                    j = 0
                    while j + 3 <= KW:      # three taps per pass share the loads of gw
                        o = i * dh * Wp + j * dw
                        x0 = xf[c, o:o + L]
                        x1 = xf[c, o + dw:o + dw + L]
                        x2 = xf[c, o + 2 * dw:o + 2 * dw + L]
                        s0, s1, s2 = zero, zero, zero
                        for q in range(L):
                            gq = gw[q]
                            s0 += gq * x0[q]
                            s1 += gq * x1[q]
                            s2 += gq * x2[q]
                        acc[k, c, i, j] += s0
                        acc[k, c, i, j + 1] += s1
                        acc[k, c, i, j + 2] += s2
                        j += 3
                    while j < KW:
                        o = i * dh * Wp + j * dw
                        xs = xf[c, o:o + L]
                        s = zero
                        for q in range(L):
                            s += gw[q] * xs[q]
                        acc[k, c, i, j] += s
                        j += 1


# ---------------------------------------------------------------------------------------------
# parallel drivers: one prange over images (or image chunks) per kernel call, either path inside
# ---------------------------------------------------------------------------------------------

@njit(cache=True, parallel=True)
def _forward_par(x, w, wm, b, KH, KW, sh, sw, ph, pw, dh, dw, band, direct, out):
    for n in prange(x.shape[0]):
        if direct:
            _direct_forward_image(x, w, b, n, ph, pw, dh, dw, out)
        else:
            _gemm_forward_image(x, wm, b, n, KH, KW, sh, sw, ph, pw, dh, dw, band, out)


@njit(cache=True, parallel=True)
def _backward_input_par(grad_out, w, wmT, KH, KW, sh, sw, ph, pw, dh, dw, band, direct, grad_in):
    for n in prange(grad_in.shape[0]):
        if direct:
            _direct_backward_input_image(grad_out, w, n, ph, pw, dh, dw, grad_in)
        else:
            _gemm_backward_input_image(grad_out, wmT, n, KH, KW, sh, sw, ph, pw, dh, dw, band,
                                       grad_in)


@njit(cache=True, parallel=True)
def _backward_weight_par(x, grad_out, KH, KW, sh, sw, ph, pw, dh, dw, band, rb, direct, partial):
    """partial[t] (K, C*KH*KW) accumulates the gradient of the t-th contiguous chunk of images."""
    T, K = partial.shape[0], partial.shape[1]
    N, C = x.shape[0], x.shape[1]
    for t in prange(T):
        n0, n1 = t * N // T, (t + 1) * N // T
        if direct:
            _direct_backward_weight_images(x, grad_out, n0, n1, ph, pw, dh, dw,
                                           partial[t].reshape(K, C, KH, KW))
        else:
            _gemm_backward_weight_images(x, grad_out, n0, n1, KH, KW, sh, sw, ph, pw, dh, dw,
                                         band, rb, partial[t])


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
def _bias_par(g3, accumulate, grad_b):
    for k in prange(g3.shape[1]):
        s = _bias_sum(g3, k)
        grad_b[k] = grad_b[k] + s if accumulate else s


# ---------------------------------------------------------------------------------------------
# public kernels
# ---------------------------------------------------------------------------------------------

@njit(cache=True)
def _use_parallel(N, K, OH, OW, CKK):
    return N > 1 and N * K * OH * OW * CKK >= _PARALLEL_MIN_WORK


@njit(cache=True)
def _use_direct(CKK, stride_h, stride_w):
    return CKK <= _DIRECT_MAX_CKK and stride_h == 1 and stride_w == 1


@njit(cache=True)
def conv2d_forward(x, w, b, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, out):
    """out = conv(x, w) + b: x (N,C,H,W), w (K,C,KH,KW), b (K,), out (N,K,OH,OW)."""
    N, C = x.shape[0], x.shape[1]
    K, KH, KW = w.shape[0], w.shape[2], w.shape[3]
    OH, OW = out.shape[2], out.shape[3]
    CKK = C * KH * KW
    direct = _use_direct(CKK, stride_h, stride_w)
    band = _band_rows(K, CKK, OH, OW)
    wm = w.reshape(K, CKK)
    geo = (KH, KW, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w)
    if _use_parallel(N, K, OH, OW, CKK) and (direct or band > 0):
        _forward_par(x, w, wm, b, *geo, band, direct, out)
    elif direct:
        for n in range(N):
            _direct_forward_image(x, w, b, n, pad_h, pad_w, dil_h, dil_w, out)
    else:
        for n in range(N):
            _gemm_forward_image(x, wm, b, n, *geo, OH, out)


def conv2d_forward_activation(x, w, b, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
                              activation, alpha, pre, out):
    """pre = conv(x, w) + b and out = its activation (``activation``: a code of
    kernels/scalar.py ACTIVATION_CODES, ``alpha`` its parameter); the CUDA twin does both in
    one launch."""
    activate = _fused_forward_kernel(activation, pre, out)
    conv2d_forward(x, w, b, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, pre)
    activate(pre.reshape(-1), alpha, out.reshape(-1))


@njit(cache=True)
def conv2d_backward_input(grad_out, w, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, grad_in):
    """grad_in = d(sum(out * grad_out)) / dx, written in full."""
    N, C = grad_in.shape[0], grad_in.shape[1]
    K, KH, KW = w.shape[0], w.shape[2], w.shape[3]
    OH, OW = grad_out.shape[2], grad_out.shape[3]
    CKK = C * KH * KW
    direct = _use_direct(CKK, stride_h, stride_w)
    band = _band_rows(K, CKK, OH, OW)
    wmT = np.ascontiguousarray(w.reshape(K, CKK).T)
    geo = (KH, KW, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w)
    if _use_parallel(N, K, OH, OW, CKK) and (direct or band > 0):
        _backward_input_par(grad_out, w, wmT, *geo, band, direct, grad_in)
    elif direct:
        for n in range(N):
            _direct_backward_input_image(grad_out, w, n, pad_h, pad_w, dil_h, dil_w, grad_in)
    else:
        for n in range(N):
            _gemm_backward_input_image(grad_out, wmT, n, *geo, OH, grad_in)


@njit(cache=True)
def conv2d_backward_weight(x, grad_out, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, accumulate,
                           grad_w):
    """grad_w = d(sum(out * grad_out)) / dw, or grad_w += it with ``accumulate``."""
    N, C = x.shape[0], x.shape[1]
    K, KH, KW = grad_w.shape[0], grad_w.shape[2], grad_w.shape[3]
    OH, OW = grad_out.shape[2], grad_out.shape[3]
    CKK = C * KH * KW
    direct = _use_direct(CKK, stride_h, stride_w)
    band, rb = _weight_blocks(K, CKK, OH, OW)
    geo = (KH, KW, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w)
    if _use_parallel(N, K, OH, OW, CKK) and (direct or band > 0):
        partial = np.zeros((min(N, _WEIGHT_CHUNKS), K, CKK), np.float64)
        _backward_weight_par(x, grad_out, *geo, band, rb, direct, partial)
    else:
        partial = np.zeros((1, K, CKK), np.float64)
        if direct:
            _direct_backward_weight_images(x, grad_out, 0, N, pad_h, pad_w, dil_h, dil_w,
                                           partial[0].reshape(K, C, KH, KW))
        else:
            _gemm_backward_weight_images(x, grad_out, 0, N, *geo, OH, CKK, partial[0])
    gw2 = grad_w.reshape(K, CKK)
    for k in range(K):
        for r in range(CKK):
            s = 0.0
            for t in range(partial.shape[0]):
                s += partial[t, k, r]
            gw2[k, r] = gw2[k, r] + s if accumulate else s


def conv2d_backward_params(x, grad_out, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, accumulate,
                           grad_w, grad_b):
    """grad_w and grad_b of one layer in one call (the CUDA twin computes both in one launch);
    added into them with ``accumulate``."""
    conv2d_backward_weight(x, grad_out, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, accumulate,
                           grad_w)
    conv2d_backward_bias(grad_out, accumulate, grad_b)


@njit(cache=True)
def conv2d_backward_bias(grad_out, accumulate, grad_b):
    """grad_b[k] = sum of grad_out[:, k] over batch and positions (+= with ``accumulate``)."""
    N, K, OH, OW = grad_out.shape
    g3 = grad_out.reshape(N, K, OH * OW)
    if N * K * OH * OW >= _PARALLEL_MIN_WORK and K > 1:
        _bias_par(g3, accumulate, grad_b)
    else:
        for k in range(K):
            s = _bias_sum(g3, k)
            grad_b[k] = grad_b[k] + s if accumulate else s
