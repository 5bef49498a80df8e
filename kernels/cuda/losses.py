"""Loss kernels on the GPU with per-sample weights: the same names, arguments and semantics as
kernels/cpu/losses.py (``out[0] = sum_i weights[i] * l_i / N``, or ``out[i] = weights[i] * l_i``
for an ``out`` of N != 1 entries; gradients of the former, ``grad`` may alias ``y_pred``),
per-element maths from kernels/scalar.py. Every call is one launch:

* elementwise losses: a grid-stride loop over the flat arrays (sample index ``i // D`` picks the
  weight); the forward accumulates float64 per thread and ends in a deterministic grid reduction
  (``_common.grid_sum_store``: block sums, then the last block adds the partials in order).
* row losses (crossentropies, categorical focal, Dice / Jaccard / Tversky, contrastive, triplet):
  ``lanes`` threads per row with shared-memory row reductions (row sums, row max, log-sum-exp,
  distances), the forward again ending in the grid reduction.

Both are generated from the rows of ``scalar.LOSSES``: one flat kernel pair per pointwise loss
(its scalar term and derivative, ``_pointwise``), one row kernel pair per row computation
(``_row_kernels`` around the device functions ``_X(sh, *inputs, r, live, *args)``, this lane's
share of row r's loss, and ``_X_grad(sh, *inputs, r, live, *args, k, *grads)``, row r's gradient
times k), and the public launchers with the CPU kernels' argument lists (``_launchers``).

Sparse labels outside [0, classes) give a NaN loss and NaN gradient rows (the CPU kernels raise;
a GPU kernel cannot without a synchronizing read-back).
"""
import inspect
import math

import numpy as np
from numba import cuda

from .. import scalar
from ._common import (A1, A2, D1, L1, MAX_THREADS, N1, ROW_LANES, ROW_ROWS, Float, Int, Kernel,
                      device, flat, grid_1d, grid_rows, grid_sum_store, reduction_args,
                      row_max_sumexp, row_sum)

_log_clipped = device(scalar.log_clipped)
_neg_log_clipped_grad = device(scalar.neg_log_clipped_grad)
_cfocal_logits_term = device(scalar.categorical_focal_logits)
_cfocal_logits_term_grad = device(scalar.categorical_focal_logits_grad)
_tversky_score = device(scalar.tversky_score)
_tversky_score_grad = device(scalar.tversky_score_grad)
_contrastive = device(scalar.contrastive)
_contrastive_grad = device(scalar.contrastive_grad)
_pnorm_power = device(scalar.pnorm_power)
_pnorm_root = device(scalar.pnorm_root)
_pnorm_grad = device(scalar.pnorm_grad)


def _inv(n):
    return 1.0 / n if n else math.nan


