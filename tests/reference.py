"""Float64 NumPy references for every kernel (straightforward, obviously-correct code)."""
import numpy as np


def dense_forward(x, w, b):
    return x.astype(np.float64) @ w.astype(np.float64) + b.astype(np.float64)


def dense_backward_weight(x, grad_out):
    """(grad_w, grad_b) = (x.T @ grad_out, column sums of grad_out)."""
    g = _f64(grad_out)
    return _f64(x).T @ g, g.sum(axis=0)


# ---- activations, losses, elementwise (kernels/cpu/{activations,losses,elementwise}.py) --------
from scipy import special as _special


def _f64(a):
    return np.asarray(a, dtype=np.float64)


def linear_forward(x, alpha):
    return _f64(x).copy()


def linear_backward(x, y, grad_out, alpha):
    return _f64(grad_out).copy()


def relu_forward(x, alpha):
    x = _f64(x)
    return np.where(x > 0, x, 0.0)


def relu_backward(x, y, grad_out, alpha):
    return np.where(_f64(x) > 0, _f64(grad_out), 0.0)


def leaky_relu_forward(x, alpha):
    x = _f64(x)
    return np.where(x >= 0, x, alpha * x)


def leaky_relu_backward(x, y, grad_out, alpha):
    return _f64(grad_out) * np.where(_f64(x) > 0, 1.0, alpha)


def elu_forward(x, alpha):
    x = _f64(x)
    return np.where(x >= 0, x, alpha * np.expm1(np.minimum(x, 0.0)))


def elu_backward(x, y, grad_out, alpha):
    x = _f64(x)
    return _f64(grad_out) * np.where(x > 0, 1.0, alpha * np.exp(np.minimum(x, 0.0)))


def gelu_forward(x, alpha):
    x = _f64(x)
    return x * _special.ndtr(x)                       # x * Phi(x)


def gelu_backward(x, y, grad_out, alpha):
    x = _f64(x)
    return _f64(grad_out) * (_special.ndtr(x) + x * np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi))


def gelu_tanh_forward(x, alpha):
    x = _f64(x)
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def gelu_tanh_backward(x, y, grad_out, alpha):
    x = _f64(x)
    t = np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3))
    d = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * np.sqrt(2 / np.pi) * (1.0 + 3 * 0.044715 * x**2)
    return _f64(grad_out) * d


def sigmoid_forward(x, alpha):
    return _special.expit(_f64(x))


def sigmoid_backward(x, y, grad_out, alpha):
    x = _f64(x)
    return _f64(grad_out) * _special.expit(x) * _special.expit(-x)


def tanh_forward(x, alpha):
    return np.tanh(_f64(x))


def tanh_backward(x, y, grad_out, alpha):
    return _f64(grad_out) * (1.0 - np.tanh(_f64(x)) ** 2)


def softplus_forward(x, alpha):
    return np.logaddexp(0.0, _f64(x))


def softplus_backward(x, y, grad_out, alpha):
    return _f64(grad_out) * _special.expit(_f64(x))


def mish_forward(x, alpha):
    return _f64(x) * np.tanh(np.logaddexp(0.0, _f64(x)))


def mish_backward(x, y, grad_out, alpha):
    x = _f64(x)
    t = np.tanh(np.logaddexp(0.0, x))
    return _f64(grad_out) * (t + x * _special.expit(x) * (1.0 - t * t))


def softmax_forward(x, alpha):
    return _special.softmax(_f64(x), axis=1)


def softmax_backward(x, y, grad_out, alpha):
    s = _special.softmax(_f64(x), axis=1)
    g = _f64(grad_out)
    return s * (g - np.sum(g * s, axis=1, keepdims=True))


def _one_hot(labels, classes):
    return np.eye(classes)[np.asarray(labels)]


def dropout_forward(x, u, rate):
    """(out, mask)."""
    mask = (_f64(u) >= rate) / (1.0 - rate)
    return _f64(x) * mask, mask


def dropout_backward(grad_out, mask):
    return _f64(grad_out) * _f64(mask)


def sum_squares(x):
    return np.sum(_f64(x) ** 2)


def scale(x, factor):
    return _f64(x) * factor


# ---------------------------------------------------------------- optimizer updates (torch.optim formulas)
def sgd_update(param, grad, velocity, lr, momentum, weight_decay, nesterov):
    """Returns (param, velocity) after one step; velocity is returned unchanged when momentum == 0."""
    p, g, buf = (np.asarray(a, dtype=np.float64) for a in (param, grad, velocity))
    g = g + weight_decay * p
    if momentum != 0:
        buf = momentum * buf + g
        g = g + momentum * buf if nesterov else buf
    return p - lr * g, buf


def adagrad_update(param, grad, accum, lr, eps, weight_decay):
    """Returns (param, accum)."""
    p, g, s = (np.asarray(a, dtype=np.float64) for a in (param, grad, accum))
    g = g + weight_decay * p
    s = s + g * g
    return p - lr * g / (np.sqrt(s) + eps), s


def rmsprop_update(param, grad, square_avg, grad_avg, momentum_buf, lr, alpha, eps, weight_decay,
                   momentum, centered):
    """Returns (param, square_avg, grad_avg, momentum_buf)."""
    p, g, sa, ga, buf = (np.asarray(a, dtype=np.float64)
                         for a in (param, grad, square_avg, grad_avg, momentum_buf))
    g = g + weight_decay * p
    sa = alpha * sa + (1 - alpha) * g * g
    if centered:
        ga = alpha * ga + (1 - alpha) * g
        avg = np.sqrt(sa - ga * ga) + eps
    else:
        avg = np.sqrt(sa) + eps
    if momentum > 0:
        buf = momentum * buf + g / avg
        return p - lr * buf, sa, ga, buf
    return p - lr * g / avg, sa, ga, buf


def adam_update(param, grad, m, v, vmax, lr, beta1, beta2, eps, weight_decay, amsgrad, step):
    """Returns (param, m, v, vmax); L2 weight decay added to the gradient."""
    p, g, m, v, vmax = (np.asarray(a, dtype=np.float64) for a in (param, grad, m, v, vmax))
    g = g + weight_decay * p
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    if amsgrad:
        vmax = np.maximum(vmax, v)
    vhat = (vmax if amsgrad else v) / (1 - beta2 ** step)
    mhat = m / (1 - beta1 ** step)
    return p - lr * mhat / (np.sqrt(vhat) + eps), m, v, vmax


def adamw_update(param, grad, m, v, vmax, lr, beta1, beta2, eps, weight_decay, amsgrad, step):
    """Returns (param, m, v, vmax); decoupled decay param *= 1 - lr * weight_decay first."""
    p = np.asarray(param, dtype=np.float64) * (1 - lr * weight_decay)
    return adam_update(p, grad, m, v, vmax, lr, beta1, beta2, eps, 0.0, amsgrad, step)


# ---- normalization (kernels/cpu/normalization.py) ---------------------------------------------
def batchnorm_forward_train(x3, gamma, beta, eps):
    """x3 (N, C, S): returns (out, mean (C,), invstd (C,)); biased batch variance."""
    x = np.asarray(x3, dtype=np.float64)
    mean = x.mean(axis=(0, 2))
    var = ((x - mean[None, :, None]) ** 2).mean(axis=(0, 2))
    invstd = 1.0 / np.sqrt(var + eps)
    xhat = (x - mean[None, :, None]) * invstd[None, :, None]
    out = xhat * np.asarray(gamma, np.float64)[None, :, None] + np.asarray(beta, np.float64)[None, :, None]
    return out, mean, invstd


def batchnorm_forward_infer(x3, gamma, beta, running_mean, running_var, eps):
    x = np.asarray(x3, dtype=np.float64)
    rm, rv = np.asarray(running_mean, np.float64), np.asarray(running_var, np.float64)
    xhat = (x - rm[None, :, None]) / np.sqrt(rv[None, :, None] + eps)
    return xhat * np.asarray(gamma, np.float64)[None, :, None] + np.asarray(beta, np.float64)[None, :, None]


