"""CPU loss kernels (with per-sample weights): float64 reference, finite differences, PyTorch,
extremes, in place."""
import numpy as np
import pytest
from conftest import poisoned

import reference as ref
from numbanet.backend import kernel_names
from numbanet.kernels import scalar
from numbanet.kernels.cpu import losses as L
from numbanet.testing import gradcheck

DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 2e-6, np.float64: 1e-12}
EPS = 1e-7
LABEL_DTYPES = [np.int32, np.int64]

# Hyperparameter values by name (per loss where it differs), the losses from the kernels' table
HYPER = {"eps": EPS, "delta": 0.7, "gamma": 2.0, "alpha": 0.25, "apply_class_balancing": True,
         "smooth": 0.01}
HYPER_OF = {"tversky": {"alpha": 0.3, "beta": 0.7}}
# name -> (hyperparameters before the weights, kind of y_true, kind of y_pred)
LOSSES = {loss.name: (tuple({**HYPER, **HYPER_OF.get(loss.name, {})}[h] for h in loss.hyper),
                      *loss.kinds.split()) for loss in scalar.LOSSES if loss.kinds}
EMBEDDING = [loss.name for loss in scalar.LOSSES if not loss.kinds]
# the kernels that switch to prange at _PAR_MIN_CHEAP elements (the others at _PAR_MIN)
CHEAP = {loss.name for loss in scalar.LOSSES if loss.cheap}
SHAPES = [(1, 1), (1, 5), (7, 3), (64, 10), "par"]


def par_shape(name):
    """A shape that takes the prange path of the kernel."""
    n = L._PAR_MIN_CHEAP if name in CHEAP else L._PAR_MIN
    return (n // 16 + 1, 16)


def loss_inputs(tkind, pkind, shape, rng):
    """float64 (y_true, y_pred) of predictions ``shape`` (batch, ..., last axis): targets of
    kind ``tkind`` ("real", "pos", "pm1", "unit", "mask", "dist": rows summing to 1 along the
    last axis, or "labels": int64 class ids of shape[:-1]), predictions of kind ``pkind``
    ("real", "pos", "prob": in (0.02, 0.98))."""
    if tkind == "labels":
        t = rng.integers(0, shape[-1], size=shape[:-1])
    else:
        t = {"real": lambda: rng.standard_normal(shape),
             "pos": lambda: rng.uniform(0.0, 3.0, shape),
             "pm1": lambda: np.where(rng.random(shape) < 0.5, -1.0, 1.0),
             "unit": lambda: rng.random(shape),
             "mask": lambda: (rng.random(shape) < 0.5).astype(np.float64),
             "dist": lambda: rng.random(shape)}[tkind]()
        if tkind == "dist":
            t /= t.sum(axis=-1, keepdims=True)
    p = {"real": lambda: 2.0 * rng.standard_normal(shape),
         "pos": lambda: rng.uniform(0.0, 3.0, shape),
         "prob": lambda: rng.uniform(0.02, 0.98, shape)}[pkind]()
    return t, p


def make_inputs(name, shape, dtype, rng, label_dtype=np.int64):
    """(y_true, y_pred) for the loss ``name``."""
    _, tkind, pkind = LOSSES[name]
    t, p = loss_inputs(tkind, pkind, shape, rng)
    return (t.astype(label_dtype) if tkind == "labels" else t.astype(dtype)), p.astype(dtype)


def make_weights(n, dtype, rng):
    """Random per-sample weights, one of them zero when there are several."""
    w = rng.uniform(0.1, 2.0, n)
    if n > 2:
        w[1] = 0.0
    return w.astype(dtype)


def run(name, t, p, w, params=None):
    params = LOSSES[name][0] if params is None else params
    out = poisoned((1,), p.dtype)
    getattr(L, name + "_forward")(t, p, *params, w, out)
    grad = poisoned(p.shape, p.dtype)
    getattr(L, name + "_backward")(t, p, *params, w, grad)
    return out, grad


def assert_close(actual, expected, rtol):
    expected = np.asarray(expected, dtype=np.float64)
    scale = max(1e-300, float(np.max(np.abs(expected))))
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected, rtol=rtol,
                               atol=rtol * scale)


