"""Loss kernels with per-sample weights (Keras "sum_over_batch_size" reduction).

``<loss>_forward(y_true, y_pred, [hyper...], weights, out)`` writes
``out[0] = sum_i weights[i] * l_i / N`` for (N, D) C-contiguous ``y_true``/``y_pred`` and (N,)
``weights`` of ``y_pred``'s dtype, accumulated in float64; ``<loss>_backward(..., weights, grad)``
writes its gradient with respect to ``y_pred`` (row i scaled by ``weights[i] / N``; ``grad`` may
alias ``y_pred``). The per-sample loss ``l_i`` is the mean over the sample's D elements for
elementwise losses (mse, mae, huber, log_cosh, msle, hinge, squared_hinge, binary crossentropy and
binary focal), the sum over the D classes for crossentropies, categorical focal and KL divergence,
and one number per sample for Dice / Jaccard / Tversky (soft scores over the sample's elements).
The two embedding losses take their own inputs (``contrastive``: x1, x2, y; ``triplet_margin``:
anchor, positive, negative) and write one gradient per embedding input.

Probability inputs follow Keras: clipped to [eps, 1 - eps] (categorical ones first divided by
their row sum), with the exact gradient of that clipped expression (zero where clipping binds).
Logit versions use log-sum-exp / log1p(exp(-|z|)) and stay finite for any finite logits.
Per-element maths lives in kernels/scalar.py (shared with the CUDA kernels).

Reductions use ``fastmath`` reassociation only (so the float64 sums vectorize); large inputs run a
``prange`` path over rows, small ones a serial loop. ``error_model="numpy"``: IEEE division, so an
empty batch gives NaN rather than an exception. ``cache=True`` does not notice edits to
``scalar.py``: delete the numba cache after changing it.
"""
import math

from numba import njit, prange

from .. import scalar

# prange above these sizes: same measurements as the activations (2 cores; thread start-up of a
# few us only pays for memory-bound loops from ~1e5 elements, for log/exp loops from ~1e4).
_PAR_MIN = 1 << 14
_PAR_MIN_CHEAP = 1 << 18
_FM = {"reassoc", "contract"}


def _uniform(f, nparams):
    """``f(t, p, *params[:nparams])`` as an inlined function of (t, p, a, b, c, e), so that one
    row helper serves every elementwise loss."""
    f = njit(inline="always")(f)
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
    return njit(inline="always")(g)


_mse, _mse_grad = _uniform(scalar.squared_error, 0), _uniform(scalar.squared_error_grad, 0)
_mae, _mae_grad = _uniform(scalar.absolute_error, 0), _uniform(scalar.absolute_error_grad, 0)
_huber, _huber_grad = _uniform(scalar.huber, 1), _uniform(scalar.huber_grad, 1)
_bce, _bce_grad = (_uniform(scalar.binary_crossentropy, 1),
                   _uniform(scalar.binary_crossentropy_grad, 1))
_bce_logits, _bce_logits_grad = (_uniform(scalar.binary_crossentropy_logits, 0),
                                 _uniform(scalar.binary_crossentropy_logits_grad, 0))
_log_cosh, _log_cosh_grad = _uniform(scalar.log_cosh, 0), _uniform(scalar.log_cosh_grad, 0)
_msle, _msle_grad = (_uniform(scalar.squared_log_error, 1),
                     _uniform(scalar.squared_log_error_grad, 1))
_poisson, _poisson_grad = _uniform(scalar.poisson, 1), _uniform(scalar.poisson_grad, 1)
_hinge, _hinge_grad = _uniform(scalar.hinge, 0), _uniform(scalar.hinge_grad, 0)
_sq_hinge, _sq_hinge_grad = (_uniform(scalar.squared_hinge, 0),
                              _uniform(scalar.squared_hinge_grad, 0))
_kld, _kld_grad = _uniform(scalar.kl_divergence, 1), _uniform(scalar.kl_divergence_grad, 1)
_bfocal, _bfocal_grad = _uniform(scalar.binary_focal, 4), _uniform(scalar.binary_focal_grad, 4)
_bfocal_logits, _bfocal_logits_grad = (_uniform(scalar.binary_focal_logits, 3),
                                       _uniform(scalar.binary_focal_logits_grad, 3))

_log_clipped = njit(inline="always")(scalar.log_clipped)
_neg_log_clipped_grad = njit(inline="always")(scalar.neg_log_clipped_grad)
_cfocal = njit(inline="always")(scalar.categorical_focal)
_cfocal_grad = njit(inline="always")(scalar.categorical_focal_grad)
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
@njit(inline="always")
def _ew_row(f, t, p, r, a, b, c, e):
    """sum_j f(t[r, j], p[r, j], a, b, c, e)."""
    s = 0.0
    for j in range(p.shape[1]):
        s += f(t[r, j], p[r, j], a, b, c, e)
    return s


@njit(inline="always")
def _ew_grad_row(g, t, p, r, a, b, c, e, k, grad):
    """grad[r, j] = k g(t[r, j], p[r, j], a, b, c, e)."""
    for j in range(p.shape[1]):
        grad[r, j] = g(t[r, j], p[r, j], a, b, c, e) * k


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
def _cce_row(y_true, y_pred, eps, r):
    """-sum_c y_c log(clip(q_c / sum(q), eps, 1 - eps)) for row r."""
    inv_s = 1.0 / _row_sum(y_pred, r)
    loss = 0.0
    for j in range(y_pred.shape[1]):
        loss -= y_true[r, j] * _log_clipped(y_pred[r, j] * inv_s, eps)
    return loss


