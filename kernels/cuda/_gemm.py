"""The one tiled GEMM of the CUDA kernels: C[m, n] = sum_k A[m, k] * B[k, n], with the operands
read and the result written through *index functions*, so dense layers (plain or transposed
operands) and convolutions (implicit GEMM: the im2col matrix is never formed) share the same tile
loop.

A GEMM variant is made by :func:`gemm` from ``cuda.jit(device=True)`` index functions:

* ``load_a(A, geo, T, m, k, c0, c1, c2)`` -> A[m, k]   (called only for m < M, k < K)
* ``load_b(B, geo, T, k, n, c0, c1, c2)`` -> B[k, n]   (called only for k < K, n < N)
* ``store(C, D, E, geo, act, alpha, m, n, v)``: write the result v of C[m, n] (the epilogue: bias
  add, layout, an activation ``act`` with parameter ``alpha``). ``act`` is an int64 the variant
  interprets: forward variants read it as an activation code; weight-gradient variants (no
  activation) read it as the *accumulate* flag: non-zero adds v into the existing gradient
  (read-add-write, BLAS's beta = 1) instead of storing it.
* optional ``a_ctx(A, geo, m)`` / ``b_ctx(B, geo, n)`` -> (c0, c1, c2): the part of an address
  that depends on the row of A / column of B only. A thread keeps loading the same rows of A and
  columns of B as it walks along K, so these run once per kernel, not once per element (a
  convolution decomposes its output index into image and position there, out of the K loop).

An operand that is a plain matrix (stored as is or transposed, passed flat) is given as an
:class:`Affine` instead of ``load``/``ctx`` functions: its element (i, k) lies at
``offset(X, geo, i) + k * kstride(geo)``, so its staging adds one per-step offset to each
element's precomputed offset, with no multiply per load (dense layers, the convolution weights).

``geo`` is a tuple of int64 the variant interprets (convolution geometry); ``T`` an int64 table
the launcher may pass, indexed by k (a convolution's precomputed offsets of the K index, so the
loop has no integer divisions); ``D`` and ``E`` auxiliary arrays (bias, a second output).
``a_kfast`` / ``b_kfast`` say which index of the operand is contiguous in memory, so that
consecutive threads load consecutive addresses (coalescing).

Tiling (``config.gemm_tile = (BM, BN, BK, TM, TN)``, default 64, 128, 8, 4, 8): a block of
(BN/TN) x (BM/TM) threads computes a BM x BN tile of C; each thread a TM x TN register tile whose
rows are runs of 4 adjacent rows (2 or 1 when TM is not a multiple of 4), the runs of the block's
threads interleaved (``_lane``), and likewise its columns: per k, a run is one 16-byte vector load
from shared memory (a 4x8 tile reads 3 vectors per 32 multiply-adds instead of 12 words). Per
BK step the block stages an A tile (BK x BM, transposed) and a B tile (BK x BN) in shared memory;
the next step's tiles are loaded into registers while the current one is multiplied (software
pipelining). Out-of-range elements load as zero (ragged edges); a step whose A (B) tile lies
inside A (B), as in every block but the edge ones, loads it without per-element bounds checks.

Split-K: when the grid has fewer blocks than ~2 per SM and K is long (weight gradients, small
layers), ``gridDim.z`` blocks each reduce a K chunk into a device scratch of partial tiles. Each
takes a ticket from its output tile's counter once its partial is written; the block with the
last ticket adds the partials in split order and applies ``store`` (deterministic, and no second
launch), then resets the counter.

The element type of the shared and register tiles must be known at compile time: each variant is
compiled per dtype (and tile shape) by a cached factory that freezes ``numba.from_dtype(dtype)``
into the kernel's closure.
"""
import functools

import numba
import numpy as np
from numba import cuda

from ._common import VECTOR_ALIGN, Kernel, cdiv, config, counters, jit, num_sms, scratch


@cuda.jit(device=True)
def no_ctx(X, geo, i):
    """No per-row / per-column precomputation."""
    return 0, 0, 0


@cuda.jit(device=True)
def _unit(geo):
    return 1


class Affine:
    """An operand whose element (i, k) lies at flat offset ``offset(X, geo, i) + k * kstride(geo)``
    (a matrix stored as is or transposed, passed flat; ``kstride`` 1 by default). Its staging
    keeps each element's offset at the step's first k and adds ``kt * kstride`` once per step:
    one add per load, no multiply."""

    def __init__(self, offset, kstride=_unit):
        self.offset, self.kstride = offset, kstride


