"""CPU recurrent kernels (kernels/cpu/rnn.py): SimpleRNN, LSTM and GRU forward and BPTT backward
against the float64 references (tests/reference.py) in both dtypes with poisoned outputs, edge
shapes (T, N or U of 1), masks with leading, interior and trailing masked steps and a fully
masked sample, reverse, non-zero initial states, accumulate on and off, the parallel row-block
path; every backward output against central finite differences in float64; against
torch.nn.RNN / LSTM / GRU with the Keras weights mapped, when torch is installed."""
import numba
import numpy as np
import pytest
from conftest import accumulate_runs, accumulated, assert_close, poisoned

import rnn_cases as rc
from numbanet.backend import kernel_names
from numbanet.kernels import scalar
from numbanet.kernels.cpu import rnn as K
from numbanet.testing import assert_gradients_close, numeric_gradient

DTYPES = [np.float32, np.float64]
SHAPES = [(3, 5, 4), (1, 1, 1), (2, 1, 3), (1, 4, 1)]      # (N, T, U)


def forward(cell, d, dtype):
    """Run the forward kernel into poisoned outputs; the outputs by name."""
    n, t = d["mask"].shape
    units = d["u"].shape[0]
    outs = [poisoned(s, dtype) for s, _ in rc.out_shapes(cell, rc.FWD_OUTS[cell], n, t, units,
                                                         dtype)]
    getattr(K, f"{cell}_forward")(*[d[a] for a in rc.FWD_ARGS[cell]], *outs)
    return dict(zip(rc.FWD_OUTS[cell], outs))


def backward_runs(cell, d, dtype, rng):
    """The backward kernel run with accumulate off and on (conftest.accumulate_runs): (outputs
    off, previous contents, outputs on), each by name."""
    n, t = d["mask"].shape
    units = d["u"].shape[0]
    names = rc.BWD_OUTS[cell]
    params = [k for k, name in enumerate(names) if name in rc.PARAM_GRADS]
    off, prev, on = accumulate_runs(getattr(K, f"{cell}_backward"),
                                    [d[a] for a in rc.BWD_ARGS[cell]],
                                    rc.out_shapes(cell, names, n, t, units, dtype), params, rng)
    return dict(zip(names, off)), dict(zip(names, prev)), dict(zip(names, on))


def check_cell(cell, d, dtype, rng, what):
    """Forward and backward (accumulate off and on) against the float64 reference."""
    d.update(forward(cell, d, dtype))
    want = rc.reference_forward(cell, d)
    for name in rc.FWD_OUTS[cell]:
        assert_close(d[name], want[name], dtype, f"{what} {name}")
    off, prev, on = backward_runs(cell, d, dtype, rng)
    want = rc.reference_backward(cell, d)
    names = rc.BWD_OUTS[cell]
    for name, got, w in zip(names, [on[k] for k in names],
                            accumulated([prev[k] for k in names], [want[k] for k in names])):
        assert_close(off[name], want[name], dtype, f"{what} {name}")
        assert_close(got, w, dtype, f"{what} {name} accumulate")


