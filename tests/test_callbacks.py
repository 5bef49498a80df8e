"""Callbacks on small real training runs: early stopping (and restoring the best weights however
training ends), checkpoints, learning-rate control, the CSV log and the hook order."""
import csv
import warnings

import numpy as np
import pytest

import numbanet as nb

L, C = nb.layers, nb.callbacks
N, BATCH = 24, 8                        # 3 steps an epoch (also with validation_split=0.25)


def tiny(lr=0.05, optimizer=None):
    nb.seed(0)
    model = nb.Sequential([L.Dense(4, activation="tanh"), L.Dense(1)], input_shape=(3,),
                          dtype="float64")
    model.compile(optimizer or nb.optimizers.SGD(lr), "mse")
    return model


@pytest.fixture
def data(rng):
    x = rng.standard_normal((N, 3))
    y = x @ np.array([[0.5], [-1.0], [0.25]]) + 0.1 * rng.standard_normal((N, 1))
    return x, y


class Recorder(C.Callback):
    """Weights at each epoch's end, the learning rate of every step, a copy of the logs."""

    def __init__(self):
        super().__init__()
        self.weights, self.rates, self.logs = [], [], []

    def on_train_batch_begin(self, batch, logs=None):
        self.rates.append(self.model.optimizer.learning_rate)

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append(self.model.get_weights())
        self.logs.append(dict(logs))


class Inject(C.Callback):
    """Puts a chosen value under ``key`` in each epoch's logs (before the callbacks after it)."""

    def __init__(self, values, key="score"):
        super().__init__()
        self.values, self.key = values, key

    def on_epoch_end(self, epoch, logs=None):
        logs[self.key] = self.values[epoch]


class PoisonAt(C.Callback):
    """Makes every weight NaN at the start of ``epoch``, so that epoch's loss is NaN."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            self.model.set_weights([np.full_like(w, np.nan) for w in self.model.get_weights()])


def same_weights(a, b):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


def fit(model, data, callbacks, epochs, **kwargs):
    return model.fit(*data, epochs=epochs, batch_size=BATCH, verbose=0, callbacks=callbacks,
                     **kwargs)


# -- EarlyStopping ------------------------------------------------------------------------------
@pytest.mark.parametrize("restore", [True, False])
def test_early_stopping_stops_after_patience_and_restores_best(data, restore):
    scores = [5.0, 4.0, 4.5, 3.9, 4.0, 4.1, 3.0, 2.0, 1.0, 0.5]
    model, rec = tiny(), Recorder()
    stop = C.EarlyStopping(monitor="score", patience=2, restore_best_weights=restore)
    history = fit(model, data, [Inject(scores), rec, stop], epochs=10)
    # best 3.9 at epoch 3; epochs 4 and 5 do not improve -> stop at the end of epoch 5
    assert len(history.history["loss"]) == 6 and len(rec.weights) == 6
    assert (stop.stopped_epoch, stop.best_epoch, stop.best) == (5, 3, 3.9)
    assert model.stop_training and model.stop_reason is None
    same_weights(model.get_weights(), rec.weights[3] if restore else rec.weights[5])


def test_early_stopping_restores_best_when_epochs_run_out(data):
    model, rec = tiny(), Recorder()
    stop = C.EarlyStopping(monitor="score", patience=10, restore_best_weights=True)
    fit(model, data, [Inject([3.0, 1.0, 2.0, 2.5]), rec, stop], epochs=4)
    assert stop.stopped_epoch is None and len(rec.weights) == 4
    same_weights(model.get_weights(), rec.weights[1])


def test_early_stopping_restores_best_when_loss_turns_nan(data):
    model, rec = tiny(), Recorder()
    stop = C.EarlyStopping(monitor="val_loss", patience=5, restore_best_weights=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = fit(model, data, [PoisonAt(3), rec, stop], epochs=8, validation_split=0.25)
    messages = [str(w.message) for w in caught]
    assert any("loss became nan at epoch 4" in m for m in messages), messages
    assert not any("monitored" in m for m in messages), messages     # aborted epoch: no 2nd warning
    assert "nan" in model.stop_reason and len(rec.weights) == 4
    assert np.isnan(rec.weights[3][0]).all()
    best = int(np.argmin(history.history["val_loss"]))
    assert len(history.history["val_loss"]) == 3 and stop.best_epoch == best
    same_weights(model.get_weights(), rec.weights[best])


def test_early_stopping_restores_batchnorm_statistics_with_the_best_weights(data):
    """The best epoch's moving mean and variance come back with its weights."""
    nb.seed(0)
    model = nb.Sequential([L.Dense(4), L.BatchNormalization(momentum=0.5), L.Dense(1)],
                          input_shape=(3,), dtype="float64")
    model.compile(nb.optimizers.SGD(0.05), "mse")
    rec = Recorder()
    stop = C.EarlyStopping(monitor="score", patience=10, restore_best_weights=True)
    fit(model, data, [Inject([3.0, 1.0, 2.0, 2.5]), rec, stop], epochs=4)
    bn = model.layers[1]
    assert len(rec.weights[1]) == 8
    assert not np.array_equal(rec.weights[1][4], rec.weights[3][4])    # the statistics moved
    same_weights(model.get_weights(), rec.weights[1])
    np.testing.assert_array_equal(bn.buffers["moving_mean"], rec.weights[1][4])
    np.testing.assert_array_equal(bn.buffers["moving_variance"], rec.weights[1][5])


