"""Optimizers: Keras-style names and arguments, PyTorch ``torch.optim`` update formulas.

``opt.step(params, grads)`` updates the arrays of ``params`` in place (they may be views into a
model's flat buffer) with one kernel call per array; per-parameter state (momentum, moments...) is
created at the first step, keyed by position in the list. Gradient clipping (``clipnorm``,
``clipvalue`` or ``global_clipnorm``, Keras semantics) rescales ``grads`` in place first.
``get_state``/``set_state`` save and restore everything a resumed run needs; ``get`` maps names
("adam", "sgd"...) to instances.

In order of increasing complexity: SGD (momentum, Nesterov), Adagrad, Adadelta, RMSprop, Adam
(``amsgrad=True`` is AMSGrad, also reachable as ``get("amsgrad")``), AdamW, Nadam, Adamax, RAdam
(all torch.optim formulas), Lion (Chen et al. 2023), AdaBound and AMSBound (Luo et al. 2019,
as their reference implementation), Lookahead (Zhang et al. 2019, wrapping any of those) and L-BFGS
(torch.optim.LBFGS: full batch, ``step(params, grads, closure)``; ``model_closure`` builds the
closure for a compiled model).
"""
import math
import re
import warnings

import numpy as np

from . import engine, schedules
from . import validation as V
from .backend import get_backend
from .registry import Declared, Registry, serialize
from .validation import Integer, Number


REGISTRY = Registry("optimizer")
OPTIMIZERS = REGISTRY.names
STEP = "step"           # in an optimizer's ``kernel_args``: the step number
CLIP = Number(low=0, low_open=True, optional=True)   # clipnorm, clipvalue, global_clipnorm


def register(cls):
    """Class decorator: make ``get(cls.__name__.lower())`` return a new ``cls()``."""
    return REGISTRY.register(cls, cls.__name__)


def get(identifier):
    """An optimizer instance from a registered name (case-insensitive), a ``serialize`` dict or an
    instance (returned as is)."""
    return REGISTRY.get(identifier)


def deserialize(config):
    """The optimizer ``serialize`` described (a registered class, by class name)."""
    return REGISTRY.deserialize(config)


def _check(owner, name, value, spec):
    return spec(value, name, V.KerasOwner(owner))


def _move(backend, array):
    """``array`` (host or device) as an array of ``backend``, same shape (0-d stays 0-d)."""
    return backend.asarray(array).reshape(array.shape)


def _copy(backend, flat):
    """A new 1-D backend array equal to the 1-D backend array ``flat`` (copied by a kernel)."""
    out = backend.empty((flat.size,), flat.dtype)
    backend.scale(flat, 1.0, out)
    return out


class _Slots(dict):
    """One parameter's state arrays; a slot its configuration does not use reads as ``empty``."""

    def __init__(self, empty):
        super().__init__()
        self.empty = empty

    def __missing__(self, name):
        return self.empty


