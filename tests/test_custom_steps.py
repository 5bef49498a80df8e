"""Keras 3's custom steps ("Customizing what happens in fit()"): a subclass's train_step(data)
and test_step(data) run by fit (with validation), evaluate, train_on_batch and test_on_batch.
The references are float64 NumPy computations on the weights the model holds at each point."""
import os

import numpy as np
import pytest

import numbanet as nb
from numbanet import layers as L

ops = nb.ops


def _unpack(data):
    """(x, y, sample_weight) of what a step gets; x alone targets the row sums."""
    if not isinstance(data, tuple):
        return data, ops.sum(data, axis=1, keepdims=True), None
    return data[0], data[1], data[2] if len(data) == 3 else None


class GuideModel(nb.Model):
    """The guide's pattern: GradientTape train_step, Mean trackers listed by a metrics
    property, and a test_step updating the same trackers (sample-weighted squared errors)."""

    def __init__(self):
        super().__init__(dtype="float64")
        self.dense = L.Dense(1)
        self.loss_tracker = nb.metrics.Mean(name="loss")
        self.mae_tracker = nb.metrics.Mean(name="mae")
        self.train_seen, self.test_seen = [], []

    @property
    def metrics(self):
        return [self.loss_tracker, self.mae_tracker]

    def call(self, x, training=False):
        return self.dense(x)

    def train_step(self, data):
        x, y, _ = _unpack(data)
        self.train_seen.append(len(x))
        with nb.GradientTape() as tape:
            err = self(x, training=True) - y
            loss = ops.mean(ops.square(err))
        grads = tape.gradient(loss, self.trainable_weights)
        self.optimizer.apply_gradients(zip(grads, self.trainable_weights))
        self.loss_tracker.update_state(loss)
        self.mae_tracker.update_state(ops.mean(ops.abs(err)))
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        x, y, w = _unpack(data)
        self.test_seen.append(len(x))
        err = self(x, training=False) - y
        self.loss_tracker.update_state(ops.mean(ops.square(err), axis=1), sample_weight=w)
        self.mae_tracker.update_state(ops.mean(ops.abs(err), axis=1), sample_weight=w)
        return {m.name: m.result() for m in self.metrics}


class TrainOnly(GuideModel):
    """train_step alone: validation and evaluate are numbanet's own (the compiled loss)."""
    test_step = None


def _built(cls, d=3):
    model = cls()
    model.compile(optimizer=nb.optimizers.SGD(0.05))
    model(np.zeros((1, d)))
    return model


def _errors(weights, x, y, w=None):
    """float64 reference: weighted mean squared and absolute errors of x @ W + b."""
    W, b = (np.asarray(v, np.float64) for v in weights)
    err = (np.asarray(x, np.float64) @ W + b - y).reshape(len(x), -1)
    w = np.ones(len(x)) if w is None else np.asarray(w, np.float64)
    se, ae = (err ** 2).mean(axis=1), np.abs(err).mean(axis=1)
    return float(np.sum(w * se) / np.sum(w)), float(np.sum(w * ae) / np.sum(w))


class EpochWeights(nb.callbacks.Callback):
    """The weights at each epoch end (what validation ran on) and the logs callbacks got."""

    def __init__(self):
        super().__init__()
        self.weights, self.logs = [], []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append([np.array(v, copy=True) for v in self.model.get_weights()])
        self.logs.append(dict(logs))


def _replay_sgd(weights, x, y, batch_size, lr, epochs):
    """Plain float64 SGD on mean squared error: weights and batch losses after each epoch."""
    W, b = (np.array(v, np.float64) for v in weights)
    out, losses = [], []
    for _ in range(epochs):
        batch_losses = []
        for s in range(0, len(x), batch_size):
            xb, yb = x[s:s + batch_size], y[s:s + batch_size]
            r = xb @ W + b - yb
            batch_losses.append(float(np.mean(r ** 2)))
            W, b = W - lr * 2 * xb.T @ r / r.size, b - lr * 2 * r.sum(axis=0) / r.size
        out.append([W.copy(), b.copy()])
        losses.append(float(np.mean(batch_losses)))
    return out, losses


