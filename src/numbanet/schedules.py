"""Learning-rate schedules, usable as an optimizer's ``learning_rate=``.

A schedule is a callable ``schedule(iterations) -> float``, where ``iterations`` is the number of
optimizer steps done so far (0 for the first step). The optimizer calls it before every step::

    opt = nb.optimizers.SGD(learning_rate=nb.schedules.CosineDecay(0.1, decay_steps=1000))

Each schedule has ``get_config``/``from_config`` (JSON-serializable), and ``serialize`` /
``deserialize`` turn one into ``{"class_name": ..., "config": ...}`` and back, so an optimizer
using one can be saved with the model. Subclass ``LearningRateSchedule`` (define ``_rate(step)``,
store the constructor arguments under their own names) and ``register`` it to make your own
schedule savable.
"""
import bisect
import math
import numbers

from . import validation as V
from .registry import Configurable, Registry
from .validation import Integer, Number

REGISTRY = Registry("learning rate schedule")
SCHEDULES = REGISTRY.classes


def register(cls):
    """Class decorator: make ``deserialize`` know ``cls`` by its class name."""
    return REGISTRY.register(cls)


def _real(owner, name, value, spec=Number()):
    return spec(value, name, V.KerasOwner(owner))


def _int(owner, name, value, minimum):
    return Integer(minimum)(value, name, V.KerasOwner(owner))


