"""``numbanet compare``: every CPU kernel beside its CUDA twin, for speed and agreement.

For each kernel (paired by name), the CPU time, the CUDA time (device synchronized, compile
excluded), the speedup, and the max relative error of each against the float64 CPU result on the
same inputs (the CPU kernels are themselves tested against float64 NumPy references). Without a
GPU, the CUDA kernels run in Numba's simulator on tiny shapes, in a subprocess, for agreement
only: simulator timings are never reported as GPU timings.
"""
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

from .backend import CPUBackend, get_backend
from .kernel_inputs import SIZES, kernel_calls, kernel_module


class _HostBackend(CPUBackend):
    """Builds host inputs; outputs start as zeros, so an output a kernel leaves alone compares
    equal across devices instead of comparing uninitialized memory."""

    def empty(self, shape, dtype):
        return np.zeros(shape, dtype=dtype)


def _host_calls(dtype, size, ops):
    host = _HostBackend()
    calls, _ = kernel_calls(host, dtype, size)
    if ops:
        calls = [(n, a) for n, a in calls
                 if kernel_module(host.kernels[n]) in ops or n in ops]
    return calls


def _materialize(be, args, dtype=None):
    """Fresh backend copies of host ``args`` (float arrays cast to ``dtype`` when given)."""
    out = []
    for a in args:
        if isinstance(a, np.ndarray):
            a = a.astype(dtype) if dtype is not None and a.dtype.kind == "f" else a.copy()
            out.append(be.asarray(a))
        else:
            out.append(a)
    return out


def _results(be, args):
    return [np.array(be.to_numpy(a), dtype=np.float64) for a in args
            if not isinstance(a, (int, float, bool, np.generic))]


def _max_rel_error(got, ref):
    err = 0.0
    for g, r in zip(got, ref):
        scale = max(float(np.max(np.abs(r))) if r.size else 0.0, 1e-30)
        diff = np.abs(g - r)
        if not np.all(np.isfinite(diff)):
            return float("inf")
        err = max(err, float(np.max(diff)) / scale if diff.size else 0.0)
    return err


def _time(be, fn, args, repeat, min_time=2e-3):
    """Median seconds per call over ``repeat`` samples, each at least ``min_time`` long."""
    fn(*args)                                           # compile / warm up
    be.synchronize()
    samples = []
    for _ in range(repeat):
        n, start = 0, time.perf_counter()
        while True:
            fn(*args)
            n += 1
            be.synchronize()
            elapsed = time.perf_counter() - start
            if elapsed >= min_time:
                break
        samples.append(elapsed / n)
    return statistics.median(samples)


def _run(be, name, host_args, dtype, repeat, reference):
    """Time ``name`` on ``be`` (when ``repeat``) and return (seconds or None, max rel error)."""
    fn = be.kernels[name]
    seconds = None
    if repeat:
        seconds = _time(be, fn, _materialize(be, host_args, dtype), repeat)
    args = _materialize(be, host_args, dtype)
    fn(*args)
    be.synchronize()
    return seconds, _max_rel_error(_results(be, args), reference)


def compare(ops=None, size="medium", repeat=5, dtype="float32", cuda="auto"):
    """Rows of ``{"op", "kernel", "cpu_s", "cuda_s", "speedup", "cpu_err", "cuda_err"}``.

    ``ops``: kernel modules (``"dense"``, ``"conv2d"``...) or kernel names; None for all.
    ``cuda``: "auto" (a real GPU when there is one), "simulator" (agreement only, no timings),
    or "off". Errors are max relative errors against the float64 CPU result.
    """
    if size not in SIZES:
        raise ValueError(f"compare: unknown size {size!r}; expected one of {', '.join(SIZES)}")
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise ValueError(f"compare: repeat must be a positive integer, got {repeat!r}")
    cpu = get_backend("cpu")
    ops = set(ops) if ops else None
    if ops:
        known = {kernel_module(f) for f in cpu.kernels.values()} | set(cpu.kernels)
        unknown = sorted(ops - known)
        if unknown:
            raise ValueError(f"compare: unknown op {', '.join(unknown)}; valid ops are "
                             f"{', '.join(sorted({kernel_module(f) for f in cpu.kernels.values()}))}")
    gpu = None
    if cuda in ("auto", "simulator"):
        from . import _cuda
        if _cuda.is_available() and (cuda == "simulator" or not _cuda.is_simulator()):
            gpu = get_backend("cuda")
    timed_gpu = gpu is not None and not _is_simulator()
    rows = []
    for name, host_args in _host_calls(dtype, size, ops):
        reference = _results(cpu, _run_ref(cpu, name, host_args))
        cpu_s, cpu_err = _run(cpu, name, host_args, dtype, repeat, reference)
        row = {"op": kernel_module(cpu.kernels[name]), "kernel": name, "cpu_s": cpu_s,
               "cuda_s": None, "speedup": None, "cpu_err": cpu_err, "cuda_err": None}
        if gpu is not None and name in gpu.kernels:
            row["cuda_s"], row["cuda_err"] = _run(gpu, name, host_args, dtype,
                                                  repeat if timed_gpu else 0, reference)
            if row["cuda_s"]:
                row["speedup"] = cpu_s / row["cuda_s"]
        rows.append(row)
    return sorted(rows, key=lambda r: (r["op"], r["kernel"]))


