"""Loss classes (numbanet.losses): values and gradients with sample and class weights, the
backend forward/backward path, class weights against PyTorch's ``weight=``, string names,
configs, argument errors, embedding losses, and training with the new losses."""
import json

import numpy as np
import pytest

import numbanet as nb
import reference as ref
from numbanet.backend import get_backend
from numbanet.testing import gradcheck

LS = nb.losses
EPS = 1e-7

# (class, kwargs, reference kernel, reference hyperparameters, kind of y_true, kind of y_pred)
CASES = [
    (LS.MeanSquaredError, {}, "mse", (), "real", "real"),
    (LS.MeanAbsoluteError, {}, "mae", (), "real", "real"),
    (LS.Huber, {"delta": 0.5}, "huber", (0.5,), "real", "real"),
    (LS.LogCosh, {}, "log_cosh", (), "real", "real"),
    (LS.MeanSquaredLogarithmicError, {}, "msle", (EPS,), "pos", "pos"),
    (LS.Poisson, {}, "poisson", (EPS,), "pos", "pos"),
    (LS.Hinge, {}, "hinge", (), "pm1", "real"),
    (LS.SquaredHinge, {}, "squared_hinge", (), "pm1", "real"),
    (LS.KLDivergence, {}, "kl_divergence", (EPS,), "dist", "prob"),
    (LS.BinaryCrossentropy, {}, "binary_crossentropy", (EPS,), "unit", "prob"),
    (LS.BinaryCrossentropy, {"from_logits": True}, "binary_crossentropy_logits", (), "unit",
     "real"),
    (LS.BinaryFocalCrossentropy, {}, "binary_focal_crossentropy", (2.0, 0.25, False, EPS),
     "unit", "prob"),
    (LS.BinaryFocalCrossentropy, {"apply_class_balancing": True, "alpha": 0.4, "gamma": 1.5,
                                  "from_logits": True},
     "binary_focal_crossentropy_logits", (1.5, 0.4, True), "unit", "real"),
    (LS.CategoricalCrossentropy, {}, "categorical_crossentropy", (EPS,), "dist", "prob"),
    (LS.CategoricalCrossentropy, {"from_logits": True}, "categorical_crossentropy_logits", (),
     "dist", "real"),
    (LS.SparseCategoricalCrossentropy, {}, "sparse_categorical_crossentropy", (EPS,), "labels",
     "prob"),
    (LS.SparseCategoricalCrossentropy, {"from_logits": True},
     "sparse_categorical_crossentropy_logits", (), "labels", "real"),
    (LS.CategoricalFocalCrossentropy, {}, "categorical_focal_crossentropy", (2.0, 0.25, EPS),
     "dist", "prob"),
    (LS.CategoricalFocalCrossentropy, {"alpha": 0.5, "gamma": 0.5, "from_logits": True},
     "categorical_focal_crossentropy_logits", (0.5, 0.5), "dist", "real"),
    (LS.Dice, {}, "dice", (EPS,), "mask", "prob"),
    (LS.Jaccard, {"smooth": 1.0}, "jaccard", (1.0,), "mask", "prob"),
    (LS.Tversky, {"alpha": 0.7, "beta": 0.3}, "tversky", (0.7, 0.3, EPS), "mask", "prob"),
]
IDS = [f"{c[0].__name__}-{c[2]}" for c in CASES]


def targets(kind, shape, rng):
    n, c = shape
    if kind == "real":
        return rng.standard_normal(shape)
    if kind == "pos":
        return rng.uniform(0.0, 3.0, shape)
    if kind == "pm1":
        return np.where(rng.random(shape) < 0.5, -1.0, 1.0)
    if kind == "unit":
        return rng.random(shape)
    if kind == "mask":
        return (rng.random(shape) < 0.5).astype(np.float64)
    if kind == "dist":
        t = rng.random(shape)
        return t / t.sum(axis=1, keepdims=True)
    return rng.integers(0, c, n)


def predictions(kind, shape, rng):
    if kind == "real":
        return 2.0 * rng.standard_normal(shape)
    if kind == "pos":
        return rng.uniform(0.0, 3.0, shape)
    return rng.uniform(0.02, 0.98, shape)


def close(a, b, rtol=1e-12):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=rtol,
                               atol=rtol * max(1e-300, float(np.max(np.abs(b)))))


