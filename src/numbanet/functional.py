"""Functional graphs: ``nb.Input``, symbolic tensors, nodes, and the compiled plan a model runs.

Calling a layer (or an op, or a model) on symbolic tensors computes nothing: it records a
:class:`Node` (the layer, its input tensors, its constant keyword arguments) and returns symbolic
outputs with their shapes. ``nb.Model(inputs, outputs)`` walks the nodes back from the outputs,
orders them (a node after the nodes it reads) and compiles a :class:`Plan`: integer slots for
the values and one step per node, which the model's executor runs forward and backward with
the layers' own fused kernels and no per-op wrapping.
"""
import math

import numpy as np

from . import engine
from .layers.base import Layer, _auto_name, check_shape, fmt_shape, shapes_match

__all__ = ["Input", "SymbolicTensor", "InputLayer", "Node", "Plan", "is_symbolic"]


class SymbolicTensor(engine._TensorLike):
    """A placeholder in a functional graph: a shape (``None`` for the batch axis and other
    sizes known only at run time) and a dtype, produced by ``nb.Input`` or by a layer call.
    Operators and ``nb.ops`` on it add op nodes to the graph."""

    __slots__ = ("_shape", "_dtype", "node", "index", "name", "layout", "__weakref__")

    def __init__(self, shape, dtype, node=None, index=0, name=None):
        self._shape = tuple(shape)
        self._dtype = np.dtype(dtype)
        self.node, self.index, self.name = node, index, name
        self.layout = None          # (layout, layer that gave it) of a 3-D tensor, or None

    @property
    def shape(self):
        return self._shape

    @property
    def dtype(self):
        return self._dtype

    @property
    def ndim(self):
        return len(self._shape)

    @property
    def value(self):
        raise TypeError("a symbolic tensor (from nb.Input) has no value: build a model with "
                        "nb.Model(inputs, outputs) and call the model on data")

    @property
    def backend(self):
        return engine.current_backend()

    def numpy(self):
        return self.value

    def __array__(self, dtype=None, copy=None):
        return self.value

    def __repr__(self):
        src = self.node.layer.name if self.node is not None else "?"
        return f"<SymbolicTensor shape={self._shape} dtype={self._dtype.name} from {src!r}>"


def is_symbolic(x):
    if isinstance(x, SymbolicTensor):
        return True
    if isinstance(x, (list, tuple)) and x and any(isinstance(v, SymbolicTensor) for v in x):
        return True
    return False


