"""Shared machinery of the CUDA kernels: launch configuration, the kernel registry, device scratch,
block/grid reductions, and the fill and uniform-random kernels the CUDA backend uses.

Every private ``@cuda.jit`` kernel of ``numbanet.kernels.cuda`` is a :class:`Kernel`: the
compiled dispatcher(s) plus an argument *spec* (one code per argument, see :data:`SPEC_CODES`).
The spec does three jobs: it coerces Python scalars to one fixed type at launch (so a float
hyperparameter never triggers a second compilation), it lets the tests check that every launch
matches the declared types (``config.check_signatures``), and it gives the PTX compiler
(:func:`numbanet._cuda.compile_ptx`) the exact signature to compile each kernel for, per float
dtype and label dtype.

dtype specialization: kernels that need compile-time element types (shared-memory and register
tiles) are built by a factory ``build(dtype)``, cached per dtype (and tile shape), with the numba
type frozen into the closure; all other kernels are one lazily-typed dispatcher that numba
specializes per argument types.
"""
import ctypes
import functools
import inspect
import math
import warnings

import numba
import numpy as np
from numba import cuda

from .. import scalar

try:
    from numba.cuda.core.config import ENABLE_CUDASIM as _SIMULATOR
except ImportError:
    from numba.config import ENABLE_CUDASIM as _SIMULATOR

__all__ = []

MAX_THREADS = 256           # compile-time size of the per-block reduction scratch
ROW_LANES, ROW_ROWS = 32, 8  # row-wise kernels: threads per row, rows per block (product <= 256)
VECTOR_ALIGN = None if _SIMULATOR else 16   # shared arrays read as 16-byte vectors (the
                                            # simulator takes no alignment: its arrays are NumPy's)


class _Config:
    """Launch knobs. Tests shrink them (monkeypatch) so tiny arrays still span several blocks."""

    threads = 256                       # threads per block of 1-D kernels (2^k <= MAX_THREADS)
    max_blocks = 2048                   # grid cap of grid-stride kernels
    row_block = (ROW_LANES, ROW_ROWS)   # (lanes per row, rows per block) of row-wise kernels
    gemm_tile = (64, 128, 8, 4, 8)      # BM, BN, BK, TM, TN: block tile, per-thread register tile
    gemm_min_chunk = 4                  # split-K: at least this many BK steps per split
    num_sms = None                      # None: ask the device (split-K targets ~2 blocks per SM)
    check_signatures = False            # check every launch against the kernel's declared spec


config = _Config()


