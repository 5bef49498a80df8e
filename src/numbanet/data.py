"""Small data utilities: one-hot labels, feature standardization, train/test splits and
mini-batch iteration.

Everything here is plain NumPy on the host; batches go to the device in the model's ``fit``.
Randomness (shuffled splits and batches) comes from ``np.random.default_rng(seed)`` when a seed
is given, else from a generator spawned off numbanet's global one, so ``nb.seed(n)`` makes a
whole run reproducible.
"""
import math
import numbers

import numpy as np

from . import random as _random

__all__ = ["one_hot", "Standardizer", "train_test_split", "batches", "DataLoader", "KFold",
           "StratifiedKFold", "cross_validate"]


# ----------------------------------------------------------------------------- helpers

def _is_int(v):
    return isinstance(v, (numbers.Integral, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_bool(v):
    return isinstance(v, (bool, np.bool_))


def _check_bool(func, name, v):
    if not _is_bool(v):
        raise TypeError(f"{func}: {name} must be True or False, got {v!r}")
    return bool(v)


def _as_array(func, name, v):
    """``np.asarray`` with a message naming the argument; scalars are rejected."""
    if v is None:
        raise TypeError(f"{func}: {name} must be an array, got None")
    try:
        a = np.asarray(v)
    except Exception as e:  # ragged lists and the like
        raise TypeError(f"{func}: {name} must be array-like, got {type(v).__name__} "
                        f"({e})") from None
    if a.ndim == 0:
        raise ValueError(f"{func}: {name} must have at least one dimension (samples first), "
                         f"got a scalar {v!r}")
    return a


def _rng_from(func, seed):
    """A Generator from ``seed``: an int seeds a fresh one, a Generator is used as is, None spawns
    one from numbanet's global generator (so ``nb.seed`` governs it)."""
    if seed is None:
        return _random.spawn()
    if isinstance(seed, np.random.Generator):
        return seed
    if _is_int(seed) and seed >= 0:
        return np.random.default_rng(int(seed))
    raise TypeError(f"{func}: seed must be None, a non-negative integer or a "
                    f"numpy.random.Generator, got {seed!r}")


def _check_same_length(func, x, y):
    if y is not None and len(x) != len(y):
        raise ValueError(f"{func}: x and y must have the same number of samples (first "
                         f"dimension), got len(x)={len(x)} and len(y)={len(y)}")


# ----------------------------------------------------------------------------- one_hot

def one_hot(labels, num_classes=None, dtype=np.float32):
    """Integer class labels -> one-hot array of shape ``labels.shape + (num_classes,)``.

    ``num_classes`` defaults to ``max(labels) + 1``. Float labels are accepted only when every
    value is a whole number (``3.0``); negative, out-of-range and fractional labels raise a
    ValueError naming the offending value.
    """
    labels = np.asarray(labels)
    if labels.dtype == np.bool_ or labels.dtype.kind not in "iuf":
        raise TypeError(f"one_hot: labels must be integers, got an array of dtype "
                        f"{labels.dtype}")
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"one_hot: dtype must be a NumPy dtype, got {dtype!r}") from None
    if num_classes is not None and (not _is_int(num_classes) or num_classes < 1):
        raise ValueError(f"one_hot: num_classes must be a positive integer or None, got "
                         f"{num_classes!r}")
    if labels.dtype.kind == "f":
        bad = ~np.isfinite(labels) | (labels != np.round(labels))
        if bad.any():
            v = labels[bad].flat[0].item()
            raise ValueError(f"one_hot: labels must be whole numbers, got {v!r} at index "
                             f"{tuple(int(i) for i in np.argwhere(bad)[0])}")
    if labels.size == 0:
        if num_classes is None:
            raise ValueError("one_hot: labels is empty, so num_classes must be given "
                             "(got None)")
        return np.zeros(labels.shape + (num_classes,), dtype=dtype)
    lo, hi = labels.min().item(), labels.max().item()
    if lo < 0:
        idx = tuple(int(i) for i in np.unravel_index(np.argmin(labels), labels.shape))
        raise ValueError(f"one_hot: labels must be non-negative, got {lo!r} at index {idx}")
    if num_classes is None:
        num_classes = int(hi) + 1
    elif hi >= num_classes:
        idx = tuple(int(i) for i in np.unravel_index(np.argmax(labels), labels.shape))
        raise ValueError(f"one_hot: labels must be in [0, {num_classes - 1}] for "
                         f"num_classes={num_classes}, got {hi!r} at index {idx}")
    try:
        out = np.zeros((labels.size, num_classes), dtype=dtype)
    except (MemoryError, ValueError):
        raise ValueError(f"one_hot: {labels.size} labels x {num_classes} classes do not fit in "
                         f"memory (the largest label is {hi!r}); check the labels or pass "
                         f"num_classes") from None
    flat = labels.reshape(-1).astype(np.intp)
    out[np.arange(flat.size), flat] = 1
    return out.reshape(labels.shape + (num_classes,))


# ----------------------------------------------------------------------------- Standardizer

class Standardizer:
    """Zero-mean, unit-variance scaling with statistics learned on training data.

    ``axis`` lists the axes the statistics are taken over (the default 0 gives one mean and std
    per feature; use ``axis=(0, 2, 3)`` for per-channel statistics of NCHW images). The remaining
    axes form the *feature shape*, which every later ``transform`` must match. ``transform``
    computes ``(x - mean) / max(std, epsilon)``, so a constant feature maps to 0 rather than to
    inf/NaN. Statistics are computed in float64; float inputs keep their dtype, integer inputs
    come back as float32.
    """

    def __init__(self, axis=0, epsilon=1e-7):
        if _is_int(axis):
            axis = (int(axis),)
        elif isinstance(axis, (tuple, list)) and len(axis) > 0 and all(_is_int(a) for a in axis):
            axis = tuple(int(a) for a in axis)
        else:
            raise TypeError(f"Standardizer: axis must be an integer or a non-empty tuple of "
                            f"integers, got {axis!r}")
        if isinstance(epsilon, (bool, np.bool_)) or not isinstance(epsilon, (numbers.Real,)) \
                or not math.isfinite(epsilon) or epsilon <= 0:
            raise ValueError(f"Standardizer: epsilon must be a positive finite number, got "
                             f"{epsilon!r}")
        self.axis = axis
        self.epsilon = float(epsilon)
        self.mean_ = None   # float64, keepdims shape (broadcasts against x)
        self.std_ = None

    # -- helpers
    def _axes_for(self, ndim, func):
        axes = []
        for a in self.axis:
            if not -ndim <= a < ndim:
                raise ValueError(f"Standardizer.{func}: axis {a} is out of range for an input "
                                 f"with {ndim} dimension(s)")
            axes.append(a % ndim)
        if len(set(axes)) != len(axes):
            raise ValueError(f"Standardizer.{func}: axis contains a repeated axis, got "
                             f"{self.axis!r}")
        return tuple(sorted(axes))

    def _input(self, x, func):
        x = _as_array(f"Standardizer.{func}", "x", x)
        if x.dtype == np.bool_ or x.dtype.kind not in "iuf":
            raise TypeError(f"Standardizer.{func}: x must be numeric, got dtype {x.dtype}")
        return x

    def _check_fitted(self, func):
        if self.mean_ is None:
            raise RuntimeError(f"Standardizer.{func}: this Standardizer is not fitted yet; "
                               f"call fit(x) on training data first")

    def _check_shape(self, x, func):
        fitted = self.mean_.shape
        axes = set(self._axes_for(len(fitted), func))
        ok = x.ndim == len(fitted) and all(
            s == f for i, (s, f) in enumerate(zip(x.shape, fitted)) if i not in axes)
        if not ok:
            want = tuple("*" if i in axes else f for i, f in enumerate(fitted))
            raise ValueError(f"Standardizer.{func}: x has shape {x.shape}, expected shape "
                             f"{want} (feature shape learned by fit; * = any size)")

    @property
    def scale_(self):
        """The divisor used by ``transform``: ``max(std_, epsilon)``."""
        self._check_fitted("scale_")
        return np.maximum(self.std_, self.epsilon)

    # -- public API
    def fit(self, x):
        """Learn the mean and standard deviation of ``x`` over ``axis``; returns self."""
        x = self._input(x, "fit")
        axes = self._axes_for(x.ndim, "fit")
        count = int(np.prod([x.shape[a] for a in axes]))
        if count == 0:
            raise ValueError(f"Standardizer.fit: x has no samples along axis {self.axis!r} "
                             f"(shape {x.shape})")
        x64 = x.astype(np.float64, copy=False)
        if not np.all(np.isfinite(x64)):
            raise ValueError("Standardizer.fit: x contains NaN or infinite values")
        # A constant feature's mean is its value exactly: the rounded mean of a large constant
        # is off by an ulp, which divided by epsilon is far from 0.
        lo, hi = x64.min(axis=axes, keepdims=True), x64.max(axis=axes, keepdims=True)
        self.mean_ = np.where(lo == hi, lo, x64.mean(axis=axes, keepdims=True))
        self.std_ = np.where(lo == hi, 0.0, x64.std(axis=axes, keepdims=True))
        return self

    def transform(self, x):
        """``(x - mean_) / max(std_, epsilon)``, same shape as ``x``."""
        self._check_fitted("transform")
        x = self._input(x, "transform")
        self._check_shape(x, "transform")
        out_dtype = x.dtype if x.dtype.kind == "f" else np.dtype(np.float32)
        return ((x - self.mean_) / self.scale_).astype(out_dtype, copy=False)

    def fit_transform(self, x):
        """``fit(x)`` then ``transform(x)``."""
        return self.fit(x).transform(x)

    def inverse_transform(self, x):
        """Undo ``transform``: ``x * max(std_, epsilon) + mean_``."""
        self._check_fitted("inverse_transform")
        x = self._input(x, "inverse_transform")
        self._check_shape(x, "inverse_transform")
        out_dtype = x.dtype if x.dtype.kind == "f" else np.dtype(np.float32)
        return (x * self.scale_ + self.mean_).astype(out_dtype, copy=False)

    def get_config(self):
        """Constructor arguments, as plain Python values."""
        return {"axis": self.axis[0] if len(self.axis) == 1 else list(self.axis),
                "epsilon": self.epsilon}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def get_state(self):
        """Learned statistics as plain float64 arrays (keepdims shape), or {} before fit."""
        if self.mean_ is None:
            return {}
        return {"mean": self.mean_.copy(), "std": self.std_.copy()}

    def set_state(self, state):
        """Restore statistics saved by ``get_state``; returns self."""
        if not isinstance(state, dict):
            raise TypeError(f"Standardizer.set_state: state must be a dict, got "
                            f"{type(state).__name__}")
        if not state:
            self.mean_ = self.std_ = None
            return self
        if set(state) != {"mean", "std"}:
            raise ValueError(f"Standardizer.set_state: state must have keys 'mean' and 'std', "
                             f"got {sorted(state)}")
        mean = np.array(state["mean"], dtype=np.float64)
        std = np.array(state["std"], dtype=np.float64)
        if mean.shape != std.shape or mean.ndim == 0:
            raise ValueError(f"Standardizer.set_state: mean and std must be arrays of one "
                             f"shape, got {mean.shape} and {std.shape}")
        axes = self._axes_for(mean.ndim, "set_state")
        if any(mean.shape[a] != 1 for a in axes):
            raise ValueError(f"Standardizer.set_state: mean has shape {mean.shape}, expected "
                             f"size 1 along axis {self.axis!r}")
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std >= 0)):
            raise ValueError("Standardizer.set_state: mean must be finite and std finite and "
                             "non-negative")
        self.mean_, self.std_ = mean, std
        return self

    def __repr__(self):
        return f"Standardizer(axis={self.get_config()['axis']!r}, epsilon={self.epsilon!r})"


