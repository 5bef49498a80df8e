"""Valid, seeded inputs for every kernel of a backend, at a few sizes.

``kernel_calls(backend, dtype, size)`` gives (kernel name, arguments) for each kernel the backend
binds: structured shapes (dense, conv, pooling, normalization, augmentation) come from a table,
the rest (activations, losses, optimizer updates, elementwise) from the kernels' parameter names.
``numbanet compare`` and the asv suite both build their calls here.
"""
import functools
import inspect
import math

import numpy as np

from numbanet.kernels import scalar

SEED = 20240601
RELU = 1        # activation code of the fused forwards' inputs (kernels/scalar.py ACTIVATION_CODES)

# Dimensions per size: batch, channels in/out, image side, features, flat buffer length, classes.
SIZES = {
    "small": dict(n=2, c=2, k=3, hw=6, feat=4, flat=8, classes=4),
    "medium": dict(n=32, c=16, k=32, hw=16, feat=256, flat=1 << 16, classes=10),
    "large": dict(n=128, c=32, k=64, hw=28, feat=1024, flat=1 << 20, classes=10),
}

# Recurrent kernels per size: time steps and units (the batch is the size's n).
RNN_SIZES = {"small": dict(steps=3, units=4), "medium": dict(steps=16, units=64),
             "large": dict(steps=32, units=256)}

# Typical values of the scalar hyperparameters, by the kernels' parameter names.
SCALARS = {
    "lr": 1e-3, "momentum": 0.9, "weight_decay": 0.0, "nesterov": False, "eps": 1e-7,
    "alpha": 0.5, "beta": 0.5, "beta1": 0.9, "beta2": 0.999, "gamma": 2.0, "rho": 0.9,
    "centered": False, "amsgrad": False, "amsbound": False, "step": 10, "mu": 0.9,
    "mu_next": 0.9, "mu_product": 0.81, "final_lr": 0.1, "factor": 0.5, "a": 0.5, "l1": 0.01,
    "l2": 0.01, "rate": 0.5, "stddev": 0.1, "delta": 1.0, "smooth": 1.0, "margin": 1.0,
    "p": 2.0, "apply_class_balancing": False,
}


def _rng(salt, shape):
    return np.random.default_rng([SEED, salt, *shape])


def _frozen(a):
    a.flags.writeable = False
    return a


@functools.lru_cache(maxsize=None)
def normal(shape, dtype, salt=0, scale=1.0):
    """Standard normal numbers (times ``scale``); cached, read-only (``on`` gives a copy)."""
    return _frozen((_rng(salt, shape).standard_normal(shape) * scale).astype(dtype))


@functools.lru_cache(maxsize=None)
def uniform(shape, dtype, low=0.0, high=1.0, salt=0):
    return _frozen(_rng(salt, shape).uniform(low, high, shape).astype(dtype))


@functools.lru_cache(maxsize=None)
def labels(n, classes, salt=0):
    """int64 class labels in [0, classes)."""
    return _frozen(_rng(salt, (n, classes)).integers(0, classes, n).astype(np.int64))


@functools.lru_cache(maxsize=None)
def onehot(n, classes, dtype, salt=0):
    return _frozen(np.eye(classes, dtype=dtype)[labels(n, classes, salt)])


