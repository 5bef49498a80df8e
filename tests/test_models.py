"""Sequential: training on digits, save/load, reproducibility, progress output and bad input."""
import io
import json
import os

import numpy as np
import pytest
from conftest import assert_sgd_step_like_torch

import numbanet as nb

L = nb.layers


def small_cnn(**kwargs):
    return nb.Sequential([
        L.Conv2D(8, 3, padding="same", activation="relu"),
        L.MaxPool2D(2),
        L.Flatten(),
        L.Dropout(0.1),
        L.Dense(10, activation="softmax"),
    ], input_shape=(1, 8, 8), **kwargs)


def mlp(units=16, out=3, act="softmax", inputs=5, **kwargs):
    return nb.Sequential([L.Dense(units, activation="tanh"), L.Dense(out, activation=act)],
                         input_shape=(inputs,), **kwargs)


@pytest.fixture(scope="module")
def digits():
    x, y = nb.datasets.load_digits()
    return nb.data.train_test_split(x, y, test_size=0.2, seed=0, stratify=y)


def test_digits_cnn_reaches_95_percent(digits):
    """The main job's CNN, as ``numbanet train`` builds it."""
    from numbanet.cli import build_digits_cnn
    x_train, x_test, y_train, y_test = digits
    nb.seed(0)
    model = build_digits_cnn()
    model.compile(optimizer=nb.optimizers.Adam(learning_rate=2e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x_train, y_train, epochs=8, batch_size=32, validation_split=0.1, seed=0,
                        verbose=0)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(history.history["loss"]) == 8
    assert history.history["loss"][-1] < history.history["loss"][0]
    result = model.evaluate(x_test, y_test)
    assert set(result) == {"loss", "accuracy"}
    assert result["accuracy"] >= 0.95, result
    pred = model.predict(x_test)
    assert pred.shape == (len(x_test), 10) and pred.dtype == np.float32
    np.testing.assert_allclose(pred.sum(axis=1), 1.0, rtol=1e-5)
    assert np.mean(pred.argmax(1) == y_test) == pytest.approx(result["accuracy"])


def test_fused_softmax_crossentropy_matches_logits_path(rng):
    x = rng.standard_normal((16, 5))
    y = rng.integers(0, 3, 16)
    fused = mlp(dtype="float64")
    plain = nb.Sequential([L.Dense(16, activation="tanh"), L.Dense(3)], input_shape=(5,),
                          dtype="float64")
    plain.set_weights(fused.get_weights())
    fused.compile(nb.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    plain.compile(nb.optimizers.SGD(0.1),
                  nb.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert fused._fused() and not plain._fused()
    for _ in range(3):
        assert fused.train_step(x, y) == pytest.approx(plain.train_step(x, y), rel=1e-12)
    for a, b in zip(fused.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_model_gradients_match_finite_differences(rng):
    model = nb.Sequential([L.Conv2D(2, 3, padding="same", activation="tanh"), L.AvgPool2D(2),
                           L.Flatten(), L.Dense(3, activation="softmax")],
                          input_shape=(1, 4, 4), dtype="float64")
    model.compile(nb.optimizers.SGD(1.0), "categorical_crossentropy")
    x = rng.standard_normal((3, 1, 4, 4))
    y = nb.data.one_hot(rng.integers(0, 3, 3), 3, dtype=np.float64)
    weights = model.get_weights()
    model.train_step(x, y)           # SGD with lr 1: new = old - grad
    analytic = [w0 - w1 for w0, w1 in zip(weights, model.get_weights())]
    model.set_weights(weights)

    def loss():
        return model.loss(y, model.predict(x))
    for w, g in zip(model._param_items(), analytic):
        p = w[2]
        nb.testing.assert_gradients_close(g, nb.testing.numeric_gradient(loss, p), w[1])


def test_save_load_round_trip_and_resume(tmp_path, rng, digits):
    x_train, x_test, y_train, _ = digits
    nb.seed(1)
    model = small_cnn()
    model.compile(nb.optimizers.Adam(1e-3, amsgrad=True), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x_train[:256], y_train[:256], epochs=1, verbose=0, seed=0)
    path = tmp_path / "m.npz"
    model.save(path)
    loaded = nb.load_model(path)
    np.testing.assert_array_equal(model.predict(x_test), loaded.predict(x_test))
    assert loaded.get_config() == model.get_config()
    assert type(loaded.optimizer) is nb.optimizers.Adam and loaded.optimizer.amsgrad
    assert [m.name for m in loaded.metrics] == ["accuracy"]
    # Resuming continues exactly where the original stops (dropout off: training=True uses masks,
    # so compare on a model without randomness in the step).
    for m in (model, loaded):
        m.layers[3].rate = 0.0
    xb, yb = x_train[256:288], y_train[256:288]
    for _ in range(3):
        assert model.train_step(xb, yb) == loaded.train_step(xb, yb)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)


def bn_mlp(seed):
    nb.seed(seed)
    return nb.Sequential([L.Flatten(), L.Dense(16), L.BatchNormalization(), L.ReLU(),
                          L.Dense(10, activation="softmax")], input_shape=(1, 8, 8))


def test_weights_include_buffers_and_files_keep_their_layout(tmp_path, digits):
    """get_weights/set_weights cover model.weights (BatchNormalization's moving statistics
    too, Keras), so copying them copies the model; model files keep parameters under
    weights/{i} and buffers under buffers/{i}, as before."""
    x_train, x_test, y_train, _ = digits
    a = bn_mlp(0)
    a.compile("adam", "sparse_categorical_crossentropy")
    a.fit(x_train[:200], y_train[:200], epochs=2, verbose=0)
    weights = a.get_weights()
    assert [w.shape for w in weights] == [tuple(v.shape) for v in a.weights]
    assert [v.name.split("/")[1] for v in a.weights][2:6] == ["gamma", "beta", "moving_mean",
                                                            "moving_variance"]
    for w, v in zip(weights, a.weights):
        np.testing.assert_array_equal(w, v.numpy())
    b = bn_mlp(1)
    b.set_weights(weights)
    np.testing.assert_array_equal(a.predict(x_test), b.predict(x_test))
    with pytest.raises(ValueError, match="has 8 weight arrays, got 6"):
        b.set_weights(weights[:6])
    # a file in the layout written before get_weights covered buffers loads the same
    params = [w for w, v in zip(weights, a.weights) if v.kind == "param"]
    buffers = [w for w, v in zip(weights, a.weights) if v.kind == "buffer"]
    old = tmp_path / "old.npz"
    np.savez(old, config=np.array(json.dumps({"format": "numbanet-model-weights",
                                              "version": 2})),
             **{f"weights/{i}": w for i, w in enumerate(params)},
             **{f"buffers/{i}": w for i, w in enumerate(buffers)})
    c = bn_mlp(2)
    c.load_weights(old)
    np.testing.assert_array_equal(a.predict(x_test), c.predict(x_test))
    a.save_weights(tmp_path / "new.npz")
    a.save(tmp_path / "model.npz")
    with np.load(old) as o, np.load(tmp_path / "new.npz") as n, \
            np.load(tmp_path / "model.npz") as m:
        assert sorted(o.files) == sorted(n.files)
        for k in o.files:
            if k != "config":
                np.testing.assert_array_equal(o[k], n[k])
                np.testing.assert_array_equal(o[k], m[k])
    np.testing.assert_array_equal(nb.load_model(tmp_path / "model.npz").predict(x_test),
                                  a.predict(x_test))
    # Keras counts the moving statistics as non-trainable parameters
    assert a.count_params() == 64 * 16 + 16 + 4 * 16 + 16 * 10 + 10
    assert a.layers[2].count_params() == 4 * 16


def test_failed_save_keeps_previous_file(tmp_path, monkeypatch):
    model = mlp()
    model.compile("sgd", "sparse_categorical_crossentropy")
    path = tmp_path / "m.npz"
    model.save(path)
    before = path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez", broken)
    model.set_weights([w + 1 for w in model.get_weights()])
    with pytest.raises(OSError, match="disk full"):
        model.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]


def test_load_model_rejects_bad_files(tmp_path):
    missing = tmp_path / "missing.npz"
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        nb.load_model(missing)
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 this is not a zip file")
    with pytest.raises(ValueError, match="not a numbanet model file"):
        nb.load_model(corrupt)
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a numbanet model file"):
        nb.load_model(text)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, a=np.ones(3))
    with pytest.raises(ValueError, match="not a valid numbanet model file"):
        nb.load_model(foreign)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, config=np.array(json.dumps({"format": "numbanet-model", "version": 1,
                                                "model": {"layers": [{"class_name": "Nope"}]}})))
    with pytest.raises(ValueError, match="not a valid numbanet model file"):
        nb.load_model(wrong)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, config=np.array([{"format": "numbanet-model"}], dtype=object))
    with pytest.raises(ValueError, match="numbanet model file"):
        nb.load_model(pickled)