def test_early_stopping_on_real_validation_loss(data):
    model, rec = tiny(lr=0.05), Recorder()
    stop = C.EarlyStopping(patience=2, restore_best_weights=True)       # monitor="val_loss"
    history = fit(model, data, [rec, stop], epochs=30, validation_split=0.25)
    val = history.history["val_loss"]
    best, wait, expected = np.inf, 0, None             # the rule by hand on the logged values
    for epoch, value in enumerate(val):
        best, wait = (value, 0) if value < best else (best, wait + 1)
        if wait == 2:
            expected = epoch
            break
    assert expected is not None and 2 < expected < 29     # it did stop early on these data
    assert stop.stopped_epoch == expected and len(val) == expected + 1
    assert stop.best_epoch == int(np.argmin(val)) == expected - 2
    same_weights(model.get_weights(), rec.weights[stop.best_epoch])


def test_early_stopping_min_delta_patience_zero_mode_and_auto(data):
    stop = C.EarlyStopping(monitor="score", patience=2, min_delta=0.1)
    fit(tiny(), data, [Inject([1.0, 0.95, 0.92, 0.5]), stop], epochs=4)
    assert stop.stopped_epoch == 2                     # 0.95 and 0.92 are within min_delta
    stop = C.EarlyStopping(monitor="score", patience=0)
    fit(tiny(), data, [Inject([3.0, 2.0, 2.0, 1.0]), stop], epochs=4)
    assert stop.stopped_epoch == 2                     # patience 0: first epoch not improving
    rising = [0.1, 0.2, 0.3, 0.2, 0.1]
    for key, mode, stopped in [("my_accuracy", "auto", 3), ("val_f1", "auto", 3),
                               ("recall", "auto", 3), ("my_accuracy", "min", 1),
                               ("error", "auto", 1), ("error", "max", 3)]:
        stop = C.EarlyStopping(monitor=key, patience=1, mode=mode)
        fit(tiny(), data, [Inject(rising, key), stop], epochs=5)
        assert stop.stopped_epoch == stopped, (key, mode)


def test_early_stopping_baseline_and_start_from_epoch(data):
    stop = C.EarlyStopping(monitor="score", patience=2, baseline=0.75)
    fit(tiny(), data, [Inject([0.9, 0.8, 0.7, 0.6]), stop], epochs=4)
    assert stop.stopped_epoch == 1                     # never beat the baseline for 2 epochs
    stop = C.EarlyStopping(monitor="score", patience=2, baseline=0.85)
    fit(tiny(), data, [Inject([0.9, 0.8, 0.7, 0.6]), stop], epochs=4)
    assert stop.stopped_epoch is None
    scores = [0.1, 0.2, 5.0, 6.0, 7.0]
    stop = C.EarlyStopping(monitor="score", patience=1)
    fit(tiny(), data, [Inject(scores), stop], epochs=5)
    assert stop.stopped_epoch == 1
    stop = C.EarlyStopping(monitor="score", patience=1, start_from_epoch=2,
                           restore_best_weights=True)
    rec = Recorder()
    model = tiny()
    fit(model, data, [Inject(scores), rec, stop], epochs=5)
    assert (stop.stopped_epoch, stop.best_epoch) == (3, 2)
    same_weights(model.get_weights(), rec.weights[2])


