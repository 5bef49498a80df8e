"""Kernels of the op library on the GPU: the same names, arguments and semantics as
kernels/cpu/ops.py (read its docstring for the index spaces: shapes and strides are tuples of 6
int64, strides in elements, 0 = broadcast), the pointwise maths of kernels/scalar.py compiled as
device functions.

* Elementwise kernels (unary, binary, where, strided_copy, take_forward): one grid-stride loop
  over the output; each thread turns its flat index into operand offsets by division
  (``_offsets``: only as many divisions as the index needs, none for 1-D spaces).
* Reductions: ``lanes`` threads per output (a row-wise block, ``_common.grid_rows``) walk its
  reduced space and combine with a shared-memory tree (``row_sum`` / ``row_max``), in float64;
  when there are few outputs and long reductions, each output is split into ``splits`` chunks
  whose partials a second launch adds in order. Deterministic: the split depends on the shapes
  and ``config`` only, and no atomics are used.
* matmul: a plain shared-memory tiled GEMM, one output element per thread, ``gridDim.z`` over
  batches (the fast register-tiled GEMM of the layers is ``_gemm.py``).
* take_backward: one thread per (outer, inner) column of grad_x walks the indices in order, so
  duplicate indices add up in the same order every run (no atomics).
* log_softmax: row-wise, as the softmax of activations.py.

Launchers check sizes, offsets and strides on the host (ValueError naming the argument); index
values of take are the caller's to check (reading them back would synchronize).
"""
import functools
import math

import numba
import numpy as np
from numba import cuda

from .. import scalar
from ._common import (A1, A2, Bool, D1, Float, Int, Kernel, L1, ROW_LANES, ROW_ROWS, Shape6, cdiv,
                      device, grid_1d, grid_rows, jit, kernel, launcher, row_loop, row_max,
                      row_max_sumexp, row_sum, scratch)

_R = scalar.MAX_RANK
_NONE = (0,) * _R               # strides of an operand an index helper is not asked about


class _Config:
    """Launch knobs of this module (tests shrink them so tiny arrays span several tiles)."""

    matmul_tile = 16            # TILE x TILE outputs (and threads) per block of the matmul
    max_grid_z = 65535          # matmul blocks along z (batches); the batch loop strides past it
    reduce_rows = 1024          # a reduction is split until it has this many rows (output chunks)
    reduce_min_chunk = 4096     # ...but no chunk of fewer elements than this


config = _Config()

_unary = device(scalar.unary)
_unary_grad = device(scalar.unary_grad)
_binary = device(scalar.binary)
_binary_grad_a = device(scalar.binary_grad_a)
_binary_grad_b = device(scalar.binary_grad_b)


@cuda.jit(device=True)
def _offsets(i, shape, s0, s1, s2):
    """Offsets for three operands with strides s0, s1, s2 of the element with flat C index i of
    the index space ``shape``; stops dividing once the remaining index fits one dimension."""
    o0 = 0
    o1 = 0
    o2 = 0
    for d in range(_R - 1, -1, -1):
        n = shape[d]
        if i < n:
            o0 += i * s0[d]
            o1 += i * s1[d]
            o2 += i * s2[d]
            break
        q = i // n
        r = i - q * n
        o0 += r * s0[d]
        o1 += r * s1[d]
        o2 += r * s2[d]
        i = q
    return o0, o1, o2


# ------------------------------------------------------------------------------- host checks
def _tuple6(kernel_name, name, t):
    if len(t) != _R:
        raise ValueError(f"{kernel_name}: {name} must be a tuple of {_R} ints (MAX_RANK), got "
                         f"{tuple(t)}")


def _space(kernel_name, shape, *strides):
    """Number of elements of ``shape`` after checking it and the stride tuples (by name)."""
    _tuple6(kernel_name, "shape", shape)
    if any(d < 0 for d in shape):
        raise ValueError(f"{kernel_name}: shape must not have negative sizes, got {shape}")
    for name, s in strides:
        _tuple6(kernel_name, name, s)
    return scalar.shape_size(shape)


