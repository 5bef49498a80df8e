"""Scalar maths shared by the CPU and CUDA kernels.

Plain Python functions of floats using only ``math`` functions that both Numba targets compile;
``kernels/cpu`` wraps them with ``njit(inline="always")``, ``kernels/cuda`` with
``cuda.jit(device=True)``. The constants are Python floats, so most arithmetic on float32
arguments happens in float64 (a ``math`` function of a float32 value runs in float32, as Numba
types it by its argument); results are within a few float32 ulps once the kernel stores them.
The exception: ``sigmoid_v32`` / ``tanh_v32`` take numpy.float32 constants to compute in float32.

Activations: ``NAME(x, alpha)`` is the forward value and ``NAME_grad(x, y, alpha)`` the local
derivative dy/dx, given the forward input ``x`` and output ``y`` (a kernel multiplies it by the
incoming gradient); ``alpha`` is the parameter of leaky_relu and elu, an unused 0.0 default of the
others, so that the kernels call every activation alike. Losses: per-element terms
``NAME(t, p[, param])`` of target ``t`` and prediction ``p`` and their derivatives d/dp
``NAME_grad(t, p[, param])``. Optimizers: ``NAME_at(i, param, grad, *state, *hyper)`` updates
element i of flat buffers in place, given the per-call constants ``NAME_constants(...)`` (the CPU
kernels compute them inside the kernel, the CUDA ones on the host).
Written so that no finite input gives NaN or Inf (stable sigmoid and softplus, tails guarded).
Each function is self-contained (math calls and arithmetic only, no calls to its neighbours), so
that wrapping any one of them for either target needs nothing else from this module; the one
exception is the CPU's vectorizable exp family (``sigmoid_v``, ``tanh_v``, ``exp_neg_v`` and the
float32 twins), which share their range reduction ``exp_neg_parts`` (``register_jitable``, so that
any numba function calling them compiles it too).
"""
import math
import numbers

import numpy
from numba.extending import register_jitable

SQRT_HALF = 0.7071067811865476          # 1 / sqrt(2)
INV_SQRT_2PI = 0.3989422804014327       # 1 / sqrt(2 pi)
SQRT_2_OVER_PI = 0.7978845608028654     # sqrt(2 / pi)
GELU_TANH_C = 0.044715

# The elementwise activations by code: the ``activation`` argument of the fused forward kernels
# (``dense_forward_activation``, ``conv2d_forward_activation``) is an index into this tuple.
# Each is a pair of functions below, ``NAME(x, alpha)`` and ``NAME_grad(x, y, alpha)``; the kernel
# modules (kernels/cpu/activations.py, kernels/cuda/activations.py) make NAME_forward and
# NAME_backward of every name here, so a new activation is its two functions and its name here.
ACTIVATION_CODES = ("linear", "relu", "leaky_relu", "elu", "gelu", "gelu_tanh", "sigmoid", "tanh",
                    "softplus", "mish")


def fused_activation(code, pre, out):
    """The name of activation ``code``, after checking the arguments of a fused forward kernel
    on the host (both targets): an integer code in range, and ``pre`` and ``out`` of one shape
    (the kernels write both at the same indices)."""
    if isinstance(code, bool) or not isinstance(code, numbers.Integral) or \
            not 0 <= code < len(ACTIVATION_CODES):
        raise ValueError(f"activation must be an int code in [0, {len(ACTIVATION_CODES)}) "
                         f"(kernels/scalar.py ACTIVATION_CODES), got {code!r}")
    if tuple(pre.shape) != tuple(out.shape):
        raise ValueError(f"pre and out must have the same shape, got {tuple(pre.shape)} and "
                         f"{tuple(out.shape)}")
    return ACTIVATION_CODES[int(code)]


# ----------------------------------------------------------------------------------- activations
def linear(x, alpha=0.0):
    """Identity."""
    return x


def linear_grad(x, y, alpha=0.0):
    return 1.0


def relu(x, alpha=0.0):
    """max(x, 0); NaN stays NaN."""
    return 0.0 if x <= 0.0 else x


def relu_grad(x, y, alpha=0.0):
    """1 for x > 0, else 0 (0 at x == 0, as PyTorch)."""
    return 1.0 if x > 0.0 else 0.0


def leaky_relu(x, alpha):
    """x for x >= 0, alpha * x below."""
    return alpha * x if x < 0.0 else x


def leaky_relu_grad(x, y, alpha):
    """1 for x > 0, else alpha (alpha at x == 0, as PyTorch)."""
    return 1.0 if x > 0.0 else alpha


def elu(x, alpha):
    """x for x >= 0, alpha * (exp(x) - 1) below (expm1 keeps small |x| exact)."""
    return alpha * math.expm1(x) if x < 0.0 else x


def elu_grad(x, y, alpha):
    """1 for x > 0, else alpha * exp(x)."""
    return 1.0 if x > 0.0 else alpha * math.exp(x)


def gelu(x, alpha=0.0):
    """Exact GELU: x * Phi(x), with Phi(x) = erfc(-x / sqrt 2) / 2 accurate in both tails."""
    return 0.5 * x * math.erfc(-x * SQRT_HALF)


def gelu_grad(x, y, alpha=0.0):
    """Phi(x) + x * phi(x)."""
    return 0.5 * math.erfc(-x * SQRT_HALF) + x * INV_SQRT_2PI * math.exp(-0.5 * x * x)


def sigmoid(x, alpha=0.0):
    """1 / (1 + exp(-x)), never overflowing: exp of a non-positive number only."""
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def sigmoid_grad(x, y, alpha=0.0):
    """sigmoid(x) * (1 - sigmoid(x)) = e / (1 + e)^2 with e = exp(-|x|) (no cancellation)."""
    e = math.exp(-math.fabs(x))
    d = 1.0 + e
    return e / (d * d)


def gelu_tanh(x, alpha=0.0):
    """0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3), computed as x * sigmoid(2u)."""
    v = 2.0 * SQRT_2_OVER_PI * (x + GELU_TANH_C * x * x * x)
    if v >= 0.0:
        return x / (1.0 + math.exp(-v))
    e = math.exp(v)
    return x * e / (1.0 + e)


def gelu_tanh_grad(x, y, alpha=0.0):
    """sigmoid(v) + x sigmoid'(v) dv/dx with v = 2u; beyond |x| > 30 exactly 1 or 0 in float64."""
    if x > 30.0:
        return 1.0
    if x < -30.0:
        return 0.0
    v = 2.0 * SQRT_2_OVER_PI * (x + GELU_TANH_C * x * x * x)
    dv = 2.0 * SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_TANH_C * x * x)
    e = math.exp(-math.fabs(v))
    d = 1.0 + e
    s = 1.0 / d if v >= 0.0 else e / d
    return s + x * dv * e / (d * d)


def tanh(x, alpha=0.0):
    return math.tanh(x)


def tanh_grad(x, y, alpha=0.0):
    """1 - tanh(x)^2 = 4e / (1 + e)^2 with e = exp(-2|x|) (no cancellation near saturation)."""
    e = math.exp(-2.0 * math.fabs(x))
    d = 1.0 + e
    return 4.0 * e / (d * d)


def softplus(x, alpha=0.0):
    """log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|))."""
    return (x if x > 0.0 else 0.0) + math.log1p(math.exp(-math.fabs(x)))


def softplus_grad(x, y, alpha=0.0):
    """sigmoid(x), stable."""
    e = math.exp(-math.fabs(x))
    return 1.0 / (1.0 + e) if x >= 0.0 else e / (1.0 + e)


def mish(x, alpha=0.0):
    """x * tanh(softplus(x)) (Misra 2019), softplus as above."""
    return x * math.tanh((x if x > 0.0 else 0.0) + math.log1p(math.exp(-math.fabs(x))))


