"""Shared pieces of the asv suite: parameter axes, backends, seeded cached inputs, the models of
the training benchmarks, the subprocess probes (cold compile, warm start) and the PyTorch ratio.

It uses no relative imports: the probe subprocesses import it as a top-level module too.
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


# -- seeded, cached inputs: numbanet.kernel_inputs makes them (also behind `numbanet compare`) ---
try:
    from numbanet import kernel_inputs
    from numbanet.kernel_inputs import SEED, labels, normal, on, uniform  # noqa: F401
except ImportError:     # the commits before it, which `asv run <range>` may build: the benchmarks
    kernel_inputs = None        # that need its inputs are skipped there
    SEED = 20240601

    def normal(*args, **kwargs):
        return _kernel_inputs()
    labels = on = uniform = normal


def _kernel_inputs():
    """numbanet.kernel_inputs; NotImplementedError (asv: skipped) for the commits before it."""
    if kernel_inputs is None:
        raise NotImplementedError("this numbanet has no numbanet.kernel_inputs")
    return kernel_inputs


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


def prepare_fused_relu(bench, base, params, kernel):
    """``prepare`` for a fused-activation benchmark: the inputs of benchmark class ``base`` at
    ``params`` (``bench.base``), the relu code (``bench.relu``) and a pre-activation buffer
    (``bench.pre``) for ``kernel``; warmed up through ``bench.time_forward_relu``."""
    def build():
        b = base()
        b.setup(*params)
        require(b.be, kernel)
        from numbanet.kernels.scalar import ACTIVATION_CODES
        s = dict(base=b, relu=ACTIVATION_CODES.index("relu"), pre=b.be.empty(b.out.shape,
                                                                            params[-1]))
        vars(bench).update(s)
        bench.time_forward_relu()
        return s
    prepare(bench, params, build)


# -- models of the training benchmarks ----------------------------------------------------------
MODELS = {
    # name: (input shape, batch size)
    "mlp": ((64,), 32),
    "lenet": ((1, 28, 28), 128),
    "resblock": ((1, 28, 28), 128),
}
CLASSES = 10


def resblock_model(nb, dtype="float32"):
    """A functional residual-block network: Conv2D(32, 3, same, relu) -> MaxPool2D(2) ->
    [Conv2D(32, 3, same, relu) -> Conv2D(32, 3, same)] + skip -> ReLU ->
    GlobalAveragePooling2D -> Dense(10, softmax), on (1, 28, 28)."""
    L = nb.layers
    inp = nb.Input(MODELS["resblock"][0], dtype=dtype)
    x = L.MaxPool2D(2)(L.Conv2D(32, 3, padding="same", activation="relu")(inp))
    y = L.Conv2D(32, 3, padding="same", activation="relu")(x)
    y = L.Conv2D(32, 3, padding="same")(y)
    x = L.ReLU()(L.Add()([x, y]))
    out = L.Dense(CLASSES, activation="softmax")(L.GlobalAveragePooling2D()(x))
    return nb.Model(inp, out)


def torch_resblock(torch):
    """The PyTorch twin of ``resblock_model`` (logits out)."""
    nn = torch.nn

    class ResBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(1, 32, 3, padding=1)
            self.conv1 = nn.Conv2d(32, 32, 3, padding=1)
            self.conv2 = nn.Conv2d(32, 32, 3, padding=1)
            self.head = nn.Linear(32, CLASSES)

        def forward(self, x):
            x = torch.max_pool2d(torch.relu(self.stem(x)), 2)
            y = self.conv2(torch.relu(self.conv1(x)))
            return self.head(torch.relu(x + y).mean(dim=(2, 3)))
    return ResBlock()


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
    elif name != "resblock":
        raise ValueError(f"unknown benchmark model {name!r}")
    if name == "resblock":
        if not hasattr(nb, "Model"):
            raise NotImplementedError("this numbanet has no functional models")
        model = resblock_model(nb, dtype).to(device)
    else:
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
    if name == "resblock":
        return torch_resblock(torch)
    return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(),
                         nn.Linear(128, CLASSES))


# -- kernel arguments: numbanet.kernel_inputs builds them (also behind `numbanet compare`) ------
def flat_args(be, fn, n, dtype):
    return _kernel_inputs().flat_args(be, fn, n, dtype)


def loss_args(be, fn, n, d, dtype):
    return _kernel_inputs().loss_args(be, fn, n, d, dtype)


def kernel_module(fn):
    """The kernel module (``"conv2d"``, ...) a kernel is defined in."""
    return getattr(fn, "py_func", fn).__module__.rsplit(".", 1)[-1]


def cpu_kernel_modules():
    """The names of numbanet's CPU kernel modules (none if numbanet is not importable here)."""
    try:
        from numbanet.backend import KERNEL_MODULES
    except ImportError:
        return ()
    return tuple(KERNEL_MODULES)


def kernel_calls(be, dtype="float32"):
    """(calls, uncovered): every kernel of ``be`` on tiny inputs (see numbanet.kernel_inputs)."""
    return _kernel_inputs().kernel_calls(be, dtype, "small")


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
per_kernel, modules = {}, {}
t2 = time.perf_counter()
for name, args in calls:
    t = time.perf_counter()
    be.kernels[name](*args)
    per_kernel[name] = time.perf_counter() - t
    module = common.kernel_module(be.kernels[name])
    modules[module] = modules.get(module, 0.0) + per_kernel[name]
t3 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "compile": t3 - t2, "kernels": len(calls),
                  "uncovered": uncovered, "per_kernel": per_kernel, "modules": modules}))
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
    removed afterwards); the probe's dict: ``compile`` = seconds in the kernel calls,
    ``per_kernel`` = seconds in each kernel's first call, ``modules`` = their sums per kernel
    module (the kernels run in ``kernel_calls``'s order; a compiled function that several kernels
    share is charged to the first of them)."""
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
