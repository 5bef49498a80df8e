"""Fused masked softmax of multi-head attention, forward and backward: the part of a
MultiHeadAttention layer between its two batched matmuls (scores = Q K^T, out = weights V).

Arrays are C-contiguous (B, Tq, Tk), one float dtype, B = N * heads with batch index
b = n * heads + h. Row (b, i) holds query i's scores against the Tk keys.

* ``mask`` (N, Tq, Tk) uint8, nonzero where query i may attend to key j, shared by the heads of
  batch row n; an array of size 0 means no mask. ``causal`` also disallows j > i (Keras'
  lower-triangular causal mask over (Tq, Tk), aligned at the top left).
* Forward: probs = softmax over the allowed keys of scale * scores (row maximum subtracted, the
  sum in float64), exactly 0 at disallowed keys; a row with no allowed key is all zeros (a
  padded query attends to nothing, and sends no gradient back). weights = probs * (u >= rate) /
  (1 - rate), dropout on the attention weights from the uniforms ``u``; with rate == 0 ``u`` may
  have size 0 and ``weights`` may be ``probs``.
* Backward: grad_probs = grad_weights * (u >= rate) / (1 - rate), grad_scores = scale * probs *
  (grad_probs - sum_j probs * grad_probs) per row (the sum in float64); ``grad_scores`` may be
  ``grad_weights``. Nothing needs the mask again: probs is 0 wherever a key was disallowed.

How it runs: rows are independent, so work items are blocks of whole rows fixed by the shape
(results do not depend on the thread count): serial below ``_PAR_MIN`` elements, ``prange``
above. A row makes three passes: the maximum, exp into a float64 row buffer (one per work item)
and its sum, then the scaled writes. exp is kernels/scalar.py's ``exp_neg_v``, arithmetic only,
so that the pass vectorizes (libm's exp is a scalar call, ~7 ns an element here).

The public kernels check their arguments on the host (``_forward_dims`` / ``_backward_dims``,
shared with the CUDA launchers): ValueError naming the argument, before anything is written.
"""
import math

import numpy as np
from numba import njit, prange

from .. import scalar
from ._threads import split_kernel

# Elements (B * Tq * Tk) at or above which rows run on Numba's threads, and elements per work
# item there (whole rows). Serial vs 2 threads on the shared 2-core machine (float32, best of
# 200): the forward gains 1.8x from 16k elements (two items), the backward 1.2x at 16k and 1.7x
# from 32k; below, a parallel region's start-up costs more than it saves.
_PAR_MIN = 1 << 14
_PAR_MIN_BACKWARD = 1 << 15
_CHUNK = 1 << 13


# ------------------------------------------------------------------------------- host checks
def _is_c_contiguous(a):
    contiguous = getattr(a, "is_c_contiguous", None)
    return contiguous() if contiguous is not None else bool(a.flags["C_CONTIGUOUS"])


def _address(a):
    """Start of ``a``'s data (host or device), to tell an output passed twice."""
    for name in ("__cuda_array_interface__", "__array_interface__"):
        iface = getattr(a, name, None)
        if iface is not None:
            return iface["data"][0]
    return id(a)


def _array(kernel, name, a, shape=None, dtype=None, what="(B, Tq, Tk)"):
    """Check one array argument: an array, C-contiguous, of ``shape`` and ``dtype`` if given."""
    if not (hasattr(a, "shape") and hasattr(a, "dtype")):
        raise ValueError(f"{kernel}: {name} must be an array, got {type(a).__name__}")
    if shape is not None and tuple(a.shape) != tuple(shape):
        raise ValueError(f"{kernel}: {name} must have shape {what} = {tuple(shape)}, got "
                         f"{tuple(a.shape)}")
    if dtype is not None and np.dtype(a.dtype) != dtype:
        raise ValueError(f"{kernel}: {name} must be {dtype}, got {np.dtype(a.dtype)}")
    if not _is_c_contiguous(a):
        raise ValueError(f"{kernel}: {name} must be C-contiguous")


def _real(kernel, name, v):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise ValueError(f"{kernel}: {name} must be a real number, got {v!r}")
    return float(v)


def _rate(kernel, rate):
    rate = _real(kernel, "rate", rate)
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"{kernel}: rate must be in [0, 1), got {rate!r}")
    return rate


def _uniforms(kernel, u, rate, shape, dtype):
    """Whether dropout applies: rate > 0 needs u of the scores' shape; with rate == 0 ``u`` may
    have size 0 (or that shape: it is not read)."""
    if not (hasattr(u, "shape") and hasattr(u, "dtype")):
        raise ValueError(f"{kernel}: u must be an array, got {type(u).__name__}")
    if rate == 0.0 and u.size == 0:
        return False
    _array(kernel, "u", u, shape, dtype)
    return rate > 0.0


