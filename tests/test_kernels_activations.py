"""CPU activation kernels: float64 reference, finite differences, PyTorch, extremes, in place."""
import numpy as np
import pytest
from conftest import poisoned

import reference as ref
from numbanet.backend import kernel_names
from numbanet.kernels.cpu import activations as A
from numbanet.testing import gradcheck

# (name, alpha); alpha is ignored by all but leaky_relu and elu
ELEMENTWISE = [("linear", 0.0), ("relu", 0.0), ("leaky_relu", 0.2), ("elu", 1.0), ("elu", 0.7),
               ("gelu", 0.0), ("gelu_tanh", 0.0), ("sigmoid", 0.0), ("tanh", 0.0), ("softplus", 0.0),
               ("mish", 0.0)]
CHEAP = ("linear", "relu", "leaky_relu")
DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 2e-6, np.float64: 1e-12}


def kernels(name):
    return getattr(A, name + "_forward"), getattr(A, name + "_backward")


def assert_close(actual, expected, dtype, rtol=None):
    """Relative to each element and to the magnitude of the whole array."""
    rtol = RTOL[dtype] if rtol is None else rtol
    expected = np.asarray(expected, dtype=np.float64)
    scale = max(1e-300, float(np.max(np.abs(expected)))) if expected.size else 1.0
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected, rtol=rtol,
                               atol=rtol * scale)


def par_size(name):
    """A size that takes the prange path of the kernel."""
    return (A._PAR_MIN_CHEAP if name in CHEAP else A._PAR_MIN) + 3


def run(name, x, alpha, g):
    fwd, bwd = kernels(name)
    y = poisoned(x.shape, x.dtype)
    fwd(x, alpha, y)
    gi = poisoned(x.shape, x.dtype)
    bwd(x, y, g, alpha, gi)
    return y, gi


def test_public_names_match_the_contract():
    expected = sorted(f"{n}_{p}" for n in ["linear", "relu", "leaky_relu", "elu", "gelu", "gelu_tanh",
                                           "sigmoid", "tanh", "softplus", "mish", "softmax"]
                      for p in ["forward", "backward"])
    assert kernel_names(A) == expected


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", [1, 7, 10001, "par"])
@pytest.mark.parametrize("name,alpha", ELEMENTWISE)
def test_matches_reference(name, alpha, size, dtype, rng):
    n = par_size(name) if size == "par" else size
    x = (3.0 * rng.standard_normal(n)).astype(dtype)
    g = rng.standard_normal(n).astype(dtype)
    y, gi = run(name, x, alpha, g)
    assert y.dtype == dtype and gi.dtype == dtype
    assert_close(y, getattr(ref, name + "_forward")(x, alpha), dtype)
    assert_close(gi, getattr(ref, name + "_backward")(x, y, g, alpha), dtype)


@pytest.mark.parametrize("size", [1, 7, 31])
@pytest.mark.parametrize("name,alpha", ELEMENTWISE)
def test_backward_matches_finite_differences(name, alpha, size, rng):
    x = 2.0 * rng.standard_normal(size)
    x[np.abs(x) < 1e-3] += 0.01                       # keep clear of the relu kinks
    g = rng.standard_normal(size)
    fwd, bwd = kernels(name)

    def f(x):
        y = poisoned(x.shape, x.dtype)
        fwd(x, alpha, y)
        return np.sum(y * g)

    def grad_f(x):
        return [run(name, x, alpha, g)[1]]
    gradcheck((f, grad_f), x)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,alpha", ELEMENTWISE)
def test_extreme_inputs_stay_finite(name, alpha, dtype):
    big = 1e30 if dtype == np.float32 else 1e200
    x = np.array([-big, -1e4, -1000.0, -100.0, -40.0, -30.5, -20.0, -1e-30, 0.0, 1e-30, 20.0,
                  30.5, 40.0, 100.0, 1000.0, 1e4, big], dtype=dtype)
    g = np.ones_like(x)
    y, gi = run(name, x, alpha, g)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(gi))
    with np.errstate(all="ignore"):           # the plain references may overflow at +-big
        ry = getattr(ref, name + "_forward")(x, alpha)
        rg = getattr(ref, name + "_backward")(x, y, g, alpha)
    ok = np.isfinite(ry) & np.isfinite(rg)
    assert ok[1:-1].all()
    assert_close(y[ok], ry[ok], dtype)
    assert_close(gi[ok], rg[ok], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,alpha", ELEMENTWISE)
def test_largest_finite_inputs_stay_finite(name, alpha, dtype):
    # mish's gradient was NaN at x near the float64 maximum (x * 4 overflowed before the
    # vanishing sech^2 factor could multiply it)
    big = np.finfo(dtype).max
    x = np.array([-big, -big / 2, big / 4, big / 2, big], dtype=dtype)
    y, gi = run(name, x, alpha, np.ones_like(x))
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(gi)), (y, gi)


