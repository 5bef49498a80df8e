"""Optimizers: Keras-style names and arguments, PyTorch ``torch.optim`` update formulas.

``opt.step(params, grads)`` updates the arrays of ``params`` in place (they may be views into a
model's flat buffer) with one kernel call per array; per-parameter state (momentum, moments...) is
created at the first step, keyed by position in the list. Gradient clipping (``clipnorm``,
``clipvalue`` or ``global_clipnorm``, Keras semantics) rescales ``grads`` in place first.
``get_state``/``set_state`` save and restore everything a resumed run needs; ``get`` maps names
("adam", "sgd"...) to instances.
"""
import inspect
import math
import numbers

import numpy as np

from . import schedules
from .backend import get_backend

OPTIMIZERS = {}


def register(cls):
    """Class decorator: make ``get(cls.__name__.lower())`` return a new ``cls()``."""
    OPTIMIZERS[cls.__name__.lower()] = cls
    return cls


def get(identifier):
    """An optimizer instance from a registered name (case-insensitive) or an instance (returned as is)."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in OPTIMIZERS:
        return OPTIMIZERS[identifier.lower()]()
    raise ValueError(f"unknown optimizer {identifier!r}; expected an Optimizer instance or one of: "
                     f"{', '.join(sorted(OPTIMIZERS))}")


def _number(name, value, ok, rule):
    """``value`` as a float when it is a finite real number passing ``ok``, else ValueError."""
    if (isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real)
            or not math.isfinite(value) or not ok(float(value))):
        raise ValueError(f"`{name}` must be {rule}; received {name}={value!r}")
    return float(value)


def _positive(name, value):
    return _number(name, value, lambda x: x > 0, "a finite number > 0")


def _nonnegative(name, value):
    return _number(name, value, lambda x: x >= 0, "a finite number >= 0")


def _unit(name, value):
    return _number(name, value, lambda x: 0 <= x < 1, "a number in [0, 1)")


def _flag(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"`{name}` must be True or False; received {name}={value!r}")
    return bool(value)


def _move(backend, array):
    """``array`` (host or device) as an array of ``backend``, same shape (0-d stays 0-d)."""
    return backend.asarray(array).reshape(array.shape)


class _Slots(dict):
    """One parameter's state arrays; a slot its configuration does not use reads as ``empty``."""

    def __init__(self, empty):
        super().__init__()
        self.empty = empty

    def __missing__(self, name):
        return self.empty


