"""CPU loss kernels: float64 reference, finite differences, PyTorch, extremes, in place."""
import numpy as np
import pytest
from conftest import poisoned

import reference as ref
from numbanet.backend import kernel_names
from numbanet.kernels.cpu import losses as L
from numbanet.testing import gradcheck

DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 2e-6, np.float64: 1e-12}
EPS = 1e-7
LABEL_DTYPES = [np.int32, np.int64]

# name -> (extra hyperparameters, kind of y_true, kind of y_pred)
LOSSES = {
    "mse": ((), "real", "real"),
    "mae": ((), "real", "real"),
    "huber": ((0.7,), "real", "real"),
    "binary_crossentropy": ((EPS,), "unit", "prob"),
    "binary_crossentropy_logits": ((), "unit", "real"),
    "categorical_crossentropy": ((EPS,), "dist", "prob"),
    "categorical_crossentropy_logits": ((), "dist", "real"),
    "sparse_categorical_crossentropy": ((EPS,), "labels", "prob"),
    "sparse_categorical_crossentropy_logits": ((), "labels", "real"),
}
SHAPES = [(1, 1), (1, 5), (7, 3), (64, 10), "par"]


def par_shape(name):
    """A shape that takes the prange path of the kernel."""
    n = L._PAR_MIN_CHEAP if name in ("mse", "mae", "huber") else L._PAR_MIN
    return (n // 16 + 1, 16)


def make_inputs(name, shape, dtype, rng, label_dtype=np.int64):
    _, tkind, pkind = LOSSES[name]
    n, c = shape
    if tkind == "real":
        t = rng.standard_normal(shape)
    elif tkind == "unit":
        t = rng.random(shape)
    elif tkind == "dist":
        t = rng.random(shape)
        t /= t.sum(axis=1, keepdims=True)
    else:
        t = rng.integers(0, c, size=n).astype(label_dtype)
    if pkind == "real":
        p = 2.0 * rng.standard_normal(shape)
    else:
        p = rng.uniform(0.02, 0.98, shape)
    if tkind != "labels":
        t = t.astype(dtype)
    return t, p.astype(dtype)


def run(name, t, p, params=None):
    params = LOSSES[name][0] if params is None else params
    out = poisoned((1,), p.dtype)
    getattr(L, name + "_forward")(t, p, *params, out)
    grad = poisoned(p.shape, p.dtype)
    getattr(L, name + "_backward")(t, p, *params, grad)
    return out, grad


def assert_close(actual, expected, rtol):
    expected = np.asarray(expected, dtype=np.float64)
    scale = max(1e-300, float(np.max(np.abs(expected))))
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected, rtol=rtol,
                               atol=rtol * scale)


def test_public_names_match_the_contract():
    assert kernel_names(L) == sorted(f"{n}_{p}" for n in LOSSES for p in ["forward", "backward"])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", list(LOSSES))
def test_matches_reference(name, shape, dtype, rng):
    shape = par_shape(name) if shape == "par" else shape
    t, p = make_inputs(name, shape, dtype, rng)
    out, grad = run(name, t, p)
    params = LOSSES[name][0]
    assert out.dtype == dtype and grad.dtype == dtype
    assert_close(out, [getattr(ref, name + "_forward")(t, p, *params)], RTOL[dtype])
    assert_close(grad, getattr(ref, name + "_backward")(t, p, *params), RTOL[dtype])


@pytest.mark.parametrize("label_dtype", LABEL_DTYPES)
@pytest.mark.parametrize("name", ["sparse_categorical_crossentropy",
                                  "sparse_categorical_crossentropy_logits"])
def test_sparse_label_dtypes(name, label_dtype, rng):
    t, p = make_inputs(name, (9, 4), np.float32, rng, label_dtype)
    assert t.dtype == label_dtype
    out, grad = run(name, t, p)
    params = LOSSES[name][0]
    assert_close(out, [getattr(ref, name + "_forward")(t, p, *params)], RTOL[np.float32])
    assert_close(grad, getattr(ref, name + "_backward")(t, p, *params), RTOL[np.float32])


