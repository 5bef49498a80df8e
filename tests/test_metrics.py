"""Metrics against hand computations (scikit-learn's formulas worked out by hand), batching,
names in compile, saving and the confusion matrix."""
import numpy as np
import pytest

import numbanet as nb

M = nb.metrics

# 3 classes, 7 samples. By hand:           predicted 0  1  2
Y_TRUE = np.array([0, 1, 2, 2, 1, 0, 2])  # true 0   [2, 0, 0]
Y_PRED = np.array([0, 2, 2, 1, 1, 0, 0])  # true 1   [0, 1, 1]
CM = np.array([[2, 0, 0], [0, 1, 1], [1, 1, 1]])  # true 2   [1, 1, 1]
# tp = [2, 1, 1], fp = [1, 1, 1], fn = [0, 1, 2], support = [2, 2, 3]
PRECISION = [2 / 3, 1 / 2, 1 / 2]
RECALL = [1, 1 / 2, 1 / 3]
F1 = [4 / 5, 2 / 4, 2 / 5]                 # 2tp / (2tp + fp + fn)
SUPPORT = np.array([2, 2, 3])


def scores_for(labels, classes, rng, noise=0.3):
    """Softmax-like rows whose argmax is ``labels``."""
    s = rng.uniform(0, noise, (len(labels), classes))
    s[np.arange(len(labels)), labels] = 1.0
    return s / s.sum(axis=1, keepdims=True)


def run(metric, y_true, y_pred, splits=(3,)):
    """Update in batches split at ``splits`` (accumulation must not depend on the batching)."""
    metric.reset()
    for t, p in zip(np.split(y_true, splits), np.split(y_pred, splits)):
        metric.update(t, p)
    return metric.result()


def test_confusion_matrix_by_hand(rng):
    np.testing.assert_array_equal(M.confusion_matrix(Y_TRUE, Y_PRED), CM)
    probs = scores_for(Y_PRED, 3, rng)
    np.testing.assert_array_equal(M.confusion_matrix(Y_TRUE, probs), CM)
    one_hot = np.eye(3)[Y_TRUE]
    np.testing.assert_array_equal(M.confusion_matrix(one_hot, probs), CM)
    big = M.confusion_matrix(Y_TRUE, Y_PRED, num_classes=5)
    assert big.shape == (5, 5) and big.dtype == np.int64
    np.testing.assert_array_equal(big[:3, :3], CM)
    assert big[3:].sum() == 0 and big[:, 3:].sum() == 0
    binary = M.confusion_matrix([1, 0, 1, 1], np.array([[0.9], [0.6], [0.2], [0.51]]))
    np.testing.assert_array_equal(binary, [[0, 1], [1, 2]])
    assert M.confusion_matrix([0.0, 2.0], [2, 2]).tolist() == [[0, 0, 1], [0, 0, 0], [0, 0, 1]]


