"""Metrics, accumulated over batches on the host (``update``, ``result``, ``reset``).

Keras' names work too, for custom training loops: ``update_state(y_true, y_pred,
sample_weight=None)``, ``reset_state()``, and calling a metric updates it and returns
``result()``; ``Mean`` averages values (a loss per step); ``sample_weight`` weights each
sample (Keras semantics: a weighted mean over samples, a weighted count for precision, recall
and F1). ``fit`` and ``evaluate`` pass no sample weights to metrics (Keras' ``metrics``).

``fit``/``evaluate`` hand every metric the batch's targets and the model's outputs as NumPy
arrays; ``result()`` is the value over everything seen since the last ``reset()``. By name in
``compile(metrics=[...])``: "accuracy" ("acc"), "binary_accuracy", "top_k_accuracy",
"precision", "recall", "f1" ("f1_score"), "auc", "mse", "mae", "rmse" (and their long Keras
names). A metric
made from a name logs under that name ("mse" -> ``history["mse"]``, ``history["val_mse"]``).

Classification metrics read the model's outputs in one of two ways:

- one output unit: binary, ``y_pred > threshold`` is the positive class (threshold 0.5 for
  probabilities; ``compile`` uses 0 when the loss works on logits); targets 0/1.
- several output units: multi-class, the predicted class is the argmax; targets are integer
  labels or one-hot rows. Multi-label targets are not supported.

``confusion_matrix`` gives the per-class counts behind precision and recall.
"""
import inspect

import numpy as np

from . import validation as V
from .registry import Configurable, Registry


class Metric(Configurable):
    """Base class: ``update(y_true, y_pred, sample_weight=None)`` accumulates, ``result()``
    reads, ``reset()`` clears (Keras: ``update_state``, ``reset_state``, ``metric(...)``). The
    default state is a running mean ``total / count``."""
    name = None

    def __init__(self, name=None):
        name = _check(self, "name", name, V.Text(optional=True))
        self.name = name or self.name or type(self).__name__.lower()
        self.reset()

    def reset(self):
        self.total, self.count = 0.0, 0

    def result(self):
        return self.total / self.count if self.count else 0.0

    def update_state(self, *args, **kwargs):
        """Keras' name of ``update``."""
        self.update(*args, **kwargs)

    def reset_state(self):
        """Keras' name of ``reset``."""
        self.reset()

    def __call__(self, *args, **kwargs):
        """Update with one batch and return ``result()`` (Keras)."""
        self.update(*args, **kwargs)
        return self.result()

    def _add(self, values, sample_weight):
        """Add the per-position values (rows: samples or their positions, in sample order) to
        the running mean, each row weighted by its sample's weight."""
        values = np.asarray(values, dtype=np.float64)
        rows = values.reshape(len(values), values[:1].size) if values.ndim else values.reshape(1, 1)
        if sample_weight is None:
            self.total += float(rows.sum())
            self.count += rows.size
            return
        w = _row_weights(self, sample_weight, len(rows))
        self.total += float(np.sum(w * rows.sum(axis=1)))
        self.count += float(np.sum(w)) * rows.shape[1]

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _check(metric, name, value, spec):
    return spec(value, name, V.KerasOwner(type(metric).__name__))