@njit(inline="always")
def _cce_grad_row(y_true, y_pred, eps, k, grad, r):
    """With p = q / S and a_c = dL/dp_c: dL/dq_k = (a_k - sum_c a_c p_c) / S (times k)."""
    inv_s = 1.0 / _row_sum(y_pred, r)
    dot = 0.0
    for j in range(y_pred.shape[1]):
        pj = y_pred[r, j] * inv_s
        dot += y_true[r, j] * _neg_log_clipped_grad(pj, eps) * pj
    for j in range(y_pred.shape[1]):
        a = y_true[r, j] * _neg_log_clipped_grad(y_pred[r, j] * inv_s, eps)
        grad[r, j] = (a - dot) * (inv_s * k)


@njit(inline="always")
def _cce_logits_row(y_true, z, r):
    """sum_c y_c (logsumexp(z) - z_c) for row r."""
    lse = _row_lse(z, r)
    loss = 0.0
    for j in range(z.shape[1]):
        loss += y_true[r, j] * (lse - z[r, j])
    return loss


@njit(inline="always")
def _cce_logits_grad_row(y_true, z, k, grad, r):
    """grad_c = (softmax(z)_c sum(y) - y_c) k for row r."""
    m = _row_max(z, r)
    inv_s = 1.0 / _row_sum_exp(z, r, m)
    st = _row_sum(y_true, r) * inv_s
    for j in range(z.shape[1]):
        grad[r, j] = (math.exp(z[r, j] - m) * st - y_true[r, j]) * k


@njit(inline="always")
def _sparse_row(labels, y_pred, eps, r):
    """-log(clip(q_label / sum(q), eps, 1 - eps)) for row r."""
    return -_log_clipped(y_pred[r, labels[r]] / _row_sum(y_pred, r), eps)


@njit(inline="always")
def _sparse_grad_row(labels, y_pred, eps, k, grad, r):
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
def _sparse_logits_grad_row(labels, z, k, grad, r):
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
def _cfocal_row(y_true, y_pred, gamma, eps, r):
    """sum_c -y_c (1 - q_c)^gamma log q_c, q = clip(y_pred / row sum, eps, 1 - eps) (no alpha)."""
    inv_s = 1.0 / _row_sum(y_pred, r)
    loss = 0.0
    for j in range(y_pred.shape[1]):
        loss += _cfocal(y_true[r, j], y_pred[r, j] * inv_s, gamma, eps)
    return loss


@njit(inline="always")
def _cfocal_grad_row(y_true, y_pred, gamma, eps, k, grad, r):
    """Through the normalisation p = q / S: dL/dq_k = (a_k - sum_c a_c p_c) / S (times k)."""
    inv_s = 1.0 / _row_sum(y_pred, r)
    dot = 0.0
    for j in range(y_pred.shape[1]):
        pj = y_pred[r, j] * inv_s
        dot += _cfocal_grad(y_true[r, j], pj, gamma, eps) * pj
    for j in range(y_pred.shape[1]):
        a = _cfocal_grad(y_true[r, j], y_pred[r, j] * inv_s, gamma, eps)
        grad[r, j] = (a - dot) * (inv_s * k)


@njit(inline="always")
def _cfocal_logits_row(y_true, z, gamma, r):
    """sum_c -y_c (1 - q_c)^gamma log q_c with log q = log softmax(z) (no alpha)."""
    lse = _row_lse(z, r)
    loss = 0.0
    for j in range(z.shape[1]):
        loss += _cfocal_logits(y_true[r, j], z[r, j] - lse, gamma)
    return loss


@njit(inline="always")
def _cfocal_logits_grad_row(y_true, z, gamma, k, grad, r):
    """grad_k = (b_k - q_k sum_c b_c) k, b_c = q_c dL/dq_c
    (scalar.categorical_focal_logits_grad)."""
    lse = _row_lse(z, r)
    sb = 0.0
    for j in range(z.shape[1]):
        sb += _cfocal_logits_grad(y_true[r, j], z[r, j] - lse, gamma)
    for j in range(z.shape[1]):
        lq = z[r, j] - lse
        grad[r, j] = (_cfocal_logits_grad(y_true[r, j], lq, gamma) - math.exp(lq) * sb) * k


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
def _overlap_grad_row(t, p, r, k, m, wc, wb, smooth, scale, grad):
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
def _pdist_row(x1, x2, p, eps, r):
    """||x1[r] - x2[r] + eps||_p (torch.pairwise_distance)."""
    s = 0.0
    for j in range(x1.shape[1]):
        s += _pnorm_power(x1[r, j] - x2[r, j] + eps, p)
    return _pnorm_root(s, p)


@njit(inline="always")
def _triplet_row(anchor, positive, negative, margin, p, eps, r):
    h = (_pdist_row(anchor, positive, p, eps, r) - _pdist_row(anchor, negative, p, eps, r)
         + margin)
    return h if h > 0.0 else 0.0


@njit(inline="always")
def _triplet_grad_row(anchor, positive, negative, margin, p, eps, k, ga, gp, gn, r):
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


# ------------------------------------------------------------------------------- mean squared error
@njit(cache=True, parallel=True, fastmath=_FM, error_model="numpy")
def mse_forward(y_true, y_pred, weights, out):
    """out[0] = sum_i w_i mean_d (p - t)^2 / N."""
    total = 0.0
    if y_pred.size < _PAR_MIN_CHEAP:
        for r in range(y_pred.shape[0]):
            total += weights[r] * _ew_row(_mse, y_true, y_pred, r, 0.0, 0.0, 0.0, 0.0)
    else:
        for r in prange(y_pred.shape[0]):
            total += weights[r] * _ew_row(_mse, y_true, y_pred, r, 0.0, 0.0, 0.0, 0.0)
    out[0] = total / y_pred.size


@njit(cache=True, parallel=True, error_model="numpy")
def mse_backward(y_true, y_pred, weights, grad):
    """grad = 2 w_i (p - t) / (N D)."""
    inv = 1.0 / y_pred.size
    if y_pred.size < _PAR_MIN_CHEAP:
        for r in range(y_pred.shape[0]):
            _ew_grad_row(_mse_grad, y_true, y_pred, r, 0.0, 0.0, 0.0, 0.0, weights[r] * inv, grad)
    else:
        for r in prange(y_pred.shape[0]):
            _ew_grad_row(_mse_grad, y_true, y_pred, r, 0.0, 0.0, 0.0, 0.0, weights[r] * inv, grad)


