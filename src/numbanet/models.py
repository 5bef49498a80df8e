"""Models: functional graphs, subclassed models and ``Sequential`` (a chain, the same engine).

A model is a layer. A *functional* model (``nb.Model(inputs, outputs)``) runs its compiled
:class:`~numbanet.functional.Plan`: the layers' fused forward kernels in order, then their
backward kernels in reverse, adding gradients where a value or a weight is used more than once.
A *subclassed* model (``class M(nb.Model)`` with ``call``) runs ``call`` under a tape of its own.
Either kind is called like a layer (inside another model, under a ``GradientTape``) and trains
with ``compile``/``fit``: a batch is moved to the device once and stays there through forward,
loss, backward and the optimizer update; only the scalars the user asked to see come back.

Weights belong to layers (their storage is the backend's parameter arena): a layer shared by
several models is trained through each of them.
"""
import contextlib
import json
import os
import warnings
import zipfile

import numpy as np

from . import _compile_helper
from . import callbacks as callbacks_module
from . import distributed as distributed_module
from . import engine, functional
from . import layers as layers_module
from . import losses as losses_module
from . import metrics as metrics_module
from . import optimizers as optimizers_module
from . import random as _random
from . import validation
from ._files import atomic_write
from .backend import get_backend
from .registry import serialize
from .layers.base import (Layer, check_dtype, check_positive_int, check_shape, fmt_shape,
                          shapes_match)

FORMAT = "numbanet-model"
FORMAT_VERSION = 2


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


def _unique(items):
    seen, out = set(), []
    for it in items:
        if id(it) not in seen:
            seen.add(id(it))
            out.append(it)
    return out


def _named(value, names, what, kind="output", broadcast=False):
    """``value`` (a list in order, a dict by name, or one item) as a list aligned with
    ``names`` (the model's inputs or outputs, ``kind``); dict entries missing from it are None.
    One item for several names is refused (one array for a model with several inputs is
    ambiguous) unless ``broadcast`` (a single setting that applies to every output)."""
    if isinstance(value, dict):
        unknown = [k for k in value if k not in names]
        if unknown:
            raise ValueError(f"{what}: unknown name {unknown[0]!r}; expected one of {names}")
        return [value.get(n) for n in names]
    if len(names) == 1:
        # a one-item list holding an array is that array; a list of scalars is a batch
        if isinstance(value, (list, tuple)) and len(value) == 1 and np.ndim(value[0]) > 0:
            return [value[0]]
        return [value]
    if isinstance(value, (list, tuple)):
        if len(value) != len(names):
            raise ValueError(f"{what}: expected {len(names)} entries (one per {kind}: "
                             f"{names}), got {len(value)}")
        return list(value)
    if broadcast:
        return [value] * len(names)
    raise ValueError(f"{what}: expected {len(names)} {kind}s ({', '.join(names)}) as a list or "
                     f"a dict by name, got one {type(value).__name__}")


def _refuse_overflow(arr, cast, label):
    """``cast`` is ``arr`` in the model's dtype: refuse a finite value that overflowed there,
    naming it and its index (training on it would turn the loss or the outputs into inf/NaN)."""
    if not np.all(np.isfinite(cast)):
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(cast))[0])
        raise ValueError(f"{label}: value {arr[bad].item()!r} at index {bad} overflows "
                         f"{cast.dtype}")


class _Info:
    """A model's cached per-structure facts (see ``Model._info``)."""

    __slots__ = ("specs", "out_shapes", "names", "first", "trainable", "fusion", "regularized",
                 "requires", "has_buffers")