def batchnorm_backward(x3, grad_out3, gamma, mean, invstd):
    """Returns (grad_in, grad_gamma, grad_beta) of the training-mode forward."""
    x, g = np.asarray(x3, np.float64), np.asarray(grad_out3, np.float64)
    mean, invstd = np.asarray(mean, np.float64), np.asarray(invstd, np.float64)
    gamma = np.asarray(gamma, np.float64)
    m = x.shape[0] * x.shape[2]
    xhat = (x - mean[None, :, None]) * invstd[None, :, None]
    grad_beta = g.sum(axis=(0, 2))
    grad_gamma = (g * xhat).sum(axis=(0, 2))
    grad_xhat = g * gamma[None, :, None]
    grad_in = invstd[None, :, None] / m * (
        m * grad_xhat - grad_xhat.sum(axis=(0, 2))[None, :, None]
        - xhat * (grad_xhat * xhat).sum(axis=(0, 2))[None, :, None])
    return grad_in, grad_gamma, grad_beta


def batchnorm_backward_infer(x3, grad_out3, gamma, running_mean, running_var, eps):
    """Returns (grad_in, grad_gamma, grad_beta) of the inference-mode (affine) forward."""
    x, g = np.asarray(x3, np.float64), np.asarray(grad_out3, np.float64)
    invstd = 1.0 / np.sqrt(np.asarray(running_var, np.float64) + eps)
    xhat = (x - np.asarray(running_mean, np.float64)[None, :, None]) * invstd[None, :, None]
    grad_in = g * (np.asarray(gamma, np.float64) * invstd)[None, :, None]
    return grad_in, (g * xhat).sum(axis=(0, 2)), g.sum(axis=(0, 2))


def batchnorm_update_running(running_mean, running_var, mean, invstd, eps, momentum, count):
    """Returns the updated (running_mean, running_var); batch variance made unbiased."""
    var = 1.0 / np.asarray(invstd, np.float64) ** 2 - eps
    if count > 1:
        var = var * count / (count - 1)
    rm = momentum * np.asarray(running_mean, np.float64) + (1 - momentum) * np.asarray(mean, np.float64)
    rv = momentum * np.asarray(running_var, np.float64) + (1 - momentum) * var
    return rm, rv


def layernorm_forward(x2, gamma, beta, eps):
    """x2 (R, D): returns (out, mean (R,), invstd (R,)); each row over its D features."""
    x = np.asarray(x2, dtype=np.float64)
    mean = x.mean(axis=1)
    var = ((x - mean[:, None]) ** 2).mean(axis=1)
    invstd = 1.0 / np.sqrt(var + eps)
    out = (x - mean[:, None]) * invstd[:, None] * np.asarray(gamma, np.float64) + np.asarray(beta, np.float64)
    return out, mean, invstd


def layernorm_backward(x2, grad_out2, gamma, mean, invstd):
    """Returns (grad_in, grad_gamma, grad_beta)."""
    x, g = np.asarray(x2, np.float64), np.asarray(grad_out2, np.float64)
    mean, invstd = np.asarray(mean, np.float64), np.asarray(invstd, np.float64)
    d = x.shape[1]
    xhat = (x - mean[:, None]) * invstd[:, None]
    grad_xhat = g * np.asarray(gamma, np.float64)
    grad_in = invstd[:, None] / d * (d * grad_xhat - grad_xhat.sum(axis=1, keepdims=True)
                                     - xhat * (grad_xhat * xhat).sum(axis=1, keepdims=True))
    return grad_in, (g * xhat).sum(axis=0), g.sum(axis=0)

# ---- conv2d / pooling (NCHW input, OIHW weight). stride/pad/dil are (h, w) pairs; pad is the
# top/left padding and the bottom/right padding follows from out_hw (default: symmetric padding).

