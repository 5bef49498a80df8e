"""Sequence layers: Embedding, Masking, Conv1D, the 1-D pools and global pools, masks through a
graph and into losses and metrics, and TextVectorization."""
import numpy as np
import pytest

import numbanet as nb
from numbanet.testing import gradcheck

L = nb.layers


def test_embedding_forward_backward_and_duplicates(rng):
    emb = L.Embedding(7, 3, dtype="float64")
    ids = np.array([[1, 4, 4], [0, 6, 4]])
    out = emb(ids)
    w = np.asarray(emb.params["embeddings"])
    np.testing.assert_array_equal(np.asarray(out), w[ids])
    g = rng.standard_normal((2, 3, 3))
    with nb.GradientTape() as tape:
        y = nb.ops.sum(emb(ids) * g)
    (gw,) = tape.gradient(y, emb.trainable_weights)
    want = np.zeros((7, 3))
    np.add.at(want, ids, g)                     # repeated ids add up
    np.testing.assert_allclose(np.asarray(gw), want, rtol=1e-12)
    torch = pytest.importorskip("torch")
    t = torch.nn.Embedding(7, 3).double()
    t.weight.data = torch.tensor(w)
    (t(torch.tensor(ids)) * torch.tensor(g)).sum().backward()
    np.testing.assert_allclose(np.asarray(gw), t.weight.grad.numpy(), rtol=1e-12)


def test_embedding_ids_out_of_range_are_named(rng):
    emb = L.Embedding(5, 2, name="words")
    with pytest.raises(ValueError, match=r"'words': id 7 at index \(1, 0\) is outside \[0, 5\)"):
        emb(np.array([[1, 2], [7, 0]]))
    with pytest.raises(ValueError, match="id -1"):
        emb(np.array([[-1, 2]]))
    with pytest.raises(TypeError, match="integer ids"):
        emb(np.array([[0.5, 1.0]]))


def test_integer_inputs_flow_through_fit_uncast(rng):
    inp = nb.Input((6,), dtype="int64")
    emb = L.Embedding(20, 4)
    out = L.Dense(2, activation="softmax")(L.Flatten()(emb(inp)))
    model = nb.Model(inp, out)
    model.compile("adam", "sparse_categorical_crossentropy")
    ids = rng.integers(0, 20, (16, 6))
    before = np.array(emb.params["embeddings"])
    model.fit(ids, rng.integers(0, 2, 16), epochs=1, verbose=0)
    changed = np.flatnonzero(np.any(before != np.asarray(emb.params["embeddings"]), axis=1))
    assert set(changed) <= set(ids.ravel()) and len(changed) > 0
    with pytest.raises(ValueError, match="outside"):
        model.fit(ids + 20, rng.integers(0, 2, 16), verbose=0)