# ----------------------------------------------------------------------------- train_test_split

def _n_test(n, test_size):
    func = "train_test_split"
    if _is_int(test_size):
        if not 1 <= test_size <= n - 1:
            raise ValueError(f"{func}: test_size as a count must be in [1, {n - 1}] for {n} "
                             f"samples, got {test_size}")
        return int(test_size)
    if isinstance(test_size, (numbers.Real, np.floating)) and not _is_bool(test_size):
        if not 0.0 < test_size < 1.0:
            raise ValueError(f"{func}: test_size as a fraction must be in (0, 1), got "
                             f"{test_size!r}")
        k = int(math.ceil(test_size * n))
        if not 1 <= k <= n - 1:
            raise ValueError(f"{func}: test_size={test_size!r} of {n} samples gives {k} test "
                             f"and {n - k} training samples; both must be at least 1")
        return k
    raise TypeError(f"{func}: test_size must be a float in (0, 1) or an integer count, got "
                    f"{test_size!r}")


def _stratified_test_indices(groups, n_test, rng):
    """Test indices with each class represented in proportion to its size (largest remainder,
    ties broken at random), total exactly ``n_test``."""
    kw = {"axis": 0} if groups.ndim == 2 else {}
    _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True, **kw)
    inverse = inverse.reshape(-1)
    n = inverse.size
    ideal = n_test * counts / n
    take = np.floor(ideal).astype(np.int64)
    short = n_test - int(take.sum())
    if short:
        frac = ideal - take
        order = np.lexsort((rng.random(len(counts)), -frac))  # largest fraction first
        take[order[:short]] += 1
    test = [rng.permutation(np.flatnonzero(inverse == k))[:t] for k, t in enumerate(take)]
    return np.concatenate(test)