class Optimizer:
    """Base class: learning rate (or schedule), clipping, iteration count and state bookkeeping.

    A subclass stores its constructor arguments under the same names (``get_config`` reads them
    back), lists the state arrays it needs in ``_slots()`` and defines
    ``_update(param, grad, slots, lr, step)``: one kernel call updating the flat ``param`` in place.
    """

    def __init__(self, learning_rate, clipnorm=None, clipvalue=None, global_clipnorm=None):
        self.learning_rate = learning_rate
        self.clipnorm = None if clipnorm is None else _positive("clipnorm", clipnorm)
        self.clipvalue = None if clipvalue is None else _positive("clipvalue", clipvalue)
        self.global_clipnorm = (None if global_clipnorm is None
                                else _positive("global_clipnorm", global_clipnorm))
        clips = {k: v for k, v in (("clipnorm", clipnorm), ("clipvalue", clipvalue),
                                   ("global_clipnorm", global_clipnorm)) if v is not None}
        if len(clips) > 1:
            raise ValueError("only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be set; "
                             f"received {', '.join(f'{k}={v!r}' for k, v in clips.items())}")
        self.iterations = 0
        self._backend = get_backend("cpu")
        self._state = []                                    # one _Slots per parameter position

    # ------------------------------------------------------------------ hyperparameters
    @property
    def learning_rate(self):
        """A float > 0, or a callable ``f(iterations) -> float`` evaluated at every step.

        Setting a ``schedules.serialize`` dict builds that schedule (as ``from_config`` does).
        """
        return self._learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        if isinstance(value, dict):
            value = schedules.deserialize(value)
        self._learning_rate = value if callable(value) else _positive("learning_rate", value)

    def _current_learning_rate(self):
        lr = self._learning_rate
        if not callable(lr):
            return lr
        value = lr(self.iterations)
        return _number("learning_rate", value, lambda x: x >= 0,
                       f"a finite number >= 0 (schedule at iterations={self.iterations})")

    @property
    def backend(self):
        """The backend whose kernels run the updates; setting it moves existing state there."""
        return self._backend

    @backend.setter
    def backend(self, backend):
        new, old = get_backend(backend), self._backend
        if new is not old:
            for slots in self._state:
                slots.empty = _move(new, old.to_numpy(slots.empty))
                for name in slots:
                    slots[name] = _move(new, old.to_numpy(slots[name]))
        self._backend = new

    def _slots(self):
        """Names of the per-parameter state arrays this configuration uses."""
        return ()

    def _slot_fill(self, name):
        """Initial value of a state array."""
        return 0.0

    # ------------------------------------------------------------------ the step
    def step(self, params, grads):
        """Clip ``grads`` (in place) and update every array of ``params`` in place; one iteration."""
        params, grads = list(params), list(grads)
        if len(params) != len(grads):
            raise ValueError(f"step got {len(params)} params but {len(grads)} grads")
        if self._state and len(self._state) != len(params):
            raise ValueError(f"{type(self).__name__} holds state for {len(self._state)} parameters "
                             f"but step got {len(params)}")
        for i, (p, g) in enumerate(zip(params, grads)):
            if tuple(g.shape) != tuple(p.shape) or g.dtype != p.dtype:
                raise ValueError(f"grads[{i}] has shape {tuple(g.shape)} and dtype {g.dtype}; expected "
                                 f"shape {tuple(p.shape)} and dtype {p.dtype} (those of params[{i}])")
            if (isinstance(p, np.generic) or not p.flags["C_CONTIGUOUS"]
                    or (isinstance(p, np.ndarray) and not p.flags.writeable)):
                raise ValueError(f"params[{i}] must be a writeable C-contiguous array "
                                 f"(it is updated in place)")
        if not self._state:
            self._state = [self._new_slots(p) for p in params]
        for i, p in enumerate(params):
            self._check_slots(i, p)
        lr = self._current_learning_rate()
        flat_grads = [g.reshape(-1) for g in grads]
        self._clip(flat_grads)
        step = self.iterations + 1
        for p, g, slots in zip(params, flat_grads, self._state):
            self._update(p.reshape(-1), g, slots, lr, step)
        self.iterations = step

    def _new_slots(self, p):
        b = self._backend
        slots = _Slots(b.zeros((0,), p.dtype))
        for name in self._slots():
            fill = self._slot_fill(name)
            slots[name] = b.zeros(p.shape, p.dtype) if fill == 0 else b.full(p.shape, fill, p.dtype)
        return slots

    def _check_slots(self, i, p):
        for name in self._slots():
            a = self._state[i][name]
            if tuple(a.shape) != tuple(p.shape) or a.dtype != p.dtype:
                raise ValueError(f"optimizer state {name}/{i} has shape {tuple(a.shape)} and dtype "
                                 f"{a.dtype} but params[{i}] has shape {tuple(p.shape)} and dtype "
                                 f"{p.dtype}")

    # ------------------------------------------------------------------ clipping
    def _clip(self, grads):
        """Keras semantics: per-array norm, elementwise value or global norm clipping, in place."""
        if self.clipnorm is not None:
            for g in grads:
                self._clip_norm([g], self.clipnorm)
        elif self.global_clipnorm is not None:
            self._clip_norm(grads, self.global_clipnorm)
        elif self.clipvalue is not None:
            for g in grads:
                host = self._backend.to_numpy(g)
                np.clip(host, -self.clipvalue, self.clipvalue, out=host)
                if host is not g:                           # device array: copy the result back
                    self._backend.copy_(g, host)

    def _clip_norm(self, grads, max_norm):
        """Scale ``grads`` by max_norm / norm when their joint L2 norm exceeds max_norm.

        A non-finite norm makes every gradient NaN (as Keras' clip_by_global_norm), so a blow-up
        shows instead of being silently zeroed.
        """
        b, total = self._backend, 0.0
        for g in grads:
            out = b.zeros((1,), g.dtype)
            b.sum_squares(g, out)
            total += float(b.to_numpy(out)[0])
        norm = math.sqrt(total)
        if norm <= max_norm:
            return
        factor = max_norm / norm if math.isfinite(norm) else math.nan
        for g in grads:
            b.scale(g, factor, g)

    # ------------------------------------------------------------------ config and state
    def get_config(self):
        """The constructor arguments (JSON-serializable): ``type(opt).from_config(config)`` rebuilds it.

        A schedule is saved as ``schedules.serialize(schedule)``; a plain function cannot be saved
        (TypeError).
        """
        names = [n for n, p in inspect.signature(type(self).__init__).parameters.items()
                 if n != "self" and p.kind is not p.VAR_KEYWORD]
        names += ["clipnorm", "clipvalue", "global_clipnorm"]
        config = {n: getattr(self, n) for n in dict.fromkeys(names)}
        if callable(self._learning_rate):
            config["learning_rate"] = schedules.serialize(self._learning_rate)
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def get_state(self):
        """``{"iterations": int64 array, "<slot>/<index>": numpy copy of each state array}``."""
        state = {"iterations": np.array(self.iterations, dtype=np.int64)}
        for i, slots in enumerate(self._state):
            for name in self._slots():
                state[f"{name}/{i}"] = np.array(self._backend.to_numpy(slots[name]), copy=True)
        return state

    def set_state(self, state):
        """Restore what ``get_state`` returned, so the next step continues the saved run exactly."""
        state = dict(state)
        if "iterations" not in state:
            raise ValueError(f"{type(self).__name__}.set_state: the state has no 'iterations' entry")
        iterations = np.asarray(state.pop("iterations"))
        if iterations.shape != () or iterations.dtype.kind not in "iu" or iterations < 0:
            raise ValueError(f"'iterations' must be an integer >= 0; received {iterations!r}")
        names, per_param = self._slots(), {}
        for key, value in state.items():
            name, _, index = key.partition("/")
            if name not in names or not index.isdigit():
                raise ValueError(f"unexpected key {key!r} in {type(self).__name__} state; expected "
                                 f"'iterations' and '<slot>/<index>' with slot in {list(names)}")
            per_param.setdefault(int(index), {})[name] = np.array(value, copy=True)
        for i in range(len(per_param)):
            missing = [n for n in names if n not in per_param.get(i, {})]
            if missing:
                raise ValueError(f"{type(self).__name__} state lacks {', '.join(f'{n}/{i}' for n in missing)}")
        b, new_state = self._backend, []
        for i in range(len(per_param)):
            arrays = per_param[i]
            slots = _Slots(b.zeros((0,), arrays[names[0]].dtype))
            for name in names:
                slots[name] = _move(b, arrays[name])
            new_state.append(slots)
        self._state, self.iterations = new_state, int(iterations)