def _row_weights(metric, sample_weight, rows):
    """Per-row weights from one weight per sample ((batch,) or (batch, 1)) or per position of
    a sequence output ((batch, steps): rows are its positions in sample order)."""
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.ndim == 2 and w.shape[1] == 1:
        w = w[:, 0]
    w = w.reshape(-1) if w.ndim else w.reshape(1)
    if w.size == rows:
        return w
    if w.size and rows % w.size == 0:
        return np.repeat(w, rows // w.size)
    raise ValueError(f"{type(metric).__name__}: sample_weight of shape "
                     f"{np.shape(sample_weight)} does not match a batch of {rows} values")


def _positions(y_true, y_pred):
    """Predictions with extra axes, (batch, ..., classes), and targets per position (labels
    (batch, ...) or one-hot rows (batch, ..., classes)) as rows of positions, so that
    classification metrics count every position (Keras)."""
    y_pred = np.asarray(y_pred)
    if y_pred.ndim <= 2:
        return y_true, y_pred
    y_true = np.asarray(y_true)
    c = y_pred.shape[-1]
    if y_true.shape in (y_pred.shape[:-1], y_pred.shape[:-1] + (1,)):
        return y_true.reshape(-1), y_pred.reshape(-1, c)
    if y_true.shape == y_pred.shape:
        return y_true.reshape(-1, c), y_pred.reshape(-1, c)
    return y_true, y_pred


def _scores(y_pred):
    """Model outputs as a (batch, units) array (an empty batch is allowed and counts nothing)."""
    y_pred = np.asarray(y_pred)
    if y_pred.ndim == 0:
        raise ValueError(f"y_pred must have a batch axis, got a scalar {y_pred!r}")
    return y_pred.reshape(len(y_pred), int(np.prod(y_pred.shape[1:])))


def _class_labels(y, num_classes, what="y_true"):
    """Integer labels from integer labels (batch,) or one-hot rows (batch, classes), checked to
    lie in [0, num_classes) when ``num_classes`` is given."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:
        if num_classes is not None and y.shape[1] != num_classes:
            raise ValueError(f"{what}: one-hot rows have {y.shape[1]} columns but there are "
                             f"{num_classes} classes")
        return np.argmax(y, axis=1)
    y = y.reshape(-1) if y.ndim == 2 else y
    if y.ndim != 1:
        raise ValueError(f"{what}: expected labels of shape (batch,) or one-hot rows of shape "
                         f"(batch, classes), got shape {y.shape}")
    V.integer_labels(what, y)
    labels = y.astype(np.int64)
    bad = labels < 0 if num_classes is None else (labels < 0) | (labels >= num_classes)
    if bad.any():
        allowed = ">= 0" if num_classes is None else f"in [0, {num_classes})"
        raise ValueError(f"{what}: labels must be {allowed}, got {labels[bad][0]}")
    return labels


def _same_size(y_true, y_pred, owner):
    y_true = np.asarray(y_true)
    if y_true.size != y_pred.size:
        raise ValueError(f"{owner}: y_true has shape {y_true.shape} but y_pred has shape "
                         f"{y_pred.shape}; they must hold the same number of values")
    return y_true.reshape(y_pred.shape)


class Accuracy(Metric):
    """Fraction of correct predictions; picks sparse, one-hot or binary comparison from shapes.

    Binary outputs (one unit) are thresholded at ``threshold`` (0.5 for probabilities; the model
    uses 0 when its loss works on logits).
    """
    name = "accuracy"

    def __init__(self, name=None, threshold=0.5):
        self.threshold = _check(self, "threshold", threshold, V.Number())
        super().__init__(name)

    def update(self, y_true, y_pred, sample_weight=None):
        y_true, y_pred = _positions(y_true, y_pred)
        y_pred = _scores(y_pred)
        y_true = np.asarray(y_true)
        if y_pred.shape[1] == 1:
            correct = (y_pred[:, 0] > self.threshold) == (y_true.reshape(-1) > 0.5)
        elif y_true.ndim == 1 or y_true.shape[1:] == (1,):     # labels, (batch,) or (batch, 1)
            correct = np.argmax(y_pred, axis=1) == y_true.reshape(-1)
        else:
            correct = np.argmax(y_pred, axis=1) == np.argmax(y_true.reshape(len(y_true), -1), axis=1)
        self._add(correct, sample_weight)



class SparseCategoricalAccuracy(Accuracy):
    """Keras' name of ``Accuracy`` for integer labels (``Accuracy`` tells labels from one-hot
    rows by their shape)."""
    name = "sparse_categorical_accuracy"


class CategoricalAccuracy(Accuracy):
    """Keras' name of ``Accuracy`` for one-hot targets."""
    name = "categorical_accuracy"


class Mean(Metric):
    """Running mean of the values given, weighted by ``sample_weight`` (Keras' ``Mean``): in a
    custom loop, ``train_loss = Mean(); train_loss(loss)`` each step, ``train_loss.result()``
    at the end of the epoch. Takes values (numbers, arrays or tensors), not (y_true, y_pred)."""
    name = "mean"

    def update(self, values, sample_weight=None):
        self._add(values, sample_weight)