def rows(ld):
    """Affine operand of K-fast rows: element (i, k) at i * geo[ld] + k."""
    @cuda.jit(device=True)
    def offset(X, geo, i):
        return i * geo[ld]
    return Affine(offset)


def cols(ld):
    """Affine operand with its M or N index fast: element (i, k) at k * geo[ld] + i."""
    @cuda.jit(device=True)
    def offset(X, geo, i):
        return i

    @cuda.jit(device=True)
    def kstride(geo):
        return geo[ld]
    return Affine(offset, kstride)


def _tile_shape(tile):
    bm, bn, bk, tm, tn = tile
    ty, tx = bm // tm, bn // tn
    nt = tx * ty
    if bm % tm or bn % tn or (bm * bk) % nt or (bk * bn) % nt:
        raise ValueError(f"gemm tile {tile}: tiles must divide evenly among {nt} threads")
    return bm, bn, bk, tm, tn, tx, ty, nt, bm * bk // nt, bk * bn // nt


@cuda.jit(device=True)
def _lane(t, i, v, nt):
    """Tile row (column) of register row (column) i of thread t, of nt threads along that side,
    in runs of v adjacent elements: runs of the block's threads interleave."""
    return t * v + i % v + i // v * nt * v


def _vec(t):
    """Elements per vector load of a register tile side of ``t``: 4, 2 or 1."""
    return 4 if t % 4 == 0 else 2 if t % 2 == 0 else 1