def test_seed_makes_everything_reproducible(digits):
    x_train, _, y_train, _ = digits
    runs = []
    for _ in range(2):
        nb.seed(5)
        model = small_cnn()
        model.compile("adam", "sparse_categorical_crossentropy")
        model.fit(x_train[:200], y_train[:200], epochs=2, batch_size=16, verbose=0)
        runs.append(model.get_weights())
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


def test_nan_loss_stops_training_naming_epoch_and_step(rng):
    model = mlp(act="linear")
    model.compile(nb.optimizers.SGD(1e30), "mse")
    x = rng.standard_normal((64, 5)).astype(np.float32) * 100
    y = rng.standard_normal((64, 3)).astype(np.float32)
    with pytest.warns(RuntimeWarning, match=r"loss became (nan|inf) at epoch \d+, step \d+"):
        history = model.fit(x, y, epochs=5, batch_size=8, verbose=0)
    assert model.stop_reason and "epoch" in model.stop_reason
    assert len(history.history.get("loss", [])) <= 5


def test_fit_with_no_epochs_to_run_returns_an_empty_history(rng):
    model = mlp()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    x = rng.standard_normal((20, 5)).astype(np.float32)
    y = rng.integers(0, 3, 20)
    before = model.get_weights()
    for kwargs in ({"epochs": 0}, {"epochs": 2, "initial_epoch": 2},
                   {"epochs": 2, "initial_epoch": 5}):
        history = model.fit(x, y, verbose=0, validation_split=0.2, **kwargs)
        assert history.history == {} and history.epoch == [], kwargs
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    history = model.fit(x, y, epochs=3, initial_epoch=1, verbose=0)
    assert history.epoch == [1, 2] and len(history.history["loss"]) == 2
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match=f"initial_epoch must be a non-negative integer, "
                                             f"got {bad}"):
            model.fit(x, y, epochs=1, initial_epoch=bad, verbose=0)


def test_progress_output(rng, capsys):
    x = rng.standard_normal((40, 5)).astype(np.float32)
    y = rng.integers(0, 3, 40)

    class Tty(io.StringIO):
        def isatty(self):
            return True
    model = mlp()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    tty = Tty()
    model.fit(x, y, epochs=2, batch_size=8, verbose=1,
              callbacks=[nb.callbacks.ProgbarLogger(stream=tty)])
    out = tty.getvalue()
    assert "Epoch 1/2" in out and "Epoch 2/2" in out
    assert "\r3/5 [" in out and "ETA" in out and "loss:" in out and "accuracy:" in out
    capsys.readouterr()
    model.fit(x, y, epochs=3, batch_size=8, verbose=1)     # captured stdout is not a terminal
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith("Epoch 1/3") and "loss:" in lines[0]
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert capsys.readouterr().out == ""


def test_summary_weights_and_counts(capsys):
    model = small_cnn()
    model.summary()
    out = capsys.readouterr().out
    assert "conv2d" in out and "(None, 8, 8, 8)" in out and "Total params: 1,370" in out
    weights = model.get_weights()
    assert [w.shape for w in weights] == [(8, 1, 3, 3), (8,), (128, 10), (10,)]
    model.set_weights([np.zeros_like(w) for w in weights])
    assert all(not w.any() for w in model.get_weights())
    with pytest.raises(ValueError, match="has 4 weight arrays, got 3"):
        model.set_weights(weights[:3])
    with pytest.raises(ValueError, match=r"kernel has shape \(8, 1, 3, 3\), got \(8, 1, 3\)"):
        model.set_weights([np.zeros((8, 1, 3))] + weights[1:])