def _fits(kernel_name, name, arr, offset, shape, strides, strides_name):
    """ValueError unless every element ``arr`` is read or written at lies inside it."""
    lo, hi = scalar.span(offset, shape, strides)
    if lo < 0 or hi >= arr.size:
        raise ValueError(f"{kernel_name}: {name} has {arr.size} elements, but shape {shape} with "
                         f"{strides_name} {tuple(strides)} from offset {offset} reaches elements "
                         f"{lo}..{hi}")


def _size(kernel_name, name, arr, n, what):
    if arr.size != n:
        raise ValueError(f"{kernel_name}: {name} must have {what} = {n} elements, got {arr.size}")


def _code(kernel_name, code, codes, table):
    if not 0 <= code < len(codes):
        raise ValueError(f"{kernel_name}: code must index kernels/scalar.py {table} "
                         f"(0..{len(codes) - 1}), got {code!r}")


# ------------------------------------------------------------------------------------- unary
@kernel
def _unary_fwd(code: Int, x: A1, alpha: Float, beta: Float, out: A1):
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        out[i] = _unary(code, x[i], alpha, beta)


@kernel
def _unary_bwd(code: Int, x: A1, y: A1, grad_out: A1, alpha: Float, beta: Float, grad_in: A1):
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        grad_in[i] = grad_out[i] * _unary_grad(code, x[i], y[i], alpha, beta)


@launcher
def unary_forward(code, x, alpha, beta, out):
    """out[i] = unary(code, x[i], alpha, beta) (kernels/scalar.py UNARY_CODES); out may be x."""
    _code("unary_forward", code, scalar.UNARY_CODES, "UNARY_CODES")
    _size("unary_forward", "out", out, x.size, "x.size")
    if x.size:
        _unary_fwd[grid_1d(x.size)](code, x, alpha, beta, out)


@launcher
def unary_backward(code, x, y, grad_out, alpha, beta, grad_in):
    """grad_in[i] = grad_out[i] * unary_grad(code, x[i], y[i], alpha, beta); grad_in may be
    grad_out."""
    _code("unary_backward", code, scalar.UNARY_CODES, "UNARY_CODES")
    for name, arr in (("y", y), ("grad_out", grad_out), ("grad_in", grad_in)):
        _size("unary_backward", name, arr, x.size, "x.size")
    if x.size:
        _unary_bwd[grid_1d(x.size)](code, x, y, grad_out, alpha, beta, grad_in)


# ------------------------------------------------------------------------------------- binary
@kernel
def _binary_fwd_flat(code: Int, a: A1, b: A1, out: A1):
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        out[i] = _binary(code, a[i], b[i])


@kernel
def _binary_fwd(code: Int, a: A1, b: A1, shape: Shape6, a_strides: Shape6, b_strides: Shape6,
                out: A1):
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        pa, pb, _ = _offsets(i, shape, a_strides, b_strides, _NONE)
        out[i] = _binary(code, a[pa], b[pb])


@kernel
def _binary_bwd_flat(code: Int, a: A1, b: A1, grad_out: A1, grad_a: A1, grad_b: A1):
    for i in range(cuda.grid(1), grad_out.size, cuda.gridsize(1)):
        av = a[i]
        bv = b[i]
        g = grad_out[i]
        grad_a[i] = g * _binary_grad_a(code, av, bv)
        grad_b[i] = g * _binary_grad_b(code, av, bv)


@kernel
def _binary_bwd(code: Int, a: A1, b: A1, grad_out: A1, shape: Shape6, a_strides: Shape6,
                b_strides: Shape6, grad_a: A1, grad_b: A1):
    for i in range(cuda.grid(1), grad_out.size, cuda.gridsize(1)):
        pa, pb, _ = _offsets(i, shape, a_strides, b_strides, _NONE)
        av = a[pa]
        bv = b[pb]
        g = grad_out[i]
        grad_a[i] = g * _binary_grad_a(code, av, bv)
        grad_b[i] = g * _binary_grad_b(code, av, bv)