@pytest.mark.parametrize("cls,kwargs,kernel,params,tkind,pkind", CASES, ids=IDS)
def test_value_and_gradient_with_sample_weights(cls, kwargs, kernel, params, tkind, pkind, rng):
    loss = cls(**kwargs)
    t, p = targets(tkind, (6, 4), rng), predictions(pkind, (6, 4), rng)
    w = rng.uniform(0.0, 2.0, 6)
    close(loss(t, p), getattr(ref, kernel + "_forward")(t, p, *params))
    close(loss(t, p, sample_weight=w), getattr(ref, kernel + "_forward")(t, p, *params, w))
    close(loss(t, p, sample_weight=w[:, None]), getattr(ref, kernel + "_forward")(t, p, *params, w))
    g = loss.gradient(t, p, sample_weight=w)
    assert g.shape == p.shape
    close(g, getattr(ref, kernel + "_backward")(t, p, *params, w))
    close(loss.gradient(t, p), getattr(ref, kernel + "_backward")(t, p, *params))


@pytest.mark.parametrize("cls,kwargs,kernel,params,tkind,pkind", CASES, ids=IDS)
def test_gradcheck(cls, kwargs, kernel, params, tkind, pkind, rng):
    loss = cls(**kwargs)
    t, p = targets(tkind, (3, 4), rng), predictions(pkind, (3, 4), rng)
    if kernel == "mae":
        p[np.abs(p - t) < 1e-3] += 0.01
    if kernel in ("hinge", "squared_hinge"):
        p[np.abs(1.0 - t * p) < 1e-3] += 0.01
    gradcheck(loss, t, p)


@pytest.mark.parametrize("cls,kwargs,kernel,params,tkind,pkind",
                         [c for c in CASES if c[4] != "labels"],
                         ids=[i for i, c in zip(IDS, CASES) if c[4] != "labels"])
def test_float32_and_targets_of_other_shapes(cls, kwargs, kernel, params, tkind, pkind, rng):
    """float32 predictions, per-sample outputs of shape (2, 3): elementwise and per-sample
    losses flatten each sample; losses over the class axis (crossentropies, KL) treat the
    leading axes as positions, each a row of 3 classes, averaged over all positions (Keras)."""
    loss = cls(**kwargs)
    rows = (10, 3) if loss.rowwise else (5, 6)
    t, p = targets(tkind, rows, rng), predictions(pkind, rows, rng)
    got = loss(t.reshape(5, 2, 3), p.reshape(5, 2, 3).astype(np.float32))
    close(got, getattr(ref, kernel + "_forward")(t, p.astype(np.float32), *params), 2e-6)
    g = loss.gradient(t.reshape(5, 2, 3), p.reshape(5, 2, 3).astype(np.float32))
    assert g.shape == (5, 2, 3) and g.dtype == np.float32


def test_backend_forward_backward_and_cached_ones(rng):
    be = get_backend("cpu")
    loss = LS.CategoricalCrossentropy()
    t, z = targets("dist", (5, 3), rng), predictions("real", (5, 3), rng)
    out = loss.forward(be, t, z, logits=True)
    assert out.shape == (1,)
    close(out[0], ref.categorical_crossentropy_logits_forward(t, z))
    w = rng.random(5)
    close(loss.forward(be, t, z, w, logits=True)[0],
          ref.categorical_crossentropy_logits_forward(t, z, w))
    close(loss.backward(be, t, z, weights=w, logits=True),
          ref.categorical_crossentropy_logits_backward(t, z, w))
    ones = loss._weights(be, None, 5, np.float64)
    assert ones is loss._weights(be, None, 5, np.float64)           # cached per (be, N, dtype)
    assert ones is not loss._weights(be, None, 5, np.float32)
    np.testing.assert_array_equal(ones, np.ones(5))
    with pytest.raises(ValueError, match=r"weights must have shape \(5,\)"):
        loss.forward(be, t, z, np.ones(4))