def test_fit_validation_data_runs_test_step_with_val_prefixes(rng):
    """fit(validation_data=...) on a custom train_step model was refused; now each epoch ends
    with the subclass's test_step over the validation batches (trackers reset first), logged as
    val_loss / val_mae equal to the errors of that epoch's weights on the validation set; the
    training logs stay the training trackers' (reset at each epoch's start)."""
    x, y = rng.standard_normal((10, 3)), rng.standard_normal((10, 1))
    xv, yv = rng.standard_normal((7, 3)), rng.standard_normal((7, 1))
    model = _built(GuideModel)
    start = model.get_weights()
    seen = EpochWeights()
    history = model.fit(x, y, epochs=3, batch_size=4, shuffle=False, verbose=0,
                        validation_data=(xv, yv), callbacks=[seen])
    assert model.train_seen == [4, 4, 2] * 3
    assert model.test_seen == [4, 3] * 3
    assert list(history.history) == ["loss", "mae", "val_loss", "val_mae"]
    want_w, want_loss = _replay_sgd(start, x, y, 4, 0.05, 3)
    for got, want in zip(seen.weights, want_w):
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(history.history["loss"], want_loss, rtol=1e-12)
    ref = [_errors(w, xv, yv) for w in seen.weights]
    np.testing.assert_allclose(history.history["val_loss"], [r[0] for r in ref], rtol=1e-12)
    np.testing.assert_allclose(history.history["val_mae"], [r[1] for r in ref], rtol=1e-12)
    assert [log["val_loss"] for log in seen.logs] == history.history["val_loss"]
    # (x_val, y_val, sample_weight_val): test_step gets the weights; (x_val,): x alone
    wv = rng.uniform(0.1, 2.0, 7)
    history = model.fit(x, y, epochs=1, batch_size=3, verbose=0, callbacks=[seen],
                        validation_data=(xv, yv, wv))
    assert model.test_seen[-3:] == [3, 3, 1]
    assert history.history["val_loss"][0] == pytest.approx(
        _errors(seen.weights[-1], xv, yv, wv)[0], rel=1e-12)
    history = model.fit(x, y, epochs=1, batch_size=5, verbose=0, callbacks=[seen],
                        validation_data=(xv,))
    assert history.history["val_mae"][0] == pytest.approx(
        _errors(seen.weights[-1], xv, xv.sum(axis=1, keepdims=True))[1], rel=1e-12)


def test_val_loss_matches_torch_mse(rng):
    torch = pytest.importorskip("torch")
    x, y = rng.standard_normal((9, 4)), rng.standard_normal((9, 1))
    xv, yv = rng.standard_normal((5, 4)), rng.standard_normal((5, 1))
    model = _built(GuideModel, d=4)
    seen = EpochWeights()
    history = model.fit(x, y, epochs=2, batch_size=4, verbose=0, validation_data=(xv, yv),
                        callbacks=[seen])
    for w, got in zip(seen.weights, history.history["val_loss"]):
        pred = torch.tensor(xv) @ torch.tensor(w[0]) + torch.tensor(w[1])
        want = torch.nn.functional.mse_loss(pred, torch.tensor(yv)).item()
        assert got == pytest.approx(want, rel=1e-12)


def test_fit_validation_split_holds_out_the_last_samples(rng):
    """validation_split keeps the last samples (and their sample weights) for test_step."""
    x, y = rng.standard_normal((12, 3)), rng.standard_normal((12, 1))
    w = rng.uniform(0.1, 2.0, 12)
    model = _built(GuideModel)
    seen = EpochWeights()
    history = model.fit(x, y, sample_weight=w, epochs=2, batch_size=4, shuffle=False,
                        verbose=0, validation_split=0.25, callbacks=[seen])
    assert model.train_seen == [4, 4, 1] * 2 and model.test_seen == [3, 3]
    ref = [_errors(v, x[-3:], y[-3:], w[-3:]) for v in seen.weights]
    np.testing.assert_allclose(history.history["val_loss"], [r[0] for r in ref], rtol=1e-12)
    np.testing.assert_allclose(history.history["val_mae"], [r[1] for r in ref], rtol=1e-12)
    with pytest.raises(ValueError, match=r"validation_split=0.05 leaves 12 training and 0 "
                                         r"validation samples of 12"):
        model.fit(x, y, validation_split=0.05, verbose=0)