class Optimizer(Declared):
    """Base class: learning rate (or schedule), clipping, iteration count and state bookkeeping.

    A built-in optimizer is a declaration read by this class' ``__init__`` and ``get_config``:
    ``params`` ({argument: (default, check)}, the hyperparameters after ``learning_rate``, whose
    default is ``default_learning_rate``; the clipping arguments follow), the state arrays it needs
    in ``_slots()``, and its kernel: ``kernel`` is called as ``kernel(param, grad, *slots, lr,
    *args)`` with the slot arrays named in ``kernel_slots`` and the attributes named in
    ``kernel_args`` (``STEP``: the step number). ``_init()`` checks what one argument cannot
    alone. Float attributes that must survive a save (running products...) are listed in
    ``_scalar_state`` as (state key, attribute name) pairs.
    """

    _scalar_state = ()
    #: per-element state (each ``name/<i>`` array of ``get_state`` is parameter i's, elementwise),
    #: so it can be regrouped when the runs of variables it updates change
    elementwise = True
    _layout = None
    #: {(slot name, variable): flat host array} of the variables the last update left out
    #: (always replaced, never mutated, so this class-level default stays empty)
    _parked = {}
    _config_extra = _keyword_only = ("clipnorm", "clipvalue", "global_clipnorm")
    default_learning_rate = 0.001
    params = {}
    kernel, kernel_slots, kernel_args = None, (), ()
    slot_when = {}

    @classmethod
    def _declared(cls):
        return ([("learning_rate", cls.default_learning_rate, None)]
                + [(n, d, check) for n, (d, check) in cls.params.items()]
                + [(n, None, CLIP) for n in cls._keyword_only])

    def __init__(self, *args, **kwargs):
        owner = type(self).__name__
        values = self._bind(args, kwargs)
        self.learning_rate = values["learning_rate"]
        for name in self._config_extra:
            setattr(self, name, _check(owner, name, values[name], CLIP))
        clips = {k: values[k] for k in self._config_extra if values[k] is not None}
        if len(clips) > 1:
            raise ValueError("only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be set; "
                             f"received {', '.join(f'{k}={v!r}' for k, v in clips.items())}")
        for name, (_, spec) in self.params.items():
            setattr(self, name, _check(owner, name, values[name], spec))
        self.iterations = 0
        self._backend = get_backend("cpu")
        self._state = []                                    # one _Slots per parameter position
        self._init()

    def _init(self):
        """Checks across arguments and derived attributes, after the arguments are set."""

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
        self._learning_rate = value if callable(value) else _check(
            type(self).__name__, "learning_rate", value, V.POSITIVE)

    def _current_learning_rate(self):
        lr = self._learning_rate
        if not callable(lr):
            return lr
        value = lr(self.iterations)
        return _check(type(self).__name__, "learning_rate", value, Number(
            low=0, rule=f"a finite number >= 0 (schedule at iterations={self.iterations})"))

    @property
    def backend(self):
        """The backend whose kernels run the updates; setting it moves existing state there."""
        return self._backend

    @backend.setter
    def backend(self, backend):
        new, old = get_backend(backend), self._backend
        if new is not old:
            self._move_state(new, lambda a: _move(new, old.to_numpy(a)))
        self._backend = new

    def _move_state(self, backend, move):
        """Replace every state array ``a`` by ``move(a)``, its copy on ``backend``."""
        for slots in self._state:
            slots.empty = move(slots.empty)
            for name in slots:
                slots[name] = move(slots[name])

    def _slots(self):
        """Names of the per-parameter state arrays this configuration uses: ``kernel_slots``, less
        those whose attribute in ``slot_when`` is false (Adam's vmax without amsgrad...)."""
        return tuple(n for n in self.kernel_slots
                     if n not in self.slot_when or getattr(self, self.slot_when[n]))

    def _update(self, param, grad, slots, lr, step):
        """One kernel call updating the flat ``param`` in place (see the class docstring)."""
        getattr(self._backend, self.kernel)(
            param, grad, *[slots[n].reshape(-1) for n in self.kernel_slots], lr,
            *[step if a is STEP else getattr(self, a) for a in self.kernel_args])

    def _slot_fill(self, name):
        """Initial value of a state array."""
        return 0.0

    # ------------------------------------------------------------------ the step
    def step(self, params, grads):
        """Clip ``grads`` (in place) and update every array of ``params`` in place; one iteration."""
        params, grads = self._check_step_args(params, grads, len(self._state))
        if not self._state:
            self._state = [self._new_slots(p) for p in params]
        for i, p in enumerate(params):
            self._check_slots(i, p)
        self._apply(params, grads)

    def _apply(self, params, grads):
        """The update itself, on checked arguments and state."""
        lr = self._current_learning_rate()
        flat_grads = [g.reshape(-1) for g in grads]
        self._clip(flat_grads)
        step = self.iterations + 1
        self._begin_step(lr, step)
        for p, g, slots in zip(params, flat_grads, self._state):
            self._update(p.reshape(-1), g, slots, lr, step)
        self.iterations = step

    def _check_step_args(self, params, grads, held=0):
        """``(params, grads)`` as lists after checking them (ValueError naming the culprit);
        ``held``: how many parameters the optimizer holds state for (0: none yet)."""
        params, grads = list(params), list(grads)
        if len(params) != len(grads):
            raise ValueError(f"step got {len(params)} params but {len(grads)} grads")
        if held and held != len(params):
            raise ValueError(f"{type(self).__name__} holds state for {held} parameters "
                             f"but step got {len(params)}")
        for i, (p, g) in enumerate(zip(params, grads)):
            if tuple(g.shape) != tuple(p.shape) or g.dtype != p.dtype:
                raise ValueError(f"grads[{i}] has shape {tuple(g.shape)} and dtype {g.dtype}; expected "
                                 f"shape {tuple(p.shape)} and dtype {p.dtype} (those of params[{i}])")
            if (isinstance(p, np.generic) or not p.flags["C_CONTIGUOUS"]
                    or (isinstance(p, np.ndarray) and not p.flags.writeable)):
                raise ValueError(f"params[{i}] must be a writeable C-contiguous array "
                                 f"(it is updated in place)")
        return params, grads

    def _begin_step(self, lr, step):
        """Hook run once per step, after the checks and before the per-array updates (per-step
        schedules shared by every array: NAdam's momentum product, AdaBound's bounds)."""

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

    # ------------------------------------------------------------------ variables
    def step_variables(self, variables, closure=None):
        """Update ``variables`` (Variables) from the gradients in their layers' gradient buffers
        (what a model's backward pass fills): one kernel call per run of adjacent storage. The
        state follows each variable when the grouping changes (a layer frozen or added); a
        variable left out of a step keeps its state for the next step that updates it."""
        separate = self.clipnorm is not None
        version = engine._structure[0]
        c = self.__dict__.get("_runs_cache")
        if c is not None and c[0] is variables and c[1] == version and c[2] == separate \
                and c[3] == len(variables):
            params, grads, layout = c[4]
        else:
            params, grads, layout = engine.variable_runs(variables, separate=separate)
            self._runs_cache = (variables, version, separate, len(variables),
                                (params, grads, layout))
        if self._layout is not None and layout is not self._layout and layout != self._layout:
            self._regroup(self._layout, layout)
        if closure is not None:
            self._layout = layout
            return self.step(params, grads, closure)
        if type(self).step is Optimizer.step and self._state and layout is self._layout:
            return self._apply(params, grads)          # checked when this grouping was new
        self._layout = layout
        return self.step(params, grads)

    def apply_gradients(self, grads_and_vars):
        """Keras' ``apply_gradients``: ``(gradient, variable)`` pairs, e.g.
        ``zip(tape.gradient(loss, weights), weights)``; a None gradient skips its variable
        (which keeps its state, as a variable of another call does)."""
        Variable, _TensorLike = engine.Variable, engine._TensorLike
        pairs = list(grads_and_vars)
        variables, skipped = [], []
        for i, pair in enumerate(pairs):
            try:
                g, v = pair
            except (TypeError, ValueError):
                raise TypeError(f"apply_gradients: expected (gradient, variable) pairs, got "
                                f"{pair!r} at {i}") from None
            if not isinstance(v, Variable) or v.kind != "param":
                raise TypeError(f"apply_gradients: pair {i} holds a {type(v).__name__}, not a "
                                f"trainable weight (model.trainable_weights)")
            if g is None:
                skipped.append(v.name)
                continue
            value = g.value if isinstance(g, _TensorLike) else g
            if tuple(value.shape) != v.shape:
                raise ValueError(f"apply_gradients: the gradient of {v.name} has shape "
                                 f"{tuple(value.shape)}, the variable {v.shape}")
            if not isinstance(value, np.ndarray) and v.backend.is_device is False:
                value = np.asarray(value)
            v.backend.copy_(v.layer.grads[v.key], value)
            variables.append(v)
        if skipped:
            warnings.warn(f"apply_gradients: no gradient for {', '.join(skipped)}; left "
                          f"unchanged", RuntimeWarning, stacklevel=2)
        if getattr(self, "needs_closure", False):
            raise ValueError(f"{type(self).__name__} needs a closure (full-batch); use it with "
                             f"fit or step(params, grads, closure)")
        if variables:
            if variables[0].backend is not self.backend:   # update where the weights live
                self.backend = variables[0].backend
            self.step_variables(variables)

    def _fill_for(self, name, variable):
        """Initial value (flat host array) of state ``name`` for a variable it has none for."""
        fill = self._slot_fill(name) if name in self._slots() else 0.0
        return np.full(variable.size, fill, dtype=variable.dtype)

    def _split_state(self, layout):
        """The state as {(name, variable): flat host array} given the runs it was built for,
        plus the entries that are not per-run arrays."""
        per_var, other = {}, {}
        for key, value in self.get_state().items():
            m = re.fullmatch(r"(.+)/(\d+)", key)
            if m is None or not self.elementwise:
                other[key] = value
                continue
            name, i = m.group(1), int(m.group(2))
            flat, start = np.asarray(value).reshape(-1), 0
            for v in layout[i]:
                per_var[(name, v)] = flat[start:start + v.size]
                start += v.size
        return per_var, other

    def _join_state(self, per_var, other, layout, names):
        state = dict(other)
        for i, run in enumerate(layout):
            for name in names:
                state[f"{name}/{i}"] = np.concatenate(
                    [per_var[(name, v)] if (name, v) in per_var else self._fill_for(name, v)
                     for v in run])
        self.set_state(state)

    def _regroup(self, old, new):
        if not self.elementwise:
            warnings.warn(f"{type(self).__name__}: the set of weights changed; its history is "
                          f"reset", RuntimeWarning, stacklevel=3)
            self.set_state({"iterations": np.array(self.iterations)})
            return
        per_var, other = self._split_state(old)
        per_var.update(self._parked)
        kept = {v for run in new for v in run}
        # a variable left out of this update keeps its state for when it comes back (a frozen
        # layer unfrozen, a None gradient, one optimizer taking turns on two models), as torch
        self._parked = {k: a for k, a in per_var.items() if k[1] not in kept}
        names = sorted({n for n, _ in per_var})
        self._join_state(per_var, other, new, names)

    def variable_state(self, variables):
        """The state for saving: per-variable entries ``name/<index in variables>``, those the
        last update left out (a frozen layer's, kept for when it is trained again) included."""
        if not self.elementwise or self._layout is None:
            return self.get_state()
        per_var, other = self._split_state(self._layout)
        per_var = {**self._parked, **per_var}
        index = {v: i for i, v in enumerate(variables)}
        state = dict(other)
        for (name, v), value in per_var.items():
            if v in index:
                state[f"{name}/{index[v]}"] = np.array(value, copy=True)
        return state

    def set_variable_state(self, state, variables):
        """Restore ``variable_state`` output for ``variables``; the next update regroups it (the
        entries of variables it leaves out are kept aside for when they come back)."""
        if not self.elementwise:
            self.set_state(state)
            return
        per_var, other = {}, {}
        for key, value in state.items():
            m = re.fullmatch(r"(.+)/(\d+)", key)
            if m is None:
                other[key] = value
                continue
            name, i = m.group(1), int(m.group(2))
            if i >= len(variables):
                raise ValueError(f"optimizer state {key!r}: the model has {len(variables)} "
                                 f"trainable weights")
            v = variables[i]
            value = np.asarray(value).reshape(-1)
            if value.size != v.size:
                raise ValueError(f"optimizer state {key!r} has {value.size} values, weight "
                                 f"{v.name} {v.size}")
            per_var[(name, v)] = value
        layout = engine.variable_runs(variables, separate=self.clipnorm is not None)[2]
        self._parked = {}
        names = sorted({n for n, _ in per_var})
        if not per_var:
            self.set_state(other)
        else:
            self._join_state(per_var, other, layout, names)
        self._layout = layout

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
        config = super().get_config()
        if callable(self._learning_rate):
            config["learning_rate"] = schedules.serialize(self._learning_rate)
        return config

    def get_state(self):
        """``{"iterations": int64 array, "<slot>/<index>": numpy copy of each state array}``."""
        state = {"iterations": np.array(self.iterations, dtype=np.int64)}
        for key, attr in self._scalar_state:
            state[key] = np.array(getattr(self, attr), dtype=np.float64)
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
        scalars = {attr: _scalar(state, key, type(self).__name__)
                   for key, attr in self._scalar_state}
        for key, _ in self._scalar_state:
            del state[key]
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
        for attr, value in scalars.items():
            setattr(self, attr, value)


