"""kernels/cpu/_threads.py: split_parallel compiles its serial copy for calls below the threshold
and its parallel copy only at the first call from the threshold on, both giving the reference
result, without numba warnings; run() covers every unit exactly once."""
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


@pytest.mark.parametrize("units", [1, 2, 7])
def test_run_covers_every_unit_once(units):
    hits = np.zeros(units, np.int64)

    def worker(h, u0, u1):
        h[u0:u1] += 1
    _threads.run(worker, (hits,), units)
    assert hits.tolist() == [1] * units