def test_public_names_match_the_contract():
    assert kernel_names(K) == ["gru_backward", "gru_forward", "lstm_backward", "lstm_forward",
                               "simple_rnn_backward", "simple_rnn_forward"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("cell", rc.CELLS)
def test_masked_sequences_match_reference(cell, reverse, dtype, rng):
    d = rc.inputs(cell, rng, 3, 5, 4, dtype, rc.MASK_3x5, reverse)
    check_cell(cell, d, dtype, rng, f"{cell} reverse={reverse}")
    # the fully masked sample keeps its initial states and passes every gradient through
    n = 2
    np.testing.assert_array_equal(d["hs"][n], np.broadcast_to(d["h0"][n], d["hs"][n].shape))
    grads = backward_runs(cell, d, dtype, rng)[0]
    assert not grads["grad_xp"][n].any()
    assert_close(grads["grad_h0"][n], d["grad_hT"][n].astype(np.float64)
                 + d["grad_hs"][n].astype(np.float64).sum(axis=0), dtype, "grad_h0")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("cell", rc.CELLS)
def test_edge_shapes_match_reference(cell, shape, dtype, rng):
    n, t, units = shape
    mask = np.ones((n, t))
    mask[0, -1] = 0 if t > 1 else 1             # a trailing masked step where there is room
    d = rc.inputs(cell, rng, n, t, units, dtype, mask, reverse=t % 2 == 0)
    check_cell(cell, d, dtype, rng, f"{cell} {shape}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", scalar.ACTIVATION_CODES)
def test_simple_rnn_activations(activation, dtype, rng):
    code = scalar.ACTIVATION_CODES.index(activation)
    d = rc.inputs("simple_rnn", rng, 3, 5, 4, dtype, rc.MASK_3x5, True, code)
    check_cell("simple_rnn", d, dtype, rng, activation)


@pytest.mark.parametrize("cell", rc.CELLS)
def test_parallel_row_blocks(cell, rng, monkeypatch):
    """Blocks of one row on the threads: the reference's results, bit for bit those of the
    serial path, and the same bits on 1 or 2 threads."""
    d = rc.inputs(cell, rng, 5, 6, 7, np.float64, np.ones((5, 6)), True)
    d["mask"][1, 2] = d["mask"][4, 0] = 0
    serial = forward(cell, dict(d), np.float64)
    monkeypatch.setattr(K, "_MIN_ROWS", 1)
    monkeypatch.setattr(K, "_MIN_WORK", 0)
    assert K._blocks(5, 6, 1, 7) == 5
    check_cell(cell, d, np.float64, rng, f"{cell} in blocks")
    runs = []
    for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
        numba.set_num_threads(threads)
        try:
            runs.append((forward(cell, dict(d), np.float64), backward_runs(cell, d, np.float64,
                                                                            rng)[0]))
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    for name in rc.FWD_OUTS[cell]:
        np.testing.assert_array_equal(runs[0][0][name], serial[name], name)
        np.testing.assert_array_equal(runs[1][0][name], runs[0][0][name], name)
    for name in rc.BWD_OUTS[cell]:
        np.testing.assert_array_equal(runs[1][1][name], runs[0][1][name], name)


@pytest.mark.parametrize("cell", rc.CELLS)
def test_empty_batch(cell, rng):
    d = rc.inputs(cell, rng, 0, 3, 2, np.float64)
    d.update(forward(cell, d, np.float64))
    off, prev, on = backward_runs(cell, d, np.float64, rng)
    for name in rc.BWD_OUTS[cell]:
        if name in rc.PARAM_GRADS:
            np.testing.assert_array_equal(off[name], 0.0)
            np.testing.assert_array_equal(on[name], prev[name])


# ----------------------------------------------------------------------------------- gradients
FD_INPUTS = {"simple_rnn": ("xp", "u", "h0"), "lstm": ("xp", "u", "h0", "c0"),
             "gru": ("xp", "u", "u_bias", "h0")}


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("cell", rc.CELLS)
def test_backward_matches_finite_differences(cell, reverse, rng):
    """Every backward output is the gradient of L = sum(hs * grad_hs) + sum(h_T * grad_hT)
    (+ sum(c_T * grad_cT) for the LSTM), by central differences in float64."""
    mask = np.array([[1, 0, 1, 1], [0, 1, 1, 0]])
    d = rc.inputs(cell, rng, 2, 4, 3, np.float64, mask, reverse,
                  scalar.ACTIVATION_CODES.index("softplus"))
    finals = [(g, seq) for g, seq in rc.FINAL.items() if g in rc.BWD_ARGS[cell]]

    def loss():
        out = forward(cell, d, np.float64)
        return np.sum(out["hs"] * d["grad_hs"]) + sum(np.sum(out[seq][:, -1] * d[g])
                                                      for g, seq in finals)
    d.update(forward(cell, d, np.float64))
    grads = backward_runs(cell, d, np.float64, rng)[0]
    for name in FD_INPUTS[cell]:
        key = "grad_" + name if name != "xp" else "grad_xp"
        assert_gradients_close(grads[key], numeric_gradient(loss, d[name]), f"{cell} {name}")
    if cell == "simple_rnn":       # tanh, the default, as well
        d["activation"] = rc.TANH
        d.update(forward(cell, d, np.float64))
        grads = backward_runs(cell, d, np.float64, rng)[0]
        assert_gradients_close(grads["grad_u"], numeric_gradient(loss, d["u"]), "tanh u")


# ----------------------------------------------------------------------------------- torch
def _torch_gate_order(cell, m, units):
    """Keras gate columns of m (..., G*U) in torch's row order (GRU: z, r, h -> r, z, n)."""
    if cell != "gru":
        return m
    return np.concatenate([m[..., units:2 * units], m[..., :units], m[..., 2 * units:]], axis=-1)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("cell", rc.CELLS)
def test_against_torch(cell, reverse, rng):
    """Outputs, final states and every gradient (x, kernel, bias, recurrent kernel and bias,
    initial states) of torch.nn.RNN / LSTM / GRU (batch_first, float64) with the Keras weights
    mapped; go_backwards is torch on the time-reversed input. The input projection is the
    layer's GEMM (here NumPy): xp = x @ kernel + bias, dx = grad_xp @ kernel.T, ..."""
    torch = pytest.importorskip("torch")
    n, t, i, units = 3, 5, 4, 3
    g = rc.GATES[cell]
    x = rng.standard_normal((n, t, i))
    kernel = rng.standard_normal((i, g * units)) / 2
    bias = rng.standard_normal(g * units) / 2
    d = rc.inputs(cell, rng, n, t, units, np.float64, None, reverse)
    d["xp"] = x @ kernel + bias
    d.update(forward(cell, d, np.float64))
    grads = backward_runs(cell, d, np.float64, rng)[0]

    mod = {"simple_rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](
        i, units, batch_first=True, dtype=torch.float64)
    rec_bias = d["u_bias"] if cell == "gru" else np.zeros(g * units)
    with torch.no_grad():
        mod.weight_ih_l0.copy_(torch.tensor(_torch_gate_order(cell, kernel, units).T))
        mod.weight_hh_l0.copy_(torch.tensor(_torch_gate_order(cell, d["u"], units).T))
        mod.bias_ih_l0.copy_(torch.tensor(_torch_gate_order(cell, bias, units)))
        mod.bias_hh_l0.copy_(torch.tensor(_torch_gate_order(cell, rec_bias, units)))
    tx = torch.tensor(x[:, ::-1].copy() if reverse else x, requires_grad=True)
    states = [torch.tensor(d["h0"][None], requires_grad=True)]
    if cell == "lstm":
        states.append(torch.tensor(d["c0"][None], requires_grad=True))
    out, final = mod(tx, tuple(states) if cell == "lstm" else states[0])
    final = final if cell == "lstm" else (final,)
    loss = (out * torch.tensor(d["grad_hs"])).sum() + (final[0][0] * torch.tensor(
        d["grad_hT"])).sum()
    if cell == "lstm":
        loss = loss + (final[1][0] * torch.tensor(d["grad_cT"])).sum()
    loss.backward()

    def close(got, want, what):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12, err_msg=f"{cell} {what}")
    close(d["hs"], out.detach().numpy(), "outputs")
    close(d["hs"][:, -1], final[0][0].detach().numpy(), "final h")
    if cell == "lstm":
        close(d["cs"][:, -1], final[1][0].detach().numpy(), "final c")
    gxp = grads["grad_xp"]
    gx = gxp @ kernel.T
    close(gx[:, ::-1] if reverse else gx, tx.grad.numpy(), "grad x")
    close(_torch_gate_order(cell, np.einsum("nti,ntg->ig", x, gxp), units).T,
          mod.weight_ih_l0.grad.numpy(), "grad kernel")
    close(_torch_gate_order(cell, gxp.sum(axis=(0, 1)), units), mod.bias_ih_l0.grad.numpy(),
          "grad bias")
    close(_torch_gate_order(cell, grads["grad_u"], units).T, mod.weight_hh_l0.grad.numpy(),
          "grad recurrent kernel")
    rec_grad = grads["grad_u_bias"] if cell == "gru" else gxp.sum(axis=(0, 1))
    close(_torch_gate_order(cell, rec_grad, units), mod.bias_hh_l0.grad.numpy(),
          "grad recurrent bias")
    close(grads["grad_h0"], states[0].grad.numpy()[0], "grad h0")
    if cell == "lstm":
        close(grads["grad_c0"], states[1].grad.numpy()[0], "grad c0")