def _binary_checks(kernel_name, code, a, b, shape, a_strides, b_strides):
    """prod(shape), after checking a binary kernel's code, shape and operands; and whether
    neither operand is broadcast (the flat path)."""
    _code(kernel_name, code, scalar.BINARY_CODES, "BINARY_CODES")
    n = _space(kernel_name, shape, ("a_strides", a_strides), ("b_strides", b_strides))
    if n:
        _fits(kernel_name, "a", a, 0, shape, a_strides, "a_strides")
        _fits(kernel_name, "b", b, 0, shape, b_strides, "b_strides")
    flat = scalar.is_c_contiguous(shape, a_strides) and scalar.is_c_contiguous(shape, b_strides)
    return n, flat


@launcher
def binary_forward(code, a, b, shape, a_strides, b_strides, out):
    """out[idx] = binary(code, a[idx . a_strides], b[idx . b_strides]) over ``shape``
    (kernels/scalar.py BINARY_CODES); out flat, C order, prod(shape) elements."""
    n, flat = _binary_checks("binary_forward", code, a, b, shape, a_strides, b_strides)
    _size("binary_forward", "out", out, n, "prod(shape)")
    if not n:
        return
    if flat:
        _binary_fwd_flat[grid_1d(n)](code, a, b, out)
    else:
        _binary_fwd[grid_1d(n)](code, a, b, shape, a_strides, b_strides, out)


@launcher
def binary_backward(code, a, b, grad_out, shape, a_strides, b_strides, grad_a, grad_b):
    """Full-size gradients over ``shape``: grad_a[idx] = grad_out[idx] * binary_grad_a(code,
    a[..], b[..]), likewise grad_b (the caller reduces them to a broadcast input's shape)."""
    n, flat = _binary_checks("binary_backward", code, a, b, shape, a_strides, b_strides)
    for name, arr in (("grad_out", grad_out), ("grad_a", grad_a), ("grad_b", grad_b)):
        _size("binary_backward", name, arr, n, "prod(shape)")
    if not n:
        return
    if flat:
        _binary_bwd_flat[grid_1d(n)](code, a, b, grad_out, grad_a, grad_b)
    else:
        _binary_bwd[grid_1d(n)](code, a, b, grad_out, shape, a_strides, b_strides, grad_a, grad_b)


# ------------------------------------------------------------------------------------- where
@kernel
def _where_fwd(cond: A1, a: A1, b: A1, shape: Shape6, c_strides: Shape6, a_strides: Shape6,
               b_strides: Shape6, out: A1):
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        pc, pa, pb = _offsets(i, shape, c_strides, a_strides, b_strides)
        out[i] = a[pa] if cond[pc] != 0 else b[pb]


@kernel
def _where_bwd(cond: A1, grad_out: A1, shape: Shape6, c_strides: Shape6, grad_a: A1, grad_b: A1):
    zero = grad_a.dtype.type(0)
    for i in range(cuda.grid(1), grad_out.size, cuda.gridsize(1)):
        pc, _, _ = _offsets(i, shape, c_strides, _NONE, _NONE)
        g = grad_out[i]
        if cond[pc] != 0:
            grad_a[i] = g
            grad_b[i] = zero
        else:
            grad_a[i] = zero
            grad_b[i] = g


@launcher
def where_forward(cond, a, b, shape, c_strides, a_strides, b_strides, out):
    """out[idx] = a[..] where cond[..] != 0 else b[..], all three broadcast through their
    strides over ``shape``."""
    k = "where_forward"
    n = _space(k, shape, ("c_strides", c_strides), ("a_strides", a_strides),
               ("b_strides", b_strides))
    _size(k, "out", out, n, "prod(shape)")
    if not n:
        return
    _fits(k, "cond", cond, 0, shape, c_strides, "c_strides")
    _fits(k, "a", a, 0, shape, a_strides, "a_strides")
    _fits(k, "b", b, 0, shape, b_strides, "b_strides")
    _where_fwd[grid_1d(n)](cond, a, b, shape, c_strides, a_strides, b_strides, out)