def test_bad_input_gets_clear_errors(rng):
    model = mlp()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    x = rng.standard_normal((10, 5)).astype(np.float32)
    y = rng.integers(0, 3, 10)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\), got 7 at index 2"):
        model.fit(x, np.array([0, 1, 7, 0, 0, 0, 0, 0, 0, 0]), verbose=0)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\), got -1"):
        model.fit(x, -np.ones(10, int), verbose=0)
    with pytest.raises(ValueError, match=r"expected samples of shape \(5,\).*\(10, 4\)"):
        model.fit(x[:, :4], y, verbose=0)
    with pytest.raises(ValueError, match="different numbers of samples: 10 and 9"):
        model.fit(x, y[:9], verbose=0)
    with pytest.raises(ValueError, match="NaN or Inf"):
        model.fit(np.where(x > 1, np.nan, x), y, verbose=0)
    with pytest.raises(TypeError, match="numeric"):
        model.predict(np.array([["a"] * 5]))
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        model.fit(x, y, batch_size=0, verbose=0)
    with pytest.raises(ValueError, match="epochs must be a non-negative integer, got -1"):
        model.fit(x, y, epochs=-1, verbose=0)
    with pytest.raises(ValueError, match="validation_split"):
        model.fit(x, y, validation_split=1.5, verbose=0)
    with pytest.raises(ValueError, match="unknown loss 'crossentropy'.*mse"):
        model.compile("adam", "crossentropy")
    with pytest.raises(ValueError, match="unknown optimizer 'adamm'.*adam"):
        model.compile("adamm", "mse")
    with pytest.raises(ValueError, match="unknown metric 'acuracy'.*accuracy"):
        model.compile("adam", "mse", metrics=["acuracy"])
    with pytest.raises(ValueError, match="targets of shape"):
        m = mlp()
        m.compile("adam", "categorical_crossentropy")
        m.fit(x, nb.data.one_hot(y, 4), verbose=0)
    with pytest.raises(RuntimeError, match="compile"):
        mlp().fit(x, y, verbose=0)
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        mlp(device="tpu")