# ----------------------------------------------------------------------------------- stability
def test_saturated_gates_stay_finite(rng):
    """Huge pre-activations saturate the gates without NaN or Inf (float32 and float64)."""
    for dtype in DTYPES:
        for cell in rc.CELLS:
            d = rc.inputs(cell, rng, 2, 3, 2, dtype)
            d["xp"] = (d["xp"] * 1e30).astype(dtype)
            d.update(forward(cell, d, dtype))
            grads = backward_runs(cell, d, dtype, rng)[0]
            for name, a in list(d.items()) + list(grads.items()):
                if isinstance(a, np.ndarray):
                    assert np.isfinite(a).all(), (cell, dtype, name)


@numba.njit
def _vector_maths(x, sig, th):
    for i in range(x.size):
        sig[i] = K._sigmoid(x[i])
        th[i] = K._tanh(x[i])


def test_vectorized_sigmoid_and_tanh_match_libm():
    """kernels/scalar.py sigmoid_v / tanh_v (compiled as the kernels use them, and as plain
    Python) against the math-module versions: within 2 float64 ulps where the result is above
    1e-37, within 1e-37 beyond, NaN in NaN out."""
    x = np.concatenate([np.linspace(-90, 90, 20001), np.geomspace(1e-300, 1e3, 2000),
                        -np.geomspace(1e-300, 1e3, 2000), [0.0, np.inf, -np.inf]])
    sig, th = np.empty_like(x), np.empty_like(x)
    _vector_maths(x, sig, th)
    want_sig = np.array([scalar.sigmoid(v) for v in x])
    inside = x > -85
    np.testing.assert_allclose(sig[inside], want_sig[inside], rtol=4.5e-16, atol=0)
    np.testing.assert_allclose(sig[~inside], want_sig[~inside], rtol=0, atol=1e-37)
    np.testing.assert_allclose(th, np.tanh(x), rtol=4.5e-16, atol=0)
    np.testing.assert_array_equal([scalar.sigmoid_v(v) for v in x[::97]], sig[::97])
    np.testing.assert_array_equal([scalar.tanh_v(v) for v in x[::97]], th[::97])
    _vector_maths(np.array([np.nan]), sig[:1], th[:1])
    assert np.isnan(sig[0]) and np.isnan(th[0])
    assert np.isnan(scalar.sigmoid_v(np.nan)) and np.isnan(scalar.tanh_v(np.nan))