@functools.lru_cache(maxsize=None)
def probabilities(shape, dtype, salt=0):
    """Rows of positive numbers summing to 1 (softmax of normal numbers)."""
    z = normal(shape, "float64", salt).astype(np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return _frozen((e / e.sum(axis=1, keepdims=True)).astype(dtype))


def on(be, *hosts):
    """Fresh writable backend copies of host arrays (one array, or a tuple for several)."""
    arrays = tuple(be.asarray(np.array(h)) for h in hosts)
    return arrays[0] if len(arrays) == 1 else arrays


def kernel_params(fn):
    """Parameter names of a kernel (an @njit dispatcher or a CUDA launcher)."""
    return list(inspect.signature(getattr(fn, "py_func", fn)).parameters)


def kernel_module(fn):
    """The kernel module (``"losses"``, ...) a kernel is defined in."""
    return getattr(fn, "py_func", fn).__module__.rsplit(".", 1)[-1]


def flat_args(be, fn, n, dtype):
    """Arguments of a kernel over flat buffers (optimizers, elementwise, regularization): every
    array parameter a length-``n`` vector (``u`` uniform, state buffers zero), scalars typical."""
    args = []
    for i, name in enumerate(kernel_params(fn)):
        if name in SCALARS:
            args.append(SCALARS[name])
        elif name == "u":
            args.append(on(be, uniform((n,), dtype, salt=i)))
        elif i < 2 or name in ("x", "y", "slow", "fast", "noise", "w", "grad_out", "mask"):
            args.append(on(be, normal((n,), dtype, salt=i, scale=0.1)))
        else:
            args.append(be.zeros((n,), dtype))
    return tuple(args)


def loss_args(be, fn, n, d, dtype):
    """Arguments of a loss kernel for ``n`` samples of ``d`` values: targets and predictions of
    the kinds the loss takes (labels, one-hot rows, 0/1, +-1, probabilities, logits), unit
    sample weights, typical scalars, then the output(s)."""
    name = getattr(fn, "py_func", fn).__name__
    kinds = {loss.name: loss.kinds for loss in scalar.LOSSES}.get(name.rsplit("_", 1)[0])
    tkind, pkind = (kinds or "real real").split()      # the kinds of scalar.LOSSES
    if tkind == "pm1":
        y_true = (2.0 * (normal((n, d), dtype, 1) > 0) - 1.0).astype(dtype)
    elif tkind in ("unit", "mask"):
        y_true = (uniform((n, d), dtype, salt=1) > 0.5).astype(dtype)
    elif tkind == "dist":
        y_true = onehot(n, d, dtype, 1)
    else:
        y_true = normal((n, d), dtype, 1)
    if "logits" in name:
        y_pred = normal((n, d), dtype, 2, 3.0)
    elif pkind == "prob" and tkind in ("dist", "labels"):
        y_pred = probabilities((n, d), dtype, 2)
    elif pkind in ("prob", "pos"):
        y_pred = uniform((n, d), dtype, 0.01, 0.99, salt=2)
    else:
        y_pred = normal((n, d), dtype, 2)
    args = []
    for i, p in enumerate(kernel_params(fn)):
        if p in SCALARS:
            args.append(SCALARS[p])
        elif p == "labels":
            args.append(on(be, labels(n, d, 1)))
        elif p == "y_true":
            args.append(on(be, y_true))
        elif p in ("y_pred", "logits"):
            args.append(on(be, y_pred))
        elif p == "y":                               # pair labels of the contrastive loss
            args.append(on(be, (uniform((n,), dtype, salt=3) > 0.5).astype(dtype)))
        elif p == "weights":
            args.append(on(be, np.ones(n, dtype)))
        elif p == "out":
            args.append(be.empty((1,), dtype))
        elif p.startswith("grad"):
            args.append(be.empty((n, d), dtype))
        elif p in ("x1", "x2", "anchor", "positive", "negative"):
            args.append(on(be, normal((n, d), dtype, 10 + i)))
        else:
            raise KeyError(f"{name}: no input for parameter {p!r}")
    return tuple(args)


def _pool_argmax(n, c, hw):
    """Argmax of a 2x2/2 max pool: the top-left cell h*W + w of each window."""
    o = hw // 2
    hh, ww = np.meshgrid(np.arange(o) * 2, np.arange(o) * 2, indexing="ij")
    return np.broadcast_to(hh * hw + ww, (n, c, o, o)).astype(np.int64)


def _structured_calls(be, dt, n, c, k, hw, feat, **_):
    """Calls of the kernels whose arrays have structured shapes."""
    f = lambda *shape: on(be, normal(shape, dt, salt=len(shape)))          # noqa: E731
    pos = lambda *shape: on(be, uniform(shape, dt, 0.5, 1.5, len(shape)))  # noqa: E731
    e = lambda *shape: be.empty(shape, dt)                                 # noqa: E731
    i64 = lambda values: on(be, np.asarray(values, dtype=np.int64))       # noqa: E731
    o, s = hw // 2, hw * hw
    x3, g3, x2, g2 = f(n, c, s), f(n, c, s), f(n, feat), f(n, feat)
    flips = i64(np.arange(n) % 2)
    shifts = i64((np.arange(n) % 3) - 1)
    cos, sin, mid = math.cos(0.3), math.sin(0.3), (hw - 1) / 2
    warp = on(be, np.tile(np.array([cos, sin, mid - cos * mid - sin * mid, -sin, cos,
                                    mid + sin * mid - cos * mid], dt), (n, 1)))
    return {
        "dense_forward": (f(n, feat), f(feat, feat), f(feat), e(n, feat)),
        "dense_forward_activation": (f(n, feat), f(feat, feat), f(feat), RELU, 0.0, e(n, feat),
                                     e(n, feat)),
        "dense_backward_input": (f(n, feat), f(feat, feat), e(n, feat)),
        "dense_backward_weight": (f(n, feat), f(n, feat), False, e(feat, feat), e(feat)),
        "conv2d_forward": (f(n, c, hw, hw), f(k, c, 3, 3), f(k), 1, 1, 1, 1, 1, 1,
                           e(n, k, hw, hw)),
        "conv2d_forward_activation": (f(n, c, hw, hw), f(k, c, 3, 3), f(k), 1, 1, 1, 1, 1, 1,
                                      RELU, 0.0, e(n, k, hw, hw), e(n, k, hw, hw)),
        "conv2d_backward_input": (f(n, k, hw, hw), f(k, c, 3, 3), 1, 1, 1, 1, 1, 1,
                                  e(n, c, hw, hw)),
        "conv2d_backward_weight": (f(n, c, hw, hw), f(n, k, hw, hw), 1, 1, 1, 1, 1, 1, False,
                                   e(k, c, 3, 3)),
        "conv2d_backward_bias": (f(n, k, hw, hw), False, e(k)),
        "conv2d_backward_params": (f(n, c, hw, hw), f(n, k, hw, hw), 1, 1, 1, 1, 1, 1, False,
                                   e(k, c, 3, 3), e(k)),
        "max_pool2d_forward": (f(n, c, hw, hw), 2, 2, 2, 2, 0, 0, e(n, c, o, o),
                               be.empty((n, c, o, o), np.int64)),
        "max_pool2d_backward": (f(n, c, o, o), on(be, _pool_argmax(n, c, hw)), e(n, c, hw, hw)),
        "avg_pool2d_forward": (f(n, c, hw, hw), 2, 2, 2, 2, 0, 0, e(n, c, o, o)),
        "avg_pool2d_backward": (f(n, c, o, o), 2, 2, 2, 2, 0, 0, e(n, c, hw, hw)),
        "upsample2d_forward": (f(n, c, o, o), 2, 2, e(n, c, hw, hw)),
        "upsample2d_backward": (f(n, c, hw, hw), 2, 2, e(n, c, o, o)),
        # global pooling: an (n, c, hw, hw) batch seen as n*c rows of hw*hw
        "global_avg_pool_forward": (f(n * c, s), e(n * c)),
        "global_avg_pool_backward": (f(n * c), e(n * c, s)),
        "global_max_pool_forward": (f(n * c, s), e(n * c), be.empty((n * c,), np.int64)),
        "global_max_pool_backward": (f(n * c), i64(np.arange(n * c) * 7 % s), e(n * c, s)),
        "batchnorm_forward_train": (x3, f(c), f(c), 1e-5, e(n, c, s), e(c), e(c)),
        "batchnorm_forward_infer": (x3, f(c), f(c), f(c), pos(c), 1e-5, e(n, c, s)),
        "batchnorm_backward": (x3, g3, f(c), f(c), pos(c), False, e(n, c, s), e(c), e(c)),
        "batchnorm_backward_infer": (x3, g3, f(c), f(c), pos(c), 1e-5, False, e(n, c, s), e(c),
                                     e(c)),
        "batchnorm_update_running": (f(c), pos(c), f(c), pos(c), 1e-5, 0.99, n * s),
        "layernorm_forward": (x2, f(feat), f(feat), 1e-5, e(n, feat), e(n), e(n)),
        "layernorm_backward": (x2, g2, f(feat), f(n), pos(n), False, e(n, feat), e(feat),
                               e(feat)),
        "spatial_dropout2d_forward": (f(n, c, hw, hw), on(be, uniform((n, c), dt)), 0.5,
                                      e(n, c, hw, hw), e(n, c)),
        "spatial_dropout2d_backward": (f(n, c, hw, hw), pos(n, c), e(n, c, hw, hw)),
        "flip_forward": (f(n, c, hw, hw), flips, flips, e(n, c, hw, hw)),
        "flip_backward": (f(n, c, hw, hw), flips, flips, e(n, c, hw, hw)),
        "translate_forward": (f(n, c, hw, hw), shifts, shifts, e(n, c, hw, hw)),
        "translate_backward": (f(n, c, hw, hw), shifts, shifts, e(n, c, hw, hw)),
        # a small rotation about the image centre, reflected at the edges, bilinear
        "warp_forward": (f(n, c, hw, hw), warp, 1, 0.0, True, e(n, c, hw, hw)),
        "warp_backward": (f(n, c, hw, hw), warp, 1, True, e(n, c, hw, hw)),
        "box_muller": (on(be, uniform((2 * n * feat,), dt)), e(n * feat)),
    }


def _pad6(*dims):
    """A shape or strides tuple of the op kernels: padded at the front to 6 entries (MAX_RANK)."""
    return (1,) * (6 - len(dims)) + dims


def _ops_calls(be, dt, n, feat, **_):
    """Calls of the op kernels (kernels/*/ops.py) on an (n, feat) activation: a broadcast row,
    a sum over the batch, maxima over features, a transpose, a batch of two (n, feat) @ (feat,
    feat) products sharing the right operand, an embedding-style take of 4n rows of a (feat,
    feat) table."""
    from numbanet.kernels.scalar import BINARY_CODES, UNARY_CODES
    f = lambda *shape: on(be, normal(shape, dt, salt=10 + len(shape)))   # noqa: E731
    e = lambda *shape: be.empty(shape, dt)                               # noqa: E731
    nf, m = n * feat, 4 * n
    exp, mul = UNARY_CODES.index("exp"), BINARY_CODES.index("multiply")
    z4 = (0,) * 4
    # the (n, feat) space, the strides of an (n, feat) operand and of a row broadcast over n
    nxf, rows, row = _pad6(n, feat), z4 + (feat, 1), z4 + (0, 1)
    cond = on(be, (uniform((nf,), dt, salt=11) > 0.5).astype(dt))
    idx = on(be, labels(m, feat, salt=12))
    x, g, b = f(nf), on(be, normal((nf,), dt, salt=13)), f(feat)
    return {
        "unary_forward": (exp, x, 0.0, 0.0, e(nf)),
        "unary_backward": (exp, x, x, g, 0.0, 0.0, e(nf)),
        "binary_forward": (mul, x, b, nxf, rows, row, e(nf)),
        "binary_backward": (mul, x, b, g, nxf, rows, row, e(nf), e(nf)),
        "where_forward": (cond, x, b, nxf, rows, rows, row, e(nf)),
        "where_backward": (cond, g, nxf, rows, e(nf), e(nf)),
        "reduce_sum": (x, _pad6(feat), row, _pad6(n), z4 + (0, feat), 1.0 / n, e(feat)),
        "reduce_max": (x, _pad6(n), z4 + (0, feat), _pad6(feat), row, e(n)),
        "strided_copy": (x, 0, _pad6(feat, n), z4 + (1, feat), False, e(nf), 0, z4 + (n, 1)),
        "matmul_forward": (f(2 * nf), f(feat * feat), _pad6(2), z4 + (0, nf), (0,) * 6, n, feat,
                           feat, feat, feat, False, False, False, e(2 * nf)),
        "take_forward": (f(feat * feat), idx, 1, feat, feat, e(m * feat)),
        "take_backward": (f(m * feat), idx, 1, feat, feat, False, e(feat * feat)),
        "log_softmax_forward": (f(n, feat), e(n, feat)),
        "log_softmax_backward": (f(n, feat), on(be, normal((n, feat), dt, salt=14)), e(n, feat)),
    }


def _word2vec_calls(be, dt, n, feat, **_):
    """Calls of the word2vec kernels (kernels/*/word2vec.py), race-free so that every run gives
    the same result: 4n examples whose words are all distinct (one GPU block each), and one
    chunk of 16n words in sentences of 8 (one CPU thread, one GPU block: the GPU time is one
    block's, not the throughput of many). Vectors of min(feat, 100) dimensions."""
    dim, p, k = min(feat, 100), 4 * n, 5 if n > 2 else 2
    vocab = p * (3 + k)
    f = lambda salt: on(be, normal((vocab, dim), dt, salt=salt, scale=0.1))  # noqa: E731
    i32 = lambda values: on(be, np.asarray(values, dtype=np.int32))     # noqa: E731
    i64 = lambda values: on(be, np.asarray(values, dtype=np.int64))     # noqa: E731
    words = np.arange(vocab)
    negatives = i32(words[3 * p:].reshape(p, k))
    m = 16 * n
    cum = np.round(np.arange(1, vocab + 1) / vocab * (2**31 - 1))
    table = (i64(np.full(vocab, 2**31)), i32(cum))          # keep words half the time
    train = lambda: (i32(labels(m, vocab, salt=21)), i64(np.arange(0, m + 1, 8)),  # noqa: E731
                     i64([0, m // 8]), on(be, np.array([0.025])), *table, 5, k, SEED, 0, f(20),
                     f(22), be.empty((1,), np.int64))
    return {
        "skipgram_update": (i32(words[:p]), i32(words[p:2 * p]), negatives, 0.025, f(20), f(22)),
        "cbow_update": (i64(np.arange(0, 2 * p + 1, 2)), i32(words[:2 * p]),
                        i32(words[2 * p:3 * p]), negatives, 0.025, f(20), f(22)),
        "skipgram_train": train(),
        "cbow_train": train(),
    }


def _rnn_calls(be, dt, n, steps, units):
    """Calls of the recurrent kernels (kernels/*/rnn.py): ``n`` sequences of ``steps`` steps,
    ``units`` units, the last step of every other sequence masked, tanh for SimpleRNN; the
    backward's saved states are plausible values (gates in (0, 1)), not a forward's."""
    from numbanet.kernels.scalar import ACTIVATION_CODES
    f = lambda *shape: on(be, normal(shape, dt, salt=20 + len(shape), scale=0.5))  # noqa: E731
    gate = lambda *shape: on(be, uniform(shape, dt, 0.05, 0.95, salt=21))        # noqa: E731
    e = lambda *shape: be.empty(shape, dt)                                       # noqa: E731
    t, u, tanh = steps, units, ACTIVATION_CODES.index("tanh")
    mask = np.ones((n, t), dt)
    mask[1::2, -1] = 0
    mask = on(be, mask)
    h0, seq = f(n, u), (n, t, u)
    calls = {}
    for cell, g in (("simple_rnn", 1), ("lstm", 4), ("gru", 3)):
        xp, w = f(n, t, g * u), on(be, normal((u, g * u), dt, salt=22, scale=u ** -0.5))
        grads = (f(*seq), f(n, u))
        outs = (e(n, t, g * u), e(u, g * u))
        if cell == "simple_rnn":
            calls[cell] = ((xp, w, h0, mask, False, tanh, e(*seq), e(*seq)),
                           (w, h0, mask, False, tanh, f(*seq), f(*seq), *grads, False, *outs,
                            e(n, u)))
        elif cell == "lstm":
            calls[cell] = ((xp, w, h0, h0, mask, False, e(*seq), e(*seq), e(n, t, 4 * u)),
                           (w, h0, h0, mask, False, f(*seq), f(*seq), gate(n, t, 4 * u), *grads,
                            f(n, u), False, *outs, e(n, u), e(n, u)))
        else:
            ub = f(g * u)
            calls[cell] = ((xp, w, ub, h0, mask, False, e(*seq), e(n, t, 4 * u)),
                           (w, ub, h0, mask, False, f(*seq), gate(n, t, 4 * u), *grads, False,
                            *outs, e(g * u), e(n, u)))
    return {f"{cell}_{p}": args for cell, pair in calls.items()
            for p, args in zip(("forward", "backward"), pair)}


# Attention softmax per size: batch rows N, heads, sequence length T (= Tq = Tk); large keeps
# to 4M elements an array, as the other large inputs (every call's inputs are built).
ATTENTION_SIZES = {"small": dict(n=2, heads=2, t=8), "medium": dict(n=32, heads=4, t=64),
                   "large": dict(n=8, heads=8, t=256)}


def _attention_calls(be, dt, n, heads, t):
    """Calls of the attention-softmax kernels (kernels/*/attention.py): (n * heads, t, t) scores,
    scale 1/4, the last quarter of the keys masked (padding) in every other batch row, dropout
    0.1; the backward's probs are softmax rows."""
    b = n * heads
    mask = np.ones((n, t, t), np.uint8)
    mask[1::2, :, t - t // 4:] = 0
    u = on(be, uniform((b, t, t), dt, salt=31))
    probs = probabilities((b * t, t), dt, salt=32).reshape(b, t, t)
    return {
        "attention_softmax_forward": (on(be, normal((b, t, t), dt, salt=30, scale=3.0)),
                                      on(be, mask), heads, False, 0.25, u, 0.1,
                                      be.empty((b, t, t), dt), be.empty((b, t, t), dt)),
        "attention_softmax_backward": (on(be, probs), u, 0.1, 0.25,
                                       on(be, normal((b, t, t), dt, salt=33)),
                                       be.empty((b, t, t), dt)),
    }


def kernel_calls(be, dtype="float32", size="small", names=None):
    """``(calls, uncovered)``: ``calls`` lists (kernel name, arguments) for every kernel of ``be``
    (or those in ``names``) at ``size``; ``uncovered`` names kernels no inputs could be made for."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; expected one of {', '.join(SIZES)}")
    dims = SIZES[size]
    dt = np.dtype(dtype)
    structured = {**_structured_calls(be, dt, **dims), **_ops_calls(be, dt, **dims),
                  **_word2vec_calls(be, dt, **dims)}
    structured.update(_rnn_calls(be, dt, dims["n"], **RNN_SIZES[size]))
    structured.update(_attention_calls(be, dt, **ATTENTION_SIZES[size]))
    calls, uncovered = [], []
    for name, fn in sorted(be.kernels.items()):
        if names is not None and name not in names:
            continue
        module = kernel_module(fn)
        try:
            if name in structured:
                args = structured[name]
            elif module == "activations":
                shape = (dims["n"], dims["feat"]) if name.startswith("softmax") else \
                    (dims["n"] * dims["feat"],)
                x = on(be, normal(shape, dt, 1))
                args = ((x, 0.1, be.empty(shape, dt)) if name.endswith("_forward") else
                        (x, x, on(be, normal(shape, dt, 2)), 0.1, be.empty(shape, dt)))
            elif module == "losses":
                args = loss_args(be, fn, dims["n"], dims["classes"], dt)
            elif module in ("optim", "elementwise", "regularization", "augmentation"):
                args = flat_args(be, fn, dims["flat"], dt)
            else:
                raise KeyError(name)
            if len(args) != len(kernel_params(fn)):
                raise KeyError(name)
        except KeyError:
            uncovered.append(name)
            continue
        calls.append((name, args))
    return calls, uncovered
