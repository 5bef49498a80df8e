"""Kernels of the op library (``nb.ops``): pointwise unary and binary ops with NumPy broadcasting,
where, sums and maxima over axes, strided copies, batched matmul, take (gather and its
scatter-add) and row-wise log-softmax. The CUDA twins (same names and arguments) are in
kernels/cuda/ops.py; the pointwise maths (UNARY_CODES, BINARY_CODES) is kernels/scalar.py.

Index spaces: a ``shape`` is a tuple of MAX_RANK = 6 int64, padded at the front with 1s, and each
operand walks it with its own tuple of ``strides`` in elements (0 on a dimension of size > 1:
broadcast along it). An output written over a whole index space is flat, in C order over it.
A kernel first coalesces the space (``_coalesce``: size-1 dimensions dropped, neighbours that
every operand walks contiguously merged), so that a bias broadcast over (N, C, H, W) is walked as
N*C rows of H*W, and operands that are not broadcast at all (the fast path) as one flat row. Each
work item then walks rows of the innermost dimension, an odometer (``_next_row``) moving every
operand's offset from row to row, with no division per row or element; the row loops index
with uint64 (``_u``) so that LLVM vectorizes them where the row strides are 1.

Parallelism: each kernel is one ``prange`` loop, compiled serially and run below ``_PAR_MIN``
elements and compiled with ``parallel=True`` for larger calls (``_split``), over work items fixed by
the shapes alone (``_CHUNK`` elements of a row, an output, a block of outputs): results do not
depend on the number of threads. Reductions accumulate in float64 in C order over the reduced
space; one longer than ``_RED_CHUNK`` elements is summed in chunks of that many whose partial
results are added in order (deterministic, and parallel even for a single output).

Bad sizes (an output of the wrong size, strides or offsets that reach outside an operand, indices
outside [0, n)) raise ValueError naming the argument before anything is written.
"""
import math

import numpy as np
from numba import njit, prange

from .. import scalar
from ._blas import gemm
from ._jit import HELPER
from ._threads import split_kernel

# Sizes at or above which the prange paths run (element count of the index space; multiply-adds
# for matmul). Serial vs 2 threads on the shared 2-core machine (best of 50, float32): exp,
# log_softmax and strided or broadcast loops gain 1.5-2x from 8k elements, a flat add only from
# ~64k (0.8-1.0x below: thread start-up against a 2 us loop); 32k splits the difference.
_PAR_MIN = 1 << 15
_MATMUL_PAR_MIN = 1 << 18
_CHUNK = 1 << 14            # elements per work item of the elementwise kernels
_RED_CHUNK = 1 << 14        # a reduction longer than this is summed in partials of this many
_COLUMN_BLOCK = 128         # outputs per work item of the column reductions
_COLUMN_MIN = 16            # fewest outputs for the column path (one contiguous keep dimension)
_TAKE_COLUMNS = 64          # columns (inner positions) per work item of take_backward

_R = scalar.MAX_RANK
_N_UNARY = len(scalar.UNARY_CODES)
_N_BINARY = len(scalar.BINARY_CODES)

_unary = njit(inline="always")(scalar.unary)
_unary_grad = njit(inline="always")(scalar.unary_grad)
_binary = njit(inline="always")(scalar.binary)
_binary_grad_a = njit(inline="always")(scalar.binary_grad_a)
_binary_grad_b = njit(inline="always")(scalar.binary_grad_b)
_shape_size = njit(scalar.shape_size)
_span = njit(scalar.span)
_matrix_span = njit(scalar.matrix_span)


def _index_space(i):
    """The work of a kernel over the index space given as its argument ``i`` (a shape)."""
    return lambda *args: math.prod(args[i])


def _split(size, par_min=_PAR_MIN):
    """Decorator: the kernel compiled serially below ``par_min`` elements of work and with
    ``parallel=True`` above, each copy at its first call (_threads.split_parallel; ``size``: the
    argument whose element count is the work, or a function of the arguments giving it). A
    program whose tensors stay small never compiles a parfor copy."""
    return split_kernel(size, par_min, error_model="numpy")


# ------------------------------------------------------------------------------- index spaces
@njit
def _valid_shape(shape):
    """True when ``shape`` has MAX_RANK entries, none negative."""
    if len(shape) != _R:
        return False
    for d in range(_R):
        if shape[d] < 0:
            return False
    return True


