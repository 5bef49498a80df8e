"""Parallel CPU kernels that cost little to compile when they run serially.

``split_parallel``: a kernel written as a ``prange`` loop, compiled serially for small inputs and
with ``parallel=True`` only at its first large call.

``run``: helper threads for kernels that split a call without ``parallel=True``.

A parallel call splits its units of work into one contiguous range per thread and runs the
ranges on the calling thread and on a pool of waiting (never spinning) Python threads; the
compiled workers are ``nogil``. The units depend on the shapes only, so the bits of a result do
not depend on the thread count. One compiled worker serves the serial and the parallel call
(a ``prange`` loop would compile a second, parfor-lowered copy, several times as costly to
compile as the loop itself), and no spinning thread pool contends with BLAS or other processes.
"""
import inspect
import os
import sys
import threading
import types
import warnings

import numba
from numba.core.cpu_options import ParallelOptions


class _Helper:
    """A thread that waits, blocked on a lock (never spinning), for one job at a time: set
    ``job`` to (worker, args), release ``go``; ``done`` is released when it has run, with
    ``job`` then None or the exception it raised (a handoff through two locks takes about half
    the time of a concurrent.futures submit and result)."""

    def __init__(self, name):
        self.job = None
        self.go, self.done = threading.Lock(), threading.Lock()
        self.go.acquire()
        self.done.acquire()
        threading.Thread(target=self._loop, name=name, daemon=True).start()

    def _loop(self):
        while True:
            self.go.acquire()
            worker, args = self.job
            try:
                worker(*args)
                self.job = None
            except BaseException as e:      # re-raised by run in the calling thread
                self.job = e
            self.done.release()


_helpers = []
_helpers_lock = threading.Lock()        # one parallel call at a time uses the helpers


def _reset_helpers():
    global _helpers, _helpers_lock
    _helpers, _helpers_lock = [], threading.Lock()


os.register_at_fork(after_in_child=_reset_helpers)