def test_confusion_matrix_errors():
    with pytest.raises(ValueError, match=r"y_true: labels must be in \[0, 3\), got 3"):
        M.confusion_matrix([0, 3], [0, 1], num_classes=3)
    with pytest.raises(ValueError, match="y_pred has 3 score columns but num_classes=4"):
        M.confusion_matrix([0, 1], np.eye(3)[:2], num_classes=4)
    with pytest.raises(ValueError, match="2 targets for 3 predictions"):
        M.confusion_matrix([0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match="non-integer"):
        M.confusion_matrix([0.5, 1], [0, 1])
    with pytest.raises(ValueError, match="labels must be >= 0"):
        M.confusion_matrix([-1, 1], [0, 1])
    with pytest.raises(ValueError, match="num_classes"):
        M.confusion_matrix([0, 1], [0, 1], num_classes=0)


@pytest.mark.parametrize("cls, per_class", [(M.Precision, PRECISION), (M.Recall, RECALL),
                                            (M.F1Score, F1)])
def test_precision_recall_f1_multiclass_by_hand(cls, per_class, rng):
    probs = scores_for(Y_PRED, 3, rng)
    expected = {"macro": np.mean(per_class), "micro": 4 / 7,
                "weighted": np.sum(np.array(per_class) * SUPPORT) / SUPPORT.sum()}
    for average, value in expected.items():
        for targets in (Y_TRUE, np.eye(3)[Y_TRUE]):
            assert run(cls(average=average), targets, probs) == pytest.approx(value, rel=1e-12)
            assert run(cls(average=average), targets, probs, (1, 2, 6)) == pytest.approx(
                value, rel=1e-12)
    assert expected["macro"] == pytest.approx({M.Precision: 5 / 9, M.Recall: 11 / 18,
                                               M.F1Score: 1.7 / 3}[cls])


def test_macro_average_skips_classes_never_seen_and_counts_mispredicted_ones(rng):
    # 5 output units; classes 3 and 4 never appear in the targets or predictions: same as 3 units
    probs5 = np.zeros((7, 5))
    probs5[:, :3] = scores_for(Y_PRED, 3, rng)
    assert run(M.F1Score(), Y_TRUE, probs5) == pytest.approx(np.mean(F1), rel=1e-12)
    # predicting class 3 once (true 0) adds a class with F1 0; class 0: tp 1, fp 1, fn 1
    pred = Y_PRED.copy()
    pred[0] = 3
    per_class = [2 / 4, 2 / 4, 2 / 5, 0.0]
    assert run(M.F1Score(), Y_TRUE, np.eye(5)[pred]) == pytest.approx(np.mean(per_class))


def test_binary_precision_recall_f1_by_hand():
    y = np.array([1, 0, 1, 1, 0, 0])
    p = np.array([0.9, 0.6, 0.4, 0.7, 0.2, 0.55]).reshape(-1, 1)
    # threshold 0.5: predicted [1, 1, 0, 1, 0, 1] -> tp 2, fp 2, fn 1
    assert run(M.Precision(), y, p) == pytest.approx(2 / 4)
    assert run(M.Recall(), y, p) == pytest.approx(2 / 3)
    assert run(M.F1Score(), y, p) == pytest.approx(2 * 2 / (2 * 2 + 2 + 1))
    # threshold 0.65: predicted [1, 0, 0, 1, 0, 0] -> tp 2, fp 0, fn 1
    assert run(M.Precision(threshold=0.65), y, p) == pytest.approx(1.0)
    assert run(M.F1Score(threshold=0.65), y, p) == pytest.approx(0.8)
    # nothing predicted positive: 0/0 -> 0 (scikit-learn's zero_division=0)
    assert run(M.Precision(), y, np.zeros((6, 1))) == 0.0
    assert run(M.F1Score(), np.zeros(6), np.zeros((6, 1))) == 0.0
    assert M.Recall().result() == 0.0


def test_top_k_accuracy_by_hand():
    scores = np.array([[0.1, 0.5, 0.3, 0.1],      # true 2: 1 class higher
                       [0.4, 0.3, 0.2, 0.1],      # true 3: 3 higher
                       [0.25, 0.25, 0.25, 0.25],  # true 0: a tie, none strictly higher
                       [0.1, 0.2, 0.3, 0.4],      # true 1: 2 higher
                       [0.7, 0.1, 0.1, 0.1]])     # true 0: 0 higher
    labels = np.array([2, 3, 0, 1, 0])
    for k, expected in [(1, 2 / 5), (2, 3 / 5), (3, 4 / 5), (4, 1.0), (9, 1.0)]:
        assert run(M.TopKAccuracy(k), labels, scores) == pytest.approx(expected)
        assert run(M.TopKAccuracy(k), np.eye(4)[labels], scores, (2,)) == pytest.approx(expected)
    nan_row = scores.copy()
    nan_row[0, 2] = np.nan
    assert run(M.TopKAccuracy(4), labels, nan_row) == pytest.approx(4 / 5)
    with pytest.raises(ValueError, match="at least 2 output units"):
        M.TopKAccuracy().update([1, 0], [[0.7], [0.1]])


def test_top1_equals_accuracy_on_untied_scores(rng):
    scores = rng.standard_normal((50, 6))
    labels = rng.integers(0, 6, 50)
    acc = run(M.Accuracy(), labels, scores)
    assert run(M.TopKAccuracy(1), labels, scores, (17, 30)) == acc
    assert run(M.Precision(average="micro"), labels, scores) == pytest.approx(acc)


def test_accuracy_takes_labels_of_shape_n_1(rng):
    # (batch, 1) integer labels (Keras datasets such as CIFAR-10 ship them) are labels, not
    # one-hot rows of one column: every argmax used to be compared with class 0
    scores = rng.standard_normal((20, 4))
    labels = rng.integers(0, 4, 20)
    expected = np.mean(np.argmax(scores, axis=1) == labels)
    assert run(M.Accuracy(), labels[:, None], scores, (7,)) == pytest.approx(expected)
    assert run(M.Accuracy(), labels[:, None], scores) == run(M.Accuracy(), labels, scores)


def test_binary_accuracy_mse_mae_by_hand(rng):
    y = np.array([[1, 0], [0, 0], [1, 1]])
    p = np.array([[0.8, 0.6], [0.3, 0.5], [0.51, 0.2]])
    # > 0.5: [[1, 1], [0, 0], [1, 0]] -> 4 of 6 right
    assert run(M.BinaryAccuracy(), y, p, (1,)) == pytest.approx(4 / 6)
    assert run(M.BinaryAccuracy(threshold=0.55), y, p) == pytest.approx(3 / 6)  # empty 2nd batch
    t, q = rng.standard_normal((9, 2)), rng.standard_normal((9, 2))
    assert run(M.MeanSquaredError(), t, q, (4,)) == pytest.approx(np.mean((t - q) ** 2), rel=1e-12)
    assert run(M.MeanAbsoluteError(), t, q, (4,)) == pytest.approx(np.mean(np.abs(t - q)),
                                                                   rel=1e-12)
    assert run(M.MeanSquaredError(), t[:, 0], q[:, :1], (4,)) == pytest.approx(
        np.mean((t[:, 0] - q[:, 0]) ** 2), rel=1e-12)          # (n,) targets against (n, 1)
    with pytest.raises(ValueError, match="same number of values"):
        M.MeanSquaredError().update(t, q[:, :1])


def test_names_logits_threshold_and_get():
    names = ["accuracy", "acc", "binary_accuracy", "top_k_accuracy", "precision", "recall", "f1",
             "f1_score", "mse", "mae", "mean_squared_error", "MAE"]
    metrics = [M.get(n) for n in names]
    assert [m.name for m in metrics] == ["accuracy", "accuracy", "binary_accuracy",
                                         "top_k_accuracy", "precision", "recall", "f1",
                                         "f1_score", "mse", "mae", "mean_squared_error", "mae"]
    assert isinstance(metrics[6], M.F1Score) and metrics[6].average == "macro"
    logits = nb.losses.BinaryCrossentropy(from_logits=True)
    assert M.get("precision", logits).threshold == 0.0
    assert M.get("binary_accuracy", logits).threshold == 0.0
    assert M.get("precision").threshold == 0.5
    with pytest.raises(ValueError, match="unknown metric 'f2'.*f1_score"):
        M.get("f2")


@pytest.mark.parametrize("make, arg", [
    (lambda: M.TopKAccuracy(0), "k"), (lambda: M.TopKAccuracy(2.0), "k"),
    (lambda: M.F1Score(average=None), "average"),
    (lambda: M.Precision(average="binary"), "average"),
    (lambda: M.Recall(threshold="0.5"), "threshold"),
    (lambda: M.BinaryAccuracy(threshold=float("nan")), "threshold"),
    (lambda: M.MeanSquaredError(name=""), "name"),
])
def test_bad_arguments(make, arg):
    with pytest.raises(ValueError, match=rf"`{arg}` must be .*received {arg}="):
        make()


def test_metrics_in_fit_evaluate_and_save_load(tmp_path, rng):
    nb.seed(0)
    model = nb.Sequential([nb.layers.Dense(8, activation="tanh"),
                           nb.layers.Dense(3, activation="softmax")], input_shape=(4,),
                          dtype="float64")
    names = ["accuracy", "top_k_accuracy", "precision", "recall", "f1", "mse"]
    model.compile(nb.optimizers.Adam(0.05), "categorical_crossentropy",
                  metrics=names[:5] + [M.F1Score(average="micro", name="f1_micro")])
    x = rng.standard_normal((60, 4))
    labels = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5)
    y = np.eye(3)[labels]
    history = model.fit(x, y, epochs=3, batch_size=16, validation_split=0.25, verbose=0, seed=0)
    keys = names[:5] + ["f1_micro"]
    assert list(history.history) == ["loss"] + keys + ["val_loss"] + [f"val_{k}" for k in keys]
    # the last validation values are those of the final weights, by hand from predict
    xv, yv = x[45:], labels[45:]
    cm = M.confusion_matrix(yv, model.predict(xv), num_classes=3)
    tp, predicted, actual = np.diag(cm), cm.sum(0), cm.sum(1)
    present = (predicted + actual) > 0
    per_p = np.divide(tp, predicted, out=np.zeros(3), where=predicted > 0)
    per_r = np.divide(tp, actual, out=np.zeros(3), where=actual > 0)
    per_f = np.divide(2 * tp, predicted + actual, out=np.zeros(3), where=present)
    last = {k: v[-1] for k, v in history.history.items()}
    assert last["val_accuracy"] == pytest.approx(tp.sum() / len(yv))
    assert last["val_f1_micro"] == pytest.approx(tp.sum() / len(yv))
    assert last["val_precision"] == pytest.approx(per_p[present].mean())
    assert last["val_recall"] == pytest.approx(per_r[present].mean())
    assert last["val_f1"] == pytest.approx(per_f[present].mean())
    assert last["val_top_k_accuracy"] == 1.0                      # k=5 >= 3 classes
    result = model.evaluate(xv, np.eye(3)[yv])
    assert result["f1"] == pytest.approx(last["val_f1"])
    model.save(tmp_path / "m.npz")
    loaded = nb.load_model(tmp_path / "m.npz")
    assert [m.get_config() for m in loaded.metrics] == [m.get_config() for m in model.metrics]
    assert [type(m) for m in loaded.metrics] == [type(m) for m in model.metrics]
    assert loaded.evaluate(xv, np.eye(3)[yv]) == pytest.approx(result)


