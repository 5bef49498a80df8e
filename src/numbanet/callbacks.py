"""Callbacks with Keras' hooks: the training history, the progress bar, stopping on NaN, early
stopping, checkpoints, learning-rate control and a CSV log.

``fit`` calls, in list order, ``on_train_begin``, then per epoch ``on_epoch_begin``,
``on_train_batch_begin``/``on_train_batch_end`` per step and ``on_epoch_end(epoch, logs)`` with
the epoch's ``loss``, metrics and ``val_`` counterparts, and ``on_train_end`` however training
ends (epochs run out, ``model.stop_training`` set by a callback, NaN loss). Callbacks that
watch a quantity (``monitor``) warn with a RuntimeWarning, naming the available keys, when it is
missing from the logs, and carry on. In ``mode="auto"`` a quantity whose name contains "acc",
"precision", "recall", "f1" or "auc" is maximized, anything else minimized.
"""
import csv
import inspect
import math
import numbers
import os
import string
import sys
import threading
import time
import warnings

import numpy as np

from . import validation as V


class Callback:
    """Base class: override any hook. ``self.model`` is set by ``fit``. Keras 2's
    ``on_batch_begin``/``on_batch_end`` are run by the default ``on_train_batch_begin``/
    ``on_train_batch_end`` (as Keras 3 keeps them)."""

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
    def on_train_batch_begin(self, batch, logs=None): self.on_batch_begin(batch, logs)
    def on_train_batch_end(self, batch, logs=None): self.on_batch_end(batch, logs)
    def on_batch_begin(self, batch, logs=None): pass
    def on_batch_end(self, batch, logs=None): pass
    def on_test_begin(self, logs=None): pass
    def on_test_end(self, logs=None): pass
    def on_test_batch_begin(self, batch, logs=None): pass
    def on_test_batch_end(self, batch, logs=None): pass
    def on_predict_begin(self, logs=None): pass
    def on_predict_end(self, logs=None): pass
    def on_predict_batch_begin(self, batch, logs=None): pass
    def on_predict_batch_end(self, batch, logs=None): pass


class CompileNotice(Callback):
    """Prints one line when the first training step takes longer than ``after`` seconds: on a
    machine that has not run numbanet before, that wait is Numba compiling the kernels, which it
    caches on disk, so the line says why the pause happens only once."""

    MESSAGE = ("compiling numbanet's kernels for this machine: this happens once, later runs "
               "load them from Numba's on-disk cache and start in about a second")

    def __init__(self, after=2.0, stream=None):
        super().__init__()
        self.after, self.stream = float(after), stream
        self._timer = None

    def _say(self):
        stream = self.stream or sys.stdout
        print(self.MESSAGE, file=stream, flush=True)

    def on_train_begin(self, logs=None):
        self._timer = threading.Timer(self.after, self._say)
        self._timer.daemon = True
        self._timer.start()

    def _stop(self):
        if self._timer is not None:
            self._timer.cancel()
            self._timer.join()
            self._timer = None

    def on_train_batch_end(self, batch, logs=None):
        self._stop()

    def on_train_end(self, logs=None):
        self._stop()


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