def run(worker, args, units, parallel=True):
    """worker(*args, u0, u1) over units 0..units-1, on numba.get_num_threads() threads when
    ``parallel``: contiguous ranges of units, the first on the calling thread. While another
    Python thread's call has the helpers, this one runs its units serially (same bits)."""
    threads = min(units, numba.get_num_threads()) if parallel else 1
    if threads <= 1 or not _helpers_lock.acquire(blocking=False):
        worker(*args, 0, units)
        return
    try:
        while len(_helpers) < threads - 1:
            _helpers.append(_Helper(f"numbanet-kernel-{len(_helpers)}"))
        cuts = [i * units // threads for i in range(threads + 1)]
        helpers = _helpers[:threads - 1]
        for i, h in enumerate(helpers, 1):
            h.job = (worker, args + (cuts[i], cuts[i + 1]))
            h.go.release()
        try:
            worker(*args, cuts[0], cuts[1])
        finally:
            try:
                for h in helpers:
                    h.done.acquire()
            except BaseException:       # interrupted while waiting: drop helpers still busy
                del _helpers[:]
                raise
        for h in helpers:
            if h.job is not None:
                e, h.job = h.job, None
                raise e
    finally:
        _helpers_lock.release()


def _serial():
    """Numba's parallel options with every transformation off: the ``prange`` loop runs serially,
    but the function goes through the parallel pipeline's IR clean-up, which drops the reference
    counting of the arrays that ``inline="always"`` helpers take (left in, those calls keep LLVM
    from vectorizing the loop: Adam's update over 10k floats ran 29 us instead of 14). An options
    object, not a dict: numba pops a dict's keys when it compiles the first signature, so a
    second signature (float64 after float32) would have been compiled with every transformation
    on, its ``prange`` loop a threaded parfor with a different reduction order."""
    return ParallelOptions(dict(comprehension=False, reduction=False, inplace_binop=False,
                                setitem=False, numpy=False, stencil=False, fusion=False,
                                prange=False))


def _quiet(compile):
    """``compile`` without numba's warning that ``parallel`` found nothing to parallelize (the
    serial copy asks for no transformation)."""
    def quiet_compile(sig):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", numba.NumbaPerformanceWarning)
            return compile(sig)
    return quiet_compile


def split_parallel(fn, name, size, par_min, **options):
    """A kernel from ``fn`` (a loop over ``prange``): a plain Python function that calls ``fn``
    compiled serially (``prange`` runs as ``range``; see _serial) while its work is below
    ``par_min`` and compiled with ``parallel=True`` from ``par_min`` on (``options``: further
    ``njit`` options of both). The work is the element count of argument number ``size``, or
    ``size(*args)`` when ``size`` is a function. Each copy compiles at its first call, so a
    program whose arrays stay small never compiles the parfor copy (several times as costly to
    compile as the serial loop). The copies have names of their own, ``name`` and
    ``name + "_parallel"``, so their own cache files: Numba keys its on-disk cache by the
    function's name and code, not by ``parallel``."""
    copies = {}
    for suffix, par in (("", False), ("_parallel", True)):
        f = types.FunctionType(fn.__code__, fn.__globals__, name + suffix, fn.__defaults__,
                               fn.__closure__)
        f.__qualname__ = name + suffix                  # names the cache file and tracebacks
        f.__module__ = fn.__module__
        copies[par] = numba.njit(cache=True, parallel=True if par else _serial(), **options)(f)
    serial, parallel = copies[False], copies[True]
    serial.compile = _quiet(serial.compile)

    if callable(size):
        def kernel(*args):
            return (parallel if size(*args) >= par_min else serial)(*args)
    else:
        def kernel(*args):
            return (parallel if args[size].size >= par_min else serial)(*args)
    kernel.__name__ = kernel.__qualname__ = name
    kernel.__module__ = fn.__module__
    kernel.__doc__ = fn.__doc__
    kernel.__signature__ = inspect.signature(fn)
    kernel.serial, kernel.parallel = serial, parallel
    return kernel



def split_kernel(size, par_min, **options):
    """Decorator form of split_parallel: the kernel takes the name of the decorated function."""
    return lambda fn: split_parallel(fn, fn.__name__, size, par_min, **options)


def _other_openmp_loaded():
    """Whether a GNU OpenMP runtime is already mapped into this process (Linux: PyTorch's, which
    it loads with its symbols global, so that Numba's pool would bind to it)."""
    try:
        with open("/proc/self/maps") as f:
            return any("libgomp" in line for line in f)
    except OSError:
        return False


def start_quiet_pool():
    """Start Numba's thread pool (the ``prange`` kernels') with GNU OpenMP's threads spinning
    only briefly after a parallel region (``GOMP_SPINCOUNT=10000``, a few tens of us) unless
    the environment sets a policy; returns whether it did.

    By default libgomp's threads spin for 300000 rounds after each region: on two cores the
    spinning thread takes the core from the next kernel's helper thread (``run``), and a LeNet
    training step took 51-61 ms instead of 40-43. Never spinning (``OMP_WAIT_POLICY=PASSIVE``)
    makes every region wake its threads, which slowed a dense layer's fwd+bwd from 0.75 to
    1.05-1.26 ms. libgomp reads the variable once, when it is loaded, so it is set only while
    Numba loads its pool; an OpenMP runtime loaded later and sharing this libgomp (PyTorch's,
    imported after numbanet) runs with the same short spin.

    When a libgomp is already loaded (PyTorch imported first: its copy is global, its spin the
    default), Numba's pool module is loaded with ``RTLD_DEEPBIND``, so that it binds to the
    libgomp it links (a second runtime, initialized now with the short spin) instead of
    PyTorch's: bound to PyTorch's, the LeNet step ran 44-53 ms instead of 25. Not done when
    ``LD_PRELOAD`` is set (a preloaded allocator must stay the one the pool's code calls)."""
    from numba.np.ufunc import parallel
    if parallel._is_initialized or {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & set(os.environ) or \
            os.environ.get("NUMBA_THREADING_LAYER", "default") not in ("default", "omp"):
        return False
    deep = hasattr(os, "RTLD_DEEPBIND") and not os.environ.get("LD_PRELOAD") and \
        _other_openmp_loaded()
    flags = sys.getdlopenflags()
    os.environ["GOMP_SPINCOUNT"] = "10000"
    try:
        if deep:
            sys.setdlopenflags(flags | os.RTLD_DEEPBIND)
        parallel._launch_threads()
    finally:
        sys.setdlopenflags(flags)
        del os.environ["GOMP_SPINCOUNT"]
    return True