def _run_ref(cpu, name, host_args):
    args = _materialize(cpu, host_args, np.float64)
    cpu.kernels[name](*args)
    return args


def _is_simulator():
    from . import _cuda
    return _cuda.is_simulator()


def simulator_agreement(ops=None, dtype="float32"):
    """CUDA-vs-float64 errors from Numba's simulator on the small shapes, computed in a
    subprocess (the simulator must be switched on before numba is imported)."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", NUMBANET_ALLOW_CUDASIM="1")
    code = ("import json, sys; from numbanet.compare import compare; "
            "print(json.dumps(compare(ops=json.loads(sys.argv[1]), size='small', repeat=1, "
            "dtype=sys.argv[2], cuda='simulator')))")
    p = subprocess.run([sys.executable, "-c", code, json.dumps(sorted(ops) if ops else None),
                        dtype], capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise RuntimeError(f"the simulator run failed:\n{p.stderr[-3000:]}")
    return {r["kernel"]: r["cuda_err"] for r in json.loads(p.stdout.strip().splitlines()[-1])}


def _fmt_time(s):
    return "-" if s is None else f"{s * 1e3:.3f}"


def _fmt_err(e):
    return "-" if e is None else f"{e:.1e}"


# numbanet against PyTorch is timed by benchmarks/vs_torch.py, not here (torch is not a dependency).
TORCH_NOTE = ("Against PyTorch, layer by layer and per training step: python benchmarks/vs_torch.py "
              "(README, Benchmarks: the figures of a 2-core AVX-512 Xeon, with how they were "
              "measured).")


def format_table(rows, cuda_note=None):
    head = (f"{'op':14s} {'kernel':42s} {'cpu ms':>9s} {'cuda ms':>9s} {'speedup':>8s} "
            f"{'cpu err':>8s} {'cuda err':>8s}")
    lines = [head, "-" * len(head)]
    for r in rows:
        speedup = "-" if r["speedup"] is None else f"{r['speedup']:.1f}x"
        lines.append(f"{r['op']:14s} {r['kernel']:42s} {_fmt_time(r['cpu_s']):>9s} "
                     f"{_fmt_time(r['cuda_s']):>9s} {speedup:>8s} {_fmt_err(r['cpu_err']):>8s} "
                     f"{_fmt_err(r['cuda_err']):>8s}")
    if cuda_note:
        lines.append(cuda_note)
    return "\n".join(lines)


def main(args):
    """The ``numbanet compare`` command."""
    from . import _cuda
    if _cuda.cuda is None:
        print(f"numbanet compare: the CUDA side needs numba-cuda: {_cuda.unavailable_reason()}"
              + ("" if args.resources else " Timing the CPU kernels only."), file=sys.stderr,
              flush=True)
        if args.resources:
            return 2
    if args.resources:
        result = _cuda.kernel_resources()
        if "skip" in result:
            print(f"no resource report: {result['skip']}")
            return 1
        print(json.dumps(result) if args.json else _cuda.format_resources(result["rows"]))
        return 0
    ops = [o.strip() for o in args.ops.split(",") if o.strip()] if args.ops else None
    real_gpu = _cuda.is_available() and not _cuda.is_simulator()
    rows = compare(ops, args.size, args.repeat, args.dtype, cuda="auto" if real_gpu else "off")
    note = None
    if not real_gpu:
        note = (f"No GPU: {_cuda.unavailable_reason() or 'CUDA is not available'} CUDA errors "
                f"come from Numba's simulator on the small shapes (agreement only; simulator "
                f"timings are not GPU timings).")
        if _cuda.cuda is not None:
            errors = simulator_agreement(ops, args.dtype)
            for r in rows:
                r["cuda_err"] = errors.get(r["kernel"])
        else:
            note = f"No GPU: {_cuda.unavailable_reason()} CUDA columns are empty."
    if args.json:
        print(json.dumps({"rows": rows, "note": note, "size": args.size, "dtype": args.dtype}))
    else:
        print(format_table(rows, note))
        print(TORCH_NOTE)
    return 0
