"""Loss kernels with per-sample weights (Keras "sum_over_batch_size" reduction).

``<loss>_forward(y_true, y_pred, [hyper...], weights, out)`` writes
``out[0] = sum_i weights[i] * l_i / N`` for (N, D) C-contiguous ``y_true``/``y_pred`` and (N,)
``weights`` of ``y_pred``'s dtype, accumulated in float64 (an ``out`` of N entries, N != 1, gets
the weighted per-sample losses ``weights[i] * l_i`` instead: the values of reduction=None);
``<loss>_backward(..., weights, grad)`` writes its gradient with respect to ``y_pred`` (row i
scaled by ``weights[i] / N``; ``grad`` may alias ``y_pred``). The per-sample loss ``l_i`` is the
mean over the sample's D elements for elementwise losses (mse, mae, huber, log_cosh, msle, hinge,
squared_hinge, binary crossentropy and binary focal), the sum over the D classes for
crossentropies, categorical focal and KL divergence, and one number per sample for Dice /
Jaccard / Tversky (soft scores over the sample's elements). The two embedding losses take their
own inputs (``contrastive``: x1, x2, y; ``triplet_margin``: anchor, positive, negative) and write
one gradient per embedding input.

Probability inputs follow Keras: clipped to [eps, 1 - eps] (categorical ones first divided by
their row sum), with the exact gradient of that clipped expression (zero where clipping binds).
Logit versions use log-sum-exp / log1p(exp(-|z|)) and stay finite for any finite logits.
Per-element maths lives in kernels/scalar.py (shared with the CUDA kernels); every public kernel
is generated from its row of ``scalar.LOSSES`` by ``_make`` (one source template, serial below
the parallel threshold, ``prange`` above): a pointwise loss sums its scalar term over each row, a
row loss calls the row computation ``_TERM_row`` / ``_TERM_row_grad`` defined here.

Reductions use ``fastmath`` reassociation only (so the float64 sums vectorize); large inputs run a
``prange`` path over rows, small ones a serial loop. ``error_model="numpy"``: IEEE division, so an
empty batch gives NaN rather than an exception. ``cache=True`` does not notice edits to
``scalar.py``: delete the numba cache after changing it. The generated kernels are compiled from
source text attributed to this file (numba's cache needs a real file): their names and line
numbers name the cache entries, and they hold no closure cells, so a warm start hits the cache.
"""
import math

from numba import njit, prange

from .. import scalar
from ._threads import split_parallel

# prange above these sizes: same measurements as the activations (2 cores; thread start-up of a
# few us only pays for memory-bound loops from ~1e5 elements, for log/exp loops from ~1e4).
_PAR_MIN = 1 << 14
_PAR_MIN_CHEAP = 1 << 18
_FM = {"reassoc", "contract"}

_log_clipped = njit(inline="always")(scalar.log_clipped)
_neg_log_clipped_grad = njit(inline="always")(scalar.neg_log_clipped_grad)
_cfocal_logits = njit(inline="always")(scalar.categorical_focal_logits)
_cfocal_logits_grad = njit(inline="always")(scalar.categorical_focal_logits_grad)
_tversky_score = njit(inline="always")(scalar.tversky_score)
_tversky_score_grad = njit(inline="always")(scalar.tversky_score_grad)
_contrastive = njit(inline="always")(scalar.contrastive)
_contrastive_grad = njit(inline="always")(scalar.contrastive_grad)
_pnorm_power = njit(inline="always")(scalar.pnorm_power)
_pnorm_root = njit(inline="always")(scalar.pnorm_root)
_pnorm_grad = njit(inline="always")(scalar.pnorm_grad)


# -------------------------------------------------------------------------------------- row helpers
# Row computations: ``_X_row(*inputs, r, *args)`` gives row r's loss, ``_X_row_grad(*inputs, r,
# *args, k, *grads)`` writes row r's gradient times k (the sample's weight / N).
@njit(inline="always")
def _row_sum(a, r):
    s = 0.0
    for j in range(a.shape[1]):
        s += a[r, j]
    return s


# Not inlined at the Numba IR level (LLVM still inlines it): inside a prange reduction, Numba's
# parfor pass on Python 3.12 fails on this loop-carried maximum ("unexpected cycle in lookup()").
@njit
def _row_max(a, r):
    m = a[r, 0]
    for j in range(1, a.shape[1]):
        if a[r, j] > m:
            m = a[r, j]
    return m


