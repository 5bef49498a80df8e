"""Loss kernels on the GPU: ``y_true``/``y_pred`` (N, D) device arrays; the mean loss goes to
``out[0]`` (shape (1,)), gradients of the mean loss to ``grad`` (which may alias ``y_pred``).

Same semantics as kernels/cpu/losses.py (Keras clipping, stable logit forms), per-element maths
from kernels/scalar.py. Every call is one launch:

* elementwise losses: a grid-stride loop; the forward accumulates float64 per thread and ends in
  a deterministic grid reduction (``_common.grid_sum_store``: block sums, then the last block
  adds the partials in order).
* crossentropies: row-wise, ``lanes`` threads per row with shared-memory row reductions (row
  sums, row max, log-sum-exp), the forward again ending in the grid reduction.

Sparse labels outside [0, classes) give a NaN loss and NaN gradient rows (the CPU kernels raise;
a GPU kernel cannot without a synchronizing read-back).
"""
import math

import numpy as np
from numba import cuda

from .. import scalar
from ._common import (MAX_THREADS, ROW_LANES, ROW_ROWS, Kernel, device, grid_1d, grid_rows,
                      grid_sum_store, launcher, reduction_args, row_max, row_sum)

_log_clipped = device(scalar.log_clipped)
_neg_log_clipped_grad = device(scalar.neg_log_clipped_grad)


def _flat(a):
    return a.reshape(a.size)


# ------------------------------------------------------------------------------- elementwise losses
def _pointwise(name, f, f_grad, with_param):
    """(forward, backward) Kernels of a mean-over-elements loss with per-element term f."""
    if with_param:
        def term(t, p, prm):
            return f(t, p, prm)

        def dterm(t, p, prm):
            return f_grad(t, p, prm)
    else:
        def term(t, p, prm):
            return f(t, p)

        def dterm(t, p, prm):
            return f_grad(t, p)
    term, dterm = device(term), device(dterm)

    def fwd(t, p, prm, out, partials, count):
        sh = cuda.shared.array(MAX_THREADS, np.float64)
        flag = cuda.shared.array(1, np.int32)
        acc = 0.0
        for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
            acc += term(t[i], p[i], prm)
        grid_sum_store(sh, flag, acc, partials, count, out, 1.0 / p.size)

    def bwd(t, p, prm, grad):
        inv = 1.0 / p.size
        for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
            grad[i] = dterm(t[i], p[i], prm) * inv

    kf, kb = cuda.jit(fwd), cuda.jit(bwd)
    return (Kernel(f"losses._{name}_forward", "A1 A1 f A1 d1 n1", lambda dtype: kf),
            Kernel(f"losses._{name}_backward", "A1 A1 f A1", lambda dtype: kb))


_P = {name: _pointwise(name, device(f), device(g), with_param)
      for name, f, g, with_param in (
          ("mse", scalar.squared_error, scalar.squared_error_grad, False),
          ("mae", scalar.absolute_error, scalar.absolute_error_grad, False),
          ("huber", scalar.huber, scalar.huber_grad, True),
          ("bce", scalar.binary_crossentropy, scalar.binary_crossentropy_grad, True),
          ("bce_logits", scalar.binary_crossentropy_logits,
           scalar.binary_crossentropy_logits_grad, False))}


def _pw_forward(name, y_true, y_pred, param, out):
    p = _flat(y_pred)
    grid = grid_1d(p.size)
    _P[name][0][grid](_flat(y_true), p, param, out, *reduction_args("losses", grid[0]))


def _pw_backward(name, y_true, y_pred, param, grad):
    p = _flat(y_pred)
    if p.size:
        _P[name][1][grid_1d(p.size)](_flat(y_true), p, param, _flat(grad))


@launcher
def mse_forward(y_true, y_pred, out):
    """out[0] = mean((y_pred - y_true)^2)."""
    _pw_forward("mse", y_true, y_pred, 0.0, out)