def test_regression_metrics_in_fit(rng):
    nb.seed(0)
    model = nb.Sequential([nb.layers.Dense(2)], input_shape=(3,), dtype="float64")
    model.compile(nb.optimizers.SGD(0.05), "mse", metrics=["mse", "mae"])
    x, y = rng.standard_normal((20, 3)), rng.standard_normal((20, 2))
    history = model.fit(x, y, epochs=2, batch_size=5, validation_data=(x, y), verbose=0)
    pred = model.predict(x)
    assert history.history["val_mse"][-1] == pytest.approx(np.mean((pred - y) ** 2), rel=1e-10)
    assert history.history["val_mae"][-1] == pytest.approx(np.mean(np.abs(pred - y)), rel=1e-10)
    assert history.history["val_mse"][-1] == pytest.approx(history.history["val_loss"][-1])


# -- Keras' metric API for custom loops: update_state / reset_state / __call__, sample weights,
# Mean, the Keras class names


def _weighted_cases(rng, n=9, classes=3):
    labels = rng.integers(0, classes, n)
    probs = scores_for(rng.integers(0, classes, n), classes, rng)
    binary_t = rng.integers(0, 2, (n, 1)).astype(float)
    binary_p = rng.uniform(0, 1, (n, 1))
    real_t, real_p = rng.standard_normal((n, 2)), rng.standard_normal((n, 2))
    return [(M.Accuracy(), labels, probs), (M.TopKAccuracy(k=2), labels, probs),
            (M.BinaryAccuracy(), binary_t, binary_p), (M.MeanSquaredError(), real_t, real_p),
            (M.MeanAbsoluteError(), real_t, real_p),
            (M.Precision(), labels, probs), (M.Recall(average="weighted"), labels, probs),
            (M.F1Score(average="micro"), labels, probs), (M.F1Score(), binary_t, binary_p),
            (M.AUC(), binary_t, binary_p), (M.AUC(curve="PR"), binary_t, binary_p),
            (M.RootMeanSquaredError(), real_t, real_p)]


