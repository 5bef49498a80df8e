"""The CUDA backend, and the only module of ``numbanet`` that imports ``numba.cuda``.

* :func:`is_available` / :func:`unavailable_reason` / :func:`is_simulator`: can the GPU be used?
  Under Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) CUDA counts as unavailable, unless
  ``NUMBANET_ALLOW_CUDASIM=1`` asks to run the whole CUDA path in the simulator (tests do).
* :class:`CUDABackend`: numba device arrays and the launchers of ``numbanet.kernels.cuda``.
* :func:`caching_memory_manager`: a caching device allocator for numba (an EMM plugin), so the
  arrays a training step allocates and drops reuse device memory instead of calling cuMemAlloc
  and cuMemFree (which synchronizes the device) every step.
* :func:`compile_ptx` / :func:`kernel_resources`: compile every CUDA kernel to PTX (no GPU needed)
  and, with ``ptxas`` on the PATH, report registers, spills and shared memory per kernel
  (``python -m numbanet._cuda --resources`` prints them as JSON).
"""
import contextlib
import functools
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import weakref

import numpy as np

from .backend import KERNEL_MODULES, Backend

INSTALL_HINT = 'pip install "numbanet[cuda]"'

try:
    import importlib.util
    if importlib.util.find_spec("numba_cuda") is None:
        # numba's own (built-in, deprecated) numba.cuda may import, but numbanet's kernels need
        # the NVIDIA-maintained numba-cuda
        raise ImportError(f"numba-cuda is not installed; {INSTALL_HINT}")
    from numba import cuda
    _import_error = None
except Exception as e:      # numba-cuda missing, or its CUDA bindings
    cuda = None
    _import_error = e


def _one_line(e):
    return " ".join(str(e).split()).rstrip(": ")


def is_simulator():
    """True when numba.cuda is Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1)."""
    if cuda is None:
        return False
    try:
        from numba.cuda.core import config
    except ImportError:
        from numba import config
    return bool(config.ENABLE_CUDASIM)


def _simulator_allowed():
    return os.environ.get("NUMBANET_ALLOW_CUDASIM", "0") == "1"


def unavailable_reason():
    """Why CUDA cannot be used, as one sentence; None when it can."""
    if cuda is None:
        if isinstance(_import_error, ImportError) and "numba-cuda is not installed" in \
                str(_import_error):
            return f"numba-cuda is not installed ({INSTALL_HINT})."
        return (f"numba-cuda failed to import ({_one_line(_import_error)}); reinstall it with "
                f"{INSTALL_HINT}.")
    if is_simulator():
        if _simulator_allowed():
            return None
        return ("numba.cuda is Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1), not a GPU; "
                "set NUMBANET_ALLOW_CUDASIM=1 to run the CUDA backend in the simulator anyway.")
    try:
        from numba.cuda.cudadrv.driver import driver
        count = driver.get_device_count()
    except Exception as e:
        return f"the CUDA driver could not be initialized ({_one_line(e)})."
    if count == 0:
        return "the CUDA driver found no GPU."
    try:
        if not cuda.is_available():
            return "numba-cuda reports CUDA as unavailable (cuda.is_available() is False)."
    except Exception as e:
        return f"CUDA is not usable ({_one_line(e)})."
    return None


def is_available():
    """True when the CUDA backend can run (a GPU, or the simulator when explicitly allowed)."""
    return unavailable_reason() is None


# ---------------------------------------------------------------------------------------------
# caching device allocator