class MeanMetricWrapper(Metric):
    """A function ``fn(y_true, y_pred)`` as a metric (Keras' ``metrics=[my_metric]``): the mean
    of the values it returns (per sample, or one per batch), logged under the function's name.
    A saved model keeps only that name, the function being Python code: load it with
    ``load_model(path, compile=False)`` and compile again with the function."""

    def __init__(self, fn, name=None):
        if not callable(fn):
            raise TypeError(f"MeanMetricWrapper: fn must be a function (y_true, y_pred) -> "
                            f"values, got {type(fn).__name__}")
        self.fn = fn
        super().__init__(name or getattr(fn, "__name__", None))

    def update(self, y_true, y_pred, sample_weight=None):
        values = np.asarray(self.fn(y_true, y_pred), dtype=np.float64)
        if values.ndim == 0 or len(values) != len(y_pred):  # not per sample: one value
            values = values.mean().reshape(1)
            sample_weight = None
        self._add(values, sample_weight)

    def get_config(self):
        return {"fn": getattr(self.fn, "__name__", repr(self.fn)), "name": self.name}

    @classmethod
    def from_config(cls, config):
        raise ValueError(f"metric {config.get('name')!r} is the Python function "
                         f"{config.get('fn')!r}, which a saved model does not hold: load it "
                         f"with load_model(path, compile=False) and compile it again with the "
                         f"function")


class BinaryAccuracy(Metric):
    """Fraction of output values on the right side of ``threshold``: ``y_pred > threshold``
    against ``y_true > 0.5``, over every output unit (so several sigmoid units count as several
    binary decisions)."""
    name = "binary_accuracy"

    def __init__(self, threshold=0.5, name=None):
        self.threshold = _check(self, "threshold", threshold, V.Number())
        super().__init__(name)

    def update(self, y_true, y_pred, sample_weight=None):
        y_pred = _scores(y_pred)
        y_true = _same_size(y_true, y_pred, type(self).__name__)
        self._add((y_pred > self.threshold) == (y_true > 0.5), sample_weight)



class TopKAccuracy(Metric):
    """Fraction of samples whose true class is among the ``k`` highest scores.

    Targets are integer labels or one-hot rows. Ties count in the sample's favour: it is correct
    when fewer than ``k`` classes score strictly higher than the true class (TensorFlow's
    ``in_top_k``). A NaN score for the true class counts as wrong.
    """
    name = "top_k_accuracy"

    def __init__(self, k=5, name=None):
        self.k = _check(self, "k", k, V.Integer(1))
        super().__init__(name)

    def update(self, y_true, y_pred, sample_weight=None):
        y_true, y_pred = _positions(y_true, y_pred)
        y_pred = _scores(y_pred)
        if y_pred.shape[1] < 2:
            raise ValueError(f"{type(self).__name__}: needs one score per class (at least 2 "
                             f"output units), got y_pred of shape {y_pred.shape}")
        labels = _class_labels(y_true, y_pred.shape[1])
        if len(labels) != len(y_pred):
            raise ValueError(f"{type(self).__name__}: {len(labels)} targets for {len(y_pred)} "
                             f"predictions")
        true_score = y_pred[np.arange(len(labels)), labels]
        higher = np.count_nonzero(y_pred > true_score[:, None], axis=1)
        self._add((higher < self.k) & ~np.isnan(true_score), sample_weight)