@njit(inline="always")
def _row_sum_exp(a, r, m):
    s = 0.0
    for j in range(a.shape[1]):
        s += math.exp(a[r, j] - m)
    return s


@njit(inline="always")
def _row_lse(z, r):
    m = _row_max(z, r)
    return m + math.log(_row_sum_exp(z, r, m))


@njit(inline="always")
def _cce_logits_row(y_true, z, r):
    """sum_c y_c (logsumexp(z) - z_c) for row r."""
    lse = _row_lse(z, r)
    loss = 0.0
    for j in range(z.shape[1]):
        loss += y_true[r, j] * (lse - z[r, j])
    return loss


@njit(inline="always")
def _cce_logits_row_grad(y_true, z, r, k, grad):
    """grad_c = (softmax(z)_c sum(y) - y_c) k for row r."""
    m = _row_max(z, r)
    inv_s = 1.0 / _row_sum_exp(z, r, m)
    st = _row_sum(y_true, r) * inv_s
    for j in range(z.shape[1]):
        grad[r, j] = (math.exp(z[r, j] - m) * st - y_true[r, j]) * k


@njit(inline="always")
def _sparse_row(labels, y_pred, r, eps):
    """-log(clip(q_label / sum(q), eps, 1 - eps)) for row r."""
    return -_log_clipped(y_pred[r, labels[r]] / _row_sum(y_pred, r), eps)


@njit(inline="always")
def _sparse_row_grad(labels, y_pred, r, eps, k, grad):
    """The categorical gradient with a one-hot target: (a onehot - a p_label) / S (times k)."""
    inv_s = 1.0 / _row_sum(y_pred, r)
    lab = labels[r]
    pl = y_pred[r, lab] * inv_s
    a = _neg_log_clipped_grad(pl, eps)
    ks = inv_s * k
    for j in range(y_pred.shape[1]):
        grad[r, j] = -a * pl * ks
    grad[r, lab] = (a - a * pl) * ks


@njit(inline="always")
def _sparse_logits_row(labels, z, r):
    """logsumexp(z) - z_label for row r."""
    return _row_lse(z, r) - z[r, labels[r]]


@njit(inline="always")
def _sparse_logits_row_grad(labels, z, r, k, grad):
    """grad = (softmax(z) - onehot(label)) k for row r."""
    m = _row_max(z, r)
    ks = k / _row_sum_exp(z, r, m)
    for j in range(z.shape[1]):
        grad[r, j] = math.exp(z[r, j] - m) * ks
    lab = labels[r]
    grad[r, lab] = grad[r, lab] - k


@njit(inline="always")
def _check_labels(labels, classes):
    for r in range(labels.size):
        if labels[r] < 0 or labels[r] >= classes:
            raise ValueError("sparse crossentropy: a label is outside [0, number of classes)")


@njit(inline="always")
def _cfocal_logits_row(y_true, z, r, gamma):
    """sum_c -y_c (1 - q_c)^gamma log q_c with log q = log softmax(z) (no alpha)."""
    lse = _row_lse(z, r)
    loss = 0.0
    for j in range(z.shape[1]):
        loss += _cfocal_logits(y_true[r, j], z[r, j] - lse, gamma)
    return loss


@njit(inline="always")
def _cfocal_logits_row_grad(y_true, z, r, gamma, k, grad):
    """grad_k = (b_k - q_k sum_c b_c) k, b_c = q_c dL/dq_c
    (scalar.categorical_focal_logits_grad)."""
    lse = _row_lse(z, r)
    sb = 0.0
    for j in range(z.shape[1]):
        sb += _cfocal_logits_grad(y_true[r, j], z[r, j] - lse, gamma)
    for j in range(z.shape[1]):
        lq = z[r, j] - lse
        grad[r, j] = (_cfocal_logits_grad(y_true[r, j], lq, gamma) - math.exp(lq) * sb) * k


# Dice, Jaccard, Tversky: soft scores over each sample's D elements from A = sum t p, B = sum t,
# C = sum p; the smoothing term s is added to numerator and denominator (an empty target
# predicted empty scores 1). The table gives (k, m, wc, wb) of each (scalar.tversky_score).
@njit(inline="always")
def _overlap_sums(t, p, r):
    """(sum t p, sum t, sum p) over row r."""
    a = 0.0
    b = 0.0
    c = 0.0
    for j in range(p.shape[1]):
        tj = t[r, j]
        pj = p[r, j]
        a += tj * pj
        b += tj
        c += pj
    return a, b, c


