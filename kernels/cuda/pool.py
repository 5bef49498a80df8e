"""2-D max and average pooling (NCHW), global pooling over the rows of a 2-D array, and
nearest-neighbour upsampling (NCHW), on the GPU, one launch per call.

Same semantics as kernels/cpu/pool.py: windows walked in row-major order, padded cells never win
a max and are not counted in an average; a window with no cell inside the image gives max -inf
with argmax -1, average 0. Global pooling: the first maximum of a row (the first NaN when it
holds one), the mean summed in float64.

* forward: one thread per output element (grid-stride).
* max backward: one block per (n, c) plane (grid-stride over planes): the block zeroes the plane,
  then adds each gradient at its argmax with a global atomic add (only overlapping windows,
  stride < pool, ever add twice to one cell; the order of those few additions may then vary).
* average backward: a gather, one thread per input element summing the windows that cover it
  (no atomics, deterministic).
* global forwards: the row-wise layout of ``_common`` (``lanes`` threads per row, ``rows`` rows
  per block): each lane scans a strided part of its row, then ``row_sum`` / ``row_argmax``.
* global backwards: one thread per input element (grid-stride), every element written.
* nearest upsampling: forward one thread per output element (grid-stride, coalesced stores);
  backward a gather, one thread per input element summing its size_h x size_w block of the
  output gradient in float64, row by row (the CPU kernel's order; no atomics).
"""
import math

import numba
import numpy as np
from numba import cuda

from ._common import (A1, A2, A4, Int, Q1, Q2, Q4, ROW_LANES, ROW_ROWS, config, first_max_wins,
                      grid_1d, grid_rows, kernel, launcher, nchw, row_argmax, row_loop, row_sum,
                      view)


@kernel
def _max_fwd(x: A4, pool_h: Int, pool_w: Int, sh: Int, sw: Int, ph: Int, pw: Int, out: A4,
             argmax: Q4):
    N, C, H, W = x.shape
    OH, OW = out.shape[2], out.shape[3]
    for idx in range(cuda.grid(1), N * C * OH * OW, cuda.gridsize(1)):
        n, c, oh, ow = nchw(idx, C, OH, OW)
        m = -math.inf
        a = -1
        h0 = oh * sh - ph
        w0 = ow * sw - pw
        for i in range(pool_h):
            h = h0 + i
            if h >= 0 and h < H:
                for j in range(pool_w):
                    w = w0 + j
                    if w >= 0 and w < W:
                        v = x[n, c, h, w]
                        if v > m or a < 0 or v != v:
                            m = v
                            a = h * W + w
        out[n, c, oh, ow] = m
        argmax[n, c, oh, ow] = a


@launcher
def max_pool2d_forward(x, pool_h, pool_w, stride_h, stride_w, pad_h, pad_w, out, argmax):
    """out = max over each window; argmax = h*W + w of the (first) winner in its plane."""
    if out.size:
        _max_fwd[grid_1d(out.size)](x, pool_h, pool_w, stride_h, stride_w, pad_h, pad_w,
                                    out, argmax)


@kernel
def _max_bwd(g2: A2, a2: Q2, gi2: A2):
    planes, P = g2.shape
    HW = gi2.shape[1]
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    zero = gi2.dtype.type(0)
    for plane in range(cuda.blockIdx.x, planes, cuda.gridDim.x):
        for q in range(t, HW, nt):
            gi2[plane, q] = zero
        cuda.syncthreads()
        for q in range(t, P, nt):
            k = a2[plane, q]
            if k >= 0:
                cuda.atomic.add(gi2, (plane, k), g2[plane, q])
        cuda.syncthreads()


@launcher
def max_pool2d_backward(grad_out, argmax, grad_in):
    """grad_in = zeros, plus each grad_out element added at its argmax position."""
    N, C, H, W = grad_in.shape
    OH, OW = grad_out.shape[2], grad_out.shape[3]
    if grad_in.size:
        _max_bwd[min(N * C, config.max_blocks), config.threads](
            view(grad_out, N * C, OH * OW), view(argmax, N * C, OH * OW),
            view(grad_in, N * C, H * W))


