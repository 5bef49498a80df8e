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

Each kernel runs the inlined per-element update in a serial loop for small buffers and a
``prange`` loop for large ones. ``error_model="numpy"`` drops Python's division-by-zero check,
which otherwise keeps LLVM from vectorizing the loop (measured 4x slower for Adam).
``cache=True`` does not notice edits to ``scalar.py``: delete the numba cache after changing it.
"""
import numpy as np
from numba import njit, prange

from .. import scalar

_FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
_OPTS = dict(cache=True, parallel=True, fastmath=_FASTMATH, error_model="numpy")
_INLINE = dict(inline="always", fastmath=_FASTMATH, error_model="numpy")

# Elements at or above which the prange path runs. Measured on the 2-core machine with both cores
# free, 1e6 float32 params: Adam 0.91 -> 0.45 ms, SGD+Nesterov 0.42 -> 0.18 ms, centered RMSprop
# with momentum 0.99 -> 0.47 ms (serial -> 2 threads). At 2**15 the gain is 1.0-1.8x (~10 us) and at
# 2**13 the thread start-up makes it slower; 2**16 keeps a margin.
_PAR_MIN = 1 << 16

_sgd_at = njit(**_INLINE)(scalar.sgd_at)
_adagrad_at = njit(**_INLINE)(scalar.adagrad_at)
_rmsprop_at = njit(**_INLINE)(scalar.rmsprop_at)
_adam_at, _adam_constants = njit(**_INLINE)(scalar.adam_at), njit(**_INLINE)(scalar.adam_constants)
_adadelta_at = njit(**_INLINE)(scalar.adadelta_at)
_nadam_at, _nadam_constants = (njit(**_INLINE)(scalar.nadam_at),
                               njit(**_INLINE)(scalar.nadam_constants))
_adamax_at, _adamax_constants = (njit(**_INLINE)(scalar.adamax_at),
                                 njit(**_INLINE)(scalar.adamax_constants))
# RAdam's constants compiled apart, without fastmath (reassociated, rect moves by an ulp)
_radam_at, _radam_constants = (njit(**_INLINE)(scalar.radam_at),
                               njit(cache=True)(scalar.radam_constants))
_adabound_at, _adabound_constants = (njit(**_INLINE)(scalar.adabound_at),
                                     njit(**_INLINE)(scalar.adabound_constants))
_lion_at = njit(**_INLINE)(scalar.lion_at)
_lookahead_at = njit(**_INLINE)(scalar.lookahead_at)


@njit(**_OPTS)
def sgd_update(param, grad, velocity, lr, momentum, weight_decay, nesterov):
    """SGD with momentum (dampening 0), optional Nesterov and L2 weight decay, in place."""
    n = param.size
    if grad.size != n or (momentum != 0.0 and velocity.size != n):
        raise ValueError("sgd_update: buffer sizes differ from param")
    if n < _PAR_MIN:
        for i in range(n):
            _sgd_at(i, param, grad, velocity, lr, momentum, weight_decay, nesterov)
    else:
        for i in prange(n):
            _sgd_at(i, param, grad, velocity, lr, momentum, weight_decay, nesterov)


@njit(**_OPTS)
def adagrad_update(param, grad, accum, lr, eps, weight_decay):
    """Adagrad (no learning-rate decay): accum += g^2; param -= lr * g / (sqrt(accum) + eps)."""
    n = param.size
    if grad.size != n or accum.size != n:
        raise ValueError("adagrad_update: buffer sizes differ from param")
    if n < _PAR_MIN:
        for i in range(n):
            _adagrad_at(i, param, grad, accum, lr, eps, weight_decay)
    else:
        for i in prange(n):
            _adagrad_at(i, param, grad, accum, lr, eps, weight_decay)


@njit(**_OPTS)
def rmsprop_update(param, grad, square_avg, grad_avg, momentum_buf, lr, alpha, eps, weight_decay,
                   momentum, centered):
    """RMSprop (torch): optional centering, momentum and L2 weight decay, eps outside the sqrt."""
    n = param.size
    if (grad.size != n or square_avg.size != n or (centered and grad_avg.size != n)
            or (momentum > 0.0 and momentum_buf.size != n)):
        raise ValueError("rmsprop_update: buffer sizes differ from param")
    if n < _PAR_MIN:
        for i in range(n):
            _rmsprop_at(i, param, grad, square_avg, grad_avg, momentum_buf, lr, alpha, eps,
                        weight_decay, momentum, centered)
    else:
        for i in prange(n):
            _rmsprop_at(i, param, grad, square_avg, grad_avg, momentum_buf, lr, alpha, eps,
                        weight_decay, momentum, centered)


@njit(**_OPTS)
def _adam_loop(param, grad, m, v, vmax, lr, beta1, beta2, eps, l2, decay, amsgrad, step):
    """Shared body of adam_update/adamw_update; bias corrections computed once per call."""
    n = param.size
    if grad.size != n or m.size != n or v.size != n or (amsgrad and vmax.size != n):
        raise ValueError("adam_update/adamw_update: buffer sizes differ from param")
    step_size, bc2_sqrt = _adam_constants(lr, beta1, beta2, step)
    if n < _PAR_MIN:
        for i in range(n):
            _adam_at(i, param, grad, m, v, vmax, beta1, beta2, eps, l2, decay, amsgrad,
                     step_size, bc2_sqrt)
    else:
        for i in prange(n):
            _adam_at(i, param, grad, m, v, vmax, beta1, beta2, eps, l2, decay, amsgrad,
                     step_size, bc2_sqrt)


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


@njit(**_OPTS)
def adadelta_update(param, grad, square_avg, acc_delta, lr, rho, eps, weight_decay):
    """Adadelta (torch): the step is g * sqrt(acc_delta + eps) / sqrt(square_avg + eps), times lr."""
    n = param.size
    if grad.size != n or square_avg.size != n or acc_delta.size != n:
        raise ValueError("adadelta_update: buffer sizes differ from param")
    if n < _PAR_MIN:
        for i in range(n):
            _adadelta_at(i, param, grad, square_avg, acc_delta, lr, rho, eps, weight_decay)
    else:
        for i in prange(n):
            _adadelta_at(i, param, grad, square_avg, acc_delta, lr, rho, eps, weight_decay)


@njit(**_OPTS)
def nadam_update(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, mu, mu_next, mu_product,
                 step):
    """NAdam (torch): ``mu``/``mu_next`` are this and the next step's momentum coefficients and
    ``mu_product`` the product of all of them up to this step (the host keeps that schedule)."""
    n = param.size
    if grad.size != n or m.size != n or v.size != n:
        raise ValueError("nadam_update: buffer sizes differ from param")
    bc2, c_grad, c_m = _nadam_constants(lr, beta2, mu, mu_next, mu_product, step)
    if n < _PAR_MIN:
        for i in range(n):
            _nadam_at(i, param, grad, m, v, beta1, beta2, eps, weight_decay, bc2, c_grad, c_m)
    else:
        for i in prange(n):
            _nadam_at(i, param, grad, m, v, beta1, beta2, eps, weight_decay, bc2, c_grad, c_m)


@njit(**_OPTS)
def adamax_update(param, grad, m, u, lr, beta1, beta2, eps, weight_decay, step):
    """Adamax (torch): u = max(beta2 * u, |g| + eps); param -= lr / (1 - beta1^step) * m / u."""
    n = param.size
    if grad.size != n or m.size != n or u.size != n:
        raise ValueError("adamax_update: buffer sizes differ from param")
    clr = _adamax_constants(lr, beta1, step)
    if n < _PAR_MIN:
        for i in range(n):
            _adamax_at(i, param, grad, m, u, beta1, beta2, eps, weight_decay, clr)
    else:
        for i in prange(n):
            _adamax_at(i, param, grad, m, u, beta1, beta2, eps, weight_decay, clr)


@njit(**_OPTS)
def radam_update(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step):
    """RAdam (torch): the Adam step times the rectification term once the approximated SMA
    length rho_t exceeds 5, plain bias-corrected momentum SGD before that."""
    n = param.size
    if grad.size != n or m.size != n or v.size != n:
        raise ValueError("radam_update: buffer sizes differ from param")
    bc1, bc2_sqrt, rect, rectify = _radam_constants(beta1, beta2, step)
    if n < _PAR_MIN:
        for i in range(n):
            _radam_at(i, param, grad, m, v, beta1, beta2, eps, weight_decay, lr, bc1, bc2_sqrt,
                      rect, rectify)
    else:
        for i in prange(n):
            _radam_at(i, param, grad, m, v, beta1, beta2, eps, weight_decay, lr, bc1, bc2_sqrt,
                      rect, rectify)


@njit(**_OPTS)
def adabound_update(param, grad, m, v, vmax, lr, beta1, beta2, eps, weight_decay, final_lr, gamma,
                    amsbound, step):
    """AdaBound / AMSBound (Luo et al. 2019, reference implementation): Adam's per-coordinate
    rate lr * sqrt(1 - beta2^t) / (1 - beta1^t) / (sqrt(v) + eps) clipped to
    [final_lr * (1 - 1 / (gamma t + 1)), final_lr * (1 + 1 / (gamma t))], times m. ``amsbound``
    uses the running maximum of v (``vmax``), as AMSGrad."""
    n = param.size
    if grad.size != n or m.size != n or v.size != n or (amsbound and vmax.size != n):
        raise ValueError("adabound_update: buffer sizes differ from param")
    step_size, lower, upper = _adabound_constants(lr, beta1, beta2, final_lr, gamma, step)
    if n < _PAR_MIN:
        for i in range(n):
            _adabound_at(i, param, grad, m, v, vmax, beta1, beta2, eps, weight_decay, amsbound,
                         step_size, lower, upper)
    else:
        for i in prange(n):
            _adabound_at(i, param, grad, m, v, vmax, beta1, beta2, eps, weight_decay, amsbound,
                         step_size, lower, upper)


@njit(**_OPTS)
def lion_update(param, grad, m, lr, beta1, beta2, weight_decay):
    """Lion (Chen et al. 2023) with decoupled weight decay, in place (kernels/scalar.py lion_at)."""
    n = param.size
    if grad.size != n or m.size != n:
        raise ValueError("lion_update: buffer sizes differ from param")
    if n < _PAR_MIN:
        for i in range(n):
            _lion_at(i, param, grad, m, lr, beta1, beta2, weight_decay)
    else:
        for i in prange(n):
            _lion_at(i, param, grad, m, lr, beta1, beta2, weight_decay)


@njit(**_OPTS)
def lookahead_update(slow, fast, alpha):
    """Lookahead's synchronisation (Zhang et al. 2019): slow += alpha * (fast - slow); fast = slow."""
    n = slow.size
    if fast.size != n:
        raise ValueError("lookahead_update: slow and fast differ in size")
    if n < _PAR_MIN:
        for i in range(n):
            _lookahead_at(i, slow, fast, alpha)
    else:
        for i in prange(n):
            _lookahead_at(i, slow, fast, alpha)