def test_integer_sample_weights_count_each_sample_that_many_times(rng):
    """A sample of weight k counts as k copies of it (0: left out), for every metric."""
    for metric, y_true, y_pred in _weighted_cases(rng):
        w = rng.integers(0, 4, len(y_true))
        w[0] = 0
        metric.reset_state()
        metric.update_state(y_true[:4], y_pred[:4], sample_weight=w[:4])
        metric.update_state(y_true[4:], y_pred[4:], sample_weight=w[4:].astype(float))
        weighted = metric.result()
        repeated = run(metric, np.repeat(y_true, w, axis=0), np.repeat(y_pred, w, axis=0))
        assert weighted == pytest.approx(repeated, rel=1e-12), type(metric).__name__


def test_fractional_sample_weights_by_hand():
    acc = M.Accuracy()
    acc.update_state([0, 1, 1], [[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]],
                     sample_weight=[0.5, 0.25, 1.0])
    assert acc.result() == pytest.approx((0.5 + 1.0) / 1.75)
    mse = M.MeanSquaredError()
    # per-sample means of the squared errors [1, 4] and [0, 9]: (0.2 * 2.5 + 0.6 * 4.5) / 0.8
    mse.update_state([[1.0, 2.0], [0.0, 3.0]], [[0.0, 0.0], [0.0, 0.0]], sample_weight=[0.2, 0.6])
    assert mse.result() == pytest.approx((0.2 * 2.5 + 0.6 * 4.5) / 0.8)
    prec = M.Precision()                     # binary: weighted tp / (tp + fp)
    prec.update_state([[1], [0], [1]], [[0.9], [0.8], [0.1]], sample_weight=[0.5, 2.0, 1.0])
    assert prec.result() == pytest.approx(0.5 / 2.5)