class _ClassCounts(Metric):
    """Base of Precision, Recall and F1Score: true positives, false positives and false
    negatives per class, accumulated over batches; each subclass defines ``_score(tp, fp, fn)``.

    One output unit: binary, the positive class's score (scikit-learn's ``average="binary"``);
    ``average`` is not used. Several units: per-class scores from the argmax, combined by
    ``average``: "macro" (unweighted mean over the classes present in the targets or the
    predictions seen, as scikit-learn), "micro" (from the summed counts; equals accuracy for
    single-label data) or "weighted" (mean weighted by each class's number of true samples).
    A score whose denominator is 0 is 0 (scikit-learn's ``zero_division=0``).
    """
    AVERAGES = ("macro", "micro", "weighted")

    def __init__(self, threshold=0.5, average="macro", name=None):
        self.threshold = _check(self, "threshold", threshold, V.Number())
        self.average = _check(self, "average", average, V.OneOf(*self.AVERAGES))
        super().__init__(name)

    def reset(self):
        self.tp = self.fp = self.fn = None
        self.binary = None

    def update(self, y_true, y_pred, sample_weight=None):
        y_true, y_pred = _positions(y_true, y_pred)
        y_pred = _scores(y_pred)
        n, units = y_pred.shape
        w = None if sample_weight is None else _row_weights(self, sample_weight, n)
        if units == 1:
            predicted = y_pred[:, 0] > self.threshold
            actual = _same_size(y_true, y_pred, type(self).__name__)[:, 0] > 0.5
            cells = np.stack([predicted & actual, predicted & ~actual, ~predicted & actual])
            tp, fp, fn = (c[None] for c in (cells.sum(axis=1) if w is None else cells @ w))
        else:
            labels = _class_labels(y_true, units)
            if len(labels) != n:
                raise ValueError(f"{type(self).__name__}: {len(labels)} targets for {n} "
                                 f"predictions")
            if w is None:
                cm = confusion_matrix(labels, y_pred, num_classes=units)
            else:                                   # weighted counts (Keras)
                cm = np.bincount(labels * units + np.argmax(y_pred, axis=1), weights=w,
                                 minlength=units * units).reshape(units, units)
            tp = np.diag(cm)
            fp, fn = cm.sum(axis=0) - tp, cm.sum(axis=1) - tp
        if self.tp is None:
            self.tp, self.fp, self.fn = (np.zeros(len(tp), np.int64) for _ in range(3))
            self.binary = units == 1
        elif len(tp) != len(self.tp) or self.binary != (units == 1):
            raise ValueError(f"{type(self).__name__}: y_pred has {units} output units but earlier "
                             f"batches had {1 if self.binary else len(self.tp)}; call reset() "
                             f"between different models")
        # integer counts stay exact; weighted ones make them float
        self.tp, self.fp, self.fn = self.tp + tp, self.fp + fp, self.fn + fn

    def result(self):
        if self.tp is None:
            return 0.0
        tp, fp, fn = (a.astype(np.float64) for a in (self.tp, self.fp, self.fn))
        if self.binary:
            return float(self._score(tp, fp, fn)[0])
        if self.average == "micro":
            return float(self._score(tp.sum(keepdims=True), fp.sum(keepdims=True),
                                     fn.sum(keepdims=True))[0])
        per_class = self._score(tp, fp, fn)
        if self.average == "weighted":
            support = tp + fn
            return float(np.sum(per_class * support) / support.sum()) if support.sum() else 0.0
        present = (tp + fp + fn) > 0
        return float(per_class[present].mean()) if present.any() else 0.0



def _ratio(num, den):
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


class Precision(_ClassCounts):
    """tp / (tp + fp): of the samples predicted as a class, the fraction that are."""
    name = "precision"

    @staticmethod
    def _score(tp, fp, fn):
        return _ratio(tp, tp + fp)


class Recall(_ClassCounts):
    """tp / (tp + fn): of the samples of a class, the fraction predicted as it."""
    name = "recall"

    @staticmethod
    def _score(tp, fp, fn):
        return _ratio(tp, tp + fn)


class F1Score(_ClassCounts):
    """Harmonic mean of precision and recall, 2 tp / (2 tp + fp + fn), per class; the macro
    average is the mean of the per-class F1 scores (not the F1 of the mean precision and
    recall), as scikit-learn and Keras' ``F1Score``."""
    name = "f1_score"

    def __init__(self, average="macro", threshold=0.5, name=None):
        super().__init__(threshold=threshold, average=average, name=name)

    @staticmethod
    def _score(tp, fp, fn):
        return _ratio(2 * tp, 2 * tp + fp + fn)


class MeanSquaredError(Metric):
    """Mean of (y_true - y_pred)**2 over every output value seen."""
    name = "mean_squared_error"

    def _errors(self, y_true, y_pred):
        y_pred = _scores(y_pred).astype(np.float64)
        return _same_size(y_true, y_pred, type(self).__name__).astype(np.float64) - y_pred

    def update(self, y_true, y_pred, sample_weight=None):
        d = self._errors(y_true, y_pred)
        self._add(d * d, sample_weight)


class MeanAbsoluteError(MeanSquaredError):
    """Mean of |y_true - y_pred| over every output value seen."""
    name = "mean_absolute_error"

    def update(self, y_true, y_pred, sample_weight=None):
        self._add(np.abs(self._errors(y_true, y_pred)), sample_weight)


class RootMeanSquaredError(MeanSquaredError):
    """sqrt of the mean of (y_true - y_pred)**2 over every output value seen."""
    name = "root_mean_squared_error"

    def result(self):
        return float(np.sqrt(super().result()))


