"""Losses (Keras names and semantics: probabilities by default; Keras' "sum_over_batch_size"
reduction: each sample's loss times its weight, summed, divided by the batch size N).

Three ways in:

* ``loss(y_true, y_pred, sample_weight=None) -> float`` and ``loss.gradient(y_true, y_pred,
  sample_weight=None)`` on NumPy arrays (CPU kernels); class weights are included.
* ``loss.forward(backend, y_true, y_pred, weights=None, logits=False)`` (a (1,) backend array) and
  ``loss.backward(...)`` (the gradient, shaped like ``y_pred``): the model's path, arrays stay on
  the backend. ``weights`` is a backend (N,) array of ``y_pred``'s dtype holding every per-sample
  factor (sample weights times class weights), or None for all ones. ``logits=True`` reads
  ``y_pred`` as the pre-activation of the output layer (the model's fused softmax / sigmoid path).
* ``loss.sample_weights(y_true) -> (N,) float64 array or None``: each sample's class weight (None
  without ``class_weight``); the model multiplies it into its per-sample weights.
  ``loss.adapt(y_train)`` learns ``class_weight="balanced"`` once (the model calls it in ``fit``);
  without it, "balanced" is computed from the targets of each call.

Per-sample losses: the mean over the sample's elements for elementwise losses (MSE, MAE, Huber,
LogCosh, MSLE, hinges, binary crossentropy and binary focal), the sum over classes for
crossentropies, categorical focal and KL divergence, one soft score per sample for Dice, Jaccard
and Tversky.

``reduction`` (Keras 3): "sum_over_batch_size" (the default) and "mean" as above, "sum",
"mean_with_sample_weight" (the weighted sum over the sum of the sample weights), or None / "none":
the values themselves, as Keras reduces only the last axis ((N, T, D) predictions give (N, T);
Dice, Jaccard and Tversky give one value per sample, (N,)), times the sample weights. The
functional losses (``binary_crossentropy(y_true, y_pred, from_logits=False)``, ...) return those
values unweighted; on tensors they are differentiable (the forward kernels write one value per
row, the backward kernels take the incoming gradient as row weights).
"""
import inspect
import math

import numpy as np

from . import engine
from . import validation as V
from .backend import get_backend
from .registry import Declared, Registry
from .validation import Number

EPSILON = 1e-7
CLIP = "clip"       # in a loss's ``args``: EPSILON, for the probability kernels only
# Keras 3's reductions: "mean" is "sum_over_batch_size"; "mean_with_sample_weight" divides the
# weighted sum by the sum of the sample weights; None and "none" give the per-sample values.
REDUCTIONS = ("sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", "none")
_MEAN = ("sum_over_batch_size", "mean")


def _shapes_match(expected, got):
    return len(expected) == len(got) and all(e is None or e == g for e, g in zip(expected, got))


