"""Scalar maths shared by the CPU and CUDA kernels.

Plain Python functions of floats using only ``math`` functions that both Numba targets compile;
``kernels/cpu`` wraps them with ``njit(inline="always")``, ``kernels/cuda`` with
``cuda.jit(device=True)``. The constants are Python floats, so most arithmetic on float32
arguments happens in float64 (a ``math`` function of a float32 value runs in float32, as Numba
types it by its argument); results are within a few float32 ulps once the kernel stores them.

Activations: ``NAME(x[, alpha])`` is the forward value and ``NAME_grad(x, y[, alpha])`` the local
derivative dy/dx, given the forward input ``x`` and output ``y`` (a kernel multiplies it by the
incoming gradient). Losses: per-element terms ``NAME(t, p[, param])`` of target ``t`` and
prediction ``p`` and their derivatives d/dp ``NAME_grad(t, p[, param])``.
Written so that no finite input gives NaN or Inf (stable sigmoid and softplus, tails guarded).
Each function is self-contained (math calls and arithmetic only, no calls to its neighbours), so
that wrapping any one of them for either target needs nothing else from this module.
"""
import math

SQRT_HALF = 0.7071067811865476          # 1 / sqrt(2)
INV_SQRT_2PI = 0.3989422804014327       # 1 / sqrt(2 pi)
SQRT_2_OVER_PI = 0.7978845608028654     # sqrt(2 / pi)
GELU_TANH_C = 0.044715


# ----------------------------------------------------------------------------------- activations
def linear(x):
    """Identity."""
    return x


def linear_grad(x, y):
    return 1.0


def relu(x):
    """max(x, 0); NaN stays NaN."""
    return 0.0 if x <= 0.0 else x


def relu_grad(x, y):
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


def gelu(x):
    """Exact GELU: x * Phi(x), with Phi(x) = erfc(-x / sqrt 2) / 2 accurate in both tails."""
    return 0.5 * x * math.erfc(-x * SQRT_HALF)


def gelu_grad(x, y):
    """Phi(x) + x * phi(x)."""
    return 0.5 * math.erfc(-x * SQRT_HALF) + x * INV_SQRT_2PI * math.exp(-0.5 * x * x)


def sigmoid(x):
    """1 / (1 + exp(-x)), never overflowing: exp of a non-positive number only."""
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def sigmoid_grad(x, y):
    """sigmoid(x) * (1 - sigmoid(x)) = e / (1 + e)^2 with e = exp(-|x|) (no cancellation)."""
    e = math.exp(-math.fabs(x))
    d = 1.0 + e
    return e / (d * d)


def gelu_tanh(x):
    """0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3), computed as x * sigmoid(2u)."""
    v = 2.0 * SQRT_2_OVER_PI * (x + GELU_TANH_C * x * x * x)
    if v >= 0.0:
        return x / (1.0 + math.exp(-v))
    e = math.exp(v)
    return x * e / (1.0 + e)


def gelu_tanh_grad(x, y):
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


def tanh(x):
    return math.tanh(x)


def tanh_grad(x, y):
    """1 - tanh(x)^2 = 4e / (1 + e)^2 with e = exp(-2|x|) (no cancellation near saturation)."""
    e = math.exp(-2.0 * math.fabs(x))
    d = 1.0 + e
    return 4.0 * e / (d * d)


def softplus(x):
    """log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|))."""
    return (x if x > 0.0 else 0.0) + math.log1p(math.exp(-math.fabs(x)))


def softplus_grad(x, y):
    """sigmoid(x), stable."""
    e = math.exp(-math.fabs(x))
    return 1.0 / (1.0 + e) if x >= 0.0 else e / (1.0 + e)


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
