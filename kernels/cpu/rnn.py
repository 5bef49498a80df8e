"""Recurrent kernels: the recurrence of SimpleRNN, LSTM and GRU cells (Keras 3 semantics and
weight layouts) over a whole sequence, one call forward and one call backward (BPTT).

The layer does the input projection of every step itself, as one GEMM with the dense kernels
(``xp = x @ kernel + bias`` for all (batch, time) rows at once, and dW, db, dx from the
``grad_xp`` returned here): these kernels run the recurrence only. Arrays are batch-major and
C-contiguous, one float dtype: N = batch, T = steps, U = units, G = gates (SimpleRNN 1, LSTM 4,
GRU 3).

* ``xp`` (N, T, G*U): the input projection of every step; ``u`` (U, G*U): the recurrent kernel,
  column block g of gate g (LSTM i, f, c, o; GRU z, r, h); ``h0``, ``c0`` (N, U) initial states.
* ``mask`` (N, T): 0 marks a masked step, which carries the state over unchanged (its output is
  the carried h, its gate gradients are 0, its whole incoming gradient flows to the previous
  state).
* ``reverse`` (Keras ``go_backwards``): processing step s reads time index t = T-1-s (else s)
  of ``xp`` and ``mask`` and writes its outputs (``hs``, ``cs``, ``pre``, ``gates``) at position
  s; ``grad_xp`` is written at t, aligned with ``xp``. The final state is hs[:, T-1].
* Backward: ``grad_hs`` (N, T, U) the gradient of every output position (zeros where unused),
  ``grad_hT``/``grad_cT`` of the final states; ``grad_u`` (and GRU ``grad_u_bias``) overwritten,
  or added into with ``accumulate``; ``grad_h0``/``grad_c0`` overwritten.

How it runs: the batch is split into row blocks (fixed by the shape, never by the thread count:
results do not depend on it) that run the whole time loop on Numba's threads, since rows never
meet in the recurrence. A step of a block is one BLAS GEMM (h_{t-1} @ u into the step's
pre-activation rows, or dh_{t-1} = dA_t @ u.T added into the carried gradient) and one pass of
gate maths over its rows; sigmoid and tanh are kernels/scalar.py's arithmetic-only ``sigmoid_v``
and ``tanh_v`` (``sigmoid_v32`` and ``tanh_v32`` in float32) so that the pass vectorizes.
Backward also copies each step's h_{t-1} into a buffer aligned with ``grad_xp``, and after the
loop grad_u is one GEMM over all N*T rows (the dense weight-gradient kernels: row blocks of
grad_u in parallel).

Public kernels check their arguments on the host (ValueError naming the argument) before any
compiled code runs.
"""
import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from .. import scalar
from ._blas import AT0, NO_TRANS, TRANS, gemm
from .dense import _blocks as _weight_blocks_for
from .dense import _weight_blocks, _weight_rows, dense_backward_weight

# Row blocks of the batch: at least _MIN_ROWS rows each (thinner step GEMMs lose more BLAS
# efficiency than a thread gains), at most _MAX_BLOCKS, and one block below _MIN_WORK
# multiply-adds of recurrence (a parallel region costs ~10 us to start).
_MIN_ROWS = 32
_MAX_BLOCKS = 8
_MIN_WORK = 1 << 20

_inline = njit(inline="always")


def _by_dtype(f64, f32):
    """A scalar function for the kernels: scalar.py's float32 twin ``f32`` on a float32
    argument, ``f64`` otherwise, chosen when a kernel compiles (a numba overload; LLVM inlines
    it, so the loops still vectorize; inlining it in numba's IR warns about phi nodes)."""
    f64, f32 = _inline(f64), _inline(f32)

    def fn(x):
        return f64(x)

    @overload(fn)
    def _typed(x):
        f = f32 if x == types.float32 else f64
        return lambda x: f(x)
    return fn


_sigmoid = _by_dtype(scalar.sigmoid_v, scalar.sigmoid_v32)
_tanh = _by_dtype(scalar.tanh_v, scalar.tanh_v32)
_sigmoid_grad = _inline(scalar.sigmoid_grad_y)
_tanh_grad = _inline(scalar.tanh_grad_y)
_activate, _activate_grad = scalar.activation_switch(_inline)
_TANH = scalar.ACTIVATION_CODES.index("tanh")


