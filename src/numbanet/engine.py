"""The engine: tensors, variables, the gradient tape and the backward walk.

numbanet's layers keep their hand-written, fused forward and backward kernels; this module chains
them through any graph. Everything that computes is a *function* with two halves:

* ``forward`` returns its output(s) and a *context*: what its backward needs for that call (the
  context belongs to the call, not to the function, so a layer called three times keeps three);
* ``backward`` takes that context and the gradient of the output(s) and returns the gradients of
  the inputs; parameter gradients are *added* into the buffers a :class:`GradSink` hands out.

A :class:`GradientTape` records those calls (function, context, input and output tensors) while
it is active; ``tape.gradient`` walks the records backward, adding gradients where a value or a
weight is used more than once. The tape records, it does not compute: every kernel ran in the
forward pass. A model's ``fit`` does not go through a tape at all: the model walks its own graph
(:mod:`numbanet.models`), with the same layer functions and sinks.

Parameters live in per-device *arenas* (:class:`Arena`): one flat buffer for values and one for
gradients per chunk, handed out in creation order, so the variables of a model are (almost
always) one contiguous run, which one optimizer kernel call updates. Layers hold views; a layer
shared by several models is the same storage in each.
"""
import contextlib
import math
import numbers
import weakref

import numpy as np

from .backend import Backend, get_backend

__all__ = ["Tensor", "Variable", "GradientTape", "device", "current_backend",
           "convert_to_tensor", "stop_recording"]


# ---------------------------------------------------------------------------------------------
# the default device (for host arrays converted to tensors)

_devices = ["cpu"]


@contextlib.contextmanager
def device(name):
    """``with nb.device("cuda"):`` host arrays given to ops and ``convert_to_tensor`` go to that
    device (the CPU otherwise)."""
    get_backend(name)                   # a clear error for an unknown or unusable device
    _devices.append(name)
    try:
        yield
    finally:
        _devices.pop()


@contextlib.contextmanager
def default_device(name):
    """``device`` for a layer's own call (its device is known to be usable)."""
    _devices.append(name)
    try:
        yield
    finally:
        _devices.pop()


def current_backend():
    return get_backend(_devices[-1])


# ---------------------------------------------------------------------------------------------
# tensors and variables

def _ops():
    from . import ops
    return ops


_UFUNCS = {"add": "add", "subtract": "subtract", "multiply": "multiply", "true_divide": "divide",
           "divide": "divide", "matmul": "matmul", "negative": "negative", "power": "power",
           "maximum": "maximum", "minimum": "minimum", "square": "square", "sqrt": "sqrt",
           "exp": "exp", "log": "log", "absolute": "abs", "tanh": "tanh", "sign": "sign",
           "greater": "greater", "greater_equal": "greater_equal", "less": "less",
           "less_equal": "less_equal"}