def test_float32_sigmoid_and_tanh():
    """The float32 twins (sigmoid_v32, tanh_v32: what the kernels use on float32 arrays) within
    2 float32 ulps of the exact values above 1e-37, within 1e-37 below; NaN in NaN out."""
    x = np.concatenate([np.linspace(-90, 90, 200001), np.geomspace(1e-38, 1e3, 20000),
                        -np.geomspace(1e-38, 1e3, 20000), [0.0, np.inf, -np.inf, np.nan]])
    x = x.astype(np.float32)
    sig, th = np.empty_like(x), np.empty_like(x)
    _vector_maths(x, sig, th)
    assert sig.dtype == np.float32
    want_sig = np.array([scalar.sigmoid(v) for v in x[:-1].astype(np.float64)])
    want_th = np.tanh(x[:-1].astype(np.float64))
    big = want_sig > 1e-37
    eps = float(np.finfo(np.float32).eps)
    np.testing.assert_allclose(sig[:-1][big], want_sig[big], rtol=2 * eps, atol=0)
    np.testing.assert_allclose(sig[:-1][~big], want_sig[~big], rtol=0, atol=1e-37)
    np.testing.assert_allclose(th[:-1], want_th, rtol=2 * eps, atol=0)
    assert np.isnan(sig[-1]) and np.isnan(th[-1])
    np.testing.assert_array_equal([scalar.sigmoid_v32(v) for v in x[::97]], sig[::97])
    np.testing.assert_array_equal([scalar.tanh_v32(v) for v in x[::97]], th[::97])


