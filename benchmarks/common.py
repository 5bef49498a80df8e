"""Shared pieces of the asv suite: parameter axes, backends, seeded cached inputs, the models of
the training benchmarks, the subprocess probes (cold compile, warm start) and the PyTorch ratio.

This file imports only the standard library and NumPy at the top (numbanet lazily), uses no
relative imports, and is imported as a top-level module by the probe subprocesses too.
"""
import functools
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

BACKENDS = ["cpu", "cuda"]
SHAPES = ["small", "medium", "large"]
DTYPES = ["float32", "float64"]
SEED = 20240601
BENCH_DIR = os.path.dirname(os.path.abspath(__file__))

# Alternating numbanet/torch samples per ratio track and the least time a sample lasts.
RATIO_REPEATS = 7
RATIO_MIN_TIME = 0.05


# asv imports the suite once in its fork server and forks a process per benchmark: importing
# numbanet, numba.cuda (no driver call: that stays in the children) and the CPU kernel modules
# here saves every benchmark process ~2 s. The probe subprocesses skip it (PROBE_ENV is set).
PROBE_ENV = "NUMBANET_BENCH_PROBE"
if not os.environ.get(PROBE_ENV):
    try:
        import numbanet.backend
        numbanet.backend.get_backend("cpu")
        import numbanet._cuda                                   # noqa: F401
    except Exception:               # reported where it matters: in the benchmarks' setup
        pass


# -- backends -------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _real_gpu():
    """Why CUDA cannot be benchmarked here (None when a real GPU is usable)."""
    from numbanet.backend import cuda_available
    if not cuda_available():
        return "CUDA is not available here"
    from numbanet import _cuda
    if _cuda.is_simulator():
        return "numba.cuda is the CUDA simulator, not a GPU"
    return None


def backend(name):
    """The numbanet backend ``name``; NotImplementedError (asv: skipped) when there is no real
    GPU for ``"cuda"`` -- the simulator's timings are not GPU timings."""
    from numbanet.backend import get_backend
    if name == "cuda":
        reason = _real_gpu()
        if reason:
            raise NotImplementedError(reason)
    return get_backend(name)


def require(be, *names):
    """Fail clearly when the CPU lacks a kernel; skip when a CUDA module is not written yet."""
    missing = [n for n in names if n not in be.kernels]
    if missing and be.name == "cpu":
        raise AttributeError(f"the cpu backend has no kernel {', '.join(missing)}")
    if missing:
        raise NotImplementedError(f"the {be.name} backend has no kernel {', '.join(missing)}")


# -- seeded, cached inputs ------------------------------------------------------------------------
def _rng(salt, shape):
    return np.random.default_rng([SEED, salt, *shape])


def _frozen(a):
    a.flags.writeable = False
    return a


@functools.lru_cache(maxsize=None)
def normal(shape, dtype, salt=0, scale=1.0):
    """Standard normal numbers (times ``scale``); cached, read-only (use ``on`` to get a copy)."""
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


# -- per-process state --------------------------------------------------------------------------
_states = {}


def prepare(bench, params, build):
    """Run ``build()`` once per (benchmark class, parameters) in this process and copy the
    attributes it returns onto ``bench``.

    asv re-runs ``setup`` before every timed sample; with this the inputs are made, and the kernels
    compiled (or loaded from numba's cache) by the warm-up calls ``build`` makes, only once, so
    neither lands in a timing.
    """
    key = (type(bench).__module__, type(bench).__qualname__, tuple(params))
    if key not in _states:
        _states[key] = build()
    bench.__dict__.update(_states[key])


# -- models of the training benchmarks ----------------------------------------------------------
MODELS = {
    # name: (input shape, batch size)
    "mlp": ((64,), 32),
    "lenet": ((1, 28, 28), 128),
}
CLASSES = 10


