"""Optimizer updates on the GPU: one grid-stride launch updates a whole flat parameter buffer and
its state in place (PyTorch torch.optim formulas, as kernels/cpu/optim.py).

The per-element maths (``NAME_at``) and the per-call constants (Adam's bias corrections, RAdam's
rectification, AdaBound's bounds: ``NAME_constants``, computed on the host) live in
kernels/scalar.py, shared with the CPU kernels. State buffers a configuration does not use are
never touched and may be empty; buffer sizes are checked on the host (ValueError, as on the CPU).
Every update kernel but lookahead's is generated from its row of ``scalar.UPDATES`` (``_make``).
"""
import numpy as np
from numba import cuda

from .. import scalar
from ._common import (A1, Bool, D1, Float, MAX_THREADS, N1, device, grid_1d, grid_sum_store, kernel,
                      last_block, launcher, reduction_args)


def _run(name, k, param, checked, *args):
    """Check that every buffer of ``checked`` has ``param``'s size, then launch ``k`` over it."""
    n = param.size
    for b in checked:
        if b.size != n:
            raise ValueError(f"{name}: buffer sizes differ from param")
    if n:
        k[grid_1d(n)](param, *args)


# The kernels and launchers generated from the rows of scalar.UPDATES: a grid-stride loop calling
# ``NAME_at`` (``_NAME``), and its launcher, which checks the sizes of the buffers the
# configuration uses and computes the per-call constants on the host.
_KERNEL = """
def _{name}(param: A1, grad: A1, {slot_kinds}, {at_kinds}):
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        _{name}_at(i, param, grad, {slots}, {at_args})


def {launcher}({label_arg}param, grad, {slots}, {hyper}):
{constants}    _run({label}, _{name}, param, (grad, {checked}), grad, {slots}, {at_args})
"""


def _make(row):
    """The kernel ``_NAME`` of table row ``row`` (scalar.UPDATES) and its launcher: the public
    ``NAME_update``, or ``_NAME_launch(name, ...)`` for the kernels of ``row.shared_by``."""
    g, name = globals(), row.name
    g[f"_{name}_at"] = device(row.at)
    launcher_name = f"_{name}_launch" if row.shared_by else f"{name}_update"
    checked = ", ".join(f"*(({s},) if {row.when[s]} else ())" if s in row.when else s
                        for s in row.slots)
    constants = (f"    {', '.join(row.constant_names)} = scalar.{name}_constants("
                 f"{', '.join(row.constant_args)})\n" if row.constants is not None else "")
    text = _KERNEL.format(
        name=name, slots=", ".join(row.slots), slot_kinds=", ".join(f"{s}: A1" for s in row.slots),
        at_kinds=", ".join(f"{a}: {'Bool' if a in row.flags else 'Float'}" for a in row.at_args),
        at_args=", ".join(row.at_args), launcher=launcher_name, hyper=", ".join(row.hyper),
        label_arg="name, " if row.shared_by else "", label="name" if row.shared_by
        else repr(launcher_name), checked=checked, constants=constants)
    exec(compile(text, __file__, "exec"), g)
    g[f"_{name}"] = kernel(g[f"_{name}"])
    if not row.shared_by:
        g[launcher_name].__doc__ = row.at.__doc__
        g[launcher_name] = launcher(g[launcher_name])


for _row in scalar.UPDATES:
    _make(_row)


@launcher
def adam_update(param, grad, m, v, vmax, lr, beta1, beta2, eps, weight_decay, amsgrad, step):
    """Adam (torch) with L2 weight decay added to the gradient; ``step`` is 1-based."""
    _adam_launch("adam_update", param, grad, m, v, vmax, lr, beta1, beta2, eps, weight_decay,
                 1.0, amsgrad, step)


@launcher
def adamw_update(param, grad, m, v, vmax, lr, beta1, beta2, eps, weight_decay, amsgrad, step):
    """AdamW (torch): param *= 1 - lr * weight_decay, then the Adam step; ``step`` is 1-based."""
    _adam_launch("adamw_update", param, grad, m, v, vmax, lr, beta1, beta2, eps, 0.0,
                 1.0 - lr * weight_decay, amsgrad, step)


