"""Per-sample losses (Keras 3 semantics): ``reduction`` on the built-in loss classes (None /
"none", "sum", "mean", "mean_with_sample_weight"), the functional losses of ``nb.losses``, and the
kernels' per-row forward (an ``out`` of one entry per row) that gives them, against PyTorch
(float64) and float64 NumPy references, with tape gradients checked by central differences."""
import inspect

import numpy as np
import pytest
from conftest import run_pair
from test_kernels_losses import (EMBEDDING, LOSSES, embedding_case, loss_inputs, make_inputs,
                                 make_weights)

import numbanet as nb
import reference as ref
from numbanet import losses as NL
from numbanet import ops
from numbanet.kernels.cpu import losses as CPU
from numbanet.testing import gradcheck

EPS = 1e-7


# ------------------------------------------------------------------------------ kernels, per row
def ref_rows(name, t, p, params, w):
    """w_i l_i from the float64 scalar reference: weights N e_i pick out row i's loss."""
    n = len(p)
    return np.array([getattr(ref, f"{name}_forward")(t, p, *params, n * w[i] * np.eye(n)[i])
                     for i in range(n)])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(LOSSES))
def test_kernel_writes_weighted_rows_when_out_has_a_row_each(name, dtype, rng):
    t, p = make_inputs(name, (7, 5), dtype, rng)
    w = make_weights(7, dtype, rng)
    params = LOSSES[name][0]
    out = np.full(7, np.nan, dtype)
    getattr(CPU, name + "_forward")(t, p, *params, w, out)
    np.testing.assert_allclose(out, ref_rows(name, t, p, params, w),
                               rtol=2e-5 if dtype == np.float32 else 1e-12, atol=1e-12)
    one = np.full(1, np.nan, dtype)                  # one entry: the weighted mean, as before
    getattr(CPU, name + "_forward")(t, p, *params, w, one)
    np.testing.assert_allclose(one[0], out.astype(np.float64).mean(), rtol=1e-5)


@pytest.mark.parametrize("name", ["mse", "categorical_crossentropy_logits", "dice"])
def test_kernel_rows_on_the_parallel_path_match_the_serial_one(name, rng):
    n = CPU._PAR_MIN_CHEAP // 16 + 1 if name in ("mse", "dice") else CPU._PAR_MIN // 16 + 1
    t, p = make_inputs(name, (n, 16), np.float64, rng)
    w = make_weights(n, np.float64, rng)
    params = LOSSES[name][0]
    kernel = getattr(CPU, name + "_forward")
    par, ser = np.empty(n), np.empty(n)
    kernel(t, p, *params, w, par)                    # n * 16 elements: the prange copy
    kernel.serial(t, p, *params, w, ser)
    np.testing.assert_allclose(par, ser, rtol=1e-14)
    np.testing.assert_allclose(ser[:5], ref_rows(name, t[:5], p[:5], params, w[:5]), rtol=1e-12)


