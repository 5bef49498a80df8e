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
def test_pool1d_against_torch(cls, torch_fn, rng):
    layer = cls(3, strides=2, dtype="float64")
    x = rng.permutation(2 * 4 * 9).reshape(2, 4, 9).astype(np.float64)
    y = np.asarray(layer(x))
    torch = pytest.importorskip("torch")
    tx = torch.tensor(x, requires_grad=True)
    ty = getattr(torch.nn.functional, torch_fn)(tx, 3, 2)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12)
    g = rng.standard_normal(y.shape)
    ty.backward(torch.tensor(g))
    t = nb.ops.convert_to_tensor(x)
    with nb.GradientTape() as tape:
        tape.watch(t)
        out = nb.ops.sum(layer(t) * g)
    np.testing.assert_allclose(np.asarray(tape.gradient(out, t)), tx.grad.numpy(), rtol=1e-12)


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