def test_public_names_match_the_contract():
    names = list(LOSSES) + EMBEDDING
    assert kernel_names(L) == sorted(f"{n}_{p}" for n in names for p in ["forward", "backward"])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", list(LOSSES))
def test_matches_reference(name, shape, dtype, rng):
    shape = par_shape(name) if shape == "par" else shape
    t, p = make_inputs(name, shape, dtype, rng)
    w = make_weights(shape[0], dtype, rng)
    out, grad = run(name, t, p, w)
    params = LOSSES[name][0]
    assert out.dtype == dtype and grad.dtype == dtype
    assert_close(out, [getattr(ref, name + "_forward")(t, p, *params, w)], RTOL[dtype])
    assert_close(grad, getattr(ref, name + "_backward")(t, p, *params, w), RTOL[dtype])


@pytest.mark.parametrize("name", list(LOSSES))
def test_unit_weights_give_the_batch_mean(name, rng):
    """Weights 1: the plain mean of the per-sample losses; weights c: c times that."""
    t, p = make_inputs(name, (6, 4), np.float64, rng)
    ones = np.ones(6)
    out1, grad1 = run(name, t, p, ones)
    assert_close(out1, [getattr(ref, name + "_forward")(t, p, *LOSSES[name][0])], 1e-12)
    out3, grad3 = run(name, t, p, 3.0 * ones)
    assert_close(out3, 3.0 * out1, 1e-12)
    assert_close(grad3, 3.0 * grad1, 1e-12)
    w = np.zeros(6)
    w[2] = 1.0
    out, grad = run(name, t, p, w)                    # one sample counts, divided by N = 6
    o2, g2 = run(name, t[2:3], p[2:3], np.ones(1))
    assert_close(out, o2 / 6.0, 1e-12)
    assert not np.any(np.delete(grad, 2, axis=0)) and np.allclose(grad[2], g2[0] / 6.0)


@pytest.mark.parametrize("label_dtype", LABEL_DTYPES)
@pytest.mark.parametrize("name", ["sparse_categorical_crossentropy",
                                  "sparse_categorical_crossentropy_logits"])
def test_sparse_label_dtypes(name, label_dtype, rng):
    t, p = make_inputs(name, (9, 4), np.float32, rng, label_dtype)
    w = make_weights(9, np.float32, rng)
    assert t.dtype == label_dtype
    out, grad = run(name, t, p, w)
    params = LOSSES[name][0]
    assert_close(out, [getattr(ref, name + "_forward")(t, p, *params, w)], RTOL[np.float32])
    assert_close(grad, getattr(ref, name + "_backward")(t, p, *params, w), RTOL[np.float32])


@pytest.mark.parametrize("bad", [-1, 4])
@pytest.mark.parametrize("name", ["sparse_categorical_crossentropy",
                                  "sparse_categorical_crossentropy_logits"])
def test_sparse_label_out_of_range_raises(name, bad, rng):
    t, p = make_inputs(name, (3, 4), np.float64, rng)
    t[1] = bad
    with pytest.raises(ValueError):
        run(name, t, p, np.ones(3))


def _keep_off_kinks(name, t, p, params):
    """Move predictions away from the points where the loss is not differentiable."""
    if name == "mae":
        p[np.abs(p - t) < 1e-3] += 0.01
    if name == "huber":
        p[np.abs(np.abs(p - t) - params[0]) < 1e-3] += 0.01
    if name in ("hinge", "squared_hinge"):
        p[np.abs(1.0 - t * p) < 1e-3] += 0.01


@pytest.mark.parametrize("shape", [(1, 1), (1, 4), (5, 3)])
@pytest.mark.parametrize("name", list(LOSSES))
def test_backward_matches_finite_differences(name, shape, rng):
    t, p = make_inputs(name, shape, np.float64, rng)
    w = make_weights(shape[0], np.float64, rng)
    params = LOSSES[name][0]
    _keep_off_kinks(name, t, p, params)

    def f(p):
        out = poisoned((1,), p.dtype)
        getattr(L, name + "_forward")(t, p, *params, w, out)
        return out[0]

    gradcheck((f, lambda p: [run(name, t, p, w)[1]]), p)


@pytest.mark.parametrize("params", [(0.0, 0.25, False, EPS), (0.5, 0.25, True, EPS),
                                    (1.0, 0.9, True, EPS), (3.0, 0.0, False, EPS)])