def train_test_split(x, y=None, test_size=0.2, shuffle=True, seed=None, stratify=None):
    """Split samples (first dimension) into a training and a test part.

    Returns ``(x_train, x_test, y_train, y_test)``, or ``(x_train, x_test)`` when ``y`` is None
    (scikit-learn's order). ``test_size`` is a fraction in (0, 1) (the test count is rounded up)
    or an integer count; both parts get at least one sample. With ``shuffle=False`` the last
    samples form the test set. ``stratify`` (class labels, 1-D, or one-hot rows) keeps each
    class's share the same in both parts and needs ``shuffle=True``.
    """
    func = "train_test_split"
    x = _as_array(func, "x", x)
    if y is not None:
        y = _as_array(func, "y", y)
        _check_same_length(func, x, y)
    n = len(x)
    if n < 2:
        raise ValueError(f"{func}: need at least 2 samples to split, got len(x)={n}")
    n_test = _n_test(n, test_size)
    shuffle = _check_bool(func, "shuffle", shuffle)
    if stratify is not None:
        if not shuffle:
            raise ValueError(f"{func}: stratify needs shuffle=True, got shuffle=False")
        stratify = _as_array(func, "stratify", stratify)
        if stratify.ndim > 2 or len(stratify) != n:
            raise ValueError(f"{func}: stratify must be labels of shape ({n},) or ({n}, C) to "
                             f"match x, got shape {stratify.shape}")

    if not shuffle:
        if seed is not None:
            _rng_from(func, seed)  # still validate it
        test_idx = np.arange(n - n_test, n)
        train_idx = np.arange(n - n_test)
    else:
        rng = _rng_from(func, seed)
        if stratify is None:
            perm = rng.permutation(n)
            test_idx, train_idx = perm[:n_test], perm[n_test:]
        else:
            test_idx = _stratified_test_indices(stratify, n_test, rng)
            mask = np.ones(n, dtype=bool)
            mask[test_idx] = False
            test_idx = rng.permutation(test_idx)
            train_idx = rng.permutation(np.flatnonzero(mask))
    out = (x[train_idx], x[test_idx])
    if y is not None:
        out += (y[train_idx], y[test_idx])
    return out


