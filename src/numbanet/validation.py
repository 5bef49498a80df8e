"""Argument checks for the user-facing API (layers, losses, optimizers, schedules, callbacks,
metrics): each returns the checked value (a float, int, bool...) or raises ValueError naming the
owner, the argument, what was expected and what was received.

A check is a spec object called as ``spec(value, name, owner)``, so a class can declare its
arguments in a table (``{"delta": (1.0, Number(low=0, low_open=True))}``) and one ``__init__``
checks them all. The message has one of two forms, by the owner's family:

* plain (losses, layers): ``Huber: delta must be a finite number > 0, got 0``
* Keras (optimizers, schedules, callbacks, metrics; the owner is a ``KerasOwner``):
  ``Adam: `beta_1` must be a finite number >= 0 and < 1; received beta_1=1.5``
"""
import math
import numbers
import os

import numpy as np


class KerasOwner(str):
    """An owner's name whose errors read as Keras writes them (`name` ...; received name=...)."""


def error(owner, name, rule, value):
    """The ValueError for argument ``name`` of ``owner`` that is not ``rule``."""
    if isinstance(owner, KerasOwner):
        return ValueError(f"{owner}: `{name}` must be {rule}; received {name}={value!r}")
    return ValueError(f"{owner}: {name} must be {rule}, got {value!r}")


def is_real(value):
    """A finite real number that is not a bool."""
    return (isinstance(value, (numbers.Real, np.floating, np.integer))
            and not isinstance(value, (bool, np.bool_)) and math.isfinite(value))


def is_int(value):
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value,
                                                                               (bool, np.bool_))


class Spec:
    """A check: ``rule`` says what is expected; ``ok(value)`` decides; ``convert`` returns it.
    ``optional=True`` lets None through."""

    rule = "valid"

    def __init__(self, optional=False):
        self.optional = optional

    def ok(self, value):
        return True

    def convert(self, value):
        return value

    def __call__(self, value, name, owner):
        if value is None and self.optional:
            return None
        if not self.ok(value):
            raise error(owner, name, ("None or " if self.optional else "") + self.rule, value)
        return self.convert(value)


class Number(Spec):
    """A finite real number within optional bounds (``low_open``/``high_open``: strict)."""

    def __init__(self, low=None, high=None, low_open=False, high_open=False, optional=False,
                 rule=None):
        super().__init__(optional)
        self.low, self.high, self.low_open, self.high_open = low, high, low_open, high_open
        bounds = [f"{'>' if low_open else '>='} {low}" if low is not None else "",
                  f"{'<' if high_open else '<='} {high}" if high is not None else ""]
        self.rule = rule or " ".join(["a finite number", " and ".join(b for b in bounds if b)])
        self.rule = self.rule.strip()

    def ok(self, value):
        if not is_real(value):
            return False
        low, high = self.low, self.high
        return ((low is None or (value > low if self.low_open else value >= low))
                and (high is None or (value < high if self.high_open else value <= high)))

    def convert(self, value):
        return float(value)


class Integer(Spec):
    """An int (not a bool) >= ``low``."""

    def __init__(self, low=0, optional=False):
        super().__init__(optional)
        self.low = low
        self.rule = {0: "a non-negative integer", 1: "a positive integer"}.get(
            low, f"an integer >= {low}")

    def ok(self, value):
        return is_int(value) and value >= self.low

    def convert(self, value):
        return int(value)


class Flag(Spec):
    """True or False (NumPy bools too)."""

    rule = "True or False"

    def ok(self, value):
        return isinstance(value, (bool, np.bool_))

    def convert(self, value):
        return bool(value)


class OneOf(Spec):
    """One of a fixed set of values."""

    def __init__(self, *choices, optional=False):
        super().__init__(optional)
        self.choices = choices
        self.rule = "one of " + ", ".join(repr(c) for c in choices)

    def ok(self, value):
        if isinstance(value, (bool, np.bool_)) and not any(isinstance(c, bool)
                                                           for c in self.choices):
            return False
        return isinstance(value, (str, numbers.Number, np.generic)) and value in self.choices


class Text(Spec):
    """A non-empty string."""

    rule = "a non-empty string"

    def ok(self, value):
        return isinstance(value, str) and bool(value)


class Path(Spec):
    """A non-empty str or os.PathLike, returned as a str."""

    rule = "a non-empty path (str or os.PathLike)"

    def ok(self, value):
        return isinstance(value, (str, os.PathLike)) and bool(os.fspath(value))

    def convert(self, value):
        return os.fspath(value)


def sample_weights(owner, value, n):
    """Per-sample weights: ``n`` finite numbers >= 0 (shape (n,) or (n, 1)) as float64 (n,)."""
    try:
        w = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{owner}: sample_weight must be numeric, got {value!r}") from None
    if w.ndim == 2 and w.shape[1] == 1:
        w = w[:, 0]
    if w.shape != (n,):
        raise ValueError(f"{owner}: sample_weight must have shape ({n},), got {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"{owner}: sample_weight must be finite and >= 0 (non-negative), got "
                         f"{value!r}")
    return w


def integer_labels(owner, y):
    """``y`` holds integers (any integer dtype, or floats with integer values): else ValueError
    (non-integer values) or TypeError (a non-numeric dtype)."""
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise ValueError(f"{owner}: labels must be integers, got non-integer values")
    elif y.dtype.kind not in "iub":
        raise TypeError(f"{owner}: labels must be integers, got dtype {y.dtype}")
    return y


def check(owner, **arguments):
    """``check(owner, delta=(value, spec), ...)``: the checked values, in the order given."""
    values = tuple(spec(value, name, owner) for name, (value, spec) in arguments.items())
    return values[0] if len(values) == 1 else values


# the specs every family uses
POSITIVE = Number(low=0, low_open=True)
NON_NEGATIVE = Number(low=0)
UNIT = Number(low=0, high=1, high_open=True)          # [0, 1): decay rates, betas
PROBABILITY = Number(low=0, high=1)                   # [0, 1]
FLAG = Flag()