def _rounded(nbytes):
    """Block size for a request: 512-byte steps up to 1 MiB, then 1 MiB steps (so batches of
    slightly different sizes share blocks)."""
    step = 512 if nbytes <= (1 << 20) else (1 << 20)
    return max(step, -(-nbytes // step) * step)


@functools.lru_cache(maxsize=None)
def caching_memory_manager():
    """The EMM plugin class: device memory is taken from per-size free lists and returned to them
    when the last array using it dies (its MemoryPointer's finalizer), as PyTorch's caching
    allocator does. Work on the default stream runs in order, so a block handed out again is
    only touched by kernels queued after those that used it before. On out-of-memory the cached
    blocks are freed and the allocation retried."""
    from numba.cuda.cudadrv import driver as drv

    class CachingMemoryManager(drv.GetIpcHandleMixin, drv.HostOnlyCUDAMemoryManager):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._free = {}

        def initialize(self):
            if self.deallocations.memory_capacity == drv._SizeNotSet:
                self.deallocations.memory_capacity = self.get_memory_info().total

        def memalloc(self, size):
            nbytes = _rounded(size)
            stack = self._free.setdefault(nbytes, [])
            ptr = stack.pop() if stack else self._new_block(nbytes)
            return drv.MemoryPointer(weakref.proxy(self.context), ptr, size,
                                     finalizer=functools.partial(stack.append, ptr))

        def _new_block(self, nbytes):
            try:
                return drv.driver.cuMemAlloc(nbytes)
            except drv.CudaAPIError:
                self.release_cached()
                return drv.driver.cuMemAlloc(nbytes)

        def release_cached(self):
            """Free every cached block that no array uses (after the device is idle)."""
            drv.driver.cuCtxSynchronize()
            for stack in self._free.values():
                while stack:
                    drv.driver.cuMemFree(stack.pop())

        def get_memory_info(self):
            free, total = drv.driver.cuMemGetInfo()
            return drv.MemoryInfo(free=free, total=total)

        def reset(self):
            super().reset()
            self.release_cached()

        @property
        def interface_version(self):
            return drv._SUPPORTED_EMM_INTERFACE_VERSION

    return CachingMemoryManager


def _install_allocator():
    """Use the caching allocator for contexts numba creates from now on, unless the user chose a
    memory manager (NUMBA_CUDA_MEMORY_MANAGER) or set NUMBANET_CUDA_ALLOCATOR=numba."""
    choice = os.environ.get("NUMBANET_CUDA_ALLOCATOR", "caching")
    if choice not in ("caching", "numba"):
        raise ValueError(f"NUMBANET_CUDA_ALLOCATOR must be 'caching' or 'numba', got {choice!r}")
    if cuda is None or is_simulator() or choice == "numba":
        return
    try:
        from numba.cuda.core import config
    except ImportError:
        from numba import config
    if getattr(config, "CUDA_MEMORY_MANAGER", "default") == "default":
        cuda.set_memory_manager(caching_memory_manager())


_install_allocator()


def _kernels():
    """The numbanet.kernels.cuda package's shared helpers (imported on first use)."""
    from numbanet.kernels.cuda import _common
    return _common


def _is_device_array(a):
    return not isinstance(a, np.ndarray) and (hasattr(a, "copy_to_host")
                                              or hasattr(a, "__cuda_array_interface__"))


class CUDABackend(Backend):
    """Numba device arrays and ``@cuda.jit`` kernels (``numbanet.kernels.cuda``)."""

    name = "cuda"
    is_device = True

    def __init__(self):
        reason = unavailable_reason()
        if reason is not None:
            raise RuntimeError(f"CUDA backend unavailable: {reason}")
        super().__init__("cuda")
        self._common = _kernels()

    def empty(self, shape, dtype):
        return cuda.device_array(shape, dtype=np.dtype(dtype))

    def zeros(self, shape, dtype):
        return self.full(shape, 0, dtype)

    def full(self, shape, value, dtype):
        a = self.empty(shape, dtype)
        self._common.fill(a, value)
        return a

    def fill_(self, a, value):
        """Set every element of the device array ``a`` to ``value`` in place (one launch)."""
        self._common.fill(a, value)

    def asarray(self, a, dtype=None):
        """A host array (or a device array) -> a C-contiguous device array of ``dtype`` if given."""
        if _is_device_array(a):
            if not hasattr(a, "copy_to_host"):
                a = cuda.as_cuda_array(a)
            if (dtype is None or np.dtype(dtype) == a.dtype) and a.flags["C_CONTIGUOUS"]:
                return a
            a = a.copy_to_host()
        return cuda.to_device(np.ascontiguousarray(a, dtype=dtype))

    def kernel_view(self, a, shape):
        """``a`` seen with ``shape`` as a kernel argument (no numba view object is made)."""
        return self._common.View(a, shape)

    def to_numpy(self, a):
        if _is_device_array(a):
            if not hasattr(a, "copy_to_host"):
                a = cuda.as_cuda_array(a)
            return a.copy_to_host()
        return np.asarray(a)

    def copy_(self, dst, src):
        """Copy ``src`` (host or device array, same number of elements) into ``dst`` in place."""
        if _is_device_array(src):
            if not hasattr(src, "copy_to_host"):
                src = cuda.as_cuda_array(src)
            if src.dtype == dst.dtype and src.flags["C_CONTIGUOUS"]:
                dst.copy_to_device(src.reshape(dst.shape))
                return
            src = src.copy_to_host()
        dst.copy_to_device(np.ascontiguousarray(src, dtype=dst.dtype).reshape(dst.shape))

    def uniform(self, shape, dtype, rng):
        """Uniform [0, 1) numbers generated on the device (Philox4x32), seeded from ``rng``:
        the same generator state gives the same numbers."""
        out = self.empty(shape, dtype)
        self._common.uniform(out, int(rng.integers(0, 2**63 - 1)))
        return out

    def normal(self, shape, dtype, rng):
        """Standard normal numbers generated on the device, seeded from ``rng``."""
        out = self.empty(shape, dtype)
        self._common.normal(out, int(rng.integers(0, 2**63 - 1)))
        return out

    def synchronize(self):
        cuda.synchronize()


# ---------------------------------------------------------------------------------------------
# PTX and resource usage (no GPU needed)

_JIT_OPTIONS_FOR_PTX = ("fastmath", "lineinfo", "debug", "opt", "launch_bounds")


@contextlib.contextmanager
def _assume_device(cc):
    """Let device functions compile without a GPU: numba-cuda asks the current device for its
    compute capability when it first compiles a ``cuda.jit(device=True)`` function."""
    from numba.cuda import dispatcher

    class _Device:
        compute_capability = tuple(cc)

    original = dispatcher.get_current_device
    dispatcher.get_current_device = lambda: _Device
    try:
        yield
    finally:
        dispatcher.get_current_device = original


def nvvm_unavailable_reason():
    """Why PTX cannot be compiled here (None when NVVM is there and the simulator is off)."""
    if cuda is None:
        return f"numba-cuda is not installed ({_one_line(_import_error)})"
    if is_simulator():
        return "the CUDA simulator is active in this process (compile in a subprocess)"
    try:
        from numba.cuda.cudadrv import nvvm
        if not nvvm.is_available():
            return "libNVVM is not available"
    except Exception as e:
        return f"libNVVM is not available ({_one_line(e)})"
    return None


def kernel_variants(dtypes=("float32", "float64"), itypes=("int32", "int64")):
    """(Kernel, dtype, itype) for every CUDA kernel: per float dtype, and per label dtype for
    kernels taking integer labels."""
    for mod in KERNEL_MODULES:
        try:
            importlib.import_module(f"numbanet.kernels.cuda.{mod}")
        except ModuleNotFoundError as e:
            if e.name != f"numbanet.kernels.cuda.{mod}":
                raise
    for k in _kernels().KERNELS:
        for dt in dtypes:
            for it in (itypes if k.uses_labels else (None,)):
                yield k, np.dtype(dt), (np.dtype(it) if it else None)


def compile_ptx(dtypes=("float32", "float64"), cc=(9, 0), names=None, shard=(0, 1)):
    """Compile every CUDA kernel to PTX for compute capability ``cc``; list of dicts with
    kernel, dtype, itype and ptx (or error). Needs NVVM, not a GPU; not under the simulator.
    ``names``: only these kernels; ``shard=(i, n)``: only every n-th variant from the i-th."""
    reason = nvvm_unavailable_reason()
    if reason:
        raise RuntimeError(f"cannot compile PTX: {reason}")
    rows = []
    with _assume_device(cc):
        for v, (k, dt, it) in enumerate(kernel_variants(dtypes)):
            if (names and k.name not in names) or v % shard[1] != shard[0]:
                continue
            row = {"kernel": k.name, "dtype": dt.name, "itype": it.name if it else None}
            try:
                disp = k.dispatcher(dt)
                opts = {o: v for o, v in getattr(disp, "targetoptions", {}).items()
                        if o in _JIT_OPTIONS_FOR_PTX and v is not None}
                ptx, _ = cuda.compile_ptx(disp.py_func, k.argtypes(dt, it or np.int64),
                                          cc=tuple(cc), **opts)
                row["ptx"] = ptx
            except Exception as e:          # reported per kernel; the caller decides
                row["error"] = f"{type(e).__name__}: {_one_line(e)}"[:2000]
            rows.append(row)
    return rows


_PTXAS_USED = re.compile(r"Used (\d+) registers(?:, used (\d+) barriers)?")
# "Used R registers, used B barriers[, S bytes cumulative stack size], M bytes smem"
_PTXAS_SMEM = re.compile(r"Used \d+ registers[^\n]*?, (\d+) bytes smem")
_PTXAS_SPILL = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, "
                          r"(\d+) bytes spill loads")
_PTX_LD_SHARED_VEC = re.compile(r"\bld\.shared\.v[24]\.")
_PTXAS_VERSION = re.compile(r"Unsupported \.version ([\d.]+); current version is '([\d.]+)'")


def _ptxas(ptx, cc, ptxas):
    """Run ``ptxas -v`` on one kernel's PTX; (stats dict, error or None). Lowers the PTX
    ``.version`` line when this ptxas is older than the NVVM that wrote it."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.ptx")
        for _ in range(2):
            with open(path, "w") as f:
                f.write(ptx)
            p = subprocess.run([ptxas, f"-arch=sm_{cc[0]}{cc[1]}", "-v", path,
                                "-o", os.path.join(tmp, "k.cubin")],
                               capture_output=True, text=True)
            log = p.stdout + p.stderr
            m = _PTXAS_VERSION.search(log)
            if p.returncode != 0 and m:
                ptx = re.sub(r"^\.version [\d.]+", f".version {m.group(2)}", ptx, count=1,
                             flags=re.M)
                continue
            break
    if p.returncode != 0:
        return {}, _one_line(log)[:2000]
    stats = {}
    used, spill = _PTXAS_USED.search(log), _PTXAS_SPILL.search(log)
    if used:
        stats["registers"] = int(used.group(1))
        stats["barriers"] = int(used.group(2) or 0)
        smem = _PTXAS_SMEM.search(log)
        stats["shared_bytes"] = int(smem.group(1)) if smem else 0
    if spill:
        stats["stack_bytes"], stats["spill_stores"], stats["spill_loads"] = map(int, spill.groups())
    return stats, None


def resources_here(dtypes=("float32", "float64"), cc=(9, 0), ptxas=None, names=None,
                   shard=(0, 1)):
    """compile_ptx + ptxas in this process: one row per kernel variant (no PTX text)."""
    ptxas = ptxas or shutil.which("ptxas")
    rows = []
    for row in compile_ptx(dtypes, cc, names, shard):
        ptx = row.pop("ptx", None)
        if ptx is not None:
            row["ptx_lines"] = ptx.count("\n")
            row["shared_vector_loads"] = len(_PTX_LD_SHARED_VEC.findall(ptx))
            if ptxas:
                stats, err = _ptxas(ptx, cc, ptxas)
                row.update(stats)
                if err:
                    row["ptxas_error"] = err
        rows.append(row)
    return rows


def kernel_resources(dtypes=("float32", "float64"), cc=(9, 0), ptxas=None, names=None,
                     jobs=None, timeout=900):
    """Per-kernel PTX compilation results and ptxas resource usage, for every CUDA kernel.

    Runs ``jobs`` subprocesses (default: CPU count, at most 8) with the simulator off, so it
    works without a GPU whatever this process uses. Returns ``{"skip": reason}`` when NVVM is
    missing, else ``{"rows": [...], "ptxas": path or None}``; a row has kernel, dtype, itype, and
    either error, or ptx_lines, shared_vector_loads (ld.shared.v2/v4 in the PTX) plus (with
    ptxas) registers, barriers, shared_bytes, stack_bytes, spill_stores, spill_loads (or
    ptxas_error).
    """
    if cuda is None:
        return {"skip": unavailable_reason()}
    jobs = jobs or min(os.cpu_count() or 1, 8)
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    base = [sys.executable, "-m", "numbanet._cuda", "--resources", "--dtypes", ",".join(dtypes),
            "--cc", f"{cc[0]}{cc[1]}"]
    if ptxas:
        base += ["--ptxas", ptxas]
    if names:
        base += ["--names", ",".join(names)]
    procs = [subprocess.Popen(base + ["--shard", f"{i}/{jobs}"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for i in range(jobs)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError(f"PTX compilation subprocess failed:\n{err[-4000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    if any("skip" in r for r in results):
        return next(r for r in results if "skip" in r)
    order = {(k.name, dt.name, it.name if it else None): i
             for i, (k, dt, it) in enumerate(kernel_variants(dtypes))} if cuda else {}
    rows = sorted((row for r in results for row in r["rows"]),
                  key=lambda r: order.get((r["kernel"], r["dtype"], r["itype"]), len(order)))
    return {"rows": rows, "ptxas": results[0]["ptxas"]}


def format_resources(rows):
    """A text table of kernel_resources rows."""
    head = f"{'kernel':40s} {'dtype':8s} {'itype':6s} {'regs':>5s} {'spill st/ld':>12s} " \
           f"{'stack':>6s} {'smem':>6s} {'vec lds':>7s}"
    lines = [head, "-" * len(head)]
    for r in rows:
        if "error" in r or "ptxas_error" in r:
            lines.append(f"{r['kernel']:40s} {r['dtype']:8s} {r['itype'] or '':6s} "
                         f"ERROR {r.get('error') or r.get('ptxas_error')}")
            continue
        spill = f"{r.get('spill_stores', '?')}/{r.get('spill_loads', '?')}"
        lines.append(f"{r['kernel']:40s} {r['dtype']:8s} {r['itype'] or '':6s} "
                     f"{r.get('registers', '?'):>5} {spill:>12s} {r.get('stack_bytes', '?'):>6} "
                     f"{r.get('shared_bytes', '?'):>6} {r.get('shared_vector_loads', '?'):>7}")
    return "\n".join(lines)


def _main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(prog="python -m numbanet._cuda",
                                 description="Compile every numbanet CUDA kernel to PTX and "
                                             "report ptxas resource usage.")
    ap.add_argument("--resources", action="store_true", help="print JSON (else a table)")
    ap.add_argument("--dtypes", default="float32,float64")
    ap.add_argument("--cc", default="90", help="compute capability, e.g. 90")
    ap.add_argument("--ptxas", default=None)
    ap.add_argument("--names", default=None, help="comma-separated kernel names (default: all)")
    ap.add_argument("--shard", default="0/1", help="i/n: compile every n-th kernel from the i-th")
    args = ap.parse_args(argv)
    shard = tuple(int(v) for v in args.shard.split("/"))
    cc = (int(args.cc[:-1]), int(args.cc[-1]))
    names = set(args.names.split(",")) if args.names else None
    reason = nvvm_unavailable_reason()
    if reason:
        result = {"skip": reason}
    else:
        ptxas = args.ptxas or shutil.which("ptxas")
        result = {"rows": resources_here(tuple(args.dtypes.split(",")), cc, ptxas, names, shard),
                  "ptxas": ptxas}
    if args.resources:
        print(json.dumps(result))
    elif "skip" in result:
        print(f"skipped: {result['skip']}")
    else:
        print(format_resources(result["rows"]))


if __name__ == "__main__":
    _main()