class Loss(Declared):
    """Base class: binds ``<kernel>_forward``/``<kernel>_backward`` (``_logits`` when asked).

    A built-in loss is a declaration, read by this class' ``__init__`` and ``get_config``:

    * ``kernel``: the kernel pair's name; ``params``: {argument: (default, check)} in constructor
      order (``validation`` specs); ``args``: what the kernels take before the weights, argument
      names and ``CLIP`` (the 1e-7 clipping constant, which the logits kernels do not take);
      by default the ``params`` in order.
    * ``has_logits`` adds ``from_logits``; ``target_kind`` ("binary", "categorical", "sparse")
      adds ``class_weight`` (see ``ClassWeights``); ``targets`` checks or converts the targets
      ("probabilities", "distributions", "signs", "counts": >= 0).

    A custom loss subclasses ``Loss`` and defines ``call(y_true, y_pred)`` with ``nb.ops``,
    returning per-sample (or per-element) losses or a scalar: ``fit`` trains with it without a
    hand-written gradient (a tape of ``call`` gives it), sample weights scale the per-sample
    values, and the result is their sum over the number of values (Keras'
    ``sum_over_batch_size``; any other ``reduction`` as for the built-in losses). Register it
    with ``register(MyLoss)`` to load a model compiled with it.
    """

    kernel = None
    params = {}
    _keyword_only = ("reduction",)
    args = None
    fuses_with = None          # the output activation whose gradient this loss can absorb
    sparse = False             # integer class labels instead of targets shaped like y_pred
    has_logits = False         # a <kernel>_logits kernel pair exists (from_logits=True works)
    rowwise = False            # per row of the last axis (classes): extra axes are positions
    samplewise = False         # reduction=None: one value per sample (its elements flattened)
    target_kind = None         # class weights: "binary", "categorical" or "sparse"
    targets = None             # target domain: "probabilities", "distributions", "signs", "counts"

    @classmethod
    def _declared(cls):
        """(argument, default, check) of each constructor argument, in order."""
        out = [(n, d, check) for n, (d, check) in cls.params.items()]
        if cls.has_logits:
            out.append(("from_logits", False, V.FLAG))
        if cls.target_kind:
            out.append(("class_weight", None, None))       # checked by ClassWeights
        out.append(("name", None, V.Text(optional=True)))
        out.append(("reduction", "sum_over_batch_size", V.OneOf(*REDUCTIONS, optional=True)))
        return out

    def __init__(self, *args, **kwargs):
        declared = type(self)._declared()
        values = self._bind(args, kwargs)
        if values.get("from_logits") and not self.has_logits:
            raise ValueError(f"{type(self).__name__}: has no logits form, got "
                             f"from_logits={values['from_logits']!r}")
        self.name = type(self).__name__
        self.name = V.Text(optional=True)(values["name"], "name", self.name) or self.name
        self.from_logits = False
        self.reduction = "sum_over_batch_size"
        for n, _, check in declared:
            if check is not None and n != "name":
                setattr(self, n, check(values[n], n, self.name))
        if self.target_kind:
            self._class_weights = ClassWeights(values["class_weight"], self.target_kind,
                                               self.name)

    @property
    def class_weight(self):
        return self._class_weights.class_weight

    @property
    def is_custom(self):
        """A subclass that computes with ``call`` (nb.ops) instead of kernels."""
        return type(self).call is not Loss.call

    def call(self, y_true, y_pred):
        """Per-sample losses of a custom loss, written with ``nb.ops``."""
        raise NotImplementedError(f"{type(self).__name__} defines no kernel and no call()")

    # -- kernels --------------------------------------------------------------------------------
    def _kernel(self, logits):
        """The kernel pair's name and the hyperparameters it takes before the weights."""
        if logits and not self.has_logits:
            raise ValueError(f"{self.name}: has no logits form")
        names = tuple(self.params) if self.args is None else self.args
        args = tuple(EPSILON if a is CLIP else getattr(self, a) for a in names
                     if not (logits and a is CLIP))
        return self.kernel + ("_logits" if logits else ""), args

    def _args(self):
        """The hyperparameters the probability kernels take before the weights."""
        return self._kernel(False)[1]

    def _2d(self, a):
        shape = a.shape
        if self.rowwise and len(shape) > 2:          # positions: one row per position
            return a.reshape(math.prod(shape[:-1]), shape[-1])
        if len(shape) == 2:
            return a
        return a.reshape(shape[0], math.prod(shape[1:]) if len(shape) > 1 else 1)

    def _rows(self, y_true, y_pred):
        """(targets, 2-D predictions, shape of the values) of the per-sample values: a row per
        position of the last axis, which Keras reduces alone; a row per sample for
        ``samplewise`` losses."""
        shape = tuple(int(d) for d in y_pred.shape)
        if self.samplewise:
            return self._targets(y_true), self._2d(y_pred), shape[:1]
        rows = math.prod(shape[:-1])
        t = y_true.reshape(rows) if self.sparse else y_true.reshape(rows, shape[-1])
        return t, y_pred.reshape(rows, shape[-1]), shape[:-1]

    def _targets(self, y_true):
        if self.sparse:
            return y_true.reshape(math.prod(y_true.shape)) if len(y_true.shape) > 1 \
                else y_true
        return self._2d(y_true)

    def _weights(self, backend, weights, n, dtype, rows=None, values=None):
        """The backend weights of ``dtype``, one per row: ``weights`` (one per sample) checked
        and repeated for each position of a sample when ``rows`` > n, or ones (cached per
        backend, size, dtype and factor) when None; for a scalar loss of ``values`` per-sample
        values, times the reduction's factor on the kernels' mean (``_factor``)."""
        rows = n if rows is None else rows
        if weights is not None and tuple(weights.shape) not in ((n,), (n, 1)):
            raise ValueError(f"{self.name}: weights must have shape ({n},) (one per sample), got "
                             f"{tuple(weights.shape)}")
        f = 1.0 if values is None else self._factor(backend, weights, values)
        if weights is None:
            cache = self.__dict__.setdefault("_ones", {})
            key = (backend.name, int(rows), np.dtype(dtype).str, f)
            if key not in cache:
                cache[key] = backend.full((int(rows),), f, dtype)
            return cache[key]
        if rows != n or f != 1.0:
            host = np.repeat(backend.to_numpy(weights).reshape(n), rows // n) * f
            return backend.asarray(host, dtype)
        return backend.asarray(weights.reshape(n), dtype)

    def _scalar(self):
        """Refuse reduction=None where a scalar loss is needed (a model, ``gradient``)."""
        if self.reduction in (None, "none"):
            raise ValueError(f"{self.name}: reduction={self.reduction!r} gives per-sample "
                             f"values; a model's loss and gradient() need a scalar reduction "
                             f"({', '.join(repr(r) for r in REDUCTIONS[:4])})")

    def _factor(self, backend, weights, values):
        """What turns the kernels' mean of ``values`` per-sample values into the reduction: 1,
        ``values`` (the sum) or ``values`` / sum(sample weights) ("mean_with_sample_weight", 0
        when they sum to 0)."""
        self._scalar()
        if self.reduction == "sum":
            return float(values)
        if self.reduction == "mean_with_sample_weight" and weights is not None:
            total = float(np.sum(backend.to_numpy(weights), dtype=np.float64))
            return values / total if total else 0.0
        return 1.0

    def _setup(self, backend, y_true, y_pred, weights, logits):
        """(kernel name, hyperparameters, targets, 2-D predictions, weights) of a kernel call."""
        name, args = self._kernel(logits or self.from_logits)
        p = self._2d(y_pred)
        s = tuple(y_pred.shape)
        w = self._weights(backend, weights, s[0], y_pred.dtype, p.shape[0],
                          s[0] if self.samplewise or len(s) < 2 else math.prod(s[:-1]))
        return name, args, self._targets(y_true), p, w

    def forward(self, backend, y_true, y_pred, weights=None, logits=False):
        """sum_i w_i l_i / N as a backend array of shape (1,) (N rows: samples, or positions
        of the samples for per-position outputs), or the sum, or the "mean_with_sample_weight",
        as ``reduction`` says."""
        return self.value_and_grad(backend, y_true, y_pred, weights, False, logits)[0]

    def backward(self, backend, y_true, y_pred, weights=None, logits=False):
        """Its gradient with respect to ``y_pred`` (or the logits) as a backend array shaped
        like ``y_pred``."""
        if self.is_custom:
            return self._custom(backend, y_true, y_pred, weights, True)[1]
        name, args, t, p, w = self._setup(backend, y_true, y_pred, weights, logits)
        grad = backend.empty(y_pred.shape, y_pred.dtype)
        getattr(backend, name + "_backward")(t, p, *args, w, self._2d(grad))
        return grad

    def value_and_grad(self, backend, y_true, y_pred, weights=None, gradients=True,
                       logits=False):
        """(loss as a (1,) backend array, its gradient with respect to ``y_pred`` (or the
        logits) or None), sharing the set-up of the two kernel calls."""
        if self.is_custom:
            return self._custom(backend, y_true, y_pred, weights, gradients)
        name, args, t, p, w = self._setup(backend, y_true, y_pred, weights, logits)
        return self._run(backend, name, args, t, p, w, y_pred.shape, gradients)

    @staticmethod
    def _run(backend, name, args, t, p, w, shape, gradients):
        """The forward kernel (and the backward one, into a gradient of ``shape``) on 2-D
        predictions ``p``: (loss as a (1,) array, gradient or None)."""
        out = backend.empty((1,), p.dtype)
        getattr(backend, name + "_forward")(t, p, *args, w, out)
        if not gradients:
            return out, None
        grad = backend.empty(tuple(shape), p.dtype)
        getattr(backend, name + "_backward")(t, p, *args, w, grad.reshape(p.shape))
        return out, grad

    def value_and_grad_masked(self, backend, y_true, y_pred, weights, mask, gradients=True,
                              logits=False):
        """``value_and_grad`` for per-position outputs (batch, time, ...) with a (batch, time)
        ``mask``: every position is a row, masked ones weigh 0, and the loss is the mean over the
        unmasked ones (Keras: sum(w l) / sum(mask))."""
        mshape = tuple(int(d) for d in mask.shape)
        pshape = tuple(int(d) for d in y_pred.shape)
        if pshape[:len(mshape)] != mshape or len(pshape) == len(mshape):
            return self.value_and_grad(backend, y_true, y_pred, weights, gradients, logits)
        rows = math.prod(mshape)
        m = np.asarray(backend.to_numpy(mask), dtype=np.float64).reshape(-1)
        w = np.ones(pshape[0]) if weights is None else \
            np.asarray(backend.to_numpy(weights), dtype=np.float64).reshape(-1)
        row_w = np.repeat(w, rows // pshape[0]) * m
        self._scalar()
        valid = {"sum": 1.0, "mean_with_sample_weight": row_w.sum()}.get(self.reduction, m.sum())
        row_w *= rows / valid if valid > 0 else 0.0
        p2 = y_pred.reshape((rows,) + pshape[len(mshape):]) if len(pshape) > len(mshape) + 1 \
            else y_pred.reshape(rows, pshape[-1])
        if len(p2.shape) > 2:
            p2 = p2.reshape(rows, -1)
        yt = y_true.reshape((rows,) + tuple(int(d) for d in y_true.shape[len(mshape):]))
        name, args = self._kernel(logits or self.from_logits)
        if self.is_custom:
            raise ValueError(f"{self.name}: a custom loss takes masked per-position outputs "
                             f"only without a mask; compute the mask inside call()")
        t = yt if self.sparse else yt.reshape(rows, -1)
        return self._run(backend, name, args, t, p2, backend.asarray(row_w, y_pred.dtype),
                         pshape, gradients)

    def _reduce(self, values, weights):
        """Per-sample (or per-element) values times the (N,) sample weights, reduced as Keras
        does: summed, over the number of values, over the sum of the weights
        ("mean_with_sample_weight") or not at all (None, "none")."""
        from . import ops
        if values.ndim == 0:
            return values
        if weights is not None:
            w = weights if isinstance(weights, engine._TensorLike) else \
                engine.Tensor(weights, values.backend)
            values = ops.multiply(values, ops.reshape(w, (values.shape[0],)
                                                      + (1,) * (values.ndim - 1)))
        if self.reduction in (None, "none"):
            return values
        total = ops.sum(values)
        if self.reduction == "sum":
            return total
        if self.reduction == "mean_with_sample_weight" and weights is not None:
            s = float(ops.sum(w))                          # Keras: 0 when they sum to 0
            return ops.divide(total, s) if s else ops.multiply(total, 0.0)
        return ops.divide(total, float(values.size))

    def _custom(self, backend, y_true, y_pred, weights, gradients):
        """Value (and gradient) of a custom loss through a tape of its ``call``."""
        self._scalar()
        tape = engine.GradientTape()
        yp = engine.Tensor(y_pred, backend)
        yt = engine.Tensor(y_true, backend)
        with engine.local_scope(tape):
            tape.watch(yp)
            out = self._reduce(engine.convert_to_tensor(self.call(yt, yp),
                                                        device=backend.name), weights)
        value = backend.asarray(backend.to_numpy(out.value).reshape(1), dtype=y_pred.dtype) \
            if not backend.is_device else out.value.reshape(1)
        if not gradients:
            return value, None
        if id(out) not in tape._tracked:
            return value, backend.zeros(tuple(y_pred.shape), y_pred.dtype)
        g = tape.gradient(out, yp)
        return value, (backend.zeros(tuple(y_pred.shape), y_pred.dtype) if g is None
                       else g.value)

    # -- targets and weights --------------------------------------------------------------------
    def prepare_targets(self, y_true, output_shape, dtype):
        """Check ``y_true`` against the model's per-sample ``output_shape`` (None: any size);
        return a C-contiguous host array of the dtype the kernels take."""
        y = np.asarray(y_true)
        if y.dtype.kind not in "fiub":
            raise TypeError(f"{self.name}: targets must be numeric, got dtype {y.dtype}")
        expected = tuple(output_shape)
        if self.is_custom:
            return np.ascontiguousarray(y, dtype=dtype if y.dtype.kind == "f" else None)
        if not _shapes_match(expected, y.shape[1:]) and not (y.ndim == 1 and expected == (1,)):
            raise ValueError(f"{self.name}: targets of shape {y.shape} do not match the model "
                             f"output shape {(None,) + expected}")
        shape = tuple(g for g in y.shape[1:]) if y.ndim > 1 else (1,)
        y = np.ascontiguousarray(y.reshape((len(y),) + shape), dtype=dtype)
        if self.targets == "signs" and np.all((y == 0) | (y == 1)):
            y = 2 * y - 1              # 0/1 targets of a hinge loss become -1/1 (as Keras does)
        if self.targets in ("probabilities", "distributions"):
            _check_probabilities(self.name, y, rows=self.targets == "distributions")
        elif self.targets == "counts":
            _check_probabilities(self.name, y, high=math.inf)
        return y

    def sample_weights(self, y_true):
        """Each sample's class weight as a (N,) float64 array, or None (no class weights)."""
        return self._class_weights.sample_weights(y_true) if self.target_kind else None

    def adapt(self, y_train):
        """Learn what the loss needs from the training targets (class_weight="balanced")."""
        if self.target_kind:
            self._class_weights.adapt(y_train)
        return self

    def _host(self, y_true, y_pred):
        y_pred = np.asarray(y_pred)
        if y_pred.dtype not in (np.float32, np.float64):
            y_pred = y_pred.astype(np.float64 if y_pred.dtype.kind == "f" else np.float32)
        if y_pred.ndim < 1 or len(y_pred) < 1:
            raise ValueError(f"{self.name}: y_pred must have a non-empty batch axis, got shape "
                             f"{y_pred.shape}")
        y_pred = np.ascontiguousarray(y_pred)
        shape = y_pred.shape[1:] if y_pred.ndim > 1 else (1,)
        y_true = self.prepare_targets(y_true, shape, y_pred.dtype)
        if len(y_true) != len(y_pred):
            raise ValueError(f"{self.name}: y_true has {len(y_true)} samples, y_pred "
                             f"{len(y_pred)}")
        return y_true, y_pred.reshape((len(y_pred),) + shape)

    def _host_weights(self, y_true, sample_weight, n, dtype):
        """Class weights of ``y_true`` times ``sample_weight`` as a (N,) array, or None."""
        w = self.sample_weights(y_true)
        if sample_weight is not None:
            sw = V.sample_weights(self.name, sample_weight, n)
            w = sw if w is None else w * sw
        return None if w is None else np.ascontiguousarray(w, dtype=dtype)

    def __call__(self, y_true, y_pred, sample_weight=None):
        """The loss: a float for NumPy inputs; a scalar Tensor (recorded on the active gradient
        tapes) when ``y_pred`` is a tensor; the per-sample values (an array, a Tensor) with
        reduction None."""
        if isinstance(y_pred, engine._TensorLike) or isinstance(y_true, engine._TensorLike):
            return _loss_tensor(self, y_true, y_pred, sample_weight)
        if self.is_custom:
            yp = np.asarray(y_pred)
            yp = np.ascontiguousarray(yp, dtype=yp.dtype if yp.dtype in (np.float32, np.float64)
                                      else np.float64)
            with engine.stop_recording():
                out = self._reduce(engine.convert_to_tensor(
                    self.call(engine.convert_to_tensor(y_true, device="cpu"),
                              engine.Tensor(yp))), None if sample_weight is None
                    else np.asarray(sample_weight, dtype=yp.dtype))
            return out.numpy() if out.ndim else float(out)
        y_true, y_pred = self._host(y_true, y_pred)
        if self.reduction not in _MEAN:        # per-sample values, reduced (or not) as tensors
            with engine.stop_recording():
                out = _loss_tensor(self, y_true, y_pred, sample_weight)
            return out.numpy() if out.ndim else float(out)
        w = self._host_weights(y_true, sample_weight, len(y_pred), y_pred.dtype)
        return float(self.forward(get_backend("cpu"), y_true, y_pred, w)[0])

    def gradient(self, y_true, y_pred, sample_weight=None):
        """d loss(y_true, y_pred, sample_weight) / d y_pred, shaped like ``y_pred``."""
        shape = np.shape(y_pred)
        y_true, y_pred = self._host(y_true, y_pred)
        w = self._host_weights(y_true, sample_weight, len(y_pred), y_pred.dtype)
        return self.backward(get_backend("cpu"), y_true, y_pred, w).reshape(shape)


class _LossOp:
    """A built-in loss on tensors as a recorded op: its kernels forward, its gradient kernel
    (times the incoming scalar gradient) backward."""

    name = "loss"

    def __init__(self, loss):
        self.loss = loss

    def backward(self, ctx, g, need):
        be, yt, yp, w, shape = ctx
        grad = self.loss.backward(be, yt, yp, w).reshape(shape)
        out = be.empty(tuple(grad.shape), grad.dtype)
        from .ops import _B, _collapse, _contiguous_strides, _flat
        shape = tuple(int(d) for d in grad.shape)
        geo = _collapse(shape, _contiguous_strides(shape), (0,) * len(shape))
        be.binary_forward(_B["multiply"], _flat(be, grad), be.kernel_view(g, (1,)), *geo,
                          _flat(be, out))
        return [None, out]


def _loss_tensor(loss, y_true, y_pred, sample_weight):
    """``loss(y_true, y_pred)`` on tensors: a scalar Tensor, differentiable in ``y_pred``."""
    if loss.is_custom:
        yp = engine.convert_to_tensor(y_pred)
        w = None if sample_weight is None else engine.convert_to_tensor(
            np.asarray(sample_weight), dtype=yp.dtype, device=yp.device)
        return loss._reduce(engine.convert_to_tensor(loss.call(y_true, yp)), w)
    be = engine.backend_of(y_true, y_pred)
    yp = engine.convert_to_tensor(y_pred, device=be.name)
    if yp.dtype not in (np.float32, np.float64):
        yp = engine.convert_to_tensor(yp.numpy(), dtype=np.float32, device=be.name)
    shape = yp.shape[1:] if yp.ndim > 1 else (1,)
    t_host = y_true.numpy() if isinstance(y_true, engine._TensorLike) else np.asarray(y_true)
    t_host = loss.prepare_targets(t_host, shape, yp.dtype)
    if len(t_host) != yp.shape[0]:
        raise ValueError(f"{loss.name}: y_true has {len(t_host)} samples, y_pred {yp.shape[0]}")
    w = loss._host_weights(t_host, sample_weight, yp.shape[0], yp.dtype)
    yt = be.asarray(t_host)
    wb = None if w is None else be.asarray(w)
    pv = yp.value if yp.ndim > 1 else yp.value.reshape(yp.shape[0], 1)
    if loss.reduction not in _MEAN:
        return loss._reduce(_per_sample(loss, be, yt, pv, yp.shape, y_pred), None if w is None
                            else engine.convert_to_tensor(w, dtype=yp.dtype, device=be.name))
    value = loss.forward(be, yt, pv, wb)
    out = engine.Tensor(value.reshape(()), be)
    if engine.recording():
        engine.record(_LossOp(loss), (be, yt, pv, wb, yp.shape),
                      [None, y_pred if isinstance(y_pred, (engine.Tensor, engine.Variable))
                       else None], [out])
    return out


class _PerSampleOp(_LossOp):
    """A built-in loss's per-sample values as a recorded op: backward is its gradient kernel with
    the incoming gradient times the number of rows as row weights (the kernel scales row i by
    weights[i] / rows)."""

    def backward(self, ctx, g, need):
        be, name, args, t, p, shape = ctx
        rows = p.shape[0]
        w = be.empty((rows,), p.dtype)
        be.scale(be.kernel_view(g, (rows,)), float(rows), w)
        grad = be.empty(tuple(shape), p.dtype)
        getattr(be, name + "_backward")(t, p, *args, w, be.kernel_view(grad, tuple(p.shape)))
        return [None, grad]


def _per_sample(loss, be, yt, pv, shape, y_pred):
    """The unweighted per-sample values of a built-in loss (``_rows``) as a Tensor from its
    forward kernel writing one value per row, recorded on the active tapes."""
    name, args = loss._kernel(loss.from_logits)
    t, p, vshape = loss._rows(yt, pv)
    out = be.empty((p.shape[0],), p.dtype)
    getattr(be, name + "_forward")(t, p, *args, loss._weights(be, None, p.shape[0], p.dtype),
                                   out)
    values = engine.Tensor(out.reshape(vshape), be)
    if engine.recording():
        engine.record(_PerSampleOp(loss), (be, name, args, t, p, shape),
                      [None, y_pred if isinstance(y_pred, (engine.Tensor, engine.Variable))
                       else None], [values])
    return values


# ------------------------------------------------------------------------------------ target checks
def _check_probabilities(owner, y, rows=False, high=1):
    """Targets are probabilities: every entry in [0, high] (1: soft targets allowed; inf: counts
    or rates); with ``rows`` each row of the last axis is a distribution over the classes,
    summing to 1 (within 1e-3; label smoothing keeps that)."""
    bad = np.argwhere((y < 0) | (y > high))
    if bad.size:
        at = tuple(int(i) for i in bad[0])
        raise ValueError(f"{owner}: targets must lie in [0, {high:g}], got {y[at].item():.6g} "
                         f"at index {at}")
    if rows:
        sums = y.reshape(-1, y.shape[-1]).sum(axis=1, dtype=np.float64)
        bad = np.flatnonzero(np.abs(sums - 1.0) > 1e-3)
        if bad.size:
            row = np.unravel_index(bad[0], y.shape[:-1])
            raise ValueError(f"{owner}: each target row must sum to 1 (one-hot or class "
                             f"probabilities), row {tuple(int(i) for i in row)} sums to "
                             f"{sums[bad[0]]:.6g}")


# ------------------------------------------------------------------------------------ class weights
def _balanced(counts, n):
    """scikit-learn's "balanced": n / (classes present * count), 1 for absent classes."""
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    w = np.ones_like(counts)
    w[present] = n / (present.sum() * counts[present])
    return w


class ClassWeights:
    """The one implementation of class weights (a loss's ``class_weight=`` and ``fit``'s):
    ``class_weight`` is None, a dict {class index: weight >= 0} (missing classes weigh 1; keys may
    be digit strings, as JSON gives) or "balanced". ``kind`` says what the targets are: "binary"
    (each element a 0/1 target: a sample weighs the mean over its elements of y w1 + (1 - y) w0),
    "categorical" (one-hot or soft targets: sum_c y_c w_c) or "sparse" (integer labels:
    w_label)."""

    def __init__(self, class_weight, kind, owner):
        self.kind, self.owner, self._balanced_table = kind, owner, None
        self.class_weight = self._check(class_weight)

    def _check(self, class_weight):
        owner, binary = self.owner, self.kind == "binary"
        if class_weight is None or (isinstance(class_weight, str) and class_weight == "balanced"):
            return class_weight
        if not isinstance(class_weight, dict):
            raise ValueError(f"{owner}: class_weight must be None, 'balanced' or a dict "
                             f"{{class index: weight}}, got {class_weight!r}")
        out = {}
        for k, v in class_weight.items():
            key = int(k) if V.is_int(k) or (isinstance(k, str) and k.strip().isdigit()) else None
            if key is None or key < 0 or (binary and key > 1):
                raise ValueError(f"{owner}: class_weight keys must be class indices "
                                 f"{'0 and 1' if binary else '>= 0'}, got {k!r}")
            out[key] = V.NON_NEGATIVE(v, f"class_weight[{key}]", owner)
        return out

    def _targets(self, y):
        """Targets as float64 (N, D) (binary, categorical) or int64 (N,) labels (sparse)."""
        y = np.asarray(y)
        if y.ndim == 0 or len(y) == 0:
            raise ValueError(f"{self.owner}: expected a non-empty batch of targets, got shape "
                             f"{y.shape}")
        if self.kind != "sparse":
            return y.reshape(len(y), -1).astype(np.float64)
        if y.ndim > 1 and y.size == len(y):
            y = y.reshape(len(y))
        if y.ndim != 1 or y.dtype.kind not in "fiub" or np.any(y < 0) or np.any(y != np.round(y)):
            raise ValueError(f"{self.owner}: class weights need integer labels >= 0 of shape "
                             f"(batch,), got {y.shape} {y.dtype}")
        return y.astype(np.int64)

    def _counts(self, y):
        """(class counts, number of samples) of prepared targets."""
        if self.kind == "binary":
            pos = float(y.sum())
            return np.array([y.size - pos, pos]), y.size
        if self.kind == "categorical":
            return y.sum(axis=0), len(y)
        return np.bincount(y), len(y)

    def _table(self, y):
        """Weights per class index for prepared targets ``y``."""
        if self.class_weight == "balanced":
            if self._balanced_table is not None:
                return self._balanced_table
            return _balanced(*self._counts(y))
        size = 2 if self.kind == "binary" else (
            y.shape[1] if self.kind == "categorical" else int(y.max()) + 1)
        table = np.ones(max([size] + [k + 1 for k in self.class_weight]))
        for k, v in self.class_weight.items():
            table[k] = v
        return table

    def adapt(self, y_train):
        """class_weight="balanced": learn the class weights from the training targets."""
        if self.class_weight == "balanced":
            self._balanced_table = _balanced(*self._counts(self._targets(y_train)))
        return self

    def sample_weights(self, y_true):
        """Each sample's class weight as a (N,) float64 array, or None without class weights."""
        if self.class_weight is None:
            return None
        y = self._targets(y_true)
        table = self._table(y)
        if self.kind == "binary":
            return np.mean(y * table[1] + (1.0 - y) * table[0], axis=1)
        if self.kind == "categorical":
            cols = y.shape[1]
            if len(table) < cols:
                table = np.concatenate([table, np.ones(cols - len(table))])
            return y @ table[:cols]
        out = np.ones(len(y))
        known = y < len(table)
        out[known] = table[y[known]]
        return out


# ----------------------------------------------------------------------------------------- registry
REGISTRY = Registry("loss", Loss, hint="; register a custom loss with nb.losses.register(MyLoss) "
                                  "before loading, or load with compile=False")
CLASSES = REGISTRY.classes            # class name -> class (what load_model looks up)
LOSSES = REGISTRY.names               # name -> class (what get and compile take)


def get(loss):
    """A loss instance from a name or an instance."""
    return REGISTRY.get(loss)


def register(cls=None, *names):
    """Make a loss class known by name (for ``get`` and ``compile``) and to ``load_model``;
    ``@register("name", ...)`` (or ``@register()``) is the class decorator form."""
    if cls is None or isinstance(cls, str):
        return REGISTRY.decorator(*names) if cls is None else REGISTRY.decorator(cls, *names)
    return REGISTRY.register(cls, *names)


# -- the built-in losses: a declaration each (kernel, hyperparameters, kernel arguments, names) --

# --------------------------------------------------------------------------------------- regression
@register("mse", "mean_squared_error")
class MeanSquaredError(Loss):
    """mean((y_pred - y_true)^2)."""
    kernel = "mse"


@register("mae", "mean_absolute_error")
class MeanAbsoluteError(Loss):
    """mean(|y_pred - y_true|)."""
    kernel = "mae"


@register("huber")
class Huber(Loss):
    """Quadratic for |error| <= delta, linear beyond."""
    kernel = "huber"
    params = {"delta": (1.0, V.POSITIVE)}


@register("log_cosh", "logcosh")
class LogCosh(Loss):
    """mean(log(cosh(y_pred - y_true))): quadratic near 0, linear far out; stable for any error."""
    kernel = "log_cosh"


@register("msle", "mean_squared_logarithmic_error")
class MeanSquaredLogarithmicError(Loss):
    """mean((log(1 + max(y_pred, eps)) - log(1 + max(y_true, eps)))^2), eps = 1e-7 (Keras)."""
    kernel = "msle"
    args = (CLIP,)


@register("poisson")
class Poisson(Loss):
    """mean(y_pred - y_true log(y_pred + 1e-7)) (Keras): the negative log-likelihood of counts
    y_true under Poisson rates y_pred, less the constant log(y_true!)."""
    kernel = "poisson"
    args, targets = (CLIP,), "counts"


@register("hinge")
class Hinge(Loss):
    """mean(max(1 - y_true * y_pred, 0)) with -1/1 targets; targets that are all 0 or 1 are
    converted to -1/1 first (as Keras does)."""
    kernel = "hinge"
    targets = "signs"


@register("squared_hinge")
class SquaredHinge(Loss):
    """mean(max(1 - y_true * y_pred, 0)^2), -1/1 targets (0/1 converted)."""
    kernel = "squared_hinge"
    targets = "signs"


@register("kl_divergence", "kld", "kullback_leibler_divergence")
class KLDivergence(Loss):
    """sum over the last axis of y_true log(y_true / y_pred), both clipped to [1e-7, 1] (Keras)."""
    kernel = "kl_divergence"
    args = (CLIP,)
    rowwise = True


# ------------------------------------------------------------------------------------- crossentropy
@register("binary_crossentropy")
class BinaryCrossentropy(Loss):
    """Binary crossentropy on probabilities (clipped to [1e-7, 1 - 1e-7]) or logits."""
    kernel = "binary_crossentropy"
    args = (CLIP,)
    fuses_with, has_logits = "sigmoid", True
    target_kind, targets = "binary", "probabilities"


@register("categorical_crossentropy")
class CategoricalCrossentropy(Loss):
    """Crossentropy against one-hot (or soft) targets over the last axis (per position for
    outputs with extra axes, e.g. (batch, time, classes)); the softmax output's gradient fuses to
    p - y."""
    kernel = "categorical_crossentropy"
    args = (CLIP,)
    fuses_with, has_logits, rowwise = "softmax", True, True
    target_kind, targets = "categorical", "distributions"


@register("sparse_categorical_crossentropy")
class SparseCategoricalCrossentropy(Loss):
    """Crossentropy against integer class labels."""
    kernel = "sparse_categorical_crossentropy"
    args = (CLIP,)
    fuses_with, has_logits, rowwise, sparse = "softmax", True, True, True
    target_kind = "sparse"

    def prepare_targets(self, y_true, output_shape, dtype):
        y = y_true if type(y_true) is np.ndarray else np.asarray(y_true)
        output_shape = tuple(output_shape)
        if len(output_shape) < 1 or output_shape[-1] is None:
            raise ValueError(f"{self.name}: needs model outputs of shape (batch, ..., classes), "
                             f"got {(None,) + output_shape}")
        positions = output_shape[:-1]
        if y.ndim == len(positions) + 2 and y.shape[-1] == 1:
            y = y.reshape(y.shape[:-1])
        if y.ndim != len(positions) + 1 or not _shapes_match(positions, y.shape[1:]):
            want = "(batch,)" if not positions else str((None,) + positions)
            raise ValueError(f"{self.name}: labels must have shape {want} for outputs of shape "
                             f"{(None,) + output_shape}, got {y.shape}")
        V.integer_labels(self.name, y)
        classes = output_shape[-1]
        if y.size and (y.min() < 0 or y.max() >= classes):
            bad = np.argwhere((y < 0) | (y >= classes))
            at = tuple(int(i) for i in bad[0])
            where = at[0] if len(at) == 1 else at
            raise ValueError(f"{self.name}: labels must be in [0, {classes}), got "
                             f"{y[at].item()!r} at index {where}")
        return np.ascontiguousarray(y, dtype=np.int64)


@register("binary_focal_crossentropy")
class BinaryFocalCrossentropy(Loss):
    """Keras 3 binary focal loss: per element (1 - p_t)^gamma * bce, p_t = y p + (1 - y)(1 - p);
    with ``apply_class_balancing`` also times alpha for y = 1 and 1 - alpha for y = 0. On
    probabilities the bce uses p clipped to [1e-7, 1 - 1e-7]; the logits form is unclipped and
    stable."""
    kernel = "binary_focal_crossentropy"
    params = {"apply_class_balancing": (False, V.FLAG), "alpha": (0.25, V.PROBABILITY),
              "gamma": (2.0, V.NON_NEGATIVE)}
    args = ("gamma", "alpha", "apply_class_balancing", CLIP)
    fuses_with, has_logits = "sigmoid", True
    target_kind, targets = "binary", "probabilities"


@register("categorical_focal_crossentropy")
class CategoricalFocalCrossentropy(Loss):
    """Keras 3 categorical focal loss: -alpha sum_c y_c (1 - p_c)^gamma log p_c, p = y_pred over
    its row sum, clipped to [1e-7, 1 - 1e-7] (logits: softmax, unclipped and stable)."""
    kernel = "categorical_focal_crossentropy"
    params = {"alpha": (0.25, V.NON_NEGATIVE), "gamma": (2.0, V.NON_NEGATIVE)}
    args = ("gamma", "alpha", CLIP)
    fuses_with, has_logits, rowwise = "softmax", True, True
    target_kind, targets = "categorical", "distributions"


# ------------------------------------------------------------------------------------- segmentation
@register("dice")
class Dice(Loss):
    """Soft Dice loss per sample over its flattened elements: 1 - (2 sum(y p) + s) /
    (sum(y) + sum(p) + s). The smoothing term ``smooth`` (> 0) sits in numerator and denominator,
    so an empty target predicted empty scores 1 (loss 0) and the loss never divides by zero."""
    kernel = "dice"
    params = {"smooth": (EPSILON, V.POSITIVE)}
    samplewise = True


@register("jaccard", "iou")
class Jaccard(Loss):
    """Soft Jaccard (IoU) loss per sample: 1 - (sum(y p) + s) / (sum(y) + sum(p) - sum(y p) + s)."""
    kernel = "jaccard"
    params = {"smooth": (EPSILON, V.POSITIVE)}
    samplewise = True


@register("tversky")
class Tversky(Loss):
    """Tversky loss per sample: 1 - (TP + s) / (TP + alpha FP + beta FN + s) with the soft counts
    TP = sum(y p), FP = sum((1 - y) p), FN = sum(y (1 - p)) (Keras: alpha weighs false
    positives, beta false negatives; alpha = beta = 0.5 is Dice, 1 and 1 is Jaccard)."""
    kernel = "tversky"
    params = {"alpha": (0.5, V.NON_NEGATIVE), "beta": (0.5, V.NON_NEGATIVE),
              "smooth": (EPSILON, V.POSITIVE)}
    samplewise = True


# --------------------------------------------------------------------------------------- embeddings
class _EmbeddingLoss(Loss):
    """A loss of several embedding batches (N, ...) and no y_true/y_pred: called with its own
    inputs (``loss(*inputs, sample_weight=None)``), ``gradient`` returns one gradient per
    embedding input; ``forward(backend, *inputs, weights)``/``backward`` take backend arrays."""

    inputs = ()            # names of the embedding inputs
    labels = False         # a label per sample follows the embeddings

    def prepare_targets(self, y_true, output_shape, dtype):
        raise TypeError(f"{self.name}: takes ({', '.join(self._signature())}) and cannot be the "
                        f"loss of a model that maps x to y")

    def _signature(self):
        return self.inputs + (("y",) if self.labels else ())

    def _split(self, arrays, weights):
        """(embeddings, labels, weights) of a positional argument list."""
        k, n = len(self.inputs), len(self._signature())
        if len(arrays) not in (n, n + 1):
            raise TypeError(f"{self.name}: takes ({', '.join(self._signature())}) and an "
                            f"optional sample weight, got {len(arrays)} arrays")
        return arrays[:k], tuple(arrays[k:n]), arrays[n] if len(arrays) > n else weights

    def _host_arrays(self, arrays, sample_weight):
        """Checked host embeddings, labels and sample weights of ``loss(...)``'s arguments."""
        emb, labels, sw = self._split(arrays, sample_weight)
        emb = [np.asarray(a) for a in emb]
        for nm, a in zip(self.inputs, emb):
            if a.dtype.kind not in "fiub" or a.ndim < 1 or len(a) < 1:
                raise ValueError(f"{self.name}: {nm} must be a numeric non-empty batch, got "
                                 f"shape {a.shape} dtype {a.dtype}")
            if a.shape != emb[0].shape:
                raise ValueError(f"{self.name}: {nm} has shape {a.shape}, {self.inputs[0]} "
                                 f"{emb[0].shape}")
        dtype = emb[0].dtype if emb[0].dtype in (np.float32, np.float64) else np.float64
        emb = [np.ascontiguousarray(a, dtype=dtype) for a in emb]
        n = len(emb[0])
        labels = [self._labels(y, n, dtype) for y in labels]
        return emb + labels + [Loss._host_weights(self, None, sw, n, dtype)]

    def _labels(self, y, n, dtype):
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.shape != (n,) or y.dtype.kind not in "fiub" or not np.all(np.isfinite(y)):
            raise ValueError(f"{self.name}: y must be {n} finite labels (1 similar, 0 "
                             f"dissimilar), got shape {y.shape}")
        return np.ascontiguousarray(y, dtype=dtype)

    def sample_weights(self, y_true):
        return None

    def forward(self, backend, *arrays, weights=None):
        """sum_i w_i l_i / N as a (1,) backend array (reduced as ``reduction`` says; the (N,)
        values w_i l_i for None)."""
        emb, labels, weights = self._split(arrays, weights)
        x = [self._2d(a) for a in emb]
        none = self.reduction in (None, "none")
        n = x[0].shape[0]
        w = self._weights(backend, weights, n, emb[0].dtype, values=None if none else n)
        out = backend.empty((n if none else 1,), emb[0].dtype)
        getattr(backend, self.kernel + "_forward")(*x, *labels, *self._kernel(False)[1], w, out)
        return out

    def backward(self, backend, *arrays, weights=None):
        """The gradient with respect to each embedding input, backend arrays shaped like them."""
        emb, labels, weights = self._split(arrays, weights)
        x = [self._2d(a) for a in emb]
        w = self._weights(backend, weights, x[0].shape[0], emb[0].dtype, values=x[0].shape[0])
        grads = [backend.empty(emb[0].shape, emb[0].dtype) for _ in emb]
        getattr(backend, self.kernel + "_backward")(*x, *labels, *self._kernel(False)[1], w,
                                                    *[self._2d(g) for g in grads])
        return tuple(grads)

    def __call__(self, *arrays, sample_weight=None):
        out = self.forward(get_backend("cpu"), *self._host_arrays(arrays, sample_weight))
        return out if self.reduction in (None, "none") else float(out[0])

    def gradient(self, *arrays, sample_weight=None):
        return self.backward(get_backend("cpu"), *self._host_arrays(arrays, sample_weight))


@register()
class ContrastiveLoss(_EmbeddingLoss):
    """Contrastive loss on pairs of embeddings (Hadsell et al. 2006, the form of TensorFlow
    Addons): ``loss(x1, x2, y)`` with y = 1 for a similar pair, 0 for a dissimilar one:
    l = y d^2 + (1 - y) max(margin - d, 0)^2, d = ||x1 - x2 + eps||_2 (as
    torch.nn.functional.pairwise_distance), averaged over the batch (times sample weights).
    ``gradient(x1, x2, y)`` returns (d/dx1, d/dx2). Called directly, not a model's loss."""
    kernel = "contrastive"
    params = {"margin": (1.0, V.NON_NEGATIVE), "eps": (1e-6, V.NON_NEGATIVE)}
    inputs, labels = ("x1", "x2"), True


@register()
class TripletMarginLoss(_EmbeddingLoss):
    """torch.nn.TripletMarginLoss: ``loss(anchor, positive, negative)`` =
    mean(max(d(a, pos) - d(a, neg) + margin, 0)) with d(x, y) = ||x - y + eps||_p (p >= 1), times
    sample weights. ``gradient(...)`` returns (d/d anchor, d/d positive, d/d negative)."""
    kernel = "triplet_margin"
    params = {"margin": (1.0, V.NON_NEGATIVE), "p": (2.0, Number(low=1)),
              "eps": (1e-6, V.NON_NEGATIVE)}
    inputs = ("anchor", "positive", "negative")


# ------------------------------------------------------------------------------ functional losses
def _function(cls, name):
    """Keras' functional form of ``cls``: ``name(y_true, y_pred, **hyperparameters)``, the
    per-sample values (``reduction=None``: over the last axis; no sample or class weights), a
    Tensor on the gradient tapes for tensor inputs, an array for NumPy ones."""
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    sig = inspect.Signature([inspect.Parameter("y_true", kind), inspect.Parameter("y_pred", kind)]
                            + [p for n, p in cls.__signature__.parameters.items()
                               if n not in ("class_weight", "name", "reduction")])

    def fn(*args, **kwargs):
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        options = dict(bound.arguments)
        y_true, y_pred = options.pop("y_true"), options.pop("y_pred")
        return cls(**options, reduction=None)(y_true, y_pred)

    fn.__name__ = fn.__qualname__ = name
    fn.__signature__, fn.__module__ = sig, __name__
    fn.__doc__ = f"Per-sample values of :class:`{cls.__name__}` (Keras' ``losses.{name}``)."
    return fn


mean_squared_error = _function(MeanSquaredError, "mean_squared_error")
mean_absolute_error = _function(MeanAbsoluteError, "mean_absolute_error")
mean_squared_logarithmic_error = _function(MeanSquaredLogarithmicError,
                                           "mean_squared_logarithmic_error")
huber = _function(Huber, "huber")
log_cosh = _function(LogCosh, "log_cosh")
poisson = _function(Poisson, "poisson")
hinge = _function(Hinge, "hinge")
squared_hinge = _function(SquaredHinge, "squared_hinge")
kl_divergence = _function(KLDivergence, "kl_divergence")
binary_crossentropy = _function(BinaryCrossentropy, "binary_crossentropy")
categorical_crossentropy = _function(CategoricalCrossentropy, "categorical_crossentropy")
sparse_categorical_crossentropy = _function(SparseCategoricalCrossentropy,
                                            "sparse_categorical_crossentropy")
binary_focal_crossentropy = _function(BinaryFocalCrossentropy, "binary_focal_crossentropy")
categorical_focal_crossentropy = _function(CategoricalFocalCrossentropy,
                                           "categorical_focal_crossentropy")
