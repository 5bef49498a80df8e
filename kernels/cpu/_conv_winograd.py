"""Winograd F(2x2, 3x3) convolution kernels for 3x3, stride-1, dilation-1 layers (CPU).

A 2x2 output tile reads a 4x4 input tile d; with the weight g of one (filter, channel) pair,

    y = A^T [ (G g G^T) * (B^T d B) ] A        (* elementwise)

so a tile costs 16 multiplies per (filter, channel) instead of 36: the sum over channels of the
16 products is 16 independent GEMMs, one per position xi of the 4x4 transformed tile. Over a
block of T tiles, with U = G w G^T and V = B^T d B:

    M[xi] (T x K) = V[xi] (T x C) @ U[xi] (C x K)

and the backward passes are the adjoints of the same three steps:

    dM = A dy A^T;  dV[xi] (T x C) = dM[xi] (T x K) @ U[xi] (K x C);  dx += B dV B^T
    dU[xi] (K x C) += dM[xi]^T @ V[xi];  dw = G^T dU G

(input tiles overlap, so dx sums the contributions of neighbouring tiles).

Layouts: every tile-domain array is (16, T, channels), channels last, so the GEMMs run on
BLAS's fast paths (no transposed B operand: ``_blas.gemm`` with leading dimensions, no copies)
and every transform is a few long contiguous loops over (tile, channel) that vectorize (each
loop writes one stream and reads at most four: more would defeat LLVM's alias checks, and a
loop whose output overlaps an input falls back to scalar code, so none runs in place). Inputs
reach the tile domain through a padded, channels-last copy of one image whose columns are
split by parity, X[h, w % 2, w // 2, c]: tap (r, s) of the tiles of tile row th is the
contiguous run X[2*th + r, s % 2, s // 2 : s // 2 + TW, :]. Output tiles are copied back to
NCHW (with the bias) element by element; output gradients are gathered likewise.

A block of tiles is sized so that its V and M stay in a core's L2 cache. The public kernels in
conv2d.py run units of whole images in parallel (the tiles of one image overlap in the input,
so they stay in one thread); the weight gradient sums per fixed chunk of images (results do
not depend on the thread count), then in float64 across chunks.

Where the output has an odd height or width the last tile row / column computes two outputs of
which one is dropped (forward), or reads a zero output gradient (backward).
"""
import numpy as np
from numba import njit

from ._blas import AT0, NO_TRANS, TRANS, gemm
from ._conv_common import BACKWARD_INPUT, BACKWARD_WEIGHT, FORWARD, plane_sums
from ._jit import HELPER

_FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

# Bytes of V + M a block of tiles may take (they should stay in a core's L2 cache), and the
# bounds on its tile count.
_BLOCK_BYTES = 1 << 19
_BLOCK_MIN_TILES = 32
_BLOCK_MAX_TILES = 1024


# ---------------------------------------------------------------------------------------------
# geometry
# ---------------------------------------------------------------------------------------------