def test_missing_monitor_warns_with_the_available_keys(data):
    stop = C.EarlyStopping(patience=0)                 # val_loss, but no validation data
    with pytest.warns(RuntimeWarning, match=r"'val_loss' is not in the logs; available keys: "
                                            r"'loss'.*validation_split"):
        history = fit(tiny(), data, [stop], epochs=3)
    assert len(history.history["loss"]) == 3 and stop.stopped_epoch is None


# -- ModelCheckpoint ----------------------------------------------------------------------------
def test_checkpoint_every_epoch_with_format_fields(tmp_path, data):
    model, rec = tiny(), Recorder()
    ckpt = C.ModelCheckpoint(str(tmp_path / "sub" / "ck-{epoch:02d}-{val_loss:.4f}.npz"))
    history = fit(model, data, [rec, ckpt], epochs=3, validation_split=0.25)
    names = [f"ck-{e + 1:02d}-{v:.4f}.npz" for e, v in enumerate(history.history["val_loss"])]
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == names
    for epoch, name in enumerate(names):
        loaded = nb.load_model(tmp_path / "sub" / name)
        same_weights(loaded.get_weights(), rec.weights[epoch])
        assert loaded.optimizer.iterations == 3 * (epoch + 1)


def test_checkpoint_save_best_only_writes_on_improvement(tmp_path, data):
    scores = [3.0, 2.0, 2.5, 1.0, 1.5]
    model, rec = tiny(), Recorder()
    each = C.ModelCheckpoint(tmp_path / "best-{epoch}.npz", monitor="score", save_best_only=True)
    one = C.ModelCheckpoint(tmp_path / "best.npz", monitor="score", save_best_only=True)
    fit(model, data, [Inject(scores), rec, each, one], epochs=5)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "best-1.npz", "best-2.npz", "best-4.npz", "best.npz"]
    same_weights(nb.load_model(tmp_path / "best.npz").get_weights(), rec.weights[3])
    same_weights(nb.load_model(tmp_path / "best-2.npz").get_weights(), rec.weights[1])
    assert one.best == 1.0
    # the best value is kept across fit calls: a worse run does not overwrite the file
    fit(model, data, [Inject([1.2, 1.1]), one], epochs=2)
    same_weights(nb.load_model(tmp_path / "best.npz").get_weights(), rec.weights[3])


def test_checkpoint_skips_nan_epochs_and_missing_monitor(tmp_path, data):
    model, rec = tiny(), Recorder()
    with pytest.warns(RuntimeWarning, match="loss became nan"):
        fit(model, data, [PoisonAt(2), rec, C.ModelCheckpoint(tmp_path / "last.npz")], epochs=5)
    same_weights(nb.load_model(tmp_path / "last.npz").get_weights(), rec.weights[1])
    with pytest.warns(RuntimeWarning, match="'val_loss' is not in the logs"):
        fit(tiny(), data, [C.ModelCheckpoint(tmp_path / "v.npz", save_best_only=True)], epochs=1)
    assert not (tmp_path / "v.npz").exists()
    with pytest.raises(KeyError, match="'val_acc'.*available: loss, epoch"):
        fit(tiny(), data, [C.ModelCheckpoint(tmp_path / "{val_acc}.npz")], epochs=1)



class _Tower(nb.Model):
    """A subclassed model: its architecture is code, so only its weights can be saved."""

    def __init__(self):
        super().__init__()
        self.hidden, self.out = L.Dense(4, activation="tanh"), L.Dense(1)

    def call(self, x, training=False):
        return self.out(self.hidden(x))


def _tower():
    nb.seed(0)
    model = _Tower()
    model.compile(nb.optimizers.SGD(0.05), "mse")
    return model


