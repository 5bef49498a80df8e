"""2-D convolution kernels (NCHW input, OIHW weight), CPU.

The public kernels are plain Python: each picks one of three strategies from the shapes and
calls that strategy's worker, one compiled function per strategy for all three passes (forward,
input gradient, weight gradient), so a model compiles only the strategies its layers use:

* winograd (3x3, unit strides and dilations, C*9 > _DIRECT_MAX_CKK): Winograd F(2x2, 3x3),
  16 multiplies per 2x2 output tile and channel instead of 36; see _conv_winograd.py.
* direct (unit strides and C*KH*KW <= _DIRECT_MAX_CKK, e.g. a first layer): a GEMM would be thin
  and memory-bound, so each output plane is accumulated tap by tap. Output cell (oh, ow) reads
  flat index q + i*dh*Wp + j*dw of a padded plane, q = oh*Wp + ow, so a plane is one long
  contiguous loop per kernel tap over a "wide" (OH, Wp) output whose extra Wp - OW columns per
  row are dropped.
* GEMM (everything else: strides, dilations, other kernel sizes): im2col of a block of output
  rows (spanning images when images are small) into ``col`` (rows*OW, KH*KW*C), one BLAS GEMM,
  and a copy back to NCHW (plus bias). The im2col reads a channels-last copy of the padded image,
  so one output position's taps are runs of C contiguous channels (KW*C with unit dilation)
  whatever the stride; NCHW rows would give runs of OW elements, strided by the stride (7 for a
  stride-2 layer on 14x14 inputs). The weight goes channels last too, (K, KH*KW*C); the weight
  gradient multiplies the output gradient (K x rows) by ``col``; all GEMMs run on BLAS with
  leading dimensions, no copies of the operands.

Work is split into units of whole images (the weight gradient: a fixed number of chunks of
images, each summing into its own partial), a function of the shapes only; a large call runs
contiguous ranges of units on numba.get_num_threads() threads (see _threads.run), so the bits do not
depend on the thread count. The threads are the caller's and Python helper threads that wait
blocked (never spinning) and call the ``nogil`` workers: no ``parallel=True``, whose compilation
cost most of this module's, and no spinning thread pool to contend with BLAS or other processes. A block of rows/tiles is sized to stay in a core's L2 cache. Every
image is first copied into a zero-padded scratch covering exactly the cells the output reads
(Hp = (OH-1)*sh + (KH-1)*dh + 1, likewise Wp; top/left padding pad_h/pad_w, bottom/right padding
whatever the output shape implies, possibly a crop), so no inner loop tests bounds.

The weight gradient sums the chunk partials in float64 at the end; the bias gradient sums
per-plane sums (_conv_common.plane_sums, computed during the weight gradient's pass when both
are asked for) in float64. With ``accumulate`` that last step adds into grad_w / grad_b instead
of storing (in float64, then rounded once; a layer called several times in one step sums its
calls' gradients, with no extra pass).

Inner loops never index with ``row[q + o]``: a possibly negative index makes Numba emit a
wraparound test per element, which blocks vectorization. Long runs read through slices
(``row[o:o + L]``), short ones (im2col) through flat views with unsigned offsets.
"""
import numpy as np
from numba import njit

from . import _conv_winograd as _wino
from ._blas import AT0, NO_TRANS, TRANS, gemm
from ._conv_common import BACKWARD_INPUT, BACKWARD_WEIGHT, FORWARD, bias_gradient, plane_sums
from ._jit import HELPER
from ._threads import run as _run
from .activations import _fused_forward_kernel

_FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

# Multiply-adds below which a call runs serially (thread start-up would cost more than it saves).
_PARALLEL_MIN_WORK = 1 << 20
# C*KH*KW at or below which the direct kernels (unit strides) beat im2col + GEMM.
_DIRECT_MAX_CKK = 32
# Winograd only where its tiles waste little: outputs / (tiles * 4) at least this.
_WINOGRAD_MIN_FILL = 0.55
# Image chunks a parallel weight gradient is split into (fixed, so results do not depend on the
# thread count); each chunk sums into its own float64 partial gradient. 8 rather than 16: fewer
# partials to clear and add (a Winograd 7x7 K128 layer's are 0.5 MB each) made fwd+bwd of the
# benchmark layers 2-6% faster on 2 cores, and still lets 8 threads share the work.
_WEIGHT_CHUNKS = 8
# GEMM path: bytes of col + GEMM result one block of output rows may take (L2-resident).
_GEMM_BLOCK_BYTES = 1 << 19
# The weight-gradient partials of a pass that is not a weight gradient.
_NO_PARTS = np.zeros((0, 1, 1), np.float64)


