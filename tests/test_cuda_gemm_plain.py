"""The plain tiled GEMM (kernels/cuda/_gemm.py, version 1) against a float64 NumPy reference and
against the fast register-tiled GEMM, through the dense kernels that run it: plain operands
(forward), B read transposed (backward input) and A read transposed (backward weight). Sizes
cross the plain kernel's 16 x 16 tiles and the shrunken fast tiles, with 1-row / 1-column cases.
Runs in Numba's CUDA simulator by default (see tests/test_cuda_kernels.py)."""
import numpy as np
import pytest
from conftest import assert_close, dev, poisoned

from numbanet import _cuda

if _cuda.cuda is None or not (_cuda.is_simulator() or _cuda.is_available()):
    pytest.skip(f"CUDA kernels cannot run here: {_cuda.unavailable_reason()}",
                allow_module_level=True)

from numbanet.kernels.cuda import _common, _gemm, dense  # noqa: E402

DTYPES = [np.float32, np.float64]
# (M, K, N): one element, one row, one column, exact multiples of the plain tile, ragged sizes
# spanning several tiles of both kernels
SHAPES = [(1, 1, 1), (1, 7, 20), (20, 7, 1), (16, 16, 16), (17, 35, 18)]


@pytest.fixture(autouse=True)
def small_launches(monkeypatch):
    """The fast GEMM's small tiles (several blocks, split K), spec checks on."""
    monkeypatch.setenv("NUMBANET_ALLOW_CUDASIM", "1")
    for name, value in (("gemm_tile", (8, 8, 4, 2, 2)), ("gemm_min_chunk", 1), ("num_sms", 4),
                        ("check_signatures", True)):
        monkeypatch.setattr(_common.config, name, value)


def plain(a, b):
    out = dev(poisoned((a.shape[0], b.shape[1]), a.dtype))
    _gemm.gemm_plain(dev(a), dev(b), out)
    return out.copy_to_host()


def fast(a, b):
    """a @ b by the fast GEMM, three ways: (plain operands, B transposed, A transposed)."""
    (M, K), N = a.shape, b.shape[1]
    fwd, bwd_in, bwd_w = (dev(poisoned((M, N), a.dtype)) for _ in range(3))
    dense.dense_forward(dev(a), dev(b), dev(np.zeros(N, a.dtype)), fwd)
    dense.dense_backward_input(dev(a), dev(np.ascontiguousarray(b.T)), bwd_in)
    dense.dense_backward_weight(dev(np.ascontiguousarray(a.T)), dev(b), False, bwd_w,
                                dev(poisoned(N, a.dtype)))
    return [o.copy_to_host() for o in (fwd, bwd_in, bwd_w)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_plain_gemm_against_reference_and_fast(shape, dtype, rng):
    M, K, N = shape
    a = rng.standard_normal((M, K)).astype(dtype)
    b = rng.standard_normal((K, N)).astype(dtype)
    got = plain(a, b)
    assert "_gemm._plain" in _common.LAUNCHED          # launched, its arguments spec-checked
    assert_close(got, a.astype(np.float64) @ b.astype(np.float64), dtype, f"plain {shape}")
    for how, want in zip(("forward", "B transposed", "A transposed"), fast(a, b)):
        assert_close(got, want, dtype, f"plain vs fast ({how}) {shape}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_plain_gemm_empty(dtype):
    """K = 0 gives zeros; M = 0 or N = 0 launches nothing."""
    assert np.array_equal(plain(np.zeros((3, 0), dtype), np.zeros((0, 5), dtype)),
                          np.zeros((3, 5)))
    assert plain(np.zeros((0, 4), dtype), np.zeros((4, 5), dtype)).shape == (0, 5)


def test_plain_gemm_shape_mismatch():
    a, b = np.zeros((3, 4), np.float32), np.zeros((5, 2), np.float32)
    with pytest.raises(ValueError, match=r"gemm_plain: a \(3, 4\) @ b \(5, 2\) does not fit "
                                         r"out \(3, 2\)"):
        _gemm.gemm_plain(dev(a), dev(b), dev(np.zeros((3, 2), np.float32)))