def build_model(name, device="cpu", dtype="float32"):
    """The benchmark's compiled numbanet model (seeded initialisation)."""
    import numbanet as nb
    L = nb.layers
    nb.seed(SEED)
    if name == "mlp":
        layers = [L.Dense(128, activation="relu"), L.Dense(CLASSES, activation="softmax")]
    elif name == "lenet":
        layers = [L.Conv2D(32, 3, padding="same", activation="relu"), L.MaxPool2D(2),
                  L.Conv2D(64, 3, padding="same", activation="relu"), L.MaxPool2D(2),
                  L.Flatten(), L.Dense(128, activation="relu"),
                  L.Dense(CLASSES, activation="softmax")]
    else:
        raise ValueError(f"unknown benchmark model {name!r}")
    model = nb.Sequential(layers, input_shape=MODELS[name][0], device=device, dtype=dtype)
    model.compile(optimizer=nb.optimizers.Adam(learning_rate=1e-3),
                  loss="sparse_categorical_crossentropy")
    return model


def model_batch(name, dtype="float32"):
    """One seeded (x, y) host batch for model ``name``."""
    shape, batch = MODELS[name]
    return normal((batch,) + shape, dtype, salt=7), labels(batch, CLASSES, salt=7)


def torch_model(torch, name):
    """The PyTorch twin of ``build_model(name)``: logits out, trained with CrossEntropyLoss (what
    numbanet does too: softmax + crossentropy are fused into one logits kernel)."""
    nn = torch.nn
    torch.manual_seed(SEED)
    if name == "mlp":
        return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, CLASSES))
    return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(),
                         nn.Linear(128, CLASSES))


# -- every kernel once on tiny inputs -----------------------------------------------------------
_ACTIVATIONS = ("linear", "relu", "leaky_relu", "elu", "gelu", "gelu_tanh", "sigmoid", "tanh",
                "softplus", "softmax")