@pytest.mark.parametrize("logits", [False, True])
def test_binary_focal_settings(params, logits, rng):
    """gamma 0 (plain BCE), non-integer gamma, balancing on and off; gamma = 0 without balancing
    equals binary crossentropy."""
    name = "binary_focal_crossentropy" + ("_logits" if logits else "")
    prm = params[:3] if logits else params
    t, p = make_inputs(name, (5, 3), np.float64, rng)
    w = make_weights(5, np.float64, rng)
    out, grad = run(name, t, p, w, prm)
    assert_close(out, [getattr(ref, name + "_forward")(t, p, *prm, w)], 1e-12)
    assert_close(grad, getattr(ref, name + "_backward")(t, p, *prm, w), 1e-12)

    def f(p):
        return run(name, t, p, w, prm)[0][0]
    gradcheck((f, lambda p: [run(name, t, p, w, prm)[1]]), p)
    if params[0] == 0.0 and not params[2]:
        bce = "binary_crossentropy" + ("_logits" if logits else "")
        o, g = run(bce, t, p, w, () if logits else (EPS,))
        assert_close(out, o, 1e-12)
        assert_close(grad, g, 1e-12)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 3.0])
@pytest.mark.parametrize("logits", [False, True])
def test_categorical_focal_settings(gamma, logits, rng):
    name = "categorical_focal_crossentropy" + ("_logits" if logits else "")
    prm = (gamma, 0.7) if logits else (gamma, 0.7, EPS)
    t, p = make_inputs(name, (5, 4), np.float64, rng)
    w = make_weights(5, np.float64, rng)
    out, grad = run(name, t, p, w, prm)
    assert_close(out, [getattr(ref, name + "_forward")(t, p, *prm, w)], 1e-12)
    assert_close(grad, getattr(ref, name + "_backward")(t, p, *prm, w), 1e-12)
    gradcheck((lambda p: run(name, t, p, w, prm)[0][0],
               lambda p: [run(name, t, p, w, prm)[1]]), p)
    if gamma == 0.0:                                  # alpha times the crossentropy
        cce = "categorical_crossentropy" + ("_logits" if logits else "")
        o, g = run(cce, t, p, w, () if logits else (EPS,))
        assert_close(out, 0.7 * o, 1e-12)
        assert_close(grad, 0.7 * g, 1e-12)


@pytest.mark.parametrize("name", ["binary_crossentropy", "categorical_crossentropy",
                                  "sparse_categorical_crossentropy", "binary_focal_crossentropy",
                                  "categorical_focal_crossentropy", "kl_divergence"])
def test_clipped_gradient_matches_finite_differences(name, rng):
    """Probabilities on both sides of the clip: the gradient of the clipped expression (a wide
    clip, eps = 0.05, so that finite-difference steps never cross its edges)."""
    eps = 0.05
    params = tuple(eps if v == EPS else v for v in LOSSES[name][0])
    t, p = make_inputs(name, (4, 5), np.float64, rng)
    w = make_weights(4, np.float64, rng)
    p[0] = [0.01, 0.3, 0.3, 0.3, 0.09]               # entry 0 clipped low (row sums to 1)
    p[1] = [0.001, 0.97, 0.001, 0.001, 0.001]         # entry 1 clipped high after normalising
    p[2, 3] = 0.99
    if name == "kl_divergence":
        p[3, 1] = 1.2                                 # above 1: clipped to 1
    if name == "sparse_categorical_crossentropy":
        t[:3] = [0, 1, 2]             # labels on a clipped-low, a clipped-high, a free entry

    def f(p):
        return run(name, t, p, w, params)[0][0]
    gradcheck((f, lambda p: [run(name, t, p, w, params)[1]]), p)
    assert_close(run(name, t, p, w, params)[1],
                 getattr(ref, name + "_backward")(t, p, *params, w), 1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(LOSSES))
def test_in_place_gradient(name, dtype, rng):
    """grad may be y_pred itself."""
    t, p = make_inputs(name, (6, 5), dtype, rng)
    w = make_weights(6, dtype, rng)
    _, grad = run(name, t, p, w)
    pa = p.copy()
    getattr(L, name + "_backward")(t, pa, *LOSSES[name][0], w, pa)
    np.testing.assert_array_equal(pa, grad)


