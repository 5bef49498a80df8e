"""Optimizer update kernels (kernels/cpu/optim.py) against the float64 NumPy references.

Sizes cover 1, odd and a size past the prange threshold (``_PAR_MIN``) so both loops run.
"""
import numpy as np
import pytest

import reference as ref
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