# ------------------------------------------------------------------------------ mean absolute error
@njit(cache=True, parallel=True, fastmath=_FM, error_model="numpy")
def mae_forward(y_true, y_pred, weights, out):
    """out[0] = sum_i w_i mean_d |p - t| / N."""
    total = 0.0
    if y_pred.size < _PAR_MIN_CHEAP:
        for r in range(y_pred.shape[0]):
            total += weights[r] * _ew_row(_mae, y_true, y_pred, r, 0.0, 0.0, 0.0, 0.0)
    else:
        for r in prange(y_pred.shape[0]):
            total += weights[r] * _ew_row(_mae, y_true, y_pred, r, 0.0, 0.0, 0.0, 0.0)
    out[0] = total / y_pred.size


@njit(cache=True, parallel=True, error_model="numpy")
def mae_backward(y_true, y_pred, weights, grad):
    """grad = w_i sign(p - t) / (N D), 0 where they are equal."""
    inv = 1.0 / y_pred.size
    if y_pred.size < _PAR_MIN_CHEAP:
        for r in range(y_pred.shape[0]):
            _ew_grad_row(_mae_grad, y_true, y_pred, r, 0.0, 0.0, 0.0, 0.0, weights[r] * inv, grad)
    else:
        for r in prange(y_pred.shape[0]):
            _ew_grad_row(_mae_grad, y_true, y_pred, r, 0.0, 0.0, 0.0, 0.0, weights[r] * inv, grad)


# -------------------------------------------------------------------------------------------- huber
@njit(cache=True, parallel=True, fastmath=_FM, error_model="numpy")
def huber_forward(y_true, y_pred, delta, weights, out):
    """out[0] = sum_i w_i mean_d huber(p - t) / N: 0.5 e^2 for |e| <= delta, else
    delta (|e| - delta/2)."""
    total = 0.0
    if y_pred.size < _PAR_MIN_CHEAP:
        for r in range(y_pred.shape[0]):
            total += weights[r] * _ew_row(_huber, y_true, y_pred, r, delta, 0.0, 0.0, 0.0)
    else:
        for r in prange(y_pred.shape[0]):
            total += weights[r] * _ew_row(_huber, y_true, y_pred, r, delta, 0.0, 0.0, 0.0)
    out[0] = total / y_pred.size


@njit(cache=True, parallel=True, error_model="numpy")
def huber_backward(y_true, y_pred, delta, weights, grad):
    """grad = w_i clip(p - t, -delta, delta) / (N D)."""
    inv = 1.0 / y_pred.size
    if y_pred.size < _PAR_MIN_CHEAP:
        for r in range(y_pred.shape[0]):
            _ew_grad_row(_huber_grad, y_true, y_pred, r, delta, 0.0, 0.0, 0.0, weights[r] * inv,
                         grad)
    else:
        for r in prange(y_pred.shape[0]):
            _ew_grad_row(_huber_grad, y_true, y_pred, r, delta, 0.0, 0.0, 0.0, weights[r] * inv,
                         grad)


# ----------------------------------------------------------------------------------------- log-cosh
@njit(cache=True, parallel=True, fastmath=_FM, error_model="numpy")
def log_cosh_forward(y_true, y_pred, weights, out):
    """out[0] = sum_i w_i mean_d log(cosh(p - t)) / N (stable for any finite error)."""
    total = 0.0
    if y_pred.size < _PAR_MIN:
        for r in range(y_pred.shape[0]):
            total += weights[r] * _ew_row(_log_cosh, y_true, y_pred, r, 0.0, 0.0, 0.0, 0.0)
    else:
        for r in prange(y_pred.shape[0]):
            total += weights[r] * _ew_row(_log_cosh, y_true, y_pred, r, 0.0, 0.0, 0.0, 0.0)
    out[0] = total / y_pred.size


@njit(cache=True, parallel=True, error_model="numpy")
def log_cosh_backward(y_true, y_pred, weights, grad):
    """grad = w_i tanh(p - t) / (N D)."""
    inv = 1.0 / y_pred.size
    if y_pred.size < _PAR_MIN:
        for r in range(y_pred.shape[0]):
            _ew_grad_row(_log_cosh_grad, y_true, y_pred, r, 0.0, 0.0, 0.0, 0.0, weights[r] * inv,
                         grad)
    else:
        for r in prange(y_pred.shape[0]):
            _ew_grad_row(_log_cosh_grad, y_true, y_pred, r, 0.0, 0.0, 0.0, 0.0, weights[r] * inv,
                         grad)


# --------------------------------------------------------------------------------------------- msle
@njit(cache=True, parallel=True, fastmath=_FM, error_model="numpy")
def msle_forward(y_true, y_pred, eps, weights, out):
    """out[0] = sum_i w_i mean_d (log1p(max(p, eps)) - log1p(max(t, eps)))^2 / N (Keras)."""
    total = 0.0
    if y_pred.size < _PAR_MIN:
        for r in range(y_pred.shape[0]):
            total += weights[r] * _ew_row(_msle, y_true, y_pred, r, eps, 0.0, 0.0, 0.0)
    else:
        for r in prange(y_pred.shape[0]):
            total += weights[r] * _ew_row(_msle, y_true, y_pred, r, eps, 0.0, 0.0, 0.0)
    out[0] = total / y_pred.size