EXTREME_Z = [[1000.0, -1000.0, 0.0], [-1000.0, -1000.0, -1000.0], [-1000.0, 1000.0, 1000.0],
             [1e30, -1e30, 3.0], [88.0, -104.0, 0.5]]
EXTREME_Y = [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["binary_crossentropy_logits", "categorical_crossentropy_logits",
                                  "sparse_categorical_crossentropy_logits",
                                  "binary_focal_crossentropy_logits",
                                  "categorical_focal_crossentropy_logits"])
def test_extreme_logits_stay_finite(name, dtype):
    z = np.array(EXTREME_Z, dtype=dtype)
    y = np.array(EXTREME_Y, dtype=dtype)
    t = np.argmax(y, axis=1) if name.startswith("sparse") else y
    w = np.ones(len(z), dtype=dtype)
    out, grad = run(name, t, z, w)
    assert np.isfinite(out[0]) and np.all(np.isfinite(grad))
    if "focal" not in name:                           # the plain NumPy focal reference overflows
        with np.errstate(all="ignore"):
            assert_close(out, [getattr(ref, name + "_forward")(t, z, *LOSSES[name][0], w)],
                         RTOL[dtype])
            assert_close(grad, getattr(ref, name + "_backward")(t, z, *LOSSES[name][0], w),
                         RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_extreme_focal_logits_match_the_limits(gamma, dtype):
    """Saturated logits: a confident right answer costs ~0, a confident wrong one ~|z| (alpha 1,
    gamma any): the focal factor is ~1 there. Gradients: 0 and +-1 / (N D)."""
    z = np.array([[1e4, -1e4], [-1e4, 1e4]], dtype=dtype)
    y = np.array([[1.0, 0.0], [1.0, 0.0]], dtype=dtype)
    w = np.ones(2, dtype=dtype)
    out, grad = run("binary_focal_crossentropy_logits", y, z, w, (gamma, 0.5, False))
    assert_close(out, [(1e4 + 1e4) / 4.0], 1e-6)      # elements (0,1) and (1,0) are wrong by 1e4
    assert_close(grad, [[0.0, 0.0], [-0.25, 0.25]], 1e-6)
    out, grad = run("categorical_focal_crossentropy_logits", y, z, w, (gamma, 1.0))
    assert_close(out, [2e4 / 2.0], 1e-6)
    assert_close(grad, [[0.0, 0.0], [-0.5, 0.5]], 1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_extreme_regression_errors_stay_finite(dtype):
    t = np.zeros((2, 3), dtype=dtype)
    p = np.array([[1e30, -1e30, 1e-30], [3e38, 0.0, -1e4]], dtype=dtype)
    w = np.ones(2, dtype=dtype)
    for name in ("log_cosh", "hinge", "huber", "mae"):
        out, grad = run(name, t, p, w)
        assert np.isfinite(out[0]) and np.all(np.isfinite(grad)), name
    out, _ = run("log_cosh", t, p, w)
    assert_close(out, [ref.log_cosh_forward(t, p)], RTOL[dtype])
    out, grad = run("msle", np.abs(p), np.abs(p[::-1]), w)
    assert np.isfinite(out[0]) and np.all(np.isfinite(grad))


@pytest.mark.parametrize("dtype", DTYPES)
def test_probabilities_zero_and_one_stay_finite(dtype):
    p = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]], dtype=dtype)
    y = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 1.0]], dtype=dtype)
    w = np.ones(4, dtype=dtype)
    labels = np.array([0, 0, 2, 1])
    for name in ("binary_crossentropy", "categorical_crossentropy",
                 "sparse_categorical_crossentropy", "binary_focal_crossentropy",
                 "categorical_focal_crossentropy", "kl_divergence", "dice", "jaccard", "tversky"):
        t = labels if name.startswith("sparse") else y
        params = LOSSES[name][0]
        out, grad = run(name, t, p, w)
        assert np.isfinite(out[0]) and np.all(np.isfinite(grad)), name
        with np.errstate(all="ignore"):               # the reference divides by the zeros it masks
            assert_close(out, [getattr(ref, name + "_forward")(t, p, *params, w)], RTOL[dtype])
            if "focal" not in name:                   # 0^(gamma - 1) * 0 in the NumPy reference
                assert_close(grad, getattr(ref, name + "_backward")(t, p, *params, w), RTOL[dtype])
    out, _ = run("binary_crossentropy", y, p, w)
    assert out[0] > 0


