"""2-D max and average pooling kernels (NCHW), global pooling over rows of a 2-D array, and
nearest-neighbour upsampling (NCHW), CPU.

Direct loops, one (n, c) plane at a time (planes in parallel for large inputs). Each output cell
clips its window to the image once and then scans it with no bounds tests; the max scan is
branch-free (a select per cell), since random data makes a compare-and-branch mispredict half of
the time.

``pad_h``/``pad_w`` are the top/left padding; the bottom/right padding follows from the output
shape. Padded cells never win a max and are not counted in an average (PyTorch
``count_include_pad=False``, Keras ``padding="same"``). A window with no cell inside the image
(only possible with padding as large as the window) gives max -inf with argmax -1, average 0.

Global pooling sees its input as x (rows, cols): a layer passes an (N, C, H, W) batch as
(N*C, H*W), one output per row. The mean is summed in float64; the max keeps the column of the
first maximum, and a row holding a NaN gives NaN with the column of its first NaN (torch.max's
rule). Backward passes write every element of grad_in. An empty row (cols = 0) is an empty
window: max -inf with argmax -1, average 0. Rows run in parallel (prange) for large inputs.

Upsampling repeats each pixel size_h x size_w times; its backward sums each block in float64,
row by row (the CUDA twin's order). Large inputs run fixed chunks of planes in parallel (no
reduction crosses a chunk: the same bits on any thread count).
"""
import numpy as np
from numba import njit, prange

from ._jit import HELPER
from ._threads import run, split_kernel

_FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

# Input elements below which a call runs serially.
_PARALLEL_MIN_SIZE = 1 << 16
# Global pooling: elements at or above which rows run in parallel. A serial pass costs ~0.04 ns
# an element here (mean, backward passes) or ~0.25 ns (max), a parallel start ~10 us or more.
_GLOBAL_PARALLEL_MIN = 1 << 20
_GLOBAL_MAX_PARALLEL_MIN = 1 << 18
# Blocks of rows a parallel global pooling call is split into (enough to balance the threads).
_ROW_CHUNKS = 16
# Upsampling: output elements at or above which chunks of planes run in parallel. A serial pass
# costs ~0.2 ns an output element here (forward; ~0.4 backward), a parallel start ~10 us or more.
_UPSAMPLE_PARALLEL_MIN = 1 << 18


@njit(**HELPER)
def _window(o, stride, pad, size, n_in):
    """In-image part [a, z) of the window of output position o (empty when a >= z)."""
    s = o * stride - pad
    return max(s, 0), min(s + size, n_in)


# ---------------------------------------------------------------------------------------------
# max pooling
# ---------------------------------------------------------------------------------------------

@njit(**HELPER)
def _max_plane(xp, pool_h, pool_w, sh, sw, ph, pw, op, ap):
    """One plane: op = window max, ap = flat index of the first maximum (a NaN wins, like torch)."""
    H, W = xp.shape
    OH, OW = op.shape
    for oh in range(OH):
        h0, h1 = _window(oh, sh, ph, pool_h, H)
        for ow in range(OW):
            w0, w1 = _window(ow, sw, pw, pool_w, W)
            if h0 >= h1 or w0 >= w1:
                op[oh, ow] = -np.inf
                ap[oh, ow] = -1
                continue
            m = xp[h0, w0]
            k = h0 * W + w0
            for h in range(h0, h1):
                xr = xp[h]
                for w in range(w0, w1):
                    v = xr[w]
                    better = (v > m) | (v != v)
                    m = v if better else m
                    k = h * W + w if better else k
            op[oh, ow] = m
            ap[oh, ow] = k


@njit(**HELPER)
def _max_plane_2x2(xp, op, ap):
    """_max_plane for the common 2x2 window, stride 2, no padding on any side (every window
    inside the image):
    the four candidates of a window are read directly, in the same order and with the same
    tie and NaN rule."""
    W = xp.shape[1]
    OH, OW = op.shape
    for oh in range(OH):
        r0 = xp[2 * oh]
        r1 = xp[2 * oh + 1]
        k0 = 2 * oh * W
        for ow in range(OW):
            w = 2 * ow
            m = r0[w]
            k = k0 + w
            v = r0[w + 1]
            better = (v > m) | (v != v)
            m = v if better else m
            k = k0 + w + 1 if better else k
            v = r1[w]
            better = (v > m) | (v != v)
            m = v if better else m
            k = k0 + W + w if better else k
            v = r1[w + 1]
            better = (v > m) | (v != v)
            m = v if better else m
            k = k0 + W + w + 1 if better else k
            op[oh, ow] = m
            ap[oh, ow] = k


