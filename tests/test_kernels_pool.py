"""CPU max/avg pooling kernels: float64 reference, finite differences, PyTorch; serial and
parallel paths."""
import conftest
import numpy as np
import pytest
from conftest import global_pool_inputs, poisoned

import reference as ref
from numbanet.kernels.cpu import pool as P
from numbanet.testing import assert_gradients_close, numeric_gradient

DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 2e-6, np.float64: 1e-13}

# (N, C, H, W, pool, stride, pad, out_hw); out_hw None = symmetric padding, otherwise the output
# shape fixes the bottom/right padding.
CASES = [
    (2, 3, 8, 8, (2, 2), (2, 2), (0, 0), None),      # the usual 2x2/2
    (2, 3, 7, 9, (2, 2), (2, 2), (0, 0), None),      # odd sizes: last row/col dropped
    (2, 2, 7, 9, (2, 2), (2, 2), (0, 0), (4, 5)),    # odd sizes, "same": bottom/right padded
    (1, 2, 8, 8, (3, 3), (2, 2), (1, 1), None),      # overlapping windows, padding
    (2, 1, 5, 7, (3, 2), (1, 2), (1, 0), None),      # non-square, C=1, stride 1 rows
    (1, 2, 6, 6, (2, 2), (2, 2), (1, 1), (3, 3)),    # top/left pad 1, bottom/right 0
    (2, 2, 9, 9, (3, 3), (3, 3), (1, 1), None),
    (2, 2, 5, 5, (2, 2), (1, 1), (1, 1), None),      # stride 1, every cell in several windows
    (1, 1, 1, 1, (1, 1), (1, 1), (0, 0), None),
    (1, 1, 3, 3, (1, 1), (1, 1), (1, 1), None),      # windows entirely in the padding
]
PAR_CASES = [
    (4, 8, 48, 48, (2, 2), (2, 2), (0, 0), None),
    (4, 8, 50, 45, (3, 3), (2, 2), (1, 1), None),
]


def case_id(c):
    N, C, H, W, pl, st, pd, ohw = c
    return f"N{N}C{C}{H}x{W}p{pl[0]}{pl[1]}s{st[0]}{st[1]}pad{pd[0]}{pd[1]}" + (
        f"o{ohw[0]}x{ohw[1]}" if ohw else "")


def out_hw(c):
    N, C, H, W, pl, st, pd, ohw = c
    if ohw is not None:
        return ohw
    return (H + 2 * pd[0] - pl[0]) // st[0] + 1, (W + 2 * pd[1] - pl[1]) // st[1] + 1


def make(c, dtype, rng):
    N, C, H, W, pl, st, pd, _ = c
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    g = rng.standard_normal((N, C, *out_hw(c))).astype(dtype)
    return x, g, (*pl, *st, *pd)


def assert_close(actual, expected, dtype):
    expected = np.asarray(expected, dtype=np.float64)
    scale = float(np.max(np.abs(expected))) if expected.size else 1.0
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=RTOL[dtype],
                               atol=RTOL[dtype] * max(scale, 1e-300))


def run_max(x, g, geo):
    out = poisoned(g.shape, x.dtype)
    arg = np.full(g.shape, -7, np.int64)
    P.max_pool2d_forward(x, *geo, out, arg)
    gi = poisoned(x.shape, x.dtype)
    P.max_pool2d_backward(g, arg, gi)
    return out, arg, gi