def test_checkpoint_of_a_subclassed_model_saves_weights_only(tmp_path, data):
    model, rec = _tower(), Recorder()
    with pytest.raises(ValueError, match="subclassed model.*save_weights_only=True"):
        fit(model, data, [rec, C.ModelCheckpoint(tmp_path / "m.npz")], epochs=2)
    assert rec.weights == [] and model.optimizer.iterations == 0    # refused before training
    ckpt = C.ModelCheckpoint(tmp_path / "w-{epoch}.npz", save_weights_only=True)
    fit(model, data, [rec, ckpt], epochs=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w-1.npz", "w-2.npz"]
    for epoch in (1, 2):
        other = _tower()
        other.predict(data[0][:1])                                  # builds it
        other.load_weights(tmp_path / f"w-{epoch}.npz")
        same_weights(other.get_weights(), rec.weights[epoch - 1])
    with pytest.raises(ValueError, match="save_weights_only` must be True or False"):
        C.ModelCheckpoint("x.npz", save_weights_only="yes")

# -- learning rate ------------------------------------------------------------------------------
def test_learning_rate_scheduler_sets_the_rate_each_epoch(data):
    model, rec = tiny(), Recorder()
    sched = C.LearningRateScheduler(lambda epoch, lr: 0.1 * 0.5 ** epoch)
    fit(model, data, [sched, rec], epochs=4)
    assert rec.rates == [0.1] * 3 + [0.05] * 3 + [0.025] * 3 + [0.0125] * 3
    assert model.optimizer.learning_rate == 0.0125
    assert [logs["learning_rate"] for logs in rec.logs] == [0.1, 0.05, 0.025, 0.0125]
    # (epoch, lr) sees the current rate; a one-argument schedule (a schedules object) works too
    model, rec = tiny(lr=0.2), Recorder()
    fit(model, data, [C.LearningRateScheduler(lambda epoch, lr: lr / 2), rec], epochs=3)
    assert rec.rates[::3] == [0.1, 0.05, 0.025]
    model, rec = tiny(), Recorder()
    fit(model, data, [C.LearningRateScheduler(nb.schedules.StepDecay(0.3, 2, 0.1)), rec], epochs=5)
    assert rec.rates[::3] == pytest.approx([0.3, 0.3, 0.03, 0.03, 0.003], rel=1e-14)


def test_learning_rate_scheduler_errors(data):
    model = tiny(optimizer=nb.optimizers.SGD(nb.schedules.StepDecay(0.1, 10)))
    with pytest.raises(TypeError, match="LearningRateScheduler.*schedule.*StepDecay"):
        fit(model, data, [C.LearningRateScheduler(lambda e: 0.1)], epochs=1)
    with pytest.raises(ValueError, match="returned -1.0 at epoch 0"):
        fit(tiny(), data, [C.LearningRateScheduler(lambda e, lr: -1.0)], epochs=1)


def test_reduce_lr_on_plateau_after_patience(data):
    scores = [1.0, 0.9, 0.95, 0.97, 0.96, 0.99, 0.98, 0.8]
    model, rec = tiny(lr=0.1), Recorder()
    fit(model, data, [Inject(scores), C.ReduceLROnPlateau("score", factor=0.5, patience=2,
                                                          min_delta=0.0), rec], epochs=8)
    assert rec.rates[::3] == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.025, 0.025])
    assert [logs["learning_rate"] for logs in rec.logs] == pytest.approx(rec.rates[::3])
    # cooldown=1: the epoch after a reduction is not counted
    model, rec = tiny(lr=0.1), Recorder()
    plateau = C.ReduceLROnPlateau("score", factor=0.5, patience=2, min_delta=0.0, cooldown=1)
    fit(model, data, [Inject(scores), plateau, rec], epochs=8)
    assert rec.rates[::3] == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025])


def test_reduce_lr_on_plateau_min_lr_min_delta_and_mode(data):
    model, rec = tiny(lr=0.1), Recorder()
    plateau = C.ReduceLROnPlateau("score", factor=0.1, patience=1, min_lr=0.005)
    fit(model, data, [Inject([1.0] * 5), plateau, rec], epochs=5)
    assert rec.rates[::3] == pytest.approx([0.1, 0.1, 0.01, 0.005, 0.005], rel=1e-14)
    model, rec = tiny(lr=0.1), Recorder()            # improvements smaller than min_delta count
    fit(model, data, [Inject([1.0, 0.99995, 0.9999]), C.ReduceLROnPlateau(
        "score", factor=0.5, patience=2), rec], epochs=3)
    assert rec.rates[::3] == pytest.approx([0.1, 0.1, 0.1])
    assert model.optimizer.learning_rate == pytest.approx(0.05)
    model, rec = tiny(lr=0.1), Recorder()            # "val_accuracy": maximized
    fit(model, data, [Inject([0.5, 0.6, 0.7], "val_accuracy"),
                      C.ReduceLROnPlateau("val_accuracy", patience=1), rec], epochs=3)
    assert model.optimizer.learning_rate == 0.1


