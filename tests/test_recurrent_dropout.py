"""Input dropout of SimpleRNN, LSTM and GRU (Keras' ``dropout=``): in training one mask per
sequence and feature, shape (batch, 1, features), the same at every step, kept values scaled by
1 / (1 - rate); the identity in inference. Checked against the same layer without dropout (and
torch's RNN modules) on the masked inputs, against central differences with the draw replayed,
with masks, initial states, return_state, go_backwards and Bidirectional, in a trained, saved and
loaded model, and on the CUDA backend (Numba's simulator)."""
import numpy as np
import pytest
from test_recurrent import KINDS, _torch_module

import numbanet as nb
from numbanet.testing import assert_gradients_close, gradcheck, numeric_gradient

L = nb.layers


def plain_twin(layer, **kw):
    """A layer of ``layer``'s class, configuration and weights without dropout."""
    config = {**layer.get_config(), "dropout": 0.0, "seed": None, "name": None, **kw}
    twin = type(layer).from_config(config)
    twin.build(layer.input_shape)
    twin.set_weights(layer.get_weights())
    return twin


def replay(layers, fn):
    """``fn`` with the generators of ``layers`` reset to their present states before every call,
    so each call draws the same masks (for central differences)."""
    states = [l.rng_state() for l in layers]

    def run(*args):
        for l, s in zip(layers, states):
            l.set_rng_state(s)
        return fn(*args)
    return run