def test_early_stopping_and_checkpoint_watch_val_loss(rng, tmp_path):
    """EarlyStopping(monitor='val_loss') stops on the test_step's val_loss and restores the
    best epoch's weights; ModelCheckpoint(save_best_only) saves those weights."""
    x = rng.standard_normal((16, 3))
    y = x @ rng.standard_normal((3, 1))
    xv, yv = rng.standard_normal((6, 3)), rng.standard_normal((6, 1))   # unrelated targets
    model = _built(GuideModel)
    seen = EpochWeights()
    stop = nb.callbacks.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    path = os.path.join(tmp_path, "best.npz")
    ckpt = nb.callbacks.ModelCheckpoint(path, monitor="val_loss", save_best_only=True,
                                        save_weights_only=True)
    history = model.fit(x, y, epochs=60, batch_size=4, verbose=0, validation_data=(xv, yv),
                        callbacks=[seen, stop, ckpt])
    val = history.history["val_loss"]
    np.testing.assert_allclose(val, [_errors(v, xv, yv)[0] for v in seen.weights], rtol=1e-12)
    best, wait = 0, 0                       # Keras' rule, on the logged values
    for e in range(1, len(val)):
        best, wait = (e, 0) if val[e] < val[best] else (best, wait + 1)
        if wait >= 2:
            break
    assert len(val) == e + 1 < 60 and stop.stopped_epoch == e and stop.best_epoch == best
    for got, want in zip(model.get_weights(), seen.weights[best]):
        np.testing.assert_array_equal(got, want)
    other = _built(GuideModel)
    other.load_weights(path)
    for got, want in zip(other.get_weights(), seen.weights[best]):
        np.testing.assert_array_equal(got, want)


def test_evaluate_calls_test_step_per_batch(rng):
    """evaluate resets the trackers, calls test_step on each batch and returns the last dict
    (a list with return_dict=False, numbanet's evaluate convention); it ran numbanet's own
    evaluation (which wanted a compiled loss) before."""
    x, y = rng.standard_normal((11, 3)), rng.standard_normal((11, 1))
    w = rng.uniform(0.1, 2.0, 11)
    model = _built(GuideModel)
    want = _errors(model.get_weights(), x, y)
    for _ in range(2):                      # the second run starts from reset trackers
        got = model.evaluate(x, y, batch_size=4)
        assert got == pytest.approx({"loss": want[0], "mae": want[1]}, rel=1e-12)
    assert model.test_seen == [4, 4, 3] * 2
    assert model.evaluate(x, y, batch_size=20, return_dict=False) == \
        pytest.approx(list(want), rel=1e-12)
    assert model.evaluate(x, y, sample_weight=w, batch_size=3)["loss"] == \
        pytest.approx(_errors(model.get_weights(), x, y, w)[0], rel=1e-12)
    assert model.evaluate(x, batch_size=5)["mae"] == pytest.approx(
        _errors(model.get_weights(), x, x.sum(axis=1, keepdims=True))[1], rel=1e-12)
    with pytest.raises(ValueError, match=r"evaluate: x, y and sample_weight must have the same "
                                         r"number of samples, got sizes \[10, 11\]"):
        model.evaluate(x, y[:10])
    with pytest.raises(ValueError, match="return_dict"):
        model.evaluate(x, y, return_dict="yes")


