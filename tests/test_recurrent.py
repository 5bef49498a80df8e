"""Recurrent layers: SimpleRNN, LSTM, GRU and Bidirectional against torch.nn.RNN / LSTM / GRU with
the weights mapped, against central differences, with masks, ragged lengths, initial states,
go_backwards, return_state, variable time axes; a sequence classifier that needs memory."""
import numpy as np
import pytest

import numbanet as nb
from numbanet.testing import gradcheck

L = nb.layers
KINDS = {"SimpleRNN": (L.SimpleRNN, 1), "LSTM": (L.LSTM, 2), "GRU": (L.GRU, 1)}


def _torch_module(kind, layer, torch, bidirectional=None):
    """The torch twin of ``layer`` (and of ``bidirectional``'s backward layer) with its weights."""
    u = layer.units
    d = layer.input_shape[1]
    cls = {"SimpleRNN": torch.nn.RNN, "LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU}[kind]
    mod = cls(d, u, batch_first=True, bidirectional=bidirectional is not None).double()

    def weights(l):
        k, r = np.asarray(l.params["kernel"]), np.asarray(l.params["recurrent_kernel"])
        b = np.asarray(l.params["bias"])
        if kind == "GRU":           # Keras z, r, h -> torch r, z, n
            order = np.r_[u:2 * u, 0:u, 2 * u:3 * u]
            return k[:, order].T, r[:, order].T, b[0][order], b[1][order]
        return k.T, r.T, b, np.zeros_like(b)

    pairs = [("", layer)] + ([("_reverse", bidirectional)] if bidirectional is not None else [])
    with torch.no_grad():
        for suffix, l in pairs:
            wi, wh, bi, bh = weights(l)
            getattr(mod, "weight_ih_l0" + suffix).copy_(torch.tensor(np.ascontiguousarray(wi)))
            getattr(mod, "weight_hh_l0" + suffix).copy_(torch.tensor(np.ascontiguousarray(wh)))
            getattr(mod, "bias_ih_l0" + suffix).copy_(torch.tensor(bi))
            getattr(mod, "bias_hh_l0" + suffix).copy_(torch.tensor(bh))
    return mod


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("backwards", [False, True], ids=["forward", "go_backwards"])
def test_rnn_matches_torch_outputs_states_and_every_gradient(kind, backwards, rng):
    torch = pytest.importorskip("torch")
    cls, n_states = KINDS[kind]
    nb.seed(1)
    layer = cls(4, return_sequences=True, return_state=True, go_backwards=backwards,
                dtype="float64")
    x = rng.standard_normal((3, 5, 2))
    states0 = [rng.standard_normal((3, 4)) * 0.5 for _ in range(n_states)]
    xt = nb.ops.convert_to_tensor(x)
    st = [nb.ops.convert_to_tensor(s) for s in states0]
    with nb.GradientTape() as tape:
        tape.watch([xt] + st)
        outs = layer(xt, initial_state=st if n_states > 1 else st[0])
        gs = [rng.standard_normal(o.shape) for o in outs]
        loss = sum(nb.ops.sum(o * g) for o, g in zip(outs, gs))
    grads = tape.gradient(loss, [xt] + st + layer.trainable_weights)
    mod = _torch_module(kind, layer, torch)
    tx = torch.tensor(x[:, ::-1].copy() if backwards else x, requires_grad=True)
    ts = [torch.tensor(s[None], requires_grad=True) for s in states0]
    tseq, tfinal = mod(tx, tuple(ts) if n_states > 1 else ts[0])
    tfinal = list(tfinal) if n_states > 1 else [tfinal]
    np.testing.assert_allclose(np.asarray(outs[0]), tseq.detach().numpy(), rtol=1e-10, atol=1e-12)
    for o, t in zip(outs[1:], tfinal):
        np.testing.assert_allclose(np.asarray(o), t[0].detach().numpy(), rtol=1e-10, atol=1e-12)
    tloss = (tseq * torch.tensor(gs[0])).sum() + sum(
        (t[0] * torch.tensor(g)).sum() for t, g in zip(tfinal, gs[1:]))
    tloss.backward()
    gx = tx.grad.numpy()[:, ::-1] if backwards else tx.grad.numpy()
    np.testing.assert_allclose(np.asarray(grads[0]), gx, rtol=1e-9, atol=1e-12)
    for g, t in zip(grads[1:1 + n_states], ts):
        np.testing.assert_allclose(np.asarray(g), t.grad.numpy()[0], rtol=1e-9, atol=1e-12)
    names = dict(zip(["kernel", "recurrent_kernel", "bias"], grads[1 + n_states:]))
    u = layer.units
    tw = {"kernel": mod.weight_ih_l0.grad.numpy().T, "recurrent_kernel":
          mod.weight_hh_l0.grad.numpy().T, "bias": mod.bias_ih_l0.grad.numpy()}
    if kind == "GRU":
        back = np.argsort(np.r_[u:2 * u, 0:u, 2 * u:3 * u])
        tw = {"kernel": tw["kernel"][:, back], "recurrent_kernel":
              tw["recurrent_kernel"][:, back],
              "bias": np.stack([tw["bias"][back], mod.bias_hh_l0.grad.numpy()[back]])}
    for k, g in names.items():
        np.testing.assert_allclose(np.asarray(g), tw[k], rtol=1e-9, atol=1e-12, err_msg=k)


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("sequences", [True, False], ids=["sequences", "last"])
def test_rnn_gradients_match_central_differences_with_masks(kind, sequences, rng):
    """Every weight and every unmasked input against central differences, through a Masking
    layer (steps 2-3 of sample 0 and step 3 of sample 1 masked) and initial states computed from
    the input (so their gradients flow back too)."""
    cls, n_states = KINDS[kind]
    nb.seed(4)
    inp = nb.Input((4, 2), dtype="float64")
    first = L.Dense(3, activation="tanh", dtype="float64")(nb.ops.mean(inp, axis=1))
    out = cls(3, return_sequences=sequences, dtype="float64")(
        L.Masking(dtype="float64")(inp), initial_state=[first] * n_states if n_states > 1
        else first)
    model = nb.Model(inp, out)
    x = rng.standard_normal((2, 4, 2))
    x[0, 2:] = 0.0
    x[1, 3] = 0.0
    g = rng.standard_normal((2,) + tuple(model.output_shape))
    xt = nb.ops.convert_to_tensor(x)
    with nb.GradientTape() as tape:
        tape.watch(xt)
        loss = nb.ops.sum(model(xt) * g)
    grads = tape.gradient(loss, [xt] + model.trainable_weights)

    def f():
        return float(np.sum(np.asarray(model(x)) * g))
    numeric_x = nb.testing.numeric_gradient(f, x)
    keep = np.any(x != 0, axis=2)[:, :, None] * np.ones_like(x, dtype=bool)
    np.testing.assert_allclose(np.asarray(grads[0])[keep], numeric_x[keep], rtol=1e-5,
                               atol=1e-7)
    for v, gv in zip(model.trainable_weights, grads[1:]):
        nb.testing.assert_gradients_close(np.asarray(gv),
                                          nb.testing.numeric_gradient(f, v.value), v.name)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_post_padded_sequences_end_like_the_unpadded_ones(kind, rng):
    cls, _ = KINDS[kind]
    nb.seed(2)
    emb = L.Embedding(9, 3, mask_zero=True, dtype="float64")
    rnn = cls(4, dtype="float64")
    lengths = [5, 2, 3]
    ids = np.zeros((3, 6), np.int64)
    for i, n in enumerate(lengths):
        ids[i, :n] = rng.integers(1, 9, n)
    last = np.asarray(rnn(emb(ids)))
    for i, n in enumerate(lengths):
        alone = np.asarray(rnn(emb(ids[i:i + 1, :n])))
        np.testing.assert_allclose(last[i], alone[0], rtol=1e-12, atol=1e-14)
    torch = pytest.importorskip("torch")
    mod = _torch_module(kind, rnn, torch)
    e = torch.tensor(np.asarray(emb(ids)))
    packed = torch.nn.utils.rnn.pack_padded_sequence(e, lengths, batch_first=True,
                                                     enforce_sorted=False)
    _, h = mod(packed)
    h = h[0] if kind == "LSTM" else h
    np.testing.assert_allclose(last, h[0].detach().numpy(), rtol=1e-10, atol=1e-12)


def test_bidirectional_matches_two_torch_directions(rng):
    torch = pytest.importorskip("torch")
    for kind in sorted(KINDS):
        cls, n_states = KINDS[kind]
        nb.seed(3)
        bi = L.Bidirectional(cls(3, return_sequences=True), dtype="float64")
        x = rng.standard_normal((2, 4, 5))
        xt = nb.ops.convert_to_tensor(x)
        with nb.GradientTape() as tape:
            tape.watch(xt)
            out = bi(xt)
            g = rng.standard_normal(out.shape)
            loss = nb.ops.sum(out * g)
        grads = tape.gradient(loss, [xt] + bi.trainable_weights)
        assert out.shape == (2, 4, 6)
        assert [v.name for v in bi.trainable_weights][:1] == [
            f"{bi.forward_layer.name}/kernel"]
        mod = _torch_module(kind, bi.forward_layer, torch, bi.backward_layer)
        tx = torch.tensor(x, requires_grad=True)
        tout = mod(tx)[0]
        np.testing.assert_allclose(np.asarray(out), tout.detach().numpy(), rtol=1e-10,
                                   atol=1e-12)
        (tout * torch.tensor(g)).sum().backward()
        np.testing.assert_allclose(np.asarray(grads[0]), tx.grad.numpy(), rtol=1e-9,
                                   atol=1e-12)
        for mode, want in (("sum", lambda f, b: f + b), ("ave", lambda f, b: (f + b) / 2),
                           ("mul", lambda f, b: f * b)):
            m = L.Bidirectional(cls(3, return_sequences=True), merge_mode=mode,
                                dtype="float64")
            both = L.Bidirectional(cls(3, return_sequences=True), merge_mode=None,
                                   dtype="float64")
            m(x)
            both(x)
            both.set_weights = None
            for a, b in zip(both.forward_layer.weights + both.backward_layer.weights,
                            m.forward_layer.weights + m.backward_layer.weights):
                a.assign(b.numpy())
            f, b = (np.asarray(t) for t in both(x))
            np.testing.assert_allclose(np.asarray(m(x)), want(f, b), rtol=1e-12)


def test_variable_time_axis_and_state_outputs(rng):
    inp = nb.Input((None, 3))
    seq, h, c = L.LSTM(4, return_sequences=True, return_state=True)(inp)
    out = L.Dense(1)(L.Concatenate()([h, c]))
    model = nb.Model(inp, [out, seq])
    assert model.output_shape == [(1,), (None, 4)]
    for t in (2, 7):
        o, s = model.predict(rng.standard_normal((5, t, 3)).astype(np.float32))
        assert o.shape == (5, 1) and s.shape == (5, t, 4)


def test_initial_state_in_a_functional_graph(rng, tmp_path):
    enc_in, dec_in = nb.Input((None, 3), name="enc"), nb.Input((None, 3), name="dec")
    _, h, c = L.LSTM(5, return_state=True, name="encoder")(enc_in)
    dec = L.LSTM(5, return_sequences=True, name="decoder")(dec_in, initial_state=[h, c])
    model = nb.Model([enc_in, dec_in], L.Dense(2, name="head")(dec))
    model.compile("adam", "mse")
    xe, xd = rng.standard_normal((8, 4, 3)), rng.standard_normal((8, 6, 3))
    y = rng.standard_normal((8, 6, 2))
    history = model.fit([xe, xd], y, epochs=3, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    enc_before = np.array(model.get_layer("encoder").params["kernel"])
    model.fit([xe, xd], y, epochs=1, verbose=0)      # the encoder learns through the states
    assert not np.array_equal(enc_before, model.get_layer("encoder").params["kernel"])
    model.save(tmp_path / "seq2seq.npz")
    loaded = nb.load_model(tmp_path / "seq2seq.npz")
    np.testing.assert_array_equal(loaded.predict([xe, xd]), model.predict([xe, xd]))


def test_recurrent_weights_layout_and_bad_arguments():
    lstm = L.LSTM(3)
    lstm.build((None, 2))
    assert [(v.name.split("/")[1], v.shape) for v in lstm.trainable_weights] == [
        ("kernel", (2, 12)), ("recurrent_kernel", (3, 12)), ("bias", (12,))]
    b = np.asarray(lstm.params["bias"])
    np.testing.assert_array_equal(b[3:6], 1.0)                  # unit_forget_bias
    np.testing.assert_array_equal(np.r_[b[:3], b[6:]], 0.0)
    gru = L.GRU(3)
    gru.build((None, 2))
    assert gru.params["bias"].shape == (2, 9)
    with pytest.raises(ValueError, match="units must be a positive integer"):
        L.LSTM(0)
    with pytest.raises(ValueError, match="reset_after=True"):
        L.GRU(3, reset_after=False)
    with pytest.raises(ValueError, match=r"expects \(batch, time, features\)"):
        L.SimpleRNN(2)(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"initial_state arrays must have shape \(2, 3\)"):
        L.GRU(3)(np.ones((2, 4, 1), np.float32), initial_state=np.ones((2, 2), np.float32))


def test_bidirectional_gru_classifier_learns_a_task_that_needs_memory(rng):
    """The class is the token at position 1 of a 20-step sequence of noise tokens; the model
    must carry it to the end."""
    n, t = 1200, 20
    ids = rng.integers(3, 12, (n, t))
    y = rng.integers(0, 2, n)
    ids[:, 1] = y + 1                                  # token 1 or 2 decides the class
    nb.seed(0)
    inp = nb.Input((None,), dtype="int64")
    x = L.Embedding(12, 8, mask_zero=True)(inp)
    x = L.Bidirectional(L.GRU(16))(x)
    model = nb.Model(inp, L.Dense(2, activation="softmax")(x))
    model.compile(nb.optimizers.Adam(1e-2), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(ids[:1000], y[:1000], epochs=6, batch_size=50, verbose=0, seed=0)
    assert model.evaluate(ids[1000:], y[1000:])["accuracy"] >= 0.95