@launcher
def mse_backward(y_true, y_pred, grad):
    """grad = 2 (y_pred - y_true) / (N D)."""
    _pw_backward("mse", y_true, y_pred, 0.0, grad)


@launcher
def mae_forward(y_true, y_pred, out):
    """out[0] = mean(|y_pred - y_true|)."""
    _pw_forward("mae", y_true, y_pred, 0.0, out)


@launcher
def mae_backward(y_true, y_pred, grad):
    """grad = sign(y_pred - y_true) / (N D), 0 where they are equal."""
    _pw_backward("mae", y_true, y_pred, 0.0, grad)


@launcher
def huber_forward(y_true, y_pred, delta, out):
    """out[0] = mean Huber loss with threshold delta."""
    _pw_forward("huber", y_true, y_pred, delta, out)


@launcher
def huber_backward(y_true, y_pred, delta, grad):
    """grad = clip(y_pred - y_true, -delta, delta) / (N D)."""
    _pw_backward("huber", y_true, y_pred, delta, grad)


@launcher
def binary_crossentropy_forward(y_true, y_pred, eps, out):
    """out[0] = mean BCE of y_pred clipped to [eps, 1 - eps]."""
    _pw_forward("bce", y_true, y_pred, eps, out)


@launcher
def binary_crossentropy_backward(y_true, y_pred, eps, grad):
    """Gradient of the clipped BCE (0 where clipping binds) / (N D)."""
    _pw_backward("bce", y_true, y_pred, eps, grad)


@launcher
def binary_crossentropy_logits_forward(y_true, logits, out):
    """out[0] = mean BCE of sigmoid(logits), stable."""
    _pw_forward("bce_logits", y_true, logits, 0.0, out)


@launcher
def binary_crossentropy_logits_backward(y_true, logits, grad):
    """grad = (sigmoid(z) - t) / (N D)."""
    _pw_backward("bce_logits", y_true, logits, 0.0, grad)


# ------------------------------------------------------------------------------- crossentropies
# Row-wise kernels: block (lanes, rows per block); row r = group * rpb + threadIdx.y, lanes stride
# over the columns. Rows past the end still take part in the row reductions' barriers.

def _cce_fwd(y_true, y_pred, eps, out, partials, count):
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
            for j in range(tx, cols, lanes):
                acc -= y_true[r, j] * _log_clipped(y_pred[r, j] * inv_s, eps)
    grid_sum_store(shb, flag, acc, partials, count, out, 1.0 / rows)


def _cce_bwd(y_true, y_pred, eps, inv_n, grad):
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
            k = inv_s * inv_n
            for j in range(tx, cols, lanes):
                a = y_true[r, j] * _neg_log_clipped_grad(y_pred[r, j] * inv_s, eps)
                grad[r, j] = (a - dot) * k


def _cce_logits_fwd(y_true, z, out, partials, count):
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
            for j in range(tx, cols, lanes):
                acc += y_true[r, j] * (lse - z[r, j])
    grid_sum_store(shb, flag, acc, partials, count, out, 1.0 / rows)


def _cce_logits_bwd(y_true, z, inv_n, grad):
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
            k = st / se
            for j in range(tx, cols, lanes):
                grad[r, j] = (math.exp(z[r, j] - m) * k - y_true[r, j]) * inv_n


def _sparse_fwd(labels, y_pred, eps, out, partials, count):
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
                acc -= _log_clipped(y_pred[r, lab] / s, eps)
            else:
                acc += math.nan
    grid_sum_store(shb, flag, acc, partials, count, out, 1.0 / rows)


def _sparse_bwd(labels, y_pred, eps, inv_n, grad):
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
            k = inv_s * inv_n
            for j in range(tx, cols, lanes):
                grad[r, j] = (a - a * pl) * k if j == lab else -a * pl * k


def _sparse_logits_fwd(labels, z, out, partials, count):
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
                acc += m + math.log(se) - z[r, lab]
            else:
                acc += math.nan
    grid_sum_store(shb, flag, acc, partials, count, out, 1.0 / rows)