# ---- vector helpers for L-BFGS (two-loop recursion, line search) on flat buffers -----------------
# Reductions accumulate in float64; reassociation (fastmath) lets the sums vectorize.

@njit(**_OPTS)
def dot(x, y, out):
    """out[0] = sum(x * y), accumulated in float64."""
    n = x.size
    if y.size != n:
        raise ValueError("dot: x and y differ in size")
    total = 0.0
    if n < _PAR_MIN:
        for i in range(n):
            total += np.float64(x[i]) * np.float64(y[i])
    else:
        for i in prange(n):
            total += np.float64(x[i]) * np.float64(y[i])
    out[0] = total


@njit(**_OPTS)
def axpy(a, x, y):
    """y += a * x, in place."""
    n = x.size
    if y.size != n:
        raise ValueError("axpy: x and y differ in size")
    if n < _PAR_MIN:
        for i in range(n):
            y[i] += a * x[i]
    else:
        for i in prange(n):
            y[i] += a * x[i]


@njit(**_OPTS)
def abs_sum(x, out):
    """out[0] = sum(|x|) (the L1 norm), accumulated in float64."""
    n = x.size
    total = 0.0
    if n < _PAR_MIN:
        for i in range(n):
            total += abs(np.float64(x[i]))
    else:
        for i in prange(n):
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


@njit(cache=True, parallel=True, error_model="numpy")
def abs_max(x, out):
    """out[0] = max(|x|) (the infinity norm; 0 for an empty x); a NaN in x gives NaN."""
    n = x.size
    if n < _PAR_MIN:
        out[0] = _abs_max_range(x, 0, n)
        return
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