class _TensorLike:
    """Operators, NumPy conversion and shape attributes shared by :class:`Tensor` and
    :class:`Variable`; every operator is a differentiable ``nb.ops`` call."""

    __slots__ = ()
    __array_priority__ = 1000

    @property
    def shape(self):
        return tuple(int(d) for d in self.value.shape)

    @property
    def dtype(self):
        return np.dtype(self.value.dtype)

    @property
    def ndim(self):
        return len(self.value.shape)

    @property
    def size(self):
        return int(math.prod(self.value.shape))

    @property
    def device(self):
        return self.backend.name

    def numpy(self):
        """A NumPy copy of the value (on the host)."""
        return np.array(self.backend.to_numpy(self.value), copy=True)

    def __array__(self, dtype=None, copy=None):
        a = self.backend.to_numpy(self.value)
        return a if dtype is None else a.astype(dtype)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        """``ndarray + tensor`` and the like go to the differentiable op; other ufuncs compute
        on NumPy copies."""
        name = _UFUNCS.get(ufunc.__name__)
        if name == "power" and method == "__call__" and not kwargs and \
                not isinstance(inputs[0], _TensorLike):
            return inputs[1].__rpow__(inputs[0])            # np.float32(2) ** tensor
        if method == "__call__" and name is not None and not kwargs:
            return getattr(_ops(), name)(*inputs)
        inputs = [np.asarray(a) if isinstance(a, _TensorLike) else a for a in inputs]
        return getattr(ufunc, method)(*inputs, **kwargs)

    def _scalar(self, kind):
        if self.size != 1:
            raise TypeError(f"only a tensor of one element converts to {kind.__name__}, got shape "
                            f"{self.shape}")
        return kind(self.backend.to_numpy(self.value).reshape(-1)[0])

    def __float__(self):
        return self._scalar(float)

    def __int__(self):
        return self._scalar(int)

    def __index__(self):
        if self.dtype.kind not in "iu":
            raise TypeError(f"only an integer tensor can be used as an index, got {self.dtype}")
        return self._scalar(int)

    def __bool__(self):
        return self._scalar(bool)

    def __len__(self):
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __add__(self, other):
        return _ops().add(self, other)

    def __radd__(self, other):
        return _ops().add(other, self)

    def __sub__(self, other):
        return _ops().subtract(self, other)

    def __rsub__(self, other):
        return _ops().subtract(other, self)

    def __mul__(self, other):
        return _ops().multiply(self, other)

    def __rmul__(self, other):
        return _ops().multiply(other, self)

    def __truediv__(self, other):
        return _ops().divide(self, other)

    def __rtruediv__(self, other):
        return _ops().divide(other, self)

    def __matmul__(self, other):
        return _ops().matmul(self, other)

    def __rmatmul__(self, other):
        return _ops().matmul(other, self)

    def __pow__(self, exponent):
        return _ops().power(self, exponent)

    def __rpow__(self, base):
        """``base ** t`` for a positive real number ``base``: exp(t log base)."""
        if isinstance(base, (bool, np.bool_)) or not isinstance(base, (int, float, np.number)) \
                or not np.isreal(base) or not 0 < base < math.inf:
            raise TypeError(f"base ** tensor takes a positive finite real number as the base, "
                            f"got {base!r}")
        return _ops().exp(self * math.log(base))

    # ``t < u`` and the like are the elementwise comparisons of nb.ops (1.0 / 0.0 floats, no
    # gradient); ``0 < t`` comes here reflected. ``==`` and ``!=`` stay identity comparisons
    # (tensors and variables are dictionary keys and set members): nb.ops.equal / not_equal
    # are the elementwise forms.
    def __lt__(self, other):
        return _ops().less(self, other)

    def __le__(self, other):
        return _ops().less_equal(self, other)

    def __gt__(self, other):
        return _ops().greater(self, other)

    def __ge__(self, other):
        return _ops().greater_equal(self, other)

    def __neg__(self):
        return _ops().negative(self)

    def __pos__(self):
        return self

    def __abs__(self):
        return _ops().abs(self)

    def __getitem__(self, key):
        return _ops().getitem(self, key)

    @property
    def T(self):
        return _ops().transpose(self)


class Tensor(_TensorLike):
    """A value on a device (a NumPy array on the CPU, a numba device array on CUDA), as ops,
    layers and models called outside a model's ``fit`` hand it out. Convert with
    ``np.asarray(t)``, ``t.numpy()`` or ``float(t)``."""

    __slots__ = ("value", "backend", "mask", "__weakref__")

    def __init__(self, value, backend=None, mask=None):
        self.value = value
        self.backend = backend if backend is not None else get_backend("cpu")
        self.mask = mask

    def __repr__(self):
        if self.size <= 16:
            body = np.array2string(self.backend.to_numpy(self.value), separator=", ")
        else:
            body = "..."
        return f"<Tensor shape={self.shape} dtype={self.dtype.name} device={self.device}: {body}>"


class Variable(_TensorLike):
    """A layer's weight (``layer.params[key]``) or non-trainable state (``layer.buffers[key]``),
    by reference: it follows the layer when the layer's storage moves. ``trainable`` is True
    for parameters of a trainable layer. The optimizers and the tape take variables."""

    __slots__ = ("layer", "key", "kind", "__weakref__")

    def __init__(self, layer, key, kind="param"):
        self.layer, self.key, self.kind = layer, key, kind

    @property
    def value(self):
        return (self.layer.params if self.kind == "param" else self.layer.buffers)[self.key]

    @property
    def backend(self):
        return self.layer.backend

    @property
    def name(self):
        return f"{self.layer.name}/{self.key}"

    @property
    def path(self):
        return self.name

    @property
    def trainable(self):
        return self.kind == "param" and self.layer.trainable

    @property
    def grad(self):
        """The layer's gradient buffer of this weight (what ``fit`` fills)."""
        return self.layer.grads.get(self.key) if self.kind == "param" else None

    def assign(self, value):
        """Set the value in place (shape checked)."""
        value = value.value if isinstance(value, _TensorLike) else value
        if tuple(np.shape(value)) != self.shape and np.size(value) != self.size:
            raise ValueError(f"{self.name}: cannot assign a value of shape {np.shape(value)} to "
                             f"a variable of shape {self.shape}")
        self.backend.copy_(self.value, value if hasattr(value, "shape") else np.asarray(value))
        return self

    def __repr__(self):
        return f"<Variable {self.name!r} shape={self.shape} dtype={self.dtype.name}>"

    def __eq__(self, other):
        return isinstance(other, Variable) and other.layer is self.layer and \
            other.key == self.key and other.kind == self.kind

    def __hash__(self):
        return hash((id(self.layer), self.key, self.kind))