def _sparse_logits_bwd(labels, z, inv_n, grad):
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
            k = inv_n / se
            bad = lab < 0 or lab >= cols
            for j in range(tx, cols, lanes):
                v = math.exp(z[r, j] - m) * k
                if j == lab:
                    v -= inv_n
                grad[r, j] = math.nan if bad else v


def _row_kernel(name, fn, spec):
    k = cuda.jit(fn)
    return Kernel(f"losses.{name}", spec, lambda dtype: k)


_cce_forward = _row_kernel("_cce_forward", _cce_fwd, "A2 A2 f A1 d1 n1")
_cce_backward = _row_kernel("_cce_backward", _cce_bwd, "A2 A2 f f A2")
_cce_logits_forward = _row_kernel("_cce_logits_forward", _cce_logits_fwd, "A2 A2 A1 d1 n1")
_cce_logits_backward = _row_kernel("_cce_logits_backward", _cce_logits_bwd, "A2 A2 f A2")
_sparse_forward = _row_kernel("_sparse_forward", _sparse_fwd, "I1 A2 f A1 d1 n1")
_sparse_backward = _row_kernel("_sparse_backward", _sparse_bwd, "I1 A2 f f A2")
_sparse_logits_forward = _row_kernel("_sparse_logits_forward", _sparse_logits_fwd,
                                     "I1 A2 A1 d1 n1")
_sparse_logits_backward = _row_kernel("_sparse_logits_backward", _sparse_logits_bwd,
                                      "I1 A2 f A2")


def _row_forward(k, a, b, extra, out):
    grid = grid_rows(b.shape[0])
    k[grid](a, b, *extra, out, *reduction_args("losses", grid[0]))


def _row_backward(k, a, b, extra, grad):
    if b.size:
        k[grid_rows(b.shape[0])](a, b, *extra, 1.0 / b.shape[0], grad)


@launcher
def categorical_crossentropy_forward(y_true, y_pred, eps, out):
    """Keras: p = y_pred / row sum, clipped to [eps, 1 - eps]; out[0] = mean_n(-sum_c y log p)."""
    _row_forward(_cce_forward, y_true, y_pred, (eps,), out)


@launcher
def categorical_crossentropy_backward(y_true, y_pred, eps, grad):
    """Exact gradient of the forward expression through the row normalisation and the clip."""
    _row_backward(_cce_backward, y_true, y_pred, (eps,), grad)


@launcher
def categorical_crossentropy_logits_forward(y_true, logits, out):
    """out[0] = mean_n(-sum_c y log softmax(z)), stable log-sum-exp."""
    _row_forward(_cce_logits_forward, y_true, logits, (), out)


@launcher
def categorical_crossentropy_logits_backward(y_true, logits, grad):
    """grad = (softmax(z) * sum_row(y) - y) / N."""
    _row_backward(_cce_logits_backward, y_true, logits, (), grad)


@launcher
def sparse_categorical_crossentropy_forward(labels, y_pred, eps, out):
    """Categorical crossentropy (Keras semantics) with integer labels (N,)."""
    _row_forward(_sparse_forward, labels, y_pred, (eps,), out)


@launcher
def sparse_categorical_crossentropy_backward(labels, y_pred, eps, grad):
    """Exact gradient of the sparse forward expression."""
    _row_backward(_sparse_backward, labels, y_pred, (eps,), grad)


@launcher
def sparse_categorical_crossentropy_logits_forward(labels, logits, out):
    """out[0] = mean_n(logsumexp(z_n) - z_n[label_n])."""
    _row_forward(_sparse_logits_forward, labels, logits, (), out)


@launcher
def sparse_categorical_crossentropy_logits_backward(labels, logits, grad):
    """grad = (softmax(z) - onehot(label)) / N."""
    _row_backward(_sparse_logits_backward, labels, logits, (), grad)
