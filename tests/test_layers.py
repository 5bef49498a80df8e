"""Layers: gradients by finite differences, PyTorch agreement, shapes, dtypes and bad input."""
import warnings

import numpy as np
import pytest

import numbanet as nb
from numbanet.testing import gradcheck

L = nb.layers
ACTS = ["linear", "relu", "leaky_relu", "elu", "gelu", "gelu_tanh", "sigmoid", "tanh", "softplus",
        "mish", "softmax"]


def _away_from_kinks(rng, shape):
    """Inputs not too close to 0, where relu-like activations have a kink."""
    x = rng.standard_normal(shape)
    return np.where(np.abs(x) < 0.05, 0.3, x)


@pytest.mark.parametrize("activation", ACTS)
def test_dense_gradcheck(rng, activation):
    layer = L.Dense(4, activation=activation, bias_initializer="glorot_uniform")
    x = _away_from_kinks(rng, (3, 5))
    assert gradcheck(layer, x)
    assert layer.params["kernel"].shape == (5, 4) and layer.params["bias"].shape == (4,)
    assert layer.params["kernel"].dtype == np.float64


@pytest.mark.parametrize("kwargs", [
    dict(filters=3, kernel_size=3, padding="same"),
    dict(filters=2, kernel_size=(2, 3), strides=2, padding="valid"),
    dict(filters=2, kernel_size=3, strides=(2, 1), padding=1, dilation_rate=2),
    dict(filters=1, kernel_size=2, padding="same", strides=2, use_bias=False, activation="tanh"),
])
def test_conv2d_gradcheck(rng, kwargs):
    layer = L.Conv2D(**kwargs)
    x = rng.standard_normal((2, 2, 7, 6))
    assert gradcheck(layer, x)


@pytest.mark.parametrize("layer_fn", [
    lambda: L.MaxPool2D(2), lambda: L.MaxPool2D(3, strides=2, padding="same"),
    lambda: L.AvgPool2D(2), lambda: L.AvgPool2D((2, 3), strides=1, padding=1),
    lambda: L.Flatten(), lambda: L.Reshape((-1, 6)), lambda: L.Dropout(0.4, seed=3),
    lambda: L.ReLU(), lambda: L.LeakyReLU(negative_slope=0.1), lambda: L.ELU(alpha=0.7),
    lambda: L.GELU(), lambda: L.GELU(approximate=True), lambda: L.Sigmoid(), lambda: L.Tanh(),
    lambda: L.Softplus(), lambda: L.Softmax(), lambda: L.Activation("elu"),
    lambda: L.Activation("mish"),
])
def test_other_layers_gradcheck(rng, layer_fn):
    # Distinct values so max pooling has a unique winner in each window.
    x = rng.permutation(np.linspace(-2, 2, 2 * 3 * 6 * 6)).reshape(2, 3, 6, 6)
    x = np.where(np.abs(x) < 0.05, 0.5, x)
    assert gradcheck(layer_fn(), x)


def test_dropout_is_inverted_seeded_and_off_at_inference(rng):
    x = np.ones((50, 40), np.float32)
    d1, d2 = L.Dropout(0.25, seed=7), L.Dropout(0.25, seed=7)
    y1, y2 = d1.forward(x, training=True), d2.forward(x, training=True)
    np.testing.assert_array_equal(y1, y2)
    kept = y1 != 0
    assert 0.65 < kept.mean() < 0.85
    np.testing.assert_allclose(y1[kept], 1 / 0.75, rtol=1e-6)
    np.testing.assert_array_equal(d1.forward(x, training=False), x)
    g = rng.standard_normal(x.shape).astype(np.float32)
    mask = d1.forward(x, training=True) != 0
    np.testing.assert_allclose(d1.backward(g), np.where(mask, g / 0.75, 0), rtol=1e-6)