def mish_grad(x, y, alpha=0.0):
    """tanh(s) + x sigmoid(x) sech(s)^2, s = softplus(x); sech^2 = 4e / (1 + e)^2, e = exp(-2s)."""
    e = math.exp(-math.fabs(x))
    s = (x if x > 0.0 else 0.0) + math.log1p(e)
    e2 = math.exp(-2.0 * s)
    d = 1.0 + e2
    sech2 = 4.0 * e2 / (d * d)                  # before x: x * 4 would overflow near the max
    return math.tanh(s) + x * ((1.0 if x >= 0.0 else e) / (1.0 + e)) * sech2


# ----------------------------------------------------------------------------------- losses
def squared_error(t, p):
    e = p - t
    return e * e


def squared_error_grad(t, p):
    return 2.0 * (p - t)


def absolute_error(t, p):
    return math.fabs(p - t)


def absolute_error_grad(t, p):
    """sign(p - t), 0 where p == t."""
    e = p - t
    if e > 0.0:
        return 1.0
    if e < 0.0:
        return -1.0
    return 0.0


def huber(t, p, delta):
    """0.5 e^2 for |e| <= delta, delta (|e| - delta / 2) beyond."""
    a = math.fabs(p - t)
    if a <= delta:
        return 0.5 * a * a
    return delta * (a - 0.5 * delta)


def huber_grad(t, p, delta):
    """e clipped to [-delta, delta]."""
    e = p - t
    if e > delta:
        return delta
    if e < -delta:
        return -delta
    return e


def binary_crossentropy(t, p, eps):
    """-(t log q + (1 - t) log(1 - q)) with q = p clipped to [eps, 1 - eps] (Keras)."""
    q = p
    if q < eps:
        q = eps
    elif q > 1.0 - eps:
        q = 1.0 - eps
    return -(t * math.log(q) + (1.0 - t) * math.log(1.0 - q))


def binary_crossentropy_grad(t, p, eps):
    """d/dp of the clipped expression: 0 where p is outside [eps, 1 - eps]."""
    if p < eps or p > 1.0 - eps:
        return 0.0
    return (1.0 - t) / (1.0 - p) - t / p


def binary_crossentropy_logits(t, z):
    """-(t log sigmoid(z) + (1 - t) log(1 - sigmoid(z))) = max(z, 0) - t z + log1p(exp(-|z|))."""
    return (z if z > 0.0 else 0.0) + math.log1p(math.exp(-math.fabs(z))) - t * z


def binary_crossentropy_logits_grad(t, z):
    """sigmoid(z) - t, stable."""
    e = math.exp(-math.fabs(z))
    s = 1.0 / (1.0 + e) if z >= 0.0 else e / (1.0 + e)
    return s - t


def categorical_crossentropy(t, q, eps):
    """-t log(clip(q, eps, 1 - eps)) of a normalised probability q (Keras)."""
    qc = eps if q < eps else (1.0 - eps if q > 1.0 - eps else q)
    return -t * math.log(qc)


def categorical_crossentropy_grad(t, q, eps):
    """d/dq of categorical_crossentropy: -t / q inside [eps, 1 - eps], 0 where the clip binds."""
    if q < eps or q > 1.0 - eps:
        return 0.0
    return -t / q


def log_clipped(p, eps):
    """log of p clipped to [eps, 1 - eps]."""
    if p < eps:
        return math.log(eps)
    if p > 1.0 - eps:
        return math.log(1.0 - eps)
    return math.log(p)


def neg_log_clipped_grad(p, eps):
    """d/dp of -log(clip(p, eps, 1 - eps)): -1/p inside the range, 0 where clipped."""
    if p < eps or p > 1.0 - eps:
        return 0.0
    return -1.0 / p


# ----------------------------------------------------------------------------------- more losses
# Per-element terms of the losses added with sample weights (kernels/cpu/losses.py and
# kernels/cuda/losses.py sum them per sample, weight the sample and divide by the batch size).

def log_cosh(t, p):
    """log(cosh(e)), e = p - t: log1p(2 sinh^2(|e|/2)) below 1 (no cancellation for tiny e),
    |e| + log1p(exp(-2|e|)) - log 2 above (no overflow)."""
    a = math.fabs(p - t)
    if a < 1.0:
        s = math.sinh(0.5 * a)
        return math.log1p(2.0 * s * s)
    return a + math.log1p(math.exp(-2.0 * a)) - 0.6931471805599453


def log_cosh_grad(t, p):
    """tanh(p - t)."""
    return math.tanh(p - t)


def squared_log_error(t, p, eps):
    """(log(1 + max(p, eps)) - log(1 + max(t, eps)))^2 (Keras msle, log1p for accuracy)."""
    a = math.log1p(p if p > eps else eps)
    b = math.log1p(t if t > eps else eps)
    d = a - b
    return d * d


def squared_log_error_grad(t, p, eps):
    """2 (log1p(p) - log1p(max(t, eps))) / (1 + p) for p >= eps, 0 below (max binds)."""
    if p < eps:
        return 0.0
    d = math.log1p(p) - math.log1p(t if t > eps else eps)
    return 2.0 * d / (1.0 + p)


def poisson(t, p, eps):
    """p - t log(p + eps): the Poisson negative log-likelihood of count t with rate p, less the
    constant log(t!) (Keras' Poisson; torch's poisson_nll_loss with log_input=False)."""
    return p - t * math.log(p + eps)


def poisson_grad(t, p, eps):
    return 1.0 - t / (p + eps)


def hinge(t, p):
    """max(1 - t p, 0) (targets -1/1)."""
    m = 1.0 - t * p
    return m if m > 0.0 else 0.0


def hinge_grad(t, p):
    """-t where 1 - t p > 0, else 0."""
    return -t if 1.0 - t * p > 0.0 else 0.0


def squared_hinge(t, p):
    """max(1 - t p, 0)^2."""
    m = 1.0 - t * p
    return m * m if m > 0.0 else 0.0


def squared_hinge_grad(t, p):
    """-2 t max(1 - t p, 0)."""
    m = 1.0 - t * p
    return -2.0 * t * m if m > 0.0 else 0.0


def kl_divergence(t, p, eps):
    """tc log(tc / pc), tc and pc = t and p clipped to [eps, 1] (Keras)."""
    tc = eps if t < eps else (1.0 if t > 1.0 else t)
    pc = eps if p < eps else (1.0 if p > 1.0 else p)
    return tc * math.log(tc / pc)


def kl_divergence_grad(t, p, eps):
    """-tc / p inside [eps, 1], 0 where the clip of p binds."""
    if p < eps or p > 1.0:
        return 0.0
    tc = eps if t < eps else (1.0 if t > 1.0 else t)
    return -tc / p


def binary_focal(t, p, gamma, alpha, balance, eps):
    """Keras binary focal crossentropy of one element: (t alpha1 + (1 - t) alpha0) u^gamma bce,
    alpha1, alpha0 = alpha, 1 - alpha with class balancing, else 1; u = 1 - p_t =
    t (1 - p) + (1 - t) p with p unclipped, bce of p clipped to [eps, 1 - eps]."""
    alpha1 = alpha if balance else 1.0
    alpha0 = 1.0 - alpha if balance else 1.0
    q = eps if p < eps else (1.0 - eps if p > 1.0 - eps else p)
    bce = -(t * math.log(q) + (1.0 - t) * math.log(1.0 - q))
    u = t * (1.0 - p) + (1.0 - t) * p
    if u > 0.0:
        f = math.pow(u, gamma)
    else:
        f = 1.0 if gamma == 0.0 else 0.0
    return (t * alpha1 + (1.0 - t) * alpha0) * f * bce