def flatten(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


_node_serial = [0]


class Node:
    """One call of ``layer`` on symbolic ``inputs``; ``kwargs`` are its constant keyword
    arguments; ``listed``: the layer took a list of inputs. ``serial`` orders nodes by creation
    (a node is always made after the nodes it reads: call order is a valid evaluation order)."""

    def __init__(self, layer, inputs, kwargs, listed):
        self.layer, self.inputs, self.kwargs, self.listed = layer, list(inputs), dict(kwargs), listed
        self.n_main = len(self.inputs)          # inputs after these come from tensor kwargs
        self.kw_spec = None                     # ((name, count, listed), ...) of those
        _node_serial[0] += 1
        self.serial = _node_serial[0]
        self.outputs = []
        self.listed_out = False


class InputLayer(Layer):
    """The layer behind ``nb.Input``: it only names the input and fixes its shape and dtype."""

    def __init__(self, shape, dtype=None, name=None, batch_size=None):
        dt = _check_dtype_name(dtype)
        super().__init__(name=name or None)
        self.input_dtype = dt
        self.dtype = dt if dt.kind == "f" else None
        self.batch_size = batch_size
        self.input_shape = self.output_shape = check_shape(shape, f"Input {self.name!r}",
                                                           "shape")
        self.built = True

    def __call__(self, *args, **kwargs):
        raise TypeError(f"{self!r}: an input layer is not called; use nb.Input(...) to make a "
                        f"symbolic input")

    def _forward(self, x, training):
        return x, None

    def _backward(self, ctx, g, sink, need):
        return g

    def get_config(self):
        dtype = "string" if self.input_dtype.kind == "O" else self.input_dtype.name
        return {"name": self.name, "shape": [d for d in self.input_shape], "dtype": dtype,
                "batch_size": self.batch_size}


def _check_dtype_name(dtype):
    if dtype in ("string", "str", str, "object", object):
        return np.dtype(object)                 # texts, for a TextVectorization layer
    dt = np.dtype("float32" if dtype is None else dtype)
    if dt.kind not in "fiub" or (dt.kind == "f" and dt not in (np.float32, np.float64)):
        raise ValueError(f"Input: dtype must be float32, float64, an integer dtype or "
                         f"'string', got {dtype!r}")
    return dt


def Input(shape=None, batch_size=None, dtype=None, name=None):
    """A symbolic input of per-sample ``shape`` (batch axis excluded; ``None`` for a size known
    only when called, e.g. a sequence's time axis) for ``nb.Model(inputs, outputs)``.
    ``dtype``: float32 (default), float64 or an integer dtype (ids for an Embedding)."""
    if shape is None:
        raise ValueError("Input: shape is required, e.g. nb.Input(shape=(28, 28))")
    dt = _check_dtype_name(dtype)
    if batch_size is not None:
        batch_size = int(batch_size)
    layer = InputLayer(shape, dt, name, batch_size)
    node = Node(layer, [], {}, False)
    t = SymbolicTensor((batch_size,) + layer.input_shape, dt, node, 0, layer.name)
    node.outputs = [t]
    layer._inbound_nodes.append(node)
    return t


# ---------------------------------------------------------------------------------------------
# calling a layer on symbolic tensors

def _dummy(shape, dtype, fill_none):
    return np.ones(tuple(fill_none if d is None else d for d in shape), dtype)


_DUMMY_BATCH, _DUMMY_SIZES = 2, (7, 11)


def _infer_outputs(layer, inputs, listed, kwargs):
    """Output shapes and dtypes of a layer without its own ``compute_output_shape``: run it on
    small dummy inputs outside every tape. Where an input's size is unknown, it runs twice, with
    sizes 7 and then 11 there: an output size that differs between the runs is unknown (None),
    one that is the same is known (so a real size 7 stays 7)."""
    unknown = any(d is None for t in inputs for d in t.shape[1:])
    runs = []
    for size in _DUMMY_SIZES if unknown else _DUMMY_SIZES[:1]:
        arrays = [_dummy((_DUMMY_BATCH,) + tuple(t.shape[1:]), t.dtype, size) for t in inputs]
        with engine.stop_recording():
            out = layer._call_eager(arrays if listed else arrays[0], training=False, **kwargs)
        runs.append([tuple(o.shape[1:]) for o in flatten(out)])
    outs = flatten(out)
    shapes = [(None,) + tuple(d if all(len(r[i]) == len(s) and r[i][k] == d for r in runs)
                              else None for k, d in enumerate(s))
              for i, s in enumerate(runs[0])]
    return shapes, [o.dtype for o in outs], isinstance(out, (list, tuple))


def split_tensor_kwargs(layer, kwargs, is_tensor):
    """Separate the keyword arguments that carry tensors (the layer's ``tensor_kwargs``, e.g.
    an RNN's ``initial_state``) from constant options: (constants, [(name, tensors, listed)])."""
    const, tensors = {}, []
    for k, v in kwargs.items():
        items = flatten(v) if isinstance(v, (list, tuple)) else [v]
        if v is not None and items and all(is_tensor(t) for t in items):
            if k not in layer.tensor_kwargs:
                raise TypeError(f"{layer!r}: keyword argument {k!r} is a tensor; "
                                f"{type(layer).__name__} takes tensors only as its inputs"
                                + (f" and {', '.join(layer.tensor_kwargs)}"
                                   if layer.tensor_kwargs else ""))
            tensors.append((k, items, isinstance(v, (list, tuple))))
        elif any(is_tensor(t) for t in items):
            raise TypeError(f"{layer!r}: keyword argument {k!r} mixes tensors and other values")
        else:
            const[k] = v
    return const, tensors


def call_symbolic(layer, inputs, args, kwargs):
    """Record a node of ``layer`` on symbolic ``inputs``; returns its symbolic output(s).
    Keyword arguments listed in the layer's ``tensor_kwargs`` may be symbolic tensors too (they
    become inputs of the node)."""
    if args:
        raise TypeError(f"{layer!r}: extra positional arguments in a functional graph: pass "
                        f"constant options as keywords")
    kwargs, kw_tensors = split_tensor_kwargs(layer, kwargs,
                                             lambda t: isinstance(t, SymbolicTensor))
    for k, v in kwargs.items():
        if isinstance(v, engine._TensorLike):
            raise TypeError(f"{layer!r}: keyword argument {k!r} is a tensor value; a functional "
                            f"graph takes symbolic tensors (from nb.Input) only")
    listed = isinstance(inputs, (list, tuple))
    items = flatten(inputs)
    if not all(isinstance(t, SymbolicTensor) for t in items):
        raise TypeError(f"{layer!r}: mixes symbolic tensors and values in one call; convert the "
                        f"values with nb.Input or compute them inside the layer")
    if listed and not layer.multi_input and not isinstance(layer, _GraphLayer):
        raise TypeError(f"{layer!r}: takes one input, got a list of {len(items)}")
    if layer.multi_input and not listed:
        raise TypeError(f"{layer!r}: expects a list of inputs, got one tensor")
    layer.check_layout([t.layout for t in items])
    if layer._first_call is None:
        from .layers.base import _call_order
        layer._first_call = next(_call_order)
    shapes = [tuple(t.shape[1:]) for t in items]
    custom = type(layer).compute_output_shape is Layer.compute_output_shape and \
        type(layer)._forward is Layer._forward
    if not layer.built:
        if layer.dtype is None and layer.input_kind == "float" and \
                any(t.dtype == np.float64 for t in items):
            layer.dtype = np.dtype(np.float64)
        if not custom or isinstance(layer, OpLayer):
            layer.build(shapes if layer.multi_input else shapes[0])
    if layer.built and layer.checks_input_shape():
        _check_shapes(layer, shapes)
    if layer.built and layer.input_kind == "float" and not isinstance(layer, OpLayer) and \
            layer.dtype is not None and layer.dtype.kind == "f":
        for t in items:     # a graph hands arrays on uncast: the kernels would get mixed dtypes
            if t.dtype.kind == "f" and t.dtype != layer.dtype:
                raise ValueError(f"{layer!r} was built in {layer.dtype} but gets a {t.dtype} "
                                 f"input in this graph; give the model's Input the same dtype "
                                 f"or build the layer in {t.dtype}")
    if custom or getattr(layer, "infer_by_running", False):
        if kw_tensors:
            raise TypeError(f"{layer!r}: a layer without compute_output_shape takes no tensor "
                            f"keyword arguments in a functional graph")
        out_shapes, out_dtypes, listed_out = _infer_outputs(layer, items, listed, kwargs)
    else:
        out = layer.output_shape_for(shapes if layer.multi_input else shapes[0], **kwargs)
        listed_out = isinstance(out, list)
        out_shapes = [(None,) + tuple(s) for s in (out if listed_out else [out])]
        out_dtypes = layer.output_dtypes(len(out_shapes))
    node = Node(layer, items + [t for _, ts, _ in kw_tensors for t in ts], kwargs, listed)
    node.n_main = len(items)
    node.kw_spec = tuple((k, len(ts), lst) for k, ts, lst in kw_tensors) or None
    node.outputs = [SymbolicTensor(s, d, node, i) for i, (s, d) in enumerate(zip(out_shapes,
                                                                               out_dtypes))]
    node.listed_out = listed_out
    if out_shapes and len(out_shapes[0]) == 3:
        node.outputs[0].layout = _layout_of(layer, items)
    layer._inbound_nodes.append(node)
    return node.outputs if listed_out else node.outputs[0]


def _layout_of(layer, inputs):
    """The (layout, layer that gave it) of a 3-D first output of ``layer`` called on
    ``inputs``, or None where unknown (see ``Layer.output_layout``)."""
    own = layer.output_layout
    if own != "keep":
        return (own, layer) if own else None
    tags = [t.layout for t in inputs]
    if tags[0] is not None and all(t is not None and t[0] == tags[0][0] for t in tags):
        return tags[0]
    return None


def _check_shapes(layer, shapes):
    expected = layer.input_shape if layer.multi_input else [layer.input_shape]
    if len(expected) != len(shapes):
        raise ValueError(f"{layer!r}: expects {len(expected)} inputs, got {len(shapes)}")
    for i, (e, s) in enumerate(zip(expected, shapes)):
        if not shapes_match(e, s):
            which = f" {i}" if layer.multi_input else ""
            raise ValueError(f"{layer!r}: built for input{which} of shape {fmt_shape(e)}, called "
                             f"on shape {fmt_shape(s)}")


class _GraphLayer:
    """Marker base for layers (models) that take a list of inputs when they have several."""


# ---------------------------------------------------------------------------------------------
# ops on symbolic tensors: a node of an OpLayer

class OpLayer(Layer):
    """An ``nb.ops`` function applied in a functional graph (``x + y``, ``nb.ops.mean(x, 1)``):
    saved by op name and constant arguments; its backward comes from the op's."""

    multi_input = True
    infer_by_running = True

    def __init__(self, op, args, kwargs=None, name=None, dtype=None, **config):
        from . import ops
        if op not in ops.__all__ or op == "convert_to_tensor":
            raise ValueError(f"OpLayer: unknown op {op!r}")
        super().__init__(name=name or _auto_name(OpLayer, f"op_{op}"), dtype=dtype, **config)
        self.op, self.args, self.kwargs = op, list(args), dict(kwargs or {})

    def build(self, input_shape):
        self.input_shape = [check_shape(s, repr(self)) for s in input_shape]
        self.output_shape = None
        self.built = True

    def call(self, inputs):
        from . import ops
        it = iter(inputs)
        args = [_fill(a, it) for a in self.args]
        kwargs = {k: _fill(v, it) for k, v in self.kwargs.items()}
        return getattr(ops, self.op)(*args, **kwargs)

    def get_config(self):
        return {**super().get_config(), "op": self.op, "args": self.args, "kwargs": self.kwargs}


_SLOT = "__tensor__"


def _template(value, tensors):
    """Replace symbolic tensors in an op's arguments by placeholders (collected in order); the
    rest as JSON values (tuples, slices and Ellipsis tagged, so ``_fill`` gives them back)."""
    if isinstance(value, SymbolicTensor):
        tensors.append(value)
        return {_SLOT: len(tensors) - 1}
    if isinstance(value, tuple):
        return {"__tuple__": [_template(v, tensors) for v in value]}
    if isinstance(value, list):
        return [_template(v, tensors) for v in value]
    if isinstance(value, slice):
        return {"__slice__": [_template(v, tensors) for v in (value.start, value.stop,
                                                               value.step)]}
    if value is Ellipsis:
        return {"__ellipsis__": True}
    if isinstance(value, np.ndarray):
        return {"__array__": value.tolist(), "dtype": value.dtype.name}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, engine._TensorLike):
        raise TypeError("a functional graph cannot hold a tensor value as a constant; pass a "
                        "NumPy array or a number")
    return value


