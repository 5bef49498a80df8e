"""Optimizer updates on the GPU: one grid-stride launch updates a whole flat parameter buffer and
its state in place (PyTorch torch.optim formulas, as kernels/cpu/optim.py).

The per-element maths (``NAME_at``) and the per-call constants (Adam's bias corrections, RAdam's
rectification, AdaBound's bounds: ``NAME_constants``, computed on the host) live in
kernels/scalar.py, shared with the CPU kernels. State buffers a configuration does not use are
never touched and may be empty; buffer sizes are checked on the host (ValueError, as on the CPU).
"""
import numpy as np
from numba import cuda

from .. import scalar
from ._common import (A1, Bool, D1, Float, MAX_THREADS, N1, device, grid_1d, grid_sum_store, kernel,
                      last_block, launcher, reduction_args)

_sgd_at = device(scalar.sgd_at)
_adagrad_at = device(scalar.adagrad_at)
_rmsprop_at = device(scalar.rmsprop_at)
_adam_at = device(scalar.adam_at)
_adadelta_at = device(scalar.adadelta_at)
_nadam_at = device(scalar.nadam_at)
_adamax_at = device(scalar.adamax_at)
_radam_at = device(scalar.radam_at)
_adabound_at = device(scalar.adabound_at)
_lion_at = device(scalar.lion_at)
_lookahead_at = device(scalar.lookahead_at)


def _run(name, k, param, checked, *args):
    """Check that every buffer of ``checked`` has ``param``'s size, then launch ``k`` over it."""
    n = param.size
    for b in checked:
        if b.size != n:
            raise ValueError(f"{name}: buffer sizes differ from param")
    if n:
        k[grid_1d(n)](param, *args)


@kernel
def _sgd(param: A1, grad: A1, velocity: A1, lr: Float, momentum: Float, weight_decay: Float,
         nesterov: Bool):
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        _sgd_at(i, param, grad, velocity, lr, momentum, weight_decay, nesterov)


@launcher
def sgd_update(param, grad, velocity, lr, momentum, weight_decay, nesterov):
    """SGD with momentum (dampening 0), optional Nesterov and L2 weight decay, in place."""
    _run("sgd_update", _sgd, param, (grad, *((velocity,) if momentum != 0.0 else ())),
         grad, velocity, lr, momentum, weight_decay, nesterov)


@kernel
def _adagrad(param: A1, grad: A1, accum: A1, lr: Float, eps: Float, weight_decay: Float):
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        _adagrad_at(i, param, grad, accum, lr, eps, weight_decay)


@launcher
def adagrad_update(param, grad, accum, lr, eps, weight_decay):
    """Adagrad: accum += g^2; param -= lr * g / (sqrt(accum) + eps)."""
    _run("adagrad_update", _adagrad, param, (grad, accum), grad, accum, lr, eps, weight_decay)


@kernel
def _rmsprop(param: A1, grad: A1, square_avg: A1, grad_avg: A1, momentum_buf: A1, lr: Float,
             alpha: Float, eps: Float, weight_decay: Float, momentum: Float, centered: Bool):
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        _rmsprop_at(i, param, grad, square_avg, grad_avg, momentum_buf, lr, alpha, eps,
                    weight_decay, momentum, centered)


@launcher
def rmsprop_update(param, grad, square_avg, grad_avg, momentum_buf, lr, alpha, eps, weight_decay,
                   momentum, centered):
    """RMSprop (torch): optional centering, momentum and L2 weight decay, eps outside the sqrt."""
    _run("rmsprop_update", _rmsprop, param, (grad, square_avg, *((grad_avg,) if centered else ()),
                                             *((momentum_buf,) if momentum > 0.0 else ())),
         grad, square_avg, grad_avg, momentum_buf, lr, alpha, eps, weight_decay, momentum, centered)


@kernel
def _adam(param: A1, grad: A1, m: A1, v: A1, vmax: A1, beta1: Float, beta2: Float, eps: Float,
          l2: Float, decay: Float, amsgrad: Bool, step_size: Float, bc2_sqrt: Float):
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        _adam_at(i, param, grad, m, v, vmax, beta1, beta2, eps, l2, decay, amsgrad, step_size,
                 bc2_sqrt)


def _adam_launch(name, param, grad, m, v, vmax, lr, beta1, beta2, eps, l2, decay, amsgrad, step):
    _run(name, _adam, param, (grad, m, v, *((vmax,) if amsgrad else ())), grad, m, v, vmax, beta1,
         beta2, eps, l2, decay, amsgrad, *scalar.adam_constants(lr, beta1, beta2, step))


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