def binary_focal_grad(t, p, gamma, alpha, balance, eps):
    """d/dp of binary_focal: weight (gamma u^(gamma-1) (1 - 2t) bce + u^gamma dbce/dp), dbce = 0
    where the clip binds; at u = 0 the focal factor's derivative is taken as its limit from u > 0
    (0 for gamma > 1, 1 - 2t for gamma == 1, 0 for gamma < 1 by convention)."""
    alpha1 = alpha if balance else 1.0
    alpha0 = 1.0 - alpha if balance else 1.0
    q = eps if p < eps else (1.0 - eps if p > 1.0 - eps else p)
    bce = -(t * math.log(q) + (1.0 - t) * math.log(1.0 - q))
    dbce = 0.0 if (p < eps or p > 1.0 - eps) else (1.0 - t) / (1.0 - p) - t / p
    u = t * (1.0 - p) + (1.0 - t) * p
    if u > 0.0:
        f = math.pow(u, gamma)
        df = gamma * f / u * (1.0 - 2.0 * t)
    else:
        f = 1.0 if gamma == 0.0 else 0.0
        df = 1.0 - 2.0 * t if gamma == 1.0 else 0.0
    return (t * alpha1 + (1.0 - t) * alpha0) * (df * bce + f * dbce)


def binary_focal_logits(t, z, gamma, alpha, balance):
    """binary_focal of sigmoid(z), unclipped and stable: bce = max(z, 0) - t z + log1p(exp(-|z|)),
    u = t sigmoid(-z) + (1 - t) sigmoid(z)."""
    alpha1 = alpha if balance else 1.0
    alpha0 = 1.0 - alpha if balance else 1.0
    e = math.exp(-math.fabs(z))
    if z >= 0.0:
        s, sn = 1.0 / (1.0 + e), e / (1.0 + e)
    else:
        s, sn = e / (1.0 + e), 1.0 / (1.0 + e)
    bce = (z if z > 0.0 else 0.0) + math.log1p(e) - t * z
    u = t * sn + (1.0 - t) * s
    if u > 0.0:
        f = math.pow(u, gamma)
    else:
        f = 1.0 if gamma == 0.0 else 0.0
    return (t * alpha1 + (1.0 - t) * alpha0) * f * bce


def binary_focal_logits_grad(t, z, gamma, alpha, balance):
    """d/dz: weight (gamma u^(gamma-1) (1 - 2t) s (1 - s) bce + u^gamma (s - t)), s = sigmoid(z);
    where u underflows to 0 the first term's limit is 0."""
    alpha1 = alpha if balance else 1.0
    alpha0 = 1.0 - alpha if balance else 1.0
    e = math.exp(-math.fabs(z))
    if z >= 0.0:
        s, sn = 1.0 / (1.0 + e), e / (1.0 + e)
    else:
        s, sn = e / (1.0 + e), 1.0 / (1.0 + e)
    bce = (z if z > 0.0 else 0.0) + math.log1p(e) - t * z
    u = t * sn + (1.0 - t) * s
    if u > 0.0:
        f = math.pow(u, gamma)
        df = gamma * f / u * (1.0 - 2.0 * t) * s * sn
    else:
        f = 1.0 if gamma == 0.0 else 0.0
        df = 0.0
    return (t * alpha1 + (1.0 - t) * alpha0) * (df * bce + f * (s - t))


def categorical_focal(t, q, gamma, eps):
    """-t (1 - qc)^gamma log qc for a normalised probability q clipped to qc in [eps, 1 - eps]
    (Keras; the alpha factor is applied by the kernel)."""
    qc = eps if q < eps else (1.0 - eps if q > 1.0 - eps else q)
    return -t * math.pow(1.0 - qc, gamma) * math.log(qc)


def categorical_focal_grad(t, q, gamma, eps):
    """d/dq of categorical_focal: t (gamma (1 - q)^(gamma-1) log q - (1 - q)^gamma / q) inside
    [eps, 1 - eps], 0 where the clip binds."""
    if q < eps or q > 1.0 - eps:
        return 0.0
    om = 1.0 - q
    f = math.pow(om, gamma)
    return t * (gamma * f / om * math.log(q) - f / q)


def categorical_focal_logits(t, logq, gamma):
    """-t (1 - q)^gamma log q from log q = log softmax (1 - q = -expm1(log q), accurate near 1)."""
    om = -math.expm1(logq)
    if om > 0.0:
        f = math.pow(om, gamma)
    else:
        f = 1.0 if gamma == 0.0 else 0.0
    return -t * f * logq


def categorical_focal_logits_grad(t, logq, gamma):
    """q d/dq of categorical_focal_logits: t (gamma (1 - q)^(gamma-1) q log q - (1 - q)^gamma),
    finite for every q (its limit where 1 - q rounds to 0). A kernel turns these b_c into the
    logit gradient b_k - q_k sum_c b_c."""
    om = -math.expm1(logq)
    if om > 0.0:
        f = math.pow(om, gamma)
        return t * (gamma * f / om * math.exp(logq) * logq - f)
    return -t if gamma == 0.0 else 0.0


def tversky_score(a, b, c, k, m, wc, wb, smooth):
    """(k A + s) / (m A + wc C + wb B + s) of the row sums A = sum t p, B = sum t, C = sum p:
    Dice (k, m, wc, wb) = (2, 0, 1, 1), Jaccard (1, -1, 1, 1), Tversky (1, 1 - al - be, al, be)."""
    return (k * a + smooth) / (m * a + wc * c + wb * b + smooth)


def tversky_score_grad(t, a, b, c, k, m, wc, wb, smooth):
    """d tversky_score / d p_j for the element with target t."""
    num = k * a + smooth
    den = m * a + wc * c + wb * b + smooth
    return (k * t * den - num * (m * t + wc)) / (den * den)


def contrastive(d2, y, margin):
    """y d^2 + (1 - y) max(margin - d, 0)^2 of a squared distance d2 (y = 1: similar pair)."""
    h = margin - math.sqrt(d2)
    h = h if h > 0.0 else 0.0
    return y * d2 + (1.0 - y) * h * h


def contrastive_grad(d2, y, margin):
    """c with d loss / d x1_j = c (x1_j - x2_j + eps): 2y - 2 (1 - y) max(margin - d, 0) / d
    (the hinge part taken as 0 where d = 0)."""
    d = math.sqrt(d2)
    c = 2.0 * y
    if d > 0.0 and margin - d > 0.0:
        c -= 2.0 * (1.0 - y) * (margin - d) / d
    return c


def pnorm_power(v, p):
    """|v|^p (the summand of a p-norm)."""
    if p == 2.0:
        return v * v
    if p == 1.0:
        return math.fabs(v)
    return math.pow(math.fabs(v), p)


def pnorm_root(s, p):
    """s^(1/p): the p-norm from its sum of powers."""
    if p == 2.0:
        return math.sqrt(s)
    if p == 1.0:
        return s
    return math.pow(s, 1.0 / p)


def pnorm_grad(v, norm, p):
    """d ||x||_p / d x_j = sign(v) (|v| / norm)^(p - 1) with v = x_j; 0 where the norm is 0."""
    if norm == 0.0 or v == 0.0:
        return 0.0
    if p == 2.0:
        return v / norm
    g = 1.0 if p == 1.0 else math.pow(math.fabs(v) / norm, p - 1.0)
    return g if v > 0.0 else -g