@njit(**HELPER)
def _max_any_plane(xp, pool_h, pool_w, sh, sw, ph, pw, op, ap):
    if (pool_h == 2 and pool_w == 2 and sh == 2 and sw == 2 and ph == 0 and pw == 0
            and 2 * op.shape[0] <= xp.shape[0] and 2 * op.shape[1] <= xp.shape[1]):
        _max_plane_2x2(xp, op, ap)
    else:
        _max_plane(xp, pool_h, pool_w, sh, sw, ph, pw, op, ap)


@njit(cache=True, nogil=True)
def _max_forward_planes(x, pool_h, pool_w, sh, sw, ph, pw, out, argmax, p0, p1):
    """Planes p0..p1-1 (p = n*C + c) of max_pool2d_forward."""
    C = x.shape[1]
    for p in range(p0, p1):
        n, c = p // C, p % C
        _max_any_plane(x[n, c], pool_h, pool_w, sh, sw, ph, pw, out[n, c], argmax[n, c])


def max_pool2d_forward(x, pool_h, pool_w, stride_h, stride_w, pad_h, pad_w, out, argmax):
    """out = max over each pool_h x pool_w window; argmax = h*W + w of the winner in its plane."""
    planes = x.shape[0] * x.shape[1]
    run(_max_forward_planes, (x, pool_h, pool_w, stride_h, stride_w, pad_h, pad_w, out, argmax),
        planes, x.size >= _PARALLEL_MIN_SIZE)


@njit(**HELPER)
def _max_back_plane(gp, ap, gip):
    """gip (flat plane) = scatter-add of gp at the argmax positions ap."""
    for q in range(gip.shape[0]):
        gip[q] = 0.0
    for q in range(gp.shape[0]):
        k = ap[q]
        if k >= 0:
            gip[k] += gp[q]


@njit(cache=True, nogil=True)
def _max_backward_planes(g3, a3, gi3, p0, p1):
    """Planes p0..p1-1 of max_pool2d_backward (flat planes)."""
    for p in range(p0, p1):
        _max_back_plane(g3[p], a3[p], gi3[p])


def max_pool2d_backward(grad_out, argmax, grad_in):
    """grad_in = zeros, plus each grad_out element added at its argmax position."""
    N, C, H, W = grad_in.shape
    OH, OW = grad_out.shape[2], grad_out.shape[3]
    run(_max_backward_planes, (grad_out.reshape(N * C, OH * OW), argmax.reshape(N * C, OH * OW),
                               grad_in.reshape(N * C, H * W)), N * C,
        grad_in.size >= _PARALLEL_MIN_SIZE)


# ---------------------------------------------------------------------------------------------
# average pooling
# ---------------------------------------------------------------------------------------------

@njit(cache=True)
def _avg_plane(xp, pool_h, pool_w, sh, sw, ph, pw, op):
    H, W = xp.shape
    OH, OW = op.shape
    for oh in range(OH):
        h0, h1 = _window(oh, sh, ph, pool_h, H)
        for ow in range(OW):
            w0, w1 = _window(ow, sw, pw, pool_w, W)
            s = 0.0
            for h in range(h0, h1):
                xr = xp[h]
                for w in range(w0, w1):
                    s += xr[w]
            cnt = max(h1 - h0, 0) * max(w1 - w0, 0)
            op[oh, ow] = s / cnt if cnt > 0 else 0.0


def _planes_work(x, *_):
    """The work of a kernel over the (n, c) planes of ``x``: its size, 0 for a single plane."""
    return x.size if x.shape[0] * x.shape[1] > 1 else 0


@split_kernel(_planes_work, _PARALLEL_MIN_SIZE)
def avg_pool2d_forward(x, pool_h, pool_w, stride_h, stride_w, pad_h, pad_w, out):
    """out = mean of the in-image cells of each window (padding not counted)."""
    C = x.shape[1]
    for p in prange(x.shape[0] * C):
        n, c = p // C, p % C
        _avg_plane(x[n, c], pool_h, pool_w, stride_h, stride_w, pad_h, pad_w, out[n, c])


@njit(cache=True)
def _avg_back_plane(gp, pool_h, pool_w, sh, sw, ph, pw, gip):
    H, W = gip.shape
    OH, OW = gp.shape
    for h in range(H):
        for w in range(W):
            gip[h, w] = 0.0
    for oh in range(OH):
        h0, h1 = _window(oh, sh, ph, pool_h, H)
        for ow in range(OW):
            w0, w1 = _window(ow, sw, pw, pool_w, W)
            cnt = max(h1 - h0, 0) * max(w1 - w0, 0)
            if cnt == 0:
                continue
            s = gp[oh, ow] / cnt
            for h in range(h0, h1):
                gr = gip[h]
                for w in range(w0, w1):
                    gr[w] += s


