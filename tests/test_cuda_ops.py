"""CUDA op kernels (kernels/cuda/ops.py) against the CPU kernels of the same name and the float64
references, in Numba's simulator by default (or on a GPU with NUMBANET_TEST_REAL_CUDA=1).

Launch knobs are shrunk (32 threads per block, at most 3 blocks, 4-lane rows of 2 per block,
4x4 matmul tiles, reductions split from 8 rows and 4 elements) so the tiny arrays here cross
block, tile and split edges and run grid-stride loops more than once. Every launch is checked
against the kernel's declared spec (what tests/test_cuda_ptx.py compiles), and the last test
checks that every kernel of the module was launched.
"""
import numpy as np
import pytest
from conftest import assert_close, blank, dev, run_pair

import reference as ref
from numbanet import _cuda
from numbanet.kernels import scalar

if _cuda.cuda is None or not (_cuda.is_simulator() or _cuda.is_available()):
    pytest.skip(f"CUDA kernels cannot run here: {_cuda.unavailable_reason()}",
                allow_module_level=True)

from numbanet.kernels.cpu import ops as C  # noqa: E402
from numbanet.kernels.cuda import _common  # noqa: E402
from numbanet.kernels.cuda import ops as G  # noqa: E402

DTYPES = [np.float32, np.float64]
R = scalar.MAX_RANK


@pytest.fixture(autouse=True)
def small_launches(monkeypatch):
    monkeypatch.setenv("NUMBANET_ALLOW_CUDASIM", "1")
    for name, value in (("threads", 32), ("max_blocks", 3), ("row_block", (4, 2)),
                        ("check_signatures", True)):
        monkeypatch.setattr(_common.config, name, value)
    for name, value in (("matmul_tile", 4), ("reduce_rows", 8), ("reduce_min_chunk", 4)):
        monkeypatch.setattr(G.config, name, value)


def t6(shape):
    return (1,) * (R - len(shape)) + tuple(int(d) for d in shape)


def bstrides(shape, full):
    """Strides of a contiguous operand of ``shape`` broadcast to ``full`` (0 where broadcast)."""
    shape = t6(shape)
    st, step = [], 1
    for d in reversed(shape):
        st.append(0 if d == 1 else step)
        step *= d
    return tuple(reversed(st))