# ----------------------------------------------------------------------------------- loss table
class Loss:
    """One loss kernel pair ``NAME_forward(*inputs, *hyper, weights, out)`` /
    ``NAME_backward(*inputs, *hyper, weights, *grads)``; kernels/cpu/losses.py and
    kernels/cuda/losses.py generate both from the rows of ``LOSSES``.

    ``term``: for a pointwise loss the scalar function of one element, ``term(t, p, *hyper)``, its
    derivative d/dp being ``TERM_grad``; for a row loss the name of the row computation that each
    target module defines (``_TERM_row`` on the CPU, ``_ROWS[term]`` on the GPU). ``hyper``: the hyperparameter names. ``kinds``: the
    kinds of target and prediction the loss takes (tests and benchmark inputs). ``cheap``: a
    memory-bound loss (prange from _PAR_MIN_CHEAP elements, not _PAR_MIN). ``per_row``: the
    per-sample loss of a pointwise loss is the sum over its elements, not their mean. ``args``:
    the row computation's arguments from the hyperparameters (default: the hyperparameters);
    ``scale``: a factor of the whole loss. ``inputs`` (default: ``y_true`` or ``labels``, then
    ``y_pred`` or ``logits``) and ``grads`` name the arrays."""

    def __init__(self, name, term, hyper="", kinds="", cheap=False, per_row=False, args=None,
                 scale="1.0", inputs=None, grads="grad"):
        self.name, self.term, self.hyper, self.kinds = name, term, tuple(hyper.split()), kinds
        self.cheap, self.per_row, self.scale = cheap, per_row, scale
        self.pointwise = not isinstance(term, str)
        self.args = ", ".join(self.hyper) if args is None else args
        if inputs is None:
            inputs = ("labels " if kinds.startswith("labels") else "y_true ") + (
                "logits" if name.endswith("_logits") else "y_pred")
        self.inputs, self.grads = tuple(inputs.split()), tuple(grads.split())


LOSSES = (
    Loss("mse", squared_error, "", "real real", cheap=True),
    Loss("mae", absolute_error, "", "real real", cheap=True),
    Loss("huber", huber, "delta", "real real", cheap=True),
    Loss("log_cosh", log_cosh, "", "real real"),
    Loss("msle", squared_log_error, "eps", "pos pos"),
    Loss("poisson", poisson, "eps", "pos pos"),
    Loss("hinge", hinge, "", "pm1 real", cheap=True),
    Loss("squared_hinge", squared_hinge, "", "pm1 real", cheap=True),
    Loss("kl_divergence", kl_divergence, "eps", "dist prob", per_row=True),
    Loss("binary_crossentropy", binary_crossentropy, "eps", "unit prob"),
    Loss("binary_crossentropy_logits", binary_crossentropy_logits, "", "unit real"),
    Loss("binary_focal_crossentropy", binary_focal, "gamma alpha apply_class_balancing eps",
         "unit prob"),
    Loss("binary_focal_crossentropy_logits", binary_focal_logits,
         "gamma alpha apply_class_balancing", "unit real"),
    Loss("categorical_crossentropy", "cce", "eps", "dist prob"),
    Loss("categorical_crossentropy_logits", "cce_logits", "", "dist real"),
    Loss("sparse_categorical_crossentropy", "sparse", "eps", "labels prob"),
    Loss("sparse_categorical_crossentropy_logits", "sparse_logits", "", "labels real"),
    Loss("categorical_focal_crossentropy", "cfocal", "gamma alpha eps", "dist prob",
         args="gamma, eps", scale="alpha"),
    Loss("categorical_focal_crossentropy_logits", "cfocal_logits", "gamma alpha", "dist real",
         args="gamma", scale="alpha"),
    Loss("dice", "overlap", "smooth", "mask prob", True, args="2.0, 0.0, 1.0, 1.0, smooth"),
    Loss("jaccard", "overlap", "smooth", "mask prob", True, args="1.0, -1.0, 1.0, 1.0, smooth"),
    Loss("tversky", "overlap", "alpha beta smooth", "mask prob", True,
         args="1.0, 1.0 - alpha - beta, alpha, beta, smooth"),     # (k, m, wc, wb) of the score
    Loss("contrastive", "contrastive", "margin eps", cheap=True, inputs="x1 x2 y",
         grads="grad1 grad2"),
    Loss("triplet_margin", "triplet", "margin p eps", inputs="anchor positive negative",
         grads="grad_anchor grad_positive grad_negative"),
)


# ----------------------------------------------------------------------------------- optimizers
# The per-element updates of the optimizer kernels (kernels/{cpu,cuda}/optim.py; torch.optim
# formulas unless named otherwise): ``NAME_at(i, param, grad, *state, *hyper)`` updates element i
# of ``param`` and of its state buffers in place (``grad`` is only read; a state buffer that a
# configuration does not use, such as ``vmax`` without amsgrad, is never touched and may be
# empty). ``NAME_constants(...)`` are the per-call constants (bias corrections, bounds) computed
# once per update: inside the CPU kernel, on the host before a CUDA launch. Each optimizer's row
# of ``UPDATES`` (after these functions) is what both targets generate its kernel from.

def sgd_at(i, param, grad, velocity, lr, momentum, weight_decay, nesterov):
    """SGD with momentum (dampening 0), optional Nesterov and L2 weight decay."""
    g = grad[i] + weight_decay * param[i]
    if momentum != 0.0:
        buf = momentum * velocity[i] + g      # zero-initialised buffer: first step gives buf = g
        velocity[i] = buf
        g = g + momentum * buf if nesterov else buf
    param[i] -= lr * g


def adagrad_at(i, param, grad, accum, lr, eps, weight_decay):
    """Adagrad (no learning-rate decay): accum += g^2; param -= lr g / (sqrt(accum) + eps)."""
    g = grad[i] + weight_decay * param[i]
    s = accum[i] + g * g
    accum[i] = s
    param[i] -= lr * g / (math.sqrt(s) + eps)


def rmsprop_at(i, param, grad, square_avg, grad_avg, momentum_buf, lr, alpha, eps, weight_decay,
               momentum, centered):
    """RMSprop: optional centering and momentum, eps outside the sqrt."""
    g = grad[i] + weight_decay * param[i]
    sa = alpha * square_avg[i] + (1.0 - alpha) * g * g
    square_avg[i] = sa
    if centered:
        ga = alpha * grad_avg[i] + (1.0 - alpha) * g
        grad_avg[i] = ga
        # sa >= ga^2 in exact arithmetic; the clamp keeps a rounding error from giving sqrt(<0).
        avg = math.sqrt(max(sa - ga * ga, 0.0)) + eps
    else:
        avg = math.sqrt(sa) + eps
    if momentum > 0.0:
        buf = momentum * momentum_buf[i] + g / avg
        momentum_buf[i] = buf
        param[i] -= lr * buf
    else:
        param[i] -= lr * g / avg


def adam_constants(lr, beta1, beta2, step):
    """(step_size, bc2_sqrt) of Adam at 1-based ``step``: lr / (1 - beta1^t), sqrt(1 - beta2^t)."""
    return lr / (1.0 - beta1 ** step), math.sqrt(1.0 - beta2 ** step)


def adam_at(i, param, grad, m, v, vmax, beta1, beta2, eps, l2, decay, amsgrad, step_size,
            bc2_sqrt):
    """Adam (l2: L2 decay added to the gradient) and AdamW (decay = 1 - lr wd multiplies param),
    optional AMSGrad."""
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


def adadelta_at(i, param, grad, square_avg, acc_delta, lr, rho, eps, weight_decay):
    """Adadelta: the step is g sqrt(acc_delta + eps) / sqrt(square_avg + eps), times lr."""
    g = grad[i] + weight_decay * param[i]
    sa = rho * square_avg[i] + (1.0 - rho) * g * g
    square_avg[i] = sa
    delta = math.sqrt(acc_delta[i] + eps) / math.sqrt(sa + eps) * g
    acc_delta[i] = rho * acc_delta[i] + (1.0 - rho) * delta * delta
    param[i] -= lr * delta


def nadam_constants(lr, beta2, mu, mu_next, mu_product, step):
    """(bc2, c_grad, c_m) of NAdam: the second-moment bias correction and the coefficients of
    the gradient and of the first moment in the step."""
    return (1.0 - beta2 ** step, -lr * (1.0 - mu) / (1.0 - mu_product),
            -lr * mu_next / (1.0 - mu_product * mu_next))