def backend_of(*values):
    """The backend of the tensors among ``values`` (the current device when there is none);
    ValueError when they live on different devices."""
    found = None
    for v in values:
        be = getattr(v, "backend", None) if isinstance(v, _TensorLike) else None
        if be is not None:
            if found is not None and be is not found:
                raise ValueError(f"operands on different devices: {found.name} and {be.name}; "
                                 f"move them with model.to(...) or nb.ops.convert_to_tensor")
            found = be
    return found if found is not None else current_backend()


def to_backend(be, a, dtype=None):
    """``be.asarray(a, dtype)`` that keeps a 0-d array 0-d (the backends' ``asarray`` makes it
    1-d, as ``np.ascontiguousarray``; NumPy and PyTorch keep scalars of shape ())."""
    out = be.asarray(a, dtype=dtype)
    return out.reshape(()) if len(np.shape(a)) == 0 and len(out.shape) else out


def convert_to_tensor(value, dtype=None, device=None):
    """``value`` (an array, a number, a nested list, a tensor) as a :class:`Tensor` on ``device``
    (default: the tensor's own device, else the current device). Integer and bool inputs keep
    their dtype; float64 stays float64; other numbers become float32 unless ``dtype`` says."""
    be = get_backend(device) if device is not None else None
    if isinstance(value, _TensorLike):
        src = value.backend
        be = be or src
        if be is src and (dtype is None or np.dtype(dtype) == value.dtype):
            return value if isinstance(value, Tensor) else Tensor(value.value, src)
        host = src.to_numpy(value.value)
        return Tensor(to_backend(be, host, dtype or host.dtype), be)
    be = be or current_backend()
    if not isinstance(value, np.ndarray) and hasattr(value, "__cuda_array_interface__"):
        return Tensor(to_backend(be, value, dtype), be)
    try:
        host = np.asarray(value)
    except Exception as e:
        raise TypeError(f"convert_to_tensor: could not convert {type(value).__name__} to an "
                        f"array ({e})") from None
    if host.dtype.kind not in "biuf":
        raise TypeError(f"convert_to_tensor: expected numbers, got dtype {host.dtype}")
    if dtype is None:
        dtype = host.dtype if host.dtype.kind in "biu" or host.dtype == np.float64 \
            and isinstance(value, np.ndarray) else np.float32
    return Tensor(to_backend(be, host, dtype), be)


# ---------------------------------------------------------------------------------------------
# structure version: bumped whenever weights are created or moved, or trainability or a
# model's graph changes, so models and optimizers can cache what depends on those

_structure = [0]


def structure_changed():
    _structure[0] += 1


def structure_version():
    return _structure[0]


# ---------------------------------------------------------------------------------------------
# parameter storage

_chunk_serial = [0]


class _Chunk:
    """Flat value and gradient buffers of one arena chunk (``serial``: creation order;
    ``views``: cached (values, gradients) slices of runs, keyed by (start, stop))."""

    __slots__ = ("params", "grads", "capacity", "used", "serial", "views", "__weakref__")

    def __init__(self, backend, dtype, capacity):
        self.params = backend.empty((capacity,), dtype)
        self.grads = backend.zeros((capacity,), dtype)
        self.capacity, self.used = capacity, 0
        _chunk_serial[0] += 1
        self.serial = _chunk_serial[0]
        self.views = {}

    def run(self, start, stop):
        """(values, gradients) flat views of [start, stop)."""
        v = self.views.get((start, stop))
        if v is None:
            if len(self.views) > 64:
                self.views.clear()
            v = self.views[(start, stop)] = (self.params[start:stop], self.grads[start:stop])
        return v