@launcher
def where_backward(cond, grad_out, shape, c_strides, grad_a, grad_b):
    """Full-size gradients of where: grad_a = grad_out where cond else 0, grad_b = grad_out
    where not cond else 0."""
    k = "where_backward"
    n = _space(k, shape, ("c_strides", c_strides))
    for name, arr in (("grad_out", grad_out), ("grad_a", grad_a), ("grad_b", grad_b)):
        _size(k, name, arr, n, "prod(shape)")
    if not n:
        return
    _fits(k, "cond", cond, 0, shape, c_strides, "c_strides")
    _where_bwd[grid_1d(n)](cond, grad_out, shape, c_strides, grad_a, grad_b)


# ------------------------------------------------------------------------------------- reductions
@kernel
def _reduce_rows(x: A1, keep_shape: Shape6, keep_strides: Shape6, red_shape: Shape6,
                 red_strides: Shape6, nkeep: Int, nred: Int, splits: Int, scale: Float,
                 is_max: Bool, out: A1, partials: D1):
    """Row g = (output g // splits, chunk g % splits): ``lanes`` threads stride over the chunk's
    reduced elements, then a shared-memory tree combines them into out[g] (one chunk per
    output) or partials[g]."""
    sh = cuda.shared.array((ROW_ROWS, ROW_LANES), np.float64)
    tx = cuda.threadIdx.x
    lanes = cuda.blockDim.x
    rows = nkeep * splits
    chunk = (nred + splits - 1) // splits
    first, stop, step = row_loop(rows)
    for g in range(first, stop, step):
        live = g < rows
        acc = -math.inf if is_max else 0.0
        if live:
            o = g // splits
            c = g - o * splits
            base, _, _ = _offsets(o, keep_shape, keep_strides, _NONE, _NONE)
            for r in range(c * chunk + tx, min(nred, (c + 1) * chunk), lanes):
                p, _, _ = _offsets(r, red_shape, red_strides, _NONE, _NONE)
                v = np.float64(x[base + p])
                if is_max:
                    if v > acc or v != v:
                        acc = v
                else:
                    acc += v
        acc = row_max(sh, acc) if is_max else row_sum(sh, acc)
        if live and tx == 0:
            if splits > 1:
                partials[g] = acc
            else:
                out[g] = acc if is_max else acc * scale


@kernel
def _reduce_partials(nkeep: Int, splits: Int, scale: Float, is_max: Bool, partials: D1, out: A1):
    for o in range(cuda.grid(1), nkeep, cuda.gridsize(1)):
        acc = partials[o * splits]
        for c in range(1, splits):
            v = partials[o * splits + c]
            if is_max:
                if v > acc or v != v:
                    acc = v
            else:
                acc += v
        out[o] = acc if is_max else acc * scale