def kernel_calls(be, dtype="float32"):
    """``(calls, missing, uncovered)``: ``calls`` is a list of (kernel name, arguments) for every
    kernel of the contract (spec/KERNELS.md) that ``be`` has, on tiny inputs; ``missing`` the
    contract kernels ``be`` lacks; ``uncovered`` the kernels of ``be`` this list does not know."""
    dt = np.dtype(dtype)
    f = lambda *shape: on(be, normal(shape, dt, salt=len(shape)))     # noqa: E731
    e = lambda *shape: be.empty(shape, dt)                             # noqa: E731
    lab = on(be, labels(3, 4))
    yp, ybin = on(be, probabilities((3, 4), dt)), on(be, uniform((3, 4), dt, 0.2, 0.8))
    yhot = on(be, onehot(3, 4, dt))
    c = [
        ("dense_forward", (f(2, 3), f(3, 4), f(4), e(2, 4))),
        ("dense_backward_input", (f(2, 4), f(3, 4), e(2, 3))),
        ("dense_backward_weight", (f(2, 3), f(2, 4), e(3, 4), e(4))),
        ("conv2d_forward", (f(2, 2, 5, 5), f(3, 2, 3, 3), f(3), 1, 1, 1, 1, 1, 1, e(2, 3, 5, 5))),
        ("conv2d_backward_input", (f(2, 3, 5, 5), f(3, 2, 3, 3), 1, 1, 1, 1, 1, 1,
                                   e(2, 2, 5, 5))),
        ("conv2d_backward_weight", (f(2, 2, 5, 5), f(2, 3, 5, 5), 1, 1, 1, 1, 1, 1,
                                    e(3, 2, 3, 3))),
        ("conv2d_backward_bias", (f(2, 3, 5, 5), e(3))),
        ("max_pool2d_forward", (f(2, 2, 4, 4), 2, 2, 2, 2, 0, 0, e(2, 2, 2, 2),
                                be.empty((2, 2, 2, 2), np.int64))),
        ("avg_pool2d_forward", (f(2, 2, 4, 4), 2, 2, 2, 2, 0, 0, e(2, 2, 2, 2))),
        ("avg_pool2d_backward", (f(2, 2, 2, 2), 2, 2, 2, 2, 0, 0, e(2, 2, 4, 4))),
    ]
    # argmax for the backward: the flat index h*W + w of each 2x2 window's top-left cell
    amax = on(be, np.tile(np.array([[0, 2], [8, 10]], dtype=np.int64), (2, 2, 1, 1)))
    c.append(("max_pool2d_backward", (f(2, 2, 2, 2), amax, e(2, 2, 4, 4))))
    for name in _ACTIVATIONS:
        shape = (2, 4) if name == "softmax" else (8,)
        c.append((f"{name}_forward", (f(*shape), 0.1, e(*shape))))
        c.append((f"{name}_backward", (f(*shape), f(*shape), f(*shape), 0.1, e(*shape))))
    for name, (target, pred, extra) in LOSS_INPUTS.items():
        t = {"real": f(3, 4), "binary": ybin, "onehot": yhot, "labels": lab}[target]
        p = {"real": f(3, 4), "prob": yp, "logits": f(3, 4)}[pred]
        c.append((f"{name}_forward", (t, p) + extra + (e(1),)))
        c.append((f"{name}_backward", (t, p) + extra + (e(3, 4),)))
    for name in OPTIMIZERS:
        c.append((f"{name}_update", optimizer_args(be, name, f(8), f(8))))
    c += [
        ("dropout_forward", (f(8), on(be, uniform((8,), dt)), 0.5, e(8), e(8))),
        ("dropout_backward", (f(8), f(8), e(8))),
        ("sum_squares", (f(8), e(1))),
        ("scale", (f(8), 0.5, e(8))),
    ]
    pos = lambda *shape: on(be, uniform(shape, dt, 0.5, 1.5, salt=len(shape)))    # noqa: E731
    x3, g3, x2, g2 = f(2, 3, 4), f(2, 3, 4), f(3, 4), f(3, 4)
    c += [
        ("batchnorm_forward_train", (x3, f(3), f(3), 1e-5, e(2, 3, 4), e(3), e(3))),
        ("batchnorm_forward_infer", (x3, f(3), f(3), f(3), pos(3), 1e-5, e(2, 3, 4))),
        ("batchnorm_backward", (x3, g3, f(3), f(3), pos(3), e(2, 3, 4), e(3), e(3))),
        ("batchnorm_backward_infer", (x3, g3, f(3), f(3), pos(3), 1e-5, e(2, 3, 4), e(3),
                                      e(3))),
        ("batchnorm_update_running", (f(3), pos(3), f(3), pos(3), 1e-5, 0.99, 8)),
        ("layernorm_forward", (x2, f(4), f(4), 1e-5, e(3, 4), e(3), e(3))),
        ("layernorm_backward", (x2, g2, f(4), f(3), pos(3), e(3, 4), e(4), e(4))),
    ]
    known = {name for name, _ in c}
    calls = [(name, args) for name, args in c if name in be.kernels]
    missing = sorted(known - set(be.kernels))
    uncovered = sorted(set(be.kernels) - known)
    return calls, missing, uncovered


# Loss name -> (target kind, prediction kind, hyperparameters before the output).
LOSS_INPUTS = {
    "mse": ("real", "real", ()),
    "mae": ("real", "real", ()),
    "huber": ("real", "real", (1.0,)),
    "binary_crossentropy": ("binary", "prob", (1e-7,)),
    "binary_crossentropy_logits": ("binary", "logits", ()),
    "categorical_crossentropy": ("onehot", "prob", (1e-7,)),
    "categorical_crossentropy_logits": ("onehot", "logits", ()),
    "sparse_categorical_crossentropy": ("labels", "prob", (1e-7,)),
    "sparse_categorical_crossentropy_logits": ("labels", "logits", ()),
}

OPTIMIZERS = ["sgd", "adagrad", "rmsprop", "adam", "adamw"]


def optimizer_args(be, name, param, grad):
    """Arguments of ``<name>_update`` for the backend vectors ``param`` and ``grad`` (state zeroed).
    Typical settings: SGD with momentum 0.9, plain RMSprop, Adam/AdamW at step 10."""
    z = lambda: be.zeros(param.shape, param.dtype)      # noqa: E731
    if name == "sgd":
        return (param, grad, z(), 1e-3, 0.9, 0.0, False)
    if name == "adagrad":
        return (param, grad, z(), 1e-3, 1e-7, 0.0)
    if name == "rmsprop":
        return (param, grad, z(), z(), z(), 1e-3, 0.9, 1e-7, 0.0, 0.0, False)
    if name in ("adam", "adamw"):
        return (param, grad, z(), z(), z(), 1e-3, 0.9, 0.999, 1e-7, 0.01, False, 10)
    raise ValueError(f"unknown optimizer {name!r}")


