"""Optimizer updates on the GPU: one grid-stride launch updates a whole flat parameter buffer and
its state in place (PyTorch torch.optim formulas, as kernels/cpu/optim.py).

Per-call constants (Adam's bias corrections, AdamW's decay factor) are computed on the host.
State buffers a configuration does not use are never touched and may be empty; buffer sizes are
checked on the host (ValueError, as on the CPU).
"""
import math

from numba import cuda

from ._common import grid_1d, kernel, launcher


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