class Arena:
    """Parameter storage of one backend and dtype: chunks handed out in creation order, so the
    weights of layers built one after another are one contiguous run of a chunk."""

    MIN_CHUNK = 1 << 16
    MAX_GROWTH = 1 << 24

    def __init__(self, backend, dtype):
        self.backend, self.dtype = backend, np.dtype(dtype)
        self._chunk = None

    def alloc(self, shape, value=None):
        """(chunk, offset, value view, gradient view) for a new weight of ``shape``; the value
        is ``value`` (a host or device array) when given."""
        size = int(math.prod(shape))
        c = self._chunk
        if c is None or c.used + size > c.capacity:
            last = 0 if c is None else c.capacity
            cap = max(size, self.MIN_CHUNK, min(2 * last, self.MAX_GROWTH))
            c = self._chunk = _Chunk(self.backend, self.dtype, cap)
        off = c.used
        c.used += size
        p = c.params[off:off + size].reshape(shape)
        g = c.grads[off:off + size].reshape(shape)
        if value is not None:
            self.backend.copy_(p, value)
        return c, off, p, g


_arenas = {}


def arena(backend, dtype):
    key = (backend.name, np.dtype(dtype).str)
    if key not in _arenas:
        _arenas[key] = Arena(backend, dtype)
    return _arenas[key]


def contiguous_runs(slices):
    """Group (chunk, offset, size, payload) items into maximal runs of adjacent storage:
    [(chunk, start, stop, [payloads])], sorted by chunk creation and offset."""
    order = sorted(slices, key=lambda s: (s[0].serial, s[1]))
    runs = []
    for chunk, off, size, payload in order:
        if runs and runs[-1][0] is chunk and runs[-1][2] == off:
            runs[-1][2] = off + size
            runs[-1][3].append(payload)
        else:
            runs.append([chunk, off, off + size, [payload]])
    return [tuple(r) for r in runs]


# ---------------------------------------------------------------------------------------------
# gradient sinks: where parameter gradients go during a backward walk

class GradSink:
    """Hands each layer the buffers its parameter gradients are added into.

    ``layer_grads(layer)`` -> None (the layer's parameter gradients are not wanted: skip them) or
    ``(grads, accumulate)``: a dict key -> buffer, and whether to add into it (False: overwrite,
    for the first contribution). ``add(variable, g)`` adds an explicit gradient (a variable used
    as an op's input). ``wants(layer)``: whether any of the layer's parameters are wanted.
    """

    def wants(self, layer):
        raise NotImplementedError

    def layer_grads(self, layer):
        raise NotImplementedError

    def add(self, variable, g):
        raise NotImplementedError


def _copy_into(be, dst, src):
    be.scale(be.kernel_view(src, (src.size,)), 1.0, be.kernel_view(dst, (dst.size,)))


def _add_into(be, dst, src):
    be.axpy(1.0, be.kernel_view(src, (src.size,)), be.kernel_view(dst, (dst.size,)))


class LayerSink(GradSink):
    """Gradients into the layers' own buffers (``layer.grads``, arena views): the fit path. The
    first contribution to a layer overwrites its buffers, later ones add; ``finish`` zeroes the
    wanted weights nothing reached."""

    __slots__ = ("trainable_only", "touched")

    def __init__(self, trainable_only=True):
        self.trainable_only = trainable_only
        # id(layer) -> None (every key written this step) or the set of keys written
        self.touched = {}

    def wants(self, layer):
        return bool(layer.params) and (layer._trainable or not self.trainable_only)

    def layer_grads(self, layer):
        if not layer.params or not (layer._trainable or not self.trainable_only):
            return None
        touched = self.touched
        lid = id(layer)
        if lid not in touched:
            touched[lid] = None
            return layer.grads, False
        done = touched[lid]
        if done is not None:
            for k in layer.params:
                if k not in done:
                    layer.backend.fill_(layer.grads[k], 0.0)
            touched[lid] = None
        return layer.grads, True

    def add(self, variable, g):
        layer, key = variable.layer, variable.key
        if not self.wants(layer):
            return
        dst = layer.grads[key]
        lid = id(layer)
        done = self.touched.get(lid, ())
        if done is None or key in done:
            _add_into(layer.backend, dst, g)
        else:
            _copy_into(layer.backend, dst, g)
            self.touched[lid] = set(done) | {key}

    def finish(self, variables):
        """Zero the gradients of ``variables`` no backward reached (they get no update
        contribution from this step)."""
        touched = self.touched
        for v in variables:
            lid = id(v.layer)
            if lid in touched:
                done = touched[lid]
                if done is None or v.key in done:
                    continue
            v.backend.fill_(v.layer.grads[v.key], 0.0)