@njit(cache=True, parallel=True, error_model="numpy")
def msle_backward(y_true, y_pred, eps, weights, grad):
    """grad = w_i 2 (log1p(p) - log1p(max(t, eps))) / ((1 + p) N D), 0 where p < eps."""
    inv = 1.0 / y_pred.size
    if y_pred.size < _PAR_MIN:
        for r in range(y_pred.shape[0]):
            _ew_grad_row(_msle_grad, y_true, y_pred, r, eps, 0.0, 0.0, 0.0, weights[r] * inv, grad)
    else:
        for r in prange(y_pred.shape[0]):
            _ew_grad_row(_msle_grad, y_true, y_pred, r, eps, 0.0, 0.0, 0.0, weights[r] * inv, grad)


# -------------------------------------------------------------------------------------------- poisson
@njit(cache=True, parallel=True, fastmath=_FM, error_model="numpy")
def poisson_forward(y_true, y_pred, eps, weights, out):
    """out[0] = sum_i w_i mean_d (p - t log(p + eps)) / N (Keras' Poisson)."""
    total = 0.0
    if y_pred.size < _PAR_MIN:
        for r in range(y_pred.shape[0]):
            total += weights[r] * _ew_row(_poisson, y_true, y_pred, r, eps, 0.0, 0.0, 0.0)
    else:
        for r in prange(y_pred.shape[0]):
            total += weights[r] * _ew_row(_poisson, y_true, y_pred, r, eps, 0.0, 0.0, 0.0)
    out[0] = total / y_pred.size


@njit(cache=True, parallel=True, error_model="numpy")
def poisson_backward(y_true, y_pred, eps, weights, grad):
    """grad = w_i (1 - t / (p + eps)) / (N D)."""
    inv = 1.0 / y_pred.size
    if y_pred.size < _PAR_MIN:
        for r in range(y_pred.shape[0]):
            _ew_grad_row(_poisson_grad, y_true, y_pred, r, eps, 0.0, 0.0, 0.0, weights[r] * inv, grad)
    else:
        for r in prange(y_pred.shape[0]):
            _ew_grad_row(_poisson_grad, y_true, y_pred, r, eps, 0.0, 0.0, 0.0, weights[r] * inv, grad)


# -------------------------------------------------------------------------------------------- hinge
@njit(cache=True, parallel=True, fastmath=_FM, error_model="numpy")
def hinge_forward(y_true, y_pred, weights, out):
    """out[0] = sum_i w_i mean_d max(1 - t p, 0) / N (targets -1/1)."""
    total = 0.0
    if y_pred.size < _PAR_MIN_CHEAP:
        for r in range(y_pred.shape[0]):
            total += weights[r] * _ew_row(_hinge, y_true, y_pred, r, 0.0, 0.0, 0.0, 0.0)
    else:
        for r in prange(y_pred.shape[0]):
            total += weights[r] * _ew_row(_hinge, y_true, y_pred, r, 0.0, 0.0, 0.0, 0.0)
    out[0] = total / y_pred.size


@njit(cache=True, parallel=True, error_model="numpy")
def hinge_backward(y_true, y_pred, weights, grad):
    """grad = -w_i t / (N D) where 1 - t p > 0, else 0."""
    inv = 1.0 / y_pred.size
    if y_pred.size < _PAR_MIN_CHEAP:
        for r in range(y_pred.shape[0]):
            _ew_grad_row(_hinge_grad, y_true, y_pred, r, 0.0, 0.0, 0.0, 0.0, weights[r] * inv,
                         grad)
    else:
        for r in prange(y_pred.shape[0]):
            _ew_grad_row(_hinge_grad, y_true, y_pred, r, 0.0, 0.0, 0.0, 0.0, weights[r] * inv,
                         grad)


@njit(cache=True, parallel=True, fastmath=_FM, error_model="numpy")
def squared_hinge_forward(y_true, y_pred, weights, out):
    """out[0] = sum_i w_i mean_d max(1 - t p, 0)^2 / N (targets -1/1)."""
    total = 0.0
    if y_pred.size < _PAR_MIN_CHEAP:
        for r in range(y_pred.shape[0]):
            total += weights[r] * _ew_row(_sq_hinge, y_true, y_pred, r, 0.0, 0.0, 0.0, 0.0)
    else:
        for r in prange(y_pred.shape[0]):
            total += weights[r] * _ew_row(_sq_hinge, y_true, y_pred, r, 0.0, 0.0, 0.0, 0.0)
    out[0] = total / y_pred.size


@njit(cache=True, parallel=True, error_model="numpy")
def squared_hinge_backward(y_true, y_pred, weights, grad):
    """grad = -2 w_i t max(1 - t p, 0) / (N D)."""
    inv = 1.0 / y_pred.size
    if y_pred.size < _PAR_MIN_CHEAP:
        for r in range(y_pred.shape[0]):
            _ew_grad_row(_sq_hinge_grad, y_true, y_pred, r, 0.0, 0.0, 0.0, 0.0, weights[r] * inv,
                         grad)
    else:
        for r in prange(y_pred.shape[0]):
            _ew_grad_row(_sq_hinge_grad, y_true, y_pred, r, 0.0, 0.0, 0.0, 0.0, weights[r] * inv,
                         grad)


# ------------------------------------------------------------------------------------ KL divergence
@njit(cache=True, parallel=True, fastmath=_FM, error_model="numpy")
def kl_divergence_forward(y_true, y_pred, eps, weights, out):
    """out[0] = sum_i w_i sum_d tc log(tc / pc) / N, t and p clipped to [eps, 1] (Keras)."""
    total = 0.0
    if y_pred.size < _PAR_MIN:
        for r in range(y_pred.shape[0]):
            total += weights[r] * _ew_row(_kld, y_true, y_pred, r, eps, 0.0, 0.0, 0.0)
    else:
        for r in prange(y_pred.shape[0]):
            total += weights[r] * _ew_row(_kld, y_true, y_pred, r, eps, 0.0, 0.0, 0.0)
    out[0] = total / y_pred.shape[0]


