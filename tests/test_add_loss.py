"""``add_loss`` inside ``call``: the terms join the loss that fit minimizes and reports (and
evaluate's), ``model.losses`` lists them for a custom loop, and their gradients reach the
weights, in functional, subclassed and nested models."""
import numpy as np
import pytest

import numbanet as nb
from numbanet.testing import assert_gradients_close, numeric_gradient

L = nb.layers
ops = nb.ops


class ActivityPenalty(L.Layer):
    """Passes its input through and adds rate * sum(x**2) to the loss."""

    def __init__(self, rate, **kwargs):
        super().__init__(**kwargs)
        self.rate = rate

    def call(self, x):
        self.add_loss(self.rate * ops.sum(ops.square(x)))
        return x


def functional():
    inp = nb.Input((5,), dtype="float64")
    h = ActivityPenalty(0.1, dtype="float64")(L.Dense(4, dtype="float64")(inp))
    return nb.Model(inp, L.Dense(2, dtype="float64")(h))


class Subclassed(nb.Model):
    def __init__(self):
        super().__init__()
        self.d1 = L.Dense(4, dtype="float64")
        self.penalty = ActivityPenalty(0.1, dtype="float64")
        self.d2 = L.Dense(2, dtype="float64")

    def call(self, x, training=False):
        h = self.penalty(self.d1(x))
        self.add_loss(0.5 * ops.mean(ops.square(h)))      # a model's own term
        return self.d2(h)


def expected(model, d1, x, y, own_term):
    """The mse plus every added term, computed with NumPy from the weights."""
    w, b = (np.asarray(d1.params[k]) for k in ("kernel", "bias"))
    h = x @ w + b
    total = np.mean((model.predict(x) - y) ** 2) + 0.1 * np.sum(h ** 2)
    return total + (0.5 * np.mean(h ** 2) if own_term else 0.0)


@pytest.mark.parametrize("kind", ["functional", "subclassed", "nested"])
def test_added_losses_in_fit_evaluate_and_gradients(kind, rng):
    x, y = rng.standard_normal((8, 5)), rng.standard_normal((8, 2))
    if kind == "functional":
        model = functional()
    elif kind == "subclassed":
        model = Subclassed()
        model(x)
    else:                                       # a functional model inside another
        inner = functional()
        inp = nb.Input((5,), dtype="float64")
        model = nb.Model(inp, L.Activation("linear", dtype="float64")(inner(inp)))
    d1 = model.d1 if kind == "subclassed" else \
        [l for l in model._own_layers() if isinstance(l, L.Dense)][0]
    own = kind == "subclassed"
    model.compile(nb.optimizers.SGD(1.0), "mse")
    want = expected(model, d1, x, y, own)
    assert model.evaluate(x, y)["loss"] == pytest.approx(want, rel=1e-12)
    assert len(model.losses) == (2 if own else 1)
    # a custom loop: the data loss plus model.losses, differentiated by a tape
    with nb.GradientTape() as tape:
        pred = model(x, training=True)
        loss = ops.mean(ops.square(pred - y))
        for term in model.losses:
            loss = loss + term
    grads = [np.asarray(g) for g in tape.gradient(loss, model.trainable_weights)]
    assert float(loss) == pytest.approx(want, rel=1e-12)
    # fit's step: the reported loss is the same total, and SGD(1) moves by the same gradient
    before = [np.array(w) for w in model.get_weights()]
    assert model.train_step(x, y) == pytest.approx(want, rel=1e-12)
    for b, a, g in zip(before, model.get_weights(), grads):
        np.testing.assert_allclose(b - a, g, rtol=1e-10, atol=1e-12)


def test_added_loss_gradient_matches_central_differences(rng):
    model = Subclassed()
    x = rng.standard_normal((4, 5))
    model(x)

    def total():
        out = model(x, training=True)
        return float(ops.sum(ops.square(out)) + model.losses[0] + model.losses[1])
    with nb.GradientTape() as tape:
        out = model(x, training=True)
        loss = ops.sum(ops.square(out)) + model.losses[0] + model.losses[1]
    grads = tape.gradient(loss, model.trainable_weights)
    for w, g in zip(model.trainable_weights, grads):
        # the weights are float64 host arrays: perturbing them in place is what the model reads
        assert_gradients_close(np.asarray(g), numeric_gradient(total, w.value), w.name)


def test_added_loss_alone_trains_and_is_reported(rng):
    """A layer whose penalty is the only thing pulling its weights: fit lowers it."""
    inp = nb.Input((3,))
    out = L.Dense(2)(ActivityPenalty(1.0)(L.Dense(4)(inp)))
    model = nb.Model(inp, out)
    model.compile(nb.optimizers.Adam(0.05), "mse")
    x = rng.standard_normal((16, 3)).astype(np.float32)
    history = model.fit(x, np.zeros((16, 2), np.float32), epochs=20, verbose=0)
    assert history.history["loss"][-1] < 0.2 * history.history["loss"][0]


def test_add_loss_outside_a_call_is_a_clear_error():
    layer = ActivityPenalty(0.1)
    with pytest.raises(RuntimeError, match="inside call"):
        layer.add_loss(1.0)


def test_added_losses_on_cuda_match_the_cpu(rng, allow_cuda):
    x, y = rng.standard_normal((4, 5)), rng.standard_normal((4, 2))
    cpu = functional()
    gpu = functional().to("cuda")
    gpu.set_weights(cpu.get_weights())
    for m in (cpu, gpu):
        m.compile(nb.optimizers.SGD(0.1), "mse")
    for _ in range(2):
        assert gpu.train_step(x, y) == pytest.approx(cpu.train_step(x, y), rel=1e-10)
    for a, b in zip(cpu.get_weights(), gpu.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
