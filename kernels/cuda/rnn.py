"""Recurrent kernels on the GPU: the same names, arguments and semantics as kernels/cpu/rnn.py
(read its docstring for the layouts, masks, ``reverse`` and the backward outputs).

The time loop runs on the host, a few launches per step; every step's kernel is a grid-stride
loop with one thread per (batch row n, unit j).

* Forward: **one launch per step**. Thread (n, j) computes the G recurrent dot products
  h_{s-1}[n] . u[:, g*U + j] (u read coalesced across j; accumulated in the dtype, as cuBLAS
  does), adds xp, applies the cell (kernels/scalar.py sigmoid and tanh) and writes the step's
  outputs. h_{s-1} is h0 seen as (N, 1, U) at s = 0, hs[:, s-1] after (no copy).
* Backward: **two launches per step** (plus one transpose of u before the loop and the weight
  GEMM after it): (1) the elementwise gate gradients of thread (n, j) from the carried dh (and dc
  for the LSTM), writing dA at time index t, the part of dh that flows straight to h_{s-1}
  (the GRU's z dh, or all of dh at a masked step) and a copy of h_{s-1} aligned with dA; (2)
  dh_{s-1}[n, k] = direct[n, k] + dA[n] . u.T[:, k] (u.T made once, read coalesced across k).
  grad_u (and the GRU's recurrent bias) is then one GEMM over all N*T rows: the dense
  weight-gradient kernel (kernels/cuda/dense.py) of the saved h_{s-1} and dA (the GRU: the
  recurrent pre-activation gradient, whose h block is dA_h * r); its bias row is grad_u_bias for
  the GRU and a scratch row otherwise.

So a sequence of T steps costs T launches forward and 2T + 2 (+1 for a split-K GEMM) backward.
Launchers check the arguments' shapes, dtype and order on the host (ValueError naming the
argument) and never synchronize.
"""
from numba import cuda

from .. import scalar
from ._common import A1, A2, A3, Float, Int, device, fill, grid_1d, kernel, launcher, scratch, view
from .dense import dense_backward_weight

_sigmoid = device(scalar.sigmoid)
_tanh = device(scalar.tanh)
_sigmoid_grad = device(scalar.sigmoid_grad_y)
_tanh_grad = device(scalar.tanh_grad_y)
_activate, _activate_grad = scalar.activation_switch(device)


# ------------------------------------------------------------------------------------- kernels
@kernel
def _rnn_step(xp: A3, u: A2, hp: A3, sp: Int, mask: A2, t: Int, s: Int, code: Int, alpha: Float,
              pre: A3, hs: A3):
    """SimpleRNN forward step s (time index t): pre = xp + hp[:, sp] @ u, hs = act(pre)."""
    n_rows, _, units = hs.shape
    for e in range(cuda.grid(1), n_rows * units, cuda.gridsize(1)):
        n = e // units
        j = e - n * units
        acc = xp[n, t, j]
        for k in range(units):
            acc += hp[n, sp, k] * u[k, j]
        pre[n, s, j] = acc
        hs[n, s, j] = _activate(code, acc, alpha) if mask[n, t] != 0 else hp[n, sp, j]


@kernel
def _lstm_step(xp: A3, u: A2, hp: A3, cp: A3, sp: Int, mask: A2, t: Int, s: Int, hs: A3, cs: A3,
               gates: A3):
    """LSTM forward step s: the four dot products of unit j, the gates, the cell update."""
    n_rows, _, units = hs.shape
    u2 = 2 * units
    u3 = 3 * units
    for e in range(cuda.grid(1), n_rows * units, cuda.gridsize(1)):
        n = e // units
        j = e - n * units
        ai = xp[n, t, j]
        af = xp[n, t, units + j]
        ag = xp[n, t, u2 + j]
        ao = xp[n, t, u3 + j]
        for k in range(units):
            h = hp[n, sp, k]
            ai += h * u[k, j]
            af += h * u[k, units + j]
            ag += h * u[k, u2 + j]
            ao += h * u[k, u3 + j]
        i = _sigmoid(ai)
        f = _sigmoid(af)
        g = _tanh(ag)
        o = _sigmoid(ao)
        gates[n, s, j] = i
        gates[n, s, units + j] = f
        gates[n, s, u2 + j] = g
        gates[n, s, u3 + j] = o
        if mask[n, t] != 0:
            c = f * cp[n, sp, j] + i * g
            cs[n, s, j] = c
            hs[n, s, j] = o * _tanh(c)
        else:
            cs[n, s, j] = cp[n, sp, j]
            hs[n, s, j] = hp[n, sp, j]