# -- subprocess probes --------------------------------------------------------------------------
_COLD_COMPILE = r"""
import json, sys, time
t0 = time.perf_counter()
import numbanet.backend
t1 = time.perf_counter()
sys.path.insert(0, sys.argv[1])
import common
be = numbanet.backend.get_backend("cpu")
calls, missing, uncovered = common.kernel_calls(be, "float32")
only = sys.argv[2].split(",") if sys.argv[2] else None
calls = [(n, a) for n, a in calls if only is None or n in only]
t2 = time.perf_counter()
for name, args in calls:
    be.kernels[name](*args)
t3 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "compile": t3 - t2, "kernels": len(calls),
                  "missing": missing, "uncovered": uncovered}))
"""

_WARM_START = r"""
import json, sys, time
t0 = time.perf_counter()
import numbanet
sys.path.insert(0, sys.argv[1])
import common
model = common.build_model(sys.argv[2], "cpu", "float32")
x, y = common.model_batch(sys.argv[2], "float32")
model.train_step(x, y)
print(json.dumps({"seconds": time.perf_counter() - t0}))
"""


def _probe(code, cache_dir, *args, timeout=1800):
    """Run ``code`` in a fresh interpreter with numba's cache in ``cache_dir`` (None: numba's
    default, the kernels' ``__pycache__``); the JSON line it prints last."""
    env = dict(os.environ, **{PROBE_ENV: "1"})
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = cache_dir
    proc = subprocess.run([sys.executable, "-c", code, BENCH_DIR, *args], env=env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark probe failed (exit {proc.returncode}):\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cold_compile(only=()):
    """Compile every kernel (or those named in ``only``) once on tiny float32 inputs in a fresh
    process with an empty numba cache; the probe's dict (``compile`` = seconds in the calls)."""
    with tempfile.TemporaryDirectory(prefix="numbanet-cold-") as cache:
        result = _probe(_COLD_COMPILE, cache, ",".join(only))
    for key in ("missing", "uncovered"):
        if result[key]:
            print(f"cold compile: {key} kernels: {', '.join(result[key])}", file=sys.stderr)
    return result


def warm_start(model, cache_dir):
    """Seconds from ``import numbanet`` to the end of the first ``train_step`` of ``model`` in a
    fresh process whose numba cache is ``cache_dir`` (None: numba's default location)."""
    return _probe(_WARM_START, cache_dir, model)["seconds"]


# -- PyTorch ---------------------------------------------------------------------------------
def import_torch():
    """torch, using as many threads as numba; NotImplementedError (asv: skipped) without it."""
    try:
        import torch
    except ImportError:
        raise NotImplementedError("torch is not installed") from None
    import numba
    torch.set_num_threads(numba.get_num_threads())
    return torch


def _seconds_per_call(fn, calls):
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls


def throughput_ratio(ours, theirs, repeats=None, min_time=None):
    """numbanet throughput / PyTorch throughput (> 1: numbanet is faster).

    The two functions are timed alternately in this process, ``repeats`` samples each, every
    sample lasting at least ``min_time`` seconds; the ratio is of the median times per call.
    """
    repeats = RATIO_REPEATS if repeats is None else repeats
    min_time = RATIO_MIN_TIME if min_time is None else min_time
    calls = []
    for fn in (ours, theirs):
        fn()                                             # compile / warm up
        once = _seconds_per_call(fn, 1)
        calls.append(max(1, math.ceil(min_time / max(once, 1e-9))))
    t_ours, t_theirs = [], []
    for _ in range(repeats):
        t_ours.append(_seconds_per_call(ours, calls[0]))
        t_theirs.append(_seconds_per_call(theirs, calls[1]))
    return statistics.median(t_theirs) / statistics.median(t_ours)
