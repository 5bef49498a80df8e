"""Keras' reshaping, wrapper and preprocessing layers (RepeatVector, TimeDistributed, Rescaling,
Normalization, ZeroPadding1D/2D, Cropping2D, UpSampling1D, Identity) and the layers written
with ``nb.ops`` after them (Attention, AdditiveAttention, ...): values and gradients
against PyTorch float64 (NumPy where torch has no twin) and finite differences, shapes, masks,
configs, save/load in Sequential and functional models, and bad arguments."""
import json

import numpy as np
import pytest
from conftest import assert_sgd_step_like_torch

import numbanet as nb
from numbanet.testing import gradcheck

L = nb.layers
NEW = ["Identity", "RepeatVector", "TimeDistributed", "ZeroPadding1D", "ZeroPadding2D",
       "Cropping2D", "UpSampling1D", "Rescaling", "Normalization", "Attention",
       "AdditiveAttention", "Dot", "PReLU", "ActivityRegularization",
       "GroupNormalization", "UnitNormalization", "GaussianDropout", "Cropping1D",
       "CategoryEncoding"]


def _round_trip(layer):
    """The layer rebuilt from its config as saved (JSON); the config must come back equal."""
    entry = json.loads(json.dumps({"class_name": type(layer).__name__,
                                   "config": layer.get_config()}))
    again = L.REGISTRY.deserialize(entry)
    assert again.get_config() == layer.get_config()
    return again


def _save_load(model, x, tmp_path):
    path = tmp_path / "m.npz"
    model.save(path)
    loaded = nb.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert loaded.get_config() == model.get_config()
    return loaded


def test_new_layers_are_registered():
    for name in NEW:
        assert L.get(name) is getattr(L, name)


# ---------------------------------------------------------------------------------- RepeatVector
def test_repeat_vector_values_gradients_config(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((3, 4))
    layer = L.RepeatVector(5)
    out = layer(x)
    assert out.shape == (3, 5, 4) and layer.output_shape == (5, 4)
    np.testing.assert_array_equal(np.asarray(out),
                                  torch.tensor(x).unsqueeze(1).expand(3, 5, 4).numpy())
    assert gradcheck(L.RepeatVector(3), x)
    assert _round_trip(layer).n == 5
    assert layer.get_config()["n"] == 5
    with pytest.raises(ValueError, match=r"RepeatVector 'r': n must be .*got 0"):
        L.RepeatVector(0, name="r")
    with pytest.raises(ValueError, match=r"expects 2-D input \(batch, features\), got input "
                                         r"shape \(None, 2, 3\)"):
        L.RepeatVector(2)(rng.standard_normal((1, 2, 3)))


def test_repeat_vector_seq2seq_model_trains_saves_and_checks_layouts(rng, tmp_path):
    """An LSTM encoder -> RepeatVector -> LSTM decoder -> TimeDistributed(Dense), as the
    course's seq2seq examples; RepeatVector's output is (batch, steps, features)."""
    x, y = rng.standard_normal((8, 5, 3)), rng.standard_normal((8, 6, 2))
    model = nb.Sequential([L.LSTM(4, input_shape=(5, 3)), L.RepeatVector(6),
                           L.LSTM(4, return_sequences=True), L.TimeDistributed(L.Dense(2))])
    assert model.output_shape == (6, 2)
    model.compile("adam", "mse")
    hist = model.fit(x, y, epochs=3, verbose=0)
    assert np.isfinite(hist.history["loss"]).all()
    _save_load(model, x, tmp_path)
    inp = nb.Input((4,))
    with pytest.raises(ValueError, match=r"whose output is \(batch, steps, features\)"):
        L.Conv1D(2, 3)(L.RepeatVector(5)(inp))


# ------------------------------------------------------------------------------- TimeDistributed
def test_time_distributed_dense_matches_torch_and_steps_once(rng, monkeypatch):
    torch = pytest.importorskip("torch")
    x, y = rng.standard_normal((3, 4, 5)), rng.standard_normal((3, 4, 2))
    dense = L.Dense(2, activation="tanh")
    model = nb.Sequential([L.TimeDistributed(dense, input_shape=(4, 5))], dtype="float64")
    td = model.layers[0]
    assert td.output_shape == (None, 2)          # the steps may change between calls
    assert [v.name for v in td.trainable_weights] == [v.name for v in dense.trainable_weights]
    w = [torch.tensor(v, requires_grad=True) for v in model.get_weights()]
    out = torch.tanh(torch.tensor(x) @ w[0] + w[1])
    np.testing.assert_allclose(model.predict(x), out.detach().numpy(), rtol=1e-12)
    assert_sgd_step_like_torch(model, x, y, out, w)
    assert gradcheck(L.TimeDistributed(L.Dense(3, activation="sigmoid")), x)
    assert gradcheck(model, x)
    # one call of the inner layer on (batch * steps, ...), not one per step
    shapes = []
    inner_forward = dense._forward
    monkeypatch.setattr(dense, "_forward", lambda a, *args, **kw: (
        shapes.append(tuple(a.shape)), inner_forward(a, *args, **kw))[1])
    td(x)
    assert shapes == [(12, 5)]


def test_time_distributed_conv2d_matches_torch(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 3, 1, 6, 6))             # (batch, frames, channels, h, w)
    td = L.TimeDistributed(L.Conv2D(2, 3, padding="same"))
    out = np.asarray(td(x))
    assert out.shape == (2, 3, 2, 6, 6) and td.output_shape == (None, 2, 6, 6)
    k, b = (torch.tensor(v) for v in td.get_weights())
    want = torch.nn.functional.conv2d(torch.tensor(x).reshape(6, 1, 6, 6), k, b, padding=1)
    np.testing.assert_allclose(out, want.reshape(2, 3, 2, 6, 6).numpy(), rtol=1e-10, atol=1e-12)
    assert gradcheck(nb.Sequential([L.TimeDistributed(L.Conv2D(2, 3))]), x[:, :2])  # + weights


def test_time_distributed_dropout_variable_steps_and_masks(rng):
    x = rng.standard_normal((4, 5, 3))
    td = L.TimeDistributed(L.Dropout(0.5, seed=1))
    np.testing.assert_array_equal(np.asarray(td(x)), x)                  # inference
    dropped = np.asarray(td(x, training=True))
    kept = dropped != 0
    assert 0 < kept.mean() < 1
    np.testing.assert_allclose(dropped[kept], 2 * x[kept])
    # the steps may change from call to call, also in a functional model
    inp = nb.Input((None, 3))
    model = nb.Model(inp, L.TimeDistributed(L.Dense(2))(inp))
    assert model.output_shape == (None, 2)
    assert model.predict(x).shape == (4, 5, 2) and model.predict(x[:, :2]).shape == (4, 2, 2)
    # a (batch, steps) mask passes through to the recurrent layer after it
    ids = np.array([[3, 1, 0, 0], [2, 2, 2, 0]])
    emb = L.Embedding(5, 3, mask_zero=True)
    t = L.TimeDistributed(L.Dense(4))(emb(ids))
    np.testing.assert_array_equal(np.asarray(t.mask), ids != 0)
    seq = nb.Sequential([L.Embedding(5, 3, mask_zero=True), L.TimeDistributed(L.Dense(4)),
                         L.SimpleRNN(2)])
    padded = np.array([[3, 1, 0, 0]])
    emb, td, rnn = seq.layers
    np.testing.assert_allclose(seq.predict(padded), np.asarray(rnn(td(emb(padded[:, :2])))),
                               rtol=1e-6)


def test_time_distributed_config_nests_the_layer_and_saves(rng, tmp_path):
    td = L.TimeDistributed(L.Dense(3, activation="relu", name="inner"), name="td")
    cfg = td.get_config()
    assert cfg["layer"]["class_name"] == "Dense"
    assert cfg["layer"]["config"]["units"] == 3 and cfg["layer"]["config"]["name"] == "inner"
    again = _round_trip(td)
    assert type(again.layer) is L.Dense and again.layer.activation == "relu"
    x = rng.standard_normal((2, 4, 5))
    inp = nb.Input((4, 5))
    model = nb.Model(inp, L.TimeDistributed(L.Dense(3))(inp))
    loaded = _save_load(model, x, tmp_path)
    assert len(loaded.trainable_weights) == 2
    frames = rng.standard_normal((2, 3, 1, 8, 8))
    cnn = nb.Sequential([L.TimeDistributed(L.Conv2D(2, 3), input_shape=(3, 1, 8, 8)),
                         L.TimeDistributed(L.Flatten()), L.LSTM(3)])
    assert cnn.output_shape == (3,)
    _save_load(cnn, frames, tmp_path)