def test_sequence_outputs_take_weights_per_sample_or_per_position(rng):
    labels = rng.integers(0, 3, (4, 5))
    probs = scores_for(rng.integers(0, 3, 20), 3, rng).reshape(4, 5, 3)
    per_sample = rng.uniform(0.1, 1.0, 4)
    a = M.Accuracy()
    a.update_state(labels, probs, sample_weight=per_sample)
    b = M.Accuracy()
    b.update_state(labels, probs, sample_weight=np.repeat(per_sample[:, None], 5, axis=1))
    correct = np.argmax(probs, axis=-1) == labels
    expected = np.sum(per_sample[:, None] * correct) / (5 * per_sample.sum())
    assert a.result() == pytest.approx(expected) and b.result() == pytest.approx(expected)


def test_calling_a_metric_updates_it_and_returns_the_result(rng):
    y, p = rng.integers(0, 3, 8), scores_for(rng.integers(0, 3, 8), 3, rng)
    called, plain = M.Accuracy(), M.Accuracy()
    first = called(y[:5], p[:5])
    assert first == run(plain, y[:5], p[:5], splits=())
    assert called(y[5:], p[5:]) == run(plain, y, p)
    called.reset_state()
    assert called.result() == 0.0


def test_mean_metric_in_a_custom_loop():
    loss = M.Mean()
    for v in (0.5, np.float32(1.5), nb.ops.convert_to_tensor(np.float32(4.0))):
        loss.update_state(v)
    assert loss.result() == pytest.approx(2.0)
    assert loss(np.array([1.0, 3.0]), sample_weight=[3.0, 1.0]) == \
        pytest.approx((6.0 + 3.0 * 1.0 + 1.0 * 3.0) / (3 + 4))
    with pytest.raises(ValueError, match="Mean averages"):
        M.get("Mean")
    model = nb.Sequential([nb.layers.Dense(2)], input_shape=(3,))
    with pytest.raises(ValueError, match="Mean averages"):
        model.compile("sgd", "mse", metrics=[M.Mean()])


def test_bad_sample_weight_names_the_metric():
    with pytest.raises(ValueError, match=r"Accuracy: sample_weight of shape \(2,\)"):
        M.Accuracy().update_state([0, 1, 1], [[1, 0], [0, 1], [0, 1]], sample_weight=[1, 2])


def test_keras_class_names_log_under_their_names(rng):
    x = rng.standard_normal((16, 4)).astype("float32")
    y = rng.integers(0, 3, 16)
    model = nb.Sequential([nb.layers.Dense(3, activation="softmax")], input_shape=(4,))
    model.compile("adam", "sparse_categorical_crossentropy",
                  metrics=["sparse_categorical_accuracy", M.CategoricalAccuracy()])
    history = model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    acc = run(M.Accuracy(), y, model.predict(x), splits=())
    assert set(history.history) >= {"sparse_categorical_accuracy", "categorical_accuracy"}
    result = model.evaluate(x, y)
    assert result["sparse_categorical_accuracy"] == pytest.approx(acc)
    assert result["categorical_accuracy"] == pytest.approx(acc)