# ----------------------------------------------------------------------------------- bad arguments
def test_bad_arguments_raise(rng):
    d = rc.inputs("lstm", rng, 2, 3, 4, np.float32)
    d.update(forward("lstm", d, np.float32))
    args = [d[a] for a in rc.FWD_ARGS["lstm"]] + [d[o] for o in rc.FWD_OUTS["lstm"]]
    names = rc.FWD_ARGS["lstm"] + rc.FWD_OUTS["lstm"]

    def call(**change):
        K.lstm_forward(*[change.get(nm, a) for nm, a in zip(names, args)])
    cases = [
        (dict(xp=d["xp"][:, :, :-1].copy()), r"lstm_forward: xp must have shape \(N, T, G\*U\)"),
        (dict(u=np.zeros((4, 12), np.float32)), r"lstm_forward: u must have shape \(U, G\*U\)"),
        (dict(h0=np.zeros((3, 4), np.float32)), r"lstm_forward: h0 must have shape"),
        (dict(mask=np.ones((2, 2), np.float32)), r"lstm_forward: xp must have shape"),
        (dict(gates=np.zeros((2, 3, 12), np.float32)), r"lstm_forward: gates must have shape"),
        (dict(cs=np.zeros((2, 3, 4), np.float64)), r"lstm_forward: cs must be float32 like u"),
        (dict(hs=np.zeros((2, 4, 3), np.float32).transpose(0, 2, 1)),
         r"lstm_forward: hs must be C-contiguous"),
        (dict(mask=np.ones((2, 0), np.float32)), r"lstm_forward: needs T >= 1"),
        (dict(c0=[[0.0] * 4] * 2), r"lstm_forward: c0 must be a NumPy array"),
    ]
    for change, message in cases:
        with pytest.raises(ValueError, match=message):
            call(**change)
    r = rc.inputs("simple_rnn", rng, 2, 3, 4, np.float32)
    for code in (-1, len(scalar.ACTIVATION_CODES), 1.0, True):
        with pytest.raises(ValueError, match="activation must be an int code"):
            K.simple_rnn_forward(r["xp"], r["u"], r["h0"], r["mask"], False, code,
                                 np.empty((2, 3, 4), np.float32), np.empty((2, 3, 4), np.float32))
    g = rc.inputs("gru", rng, 2, 3, 4, np.float64)
    g.update(forward("gru", g, np.float64))
    with pytest.raises(ValueError, match=r"gru_backward: grad_u_bias must have shape \(G\*U\)"):
        K.gru_backward(*[g[a] for a in rc.BWD_ARGS["gru"]], False,
                       np.empty((2, 3, 12)), np.empty((4, 12)), np.empty(13), np.empty((2, 4)))
