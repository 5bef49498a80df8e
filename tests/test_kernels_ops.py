"""CPU op kernels (kernels/cpu/ops.py): float64 references with NumPy broadcasting, poisoned
outputs, edge shapes (size-1 dims, every kind of broadcast, ranks 1..6, empty spaces), both the
serial and the prange paths, NaN and tie rules, central finite differences in float64, and
torch.autograd when torch is installed."""
import numba
import numpy as np
import pytest
from conftest import assert_close, poisoned

import reference as ref
from numbanet.backend import kernel_names
from numbanet.kernels import scalar
from numbanet.kernels.cpu import ops as K
from numbanet.testing import gradcheck

DTYPES = [np.float32, np.float64]
R = scalar.MAX_RANK
BIG = K._PAR_MIN + 5                 # an element count on the prange side


# ----------------------------------------------------------------------------------- helpers
def t6(shape):
    """``shape`` padded at the front with 1s to MAX_RANK."""
    return (1,) * (R - len(shape)) + tuple(int(d) for d in shape)


def c_strides(shape):
    """C-order strides (in elements) of a contiguous array of ``shape``."""
    st, step = [], 1
    for d in reversed(shape):
        st.append(step)
        step *= d
    return tuple(reversed(st))


def bstrides(shape, full):
    """Strides, padded to MAX_RANK, of a contiguous operand of ``shape`` broadcast to ``full``
    (NumPy rules): 0 along its size-1 and missing dimensions."""
    shape = t6(shape)
    return tuple(0 if d == 1 else s for d, s in zip(shape, c_strides(shape)))