def test_reduce_lr_on_plateau_on_real_training_and_schedule_error(data):
    model = tiny(lr=0.05)
    plateau = C.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, min_delta=10.0)
    fit(model, data, [plateau], epochs=3)            # no epoch improves by 10: halve twice
    assert model.optimizer.learning_rate == pytest.approx(0.0125)
    model = tiny(optimizer=nb.optimizers.Adam(nb.schedules.CosineDecay(0.01, 100)))
    with pytest.raises(TypeError, match="ReduceLROnPlateau.*schedule.*CosineDecay"):
        fit(model, data, [C.ReduceLROnPlateau()], epochs=1)


# -- CSVLogger ----------------------------------------------------------------------------------
def read_csv(path, sep=","):
    with open(path, newline="") as f:
        return list(csv.reader(f, delimiter=sep))


def test_csv_logger_header_rows_and_append(tmp_path, data):
    path = tmp_path / "log.csv"
    model = tiny()
    history = fit(model, data, [C.CSVLogger(path)], epochs=3, validation_split=0.25)
    rows = read_csv(path)
    assert rows[0] == ["epoch", "loss", "val_loss"]
    assert [r[0] for r in rows[1:]] == ["0", "1", "2"]
    for r, loss, val in zip(rows[1:], history.history["loss"], history.history["val_loss"]):
        assert (float(r[1]), float(r[2])) == (loss, val)        # repr: exact round trip
    fit(model, data, [C.CSVLogger(path, append=True)], epochs=2, validation_split=0.25)
    rows = read_csv(path)
    assert len(rows) == 6 and rows.count(rows[0]) == 1
    fit(model, data, [C.CSVLogger(path)], epochs=1, validation_split=0.25)
    assert len(read_csv(path)) == 2                             # append=False starts over


def test_csv_logger_separator_extra_keys_and_missing_values(tmp_path, data):
    path = tmp_path / "log.tsv"
    with pytest.warns(RuntimeWarning, match="loss became nan"):
        fit(tiny(), data, [PoisonAt(1), C.LearningRateScheduler(lambda e, lr: lr),
                           C.CSVLogger(path, separator="\t")], epochs=3, validation_split=0.25)
    rows = read_csv(path, "\t")
    assert rows[0] == ["epoch", "loss", "val_loss", "learning_rate"]
    assert rows[2][0] == "1" and rows[2][1] == "nan" and rows[2][2] == "NA"
    assert float(rows[2][3]) == 0.05 and len(rows) == 3


# -- the rest -----------------------------------------------------------------------------------
def test_hooks_are_called_in_order(data):
    class Trace(C.Callback):
        def __init__(self):
            super().__init__()
            self.calls = []

        def on_train_begin(self, logs=None): self.calls.append("train_begin")
        def on_epoch_begin(self, epoch, logs=None): self.calls.append(f"epoch_begin {epoch}")
        def on_train_batch_begin(self, b, logs=None): self.calls.append(f"batch_begin {b}")
        def on_train_batch_end(self, b, logs=None): self.calls.append(f"batch_end {b}")
        def on_epoch_end(self, epoch, logs=None): self.calls.append(f"epoch_end {epoch}")
        def on_train_end(self, logs=None): self.calls.append("train_end")

    trace = Trace()
    history = fit(tiny(), data, [trace], epochs=2)
    batches = [f"batch_{w} {b}" for b in range(3) for w in ("begin", "end")]
    assert trace.calls == (["train_begin", "epoch_begin 0"] + batches + ["epoch_end 0",
                           "epoch_begin 1"] + batches + ["epoch_end 1", "train_end"])
    assert isinstance(history, C.History) and history.epoch == [0, 1]
    assert trace.model is not None and trace.params["epochs"] == 2


