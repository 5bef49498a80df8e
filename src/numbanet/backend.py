"""The backend: where arrays live and which kernels run on them.

A backend owns allocation, host/device transfer and kernel dispatch: every public kernel of
``numbanet.kernels.<target>.<module>`` is bound as an attribute (``backend.conv2d_forward(...)``).
Layers hold a backend and never import numba themselves.
"""
import contextlib
import importlib
import os

import numpy as np

KERNEL_MODULES = ("dense", "conv2d", "pool", "activations", "losses", "optim", "elementwise",
                  "normalization", "regularization", "augmentation", "ops", "rnn", "word2vec",
                  "attention")
DEVICES = ("cpu", "cuda")


def kernel_names(module):
    """Public kernel names of a kernel module: the functions it defines, not what it imports."""
    return sorted(n for n, f in vars(module).items()
                  if not n.startswith("_") and callable(f)
                  and getattr(f, "__module__", None) == module.__name__
                  and not isinstance(f, type))


class Backend:
    """Binds the kernels of one target and the array operations that go with them."""

    name = None

    def __init__(self, target):
        self.kernels = {}
        for mod in KERNEL_MODULES:
            try:
                m = importlib.import_module(f"numbanet.kernels.{target}.{mod}")
            except ModuleNotFoundError as e:
                if e.name != f"numbanet.kernels.{target}.{mod}":
                    raise
                continue
            for n in kernel_names(m):
                self.kernels[n] = getattr(m, n)
        self.__dict__.update(self.kernels)

    def __repr__(self):
        return f"<numbanet backend {self.name!r}>"

    def first_compile(self, callback):
        """Context manager: ``callback()`` runs once inside it when a kernel first has to be
        compiled (a kernel missing from the on-disk cache); never on a warm start."""
        return contextlib.nullcontext()


def limit_kernel_blas_threads(n=None):
    """Limit the BLAS that Numba's ``np.dot`` calls (SciPy's) to ``n`` threads; returns the
    libraries changed as (file path, threads) pairs.

    numbanet's CPU kernels run on Numba's thread pool and call BLAS from inside it (convolution
    bands, dense row blocks). A multi-threaded BLAS beside it is a second pool whose threads
    spin after each call and take the cores from Numba's: a LeNet step ran ~2.5x slower on two
    cores. The CPU backend therefore calls this with ``n = 1`` when it is created;
    ``NUMBANET_BLAS_THREADS`` overrides ``n`` (a number, or ``keep`` to change nothing). When
    SciPy's BLAS is a separate library (pip wheels), NumPy's own BLAS is left alone; otherwise
    the shared BLAS is limited.
    """
    if n is None:
        setting = os.environ.get("NUMBANET_BLAS_THREADS", "1").strip()
        if setting == "keep":
            return []
        n = int(setting) if setting.isdigit() else 0
        if n < 1:
            raise ValueError(f"NUMBANET_BLAS_THREADS must be a positive integer or 'keep', got "
                             f"{setting!r}")
    elif isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"limit_kernel_blas_threads: n must be a positive int, got {n!r}")
    try:
        import scipy
        import scipy.linalg.cython_blas  # noqa: F401  (loads the BLAS Numba binds to)
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return []
    libs = [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]
    scipy_dir = os.path.dirname(os.path.dirname(os.path.abspath(scipy.__file__)))
    own = [c for c in libs if os.path.abspath(c.filepath).startswith(
        (os.path.join(scipy_dir, "scipy.libs"), os.path.join(scipy_dir, "scipy") + os.sep))]
    changed = []
    for c in own or libs:
        c.set_num_threads(n)
        changed.append((c.filepath, n))
    return changed


def keep_freed_memory():
    """On glibc, serve blocks below 32 MiB from the heap and keep up to 256 MiB of freed memory
    there (``mallopt``); returns whether it did.

    A training step allocates and frees the same large arrays (activations, gradients, kernel
    scratch) every step. By default glibc hands blocks from 128 KiB up (a threshold that grows
    to at most 32 MiB) to the kernel with mmap and gives them back when freed, and trims the
    heap top beyond 128 KiB, so every step page-faults its arrays in again, 4 KiB at a time:
    a LeNet step (batch 128, two threads) took 40-41 ms, 23-25 ms with this (peak RSS 318 ->
    320-326 MiB; keeping only 64 MiB let the step fall back to 42-45 ms after larger models had run
    in the process). Left alone when ``MALLOC_MMAP_THRESHOLD_`` or ``MALLOC_TRIM_THRESHOLD_``
    is set, or with ``NUMBANET_MALLOC=keep``."""
    if os.environ.get("NUMBANET_MALLOC", "tune") == "keep" or \
            {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"} & set(os.environ):
        return False
    import ctypes
    import platform
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    return (bool(mallopt(M_MMAP_THRESHOLD, 32 << 20))
            and bool(mallopt(M_TRIM_THRESHOLD, 256 << 20)))


class CPUBackend(Backend):
    """NumPy arrays and ``@njit`` kernels."""

    name = "cpu"
    is_device = False

    def __init__(self):
        super().__init__("cpu")
        self.blas_threads = limit_kernel_blas_threads()
        self.malloc_tuned = keep_freed_memory()
        from .kernels.cpu._threads import start_quiet_pool
        start_quiet_pool()

    def first_compile(self, callback):
        from .kernels.cpu._jit import first_compile
        return first_compile(callback)

    def empty(self, shape, dtype):
        return np.empty(shape, dtype=dtype)

    def zeros(self, shape, dtype):
        return np.zeros(shape, dtype=dtype)

    def full(self, shape, value, dtype):
        return np.full(shape, value, dtype=dtype)

    def asarray(self, a, dtype=None):
        """A host array (C-contiguous, of ``dtype`` when given) -> an array of this backend."""
        return np.ascontiguousarray(a, dtype=dtype)

    def to_numpy(self, a):
        return np.asarray(a)

    def kernel_view(self, a, shape):
        """``a`` reshaped, for passing to this backend's kernels only."""
        return a.reshape(shape)

    def copy_(self, dst, src):
        """Copy ``src`` (host or backend array) into ``dst`` in place."""
        dst[...] = np.asarray(src).reshape(dst.shape)

    def fill_(self, a, value):
        """Set every element of ``a`` to ``value`` in place."""
        a[...] = value

    def uniform(self, shape, dtype, rng):
        """Uniform [0, 1) numbers of ``dtype`` from the numpy Generator ``rng``."""
        return rng.random(shape, dtype=dtype)

    def normal(self, shape, dtype, rng):
        """Standard normal numbers of ``dtype`` from the numpy Generator ``rng``."""
        return rng.standard_normal(shape, dtype=dtype)

    def synchronize(self):
        pass


_backends = {}


def get_backend(device="cpu"):
    """The backend object for ``"cpu"`` or ``"cuda"`` (created once)."""
    if isinstance(device, Backend):
        return device
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; expected one of {', '.join(DEVICES)}")
    if device not in _backends:
        if device == "cpu":
            _backends[device] = CPUBackend()
        else:
            from . import _cuda
            _backends[device] = _cuda.CUDABackend()
    return _backends[device]


def cuda_available():
    """True when a CUDA GPU can be used (numba-cuda installed, a driver and a device present)."""
    try:
        from . import _cuda
    except ImportError:
        return False
    return _cuda.is_available()