@kernel
def _avg_fwd(x: A4, pool_h: Int, pool_w: Int, sh: Int, sw: Int, ph: Int, pw: Int, out: A4):
    N, C, H, W = x.shape
    OH, OW = out.shape[2], out.shape[3]
    for idx in range(cuda.grid(1), N * C * OH * OW, cuda.gridsize(1)):
        n, c, oh, ow = nchw(idx, C, OH, OW)
        h0 = max(oh * sh - ph, 0)
        h1 = min(oh * sh - ph + pool_h, H)
        w0 = max(ow * sw - pw, 0)
        w1 = min(ow * sw - pw + pool_w, W)
        s = 0.0
        for h in range(h0, h1):
            for w in range(w0, w1):
                s += x[n, c, h, w]
        cnt = (h1 - h0) * (w1 - w0) if h1 > h0 and w1 > w0 else 0
        out[n, c, oh, ow] = s / cnt if cnt > 0 else 0.0


@launcher
def avg_pool2d_forward(x, pool_h, pool_w, stride_h, stride_w, pad_h, pad_w, out):
    """out = mean of the in-image cells of each window (padding not counted)."""
    if out.size:
        _avg_fwd[grid_1d(out.size)](x, pool_h, pool_w, stride_h, stride_w, pad_h, pad_w, out)