_lookahead_at = device(scalar.lookahead_at)


@kernel
def _lookahead(slow: A1, fast: A1, alpha: Float):
    for i in range(cuda.grid(1), slow.size, cuda.gridsize(1)):
        _lookahead_at(i, slow, fast, alpha)


@launcher
def lookahead_update(slow, fast, alpha):
    """Lookahead's synchronisation (Zhang et al. 2019): slow += alpha * (fast - slow); fast = slow."""
    if fast.size != slow.size:
        raise ValueError("lookahead_update: slow and fast differ in size")
    _run("lookahead_update", _lookahead, slow, (), fast, alpha)


# ---- vector helpers for L-BFGS ---------------------------------------------------------------------

@kernel
def _dot(x: A1, y: A1, out: A1, partials: D1, count: N1):
    sh = cuda.shared.array(MAX_THREADS, np.float64)
    flag = cuda.shared.array(1, np.int32)
    acc = 0.0
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        acc += np.float64(x[i]) * np.float64(y[i])
    grid_sum_store(sh, flag, acc, partials, count, out, 1.0)


@launcher
def dot(x, y, out):
    """out[0] = sum(x * y), accumulated in float64."""
    if y.size != x.size:
        raise ValueError("dot: x and y differ in size")
    grid = grid_1d(x.size)
    _dot[grid](x, y, out, *reduction_args("optim.dot", grid[0]))


@kernel
def _axpy(a: Float, x: A1, y: A1):
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        y[i] += a * x[i]


@launcher
def axpy(a, x, y):
    """y += a * x, in place."""
    if y.size != x.size:
        raise ValueError("axpy: x and y differ in size")
    if x.size:
        _axpy[grid_1d(x.size)](a, x, y)


@kernel
def _abs_sum(x: A1, out: A1, partials: D1, count: N1):
    sh = cuda.shared.array(MAX_THREADS, np.float64)
    flag = cuda.shared.array(1, np.int32)
    acc = 0.0
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        acc += abs(np.float64(x[i]))
    grid_sum_store(sh, flag, acc, partials, count, out, 1.0)


@launcher
def abs_sum(x, out):
    """out[0] = sum(|x|) (the L1 norm), accumulated in float64."""
    grid = grid_1d(x.size)
    _abs_sum[grid](x, out, *reduction_args("optim.abs_sum", grid[0]))


@cuda.jit(device=True)
def _larger(a, b):
    """max(a, b) where a NaN wins (as torch's max)."""
    return b if (b > a or b != b) else a


@cuda.jit(device=True)
def _block_max(sh, v):
    """Maximum of ``v`` over the block's threads (power-of-two count), to every thread."""
    t = cuda.threadIdx.x
    sh[t] = v
    cuda.syncthreads()
    s = cuda.blockDim.x // 2
    while s > 0:
        if t < s:
            sh[t] = _larger(sh[t], sh[t + s])
        cuda.syncthreads()
        s //= 2
    r = sh[0]
    cuda.syncthreads()
    return r


@kernel
def _abs_max(x: A1, out: A1, partials: D1, count: N1):
    """Each block stores its maximum in ``partials``; the last block to finish (atomic ticket)
    takes the maximum of those and resets ``count`` (as _common.grid_sum_store does for sums)."""
    sh = cuda.shared.array(MAX_THREADS, np.float64)
    flag = cuda.shared.array(1, np.int32)
    acc = 0.0
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        acc = _larger(acc, abs(np.float64(x[i])))
    t = cuda.threadIdx.x
    nb = cuda.gridDim.x
    if last_block(flag, _block_max(sh, acc), partials, count):
        acc = 0.0
        for i in range(t, nb, cuda.blockDim.x):
            acc = _larger(acc, partials[i])
        total = _block_max(sh, acc)
        if t == 0:
            out[0] = total
            count[0] = 0


@launcher
def abs_max(x, out):
    """out[0] = max(|x|) (the infinity norm; 0 for an empty x); a NaN in x gives NaN."""
    grid = grid_1d(x.size)
    _abs_max[grid](x, out, *reduction_args("optim.abs_max", grid[0]))