def test_binary_and_regression_losses_train(rng):
    x = rng.standard_normal((256, 4)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.float32)
    nb.seed(3)
    model = nb.Sequential([L.Dense(8, activation="relu"), L.Dense(1, activation="sigmoid")],
                          input_shape=(4,))
    model.compile(nb.optimizers.Adam(0.02), "binary_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=15, batch_size=32, verbose=0)
    assert model.evaluate(x, y)["accuracy"] > 0.9
    target = x @ np.array([1.0, -2.0, 0.5, 0.0], np.float32)
    for loss in ("mse", "mae", nb.losses.Huber(0.5)):
        reg = nb.Sequential([L.Dense(1)], input_shape=(4,))
        reg.compile(nb.optimizers.SGD(0.05, momentum=0.9), loss)
        h = reg.fit(x, target[:, None], epochs=20, batch_size=32, verbose=0)
        assert h.history["loss"][-1] < 0.1 * h.history["loss"][0]


def test_cli_train(tmp_path, capsys):
    from numbanet.cli import main
    out = tmp_path / "digits.npz"
    assert main(["train", "--epochs", "1", "--output", str(out), "--verbose", "0"]) == 0
    text = capsys.readouterr().out
    assert "test accuracy:" in text and os.path.exists(out)
    try:
        import matplotlib  # noqa: F401
        assert (tmp_path / "digits.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    except ImportError:
        assert not (tmp_path / "digits.png").exists()
    assert nb.load_model(out).predict(np.zeros((1, 1, 8, 8), np.float32)).shape == (1, 10)
    assert main(["train", "--optimizer", "nope", "--epochs", "1", "--verbose", "0",
                 "--output", str(out)]) == 2
    assert "unknown optimizer 'nope'" in capsys.readouterr().err


def test_kernel_regularizer_adds_to_loss_and_gradient(rng):
    x = rng.standard_normal((8, 5))
    y = rng.standard_normal((8, 2))
    reg = nb.regularizers.L1L2(l1=0.01, l2=0.02)
    model = nb.Sequential([L.Dense(2, kernel_regularizer=reg)], input_shape=(5,), dtype="float64")
    plain = nb.Sequential([L.Dense(2)], input_shape=(5,), dtype="float64")
    plain.set_weights(model.get_weights())
    for m in (model, plain):
        m.compile(nb.optimizers.SGD(1.0), "mse")
    w = model.get_weights()[0]
    penalty = 0.01 * np.abs(w).sum() + 0.02 * (w ** 2).sum()
    assert model.evaluate(x, y)["loss"] == pytest.approx(plain.evaluate(x, y)["loss"] + penalty)
    assert model.train_step(x, y) == pytest.approx(plain.train_step(x, y) + penalty)
    step_reg = w - model.get_weights()[0]
    step_plain = w - plain.get_weights()[0]
    np.testing.assert_allclose(step_reg - step_plain, 0.01 * np.sign(w) + 0.04 * w, rtol=1e-10)
    clone = L.Dense.from_config(model.layers[0].get_config())
    assert clone.kernel_regularizer.get_config() == reg.get_config()


def test_gradient_norms_per_layer(rng):
    model = mlp(dtype="float64")
    model.compile("sgd", "sparse_categorical_crossentropy")
    model.train_step(rng.standard_normal((6, 5)), rng.integers(0, 3, 6))
    norms = model.gradient_norms()
    assert list(norms) == [l.name for l in model.layers]
    for layer in model.layers:
        expected = np.sqrt(sum((g ** 2).sum() for g in layer.grads.values()))
        assert norms[layer.name] == pytest.approx(expected, rel=1e-12)


def test_sample_and_class_weights_scale_each_samples_loss(rng):
    x = rng.standard_normal((12, 5))
    y = rng.integers(0, 3, 12)
    base = mlp(dtype="float64")
    base.compile(nb.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    per_sample = np.array([-np.log(p[c]) for p, c in zip(base.predict(x), y)])
    w = rng.uniform(0.5, 2.0, 12)
    assert base.evaluate(x, y)["loss"] == pytest.approx(per_sample.mean(), rel=1e-10)
    assert base.evaluate(x, y, sample_weight=w)["loss"] == \
        pytest.approx((w * per_sample).mean(), rel=1e-10)
    # class_weight is a sample weight per class; both routes train identically.
    cw = {0: 2.0, 1: 0.5, 2: 1.0}
    a, b = mlp(dtype="float64"), mlp(dtype="float64")
    b.set_weights(a.get_weights())
    for m in (a, b):
        m.compile(nb.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    ha = a.fit(x, y, epochs=2, batch_size=4, shuffle=False, verbose=0, class_weight=cw)
    hb = b.fit(x, y, epochs=2, batch_size=4, shuffle=False, verbose=0,
               sample_weight=np.array([cw[c] for c in y]))
    assert ha.history["loss"] == pytest.approx(hb.history["loss"], rel=1e-12)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-12)
    # A zero weight removes a sample from training entirely.
    c, d = mlp(dtype="float64"), mlp(dtype="float64")
    d.set_weights(c.get_weights())
    for m in (c, d):
        m.compile(nb.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    keep = np.ones(12)
    keep[5] = 0.0
    c.train_step(x, y, sample_weight=keep)
    d.train_step(np.delete(x, 5, 0), np.delete(y, 5), sample_weight=np.full(11, 11 / 12))
    for wc, wd in zip(c.get_weights(), d.get_weights()):
        np.testing.assert_allclose(wc, wd, rtol=1e-10)
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(12,\)"):
        a.fit(x, y, sample_weight=np.ones(5), verbose=0)
    with pytest.raises(ValueError, match="non-negative"):
        a.fit(x, y, sample_weight=-np.ones(12), verbose=0)
    with pytest.raises(TypeError, match="class_weight must be a dict"):
        a.fit(x, y, class_weight=[1, 2], verbose=0)
    # with several outputs it would weigh every output (a regression head too): refused
    inp = nb.Input((5,))
    h = L.Dense(4, activation="tanh")(inp)
    two = nb.Model(inp, [L.Dense(3, activation="softmax", name="cls")(h),
                         L.Dense(1, name="reg")(h)])
    two.compile("sgd", ["sparse_categorical_crossentropy", "mse"])
    before = two.get_weights()
    with pytest.raises(ValueError, match=r"fit: class_weight is only supported for models with "
                                         r"a single output, got a model with 2 outputs "
                                         r"\(cls, reg\)"):
        two.fit(x, [y, x[:, :1]], class_weight=cw, verbose=0)
    for u, v in zip(before, two.get_weights()):
        np.testing.assert_array_equal(u, v)


def test_dropout_batchnorm_cnn_on_digits(digits):
    """The training toolkit's layers reach the core issue's accuracy (0.95) on digits."""
    x_train, x_test, y_train, y_test = digits
    nb.seed(0)
    model = nb.Sequential([
        L.Conv2D(32, 3, padding="same", use_bias=False), L.BatchNormalization(momentum=0.9),
        L.ReLU(),
        L.MaxPool2D(2), L.SpatialDropout2D(0.1),
        L.Conv2D(64, 3, padding="same", use_bias=False), L.BatchNormalization(momentum=0.9),
        L.ReLU(),
        L.MaxPool2D(2), L.Flatten(), L.Dropout(0.3),
        L.Dense(10, activation="softmax"),
    ], input_shape=(1, 8, 8))
    model.compile(nb.optimizers.Adam(3e-3), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=8, batch_size=32, seed=0, verbose=0)
    assert model.evaluate(x_test, y_test)["accuracy"] >= 0.95


def test_fit_with_lbfgs_full_batch(rng):
    x = rng.standard_normal((40, 5))
    y = (x[:, 0] - x[:, 1] > 0).astype(np.int64)
    nb.seed(0)
    model = mlp(out=2, dtype="float64")
    model.compile(nb.optimizers.LBFGS(line_search_fn="strong_wolfe"),
                  "sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, epochs=5, batch_size=40, shuffle=False, verbose=0)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    assert model.evaluate(x, y)["accuracy"] > 0.9


def test_cli_optimizers_tour(tmp_path, capsys, monkeypatch):
    from numbanet import optimizer_tour
    from numbanet.cli import main
    calls = {}

    def fake(**kwargs):                      # the tour itself is tested in test_optimizer_tour
        calls.update(kwargs)
        return {"SGD": [1.0], "Adam": [0.5]}
    monkeypatch.setattr(optimizer_tour, "compare_optimizers", fake)
    png = tmp_path / "o.png"
    assert main(["optimizers", "--epochs", "2", "--plot", str(png)]) == 0
    assert calls["epochs"] == 2 and calls["plot"] == str(png)
    assert "2 optimizers" in capsys.readouterr().out


def test_saved_file_gets_ordinary_permissions(tmp_path):
    model = mlp()
    model.save(tmp_path / "m.npz")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "m.npz").stat().st_mode & 0o777 == 0o666 & ~umask


def test_sequential_takes_a_variable_length_input_shape(rng):
    """input_shape=(None,) builds a Sequential for sequences of any length (as Input((None,))
    does in a graph); sizes that are not positive ints or None are still refused."""
    L = nb.layers
    model = nb.Sequential([L.Embedding(10, 4, mask_zero=True), L.LSTM(3),
                           L.Dense(1, activation="sigmoid")], input_shape=(None,))
    assert model.output_shape == (1,) and model.input_shape == (None,)
    inp = nb.Input((None,), dtype="int64")
    graph = nb.Model(inp, model.layers[2](model.layers[1](model.layers[0](inp))))
    ids = rng.integers(1, 10, size=(4, 3))
    ids[:, 2] = 0
    short, long = model.predict(ids), model.predict(np.pad(ids, ((0, 0), (0, 4))))
    np.testing.assert_array_equal(short, long)          # padding steps are skipped
    np.testing.assert_array_equal(short, graph.predict(ids))
    model.compile("adam", "binary_crossentropy")
    before = model.get_weights()
    model.fit(ids, np.array([1, 0, 1, 0]), epochs=1, verbose=0)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    for bad in [(0,), ("a",), (True,), (2, -1)]:
        with pytest.raises(ValueError, match="Sequential.build: input_shape must be a tuple"):
            nb.Sequential([L.Dense(2)], input_shape=bad)


def test_validation_losses_use_the_validation_sample_weights(rng):
    """validation_data=(x, y, sample_weight) weights the validation loss, and validation_split
    splits sample_weight with the data (Keras); (n, 1) sample weights are taken as (n,)."""
    x = rng.standard_normal((40, 3))
    y = x @ np.array([[0.5], [-1.0], [0.25]]) + 0.1 * rng.standard_normal((40, 1))
    w = rng.uniform(0.0, 3.0, 40)

    def model():
        nb.seed(0)
        m = nb.Sequential([nb.layers.Dense(1)], input_shape=(3,), dtype="float64")
        m.compile(nb.optimizers.SGD(0.05), "mse")
        return m
    m = model()
    h = m.fit(x[:30], y[:30], epochs=1, verbose=0, validation_data=(x[30:], y[30:], w[30:]))
    want = m.evaluate(x[30:], y[30:], sample_weight=w[30:])["loss"]
    assert want != pytest.approx(m.evaluate(x[30:], y[30:])["loss"])
    assert h.history["val_loss"][0] == pytest.approx(want, rel=1e-12)
    m = model()
    h = m.fit(x, y, epochs=1, verbose=0, validation_split=0.25, sample_weight=w[:, None],
              shuffle=False)
    split = model()
    split.fit(x[:30], y[:30], epochs=1, verbose=0, sample_weight=w[:30], shuffle=False)
    np.testing.assert_array_equal(m.get_weights()[0], split.get_weights()[0])
    want = m.evaluate(x[30:], y[30:], sample_weight=w[30:])["loss"]
    assert h.history["val_loss"][0] == pytest.approx(want, rel=1e-12)
    with pytest.raises(ValueError, match=r"validation_data must be \(x_val, y_val\) or"):
        model().fit(x, y, verbose=0, validation_data=(x, y, w, w))
    with pytest.raises(ValueError, match=r"fit validation_data: sample_weight must have shape"):
        model().fit(x, y, verbose=0, validation_data=(x, y, w[:3]))


def test_train_on_batch_is_one_adam_step_as_torch_and_fit(rng):
    """train_on_batch takes one optimizer step on exactly the batch given: the step of torch's
    Adam on the same batch and loss, and of fit on that one batch (batch_size = its size)."""
    torch = pytest.importorskip("torch")
    x, y = rng.standard_normal((7, 5)), rng.integers(0, 3, 7)

    def model():
        m = mlp(units=4, dtype="float64")
        m.compile(nb.optimizers.Adam(learning_rate=0.05), "sparse_categorical_crossentropy")
        return m
    a, b = model(), model()
    b.set_weights(a.get_weights())
    ws = [torch.tensor(w, requires_grad=True) for w in a.get_weights()]
    topt = torch.optim.Adam(ws, lr=0.05, eps=1e-7, foreach=False)
    for step in range(3):
        xb, yb = x[step:step + 5], y[step:step + 5]
        topt.zero_grad()
        h = torch.tanh(torch.tensor(xb) @ ws[0] + ws[1])
        tloss = torch.nn.functional.cross_entropy(h @ ws[2] + ws[3], torch.tensor(yb))
        tloss.backward()
        topt.step()
        loss = a.train_on_batch(xb, yb)
        assert isinstance(loss, float) and loss == pytest.approx(tloss.item(), rel=1e-12)
        hist = b.fit(xb, yb, batch_size=5, epochs=1, shuffle=False, verbose=0)
        assert hist.history["loss"] == [loss]
        for got, fit_w, want in zip(a.get_weights(), b.get_weights(), ws):
            np.testing.assert_array_equal(got, fit_w)
            np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_on_batch_methods_return_keras_values(rng):
    """train_on_batch / test_on_batch: the loss as a float for
    one output and no metrics, else [loss, *output losses, *metrics] in evaluate's order, or
    the dict with return_dict=True; train_on_batch's metrics are those of its batch alone
    (taken before the update), test_on_batch is evaluate on one batch, predict_on_batch is
    predict."""
    x, y = rng.standard_normal((8, 5)), rng.integers(0, 3, 8)
    m = mlp(dtype="float64")
    m.compile(nb.optimizers.SGD(0.1), "sparse_categorical_crossentropy", metrics=["accuracy"])
    before = m.predict(x)
    logs = m.train_on_batch(x[:4], y[:4], return_dict=True)
    assert list(logs) == ["loss", "accuracy"]
    assert logs["accuracy"] == np.mean(before[:4].argmax(1) == y[:4])
    pred = m.predict(x[4:])
    got = m.train_on_batch(x[4:], y[4:])            # the metric restarts with each batch
    assert isinstance(got, list) and got[1] == np.mean(pred.argmax(1) == y[4:])
    ev = m.evaluate(x, y, batch_size=8)
    assert m.test_on_batch(x, y, return_dict=True) == ev
    assert m.test_on_batch(x, y) == [ev["loss"], ev["accuracy"]]
    np.testing.assert_array_equal(m.predict_on_batch(x), m.predict(x))
    m.compile(nb.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    loss = m.test_on_batch(x, y)
    assert isinstance(loss, float) and loss == m.evaluate(x, y)["loss"]
    w = rng.uniform(0.5, 2.0, 8)
    assert m.test_on_batch(x, y, sample_weight=w) == \
        pytest.approx(m.evaluate(x, y, sample_weight=w)["loss"], rel=1e-12)
    with pytest.raises(ValueError, match="train_on_batch: return_dict must be"):
        m.train_on_batch(x, y, return_dict="yes")
    with pytest.raises(RuntimeError, match=r"train_on_batch: call compile"):
        mlp().train_on_batch(x, y)
    # several outputs: per-output losses between the loss and the metrics, as evaluate has them
    inp = nb.Input((5,))
    h = L.Dense(4, activation="tanh")(inp)
    two = nb.Model(inp, [L.Dense(3, activation="softmax", name="cls")(h),
                         L.Dense(1, name="reg")(h)])
    two.compile(nb.optimizers.SGD(0.1), ["sparse_categorical_crossentropy", "mse"],
                metrics={"cls": ["accuracy"]}, loss_weights=[1.0, 0.5])
    yr = rng.standard_normal((8, 1))
    ev = two.evaluate(x, [y, yr], batch_size=8)
    assert list(ev) == ["loss", "cls_loss", "reg_loss", "cls_accuracy"]
    assert two.test_on_batch(x, [y, yr]) == list(ev.values())
    logs = two.train_on_batch(x, [y, yr], return_dict=True)
    assert list(logs) == list(ev) and logs["loss"] == pytest.approx(ev["loss"], rel=1e-12)
    assert logs["reg_loss"] == pytest.approx(ev["reg_loss"], rel=1e-12)
    assert two.train_on_batch(x, [y, yr])[0] < logs["loss"]


def test_train_on_batch_trains_what_is_trainable_now(rng):
    """A GAN's alternating train_on_batch calls: a discriminator frozen after its compile and
    then used inside the combined model is left alone when the combined model trains, and is
    trained by its own train_on_batch once trainable again. As in Keras 3, ``trainable`` is
    read at each step, not when compiling (Keras 2 froze it at compile time)."""
    d = nb.Sequential([L.Dense(4, activation="tanh"), L.Dense(1, activation="sigmoid")],
                      input_shape=(3,))
    d.compile(nb.optimizers.Adam(0.01), "binary_crossentropy", metrics=["accuracy"])
    g = nb.Sequential([L.Dense(3)], input_shape=(2,))
    d.trainable = False
    gan = nb.Sequential([g, d], input_shape=(2,))
    gan.compile(nb.optimizers.Adam(0.01), "binary_crossentropy")
    real, z = rng.standard_normal((6, 3)), rng.standard_normal((6, 2))
    d_before, g_before = d.get_weights(), g.get_weights()
    loss = gan.train_on_batch(z, np.ones(6))
    assert isinstance(loss, float)
    assert all(np.array_equal(a, b) for a, b in zip(d_before, d.get_weights()))
    assert not any(np.array_equal(a, b) for a, b in zip(g_before, g.get_weights()))
    with pytest.warns(UserWarning, match="no trainable weights"):
        d.train_on_batch(real, np.ones(6))          # still frozen: nothing moves
    assert all(np.array_equal(a, b) for a, b in zip(d_before, d.get_weights()))
    d.trainable = True
    g_before = g.get_weights()
    fake = g.predict_on_batch(z)
    d_loss = d.train_on_batch(np.concatenate([real, fake]), np.r_[np.ones(6), np.zeros(6)])
    assert len(d_loss) == 2
    assert not any(np.array_equal(a, b) for a, b in zip(d_before, d.get_weights()))
    assert all(np.array_equal(a, b) for a, b in zip(g_before, g.get_weights()))


def test_evaluate_return_dict_false_gives_keras_values(rng):
    """evaluate returns numbanet's dict by default; return_dict=False gives Keras' values: the
    loss (a float) for one output and no metrics, else [loss, *output losses, *metrics]."""
    x, y = rng.standard_normal((9, 5)), rng.integers(0, 3, 9)
    m = mlp(dtype="float64")
    m.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    ev = m.evaluate(x, y, batch_size=4)
    assert ev == m.evaluate(x, y, batch_size=4, return_dict=True)
    assert m.evaluate(x, y, batch_size=4, return_dict=False) == [ev["loss"], ev["accuracy"]]
    m.compile("adam", "sparse_categorical_crossentropy")
    loss = m.evaluate(x, y, batch_size=4, return_dict=False)
    assert isinstance(loss, float) and loss == ev["loss"]
    inp = nb.Input((5,))
    two = nb.Model(inp, [L.Dense(3, activation="softmax")(inp), L.Dense(1)(inp)])
    two.compile("adam", ["sparse_categorical_crossentropy", "mse"])
    yr = rng.standard_normal((9, 1))
    assert two.evaluate(x, [y, yr], return_dict=False) == list(two.evaluate(x, [y, yr]).values())
    with pytest.raises(ValueError, match="evaluate: return_dict must be"):
        m.evaluate(x, y, return_dict=None)


@pytest.mark.parametrize("method", ["fit", "evaluate", "predict", "train_on_batch",
                                    "test_on_batch", "predict_on_batch"])
def test_unbuilt_sequential_builds_on_the_data(rng, method):
    """A Sequential without input_shape builds itself on the first data it is given, as a call
    does: the same model (dtype from the data) whichever method sees it first."""
    x, y = rng.standard_normal((6, 3)), rng.standard_normal((6, 2))
    args = (x,) if "predict" in method else (x, y)
    kwargs = {"verbose": 0, "shuffle": False, "batch_size": 6} if method == "fit" else {}
    nb.seed(1)
    m = nb.Sequential([L.Dense(4, activation="tanh"), L.Dense(2)])
    m.compile(nb.optimizers.SGD(0.1), "mse")
    got = getattr(m, method)(*args, **kwargs)
    assert m.built and m.input_shape == (3,) and m.dtype == np.float64
    nb.seed(1)
    called = nb.Sequential([L.Dense(4, activation="tanh"), L.Dense(2)])
    called(x)
    called.compile(nb.optimizers.SGD(0.1), "mse")
    want = getattr(called, method)(*args, **kwargs)
    if method == "fit":
        got, want = got.history, want.history
    np.testing.assert_equal(got, want)
    for a, b in zip(m.get_weights(), called.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_keras2_input_shape_and_input_dim_arguments(rng):
    """Dense(2, input_shape=(3,)) / input_dim=3 (Keras 2 style, still taken by Keras 3): the
    first layer of a Sequential builds it for that shape, in the constructor or through add;
    elsewhere the argument is ignored. It is not part of the layer's config, and the model's
    config round-trips. nb.layers.Input is nb.Input."""
    assert L.Input is nb.Input
    m = nb.Sequential([L.Dense(4, activation="tanh", input_shape=(3,)), L.Dense(2)])
    assert m.built and m.input_shape == (3,) and m.output_shape == (2,)
    assert "input_shape" not in m.layers[0].get_config()
    again = nb.Sequential.from_config(json.loads(json.dumps(m.get_config())))
    assert again.input_shape == (3,) and again.output_shape == (2,)
    m = nb.Sequential()
    m.add(L.Dense(4, input_dim=3))
    assert m.built and m.output_shape == (4,)
    m.add(L.Dense(2))                               # a built model is built again (Keras)
    assert m.output_shape == (2,) and len(m.trainable_weights) == 4
    x = rng.standard_normal((5, 3))
    assert m.predict(x).shape == (5, 2)
    conv = nb.Sequential([L.Conv2D(2, 3, input_shape=(1, 6, 6)), L.Flatten()])
    assert conv.output_shape == (32,)
    lstm = nb.Sequential([L.LSTM(3, input_shape=(None, 2))])
    assert lstm.input_shape == (None, 2)
    inp = nb.Input((3,))                            # not first in a Sequential: ignored
    out = L.Dense(2, input_shape=(7,))(inp)
    assert nb.Model(inp, out).output_shape == (2,)
    with pytest.raises(ValueError, match=r"Dense: input_shape must be a tuple of positive ints"):
        L.Dense(2, input_shape=(0,))
    with pytest.raises(ValueError, match=r"Dense: input_dim must be a positive integer, got 0"):
        L.Dense(2, input_dim=0)
    with pytest.raises(TypeError, match=r"Dense: unexpected keyword argument 'input_length'"):
        L.Dense(2, input_length=3)


def test_sequential_pop_removes_the_last_layer(rng):
    """pop() removes and returns the last layer and builds the model again without it (Keras),
    e.g. to put a new head on a trained body; popping an empty model is an error."""
    m = mlp(units=4, out=3)
    body, head = m.layers
    assert m.pop() is head and m.layers == [body] and m.output_shape == (4,)
    x = rng.standard_normal((5, 5)).astype(np.float32)
    np.testing.assert_allclose(m.predict(x), np.tanh(x @ m.get_weights()[0] + m.get_weights()[1]),
                               rtol=1e-5, atol=1e-6)
    m.add(L.Dense(1))
    m.compile("adam", "mse")
    assert m.output_shape == (1,) and np.isfinite(m.train_on_batch(x, np.ones((5, 1))))
    m.pop()
    m.pop()
    assert not m.built and m.layers == []
    m.add(L.Dense(2))                               # the input shape is remembered
    assert m.built and m.input_shape == (5,) and m.output_shape == (2,)
    m.pop()
    with pytest.raises(ValueError, match="Sequential.pop: .* has no layers to remove"):
        m.pop()
    unbuilt = nb.Sequential([L.Dense(3), L.Dense(2)])
    unbuilt.pop()
    assert not unbuilt.built and unbuilt.predict(x).shape == (5, 3)


def test_a_callback_setting_stop_training_ends_fit(rng):
    """A callback's ``self.model.stop_training = True`` (Keras) ends fit after the current
    batch or epoch; the next fit starts afresh."""
    x, y = rng.standard_normal((12, 5)), rng.integers(0, 3, 12)

    class StopAt(nb.callbacks.Callback):
        def __init__(self, epoch=None, batch=None):
            super().__init__()
            self.epoch, self.batch, self.batches = epoch, batch, 0

        def on_train_batch_end(self, batch, logs=None):
            self.batches += 1
            if batch == self.batch:
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            if epoch == self.epoch:
                self.model.stop_training = True
    m = mlp()
    m.compile("adam", "sparse_categorical_crossentropy")
    h = m.fit(x, y, epochs=10, batch_size=4, verbose=0, callbacks=[StopAt(epoch=2)])
    assert len(h.history["loss"]) == 3 and m.stop_training
    stop = StopAt(batch=1)
    h = m.fit(x, y, epochs=10, batch_size=4, verbose=0, callbacks=[stop])
    assert len(h.history["loss"]) == 1 and stop.batches == 2
    assert len(m.fit(x, y, epochs=2, verbose=0).history["loss"]) == 2


def test_lambda_layer_runs_an_ops_function_in_sequential_and_graph_models(rng, tmp_path):
    """Lambda(function) runs a function of tensors written with nb.ops (one tensor, or the
    list it is called on) and is differentiated through like a layer's call(): one SGD step
    equals torch's, the tape's gradients match finite differences. A model holding a Lambda
    cannot be saved as a config (the error says why and what to do), its weights can."""
    torch = pytest.importorskip("torch")
    ops = nb.ops
    x, y = rng.standard_normal((6, 3)), rng.standard_normal((6, 2))
    m = nb.Sequential([L.Dense(4, input_shape=(3,)),
                       L.Lambda(lambda t, k: ops.square(t) * k, arguments={"k": 0.5}),
                       L.Dense(2)], dtype="float64")
    assert m.output_shape == (2,)
    w = [torch.tensor(v, requires_grad=True) for v in m.get_weights()]
    out = ((torch.tensor(x) @ w[0] + w[1]) ** 2 * 0.5) @ w[2] + w[3]
    np.testing.assert_allclose(m.predict(x), out.detach().numpy(), rtol=1e-12)
    assert_sgd_step_like_torch(m, x, y, out, w)
    assert nb.testing.gradcheck(m, x)
    inp = nb.Input((3,), dtype="float64")
    mean, log_var = L.Dense(2)(inp), L.Dense(2)(inp)
    noise = rng.standard_normal((1, 2))             # a fixed draw, broadcast over the batch
    z = L.Lambda(lambda ts: ts[0] + ops.exp(ts[1] * 0.5) * noise)([mean, log_var])
    vae = nb.Model(inp, z)
    assert vae.output_shape == (2,)
    assert nb.testing.gradcheck(vae, x)
    with pytest.raises(NotImplementedError, match=r"Lambda 'lambda.*' wraps a Python function, "
                                                  r"which cannot be saved as a config"):
        vae.save(tmp_path / "vae.npz")
    vae.save_weights(tmp_path / "w.npz")
    with pytest.raises(TypeError, match=r"Lambda: function must be callable, got int"):
        L.Lambda(3)
    with pytest.raises(TypeError, match=r"Lambda: output_shape must be a tuple"):
        L.Lambda(ops.tanh, output_shape="big")


def test_a_call_layer_called_on_a_list_gets_the_list(rng):
    """A user layer defining only call() and called on [a, b] gets the list (Keras' Sampling
    layer of the VAE tutorial), in a graph and eagerly; it was refused ('takes one input, got a
    list of 2') unless the class declared multi_input. Gradients match finite differences and
    torch's for the reparameterization z = mean + exp(log_var / 2) * eps."""
    torch = pytest.importorskip("torch")
    ops = nb.ops
    eps = rng.standard_normal((1, 2))

    class Sampling(L.Layer):
        def call(self, inputs):
            z_mean, z_log_var = inputs
            return z_mean + ops.exp(0.5 * z_log_var) * eps

    inp = nb.Input((3,), dtype="float64")
    z = Sampling()([L.Dense(2)(inp), L.Dense(2)(inp)])
    model = nb.Model(inp, z)
    assert model.output_shape == (2,)
    x = rng.standard_normal((4, 3))
    w = [torch.tensor(v) for v in model.get_weights()]
    mean, log_var = torch.tensor(x) @ w[0] + w[1], torch.tensor(x) @ w[2] + w[3]
    want = (mean + torch.exp(0.5 * log_var) * torch.tensor(eps)).numpy()
    np.testing.assert_allclose(model.predict(x), want, rtol=1e-12)
    assert nb.testing.gradcheck(model, x)
    a, b = rng.standard_normal((4, 2)), rng.standard_normal((4, 2))
    np.testing.assert_allclose(np.asarray(Sampling()([a, b])), a + np.exp(0.5 * b) * eps,
                               rtol=1e-12)


def test_fit_runs_a_subclass_train_step_as_keras_3(rng):
    """A subclass overriding train_step(self, data) (Keras 3's VAE and GAN tutorials) compiles
    without a loss and fit runs it on each batch: data is x alone (fit(x)) or (x, y), its
    returned dict is the logs, a metrics property's trackers are reset each epoch. Before,
    compile wanted a loss, the metrics property could not be set, fit required y and ran its
    own step. The weights equal torch's SGD loop on the same batches."""
    torch = pytest.importorskip("torch")
    ops = nb.ops

    class Regressor(nb.Model):
        def __init__(self):
            super().__init__()
            self.dense = L.Dense(1)
            self.tracker = nb.metrics.Mean(name="loss")
            self.seen = []

        @property
        def metrics(self):
            return [self.tracker]

        def call(self, x, training=False):
            return self.dense(x)

        def train_step(self, data):
            x, y = data if isinstance(data, tuple) else (data, ops.sum(data, axis=1,
                                                                        keepdims=True))
            self.seen.append(len(x))
            with nb.GradientTape() as tape:
                loss = ops.mean(ops.square(self(x) - y))
            grads = tape.gradient(loss, self.trainable_weights)
            self.optimizer.apply_gradients(zip(grads, self.trainable_weights))
            self.tracker.update_state(loss)
            return {"loss": self.tracker.result(), "batch": loss}

    x, y = rng.standard_normal((10, 3)), rng.standard_normal((10, 1))
    model = Regressor()
    model.compile(optimizer=nb.optimizers.SGD(0.1))
    model(x[:1].astype(np.float32))
    w = [torch.tensor(v.astype(np.float64), requires_grad=True) for v in model.get_weights()]
    history = model.fit(x, y, epochs=2, batch_size=4, shuffle=False, verbose=0)
    assert model.seen == [4, 4, 2] * 2
    losses = []
    for _ in range(2):
        for s in (0, 4, 8):
            loss = ((torch.tensor(x[s:s + 4]) @ w[0] + w[1] - torch.tensor(y[s:s + 4])) ** 2).mean()
            losses.append(loss.item())
            loss.backward()
            with torch.no_grad():
                for t in w:
                    t -= 0.1 * t.grad
                    t.grad.zero_()
    for got, t in zip(model.get_weights(), w):
        np.testing.assert_allclose(got, t.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(history.history["loss"], [np.mean(losses[:3]), np.mean(losses[3:])],
                               rtol=1e-5)
    np.testing.assert_allclose(history.history["batch"], [losses[2], losses[5]], rtol=1e-5)
    model.fit(x, epochs=1, batch_size=5, verbose=0)        # data is x alone
    assert model.seen[-2:] == [5, 5]
    with pytest.raises(ValueError, match=r"fit: Regressor overrides train_step\(data\); fit then "
                                         r"takes no class_weight"):
        model.fit(x, y, class_weight={0: 1.0})
    with pytest.raises(ValueError, match=r"fit validation: Regressor was compiled without a "
                                         r"loss"):      # no test_step, no loss to evaluate
        model.fit(x, y, validation_split=0.2)
    with pytest.raises(ValueError, match=r"same number of samples, got sizes \[9, 10\]"):
        model.fit(x, y[:9])
    with pytest.raises(ValueError, match=r"verbose must be 0, 1, 2 or 'auto', got 3"):
        model.fit(x, y, verbose=3)
    with pytest.raises(ValueError, match="compile: a loss is required"):
        nb.Sequential([L.Dense(1)]).compile("sgd")


def test_training_a_wholly_frozen_model_warns_as_keras_3(rng):
    """The Keras 2 GAN recipe (discriminator.trainable = False after its compile) leaves the
    discriminator untrained under Keras 3's rule (trainable read at each step): its
    train_on_batch and fit now say so, with Keras 3's warning, instead of silently returning a
    loss. The combined model, whose generator trains, does not warn."""
    import warnings
    d = nb.Sequential([L.Dense(1, activation="sigmoid")], input_shape=(3,))
    d.compile("adam", "binary_crossentropy")
    d.trainable = False
    gan = nb.Sequential([nb.Sequential([L.Dense(3)], input_shape=(2,)), d])
    gan.compile("adam", "binary_crossentropy")
    real, z = rng.standard_normal((6, 3)), rng.standard_normal((6, 2))
    with pytest.warns(UserWarning, match=r"train_on_batch: Sequential '.*' has no trainable "
                                         r"weights .*set it back to True") as caught:
        d.train_on_batch(real, np.ones(6))
    assert caught[0].filename == __file__
    with pytest.warns(UserWarning, match=r"fit: Sequential '.*' has no trainable weights"):
        d.fit(real, np.ones(6), verbose=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gan.train_on_batch(z, np.ones(6))
        d.trainable = True
        d.train_on_batch(real, np.ones(6))


def test_a_sequential_of_built_models_takes_float64_data(rng):
    """Sequential([generator, discriminator]) without input_shape, both built in float32, is
    built on the first data it gets in their dtype: the float64 noise of np.random (a GAN
    tutorial's) is cast, as for any built model. It was built in float64 and refused its own
    float32 parts ('was built in float32 but gets a float64 input'), or failed in a kernel."""
    g = nb.Sequential([L.Dense(3)], input_shape=(2,))
    d = nb.Sequential([L.Dense(1, activation="sigmoid")], input_shape=(3,))
    gan = nb.Sequential([g, d])
    gan.compile(nb.optimizers.SGD(0.1), "binary_crossentropy")
    z = rng.standard_normal((6, 2))
    want = d.predict(g.predict(z.astype(np.float32)))
    loss = gan.train_on_batch(z, np.ones(6))
    assert gan.dtype == np.float32
    assert loss == pytest.approx(float(-np.mean(np.log(want))), rel=1e-5)
    np.testing.assert_allclose(nb.Sequential([g, d]).predict(z), gan.predict(z), rtol=1e-6)


def test_sequential_add_of_a_layer_that_does_not_fit_leaves_the_model_as_it_was():
    model = nb.Sequential([nb.layers.Dense(4)], input_shape=(3,))
    model.compile("sgd", "mse")
    x = np.ones((2, 3), np.float32)
    before, out = model.get_weights(), model.predict(x)
    with pytest.raises(ValueError, match=r"Conv2D 'conv'.*4-D input"):
        model.add(nb.layers.Conv2D(2, 3, name="conv"))
    assert len(model.layers) == 1 and model.built
    np.testing.assert_array_equal(model.predict(x), out)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    model.add(nb.layers.Dense(1))
    assert model.predict(x).shape == (2, 1)


def test_sequential_takes_an_input_first_as_keras3(rng, tmp_path):
    """Keras 3 writes ``Sequential([keras.Input(shape), ...])`` (or ``add(keras.Input(...))``):
    the Input fixes the input shape (and a float dtype) and is not a layer of the stack."""
    m = nb.Sequential([nb.Input((6,)), L.Dense(4, activation="tanh", name="h"),
                       L.Dense(2, name="o")])
    assert m.built and m.input_shape == (6,) and [l.name for l in m.layers] == ["h", "o"]
    x = rng.standard_normal((5, 6)).astype(np.float32)
    w = m.get_weights()
    np.testing.assert_allclose(m.predict(x), np.tanh(x @ w[0] + w[1]) @ w[2] + w[3],
                               rtol=1e-5, atol=1e-6)
    m.compile("sgd", "mse")
    assert np.isfinite(m.train_on_batch(x, np.zeros((5, 2), np.float32)))
    m.save(tmp_path / "m.npz")
    np.testing.assert_array_equal(nb.load_model(tmp_path / "m.npz").predict(x), m.predict(x))

    step = nb.Sequential()
    step.add(nb.Input((3,), dtype="float64"))
    assert not step.built
    step.add(L.Dense(2, name="d"))
    assert step.built and step.input_shape == (3,) and step.dtype == np.float64

    ids = nb.Sequential([nb.Input((4,), dtype="int32"), L.Embedding(10, 3, name="e")])
    assert ids.output_shape == (4, 3)
    assert ids.predict(np.array([[1, 2, 3, 9]])).shape == (1, 4, 3)

    with pytest.raises(ValueError, match=r"an Input can only come first.*after 1 layer"):
        nb.Sequential([L.Dense(2, name="a"), nb.Input((3,))])
    with pytest.raises(ValueError, match=r"an Input can only come first, once"):
        nb.Sequential([nb.Input((3,)), nb.Input((3,)), L.Dense(2, name="b")])
