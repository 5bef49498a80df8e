"""Optimizer update kernels (kernels/cpu/optim.py) against the float64 NumPy references.

Sizes cover 1, odd and a size past the prange threshold (``_PAR_MIN``) so both loops run.
"""
import inspect

import numpy as np
import pytest

import reference as ref
from conftest import poisoned
from numbanet.kernels import scalar
from numbanet.kernels.cpu import optim

SIZES = (1, 7, 1000, optim._PAR_MIN + 3)
DTYPES = (np.float32, np.float64)
RTOL = {np.float32: 2e-6, np.float64: 1e-12}


def _arrays(rng, n, dtype, k):
    """``k`` random arrays: param, grad, then non-negative state (second moments must be >= 0)."""
    p = rng.standard_normal(n).astype(dtype)
    g = rng.standard_normal(n).astype(dtype)
    state = [rng.random(n).astype(dtype) for _ in range(k)]
    return [p, g] + state


def _close(got, want, dtype, what):
    want = np.asarray(want, dtype=np.float64)
    scale = max(np.abs(want).max(), 1e-30)
    err = np.abs(got.astype(np.float64) - want).max() / scale
    assert err <= RTOL[dtype], f"{what}: max error {err:.3g} relative to magnitude {scale:.3g}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("momentum,nesterov,weight_decay",
                         [(0.0, False, 0.0), (0.9, False, 0.0), (0.9, True, 1e-2), (0.0, False, 0.1)])
def test_sgd_update(rng, n, dtype, momentum, nesterov, weight_decay):
    p, g, vel = _arrays(rng, n, dtype, 1)
    want_p, want_v = ref.sgd_update(p, g, vel, 0.05, momentum, weight_decay, nesterov)
    optim.sgd_update(p, g, vel, 0.05, momentum, weight_decay, nesterov)
    _close(p, want_p, dtype, "param")
    _close(vel, want_v, dtype, "velocity")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_adagrad_update(rng, n, dtype, weight_decay):
    p, g, acc = _arrays(rng, n, dtype, 1)
    want_p, want_acc = ref.adagrad_update(p, g, acc, 0.1, 1e-7, weight_decay)
    optim.adagrad_update(p, g, acc, 0.1, 1e-7, weight_decay)
    _close(p, want_p, dtype, "param")
    _close(acc, want_acc, dtype, "accum")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("momentum,centered,weight_decay",
                         [(0.0, False, 0.0), (0.9, False, 0.0), (0.0, True, 0.0), (0.5, True, 0.01)])
def test_rmsprop_update(rng, n, dtype, momentum, centered, weight_decay):
    p, g, sa, ga, buf = _arrays(rng, n, dtype, 3)
    ga[...] = 0.5 * np.sqrt(sa) * np.sign(g)           # a reachable state: grad_avg^2 <= square_avg
    want = ref.rmsprop_update(p, g, sa, ga, buf, 0.01, 0.9, 1e-7, weight_decay, momentum, centered)
    optim.rmsprop_update(p, g, sa, ga, buf, 0.01, 0.9, 1e-7, weight_decay, momentum, centered)
    for got, w, what in zip((p, sa, ga, buf), want, ("param", "square_avg", "grad_avg", "momentum_buf")):
        _close(got, w, dtype, what)