def tile_rows_per_block(C, K, TW, itemsize):
    """Tile rows of one block of tiles: V (16*T*C) and M (16*K*T) within _BLOCK_BYTES."""
    per_tile = 16 * (C + K) * itemsize
    tiles = min(_BLOCK_MAX_TILES, max(_BLOCK_MIN_TILES, _BLOCK_BYTES // per_tile))
    return max(1, tiles // TW)


# ---------------------------------------------------------------------------------------------
# small vectorizing loops over flat arrays: dst[d0 + j] (+)= sum of s_i * src[o_i + j], j < n.
# Unsigned offsets (no wraparound tests); the coefficients s_i (+-1) come in the arrays' dtype
# so that float32 data is never widened.
# ---------------------------------------------------------------------------------------------

@njit(**HELPER, fastmath=_FASTMATH)
def _lin1(dst, d0, src, o0, s0, n):
    d, p0 = np.uint64(d0), np.uint64(o0)
    for j in range(np.uint64(n)):
        dst[d + j] = s0 * src[p0 + j]


@njit(**HELPER, fastmath=_FASTMATH)
def _lin2(dst, d0, src, o0, s0, o1, s1, n):
    d, p0, p1 = np.uint64(d0), np.uint64(o0), np.uint64(o1)
    for j in range(np.uint64(n)):
        dst[d + j] = s0 * src[p0 + j] + s1 * src[p1 + j]


@njit(**HELPER, fastmath=_FASTMATH)
def _lin3(dst, d0, src, o0, s0, o1, s1, o2, s2, n):
    d, p0, p1, p2 = np.uint64(d0), np.uint64(o0), np.uint64(o1), np.uint64(o2)
    for j in range(np.uint64(n)):
        dst[d + j] = s0 * src[p0 + j] + s1 * src[p1 + j] + s2 * src[p2 + j]


@njit(**HELPER, fastmath=_FASTMATH)
def _lin4(dst, d0, src, o0, s0, o1, s1, o2, s2, o3, s3, n):
    d = np.uint64(d0)
    p0, p1, p2, p3 = np.uint64(o0), np.uint64(o1), np.uint64(o2), np.uint64(o3)
    for j in range(np.uint64(n)):
        dst[d + j] = s0 * src[p0 + j] + s1 * src[p1 + j] + s2 * src[p2 + j] + s3 * src[p3 + j]


@njit(**HELPER, fastmath=_FASTMATH)
def _acc_lin1(dst, d0, src, o0, s0, n):
    d, p0 = np.uint64(d0), np.uint64(o0)
    for j in range(np.uint64(n)):
        dst[d + j] += s0 * src[p0 + j]


@njit(**HELPER, fastmath=_FASTMATH)
def _acc_lin3(dst, d0, src, o0, s0, o1, s1, o2, s2, n):
    d, p0, p1, p2 = np.uint64(d0), np.uint64(o0), np.uint64(o1), np.uint64(o2)
    for j in range(np.uint64(n)):
        dst[d + j] += s0 * src[p0 + j] + s1 * src[p1 + j] + s2 * src[p2 + j]


# ---------------------------------------------------------------------------------------------
# weights
# ---------------------------------------------------------------------------------------------

@njit(cache=True)
def weight_transform(w, ck, U):
    """U[xi, k, c] = (G w[k, c] G^T)[xi // 4, xi % 4], U (16, K, C); with ``ck`` U[xi, c, k],
    U (16, C, K) (the forward GEMM's layout)."""
    K, C = w.shape[0], w.shape[1]
    t = np.empty((4, 3), np.float64)
    u = np.empty(16, np.float64)
    for k in range(K):
        for c in range(C):
            g = w[k, c]
            for j in range(3):                  # t = G g (4 x 3)
                g0, g1, g2 = g[0, j], g[1, j], g[2, j]
                t[0, j] = g0
                t[1, j] = 0.5 * (g0 + g1 + g2)
                t[2, j] = 0.5 * (g0 - g1 + g2)
                t[3, j] = g2
            for i in range(4):                  # u = t G^T (4 x 4)
                t0, t1, t2 = t[i, 0], t[i, 1], t[i, 2]
                u[4 * i] = t0
                u[4 * i + 1] = 0.5 * (t0 + t1 + t2)
                u[4 * i + 2] = 0.5 * (t0 - t1 + t2)
                u[4 * i + 3] = t2
            for xi in range(16):
                if ck:
                    U[xi, c, k] = u[xi]
                else:
                    U[xi, k, c] = u[xi]


@njit(cache=True)
def weight_gradient(dU, accumulate, grad_w):
    """grad_w[k, c] = (or +=, with ``accumulate``) G^T (sum over t of dU[t, :, k, c]) G, the
    sums over the chunks t in float64 and in chunk order; dU (T, 16, K, C), grad_w (K, C, 3, 3)."""
    T, K, C = dU.shape[0], dU.shape[2], dU.shape[3]
    S = np.zeros((16, K, C), np.float64)
    for i in range(T):
        Sf, Df = S.reshape(-1), dU[i].reshape(-1)
        for q in range(Sf.size):
            Sf[q] += Df[q]
    u = np.empty(16, np.float64)
    t = np.empty((3, 4), np.float64)
    for k in range(K):
        for c in range(C):
            for xi in range(16):
                u[xi] = S[xi, k, c]
            for j in range(4):                        # t = G^T u (3 x 4)
                u0, u1, u2, u3 = u[j], u[4 + j], u[8 + j], u[12 + j]
                t[0, j] = u0 + 0.5 * (u1 + u2)
                t[1, j] = 0.5 * (u1 - u2)
                t[2, j] = 0.5 * (u1 + u2) + u3
            for a in range(3):                        # t G (3 x 3)
                t0, t1, t2, t3 = t[a, 0], t[a, 1], t[a, 2], t[a, 3]
                w0 = t0 + 0.5 * (t1 + t2)
                w1 = 0.5 * (t1 - t2)
                w2 = 0.5 * (t1 + t2) + t3
                if accumulate:
                    w0 += grad_w[k, c, a, 0]
                    w1 += grad_w[k, c, a, 1]
                    w2 += grad_w[k, c, a, 2]
                grad_w[k, c, a, 0] = w0
                grad_w[k, c, a, 1] = w1
                grad_w[k, c, a, 2] = w2


# ---------------------------------------------------------------------------------------------
# images <-> padded, parity-split, channels-last rows
# ---------------------------------------------------------------------------------------------

@njit(**HELPER)
def _image_to_rows(x, n, ph, pw, TH, TW, X):
    """X[hp, par, w2, c] = x[n, c, hp - ph, 2*w2 + par - pw] (0 outside the image), for the
    padded rows hp < 2*TH + 2; X flat."""
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    Q = TW + 1
    RS = 2 * Q * C
    X[:(2 * TH + 2) * RS] = 0.0
    h0, h1 = max(0, -ph), min(H, 2 * TH + 2 - ph)
    w0, w1 = max(0, -pw), min(W, 2 * Q - pw)
    xf = x.reshape(-1)
    for ih in range(h0, h1):
        row = (ih + ph) * RS
        for c in range(C):
            src = np.uint64(((n * C + c) * H + ih) * W)
            for iw in range(w0, w1):
                wp = iw + pw
                X[np.uint64(row + ((wp & 1) * Q + (wp >> 1)) * C + c)] = xf[src + np.uint64(iw)]


@njit(**HELPER)
def _rows_to_image(X, n, ph, pw, TH, TW, grad_in):
    """grad_in[n, c, ih, iw] = X[ih + ph, par, w2, c] (the adjoint of _image_to_rows: the
    padded cells that are no image cells are dropped)."""
    C, H, W = grad_in.shape[1], grad_in.shape[2], grad_in.shape[3]
    Q = TW + 1
    RS = 2 * Q * C
    h0, h1 = max(0, -ph), min(H, 2 * TH + 2 - ph)
    w0, w1 = max(0, -pw), min(W, 2 * Q - pw)
    if h1 - h0 < H or w1 - w0 < W:
        grad_in[n] = 0.0
    gf = grad_in.reshape(-1)
    for ih in range(h0, h1):
        row = (ih + ph) * RS
        for c in range(C):
            dst = np.uint64(((n * C + c) * H + ih) * W)
            for iw in range(w0, w1):
                wp = iw + pw
                gf[dst + np.uint64(iw)] = X[np.uint64(row + ((wp & 1) * Q + (wp >> 1)) * C + c)]


# ---------------------------------------------------------------------------------------------
# tile transforms (``one``: 1 in the data's dtype)
# ---------------------------------------------------------------------------------------------

@njit(**HELPER)
def _input_tile_row(X, th, TW, C, E, V, t0, T, one):
    """V[xi, t0 + tw, c] = (B^T d B)[xi] for the tiles of tile row th (V flat, (16, T, C)).

    E (4 * 2*(TW+1)*C) is scratch for the row combinations e_i = (B^T d)_i of the 4 input
    rows, over every padded column."""
    m = -one
    RS = 2 * (TW + 1) * C
    r0 = 2 * th * RS
    r1, r2, r3 = r0 + RS, r0 + 2 * RS, r0 + 3 * RS
    # B^T along the rows: e0 = d0 - d2, e1 = d1 + d2, e2 = d2 - d1, e3 = d1 - d3
    _lin2(E, AT0, X, r0, one, r2, m, RS)
    _lin2(E, RS, X, r1, one, r2, one, RS)
    _lin2(E, 2 * RS, X, r2, one, r1, m, RS)
    _lin2(E, 3 * RS, X, r1, one, r3, m, RS)
    # B along the columns; column s of tile tw is E[i, s % 2, tw + s // 2]
    n = TW * C
    TC = T * C
    for i in range(4):
        c0 = i * RS               # s = 0
        c1 = c0 + (TW + 1) * C    # s = 1
        c2 = c0 + C               # s = 2
        c3 = c1 + C               # s = 3
        d = 4 * i * TC + t0 * C
        _lin2(V, d, E, c0, one, c2, m, n)
        _lin2(V, d + TC, E, c1, one, c2, one, n)
        _lin2(V, d + 2 * TC, E, c2, one, c1, m, n)
        _lin2(V, d + 3 * TC, E, c1, one, c3, m, n)


@njit(**HELPER)
def _output_tiles(M, K, T, S, one):
    """y = A^T m A over flat (t, k) of M (16, T, K): y[a, b] is left in M's slot xi = 2a + b
    (M's first 4 rows); S (8, T, K) is scratch. (No transform runs in place: a loop whose
    output overlaps an input falls back to scalar code.)"""
    m = -one
    KT = K * T
    for j in range(4):
        m0, m1, m2, m3 = j * KT, (4 + j) * KT, (8 + j) * KT, (12 + j) * KT
        _lin3(S, j * KT, M, m0, one, m1, one, m2, one, KT)          # S0j = m0j + m1j + m2j
        _lin3(S, (4 + j) * KT, M, m1, one, m2, m, m3, m, KT)        # S1j = m1j - m2j - m3j
    for a in range(2):
        s0 = 4 * a * KT
        s1, s2, s3 = s0 + KT, s0 + 2 * KT, s0 + 3 * KT
        _lin3(M, 2 * a * KT, S, s0, one, s1, one, s2, one, KT)      # y_a0 = Sa0 + Sa1 + Sa2
        _lin3(M, (2 * a + 1) * KT, S, s1, one, s2, m, s3, m, KT)    # y_a1 = Sa1 - Sa2 - Sa3


@njit(**HELPER)
def _scatter_outputs(M, K, T, t0, n, th, TW, b, out):
    """out[n, k, 2*th + a, 2*tw + b'] = y[a, b'][t0 + tw, k] + b[k] (cropped to out); y[a, b']
    is M's slot 2a + b', (T, K) flat."""
    OH, OW = out.shape[2], out.shape[3]
    TK = T * K
    of = out.reshape(-1)
    OHW = np.uint64(OH * OW)
    Ku = np.uint64(K)
    for a in range(2):
        oh = 2 * th + a
        if oh >= OH:
            break
        for tw in range(TW):
            for bb in range(2):
                ow = 2 * tw + bb
                if ow >= OW:
                    break
                src = np.uint64((2 * a + bb) * TK + (t0 + tw) * K)
                dst = np.uint64((n * K * OH + oh) * OW + ow)
                for k in range(Ku):
                    of[dst + k * OHW] = M[src + k] + b[k]


@njit(**HELPER)
def _gather_grads(g, n, th, TW, Dy, T, t0):
    """Dy[2a + b', t0 + tw, k] = g[n, k, 2*th + a, 2*tw + b'] (0 outside g); Dy flat (4, T, K)."""
    K, OH, OW = g.shape[1], g.shape[2], g.shape[3]
    TK = T * K
    gf = g.reshape(-1)
    OHW = np.uint64(OH * OW)
    Ku = np.uint64(K)
    for a in range(2):
        oh = 2 * th + a
        for tw in range(TW):
            for bb in range(2):
                ow = 2 * tw + bb
                dst = np.uint64((2 * a + bb) * TK + (t0 + tw) * K)
                if oh >= OH or ow >= OW:
                    for k in range(Ku):
                        Dy[dst + k] = 0.0
                else:
                    src = np.uint64((n * K * OH + oh) * OW + ow)
                    for k in range(Ku):
                        Dy[dst + k] = gf[src + k * OHW]


@njit(**HELPER)
def _grad_tiles(Dy, K, T, dM, one):
    """dM[4i + j] = (A dy A^T)[i, j] over flat (t, k), A = [[1, 0], [1, 1], [1, -1], [0, -1]]:
    dM[i, j] = sum over a, b of A[i, a] A[j, b] dy[a, b]."""
    m = -one
    KT = K * T
    for i in range(4):
        for j in range(4):
            d = (4 * i + j) * KT
            # the nonzero (offset, coefficient) terms of row i and column j of A
            ra0, rc0 = (0, one) if i < 3 else (1, m)
            ra1, rc1 = (1, one) if i == 1 else (1, m)
            cb0, cc0 = (0, one) if j < 3 else (1, m)
            cb1, cc1 = (1, one) if j == 1 else (1, m)
            two_rows, two_cols = i == 1 or i == 2, j == 1 or j == 2
            o00 = (2 * ra0 + cb0) * KT
            if two_rows and two_cols:
                _lin4(dM, d, Dy, o00, rc0 * cc0, (2 * ra0 + cb1) * KT, rc0 * cc1,
                      (2 * ra1 + cb0) * KT, rc1 * cc0, (2 * ra1 + cb1) * KT, rc1 * cc1, KT)
            elif two_rows:
                _lin2(dM, d, Dy, o00, rc0 * cc0, (2 * ra1 + cb0) * KT, rc1 * cc0, KT)
            elif two_cols:
                _lin2(dM, d, Dy, o00, rc0 * cc0, (2 * ra0 + cb1) * KT, rc0 * cc1, KT)
            else:
                _lin1(dM, d, Dy, o00, rc0 * cc0, KT)


@njit(**HELPER)
def _input_grad_tile_row(dV, T, t0, TW, C, th, F, dX, one):
    """dX[2*th + r, s % 2, tw + s // 2, c] += (B dV B^T)[r, s] for the tiles of tile row th;
    dV flat (16, T, C); F (16 * TW * C) scratch."""
    m = -one
    RS = 2 * (TW + 1) * C
    TC = T * C
    n = TW * C
    off = t0 * C
    # over the rows (i -> r): f0 = v0; f1 = v1 - v2 + v3; f2 = -v0 + v1 + v2; f3 = -v3
    for j in range(4):
        v0, v1, v2, v3 = j * TC + off, (4 + j) * TC + off, (8 + j) * TC + off, \
            (12 + j) * TC + off
        _lin1(F, j * n, dV, v0, one, n)
        _lin3(F, (4 + j) * n, dV, v1, one, v2, m, v3, one, n)
        _lin3(F, (8 + j) * n, dV, v0, m, v1, one, v2, one, n)
        _lin1(F, (12 + j) * n, dV, v3, m, n)
    # over the columns (j -> s), added into padded row 2*th + r at parity s % 2, offset s // 2
    for r in range(4):
        row = (2 * th + r) * RS
        f0, f1, f2, f3 = 4 * r * n, (4 * r + 1) * n, (4 * r + 2) * n, (4 * r + 3) * n
        odd = (TW + 1) * C
        _acc_lin1(dX, row, F, f0, one, n)                                 # s = 0
        _acc_lin3(dX, row + odd, F, f1, one, f2, m, f3, one, n)           # s = 1
        _acc_lin3(dX, row + C, F, f0, m, f1, one, f2, one, n)             # s = 2
        _acc_lin1(dX, row + odd + C, F, f3, m, n)                         # s = 3


# ---------------------------------------------------------------------------------------------
# images in blocks of tile rows (rho = (n - n0) * TH + th counts the tile rows of images n0..)
# ---------------------------------------------------------------------------------------------

@njit(**HELPER)
def _build_inputs(x, n0, rho0, rho1, TH, TW, ph, pw, X, E, V, T, cur, one):
    """V (16, T, C) of the tile rows rho0..rho1-1. X holds image ``cur`` in rows form and is
    rebuilt when the image changes; returns the image X holds."""
    C = x.shape[1]
    for rho in range(rho0, rho1):
        n = n0 + rho // TH
        if n != cur:
            _image_to_rows(x, n, ph, pw, TH, TW, X)
            cur = n
        _input_tile_row(X, rho % TH, TW, C, E, V, (rho - rho0) * TW, T, one)
    return cur


@njit(**HELPER)
def _build_grads(g, n0, rho0, rho1, TH, TW, Dy, dM, T, one):
    """dM (16, K, T) of the output gradients of the tile rows rho0..rho1-1."""
    for rho in range(rho0, rho1):
        _gather_grads(g, n0 + rho // TH, rho % TH, TW, Dy, T, (rho - rho0) * TW)
    _grad_tiles(Dy, g.shape[1], T, dM, one)


@njit(cache=True, nogil=True)
def images(mode, xs, ys, U, b, planes, ph, pw, RB, IB, u0, u1):
    """Units u0..u1-1 of one pass (``mode``, a _conv_common code); ``xs`` is input-side
    (N, C, H, W), ``ys`` output-side (N, K, OH, OW); RB tile rows per block:

    * FORWARD: ys = conv(xs) + b; U[0] = weight_transform(w, True) (16, C, K);
    * BACKWARD_INPUT: xs = the input gradient for the output gradient ys; U[0] (16, K, C);
    * BACKWARD_WEIGHT: U[t] (16, K, C) += the transformed weight gradient of the t-th of the
      U.shape[0] chunks of images (weight_gradient makes it 3x3; the GEMMs add in the data's
      dtype, as one GEMM over the chunk's tiles would), and planes[n, k] = the sums of ys[n, k]
      when ``planes`` has rows (the bias gradient).

    A unit of the forward and input-gradient passes is IB whole images; a chunk of the weight
    gradient is a fixed share of the images. Blocks restart at every unit and chunk, so the bits
    do not depend on how units are shared among threads. One function for the three passes: a
    model that trains compiles it once."""
    N, C, K = xs.shape[0], xs.shape[1], ys.shape[1]
    TH, TW = (ys.shape[2] + 1) // 2, (ys.shape[3] + 1) // 2
    dt = xs.dtype
    one = np.ones(1, dt)[0]
    T1 = RB * TW
    fwd, bwd_in = mode == FORWARD, mode == BACKWARD_INPUT
    X = np.empty((2 * TH + 2) * 2 * (TW + 1) * C, dt)      # input rows, or their gradient
    V = np.empty(16 * T1 * C, dt)                           # V or dV
    M = np.empty(16 * K * T1, dt)                           # M or dM
    E = np.empty(0 if bwd_in else 4 * 2 * (TW + 1) * C, dt)
    S = np.empty(8 * K * T1 if fwd else 0, dt)
    Dy = np.empty(0 if fwd else 4 * K * T1, dt)
    F = np.empty(16 * TW * C if bwd_in else 0, dt)
    for u in range(u0, u1):
        if mode == BACKWARD_WEIGHT:
            chunks = U.shape[0]
            n0, n1, Uf = u * N // chunks, (u + 1) * N // chunks, U[u].reshape(-1)
            if planes.shape[0] > 0:
                plane_sums(ys, n0, n1, planes)
        else:
            n0, n1, Uf = u * IB, min(N, (u + 1) * IB), U[0].reshape(-1)
        cur = np.int64(-1)
        rows = (n1 - n0) * TH
        for rho0 in range(0, rows, RB):
            rho1 = min(rows, rho0 + RB)
            T = (rho1 - rho0) * TW
            if not bwd_in:
                cur = _build_inputs(xs, n0, rho0, rho1, TH, TW, ph, pw, X, E, V, T, cur, one)
            if not fwd:
                _build_grads(ys, n0, rho0, rho1, TH, TW, Dy, M, T, one)
            for xi in range(16):
                if fwd:                 # M[xi] (T x K) = V[xi] (T x C) @ U[xi] (C x K)
                    gemm(NO_TRANS, NO_TRANS, T, K, C, 1.0, V, xi * T * C, C, Uf, xi * C * K, K,
                         0.0, M, xi * T * K, K)
                elif bwd_in:            # dV[xi] (T x C) = dM[xi] (T x K) @ U[xi] (K x C)
                    gemm(NO_TRANS, NO_TRANS, T, C, K, 1.0, M, xi * T * K, K, Uf, xi * K * C, C,
                         0.0, V, xi * T * C, C)
                else:                   # dU[xi] (K x C) += dM[xi]^T (K x T) @ V[xi] (T x C)
                    gemm(TRANS, NO_TRANS, K, C, T, 1.0, M, xi * T * K, K, V, xi * T * C, C,
                         1.0, Uf, xi * K * C, C)
            if fwd:
                _output_tiles(M, K, T, S, one)
                for rho in range(rho0, rho1):
                    _scatter_outputs(M, K, T, (rho - rho0) * TW, n0 + rho // TH, rho % TH, TW,
                                     b, ys)
            elif bwd_in:
                for rho in range(rho0, rho1):
                    th = rho % TH
                    if th == 0:
                        X[:] = 0.0
                    _input_grad_tile_row(V, T, (rho - rho0) * TW, TW, C, th, F, X, one)
                    if th == TH - 1:
                        _rows_to_image(X, n0 + rho // TH, ph, pw, TH, TW, xs)