@kernel
def _gru_step(xp: A3, u: A2, u_bias: A1, hp: A3, sp: Int, mask: A2, t: Int, s: Int, hs: A3,
              gates: A3):
    """GRU forward step s: rec = hp[:, sp] @ u + u_bias for unit j's three gates, then z, r, hh."""
    n_rows, _, units = hs.shape
    u2 = 2 * units
    for e in range(cuda.grid(1), n_rows * units, cuda.gridsize(1)):
        n = e // units
        j = e - n * units
        rz = u_bias[j]
        rr = u_bias[units + j]
        rh = u_bias[u2 + j]
        for k in range(units):
            hk = hp[n, sp, k]
            rz += hk * u[k, j]
            rr += hk * u[k, units + j]
            rh += hk * u[k, u2 + j]
        z = _sigmoid(xp[n, t, j] + rz)
        r = _sigmoid(xp[n, t, units + j] + rr)
        hh = _tanh(xp[n, t, u2 + j] + r * rh)
        gates[n, s, j] = z
        gates[n, s, units + j] = r
        gates[n, s, u2 + j] = hh
        gates[n, s, 3 * units + j] = rh
        h = hp[n, sp, j]
        hs[n, s, j] = z * h + (1.0 - z) * hh if mask[n, t] != 0 else h


@kernel
def _transpose(u: A2, ut: A2):
    """ut = u.T (u (U, G*U)): written coalesced."""
    rows, cols = u.shape
    for e in range(cuda.grid(1), rows * cols, cuda.gridsize(1)):
        q = e // rows
        k = e - q * rows
        ut[q, k] = u[k, q]


@kernel
def _rnn_grad_step(hp: A3, sp: Int, mask: A2, t: Int, s: Int, code: Int, alpha: Float, pre: A3,
                   hs: A3, grad_hs: A3, dh_in: A2, hsave: A3, grad_xp: A3, direct: A2):
    """SimpleRNN backward step s, elementwise: dA = dh act'(pre) (0 when masked)."""
    n_rows, _, units = hs.shape
    zero = grad_xp.dtype.type(0)
    for e in range(cuda.grid(1), n_rows * units, cuda.gridsize(1)):
        n = e // units
        j = e - n * units
        dh = grad_hs[n, s, j] + dh_in[n, j]
        hsave[n, t, j] = hp[n, sp, j]
        if mask[n, t] != 0:
            grad_xp[n, t, j] = dh * _activate_grad(code, pre[n, s, j], hs[n, s, j], alpha)
            direct[n, j] = zero
        else:
            grad_xp[n, t, j] = zero
            direct[n, j] = dh


