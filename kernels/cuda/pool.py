"""2-D max and average pooling (NCHW) on the GPU, one launch per call.

Same semantics as kernels/cpu/pool.py: windows walked in row-major order, padded cells never win
a max and are not counted in an average; a window with no cell inside the image gives max -inf
with argmax -1, average 0.

* forward: one thread per output element (grid-stride).
* max backward: one block per (n, c) plane (grid-stride over planes): the block zeroes the plane,
  then adds each gradient at its argmax with a global atomic add (only overlapping windows,
  stride < pool, ever add twice to one cell; the order of those few additions may then vary).
* average backward: a gather, one thread per input element summing the windows that cover it
  (no atomics, deterministic).
"""
import math

from numba import cuda

from ._common import config, grid_1d, kernel, launcher, view


@kernel("A4 i i i i i i A4 q4")
def _max_fwd(x, pool_h, pool_w, sh, sw, ph, pw, out, argmax):
    N, C, H, W = x.shape
    OH, OW = out.shape[2], out.shape[3]
    P = OH * OW
    for idx in range(cuda.grid(1), N * C * P, cuda.gridsize(1)):
        plane = idx // P
        q = idx - plane * P
        oh = q // OW
        ow = q - oh * OW
        n = plane // C
        c = plane - n * C
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


@kernel("A2 q2 A2")
def _max_bwd(g2, a2, gi2):
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


@kernel("A4 i i i i i i A4")
def _avg_fwd(x, pool_h, pool_w, sh, sw, ph, pw, out):
    N, C, H, W = x.shape
    OH, OW = out.shape[2], out.shape[3]
    P = OH * OW
    for idx in range(cuda.grid(1), N * C * P, cuda.gridsize(1)):
        plane = idx // P
        q = idx - plane * P
        oh = q // OW
        ow = q - oh * OW
        n = plane // C
        c = plane - n * C
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


@kernel("A4 i i i i i i A4")
def _avg_bwd(grad_out, pool_h, pool_w, sh, sw, ph, pw, grad_in):
    N, C, H, W = grad_in.shape
    OH, OW = grad_out.shape[2], grad_out.shape[3]
    HW = H * W
    for idx in range(cuda.grid(1), N * C * HW, cuda.gridsize(1)):
        plane = idx // HW
        q = idx - plane * HW
        h = q // W
        w = q - h * W
        n = plane // C
        c = plane - n * C
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