# ------------------------------------------------------------------------------- pointwise losses
def _pointwise(loss):
    """(forward, backward) Kernels of a pointwise loss: grid-stride loops over the flat arrays with
    the loss's hyperparameters padded to four (a, b, c, e); the forward ends in the grid sum."""
    call = "(t, p" + "".join(", " + a for a in "abce"[:len(loss.hyper)]) + ")"
    ns = {"f": device(loss.term), "df": device(getattr(scalar, loss.term.__name__ + "_grad"))}
    exec(f"def term(t, p, a, b, c, e):\n    return f{call}\n\n"
         f"def dterm(t, p, a, b, c, e):\n    return df{call}\n", ns)
    term, dterm = device(ns["term"]), device(ns["dterm"])

    def fwd(t: A1, p: A1, a: Float, b: Float, c: Float, e: Float, w: A1, d: Int, scale: Float,
            out: A1, partials: D1, count: N1):
        if out.size != 1:                       # per-sample values: a thread per row
            for r in range(cuda.grid(1), p.size // d, cuda.gridsize(1)):
                s = 0.0
                for i in range(r * d, r * d + d):
                    s += term(t[i], p[i], a, b, c, e)
                out[r] = w[r] * s * scale
            return
        sh = cuda.shared.array(MAX_THREADS, np.float64)
        flag = cuda.shared.array(1, np.int32)
        acc = 0.0
        for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
            acc += w[i // d] * term(t[i], p[i], a, b, c, e)
        grid_sum_store(sh, flag, acc, partials, count, out, scale)

    def bwd(t: A1, p: A1, a: Float, b: Float, c: Float, e: Float, w: A1, d: Int, scale: Float,
            grad: A1):
        for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
            grad[i] = dterm(t[i], p[i], a, b, c, e) * (w[i // d] * scale)

    return tuple(_kernel(f"_{loss.name}{suffix}", fn) for suffix, fn in (("_forward", fwd),
                                                                         ("_backward", bwd)))


def _kernel(name, fn):
    k = cuda.jit(fn)
    return Kernel(f"losses.{name}", fn, lambda dtype: k)


def _launch_pointwise(kernels, which, inputs, args, scale, weights, res):
    t, p = inputs
    n = p.shape[0]
    d = p.size // n if n else 1
    a, b, c, e = (tuple(float(v) for v in args) + (0.0, 0.0, 0.0, 0.0))[:4]
    grid = grid_1d(p.size)
    if which == 0:
        kernels[0][grid](flat(t), flat(p), a, b, c, e, weights, max(d, 1), scale, res[0],
                         *reduction_args("losses", grid[0]))
    elif p.size:
        kernels[1][grid](flat(t), flat(p), a, b, c, e, weights, max(d, 1), scale, flat(res[0]))


# ------------------------------------------------------------------------------------- row losses
# Row-wise kernels: block (lanes, rows per block); row r = group * rpb + threadIdx.y, lanes stride
# over the columns. Rows past the end (live false) still take part in the row reductions'
# barriers. Forward kernels take ``scale`` (1/N, alpha/N) for the grid reduction, backward ones
# for the rows.
_ROW_KERNELS = """
def fwd({inputs}, {args}w: A1, scale: Float, out: A1, partials: D1, count: N1):
    sh = cuda.shared.array((ROW_ROWS, ROW_LANES), np.float64)
    shb = cuda.shared.array(MAX_THREADS, np.float64)
    flag = cuda.shared.array(1, np.int32)
    rows, rpb = {x}.shape[0], cuda.blockDim.y
    acc = 0.0
    for g in range(cuda.blockIdx.x, (rows + rpb - 1) // rpb, cuda.gridDim.x):
        r = g * rpb + cuda.threadIdx.y
        v = row(sh, {names}, r, r < rows{arg_names})
        if out.size != 1:                       # per-sample values: the row's total
            v = row_sum(sh, v)
            if r < rows and cuda.threadIdx.x == 0:
                out[r] = w[r] * v * scale
        elif r < rows:
            acc += w[r] * v
    if out.size == 1:
        grid_sum_store(shb, flag, acc, partials, count, out, scale)


def bwd({inputs}, {args}w: A1, scale: Float, {grads}):
    sh = cuda.shared.array((ROW_ROWS, ROW_LANES), np.float64)
    rows, rpb = {x}.shape[0], cuda.blockDim.y
    for g in range(cuda.blockIdx.x, (rows + rpb - 1) // rpb, cuda.gridDim.x):
        r = g * rpb + cuda.threadIdx.y
        live = r < rows
        row_grad(sh, {names}, r, live{arg_names}, scale * w[r] if live else 0.0, {grad_names})
"""
_KINDS = {"labels": L1, "y": A1}        # the other inputs and gradients are A2


def _row_kernels(name, row, row_grad):
    """(forward, backward) Kernels ``losses._NAME_forward`` / ``_backward`` of the row device
    functions ``row`` and ``row_grad``, their arguments read from those functions' signatures."""
    params = list(inspect.signature(row).parameters)[1:]
    names, args = params[:params.index("r")], params[params.index("live") + 1:]
    grads = list(inspect.signature(row_grad).parameters)[len(params) + 2:]    # after k
    ns = dict(globals(), row=device(row), row_grad=device(row_grad))
    exec(_ROW_KERNELS.format(
        inputs=", ".join(f"{n}: {_KINDS.get(n, A2)!r}" for n in names), names=", ".join(names),
        args="".join(f"{a}: Float, " for a in args), arg_names="".join(", " + a for a in args),
        x=names[1], grads=", ".join(f"{g}: {A2!r}" for g in grads),
        grad_names=", ".join(grads)), ns)
    return _kernel(f"_{name}_forward", ns["fwd"]), _kernel(f"_{name}_backward", ns["bwd"])


def _launch_rows(kernels, which, inputs, args, scale, weights, res):
    x = inputs[1]
    grid = grid_rows(x.shape[0])
    if which == 0:
        kernels[0][grid](*inputs, *args, weights, scale, *res, *reduction_args("losses", grid[0]))
    elif x.size:
        kernels[1][grid](*inputs, *args, weights, scale, *res)


@cuda.jit(device=True)
def _row_total(sh, a, r, live):
    """sum of row r of a, to every lane of the row (all threads of the block call it)."""
    s = 0.0
    if live:
        for j in range(cuda.threadIdx.x, a.shape[1], cuda.blockDim.x):
            s += a[r, j]
    return row_sum(sh, s)


@cuda.jit(device=True)
def _row_lse(sh, z, r, live):
    """log-sum-exp of row r of z, to every lane of the row."""
    m, se = row_max_sumexp(sh, z, r, live)
    return m + math.log(se) if live else 0.0


def _cce_logits(sh, y_true, z, r, live):
    lse = _row_lse(sh, z, r, live)
    part = 0.0
    if live:
        for j in range(cuda.threadIdx.x, z.shape[1], cuda.blockDim.x):
            part += y_true[r, j] * (lse - z[r, j])
    return part


def _cce_logits_grad(sh, y_true, z, r, live, k, grad):
    m, se = row_max_sumexp(sh, z, r, live)
    st = _row_total(sh, y_true, r, live)
    if live:
        q = st / se
        for j in range(cuda.threadIdx.x, z.shape[1], cuda.blockDim.x):
            grad[r, j] = (math.exp(z[r, j] - m) * q - y_true[r, j]) * k


def _sparse(sh, labels, y_pred, r, live, eps):
    s = _row_total(sh, y_pred, r, live)
    if live and cuda.threadIdx.x == 0:
        lab = labels[r]
        if lab >= 0 and lab < y_pred.shape[1]:
            return -_log_clipped(y_pred[r, lab] / s, eps)
        return math.nan
    return 0.0


def _sparse_grad(sh, labels, y_pred, r, live, eps, k, grad):
    cols = y_pred.shape[1]
    lab = -1
    pl = math.nan
    if live:
        lab = labels[r]
        if lab >= 0 and lab < cols:
            pl = float(y_pred[r, lab])          # read before the barrier: grad may alias y_pred
    s = _row_total(sh, y_pred, r, live)
    if live:
        inv_s = 1.0 / s
        pl = pl * inv_s
        a = _neg_log_clipped_grad(pl, eps)
        ks = inv_s * k
        for j in range(cuda.threadIdx.x, cols, cuda.blockDim.x):
            grad[r, j] = (a - a * pl) * ks if j == lab else -a * pl * ks


def _sparse_logits(sh, labels, z, r, live):
    m, se = row_max_sumexp(sh, z, r, live)
    if live and cuda.threadIdx.x == 0:
        lab = labels[r]
        if lab >= 0 and lab < z.shape[1]:
            return m + math.log(se) - z[r, lab]
        return math.nan
    return 0.0


def _sparse_logits_grad(sh, labels, z, r, live, k, grad):
    lab = labels[r] if live else -1
    m, se = row_max_sumexp(sh, z, r, live)
    if live:
        ks = k / se
        bad = lab < 0 or lab >= z.shape[1]
        for j in range(cuda.threadIdx.x, z.shape[1], cuda.blockDim.x):
            v = math.exp(z[r, j] - m) * ks
            if j == lab:
                v -= k
            grad[r, j] = math.nan if bad else v


# A loss of the probabilities q = y_pred / S, S the row sum: sum_c term(y_c, q_c); through the
# normalisation, with a_c = d term / d q_c, dL/dy_pred_k = (a_k - sum_c a_c q_c) / S.
_NORMALISED = """
def row(sh, y_true, y_pred, r, live{args}):
    s = _row_total(sh, y_pred, r, live)
    part = 0.0
    if live:
        inv_s = 1.0 / s
        for j in range(cuda.threadIdx.x, y_pred.shape[1], cuda.blockDim.x):
            part += term(y_true[r, j], y_pred[r, j] * inv_s{args})
    return part


def row_grad(sh, y_true, y_pred, r, live{args}, k, grad):
    tx, lanes = cuda.threadIdx.x, cuda.blockDim.x
    s = _row_total(sh, y_pred, r, live)
    inv_s = 1.0 / s if live else 0.0
    dot = 0.0
    if live:
        for j in range(tx, y_pred.shape[1], lanes):
            pj = y_pred[r, j] * inv_s
            dot += dterm(y_true[r, j], pj{args}) * pj
    dot = row_sum(sh, dot)
    if live:
        ks = inv_s * k
        for j in range(tx, y_pred.shape[1], lanes):
            grad[r, j] = (dterm(y_true[r, j], y_pred[r, j] * inv_s{args}) - dot) * ks
"""


def _normalised(term, args):
    """(row, row_grad) of the scalar function ``term`` (and ``TERM_grad``) of the normalised
    probabilities, with arguments ``args``."""
    ns = dict(globals(), term=device(term), dterm=device(getattr(scalar, term.__name__ + "_grad")))
    exec(_NORMALISED.format(args="".join(", " + a for a in args.split())), ns)
    return ns["row"], ns["row_grad"]


def _cfocal_logits(sh, y_true, z, r, live, gamma):
    lse = _row_lse(sh, z, r, live)
    part = 0.0
    if live:
        for j in range(cuda.threadIdx.x, z.shape[1], cuda.blockDim.x):
            part += _cfocal_logits_term(y_true[r, j], z[r, j] - lse, gamma)
    return part


def _cfocal_logits_grad(sh, y_true, z, r, live, gamma, k, grad):
    tx, lanes = cuda.threadIdx.x, cuda.blockDim.x
    lse = _row_lse(sh, z, r, live)
    sb = 0.0
    if live:
        for j in range(tx, z.shape[1], lanes):
            sb += _cfocal_logits_term_grad(y_true[r, j], z[r, j] - lse, gamma)
    sb = row_sum(sh, sb)
    if live:
        for j in range(tx, z.shape[1], lanes):
            lq = z[r, j] - lse
            grad[r, j] = (_cfocal_logits_term_grad(y_true[r, j], lq, gamma)
                          - math.exp(lq) * sb) * k


@cuda.jit(device=True)
def _overlap_sums(sh, t, p, r, live):
    """(sum t p, sum t, sum p) of row r, to every lane of the row."""
    a = 0.0
    b = 0.0
    c = 0.0
    if live:
        for j in range(cuda.threadIdx.x, p.shape[1], cuda.blockDim.x):
            tj = t[r, j]
            pj = p[r, j]
            a += tj * pj
            b += tj
            c += pj
    return row_sum(sh, a), row_sum(sh, b), row_sum(sh, c)


def _overlap(sh, t, p, r, live, k, m, wc, wb, smooth):
    a, b, c = _overlap_sums(sh, t, p, r, live)
    if live and cuda.threadIdx.x == 0:
        return 1.0 - _tversky_score(a, b, c, k, m, wc, wb, smooth)
    return 0.0


def _overlap_grad(sh, t, p, r, live, k, m, wc, wb, smooth, ks, grad):
    a, b, c = _overlap_sums(sh, t, p, r, live)
    if live:
        for j in range(cuda.threadIdx.x, p.shape[1], cuda.blockDim.x):
            grad[r, j] = -_tversky_score_grad(t[r, j], a, b, c, k, m, wc, wb, smooth) * ks


@cuda.jit(device=True)
def _dist2(sh, x1, x2, r, live, eps):
    """||x1[r] - x2[r] + eps||^2, to every lane of the row."""
    d2 = 0.0
    if live:
        for j in range(cuda.threadIdx.x, x1.shape[1], cuda.blockDim.x):
            v = x1[r, j] - x2[r, j] + eps
            d2 += v * v
    return row_sum(sh, d2)


def _contrastive_row(sh, x1, x2, y, r, live, margin, eps):
    d2 = _dist2(sh, x1, x2, r, live, eps)
    return _contrastive(d2, y[r], margin) if live and cuda.threadIdx.x == 0 else 0.0


def _contrastive_row_grad(sh, x1, x2, y, r, live, margin, eps, k, grad1, grad2):
    d2 = _dist2(sh, x1, x2, r, live, eps)
    if live:
        c = _contrastive_grad(d2, y[r], margin) * k
        for j in range(cuda.threadIdx.x, x1.shape[1], cuda.blockDim.x):
            v = (x1[r, j] - x2[r, j] + eps) * c
            grad1[r, j] = v
            grad2[r, j] = -v


@cuda.jit(device=True)
def _pdists(sh, a, b, c, r, live, p, eps):
    """(||a - b + eps||_p, ||a - c + eps||_p) of row r, to every lane of the row."""
    sb = 0.0
    sc = 0.0
    if live:
        for j in range(cuda.threadIdx.x, a.shape[1], cuda.blockDim.x):
            x = a[r, j]
            sb += _pnorm_power(x - b[r, j] + eps, p)
            sc += _pnorm_power(x - c[r, j] + eps, p)
    return _pnorm_root(row_sum(sh, sb), p), _pnorm_root(row_sum(sh, sc), p)


def _triplet(sh, anchor, positive, negative, r, live, margin, p, eps):
    dp, dn = _pdists(sh, anchor, positive, negative, r, live, p, eps)
    h = dp - dn + margin
    return h if live and cuda.threadIdx.x == 0 and h > 0.0 else 0.0


def _triplet_grad(sh, anchor, positive, negative, r, live, margin, p, eps, k, grad_anchor,
                  grad_positive, grad_negative):
    dp, dn = _pdists(sh, anchor, positive, negative, r, live, p, eps)
    if live:
        on = dp - dn + margin > 0.0
        for j in range(cuda.threadIdx.x, anchor.shape[1], cuda.blockDim.x):
            a = anchor[r, j]
            u = _pnorm_grad(a - positive[r, j] + eps, dp, p) * k if on else 0.0
            v = _pnorm_grad(a - negative[r, j] + eps, dn, p) * k if on else 0.0
            grad_anchor[r, j] = u - v
            grad_positive[r, j] = -u
            grad_negative[r, j] = v


_ROWS = {"cce": _normalised(scalar.categorical_crossentropy, "eps"),
         "cce_logits": (_cce_logits, _cce_logits_grad),
         "sparse": (_sparse, _sparse_grad), "sparse_logits": (_sparse_logits, _sparse_logits_grad),
         "cfocal": _normalised(scalar.categorical_focal, "gamma eps"),
         "cfocal_logits": (_cfocal_logits, _cfocal_logits_grad),
         "overlap": (_overlap, _overlap_grad),
         "contrastive": (_contrastive_row, _contrastive_row_grad),
         "triplet": (_triplet, _triplet_grad)}
_ROW_KERNEL_PAIRS = {kind: _row_kernels(kind, *fns) for kind, fns in _ROWS.items()}


# ------------------------------------------------------------------------------ public launchers
_LAUNCHERS = """
def {name}_forward({inputs}, {hyper}weights, out):
    _launch(_LOSSES[{name!r}], 0, ({inputs},), ({args}), {scale}, weights, (out,))


def {name}_backward({inputs}, {hyper}weights, {grads}):
    _launch(_LOSSES[{name!r}], 1, ({inputs},), ({args}), {scale}, weights, ({grads},))
"""
_LOSSES = {}        # name -> (kernels, launch function, per-element)


def _launch(entry, which, inputs, args, scale, weights, res):
    kernels, launch, per_element = entry
    n = inputs[1].shape[0]
    if which == 0 and res[0].size != 1:         # per-sample values: scale (over D) per row
        scale = scale * _inv(inputs[1].shape[1]) if per_element else scale
    else:
        scale = scale * (_inv(inputs[1].size) if per_element else _inv(n))
    launch(kernels, which, inputs, args, scale, weights, res)


for _loss in scalar.LOSSES:
    if _loss.pointwise:
        _LOSSES[_loss.name] = (_pointwise(_loss), _launch_pointwise, not _loss.per_row)
    else:
        _LOSSES[_loss.name] = (_ROW_KERNEL_PAIRS[_loss.term], _launch_rows, False)
    exec(compile(_LAUNCHERS.format(
        name=_loss.name, inputs=", ".join(_loss.inputs),
        hyper="".join(h + ", " for h in _loss.hyper), args=_loss.args + ("," if _loss.args else ""),
        scale=_loss.scale, grads=", ".join(_loss.grads)), __file__, "exec"), globals())