def test_time_distributed_bad_arguments(rng):
    with pytest.raises(ValueError, match=r"TimeDistributed: layer must be a Layer instance, "
                                         r"got int"):
        L.TimeDistributed(3)
    with pytest.raises(ValueError, match=r"TimeDistributed: layer must take one input, got "
                                         r"Add"):
        L.TimeDistributed(L.Add())
    with pytest.raises(ValueError, match=r"TimeDistributed 'td': expects input of at least 3 "
                                         r"dimensions \(batch, steps, \.\.\.\), got input shape "
                                         r"\(None, 4\)"):
        L.TimeDistributed(L.Dense(2), name="td")(rng.standard_normal((2, 4)))
    with pytest.raises(ValueError, match=r"gives several outputs"):
        L.TimeDistributed(L.LSTM(2, return_state=True))(rng.standard_normal((2, 3, 4, 5)))


# --------------------------------------------------------------------------------- Rescaling
def test_rescaling(rng, tmp_path):
    x = rng.uniform(0, 255, (4, 3))
    layer = L.Rescaling(1 / 127.5, offset=-1)
    np.testing.assert_allclose(np.asarray(layer(x)), x / 127.5 - 1, rtol=1e-14)
    assert layer.get_config()["scale"] == 1 / 127.5 and layer.get_config()["offset"] == -1.0
    assert _round_trip(layer).offset == -1.0
    assert gradcheck(L.Rescaling(0.5, 2.0), rng.standard_normal((2, 3, 4)))
    model = nb.Sequential([L.Rescaling(1 / 255, input_shape=(3,)), L.Dense(2)])
    _save_load(model, x, tmp_path)
    with pytest.raises(ValueError, match=r"Rescaling 'r': scale must be a finite float, got "
                                         r"'big'"):
        L.Rescaling("big", name="r")
    with pytest.raises(ValueError, match=r"offset must be a finite float, got nan"):
        L.Rescaling(1.0, offset=float("nan"))


# ------------------------------------------------------------------------------- Normalization
def _keras_normalize(x, mean, var, invert=False):
    """Keras 3's formula, in torch float64."""
    import torch
    x, mean, var = (torch.tensor(np.asarray(v, dtype=np.float64)) for v in (x, mean, var))
    std = torch.clamp(torch.sqrt(var), min=1e-7)
    return (mean + x * std if invert else (x - mean) / std).numpy()


def test_normalization_adapt_matches_keras_formula(rng):
    pytest.importorskip("torch")
    data = rng.standard_normal((50, 4)) * [1, 2, 3, 0] + [0, 1, -2, 5]  # a constant feature too
    layer = L.Normalization()
    layer.adapt(data)
    mean, var = (np.asarray(v) for v in layer.get_weights())
    np.testing.assert_allclose(mean, data.mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(var, data.var(0), rtol=1e-12, atol=1e-12)  # population variance
    np.testing.assert_allclose(np.asarray(layer(data)), _keras_normalize(data, mean, var),
                               rtol=1e-12, atol=1e-12)
    assert layer.trainable_weights == [] and len(layer.non_trainable_weights) == 2
    steady = L.Normalization()
    steady.adapt(rng.standard_normal((20, 4)) * 3 + 1)
    assert gradcheck(steady, rng.standard_normal((3, 4)))
    inverse = L.Normalization(mean=mean, variance=var, invert=True)
    np.testing.assert_allclose(np.asarray(inverse(layer(data))), data, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(np.asarray(inverse(data)),
                               _keras_normalize(data, mean, var, invert=True), rtol=1e-12)


def test_normalization_keras_docstring_examples():
    """The three examples of Keras' Normalization docstring give Keras' printed values."""
    layer = L.Normalization(axis=None)
    layer.adapt(np.array([1., 2., 3., 4., 5.], dtype="float32"))
    np.testing.assert_allclose(np.asarray(layer(np.array([1., 2., 3.], dtype="float32"))),
                               [-1.4142135, -0.70710677, 0.], rtol=1e-6)
    data = np.array([[0., 7., 4.], [2., 9., 6.], [0., 7., 4.], [2., 9., 6.]], dtype="float32")
    layer = L.Normalization(axis=-1)
    layer.adapt(data)
    np.testing.assert_allclose(np.asarray(layer(data[:1])), [[-1., -1., -1.]], rtol=1e-6)
    layer = L.Normalization(mean=3., variance=2.)
    np.testing.assert_allclose(np.asarray(layer(np.array([[1.], [2.], [3.]], dtype="float32"))),
                               [[-1.4142135], [-0.70710677], [0.]], rtol=1e-6)


@pytest.mark.parametrize("axis, keep", [(-1, (2,)), (1, (1,)), ((1, 2), (1, 2)), (None, ())])
def test_normalization_axes(rng, axis, keep):
    """``axis`` names the axes (batch axis 0 included) with a mean and variance per index."""
    data = rng.standard_normal((6, 2, 3)) * 2 + 1
    layer = L.Normalization(axis=axis)
    layer.adapt(data)
    reduce = tuple(a for a in range(3) if a not in keep)
    mean = data.mean(axis=reduce, keepdims=True)
    var = data.var(axis=reduce, keepdims=True)
    assert layer.get_weights()[0].shape == (tuple(data.shape[a] for a in keep) or (1,))
    np.testing.assert_allclose(np.asarray(layer(data)), (data - mean) / np.sqrt(var),
                               rtol=1e-10, atol=1e-12)


def test_normalization_given_statistics_config_and_save(rng, tmp_path):
    layer = L.Normalization(mean=[1.0, 2.0, 3.0], variance=4.0)
    x = rng.standard_normal((5, 3))
    np.testing.assert_allclose(np.asarray(layer(x)), (x - [1, 2, 3]) / 2, rtol=1e-12)
    assert layer.get_config()["mean"] == [1.0, 2.0, 3.0] and \
        layer.get_config()["variance"] == 4.0 and layer.get_config()["axis"] == [-1]
    np.testing.assert_allclose(np.asarray(_round_trip(layer)(x)), np.asarray(layer(x)))
    # adapted statistics are weights saved with the model; training leaves them alone
    data = rng.standard_normal((40, 3)) * 5 + 2
    norm = L.Normalization()
    norm.adapt(data)
    stats = norm.get_weights()
    model = nb.Sequential([norm, L.Dense(1)])
    model.compile("adam", "mse")
    model.fit(data, data[:, :1], epochs=2, verbose=0)
    for a, b in zip(norm.get_weights(), stats):
        np.testing.assert_array_equal(a, b)
    loaded = _save_load(model, data, tmp_path)
    for a, b in zip(loaded.layers[0].get_weights(), stats):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    inp = nb.Input((3,))
    fn = nb.Model(inp, L.Dense(2)(L.Normalization(mean=0.5, variance=2.0)(inp)))
    _save_load(fn, data, tmp_path)


def test_normalization_bad_arguments(rng):
    with pytest.raises(ValueError, match=r"Normalization 'n': give both mean and variance, "
                                         r"or neither"):
        L.Normalization(mean=1.0, name="n")
    with pytest.raises(ValueError, match=r"axis must be an int, a tuple of ints or None, got "
                                         r"'x'"):
        L.Normalization(axis="x")
    with pytest.raises(ValueError, match=r"invert must be"):
        L.Normalization(invert="yes")
    with pytest.raises(ValueError, match=r"axis \(0,\) keeps the batch axis 0"):
        L.Normalization(axis=0).adapt(rng.standard_normal((4, 3)))
    with pytest.raises(ValueError, match=r"axis \(3,\) out of range for input of shape "
                                         r"\(None, 3\)"):
        L.Normalization(axis=3)(rng.standard_normal((4, 3)))
    with pytest.raises(ValueError, match=r"mean of shape \(2,\) does not broadcast to the kept "
                                         r"axes' shape \(3,\)"):
        L.Normalization(mean=[0.0, 1.0], variance=1.0)(rng.standard_normal((4, 3)))
    with pytest.raises(ValueError, match=r"adapt\(\) is for a layer without mean= and "
                                         r"variance="):
        L.Normalization(mean=0.0, variance=1.0).adapt(rng.standard_normal((4, 3)))
    layer = L.Normalization()
    layer.adapt(rng.standard_normal((4, 3)))
    with pytest.raises(ValueError, match=r"adapt\(\) data of shape \(4, 2\) does not fit"):
        layer.adapt(rng.standard_normal((4, 2)))
    with pytest.raises(ValueError, match=r"adapt\(\) takes a numeric array"):
        L.Normalization().adapt(np.array(["a", "b"]))


# ------------------------------------------------------------------ padding, cropping, upsampling
@pytest.mark.parametrize("padding, pairs", [(1, ((1, 1), (1, 1))), ((2, 0), ((2, 2), (0, 0))),
                                            (((1, 2), (0, 3)), ((1, 2), (0, 3)))])
def test_zero_padding2d_and_cropping2d(rng, padding, pairs):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 3, 5, 6))
    (t, b), (l, r) = pairs
    pad = L.ZeroPadding2D(padding)
    out = np.asarray(pad(x))
    want = torch.nn.functional.pad(torch.tensor(x), (l, r, t, b)).numpy()
    np.testing.assert_array_equal(out, want)
    assert pad.output_shape == (3, 5 + t + b, 6 + l + r)
    crop = L.Cropping2D(padding)
    np.testing.assert_array_equal(np.asarray(crop(out)), x)
    assert gradcheck(L.ZeroPadding2D(padding), x)
    assert gradcheck(L.Cropping2D(padding), x)
    assert _round_trip(pad).padding == pairs and _round_trip(crop).cropping == pairs


