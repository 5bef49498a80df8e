"""Regularization: the l1l2 kernels (CPU against float64 references, finite differences and
PyTorch; CUDA in Numba's simulator against the CPU kernels; PTX for sm_90) and the
``numbanet.regularizers`` API (L1, L2, L1L2, get, serialize, validation)."""
import json

import numpy as np
import pytest
from conftest import poisoned

import reference as ref
from numbanet import regularizers as R
from numbanet.backend import get_backend, kernel_names
from numbanet.kernels.cpu import regularization as K
from numbanet.testing import gradcheck

DTYPES = [np.float32, np.float64]
# 1 and odd sizes, and one above the kernels' parallel threshold (prange path).
SIZES = [1, 7, 1000, (1 << 18) + 3]
FACTORS = [(0.01, 0.0), (0.0, 0.03), (0.2, 0.7)]


def assert_close(actual, expected, dtype):
    """Relative to the magnitude of ``expected``: float64 1e-12, float32 1e-5."""
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    expected = np.asarray(expected, np.float64)
    scale = max(float(np.max(np.abs(expected))), 1e-30)
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=rtol,
                               atol=rtol * scale)


def weights(rng, n, dtype):
    w = rng.standard_normal(n).astype(dtype)
    w[: min(n, 3) // 2] = 0.0                # sign(0) = 0 is part of the contract
    return w


def test_public_names():
    assert kernel_names(K) == ["l1l2_penalty", "l1l2_penalty_backward"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("l1,l2", FACTORS)
def test_penalty_kernel(n, dtype, l1, l2, rng):
    w = weights(rng, n, dtype)
    out = poisoned((1,), dtype)
    K.l1l2_penalty(w, l1, l2, out)
    assert_close(out[0], ref.l1l2_penalty(w, l1, l2), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("l1,l2", FACTORS)
def test_penalty_backward_accumulates(n, dtype, l1, l2, rng):
    w = weights(rng, n, dtype)
    g0 = rng.standard_normal(n).astype(dtype)
    grad = g0.copy()
    K.l1l2_penalty_backward(w, l1, l2, grad)
    assert_close(grad, ref.l1l2_penalty_backward(w, l1, l2, g0), dtype)
    if n > 1:
        assert np.isclose(grad[0], g0[0])               # w[0] == 0: only 2*l2*0 and sign(0)=0


def test_penalty_of_empty_and_nan():
    out = poisoned((1,), np.float64)
    K.l1l2_penalty(np.zeros(0), 0.5, 0.5, out)
    assert out[0] == 0.0
    K.l1l2_penalty(np.array([1.0, np.nan]), 0.5, 0.5, out)
    assert np.isnan(out[0])
    g = np.zeros(2)
    K.l1l2_penalty_backward(np.array([1.0, np.nan]), 0.5, 0.0, g)
    assert g[0] == 0.5 and np.isnan(g[1])


@pytest.mark.parametrize("l1,l2", FACTORS)
def test_penalty_gradient_finite_differences(l1, l2, rng):
    w = rng.standard_normal((4, 5))
    w += np.where(w >= 0, 0.05, -0.05)                   # keep |w| >> eps (|w| has a kink at 0)
    reg = R.L1L2(l1, l2)

    def grad_f(w):
        g = np.zeros_like(w)
        reg.add_gradient(get_backend("cpu"), w, g)
        return [g]
    assert gradcheck((reg, grad_f), w, rtol=1e-7, atol=1e-9)


def test_penalty_against_torch(rng):
    torch = pytest.importorskip("torch")
    w = rng.standard_normal(57)
    w[3] = 0.0
    t = torch.tensor(w, requires_grad=True)
    (0.3 * t.abs().sum() + 0.2 * (t * t).sum()).backward()
    out, g = poisoned((1,), np.float64), np.zeros(57)
    K.l1l2_penalty(w, 0.3, 0.2, out)
    K.l1l2_penalty_backward(w, 0.3, 0.2, g)
    assert_close(out[0], 0.3 * np.abs(w).sum() + 0.2 * (w * w).sum(), np.float64)
    assert_close(g, t.grad.numpy(), np.float64)


# ------------------------------------------------------------------------------------------ API
def test_defaults_and_configs():
    assert (R.L1().l1, R.L1().l2) == (0.01, 0.0)
    assert (R.L2().l1, R.L2().l2) == (0.0, 0.01)
    assert (R.L1L2().l1, R.L1L2().l2) == (0.0, 0.0)
    assert R.L1(0.5).get_config() == {"l1": 0.5}
    assert R.L2(0.5).get_config() == {"l2": 0.5}
    assert R.L1L2(l1=1, l2=2).get_config() == {"l1": 1.0, "l2": 2.0}
    for reg in (R.L1(0.3), R.L2(0.4), R.L1L2(0.1, 0.2)):
        again = type(reg).from_config(reg.get_config())
        assert again == reg and type(again) is type(reg)
        s = R.serialize(reg)
        assert R.get(json.loads(json.dumps(s))) == reg
        assert repr(reg).startswith(type(reg).__name__ + "(")


def test_get():
    assert R.get(None) is None and R.serialize(None) is None
    reg = R.L2(0.2)
    assert R.get(reg) is reg
    assert R.get("l1") == R.L1(0.01) and R.get("L2") == R.L2(0.01)
    assert R.get("l1_l2") == R.L1L2(0.01, 0.01)
    assert R.get({"class_name": "L1L2", "config": {"l1": 0.1}}) == R.L1L2(0.1, 0.0)
    assert R.serialize("l2") == {"class_name": "L2", "config": {"l2": 0.01}}
    for bad in ("l3", 0.1, {"class_name": "L9", "config": {}},
                {"class_name": "L1", "config": {"l2": 0.1}}):
        with pytest.raises(ValueError):
            R.get(bad)


@pytest.mark.parametrize("make,arg", [(R.L1, "l1"), (R.L2, "l2"),
                                      (lambda v: R.L1L2(l1=v), "l1"),
                                      (lambda v: R.L1L2(l2=v), "l2")])
@pytest.mark.parametrize("value", [-0.1, float("nan"), float("inf"), True, "0.1", None])
def test_bad_factors(make, arg, value):
    with pytest.raises(ValueError, match=f"{arg} must be .*got {value!r}"):
        make(value)


@pytest.mark.parametrize("dtype", DTYPES)
def test_penalty_and_add_gradient_on_cpu_backend(dtype, rng):
    be = get_backend("cpu")
    w = rng.standard_normal((6, 5)).astype(dtype)
    reg = R.L1L2(0.02, 0.05)
    p = reg.penalty(be, w)
    assert p.shape == (1,) and p.dtype == dtype
    assert_close(p[0], ref.l1l2_penalty(w, 0.02, 0.05), dtype)
    assert isinstance(reg(w), float)
    assert_close(reg(w), ref.l1l2_penalty(w, 0.02, 0.05), dtype)
    assert_close(R.L1(0.1)(w.tolist()), 0.1 * np.abs(w.astype(np.float64)).sum(), dtype)
    g0 = rng.standard_normal((6, 5)).astype(dtype)
    g = g0.copy()
    reg.add_gradient(be, w, g)
    assert_close(g, ref.l1l2_penalty_backward(w, 0.02, 0.05, g0), dtype)
    g = g0.copy()
    R.L1L2().add_gradient(be, w, g)                       # all-zero factors: nothing to add
    np.testing.assert_array_equal(g, g0)


# ------------------------------------------------------------------------------------------ CUDA
@pytest.fixture
def gpu(monkeypatch):
    """kernels.cuda.regularization with shrunk launch knobs (grids of several blocks whose
    grid-stride loops wrap), every launch checked against its declared spec."""
    from numbanet import _cuda
    if _cuda.cuda is None or not (_cuda.is_simulator() or _cuda.is_available()):
        pytest.skip(f"CUDA kernels cannot run here: {_cuda.unavailable_reason()}")
    from numbanet.kernels.cuda import _common
    from numbanet.kernels.cuda import regularization as G
    monkeypatch.setenv("NUMBANET_ALLOW_CUDASIM", "1")
    monkeypatch.setattr(_common.config, "threads", 16)
    monkeypatch.setattr(_common.config, "max_blocks", 3)
    monkeypatch.setattr(_common.config, "check_signatures", True)
    return _cuda.cuda, G


def test_cuda_public_names_match_cpu(gpu):
    assert kernel_names(gpu[1]) == kernel_names(K)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 37, 200])
def test_cuda_kernels_match_cpu(n, dtype, gpu, rng):
    cuda, G = gpu
    w = weights(rng, n, dtype)
    for _ in range(2):                                    # the grid counter is reset: repeatable
        out = cuda.to_device(poisoned((1,), dtype))
        G.l1l2_penalty(cuda.to_device(w), 0.2, 0.7, out)
        want = poisoned((1,), dtype)
        K.l1l2_penalty(w, 0.2, 0.7, want)
        assert_close(out.copy_to_host(), want, dtype)
    g0 = rng.standard_normal(n).astype(dtype)
    d = cuda.to_device(g0)
    G.l1l2_penalty_backward(cuda.to_device(w), 0.2, 0.7, d)
    want = g0.copy()
    K.l1l2_penalty_backward(w, 0.2, 0.7, want)
    assert_close(d.copy_to_host(), want, dtype)


def test_regularizer_on_cuda_backend(gpu, rng):
    be = get_backend("cuda")
    w = rng.standard_normal((3, 4))
    g0 = rng.standard_normal((3, 4))
    reg = R.L1L2(0.1, 0.3)
    p = reg.penalty(be, be.asarray(w))
    assert p.shape == (1,)
    assert_close(be.to_numpy(p)[0], ref.l1l2_penalty(w, 0.1, 0.3), np.float64)
    dg = be.asarray(g0)
    reg.add_gradient(be, be.asarray(w), dg)
    assert_close(be.to_numpy(dg), ref.l1l2_penalty_backward(w, 0.1, 0.3, g0), np.float64)


def test_cuda_kernels_compile_to_ptx_for_sm90():
    """Every private CUDA kernel of the module, float32 and float64, compiled in a subprocess
    with the simulator off (needs libNVVM, not a GPU); no errors, and no spills (with ptxas)."""
    from numbanet import _cuda
    if _cuda.cuda is None:
        pytest.skip("numba-cuda is not installed")
    from numbanet.kernels.cuda import _common
    from numbanet.kernels.cuda import regularization  # noqa: F401  (registers the kernels)
    names = [k.name for k in _common.KERNELS if k.name.startswith("regularization.")]
    assert len(names) == 2
    result = _cuda.kernel_resources(names=names)
    if "skip" in result:
        pytest.skip(result["skip"])
    rows = result["rows"]
    assert sorted((r["kernel"], r["dtype"]) for r in rows) == \
        sorted((n, dt) for n in names for dt in ("float32", "float64"))
    for row in rows:
        assert "error" not in row and "ptxas_error" not in row, row
        if result["ptxas"]:
            assert row["spill_stores"] == 0 and row["spill_loads"] == 0, row
