"""A tour of the optimizers: the same small network, from the same initial weights, trained on
the 8x8 digits with each optimizer, and the training-loss curves side by side.

    from numbanet.optimizer_tour import compare_optimizers
    losses = compare_optimizers(epochs=10, plot="optimizers.png")

What the curves show (a visual explanation of gradient-descent methods, on a real problem):

* SGD takes the raw gradient; momentum accumulates it (faster along consistent directions) and
  Nesterov evaluates the step after a look-ahead, which damps the overshoot.
* Adagrad, Adadelta and RMSprop scale every coordinate by its own history of squared gradients:
  Adagrad's rates only shrink, RMSprop forgets with a moving average, Adadelta also rescales by
  the history of its own steps (so it needs no learning rate of its own: lr=1 here).
* Adam adds momentum to RMSprop's scaling with bias corrections; AMSGrad keeps the largest
  second moment, AdamW decays the weights separately, Nadam uses Nesterov momentum, Adamax the
  infinity norm, and RAdam starts as momentum SGD until the variance estimate is trustworthy.
* AdaBound/AMSBound clip Adam's per-coordinate rates into bounds that close in on an SGD rate
  (``final_lr``); Lookahead wraps Adam and every k steps pulls "slow" weights part of the way
  towards the fast ones.
* L-BFGS is different in kind: full batch, a quasi-Newton direction from the last few gradient
  differences and a strong-Wolfe line search. Each of its "epochs" is one ``step`` of at most
  ``LBFGS_ITERATIONS`` iterations, so it sees the whole data set a few times per epoch.

Each mini-batch optimizer sees the same batches in the same order (``fit`` with the same seed);
every curve is the loss over the whole training set after each epoch, starting from the common
initial loss at epoch 0. ``numbanet optimizers [--epochs N] [--plot PNG]`` runs this from the
command line.
"""
import math
import os

import time

import numpy as np

from . import callbacks, datasets, layers
from . import optimizers as _opt
from . import random as _random
from ._files import atomic_write, check_writable
from .models import Sequential
from .plot import require_matplotlib

LBFGS_ITERATIONS = 5

#: panel title -> optimizer classes drawn in colour in it (the others in grey behind)
FAMILIES = (
    ("SGD, momentum, Nesterov", (_opt.SGD,)),
    ("Per-coordinate rates", (_opt.Adagrad, _opt.Adadelta, _opt.RMSprop)),
    ("Adam and its variants", (_opt.Adam, _opt.Nadam, _opt.Adamax, _opt.RAdam, _opt.Lion)),
    ("Bounded rates, Lookahead, L-BFGS", (_opt.AdaBound, _opt.Lookahead, _opt.LBFGS)),
)


def default_optimizers():
    """``{label: optimizer}``: every optimizer numbanet has. One learning rate, 0.01, for Adam and
    the methods built on it (Adamax 0.02, as its scale suggests); 0.1 for SGD, 0.05 for Adagrad,
    0.003 for RMSprop and 1.0 for Adadelta, each about the largest that trains smoothly here."""
    O = _opt
    return {
        "SGD": O.SGD(learning_rate=0.1),
        "SGD + momentum": O.SGD(learning_rate=0.1, momentum=0.9),
        "Nesterov": O.SGD(learning_rate=0.1, momentum=0.9, nesterov=True),
        "Adagrad": O.Adagrad(learning_rate=0.05),
        "Adadelta": O.Adadelta(learning_rate=1.0),
        "RMSprop": O.RMSprop(learning_rate=0.003),
        "Adam": O.Adam(learning_rate=0.01),
        "AMSGrad": O.Adam(learning_rate=0.01, amsgrad=True),
        "AdamW": O.AdamW(learning_rate=0.01),
        "Nadam": O.Nadam(learning_rate=0.01),
        "Adamax": O.Adamax(learning_rate=0.02),
        "RAdam": O.RAdam(learning_rate=0.01),
        "Lion": O.Lion(learning_rate=0.01),
        "AdaBound": O.AdaBound(learning_rate=0.01, final_lr=0.1),
        "AMSBound": O.AMSBound(learning_rate=0.01, final_lr=0.1),
        "Lookahead(Adam)": O.Lookahead(O.Adam(learning_rate=0.01), k=5, alpha=0.5),
        "L-BFGS": O.LBFGS(max_iter=LBFGS_ITERATIONS, history_size=10,
                          line_search_fn="strong_wolfe"),
    }


