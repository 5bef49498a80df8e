"""The one tiled GEMM of the CUDA kernels: C[m, n] = sum_k A[m, k] * B[k, n], with the operands
read and the result written through *index functions*, so dense layers (plain or transposed
operands) and convolutions (implicit GEMM: the im2col matrix is never formed) share the same tile
loop.

A GEMM variant is made by :func:`gemm` from three ``cuda.jit(device=True)`` functions:

* ``load_a(A, geo, m, k)`` -> A[m, k]   (called only for m < M, k < K)
* ``load_b(B, geo, k, n)`` -> B[k, n]   (called only for k < K, n < N)
* ``store(C, D, geo, m, n, v)``: write the result v of C[m, n] (the epilogue: bias add, layout)

``geo`` is a tuple of int64 the variant interprets (convolution geometry); ``D`` an auxiliary array
(bias, or a second output). ``a_kfast`` / ``b_kfast`` say which index of the operand is contiguous
in memory, so that consecutive threads load consecutive addresses (coalescing).

Tiling (``config.gemm_tile = (BM, BN, BK, TM, TN)``, default 64, 64, 16, 4, 4): a block of
(BN/TN) x (BM/TM) threads computes a BM x BN tile of C; each thread a TM x TN register tile at rows
``ty + i*BM/TM`` and columns ``tx + j*BN/TN`` (strided, so stores coalesce and shared-memory reads
are conflict-free). Per BK step the block stages an A tile (BK x BM, transposed) and a B tile
(BK x BN) in shared memory; the next step's tiles are loaded into registers while the current
one is multiplied (software pipelining). Out-of-range elements load as zero (ragged edges).

Split-K: when the grid has fewer blocks than ~2 per SM and K is long (weight gradients, small
layers), ``gridDim.z`` blocks each reduce a K chunk into a device scratch of partial tiles, and a
second kernel adds the partials in a fixed order and applies ``store`` (deterministic).

The element type of the shared and register tiles must be known at compile time: each variant is
compiled per dtype (and tile shape) by a cached factory that freezes ``numba.from_dtype(dtype)``
into the kernel's closure.
"""
import functools

import numba
import numpy as np
from numba import cuda

from ._common import Kernel, cdiv, config, grid_1d, num_sms, scratch


@cuda.jit(device=True)
def ld_rows(X, geo, r, c):
    """Operand stored as is: X[r, c]."""
    return X[r, c]


@cuda.jit(device=True)
def ld_transposed(X, geo, r, c):
    """Operand stored transposed: X[c, r]."""
    return X[c, r]


def _tile_shape(tile):
    bm, bn, bk, tm, tn = tile
    ty, tx = bm // tm, bn // tn
    nt = tx * ty
    if bm % tm or bn % tn or (bm * bk) % nt or (bk * bn) % nt:
        raise ValueError(f"gemm tile {tile}: tiles must divide evenly among {nt} threads")
    return bm, bn, bk, tm, tn, tx, ty, nt, bm * bk // nt, bk * bn // nt