# ----------------------------------------------------------------------------- batches

def batches(x, y=None, batch_size=32, shuffle=False, seed=None, drop_last=False):
    """Iterate over mini-batches: yields ``(xb, yb)``, or ``xb`` alone when ``y`` is None.

    The last batch is smaller when ``batch_size`` does not divide ``len(x)``, unless
    ``drop_last=True`` drops it. With ``shuffle=True`` the order is a permutation drawn from
    ``np.random.default_rng(seed)`` when ``seed`` is given, else from a generator spawned off
    numbanet's global one when ``batches`` is called (so ``nb.seed`` makes it reproducible and
    successive epochs still differ). Arguments are checked when ``batches`` is called, not at
    the first ``next``.
    """
    func = "batches"
    x = _as_array(func, "x", x)
    if y is not None:
        y = _as_array(func, "y", y)
        _check_same_length(func, x, y)
    if not _is_int(batch_size) or batch_size < 1:
        raise ValueError(f"{func}: batch_size must be a positive integer, got {batch_size!r}")
    shuffle = _check_bool(func, "shuffle", shuffle)
    drop_last = _check_bool(func, "drop_last", drop_last)
    batch_size = int(batch_size)
    order = _rng_from(func, seed).permutation(len(x)) if shuffle else None
    if seed is not None and not shuffle:
        _rng_from(func, seed)  # validate only
    return _iterate(x, y, batch_size, order, drop_last)