@njit(cache=True, parallel=True, error_model="numpy")
def kl_divergence_backward(y_true, y_pred, eps, weights, grad):
    """grad = -w_i tc / (p N) inside [eps, 1], 0 where the clip of p binds."""
    inv = 1.0 / y_pred.shape[0]
    if y_pred.size < _PAR_MIN:
        for r in range(y_pred.shape[0]):
            _ew_grad_row(_kld_grad, y_true, y_pred, r, eps, 0.0, 0.0, 0.0, weights[r] * inv, grad)
    else:
        for r in prange(y_pred.shape[0]):
            _ew_grad_row(_kld_grad, y_true, y_pred, r, eps, 0.0, 0.0, 0.0, weights[r] * inv, grad)


# ------------------------------------------------------------------------------ binary crossentropy
@njit(cache=True, parallel=True, fastmath=_FM, error_model="numpy")
def binary_crossentropy_forward(y_true, y_pred, eps, weights, out):
    """out[0] = sum_i w_i mean_d -(t log q + (1 - t) log(1 - q)) / N, q = clip(p, eps, 1 - eps)."""
    total = 0.0
    if y_pred.size < _PAR_MIN:
        for r in range(y_pred.shape[0]):
            total += weights[r] * _ew_row(_bce, y_true, y_pred, r, eps, 0.0, 0.0, 0.0)
    else:
        for r in prange(y_pred.shape[0]):
            total += weights[r] * _ew_row(_bce, y_true, y_pred, r, eps, 0.0, 0.0, 0.0)
    out[0] = total / y_pred.size


@njit(cache=True, parallel=True, error_model="numpy")
def binary_crossentropy_backward(y_true, y_pred, eps, weights, grad):
    """grad = w_i ((1 - t) / (1 - p) - t / p) / (N D) inside [eps, 1 - eps], 0 where clipped."""
    inv = 1.0 / y_pred.size
    if y_pred.size < _PAR_MIN:
        for r in range(y_pred.shape[0]):
            _ew_grad_row(_bce_grad, y_true, y_pred, r, eps, 0.0, 0.0, 0.0, weights[r] * inv, grad)
    else:
        for r in prange(y_pred.shape[0]):
            _ew_grad_row(_bce_grad, y_true, y_pred, r, eps, 0.0, 0.0, 0.0, weights[r] * inv, grad)


@njit(cache=True, parallel=True, fastmath=_FM, error_model="numpy")
def binary_crossentropy_logits_forward(y_true, logits, weights, out):
    """out[0] = sum_i w_i mean_d (max(z, 0) - t z + log1p(exp(-|z|))) / N (stable)."""
    total = 0.0
    if logits.size < _PAR_MIN:
        for r in range(logits.shape[0]):
            total += weights[r] * _ew_row(_bce_logits, y_true, logits, r, 0.0, 0.0, 0.0, 0.0)
    else:
        for r in prange(logits.shape[0]):
            total += weights[r] * _ew_row(_bce_logits, y_true, logits, r, 0.0, 0.0, 0.0, 0.0)
    out[0] = total / logits.size


@njit(cache=True, parallel=True, error_model="numpy")
def binary_crossentropy_logits_backward(y_true, logits, weights, grad):
    """grad = w_i (sigmoid(z) - t) / (N D)."""
    inv = 1.0 / logits.size
    if logits.size < _PAR_MIN:
        for r in range(logits.shape[0]):
            _ew_grad_row(_bce_logits_grad, y_true, logits, r, 0.0, 0.0, 0.0, 0.0,
                         weights[r] * inv, grad)
    else:
        for r in prange(logits.shape[0]):
            _ew_grad_row(_bce_logits_grad, y_true, logits, r, 0.0, 0.0, 0.0, 0.0,
                         weights[r] * inv, grad)


# ------------------------------------------------------------------------------------- binary focal
@njit(cache=True, parallel=True, fastmath=_FM, error_model="numpy")
def binary_focal_crossentropy_forward(y_true, y_pred, gamma, alpha, apply_class_balancing, eps,
                                      weights, out):
    """Keras BinaryFocalCrossentropy: per element (1 - p_t)^gamma bce(t, clip(p)), times
    t alpha + (1 - t)(1 - alpha) with apply_class_balancing; mean over D, weighted, / N."""
    a1 = alpha if apply_class_balancing else 1.0
    a0 = 1.0 - alpha if apply_class_balancing else 1.0
    total = 0.0
    if y_pred.size < _PAR_MIN:
        for r in range(y_pred.shape[0]):
            total += weights[r] * _ew_row(_bfocal, y_true, y_pred, r, gamma, a1, a0, eps)
    else:
        for r in prange(y_pred.shape[0]):
            total += weights[r] * _ew_row(_bfocal, y_true, y_pred, r, gamma, a1, a0, eps)
    out[0] = total / y_pred.size


@njit(cache=True, parallel=True, error_model="numpy")
def binary_focal_crossentropy_backward(y_true, y_pred, gamma, alpha, apply_class_balancing, eps,
                                       weights, grad):
    """Exact gradient of the forward expression (clipped bce, unclipped focal factor)."""
    a1 = alpha if apply_class_balancing else 1.0
    a0 = 1.0 - alpha if apply_class_balancing else 1.0
    inv = 1.0 / y_pred.size
    if y_pred.size < _PAR_MIN:
        for r in range(y_pred.shape[0]):
            _ew_grad_row(_bfocal_grad, y_true, y_pred, r, gamma, a1, a0, eps, weights[r] * inv,
                         grad)
    else:
        for r in prange(y_pred.shape[0]):
            _ew_grad_row(_bfocal_grad, y_true, y_pred, r, gamma, a1, a0, eps, weights[r] * inv,
                         grad)