def test_registered_names():
    expected = {
        "mse": LS.MeanSquaredError, "mae": LS.MeanAbsoluteError, "huber": LS.Huber,
        "log_cosh": LS.LogCosh, "logcosh": LS.LogCosh, "msle": LS.MeanSquaredLogarithmicError,
        "mean_squared_logarithmic_error": LS.MeanSquaredLogarithmicError, "poisson": LS.Poisson,
        "kl_divergence": LS.KLDivergence, "kld": LS.KLDivergence, "hinge": LS.Hinge,
        "squared_hinge": LS.SquaredHinge, "binary_crossentropy": LS.BinaryCrossentropy,
        "binary_focal_crossentropy": LS.BinaryFocalCrossentropy,
        "categorical_focal_crossentropy": LS.CategoricalFocalCrossentropy, "dice": LS.Dice,
        "jaccard": LS.Jaccard, "iou": LS.Jaccard, "tversky": LS.Tversky,
        "sparse_categorical_crossentropy": LS.SparseCategoricalCrossentropy,
    }
    for name, cls in expected.items():
        assert type(LS.get(name)) is cls, name
        assert type(LS.get(name.upper())) is cls
    inst = LS.Dice()
    assert LS.get(inst) is inst
    with pytest.raises(ValueError, match="unknown loss 'focal'; valid names are .*dice.*tversky"):
        LS.get("focal")
    for cls in (LS.ContrastiveLoss, LS.TripletMarginLoss, LS.Tversky, LS.LogCosh):
        assert LS.CLASSES[cls.__name__] is cls


@pytest.mark.parametrize("loss", [
    LS.Huber(0.3), LS.BinaryFocalCrossentropy(True, 0.4, 1.0, from_logits=True,
                                              class_weight={0: 1.0, 1: 3.0}),
    LS.CategoricalFocalCrossentropy(0.3, 1.0, class_weight="balanced"),
    LS.SparseCategoricalCrossentropy(class_weight={2: 0.5, 0: 2}), LS.Tversky(0.2, 0.8, 0.5),
    LS.Dice(0.1), LS.KLDivergence(), LS.ContrastiveLoss(2.0), LS.TripletMarginLoss(0.5, 1.0),
    LS.BinaryCrossentropy(name="bce")], ids=lambda l: type(l).__name__)
def test_config_round_trips_through_json(loss):
    config = json.loads(json.dumps(loss.get_config()))
    again = type(loss).from_config(config)
    assert again.get_config() == loss.get_config()
    assert vars(again).keys() >= {"name"} and again.name == loss.name


