"""Kernels of the training-time augmentation and spatial-dropout layers (NCHW images).

* Spatial dropout drops whole (sample, channel) planes: ``u`` and ``mask`` are (N, C).
* Flips and translations take per-sample integer arrays (int32 or int64, (N,)); a flip is its own
  inverse, a translation's adjoint is the opposite translation, so the backward kernels run the
  forward loops on the gradient. Translations are whole pixels (nearest, no interpolation) and
  fill with zeros (Keras ``fill_mode="constant"``, ``fill_value=0``). Outputs must not alias
  inputs in the flip and translation kernels (they read other positions than they write).
* Affine warps (rotations, zooms) sample each output pixel from the input with per-sample
  (N, 6) matrices (kernels/scalar.py ``warp_tap``: bilinear or nearest, a fill mode outside the
  image); the backward kernel adds each gradient back to the pixels it was sampled from.
* Gaussian noise is elementwise on flat arrays: ``out = x + stddev * noise``. ``box_muller`` turns
  uniforms into standard normal numbers; the GaussianNoise layer uses it on a device (with the
  backend's ``uniform``), while on the CPU numpy's ``standard_normal`` is faster (this twin,
  float64 libm calls without SVML, runs at ~35 ns an element here).

Loops run over the N*C image planes, the innermost over a contiguous row; ``prange`` over the
planes, compiled serially and run so below ``_PAR_MIN`` elements (``_threads.split_kernel``).
"""
import math

import numpy as np
from numba import njit, prange

from .. import scalar
from ._threads import split_kernel

_PAR_MIN = 1 << 18


# ---------------------------------------------------------------------------------------------
# spatial dropout

@njit(inline="always")
def _sdrop_plane(x, u, rate, keep_scale, out, mask, p, nc):
    n = p // nc
    c = p - n * nc
    m = keep_scale if u[n, c] >= rate else 0.0
    mask[n, c] = m
    for h in range(x.shape[2]):
        for w in range(x.shape[3]):
            out[n, c, h, w] = x[n, c, h, w] * m


@split_kernel(0, _PAR_MIN, error_model="numpy")
def spatial_dropout2d_forward(x, u, rate, out, mask):
    """mask[n, c] = (u[n, c] >= rate) / (1 - rate) (0 when rate >= 1); out = x * mask over each
    whole (n, c) plane. x, out: (N, C, H, W); u, mask: (N, C)."""
    nc = x.shape[1]
    planes = x.shape[0] * nc
    keep_scale = 1.0 / (1.0 - rate) if rate < 1.0 else 0.0
    for p in prange(planes):
        _sdrop_plane(x, u, rate, keep_scale, out, mask, p, nc)


@njit(inline="always")
def _scale_plane(g, mask, out, p, nc):
    n = p // nc
    c = p - n * nc
    m = mask[n, c]
    for h in range(g.shape[2]):
        for w in range(g.shape[3]):
            out[n, c, h, w] = g[n, c, h, w] * m


@split_kernel(0, _PAR_MIN, error_model="numpy")
def spatial_dropout2d_backward(grad_out, mask, grad_in):
    """grad_in = grad_out * mask[n, c] over each (n, c) plane."""
    nc = grad_out.shape[1]
    planes = grad_out.shape[0] * nc
    for p in prange(planes):
        _scale_plane(grad_out, mask, grad_in, p, nc)


# ---------------------------------------------------------------------------------------------
# flips

@njit(inline="always")
def _flip_plane(x, flip_h, flip_w, out, p, nc):
    n = p // nc
    c = p - n * nc
    hh = x.shape[2]
    ww = x.shape[3]
    fh = flip_h[n] != 0
    fw = flip_w[n] != 0
    for h in range(hh):
        sh = hh - 1 - h if fh else h
        if fw:
            for w in range(ww):
                out[n, c, h, w] = x[n, c, sh, ww - 1 - w]
        else:
            for w in range(ww):
                out[n, c, h, w] = x[n, c, sh, w]


@split_kernel(0, _PAR_MIN)
def _flip(x, flip_h, flip_w, out):
    nc = x.shape[1]
    planes = x.shape[0] * nc
    for p in prange(planes):
        _flip_plane(x, flip_h, flip_w, out, p, nc)


def flip_forward(x, flip_h, flip_w, out):
    """Per-sample flips of (N, C, H, W) images: flip_h[n] != 0 reverses the H axis of sample n
    (a vertical flip, upside down), flip_w[n] != 0 reverses the W axis (a horizontal flip,
    left-right mirror). ``out`` must not alias ``x``."""
    _flip(x, flip_h, flip_w, out)


def flip_backward(grad_out, flip_h, flip_w, grad_in):
    """The gradient of flip_forward: the same flips applied to ``grad_out`` (a flip is its own
    inverse and its own transpose)."""
    _flip(grad_out, flip_h, flip_w, grad_in)


# ---------------------------------------------------------------------------------------------
# translations

