"""Loss kernels on the GPU with per-sample weights: the same names, arguments and semantics as
kernels/cpu/losses.py (``out[0] = sum_i weights[i] * l_i / N``; gradients of that, ``grad`` may
alias ``y_pred``), per-element maths from kernels/scalar.py. Every call is one launch:

* elementwise losses: a grid-stride loop over the flat arrays (sample index ``i // D`` picks the
  weight); the forward accumulates float64 per thread and ends in a deterministic grid reduction
  (``_common.grid_sum_store``: block sums, then the last block adds the partials in order).
* row losses (crossentropies, categorical focal, Dice / Jaccard / Tversky, contrastive, triplet):
  ``lanes`` threads per row with shared-memory row reductions (row sums, row max, log-sum-exp,
  distances), the forward again ending in the grid reduction.

Sparse labels outside [0, classes) give a NaN loss and NaN gradient rows (the CPU kernels raise;
a GPU kernel cannot without a synchronizing read-back).
"""
import math

import numpy as np
from numba import cuda

from .. import scalar
from ._common import (MAX_THREADS, ROW_LANES, ROW_ROWS, Kernel, device, flat, grid_1d,
                      grid_rows, grid_sum_store, reduction_args, row_max, row_sum)

_log_clipped = device(scalar.log_clipped)
_neg_log_clipped_grad = device(scalar.neg_log_clipped_grad)
_cfocal = device(scalar.categorical_focal)
_cfocal_grad = device(scalar.categorical_focal_grad)
_cfocal_logits = device(scalar.categorical_focal_logits)
_cfocal_logits_grad = device(scalar.categorical_focal_logits_grad)
_tversky_score = device(scalar.tversky_score)
_tversky_score_grad = device(scalar.tversky_score_grad)
_contrastive = device(scalar.contrastive)
_contrastive_grad = device(scalar.contrastive_grad)
_pnorm_power = device(scalar.pnorm_power)
_pnorm_root = device(scalar.pnorm_root)
_pnorm_grad = device(scalar.pnorm_grad)


def _inv(n):
    return 1.0 / n if n else math.nan


# ------------------------------------------------------------------------------- elementwise losses
def _uniform(f, nparams):
    """``f(t, p, *params[:nparams])`` as a device function of (t, p, a, b, c, e)."""
    f = device(f)
    if nparams == 0:
        def g(t, p, a, b, c, e):
            return f(t, p)
    elif nparams == 1:
        def g(t, p, a, b, c, e):
            return f(t, p, a)
    elif nparams == 3:
        def g(t, p, a, b, c, e):
            return f(t, p, a, b, c)
    else:
        def g(t, p, a, b, c, e):
            return f(t, p, a, b, c, e)
    return device(g)