def test_padding_and_cropping_in_models_and_bad_arguments(rng, tmp_path):
    x = rng.standard_normal((2, 1, 6, 6))
    model = nb.Sequential([L.Conv2D(2, 3, input_shape=(1, 6, 6)), L.ZeroPadding2D(1),
                           L.Cropping2D(((0, 1), (2, 0))), L.Flatten(), L.Dense(2)])
    assert model.output_shape == (2,) and model.layers[2].output_shape == (2, 5, 4)
    model.compile("sgd", "mse")
    model.fit(x, rng.standard_normal((2, 2)), epochs=1, verbose=0)
    _save_load(model, x, tmp_path)
    assert L.ZeroPadding2D().padding == ((1, 1), (1, 1))
    assert L.Cropping2D().cropping == ((0, 0), (0, 0))
    with pytest.raises(ValueError, match=r"ZeroPadding2D 'z': padding must be an int, 2 ints "
                                         r"\(height, width\) or 2 pairs .* got -1"):
        L.ZeroPadding2D(-1, name="z")
    with pytest.raises(ValueError, match=r"Cropping2D 'c': cropping must be .* got \(1, 2, 3\)"):
        L.Cropping2D((1, 2, 3), name="c")
    with pytest.raises(ValueError, match=r"cropping \(3, 3\) leaves nothing of height 6"):
        L.Cropping2D(3)(x)
    with pytest.raises(ValueError, match=r"expects 4-D input \(batch, channels, height, "
                                         r"width\), got input shape \(None, 6\)"):
        L.ZeroPadding2D()(rng.standard_normal((2, 6)))


@pytest.mark.parametrize("data_format", [None, "channels_first"])
def test_upsampling1d_and_zero_padding1d(rng, data_format):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 4, 3))
    steps = 2 if data_format == "channels_first" else 1           # the axis of the steps
    up = L.UpSampling1D(3, data_format=data_format)
    want = torch.repeat_interleave(torch.tensor(x), 3, dim=steps).numpy()
    np.testing.assert_array_equal(np.asarray(up(x)), want)
    free = [None if a == steps else d for a, d in enumerate(want.shape)]   # free steps
    assert up.output_shape == tuple(free[1:])
    assert gradcheck(L.UpSampling1D(2, data_format=data_format), x)
    pad = L.ZeroPadding1D((1, 2), data_format=data_format)
    tpad = (1, 2) if steps == 2 else (0, 0, 1, 2)
    np.testing.assert_array_equal(np.asarray(pad(x)),
                                  torch.nn.functional.pad(torch.tensor(x), tpad).numpy())
    assert gradcheck(L.ZeroPadding1D(2, data_format=data_format), x)
    assert _round_trip(up).size == 3 and _round_trip(pad).padding == (1, 2)
    assert _round_trip(pad).data_format == pad.data_format


def test_1d_layers_in_models_layouts_and_bad_arguments(rng, tmp_path):
    ids = rng.integers(1, 9, (3, 5))
    model = nb.Sequential([L.Embedding(9, 4), L.UpSampling1D(2), L.ZeroPadding1D(1),
                           L.Conv1D(2, 3, data_format="channels_last"),
                           L.GlobalMaxPooling1D()])
    assert model.predict(ids).shape == (3, 2)
    _save_load(model, ids, tmp_path)
    # variable steps in a functional model
    inp = nb.Input((None, 4))
    fn = nb.Model(inp, L.ZeroPadding1D(2)(L.UpSampling1D(2)(inp)))
    assert fn.output_shape == (None, 4)
    assert fn.predict(rng.standard_normal((1, 3, 4))).shape == (1, 10, 4)
    # left at the default, a channels_first input is refused; told, it is taken
    seq = nb.Input((4, 10))
    with pytest.raises(ValueError, match=r"UpSampling1D .*whose output is \(batch, channels, "
                                         r"length\).*data_format=\"channels_first\""):
        L.UpSampling1D()(L.Conv1D(2, 3)(seq))
    assert L.ZeroPadding1D(data_format="channels_first")(L.Conv1D(2, 3)(seq)).shape == \
        (None, 2, 10)
    with pytest.raises(ValueError, match=r"UpSampling1D 'u': size must be"):
        L.UpSampling1D(0, name="u")
    with pytest.raises(ValueError, match=r"ZeroPadding1D 'p': padding must be an int or a pair "
                                         r"\(before, after\) of ints >= 0, got \(1, 2, 3\)"):
        L.ZeroPadding1D((1, 2, 3), name="p")
    with pytest.raises(ValueError, match=r"data_format must be"):
        L.UpSampling1D(data_format="nhwc")
    with pytest.raises(ValueError, match=r"expects 3-D input \(batch, steps, features\)"):
        L.UpSampling1D()(rng.standard_normal((2, 3)))


# ------------------------------------------------------------------------------------ Identity
def test_identity(rng, tmp_path):
    x = rng.standard_normal((2, 3, 4))
    out = L.Identity()(x)
    np.testing.assert_array_equal(np.asarray(out), x)
    assert gradcheck(L.Identity(), x)
    ids = np.array([[1, 2, 0]])
    t = L.Identity()(L.Embedding(4, 2, mask_zero=True)(ids))
    np.testing.assert_array_equal(np.asarray(t.mask), ids != 0)
    _round_trip(L.Identity(name="i"))
    model = nb.Sequential([L.Identity(input_shape=(3, 4)), L.Flatten(), L.Dense(1)])
    _save_load(model, x, tmp_path)