def build_model(device="cpu"):
    """The network every optimizer trains: 64 pixels -> 32 tanh units -> 10 softmax classes."""
    return Sequential([layers.Flatten(), layers.Dense(32, activation="tanh"),
                       layers.Dense(10, activation="softmax")], input_shape=(1, 8, 8),
                      device=device)


class _TrainingLoss(callbacks.Callback):
    """Appends the loss over the whole training set at the end of every epoch."""

    def __init__(self, x, y, out):
        super().__init__()
        self.x, self.y, self.out = x, y, out

    def on_epoch_end(self, epoch, logs=None):
        self.out.append(self.model.evaluate(self.x, self.y, batch_size=512)["loss"])


def _as_dict(chosen):
    if chosen is None:
        return default_optimizers()
    if isinstance(chosen, dict):
        items = list(chosen.items())
    elif isinstance(chosen, (list, tuple)):
        items = [(c if isinstance(c, str) else type(c).__name__, c) for c in chosen]
    else:
        raise TypeError(f"compare_optimizers: `optimizers` must be None, a dict {{label: "
                        f"optimizer}} or a list of optimizers or names; received {chosen!r}")
    out = {}
    for label, opt in items:
        if not isinstance(label, str) or label in out:
            raise ValueError(f"compare_optimizers: labels must be distinct strings; received "
                             f"{label!r} twice or not a string")
        out[label] = _opt.get(opt)
    if not out:
        raise ValueError("compare_optimizers: no optimizers to compare")
    return out


