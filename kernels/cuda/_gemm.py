"""The tiled GEMMs of the CUDA kernels, C[m, n] = sum_k A[m, k] * B[k, n]: a plain one to read
first, and the fast one that dense layers and convolutions run.

Read as llm.c's ``dev/cuda`` files: a straightforward version, then what each optimization adds.
The tests check both against a float64 NumPy reference and each other
(tests/test_cuda_gemm_plain.py).

Version 1, :func:`gemm_plain` (one output element per thread)
    A block of TILE x TILE threads computes a TILE x TILE tile of C. Walking K in steps of TILE,
    each thread copies one element of A's and one of B's current tile into shared memory
    (consecutive threads read consecutive addresses: coalesced), the block synchronizes, and each
    thread adds a row of the A tile times a column of the B tile into its one accumulator. Every
    element read from global memory is used TILE times, but each multiply-add still reads two
    words from shared memory, which caps the speed well below the GPU's arithmetic rate.
    (``ops.matmul_forward`` is the same scheme with batches and transposed operands.)

The fast GEMM (:func:`gemm` makes a variant, ``Gemm.__call__`` launches it) adds, in order:

1. Register blocking. A block of (BN/TN) x (BM/TM) threads computes a rectangular BM x BN tile
   (``config.gemm_tile = (BM, BN, BK, TM, TN)``, default 64, 128, 8, 4, 8: 256 threads), each
   thread a TM x TN tile of outputs held in registers. Per k it reads TM values of A and TN of B
   from shared memory for TM * TN multiply-adds (12 reads for 32 with 4 x 8, where version 1
   reads 64), and each staged element of A (B) is used BN (BM) times. Every thread stages
   several elements of each tile per BK step.
2. Vector loads from shared memory. A thread's register rows are runs of 4 adjacent tile rows
   (2 or 1 when TM is not a multiple of 4), the runs of the block's threads interleaved
   (``_lane``), and likewise its columns. The A tile is stored transposed (k-major), so a run is
   4 contiguous elements: one 16-byte load (4x8 registers: 3 loads per k instead of 12). Shared
   rows are padded by 4 elements, which keeps them 16-byte aligned and spreads the transposed
   stores of K-fast operands over all 32 banks; offsets are unsigned so NVVM can merge the loads.
   (Global memory is still read one element per load.)
3. Coalesced staging. ``a_kfast`` / ``b_kfast`` say which index of an operand is contiguous in
   memory; the staged elements are assigned to threads so that consecutive threads read
   consecutive addresses whichever it is.
4. Software pipelining. The next BK step's elements are loaded from global memory into registers
   while the current shared tiles are multiplied, then stored into shared memory: the global
   loads' latency hides behind the arithmetic.
5. Bounds checks at the edges only. Elements outside A or B are staged as zeros (ragged edges),
   but a step whose tile lies inside its operand (every block but the edge ones) is staged
   without per-element checks (the staging loop is inlined twice, once per case).
6. Index functions (generality at no cost per element). The operands are read and C written
   through device functions, so one tile loop serves plain and transposed matrices and implicit
   GEMM (a convolution's im2col matrix is never formed). The part of an address that depends
   only on a row of A or a column of B is computed once per kernel, out of the K loop; an
   :class:`Affine` operand advances each element's offset by one add per step, no multiply.
7. Fused epilogue. ``store`` writes each result: bias add, activation (a second output keeps the
   pre-activation), or adding into an existing gradient (BLAS's beta = 1), so C is written once
   and no elementwise launch follows.
8. Split-K. When the grid has fewer blocks than ~2 per SM and K is long (weight gradients, small
   layers), ``gridDim.z`` blocks each reduce a K chunk into a device scratch of partial tiles and
   take a ticket from their output tile's counter; the block with the last ticket adds the
   partials in split order and applies ``store`` (deterministic, no second launch), then resets
   the counter.
9. Compile-time shapes. Each variant is compiled per dtype and tile shape by a cached factory
   that freezes ``numba.from_dtype(dtype)`` into the kernel's closure (shared and register arrays
   need their element type and size at compile time), with launch bounds that let a float32
   4 x 4 tile keep two blocks per SM.

Writing a variant: :func:`gemm` takes ``cuda.jit(device=True)`` index functions

* ``load_a(A, geo, T, m, k, c0, c1, c2)`` -> A[m, k]   (called only for m < M, k < K)
* ``load_b(B, geo, T, k, n, c0, c1, c2)`` -> B[k, n]   (called only for k < K, n < N)
* ``store(C, D, E, geo, act, alpha, m, n, v)``: write the result v of C[m, n] (the epilogue).
  ``act`` is an int64 the variant interprets: forward variants read it as an activation code
  (``alpha`` its parameter); weight-gradient variants read it as the *accumulate* flag.
* optional ``a_ctx(A, geo, m)`` / ``b_ctx(B, geo, n)`` -> (c0, c1, c2): the row (column) part of
  an address, computed once per kernel (a convolution decomposes its output index into image
  and position there).

or, for an operand that is a plain matrix passed flat, an :class:`Affine` (``rows`` / ``cols``):
its element (i, k) lies at ``offset(X, geo, i) + k * kstride(geo)``. ``geo`` is a tuple of int64
the variant interprets (convolution geometry); ``T`` an int64 table the launcher may pass,
indexed by k (a convolution's precomputed offsets of the K index, so the loop has no integer
divisions); ``D`` and ``E`` auxiliary arrays (bias, a second output).
"""
import functools