def test_a_function_is_a_metric_averaged_as_keras_does(rng, tmp_path):
    """compile(metrics=[fn]) with fn(y_true, y_pred) written with nb.ops (Keras' custom metric
    functions) logs the mean of its values under the function's name, val_ too, so
    EarlyStopping can monitor it; it was 'unknown metric <function ...>'. Per-sample values
    give the mean over samples, one value per batch the mean over batches (Keras'
    MeanMetricWrapper). A saved model loads with compile=False; compiled, the error says so."""
    def abs_err(y_true, y_pred):
        return nb.ops.mean(nb.ops.abs(y_pred - y_true), axis=-1)

    def batch_max(y_true, y_pred):
        return nb.ops.max(y_pred)

    x, y = rng.standard_normal((10, 3)), rng.standard_normal((10, 1))
    model = nb.Sequential([nb.layers.Dense(1)], input_shape=(3,), dtype="float64")
    model.compile(nb.optimizers.SGD(1e-12), "mse", metrics=[abs_err, batch_max])
    pred = model.predict(x)
    got = model.evaluate(x, y, batch_size=4)
    assert got["abs_err"] == pytest.approx(np.mean(np.abs(pred - y)), rel=1e-12)
    assert got["batch_max"] == pytest.approx(np.mean([pred[s:s + 4].max() for s in (0, 4, 8)]),
                                             rel=1e-12)
    history = model.fit(x, y, epochs=2, batch_size=4, validation_data=(x, y), verbose=0,
                        callbacks=[nb.callbacks.EarlyStopping("val_abs_err", patience=5)])
    assert history.history["val_abs_err"][-1] == pytest.approx(got["abs_err"], rel=1e-8)
    model.save(tmp_path / "m.npz")
    with pytest.raises(ValueError, match=r"metric 'abs_err' is the Python function 'abs_err'.*"
                                         r"compile=False"):
        nb.load_model(tmp_path / "m.npz")
    np.testing.assert_allclose(nb.load_model(tmp_path / "m.npz", compile=False).predict(x), pred,
                               rtol=1e-8)
    with pytest.raises(TypeError, match=r"MeanMetricWrapper: fn must be a function"):
        nb.metrics.MeanMetricWrapper(3)


def test_a_function_metric_giving_one_value_takes_sample_weights_as_one_batch():
    """A function returning one number per batch counts once per batch, weights or not (a
    weight per sample has nothing per sample to weight)."""
    metric = M.MeanMetricWrapper(lambda t, p: np.mean(np.abs(np.asarray(t) - p)), name="l1")
    metric.update_state(np.zeros((3, 1)), np.ones((3, 1)), sample_weight=[1.0, 2.0, 3.0])
    metric.update_state(np.zeros((2, 1)), np.full((2, 1), 3.0))
    assert metric.result() == pytest.approx(2.0)



# -- AUC and RootMeanSquaredError


def _mann_whitney(t, p, w):
    """Exact ROC area: the weighted fraction of (positive, negative) pairs ranked right, ties
    counting half."""
    pos, neg = t > 0.5, t <= 0.5
    wp, wn = w[pos][:, None] * w[neg][None, :], p[pos][:, None] - p[neg][None, :]
    return float(np.sum(wp * ((wn > 0) + 0.5 * (wn == 0))) / np.sum(wp))


def test_auc_keras_examples():
    m = M.AUC(num_thresholds=3)
    m.update_state([0, 0, 1, 1], [0, 0.5, 0.3, 0.9])
    assert m.result() == pytest.approx(0.75, abs=1e-15)
    m.reset_state()
    m.update_state([0, 0, 1, 1], [0, 0.5, 0.3, 0.9], sample_weight=[1, 0, 0, 1])
    assert m.result() == 1.0


@pytest.mark.parametrize("weighted", [False, True])
def test_auc_roc_is_exact_when_thresholds_separate_the_predictions(rng, weighted):
    """Predictions in the middle of the threshold bins (ties included): every threshold point
    is a point of the exact ROC curve, so the trapezoids give the Mann-Whitney statistic."""
    n = 300
    t = rng.integers(0, 2, n).astype(float)
    k = rng.integers(0, 199, n) + 40 * (t > 0)                    # informative, not perfect
    p = (np.minimum(k, 198) + 0.5) / 199
    w = rng.uniform(0.1, 3.0, n) if weighted else np.ones(n)
    m = M.AUC()
    for part in np.array_split(np.arange(n), 4):                   # batches accumulate
        m.update_state(t[part, None], p[part, None], sample_weight=w[part] if weighted else None)
    assert m.result() == pytest.approx(_mann_whitney(t, p, w), rel=1e-12)
    bounds = [M.AUC(summation_method=s) for s in ("minoring", "majoring")]
    for b in bounds:
        b.update_state(t, p, sample_weight=w if weighted else None)
    assert bounds[0].result() <= m.result() <= bounds[1].result()


