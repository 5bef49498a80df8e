"""Augmentation and spatial-dropout kernels on the GPU: same public launchers, arguments and
semantics as kernels/cpu/augmentation.py (see its docstring for the contract).

Every kernel is a grid-stride loop over the output elements (coalesced writes). Spatial dropout
runs on flat views with the plane size ``H*W`` as a parameter; flips and translations index the
(N, C, H, W) arrays, the backward passes reuse the forward kernels (a flip is its own inverse, a
translation's adjoint is the opposite shift). The per-sample flag/shift arrays are int32 or int64
(both of one call the same type). The affine warp's forward pass is a grid-stride loop over the
output pixels; its backward pass takes one block per image plane and adds with atomics.
"""
import math

import numpy as np
from numba import cuda

from .. import scalar
from ._common import (A1, A2, A4, Bool, Float, Int, L1, config, device, flat, grid_1d, kernel,
                      nchw)


# ---------------------------------------------------------------------------------------------
# spatial dropout (flat views: x, out of N*C*H*W; u, mask of N*C)

@kernel
def _sdrop_fwd(x: A1, u: A1, hw: Int, rate: Float, keep_scale: Float, out: A1, mask: A1):
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for p in range(start, u.size, stride):
        mask[p] = keep_scale if u[p] >= rate else 0.0
    for i in range(start, x.size, stride):
        p = i // hw
        m = keep_scale if u[p] >= rate else 0.0
        out[i] = x[i] * m


def spatial_dropout2d_forward(x, u, rate, out, mask):
    """mask[n, c] = (u[n, c] >= rate) / (1 - rate) (0 when rate >= 1); out = x * mask over each
    whole (n, c) plane. x, out: (N, C, H, W); u, mask: (N, C)."""
    keep_scale = 1.0 / (1.0 - rate) if rate < 1.0 else 0.0
    if x.size:
        hw = x.shape[2] * x.shape[3]
        _sdrop_fwd[grid_1d(x.size)](flat(x), flat(u), hw, rate, keep_scale,
                                    flat(out), flat(mask))