def _pointwise(name, f, f_grad, nparams):
    """(forward, backward) Kernels of a loss whose per-sample value is a sum of element terms."""
    term, dterm = _uniform(f, nparams), _uniform(f_grad, nparams)

    def fwd(t, p, a, b, c, e, w, d, scale, out, partials, count):
        sh = cuda.shared.array(MAX_THREADS, np.float64)
        flag = cuda.shared.array(1, np.int32)
        acc = 0.0
        for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
            acc += w[i // d] * term(t[i], p[i], a, b, c, e)
        grid_sum_store(sh, flag, acc, partials, count, out, scale)

    def bwd(t, p, a, b, c, e, w, d, scale, grad):
        for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
            grad[i] = dterm(t[i], p[i], a, b, c, e) * (w[i // d] * scale)

    kf, kb = cuda.jit(fwd), cuda.jit(bwd)
    return (Kernel(f"losses._{name}_forward", "A1 A1 f f f f A1 i f A1 d1 n1", lambda dtype: kf),
            Kernel(f"losses._{name}_backward", "A1 A1 f f f f A1 i f A1", lambda dtype: kb))


_P = {name: _pointwise(name, f, g, nparams)
      for name, f, g, nparams in (
          ("mse", scalar.squared_error, scalar.squared_error_grad, 0),
          ("mae", scalar.absolute_error, scalar.absolute_error_grad, 0),
          ("huber", scalar.huber, scalar.huber_grad, 1),
          ("log_cosh", scalar.log_cosh, scalar.log_cosh_grad, 0),
          ("msle", scalar.squared_log_error, scalar.squared_log_error_grad, 1),
          ("poisson", scalar.poisson, scalar.poisson_grad, 1),
          ("hinge", scalar.hinge, scalar.hinge_grad, 0),
          ("squared_hinge", scalar.squared_hinge, scalar.squared_hinge_grad, 0),
          ("kld", scalar.kl_divergence, scalar.kl_divergence_grad, 1),
          ("bce", scalar.binary_crossentropy, scalar.binary_crossentropy_grad, 1),
          ("bce_logits", scalar.binary_crossentropy_logits,
           scalar.binary_crossentropy_logits_grad, 0),
          ("bfocal", scalar.binary_focal, scalar.binary_focal_grad, 4),
          ("bfocal_logits", scalar.binary_focal_logits, scalar.binary_focal_logits_grad, 3))}


def _pw_launch(which, name, y_true, y_pred, params, weights, per_element, res):
    """Launch the forward (which=0, res = out) or backward (which=1, res = grad) of a pointwise
    loss; ``per_element``: l_i is the mean over the sample's elements (else their sum)."""
    p = flat(y_pred)
    n = y_pred.shape[0]
    d = p.size // n if n else 1
    scale = _inv(n * d) if per_element else _inv(n)
    a, b, c, e = (tuple(params) + (0.0, 0.0, 0.0, 0.0))[:4]
    grid = grid_1d(p.size)
    if which == 0:
        _P[name][0][grid](flat(y_true), p, a, b, c, e, weights, max(d, 1), scale, res,
                          *reduction_args("losses", grid[0]))
    elif p.size:
        _P[name][1][grid](flat(y_true), p, a, b, c, e, weights, max(d, 1), scale, flat(res))


def mse_forward(y_true, y_pred, weights, out):
    """out[0] = sum_i w_i mean_d (p - t)^2 / N."""
    _pw_launch(0, "mse", y_true, y_pred, (), weights, True, out)


def mse_backward(y_true, y_pred, weights, grad):
    """grad = 2 w_i (p - t) / (N D)."""
    _pw_launch(1, "mse", y_true, y_pred, (), weights, True, grad)


def mae_forward(y_true, y_pred, weights, out):
    """out[0] = sum_i w_i mean_d |p - t| / N."""
    _pw_launch(0, "mae", y_true, y_pred, (), weights, True, out)


def mae_backward(y_true, y_pred, weights, grad):
    """grad = w_i sign(p - t) / (N D), 0 where they are equal."""
    _pw_launch(1, "mae", y_true, y_pred, (), weights, True, grad)


def huber_forward(y_true, y_pred, delta, weights, out):
    """out[0] = sum_i w_i mean_d huber(p - t; delta) / N."""
    _pw_launch(0, "huber", y_true, y_pred, (delta,), weights, True, out)


def huber_backward(y_true, y_pred, delta, weights, grad):
    """grad = w_i clip(p - t, -delta, delta) / (N D)."""
    _pw_launch(1, "huber", y_true, y_pred, (delta,), weights, True, grad)


def log_cosh_forward(y_true, y_pred, weights, out):
    """out[0] = sum_i w_i mean_d log(cosh(p - t)) / N."""
    _pw_launch(0, "log_cosh", y_true, y_pred, (), weights, True, out)


def log_cosh_backward(y_true, y_pred, weights, grad):
    """grad = w_i tanh(p - t) / (N D)."""
    _pw_launch(1, "log_cosh", y_true, y_pred, (), weights, True, grad)


def msle_forward(y_true, y_pred, eps, weights, out):
    """out[0] = sum_i w_i mean_d (log1p(max(p, eps)) - log1p(max(t, eps)))^2 / N."""
    _pw_launch(0, "msle", y_true, y_pred, (eps,), weights, True, out)


def msle_backward(y_true, y_pred, eps, weights, grad):
    """Gradient of msle_forward (0 where p < eps)."""
    _pw_launch(1, "msle", y_true, y_pred, (eps,), weights, True, grad)


def poisson_forward(y_true, y_pred, eps, weights, out):
    """out[0] = sum_i w_i mean_d (p - t log(p + eps)) / N (Keras' Poisson)."""
    _pw_launch(0, "poisson", y_true, y_pred, (eps,), weights, True, out)


def poisson_backward(y_true, y_pred, eps, weights, grad):
    """grad = w_i (1 - t / (p + eps)) / (N D)."""
    _pw_launch(1, "poisson", y_true, y_pred, (eps,), weights, True, grad)


def hinge_forward(y_true, y_pred, weights, out):
    """out[0] = sum_i w_i mean_d max(1 - t p, 0) / N (targets -1/1)."""
    _pw_launch(0, "hinge", y_true, y_pred, (), weights, True, out)


def hinge_backward(y_true, y_pred, weights, grad):
    """grad = -w_i t / (N D) where 1 - t p > 0, else 0."""
    _pw_launch(1, "hinge", y_true, y_pred, (), weights, True, grad)


def squared_hinge_forward(y_true, y_pred, weights, out):
    """out[0] = sum_i w_i mean_d max(1 - t p, 0)^2 / N."""
    _pw_launch(0, "squared_hinge", y_true, y_pred, (), weights, True, out)


def squared_hinge_backward(y_true, y_pred, weights, grad):
    """grad = -2 w_i t max(1 - t p, 0) / (N D)."""
    _pw_launch(1, "squared_hinge", y_true, y_pred, (), weights, True, grad)


def kl_divergence_forward(y_true, y_pred, eps, weights, out):
    """out[0] = sum_i w_i sum_d tc log(tc / pc) / N (t, p clipped to [eps, 1])."""
    _pw_launch(0, "kld", y_true, y_pred, (eps,), weights, False, out)


def kl_divergence_backward(y_true, y_pred, eps, weights, grad):
    """grad = -w_i tc / (p N) inside [eps, 1], 0 where the clip of p binds."""
    _pw_launch(1, "kld", y_true, y_pred, (eps,), weights, False, grad)


def binary_crossentropy_forward(y_true, y_pred, eps, weights, out):
    """out[0] = sum_i w_i mean_d BCE(t, clip(p, eps, 1 - eps)) / N."""
    _pw_launch(0, "bce", y_true, y_pred, (eps,), weights, True, out)


def binary_crossentropy_backward(y_true, y_pred, eps, weights, grad):
    """Gradient of the clipped BCE (0 where clipping binds), row i times w_i / (N D)."""
    _pw_launch(1, "bce", y_true, y_pred, (eps,), weights, True, grad)


def binary_crossentropy_logits_forward(y_true, logits, weights, out):
    """out[0] = sum_i w_i mean_d BCE of sigmoid(z) / N, stable."""
    _pw_launch(0, "bce_logits", y_true, logits, (), weights, True, out)


def binary_crossentropy_logits_backward(y_true, logits, weights, grad):
    """grad = w_i (sigmoid(z) - t) / (N D)."""
    _pw_launch(1, "bce_logits", y_true, logits, (), weights, True, grad)


def _balance(alpha, apply_class_balancing):
    return (alpha, 1.0 - alpha) if apply_class_balancing else (1.0, 1.0)


def binary_focal_crossentropy_forward(y_true, y_pred, gamma, alpha, apply_class_balancing, eps,
                                      weights, out):
    """Keras BinaryFocalCrossentropy (see the CPU kernel)."""
    _pw_launch(0, "bfocal", y_true, y_pred, (gamma, *_balance(alpha, apply_class_balancing), eps),
               weights, True, out)


def binary_focal_crossentropy_backward(y_true, y_pred, gamma, alpha, apply_class_balancing, eps,
                                       weights, grad):
    """Exact gradient of the forward expression."""
    _pw_launch(1, "bfocal", y_true, y_pred, (gamma, *_balance(alpha, apply_class_balancing), eps),
               weights, True, grad)


def binary_focal_crossentropy_logits_forward(y_true, logits, gamma, alpha, apply_class_balancing,
                                             weights, out):
    """Binary focal crossentropy of sigmoid(z), stable."""
    _pw_launch(0, "bfocal_logits", y_true, logits, (gamma, *_balance(alpha, apply_class_balancing)),
               weights, True, out)


def binary_focal_crossentropy_logits_backward(y_true, logits, gamma, alpha, apply_class_balancing,
                                              weights, grad):
    """d/dz of the logits forward."""
    _pw_launch(1, "bfocal_logits", y_true, logits, (gamma, *_balance(alpha, apply_class_balancing)),
               weights, True, grad)


# --------------------------------------------------------------------------------------- row losses
# Row-wise kernels: block (lanes, rows per block); row r = group * rpb + threadIdx.y, lanes stride
# over the columns. Rows past the end still take part in the row reductions' barriers. Forward
# kernels take ``scale`` (1/N, alpha/N) for the grid reduction, backward ones for the rows.

def _cce_fwd(y_true, y_pred, eps, w, scale, out, partials, count):
    sh = cuda.shared.array((ROW_ROWS, ROW_LANES), np.float64)
    shb = cuda.shared.array(MAX_THREADS, np.float64)
    flag = cuda.shared.array(1, np.int32)
    rows, cols = y_pred.shape
    tx, lanes, rpb = cuda.threadIdx.x, cuda.blockDim.x, cuda.blockDim.y
    acc = 0.0
    for g in range(cuda.blockIdx.x, (rows + rpb - 1) // rpb, cuda.gridDim.x):
        r = g * rpb + cuda.threadIdx.y
        live = r < rows
        s = 0.0
        if live:
            for j in range(tx, cols, lanes):
                s += y_pred[r, j]
        s = row_sum(sh, s)
        if live:
            inv_s = 1.0 / s
            part = 0.0
            for j in range(tx, cols, lanes):
                part -= y_true[r, j] * _log_clipped(y_pred[r, j] * inv_s, eps)
            acc += w[r] * part
    grid_sum_store(shb, flag, acc, partials, count, out, scale)


def _cce_bwd(y_true, y_pred, eps, w, scale, grad):
    sh = cuda.shared.array((ROW_ROWS, ROW_LANES), np.float64)
    rows, cols = y_pred.shape
    tx, lanes, rpb = cuda.threadIdx.x, cuda.blockDim.x, cuda.blockDim.y
    for g in range(cuda.blockIdx.x, (rows + rpb - 1) // rpb, cuda.gridDim.x):
        r = g * rpb + cuda.threadIdx.y
        live = r < rows
        s = 0.0
        if live:
            for j in range(tx, cols, lanes):
                s += y_pred[r, j]
        s = row_sum(sh, s)
        inv_s = 1.0 / s if live else 0.0
        dot = 0.0
        if live:
            for j in range(tx, cols, lanes):
                pj = y_pred[r, j] * inv_s
                dot += y_true[r, j] * _neg_log_clipped_grad(pj, eps) * pj
        dot = row_sum(sh, dot)
        if live:
            k = inv_s * scale * w[r]
            for j in range(tx, cols, lanes):
                a = y_true[r, j] * _neg_log_clipped_grad(y_pred[r, j] * inv_s, eps)
                grad[r, j] = (a - dot) * k


def _cce_logits_fwd(y_true, z, w, scale, out, partials, count):
    sh = cuda.shared.array((ROW_ROWS, ROW_LANES), np.float64)
    shb = cuda.shared.array(MAX_THREADS, np.float64)
    flag = cuda.shared.array(1, np.int32)
    rows, cols = z.shape
    tx, lanes, rpb = cuda.threadIdx.x, cuda.blockDim.x, cuda.blockDim.y
    acc = 0.0
    for g in range(cuda.blockIdx.x, (rows + rpb - 1) // rpb, cuda.gridDim.x):
        r = g * rpb + cuda.threadIdx.y
        live = r < rows
        m = -math.inf
        if live:
            for j in range(tx, cols, lanes):
                v = z[r, j]
                if v > m or v != v:
                    m = v
        m = row_max(sh, m)
        se = 0.0
        if live:
            for j in range(tx, cols, lanes):
                se += math.exp(z[r, j] - m)
        se = row_sum(sh, se)
        if live:
            lse = m + math.log(se)
            part = 0.0
            for j in range(tx, cols, lanes):
                part += y_true[r, j] * (lse - z[r, j])
            acc += w[r] * part
    grid_sum_store(shb, flag, acc, partials, count, out, scale)


def _cce_logits_bwd(y_true, z, w, scale, grad):
    sh = cuda.shared.array((ROW_ROWS, ROW_LANES), np.float64)
    rows, cols = z.shape
    tx, lanes, rpb = cuda.threadIdx.x, cuda.blockDim.x, cuda.blockDim.y
    for g in range(cuda.blockIdx.x, (rows + rpb - 1) // rpb, cuda.gridDim.x):
        r = g * rpb + cuda.threadIdx.y
        live = r < rows
        m = -math.inf
        st = 0.0
        if live:
            for j in range(tx, cols, lanes):
                v = z[r, j]
                if v > m or v != v:
                    m = v
                st += y_true[r, j]
        m = row_max(sh, m)
        st = row_sum(sh, st)
        se = 0.0
        if live:
            for j in range(tx, cols, lanes):
                se += math.exp(z[r, j] - m)
        se = row_sum(sh, se)
        if live:
            k = scale * w[r]
            q = st / se
            for j in range(tx, cols, lanes):
                grad[r, j] = (math.exp(z[r, j] - m) * q - y_true[r, j]) * k


def _sparse_fwd(labels, y_pred, eps, w, scale, out, partials, count):
    sh = cuda.shared.array((ROW_ROWS, ROW_LANES), np.float64)
    shb = cuda.shared.array(MAX_THREADS, np.float64)
    flag = cuda.shared.array(1, np.int32)
    rows, cols = y_pred.shape
    tx, lanes, rpb = cuda.threadIdx.x, cuda.blockDim.x, cuda.blockDim.y
    acc = 0.0
    for g in range(cuda.blockIdx.x, (rows + rpb - 1) // rpb, cuda.gridDim.x):
        r = g * rpb + cuda.threadIdx.y
        live = r < rows
        s = 0.0
        if live:
            for j in range(tx, cols, lanes):
                s += y_pred[r, j]
        s = row_sum(sh, s)
        if live and tx == 0:
            lab = labels[r]
            if lab >= 0 and lab < cols:
                acc -= w[r] * _log_clipped(y_pred[r, lab] / s, eps)
            else:
                acc += math.nan
    grid_sum_store(shb, flag, acc, partials, count, out, scale)


def _sparse_bwd(labels, y_pred, eps, w, scale, grad):
    sh = cuda.shared.array((ROW_ROWS, ROW_LANES), np.float64)
    rows, cols = y_pred.shape
    tx, lanes, rpb = cuda.threadIdx.x, cuda.blockDim.x, cuda.blockDim.y
    for g in range(cuda.blockIdx.x, (rows + rpb - 1) // rpb, cuda.gridDim.x):
        r = g * rpb + cuda.threadIdx.y
        live = r < rows
        s = 0.0
        lab = -1
        pl = math.nan
        if live:
            lab = labels[r]
            if lab >= 0 and lab < cols:
                pl = float(y_pred[r, lab])      # read before the barrier: grad may alias y_pred
            for j in range(tx, cols, lanes):
                s += y_pred[r, j]
        s = row_sum(sh, s)
        if live:
            inv_s = 1.0 / s
            pl = pl * inv_s
            a = _neg_log_clipped_grad(pl, eps)
            k = inv_s * scale * w[r]
            for j in range(tx, cols, lanes):
                grad[r, j] = (a - a * pl) * k if j == lab else -a * pl * k


def _sparse_logits_fwd(labels, z, w, scale, out, partials, count):
    sh = cuda.shared.array((ROW_ROWS, ROW_LANES), np.float64)
    shb = cuda.shared.array(MAX_THREADS, np.float64)
    flag = cuda.shared.array(1, np.int32)
    rows, cols = z.shape
    tx, lanes, rpb = cuda.threadIdx.x, cuda.blockDim.x, cuda.blockDim.y
    acc = 0.0
    for g in range(cuda.blockIdx.x, (rows + rpb - 1) // rpb, cuda.gridDim.x):
        r = g * rpb + cuda.threadIdx.y
        live = r < rows
        m = -math.inf
        if live:
            for j in range(tx, cols, lanes):
                v = z[r, j]
                if v > m or v != v:
                    m = v
        m = row_max(sh, m)
        se = 0.0
        if live:
            for j in range(tx, cols, lanes):
                se += math.exp(z[r, j] - m)
        se = row_sum(sh, se)
        if live and tx == 0:
            lab = labels[r]
            if lab >= 0 and lab < cols:
                acc += w[r] * (m + math.log(se) - z[r, lab])
            else:
                acc += math.nan
    grid_sum_store(shb, flag, acc, partials, count, out, scale)


def _sparse_logits_bwd(labels, z, w, scale, grad):
    sh = cuda.shared.array((ROW_ROWS, ROW_LANES), np.float64)
    rows, cols = z.shape
    tx, lanes, rpb = cuda.threadIdx.x, cuda.blockDim.x, cuda.blockDim.y
    for g in range(cuda.blockIdx.x, (rows + rpb - 1) // rpb, cuda.gridDim.x):
        r = g * rpb + cuda.threadIdx.y
        live = r < rows
        m = -math.inf
        lab = -1
        if live:
            lab = labels[r]
            for j in range(tx, cols, lanes):
                v = z[r, j]
                if v > m or v != v:
                    m = v
        m = row_max(sh, m)
        se = 0.0
        if live:
            for j in range(tx, cols, lanes):
                se += math.exp(z[r, j] - m)
        se = row_sum(sh, se)
        if live:
            kw = scale * w[r]
            k = kw / se
            bad = lab < 0 or lab >= cols
            for j in range(tx, cols, lanes):
                v = math.exp(z[r, j] - m) * k
                if j == lab:
                    v -= kw
                grad[r, j] = math.nan if bad else v


def _cfocal_fwd(y_true, y_pred, gamma, eps, w, scale, out, partials, count):
    sh = cuda.shared.array((ROW_ROWS, ROW_LANES), np.float64)
    shb = cuda.shared.array(MAX_THREADS, np.float64)
    flag = cuda.shared.array(1, np.int32)
    rows, cols = y_pred.shape
    tx, lanes, rpb = cuda.threadIdx.x, cuda.blockDim.x, cuda.blockDim.y
    acc = 0.0
    for g in range(cuda.blockIdx.x, (rows + rpb - 1) // rpb, cuda.gridDim.x):
        r = g * rpb + cuda.threadIdx.y
        live = r < rows
        s = 0.0
        if live:
            for j in range(tx, cols, lanes):
                s += y_pred[r, j]
        s = row_sum(sh, s)
        if live:
            inv_s = 1.0 / s
            part = 0.0
            for j in range(tx, cols, lanes):
                part += _cfocal(y_true[r, j], y_pred[r, j] * inv_s, gamma, eps)
            acc += w[r] * part
    grid_sum_store(shb, flag, acc, partials, count, out, scale)


def _cfocal_bwd(y_true, y_pred, gamma, eps, w, scale, grad):
    sh = cuda.shared.array((ROW_ROWS, ROW_LANES), np.float64)
    rows, cols = y_pred.shape
    tx, lanes, rpb = cuda.threadIdx.x, cuda.blockDim.x, cuda.blockDim.y
    for g in range(cuda.blockIdx.x, (rows + rpb - 1) // rpb, cuda.gridDim.x):
        r = g * rpb + cuda.threadIdx.y
        live = r < rows
        s = 0.0
        if live:
            for j in range(tx, cols, lanes):
                s += y_pred[r, j]
        s = row_sum(sh, s)
        inv_s = 1.0 / s if live else 0.0
        dot = 0.0
        if live:
            for j in range(tx, cols, lanes):
                pj = y_pred[r, j] * inv_s
                dot += _cfocal_grad(y_true[r, j], pj, gamma, eps) * pj
        dot = row_sum(sh, dot)
        if live:
            k = inv_s * scale * w[r]
            for j in range(tx, cols, lanes):
                a = _cfocal_grad(y_true[r, j], y_pred[r, j] * inv_s, gamma, eps)
                grad[r, j] = (a - dot) * k


def _row_lse(sh, z, r, live):
    """log-sum-exp of row r of z, to every lane of the row (all threads of the block call it)."""
    tx, lanes = cuda.threadIdx.x, cuda.blockDim.x
    m = -math.inf
    if live:
        for j in range(tx, z.shape[1], lanes):
            v = z[r, j]
            if v > m or v != v:
                m = v
    m = row_max(sh, m)
    se = 0.0
    if live:
        for j in range(tx, z.shape[1], lanes):
            se += math.exp(z[r, j] - m)
    se = row_sum(sh, se)
    return m + math.log(se) if live else 0.0


_row_lse = cuda.jit(device=True)(_row_lse)


def _cfocal_logits_fwd(y_true, z, gamma, w, scale, out, partials, count):
    sh = cuda.shared.array((ROW_ROWS, ROW_LANES), np.float64)
    shb = cuda.shared.array(MAX_THREADS, np.float64)
    flag = cuda.shared.array(1, np.int32)
    rows, cols = z.shape
    tx, lanes, rpb = cuda.threadIdx.x, cuda.blockDim.x, cuda.blockDim.y
    acc = 0.0
    for g in range(cuda.blockIdx.x, (rows + rpb - 1) // rpb, cuda.gridDim.x):
        r = g * rpb + cuda.threadIdx.y
        live = r < rows
        lse = _row_lse(sh, z, r, live)
        if live:
            part = 0.0
            for j in range(tx, cols, lanes):
                part += _cfocal_logits(y_true[r, j], z[r, j] - lse, gamma)
            acc += w[r] * part
    grid_sum_store(shb, flag, acc, partials, count, out, scale)


def _cfocal_logits_bwd(y_true, z, gamma, w, scale, grad):
    sh = cuda.shared.array((ROW_ROWS, ROW_LANES), np.float64)
    rows, cols = z.shape
    tx, lanes, rpb = cuda.threadIdx.x, cuda.blockDim.x, cuda.blockDim.y
    for g in range(cuda.blockIdx.x, (rows + rpb - 1) // rpb, cuda.gridDim.x):
        r = g * rpb + cuda.threadIdx.y
        live = r < rows
        lse = _row_lse(sh, z, r, live)
        sb = 0.0
        if live:
            for j in range(tx, cols, lanes):
                sb += _cfocal_logits_grad(y_true[r, j], z[r, j] - lse, gamma)
        sb = row_sum(sh, sb)
        if live:
            k = scale * w[r]
            for j in range(tx, cols, lanes):
                lq = z[r, j] - lse
                grad[r, j] = (_cfocal_logits_grad(y_true[r, j], lq, gamma) - math.exp(lq) * sb) * k


def _overlap_sums(sh, t, p, r, live):
    """(sum t p, sum t, sum p) of row r, to every lane of the row."""
    tx, lanes = cuda.threadIdx.x, cuda.blockDim.x
    a = 0.0
    b = 0.0
    c = 0.0
    if live:
        for j in range(tx, p.shape[1], lanes):
            tj = t[r, j]
            pj = p[r, j]
            a += tj * pj
            b += tj
            c += pj
    return row_sum(sh, a), row_sum(sh, b), row_sum(sh, c)


_overlap_sums = cuda.jit(device=True)(_overlap_sums)


def _overlap_fwd(t, p, k, m, wc, wb, smooth, w, scale, out, partials, count):
    sh = cuda.shared.array((ROW_ROWS, ROW_LANES), np.float64)
    shb = cuda.shared.array(MAX_THREADS, np.float64)
    flag = cuda.shared.array(1, np.int32)
    rows = p.shape[0]
    rpb = cuda.blockDim.y
    acc = 0.0
    for g in range(cuda.blockIdx.x, (rows + rpb - 1) // rpb, cuda.gridDim.x):
        r = g * rpb + cuda.threadIdx.y
        live = r < rows
        a, b, c = _overlap_sums(sh, t, p, r, live)
        if live and cuda.threadIdx.x == 0:
            acc += w[r] * (1.0 - _tversky_score(a, b, c, k, m, wc, wb, smooth))
    grid_sum_store(shb, flag, acc, partials, count, out, scale)


def _overlap_bwd(t, p, k, m, wc, wb, smooth, w, scale, grad):
    sh = cuda.shared.array((ROW_ROWS, ROW_LANES), np.float64)
    rows, cols = p.shape
    tx, lanes, rpb = cuda.threadIdx.x, cuda.blockDim.x, cuda.blockDim.y
    for g in range(cuda.blockIdx.x, (rows + rpb - 1) // rpb, cuda.gridDim.x):
        r = g * rpb + cuda.threadIdx.y
        live = r < rows
        a, b, c = _overlap_sums(sh, t, p, r, live)
        if live:
            ks = scale * w[r]
            for j in range(tx, cols, lanes):
                grad[r, j] = -_tversky_score_grad(t[r, j], a, b, c, k, m, wc, wb, smooth) * ks


def _contrastive_fwd(x1, x2, y, margin, eps, w, scale, out, partials, count):
    sh = cuda.shared.array((ROW_ROWS, ROW_LANES), np.float64)
    shb = cuda.shared.array(MAX_THREADS, np.float64)
    flag = cuda.shared.array(1, np.int32)
    rows, cols = x1.shape
    tx, lanes, rpb = cuda.threadIdx.x, cuda.blockDim.x, cuda.blockDim.y
    acc = 0.0
    for g in range(cuda.blockIdx.x, (rows + rpb - 1) // rpb, cuda.gridDim.x):
        r = g * rpb + cuda.threadIdx.y
        live = r < rows
        d2 = 0.0
        if live:
            for j in range(tx, cols, lanes):
                v = x1[r, j] - x2[r, j] + eps
                d2 += v * v
        d2 = row_sum(sh, d2)
        if live and tx == 0:
            acc += w[r] * _contrastive(d2, y[r], margin)
    grid_sum_store(shb, flag, acc, partials, count, out, scale)


def _contrastive_bwd(x1, x2, y, margin, eps, w, scale, grad1, grad2):
    sh = cuda.shared.array((ROW_ROWS, ROW_LANES), np.float64)
    rows, cols = x1.shape
    tx, lanes, rpb = cuda.threadIdx.x, cuda.blockDim.x, cuda.blockDim.y
    for g in range(cuda.blockIdx.x, (rows + rpb - 1) // rpb, cuda.gridDim.x):
        r = g * rpb + cuda.threadIdx.y
        live = r < rows
        d2 = 0.0
        if live:
            for j in range(tx, cols, lanes):
                v = x1[r, j] - x2[r, j] + eps
                d2 += v * v
        d2 = row_sum(sh, d2)
        if live:
            c = _contrastive_grad(d2, y[r], margin) * scale * w[r]
            for j in range(tx, cols, lanes):
                v = (x1[r, j] - x2[r, j] + eps) * c
                grad1[r, j] = v
                grad2[r, j] = -v


def _pdists(sh, a, b, c, p, eps, r, live):
    """(||a - b + eps||_p, ||a - c + eps||_p) of row r, to every lane of the row."""
    tx, lanes = cuda.threadIdx.x, cuda.blockDim.x
    sb = 0.0
    sc = 0.0
    if live:
        for j in range(tx, a.shape[1], lanes):
            x = a[r, j]
            sb += _pnorm_power(x - b[r, j] + eps, p)
            sc += _pnorm_power(x - c[r, j] + eps, p)
    return _pnorm_root(row_sum(sh, sb), p), _pnorm_root(row_sum(sh, sc), p)


_pdists = cuda.jit(device=True)(_pdists)


def _triplet_fwd(anchor, positive, negative, margin, p, eps, w, scale, out, partials, count):
    sh = cuda.shared.array((ROW_ROWS, ROW_LANES), np.float64)
    shb = cuda.shared.array(MAX_THREADS, np.float64)
    flag = cuda.shared.array(1, np.int32)
    rows = anchor.shape[0]
    rpb = cuda.blockDim.y
    acc = 0.0
    for g in range(cuda.blockIdx.x, (rows + rpb - 1) // rpb, cuda.gridDim.x):
        r = g * rpb + cuda.threadIdx.y
        live = r < rows
        dp, dn = _pdists(sh, anchor, positive, negative, p, eps, r, live)
        if live and cuda.threadIdx.x == 0:
            h = dp - dn + margin
            if h > 0.0:
                acc += w[r] * h
    grid_sum_store(shb, flag, acc, partials, count, out, scale)


def _triplet_bwd(anchor, positive, negative, margin, p, eps, w, scale, ga, gp, gn):
    sh = cuda.shared.array((ROW_ROWS, ROW_LANES), np.float64)
    rows, cols = anchor.shape
    tx, lanes, rpb = cuda.threadIdx.x, cuda.blockDim.x, cuda.blockDim.y
    for g in range(cuda.blockIdx.x, (rows + rpb - 1) // rpb, cuda.gridDim.x):
        r = g * rpb + cuda.threadIdx.y
        live = r < rows
        dp, dn = _pdists(sh, anchor, positive, negative, p, eps, r, live)
        if live:
            on = dp - dn + margin > 0.0
            k = scale * w[r]
            for j in range(tx, cols, lanes):
                a = anchor[r, j]
                u = _pnorm_grad(a - positive[r, j] + eps, dp, p) * k if on else 0.0
                v = _pnorm_grad(a - negative[r, j] + eps, dn, p) * k if on else 0.0
                ga[r, j] = u - v
                gp[r, j] = -u
                gn[r, j] = v


def _row_kernel(name, fn, spec):
    k = cuda.jit(fn)
    return Kernel(f"losses.{name}", spec, lambda dtype: k)


_RED = "A1 d1 n1"       # out, partials, count
_cce_forward = _row_kernel("_cce_forward", _cce_fwd, "A2 A2 f A1 f " + _RED)
_cce_backward = _row_kernel("_cce_backward", _cce_bwd, "A2 A2 f A1 f A2")
_cce_logits_forward = _row_kernel("_cce_logits_forward", _cce_logits_fwd, "A2 A2 A1 f " + _RED)
_cce_logits_backward = _row_kernel("_cce_logits_backward", _cce_logits_bwd, "A2 A2 A1 f A2")
_sparse_forward = _row_kernel("_sparse_forward", _sparse_fwd, "I1 A2 f A1 f " + _RED)
_sparse_backward = _row_kernel("_sparse_backward", _sparse_bwd, "I1 A2 f A1 f A2")
_sparse_logits_forward = _row_kernel("_sparse_logits_forward", _sparse_logits_fwd,
                                     "I1 A2 A1 f " + _RED)
_sparse_logits_backward = _row_kernel("_sparse_logits_backward", _sparse_logits_bwd,
                                      "I1 A2 A1 f A2")
_cfocal_forward = _row_kernel("_cfocal_forward", _cfocal_fwd, "A2 A2 f f A1 f " + _RED)
_cfocal_backward = _row_kernel("_cfocal_backward", _cfocal_bwd, "A2 A2 f f A1 f A2")
_cfocal_logits_forward = _row_kernel("_cfocal_logits_forward", _cfocal_logits_fwd,
                                     "A2 A2 f A1 f " + _RED)
_cfocal_logits_backward = _row_kernel("_cfocal_logits_backward", _cfocal_logits_bwd,
                                      "A2 A2 f A1 f A2")
_overlap_forward = _row_kernel("_overlap_forward", _overlap_fwd, "A2 A2 f f f f f A1 f " + _RED)
_overlap_backward = _row_kernel("_overlap_backward", _overlap_bwd, "A2 A2 f f f f f A1 f A2")
_contrastive_forward = _row_kernel("_contrastive_forward", _contrastive_fwd,
                                   "A2 A2 A1 f f A1 f " + _RED)
_contrastive_backward = _row_kernel("_contrastive_backward", _contrastive_bwd,
                                    "A2 A2 A1 f f A1 f A2 A2")
_triplet_forward = _row_kernel("_triplet_forward", _triplet_fwd, "A2 A2 A2 f f f A1 f " + _RED)
_triplet_backward = _row_kernel("_triplet_backward", _triplet_bwd,
                                "A2 A2 A2 f f f A1 f A2 A2 A2")


def _row_forward(k, inputs, extra, weights, scale, out):
    grid = grid_rows(inputs[1].shape[0])
    k[grid](*inputs, *extra, weights, scale, out, *reduction_args("losses", grid[0]))


def _row_backward(k, inputs, extra, weights, scale, grads):
    if inputs[1].size:
        k[grid_rows(inputs[1].shape[0])](*inputs, *extra, weights, scale, *grads)


def categorical_crossentropy_forward(y_true, y_pred, eps, weights, out):
    """Keras: p = y_pred / row sum, clipped to [eps, 1 - eps];
    out[0] = sum_n w_n (-sum_c y log p) / N."""
    _row_forward(_cce_forward, (y_true, y_pred), (eps,), weights, _inv(y_pred.shape[0]), out)


def categorical_crossentropy_backward(y_true, y_pred, eps, weights, grad):
    """Exact gradient of the forward expression through the row normalisation and the clip."""
    _row_backward(_cce_backward, (y_true, y_pred), (eps,), weights, _inv(y_pred.shape[0]), (grad,))


def categorical_crossentropy_logits_forward(y_true, logits, weights, out):
    """out[0] = sum_n w_n (-sum_c y log softmax(z)) / N, stable log-sum-exp."""
    _row_forward(_cce_logits_forward, (y_true, logits), (), weights, _inv(logits.shape[0]), out)


def categorical_crossentropy_logits_backward(y_true, logits, weights, grad):
    """grad = w_n (softmax(z) * sum_row(y) - y) / N."""
    _row_backward(_cce_logits_backward, (y_true, logits), (), weights, _inv(logits.shape[0]),
                  (grad,))


def sparse_categorical_crossentropy_forward(labels, y_pred, eps, weights, out):
    """Categorical crossentropy (Keras semantics) with integer labels (N,)."""
    _row_forward(_sparse_forward, (labels, y_pred), (eps,), weights, _inv(y_pred.shape[0]), out)


def sparse_categorical_crossentropy_backward(labels, y_pred, eps, weights, grad):
    """Exact gradient of the sparse forward expression."""
    _row_backward(_sparse_backward, (labels, y_pred), (eps,), weights, _inv(y_pred.shape[0]),
                  (grad,))


def sparse_categorical_crossentropy_logits_forward(labels, logits, weights, out):
    """out[0] = sum_n w_n (logsumexp(z_n) - z_n[label_n]) / N."""
    _row_forward(_sparse_logits_forward, (labels, logits), (), weights, _inv(logits.shape[0]), out)


def sparse_categorical_crossentropy_logits_backward(labels, logits, weights, grad):
    """grad = w_n (softmax(z) - onehot(label)) / N."""
    _row_backward(_sparse_logits_backward, (labels, logits), (), weights, _inv(logits.shape[0]),
                  (grad,))


def categorical_focal_crossentropy_forward(y_true, y_pred, gamma, alpha, eps, weights, out):
    """Keras CategoricalFocalCrossentropy on probabilities (see the CPU kernel)."""
    _row_forward(_cfocal_forward, (y_true, y_pred), (gamma, eps), weights,
                 alpha * _inv(y_pred.shape[0]), out)


def categorical_focal_crossentropy_backward(y_true, y_pred, gamma, alpha, eps, weights, grad):
    """Exact gradient through the row normalisation and the clip."""
    _row_backward(_cfocal_backward, (y_true, y_pred), (gamma, eps), weights,
                  alpha * _inv(y_pred.shape[0]), (grad,))


def categorical_focal_crossentropy_logits_forward(y_true, logits, gamma, alpha, weights, out):
    """The categorical focal loss of softmax(z), through a stable log-softmax."""
    _row_forward(_cfocal_logits_forward, (y_true, logits), (gamma,), weights,
                 alpha * _inv(logits.shape[0]), out)


def categorical_focal_crossentropy_logits_backward(y_true, logits, gamma, alpha, weights, grad):
    """d/dz of the logits forward."""
    _row_backward(_cfocal_logits_backward, (y_true, logits), (gamma,), weights,
                  alpha * _inv(logits.shape[0]), (grad,))


def dice_forward(y_true, y_pred, smooth, weights, out):
    """l_n = 1 - (2 A + s) / (B + C + s); out[0] = sum_n w_n l_n / N."""
    _row_forward(_overlap_forward, (y_true, y_pred), (2.0, 0.0, 1.0, 1.0, smooth), weights,
                 _inv(y_pred.shape[0]), out)


def dice_backward(y_true, y_pred, smooth, weights, grad):
    """grad_j = -w_n d score / d p_j / N."""
    _row_backward(_overlap_backward, (y_true, y_pred), (2.0, 0.0, 1.0, 1.0, smooth), weights,
                  _inv(y_pred.shape[0]), (grad,))


def jaccard_forward(y_true, y_pred, smooth, weights, out):
    """l_n = 1 - (A + s) / (B + C - A + s); out[0] = sum_n w_n l_n / N."""
    _row_forward(_overlap_forward, (y_true, y_pred), (1.0, -1.0, 1.0, 1.0, smooth), weights,
                 _inv(y_pred.shape[0]), out)


def jaccard_backward(y_true, y_pred, smooth, weights, grad):
    """grad_j = -w_n d score / d p_j / N."""
    _row_backward(_overlap_backward, (y_true, y_pred), (1.0, -1.0, 1.0, 1.0, smooth), weights,
                  _inv(y_pred.shape[0]), (grad,))


def tversky_forward(y_true, y_pred, alpha, beta, smooth, weights, out):
    """l_n = 1 - (TP + s) / (TP + alpha FP + beta FN + s); out[0] = sum_n w_n l_n / N."""
    _row_forward(_overlap_forward, (y_true, y_pred),
                 (1.0, 1.0 - alpha - beta, alpha, beta, smooth), weights, _inv(y_pred.shape[0]),
                 out)


def tversky_backward(y_true, y_pred, alpha, beta, smooth, weights, grad):
    """grad_j = -w_n d score / d p_j / N."""
    _row_backward(_overlap_backward, (y_true, y_pred),
                  (1.0, 1.0 - alpha - beta, alpha, beta, smooth), weights, _inv(y_pred.shape[0]),
                  (grad,))


def contrastive_forward(x1, x2, y, margin, eps, weights, out):
    """l_n = y d^2 + (1 - y) max(margin - d, 0)^2, d = ||x1 - x2 + eps||;
    out[0] = sum w_n l_n / N."""
    _row_forward(_contrastive_forward, (x1, x2, y), (margin, eps), weights, _inv(x1.shape[0]), out)


def contrastive_backward(x1, x2, y, margin, eps, weights, grad1, grad2):
    """grad1 = -grad2 = c (x1 - x2 + eps) w_n / N."""
    _row_backward(_contrastive_backward, (x1, x2, y), (margin, eps), weights, _inv(x1.shape[0]),
                  (grad1, grad2))


def triplet_margin_forward(anchor, positive, negative, margin, p, eps, weights, out):
    """l_n = max(||a - pos + eps||_p - ||a - neg + eps||_p + margin, 0);
    out[0] = sum w_n l_n / N."""
    _row_forward(_triplet_forward, (anchor, positive, negative), (margin, p, eps), weights,
                 _inv(anchor.shape[0]), out)


def triplet_margin_backward(anchor, positive, negative, margin, p, eps, weights, grad_anchor,
                            grad_positive, grad_negative):
    """Gradients for the three inputs (0 for triplets inside the margin)."""
    _row_backward(_triplet_backward, (anchor, positive, negative), (margin, p, eps), weights,
                  _inv(anchor.shape[0]), (grad_anchor, grad_positive, grad_negative))