class AUC(Metric):
    """Area under the ROC (or precision-recall) curve of binary predictions, as Keras' ``AUC``:
    weighted true/false positive and negative counts at fixed thresholds (``num_thresholds``
    evenly spaced in [0, 1] plus -1e-7 and 1 + 1e-7, or the given ``thresholds`` between those),
    a prediction counting as positive above a threshold, then a Riemann sum over the curve's
    points: ``summation_method`` "interpolation" (trapezoids; for "PR", Davis & Goadrich's
    interpolation of the counts), "minoring" or "majoring" (lower and upper bounds). Every output
    unit is a separate binary decision (Keras' ``multi_label=False``); targets 0/1 (positive
    above 0.5); predictions probabilities in [0, 1], or logits with ``from_logits=True``.
    With distinct prediction values separated by thresholds, the ROC area is exact (ties count
    half)."""
    name = "auc"
    EPSILON = 1e-7

    def __init__(self, num_thresholds=200, curve="ROC", summation_method="interpolation",
                 name=None, thresholds=None, from_logits=False):
        self.curve = _check(self, "curve", curve, V.OneOf("ROC", "PR"))
        self.summation_method = _check(self, "summation_method", summation_method,
                                       V.OneOf("interpolation", "minoring", "majoring"))
        self.from_logits = _check(self, "from_logits", from_logits, V.FLAG)
        if thresholds is None:
            n = _check(self, "num_thresholds", num_thresholds, V.Integer(2))
            inner = [(i + 1) / (n - 1) for i in range(n - 2)]
        else:
            inner = sorted(float(t) for t in thresholds)
            if not all(0.0 <= t <= 1.0 for t in inner):
                raise ValueError(f"AUC: thresholds must lie in [0, 1], got {thresholds!r}")
        self.thresholds = None if thresholds is None else inner
        self.num_thresholds = len(inner) + 2
        self._edges = np.array([-self.EPSILON] + inner + [1.0 + self.EPSILON])
        super().__init__(name)

    def reset(self):
        self.tp, self.fp, self.tn, self.fn = (np.zeros(len(self._edges)) for _ in range(4))

    def update(self, y_true, y_pred, sample_weight=None):
        scores = _scores(y_pred).astype(np.float64)
        positive = _same_size(y_true, scores, "AUC").reshape(-1) > 0.5
        w = np.ones(len(scores)) if sample_weight is None else \
            _row_weights(self, sample_weight, len(scores))
        w = np.repeat(w, scores.shape[1])
        p = scores.reshape(-1)
        if self.from_logits:
            p = 1.0 / (1.0 + np.exp(-p))
        elif p.size and not (np.all(p >= 0.0) and np.all(p <= 1.0)):
            raise ValueError(f"AUC: predictions must be probabilities in [0, 1] (or pass "
                             f"from_logits=True), got values from {np.nanmin(p)} to "
                             f"{np.nanmax(p)}")
        # predictions above edge j: those past searchsorted's count of edges below them
        above = np.searchsorted(self._edges, p, side="left")
        for cells, weights in ((("tp", "fn"), w * positive), (("fp", "tn"), w * ~positive)):
            hist = np.bincount(above, weights=weights, minlength=len(self._edges) + 1)
            counted = np.cumsum(hist[::-1])[::-1][1:]         # weight above each edge
            setattr(self, cells[0], getattr(self, cells[0]) + counted)
            setattr(self, cells[1], getattr(self, cells[1]) + weights.sum() - counted)

    def result(self):
        tp, fp, tn, fn = self.tp, self.fp, self.tn, self.fn
        if self.curve == "PR" and self.summation_method == "interpolation":
            return self._interpolated_pr()
        recall = _ratio(tp, tp + fn)
        x, y = (_ratio(fp, fp + tn), recall) if self.curve == "ROC" else \
            (recall, _ratio(tp, tp + fp))
        pair = np.stack([y[:-1], y[1:]])
        heights = {"interpolation": pair.mean(axis=0), "minoring": pair.min(axis=0),
                   "majoring": pair.max(axis=0)}[self.summation_method]
        return float(np.sum((x[:-1] - x[1:]) * heights))

    def _interpolated_pr(self):
        """Precision interpolated between thresholds as Davis & Goadrich (2006): true and
        predicted positives vary linearly, so each interval adds
        slope * (dTP + intercept * log(P_A / P_B)) / positives."""
        tp, p = self.tp, self.tp + self.fp
        dtp, dp = tp[:-1] - tp[1:], p[:-1] - p[1:]
        slope = _ratio(dtp, np.maximum(dp, 0))
        intercept = tp[1:] - slope * p[1:]
        both = (p[:-1] > 0) & (p[1:] > 0)
        ratio = np.where(both, _ratio(p[:-1], np.where(both, p[1:], 1.0)), 1.0)
        return float(np.sum(_ratio(slope * (dtp + intercept * np.log(ratio)),
                                   np.maximum(tp[1:] + self.fn[1:], 0))))