# the hyperparameters' checks
BETA = V.UNIT                                  # decay rates in [0, 1)
DECAY = (0.0, V.NON_NEGATIVE)                  # L2 (or decoupled) weight decay, default 0
EPS = (1e-7, V.NON_NEGATIVE)                   # Keras' epsilon default


@register
class SGD(Optimizer):
    """SGD with momentum (dampening 0), Nesterov momentum and L2 weight decay (torch.optim.SGD)."""
    default_learning_rate = 0.01
    params = {"momentum": (0.0, V.NON_NEGATIVE), "nesterov": (False, V.FLAG),
              "weight_decay": DECAY}
    kernel, kernel_slots, slot_when = "sgd_update", ("velocity",), {"velocity": "momentum"}
    kernel_args = ("momentum", "weight_decay", "nesterov")

    def _init(self):
        if self.nesterov and self.momentum == 0:
            raise ValueError(f"nesterov=True needs momentum > 0; received momentum={self.momentum!r}")


@register
class Adagrad(Optimizer):
    """Adagrad without learning-rate decay (torch.optim.Adagrad), Keras defaults."""
    params = {"initial_accumulator_value": (0.1, V.NON_NEGATIVE), "epsilon": EPS,
              "weight_decay": DECAY}
    kernel, kernel_slots, kernel_args = "adagrad_update", ("accum",), ("epsilon", "weight_decay")

    def _slot_fill(self, name):
        return self.initial_accumulator_value


@register
class RMSprop(Optimizer):
    """RMSprop (torch.optim.RMSprop: eps outside the sqrt), ``rho`` is torch's ``alpha``."""
    params = {"rho": (0.9, BETA), "momentum": (0.0, V.NON_NEGATIVE), "epsilon": EPS,
              "centered": (False, V.FLAG), "weight_decay": DECAY}
    kernel, kernel_slots = "rmsprop_update", ("square_avg", "grad_avg", "momentum_buf")
    slot_when = {"grad_avg": "centered", "momentum_buf": "momentum"}
    kernel_args = ("rho", "epsilon", "weight_decay", "momentum", "centered")