def test_auc_precision_recall_curve_by_hand():
    """Three thresholds (-1e-7, 0.5, 1 + 1e-7): tp = [2, 1, 0], fp = [2, 0, 0]; Davis and
    Goadrich's interpolation over the two intervals; minoring/majoring as Riemann sums of
    precision over recall."""
    t, p = [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]
    m = M.AUC(num_thresholds=3, curve="PR")
    m.update_state(t, p)
    assert m.result() == pytest.approx((1 + 2 / 3 * np.log(4)) / 6 + 0.5, rel=1e-14)
    lo, hi = M.AUC(num_thresholds=3, curve="PR", summation_method="minoring"), \
        M.AUC(num_thresholds=3, curve="PR", summation_method="majoring")
    lo.update_state(t, p)
    hi.update_state(t, p)
    # recall [1, 0.5, 0], precision [0.5, 1, 0]
    assert lo.result() == pytest.approx(0.5 * 0.5 + 0.5 * 0.0)
    assert hi.result() == pytest.approx(0.5 * 1.0 + 0.5 * 1.0)


def test_auc_thresholds_logits_and_units(rng):
    t = rng.integers(0, 2, (40, 3)).astype(float)
    z = rng.standard_normal((40, 3)) + 2.0 * t
    probs = 1 / (1 + np.exp(-z))
    a, b = M.AUC(from_logits=True), M.AUC()
    a.update_state(t, z)
    b.update_state(t, probs)
    assert a.result() == pytest.approx(b.result(), rel=1e-12)
    flat = M.AUC()                            # several units: every unit a binary decision
    flat.update_state(t.reshape(-1, 1), probs.reshape(-1, 1))
    assert flat.result() == pytest.approx(b.result(), rel=1e-12)
    given = M.AUC(thresholds=[0.75, 0.25, 0.5])
    assert given.num_thresholds == 5 and given.thresholds == [0.25, 0.5, 0.75]
    again = M.AUC.from_config(given.get_config())
    assert again.get_config() == given.get_config()
    assert M.get("auc").name == "auc"
    assert M.get("auc", nb.losses.BinaryCrossentropy(from_logits=True)).from_logits is True


def test_auc_bad_arguments():
    with pytest.raises(ValueError, match="`num_thresholds` must be .*received num_thresholds=1"):
        M.AUC(num_thresholds=1)
    with pytest.raises(ValueError, match="`curve` must be .*received curve='roc'"):
        M.AUC(curve="roc")
    with pytest.raises(ValueError, match=r"thresholds must lie in \[0, 1\]"):
        M.AUC(thresholds=[0.5, 1.5])
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\].*from_logits=True"):
        M.AUC().update_state([0, 1], [-0.5, 2.0])


def test_rmse_and_auc_in_fit_and_save_load(rng, tmp_path):
    nb.seed(0)
    x = rng.standard_normal((80, 3))
    y = (x[:, :1] + 0.3 * rng.standard_normal((80, 1)) > 0).astype(float)
    model = nb.Sequential([nb.layers.Dense(1, activation="sigmoid")], input_shape=(3,),
                          dtype="float64")
    model.compile(nb.optimizers.Adam(0.05), "binary_crossentropy",
                  metrics=["auc", M.RootMeanSquaredError()])
    history = model.fit(x, y, epochs=3, batch_size=16, validation_data=(x, y), verbose=0)
    pred = model.predict(x)
    ref = M.AUC()
    ref.update_state(y, pred)
    assert history.history["val_auc"][-1] == pytest.approx(ref.result(), rel=1e-12)
    assert history.history["val_root_mean_squared_error"][-1] == pytest.approx(
        np.sqrt(np.mean((pred - y) ** 2)), rel=1e-10)
    model.save(tmp_path / "m.npz")
    assert nb.load_model(tmp_path / "m.npz").evaluate(x, y) == pytest.approx(model.evaluate(x, y))