def nadam_at(i, param, grad, m, v, beta1, beta2, eps, weight_decay, bc2, c_grad, c_m):
    """NAdam: the caller's momentum schedule (mu, mu_next: this and the next step's momentum
    coefficients; mu_product: the product of all of them up to this step) is folded into c_grad
    and c_m (nadam_constants)."""
    g = grad[i] + weight_decay * param[i]
    mi = beta1 * m[i] + (1.0 - beta1) * g
    vi = beta2 * v[i] + (1.0 - beta2) * g * g
    m[i] = mi
    v[i] = vi
    denom = math.sqrt(vi / bc2) + eps
    p = param[i] + c_grad * g / denom
    param[i] = p + c_m * mi / denom


def adamax_constants(lr, beta1, step):
    """Adamax's bias-corrected learning rate lr / (1 - beta1^t)."""
    return lr / (1.0 - beta1 ** step)


def adamax_at(i, param, grad, m, u, beta1, beta2, eps, weight_decay, clr):
    """Adamax: u = max(beta2 u, |g| + eps); param -= clr m / u."""
    g = grad[i] + weight_decay * param[i]
    mi = beta1 * m[i] + (1.0 - beta1) * g
    ui = max(beta2 * u[i], abs(g) + eps)
    m[i] = mi
    u[i] = ui
    param[i] -= clr * mi / ui


def radam_constants(beta1, beta2, step):
    """(bc1, bc2_sqrt, rect, rectify) of RAdam: bias corrections and the variance rectification
    term, applied once the approximated SMA length rho_t exceeds 5 (rectify)."""
    bc1 = 1.0 - beta1 ** step
    bc2 = 1.0 - beta2 ** step
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    rho_t = rho_inf - 2.0 * step * beta2 ** step / bc2
    if rho_t <= 5.0:
        return bc1, math.sqrt(bc2), 1.0, False
    return bc1, math.sqrt(bc2), math.sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf
                                          / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t)), True


def radam_at(i, param, grad, m, v, beta1, beta2, eps, weight_decay, lr, bc1, bc2_sqrt, rect,
             rectify):
    """RAdam: the rectified Adam step, or bias-corrected momentum SGD before rectify."""
    g = grad[i] + weight_decay * param[i]
    mi = beta1 * m[i] + (1.0 - beta1) * g
    vi = beta2 * v[i] + (1.0 - beta2) * g * g
    m[i] = mi
    v[i] = vi
    if rectify:
        param[i] -= mi / bc1 * lr * (bc2_sqrt / (math.sqrt(vi) + eps)) * rect
    else:
        param[i] -= mi / bc1 * lr


def adabound_constants(lr, beta1, beta2, final_lr, gamma, step):
    """(step_size, lower, upper) of AdaBound: Adam's bias-corrected rate and the bounds
    final_lr (1 - 1 / (gamma t + 1)), final_lr (1 + 1 / (gamma t))."""
    return (lr * math.sqrt(1.0 - beta2 ** step) / (1.0 - beta1 ** step),
            final_lr * (1.0 - 1.0 / (gamma * step + 1.0)), final_lr * (1.0 + 1.0 / (gamma * step)))


def adabound_at(i, param, grad, m, v, vmax, beta1, beta2, eps, weight_decay, amsbound, step_size,
                lower, upper):
    """AdaBound / AMSBound (Luo et al. 2019): Adam's per-coordinate rate clipped to
    [lower, upper], times m; amsbound uses the running maximum of v."""
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


def lion_at(i, param, grad, m, lr, beta1, beta2, weight_decay):
    """Lion (Chen et al. 2023): param -= lr (sign(beta1 m + (1 - beta1) g) + weight_decay param),
    then m = beta2 m + (1 - beta2) g; sign(0) = 0 and a NaN stays NaN."""
    c = beta1 * m[i] + (1.0 - beta1) * grad[i]
    param[i] -= lr * ((1.0 if c > 0.0 else (-1.0 if c < 0.0 else c)) + weight_decay * param[i])
    m[i] = beta2 * m[i] + (1.0 - beta2) * grad[i]


def lookahead_at(i, slow, fast, alpha):
    """Lookahead's synchronisation (Zhang et al. 2019): slow += alpha (fast - slow); fast = slow."""
    s = slow[i] + alpha * (fast[i] - slow[i])
    slow[i] = s
    fast[i] = s


# ----------------------------------------------------------------------------------- update table
def _arg_names(fn):
    """The parameter names of the plain function ``fn``, in order."""
    return fn.__code__.co_varnames[:fn.__code__.co_argcount]


class Update:
    """One optimizer kernel ``NAME_update(param, grad, *slots, *hyper)``; kernels/cpu/optim.py and
    kernels/cuda/optim.py generate it from its row of ``UPDATES``: check the buffer sizes, compute
    ``NAME_constants`` once (if it exists; its arguments are named by its parameters), then call
    ``NAME_at`` for every element. ``NAME_at``'s arguments after the state are hyperparameters or,
    by name and in order, what ``NAME_constants`` returns.

    ``slots``: the state buffers, in argument order; ``hyper``: the hyperparameter names.
    ``when``: {slot: condition on the hyperparameters}, a slot only used (and size-checked) when its
    condition holds. ``shared_by``: the public kernels that call this one loop with arguments of
    their own (Adam and AdamW); the targets write those kernels, the loop is private.
    ``flags``: the arguments of ``NAME_at`` that are booleans (the CUDA kernels declare kinds).
    ``strict_constants``: compile ``NAME_constants`` without fastmath on the CPU."""

    def __init__(self, name, slots, hyper, when=None, flags="", shared_by="",
                 strict_constants=False):
        self.name, self.slots, self.hyper = name, tuple(slots.split()), tuple(hyper.split())
        self.flags = tuple(flags.split())
        self.when, self.shared_by = dict(when or {}), tuple(shared_by.split())
        self.strict_constants = strict_constants
        self.at = globals()[name + "_at"]
        self.constants = globals().get(name + "_constants")
        self.at_args = _arg_names(self.at)[3 + len(self.slots):]
        self.constant_args = self.constant_names = ()
        if self.constants is not None:
            self.constant_args = _arg_names(self.constants)
            self.constant_names = tuple(a for a in self.at_args if a not in self.hyper)


UPDATES = (
    Update("sgd", "velocity", "lr momentum weight_decay nesterov",
           when={"velocity": "momentum != 0.0"}, flags="nesterov"),
    Update("adagrad", "accum", "lr eps weight_decay"),
    Update("rmsprop", "square_avg grad_avg momentum_buf",
           "lr alpha eps weight_decay momentum centered",
           when={"grad_avg": "centered", "momentum_buf": "momentum > 0.0"}, flags="centered"),
    # adam_update passes (l2, decay) = (weight_decay, 1), adamw_update (0, 1 - lr weight_decay)
    Update("adam", "m v vmax", "lr beta1 beta2 eps l2 decay amsgrad step",
           when={"vmax": "amsgrad"}, flags="amsgrad", shared_by="adam_update adamw_update"),
    Update("adadelta", "square_avg acc_delta", "lr rho eps weight_decay"),
    Update("nadam", "m v", "lr beta1 beta2 eps weight_decay mu mu_next mu_product step"),
    Update("adamax", "m u", "lr beta1 beta2 eps weight_decay step"),
    # fastmath's reassociation moves the rectification term by an ulp
    Update("radam", "m v", "lr beta1 beta2 eps weight_decay step", flags="rectify",
           strict_constants=True),
    Update("adabound", "m v vmax", "lr beta1 beta2 eps weight_decay final_lr gamma amsbound step",
           when={"vmax": "amsbound"}, flags="amsbound"),
    Update("lion", "m", "lr beta1 beta2 weight_decay"),
)


