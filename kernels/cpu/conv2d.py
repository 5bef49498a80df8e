"""2-D convolution kernels (NCHW input, OIHW weight), CPU.

Every image is first copied into a zero-padded scratch ``xp`` (C, Hp, Wp) covering exactly the
cells the output reads (Hp = (OH-1)*sh + (KH-1)*dh + 1, likewise Wp; top/left padding pad_h/pad_w,
bottom/right padding whatever the output shape implies, possibly a crop), so no inner loop tests
bounds. Then one of two strategies, picked from the shape:

* GEMM (the general path): im2col of a chunk of images into ``col`` (C*KH*KW, n*OH*OW) (parallel
  over images), one BLAS GEMM through ``np.dot``, and a parallel scatter back to NCHW. Chunks keep
  ``col`` a few MB (cache-resident, no huge allocations).
* direct (unit strides and C*KH*KW <= _DIRECT_MAX_CKK, e.g. a first layer): a GEMM would be thin
  and memory-bound, so each output plane is accumulated tap by tap. Output cell (oh, ow) reads
  flat index q + i*dh*Wp + j*dw of a padded plane, q = oh*Wp + ow, so a plane is one long
  contiguous loop per kernel tap over a "wide" (OH, Wp) output whose extra Wp - OW columns per
  row are dropped.

Inner loops never index with ``row[q + o]``: a possibly negative index makes Numba emit a
wraparound test per element, which blocks vectorization. Long runs read through slices
(``row[o:o + L]``), short ones (im2col) through flat views with unsigned offsets.
"""
import numpy as np
from numba import njit, prange

_FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

# Multiply-adds below which a call runs serially (thread start-up would cost more than it saves).
_PARALLEL_MIN_WORK = 1 << 20
# C*KH*KW at or below which the direct kernels (unit strides) beat im2col + GEMM.
_DIRECT_MAX_CKK = 32
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
# GEMM path: im2col / col2im over a chunk of images, (K, n*P) <-> (n, K, P) layout changes
# ---------------------------------------------------------------------------------------------

@njit(cache=True)
def _im2col_image(x, n, KH, KW, sh, sw, ph, pw, dh, dw, OH, OW, col, c0):
    """col[(c*KH+i)*KW+j, c0 + oh*OW + ow] = padded x[n, c, oh*sh + i*dh, ow*sw + j*dw].

    The runs copied are short (OW), so they index flat views with unsigned offsets: no slice
    set-up per run and no wraparound test per element."""
    C = x.shape[1]
    Hp, Wp = _padded_extent(OH, OW, KH, KW, sh, sw, dh, dw)
    xp = np.empty((C, Hp, Wp), x.dtype)
    _pad_image(x, n, ph, pw, xp)
    xf = xp.reshape(-1)
    cf = col.reshape(-1)
    M = col.shape[1]
    OWu, swu = np.uint64(OW), np.uint64(sw)
    for c in range(C):
        for i in range(KH):
            for j in range(KW):
                r = (c * KH + i) * KW + j
                for oh in range(OH):
                    d0 = np.uint64(r * M + c0 + oh * OW)
                    s0 = np.uint64((c * Hp + oh * sh + i * dh) * Wp + j * dw)
                    if sw == 1:
                        for t in range(OWu):
                            cf[d0 + t] = xf[s0 + t]
                    else:
                        for t in range(OWu):
                            cf[d0 + t] = xf[s0 + t * swu]


@njit(cache=True)
def _col2im_image(col, c0, n, KH, KW, sh, sw, ph, pw, dh, dw, OH, OW, grad_in):
    """grad_in[n] = the sum of the col entries over the input cells they were gathered from."""
    C = grad_in.shape[1]
    Hp, Wp = _padded_extent(OH, OW, KH, KW, sh, sw, dh, dw)
    dxp = np.zeros((C, Hp, Wp), grad_in.dtype)
    df = dxp.reshape(-1)
    cf = col.reshape(-1)
    M = col.shape[1]
    OWu, swu = np.uint64(OW), np.uint64(sw)
    for c in range(C):
        for i in range(KH):
            for j in range(KW):
                r = (c * KH + i) * KW + j
                for oh in range(OH):
                    s0 = np.uint64(r * M + c0 + oh * OW)
                    d0 = np.uint64((c * Hp + oh * sh + i * dh) * Wp + j * dw)
                    if sw == 1:
                        for t in range(OWu):
                            df[d0 + t] += cf[s0 + t]
                    else:
                        for t in range(OWu):
                            df[d0 + t * swu] += cf[s0 + t]
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


@njit(cache=True, parallel=True)
def _direct_forward_par(x, w, b, ph, pw, dh, dw, out):
    for n in prange(x.shape[0]):
        _direct_forward_image(x, w, b, n, ph, pw, dh, dw, out)


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


@njit(cache=True, parallel=True)
def _direct_backward_input_par(grad_out, w, ph, pw, dh, dw, grad_in):
    for n in prange(grad_in.shape[0]):
        _direct_backward_input_image(grad_out, w, n, ph, pw, dh, dw, grad_in)


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


@njit(cache=True, parallel=True)
def _direct_backward_weight_par(x, grad_out, ph, pw, dh, dw, partial):
    """partial[t] accumulates the gradient of the t-th contiguous chunk of images."""
    T = partial.shape[0]
    N = x.shape[0]
    for t in prange(T):
        _direct_backward_weight_images(x, grad_out, t * N // T, (t + 1) * N // T,
                                       ph, pw, dh, dw, partial[t])


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
def _use_direct(CKK, stride_h, stride_w):
    return CKK <= _DIRECT_MAX_CKK and stride_h == 1 and stride_w == 1


@njit(cache=True)
def conv2d_forward(x, w, b, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, out):
    """out = conv(x, w) + b: x (N,C,H,W), w (K,C,KH,KW), b (K,), out (N,K,OH,OW)."""
    N, C = x.shape[0], x.shape[1]
    K, KH, KW = w.shape[0], w.shape[2], w.shape[3]
    OH, OW = out.shape[2], out.shape[3]
    CKK, P = C * KH * KW, OH * OW
    parallel = _use_parallel(N, K, OH, OW, CKK)
    geo = (stride_h, stride_w, pad_h, pad_w, dil_h, dil_w)
    if _use_direct(CKK, stride_h, stride_w):
        if parallel:
            _direct_forward_par(x, w, b, pad_h, pad_w, dil_h, dil_w, out)
        else:
            for n in range(N):
                _direct_forward_image(x, w, b, n, pad_h, pad_w, dil_h, dil_w, out)
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
    if _use_direct(CKK, stride_h, stride_w):
        if parallel:
            _direct_backward_input_par(grad_out, w, pad_h, pad_w, dil_h, dil_w, grad_in)
        else:
            for n in range(N):
                _direct_backward_input_image(grad_out, w, n, pad_h, pad_w, dil_h, dil_w, grad_in)
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
    if _use_direct(CKK, stride_h, stride_w):
        T = min(N, _WEIGHT_CHUNKS) if parallel else 1
        partial = np.zeros((T, K, C, KH, KW), np.float64)
        if parallel:
            _direct_backward_weight_par(x, grad_out, pad_h, pad_w, dil_h, dil_w, partial)
        else:
            _direct_backward_weight_images(x, grad_out, 0, N, pad_h, pad_w, dil_h, dil_w, partial[0])
        part2 = partial.reshape(T, K, CKK)
        acc = part2[0].copy()
        for t in range(1, T):
            acc += part2[t]
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
