"""Shared pieces of the asv suite: parameter axes, backends, seeded cached inputs, the models of
the training benchmarks, the subprocess probes (cold compile, warm start) and the PyTorch ratio.

It uses no relative imports: the probe subprocesses import it as a top-level module too.
"""
import functools
import inspect
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
RATIO_SETTLE = 0.1           # seconds of idling before each sample (see throughput_ratio)


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
    """One seeded (x, y) host batch for model ``name`` (writable copies: numba compiles
    read-only arrays as a type of their own, which a user's batches are not)."""
    shape, batch = MODELS[name]
    return np.array(normal((batch,) + shape, dtype, salt=7)), np.array(labels(batch, CLASSES, 7))


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


# -- kernel arguments, by parameter name -------------------------------------------------------
# Typical values of the scalar hyperparameters, by the kernels' parameter names.
SCALARS = {
    "lr": 1e-3, "momentum": 0.9, "weight_decay": 0.0, "nesterov": False, "eps": 1e-7,
    "alpha": 0.5, "beta": 0.5, "beta1": 0.9, "beta2": 0.999, "gamma": 2.0, "rho": 0.9,
    "centered": False, "amsgrad": False, "amsbound": False, "step": 10, "mu": 0.9,
    "mu_next": 0.9, "mu_product": 0.81, "final_lr": 0.1, "factor": 0.5, "a": 0.5, "l1": 0.01,
    "l2": 0.01, "rate": 0.5, "stddev": 0.1, "delta": 1.0, "smooth": 1.0, "margin": 1.0,
    "p": 2.0, "apply_class_balancing": False,
}


def kernel_params(fn):
    """Parameter names of a kernel (an @njit dispatcher or a CUDA launcher)."""
    return list(inspect.signature(getattr(fn, "py_func", fn)).parameters)


def kernel_module(fn):
    """The kernel module (``"losses"``, ...) a kernel is defined in."""
    return getattr(fn, "py_func", fn).__module__.rsplit(".", 1)[-1]


def flat_args(be, fn, n, dtype):
    """Arguments of a kernel over flat buffers (optimizers, elementwise, regularization): every
    array parameter a length-``n`` vector (``u`` uniform, state buffers zero), scalars typical."""
    names = kernel_params(fn)
    args = []
    for i, name in enumerate(names):
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
    """Arguments of a loss kernel for a batch of ``n`` samples of ``d`` values: targets and
    predictions of the kinds the loss takes (labels, one-hot rows, 0/1, +-1, probabilities,
    logits), unit sample weights, scalars typical, then the output(s)."""
    name = getattr(fn, "py_func", fn).__name__
    names = kernel_params(fn)
    binary = any(k in name for k in ("binary", "dice", "jaccard", "tversky"))
    categorical = "categorical" in name or "kl_divergence" in name
    if "hinge" in name:
        y_true = normal((n, d), dtype, 1) > 0
        y_true = (2.0 * y_true - 1.0).astype(dtype)
    elif binary:
        y_true = (uniform((n, d), dtype, salt=1) > 0.5).astype(dtype)
    elif categorical:
        y_true = onehot(n, d, dtype, 1)
    else:
        y_true = normal((n, d), dtype, 1)
    if "logits" in name:
        y_pred = normal((n, d), dtype, 2, 3.0)
    elif categorical:
        y_pred = probabilities((n, d), dtype, 2)
    elif binary or "msle" in name:
        y_pred = uniform((n, d), dtype, 0.01, 0.99, salt=2)
    else:
        y_pred = normal((n, d), dtype, 2)
    args = []
    for i, p in enumerate(names):
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
            raise KeyError(f"{name}: no benchmark input for parameter {p!r}")
    return tuple(args)