def data(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def run_into(name, args, outs):
    """Like conftest.run_pair, with outputs that start from the given arrays (accumulating
    kernels, partial writes): returns (cpu outputs, cuda outputs)."""
    c_outs = [o.copy() for o in outs]
    getattr(C, name)(*[a.copy() if isinstance(a, np.ndarray) else a for a in args], *c_outs)
    g_outs = [dev(o) for o in outs]
    getattr(G, name)(*[dev(a) if isinstance(a, np.ndarray) else a for a in args], *g_outs)
    return c_outs, [g.copy_to_host() for g in g_outs]


def check(got, cpu, want, dtype, what):
    assert_close(got, want, dtype, what)
    assert_close(got, cpu, dtype, f"{what} vs cpu")


# ----------------------------------------------------------------------------------- unary
@pytest.mark.parametrize("dtype", DTYPES)
def test_unary(dtype, rng):
    n = 150                                  # > 3 blocks of 32: the grid-stride loop runs twice
    params = {"power": (2.5, 0.0), "clip": (-0.5, 0.7), "affine": (-1.5, 0.25),
              "rdiv": (2.0, 0.0)}
    for code, name in enumerate(scalar.UNARY_CODES):
        alpha, beta = params.get(name, (0.0, 0.0))
        x = rng.standard_normal(n)
        if name in ("sqrt", "log", "power", "rdiv"):
            x = np.abs(x) + 0.1                # the simulator runs math.* in Python: no domain
        x = x.astype(dtype)                    # errors (NaN edges are checked on the CPU)
        (c,), (y,) = run_pair("ops", "unary_forward", [code, x, alpha, beta], [((n,), dtype)])
        check(y, c, ref.unary_forward(name, x, alpha, beta), dtype, name)
        g = data(rng, n, dtype)
        (c,), (gi,) = run_pair("ops", "unary_backward", [code, x, y, g, alpha, beta],
                               [((n,), dtype)])
        check(gi, c, ref.unary_backward(name, x, g, alpha, beta), dtype, f"{name} backward")
    d = dev(x)
    G.unary_forward(scalar.NEG, d, 0.0, 0.0, d)                     # in place
    np.testing.assert_array_equal(d.copy_to_host(), -x)
    edges = np.array([np.nan, -0.0, 0.0, -np.inf, np.inf, -2.0], dtype)
    (c,), (y,) = run_pair("ops", "unary_forward", [scalar.SIGN, edges, 0.0, 0.0],
                          [((6,), dtype)])
    np.testing.assert_array_equal(y, np.sign(edges))                # NaN stays NaN
    np.testing.assert_array_equal(y, c)


# ----------------------------------------------------------------------------------- binary
BROADCASTS = [((5, 31), (5, 31)),            # the flat kernels
              ((2, 3, 13), (2, 1, 13)),      # middle
              ((3, 1, 5), (1, 4, 1)),        # both broadcast
              ((7, 9), ()),                  # 0-d-like
              ((2, 1, 3, 1, 2, 3), (1, 2, 1, 2, 1, 3))]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shapes", BROADCASTS, ids=str)
def test_binary(shapes, dtype, rng):
    full = np.broadcast_shapes(*shapes)
    shape, sa, sb = t6(full), bstrides(shapes[0], full), bstrides(shapes[1], full)
    n = int(np.prod(full))
    for code, name in enumerate(scalar.BINARY_CODES):
        a, b = data(rng, shapes[0], dtype), data(rng, shapes[1], dtype)
        if name == "divide":
            b = (np.sign(b) + (b == 0)) * (0.5 + np.abs(b))
        if name in ("maximum", "minimum", "equal", "not_equal", "greater", "greater_equal",
                    "less", "less_equal"):
            a.reshape(-1)[::3] = b.reshape(-1)[0]                        # ties
        a, b = a.reshape(-1).astype(dtype), b.reshape(-1).astype(dtype)
        args = [code, a, b, shape, sa, sb]
        (c,), (o,) = run_pair("ops", "binary_forward", args, [((n,), dtype)])
        check(o, c, ref.binary_forward(name, a, b, shape, sa, sb), dtype, name)
        g = data(rng, n, dtype)
        cs, gs = run_pair("ops", "binary_backward", [code, a, b, g, shape, sa, sb],
                          [((n,), dtype)] * 2)
        for got, cpu, want, what in zip(gs, cs, ref.binary_backward(name, a, b, g, shape, sa, sb),
                                        ("grad_a", "grad_b")):
            check(got, cpu, want, dtype, f"{name} {what}")


def test_maximum_minimum_and_comparisons_nan_and_ties():
    a = np.array([1.0, 2.0, 3.0, np.nan, 1.0, np.nan])
    b = np.array([2.0, 2.0, 1.0, 1.0, np.nan, np.nan])
    shape, s = t6((6,)), (0,) * 5 + (1,)
    for name in ("maximum", "minimum", "equal", "not_equal", "greater", "greater_equal", "less",
                 "less_equal"):
        code = scalar.BINARY_CODES.index(name)
        (c,), (o,) = run_pair("ops", "binary_forward", [code, a, b, shape, s, s],
                              [((6,), np.float64)])
        np.testing.assert_array_equal(o, ref.binary_forward(name, a, b, shape, s, s))
        np.testing.assert_array_equal(o, c)
        cs, gs = run_pair("ops", "binary_backward", [code, a, b, np.ones(6), shape, s, s],
                          [((6,), np.float64)] * 2)
        for got, cpu, want in zip(gs, cs, ref.binary_backward(name, a, b, np.ones(6), shape, s,
                                                              s)):
            np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(got, cpu)


# ----------------------------------------------------------------------------------- where
@pytest.mark.parametrize("dtype", DTYPES)
def test_where(dtype, rng):
    shapes = ((3, 1, 5), (1, 4, 5), (4, 1))
    full = np.broadcast_shapes(*shapes)
    shape = t6(full)
    sc, sa, sb = (bstrides(s, full) for s in shapes)
    n = int(np.prod(full))
    cond = (rng.random(shapes[0]) < 0.5).astype(dtype).reshape(-1)
    a, b = data(rng, shapes[1], dtype).reshape(-1), data(rng, shapes[2], dtype).reshape(-1)
    (c,), (o,) = run_pair("ops", "where_forward", [cond, a, b, shape, sc, sa, sb],
                          [((n,), dtype)])
    check(o, c, ref.where_forward(cond, a, b, shape, sc, sa, sb), dtype, "where")
    g = data(rng, n, dtype)
    cs, gs = run_pair("ops", "where_backward", [cond, g, shape, sc], [((n,), dtype)] * 2)
    for got, cpu, want in zip(gs, cs, ref.where_backward(cond, g, shape, sc)):
        check(got, cpu, want, dtype, "where backward")


# ----------------------------------------------------------------------------------- reductions
def reduction_case(shape, axes):
    shape6 = t6(shape)
    axes6 = {a + R - len(shape) for a in axes}
    cs = bstrides(shape6, shape6)
    keep = tuple(1 if d in axes6 else shape6[d] for d in range(R))
    red = tuple(shape6[d] if d in axes6 else 1 for d in range(R))
    return (keep, tuple(0 if d in axes6 else cs[d] for d in range(R)),
            red, tuple(cs[d] if d in axes6 else 0 for d in range(R)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [((37,), (0,)),            # one output, split 8 ways
                                  ((3, 23), (1,)),          # few rows, split
                                  ((11, 6), (0,)),          # columns
                                  ((2, 3, 5, 2), (1, 3)),   # two axes, no split
                                  ((4, 3), ())], ids=str)    # nothing reduced
def test_reductions(case, dtype, rng):
    shape, axes = case
    keep, ks, red, rs = reduction_case(shape, axes)
    x = data(rng, shape, dtype).reshape(-1)
    if x.size > 20:
        x[7] = x[9]                                           # a tie for the maximum
    nkeep = int(np.prod(keep))
    (c,), (o,) = run_pair("ops", "reduce_sum", [x, keep, ks, red, rs, 0.5], [((nkeep,), dtype)])
    check(o, c, ref.reduce_sum(x, keep, ks, red, rs, 0.5), dtype, "sum")
    (c,), (o,) = run_pair("ops", "reduce_max", [x, keep, ks, red, rs], [((nkeep,), dtype)])
    check(o, c, ref.reduce_max(x, keep, ks, red, rs), dtype, "max")


def test_reduce_max_nan_and_empty_sum(rng):
    x = rng.standard_normal((3, 20))
    x[1, 13] = np.nan
    x[2, :] = -np.inf
    keep, ks, red, rs = reduction_case(x.shape, (1,))
    (c,), (o,) = run_pair("ops", "reduce_max", [x.reshape(-1), keep, ks, red, rs],
                          [((3,), np.float64)])
    np.testing.assert_array_equal(o, [x[0].max(), np.nan, -np.inf])
    np.testing.assert_array_equal(o, c)
    (c,), (o,) = run_pair("ops", "reduce_sum", [x.reshape(-1), t6((3,)), t6((1,)), t6((0,)),
                                                t6((1,)), 1.0], [((3,), np.float64)])
    np.testing.assert_array_equal(o, np.zeros(3))
    with pytest.raises(ValueError, match="reduce_max: red_shape"):
        G.reduce_max(dev(x.reshape(-1)), t6((3,)), t6((1,)), t6((0,)), t6((1,)),
                     dev(np.empty(3)))


# ----------------------------------------------------------------------------------- copies
@pytest.mark.parametrize("accumulate", [False, True])
def test_strided_copy(accumulate, rng):
    dtype = np.float32
    x = data(rng, (5, 8), dtype).reshape(-1)
    cases = [  # x_offset, shape, x_strides, out size, out_offset, out_strides
        (0, t6((8, 5)), (0,) * 4 + (1, 8), 40, 0, (0,) * 4 + (5, 1)),          # transpose
        (8 + 7, t6((2, 8)), (0,) * 4 + (16, -1), 16, 0, (0,) * 4 + (8, 1)),    # x[1::2, ::-1]
        (0, t6((2, 4)), (0,) * 4 + (8, 1), 30, 3, (0,) * 4 + (10, 2)),         # strided out
        (0, t6((3, 40)), (0,) * 4 + (0, 1), 120, 0, (0,) * 4 + (40, 1))]       # broadcast_to
    for x_offset, shape, xs, size, out_offset, os_ in cases:
        out = data(rng, size, dtype)                # positions not written keep their values
        c_out, g_out = out.copy(), dev(out)         # (out is followed by its offset and strides)
        C.strided_copy(x, x_offset, shape, xs, accumulate, c_out, out_offset, os_)
        G.strided_copy(dev(x), x_offset, shape, xs, accumulate, g_out, out_offset, os_)
        want = ref.strided_copy(x, x_offset, shape, xs, accumulate, out, out_offset, os_)
        check(g_out.copy_to_host(), c_out, want, dtype, f"copy {shape} {xs}")


# ----------------------------------------------------------------------------------- matmul
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans", [(False, False), (True, False), (False, True), (True, True)],
                         ids=str)
def test_matmul(trans, dtype, rng):
    """Ragged 4x4 tiles (m, n, k not multiples of 4), padded rows, a batch of 2 x 3 with A
    broadcast along the first axis and B along the second, accumulate off and on."""
    ta, tb = trans
    m, n, k = 5, 6, 7
    lda, ldb = (m if ta else k) + 1, (k if tb else n) + 2
    a_rows, b_rows = (k if ta else m), (n if tb else k)
    a = data(rng, 3 * a_rows * lda, dtype)             # 3 matrices, indexed by batch axis 1
    b = data(rng, 2 * b_rows * ldb, dtype)             # 2 matrices, indexed by batch axis 0
    shape = t6((2, 3))
    sa, sb = (0,) * 4 + (0, a_rows * lda), (0,) * 4 + (b_rows * ldb, 0)
    args = [a, b, shape, sa, sb, m, n, k, lda, ldb, ta, tb]
    for accumulate in (False, True):
        out = data(rng, 6 * m * n, dtype) if accumulate else blank(6 * m * n, dtype)
        (c,), (o,) = run_into("matmul_forward", args + [accumulate], [out])
        want = ref.matmul_forward(a, b, shape, sa, sb, m, n, k, lda, ldb, ta, tb, accumulate,
                                  out)
        check(o, c, want, dtype, f"accumulate={accumulate}")


def test_matmul_batches_beyond_the_grid_and_empty_k(rng, monkeypatch):
    """More batches than gridDim.z (its cap shrunk to 2): the batch loop strides over the grid;
    k = 0 gives zeros."""
    monkeypatch.setattr(G.config, "max_grid_z", 2)
    a, b = data(rng, 5 * 6, np.float64), data(rng, 5 * 6, np.float64)
    args = [a, b, t6((5,)), t6((6,)), t6((6,)), 2, 2, 3, 3, 2, False, False, False]
    (c,), (o,) = run_pair("ops", "matmul_forward", args, [((20,), np.float64)])
    want = ref.matmul_forward(a, b, t6((5,)), t6((6,)), t6((6,)), 2, 2, 3, 3, 2, False, False,
                              False, np.zeros(20))
    check(o, c, want, np.float64, "5 batches on 2 z-blocks")
    (c,), (o,) = run_pair("ops", "matmul_forward", [a, b, t6((2,)), t6((0,)), t6((0,)), 2, 3, 0,
                                                    1, 3, False, False, False],
                          [((12,), np.float64)])
    np.testing.assert_array_equal(o, np.zeros(12))
    np.testing.assert_array_equal(c, np.zeros(12))


# ----------------------------------------------------------------------------------- take
@pytest.mark.parametrize("itype", [np.int32, np.int64])
@pytest.mark.parametrize("dtype", DTYPES)
def test_take(dtype, itype, rng):
    for outer, n, inner, idx in ((2, 5, 3, [4, 0, 4, 2, 4]), (1, 7, 40, [6, 6, 1]),
                                 (3, 4, 1, [])):
        idx = np.asarray(idx, itype)
        m = idx.size
        x = data(rng, outer * n * inner, dtype)
        (c,), (o,) = run_pair("ops", "take_forward", [x, idx, outer, n, inner],
                              [((outer * m * inner,), dtype)])
        check(o, c, ref.take_forward(x, idx, outer, n, inner), dtype, "take")
        g = data(rng, outer * m * inner, dtype)
        for accumulate in (False, True):
            prev = data(rng, outer * n * inner, dtype) if accumulate else \
                blank(outer * n * inner, dtype)
            (c,), (o,) = run_into("take_backward", [g, idx, outer, n, inner, accumulate], [prev])
            check(o, c, ref.take_backward(g, idx, outer, n, inner, accumulate, prev), dtype,
                  f"scatter-add accumulate={accumulate}")


# ----------------------------------------------------------------------------------- log_softmax
@pytest.mark.parametrize("dtype", DTYPES)
def test_log_softmax(dtype, rng):
    x = (3.0 * rng.standard_normal((7, 13))).astype(dtype)
    x[0, 0] = 80.0
    (c,), (y,) = run_pair("ops", "log_softmax_forward", [x], [(x.shape, dtype)])
    check(y, c, ref.log_softmax_forward(x), dtype, "forward")
    g = data(rng, x.shape, dtype)
    (c,), (gi,) = run_pair("ops", "log_softmax_backward", [y, g], [(x.shape, dtype)])
    check(gi, c, ref.log_softmax_backward(y, g), dtype, "backward")
    d = dev(x)
    G.log_softmax_forward(d, d)                                      # in place
    assert_close(d.copy_to_host(), ref.log_softmax_forward(x), dtype, "in place")


# ----------------------------------------------------------------------------------- bad arguments
def test_bad_arguments_raise():
    x = dev(np.zeros(6))
    s6, c = t6((2, 3)), (0,) * 4 + (3, 1)
    cases = [
        (lambda: G.unary_forward(len(scalar.UNARY_CODES), x, 0.0, 0.0, x),
         r"unary_forward: code must index"),
        (lambda: G.unary_backward(0, x, x, x, 0.0, 0.0, dev(np.empty(5))),
         r"unary_backward: grad_in must have x.size = 6 elements, got 5"),
        (lambda: G.binary_forward(0, x, x, s6, c, c, dev(np.empty(5))),
         r"binary_forward: out must have prod\(shape\) = 6 elements"),
        (lambda: G.binary_forward(0, dev(np.zeros(5)), x, s6, c, c, x),
         r"binary_forward: a has 5 elements, but shape"),
        (lambda: G.binary_backward(0, x, x, x, s6, c, (3, 1), x, x),
         r"binary_backward: b_strides must be a tuple of 6"),
        (lambda: G.where_forward(x, x, x, (2, 3), c, c, c, x), r"where_forward: shape must be"),
        (lambda: G.reduce_sum(x, t6((2,)), t6((4,)), t6((3,)), t6((1,)), 1.0, dev(np.empty(2))),
         r"reduce_sum: x has 6 elements"),
        (lambda: G.strided_copy(x, 0, s6, c, False, x, 1, c),
         r"strided_copy: out has 6 elements, but shape"),
        (lambda: G.matmul_forward(x, x, t6(()), t6(()), t6(()), 2, 2, 3, 2, 2, False, False,
                                  False, dev(np.empty(4))), r"matmul_forward: lda = 2"),
        (lambda: G.matmul_forward(x, x, t6((2,)), (0,) * R, t6((1,)), 2, 2, 3, 3, 2, False, False,
                                  False, dev(np.empty(8))), r"matmul_forward: b has 6 elements"),
        (lambda: G.take_forward(x, dev(np.zeros(2, np.int64)), 1, 3, 2, dev(np.empty(3))),
         r"take_forward: out must have outer \* idx.size \* inner = 4 elements"),
        (lambda: G.take_backward(x, dev(np.zeros(2, np.int64)), 1, 3, 3, False, x),
         r"take_backward: grad_x must have"),
        (lambda: G.log_softmax_backward(dev(np.zeros((2, 3))), dev(np.zeros((3, 2))),
                                        dev(np.zeros((2, 3)))), r"log_softmax_backward: grad_out"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


# ----------------------------------------------------------------------------------- coverage
def test_every_ops_kernel_was_launched(request):
    """Runs last: every CUDA kernel of kernels/cuda/ops.py ran at least once in this module."""
    if request.config.getoption("keyword") or request.config.getoption("markexpr"):
        pytest.skip("a -k/-m selection ran only part of the module")
    names = {k.name for k in _common.KERNELS if k.name.startswith("ops.")}
    assert names
    missing = sorted(names - _common.LAUNCHED)
    assert not missing, f"never launched: {missing}"