def _scores(kernel, name, a):
    """(B, Tq, Tk) and dtype of the array that sets them."""
    if not (hasattr(a, "shape") and hasattr(a, "dtype")):
        raise ValueError(f"{kernel}: {name} must be an array, got {type(a).__name__}")
    dtype = np.dtype(a.dtype)
    if len(a.shape) != 3 or dtype not in (np.float32, np.float64):
        raise ValueError(f"{kernel}: {name} must be a (B, Tq, Tk) float32 or float64 array, got "
                         f"{dtype} of shape {tuple(a.shape)}")
    _array(kernel, name, a)
    return tuple(int(d) for d in a.shape), dtype


def _forward_dims(kernel, scores, mask, heads, scale, u, rate, probs, weights):
    """(B, Tq, Tk, has_mask, dropout) of a forward call after checking every argument."""
    shape, dtype = _scores(kernel, "scores", scores)
    b, tq, tk = shape
    if isinstance(heads, (bool, np.bool_)) or not isinstance(heads, (int, np.integer)) \
            or heads < 1 or b % heads:
        raise ValueError(f"{kernel}: heads must be a positive integer dividing B = {b}, got "
                         f"{heads!r}")
    _real(kernel, "scale", scale)
    rate = _rate(kernel, rate)
    if not (hasattr(mask, "shape") and hasattr(mask, "dtype")):
        raise ValueError(f"{kernel}: mask must be an array, got {type(mask).__name__}")
    has_mask = mask.size > 0
    if has_mask:
        _array(kernel, "mask", mask, (b // int(heads), tq, tk), np.dtype(np.uint8),
               "(B // heads, Tq, Tk)")
    dropout = _uniforms(kernel, u, rate, shape, dtype)
    _array(kernel, "probs", probs, shape, dtype)
    _array(kernel, "weights", weights, shape, dtype)
    if rate > 0.0 and probs.size and _address(probs) == _address(weights):
        raise ValueError(f"{kernel}: weights must not be probs when rate > 0 (the backward "
                         f"needs probs before dropout)")
    return b, tq, tk, has_mask, dropout


def _backward_dims(kernel, probs, u, rate, scale, grad_weights, grad_scores):
    """(B, Tq, Tk, dropout) of a backward call after checking every argument."""
    shape, dtype = _scores(kernel, "probs", probs)
    rate = _rate(kernel, rate)
    _real(kernel, "scale", scale)
    dropout = _uniforms(kernel, u, rate, shape, dtype)
    _array(kernel, "grad_weights", grad_weights, shape, dtype)
    _array(kernel, "grad_scores", grad_scores, shape, dtype)
    return shape + (dropout,)


# ------------------------------------------------------------------------------- rows
@njit(inline="always")
def _u(i):
    """Index ``i`` (never negative) as uint64: no wraparound check, so the row loops vectorize."""
    return np.uint64(i)


_exp_neg = njit(inline="always")(scalar.exp_neg_v)


@njit(cache=True, fastmath={"reassoc"})
def _sum(buf, n):
    """sum(buf[:n]) in float64 (reassociated: vector partial sums, fixed by n alone)."""
    s = 0.0
    for j in range(n):
        s += buf[_u(j)]
    return s


@njit(cache=True, fastmath={"reassoc"})
def _dot(p, o, e, n):
    """sum(p[o:o + n] * e[:n]) in float64 (reassociated as _sum)."""
    s = 0.0
    for j in range(n):
        s += np.float64(p[_u(o + j)]) * e[_u(j)]
    return s


@njit(cache=True, error_model="numpy")
def _forward_rows(s, mask, has_mask, tq, tk, heads, causal, scale, u, rate, dropout, probs,
                  weights, r0, r1, e):
    """Rows r0..r1 (r = b * Tq + i) of the forward; ``e`` a float64 buffer of Tk."""
    keep = 1.0 / (1.0 - rate)
    for r in range(r0, r1):
        b = r // tq
        i = r - b * tq
        o = r * tk
        mo = ((b // heads) * tq + i) * tk
        end = min(tk, i + 1) if causal else tk      # keys j >= end are disallowed
        mx = -math.inf                              # (a NaN score makes the sum NaN)
        if has_mask:
            allowed = 0
            for j in range(end):
                ok = mask[_u(mo + j)] != 0
                v = scale * np.float64(s[_u(o + j)]) if ok else -math.inf
                mx = v if v > mx else mx
                allowed += ok
            found = allowed > 0
        else:
            for j in range(end):
                v = scale * np.float64(s[_u(o + j)])
                mx = v if v > mx else mx
            found = end > 0
        total = 0.0
        if found:
            if has_mask:
                for j in range(end):
                    y = mx - scale * np.float64(s[_u(o + j)])
                    e[_u(j)] = _exp_neg(y) if mask[_u(mo + j)] != 0 else 0.0
            else:
                for j in range(end):
                    e[_u(j)] = _exp_neg(mx - scale * np.float64(s[_u(o + j)]))
            total = _sum(e, end)
        else:
            end = 0                                 # nothing allowed: a row of zeros
        inv = 1.0 / total if found else 0.0
        if dropout:
            for j in range(end):
                p = e[_u(j)] * inv
                probs[_u(o + j)] = p
                weights[_u(o + j)] = p * keep if u[_u(o + j)] >= rate else 0.0
        else:
            for j in range(end):
                p = e[_u(j)] * inv
                probs[_u(o + j)] = p
                weights[_u(o + j)] = p
        for j in range(end, tk):
            probs[_u(o + j)] = 0.0
            weights[_u(o + j)] = 0.0


@split_kernel(0, _PAR_MIN, error_model="numpy")
def _forward(s, mask, has_mask, tq, tk, heads, causal, scale, u, rate, dropout, probs, weights):
    rows = s.size // tk
    rpu = max(1, _CHUNK // tk)
    for w in prange((rows + rpu - 1) // rpu):
        e = np.empty(tk)
        _forward_rows(s, mask, has_mask, tq, tk, heads, causal, scale, u, rate, dropout, probs,
                      weights, w * rpu, min(rows, (w + 1) * rpu), e)


@njit(cache=True, error_model="numpy")
def _backward_rows(p, u, rate, dropout, scale, tk, gw, gs, r0, r1, e):
    """Rows r0..r1 of the backward; ``e`` a float64 buffer of Tk (grad_probs of the row)."""
    keep = 1.0 / (1.0 - rate)
    for r in range(r0, r1):
        o = r * tk
        if dropout:
            for j in range(tk):
                e[_u(j)] = np.float64(gw[_u(o + j)]) * keep if u[_u(o + j)] >= rate else 0.0
        else:
            for j in range(tk):
                e[_u(j)] = gw[_u(o + j)]
        dot = _dot(p, o, e, tk)
        for j in range(tk):
            gs[_u(o + j)] = scale * np.float64(p[_u(o + j)]) * (e[_u(j)] - dot)


@split_kernel(0, _PAR_MIN_BACKWARD, error_model="numpy")
def _backward(p, u, rate, dropout, scale, tk, gw, gs):
    rows = p.size // tk
    rpu = max(1, _CHUNK // tk)
    for w in prange((rows + rpu - 1) // rpu):
        e = np.empty(tk)
        _backward_rows(p, u, rate, dropout, scale, tk, gw, gs, w * rpu,
                       min(rows, (w + 1) * rpu), e)


# ------------------------------------------------------------------------------- kernels
def _host(kernel, **arrays):
    for name, a in arrays.items():
        if not isinstance(a, np.ndarray):
            raise ValueError(f"{kernel}: {name} must be a NumPy array, got {type(a).__name__}")


def attention_softmax_forward(scores, mask, heads, causal, scale, u, rate, probs, weights):
    """probs = softmax over the allowed keys of scale * scores (0 at disallowed keys, all 0 in a
    row with none), weights = probs * (u >= rate) / (1 - rate); see the module docstring.
    ``weights`` may be ``probs`` when rate == 0."""
    k = "attention_softmax_forward"
    _host(k, scores=scores, mask=mask, u=u, probs=probs, weights=weights)
    b, tq, tk, has_mask, dropout = _forward_dims(k, scores, mask, heads, scale, u, rate, probs,
                                                 weights)
    if probs.size == 0:
        return
    _forward(scores.reshape(-1), mask.reshape(-1), has_mask, tq, tk, int(heads), bool(causal),
             float(scale), u.reshape(-1), float(rate), dropout, probs.reshape(-1),
             weights.reshape(-1))


def attention_softmax_backward(probs, u, rate, scale, grad_weights, grad_scores):
    """grad_scores = scale * probs * (grad_probs - rowsum(probs * grad_probs)), grad_probs =
    grad_weights * (u >= rate) / (1 - rate); ``grad_scores`` may be ``grad_weights``."""
    k = "attention_softmax_backward"
    _host(k, probs=probs, u=u, grad_weights=grad_weights, grad_scores=grad_scores)
    b, tq, tk, dropout = _backward_dims(k, probs, u, rate, scale, grad_weights, grad_scores)
    if probs.size == 0:
        return
    _backward(probs.reshape(-1), u.reshape(-1), float(rate), dropout, float(scale), tk,
              grad_weights.reshape(-1), grad_scores.reshape(-1))