def _structured_calls(be, dt):
    """Tiny-input calls of the kernels whose arrays have structured shapes."""
    f = lambda *shape: on(be, normal(shape, dt, salt=len(shape)))     # noqa: E731
    pos = lambda *shape: on(be, uniform(shape, dt, 0.5, 1.5, len(shape)))  # noqa: E731
    e = lambda *shape: be.empty(shape, dt)                             # noqa: E731
    i64 = lambda values: on(be, np.asarray(values, dtype=np.int64))   # noqa: E731
    x3, g3, x2, g2 = f(2, 3, 4), f(2, 3, 4), f(3, 4), f(3, 4)
    # argmax of a 2x2/2 max pool of 4x4 planes: the top-left cell h*W + w of each window
    amax = on(be, np.tile(np.array([[0, 2], [8, 10]], dtype=np.int64), (2, 2, 1, 1)))
    return {
        "dense_forward": (f(2, 3), f(3, 4), f(4), e(2, 4)),
        "dense_backward_input": (f(2, 4), f(3, 4), e(2, 3)),
        "dense_backward_weight": (f(2, 3), f(2, 4), e(3, 4), e(4)),
        "conv2d_forward": (f(2, 2, 5, 5), f(3, 2, 3, 3), f(3), 1, 1, 1, 1, 1, 1, e(2, 3, 5, 5)),
        "conv2d_backward_input": (f(2, 3, 5, 5), f(3, 2, 3, 3), 1, 1, 1, 1, 1, 1, e(2, 2, 5, 5)),
        "conv2d_backward_weight": (f(2, 2, 5, 5), f(2, 3, 5, 5), 1, 1, 1, 1, 1, 1,
                                   e(3, 2, 3, 3)),
        "conv2d_backward_bias": (f(2, 3, 5, 5), e(3)),
        "max_pool2d_forward": (f(2, 2, 4, 4), 2, 2, 2, 2, 0, 0, e(2, 2, 2, 2),
                               be.empty((2, 2, 2, 2), np.int64)),
        "max_pool2d_backward": (f(2, 2, 2, 2), amax, e(2, 2, 4, 4)),
        "avg_pool2d_forward": (f(2, 2, 4, 4), 2, 2, 2, 2, 0, 0, e(2, 2, 2, 2)),
        "avg_pool2d_backward": (f(2, 2, 2, 2), 2, 2, 2, 2, 0, 0, e(2, 2, 4, 4)),
        "batchnorm_forward_train": (x3, f(3), f(3), 1e-5, e(2, 3, 4), e(3), e(3)),
        "batchnorm_forward_infer": (x3, f(3), f(3), f(3), pos(3), 1e-5, e(2, 3, 4)),
        "batchnorm_backward": (x3, g3, f(3), f(3), pos(3), e(2, 3, 4), e(3), e(3)),
        "batchnorm_backward_infer": (x3, g3, f(3), f(3), pos(3), 1e-5, e(2, 3, 4), e(3), e(3)),
        "batchnorm_update_running": (f(3), pos(3), f(3), pos(3), 1e-5, 0.99, 8),
        "layernorm_forward": (x2, f(4), f(4), 1e-5, e(3, 4), e(3), e(3)),
        "layernorm_backward": (x2, g2, f(4), f(3), pos(3), e(3, 4), e(4), e(4)),
        "spatial_dropout2d_forward": (f(2, 2, 4, 4), on(be, uniform((2, 2), dt)), 0.5,
                                      e(2, 2, 4, 4), e(2, 2)),
        "spatial_dropout2d_backward": (f(2, 2, 4, 4), pos(2, 2), e(2, 2, 4, 4)),
        "flip_forward": (f(2, 2, 4, 4), i64([1, 0]), i64([0, 1]), e(2, 2, 4, 4)),
        "flip_backward": (f(2, 2, 4, 4), i64([1, 0]), i64([0, 1]), e(2, 2, 4, 4)),
        "translate_forward": (f(2, 2, 4, 4), i64([1, -1]), i64([0, 2]), e(2, 2, 4, 4)),
        "translate_backward": (f(2, 2, 4, 4), i64([1, -1]), i64([0, 2]), e(2, 2, 4, 4)),
        "box_muller": (on(be, uniform((16,), dt)), e(8)),
    }