# ----------------------------------------------------------------------------------- ops
# The pointwise maths of the op library (kernels/{cpu,cuda}/ops.py, behind ``nb.ops``): one
# function per arity switched on an integer code, an index into the tuples below. Every branch
# returns a float, so a kernel stores it in its dtype. Domain edges are written out (negative
# sqrt/log, negative base of a non-integer power: NaN; log(0) = -inf) so that the plain-Python
# functions (the CUDA simulator runs them) give what the compiled ones give instead of raising.

MAX_RANK = 6    # index spaces of the op kernels: shapes and strides are tuples of 6 int64

UNARY_CODES = ("neg", "square", "sqrt", "exp", "log", "abs", "power", "clip", "affine", "rdiv",
               "sign")
NEG, SQUARE, SQRT, EXP, LOG, ABS, POWER, CLIP, AFFINE, RDIV, SIGN = range(len(UNARY_CODES))

# the comparisons (equal to less_equal) give 1.0 where true, else 0.0 (false with a NaN operand,
# except not_equal), and have zero derivatives
BINARY_CODES = ("add", "subtract", "multiply", "divide", "maximum", "minimum", "equal",
                "not_equal", "greater", "greater_equal", "less", "less_equal")
(ADD, SUBTRACT, MULTIPLY, DIVIDE, MAXIMUM, MINIMUM, EQUAL, NOT_EQUAL, GREATER, GREATER_EQUAL,
 LESS, LESS_EQUAL) = range(len(BINARY_CODES))


def unary(code, x, alpha, beta):
    """Unary op ``code`` (UNARY_CODES) of x; ``alpha``/``beta``: power's exponent, clip's bounds,
    affine's alpha x + beta, rdiv's alpha / x (ignored by the others)."""
    if code == NEG:
        return -x
    if code == SQUARE:
        return x * x
    if code == SQRT:
        return math.sqrt(x) if x >= 0.0 else math.nan
    if code == EXP:
        return math.exp(x)
    if code == LOG:
        if x > 0.0:
            return math.log(x)
        return -math.inf if x == 0.0 else math.nan
    if code == ABS:
        return math.fabs(x)
    if code == POWER:       # NaN for a negative base and a non-integer exponent, as torch
        if x < 0.0 and alpha % 1.0 != 0.0 and not math.isinf(alpha):
            return math.nan
        return math.pow(x, alpha)
    if code == CLIP:        # min(max(x, alpha), beta): beta when alpha > beta; NaN stays NaN
        v = alpha if x < alpha else x
        return beta if v > beta else v
    if code == AFFINE:
        return alpha * x + beta
    if code == SIGN:        # as np.sign: 0 at +-0, NaN stays NaN
        if x > 0.0:
            return 1.0
        if x < 0.0:
            return -1.0
        return 0.0 if x == 0.0 else x
    return alpha / x        # RDIV


def unary_grad(code, x, y, alpha, beta):
    """d unary(code, x) / dx, given the forward input x and output y."""
    if code == NEG:
        return -1.0
    if code == SQUARE:
        return 2.0 * x
    if code == SQRT:
        return 0.5 / y
    if code == EXP:
        return y
    if code == LOG:
        return 1.0 / x
    if code == ABS:         # sign(x), 0 at 0
        if x > 0.0:
            return 1.0
        return -1.0 if x < 0.0 else 0.0
    if code == POWER:       # alpha x^(alpha - 1), 0 for alpha == 0 (the constant 1)
        if alpha == 0.0:
            return 0.0
        if x < 0.0 and alpha % 1.0 != 0.0 and not math.isinf(alpha):
            return math.nan
        return alpha * math.pow(x, alpha - 1.0)
    if code == CLIP:        # torch.clamp: 1 inside [alpha, beta], bounds included
        return 1.0 if alpha <= x and x <= beta else 0.0
    if code == AFFINE:
        return alpha
    if code == SIGN:
        return 0.0
    return -alpha / x / x   # RDIV (two divisions: no overflow of x * x in float32)


def binary(code, a, b):
    """Binary op ``code`` (BINARY_CODES) of a and b. maximum / minimum propagate NaN (either
    input NaN gives NaN, as torch); the comparisons are 1.0 or 0.0."""
    if code == ADD:
        return a + b
    if code == SUBTRACT:
        return a - b
    if code == MULTIPLY:
        return a * b
    if code == DIVIDE:
        return a / b
    if code == MAXIMUM:
        return a if a > b or a != a else b
    if code == MINIMUM:
        return a if a < b or a != a else b
    if code == EQUAL:
        return 1.0 if a == b else 0.0
    if code == NOT_EQUAL:
        return 1.0 if a != b else 0.0
    if code == GREATER:
        return 1.0 if a > b else 0.0
    if code == GREATER_EQUAL:
        return 1.0 if a >= b else 0.0
    if code == LESS:
        return 1.0 if a < b else 0.0
    return 1.0 if a <= b else 0.0   # LESS_EQUAL


def binary_grad_a(code, a, b):
    """d binary(code, a, b) / da. maximum / minimum as torch: the gradient goes to the larger
    (smaller) input, half to each on ties (and all of it where a comparison is false: NaN)."""
    if code == ADD or code == SUBTRACT:
        return 1.0
    if code == MULTIPLY:
        return b
    if code == DIVIDE:
        return 1.0 / b
    if code == MAXIMUM:
        if a == b:
            return 0.5
        return 0.0 if a < b else 1.0
    if code == MINIMUM:
        if a == b:
            return 0.5
        return 0.0 if a > b else 1.0
    return 0.0                      # the comparisons


def binary_grad_b(code, a, b):
    """d binary(code, a, b) / db (the rules of binary_grad_a)."""
    if code == ADD:
        return 1.0
    if code == SUBTRACT:
        return -1.0
    if code == MULTIPLY:
        return a
    if code == DIVIDE:
        return -(a / b) / b
    if code == MAXIMUM:
        if a == b:
            return 0.5
        return 0.0 if a > b else 1.0
    if code == MINIMUM:
        if a == b:
            return 0.5
        return 0.0 if a < b else 1.0
    return 0.0                      # the comparisons


# Index spaces of the op kernels (host-side checks on both targets; njit-compiled on the CPU).

def shape_size(shape):
    """Number of elements of the index space ``shape``."""
    n = 1
    for d in range(len(shape)):
        n *= shape[d]
    return n


def span(offset, shape, strides):
    """(lowest, highest) element offset an operand at ``offset`` with ``strides`` (in elements,
    any sign) reaches over the non-empty index space ``shape``."""
    lo = offset
    hi = offset
    for d in range(len(shape)):
        ext = (shape[d] - 1) * strides[d]
        if ext < 0:
            lo += ext
        else:
            hi += ext
    return lo, hi


def is_c_contiguous(shape, strides):
    """True when ``strides`` walk ``shape`` in C order without gaps (a plain flat loop); the
    strides of size-1 dimensions do not matter."""
    step = 1
    for d in range(len(shape) - 1, -1, -1):
        if shape[d] != 1:
            if strides[d] != step:
                return False
            step *= shape[d]
    return True


def matrix_span(batch_shape, batch_strides, rows, cols, ld, trans):
    """(lowest, highest) element offset a batched matmul operand reaches: op(M) is rows x cols,
    stored as rows rows of stride ``ld`` or, with ``trans``, as cols rows read transposed;
    (0, -1) when nothing is read."""
    lo = 0
    hi = (cols - 1) * ld + rows - 1 if trans else (rows - 1) * ld + cols - 1
    for d in range(len(batch_shape)):
        if batch_shape[d] == 0:
            return 0, -1
        ext = (batch_shape[d] - 1) * batch_strides[d]
        if ext < 0:
            lo += ext
        else:
            hi += ext
    if rows == 0 or cols == 0:
        return 0, -1
    return lo, hi