@pytest.mark.parametrize("kernel", ["adam_update", "adamw_update"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("amsgrad,weight_decay", [(False, 0.0), (True, 0.0), (False, 0.1), (True, 0.1)])
def test_adam_updates(rng, kernel, n, dtype, amsgrad, weight_decay):
    p, g, m, v, vmax = _arrays(rng, n, dtype, 3)
    for step in (1, 2, 10):                           # bias corrections change with the step
        g = rng.standard_normal(n).astype(dtype)
        want = getattr(ref, kernel)(p, g, m, v, vmax, 1e-2, 0.9, 0.999, 1e-7, weight_decay, amsgrad, step)
        getattr(optim, kernel)(p, g, m, v, vmax, 1e-2, 0.9, 0.999, 1e-7, weight_decay, amsgrad, step)
        for got, w, what in zip((p, m, v, vmax), want, ("param", "m", "v", "vmax")):
            _close(got, w, dtype, f"{what} at step {step}")
            got[...] = w                              # next step starts from the exact reference


@pytest.mark.parametrize("n", [5, optim._PAR_MIN + 1])
def test_unused_buffers_untouched(n):
    """State buffers a configuration does not use are neither read nor written (NaN stays NaN)."""
    rng = np.random.default_rng(0)
    p, g = rng.standard_normal(n), rng.standard_normal(n)
    nan = lambda: np.full(n, np.nan)                  # noqa: E731
    q, unused = p.copy(), nan()
    optim.sgd_update(q, g, unused, 0.1, 0.0, 0.0, False)
    assert np.isfinite(q).all() and np.isnan(unused).all()
    q, ga, buf = p.copy(), nan(), nan()
    optim.rmsprop_update(q, g, np.ones(n), ga, buf, 0.1, 0.9, 1e-7, 0.0, 0.0, False)
    assert np.isfinite(q).all() and np.isnan(ga).all() and np.isnan(buf).all()
    for kernel in (optim.adam_update, optim.adamw_update):
        q, vmax = p.copy(), nan()
        kernel(q, g, np.zeros(n), np.zeros(n), vmax, 0.1, 0.9, 0.999, 1e-7, 0.01, False, 1)
        assert np.isfinite(q).all() and np.isnan(vmax).all()
    # empty placeholders are accepted for unused buffers
    empty = np.zeros(0)
    optim.sgd_update(p.copy(), g, empty, 0.1, 0.0, 0.0, False)
    optim.rmsprop_update(p.copy(), g, np.ones(n), empty, empty, 0.1, 0.9, 1e-7, 0.0, 0.0, False)
    optim.adam_update(p.copy(), g, np.zeros(n), np.zeros(n), empty, 0.1, 0.9, 0.999, 1e-7, 0.0, False, 1)


def test_size_mismatch_raises():
    p, short = np.zeros(4), np.zeros(3)
    with pytest.raises(ValueError, match="sgd_update"):
        optim.sgd_update(p, short, p.copy(), 0.1, 0.9, 0.0, False)
    with pytest.raises(ValueError, match="sgd_update"):
        optim.sgd_update(p, p.copy(), short, 0.1, 0.9, 0.0, False)
    with pytest.raises(ValueError, match="adagrad_update"):
        optim.adagrad_update(p, p.copy(), short, 0.1, 1e-7, 0.0)
    with pytest.raises(ValueError, match="rmsprop_update"):
        optim.rmsprop_update(p, p.copy(), p.copy(), short, p.copy(), 0.1, 0.9, 1e-7, 0.0, 0.0, True)
    with pytest.raises(ValueError, match="adam"):
        optim.adam_update(p, p.copy(), p.copy(), p.copy(), short, 0.1, 0.9, 0.999, 1e-7, 0.0, True, 1)


def test_centered_rmsprop_never_takes_sqrt_of_negative():
    """Constant gradients make square_avg - grad_avg^2 round to <= 0; the update stays finite."""
    g = np.linspace(0.05, 2.0, 40)                    # several of these round below zero
    n = g.size
    p = np.zeros(n)
    sa, ga, buf = np.zeros(n), np.zeros(n), np.zeros(0)
    for _ in range(2000):
        optim.rmsprop_update(p, g, sa, ga, buf, 1e-3, 0.5, 1e-7, 0.0, 0.0, True)
    assert np.isfinite(p).all()


# ------------------------------------------------------------------------------ newer optimizers
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_adadelta_update(rng, n, dtype, weight_decay):
    p, g, sa, ad = _arrays(rng, n, dtype, 2)
    for step in range(3):
        g = rng.standard_normal(n).astype(dtype)
        want = ref.adadelta_update(p, g, sa, ad, 0.5, 0.9, 1e-6, weight_decay)
        optim.adadelta_update(p, g, sa, ad, 0.5, 0.9, 1e-6, weight_decay)
        for got, w, what in zip((p, sa, ad), want, ("param", "square_avg", "acc_delta")):
            _close(got, w, dtype, f"{what} at call {step}")
            got[...] = w


def _nadam_schedule(beta1, momentum_decay, steps):
    """(step, mu, mu_next, mu_product) as torch's NAdam computes them."""
    mu_product = 1.0
    for step in range(1, steps + 1):
        mu = beta1 * (1 - 0.5 * 0.96 ** (step * momentum_decay))
        mu_product *= mu
        yield step, mu, beta1 * (1 - 0.5 * 0.96 ** ((step + 1) * momentum_decay)), mu_product


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_nadam_update(rng, n, dtype, weight_decay):
    p, g, m, v = _arrays(rng, n, dtype, 2)
    for step, mu, mu_next, mu_product in _nadam_schedule(0.9, 4e-3, 3):
        g = rng.standard_normal(n).astype(dtype)
        args = (1e-2, 0.9, 0.999, 1e-7, weight_decay, mu, mu_next, mu_product, step)
        want = ref.nadam_update(p, g, m, v, *args)
        optim.nadam_update(p, g, m, v, *args)
        for got, w, what in zip((p, m, v), want, ("param", "m", "v")):
            _close(got, w, dtype, f"{what} at step {step}")
            got[...] = w


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adamax_update(rng, n, dtype, weight_decay):
    p, g, m, u = _arrays(rng, n, dtype, 2)
    for step in (1, 2, 10):
        g = rng.standard_normal(n).astype(dtype)
        g[: n // 3] *= 1e-3                         # some |g| + eps below beta2 * u, some above
        want = ref.adamax_update(p, g, m, u, 1e-2, 0.9, 0.999, 1e-7, weight_decay, step)
        optim.adamax_update(p, g, m, u, 1e-2, 0.9, 0.999, 1e-7, weight_decay, step)
        for got, w, what in zip((p, m, u), want, ("param", "m", "u")):
            _close(got, w, dtype, f"{what} at step {step}")
            got[...] = w


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_radam_update(rng, n, dtype, weight_decay):
    """Steps 1-5 take the unrectified branch (rho_t <= 5 for beta2 = 0.999), later ones the other."""
    p, g, m, v = _arrays(rng, n, dtype, 2)
    for step in (1, 5, 6, 7, 100):
        g = rng.standard_normal(n).astype(dtype)
        want = ref.radam_update(p, g, m, v, 1e-2, 0.9, 0.999, 1e-7, weight_decay, step)
        optim.radam_update(p, g, m, v, 1e-2, 0.9, 0.999, 1e-7, weight_decay, step)
        for got, w, what in zip((p, m, v), want, ("param", "m", "v")):
            _close(got, w, dtype, f"{what} at step {step}")
            got[...] = w


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("amsbound,weight_decay", [(False, 0.0), (True, 0.0), (True, 0.1)])
def test_adabound_update(rng, n, dtype, amsbound, weight_decay):
    p, g, m, v, vmax = _arrays(rng, n, dtype, 3)
    v *= 1e-4                                        # rates on both sides of the bounds
    for step in (1, 2, 50, 5000):
        g = rng.standard_normal(n).astype(dtype)
        args = (1e-2, 0.9, 0.999, 1e-8, weight_decay, 0.1, 1e-3, amsbound, step)
        want = ref.adabound_update(p, g, m, v, vmax, *args)
        optim.adabound_update(p, g, m, v, vmax, *args)
        for got, w, what in zip((p, m, v, vmax), want, ("param", "m", "v", "vmax")):
            _close(got, w, dtype, f"{what} at step {step}")
            got[...] = w


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_lion_update(rng, n, dtype, weight_decay):
    p, g, m = _arrays(rng, n, dtype, 1)
    m -= 0.5                                         # both signs of the interpolated momentum
    for step in range(1, 4):
        g = rng.standard_normal(n).astype(dtype)
        g[:2] = 0.0                                  # with m below: sign(0) = 0
        m[:1] = 0.0
        want = ref.lion_update(p, g, m, 1e-2, 0.9, 0.99, weight_decay)
        optim.lion_update(p, g, m, 1e-2, 0.9, 0.99, weight_decay)
        for got, w, what in zip((p, m), want, ("param", "m")):
            _close(got, w, dtype, f"{what} at step {step}")
            got[...] = w


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_lookahead_update(rng, n, dtype):
    slow, fast = _arrays(rng, n, dtype, 0)
    want_slow, want_fast = ref.lookahead_update(slow, fast, 0.3)
    optim.lookahead_update(slow, fast, 0.3)
    _close(slow, want_slow, dtype, "slow")
    _close(fast, want_fast, dtype, "fast")
    np.testing.assert_array_equal(slow, fast)


# ------------------------------------------------------------------------------ L-BFGS vector helpers
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", (0,) + SIZES)
def test_vector_helpers(rng, n, dtype):
    x, y = _arrays(rng, n, dtype, 0)
    for name, args in (("dot", (x, y)), ("abs_sum", (x,)), ("abs_max", (x,))):
        out = poisoned((1,), dtype)
        getattr(optim, name)(*args, out)
        want = getattr(ref, name)(*args)
        err = abs(float(out[0]) - want[0]) / max(abs(want[0]), 1e-30)
        assert err <= RTOL[dtype] or (n == 0 and out[0] == 0), f"{name}: {out[0]} vs {want[0]}"
    want = ref.axpy(-0.7, x, y)
    optim.axpy(-0.7, x, y)
    if n:
        _close(y, want, dtype, "axpy")


@pytest.mark.parametrize("n", [9, optim._PAR_MIN + 5])
def test_abs_max_nan_and_sign(n):
    x = -np.arange(n, dtype=np.float64)             # the largest magnitude is negative
    out = np.zeros(1)
    optim.abs_max(x, out)
    assert out[0] == n - 1
    for where in (0, n // 2, n - 1):
        z = x.copy()
        z[where] = np.nan
        optim.abs_max(z, out)
        assert np.isnan(out[0]), where


def test_new_kernels_size_checks_and_unused_vmax():
    p, short, nan = np.zeros(4), np.zeros(3), np.full(4, np.nan)
    with pytest.raises(ValueError, match="adadelta_update"):
        optim.adadelta_update(p, p.copy(), short, p.copy(), 1.0, 0.9, 1e-6, 0.0)
    with pytest.raises(ValueError, match="nadam_update"):
        optim.nadam_update(p, p.copy(), p.copy(), short, 1e-3, 0.9, 0.999, 1e-7, 0.0, 0.5, 0.5, 0.5, 1)
    with pytest.raises(ValueError, match="adamax_update"):
        optim.adamax_update(p, short, p.copy(), p.copy(), 1e-3, 0.9, 0.999, 1e-7, 0.0, 1)
    with pytest.raises(ValueError, match="radam_update"):
        optim.radam_update(p, p.copy(), short, p.copy(), 1e-3, 0.9, 0.999, 1e-7, 0.0, 1)
    with pytest.raises(ValueError, match="adabound_update"):
        optim.adabound_update(p, p.copy(), p.copy(), p.copy(), short, 1e-3, 0.9, 0.999, 1e-8, 0.0,
                              0.1, 1e-3, True, 1)
    with pytest.raises(ValueError, match="lookahead_update"):
        optim.lookahead_update(p, short, 0.5)
    with pytest.raises(ValueError, match="dot"):
        optim.dot(p, short, np.zeros(1))
    with pytest.raises(ValueError, match="axpy"):
        optim.axpy(1.0, p, short)
    # AdaBound without amsbound never touches vmax (and accepts an empty one)
    q = np.ones(4)
    optim.adabound_update(q, np.ones(4), np.zeros(4), np.zeros(4), nan, 1e-3, 0.9, 0.999, 1e-8,
                          0.0, 0.1, 1e-3, False, 1)
    assert np.isfinite(q).all() and np.isnan(nan).all()
    optim.adabound_update(q, np.ones(4), np.zeros(4), np.zeros(4), np.zeros(0), 1e-3, 0.9, 0.999,
                          1e-8, 0.0, 0.1, 1e-3, False, 1)


@pytest.mark.parametrize("row", scalar.UPDATES, ids=lambda row: row.name)
def test_table_kernels_take_their_rows_arguments_and_check_sizes(row):
    """The kernel generated from each row of scalar.UPDATES takes (param, grad, *slots, *hyper)
    and refuses a buffer of another size than param's, naming itself (hyperparameters 0.5 and
    flags true: every slot of ``when`` is in use)."""
    kernel = getattr(optim, f"_{row.name}_loop" if row.shared_by else f"{row.name}_update")
    params = inspect.signature(kernel).parameters
    assert list(params) == ["param", "grad", *row.slots, *row.hyper]
    hyper = [True if h in row.flags else 0.5 for h in row.hyper]
    name = row.shared_by[0] if row.shared_by else f"{row.name}_update"
    for k in range(1, 2 + len(row.slots)):
        buffers = [np.ones(4) for _ in range(2 + len(row.slots))]
        buffers[k] = np.ones(3)
        with pytest.raises(ValueError, match=name):
            kernel(*buffers, *hyper)


@pytest.mark.parametrize("n", [1000, optim._PAR_MIN + 7])
def test_reductions_of_float32_accumulate_in_float64(rng, n):
    """Products and sums of float32 inputs in float64 (checked through a float64 ``out``, which
    the CPU kernels accept): as exact as the float64 reference, not float32 products."""
    x, y = (rng.standard_normal(n).astype(np.float32) for _ in range(2))
    out = np.zeros(1)
    optim.dot(x, y, out)
    exact = np.dot(x.astype(np.float64), y.astype(np.float64))
    assert abs(out[0] - exact) <= 1e-13 * np.abs(x.astype(np.float64) * y).sum()
    optim.abs_sum(x, out)
    assert abs(out[0] - np.abs(x.astype(np.float64)).sum()) <= 1e-13 * out[0]