def test_dropout_takes_a_numpy_rate():
    """A rate read from a NumPy array or config is a NumPy float; it was refused as 'not a
    float' unless it happened to be np.float64."""
    for rate in (np.float32(0.25), np.float16(0.25), np.float64(0.25)):
        layer = L.Dropout(rate, seed=3)
        assert layer.rate == 0.25 and type(layer.get_config()["rate"]) is float
        np.testing.assert_array_equal(layer.forward(np.ones((4, 5)), training=True),
                                      L.Dropout(0.25, seed=3).forward(np.ones((4, 5)),
                                                                      training=True))
    for bad in (np.float32(1.0), np.float32("nan"), np.bool_(False), "0.5"):
        with pytest.raises(ValueError, match="Dropout.*rate must be a float in"):
            L.Dropout(bad)


def test_dtype_follows_first_input():
    layer = L.Dense(3)
    assert layer.forward(np.ones((2, 4))).dtype == np.float64
    layer32 = L.Dense(3)
    assert layer32.forward(np.ones((2, 4), np.float32)).dtype == np.float32
    assert L.Dense(3).forward(np.ones((2, 4), np.int64)).dtype == np.float32
    forced = L.Dense(3, dtype="float64")
    assert forced.forward(np.ones((2, 4), np.float32)).dtype == np.float64


def test_shape_mismatch_names_layer_and_shapes():
    layer = L.Dense(3, name="head")
    layer.forward(np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"head.*\(None, 4\).*\(2, 5\)"):
        layer.forward(np.ones((2, 5), np.float32))
    # Dense works on the last axis of any-rank input (Keras); it needs that axis known
    assert L.Dense(3).forward(np.ones((2, 3, 4), np.float32)).shape == (2, 3, 3)
    with pytest.raises(ValueError, match="last axis"):
        L.Dense(3).build((None,))
    with pytest.raises(ValueError, match="4-D"):
        L.Conv2D(2, 3).forward(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="does not fit"):
        L.Conv2D(2, 5).forward(np.ones((1, 1, 3, 3), np.float32))
    with pytest.raises(TypeError, match="numeric"):
        L.Dense(3).forward(np.array([["a", "b"]]))