def test_train_and_test_on_batch_route_to_the_custom_steps(rng):
    """train_on_batch runs train_step once on the batch (one SGD step), test_on_batch
    test_step; both return the step's dict, or its values as a list. As Keras 3, neither
    resets the trackers."""
    x, y = rng.standard_normal((5, 3)), rng.standard_normal((5, 1))
    model = _built(GuideModel)
    start = model.get_weights()
    before = _errors(start, x, y)
    got = model.train_on_batch(x, y)
    assert model.train_seen == [5] and model.test_seen == []
    assert got == pytest.approx(list(before), rel=1e-12)
    (want_w,), _ = _replay_sgd(start, x, y, 5, 0.05, 1)
    for g, w in zip(model.get_weights(), want_w):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-14)
    for m in model.metrics:
        m.reset_state()
    x2, y2 = rng.standard_normal((3, 3)), rng.standard_normal((3, 1))
    first = model.test_on_batch(x, y, return_dict=True)
    assert first == pytest.approx(dict(zip(("loss", "mae"), _errors(want_w, x, y))), rel=1e-12)
    both = model.test_on_batch(x2, y2)
    want = _errors(want_w, np.concatenate([x, x2]), np.concatenate([y, y2]))
    assert both == pytest.approx(list(want), rel=1e-12)
    assert model.train_seen == [5] and model.test_seen == [5, 3]
    with pytest.raises(ValueError, match=r"train_on_batch: GuideModel overrides "
                                         r"train_step\(data\), which takes no class_weight"):
        model.train_on_batch(x, np.zeros((5, 1)), class_weight={0: 1.0})
    with pytest.raises(ValueError, match=r"test_on_batch: x, y and sample_weight must have "
                                         r"the same number of samples"):
        model.test_on_batch(x, y, sample_weight=np.ones(4))


class OwnTestStep(nb.Model):
    """The default train step (compiled loss and metrics) with a custom test_step that
    updates the compiled metrics and reports its batch's loss."""

    def __init__(self):
        super().__init__(dtype="float64")
        self.dense = L.Dense(1)
        self.calls = 0

    def call(self, x, training=False):
        return self.dense(x)

    def test_step(self, data):
        x, y = data
        self.calls += 1
        pred = self(x, training=False)
        for m in self.metrics:
            m.update_state(y, np.asarray(pred))
        batch = float(np.mean((np.asarray(pred) - y) ** 2))
        return {"loss": batch, **{m.name: m.result() for m in self.metrics}}