# ------------------------------------------------------------------------------- recurrent cells
# The gate maths of the recurrent kernels (kernels/{cpu,cuda}/rnn.py).
#
# ``sigmoid_v`` / ``tanh_v``: sigmoid and tanh from arithmetic alone, so that the CPU gate loops
# vectorize (libm's exp and tanh are scalar calls: 7 and 14 ns an element here, these ~1 ns).
# exp(-y), y >= 0, is 2^-n (1 + q): n = round(y / ln 2), q = expm1(r) of the remainder
# r = n ln 2 - y in [-ln2/2, ln2/2] (ln 2 split in two, Cody-Waite) by its Taylor series to r^13
# (relative error below 1e-16), 2^n exact from integer shifts. Within 2 float64 ulps of the exact
# values (measured against mpmath); |x| is clamped where exp(-y) < 1e-37, so the tails are exact
# to 1e-37 and never overflow; NaN gives NaN. The GPU has a fast exp: the CUDA kernels use
# ``sigmoid`` and ``tanh`` above.

EXP_CLAMP = 86.0                        # exp(-86) ~ 4e-38; 2^n of the reduction fits n <= 124
LOG2E = 1.4426950408889634
LN2_HI = 6.93147180369123816490e-01     # ln 2 in two parts: n * LN2_HI is exact for n < 2^11
LN2_LO = 1.90821492927058770002e-10


@register_jitable
def exp_neg_parts(y):
    """(s, q) with exp(-y) = (1 + q) / s, for y in [0, EXP_CLAMP] (NaN gives a NaN q): s = 2^n
    exact, q = expm1 of the reduced argument (the reduction described above)."""
    z = y * LOG2E + 0.5
    k = int(z if z == z else 0.0)                   # round(y / ln 2) (y >= 0: truncation)
    r = (k * LN2_HI - y) + k * LN2_LO
    q = r * (1.0 + r * (1.0 / 2 + r * (1.0 / 6 + r * (1.0 / 24 + r * (1.0 / 120 + r * (
        1.0 / 720 + r * (1.0 / 5040 + r * (1.0 / 40320 + r * (1.0 / 362880 + r * (
            1.0 / 3628800 + r * (1.0 / 39916800 + r * (1.0 / 479001600 + r * (
                1.0 / 6227020800)))))))))))))
    k1 = k >> 1
    return float(1 << k1) * float(1 << (k - k1)), q


def exp_neg_v(y):
    """exp(-y) for y >= 0, vectorizable: 0 beyond EXP_CLAMP; NaN gives NaN."""
    big = y > EXP_CLAMP
    s, q = exp_neg_parts(EXP_CLAMP if big else y)
    return 0.0 if big else (1.0 + q) / s


def sigmoid_v(x):
    """1 / (1 + exp(-x)), vectorizable: with e = exp(-|x|) = (1 + q) / 2^n, 2^n / (2^n + 1 + q)
    for x >= 0 and (1 + q) / (2^n + 1 + q) below."""
    y = math.fabs(x)
    s, q = exp_neg_parts(EXP_CLAMP if y > EXP_CLAMP else y)     # NaN stays NaN
    d = s + 1.0 + q
    return s / d if x >= 0.0 else (1.0 + q) / d


def tanh_v(x):
    """tanh(x), vectorizable: with e = exp(-2|x|) = (1 + q) / 2^n, sign(x) (2^n - 1 - q) /
    (2^n + 1 + q) (no cancellation near 0: q = expm1 of the reduced argument)."""
    y = 2.0 * math.fabs(x)
    s, q = exp_neg_parts(EXP_CLAMP if y > EXP_CLAMP else y)
    t = (s - 1.0 - q) / (s + 1.0 + q)
    return t if x >= 0.0 else -t


# float32 twins for the CPU's float32 gate loops: the same algorithm with float32 constants, so
# that every operation stays in float32 (twice the SIMD lanes of the versions above, 2.8x faster
# in the LSTM forward), the series to r^7 (truncation 5e-9, below float32 rounding); within
# 2 float32 ulps where the result is above 1e-37. Called on float32 arguments only (a float64
# argument would be computed with float32-rounded constants).
_F32 = numpy.float32
_F32_ONE, _F32_HALF, _F32_ZERO, _F32_TWO = _F32(1.0), _F32(0.5), _F32(0.0), _F32(2.0)
_F32_CLAMP, _F32_LOG2E = _F32(EXP_CLAMP), _F32(LOG2E)
_F32_LN2_HI, _F32_LN2_LO = _F32(0.693359375), _F32(-2.12194440e-4)   # Cephes' split of ln 2
_F32_C2, _F32_C3, _F32_C4, _F32_C5, _F32_C6, _F32_C7 = (
    _F32(1.0 / 2), _F32(1.0 / 6), _F32(1.0 / 24), _F32(1.0 / 120), _F32(1.0 / 720),
    _F32(1.0 / 5040))


@register_jitable
def exp_neg_parts32(y):
    """exp_neg_parts in float32 arithmetic, for a float32 y in [0, EXP_CLAMP]."""
    z = y * _F32_LOG2E + _F32_HALF
    k = int(z if z == z else _F32_ZERO)
    kf = _F32(k)
    r = (kf * _F32_LN2_HI - y) + kf * _F32_LN2_LO
    q = r * (_F32_ONE + r * (_F32_C2 + r * (_F32_C3 + r * (_F32_C4 + r * (_F32_C5 + r * (
        _F32_C6 + r * _F32_C7))))))
    k1 = k >> 1
    return _F32(1 << k1) * _F32(1 << (k - k1)), q


def sigmoid_v32(x):
    """sigmoid_v in float32 arithmetic, for a float32 x."""
    y = abs(x)
    s, q = exp_neg_parts32(_F32_CLAMP if y > _F32_CLAMP else y)
    d = s + _F32_ONE + q
    return s / d if x >= _F32_ZERO else (_F32_ONE + q) / d


def tanh_v32(x):
    """tanh_v in float32 arithmetic, for a float32 x."""
    y = _F32_TWO * abs(x)
    s, q = exp_neg_parts32(_F32_CLAMP if y > _F32_CLAMP else y)
    t = (s - _F32_ONE - q) / (s + _F32_ONE + q)
    return t if x >= _F32_ZERO else -t


def sigmoid_grad_y(y):
    """d sigmoid / dx from the output y = sigmoid(x): y (1 - y) (the cells keep activated
    gates, not their inputs)."""
    return y * (1.0 - y)


def tanh_grad_y(y):
    """d tanh / dx from the output y = tanh(x): (1 - y)(1 + y), exact for |y| near 1 where
    1 - y^2 would round."""
    return (1.0 - y) * (1.0 + y)


# Parameters of the activations that take one, for kernels given only an activation code
# (SimpleRNN) and for layers not given one: Keras' defaults, leaky_relu's negative_slope and elu's
# alpha.
DEFAULT_ALPHA = {"leaky_relu": 0.2, "elu": 1.0}


def activation_default_alpha(code, pre, out):
    """(code, alpha) for a kernel given only an activation code: the host checks of
    ``fused_activation``, and the activation's DEFAULT_ALPHA (0.0 for those without one)."""
    return int(code), DEFAULT_ALPHA.get(fused_activation(code, pre, out), 0.0)