@kernel
def _avg_bwd(grad_out: A4, pool_h: Int, pool_w: Int, sh: Int, sw: Int, ph: Int, pw: Int,
             grad_in: A4):
    N, C, H, W = grad_in.shape
    OH, OW = grad_out.shape[2], grad_out.shape[3]
    for idx in range(cuda.grid(1), N * C * H * W, cuda.gridsize(1)):
        n, c, h, w = nchw(idx, C, H, W)
        # outputs whose window [o*s - p, o*s - p + pool) covers h: o in [oh_lo, oh_hi]
        oh_lo = max(0, (h + ph - pool_h + sh) // sh)     # ceil((h + ph - pool_h + 1) / sh)
        oh_hi = min(OH - 1, (h + ph) // sh)
        ow_lo = max(0, (w + pw - pool_w + sw) // sw)
        ow_hi = min(OW - 1, (w + pw) // sw)
        s = 0.0
        for oh in range(oh_lo, oh_hi + 1):
            hh = oh * sh - ph
            rows = min(hh + pool_h, H) - max(hh, 0)
            for ow in range(ow_lo, ow_hi + 1):
                ww = ow * sw - pw
                cols = min(ww + pool_w, W) - max(ww, 0)
                s += grad_out[n, c, oh, ow] / (rows * cols)
        grad_in[n, c, h, w] = s


@launcher
def avg_pool2d_backward(grad_out, pool_h, pool_w, stride_h, stride_w, pad_h, pad_w, grad_in):
    """grad_in = each grad_out element spread evenly over the in-image cells of its window."""
    if grad_in.size:
        _avg_bwd[grid_1d(grad_in.size)](grad_out, pool_h, pool_w, stride_h, stride_w, pad_h,
                                        pad_w, grad_in)


# ---------------------------------------------------------------------------------------------
# global pooling over the rows of x (rows, cols)

@kernel
def _global_avg_fwd(x: A2, out: A1):
    sh = cuda.shared.array((ROW_ROWS, ROW_LANES), numba.float64)
    rows, cols = x.shape
    tx = cuda.threadIdx.x
    lanes = cuda.blockDim.x
    first, stop, step = row_loop(rows)
    for r in range(first, stop, step):
        s = 0.0
        if r < rows:
            for j in range(tx, cols, lanes):
                s += x[r, j]
        s = row_sum(sh, s)
        if r < rows and tx == 0:
            out[r] = s / cols if cols > 0 else 0.0


@launcher
def global_avg_pool_forward(x, out):
    """out[r] = mean of row r of x (rows, cols), summed in float64 (0 for an empty row)."""
    if x.shape[0]:
        _global_avg_fwd[grid_rows(x.shape[0])](x, out)


@kernel
def _global_avg_bwd(grad_out: A1, grad_in: A2):
    rows, cols = grad_in.shape
    for i in range(cuda.grid(1), rows * cols, cuda.gridsize(1)):
        r = i // cols
        grad_in[r, i - r * cols] = grad_out[r] / cols


@launcher
def global_avg_pool_backward(grad_out, grad_in):
    """grad_in[r, :] = grad_out[r] / cols."""
    if grad_in.size:
        _global_avg_bwd[grid_1d(grad_in.size)](grad_out, grad_in)


@kernel
def _global_max_fwd(x: A2, out: A1, argmax: Q1):
    sv = cuda.shared.array((ROW_ROWS, ROW_LANES), numba.float64)
    sk = cuda.shared.array((ROW_ROWS, ROW_LANES), numba.int64)
    rows, cols = x.shape
    tx = cuda.threadIdx.x
    lanes = cuda.blockDim.x
    first, stop, step = row_loop(rows)
    for r in range(first, stop, step):
        m = -math.inf
        k = -1
        if r < rows:
            for j in range(tx, cols, lanes):
                v = x[r, j]
                if first_max_wins(m, k, v, j):
                    m = v
                    k = j
        m, k = row_argmax(sv, sk, m, k)
        if r < rows and tx == 0:
            out[r] = m
            argmax[r] = k


@launcher
def global_max_pool_forward(x, out, argmax):
    """out[r] = max of row r of x (rows, cols); argmax[r] (int64) = the column of its first
    occurrence. A row holding a NaN gives NaN, argmax at its first NaN (as torch.max)."""
    if x.shape[0]:
        _global_max_fwd[grid_rows(x.shape[0])](x, out, argmax)


@kernel
def _global_max_bwd(grad_out: A1, argmax: Q1, grad_in: A2):
    rows, cols = grad_in.shape
    zero = grad_in.dtype.type(0)
    for i in range(cuda.grid(1), rows * cols, cuda.gridsize(1)):
        r = i // cols
        j = i - r * cols
        grad_in[r, j] = grad_out[r] if j == argmax[r] else zero


@launcher
def global_max_pool_backward(grad_out, argmax, grad_in):
    """grad_in (rows, cols) = zeros, except grad_in[r, argmax[r]] = grad_out[r]."""
    if grad_in.size:
        _global_max_bwd[grid_1d(grad_in.size)](grad_out, argmax, grad_in)


# ---------------------------------------------------------------------------------------------
# nearest-neighbour upsampling by integer factors

@kernel
def _upsample_fwd(x: A4, sh: Int, sw: Int, out: A4):
    N, C, H, W = x.shape
    OH, OW = out.shape[2], out.shape[3]
    for idx in range(cuda.grid(1), N * C * OH * OW, cuda.gridsize(1)):
        n, c, oh, ow = nchw(idx, C, OH, OW)
        out[n, c, oh, ow] = x[n, c, oh // sh, ow // sw]


@launcher
def upsample2d_forward(x, size_h, size_w, out):
    """out (N, C, H*size_h, W*size_w) = x (N, C, H, W) with every pixel repeated size_h times down
    and size_w times across (nearest-neighbour upsampling)."""
    if out.size:
        _upsample_fwd[grid_1d(out.size)](x, size_h, size_w, out)


@kernel
def _upsample_bwd(grad_out: A4, sh: Int, sw: Int, grad_in: A4):
    N, C, H, W = grad_in.shape
    for idx in range(cuda.grid(1), N * C * H * W, cuda.gridsize(1)):
        n, c, h, w = nchw(idx, C, H, W)
        s = np.float64(0.0)     # (a NumPy float64 also in the simulator: float64 sums there)
        for i in range(sh):
            for j in range(sw):
                s += grad_out[n, c, h * sh + i, w * sw + j]
        grad_in[n, c, h, w] = s


@launcher
def upsample2d_backward(grad_out, size_h, size_w, grad_in):
    """grad_in (N, C, H, W) = the sum of each size_h x size_w block of grad_out (N, C, H*size_h,
    W*size_w), summed in float64; every element written."""
    if grad_in.size:
        _upsample_bwd[grid_1d(grad_in.size)](grad_out, size_h, size_w, grad_in)