def test_a_model_with_only_test_step_trains_as_usual(rng):
    """Only test_step: fit trains with the compiled loss exactly as a plain model does, and
    validation and evaluate run the test_step (the compiled metrics reset before it, the loss
    that of the last batch)."""
    x, y = rng.standard_normal((10, 3)), rng.standard_normal((10, 1))
    xv, yv = rng.standard_normal((7, 3)), rng.standard_normal((7, 1))
    model, plain = OwnTestStep(), nb.Sequential([L.Dense(1)], input_shape=(3,), dtype="float64")
    for m in (model, plain):
        m.compile(nb.optimizers.SGD(0.05), "mse", metrics=["mae"])
    model(np.zeros((1, 3)))
    plain.set_weights(model.get_weights())
    seen = EpochWeights()
    history = model.fit(x, y, epochs=2, batch_size=4, shuffle=False, verbose=0,
                        validation_data=(xv, yv), callbacks=[seen])
    want = plain.fit(x, y, epochs=2, batch_size=4, shuffle=False, verbose=0)
    np.testing.assert_allclose(history.history["loss"], want.history["loss"], rtol=1e-12)
    for g, w in zip(model.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(g, w, rtol=1e-12)
    assert model.calls == 4
    mae = [m.name for m in model.metrics][0]
    np.testing.assert_allclose(history.history[f"val_{mae}"],
                               [_errors(v, xv, yv)[1] for v in seen.weights], rtol=1e-12)
    np.testing.assert_allclose(history.history["val_loss"],
                               [_errors(v, xv[4:], yv[4:])[0] for v in seen.weights], rtol=1e-12)
    history = model.fit(x, y, epochs=1, batch_size=5, shuffle=False, verbose=0,
                        validation_split=0.3, callbacks=[seen])
    assert history.history[f"val_{mae}"][0] == pytest.approx(
        _errors(seen.weights[-1], x[-3:], y[-3:])[1], rel=1e-12)
    got = model.evaluate(xv, yv, batch_size=7)
    assert got == pytest.approx(dict(zip(("loss", mae), _errors(model.get_weights(), xv, yv))),
                                rel=1e-12)
    assert model.test_on_batch(xv, yv) == pytest.approx([got["loss"], got[mae]], rel=1e-12)
    with pytest.raises(ValueError, match=r"fit: OwnTestStep overrides test_step\(data\); fit "
                                         r"then takes no distributed"):
        model.fit(x, y, validation_data=(xv, yv), distributed=True)


def test_a_model_with_only_train_step_validates_with_the_compiled_loss(rng):
    """Only train_step and compiled with a loss: validation and evaluate are numbanet's own
    (the loss of the whole set; the trackers of the metrics property are not reported);
    compiled without a loss, validation is refused with a clear error before training."""
    x, y = rng.standard_normal((10, 3)), rng.standard_normal((10, 1))
    xv, yv = rng.standard_normal((7, 3)), rng.standard_normal((7, 1))
    model = TrainOnly()
    model.compile(nb.optimizers.SGD(0.05), loss="mse")
    model(np.zeros((1, 3)))
    seen = EpochWeights()
    history = model.fit(x, y, epochs=2, batch_size=4, verbose=0, validation_data=(xv, yv),
                        callbacks=[seen])
    assert list(history.history) == ["loss", "mae", "val_loss"]
    np.testing.assert_allclose(history.history["val_loss"],
                               [_errors(v, xv, yv)[0] for v in seen.weights], rtol=1e-12)
    history = model.fit(x, y, epochs=1, batch_size=4, verbose=0, validation_split=0.2,
                        callbacks=[seen])
    assert history.history["val_loss"][0] == pytest.approx(
        _errors(seen.weights[-1], x[-2:], y[-2:])[0], rel=1e-12)
    assert model.evaluate(xv, yv) == pytest.approx({"loss": _errors(model.get_weights(), xv,
                                                                    yv)[0]}, rel=1e-12)
    bare = _built(TrainOnly)
    for kw in ({"validation_data": (xv, yv)}, {"validation_split": 0.2}):
        with pytest.raises(ValueError, match=r"fit validation: TrainOnly was compiled without "
                                             r"a loss.*define test_step\(self, data\) or "
                                             r"compile\(optimizer, loss=...\)"):
            bare.fit(x, y, verbose=0, **kw)
    assert bare.train_seen == []
    with pytest.raises(ValueError, match="evaluate: TrainOnly was compiled without a loss"):
        bare.evaluate(xv, yv)


@pytest.mark.parametrize("bad, message", [
    ("array", r"validation_data must be \(x_val,\), \(x_val, y_val\) or \(x_val, y_val, "
              r"sample_weight_val\), got a ndarray"),
    ("four", r"validation_data must be .* got a tuple of 4 items"),
    ("sizes", r"fit validation_data: x, y and sample_weight must have the same number of "
              r"samples, got sizes \[6, 7\]"),
])
def test_bad_validation_data_is_refused_before_training(rng, bad, message):
    x, y = rng.standard_normal((10, 3)), rng.standard_normal((10, 1))
    xv, yv = rng.standard_normal((7, 3)), rng.standard_normal((7, 1))
    data = {"array": xv, "four": (xv, yv, np.ones(7), np.ones(7)),
            "sizes": (xv, yv[:6])}[bad]
    model = _built(GuideModel)
    with pytest.raises(ValueError, match=message):
        model.fit(x, y, verbose=0, validation_data=data)
    assert model.train_seen == []
    plain = nb.Sequential([L.Dense(1)], input_shape=(3,))
    plain.compile("sgd", "mse")
    with pytest.raises(ValueError, match=r"validation_data must be \(x_val, y_val\) or "
                                         r"\(x_val, y_val, sample_weight_val\), got a tuple "
                                         r"of 1 items"):
        plain.fit(x, y, verbose=0, validation_data=(xv,))