# ---------------------------------------------------------------------------------------------
# padded images
# ---------------------------------------------------------------------------------------------

@njit(**HELPER)
def _padded_extent(OH, OW, KH, KW, sh, sw, dh, dw):
    """(Hp, Wp): the padded-input extent the output reads."""
    return (OH - 1) * sh + (KH - 1) * dh + 1, (OW - 1) * sw + (KW - 1) * dw + 1


@njit(**HELPER)
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


@njit(**HELPER)
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


@njit(**HELPER)
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
# GEMM path: blocks of output rows (rho = (n - n0)*OH + oh), im2col, one GEMM, scatter back
# ---------------------------------------------------------------------------------------------

def _gemm_block_rows(CKK, K, OW, itemsize):
    """Output rows per block: col (CKK x rows*OW) and the GEMM result within
    _GEMM_BLOCK_BYTES (at least one row)."""
    return max(1, _GEMM_BLOCK_BYTES // (itemsize * (CKK + K) * OW))


@njit(**HELPER)
def _pad_image_hwc(x, n, ph, pw, xh):
    """xh (Hp, Wp, C) = zeros with image n of x, channels last, at offset (ph, pw), cropped to
    xh's extent."""
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    Hp, Wp = xh.shape[0], xh.shape[1]
    xh[:] = 0.0
    h0, h1 = max(0, -ph), min(H, Hp - ph)
    w0, w1 = max(0, -pw), min(W, Wp - pw)
    xf, hf = x.reshape(-1), xh.reshape(-1)
    plane = np.uint64(H * W)
    for h in range(h0, h1):
        for w in range(w0, w1):                 # contiguous writes, reads one plane apart
            d0 = np.uint64(((h + ph) * Wp + w + pw) * C)
            s0 = np.uint64((n * C * H + h) * W + w)
            for c in range(np.uint64(C)):
                hf[d0 + c] = xf[s0 + c * plane]


@njit(**HELPER)
def _crop_image_hwc(dxh, n, ph, pw, grad_in):
    """grad_in[n] = the image part of the channels-last padded gradient dxh (zero where dxh
    does not reach)."""
    C, H, W = grad_in.shape[1], grad_in.shape[2], grad_in.shape[3]
    Hp, Wp = dxh.shape[0], dxh.shape[1]
    h0, h1 = max(0, -ph), min(H, Hp - ph)
    w0, w1 = max(0, -pw), min(W, Wp - pw)
    if h1 - h0 < H or w1 - w0 < W:
        grad_in[n] = 0.0
    gf, df = grad_in.reshape(-1), dxh.reshape(-1)
    Cu = np.uint64(C)
    for h in range(h0, h1):
        for c in range(C):
            d0 = np.uint64(((n * C + c) * H + h) * W)
            s0 = np.uint64(((h + ph) * Wp + pw) * C + c)
            for w in range(w0, w1):
                gf[d0 + np.uint64(w)] = df[s0 + np.uint64(w) * Cu]


@njit(**HELPER)
def _im2col_rows(xh, KH, KW, sh, sw, dh, dw, oh0, oh1, OW, col, m0):
    """col[m0 + (oh-oh0)*OW + ow, (i*KW + j)*C + c] = xh[oh*sh + i*dh, ow*sw + j*dw, c] for
    oh0 <= oh < oh1: one row of taps per output position, from the channels-last padded image.

    A tap is a run of C contiguous channels, and with dw = 1 the KW taps of a kernel row are
    one run of KW*C (flat views, unsigned offsets: no slice set-up, no wraparound test)."""
    Hp, Wp, C = xh.shape
    xf, cf = xh.reshape(-1), col.reshape(-1)
    CKK = col.shape[1]
    run = KW * C if dw == 1 else C
    runu, taps = np.uint64(run), (1 if dw == 1 else KW)
    for oh in range(oh0, oh1):
        for ow in range(OW):
            d = (m0 + (oh - oh0) * OW + ow) * CKK
            for i in range(KH):
                for j in range(taps):
                    d0 = np.uint64(d + (i * KW + j) * C)
                    s0 = np.uint64(((oh * sh + i * dh) * Wp + ow * sw + j * dw) * C)
                    for t in range(runu):
                        cf[d0 + t] = xf[s0 + t]


@njit(**HELPER)
def _col2im_rows(col, m0, KH, KW, sh, sw, dh, dw, oh0, oh1, OW, dxh):
    """dxh[oh*sh + i*dh, ow*sw + j*dw, c] += col[m0 + (oh-oh0)*OW + ow, (i*KW + j)*C + c]: the
    adjoint of _im2col_rows."""
    Hp, Wp, C = dxh.shape
    df, cf = dxh.reshape(-1), col.reshape(-1)
    CKK = col.shape[1]
    run = KW * C if dw == 1 else C
    runu, taps = np.uint64(run), (1 if dw == 1 else KW)
    for oh in range(oh0, oh1):
        for ow in range(OW):
            s = (m0 + (oh - oh0) * OW + ow) * CKK
            for i in range(KH):
                for j in range(taps):
                    s0 = np.uint64(s + (i * KW + j) * C)
                    d0 = np.uint64(((oh * sh + i * dh) * Wp + ow * sw + j * dw) * C)
                    for t in range(runu):
                        df[d0 + t] += cf[s0 + t]


@njit(**HELPER)
def _block_segments(rho0, rho1, OH):
    """The images a block of output rows rho0..rho1-1 spans: (image offset, oh0, oh1, column
    offset in the block) per image, as an (s, 4) array."""
    first, last = rho0 // OH, (rho1 - 1) // OH
    seg = np.empty((last - first + 1, 4), np.int64)
    for i in range(first, last + 1):
        a, b = max(rho0, i * OH), min(rho1, (i + 1) * OH)
        seg[i - first, 0] = i
        seg[i - first, 1] = a - i * OH
        seg[i - first, 2] = b - i * OH
        seg[i - first, 3] = (a - rho0)
    return seg


@njit(**HELPER)
def _gather_grad_rows(g3, n, oh0, oh1, OW, K, gbuf, m, r0):
    """gbuf (K x m) columns r0*OW.. = grad_out[n, :, oh0:oh1] (one contiguous run per k)."""
    L = (oh1 - oh0) * OW
    for k in range(K):
        src = g3[n, k, oh0 * OW:oh1 * OW]
        dst = gbuf[k * m + r0 * OW:k * m + r0 * OW + L]
        for q in range(L):
            dst[q] = src[q]


@njit(**HELPER)
def _gemm_forward_images(x, wm, b, n0, n1, KH, KW, sh, sw, ph, pw, dh, dw, RB, out):
    """out[n0:n1] = wm @ im2col(x)^T + b, RB output rows per GEMM (wm: the weight as
    (K, KH*KW*C), channels last)."""
    C = x.shape[1]
    K, CKK = wm.shape
    OH, OW = out.shape[2], out.shape[3]
    Hp, Wp = _padded_extent(OH, OW, KH, KW, sh, sw, dh, dw)
    xh = np.empty((Hp, Wp, C), x.dtype)
    colbuf = np.empty(CKK * RB * OW, x.dtype)
    resbuf = np.empty(K * RB * OW, x.dtype)
    wf = wm.reshape(-1)
    o3 = out.reshape(out.shape[0], K, OH * OW)
    rows = (n1 - n0) * OH
    for rho0 in range(0, rows, RB):
        rho1 = min(rows, rho0 + RB)
        m = (rho1 - rho0) * OW
        col = colbuf[:CKK * m].reshape(m, CKK)
        seg = _block_segments(rho0, rho1, OH)
        for s in range(seg.shape[0]):
            _pad_image_hwc(x, n0 + seg[s, 0], ph, pw, xh)
            _im2col_rows(xh, KH, KW, sh, sw, dh, dw, seg[s, 1], seg[s, 2], OW, col,
                         seg[s, 3] * OW)
        # res (K x m) = wm (K x CKK) @ col^T (CKK x m)
        gemm(NO_TRANS, TRANS, K, m, CKK, 1.0, wf, AT0, CKK, colbuf, AT0, CKK, 0.0, resbuf, AT0,
             m)
        for s in range(seg.shape[0]):
            n, oh0, oh1, r0 = n0 + seg[s, 0], seg[s, 1], seg[s, 2], seg[s, 3]
            L = (oh1 - oh0) * OW
            for k in range(K):
                bk = b[k]
                src = resbuf[k * m + r0 * OW:k * m + r0 * OW + L]
                dst = o3[n, k, oh0 * OW:oh1 * OW]
                for q in range(L):
                    dst[q] = src[q] + bk


@njit(**HELPER)
def _gemm_backward_input_images(grad_out, wm, n0, n1, KH, KW, sh, sw, ph, pw, dh, dw, RB,
                                grad_in):
    """grad_in[n0:n1] = col2im(grad_out^T @ wm), RB output rows per GEMM (wm as in
    _gemm_forward_images)."""
    C = grad_in.shape[1]
    K, CKK = wm.shape
    OH, OW = grad_out.shape[2], grad_out.shape[3]
    Hp, Wp = _padded_extent(OH, OW, KH, KW, sh, sw, dh, dw)
    dxh = np.empty((Hp, Wp, C), grad_in.dtype)
    gbuf = np.empty(K * RB * OW, grad_in.dtype)
    dbuf = np.empty(CKK * RB * OW, grad_in.dtype)
    wf = wm.reshape(-1)
    g3 = grad_out.reshape(grad_out.shape[0], K, OH * OW)
    rows = (n1 - n0) * OH
    for rho0 in range(0, rows, RB):
        rho1 = min(rows, rho0 + RB)
        m = (rho1 - rho0) * OW
        seg = _block_segments(rho0, rho1, OH)
        for s in range(seg.shape[0]):
            _gather_grad_rows(g3, n0 + seg[s, 0], seg[s, 1], seg[s, 2], OW, K, gbuf, m,
                              seg[s, 3])
        # dcol (m x CKK) = gbuf^T (m x K) @ wm (K x CKK)
        gemm(TRANS, NO_TRANS, m, CKK, K, 1.0, gbuf, AT0, m, wf, AT0, CKK, 0.0, dbuf, AT0, CKK)
        dcol = dbuf[:CKK * m].reshape(m, CKK)
        for s in range(seg.shape[0]):
            n, oh0, oh1, r0 = n0 + seg[s, 0], seg[s, 1], seg[s, 2], seg[s, 3]
            if oh0 == 0:
                dxh[:] = 0.0
            _col2im_rows(dcol, r0 * OW, KH, KW, sh, sw, dh, dw, oh0, oh1, OW, dxh)
            if oh1 == OH:
                _crop_image_hwc(dxh, n, ph, pw, grad_in)


@njit(**HELPER)
def _gemm_backward_weight_images(x, grad_out, n0, n1, KH, KW, sh, sw, ph, pw, dh, dw, RB, acc):
    """acc (K, C*KH*KW) float64 += sum over images n0..n1-1 of grad_out[n] @ im2col(x[n]),
    computed per block of RB output rows as grad_out (K x rows) @ col (rows x KH*KW*C), the
    blocks summed by the GEMMs (beta = 1) in the data's dtype, channels last; reordered to
    (C, KH, KW) at the end."""
    C = x.shape[1]
    K, CKK = acc.shape
    OH, OW = grad_out.shape[2], grad_out.shape[3]
    Hp, Wp = _padded_extent(OH, OW, KH, KW, sh, sw, dh, dw)
    xh = np.empty((Hp, Wp, C), x.dtype)
    colbuf = np.empty(CKK * RB * OW, x.dtype)
    gbuf = np.empty(K * RB * OW, x.dtype)
    accl = np.zeros(K * CKK, x.dtype)
    g3 = grad_out.reshape(grad_out.shape[0], K, OH * OW)
    rows = (n1 - n0) * OH
    for rho0 in range(0, rows, RB):
        rho1 = min(rows, rho0 + RB)
        m = (rho1 - rho0) * OW
        col = colbuf[:CKK * m].reshape(m, CKK)
        seg = _block_segments(rho0, rho1, OH)
        for s in range(seg.shape[0]):
            n, oh0, oh1, r0 = n0 + seg[s, 0], seg[s, 1], seg[s, 2], seg[s, 3]
            _pad_image_hwc(x, n, ph, pw, xh)
            _im2col_rows(xh, KH, KW, sh, sw, dh, dw, oh0, oh1, OW, col, r0 * OW)
            _gather_grad_rows(g3, n, oh0, oh1, OW, K, gbuf, m, r0)
        gemm(NO_TRANS, NO_TRANS, K, CKK, m, 1.0, gbuf, AT0, m, colbuf, AT0, CKK, 1.0, accl, AT0,
             CKK)
    for k in range(K):
        for c in range(C):
            for i in range(KH):
                for j in range(KW):
                    acc[k, (c * KH + i) * KW + j] += accl[k * CKK + (i * KW + j) * C + c]


# ---------------------------------------------------------------------------------------------
# direct path (small C*KH*KW, unit strides)
# ---------------------------------------------------------------------------------------------

@njit(**HELPER)
def _wide_grad(g, n, k, Wp, gw):
    """gw (flat, (OH-1)*Wp + OW) = g[n, k] laid out with row stride Wp. The Wp - OW gap cells
    between rows are never written: the caller zeroes ``gw`` once."""
    K, OH, OW = g.shape[1], g.shape[2], g.shape[3]
    _copy_block(g.reshape(-1), (n * K + k) * OH * OW, OW, gw, AT0, Wp, OH, OW)


@njit(**HELPER, fastmath=_FASTMATH)
def _direct_forward_3x3(xf, w, bk, k, L, Wp, dh, dw, acc):
    """acc[:L] = bk + the nine taps of output channel k of a 3x3 kernel summed over the padded
    planes xf (C, Hp*Wp): one pass per input channel that loads each output once (the three-tap
    passes of _direct_forward_images load and store it three times: measured 2x slower)."""
    r1, r2 = dh * Wp, 2 * dh * Wp
    for c in range(xf.shape[0]):
        xc = xf[c]
        w00, w01, w02 = w[k, c, 0, 0], w[k, c, 0, 1], w[k, c, 0, 2]
        w10, w11, w12 = w[k, c, 1, 0], w[k, c, 1, 1], w[k, c, 1, 2]
        w20, w21, w22 = w[k, c, 2, 0], w[k, c, 2, 1], w[k, c, 2, 2]
        x0, x1, x2 = xc[0:L], xc[dw:dw + L], xc[2 * dw:2 * dw + L]
        y0, y1, y2 = xc[r1:r1 + L], xc[r1 + dw:r1 + dw + L], xc[r1 + 2 * dw:r1 + 2 * dw + L]
        z0, z1, z2 = xc[r2:r2 + L], xc[r2 + dw:r2 + dw + L], xc[r2 + 2 * dw:r2 + 2 * dw + L]
        for q in range(L):
            acc[q] = (acc[q] if c > 0 else bk) + (
                w00 * x0[q] + w01 * x1[q] + w02 * x2[q] + w10 * y0[q] + w11 * y1[q]
                + w12 * y2[q] + w20 * z0[q] + w21 * z1[q] + w22 * z2[q])


@njit(**HELPER, fastmath=_FASTMATH)
def _direct_forward_images(x, w, b, n0, n1, ph, pw, dh, dw, out):
    """out[n0:n1] for unit strides: per output plane, one contiguous loop per kernel tap (3x3:
    per input channel, _direct_forward_3x3)."""
    K, C, KH, KW = w.shape
    OH, OW = out.shape[2], out.shape[3]
    Hp, Wp = _padded_extent(OH, OW, KH, KW, 1, 1, dh, dw)
    xp = np.empty((C, Hp, Wp), x.dtype)
    L = (OH - 1) * Wp + OW
    xf = xp.reshape(C, Hp * Wp)
    acc = np.empty(L, x.dtype)
    for n in range(n0, n1):
        _pad_image(x, n, ph, pw, xp)
        for k in range(K):
            if KH == 3 and KW == 3:
                _direct_forward_3x3(xf, w, b[k], k, L, Wp, dh, dw, acc)
                _copy_block(acc, AT0, Wp, out.reshape(-1), (n * K + k) * OH * OW, OW, OH, OW)
                continue
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
            _copy_block(acc, AT0, Wp, out.reshape(-1), (n * K + k) * OH * OW, OW, OH, OW)


@njit(**HELPER, fastmath=_FASTMATH)
def _direct_backward_input_images(grad_out, w, n0, n1, ph, pw, dh, dw, grad_in):
    """grad_in[n0:n1] for unit strides: each kernel tap scatters a whole (wide) gradient plane."""
    C = grad_in.shape[1]
    K, KH, KW = w.shape[0], w.shape[2], w.shape[3]
    OH, OW = grad_out.shape[2], grad_out.shape[3]
    Hp, Wp = _padded_extent(OH, OW, KH, KW, 1, 1, dh, dw)
    dxp = np.empty((C, Hp, Wp), grad_in.dtype)
    L = (OH - 1) * Wp + OW
    dxf = dxp.reshape(C, Hp * Wp)
    gw = np.zeros(L, grad_in.dtype)
    for n in range(n0, n1):
        dxp[:] = 0.0
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


@njit(**HELPER, fastmath=_FASTMATH)
def _direct_backward_weight_images(x, grad_out, KH, KW, n0, n1, ph, pw, dh, dw, acc):
    """acc (K, C*KH*KW) float64 += the weight gradient of images n0..n1-1 (unit strides): one
    dot product of a wide gradient plane with a shifted padded input plane per tap."""
    C = x.shape[1]
    K = acc.shape[0]
    OH, OW = grad_out.shape[2], grad_out.shape[3]
    Hp, Wp = _padded_extent(OH, OW, KH, KW, 1, 1, dh, dw)
    xp = np.empty((C, Hp, Wp), x.dtype)
    xf = xp.reshape(C, Hp * Wp)
    L = (OH - 1) * Wp + OW
    gw = np.zeros(L, x.dtype)
    zero = np.zeros(1, x.dtype)[0]          # per-plane sums in the input dtype vectorize fully
    a4 = acc.reshape(K, C, KH, KW)
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
                        a4[k, c, i, j] += s0
                        a4[k, c, i, j + 1] += s1
                        a4[k, c, i, j + 2] += s2
                        j += 3
                    while j < KW:
                        o = i * dh * Wp + j * dw
                        xs = xf[c, o:o + L]
                        s = zero
                        for q in range(L):
                            s += gw[q] * xs[q]
                        a4[k, c, i, j] += s
                        j += 1


# ---------------------------------------------------------------------------------------------
# one worker per strategy: units u0..u1-1 of one pass (see _conv_winograd.images for the roles
# of xs, ys, the units and the chunks); the threads of a parallel call each run a range of units
# ---------------------------------------------------------------------------------------------

@njit(cache=True, nogil=True)
def _direct_images(mode, xs, ys, w, b, parts, planes, ph, pw, dh, dw, IB, u0, u1):
    """Direct strategy: FORWARD ys = conv(xs, w) + b; BACKWARD_INPUT xs = the input gradient
    for output gradient ys; BACKWARD_WEIGHT parts[t] (K, C*KH*KW) float64 += the weight
    gradient of the t-th chunk of images (w: any array of the weight's shape), and the bias's
    plane sums into ``planes`` when it has rows."""
    N, KH, KW = xs.shape[0], w.shape[2], w.shape[3]
    for u in range(u0, u1):
        if mode == BACKWARD_WEIGHT:
            # image by image: the bias's sums read each gradient image while it is in cache
            # (after the whole chunk, a second pass from memory: 0.6 of 2.2 ms for a first layer)
            for n in range(u * N // parts.shape[0], (u + 1) * N // parts.shape[0]):
                _direct_backward_weight_images(xs, ys, KH, KW, n, n + 1, ph, pw, dh, dw, parts[u])
                if planes.shape[0] > 0:
                    plane_sums(ys, n, n + 1, planes)
        elif mode == FORWARD:
            _direct_forward_images(xs, w, b, u * IB, min(N, (u + 1) * IB), ph, pw, dh, dw, ys)
        else:
            _direct_backward_input_images(ys, w, u * IB, min(N, (u + 1) * IB), ph, pw, dh, dw,
                                          xs)


@njit(cache=True, nogil=True)
def _gemm_images(mode, xs, ys, wm, b, parts, planes, KH, KW, sh, sw, ph, pw, dh, dw, RB, IB,
                 u0, u1):
    """GEMM strategy, RB output rows per block: FORWARD and BACKWARD_INPUT with wm = w as
    (K, KH*KW*C) (_channels_last); BACKWARD_WEIGHT as _direct_images (wm unused)."""
    N = xs.shape[0]
    for u in range(u0, u1):
        if mode == BACKWARD_WEIGHT:
            n0, n1 = u * N // parts.shape[0], (u + 1) * N // parts.shape[0]
            _gemm_backward_weight_images(xs, ys, n0, n1, KH, KW, sh, sw, ph, pw, dh, dw, RB,
                                         parts[u])
            if planes.shape[0] > 0:
                plane_sums(ys, n0, n1, planes)
        elif mode == FORWARD:
            _gemm_forward_images(xs, wm, b, u * IB, min(N, (u + 1) * IB), KH, KW, sh, sw, ph, pw,
                                 dh, dw, RB, ys)
        else:
            _gemm_backward_input_images(ys, wm, u * IB, min(N, (u + 1) * IB), KH, KW, sh, sw, ph,
                                        pw, dh, dw, RB, xs)


@njit(cache=True, nogil=True)
def _bias_planes(g, planes, IB, u0, u1):
    """plane_sums over units of IB images (conv2d_backward_bias)."""
    N = g.shape[0]
    for u in range(u0, u1):
        plane_sums(g, u * IB, min(N, (u + 1) * IB), planes)


@njit(cache=True)
def _sum_partials(partial, accumulate, grad_w):
    """grad_w (K, CKK) = (or +=, with ``accumulate``) the sum over chunks of partial (T, K, CKK),
    in float64 and in chunk order."""
    T, K, CKK = partial.shape
    for k in range(K):
        for r in range(CKK):
            s = 0.0
            for t in range(T):
                s += partial[t, k, r]
            grad_w[k, r] = grad_w[k, r] + s if accumulate else s


# ---------------------------------------------------------------------------------------------
# strategy choice (plain Python: a model compiles only the strategies its layers use)
# ---------------------------------------------------------------------------------------------

def _strategy(C, KH, KW, OH, OW, stride_h, stride_w, dil_h, dil_w):
    """"direct", "winograd" or "gemm" for a layer of this geometry."""
    unit = stride_h == 1 and stride_w == 1
    if unit and C * KH * KW <= _DIRECT_MAX_CKK:
        return "direct"
    if unit and KH == 3 and KW == 3 and dil_h == 1 and dil_w == 1 and \
            OH * OW >= _WINOGRAD_MIN_FILL * 4 * ((OH + 1) // 2) * ((OW + 1) // 2):
        return "winograd"
    return "gemm"


def _use_parallel(N, K, OH, OW, CKK):
    return N > 1 and N * K * OH * OW * CKK >= _PARALLEL_MIN_WORK


def _blocking(N, rows_per_image, max_rows):
    """(RB, IB): rows (output rows or tile rows) per block and images per unit. A unit takes
    enough small images for about one block (at most N / (2*_WEIGHT_CHUNKS) of them, so that
    every thread gets work); its rows are split into equal blocks of at most ``max_rows``."""
    IB = max(1, min(3 * max_rows // (2 * rows_per_image), -(-N // (2 * _WEIGHT_CHUNKS))))
    rows = IB * rows_per_image
    blocks = -(-rows // max_rows)
    return -(-rows // blocks), IB


def _plan(x_shape, w_shape, out_hw, strides, dils, itemsize, weight=False):
    """(strategy, parallel, RB, IB) of a layer; ``weight``: for the weight gradient, whose
    Winograd blocks take twice the tile rows."""
    N, C = x_shape[0], x_shape[1]
    K, KH, KW = w_shape[0], w_shape[2], w_shape[3]
    OH, OW = out_hw
    how = _strategy(C, KH, KW, OH, OW, *strides, *dils)
    par = _use_parallel(N, K, OH, OW, C * KH * KW)
    if how == "winograd":
        rows = _wino.tile_rows_per_block(C, K, (OW + 1) // 2, itemsize) * (2 if weight else 1)
        return (how, par) + _blocking(N, (OH + 1) // 2, rows)
    if how == "gemm":
        return (how, par) + _blocking(N, OH, _gemm_block_rows(C * KH * KW, K, OW, itemsize))
    return how, par, 0, 1


def _channels_last(w):
    """The weight (K, C, KH, KW) as (K, KH*KW*C), the order of the GEMM path's im2col rows."""
    return np.ascontiguousarray(w.transpose(0, 2, 3, 1)).reshape(w.shape[0], -1)


def _units(N, IB):
    return -(-N // IB)


# ---------------------------------------------------------------------------------------------
# public kernels
# ---------------------------------------------------------------------------------------------

def conv2d_forward(x, w, b, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, out):
    """out = conv(x, w) + b: x (N,C,H,W), w (K,C,KH,KW), b (K,), out (N,K,OH,OW)."""
    N, K, C = x.shape[0], w.shape[0], w.shape[1]
    how, par, RB, IB = _plan(x.shape, w.shape, out.shape[2:], (stride_h, stride_w),
                             (dil_h, dil_w), x.itemsize)
    none = np.empty((0, K), x.dtype)
    if how == "winograd":
        U = np.empty((1, 16, C, K), x.dtype)
        _wino.weight_transform(w, True, U[0])
        _run(_wino.images, (FORWARD, x, out, U, b, none, pad_h, pad_w, RB, IB), _units(N, IB),
             par)
    elif how == "direct":
        _run(_direct_images, (FORWARD, x, out, w, b, _NO_PARTS, none, pad_h, pad_w, dil_h,
                              dil_w, IB), _units(N, IB), par)
    else:
        _run(_gemm_images, (FORWARD, x, out, _channels_last(w), b, _NO_PARTS, none,
                            *w.shape[2:], stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, RB,
                            IB), _units(N, IB), par)


def conv2d_forward_activation(x, w, b, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
                              activation, alpha, pre, out):
    """pre = conv(x, w) + b and out = its activation (``activation``: a code of
    kernels/scalar.py ACTIVATION_CODES, ``alpha`` its parameter); the CUDA twin does both in
    one launch."""
    activate = _fused_forward_kernel(activation, pre, out)
    conv2d_forward(x, w, b, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, pre)
    activate(pre.reshape(-1), alpha, out.reshape(-1))


def conv2d_backward_input(grad_out, w, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, grad_in):
    """grad_in = d(sum(out * grad_out)) / dx, written in full."""
    N, K, C = grad_in.shape[0], w.shape[0], w.shape[1]
    how, par, RB, IB = _plan(grad_in.shape, w.shape, grad_out.shape[2:], (stride_h, stride_w),
                             (dil_h, dil_w), grad_in.itemsize)
    none = np.empty((0, K), grad_in.dtype)
    b = np.empty(0, grad_in.dtype)
    if how == "winograd":
        U = np.empty((1, 16, K, C), w.dtype)
        _wino.weight_transform(w, False, U[0])
        _run(_wino.images, (BACKWARD_INPUT, grad_in, grad_out, U, b, none, pad_h, pad_w, RB,
                            IB), _units(N, IB), par)
    elif how == "direct":
        _run(_direct_images, (BACKWARD_INPUT, grad_in, grad_out, w, b, _NO_PARTS, none, pad_h,
                              pad_w, dil_h, dil_w, IB), _units(N, IB), par)
    else:
        _run(_gemm_images, (BACKWARD_INPUT, grad_in, grad_out, _channels_last(w), b, _NO_PARTS,
                            none,
                            *w.shape[2:], stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, RB,
                            IB), _units(N, IB), par)


def _backward_weight(x, grad_out, geometry, accumulate, grad_w, grad_b):
    """conv2d_backward_weight, and the bias gradient in the same pass when ``grad_b`` is given."""
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w = geometry
    N, K, C = x.shape[0], grad_w.shape[0], grad_w.shape[1]
    how, par, RB, IB = _plan(x.shape, grad_w.shape, grad_out.shape[2:], (stride_h, stride_w),
                             (dil_h, dil_w), x.itemsize, weight=True)
    chunks = min(N, _WEIGHT_CHUNKS) if par else 1
    planes = np.empty((N if grad_b is not None else 0, K), x.dtype)
    b = np.empty(0, x.dtype)
    if how == "winograd":
        # chunk partials of the transformed gradient (16, K, C), in the data's dtype
        parts = np.zeros((chunks, 16, K, C), x.dtype)
        _run(_wino.images, (BACKWARD_WEIGHT, x, grad_out, parts, b, planes, pad_h, pad_w, RB,
                            IB), chunks, par)
        _wino.weight_gradient(parts, accumulate, grad_w)
    else:
        parts = np.zeros((chunks, K, grad_w.size // K), np.float64)
        if how == "direct":
            _run(_direct_images, (BACKWARD_WEIGHT, x, grad_out, grad_w, b, parts, planes, pad_h,
                                  pad_w, dil_h, dil_w, IB), chunks, par)
        else:
            _run(_gemm_images, (BACKWARD_WEIGHT, x, grad_out, grad_w.reshape(K, -1), b, parts,
                                planes, *grad_w.shape[2:], stride_h, stride_w, pad_h, pad_w,
                                dil_h, dil_w, RB, IB), chunks, par)
        _sum_partials(parts, accumulate, grad_w.reshape(K, -1))
    if grad_b is not None:
        bias_gradient(planes, accumulate, grad_b)


def conv2d_backward_weight(x, grad_out, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, accumulate,
                           grad_w):
    """grad_w = d(sum(out * grad_out)) / dw, or grad_w += it with ``accumulate``."""
    _backward_weight(x, grad_out, (stride_h, stride_w, pad_h, pad_w, dil_h, dil_w), accumulate,
                     grad_w, None)


def conv2d_backward_params(x, grad_out, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, accumulate,
                           grad_w, grad_b):
    """grad_w and grad_b of one layer in one call (the bias's sums ride along the weight
    gradient's pass over grad_out; the CUDA twin computes both in one launch); added into them
    with ``accumulate``."""
    _backward_weight(x, grad_out, (stride_h, stride_w, pad_h, pad_w, dil_h, dil_w), accumulate,
                     grad_w, grad_b)


def conv2d_backward_bias(grad_out, accumulate, grad_b):
    """grad_b[k] = sum of grad_out[:, k] over batch and positions (+= with ``accumulate``)."""
    N, K = grad_out.shape[0], grad_out.shape[1]
    planes = np.empty((N, K), grad_out.dtype)
    IB = -(-N // (2 * _WEIGHT_CHUNKS))
    _run(_bias_planes, (grad_out, planes, IB), _units(N, IB), grad_out.size >= _PARALLEL_MIN_WORK)
    bias_gradient(planes, accumulate, grad_b)