def activation_switch(wrap):
    """(activate, activate_grad) for kernels that take an activation code at run time:
    ``activate(code, x, alpha)`` and ``activate_grad(code, x, y, alpha)`` (y the output), the
    activation ``code`` of ACTIVATION_CODES and its derivative, calling this module's functions
    compiled by ``wrap`` (``njit(inline="always")`` on the CPU, ``cuda.jit(device=True)`` on the
    GPU). An unknown code is linear (hosts check codes with ``fused_activation``).

    Both are written out from ACTIVATION_CODES as one flat function each, ``if code == 7: return
    tanh(x, alpha)`` a line pair per code, tanh first (the recurrent layers' default), so that
    they compile as the hand-written switch did (a chain of nested functions, one per code, made
    the recurrent kernels' PTX compile ~15% slower)."""
    order = sorted(range(1, len(ACTIVATION_CODES)), key=lambda c: ACTIVATION_CODES[c] != "tanh")
    source = []
    for head, suffix, args in (("activate(code, x, alpha)", "", "x, alpha"),
                               ("activate_grad(code, x, y, alpha)", "_grad", "x, y, alpha")):
        source.append(f"def {head}:")
        source += [f"    if code == {c}:\n        return {ACTIVATION_CODES[c]}{suffix}({args})"
                   for c in order]
        source.append(f"    return linear{suffix}({args})\n")
    namespace = {name + suffix: wrap(globals()[name + suffix])
                 for name in ACTIVATION_CODES for suffix in ("", "_grad")}
    exec(compile("\n".join(source), "<activation_switch>", "exec"), namespace)
    return wrap(namespace["activate"]), wrap(namespace["activate_grad"])


# The array arguments of the recurrent kernels by name, as dimensions: N batch, T steps, U units,
# g = G * U (G the cell's gates: SimpleRNN 1, LSTM 4, GRU 3), q = 4U (the saved gates).
RECURRENT_SHAPES = {
    "xp": "NTg", "grad_xp": "NTg", "u": "Ug", "grad_u": "Ug", "u_bias": "g", "grad_u_bias": "g",
    "h0": "NU", "c0": "NU", "grad_hT": "NU", "grad_cT": "NU", "grad_h0": "NU", "grad_c0": "NU",
    "mask": "NT", "hs": "NTU", "cs": "NTU", "pre": "NTU", "grad_hs": "NTU", "gates": "NTq"}
_DIM_NAMES = {"N": "N", "T": "T", "U": "U", "g": "G*U", "q": "4U"}


def recurrent_dims(kernel, gates, arrays):
    """(N, T, U) of a recurrent kernel's call with ``gates`` gates, after checking on the host
    (both targets) that every array of ``arrays`` (argument name -> array) has the shape its name
    takes (RECURRENT_SHAPES), N and U from ``mask`` and ``u``, T >= 1 and U >= 1, one float dtype
    (float32 or float64) and C order; ValueError naming the argument otherwise."""
    mask, u = arrays["mask"], arrays["u"]
    if len(mask.shape) != 2 or len(u.shape) != 2:
        raise ValueError(f"{kernel}: mask must be (N, T) and u (U, {gates}U), got "
                         f"{tuple(mask.shape)} and {tuple(u.shape)}")
    n, t = mask.shape
    units = u.shape[0]
    if t < 1 or units < 1:
        raise ValueError(f"{kernel}: needs T >= 1 steps (mask {tuple(mask.shape)}) and U >= 1 "
                         f"units (u {tuple(u.shape)})")
    sizes = {"N": n, "T": t, "U": units, "g": gates * units, "q": 4 * units}
    dtype = str(u.dtype)
    if dtype not in ("float32", "float64"):
        raise ValueError(f"{kernel}: u must be float32 or float64, got {dtype}")
    for name, a in arrays.items():
        want = tuple(sizes[d] for d in RECURRENT_SHAPES[name])
        if tuple(a.shape) != want:
            dims = ", ".join(_DIM_NAMES[d] for d in RECURRENT_SHAPES[name])
            raise ValueError(f"{kernel}: {name} must have shape ({dims}) = {want}, got "
                             f"{tuple(a.shape)}")
        if str(a.dtype) != dtype:
            raise ValueError(f"{kernel}: {name} must be {dtype} like u, got {a.dtype}")
        contiguous = getattr(a, "is_c_contiguous", None)
        if not (contiguous() if contiguous is not None else a.flags["C_CONTIGUOUS"]):
            raise ValueError(f"{kernel}: {name} must be C-contiguous")
    return n, t, units


# ------------------------------------------------------------------------------- image warps
# Affine warps of (N, C, H, W) images (RandomRotation, RandomZoom): output pixel (h, w) samples
# the input at (sy, sx) = (m0 h + m1 w + m2, m3 h + m4 w + m5), pixel centres at integers, with
# the four (bilinear) or one (nearest) input pixels around it; an index outside the image is
# mapped by the fill mode (as scipy.ndimage's modes for order 0 and 1): "constant" (the fill
# value), "reflect" (d c b a | a b c d | d c b a), "wrap" (a b c d | a b c d), "nearest" (a a |
# a b c d | d d).
FILL_MODES = ("constant", "reflect", "wrap", "nearest")


def fill_index(i, n, mode):
    """Index ``i`` of an axis of ``n`` pixels under fill mode code ``mode`` (FILL_MODES): an
    index in [0, n), or -1 where "constant" fills."""
    if i >= 0 and i < n:
        return i
    if mode == 0:
        return -1
    if mode == 1:
        i = i % (2 * n)
        return i if i < n else 2 * n - 1 - i
    if mode == 2:
        return i % n
    return 0 if i < 0 else n - 1


def warp_tap(m0, m1, m2, m3, m4, m5, h, w, k, bilinear):
    """Tap ``k`` (0-3 for bilinear, 0 for nearest) of output pixel (h, w): (input row, input
    column, weight), the row and column before the fill mode (``fill_index``)."""
    sy = m0 * h + m1 * w + m2
    sx = m3 * h + m4 * w + m5
    if bilinear:
        y0 = math.floor(sy)
        x0 = math.floor(sx)
        fy = sy - y0
        fx = sx - x0
        dy = k // 2
        dx = k - 2 * dy
        return int(y0) + dy, int(x0) + dx, (fy if dy else 1.0 - fy) * (fx if dx else 1.0 - fx)
    return int(math.floor(sy + 0.5)), int(math.floor(sx + 0.5)), 1.0


# ------------------------------------------------------------------------------- random numbers
# Philox4x32-10 (Salmon et al., SC'11), the counter-based generator of both targets (the CUDA
# backend's uniform and normal fills, word2vec's draws on either target: the tests check that the
# two agree bit for bit). 32x32-bit products fit in uint64 (no overflow, also in plain Python
# and the CUDA simulator, where these are NumPy scalars).
PHILOX_M32 = numpy.uint64(0xFFFFFFFF)
PHILOX_S32 = numpy.uint64(32)
_PH_M0 = numpy.uint64(0xD2511F53)
_PH_M1 = numpy.uint64(0xCD9E8D57)
_PH_W0 = numpy.uint64(0x9E3779B9)
_PH_W1 = numpy.uint64(0xBB67AE85)


def philox(c0, c1, k0, k1):
    """Two 32-bit words (as uint64) of Philox4x32-10 for the counter (c0, c1, 0, 0) and key
    (k0, k1), all uint64 below 2^32."""
    c2 = numpy.uint64(0)
    c3 = numpy.uint64(0)
    for _ in range(10):
        p0 = _PH_M0 * c0
        p1 = _PH_M1 * c2
        n0 = ((p1 >> PHILOX_S32) ^ c1 ^ k0) & PHILOX_M32
        n2 = ((p0 >> PHILOX_S32) ^ c3 ^ k1) & PHILOX_M32
        c1 = p1 & PHILOX_M32
        c3 = p0 & PHILOX_M32
        c0 = n0
        c2 = n2
        k0 = (k0 + _PH_W0) & PHILOX_M32
        k1 = (k1 + _PH_W1) & PHILOX_M32
    return c0, c1