class LambdaCallback(Callback):
    """A callback of functions (Keras' ``LambdaCallback``): ``on_epoch_begin(epoch, logs)``,
    ``on_epoch_end(epoch, logs)``, ``on_train_begin(logs)``, ``on_train_end(logs)``,
    ``on_train_batch_begin(batch, logs)``, ``on_train_batch_end(batch, logs)`` (and any other
    hook by its name, e.g. ``on_batch_end``); the hooks not given do nothing."""

    def __init__(self, on_epoch_begin=None, on_epoch_end=None, on_train_begin=None,
                 on_train_end=None, on_train_batch_begin=None, on_train_batch_end=None,
                 **kwargs):
        super().__init__()
        hooks = dict(on_epoch_begin=on_epoch_begin, on_epoch_end=on_epoch_end,
                     on_train_begin=on_train_begin, on_train_end=on_train_end,
                     on_train_batch_begin=on_train_batch_begin,
                     on_train_batch_end=on_train_batch_end, **kwargs)
        for name, fn in hooks.items():
            if not (name.startswith("on_") and callable(getattr(Callback, name, None))):
                raise TypeError(f"LambdaCallback: unknown hook {name!r}")
            if fn is not None and not callable(fn):
                raise TypeError(f"LambdaCallback: {name} must be a function, got "
                                f"{type(fn).__name__}")
            if fn is not None:
                setattr(self, name, fn)


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
                   f"stopped, with the weights and optimizer state of before that step (check "
                   f"the learning rate, the inputs and the loss)")
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
        self.seen = done
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
            n = self.steps or self.seen                 # steps unknown: a generator's
            self._out().write(f"\r{n}/{n} [{'=' * self.width}] - "
                              f"{_fmt_time(elapsed)} - {values}\x1b[K\n")
        else:
            self._out().write(f"Epoch {epoch + 1}/{self.params.get('epochs')} - "
                              f"{_fmt_time(elapsed)} - {values}\n")
        self._out().flush()


# -- argument checks and monitoring shared by the callbacks below ------------------------------
_MAXIMIZED = ("acc", "precision", "recall", "f1", "auc")


def _bad(owner, name, value, rule):
    return V.error(V.KerasOwner(owner), name, rule, value)


VERBOSE = V.OneOf(0, 1)


def _mode_for(monitor, mode):
    """'min' or 'max' for ``monitor`` in ``mode`` ("auto" guesses from the name)."""
    if mode != "auto":
        return mode
    return "max" if any(word in monitor.lower() for word in _MAXIMIZED) else "min"


class _Monitor(Callback):
    """A callback watching one logged quantity: argument checks, the improvement test and the
    missing-key warning (once per training run)."""

    def __init__(self, monitor, mode, min_delta):
        super().__init__()
        owner = V.KerasOwner(type(self).__name__)
        if not isinstance(monitor, str) or not monitor:
            raise _bad(owner, "monitor", monitor, "a non-empty string naming a logged quantity")
        self.monitor, self.mode, self.min_delta = monitor, *V.check(
            owner, mode=(mode, V.OneOf("auto", "min", "max")),
            min_delta=(min_delta, V.NON_NEGATIVE))
        self._direction = _mode_for(monitor, mode)
        self._warned = False

    def _initial_best(self):
        return math.inf if self._direction == "min" else -math.inf

    def _improved(self, current, reference):
        """``current`` beats ``reference`` by more than ``min_delta`` (NaN never does)."""
        if not math.isfinite(current):
            return False
        if self._direction == "min":
            return current < reference - self.min_delta
        return current > reference + self.min_delta

    def _current(self, logs):
        """The monitored value as a float, or None (with a warning) when it is not logged. An
        epoch cut short by a NaN loss (``model.stop_reason`` set) logs no validation values,
        and that is not worth a second warning."""
        logs = logs or {}
        if self.monitor in logs:
            return float(logs[self.monitor])
        if not self._warned and not getattr(self.model, "stop_reason", None):
            self._warned = True
            available = ", ".join(repr(k) for k in logs) or "none"
            hint = (" (validation values need validation_data or validation_split in fit)"
                    if self.monitor.startswith("val_") else "")
            warnings.warn(f"{type(self).__name__}: the monitored quantity {self.monitor!r} is "
                          f"not in the logs; available keys: {available}{hint}. It is skipped "
                          f"for this epoch.", RuntimeWarning, stacklevel=3)
        return None