@split_kernel(lambda grad_out, *args: _planes_work(args[-1]), _PARALLEL_MIN_SIZE)
def avg_pool2d_backward(grad_out, pool_h, pool_w, stride_h, stride_w, pad_h, pad_w, grad_in):
    """grad_in = each grad_out element spread evenly over the in-image cells of its window."""
    C = grad_in.shape[1]
    for p in prange(grad_in.shape[0] * C):
        n, c = p // C, p % C
        _avg_back_plane(grad_out[n, c], pool_h, pool_w, stride_h, stride_w, pad_h, pad_w,
                        grad_in[n, c])


# ---------------------------------------------------------------------------------------------
# global pooling over the rows of x (rows, cols): serial, or _ROW_CHUNKS blocks of rows in
# parallel; each helper loops over a block of rows (no call per row)
# ---------------------------------------------------------------------------------------------

@njit(cache=True, fastmath=_FASTMATH)
def _avg_rows(x, lo, hi, out):
    """out[r] = mean of row r (float64 sum, reassociated: vectorized) for lo <= r < hi."""
    cols = x.shape[1]
    for r in range(lo, hi):
        s = 0.0
        for j in range(cols):
            s += x[r, j]
        out[r] = s / cols if cols > 0 else 0.0


@njit(cache=True)
def _avg_back_rows(grad_out, lo, hi, grad_in):
    cols = grad_in.shape[1]
    for r in range(lo, hi):
        v = grad_out[r] / max(cols, 1)
        for j in range(cols):
            grad_in[r, j] = v


@njit(cache=True)
def _max_rows(x, lo, hi, out, argmax):
    """out[r], argmax[r] = the first maximum of row r and its column (the first NaN wins), for
    lo <= r < hi. Two passes of independent steps -- eight running maxima ignoring NaN, and
    whether the row holds a NaN -- then a scan that stops at the first NaN or the first cell
    equal to the maximum: ~10x faster than one scan keeping (max, column), whose every step
    waits on the previous compare."""
    cols = x.shape[1]
    full = cols - cols % 8
    for r in range(lo, hi):
        if cols == 0:
            out[r] = -np.inf
            argmax[r] = -1
            continue
        m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = x[r, 0]
        for j in range(0, full, 8):
            m0 = x[r, j] if x[r, j] > m0 else m0
            m1 = x[r, j + 1] if x[r, j + 1] > m1 else m1
            m2 = x[r, j + 2] if x[r, j + 2] > m2 else m2
            m3 = x[r, j + 3] if x[r, j + 3] > m3 else m3
            m4 = x[r, j + 4] if x[r, j + 4] > m4 else m4
            m5 = x[r, j + 5] if x[r, j + 5] > m5 else m5
            m6 = x[r, j + 6] if x[r, j + 6] > m6 else m6
            m7 = x[r, j + 7] if x[r, j + 7] > m7 else m7
        for j in range(full, cols):
            m0 = x[r, j] if x[r, j] > m0 else m0
        for v in (m1, m2, m3, m4, m5, m6, m7):
            m0 = v if v > m0 else m0
        nan = False
        for j in range(cols):
            nan |= x[r, j] != x[r, j]
        k = 0
        if nan:
            while x[r, k] == x[r, k]:
                k += 1
        else:
            while x[r, k] != m0:
                k += 1
        out[r] = x[r, k]
        argmax[r] = k


@njit(cache=True)
def _max_back_rows(grad_out, argmax, lo, hi, grad_in):
    cols = grad_in.shape[1]
    for r in range(lo, hi):
        for j in range(cols):
            grad_in[r, j] = 0.0
        k = argmax[r]
        if 0 <= k < cols:
            grad_in[r, k] = grad_out[r]


