"""Fused masked softmax of multi-head attention on the GPU: the same names, arguments and
semantics as kernels/cpu/attention.py (read its docstring for the layouts, the mask, causal
rows and dropout), and the same host checks (ValueError naming the argument).

Row-wise, one launch each way: ``lanes`` threads per row (b, i) (a block of (lanes, rows),
``_common.grid_rows``), a grid-stride loop over groups of rows, each row walked in strides of
``lanes`` so that Tk may be any length, reads coalesced along the row.

* Forward: three passes over a row's allowed keys (a causal row stops at key i): the maximum
  of scale * scores (``row_max``), the sum of exp (``row_sum``, float64), then probs and weights
  written at every key (0 at disallowed ones), exp recomputed rather than stored and read back.
  A row's sum is 0 exactly when it has no allowed key (else the maximum adds exp(0) = 1, or
  a NaN or infinite score makes it NaN, as on the CPU): that row is written as zeros. exp runs in the dtype (float32's is a few instructions) on the
  difference to the maximum taken in float64.
* Backward: one pass for dot = sum_j probs * grad_probs (``row_sum``, float64), one for
  grad_scores = scale * probs * (grad_probs - dot). A thread reads grad_weights[j] before writing
  grad_scores[j] at the same j, and the reduction's barrier separates the passes, so
  grad_scores may be grad_weights.

The mask is a uint8 array, which the spec codes of ``_common`` do not cover: ``_MaskKernel``
adds the code ``u<n>`` for it.
"""
import math

import numba
import numpy as np
from numba import cuda

from ..cpu.attention import _backward_dims, _forward_dims
from ._common import (A1, Bool, Float, Int, Kernel, ROW_LANES, ROW_ROWS, _numba_type, flat,
                      grid_rows, jit, launcher, row_loop, row_max, row_sum)

U1 = "u1"       # the kind of the mask argument: a C-contiguous uint8 array, 1 dim


class _MaskKernel(Kernel):
    """A Kernel whose spec may also name C-contiguous uint8 arrays (``u<n>``, ``n`` dims)."""

    def argtypes(self, dtype, itype=np.int64):
        return tuple(numba.types.Array(numba.uint8, int(c[1:]), "C") if c[0] == "u"
                     else _numba_type(c, dtype, itype) for c in self.spec)

    def _check(self, args, dtype, itype):
        rest = []
        for k, (code, a) in enumerate(zip(self.spec, args)):
            if code[0] != "u":
                rest.append((code, a))
            elif (np.dtype(a.dtype) != np.uint8 or a.ndim != int(code[1:])
                  or not a.flags["C_CONTIGUOUS"]):
                raise TypeError(f"{self.name}: argument {k} is {a.dtype} {a.ndim}-d (contiguous "
                                f"{a.flags['C_CONTIGUOUS']}), spec {code} wants uint8")
        plain = Kernel.__new__(Kernel)
        plain.name, plain.spec = self.name, tuple(c for c, _ in rest)
        Kernel._check(plain, [a for _, a in rest], dtype, itype)