class EarlyStopping(_Monitor):
    """Stops training when ``monitor`` has not improved for ``patience`` epochs.

    An improvement is a change by more than ``min_delta`` in the right direction (``mode``).
    Training stops at the end of the epoch that makes ``max(patience, 1)`` epochs in a row without
    improvement (so 0 and 1 both stop at the first epoch that does not improve, as Keras). With a
    ``baseline``, an epoch only resets the count when it also beats the baseline. Epochs before
    ``start_from_epoch`` are not watched. With ``restore_best_weights`` the model gets back the
    weights of the end of its best watched epoch when training ends, however it ends (this
    callback stopping it, epochs running out, a NaN loss). ``stopped_epoch`` and ``best_epoch``
    are 0-based epoch indices (``stopped_epoch`` is None when this callback did not stop it).
    """

    def __init__(self, monitor="val_loss", patience=0, min_delta=0, mode="auto",
                 restore_best_weights=False, baseline=None, start_from_epoch=0, verbose=0):
        super().__init__(monitor, mode, min_delta)
        (self.patience, self.restore_best_weights, self.baseline, self.start_from_epoch,
         self.verbose) = V.check(
            V.KerasOwner(type(self).__name__), patience=(patience, V.Integer(0)),
            restore_best_weights=(restore_best_weights, V.FLAG),
            baseline=(baseline, V.Number(optional=True)),
            start_from_epoch=(start_from_epoch, V.Integer(0)), verbose=(verbose, VERBOSE))
        self._reset()

    def _reset(self):
        self.wait, self.stopped_epoch = 0, None
        self.best, self.best_epoch, self.best_weights = self._initial_best(), None, None
        self._warned = False

    def on_train_begin(self, logs=None):
        self._reset()

    def on_epoch_end(self, epoch, logs=None):
        if epoch < self.start_from_epoch:
            return
        current = self._current(logs)
        if current is None:
            return
        self.wait += 1
        if self._improved(current, self.best):
            self.best, self.best_epoch = current, epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            if self.baseline is None or self._improved(current, self.baseline):
                self.wait = 0
        if self.wait >= max(self.patience, 1):
            self.stopped_epoch = epoch
            self.model.stop_training = True
            if self.verbose:
                print(f"Epoch {epoch + 1}: early stopping ({self.monitor} did not improve for "
                      f"{self.wait} epochs; best {self.best:.6g} at epoch "
                      f"{'-' if self.best_epoch is None else self.best_epoch + 1})")

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose:
                print(f"Restoring the model weights from the end of the best epoch "
                      f"({self.best_epoch + 1})")
            self.model.set_weights(self.best_weights)


class ModelCheckpoint(_Monitor):
    """Saves the model (``model.save``: architecture, weights, optimizer state; atomic) at the
    end of every epoch, or with ``save_best_only`` only when ``monitor`` improves on the best
    value seen by this callback.

    ``filepath`` may hold format fields filled from the epoch (1-based) and the logs, e.g.
    ``"ckpt-{epoch:02d}-{val_loss:.3f}.npz"``; missing folders are created. An epoch cut short
    by a NaN loss (``model.stop_reason`` set) is not saved, so a good checkpoint is never
    replaced by NaN weights. ``save_weights_only`` writes ``model.save_weights`` instead (the
    only way for a subclassed model, whose architecture is code: without it such a model is
    refused when training begins, not after its first epoch).
    """

    def __init__(self, filepath, monitor="val_loss", save_best_only=False, mode="auto",
                 verbose=0, save_weights_only=False):
        super().__init__(monitor, mode, 0.0)
        owner = type(self).__name__
        self.filepath, self.save_best_only, self.verbose, self.save_weights_only = V.check(
            V.KerasOwner(owner), filepath=(filepath, V.Path()),
            save_best_only=(save_best_only, V.FLAG), verbose=(verbose, VERBOSE),
            save_weights_only=(save_weights_only, V.FLAG))
        try:
            self._fields = [f for _, f, _, _ in string.Formatter().parse(self.filepath)
                            if f is not None]
        except ValueError as e:
            raise _bad(owner, "filepath", filepath,
                       f"a path with valid format fields ({e})") from None
        if any(f == "" or f.isdigit() for f in self._fields):
            raise _bad(owner, "filepath", filepath,
                       "a path whose format fields are named, like {epoch} or {val_loss:.2f}")
        self.best = self._initial_best()

    def on_train_begin(self, logs=None):
        self._warned = False
        if not self.save_weights_only:
            try:
                self.model.get_config()
            except NotImplementedError as e:
                raise ValueError(f"ModelCheckpoint: {e}; pass save_weights_only=True to "
                                 f"checkpoint its weights") from None

    def _path(self, epoch, logs):
        values = {**logs, "epoch": epoch + 1}
        try:
            return self.filepath.format(**values)
        except KeyError as e:
            raise KeyError(f"ModelCheckpoint: filepath {self.filepath!r} names the field {e}, "
                           f"which is not in the logs; available: "
                           f"{', '.join(values)}") from None

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        if getattr(self.model, "stop_reason", None):
            return
        if self.save_best_only:
            current = self._current(logs)
            if current is None:
                return
            if not self._improved(current, self.best):
                if self.verbose:
                    print(f"Epoch {epoch + 1}: {self.monitor} did not improve from {self.best:.5g}")
                return
            previous, self.best = self.best, current
        path = self._path(epoch, logs)
        if self.verbose:
            why = (f"{self.monitor} improved from {previous:.5g} to {current:.5g}, "
                   if self.save_best_only else "")
            print(f"Epoch {epoch + 1}: {why}saving model to {path}")
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        if self.save_weights_only:
            self.model.save_weights(path)
        else:
            self.model.save(path)


