import os

# CUDA kernels run in Numba's simulator unless a real GPU run is asked for; this must happen
# before numba is first imported. CPU (@njit) kernels are unaffected by the simulator.
if os.environ.get("NUMBANET_TEST_REAL_CUDA", "0") != "1":
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

# fit's compile helper (a second process compiling kernels on a cold cache) only where a test
# asks for it: tests/test_compile_helper.py
os.environ.setdefault("NUMBANET_COMPILE_HELPER", "0")

import numpy as np
import pytest


@pytest.fixture
def rng():
    """A fresh generator per test (seeded from the test's id, so failures reproduce)."""
    import zlib
    seed = zlib.crc32(os.environ.get("PYTEST_CURRENT_TEST", "").encode())
    return np.random.default_rng(seed)


def poisoned(shape, dtype):
    """An output buffer filled with NaN, so an element a kernel forgot to write fails the test."""
    return np.full(shape, np.nan, dtype=dtype)


def blank(shape, dtype):
    """A poisoned output: NaN for floats, -7 for integers."""
    if np.issubdtype(dtype, np.integer):
        return np.full(shape, -7, dtype=dtype)
    return poisoned(shape, dtype)


def assert_close(got, want, dtype, what=""):
    """Relative to the magnitude of ``want``: float64 ~1e-10, float32 ~1e-5; NaN only where
    ``want`` has NaN (a NaN elsewhere is an element a kernel did not write)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, what
    assert not np.isnan(got).any() or np.array_equal(np.isnan(got), np.isnan(want)), \
        f"{what}: unwritten (NaN) elements"
    big = max(1.0, float(np.max(np.abs(want[np.isfinite(want)]), initial=0.0)))
    rtol, atol = (1e-10, 1e-12 * big) if dtype == np.float64 else (2e-5, 2e-6 * big)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=what)


def assert_sgd_step_like_torch(model, x, y, out, weights):
    """One ``train_on_batch`` of ``model`` with SGD(1.0) on the mean squared error equals
    torch's: the loss of ``out`` (torch's output computed from ``weights``, tensors that
    require grad, in ``model.get_weights()``'s order) and every weight minus its gradient."""
    import torch
    import numbanet as nb
    tloss = torch.nn.functional.mse_loss(out, torch.tensor(y))
    tloss.backward()
    model.compile(nb.optimizers.SGD(1.0), "mse")
    assert model.train_on_batch(x, y) == pytest.approx(tloss.item(), rel=1e-12)
    for got, t in zip(model.get_weights(), weights):
        np.testing.assert_allclose(got, (t - t.grad).detach().numpy(), rtol=1e-10, atol=1e-12)


def dev(a):
    """A host array on the device (numba.cuda: the simulator unless a real GPU run is asked)."""
    from numba import cuda
    return cuda.to_device(np.ascontiguousarray(a))


def _initial(out):
    """A fresh output buffer: poisoned for a (shape, dtype) pair, a copy of an array's contents."""
    return out.copy() if isinstance(out, np.ndarray) else blank(*out)


def run_pair(mod, name, args, outs):
    """Run kernels.cpu.<mod>.<name> and kernels.cuda.<mod>.<name> on the same inputs ``args``
    (arrays or scalars, in order) with outputs ``outs`` appended: fresh poisoned ones for
    (shape, dtype) pairs, copies for arrays (previous contents, for kernels that add into their
    outputs); returns (cpu outputs, cuda outputs) as host arrays."""
    import importlib
    cpu = importlib.import_module(f"numbanet.kernels.cpu.{mod}")
    gpu = importlib.import_module(f"numbanet.kernels.cuda.{mod}")
    c_outs = [_initial(o) for o in outs]
    getattr(cpu, name)(*[a.copy() if isinstance(a, np.ndarray) else a for a in args], *c_outs)
    g_outs = [dev(_initial(o)) for o in outs]
    getattr(gpu, name)(*[dev(a) if isinstance(a, np.ndarray) else a for a in args], *g_outs)
    return c_outs, [g.copy_to_host() for g in g_outs]


def accumulate_runs(fn, args, outs, params, rng):
    """A parameter-gradient kernel ``fn(*args, accumulate, *outputs)`` run twice: accumulate off
    into poisoned outputs, then on into outputs where ``params`` (indices into ``outs``, a list of
    (shape, dtype)) hold random previous contents and the others (input gradients, always
    overwritten) are poisoned. Returns (outputs off, previous contents, outputs on); the previous
    contents are None for the outputs not in ``params``."""
    off = [poisoned(s, d) for s, d in outs]
    fn(*args, False, *off)
    prev = [rng.standard_normal(s).astype(d) if k in params else None
            for k, (s, d) in enumerate(outs)]
    on = [poisoned(s, d) if p is None else p.copy() for p, (s, d) in zip(prev, outs)]
    fn(*args, True, *on)
    return off, prev, on


def accumulated(prev, want):
    """What an accumulating run should give: ``prev + want`` in float64 (``want`` where ``prev``
    is None: an overwritten output)."""
    return [np.asarray(w, np.float64) + (0.0 if p is None else np.asarray(p, np.float64))
            for p, w in zip(prev, want)]


def global_pool_inputs(shape, dtype, rng):
    """A global pooling input (rows, cols): random rows, every other one rounded to integers
    (ties likely); with at least 6 rows and 5 columns, special rows: one NaN, two NaNs, all -inf,
    a +inf after a tie, all equal, a tie of the maximum (first maxima at columns cols // 2, 1, 0,
    cols - 1, 0 and 2)."""
    rows, cols = shape
    x = 2.0 * rng.standard_normal(shape)
    x[::2] = np.round(x[::2])
    if rows >= 6 and cols >= 5:
        x[0, cols // 2] = np.nan
        x[1, [1, cols - 1]] = np.nan
        x[2] = -np.inf
        x[3, :2] = 9.0
        x[3, cols - 1] = np.inf
        x[4] = 1.5
        x[5, [2, cols - 2]] = 20.0
    return x.astype(dtype)


@pytest.fixture
def allow_cuda(monkeypatch):
    """Skip unless the CUDA backend can run here (Numba's simulator counts, in tests)."""
    from numbanet import _cuda
    if _cuda.is_simulator():
        monkeypatch.setenv("NUMBANET_ALLOW_CUDASIM", "1")
    if not _cuda.is_available():
        pytest.skip(_cuda.unavailable_reason())
