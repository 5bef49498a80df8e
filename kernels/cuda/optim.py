"""Optimizer updates on the GPU: one grid-stride launch updates a whole flat parameter buffer and
its state in place (PyTorch torch.optim formulas, as kernels/cpu/optim.py).

Per-call constants (Adam's bias corrections, AdamW's decay factor) are computed on the host.
State buffers a configuration does not use are never touched and may be empty; buffer sizes are
checked on the host (ValueError, as on the CPU).
"""
import math

import numpy as np
from numba import cuda

from ._common import MAX_THREADS, grid_1d, grid_sum_store, kernel, launcher, reduction_args


def _check(name, n, *buffers):
    for b in buffers:
        if b.size != n:
            raise ValueError(f"{name}: buffer sizes differ from param")


@kernel("A1 A1 A1 f f f b")
def _sgd(param, grad, velocity, lr, momentum, weight_decay, nesterov):
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        g = grad[i] + weight_decay * param[i]
        if momentum != 0.0:
            buf = momentum * velocity[i] + g
            velocity[i] = buf
            g = g + momentum * buf if nesterov else buf
        param[i] -= lr * g


@launcher
def sgd_update(param, grad, velocity, lr, momentum, weight_decay, nesterov):
    """SGD with momentum (dampening 0), optional Nesterov and L2 weight decay, in place."""
    n = param.size
    _check("sgd_update", n, grad, *((velocity,) if momentum != 0.0 else ()))
    if n:
        _sgd[grid_1d(n)](param, grad, velocity, lr, momentum, weight_decay, nesterov)


@kernel("A1 A1 A1 f f f")
def _adagrad(param, grad, accum, lr, eps, weight_decay):
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        g = grad[i] + weight_decay * param[i]
        s = accum[i] + g * g
        accum[i] = s
        param[i] -= lr * g / (math.sqrt(s) + eps)


@launcher
def adagrad_update(param, grad, accum, lr, eps, weight_decay):
    """Adagrad: accum += g^2; param -= lr * g / (sqrt(accum) + eps)."""
    n = param.size
    _check("adagrad_update", n, grad, accum)
    if n:
        _adagrad[grid_1d(n)](param, grad, accum, lr, eps, weight_decay)


@kernel("A1 A1 A1 A1 A1 f f f f f b")
def _rmsprop(param, grad, square_avg, grad_avg, momentum_buf, lr, alpha, eps, weight_decay,
             momentum, centered):
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        g = grad[i] + weight_decay * param[i]
        sa = alpha * square_avg[i] + (1.0 - alpha) * g * g
        square_avg[i] = sa
        if centered:
            ga = alpha * grad_avg[i] + (1.0 - alpha) * g
            grad_avg[i] = ga
            avg = math.sqrt(max(sa - ga * ga, 0.0)) + eps
        else:
            avg = math.sqrt(sa) + eps
        if momentum > 0.0:
            buf = momentum * momentum_buf[i] + g / avg
            momentum_buf[i] = buf
            param[i] -= lr * buf
        else:
            param[i] -= lr * g / avg


@launcher
def rmsprop_update(param, grad, square_avg, grad_avg, momentum_buf, lr, alpha, eps, weight_decay,
                   momentum, centered):
    """RMSprop (torch): optional centering, momentum and L2 weight decay, eps outside the sqrt."""
    n = param.size
    _check("rmsprop_update", n, grad, square_avg, *((grad_avg,) if centered else ()),
           *((momentum_buf,) if momentum > 0.0 else ()))
    if n:
        _rmsprop[grid_1d(n)](param, grad, square_avg, grad_avg, momentum_buf, lr, alpha, eps,
                             weight_decay, momentum, centered)


@kernel("A1 A1 A1 A1 A1 f f f f f b f f")
def _adam(param, grad, m, v, vmax, beta1, beta2, eps, l2, decay, amsgrad, step_size, bc2_sqrt):
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        p = param[i] * decay                  # decoupled decay (AdamW); decay == 1 for Adam
        g = grad[i] + l2 * param[i]           # L2 decay (Adam); l2 == 0 for AdamW
        mi = beta1 * m[i] + (1.0 - beta1) * g
        vi = beta2 * v[i] + (1.0 - beta2) * g * g
        m[i] = mi
        v[i] = vi
        if amsgrad:
            vi = max(vmax[i], vi)
            vmax[i] = vi
        param[i] = p - step_size * mi / (math.sqrt(vi) / bc2_sqrt + eps)