@kernel
def _sdrop_bwd(grad_out: A1, mask: A1, hw: Int, grad_in: A1):
    for i in range(cuda.grid(1), grad_out.size, cuda.gridsize(1)):
        grad_in[i] = grad_out[i] * mask[i // hw]


def spatial_dropout2d_backward(grad_out, mask, grad_in):
    """grad_in = grad_out * mask[n, c] over each (n, c) plane."""
    if grad_out.size:
        hw = grad_out.shape[2] * grad_out.shape[3]
        _sdrop_bwd[grid_1d(grad_out.size)](flat(grad_out),
                                           flat(mask), hw,
                                           flat(grad_in))


# ---------------------------------------------------------------------------------------------
# flips

@kernel
def _flip(x: A4, flip_h: L1, flip_w: L1, out: A4):
    nc = x.shape[1]
    hh = x.shape[2]
    ww = x.shape[3]
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        w = i % ww
        t = i // ww
        h = t % hh
        t = t // hh
        c = t % nc
        n = t // nc
        sh = hh - 1 - h if flip_h[n] != 0 else h
        sw = ww - 1 - w if flip_w[n] != 0 else w
        out[n, c, h, w] = x[n, c, sh, sw]


def flip_forward(x, flip_h, flip_w, out):
    """Per-sample flips: flip_h[n] != 0 reverses the H axis of sample n (vertical flip),
    flip_w[n] != 0 the W axis (horizontal flip). ``out`` must not alias ``x``."""
    if x.size:
        _flip[grid_1d(x.size)](x, flip_h, flip_w, out)


def flip_backward(grad_out, flip_h, flip_w, grad_in):
    """The gradient of flip_forward: the same flips applied to ``grad_out``."""
    if grad_out.size:
        _flip[grid_1d(grad_out.size)](grad_out, flip_h, flip_w, grad_in)


# ---------------------------------------------------------------------------------------------
# translations

@kernel
def _translate(x: A4, dy: L1, dx: L1, sign: Int, out: A4):
    nc = x.shape[1]
    hh = x.shape[2]
    ww = x.shape[3]
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        w = i % ww
        t = i // ww
        h = t % hh
        t = t // hh
        c = t % nc
        n = t // nc
        sh = h - sign * dy[n]
        sw = w - sign * dx[n]
        if sh >= 0 and sh < hh and sw >= 0 and sw < ww:
            out[n, c, h, w] = x[n, c, sh, sw]
        else:
            out[n, c, h, w] = 0.0


def translate_forward(x, dy, dx, out):
    """out[n, c, h, w] = x[n, c, h - dy[n], w - dx[n]], zero outside the image (whole pixels).
    ``out`` must not alias ``x``."""
    if x.size:
        _translate[grid_1d(x.size)](x, dy, dx, 1, out)


def translate_backward(grad_out, dy, dx, grad_in):
    """The gradient of translate_forward: grad_out shifted back by (-dy, -dx), zero-filled."""
    if grad_out.size:
        _translate[grid_1d(grad_out.size)](grad_out, dy, dx, -1, grad_in)


# ---------------------------------------------------------------------------------------------
# affine warps (kernels/scalar.py warp_tap, fill_index)

_warp_tap = device(scalar.warp_tap)
_fill_index = device(scalar.fill_index)


@kernel
def _warp_fwd(x: A4, mats: A2, mode: Int, fill: Float, bilinear: Bool, out: A4):
    nc = x.shape[1]
    hh = x.shape[2]
    ww = x.shape[3]
    taps = 4 if bilinear else 1
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        n, c, h, w = nchw(i, nc, hh, ww)
        v = 0.0
        for k in range(taps):
            iy, ix, wt = _warp_tap(mats[n, 0], mats[n, 1], mats[n, 2], mats[n, 3], mats[n, 4],
                                   mats[n, 5], h, w, k, bilinear)
            iy = _fill_index(iy, hh, mode)
            ix = _fill_index(ix, ww, mode)
            v += wt * (x[n, c, iy, ix] if iy >= 0 and ix >= 0 else fill)
        out[n, c, h, w] = v


def warp_forward(x, mats, mode, fill, bilinear, out):
    """out[n, c, h, w] = x[n, c] sampled at (m0 h + m1 w + m2, m3 h + m4 w + m5) with
    m = mats[n] ((N, 6)), bilinearly or at the nearest pixel; outside the image ``mode`` (a
    code of scalar.FILL_MODES) decides, "constant" reading ``fill``. ``out`` must not alias
    ``x``."""
    if x.size:
        _warp_fwd[grid_1d(x.size)](x, mats, mode, fill, bilinear, out)


@kernel
def _warp_bwd(grad_out: A4, mats: A2, mode: Int, bilinear: Bool, grad_in: A4):
    nc = grad_in.shape[1]
    hh = grad_in.shape[2]
    ww = grad_in.shape[3]
    taps = 4 if bilinear else 1
    zero = grad_in.dtype.type(0)
    for plane in range(cuda.blockIdx.x, grad_in.shape[0] * nc, cuda.gridDim.x):
        n = plane // nc
        c = plane - n * nc
        for q in range(cuda.threadIdx.x, hh * ww, cuda.blockDim.x):
            grad_in[n, c, q // ww, q % ww] = zero
        cuda.syncthreads()
        for q in range(cuda.threadIdx.x, hh * ww, cuda.blockDim.x):
            h = q // ww
            w = q - h * ww
            g = grad_out[n, c, h, w]
            for k in range(taps):
                iy, ix, wt = _warp_tap(mats[n, 0], mats[n, 1], mats[n, 2], mats[n, 3],
                                       mats[n, 4], mats[n, 5], h, w, k, bilinear)
                iy = _fill_index(iy, hh, mode)
                ix = _fill_index(ix, ww, mode)
                if iy >= 0 and ix >= 0:
                    cuda.atomic.add(grad_in, (n, c, iy, ix), grad_in.dtype.type(wt * g))
        cuda.syncthreads()


def warp_backward(grad_out, mats, mode, bilinear, grad_in):
    """The gradient of warp_forward with respect to ``x``: each output gradient added, times
    its weights, to the input pixels it was sampled from (one block per image plane: it clears
    the plane, then adds with atomics)."""
    if grad_in.size:
        planes = grad_in.shape[0] * grad_in.shape[1]
        _warp_bwd[min(planes, config.max_blocks), config.threads](grad_out, mats, mode,
                                                                   bilinear, grad_in)


# ---------------------------------------------------------------------------------------------
# Gaussian noise (flat 1-D)

@kernel
def _gaussian_noise(x: A1, noise: A1, stddev: Float, out: A1):
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        out[i] = x[i] + stddev * noise[i]


def gaussian_noise_forward(x, noise, stddev, out):
    """out = x + stddev * noise (out may alias x)."""
    if x.size:
        _gaussian_noise[grid_1d(x.size)](x, noise, stddev, out)


@kernel
def _box_muller(u: A1, out: A1):
    n = out.size
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        r = math.sqrt(-2.0 * math.log(1.0 - np.float64(u[i])))
        out[i] = r * math.cos(2.0 * math.pi * np.float64(u[n + i]))


def box_muller(u, out):
    """Standard normal numbers from uniform [0, 1) ones: out[i] = sqrt(-2 log(1 - u[i])) *
    cos(2 pi u[n + i]), n = out.size, u.size = 2n."""
    if out.size:
        _box_muller[grid_1d(out.size)](u, out)