def data(rng, shape, dtype, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(dtype)


# (a shape, b shape): trailing, leading, middle, both-broadcast, 0-d-like, size-1, ranks 1..6
BROADCASTS = [
    ((3, 4), (3, 4)),                    # same shape: the flat path
    ((5, 4), (4,)),                      # trailing: b a row
    ((4,), (5, 4)),                      # a broadcast along a leading axis
    ((2, 3, 4), (2, 1, 4)),              # middle
    ((3, 1), (1, 4)),                    # both operands broadcast
    ((2, 1, 4), (1, 3, 1)),
    ((3, 4), ()),                        # 0-d-like b
    ((), ()),                            # 0-d
    ((1, 5, 1), (1, 1, 1)),              # size-1 dimensions only
    ((7,), (1,)),                        # rank 1
    ((2, 1, 3, 1, 2, 3), (1, 2, 1, 2, 1, 3)),  # rank 6
    ((2, 1, 3, 4), (3, 1)),              # rank 4 against rank 2
    ((2, 3, 1, 2, 2), (3, 2, 1)),        # rank 5 against rank 3
    ((0, 3), (3,)),                      # empty
    ((300, 300), (300, 1)),              # prange path, column broadcast
    ((40, 30, 50), (40, 1, 50)),         # prange path, work items starting inside a 3-d space
    ((K._CHUNK * 3 + 7,), ()),           # one long row split into several work items
]


def broadcast_case(a_shape, b_shape):
    full = np.broadcast_shapes(a_shape, b_shape)
    return t6(full), bstrides(a_shape, full), bstrides(b_shape, full), full


# the codes whose tie a == b is a case of its own (a kink, or where a comparison flips)
TIES = ("maximum", "minimum", "equal", "not_equal", "greater", "greater_equal", "less",
        "less_equal")


def binary_inputs(name, rng, a_shape, b_shape, dtype):
    a, b = data(rng, a_shape, dtype), data(rng, b_shape, dtype)
    if name == "divide":
        b = (np.sign(b) + (b == 0)) * (0.5 + np.abs(b))       # away from 0
    if name in TIES and a.size and b.size:
        a.reshape(-1)[::3] = b.reshape(-1)[0]                  # ties
    return a.astype(dtype), b.astype(dtype)


def test_public_names_match_the_contract():
    assert kernel_names(K) == [
        "binary_backward", "binary_forward", "log_softmax_backward", "log_softmax_forward",
        "matmul_forward", "reduce_max", "reduce_sum", "strided_copy", "take_backward",
        "take_forward", "unary_backward", "unary_forward", "where_backward", "where_forward"]


def test_code_constants_follow_the_tables():
    assert scalar.MAX_RANK == 6
    for codes in (scalar.UNARY_CODES, scalar.BINARY_CODES):
        for i, name in enumerate(codes):
            assert getattr(scalar, name.upper()) == i


# ----------------------------------------------------------------------------------- unary
UNARY_PARAMS = {"power": (2.5, 0.0), "clip": (-0.5, 0.7), "affine": (-1.5, 0.25),
                "rdiv": (2.0, 0.0)}


def unary_input(name, rng, size, dtype):
    x = rng.standard_normal(size)
    if name in ("sqrt", "log", "power"):
        x = np.abs(x) + 0.1
    if name == "rdiv":
        x = (np.sign(x) + (x == 0)) * (0.5 + np.abs(x))
    if name == "clip" and size >= 2:
        x[:2] = (-0.5, 0.7)                                     # on the bounds
    return x.astype(dtype)


def run_unary(name, x, alpha, beta, dtype):
    code = scalar.UNARY_CODES.index(name)
    y = poisoned(x.shape, dtype)
    K.unary_forward(code, x, alpha, beta, y)
    return y


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", [1, 7, 1001, BIG])
@pytest.mark.parametrize("name", scalar.UNARY_CODES)
def test_unary_matches_reference(name, size, dtype, rng):
    alpha, beta = UNARY_PARAMS.get(name, (0.0, 0.0))
    code = scalar.UNARY_CODES.index(name)
    x = unary_input(name, rng, size, dtype)
    y = run_unary(name, x, alpha, beta, dtype)
    assert_close(y, ref.unary_forward(name, x, alpha, beta), dtype, f"{name} forward")
    g = data(rng, size, dtype)
    gi = poisoned(size, dtype)
    K.unary_backward(code, x, y, g, alpha, beta, gi)
    assert_close(gi, ref.unary_backward(name, x, g, alpha, beta), dtype, f"{name} backward")
    # in place: out is x, grad_in is grad_out
    xa, ga = x.copy(), g.copy()
    K.unary_forward(code, xa, alpha, beta, xa)
    np.testing.assert_array_equal(xa, y)
    K.unary_backward(code, x, y, ga, alpha, beta, ga)
    np.testing.assert_array_equal(ga, gi)


@pytest.mark.parametrize("name", scalar.UNARY_CODES)
def test_unary_backward_matches_finite_differences(name, rng):
    alpha, beta = UNARY_PARAMS.get(name, (0.0, 0.0))
    code = scalar.UNARY_CODES.index(name)
    x0 = unary_input(name, rng, 9, np.float64)
    if name in ("abs", "clip", "sign"):
        x0 = x0[np.abs(np.abs(x0) - 0.6) > 0.15]               # away from the kinks
        x0 = x0[np.abs(x0) > 0.05]
    g = rng.standard_normal(x0.size)

    def f(x):
        return np.sum(run_unary(name, x, alpha, beta, np.float64) * g)

    def grad_f(x):
        gi = poisoned(x.size, np.float64)
        K.unary_backward(code, x, run_unary(name, x, alpha, beta, np.float64), g, alpha, beta,
                         gi)
        return [gi]
    assert gradcheck((f, grad_f), x0)


def test_unary_domain_edges():
    nan, inf = np.nan, np.inf

    def fwd(name, x, alpha=0.0, beta=0.0):
        return run_unary(name, np.array(x, np.float64), alpha, beta, np.float64)

    def bwd(name, x, alpha=0.0, beta=0.0):
        x = np.array(x, np.float64)
        gi = poisoned(x.size, np.float64)
        K.unary_backward(scalar.UNARY_CODES.index(name), x, fwd(name, x, alpha, beta),
                         np.ones(x.size), alpha, beta, gi)
        return gi
    np.testing.assert_array_equal(fwd("sqrt", [-1.0, 0.0, 4.0]), [nan, 0.0, 2.0])
    np.testing.assert_array_equal(fwd("log", [-1.0, 0.0, 1.0]), [nan, -inf, 0.0])
    np.testing.assert_array_equal(fwd("power", [-8.0, -2.0, 0.0], 1 / 3), [nan, nan, 0.0])
    np.testing.assert_array_equal(fwd("power", [-2.0, 3.0], 3.0), [-8.0, 27.0])
    np.testing.assert_array_equal(bwd("power", [-2.0, 3.0], 0.0), [0.0, 0.0])
    np.testing.assert_array_equal(bwd("power", [-2.0], 2.0), [-4.0])
    np.testing.assert_array_equal(bwd("abs", [-2.0, 0.0, 3.0]), [-1.0, 0.0, 1.0])
    np.testing.assert_array_equal(fwd("clip", [nan, -3.0, 3.0, 0.1], -1.0, 1.0),
                                  [nan, -1.0, 1.0, 0.1])
    np.testing.assert_array_equal(bwd("clip", [-1.0, 1.0, -1.01, 1.01, 0.0], -1.0, 1.0),
                                  [1.0, 1.0, 0.0, 0.0, 1.0])
    np.testing.assert_array_equal(fwd("clip", [0.0, 5.0], 2.0, 1.0), [1.0, 1.0])  # alpha > beta
    y = fwd("sign", [nan, -0.0, 0.0, -inf, inf, -1e-300, 3.0])              # as np.sign
    np.testing.assert_array_equal(y, [nan, 0.0, 0.0, -1.0, 1.0, -1.0, 1.0])
    assert not np.signbit(y[1])
    np.testing.assert_array_equal(bwd("sign", [-2.0, 0.0, 3.0]), [0.0, 0.0, 0.0])


def test_unary_agrees_with_torch():
    torch = pytest.importorskip("torch")
    x = np.array([-2.5, -1.0, -0.5, 0.0, 0.5, 0.7, 1.0, 3.0, np.nan])
    cases = [("neg", 0, 0, lambda t: -t), ("square", 0, 0, lambda t: t * t),
             ("sqrt", 0, 0, torch.sqrt), ("exp", 0, 0, torch.exp), ("log", 0, 0, torch.log),
             ("abs", 0, 0, torch.abs), ("power", 2.5, 0, lambda t: torch.pow(t, 2.5)),
             ("power", 3.0, 0, lambda t: torch.pow(t, 3.0)),
             ("power", 0.0, 0, lambda t: torch.pow(t, 0.0)),
             ("clip", -0.5, 0.7, lambda t: torch.clamp(t, -0.5, 0.7)),
             ("affine", -1.5, 0.25, lambda t: -1.5 * t + 0.25),
             ("rdiv", 2.0, 0, lambda t: 2.0 / t),
             # NaN stays NaN, as np.sign (torch.sign gives 0)
             ("sign", 0, 0, lambda t: torch.sign(t) + torch.where(t.isnan(), t.detach(), 0.0))]
    for name, alpha, beta, fn in cases:
        t = torch.tensor(x, requires_grad=True)
        out = fn(t)
        out.backward(torch.ones_like(out))
        y = run_unary(name, x, alpha, beta, np.float64)
        np.testing.assert_allclose(y, out.detach().numpy(), rtol=1e-14, err_msg=name)
        gi = poisoned(x.size, np.float64)
        K.unary_backward(scalar.UNARY_CODES.index(name), x, y, np.ones(x.size), alpha, beta, gi)
        np.testing.assert_allclose(gi, t.grad.numpy(), rtol=1e-14, err_msg=f"{name} grad")


# ----------------------------------------------------------------------------------- binary
def run_binary(name, a, b, shape, sa, sb, dtype):
    out = poisoned(int(np.prod(shape)), dtype)
    K.binary_forward(scalar.BINARY_CODES.index(name), a.reshape(-1), b.reshape(-1), shape, sa,
                     sb, out)
    return out


def run_binary_backward(name, a, b, g, shape, sa, sb, dtype):
    n = int(np.prod(shape))
    ga, gb = poisoned(n, dtype), poisoned(n, dtype)
    K.binary_backward(scalar.BINARY_CODES.index(name), a.reshape(-1), b.reshape(-1),
                      g.reshape(-1), shape, sa, sb, ga, gb)
    return ga, gb


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shapes", BROADCASTS, ids=str)
@pytest.mark.parametrize("name", scalar.BINARY_CODES)
def test_binary_matches_reference(name, shapes, dtype, rng):
    shape, sa, sb, full = broadcast_case(*shapes)
    a, b = binary_inputs(name, rng, *shapes, dtype)
    out = run_binary(name, a, b, shape, sa, sb, dtype)
    assert_close(out, ref.binary_forward(name, a, b, shape, sa, sb), dtype, "forward")
    g = data(rng, full, dtype)
    ga, gb = run_binary_backward(name, a, b, g, shape, sa, sb, dtype)
    wa, wb = ref.binary_backward(name, a, b, g, shape, sa, sb)
    assert_close(ga, wa, dtype, "grad_a")
    assert_close(gb, wb, dtype, "grad_b")


@pytest.mark.parametrize("dtype", DTYPES)
def test_binary_general_strides(dtype, rng):
    """Operands that are strided views rather than broadcasts (every other column, transposed):
    the strided path without zero strides, at a serial and a prange size."""
    for rows, cols in ((4, 3), (300, 257)):
        base = data(rng, (cols, 2 * rows), dtype)           # a = base[:, ::2].T (rows x cols)
        b = data(rng, (cols, rows), dtype)                  # b = b.T
        shape = t6((rows, cols))
        sa, sb = (0,) * 4 + (2, 2 * rows), (0,) * 4 + (1, rows)
        out = poisoned(rows * cols, dtype)
        K.binary_forward(scalar.SUBTRACT, base.reshape(-1), b.reshape(-1), shape, sa, sb, out)
        want = base[:, ::2].T.astype(np.float64) - b.T
        assert_close(out, want.reshape(-1), dtype, f"{rows}x{cols}")


def test_maximum_minimum_nan_and_tie_rules():
    nan = np.nan
    a = np.array([1.0, 2.0, 3.0, nan, 1.0, nan])
    b = np.array([2.0, 2.0, 1.0, 1.0, nan, nan])
    shape, s = t6((6,)), (0,) * 5 + (1,)
    np.testing.assert_array_equal(run_binary("maximum", a, b, shape, s, s, np.float64),
                                  [2.0, 2.0, 3.0, nan, nan, nan])
    np.testing.assert_array_equal(run_binary("minimum", a, b, shape, s, s, np.float64),
                                  [1.0, 2.0, 1.0, nan, nan, nan])
    np.testing.assert_array_equal(run_binary("equal", a, b, shape, s, s, np.float64),
                                  [0.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    # a comparison with a NaN operand is false, except not_equal
    for name, want in (("not_equal", [1, 0, 1, 1, 1, 1]), ("greater", [0, 0, 1, 0, 0, 0]),
                       ("greater_equal", [0, 1, 1, 0, 0, 0]), ("less", [1, 0, 0, 0, 0, 0]),
                       ("less_equal", [1, 1, 0, 0, 0, 0])):
        np.testing.assert_array_equal(run_binary(name, a, b, shape, s, s, np.float64), want,
                                      err_msg=name)
    ga, gb = run_binary_backward("maximum", a, b, np.ones(6), shape, s, s, np.float64)
    np.testing.assert_array_equal(ga, [0.0, 0.5, 1.0, 1.0, 1.0, 1.0])
    np.testing.assert_array_equal(gb, [1.0, 0.5, 0.0, 1.0, 1.0, 1.0])
    ga, gb = run_binary_backward("minimum", a, b, np.ones(6), shape, s, s, np.float64)
    np.testing.assert_array_equal(ga, [1.0, 0.5, 0.0, 1.0, 1.0, 1.0])
    np.testing.assert_array_equal(gb, [0.0, 0.5, 1.0, 1.0, 1.0, 1.0])


def reduce_to(full_grad, full, shape):
    """Sum a full-size gradient down to an input's ``shape`` with the reduce_sum kernel."""
    full6, shape6 = t6(full), t6(shape)
    keep = tuple(d if d == f else 1 for d, f in zip(shape6, full6))
    red = tuple(f if d != f else 1 for d, f in zip(shape6, full6))
    cs = c_strides(full6)
    out = poisoned(int(np.prod(shape6)), full_grad.dtype)
    K.reduce_sum(full_grad, keep, tuple(s if d > 1 else 0 for d, s in zip(keep, cs)), red,
                 tuple(s if d > 1 else 0 for d, s in zip(red, cs)), 1.0, out)
    return out.reshape(shape)


@pytest.mark.parametrize("shapes", [((2, 3, 4), (2, 1, 4)), ((3, 1), (1, 4)), ((3, 4), ())],
                         ids=str)
@pytest.mark.parametrize("name", scalar.BINARY_CODES)
def test_binary_backward_matches_finite_differences(name, shapes, rng):
    shape, sa, sb, full = broadcast_case(*shapes)
    a0, b0 = binary_inputs(name, rng, *shapes, np.float64)
    if name in TIES:                                       # no ties: the kinks
        a0 = a0 + 0.3 * (np.abs(a0 - b0.reshape(-1)[0]) < 0.1) + 0.01
    g = rng.standard_normal(full)

    def f(a, b):
        return np.sum(run_binary(name, a, b, shape, sa, sb, np.float64) * g.reshape(-1))

    def grad_f(a, b):
        ga, gb = run_binary_backward(name, a, b, g, shape, sa, sb, np.float64)
        return [reduce_to(ga, full, a.shape), reduce_to(gb, full, b.shape)]
    assert gradcheck((f, grad_f), a0, b0)


def test_binary_agrees_with_torch(rng):
    torch = pytest.importorskip("torch")
    a = np.array([[1.0, 2.0, np.nan, -1.0], [0.5, 2.0, 3.0, 4.0], [2.0, 2.0, 2.0, np.nan]])
    b = np.array([2.0, 2.0, 1.0, -1.0])
    shape, sa, sb, full = broadcast_case(a.shape, b.shape)
    fns = {"add": torch.add, "subtract": torch.sub, "multiply": torch.mul, "divide": torch.div,
           "maximum": torch.maximum, "minimum": torch.minimum}
    compare = {"equal": torch.eq, "not_equal": torch.ne, "greater": torch.gt,
               "greater_equal": torch.ge, "less": torch.lt, "less_equal": torch.le}
    g = rng.standard_normal(full)
    for name, fn in {**fns, **compare}.items():
        out = run_binary(name, a, b, shape, sa, sb, np.float64)
        ga, gb = run_binary_backward(name, a, b, g, shape, sa, sb, np.float64)
        if name in compare:
            np.testing.assert_array_equal(out.reshape(full),
                                          fn(torch.tensor(a), torch.tensor(b)).double(),
                                          err_msg=name)
            assert not ga.any() and not gb.any()
            continue
        ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
        to = fn(ta, tb)
        to.backward(torch.tensor(g))
        np.testing.assert_allclose(out.reshape(full), to.detach().numpy(), rtol=1e-14,
                                   err_msg=name)
        np.testing.assert_allclose(reduce_to(ga, full, a.shape), ta.grad.numpy(), rtol=1e-14,
                                   atol=1e-15, err_msg=f"{name} grad a")
        np.testing.assert_allclose(reduce_to(gb, full, b.shape), tb.grad.numpy(), rtol=1e-14,
                                   atol=1e-15, err_msg=f"{name} grad b")


# ----------------------------------------------------------------------------------- where
WHERE_CASES = [((3, 4), (3, 4), (3, 4)), ((3, 1), (1, 4), ()), ((4,), (2, 3, 4), (2, 1, 1)),
               ((1,), (5,), (5,)), ((2, 1, 2, 1, 3, 2), (1, 3, 2, 1, 1, 2), (2,)),
               ((0, 2), (2,), (1,)), ((300, 1), (300, 300), (300,))]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shapes", WHERE_CASES, ids=str)
def test_where_matches_reference(shapes, dtype, rng):
    c_shape, a_shape, b_shape = shapes
    full = np.broadcast_shapes(*shapes)
    shape = t6(full)
    sc, sa, sb = (bstrides(s, full) for s in shapes)
    cond = (rng.random(c_shape) < 0.5).astype(dtype)
    a, b = data(rng, a_shape, dtype), data(rng, b_shape, dtype)
    n = int(np.prod(full))
    out = poisoned(n, dtype)
    K.where_forward(cond.reshape(-1), a.reshape(-1), b.reshape(-1), shape, sc, sa, sb, out)
    assert_close(out, ref.where_forward(cond, a, b, shape, sc, sa, sb), dtype, "forward")
    g = data(rng, full, dtype)
    ga, gb = poisoned(n, dtype), poisoned(n, dtype)
    K.where_backward(cond.reshape(-1), g.reshape(-1), shape, sc, ga, gb)
    wa, wb = ref.where_backward(cond, g, shape, sc)
    assert_close(ga, wa, dtype, "grad_a")
    assert_close(gb, wb, dtype, "grad_b")


# ----------------------------------------------------------------------------------- reductions
def reduction_case(shape, axes):
    """(keep_shape, keep_strides, red_shape, red_strides) of summing a contiguous x of
    ``shape`` over ``axes``."""
    shape6 = t6(shape)
    axes6 = {a % len(shape) + R - len(shape) for a in axes}
    cs = c_strides(shape6)
    keep = tuple(1 if d in axes6 else shape6[d] for d in range(R))
    red = tuple(shape6[d] if d in axes6 else 1 for d in range(R))
    return (keep, tuple(0 if d in axes6 else cs[d] for d in range(R)),
            red, tuple(cs[d] if d in axes6 else 0 for d in range(R)))


REDUCTIONS = [
    ((40,), (0,)),                       # to a scalar
    ((13, 17), (0,)),                    # over rows: the column path
    ((13, 17), (1,)),                    # row sums
    ((3, 8), (0,)),                      # few columns: the per-output path
    ((2, 3, 4), (1,)),                   # middle axis
    ((2, 3, 4, 5), (0, 2)),              # two axes
    ((2, 1, 3, 2, 2, 3), (0, 3, 5)),     # rank 6
    ((2, 3, 4), ()),                     # nothing reduced
    ((5, 1), (1,)),                      # size-1 axis
    ((400, 300), (0,)),                  # prange, column path
    ((300, 400), (1,)),                  # prange, row path
    ((4, K._RED_CHUNK + 11), (1,)),      # long rows: partial sums
    ((3 * K._RED_CHUNK + 5,), (0,)),     # one long sum
    ((K._RED_CHUNK + 3, 5), (0,)),       # long columns, few of them
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", REDUCTIONS, ids=str)
def test_reduce_matches_reference(case, dtype, rng):
    shape, axes = case
    keep, ks, red, rs = reduction_case(shape, axes)
    x = data(rng, shape, dtype).reshape(-1)
    nkeep = int(np.prod(keep))
    out = poisoned(nkeep, dtype)
    K.reduce_sum(x, keep, ks, red, rs, 0.25, out)
    assert_close(out, ref.reduce_sum(x, keep, ks, red, rs, 0.25), dtype, "sum")
    out = poisoned(nkeep, dtype)
    K.reduce_max(x, keep, ks, red, rs, out)
    np.testing.assert_array_equal(out, ref.reduce_max(x, keep, ks, red, rs).astype(dtype))


def test_reduce_of_broadcast_and_strided_operands(rng):
    """Strides 0 in the reduced space (a broadcast operand summed) and a transposed keep."""
    x = rng.standard_normal(6)
    out = poisoned(6, np.float64)
    K.reduce_sum(x, t6((6,)), t6((1,)), t6((4,)), t6((0,)), 1.0, out)
    np.testing.assert_allclose(out, 4 * x, rtol=1e-15)
    x = rng.standard_normal((3, 5))
    out = poisoned(5, np.float64)                         # sums of x.T's rows
    K.reduce_sum(x.reshape(-1), t6((5,)), t6((1,)), t6((3,)), t6((5,)), 1.0, out)
    np.testing.assert_allclose(out, x.sum(0), rtol=1e-14)
    out = poisoned(15, np.float64)                        # keep x.T (5, 3), nothing reduced
    K.reduce_max(x.reshape(-1), t6((5, 3)), t6((1, 5)), t6(()), t6(()), out)
    np.testing.assert_array_equal(out, x.T.reshape(-1))


def test_reduce_empty():
    x = np.ones(6)
    out = poisoned(3, np.float64)
    K.reduce_sum(x, t6((3,)), t6((1,)), t6((0, 2)), t6((2, 1)), 1.0, out)
    np.testing.assert_array_equal(out, [0.0, 0.0, 0.0])
    K.reduce_sum(x, t6((0,)), t6((1,)), t6((2,)), t6((1,)), 1.0, poisoned(0, np.float64))
    with pytest.raises(ValueError, match="reduce_max: red_shape is empty"):
        K.reduce_max(x, t6((3,)), t6((1,)), t6((0,)), t6((1,)), poisoned(3, np.float64))


@pytest.mark.parametrize("size", [5, 3 * K._RED_CHUNK + 5])
def test_reduce_max_nan_and_infinities(size, rng):
    x = rng.standard_normal((3, size))
    x[0, size // 2] = np.nan
    x[1, :] = -np.inf
    x[2, -1] = np.inf
    keep, ks, red, rs = reduction_case(x.shape, (1,))
    out = poisoned(3, np.float64)
    K.reduce_max(x.reshape(-1), keep, ks, red, rs, out)
    np.testing.assert_array_equal(out, [np.nan, -np.inf, np.inf])
    keep, ks, red, rs = reduction_case(x.shape, (0,))          # columns, one of them NaN
    out = poisoned(size, np.float64)
    K.reduce_max(x.reshape(-1), keep, ks, red, rs, out)
    np.testing.assert_array_equal(out, np.max(x, axis=0))


def test_reduce_sum_accumulates_in_float64():
    x = np.concatenate([[1e8], np.ones(1000), [-1e8]]).astype(np.float32)
    keep, ks, red, rs = reduction_case(x.shape, (0,))
    out = poisoned(1, np.float32)
    K.reduce_sum(x, keep, ks, red, rs, 1.0, out)
    assert out[0] == 1000.0                                # float32 running sums give 0


@pytest.mark.parametrize("case", [((3, 2 * K._RED_CHUNK + 1), (1,)), ((500, 300), (0,)),
                                  ((300, 500), (1,))], ids=str)
def test_reductions_are_deterministic_across_thread_counts(case, rng):
    shape, axes = case
    keep, ks, red, rs = reduction_case(shape, axes)
    x = rng.standard_normal(shape).astype(np.float32).reshape(-1)
    results = []
    threads = numba.get_num_threads()
    try:
        for t in sorted({1, threads}):
            numba.set_num_threads(t)
            out = poisoned(int(np.prod(keep)), np.float32)
            K.reduce_sum(x, keep, ks, red, rs, 1.0, out)
            results.append(out)
    finally:
        numba.set_num_threads(threads)
    assert_close(results[0], ref.reduce_sum(x, keep, ks, red, rs, 1.0), np.float32)
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


# ----------------------------------------------------------------------------------- copies
def run_copy(x, x_offset, shape, xs, accumulate, out, out_offset, os_):
    got = out.copy()
    K.strided_copy(x.reshape(-1), x_offset, shape, xs, accumulate, got, out_offset, os_)
    want = ref.strided_copy(x, x_offset, shape, xs, accumulate, out, out_offset, os_)
    assert_close(got, want, out.dtype, f"copy {shape}")
    return got


@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_strided_copy(accumulate, dtype, rng):
    def fresh(n):
        return data(rng, n, dtype)
    # transpose (2-D and a 3-D permutation)
    x = data(rng, (3, 5), dtype)
    run_copy(x, 0, t6((5, 3)), (0,) * 4 + (1, 5), accumulate, fresh(15), 0,
             (0,) * 4 + (3, 1))
    x = data(rng, (2, 3, 4), dtype)                      # out = x.transpose(2, 0, 1)
    run_copy(x, 0, t6((4, 2, 3)), (0, 0, 0, 1, 12, 4), accumulate, fresh(24), 0,
             (0, 0, 0, 6, 3, 1))
    # broadcast_to: (3, 1) -> (3, 4)
    x = data(rng, (3, 1), dtype)
    run_copy(x, 0, t6((3, 4)), (0,) * 4 + (1, 0), accumulate, fresh(12), 0, (0,) * 4 + (4, 1))
    # a slice x[1:4:2, ::-1] of a (5, 4) array (offset, step, negative stride)
    x = data(rng, (5, 4), dtype)
    run_copy(x, 4 + 3, t6((2, 4)), (0,) * 4 + (8, -1), accumulate, fresh(8), 0,
             (0,) * 4 + (4, 1))
    # its gradient: the (2, 4) slice gradient added into a (5, 4) buffer at the same places
    g = data(rng, (2, 4), dtype)
    run_copy(g, 0, t6((2, 4)), (0,) * 4 + (4, 1), accumulate, fresh(20), 7, (0,) * 4 + (8, -1))
    # concatenate (2, 3) and (2, 5) along axis 1 into (2, 8): two copies into one out
    p, q = data(rng, (2, 3), dtype), data(rng, (2, 5), dtype)
    out = run_copy(p, 0, t6((2, 3)), (0,) * 4 + (3, 1), accumulate, fresh(16), 0,
                   (0,) * 4 + (8, 1))
    run_copy(q, 0, t6((2, 5)), (0,) * 4 + (5, 1), accumulate, out, 3, (0,) * 4 + (8, 1))
    # rank 6, contiguous, and a prange-sized transpose
    x = data(rng, (2, 1, 3, 2, 2, 3), dtype)
    cs = c_strides(x.shape)
    run_copy(x, 0, x.shape, cs, accumulate, fresh(x.size), 0, cs)
    x = data(rng, (300, 301), dtype)
    run_copy(x, 0, t6((301, 300)), (0,) * 4 + (1, 301), accumulate, fresh(x.size), 0,
             (0,) * 4 + (300, 1))
    x = data(rng, (30, 40, 50), dtype)                   # out = x.transpose(2, 0, 1), prange
    run_copy(x, 0, t6((50, 30, 40)), (0, 0, 0, 1, 2000, 50), accumulate, fresh(x.size), 0,
             (0, 0, 0, 1200, 40, 1))
    # empty: nothing written
    run_copy(x, 0, t6((0, 3)), (0,) * 4 + (3, 1), accumulate, fresh(4), 0, (0,) * 4 + (3, 1))


# ----------------------------------------------------------------------------------- matmul
MATMUL_BATCHES = [
    ((), None, None),                    # one product
    ((3,), "full", "full"),
    ((3,), "full", 0),                   # B shared by the batch (broadcast)
    ((2, 3), 0, "full"),                 # A broadcast over both batch axes
    ((2, 1, 3), "full", "full"),
]


def matmul_operand(rng, batch, which, rows, cols, ld, dtype):
    """A flat operand of ``rows`` x ``cols`` matrices with row stride ``ld`` per batch entry
    ("full"), or one matrix shared by every batch entry (stride 0)."""
    per = rows * ld
    nb = int(np.prod(batch)) if which == "full" else 1
    flat = data(rng, nb * per, dtype)
    strides = c_strides(t6(batch)) if which == "full" else (0,) * R
    return flat, tuple(s * per if d > 1 else 0 for s, d in zip(strides, t6(batch)))


@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("trans", [(False, False), (True, False), (False, True), (True, True)],
                         ids=str)
@pytest.mark.parametrize("batch", MATMUL_BATCHES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_matches_reference(dtype, batch, trans, accumulate, rng):
    shape, wa, wb = batch
    ta, tb = trans
    m, n, k = 5, 4, 7
    lda = (m if ta else k) + 2                            # padded rows
    ldb = k if tb else n
    a, sa = matmul_operand(rng, shape, wa or "full", k if ta else m, m if ta else k, lda, dtype)
    b, sb = matmul_operand(rng, shape, wb or "full", n if tb else k, k if tb else n, ldb, dtype)
    nb = int(np.prod(shape))
    out = data(rng, nb * m * n, dtype) if accumulate else poisoned(nb * m * n, dtype)
    want = ref.matmul_forward(a, b, t6(shape), sa, sb, m, n, k, lda, ldb, ta, tb, accumulate,
                              out)
    K.matmul_forward(a, b, t6(shape), sa, sb, m, n, k, lda, ldb, ta, tb, accumulate, out)
    assert_close(out, want, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_edges(dtype, rng):
    # k = 0: zeros, or out unchanged when accumulating; m = n = 1
    out = poisoned(6, dtype)
    K.matmul_forward(np.zeros(1, dtype), np.zeros(1, dtype), t6((2,)), t6((0,)), t6((0,)), 1, 3,
                     0, 1, 3, False, False, False, out)
    np.testing.assert_array_equal(out, 0.0)
    prev = data(rng, 6, dtype)
    out = prev.copy()
    K.matmul_forward(np.zeros(1, dtype), np.zeros(1, dtype), t6((2,)), t6((0,)), t6((0,)), 1, 3,
                     0, 1, 3, False, False, True, out)
    np.testing.assert_array_equal(out, prev)
    a, b = data(rng, 6, dtype), data(rng, 6, dtype)
    out = poisoned(1, dtype)
    K.matmul_forward(a, b, t6(()), t6(()), t6(()), 1, 1, 6, 6, 1, False, False, False, out)
    assert_close(out, [a.astype(np.float64) @ b], dtype)
    # many batches (the prange path) with both operands broadcast along different axes
    nb = (8, 6)
    m, n, k = 24, 20, 32
    a, sa = matmul_operand(rng, (8, 1), "full", m, k, k, dtype)
    b, sb = matmul_operand(rng, (1, 6), "full", k, n, n, dtype)
    assert np.prod(nb) * m * n * k >= K._MATMUL_PAR_MIN
    out = poisoned(48 * m * n, dtype)
    K.matmul_forward(a, b, t6(nb), sa, sb, m, n, k, k, n, False, False, False, out)
    want = np.matmul(a.astype(np.float64).reshape(8, 1, m, k), b.astype(np.float64)
                     .reshape(1, 6, k, n))
    assert_close(out, want.reshape(-1), dtype)


# ----------------------------------------------------------------------------------- take
TAKE_CASES = [
    # outer, n, inner, indices
    (1, 5, 3, [4, 0, 4, 2, 4]),          # Embedding-like, duplicates
    (3, 4, 1, [1, 1, 3]),                # take along the last axis
    (2, 6, 5, [5]),
    (2, 3, 4, []),                       # no indices
    (1, 1, 1, [0, 0, 0]),
    (7, 50, 400, list(range(49, -1, -3)) * 2),       # prange sizes, duplicates
    (1, 10, 2 * K._TAKE_COLUMNS + 3, [9, 2, 9, 0]),  # several column blocks
]


@pytest.mark.parametrize("itype", [np.int32, np.int64])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", TAKE_CASES, ids=lambda c: str(c[:3]))
def test_take_matches_reference(case, dtype, itype, rng):
    outer, n, inner, idx = case
    idx = np.asarray(idx, itype)
    m = idx.size
    x = data(rng, outer * n * inner, dtype)
    out = poisoned(outer * m * inner, dtype)
    K.take_forward(x, idx, outer, n, inner, out)
    np.testing.assert_array_equal(out, ref.take_forward(x, idx, outer, n, inner).astype(dtype))
    g = data(rng, outer * m * inner, dtype)
    gx = poisoned(outer * n * inner, dtype)
    K.take_backward(g, idx, outer, n, inner, False, gx)
    assert_close(gx, ref.take_backward(g, idx, outer, n, inner, False, gx), dtype, "scatter")
    prev = data(rng, outer * n * inner, dtype)
    gx = prev.copy()
    K.take_backward(g, idx, outer, n, inner, True, gx)
    assert_close(gx, ref.take_backward(g, idx, outer, n, inner, True, prev), dtype, "add")


def test_take_backward_is_deterministic_across_thread_counts(rng):
    outer, n, inner = 2, 3, 3000
    idx = rng.integers(0, n, 200)
    g = rng.standard_normal(outer * 200 * inner).astype(np.float32)
    results = []
    threads = numba.get_num_threads()
    try:
        for t in sorted({1, threads}):
            numba.set_num_threads(t)
            gx = poisoned(outer * n * inner, np.float32)
            K.take_backward(g, idx, outer, n, inner, False, gx)
            results.append(gx)
    finally:
        numba.set_num_threads(threads)
    assert_close(results[0], ref.take_backward(g, idx, outer, n, inner, False, results[0]),
                 np.float32)
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


# ----------------------------------------------------------------------------------- log_softmax
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (5, 1), (0, 4), (300, 300)], ids=str)
def test_log_softmax_matches_reference(shape, dtype, rng):
    x = data(rng, shape, dtype, 3.0)
    if x.size:
        x[0, 0] = 80.0                                    # exp would overflow float32 unshifted
    y = poisoned(shape, dtype)
    K.log_softmax_forward(x, y)
    assert_close(y, ref.log_softmax_forward(x), dtype, "forward")
    g = data(rng, shape, dtype)
    gi = poisoned(shape, dtype)
    K.log_softmax_backward(y, g, gi)
    assert_close(gi, ref.log_softmax_backward(y, g), dtype, "backward")
    xa, ga = x.copy(), g.copy()                           # in place
    K.log_softmax_forward(xa, xa)
    np.testing.assert_array_equal(xa, y)
    K.log_softmax_backward(y, ga, ga)
    np.testing.assert_array_equal(ga, gi)


def test_log_softmax_backward_matches_finite_differences_and_torch(rng):
    x0 = rng.standard_normal((3, 5))
    g = rng.standard_normal((3, 5))

    def forward(x):
        y = poisoned(x.shape, np.float64)
        K.log_softmax_forward(x, y)
        return y

    def grad_f(x):
        gi = poisoned(x.shape, np.float64)
        K.log_softmax_backward(forward(x), g, gi)
        return [gi]
    assert gradcheck((lambda x: np.sum(forward(x) * g), grad_f), x0)
    torch = pytest.importorskip("torch")
    t = torch.tensor(x0, requires_grad=True)
    ty = torch.log_softmax(t, dim=1)
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(forward(x0), ty.detach().numpy(), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(grad_f(x0)[0], t.grad.numpy(), rtol=1e-13, atol=1e-15)


# ----------------------------------------------------------------------------------- bad arguments
def test_bad_arguments_raise_before_writing(rng):
    x = np.zeros(6)
    s6, c = t6((2, 3)), (0,) * 4 + (3, 1)
    cases = [
        (lambda: K.unary_forward(99, x, 0.0, 0.0, np.empty(6)), "unary_forward: code"),
        (lambda: K.unary_forward(0, x, 0.0, 0.0, np.empty(5)), "unary_forward: out"),
        (lambda: K.unary_backward(0, x, x, x, 0.0, 0.0, np.empty(7)), "unary_backward: y, grad"),
        (lambda: K.binary_forward(len(scalar.BINARY_CODES), x, x, s6, c, c, np.empty(6)),
         "binary_forward: code"),
        (lambda: K.binary_forward(0, x, x, s6, c, c, np.empty(5)), "binary_forward: out"),
        (lambda: K.binary_forward(0, x[:5], x, s6, c, c, np.empty(6)), "binary_forward: a "),
        (lambda: K.binary_forward(0, x, x, s6, c, (0,) * 4 + (4, 1), np.empty(6)),
         "binary_forward: b "),
        (lambda: K.binary_forward(0, x, x, (2, 3), (3, 1), (3, 1), np.empty(6)),
         "binary_forward: shape"),
        (lambda: K.binary_backward(0, x, x, x, s6, c, c, np.empty(6), np.empty(5)),
         "binary_backward: grad_out, grad_a and grad_b"),
        (lambda: K.where_forward(x[:2], x, x, s6, c, c, c, np.empty(6)), "where_forward: cond"),
        (lambda: K.where_backward(x, x, s6, c, np.empty(6), np.empty(2)),
         "where_backward: grad_out"),
        (lambda: K.reduce_sum(x, t6((2,)), t6((4,)), t6((3,)), t6((1,)), 1.0, np.empty(2)),
         "reduce_sum: x is too small"),
        (lambda: K.reduce_max(x, t6((2,)), t6((3,)), t6((3,)), t6((1,)), np.empty(3)),
         "reduce_max: out"),
        (lambda: K.strided_copy(x, 1, s6, c, False, np.empty(6), 0, c),
         "strided_copy: x is too small"),
        (lambda: K.strided_copy(x, 0, s6, c, False, np.empty(6), 0, (0,) * 4 + (-3, 1)),
         "strided_copy: out is too small"),
        (lambda: K.matmul_forward(x, x, t6(()), t6(()), t6(()), 2, 2, 3, 3, 2, False, False,
                                  False, np.empty(3)), "matmul_forward: out"),
        (lambda: K.matmul_forward(x, x, t6(()), t6(()), t6(()), 2, 2, 3, 2, 2, False, False,
                                  False, np.empty(4)), "matmul_forward: lda"),
        (lambda: K.matmul_forward(x, x, t6((2,)), t6((1,)), t6(()), 2, 2, 3, 3, 2, False, False,
                                  False, np.empty(8)), "matmul_forward: a is too small"),
        (lambda: K.take_forward(x, np.array([0, 3]), 1, 3, 2, np.empty(4)),
         "take_forward: idx has an index"),
        (lambda: K.take_forward(x, np.array([0, -1]), 1, 3, 2, np.empty(4)),
         "take_forward: idx has an index"),
        (lambda: K.take_forward(x, np.array([0]), 1, 3, 2, np.empty(3)), "take_forward: out"),
        (lambda: K.take_backward(x[:2], np.array([0]), 1, 3, 2, False, np.empty(5)),
         "take_backward: grad_x"),
        (lambda: K.log_softmax_forward(x.reshape(2, 3), np.empty((3, 2))),
         "log_softmax_forward: out"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