def _adam_launch(name, param, grad, m, v, vmax, lr, beta1, beta2, eps, l2, decay, amsgrad, step):
    n = param.size
    _check(name, n, grad, m, v, *((vmax,) if amsgrad else ()))
    step_size = lr / (1.0 - beta1 ** step)
    bc2_sqrt = math.sqrt(1.0 - beta2 ** step)
    if n:
        _adam[grid_1d(n)](param, grad, m, v, vmax, beta1, beta2, eps, l2, decay, amsgrad,
                          step_size, bc2_sqrt)


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


@kernel("A1 A1 A1 A1 f f f f")
def _adadelta(param, grad, square_avg, acc_delta, lr, rho, eps, weight_decay):
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        g = grad[i] + weight_decay * param[i]
        sa = rho * square_avg[i] + (1.0 - rho) * g * g
        square_avg[i] = sa
        delta = math.sqrt(acc_delta[i] + eps) / math.sqrt(sa + eps) * g
        acc_delta[i] = rho * acc_delta[i] + (1.0 - rho) * delta * delta
        param[i] -= lr * delta


@launcher
def adadelta_update(param, grad, square_avg, acc_delta, lr, rho, eps, weight_decay):
    """Adadelta (torch): the step is g * sqrt(acc_delta + eps) / sqrt(square_avg + eps), times lr."""
    n = param.size
    _check("adadelta_update", n, grad, square_avg, acc_delta)
    if n:
        _adadelta[grid_1d(n)](param, grad, square_avg, acc_delta, lr, rho, eps, weight_decay)


@kernel("A1 A1 A1 A1 f f f f f f f")
def _nadam(param, grad, m, v, beta1, beta2, eps, weight_decay, bc2, c_grad, c_m):
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        g = grad[i] + weight_decay * param[i]
        mi = beta1 * m[i] + (1.0 - beta1) * g
        vi = beta2 * v[i] + (1.0 - beta2) * g * g
        m[i] = mi
        v[i] = vi
        denom = math.sqrt(vi / bc2) + eps
        p = param[i] + c_grad * g / denom
        param[i] = p + c_m * mi / denom


@launcher
def nadam_update(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, mu, mu_next, mu_product,
                 step):
    """NAdam (torch): ``mu``/``mu_next`` are this and the next step's momentum coefficients and
    ``mu_product`` the product of all of them up to this step (the host keeps that schedule)."""
    n = param.size
    _check("nadam_update", n, grad, m, v)
    bc2 = 1.0 - beta2 ** step
    c_grad = -lr * (1.0 - mu) / (1.0 - mu_product)
    c_m = -lr * mu_next / (1.0 - mu_product * mu_next)
    if n:
        _nadam[grid_1d(n)](param, grad, m, v, beta1, beta2, eps, weight_decay, bc2, c_grad, c_m)


@kernel("A1 A1 A1 A1 f f f f f")
def _adamax(param, grad, m, u, beta1, beta2, eps, weight_decay, clr):
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        g = grad[i] + weight_decay * param[i]
        mi = beta1 * m[i] + (1.0 - beta1) * g
        ui = max(beta2 * u[i], abs(g) + eps)
        m[i] = mi
        u[i] = ui
        param[i] -= clr * mi / ui


@launcher
def adamax_update(param, grad, m, u, lr, beta1, beta2, eps, weight_decay, step):
    """Adamax (torch): u = max(beta2 * u, |g| + eps); param -= lr / (1 - beta1^step) * m / u."""
    n = param.size
    _check("adamax_update", n, grad, m, u)
    if n:
        _adamax[grid_1d(n)](param, grad, m, u, beta1, beta2, eps, weight_decay,
                            lr / (1.0 - beta1 ** step))


@kernel("A1 A1 A1 A1 f f f f f f f f b")
def _radam(param, grad, m, v, beta1, beta2, eps, weight_decay, lr, bc1, bc2_sqrt, rect, rectify):
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        g = grad[i] + weight_decay * param[i]
        mi = beta1 * m[i] + (1.0 - beta1) * g
        vi = beta2 * v[i] + (1.0 - beta2) * g * g
        m[i] = mi
        v[i] = vi
        if rectify:
            param[i] -= mi / bc1 * lr * (bc2_sqrt / (math.sqrt(vi) + eps)) * rect
        else:
            param[i] -= mi / bc1 * lr