def test_overlap_losses_of_empty_and_perfect_masks():
    """Empty target predicted empty, and a perfect prediction: score 1, loss 0 (smoothing)."""
    t = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 1.0]])
    for name in ("dice", "jaccard", "tversky"):
        out, grad = run(name, t, t.copy(), np.ones(2))
        assert abs(out[0]) < 1e-15 and np.all(np.isfinite(grad)), name


def test_float64_accumulation(rng):
    """float32 inputs, a sum that float32 accumulation would get visibly wrong."""
    t = np.zeros((1000, 1000), dtype=np.float32)
    p = (1.0 + 1e-3 * rng.standard_normal(t.shape)).astype(np.float32)
    out = poisoned((1,), np.float32)
    L.mse_forward(t, p, np.ones(1000, np.float32), out)
    assert abs(out[0] - ref.mse_forward(t, p)) <= 1e-7 * ref.mse_forward(t, p)


# --------------------------------------------------------------------------------------- embeddings
def run_embedding(name, xs, extra, w):
    out = poisoned((1,), xs[0].dtype)
    getattr(L, name + "_forward")(*xs, *extra, w, out)
    grads = [poisoned(xs[0].shape, xs[0].dtype) for _ in range(2 if name == "contrastive" else 3)]
    getattr(L, name + "_backward")(*xs, *extra, w, *grads)
    return out, grads


def embedding_case(name, shape, dtype, rng, p=2.0):
    """(inputs to the kernel, hyperparameters, reference args)."""
    n, d = shape
    if name == "contrastive":
        x1 = rng.standard_normal(shape)
        x2 = x1 + rng.uniform(0.2, 1.0, (n, 1)) * rng.standard_normal(shape)
        y = (rng.random(n) < 0.5).astype(np.float64)
        return [x1.astype(dtype), x2.astype(dtype), y.astype(dtype)], (1.5, 1e-6)
    a, pos, neg = (rng.standard_normal(shape).astype(dtype) for _ in range(3))
    return [a, pos, neg], (1.0, p, 1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (33, 16), "par"])
@pytest.mark.parametrize("name,p", [("contrastive", None), ("triplet_margin", 2.0),
                                    ("triplet_margin", 1.0), ("triplet_margin", 3.0)])