@pytest.mark.parametrize("bad", [-1, 4])
@pytest.mark.parametrize("name", ["sparse_categorical_crossentropy",
                                  "sparse_categorical_crossentropy_logits"])
def test_sparse_label_out_of_range_raises(name, bad, rng):
    t, p = make_inputs(name, (3, 4), np.float64, rng)
    t[1] = bad
    with pytest.raises(ValueError):
        run(name, t, p)


@pytest.mark.parametrize("shape", [(1, 1), (1, 4), (5, 3)])
@pytest.mark.parametrize("name", list(LOSSES))
def test_backward_matches_finite_differences(name, shape, rng):
    t, p = make_inputs(name, shape, np.float64, rng)
    params = LOSSES[name][0]
    if name == "mae":
        p[np.abs(p - t) < 1e-3] += 0.01               # keep clear of the kink
    if name == "huber":
        e = p - t
        p[np.abs(np.abs(e) - params[0]) < 1e-3] += 0.01

    def f(p):
        out = poisoned((1,), p.dtype)
        getattr(L, name + "_forward")(t, p, *params, out)
        return out[0]

    def grad_f(p):
        return [run(name, t, p)[1]]
    gradcheck((f, grad_f), p)


@pytest.mark.parametrize("name", ["binary_crossentropy", "categorical_crossentropy",
                                  "sparse_categorical_crossentropy"])
def test_clipped_gradient_matches_finite_differences(name, rng):
    """Probabilities on both sides of the clip: the gradient of the clipped expression (a wide
    clip, eps = 0.05, so that finite-difference steps never cross its edges)."""
    eps = 0.05
    t, p = make_inputs(name, (4, 5), np.float64, rng)
    p[0] = [0.01, 0.3, 0.3, 0.3, 0.09]               # entry 0 clipped low (row sums to 1)
    p[1] = [0.001, 0.97, 0.001, 0.001, 0.001]         # entry 1 clipped high after normalising
    p[2, 3] = 0.99
    if name == "sparse_categorical_crossentropy":
        t[:3] = [0, 1, 2]                             # labels on a clipped-low, clipped-high, free entry
    params = (eps,)

    def f(p):
        out = poisoned((1,), p.dtype)
        getattr(L, name + "_forward")(t, p, *params, out)
        return out[0]

    def grad_f(p):
        return [run(name, t, p, params)[1]]
    gradcheck((f, grad_f), p)
    assert_close(run(name, t, p, params)[1], getattr(ref, name + "_backward")(t, p, eps), 1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(LOSSES))
def test_in_place_gradient(name, dtype, rng):
    """grad may be y_pred itself."""
    t, p = make_inputs(name, (6, 5), dtype, rng)
    _, grad = run(name, t, p)
    pa = p.copy()
    getattr(L, name + "_backward")(t, pa, *LOSSES[name][0], pa)
    np.testing.assert_array_equal(pa, grad)