def _fill(value, it):
    """An op's argument from its template, with the next of ``it`` for each placeholder."""
    if isinstance(value, dict):
        if _SLOT in value:
            return next(it)
        if "__array__" in value:
            return np.asarray(value["__array__"], dtype=value["dtype"])
        if "__tuple__" in value:
            return tuple(_fill(v, it) for v in value["__tuple__"])
        if "__slice__" in value:
            return slice(*(_fill(v, it) for v in value["__slice__"]))
        if "__ellipsis__" in value:
            return Ellipsis
    if isinstance(value, list):
        return [_fill(v, it) for v in value]
    return value


def op_node(op, args, kwargs):
    """The symbolic result of ``nb.ops.<op>(*args, **kwargs)`` with symbolic operands."""
    tensors = []
    a = [_template(v, tensors) for v in args]
    kw = {k: _template(v, tensors) for k, v in kwargs.items()}
    layer = OpLayer(op, a, kw)
    return call_symbolic(layer, tensors, (), {})


# ---------------------------------------------------------------------------------------------
# the plan a functional model runs

class Plan:
    """The compiled graph of a functional model: value slots, and one step per node in an order
    where every node follows the nodes whose outputs it reads.

    ``steps``: (layer, input slots, output slots, kwargs, listed inputs, listed outputs,
    tensor-kwarg spec or None); the input slots of a step with tensor keyword arguments end with
    those tensors' slots.
    """

    def __init__(self, inputs, outputs, owner="Model"):
        self.inputs, self.outputs = list(inputs), list(outputs)
        for t in self.inputs:
            if not isinstance(t, SymbolicTensor) or not isinstance(t.node.layer, InputLayer):
                raise TypeError(f"{owner}: inputs must be tensors made by nb.Input, got {t!r}")
        for t in self.outputs:
            if not isinstance(t, SymbolicTensor):
                raise TypeError(f"{owner}: outputs must be symbolic tensors (results of layer "
                                f"calls on nb.Input tensors), got {type(t).__name__}")
        if len({id(t) for t in self.inputs}) != len(self.inputs):
            raise ValueError(f"{owner}: the same input is given twice")
        order = self._order(owner)
        slots = {}
        for t in self.inputs:
            slots[id(t)] = len(slots)
        used_inputs = set()
        self.nodes, self.steps = [], []
        for node in order:
            if isinstance(node.layer, InputLayer):
                t = node.outputs[0]
                if id(t) not in slots:
                    raise ValueError(f"{owner}: graph disconnected: an output depends on input "
                                     f"{node.layer.name!r}, which is not among the model's "
                                     f"inputs")
                used_inputs.add(id(t))
                continue
            ins = [slots[id(t)] for t in node.inputs]
            outs = []
            for t in node.outputs:
                slots[id(t)] = len(slots)
                outs.append(slots[id(t)])
            self.nodes.append(node)
            self.steps.append((node.layer, ins, outs, node.kwargs, node.listed, node.listed_out,
                               node.kw_spec))
        for t in self.inputs:
            if id(t) not in used_inputs:
                raise ValueError(f"{owner}: no output depends on input {t.node.layer.name!r}; "
                                 f"remove it from the model's inputs")
        missing = [t for t in self.outputs if id(t) not in slots]
        if missing:
            raise ValueError(f"{owner}: output {missing[0]!r} is not computed from the inputs")
        self.nslots = len(slots)
        self.input_slots = list(range(len(self.inputs)))
        self.output_slots = [slots[id(t)] for t in self.outputs]
        self.slot_of = slots
        # consumers of each slot (for the fused softmax/sigmoid + crossentropy path)
        self.readers = [0] * self.nslots
        for step in self.steps:
            for i in step[1]:
                self.readers[i] += 1
        self.producer = {}
        for k, step in enumerate(self.steps):
            for o in step[2]:
                self.producer[o] = k
        # masks: does any layer make one (an Embedding with mask_zero, Masking)?
        self.masking = any(getattr(node.layer, "produces_mask", False) for node in self.nodes)
        layers = []
        seen = set()
        for node in order:
            if id(node.layer) not in seen:
                seen.add(id(node.layer))
                layers.append(node.layer)
        self.layers = layers

    def _order(self, owner):
        """Nodes reachable from the outputs in call order (each after the nodes it reads),
        found depth-first with cycle detection."""
        order, state = [], {}
        for root in self.outputs:
            stack = [(root.node, False)]
            while stack:
                node, done = stack.pop()
                key = id(node)
                if done:
                    state[key] = 2
                    order.append(node)
                    continue
                if state.get(key) == 2:
                    continue
                if state.get(key) == 1:
                    raise ValueError(f"{owner}: the graph has a cycle through layer "
                                     f"{node.layer.name!r}")
                state[key] = 1
                stack.append((node, True))
                for t in reversed(node.inputs):
                    if t.node is None:
                        raise ValueError(f"{owner}: tensor {t!r} has no producing layer")
                    s = state.get(id(t.node))
                    if s == 1:
                        raise ValueError(f"{owner}: the graph has a cycle through layer "
                                         f"{t.node.layer.name!r}")
                    if s is None:
                        stack.append((t.node, False))
        order.sort(key=lambda n: n.serial)
        return order

    def output_shapes(self):
        return [t.shape for t in self.outputs]


def node_count(plan):
    return len(plan.steps)


def slot_sizes(shape):
    return int(math.prod(d for d in shape if d is not None))
