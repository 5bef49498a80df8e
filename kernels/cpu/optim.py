"""Optimizer update kernels: one in-place pass over flat 1-D buffers (PyTorch torch.optim formulas;
AdaBound/AMSBound after Luo et al.'s reference implementation, Lookahead after Zhang et al.), and
the few vector operations L-BFGS needs (dot, axpy, abs_sum, abs_max).

Each kernel updates ``param`` and its state buffers element by element; ``grad`` is only read.
The per-element maths (``NAME_at``) and the per-call constants (bias corrections, RAdam's
rectification, AdaBound's bounds: ``NAME_constants``, computed once before the loop) live in
kernels/scalar.py, shared with the CUDA kernels; NAdam's momentum schedule comes from the caller.
State buffers a configuration does not use (``velocity`` without momentum, ``vmax`` without
amsgrad or amsbound, ``grad_avg`` when not centered, ``momentum_buf`` without momentum) are never
touched and may be empty arrays.

Every update kernel but lookahead_update is generated from its row of ``scalar.UPDATES``
(``_make``; Adam's loop is shared by the hand-written adam_update and adamw_update). Each kernel
is one ``prange`` loop over the inlined per-element update, compiled serially for small buffers
and with ``parallel=True`` for large ones, each copy at its first call
(``_threads.split_parallel``). ``error_model="numpy"`` drops Python's division-by-zero check, which otherwise keeps
LLVM from vectorizing the loop (measured 4x slower for Adam).
``cache=True`` does not notice edits to ``scalar.py``: delete the numba cache after changing it.
"""
import numpy as np
from numba import njit, prange

from .. import scalar
from ._threads import split_parallel

_FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
_OPTS = dict(fastmath=_FASTMATH, error_model="numpy")
_INLINE = dict(inline="always", fastmath=_FASTMATH, error_model="numpy")

# Elements at or above which the prange path runs. Measured on the 2-core machine with both cores
# free, 1e6 float32 params: Adam 0.91 -> 0.45 ms, SGD+Nesterov 0.42 -> 0.18 ms, centered RMSprop
# with momentum 0.99 -> 0.47 ms (serial -> 2 threads). At 2**15 the gain is 1.0-1.8x (~10 us) and at
# 2**13 the thread start-up makes it slower; 2**16 keeps a margin.
_PAR_MIN = 1 << 16

# The update kernels, generated from the rows of scalar.UPDATES: check the sizes of the buffers
# the configuration uses, compute the per-call constants, then the per-element update in a prange
# loop (run serially below _PAR_MIN). Compiled from source text attributed to this
# file (numba's cache needs a real file; names and line numbers name the cache entries, and the
# functions hold no closure cells, so a warm start hits the cache).
_KERNEL = """
def {kernel}(param, grad, {slots}, {hyper}):
    n = param.size
    if grad.size != n{checks}:
        raise ValueError("{label}: buffer sizes differ from param")
{constants}    for i in prange(n):
        _{name}_at(i, param, grad, {slots}, {at_args})
"""


def _make(row):
    """The kernel of table row ``row`` (scalar.UPDATES): ``NAME_update``, or ``_NAME_loop`` for a
    loop that the public kernels of ``row.shared_by`` call."""
    g, name = globals(), row.name
    g[f"_{name}_at"] = njit(**_INLINE)(row.at)
    if row.constants is not None:      # strict: compiled apart, without fastmath (RAdam)
        g[f"_{name}_constants"] = (njit(cache=True) if row.strict_constants
                                   else njit(**_INLINE))(row.constants)
    kernel = f"_{name}_loop" if row.shared_by else f"{name}_update"
    checks = "".join(f" or ({row.when[s]} and {s}.size != n)" if s in row.when
                     else f" or {s}.size != n" for s in row.slots)
    constants = (f"    {', '.join(row.constant_names)} = _{name}_constants("
                 f"{', '.join(row.constant_args)})\n" if row.constants is not None else "")
    text = _KERNEL.format(kernel=kernel, name=name, slots=", ".join(row.slots),
                          hyper=", ".join(row.hyper), checks=checks, constants=constants,
                          label="/".join(row.shared_by) or kernel, at_args=", ".join(row.at_args))
    exec(compile(text, __file__, "exec"), g)
    g[kernel].__doc__ = row.at.__doc__
    g[kernel] = split_parallel(g[kernel], kernel, 0, _PAR_MIN, **_OPTS)