@njit(inline="always")
def _translate_plane(x, dy, dx, sign, out, p, nc):
    n = p // nc
    c = p - n * nc
    hh = x.shape[2]
    ww = x.shape[3]
    sy = sign * dy[n]
    sx = sign * dx[n]
    for h in range(hh):
        src = h - sy
        if src < 0 or src >= hh:
            for w in range(ww):
                out[n, c, h, w] = 0.0
        else:
            # one select per element vectorizes; splitting the row into zero / copy / zero
            # loops did not (measured ~20x slower)
            for w in range(ww):
                s = w - sx
                out[n, c, h, w] = x[n, c, src, s] if s >= 0 and s < ww else 0.0


@split_kernel(0, _PAR_MIN)
def _translate(x, dy, dx, sign, out):
    nc = x.shape[1]
    planes = x.shape[0] * nc
    for p in prange(planes):
        _translate_plane(x, dy, dx, sign, out, p, nc)


def translate_forward(x, dy, dx, out):
    """Shift each (N, C, H, W) sample by whole pixels: out[n, c, h, w] = x[n, c, h - dy[n],
    w - dx[n]], zero where that falls outside the image (positive dy moves the content down,
    positive dx right). ``out`` must not alias ``x``."""
    _translate(x, dy, dx, 1, out)


def translate_backward(grad_out, dy, dx, grad_in):
    """The gradient of translate_forward: grad_out shifted back by (-dy, -dx), zero-filled."""
    _translate(grad_out, dy, dx, -1, grad_in)


# ---------------------------------------------------------------------------------------------
# affine warps (bilinear or nearest sampling, kernels/scalar.py warp_tap)

_fill_index = njit(inline="always")(scalar.fill_index)
_warp_tap = njit(inline="always")(scalar.warp_tap)


@split_kernel(0, _PAR_MIN)
def warp_forward(x, mats, mode, fill, bilinear, out):
    """out[n, c, h, w] = x[n, c] sampled at (m0 h + m1 w + m2, m3 h + m4 w + m5) with
    m = mats[n] ((N, 6)), bilinearly or at the nearest pixel; outside the image ``mode`` (a
    code of scalar.FILL_MODES) decides, "constant" reading ``fill``. ``out`` must not alias
    ``x``."""
    nc, hh, ww = x.shape[1], x.shape[2], x.shape[3]
    taps = 4 if bilinear else 1
    for p in prange(x.shape[0] * nc):
        n = p // nc
        c = p - n * nc
        m = mats[n]
        for h in range(hh):
            for w in range(ww):
                v = 0.0
                for k in range(taps):
                    iy, ix, wt = _warp_tap(m[0], m[1], m[2], m[3], m[4], m[5], h, w, k,
                                           bilinear)
                    iy, ix = _fill_index(iy, hh, mode), _fill_index(ix, ww, mode)
                    v += wt * (x[n, c, iy, ix] if iy >= 0 and ix >= 0 else fill)
                out[n, c, h, w] = v


@split_kernel(0, _PAR_MIN)
def warp_backward(grad_out, mats, mode, bilinear, grad_in):
    """The gradient of warp_forward with respect to ``x``: each output gradient added, times
    its weights, to the input pixels it was sampled from (none where the fill applied)."""
    nc, hh, ww = grad_in.shape[1], grad_in.shape[2], grad_in.shape[3]
    taps = 4 if bilinear else 1
    for p in prange(grad_in.shape[0] * nc):
        n = p // nc
        c = p - n * nc
        m = mats[n]
        grad_in[n, c] = 0.0
        for h in range(hh):
            for w in range(ww):
                g = grad_out[n, c, h, w]
                for k in range(taps):
                    iy, ix, wt = _warp_tap(m[0], m[1], m[2], m[3], m[4], m[5], h, w, k,
                                           bilinear)
                    iy, ix = _fill_index(iy, hh, mode), _fill_index(ix, ww, mode)
                    if iy >= 0 and ix >= 0:
                        grad_in[n, c, iy, ix] += wt * g


# ---------------------------------------------------------------------------------------------
# Gaussian noise (flat 1-D)

@split_kernel(0, _PAR_MIN, error_model="numpy")
def gaussian_noise_forward(x, noise, stddev, out):
    """out = x + stddev * noise (noise standard normal; out may alias x). The backward pass is
    the identity."""
    n = x.size
    for i in prange(n):
        out[i] = x[i] + stddev * noise[i]


@njit(inline="always")
def _box_muller_one(u, n, out, i):
    r = math.sqrt(-2.0 * math.log(1.0 - np.float64(u[i])))
    out[i] = r * math.cos(2.0 * math.pi * np.float64(u[n + i]))


@split_kernel(1, _PAR_MIN // 4, error_model="numpy")
def box_muller(u, out):
    """Standard normal numbers from uniform [0, 1) ones (Box-Muller, cosine branch):
    out[i] = sqrt(-2 log(1 - u[i])) * cos(2 pi u[n + i]) with n = out.size, u.size = 2n.
    1 - u is in (0, 1], so the log is finite; the tails end near 5.8 sigma for float32 uniforms
    (24 bits) and 8.6 sigma for float64 ones (53 bits)."""
    n = out.size
    for i in prange(n):
        _box_muller_one(u, n, out, i)