def _conv_out_hw(hw, k, stride, pad, dil, out_hw):
    if out_hw is not None:
        return tuple(out_hw)
    return tuple((hw[a] + 2 * pad[a] - dil[a] * (k[a] - 1) - 1) // stride[a] + 1 for a in range(2))


def _padded(x, pad, need_hw, fill):
    """x (N, C, H, W) in a (N, C, Hp, Wp) canvas of ``fill`` with x at offset pad."""
    N, C, H, W = x.shape
    Hp = max(need_hw[0], pad[0] + H)
    Wp = max(need_hw[1], pad[1] + W)
    xp = np.full((N, C, Hp, Wp), fill, dtype=np.float64)
    xp[:, :, pad[0]:pad[0] + H, pad[1]:pad[1] + W] = x
    return xp


def conv2d_forward(x, w, b, stride, pad, dil, out_hw=None):
    x, w, b = (np.asarray(a, np.float64) for a in (x, w, b))
    K, C, KH, KW = w.shape
    OH, OW = _conv_out_hw(x.shape[2:], (KH, KW), stride, pad, dil, out_hw)
    need = ((OH - 1) * stride[0] + (KH - 1) * dil[0] + 1, (OW - 1) * stride[1] + (KW - 1) * dil[1] + 1)
    xp = _padded(x, pad, need, 0.0)
    out = np.zeros((x.shape[0], K, OH, OW))
    for i in range(KH):
        for j in range(KW):
            h0, w0 = i * dil[0], j * dil[1]
            patch = xp[:, :, h0:h0 + (OH - 1) * stride[0] + 1:stride[0],
                       w0:w0 + (OW - 1) * stride[1] + 1:stride[1]]          # (N, C, OH, OW)
            out += np.einsum("nchw,kc->nkhw", patch, w[:, :, i, j])
    return out + b[None, :, None, None]


def conv2d_backward_input(grad_out, w, x_shape, stride, pad, dil):
    g, w = np.asarray(grad_out, np.float64), np.asarray(w, np.float64)
    K, C, KH, KW = w.shape
    N, _, OH, OW = g.shape
    need = ((OH - 1) * stride[0] + (KH - 1) * dil[0] + 1, (OW - 1) * stride[1] + (KW - 1) * dil[1] + 1)
    gp = _padded(np.zeros(x_shape), pad, need, 0.0)
    for i in range(KH):
        for j in range(KW):
            h0, w0 = i * dil[0], j * dil[1]
            gp[:, :, h0:h0 + (OH - 1) * stride[0] + 1:stride[0],
               w0:w0 + (OW - 1) * stride[1] + 1:stride[1]] += np.einsum("nkhw,kc->nchw", g, w[:, :, i, j])
    return gp[:, :, pad[0]:pad[0] + x_shape[2], pad[1]:pad[1] + x_shape[3]].copy()


def conv2d_backward_weight(x, grad_out, w_shape, stride, pad, dil):
    x, g = np.asarray(x, np.float64), np.asarray(grad_out, np.float64)
    K, C, KH, KW = w_shape
    N, _, OH, OW = g.shape
    need = ((OH - 1) * stride[0] + (KH - 1) * dil[0] + 1, (OW - 1) * stride[1] + (KW - 1) * dil[1] + 1)
    xp = _padded(x, pad, need, 0.0)
    gw = np.zeros(w_shape)
    for i in range(KH):
        for j in range(KW):
            h0, w0 = i * dil[0], j * dil[1]
            patch = xp[:, :, h0:h0 + (OH - 1) * stride[0] + 1:stride[0],
                       w0:w0 + (OW - 1) * stride[1] + 1:stride[1]]
            gw[:, :, i, j] = np.einsum("nchw,nkhw->kc", patch, g)
    return gw


def conv2d_backward_bias(grad_out):
    return np.asarray(grad_out, np.float64).sum(axis=(0, 2, 3))


def _pool_windows(x_shape, pool, stride, pad, out_hw):
    """For each output cell (oh, ow): the list of in-image (h, w) cells of its window."""
    H, W = x_shape[2], x_shape[3]
    OH, OW = _conv_out_hw((H, W), pool, stride, pad, (1, 1), out_hw)
    win = {}
    for oh in range(OH):
        for ow in range(OW):
            win[oh, ow] = [(h, w)
                           for h in range(oh * stride[0] - pad[0], oh * stride[0] - pad[0] + pool[0])
                           for w in range(ow * stride[1] - pad[1], ow * stride[1] - pad[1] + pool[1])
                           if 0 <= h < H and 0 <= w < W]
    return OH, OW, win


def max_pool2d_forward(x, pool, stride, pad, out_hw=None):
    """(out, argmax): max over the in-image cells of each window; argmax = h*W + w of the first
    maximum in row-major window order (-inf and -1 for a window with no in-image cell)."""
    x = np.asarray(x, np.float64)
    N, C, H, W = x.shape
    OH, OW, win = _pool_windows(x.shape, pool, stride, pad, out_hw)
    out = np.full((N, C, OH, OW), -np.inf)
    arg = np.full((N, C, OH, OW), -1, dtype=np.int64)
    for n in range(N):
        for c in range(C):
            for (oh, ow), cells in win.items():
                for h, w in cells:
                    if arg[n, c, oh, ow] < 0 or x[n, c, h, w] > out[n, c, oh, ow]:
                        out[n, c, oh, ow] = x[n, c, h, w]
                        arg[n, c, oh, ow] = h * W + w
    return out, arg


def max_pool2d_backward(grad_out, argmax, x_shape):
    g = np.asarray(grad_out, np.float64)
    N, C, H, W = x_shape
    gin = np.zeros((N, C, H * W))
    for n in range(N):
        for c in range(C):
            for idx, v in zip(argmax[n, c].ravel(), g[n, c].ravel()):
                if idx >= 0:
                    gin[n, c, idx] += v
    return gin.reshape(x_shape)


def avg_pool2d_forward(x, pool, stride, pad, out_hw=None):
    """Mean over the in-image cells of each window (padding not counted; 0 for an empty window)."""
    x = np.asarray(x, np.float64)
    N, C, H, W = x.shape
    OH, OW, win = _pool_windows(x.shape, pool, stride, pad, out_hw)
    out = np.zeros((N, C, OH, OW))
    for (oh, ow), cells in win.items():
        for h, w in cells:
            out[:, :, oh, ow] += x[:, :, h, w] / len(cells)
    return out


def avg_pool2d_backward(grad_out, x_shape, pool, stride, pad):
    g = np.asarray(grad_out, np.float64)
    _, _, win = _pool_windows(x_shape, pool, stride, pad, g.shape[2:])
    gin = np.zeros(x_shape)
    for (oh, ow), cells in win.items():
        for h, w in cells:
            gin[:, :, h, w] += g[:, :, oh, ow] / len(cells)
    return gin


def global_avg_pool_forward(x):
    """Row means of x (rows, cols) (0 for an empty row, like an empty pooling window)."""
    x = np.asarray(x, np.float64)
    return x.sum(axis=1) / max(x.shape[1], 1)


def global_avg_pool_backward(grad_out, cols):
    """(rows, cols): grad_out[r] / cols in every column of row r."""
    return np.repeat(np.asarray(grad_out, np.float64)[:, None] / max(cols, 1), cols, axis=1)


def global_max_pool_forward(x):
    """(out, argmax) per row of x (rows, cols): the first NaN if the row holds one (torch.max),
    else the first maximum; -inf and -1 for an empty row."""
    x = np.asarray(x, np.float64)
    rows, cols = x.shape
    out, arg = np.full(rows, -np.inf), np.full(rows, -1, dtype=np.int64)
    for r in range(rows):
        if cols:
            nans = np.flatnonzero(np.isnan(x[r]))
            k = nans[0] if nans.size else np.flatnonzero(x[r] == x[r].max())[0]
            out[r], arg[r] = x[r, k], k
    return out, arg


def global_max_pool_backward(grad_out, argmax, cols):
    """(rows, cols): zeros, grad_out[r] at column argmax[r] of row r."""
    gin = np.zeros((len(argmax), cols))
    for r, k in enumerate(argmax):
        if k >= 0:
            gin[r, k] = grad_out[r]
    return gin


# ---- regularization, augmentation (kernels/cpu/{regularization,augmentation}.py) ---------------
def l1l2_penalty(w, l1, l2):
    w = np.asarray(w, np.float64)
    return l1 * np.sum(np.abs(w)) + l2 * np.sum(w * w)


def l1l2_penalty_backward(w, l1, l2, grad):
    """The new gradient: grad + d penalty / d w."""
    w = np.asarray(w, np.float64)
    return np.asarray(grad, np.float64) + l1 * np.sign(w) + 2.0 * l2 * w


def spatial_dropout2d_forward(x, u, rate):
    """(out, mask): mask (N, C) = (u >= rate) / (1 - rate), broadcast over each H x W plane."""
    mask = (np.asarray(u, np.float64) >= rate) / (1.0 - rate)
    return np.asarray(x, np.float64) * mask[:, :, None, None], mask


def spatial_dropout2d_backward(grad_out, mask):
    return np.asarray(grad_out, np.float64) * np.asarray(mask, np.float64)[:, :, None, None]


def flip_forward(x, flip_h, flip_w):
    out = np.array(x, np.float64)
    for n in range(out.shape[0]):
        if flip_h[n]:
            out[n] = out[n, :, ::-1, :]
        if flip_w[n]:
            out[n] = out[n, :, :, ::-1]
    return out


def flip_backward(grad_out, flip_h, flip_w):
    return flip_forward(grad_out, flip_h, flip_w)


def translate_forward(x, dy, dx):
    """out[n, c, h, w] = x[n, c, h - dy[n], w - dx[n]], zero outside the image."""
    x = np.asarray(x, np.float64)
    N, C, H, W = x.shape
    out = np.zeros_like(x)
    for n in range(N):
        for h in range(H):
            for w in range(W):
                sh, sw = h - int(dy[n]), w - int(dx[n])
                if 0 <= sh < H and 0 <= sw < W:
                    out[n, :, h, w] = x[n, :, sh, sw]
    return out


_SCIPY_MODES = {0: "grid-constant", 1: "reflect", 2: "grid-wrap", 3: "nearest"}


def warp_forward(x, mats, mode, fill, bilinear):
    """scipy.ndimage.map_coordinates of each (n, c) plane at (m0 h + m1 w + m2,
    m3 h + m4 w + m5): order 1 (bilinear) or 0 (nearest), fill modes 0-3 as scipy's
    grid-constant / reflect / grid-wrap / nearest."""
    from scipy import ndimage
    x = np.asarray(x, np.float64)
    N, C, H, W = x.shape
    hh, ww = np.meshgrid(np.arange(H, dtype=np.float64), np.arange(W, dtype=np.float64),
                         indexing="ij")
    out = np.empty_like(x)
    for n in range(N):
        m = np.asarray(mats[n], np.float64)
        coords = [m[0] * hh + m[1] * ww + m[2], m[3] * hh + m[4] * ww + m[5]]
        for c in range(C):
            out[n, c] = ndimage.map_coordinates(x[n, c], coords, order=1 if bilinear else 0,
                                                mode=_SCIPY_MODES[mode], cval=fill)
    return out


def warp_backward(grad_out, mats, mode, bilinear):
    """The transpose of warp_forward (fill 0), built column by column from unit images."""
    g = np.asarray(grad_out, np.float64)
    N, C, H, W = g.shape
    gin = np.zeros_like(g)
    for n in range(N):
        for j in range(H * W):
            unit = np.zeros((1, 1, H, W))
            unit.reshape(-1)[j] = 1.0
            column = warp_forward(unit, [mats[n]], mode, 0.0, bilinear)[0, 0]
            gin[n, :, j // W, j % W] = np.tensordot(g[n], column, axes=([1, 2], [0, 1]))
    return gin


def translate_backward(grad_out, dy, dx):
    """The transpose of translate_forward: each output gradient goes back to its source pixel."""
    g = np.asarray(grad_out, np.float64)
    N, C, H, W = g.shape
    gin = np.zeros_like(g)
    for n in range(N):
        for h in range(H):
            for w in range(W):
                sh, sw = h - int(dy[n]), w - int(dx[n])
                if 0 <= sh < H and 0 <= sw < W:
                    gin[n, :, sh, sw] += g[n, :, h, w]
    return gin


def gaussian_noise_forward(x, noise, stddev):
    return np.asarray(x, np.float64) + stddev * np.asarray(noise, np.float64)


def box_muller(u):
    u = np.asarray(u, np.float64)
    n = u.size // 2
    return np.sqrt(-2.0 * np.log(1.0 - u[:n])) * np.cos(2.0 * np.pi * u[n:])


# ---- more optimizers and the L-BFGS vector helpers (kernels/cpu/optim.py) ------------------------
def adadelta_update(param, grad, square_avg, acc_delta, lr, rho, eps, weight_decay):
    """Returns (param, square_avg, acc_delta) after one torch Adadelta step."""
    p, g, sa, ad = (np.asarray(a, dtype=np.float64) for a in (param, grad, square_avg, acc_delta))
    g = g + weight_decay * p
    sa = rho * sa + (1 - rho) * g * g
    delta = np.sqrt(ad + eps) / np.sqrt(sa + eps) * g
    ad = rho * ad + (1 - rho) * delta * delta
    return p - lr * delta, sa, ad


def nadam_update(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, mu, mu_next, mu_product,
                 step):
    """Returns (param, m, v) after one torch NAdam step; mu_product includes this step's mu."""
    p, g, m, v = (np.asarray(a, dtype=np.float64) for a in (param, grad, m, v))
    g = g + weight_decay * p
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    denom = np.sqrt(v / (1 - beta2 ** step)) + eps
    p = p - lr * (1 - mu) / (1 - mu_product) * g / denom
    p = p - lr * mu_next / (1 - mu_product * mu_next) * m / denom
    return p, m, v


def adamax_update(param, grad, m, u, lr, beta1, beta2, eps, weight_decay, step):
    """Returns (param, m, u) after one torch Adamax step."""
    p, g, m, u = (np.asarray(a, dtype=np.float64) for a in (param, grad, m, u))
    g = g + weight_decay * p
    m = beta1 * m + (1 - beta1) * g
    u = np.maximum(beta2 * u, np.abs(g) + eps)
    return p - lr / (1 - beta1 ** step) * m / u, m, u


def radam_update(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step):
    """Returns (param, m, v) after one torch RAdam step."""
    p, g, m, v = (np.asarray(a, dtype=np.float64) for a in (param, grad, m, v))
    g = g + weight_decay * p
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    mhat = m / (1 - beta1 ** step)
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * step * beta2 ** step / (1 - beta2 ** step)
    if rho_t <= 5:
        return p - lr * mhat, m, v
    rect = np.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
    vhat = v / (1 - beta2 ** step)
    return p - lr * rect * mhat / (np.sqrt(vhat) + eps / np.sqrt(1 - beta2 ** step)), m, v


def adabound_update(param, grad, m, v, vmax, lr, beta1, beta2, eps, weight_decay, final_lr, gamma,
                    amsbound, step):
    """Returns (param, m, v, vmax) after one AdaBound/AMSBound step (Luo et al.'s reference code:
    eps added to sqrt(v) before the bias corrections, the rate clipped, then times m)."""
    p, g, m, v, vmax = (np.asarray(a, dtype=np.float64) for a in (param, grad, m, v, vmax))
    g = g + weight_decay * p
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    if amsbound:
        vmax = np.maximum(vmax, v)
    denom = np.sqrt(vmax if amsbound else v) + eps
    rate = lr * np.sqrt(1 - beta2 ** step) / (1 - beta1 ** step) / denom
    lower = final_lr * (1 - 1 / (gamma * step + 1))
    upper = final_lr * (1 + 1 / (gamma * step))
    return p - np.clip(rate, lower, upper) * m, m, v, vmax


def lion_update(param, grad, m, lr, beta1, beta2, weight_decay):
    """Returns (param, m) after one Lion step (Chen et al. 2023, Algorithm 2):
    u = sign(beta1 m + (1 - beta1) g), p -= lr (u + wd p), m = beta2 m + (1 - beta2) g."""
    p, g, m = (np.asarray(a, dtype=np.float64) for a in (param, grad, m))
    u = np.sign(beta1 * m + (1 - beta1) * g)
    return p - lr * (u + weight_decay * p), beta2 * m + (1 - beta2) * g


def lookahead_update(slow, fast, alpha):
    """Returns (slow, fast) after the synchronisation: both become slow + alpha (fast - slow)."""
    s, f = np.asarray(slow, np.float64), np.asarray(fast, np.float64)
    s = s + alpha * (f - s)
    return s, s.copy()


def dot(x, y):
    return np.array([np.dot(np.asarray(x, np.float64), np.asarray(y, np.float64))])


def axpy(a, x, y):
    return np.asarray(y, np.float64) + a * np.asarray(x, np.float64)


def abs_sum(x):
    return np.array([np.abs(np.asarray(x, np.float64)).sum()])


def abs_max(x):
    x = np.asarray(x, np.float64)
    return np.array([np.abs(x).max() if x.size else 0.0])


# ---- losses with per-sample weights (kernels/cpu/losses.py since sample weights) ---------------
# <loss>_forward(y_true, y_pred, *hyper, weights=None) = sum_i w_i l_i / N (weights None: ones)
# and <loss>_backward(...) its gradient with respect to y_pred. These supersede the unweighted
# loss references above (same names; called without weights they give the same numbers).

def _loss_w(weights, n):
    return np.ones(n) if weights is None else _f64(weights).reshape(n)


def _loss_reduce(per_sample, weights):
    """sum_i w_i l_i / N."""
    l = _f64(per_sample)
    return float(np.sum(_loss_w(weights, len(l)) * l) / len(l))


def _loss_rows(grad, weights):
    """The gradient of sum_i l_i (rows) -> that of sum_i w_i l_i / N."""
    n = grad.shape[0]
    return grad * _loss_w(weights, n)[:, None] / n


def _pair(y_true, y_pred):
    p = _f64(y_pred)
    p = p.reshape(len(p), -1)
    return _f64(y_true).reshape(p.shape), p


def _mean_of_elements(term, dterm):
    """(forward, backward) references of a loss whose per-sample value is the mean of
    ``term(t, p, *hyper)`` over the sample's elements, ``dterm`` its derivative d/dp; called as
    ``forward(y_true, y_pred, *hyper, weights=None)`` (weights positional or left out)."""
    k = term.__code__.co_argcount - 2

    def forward(y_true, y_pred, *args):
        t, p = _pair(y_true, y_pred)
        return _loss_reduce(np.mean(term(t, p, *args[:k]), axis=1), (*args, None)[k])

    def backward(y_true, y_pred, *args):
        t, p = _pair(y_true, y_pred)
        return _loss_rows(dterm(t, p, *args[:k]) / p.shape[1], (*args, None)[k])
    return forward, backward


mse_forward, mse_backward = _mean_of_elements(lambda t, p: (p - t) ** 2,
                                              lambda t, p: 2.0 * (p - t))
mae_forward, mae_backward = _mean_of_elements(lambda t, p: np.abs(p - t),
                                              lambda t, p: np.sign(p - t))
log_cosh_forward, log_cosh_backward = _mean_of_elements(
    lambda t, p: np.logaddexp(p - t, t - p) - np.log(2.0), lambda t, p: np.tanh(p - t))
poisson_forward, poisson_backward = _mean_of_elements(lambda t, p, eps: p - t * np.log(p + eps),
                                                      lambda t, p, eps: 1.0 - t / (p + eps))


def huber_forward(y_true, y_pred, delta, weights=None):
    t, p = _pair(y_true, y_pred)
    a = np.abs(p - t)
    return _loss_reduce(np.mean(np.where(a <= delta, 0.5 * a * a, delta * (a - 0.5 * delta)),
                                axis=1), weights)


def huber_backward(y_true, y_pred, delta, weights=None):
    t, p = _pair(y_true, y_pred)
    return _loss_rows(np.clip(p - t, -delta, delta) / p.shape[1], weights)


def msle_forward(y_true, y_pred, eps, weights=None):
    t, p = _pair(y_true, y_pred)
    d = np.log(np.maximum(p, eps) + 1.0) - np.log(np.maximum(t, eps) + 1.0)
    return _loss_reduce(np.mean(d * d, axis=1), weights)


def msle_backward(y_true, y_pred, eps, weights=None):
    t, p = _pair(y_true, y_pred)
    d = np.log(np.maximum(p, eps) + 1.0) - np.log(np.maximum(t, eps) + 1.0)
    return _loss_rows(np.where(p >= eps, 2.0 * d / (1.0 + p), 0.0) / p.shape[1], weights)


def hinge_forward(y_true, y_pred, weights=None):
    t, p = _pair(y_true, y_pred)
    return _loss_reduce(np.mean(np.maximum(1.0 - t * p, 0.0), axis=1), weights)


def hinge_backward(y_true, y_pred, weights=None):
    t, p = _pair(y_true, y_pred)
    return _loss_rows(np.where(1.0 - t * p > 0.0, -t, 0.0) / p.shape[1], weights)


def squared_hinge_forward(y_true, y_pred, weights=None):
    t, p = _pair(y_true, y_pred)
    return _loss_reduce(np.mean(np.maximum(1.0 - t * p, 0.0) ** 2, axis=1), weights)


def squared_hinge_backward(y_true, y_pred, weights=None):
    t, p = _pair(y_true, y_pred)
    return _loss_rows(-2.0 * t * np.maximum(1.0 - t * p, 0.0) / p.shape[1], weights)


def kl_divergence_forward(y_true, y_pred, eps, weights=None):
    t, p = _pair(y_true, y_pred)
    tc, pc = np.clip(t, eps, 1.0), np.clip(p, eps, 1.0)
    return _loss_reduce(np.sum(tc * np.log(tc / pc), axis=1), weights)


def kl_divergence_backward(y_true, y_pred, eps, weights=None):
    t, p = _pair(y_true, y_pred)
    inside = (p >= eps) & (p <= 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        g = np.where(inside, -np.clip(t, eps, 1.0) / p, 0.0)
    return _loss_rows(g, weights)


def binary_crossentropy_forward(y_true, y_pred, eps, weights=None):
    t, p = _pair(y_true, y_pred)
    q = np.clip(p, eps, 1.0 - eps)
    return _loss_reduce(np.mean(-(t * np.log(q) + (1.0 - t) * np.log(1.0 - q)), axis=1), weights)


def binary_crossentropy_backward(y_true, y_pred, eps, weights=None):
    t, p = _pair(y_true, y_pred)
    inside = (p >= eps) & (p <= 1.0 - eps)
    q = np.clip(p, eps, 1.0 - eps)
    return _loss_rows(np.where(inside, -t / q + (1.0 - t) / (1.0 - q), 0.0) / p.shape[1], weights)


def binary_crossentropy_logits_forward(y_true, logits, weights=None):
    t, z = _pair(y_true, logits)
    return _loss_reduce(np.mean(np.logaddexp(0.0, z) - t * z, axis=1), weights)


def binary_crossentropy_logits_backward(y_true, logits, weights=None):
    t, z = _pair(y_true, logits)
    return _loss_rows((_special.expit(z) - t) / z.shape[1], weights)


def _focal_weight(t, alpha, apply_class_balancing):
    return t * alpha + (1.0 - t) * (1.0 - alpha) if apply_class_balancing else np.ones_like(t)


def binary_focal_crossentropy_forward(y_true, y_pred, gamma, alpha, apply_class_balancing, eps,
                                      weights=None):
    """Keras: bce of the clipped p times (1 - p_t)^gamma, p_t = t p + (1 - t)(1 - p) unclipped."""
    t, p = _pair(y_true, y_pred)
    q = np.clip(p, eps, 1.0 - eps)
    bce = -(t * np.log(q) + (1.0 - t) * np.log(1.0 - q))
    p_t = t * p + (1.0 - t) * (1.0 - p)
    l = _focal_weight(t, alpha, apply_class_balancing) * (1.0 - p_t) ** gamma * bce
    return _loss_reduce(np.mean(l, axis=1), weights)


def binary_focal_crossentropy_backward(y_true, y_pred, gamma, alpha, apply_class_balancing, eps,
                                       weights=None):
    t, p = _pair(y_true, y_pred)
    inside = (p >= eps) & (p <= 1.0 - eps)
    q = np.clip(p, eps, 1.0 - eps)
    bce = -(t * np.log(q) + (1.0 - t) * np.log(1.0 - q))
    dbce = np.where(inside, -t / q + (1.0 - t) / (1.0 - q), 0.0)
    u = 1.0 - (t * p + (1.0 - t) * (1.0 - p))         # d u / d p = 1 - 2t
    g = gamma * u ** (gamma - 1.0) * (1.0 - 2.0 * t) * bce + u ** gamma * dbce
    return _loss_rows(_focal_weight(t, alpha, apply_class_balancing) * g / p.shape[1], weights)


def binary_focal_crossentropy_logits_forward(y_true, logits, gamma, alpha, apply_class_balancing,
                                             weights=None):
    t, z = _pair(y_true, logits)
    s = _special.expit(z)
    bce = np.logaddexp(0.0, z) - t * z
    u = t * (1.0 - s) + (1.0 - t) * s
    l = _focal_weight(t, alpha, apply_class_balancing) * u ** gamma * bce
    return _loss_reduce(np.mean(l, axis=1), weights)


def binary_focal_crossentropy_logits_backward(y_true, logits, gamma, alpha, apply_class_balancing,
                                              weights=None):
    t, z = _pair(y_true, logits)
    s = _special.expit(z)
    bce = np.logaddexp(0.0, z) - t * z
    u = t * (1.0 - s) + (1.0 - t) * s                  # d u / d z = (1 - 2t) s (1 - s)
    g = gamma * u ** (gamma - 1.0) * (1.0 - 2.0 * t) * s * (1.0 - s) * bce + u ** gamma * (s - t)
    return _loss_rows(_focal_weight(t, alpha, apply_class_balancing) * g / z.shape[1], weights)


def categorical_crossentropy_forward(y_true, y_pred, eps, weights=None):
    t, p = _pair(y_true, y_pred)
    q = np.clip(p / p.sum(axis=1, keepdims=True), eps, 1.0 - eps)
    return _loss_reduce(-np.sum(t * np.log(q), axis=1), weights)


def categorical_crossentropy_backward(y_true, y_pred, eps, weights=None):
    t, p = _pair(y_true, y_pred)
    s = p.sum(axis=1, keepdims=True)
    q = p / s
    a = np.where((q >= eps) & (q <= 1.0 - eps), -t / q, 0.0)              # dL/dq
    return _loss_rows((a - np.sum(a * q, axis=1, keepdims=True)) / s, weights)


def categorical_crossentropy_logits_forward(y_true, logits, weights=None):
    t, z = _pair(y_true, logits)
    logp = z - _special.logsumexp(z, axis=1, keepdims=True)
    return _loss_reduce(-np.sum(t * logp, axis=1), weights)


def categorical_crossentropy_logits_backward(y_true, logits, weights=None):
    t, z = _pair(y_true, logits)
    s = _special.softmax(z, axis=1)
    return _loss_rows(s * t.sum(axis=1, keepdims=True) - t, weights)


def sparse_categorical_crossentropy_forward(labels, y_pred, eps, weights=None):
    return categorical_crossentropy_forward(_one_hot(labels, y_pred.shape[1]), y_pred, eps, weights)


def sparse_categorical_crossentropy_backward(labels, y_pred, eps, weights=None):
    return categorical_crossentropy_backward(_one_hot(labels, y_pred.shape[1]), y_pred, eps,
                                             weights)


def sparse_categorical_crossentropy_logits_forward(labels, logits, weights=None):
    return categorical_crossentropy_logits_forward(_one_hot(labels, logits.shape[1]), logits,
                                                   weights)


def sparse_categorical_crossentropy_logits_backward(labels, logits, weights=None):
    return categorical_crossentropy_logits_backward(_one_hot(labels, logits.shape[1]), logits,
                                                    weights)


def categorical_focal_crossentropy_forward(y_true, y_pred, gamma, alpha, eps, weights=None):
    """Keras: q = clip(p / row sum, eps, 1 - eps); l = -alpha sum_c y (1 - q)^gamma log q."""
    t, p = _pair(y_true, y_pred)
    q = np.clip(p / p.sum(axis=1, keepdims=True), eps, 1.0 - eps)
    return _loss_reduce(-alpha * np.sum(t * (1.0 - q) ** gamma * np.log(q), axis=1), weights)


def categorical_focal_crossentropy_backward(y_true, y_pred, gamma, alpha, eps, weights=None):
    t, p = _pair(y_true, y_pred)
    s = p.sum(axis=1, keepdims=True)
    q = p / s
    inside = (q >= eps) & (q <= 1.0 - eps)
    qc = np.clip(q, eps, 1.0 - eps)
    a = np.where(inside, -alpha * t * (-gamma * (1.0 - qc) ** (gamma - 1.0) * np.log(qc)
                                       + (1.0 - qc) ** gamma / qc), 0.0)   # dL/dq
    return _loss_rows((a - np.sum(a * q, axis=1, keepdims=True)) / s, weights)


def categorical_focal_crossentropy_logits_forward(y_true, logits, gamma, alpha, weights=None):
    t, z = _pair(y_true, logits)
    logq = z - _special.logsumexp(z, axis=1, keepdims=True)
    q = np.exp(logq)
    return _loss_reduce(-alpha * np.sum(t * (1.0 - q) ** gamma * logq, axis=1), weights)


def categorical_focal_crossentropy_logits_backward(y_true, logits, gamma, alpha, weights=None):
    t, z = _pair(y_true, logits)
    logq = z - _special.logsumexp(z, axis=1, keepdims=True)
    q = np.exp(logq)
    dl_dq = -alpha * t * (-gamma * (1.0 - q) ** (gamma - 1.0) * logq + (1.0 - q) ** gamma / q)
    b = dl_dq * q                                     # softmax Jacobian: q_k (delta - q_c)
    return _loss_rows(b - q * np.sum(b, axis=1, keepdims=True), weights)


def _overlap(y_true, y_pred):
    t, p = _pair(y_true, y_pred)
    return t, p, np.sum(t * p, axis=1), np.sum(t, axis=1), np.sum(p, axis=1)


def tversky_forward(y_true, y_pred, alpha, beta, smooth, weights=None):
    """1 - (TP + s) / (TP + alpha FP + beta FN + s) per sample (soft counts over its elements)."""
    t, p, tp, st, sp = _overlap(y_true, y_pred)
    fp, fn = sp - tp, st - tp
    return _loss_reduce(1.0 - (tp + smooth) / (tp + alpha * fp + beta * fn + smooth), weights)


def tversky_backward(y_true, y_pred, alpha, beta, smooth, weights=None):
    t, p, tp, st, sp = _overlap(y_true, y_pred)
    num = (tp + smooth)[:, None]
    den = (tp + alpha * (sp - tp) + beta * (st - tp) + smooth)[:, None]
    dnum = t                                           # d TP / d p_j
    dden = t + alpha * (1.0 - t) - beta * t            # d (TP + alpha FP + beta FN) / d p_j
    return _loss_rows(-(dnum * den - num * dden) / den ** 2, weights)


def dice_forward(y_true, y_pred, smooth, weights=None):
    """1 - (2 sum t p + s) / (sum t + sum p + s) per sample."""
    t, p, tp, st, sp = _overlap(y_true, y_pred)
    return _loss_reduce(1.0 - (2.0 * tp + smooth) / (st + sp + smooth), weights)


def dice_backward(y_true, y_pred, smooth, weights=None):
    t, p, tp, st, sp = _overlap(y_true, y_pred)
    num, den = (2.0 * tp + smooth)[:, None], (st + sp + smooth)[:, None]
    return _loss_rows(-(2.0 * t * den - num) / den ** 2, weights)


def jaccard_forward(y_true, y_pred, smooth, weights=None):
    """1 - (sum t p + s) / (sum t + sum p - sum t p + s) per sample (soft IoU)."""
    t, p, tp, st, sp = _overlap(y_true, y_pred)
    return _loss_reduce(1.0 - (tp + smooth) / (st + sp - tp + smooth), weights)


def jaccard_backward(y_true, y_pred, smooth, weights=None):
    t, p, tp, st, sp = _overlap(y_true, y_pred)
    num, den = (tp + smooth)[:, None], (st + sp - tp + smooth)[:, None]
    return _loss_rows(-(t * den - num * (1.0 - t)) / den ** 2, weights)


def contrastive_forward(x1, x2, y, margin, eps, weights=None):
    """y d^2 + (1 - y) max(margin - d, 0)^2, d = ||x1 - x2 + eps||_2 (y = 1: similar pair)."""
    a, b = _pair(x1, x2)
    y = _f64(y)
    d = np.sqrt(np.sum((a - b + eps) ** 2, axis=1))
    return _loss_reduce(y * d ** 2 + (1.0 - y) * np.maximum(margin - d, 0.0) ** 2, weights)


def contrastive_backward(x1, x2, y, margin, eps, weights=None):
    """(d/dx1, d/dx2)."""
    a, b = _pair(x1, x2)
    y = _f64(y)
    v = a - b + eps
    d = np.sqrt(np.sum(v * v, axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        hinge = np.where((d > 0) & (margin > d), 2.0 * (1.0 - y) * (margin - d) / d, 0.0)
    g = _loss_rows((2.0 * y - hinge)[:, None] * v, weights)
    return g, -g


def _pnorm(v, p):
    return np.sum(np.abs(v) ** p, axis=1) ** (1.0 / p)


def triplet_margin_forward(anchor, positive, negative, margin, p, eps, weights=None):
    """max(||a - pos + eps||_p - ||a - neg + eps||_p + margin, 0) (torch.nn.TripletMarginLoss)."""
    a, b = _pair(anchor, positive)
    c = _f64(negative).reshape(a.shape)
    l = np.maximum(_pnorm(a - b + eps, p) - _pnorm(a - c + eps, p) + margin, 0.0)
    return _loss_reduce(l, weights)


def triplet_margin_backward(anchor, positive, negative, margin, p, eps, weights=None):
    """(d/d anchor, d/d positive, d/d negative)."""
    a, b = _pair(anchor, positive)
    c = _f64(negative).reshape(a.shape)
    u, v = a - b + eps, a - c + eps
    du, dv = _pnorm(u, p)[:, None], _pnorm(v, p)[:, None]
    live = (du - dv + margin > 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        gu = np.where(live & (du > 0), np.sign(u) * (np.abs(u) / du) ** (p - 1.0), 0.0)
        gv = np.where(live & (dv > 0), np.sign(v) * (np.abs(v) / dv) ** (p - 1.0), 0.0)
    return _loss_rows(gu - gv, weights), _loss_rows(-gu, weights), _loss_rows(gv, weights)


# ---- ops (kernels/cpu/ops.py): NumPy broadcasting, np.take, np.add.at ------------------------
from numpy.lib.stride_tricks import as_strided as _as_strided


def operand(flat, shape, strides, offset=0):
    """The float64 view of the flat array ``flat`` that a kernel walks over ``shape`` with
    ``strides`` (in elements) from ``offset``."""
    a = _f64(flat).reshape(-1)
    if 0 in tuple(shape):
        return np.zeros(shape)
    return _as_strided(a[offset:], shape=tuple(shape),
                       strides=tuple(s * a.itemsize for s in strides))


def _unary_value(name, x, alpha, beta):
    with np.errstate(all="ignore"):
        return {"neg": lambda: -x, "square": lambda: x * x, "sqrt": lambda: np.sqrt(x),
                "exp": lambda: np.exp(x), "log": lambda: np.log(x), "abs": lambda: np.abs(x),
                "power": lambda: np.power(x, alpha),
                "clip": lambda: np.minimum(np.maximum(x, alpha), beta),
                "affine": lambda: alpha * x + beta, "rdiv": lambda: alpha / x,
                "sign": lambda: np.sign(x)}[name]()


def _unary_derivative(name, x, alpha, beta):
    with np.errstate(all="ignore"):
        return {"neg": lambda: -np.ones_like(x), "square": lambda: 2.0 * x,
                "sqrt": lambda: 0.5 / np.sqrt(x), "exp": lambda: np.exp(x),
                "log": lambda: 1.0 / x, "abs": lambda: np.sign(x),
                "power": lambda: (np.zeros_like(x) if alpha == 0 else
                                  alpha * np.power(x, alpha - 1.0)),
                "clip": lambda: ((x >= alpha) & (x <= beta)).astype(np.float64),
                "affine": lambda: np.full_like(x, alpha), "rdiv": lambda: -alpha / (x * x),
                "sign": lambda: np.zeros_like(x)}[name]()


def unary_forward(name, x, alpha, beta):
    return _unary_value(name, _f64(x), alpha, beta)


def unary_backward(name, x, grad_out, alpha, beta):
    return _f64(grad_out) * _unary_derivative(name, _f64(x), alpha, beta)


def _binary_value(name, a, b):
    with np.errstate(all="ignore"):
        return {"add": np.add, "subtract": np.subtract, "multiply": np.multiply,
                "divide": np.divide, "maximum": np.maximum, "minimum": np.minimum,
                "equal": np.equal, "not_equal": np.not_equal, "greater": np.greater,
                "greater_equal": np.greater_equal, "less": np.less,
                "less_equal": np.less_equal}[name](a, b).astype(np.float64)


def _binary_derivatives(name, a, b):
    """(d/da, d/db); maximum/minimum as torch.maximum's backward (ties halved)."""
    one = np.ones(np.broadcast_shapes(a.shape, b.shape))
    with np.errstate(all="ignore"):
        if name == "add":
            return one, one
        if name == "subtract":
            return one, -one
        if name == "multiply":
            return b * one, a * one
        if name == "divide":
            return one / b, -a / (b * b) * one
        if name in ("maximum", "minimum"):
            ga, gb = np.where(a == b, 0.5, 1.0) * one, np.where(a == b, 0.5, 1.0) * one
            lose_a, lose_b = (a < b, a > b) if name == "maximum" else (a > b, a < b)
            return np.where(lose_a, 0.0, ga), np.where(lose_b, 0.0, gb)
        return 0 * one, 0 * one                          # the comparisons


def binary_forward(name, a, b, shape, a_strides, b_strides):
    """Flat C-order result over ``shape``."""
    return _binary_value(name, operand(a, shape, a_strides),
                         operand(b, shape, b_strides)).reshape(-1)


def binary_backward(name, a, b, grad_out, shape, a_strides, b_strides):
    """Full-size (grad_a, grad_b), flat."""
    ga, gb = _binary_derivatives(name, operand(a, shape, a_strides), operand(b, shape, b_strides))
    g = _f64(grad_out).reshape(shape)
    return (g * ga).reshape(-1), (g * gb).reshape(-1)


def where_forward(cond, a, b, shape, c_strides, a_strides, b_strides):
    return np.where(operand(cond, shape, c_strides) != 0, operand(a, shape, a_strides),
                    operand(b, shape, b_strides)).reshape(-1)


def where_backward(cond, grad_out, shape, c_strides):
    c = operand(cond, shape, c_strides) != 0
    g = _f64(grad_out).reshape(shape)
    return np.where(c, g, 0.0).reshape(-1), np.where(c, 0.0, g).reshape(-1)


def _reduced(x, keep_shape, keep_strides, red_shape, red_strides):
    """x viewed as keep_shape + red_shape, and the axes of the reduced part."""
    view = operand(x, tuple(keep_shape) + tuple(red_shape),
                   tuple(keep_strides) + tuple(red_strides))
    return view, tuple(range(len(keep_shape), len(keep_shape) + len(red_shape)))


def reduce_sum(x, keep_shape, keep_strides, red_shape, red_strides, scale):
    view, axes = _reduced(x, keep_shape, keep_strides, red_shape, red_strides)
    return (scale * view.sum(axis=axes)).reshape(-1)


def reduce_max(x, keep_shape, keep_strides, red_shape, red_strides):
    view, axes = _reduced(x, keep_shape, keep_strides, red_shape, red_strides)
    return view.max(axis=axes).reshape(-1)             # NaN propagates, as torch.amax


def strided_copy(x, x_offset, shape, x_strides, accumulate, out, out_offset, out_strides):
    """The whole of ``out`` (float64) after the copy."""
    res = _f64(out).reshape(-1).copy()
    src = operand(x, shape, x_strides, x_offset)
    for idx in np.ndindex(*shape):
        pos = out_offset + sum(i * s for i, s in zip(idx, out_strides))
        res[pos] = (res[pos] if accumulate else 0.0) + src[idx]
    return res


def matmul_forward(a, b, batch_shape, a_batch_strides, b_batch_strides, m, n, k, lda, ldb,
                   trans_a, trans_b, accumulate, out):
    """The whole of ``out`` (float64) after the batched product."""
    res = _f64(out).reshape(-1).copy()
    for t, idx in enumerate(np.ndindex(*batch_shape)):
        a0 = sum(i * s for i, s in zip(idx, a_batch_strides))
        b0 = sum(i * s for i, s in zip(idx, b_batch_strides))
        A = operand(a, (k, m) if trans_a else (m, k), (lda, 1), a0)
        B = operand(b, (n, k) if trans_b else (k, n), (ldb, 1), b0)
        c = (A.T if trans_a else A) @ (B.T if trans_b else B)
        block = slice(t * m * n, (t + 1) * m * n)
        res[block] = c.reshape(-1) + (res[block] if accumulate else 0.0)
    return res


def take_forward(x, idx, outer, n, inner):
    return np.take(_f64(x).reshape(outer, n, inner), idx, axis=1).reshape(-1)


def take_backward(grad_out, idx, outer, n, inner, accumulate, grad_x):
    res = _f64(grad_x).reshape(outer, n, inner).copy() if accumulate else np.zeros((outer, n, inner))
    g = _f64(grad_out).reshape(outer, len(idx), inner)
    for o in range(outer):
        np.add.at(res[o], np.asarray(idx), g[o])
    return res.reshape(-1)


def log_softmax_forward(x):
    x = _f64(x)
    return x - _special.logsumexp(x, axis=1, keepdims=True)


def log_softmax_backward(y, grad_out):
    g = _f64(grad_out)
    return g - np.exp(_f64(y)) * g.sum(axis=1, keepdims=True)


# ---- recurrent cells (kernels/{cpu,cuda}/rnn.py): float64, one step at a time -----------------
# Processing step s reads time index t = T-1-s with ``reverse`` (else s) of xp and mask and
# writes its outputs at s; grad_xp is returned at t. A masked step (mask 0) carries the states.

def _steps(T, reverse):
    """(s, t) pairs in processing order."""
    return [(s, T - 1 - s if reverse else s) for s in range(T)]


def _sig(a):
    return _special.expit(a)


def simple_rnn_forward(xp, u, h0, mask, reverse, activation):
    """(pre, hs): pre_s = xp_t + h_{s-1} @ u, h_s = act(pre_s) (``activation`` a name of
    kernels/scalar.py ACTIVATION_CODES, Keras' default alpha)."""
    from numbanet.kernels.scalar import DEFAULT_ALPHA
    act = globals()[activation + "_forward"]
    xp, u, h = _f64(xp), _f64(u), _f64(h0).copy()
    N, T, U = xp.shape
    pre, hs = np.zeros((N, T, U)), np.zeros((N, T, U))
    for s, t in _steps(T, reverse):
        pre[:, s] = xp[:, t] + h @ u
        keep = _f64(mask)[:, t:t + 1] == 0
        h = np.where(keep, h, act(pre[:, s], DEFAULT_ALPHA.get(activation, 0.0)))
        hs[:, s] = h
    return pre, hs


def simple_rnn_backward(u, h0, mask, reverse, activation, pre, hs, grad_hs, grad_hT):
    """(grad_xp, grad_u, grad_h0) by backpropagation through time."""
    from numbanet.kernels.scalar import DEFAULT_ALPHA
    act_bwd = globals()[activation + "_backward"]
    u, pre, hs, grad_hs = _f64(u), _f64(pre), _f64(hs), _f64(grad_hs)
    N, T, U = hs.shape
    grad_xp, grad_u, dh = np.zeros((N, T, U)), np.zeros_like(u), _f64(grad_hT).copy()
    for s, t in reversed(_steps(T, reverse)):
        hp = _f64(h0) if s == 0 else hs[:, s - 1]
        dh = dh + grad_hs[:, s]
        valid = _f64(mask)[:, t:t + 1] != 0
        da = np.where(valid, act_bwd(pre[:, s], hs[:, s], dh,
                                     DEFAULT_ALPHA.get(activation, 0.0)), 0.0)
        grad_xp[:, t] = da
        grad_u += hp.T @ da
        dh = np.where(valid, 0.0, dh) + da @ u.T
    return grad_xp, grad_u, dh


def lstm_forward(xp, u, h0, c0, mask, reverse):
    """(hs, cs, gates): Keras LSTM, gates i, f, c, o; gates keeps the activated i, f, g, o."""
    xp, u, h, c = _f64(xp), _f64(u), _f64(h0).copy(), _f64(c0).copy()
    N, T, G = xp.shape
    U = G // 4
    hs, cs, gates = np.zeros((N, T, U)), np.zeros((N, T, U)), np.zeros((N, T, G))
    for s, t in _steps(T, reverse):
        a = xp[:, t] + h @ u
        i, f, g, o = _sig(a[:, :U]), _sig(a[:, U:2 * U]), np.tanh(a[:, 2 * U:3 * U]), \
            _sig(a[:, 3 * U:])
        gates[:, s] = np.concatenate([i, f, g, o], axis=1)
        keep = _f64(mask)[:, t:t + 1] == 0
        c_new = f * c + i * g
        h = np.where(keep, h, o * np.tanh(c_new))
        c = np.where(keep, c, c_new)
        hs[:, s], cs[:, s] = h, c
    return hs, cs, gates


def lstm_backward(u, h0, c0, mask, reverse, hs, cs, gates, grad_hs, grad_hT, grad_cT):
    """(grad_xp, grad_u, grad_h0, grad_c0) by backpropagation through time."""
    u, hs, cs, gates, grad_hs = _f64(u), _f64(hs), _f64(cs), _f64(gates), _f64(grad_hs)
    N, T, U = hs.shape
    grad_xp, grad_u = np.zeros((N, T, 4 * U)), np.zeros_like(u)
    dh, dc = _f64(grad_hT).copy(), _f64(grad_cT).copy()
    for s, t in reversed(_steps(T, reverse)):
        hp = _f64(h0) if s == 0 else hs[:, s - 1]
        cp = _f64(c0) if s == 0 else cs[:, s - 1]
        i, f, g, o = (gates[:, s, k * U:(k + 1) * U] for k in range(4))
        dh = dh + grad_hs[:, s]
        valid = _f64(mask)[:, t:t + 1] != 0
        tc = np.tanh(cs[:, s])
        dct = dc + dh * o * (1.0 - tc ** 2)
        da = np.concatenate([dct * g * i * (1 - i), dct * cp * f * (1 - f),
                             dct * i * (1 - g ** 2), dh * tc * o * (1 - o)], axis=1)
        da = np.where(valid, da, 0.0)
        grad_xp[:, t] = da
        grad_u += hp.T @ da
        dc = np.where(valid, dct * f, dc)
        dh = np.where(valid, 0.0, dh) + da @ u.T
    return grad_xp, grad_u, dh, dc


def gru_forward(xp, u, u_bias, h0, mask, reverse):
    """(hs, gates): Keras 3 GRU (reset_after), gates z, r, h; gates keeps z, r, hh, rec_h."""
    xp, u, b, h = _f64(xp), _f64(u), _f64(u_bias), _f64(h0).copy()
    N, T, G = xp.shape
    U = G // 3
    hs, gates = np.zeros((N, T, U)), np.zeros((N, T, 4 * U))
    for s, t in _steps(T, reverse):
        rec = h @ u + b
        z = _sig(xp[:, t, :U] + rec[:, :U])
        r = _sig(xp[:, t, U:2 * U] + rec[:, U:2 * U])
        hh = np.tanh(xp[:, t, 2 * U:] + r * rec[:, 2 * U:])
        gates[:, s] = np.concatenate([z, r, hh, rec[:, 2 * U:]], axis=1)
        keep = _f64(mask)[:, t:t + 1] == 0
        h = np.where(keep, h, z * h + (1 - z) * hh)
        hs[:, s] = h
    return hs, gates


def gru_backward(u, u_bias, h0, mask, reverse, hs, gates, grad_hs, grad_hT):
    """(grad_xp, grad_u, grad_u_bias, grad_h0) by backpropagation through time."""
    u, hs, gates, grad_hs = _f64(u), _f64(hs), _f64(gates), _f64(grad_hs)
    N, T, U = hs.shape
    grad_xp, grad_u, grad_b = np.zeros((N, T, 3 * U)), np.zeros_like(u), np.zeros(3 * U)
    dh = _f64(grad_hT).copy()
    for s, t in reversed(_steps(T, reverse)):
        hp = _f64(h0) if s == 0 else hs[:, s - 1]
        z, r, hh, rh = (gates[:, s, k * U:(k + 1) * U] for k in range(4))
        dh = dh + grad_hs[:, s]
        valid = _f64(mask)[:, t:t + 1] != 0
        dah = dh * (1 - z) * (1 - hh ** 2)
        da = np.concatenate([dh * (hp - hh) * z * (1 - z), dah * rh * r * (1 - r), dah], axis=1)
        da = np.where(valid, da, 0.0)
        drec = np.concatenate([da[:, :2 * U], da[:, 2 * U:] * r], axis=1)
        grad_xp[:, t] = da
        grad_u += hp.T @ drec
        grad_b += drec.sum(axis=0)
        dh = np.where(valid, dh * z, dh) + drec @ u.T
    return grad_xp, grad_u, grad_b, dh


# ---- attention (kernels/cpu/attention.py) --------------------------------------------------------
def attention_allowed(mask, heads, causal, shape):
    """(B, Tq, Tk) bool: where query i may attend to key j (the mask shared by the heads of a
    batch row, keys j > i disallowed when causal)."""
    allowed = np.ones(shape, bool)
    if mask is not None and np.size(mask):
        allowed &= np.repeat(np.asarray(mask) != 0, heads, axis=0)
    if causal:
        allowed &= np.tril(np.ones(shape[1:], bool))
    return allowed


def attention_softmax(scores, mask, heads, causal, scale, u=None, rate=0.0):
    """(probs, weights): softmax over the allowed keys of scale * scores (0 elsewhere, all 0 in a
    row with no allowed key), weights = probs * (u >= rate) / (1 - rate)."""
    s = _f64(scores) * scale
    allowed = attention_allowed(mask, heads, causal, s.shape)
    some = allowed.any(axis=-1, keepdims=True)
    z = np.where(allowed, s, -np.inf)
    m = np.where(some, z.max(axis=-1, keepdims=True), 0.0)
    e = np.exp(np.where(allowed, z - m, -np.inf))
    probs = e / np.where(some, e.sum(axis=-1, keepdims=True), 1.0)
    if rate > 0:
        return probs, probs * (_f64(u) >= rate) / (1.0 - rate)
    return probs, probs.copy()


def attention_softmax_backward(probs, u, rate, scale, grad_weights):
    """grad_scores = scale * probs * (grad_probs - rowsum(probs * grad_probs)), grad_probs the
    gradient of weights through the dropout."""
    p, g = _f64(probs), _f64(grad_weights)
    if rate > 0:
        g = g * (_f64(u) >= rate) / (1.0 - rate)
    return scale * p * (g - (p * g).sum(axis=-1, keepdims=True))


# ------------------------------------------------------------------------------- upsampling
def upsample2d_forward(x, size_h, size_w):
    """Nearest-neighbour upsampling of NCHW ``x``: each pixel repeated size_h x size_w times."""
    return np.repeat(np.repeat(_f64(x), size_h, axis=2), size_w, axis=3)


def upsample2d_backward(grad_out, size_h, size_w):
    """The sum of each size_h x size_w block of ``grad_out``."""
    g = _f64(grad_out)
    N, C, OH, OW = g.shape
    return g.reshape(N, C, OH // size_h, size_h, OW // size_w, size_w).sum(axis=(3, 5))