@pytest.mark.parametrize("make, arg", [
    (lambda: C.EarlyStopping(patience=-1), "patience"),
    (lambda: C.EarlyStopping(patience=1.5), "patience"),
    (lambda: C.EarlyStopping(min_delta=-0.1), "min_delta"),
    (lambda: C.EarlyStopping(mode="maximum"), "mode"),
    (lambda: C.EarlyStopping(monitor=""), "monitor"),
    (lambda: C.EarlyStopping(restore_best_weights="yes"), "restore_best_weights"),
    (lambda: C.EarlyStopping(baseline=float("nan")), "baseline"),
    (lambda: C.EarlyStopping(start_from_epoch=-2), "start_from_epoch"),
    (lambda: C.ModelCheckpoint(""), "filepath"),
    (lambda: C.ModelCheckpoint("m-{}.npz"), "filepath"),
    (lambda: C.ModelCheckpoint("m-{epoch.npz"), "filepath"),
    (lambda: C.ModelCheckpoint("m.npz", save_best_only=1), "save_best_only"),
    (lambda: C.ModelCheckpoint("m.npz", mode="up"), "mode"),
    (lambda: C.LearningRateScheduler(0.1), "schedule"),
    (lambda: C.LearningRateScheduler(lambda: 0.1), "schedule"),
    (lambda: C.LearningRateScheduler(lambda e: 0.1, verbose=3), "verbose"),
    (lambda: C.ReduceLROnPlateau(factor=1.0), "factor"),
    (lambda: C.ReduceLROnPlateau(factor=0), "factor"),
    (lambda: C.ReduceLROnPlateau(cooldown=-1), "cooldown"),
    (lambda: C.ReduceLROnPlateau(min_lr=-1e-3), "min_lr"),
    (lambda: C.CSVLogger(None), "filename"),
    (lambda: C.CSVLogger("log.csv", separator=", "), "separator"),
    (lambda: C.CSVLogger("log.csv", append="no"), "append"),
])
def test_bad_arguments_name_the_argument_and_value(make, arg):
    with pytest.raises(ValueError, match=rf"`{arg}` must be .*received {arg}="):
        make()


def test_compile_notice_speaks_only_when_the_first_step_is_slow(data):
    """A first step slower than ``after`` (a cold Numba cache) prints the line once; a fast one
    prints nothing, and the timer never fires later."""
    import io
    import time

    class SlowFirstStep(C.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 0 and not getattr(self, "done", False):
                self.done = True
                time.sleep(0.3)

    x, y = data
    out = io.StringIO()
    tiny().fit(x, y, batch_size=BATCH, epochs=2, verbose=0,
               callbacks=[C.CompileNotice(after=0.05, stream=out), SlowFirstStep()])
    assert out.getvalue() == C.CompileNotice.MESSAGE + "\n"
    assert "happens once" in out.getvalue()
    out = io.StringIO()
    tiny().fit(x, y, batch_size=BATCH, epochs=1, verbose=0,
               callbacks=[C.CompileNotice(after=0.5, stream=out)])
    time.sleep(0.7)
    assert out.getvalue() == ""


def test_lambda_callback_and_keras2_batch_hooks(data):
    """LambdaCallback runs the functions given for each hook; a Callback subclass defining
    Keras 2's on_batch_begin/on_batch_end gets them called for every training step."""
    x, y = data
    seen = []
    lam = C.LambdaCallback(on_train_begin=lambda logs: seen.append("begin"),
                           on_epoch_end=lambda epoch, logs: seen.append((epoch, logs["loss"])),
                           on_batch_end=lambda batch, logs: seen.append(batch))

    class OldStyle(C.Callback):
        def __init__(self):
            super().__init__()
            self.batches = []

        def on_batch_begin(self, batch, logs=None):
            self.batches.append(("b", batch))

        def on_batch_end(self, batch, logs=None):
            self.batches.append(("e", batch))

    old = OldStyle()
    model = tiny()
    history = model.fit(x, y, epochs=2, batch_size=BATCH, callbacks=[lam, old], verbose=0)
    assert seen == ["begin", 0, 1, 2, (0, history.history["loss"][0]), 0, 1, 2,
                    (1, history.history["loss"][1])]
    assert old.batches == [(k, b) for _ in range(2) for b in range(3) for k in "be"]
    with pytest.raises(TypeError, match="LambdaCallback: unknown hook 'on_epoch_ended'"):
        C.LambdaCallback(on_epoch_ended=print)
    with pytest.raises(TypeError, match="LambdaCallback: on_epoch_end must be a function, got int"):
        C.LambdaCallback(on_epoch_end=3)