def tape_grads(fn, x, weights, g):
    """Tape gradients of sum(fn(x) * g) for x and ``weights``, in training."""
    xt = nb.ops.convert_to_tensor(x)
    with nb.GradientTape() as tape:
        tape.watch(xt)
        out = fn(xt)
        outs = list(out) if isinstance(out, (list, tuple)) else [out]
        loss = sum(nb.ops.sum(o * gi) for o, gi in zip(outs, g))
    return [np.asarray(v) for v in tape.gradient(loss, [xt] + list(weights))]


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("backwards", [False, True], ids=["forward", "go_backwards"])
def test_training_output_is_the_layer_without_dropout_on_masked_inputs(kind, backwards, rng):
    """Outputs and final states equal the plain layer's on x * mask and torch's module on the
    same; the input gradient is the plain layer's times the mask, the weight gradients equal."""
    torch = pytest.importorskip("torch")
    cls, n_states = KINDS[kind]
    layer = cls(4, return_sequences=True, return_state=True, go_backwards=backwards,
                dropout=0.4, seed=int(rng.integers(1000)), dtype="float64")
    x = rng.standard_normal((5, 6, 3))
    layer.build((None, 3))
    got = replay([layer], lambda t: layer(t, training=True))      # the same draw every call
    outs = got(x)
    mask = np.asarray(layer.dropout_mask)
    assert mask.shape == (5, 1, 3)
    assert set(np.unique(mask)) <= {0.0, 1 / 0.6}
    twin = plain_twin(layer)
    want = twin(x * mask, training=True)
    for o, w in zip(outs, want):
        np.testing.assert_array_equal(np.asarray(o), np.asarray(w))
    mod = _torch_module(kind, layer, torch)
    xm = x * mask
    tseq = mod(torch.tensor(xm[:, ::-1].copy() if backwards else xm))[0].detach().numpy()
    np.testing.assert_allclose(np.asarray(outs[0]), tseq, rtol=1e-10, atol=1e-12)
    g = [rng.standard_normal(o.shape) for o in outs]
    grads = tape_grads(got, x, layer.trainable_weights, g)
    plain = tape_grads(lambda t: twin(t, training=True), xm, twin.trainable_weights, g)
    np.testing.assert_allclose(grads[0], plain[0] * mask, rtol=1e-12, atol=1e-14)
    for a, b in zip(grads[1:], plain[1:]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_one_mask_for_every_step_with_dropouts_statistics(rng):
    """A linear SimpleRNN with an identity kernel and no recurrence outputs x * mask at each
    step: the same mask at every step; about ``rate`` of the entries dropped, the rest scaled by
    1 / (1 - rate), mean 1."""
    n, t, d, rate = 4000, 3, 8, 0.3
    layer = L.SimpleRNN(d, activation="linear", recurrent_initializer="zeros", dropout=rate,
                        return_sequences=True, seed=5)
    layer.build((None, d))
    layer.set_weights([np.eye(d, dtype=np.float32), np.zeros((d, d), np.float32),
                       np.zeros(d, np.float32)])
    x = rng.uniform(0.5, 1.5, (n, t, d)).astype(np.float32)
    out = np.asarray(layer(x, training=True))
    mask = np.asarray(layer.dropout_mask)
    np.testing.assert_allclose(out, x * mask, rtol=1e-6)
    per_step = out / x
    for s in range(1, t):
        np.testing.assert_allclose(per_step[:, s], per_step[:, 0], rtol=1e-6)
    keep = np.float32(1.0) / np.float32(1.0 - rate)
    assert set(np.unique(mask)) == {0.0, keep}
    dropped = np.mean(mask == 0.0)
    sigma = np.sqrt(rate * (1 - rate) / mask.size)
    assert abs(dropped - rate) < 5 * sigma
    assert abs(mask.mean() - 1.0) < 5 * sigma / (1 - rate)
    # each feature and each sample is dropped independently: no column is all dropped or kept
    assert 0.2 < mask[:, 0].mean(axis=0).min() / keep and \
        mask[:, 0].mean(axis=0).max() / keep < 0.8
    assert np.any(mask[:, 0] == 0, axis=1).mean() > 0.9        # 1 - 0.7 ** 8 of the rows
    layer(x, training=True)
    assert not np.array_equal(np.asarray(layer.dropout_mask), mask)     # a new draw per call


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_gradcheck_in_training_with_a_fixed_seed(kind, rng):
    cls, _ = KINDS[kind]
    x = rng.standard_normal((3, 4, 5))
    for seed in range(3):
        for backwards in (False, True):
            layer = cls(3, dropout=0.5, seed=seed, go_backwards=backwards,
                        return_sequences=seed == 1)
            assert gradcheck(layer, x, seed=seed)
            assert np.any(np.asarray(layer.dropout_mask) == 0.0)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_masks_initial_states_and_return_state_with_dropout(kind, rng):
    """Through a Masking layer, with initial states computed from the input and every state
    returned: the outputs are the plain layer's on x * mask with the step mask of x, and the
    tape's gradients of the input and of every weight match central differences."""
    cls, n_states = KINDS[kind]
    nb.seed(int(rng.integers(1000)))
    inp = nb.Input((5, 3), dtype="float64")
    first = L.Dense(4, activation="tanh", dtype="float64")(nb.ops.mean(inp, axis=1))
    rnn = cls(4, return_sequences=True, return_state=True, go_backwards=True, dropout=0.3,
              dtype="float64")
    outs = rnn(L.Masking(dtype="float64")(inp), initial_state=[first] * n_states)
    model = nb.Model(inp, outs)
    x = rng.standard_normal((3, 5, 3))
    x[0, 3:] = 0.0
    x[2, 1] = 0.0
    run = replay([rnn], lambda t: model(t, training=True))
    got = run(x)
    mask = np.asarray(rnn.dropout_mask)
    assert mask.shape == (3, 1, 3) and np.any(mask == 0.0)
    dense = [l for l in model.layers if isinstance(l, L.Dense)][0]
    s0 = np.asarray(dense(np.mean(x, axis=1)))
    twin = plain_twin(rnn)
    step_mask = np.any(x != 0.0, axis=2).astype(np.float64)
    want, _ = twin._forward(x * mask, True, mask=step_mask, initial_state=[s0] * n_states)
    for o, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(o), np.asarray(w), rtol=1e-12, atol=1e-14)
    g = [rng.standard_normal(np.asarray(o).shape) for o in got]
    grads = tape_grads(run, x, model.trainable_weights, g)

    def f():
        return float(sum(np.sum(np.asarray(o) * gi) for o, gi in zip(run(x), g)))
    keep = np.broadcast_to(step_mask[:, :, None] > 0, x.shape)   # nudging a masked step unmasks it
    assert_gradients_close(grads[0][keep], numeric_gradient(f, x)[keep], "input", 1e-5, 1e-7)
    for v, gv in zip(model.trainable_weights, grads[1:]):
        assert_gradients_close(gv, numeric_gradient(f, v.value), v.name, 1e-5, 1e-7)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_identity_at_inference(kind, rng):
    cls, _ = KINDS[kind]
    x = rng.standard_normal((3, 4, 2)).astype(np.float32)
    layer = cls(3, return_sequences=True, dropout=0.6, seed=0)
    out = layer(x)
    assert layer.dropout_mask is None
    twin = plain_twin(layer)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(twin(x)))
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), np.asarray(out))
    g = [rng.standard_normal(out.shape).astype(np.float32)]
    a = tape_grads(lambda t: layer(t, training=False), x, layer.trainable_weights, g)
    b = tape_grads(lambda t: twin(t, training=False), x, twin.trainable_weights, g)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    zero = cls(3, dropout=0.0)
    zero(x, training=True)
    assert zero.dropout_mask is None and zero.rng is None      # no generator without dropout