class Model(Layer, functional._GraphLayer):
    """A model: ``nb.Model(inputs, outputs)`` (functional) or a subclass defining ``call``.

    Functional: ``inputs``/``outputs`` are symbolic tensors (or lists of them) from ``nb.Input``
    and layer calls. Subclassed: ``super().__init__()`` then layers as attributes and
    ``call(self, x, training=False)``; weights come in the order their layers are first called.
    """

    def __init__(self, *args, **kwargs):
        inputs = kwargs.pop("inputs", args[0] if args else None)
        outputs = kwargs.pop("outputs", args[1] if len(args) > 1 else None)
        if len(args) > 2:
            raise TypeError("Model(inputs, outputs, name=None): too many positional arguments")
        device = kwargs.pop("device", None)
        name = kwargs.pop("name", None)
        dtype = kwargs.pop("dtype", None)
        trainable = kwargs.pop("trainable", True)
        if kwargs:
            raise TypeError(f"Model: unexpected arguments {sorted(kwargs)}")
        object.__setattr__(self, "_tracked", {})
        super().__init__(name=name or None, dtype=dtype, trainable=trainable)
        self._plan = None
        self.optimizer = self.loss = None
        self.losses_ = []
        self.metrics = []
        self.compiled_metrics = []
        self.stop_training = False
        self.stop_reason = None
        self.history = None
        if device is not None:
            self.backend = get_backend(device)
        if (inputs is None) != (outputs is None):
            raise TypeError("Model: a functional model needs both inputs and outputs")
        if inputs is not None:
            self._init_graph(inputs, outputs)

    # -- structure --------------------------------------------------------------------------------
    def __setattr__(self, name, value):
        if name == "metrics" and isinstance(getattr(type(self), "metrics", None), property):
            return      # a subclass lists its own metrics (Keras 3's custom train_step)
        tracked = self.__dict__.get("_tracked")
        if tracked is not None and not name.startswith("_"):
            if isinstance(value, Layer) and value is not self:
                tracked[name] = value
            elif isinstance(value, (list, tuple)) and value and \
                    all(isinstance(v, Layer) for v in value):
                tracked[name] = list(value)
            elif name in tracked:
                del tracked[name]
        object.__setattr__(self, name, value)

    def _init_graph(self, inputs, outputs):
        self._single_in = not isinstance(inputs, (list, tuple))
        self._single_out = not isinstance(outputs, (list, tuple))
        plan = functional.Plan(functional.flatten(inputs), functional.flatten(outputs),
                               f"Model {self.name!r}")
        names = {}
        for layer in plan.layers:
            if layer.name in names and names[layer.name] is not layer:
                raise ValueError(f"Model {self.name!r}: two different layers are named "
                                 f"{layer.name!r}; layer names must be unique in a model")
            names[layer.name] = layer
        self._plan = plan
        engine.structure_changed()
        self.multi_input = len(plan.inputs) > 1
        self.inputs, self.outputs = list(plan.inputs), list(plan.outputs)
        self.input_names = [t.node.layer.name for t in plan.inputs]
        self.output_names = _output_names(plan)
        floats = [t.dtype for t in plan.inputs if t.dtype.kind == "f"] + \
            [l.dtype for l in plan.layers if l.dtype is not None and
             not isinstance(l, functional.InputLayer)]
        self.dtype = self.dtype or (floats[0] if floats else np.dtype(np.float32))
        backends = {id(l.backend): l.backend for l in self._sublayers_deep()}
        if len(backends) == 1:
            self.backend = next(iter(backends.values()))
        elif len(backends) > 1:
            raise ValueError(f"Model {self.name!r}: its layers live on different devices; move "
                             f"them with model.to(device) after building")
        self.built = True

    @property
    def is_functional(self):
        return self._plan is not None

    @property
    def input_shape(self):
        """Per-sample input shape (a list for several inputs); None before it is known."""
        if self.__dict__.get("_plan") is None:
            return self.__dict__.get("_input_shape_")
        shapes = [tuple(t.shape[1:]) for t in self._plan.inputs]
        return shapes[0] if self._single_in else shapes

    @input_shape.setter
    def input_shape(self, value):
        self.__dict__["_input_shape_"] = value

    @property
    def output_shape(self):
        """Per-sample output shape (a list for several outputs); None before it is known."""
        if self.__dict__.get("_plan") is None:
            return self.__dict__.get("_output_shape_")
        shapes = [tuple(t.shape[1:]) for t in self._plan.outputs]
        return shapes[0] if self._single_out else shapes

    @output_shape.setter
    def output_shape(self, value):
        self.__dict__["_output_shape_"] = value

    @property
    def layers(self):
        """The model's layers: in call order for graphs (InputLayers first for a functional
        model), in order of first call for subclassed models."""
        if self._plan is not None:
            return list(self._plan.layers)
        found = []
        for v in self._tracked.values():
            found.extend(v if isinstance(v, list) else [v])
        found = _unique(found)
        order = {id(l): (l._first_call if l._first_call is not None else float("inf"), i)
                 for i, l in enumerate(found)}
        return sorted(found, key=lambda l: order[id(l)])

    def get_layer(self, name=None, index=None):
        """A layer by ``name`` or by position in ``layers``."""
        if index is not None:
            layers = self.layers
            if not -len(layers) <= index < len(layers):
                raise ValueError(f"get_layer: index {index} out of range for {len(layers)} layers")
            return layers[index]
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ValueError(f"get_layer: no layer named {name!r} in {self!r}; layers are "
                         f"{[l.name for l in self.layers]}")

    def _cached(self, key, make):
        """``make()``, cached until the structure changes (weights created, moved, frozen, a
        graph built)."""
        cache = self.__dict__.setdefault("_structure_cache", {})
        hit = cache.get(key)
        version = engine.structure_version()
        if hit is None or hit[0] != version:
            hit = cache[key] = (version, make())
        return hit[1]

    def _sublayers_deep(self):
        def make():
            out = []
            for layer in self.layers:
                if isinstance(layer, functional.InputLayer):
                    continue
                out.append(layer)
                out.extend(layer._sublayers_deep())
            return _unique(out)
        if self._plan is None:
            return make()                   # a subclassed model's layers change as it runs
        return self._cached("sublayers", make)

    def _own_layers(self):
        """The layers holding weights, each once (sublayers of nested models included): a
        subclassed model's own ``add_weight`` weights come first (this model, then any nested
        model with weights of its own, holds them)."""
        layers = [l for l in self._sublayers_deep()
                  if not isinstance(l, Model) or l.params or l.buffers]
        return [self] + layers if self.params or self.buffers else layers

    @property
    def trainable(self):
        return self._trainable

    @trainable.setter
    def trainable(self, value):
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"{self!r}: trainable must be True or False, got {value!r}")
        self._trainable = bool(value)
        for layer in self._sublayers_deep():
            layer.trainable = bool(value)
        engine.structure_changed()              # the model's own weights (add_weight) too

    @property
    def trainable_weights(self):
        """Every trainable weight, each once, in the order their layers were first called
        (kernel before bias)."""
        if not self._trainable:
            return []
        return list(self._trainable_list())

    def _trainable_list(self):
        """The trainable weights (a cached list: the optimizer caches its runs by it)."""
        return self._info().trainable

    def _optimizer_variables(self):
        """The variables the optimizer state is saved and loaded for: the trainable weights
        (their indices are those of older files), then the other parameters (a frozen layer's),
        whose state the optimizer keeps for when they are trained again."""
        out = self.trainable_weights
        seen = set(out)
        for v in self.weights:
            if v.kind == "param" and v not in seen:
                seen.add(v)
                out.append(v)
        return out

    @property
    def non_trainable_weights(self):
        if not self._trainable:
            return [v for l in self._own_layers() for v in l._local_weights("all")]
        return [v for l in self._own_layers() for v in l._local_weights("non_trainable")]

    @property
    def weights(self):
        return [v for l in self._own_layers() for v in l._local_weights("all")]

    variables = weights

    @property
    def device(self):
        return self.backend.name

    def _require_built(self, what):
        if not self.built:
            raise RuntimeError(f"{type(self).__name__}.{what}: the model is not built; call it on "
                               f"data (or fit) first")

    def count_params(self):
        """The number of weight values, non-trainable ones (buffers) included (Keras)."""
        return int(sum(v.size for l in self._own_layers() for v in l._local_weights("all")))

    def summary(self, print_fn=print):
        """Print (or pass to ``print_fn``) a table of layers, output shapes, parameter counts and,
        for graphs that are not a chain, what each layer is connected to."""
        self._require_built("summary")
        rows = self._summary_rows()
        connected = any(r[3] is not None for r in rows)
        heads = ["Layer (type)", "Output Shape", "Param #"] + (["Connected to"] if connected
                                                                 else [])
        table = [[r[0], r[1], r[2]] + ([r[3] or ""] if connected else []) for r in rows]
        w = [max(len(h), *(len(t[i]) for t in table)) if table else len(h)
             for i, h in enumerate(heads)]
        line = "-" * (sum(w) + 3 * (len(w) - 1))

        def fmt(cells):
            out = []
            for i, (c, width) in enumerate(zip(cells, w)):
                out.append(f"{c:>{width}}" if i == 2 else f"{c:<{width}}")
            return "   ".join(out).rstrip()
        total = self.count_params()
        trainable = int(sum(v.size for v in self.trainable_weights))
        out = [f'Model: "{self.name}" (device {self.device}, {self.dtype})', line, fmt(heads), line]
        out += [fmt(t) for t in table]
        out += [line, f"Total params: {total:,}", f"Trainable params: {trainable:,}",
                f"Non-trainable params: {total - trainable:,}", line]
        print_fn("\n".join(out))

    def _summary_rows(self):
        rows = []
        if self._plan is not None:
            plan = self._plan
            index = {}                  # id(node) -> its index among its layer's nodes here
            for t in plan.inputs:
                index[id(t.node)] = 0
            count = {}
            for node in plan.nodes:
                index[id(node)] = count.get(id(node.layer), 0)
                count[id(node.layer)] = index[id(node)] + 1
            for layer in self.layers:
                if isinstance(layer, functional.InputLayer):
                    t = next(t for t in plan.inputs if t.node.layer is layer)
                    rows.append((f"{layer.name} (InputLayer)", str(t.shape), "0", "-"))
                    continue
                nodes = [n for n in plan.nodes if n.layer is layer]
                shapes = ", ".join(str(o.shape) for o in nodes[0].outputs)
                links = ", ".join(f"{t.node.layer.name}[{index[id(t.node)]}][{t.index}]"
                                  for n in nodes for t in n.inputs)
                rows.append((f"{layer.name} ({type(layer).__name__})", shapes,
                             f"{layer.count_params():,}", links))
        else:
            for layer in self.layers:
                shape = "?" if layer.output_shape is None else (
                    fmt_shape(layer.output_shape) if not isinstance(layer.output_shape, list)
                    else ", ".join(fmt_shape(s) for s in layer.output_shape))
                rows.append((f"{layer.name} ({type(layer).__name__})", shape,
                             f"{layer.count_params():,}", None))
        return rows

    # -- weights --------------------------------------------------------------------------------
    def _param_items(self):
        """(layer, key, array) of every weight, each layer once, in layer order."""
        return [(l, k, p) for l in self._own_layers() for k, p in l.params.items()]

    def _buffer_items(self):
        return [(l, k, b) for l in self._own_layers() for k, b in l.buffers.items()]

    def _weight_items(self):
        """(layer, key, array) of every weight in ``weights`` order: each layer's parameters,
        then its buffers."""
        return [(l, k, a) for l in self._own_layers()
                for k, a in list(l.params.items()) + list(l.buffers.items())]

    def set_weights(self, weights):
        """Set every weight from a list shaped like ``get_weights()``."""
        self._require_built("set_weights")
        self._assign(self._weight_items(), weights, "set_weights")

    def _get_params(self):
        """The parameters alone (no buffers) as NumPy arrays, in layer order: what model files
        store as ``weights/{i}``."""
        return [l.backend.to_numpy(p).copy() for l, _, p in self._param_items()]

    def _set_params(self, weights, what):
        self._assign(self._param_items(), weights, what)

    def gradient_norms(self):
        """L2 norm of each layer's parameter gradients after the last step: ``{name: norm}``.

        Norms shrinking towards the first layers point to vanishing gradients, growing ones to
        exploding gradients.
        """
        self._require_built("gradient_norms")
        norms = {}
        for layer in self._own_layers():
            if layer.grads:
                be, total = layer.backend, 0.0
                for g in layer.grads.values():
                    out = be.empty((1,), g.dtype)
                    be.sum_squares(be.kernel_view(g, (g.size,)), out)
                    total += float(be.to_numpy(out)[0])
                norms[layer.name] = float(np.sqrt(total))
        return norms

    def to(self, device):
        """Move the model (weights, buffers, optimizer state) to ``"cpu"`` or ``"cuda"``."""
        new = get_backend(device)
        for layer in [self] + self._sublayers_deep():
            layer._move_to(new)
        self.backend = new
        if self.optimizer is not None:
            self.optimizer.backend = new
        return self

    def _follow_layers(self):
        """Run where the weights are: when another model sharing layers with this one moved
        them (``other.to(device)``), this model follows them there, its other layers too."""
        for layer in self._sublayers_deep():
            if layer.backend is not self.backend and (layer.params or layer.buffers):
                self.to(layer.backend.name)
                return

    def _move_to(self, backend):
        if self.params or self.buffers:         # a subclassed model's own weights
            Layer._move_to(self, backend)
        self.backend = backend

    # -- running --------------------------------------------------------------------------------
    def __call__(self, inputs, *args, **kwargs):
        if functional.is_symbolic(inputs):
            if not self.built and self._defines_build():
                self._build_own([(tuple(t.shape[1:]), t.dtype)
                                 for t in functional.flatten(inputs)])
            return functional.call_symbolic(self, inputs, args, kwargs)
        self._follow_layers()
        return self._call_eager(inputs, *args, **kwargs)

    def _build_from(self, arrays):
        if self._plan is not None:
            return
        if self._defines_build():
            self._build_own([(tuple(int(d) for d in a.shape[1:]), a.dtype) for a in arrays])
        self.built = True

    def _defines_build(self):
        """Whether this unbuilt (subclassed) model has a ``build`` of its own to call."""
        return self._plan is None and type(self).build is not Layer.build

    def _build_own(self, specs):
        """Call the model's ``build(input_shape)`` once, before its first call (Keras), with
        the per-sample shape of its input (batch axis excluded, as layers get it; a list for
        several inputs). ``specs``: (shape, dtype) per input; a float64 input makes a model
        without a dtype float64, so the weights ``build`` creates match it, unless its first
        layer is built already (a Sequential of built models): the data is cast to its dtype."""
        first = (self.__dict__.get("_layers") or [None])[0]
        if self.dtype is None and not getattr(first, "built", False) and \
                any(np.dtype(d) == np.float64 for _, d in specs):
            self.dtype = np.dtype(np.float64)
        shapes = [s for s, _ in specs]
        shape = shapes[0] if len(shapes) == 1 else shapes
        self.build(shape)
        if self._plan is None:
            self.input_shape = shape
        self.built = True

    def check_input(self, x, index=0):
        if self._plan is None:
            if isinstance(x, np.ndarray) and x.dtype.kind == "f" and self.dtype is not None and \
                    x.dtype != self.dtype and not self.backend.is_device:
                return np.ascontiguousarray(x, dtype=self.dtype)
            if isinstance(x, np.ndarray) and self.backend.is_device:
                return self.backend.asarray(x)
            return x
        t = self._plan.inputs[index]
        got = tuple(int(d) for d in x.shape)
        if len(got) < 1 or not shapes_match(t.shape[1:], got[1:]):
            which = f" {self.input_names[index]!r}" if self.multi_input else ""
            raise ValueError(f"{self!r}: expected input{which} of shape {t.shape} (None = any "
                             f"size), got {got}")
        if isinstance(x, np.ndarray):
            return x if t.dtype.kind == "O" else self.backend.asarray(x, dtype=t.dtype)
        if np.dtype(x.dtype) != t.dtype:
            raise TypeError(f"{self!r}: input {self.input_names[index]!r} must be {t.dtype}, "
                            f"got {x.dtype}")
        return x

    def _input_array(self, v):
        if self._plan is not None and not isinstance(v, engine._TensorLike) and \
                not hasattr(v, "__cuda_array_interface__"):
            a = np.asarray(v)
            if a.dtype.kind in "OUS" and any(t.dtype.kind == "O" for t in self._plan.inputs):
                return np.asarray(v, dtype=object)
        return Layer._input_array(self, v)

    def output_shape_for(self, input_shape, **kwargs):
        if self._plan is None:
            raise NotImplementedError
        return self.output_shape if self._single_out else list(self.output_shape)

    def output_dtypes(self, n):
        return [t.dtype for t in self._plan.outputs]

    @property
    def infer_by_running(self):
        return self._plan is None

    def _forward(self, x, training, **kwargs):
        if self._plan is None:
            return Layer._forward(self, x, training, **kwargs)
        plan = self._plan
        values = [None] * plan.nslots
        if self.multi_input:
            for slot, a in zip(plan.input_slots, x):
                values[slot] = a
        else:
            values[plan.input_slots[0]] = x
        if plan.masking:
            return self._forward_masked(values, training)
        ctxs = []
        for layer, ins, outs, kw, listed, listed_out, kw_spec in plan.steps:
            if not (listed or listed_out or kw or kw_spec):     # the common case: one in, one out
                values[outs[0]], c = layer._forward(values[ins[0]], training)
                ctxs.append(c)
                continue
            a, kw = _step_args(values, ins, kw, listed, kw_spec)
            out, c = layer._forward(a, kw.pop("training", training), **kw)
            if listed_out:
                for o, v in zip(outs, out):
                    values[o] = v
            else:
                values[outs[0]] = out
            ctxs.append(c)
        ctx = (values, ctxs, None)
        if self._loss_steps():
            self._call_losses = self._added_losses(ctx)
        if self._single_out:
            return values[plan.output_slots[0]], ctx
        return [values[s] for s in plan.output_slots], ctx

    def _loss_steps(self):
        """Indices of the graph's steps whose calls can add losses (``add_loss``)."""
        return self._cached("loss_steps", lambda: [
            k for k, step in enumerate(self._plan.steps) if step[0]._may_add_losses()])

    def _may_add_losses(self):
        return self._plan is None or bool(self._loss_steps())

    def _added_losses(self, ctx):
        if self._plan is None:
            return Layer._added_losses(self, ctx)
        steps, ctxs = self._plan.steps, ctx[1]
        return [t for k in self._loss_steps() for t in steps[k][0]._added_losses(ctxs[k])]

    @property
    def losses(self):
        """The add_loss terms of the last call (of every layer inside), as tensors."""
        return list(self._call_losses)

    def _forward_masked(self, values, training):
        """The executor for graphs that carry masks (an Embedding with ``mask_zero``, a Masking
        layer): each slot also has a mask ((batch, time) 0/1 array, or None); a layer that uses
        masks gets its input's, and ``compute_mask`` gives its output's."""
        plan = self._plan
        masks = [None] * plan.nslots
        ctxs = []
        for layer, ins, outs, kw, listed, listed_out, kw_spec in plan.steps:
            a, kw = _step_args(values, ins, kw, listed, kw_spec)
            n_main = len(a) if listed else 1
            m = [masks[i] for i in ins[:n_main]] if listed else masks[ins[0]]
            if any(v is not None for v in (m if listed else [m])) and layer.uses_mask:
                kw["mask"] = m
            out, c = layer._forward(a, kw.pop("training", training), **kw)
            om = layer.compute_mask(a, m)
            if listed_out:
                for o, v, mo in zip(outs, out, om if isinstance(om, (list, tuple))
                                    else [om] * len(outs)):
                    values[o], masks[o] = v, mo
            else:
                values[outs[0]], masks[outs[0]] = out, om
            ctxs.append(c)
        res = [values[s] for s in plan.output_slots]
        if self._loss_steps():
            self._call_losses = self._added_losses((values, ctxs, masks))
        return (res[0] if self._single_out else res), (values, ctxs, masks)

    def _output_masks(self, ctx):
        """The masks of the outputs of the forward pass ``ctx`` (None where there is none)."""
        if self._plan is None or len(ctx) < 3 or ctx[2] is None:
            return [None] * self._output_count()
        return [ctx[2][s] for s in self._plan.output_slots]

    def _requires(self, sink, need):
        """Per slot: does its gradient matter (it depends on a needed input or a wanted
        weight)? Per step: does the step run backward at all? (Cached for the fit path.)"""
        if type(sink) is engine.LayerSink and sink.trainable_only:
            memo = self._info().requires
            key = tuple(need)
            hit = memo.get(key)
            if hit is None:
                hit = memo[key] = self._requires_of(sink, need)
            return hit
        return self._requires_of(sink, need)

    def _requires_of(self, sink, need):
        plan = self._plan
        req = [False] * plan.nslots
        for slot, n in zip(plan.input_slots, need):
            req[slot] = n
        run = []
        for step in plan.steps:
            layer, ins, outs = step[0], step[1], step[2]
            hit = any(req[i] for i in ins) or sink.wants(layer) or \
                any(sink.wants(l) for l in layer._sublayers_deep())
            for o in outs:
                req[o] = hit
            run.append(hit)
        return req, run

    def _backward(self, ctx, grad_out, sink, need, pre_activation=None):
        if self._plan is None:
            return Layer._backward(self, ctx, grad_out, sink, need)
        plan = self._plan
        values, ctxs = ctx[0], ctx[1]
        needs = list(need) if isinstance(need, (list, tuple)) else [need]
        req, run = self._requires(sink, needs)
        grads = [None] * plan.nslots
        gouts = [grad_out] if self._single_out else list(grad_out)
        pre = None
        for k, (slot, g) in enumerate(zip(plan.output_slots, gouts)):
            if g is None:
                continue
            if pre_activation is not None and pre_activation[k]:
                pre = {slot} if pre is None else pre | {slot}
            grads[slot] = g if grads[slot] is None else engine._sum_grads(self.backend,
                                                                          grads[slot], g)
        steps = plan.steps
        forced = {k for k in self._loss_steps()
                  if engine.has_added_seeds(steps[k][0]._added_losses(ctxs[k]))} \
            if len(engine._added_seeds[-1]) else ()
        for k in range(len(steps) - 1, -1, -1):
            if not run[k] and k not in forced:
                continue
            layer, ins, outs, _, listed, listed_out, kw_spec = steps[k]
            if not (listed or listed_out or kw_spec):           # one in, one out
                o, i = outs[0], ins[0]
                g = grads[o]
                if g is None:
                    if k not in forced:
                        continue
                    v = values[o]
                    g = layer.backend.zeros(tuple(v.shape), v.dtype)
                n = req[i]
                if pre is not None and o in pre:
                    gin = layer._backward(ctxs[k], g, sink, n, pre_activation=True)
                else:
                    gin = layer._backward(ctxs[k], g, sink, n)
                if n and gin is not None:
                    grads[i] = gin if grads[i] is None else engine._sum_grads(layer.backend,
                                                                              grads[i], gin)
                continue
            go = [grads[o] for o in outs]
            if all(g is None for g in go) and k not in forced:
                continue
            for j, o in enumerate(outs):
                if go[j] is None:
                    v = values[o]
                    go[j] = layer.backend.zeros(tuple(v.shape), v.dtype)
            need_in = [req[i] for i in ins]
            g_arg = go if listed_out else go[0]
            flat = listed or kw_spec is not None
            if not listed_out and pre is not None and outs[0] in pre:
                gin = layer._backward(ctxs[k], g_arg, sink, need_in[0], pre_activation=True)
            else:
                gin = layer._backward(ctxs[k], g_arg, sink, need_in if flat else need_in[0])
            gins = gin if flat else [gin]
            for i, g, n in zip(ins, gins, need_in):
                if n and g is not None:
                    grads[i] = g if grads[i] is None else engine._sum_grads(layer.backend,
                                                                            grads[i], g)
        res = []
        for slot, n in zip(plan.input_slots, needs):
            g = grads[slot] if n else None
            if n and g is None:
                v = values[slot]
                g = self.backend.zeros(tuple(v.shape), v.dtype)
            res.append(g)
        return res if self.multi_input else res[0]

    def call(self, inputs, training=False):
        """Run the model on ``inputs`` (functional models run their graph); subclasses define
        their own forward pass here."""
        if self._plan is None:
            raise NotImplementedError(f"{type(self).__name__} must define call(self, inputs, "
                                      f"training=False)")
        return self._call_eager(inputs, training=training)

    # -- compile ----------------------------------------------------------------------------------
    def compile(self, optimizer="adam", loss=None, metrics=None, loss_weights=None):
        """Choose the optimizer, the loss(es) and the metrics (names or instances). With several
        outputs, ``loss``, ``metrics`` and ``loss_weights`` may be a list (in output order) or a
        dict by output name; one loss (or a flat list of metrics) applies to every output."""
        if loss is None and not self._custom_train_step():
            raise ValueError("compile: a loss is required, e.g. loss='sparse_categorical_crossentropy'")
        self.optimizer = optimizers_module.get(optimizer)
        self.optimizer.backend = self.backend
        if loss is None:                # train_step computes its own loss
            self._loss_spec, self._compiled_for = None, None
            return
        self._loss_spec, self._metric_spec, self._weight_spec = loss, metrics, loss_weights
        self._compiled_for = None
        if self.built:
            self._compile_outputs()
        else:
            self.loss = losses_module.get(loss) if not isinstance(loss, (list, dict)) else None
            self.metrics = [metrics_module.get(m, self.loss) for m in (metrics or [])] \
                if isinstance(metrics, (list, tuple)) else []

    def _output_count(self):
        if self._plan is not None:
            return len(self._plan.output_slots)
        return getattr(self, "_n_outputs", 1)

    def _out_names(self):
        if self._plan is not None:
            return self.output_names
        n = self._output_count()
        return ["output"] if n == 1 else [f"output_{i + 1}" for i in range(n)]

    def _compile_outputs(self):
        """Resolve the compile arguments per output (once the outputs are known)."""
        names = self._out_names()
        n = len(names)
        spec = self._loss_spec
        if isinstance(spec, dict):
            losses = _named(spec, names, "compile loss")
        elif isinstance(spec, (list, tuple)):
            if len(spec) != n:
                raise ValueError(f"compile: {len(spec)} losses for {n} outputs {names}")
            losses = list(spec)
        else:
            losses = [spec] + [losses_module.get(spec) if isinstance(spec, str) else spec
                               for _ in range(n - 1)]
        self.output_losses = [None if l is None else losses_module.get(l) for l in losses]
        if all(l is None for l in self.output_losses):
            raise ValueError("compile: no output has a loss")
        w = self._weight_spec
        if w is None:
            weights = [1.0] * n
        elif isinstance(w, (list, tuple)):
            if len(w) != n:
                raise ValueError(f"compile: {len(w)} loss_weights for {n} outputs {names}")
            weights = list(w)
        else:
            weights = _named(w, names, "compile loss_weights", broadcast=True)
            weights = [1.0 if v is None else v for v in weights]
            for v in weights:
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) \
                        or v < 0:
                    raise ValueError(f"compile: loss_weights must be finite numbers >= 0, got {w!r}")
        self.loss_weights = [float(v) for v in weights]
        m = self._metric_spec
        if m is None:
            per = [[] for _ in names]
        elif isinstance(m, dict):
            per = [functional.flatten(v) if v is not None else [] for v in
                   _named(m, names, "compile metrics")]
        elif isinstance(m, (list, tuple)):
            if n > 1 and m and all(isinstance(v, (list, tuple)) for v in m):
                if len(m) != n:
                    raise ValueError(f"compile: {len(m)} metric lists for {n} outputs")
                per = [list(v) for v in m]
            else:
                per = [list(m) for _ in names]
        else:
            raise TypeError(f"compile: metrics must be a list, got {type(m).__name__}")
        self.output_metrics = []
        for name, loss, ms in zip(names, self.output_losses, per):
            built = []
            for spec_m in ms:
                metric = metrics_module.get(spec_m, loss)
                if n > 1 and isinstance(spec_m, str):
                    metric = metrics_module.get(spec_m, loss)
                    metric.name = f"{name}_{metric.name}"
                built.append(metric)
            self.output_metrics.append(built)
        self.loss = self.output_losses[0] if n == 1 else self.output_losses
        self.metrics = [m for ms in self.output_metrics for m in ms]
        self._compiled_for = n

    def _require_compiled(self, what):
        if self.optimizer is None:
            raise RuntimeError(f"{type(self).__name__}.{what}: call compile(optimizer=..., "
                               f"loss=...) first")

    def _ensure_compiled_outputs(self):
        if getattr(self, "_compiled_for", None) != self._output_count():
            self._compile_outputs()

    # -- data -------------------------------------------------------------------------------------
    def _info(self):
        """What a training step needs that changes only with the model's structure or its
        compile arguments, computed once: input specs, output names and shapes, the first
        output with a loss, the trainable weights, the fused outputs, the regularized layers."""
        losses = self.__dict__.get("output_losses")
        key = (engine.structure_version(), id(losses), self.__dict__.get("_n_outputs"),
               self.dtype)
        hit = self.__dict__.get("_info_cache")
        if hit is not None and hit[0] == key:
            return hit[1]
        plan = self._plan
        info = _Info()
        if plan is not None:
            info.specs = [(n, tuple(t.shape[1:]), t.dtype) for n, t in zip(self.input_names,
                                                                          plan.inputs)]
            info.out_shapes = [tuple(t.shape[1:]) for t in plan.outputs]
        else:
            info.specs = [("x", None, self.dtype)]
            info.out_shapes = self.__dict__.get("_out_shapes")
        info.names = self._out_names()
        info.first = None if losses is None else \
            next((k for k, l in enumerate(losses) if l is not None), None)
        info.trainable = [v for l in self._own_layers() for v in l._local_weights("trainable")] \
            if self._trainable else []
        info.fusion = self._fusion_of() if losses is not None else None
        info.regularized = [l for l in self._own_layers()
                            if getattr(l, "kernel_regularizer", None) is not None]
        info.requires = {}
        info.has_buffers = any(l.buffers for l in self._own_layers())
        self._info_cache = (key, info)
        return info

    def _input_specs(self):
        """(name, per-sample shape or None, dtype) of each input."""
        return self._info().specs

    def _check_x(self, x, name="x", info=None):
        specs = (info or self._info()).specs
        xs = [x] if len(specs) == 1 and isinstance(x, np.ndarray) else \
            _named(x, [s[0] for s in specs], name, "input")
        out = []
        for (iname, shape, dtype), xi in zip(specs, xs):
            label = name if len(specs) == 1 else f"{name}[{iname!r}]"
            if xi is None:
                raise ValueError(f"{label}: missing input {iname!r}")
            if dtype is not None and dtype.kind == "O":             # texts
                arr = np.asarray(xi, dtype=object)
                if arr.ndim == len(shape) and arr.ndim < 2 and shape in ((), (1,)) and \
                        not (arr.ndim == 1 and shape == ()):
                    arr = arr.reshape(-1)
                if arr.ndim not in (1, 2) or (arr.ndim == 2 and arr.shape[1] != 1) or \
                        not len(arr):
                    raise ValueError(f"{label}: expected a batch of texts of shape (batch,) or "
                                     f"(batch, 1), got shape {arr.shape}")
                out.append(arr)
                continue
            arr = xi if type(xi) is np.ndarray and xi.ndim and len(xi) and \
                xi.dtype.kind in "fiub" else _as_host_array(xi, label)
            if shape is not None and shape != arr.shape[1:] and \
                    not shapes_match(shape, arr.shape[1:]):
                if arr.ndim == len(shape) and shapes_match(shape, arr.shape):
                    raise ValueError(f"{label}: expected samples of shape {shape} (the model's "
                                     f"input shape) with a batch axis in front, got one sample "
                                     f"of shape {arr.shape}: add the batch axis (x[None])")
                raise ValueError(f"{label}: expected samples of shape {shape} (the model's "
                                 f"input shape), got an array of shape {arr.shape}")
            if arr.dtype.kind == "f" or (dtype is not None and dtype.kind == "f"):
                if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
                    bad = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
                    raise ValueError(f"{label}: contains NaN or Inf (first at index {bad})")
                if dtype is not None and dtype.kind == "f" and arr.dtype != dtype:
                    with np.errstate(over="ignore"):
                        cast = arr.astype(dtype)
                    _refuse_overflow(arr, cast, label)
                    arr = cast
            elif dtype is not None and dtype.kind in "iu":
                arr = arr.astype(dtype, copy=False)
            out.append(arr)
        n = len(out[0])
        for a in out[1:]:
            if len(a) != n:
                raise ValueError(f"{name}: inputs have different numbers of samples: "
                                 f"{[len(v) for v in out]}")
        return out

    def _check_y(self, y, n, out_shapes, info=None):
        names = (info or self._info()).names
        ys = [y] if len(names) == 1 and isinstance(y, np.ndarray) else _named(y, names, "y")
        res = []
        for k, (oname, loss, yk) in enumerate(zip(names, self.output_losses, ys)):
            if loss is None:
                res.append(None)
                continue
            label = "y" if len(names) == 1 else f"y[{oname!r}]"
            if yk is None:
                raise ValueError(f"{label}: missing targets for output {oname!r}")
            arr = yk if type(yk) is np.ndarray and yk.ndim and len(yk) and \
                yk.dtype.kind in "fiub" else _as_host_array(yk, label)
            if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
                bad = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
                raise ValueError(f"{label}: contains NaN or Inf (first at index {bad})")
            if len(arr) != n:
                raise ValueError(f"x and {label} have different numbers of samples: {n} and "
                                 f"{len(arr)}")
            shape = out_shapes[k] if out_shapes is not None else None
            with np.errstate(over="ignore"):
                t = loss.prepare_targets(arr, shape if shape is not None else arr.shape[1:],
                                         self.dtype)
            if arr.dtype.kind == "f" and t.dtype != arr.dtype and t.size == arr.size:
                _refuse_overflow(arr.reshape(t.shape), t, label)
            res.append(t)
        return res

    def _output_shapes(self):
        return self._info().out_shapes

    def _prepare(self, x, y, where):
        info = self._info()
        xs = self._check_x(x, "x", info)
        if self._plan is None:
            self._ensure_built_on(xs)
            if self._plan is not None:      # a Sequential built from x: check x as its input
                xs = self._check_x(x, "x", self._info())
        if self.__dict__.get("_compiled_for") != self._output_count():
            self._compile_outputs()
            info = self._info()
        elif self._plan is None:
            info = self._info()
        ys = self._check_y(y, len(xs[0]), info.out_shapes, info)
        return xs, ys

    def _ensure_built_on(self, xs):
        """A subclassed model learns its outputs from one call on the first sample."""
        if self._plan is not None and getattr(self, "_n_outputs", None) is not None:
            return
        if self._plan is None and getattr(self, "_n_outputs", None) is None:
            if not self.built and self._defines_build():
                self._build_own([(a.shape[1:], a.dtype) for a in xs])
            be = self.backend
            sample = [be.asarray(a[:1]) for a in xs] if self._plan is None else \
                self._device_batch([a[:1] for a in xs])     # cast as the built graph's inputs
            with engine.stop_recording():
                out, _ = self._forward(sample if len(sample) > 1 else sample[0], False)
            outs = functional.flatten(out)
            self._n_outputs = len(outs)
            self._out_shapes = [tuple(int(d) for d in o.shape[1:]) for o in outs]
            self.built = True
        elif self._plan is not None:
            self._n_outputs = len(self._plan.outputs)

    def _subclass_out_shapes(self):
        return getattr(self, "_out_shapes", None)

    # -- loss -------------------------------------------------------------------------------------
    def _fusion(self):
        """Per output: True when its producing layer's activation is the one its loss absorbs
        (softmax + crossentropy, sigmoid + binary crossentropy) and nothing else reads it: the
        loss then reads the logits and its gradient skips the activation."""
        fusion = self._info().fusion
        return fusion if fusion is not None else [False] * self._output_count()

    def _fusion_of(self):
        n = self._output_count()
        if self._plan is None or not hasattr(self, "output_losses"):
            return [False] * n
        plan, res = self._plan, []
        for slot, loss in zip(plan.output_slots, self.output_losses):
            k = plan.producer.get(slot)
            ok = False
            if loss is not None and k is not None and plan.readers[slot] == 0 and \
                    plan.output_slots.count(slot) == 1:
                layer = plan.steps[k][0]
                act = getattr(layer, "activation", None)
                ok = (not getattr(loss, "from_logits", False) and loss.fuses_with is not None
                      and act == loss.fuses_with and hasattr(layer, "_logits")
                      and not plan.steps[k][5])
            res.append(ok)
        return res

    def _fused(self):
        """True when the (single) output's activation fuses with its loss."""
        self._ensure_compiled_outputs()
        return self._fusion()[0]

    def _losses(self, ys, outs, ctx, wb, gradients, info=None):
        """(list of (1,) weighted loss arrays, per-output gradient arrays, pre-activation flags,
        list of (1,) unweighted loss arrays): one loss array per output that has a loss; the
        unweighted ones are what ``<output>_loss`` reports (a zero loss weight included)."""
        be = self.backend
        fusion = (info or self._info()).fusion
        masks = ctx[2] if self._plan is not None and len(ctx) > 2 else None
        if len(fusion) == 1 and fusion[0] and self.loss_weights[0] == 1.0 and masks is None:
            plan, loss = self._plan, self.output_losses[0]                   # the fast path
            step = plan.producer[plan.output_slots[0]]
            logits = plan.steps[step][0]._logits(ctx[1][step])
            value, grad = loss.value_and_grad(be, ys[0], logits, wb, gradients, logits=True)
            return [value], [grad], fusion, [value]
        values, grads, raw = [], [], []
        for k, (loss, weight) in enumerate(zip(self.output_losses, self.loss_weights)):
            if loss is None:
                grads.append(None)
                continue
            yb = ys[k]
            mask = None if masks is None else masks[self._plan.output_slots[k]]
            pred, logits = outs[k], False
            if fusion[k]:
                step = self._plan.producer[self._plan.output_slots[k]]
                pred, logits = self._plan.steps[step][0]._logits(ctx[1][step]), True
            if mask is not None:
                value, g = loss.value_and_grad_masked(be, yb, pred, wb, mask, gradients,
                                                      logits=logits)
            else:
                value, g = loss.value_and_grad(be, yb, pred, wb, gradients, logits=logits)
            raw.append(value)
            if weight != 1.0:
                weighted = be.empty(tuple(value.shape), value.dtype)
                be.scale(value, weight, weighted)
                value = weighted
                if g is not None:
                    be.scale(be.kernel_view(g, (g.size,)), weight, be.kernel_view(g, (g.size,)))
            values.append(value)
            grads.append(g)
        return values, grads, fusion, raw

    def _regularized(self):
        return self._info().regularized

    def _regularize(self, gradients, info=None):
        """Penalties of the layers' kernel regularizers (backend (1,) arrays); with
        ``gradients`` their gradients are added to the layers' kernel gradients."""
        penalties = []
        for layer in (info or self._info()).regularized:
            reg = layer.kernel_regularizer
            if reg is not None:
                penalties.append(reg.penalty(layer.backend, layer.params["kernel"]))
                if gradients and layer.trainable:
                    reg.add_gradient(layer.backend, layer.params["kernel"], layer.grads["kernel"])
        return penalties

    def _value(self, losses):
        """The reported loss: the data terms plus every regularization penalty, as a float."""
        values = self._host_values(losses)
        return values[0] if len(values) == 1 else float(sum(values))

    # -- one step ---------------------------------------------------------------------------------
    def _outputs_list(self, out):
        if self._output_count() == 1:
            return [out]
        return list(out)

    def _loss_and_backward(self, xbs, ybs, wb, info=None):
        """Forward, losses, backward into the layers' gradient buffers; returns (losses,
        outputs, each loss-carrying output's unweighted loss)."""
        info = info or self._info()
        single = len(xbs) == 1
        engine._training.append(True)
        try:
            out, ctx = self._forward(xbs[0] if single else xbs, True)
        finally:
            engine._training.pop()
        outs = [out] if len(info.names) == 1 else list(out)
        values, grads, fusion, raw = self._losses(ybs, outs, ctx, wb, True, info)
        self._last_masks = None if self._plan is None or ctx[2] is None else \
            self._output_masks(ctx)
        added = self._added_losses(ctx) if self._may_add_losses() else ()
        sink = engine.LayerSink()
        g = grads[0] if len(grads) == 1 else grads
        need = False if single else [False] * len(xbs)
        be = self.backend
        with engine.added_loss_seeds({id(t): be.full(t.shape, 1.0, t.dtype) for t in added}):
            if self._plan is not None:
                self._backward(ctx, g, sink, need, pre_activation=fusion)
            else:
                self._backward(ctx, g, sink, need)
        sink.finish(info.trainable)
        values = values + [t.value for t in added]
        if info.regularized:
            values = values + self._regularize(True, info)
        return values, outs, raw

    def _step(self, xbs, ybs, wb=None, info=None, per_output=False):
        """One optimizer step; returns (loss, outputs, per-output losses). The per-output
        losses (the unweighted loss of each loss-carrying output, before the update, as floats)
        are read back only with ``per_output``, else None; with a DistributedOptimizer they are
        global, reduced in the same call as the loss. A non-finite loss leaves the weights,
        buffers and optimizer state as they were before the step (training then stops)."""
        info = info or self._info()
        opt = self.optimizer
        if opt.backend is not self.backend:
            opt.backend = self.backend
        variables = info.trainable
        saved = [(b, np.array(l.backend.to_numpy(b), copy=True)) for l, _, b in
                 self._buffer_items()] if info.has_buffers else None
        reduce_loss = getattr(opt, "reduce_loss", None)
        if getattr(opt, "needs_closure", False):     # L-BFGS re-evaluates the batch
            before = self._get_params(), opt.get_state()
            per = []

            def closure():
                losses, _, raw = self._loss_and_backward(xbs, ybs, wb)
                if per_output and not per:          # the starting point's, like the loss
                    per.extend(self._host_values(raw))
                    if reduce_loss is not None:
                        per[:] = reduce_loss(per)
                return self._value(losses)
            value = opt.step_variables(variables, closure)
            if not np.isfinite(value) or not all(np.all(np.isfinite(w))
                                                 for w in self._get_params()):
                self._set_params(before[0], "fit")
                opt.set_state(before[1])
                self._restore(saved)
            outs = self._outputs_list(self._forward(xbs if len(xbs) > 1 else xbs[0], False)[0])
            return value, outs, per if per_output else None
        losses, outs, raw = self._loss_and_backward(xbs, ybs, wb, info)
        value = self._value(losses)
        per = self._host_values(raw) if per_output else None
        if reduce_loss is not None:     # a DistributedOptimizer: every rank sees the global loss
            if per is None:
                value = reduce_loss(value)
            else:
                value, *per = reduce_loss([value] + per)
        if value - value != 0.0:                     # NaN or Inf: no update from this step
            self._restore(saved)
            return value, outs, per
        opt.step_variables(variables)
        return value, outs, per

    def _host_values(self, arrays):
        """(1,) backend arrays as a list of floats."""
        return [float(self.backend.to_numpy(a).reshape(-1)[0]) for a in arrays]

    def _restore(self, saved):
        for b, host in saved or ():
            self.backend.copy_(b, host)

    def _device_batch(self, xs, idx=None, info=None):
        be = self.backend
        specs = (info or self._info()).specs
        out = []
        for (_, _, dtype), a in zip(specs, xs):
            part = a if idx is None else a[idx]
            if part.dtype.kind == "O":          # texts stay on the host (TextVectorization)
                out.append(part)
                continue
            out.append(be.asarray(part, dtype=dtype if dtype is not None and
                                  part.dtype.kind == "f" else None))
        return out

    def _device_targets(self, ys, idx=None):
        be = self.backend
        return [None if y is None else be.asarray(y if idx is None else y[idx]) for y in ys]

    def train_step(self, x, y, sample_weight=None):
        """One optimizer step on one batch; returns the batch's loss."""
        return self._train_batch(x, y, sample_weight, None, "train_step")

    def _train_batch(self, x, y, sample_weight, class_weight, where, logs=False):
        """One optimizer step on the batch ``(x, y)``: its loss, or with ``logs`` the dict
        ``evaluate`` would report for that batch (taken before the update, metrics of this
        batch alone). The weights trained are those trainable now (Keras 3 reads
        ``trainable`` at each step, not at compile)."""
        self._require_compiled(where)
        self._follow_layers()
        per_keys = self._per_output_keys() if logs else []
        loss, outs, per, ys = self._batch_step(x, y, sample_weight, class_weight, where,
                                               bool(per_keys), 4)
        if not logs:
            return loss
        result = {"loss": loss, **dict(zip(per_keys, per or ()))}
        if self.metrics:
            for m in self.metrics:
                m.reset()
            self._update_metrics(ys, outs, getattr(self, "_last_masks", None))
            result.update({m.name: m.result() for m in self.metrics})
        return result

    def _batch_step(self, x, y, sample_weight, class_weight, where, per_output, stacklevel):
        """One optimizer step on the batch ``(x, y)`` as given: (loss, outputs, per-output
        losses, the checked host targets)."""
        xs, ys = self._prepare(x, y, where)
        self._warn_if_frozen(where, stacklevel)
        info = self._info()
        w = self._sample_weights(ys, sample_weight, class_weight, where, info)
        wb = None if w is None else self.backend.asarray(w, self.dtype)
        loss, outs, per = self._step(self._device_batch(xs, None, info), self._device_targets(ys),
                                     wb, info, per_output=per_output)
        return loss, outs, per, ys

    def _warn_if_frozen(self, where, stacklevel):
        """Keras 3's warning for a step with nothing to train (a GAN's discriminator left
        frozen after building the combined model trains silently no more)."""
        if not self._info().trainable:
            warnings.warn(f"{where}: {self!r} has no trainable weights (trainable=False, or "
                          f"every layer frozen), so its weights stay unchanged; trainable is "
                          f"read at each step (Keras 3): set it back to True to train this "
                          f"model", UserWarning, stacklevel=stacklevel + 1)

    def _per_output_keys(self):
        """``<output>_loss`` of each loss-carrying output, as ``fit`` and ``evaluate`` report
        them (only for several outputs)."""
        names = self._out_names()
        return [f"{names[k]}_loss" for k, l in enumerate(self.output_losses)
                if l is not None] if len(names) > 1 else []

    def train_on_batch(self, x, y=None, sample_weight=None, class_weight=None,
                       return_dict=False):
        """One optimizer step on exactly this batch (Keras), e.g. a GAN's alternating updates.
        Returns the loss (a float) for a model with one output and no metrics, else the list
        [loss, *per-output losses, *metrics] in ``evaluate``'s order, or that dict with
        ``return_dict``; the values are those of the forward pass before the update, the
        metrics of this batch alone."""
        validation.FLAG(return_dict, "return_dict", "train_on_batch")     # before the step
        if self._custom_train_step():       # Keras 3: the subclass's train_step(data)
            if class_weight is not None:
                raise ValueError(f"train_on_batch: {type(self).__name__} overrides "
                                 f"train_step(data), which takes no class_weight (pass "
                                 f"sample_weight)")
            self._require_compiled("train_on_batch")
            self._follow_layers()
            data, _ = _step_data(x, y, sample_weight, "train_on_batch")
            return _keras_result(self._run_step("train_step", data), return_dict,
                                 "train_on_batch")
        return _keras_result(self._train_batch(x, y, sample_weight, class_weight,
                                               "train_on_batch", logs=True), return_dict,
                             "train_on_batch")

    def test_on_batch(self, x, y=None, sample_weight=None, return_dict=False):
        """Loss and metrics of exactly this batch, in inference mode (Keras): what
        ``evaluate(x, y, batch_size=len(x), return_dict=return_dict)`` gives; a subclass's
        ``test_step(self, data)`` gets the batch (metrics not reset, as Keras 3)."""
        self._require_compiled("test_on_batch")
        self._follow_layers()
        validation.FLAG(return_dict, "return_dict", "test_on_batch")
        if self._custom_test_step():
            data, _ = _step_data(x, y, sample_weight, "test_on_batch")
            return _keras_result(self._run_step("test_step", data), return_dict,
                                 "test_on_batch")
        self._require_loss("test_on_batch")
        xs, ys = self._prepare(x, y, "test_on_batch")
        weights = self._sample_weights(ys, sample_weight, None, "test_on_batch")
        return _keras_result(self._evaluate(xs, ys, len(xs[0]), weights), return_dict,
                             "test_on_batch")

    def predict_on_batch(self, x):
        """Model outputs for exactly this batch (one forward pass), as ``predict`` gives them."""
        self._follow_layers()
        xs = self._check_x(x)
        self._ensure_built_on(xs)
        return self._predict(xs, len(xs[0]))

    def _sample_weights(self, ys, sample_weight, class_weight, where, info=None):
        """Per-sample weights (float64, (N,)) from ``sample_weight``, ``class_weight`` and the
        loss's own class weights, or None when every weight is 1."""
        info = info or self._info()
        first = info.first
        y, loss = ys[first], self.output_losses[first]
        w = None
        if sample_weight is not None:
            w = validation.sample_weights(where, sample_weight, len(y))
        if class_weight is not None:
            if len(info.names) > 1:
                raise ValueError(f"{where}: class_weight is only supported for models with a "
                                 f"single output, got a model with {len(info.names)} "
                                 f"outputs ({', '.join(info.names)})")
            if not isinstance(class_weight, dict):
                raise TypeError(f"{where}: class_weight must be a dict {{class index: weight}}, "
                                f"got {type(class_weight).__name__}")
            shapes = self._output_shapes()
            classes = None if shapes is None or not shapes[first] else shapes[first][-1]
            if classes == 1:
                classes = 2
            table = losses_module.ClassWeights(class_weight, "sparse", where)
            for k in table.class_weight:
                if classes is not None and k >= classes:
                    raise ValueError(f"{where}: class_weight has class {k}, but the model "
                                     f"outputs {classes} classes (0..{classes - 1})")
            cw = table.sample_weights(self._class_indices(y))
            w = cw if w is None else w * cw
        lw = loss.sample_weights(y)
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

    def _update_metrics(self, ys_host, outs, masks=None):
        for k, ms in enumerate(self.output_metrics):
            if ms and ys_host[k] is not None:
                pred = self.backend.to_numpy(outs[k])
                y = ys_host[k]
                mask = None if masks is None else masks[k]
                if mask is not None:            # masked positions of per-position outputs
                    keep = np.asarray(self.backend.to_numpy(mask)) > 0
                    if pred.ndim == keep.ndim + 1 and pred.shape[:keep.ndim] == keep.shape:
                        pred, y = pred[keep], np.asarray(y)[keep]
                for m in ms:
                    m.update(y, pred)

    # -- fit, evaluate, predict -----------------------------------------------------------------
    def fit(self, x, y=None, epochs=1, batch_size=32, validation_split=0.0, validation_data=None,
            shuffle=True, seed=None, verbose=1, callbacks=None, initial_epoch=0,
            class_weight=None, sample_weight=None, distributed=False, steps_per_epoch=None,
            validation_steps=None):
        """Train for ``epochs`` epochs; returns a ``History`` whose ``history`` dict holds the
        per-epoch ``loss``, metrics and their ``val_`` counterparts.

        ``x``/``y``: arrays, or lists / dicts (by input / output name) for several inputs or
        outputs. ``sample_weight`` (one weight per sample) and ``class_weight`` ({class index:
        weight}) scale each sample's loss, Keras-style: the batch loss is sum(w * loss) / batch
        size.

        ``x`` may instead give the data as batches (Keras' generators and ``PyDataset``, a
        PyTorch ``DataLoader``): a generator or iterator, an iterable of batches, or an object
        with ``__len__`` and ``__getitem__(i)`` (batch i; its ``on_epoch_end()`` runs after each
        epoch), each batch ``(x, y)`` or ``(x, y, sample_weight)``. An epoch is one pass over it,
        or ``steps_per_epoch`` batches (then a generator continues where it stopped); batches
        come in the source's order (``shuffle``, ``batch_size``, ``y``, ``sample_weight`` and
        ``validation_split`` do not apply). ``validation_data`` may be such a source too
        (``validation_steps`` batches of it, else all).

        ``distributed=True`` trains data-parallel over MPI (``numbanet.distributed``, run under
        ``mpirun``): ``batch_size`` is the global batch, every rank shuffles alike and takes its
        slice of each global batch, gradients are averaged, the logs are global and only rank 0
        prints and writes checkpoint and CSV files.
        """
        self._require_compiled("fit")
        self._follow_layers()
        epochs = check_positive_int(epochs, "epochs", "fit", allow_zero=True)
        initial_epoch = check_positive_int(initial_epoch, "initial_epoch", "fit", allow_zero=True)
        batch_size = check_positive_int(batch_size, "batch_size", "fit")
        if verbose not in (0, 1, 2, "auto"):
            raise ValueError(f"fit: verbose must be 0, 1, 2 or 'auto', got {verbose!r}")
        if _batch_source(x):
            given = [k for k, v in (("y", y is not None), ("sample_weight", sample_weight is not None),
                                    ("validation_split", validation_split),
                                    ("distributed", distributed)) if v]
            if given:
                raise ValueError(f"fit: x gives the data as batches of (x, y) or (x, y, "
                                 f"sample_weight); it takes no {', '.join(given)}")
            return self._fit_batches(_Batches(x, steps_per_epoch, "fit"), epochs, validation_data,
                                     validation_steps, class_weight, verbose, callbacks,
                                     initial_epoch)
        if steps_per_epoch is not None or validation_steps is not None:
            raise ValueError("fit: steps_per_epoch and validation_steps are for data given as "
                             "batches (a generator, a DataLoader...); with arrays, batch_size "
                             "sets the steps")
        if isinstance(validation_split, bool) or not isinstance(validation_split, (int, float)) \
                or not 0.0 <= validation_split < 1.0:
            raise ValueError(f"fit: validation_split must be a float in [0, 1), got "
                             f"{validation_split!r}")
        own_test = self._custom_test_step() and (validation_data is not None or
                                                 validation_split > 0)
        if self._custom_train_step() or own_test:
            unsupported = [k for k, v in (("class_weight", self._custom_train_step() and
                                           class_weight is not None),
                                          ("distributed", distributed)) if v]
            if unsupported:
                raise ValueError(f"fit: {type(self).__name__} overrides "
                                 f"{'train_step' if self._custom_train_step() else 'test_step'}"
                                 f"(data); fit then takes no {', '.join(unsupported)}")
        if validation_data is not None:
            _validation_tuple(validation_data, own_test)
        if self._custom_train_step():
            if (validation_data is not None or validation_split > 0) and not own_test:
                self._require_loss("fit validation")
            return self._fit_train_step(x, y, sample_weight, epochs, batch_size, shuffle, seed,
                                        verbose, callbacks, initial_epoch, validation_split,
                                        validation_data)
        xs, ys = self._prepare(x, y, "fit")
        self._warn_if_frozen("fit", 2)
        n = len(xs[0])
        if getattr(self.optimizer, "needs_closure", False) and \
                batch_size < n * (1.0 - validation_split):
            warnings.warn(f"fit: {type(self.optimizer).__name__} is a full-batch method, but "
                          f"batch_size={batch_size} splits the {n} samples into mini-batches; "
                          f"use fit(..., batch_size=len(x))", RuntimeWarning, stacklevel=2)
        if sample_weight is not None:
            sample_weight = validation.sample_weights("fit", sample_weight, n)
        val = None                      # (x, y, sample weights or None) of the validation data
        if validation_data is None and validation_split > 0:
            n_val = int(n * validation_split)
            if n_val < 1 or n_val >= n:
                raise ValueError(f"fit: validation_split={validation_split} leaves "
                                 f"{n - n_val} training and {n_val} validation samples of {n}")
            val = ([a[-n_val:] for a in xs], [None if v is None else v[-n_val:] for v in ys],
                   None if sample_weight is None else sample_weight[-n_val:])
            if own_test:                # test_step gets the rows of x and y as given
                own_test = _take((x, y, sample_weight), slice(n - n_val, n))
            xs, ys = [a[:-n_val] for a in xs], [None if v is None else v[:-n_val] for v in ys]
            n -= n_val
            if sample_weight is not None:
                sample_weight = sample_weight[:-n_val]
        first = next(k for k, l in enumerate(self.output_losses) if l is not None)
        self.output_losses[first].adapt(ys[first])
        weights = self._sample_weights(ys, sample_weight, class_weight, "fit")
        if validation_data is not None and own_test:
            own_test = _validation_tuple(validation_data, True)
            _step_data(*own_test, "fit validation_data")   # its sizes, before training
        elif validation_data is not None:
            vx, vy = self._prepare(*validation_data[:2], "fit validation_data")
            val = (vx, vy, validation_data[2] if len(validation_data) == 3 else None)
        if val is not None and not own_test:
            validation_data = (val[0], val[1],
                               self._sample_weights(val[1], val[2], None, "fit validation_data"))
        sync = distributed_module.FitSync.start(self, distributed)      # None: one process
        rng = sync.shuffle_rng(seed) if sync is not None else \
            np.random.default_rng(seed) if seed is not None else _random.spawn()
        if seed is not None:
            for layer in self._own_layers():
                if getattr(layer, "rng", None) is not None:
                    layer.rng = np.random.default_rng(rng.integers(0, 2**63 - 1))
        cb, history, steps = self._fit_callbacks(callbacks, verbose, epochs, n, batch_size, sync)
        be = self.backend
        # a single-output model reads back nothing more than its loss
        per_keys = self._per_output_keys()
        cb.on_train_begin()
        for epoch in range(initial_epoch, epochs):
            cb.on_epoch_begin(epoch)
            order = rng.permutation(n) if shuffle else np.arange(n)
            for m in self.metrics:
                m.reset()
            total, seen = 0.0, 0
            per_total = np.zeros(len(per_keys))
            for step in range(steps):
                idx = order[step * batch_size:(step + 1) * batch_size]
                part = idx if sync is None else sync.shard(idx)     # this rank's samples
                cb.on_train_batch_begin(step)
                ys_host = [None if v is None else v[part] for v in ys]
                wb = None if weights is None else be.asarray(weights[part], self.dtype)
                if len(part):
                    with _compile_helper.watch(self, xs, part, ys_host) \
                            if epoch == initial_epoch and step == 0 and sync is None \
                            else contextlib.nullcontext():
                        value, outs, per = self._step(self._device_batch(xs, part),
                                                      self._device_targets(ys_host), wb,
                                                      per_output=bool(per_keys))
                else:               # a last global batch smaller than the number of ranks
                    value, per = sync.empty_step(len(per_keys))
                    outs = None
                total += value * len(idx)
                seen += len(idx)
                logs = {"loss": total / seen}
                if per_keys:
                    per_total += np.asarray(per) * len(idx)
                    logs.update(zip(per_keys, (float(v) / seen for v in per_total)))
                if self.metrics:
                    if outs is not None:
                        self._update_metrics(ys_host, outs, getattr(self, "_last_masks", None))
                    for m in self.metrics:
                        logs[m.name] = m.result()
                logs["batch_loss"] = value
                cb.on_train_batch_end(step, logs)
                if self.stop_training:
                    break
            logs = {"loss": total / max(seen, 1),
                    **{k: float(v) / max(seen, 1) for k, v in zip(per_keys, per_total)},
                    **{m.name: m.result() for m in self.metrics}}
            if sync is not None:
                sync.end_epoch(logs)
            if own_test and not self.stop_reason:
                logs.update({f"val_{k}": v for k, v in
                             self._test_step_logs(*own_test, batch_size, "fit").items()})
            elif validation_data is not None and not self.stop_reason:
                val = self._evaluate(*validation_data[:2], batch_size, validation_data[2]) \
                    if sync is None else sync.evaluate(validation_data, batch_size)
                logs.update({f"val_{k}": v for k, v in val.items()})
            cb.on_epoch_end(epoch, logs)
            if sync is not None:
                sync.agree_stop()
            if self.stop_training:
                break
        cb.on_train_end()
        if sync is not None:
            sync.end()
        return history

    def _fit_callbacks(self, callbacks, verbose, epochs, n, batch_size, sync=None, steps=None):
        """``fit``'s callbacks (the user's, TerminateOnNaN, the progress bar unless ``verbose``
        is 0, then a new History, which becomes ``self.history``) as one CallbackList; returns
        it, the History and the steps per epoch. Resets ``stop_training``."""
        history = callbacks_module.History()
        cbs = list(callbacks or [])
        if not any(isinstance(c, callbacks_module.TerminateOnNaN) for c in cbs):
            cbs.append(callbacks_module.TerminateOnNaN())
        if sync is not None:
            cbs, verbose = sync.begin(cbs, verbose)
        if verbose and not any(isinstance(c, callbacks_module.ProgbarLogger) for c in cbs):
            cbs.append(callbacks_module.ProgbarLogger(1 if verbose == "auto" else verbose))
        if n is not None:
            steps = -(-n // batch_size)
        cb = callbacks_module.CallbackList(cbs + [history], self,
                                           {"epochs": epochs, "steps": steps, "verbose": verbose})
        self.history = history
        self.stop_training, self.stop_reason = False, None
        return cb, history, steps

    def _custom_train_step(self):
        """True when a subclass overrides ``train_step(self, data)`` (Keras 3's custom step)."""
        return type(self).train_step is not Model.train_step

    def _custom_test_step(self):
        """True when a subclass defines Keras 3's ``test_step(self, data)``."""
        return callable(getattr(type(self), "test_step", None))

    def _require_loss(self, where):
        """numbanet's own evaluation needs the loss given to ``compile``."""
        if getattr(self, "_loss_spec", None) is None:
            raise ValueError(f"{where}: {type(self).__name__} was compiled without a loss, so "
                             f"it has nothing to evaluate: define test_step(self, data) or "
                             f"compile(optimizer, loss=...)")

    def _run_step(self, name, data):
        """Keras 3's step: ``self.train_step`` or ``self.test_step`` on one batch (``x``,
        ``(x, y)`` or ``(x, y, sample_weight)``); its dict as floats."""
        with engine.training_scope(name == "train_step"):
            out = getattr(self, name)(data[0] if len(data) == 1 else data)
        if not isinstance(out, dict):
            raise TypeError(f"{type(self).__name__}.{name} must return a dict of metric "
                            f"values, got {type(out).__name__}")
        return {k: float(np.asarray(v)) for k, v in out.items()}

    def _test_step_logs(self, x, y, sample_weight, batch_size, where):
        """Keras 3's ``evaluate`` with a subclass's ``test_step``: ``self.metrics`` reset,
        each batch to ``test_step``, the dict of the last batch returned."""
        data, n = _step_data(x, y, sample_weight, where)
        for m in self.metrics:
            m.reset_state()
        logs = {}
        for start in range(0, n, batch_size):
            logs = self._run_step("test_step", _take(data, slice(start, start + batch_size)))
        return logs

    def _fit_train_step(self, x, y, sample_weight, epochs, batch_size, shuffle, seed, verbose,
                        callbacks, initial_epoch, validation_split=0.0, validation_data=None):
        """``fit`` for a subclass overriding ``train_step(self, data)``, as Keras 3 runs it:
        each batch goes to ``train_step`` as ``x``, ``(x, y)`` or ``(x, y, sample_weight)``
        (arrays, lists or dicts of arrays sliced alike), its returned dict (floats, tensors or
        metric results) is the batch's logs, the last batch's are the epoch's, and
        ``self.metrics`` are reset at the start of each epoch. The validation data (the last
        ``validation_split`` of the samples, or ``validation_data``) is evaluated after each
        epoch as ``evaluate`` does (``test_step`` if defined), logged with ``val_`` prefixes."""
        data, n = _step_data(x, y, sample_weight, "fit")
        val = None
        if validation_data is not None:
            val = _validation_tuple(validation_data, self._custom_test_step())
        elif validation_split > 0:
            n_val = int(n * validation_split)
            if n_val < 1 or n_val >= n:
                raise ValueError(f"fit: validation_split={validation_split} leaves "
                                 f"{n - n_val} training and {n_val} validation samples of {n}")
            val = _take((x, y, sample_weight), slice(n - n_val, n))
            data, n = _take(data, slice(0, n - n_val)), n - n_val
        if val is not None:
            _step_data(*val, "fit validation_data")         # its sizes, before training
        rng = np.random.default_rng(seed) if seed is not None else _random.spawn()
        cb, history, steps = self._fit_callbacks(callbacks, verbose, epochs, n, batch_size)
        cb.on_train_begin()
        for epoch in range(initial_epoch, epochs):
            cb.on_epoch_begin(epoch)
            for m in self.metrics:
                m.reset_state()
            order = rng.permutation(n) if shuffle else np.arange(n)
            logs = {}
            for step in range(steps):
                idx = order[step * batch_size:(step + 1) * batch_size]
                cb.on_train_batch_begin(step)
                logs = self._run_step("train_step", _take(data, idx))
                cb.on_train_batch_end(step, logs)
                if self.stop_training:
                    break
            logs = dict(logs)
            if val is not None and not self.stop_reason:
                logs.update({f"val_{k}": v for k, v in
                             self._evaluate_logs(*val, batch_size, "fit validation_data").items()})
            cb.on_epoch_end(epoch, logs)
            if self.stop_training:
                break
        cb.on_train_end()
        return history

    def _fit_batches(self, batches, epochs, validation_data, validation_steps, class_weight,
                     verbose, callbacks, initial_epoch):
        """``fit`` on data given as batches (``_Batches``): the loss averaged over the samples
        of the epoch, the metrics accumulated over it, as with arrays; a subclass's own
        ``train_step(data)`` gets each batch as given."""
        custom = self._custom_train_step()
        if isinstance(class_weight, str) or (custom and class_weight):
            raise ValueError(f"fit: class_weight={class_weight!r} is not taken with data given "
                             f"as batches" + ("" if custom else " (\"balanced\" needs every "
                                                               "target first); pass a dict"))
        val = None                                  # (x, y, sample_weight) or a _Batches
        if validation_data is not None:
            if _batch_source(validation_data):
                val = _Batches(validation_data, validation_steps, "fit validation_data")
            elif validation_steps is not None:
                raise ValueError("fit: validation_steps is for validation_data given as batches")
            else:
                val = _validation_tuple(validation_data, self._custom_test_step())
            if not self._custom_test_step():
                self._require_loss("fit validation")
        cb, history, _ = self._fit_callbacks(callbacks, verbose, epochs, None, None,
                                             steps=batches.steps)
        per_keys = [] if custom else self._per_output_keys()
        cb.on_train_begin()
        for epoch in range(initial_epoch, epochs):
            cb.on_epoch_begin(epoch)
            for m in self.metrics:
                m.reset()
            total, seen, logs = 0.0, 0, {}
            per_total = np.zeros(len(per_keys))
            for step, batch in enumerate(batches.epoch()):
                cb.on_train_batch_begin(step)
                if custom:
                    logs = self._run_step("train_step", batch)
                    cb.on_train_batch_end(step, logs)
                    if self.stop_training:
                        break
                    continue
                value, outs, per, ys_host = self._batch_step(
                    *(batch + (None,) * (3 - len(batch))), class_weight, "fit",
                    bool(per_keys), 3)
                size = len(ys_host[self._info().first])
                total, seen = total + value * size, seen + size
                if per_keys:
                    per_total += np.asarray(per) * size
                if self.metrics:
                    self._update_metrics(ys_host, outs, getattr(self, "_last_masks", None))
                logs = {"loss": total / seen,
                        **{k: float(v) / seen for k, v in zip(per_keys, per_total)},
                        **{m.name: m.result() for m in self.metrics}, "batch_loss": value}
                cb.on_train_batch_end(step, logs)
                if self.stop_training:
                    break
            if batches.ran_out:
                warnings.warn(f"fit: the training data ran out after {epoch} epoch(s) (a "
                              f"generator that ended); training stopped. Pass "
                              f"steps_per_epoch or a source that can be iterated again",
                              RuntimeWarning, stacklevel=3)
                break
            logs.pop("batch_loss", None)
            if val is not None and not self.stop_reason:
                vx, vy, vw = (val, None, None) if isinstance(val, _Batches) else val
                logs.update({f"val_{k}": v for k, v in self._evaluate_logs(
                    vx, vy, vw, 32, "fit validation_data").items()})
            cb.on_epoch_end(epoch, logs)
            if self.stop_training:
                break
        cb.on_train_end()
        return history

    def _evaluate_batches(self, batches, batch_size):
        """``_evaluate`` over batches of (x, y[, sample_weight]) (each split by ``batch_size``),
        the loss and metrics over all their samples."""
        def chunks():
            for batch in batches:
                x, y = batch[0], batch[1] if len(batch) > 1 else None
                xs, ys = self._prepare(x, y, "evaluate")
                w = self._sample_weights(ys, batch[2] if len(batch) > 2 else None, None,
                                         "evaluate")
                yield from _array_chunks(xs, ys, batch_size, w)
        return self._evaluate_chunks(chunks())

    def _evaluate(self, xs, ys, batch_size, weights=None):
        return self._evaluate_chunks(_array_chunks(xs, ys, batch_size, weights))

    def _evaluate_chunks(self, chunks):
        """Loss and metrics over chunks of (inputs, host targets, host weights or None)."""
        be = self.backend
        metrics = [m for ms in self.output_metrics for m in ms]     # not a metrics property's
        for m in metrics:
            m.reset()
        n = 0
        names = self._out_names()
        totals = np.zeros(len(names))
        total = 0.0
        active = [k for k, l in enumerate(self.output_losses) if l is not None]
        for xs_part, ys_host, w in chunks:
            xb = self._device_batch(xs_part)
            wb = None if w is None else be.asarray(w, self.dtype)
            n += len(xb[0])
            x = xb if len(xb) > 1 else xb[0]
            with engine.training_scope(False):
                out, ctx = self._forward(x, False)
            outs = self._outputs_list(out)
            values, _, _, raw = self._losses(self._device_targets(ys_host), outs, ctx, wb,
                                             False)
            size = len(xb[0])
            if self._may_add_losses():
                total += size * sum(float(be.to_numpy(t.value).reshape(-1)[0])
                                    for t in self._added_losses(ctx))
            for k, v, r in zip(active, values, raw):
                total += float(be.to_numpy(v)[0]) * size
                if len(names) > 1:
                    totals[k] += float(be.to_numpy(r)[0]) * size
            if metrics:
                self._update_metrics(ys_host, outs, self._output_masks(ctx))
        if n == 0:
            raise ValueError("evaluate: the data holds no samples")
        penalty = self._value(self._regularize(gradients=False))
        result = {"loss": total / n + penalty}
        if len(names) > 1:
            for k in active:
                result[f"{names[k]}_loss"] = float(totals[k] / n)
        result.update({m.name: m.result() for m in metrics})
        return result

    def _evaluate_logs(self, x, y, sample_weight, batch_size, where, steps=None):
        """``evaluate``'s dict: a subclass's ``test_step`` on each batch, or numbanet's own
        evaluation with the compiled loss and metrics; ``x`` may be a batch source (or its
        ``_Batches``)."""
        if isinstance(x, _Batches) or _batch_source(x):
            if y is not None or sample_weight is not None:
                raise ValueError(f"{where}: x gives the data as batches of (x, y) or (x, y, "
                                 f"sample_weight); it takes no y or sample_weight")
            batches = (x if isinstance(x, _Batches) else _Batches(x, steps, where)).epoch()
            if not self._custom_test_step():
                self._require_loss(where)
                return self._evaluate_batches(batches, batch_size)
            for m in self.metrics:
                m.reset_state()
            logs = {}
            for batch in batches:
                logs = self._run_step("test_step", batch)
            return logs
        if steps is not None:
            raise ValueError(f"{where}: steps is for data given as batches")
        if self._custom_test_step():
            return self._test_step_logs(x, y, sample_weight, batch_size, where)
        self._require_loss(where)
        xs, ys = self._prepare(x, y, where)
        weights = self._sample_weights(ys, sample_weight, None, where)
        return self._evaluate(xs, ys, batch_size, weights)

    def evaluate(self, x, y=None, batch_size=32, verbose=0, sample_weight=None,
                 return_dict=True, steps=None):
        """Loss and metrics over ``(x, y)`` -> ``{"loss": ..., "accuracy": ...}``; a subclass
        defining Keras 3's ``test_step(self, data)`` gets each batch (``x``, ``(x, y)`` or
        ``(x, y, sample_weight)``) after ``self.metrics`` are reset, and the result is the dict
        of the last batch.

        numbanet returns the dict by default (Keras' default is ``return_dict=False``);
        ``return_dict=False`` gives Keras' values: the loss as a float for a model with one
        output and no metrics, else the list [loss, *per-output losses, *metrics]. ``x`` may
        give the data as batches, as for ``fit`` (``steps`` of them, else all)."""
        self._require_compiled("evaluate")
        self._follow_layers()
        batch_size = check_positive_int(batch_size, "batch_size", "evaluate")
        validation.FLAG(return_dict, "return_dict", "evaluate")
        result = self._evaluate_logs(x, y, sample_weight, batch_size, "evaluate", steps)
        if verbose:
            print(" - ".join(f"{k}: {v:.4f}" for k, v in result.items()))
        return _keras_result(result, return_dict, "evaluate")

    def predict(self, x, batch_size=32, verbose=0, steps=None):
        """Model outputs for ``x`` as a NumPy array (a list of arrays for several outputs),
        in inference mode. ``x`` may give the inputs as batches, as for ``fit`` (each batch
        ``x`` or a tuple whose first item is ``x``; ``steps`` of them, else all)."""
        batch_size = check_positive_int(batch_size, "batch_size", "predict")
        self._follow_layers()
        if _batch_source(x):
            def chunks():
                for (item,) in _Batches(x, steps, "predict", inputs_only=True).epoch():
                    # (x, y...) as a tuple, or as a DataLoader's list for a one-input model
                    if isinstance(item, tuple) or isinstance(item, list) and \
                            len(item) in (2, 3) and (self._plan is None or self._single_in):
                        item = item[0]
                    xs = self._check_x(item)
                    self._ensure_built_on(xs)
                    for start in range(0, len(xs[0]), batch_size):
                        yield [a[start:start + batch_size] for a in xs]
            return self._predict_chunks(chunks())
        if steps is not None:
            raise ValueError("predict: steps is for data given as batches")
        xs = self._check_x(x)
        self._ensure_built_on(xs)
        return self._predict(xs, batch_size)

    def _predict(self, xs, batch_size):
        return self._predict_chunks([a[s:s + batch_size] for a in xs]
                                    for s in range(0, len(xs[0]), batch_size))

    def _predict_chunks(self, chunks):
        parts = None
        for xs_part in chunks:
            xb = self._device_batch(xs_part)
            with engine.training_scope(False), engine.stop_recording():
                out, _ = self._forward(xb if len(xb) > 1 else xb[0], False)
            outs = [np.array(self.backend.to_numpy(o), copy=True)
                    for o in self._outputs_list(out)]
            parts = [[o] for o in outs] if parts is None else [p + [o] for p, o in
                                                               zip(parts, outs)]
        if parts is None:
            raise ValueError("predict: the data holds no samples")
        res = [np.concatenate(p) for p in parts]
        return res[0] if len(res) == 1 else res

    # -- saving ---------------------------------------------------------------------------------
    def get_config(self):
        if self._plan is None:
            raise NotImplementedError(
                f"{type(self).__name__} is a subclassed model: its architecture is Python code "
                f"and cannot be saved as a config; save its weights with save_weights(path) and "
                f"rebuild the model in code before load_weights(path)")
        return graph_config(self)

    @classmethod
    def from_config(cls, config, device=None):
        """A functional model from ``get_config()`` output (new layers, fresh weights)."""
        return functional_from_config(config, device)

    def _compile_config(self):
        if self.optimizer is None:
            return None
        self._ensure_compiled_outputs()
        return {"optimizer": serialize(self.optimizer),
                "losses": [None if l is None else serialize(l) for l in self.output_losses],
                "loss_weights": list(self.loss_weights),
                "metrics": [[serialize(m) for m in ms] for ms in self.output_metrics]}

    def _arrays(self):
        arrays = {f"weights/{i}": w for i, w in enumerate(self._get_params())}
        arrays.update({f"buffers/{i}": layer.backend.to_numpy(b)
                       for i, (layer, _, b) in enumerate(self._buffer_items())})
        return arrays

    def save(self, path):
        """Architecture (JSON), weights and optimizer state in one ``.npz``.

        Written to a temporary file first and moved into place, so a failed save never clobbers
        the previous file.
        """
        config = {"format": FORMAT, "version": FORMAT_VERSION, "model": self.get_config(),
                  "class_name": type(self).__name__}
        arrays = self._arrays()
        comp = self._compile_config()
        if comp is not None:
            config["compile"] = comp
            state = self.optimizer.variable_state(self._optimizer_variables())
            arrays.update({f"optimizer/{k}": np.asarray(v) for k, v in state.items()})
        arrays["config"] = np.array(json.dumps(config))
        _check_savable(arrays)
        atomic_write(path, lambda f: np.savez(f, **arrays))

    def save_weights(self, path):
        """The weights and buffers alone (any model, subclassed included) in one ``.npz``."""
        self._require_built("save_weights")
        arrays = self._arrays()
        arrays["config"] = np.array(json.dumps({"format": FORMAT + "-weights",
                                                "version": FORMAT_VERSION}))
        atomic_write(path, lambda f: np.savez(f, **arrays))

    def load_weights(self, path):
        """Load weights saved by ``save_weights`` (or ``save``) into this model (same
        architecture)."""
        self._require_built("load_weights")
        arrays = _read_npz(path, "load_weights")
        _set_arrays(self, arrays, path, "load_weights")
        return self


def _batch_source(x):
    """True for data given as batches: a generator or iterator, an iterable of batches (a
    PyTorch DataLoader...) or a sequence of batches with ``__len__``/``__getitem__`` (Keras'
    ``PyDataset``); not arrays, lists, tuples, dicts or anything array-like."""
    if x is None or isinstance(x, (np.ndarray, list, tuple, dict, str, bytes,
                                   engine._TensorLike)) \
            or hasattr(x, "__array__") or hasattr(x, "shape"):
        return False
    return hasattr(x, "__iter__") or hasattr(x, "__next__") or \
        (hasattr(x, "__getitem__") and hasattr(x, "__len__"))


class _Batches:
    """The batches of a batch source, one epoch at a time, as tuples (x, y[, sample_weight])
    (``inputs_only``: each item as given, in a 1-tuple)."""

    def __init__(self, source, steps, where, inputs_only=False):
        if steps is not None:
            steps = check_positive_int(steps, "steps" if where != "fit" else "steps_per_epoch",
                                       where)
        self.source, self.where, self.inputs_only = source, where, inputs_only
        self.iterator = source if hasattr(source, "__next__") else None
        self.indexed = self.iterator is None and hasattr(source, "__getitem__") and \
            hasattr(source, "__len__")
        known = len(source) if hasattr(source, "__len__") and self.iterator is None else None
        self.steps = steps if steps is not None else known
        self.limit = steps
        self.ran_out = False

    def epoch(self):
        if self.indexed:
            items = (self.source[i] for i in range(len(self.source)))
        else:
            items = self.iterator if self.iterator is not None else iter(self.source)
        count = 0
        while self.limit is None or count < self.limit:
            try:
                item = next(items)
            except StopIteration:
                break
            count += 1
            yield self._unpack(item, count)
        if count == 0 and self.iterator is not None:
            self.ran_out = True
        if self.indexed and hasattr(self.source, "on_epoch_end"):
            self.source.on_epoch_end()

    def _unpack(self, item, count):
        if self.inputs_only:
            return (item,)
        if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
            raise ValueError(f"{self.where}: batch {count} of the data is a "
                             f"{type(item).__name__}{f' of {len(item)} items' if isinstance(item, (tuple, list)) else ''}; "
                             f"expected (x, y) or (x, y, sample_weight)")
        return tuple(item)


def _array_chunks(xs, ys, batch_size, weights=None):
    """(inputs, host targets, host weights or None) of each batch of arrays."""
    for start in range(0, len(xs[0]), batch_size):
        sl = slice(start, start + batch_size)
        yield ([a[sl] for a in xs], [None if v is None else v[sl] for v in ys],
               None if weights is None else weights[sl])


def _leaves(data):
    """The arrays of a nest of tuples, lists and dicts."""
    if isinstance(data, dict):
        data = list(data.values())
    if isinstance(data, (list, tuple)):
        for v in data:
            yield from _leaves(v)
    elif data is not None:
        yield data


def _step_data(x, y, sample_weight, where):
    """What Keras 3 hands a custom step: ``(x,)``, ``(x, y)``, ``(x, y, sample_weight)`` or
    ``(x, None, sample_weight)``, and the number of samples (the same in every array)."""
    data = tuple(v for v in (x, y, sample_weight) if v is not None)
    if y is None and sample_weight is not None:
        data = (x, None, sample_weight)
    sizes = {len(a) for a in _leaves(data)}
    if len(sizes) != 1:
        raise ValueError(f"{where}: x, y and sample_weight must have the same number of "
                         f"samples, got sizes {sorted(sizes)}")
    return data, sizes.pop()


def _validation_tuple(validation_data, x_alone):
    """``fit``'s ``validation_data`` as (x, y, sample_weight); ``(x_val,)`` only for a
    subclass's ``test_step``."""
    lengths = (1, 2, 3) if x_alone else (2, 3)
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in lengths:
        got = f"a {type(validation_data).__name__}" + (
            f" of {len(validation_data)} items" if isinstance(validation_data, (tuple, list))
            else "")
        raise ValueError(f"fit: validation_data must be {'(x_val,), ' if x_alone else ''}"
                         f"(x_val, y_val) or (x_val, y_val, sample_weight_val), got {got}")
    return tuple(validation_data) + (None,) * (3 - len(validation_data))


def _take(data, idx):
    """The rows ``idx`` of every array of a nest of tuples, lists and dicts."""
    if isinstance(data, dict):
        return {k: _take(v, idx) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return type(data)(_take(v, idx) for v in data)
    return None if data is None else np.asarray(data)[idx]


def _keras_result(logs, return_dict, where):
    """Keras' return convention for ``evaluate`` and the ``*_on_batch`` methods: the dict of
    logs, or its one value (the loss, a float), or its values as a list in the dict's order."""
    if validation.FLAG(return_dict, "return_dict", where):
        return logs
    values = list(logs.values())
    return values[0] if len(values) == 1 else values


def _step_args(values, ins, kw, listed, kw_spec):
    """A step's input argument (one array, or a list) and its keyword arguments (a new dict:
    constants, plus the tensor keyword arguments taken from the slots after the inputs)."""
    kw = dict(kw)
    if kw_spec is None:
        return ([values[i] for i in ins] if listed else values[ins[0]]), kw
    n_main = len(ins) - sum(c for _, c, _ in kw_spec)
    pos = n_main
    for name, count, is_list in kw_spec:
        vals = [values[i] for i in ins[pos:pos + count]]
        kw[name] = vals if is_list else vals[0]
        pos += count
    main = [values[i] for i in ins[:n_main]]
    return (main if listed else main[0]), kw


def _check_savable(arrays):
    """Everything written must load with ``allow_pickle=False``: numeric arrays and the JSON
    config only."""
    for k, v in arrays.items():
        a = np.asarray(v)
        if a.dtype.kind not in "biufU":
            raise TypeError(f"save: {k!r} is not a numeric array (dtype {a.dtype}); the file would "
                            f"need pickle, nothing was written")


def _read_npz(path, what):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what}: no such file {path!r}")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise ValueError(f"{what}: {path!r} is not a numbanet model file ({e})") from None


def _set_arrays(model, arrays, path, what):
    n = len(model._param_items())
    try:
        weights = [arrays[f"weights/{i}"] for i in range(n)]
    except KeyError:
        raise ValueError(f"{what}: {path!r} holds fewer weight arrays than the model's {n}") \
            from None
    if f"weights/{n}" in arrays:
        raise ValueError(f"{what}: {path!r} holds more weight arrays than the model's {n}")
    model._set_params(weights, what)
    for i, (layer, key, b) in enumerate(model._buffer_items()):
        if f"buffers/{i}" not in arrays:
            raise ValueError(f"{what}: {path!r} lacks buffer {i} ({layer.name}/{key})")
        layer.backend.copy_(b, arrays[f"buffers/{i}"])


def _output_names(plan):
    names = []
    for t in plan.outputs:
        base = t.node.layer.name
        name = base
        k = 1
        while name in names:
            name = f"{base}_{k}"
            k += 1
        names.append(name)
    return names


# ---------------------------------------------------------------------------------------------
# Sequential

class Sequential(Model):
    """A linear stack of layers (Keras-shaped API): a functional graph that is a chain.

    It is built for ``input_shape``, else for the ``input_shape=`` (or ``input_dim=``) its first
    layer was given (Keras 2 style), else on the first data it sees (a call, ``fit``,
    ``evaluate``, ``predict``, ``*_on_batch``)."""

    def __init__(self, layers=None, input_shape=None, device="cpu", dtype=None, name=None,
                 trainable=True):
        super().__init__(name=name or None, dtype=check_dtype(dtype, "Sequential"),
                         device=device, trainable=trainable)
        self._layers = []
        for layer in layers or []:
            self._append(layer)
        if input_shape is None:
            input_shape = self.__dict__.get("_input_shape_")
        if input_shape is None and self._layers:
            input_shape = getattr(self._layers[0], "_declared_input_shape", None)
        if input_shape is not None and self._layers:
            self.build(input_shape)

    def add(self, layer):
        """Append ``layer``; a built model is built again with it (Keras), as is one whose first
        layer declared its ``input_shape``."""
        was_built = self._plan is not None
        if self._append(layer):
            return
        shape = self.input_shape if was_built else \
            self.__dict__.get("_input_shape_") or \
            getattr(self._layers[0], "_declared_input_shape", None)
        if shape is None:
            return
        try:
            self._rebuild(shape)
        except Exception:
            self._layers.pop()          # a layer that does not fit leaves the model as it was
            self._rebuild(shape if was_built else None)
            raise

    def _append(self, layer):
        """Append a layer; an ``nb.Input(shape)`` (or its InputLayer) first in the stack, as
        Keras 3 writes ``Sequential([keras.Input(shape), ...])``, only fixes the input shape and
        dtype (returns True then)."""
        if isinstance(layer, functional.SymbolicTensor) and \
                isinstance(layer.node.layer, functional.InputLayer):
            layer = layer.node.layer
        if isinstance(layer, functional.InputLayer):
            if self._layers or self.__dict__.get("_input_given"):
                raise ValueError(f"Sequential {self.name!r}: an Input can only come first, "
                                 f"once, before any layer; got {layer.name!r} after "
                                 f"{len(self._layers)} layer(s)")
            self.__dict__["_input_given"] = True
            if layer.input_dtype.kind == "f" and self.dtype is None:
                self.dtype = layer.input_dtype
            self.input_shape = layer.input_shape
            return True
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add: expected a Layer, got {type(layer).__name__}")
        if any(l.name == layer.name for l in self._layers):
            raise ValueError(f"Sequential.add: a layer named {layer.name!r} is already in the model")
        self._layers.append(layer)

    def pop(self):
        """Remove the last layer and return it (Keras); the model is built again without it,
        for the same input shape."""
        if not self._layers:
            raise ValueError(f"Sequential.pop: {self.name!r} has no layers to remove")
        shape = self.input_shape
        layer = self._layers.pop()
        self._rebuild(shape)
        return layer

    def _rebuild(self, shape):
        """Build the chain again over the current layers for ``shape`` (the outputs and what
        compile resolved per output follow); with no layers (or no shape) it stays unbuilt,
        remembering ``shape`` for the next ``add``."""
        self._plan = None
        self.built = False
        for key in ("_n_outputs", "_out_shapes"):
            self.__dict__.pop(key, None)
        self._compiled_for = None
        self.input_shape = shape
        engine.structure_changed()
        if self._layers and shape is not None:
            self.build(shape)

    @property
    def layers(self):
        return list(self._layers)

    def build(self, input_shape):
        """Build every layer for samples of ``input_shape`` (batch axis excluded)."""
        if not self._layers:
            raise ValueError("Sequential.build: the model has no layers")
        shape = check_shape(input_shape, "Sequential.build", "input_shape")
        first = self._layers[0]
        dtype = self.dtype or first.dtype or np.dtype(np.float32)
        if first.input_kind != "float":
            dtype_in = np.dtype(np.int64)
        else:
            dtype_in = dtype
        for layer in self._layers:
            if layer.dtype is not None and layer.dtype != dtype and not isinstance(layer, Model):
                raise ValueError(f"{layer!r}: dtype {layer.dtype} differs from the model's "
                                 f"{dtype}")
            if not layer.built:
                layer.dtype = dtype
                if layer.backend is not self.backend:
                    layer._move_to(self.backend)
            elif layer.backend is not self.backend:
                raise ValueError(f"{layer!r} lives on {layer.backend.name}, the model on "
                                 f"{self.backend.name}")
        self.dtype = dtype
        inp = functional.Input(shape, dtype=dtype_in, name=f"{self.name}_input")
        x = inp
        for layer in self._layers:
            x = layer(x)
        self._init_graph(inp, x)
        return self

    def _require_built(self, what):
        if self._plan is None:
            raise RuntimeError(f"Sequential.{what}: the model is not built; pass input_shape= to "
                               f"Sequential or call build(input_shape) first")


    def _summary_rows(self):
        rows = []
        for layer in self._layers:
            node = next(n for n in self._plan.nodes if n.layer is layer)
            rows.append((f"{layer.name} ({type(layer).__name__})",
                         ", ".join(str(o.shape) for o in node.outputs),
                         f"{layer.count_params():,}", None))
        return rows

    def get_config(self):
        self._require_built("get_config")
        return {"name": self.name, "input_shape": list(self.input_shape),
                "dtype": self.dtype.name, "device": self.device,
                "layers": [{"class_name": type(l).__name__, "config": l.get_config()}
                           for l in self._layers]}

    @classmethod
    def from_config(cls, config, device=None):
        layers = [_layer_from_config(e) for e in config["layers"]]
        model = cls(layers, name=config["name"], dtype=config["dtype"],
                    device=device or config.get("device", "cpu"))
        model.build(tuple(config["input_shape"]))
        return model


# ---------------------------------------------------------------------------------------------
# graph configs

def graph_config(model):
    """A functional model's architecture as JSON-able data: its layers' configs, and its nodes in
    an order where every node reads only earlier ones."""
    plan = model._plan
    node_ids = {}
    for t in plan.inputs:
        node_ids[id(t.node)] = len(node_ids)
    for node in plan.nodes:
        node_ids[id(node)] = len(node_ids)
    layers = []
    for layer in plan.layers:
        entry = {"class_name": type(layer).__name__, "config": layer.get_config()}
        if isinstance(layer, Model):
            entry["class_name"] = "Sequential" if isinstance(layer, Sequential) else "Functional"
        layers.append(entry)
    nodes = [{"layer": t.node.layer.name, "inputs": [], "kwargs": {}} for t in plan.inputs]
    for node in plan.nodes:
        entry = {"layer": node.layer.name,
                 "inputs": [[node_ids[id(t.node)], t.index] for t in node.inputs],
                 "listed": node.listed, "kwargs": node.kwargs}
        if node.kw_spec:
            entry["tensor_kwargs"] = [[k, c, lst] for k, c, lst in node.kw_spec]
        nodes.append(entry)
    ref = lambda t: [node_ids[id(t.node)], t.index]                  # noqa: E731
    return {"name": model.name, "layers": layers, "nodes": nodes,
            "inputs": [ref(t) for t in plan.inputs], "outputs": [ref(t) for t in plan.outputs],
            "single_input": model._single_in, "single_output": model._single_out,
            "dtype": model.dtype.name, "device": model.device}


def _layer_from_config(entry, device=None):
    if not isinstance(entry, dict) or "class_name" not in entry:
        raise ValueError(f"bad layer entry {entry!r}")
    name = entry["class_name"]
    config = entry.get("config", {})
    if name == "Sequential":
        return Sequential.from_config(config)
    if name == "Functional":
        return functional_from_config(config)
    if name == "InputLayer":
        return config
    if name == "OpLayer":
        return functional.OpLayer.from_config(config)
    cls = layers_module.get(name)
    return cls.from_config(config)


def functional_from_config(config, device=None):
    """Rebuild a functional model from ``graph_config`` output."""
    layers = {}
    for entry in config["layers"]:
        layer = _layer_from_config(entry)
        lname = layer["name"] if isinstance(layer, dict) else layer.name
        if lname in layers:
            raise ValueError(f"duplicate layer name {lname!r}")
        layers[lname] = layer
    built = []
    for k, spec in enumerate(config["nodes"]):
        layer = layers.get(spec["layer"])
        if layer is None:
            raise ValueError(f"node {k} names unknown layer {spec['layer']!r}")
        if isinstance(layer, dict):                     # an input
            t = functional.Input(tuple(layer["shape"]), batch_size=layer.get("batch_size"),
                                 dtype=layer.get("dtype"), name=layer["name"])
            built.append([t])
            continue
        ins = []
        for ref in spec["inputs"]:
            src, idx = int(ref[0]), int(ref[1])
            if not 0 <= src < k:
                raise ValueError(f"node {k} reads node {src}, which is not earlier: the graph "
                                 f"has a cycle or is out of order")
            ins.append(built[src][idx])
        kwargs = dict(spec.get("kwargs", {}))
        tensor_kwargs = spec.get("tensor_kwargs") or []
        n_main = len(ins) - sum(int(c) for _, c, _ in tensor_kwargs)
        pos = n_main
        for name, count, listed in tensor_kwargs:
            vals = ins[pos:pos + int(count)]
            kwargs[name] = vals if listed else vals[0]
            pos += int(count)
        main = ins[:n_main]
        arg = main if spec.get("listed", False) else main[0]
        out = layer(arg, **kwargs)
        built.append(functional.flatten(out))
    pick = lambda ref: built[int(ref[0])][int(ref[1])]                 # noqa: E731
    inputs = [pick(r) for r in config["inputs"]]
    outputs = [pick(r) for r in config["outputs"]]
    model = Model(inputs[0] if config.get("single_input", True) and len(inputs) == 1 else inputs,
                  outputs[0] if config.get("single_output", True) and len(outputs) == 1
                  else outputs, name=config["name"])
    if device is not None or config.get("device", "cpu") != "cpu":
        model.to(device or config.get("device", "cpu"))
    return model


def load_model(path, device=None, compile=True):
    """Load a model saved with ``save``: same architecture, weights and (with ``compile``)
    optimizer state, loss and metrics."""
    arrays = _read_npz(path, "load_model")
    path = os.fspath(path)
    try:
        config = json.loads(str(arrays.pop("config")))
        if config.get("format") != FORMAT:
            raise ValueError("missing format marker")
        version = config.get("version")
        if version not in (1, FORMAT_VERSION):
            raise ValueError(f"format version {version!r}, this numbanet reads 1 and "
                             f"{FORMAT_VERSION}")
        model = model_from_config(config["model"], device)
        _set_arrays(model, arrays, path, "load_model")
        for i, w in enumerate(model._get_params()):
            if w.dtype.kind == "f" and not np.all(np.isfinite(w)):
                raise ValueError(f"weight array {i} holds NaN or Inf")
        comp = config.get("compile")
        if comp and compile:
            opt = compile_from_config(model, comp)
            state = {k[len("optimizer/"):]: v for k, v in arrays.items()
                     if k.startswith("optimizer/")}
            if version == 1:
                opt.set_state(state)
            else:
                opt.set_variable_state(state, model._optimizer_variables())
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"load_model: {path!r} is not a valid numbanet model file "
                         f"(missing or malformed {e})") from None
    except ValueError as e:
        raise ValueError(f"load_model: {path!r} is not a valid numbanet model file ({e})") from None
    return model


