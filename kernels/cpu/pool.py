"""2-D max and average pooling kernels (NCHW), CPU.

Direct loops, one (n, c) plane at a time (planes in parallel for large inputs). Each output cell
clips its window to the image once and then scans it with no bounds tests; the max scan is
branch-free (a select per cell), since random data makes a compare-and-branch mispredict half of
the time.

``pad_h``/``pad_w`` are the top/left padding; the bottom/right padding follows from the output
shape. Padded cells never win a max and are not counted in an average (PyTorch
``count_include_pad=False``, Keras ``padding="same"``). A window with no cell inside the image
(only possible with padding as large as the window) gives max -inf with argmax -1, average 0.
"""
import numpy as np
from numba import njit, prange

# Input elements below which a call runs serially.
_PARALLEL_MIN_SIZE = 1 << 16


@njit(cache=True)
def _window(o, stride, pad, size, n_in):
    """In-image part [a, z) of the window of output position o (empty when a >= z)."""
    s = o * stride - pad
    return max(s, 0), min(s + size, n_in)


# ---------------------------------------------------------------------------------------------
# max pooling
# ---------------------------------------------------------------------------------------------

@njit(cache=True)
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


@njit(cache=True)
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


@njit(cache=True)
def _max_any_plane(xp, pool_h, pool_w, sh, sw, ph, pw, op, ap):
    if (pool_h == 2 and pool_w == 2 and sh == 2 and sw == 2 and ph == 0 and pw == 0
            and 2 * op.shape[0] <= xp.shape[0] and 2 * op.shape[1] <= xp.shape[1]):
        _max_plane_2x2(xp, op, ap)
    else:
        _max_plane(xp, pool_h, pool_w, sh, sw, ph, pw, op, ap)


@njit(cache=True, parallel=True)
def _max_forward_par(x, pool_h, pool_w, sh, sw, ph, pw, out, argmax):
    C = x.shape[1]
    for p in prange(x.shape[0] * C):
        n, c = p // C, p % C
        _max_any_plane(x[n, c], pool_h, pool_w, sh, sw, ph, pw, out[n, c], argmax[n, c])


@njit(cache=True)
def max_pool2d_forward(x, pool_h, pool_w, stride_h, stride_w, pad_h, pad_w, out, argmax):
    """out = max over each pool_h x pool_w window; argmax = h*W + w of the winner in its plane."""
    N, C = x.shape[0], x.shape[1]
    if x.size >= _PARALLEL_MIN_SIZE and N * C > 1:
        _max_forward_par(x, pool_h, pool_w, stride_h, stride_w, pad_h, pad_w, out, argmax)
    else:
        for n in range(N):
            for c in range(C):
                _max_any_plane(x[n, c], pool_h, pool_w, stride_h, stride_w, pad_h, pad_w,
                               out[n, c], argmax[n, c])


@njit(cache=True)
def _max_back_plane(gp, ap, gip):
    """gip (flat plane) = scatter-add of gp at the argmax positions ap."""
    for q in range(gip.shape[0]):
        gip[q] = 0.0
    for q in range(gp.shape[0]):
        k = ap[q]
        if k >= 0:
            gip[k] += gp[q]


@njit(cache=True, parallel=True)
def _max_backward_par(g3, a3, gi3):
    for p in prange(gi3.shape[0]):
        _max_back_plane(g3[p], a3[p], gi3[p])


@njit(cache=True)
def max_pool2d_backward(grad_out, argmax, grad_in):
    """grad_in = zeros, plus each grad_out element added at its argmax position."""
    N, C, H, W = grad_in.shape
    OH, OW = grad_out.shape[2], grad_out.shape[3]
    g3 = grad_out.reshape(N * C, OH * OW)
    a3 = argmax.reshape(N * C, OH * OW)
    gi3 = grad_in.reshape(N * C, H * W)
    if grad_in.size >= _PARALLEL_MIN_SIZE and N * C > 1:
        _max_backward_par(g3, a3, gi3)
    else:
        for p in range(N * C):
            _max_back_plane(g3[p], a3[p], gi3[p])


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


@njit(cache=True, parallel=True)
def _avg_forward_par(x, pool_h, pool_w, sh, sw, ph, pw, out):
    C = x.shape[1]
    for p in prange(x.shape[0] * C):
        n, c = p // C, p % C
        _avg_plane(x[n, c], pool_h, pool_w, sh, sw, ph, pw, out[n, c])


@njit(cache=True)
def avg_pool2d_forward(x, pool_h, pool_w, stride_h, stride_w, pad_h, pad_w, out):
    """out = mean of the in-image cells of each window (padding not counted)."""
    N, C = x.shape[0], x.shape[1]
    if x.size >= _PARALLEL_MIN_SIZE and N * C > 1:
        _avg_forward_par(x, pool_h, pool_w, stride_h, stride_w, pad_h, pad_w, out)
    else:
        for n in range(N):
            for c in range(C):
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


@njit(cache=True, parallel=True)
def _avg_backward_par(grad_out, pool_h, pool_w, sh, sw, ph, pw, grad_in):
    C = grad_in.shape[1]
    for p in prange(grad_in.shape[0] * C):
        n, c = p // C, p % C
        _avg_back_plane(grad_out[n, c], pool_h, pool_w, sh, sw, ph, pw, grad_in[n, c])


@njit(cache=True)
def avg_pool2d_backward(grad_out, pool_h, pool_w, stride_h, stride_w, pad_h, pad_w, grad_in):
    """grad_in = each grad_out element spread evenly over the in-image cells of its window."""
    N, C = grad_in.shape[0], grad_in.shape[1]
    if grad_in.size >= _PARALLEL_MIN_SIZE and N * C > 1:
        _avg_backward_par(grad_out, pool_h, pool_w, stride_h, stride_w, pad_h, pad_w, grad_in)
    else:
        for n in range(N):
            for c in range(C):
                _avg_back_plane(grad_out[n, c], pool_h, pool_w, stride_h, stride_w, pad_h, pad_w,
                                grad_in[n, c])