class LearningRateSchedule(Configurable):
    """Base class: ``schedule(step)`` checks ``step`` and returns ``float(self._rate(step))``."""

    def __call__(self, step):
        if isinstance(step, bool) or not isinstance(step, numbers.Real) or not step >= 0 \
                or not math.isfinite(step):
            raise ValueError(f"{type(self).__name__}: the step must be a finite number >= 0; "
                             f"received {step!r}")
        return float(self._rate(step))

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@register
class ExponentialDecay(LearningRateSchedule):
    """``initial_learning_rate * decay_rate ** (step / decay_steps)``; with ``staircase`` the
    exponent is floored, so the rate drops by ``decay_rate`` every ``decay_steps`` steps (Keras).
    With ``decay_steps=1`` this is torch's ``ExponentialLR(gamma=decay_rate)``."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False):
        owner = type(self).__name__
        self.initial_learning_rate = _real(owner, "initial_learning_rate", initial_learning_rate,
                                           V.POSITIVE)
        self.decay_steps = _int(owner, "decay_steps", decay_steps, 1)
        self.decay_rate = _real(owner, "decay_rate", decay_rate, V.POSITIVE)
        self.staircase = _real(owner, "staircase", staircase, V.FLAG)

    def _rate(self, step):
        p = step / self.decay_steps
        if self.staircase:
            p = math.floor(p)
        return self.initial_learning_rate * self.decay_rate ** p


@register
class StepDecay(LearningRateSchedule):
    """``initial_learning_rate * gamma ** (step // step_size)``: torch's ``StepLR``, counted in
    optimizer steps (``schedule(n)`` is StepLR's rate after ``n`` calls of ``scheduler.step()``)."""

    def __init__(self, initial_learning_rate, step_size, gamma=0.1):
        owner = type(self).__name__
        self.initial_learning_rate = _real(owner, "initial_learning_rate", initial_learning_rate,
                                           V.POSITIVE)
        self.step_size = _int(owner, "step_size", step_size, 1)
        self.gamma = _real(owner, "gamma", gamma, V.POSITIVE)

    def _rate(self, step):
        return self.initial_learning_rate * self.gamma ** math.floor(step / self.step_size)


@register
class PiecewiseConstantDecay(LearningRateSchedule):
    """``values[0]`` while ``step <= boundaries[0]``, ``values[i]`` while
    ``boundaries[i-1] < step <= boundaries[i]``, ``values[-1]`` after the last boundary (Keras).
    ``boundaries`` strictly increasing integers, one fewer than ``values``."""

    def __init__(self, boundaries, values):
        owner = type(self).__name__
        if not isinstance(boundaries, (list, tuple)) or not isinstance(values, (list, tuple)):
            raise ValueError(f"{owner}: `boundaries` and `values` must be lists; received "
                             f"boundaries={boundaries!r}, values={values!r}")
        self.boundaries = [_int(owner, f"boundaries[{i}]", b, 0) for i, b in enumerate(boundaries)]
        if any(b >= c for b, c in zip(self.boundaries, self.boundaries[1:])):
            raise ValueError(f"{owner}: `boundaries` must be strictly increasing; received "
                             f"boundaries={boundaries!r}")
        self.values = [_real(owner, f"values[{i}]", v, V.NON_NEGATIVE)
                       for i, v in enumerate(values)]
        if len(self.values) != len(self.boundaries) + 1:
            raise ValueError(f"{owner}: `values` must have one more entry than `boundaries`; "
                             f"received {len(self.boundaries)} boundaries and "
                             f"{len(self.values)} values")

    def _rate(self, step):
        return self.values[bisect.bisect_left(self.boundaries, step)]


@register
class CosineDecay(LearningRateSchedule):
    """Cosine decay with optional linear warmup (Keras 3 semantics).

    Without ``warmup_target``: ``lr0 * ((1 - alpha) * 0.5 * (1 + cos(pi * t / decay_steps)) +
    alpha)`` with ``t = min(step, decay_steps)``, so the rate ends at ``alpha * lr0`` (torch's
    ``CosineAnnealingLR(T_max=decay_steps, eta_min=alpha * lr0)`` up to ``T_max``). With
    ``warmup_target``: a linear ramp from ``initial_learning_rate`` to ``warmup_target`` over
    ``warmup_steps`` steps, then the cosine decay from ``warmup_target`` to
    ``alpha * warmup_target`` over the next ``decay_steps``. Unlike Keras, ``warmup_steps > 0``
    without a ``warmup_target`` is an error rather than silently ignored.
    """

    def __init__(self, initial_learning_rate, decay_steps, alpha=0.0, warmup_target=None,
                 warmup_steps=0):
        owner = type(self).__name__
        self.initial_learning_rate = _real(owner, "initial_learning_rate", initial_learning_rate,
                                           V.NON_NEGATIVE)
        self.decay_steps = _int(owner, "decay_steps", decay_steps, 1)
        self.alpha = _real(owner, "alpha", alpha, V.PROBABILITY)
        self.warmup_target = _real(owner, "warmup_target", warmup_target,
                                   Number(low=0, low_open=True, optional=True))
        self.warmup_steps = _int(owner, "warmup_steps", warmup_steps, 0)
        if self.warmup_target is None and self.warmup_steps > 0:
            raise ValueError(f"{owner}: warmup_steps={warmup_steps!r} needs a `warmup_target` "
                             f"(the rate to warm up to); received warmup_target=None")
        if self.warmup_target is None and self.initial_learning_rate == 0:
            raise ValueError(f"{owner}: `initial_learning_rate` must be > 0 without a warmup; "
                             f"received initial_learning_rate={initial_learning_rate!r}")

    def _rate(self, step):
        if self.warmup_target is None:
            peak, t = self.initial_learning_rate, min(step, self.decay_steps)
        elif step < self.warmup_steps:
            fraction = step / self.warmup_steps
            return self.initial_learning_rate + (self.warmup_target
                                                 - self.initial_learning_rate) * fraction
        else:
            peak, t = self.warmup_target, min(step - self.warmup_steps, self.decay_steps)
        cosine = 0.5 * (1.0 + math.cos(math.pi * t / self.decay_steps))
        return peak * ((1.0 - self.alpha) * cosine + self.alpha)


def serialize(schedule):
    """``{"class_name": ..., "config": ...}`` for a registered ``LearningRateSchedule``.

    TypeError for anything else (a plain function or lambda cannot be saved).
    """
    if not isinstance(schedule, LearningRateSchedule):
        raise TypeError(f"cannot serialize the learning rate schedule {schedule!r}: only "
                        f"numbanet.schedules.LearningRateSchedule objects can be saved (a plain "
                        f"function cannot); use one of {', '.join(sorted(SCHEDULES))}")
    name = type(schedule).__name__
    if SCHEDULES.get(name) is not type(schedule):
        raise TypeError(f"cannot serialize {schedule!r}: its class is not registered; decorate "
                        f"it with numbanet.schedules.register")
    return {"class_name": name, "config": schedule.get_config()}


def deserialize(config):
    """The schedule ``serialize`` described (ValueError for an unknown or malformed entry)."""
    return REGISTRY.deserialize(config)