# ---------------------------------------------------------------------------------------- CUDA
def test_layers_on_the_cuda_backend_match_the_cpu(allow_cuda, rng):
    """The layers run on the CUDA backend (Numba's simulator here) as on the CPU, training and
    adapting there too."""
    x = rng.standard_normal((2, 3, 4))
    norm = L.Normalization()
    norm.adapt(x)
    model = nb.Sequential([norm, L.Rescaling(0.5, 1.0), L.UpSampling1D(2), L.ZeroPadding1D(1),
                           L.Identity(), L.TimeDistributed(L.Dense(2))], input_shape=(3, 4),
                          dtype="float64")
    want = model.predict(x)
    gpu = model.to("cuda")
    np.testing.assert_allclose(gpu.predict(x), want, rtol=1e-10)
    gpu.compile("sgd", "mse")
    assert np.isfinite(gpu.train_on_batch(x, rng.standard_normal((2, 8, 2))))
    rep = nb.Sequential([L.RepeatVector(3), L.TimeDistributed(L.Dense(2))], input_shape=(4,),
                        dtype="float64")
    want = rep.predict(x[:, 0])
    np.testing.assert_allclose(rep.to("cuda").predict(x[:, 0]), want, rtol=1e-10)
    img = rng.standard_normal((1, 2, 3, 3))
    crop = nb.Sequential([L.ZeroPadding2D(1), L.Cropping2D(((1, 0), (0, 1)))],
                         input_shape=(2, 3, 3), dtype="float64", device="cuda")
    np.testing.assert_array_equal(crop.predict(img)[:, :, :3, 1:], img)
    adapted = L.Normalization()
    on_gpu = nb.Sequential([adapted], input_shape=(4,), dtype="float64", device="cuda")
    adapted.adapt(x[:, 0])
    np.testing.assert_allclose(on_gpu.predict(x[:, 0]).std(0), 1.0, rtol=1e-10)


# ------------------------------------------------------------------ Attention, AdditiveAttention
def _torch_attention(q, v, k, scores_fn, v_mask=None, q_mask=None, causal=False):
    """softmax(scores + mask) @ v, the query mask zeroing outputs (Keras), in torch float64."""
    import torch
    q, v, k = (torch.tensor(a) for a in (q, v, k))
    s = scores_fn(q, k)
    keep = torch.ones_like(s)
    if v_mask is not None:
        keep = keep * torch.tensor(v_mask, dtype=s.dtype)[:, None, :]
    if causal:
        keep = keep * torch.tril(torch.ones(s.shape[1:], dtype=s.dtype))
    w = torch.softmax(s - 1e9 * (1 - keep), dim=-1)
    out = w @ v
    if q_mask is not None:
        out = out * torch.tensor(q_mask, dtype=s.dtype)[:, :, None]
    return out.numpy(), w.numpy()


def _scores(kind, weights):
    import torch
    if kind == "dot":
        return lambda q, k: (q @ k.transpose(1, 2)) * float(weights[0][0])
    if kind == "concat":
        return lambda q, k: float(weights[1][0]) * torch.tanh(
            float(weights[0][0]) * (q[:, :, None] + k[:, None])).sum(-1)
    scale = torch.tensor(weights[0])
    return lambda q, k: (scale * torch.tanh(q[:, :, None] + k[:, None])).sum(-1)


@pytest.mark.parametrize("kind", ["dot", "concat", "additive"])
@pytest.mark.parametrize("with_key, causal", [(False, False), (True, False), (True, True)])
def test_attention_matches_torch(kind, with_key, causal, rng):
    pytest.importorskip("torch")
    q, v, k = (rng.standard_normal(s) for s in ((2, 3, 4), (2, 5, 6), (2, 5, 4)))
    if not with_key:
        v = k
    layer = L.AdditiveAttention() if kind == "additive" else \
        L.Attention(use_scale=True, score_mode=kind)
    inputs = [q, v, k] if with_key else [q, v]
    layer(inputs)
    weights = [rng.uniform(0.5, 1.5, w.shape) for w in layer.get_weights()]
    layer.set_weights(weights)
    out, w = layer(inputs, return_attention_scores=True, use_causal_mask=causal)
    want_out, want_w = _torch_attention(q, v, k, _scores(kind, weights), causal=causal)
    np.testing.assert_allclose(np.asarray(out), want_out, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(np.asarray(w), want_w, rtol=1e-12, atol=1e-13)
    assert out.shape == (2, 3, v.shape[2]) and w.shape == (2, 3, 5)
    if causal:
        assert np.all(np.asarray(w)[:, np.triu_indices(3, 1)[0], np.triu_indices(3, 1)[1]] == 0)


def test_attention_defaults_match_keras(rng):
    pytest.importorskip("torch")
    q, v = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 6, 4))
    plain = L.Attention()
    want, _ = _torch_attention(q, v, v, lambda a, b: a @ b.transpose(1, 2))
    np.testing.assert_allclose(np.asarray(plain([q, v])), want, rtol=1e-12, atol=1e-13)
    assert plain.weights == [] and plain.get_config() == {
        "name": plain.name, "dtype": "float64", "use_scale": False, "score_mode": "dot",
        "dropout": 0.0, "seed": None}
    add = L.AdditiveAttention(name="add")
    add([q, v])
    assert [w.shape for w in add.get_weights()] == [(4,)]
    assert add.get_config() == {"name": "add", "dtype": "float64", "use_scale": True,
                                "dropout": 0.0, "seed": None}
    unscaled = L.AdditiveAttention(use_scale=False)
    want, _ = _torch_attention(q, v, v, _scores("additive", [np.ones(4)]))
    np.testing.assert_allclose(np.asarray(unscaled([q, v])), want, rtol=1e-12, atol=1e-13)
    assert unscaled.weights == []
    for layer in (plain, add, unscaled, L.Attention(use_scale=True, score_mode="concat",
                                                    dropout=0.25, seed=3)):
        _round_trip(layer)


@pytest.mark.parametrize("kind", ["dot", "concat", "additive"])
def test_attention_masks_from_embeddings(kind, rng):
    """The value's mask keeps padded values out, the query's zeroes padded queries' outputs
    and is the output's mask (Keras)."""
    pytest.importorskip("torch")
    q_ids = np.array([[3, 1, 0], [2, 0, 0]])
    v_ids = np.array([[1, 2, 3, 0], [4, 0, 0, 0]])
    emb = L.Embedding(5, 4, mask_zero=True, dtype="float64")
    tq, tv = emb(q_ids), emb(v_ids)
    layer = L.AdditiveAttention() if kind == "additive" else \
        L.Attention(use_scale=True, score_mode=kind)
    out, w = layer([tq, tv], return_attention_scores=True, use_causal_mask=kind == "dot")
    np.testing.assert_array_equal(np.asarray(out.mask), q_ids != 0)
    want_out, want_w = _torch_attention(np.asarray(tq), np.asarray(tv), np.asarray(tv),
                                        _scores(kind, layer.get_weights()), v_mask=v_ids != 0,
                                        q_mask=q_ids != 0, causal=kind == "dot")
    np.testing.assert_allclose(np.asarray(out), want_out, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(np.asarray(w), want_w, rtol=1e-12, atol=1e-13)
    assert np.all(np.asarray(w)[:, :, 3] == 0) and np.all(np.asarray(w)[1, :, 1:] == 0)
    assert np.all(np.asarray(out)[1, 1:] == 0)


@pytest.mark.parametrize("kind", ["dot", "concat", "additive"])
def test_attention_gradients(kind, rng):
    """Every input (query, value, key) and weight, with masks and the causal mask."""
    q, v, k = (rng.standard_normal(s) for s in ((2, 3, 4), (2, 4, 3), (2, 4, 4)))
    for with_key in (False, True):
        ins = [nb.Input((None, 4), dtype="float64"),
               nb.Input((None, 3 if with_key else 4), dtype="float64")]
        if with_key:
            ins.append(nb.Input((None, 4), dtype="float64"))
        layer = L.AdditiveAttention() if kind == "additive" else \
            L.Attention(use_scale=True, score_mode=kind)
        out, w = layer(ins, return_attention_scores=True, use_causal_mask=with_key)
        model = nb.Model(ins, [out, w])
        assert gradcheck(model, [q, v, k] if with_key else [q, k])


def test_attention_dropout_drops_weights_in_training_only(rng):
    q, v = rng.standard_normal((3, 4, 2)), rng.standard_normal((3, 6, 2))
    layer = L.Attention(dropout=0.5, seed=1)
    out, w = layer([q, v], return_attention_scores=True, training=True)
    w = np.asarray(w)
    full = np.asarray(layer([q, v], return_attention_scores=True)[1])
    kept = w != 0
    assert 0.3 < kept.mean() < 0.7
    np.testing.assert_allclose(w[kept], 2.0 * full[kept], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(out), np.einsum("nqv,nvd->nqd", w, v), rtol=1e-5,
                               atol=1e-6)
    again = L.Attention(dropout=0.5, seed=1)
    np.testing.assert_array_equal(
        np.asarray(again([q, v], return_attention_scores=True, training=True)[1]), w)
    # the gradient through the dropped weights, the draw replayed by the seed
    x = [rng.standard_normal((2, 3, 2)), rng.standard_normal((2, 4, 2))]

    def fn(a, b):
        return L.Attention(dropout=0.4, seed=5, dtype="float64")([a, b], training=True)
    assert gradcheck(fn, *x)


def test_attention_in_models_trains_and_saves(rng, tmp_path):
    """A small seq2seq-style model: an embedded (masked) query attends over an embedded
    sequence; Sequential-free functional graph with both layers, saved and loaded."""
    ids = rng.integers(0, 6, (16, 5))
    ids[:, 3:] *= rng.integers(0, 2, (16, 2))
    y = rng.standard_normal((16, 1))
    inp = nb.Input((None,), dtype="int32")
    emb = L.Embedding(6, 4, mask_zero=True)(inp)
    a = L.Attention(use_scale=True, score_mode="concat", dropout=0.1, seed=0)(
        [emb, emb], use_causal_mask=True)
    b = L.AdditiveAttention(dropout=0.1, seed=0)([emb, a, emb])
    model = nb.Model(inp, L.Dense(1)(L.GlobalAveragePooling1D()(b)))
    model.compile("adam", "mse")
    hist = model.fit(ids, y, epochs=4, batch_size=4, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    _save_load(model, ids, tmp_path)
    inputs = [nb.Input((None, 3)), nb.Input((None, 3))]
    out, scores = L.Attention()(inputs, return_attention_scores=True)
    assert out.shape == (None, None, 3) and scores.shape == (None, None, None)


def test_attention_bad_arguments_and_inputs(rng):
    with pytest.raises(ValueError, match=r"Attention 'a': score_mode must be one of 'dot', "
                                         r"'concat', got 'add'"):
        L.Attention(score_mode="add", name="a")
    with pytest.raises(ValueError, match=r"dropout must be a finite number >= 0 and < 1, got 1"):
        L.Attention(dropout=1)
    with pytest.raises(ValueError, match=r"use_scale must be True or False, got 'yes'"):
        L.AdditiveAttention(use_scale="yes")
    with pytest.raises(TypeError, match=r"AdditiveAttention: unexpected keyword argument "
                                        r"'score_mode'"):
        L.AdditiveAttention(score_mode="dot")
    q, v = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5, 4))
    with pytest.raises(ValueError, match=r"is called on \[query, value\] or \[query, value, "
                                         r"key\], got 1 inputs"):
        L.Attention()([q])
    with pytest.raises(ValueError, match=r"query and value \(the key\) must have the same "
                                         r"number of features, got \(None, 3, 4\) and "
                                         r"\(None, 5, 2\)"):
        L.Attention()([q, v[:, :, :2]])
    with pytest.raises(ValueError, match=r"key and value must have the same number of steps"):
        L.Attention()([q, v, v[:, :4]])
    with pytest.raises(ValueError, match=r"query, value and key must share the batch"):
        L.Attention()([q, v[:1]])
    with pytest.raises(ValueError, match=r"must be \(batch, time, features\)"):
        L.Attention()([q[:, 0], v[:, 0]])