@njit(inline="always")
def _overlap_row(t, p, r, k, m, wc, wb, smooth):
    """1 - (k A + s) / (m A + wc C + wb B + s) for row r (see scalar.tversky_score)."""
    a, b, c = _overlap_sums(t, p, r)
    return 1.0 - _tversky_score(a, b, c, k, m, wc, wb, smooth)


@njit(inline="always")
def _overlap_row_grad(t, p, r, k, m, wc, wb, smooth, scale, grad):
    a, b, c = _overlap_sums(t, p, r)
    for j in range(p.shape[1]):
        grad[r, j] = -_tversky_score_grad(t[r, j], a, b, c, k, m, wc, wb, smooth) * scale


@njit(inline="always")
def _dist2_row(x1, x2, eps, r):
    """||x1[r] - x2[r] + eps||^2."""
    s = 0.0
    for j in range(x1.shape[1]):
        v = x1[r, j] - x2[r, j] + eps
        s += v * v
    return s


@njit(inline="always")
def _contrastive_row(x1, x2, y, r, margin, eps):
    """y d^2 + (1 - y) max(margin - d, 0)^2, d = ||x1 - x2 + eps||_2, for pair r."""
    return _contrastive(_dist2_row(x1, x2, eps, r), y[r], margin)


@njit(inline="always")
def _contrastive_row_grad(x1, x2, y, r, margin, eps, k, grad1, grad2):
    """grad1 = c (x1 - x2 + eps) k = -grad2 (scalar.contrastive_grad gives c)."""
    c = _contrastive_grad(_dist2_row(x1, x2, eps, r), y[r], margin) * k
    for j in range(x1.shape[1]):
        v = (x1[r, j] - x2[r, j] + eps) * c
        grad1[r, j] = v
        grad2[r, j] = -v


@njit(inline="always")
def _pdist_row(x1, x2, p, eps, r):
    """||x1[r] - x2[r] + eps||_p (torch.pairwise_distance)."""
    s = 0.0
    for j in range(x1.shape[1]):
        s += _pnorm_power(x1[r, j] - x2[r, j] + eps, p)
    return _pnorm_root(s, p)


@njit(inline="always")
def _triplet_row(anchor, positive, negative, r, margin, p, eps):
    """max(d(a, pos) - d(a, neg) + margin, 0), d(x, y) = ||x - y + eps||_p (torch)."""
    h = (_pdist_row(anchor, positive, p, eps, r) - _pdist_row(anchor, negative, p, eps, r)
         + margin)
    return h if h > 0.0 else 0.0


@njit(inline="always")
def _triplet_row_grad(anchor, positive, negative, r, margin, p, eps, k, ga, gp, gn):
    dp = _pdist_row(anchor, positive, p, eps, r)
    dn = _pdist_row(anchor, negative, p, eps, r)
    live = dp - dn + margin > 0.0
    for j in range(anchor.shape[1]):
        a = anchor[r, j]
        u = _pnorm_grad(a - positive[r, j] + eps, dp, p) * k if live else 0.0
        v = _pnorm_grad(a - negative[r, j] + eps, dn, p) * k if live else 0.0
        ga[r, j] = u - v
        gp[r, j] = -u
        gn[r, j] = v


# ------------------------------------------------------------------------------ generated kernels
# Row computations made from a scalar term ``_STEM_f`` and its derivative ``_STEM_df``. A
# pointwise loss: the term summed over the row.
_POINTWISE_ROW = """
def _{stem}_row({inputs}, r{args}):
    s = 0.0
    for j in range({x}.shape[1]):
        s += _{stem}_f({t}[r, j], {x}[r, j]{args})
    return s


def _{stem}_row_grad({inputs}, r{args}, k, grad):
    for j in range({x}.shape[1]):
        grad[r, j] = _{stem}_df({t}[r, j], {x}[r, j]{args}) * k
"""