@register
class Adam(Optimizer):
    """Adam with L2 weight decay added to the gradient and optional AMSGrad (torch.optim.Adam)."""
    params = {"beta_1": (0.9, BETA), "beta_2": (0.999, BETA), "epsilon": EPS,
              "amsgrad": (False, V.FLAG), "weight_decay": DECAY}
    kernel, kernel_slots, slot_when = "adam_update", ("m", "v", "vmax"), {"vmax": "amsgrad"}
    kernel_args = ("beta_1", "beta_2", "epsilon", "weight_decay", "amsgrad", STEP)


@register
class AdamW(Adam):
    """Adam with decoupled weight decay: param *= 1 - lr * weight_decay (torch.optim.AdamW)."""
    params = {"weight_decay": (0.004, V.NON_NEGATIVE), "beta_1": (0.9, BETA),
              "beta_2": (0.999, BETA), "epsilon": EPS, "amsgrad": (False, V.FLAG)}
    kernel = "adamw_update"


def _scalar(state, key, owner):
    """A 0-d float entry of a saved state as a Python float (ValueError when missing or bad)."""
    if key not in state:
        raise ValueError(f"{owner} state lacks {key!r}")
    value = np.asarray(state[key])
    if value.shape != () or value.dtype.kind != "f":
        raise ValueError(f"{owner} state entry {key!r} must be a float scalar; received {value!r}")
    return float(value)


def _count(state, key, owner):
    """A 0-d integer entry >= 0 of a saved state as an int."""
    if key not in state:
        raise ValueError(f"{owner} state lacks {key!r}")
    value = np.asarray(state[key])
    if value.shape != () or value.dtype.kind not in "iu" or value < 0:
        raise ValueError(f"{owner} state entry {key!r} must be an integer >= 0; received {value!r}")
    return int(value)


@register
class Adadelta(Optimizer):
    """Adadelta (torch.optim.Adadelta formula) with Keras' defaults (torch's are lr=1, rho=0.9,
    eps=1e-6): ``learning_rate`` scales the unit-free Adadelta step. acc_delta starts at 0, so
    epsilon alone sets the size of the first steps: it must be > 0."""
    params = {"rho": (0.95, BETA), "epsilon": (1e-7, V.POSITIVE), "weight_decay": DECAY}
    kernel, kernel_slots = "adadelta_update", ("square_avg", "acc_delta")
    kernel_args = ("rho", "epsilon", "weight_decay")


@register
class Nadam(Optimizer):
    """Adam with Nesterov momentum, torch.optim.NAdam's formula: the momentum coefficient follows
    the schedule mu_t = beta_1 (1 - 0.5 * 0.96^(t * momentum_decay)), and the update mixes the
    gradient and the first moment with bias corrections built from the running product of the
    mu_t. (Keras' Nadam uses the same schedule with 0.96^(0.004 t) but bias-corrects the moment
    slightly differently, so the two trajectories differ in the last digits.) L2 weight decay.
    """
    params = {"beta_1": (0.9, BETA), "beta_2": (0.999, BETA), "epsilon": EPS,
              "momentum_decay": (0.004, V.NON_NEGATIVE), "weight_decay": DECAY}
    kernel, kernel_slots = "nadam_update", ("m", "v")
    kernel_args = ("beta_1", "beta_2", "epsilon", "weight_decay", "_mu_t", "_mu_next",
                   "_mu_product", STEP)
    _scalar_state = (("mu_product", "_mu_product"),)

    def _init(self):
        self._mu_product = 1.0                     # product of mu_1 .. mu_iterations

    def _mu(self, step):
        return self.beta_1 * (1.0 - 0.5 * 0.96 ** (step * self.momentum_decay))

    def _begin_step(self, lr, step):
        self._mu_t, self._mu_next = self._mu(step), self._mu(step + 1)
        self._mu_product *= self._mu_t


@register
class Adamax(Optimizer):
    """Adamax (torch.optim.Adamax): Adam with the infinity norm, u = max(beta_2 u, |g| + eps)."""
    params = {"beta_1": (0.9, BETA), "beta_2": (0.999, BETA), "epsilon": EPS,
              "weight_decay": DECAY}
    kernel, kernel_slots = "adamax_update", ("m", "u")
    kernel_args = ("beta_1", "beta_2", "epsilon", "weight_decay", STEP)


@register
class RAdam(Optimizer):
    """Rectified Adam (torch.optim.RAdam): momentum SGD while the variance estimate is unreliable
    (approximated SMA length rho_t <= 5), then Adam times the rectification term. L2 decay."""
    params = Adamax.params
    kernel, kernel_slots = "radam_update", ("m", "v")
    kernel_args = Adamax.kernel_args


@register
class Lion(Optimizer):
    """Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"): the sign of
    beta_1 m + (1 - beta_1) g is the step, with decoupled weight decay, p -= lr (u + wd p); then
    m = beta_2 m + (1 - beta_2) g. Its steps have unit size per coordinate, so its learning rate
    is typically 3-10x smaller than Adam's (the default is Keras' 1e-3)."""
    params = {"beta_1": (0.9, BETA), "beta_2": (0.99, BETA), "weight_decay": DECAY}
    kernel, kernel_slots, kernel_args = "lion_update", ("m",), ("beta_1", "beta_2", "weight_decay")


@register
class AdaBound(Optimizer):
    """AdaBound (Luo et al., ICLR 2019), as the authors' reference implementation: Adam whose
    per-coordinate rate lr sqrt(1 - beta_2^t) / (1 - beta_1^t) / (sqrt(v) + eps) is clipped to
    [final_lr (1 - 1/(gamma t + 1)), final_lr (1 + 1/(gamma t))], bounds that close in on
    ``final_lr`` (SGD's rate) as t grows. With a learning-rate schedule ``final_lr`` follows it:
    final_lr * lr_t / lr_0, as the reference scales it. L2 weight decay; the defaults are the
    reference's (eps 1e-8).
    """
    params = {"final_lr": (0.1, V.POSITIVE), "beta_1": (0.9, BETA), "beta_2": (0.999, BETA),
              "gamma": (1e-3, Number(low=0, high=1, low_open=True, high_open=True)),
              "epsilon": (1e-8, V.NON_NEGATIVE), "weight_decay": DECAY,
              "amsbound": (False, V.FLAG)}
    kernel, kernel_slots, slot_when = "adabound_update", ("m", "v", "vmax"), {"vmax": "amsbound"}
    kernel_args = ("beta_1", "beta_2", "epsilon", "weight_decay", "_final_lr_t", "gamma",
                   "amsbound", STEP)
    _scalar_state = (("base_lr", "_base_lr"),)

    def _init(self):
        # the rate final_lr belongs to: the learning rate at construction (a schedule's at
        # iteration 0), kept when a callback later changes learning_rate, as the reference's
        # base_lrs; saved with the state
        lr = self._learning_rate
        self._base_lr = float(lr(0)) if callable(lr) else lr

    def _begin_step(self, lr, step):
        if self._base_lr > 0:
            self._final_lr_t = self.final_lr * lr / self._base_lr
        else:                                   # a schedule starting at 0: nothing to scale by
            self._final_lr_t = self.final_lr


