"""CPU dense kernels against the float64 reference: one BLAS call for small products, row blocks
on Numba's threads for large ones; the weight gradient with accumulate off (poisoned outputs) and
on (added into previous contents), bit-identical on any thread count."""
import os

import numpy as np
import pytest
from conftest import accumulate_runs, accumulated, assert_close, poisoned

import reference as ref
from numbanet.kernels.cpu import activations as A
from numbanet.kernels.cpu import dense as D
from numbanet.kernels.scalar import ACTIVATION_CODES

DTYPES = [np.float32, np.float64]

# (N, I, U): small (one call), large (blocks), a single row, more threads than rows, the most
# row blocks.
SHAPES = [(3, 5, 7), (130, 131, 129), (1, 4100, 600), (2, 1100, 1000), (2050, 40, 30)]


def test_shapes_hit_both_paths():
    assert any(n * i * u < D._PARALLEL_MIN_WORK for n, i, u in SHAPES)
    assert sum(n * i * u >= D._PARALLEL_MIN_WORK for n, i, u in SHAPES) >= 3
    assert any(D._blocks(n, n * i * u) > 1 and D._blocks(i, n * i * u) > 1 for n, i, u in SHAPES)
    assert any(D._blocks(n, n * i * u) == D._ROW_BLOCKS for n, i, u in SHAPES)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_dense_kernels(shape, dtype, rng):
    n, i, u = shape
    x = rng.standard_normal((n, i)).astype(dtype)
    w = (rng.standard_normal((i, u)) / np.sqrt(i)).astype(dtype)
    b = rng.standard_normal(u).astype(dtype)
    g = rng.standard_normal((n, u)).astype(dtype)
    out = poisoned((n, u), dtype)
    D.dense_forward(x, w, b, out)
    assert_close(out, ref.dense_forward(x, w, b), dtype, "forward")
    gi = poisoned((n, i), dtype)
    D.dense_backward_input(g, w, gi)
    assert_close(gi, g.astype(np.float64) @ w.T.astype(np.float64), dtype, "backward input")
    off, prev, on = accumulate_runs(D.dense_backward_weight, (x, g),
                                    [((i, u), dtype), ((u,), dtype)], (0, 1), rng)
    want = ref.dense_backward_weight(x, g)
    for got, acc, w, p, what in zip(off, on, want, accumulated(prev, want), ("grad_w", "grad_b")):
        assert_close(got, w, dtype, what)
        assert_close(acc, p, dtype, f"{what} accumulated")


def test_same_result_on_any_thread_count(rng):
    """The split depends on the shape only: 1 and 2 threads give identical bits (the weight
    gradient stored and accumulated)."""
    import numba
    n, i, u = 130, 131, 129
    x, w, b = rng.standard_normal((n, i)), rng.standard_normal((i, u)), rng.standard_normal(u)
    g = rng.standard_normal((n, u))
    prev_w, prev_b = rng.standard_normal((i, u)), rng.standard_normal(u)
    results = []
    before = numba.get_num_threads()
    try:
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(threads)
            out, gi, gw, gb = np.empty((n, u)), np.empty((n, i)), np.empty((i, u)), np.empty(u)
            D.dense_forward(x, w, b, out)
            D.dense_backward_input(g, w, gi)
            D.dense_backward_weight(x, g, False, gw, gb)
            aw, ab = prev_w.copy(), prev_b.copy()
            D.dense_backward_weight(x, g, True, aw, ab)
            results.append((out, gi, gw, gb, aw, ab))
    finally:
        numba.set_num_threads(before)
    for a, c in zip(*results):
        np.testing.assert_array_equal(a, c)


def test_cpu_backend_runs_kernel_blas_single_threaded(monkeypatch):
    """The BLAS Numba's np.dot calls runs on one thread once the CPU backend exists (numbanet
    parallelizes around it); NUMBANET_BLAS_THREADS sets another count, or 'keep' leaves it."""
    from threadpoolctl import ThreadpoolController

    from numbanet.backend import get_backend, limit_kernel_blas_threads

    def threads():
        return {c.filepath: c.num_threads for c in ThreadpoolController().lib_controllers}

    changed = get_backend("cpu").blas_threads
    assert changed, "SciPy's BLAS was not found"
    assert all(threads()[path] == 1 for path, _ in changed)
    try:
        monkeypatch.setenv("NUMBANET_BLAS_THREADS", "2")
        assert [n for _, n in limit_kernel_blas_threads()] == [2] * len(changed)
        assert all(threads()[path] == 2 for path, _ in changed)
        monkeypatch.setenv("NUMBANET_BLAS_THREADS", "keep")
        assert limit_kernel_blas_threads() == []
        assert all(threads()[path] == 2 for path, _ in changed)
    finally:
        limit_kernel_blas_threads(1)


