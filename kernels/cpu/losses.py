"""Loss kernels: ``y_true``/``y_pred`` (N, D) C-contiguous; the mean loss goes to ``out[0]``.

``<loss>_forward(..., out)`` writes the mean loss (accumulated in float64, stored in ``out``'s
dtype); ``<loss>_backward(..., grad)`` writes d(mean loss)/d(y_pred) (``grad`` may alias
``y_pred``). Elementwise losses average over all N*D elements, crossentropies over the N rows.
Probability inputs follow Keras: clipped to [eps, 1 - eps] (categorical ones first divided by
their row sum), with the exact gradient of that clipped expression (zero where clipping binds).
Logit versions use log-sum-exp / log1p(exp(-|z|)) and stay finite for any finite logits.

Reductions use ``fastmath`` reassociation only (so the float64 sums vectorize); large inputs run a
``prange`` path, small ones a serial loop. ``error_model="numpy"``: IEEE division, so an empty
batch gives NaN rather than an exception. ``cache=True`` does not notice edits to ``scalar.py``:
delete ``kernels/cpu/__pycache__`` after changing it.
"""
import math

from numba import njit, prange

from .. import scalar

# prange above these sizes: same measurements as the activations (2 cores; thread start-up of a
# few us only pays for memory-bound loops from ~1e5 elements, for log/exp loops from ~1e4).
_PAR_MIN = 1 << 14
_PAR_MIN_CHEAP = 1 << 18
_FM = {"reassoc", "contract"}

_squared_error = njit(inline="always")(scalar.squared_error)
_squared_error_grad = njit(inline="always")(scalar.squared_error_grad)
_absolute_error = njit(inline="always")(scalar.absolute_error)
_absolute_error_grad = njit(inline="always")(scalar.absolute_error_grad)
_huber = njit(inline="always")(scalar.huber)
_huber_grad = njit(inline="always")(scalar.huber_grad)
_bce = njit(inline="always")(scalar.binary_crossentropy)
_bce_grad = njit(inline="always")(scalar.binary_crossentropy_grad)
_bce_logits = njit(inline="always")(scalar.binary_crossentropy_logits)
_bce_logits_grad = njit(inline="always")(scalar.binary_crossentropy_logits_grad)
_log_clipped = njit(inline="always")(scalar.log_clipped)
_neg_log_clipped_grad = njit(inline="always")(scalar.neg_log_clipped_grad)


@njit(inline="always")
def _flat(a):
    """The C-contiguous array a as a flat view."""
    return a.reshape(a.size)


# ------------------------------------------------------------------------------- mean squared error
@njit(cache=True, parallel=True, fastmath=_FM, error_model="numpy")
def mse_forward(y_true, y_pred, out):
    """out[0] = mean((y_pred - y_true)^2)."""
    t, p = _flat(y_true), _flat(y_pred)
    n = p.size
    total = 0.0
    if n < _PAR_MIN_CHEAP:
        for i in range(n):
            total += _squared_error(t[i], p[i])
    else:
        for i in prange(n):
            total += _squared_error(t[i], p[i])
    out[0] = total / n


@njit(cache=True, parallel=True, error_model="numpy")
def mse_backward(y_true, y_pred, grad):
    """grad = 2 (y_pred - y_true) / (N D)."""
    t, p, g = _flat(y_true), _flat(y_pred), _flat(grad)
    n = p.size
    inv = 1.0 / n
    if n < _PAR_MIN_CHEAP:
        for i in range(n):
            g[i] = _squared_error_grad(t[i], p[i]) * inv
    else:
        for i in prange(n):
            g[i] = _squared_error_grad(t[i], p[i]) * inv


# ------------------------------------------------------------------------------- mean absolute error
@njit(cache=True, parallel=True, fastmath=_FM, error_model="numpy")
def mae_forward(y_true, y_pred, out):
    """out[0] = mean(|y_pred - y_true|)."""
    t, p = _flat(y_true), _flat(y_pred)
    n = p.size
    total = 0.0
    if n < _PAR_MIN_CHEAP:
        for i in range(n):
            total += _absolute_error(t[i], p[i])
    else:
        for i in prange(n):
            total += _absolute_error(t[i], p[i])
    out[0] = total / n