# ------------------------------------------------------------------------------------- kernels
def _fwd(scores: A1, mask: U1, has_mask: Bool, tq: Int, tk: Int, heads: Int, causal: Bool,
         scale: Float, u: A1, rate: Float, dropout: Bool, probs: A1, weights: A1):
    sh = cuda.shared.array((ROW_ROWS, ROW_LANES), np.float64)
    tx = cuda.threadIdx.x
    lanes = cuda.blockDim.x
    rows = scores.size // tk
    keep = 1.0 / (1.0 - rate)
    first, stop, step = row_loop(rows)
    for r in range(first, stop, step):
        live = r < rows
        o = r * tk
        b = r // tq
        i = r - b * tq
        mo = ((b // heads) * tq + i) * tk
        end = min(tk, i + 1) if causal else tk      # keys j >= end are disallowed
        mx = -math.inf
        if live:
            for j in range(tx, end, lanes):
                if not has_mask or mask[mo + j] != 0:
                    v = scale * np.float64(scores[o + j])
                    if v > mx or v != v:
                        mx = v
        mx = row_max(sh, mx)
        s = 0.0
        if live:
            for j in range(tx, end, lanes):
                if not has_mask or mask[mo + j] != 0:
                    s += math.exp(probs.dtype.type(scale * np.float64(scores[o + j]) - mx))
        s = row_sum(sh, s)
        if live:
            inv = 1.0 / s if s != 0.0 else 0.0
            for j in range(tx, tk, lanes):
                p = 0.0
                if s != 0.0 and j < end and (not has_mask or mask[mo + j] != 0):
                    p = math.exp(probs.dtype.type(scale * np.float64(scores[o + j]) - mx)) * inv
                probs[o + j] = p
                if dropout:
                    weights[o + j] = p * keep if u[o + j] >= rate else 0.0
                else:
                    weights[o + j] = p


def _bwd(probs: A1, u: A1, dropout: Bool, rate: Float, scale: Float, tk: Int, grad_weights: A1,
         grad_scores: A1):
    sh = cuda.shared.array((ROW_ROWS, ROW_LANES), np.float64)
    tx = cuda.threadIdx.x
    lanes = cuda.blockDim.x
    rows = probs.size // tk
    keep = 1.0 / (1.0 - rate)
    first, stop, step = row_loop(rows)
    for r in range(first, stop, step):
        live = r < rows
        o = r * tk
        dot = 0.0
        if live:
            for j in range(tx, tk, lanes):
                gp = np.float64(grad_weights[o + j])
                if dropout:
                    gp = gp * keep if u[o + j] >= rate else 0.0
                dot += np.float64(probs[o + j]) * gp
        dot = row_sum(sh, dot)
        if live:
            for j in range(tx, tk, lanes):
                gp = np.float64(grad_weights[o + j])
                if dropout:
                    gp = gp * keep if u[o + j] >= rate else 0.0
                grad_scores[o + j] = scale * np.float64(probs[o + j]) * (gp - dot)


_forward = _MaskKernel("attention._forward", _fwd, lambda dtype, k=jit(_fwd): k)
_backward = _MaskKernel("attention._backward", _bwd, lambda dtype, k=jit(_bwd): k)


# ------------------------------------------------------------------------------------- launchers
def _device(kernel_name, **arrays):
    for name, a in arrays.items():
        if not hasattr(a, "copy_to_host"):
            raise ValueError(f"{kernel_name}: {name} must be a device array, got "
                             f"{type(a).__name__}")


@launcher
def attention_softmax_forward(scores, mask, heads, causal, scale, u, rate, probs, weights):
    """probs = softmax over the allowed keys of scale * scores (0 at disallowed keys, all 0 in a
    row with none), weights = probs * (u >= rate) / (1 - rate); ``weights`` may be ``probs``
    when rate == 0."""
    k = "attention_softmax_forward"
    _device(k, scores=scores, mask=mask, u=u, probs=probs, weights=weights)
    b, tq, tk, has_mask, dropout = _forward_dims(k, scores, mask, heads, scale, u, rate, probs,
                                                 weights)
    if probs.size == 0:
        return
    _forward[grid_rows(b * tq)](flat(scores), flat(mask), has_mask, tq, tk, int(heads),
                                bool(causal), float(scale), flat(u), float(rate), dropout,
                                flat(probs), flat(weights))


@launcher
def attention_softmax_backward(probs, u, rate, scale, grad_weights, grad_scores):
    """grad_scores = scale * probs * (grad_probs - rowsum(probs * grad_probs)), grad_probs =
    grad_weights * (u >= rate) / (1 - rate); ``grad_scores`` may be ``grad_weights``."""
    k = "attention_softmax_backward"
    _device(k, probs=probs, u=u, grad_weights=grad_weights, grad_scores=grad_scores)
    b, tq, tk, dropout = _backward_dims(k, probs, u, rate, scale, grad_weights, grad_scores)
    if probs.size == 0:
        return
    _backward[grid_rows(b * tq)](flat(probs), flat(u), dropout, float(rate), float(scale), tk,
                                 flat(grad_weights), flat(grad_scores))