class TapeSink(GradSink):
    """Gradients of requested variables into fresh buffers (``tape.gradient``); other parameters
    of a layer whose weight is requested go to scratch. A variable requested twice gets its
    gradient at each place (``result(i)``)."""

    def __init__(self, variables):
        self.index = {}
        self.first = []                 # for each requested position, that of its first request
        for i, v in enumerate(variables):
            self.first.append(self.index.setdefault(id(v.layer), {}).setdefault(v.key, i))
        self.results = [None] * len(variables)

    def result(self, i):
        """The gradient of the ``i``-th requested variable (None if nothing reached it)."""
        return self.results[self.first[i]]

    def wants(self, layer):
        return id(layer) in self.index

    def layer_grads(self, layer):
        keys = self.index.get(id(layer))
        if not keys:
            return None
        be = layer.backend
        touched = [self.results[i] is not None for i in keys.values()]
        accumulate = any(touched)
        grads = {}
        for k, p in layer.params.items():
            i = keys.get(k)
            if i is None:
                grads[k] = be.empty(tuple(p.shape), p.dtype)
            else:
                if self.results[i] is None:
                    self.results[i] = (be.zeros if accumulate else be.empty)(tuple(p.shape),
                                                                               p.dtype)
                grads[k] = self.results[i]
        return grads, accumulate

    def add(self, variable, g):
        i = self.index.get(id(variable.layer), {}).get(variable.key)
        if i is None:
            return
        be = variable.backend
        if self.results[i] is None:
            self.results[i] = be.empty(tuple(g.shape), g.dtype)
            _copy_into(be, self.results[i], g)
        else:
            _add_into(be, self.results[i], g)


class LegacySink(GradSink):
    """``layer.backward(g)``: overwrite ``layer.grads`` (the stateful single-layer API)."""

    def wants(self, layer):
        return bool(layer.params)

    def layer_grads(self, layer):
        return (layer.grads, False) if layer.params else None

    def add(self, variable, g):
        _copy_into(variable.backend, variable.layer.grads[variable.key], g)


# ---------------------------------------------------------------------------------------------
# recording

class _Entry:
    """One recorded call: ``fn`` (an op or a layer), its context, input values (Tensor,
    Variable or None for constants) and output tensors."""

    __slots__ = ("fn", "ctx", "inputs", "outputs", "is_layer", "listed")

    def __init__(self, fn, ctx, inputs, outputs, is_layer, listed):
        self.fn, self.ctx, self.inputs, self.outputs = fn, ctx, inputs, outputs
        self.is_layer, self.listed = is_layer, listed


# Stack of recording scopes: calls are recorded on every tape of the innermost scope. A layer
# whose forward is written with ops runs it under a local tape in a scope of its own, so outer
# tapes record the layer call as one entry.
_scopes = [[]]
_paused = [0]


_training = [False]


def current_training():
    """The ``training`` flag of the enclosing layer or model call (False outside any)."""
    return _training[-1]


class training_scope:
    """``with training_scope(flag):`` calls inside see ``current_training() == flag``."""

    __slots__ = ("flag",)

    def __init__(self, training):
        self.flag = bool(training)

    def __enter__(self):
        _training.append(self.flag)

    def __exit__(self, *exc):
        _training.pop()


def recording():
    """True when some tape records the calls made now."""
    return bool(_scopes[-1]) and not _paused[0]


@contextlib.contextmanager
def stop_recording():
    """Calls made inside are not recorded on any tape (their results are constants)."""
    _paused[0] += 1
    try:
        yield
    finally:
        _paused[0] -= 1


@contextlib.contextmanager
def local_scope(tape):
    """Record only on ``tape`` inside (a layer's own forward written with ops)."""
    _scopes.append([tape])
    saved, _paused[0] = _paused[0], 0
    try:
        yield
    finally:
        _paused[0] = saved
        _scopes.pop()


# Losses added with ``Layer.add_loss`` inside the calls running now (a stack: one list per call
# of a layer whose forward is written with ops), and the gradients waiting for them during a
# backward pass ({id(loss tensor): gradient}, taken by the call that added the loss).
_added = []
_added_seeds = [{}]


@contextlib.contextmanager
def collect_losses():
    """Inside: ``add_loss`` appends to the list this yields."""
    _added.append([])
    try:
        yield _added[-1]
    finally:
        _added.pop()


def add_loss(value, where):
    """Add the scalar tensor ``value`` to the losses of the innermost call running now."""
    if not _added:
        raise RuntimeError(f"{where}: add_loss() adds a term to the loss of a call; use it inside "
                           f"call()")
    _added[-1].append(value)