@register
class AMSBound(AdaBound):
    """AdaBound on AMSGrad's running maximum of the second moment (Luo et al. 2019)."""
    params = {k: v for k, v in AdaBound.params.items() if k != "amsbound"}
    amsbound = True


@register
class Lookahead(Optimizer):
    """Lookahead (Zhang et al., NeurIPS 2019) around any optimizer: the inner ("fast") optimizer
    steps as usual; every ``k`` steps the slow weights move ``alpha`` of the way to the fast ones,
    slow += alpha (fast - slow), and the fast weights restart from there. The slow weights are
    the parameters' values at the first step.

    Learning rate and clipping are the inner optimizer's (``learning_rate`` reads and sets it);
    the state holds the slow weights and the inner state under ``inner/``; ``get_config`` nests the
    inner optimizer's config. Not available by name alone (``get("lookahead")``), as it needs the
    optimizer to wrap: ``Lookahead(Adam(...))`` or ``Lookahead("adam")``.
    """

    _name_error = ("Lookahead wraps another optimizer, so it cannot be made from a name alone; "
                   "use Lookahead(optimizer) with an optimizer instance or name, e.g. "
                   "Lookahead(Adam(learning_rate=1e-3), k=5, alpha=0.5) or Lookahead('adam')")

    def __init__(self, optimizer, k=5, alpha=0.5):
        if isinstance(optimizer, dict):
            optimizer = deserialize(optimizer)
        if isinstance(optimizer, str) and optimizer.lower() == "lookahead":
            raise ValueError(f"`optimizer` must be the optimizer to wrap; received "
                             f"optimizer={optimizer!r}")
        try:
            inner = get(optimizer)
        except ValueError as e:
            raise ValueError(f"`optimizer` must be an Optimizer or an optimizer name; received "
                             f"optimizer={optimizer!r} ({e})") from None
        if isinstance(inner, LBFGS):
            raise ValueError(f"Lookahead cannot wrap LBFGS (a full-batch method with its own line "
                             f"search); received optimizer={optimizer!r}")
        self.optimizer = inner
        self.k = _check("Lookahead", "k", k, Integer(1))
        self.alpha = _check("Lookahead", "alpha", alpha, Number(low=0, high=1, low_open=True))
        self.iterations = 0
        self._backend = inner.backend
        self._slow = []                                     # one flat array per parameter

    # the inner optimizer's hyperparameters
    @property
    def learning_rate(self):
        return self.optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        self.optimizer.learning_rate = value

    clipnorm = property(lambda self: self.optimizer.clipnorm)
    clipvalue = property(lambda self: self.optimizer.clipvalue)
    global_clipnorm = property(lambda self: self.optimizer.global_clipnorm)

    def _move_state(self, backend, move):
        self.optimizer.backend = backend
        self._slow = [move(s) for s in self._slow]

    def step(self, params, grads):
        """One inner step; every ``k``-th step also the slow/fast synchronisation."""
        params, grads = self._check_step_args(params, grads, len(self._slow))
        b, fresh = self._backend, not self._slow
        if fresh:
            self._slow = [_copy(b, p.reshape(-1)) for p in params]
        for i, (p, s) in enumerate(zip(params, self._slow)):
            if s.size != p.size or s.dtype != p.dtype:
                raise ValueError(f"Lookahead slow weights {i} have {s.size} elements of {s.dtype} "
                                 f"but params[{i}] has {p.size} of {p.dtype}")
        try:
            self.optimizer.step(params, grads)
        except Exception:
            if fresh:
                self._slow = []
            raise
        self.iterations += 1
        if self.iterations % self.k == 0:
            for p, s in zip(params, self._slow):
                b.lookahead_update(s, p.reshape(-1), self.alpha)

    def _fill_for(self, name, variable):
        if name == "slow":
            return np.asarray(variable.numpy(), dtype=variable.dtype).reshape(-1)
        if name.startswith("inner/"):
            return self.optimizer._fill_for(name[len("inner/"):], variable)
        return super()._fill_for(name, variable)

    def get_config(self):
        return {"optimizer": serialize(self.optimizer), "k": self.k, "alpha": self.alpha}

    def get_state(self):
        """``iterations``, ``slow/<i>`` (the slow weights, flat) and ``inner/<key>`` for every
        entry of the inner optimizer's state."""
        state = {"iterations": np.array(self.iterations, dtype=np.int64)}
        for i, s in enumerate(self._slow):
            state[f"slow/{i}"] = np.array(self._backend.to_numpy(s), copy=True)
        for key, value in self.optimizer.get_state().items():
            state[f"inner/{key}"] = value
        return state

    def set_state(self, state):
        state = dict(state)
        iterations = _count(state, "iterations", "Lookahead")
        slow, inner = {}, {}
        for key, value in state.items():
            if key.startswith("inner/"):
                inner[key[len("inner/"):]] = value
            elif key.startswith("slow/") and key[5:].isdigit():
                slow[int(key[5:])] = np.array(value, copy=True).reshape(-1)
            elif key != "iterations":
                raise ValueError(f"unexpected key {key!r} in Lookahead state; expected "
                                 f"'iterations', 'slow/<index>' and 'inner/<key>'")
        if sorted(slow) != list(range(len(slow))):
            raise ValueError(f"Lookahead state has slow weights {sorted(slow)}; expected "
                             f"0 .. {len(slow) - 1}")
        self.optimizer.set_state(inner)
        self._slow = [_move(self._backend, slow[i]) for i in range(len(slow))]
        self.iterations = iterations