@njit(cache=True, parallel=True, fastmath=_FM, error_model="numpy")
def binary_focal_crossentropy_logits_forward(y_true, logits, gamma, alpha, apply_class_balancing,
                                             weights, out):
    """Binary focal crossentropy of sigmoid(z), unclipped and stable for any finite z."""
    a1 = alpha if apply_class_balancing else 1.0
    a0 = 1.0 - alpha if apply_class_balancing else 1.0
    total = 0.0
    if logits.size < _PAR_MIN:
        for r in range(logits.shape[0]):
            total += weights[r] * _ew_row(_bfocal_logits, y_true, logits, r, gamma, a1, a0, 0.0)
    else:
        for r in prange(logits.shape[0]):
            total += weights[r] * _ew_row(_bfocal_logits, y_true, logits, r, gamma, a1, a0, 0.0)
    out[0] = total / logits.size


@njit(cache=True, parallel=True, error_model="numpy")
def binary_focal_crossentropy_logits_backward(y_true, logits, gamma, alpha, apply_class_balancing,
                                              weights, grad):
    """d/dz of the logits forward."""
    a1 = alpha if apply_class_balancing else 1.0
    a0 = 1.0 - alpha if apply_class_balancing else 1.0
    inv = 1.0 / logits.size
    if logits.size < _PAR_MIN:
        for r in range(logits.shape[0]):
            _ew_grad_row(_bfocal_logits_grad, y_true, logits, r, gamma, a1, a0, 0.0,
                         weights[r] * inv, grad)
    else:
        for r in prange(logits.shape[0]):
            _ew_grad_row(_bfocal_logits_grad, y_true, logits, r, gamma, a1, a0, 0.0,
                         weights[r] * inv, grad)


# -------------------------------------------------------------------------------------- categorical
@njit(cache=True, parallel=True, fastmath=_FM, error_model="numpy")
def categorical_crossentropy_forward(y_true, y_pred, eps, weights, out):
    """Keras: p = y_pred / row sum, clipped to [eps, 1 - eps];
    out[0] = sum_n w_n (-sum_c y log p) / N."""
    rows = y_pred.shape[0]
    total = 0.0
    if y_pred.size < _PAR_MIN:
        for r in range(rows):
            total += weights[r] * _cce_row(y_true, y_pred, eps, r)
    else:
        for r in prange(rows):
            total += weights[r] * _cce_row(y_true, y_pred, eps, r)
    out[0] = total / rows


@njit(cache=True, parallel=True, error_model="numpy")
def categorical_crossentropy_backward(y_true, y_pred, eps, weights, grad):
    """Exact gradient of the forward expression through the row normalisation and the clip."""
    rows = y_pred.shape[0]
    inv_n = 1.0 / rows
    if y_pred.size < _PAR_MIN:
        for r in range(rows):
            _cce_grad_row(y_true, y_pred, eps, weights[r] * inv_n, grad, r)
    else:
        for r in prange(rows):
            _cce_grad_row(y_true, y_pred, eps, weights[r] * inv_n, grad, r)


@njit(cache=True, parallel=True, fastmath=_FM, error_model="numpy")
def categorical_crossentropy_logits_forward(y_true, logits, weights, out):
    """out[0] = sum_n w_n (-sum_c y log softmax(z)) / N, stable log-sum-exp."""
    rows = logits.shape[0]
    total = 0.0
    if logits.size < _PAR_MIN:
        for r in range(rows):
            total += weights[r] * _cce_logits_row(y_true, logits, r)
    else:
        for r in prange(rows):
            total += weights[r] * _cce_logits_row(y_true, logits, r)
    out[0] = total / rows


@njit(cache=True, parallel=True, error_model="numpy")
def categorical_crossentropy_logits_backward(y_true, logits, weights, grad):
    """grad = w_n (softmax(z) * sum_row(y) - y) / N."""
    rows = logits.shape[0]
    inv_n = 1.0 / rows
    if logits.size < _PAR_MIN:
        for r in range(rows):
            _cce_logits_grad_row(y_true, logits, weights[r] * inv_n, grad, r)
    else:
        for r in prange(rows):
            _cce_logits_grad_row(y_true, logits, weights[r] * inv_n, grad, r)


# ------------------------------------------------------------------------------- sparse categorical
@njit(cache=True, parallel=True, fastmath=_FM, error_model="numpy")
def sparse_categorical_crossentropy_forward(labels, y_pred, eps, weights, out):
    """Categorical crossentropy (Keras semantics) with integer labels (N,) instead of one-hot."""
    rows = y_pred.shape[0]
    _check_labels(labels, y_pred.shape[1])
    total = 0.0
    if y_pred.size < _PAR_MIN:
        for r in range(rows):
            total += weights[r] * _sparse_row(labels, y_pred, eps, r)
    else:
        for r in prange(rows):
            total += weights[r] * _sparse_row(labels, y_pred, eps, r)
    out[0] = total / rows


@njit(cache=True, parallel=True, error_model="numpy")
def sparse_categorical_crossentropy_backward(labels, y_pred, eps, weights, grad):
    """Exact gradient of the sparse forward expression (normalisation and clip included)."""
    rows = y_pred.shape[0]
    _check_labels(labels, y_pred.shape[1])
    inv_n = 1.0 / rows
    if y_pred.size < _PAR_MIN:
        for r in range(rows):
            _sparse_grad_row(labels, y_pred, eps, weights[r] * inv_n, grad, r)
    else:
        for r in prange(rows):
            _sparse_grad_row(labels, y_pred, eps, weights[r] * inv_n, grad, r)


@njit(cache=True, parallel=True, fastmath=_FM, error_model="numpy")
def sparse_categorical_crossentropy_logits_forward(labels, logits, weights, out):
    """out[0] = sum_n w_n (logsumexp(z_n) - z_n[label_n]) / N."""
    rows = logits.shape[0]
    _check_labels(labels, logits.shape[1])
    total = 0.0
    if logits.size < _PAR_MIN:
        for r in range(rows):
            total += weights[r] * _sparse_logits_row(labels, logits, r)
    else:
        for r in prange(rows):
            total += weights[r] * _sparse_logits_row(labels, logits, r)
    out[0] = total / rows


