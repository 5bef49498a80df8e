"""Float64 NumPy references for every kernel (straightforward, obviously-correct code)."""
import numpy as np


def dense_forward(x, w, b):
    return x.astype(np.float64) @ w.astype(np.float64) + b.astype(np.float64)


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


def softmax_forward(x, alpha):
    return _special.softmax(_f64(x), axis=1)


def softmax_backward(x, y, grad_out, alpha):
    s = _special.softmax(_f64(x), axis=1)
    g = _f64(grad_out)
    return s * (g - np.sum(g * s, axis=1, keepdims=True))


def mse_forward(y_true, y_pred):
    return np.mean((_f64(y_pred) - _f64(y_true)) ** 2)


def mse_backward(y_true, y_pred):
    return 2.0 * (_f64(y_pred) - _f64(y_true)) / np.size(y_pred)


def mae_forward(y_true, y_pred):
    return np.mean(np.abs(_f64(y_pred) - _f64(y_true)))


def mae_backward(y_true, y_pred):
    return np.sign(_f64(y_pred) - _f64(y_true)) / np.size(y_pred)


def huber_forward(y_true, y_pred, delta):
    a = np.abs(_f64(y_pred) - _f64(y_true))
    return np.mean(np.where(a <= delta, 0.5 * a * a, delta * (a - 0.5 * delta)))


def huber_backward(y_true, y_pred, delta):
    return np.clip(_f64(y_pred) - _f64(y_true), -delta, delta) / np.size(y_pred)


def binary_crossentropy_forward(y_true, y_pred, eps):
    t, q = _f64(y_true), np.clip(_f64(y_pred), eps, 1.0 - eps)
    return np.mean(-(t * np.log(q) + (1.0 - t) * np.log(1.0 - q)))


def binary_crossentropy_backward(y_true, y_pred, eps):
    t, p = _f64(y_true), _f64(y_pred)
    inside = (p >= eps) & (p <= 1.0 - eps)
    q = np.clip(p, eps, 1.0 - eps)
    return np.where(inside, -t / q + (1.0 - t) / (1.0 - q), 0.0) / p.size


def binary_crossentropy_logits_forward(y_true, logits):
    t, z = _f64(y_true), _f64(logits)
    return np.mean(np.logaddexp(0.0, z) - t * z)       # -t log s(z) - (1-t) log(1 - s(z))


def binary_crossentropy_logits_backward(y_true, logits):
    return (_special.expit(_f64(logits)) - _f64(y_true)) / np.size(logits)


def categorical_crossentropy_forward(y_true, y_pred, eps):
    p = _f64(y_pred)
    q = np.clip(p / p.sum(axis=1, keepdims=True), eps, 1.0 - eps)
    return np.mean(-np.sum(_f64(y_true) * np.log(q), axis=1))


def categorical_crossentropy_backward(y_true, y_pred, eps):
    p = _f64(y_pred)
    s = p.sum(axis=1, keepdims=True)
    q = p / s
    a = np.where((q >= eps) & (q <= 1.0 - eps), -_f64(y_true) / q, 0.0)   # dL/dq
    return (a - np.sum(a * q, axis=1, keepdims=True)) / s / p.shape[0]   # chain rule through q = p/s


def categorical_crossentropy_logits_forward(y_true, logits):
    z = _f64(logits)
    logp = z - _special.logsumexp(z, axis=1, keepdims=True)
    return np.mean(-np.sum(_f64(y_true) * logp, axis=1))


def categorical_crossentropy_logits_backward(y_true, logits):
    t = _f64(y_true)
    s = _special.softmax(_f64(logits), axis=1)
    return (s * t.sum(axis=1, keepdims=True) - t) / t.shape[0]


def _one_hot(labels, classes):
    return np.eye(classes)[np.asarray(labels)]


def sparse_categorical_crossentropy_forward(labels, y_pred, eps):
    return categorical_crossentropy_forward(_one_hot(labels, y_pred.shape[1]), y_pred, eps)


def sparse_categorical_crossentropy_backward(labels, y_pred, eps):
    return categorical_crossentropy_backward(_one_hot(labels, y_pred.shape[1]), y_pred, eps)


def sparse_categorical_crossentropy_logits_forward(labels, logits):
    return categorical_crossentropy_logits_forward(_one_hot(labels, logits.shape[1]), logits)


def sparse_categorical_crossentropy_logits_backward(labels, logits):
    return categorical_crossentropy_logits_backward(_one_hot(labels, logits.shape[1]), logits)


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