def _radam_rect(beta2, step):
    """RAdam's variance rectification: (rect, rectify) with rectify = rho_t > 5."""
    bc2 = 1.0 - beta2 ** step
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    rho_t = rho_inf - 2.0 * step * beta2 ** step / bc2
    if rho_t <= 5.0:
        return 1.0, False
    return math.sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf
                     / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t)), True


@launcher
def radam_update(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step):
    """RAdam (torch): the Adam step times the rectification term once the approximated SMA
    length rho_t exceeds 5, plain bias-corrected momentum SGD before that."""
    n = param.size
    _check("radam_update", n, grad, m, v)
    rect, rectify = _radam_rect(beta2, step)
    if n:
        _radam[grid_1d(n)](param, grad, m, v, beta1, beta2, eps, weight_decay, lr,
                           1.0 - beta1 ** step, math.sqrt(1.0 - beta2 ** step), rect, rectify)


@kernel("A1 A1 A1 A1 A1 f f f f b f f f")
def _adabound(param, grad, m, v, vmax, beta1, beta2, eps, weight_decay, amsbound, step_size, lower,
              upper):
    for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        g = grad[i] + weight_decay * param[i]
        mi = beta1 * m[i] + (1.0 - beta1) * g
        vi = beta2 * v[i] + (1.0 - beta2) * g * g
        m[i] = mi
        v[i] = vi
        if amsbound:
            vi = max(vmax[i], vi)
            vmax[i] = vi
        rate = min(max(step_size / (math.sqrt(vi) + eps), lower), upper)
        param[i] -= rate * mi


@launcher
def adabound_update(param, grad, m, v, vmax, lr, beta1, beta2, eps, weight_decay, final_lr, gamma,
                    amsbound, step):
    """AdaBound / AMSBound (Luo et al. 2019, reference implementation): Adam's per-coordinate
    rate clipped to [final_lr * (1 - 1 / (gamma t + 1)), final_lr * (1 + 1 / (gamma t))]."""
    n = param.size
    _check("adabound_update", n, grad, m, v, *((vmax,) if amsbound else ()))
    step_size = lr * math.sqrt(1.0 - beta2 ** step) / (1.0 - beta1 ** step)
    lower = final_lr * (1.0 - 1.0 / (gamma * step + 1.0))
    upper = final_lr * (1.0 + 1.0 / (gamma * step))
    if n:
        _adabound[grid_1d(n)](param, grad, m, v, vmax, beta1, beta2, eps, weight_decay, amsbound,
                              step_size, lower, upper)


@kernel("A1 A1 f")
def _lookahead(slow, fast, alpha):
    for i in range(cuda.grid(1), slow.size, cuda.gridsize(1)):
        s = slow[i] + alpha * (fast[i] - slow[i])
        slow[i] = s
        fast[i] = s


@launcher
def lookahead_update(slow, fast, alpha):
    """Lookahead's synchronisation (Zhang et al. 2019): slow += alpha * (fast - slow); fast = slow."""
    n = slow.size
    if fast.size != n:
        raise ValueError("lookahead_update: slow and fast differ in size")
    if n:
        _lookahead[grid_1d(n)](slow, fast, alpha)


# ---- vector helpers for L-BFGS ---------------------------------------------------------------------

@kernel("A1 A1 A1 d1 n1")
def _dot(x, y, out, partials, count):
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


@kernel("f A1 A1")
def _axpy(a, x, y):
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        y[i] += a * x[i]


@launcher
def axpy(a, x, y):
    """y += a * x, in place."""
    if y.size != x.size:
        raise ValueError("axpy: x and y differ in size")
    if x.size:
        _axpy[grid_1d(x.size)](a, x, y)


@kernel("A1 A1 d1 n1")
def _abs_sum(x, out, partials, count):
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


@kernel("A1 A1 d1 n1")
def _abs_max(x, out, partials, count):
    """Each block stores its maximum in ``partials``; the last block to finish (atomic ticket)
    takes the maximum of those and resets ``count`` (as _common.grid_sum_store does for sums)."""
    sh = cuda.shared.array(MAX_THREADS, np.float64)
    flag = cuda.shared.array(1, np.int32)
    acc = 0.0
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        acc = _larger(acc, abs(np.float64(x[i])))
    m = _block_max(sh, acc)
    t = cuda.threadIdx.x
    nb = cuda.gridDim.x
    if t == 0:
        partials[cuda.blockIdx.x] = m
        cuda.threadfence()
        ticket = cuda.atomic.add(count, 0, 1)
        flag[0] = 1 if ticket == nb - 1 else 0
    cuda.syncthreads()
    if flag[0] == 1:
        cuda.threadfence()
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