def _make_gemm(dtype, tile, load_a, load_b, store, a_kfast, b_kfast):
    """The tile kernel of one variant for one dtype and tile shape."""
    BM, BN, BK, TM, TN, TX, TY, NT, LA, LB = _tile_shape(tile)
    PA, PB = BM + 1, BN + 1         # padded shared rows: transposed stores hit distinct banks
    SA, SB = BK * PA, BK * PB
    nbt = numba.from_dtype(np.dtype(dtype))

    def gemm_tile(A, B, C, D, P, M, N, K, kchunk, geo):
        As = cuda.shared.array(SA, nbt)     # As[k * PA + m] = A[m0 + m, kt + k]
        Bs = cuda.shared.array(SB, nbt)     # Bs[k * PB + n] = B[kt + k, n0 + n]
        acc = cuda.local.array((TM, TN), nbt)
        ra = cuda.local.array(LA, nbt)
        rb = cuda.local.array(LB, nbt)
        av = cuda.local.array(TM, nbt)
        bv = cuda.local.array(TN, nbt)
        zero = C.dtype.type(0)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tid = ty * TX + tx
        m0 = cuda.blockIdx.y * BM
        n0 = cuda.blockIdx.x * BN
        k0 = cuda.blockIdx.z * kchunk
        k1 = min(K, k0 + kchunk)
        for i in range(TM):
            for j in range(TN):
                acc[i, j] = zero
        # first tiles -> registers
        for l in range(LA):
            e = tid + l * NT
            if a_kfast:
                kk, mm = e % BK, e // BK
            else:
                mm, kk = e % BM, e // BM
            m, k = m0 + mm, k0 + kk
            ra[l] = load_a(A, geo, m, k) if (m < M and k < k1) else zero
        for l in range(LB):
            e = tid + l * NT
            if b_kfast:
                kk, nn = e % BK, e // BK
            else:
                nn, kk = e % BN, e // BN
            n, k = n0 + nn, k0 + kk
            rb[l] = load_b(B, geo, k, n) if (n < N and k < k1) else zero
        for kt in range(k0, k1, BK):
            # registers -> shared
            for l in range(LA):
                e = tid + l * NT
                if a_kfast:
                    As[(e % BK) * PA + e // BK] = ra[l]
                else:
                    As[(e // BM) * PA + e % BM] = ra[l]
            for l in range(LB):
                e = tid + l * NT
                if b_kfast:
                    Bs[(e % BK) * PB + e // BK] = rb[l]
                else:
                    Bs[(e // BN) * PB + e % BN] = rb[l]
            cuda.syncthreads()
            # next tiles -> registers, in flight while this one is multiplied
            kn = kt + BK
            if kn < k1:
                for l in range(LA):
                    e = tid + l * NT
                    if a_kfast:
                        kk, mm = e % BK, e // BK
                    else:
                        mm, kk = e % BM, e // BM
                    m, k = m0 + mm, kn + kk
                    ra[l] = load_a(A, geo, m, k) if (m < M and k < k1) else zero
                for l in range(LB):
                    e = tid + l * NT
                    if b_kfast:
                        kk, nn = e % BK, e // BK
                    else:
                        nn, kk = e % BN, e // BN
                    n, k = n0 + nn, kn + kk
                    rb[l] = load_b(B, geo, k, n) if (n < N and k < k1) else zero
            kk = np.uint32(0)
            while kk < np.uint32(BK):
                ra0 = kk * np.uint32(PA) + np.uint32(ty)
                rb0 = kk * np.uint32(PB) + np.uint32(tx)
                for i in range(TM):
                    av[i] = As[ra0 + np.uint32(i * TY)]
                for j in range(TN):
                    bv[j] = Bs[rb0 + np.uint32(j * TX)]
                for i in range(TM):
                    for j in range(TN):
                        acc[i, j] += av[i] * bv[j]
                kk += np.uint32(1)
            cuda.syncthreads()
        split = cuda.gridDim.z > 1
        z = cuda.blockIdx.z
        for i in range(TM):
            m = m0 + ty + i * TY
            if m < M:
                for j in range(TN):
                    n = n0 + tx + j * TX
                    if n < N:
                        if split:
                            P[z, m, n] = acc[i, j]
                        else:
                            store(C, D, geo, m, n, acc[i, j])

    return cuda.jit(gemm_tile)


def _make_finish(store):
    """Split-K second pass: C[m, n] = store(sum over splits of P[:, m, n]), in split order."""
    def gemm_finish(P, C, D, M, N, geo):
        S = P.shape[0]
        for idx in range(cuda.grid(1), M * N, cuda.gridsize(1)):
            m = idx // N
            n = idx - m * N
            s = P[0, m, n]
            for z in range(1, S):
                s += P[z, m, n]
            store(C, D, geo, m, n, s)

    return cuda.jit(gemm_finish)


class Gemm:
    """One GEMM variant: its tile kernel and split-K finish kernel, and the launcher of both."""

    def __init__(self, name, a_dims, b_dims, c_dims, d_dims, ngeo,
                 load_a, load_b, store, a_kfast, b_kfast):
        ops = (load_a, load_b, store, a_kfast, b_kfast)
        build = functools.lru_cache(maxsize=None)(
            lambda dtype, tile: _make_gemm(dtype, tile, *ops))
        finish = _make_finish(store)
        arrays = f"A{a_dims} A{b_dims} A{c_dims} A{d_dims}"
        self.tile = Kernel(f"{name}_tile", f"{arrays} A3 i i i i t{ngeo}",
                           lambda dtype: build(dtype, tuple(config.gemm_tile)))
        self.finish = Kernel(f"{name}_finish", f"A3 A{c_dims} A{d_dims} i i t{ngeo}",
                             lambda dtype: finish)

    def __call__(self, A, B, C, D, M, N, K, geo):
        """Launch C = A @ B (through the index functions) for an M x N x K problem."""
        if M == 0 or N == 0:
            return
        BM, BN, BK, TM, TN, TX, TY = _tile_shape(config.gemm_tile)[:7]
        gm, gn = cdiv(M, BM), cdiv(N, BN)
        splits = _splits(gm * gn, K, BK)
        if splits > 1:
            kchunk = cdiv(cdiv(K, splits), BK) * BK
            splits = cdiv(K, kchunk)
        if splits > 1:
            P = scratch("gemm", splits * M * N, C.dtype).reshape(splits, M, N)
            self.tile[(gn, gm, splits), (TX, TY)](A, B, C, D, P, M, N, K, kchunk, geo)
            self.finish[grid_1d(M * N)](P, C, D, M, N, geo)
        else:
            P = scratch("gemm", 1, C.dtype).reshape(1, 1, 1)
            self.tile[(gn, gm, 1), (TX, TY)](A, B, C, D, P, M, N, K, max(K, 1), geo)


def _splits(blocks, K, BK):
    """How many K chunks: enough for ~2 blocks per SM, each chunk at least gemm_min_chunk steps."""
    sms = num_sms()
    if blocks >= sms:
        return 1
    by_work = K // (BK * config.gemm_min_chunk)
    return max(1, min(cdiv(2 * sms, blocks), by_work, 64))


def gemm(name, a_dims, b_dims, c_dims, d_dims, ngeo, load_a, load_b, store,
         a_kfast=True, b_kfast=False):
    """Make a GEMM variant (see the module docstring). ``*_dims``: ranks of A, B, C, D."""
    return Gemm(name, a_dims, b_dims, c_dims, d_dims, ngeo, load_a, load_b, store, a_kfast, b_kfast)