def confusion_matrix(y_true, y_pred, num_classes=None):
    """Counts ``cm[i, j]`` of samples of true class ``i`` predicted as class ``j`` (rows: truth,
    columns: prediction, as scikit-learn), an int64 array of shape (classes, classes).

    ``y_true``: integer labels or one-hot rows. ``y_pred``: integer labels, or scores of shape
    (batch, classes) (probabilities or logits: the argmax is the prediction), or one binary
    probability per sample of shape (batch, 1) (class 1 when > 0.5). ``num_classes`` defaults
    to the number of score columns, else to the largest label + 1.
    """
    num_classes = V.Integer(1, optional=True)(num_classes, "num_classes",
                                              V.KerasOwner("confusion_matrix"))
    pred = np.asarray(y_pred)
    if pred.ndim == 2 and pred.shape[1] == 1:
        pred = (pred[:, 0] > 0.5).astype(np.int64)
    elif pred.ndim == 2:
        if num_classes is None:
            num_classes = pred.shape[1]
        elif pred.shape[1] != num_classes:
            raise ValueError(f"confusion_matrix: y_pred has {pred.shape[1]} score columns but "
                             f"num_classes={num_classes}")
        pred = np.argmax(pred, axis=1)
    pred = _class_labels(pred, num_classes, "y_pred")
    true = _class_labels(y_true, num_classes, "y_true")
    if len(true) != len(pred):
        raise ValueError(f"confusion_matrix: {len(true)} targets for {len(pred)} predictions")
    if num_classes is None:
        num_classes = int(max(true.max(initial=0), pred.max(initial=0))) + 1
    num_classes = int(num_classes)
    flat = np.bincount(true * num_classes + pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(np.int64)


REGISTRY = Registry("metric", Metric)
CLASSES = REGISTRY.classes
METRICS = REGISTRY.names


def register(cls, *names):
    """Make a metric class known to ``load_model`` and, by each of ``names``, to ``compile``."""
    return REGISTRY.register(cls, *names)


register(Accuracy, "accuracy", "acc")
register(SparseCategoricalAccuracy, "sparse_categorical_accuracy")
register(CategoricalAccuracy, "categorical_accuracy")
register(Mean)
register(BinaryAccuracy, "binary_accuracy")
register(TopKAccuracy, "top_k_accuracy", "top_k_categorical_accuracy",
         "sparse_top_k_categorical_accuracy")
register(Precision, "precision")
register(Recall, "recall")
register(F1Score, "f1", "f1_score")
register(MeanSquaredError, "mse", "mean_squared_error")
register(MeanAbsoluteError, "mae", "mean_absolute_error")
register(RootMeanSquaredError, "rmse", "root_mean_squared_error")
register(AUC, "auc")
register(MeanMetricWrapper)
_CANONICAL = {"acc": "accuracy"}


def get(metric, loss=None):
    """A metric instance from a name (case-insensitive), an instance (returned as is) or a
    function (y_true, y_pred) (a ``MeanMetricWrapper``).

    The metric logs under the given name ("acc" logs as "accuracy"). Metrics with a
    ``threshold`` get 0 instead of 0.5 when ``loss`` works on logits.
    """
    key = metric.lower() if isinstance(metric, str) else None
    if callable(metric) and not isinstance(metric, (Metric, type)):
        return MeanMetricWrapper(metric)
    if key not in REGISTRY.names:
        found = REGISTRY.get(metric)
        if isinstance(found, Mean):
            raise ValueError(f"metric {metric!r}: Mean averages the values given to it (a loss in "
                             f"a custom loop); compile's metrics take (y_true, y_pred)")
        return found
    cls = REGISTRY.names[key]
    kwargs = {"name": _CANONICAL.get(key, key)}
    if getattr(loss, "from_logits", False):
        params = inspect.signature(cls).parameters
        if "threshold" in params:
            kwargs["threshold"] = 0.0
        if "from_logits" in params:
            kwargs["from_logits"] = True
    return cls(**kwargs)