def _float_learning_rate(callback):
    """The optimizer's learning rate; TypeError when it is a schedule (the two would fight)."""
    optimizer = getattr(callback.model, "optimizer", None)
    if optimizer is None:
        raise RuntimeError(f"{type(callback).__name__}: the model has no optimizer; "
                           f"compile it first")
    lr = optimizer.learning_rate
    if callable(lr):
        raise TypeError(f"{type(callback).__name__} sets the optimizer's learning_rate, but it is "
                        f"a schedule ({lr!r}) that already sets the rate at every step; give the "
                        f"optimizer a float learning_rate or drop the callback")
    return float(lr)


class LearningRateScheduler(Callback):
    """Sets ``model.optimizer.learning_rate = schedule(epoch, lr)`` at the start of each epoch
    (``epoch`` 0-based, ``lr`` the current rate; a one-argument ``schedule(epoch)`` works too, so
    a ``numbanet.schedules`` object can be used per epoch). The rate used is logged as
    ``learning_rate``. TypeError at the start of training when the optimizer's learning rate is
    itself a schedule.
    """

    def __init__(self, schedule, verbose=0):
        super().__init__()
        owner = type(self).__name__
        if not callable(schedule):
            raise _bad(owner, "schedule", schedule, "a callable schedule(epoch, lr) -> lr")
        self.schedule = schedule
        self.verbose = VERBOSE(verbose, "verbose", V.KerasOwner(owner))
        self._nargs = self._count_args(schedule)

    @staticmethod
    def _count_args(fn):
        try:
            params = inspect.signature(fn).parameters.values()
        except (TypeError, ValueError):          # builtins without a signature
            return 2
        if any(p.kind is p.VAR_POSITIONAL for p in params):
            return 2
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if not positional:
            raise _bad("LearningRateScheduler", "schedule", fn,
                       "a callable taking (epoch, lr) or (epoch)")
        return 1 if len(positional) == 1 else 2

    def on_train_begin(self, logs=None):
        _float_learning_rate(self)

    def on_epoch_begin(self, epoch, logs=None):
        lr = _float_learning_rate(self)
        new = self.schedule(epoch, lr) if self._nargs == 2 else self.schedule(epoch)
        if (isinstance(new, (bool, np.bool_)) or not isinstance(new, (numbers.Real, np.floating))
                or not math.isfinite(new) or not new > 0):
            raise ValueError(f"LearningRateScheduler: the schedule returned {new!r} at epoch "
                             f"{epoch}; expected a finite number > 0")
        self.model.optimizer.learning_rate = float(new)
        if self.verbose:
            print(f"Epoch {epoch + 1}: LearningRateScheduler setting the learning rate to "
                  f"{float(new):.6g}")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(self.model.optimizer.learning_rate)