def pass_loss_up(value):
    """A finished call's added loss is also a loss of the call around it (if any)."""
    if _added:
        _added[-1].append(value)


@contextlib.contextmanager
def added_loss_seeds(seeds):
    """Gradients for added losses ({id(tensor): gradient}) during the backward pass inside."""
    _added_seeds.append(seeds)
    try:
        yield
    finally:
        _added_seeds.pop()


def take_added_seeds(tensors):
    """{id: gradient} of those of ``tensors`` that have a waiting gradient (now taken)."""
    pending = _added_seeds[-1]
    return {id(t): pending.pop(id(t)) for t in tensors if id(t) in pending}


def has_added_seeds(tensors):
    pending = _added_seeds[-1]
    return any(id(t) in pending for t in tensors)


def record(fn, ctx, inputs, outputs, is_layer=False, listed=False):
    """Record a call on the tapes of the current scope that track one of its inputs (or every
    tape for a layer with trainable weights). ``listed``: the call returned a list of outputs
    (its backward takes a list of gradients)."""
    if not _scopes[-1] or _paused[0]:
        return
    entry = None
    for tape in _scopes[-1]:
        if tape._tracks(fn, inputs, is_layer):
            if entry is None:
                entry = _Entry(fn, ctx, tuple(inputs), tuple(outputs), is_layer, listed)
            tape._add(entry)
        else:
            for o in outputs:
                tape._seen.add(o)


def _sum_grads(be, a, b):
    """a + b for two gradients of one value (neither is modified: either may be shared)."""
    if a is None:
        return b
    if b is None:
        return a
    out = be.empty(tuple(a.shape), a.dtype)
    _copy_into(be, out, a)
    _add_into(be, out, b)
    return out


_SECOND_ORDER = ("GradientTape.gradient: the target depends on a gradient that tape.gradient "
                 "returned while this tape was recording; second-order gradients (a gradient "
                 "of a gradient) are not supported. To use that gradient as a constant, pass "
                 "it through nb.ops.stop_gradient(...) first")


def _grad_as(be, g, like):
    """The gradient ``g`` in the dtype of the value ``like`` it belongs to (as PyTorch and
    TensorFlow, a gradient has its source's dtype): a float64 gradient reaching a float32 tensor
    or weight is converted here, never handed on as is (kernels would read its bits as float32)."""
    dtype = np.dtype(like.dtype)
    if np.dtype(g.dtype) == dtype:
        return g
    return to_backend(be, g, dtype)


def _layer_wants(fn, sink, memo):
    """Does the sink want a parameter gradient of layer ``fn`` or of a layer inside it?"""
    key = id(fn)
    if key not in memo:
        memo[key] = sink.wants(fn) or any(sink.wants(l) for l in fn._sublayers_deep())
    return memo[key]


def backprop(entries, seeds, sink, input_ids=(), refuse=()):
    """Walk ``entries`` (in call order) backward from ``seeds`` {id(tensor): gradient}; parameter
    gradients go to ``sink``. Returns the gradients of the tensors whose ids are ``input_ids``
    (a dict id -> gradient or None). A seed depending on a tensor whose id is in ``refuse`` (a
    gradient returned while the tape was recording) is a RuntimeError."""
    # what reaches the seeds
    live = set(seeds)
    chosen = []
    for e in reversed(entries):
        if any(id(o) in live for o in e.outputs):
            chosen.append(e)
            for t in e.inputs:
                if t is not None:
                    if refuse and id(t) in refuse:
                        raise RuntimeError(_SECOND_ORDER)
                    live.add(id(t))
    if not chosen:          # nothing recorded leads to a seed: an input seeded itself (a
        return {i: seeds.get(i) for i in input_ids}     # call() returning its input) or none
    # what depends on a wanted input or parameter
    dep = set(input_ids)
    memo = {}
    needed = []
    for e in reversed(chosen):
        hit = False
        for t in e.inputs:
            if t is None:
                continue
            if id(t) in dep or (type(t) is Variable and sink.wants(t.layer)):
                hit = True
        if e.is_layer and not hit:
            hit = _layer_wants(e.fn, sink, memo)
        if hit:
            needed.append(e)
            for o in e.outputs:
                dep.add(id(o))
    grads = dict(seeds)
    for e in reversed(needed):
        gout = [grads.get(id(o)) for o in e.outputs]
        if all(g is None for g in gout):
            continue
        be = e.outputs[0].backend
        for k, (o, g) in enumerate(zip(e.outputs, gout)):
            if g is None:
                gout[k] = be.zeros(o.shape, o.dtype)
        need = [t is not None and (id(t) in dep or type(t) is Variable and sink.wants(t.layer))
                for t in e.inputs]
        if e.is_layer:
            gin = e.fn._backward_entry(e.ctx, gout if e.listed else gout[0], sink, need)
        else:
            gin = e.fn.backward(e.ctx, gout if len(gout) > 1 else gout[0], need)
        for t, g, n in zip(e.inputs, gin, need):
            if not n or g is None:
                continue
            g = _grad_as(be, g, t)
            if type(t) is Variable:
                sink.add(t, g)
            else:
                grads[id(t)] = _sum_grads(be, grads.get(id(t)), g)
    return {i: grads.get(i) for i in input_ids}