def _contexts(load, ctx, L, BI, BK, NT, kfast):
    """The per-thread contexts of one operand's L staged elements, computed once per kernel:
    ``ctx``'s (c0, c1, c2) of each element's row (A) or column (B), or for an Affine operand the
    element's offset at the step's first k."""
    affine = isinstance(load, Affine)
    offset, kstride = (load.offset, load.kstride) if affine else (None, None)

    @cuda.jit(device=True)
    def contexts(X, geo, cx, tid, i0, I):
        for l in range(L):
            e = tid + l * NT
            i = i0 + (e // BK if kfast else e % BI)
            if affine:
                dk = e % BK if kfast else e // BI
                cx[l, 0] = offset(X, geo, i) + dk * kstride(geo) if i < I else 0
            else:
                c0, c1, c2 = ctx(X, geo, i) if i < I else (0, 0, 0)
                cx[l, 0], cx[l, 1], cx[l, 2] = c0, c1, c2
    return contexts


def _stager(load, is_a, L, BI, BK, NT, kfast):
    """The staging loop of one operand: its L elements of a BI x BK (A) or BK x BI (B) tile."""
    affine = isinstance(load, Affine)
    kstride = load.kstride if affine else None

    @cuda.jit(device=True)
    def stage(X, geo, T, cx, rx, tid, i0, kt, I, k1, check):
        """Element l: X's row (A) or column (B) i0 + i, K index kt + k -> rx[l] (0 when
        ``check`` and it lies outside X)."""
        ks = kt * kstride(geo) if affine else 0
        for l in range(L):
            e = tid + l * NT
            if kfast:
                i, k = i0 + e // BK, kt + e % BK
            else:
                i, k = i0 + e % BI, kt + e // BI
            if not check or (i < I and k < k1):
                if affine:
                    rx[l] = X[np.uint64(cx[l, 0] + ks)]
                elif is_a:
                    rx[l] = load(X, geo, T, i, k, cx[l, 0], cx[l, 1], cx[l, 2])
                else:
                    rx[l] = load(X, geo, T, k, i, cx[l, 0], cx[l, 1], cx[l, 2])
            else:
                rx[l] = X.dtype.type(0)
    return stage


def _make_gemm(dtype, tile, ops):
    """The tile kernel of one variant (``ops``) for one dtype and tile shape."""
    a_ctx, load_a, b_ctx, load_b, store, a_kfast, b_kfast = ops
    BM, BN, BK, TM, TN, TX, TY, NT, LA, LB = _tile_shape(tile)
    VM, VN = _vec(TM), _vec(TN)
    # shared rows padded by 4 elements: rows stay 16-byte aligned (vector loads) and the
    # transposed stores of k-fast operands (BK = 8: k * 4 + m) hit 32 distinct banks
    PA, PB = BM + 4, BN + 4
    SA, SB = BK * PA, BK * PB
    nbt = numba.from_dtype(np.dtype(dtype))

    contexts_a = _contexts(load_a, a_ctx, LA, BM, BK, NT, a_kfast)
    contexts_b = _contexts(load_b, b_ctx, LB, BN, BK, NT, b_kfast)
    stage_a = _stager(load_a, True, LA, BM, BK, NT, a_kfast)
    stage_b = _stager(load_b, False, LB, BN, BK, NT, b_kfast)

    def gemm_tile(A, B, C, D, E, P, tickets, T, M, N, K, kchunk, geo, act, alpha):
        As = cuda.shared.array(SA, nbt, alignment=VECTOR_ALIGN)  # As[k*PA + m] = A[m0+m, kt+k]
        Bs = cuda.shared.array(SB, nbt, alignment=VECTOR_ALIGN)  # Bs[k*PB + n] = B[kt+k, n0+n]
        acc = cuda.local.array((TM, TN), nbt)
        ra = cuda.local.array(LA, nbt)      # the next A / B elements this thread stages
        rb = cuda.local.array(LB, nbt)
        ca = cuda.local.array((LA, 3), numba.int64)     # row contexts of those A elements
        cb = cuda.local.array((LB, 3), numba.int64)     # column contexts of those B elements
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
        # element l of a staging step: A[m0 + am(l), kt + ak(l)], B[kt + bk(l), n0 + bn(l)]; the
        # row / column part of its address does not change along K: computed once here
        contexts_a(A, geo, ca, tid, m0, M)
        contexts_b(B, geo, cb, tid, n0, N)
        steps = (k1 - k0 + BK - 1) // BK if k1 > k0 else 0
        inner_m = m0 + BM <= M
        inner_n = n0 + BN <= N
        for step in range(steps + 1):
            if step > 0:
                # staged elements of step - 1: registers -> shared
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
            kt = k0 + step * BK
            if kt < k1:
                # step's elements -> registers (in flight during the multiply below). A step whose
                # tile lies inside its operand (all but the ragged edges) loads unchecked: the
                # two calls specialize the inlined staging loop on ``check``
                inner_k = kt + BK <= k1
                if inner_m and inner_k:
                    stage_a(A, geo, T, ca, ra, tid, m0, kt, M, k1, False)
                else:
                    stage_a(A, geo, T, ca, ra, tid, m0, kt, M, k1, True)
                if inner_n and inner_k:
                    stage_b(B, geo, T, cb, rb, tid, n0, kt, N, k1, False)
                else:
                    stage_b(B, geo, T, cb, rb, tid, n0, kt, N, k1, True)
            if step > 0:
                # multiply the shared tiles. A thread's rows (columns) come in runs of VM (VN)
                # adjacent elements at 16-byte aligned unsigned offsets, so each run is one
                # vector load from shared memory; constant trip counts (unrolled)
                kk = np.uint32(0)
                while kk < np.uint32(BK):
                    ra0 = kk * np.uint32(PA) + np.uint32(ty) * np.uint32(VM)
                    rb0 = kk * np.uint32(PB) + np.uint32(tx) * np.uint32(VN)
                    for i in range(TM):
                        av[i] = As[ra0 + np.uint32(i % VM + i // VM * TY * VM)]
                    for j in range(TN):
                        bv[j] = Bs[rb0 + np.uint32(j % VN + j // VN * TX * VN)]
                    for i in range(TM):
                        for j in range(TN):
                            acc[i, j] += av[i] * bv[j]
                    kk += np.uint32(1)
                cuda.syncthreads()
        S = cuda.gridDim.z
        if S == 1:
            for i in range(TM):
                m = m0 + _lane(ty, i, VM, TY)
                if m < M:
                    for j in range(TN):
                        n = n0 + _lane(tx, j, VN, TX)
                        if n < N:
                            store(C, D, E, geo, act, alpha, m, n, acc[i, j])
            return
        # split-K: publish this block's partial tile (each tile's partials are a separate,
        # line-aligned run of P, so no cache line is shared with another tile), take a ticket
        tile = cuda.blockIdx.y * cuda.gridDim.x + cuda.blockIdx.x
        for i in range(TM):
            for j in range(TN):
                q = _lane(ty, i, VM, TY) * BN + _lane(tx, j, VN, TX)
                P[cuda.blockIdx.z, tile, q] = acc[i, j]
        cuda.threadfence()
        cuda.syncthreads()
        last = cuda.shared.array(1, numba.int32)
        if tid == 0:
            last[0] = 1 if cuda.atomic.add(tickets, tile, 1) == S - 1 else 0
        cuda.syncthreads()
        if last[0] == 0:
            return
        cuda.threadfence()
        for i in range(TM):
            lm = _lane(ty, i, VM, TY)
            if m0 + lm < M:
                for j in range(TN):
                    ln = _lane(tx, j, VN, TX)
                    if n0 + ln < N:
                        m, n, q = m0 + lm, n0 + ln, lm * BN + ln
                        v = P[0, tile, q]
                        for z in range(1, S):
                            v += P[z, tile, q]
                        store(C, D, E, geo, act, alpha, m, n, v)
        if tid == 0:
            tickets[tile] = 0

    # float32 4x4 register tiles fit in 128 registers: ask for two resident blocks per SM. Larger
    # register tiles need more (a convolution's index contexts too): say one block, or ptxas
    # settles on 128 registers and spills.
    two = nbt == numba.float32 and TM * TN <= 16
    return jit(gemm_tile, launch_bounds=(NT, 2 if two else 1))


class Gemm:
    """One GEMM variant: its tile kernel, and the launcher."""

    def __init__(self, name, dims, ngeo, ops):
        build = functools.lru_cache(maxsize=None)(lambda dtype, tile: _make_gemm(dtype, tile, ops))
        a, b, c, d, e = dims
        self.rank_e = e
        self.tile = Kernel(f"{name}_tile",
                           f"A{a} A{b} A{c} A{d} A{e} A3 n1 q2 i i i i t{ngeo} i f",
                           lambda dtype: build(dtype, tuple(config.gemm_tile)))

    def __call__(self, A, B, C, D, M, N, K, geo, table=None, E=None, act=0, alpha=0.0):
        """Launch C = A @ B (through the index functions) for an M x N x K problem."""
        if M == 0 or N == 0:
            return
        if E is None:
            E = scratch("gemm_no_e", 1, C.dtype, (1,) * self.rank_e)
        BM, BN, BK, TM, TN, TX, TY = _tile_shape(config.gemm_tile)[:7]
        if table is None:
            table = scratch("gemm_no_table", 1, np.int64, (1, 1))
        gm, gn = cdiv(M, BM), cdiv(N, BN)
        splits = _splits(gm * gn, K, BK)
        if splits > 1:
            kchunk = cdiv(cdiv(K, splits), BK) * BK
            splits = cdiv(K, kchunk)
        if splits > 1:
            P = scratch("gemm", splits * gm * gn * BM * BN, C.dtype, (splits, gm * gn, BM * BN))
        else:
            P, kchunk = scratch("gemm", 1, C.dtype, (1, 1, 1)), max(K, 1)
        tickets = counters("gemm", gm * gn)
        self.tile[(gn, gm, splits), (TX, TY)](A, B, C, D, E, P, tickets, table, M, N, K, kchunk,
                                              geo, act, alpha)


def _splits(blocks, K, BK):
    """How many K chunks: enough for ~2 blocks per SM, each chunk at least gemm_min_chunk steps."""
    sms = num_sms()
    if blocks >= sms:
        return 1
    by_work = K // (BK * config.gemm_min_chunk)
    return max(1, min(cdiv(2 * sms, blocks), by_work, 128))


def gemm(name, dims, ngeo, load_a, load_b, store, a_kfast=True, b_kfast=False,
         a_ctx=no_ctx, b_ctx=no_ctx):
    """Make a GEMM variant (see the module docstring). ``dims``: ranks of A, B, C, D, E;
    ``ngeo``: length of the geometry tuple; ``load_a`` / ``load_b``: index functions or
    :class:`Affine` operands (which take no ``a_ctx`` / ``b_ctx``)."""
    for side, load, ctx in (("A", load_a, a_ctx), ("B", load_b, b_ctx)):
        if isinstance(load, Affine) and ctx is not no_ctx:
            raise ValueError(f"gemm {name}: operand {side} is Affine, its offsets are its context")
    return Gemm(name, dims, ngeo, (a_ctx, load_a, b_ctx, load_b, store, a_kfast, b_kfast))