def _blocks(n, t, g, u):
    """Row blocks of a batch of ``n`` (1: the calling thread runs the recurrence)."""
    if n * t * g * u * u < _MIN_WORK:
        return 1
    return max(1, min(_MAX_BLOCKS, n // _MIN_ROWS))


def _run(rows, blocks, n, nb, *args):
    """rows(*args, 0, n) on the calling thread when nb == 1, else blocks(*args, nb): the rows
    function of each of nb row blocks on Numba's threads."""
    if nb == 1:
        rows(*args, 0, n)
    else:
        blocks(*args, nb)


def _check(kernel, n_gates, **arrays):
    """(N, T, U) after the host checks (scalar.recurrent_dims) of NumPy arrays."""
    for name, a in arrays.items():
        if not isinstance(a, np.ndarray):
            raise ValueError(f"{kernel}: {name} must be a NumPy array, got {type(a).__name__}")
    return scalar.recurrent_dims(kernel, n_gates, arrays)


def _weight_grad(hprev, d, accumulate, grad_u):
    """grad_u (=, or += with ``accumulate``) = hprev.T @ d over all N*T rows: one GEMM, in row
    blocks of grad_u on the threads when large (dense_backward_weight without the bias)."""
    units = grad_u.shape[0]
    x, g = hprev.reshape(-1, units), d.reshape(-1, d.shape[-1])
    beta = 1.0 if accumulate else 0.0
    nb = _weight_blocks_for(units, x.shape[0] * g.shape[1] * units)
    if nb > 1:
        _weight_blocks(x, g, beta, grad_u, nb)
    else:
        _weight_rows(x, g, beta, grad_u, 0, units)


@njit(inline="always")
def _copy(dst, src):
    """dst[:] = src for 1-D rows (an explicit loop: measured 2.5x faster than the slice copy)."""
    for j in range(dst.size):
        dst[j] = src[j]


@njit(inline="always")
def _step_gemm(trans_b, m, n, k, a, a0, lda, u, beta, c, c0, ldc):
    """c rows = a rows @ op(u) (+ beta c): one step's recurrent product for a block of m rows."""
    gemm(NO_TRANS, trans_b, m, n, k, 1.0, a.reshape(-1), a0, lda, u.reshape(-1), AT0, u.shape[1],
         beta, c.reshape(-1), c0, ldc)


@njit(inline="always")
def _prev_gemm(s, r0, m, n, h0, hs, u, c, c0, ldc):
    """c rows = h_{s-1} @ u for rows r0..r0+m of the batch at processing step s (h0 at s = 0)."""
    t_len, units = hs.shape[1], hs.shape[2]
    if s == 0:
        _step_gemm(NO_TRANS, m, n, units, h0, r0 * units, units, u, 0.0, c, c0, ldc)
    else:
        _step_gemm(NO_TRANS, m, n, units, hs, (r0 * t_len + s - 1) * units, t_len * units, u, 0.0,
                   c, c0, ldc)


# ------------------------------------------------------------------------------------- SimpleRNN
@njit(cache=True, error_model="numpy")
def _rnn_fwd_rows(xp, u, h0, mask, reverse, code, alpha, pre, hs, r0, r1):
    """The forward of rows r0..r1 of the batch, all steps."""
    t_len, units = hs.shape[1], hs.shape[2]
    for s in range(t_len):
        t = t_len - 1 - s if reverse else s
        _prev_gemm(s, r0, r1 - r0, units, h0, hs, u, pre, (r0 * t_len + s) * units,
                   t_len * units)
        for n in range(r0, r1):
            p, x, h = pre[n, s], xp[n, t], hs[n, s]
            for j in range(units):
                p[j] += x[j]
            if mask[n, t] != 0.0:
                if code == _TANH:                   # the default: the vectorized tanh
                    for j in range(units):
                        h[j] = _tanh(p[j])
                else:
                    for j in range(units):
                        h[j] = _activate(code, p[j], alpha)
            else:
                h[:] = h0[n] if s == 0 else hs[n, s - 1]


@njit(cache=True, parallel=True)
def _rnn_fwd(xp, u, h0, mask, reverse, code, alpha, pre, hs, nb):
    n = hs.shape[0]
    for b in prange(nb):
        _rnn_fwd_rows(xp, u, h0, mask, reverse, code, alpha, pre, hs, b * n // nb,
                      (b + 1) * n // nb)


@njit(cache=True, error_model="numpy")
def _rnn_bwd_rows(u, h0, mask, reverse, code, alpha, pre, hs, grad_hs, grad_hT, grad_xp, grad_h0,
                  hprev, r0, r1):
    """BPTT of rows r0..r1; grad_h0 carries dh of the step being processed."""
    t_len, units = hs.shape[1], hs.shape[2]
    grad_h0[r0:r1] = grad_hT[r0:r1]
    for s in range(t_len - 1, -1, -1):
        t = t_len - 1 - s if reverse else s
        for n in range(r0, r1):
            p, h, gh, d, dhc = pre[n, s], hs[n, s], grad_hs[n, s], grad_xp[n, t], grad_h0[n]
            for j in range(units):
                dhc[j] += gh[j]
            if mask[n, t] != 0.0:
                if code == _TANH:
                    for j in range(units):
                        d[j] = dhc[j] * _tanh_grad(h[j])
                else:
                    for j in range(units):
                        d[j] = dhc[j] * _activate_grad(code, p[j], h[j], alpha)
                dhc[:] = 0.0                        # the GEMM below adds dA @ u.T
            else:                                   # all of dh to the previous state
                d[:] = 0.0
            _copy(hprev[n, t], h0[n] if s == 0 else hs[n, s - 1])
        _step_gemm(TRANS, r1 - r0, units, units, grad_xp, (r0 * t_len + t) * units, t_len * units,
                   u, 1.0, grad_h0, r0 * units, units)


@njit(cache=True, parallel=True)
def _rnn_bwd(u, h0, mask, reverse, code, alpha, pre, hs, grad_hs, grad_hT, grad_xp, grad_h0,
             hprev, nb):
    n = hs.shape[0]
    for b in prange(nb):
        _rnn_bwd_rows(u, h0, mask, reverse, code, alpha, pre, hs, grad_hs, grad_hT, grad_xp,
                      grad_h0, hprev, b * n // nb, (b + 1) * n // nb)


def simple_rnn_forward(xp, u, h0, mask, reverse, activation, pre, hs):
    """hs[:, s] = act(pre[:, s]), pre[:, s] = xp[:, t] + h_{s-1} @ u (``activation``: a code of
    kernels/scalar.py ACTIVATION_CODES; leaky_relu and elu with Keras' defaults DEFAULT_ALPHA).
    ``pre`` (N, T, U) keeps the pre-activations (at processing position s) for backward."""
    n, t, units = _check("simple_rnn_forward", 1, xp=xp, u=u, h0=h0, mask=mask, pre=pre, hs=hs)
    code, alpha = scalar.activation_default_alpha(activation, pre, hs)
    nb = _blocks(n, t, 1, units)
    _run(_rnn_fwd_rows, _rnn_fwd, n, nb, xp, u, h0, mask, bool(reverse), code, alpha, pre, hs)


def simple_rnn_backward(u, h0, mask, reverse, activation, pre, hs, grad_hs, grad_hT, accumulate,
                        grad_xp, grad_u, grad_h0):
    """BPTT of simple_rnn_forward: grad_xp (at time index t), grad_u (+= with ``accumulate``),
    grad_h0."""
    n, t, units = _check("simple_rnn_backward", 1, u=u, h0=h0, mask=mask, pre=pre, hs=hs,
                         grad_hs=grad_hs, grad_hT=grad_hT, grad_xp=grad_xp, grad_u=grad_u,
                         grad_h0=grad_h0)
    code, alpha = scalar.activation_default_alpha(activation, pre, hs)
    hprev = np.empty_like(hs)
    nb = _blocks(n, t, 1, units)
    _run(_rnn_bwd_rows, _rnn_bwd, n, nb, u, h0, mask, bool(reverse), code, alpha, pre, hs,
         grad_hs, grad_hT, grad_xp, grad_h0, hprev)
    _weight_grad(hprev, grad_xp, accumulate, grad_u)


# ------------------------------------------------------------------------------------- LSTM
@njit(cache=True, error_model="numpy")
def _lstm_fwd_rows(xp, u, h0, c0, mask, reverse, hs, cs, gates, r0, r1):
    """The forward of rows r0..r1: a step's pre-activations go to its gates rows (GEMM), are
    activated there in place, then the cell update."""
    t_len, units = hs.shape[1], hs.shape[2]
    u2, u3, u4 = 2 * units, 3 * units, 4 * units
    for s in range(t_len):
        t = t_len - 1 - s if reverse else s
        _prev_gemm(s, r0, r1 - r0, u4, h0, hs, u, gates, (r0 * t_len + s) * u4, t_len * u4)
        for n in range(r0, r1):
            a, x, h, c = gates[n, s], xp[n, t], hs[n, s], cs[n, s]
            hp = h0[n] if s == 0 else hs[n, s - 1]
            cp = c0[n] if s == 0 else cs[n, s - 1]
            # one function a loop (g and o in one loop measured 1.5x slower: it vectorized worse)
            for q in range(u2):                     # i, f
                a[q] = _sigmoid(a[q] + x[q])
            for j in range(units):                  # g
                a[u2 + j] = _tanh(a[u2 + j] + x[u2 + j])
            for j in range(units):                  # o
                a[u3 + j] = _sigmoid(a[u3 + j] + x[u3 + j])
            if mask[n, t] != 0.0:
                for j in range(units):
                    cn = a[units + j] * cp[j] + a[j] * a[u2 + j]
                    c[j] = cn
                    h[j] = a[u3 + j] * _tanh(cn)
            else:
                c[:] = cp
                h[:] = hp


@njit(cache=True, parallel=True)
def _lstm_fwd(xp, u, h0, c0, mask, reverse, hs, cs, gates, nb):
    n = hs.shape[0]
    for b in prange(nb):
        _lstm_fwd_rows(xp, u, h0, c0, mask, reverse, hs, cs, gates, b * n // nb,
                       (b + 1) * n // nb)


@njit(cache=True, error_model="numpy")
def _lstm_bwd_rows(u, h0, c0, mask, reverse, hs, cs, gates, grad_hs, grad_hT, grad_cT, grad_xp,
                   grad_h0, grad_c0, hprev, r0, r1):
    """BPTT of rows r0..r1; grad_h0 and grad_c0 carry dh and dc of the step being processed."""
    t_len, units = hs.shape[1], hs.shape[2]
    u2, u3, u4 = 2 * units, 3 * units, 4 * units
    grad_h0[r0:r1] = grad_hT[r0:r1]
    grad_c0[r0:r1] = grad_cT[r0:r1]
    for s in range(t_len - 1, -1, -1):
        t = t_len - 1 - s if reverse else s
        for n in range(r0, r1):
            a, c, gh, d = gates[n, s], cs[n, s], grad_hs[n, s], grad_xp[n, t]
            hp = h0[n] if s == 0 else hs[n, s - 1]
            cp = c0[n] if s == 0 else cs[n, s - 1]
            dhc, dcc = grad_h0[n], grad_c0[n]
            if mask[n, t] != 0.0:
                for j in range(units):              # tanh(c), kept in d's o block
                    d[u3 + j] = _tanh(c[j])
                for j in range(units):              # o, and dc through h = o tanh(c)
                    dh = gh[j] + dhc[j]
                    o = a[u3 + j]
                    tc = d[u3 + j]
                    d[u3 + j] = dh * tc * _sigmoid_grad(o)
                    dcc[j] += dh * o * _tanh_grad(tc)
                    dhc[j] = 0.0                    # the GEMM below adds dA @ u.T
                for j in range(units):              # i, f, g; dc to c_{s-1}
                    dc = dcc[j]
                    i, f, g = a[j], a[units + j], a[u2 + j]
                    d[j] = dc * g * _sigmoid_grad(i)
                    d[units + j] = dc * cp[j] * _sigmoid_grad(f)
                    d[u2 + j] = dc * i * _tanh_grad(g)
                    dcc[j] = dc * f
            else:                                   # all of dh and dc to the previous state
                for j in range(units):
                    dhc[j] += gh[j]
                d[:] = 0.0
            _copy(hprev[n, t], hp)
        _step_gemm(TRANS, r1 - r0, units, u4, grad_xp, (r0 * t_len + t) * u4, t_len * u4, u, 1.0,
                   grad_h0, r0 * units, units)


@njit(cache=True, parallel=True)
def _lstm_bwd(u, h0, c0, mask, reverse, hs, cs, gates, grad_hs, grad_hT, grad_cT, grad_xp,
              grad_h0, grad_c0, hprev, nb):
    n = hs.shape[0]
    for b in prange(nb):
        _lstm_bwd_rows(u, h0, c0, mask, reverse, hs, cs, gates, grad_hs, grad_hT, grad_cT,
                       grad_xp, grad_h0, grad_c0, hprev, b * n // nb, (b + 1) * n // nb)


def lstm_forward(xp, u, h0, c0, mask, reverse, hs, cs, gates):
    """LSTM (Keras gates i, f, c, o): with a = xp[:, t] + h_{s-1} @ u, c_s = f c_{s-1} + i g,
    h_s = o tanh(c_s); ``hs``/``cs`` (N, T, U) the states of each processing step, ``gates``
    (N, T, 4U) its activated i, f, g, o (kept for backward)."""
    n, t, units = _check("lstm_forward", 4, xp=xp, u=u, h0=h0, c0=c0, mask=mask, hs=hs, cs=cs,
                         gates=gates)
    nb = _blocks(n, t, 4, units)
    _run(_lstm_fwd_rows, _lstm_fwd, n, nb, xp, u, h0, c0, mask, bool(reverse), hs, cs, gates)


def lstm_backward(u, h0, c0, mask, reverse, hs, cs, gates, grad_hs, grad_hT, grad_cT, accumulate,
                  grad_xp, grad_u, grad_h0, grad_c0):
    """BPTT of lstm_forward: grad_xp (at time index t), grad_u (+= with ``accumulate``), grad_h0,
    grad_c0."""
    n, t, units = _check("lstm_backward", 4, u=u, h0=h0, c0=c0, mask=mask, hs=hs, cs=cs,
                         gates=gates, grad_hs=grad_hs, grad_hT=grad_hT, grad_cT=grad_cT,
                         grad_xp=grad_xp, grad_u=grad_u, grad_h0=grad_h0, grad_c0=grad_c0)
    hprev = np.empty_like(hs)
    nb = _blocks(n, t, 4, units)
    _run(_lstm_bwd_rows, _lstm_bwd, n, nb, u, h0, c0, mask, bool(reverse), hs, cs, gates, grad_hs,
         grad_hT, grad_cT, grad_xp, grad_h0, grad_c0, hprev)
    _weight_grad(hprev, grad_xp, accumulate, grad_u)


# ------------------------------------------------------------------------------------- GRU
@njit(cache=True, error_model="numpy")
def _gru_fwd_rows(xp, u, u_bias, h0, mask, reverse, hs, gates, r0, r1):
    """The forward of rows r0..r1 (see _lstm_fwd_rows)."""
    t_len, units = hs.shape[1], hs.shape[2]
    u2, u3, u4 = 2 * units, 3 * units, 4 * units
    for s in range(t_len):
        t = t_len - 1 - s if reverse else s
        # rec = h_{s-1} @ u into gates[:, s, :3U], then z, r, hh and rec_h (with bias) in place
        _prev_gemm(s, r0, r1 - r0, u3, h0, hs, u, gates, (r0 * t_len + s) * u4, t_len * u4)
        for n in range(r0, r1):
            a, x, h = gates[n, s], xp[n, t], hs[n, s]
            hp = h0[n] if s == 0 else hs[n, s - 1]
            for q in range(u2):                     # z, r
                a[q] = _sigmoid(x[q] + (a[q] + u_bias[q]))
            for j in range(units):                  # rec_h, hh
                rh = a[u2 + j] + u_bias[u2 + j]
                a[u3 + j] = rh
                a[u2 + j] = _tanh(x[u2 + j] + a[units + j] * rh)
            if mask[n, t] != 0.0:
                for j in range(units):
                    z = a[j]
                    h[j] = z * hp[j] + (1.0 - z) * a[u2 + j]
            else:
                h[:] = hp


@njit(cache=True, parallel=True)
def _gru_fwd(xp, u, u_bias, h0, mask, reverse, hs, gates, nb):
    n = hs.shape[0]
    for b in prange(nb):
        _gru_fwd_rows(xp, u, u_bias, h0, mask, reverse, hs, gates, b * n // nb, (b + 1) * n // nb)


@njit(cache=True, error_model="numpy")
def _gru_bwd_rows(u, h0, mask, reverse, hs, gates, grad_hs, grad_hT, grad_xp, grad_h0, hprev,
                  drec, r0, r1):
    """BPTT of rows r0..r1; grad_h0 carries dh; drec gets the recurrent pre-activation gradients
    (grad_xp's, but d rec_h = d a_h * r)."""
    t_len, units = hs.shape[1], hs.shape[2]
    u2, u3 = 2 * units, 3 * units
    grad_h0[r0:r1] = grad_hT[r0:r1]
    for s in range(t_len - 1, -1, -1):
        t = t_len - 1 - s if reverse else s
        for n in range(r0, r1):
            a, gh, d, dr = gates[n, s], grad_hs[n, s], grad_xp[n, t], drec[n, t]
            hp = h0[n] if s == 0 else hs[n, s - 1]
            dhc = grad_h0[n]
            for j in range(units):
                dhc[j] += gh[j]
            if mask[n, t] != 0.0:
                for j in range(units):
                    dh = dhc[j]
                    z, r, hh = a[j], a[units + j], a[u2 + j]
                    dah = dh * (1.0 - z) * _tanh_grad(hh)
                    d[j] = dh * (hp[j] - hh) * _sigmoid_grad(z)
                    d[units + j] = dah * a[u3 + j] * _sigmoid_grad(r)
                    d[u2 + j] = dah
                for q in range(u2):
                    dr[q] = d[q]
                for j in range(units):
                    dr[u2 + j] = d[u2 + j] * a[units + j]
                    dhc[j] *= a[j]                  # the GEMM below adds drec @ u.T
            else:                                   # all of dh to the previous state
                d[:] = 0.0
                dr[:] = 0.0
            _copy(hprev[n, t], hp)
        _step_gemm(TRANS, r1 - r0, units, u3, drec, (r0 * t_len + t) * u3, t_len * u3, u, 1.0,
                   grad_h0, r0 * units, units)


@njit(cache=True, parallel=True)
def _gru_bwd(u, h0, mask, reverse, hs, gates, grad_hs, grad_hT, grad_xp, grad_h0, hprev, drec,
             nb):
    n = hs.shape[0]
    for b in prange(nb):
        _gru_bwd_rows(u, h0, mask, reverse, hs, gates, grad_hs, grad_hT, grad_xp, grad_h0, hprev,
                      drec, b * n // nb, (b + 1) * n // nb)


def gru_forward(xp, u, u_bias, h0, mask, reverse, hs, gates):
    """GRU (Keras 3, reset_after, gates z, r, h): rec = h_{s-1} @ u + u_bias, z = sigmoid(xp_z +
    rec_z), r = sigmoid(xp_r + rec_r), hh = tanh(xp_h + r rec_h), h_s = z h_{s-1} + (1 - z) hh;
    ``gates`` (N, T, 4U) keeps z, r, hh and rec_h of each processing step."""
    n, t, units = _check("gru_forward", 3, xp=xp, u=u, u_bias=u_bias, h0=h0, mask=mask, hs=hs,
                         gates=gates)
    nb = _blocks(n, t, 3, units)
    _run(_gru_fwd_rows, _gru_fwd, n, nb, xp, u, u_bias, h0, mask, bool(reverse), hs, gates)


def gru_backward(u, u_bias, h0, mask, reverse, hs, gates, grad_hs, grad_hT, accumulate, grad_xp,
                 grad_u, grad_u_bias, grad_h0):
    """BPTT of gru_forward: grad_xp (at time index t), grad_u and grad_u_bias (+= with
    ``accumulate``; from the recurrent pre-activation gradients), grad_h0."""
    n, t, units = _check("gru_backward", 3, u=u, u_bias=u_bias, h0=h0, mask=mask, hs=hs,
                         gates=gates, grad_hs=grad_hs, grad_hT=grad_hT, grad_xp=grad_xp,
                         grad_u=grad_u, grad_u_bias=grad_u_bias, grad_h0=grad_h0)
    hprev = np.empty_like(hs)
    drec = np.empty_like(grad_xp)
    nb = _blocks(n, t, 3, units)
    _run(_gru_bwd_rows, _gru_bwd, n, nb, u, h0, mask, bool(reverse), hs, gates, grad_hs, grad_hT,
         grad_xp, grad_h0, hprev, drec)
    dense_backward_weight(hprev.reshape(-1, units), drec.reshape(-1, 3 * units), bool(accumulate),
                          grad_u, grad_u_bias)