@pytest.mark.parametrize("dtype", DTYPES)
def test_extreme_logits_stay_finite(dtype):
    z = np.array([[1000.0, -1000.0, 0.0], [-1000.0, -1000.0, -1000.0], [-1000.0, 1000.0, 1000.0],
                  [1e30, -1e30, 3.0]], dtype=dtype)
    y = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=dtype)
    labels = np.array([1, 0, 0, 1])
    for name, t in [("binary_crossentropy_logits", y), ("categorical_crossentropy_logits", y),
                    ("sparse_categorical_crossentropy_logits", labels)]:
        out, grad = run(name, t, z)
        assert np.isfinite(out[0]) and np.all(np.isfinite(grad)), name
        with np.errstate(all="ignore"):
            assert_close(out, [getattr(ref, name + "_forward")(t, z)], RTOL[dtype])
            assert_close(grad, getattr(ref, name + "_backward")(t, z), RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_probabilities_zero_and_one_stay_finite(dtype):
    p = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]], dtype=dtype)
    y = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 1.0]], dtype=dtype)
    labels = np.array([0, 0, 2, 1])
    for name, t in [("binary_crossentropy", y), ("categorical_crossentropy", y),
                    ("sparse_categorical_crossentropy", labels)]:
        out, grad = run(name, t, p)
        assert np.isfinite(out[0]) and np.all(np.isfinite(grad)), name
        with np.errstate(all="ignore"):               # the reference divides by the zeros it masks
            assert_close(out, [getattr(ref, name + "_forward")(t, p, EPS)], RTOL[dtype])
            assert_close(grad, getattr(ref, name + "_backward")(t, p, EPS), RTOL[dtype])
    out, _ = run("binary_crossentropy", y, p)
    assert out[0] > 0


def test_float64_accumulation(rng):
    """float32 inputs, a sum that float32 accumulation would get visibly wrong."""
    t = np.zeros((1000, 1000), dtype=np.float32)
    p = (1.0 + 1e-3 * rng.standard_normal(t.shape)).astype(np.float32)
    out = poisoned((1,), np.float32)
    L.mse_forward(t, p, out)
    assert abs(out[0] - ref.mse_forward(t, p)) <= 1e-7 * ref.mse_forward(t, p)


# ------------------------------------------------------------------------------------- PyTorch
def torch_loss(name, t, p):
    """(loss, d loss / d p) from PyTorch autograd."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    pt = torch.tensor(p, requires_grad=True)
    tt = torch.tensor(t)
    if name == "mse":
        loss = F.mse_loss(pt, tt)
    elif name == "mae":
        loss = F.l1_loss(pt, tt)
    elif name == "huber":
        loss = F.huber_loss(pt, tt, delta=LOSSES[name][0][0])
    elif name == "binary_crossentropy":
        loss = F.binary_cross_entropy(pt, tt)
    elif name == "binary_crossentropy_logits":
        loss = F.binary_cross_entropy_with_logits(pt, tt)
    elif name == "categorical_crossentropy":          # probabilities: Keras' normalise + clip
        q = torch.clamp(pt / pt.sum(dim=1, keepdim=True), EPS, 1.0 - EPS)
        loss = -(tt * torch.log(q)).sum(dim=1).mean()
    elif name == "categorical_crossentropy_logits":   # class-probability targets
        loss = F.cross_entropy(pt, tt)
    elif name == "sparse_categorical_crossentropy":
        q = torch.clamp(pt / pt.sum(dim=1, keepdim=True), EPS, 1.0 - EPS)
        loss = F.nll_loss(torch.log(q), tt)
    else:                                             # class-index targets
        loss = F.cross_entropy(pt, tt)
    loss.backward()
    return loss.detach().numpy(), pt.grad.numpy()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(LOSSES))
def test_matches_torch(name, dtype, rng):
    pytest.importorskip("torch")
    t, p = make_inputs(name, (16, 7), dtype, rng)
    out, grad = run(name, t, p)
    lt, gt = torch_loss(name, t, p)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert_close(out, [lt], tol)
    assert_close(grad, gt, tol)


@pytest.mark.parametrize("name", ["categorical_crossentropy", "sparse_categorical_crossentropy"])
def test_unnormalised_and_clipped_probabilities_match_torch(name, rng):
    pytest.importorskip("torch")
    t, p = make_inputs(name, (6, 4), np.float64, rng)
    p *= 3.0                                          # rows no longer sum to 1
    p[0, 1:] = 1e-12                                  # row 0 entry 0 clipped high, rest low
    p[1, 2] = 0.0
    out, grad = run(name, t, p)
    lt, gt = torch_loss(name, t, p)
    assert_close(out, [lt], 1e-12)
    assert_close(grad, gt, 1e-12)