@njit(cache=True, parallel=True, error_model="numpy")
def mae_backward(y_true, y_pred, grad):
    """grad = sign(y_pred - y_true) / (N D), 0 where they are equal."""
    t, p, g = _flat(y_true), _flat(y_pred), _flat(grad)
    n = p.size
    inv = 1.0 / n
    if n < _PAR_MIN_CHEAP:
        for i in range(n):
            g[i] = _absolute_error_grad(t[i], p[i]) * inv
    else:
        for i in prange(n):
            g[i] = _absolute_error_grad(t[i], p[i]) * inv


# ------------------------------------------------------------------------------- huber
@njit(cache=True, parallel=True, fastmath=_FM, error_model="numpy")
def huber_forward(y_true, y_pred, delta, out):
    """out[0] = mean(0.5 e^2 if |e| <= delta else delta (|e| - delta/2)), e = y_pred - y_true."""
    t, p = _flat(y_true), _flat(y_pred)
    n = p.size
    total = 0.0
    if n < _PAR_MIN_CHEAP:
        for i in range(n):
            total += _huber(t[i], p[i], delta)
    else:
        for i in prange(n):
            total += _huber(t[i], p[i], delta)
    out[0] = total / n


@njit(cache=True, parallel=True, error_model="numpy")
def huber_backward(y_true, y_pred, delta, grad):
    """grad = clip(y_pred - y_true, -delta, delta) / (N D)."""
    t, p, g = _flat(y_true), _flat(y_pred), _flat(grad)
    n = p.size
    inv = 1.0 / n
    if n < _PAR_MIN_CHEAP:
        for i in range(n):
            g[i] = _huber_grad(t[i], p[i], delta) * inv
    else:
        for i in prange(n):
            g[i] = _huber_grad(t[i], p[i], delta) * inv


# ------------------------------------------------------------------------------- binary crossentropy
@njit(cache=True, parallel=True, fastmath=_FM, error_model="numpy")
def binary_crossentropy_forward(y_true, y_pred, eps, out):
    """out[0] = mean(-(t log q + (1 - t) log(1 - q))), q = y_pred clipped to [eps, 1 - eps]."""
    t, p = _flat(y_true), _flat(y_pred)
    n = p.size
    total = 0.0
    if n < _PAR_MIN:
        for i in range(n):
            total += _bce(t[i], p[i], eps)
    else:
        for i in prange(n):
            total += _bce(t[i], p[i], eps)
    out[0] = total / n


@njit(cache=True, parallel=True, error_model="numpy")
def binary_crossentropy_backward(y_true, y_pred, eps, grad):
    """grad = ((1 - t) / (1 - p) - t / p) / (N D) inside [eps, 1 - eps], 0 where clipped."""
    t, p, g = _flat(y_true), _flat(y_pred), _flat(grad)
    n = p.size
    inv = 1.0 / n
    if n < _PAR_MIN:
        for i in range(n):
            g[i] = _bce_grad(t[i], p[i], eps) * inv
    else:
        for i in prange(n):
            g[i] = _bce_grad(t[i], p[i], eps) * inv


@njit(cache=True, parallel=True, fastmath=_FM, error_model="numpy")
def binary_crossentropy_logits_forward(y_true, logits, out):
    """out[0] = mean(max(z, 0) - t z + log1p(exp(-|z|))) (BCE of sigmoid(z), stable)."""
    t, z = _flat(y_true), _flat(logits)
    n = z.size
    total = 0.0
    if n < _PAR_MIN:
        for i in range(n):
            total += _bce_logits(t[i], z[i])
    else:
        for i in prange(n):
            total += _bce_logits(t[i], z[i])
    out[0] = total / n


@njit(cache=True, parallel=True, error_model="numpy")
def binary_crossentropy_logits_backward(y_true, logits, grad):
    """grad = (sigmoid(z) - t) / (N D)."""
    t, z, g = _flat(y_true), _flat(logits), _flat(grad)
    n = z.size
    inv = 1.0 / n
    if n < _PAR_MIN:
        for i in range(n):
            g[i] = _bce_logits_grad(t[i], z[i]) * inv
    else:
        for i in prange(n):
            g[i] = _bce_logits_grad(t[i], z[i]) * inv


# ------------------------------------------------------------------------------- row helpers
@njit(inline="always")
def _row_sum(a, r):
    s = 0.0
    for j in range(a.shape[1]):
        s += a[r, j]
    return s