@pytest.mark.parametrize("setting", ["0", "-2", "two", "1.5", ""])
def test_bad_blas_thread_setting_is_a_clear_error(setting, monkeypatch):
    from numbanet.backend import limit_kernel_blas_threads
    monkeypatch.setenv("NUMBANET_BLAS_THREADS", setting)
    with pytest.raises(ValueError, match=f"NUMBANET_BLAS_THREADS must be a positive integer or "
                                         f"'keep', got '{setting}'"):
        limit_kernel_blas_threads()
    for n in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match=f"n must be a positive int, got {n!r}"):
            limit_kernel_blas_threads(n)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ACTIVATION_CODES)
def test_dense_forward_activation(name, dtype, rng):
    """pre = x @ w + b and out = activation(pre), for every activation code; the same bits as
    dense_forward followed by the activation's own kernel."""
    n, i, u = 9, 13, 11
    x = rng.standard_normal((n, i)).astype(dtype)
    w = rng.standard_normal((i, u)).astype(dtype)
    b = rng.standard_normal(u).astype(dtype)
    alpha = 0.3
    pre, out = poisoned((n, u), dtype), poisoned((n, u), dtype)
    D.dense_forward_activation(x, w, b, ACTIVATION_CODES.index(name), alpha, pre, out)
    want = ref.dense_forward(x, w, b)
    assert_close(pre, want, dtype, "pre-activation")
    assert_close(out, getattr(ref, f"{name}_forward")(pre.astype(np.float64), alpha), dtype,
                 "activation")
    z, y = poisoned((n, u), dtype), poisoned((n, u), dtype)
    D.dense_forward(x, w, b, z)
    getattr(A, f"{name}_forward")(z.reshape(-1), alpha, y.reshape(-1))
    np.testing.assert_array_equal(pre, z)
    np.testing.assert_array_equal(out, y)


@pytest.mark.parametrize("code", [-1, len(ACTIVATION_CODES), 1.0, True, None])
def test_dense_forward_activation_rejects_bad_codes(code):
    x, w, b = np.ones((2, 3)), np.ones((3, 4)), np.zeros(4)
    n = len(ACTIVATION_CODES)
    with pytest.raises(ValueError, match=rf"activation must be an int code in \[0, {n}\).*got"):
        D.dense_forward_activation(x, w, b, code, 0.0, np.empty((2, 4)), np.empty((2, 4)))


def test_dense_forward_activation_argument_checks():
    """Any integer type is a code; pre and out of different shapes are refused before any
    work (the activation would write past the smaller one)."""
    x, w, b = np.ones((2, 3)), np.ones((3, 4)), np.zeros(4)
    pre, out = poisoned((2, 4), np.float64), poisoned((2, 4), np.float64)
    D.dense_forward_activation(x, w, b, np.int64(ACTIVATION_CODES.index("relu")), 0.0, pre, out)
    np.testing.assert_array_equal(out, np.full((2, 4), 3.0))
    short = poisoned((1, 4), np.float64)
    with pytest.raises(ValueError, match=r"pre and out must have the same shape, got \(2, 4\) "
                                         r"and \(1, 4\)"):
        D.dense_forward_activation(x, w, b, 1, 0.0, pre, short)
    assert np.isnan(short).all()


def test_numba_pool_starts_with_a_short_spin():
    """The CPU backend starts Numba's OpenMP pool with GOMP_SPINCOUNT set only while libgomp
    loads (then removed from the environment), and leaves a policy the environment sets alone."""
    import subprocess
    import sys
    code = ("import os, numba, numbanet as nb\n"
            "from numbanet.kernels.cpu._threads import start_quiet_pool\n"
            "nb.backend.get_backend('cpu')\n"
            "print(numba.threading_layer(), 'GOMP_SPINCOUNT' in os.environ, start_quiet_pool())")
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "NUMBA_THREADING_LAYER")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    layer, leaked, again = out.stdout.split()
    assert (leaked, again) == ("False", "False")
    if layer == "omp":
        probe = ("from numbanet.kernels.cpu._threads import start_quiet_pool\n"
                 "print(start_quiet_pool())")
        for extra, want in (({}, "True"), ({"OMP_WAIT_POLICY": "ACTIVE"}, "False")):
            got = subprocess.run([sys.executable, "-c", probe], env=dict(env, **extra),
                                 capture_output=True, text=True, timeout=120)
            assert got.returncode == 0, got.stderr
            assert got.stdout.split()[-1] == want


def test_cpu_backend_keeps_freed_memory_on_glibc():
    """On glibc the CPU backend raises malloc's mmap and trim thresholds (a training step's
    arrays are not page-faulted in again every step), unless the environment sets them or
    NUMBANET_MALLOC=keep."""
    import platform
    import subprocess
    import sys
    code = "import numbanet as nb; print(nb.backend.get_backend('cpu').malloc_tuned)"
    base = {k: v for k, v in os.environ.items()
            if k not in ("NUMBANET_MALLOC", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")}
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    for extra, want in (({}, glibc), ({"NUMBANET_MALLOC": "keep"}, False),
                        ({"MALLOC_TRIM_THRESHOLD_": "131072"}, False)):
        out = subprocess.run([sys.executable, "-c", code], env=dict(base, **extra),
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split()[-1] == str(want), extra