def compare_optimizers(optimizers=None, epochs=10, seed=0, plot=None, batch_size=64,
                       device="cpu", verbose=False):
    """Train ``build_model()`` on ``datasets.load_digits()`` once per optimizer and return
    ``{label: [training loss after epoch 1, ..., after epoch epochs]}`` (NaN after a run that
    blew up and stopped).

    ``optimizers``: ``None`` (``default_optimizers()``), a dict ``{label: optimizer or name}``
    or a list of optimizers / names (labelled by name or class). Every run starts from the same
    weights (drawn with ``seed``) and the mini-batch ones see the same batches; ``LBFGS`` trains
    full batch, one ``step`` per epoch. ``plot``: a PNG path for the curves side by side (needs
    matplotlib: ``pip install numbanet[plot]``). ``verbose``: print one line per optimizer.
    The global numbanet generator is left as it was.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
        raise ValueError(f"compare_optimizers: `epochs` must be an integer >= 1; received "
                         f"epochs={epochs!r}")
    if plot is not None:
        if not isinstance(plot, (str, os.PathLike)) or not os.fspath(plot):
            raise ValueError(f"compare_optimizers: `plot` must be a PNG path; received "
                             f"plot={plot!r}")
        require_matplotlib()                              # fail before training, not after
        check_writable(plot, "the plot")
    chosen = _as_dict(optimizers)
    x, y = datasets.load_digits()
    saved_rng = _random.get_rng()
    try:
        _random.seed(seed)
        start = build_model(device)
        initial_weights = start.get_weights()
        start.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
        initial_loss = start.evaluate(x, y, batch_size=512)["loss"]
        results = {}
        for label, opt in chosen.items():
            t0 = time.perf_counter()
            results[label] = _train(opt, initial_weights, x, y, int(epochs), seed, batch_size,
                                    device)
            if verbose:
                last = results[label][-1]
                print(f"{label:<18} loss {initial_loss:.4f} -> {last:.4f}  "
                      f"({time.perf_counter() - t0:.1f}s)")
    finally:
        _random._rng = saved_rng
    if plot is not None:
        plot_losses(results, plot, initial_loss=initial_loss, optimizers=chosen)
    return results


def _train(opt, weights, x, y, epochs, seed, batch_size, device):
    model = build_model(device)
    model.set_weights(weights)
    model.compile(optimizer=opt, loss="sparse_categorical_crossentropy")
    losses = []
    if isinstance(opt, _opt.LBFGS):
        closure = _opt.model_closure(model, x, y)
        for _ in range(epochs):
            opt.step(closure.params, closure.grads, closure)
            losses.append(model.evaluate(x, y, batch_size=512)["loss"])
            if not math.isfinite(losses[-1]):
                break
    else:
        model.fit(x, y, epochs=epochs, batch_size=batch_size, seed=seed, verbose=0,
                  callbacks=[_TrainingLoss(x, y, losses)])
    losses = [float(v) for v in losses]
    return losses + [math.nan] * (epochs - len(losses))


def _log_ticks(low, high):
    """1-2-5 ticks between ``low`` and ``high`` (only the powers of ten for a wide range)."""
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    steps = (1, 2, 5) if last - first <= 4 else (1,)
    ticks = [m * 10.0 ** e for e in range(first, last + 1) for m in steps]
    return [t for t in ticks if low <= t <= high]


def _family(opt):
    for k, (_, classes) in enumerate(FAMILIES):
        if isinstance(opt, classes):
            return k
    return len(FAMILIES) - 1


def plot_losses(results, path, initial_loss=None, optimizers=None, title=None, dpi=110):
    """Draw ``{label: per-epoch losses}`` to the PNG ``path``: one panel per optimizer family
    (``FAMILIES``; by the classes in ``optimizers`` = ``{label: optimizer}``, else one panel),
    its curves in colour over the others in grey, on a shared log-scale loss axis. Written to a
    temporary file first and moved into place. Returns ``path``."""
    require_matplotlib()
    from matplotlib.figure import Figure
    from matplotlib.ticker import FormatStrFormatter, MaxNLocator, NullFormatter
    groups = {}
    for label in results:
        k = _family(optimizers[label]) if optimizers and label in optimizers else 0
        groups.setdefault(k, []).append(label)
    panels = sorted(groups)
    cols = min(len(panels), 2)
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(6.0 * cols, 3.9 * rows + 0.5), dpi=dpi, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)

    def curve(values):
        ys = ([initial_loss] if initial_loss is not None else []) + list(values)
        xs = list(range(0 if initial_loss is not None else 1, len(values) + 1))
        pairs = [(a, b) for a, b in zip(xs, ys) if b is not None and math.isfinite(b) and b > 0]
        return [a for a, _ in pairs], [b for _, b in pairs]

    # The y range follows the mini-batch curves; a full-batch L-BFGS run that drives the loss
    # orders of magnitude lower is drawn until it leaves the axes and its final value written.
    minibatch = [v for label, values in results.items()
                 if not (optimizers and isinstance(optimizers.get(label), _opt.LBFGS))
                 for v in curve(values)[1]]
    everything = [v for values in results.values() for v in curve(values)[1]]
    low = 0.5 * min(minibatch or everything or [1.0])
    high = 1.5 * max(everything or [1.0])
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    for ax, k in zip(axes.flat, panels):
        for label, values in results.items():
            if label not in groups[k]:
                ax.plot(*curve(values), color="0.82", linewidth=1.0, zorder=1)
        for i, label in enumerate(groups[k]):
            xs, ys = curve(results[label])
            opt = optimizers.get(label) if optimizers else None
            name = (f"{label} (full batch, <= {opt.max_iter} iterations/epoch)"
                    if isinstance(opt, _opt.LBFGS) else label)
            colour = colours[i % len(colours)]
            ax.plot(xs, ys, color=colour, linewidth=2.0, label=name, zorder=2, marker="o",
                    markersize=2.5)
            if ys and min(ys) < low:
                ax.annotate(f"{label}: {ys[-1]:.1e} at epoch {xs[-1]}", xy=(xs[-1], low),
                            xytext=(0, 8), textcoords="offset points", ha="right",
                            va="bottom", color=colour, fontsize=8,
                            arrowprops=dict(arrowstyle="->", color=colour))
        ax.set_title(FAMILIES[k][0] if optimizers else "optimizers")
        ax.set_yscale("log")
        ax.set_yticks(_log_ticks(low, high))
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_ylim(low, high)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    for ax in axes[:, 0]:
        ax.set_ylabel("training loss (log scale)")
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(title or "Same network, same start, same batches: training loss on the 8x8 "
                          "digits (grey: the other optimizers)")
    return atomic_write(path, lambda f: fig.savefig(f, format="png"))