@kernel
def _lstm_grad_step(hp: A3, cp: A3, sp: Int, mask: A2, t: Int, s: Int, cs: A3, gates: A3,
                    grad_hs: A3, dh_in: A2, dc_in: A2, hsave: A3, grad_xp: A3, direct: A2,
                    grad_c0: A2):
    """LSTM backward step s, elementwise: the four dA of unit j and dc to c_{s-1} (into
    grad_c0, which carries it; dc_in is grad_cT at the last step, grad_c0 after)."""
    n_rows, _, units = cs.shape
    u2 = 2 * units
    u3 = 3 * units
    zero = grad_xp.dtype.type(0)
    for e in range(cuda.grid(1), n_rows * units, cuda.gridsize(1)):
        n = e // units
        j = e - n * units
        dh = grad_hs[n, s, j] + dh_in[n, j]
        dc = dc_in[n, j]
        hsave[n, t, j] = hp[n, sp, j]
        if mask[n, t] != 0:
            i = gates[n, s, j]
            f = gates[n, s, units + j]
            g = gates[n, s, u2 + j]
            o = gates[n, s, u3 + j]
            tc = _tanh(cs[n, s, j])
            dc += dh * o * _tanh_grad(tc)
            grad_xp[n, t, j] = dc * g * _sigmoid_grad(i)
            grad_xp[n, t, units + j] = dc * cp[n, sp, j] * _sigmoid_grad(f)
            grad_xp[n, t, u2 + j] = dc * i * _tanh_grad(g)
            grad_xp[n, t, u3 + j] = dh * tc * _sigmoid_grad(o)
            grad_c0[n, j] = dc * f
            direct[n, j] = zero
        else:
            for q in range(4):
                grad_xp[n, t, q * units + j] = zero
            grad_c0[n, j] = dc
            direct[n, j] = dh


@kernel
def _gru_grad_step(hp: A3, sp: Int, mask: A2, t: Int, s: Int, gates: A3, grad_hs: A3, dh_in: A2,
                   hsave: A3, grad_xp: A3, drec: A3, direct: A2):
    """GRU backward step s, elementwise: dA of unit j (grad_xp), the recurrent pre-activation
    gradient (drec: d rec_h = dA_h r) and dh z straight to h_{s-1}."""
    n_rows, _, units = grad_hs.shape
    u2 = 2 * units
    zero = grad_xp.dtype.type(0)
    for e in range(cuda.grid(1), n_rows * units, cuda.gridsize(1)):
        n = e // units
        j = e - n * units
        dh = grad_hs[n, s, j] + dh_in[n, j]
        h = hp[n, sp, j]
        hsave[n, t, j] = h
        if mask[n, t] != 0:
            z = gates[n, s, j]
            r = gates[n, s, units + j]
            hh = gates[n, s, u2 + j]
            dah = dh * (1.0 - z) * _tanh_grad(hh)
            daz = dh * (h - hh) * _sigmoid_grad(z)
            dar = dah * gates[n, s, 3 * units + j] * _sigmoid_grad(r)
            grad_xp[n, t, j] = daz
            grad_xp[n, t, units + j] = dar
            grad_xp[n, t, u2 + j] = dah
            drec[n, t, j] = daz
            drec[n, t, units + j] = dar
            drec[n, t, u2 + j] = dah * r
            direct[n, j] = dh * z
        else:
            for q in range(3):
                grad_xp[n, t, q * units + j] = zero
                drec[n, t, q * units + j] = zero
            direct[n, j] = dh


@kernel
def _dh_prev(d: A3, t: Int, ut: A2, direct: A2, grad_h: A2):
    """grad_h[n, k] = direct[n, k] + d[n, t] . ut[:, k]: dh_{s-1} from the step's dA."""
    n_rows, units = grad_h.shape
    width = d.shape[2]
    for e in range(cuda.grid(1), n_rows * units, cuda.gridsize(1)):
        n = e // units
        k = e - n * units
        acc = direct[n, k]
        for q in range(width):
            acc += d[n, t, q] * ut[q, k]
        grad_h[n, k] = acc


# ------------------------------------------------------------------------------------- host side
def _check(kernel_name, n_gates, **arrays):
    """(N, T, U) after the host checks (kernels/scalar.py recurrent_dims) of device arrays."""
    for name, a in arrays.items():
        if not hasattr(a, "copy_to_host"):
            raise ValueError(f"{kernel_name}: {name} must be a device array, got "
                             f"{type(a).__name__}")
    return scalar.recurrent_dims(kernel_name, n_gates, arrays)


def _steps(t_len, reverse, backward=False):
    """(s, t) of each processing step, in the order the pass runs them."""
    order = range(t_len - 1, -1, -1) if backward else range(t_len)
    return [(s, t_len - 1 - s if reverse else s) for s in order]