@njit(cache=True, parallel=True, error_model="numpy")
def sparse_categorical_crossentropy_logits_backward(labels, logits, weights, grad):
    """grad = w_n (softmax(z) - onehot(label)) / N."""
    rows = logits.shape[0]
    _check_labels(labels, logits.shape[1])
    inv_n = 1.0 / rows
    if logits.size < _PAR_MIN:
        for r in range(rows):
            _sparse_logits_grad_row(labels, logits, weights[r] * inv_n, grad, r)
    else:
        for r in prange(rows):
            _sparse_logits_grad_row(labels, logits, weights[r] * inv_n, grad, r)


# -------------------------------------------------------------------------------- categorical focal
@njit(cache=True, parallel=True, fastmath=_FM, error_model="numpy")
def categorical_focal_crossentropy_forward(y_true, y_pred, gamma, alpha, eps, weights, out):
    """Keras CategoricalFocalCrossentropy: q = clip(y_pred / row sum, eps, 1 - eps);
    l_n = -alpha sum_c y_c (1 - q_c)^gamma log q_c; out[0] = sum_n w_n l_n / N."""
    rows = y_pred.shape[0]
    total = 0.0
    if y_pred.size < _PAR_MIN:
        for r in range(rows):
            total += weights[r] * _cfocal_row(y_true, y_pred, gamma, eps, r)
    else:
        for r in prange(rows):
            total += weights[r] * _cfocal_row(y_true, y_pred, gamma, eps, r)
    out[0] = alpha * total / rows


@njit(cache=True, parallel=True, error_model="numpy")
def categorical_focal_crossentropy_backward(y_true, y_pred, gamma, alpha, eps, weights, grad):
    """Exact gradient through the row normalisation and the clip."""
    rows = y_pred.shape[0]
    k = alpha / rows
    if y_pred.size < _PAR_MIN:
        for r in range(rows):
            _cfocal_grad_row(y_true, y_pred, gamma, eps, weights[r] * k, grad, r)
    else:
        for r in prange(rows):
            _cfocal_grad_row(y_true, y_pred, gamma, eps, weights[r] * k, grad, r)


@njit(cache=True, parallel=True, fastmath=_FM, error_model="numpy")
def categorical_focal_crossentropy_logits_forward(y_true, logits, gamma, alpha, weights, out):
    """The categorical focal loss of softmax(z), unclipped, through a stable log-softmax."""
    rows = logits.shape[0]
    total = 0.0
    if logits.size < _PAR_MIN:
        for r in range(rows):
            total += weights[r] * _cfocal_logits_row(y_true, logits, gamma, r)
    else:
        for r in prange(rows):
            total += weights[r] * _cfocal_logits_row(y_true, logits, gamma, r)
    out[0] = alpha * total / rows


@njit(cache=True, parallel=True, error_model="numpy")
def categorical_focal_crossentropy_logits_backward(y_true, logits, gamma, alpha, weights, grad):
    """d/dz of the logits forward: alpha w_n (b_k - q_k sum_c b_c) / N."""
    rows = logits.shape[0]
    k = alpha / rows
    if logits.size < _PAR_MIN:
        for r in range(rows):
            _cfocal_logits_grad_row(y_true, logits, gamma, weights[r] * k, grad, r)
    else:
        for r in prange(rows):
            _cfocal_logits_grad_row(y_true, logits, gamma, weights[r] * k, grad, r)


# --------------------------------------------------------------------------- Dice, Jaccard, Tversky
# Soft scores over each sample's D elements from A = sum t p, B = sum t, C = sum p; the smoothing
# term s is added to numerator and denominator (an empty target predicted empty scores 1).

@njit(cache=True, parallel=True, fastmath=_FM, error_model="numpy")
def dice_forward(y_true, y_pred, smooth, weights, out):
    """l_n = 1 - (2 A + s) / (B + C + s); out[0] = sum_n w_n l_n / N."""
    total = 0.0
    if y_pred.size < _PAR_MIN_CHEAP:
        for r in range(y_pred.shape[0]):
            total += weights[r] * _overlap_row(y_true, y_pred, r, 2.0, 0.0, 1.0, 1.0, smooth)
    else:
        for r in prange(y_pred.shape[0]):
            total += weights[r] * _overlap_row(y_true, y_pred, r, 2.0, 0.0, 1.0, 1.0, smooth)
    out[0] = total / y_pred.shape[0]


@njit(cache=True, parallel=True, error_model="numpy")
def dice_backward(y_true, y_pred, smooth, weights, grad):
    """grad_j = -w_n d score / d p_j / N."""
    inv_n = 1.0 / y_pred.shape[0]
    if y_pred.size < _PAR_MIN_CHEAP:
        for r in range(y_pred.shape[0]):
            _overlap_grad_row(y_true, y_pred, r, 2.0, 0.0, 1.0, 1.0, smooth, weights[r] * inv_n,
                              grad)
    else:
        for r in prange(y_pred.shape[0]):
            _overlap_grad_row(y_true, y_pred, r, 2.0, 0.0, 1.0, 1.0, smooth, weights[r] * inv_n,
                              grad)


@njit(cache=True, parallel=True, fastmath=_FM, error_model="numpy")
def jaccard_forward(y_true, y_pred, smooth, weights, out):
    """l_n = 1 - (A + s) / (B + C - A + s) (soft IoU); out[0] = sum_n w_n l_n / N."""
    total = 0.0
    if y_pred.size < _PAR_MIN_CHEAP:
        for r in range(y_pred.shape[0]):
            total += weights[r] * _overlap_row(y_true, y_pred, r, 1.0, -1.0, 1.0, 1.0, smooth)
    else:
        for r in prange(y_pred.shape[0]):
            total += weights[r] * _overlap_row(y_true, y_pred, r, 1.0, -1.0, 1.0, 1.0, smooth)
    out[0] = total / y_pred.shape[0]