@njit(inline="always")
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
def _cce_row(y_true, y_pred, eps, r):
    """-sum_c y_c log(clip(q_c / sum(q), eps, 1 - eps)) for row r."""
    inv_s = 1.0 / _row_sum(y_pred, r)
    loss = 0.0
    for j in range(y_pred.shape[1]):
        loss -= y_true[r, j] * _log_clipped(y_pred[r, j] * inv_s, eps)
    return loss


@njit(inline="always")
def _cce_grad_row(y_true, y_pred, eps, inv_n, grad, r):
    """With p = q / S and a_c = dL/dp_c: dL/dq_k = (a_k - sum_c a_c p_c) / S (times 1/N)."""
    inv_s = 1.0 / _row_sum(y_pred, r)
    dot = 0.0
    for j in range(y_pred.shape[1]):
        pj = y_pred[r, j] * inv_s
        dot += y_true[r, j] * _neg_log_clipped_grad(pj, eps) * pj
    for j in range(y_pred.shape[1]):
        a = y_true[r, j] * _neg_log_clipped_grad(y_pred[r, j] * inv_s, eps)
        grad[r, j] = (a - dot) * (inv_s * inv_n)


@njit(inline="always")
def _cce_logits_row(y_true, z, r):
    """sum_c y_c (logsumexp(z) - z_c) for row r."""
    m = _row_max(z, r)
    lse = m + math.log(_row_sum_exp(z, r, m))
    loss = 0.0
    for j in range(z.shape[1]):
        loss += y_true[r, j] * (lse - z[r, j])
    return loss


@njit(inline="always")
def _cce_logits_grad_row(y_true, z, inv_n, grad, r):
    """grad_c = (softmax(z)_c sum(y) - y_c) / N for row r."""
    m = _row_max(z, r)
    inv_s = 1.0 / _row_sum_exp(z, r, m)
    k = _row_sum(y_true, r) * inv_s
    for j in range(z.shape[1]):
        grad[r, j] = (math.exp(z[r, j] - m) * k - y_true[r, j]) * inv_n


@njit(inline="always")
def _sparse_row(labels, y_pred, eps, r):
    """-log(clip(q_label / sum(q), eps, 1 - eps)) for row r."""
    return -_log_clipped(y_pred[r, labels[r]] / _row_sum(y_pred, r), eps)


@njit(inline="always")
def _sparse_grad_row(labels, y_pred, eps, inv_n, grad, r):
    """The categorical gradient with a one-hot target: (a onehot - a p_label) / S (times 1/N)."""
    inv_s = 1.0 / _row_sum(y_pred, r)
    lab = labels[r]
    pl = y_pred[r, lab] * inv_s
    a = _neg_log_clipped_grad(pl, eps)
    k = inv_s * inv_n
    for j in range(y_pred.shape[1]):
        grad[r, j] = -a * pl * k
    grad[r, lab] = (a - a * pl) * k


@njit(inline="always")
def _sparse_logits_row(labels, z, r):
    """logsumexp(z) - z_label for row r."""
    m = _row_max(z, r)
    return m + math.log(_row_sum_exp(z, r, m)) - z[r, labels[r]]


@njit(inline="always")
def _sparse_logits_grad_row(labels, z, inv_n, grad, r):
    """grad = (softmax(z) - onehot(label)) / N for row r."""
    m = _row_max(z, r)
    k = inv_n / _row_sum_exp(z, r, m)
    for j in range(z.shape[1]):
        grad[r, j] = math.exp(z[r, j] - m) * k
    lab = labels[r]
    grad[r, lab] = grad[r, lab] - inv_n


@njit(inline="always")
def _check_labels(labels, classes):
    for r in range(labels.size):
        if labels[r] < 0 or labels[r] >= classes:
            raise ValueError("sparse crossentropy: a label is outside [0, number of classes)")


# ------------------------------------------------------------------------------- categorical
@njit(cache=True, parallel=True, fastmath=_FM, error_model="numpy")
def categorical_crossentropy_forward(y_true, y_pred, eps, out):
    """Keras: p = y_pred / row sum, clipped to [eps, 1 - eps]; out[0] = mean_n(-sum_c y log p)."""
    rows = y_pred.shape[0]
    total = 0.0
    if y_pred.size < _PAR_MIN:
        for r in range(rows):
            total += _cce_row(y_true, y_pred, eps, r)
    else:
        for r in prange(rows):
            total += _cce_row(y_true, y_pred, eps, r)
    out[0] = total / rows