class GradientTape:
    """Records the ops, layers, losses and models called inside ``with`` for ``gradient``.

    ``tape.gradient(target, sources)``: the gradient of the scalar ``target`` with respect to each
    source (a trainable weight from ``model.trainable_weights`` or a tensor marked with
    ``tape.watch``), in the order given; None for a source the target does not depend on (as
    TensorFlow). A non-scalar target needs ``output_gradients`` (the gradient of some scalar with
    respect to it). A tape gives one ``gradient`` unless ``persistent=True``. Trainable weights
    are watched automatically (``watch_accessed_variables=False`` turns that off); any other
    weight (a frozen layer's, a buffer) gets None unless ``tape.watch(weight)``, as a
    non-trainable TensorFlow variable or a torch tensor with ``requires_grad=False``: a custom
    loop applying the gradients of ``model.weights`` does not train a frozen layer.
    """

    def __init__(self, persistent=False, watch_accessed_variables=True):
        self.persistent = bool(persistent)
        self.watch_accessed_variables = bool(watch_accessed_variables)
        self._entries = []
        self._tracked = set()           # ids of tensors produced or watched under this tape
        self._keep = []                 # watched tensors (their ids must stay valid)
        # ids of gradients tape.gradient returned while this tape recorded: the backward pass
        # that made them is not recorded, so a target computed from one would miss that path;
        # second-order gradients are refused instead (a later tape takes them as constants)
        self._from_gradient = set()
        self._watched_layers = set()
        self._seen = weakref.WeakSet()  # computed under the tape from nothing it tracks
        self._used = False
        self._active = False

    def __enter__(self):
        if self._active:
            raise RuntimeError("GradientTape: this tape is already recording; a tape cannot be "
                               "entered again inside its own `with` block (its calls would be "
                               "recorded twice); use a second tape")
        if self._used and not self.persistent:
            raise RuntimeError("GradientTape: this tape was already used for gradient(); create "
                               "a new tape (or pass persistent=True)")
        _scopes[-1].append(self)
        self._active = True
        return self

    def __exit__(self, *exc):
        scope = _scopes[-1]
        for i in range(len(scope) - 1, -1, -1):
            if scope[i] is self:
                del scope[i]
                break
        self._active = False
        return False

    def watch(self, value):
        """Track ``value`` (a tensor, a variable, or a list of them) so that ``gradient`` can
        differentiate with respect to it."""
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, Variable):
                self._watched_layers.add((id(v.layer), v.key))
                self._keep.append(v)
            elif isinstance(v, Tensor):
                self._tracked.add(id(v))
                self._keep.append(v)
            else:
                raise TypeError(f"GradientTape.watch: expected a Tensor or a Variable, got "
                                f"{type(v).__name__}; use nb.ops.convert_to_tensor(x) first")

    def _var_watched(self, v):
        return (v.trainable and self.watch_accessed_variables) or \
            (id(v.layer), v.key) in self._watched_layers

    def _tracks(self, fn, inputs, is_layer):
        for t in inputs:
            if t is None:
                continue
            if type(t) is Variable:
                if self._var_watched(t):
                    return True
            elif id(t) in self._tracked:
                return True
        if is_layer:
            return self.watch_accessed_variables and fn._has_trainable() or \
                any(lid == id(l) for l in [fn, *fn._sublayers_deep()]
                    for lid, _ in self._watched_layers)
        return False

    def _add(self, entry):
        self._entries.append(entry)
        for o in entry.outputs:
            self._tracked.add(id(o))

    def gradient(self, target, sources, output_gradients=None):
        """Gradients of ``target`` with respect to ``sources`` (one source, or a list / tuple of
        them; the result has the same structure)."""
        if self._used and not self.persistent:
            raise RuntimeError("GradientTape.gradient can only be called once on a non-persistent "
                               "tape; pass persistent=True to call it several times")
        single = not isinstance(sources, (list, tuple))
        srcs = [sources] if single else list(sources)
        for i, s in enumerate(srcs):
            if not isinstance(s, (Tensor, Variable)):
                raise TypeError(f"GradientTape.gradient: source {i} is a "
                                f"{type(s).__name__}; sources are Variables "
                                f"(model.trainable_weights) or Tensors marked with tape.watch")
        if not isinstance(target, Tensor):
            raise TypeError(f"GradientTape.gradient: the target must be a Tensor computed under "
                            f"the tape, got {type(target).__name__}")
        if id(target) in self._from_gradient:
            raise RuntimeError(_SECOND_ORDER)
        if id(target) not in self._tracked:
            if target in self._seen:             # computed here from constants: no gradient
                self._used = True
                return None if single else [None] * len(srcs)
            raise ValueError("GradientTape.gradient: the target was not computed under this tape "
                             "(compute it inside the tape's `with` block)")
        be = target.backend
        if output_gradients is None:
            if target.size != 1:
                raise ValueError(f"GradientTape.gradient: the target must be a scalar, got shape "
                                 f"{target.shape}; reduce it (nb.ops.sum / mean) or pass "
                                 f"output_gradients")
            seed = be.full(target.shape, 1.0, target.dtype)
        else:
            og = output_gradients.value if isinstance(output_gradients, _TensorLike) \
                else np.asarray(output_gradients)
            if tuple(og.shape) != target.shape:
                raise ValueError(f"GradientTape.gradient: output_gradients has shape "
                                 f"{tuple(og.shape)}, the target {target.shape}")
            seed = be.asarray(og, dtype=target.dtype).reshape(target.shape)
        # a variable this tape does not watch (a frozen layer's, a buffer) gets None, so that
        # apply_gradients(zip(grads, model.weights)) leaves it alone
        watched = [isinstance(s, Variable) and self._var_watched(s) for s in srcs]
        sink = TapeSink([s for s, w in zip(srcs, watched) if w])
        tensor_ids = [id(s) for s in srcs if isinstance(s, Tensor)]
        got = backprop(self._entries, {id(target): seed}, sink, tensor_ids, self._from_gradient)
        if id(target) in tensor_ids and got.get(id(target)) is None:
            got[id(target)] = seed
        out, vi = [], 0
        for s, w in zip(srcs, watched):
            if w:
                g = sink.result(vi)
                vi += 1
            elif isinstance(s, Variable):
                g = None
            else:
                g = got.get(id(s))
            out.append(None if g is None else Tensor(g, s.backend))
        self._used = True
        if not self.persistent:
            self.reset()
            self._seen = weakref.WeakSet()
        if recording():
            # tapes recording now track the results, so a target computed from them is seen
            # to depend on them (and refused) rather than taken for a constant
            results = [g for g in out if g is not None]
            for tape in _scopes[-1]:
                tape._tracked.update(id(g) for g in results)
                tape._from_gradient.update(id(g) for g in results)
                tape._keep.extend(results)
        return out[0] if single else out

    def reset(self):
        """Forget everything recorded so far."""
        self._entries, self._tracked, self._keep = [], set(), []
        self._from_gradient = set()