def kernel_calls(be, dtype="float32"):
    """``(calls, uncovered)``: ``calls`` lists (kernel name, arguments) of every kernel of ``be``
    on tiny inputs (structured shapes from a table, the rest from their parameter names);
    ``uncovered`` names the kernels no inputs could be made for."""
    dt = np.dtype(dtype)
    structured = _structured_calls(be, dt)
    calls, uncovered = [], []
    for name, fn in sorted(be.kernels.items()):
        module = kernel_module(fn)
        try:
            if name in structured:
                args = structured[name]
            elif module == "activations":
                shape = (2, 4) if name.startswith("softmax") else (8,)
                x = on(be, normal(shape, dt, 1))
                args = ((x, 0.1, be.empty(shape, dt)) if name.endswith("_forward") else
                        (x, x, on(be, normal(shape, dt, 2)), 0.1, be.empty(shape, dt)))
            elif module == "losses":
                args = loss_args(be, fn, 3, 4, dt)
            elif module in ("optim", "elementwise", "regularization", "augmentation"):
                args = flat_args(be, fn, 8, dt)
            else:
                raise KeyError(name)
            if len(args) != len(kernel_params(fn)):
                raise KeyError(name)
        except KeyError:
            uncovered.append(name)
            continue
        calls.append((name, args))
    return calls, uncovered


# Loss and optimizer kernels benchmarked per family (bench_losses, bench_optim).
LOSSES = ["mse", "mae", "huber", "binary_crossentropy", "binary_crossentropy_logits",
          "categorical_crossentropy", "categorical_crossentropy_logits",
          "sparse_categorical_crossentropy", "sparse_categorical_crossentropy_logits"]
OPTIMIZERS = ["sgd", "adagrad", "rmsprop", "adam", "adamw"]


# -- subprocess probes --------------------------------------------------------------------------
_COLD_COMPILE = r"""
import json, sys, time
t0 = time.perf_counter()
import numbanet.backend
t1 = time.perf_counter()
sys.path.insert(0, sys.argv[1])
import common
be = numbanet.backend.get_backend("cpu")
calls, uncovered = common.kernel_calls(be, "float32")
only = sys.argv[2].split(",") if sys.argv[2] else None
calls = [(n, a) for n, a in calls if only is None or n in only]
t2 = time.perf_counter()
for name, args in calls:
    be.kernels[name](*args)
t3 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "compile": t3 - t2, "kernels": len(calls),
                  "uncovered": uncovered}))
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


def cold_compile(only=(), cache_dir=None):
    """Compile every kernel (or those named in ``only``) once on tiny float32 inputs in a fresh
    process whose numba cache is ``cache_dir``, which must be empty (None: a temporary directory,
    removed afterwards); the probe's dict (``compile`` = seconds in the kernel calls)."""
    if cache_dir is None:
        with tempfile.TemporaryDirectory(prefix="numbanet-cold-") as cache:
            return cold_compile(only, cache)
    if os.path.isdir(cache_dir) and os.listdir(cache_dir):
        raise ValueError(f"cold_compile: the cache directory {cache_dir} is not empty")
    result = _probe(_COLD_COMPILE, cache_dir, ",".join(only))
    if result["uncovered"]:
        print(f"cold compile: no inputs for {', '.join(result['uncovered'])}", file=sys.stderr)
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
        for fn, n, times in ((ours, calls[0], t_ours), (theirs, calls[1], t_theirs)):
            # Let the other library's worker threads stop spinning first: OpenBLAS (numba's
            # np.dot) and OpenMP pools busy-wait for a while after each call, and on 2 cores
            # they would otherwise take the CPUs the next sample needs.
            time.sleep(RATIO_SETTLE)
            times.append(_seconds_per_call(fn, n))
    return statistics.median(t_theirs) / statistics.median(t_ours)