def _cubic_minimum(x1, f1, g1, x2, f2, g2, bounds=None):
    """Minimizer of the cubic through (x1, f1) and (x2, f2) with slopes g1, g2, clamped to
    ``bounds`` (default: the interval between x1 and x2); its midpoint when the cubic has no real
    minimizer."""
    lo, hi = bounds if bounds is not None else (min(x1, x2), max(x1, x2))
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    disc = d1 * d1 - g1 * g2
    if not disc >= 0:
        return (lo + hi) / 2.0
    d2 = math.sqrt(disc)
    if x1 <= x2:
        x = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
    else:
        x = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
    return min(max(x, lo), hi)


@register
class LBFGS(Optimizer):
    """Limited-memory BFGS for full-batch training of small models, torch.optim.LBFGS semantics.

    ``step(params, grads, closure)`` runs up to ``max_iter`` iterations (at most ``max_eval``
    evaluations of ``closure``) and returns the loss at the starting point. ``closure()`` must
    recompute the loss at the current ``params``, write the gradients into ``grads`` in place and
    return the loss as a float; ``model_closure(model, x, y)`` builds one for a compiled model.
    Directions come from the two-loop recursion over the last ``history_size`` curvature pairs;
    the step is ``learning_rate`` times it (the first one scaled by min(1, 1/|g|_1)), or found by a
    strong-Wolfe line search (cubic interpolation) with ``line_search_fn="strong_wolfe"``. An
    iteration stops early when max|g| <= ``tolerance_grad``, or when the step or the loss change
    falls below ``tolerance_change``. The vector work runs through the backend's kernels (dot, axpy,
    scale, abs_sum, abs_max), so it works on either device; the history and search state save and
    restore with ``get_state``/``set_state``.

    No gradient clipping: the line search and the curvature pairs need the true gradient.
    """

    _CLIPS = ("clipnorm", "clipvalue", "global_clipnorm")
    needs_closure = True            # step(params, grads, closure): a training loop must pass one
    elementwise = False             # its history spans the whole flat parameter vector

    def __init__(self, learning_rate=1.0, max_iter=20, max_eval=None, tolerance_grad=1e-7,
                 tolerance_change=1e-9, history_size=100, line_search_fn=None, **kwargs):
        clips = {k: v for k, v in kwargs.items() if k in self._CLIPS and v is not None}
        if clips:
            k, v = next(iter(clips.items()))
            raise ValueError(f"LBFGS does not clip gradients (its line search and curvature pairs "
                             f"need the true gradient); received {k}={v!r}")
        super().__init__(learning_rate, **kwargs)
        self.max_iter, max_eval, self.tolerance_grad, self.tolerance_change, self.history_size = \
            V.check(V.KerasOwner("LBFGS"), max_iter=(max_iter, Integer(1)),
                    max_eval=(max_eval, Integer(1, optional=True)),
                    tolerance_grad=(tolerance_grad, V.NON_NEGATIVE),
                    tolerance_change=(tolerance_change, V.NON_NEGATIVE),
                    history_size=(history_size, Integer(1)))
        self.max_eval = self.max_iter * 5 // 4 if max_eval is None else max_eval
        if line_search_fn not in (None, "strong_wolfe"):
            raise ValueError(f"`line_search_fn` must be None or 'strong_wolfe'; received "
                             f"line_search_fn={line_search_fn!r}")
        self.line_search_fn = line_search_fn
        self._lb = {"func_evals": 0, "n_iter": 0}       # the algorithm's state (torch's names)

    def _move_state(self, backend, move):
        lb = self._lb
        for key in ("d", "prev_flat_grad"):
            if key in lb:
                lb[key] = move(lb[key])
        for key in ("old_dirs", "old_stps"):
            if key in lb:
                lb[key] = [move(a) for a in lb[key]]

    # ------------------------------------------------------------------ vector helpers (kernels)
    def _reduce(self, kernel, *arrays):
        getattr(self._backend, kernel)(*arrays, self._out)
        return float(self._backend.to_numpy(self._out)[0])

    def _dot(self, x, y):
        return self._reduce("dot", x, y)

    def _abs_max(self, x):
        return self._reduce("abs_max", x)

    def _scaled(self, x, factor):
        out = self._backend.empty((x.size,), x.dtype)
        self._backend.scale(x, factor, out)
        return out

    def _gather(self):
        """The gradients as one new flat array."""
        b, flat = self._backend, self._backend.empty((self._n,), self._dtype)
        for g, (start, size) in zip(self._grads, self._spans):
            b.scale(g.reshape(-1), 1.0, flat[start:start + size])
        return flat

    def _add_step(self, t, d):
        """params += t * d."""
        for p, (start, size) in zip(self._params, self._spans):
            self._backend.axpy(t, d[start:start + size], p.reshape(-1))

    def _evaluate(self, closure):
        loss = closure()
        try:
            return float(loss)
        except (TypeError, ValueError):
            raise TypeError(f"LBFGS: the closure must return the loss as a float; it returned "
                            f"{loss!r}") from None

    # ------------------------------------------------------------------ the step
    def step(self, params, grads, closure=None):
        """Up to ``max_iter`` L-BFGS iterations; returns the loss at the starting point."""
        if closure is None or not callable(closure):
            raise ValueError("LBFGS.step needs a closure that recomputes the loss and the "
                             "gradients: step(params, grads, closure); for a model use "
                             "closure = optimizers.model_closure(model, x, y) and "
                             "step(closure.params, closure.grads, closure)")
        params, grads = self._check_step_args(params, grads)
        if len({p.dtype for p in params}) > 1:
            raise ValueError(f"LBFGS needs one dtype for all params; got "
                             f"{sorted({str(p.dtype) for p in params})}")
        self._params, self._grads = params, grads
        self._dtype = params[0].dtype if params else np.dtype(np.float64)
        self._spans, start = [], 0
        for p in params:
            self._spans.append((start, p.size))
            start += p.size
        self._n = start
        self._out = self._backend.empty((1,), self._dtype)
        if "d" in self._lb and self._lb["d"].size != self._n:
            raise ValueError(f"LBFGS holds a search state for {self._lb['d'].size} parameters "
                             f"but step got {self._n}")
        lr = self._current_learning_rate()
        try:
            loss = self._iterate(closure, lr)
        finally:
            self._params = self._grads = None
        self.iterations += 1
        return loss

    def _iterate(self, closure, lr):
        b, lb = self._backend, self._lb
        max_iter, max_eval = self.max_iter, self.max_eval
        tol_grad, tol_change = self.tolerance_grad, self.tolerance_change

        orig_loss = loss = self._evaluate(closure)
        evals = 1
        lb["func_evals"] += 1
        flat_grad = self._gather()
        if self._abs_max(flat_grad) <= tol_grad:
            return orig_loss

        d, t = lb.get("d"), lb.get("t")
        old_dirs, old_stps, ro = lb.get("old_dirs"), lb.get("old_stps"), lb.get("ro")
        h_diag, prev_flat_grad = lb.get("H_diag"), lb.get("prev_flat_grad")
        prev_loss = lb.get("prev_loss")
        n_iter = 0
        while n_iter < max_iter:
            n_iter += 1
            lb["n_iter"] += 1
            # ---- direction: steepest descent first, then the two-loop recursion
            if lb["n_iter"] == 1:
                d = self._scaled(flat_grad, -1.0)
                old_dirs, old_stps, ro, h_diag = [], [], [], 1.0
            else:
                y = self._scaled(flat_grad, 1.0)
                b.axpy(-1.0, prev_flat_grad, y)                       # y = g - g_prev
                s = self._scaled(d, t)                                # s = t d
                ys = self._dot(y, s)
                if ys > 1e-10:                                        # keep the pair (curvature > 0)
                    if len(old_dirs) == self.history_size:
                        old_dirs.pop(0)
                        old_stps.pop(0)
                        ro.pop(0)
                    old_dirs.append(y)
                    old_stps.append(s)
                    ro.append(1.0 / ys)
                    h_diag = ys / self._dot(y, y)
                q = self._scaled(flat_grad, -1.0)
                al = [0.0] * len(old_dirs)
                for i in range(len(old_dirs) - 1, -1, -1):
                    al[i] = self._dot(old_stps[i], q) * ro[i]
                    b.axpy(-al[i], old_dirs[i], q)
                d = self._scaled(q, h_diag)                           # r = H0 q, updated in place
                for i in range(len(old_dirs)):
                    be_i = self._dot(old_dirs[i], d) * ro[i]
                    b.axpy(al[i] - be_i, old_stps[i], d)
            if prev_flat_grad is None:
                prev_flat_grad = self._scaled(flat_grad, 1.0)
            else:
                b.scale(flat_grad, 1.0, prev_flat_grad)
            prev_loss = loss

            # ---- step length
            if lb["n_iter"] == 1:
                l1 = self._reduce("abs_sum", flat_grad)
                t = min(1.0, 1.0 / l1 if l1 > 0 else math.inf) * lr
            else:
                t = lr
            gtd = self._dot(flat_grad, d)                             # directional derivative
            if gtd > -tol_change:
                break
            ls_evals = 0
            if self.line_search_fn == "strong_wolfe":
                x_init = [_copy(b, p.reshape(-1)) for p in self._params]
                loss, flat_grad, t, ls_evals = self._strong_wolfe(
                    closure, x_init, t, d, loss, flat_grad, gtd, max_ls=max_eval - evals)
                self._add_step(t, d)
                done = self._abs_max(flat_grad) <= tol_grad
            else:
                self._add_step(t, d)
                done = False
                if n_iter != max_iter:                                # no evaluation after the last
                    loss = self._evaluate(closure)
                    flat_grad = self._gather()
                    done = self._abs_max(flat_grad) <= tol_grad
                    ls_evals = 1
            evals += ls_evals
            lb["func_evals"] += ls_evals

            # ---- stopping tests
            if n_iter == max_iter or evals >= max_eval or done:
                break
            if abs(t) * self._abs_max(d) <= tol_change:                # max |t d|: no progress
                break
            if abs(loss - prev_loss) < tol_change:
                break

        lb.update(d=d, t=t, old_dirs=old_dirs, old_stps=old_stps, ro=ro, H_diag=h_diag,
                  prev_flat_grad=prev_flat_grad, prev_loss=prev_loss)
        return orig_loss

    def _strong_wolfe(self, closure, x, t, d, f, g, gtd, c1=1e-4, c2=0.9, tolerance_change=1e-9,
                      max_ls=25):
        """Line search along ``d`` from the params ``x`` (flat copies) for a step ``t`` meeting the
        strong Wolfe conditions (sufficient decrease c1, curvature c2): bracket, then zoom by
        cubic interpolation (torch's ``_strong_wolfe``, after minFunc). Returns
        (loss, flat gradient, t, evaluations); the params are left at ``x``."""

        def phi(t):
            self._add_step(t, d)
            loss = self._evaluate(closure)
            grad = self._gather()
            for p, xi in zip(self._params, x):
                self._backend.scale(xi, 1.0, p.reshape(-1))
            return loss, grad, self._dot(grad, d)

        d_norm = self._abs_max(d)
        f_new, g_new, gtd_new = phi(t)
        evals, ls_iter = 1, 0
        t_prev, f_prev, g_prev, gtd_prev = 0.0, f, g, gtd
        done = False
        while ls_iter < max_ls:                                       # bracketing phase
            if f_new > f + c1 * t * gtd or (ls_iter > 1 and f_new >= f_prev):
                pts = [[t_prev, f_prev, g_prev, gtd_prev], [t, f_new, g_new, gtd_new]]
                break
            if abs(gtd_new) <= -c2 * gtd:
                pts, done = [[t, f_new, g_new, gtd_new]], True
                break
            if gtd_new >= 0:
                pts = [[t_prev, f_prev, g_prev, gtd_prev], [t, f_new, g_new, gtd_new]]
                break
            t_next = _cubic_minimum(t_prev, f_prev, gtd_prev, t, f_new, gtd_new,
                                    bounds=(t + 0.01 * (t - t_prev), t * 10))
            t_prev, f_prev, g_prev, gtd_prev = t, f_new, g_new, gtd_new
            t = t_next
            f_new, g_new, gtd_new = phi(t)
            evals += 1
            ls_iter += 1
        if ls_iter == max_ls:
            pts = [[0.0, f, g, None], [t, f_new, g_new, None]]

        # zoom phase: shrink the bracket [pts[0], pts[1]] around a point meeting the conditions
        low, high = (0, 1) if pts[0][1] <= pts[-1][1] else (1, 0)
        insufficient = False
        while not done and ls_iter < max_ls:
            a, b_ = pts[0][0], pts[1][0]
            if abs(b_ - a) * d_norm < tolerance_change:
                break
            t = _cubic_minimum(a, pts[0][1], pts[0][3], b_, pts[1][1], pts[1][3])
            top, bottom = max(a, b_), min(a, b_)
            eps = 0.1 * (top - bottom)
            if min(top - t, t - bottom) < eps:                        # too close to an end
                if insufficient or t >= top or t <= bottom:
                    t = top - eps if abs(t - top) < abs(t - bottom) else bottom + eps
                    insufficient = False
                else:
                    insufficient = True
            else:
                insufficient = False
            f_new, g_new, gtd_new = phi(t)
            evals += 1
            ls_iter += 1
            if f_new > f + c1 * t * gtd or f_new >= pts[low][1]:
                pts[high] = [t, f_new, g_new, gtd_new]
                low, high = (0, 1) if pts[0][1] <= pts[1][1] else (1, 0)
            else:
                if abs(gtd_new) <= -c2 * gtd:
                    done = True
                elif gtd_new * (pts[high][0] - pts[low][0]) >= 0:
                    pts[high] = pts[low]
                pts[low] = [t, f_new, g_new, gtd_new]
        t, f_new, g_new, _ = pts[low]
        return f_new, g_new, t, evals

    # ------------------------------------------------------------------ state
    def get_state(self):
        """``iterations`` (step calls), ``n_iter``/``func_evals`` (totals), and after the first
        iteration the search state: ``d``, ``t``, ``H_diag``, ``prev_flat_grad``, ``prev_loss``,
        ``ro`` and the curvature pairs ``old_dirs/<j>``, ``old_stps/<j>`` (oldest first)."""
        b, lb = self._backend, self._lb
        state = {"iterations": np.array(self.iterations, dtype=np.int64),
                 "n_iter": np.array(lb["n_iter"], dtype=np.int64),
                 "func_evals": np.array(lb["func_evals"], dtype=np.int64)}
        if "d" in lb:
            for key in ("t", "H_diag", "prev_loss"):
                state[key] = np.array(lb[key], dtype=np.float64)
            state["ro"] = np.array(lb["ro"], dtype=np.float64).reshape(-1)
            for key in ("d", "prev_flat_grad"):
                state[key] = np.array(b.to_numpy(lb[key]), copy=True)
            for key in ("old_dirs", "old_stps"):
                for j, a in enumerate(lb[key]):
                    state[f"{key}/{j}"] = np.array(b.to_numpy(a), copy=True)
        return state

    def set_state(self, state):
        state, owner = dict(state), "LBFGS"
        lb = {"n_iter": _count(state, "n_iter", owner),
              "func_evals": _count(state, "func_evals", owner)}
        iterations = _count(state, "iterations", owner)
        known = {"iterations", "n_iter", "func_evals"}
        if "d" in state:
            for key in ("t", "H_diag", "prev_loss"):
                lb[key] = _scalar(state, key, owner)
            for key in ("d", "prev_flat_grad", "ro"):
                if key not in state:
                    raise ValueError(f"LBFGS state lacks {key!r}")
            ro = np.asarray(state["ro"], dtype=np.float64).reshape(-1)
            lb["ro"] = [float(r) for r in ro]
            d = np.asarray(state["d"]).reshape(-1)
            for key in ("d", "prev_flat_grad"):
                a = np.array(state[key], copy=True).reshape(-1)
                if a.shape != d.shape or a.dtype != d.dtype or a.dtype.kind != "f":
                    raise ValueError(f"LBFGS state entry {key!r} has {a.size} elements of "
                                     f"{a.dtype}; expected {d.size} of {d.dtype}")
                lb[key] = _move(self._backend, a)
            for key in ("old_dirs", "old_stps"):
                arrays = []
                for j in range(len(ro)):
                    a = np.array(state.get(f"{key}/{j}", np.zeros(0)), copy=True).reshape(-1)
                    if a.shape != d.shape or a.dtype != d.dtype:
                        raise ValueError(f"LBFGS state lacks {key}/{j} (or it does not match 'd')")
                    arrays.append(_move(self._backend, a))
                    known.add(f"{key}/{j}")
                lb[key] = arrays
            known |= {"t", "H_diag", "prev_loss", "ro", "d", "prev_flat_grad"}
        unexpected = sorted(set(state) - known)
        if unexpected:
            raise ValueError(f"unexpected key {unexpected[0]!r} in LBFGS state")
        self._lb, self.iterations = lb, iterations


