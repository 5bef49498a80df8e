"""CPU elementwise kernels: dropout, sum_squares, scale (reference, finite differences, in place)."""
import math

import numpy as np
import pytest
from conftest import poisoned

import reference as ref
from numbanet.backend import kernel_names
from numbanet.kernels.cpu import elementwise as E
from numbanet.testing import gradcheck

DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 2e-7, np.float64: 1e-15}
SIZES = [1, 7, 10001, E._PAR_MIN + 3]


def test_public_names_match_the_contract():
    assert kernel_names(E) == ["dropout_backward", "dropout_forward", "scale", "sum_squares"]


def dropout(x, u, rate):
    out, mask = poisoned(x.shape, x.dtype), poisoned(x.shape, x.dtype)
    E.dropout_forward(x, u, rate, out, mask)
    return out, mask


@pytest.mark.parametrize("rate", [0.0, 0.3, 0.9])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", SIZES)
def test_dropout_matches_reference(size, dtype, rate, rng):
    x = rng.standard_normal(size).astype(dtype)
    u = rng.random(size, dtype=dtype)
    out, mask = dropout(x, u, rate)
    rout, rmask = ref.dropout_forward(x, u, rate)
    np.testing.assert_allclose(mask, rmask, rtol=RTOL[dtype], atol=0)
    np.testing.assert_allclose(out, rout, rtol=2 * RTOL[dtype], atol=0)
    np.testing.assert_array_equal(mask == 0, u < rate)
    np.testing.assert_array_equal(out, x * mask)      # exactly x * mask in the array dtype
    g = rng.standard_normal(size).astype(dtype)
    gi = poisoned(size, dtype)
    E.dropout_backward(g, mask, gi)
    np.testing.assert_allclose(gi, ref.dropout_backward(g, mask), rtol=RTOL[dtype], atol=0)


def test_dropout_rate_one_drops_everything(rng):
    x = rng.standard_normal(9)
    out, mask = dropout(x, rng.random(9), 1.0)
    assert np.all(mask == 0) and np.all(out == 0)


def test_dropout_keeps_the_expected_fraction(rng):
    u = rng.random(100000)
    out, mask = dropout(np.ones(100000), u, 0.25)
    assert abs(np.mean(mask > 0) - 0.75) < 0.01
    assert abs(np.mean(out) - 1.0) < 0.02             # inverted dropout keeps the mean


@pytest.mark.parametrize("size", [1, 7, 31])
def test_dropout_backward_matches_finite_differences(size, rng):
    u = rng.random(size)
    g = rng.standard_normal(size)

    def f(x):
        return np.sum(dropout(x, u, 0.4)[0] * g)

    def grad_f(x):
        gi = poisoned(size, np.float64)
        E.dropout_backward(g, dropout(x, u, 0.4)[1], gi)
        return [gi]
    gradcheck((f, grad_f), rng.standard_normal(size))


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_in_place(dtype, rng):
    x = rng.standard_normal(101).astype(dtype)
    u = rng.random(101, dtype=dtype)
    out, mask = dropout(x, u, 0.5)
    xa, ua = x.copy(), u.copy()
    E.dropout_forward(xa, ua, 0.5, xa, ua)            # out is x, mask is u
    np.testing.assert_array_equal(xa, out)
    np.testing.assert_array_equal(ua, mask)
    g = rng.standard_normal(101).astype(dtype)
    ga = g.copy()
    E.dropout_backward(ga, mask, ga)
    np.testing.assert_array_equal(ga, g * mask)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", SIZES)
def test_sum_squares_matches_reference(size, dtype, rng):
    x = (3.0 * rng.standard_normal(size)).astype(dtype)
    out = poisoned((1,), dtype)
    E.sum_squares(x, out)
    np.testing.assert_allclose(out, [ref.sum_squares(x)], rtol=2 * RTOL[dtype] if dtype == np.float32
                               else 1e-13, atol=0)


def test_sum_squares_accumulates_in_float64(rng):
    """float32 data whose float32 running sum would be off by far more than one rounding."""
    x = np.concatenate([np.full(10**6, 1e-2), [1e3], rng.standard_normal(999)]).astype(np.float32)
    out = poisoned((1,), np.float32)
    E.sum_squares(x, out)
    exact = math.fsum(float(v) ** 2 for v in x)
    assert abs(float(out[0]) - exact) <= 6e-8 * exact
    out64 = poisoned((1,), np.float64)
    x64 = x.astype(np.float64)
    E.sum_squares(x64, out64)
    assert abs(out64[0] - exact) <= 1e-14 * exact


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", SIZES)
def test_scale_matches_reference_and_in_place(size, dtype, rng):
    x = rng.standard_normal(size).astype(dtype)
    out = poisoned(size, dtype)
    E.scale(x, -0.37, out)
    np.testing.assert_allclose(out, ref.scale(x, -0.37), rtol=RTOL[dtype], atol=0)
    xa = x.copy()
    E.scale(xa, -0.37, xa)
    np.testing.assert_array_equal(xa, out)


def test_sum_squares_squares_in_float64():
    """float32 inputs are widened before squaring (numba keeps float(x) of a float32 in float32)."""
    from numbanet.kernels.cpu.elementwise import sum_squares
    x = np.full(3, 1.0000001, np.float32)
    out = np.zeros(1, np.float64)
    sum_squares(x, out)
    assert out[0] == 3 * np.float64(x[0]) ** 2