def test_seeded_masks_are_reproducible(rng):
    x = rng.standard_normal((6, 3, 4)).astype(np.float32)

    def masks(**kw):
        layer = L.GRU(2, dropout=0.5, **kw)
        out = []
        for _ in range(2):
            layer(x, training=True)
            out.append(np.asarray(layer.dropout_mask))
        return out
    a, b = masks(seed=7), masks(seed=7)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[0], a[1])                      # new masks each call
    assert not np.array_equal(a[0], masks(seed=8)[0])
    nb.seed(3)
    c = masks()
    nb.seed(3)
    d = masks()
    np.testing.assert_array_equal(c[0], d[0])
    # the global stream without dropout is as before: a layer without dropout draws nothing
    nb.seed(4)
    L.LSTM(2)(x)
    after = nb.random.uniform((3,)).numpy()
    nb.seed(4)
    L.LSTM(2, dropout=0.0, recurrent_dropout=0)(x)
    np.testing.assert_array_equal(nb.random.uniform((3,)).numpy(), after)


def test_lstm_with_dropout_trains_saves_and_loads(rng, tmp_path):
    """The sign of the sum of a sequence: LSTM(dropout=0.3) learns it with fit; the loaded
    model has the same configuration and predictions."""
    x = rng.standard_normal((400, 8, 3)).astype(np.float32)
    y = (x.sum(axis=(1, 2)) > 0).astype(np.int64)
    nb.seed(0)
    model = nb.Sequential([nb.Input((8, 3)), L.LSTM(16, dropout=0.3, seed=1),
                           L.Dense(2, activation="softmax")])
    model.compile(nb.optimizers.Adam(1e-2), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    history = model.fit(x[:300], y[:300], epochs=8, batch_size=32, verbose=0, seed=0)
    loss = history.history["loss"]
    assert loss[-1] < 0.6 * loss[0]
    assert model.evaluate(x[300:], y[300:])["accuracy"] >= 0.85
    model.save(tmp_path / "lstm_dropout.npz")
    loaded = nb.load_model(tmp_path / "lstm_dropout.npz")
    lstm = loaded.layers[0]
    assert (type(lstm), lstm.dropout, lstm.recurrent_dropout, lstm.seed) == (L.LSTM, 0.3, 0.0, 1)
    assert lstm.get_config() == model.layers[0].get_config()
    np.testing.assert_array_equal(loaded.predict(x[300:]), model.predict(x[300:]))
    loaded.fit(x[:64], y[:64], epochs=1, verbose=0)                     # trains on


def test_bidirectional_lstm_with_dropout(rng):
    """Each direction draws its own mask; the result is the two plain layers on their masked
    inputs, merged; gradients against central differences with both draws replayed; the
    configuration round-trips."""
    x = rng.standard_normal((3, 5, 4))
    bi = L.Bidirectional(L.LSTM(3, return_sequences=True, dropout=0.25), dtype="float64")
    bi.build((5, 4))
    fl, bl = bi.forward_layer, bi.backward_layer
    run = replay([fl, bl], lambda t: bi(t, training=True))
    out = np.asarray(run(x))
    assert (fl.dropout, bl.dropout) == (0.25, 0.25)
    mf, mb = np.asarray(fl.dropout_mask), np.asarray(bl.dropout_mask)
    assert mf.shape == mb.shape == (3, 1, 4) and not np.array_equal(mf, mb)
    f = np.asarray(plain_twin(fl)(x * mf))
    b = np.asarray(plain_twin(bl)(x * mb))[:, ::-1]
    np.testing.assert_allclose(out, np.concatenate([f, b], axis=2), rtol=1e-12, atol=1e-14)
    g = [rng.standard_normal(out.shape)]
    grads = tape_grads(run, x, bi.trainable_weights, g)

    def fn():
        return float(np.sum(np.asarray(run(x)) * g[0]))
    assert_gradients_close(grads[0], numeric_gradient(fn, x), "input", 1e-5, 1e-7)
    for v, gv in zip(bi.trainable_weights, grads[1:]):
        assert_gradients_close(gv, numeric_gradient(fn, v.value), v.name, 1e-5, 1e-7)
    np.testing.assert_array_equal(np.asarray(bi(x)), np.asarray(bi(x, training=False)))
    again = L.Bidirectional.from_config(bi.get_config())
    assert (again.forward_layer.dropout, again.backward_layer.dropout) == (0.25, 0.25)
    # in a model, with mask_zero and return_state: the states come out, masks are drawn
    # with a seed both copies start from it, so they draw the same masks (Keras: the copies
    # are built from one config, seed included)
    ids = nb.Input((None,), dtype="int64")
    seeded = L.Bidirectional(L.GRU(2, dropout=0.5, return_state=True, seed=2))
    model = nb.Model(ids, seeded(L.Embedding(6, 3, mask_zero=True)(ids)))
    res = model(np.array([[1, 2, 0], [3, 0, 0]]), training=True)
    assert [tuple(r.shape) for r in res] == [(2, 4), (2, 2), (2, 2)]
    np.testing.assert_array_equal(np.asarray(seeded.forward_layer.dropout_mask),
                                  np.asarray(seeded.backward_layer.dropout_mask))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_bad_dropout_and_recurrent_dropout(kind):
    cls, _ = KINDS[kind]
    for bad in (1.0, 1, -0.1, 1.5, float("nan"), "0.2", None, True):
        with pytest.raises(ValueError, match=rf"^{kind} '.*': dropout must be a finite number "
                                             rf">= 0 and < 1, got {bad!r}"):
            cls(2, dropout=bad)
    for bad in (0.2, 1, -0.5, "0", None):
        with pytest.raises(ValueError, match=rf"recurrent_dropout is not supported by "
                                             rf"numbanet's recurrent layers .*got "
                                             rf"recurrent_dropout={bad!r}$"):
            cls(2, recurrent_dropout=bad)
    for ok in (0, 0.0, np.float32(0)):
        assert cls(2, recurrent_dropout=ok).recurrent_dropout == 0.0
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        cls(2, dropout=0.1, seed=-1)
    with pytest.raises(ValueError, match="recurrent_dropout"):
        L.Bidirectional(cls(2, recurrent_dropout=0.1))
    config = cls(2, dropout=0.1, seed=3).get_config()
    assert (config["dropout"], config["recurrent_dropout"], config["seed"]) == (0.1, 0.0, 3)


def test_lstm_dropout_on_cuda(allow_cuda, monkeypatch, rng):
    """On the CUDA backend (the simulator here) the mask is drawn there: the output and the
    gradients equal the CPU layer without dropout on x * mask (the mask read back)."""
    from numbanet.kernels.cuda import _common
    for name, value in (("threads", 32), ("max_blocks", 3), ("row_block", (4, 2)),
                        ("gemm_tile", (8, 8, 4, 2, 2))):
        monkeypatch.setattr(_common.config, name, value)
    nb.seed(0)
    inp = nb.Input((3, 2))
    cpu = nb.Model(inp, L.LSTM(2, return_sequences=True, dropout=0.5, seed=4)(inp))
    gpu = nb.models.functional_from_config(cpu.get_config()).to("cuda")
    gpu.set_weights(cpu.get_weights())
    x = rng.standard_normal((3, 3, 2)).astype(np.float32)
    g = [rng.standard_normal((3, 3, 2)).astype(np.float32)]
    xt = nb.ops.convert_to_tensor(x, device="cuda")
    with nb.GradientTape() as tape:
        tape.watch(xt)
        out = gpu(xt, training=True)
        loss = nb.ops.sum(out * g[0])
    grads = [np.asarray(v) for v in tape.gradient(loss, [xt] + gpu.trainable_weights)]
    mask = np.asarray(gpu.layers[-1].dropout_mask)
    assert mask.shape == (3, 1, 2)
    assert set(np.unique(mask)) <= {0.0, np.float32(2.0)}
    plain = plain_twin(cpu.layers[-1])
    xm = x * mask
    np.testing.assert_allclose(np.asarray(out), np.asarray(plain(xm)), rtol=1e-5, atol=1e-6)
    want = tape_grads(lambda t: plain(t, training=True), xm, plain.trainable_weights, g)
    np.testing.assert_allclose(grads[0], want[0] * mask, rtol=1e-4, atol=1e-6)
    for a, b in zip(grads[1:], want[1:]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(gpu(x)), np.asarray(cpu(x)), rtol=1e-5, atol=1e-6)
    assert gpu.layers[-1].dropout_mask is None
