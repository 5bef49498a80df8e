"""Metrics, accumulated over batches on the host (``update``, ``result``, ``reset``)."""
import numpy as np


class Metric:
    name = None

    def __init__(self, name=None):
        self.name = name or self.name or type(self).__name__.lower()
        self.reset()

    def reset(self):
        self.total, self.count = 0.0, 0

    def result(self):
        return self.total / self.count if self.count else 0.0

    def get_config(self):
        return {"name": self.name}


class Accuracy(Metric):
    """Fraction of correct predictions; picks sparse, one-hot or binary comparison from shapes.

    Binary outputs (one unit) are thresholded at ``threshold`` (0.5 for probabilities; the model
    uses 0 when its loss works on logits).
    """
    name = "accuracy"

    def __init__(self, name=None, threshold=0.5):
        self.threshold = float(threshold)
        super().__init__(name)

    def update(self, y_true, y_pred):
        y_pred = np.asarray(y_pred).reshape(len(y_pred), -1)
        y_true = np.asarray(y_true)
        if y_pred.shape[1] == 1:
            correct = (y_pred[:, 0] > self.threshold) == (y_true.reshape(-1) > 0.5)
        elif y_true.ndim == 1:
            correct = np.argmax(y_pred, axis=1) == y_true
        else:
            correct = np.argmax(y_pred, axis=1) == np.argmax(y_true.reshape(len(y_true), -1), axis=1)
        self.total += float(np.count_nonzero(correct))
        self.count += len(correct)

    def get_config(self):
        return {"name": self.name, "threshold": self.threshold}


METRICS = {"accuracy": Accuracy, "acc": Accuracy}
CLASSES = {"Accuracy": Accuracy}


def get(metric, loss=None):
    """A metric instance from a name or an instance (``loss`` lets 'accuracy' pick its threshold)."""
    if isinstance(metric, Metric):
        return metric
    if isinstance(metric, str) and metric.lower() in METRICS:
        cls = METRICS[metric.lower()]
        if cls is Accuracy and getattr(loss, "from_logits", False):
            return Accuracy(name=metric.lower() if metric.lower() != "acc" else "accuracy",
                            threshold=0.0)
        return cls()
    raise ValueError(f"unknown metric {metric!r}; valid names are {', '.join(sorted(METRICS))}")


def register(cls, *names):
    CLASSES[cls.__name__] = cls
    for n in names:
        METRICS[n] = cls
    return cls