@njit(cache=True, parallel=True, error_model="numpy")
def jaccard_backward(y_true, y_pred, smooth, weights, grad):
    """grad_j = -w_n d score / d p_j / N."""
    inv_n = 1.0 / y_pred.shape[0]
    if y_pred.size < _PAR_MIN_CHEAP:
        for r in range(y_pred.shape[0]):
            _overlap_grad_row(y_true, y_pred, r, 1.0, -1.0, 1.0, 1.0, smooth, weights[r] * inv_n,
                              grad)
    else:
        for r in prange(y_pred.shape[0]):
            _overlap_grad_row(y_true, y_pred, r, 1.0, -1.0, 1.0, 1.0, smooth, weights[r] * inv_n,
                              grad)


@njit(cache=True, parallel=True, fastmath=_FM, error_model="numpy")
def tversky_forward(y_true, y_pred, alpha, beta, smooth, weights, out):
    """l_n = 1 - (TP + s) / (TP + alpha FP + beta FN + s), TP = A, FP = C - A, FN = B - A (Keras:
    alpha weighs false positives, beta false negatives); out[0] = sum_n w_n l_n / N."""
    m = 1.0 - alpha - beta
    total = 0.0
    if y_pred.size < _PAR_MIN_CHEAP:
        for r in range(y_pred.shape[0]):
            total += weights[r] * _overlap_row(y_true, y_pred, r, 1.0, m, alpha, beta, smooth)
    else:
        for r in prange(y_pred.shape[0]):
            total += weights[r] * _overlap_row(y_true, y_pred, r, 1.0, m, alpha, beta, smooth)
    out[0] = total / y_pred.shape[0]


@njit(cache=True, parallel=True, error_model="numpy")
def tversky_backward(y_true, y_pred, alpha, beta, smooth, weights, grad):
    """grad_j = -w_n d score / d p_j / N."""
    m = 1.0 - alpha - beta
    inv_n = 1.0 / y_pred.shape[0]
    if y_pred.size < _PAR_MIN_CHEAP:
        for r in range(y_pred.shape[0]):
            _overlap_grad_row(y_true, y_pred, r, 1.0, m, alpha, beta, smooth, weights[r] * inv_n,
                              grad)
    else:
        for r in prange(y_pred.shape[0]):
            _overlap_grad_row(y_true, y_pred, r, 1.0, m, alpha, beta, smooth, weights[r] * inv_n,
                              grad)


# --------------------------------------------------------------------------------------- embeddings
@njit(cache=True, parallel=True, fastmath=_FM, error_model="numpy")
def contrastive_forward(x1, x2, y, margin, eps, weights, out):
    """Pairs of embeddings x1, x2 (N, D) with labels y (N,) (1: similar, 0: dissimilar):
    l_n = y d^2 + (1 - y) max(margin - d, 0)^2, d = ||x1 - x2 + eps||_2;
    out[0] = sum w_n l_n / N."""
    rows = x1.shape[0]
    total = 0.0
    if x1.size < _PAR_MIN_CHEAP:
        for r in range(rows):
            total += weights[r] * _contrastive(_dist2_row(x1, x2, eps, r), y[r], margin)
    else:
        for r in prange(rows):
            total += weights[r] * _contrastive(_dist2_row(x1, x2, eps, r), y[r], margin)
    out[0] = total / rows


@njit(cache=True, parallel=True, error_model="numpy")
def contrastive_backward(x1, x2, y, margin, eps, weights, grad1, grad2):
    """grad1 = c (x1 - x2 + eps) w_n / N = -grad2 (scalar.contrastive_grad gives c)."""
    rows = x1.shape[0]
    inv_n = 1.0 / rows
    if x1.size < _PAR_MIN_CHEAP:
        for r in range(rows):
            c = _contrastive_grad(_dist2_row(x1, x2, eps, r), y[r], margin) * weights[r] * inv_n
            for j in range(x1.shape[1]):
                v = (x1[r, j] - x2[r, j] + eps) * c
                grad1[r, j] = v
                grad2[r, j] = -v
    else:
        for r in prange(rows):
            c = _contrastive_grad(_dist2_row(x1, x2, eps, r), y[r], margin) * weights[r] * inv_n
            for j in range(x1.shape[1]):
                v = (x1[r, j] - x2[r, j] + eps) * c
                grad1[r, j] = v
                grad2[r, j] = -v


@njit(cache=True, parallel=True, fastmath=_FM, error_model="numpy")
def triplet_margin_forward(anchor, positive, negative, margin, p, eps, weights, out):
    """torch.nn.TripletMarginLoss: l_n = max(d(a, pos) - d(a, neg) + margin, 0) with
    d(x, y) = ||x - y + eps||_p; out[0] = sum_n w_n l_n / N."""
    rows = anchor.shape[0]
    total = 0.0
    if anchor.size < _PAR_MIN:
        for r in range(rows):
            total += weights[r] * _triplet_row(anchor, positive, negative, margin, p, eps, r)
    else:
        for r in prange(rows):
            total += weights[r] * _triplet_row(anchor, positive, negative, margin, p, eps, r)
    out[0] = total / rows


@njit(cache=True, parallel=True, error_model="numpy")
def triplet_margin_backward(anchor, positive, negative, margin, p, eps, weights, grad_anchor,
                            grad_positive, grad_negative):
    """Gradients for the three inputs (0 for triplets inside the margin)."""
    rows = anchor.shape[0]
    inv_n = 1.0 / rows
    if anchor.size < _PAR_MIN:
        for r in range(rows):
            _triplet_grad_row(anchor, positive, negative, margin, p, eps, weights[r] * inv_n,
                              grad_anchor, grad_positive, grad_negative, r)
    else:
        for r in prange(rows):
            _triplet_grad_row(anchor, positive, negative, margin, p, eps, weights[r] * inv_n,
                              grad_anchor, grad_positive, grad_negative, r)