@pytest.mark.parametrize("name", EMBEDDING)
def test_embedding_kernels_write_rows(name, rng):
    xs, extra = embedding_case(name, (6, 4), np.float64, rng)
    w = make_weights(6, np.float64, rng)
    out, one = np.empty(6), np.empty(1)
    getattr(CPU, name + "_forward")(*xs, *extra, w, out)
    getattr(CPU, name + "_forward")(*xs, *extra, w, one)
    picks = [getattr(ref, f"{name}_forward")(*xs, *extra, 6 * w[i] * np.eye(6)[i])
             for i in range(6)]
    np.testing.assert_allclose(out, picks, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(one[0], out.mean(), rtol=1e-12)


# ------------------------------------------------------------------ references, per position
def torch_or_numpy(name, t, p, **kw):
    """Per-position losses (reduced over the last axis only, as Keras) in float64: PyTorch's own
    functions where it has the loss, NumPy formulas where it has not."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    pt, tt = torch.tensor(np.asarray(p, np.float64)), torch.tensor(np.asarray(t))
    logits = kw.get("from_logits", False)

    def clip_norm(q):
        return torch.clamp(q / q.sum(-1, keepdim=True), EPS, 1 - EPS)

    if name == "mse":
        out = F.mse_loss(pt, tt, reduction="none").mean(-1)
    elif name == "mae":
        out = F.l1_loss(pt, tt, reduction="none").mean(-1)
    elif name == "huber":
        out = F.huber_loss(pt, tt, reduction="none", delta=kw.get("delta", 1.0)).mean(-1)
    elif name == "poisson":
        out = F.poisson_nll_loss(pt, tt, log_input=False, full=False, eps=EPS,
                                 reduction="none").mean(-1)
    elif name == "kl_divergence":
        q, y = torch.clamp(pt, EPS, 1), torch.clamp(tt, EPS, 1)
        out = F.kl_div(torch.log(q), y, reduction="none").sum(-1)
    elif name == "binary_crossentropy":
        out = (F.binary_cross_entropy_with_logits(pt, tt, reduction="none") if logits else
               F.binary_cross_entropy(torch.clamp(pt, EPS, 1 - EPS), tt, reduction="none"))
        out = out.mean(-1)
    elif name == "categorical_crossentropy":
        out = (F.cross_entropy(pt.movedim(-1, 1), tt.movedim(-1, 1), reduction="none") if logits
               else -(tt * torch.log(clip_norm(pt))).sum(-1))
    elif name == "sparse_categorical_crossentropy":
        lp = F.log_softmax(pt, -1) if logits else torch.log(clip_norm(pt))
        out = F.nll_loss(lp.movedim(-1, 1), tt.long(), reduction="none")
    else:                                             # no torch function: NumPy, float64
        t, p = np.asarray(t, np.float64), np.asarray(p, np.float64)
        e = p - t
        if name == "log_cosh":
            return np.mean(np.logaddexp(e, -e) - np.log(2.0), -1)
        if name == "msle":
            return np.mean((np.log1p(np.maximum(p, EPS)) - np.log1p(np.maximum(t, EPS))) ** 2, -1)
        if name in ("hinge", "squared_hinge"):
            h = np.maximum(1 - t * p, 0)
            return np.mean(h if name == "hinge" else h * h, -1)
        g, a = kw.get("gamma", 2.0), kw.get("alpha", 0.25)
        if name == "binary_focal_crossentropy":
            q = 1 / (1 + np.exp(-p)) if logits else p
            qc = q if logits else np.clip(q, EPS, 1 - EPS)
            bce = -(t * np.log(qc) + (1 - t) * np.log(1 - qc))
            pt_ = t * q + (1 - t) * (1 - q)
            bal = t * a + (1 - t) * (1 - a) if kw.get("apply_class_balancing") else 1.0
            return np.mean(bal * (1 - pt_) ** g * bce, -1)
        if name == "categorical_focal_crossentropy":
            if logits:
                lq = p - np.log(np.sum(np.exp(p - p.max(-1, keepdims=True)), -1,
                                       keepdims=True)) - p.max(-1, keepdims=True)
                q = np.exp(lq)
            else:
                q = np.clip(p / p.sum(-1, keepdims=True), EPS, 1 - EPS)
                lq = np.log(q)
            return -a * np.sum(t * (1 - q) ** g * lq, -1)
        n = len(p)                                    # dice, jaccard, tversky: per sample
        t2, p2 = t.reshape(n, -1), p.reshape(n, -1)
        tp, fp, fn = (t2 * p2).sum(1), ((1 - t2) * p2).sum(1), (t2 * (1 - p2)).sum(1)
        s = kw.get("smooth", EPS)
        if name == "dice":
            return 1 - (2 * tp + s) / (2 * tp + fp + fn + s)
        al, be = (1.0, 1.0) if name == "jaccard" else (kw["alpha"], kw["beta"])
        return 1 - (tp + s) / (tp + al * fp + be * fn + s)
    return out.numpy()


# name -> (loss class, constructor options, target kind, prediction kind)
CASES = {
    "mse": (NL.MeanSquaredError, {}, "real", "real"),
    "mae": (NL.MeanAbsoluteError, {}, "real", "real"),
    "huber": (NL.Huber, {"delta": 0.7}, "real", "real"),
    "log_cosh": (NL.LogCosh, {}, "real", "real"),
    "msle": (NL.MeanSquaredLogarithmicError, {}, "pos", "pos"),
    "poisson": (NL.Poisson, {}, "pos", "pos"),
    "hinge": (NL.Hinge, {}, "pm1", "real"),
    "squared_hinge": (NL.SquaredHinge, {}, "pm1", "real"),
    "kl_divergence": (NL.KLDivergence, {}, "dist", "prob"),
    "binary_crossentropy": (NL.BinaryCrossentropy, {}, "unit", "prob"),
    "binary_crossentropy logits": (NL.BinaryCrossentropy, {"from_logits": True}, "unit",
                                   "real"),
    "categorical_crossentropy": (NL.CategoricalCrossentropy, {}, "dist", "prob"),
    "categorical_crossentropy logits": (NL.CategoricalCrossentropy, {"from_logits": True},
                                        "dist", "real"),
    "sparse_categorical_crossentropy": (NL.SparseCategoricalCrossentropy, {}, "labels", "prob"),
    "sparse_categorical_crossentropy logits": (NL.SparseCategoricalCrossentropy,
                                               {"from_logits": True}, "labels", "real"),
    "binary_focal_crossentropy": (NL.BinaryFocalCrossentropy,
                                  {"apply_class_balancing": True, "gamma": 1.5}, "unit", "prob"),
    "binary_focal_crossentropy logits": (NL.BinaryFocalCrossentropy, {"from_logits": True},
                                         "unit", "real"),
    "categorical_focal_crossentropy": (NL.CategoricalFocalCrossentropy, {"alpha": 0.4},
                                       "dist", "prob"),
    "categorical_focal_crossentropy logits": (NL.CategoricalFocalCrossentropy,
                                              {"from_logits": True, "gamma": 1.0}, "dist",
                                              "real"),
    "dice": (NL.Dice, {"smooth": 0.01}, "mask", "prob"),
    "jaccard": (NL.Jaccard, {}, "mask", "prob"),
    "tversky": (NL.Tversky, {"alpha": 0.3, "beta": 0.7}, "mask", "prob"),
}


def data(case, shape, rng):
    """(y_true, y_pred) float64 for ``case`` and prediction ``shape`` (batch, ..., last)."""
    _, _, tk, pk = CASES[case]
    return loss_inputs(tk, pk, shape, rng)


def expected(case, t, p):
    cls, kw, _, _ = CASES[case]
    return torch_or_numpy(case.split()[0], t, p, **kw)


SHAPES = [(6, 4), (5, 3, 4), (1, 3)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("case", list(CASES))
def test_reduction_none_matches_torch_or_numpy(case, shape, rng):
    cls, kw, _, _ = CASES[case]
    t, p = data(case, shape, rng)
    got = cls(**kw, reduction=None)(t, p)
    want = expected(case, t, p)
    assert got.shape == want.shape == (shape[:1] if cls.samplewise else shape[:-1])
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(cls(**kw, reduction="none")(t, p), got, rtol=0)


@pytest.mark.parametrize("case", list(CASES))
def test_sum_and_means_with_sample_weights(case, rng):
    cls, kw, _, _ = CASES[case]
    t, p = data(case, (5, 3, 4), rng)
    sw = rng.uniform(0.1, 2.0, 5)
    sw[2] = 0.0
    values = expected(case, t, p)
    weighted = values * sw.reshape((5,) + (1,) * (values.ndim - 1))
    np.testing.assert_allclose(cls(**kw, reduction=None)(t, p, sample_weight=sw), weighted,
                               rtol=1e-10, atol=1e-14)
    assert cls(**kw, reduction="sum")(t, p, sample_weight=sw) == pytest.approx(weighted.sum(),
                                                                               rel=1e-10)
    assert cls(**kw, reduction="mean_with_sample_weight")(t, p, sample_weight=sw) == \
        pytest.approx(weighted.sum() / sw.sum(), rel=1e-10)
    mean = cls(**kw, reduction="mean")(t, p, sample_weight=sw)
    assert mean == pytest.approx(weighted.mean(), rel=1e-10)
    assert mean == cls(**kw)(t, p, sample_weight=sw)       # "mean" is "sum_over_batch_size"


@pytest.mark.parametrize("case", list(CASES))
def test_per_sample_tape_gradient_matches_central_differences(case, rng):
    """The tape of sum(values * g) for random g: the backward kernel with row weights g N."""
    cls, kw, _, _ = CASES[case]
    shape = (4, 2, 3) if not cls.samplewise else (3, 2, 4)
    t, p = data(case, shape, rng)
    loss = cls(**kw, reduction=None)
    gradcheck(lambda q: loss(t, q), p, rtol=1e-5, atol=1e-8)
    sw = rng.uniform(0.1, 2.0, shape[0])
    gradcheck(lambda q: cls(**kw, reduction="sum")(t, q, sample_weight=sw), p)


@pytest.mark.parametrize("reduction", ["sum", "mean_with_sample_weight"])
@pytest.mark.parametrize("case", ["mse", "categorical_crossentropy logits", "dice"])
def test_gradient_method_follows_the_reduction(case, reduction, rng):
    """``loss.gradient`` (the model's path: kernels with scaled weights) is the gradient of the
    reduced value."""
    cls, kw, _, _ = CASES[case]
    t, p = data(case, (4, 3, 5), rng)
    sw = rng.uniform(0.1, 2.0, 4)
    loss = cls(**kw, reduction=reduction)
    gradcheck(loss, t, p)
    with nb.GradientTape() as tape:
        q = ops.convert_to_tensor(p)
        tape.watch(q)
        value = loss(t, q, sample_weight=sw)
    np.testing.assert_allclose(loss.gradient(t, p, sample_weight=sw),
                               np.asarray(tape.gradient(value, q)), rtol=1e-10, atol=1e-14)


def test_masked_positions_follow_the_reduction(rng):
    """A model's masked per-position path: "sum" adds the unmasked weighted values,
    "mean_with_sample_weight" divides that by the sum of the weights over unmasked positions."""
    be = nb.backend.get_backend("cpu")
    t, p = data("mse", (3, 4, 2), rng)
    mask = (rng.random((3, 4)) < 0.7).astype(np.float64)
    sw = rng.uniform(0.5, 2.0, 3)
    wm = sw[:, None] * mask
    values = ((p - t) ** 2).mean(-1) * wm
    for reduction, want in (("sum", values.sum()), ("sum_over_batch_size",
                                                    values.sum() / mask.sum()),
                            ("mean_with_sample_weight", values.sum() / wm.sum())):
        loss = NL.MeanSquaredError(reduction=reduction)
        got, _ = loss.value_and_grad_masked(be, t, p, sw, mask, gradients=False)
        assert float(got[0]) == pytest.approx(want, rel=1e-12), reduction


# ------------------------------------------------------------------------------ functional losses
FUNCTIONS = {"mean_squared_error": "mse", "mean_absolute_error": "mae",
             "mean_squared_logarithmic_error": "msle", "huber": "huber", "log_cosh": "log_cosh",
             "poisson": "poisson", "hinge": "hinge", "squared_hinge": "squared_hinge",
             "kl_divergence": "kl_divergence", "binary_crossentropy": "binary_crossentropy",
             "categorical_crossentropy": "categorical_crossentropy",
             "sparse_categorical_crossentropy": "sparse_categorical_crossentropy",
             "binary_focal_crossentropy": "binary_focal_crossentropy",
             "categorical_focal_crossentropy": "categorical_focal_crossentropy"}


@pytest.mark.parametrize("fname", list(FUNCTIONS))
def test_functional_losses_give_per_sample_values(fname, rng):
    case = FUNCTIONS[fname]
    fn = getattr(NL, fname)
    t, p = data(case, (4, 3, 5), rng)
    got = fn(t, p)
    assert isinstance(got, np.ndarray) and got.shape == (4, 3)
    np.testing.assert_allclose(got, torch_or_numpy(case, t, p), rtol=1e-10, atol=1e-14)
    q = ops.convert_to_tensor(p)
    with nb.GradientTape() as tape:                       # tensors in: a Tensor on the tape
        tape.watch(q)
        out = fn(t, q)
        total = ops.sum(out)
    assert isinstance(out, nb.Tensor) and out.shape == (4, 3)
    np.testing.assert_allclose(np.asarray(tape.gradient(total, q)),
                               NL.get(fname).__class__(reduction="sum").gradient(t, p),
                               rtol=1e-12, atol=1e-15)
    gradcheck(lambda x: fn(t, x), p)
    params = list(inspect.signature(fn).parameters)
    assert params[:2] == ["y_true", "y_pred"]
    assert "reduction" not in params and "name" not in params


def test_functional_keras_signatures_and_options(rng):
    sig = inspect.signature(NL.binary_focal_crossentropy)
    assert list(sig.parameters) == ["y_true", "y_pred", "apply_class_balancing", "alpha", "gamma",
                                    "from_logits"]
    assert list(inspect.signature(NL.huber).parameters) == ["y_true", "y_pred", "delta"]
    t, p = data("binary_crossentropy logits", (6, 3), rng)
    np.testing.assert_allclose(NL.binary_crossentropy(t, p, from_logits=True),
                               torch_or_numpy("binary_crossentropy", t, p, from_logits=True),
                               rtol=1e-10)
    np.testing.assert_allclose(NL.huber(t, p, 0.3), torch_or_numpy("huber", t, p, delta=0.3),
                               rtol=1e-10)
    with pytest.raises(TypeError):
        NL.huber(t, p, sample_weight=np.ones(6))
    with pytest.raises(ValueError, match="delta"):
        NL.huber(t, p, delta=-1.0)


def test_function_names_leave_the_registry_alone():
    assert isinstance(NL.get("mse"), NL.MeanSquaredError)
    assert isinstance(NL.get("mean_squared_error"), NL.MeanSquaredError)
    assert isinstance(NL.get("binary_crossentropy"), NL.BinaryCrossentropy)
    assert isinstance(NL.get("kld"), NL.KLDivergence)
    assert NL.LOSSES["huber"] is NL.Huber and callable(NL.huber)
    assert all(isinstance(v, type) for v in NL.LOSSES.values())


def test_vae_tutorial_reconstruction_loss_trains(rng):
    """Keras' VAE tutorial: mean over the batch of the per-pixel binary crossentropy summed over
    the image, on (N, 28, 28, 1) images, in a GradientTape loop."""
    x = (rng.random((8, 28, 28, 1)) < 0.3).astype(np.float32)
    model = nb.Sequential([nb.layers.Flatten(), nb.layers.Dense(8, activation="relu"),
                           nb.layers.Dense(28 * 28, activation="sigmoid"),
                           nb.layers.Reshape((28, 28, 1))])
    model(x)
    opt = nb.optimizers.Adam(0.01)
    history = []
    for _ in range(15):
        with nb.GradientTape() as tape:
            reconstruction = model(x, training=True)
            loss = ops.mean(ops.sum(NL.binary_crossentropy(x, reconstruction), axis=(1, 2)))
        grads = tape.gradient(loss, model.trainable_weights)
        opt.apply_gradients(zip(grads, model.trainable_weights))
        history.append(float(loss))
    assert history[-1] < 0.8 * history[0]


def test_vae_expression_value(rng):
    x = (rng.random((3, 28, 28, 1)) < 0.3).astype(np.float64)
    r = rng.uniform(0.05, 0.95, x.shape)
    got = float(ops.mean(ops.sum(NL.binary_crossentropy(x, ops.convert_to_tensor(r)),
                                 axis=(1, 2))))
    want = torch_or_numpy("binary_crossentropy", x, r).sum((1, 2)).mean()
    assert got == pytest.approx(want, rel=1e-12)


# ------------------------------------------------------------------------ configs and bad values
@pytest.mark.parametrize("name", sorted(NL.CLASSES))
def test_config_round_trip_keeps_the_reduction(name):
    cls = NL.CLASSES[name]
    loss = cls(reduction="sum")
    config = loss.get_config()
    assert config["reduction"] == "sum"
    assert cls.from_config(config).reduction == "sum"
    assert cls.from_config(cls(reduction=None).get_config()).reduction is None
    assert cls().get_config()["reduction"] == "sum_over_batch_size"


@pytest.mark.parametrize("bad", ["avg", "SUM", 1, True])
def test_bad_reduction_is_a_clear_error(bad):
    with pytest.raises(ValueError, match=r"reduction must be None or one of .*got " +
                       repr(bad).replace("'", "'?")):
        NL.MeanSquaredError(reduction=bad)


def test_per_sample_values_are_no_training_loss(rng):
    t, p = rng.standard_normal((4, 2)), rng.standard_normal((4, 2))
    with pytest.raises(ValueError, match=r"MeanSquaredError: reduction=None gives per-sample"):
        NL.MeanSquaredError(reduction=None).gradient(t, p)
    model = nb.Sequential([nb.layers.Dense(2)])
    model.compile("sgd", NL.MeanSquaredError(reduction="none"))
    with pytest.raises(ValueError, match="reduction='none'"):
        model.fit(t, p, epochs=1, verbose=0)


def test_custom_loss_reductions(rng):
    class Cube(NL.Loss):
        def call(self, y_true, y_pred):
            return ops.mean(ops.abs((y_pred - y_true) ** 3), axis=-1)

    t, p = rng.standard_normal((5, 2, 3)), rng.standard_normal((5, 2, 3))
    sw = rng.uniform(0.5, 2.0, 5)
    values = np.mean(np.abs(p - t) ** 3, -1) * sw[:, None]
    np.testing.assert_allclose(Cube(reduction=None)(t, p, sample_weight=sw), values, rtol=1e-12)
    assert Cube(reduction="mean_with_sample_weight")(t, p, sample_weight=sw) == \
        pytest.approx(values.sum() / sw.sum(), rel=1e-12)


# ----------------------------------------------------------------------------- embedding losses
def test_triplet_reduction_none_matches_torch(rng):
    torch = pytest.importorskip("torch")
    a, pos, neg = (rng.standard_normal((6, 5)) for _ in range(3))
    sw = rng.uniform(0.1, 2.0, 6)
    want = torch.nn.functional.triplet_margin_loss(
        *(torch.tensor(v) for v in (a, pos, neg)), margin=0.5, reduction="none").numpy()
    loss = NL.TripletMarginLoss(margin=0.5, reduction=None)
    np.testing.assert_allclose(loss(a, pos, neg), want, rtol=1e-12)
    np.testing.assert_allclose(loss(a, pos, neg, sample_weight=sw), want * sw, rtol=1e-12)
    summed = NL.TripletMarginLoss(margin=0.5, reduction="sum")
    assert summed(a, pos, neg) == pytest.approx(want.sum(), rel=1e-12)
    grads = summed.gradient(a, pos, neg)
    for g, h in zip(grads, NL.TripletMarginLoss(margin=0.5).gradient(a, pos, neg)):
        np.testing.assert_allclose(g, 6 * h, rtol=1e-12)


def test_contrastive_reduction_none_matches_numpy(rng):
    x1, x2 = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    y = (rng.random(5) < 0.5).astype(np.float64)
    d = np.linalg.norm(x1 - x2 + 1e-6, axis=1)
    want = y * d ** 2 + (1 - y) * np.maximum(1.0 - d, 0) ** 2
    np.testing.assert_allclose(NL.ContrastiveLoss(reduction=None)(x1, x2, y), want, rtol=1e-12)
    assert NL.ContrastiveLoss(reduction="sum")(x1, x2, y) == pytest.approx(want.sum(), rel=1e-12)


# ------------------------------------------------------------------------ CUDA (the simulator)
@pytest.fixture
def small_launches(monkeypatch):
    """CUDA kernels usable (the simulator), with test_cuda_losses' tiny blocks and grids (32
    threads, 3 blocks, rows of 4 lanes 2 to a block) and the launch spec checks."""
    from numbanet import _cuda
    if _cuda.cuda is None or not (_cuda.is_simulator() or _cuda.is_available()):
        pytest.skip(f"CUDA kernels cannot run here: {_cuda.unavailable_reason()}")
    from numbanet.kernels.cuda import _common
    monkeypatch.setenv("NUMBANET_ALLOW_CUDASIM", "1")
    for name, value in (("threads", 32), ("max_blocks", 3), ("row_block", (4, 2)),
                        ("check_signatures", True)):
        monkeypatch.setattr(_common.config, name, value)


def test_cuda_kernels_write_rows_like_the_cpu(rng, small_launches):
    """Flat kernels: 120 rows > 3 blocks x 32 threads (the row loop goes round twice); row
    kernels: 9 rows in 5 groups of 2 on 3 blocks."""
    for name, shape in (("mse", (120, 2)), ("binary_focal_crossentropy", (4, 3)),
                        ("categorical_crossentropy_logits", (9, 5)), ("dice", (9, 6)),
                        ("sparse_categorical_crossentropy", (9, 3))):
        t, p = make_inputs(name, shape, np.float64, rng)
        w = make_weights(shape[0], np.float64, rng)
        params = list(LOSSES[name][0])
        (c,), (g,) = run_pair("losses", f"{name}_forward", [t, p, *params, w],
                              [((shape[0],), np.float64)])
        np.testing.assert_allclose(g, c, rtol=1e-12, atol=1e-15, err_msg=name)
        np.testing.assert_allclose(g, ref_rows(name, t, p, params, w), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("case", ["mse", "sparse_categorical_crossentropy logits", "dice"])
def test_cuda_per_sample_values_and_tape_gradient(case, rng, allow_cuda):
    cls, kw, _, _ = CASES[case]
    t, p = data(case, (3, 2, 4), rng)
    g = rng.standard_normal((3,) if cls.samplewise else (3, 2))
    grads, values = [], []
    for device in ("cpu", "cuda"):
        q = ops.convert_to_tensor(p, device=device)
        with nb.GradientTape() as tape:
            tape.watch(q)
            v = cls(**kw, reduction=None)(t, q)
            total = ops.sum(ops.multiply(v, ops.convert_to_tensor(g, device=device)))
        assert v.device == device
        values.append(np.asarray(v))
        grads.append(np.asarray(tape.gradient(total, q)))
    np.testing.assert_allclose(values[1], values[0], rtol=1e-12)
    np.testing.assert_allclose(values[0], expected(case, t, p), rtol=1e-10)
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-12, atol=1e-15)


def test_cuda_functional_loss_on_the_tape(rng, allow_cuda):
    t, p = data("binary_crossentropy", (2, 3, 4), rng)
    q = ops.convert_to_tensor(p, device="cuda")
    with nb.GradientTape() as tape:
        tape.watch(q)
        v = NL.binary_crossentropy(t, q)
        total = ops.mean(ops.sum(v, axis=1))
    assert v.device == "cuda" and v.shape == (2, 3)
    np.testing.assert_allclose(np.asarray(v), torch_or_numpy("binary_crossentropy", t, p),
                               rtol=1e-10)
    np.testing.assert_allclose(np.asarray(tape.gradient(total, q)),
                               NL.BinaryCrossentropy(reduction="sum").gradient(t, p) / 2,
                               rtol=1e-12, atol=1e-15)