@njit
def _fits(size, offset, shape, strides):
    """True when every element an operand of ``size`` elements reaches over the non-empty
    ``shape`` from ``offset`` with ``strides`` lies inside it."""
    if len(strides) != _R:
        return False
    lo, hi = _span(offset, shape, strides)
    return lo >= 0 and hi < size


@njit(**HELPER)
def _coalesce(shape, strides):
    """(sh, st): the index space ``shape`` walked by the operands whose stride tuples are
    ``strides`` (a tuple of tuples), with size-1 dimensions dropped and a dimension merged into
    the next where every operand steps from one into the other contiguously
    (stride[d] == stride[d+1] * shape[d+1]); right-aligned in MAX_RANK entries (leading sizes 1,
    strides 0). C order is kept: a flat output index still counts the elements in order."""
    nops = len(strides)
    sh = np.ones(_R, np.int64)
    st = np.zeros((nops, _R), np.int64)
    j = _R                              # sh[j:] are filled
    for d in range(_R - 1, -1, -1):
        n = shape[d]
        if n == 1:
            continue
        merge = j < _R
        for k in range(nops):
            if merge and strides[k][d] != st[k, j] * sh[j]:
                merge = False
        if merge:
            sh[j] *= n
        else:
            j -= 1
            sh[j] = n
            for k in range(nops):
                st[k, j] = strides[k][d]
    return sh, st


@njit(inline="always")
def _row_start(r, sh, st, k):
    """Offset of operand ``k`` at the start of row ``r`` of a coalesced space (rows: every
    dimension but the last, in C order); a division per dimension until ``r`` is used up."""
    p = 0
    d = _R - 2
    while r > 0:
        n = sh[d]
        if r < n:
            return p + r * st[k, d]
        q = r // n
        p += (r - q * n) * st[k, d]
        r = q
        d -= 1
    return p


@njit(inline="always")
def _rows_from(r, sh, st):
    """(idx, off): the index of row ``r`` over the row dimensions and every operand's offset at
    its start, the state that _next_row advances."""
    idx = np.empty(_R - 1, np.int64)
    off = np.zeros(st.shape[0], np.int64)
    for d in range(_R - 2, -1, -1):
        n = sh[d]
        q = r // n
        idx[d] = r - q * n
        for k in range(st.shape[0]):
            off[k] += idx[d] * st[k, d]
        r = q
    return idx, off


@njit(inline="always")
def _next_row(sh, st, idx, off):
    """Move (idx, off) on to the next row in C order: an odometer, no divisions (measured: with
    the divisions of _row_start in the loop over rows, a row loop of 64 elements ran 5x slower,
    no longer vectorized)."""
    d = _R - 2
    while d >= 0:
        idx[d] += 1
        for k in range(st.shape[0]):
            off[k] += st[k, d]
        if idx[d] < sh[d]:
            return
        for k in range(st.shape[0]):
            off[k] -= sh[d] * st[k, d]
        idx[d] = 0
        d -= 1


@njit(inline="always")
def _offset_of(e, sh, st, k):
    """Offset of operand ``k`` at the flat (C order) element ``e`` of a coalesced space."""
    inner = sh[_R - 1]
    r = e // inner
    return _row_start(r, sh, st, k) + (e - r * inner) * st[k, _R - 1]


@njit(inline="always")
def _u(i):
    """Index ``i`` (never negative) as uint64: numba then skips the wraparound of negative
    indices, and LLVM vectorizes the row loops (with a runtime check for unit strides)."""
    return np.uint64(i)


