"""Training curves to a PNG (needs matplotlib: ``pip install numbanet[plot]``)."""
import math
import os

from ._files import atomic_write

_INSTALL = "plot_history needs matplotlib; install it with: pip install numbanet[plot]"


def require_matplotlib():
    """Raise ImportError saying how to install the ``plot`` extra when matplotlib is missing
    (lets a command check before a long training run rather than after it)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:
        raise ImportError(_INSTALL) from e


def _series(history):
    """``(epochs, {key: values})`` from a History callback or its ``history`` dict."""
    epochs = None
    if hasattr(history, "history") and isinstance(history.history, dict):
        epochs = list(getattr(history, "epoch", None) or [])
        history = history.history
    if not isinstance(history, dict):
        raise TypeError(f"plot_history: expected a History (what fit returns) or its history "
                        f"dict, got {type(history).__name__}")
    data = {}
    for key, values in history.items():
        if key == "batch_loss":
            continue
        try:
            data[key] = [float(v) for v in values]
        except (TypeError, ValueError):
            raise ValueError(f"plot_history: history[{key!r}] must be a list of numbers, got "
                             f"{values!r}") from None
    data = {k: v for k, v in data.items() if v}
    if not data:
        raise ValueError("plot_history: the history is empty; nothing to plot (train for at "
                         "least one epoch)")
    n = max(len(v) for v in data.values())
    if not epochs or len(epochs) != n:
        epochs = list(range(n))
    return [e + 1 for e in epochs], data


def _quantities(data):
    """One entry per subplot: (title, train key or None, validation key or None), loss first."""
    names = []
    for key in data:
        base = key[4:] if key.startswith("val_") else key
        if base not in names:
            names.append(base)
    names.sort(key=lambda name: name != "loss")            # stable: keeps the logs' order
    return [(name, name if name in data else None,
             f"val_{name}" if f"val_{name}" in data else None) for name in names]


def plot_history(history, path, title=None, dpi=100):
    """Draw the loss and every metric of ``history`` (train and validation curves, one subplot
    per quantity, against the 1-based epoch) to the PNG ``path``; returns ``path``.

    Rendered with matplotlib's Agg canvas (no display needed, pyplot's global state untouched)
    and written to a temporary file in the same folder first, then moved into place, so a
    failure never leaves a half-written PNG. NaN and infinite values are left out (the panel's
    title says so); every panel spans all the epochs. A positive ``learning_rate`` spanning more
    than a factor of 10 is drawn on a log scale.
    """
    require_matplotlib()
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise ValueError(f"plot_history: `path` must be a non-empty path; received path={path!r}")
    epochs, data = _series(history)
    panels = _quantities(data)
    cols = min(len(panels), 3)
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows + (0.4 if title else 0)), dpi=dpi,
                 layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    margin = max(0.05 * (epochs[-1] - epochs[0]), 0.5)
    for ax, (name, train, val) in zip(axes.flat, panels):
        finite = True
        for key, label, style in ((train, "train", "-o"), (val, "validation", "--s")):
            if key is not None:
                values = data[key]
                finite = finite and all(math.isfinite(v) for v in values)
                ax.plot(epochs[:len(values)], values, style, label=label, markersize=3)
        ax.set_title(name if finite else f"{name} (NaN/inf values not drawn)")
        ax.set_xlim(epochs[0] - margin, epochs[-1] + margin)
        ax.set_xlabel("epoch")
        if len(epochs) <= 12:
            ax.set_xticks(epochs)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        if name == "learning_rate":
            rates = [v for v in data[train or val] if math.isfinite(v)]
            if rates and min(rates) > 0 and max(rates) > 10 * min(rates):
                ax.set_yscale("log")
        if val is not None:
            ax.legend()
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    return atomic_write(path, lambda f: fig.savefig(f, format="png"))


def figure(rows=1, cols=1, size=(4.0, 3.2), title=None):
    """(Figure, axes array rows x cols) drawn with matplotlib's Agg canvas (no display, pyplot's
    global state untouched): the examples' pictures start here and end with ``save``."""
    require_matplotlib()
    from matplotlib.figure import Figure
    fig = Figure(figsize=(size[0] * cols, size[1] * rows + (0.4 if title else 0)),
                 layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    if title:
        fig.suptitle(title)
    return fig, axes


def save(fig, path):
    """Write ``fig`` to the PNG ``path`` atomically (a failure leaves no half-written file)."""
    return atomic_write(path, lambda f: fig.savefig(f, format="png"))


def image_grid(images, path, cols=10, title=None, row_titles=None, cmap="gray", vmin=None,
               vmax=None):
    """A grid of (n, h, w) images to the PNG ``path``; ``row_titles`` label the rows. Values are
    drawn from ``vmin`` to ``vmax`` (clipped outside), each image's own min and max where None."""
    n = len(images)
    rows = max(1, math.ceil(n / cols))
    fig, axes = figure(rows, cols, size=(1.0, 1.0), title=title)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i < n:
            ax.imshow(images[i], cmap=cmap, vmin=vmin, vmax=vmax)
        if row_titles is not None and i % cols == 0 and i // cols < len(row_titles):
            ax.set_title(row_titles[i // cols], fontsize=8, loc="left")
    return save(fig, path)