def test_keras_channels_last_images_are_named_not_trained_silently():
    """(height, width, channels) images given where (channels, height, width) is expected: a
    window that does not fit says how to transpose; square images that fit get a warning (a
    (32, 32, 3) CIFAR batch would otherwise train a model 32 channels deep and 3 pixels wide)."""
    with pytest.raises(ValueError, match=r"\(None, 28, 28, 1\).*transpose\(0, 3, 1, 2\)"):
        nb.Sequential([L.Conv2D(4, 3)], input_shape=(28, 28, 1))
    with pytest.warns(UserWarning, match=r"conv2d.*\(None, 32, 32, 3\) looks like \(height, "
                                         r"width, channels\)"):
        nb.Sequential([L.Conv2D(4, 3, padding="same", name="conv2d")], input_shape=(32, 32, 3))
    with pytest.warns(UserWarning, match="looks like"):
        L.MaxPool2D().build((16, 16, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nb.Sequential([L.Conv2D(4, 3), L.MaxPool2D()], input_shape=(3, 32, 32))
        L.Conv2D(4, 3).build((8, 6, 3))


@pytest.mark.parametrize("make, built, wrong, match", [
    (lambda: L.Dense(1, name="d"), (2, 4), (2, 6),
     r"Dense 'd': expected inputs with 4 features \(its kernel is \(4, 1\)\), got 6"),
    (lambda: L.Conv2D(2, 3), (1, 3, 5, 5), (1, 2, 5, 5), "Conv2D.*3 channels.*got 2"),
    (lambda: L.Conv2DTranspose(2, 3), (1, 3, 4, 4), (1, 5, 4, 4), "Conv2DTranspose.*3 chann"),
    (lambda: L.Conv1D(2, 3), (1, 3, 6), (1, 4, 6), r"Conv1D.*3 channels.*\(2, 3, 3\).*got 4"),
    (lambda: L.LSTM(2), (1, 3, 4), (1, 3, 5), r"LSTM.*4 features.*\(4, 8\).*got 5"),
    (lambda: L.BatchNormalization(), (2, 3), (2, 4), "BatchNormalization.*3 entries on axis 1"),
    (lambda: L.LayerNormalization(), (2, 3), (2, 4), r"LayerNormalization.*\(3,\).*\(2, 4\)"),
])
def test_forward_checks_the_features_its_weights_were_built_for(make, built, wrong, match):
    """A model's layers get their inputs unchecked, and an upstream layer may change its output
    width after the build: the forward path names the layer instead of a kernel assertion."""
    layer = make()
    layer.forward(np.ones(built, np.float32))
    with pytest.raises(ValueError, match=match):
        layer._forward(np.ones(wrong, np.float32), False)


@pytest.mark.parametrize("make, match", [
    (lambda: L.Dense(0), "units must be a positive integer, got 0"),
    (lambda: L.Dense(-3), "got -3"),
    (lambda: L.Dense(2.5), "got 2.5"),
    (lambda: L.Dense(3, activation="relux"), "unknown activation 'relux'.*relu"),
    (lambda: L.Dense(3, kernel_initializer="nope"), "unknown initializer 'nope'.*glorot_uniform"),
    (lambda: L.Conv2D(4, 0), "kernel_size.*got 0"),
    (lambda: L.Conv2D(4, 3, strides=-1), "strides.*got -1"),
    (lambda: L.Conv2D(4, 3, padding="full"), "padding.*'full'"),
    (lambda: L.MaxPool2D(0), "pool_size.*got 0"),
    (lambda: L.Dropout(1.0), r"rate must be a float in \[0, 1\), got 1.0"),
    (lambda: L.Dropout(-0.1), "got -0.1"),
    (lambda: L.Reshape((2, -1, -1)), "at most one -1"),
    (lambda: L.Dense(3, dtype="int32"), "float32 or float64, got 'int32'"),
    (lambda: L.LeakyReLU(negative_slope=float("nan")), "negative_slope"),
    (lambda: L.LSTM(3, dropout=1.0), r"^LSTM 'lstm.*': dropout must be .*< 1, got 1.0$"),
    (lambda: L.GRU(3, recurrent_dropout=0.1),
     r"^GRU 'gru.*': recurrent_dropout is not supported.*got recurrent_dropout=0.1$"),
])
def test_bad_arguments_raise_clear_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("make, match", [
    (lambda: L.LSTM(3, stateful=True), r"^LSTM: unexpected keyword argument 'stateful'"),
    (lambda: L.GRU(3, implementation=2), r"^GRU: .*'implementation'"),
    (lambda: L.SimpleRNN(3, unroll=True), r"^SimpleRNN: .*'unroll'"),
    (lambda: L.MultiHeadAttention(2, 2, attention_axes=(1,)),
     r"^MultiHeadAttention: unexpected keyword argument 'attention_axes'"),
    (lambda: L.Dense(2, kernel_constraint="max_norm"),
     r"^Dense: .*'kernel_constraint'.*Dense takes units, activation, use_bias, "
     r"kernel_initializer, bias_initializer, kernel_regularizer, name, dtype, trainable\)$"),
    (lambda: L.ReLU(max_value=6), r"'max_value'.*ReLU takes name, dtype, trainable\)$"),
    (lambda: L.LeakyReLU(alpha=0.1), r"'alpha'.*LeakyReLU takes negative_slope, name, dtype"),
    (lambda: L.Bidirectional(L.LSTM(2), merge_modes="sum"),
     r"'merge_modes'.*takes layer, merge_mode, backward_layer, name"),
])
def test_unsupported_keyword_arguments_name_the_layer(make, match):
    """Every layer's constructor (the common one) names the layer, the argument and what it
    takes, instead of ``Layer.__init__() got an unexpected keyword argument``."""
    with pytest.raises(TypeError, match=match):
        make()
    lstm = str(pytest.raises(TypeError, L.LSTM, 3, stateful=True).value)
    assert "units" in lstm and "return_sequences" in lstm and "stateful'" in lstm
    assert "dropout, recurrent_dropout, seed" in lstm


def test_reshape_that_does_not_fit():
    with pytest.raises(ValueError, match="cannot reshape"):
        L.Reshape((5, 5)).forward(np.ones((2, 12), np.float32))


def test_same_padding_follows_keras():
    # Keras 'same': ceil(size / stride) outputs with the extra padding at the bottom/right.
    layer = L.Conv2D(1, 2, strides=2, padding="same")
    out = layer.forward(np.ones((1, 1, 5, 5), np.float32))
    assert out.shape == (1, 1, 3, 3)
    assert layer.pads == (0, 0)
    assert L.MaxPool2D(2, padding="same").forward(np.ones((1, 2, 5, 7), np.float32)).shape == \
        (1, 2, 3, 4)


def test_config_round_trip():
    for layer in [L.Dense(3, activation="gelu", use_bias=False), L.Conv2D(2, (3, 1), strides=2,
                  padding=(1, 0), dilation_rate=1), L.MaxPool2D(3, strides=1, padding="same"),
                  L.LeakyReLU(negative_slope=0.2), L.GELU(approximate=True), L.Dropout(0.3, seed=1),
                  L.Reshape((2, -1)), L.Softmax()]:
        clone = type(layer).from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()


def test_dense_and_conv_match_torch(rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = rng.standard_normal((4, 3, 9, 8))
    conv = L.Conv2D(5, 3, strides=2, padding=1, dilation_rate=1, activation="relu")
    y = conv.forward(x, training=True)
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(conv.params["kernel"], requires_grad=True)
    tb = torch.tensor(conv.params["bias"], requires_grad=True)
    ty = F.relu(F.conv2d(tx, tw, tb, stride=2, padding=1))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    g = rng.standard_normal(y.shape)
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(conv.backward(g), tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(conv.grads["kernel"], tw.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(conv.grads["bias"], tb.grad.numpy(), rtol=1e-10, atol=1e-12)

    x2 = rng.standard_normal((6, 7)).astype(np.float32)
    dense = L.Dense(4, activation="softmax")
    y2 = dense.forward(x2)
    tx2 = torch.tensor(x2, requires_grad=True)
    ty2 = F.softmax(F.linear(tx2, torch.tensor(dense.params["kernel"].T),
                             torch.tensor(dense.params["bias"])), dim=1)
    np.testing.assert_allclose(y2, ty2.detach().numpy(), rtol=1e-5, atol=1e-6)
    g2 = rng.standard_normal(y2.shape).astype(np.float32)
    ty2.backward(torch.tensor(g2))
    np.testing.assert_allclose(dense.backward(g2), tx2.grad.numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("activation", ["relu", "elu", "softmax", None])
@pytest.mark.parametrize("make", [lambda a: L.Dense(4, activation=a),
                                  lambda a: L.Conv2D(3, 3, padding="same", activation=a)],
                         ids=["dense", "conv2d"])
def test_affine_layers_fuse_elementwise_activations(rng, monkeypatch, make, activation):
    """An elementwise activation runs inside the layer's forward kernel (<kernel>_activation);
    softmax and linear do not. Either way the layer keeps the pre-activation (logits) for
    backward and the output is the activation of it."""
    layer = make(activation)
    x = rng.standard_normal((2, 3, 5, 5) if isinstance(layer, L.Conv2D) else (2, 5))
    layer.build(x.shape[1:])
    be = layer.backend
    kernel = "conv2d_forward" if isinstance(layer, L.Conv2D) else "dense_forward"
    fused = layer.act.fusable
    assert fused == (activation in ("relu", "elu"))

    def unused(*args):
        raise AssertionError("the layer ran the kernel it should not")
    monkeypatch.setattr(be, kernel if fused else kernel + "_activation", unused)
    y = np.asarray(layer.forward(x.astype(np.float32)))
    z = np.asarray(layer.logits, np.float64)
    expected = layer.act.__class__(layer.activation).forward(be, z)
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-7)
    w, b = (np.asarray(layer.params[k], np.float64) for k in ("kernel", "bias"))
    if isinstance(layer, L.Dense):
        np.testing.assert_allclose(z, x @ w + b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("make, shape", [(lambda: L.Dense(4, activation="tanh"), (2, 3, 5)),
                                         (lambda: L.Conv1D(4, 3, activation="tanh"), (2, 3, 7))],
                         ids=["dense3d", "conv1d"])
def test_logits_have_the_output_shape(rng, make, shape):
    """``logits`` of a layer that reshapes its input for its kernel (Dense on 3-D input, Conv1D)
    comes back in the output's shape, the same array a fused from_logits loss sees."""
    layer = make()
    x = rng.standard_normal(shape).astype(np.float32)
    layer.build(x.shape[1:])
    y = np.asarray(layer.forward(x), np.float64)
    z = np.asarray(layer.logits, np.float64)
    assert z.shape == y.shape
    np.testing.assert_allclose(np.tanh(z), y, rtol=1e-5, atol=1e-6)
    if isinstance(layer, L.Dense):
        w, b = (np.asarray(layer.params[k], np.float64) for k in ("kernel", "bias"))
        np.testing.assert_allclose(z, x @ w + b, rtol=1e-5, atol=1e-5)


def test_layer_get_and_set_weights(rng):
    """Layers have Keras' get_weights/set_weights: every weight in ``weights`` order (a
    BatchNormalization's moving statistics too, a wrapper's inner layers after its own)."""
    L = nb.layers
    bn = L.BatchNormalization()
    bn.forward(rng.standard_normal((6, 3)).astype(np.float32), training=True)
    got = bn.get_weights()
    assert [w.shape for w in got] == [tuple(v.shape) for v in bn.weights] == [(3,)] * 4
    new = [rng.standard_normal(3).astype(np.float32) for _ in got]
    new[3] = np.abs(new[3]) + 0.5                      # a moving variance is positive
    bn.set_weights(new)
    for a, b in zip(bn.get_weights(), new):
        np.testing.assert_array_equal(a, b)
    x = rng.standard_normal((2, 3)).astype(np.float32)
    gamma, beta, mean, var = new
    np.testing.assert_allclose(bn.forward(x), gamma * (x - mean) / np.sqrt(var + bn.epsilon)
                               + beta, rtol=1e-5, atol=1e-6)
    bi = L.Bidirectional(L.LSTM(2))
    bi.forward(rng.standard_normal((2, 4, 3)).astype(np.float32))
    assert [w.shape for w in bi.get_weights()] == [tuple(v.shape) for v in bi.weights]
    assert len(bi.get_weights()) == 6
    with pytest.raises(ValueError, match=r"has 4 weight arrays, got 3"):
        bn.set_weights(new[:3])
    with pytest.raises(ValueError, match=r"gamma has shape \(3,\), got \(2,\)"):
        bn.set_weights([np.ones(2)] + new[1:])
    with pytest.raises(RuntimeError, match="not built"):
        L.Dense(2).set_weights([])


def test_a_layer_frozen_before_build_freezes_the_sublayers_its_build_creates(rng):
    """Keras: trainable = False on a layer freezes all of it, also the sublayers its build()
    creates afterwards (a TransformerEncoder frozen before its first call listed 16 trainable
    weights, which fit would have trained)."""
    enc = L.TransformerEncoder(8, 2)
    enc.trainable = False
    enc(rng.standard_normal((2, 3, 4)).astype(np.float32))
    assert enc.trainable_weights == [] and len(enc.non_trainable_weights) == 16
    enc.trainable = True
    assert len(enc.trainable_weights) == 16