import numba
import numpy as np
from numba import cuda

from ._common import (A2, A3, N1, Q2, VECTOR_ALIGN, Float, Int, Kernel, cdiv, config, counters,
                      jit, launcher, num_sms, scratch)

# ------------------------------------------------------------------ version 1: the plain GEMM
TILE = 16       # gemm_plain: TILE x TILE threads per block, one output element each


@functools.lru_cache(maxsize=None)
def _make_plain(dtype):
    nbt = numba.from_dtype(np.dtype(dtype))

    def plain(A: A2, B: A2, C: A2):
        As = cuda.shared.array((TILE, TILE), nbt)     # As[i, q] = A[m0 + i, k0 + q]
        Bs = cuda.shared.array((TILE, TILE), nbt)     # Bs[q, j] = B[k0 + q, n0 + j]
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        m = cuda.blockIdx.y * TILE + ty                 # this thread's output C[m, n]
        n = cuda.blockIdx.x * TILE + tx
        M, K = A.shape
        N = B.shape[1]
        zero = C.dtype.type(0)
        acc = zero
        for k0 in range(0, K, TILE):
            # each thread stages one element of each tile (zero outside the matrix); tx walks
            # along a row, so a warp reads consecutive addresses
            As[ty, tx] = A[m, k0 + tx] if m < M and k0 + tx < K else zero
            Bs[ty, tx] = B[k0 + ty, n] if k0 + ty < K and n < N else zero
            cuda.syncthreads()                          # both tiles complete
            for q in range(TILE):
                acc += As[ty, q] * Bs[q, tx]
            cuda.syncthreads()                          # done reading before the next step
        if m < M and n < N:
            C[m, n] = acc

    return jit(plain)


_plain = Kernel("_gemm._plain", _make_plain(np.float64), _make_plain)


@launcher
def gemm_plain(a, b, out):
    """out (M, N) = a (M, K) @ b (K, N), accumulated in the dtype (version 1 above)."""
    (M, K), (K2, N) = a.shape, b.shape
    if K2 != K or tuple(out.shape) != (M, N):
        raise ValueError(f"gemm_plain: a {tuple(a.shape)} @ b {tuple(b.shape)} does not fit "
                         f"out {tuple(out.shape)}")
    if M and N:
        _plain[(cdiv(N, TILE), cdiv(M, TILE)), (TILE, TILE)](a, b, out)


# ------------------------------------------------------------------ the fast GEMM


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


def _make_gemm(dtype, tile, ops, kinds):
    """The tile kernel of one variant (``ops``) for one dtype and tile shape; ``kinds``: those of
    its operands A, B, C, D, E and of its geometry tuple."""
    KA, KB, KC, KD, KE, KGEO = kinds
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

    def gemm_tile(A: KA, B: KB, C: KC, D: KD, E: KE, P: A3, tickets: N1, T: Q2, M: Int, N: Int,
                  K: Int, kchunk: Int, geo: KGEO, act: Int, alpha: Float):
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
        kinds = tuple(f"A{rank}" for rank in dims) + (f"t{ngeo}",)
        build = functools.lru_cache(maxsize=None)(
            lambda dtype, tile: _make_gemm(dtype, tile, ops, kinds))
        self.rank_e = dims[4]
        self.tile = Kernel(f"{name}_tile", build(np.float64, tuple(config.gemm_tile)),
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