@split_kernel(0, _GLOBAL_PARALLEL_MIN)
def global_avg_pool_forward(x, out):
    """out[r] = mean of row r of x (rows, cols), summed in float64 (0 for an empty row)."""
    rows = x.shape[0]
    for t in prange(_ROW_CHUNKS):
        _avg_rows(x, t * rows // _ROW_CHUNKS, (t + 1) * rows // _ROW_CHUNKS, out)


@split_kernel(1, _GLOBAL_PARALLEL_MIN)
def global_avg_pool_backward(grad_out, grad_in):
    """grad_in[r, :] = grad_out[r] / cols."""
    rows = grad_in.shape[0]
    for t in prange(_ROW_CHUNKS):
        _avg_back_rows(grad_out, t * rows // _ROW_CHUNKS, (t + 1) * rows // _ROW_CHUNKS, grad_in)


@split_kernel(0, _GLOBAL_MAX_PARALLEL_MIN)
def global_max_pool_forward(x, out, argmax):
    """out[r] = max of row r of x (rows, cols); argmax[r] (int64) = the column of its first
    occurrence. A row holding a NaN gives NaN, argmax at its first NaN (as torch.max)."""
    rows = x.shape[0]
    for t in prange(_ROW_CHUNKS):
        _max_rows(x, t * rows // _ROW_CHUNKS, (t + 1) * rows // _ROW_CHUNKS, out, argmax)


@split_kernel(2, _GLOBAL_PARALLEL_MIN)
def global_max_pool_backward(grad_out, argmax, grad_in):
    """grad_in (rows, cols) = zeros, except grad_in[r, argmax[r]] = grad_out[r]."""
    rows = grad_in.shape[0]
    for t in prange(_ROW_CHUNKS):
        _max_back_rows(grad_out, argmax, t * rows // _ROW_CHUNKS, (t + 1) * rows // _ROW_CHUNKS,
                       grad_in)


# ---------------------------------------------------------------------------------------------
# nearest-neighbour upsampling by integer factors: x (N, C, H, W) -> out (N, C, H*size_h,
# W*size_w), out[n, c, h, w] = x[n, c, h // size_h, w // size_w]. Planes are processed as rows of
# (P, H, W) views; flat views with unsigned offsets keep the inner loops free of wraparound tests.
# ---------------------------------------------------------------------------------------------

@njit(cache=True)
def _upsample_planes(x3, sh, sw, o3, p0, p1):
    """Planes p0..p1-1: each input row becomes one widened output row, copied sh - 1 times."""
    H, W = x3.shape[1], x3.shape[2]
    OW = o3.shape[2]
    Wu, OWu, swu = np.uint64(W), np.uint64(OW), np.uint64(sw)
    one = np.uint64(1)
    for p in range(p0, p1):
        for h in range(H):
            src = x3[p, h]
            dst = o3[p, h * sh]
            if sw == 1:
                for w in range(Wu):
                    dst[w] = src[w]
            elif sw == 2:
                for w in range(Wu):
                    v = src[w]
                    dst[w + w] = v
                    dst[w + w + one] = v
            else:
                for j in range(swu):
                    for w in range(Wu):
                        dst[w * swu + j] = src[w]
            for i in range(1, sh):
                rep = o3[p, h * sh + i]
                for q in range(OWu):
                    rep[q] = dst[q]


@njit(cache=True)
def _upsample_back_planes(g3, sh, sw, gi3, p0, p1, acc):
    """Planes p0..p1-1: grad_in[h, w] = the sum of its sh x sw block of grad_out, added in float64
    in row-major block order (the order of the CUDA twin) through the row buffer ``acc`` (W,)."""
    H, W = gi3.shape[1], gi3.shape[2]
    Wu, swu = np.uint64(W), np.uint64(sw)
    for p in range(p0, p1):
        for h in range(H):
            for w in range(Wu):
                acc[w] = 0.0
            for i in range(sh):
                row = g3[p, h * sh + i]
                for j in range(swu):
                    for w in range(Wu):
                        acc[w] += row[w * swu + j]
            dst = gi3[p, h]
            for w in range(Wu):
                dst[w] = acc[w]


@split_kernel(lambda x, size_h, size_w, out: _planes_work(out), _UPSAMPLE_PARALLEL_MIN)
def upsample2d_forward(x, size_h, size_w, out):
    """out (N, C, H*size_h, W*size_w) = x (N, C, H, W) with every pixel repeated size_h times down
    and size_w times across (nearest-neighbour upsampling)."""
    N, C, H, W = x.shape
    P = N * C
    x3 = x.reshape(P, H, W)
    o3 = out.reshape(P, H * size_h, W * size_w)
    for t in prange(_ROW_CHUNKS):
        _upsample_planes(x3, size_h, size_w, o3, t * P // _ROW_CHUNKS, (t + 1) * P // _ROW_CHUNKS)


@split_kernel(_planes_work, _UPSAMPLE_PARALLEL_MIN)
def upsample2d_backward(grad_out, size_h, size_w, grad_in):
    """grad_in (N, C, H, W) = the sum of each size_h x size_w block of grad_out (N, C, H*size_h,
    W*size_w), summed in float64; every element written."""
    N, C, H, W = grad_in.shape
    P = N * C
    g3 = grad_out.reshape(P, H * size_h, W * size_w)
    gi3 = grad_in.reshape(P, H, W)
    for t in prange(_ROW_CHUNKS):
        acc = np.empty(W, np.float64)
        _upsample_back_planes(g3, size_h, size_w, gi3, t * P // _ROW_CHUNKS,
                              (t + 1) * P // _ROW_CHUNKS, acc)