def _prev(first, seq, s):
    """(array, position) of the state before processing step s: ``first`` (N, U) seen as
    (N, 1, U) at s = 0, else seq[:, s - 1]."""
    if s == 0:
        return view(first, first.shape[0], 1, first.shape[1]), 0
    return seq, s - 1


def _transposed(u):
    """u.T in a scratch buffer (one launch)."""
    ut = scratch("rnn_ut", u.size, u.dtype, (u.shape[1], u.shape[0]))
    _transpose[grid_1d(u.size)](u, ut)
    return ut


def _weight_grad(hsave, d, accumulate, grad_u, grad_bias):
    """grad_u (and grad_bias, the column sums of d) = hsave.T @ d over all N*T rows (=, or +=
    with ``accumulate``): one dense weight-gradient GEMM."""
    dense_backward_weight(hsave, view(d, hsave.shape[0], grad_u.shape[1]), bool(accumulate),
                          grad_u, grad_bias)


def _empty_batch(accumulate, *grads):
    """The weight gradients of a batch of no rows: zero, or unchanged with ``accumulate``."""
    if not accumulate:
        for g in grads:
            fill(g, 0.0)


def _bias_sink(grad_u):
    """A scratch row for the bias gradient the dense GEMM also writes (SimpleRNN, LSTM)."""
    return scratch("rnn_bias_sink", grad_u.shape[1], grad_u.dtype)


def _backward_setup(n, t_len, u):
    """(hsave (N*T, U): h_{s-1} aligned with dA, direct (N, U), u.T, the grid of a step)."""
    units = u.shape[0]
    return (scratch("rnn_hsave", n * t_len * units, u.dtype, (n * t_len, units)),
            scratch("rnn_direct", n * units, u.dtype, (n, units)), _transposed(u),
            grid_1d(n * units))


@launcher
def simple_rnn_forward(xp, u, h0, mask, reverse, activation, pre, hs):
    """SimpleRNN forward (see kernels/cpu/rnn.py): one launch per step."""
    n, t_len, units = _check("simple_rnn_forward", 1, xp=xp, u=u, h0=h0, mask=mask, pre=pre,
                             hs=hs)
    code, alpha = scalar.activation_default_alpha(activation, pre, hs)
    if n == 0:
        return
    grid = grid_1d(n * units)
    for s, t in _steps(t_len, reverse):
        hp, sp = _prev(h0, hs, s)
        _rnn_step[grid](xp, u, hp, sp, mask, t, s, code, alpha, pre, hs)


@launcher
def simple_rnn_backward(u, h0, mask, reverse, activation, pre, hs, grad_hs, grad_hT, accumulate,
                        grad_xp, grad_u, grad_h0):
    """SimpleRNN BPTT: two launches per step, then the grad_u GEMM."""
    n, t_len, units = _check("simple_rnn_backward", 1, u=u, h0=h0, mask=mask, pre=pre, hs=hs,
                             grad_hs=grad_hs, grad_hT=grad_hT, grad_xp=grad_xp, grad_u=grad_u,
                             grad_h0=grad_h0)
    code, alpha = scalar.activation_default_alpha(activation, pre, hs)
    if n == 0:
        _empty_batch(accumulate, grad_u)
        return
    hsave, direct, ut, grid = _backward_setup(n, t_len, u)
    for s, t in _steps(t_len, reverse, backward=True):
        hp, sp = _prev(h0, hs, s)
        _rnn_grad_step[grid](hp, sp, mask, t, s, code, alpha, pre, hs, grad_hs,
                             grad_hT if s == t_len - 1 else grad_h0,
                             view(hsave, n, t_len, units), grad_xp, direct)
        _dh_prev[grid](grad_xp, t, ut, direct, grad_h0)
    _weight_grad(hsave, grad_xp, accumulate, grad_u, _bias_sink(grad_u))