def cdiv(a, b):
    return -(-a // b)


def grid_1d(n, threads=None):
    """(blocks, threads) for a grid-stride loop over ``n`` items."""
    t = threads or config.threads
    return max(1, min(cdiv(n, t), config.max_blocks)), t


def grid_rows(rows):
    """(grid, block) for a row-wise kernel: ``lanes`` threads per row, ``rpb`` rows per block."""
    lanes, rpb = config.row_block
    return max(1, min(cdiv(rows, rpb), config.max_blocks)), (lanes, rpb)


@functools.lru_cache(maxsize=None)
def _device_sms():
    try:
        return int(cuda.get_current_device().MULTIPROCESSOR_COUNT)
    except Exception:       # the simulator has no such attribute
        return 1


def num_sms():
    return config.num_sms or _device_sms()


# ---------------------------------------------------------------------------------------------
# kernel registry

#: argument spec codes. ``A<n>``: float array of the call's dtype, ``<n>`` dims, C order;
#: ``I<n>``: integer label array (int32 or int64); ``q<n>``: int64 array; ``d<n>``: float64
#: array; ``n<n>``: int32 array; ``f``: float64 scalar; ``i``: int64 scalar; ``b``: bool;
#: ``t<k>``: tuple of ``k`` int64.
SPEC_CODES = "A I q d n f i b t"

# The spec written as a named argument list: each argument of a kernel's Python function is
# annotated with its kind, ``def _fill(out: A1, value: Float)``, and :func:`signature` reads the
# codes from the annotations.
A1, A2, A3, A4 = "A1", "A2", "A3", "A4"     # float arrays of the call's dtype (1-4 dims)
L1 = "I1"                                   # integer labels (int32 or int64)
Q1, Q2, Q4 = "q1", "q2", "q4"               # int64 arrays
D1 = "d1"                                   # float64 arrays (accumulators, partial sums)
N1, N2 = "n1", "n2"                         # int32 arrays (counters, flags)
Float, Int, Bool = "f", "i", "b"            # scalars: float64, int64, bool
Shape6 = "t6"                               # 6 int64 (shapes and strides of the op kernels)


def signature(fn):
    """The spec of kernel function ``fn`` (or of the Python function of a jitted kernel): its
    arguments' annotations, in order."""
    params = inspect.signature(getattr(fn, "py_func", fn)).parameters.values()
    missing = [p.name for p in params if not isinstance(p.annotation, str)]
    if missing:
        raise TypeError(f"kernel {fn.__name__}: arguments {missing} have no kind annotation "
                        f"(A1, Float, Int...)")
    return " ".join(p.annotation for p in params)

KERNELS = []                # every Kernel ever made, in creation order (for PTX compilation)
LAUNCHED = set()            # names of the kernels launched while check_signatures was on


def _numba_type(code, dtype, itype):
    kind, rest = code[0], code[1:]
    if kind == "f":
        return numba.float64
    if kind == "i":
        return numba.int64
    if kind == "b":
        return numba.boolean
    if kind == "t":
        return numba.types.UniTuple(numba.int64, int(rest))
    el = {"A": dtype, "I": itype, "q": np.int64, "d": np.float64, "n": np.int32}[kind]
    return numba.types.Array(numba.from_dtype(np.dtype(el)), int(rest), "C")


class Kernel:
    """A private CUDA kernel: ``build(dtype)`` gives the numba dispatcher, ``spec`` its arguments.

    Launch with ``k[grid, block](*args)`` like a numba kernel.
    """

    def __init__(self, name, spec, build, options=None):
        """``spec``: the kernel's annotated Python function (:func:`signature`), for a factory
        one function it builds, or the codes as a string."""
        self.name = name
        self.spec = tuple((spec if isinstance(spec, str) else signature(spec)).split())
        self._build = build
        self.options = dict(options or {})
        self.uses_labels = any(c[0] == "I" for c in self.spec)
        self.dtype_free = not any(c[0] == "A" for c in self.spec)
        self._compiled = {}
        KERNELS.append(self)

    def dispatcher(self, dtype):
        return self._build(np.dtype(dtype))

    def argtypes(self, dtype, itype=np.int64):
        return tuple(_numba_type(c, dtype, itype) for c in self.spec)

    def __getitem__(self, launch_config):
        grid, block = launch_config
        return functools.partial(self._launch, grid, block)

    def _launch(self, grid, block, *args):
        if len(args) != len(self.spec):
            raise TypeError(f"{self.name}: {len(args)} arguments for spec {' '.join(self.spec)}")
        conv, dtype, itype = [], None, None
        packed = [] if _direct.usable() else None
        for code, a in zip(self.spec, args):
            kind = code[0]
            if kind == "f":
                a = float(a)
                scalars = (ctypes.c_double(a),)
            elif kind == "i":
                a = int(a)
                scalars = (ctypes.c_int64(a),)
            elif kind == "b":
                a = bool(a)
                scalars = (a,)
            elif kind == "t":
                a = tuple(int(v) for v in a)
                scalars = tuple(ctypes.c_int64(v) for v in a)
            else:
                scalars = None
                if kind == "A" and dtype is None:
                    dtype = np.dtype(a.dtype)
                elif kind == "I" and itype is None:
                    itype = np.dtype(a.dtype)
                if packed is not None:
                    packed = _pack_array(a, packed)
            if scalars is not None and packed is not None:
                packed.extend(scalars)
            conv.append(a)
        dtype = np.float64 if dtype is None else dtype
        if config.check_signatures or packed is None:
            conv = [a.materialize() if type(a) is View else a for a in conv]
        if config.check_signatures:
            self._check(conv, dtype, itype)
            LAUNCHED.add(self.name)
        if packed is None:
            self.dispatcher(dtype)[grid, block](*conv)
            return
        key = (dtype, itype)
        handle = self._compiled.get(key)
        if handle is None:
            compiled = self.dispatcher(dtype).compile(
                self.argtypes(dtype, np.int64 if itype is None else itype))
            handle = self._compiled[key] = _direct.handle(compiled)
        _direct.launch(handle, grid, block, packed)

    def _check(self, args, dtype, itype):
        """Raise TypeError unless the arguments match the spec (what PTX compilation assumes)."""
        if dtype is not None and dtype not in (np.float32, np.float64):
            raise TypeError(f"{self.name}: float dtype {dtype}")
        if itype is not None and itype not in (np.int32, np.int64):
            raise TypeError(f"{self.name}: label dtype {itype}")
        for k, (code, a) in enumerate(zip(self.spec, args)):
            if code[0] in "fibt":
                if code[0] == "t" and len(a) != int(code[1:]):
                    raise TypeError(f"{self.name}: argument {k} has {len(a)} items, spec {code}")
                continue
            want = _numba_type(code, dtype, itype)
            if (np.dtype(a.dtype) != np.dtype(str(want.dtype)) or a.ndim != want.ndim
                    or not a.flags["C_CONTIGUOUS"]):
                raise TypeError(f"{self.name}: argument {k} is {a.dtype} {a.ndim}-d "
                                f"(contiguous {a.flags['C_CONTIGUOUS']}), spec {code} wants {want}")


# ---------------------------------------------------------------------------------------------
# direct launches: a launch through numba's dispatcher types every argument, searches the
# overloads and converts each array again (~50 us per launch from Python). Kernel argument types
# are known from the spec, so each overload is compiled once and launched through cuda.core with
# arguments packed as numba's kernel ABI lays them out (an array: meminfo, parent, size,
# itemsize, data pointer, shape, strides). A self-test at first use falls back to the dispatcher
# if this numba-cuda lays them out differently; the simulator always uses the dispatcher.

class View:
    """A C-contiguous device array seen with another shape, as a kernel argument only. Numba's
    ``reshape`` builds a new device-array object (tens of microseconds, several per launch);
    a direct launch packs the base array's pointer with this shape instead, and other launches
    reshape for real (:meth:`materialize`)."""

    __slots__ = ("base", "shape", "size", "dtype", "ndim")

    def __init__(self, base, shape):
        self.base = base.base if isinstance(base, View) else base
        self.shape = tuple(int(d) for d in shape)
        self.size = self.base.size
        self.dtype = self.base.dtype
        self.ndim = len(self.shape)
        if math.prod(self.shape) != self.size:
            raise ValueError(f"cannot view {self.size} elements as {self.shape}")
        if not self.base.is_c_contiguous():
            raise ValueError(f"cannot view a non-contiguous array of shape "
                             f"{tuple(self.base.shape)} (strides {tuple(self.base.strides)}) as "
                             f"{self.shape}: kernels take C-contiguous arrays")

    def materialize(self):
        return self.base.reshape(self.shape)


def view(a, *shape):
    """``a`` (a C-contiguous device array, or a View) as a kernel argument of ``shape``."""
    return View(a, shape)


def flat(a):
    """``a`` as a 1-D kernel argument."""
    return View(a, (a.size,))


def _pack_array(a, packed):
    """Append device array ``a``'s kernel arguments; None when ``a`` is not a numba device array
    (a host array, which numba must copy)."""
    if type(a) is View:
        shape, a = a.shape, a.base
        if not hasattr(a, "gpu_data"):
            return None
        item = a.dtype.itemsize
        strides, step = [], item
        for d in reversed(shape):
            strides.append(step)
            step *= d
        strides.reverse()
    elif hasattr(a, "gpu_data"):
        shape, strides, item = a.shape, a.strides, a.dtype.itemsize
    else:
        return None
    packed.extend((0, 0, a.size, item, a.device_ctypes_pointer.value or 0))
    packed.extend(shape)
    packed.extend(strides)
    return packed


class _Direct:
    def __init__(self):
        self.state = False if _SIMULATOR else None  # None: not tried yet; then True / False
        self.configs = {}

    def usable(self):
        if self.state is None:
            self.state = False
            try:
                self._setup()
                self.state = self._self_test()
                why = "its self-test gave wrong values"
            except Exception as e:  # any mismatch with this numba-cuda: use its dispatcher
                why = f"{type(e).__name__}: {e}"
            if not self.state:
                warnings.warn(f"numbanet: direct CUDA kernel launches do not work with this "
                              f"numba-cuda ({why}); launching through numba's dispatcher, "
                              f"which costs more per launch", RuntimeWarning, stacklevel=2)
        return self.state

    def _setup(self):
        from numba.cuda import dispatcher as nd
        from numba.cuda.cudadrv.driver import _to_core_stream
        self._launch = nd.launch
        self._config_kw = {"is_cooperative" if nd.CUDA_CORE_GE_1_0 else "cooperative_launch":
                           False}
        self._config_cls = nd.LaunchConfig
        self._normalize = nd.normalize_kernel_dimensions
        self.stream = _to_core_stream(0)

    def _self_test(self):
        out = cuda.device_array(37, np.float32)
        out[:] = 0
        disp = _fill.dispatcher(np.float32)
        handle = self.handle(disp.compile(_fill.argtypes(np.float32)))
        self.launch(handle, 1, 64, _pack_array(out, []) + [ctypes.c_double(2.5)])
        return bool(np.all(out.copy_to_host() == np.float32(2.5)))

    def handle(self, compiled):
        if compiled.cooperative or compiled.debug:
            raise TypeError("direct launches take plain kernels only")
        return compiled._codelibrary.get_cufunc().kernel

    def launch(self, handle, grid, block, packed):
        key = (grid, block)
        cfg = self.configs.get(key)
        if cfg is None:
            if len(self.configs) > 1024:
                self.configs.clear()
            g, b = self._normalize(grid, block)
            cfg = self.configs[key] = self._config_cls(grid=g, block=b, shmem_size=0,
                                                       **self._config_kw)
        self._launch(self.stream, cfg, handle, *packed)


_direct = _Direct()


def jit(fn, **options):
    """``cuda.jit(fn, **options)``, dropping options the simulator's jit does not take."""
    params = inspect.signature(cuda.jit).parameters
    return cuda.jit(**{k: v for k, v in options.items() if k in params})(fn)


def kernel(fn=None, **options):
    """Decorator, ``@kernel`` or ``@kernel(**cuda_jit_options)`` on a function whose arguments are
    annotated with their kinds: compile it with ``cuda.jit`` (one lazily-typed dispatcher for
    every dtype)."""
    def deco(fn):
        disp = jit(fn, **options)
        return Kernel(f"{fn.__module__.rsplit('.', 1)[-1]}.{fn.__name__}", fn,
                      lambda dtype: disp, options)
    if isinstance(fn, str):                 # older form: @kernel("A1 f")
        spec = fn

        def deco_spec(f):
            disp = jit(f, **options)
            return Kernel(f"{f.__module__.rsplit('.', 1)[-1]}.{f.__name__}", spec,
                          lambda dtype: disp, options)
        return deco_spec
    return deco if fn is None else deco(fn)


def launcher(fn):
    """Decorator of the public launchers: array arguments that only expose
    ``__cuda_array_interface__`` (CuPy, PyTorch...) are wrapped as numba device arrays."""
    @functools.wraps(fn)
    def wrapper(*args):
        return fn(*[cuda.as_cuda_array(a) if hasattr(a, "__cuda_array_interface__")
                    and not hasattr(a, "copy_to_host") else a for a in args])
    return wrapper


def device(fn):
    """A scalar (plain-Python) function as a CUDA device function."""
    return cuda.jit(device=True)(fn)


@cuda.jit(device=True)
def nchw(idx, C, H, W):
    """(n, c, h, w) of the flat C-order index ``idx`` of an (N, C, H, W) array."""
    plane = idx // (H * W)
    q = idx - plane * (H * W)
    h = q // W
    n = plane // C
    return n, plane - n * C, h, q - h * W


# ---------------------------------------------------------------------------------------------
# device scratch: grow-only buffers reused across calls (kernels run in stream order, so a buffer
# is free again once the launch that used it is queued behind the next one)

_scratch = {}    # key -> (buffer, {(n, shape): view of it})


def _cached_view(key, n, shape, make):
    """View ``(n, shape)`` of the buffer cached under ``key`` (``make(size)`` makes a buffer when
    there is none or it is too small). Views are cached too: making a device-array view costs
    tens of microseconds, and kernels ask for the same few every step."""
    n = max(n, 1)
    entry = _scratch.get(key)
    if entry is None or entry[0].size < n:
        entry = _scratch[key] = (make(n), {})
    views = entry[1]
    vkey = (n, shape)
    view = views.get(vkey)
    if view is None:
        if len(views) > 256:
            views.clear()
        view = entry[0][:n]
        if shape is not None:
            view = view.reshape(shape)
        views[vkey] = view
    return view


def scratch(tag, n, dtype, shape=None):
    """A device array of ``n`` elements of ``dtype`` (contents undefined), cached under ``tag``;
    reshaped to ``shape`` if given."""
    dtype = np.dtype(dtype)
    return _cached_view((tag, dtype), n, shape, lambda size: cuda.device_array(size, dtype))


def counters(tag, n):
    """``n`` zeroed int32 device counters (kernels that use one reset it to zero when done)."""
    return _cached_view(("counter", tag), n, None,
                        lambda size: cuda.to_device(np.zeros(size, dtype=np.int32)))


def counter(tag):
    """A zeroed int32 device counter (kernels that use it reset it to zero when done)."""
    return counters(tag, 1)


# ---------------------------------------------------------------------------------------------
# reductions (float64 accumulation, fixed order: deterministic)

@cuda.jit(device=True)
def block_sum(sh, v):
    """Sum of ``v`` over all threads of the block (power-of-two size <= MAX_THREADS), returned
    to every thread. ``sh``: float64 shared array of MAX_THREADS."""
    nt = cuda.blockDim.x * cuda.blockDim.y
    t = cuda.threadIdx.y * cuda.blockDim.x + cuda.threadIdx.x
    sh[t] = v
    cuda.syncthreads()
    s = nt // 2
    while s > 0:
        if t < s:
            sh[t] += sh[t + s]
        cuda.syncthreads()
        s //= 2
    r = sh[0]
    cuda.syncthreads()
    return r


@cuda.jit(device=True)
def last_block(flag, v, partials, count):
    """Store this block's result ``v`` in ``partials[block]`` and take a ticket on ``count``
    (atomic): True, in every thread, for the last block to finish, which may then read every
    block's partial. ``flag``: int32 shared array of 1."""
    if cuda.threadIdx.x == 0 and cuda.threadIdx.y == 0:
        partials[cuda.blockIdx.x] = v
        cuda.threadfence()
        ticket = cuda.atomic.add(count, 0, 1)
        flag[0] = 1 if ticket == cuda.gridDim.x - 1 else 0
    cuda.syncthreads()
    if flag[0] == 1:
        cuda.threadfence()
        return True
    return False


@cuda.jit(device=True)
def grid_sum_store(sh, flag, v, partials, count, out, scale):
    """``out[0] = scale * (sum of v over every thread of the grid)`` in one launch: each block
    stores its sum in ``partials[block]``; the last block to finish (atomic ticket on ``count``)
    adds the partials in block order and resets ``count``. ``flag``: int32 shared array of 1."""
    t = cuda.threadIdx.y * cuda.blockDim.x + cuda.threadIdx.x
    nb = cuda.gridDim.x
    if last_block(flag, block_sum(sh, v), partials, count):
        acc = 0.0
        for i in range(t, nb, cuda.blockDim.x * cuda.blockDim.y):
            acc += partials[i]
        total = block_sum(sh, acc)
        if t == 0:
            out[0] = total * scale
            count[0] = 0


def reduction_args(tag, blocks):
    """(partials, counter) device buffers for a grid_sum_store over ``blocks`` blocks."""
    return scratch(tag, blocks, np.float64), counter(tag)


@cuda.jit(device=True)
def row_sum(sh, v):
    """Sum of ``v`` over the threads of one row (threadIdx.x) of a row-wise block, to each of them.
    ``sh``: float64 shared array (ROW_ROWS, ROW_LANES)."""
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    sh[ty, tx] = v
    cuda.syncthreads()
    s = cuda.blockDim.x // 2
    while s > 0:
        if tx < s:
            sh[ty, tx] += sh[ty, tx + s]
        cuda.syncthreads()
        s //= 2
    r = sh[ty, 0]
    cuda.syncthreads()
    return r


@cuda.jit(device=True)
def row_max(sh, v):
    """Maximum of ``v`` over the threads of one row (see row_sum); NaN propagates."""
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    sh[ty, tx] = v
    cuda.syncthreads()
    s = cuda.blockDim.x // 2
    while s > 0:
        if tx < s:
            a = sh[ty, tx]
            b = sh[ty, tx + s]
            if b > a or b != b:
                sh[ty, tx] = b
        cuda.syncthreads()
        s //= 2
    r = sh[ty, 0]
    cuda.syncthreads()
    return r


@cuda.jit(device=True)
def first_max_wins(a, ka, b, kb):
    """Whether candidate (b, kb) beats (a, ka) as the first maximum of a row: the larger value,
    the smaller index among equal ones; a NaN beats any number, the NaN of smaller index another
    NaN (torch.max's rule); index -1 marks no candidate."""
    if kb < 0:
        return False
    if ka < 0:
        return True
    if a != a:
        return b != b and kb < ka
    if b != b:
        return True
    return b > a or (b == a and kb < ka)


@cuda.jit(device=True)
def row_argmax(sv, sk, v, k):
    """(value, index) of the first maximum over the threads of one row (see first_max_wins),
    to each of them. ``sv`` / ``sk``: float64 / int64 shared arrays (ROW_ROWS, ROW_LANES)."""
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    sv[ty, tx] = v
    sk[ty, tx] = k
    cuda.syncthreads()
    s = cuda.blockDim.x // 2
    while s > 0:
        if tx < s and first_max_wins(sv[ty, tx], sk[ty, tx], sv[ty, tx + s], sk[ty, tx + s]):
            sv[ty, tx] = sv[ty, tx + s]
            sk[ty, tx] = sk[ty, tx + s]
        cuda.syncthreads()
        s //= 2
    rv = sv[ty, 0]
    rk = sk[ty, 0]
    cuda.syncthreads()
    return rv, rk


@cuda.jit(device=True)
def row_loop(rows):
    """(first, stop, step) of a row-wise kernel's grid-stride loop over ``rows`` rows: this
    thread's row takes r = first, first + step, ... < stop. Every thread of a block takes as many
    steps (the row reductions synchronize the block), so r may be past the last row: a thread
    with r >= rows takes part in the reductions with nothing."""
    rpb = cuda.blockDim.y
    return (cuda.blockIdx.x * rpb + cuda.threadIdx.y, (rows + rpb - 1) // rpb * rpb,
            cuda.gridDim.x * rpb)


@cuda.jit(device=True)
def row_max_sumexp(sh, x, r, live):
    """(m, s) of row r of x (rows, cols), to each thread of the row: its maximum m and the sum of
    exp(x - m) over it, in float64 (NaN propagates); ``live``: r < rows (see row_loop)."""
    tx = cuda.threadIdx.x
    lanes = cuda.blockDim.x
    m = -math.inf
    if live:
        for j in range(tx, x.shape[1], lanes):
            v = np.float64(x[r, j])
            if v > m or v != v:
                m = v
    m = row_max(sh, m)
    s = 0.0
    if live:
        for j in range(tx, x.shape[1], lanes):
            s += math.exp(np.float64(x[r, j]) - m)
    return m, row_sum(sh, s)


# ---------------------------------------------------------------------------------------------
# fill and uniform random numbers (used by numbanet._cuda.CUDABackend)

@kernel
def _fill(out: A1, value: Float):
    v = out.dtype.type(value)
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        out[i] = v


def fill(out, value):
    """Set every element of the device array ``out`` to ``value`` (one launch)."""
    if out.size:
        _fill[grid_1d(out.size)](flat(out), value)


# Philox4x32-10 (kernels/scalar.py philox): counter = element index, key = seed. Counter-based,
# so the numbers depend on (seed, index) only, not on the launch shape.
_M32 = scalar.PHILOX_M32
_S32 = scalar.PHILOX_S32
_philox = device(scalar.philox)


@kernel
def _uniform(out: A1, seed: Int, bits: Int, scale: Float):
    k0 = np.uint64(seed) & _M32
    k1 = (np.uint64(seed) >> _S32) & _M32
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        u = np.uint64(i)
        r0, r1 = _philox(u & _M32, u >> _S32, k0, k1)
        word = (r0 << _S32) | r1                          # 64 random bits
        out[i] = out.dtype.type(float(word >> np.uint64(64 - bits)) * scale)


@kernel
def _normal(out: A1, seed: Int):
    k0 = np.uint64(seed) & _M32
    k1 = (np.uint64(seed) >> _S32) & _M32
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        u = np.uint64(i)
        r0, r1 = _philox(u & _M32, u >> _S32, k0, k1)
        # Box-Muller on two 32-bit words: u1 in (0, 1] (log finite), u2 in [0, 1)
        u1 = (float(r0) + 1.0) * 2.3283064365386963e-10
        u2 = float(r1) * 2.3283064365386963e-10
        out[i] = out.dtype.type(math.sqrt(-2.0 * math.log(u1)) * math.cos(6.283185307179586 * u2))


def normal(out, seed):
    """Fill the device array ``out`` with standard normal numbers from the 63-bit ``seed``
    (Box-Muller on Philox4x32-10's words, computed in float64)."""
    if out.size:
        _normal[grid_1d(out.size)](flat(out), int(seed))


def uniform(out, seed):
    """Fill the device array ``out`` with uniform [0, 1) numbers from the 63-bit ``seed``: 24
    random bits per float32, 53 per float64 (exact in the dtype, so never 1.0)."""
    bits = 24 if np.dtype(out.dtype) == np.float32 else 53
    if out.size:
        _uniform[grid_1d(out.size)](flat(out), int(seed), bits, math.ldexp(1.0, -bits))
