"""The Layer base class: building, shape and dtype checks, weights, and the call protocol.

A layer is called three ways:

* on symbolic tensors (``nb.Input``): it records a node of a functional graph
  (:mod:`numbanet.functional`);
* on values (arrays or tensors): it computes now and returns :class:`~numbanet.engine.Tensor` s,
  recorded on the active gradient tapes;
* by a model's own executor (``fit``): ``_forward(x, training) -> (out, ctx)`` and
  ``_backward(ctx, grad_out, sink, need) -> grad_in``, arrays in and out, no wrapping.

Built-in layers implement ``_forward``/``_backward`` with fused kernels; the context holds what
that call's backward needs, so a layer called several times backpropagates each call. A layer
written by a user implements ``call(inputs, training=False)`` with ``nb.ops`` (and
``add_weight`` in ``build``): its backward comes from a tape of that call.

``forward(x)`` / ``backward(g)`` are the stateful single-layer API (the gradient of the last
``forward``, written into ``layer.grads``).
"""
import inspect
import itertools
import math
import re

import numpy as np

from .. import engine, initializers
from .. import random as _random
from .. import validation as V
from ..backend import get_backend

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_counts = {}
_call_order = itertools.count()


def _auto_name(cls, base=None):
    """A unique default name: ``base`` (the class name in snake case), then base_1, base_2..."""
    base = base or re.sub(r"(?<!^)(?=[A-Z][a-z])", "_", cls.__name__).lower()
    _counts[base] = _counts.get(base, 0) + 1
    return base if _counts[base] == 1 else f"{base}_{_counts[base] - 1}"


def check_dtype(dtype, where):
    """np.dtype of a float32/float64 spec (None passes through)."""
    if dtype is None:
        return None
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in FLOAT_DTYPES:
        raise ValueError(f"{where}: dtype must be float32 or float64, got {dtype!r}")
    return dt


def check_positive_int(value, name, where, allow_zero=False):
    return V.Integer(0 if allow_zero else 1)(value, name, where)


def check_pair(value, name, where, allow_zero=False):
    """An int or a pair of ints -> a validated (a, b) tuple."""
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2:
        raise ValueError(f"{where}: {name} must be an int or a pair of ints, got {value!r}")
    return tuple(check_positive_int(v, name, where, allow_zero) for v in pair)


def check_shape(shape, where, what="input shape"):
    """A per-sample shape: a tuple of positive ints or None (a size known only at run time)."""
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (shape,)
    ok = isinstance(shape, (tuple, list)) and all(
        d is None or (isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 1)
        for d in shape)
    if not ok:
        raise ValueError(f"{where}: {what} must be a tuple of positive ints (batch axis "
                         f"excluded; None for a size known only when called), got {shape!r}")
    return tuple(None if d is None else int(d) for d in shape)


def _jsonable(value):
    """Tuples (nested too) as lists, as JSON gives them back."""
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return value


def shapes_match(expected, got):
    """Does the per-sample shape ``got`` fit ``expected`` (None matches any size)?"""
    return len(expected) == len(got) and all(e is None or g is None or e == g
                                             for e, g in zip(expected, got))


def fmt_shape(shape):
    return str((None,) + tuple(shape))


def check_features(layer, x, axis, weight, dim=0, what="features"):
    """Raise a ValueError naming ``layer`` unless axis ``axis`` of input ``x`` has the size of
    axis ``dim`` of its weight ``weight``. A cheap shape comparison for the forward path: a
    model's layers get their inputs unchecked, and an upstream layer may change its output
    width after the model was built (a TextVectorization adapted later); the kernel would
    fail on an internal size assertion instead."""
    w = layer.params[weight] if weight in layer.params else layer.buffers[weight]
    shape = x.shape                 # (a simulated device array's shape takes no negative index)
    want, got = w.shape[dim], shape[axis + len(shape) if axis < 0 else axis]
    if got != want:
        shape = tuple(int(d) for d in shape)
        raise ValueError(f"{layer!r}: expected inputs with {want} {what} (its {weight} is "
                         f"{tuple(int(d) for d in w.shape)}), got {got} (input shape {shape})")


def check_step_mask(layer, name, mask, n, t):
    """A per-step mask (None: none) must be (batch, time) = (n, t): a reshape would reinterpret
    a (t, n) one silently, or fail with NumPy's message."""
    if mask is not None and tuple(int(d) for d in mask.shape) != (n, t):
        raise ValueError(f"{layer!r}: {name} must have shape ({n}, {t}) (batch, time), got "
                         f"{tuple(int(d) for d in mask.shape)}")