def is_number(v):
    return isinstance(v, numbers.Number) and not isinstance(v, bool)


__all__ += ["Arena", "arena", "GradSink", "LayerSink", "TapeSink", "LegacySink", "record",
            "recording", "backprop", "backend_of", "Backend"]


def variable_runs(variables, separate=False):
    """(values, gradients, layout) for updating ``variables``: the flat views of each maximal
    run of adjacent arena storage (one kernel call updates a run), and per run the tuple of its
    variables. A weight whose array is not its arena slot (or every weight, with ``separate``)
    is a run of its own (its flat view)."""
    items, loose = [], []
    for v in variables:
        layer = v.layer
        st = layer._storage.get(v.key)
        if separate or st is None or st[2] is not layer.params[v.key]:
            loose.append(v)
        else:
            items.append((st[0], st[1], v.size, v))
    params, grads, layout = [], [], []
    for chunk, start, stop, vs in contiguous_runs(items):
        p, g = chunk.run(start, stop)
        params.append(p)
        grads.append(g)
        layout.append(tuple(vs))
    for v in loose:
        p, g = v.layer.params[v.key], v.layer.grads[v.key]
        params.append(p.reshape(v.size))
        grads.append(g.reshape(v.size))
        layout.append((v,))
    return params, grads, layout