def test_attention_on_the_cuda_backend_matches_the_cpu(allow_cuda, rng):
    q, v = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 4, 4))
    ins = [nb.Input((None, 4), dtype="float64"), nb.Input((None, 4), dtype="float64")]
    a = L.Attention(use_scale=True)(ins, use_causal_mask=True)
    model = nb.Model(ins, L.AdditiveAttention()([a, ins[1]]))
    want = model.predict([q, v])
    gpu = model.to("cuda")
    np.testing.assert_allclose(gpu.predict([q, v]), want, rtol=1e-10)
    gpu.compile("sgd", "mse")
    assert np.isfinite(gpu.train_on_batch([q, v], rng.standard_normal((2, 3, 4))))


# ------------------------------------------------------------------------------------------ Dot
@pytest.mark.parametrize("shapes, axes, spec", [
    (((3, 4), (3, 4)), 1, "nd,nd->n"),
    (((3, 4), (3, 4)), -1, "nd,nd->n"),
    (((2, 3, 4), (2, 5, 4)), (2, 2), "ntd,nsd->nts"),
    (((2, 3, 4), (2, 3, 5)), 1, "ntd,nts->nds"),
    (((2, 5, 3), (2, 4, 5)), (1, 2), "ntd,nst->nds"),
    (((2, 4), (2, 3, 4)), (1, -1), "nd,ntd->nt"),
    (((2, 3, 4), (2, 4)), (-1, 1), "ntd,nd->nt"),
    (((2, 2, 3, 4), (2, 4, 5)), (3, 1), "nabd,nde->nabe"),
])
def test_dot_matches_numpy_and_torch(shapes, axes, spec, rng):
    torch = pytest.importorskip("torch")
    x, y = (rng.standard_normal(s) for s in shapes)
    layer = L.Dot(axes)
    out = np.asarray(layer([x, y]))
    want = np.einsum(spec, x, y)
    want = want[:, None] if want.ndim == 1 else want
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-13)
    assert layer.compute_output_shape([s[1:] for s in shapes]) == want.shape[1:]
    cos = np.asarray(L.Dot(axes, normalize=True)([x, y]))
    a0, a1 = (a % len(s) for a, s in zip((axes,) * 2 if isinstance(axes, int) else axes,
                                          shapes))
    nx = torch.nn.functional.normalize(torch.tensor(x), dim=a0).numpy()
    ny = torch.nn.functional.normalize(torch.tensor(y), dim=a1).numpy()
    want = np.einsum(spec, nx, ny)
    np.testing.assert_allclose(cos, want[:, None] if want.ndim == 1 else want, rtol=1e-12,
                               atol=1e-13)
    for normalize in (False, True):
        ins = [nb.Input(s[1:], dtype="float64") for s in shapes]
        assert gradcheck(nb.Model(ins, L.Dot(axes, normalize=normalize)(ins)), [x, y])


def test_dot_keras_example_cosine_and_zero_vectors():
    x = np.arange(10.0).reshape(1, 5, 2)
    y = np.arange(10.0, 20.0).reshape(1, 2, 5)
    np.testing.assert_array_equal(np.asarray(L.Dot(axes=(1, 2))([x, y])),
                                  [[[260, 360], [320, 445]]])
    a = np.array([[1.0, 0.0], [3.0, 4.0], [0.0, 0.0]])
    b = np.array([[0.0, 2.0], [6.0, 8.0], [1.0, 1.0]])
    np.testing.assert_allclose(np.asarray(L.Dot(1, normalize=True)([a, b])),
                               [[0.0], [1.0], [0.0]], atol=1e-15)
    # a zero vector: the output is 0 and its gradient finite, that of x / 1e-7 (the floor)
    t = [nb.ops.convert_to_tensor(a), nb.ops.convert_to_tensor(b)]
    with nb.GradientTape() as tape:
        tape.watch(t)
        s = nb.ops.sum(L.Dot(1, normalize=True)(t))
    g = np.asarray(tape.gradient(s, t[0]))
    assert np.isfinite(g).all()
    np.testing.assert_allclose(g[2], b[2] / np.sqrt(2) / 1e-7, rtol=1e-12)


