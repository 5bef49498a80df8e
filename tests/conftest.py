import os

# CUDA kernels run in Numba's simulator unless a real GPU run is asked for; this must happen
# before numba is first imported. CPU (@njit) kernels are unaffected by the simulator.
if os.environ.get("NUMBANET_TEST_REAL_CUDA", "0") != "1":
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

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