def test_nan_propagates():
    x = np.array([np.nan, 1.0])
    for name, alpha in ELEMENTWISE:
        y = poisoned(2, np.float64)
        kernels(name)[0](x, alpha, y)
        assert np.isnan(y[0]) and np.isfinite(y[1]), name


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,alpha", ELEMENTWISE)
def test_in_place(name, alpha, dtype, rng):
    fwd, bwd = kernels(name)
    x = rng.standard_normal(101).astype(dtype)
    g = rng.standard_normal(101).astype(dtype)
    y, gi = run(name, x, alpha, g)
    xa = x.copy()
    fwd(xa, alpha, xa)                                # out is x
    np.testing.assert_array_equal(xa, y)
    ga = g.copy()
    bwd(x, y, ga, alpha, ga)                          # grad_in is grad_out
    np.testing.assert_array_equal(ga, gi)


# ------------------------------------------------------------------------------------- softmax
SOFTMAX_SHAPES = [(1, 1), (1, 7), (5, 3), (33, 10), "par"]


def softmax_shape(shape):
    return (A._PAR_MIN_CHEAP // 64 + 1, 64) if shape == "par" else shape


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SOFTMAX_SHAPES)
def test_softmax_matches_reference(shape, dtype, rng):
    shape = softmax_shape(shape)
    x = (3.0 * rng.standard_normal(shape)).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    y, gi = run("softmax", x, 0.0, g)
    assert_close(y, ref.softmax_forward(x, 0.0), dtype)
    assert_close(gi, ref.softmax_backward(x, y, g, 0.0), dtype, rtol=3 * RTOL[dtype])
    np.testing.assert_allclose(y.sum(axis=1, dtype=np.float64), 1.0, rtol=10 * RTOL[dtype])


@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (4, 6)])
def test_softmax_backward_matches_finite_differences(shape, rng):
    x = rng.standard_normal(shape)
    g = rng.standard_normal(shape)

    def f(x):
        y = poisoned(x.shape, x.dtype)
        A.softmax_forward(x, 0.0, y)
        return np.sum(y * g)

    def grad_f(x):
        return [run("softmax", x, 0.0, g)[1]]
    gradcheck((f, grad_f), x)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_extremes_and_in_place(dtype):
    x = np.array([[1000.0, -1000.0, 0.0], [-1000.0, -1000.0, -1000.0], [1e4, 1e4, -1e4],
                  [1e30, -1e30, 0.0]], dtype=dtype)
    g = np.array([[1.0, -2.0, 0.5]] * 4, dtype=dtype)
    y, gi = run("softmax", x, 0.0, g)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(gi))
    assert_close(y, ref.softmax_forward(x, 0.0), dtype)
    assert_close(gi, ref.softmax_backward(x, y, g, 0.0), dtype)
    xa = x.copy()
    A.softmax_forward(xa, 0.0, xa)
    np.testing.assert_array_equal(xa, y)
    ga = g.copy()
    A.softmax_backward(x, y, ga, 0.0, ga)
    np.testing.assert_array_equal(ga, gi)


# ------------------------------------------------------------------------------------- PyTorch
def torch_activation(name, alpha):
    F = pytest.importorskip("torch").nn.functional
    return {
        "linear": lambda t: t * 1.0,
        "relu": F.relu,
        "leaky_relu": lambda t: F.leaky_relu(t, alpha),
        "elu": lambda t: F.elu(t, alpha),
        "gelu": lambda t: F.gelu(t, approximate="none"),
        "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"),
        "sigmoid": F.sigmoid,
        "tanh": F.tanh,
        "softplus": F.softplus,
        "mish": F.mish,
        "softmax": lambda t: F.softmax(t, dim=1),
    }[name]


def torch_forward_backward(name, alpha, x, g):
    torch = pytest.importorskip("torch")
    xt = torch.tensor(x, requires_grad=True)
    yt = torch_activation(name, alpha)(xt)
    yt.backward(torch.tensor(g))
    return yt.detach().numpy(), xt.grad.numpy()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,alpha", ELEMENTWISE + [("softmax", 0.0)])
def test_matches_torch(name, alpha, dtype, rng):
    pytest.importorskip("torch")
    shape = (9, 7) if name == "softmax" else (257,)
    x = (3.0 * rng.standard_normal(shape)).astype(dtype)
    x.reshape(-1)[:3] = 0.0                           # the conventions at the kinks
    g = rng.standard_normal(shape).astype(dtype)
    y, gi = run(name, x, alpha, g)
    yt, gt = torch_forward_backward(name, alpha, x, g)
    # torch computes in the input dtype: float32 agreement to a few float32 ulps of the magnitude
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert_close(y, yt, dtype, rtol=tol)
    assert_close(gi, gt, dtype, rtol=tol)