def run_avg(x, g, geo):
    out = poisoned(g.shape, x.dtype)
    P.avg_pool2d_forward(x, *geo, out)
    gi = poisoned(x.shape, x.dtype)
    P.avg_pool2d_backward(g, *geo, gi)
    return out, gi


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", CASES + PAR_CASES, ids=case_id)
def test_max_pool_against_reference(c, dtype, rng):
    x, g, geo = make(c, dtype, rng)
    out, arg, gi = run_max(x, g, geo)
    r_out, r_arg = ref.max_pool2d_forward(x, c[4], c[5], c[6], out_hw(c))
    np.testing.assert_array_equal(out, r_out.astype(dtype))
    np.testing.assert_array_equal(arg, r_arg)
    assert_close(gi, ref.max_pool2d_backward(g, r_arg, x.shape), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", CASES + PAR_CASES, ids=case_id)
def test_avg_pool_against_reference(c, dtype, rng):
    x, g, geo = make(c, dtype, rng)
    out, gi = run_avg(x, g, geo)
    assert_close(out, ref.avg_pool2d_forward(x, c[4], c[5], c[6], out_hw(c)), dtype)
    assert_close(gi, ref.avg_pool2d_backward(g, x.shape, c[4], c[5], c[6]), dtype)


def test_cases_cover_serial_and_parallel():
    assert all(c[0] * c[1] * c[2] * c[3] < P._PARALLEL_MIN_SIZE for c in CASES)
    assert all(c[0] * c[1] * c[2] * c[3] >= P._PARALLEL_MIN_SIZE for c in PAR_CASES)


def test_max_pool_ties_and_infinities():
    """Ties go to the first cell in row-major window order; -inf inputs still give a valid argmax."""
    x = np.array([[[[1.0, 1.0, -np.inf, -np.inf],
                    [1.0, 0.0, -np.inf, -np.inf]]]])
    out = poisoned((1, 1, 1, 2), np.float64)
    arg = np.full((1, 1, 1, 2), -7, np.int64)
    P.max_pool2d_forward(x, 2, 2, 2, 2, 0, 0, out, arg)
    assert out.tolist() == [[[[1.0, -np.inf]]]]
    assert arg.tolist() == [[[[0, 2]]]]


def test_max_pool_nan_propagates():
    x = np.array([[[[1.0, np.nan], [3.0, 2.0]]]])
    out = poisoned((1, 1, 1, 1), np.float64)
    arg = np.full((1, 1, 1, 1), -7, np.int64)
    P.max_pool2d_forward(x, 2, 2, 2, 2, 0, 0, out, arg)
    assert np.isnan(out[0, 0, 0, 0]) and arg[0, 0, 0, 0] == 1


GRAD_CASES = [CASES[1], CASES[3], CASES[4], CASES[5], CASES[7]]


@pytest.mark.parametrize("c", GRAD_CASES, ids=case_id)
def test_backward_finite_differences(c, rng):
    """d sum(pool(x) * g) / dx by central differences (distinct values keep max differentiable)."""
    _, g, geo = make(c, np.float64, rng)
    size = int(np.prod(c[:4]))
    x = rng.permutation(size).reshape(c[:4]) / size      # gaps 1/size >> eps: no ties

    def f_max():
        out, _, _ = run_max(x, g, geo)
        return np.sum(out * g)

    def f_avg():
        out, _ = run_avg(x, g, geo)
        return np.sum(out * g)
    _, _, gi_max = run_max(x, g, geo)
    assert_gradients_close(gi_max, numeric_gradient(f_max, x), "max_pool input", 1e-6, 1e-8)
    _, gi_avg = run_avg(x, g, geo)
    assert_gradients_close(gi_avg, numeric_gradient(f_avg, x), "avg_pool input", 1e-6, 1e-8)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", [cc for cc in CASES if cc[7] is None] + PAR_CASES[:1], ids=case_id)
def test_against_torch(c, dtype, rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x, g, geo = make(c, dtype, rng)
    pl, st, pd = c[4], c[5], c[6]
    if pd[0] > pl[0] // 2 or pd[1] > pl[1] // 2:
        pytest.skip("torch allows padding of at most half the window")
    tg = torch.tensor(g, dtype=torch.float64)
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    y, idx = F.max_pool2d(tx, pl, st, pd, return_indices=True)
    y.backward(tg)
    out, arg, gi = run_max(x, g, geo)
    np.testing.assert_array_equal(out, y.detach().numpy().astype(dtype))
    np.testing.assert_array_equal(arg, idx.numpy())
    assert_close(gi, tx.grad.numpy(), dtype)

    tx.grad = None
    y = F.avg_pool2d(tx, pl, st, pd, count_include_pad=False)
    y.backward(tg)
    out, gi = run_avg(x, g, geo)
    assert_close(out, y.detach().numpy(), dtype)
    assert_close(gi, tx.grad.numpy(), dtype)


# ---------------------------------------------------------------------------------------------
# global pooling over the rows of x (rows, cols)

# a single element, row or column, empty rows, small, one past the max forward's parallel limit
# only; then sizes for the prange paths of every kernel (a single row: one busy block of rows)
GLOBAL_SHAPES = [(1, 1), (1, 37), (23, 1), (3, 0), (7, 13), (9, 50), (300, 1000)]
GLOBAL_PAR_SHAPES = [(1100, 1000), (1, 1 << 20)]


def run_global(x, g):
    """All four global pooling kernels on poisoned outputs: (avg out, avg grad_in, max out,
    argmax, max grad_in)."""
    rows = x.shape[0]
    avg, gi_avg = poisoned(rows, x.dtype), poisoned(x.shape, x.dtype)
    P.global_avg_pool_forward(x, avg)
    P.global_avg_pool_backward(g, gi_avg)
    mx, arg = poisoned(rows, x.dtype), np.full(rows, -7, np.int64)
    gi_max = poisoned(x.shape, x.dtype)
    P.global_max_pool_forward(x, mx, arg)
    P.global_max_pool_backward(g, arg, gi_max)
    return avg, gi_avg, mx, arg, gi_max


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", GLOBAL_SHAPES + GLOBAL_PAR_SHAPES, ids=str)
def test_global_pool_against_reference(shape, dtype, rng):
    x = global_pool_inputs(shape, dtype, rng)
    g = rng.standard_normal(shape[0]).astype(dtype)
    avg, gi_avg, mx, arg, gi_max = run_global(x, g)
    # (conftest's comparison: NaN and infinite means where the reference has them)
    conftest.assert_close(avg, ref.global_avg_pool_forward(x), dtype, "avg")
    conftest.assert_close(gi_avg, ref.global_avg_pool_backward(g, shape[1]), dtype, "avg grad")
    r_max, r_arg = ref.global_max_pool_forward(x)
    np.testing.assert_array_equal(mx, r_max.astype(dtype))
    np.testing.assert_array_equal(arg, r_arg)
    np.testing.assert_array_equal(gi_max, ref.global_max_pool_backward(g, r_arg, shape[1]))


def test_global_pool_cases_cover_both_paths_and_special_rows(rng):
    assert all(r * c < P._GLOBAL_PARALLEL_MIN for r, c in GLOBAL_SHAPES)
    assert any(r * c >= P._GLOBAL_MAX_PARALLEL_MIN for r, c in GLOBAL_SHAPES)
    assert all(r * c >= P._GLOBAL_PARALLEL_MIN >= P._GLOBAL_MAX_PARALLEL_MIN
               for r, c in GLOBAL_PAR_SHAPES)
    x = global_pool_inputs((7, 13), np.float64, rng)
    _, arg = ref.global_max_pool_forward(x)
    assert arg[:6].tolist() == [6, 1, 0, 12, 0, 2]    # first NaN, -inf, +inf, all equal, tie


def test_global_pool_float32_mean_is_summed_in_float64(rng):
    """1e4 + noise over 70000 columns: a float32 running sum would lose the noise's mean."""
    x = (1e4 + rng.standard_normal((2, 70000))).astype(np.float32)
    out = poisoned(2, np.float32)
    P.global_avg_pool_forward(x, out)
    assert_close(out, ref.global_avg_pool_forward(x), np.float32)


@pytest.mark.parametrize("shape", [(3, 5), (1, 1), (4, 1)])
def test_global_pool_backward_finite_differences(shape, rng):
    """d sum(pool(x) * g) / dx by central differences (distinct values: max differentiable)."""
    size = shape[0] * shape[1]
    x = rng.permutation(size).reshape(shape) / size
    g = rng.standard_normal(shape[0])

    def f(k):
        return lambda: np.sum(run_global(x, g)[k] * g)
    _, gi_avg, _, _, gi_max = run_global(x, g)
    assert_gradients_close(gi_avg, numeric_gradient(f(0), x), "global avg input", 1e-6, 1e-8)
    assert_gradients_close(gi_max, numeric_gradient(f(2), x), "global max input", 1e-6, 1e-8)


@pytest.mark.parametrize("dtype", DTYPES)
def test_global_pool_against_torch(dtype, rng):
    """torch.max over rows (first maximum, first NaN) and mean, values and gradients."""
    torch = pytest.importorskip("torch")
    x = global_pool_inputs((9, 50), dtype, rng)
    g = rng.standard_normal(9).astype(dtype)
    avg, gi_avg, mx, arg, gi_max = run_global(x, g)
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    values, indices = torch.max(tx, dim=1)
    values.backward(torch.tensor(g, dtype=torch.float64))
    np.testing.assert_array_equal(mx, values.detach().numpy().astype(dtype))
    np.testing.assert_array_equal(arg, indices.numpy())
    np.testing.assert_array_equal(gi_max, tx.grad.numpy().astype(dtype))
    tx.grad = None
    y = tx.mean(dim=1)
    y.backward(torch.tensor(g, dtype=torch.float64))
    conftest.assert_close(avg, y.detach().numpy(), dtype, "avg")
    conftest.assert_close(gi_avg, tx.grad.numpy(), dtype, "avg grad")