def test_dot_in_a_trained_word2vec_style_model(rng, tmp_path):
    """The Keras word2vec/recommender shape: two embedded ids, their dot product a logit."""
    pairs, labels = rng.integers(0, 8, (32, 2)), rng.integers(0, 2, (32, 1)).astype(float)
    target, context = nb.Input((1,), dtype="int32"), nb.Input((1,), dtype="int32")
    t = L.Flatten()(L.Embedding(8, 4)(target))
    c = L.Flatten()(L.Embedding(8, 4)(context))
    model = nb.Model([target, context], L.Dense(1, activation="sigmoid")(L.Dot(axes=1)([t, c])))
    assert model.output_shape == (1,)
    model.compile("adam", "binary_crossentropy")
    hist = model.fit([pairs[:, :1], pairs[:, 1:]], labels, epochs=5, batch_size=8, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    _save_load(model, [pairs[:, :1], pairs[:, 1:]], tmp_path)
    layer = L.Dot((2, -1), normalize=True, name="d")
    assert _round_trip(layer).axes == [2, -1] and layer.get_config()["normalize"] is True
    ins = [nb.Input((None, 4)), nb.Input((None, 4))]
    assert L.Dot((2, 2))(ins).shape == (None, None, None)


def test_dot_bad_arguments_and_inputs(rng):
    for axes in (0, (1, 0), (1, 2, 3), 1.5, "1", True):
        with pytest.raises(ValueError, match=r"Dot 'd': axes must be a non-zero int or a pair "
                                             r"of non-zero ints \(axis 0 is the batch\), got"):
            L.Dot(axes, name="d")
    with pytest.raises(ValueError, match=r"normalize must be True or False, got 1"):
        L.Dot(1, normalize=1)
    x = rng.standard_normal((2, 3))
    with pytest.raises(ValueError, match=r"takes exactly 2 inputs, got 3"):
        L.Dot(1)([x, x, x])
    with pytest.raises(ValueError, match=r"the contracted axes differ in size: axis 1 of input "
                                         r"0 \(None, 3\) is 3, axis 1 of input 1 \(None, 4\) "
                                         r"is 4"):
        L.Dot(1)([x, rng.standard_normal((2, 4))])
    with pytest.raises(ValueError, match=r"axes 2 has no axis 2 in input 0 of rank 2"):
        L.Dot(2)([x, x])
    with pytest.raises(ValueError, match=r"must share the batch"):
        L.Dot(1)([x, rng.standard_normal((3, 3))])


# ---------------------------------------------------------------------------------------- PReLU
@pytest.mark.parametrize("shape, shared_axes, torch_weight", [
    ((3, 4), None, None),
    ((2, 3, 4, 5), [2, 3], (3,)),
    ((2, 3, 4, 5), (1, 2, 3), (1,)),
    ((2, 5, 3), 1, None),
])
def test_prelu_matches_torch(shape, shared_axes, torch_weight, rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal(shape)
    layer = L.PReLU(shared_axes=shared_axes)
    np.testing.assert_array_equal(np.asarray(layer(x)), np.maximum(x, 0))   # alpha starts at 0
    alpha = rng.uniform(-0.5, 0.5, layer.get_weights()[0].shape)
    layer.set_weights([alpha])
    out = np.asarray(layer(x))
    tx, ta = torch.tensor(x), torch.tensor(alpha)
    if torch_weight is not None:        # torch's PReLU: one alpha per channel (or one in all)
        want = torch.nn.functional.prelu(tx, ta.reshape(torch_weight))
    else:
        want = torch.where(tx >= 0, tx, ta * tx)
    np.testing.assert_allclose(out, want.numpy(), rtol=1e-14)
    assert gradcheck(layer, x)
    again = _round_trip(layer)
    assert again.shared_axes == layer.shared_axes and again.get_config()["alpha_initializer"] \
        == "Zeros"


def test_prelu_in_a_trained_conv_model_with_a_regularizer(rng, tmp_path):
    x, y = rng.standard_normal((8, 2, 5, 5)), rng.standard_normal((8, 1))
    prelu = L.PReLU(alpha_initializer=nb.initializers.Constant(0.25), shared_axes=[2, 3],
                    alpha_regularizer=nb.regularizers.L2(0.5))
    model = nb.Sequential([L.Conv2D(3, 3, input_shape=(2, 5, 5)), prelu, L.Flatten(),
                           L.Dense(1)], dtype="float64")
    model.compile("adam", "mse")
    before = prelu.get_weights()[0].copy()
    np.testing.assert_array_equal(before, 0.25)
    loss = model.evaluate(x, y, batch_size=8, verbose=0)
    loss = loss["loss"] if isinstance(loss, dict) else loss
    mse = np.mean((model.predict(x) - y) ** 2)
    np.testing.assert_allclose(loss, mse + 0.5 * np.sum(before ** 2), rtol=1e-10)
    model.fit(x, y, epochs=3, batch_size=4, verbose=0)
    assert prelu.get_weights()[0].shape == (3, 1, 1)
    assert not np.array_equal(prelu.get_weights()[0], before)
    _save_load(model, x, tmp_path)


def test_prelu_bad_arguments(rng):
    for axes in (0, [1, 0], "1", [1.5]):
        with pytest.raises(ValueError, match=r"PReLU 'p': shared_axes must be None, an int or a "
                                             r"list of ints >= 1"):
            L.PReLU(shared_axes=axes, name="p")
    with pytest.raises(ValueError, match=r"alpha_initializer"):
        L.PReLU(alpha_initializer="nope")
    with pytest.raises(ValueError, match=r"alpha_regularizer: unknown regularizer 'l3'"):
        L.PReLU(alpha_regularizer="l3")
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'alpha_constraint'"):
        L.PReLU(alpha_constraint="non_neg")
    with pytest.raises(ValueError, match=r"shared_axes \[3\] names axis 3, but the input shape "
                                         r"\(None, 2, 3\) has axes 1..2"):
        L.PReLU(shared_axes=3)(rng.standard_normal((1, 2, 3)))
    with pytest.raises(ValueError, match=r"alpha needs known sizes .* share it with "
                                         r"shared_axes=\[1\]"):
        nb.Sequential([L.PReLU(input_shape=(None, 3))])


# ------------------------------------------------------------------------ ActivityRegularization
def test_activity_regularization_adds_the_keras_penalty(rng, tmp_path):
    x, y = rng.standard_normal((6, 4)), rng.standard_normal((6, 2))
    layer = L.ActivityRegularization(l1=0.1, l2=0.2)
    out = layer(x)
    np.testing.assert_array_equal(np.asarray(out), x)
    want = (0.1 * np.abs(x).sum() + 0.2 * (x ** 2).sum()) / 6
    np.testing.assert_allclose(float(layer.losses[0]), want, rtol=1e-13)
    assert L.ActivityRegularization()(x) is not None and L.ActivityRegularization().losses == []

    def fn(t):
        reg = L.ActivityRegularization(l1=0.1, l2=0.2, dtype="float64")
        h = reg(nb.ops.tanh(t))
        return [h, reg.losses[0]]
    assert gradcheck(fn, x + 0.1)           # input and penalty (|x| away from its kink)
    # a call() returning its input passes the output's gradient on (it gave zeros before)
    for layer in (L.ActivityRegularization(), L.ActivityRegularization(l1=0.1, l2=0.2)):
        assert gradcheck(layer, x + 0.1)
        g = rng.standard_normal(x.shape)
        layer.forward(x, training=True)
        np.testing.assert_array_equal(layer.backward(g), g)
    dense = L.Dense(3)
    model = nb.Sequential([dense, L.ActivityRegularization(l2=0.5), L.Dense(2)],
                          input_shape=(4,), dtype="float64")
    model.compile("sgd", "mse")
    h = x @ dense.get_weights()[0] + dense.get_weights()[1]
    loss = model.evaluate(x, y, batch_size=6, verbose=0)
    loss = loss["loss"] if isinstance(loss, dict) else loss
    np.testing.assert_allclose(loss, np.mean((model.predict(x) - y) ** 2) +
                               0.5 * np.sum(h ** 2) / 6, rtol=1e-10)
    hist = model.fit(x, y, epochs=5, batch_size=6, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    _save_load(model, x, tmp_path)
    assert _round_trip(L.ActivityRegularization(l1=0.5, name="a")).l1 == 0.5
    with pytest.raises(ValueError, match=r"ActivityRegularization 'a': l2 must be a finite "
                                         r"non-negative number, got -1"):
        L.ActivityRegularization(l2=-1, name="a")


# ---------------------------------------------------------------- Group- and UnitNormalization
@pytest.mark.parametrize("shape, groups, axis", [
    ((2, 6, 4, 5), 3, 1),
    ((3, 8), 4, 1),
    ((2, 4, 3, 3), -1, 1),
    ((2, 4, 3, 3), 1, 1),
    ((2, 5, 6), 2, -1),
    ((2, 6, 5, 1, 2), 6, 1),
])
def test_group_normalization_matches_torch(shape, groups, axis, rng):
    torch = pytest.importorskip("torch")
    x = 2.0 + 3.0 * rng.standard_normal(shape)
    layer = L.GroupNormalization(groups=groups, axis=axis)
    np.testing.assert_allclose(np.asarray(layer(x)).mean(), 0.0, atol=1e-10)
    c = shape[axis]
    gamma, beta = rng.standard_normal(c), rng.standard_normal(c)
    layer.set_weights([gamma, beta])
    tx = torch.tensor(np.moveaxis(x, axis, 1))
    want = torch.nn.functional.group_norm(tx, c if groups == -1 else groups,
                                          torch.tensor(gamma), torch.tensor(beta), eps=1e-3)
    np.testing.assert_allclose(np.asarray(layer(x)), np.moveaxis(want.numpy(), 1, axis),
                               rtol=1e-12, atol=1e-12)
    assert gradcheck(layer, x)
    assert _round_trip(layer).groups == groups


def test_group_normalization_options_model_and_bad_arguments(rng, tmp_path):
    x = rng.standard_normal((2, 4, 3, 3))
    plain = L.GroupNormalization(2, center=False, scale=False, epsilon=1e-5)
    torch = pytest.importorskip("torch")
    np.testing.assert_allclose(np.asarray(plain(x)), torch.nn.functional.group_norm(
        torch.tensor(x), 2, eps=1e-5).numpy(), rtol=1e-12, atol=1e-12)
    assert plain.weights == [] and gradcheck(plain, x)
    # the spatial axes may change between calls
    np.testing.assert_allclose(np.asarray(plain(x[:, :, :2, :1])), torch.nn.functional.group_norm(
        torch.tensor(x[:, :, :2, :1]), 2, eps=1e-5).numpy(), rtol=1e-12, atol=1e-12)
    model = nb.Sequential([L.Conv2D(4, 3, padding="same", input_shape=(2, 5, 5)),
                           L.GroupNormalization(groups=2), L.GlobalAveragePooling2D(),
                           L.Dense(1)], dtype="float64")
    model.compile("adam", "mse")
    xs, y = rng.standard_normal((8, 2, 5, 5)), rng.standard_normal((8, 1))
    hist = model.fit(xs, y, epochs=4, batch_size=4, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    _save_load(model, xs, tmp_path)
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match=r"GroupNormalization 'g': groups must be a positive "
                                             r"int or -1"):
            L.GroupNormalization(bad, name="g")
    with pytest.raises(ValueError, match=r"axis must be a non-zero int"):
        L.GroupNormalization(axis=0)
    with pytest.raises(ValueError, match=r"the 4 channels on axis 1 \(input shape \(None, 4, 3, "
                                         r"3\)\) do not split into groups=3 equal groups"):
        L.GroupNormalization(3)(x)
    with pytest.raises(ValueError, match=r"do not split into groups=32"):
        L.GroupNormalization()(x)
    with pytest.raises(ValueError, match=r"axis 4 is not a non-batch axis"):
        L.GroupNormalization(2, axis=4)(x)


@pytest.mark.parametrize("shape, axis", [((3, 5), -1), ((2, 3, 4, 5), [2, 3]), ((2, 3, 4), 1),
                                         ((2, 3, 4), (1, -1))])
def test_unit_normalization_matches_torch(shape, axis, rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal(shape)
    layer = L.UnitNormalization(axis=axis)
    dims = tuple(a % len(shape) for a in (axis if isinstance(axis, (list, tuple)) else [axis]))
    tx = torch.tensor(x)
    want = tx / torch.clamp(torch.sqrt((tx ** 2).sum(dims, keepdim=True)), min=1e-12)
    np.testing.assert_allclose(np.asarray(layer(x)), want.numpy(), rtol=1e-13)
    if len(dims) == 1:
        np.testing.assert_allclose(np.asarray(layer(x)), torch.nn.functional.normalize(
            tx, dim=dims[0]).numpy(), rtol=1e-13)
    assert gradcheck(layer, x)
    assert _round_trip(layer).axis == (list(axis) if isinstance(axis, (list, tuple)) else axis)


def test_unit_normalization_zero_rows_model_and_bad_arguments(rng, tmp_path):
    x = np.array([[0.0, 0.0, 0.0], [3.0, 0.0, 4.0]])
    t = nb.ops.convert_to_tensor(x)
    with nb.GradientTape() as tape:
        tape.watch(t)
        out = L.UnitNormalization()(t)
        s = nb.ops.sum(out * np.array([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(np.asarray(out), [[0, 0, 0], [0.6, 0, 0.8]])
    assert np.isfinite(np.asarray(tape.gradient(s, t))).all()
    xs, y = rng.standard_normal((8, 4)), rng.standard_normal((8, 2))
    model = nb.Sequential([L.Dense(3), L.UnitNormalization(), L.Dense(2)], input_shape=(4,))
    model.compile("adam", "mse")
    hist = model.fit(xs, y, epochs=4, batch_size=4, verbose=0)
    assert np.isfinite(hist.history["loss"]).all()
    np.testing.assert_allclose(np.linalg.norm(np.asarray(L.UnitNormalization()(xs)), axis=1), 1.0,
                               rtol=1e-12)
    _save_load(model, xs, tmp_path)
    for bad in (0, [1, 0], "x", []):
        with pytest.raises(ValueError, match=r"UnitNormalization 'u': axis must be a non-zero "
                                             r"int or a list of them"):
            L.UnitNormalization(axis=bad, name="u")
    with pytest.raises(ValueError, match=r"axis 3 is not a non-batch axis of inputs of rank 2"):
        L.UnitNormalization(axis=3)(xs)


# ----------------------------------------------------------------------------------- Cropping1D
@pytest.mark.parametrize("data_format", [None, "channels_first"])
@pytest.mark.parametrize("cropping, pair", [(1, (1, 1)), ((0, 2), (0, 2)), ((2, 0), (2, 0))])
def test_cropping1d(rng, data_format, cropping, pair):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 5, 4))
    layer = L.Cropping1D(cropping, data_format=data_format)
    steps = 2 if data_format == "channels_first" else 1
    tx = torch.tensor(x).narrow(steps, pair[0], x.shape[steps] - sum(pair))
    np.testing.assert_array_equal(np.asarray(layer(x)), tx.numpy())
    assert gradcheck(L.Cropping1D(cropping, data_format=data_format), x)
    assert _round_trip(layer).cropping == pair and layer.get_config()["cropping"] == list(pair)
    # the inverse of ZeroPadding1D
    np.testing.assert_array_equal(np.asarray(layer(L.ZeroPadding1D(
        cropping, data_format=data_format)(x))), x)


def test_cropping1d_in_models_and_bad_arguments(rng, tmp_path):
    assert L.Cropping1D().get_config()["cropping"] == [1, 1]          # Keras' default
    ids, y = rng.integers(1, 9, (8, 6)), rng.standard_normal((8, 1))
    model = nb.Sequential([L.Embedding(9, 4), L.Cropping1D((1, 2)),
                           L.Conv1D(2, 2, data_format="channels_last"),
                           L.GlobalAveragePooling1D(), L.Dense(1)])
    model.compile("adam", "mse")
    hist = model.fit(ids, y, epochs=3, batch_size=4, verbose=0)
    assert np.isfinite(hist.history["loss"]).all()
    _save_load(model, ids, tmp_path)
    inp = nb.Input((None, 4))
    fn = nb.Model(inp, L.Cropping1D(2)(inp))
    assert fn.predict(rng.standard_normal((1, 7, 4))).shape == (1, 3, 4)
    with pytest.raises(ValueError, match=r"Cropping1D 'c': cropping must be an int or a pair "
                                         r"\(before, after\) of ints >= 0, got -1"):
        L.Cropping1D(-1, name="c")
    with pytest.raises(ValueError, match=r"cropping \(2, 3\) leaves nothing of 5 steps"):
        L.Cropping1D((2, 3))(rng.standard_normal((1, 5, 2)))
    with pytest.raises(ValueError, match=r"cropping \(2, 2\) leaves nothing of 4 steps"):
        fn_small = nb.Model(inp, L.Cropping1D((2, 2))(inp))
        fn_small.predict(rng.standard_normal((1, 4, 4)))
    with pytest.raises(ValueError, match=r"Cropping1D .*whose output is \(batch, channels, "
                                         r"length\)"):
        L.Cropping1D()(L.Conv1D(2, 3)(nb.Input((4, 10))))
    with pytest.raises(ValueError, match=r"expects 3-D input"):
        L.Cropping1D()(rng.standard_normal((2, 3)))


def test_new_layers_on_the_cuda_backend_match_the_cpu(allow_cuda, rng):
    """Dot, PReLU, GroupNormalization, UnitNormalization, Cropping1D and ActivityRegularization
    on the CUDA backend (Numba's simulator here) as on the CPU, training there too."""
    x = rng.standard_normal((2, 5, 4))
    inp = nb.Input((5, 4), dtype="float64")
    h = L.Cropping1D((1, 0))(inp)
    h = L.PReLU(alpha_initializer=nb.initializers.Constant(0.2), shared_axes=[1])(h)
    h = L.GroupNormalization(2, axis=-1)(h)
    h = L.ActivityRegularization(l2=0.01)(L.UnitNormalization()(h))
    out = L.Dot((2, 2), normalize=True)([h, inp])
    model = nb.Model(inp, out)
    want = model.predict(x)
    gpu = model.to("cuda")
    np.testing.assert_allclose(gpu.predict(x), want, rtol=1e-10, atol=1e-12)
    gpu.compile("sgd", "mse")
    assert np.isfinite(gpu.train_on_batch(x, rng.standard_normal((2, 4, 5))))


# ------------------------------------------------------------------------------ CategoryEncoding
def test_category_encoding_keras_docstring_examples():
    ids = np.array([[0, 1], [0, 0], [1, 2], [3, 1]])
    np.testing.assert_array_equal(np.asarray(L.CategoryEncoding(4, "one_hot")(
        np.array([3, 2, 0, 1]))), np.eye(4)[[3, 2, 0, 1]])
    np.testing.assert_array_equal(np.asarray(L.CategoryEncoding(num_tokens=4)(ids)),
                                  [[1, 1, 0, 0], [1, 0, 0, 0], [0, 1, 1, 0], [0, 1, 0, 1]])
    weights = np.array([[.1, .2], [.1, .1], [.2, .3], [.4, .2]])
    np.testing.assert_allclose(np.asarray(L.CategoryEncoding(4, output_mode="count")(
        ids, count_weights=weights)), [[.1, .2, 0, 0], [.2, 0, 0, 0], [0, .2, .3, 0],
                                       [0, .2, 0, .4]], rtol=1e-6)


@pytest.mark.parametrize("shape", [(7,), (7, 1), (7, 3), (1, 5)])
def test_category_encoding_matches_torch(shape, rng):
    torch = pytest.importorskip("torch")
    ids = rng.integers(0, 6, shape)
    hot = torch.nn.functional.one_hot(torch.tensor(ids), 6).double()
    one = np.asarray(L.CategoryEncoding(6, "one_hot")(ids))
    want = hot.numpy()
    if len(shape) == 2 and shape[1] == 1:
        want = want[:, 0]
    np.testing.assert_array_equal(one, want)
    rows = hot if len(shape) == 2 else hot[:, None]
    np.testing.assert_array_equal(np.asarray(L.CategoryEncoding(6)(ids)),
                                  rows.amax(1).numpy())
    np.testing.assert_array_equal(np.asarray(L.CategoryEncoding(6, "count")(ids)),
                                  rows.sum(1).numpy())
    np.testing.assert_array_equal(np.asarray(L.CategoryEncoding(6, "count")(ids)),
                                  [np.bincount(np.ravel(r), minlength=6) for r in ids])
    w = rng.standard_normal(shape)
    want = (rows * torch.tensor(w if len(shape) == 2 else w[:, None])[..., None]).sum(1)
    layer = L.CategoryEncoding(6, "count", dtype="float64")
    np.testing.assert_allclose(np.asarray(layer(ids, count_weights=w)), want.numpy(),
                               rtol=1e-14)
    assert gradcheck(lambda t: layer(ids, count_weights=t), w)       # d out / d count_weights


def test_category_encoding_in_models_config_and_bad_arguments(rng, tmp_path):
    ids, y = rng.integers(0, 5, (16, 3)), rng.standard_normal((16, 1))
    model = nb.Sequential([L.CategoryEncoding(5, "count", input_shape=(3,)), L.Dense(1)])
    assert model.output_shape == (1,)
    model.compile("adam", "mse")
    hist = model.fit(ids, y, epochs=5, batch_size=4, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    _save_load(model, ids, tmp_path)
    inp, w = nb.Input((None,), dtype="int32"), nb.Input((None,))
    fn = nb.Model([inp, w], L.CategoryEncoding(5, "count")(inp, count_weights=w))
    np.testing.assert_allclose(fn.predict([ids[:2], np.ones((2, 3))]),
                               [np.bincount(r, minlength=5) for r in ids[:2]])
    assert fn.predict([ids[:2, :2], np.ones((2, 2))]).shape == (2, 5)   # k may change
    layer = L.CategoryEncoding(num_tokens=9, output_mode="binary", name="c")
    assert layer.output_mode == "multi_hot" and _round_trip(layer).num_tokens == 9
    assert layer.get_config() == {"name": "c", "dtype": None, "num_tokens": 9,
                                  "output_mode": "multi_hot"}
    with pytest.raises(ValueError, match=r"CategoryEncoding 'c': num_tokens must be set"):
        L.CategoryEncoding(name="c")
    with pytest.raises(ValueError, match=r"num_tokens must be a positive integer, got 0"):
        L.CategoryEncoding(0)
    with pytest.raises(ValueError, match=r"output_mode must be one of 'multi_hot', 'one_hot', "
                                         r"'count', got 'tf_idf'"):
        L.CategoryEncoding(3, "tf_idf")
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'sparse'"):
        L.CategoryEncoding(3, sparse=True)
    with pytest.raises(ValueError, match=r"ids must be integers in \[0, 3\) \(num_tokens=3\), "
                                         r"got 3"):
        L.CategoryEncoding(3)(np.array([[0, 3]]))
    with pytest.raises(ValueError, match=r"got -1"):
        L.CategoryEncoding(3)(np.array([[-1, 0]]))
    with pytest.raises(ValueError, match=r"got 1.5"):
        L.CategoryEncoding(3)(np.array([[1.5, 0.0]]))
    with pytest.raises(ValueError, match=r"count_weights is for output_mode='count', not "
                                         r"'multi_hot'"):
        L.CategoryEncoding(3)(np.array([[1, 0]]), count_weights=np.ones((1, 2)))
    with pytest.raises(ValueError, match=r"count_weights must have the ids' shape \(1, 2\), "
                                         r"got \(1, 3\)"):
        L.CategoryEncoding(3, "count")(np.array([[1, 0]]), count_weights=np.ones((1, 3)))
    with pytest.raises(ValueError, match=r"expects ids of shape \(batch,\) or \(batch, k\)"):
        L.CategoryEncoding(3)(np.zeros((2, 2, 2), dtype=int))


def test_category_encoding_on_the_cuda_backend(allow_cuda, rng):
    ids = rng.integers(0, 4, (3, 5))
    model = nb.Sequential([L.CategoryEncoding(4, "count"), L.Dense(2)], input_shape=(5,),
                          dtype="float64")
    want = model.predict(ids)
    np.testing.assert_allclose(model.to("cuda").predict(ids), want, rtol=1e-10)


@pytest.mark.parametrize("kind", ["dot", "concat", "additive"])
def test_attention_edge_shapes(kind, rng):
    """One query, one value, one feature; a query longer than the values with the causal
    mask (its later rows see every value)."""
    pytest.importorskip("torch")
    for q, v, k in (((1, 1, 1), (1, 1, 2), (1, 1, 1)), ((3, 6, 2), (3, 2, 3), (3, 2, 2))):
        q, v, k = (rng.standard_normal(s) for s in (q, v, k))
        layer = L.AdditiveAttention() if kind == "additive" else \
            L.Attention(use_scale=True, score_mode=kind)
        out, w = layer([q, v, k], return_attention_scores=True, use_causal_mask=True)
        want_out, want_w = _torch_attention(q, v, k, _scores(kind, layer.get_weights()),
                                            causal=True)
        np.testing.assert_allclose(np.asarray(out), want_out, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(np.asarray(w), want_w, rtol=1e-12, atol=1e-13)