# A loss of the probabilities q = y_pred / S, S the row sum: sum_c term(y_c, q_c); through the
# normalisation, with a_c = d term / d q_c, dL/dy_pred_k = (a_k - sum_c a_c q_c) / S.
_NORMALISED_ROW = """
def _{stem}_row(y_true, y_pred, r{args}):
    inv_s = 1.0 / _row_sum(y_pred, r)
    loss = 0.0
    for j in range(y_pred.shape[1]):
        loss += _{stem}_f(y_true[r, j], y_pred[r, j] * inv_s{args})
    return loss


def _{stem}_row_grad(y_true, y_pred, r{args}, k, grad):
    inv_s = 1.0 / _row_sum(y_pred, r)
    dot = 0.0
    for j in range(y_pred.shape[1]):
        pj = y_pred[r, j] * inv_s
        dot += _{stem}_df(y_true[r, j], pj{args}) * pj
    for j in range(y_pred.shape[1]):
        a = _{stem}_df(y_true[r, j], y_pred[r, j] * inv_s{args})
        grad[r, j] = (a - dot) * (inv_s * k)
"""

# The public kernels: out[0] = scale * sum_r w_r l_r / N (N elements for a mean over elements)
# or, when ``out`` has one entry per row instead, out[r] = scale * w_r l_r (over the row's D
# elements for a mean), and its gradient, each compiled serially for inputs below the parallel
# threshold and with parallel=True above, each copy at its first use (_threads.split_parallel).
_KERNELS = """
def {name}_forward({inputs}, {hyper}weights, out):
    {check}rows = out.size != 1
    k = {row_scale}
    total = 0.0
    for r in prange({x}.shape[0]):
        v = weights[r] * {row}({inputs}, r{args})
        if rows:
            out[r] = v * k
        total += v
    if not rows:
        out[0] = {scale} * total / {x}.{count}


def {name}_backward({inputs}, {hyper}weights, {grads}):
    {check}k = {scale} / {x}.{count}
    for r in prange({x}.shape[0]):
        {row}_grad({inputs}, r{args}, weights[r] * k, {grads})
"""


def _define(template, **fields):
    """Run ``template`` filled in with ``fields`` in this module's namespace, compiled as this
    file (so that numba can cache what it defines)."""
    exec(compile(template.format(**fields), __file__, "exec"), globals())


def _inline(template, term, stem, **fields):
    """``_STEM_row`` and ``_STEM_row_grad`` of ``template`` around the scalar function ``term``
    and its derivative ``TERM_grad``, all inlined where they are called."""
    g = globals()
    g[f"_{stem}_f"] = njit(inline="always")(term)
    g[f"_{stem}_df"] = njit(inline="always")(getattr(scalar, term.__name__ + "_grad"))
    _define(template, stem=stem, **fields)
    for f in (f"_{stem}_row", f"_{stem}_row_grad"):
        g[f] = njit(inline="always")(g[f])


_inline(_NORMALISED_ROW, scalar.categorical_crossentropy, "cce", args=", eps")
_inline(_NORMALISED_ROW, scalar.categorical_focal, "cfocal", args=", gamma, eps")


def _make(loss):
    """NAME_forward and NAME_backward of table row ``loss`` (scalar.LOSSES)."""
    name, x = loss.name, loss.inputs[1]
    inputs = ", ".join(loss.inputs)
    if loss.pointwise:
        _inline(_POINTWISE_ROW, loss.term, name, inputs=inputs, x=x, t=loss.inputs[0],
                args="".join(", " + h for h in loss.hyper))
    _define(_KERNELS, name=name, inputs=inputs, x=x, hyper="".join(h + ", " for h in loss.hyper),
            row=f"_{name if loss.pointwise else loss.term}_row", scale=loss.scale,
            args="".join(", " + a for a in loss.args.split(", ") if a),
            grads=", ".join(loss.grads),
            count="size" if loss.pointwise and not loss.per_row else "shape[0]",
            row_scale=f"{loss.scale} / {x}.shape[1]" if loss.pointwise and not loss.per_row
            else loss.scale,
            check=f"_check_labels(labels, {x}.shape[1])\n    " if "labels" in loss.inputs else "")
    par_min = _PAR_MIN_CHEAP if loss.cheap else _PAR_MIN
    for suffix, options in (("_forward", {"fastmath": _FM}), ("_backward", {})):
        globals()[name + suffix] = split_parallel(globals()[name + suffix], name + suffix,
                                                  1, par_min, error_model="numpy", **options)


for _loss in scalar.LOSSES:
    _make(_loss)