def model_closure(model, x, y):
    """A closure for ``LBFGS.step`` over a compiled, built model and the whole data set
    ``(x, y)`` (full batch, moved to the model's device once): each call runs the forward pass (in
    training mode), the loss and the backward pass into the layers' gradient buffers, and
    returns the loss (regularization penalties included) as a float. ``closure.params`` and
    ``closure.grads`` are the flat views of the model's trainable weights and their gradients:

        opt = LBFGS(line_search_fn="strong_wolfe")
        model.compile(optimizer=opt, loss="sparse_categorical_crossentropy")
        closure = model_closure(model, x, y)
        for epoch in range(10):
            loss = opt.step(closure.params, closure.grads, closure)

    Build it after any ``model.to(device)``: it holds that device's buffers.
    """
    if model.optimizer is None:
        raise RuntimeError("model_closure: compile the model first (it needs the loss)")
    xs, ys = model._prepare(x, y, "model_closure")
    xb, yb = model._device_batch(xs), model._device_targets(ys)

    def closure():
        return model._value(model._loss_and_backward(xb, yb, None)[0])

    closure.params, closure.grads, _ = engine.variable_runs(model.trainable_weights)
    return closure


REGISTRY.base = Optimizer
REGISTRY.register(Adam, "amsgrad", amsgrad=True)    # AMSGrad is Adam(amsgrad=True)