@njit(inline="always")
def _units(sh):
    """Work items of the elementwise kernels over a coalesced space, as the tuple plan = (count,
    rows per item, items per row, rows): about _CHUNK elements each, whole rows when rows are
    short, pieces of one row when they are long."""
    inner = sh[_R - 1]
    rows = sh[0]
    for d in range(1, _R - 1):
        rows *= sh[d]
    per_row = (inner + _CHUNK - 1) // _CHUNK       # 1 unless rows are long
    rpu = max(1, _CHUNK // inner)                   # 1 if they are (no literal: one plan type)
    if per_row > 1:
        return rows * per_row, rpu, per_row, rows
    return (rows + rpu - 1) // rpu, rpu, per_row, rows


@njit(inline="always")
def _unit(u, plan, inner):
    """(first row, end row, first column, end column) of work item ``u`` of ``plan``."""
    _, rpu, per_row, rows = plan
    if per_row > 1:
        r = u // per_row
        j0 = (u - r * per_row) * _CHUNK
        return r, r + 1, j0, min(inner, j0 + _CHUNK)
    return u * rpu, min(rows, (u + 1) * rpu), 0, inner


# ------------------------------------------------------------------------------------- unary
@_split(1)
def unary_forward(code, x, alpha, beta, out):
    """out[i] = unary(code, x[i], alpha, beta) (kernels/scalar.py UNARY_CODES); out may be x."""
    if code < 0 or code >= _N_UNARY:
        raise ValueError("unary_forward: code must index scalar.UNARY_CODES")
    if out.size != x.size:
        raise ValueError("unary_forward: out must have the size of x")
    for i in prange(x.size):
        out[i] = _unary(code, x[i], alpha, beta)


@_split(1)
def unary_backward(code, x, y, grad_out, alpha, beta, grad_in):
    """grad_in[i] = grad_out[i] * unary_grad(code, x[i], y[i], alpha, beta), y the forward
    output; grad_in may be grad_out."""
    if code < 0 or code >= _N_UNARY:
        raise ValueError("unary_backward: code must index scalar.UNARY_CODES")
    n = x.size
    if y.size != n or grad_out.size != n or grad_in.size != n:
        raise ValueError("unary_backward: y, grad_out and grad_in must have the size of x")
    for i in prange(n):
        grad_in[i] = grad_out[i] * _unary_grad(code, x[i], y[i], alpha, beta)


# ------------------------------------------------------------------------------------- binary
@njit(inline="always")
def _binary_checks(code, a, b, shape, a_strides, b_strides, n):
    """0 when the arguments of a binary kernel are valid, else which one is not (1 code,
    2 shape, 3 a, 4 b)."""
    if code < 0 or code >= _N_BINARY:
        return 1
    if not _valid_shape(shape):
        return 2
    if n > 0 and not _fits(a.size, 0, shape, a_strides):
        return 3
    if n > 0 and not _fits(b.size, 0, shape, b_strides):
        return 4
    return 0


@njit(**HELPER)
def _binary_forward_unit(code, a, b, sh, st, out, u, plan):
    inner = sh[_R - 1]
    r0, r1, j0, j1 = _unit(u, plan, inner)
    sa, sb = st[0, _R - 1], st[1, _R - 1]
    idx, off = _rows_from(r0, sh, st)
    for r in range(r0, r1):
        o = r * inner + j0
        pa = off[0] + j0 * sa
        pb = off[1] + j0 * sb
        for j in range(j1 - j0):
            out[_u(o + j)] = _binary(code, a[_u(pa + j * sa)], b[_u(pb + j * sb)])
        _next_row(sh, st, idx, off)


@_split(6)
def binary_forward(code, a, b, shape, a_strides, b_strides, out):
    """out[idx] = binary(code, a[idx . a_strides], b[idx . b_strides]) over the index space
    ``shape`` (kernels/scalar.py BINARY_CODES); out flat, C order, prod(shape) elements."""
    n = _shape_size(shape)
    bad = _binary_checks(code, a, b, shape, a_strides, b_strides, n)
    if bad == 1:
        raise ValueError("binary_forward: code must index scalar.BINARY_CODES")
    if bad == 2:
        raise ValueError("binary_forward: shape must be MAX_RANK (6) sizes >= 0")
    if bad == 3:
        raise ValueError("binary_forward: a is too small for shape and a_strides")
    if bad == 4:
        raise ValueError("binary_forward: b is too small for shape and b_strides")
    if out.size != n:
        raise ValueError("binary_forward: out must have prod(shape) elements")
    if n == 0:
        return
    sh, st = _coalesce(shape, (a_strides, b_strides))
    plan = _units(sh)
    for u in prange(plan[0]):
        _binary_forward_unit(code, a, b, sh, st, out, u, plan)


@njit(**HELPER)
def _binary_backward_unit(code, a, b, grad_out, sh, st, grad_a, grad_b, u, plan):
    inner = sh[_R - 1]
    r0, r1, j0, j1 = _unit(u, plan, inner)
    sa, sb = st[0, _R - 1], st[1, _R - 1]
    idx, off = _rows_from(r0, sh, st)
    for r in range(r0, r1):
        o = r * inner + j0
        pa = off[0] + j0 * sa
        pb = off[1] + j0 * sb
        for j in range(j1 - j0):
            av, bv, g = a[_u(pa + j * sa)], b[_u(pb + j * sb)], grad_out[_u(o + j)]
            grad_a[_u(o + j)] = g * _binary_grad_a(code, av, bv)
            grad_b[_u(o + j)] = g * _binary_grad_b(code, av, bv)
        _next_row(sh, st, idx, off)


@_split(3)
def binary_backward(code, a, b, grad_out, shape, a_strides, b_strides, grad_a, grad_b):
    """Full-size gradients over ``shape`` (flat, C order): grad_a[idx] = grad_out[idx] *
    binary_grad_a(code, a[..], b[..]), likewise grad_b; the caller reduces them (reduce_sum) to
    the shape of an input that was broadcast. grad_a or grad_b may be grad_out."""
    n = _shape_size(shape)
    bad = _binary_checks(code, a, b, shape, a_strides, b_strides, n)
    if bad == 1:
        raise ValueError("binary_backward: code must index scalar.BINARY_CODES")
    if bad == 2:
        raise ValueError("binary_backward: shape must be MAX_RANK (6) sizes >= 0")
    if bad == 3:
        raise ValueError("binary_backward: a is too small for shape and a_strides")
    if bad == 4:
        raise ValueError("binary_backward: b is too small for shape and b_strides")
    if grad_out.size != n or grad_a.size != n or grad_b.size != n:
        raise ValueError("binary_backward: grad_out, grad_a and grad_b must have prod(shape) "
                         "elements")
    if n == 0:
        return
    sh, st = _coalesce(shape, (a_strides, b_strides))
    plan = _units(sh)
    for u in prange(plan[0]):
        _binary_backward_unit(code, a, b, grad_out, sh, st, grad_a, grad_b, u, plan)


# ------------------------------------------------------------------------------------- where
@njit(**HELPER)
def _where_forward_unit(cond, a, b, sh, st, out, u, plan):
    inner = sh[_R - 1]
    r0, r1, j0, j1 = _unit(u, plan, inner)
    sc, sa, sb = st[0, _R - 1], st[1, _R - 1], st[2, _R - 1]
    idx, off = _rows_from(r0, sh, st)
    for r in range(r0, r1):
        o = r * inner + j0
        pc, pa, pb = off[0] + j0 * sc, off[1] + j0 * sa, off[2] + j0 * sb
        for j in range(j1 - j0):
            out[_u(o + j)] = a[_u(pa + j * sa)] if cond[_u(pc + j * sc)] != 0 else \
                b[_u(pb + j * sb)]
        _next_row(sh, st, idx, off)


@_split(7)
def where_forward(cond, a, b, shape, c_strides, a_strides, b_strides, out):
    """out[idx] = a[..] where cond[..] != 0 else b[..], all three broadcast through their
    strides over ``shape``; cond is a float array of the call's dtype."""
    n = _shape_size(shape)
    if not _valid_shape(shape):
        raise ValueError("where_forward: shape must be MAX_RANK (6) sizes >= 0")
    if out.size != n:
        raise ValueError("where_forward: out must have prod(shape) elements")
    if n == 0:
        return
    if not _fits(cond.size, 0, shape, c_strides):
        raise ValueError("where_forward: cond is too small for shape and c_strides")
    if not _fits(a.size, 0, shape, a_strides):
        raise ValueError("where_forward: a is too small for shape and a_strides")
    if not _fits(b.size, 0, shape, b_strides):
        raise ValueError("where_forward: b is too small for shape and b_strides")
    sh, st = _coalesce(shape, (c_strides, a_strides, b_strides))
    plan = _units(sh)
    for u in prange(plan[0]):
        _where_forward_unit(cond, a, b, sh, st, out, u, plan)


@njit(**HELPER)
def _where_backward_unit(cond, grad_out, sh, st, grad_a, grad_b, u, plan):
    inner = sh[_R - 1]
    r0, r1, j0, j1 = _unit(u, plan, inner)
    sc = st[0, _R - 1]
    idx, off = _rows_from(r0, sh, st)
    for r in range(r0, r1):
        o = r * inner + j0
        pc = off[0] + j0 * sc
        for j in range(j1 - j0):
            g = grad_out[_u(o + j)]
            on = cond[_u(pc + j * sc)] != 0
            grad_a[_u(o + j)] = g if on else 0.0
            grad_b[_u(o + j)] = 0.0 if on else g
        _next_row(sh, st, idx, off)


@_split(1)
def where_backward(cond, grad_out, shape, c_strides, grad_a, grad_b):
    """Full-size gradients of where: grad_a = grad_out where cond else 0, grad_b = grad_out
    where not cond else 0 (flat, C order over ``shape``)."""
    n = _shape_size(shape)
    if not _valid_shape(shape):
        raise ValueError("where_backward: shape must be MAX_RANK (6) sizes >= 0")
    if grad_out.size != n or grad_a.size != n or grad_b.size != n:
        raise ValueError("where_backward: grad_out, grad_a and grad_b must have prod(shape) "
                         "elements")
    if n == 0:
        return
    if not _fits(cond.size, 0, shape, c_strides):
        raise ValueError("where_backward: cond is too small for shape and c_strides")
    sh, st = _coalesce(shape, (c_strides,))
    plan = _units(sh)
    for u in prange(plan[0]):
        _where_backward_unit(cond, grad_out, sh, st, grad_a, grad_b, u, plan)


# ------------------------------------------------------------------------------------- reductions
@njit(**HELPER)
def _reduce_range(x, p, rsh, rst, e0, e1, is_max):
    """Sum (or maximum, NaN propagating) in float64 of x over the elements [e0, e1) (C order)
    of the coalesced reduced space, from offset ``p``."""
    inner = rsh[_R - 1]
    s = rst[0, _R - 1]
    acc = -math.inf if is_max else 0.0
    r = e0 // inner
    j = e0 - r * inner
    e = e0
    while e < e1:
        m = min(inner - j, e1 - e)
        q = p + _row_start(r, rsh, rst, 0) + j * s
        if is_max:
            for _ in range(m):
                v = x[_u(q)]
                if v > acc or v != v:
                    acc = v
                q += s
        else:
            for _ in range(m):
                acc += x[_u(q)]
                q += s
        e += m
        r += 1
        j = 0
    return acc


@njit(inline="always")
def _combine(acc, v, is_max):
    if is_max:
        return v if v > acc or v != v else acc
    return acc + v


@njit(**HELPER)
def _reduce_output(x, ksh, kst, rsh, rst, nred, splits, scale, is_max, out, part, u):
    """Work item ``u`` of the per-output path: output ``u // splits``, its chunk ``u % splits``
    of the reduced space (written to ``part[u]``, or to ``out`` when there is one chunk)."""
    o = u // splits
    c = u - o * splits
    p = _offset_of(o, ksh, kst, 0)
    v = _reduce_range(x, p, rsh, rst, c * _RED_CHUNK, min(nred, (c + 1) * _RED_CHUNK), is_max)
    if splits == 1:
        out[o] = v if is_max else scale * v
    else:
        part[u] = v


@njit(**HELPER)
def _reduce_columns(x, rsh, rst, nred, nkeep, scale, is_max, out, blk):
    """Block ``blk`` of the column path: the kept space is one contiguous dimension (output o
    reads x[o + reduced offset]), so each reduced position adds a contiguous run of x into a
    float64 row of accumulators; each output still sees its terms in C order."""
    o0 = blk * _COLUMN_BLOCK
    o1 = min(nkeep, o0 + _COLUMN_BLOCK)
    acc = np.full(o1 - o0, -math.inf if is_max else 0.0)
    inner = rsh[_R - 1]
    s = rst[0, _R - 1]
    for r in range(nred // inner):
        q = _row_start(r, rsh, rst, 0) + o0
        for _ in range(inner):
            if is_max:
                for i in range(o1 - o0):
                    v = x[_u(q + i)]
                    if v > acc[i] or v != v:
                        acc[i] = v
            else:
                for i in range(o1 - o0):
                    acc[i] += x[_u(q + i)]
            q += s
    for i in range(o1 - o0):
        out[o0 + i] = acc[i] if is_max else scale * acc[i]


@njit(inline="always")
def _reduce_checks(x, keep_shape, keep_strides, red_shape, red_strides, is_max, out):
    """0 when the arguments of a reduction are valid, else which one is not (1 shapes, 2 out,
    3 x, 4 an empty maximum)."""
    if not (_valid_shape(keep_shape) and _valid_shape(red_shape)):
        return 1
    nkeep = _shape_size(keep_shape)
    if out.size != nkeep:
        return 2
    if nkeep > 0 and _shape_size(red_shape) > 0:
        if len(keep_strides) != _R or len(red_strides) != _R:
            return 3
        klo, khi = _span(0, keep_shape, keep_strides)
        rlo, rhi = _span(0, red_shape, red_strides)
        if klo + rlo < 0 or khi + rhi >= x.size:
            return 3
    if is_max and nkeep > 0 and _shape_size(red_shape) == 0:
        return 4
    return 0


@_split(lambda x, keep_shape, keep_strides, red_shape, red_strides, scale, is_max, out:
        math.prod(keep_shape) * math.prod(red_shape))
def _reduce(x, keep_shape, keep_strides, red_shape, red_strides, scale, is_max, out):
    """reduce_sum (``is_max`` False) and reduce_max."""
    bad = _reduce_checks(x, keep_shape, keep_strides, red_shape, red_strides, is_max, out)
    if bad == 1 and is_max:
        raise ValueError("reduce_max: keep_shape and red_shape must be MAX_RANK (6) sizes >= 0")
    if bad == 1:
        raise ValueError("reduce_sum: keep_shape and red_shape must be MAX_RANK (6) sizes >= 0")
    if bad == 2 and is_max:
        raise ValueError("reduce_max: out must have prod(keep_shape) elements")
    if bad == 2:
        raise ValueError("reduce_sum: out must have prod(keep_shape) elements")
    if bad == 3 and is_max:
        raise ValueError("reduce_max: x is too small for the shapes and strides")
    if bad == 3:
        raise ValueError("reduce_sum: x is too small for the shapes and strides")
    if bad == 4:
        raise ValueError("reduce_max: red_shape is empty (a maximum of no elements)")
    nkeep = _shape_size(keep_shape)
    nred = _shape_size(red_shape)
    if nkeep == 0:
        return
    if nred == 0:
        out[:nkeep] = 0.0
        return
    ksh, kst = _coalesce(keep_shape, (keep_strides,))
    rsh, rst = _coalesce(red_shape, (red_strides,))
    columns = kst[0, _R - 1] == 1 and nkeep == ksh[_R - 1] and nkeep >= _COLUMN_MIN \
        and rst[0, _R - 1] != 1
    if columns:
        for blk in prange((nkeep + _COLUMN_BLOCK - 1) // _COLUMN_BLOCK):
            _reduce_columns(x, rsh, rst, nred, nkeep, scale, is_max, out, blk)
        return
    splits = (nred + _RED_CHUNK - 1) // _RED_CHUNK
    units = nkeep * splits
    part = np.empty(units if splits > 1 else 0)
    for u in prange(units):
        _reduce_output(x, ksh, kst, rsh, rst, nred, splits, scale, is_max, out, part, u)
    if splits > 1:
        for o in range(nkeep):
            acc = part[o * splits]
            for c in range(1, splits):
                acc = _combine(acc, part[o * splits + c], is_max)
            out[o] = acc if is_max else scale * acc


def reduce_sum(x, keep_shape, keep_strides, red_shape, red_strides, scale, out):
    """out[o] = scale * sum over the index space red_shape of x[o . keep_strides + r .
    red_strides] (o in C order over keep_shape), summed in float64 in C order over red_shape;
    an empty reduction gives 0."""
    _reduce(x, keep_shape, keep_strides, red_shape, red_strides, scale, False, out)


def reduce_max(x, keep_shape, keep_strides, red_shape, red_strides, out):
    """out[o] = maximum over the index space red_shape (as reduce_sum), NaN propagating as
    torch.amax; the reduction must not be empty."""
    _reduce(x, keep_shape, keep_strides, red_shape, red_strides, 1.0, True, out)


# ------------------------------------------------------------------------------------- copies
@njit(**HELPER)
def _copy_unit(x, x_offset, sh, st, accumulate, out, out_offset, u, plan):
    r0, r1, j0, j1 = _unit(u, plan, sh[_R - 1])
    sx, so = st[0, _R - 1], st[1, _R - 1]
    idx, off = _rows_from(r0, sh, st)
    for r in range(r0, r1):
        px = x_offset + off[0] + j0 * sx
        po = out_offset + off[1] + j0 * so
        if accumulate:
            for j in range(j1 - j0):
                out[_u(po + j * so)] += x[_u(px + j * sx)]
        else:
            for j in range(j1 - j0):
                out[_u(po + j * so)] = x[_u(px + j * sx)]
        _next_row(sh, st, idx, off)


@_split(_index_space(2))
def strided_copy(x, x_offset, shape, x_strides, accumulate, out, out_offset, out_strides):
    """out[out_offset + idx . out_strides] = (or += with ``accumulate``) x[x_offset + idx .
    x_strides] over the index space ``shape``; the output positions must be distinct.
    Transpose, broadcast_to, slicing and its gradient, concatenate and stack."""
    n = _shape_size(shape)
    if not _valid_shape(shape):
        raise ValueError("strided_copy: shape must be MAX_RANK (6) sizes >= 0")
    if n == 0:
        return
    if not _fits(x.size, x_offset, shape, x_strides):
        raise ValueError("strided_copy: x is too small for x_offset, shape and x_strides")
    if not _fits(out.size, out_offset, shape, out_strides):
        raise ValueError("strided_copy: out is too small for out_offset, shape and out_strides")
    sh, st = _coalesce(shape, (x_strides, out_strides))
    plan = _units(sh)
    for u in prange(plan[0]):
        _copy_unit(x, x_offset, sh, st, accumulate, out, out_offset, u, plan)


# ------------------------------------------------------------------------------------- matmul
@njit(**HELPER)
def _matmul_one(a, b, bsh, bst, m, n, k, lda, ldb, trans_a, trans_b, beta, out, t):
    gemm(trans_a, trans_b, m, n, k, 1.0, a, _offset_of(t, bsh, bst, 0), lda,
         b, _offset_of(t, bsh, bst, 1), ldb, beta, out, t * m * n, n)


@_split(lambda a, b, batch_shape, a_batch_strides, b_batch_strides, m, n, k, *_:
        math.prod(batch_shape) * m * n * k if math.prod(batch_shape) > 1 else 0, _MATMUL_PAR_MIN)
def matmul_forward(a, b, batch_shape, a_batch_strides, b_batch_strides, m, n, k, lda, ldb,
                   trans_a, trans_b, accumulate, out):
    """out[t] (=, or += with ``accumulate``) op(A_t) @ op(B_t) for each batch index t (C order
    over batch_shape): A_t starts at a[t . a_batch_strides] and op(A_t) (m x k) is stored m rows
    of stride lda, or k rows read transposed with ``trans_a``; op(B_t) (k x n) likewise (n rows
    with ``trans_b``); out C-contiguous (batch, m, n). One BLAS gemm per batch."""
    if not _valid_shape(batch_shape):
        raise ValueError("matmul_forward: batch_shape must be MAX_RANK (6) sizes >= 0")
    if m < 0 or n < 0 or k < 0:
        raise ValueError("matmul_forward: m, n and k must be >= 0")
    nb = _shape_size(batch_shape)
    if out.size != nb * m * n:
        raise ValueError("matmul_forward: out must have prod(batch_shape) * m * n elements")
    if lda < max(1, m if trans_a else k):
        raise ValueError("matmul_forward: lda is less than a stored row of A")
    if ldb < max(1, k if trans_b else n):
        raise ValueError("matmul_forward: ldb is less than a stored row of B")
    if len(a_batch_strides) != _R or len(b_batch_strides) != _R:
        raise ValueError("matmul_forward: batch strides must be MAX_RANK (6) int64")
    lo, hi = _matrix_span(batch_shape, a_batch_strides, m, k, lda, trans_a)
    if lo < 0 or hi >= a.size:
        raise ValueError("matmul_forward: a is too small for the batch strides, m, k and lda")
    lo, hi = _matrix_span(batch_shape, b_batch_strides, k, n, ldb, trans_b)
    if lo < 0 or hi >= b.size:
        raise ValueError("matmul_forward: b is too small for the batch strides, k, n and ldb")
    if nb == 0 or m == 0 or n == 0:
        return
    beta = 1.0 if accumulate else 0.0
    bsh, bst = _coalesce(batch_shape, (a_batch_strides, b_batch_strides))
    for t in prange(nb):
        _matmul_one(a, b, bsh, bst, m, n, k, lda, ldb, trans_a, trans_b, beta, out, t)


# ------------------------------------------------------------------------------------- take
@njit(inline="always")
def _take_checks(idx, n):
    """True when every index lies in [0, n)."""
    for j in range(idx.size):
        if idx[j] < 0 or idx[j] >= n:
            return False
    return True


@njit(**HELPER)
def _take_row(x, idx, n, inner, out, r):
    """Row r = (o, j) of the output: out[o, j, :] = x[o, idx[j], :]."""
    m = idx.size
    o = r // m
    src = (o * n + idx[r - o * m]) * inner
    dst = r * inner
    for i in range(inner):
        out[_u(dst + i)] = x[_u(src + i)]


@_split(5)
def take_forward(x, idx, outer, n, inner, out):
    """Gather along one axis: x is (outer, n, inner) and out (outer, m, inner), flat, with
    out[o, j, i] = x[o, idx[j], i] for the m integer indices idx, all in [0, n)."""
    m = idx.size
    if outer < 0 or n < 0 or inner < 0:
        raise ValueError("take_forward: outer, n and inner must be >= 0")
    if x.size != outer * n * inner:
        raise ValueError("take_forward: x must have outer * n * inner elements")
    if out.size != outer * m * inner:
        raise ValueError("take_forward: out must have outer * idx.size * inner elements")
    if not _take_checks(idx, n):
        raise ValueError("take_forward: idx has an index outside [0, n)")
    for r in prange(outer * m):
        _take_row(x, idx, n, inner, out, r)


@njit(**HELPER)
def _take_columns(grad_out, idx, n, inner, accumulate, grad_x, u, per_o):
    """Work item u = (o, block of columns): zeroes grad_x[o, :, block] unless accumulating, then
    adds grad_out[o, j, block] into grad_x[o, idx[j], block] for j in order."""
    m = idx.size
    o = u // per_o
    i0 = (u - o * per_o) * _TAKE_COLUMNS
    i1 = min(inner, i0 + _TAKE_COLUMNS)
    if not accumulate:
        for r in range(n):
            base = (o * n + r) * inner
            for i in range(i0, i1):
                grad_x[_u(base + i)] = 0.0
    for j in range(m):
        dst = (o * n + idx[j]) * inner
        src = (o * m + j) * inner
        for i in range(i0, i1):
            grad_x[_u(dst + i)] += grad_out[_u(src + i)]


@_split(lambda grad_out, idx, outer, n, inner, accumulate, grad_x: grad_out.size + grad_x.size)
def take_backward(grad_out, idx, outer, n, inner, accumulate, grad_x):
    """Scatter-add, the gradient of take_forward (and of an Embedding, outer = 1): grad_x
    (outer, n, inner) is zeroed unless ``accumulate``, then grad_x[o, idx[j], i] +=
    grad_out[o, j, i] for j = 0..m-1 in order; duplicate indices add up, in the same order on
    any thread count (each work item owns columns of grad_x)."""
    m = idx.size
    if outer < 0 or n < 0 or inner < 0:
        raise ValueError("take_backward: outer, n and inner must be >= 0")
    if grad_x.size != outer * n * inner:
        raise ValueError("take_backward: grad_x must have outer * n * inner elements")
    if grad_out.size != outer * m * inner:
        raise ValueError("take_backward: grad_out must have outer * idx.size * inner elements")
    if not _take_checks(idx, n):
        raise ValueError("take_backward: idx has an index outside [0, n)")
    per_o = (inner + _TAKE_COLUMNS - 1) // _TAKE_COLUMNS
    for u in prange(outer * per_o):
        _take_columns(grad_out, idx, n, inner, accumulate, grad_x, u, per_o)


# ------------------------------------------------------------------------------------- log_softmax
@njit(**HELPER)
def _log_softmax_row(x, out, r):
    """out[r] = x[r] - max - log(sum exp(x[r] - max)), the sum in float64."""
    cols = x.shape[1]
    if cols == 0:
        return
    mx = x[r, 0]
    for j in range(1, cols):
        v = x[r, j]
        if v > mx or v != v:
            mx = v
    s = 0.0
    for j in range(cols):
        s += math.exp(np.float64(x[r, j]) - mx)
    lse = mx + math.log(s)
    for j in range(cols):
        out[r, j] = x[r, j] - lse


@njit(**HELPER)
def _log_softmax_backward_row(y, grad_out, grad_in, r):
    """grad_in[r] = grad_out[r] - exp(y[r]) * sum(grad_out[r]), the sum in float64."""
    cols = y.shape[1]
    s = 0.0
    for j in range(cols):
        s += grad_out[r, j]
    for j in range(cols):
        grad_in[r, j] = grad_out[r, j] - math.exp(np.float64(y[r, j])) * s


@_split(0)
def log_softmax_forward(x, out):
    """Row-wise log-softmax of x (rows, cols) over the last axis, stable (row max subtracted,
    log-sum-exp in float64); out may be x."""
    if out.shape != x.shape:
        raise ValueError("log_softmax_forward: out must have the shape of x")
    for r in prange(x.shape[0]):
        _log_softmax_row(x, out, r)


@_split(0)
def log_softmax_backward(y, grad_out, grad_in):
    """grad_in = grad_out - exp(y) * rowsum(grad_out), y the forward output; grad_in may be
    grad_out."""
    if grad_out.shape != y.shape or grad_in.shape != y.shape:
        raise ValueError("log_softmax_backward: grad_out and grad_in must have the shape of y")
    for r in prange(y.shape[0]):
        _log_softmax_backward_row(y, grad_out, grad_in, r)