@launcher
def lstm_forward(xp, u, h0, c0, mask, reverse, hs, cs, gates):
    """LSTM forward (see kernels/cpu/rnn.py): one launch per step."""
    n, t_len, units = _check("lstm_forward", 4, xp=xp, u=u, h0=h0, c0=c0, mask=mask, hs=hs,
                             cs=cs, gates=gates)
    if n == 0:
        return
    grid = grid_1d(n * units)
    for s, t in _steps(t_len, reverse):
        hp, sp = _prev(h0, hs, s)
        cp, _ = _prev(c0, cs, s)
        _lstm_step[grid](xp, u, hp, cp, sp, mask, t, s, hs, cs, gates)


@launcher
def lstm_backward(u, h0, c0, mask, reverse, hs, cs, gates, grad_hs, grad_hT, grad_cT, accumulate,
                  grad_xp, grad_u, grad_h0, grad_c0):
    """LSTM BPTT: two launches per step, then the grad_u GEMM."""
    n, t_len, units = _check("lstm_backward", 4, u=u, h0=h0, c0=c0, mask=mask, hs=hs, cs=cs,
                             gates=gates, grad_hs=grad_hs, grad_hT=grad_hT, grad_cT=grad_cT,
                             grad_xp=grad_xp, grad_u=grad_u, grad_h0=grad_h0, grad_c0=grad_c0)
    if n == 0:
        _empty_batch(accumulate, grad_u)
        return
    hsave, direct, ut, grid = _backward_setup(n, t_len, u)
    for s, t in _steps(t_len, reverse, backward=True):
        hp, sp = _prev(h0, hs, s)
        cp, _ = _prev(c0, cs, s)
        last = s == t_len - 1
        _lstm_grad_step[grid](hp, cp, sp, mask, t, s, cs, gates, grad_hs,
                              grad_hT if last else grad_h0, grad_cT if last else grad_c0,
                              view(hsave, n, t_len, units), grad_xp, direct, grad_c0)
        _dh_prev[grid](grad_xp, t, ut, direct, grad_h0)
    _weight_grad(hsave, grad_xp, accumulate, grad_u, _bias_sink(grad_u))


@launcher
def gru_forward(xp, u, u_bias, h0, mask, reverse, hs, gates):
    """GRU forward (see kernels/cpu/rnn.py): one launch per step."""
    n, t_len, units = _check("gru_forward", 3, xp=xp, u=u, u_bias=u_bias, h0=h0, mask=mask,
                             hs=hs, gates=gates)
    if n == 0:
        return
    grid = grid_1d(n * units)
    for s, t in _steps(t_len, reverse):
        hp, sp = _prev(h0, hs, s)
        _gru_step[grid](xp, u, u_bias, hp, sp, mask, t, s, hs, gates)


@launcher
def gru_backward(u, u_bias, h0, mask, reverse, hs, gates, grad_hs, grad_hT, accumulate, grad_xp,
                 grad_u, grad_u_bias, grad_h0):
    """GRU BPTT: two launches per step, then the grad_u / grad_u_bias GEMM."""
    n, t_len, units = _check("gru_backward", 3, u=u, u_bias=u_bias, h0=h0, mask=mask, hs=hs,
                             gates=gates, grad_hs=grad_hs, grad_hT=grad_hT, grad_xp=grad_xp,
                             grad_u=grad_u, grad_u_bias=grad_u_bias, grad_h0=grad_h0)
    if n == 0:
        _empty_batch(accumulate, grad_u, grad_u_bias)
        return
    hsave, direct, ut, grid = _backward_setup(n, t_len, u)
    drec = scratch("rnn_drec", n * t_len * 3 * units, u.dtype, (n, t_len, 3 * units))
    for s, t in _steps(t_len, reverse, backward=True):
        hp, sp = _prev(h0, hs, s)
        _gru_grad_step[grid](hp, sp, mask, t, s, gates, grad_hs,
                             grad_hT if s == t_len - 1 else grad_h0,
                             view(hsave, n, t_len, units), grad_xp, drec, direct)
        _dh_prev[grid](drec, t, ut, direct, grad_h0)
    _weight_grad(hsave, drec, accumulate, grad_u, grad_u_bias)