@pytest.mark.parametrize("padding, stride, dilation", [
    ("valid", 1, 1), ("same", 1, 1), ("same", 2, 1), ("causal", 1, 2), (2, 1, 1), ("valid", 2, 2),
])
def test_conv1d_against_torch_and_gradcheck(padding, stride, dilation, rng):
    layer = L.Conv1D(4, 3, strides=stride, padding=padding, dilation_rate=dilation,
                     activation="tanh", dtype="float64")
    x = rng.standard_normal((2, 3, 9))
    y = np.asarray(layer(x))
    assert gradcheck(layer, x)
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    w = torch.tensor(np.asarray(layer.params["kernel"]))
    b = torch.tensor(np.asarray(layer.params["bias"]))
    tx = torch.tensor(x)
    span = dilation * 2 + 1
    if padding == "causal":
        tx = F.pad(tx, (span - 1, 0))
        pad = 0
    elif padding == "same":
        out = -(-9 // stride)
        total = max((out - 1) * stride + span - 9, 0)
        tx = F.pad(tx, (total // 2, total - total // 2))
        pad = 0
    else:
        pad = 0 if padding == "valid" else padding
    want = torch.tanh(F.conv1d(tx, w, b, stride=stride, padding=pad, dilation=dilation))
    np.testing.assert_allclose(y, want.numpy(), rtol=1e-12, atol=1e-12)
    if padding == "causal":        # output t sees inputs <= t only
        x2 = x.copy()
        x2[:, :, 5:] += 1.0
        np.testing.assert_array_equal(np.asarray(layer(x2))[:, :, :5], y[:, :, :5])


@pytest.mark.parametrize("cls, torch_fn", [(L.MaxPool1D, "max_pool1d"),
                                           (L.AvgPool1D, "avg_pool1d")])
@pytest.mark.parametrize("data_format", [None, "channels_last"])
def test_pool1d_against_torch(cls, torch_fn, data_format, rng):
    """Values and input gradients against torch; channels_last is the channels_first pool on
    the transposed input (and torch's on the permuted one)."""
    last = data_format == "channels_last"
    layer = cls(3, strides=2, data_format=data_format, dtype="float64")
    x = rng.permutation(2 * 4 * 9).reshape((2, 9, 4) if last else (2, 4, 9)).astype(np.float64)
    y = np.asarray(layer(x))
    if last:
        assert y.shape == (2, 4, 4)
        np.testing.assert_array_equal(y, np.asarray(cls(3, strides=2, dtype="float64")(
            x.transpose(0, 2, 1))).transpose(0, 2, 1))
        assert gradcheck(layer, x)
    torch = pytest.importorskip("torch")
    tx = torch.tensor(x, requires_grad=True)
    flip = (lambda t: t.permute(0, 2, 1)) if last else (lambda t: t)
    ty = flip(getattr(torch.nn.functional, torch_fn)(flip(tx), 3, 2))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12)
    g = rng.standard_normal(y.shape)
    ty.backward(torch.tensor(g))
    t = nb.ops.convert_to_tensor(x)
    with nb.GradientTape() as tape:
        tape.watch(t)
        out = nb.ops.sum(layer(t) * g)
    np.testing.assert_allclose(np.asarray(tape.gradient(out, t)), tx.grad.numpy(), rtol=1e-12)


@pytest.mark.parametrize("padding, stride, dilation", [("valid", 1, 1), ("same", 2, 1),
                                                       ("causal", 1, 2)])
def test_conv1d_channels_last_against_channels_first_and_torch(padding, stride, dilation, rng):
    """data_format="channels_last": (batch, steps, channels) -> (batch, steps', filters), the
    same kernel (filters, in_channels, kernel_size) as channels_first; values and gradients
    (input, kernel, bias) are those of torch's Conv1d on the permuted input."""
    kw = dict(strides=stride, padding=padding, dilation_rate=dilation, activation="tanh",
              dtype="float64")
    last = L.Conv1D(4, 3, data_format="channels_last", **kw)
    first = L.Conv1D(4, 3, data_format="channels_first", **kw)
    x = rng.standard_normal((2, 9, 3))
    y = np.asarray(last(x))
    first(x.transpose(0, 2, 1))
    first.set_weights(last.get_weights())
    assert last.params["kernel"].shape == (4, 3, 3)
    np.testing.assert_allclose(y, np.asarray(first(x.transpose(0, 2, 1))).transpose(0, 2, 1),
                               rtol=1e-13, atol=1e-13)
    assert gradcheck(last, x)
    g = rng.standard_normal(y.shape)
    t = nb.ops.convert_to_tensor(x)
    with nb.GradientTape() as tape:
        tape.watch(t)
        out = nb.ops.sum(last(t) * g)
    gx, gw, gb = tape.gradient(out, [t] + last.trainable_weights)
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    tx = torch.tensor(x, requires_grad=True)
    conv = torch.nn.Conv1d(3, 4, 3, stride=stride, dilation=dilation).double()
    conv.weight.data = torch.tensor(np.asarray(last.params["kernel"]))
    conv.bias.data = torch.tensor(np.asarray(last.params["bias"]))
    xp = tx.permute(0, 2, 1)
    if padding == "causal":
        xp = F.pad(xp, (2 * dilation, 0))
    elif padding == "same":
        total = max((-(-9 // stride) - 1) * stride + 3 - 9, 0)
        xp = F.pad(xp, (total // 2, total - total // 2))
    ty = torch.tanh(conv(xp)).permute(0, 2, 1)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    ty.backward(torch.tensor(g))
    for got, want in ((gx, tx.grad), (gw, conv.weight.grad), (gb, conv.bias.grad)):
        np.testing.assert_allclose(np.asarray(got), want.numpy(), rtol=1e-12, atol=1e-12)


def test_conv1d_channels_last_softmax_is_over_the_filters_and_fuses_with_the_loss(rng):
    """A channels_last Conv1D's activation runs on (batch, steps, filters): a softmax output
    classifies each step (Keras), and the loss that fuses with it reads its logits in that
    layout (the reported loss is that of predict's probabilities)."""
    nb.seed(0)
    inp = nb.Input((None, 3), dtype="float64")
    model = nb.Model(inp, L.Conv1D(4, 3, padding="same", activation="softmax",
                                   data_format="channels_last")(inp))
    model.compile(nb.optimizers.SGD(1.0), "sparse_categorical_crossentropy")
    assert model._fused()
    x, y = rng.standard_normal((2, 6, 3)), rng.integers(0, 4, (2, 6))
    p = model.predict(x)
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=1e-12)
    take = np.take_along_axis(p, y[..., None], axis=-1)
    assert model.evaluate(x, y)["loss"] == pytest.approx(-np.mean(np.log(take)), rel=1e-10)
    assert gradcheck(model.layers[1], x)
    with nb.GradientTape() as tape:                 # the fused gradient is the loss's
        loss = nb.losses.SparseCategoricalCrossentropy()(y, model(x))
    want = [np.asarray(g) for g in tape.gradient(loss, model.trainable_weights)]
    before = model.get_weights()
    model.train_step(x, y)                          # one SGD step of rate 1
    for w0, w1, g in zip(before, model.get_weights(), want):
        np.testing.assert_allclose(w0 - w1, g, rtol=1e-10, atol=1e-14)


def _keras_text_cnn(t=None, vocab=12, name="cnn"):
    inp = nb.Input((t,), dtype="int64")
    x = L.Embedding(vocab, 8, mask_zero=True)(inp)
    x = L.Conv1D(16, 3, activation="relu", data_format="channels_last")(x)
    x = L.MaxPool1D(2, padding="same", data_format="channels_last")(x)
    x = L.GlobalMaxPooling1D()(x)
    return nb.Model(inp, L.Dense(1, activation="sigmoid")(x), name=name)


def test_keras_text_cnn_trains_saves_and_takes_any_length(tmp_path, rng):
    """Input(ids) -> Embedding -> Conv1D(channels_last) -> MaxPool1D -> GlobalMaxPooling1D ->
    Dense, as a Keras user writes it: it learns whether the bigram (3, 4) occurs anywhere in the
    sequence (a filter over the steps sees it; one over the features could not), saves and
    loads, and takes sequences of another length (the steps are a free axis)."""
    nb.seed(1)
    model = _keras_text_cnn()
    model.compile(nb.optimizers.Adam(0.02), "binary_crossentropy", metrics=["accuracy"])
    x = rng.integers(5, 12, (128, 10))
    y = rng.integers(0, 2, 128)
    at = rng.integers(0, 9, 128)
    x[y == 1, at[y == 1]], x[y == 1, at[y == 1] + 1] = 3, 4
    model.fit(x, y, epochs=30, batch_size=32, verbose=0)
    assert model.evaluate(x, y)["accuracy"] >= 0.95
    assert model.layers[2].get_config()["data_format"] == "channels_last"
    model.save(tmp_path / "cnn.npz")
    loaded = nb.load_model(tmp_path / "cnn.npz")
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    longer = np.concatenate([rng.integers(5, 12, (2, 7)), [[3, 4, 5, 6, 7], [5, 6, 7, 8, 9]]], 1)
    p = loaded.predict(longer).ravel()
    assert p[0] > 0.5 > p[1]


def test_1d_layers_data_format_config_round_trip():
    for layer in (L.Conv1D(2, 3, data_format="channels_last"), L.AvgPool1D(),
                  L.MaxPool1D(data_format="channels_last"),
                  L.GlobalMaxPooling1D(data_format="channels_first")):
        config = layer.get_config()
        again = type(layer).from_config(config)
        assert again.get_config() == config and again.data_format == layer.data_format
    assert L.Conv1D(2, 3).get_config()["data_format"] is None       # the default stays one
    assert L.Conv1D(2, 3).data_format == "channels_first"
    assert L.GlobalAveragePooling1D().data_format == "channels_last"
    old = L.Conv1D(2, 3).get_config()
    del old["data_format"]                      # a model saved before data_format existed
    assert L.Conv1D.from_config(old).data_format == "channels_first"
    with pytest.raises(ValueError, match=r"Conv1D 'c': data_format must be 'channels_last'.*"
                                         r"got 'NLC'"):
        L.Conv1D(2, 3, data_format="NLC", name="c")
    with pytest.raises(ValueError, match=r"MaxPool1D 'p': data_format must be.*got 'nhwc'"):
        L.MaxPool1D(data_format="nhwc", name="p")


def test_channels_last_conv_and_pool_on_variable_length_and_shapes(rng):
    inp = nb.Input((None, 3), dtype="float64")
    x = L.Conv1D(5, 3, padding="same", data_format="channels_last")(inp)
    out = L.AvgPool1D(2, data_format="channels_last")(x)
    assert out.shape == (None, None, 5)
    model = nb.Model(inp, out)
    for t in (6, 10):
        assert model.predict(rng.standard_normal((2, t, 3))).shape == (2, t // 2, 5)
    with pytest.raises(ValueError, match=r"Conv1D 'k'.*\(batch, steps, features\).*"
                                         r"channels_last.*known number of channels.*"
                                         r"\(None, 4, None\)"):
        nb.Sequential([L.Conv1D(2, 3, data_format="channels_last", name="k")],
                      input_shape=(4, None))


def test_layout_mixups_are_refused_when_the_graph_is_built():
    """A Conv1D or 1-D pool left at the default (channels_first) on a (batch, steps, features)
    input, and a global pool left at its default (channels_last) on a channels_first Conv1D or
    pool, would train a wrong model silently: building the graph names both layers and the
    data_format to pass. An explicit data_format is taken as meant."""
    def text(*layers):
        return nb.Sequential([L.Embedding(10, 4, name="emb"), *layers], input_shape=(12,))

    keras_hint = r'data_format="channels_last" \(Keras layout.*data_format="channels_first" ' \
        r'\(PyTorch layout'
    with pytest.raises(ValueError, match=r"Conv1D 'conv'.*from Embedding 'emb'.*\(batch, "
                                         r"steps, features\).*" + keras_hint):
        text(L.Conv1D(8, 3, activation="relu", name="conv"), L.GlobalMaxPooling1D())
    with pytest.raises(ValueError, match=r"Conv1D 'conv'.*from Embedding 'emb'"):
        text(L.Dropout(0.2), L.Conv1D(8, 3, name="conv"))           # through Dropout too
    with pytest.raises(ValueError, match=r"MaxPool1D 'pool'.*from LSTM 'rnn'"):
        text(L.LSTM(3, return_sequences=True, name="rnn"), L.MaxPool1D(name="pool"))
    with pytest.raises(ValueError, match=r"AvgPool1D 'pool'.*from Conv1D 'c'"):
        text(L.Conv1D(8, 3, data_format="channels_last", name="c"), L.AvgPool1D(name="pool"))
    ids = nb.Input((12,), dtype="int64")
    with pytest.raises(ValueError, match=r"Conv1D 'conv'.*from MultiHeadAttention 'mha'"):
        h = L.Embedding(10, 4)(ids)
        L.Conv1D(8, 3, name="conv")(L.MultiHeadAttention(2, 2, name="mha")(h, h))
    with pytest.raises(ValueError, match=r"GlobalMaxPooling1D 'g'.*from Conv1D 'c'.*\(batch, "
                                         r"channels, length\).*pool over the channels.*"
                                         r'data_format="channels_first" here.*give Conv1D '
                                         r"'c' data_format=\"channels_last\""):
        nb.Sequential([L.Conv1D(8, 3, name="c"), L.GlobalMaxPooling1D(name="g")],
                      input_shape=(4, 12))
    with pytest.raises(ValueError, match=r"GlobalAveragePooling1D 'g'.*from MaxPool1D 'p'"):
        x = nb.Input((4, 12))
        L.GlobalAveragePooling1D(name="g")(L.MaxPool1D(name="p")(L.Conv1D(8, 3)(x)))
    # explicit formats are taken as meant; so is the PyTorch layout from a float Input
    text(L.Conv1D(8, 3, data_format="channels_first"),
         L.GlobalMaxPooling1D(data_format="channels_first"))
    with pytest.raises(ValueError, match=r"GlobalMaxPooling1D 'g'.*from Conv1D 'c'"):
        text(L.Conv1D(8, 3, data_format="channels_first", name="c"),
             L.GlobalMaxPooling1D(name="g"))
    text(L.Conv1D(8, 3, data_format="channels_last"), L.Dropout(0.1),
         L.MaxPool1D(data_format="channels_last"), L.GlobalMaxPooling1D())
    text(L.Permute((2, 1)), L.Conv1D(8, 3), L.GlobalMaxPooling1D(data_format="channels_first"))
    nb.Sequential([L.Conv1D(8, 3), L.MaxPool1D(), L.GlobalAveragePooling1D(
        data_format="channels_first")], input_shape=(4, 12))


@pytest.mark.parametrize("cls", [L.GlobalAveragePooling1D, L.GlobalMaxPooling1D])
def test_global_pool1d_with_and_without_mask(cls, rng):
    x = rng.standard_normal((3, 5, 4))
    layer = cls()
    want = x.mean(axis=1) if cls is L.GlobalAveragePooling1D else x.max(axis=1)
    np.testing.assert_allclose(np.asarray(layer(x)), want, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(cls(data_format="channels_first")(x)),
                               x.mean(axis=2) if cls is L.GlobalAveragePooling1D else
                               x.max(axis=2), rtol=1e-12)
    assert gradcheck(layer, x)
    # masked steps are left out
    ids = np.array([[3, 1, 2, 0, 0], [1, 0, 0, 0, 0], [4, 4, 4, 4, 4]])
    emb = L.Embedding(5, 4, mask_zero=True, dtype="float64")
    e = np.asarray(emb(ids))
    got = np.asarray(layer(emb(ids)))
    for i, n in enumerate([3, 1, 5]):
        ref = e[i, :n].mean(axis=0) if cls is L.GlobalAveragePooling1D else e[i, :n].max(axis=0)
        np.testing.assert_allclose(got[i], ref, rtol=1e-12)


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("cls", [L.GlobalAveragePooling1D, L.GlobalMaxPooling1D])
def test_global_pool1d_of_a_fully_masked_sample_is_zero(cls, keepdims, rng):
    """A sample with no unmasked step pools to 0 with a zero gradient (max gave the dtype's
    lowest value, -3.4e38 in float32, and a loss of 1e37); the others pool their steps."""
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    x[0] = 0.0                                      # every step masked
    x[1, 2:] = 0.0
    t = nb.ops.convert_to_tensor(x)
    with nb.GradientTape() as tape:
        tape.watch(t)
        out = cls(keepdims=keepdims)(L.Masking()(t))
        loss = nb.ops.sum(out * np.arange(1, 6, dtype=np.float32))
    got, grad = np.asarray(out).reshape(3, 5), np.asarray(tape.gradient(loss, t))
    assert np.all(np.isfinite(got)) and np.all(got[0] == 0.0)
    assert np.all(grad[0] == 0.0)
    pool = np.mean if cls is L.GlobalAveragePooling1D else np.max
    np.testing.assert_allclose(got[1], pool(x[1, :2], axis=0), rtol=1e-6)
    np.testing.assert_allclose(got[2], pool(x[2], axis=0), rtol=1e-6)
    assert np.all(grad[1, 2:] == 0.0) and np.any(grad[1, :2] != 0.0)


def test_masking_layer(rng):
    x = rng.standard_normal((2, 4, 3))
    x[0, 1] = 0.0
    x[1, 3] = 0.0
    out = L.Masking()(x)
    np.testing.assert_array_equal(np.asarray(out.mask), [[1, 0, 1, 1], [1, 1, 1, 0]])
    np.testing.assert_array_equal(np.asarray(out), x)
    pooled = L.GlobalAveragePooling1D()(out)
    np.testing.assert_allclose(np.asarray(pooled)[0], x[0, [0, 2, 3]].mean(axis=0), rtol=1e-12)


def test_masked_per_position_loss_and_metrics(rng):
    inp = nb.Input((None,), dtype="int64")
    out = L.Dense(3, activation="softmax")(L.Embedding(10, 4, mask_zero=True)(inp))
    model = nb.Model(inp, out)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    ids = np.array([[1, 2, 0], [3, 0, 0], [5, 6, 7]])
    y = rng.integers(0, 3, (3, 3))
    result = model.evaluate(ids, y)
    p = model.predict(ids)
    keep = ids != 0
    assert result["loss"] == pytest.approx(-np.mean(np.log(p[keep, y[keep]])), rel=1e-5)
    assert result["accuracy"] == pytest.approx(np.mean(p[keep].argmax(-1) == y[keep]))
    # the masked positions' targets do not matter
    y2 = y.copy()
    y2[~keep] = (y2[~keep] + 1) % 3
    assert model.evaluate(ids, y2) == pytest.approx(result)


def test_text_vectorization_keras_behaviour():
    tv = nb.text.TextVectorization()
    tv.adapt(["The cat sat on the mat.", "The dog!", "", "a CAT, a cat"])
    vocab = tv.get_vocabulary()
    assert vocab[:2] == ["", "[UNK]"]
    # by decreasing frequency, ties in first-seen order
    assert vocab[2:] == ["the", "cat", "a", "sat", "on", "mat", "dog"]
    ids = tv(["the zebra", "", "Cat!"])
    assert ids.dtype == np.int64
    np.testing.assert_array_equal(ids, [[2, 1], [0, 0], [3, 0]])
    fixed = nb.text.TextVectorization(max_tokens=4, output_sequence_length=3)
    fixed.adapt(["b a a c c c", "zz"])
    assert fixed.get_vocabulary() == ["", "[UNK]", "c", "a"]
    np.testing.assert_array_equal(fixed(["c a b zz c d", "a"]), [[2, 3, 1], [3, 0, 0]])
    np.testing.assert_array_equal(fixed(["zz qq"]), [[1, 1, 0]])         # all OOV
    chars = nb.text.TextVectorization(split="character", standardize="lower")
    chars.adapt(["abba", "Ab c"])
    assert chars.get_vocabulary()[2:] == ["a", "b", " ", "c"]
    hot = nb.text.TextVectorization(output_mode="multi_hot")
    hot.adapt(["x y", "y"])
    np.testing.assert_array_equal(hot(["y y z"]), [[0, 1, 1, 0]])
    with pytest.raises(ValueError, match="max_tokens"):
        nb.text.TextVectorization(max_tokens=2)
    with pytest.raises(ValueError, match="output_mode"):
        nb.text.TextVectorization(output_mode="tf_idf")
    with pytest.raises(TypeError, match="one string"):
        tv("a single string")


def test_text_vectorization_vocabulary_file_and_single_strings(tmp_path):
    """Keras: a str vocabulary is the path of a file with one token per line; a single string
    is not a batch of texts (it was split into characters)."""
    path = tmp_path / "vocab.txt"
    path.write_text("hello\nworld\r\nthe end\n", encoding="utf-8")
    for given in (str(path), path):
        tv = nb.text.TextVectorization(vocabulary=given, split=None, standardize=None)
        assert tv.get_vocabulary() == ["", "[UNK]", "hello", "world", "the end"]
    tv = nb.text.TextVectorization(vocabulary=str(path))
    np.testing.assert_array_equal(tv(["world x hello"]), [[3, 1, 2]])
    with pytest.raises(ValueError, match="path of a file with one token per line.*'cat'"):
        nb.text.TextVectorization(vocabulary="cat")
    with pytest.raises(TypeError, match="got one string; wrap it in a list"):
        nb.text.TextVectorization().adapt("hello world")
    fresh = nb.text.TextVectorization()
    fresh.adapt(("hello world" for _ in range(2)))              # any iterable of texts
    assert fresh.get_vocabulary() == ["", "[UNK]", "hello", "world"]


def test_empty_texts_give_one_padding_step_whatever_the_batch():
    """A batch of only empty texts is (batch, 1) of padding, as those texts are in a mixed
    batch: a text model's predictions do not depend on the batch size."""
    vec = nb.text.TextVectorization()
    vec.adapt(["a great movie", "terrible plot"])
    np.testing.assert_array_equal(vec(["", ""]), [[0], [0]])
    np.testing.assert_array_equal(vec(["great", ""]), [[3], [0]])
    nb.seed(0)
    inp = nb.Input(shape=(), dtype="string")
    emb = L.Embedding(vec.vocabulary_size(), 4, mask_zero=True)(vec(inp))
    model = nb.Model(inp, L.Dense(1)(L.GRU(3)(emb)))
    x = np.array(["a great movie", "", ""], dtype=object)
    whole = model.predict(x, batch_size=4)
    np.testing.assert_allclose(model.predict(x, batch_size=1), whole, rtol=1e-5, atol=1e-7)
    assert np.all(whole[1:] == 0.0)         # no unmasked step: the zero state, zero bias


def test_multi_hot_width_changed_after_the_model_was_built_is_named():
    """Adapting a multi_hot TextVectorization after building the model changes its output width:
    the Dense after it says what it was built for instead of failing inside a kernel."""
    vec = nb.text.TextVectorization(output_mode="multi_hot")
    inp = nb.Input(shape=(), dtype="string")
    model = nb.Model(inp, L.Dense(1, name="head")(vec(inp)))
    assert model.predict(np.array(["a b"], dtype=object)).shape == (1, 1)
    vec.adapt(["a b c", "d e"])
    with pytest.raises(ValueError, match=r"Dense 'head': expected inputs with 2 features "
                                         r"\(its kernel is \(2, 1\)\), got 7"):
        model.predict(np.array(["a b"], dtype=object))


def test_text_vectorization_in_a_model_saves_its_vocabulary(tmp_path, rng):
    tv = nb.text.TextVectorization(output_sequence_length=4)
    texts = np.array(["good movie", "bad movie", "good good", "bad"], dtype=object)
    tv.adapt(texts)
    inp = nb.Input(shape=(), dtype="string")
    x = L.GlobalAveragePooling1D()(L.Embedding(tv.vocabulary_size(), 4, mask_zero=True)(tv(inp)))
    model = nb.Model(inp, L.Dense(2, activation="softmax")(x))
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(texts, np.array([1, 0, 1, 0]), epochs=2, verbose=0)
    model.save(tmp_path / "text.npz")
    loaded = nb.load_model(tmp_path / "text.npz")
    np.testing.assert_array_equal(loaded.predict(texts), model.predict(texts))
    assert loaded.layers[1].get_vocabulary() == tv.get_vocabulary()
    np.testing.assert_array_equal(loaded.predict(["good movie"]), model.predict(["good movie"]))


def test_a_channels_first_conv1d_feeding_a_recurrent_or_attention_layer_is_refused():
    """LSTM, GRU, Bidirectional, MultiHeadAttention and the Transformer blocks read (batch,
    steps, features); a (batch, channels, length) Conv1D / pool output fed straight to them
    would be read with the channels as steps."""
    def conv_into(make, fmt=None):
        inp = nb.Input((6, 10))
        h = L.Conv1D(4, 3, padding="same", data_format=fmt)(inp)
        return make()(h) if make is not L.MultiHeadAttention else L.MultiHeadAttention(2, 2)(h, h)
    for make in (lambda: L.LSTM(3), lambda: L.Bidirectional(L.GRU(3)), L.MultiHeadAttention,
                 lambda: L.TransformerEncoder(8, 2)):
        with pytest.raises(ValueError, match=r"reads \(batch, steps, features\).*conv1d"):
            conv_into(make, "channels_first")
        with pytest.raises(ValueError, match="channels would be read as steps"):
            conv_into(make)
        conv_into(make, "channels_last")                 # (batch, steps, filters): fine
    inp = nb.Input((6, 10))
    h = L.Permute((2, 1))(L.MaxPool1D(2)(inp))           # made steps-major by hand: fine
    assert L.LSTM(3)(h).shape == (None, 3)