def model_from_config(config, device=None):
    """A Sequential or functional model (fresh weights) from its ``get_config()``."""
    if not isinstance(config, dict):
        raise TypeError(f"model_from_config: expected the dict a model's get_config() returns, "
                        f"got {type(config).__name__}")
    if "nodes" in config:
        model = functional_from_config(config)
        if device is not None:
            model.to(device)
        return model
    return Sequential.from_config(config, device=device)


def compile_from_config(model, comp):
    """Compile ``model`` as the ``"compile"`` entry of a saved model describes (optimizer, losses,
    metrics); returns the optimizer."""
    if not isinstance(comp, dict) or "optimizer" not in comp:
        raise ValueError(f"compile_from_config: expected a dict with an 'optimizer' entry (a saved "
                         f"model's \"compile\" entry), got {comp!r}")
    opt = optimizers_module.REGISTRY.deserialize(comp["optimizer"])
    load_loss = losses_module.REGISTRY.deserialize
    load_metric = metrics_module.REGISTRY.deserialize
    if "losses" in comp:
        losses = [None if e is None else load_loss(e) for e in comp["losses"]]
        metrics = [[load_metric(m) for m in ms] for ms in comp["metrics"]]
        model.compile(optimizer=opt, loss=losses[0] if len(losses) == 1 else losses,
                      metrics=metrics[0] if len(metrics) == 1 else metrics,
                      loss_weights=comp.get("loss_weights"))
        _restore_metric_names(model, metrics)
    else:                                       # format version 1: one loss
        model.compile(optimizer=opt, loss=load_loss(comp["loss"]),
                      metrics=[load_metric(m) for m in comp["metrics"]])
    return opt


def _restore_metric_names(model, metrics):
    model._ensure_compiled_outputs()
    for built, saved in zip(model.output_metrics, metrics):
        for m, s in zip(built, saved):
            m.name = s.name