@njit(cache=True, parallel=True, error_model="numpy")
def categorical_crossentropy_backward(y_true, y_pred, eps, grad):
    """Exact gradient of the forward expression through the row normalisation and the clip."""
    rows = y_pred.shape[0]
    inv_n = 1.0 / rows
    if y_pred.size < _PAR_MIN:
        for r in range(rows):
            _cce_grad_row(y_true, y_pred, eps, inv_n, grad, r)
    else:
        for r in prange(rows):
            _cce_grad_row(y_true, y_pred, eps, inv_n, grad, r)


@njit(cache=True, parallel=True, fastmath=_FM, error_model="numpy")
def categorical_crossentropy_logits_forward(y_true, logits, out):
    """out[0] = mean_n(-sum_c y log softmax(z)), log-softmax through a stable log-sum-exp."""
    rows = logits.shape[0]
    total = 0.0
    if logits.size < _PAR_MIN:
        for r in range(rows):
            total += _cce_logits_row(y_true, logits, r)
    else:
        for r in prange(rows):
            total += _cce_logits_row(y_true, logits, r)
    out[0] = total / rows


@njit(cache=True, parallel=True, error_model="numpy")
def categorical_crossentropy_logits_backward(y_true, logits, grad):
    """grad = (softmax(z) * sum_row(y) - y) / N."""
    rows = logits.shape[0]
    inv_n = 1.0 / rows
    if logits.size < _PAR_MIN:
        for r in range(rows):
            _cce_logits_grad_row(y_true, logits, inv_n, grad, r)
    else:
        for r in prange(rows):
            _cce_logits_grad_row(y_true, logits, inv_n, grad, r)


# ------------------------------------------------------------------------------- sparse categorical
@njit(cache=True, parallel=True, fastmath=_FM, error_model="numpy")
def sparse_categorical_crossentropy_forward(labels, y_pred, eps, out):
    """Categorical crossentropy (Keras semantics) with integer labels (N,) instead of one-hot."""
    rows = y_pred.shape[0]
    _check_labels(labels, y_pred.shape[1])
    total = 0.0
    if y_pred.size < _PAR_MIN:
        for r in range(rows):
            total += _sparse_row(labels, y_pred, eps, r)
    else:
        for r in prange(rows):
            total += _sparse_row(labels, y_pred, eps, r)
    out[0] = total / rows


@njit(cache=True, parallel=True, error_model="numpy")
def sparse_categorical_crossentropy_backward(labels, y_pred, eps, grad):
    """Exact gradient of the sparse forward expression (normalisation and clip included)."""
    rows = y_pred.shape[0]
    _check_labels(labels, y_pred.shape[1])
    inv_n = 1.0 / rows
    if y_pred.size < _PAR_MIN:
        for r in range(rows):
            _sparse_grad_row(labels, y_pred, eps, inv_n, grad, r)
    else:
        for r in prange(rows):
            _sparse_grad_row(labels, y_pred, eps, inv_n, grad, r)


@njit(cache=True, parallel=True, fastmath=_FM, error_model="numpy")
def sparse_categorical_crossentropy_logits_forward(labels, logits, out):
    """out[0] = mean_n(logsumexp(z_n) - z_n[label_n])."""
    rows = logits.shape[0]
    _check_labels(labels, logits.shape[1])
    total = 0.0
    if logits.size < _PAR_MIN:
        for r in range(rows):
            total += _sparse_logits_row(labels, logits, r)
    else:
        for r in prange(rows):
            total += _sparse_logits_row(labels, logits, r)
    out[0] = total / rows


@njit(cache=True, parallel=True, error_model="numpy")
def sparse_categorical_crossentropy_logits_backward(labels, logits, grad):
    """grad = (softmax(z) - onehot(label)) / N."""
    rows = logits.shape[0]
    _check_labels(labels, logits.shape[1])
    inv_n = 1.0 / rows
    if logits.size < _PAR_MIN:
        for r in range(rows):
            _sparse_logits_grad_row(labels, logits, inv_n, grad, r)
    else:
        for r in prange(rows):
            _sparse_logits_grad_row(labels, logits, inv_n, grad, r)
