"""A second process that compiles a model's kernels while the first training step compiles them.

On a machine that has not run numbanet before, the first step of ``fit`` waits for Numba to
compile every kernel the model uses, one after the other, on one core. When that starts (the
first kernel missing from Numba's on-disk cache), ``fit`` starts this helper on another core:
``run(DIR)`` in a new Python process, where DIR holds the model's architecture, its compile
arguments and the first batch. The helper rebuilds the model and runs its layers' forward and
backward passes one layer at a time, from the convolutions (the kernels that take longest to
compile) and the far end of the model towards its first layer (which the training process
compiles first), then one training step and one evaluation as ``fit`` runs them. Everything it
compiles goes to the on-disk cache; the training process loads it from there instead of compiling
it. Both sides compile under the per-function file lock of ``kernels/cpu/_jit.py``, so neither
compiles what the other is compiling, and the cache stays consistent.

Only the first cold start of a process uses it (``NUMBANET_COMPILE_HELPER=0`` turns it off),
only on the CPU, for models that have a config (Sequential and functional) of at most
MAX_PARAMS weights and batches of at most MAX_BATCH_BYTES, with more than one core. The
helper's failures are its own: the training process compiles whatever the helper did not,
exactly as without it. It is stopped when the training process exits.
"""
import atexit
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

ENV = "NUMBANET_COMPILE_HELPER"
_started = []                       # the helper process, once started in this process
_COMMAND = "import sys; from numbanet._compile_helper import run; run(sys.argv[1])"


# Beyond these the helper's copy of the model or of the batch would cost more memory or time
# than the compile it saves (small models are the ones whose first run is mostly compiling).
MAX_PARAMS = 20_000_000
MAX_BATCH_BYTES = 64 << 20


def wanted(model, distributed):
    """Whether ``fit``'s first step should start a helper when it finds the cache cold."""
    return (not _started and os.environ.get(ENV, "1") != "0" and not distributed
            and not model.backend.is_device and model._plan is not None
            and (os.cpu_count() or 1) > 1 and bool(sys.executable)
            and model.count_params() <= MAX_PARAMS)


def watch(model, xs, part, ys, distributed=False):
    """Context manager around ``fit``'s first step: starts the helper for the batch (samples
    ``part`` of the host arrays ``xs``; targets ``ys``) if a kernel has to be compiled."""
    if not wanted(model, distributed):
        return contextlib.nullcontext()
    return model.backend.first_compile(lambda: start(model, [a[part] for a in xs], ys))


def start(model, xs, ys):
    """Write the model's description and the batch to a temporary directory and start the
    helper on it; returns the process, or None when the model cannot be described."""
    if any(a is None for a in ys) or sum(np.asarray(a).nbytes for a in xs + ys) > MAX_BATCH_BYTES:
        return None
    try:
        spec = {"model": model.get_config(), "compile": model._compile_config()}
        text = json.dumps(spec)
    except (TypeError, ValueError, NotImplementedError):
        return None                 # something only this process can rebuild
    folder = tempfile.mkdtemp(prefix="numbanet-compile-")
    try:
        with open(os.path.join(folder, "model.json"), "w") as f:
            f.write(text)
        arrays = {f"x{i}": np.asarray(a) for i, a in enumerate(xs)}
        arrays.update({f"y{i}": np.asarray(a) for i, a in enumerate(ys) if a is not None})
        np.savez(os.path.join(folder, "batch.npz"), **arrays)
        env = dict(os.environ, **{ENV: "0"})
        proc = subprocess.Popen([sys.executable, "-c", _COMMAND, folder],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=env)
    except OSError:
        shutil.rmtree(folder, ignore_errors=True)
        return None
    _started.append(proc)
    atexit.register(_stop, proc, folder)
    return proc


def _stop(proc, folder):
    if proc.poll() is None:
        proc.terminate()            # what it already saved stays in the cache
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
    shutil.rmtree(folder, ignore_errors=True)


def _layer_order(model):
    """The layers whose kernels the helper compiles first: convolutions, then the others, each
    from the last layer backwards; the first layer (the training process starts there) last."""
    layers = [l for l in model.layers if type(l).__name__ != "InputLayer"]
    rest = layers[1:][::-1]
    heavy = [l for l in rest if hasattr(l, "kernel_size")]
    return heavy + [l for l in rest if l not in heavy] + layers[:1]


def _warm_layer(layer, batch, rng):
    """One forward (training mode) and backward pass of ``layer`` on random inputs."""
    if layer.multi_input or layer.input_kind != "float" or \
            any(d is None for d in layer.input_shape):
        return
    x = rng.standard_normal((batch,) + tuple(layer.input_shape)).astype(layer.dtype)
    out = layer.forward(x, training=True)
    if isinstance(out, np.ndarray):
        layer.backward(np.ones_like(out))


def run(folder):
    """The helper's work (see the module docstring)."""
    from . import models
    with open(os.path.join(folder, "model.json")) as f:
        spec = json.load(f)
    with np.load(os.path.join(folder, "batch.npz")) as data:
        xs = [data[f"x{i}"] for i in range(sum(k.startswith("x") for k in data.files))]
        ys = [data[f"y{i}"] for i in range(sum(k.startswith("y") for k in data.files))]
    model = models.model_from_config(spec["model"])
    models.compile_from_config(model, spec["compile"])
    rng = np.random.default_rng(0)
    for layer in _layer_order(model):
        try:
            _warm_layer(layer, len(xs[0]), rng)
        except Exception:           # noqa: BLE001  (the training process compiles it instead)
            pass
    x = xs[0] if len(xs) == 1 else xs
    y = ys[0] if len(ys) == 1 else ys
    model.fit(x, y, epochs=1, batch_size=len(xs[0]), shuffle=False, verbose=0)
    model.evaluate(x, y, batch_size=len(xs[0]))
