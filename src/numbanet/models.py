"""Sequential models: compile, fit, evaluate, predict, save and load.

After ``build`` every parameter of the model lives in one flat buffer (and every gradient in
another); the layers hold views into them, so one optimizer kernel call updates the whole model.
A batch is moved to the device once and stays there through forward, loss, backward and update.
"""
import json
import os

import zipfile

import numpy as np

from . import callbacks as callbacks_module
from ._files import atomic_write
from . import layers as layers_module
from . import losses as losses_module
from . import metrics as metrics_module
from . import optimizers as optimizers_module
from . import random as _random
from .backend import get_backend
from .layers.base import Layer, check_dtype, check_positive_int

FORMAT = "numbanet-model"
FORMAT_VERSION = 1


def _as_host_array(a, name):
    try:
        arr = np.asarray(a)
    except Exception as e:  # ragged lists and the like
        raise TypeError(f"{name}: could not convert to an array ({e})") from None
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{name}: expected a numeric array, got dtype {arr.dtype}")
    if arr.ndim == 0 or len(arr) == 0:
        raise ValueError(f"{name}: expected a non-empty batch of samples, got shape {arr.shape}")
    return arr


class Sequential:
    """A linear stack of layers (Keras-shaped API)."""

    def __init__(self, layers=None, input_shape=None, device="cpu", dtype=None, name=None):
        self.name = name or "sequential"
        self.layers = []
        self.backend = get_backend(device)
        self.dtype = check_dtype(dtype, "Sequential")
        self.built = False
        self.optimizer = self.loss = None
        self.metrics = []
        self.stop_training = False
        self.stop_reason = None
        self._input_shape = None
        for layer in layers or []:
            self.add(layer)
        if input_shape is not None:
            self.build(input_shape)

    # -- structure ------------------------------------------------------------------------------
    def add(self, layer):
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add: expected a Layer, got {type(layer).__name__}")
        if self.built:
            raise RuntimeError("Sequential.add: the model is already built; add layers first")
        if any(l.name == layer.name for l in self.layers):
            raise ValueError(f"Sequential.add: a layer named {layer.name!r} is already in the model")
        self.layers.append(layer)

    @property
    def device(self):
        return self.backend.name

    @property
    def input_shape(self):
        return self._input_shape

    @property
    def output_shape(self):
        return self.layers[-1].output_shape if self.built else None

    def build(self, input_shape):
        """Build every layer for samples of ``input_shape`` (batch axis excluded)."""
        if not self.layers:
            raise ValueError("Sequential.build: the model has no layers")
        if isinstance(input_shape, (int, np.integer)):
            input_shape = (input_shape,)
        shape = tuple(input_shape)
        if not shape or any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1
                            for d in shape):
            raise ValueError(f"Sequential.build: input_shape must be a tuple of positive ints "
                             f"(batch axis excluded), got {input_shape!r}")
        self._input_shape = tuple(int(d) for d in shape)
        dtype = self.dtype or self.layers[0].dtype or np.dtype(np.float32)
        for layer in self.layers:
            if layer.dtype is not None and layer.dtype != dtype:
                raise ValueError(f"{layer!r}: dtype {layer.dtype} differs from the model's {dtype}")
            layer.dtype = dtype
            if layer.built:
                if layer.input_shape != shape:
                    raise ValueError(f"{layer!r}: built for input shape {layer.input_shape}, "
                                     f"but the previous layer gives {shape}")
            else:
                layer.set_backend(self.backend)
                layer.build(shape)
            shape = layer.output_shape
        self.dtype = dtype
        for i, layer in enumerate(self.layers):
            layer.needs_input_grad = i > 0
        self._place([l.backend.to_numpy(p) for l, _, p in self._param_items()],
                    [l.backend.to_numpy(b) for l, _, b in self._buffer_items()])
        self.built = True
        return self

    def _param_items(self):
        return [(l, k, p) for l in self.layers for k, p in l.params.items()]

    def _buffer_items(self):
        return [(l, k, b) for l in self.layers for k, b in getattr(l, "buffers", {}).items()]

    def _place(self, host_params, host_buffers):
        """Put the parameters into one flat buffer on this backend (layers get views) and zero
        the gradients' flat buffer likewise; move the layers' other buffers too."""
        be = self.backend
        items = self._param_items()
        sizes = [int(np.prod(p.shape)) for _, _, p in items]
        flat = np.concatenate([np.ravel(h) for h in host_params]) if items else np.zeros(0)
        self._flat_params = be.asarray(flat, dtype=self.dtype)
        self._flat_grads = be.zeros((flat.size,), self.dtype)
        self._segments = []
        offset = 0
        for (layer, key, p), size in zip(items, sizes):
            shape = tuple(p.shape)
            layer.params[key] = self._flat_params[offset:offset + size].reshape(shape)
            layer.grads[key] = self._flat_grads[offset:offset + size].reshape(shape)
            self._segments.append((offset, size))
            offset += size
        for (layer, key, _), host in zip(self._buffer_items(), host_buffers):
            layer.buffers[key] = be.asarray(host, dtype=host.dtype)
        for layer in self.layers:
            layer.set_backend(be)

    def to(self, device):
        """Move the model (parameters, buffers and optimizer state) to ``"cpu"`` or ``"cuda"``."""
        new = get_backend(device)
        if new is self.backend:
            return self
        if self.built:
            params = [self.backend.to_numpy(p) for _, _, p in self._param_items()]
            buffers = [self.backend.to_numpy(b) for _, _, b in self._buffer_items()]
            self.backend = new
            self._place(params, buffers)
        self.backend = new
        for layer in self.layers:
            layer.set_backend(new)
        if self.optimizer is not None:
            self.optimizer.backend = new       # moves its state
        return self

    def _require_built(self, what):
        if not self.built:
            raise RuntimeError(f"Sequential.{what}: the model is not built; pass input_shape= to "
                               f"Sequential or call build(input_shape) first")

    def count_params(self):
        return int(sum(l.count_params() for l in self.layers))

    def summary(self, print_fn=print):
        """Print (or pass to ``print_fn``) a table of layers, output shapes and parameter counts."""
        self._require_built("summary")
        rows = [(f"{l.name} ({type(l).__name__})", str((None,) + tuple(l.output_shape)),
                 str(l.count_params())) for l in self.layers]
        w = [max(len(h), *(len(r[i]) for r in rows)) for i, h in
             enumerate(("Layer (type)", "Output Shape", "Param #"))]
        line = "-" * (sum(w) + 6)
        out = [f'Model: "{self.name}" (device {self.device}, {self.dtype})', line,
               f"{'Layer (type)':<{w[0]}}   {'Output Shape':<{w[1]}}   {'Param #':>{w[2]}}", line]
        out += [f"{a:<{w[0]}}   {b:<{w[1]}}   {c:>{w[2]}}" for a, b, c in rows]
        out += [line, f"Total params: {self.count_params():,}", line]
        print_fn("\n".join(out))

    # -- weights --------------------------------------------------------------------------------
    def get_weights(self):
        """Every parameter as a NumPy array, in layer order (kernel before bias)."""
        return [self.backend.to_numpy(p).copy() for _, _, p in self._param_items()]

    def gradient_norms(self):
        """L2 norm of each layer's parameter gradients after the last step: ``{name: norm}``.

        Norms shrinking towards the first layers point to vanishing gradients, growing ones to
        exploding gradients.
        """
        self._require_built("gradient_norms")
        be, norms = self.backend, {}
        for layer in self.layers:
            if layer.grads:
                total = 0.0
                for g in layer.grads.values():
                    out = be.empty((1,), self.dtype)
                    be.sum_squares(g.reshape(-1), out)
                    total += float(be.to_numpy(out)[0])
                norms[layer.name] = float(np.sqrt(total))
        return norms

    def set_weights(self, weights):
        """Set every parameter from a list shaped like ``get_weights()``."""
        self._require_built("set_weights")
        items = self._param_items()
        weights = list(weights)
        if len(weights) != len(items):
            raise ValueError(f"set_weights: the model has {len(items)} weight arrays, got "
                             f"{len(weights)}")
        for (layer, key, p), w in zip(items, weights):
            w = np.asarray(w)
            if tuple(w.shape) != tuple(p.shape):
                raise ValueError(f"set_weights: {layer!r} {key} has shape {tuple(p.shape)}, got "
                                 f"{tuple(w.shape)}")
        for (_, _, p), w in zip(items, weights):
            self.backend.copy_(p, np.ascontiguousarray(w, dtype=self.dtype))

    # -- compile and train ----------------------------------------------------------------------
    def compile(self, optimizer="adam", loss=None, metrics=None):
        """Choose the optimizer, the loss and the metrics (names or instances)."""
        if loss is None:
            raise ValueError("compile: a loss is required, e.g. loss='sparse_categorical_crossentropy'")
        self.optimizer = optimizers_module.get(optimizer)
        self.optimizer.backend = self.backend
        self.loss = losses_module.get(loss)
        if metrics is not None and not isinstance(metrics, (list, tuple)):
            raise TypeError(f"compile: metrics must be a list, got {type(metrics).__name__}")
        self.metrics = [metrics_module.get(m, self.loss) for m in (metrics or [])]

    def _require_compiled(self, what):
        if self.optimizer is None or self.loss is None:
            raise RuntimeError(f"Sequential.{what}: call compile(optimizer=..., loss=...) first")

    def _fused(self):
        """True when the last layer's activation is the one the loss can absorb (softmax + CE,
        sigmoid + BCE): the loss then reads the logits and its gradient skips the activation."""
        last = self.layers[-1]
        act = getattr(last, "activation", None)
        return (not self.loss.from_logits and self.loss.fuses_with is not None
                and act == self.loss.fuses_with and hasattr(last, "logits"))

    def _check_x(self, x, name="x"):
        self._require_built("fit")
        x = _as_host_array(x, name)
        if tuple(x.shape[1:]) != self._input_shape:
            raise ValueError(f"{name}: expected samples of shape {self._input_shape} (the model's "
                             f"input shape), got an array of shape {x.shape}")
        if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
            bad = np.argwhere(~np.isfinite(x))[0]
            raise ValueError(f"{name}: contains NaN or Inf (first at index {tuple(bad)})")
        return x

    def _check_xy(self, x, y, name="x"):
        x = self._check_x(x, name)
        y = _as_host_array(y, "y")
        if len(y) != len(x):
            raise ValueError(f"{name} and y have different numbers of samples: {len(x)} and {len(y)}")
        y = self.loss.prepare_targets(y, self.output_shape, self.dtype)
        return x, y

    def _sample_weights(self, y, sample_weight, class_weight, where):
        """Per-sample weights (float64, (N,)) from ``sample_weight``, ``class_weight`` and the
        loss's own class weights, or None when every weight is 1."""
        w = None
        if sample_weight is not None:
            w = np.asarray(sample_weight, dtype=np.float64)
            if w.shape != (len(y),):
                raise ValueError(f"{where}: sample_weight must have shape ({len(y)},), got "
                                 f"{w.shape}")
            if not np.all(np.isfinite(w)) or np.any(w < 0):
                raise ValueError(f"{where}: sample_weight must be finite and non-negative")
        if class_weight is not None:
            if not isinstance(class_weight, dict):
                raise TypeError(f"{where}: class_weight must be a dict {{class index: weight}}, "
                                f"got {type(class_weight).__name__}")
            for k, v in class_weight.items():
                if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0 or \
                        isinstance(v, bool) or not isinstance(v, (int, float)) or \
                        not np.isfinite(v) or v < 0:
                    raise ValueError(f"{where}: class_weight needs non-negative int classes and "
                                     f"finite non-negative weights, got {k!r}: {v!r}")
            classes = self._class_indices(y)
            table = np.ones(max([int(classes.max()) + 1] + [int(k) + 1 for k in class_weight]))
            for k, v in class_weight.items():
                table[int(k)] = v
            cw = table[classes]
            w = cw if w is None else w * cw
        lw = self.loss.sample_weights(y)
        if lw is not None:
            w = lw if w is None else w * lw
        return w

    @staticmethod
    def _class_indices(y):
        """Class index of each target: labels, argmax of one-hot rows, or 0/1 for one unit."""
        y = np.asarray(y)
        if y.ndim == 1:
            return y.astype(np.int64) if y.dtype.kind in "iub" else np.rint(y).astype(np.int64)
        flat = y.reshape(len(y), -1)
        if flat.shape[1] == 1:
            return (flat[:, 0] > 0.5).astype(np.int64)
        return np.argmax(flat, axis=1)

    def _forward(self, xb, training):
        out = xb
        for layer in self.layers:
            out = layer.forward(out, training=training)
        return out

    def _loss_and_backward(self, yb, y_pred, wb=None):
        """Losses (backend (1,) arrays: the data term, then regularization penalties) and the
        backward pass into the flat gradient buffer; ``wb`` holds per-sample weights."""
        be, last = self.backend, self.layers[-1]
        if self._fused():
            logits = last.logits
            loss = self.loss.forward(be, yb, logits, wb, logits=True)
            grad = self.loss.backward(be, yb, logits, wb, logits=True)
            grad = last.backward(grad, pre_activation=True)
            rest = self.layers[-2::-1]
        else:
            loss = self.loss.forward(be, yb, y_pred, wb)
            grad = self.loss.backward(be, yb, y_pred, wb)
            rest = self.layers[::-1]
        for layer in rest:
            grad = layer.backward(grad)
        return [loss] + self._regularize(gradients=True)

    def _regularize(self, gradients):
        """Penalties of the layers' kernel regularizers (backend (1,) arrays); with
        ``gradients`` their gradients are added to the layers' kernel gradients."""
        penalties = []
        for layer in self.layers:
            reg = getattr(layer, "kernel_regularizer", None)
            if reg is not None:
                penalties.append(reg.penalty(self.backend, layer.params["kernel"]))
                if gradients:
                    reg.add_gradient(self.backend, layer.params["kernel"], layer.grads["kernel"])
        return penalties

    def _value(self, losses):
        """The reported loss: the data term plus every regularization penalty, as a float."""
        return float(sum(float(self.backend.to_numpy(v)[0]) for v in losses))

    def _optimizer_lists(self):
        if getattr(self.optimizer, "clipnorm", None) is not None:
            return ([l.params[k] for l, k, _ in self._param_items()],
                    [l.grads[k] for l, k, _ in self._param_items()])
        return [self._flat_params], [self._flat_grads]

    def _step(self, xb, yb, wb=None):
        self.optimizer.backend = self.backend
        if getattr(self.optimizer, "needs_closure", False):     # L-BFGS re-evaluates the batch
            def closure():
                return self._value(self._loss_and_backward(yb, self._forward(xb, True), wb))
            value = self.optimizer.step(*self._optimizer_lists(), closure)
            return value, self._forward(xb, False)
        y_pred = self._forward(xb, True)
        losses = self._loss_and_backward(yb, y_pred, wb)
        self.optimizer.step(*self._optimizer_lists())
        return self._value(losses), y_pred

    def train_step(self, xb, yb, sample_weight=None):
        """One optimizer step on one batch; returns the batch's loss."""
        self._require_compiled("train_step")
        xb, yb = self._check_xy(xb, yb)
        be = self.backend
        w = self._sample_weights(yb, sample_weight, None, "train_step")
        wb = None if w is None else be.asarray(w, self.dtype)
        loss, _ = self._step(be.asarray(xb, self.dtype), be.asarray(yb), wb)
        return loss

    def fit(self, x, y, epochs=1, batch_size=32, validation_split=0.0, validation_data=None,
            shuffle=True, seed=None, verbose=1, callbacks=None, initial_epoch=0,
            class_weight=None, sample_weight=None):
        """Train for ``epochs`` epochs; returns a ``History`` whose ``history`` dict holds the
        per-epoch ``loss``, metrics and their ``val_`` counterparts.

        ``sample_weight`` (one weight per sample) and ``class_weight`` ({class index: weight})
        scale each sample's loss, Keras-style: the batch loss is sum(w * loss) / batch size.
        """
        self._require_compiled("fit")
        epochs = check_positive_int(epochs, "epochs", "fit", allow_zero=True)
        batch_size = check_positive_int(batch_size, "batch_size", "fit")
        if isinstance(validation_split, bool) or not isinstance(validation_split, (int, float)) \
                or not 0.0 <= validation_split < 1.0:
            raise ValueError(f"fit: validation_split must be a float in [0, 1), got "
                             f"{validation_split!r}")
        if verbose not in (0, 1, 2, "auto"):
            raise ValueError(f"fit: verbose must be 0, 1, 2 or 'auto', got {verbose!r}")
        x, y = self._check_xy(x, y)
        if sample_weight is not None and np.shape(sample_weight) != (len(x),):
            raise ValueError(f"fit: sample_weight must have shape ({len(x)},), got "
                             f"{np.shape(sample_weight)}")
        if validation_data is None and validation_split > 0:
            n_val = int(len(x) * validation_split)
            if n_val < 1 or n_val >= len(x):
                raise ValueError(f"fit: validation_split={validation_split} leaves "
                                 f"{len(x) - n_val} training and {n_val} validation samples of "
                                 f"{len(x)}")
            x, y, validation_data = x[:-n_val], y[:-n_val], (x[-n_val:], y[-n_val:])
            if sample_weight is not None:
                sample_weight = np.asarray(sample_weight)[:-n_val]
        self.loss.adapt(y)
        weights = self._sample_weights(y, sample_weight, class_weight, "fit")
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("fit: validation_data must be a pair (x_val, y_val)")
            validation_data = self._check_xy(*validation_data, name="validation_data x")
            validation_data += (self._sample_weights(validation_data[1], None, None, "fit"),)
        rng = np.random.default_rng(seed) if seed is not None else _random.spawn()
        if seed is not None:
            for layer in self.layers:
                if getattr(layer, "rng", None) is not None:
                    layer.rng = np.random.default_rng(rng.integers(0, 2**63 - 1))
        history = callbacks_module.History()
        cbs = list(callbacks or [])
        if not any(isinstance(c, callbacks_module.TerminateOnNaN) for c in cbs):
            cbs.append(callbacks_module.TerminateOnNaN())
        if verbose and not any(isinstance(c, callbacks_module.ProgbarLogger) for c in cbs):
            cbs.append(callbacks_module.ProgbarLogger(1 if verbose == "auto" else verbose))
        steps = -(-len(x) // batch_size)
        cb = callbacks_module.CallbackList(cbs + [history], self,
                                           {"epochs": epochs, "steps": steps, "verbose": verbose})
        self.history = history
        self.stop_training, self.stop_reason = False, None
        be = self.backend
        cb.on_train_begin()
        for epoch in range(initial_epoch, epochs):
            cb.on_epoch_begin(epoch)
            order = rng.permutation(len(x)) if shuffle else np.arange(len(x))
            for m in self.metrics:
                m.reset()
            total, seen = 0.0, 0
            for step in range(steps):
                idx = order[step * batch_size:(step + 1) * batch_size]
                cb.on_train_batch_begin(step)
                yb_host = y[idx]
                wb = None if weights is None else be.asarray(weights[idx], self.dtype)
                value, y_pred = self._step(be.asarray(x[idx], self.dtype), be.asarray(yb_host), wb)
                total += value * len(idx)
                seen += len(idx)
                logs = {"loss": total / seen}
                if self.metrics:
                    pred = be.to_numpy(y_pred)
                    for m in self.metrics:
                        m.update(yb_host, pred)
                        logs[m.name] = m.result()
                logs["batch_loss"] = value
                cb.on_train_batch_end(step, logs)
                if self.stop_training:
                    break
            logs = {"loss": total / max(seen, 1), **{m.name: m.result() for m in self.metrics}}
            if validation_data is not None and not self.stop_reason:
                val = self._evaluate(*validation_data[:2], batch_size, validation_data[2])
                logs.update({f"val_{k}": v for k, v in val.items()})
            cb.on_epoch_end(epoch, logs)
            if self.stop_training:
                break
        cb.on_train_end()
        return history

    def _evaluate(self, x, y, batch_size, weights=None):
        be = self.backend
        for m in self.metrics:
            m.reset()
        total = 0.0
        for start in range(0, len(x), batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            wb = None if weights is None else be.asarray(weights[start:start + batch_size],
                                                         self.dtype)
            y_pred = self._forward(be.asarray(xb, self.dtype), False)
            ybd = be.asarray(yb)
            if self._fused():
                loss = self.loss.forward(be, ybd, self.layers[-1].logits, wb, logits=True)
            else:
                loss = self.loss.forward(be, ybd, y_pred, wb)
            total += float(be.to_numpy(loss)[0]) * len(xb)
            if self.metrics:
                pred = be.to_numpy(y_pred)
                for m in self.metrics:
                    m.update(yb, pred)
        penalty = self._value(self._regularize(gradients=False))
        return {"loss": total / len(x) + penalty, **{m.name: m.result() for m in self.metrics}}

    def evaluate(self, x, y, batch_size=32, verbose=0, sample_weight=None):
        """Loss and metrics over ``(x, y)`` -> ``{"loss": ..., "accuracy": ...}``."""
        self._require_compiled("evaluate")
        batch_size = check_positive_int(batch_size, "batch_size", "evaluate")
        x, y = self._check_xy(x, y)
        weights = self._sample_weights(y, sample_weight, None, "evaluate")
        result = self._evaluate(x, y, batch_size, weights)
        if verbose:
            print(" - ".join(f"{k}: {v:.4f}" for k, v in result.items()))
        return result

    def predict(self, x, batch_size=32):
        """Model outputs for ``x`` as a NumPy array (inference mode)."""
        self._require_built("predict")
        batch_size = check_positive_int(batch_size, "batch_size", "predict")
        x = self._check_x(x)
        be = self.backend
        outs = [be.to_numpy(self._forward(be.asarray(x[s:s + batch_size], self.dtype), False)).copy()
                for s in range(0, len(x), batch_size)]
        return np.concatenate(outs)

    # -- saving ---------------------------------------------------------------------------------
    def get_config(self):
        self._require_built("get_config")
        return {"name": self.name, "input_shape": list(self._input_shape),
                "dtype": self.dtype.name, "device": self.device,
                "layers": [{"class_name": type(l).__name__, "config": l.get_config()}
                           for l in self.layers]}

    def save(self, path):
        """Weights, architecture (JSON) and optimizer state in one ``.npz``.

        Written to a temporary file first and moved into place, so a failed save never clobbers
        the previous file.
        """
        config = {"format": FORMAT, "version": FORMAT_VERSION, "model": self.get_config()}
        arrays = {f"weights/{i}": w for i, w in enumerate(self.get_weights())}
        arrays.update({f"buffers/{i}": self.backend.to_numpy(b)
                       for i, (_, _, b) in enumerate(self._buffer_items())})
        if self.optimizer is not None:
            config["compile"] = {
                "optimizer": {"class_name": type(self.optimizer).__name__,
                              "config": self.optimizer.get_config()},
                "loss": {"class_name": type(self.loss).__name__, "config": self.loss.get_config()},
                "metrics": [{"class_name": type(m).__name__, "config": m.get_config()}
                            for m in self.metrics]}
            arrays.update({f"optimizer/{k}": np.asarray(v)
                           for k, v in self.optimizer.get_state().items()})
        arrays["config"] = np.array(json.dumps(config))
        atomic_write(path, lambda f: np.savez(f, **arrays))


def _from_config(registry, entry, what):
    if not isinstance(entry, dict) or "class_name" not in entry:
        raise ValueError(f"bad {what} entry {entry!r}")
    cls = registry(entry["class_name"])
    return cls.from_config(entry.get("config", {}))


def _class_lookup(classes, what):
    def lookup(name):
        if name not in classes:
            raise ValueError(f"unknown {what} {name!r}; known: {', '.join(sorted(classes))}")
        return classes[name]
    return lookup


def load_model(path, device=None):
    """Load a model saved with ``save``: same architecture, weights and optimizer state."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"load_model: no such file {path!r}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise ValueError(f"load_model: {path!r} is not a numbanet model file ({e})") from None
    try:
        config = json.loads(str(arrays.pop("config")))
        if config.get("format") != FORMAT:
            raise ValueError("missing format marker")
        if config.get("version") != FORMAT_VERSION:
            raise ValueError(f"format version {config.get('version')!r}, this numbanet reads "
                             f"{FORMAT_VERSION}")
        mc = config["model"]
        layers = [_from_config(layers_module.get, e, "layer") for e in mc["layers"]]
        model = Sequential(layers, name=mc["name"], dtype=mc["dtype"],
                           device=device or mc.get("device", "cpu"))
        model.build(tuple(mc["input_shape"]))
        n = len(model._param_items())
        model.set_weights([arrays[f"weights/{i}"] for i in range(n)])
        for i, (layer, key, b) in enumerate(model._buffer_items()):
            model.backend.copy_(b, arrays[f"buffers/{i}"])
        comp = config.get("compile")
        if comp:
            opt_classes = {c.__name__: c for c in optimizers_module.OPTIMIZERS.values()}
            opt = _from_config(_class_lookup(opt_classes, "optimizer"), comp["optimizer"],
                               "optimizer")
            loss = _from_config(_class_lookup(losses_module.CLASSES, "loss"), comp["loss"], "loss")
            metrics = [_from_config(_class_lookup(metrics_module.CLASSES, "metric"), m, "metric")
                       for m in comp["metrics"]]
            model.compile(optimizer=opt, loss=loss, metrics=metrics)
            opt.set_state({k[len("optimizer/"):]: v for k, v in arrays.items()
                           if k.startswith("optimizer/")})
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"load_model: {path!r} is not a valid numbanet model file "
                         f"(missing or malformed {e})") from None
    except ValueError as e:
        raise ValueError(f"load_model: {path!r} is not a valid numbanet model file ({e})") from None
    return model