def _reduce(name, x, keep_shape, keep_strides, red_shape, red_strides, scale, is_max, out):
    """reduce_sum (``is_max`` False) and reduce_max: checks, the split, one or two launches."""
    nkeep = _space(name, keep_shape, ("keep_strides", keep_strides))
    nred = _space(name, red_shape, ("red_strides", red_strides))
    _size(name, "out", out, nkeep, "prod(keep_shape)")
    if not nkeep:
        return
    if is_max and not nred:
        raise ValueError(f"{name}: red_shape {red_shape} is empty (a maximum of no elements)")
    if nred:
        klo, khi = scalar.span(0, keep_shape, keep_strides)
        rlo, rhi = scalar.span(0, red_shape, red_strides)
        if klo + rlo < 0 or khi + rhi >= x.size:
            raise ValueError(f"{name}: x has {x.size} elements, but keep_shape {keep_shape} with "
                             f"keep_strides {keep_strides} and red_shape {red_shape} with "
                             f"red_strides {red_strides} reach elements {klo + rlo}..{khi + rhi}")
    splits = 1
    if nkeep < config.reduce_rows:
        splits = max(1, min(cdiv(config.reduce_rows, nkeep), nred // config.reduce_min_chunk))
    partials = scratch("ops_reduce", nkeep * splits if splits > 1 else 1, np.float64)
    _reduce_rows[grid_rows(nkeep * splits)](x, keep_shape, keep_strides, red_shape, red_strides,
                                            nkeep, nred, splits, scale, is_max, out, partials)
    if splits > 1:
        _reduce_partials[grid_1d(nkeep)](nkeep, splits, scale, is_max, partials, out)


@launcher
def reduce_sum(x, keep_shape, keep_strides, red_shape, red_strides, scale, out):
    """out[o] = scale * sum over the index space red_shape of x[o . keep_strides + r .
    red_strides] (o in C order over keep_shape), in float64; an empty reduction gives 0."""
    _reduce("reduce_sum", x, keep_shape, keep_strides, red_shape, red_strides, scale, False, out)


@launcher
def reduce_max(x, keep_shape, keep_strides, red_shape, red_strides, out):
    """out[o] = maximum over the index space red_shape (as reduce_sum), NaN propagating; the
    reduction must not be empty."""
    _reduce("reduce_max", x, keep_shape, keep_strides, red_shape, red_strides, 1.0, True, out)


# ------------------------------------------------------------------------------------- copies
@kernel
def _strided_copy(x: A1, x_offset: Int, shape: Shape6, x_strides: Shape6, accumulate: Bool, out: A1,
                  out_offset: Int, out_strides: Shape6, n: Int):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        px, po, _ = _offsets(i, shape, x_strides, out_strides, _NONE)
        if accumulate:
            out[out_offset + po] += x[x_offset + px]
        else:
            out[out_offset + po] = x[x_offset + px]


@launcher
def strided_copy(x, x_offset, shape, x_strides, accumulate, out, out_offset, out_strides):
    """out[out_offset + idx . out_strides] = (or += with ``accumulate``) x[x_offset + idx .
    x_strides] over ``shape``; the output positions must be distinct."""
    k = "strided_copy"
    n = _space(k, shape, ("x_strides", x_strides), ("out_strides", out_strides))
    if not n:
        return
    _fits(k, "x", x, x_offset, shape, x_strides, "x_strides")
    _fits(k, "out", out, out_offset, shape, out_strides, "out_strides")
    _strided_copy[grid_1d(n)](x, x_offset, shape, x_strides, accumulate, out, out_offset,
                              out_strides, n)


# ------------------------------------------------------------------------------------- matmul
@functools.lru_cache(maxsize=None)
def _make_matmul(dtype, tile):
    """The tiled matmul kernel for one dtype and tile size (shared arrays need both at compile
    time). Block (tile, tile): thread (ty, tx) computes out[t, row, col]; each step stages a
    tile x tile piece of op(A) and of op(B) in shared memory, loaded so that consecutive threads
    (tx) read consecutive addresses whether or not the operand is transposed."""
    nbt = numba.from_dtype(np.dtype(dtype))
    T = tile
    TP = tile + 1               # padded rows: the transposed staging stores hit distinct banks

    def matmul(a: A1, b: A1, batch_shape: Shape6, a_batch_strides: Shape6, b_batch_strides: Shape6,
               nbatch: Int, m: Int, n: Int, k: Int, lda: Int, ldb: Int, trans_a: Bool,
               trans_b: Bool, accumulate: Bool, out: A1):
        As = cuda.shared.array((T, TP), nbt)        # As[i, q] = op(A)[m0 + i, k0 + q]
        Bs = cuda.shared.array((T, TP), nbt)        # Bs[q, j] = op(B)[k0 + q, n0 + j]
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        m0 = cuda.blockIdx.y * T
        n0 = cuda.blockIdx.x * T
        zero = out.dtype.type(0)
        for t in range(cuda.blockIdx.z, nbatch, cuda.gridDim.z):
            pa, pb, _ = _offsets(t, batch_shape, a_batch_strides, b_batch_strides, _NONE)
            acc = zero
            for k0 in range(0, k, T):
                if trans_a:     # stored k x m: tx walks m
                    i, q = tx, ty
                    ok = m0 + i < m and k0 + q < k
                    As[i, q] = a[pa + (k0 + q) * lda + m0 + i] if ok else zero
                else:           # stored m x k: tx walks k
                    i, q = ty, tx
                    ok = m0 + i < m and k0 + q < k
                    As[i, q] = a[pa + (m0 + i) * lda + k0 + q] if ok else zero
                if trans_b:     # stored n x k: tx walks k
                    q, j = tx, ty
                    ok = k0 + q < k and n0 + j < n
                    Bs[q, j] = b[pb + (n0 + j) * ldb + k0 + q] if ok else zero
                else:           # stored k x n: tx walks n
                    q, j = ty, tx
                    ok = k0 + q < k and n0 + j < n
                    Bs[q, j] = b[pb + (k0 + q) * ldb + n0 + j] if ok else zero
                cuda.syncthreads()
                for q in range(T):
                    acc += As[ty, q] * Bs[q, tx]
                cuda.syncthreads()
            row = m0 + ty
            col = n0 + tx
            if row < m and col < n:
                o = (t * m + row) * n + col
                out[o] = out[o] + acc if accumulate else acc

    return jit(matmul)


_matmul = Kernel("ops._matmul", _make_matmul(np.float64, config.matmul_tile),
                 lambda dtype: _make_matmul(dtype, config.matmul_tile))


@launcher
def matmul_forward(a, b, batch_shape, a_batch_strides, b_batch_strides, m, n, k, lda, ldb,
                   trans_a, trans_b, accumulate, out):
    """out[t] (=, or += with ``accumulate``) op(A_t) @ op(B_t) for each batch index t (C order
    over batch_shape); A_t at a[t . a_batch_strides], op(A_t) m x k stored m rows of stride lda
    (k rows read transposed with ``trans_a``), op(B_t) likewise; out C-contiguous (batch, m, n).
    Products are accumulated in the dtype, as cuBLAS does."""
    name = "matmul_forward"
    nb = _space(name, batch_shape, ("a_batch_strides", a_batch_strides),
                ("b_batch_strides", b_batch_strides))
    if min(m, n, k) < 0:
        raise ValueError(f"{name}: m, n and k must be >= 0, got {m}, {n}, {k}")
    _size(name, "out", out, nb * m * n, "prod(batch_shape) * m * n")
    for op, arr, strides, rows, cols, ld, trans in (
            ("a", a, a_batch_strides, m, k, lda, trans_a),
            ("b", b, b_batch_strides, k, n, ldb, trans_b)):
        if ld < max(1, rows if trans else cols):
            raise ValueError(f"{name}: ld{op} = {ld} is less than a stored row of {op.upper()} "
                             f"({rows if trans else cols} elements)")
        lo, hi = scalar.matrix_span(batch_shape, strides, rows, cols, ld, trans)
        if lo < 0 or hi >= arr.size:
            raise ValueError(f"{name}: {op} has {arr.size} elements, but the batch strides, "
                             f"sizes and ld{op} reach elements {lo}..{hi}")
    if not (nb and m and n):
        return
    T = config.matmul_tile
    gy = cdiv(m, T)
    if gy > 65535:
        raise ValueError(f"{name}: m = {m} needs {gy} blocks along y, more than 65535")
    grid = (cdiv(n, T), gy, min(nb, config.max_grid_z))
    _matmul[grid, (T, T)](a, b, batch_shape, a_batch_strides, b_batch_strides, nb, m, n, k, lda,
                          ldb, trans_a, trans_b, accumulate, out)


# ------------------------------------------------------------------------------------- take
@kernel
def _take_fwd(x: A1, idx: L1, n: Int, inner: Int, out: A1):
    m = idx.size
    for e in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        r = e // inner                      # (o, j) row of the output
        i = e - r * inner
        o = r // m
        out[e] = x[(o * n + idx[r - o * m]) * inner + i]


@kernel
def _take_bwd(grad_out: A1, idx: L1, outer: Int, n: Int, inner: Int, accumulate: Bool, grad_x: A1):
    """Thread c owns column c = (o, i) of grad_x: zeroes it unless accumulating, then adds the
    rows of grad_out in index order."""
    m = idx.size
    zero = grad_x.dtype.type(0)
    for c in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        o = c // inner
        i = c - o * inner
        if not accumulate:
            for r in range(n):
                grad_x[(o * n + r) * inner + i] = zero
        for j in range(m):
            grad_x[(o * n + idx[j]) * inner + i] += grad_out[(o * m + j) * inner + i]


def _take_sizes(name, idx, outer, n, inner, full, full_name, taken, taken_name):
    if min(outer, n, inner) < 0:
        raise ValueError(f"{name}: outer, n and inner must be >= 0, got {outer}, {n}, {inner}")
    _size(name, full_name, full, outer * n * inner, "outer * n * inner")
    _size(name, taken_name, taken, outer * idx.size * inner, "outer * idx.size * inner")


@launcher
def take_forward(x, idx, outer, n, inner, out):
    """Gather along one axis: out[o, j, i] = x[o, idx[j], i], x (outer, n, inner) and out
    (outer, m, inner) flat, idx m integers in [0, n) (checked by the caller)."""
    _take_sizes("take_forward", idx, outer, n, inner, x, "x", out, "out")
    if out.size:
        _take_fwd[grid_1d(out.size)](x, idx, n, inner, out)


@launcher
def take_backward(grad_out, idx, outer, n, inner, accumulate, grad_x):
    """Scatter-add: grad_x (outer, n, inner) zeroed unless ``accumulate``, then grad_x[o, idx[j],
    i] += grad_out[o, j, i] for j in order (deterministic: one thread per column of grad_x)."""
    _take_sizes("take_backward", idx, outer, n, inner, grad_x, "grad_x", grad_out, "grad_out")
    if grad_x.size:
        _take_bwd[grid_1d(outer * inner)](grad_out, idx, outer, n, inner, accumulate, grad_x)


# ------------------------------------------------------------------------------------- log_softmax
def _log_softmax_fwd(x: A2, out: A2):
    sh = cuda.shared.array((ROW_ROWS, ROW_LANES), np.float64)
    rows, cols = x.shape
    first, stop, step = row_loop(rows)
    for r in range(first, stop, step):
        mx, s = row_max_sumexp(sh, x, r, r < rows)
        if r < rows:
            lse = mx + math.log(s)
            for j in range(cuda.threadIdx.x, cols, cuda.blockDim.x):
                out[r, j] = x[r, j] - lse


def _log_softmax_bwd(y: A2, grad_out: A2, grad_in: A2):
    sh = cuda.shared.array((ROW_ROWS, ROW_LANES), np.float64)
    rows, cols = y.shape
    tx = cuda.threadIdx.x
    lanes = cuda.blockDim.x
    first, stop, step = row_loop(rows)
    for r in range(first, stop, step):
        live = r < rows
        s = 0.0
        if live:
            for j in range(tx, cols, lanes):
                s += np.float64(grad_out[r, j])
        s = row_sum(sh, s)
        if live:
            for j in range(tx, cols, lanes):
                grad_in[r, j] = grad_out[r, j] - math.exp(np.float64(y[r, j])) * s


_log_softmax_forward = Kernel("ops._log_softmax_forward", _log_softmax_fwd,
                              lambda dtype, k=cuda.jit(_log_softmax_fwd): k)
_log_softmax_backward = Kernel("ops._log_softmax_backward", _log_softmax_bwd,
                               lambda dtype, k=cuda.jit(_log_softmax_bwd): k)


@launcher
def log_softmax_forward(x, out):
    """Row-wise log-softmax of x (rows, cols), stable (row max subtracted, log-sum-exp in
    float64); out may be x."""
    if tuple(out.shape) != tuple(x.shape):
        raise ValueError(f"log_softmax_forward: out must have the shape of x {tuple(x.shape)}, "
                         f"got {tuple(out.shape)}")
    if x.size:
        _log_softmax_forward[grid_rows(x.shape[0])](x, out)


@launcher
def log_softmax_backward(y, grad_out, grad_in):
    """grad_in = grad_out - exp(y) * rowsum(grad_out), y the forward output; grad_in may be
    grad_out."""
    for name, arr in (("grad_out", grad_out), ("grad_in", grad_in)):
        if tuple(arr.shape) != tuple(y.shape):
            raise ValueError(f"log_softmax_backward: {name} must have the shape of y "
                             f"{tuple(y.shape)}, got {tuple(arr.shape)}")
    if y.size:
        _log_softmax_backward[grid_rows(y.shape[0])](y, grad_out, grad_in)