@register
class SGD(Optimizer):
    """SGD with momentum (dampening 0), Nesterov momentum and L2 weight decay (torch.optim.SGD)."""

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, weight_decay=0.0, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.momentum = _nonnegative("momentum", momentum)
        self.nesterov = _flag("nesterov", nesterov)
        self.weight_decay = _nonnegative("weight_decay", weight_decay)
        if self.nesterov and self.momentum == 0:
            raise ValueError(f"nesterov=True needs momentum > 0; received momentum={momentum!r}")

    def _slots(self):
        return ("velocity",) if self.momentum > 0 else ()

    def _update(self, param, grad, slots, lr, step):
        self._backend.sgd_update(param, grad, slots["velocity"].reshape(-1), lr, self.momentum,
                                 self.weight_decay, self.nesterov)


@register
class Adagrad(Optimizer):
    """Adagrad without learning-rate decay (torch.optim.Adagrad), Keras defaults."""

    def __init__(self, learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7,
                 weight_decay=0.0, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.initial_accumulator_value = _nonnegative("initial_accumulator_value",
                                                      initial_accumulator_value)
        self.epsilon = _nonnegative("epsilon", epsilon)
        self.weight_decay = _nonnegative("weight_decay", weight_decay)

    def _slots(self):
        return ("accum",)

    def _slot_fill(self, name):
        return self.initial_accumulator_value

    def _update(self, param, grad, slots, lr, step):
        self._backend.adagrad_update(param, grad, slots["accum"].reshape(-1), lr, self.epsilon,
                                     self.weight_decay)


@register
class RMSprop(Optimizer):
    """RMSprop (torch.optim.RMSprop: eps outside the sqrt), ``rho`` is torch's ``alpha``."""

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False,
                 weight_decay=0.0, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.rho = _unit("rho", rho)
        self.momentum = _nonnegative("momentum", momentum)
        self.epsilon = _nonnegative("epsilon", epsilon)
        self.centered = _flag("centered", centered)
        self.weight_decay = _nonnegative("weight_decay", weight_decay)

    def _slots(self):
        return (("square_avg",) + (("grad_avg",) if self.centered else ())
                + (("momentum_buf",) if self.momentum > 0 else ()))

    def _update(self, param, grad, slots, lr, step):
        self._backend.rmsprop_update(param, grad, slots["square_avg"].reshape(-1),
                                     slots["grad_avg"].reshape(-1), slots["momentum_buf"].reshape(-1),
                                     lr, self.rho, self.epsilon, self.weight_decay, self.momentum,
                                     self.centered)


@register
class Adam(Optimizer):
    """Adam with L2 weight decay added to the gradient and optional AMSGrad (torch.optim.Adam)."""

    _kernel = "adam_update"

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False,
                 weight_decay=0.0, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.beta_1 = _unit("beta_1", beta_1)
        self.beta_2 = _unit("beta_2", beta_2)
        self.epsilon = _nonnegative("epsilon", epsilon)
        self.amsgrad = _flag("amsgrad", amsgrad)
        self.weight_decay = _nonnegative("weight_decay", weight_decay)

    def _slots(self):
        return ("m", "v", "vmax") if self.amsgrad else ("m", "v")

    def _update(self, param, grad, slots, lr, step):
        getattr(self._backend, self._kernel)(
            param, grad, slots["m"].reshape(-1), slots["v"].reshape(-1), slots["vmax"].reshape(-1),
            lr, self.beta_1, self.beta_2, self.epsilon, self.weight_decay, self.amsgrad, step)


@register
class AdamW(Adam):
    """Adam with decoupled weight decay: param *= 1 - lr * weight_decay (torch.optim.AdamW)."""

    _kernel = "adamw_update"

    def __init__(self, learning_rate=0.001, weight_decay=0.004, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-7, amsgrad=False, **kwargs):
        super().__init__(learning_rate, beta_1, beta_2, epsilon, amsgrad, weight_decay, **kwargs)