def test_embedding_losses_match_reference(name, p, shape, dtype, rng):
    if shape == "par":
        size = L._PAR_MIN_CHEAP if name in CHEAP else L._PAR_MIN
        shape = (size // 16 + 1, 16)
    xs, extra = embedding_case(name, shape, dtype, rng, p)
    w = make_weights(shape[0], dtype, rng)
    out, grads = run_embedding(name, xs, extra, w)
    assert_close(out, [getattr(ref, name + "_forward")(*xs, *extra, w)], RTOL[dtype])
    for g, r in zip(grads, getattr(ref, name + "_backward")(*xs, *extra, w)):
        assert g.dtype == dtype
        assert_close(g, r, RTOL[dtype])


@pytest.mark.parametrize("shape", [(1, 1), (5, 3)])
@pytest.mark.parametrize("name,p", [("contrastive", None), ("triplet_margin", 2.0),
                                    ("triplet_margin", 1.5)])
def test_embedding_backward_matches_finite_differences(name, p, shape, rng):
    xs, extra = embedding_case(name, shape, np.float64, rng, p)
    w = make_weights(shape[0], np.float64, rng)
    if name == "triplet_margin":                      # keep every triplet off the hinge's kink
        dp = ref._pnorm(xs[0] - xs[1] + 1e-6, p)
        dn = ref._pnorm(xs[0] - xs[2] + 1e-6, p)
        xs[2][np.abs(dp - dn + 1.0) < 1e-3] += 0.1
    else:
        d = np.sqrt(np.sum((xs[0] - xs[1] + 1e-6) ** 2, axis=1))
        xs[1][np.abs(d - extra[0]) < 1e-3] += 0.1
    k = 2 if name == "contrastive" else 3

    def f(*inputs):
        return run_embedding(name, list(inputs) + xs[k:], extra, w)[0][0]

    def grad_f(*inputs):
        return run_embedding(name, list(inputs) + xs[k:], extra, w)[1]
    gradcheck((f, grad_f), *xs[:k])


def test_embedding_gradients_in_place(rng):
    xs, extra = embedding_case("triplet_margin", (6, 4), np.float64, rng)
    w = make_weights(6, np.float64, rng)
    _, want = run_embedding("triplet_margin", xs, extra, w)
    a, p, n = (x.copy() for x in xs)
    L.triplet_margin_backward(a, p, n, *extra, w, a, p, n)
    for g, wnt in zip((a, p, n), want):
        np.testing.assert_array_equal(g, wnt)
    xs, extra = embedding_case("contrastive", (6, 4), np.float64, rng)
    _, want = run_embedding("contrastive", xs, extra, w)
    x1, x2 = xs[0].copy(), xs[1].copy()
    L.contrastive_backward(x1, x2, xs[2], *extra, w, x1, x2)
    np.testing.assert_array_equal(x1, want[0])
    np.testing.assert_array_equal(x2, want[1])


# ------------------------------------------------------------------------------------------ PyTorch
def torch_loss(name, t, p, w):
    """(weighted loss, d loss / d p) from PyTorch autograd: per-sample losses from torch's own
    functions with reduction="none" where torch has the loss, from formulas where it has not."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    pt = torch.tensor(p, requires_grad=True)
    tt = torch.tensor(t)
    params = LOSSES[name][0]

    def clip_norm(q):                                 # Keras: normalise + clip probabilities
        return torch.clamp(q / q.sum(dim=1, keepdim=True), EPS, 1.0 - EPS)

    if name == "mse":
        per = F.mse_loss(pt, tt, reduction="none").mean(1)
    elif name == "mae":
        per = F.l1_loss(pt, tt, reduction="none").mean(1)
    elif name == "huber":
        per = F.huber_loss(pt, tt, reduction="none", delta=params[0]).mean(1)
    elif name == "log_cosh":
        per = torch.log(torch.cosh(pt - tt)).mean(1)
    elif name == "msle":
        per = ((torch.log1p(torch.clamp(pt, min=EPS)) - torch.log1p(torch.clamp(tt, min=EPS)))
               ** 2).mean(1)
    elif name == "poisson":
        per = F.poisson_nll_loss(pt, tt, log_input=False, full=False, eps=params[0],
                                 reduction="none").mean(1)
    elif name == "hinge":                             # Keras' hinge (not torch's hinge_embedding)
        per = torch.clamp(1.0 - tt * pt, min=0.0).mean(1)
    elif name == "squared_hinge":
        per = (torch.clamp(1.0 - tt * pt, min=0.0) ** 2).mean(1)
    elif name == "kl_divergence":                     # targets >= eps, p inside [eps, 1]
        per = F.kl_div(torch.log(pt), tt, reduction="none").sum(1)
    elif name == "binary_crossentropy":
        per = F.binary_cross_entropy(pt, tt, reduction="none").mean(1)
    elif name == "binary_crossentropy_logits":
        per = F.binary_cross_entropy_with_logits(pt, tt, reduction="none").mean(1)
    elif name.startswith("binary_focal"):
        gamma, alpha = params[0], params[1]
        if name.endswith("logits"):
            bce = F.binary_cross_entropy_with_logits(pt, tt, reduction="none")
            prob = torch.sigmoid(pt)
        else:
            bce = F.binary_cross_entropy(torch.clamp(pt, EPS, 1 - EPS), tt, reduction="none")
            prob = pt
        p_t = tt * prob + (1 - tt) * (1 - prob)
        per = ((tt * alpha + (1 - tt) * (1 - alpha)) * (1 - p_t) ** gamma * bce).mean(1)
    elif name == "categorical_crossentropy":
        per = -(tt * torch.log(clip_norm(pt))).sum(1)
    elif name == "categorical_crossentropy_logits":   # class-probability targets
        per = F.cross_entropy(pt, tt, reduction="none")
    elif name == "sparse_categorical_crossentropy":
        per = F.nll_loss(torch.log(clip_norm(pt)), tt, reduction="none")
    elif name == "sparse_categorical_crossentropy_logits":
        per = F.cross_entropy(pt, tt, reduction="none")
    elif name.startswith("categorical_focal"):
        gamma, alpha = params[0], params[1]
        q = torch.softmax(pt, 1) if name.endswith("logits") else clip_norm(pt)
        logq = F.log_softmax(pt, 1) if name.endswith("logits") else torch.log(q)
        per = -alpha * (tt * (1 - q) ** gamma * logq).sum(1)
    else:                                             # dice, jaccard, tversky
        s = params[-1]
        tp, fp, fn = (tt * pt).sum(1), ((1 - tt) * pt).sum(1), (tt * (1 - pt)).sum(1)
        if name == "dice":
            per = 1 - (2 * tp + s) / (2 * tp + fp + fn + s)
        elif name == "jaccard":
            per = 1 - (tp + s) / (tp + fp + fn + s)
        else:
            per = 1 - (tp + s) / (tp + params[0] * fp + params[1] * fn + s)
    loss = (torch.tensor(w) * per).sum() / len(p)
    loss.backward()
    return loss.detach().numpy(), pt.grad.numpy()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(LOSSES))
def test_matches_torch(name, dtype, rng):
    pytest.importorskip("torch")
    t, p = make_inputs(name, (16, 7), dtype, rng)
    w = make_weights(16, dtype, rng)
    out, grad = run(name, t, p, w)
    lt, gt = torch_loss(name, t, p, w)
    tol = 2e-5 if dtype == np.float32 else 1e-12
    assert_close(out, [lt], tol)
    assert_close(grad, gt, tol)


@pytest.mark.parametrize("name", ["categorical_crossentropy", "sparse_categorical_crossentropy"])
def test_unnormalised_and_clipped_probabilities_match_torch(name, rng):
    pytest.importorskip("torch")
    t, p = make_inputs(name, (6, 4), np.float64, rng)
    w = make_weights(6, np.float64, rng)
    p *= 3.0                                          # rows no longer sum to 1
    p[0, 1:] = 1e-12                                  # row 0 entry 0 clipped high, rest low
    p[1, 2] = 0.0
    out, grad = run(name, t, p, w)
    lt, gt = torch_loss(name, t, p, w)
    assert_close(out, [lt], 1e-12)
    assert_close(grad, gt, 1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [2.0, 1.0, 3.0])
def test_triplet_matches_torch(p, dtype, rng):
    torch = pytest.importorskip("torch")
    xs, extra = embedding_case("triplet_margin", (12, 5), dtype, rng, p)
    w = make_weights(12, dtype, rng)
    out, grads = run_embedding("triplet_margin", xs, extra, w)
    ts = [torch.tensor(x, requires_grad=True) for x in xs]
    per = torch.nn.functional.triplet_margin_loss(*ts, margin=extra[0], p=p, eps=extra[2],
                                                  reduction="none")
    loss = (torch.tensor(w) * per).sum() / 12
    loss.backward()
    tol = 2e-5 if dtype == np.float32 else 1e-12
    assert_close(out, [loss.item()], tol)
    for g, x in zip(grads, ts):
        assert_close(g, x.grad.numpy(), tol)
    # unweighted: torch's mean reduction
    out, _ = run_embedding("triplet_margin", xs, extra, np.ones(12, dtype))
    want = torch.nn.TripletMarginLoss(margin=extra[0], p=p, eps=extra[2])(*ts).item()
    assert_close(out, [want], tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_contrastive_matches_torch_formula(dtype, rng):
    """y d^2 + (1 - y) max(margin - d, 0)^2 with torch's pairwise_distance (x1 - x2 + eps)."""
    torch = pytest.importorskip("torch")
    xs, extra = embedding_case("contrastive", (12, 5), dtype, rng)
    w = make_weights(12, dtype, rng)
    out, grads = run_embedding("contrastive", xs, extra, w)
    x1, x2 = (torch.tensor(x, requires_grad=True) for x in xs[:2])
    y = torch.tensor(xs[2])
    d = torch.nn.functional.pairwise_distance(x1, x2, eps=extra[1])
    per = y * d ** 2 + (1 - y) * torch.clamp(extra[0] - d, min=0.0) ** 2
    loss = (torch.tensor(w) * per).sum() / 12
    loss.backward()
    tol = 2e-5 if dtype == np.float32 else 1e-12
    assert_close(out, [loss.item()], tol)
    assert_close(grads[0], x1.grad.numpy(), tol)
    assert_close(grads[1], x2.grad.numpy(), tol)