for _row in scalar.UPDATES:
    _make(_row)


# adam_update/adamw_update call the shared parallel loop from Python: a cached @njit caller
# embedding a cached parallel callee crashed (numba 0.68) once the callee's cache entry was made by
# the other caller's process.
def adam_update(param, grad, m, v, vmax, lr, beta1, beta2, eps, weight_decay, amsgrad, step):
    """Adam (torch) with L2 weight decay added to the gradient; ``step`` is 1-based."""
    _adam_loop(param, grad, m, v, vmax, lr, beta1, beta2, eps, weight_decay, 1.0, amsgrad, step)


def adamw_update(param, grad, m, v, vmax, lr, beta1, beta2, eps, weight_decay, amsgrad, step):
    """AdamW (torch): param *= 1 - lr * weight_decay, then the Adam step; ``step`` is 1-based."""
    _adam_loop(param, grad, m, v, vmax, lr, beta1, beta2, eps, 0.0, 1.0 - lr * weight_decay,
               amsgrad, step)


_lookahead_at = njit(**_INLINE)(scalar.lookahead_at)


def lookahead_update(slow, fast, alpha):
    """Lookahead's synchronisation (Zhang et al. 2019): slow += alpha * (fast - slow); fast = slow."""
    n = slow.size
    if fast.size != n:
        raise ValueError("lookahead_update: slow and fast differ in size")
    for i in prange(n):
        _lookahead_at(i, slow, fast, alpha)


# ---- vector helpers for L-BFGS (two-loop recursion, line search) on flat buffers -----------------
# Reductions accumulate in float64; reassociation (fastmath) lets the sums vectorize.

def dot(x, y, out):
    """out[0] = sum(x * y), accumulated in float64."""
    n = x.size
    if y.size != n:
        raise ValueError("dot: x and y differ in size")
    total = 0.0
    for i in prange(n):
        total += np.float64(x[i]) * np.float64(y[i])
    out[0] = total


def axpy(a, x, y):
    """y += a * x, in place."""
    n = x.size
    if y.size != n:
        raise ValueError("axpy: x and y differ in size")
    for i in prange(n):
        y[i] += a * x[i]


def abs_sum(x, out):
    """out[0] = sum(|x|) (the L1 norm), accumulated in float64."""
    total = 0.0
    for i in prange(x.size):
        total += abs(np.float64(x[i]))
    out[0] = total


@njit(cache=True, error_model="numpy")
def _abs_max_range(x, start, stop):
    """max |x[start:stop]|; NaN wins (as torch's max), 0 for an empty range."""
    m = 0.0
    for i in range(start, stop):
        v = abs(np.float64(x[i]))
        if v > m or v != v:
            m = v
            if v != v:
                break
    return m


def abs_max(x, out):
    """out[0] = max(|x|) (the infinity norm; 0 for an empty x); a NaN in x gives NaN."""
    n = x.size
    chunks = 16
    part = np.empty(chunks)
    for c in prange(chunks):
        part[c] = _abs_max_range(x, c * n // chunks, (c + 1) * n // chunks)
    m = 0.0
    for c in range(chunks):
        v = part[c]
        if v > m or v != v:
            m = v
            if v != v:
                break
    out[0] = m


lookahead_update, dot, abs_sum = (split_parallel(f, f.__name__, 0, _PAR_MIN, **_OPTS)
                                  for f in (lookahead_update, dot, abs_sum))
axpy = split_parallel(axpy, "axpy", 1, _PAR_MIN, **_OPTS)
abs_max = split_parallel(abs_max, "abs_max", 0, _PAR_MIN, error_model="numpy")