class DataLoader:
    """The mini-batches of ``batches``, re-iterable as PyTorch's ``DataLoader``: every pass
    (each ``for`` loop, each epoch of ``fit(loader)``) starts again, in a new order with
    ``shuffle=True`` (the orders drawn from ``np.random.default_rng(seed)``, or from a
    generator spawned off numbanet's global one). ``len(loader)`` is the number of batches."""

    def __init__(self, x, y=None, batch_size=32, shuffle=False, seed=None, drop_last=False):
        batches(x, y, batch_size, shuffle, seed, drop_last)        # the checks
        self.x = _as_array("DataLoader", "x", x)
        self.y = None if y is None else _as_array("DataLoader", "y", y)
        self.batch_size, self.shuffle, self.drop_last = int(batch_size), shuffle, drop_last
        self._rng = _rng_from("DataLoader", seed) if shuffle else None

    def __iter__(self):
        order = self._rng.permutation(len(self.x)) if self.shuffle else None
        return _iterate(self.x, self.y, self.batch_size, order, self.drop_last)

    def __len__(self):
        n = len(self.x)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


def _iterate(x, y, batch_size, order, drop_last):
    n = len(x)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        if order is None:
            sl = slice(start, start + batch_size)
        else:
            sl = order[start:start + batch_size]
        if y is None:
            yield x[sl]
        else:
            yield x[sl], y[sl]


# ----------------------------------------------------------------------------- cross-validation