@kernel
def _adadelta(param: A1, grad: A1, square_avg: A1, acc_delta: A1, lr: Float, rho: Float, eps: Float,
              weight_decay: Float):
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        _adadelta_at(i, param, grad, square_avg, acc_delta, lr, rho, eps, weight_decay)


@launcher
def adadelta_update(param, grad, square_avg, acc_delta, lr, rho, eps, weight_decay):
    """Adadelta (torch): the step is g * sqrt(acc_delta + eps) / sqrt(square_avg + eps), times lr."""
    _run("adadelta_update", _adadelta, param, (grad, square_avg, acc_delta), grad, square_avg,
         acc_delta, lr, rho, eps, weight_decay)


@kernel
def _nadam(param: A1, grad: A1, m: A1, v: A1, beta1: Float, beta2: Float, eps: Float,
           weight_decay: Float, bc2: Float, c_grad: Float, c_m: Float):
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        _nadam_at(i, param, grad, m, v, beta1, beta2, eps, weight_decay, bc2, c_grad, c_m)


@launcher
def nadam_update(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, mu, mu_next, mu_product,
                 step):
    """NAdam (torch): ``mu``/``mu_next`` are this and the next step's momentum coefficients and
    ``mu_product`` the product of all of them up to this step (the host keeps that schedule)."""
    _run("nadam_update", _nadam, param, (grad, m, v), grad, m, v, beta1, beta2, eps, weight_decay,
         *scalar.nadam_constants(lr, beta2, mu, mu_next, mu_product, step))


@kernel
def _adamax(param: A1, grad: A1, m: A1, u: A1, beta1: Float, beta2: Float, eps: Float,
            weight_decay: Float, clr: Float):
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        _adamax_at(i, param, grad, m, u, beta1, beta2, eps, weight_decay, clr)


@launcher
def adamax_update(param, grad, m, u, lr, beta1, beta2, eps, weight_decay, step):
    """Adamax (torch): u = max(beta2 * u, |g| + eps); param -= lr / (1 - beta1^step) * m / u."""
    _run("adamax_update", _adamax, param, (grad, m, u), grad, m, u, beta1, beta2, eps,
         weight_decay, scalar.adamax_constants(lr, beta1, step))


@kernel
def _radam(param: A1, grad: A1, m: A1, v: A1, beta1: Float, beta2: Float, eps: Float,
           weight_decay: Float, lr: Float, bc1: Float, bc2_sqrt: Float, rect: Float, rectify: Bool):
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        _radam_at(i, param, grad, m, v, beta1, beta2, eps, weight_decay, lr, bc1, bc2_sqrt, rect,
                  rectify)


@launcher
def radam_update(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step):
    """RAdam (torch): the Adam step times the rectification term once the approximated SMA
    length rho_t exceeds 5, plain bias-corrected momentum SGD before that."""
    _run("radam_update", _radam, param, (grad, m, v), grad, m, v, beta1, beta2, eps, weight_decay,
         lr, *scalar.radam_constants(beta1, beta2, step))


@kernel
def _adabound(param: A1, grad: A1, m: A1, v: A1, vmax: A1, beta1: Float, beta2: Float, eps: Float,
              weight_decay: Float, amsbound: Bool, step_size: Float, lower: Float, upper: Float):
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        _adabound_at(i, param, grad, m, v, vmax, beta1, beta2, eps, weight_decay, amsbound,
                     step_size, lower, upper)


@launcher
def adabound_update(param, grad, m, v, vmax, lr, beta1, beta2, eps, weight_decay, final_lr, gamma,
                    amsbound, step):
    """AdaBound / AMSBound (Luo et al. 2019, reference implementation): Adam's per-coordinate
    rate clipped to [final_lr * (1 - 1 / (gamma t + 1)), final_lr * (1 + 1 / (gamma t))]."""
    _run("adabound_update", _adabound, param, (grad, m, v, *((vmax,) if amsbound else ())), grad,
         m, v, vmax, beta1, beta2, eps, weight_decay, amsbound,
         *scalar.adabound_constants(lr, beta1, beta2, final_lr, gamma, step))


@kernel
def _lion(param: A1, grad: A1, m: A1, lr: Float, beta1: Float, beta2: Float, weight_decay: Float):
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        _lion_at(i, param, grad, m, lr, beta1, beta2, weight_decay)


@launcher
def lion_update(param, grad, m, lr, beta1, beta2, weight_decay):
    """Lion (Chen et al. 2023) with decoupled weight decay, in place (kernels/scalar.py lion_at)."""
    _run("lion_update", _lion, param, (grad, m), grad, m, lr, beta1, beta2, weight_decay)


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