# ------------------------------------------------------------------------------------ class weights
def test_sparse_class_weights_match_torch_weight(rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    cw = {0: 0.5, 1: 2.0, 2: 1.5}
    y = rng.integers(0, 4, 12)                        # class 3 has no weight: 1
    z = predictions("real", (12, 4), rng)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    tw = torch.tensor([0.5, 2.0, 1.5, 1.0], dtype=torch.float64)
    for from_logits, x in ((True, z), (False, p)):
        loss = LS.SparseCategoricalCrossentropy(from_logits=from_logits, class_weight=cw)
        np.testing.assert_array_equal(loss.sample_weights(y),
                                      [cw.get(int(c), 1.0) for c in y])
        xt = torch.tensor(x, requires_grad=True)
        logq = F.log_softmax(xt, 1) if from_logits else torch.log(xt / xt.sum(1, keepdim=True))
        want = F.nll_loss(logq, torch.tensor(y), weight=tw, reduction="sum") / 12
        want.backward()
        close(loss(y, x), want.item())
        close(loss.gradient(y, x), xt.grad.numpy())
        # torch's "mean" divides by the summed weights instead of N
        close(loss(y, x) * 12 / loss.sample_weights(y).sum(),
              F.nll_loss(logq.detach(), torch.tensor(y), weight=tw).item())


def test_categorical_and_focal_class_weights(rng):
    torch = pytest.importorskip("torch")
    cw = {0: 3.0, 2: 0.25}
    y = rng.integers(0, 3, 10)
    onehot = np.eye(3)[y]
    z = predictions("real", (10, 3), rng)
    loss = LS.CategoricalCrossentropy(from_logits=True, class_weight=cw)
    want = torch.nn.functional.cross_entropy(torch.tensor(z), torch.tensor(y),
                                             weight=torch.tensor([3.0, 1.0, 0.25],
                                                                 dtype=torch.float64),
                                             reduction="sum").item() / 10
    close(loss(onehot, z), want)
    soft = targets("dist", (10, 3), rng)
    close(loss.sample_weights(soft), soft @ [3.0, 1.0, 0.25])
    focal = LS.CategoricalFocalCrossentropy(from_logits=True, class_weight=cw)
    sw = focal.sample_weights(soft)
    close(focal(soft, z), ref.categorical_focal_crossentropy_logits_forward(soft, z, 2.0, 0.25, sw))
    close(focal(soft, z, sample_weight=np.arange(10.0)),
          ref.categorical_focal_crossentropy_logits_forward(soft, z, 2.0, 0.25, sw * np.arange(10)))


def test_binary_class_weights_match_torch_weight(rng):
    torch = pytest.importorskip("torch")
    y = (rng.random(16) < 0.3).astype(np.float64)
    p = predictions("prob", (16, 1), rng)
    loss = LS.BinaryCrossentropy(class_weight={0: 0.4, 1: 2.5})
    sw = loss.sample_weights(y)
    np.testing.assert_array_equal(sw, np.where(y == 1, 2.5, 0.4))
    pt = torch.tensor(p[:, 0], requires_grad=True)
    want = torch.nn.functional.binary_cross_entropy(pt, torch.tensor(y), weight=torch.tensor(sw),
                                                    reduction="sum") / 16
    want.backward()
    close(loss(y, p), want.item())
    close(loss.gradient(y, p)[:, 0], pt.grad.numpy())
    # several outputs per sample: the mean of the elements' class weights
    yy = (rng.random((4, 3)) < 0.5).astype(np.float64)
    close(loss.sample_weights(yy), np.mean(np.where(yy == 1, 2.5, 0.4), axis=1))
    focal = LS.BinaryFocalCrossentropy(class_weight={1: 2.0})
    close(focal(y, p), ref.binary_focal_crossentropy_forward(y, p, 2.0, 0.25, False, EPS,
                                                             np.where(y == 1, 2.0, 1.0)))


def test_balanced_class_weights(rng):
    y = np.array([0, 0, 0, 0, 0, 0, 1, 1, 2, 2])
    loss = LS.SparseCategoricalCrossentropy(class_weight="balanced")
    want = {0: 10 / (3 * 6), 1: 10 / (3 * 2), 2: 10 / (3 * 2)}     # n / (classes * count)
    np.testing.assert_allclose(loss.sample_weights(y), [want[c] for c in y])
    # adapt learns the table once; later calls use it, whatever their batch holds
    loss.adapt(y)
    batch = np.array([1, 1, 0])
    np.testing.assert_allclose(loss.sample_weights(batch), [want[c] for c in batch])
    p = predictions("prob", (3, 3), rng)
    close(loss(batch, p), ref.sparse_categorical_crossentropy_forward(
        batch, p, EPS, [want[c] for c in batch]))
    # without adapt: computed from the call's own targets
    fresh = LS.SparseCategoricalCrossentropy(class_weight="balanced")
    np.testing.assert_allclose(fresh.sample_weights(batch), [3 / (2 * 2), 3 / (2 * 2), 3 / 2])
    # one-hot: the same weights; absent classes weigh 1
    cat = LS.CategoricalCrossentropy(class_weight="balanced").adapt(np.eye(4)[y])
    np.testing.assert_allclose(cat.sample_weights(np.eye(4)[[0, 3, 2]]),
                               [want[0], 1.0, want[2]])
    # binary: counts of 0 and 1 over all elements
    yb = np.array([[1.0], [0.0], [0.0], [0.0]])
    binary = LS.BinaryCrossentropy(class_weight="balanced")
    np.testing.assert_allclose(binary.sample_weights(yb), [4 / (2 * 1), 4 / 6, 4 / 6, 4 / 6])
    assert LS.MeanSquaredError().adapt(yb).sample_weights(yb) is None
    assert LS.BinaryCrossentropy().sample_weights(yb) is None


def test_hinge_converts_zero_one_targets(rng):
    p = predictions("real", (5, 3), rng)
    y01 = (rng.random((5, 3)) < 0.5).astype(np.float64)
    for cls in (LS.Hinge, LS.SquaredHinge):
        close(cls()(y01, p), cls()(2 * y01 - 1, p))
        close(cls().gradient(y01, p), cls().gradient(2 * y01 - 1, p))


def test_focal_logits_agree_with_probabilities(rng):
    """Away from the clip, the logits forms equal the probability forms of sigmoid / softmax."""
    z = predictions("real", (6, 4), rng)
    y = targets("unit", (6, 4), rng)
    s = 1.0 / (1.0 + np.exp(-z))
    for kw in ({}, {"apply_class_balancing": True, "gamma": 0.5}):
        close(LS.BinaryFocalCrossentropy(from_logits=True, **kw)(y, z),
              LS.BinaryFocalCrossentropy(**kw)(y, s), 1e-10)
    q = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = targets("dist", (6, 4), rng)
    close(LS.CategoricalFocalCrossentropy(from_logits=True)(y, z),
          LS.CategoricalFocalCrossentropy()(y, q), 1e-10)


# ------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("make,match", [
    (lambda: LS.Huber(delta=0), "delta must be .*> 0.*got 0"),
    (lambda: LS.Huber(delta=float("nan")), "delta .*got nan"),
    (lambda: LS.BinaryFocalCrossentropy(gamma=-1), "gamma must be .*>= 0.*got -1"),
    (lambda: LS.BinaryFocalCrossentropy(alpha=1.5), "alpha must be .*<= 1.*got 1.5"),
    (lambda: LS.BinaryFocalCrossentropy(apply_class_balancing="yes"),
     "apply_class_balancing must be True or False, got 'yes'"),
    (lambda: LS.CategoricalFocalCrossentropy(alpha=-0.5), "alpha .*got -0.5"),
    (lambda: LS.CategoricalFocalCrossentropy(gamma="2"), "gamma .*got '2'"),
    (lambda: LS.Dice(smooth=0.0), "smooth must be .*> 0.*got 0.0"),
    (lambda: LS.Tversky(alpha=-0.1), "alpha .*got -0.1"),
    (lambda: LS.Tversky(beta=None), "beta .*got None"),
    (lambda: LS.ContrastiveLoss(margin=-1.0), "margin .*got -1.0"),
    (lambda: LS.TripletMarginLoss(p=0.5), "p must be .*>= 1.*got 0.5"),
    (lambda: LS.TripletMarginLoss(eps=-1e-6), "eps .*got -1e-06"),
    (lambda: LS.BinaryCrossentropy(class_weight={2: 1.0}), "class_weight keys .*0 and 1.*got 2"),
    (lambda: LS.SparseCategoricalCrossentropy(class_weight={0: -1.0}),
     r"class_weight\[0\] .*>= 0.*got -1.0"),
    (lambda: LS.CategoricalCrossentropy(class_weight={"a": 1.0}), "class_weight keys .*got 'a'"),
    (lambda: LS.CategoricalCrossentropy(class_weight="auto"),
     "class_weight must be None, 'balanced' or a dict .*got 'auto'"),
    (lambda: LS.CategoricalCrossentropy(class_weight=[1.0, 2.0]),
     r"class_weight .*got \[1.0, 2.0\]"),
    (lambda: LS.BinaryCrossentropy(from_logits="no"),
     "from_logits must be True or False, got 'no'"),
])
def test_bad_arguments_raise_value_errors_naming_them(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_sample_weights_and_targets(rng):
    loss = LS.MeanSquaredError()
    t, p = rng.standard_normal((4, 2)), rng.standard_normal((4, 2))
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(4,\), got \(3,\)"):
        loss(t, p, sample_weight=np.ones(3))
    with pytest.raises(ValueError, match="sample_weight must be finite and >= 0"):
        loss(t, p, sample_weight=[1.0, -1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="sample_weight must be finite"):
        loss.gradient(t, p, sample_weight=[1.0, np.nan, 1.0, 1.0])
    with pytest.raises(ValueError, match="class weights need integer labels"):
        LS.SparseCategoricalCrossentropy(class_weight={0: 2.0}).sample_weights([0.5, 1.0])


# --------------------------------------------------------------------------------------- embeddings
def test_contrastive_loss(rng):
    x1, x2 = rng.standard_normal((2, 6, 2, 3))
    y = np.array([1, 0, 1, 0, 0, 1])
    w = rng.random(6)
    loss = LS.ContrastiveLoss(margin=2.0)
    flat = (x1.reshape(6, 6), x2.reshape(6, 6))
    close(loss(x1, x2, y), ref.contrastive_forward(*flat, y, 2.0, 1e-6))
    close(loss(x1, x2, y, sample_weight=w), ref.contrastive_forward(*flat, y, 2.0, 1e-6, w))
    g1, g2 = loss.gradient(x1, x2, y, sample_weight=w)
    assert g1.shape == g2.shape == x1.shape
    r1, r2 = ref.contrastive_backward(*flat, y, 2.0, 1e-6, w)
    close(g1.reshape(6, 6), r1)
    close(g2.reshape(6, 6), r2)
    gradcheck((lambda a, b: loss(a, b, y, w), lambda a, b: loss.gradient(a, b, y, w)), x1, x2)
    assert loss(x1.astype(np.float32), x2.astype(np.float32), y) == pytest.approx(
        loss(x1, x2, y), rel=1e-6)
    with pytest.raises(ValueError, match="x2 has shape"):
        loss(x1, x2[:, :1], y)
    with pytest.raises(ValueError, match="y must be 6 finite labels"):
        loss(x1, x2, y[:5])
    with pytest.raises(TypeError, match=r"takes \(x1, x2, y\)"):
        loss.prepare_targets(y, (2, 3), np.float64)


def test_triplet_margin_loss_matches_torch(rng):
    torch = pytest.importorskip("torch")
    a, p, n = rng.standard_normal((3, 8, 5))
    w = rng.random(8)
    for kw in ({}, {"margin": 0.5, "p": 1.0}, {"margin": 2.0, "p": 3.0, "eps": 1e-3}):
        loss = LS.TripletMarginLoss(**kw)
        ts = [torch.tensor(x, requires_grad=True) for x in (a, p, n)]
        mod = torch.nn.TripletMarginLoss(**kw)
        close(loss(a, p, n), mod(*ts).item())
        per = torch.nn.TripletMarginLoss(**kw, reduction="none")(*ts)
        (torch.tensor(w) * per).sum().div(8).backward()
        grads = loss.gradient(a, p, n, sample_weight=w)
        assert len(grads) == 3
        for g, t in zip(grads, ts):
            close(g, t.grad.numpy())
    gradcheck((lambda *x: loss(*x, sample_weight=w),
               lambda *x: loss.gradient(*x, sample_weight=w)), a, p, n)


# ----------------------------------------------------------------------------------------- training
def _mlp(out, act, seed):
    nb.seed(seed)
    return nb.Sequential([nb.layers.Dense(8, activation="tanh"),
                          nb.layers.Dense(out, activation=act)], input_shape=(4,),
                         dtype="float64")


@pytest.mark.parametrize("loss,out,act,kind", [
    ("binary_focal_crossentropy", 1, "sigmoid", "binary"),
    (LS.BinaryFocalCrossentropy(apply_class_balancing=True, class_weight="balanced"), 1,
     "sigmoid", "binary"),
    ("categorical_focal_crossentropy", 3, "softmax", "onehot"),
    ("dice", 8, "sigmoid", "mask"), ("jaccard", 8, "sigmoid", "mask"),
    ("tversky", 8, "sigmoid", "mask"), ("hinge", 1, "tanh", "binary"),
    ("squared_hinge", 1, "tanh", "binary"), ("kl_divergence", 3, "softmax", "onehot"),
    ("log_cosh", 1, None, "real"), ("msle", 1, "softplus", "positive"),
    ("poisson", 1, "softplus", "positive"),
])
def test_models_train_with_the_new_losses(loss, out, act, kind, rng):
    x = rng.standard_normal((96, 4))
    s = x[:, 0] - x[:, 1]
    y = {"binary": (s > 0).astype(np.float64)[:, None],
         "onehot": np.eye(3)[np.digitize(s, [-0.5, 0.5])],
         "mask": (x @ rng.standard_normal((4, 8)) > 0).astype(np.float64),
         "real": s[:, None], "positive": np.exp(0.5 * s)[:, None]}[kind]
    model = _mlp(out, act, 0)
    model.compile(nb.optimizers.Adam(0.05), loss)
    h = model.fit(x, y, epochs=12, batch_size=16, verbose=0, seed=0)
    # the excess over the loss's minimum (y_pred = y_true; not 0 for Poisson) falls by 30%
    floor = float(np.mean(y - y * np.log(y + EPS))) if loss == "poisson" else 0.0
    assert h.history["loss"][-1] - floor < 0.7 * (h.history["loss"][0] - floor), \
        h.history["loss"]
    # evaluate (fused logits path where it applies) equals the loss of the predictions
    loss_obj = model.loss
    if loss_obj.sample_weights(y) is None:
        assert model.evaluate(x, y, batch_size=96)["loss"] == pytest.approx(
            loss_obj(y, model.predict(x)), rel=1e-9)


def test_poisson_matches_torch_poisson_nll(rng):
    """Keras' Poisson is torch's poisson_nll_loss with rates (log_input=False), eps 1e-7."""
    torch = pytest.importorskip("torch")
    t = rng.poisson(2.0, (6, 3)).astype(np.float64)
    p = rng.uniform(0.05, 4.0, (6, 3))
    pt = torch.tensor(p, requires_grad=True)
    want = torch.nn.functional.poisson_nll_loss(pt, torch.tensor(t), log_input=False, eps=EPS)
    want.backward()
    loss = LS.Poisson()
    np.testing.assert_allclose(loss(t, p), want.item(), rtol=1e-12)
    np.testing.assert_allclose(loss.gradient(t, p), pt.grad.numpy(), rtol=1e-10, atol=1e-15)