def _accepts(fn, name):
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


class Layer:
    """Base layer. Shapes exclude the batch axis. A layer builds itself on its first call and
    takes its dtype from that input unless ``dtype=`` says otherwise (float64 in -> float64;
    float32 otherwise). ``params``/``grads``/``buffers`` are dicts of arrays (weights, their
    gradients, non-trainable state); ``trainable_weights`` etc. are the same as variables."""

    #: True for layers that take a list of inputs (merge layers)
    multi_input = False
    #: "float" (cast to the layer dtype) or "int" (integer ids, e.g. Embedding)
    input_kind = "float"
    #: keyword arguments that may carry tensors (an RNN's ``initial_state``): in a graph they
    #: are inputs of the node; ``_backward`` then takes and returns flat lists over
    #: [inputs..., those tensors...]
    tensor_kwargs = ()
    #: masks (Keras): a layer that ``supports_masking`` passes its input's mask on unchanged;
    #: one that ``uses_mask`` gets it as ``_forward(..., mask=...)`` (a (batch, time) 0/1 array,
    #: or a list for several inputs); one that ``produces_mask`` makes one (``compute_mask``)
    supports_masking = False
    uses_mask = False
    produces_mask = False
    #: per-sample axes whose size may change from call to call (a sequence's length): None
    #: (none), "all", "leading" (all but the last) or a tuple of axis indices
    free_axes = None
    #: the layout of the (first) output when it is (batch, a, b), which the 1-D layers check
    #: their ``data_format`` against when a graph is built (``check_layout``): "channels_last"
    #: for (batch, steps, features) (Embedding, recurrent and attention layers),
    #: "channels_first" for (batch, channels, length), "keep" for the inputs' layout when they
    #: agree (elementwise layers: Dropout, activations, normalization, merges), None: unknown
    output_layout = None
    #: the layout a layer reads its 3-D inputs in, when it has one: "channels_last" for the
    #: recurrent and attention layers, which take (batch, steps, features)
    input_layout = None
    #: constructor arguments a subclass fixes itself (left out of its config), and arguments
    #: stored under another attribute name ({argument: attribute})
    _config_skip = ()
    _config_attrs = {}

    def __init__(self, name=None, dtype=None, trainable=True, **unknown):
        object.__setattr__(self, "_sublayers", {})  # attribute name -> [layers] (see __setattr__)
        where = type(self).__name__
        # Keras 2's input_shape= / input_dim= (Keras 3 still takes them): the per-sample input
        # shape a Sequential starting with this layer is built for; ignored elsewhere, and not
        # part of the layer's config (the Sequential's config holds its input shape)
        declared = unknown.pop("input_shape", None)
        input_dim = unknown.pop("input_dim", None)
        if input_dim is not None:
            declared = (check_positive_int(input_dim, "input_dim", where),)
        self._declared_input_shape = None if declared is None else \
            check_shape(declared, where, "input_shape")
        if unknown:
            # a Keras argument numbanet does not implement (dropout=, stateful=...) reaches
            # here through the subclasses' **kwargs: name the layer, not Layer.__init__
            takes = ", ".join(self._constructor_names())
            raise TypeError(f"{where}: unexpected keyword argument {next(iter(unknown))!r} "
                            f"(not supported here; {where} takes {takes})")
        name, trainable = V.check(where, name=(name, V.Text(optional=True)),
                                  trainable=(trainable, V.FLAG))
        self.name = name or _auto_name(type(self))
        self.dtype = check_dtype(dtype, f"{where} {self.name!r}")
        self.built = False
        self.params, self.grads = {}, {}
        # Non-trainable state saved with the model (e.g. running statistics).
        self.buffers = {}
        self._variables = {}                # (kind, key) -> Variable
        self._storage = {}                  # key -> (chunk, offset): the arena slot of a param
        self._trainable = bool(trainable)
        self.backend = get_backend("cpu")
        self.input_shape = self.output_shape = None
        # The legacy API: the first layer of a Sequential needs no input gradient.
        self.needs_input_grad = True
        self._last = None                   # context of the last forward() (legacy API)
        self._forwarded = False
        self._first_call = None             # order of the first call (weights' order)
        self._inbound_nodes = []
        self._call_losses = []              # add_loss terms of the last call

    def __setattr__(self, name, value):
        """Layers set as attributes (one, or a list) are this layer's sublayers (Keras): their
        weights are part of its weights and they move and freeze with it (one attached to a
        frozen layer, e.g. in its ``build`` after ``trainable = False``, is frozen too)."""
        subs = self.__dict__.get("_sublayers")
        if subs is not None and not name.startswith("_"):
            if isinstance(value, Layer) and value is not self:
                subs[name] = [value]
            elif isinstance(value, (list, tuple)) and value and \
                    all(isinstance(v, Layer) for v in value):
                subs[name] = list(value)
            elif name in subs:
                del subs[name]
            if name in subs and not self._trainable:
                for layer in subs[name]:
                    layer.trainable = False
        object.__setattr__(self, name, value)

    # -- trainability -----------------------------------------------------------------------------
    @property
    def trainable(self):
        return self._trainable

    @trainable.setter
    def trainable(self, value):
        self._trainable = V.FLAG(value, "trainable", repr(self))
        for layer in self._direct_sublayers():
            layer.trainable = bool(value)
        engine.structure_changed()

    # -- building -------------------------------------------------------------------------------
    def build(self, input_shape):
        """Create the weights for inputs of ``input_shape`` (without the batch axis; a list of
        shapes for layers with several inputs)."""
        if self.multi_input:
            shape = [check_shape(s, repr(self)) for s in input_shape]
        else:
            shape = check_shape(input_shape, repr(self))
        self.input_shape = shape
        if self.dtype is None:
            self.dtype = np.dtype(np.float32)
        self.output_shape = self.compute_output_shape(shape)
        self.create_params(shape)
        if self.free_axes is not None and not self.multi_input:
            self.input_shape = self._relaxed(shape)
            self.output_shape = self.compute_output_shape(self.input_shape)
        self.built = True
        engine.structure_changed()

    def _relaxed(self, shape):
        """``shape`` with the free axes (``free_axes``) set to None."""
        free = self.free_axes
        n = len(shape)
        axes = range(n) if free == "all" else range(n - 1) if free == "leading" else \
            [a % n for a in free if -n <= a < n]
        return tuple(None if i in set(axes) else d for i, d in enumerate(shape))

    def compute_output_shape(self, input_shape):
        return input_shape

    def output_shape_for(self, input_shape, **kwargs):
        """The per-sample output shape(s) for a call on ``input_shape`` with constant keyword
        arguments ``kwargs`` (the layer is built)."""
        if input_shape == self.input_shape:
            return self.output_shape
        return self.compute_output_shape(input_shape)

    def compute_mask(self, inputs, mask):
        """The mask of the output for input ``mask`` (Keras): passed on unchanged by layers that
        support masking, dropped by others. ``inputs``: the call's input array(s)."""
        if not self.supports_masking or mask is None:
            return None
        if isinstance(mask, (list, tuple)):
            present = [m for m in mask if m is not None]
            return _and_masks(self.backend, present) if present else None
        return mask

    def check_layout(self, layouts):
        """Refuse, when a graph is built, inputs this layer would read in the wrong layout.
        ``layouts``: per input, None (unknown) or (layout, the layer that gave it) (see
        ``output_layout``); here: a (batch, channels, length) input of a layer that reads
        (batch, steps, features) (``input_layout``)."""
        for got in layouts:
            if self.input_layout == "channels_last" and got is not None and \
                    got[0] == "channels_first":
                raise ValueError(
                    f"{self!r}: reads (batch, steps, features), but its input comes from "
                    f"{got[1]!r}, whose output is (batch, channels, length) (channels_first): "
                    f"the channels would be read as steps. Give {got[1]!r} "
                    f"data_format=\"channels_last\", or put Permute((2, 1)) between them")

    def output_dtypes(self, n):
        """The dtypes of the call's ``n`` outputs."""
        return [self.dtype or np.dtype(np.float32)] * n

    def create_params(self, input_shape):
        """Subclasses with parameters create them here with ``add_param``."""

    def add_param(self, key, shape, initializer, fan_in=1, fan_out=1):
        """A trainable weight ``params[key]`` (and its gradient ``grads[key]``), stored in the
        backend's parameter arena."""
        value = initializers.initialize(initializer, shape, fan_in, fan_out, self.dtype)
        self._place(key, value)
        return self._variable("param", key)

    def _place(self, key, host_value):
        engine.structure_changed()
        chunk, off, p, g = engine.arena(self.backend, self.dtype).alloc(tuple(host_value.shape),
                                                                        host_value)
        self.params[key], self.grads[key] = p, g
        self._storage[key] = (chunk, off, p)

    def add_weight(self, name, shape, initializer="glorot_uniform", trainable=True, dtype=None):
        """A weight for a layer written with ``nb.ops`` (Keras' ``add_weight``): a trainable
        parameter, or with ``trainable=False`` a buffer saved with the model. Returns its
        :class:`~numbanet.engine.Variable`."""
        if dtype is not None:
            dt = check_dtype(dtype, f"{self!r} add_weight")
            if self.dtype is None:
                self.dtype = dt
        if self.dtype is None:
            self.dtype = np.dtype(np.float32)
        shape = tuple(int(d) for d in (shape if isinstance(shape, (tuple, list)) else (shape,)))
        fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else shape[0] if shape else 1
        fan_out = shape[-1] if shape else 1
        if trainable:
            return self.add_param(name, shape, initializer, fan_in, fan_out)
        value = initializers.initialize(initializer, shape, fan_in, fan_out, self.dtype)
        self.buffers[name] = self.backend.asarray(value, dtype=self.dtype)
        return self._variable("buffer", name)

    def _variable(self, kind, key):
        v = self._variables.get((kind, key))
        if v is None:
            v = self._variables[(kind, key)] = engine.Variable(self, key, kind)
        return v

    def set_backend(self, backend):
        """Switch to another backend; the model (or ``to``) moves ``params``, ``grads`` and
        ``buffers``."""
        self.backend = backend

    def _move_to(self, backend):
        """Move this layer's weights, gradients and buffers to ``backend`` (weights into its
        arena, in key order)."""
        if backend is self.backend:
            return
        old = self.backend
        params = {k: old.to_numpy(p) for k, p in self.params.items()}
        buffers = {k: old.to_numpy(b) for k, b in self.buffers.items()}
        self.backend = backend
        self.params, self.grads, self._storage = {}, {}, {}
        for k, v in params.items():
            self._place(k, v)
        self.buffers = {k: backend.asarray(v, dtype=v.dtype) for k, v in buffers.items()}
        self.set_backend(backend)
        for layer in self._direct_sublayers():
            layer._move_to(backend)

    # -- weights --------------------------------------------------------------------------------
    def _local_weights(self, which):
        """This layer's own weights (not its sublayers'): "trainable", "non_trainable" or
        "all"."""
        params = [self._variable("param", k) for k in self.params]
        buffers = [self._variable("buffer", k) for k in self.buffers]
        if which == "trainable":
            return params if self.trainable else []
        if which == "non_trainable":
            return ([] if self.trainable else params) + buffers
        return params + buffers

    @property
    def trainable_weights(self):
        """The trainable weights (Variables), kernel before bias; then those of the layers
        inside this one (a wrapper's)."""
        return self._local_weights("trainable") + \
            [v for l in self._sublayers_deep() for v in l._local_weights("trainable")]

    @property
    def non_trainable_weights(self):
        return self._local_weights("non_trainable") + \
            [v for l in self._sublayers_deep() for v in l._local_weights("non_trainable")]

    @property
    def weights(self):
        return self._local_weights("all") + \
            [v for l in self._sublayers_deep() for v in l._local_weights("all")]

    variables = weights

    def _weight_items(self):
        """(layer, key, array) of every weight in ``weights`` order (models: their layers')."""
        return [(l, k, a) for l in [self] + self._sublayers_deep()
                for k, a in list(l.params.items()) + list(l.buffers.items())]

    def get_weights(self):
        """Every weight as a NumPy array, in ``weights`` order: trainable and not, so
        BatchNormalization's moving statistics too (Keras)."""
        return [l.backend.to_numpy(a).copy() for l, _, a in self._weight_items()]

    def set_weights(self, weights):
        """Set every weight from a list shaped like ``get_weights()``."""
        if not self.built:
            raise RuntimeError(f"{self!r}.set_weights: the layer is not built; call it on data "
                               f"or build(input_shape) first")
        self._assign(self._weight_items(), weights, "set_weights")

    def _assign(self, items, weights, what):
        """Copy ``weights`` into the arrays of ``items`` after checking their number and
        shapes (nothing is changed when one does not fit)."""
        weights = list(weights)
        if len(weights) != len(items):
            raise ValueError(f"{what}: {self!r} has {len(items)} weight arrays, got "
                             f"{len(weights)}")
        for (layer, key, a), w in zip(items, weights):
            w = np.asarray(w)
            if tuple(w.shape) != tuple(a.shape):
                raise ValueError(f"{what}: {layer!r} {key} has shape {tuple(a.shape)}, got "
                                 f"{tuple(w.shape)}")
        for (layer, _, a), w in zip(items, weights):
            layer.backend.copy_(a, np.ascontiguousarray(w, dtype=a.dtype))

    def _direct_sublayers(self):
        """The layers set as attributes of this one, each once."""
        subs = self.__dict__.get("_sublayers")
        if not subs:
            return []
        out, seen = [], set()
        for layers in subs.values():
            for layer in layers:
                if id(layer) not in seen:
                    seen.add(id(layer))
                    out.append(layer)
        return out

    def _sublayers_deep(self):
        """Layers inside this one, depth first (models override)."""
        direct = self._direct_sublayers()
        if not direct:
            return []
        out, seen = [], set()
        for layer in direct:
            for l in [layer] + layer._sublayers_deep():
                if id(l) not in seen:
                    seen.add(id(l))
                    out.append(l)
        return out

    def _has_trainable(self):
        return (self.trainable and bool(self.params)) or any(
            l.trainable and l.params for l in self._sublayers_deep())

    def count_params(self):
        """The number of weight values, buffers (non-trainable state) included (Keras)."""
        return int(sum(int(np.prod(a.shape)) for a in (*self.params.values(),
                                                       *self.buffers.values()))) + \
            sum(l.count_params() for l in self._sublayers_deep())

    # -- calling --------------------------------------------------------------------------------
    def __call__(self, inputs, *args, **kwargs):
        from .. import functional
        if not self.multi_input and isinstance(inputs, (list, tuple)) and not self.built and \
                not self._inbound_nodes and type(self)._forward is Layer._forward and \
                type(self).call is not Layer.call:
            self.multi_input = True     # a call() layer first called on a list takes lists (Keras)
        if functional.is_symbolic(inputs):
            return functional.call_symbolic(self, inputs, args, kwargs)
        return self._call_eager(inputs, *args, **kwargs)

    def _call_eager(self, inputs, training=None, **kwargs):
        """Compute now on arrays or tensors; returns Tensor(s), recorded on active tapes."""
        if self._first_call is None:
            self._first_call = next(_call_order)
        items = list(inputs) if self.multi_input and isinstance(inputs, (list, tuple)) \
            else [inputs]
        if self.multi_input and not isinstance(inputs, (list, tuple)):
            raise TypeError(f"{self!r}: expects a list of inputs, got {type(inputs).__name__}")
        be = engine.backend_of(*items)
        if not self.built and be is not self.backend:
            self._move_to(be)
        elif be is not self.backend and any(isinstance(v, engine._TensorLike) for v in items):
            raise ValueError(f"{self!r}: the layer lives on {self.backend.name}, its input on "
                             f"{be.name}; move one of them (model.to(...))")
        arrays = [self._input_array(v) for v in items]
        if not self.built:
            self._build_from(arrays)
        arrays = [self.check_input(a, i) for i, a in enumerate(arrays)]
        x = arrays if self.multi_input else arrays[0]
        from ..functional import split_tensor_kwargs
        kwargs, kw_tensors = split_tensor_kwargs(
            self, kwargs, lambda t: isinstance(t, engine._TensorLike) or
            (hasattr(t, "shape") and hasattr(t, "dtype")))
        for name, ts, listed_kw in kw_tensors:
            vals = [self.backend.asarray(self._input_array(t)) if isinstance(t, np.ndarray)
                    else self._input_array(t) for t in ts]
            kwargs[name] = vals if listed_kw else vals[0]
        masks = [getattr(v, "mask", None) for v in items]
        mask = masks if self.multi_input else masks[0]
        if self.uses_mask and any(m is not None for m in masks) and "mask" not in kwargs:
            kwargs["mask"] = mask
        training = engine.current_training() if training is None else bool(training)
        with engine.training_scope(training):
            out, ctx = self._forward(x, training, **kwargs)
        listed_out = isinstance(out, (list, tuple))
        outs = list(out) if listed_out else [out]
        out_mask = self.compute_mask(x, kwargs.get("mask", mask))
        out_masks = out_mask if isinstance(out_mask, (list, tuple)) else [out_mask] * len(outs)
        tensors = [engine.Tensor(o, self.backend, m) for o, m in zip(outs, out_masks)]
        added = self._added_losses(ctx)
        if engine.recording():
            # the call's add_loss terms are outputs of its entry too: a loss built from
            # ``model.losses`` under a tape differentiates through them
            inputs_ = items + [t for _, ts, _ in kw_tensors for t in ts]
            engine.record(self, (ctx, bool(kw_tensors), len(tensors) if added else None,
                                 listed_out),
                          [v if isinstance(v, (engine.Tensor, engine.Variable)) else None
                           for v in inputs_], tensors + list(added), is_layer=True,
                          listed=listed_out or bool(added))
        for t in added:                                 # the enclosing call's losses too
            engine.pass_loss_up(t)
        return tensors if listed_out else tensors[0]

    def _input_array(self, v):
        """A call's input as an array of this layer's backend (host inputs converted)."""
        if isinstance(v, engine._TensorLike):
            return v.value
        if hasattr(v, "shape") and hasattr(v, "dtype") and not isinstance(v, np.ndarray):
            return v                                   # a device array
        a = np.asarray(v)
        if a.dtype.kind not in "fiub":
            raise TypeError(f"{self!r}: expected a numeric array, got dtype {a.dtype}")
        return a

    def _build_from(self, arrays):
        """Build from the first call's inputs (dtype from a float64 input)."""
        if any(np.dtype(a.dtype).kind not in "fiub" for a in arrays):
            raise TypeError(f"{self!r}: expected numeric input")
        if self.dtype is None and self.input_kind == "float" and \
                any(np.dtype(a.dtype) == np.float64 for a in arrays):
            self.dtype = np.dtype(np.float64)
        if any(len(a.shape) < 1 for a in arrays):
            raise ValueError(f"{self!r}: expected a batch of samples (a leading batch axis), got "
                             f"a 0-d input")
        shapes = [tuple(int(d) for d in a.shape[1:]) for a in arrays]
        self.build(shapes if self.multi_input else shapes[0])

    def checks_input_shape(self):
        """Are calls checked against ``input_shape``? numbanet's own layers are; a layer of
        one's own written with ``call`` is not (as in Keras): it takes any input its weights
        fit, and an op inside ``call`` names a shape that does not."""
        return type(self)._forward is not Layer._forward or \
            type(self).__module__.startswith("numbanet.")

    def check_input(self, x, index=0):
        """Reject a wrong rank or shape with a message naming this layer; cast host inputs."""
        spec = self.input_shape[index] if self.multi_input else self.input_shape
        got = tuple(int(d) for d in x.shape)
        if len(got) < 1 or self.checks_input_shape() and not shapes_match(spec, got[1:]):
            which = f" {index}" if self.multi_input else ""
            raise ValueError(f"{self!r}: expected input{which} of shape {fmt_shape(spec)} "
                             f"(None = any size), got {got}")
        if got[0] < 1:
            raise ValueError(f"{self!r}: got an empty batch of shape {got}")
        want = self.dtype if self.input_kind == "float" else None
        if want is not None and np.dtype(x.dtype) != want:
            if isinstance(x, np.ndarray) and not self.backend.is_device:
                if x.dtype.kind not in "fiub":
                    raise TypeError(f"{self!r}: expected a numeric array, got dtype {x.dtype}")
                return np.ascontiguousarray(x, dtype=want)
            if isinstance(x, np.ndarray):
                return self.backend.asarray(x, dtype=want)
            raise TypeError(f"{self!r}: expected {want} input, got {x.dtype}")
        if isinstance(x, np.ndarray):
            if self.backend.is_device:
                return self.backend.asarray(x)
            if not x.flags.c_contiguous:
                x = np.ascontiguousarray(x)
        return x

    # -- the engine's protocol ----------------------------------------------------------------------
    def _forward(self, x, training, **kwargs):
        """(output, context) for input arrays ``x``. The default runs ``call`` (written with
        ``nb.ops``) under a tape of its own, which is the context."""
        if type(self).call is Layer.call:
            raise NotImplementedError(f"{type(self).__name__} defines neither call() nor "
                                      f"_forward()")
        tape = engine.GradientTape(persistent=True)
        items = x if self.multi_input else [x]
        ins = [engine.Tensor(a, self.backend) for a in items]
        kw_ins = []                     # tensor keyword arguments: differentiable inputs too
        for name in list(kwargs):       # in the order of the call's input list
            v = kwargs[name]
            if name not in self.tensor_kwargs or v is None:
                continue
            ts = [engine.Tensor(a, self.backend) for a in (v if isinstance(v, (list, tuple))
                                                             else [v])]
            kwargs[name] = ts if isinstance(v, (list, tuple)) else ts[0]
            kw_ins.extend(ts)
        if _accepts(self.call, "training"):
            kwargs["training"] = training
        with engine.local_scope(tape), engine.collect_losses() as added, \
                engine.default_device(self.backend.name):
            tape.watch(ins + kw_ins)
            out = self.call(ins if self.multi_input else ins[0], **kwargs)
        listed = isinstance(out, (list, tuple))
        outs = [o if isinstance(o, engine.Tensor) else engine.convert_to_tensor(
            o, dtype=self.dtype, device=self.backend.name) for o in (out if listed else [out])]
        values = [o.value for o in outs]
        self._call_losses = list(added)
        return (values if listed else values[0]), _CallContext(tape, ins + kw_ins, outs,
                                                               list(added), len(ins))

    def _added_losses(self, ctx):
        """The add_loss terms (scalar tensors) of the call whose context is ``ctx``."""
        return ctx.added if type(ctx) is _CallContext else ()

    def _may_add_losses(self):
        """Can a call of this layer add losses (its forward runs ``call``)?"""
        return type(self)._forward is Layer._forward

    def add_loss(self, value):
        """Inside ``call``: add ``value`` (a scalar tensor built with ``nb.ops``, or the sum of a
        tensor's elements) to the loss that ``fit`` minimizes and reports, e.g. a VAE's KL
        divergence; ``layer.losses`` / ``model.losses`` list the terms of the last call."""
        from .. import ops
        t = value if isinstance(value, engine.Tensor) else engine.convert_to_tensor(
            value, dtype=self.dtype, device=self.backend.name)
        if t.size != 1:
            t = ops.sum(t)
        engine.add_loss(t, repr(self))

    @property
    def losses(self):
        """The add_loss terms of the last call (this layer's and its sublayers'), as tensors."""
        return list(self._call_losses)

    def _backward(self, ctx, grad_out, sink, need):
        """Input gradient(s) from the output gradient(s); parameter gradients into ``sink``."""
        tape, ins, outs = ctx.tape, ctx.ins, ctx.outs
        flat = self.multi_input or len(ins) > ctx.n_main        # tensor keyword arguments too
        grads = grad_out if isinstance(grad_out, (list, tuple)) else [grad_out]
        seeds = {id(o): g for o, g in zip(outs, grads) if g is not None}
        if ctx.added:
            seeds.update(engine.take_added_seeds(ctx.added))
        needs = need if isinstance(need, (list, tuple)) else [need]
        got = engine.backprop(tape._entries, seeds, sink,
                              [id(t) for t, n in zip(ins, needs) if n])
        res = [got.get(id(t)) if n else None for t, n in zip(ins, needs)]
        for k, (t, n) in enumerate(zip(ins, needs)):
            if n and res[k] is None:
                res[k] = self.backend.zeros(t.shape, t.dtype)
        return res if flat else res[0]

    def _backward_entry(self, ctx, grad_out, sink, need):
        """``_backward`` for a tape entry: ``need`` per input, a list of input gradients out.
        The gradients of the call's added losses (outputs after the ``n_out`` real ones) wait
        for the call that added them."""
        ctx, flat, n_out, listed_out = ctx
        flat = flat or self.multi_input
        need = need if flat else need[0]
        if n_out is None:
            res = self._backward(ctx, grad_out, sink, need)
        else:
            added = self._added_losses(ctx)
            seeds = {id(t): g for t, g in zip(added, grad_out[n_out:])}
            g = list(grad_out[:n_out]) if listed_out else grad_out[0]
            with engine.added_loss_seeds(seeds):
                res = self._backward(ctx, g, sink, need)
        return list(res) if flat else [res]

    def call(self, inputs, training=False):
        """A user layer's forward pass written with ``nb.ops`` (differentiated by a tape)."""
        raise NotImplementedError(f"{type(self).__name__} must define call()")

    # -- the single-layer API -----------------------------------------------------------------------
    def forward(self, x, training=False):
        """Output array for a batch ``x`` (builds the layer on first use); keeps what
        ``backward`` needs."""
        if self._first_call is None:
            self._first_call = next(_call_order)
        items = x if self.multi_input else [x]
        arrays = [self._input_array(v) for v in items]
        if not self.built:
            self._build_from(arrays)
        arrays = [self.check_input(a, i) for i, a in enumerate(arrays)]
        out, self._last = self._forward(arrays if self.multi_input else arrays[0], training)
        self._forwarded = True
        return out

    def backward(self, grad_out):
        """d loss / d input from d loss / d output of the last ``forward``; writes the parameter
        gradients into ``self.grads``."""
        if not self._forwarded:
            raise RuntimeError(f"{self!r}: backward() needs a forward() first (it uses that "
                               f"call's inputs)")
        return self._backward(self._last, grad_out, engine.LegacySink(), self.needs_input_grad)

    # -- bookkeeping ----------------------------------------------------------------------------
    def get_config(self):
        """Constructor arguments (JSON-serializable), so ``type(layer)(**config)`` rebuilds it:
        ``name``, ``dtype`` (``trainable`` when False) and the arguments of the constructors up
        the class chain (followed through ``**kwargs``, less ``_config_skip``), each read back by
        ``_config_value`` (tuples as lists). An argument the layer keeps no attribute for is left
        out: a layer of one's own that stores its arguments otherwise writes ``get_config``."""
        config = {"name": self.name, "dtype": None if self.dtype is None else self.dtype.name}
        if not self.trainable:
            config["trainable"] = False
        specs = self.__dict__.get("_specs", {})
        for name in self._config_names():
            if name in specs or hasattr(self, self._config_attrs.get(name, name)):
                config[name] = _jsonable(self._config_value(name))
        return config

    @classmethod
    def _constructor_names(cls):
        """The named arguments of the constructors up the class chain (followed through
        ``**kwargs``), ``name``, ``dtype`` and ``trainable`` last; less those a subclass fixes
        (in ``_config_skip`` but not in the signature of the class's own constructor)."""
        names, own = [], None
        for klass in cls.__mro__:
            if klass is Layer:
                break
            if "__init__" in vars(klass):
                params = inspect.signature(klass.__init__).parameters.values()
                named = [p.name for p in params if p.name != "self"
                         and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
                own = named if own is None else own
                names += named
                if not any(p.kind is p.VAR_KEYWORD for p in params):
                    break
        fixed = set(cls._config_skip) - set(own or ())
        base = ["name", "dtype", "trainable"]
        return [n for n in dict.fromkeys(names) if n not in base and n not in fixed] + base

    @classmethod
    def _config_names(cls):
        skip = set(cls._config_skip) | {"name", "dtype", "trainable"}
        return [n for n in cls._constructor_names() if n not in skip]

    def _config_value(self, name):
        """Constructor argument ``name`` as saved: the attribute of that name (or of
        ``_config_attrs[name]``), the argument as given for those kept by ``_keep_specs``;
        initializers and regularizers in their serialized form."""
        specs = self.__dict__.get("_specs", {})
        value = specs[name] if name in specs else getattr(self, self._config_attrs.get(name, name))
        if name.endswith("_initializer"):
            return initializers.serialize(value)
        if name.endswith("_regularizer"):
            from .. import regularizers
            return regularizers.serialize(value)
        return value

    def _keep_specs(self, **specs):
        """Remember arguments as given (initializer names...) for the config; returns their
        values in order."""
        self.__dict__.setdefault("_specs", {}).update(specs)
        return tuple(specs.values())

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"{type(self).__name__} {self.name!r}"


class Seeded:
    """A layer with a numpy Generator of its own: from ``seed``, or without one spawned from
    numbanet's global generator when its parameters are created (so ``nb.seed(n)`` makes a run
    reproducible); ``rng_state``/``set_rng_state`` let ``numbanet.testing.gradcheck`` replay
    a draw."""

    def _set_seed(self, seed, where):
        if seed is not None:
            check_positive_int(seed, "seed", where, allow_zero=True)
        self.seed = None if seed is None else int(seed)
        self.rng = None

    def _new_rng(self):
        self.rng = np.random.default_rng(self.seed) if self.seed is not None else _random.spawn()

    def rng_state(self):
        """The generator's state (None for a layer that draws nothing and has no generator)."""
        return None if self.rng is None else self.rng.bit_generator.state

    def set_rng_state(self, state):
        if state is not None:
            self.rng.bit_generator.state = state


class _CallContext:
    """What the backward of a call written with ops needs: its tape, input and output tensors,
    and the losses it added."""

    __slots__ = ("tape", "ins", "outs", "added", "n_main")

    def __init__(self, tape, ins, outs, added, n_main):
        self.tape, self.ins, self.outs, self.added = tape, ins, outs, added
        self.n_main = n_main            # ins: the call's inputs, then its tensor keywords


def param_count(shape):
    return int(math.prod(shape))


def _and_masks(backend, masks):
    """The elementwise product (logical and) of 0/1 masks of one shape."""
    out = masks[0]
    if len(masks) == 1:
        return out
    from .. import ops
    for m in masks[1:]:
        out, _ = ops._MUL.forward(backend, out, m)
    return out
