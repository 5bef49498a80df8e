"""Callbacks with Keras' hooks, the training history and the progress bar."""
import sys
import time
import warnings

import numpy as np


class Callback:
    """Base class: override any hook. ``self.model`` is set by ``fit``."""

    def __init__(self):
        self.model = None
        self.params = {}

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        self.params = params

    def on_train_begin(self, logs=None): pass
    def on_train_end(self, logs=None): pass
    def on_epoch_begin(self, epoch, logs=None): pass
    def on_epoch_end(self, epoch, logs=None): pass
    def on_train_batch_begin(self, batch, logs=None): pass
    def on_train_batch_end(self, batch, logs=None): pass
    def on_test_begin(self, logs=None): pass
    def on_test_end(self, logs=None): pass
    def on_predict_begin(self, logs=None): pass
    def on_predict_end(self, logs=None): pass


class CallbackList(Callback):
    """Calls every hook on each callback in order."""

    def __init__(self, callbacks, model, params):
        super().__init__()
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks: expected Callback instances, got {type(cb).__name__}")
            cb.set_model(model)
            cb.set_params(params)

    def _call(self, hook, *args):
        for cb in self.callbacks:
            getattr(cb, hook)(*args)

    def on_train_begin(self, logs=None): self._call("on_train_begin", logs)
    def on_train_end(self, logs=None): self._call("on_train_end", logs)
    def on_epoch_begin(self, epoch, logs=None): self._call("on_epoch_begin", epoch, logs)
    def on_epoch_end(self, epoch, logs=None): self._call("on_epoch_end", epoch, logs)
    def on_train_batch_begin(self, batch, logs=None): self._call("on_train_batch_begin", batch, logs)
    def on_train_batch_end(self, batch, logs=None): self._call("on_train_batch_end", batch, logs)


class History(Callback):
    """Records the per-epoch logs: ``history.history["loss"]``, ``["val_accuracy"]``..."""

    def __init__(self):
        super().__init__()
        self.history, self.epoch = {}, []

    def on_train_begin(self, logs=None):
        self.history, self.epoch = {}, []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)


class TerminateOnNaN(Callback):
    """Stops training when the loss becomes NaN or infinite, naming the epoch and step.

    ``fit`` adds one unless the list already has one. The message is issued as a RuntimeWarning
    and kept in ``model.stop_reason``.
    """

    def __init__(self):
        super().__init__()
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("batch_loss", (logs or {}).get("loss"))
        if loss is not None and not np.isfinite(loss):
            msg = (f"loss became {loss} at epoch {self.epoch + 1}, step {batch + 1}; training "
                   f"stopped (check the learning rate, the inputs and the loss)")
            self.model.stop_training = True
            self.model.stop_reason = msg
            warnings.warn(msg, RuntimeWarning, stacklevel=2)


def _fmt(v):
    return f"{v:.4e}" if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e4) else f"{v:.4f}"


def _fmt_time(seconds):
    if seconds >= 3600:
        return f"{int(seconds // 3600)}:{int(seconds % 3600 // 60):02d}:{int(seconds % 60):02d}"
    if seconds >= 60:
        return f"{int(seconds // 60)}:{int(seconds % 60):02d}"
    return f"{seconds:.0f}s"


class ProgbarLogger(Callback):
    """A progress bar per epoch on a terminal (step count, ETA, running loss and metrics); one
    line per epoch when the output is not a terminal (or ``verbose=2``).

    The first step of an epoch (where the kernels compile) is left out of the ETA.
    """

    def __init__(self, verbose=1, stream=None, width=30):
        super().__init__()
        self.verbose, self.width = verbose, width
        self.stream = stream

    def _out(self):
        return self.stream if self.stream is not None else sys.stdout

    def on_train_begin(self, logs=None):
        out = self._out()
        self.bar = self.verbose == 1 and hasattr(out, "isatty") and out.isatty()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.t0, self.t1, self.seen = epoch, time.perf_counter(), None, 0
        self.steps = self.params.get("steps")
        if self.bar:
            self._out().write(f"Epoch {epoch + 1}/{self.params.get('epochs')}\n")

    def _values(self, logs):
        return " - ".join(f"{k}: {_fmt(v)}" for k, v in logs.items() if k != "batch_loss")

    def on_train_batch_end(self, batch, logs=None):
        if not self.bar:
            return
        now, done = time.perf_counter(), batch + 1
        if self.t1 is None:
            self.t1 = now
        per_step = (now - self.t1) / (done - 1) if done > 1 else None
        n = self.steps or done
        filled = int(self.width * done / n)
        bar = "=" * max(filled - 1, 0) + (">" if done < n else "=") + "." * (self.width - filled)
        eta = f" - ETA: {_fmt_time(per_step * (n - done))}" if per_step and done < n else ""
        self._out().write(f"\r{done}/{n} [{bar[:self.width]}]{eta} - {self._values(logs or {})}\x1b[K")
        self._out().flush()

    def on_epoch_end(self, epoch, logs=None):
        elapsed = time.perf_counter() - self.t0
        values = self._values(logs or {})
        if self.bar:
            self._out().write(f"\r{self.steps}/{self.steps} [{'=' * self.width}] - "
                              f"{_fmt_time(elapsed)} - {values}\x1b[K\n")
        else:
            self._out().write(f"Epoch {epoch + 1}/{self.params.get('epochs')} - "
                              f"{_fmt_time(elapsed)} - {values}\n")
        self._out().flush()
