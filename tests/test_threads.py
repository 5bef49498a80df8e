"""kernels/cpu/_threads.py: split_parallel compiles its serial copy for calls below the threshold
and its parallel copy only at the first call from the threshold on, both giving the reference
result, without numba warnings, and every signature of the serial copy is a plain vectorized loop;
run() covers every unit exactly once."""
import warnings

import numba
import numpy as np
import pytest
from numba import njit, prange

from numbanet.kernels.cpu import _threads

PAR_MIN = 64


@njit(inline="always")
def _axpy_at(i, a, x, y):
    y[i] += a * x[i]


def _axpy(a, x, y):
    for i in prange(x.size):
        _axpy_at(i, a, x, y)


def _total(x, out):
    s = 0.0
    for i in prange(x.size):
        s += x[i]
    out[0] = s


def test_split_parallel_compiles_each_copy_at_its_first_call_without_warnings():
    axpy = _threads.split_parallel(_axpy, "axpy_probe", 1, PAR_MIN)
    total = _threads.split_parallel(_total, "total_probe", lambda x, out: x.size, PAR_MIN)
    assert axpy.__name__ == "axpy_probe" and not axpy.serial.signatures
    rng = np.random.default_rng()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for n, copies in ((PAR_MIN - 1, (1, 0)), (0, (1, 0)), (PAR_MIN, (1, 1)),
                          (5 * PAR_MIN, (1, 1))):
            x, y = rng.standard_normal(n), rng.standard_normal(n)
            expect = y + 2.5 * x
            axpy(2.5, x, y)
            np.testing.assert_allclose(y, expect, rtol=1e-15, atol=0)
            out = np.full(1, np.nan)
            total(x, out)
            np.testing.assert_allclose(out[0], x.sum(), rtol=1e-12, atol=1e-12)
            assert (len(axpy.serial.signatures), len(axpy.parallel.signatures)) == copies
            assert (len(total.serial.signatures), len(total.parallel.signatures)) == copies
    numba_warnings = [w for w in caught if issubclass(w.category, numba.NumbaWarning)]
    assert numba_warnings == []


def test_serial_copy_is_a_vectorized_loop_for_every_signature(tmp_path, monkeypatch):
    """The serial copy goes through numba's parallel pipeline with every transformation off, so
    the loop over an inline helper vectorizes (reference counting of the helper's arrays removed)
    and no signature, the second one included, becomes a threaded parfor. An empty cache
    directory: numba cannot show the LLVM IR of code loaded from its cache."""
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path))
    axpy = _threads.split_parallel(_axpy, "axpy_sigs_probe", 1, PAR_MIN)
    total = _threads.split_parallel(_total, "total_sigs_probe", 0, PAR_MIN)
    rng = np.random.default_rng()
    for dtype in (np.float32, np.float64):
        x, y = rng.standard_normal(40).astype(dtype), rng.standard_normal(40).astype(dtype)
        out = np.zeros(1)
        total(x, out)
        np.testing.assert_allclose(out[0], x.astype(np.float64).sum(), rtol=1e-12)
        expect = (y + dtype(2.5) * x).astype(dtype)
        axpy(dtype(2.5), x, y)
        np.testing.assert_array_equal(y, expect)
    assert not axpy.parallel.signatures and not total.parallel.signatures
    for copy in (axpy.serial, total.serial):
        assert len(copy.signatures) == 2
        for sig in copy.signatures:
            llvm = copy.inspect_llvm(sig)
            assert "parfor" not in llvm, (copy, sig)
    for sig in axpy.serial.signatures:
        llvm = axpy.serial.inspect_llvm(sig)
        assert "vector.body" in llvm and "NRT_decref" not in llvm.split("vector.body")[1][:4000]


@pytest.mark.parametrize("units", [1, 2, 7])
def test_run_covers_every_unit_once(units):
    hits = np.zeros(units, np.int64)

    def worker(h, u0, u1):
        h[u0:u1] += 1
    _threads.run(worker, (hits,), units)
    assert hits.tolist() == [1] * units