class ReduceLROnPlateau(_Monitor):
    """Multiplies the learning rate by ``factor`` when ``monitor`` has not improved (by more than
    ``min_delta``) for ``patience`` epochs in a row (Keras semantics: 0 and 1 both reduce at the
    first epoch without improvement), never below ``min_lr``. The ``cooldown`` epochs after a
    reduction do not count as epochs without improvement (as torch, and as Keras documents it;
    Keras' code counts the last of them). The rate used in each epoch is logged as
    ``learning_rate``. TypeError at the start of training when the optimizer's learning rate is
    a schedule.
    """

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, mode="auto", min_delta=1e-4,
                 cooldown=0, min_lr=0.0, verbose=0):
        super().__init__(monitor, mode, min_delta)
        self.factor, self.patience, self.cooldown, self.min_lr, self.verbose = V.check(
            V.KerasOwner(type(self).__name__),
            factor=(factor, V.Number(low=0, high=1, low_open=True, high_open=True)),
            patience=(patience, V.Integer(0)), cooldown=(cooldown, V.Integer(0)),
            min_lr=(min_lr, V.NON_NEGATIVE), verbose=(verbose, VERBOSE))
        self._reset()

    def _reset(self):
        self.wait = self.cooldown_counter = 0
        self.best = self._initial_best()
        self._warned = False

    def on_train_begin(self, logs=None):
        _float_learning_rate(self)
        self._reset()

    def on_epoch_end(self, epoch, logs=None):
        lr = _float_learning_rate(self)
        if logs is not None:
            logs["learning_rate"] = lr
        current = self._current(logs)
        if current is None:
            return
        if self._improved(current, self.best):
            self.best, self.wait = current, 0
        elif self.cooldown_counter == 0:
            self.wait += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
        elif self.wait >= max(self.patience, 1) and lr > self.min_lr:
            new = max(lr * self.factor, self.min_lr)
            self.model.optimizer.learning_rate = new
            self.cooldown_counter, self.wait = self.cooldown, 0
            if self.verbose:
                print(f"Epoch {epoch + 1}: ReduceLROnPlateau reducing the learning rate to "
                      f"{new:.6g}")


class CSVLogger(Callback):
    """Writes one CSV row per epoch: ``epoch`` (0-based, as Keras) and the epoch's logs.

    The columns are those of the first epoch's logs (a value missing later is written as "NA");
    the file is written and flushed row by row, so it survives a crash. With ``append`` the rows
    go after an existing file's, under its header (none is written again).
    """

    def __init__(self, filename, separator=",", append=False):
        super().__init__()
        owner = type(self).__name__
        self.filename, self.append = V.check(V.KerasOwner(owner), filename=(filename, V.Path()),
                                             append=(append, V.FLAG))
        if not isinstance(separator, str) or len(separator) != 1 or separator in "\r\n\"":
            raise _bad(owner, "separator", separator,
                       "a single character other than a quote or a line break")
        self.separator = separator
        self.keys = None

    def on_train_begin(self, logs=None):
        self.keys, self._header = None, True
        if self.append and os.path.exists(self.filename) and os.path.getsize(self.filename) > 0:
            with open(self.filename, newline="") as f:
                header = next(csv.reader(f, delimiter=self.separator), [])
            self.keys, self._header = [k for k in header if k != "epoch"], False
        elif not self.append:
            open(self.filename, "w").close()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.keys is None:
            self.keys = list(logs)
        with open(self.filename, "a", newline="") as f:
            writer = csv.writer(f, delimiter=self.separator, lineterminator="\n")
            if self._header:
                writer.writerow(["epoch"] + self.keys)
                self._header = False
            writer.writerow([epoch] + [repr(float(logs[k])) if k in logs else "NA"
                                       for k in self.keys])