class KFold:
    """Split sample indices into ``n_splits`` folds; each fold is the test part once.

    ``split(x)`` yields ``(train_index, test_index)``; fold sizes differ by at most one (the
    first ``n % n_splits`` folds get one more), as in scikit-learn.
    """

    def __init__(self, n_splits=5, shuffle=False, seed=None):
        if not _is_int(n_splits) or n_splits < 2:
            raise ValueError(f"{type(self).__name__}: n_splits must be an integer >= 2, got "
                             f"{n_splits!r}")
        self.n_splits = int(n_splits)
        self.shuffle = _check_bool(type(self).__name__, "shuffle", shuffle)
        if seed is not None:
            _rng_from(type(self).__name__, seed)      # validates it
        self.seed = seed

    def _check_n(self, n):
        if n < self.n_splits:
            raise ValueError(f"{type(self).__name__}: cannot make {self.n_splits} folds from "
                             f"{n} samples")

    def _folds(self, n, y):
        order = _rng_from("KFold", self.seed).permutation(n) if self.shuffle else np.arange(n)
        sizes = np.full(self.n_splits, n // self.n_splits)
        sizes[:n % self.n_splits] += 1
        return np.split(order, np.cumsum(sizes)[:-1])

    def split(self, x, y=None):
        x = _as_array(type(self).__name__ + ".split", "x", x)
        _check_same_length(type(self).__name__ + ".split", x, y)
        n = len(x)
        self._check_n(n)
        folds = self._folds(n, y)
        for k in range(self.n_splits):
            test = np.sort(folds[k])
            train = np.sort(np.concatenate([f for j, f in enumerate(folds) if j != k]))
            yield train, test


class StratifiedKFold(KFold):
    """KFold that keeps each class's share the same in every fold (labels or one-hot rows)."""

    def _folds(self, n, y):
        if y is None:
            raise ValueError("StratifiedKFold.split: y (the class labels) is required")
        y = np.asarray(y)
        labels = np.argmax(y.reshape(len(y), -1), axis=1) if y.ndim > 1 else y
        classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        if counts.max() < self.n_splits:
            raise ValueError(f"StratifiedKFold: n_splits={self.n_splits} is more than the "
                             f"number of samples in every class (largest {counts.max()})")
        rng = _rng_from("StratifiedKFold", self.seed)
        folds = [[] for _ in range(self.n_splits)]
        start = 0
        # Deal each class's samples round-robin over the folds, continuing where the last class
        # stopped, so fold sizes stay within one of each other.
        for k in range(len(classes)):
            idx = np.flatnonzero(inverse == k)
            if self.shuffle:
                idx = rng.permutation(idx)
            for j, i in enumerate(idx):
                folds[(start + j) % self.n_splits].append(i)
            start += len(idx)
        return [np.array(f, dtype=np.int64) for f in folds]


def cross_validate(build_model, x, y, k=5, stratified=None, shuffle=True, seed=None,
                   fit_kwargs=None):
    """Train a fresh model on each of ``k`` folds and score it on the held-out fold.

    ``build_model()`` returns a compiled model. Returns ``{"loss": [...], "<metric>": [...]}``
    with one score per fold (from ``model.evaluate``). Stratified folds are used by default when
    the model's loss takes class labels or one-hot targets (a classification loss, not the
    targets' dtype: integer regression targets get plain folds).
    """
    if not callable(build_model):
        raise TypeError(f"cross_validate: build_model must be a callable returning a compiled "
                        f"model, got {type(build_model).__name__}")
    x = _as_array("cross_validate", "x", x)
    y = _as_array("cross_validate", "y", y)
    _check_same_length("cross_validate", x, y)
    fit_kwargs = dict(fit_kwargs or {})
    fit_kwargs.setdefault("verbose", 0)
    if seed is None:                        # drawn first, as before the model is built
        seed = int(_random.get_rng().integers(0, 2**31 - 1))
    model = _compiled_model(build_model)    # the first fold's model: its loss picks the folds
    if stratified is None:
        stratified = _takes_class_labels(model.loss)
    folds = (StratifiedKFold if stratified else KFold)(k, shuffle=shuffle, seed=seed)
    scores = {}
    for fold, (train, test) in enumerate(folds.split(x, y)):
        if fold:
            model = _compiled_model(build_model)
        model.fit(x[train], y[train], **fit_kwargs)
        for name, value in model.evaluate(x[test], y[test]).items():
            scores.setdefault(name, []).append(value)
    return scores


def _compiled_model(build_model):
    model = build_model()
    if getattr(model, "loss", None) is None:
        raise ValueError("cross_validate: build_model must return a compiled model")
    return model


def _takes_class_labels(loss):
    """Whether ``loss`` (a model's loss, or its list of per-output losses) is a classification
    loss: class labels, one-hot or 0/1 targets (crossentropies, focal losses, hinges)."""
    if isinstance(loss, (list, tuple)):
        loss = next((l for l in loss if l is not None), None)
    return getattr(loss, "target_kind", None) is not None or \
        getattr(loss, "targets", None) == "signs"
