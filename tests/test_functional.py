"""The graph engine: functional and subclassed models, shared layers, multiple inputs and
outputs, GradientTape, custom training loops, merge layers, saving graphs, and bad input."""
import numpy as np
import pytest

import numbanet as nb
from numbanet.testing import gradcheck, numeric_gradient

L = nb.layers


def shared_graph(dtype="float64"):
    """A residual connection, one layer shared three times, two outputs."""
    inp = nb.Input(shape=(6,), dtype=dtype, name="x")
    shared = L.Dense(6, activation="tanh", name="shared")
    h1 = shared(inp)
    h2 = shared(h1)
    h3 = shared(L.Add(name="residual")([h1, h2]))
    out1 = L.Dense(3, name="a")(h3)
    out2 = L.Dense(2, activation="sigmoid", name="b")(L.Concatenate(name="cat")([h2, h3]))
    return nb.Model(inp, [out1, out2], name="shared_graph")


def torch_shared_graph(model):
    """The same network in PyTorch with the same weights (float64)."""
    torch = pytest.importorskip("torch")
    w = {v.name: torch.tensor(v.numpy(), requires_grad=True) for v in model.trainable_weights}

    def forward(x):
        def shared(h):
            return torch.tanh(h @ w["shared/kernel"] + w["shared/bias"])
        h1 = shared(x)
        h2 = shared(h1)
        h3 = shared(h1 + h2)
        o1 = h3 @ w["a/kernel"] + w["a/bias"]
        o2 = torch.sigmoid(torch.cat([h2, h3], dim=1) @ w["b/kernel"] + w["b/bias"])
        return o1, o2
    return torch, w, forward


def test_shared_layer_residual_two_outputs_gradients_equal_torch(rng):
    nb.seed(3)
    model = shared_graph()
    assert [l.name for l in model.layers] == ["x", "shared", "residual", "a", "cat", "b"]
    assert [v.name for v in model.trainable_weights] == [
        "shared/kernel", "shared/bias", "a/kernel", "a/bias", "b/kernel", "b/bias"]
    x = rng.standard_normal((5, 6))
    y1 = rng.standard_normal((5, 3))
    y2 = (rng.random((5, 2)) > 0.5).astype(np.float64)
    torch, w, forward = torch_shared_graph(model)
    o1, o2 = forward(torch.tensor(x))
    tloss = torch.nn.functional.mse_loss(o1, torch.tensor(y1)) + \
        torch.nn.functional.binary_cross_entropy(o2, torch.tensor(y2))
    tloss.backward()
    # a custom loop: the tape's gradients
    with nb.GradientTape() as tape:
        p1, p2 = model(x, training=True)
        loss = nb.losses.MeanSquaredError()(y1, p1) + nb.losses.BinaryCrossentropy()(y2, p2)
    assert float(loss) == pytest.approx(tloss.item(), rel=1e-12)
    grads = tape.gradient(loss, model.trainable_weights)
    for v, g in zip(model.trainable_weights, grads):
        np.testing.assert_allclose(np.asarray(g), w[v.name].grad.numpy(), rtol=1e-9, atol=1e-12,
                                   err_msg=v.name)
    # fit's path (its own graph executor): SGD with lr 1 moves each weight by -grad
    before = model.get_weights()
    model.compile(nb.optimizers.SGD(1.0), loss=["mse", "binary_crossentropy"])
    assert model.train_step(x, [y1, y2]) == pytest.approx(tloss.item(), rel=1e-12)
    for v, w0, w1 in zip(model.trainable_weights, before, model.get_weights()):
        np.testing.assert_allclose(w0 - w1, w[v.name].grad.numpy(), rtol=1e-9, atol=1e-12,
                                   err_msg=v.name)


def test_graph_gradcheck_inputs_and_weights(rng):
    nb.seed(0)
    model = shared_graph()
    assert gradcheck(model, rng.standard_normal((3, 6)))


@pytest.mark.parametrize("make, shapes", [
    (lambda: L.Add(), [(3, 4)] * 3),
    (lambda: L.Subtract(), [(3, 4)] * 2),
    (lambda: L.Multiply(), [(2, 3)] * 3),
    (lambda: L.Average(), [(3, 4)] * 3),
    (lambda: L.Maximum(), [(3, 4)] * 3),
    (lambda: L.Minimum(), [(3, 4)] * 2),
    (lambda: L.Concatenate(axis=1), [(2, 3), (1, 3), (4, 3)]),
    (lambda: L.Concatenate(), [(2, 3), (2, 1)]),
], ids=["add", "subtract", "multiply", "average", "maximum", "minimum", "concat1", "concat-1"])
def test_merge_layers_forward_gradcheck_and_torch(make, shapes, rng):
    xs = [rng.permutation(2 * np.prod(s)).astype(np.float64)[:np.prod(s)].reshape(s) * 0.1 - 0.3
          for s in ((4,) + sh for sh in shapes)]
    layer = make()
    name = type(layer).__name__
    want = {"Add": lambda: sum(xs), "Subtract": lambda: xs[0] - xs[1],
            "Multiply": lambda: np.prod(xs, axis=0), "Average": lambda: sum(xs) / len(xs),
            "Maximum": lambda: np.max(xs, axis=0), "Minimum": lambda: np.min(xs, axis=0),
            "Concatenate": lambda: np.concatenate(xs, axis=layer.axis)}[name]()
    got = layer(xs)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12)
    assert gradcheck(lambda *ts: layer(list(ts)), *xs)
    torch = pytest.importorskip("torch")
    ts = [torch.tensor(x, requires_grad=True) for x in xs]
    tout = {"Add": lambda: sum(ts), "Subtract": lambda: ts[0] - ts[1],
            "Multiply": lambda: ts[0] * ts[1] * ts[2], "Average": lambda: sum(ts) / len(ts),
            "Maximum": lambda: torch.maximum(torch.maximum(ts[0], ts[1]), ts[2]),
            "Minimum": lambda: torch.minimum(ts[0], ts[1]),
            "Concatenate": lambda: torch.cat(ts, dim=layer.axis)}[name]()
    g = rng.standard_normal(tout.shape)
    tout.backward(torch.tensor(g))
    tensors = [nb.ops.convert_to_tensor(x) for x in xs]
    with nb.GradientTape() as tape:
        tape.watch(tensors)
        out = layer(tensors)
    for a, t in zip(tape.gradient(out, tensors, output_gradients=g), ts):
        np.testing.assert_allclose(np.asarray(a), t.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_concatenate_takes_a_numpy_int_axis(rng):
    """An axis computed with NumPy (np.int64) was refused as 'not a non-zero int'."""
    xs = [rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 1, 4))]
    layer = L.Concatenate(axis=np.int64(1))
    assert type(layer.axis) is int and type(layer.get_config()["axis"]) is int
    np.testing.assert_array_equal(np.asarray(layer(xs)), np.concatenate(xs, axis=1))
    assert L.Concatenate(axis=np.int32(-1))([nb.Input((2, 3)), nb.Input((2, 5))]).shape == \
        (None, 2, 8)
    for bad in (np.int64(0), np.bool_(True), np.float64(1.0)):
        with pytest.raises(ValueError, match="Concatenate.*axis must be a non-zero int"):
            L.Concatenate(axis=bad)


def test_merge_shape_mismatch_names_layer_and_shapes():
    a, b = nb.Input((3,)), nb.Input((4,))
    with pytest.raises(ValueError, match=r"Add 'plus'.*input 0 is \(None, 3\), input 1 is "
                                         r"\(None, 4\)"):
        L.Add(name="plus")([a, b])
    with pytest.raises(ValueError, match="Concatenate.*match except along axis"):
        L.Concatenate(axis=1)([nb.Input((2, 3)), nb.Input((2, 4))])
    with pytest.raises(ValueError, match="Subtract.*exactly 2"):
        L.Subtract()([a, a, a])
    with pytest.raises(TypeError, match="expects a list of inputs"):
        L.Add()(a)


def test_global_pooling_and_permute_and_dense_on_any_rank(rng):
    x = rng.standard_normal((2, 3, 4, 5))
    np.testing.assert_allclose(np.asarray(L.GlobalAveragePooling2D()(x)), x.mean(axis=(2, 3)),
                               rtol=1e-12)
    np.testing.assert_allclose(np.asarray(L.GlobalMaxPooling2D()(x)), x.max(axis=(2, 3)))
    assert L.GlobalAveragePooling2D(keepdims=True)(x).shape == (2, 3, 1, 1)
    np.testing.assert_array_equal(np.asarray(L.Permute((3, 1, 2))(x)), x.transpose(0, 3, 1, 2))
    dense = L.Dense(2)
    out = dense(x)
    assert out.shape == (2, 3, 4, 2)
    w, b = (np.asarray(dense.params[k]) for k in ("kernel", "bias"))
    np.testing.assert_allclose(np.asarray(out), x @ w + b, rtol=1e-12)
    for layer in (L.GlobalAveragePooling2D(), L.GlobalMaxPooling2D(), L.Permute((2, 3, 1)),
                  L.Dense(3, activation="tanh")):
        assert gradcheck(layer, rng.permutation(2 * 3 * 4 * 5).reshape(2, 3, 4, 5) * 0.01)


def test_ops_on_symbolic_tensors_keep_a_real_size_7_and_unknown_sizes(rng):
    assert (nb.Input((7,)) * 2).shape == (None, 7)
    inp = nb.Input((1, 28, 28))
    h = L.MaxPool2D(2)(L.MaxPool2D(2)(L.Conv2D(4, 3, padding="same")(inp)))
    assert h.shape == (None, 4, 7, 7)
    h2 = h + L.Conv2D(4, 3, padding="same")(h)
    assert h2.shape == (None, 4, 7, 7)
    out = L.Dense(3)(L.Flatten()(h2))
    assert out.shape == (None, 3)
    assert nb.Model(inp, out).predict(rng.standard_normal((2, 1, 28, 28))).shape == (2, 3)
    # sizes known only when called stay None; sizes that do not depend on them are known
    seq = nb.Input((None, 7))
    doubled, summed = seq * 2, nb.ops.sum(seq, axis=1)
    per_step, first = nb.ops.mean(seq, axis=-1), nb.ops.max(seq, axis=1, keepdims=True)
    assert doubled.shape == (None, None, 7) and summed.shape == (None, 7)
    assert per_step.shape == (None, None) and first.shape == (None, 1, 7)
    model = nb.Model(seq, [doubled, summed, per_step, first])
    for steps in (3, 7, 11):
        x = rng.standard_normal((2, steps, 7)).astype(np.float32)
        got = model.predict(x)
        for g, want in zip(got, [x * 2, x.sum(1), x.mean(-1), x.max(1, keepdims=True)]):
            np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-6)


def test_custom_call_layer_takes_any_input_its_weights_fit(rng):
    class Lin(L.Layer):
        def build(self, input_shape):
            self.w = self.add_weight("w", (input_shape[-1], 2))
            super().build(input_shape)

        def call(self, x):
            return x @ self.w

    layer = Lin()
    for steps in (5, 6, 1):
        x = rng.standard_normal((1, steps, 4)).astype(np.float32)
        np.testing.assert_allclose(np.asarray(layer(x)), x @ np.asarray(layer.w), rtol=1e-5,
                                   atol=1e-6)
    with pytest.raises(ValueError, match="matmul.*not aligned"):
        layer(np.ones((1, 5, 3), np.float32))
    # in a graph: built on the dummy sizes, then called on any length
    seq = nb.Input((None, 4))
    layer2 = Lin()
    out = layer2(seq)
    assert out.shape == (None, None, 2)
    model = nb.Model(seq, out)
    for steps in (2, 9):
        x = rng.standard_normal((3, steps, 4)).astype(np.float32)
        np.testing.assert_allclose(model.predict(x), x @ np.asarray(layer2.w), rtol=1e-5,
                                   atol=1e-6)
    # numbanet's own layers keep their check
    dense = L.Dense(2, name="d7")
    dense(np.ones((1, 5, 4), np.float32))
    with pytest.raises(ValueError, match=r"'d7': expected input of shape \(None, None, 4\)"):
        dense(np.ones((1, 5, 3), np.float32))


def test_subclassed_model_shares_weights_and_trains_with_fit(rng):
    class Tower(nb.Model):
        def __init__(self):
            super().__init__()
            self.shared = L.Dense(16, activation="tanh")
            self.head = L.Dense(1)

        def call(self, x, training=False):
            h = self.shared(x)
            return self.head(self.shared(h) + h)

    nb.seed(0)
    x = rng.standard_normal((256, 16)).astype(np.float32)
    y = np.tanh(x[:, :3].sum(axis=1, keepdims=True))
    model = Tower()
    model.compile(nb.optimizers.Adam(0.01), "mse")
    history = model.fit(x, y, epochs=15, batch_size=32, verbose=0)
    assert history.history["loss"][-1] < 0.2 * history.history["loss"][0]
    assert [l.name for l in model.layers] == [model.shared.name, model.head.name]
    assert len(model.trainable_weights) == 4
    assert model.predict(x[:5]).shape == (5, 1)
    with pytest.raises(NotImplementedError, match="save_weights"):
        model.save("never.npz")
    assert gradcheck(Tower_in_float64(rng), rng.standard_normal((3, 4)))


def test_subclassed_model_builds_and_trains_its_own_weights(rng, tmp_path):
    """A Model subclass's build(input_shape) runs once, before the first call (per-sample shape,
    as layers get it), and the weights it creates with add_weight (in build or __init__) are
    the model's weights: trained by fit and by a GradientTape loop, frozen with it, saved."""
    class Linear(nb.Model):
        builds = 0

        def build(self, input_shape):
            Linear.builds += 1
            self.k = self.add_weight("k", (input_shape[-1], 2))

        def call(self, x):
            return x @ self.k

    x = rng.standard_normal((8, 3))
    model = Linear()
    out = model(x)
    np.testing.assert_allclose(out.numpy(), x @ model.k.numpy(), rtol=1e-12)
    assert model.k.dtype == np.float64 and Linear.builds == 1
    model(x)
    assert Linear.builds == 1
    assert model.weights == model.trainable_weights == [model.k]
    # a GradientTape loop: d/dk of mean((x k - y)^2) is 2 x^T (x k - y) / (8 * 2)
    y = rng.standard_normal((8, 2))
    with nb.GradientTape() as tape:
        loss = nb.losses.MeanSquaredError()(y, model(x))
    (grad,) = tape.gradient(loss, model.trainable_weights)
    k = model.k.numpy()
    np.testing.assert_allclose(grad.numpy(), 2 * x.T @ (x @ k - y) / 16, rtol=1e-12)
    nb.optimizers.SGD(0.5).apply_gradients([(grad, model.k)])
    np.testing.assert_allclose(model.k.numpy(), k - 0.5 * grad.numpy(), rtol=1e-12)

    class Scaled(nb.Model):
        def __init__(self):
            super().__init__()
            self.hidden = L.Dense(4, activation="tanh")
            self.scale = self.add_weight("scale", (4,), initializer="ones")
            self.calls = self.add_weight("calls", (1,), initializer="zeros", trainable=False)

        def build(self, input_shape):
            self.w = self.add_weight("w", (4, 1))

        def call(self, x):
            return (self.hidden(x) * self.scale) @ self.w

    nb.seed(0)
    target = x @ np.array([[1.0], [-2.0], [0.5]])
    model = Scaled()
    model.compile(nb.optimizers.Adam(0.05), "mse")
    history = model.fit(x, target, epochs=30, batch_size=4, verbose=0)
    assert [v.name.split("/")[1] for v in model.weights] == ["scale", "w", "calls", "kernel",
                                                            "bias"]
    assert [v.name.split("/")[1] for v in model.trainable_weights] == ["scale", "w", "kernel",
                                                                      "bias"]
    assert model.non_trainable_weights == [model.calls]
    assert model.count_params() == 4 + 4 + 1 + 3 * 4 + 4
    assert history.history["loss"][-1] < 0.2 * history.history["loss"][0]
    assert not np.array_equal(model.scale.numpy(), np.ones(4))
    model.save_weights(tmp_path / "scaled.npz")
    again = Scaled()
    again(x[:1])
    again.load_weights(tmp_path / "scaled.npz")
    np.testing.assert_array_equal(again.predict(x), model.predict(x))
    for a, b in zip(again.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    model.trainable = False
    frozen = model.get_weights()
    assert model.trainable_weights == []
    with pytest.warns(UserWarning, match="no trainable weights"):
        model.fit(x, target, epochs=1, verbose=0)
    for a, b in zip(frozen, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    # an unbuilt Sequential called on data builds itself the same way
    chain = nb.Sequential([L.Dense(2)])
    out = chain(x)
    assert chain.input_shape == (3,) and chain.dtype == np.float64
    np.testing.assert_allclose(out.numpy(), chain.predict(x), rtol=1e-12)


def Tower_in_float64(rng):
    class Tower(nb.Model):
        def __init__(self):
            super().__init__()
            self.shared = L.Dense(4, activation="tanh", dtype="float64")
            self.head = L.Dense(2, dtype="float64")

        def call(self, x, training=False):
            h = self.shared(x)
            return self.head(self.shared(nb.ops.concatenate([h, h * h], axis=0)[:len(x)]) + h)
    model = Tower()
    model(rng.standard_normal((2, 4)))          # build
    return model


def test_custom_layer_written_with_ops(rng):
    class Scale(L.Layer):
        def build(self, input_shape):
            self.w = self.add_weight("w", (input_shape[-1],), initializer="ones")
            self.input_shape, self.output_shape, self.built = input_shape, input_shape, True

        def call(self, x):
            return nb.ops.log(1.0 + nb.ops.exp(x * self.w)) - 0.5 * x

    layer = Scale(dtype="float64")
    assert gradcheck(lambda t: layer(t), rng.standard_normal((3, 4)))
    inp = nb.Input((4,), dtype="float64")
    model = nb.Model(inp, L.Dense(1, dtype="float64")(Scale(dtype="float64")(inp)))
    assert model.output_shape == (1,)
    assert gradcheck(model, rng.standard_normal((3, 4)))


def test_ops_in_a_functional_graph_save_and_load(rng, tmp_path):
    inp = nb.Input((3,))
    h = L.Dense(4, activation="relu")(inp)
    out = nb.ops.mean(h * 2.0 + inp @ np.ones((3, 4), np.float32), axis=1, keepdims=True)
    model = nb.Model(inp, out)
    x = rng.standard_normal((5, 3)).astype(np.float32)
    pred = model.predict(x)
    h_ref = np.maximum(x @ model.layers[1].params["kernel"] + model.layers[1].params["bias"], 0)
    np.testing.assert_allclose(pred, (h_ref * 2 + x.sum(1, keepdims=True)).mean(1,
                                                                                  keepdims=True),
                               rtol=1e-5, atol=1e-6)
    model.save(tmp_path / "ops.npz")
    np.testing.assert_array_equal(nb.load_model(tmp_path / "ops.npz").predict(x), pred)


def test_slicing_symbolic_tensors_in_a_graph_save_and_load(rng, tmp_path):
    import json
    inp = nb.Input((4, 3), dtype="float64")
    keys = [(slice(None), slice(1, None)), (slice(None), slice(None, None, -1)),
            (Ellipsis, 0), (slice(None), None, 2, slice(0, 3, 2))]
    parts = [inp[k] for k in keys]
    assert [p.shape for p in parts] == [(None, 3, 3), (None, 4, 3), (None, 4), (None, 1, 2)]
    x = rng.standard_normal((2, 4, 3))
    for p, k in zip(parts, keys):       # the key goes through JSON and back to the same tuple
        config = json.loads(json.dumps(p.node.layer.get_config()))
        rebuilt = type(p.node.layer)(**config)
        np.testing.assert_array_equal(np.asarray(rebuilt.call([nb.ops.convert_to_tensor(x)])),
                                      x[k])
    model = nb.Model(inp, parts)
    got = model.predict(x)
    for g, k in zip(got, keys):
        np.testing.assert_array_equal(g, x[k])
    assert gradcheck(nb.Model(inp, nb.ops.sum(parts[1][:, 1:, ::-1] * parts[0], axis=1)), x)
    model.save(tmp_path / "slices.npz")
    again = nb.load_model(tmp_path / "slices.npz")
    for g, h in zip(got, again.predict(x)):
        np.testing.assert_array_equal(g, h)


def test_one_op_used_several_times_in_a_graph(rng, tmp_path):
    inp = nb.Input((3,), dtype="float64")
    out = inp * 2.0 + inp * inp * 3.0
    model = nb.Model(inp, out)
    names = [l.name for l in model.layers]
    assert len(set(names)) == len(names) == 5
    x = rng.standard_normal((4, 3))
    np.testing.assert_allclose(model.predict(x), x * 2 + x * x * 3, rtol=1e-12)
    assert gradcheck(model, x)
    model.save(tmp_path / "ops.npz")
    np.testing.assert_array_equal(nb.load_model(tmp_path / "ops.npz").predict(x),
                                  model.predict(x))


def test_multiple_inputs_and_outputs_lists_and_dicts(rng, tmp_path):
    a, b = nb.Input((4,), name="a"), nb.Input((2,), name="b")
    h = L.Dense(8, activation="relu")(L.Concatenate()([a, b]))
    cls = L.Dense(3, activation="softmax", name="cls")(h)
    reg = L.Dense(1, name="reg")(h)
    model = nb.Model(inputs=[a, b], outputs=[cls, reg])
    model.compile("adam", loss={"cls": "sparse_categorical_crossentropy", "reg": "mse"},
                  loss_weights={"cls": 1.0, "reg": 0.5}, metrics={"cls": ["accuracy"]})
    xa, xb = rng.standard_normal((40, 4)), rng.standard_normal((40, 2))
    yc, yr = rng.integers(0, 3, 40), rng.standard_normal((40, 1))
    h1 = model.fit([xa, xb], [yc, yr], epochs=2, batch_size=8, verbose=0)
    h2 = model.fit({"a": xa, "b": xb}, {"cls": yc, "reg": yr}, epochs=1, verbose=0)
    assert "cls_accuracy" in h1.history and len(h2.history["loss"]) == 1
    result = model.evaluate([xa, xb], [yc, yr])
    assert set(result) == {"loss", "cls_loss", "reg_loss", "cls_accuracy"}
    assert result["loss"] == pytest.approx(result["cls_loss"] + 0.5 * result["reg_loss"],
                                           rel=1e-5)
    pc, pr = model.predict([xa, xb])
    assert pc.shape == (40, 3) and pr.shape == (40, 1)
    model.save(tmp_path / "two.npz")
    loaded = nb.load_model(tmp_path / "two.npz")
    for p, q in zip(loaded.predict({"a": xa, "b": xb}), (pc, pr)):
        np.testing.assert_array_equal(p, q)
    assert loaded.evaluate([xa, xb], [yc, yr]) == pytest.approx(result)
    with pytest.raises(ValueError, match="expected 2 entries"):
        model.predict([xa])
    with pytest.raises(ValueError, match="unknown name 'c'"):
        model.predict({"a": xa, "c": xb})


def test_one_array_for_several_inputs_or_outputs_is_refused(rng):
    """One array is not fed to every input (a - a = 0) nor used as every output's targets;
    one loss, metric list or loss weight still applies to every output (Keras)."""
    a, b = nb.Input((4,), name="a"), nb.Input((4,), name="b")
    model = nb.Model([a, b], L.Dense(2, activation="softmax")(L.Subtract()([a, b])))
    model.compile("sgd", "sparse_categorical_crossentropy")
    x, y = rng.standard_normal((3, 4)), np.array([0, 1, 1])
    msg = r"x: expected 2 inputs \(a, b\) as a list or a dict by name, got one ndarray"
    for call in (lambda: model.predict(x), lambda: model.fit(x, y, verbose=0),
                 lambda: model.evaluate(x, y), lambda: model.train_step(x, y)):
        with pytest.raises(ValueError, match=msg):
            call()
    inp = nb.Input((4,))
    h = L.Dense(8, activation="tanh")(inp)
    two = nb.Model(inp, [L.Dense(1, name="p")(h), L.Dense(1, name="q")(h)])
    two.compile("sgd", "mse", metrics=["mae"], loss_weights=0.5)
    assert [type(l).__name__ for l in two.output_losses] == ["MeanSquaredError"] * 2
    assert [m.name for m in two.metrics] == ["p_mae", "q_mae"]
    assert two.loss_weights == [0.5, 0.5]
    yr = rng.standard_normal((3, 1))
    with pytest.raises(ValueError, match=r"y: expected 2 outputs \(p, q\) as a list or a dict"):
        two.fit(x, yr, verbose=0)
    assert set(two.evaluate(x, [yr, yr])) == {"loss", "p_loss", "q_loss", "p_mae", "q_mae"}
    # one output: a one-item list of a NumPy scalar is a batch of one sample
    single = nb.Sequential([L.Dense(3, activation="softmax")], input_shape=(4,))
    single.compile("sgd", "sparse_categorical_crossentropy")
    labels = np.array([2, 0, 1])
    want = single.evaluate(x[:1], labels[:1])["loss"]
    assert single.evaluate(x[:1], [labels[0]])["loss"] == want
    assert single.evaluate(x[:1], [int(labels[0])])["loss"] == want
    assert single.evaluate(x, list(labels))["loss"] == single.evaluate(x, labels)["loss"]


def test_per_output_losses_are_logged_unweighted_in_training_and_evaluation(rng):
    """Each loss-carrying output's own loss, before its loss weight (a zero weight included),
    is logged as <output>_loss in the batch and epoch logs (averaged over the epoch's samples
    like loss) and by evaluate; EarlyStopping can watch it."""
    inp = nb.Input((4,), dtype="float64")
    h = L.Dense(8, activation="tanh")(inp)
    model = nb.Model(inp, [L.Dense(3, activation="softmax", name="cls")(h),
                           L.Dense(1, name="reg")(h)])
    x = rng.standard_normal((40, 4))
    yc, yr = rng.integers(0, 3, 40), rng.standard_normal((40, 1))
    pc, pr = model.predict(x)
    want_cls = -np.mean(np.log(pc[np.arange(40), yc]))
    want_reg = np.mean((pr - yr) ** 2)
    for weights in ([1.0, 0.0], [0.5, 2.0]):
        model.compile("sgd", ["sparse_categorical_crossentropy", "mse"], loss_weights=weights)
        result = model.evaluate(x, [yc, yr], batch_size=16)
        assert result["cls_loss"] == pytest.approx(want_cls, rel=1e-12)
        assert result["reg_loss"] == pytest.approx(want_reg, rel=1e-12)
        assert result["loss"] == pytest.approx(weights[0] * want_cls + weights[1] * want_reg,
                                               rel=1e-12)
    # frozen weights: every batch sees the same model, so the epoch's averages (batches of
    # 16, 16 and 8) are the whole data's losses
    batches = []

    class Batches(nb.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            batches.append(dict(logs))
    model.trainable = False
    with pytest.warns(UserWarning, match="no trainable weights"):
        history = model.fit(x, [yc, yr], epochs=2, batch_size=16, verbose=0,
                            validation_split=0.2, callbacks=[Batches()])
    assert list(history.history) == ["loss", "cls_loss", "reg_loss", "val_loss",
                                     "val_cls_loss", "val_reg_loss"]
    train = model.evaluate(x[:32], [yc[:32], yr[:32]])
    for key in ("loss", "cls_loss", "reg_loss"):
        assert history.history[key] == pytest.approx([train[key]] * 2, rel=1e-12)
    assert len(batches) == 4 and all({"cls_loss", "reg_loss"} <= set(b) for b in batches)
    assert batches[1]["reg_loss"] == pytest.approx(train["reg_loss"], rel=1e-12)
    # training moves them, and EarlyStopping watches one of them
    model.trainable = True
    stop = nb.callbacks.EarlyStopping(monitor="cls_loss", patience=1, mode="max")
    history = model.fit(x, [yc, yr], epochs=5, batch_size=8, verbose=0, callbacks=[stop])
    assert stop.stopped_epoch == 1 and len(history.history["cls_loss"]) == 2
    assert history.history["cls_loss"][1] < history.history["cls_loss"][0]
    # a single-output model logs its loss alone
    single = nb.Sequential([L.Dense(3, activation="softmax")], input_shape=(4,))
    single.compile("sgd", "sparse_categorical_crossentropy")
    assert list(single.fit(x, yc, verbose=0, validation_split=0.2).history) == \
        ["loss", "val_loss"]


def test_layer_shared_by_two_models_trains_through_each(rng):
    """A layer (an encoder) used by two models: training either changes the one copy."""
    encoder = L.Dense(4, activation="tanh", name="encoder")
    inp = nb.Input((6,))
    code = encoder(inp)
    autoenc = nb.Model(inp, L.Dense(6, name="decoder")(code))
    inp2 = nb.Input((6,))
    clf = nb.Model(inp2, L.Dense(2, activation="softmax", name="clf")(encoder(inp2)))
    x = rng.standard_normal((32, 6)).astype(np.float32)
    autoenc.compile(nb.optimizers.SGD(0.1), "mse")
    clf.compile(nb.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    w0 = encoder.params["kernel"].copy()
    autoenc.fit(x, x, epochs=1, verbose=0)
    w1 = encoder.params["kernel"].copy()
    assert not np.array_equal(w0, w1)
    clf.fit(x, rng.integers(0, 2, 32), epochs=1, verbose=0)
    assert not np.array_equal(w1, encoder.params["kernel"])
    # the same through Sequential: a second model from the first one's layers
    m1 = nb.Sequential([L.Dense(5, activation="relu"), L.Dense(2)], input_shape=(3,))
    m2 = nb.Sequential(m1.layers[:1] + [L.Dense(1)], input_shape=(3,))
    m1.compile(nb.optimizers.SGD(0.1), "mse")
    k = m1.layers[0].params["kernel"]
    before = np.array(k)
    m1.fit(rng.standard_normal((8, 3)), rng.standard_normal((8, 2)), verbose=0)
    assert not np.array_equal(before, np.asarray(m2.layers[0].params["kernel"]))
    assert m2.layers[0].params["kernel"] is k


def test_nested_model_and_freezing(rng):
    nb.seed(1)
    inner_in = nb.Input((4,))
    inner = nb.Model(inner_in, L.Dense(3, activation="relu", name="inner_dense")(inner_in),
                     name="inner")
    inp = nb.Input((4,))
    model = nb.Model(inp, L.Dense(1, name="top")(inner(inp)))
    assert model.get_layer("inner") is inner
    x, y = rng.standard_normal((16, 4)), rng.standard_normal((16, 1))
    model.compile(nb.optimizers.SGD(0.1), "mse")
    inner.trainable = False
    frozen = inner.get_weights()
    top = model.get_layer("top").params["kernel"].copy()
    model.fit(x, y, epochs=2, verbose=0)
    for a, b in zip(frozen, inner.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(top, model.get_layer("top").params["kernel"])
    assert len(model.trainable_weights) == 2 and len(model.non_trainable_weights) == 2
    inner.trainable = True
    model.fit(x, y, epochs=1, verbose=0)
    assert not np.array_equal(frozen[0], inner.get_weights()[0])
    # a frozen layer inside a tape: no gradient for it
    model.get_layer("top").trainable = False
    with nb.GradientTape() as tape:
        loss = nb.ops.mean(model(x))
    assert len(model.trainable_weights) == 2
    assert all(g is not None for g in tape.gradient(loss, model.trainable_weights))


def test_functional_save_load_bit_identical_and_resumes(rng, tmp_path):
    nb.seed(4)
    inp = nb.Input((1, 8, 8))
    x = L.Conv2D(4, 3, padding="same", activation="relu")(inp)
    y = L.Conv2D(4, 3, padding="same")(x)
    x = L.BatchNormalization()(L.Add()([x, y]))
    x = L.GlobalAveragePooling2D()(L.ReLU()(x))
    out = L.Dense(10, activation="softmax", name="digit")(x)
    model = nb.Model(inp, out)
    model.compile(nb.optimizers.Adam(1e-2), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    xs, ys = nb.datasets.load_digits()
    xs, ys = xs[:96], ys[:96]
    model.fit(xs, ys, epochs=1, batch_size=32, verbose=0)
    model.save(tmp_path / "m.npz")
    loaded = nb.load_model(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.predict(xs), model.predict(xs))
    assert [l.name for l in loaded.layers] == [l.name for l in model.layers]
    assert loaded.get_config() == model.get_config()
    for _ in range(3):
        assert loaded.train_step(xs[:32], ys[:32]) == model.train_step(xs[:32], ys[:32])
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    # weights alone, into a rebuilt model
    model.save_weights(tmp_path / "w.npz")
    clone = nb.Model.from_config(model.get_config()) if hasattr(nb.Model, "from_config") \
        else None
    assert clone is not None
    clone.load_weights(tmp_path / "w.npz")
    np.testing.assert_array_equal(clone.predict(xs), model.predict(xs))


def test_summary_has_connected_to(capsys):
    model = shared_graph("float32")
    model.summary()
    out = capsys.readouterr().out
    assert "Connected to" in out and "residual (Add)" in out
    assert "shared[0][0], shared[1][0]" in out
    assert "Total params: 89" in out


def test_tape_semantics(rng):
    x = nb.ops.convert_to_tensor(rng.standard_normal((3, 2)))
    with nb.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y = nb.ops.sum(x * x)
        z = nb.ops.sum(nb.ops.exp(x))
        unrelated = nb.ops.sum(nb.ops.convert_to_tensor(np.ones(3)) * 2)
        nonscalar = x * 2
    np.testing.assert_allclose(np.asarray(tape.gradient(y, x)), 2 * np.asarray(x))
    np.testing.assert_allclose(np.asarray(tape.gradient(z, x)), np.exp(np.asarray(x)))
    w = nb.ops.convert_to_tensor(np.ones(2))
    assert tape.gradient(y, [x, w])[1] is None          # not watched: None, as TensorFlow
    with pytest.raises(ValueError, match="scalar"):
        tape.gradient(nonscalar, x)
    assert tape.gradient(unrelated, x) is None       # computed from constants only
    with pytest.raises(ValueError, match="not computed under this tape"):
        tape.gradient(nb.ops.sum(x), x)
    with pytest.raises(TypeError, match="source 0 is a ndarray"):
        tape.gradient(y, [np.ones(2)])
    once = nb.GradientTape()
    with once:
        once.watch(x)
        y = nb.ops.sum(x)
    once.gradient(y, x)
    with pytest.raises(RuntimeError, match="only be called once"):
        once.gradient(y, x)
    with pytest.raises(TypeError, match="convert_to_tensor"):
        nb.GradientTape().watch(np.ones(3))
    # the source a target does not depend on gets None; a tensor's own gradient is one
    dense = L.Dense(2)
    dense(np.ones((1, 2)))
    with nb.GradientTape() as tape:
        out = nb.ops.sum(x)
    assert tape.gradient(out, dense.trainable_weights) == [None, None]


def test_a_frozen_discriminator_is_not_trained_by_a_custom_loop_over_all_weights(rng):
    """A GAN generator step that freezes the discriminator and applies the gradients of all
    the weights: the discriminator's weights get None (as torch's requires_grad=False
    parameters; TensorFlow does not watch a non-trainable variable) and stay unchanged; the
    generator follows torch's SGD. They used to get a gradient and be trained."""
    torch = pytest.importorskip("torch")
    nb.seed(int(rng.integers(1 << 30)))
    gen = nb.Sequential([L.Dense(3, activation="tanh")], input_shape=(2,), dtype="float64")
    disc = nb.Sequential([L.Dense(4, activation="tanh"), L.Dense(1)], input_shape=(3,),
                         dtype="float64")
    gan = nb.Sequential([gen, disc])
    z = rng.standard_normal((5, 2))
    disc.trainable = False
    tw = [torch.tensor(w, requires_grad=True) for w in gan.get_weights()]
    for t in tw[2:]:
        t.requires_grad_(False)                     # torch's frozen discriminator
    topt = torch.optim.SGD(tw, lr=0.1)
    opt = nb.optimizers.SGD(0.1)
    frozen = disc.get_weights()
    for _ in range(2):
        with nb.GradientTape() as tape:
            loss = nb.ops.mean(nb.ops.square(gan(z, training=True) - 1.0))
        grads = tape.gradient(loss, gan.weights)
        assert [g is None for g in grads] == [False, False, True, True, True, True]
        with pytest.warns(RuntimeWarning, match="no gradient for"):
            opt.apply_gradients(zip(grads, gan.weights))
        topt.zero_grad()
        h = torch.tanh(torch.tanh(torch.tensor(z) @ tw[0] + tw[1]) @ tw[2] + tw[3])
        ((h @ tw[4] + tw[5] - 1.0) ** 2).mean().backward()
        assert all(t.grad is None for t in tw[2:])
        topt.step()
    for a, b in zip(frozen, disc.get_weights()):
        np.testing.assert_array_equal(a, b)
    for a, t in zip(gan.get_weights(), tw):
        np.testing.assert_allclose(a, t.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_an_unwatched_weight_gets_no_gradient_unless_watched(rng):
    """A frozen layer's weight or a non-trainable weight (add_weight(trainable=False)) gets
    None from tape.gradient, whichever else the tape recorded; tape.watch(weight) asks for its
    gradient (TensorFlow's tape.watch), which is then torch's with requires_grad=True."""
    torch = pytest.importorskip("torch")

    class Scale(L.Layer):
        def build(self, input_shape):
            self.w = self.add_weight("w", input_shape[-1:], initializer="ones")
            self.s = self.add_weight("s", input_shape[-1:], initializer="ones",
                                     trainable=False)
            super().build(input_shape)

        def call(self, x):
            return x * self.w * self.s

    nb.seed(int(rng.integers(1 << 30)))
    x = rng.standard_normal((4, 3))
    inp = nb.Input((3,), dtype="float64")
    first = L.Dense(3, activation="tanh", dtype="float64")
    scale = Scale(dtype="float64")
    model = nb.Model(inp, L.Dense(2, dtype="float64")(scale(first(inp))))
    first.trainable = False
    kernel, bias = first.weights
    w, s = scale.w, scale.s
    assert not kernel.trainable and not s.trainable and w.trainable

    def grads(watch=()):
        with nb.GradientTape() as tape:
            tape.watch(list(watch))
            loss = nb.ops.sum(nb.ops.square(model(x)))
        return tape.gradient(loss, [kernel, bias, w, s])

    assert [g is None for g in grads()] == [True, True, False, True]
    got = grads([kernel, s])
    assert [g is None for g in got] == [False, True, False, False]
    tk, tb, tw_, ts = (torch.tensor(np.asarray(v.value), requires_grad=True)
                       for v in (kernel, bias, w, s))
    top = model.layers[-1]
    h = torch.tanh(torch.tensor(x) @ tk + tb) * tw_ * ts
    (h @ torch.tensor(np.asarray(top.params["kernel"])) +
     torch.tensor(np.asarray(top.params["bias"]))).square().sum().backward()
    for g, t in zip([got[0], got[2], got[3]], (tk, tw_, ts)):
        np.testing.assert_allclose(np.asarray(g), t.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_a_variable_requested_twice_gets_its_gradient_at_both_places(rng):
    """The weights of an encoder and of the autoencoder around it, concatenated, name the
    encoder's weights twice: each place gets the gradient (as TensorFlow); the first was None."""
    inp = nb.Input((4,), dtype="float64")
    encoder = nb.Model(inp, L.Dense(2, activation="tanh", dtype="float64")(inp))
    outer = nb.Input((4,), dtype="float64")
    auto = nb.Model(outer, L.Dense(4, dtype="float64")(encoder(outer)))
    x = rng.standard_normal((5, 4))
    with nb.GradientTape() as tape:
        loss = nb.ops.mean(nb.ops.square(auto(x) - x))
    weights = encoder.trainable_weights + auto.trainable_weights
    grads = tape.gradient(loss, weights)
    assert all(g is not None for g in grads)
    for k in range(2):
        np.testing.assert_array_equal(np.asarray(grads[k]), np.asarray(grads[2 + k]))
    kernel = encoder.trainable_weights[0]
    numeric = numeric_gradient(lambda: np.mean((auto.predict(x) - x) ** 2), kernel.value)
    np.testing.assert_allclose(np.asarray(grads[0]), numeric, rtol=1e-6, atol=1e-9)


def test_float64_gradients_reaching_float32_weights_match_torch(rng):
    """A float64 tensor mixed into a float32 model: each weight's gradient is converted to the
    weight's dtype (float32), with torch's values (torch promotes and converts the same way)."""
    torch = pytest.importorskip("torch")
    nb.seed(int(rng.integers(1 << 30)))
    inp = nb.Input((3,))
    model = nb.Model(inp, L.Dense(2)(L.Dense(4, activation="tanh")(inp)))
    x = rng.standard_normal((5, 3)).astype(np.float32)
    y = rng.standard_normal((5, 2))
    scale = rng.standard_normal((5, 2))
    k = model.layers[1].trainable_weights[0]
    c = rng.standard_normal(k.shape)
    with nb.GradientTape() as tape:
        p = model(x)
        loss = nb.ops.mean(nb.ops.square(p - nb.ops.convert_to_tensor(y))) + \
            nb.ops.sum(p * nb.ops.convert_to_tensor(scale)) + \
            nb.ops.sum(k * nb.ops.convert_to_tensor(c))
    assert loss.dtype == np.float64
    grads = tape.gradient(loss, model.trainable_weights)
    w = [torch.tensor(v.numpy(), requires_grad=True) for v in model.trainable_weights]
    tp = torch.tanh(torch.tensor(x) @ w[0] + w[1]) @ w[2] + w[3]
    tloss = ((tp - torch.tensor(y)) ** 2).mean() + (tp * torch.tensor(scale)).sum() + \
        (w[0] * torch.tensor(c)).sum()
    assert tloss.dtype == torch.float64
    tloss.backward()
    for v, g, t in zip(model.trainable_weights, grads, w):
        assert g.dtype == np.float32 and t.grad.dtype == torch.float32, v.name
        np.testing.assert_allclose(np.asarray(g), t.grad.numpy(), rtol=2e-5, atol=2e-6,
                                   err_msg=v.name)


def test_float64_gradient_into_a_float32_layer_and_tensor(rng):
    """The gradient of a float32 source is float32 and equals the all-float64 computation's."""
    nb.seed(int(rng.integers(1 << 30)))
    dense = L.Dense(2)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    dense(x)
    w64 = rng.standard_normal((3, 2))
    xt = nb.ops.convert_to_tensor(x)
    with nb.GradientTape() as tape:
        tape.watch(xt)
        loss = nb.ops.sum(dense(xt) * nb.ops.convert_to_tensor(w64))
    gk, gb, gx = tape.gradient(loss, dense.trainable_weights + [xt])
    assert gk.dtype == gb.dtype == gx.dtype == np.float32
    kernel = np.asarray(dense.trainable_weights[0], np.float64)
    np.testing.assert_allclose(np.asarray(gk), x.astype(np.float64).T @ w64, rtol=2e-5,
                               atol=2e-6)
    np.testing.assert_allclose(np.asarray(gb), w64.sum(0), rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(np.asarray(gx), w64 @ kernel.T, rtol=2e-5, atol=2e-6)


def test_entering_a_recording_tape_again_is_an_error(rng):
    x = nb.ops.convert_to_tensor(rng.standard_normal(3))
    tape = nb.GradientTape()
    with tape:
        tape.watch(x)
        with pytest.raises(RuntimeError, match="already recording"):
            with tape:
                pass
        y = nb.ops.sum(x * x)
    # the tape still records each call once
    np.testing.assert_allclose(np.asarray(tape.gradient(y, x)), 2 * np.asarray(x), rtol=1e-12)
    again = nb.GradientTape(persistent=True)
    for _ in range(2):                          # entered again after its block: fine
        with again:
            again.watch(x)
            z = nb.ops.sum(nb.ops.exp(x))
    np.testing.assert_allclose(np.asarray(again.gradient(z, x)), np.exp(np.asarray(x)),
                               rtol=1e-12)


def test_gradient_of_a_gradient_is_refused_not_silently_none(rng):
    x = nb.ops.convert_to_tensor(rng.standard_normal(3))
    with nb.GradientTape() as outer:
        outer.watch(x)
        with nb.GradientTape() as inner:
            inner.watch(x)
            y = nb.ops.sum(x * x * x)
        g = inner.gradient(y, x)
        np.testing.assert_allclose(np.asarray(g), 3 * np.asarray(x) ** 2, rtol=1e-12)
        z = nb.ops.sum(g * 2.0)
    with pytest.raises(RuntimeError, match="second-order gradients .* not supported.*"
                                           "stop_gradient"):
        outer.gradient(z, x)
    with nb.GradientTape(persistent=True) as tape:       # the gradient itself as the target
        tape.watch(x)
        y = nb.ops.sum(nb.ops.exp(x))
        g = tape.gradient(y, x)
    with pytest.raises(RuntimeError, match="second-order"):
        tape.gradient(g, x, output_gradients=np.ones(3))
    # a target that does not use the inner gradient, or uses it as a constant, is fine
    with nb.GradientTape(persistent=True) as outer:
        outer.watch(x)
        with nb.GradientTape() as inner:
            inner.watch(x)
            y = nb.ops.sum(x * x * x)
        g = inner.gradient(y, x)
        plain = nb.ops.sum(nb.ops.exp(x))
        weighted = nb.ops.sum(nb.ops.stop_gradient(g) * x)
    np.testing.assert_allclose(np.asarray(outer.gradient(plain, x)), np.exp(np.asarray(x)),
                               rtol=1e-12)
    np.testing.assert_allclose(np.asarray(outer.gradient(weighted, x)), np.asarray(g),
                               rtol=1e-12)


def test_a_gradient_from_inside_a_tape_is_a_constant_to_later_tapes(rng):
    """Only the tapes recording when tape.gradient returned a gradient refuse it as part of a
    target; a tape opened afterwards takes it as a constant, as any other tensor."""
    x = nb.ops.convert_to_tensor(rng.standard_normal(3))
    w = nb.ops.convert_to_tensor(rng.standard_normal(3))
    with nb.GradientTape():
        with nb.GradientTape() as inner:
            inner.watch(x)
            y = nb.ops.sum(x * x * x)
        g = inner.gradient(y, x)
    with nb.GradientTape() as later:
        later.watch(w)
        z = nb.ops.sum(g * w)
    np.testing.assert_allclose(np.asarray(later.gradient(z, w)), 3 * np.asarray(x) ** 2,
                               rtol=1e-12)


def test_custom_loss_with_ops_trains_with_fit(rng):
    class MyMSE(nb.losses.Loss):
        def call(self, y_true, y_pred):
            return nb.ops.mean(nb.ops.square(y_pred - y_true), axis=-1)

    x = rng.standard_normal((64, 3)).astype(np.float32)
    y = x @ np.array([[1.0], [-2.0], [0.5]], np.float32)
    nb.seed(0)
    a = nb.Sequential([L.Dense(1)], input_shape=(3,))
    b = nb.Sequential([L.Dense(1)], input_shape=(3,))
    b.set_weights(a.get_weights())
    a.compile(nb.optimizers.SGD(0.1), MyMSE())
    b.compile(nb.optimizers.SGD(0.1), "mse")
    ha = a.fit(x, y, epochs=3, batch_size=16, shuffle=False, verbose=0)
    hb = b.fit(x, y, epochs=3, batch_size=16, shuffle=False, verbose=0)
    np.testing.assert_allclose(ha.history["loss"], hb.history["loss"], rtol=1e-5)
    for p, q in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(p, q, rtol=1e-5, atol=1e-6)
    assert MyMSE()(y, y + 1.0) == pytest.approx(1.0)


def test_per_position_outputs_losses_and_metrics(rng):
    inp = nb.Input((5, 3))
    out = L.Dense(4, activation="softmax")(L.Dense(6, activation="tanh")(inp))
    model = nb.Model(inp, out)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    x = rng.standard_normal((16, 5, 3)).astype(np.float32)
    y = rng.integers(0, 4, (16, 5))
    model.fit(x, y, epochs=1, verbose=0)
    p = model.predict(x)
    want = -np.mean(np.log(np.take_along_axis(p, y[..., None], -1)))
    result = model.evaluate(x, y)
    assert result["loss"] == pytest.approx(want, rel=1e-5)
    assert result["accuracy"] == pytest.approx(np.mean(p.argmax(-1) == y))
    with pytest.raises(ValueError, match=r"labels must have shape \(None, 5\)"):
        model.evaluate(x, y[:, :3])


def test_graph_bad_input_is_clear():
    a, b = nb.Input((3,), name="a"), nb.Input((3,), name="b")
    out = L.Dense(2)(a)
    with pytest.raises(ValueError, match="no output depends on input 'b'"):
        nb.Model([a, b], out)
    with pytest.raises(ValueError, match="graph disconnected.*'a'"):
        nb.Model(b, out)
    dense = L.Dense(2, name="d")
    dense(a)
    with pytest.raises(ValueError, match=r"'d': built for input of shape \(None, 3\), called on "
                                         r"shape \(None, 4\)"):
        dense(nb.Input((4,)))
    x1 = L.Dense(2, name="same")(a)
    x2 = L.Dense(2, name="same")(a)
    with pytest.raises(ValueError, match="two different layers are named 'same'"):
        nb.Model(a, L.Add()([x1, x2]))
    with pytest.raises(TypeError, match="inputs must be tensors made by nb.Input"):
        nb.Model(out, out)
    with pytest.raises(TypeError, match="no value"):
        np.asarray(a)
    model = nb.Model(a, out)
    with pytest.raises(ValueError, match=r"expected input of shape \(None, 3\).*\(2, 4\)"):
        model(np.ones((2, 4), np.float32))
    config = model.get_config()
    config["nodes"][1]["inputs"] = [[1, 0]]                 # a node that reads itself
    with pytest.raises(ValueError, match="cycle"):
        nb.models.functional_from_config(config)


def test_resnet_style_model_on_digits_reaches_97_percent():
    """Two residual blocks with BatchNormalization, functional API, on the 8x8 digits."""
    x, y = nb.datasets.load_digits()
    x_train, x_test, y_train, y_test = nb.data.train_test_split(x, y, test_size=0.2, seed=0,
                                                                stratify=y)
    nb.seed(0)

    def bn():
        return L.BatchNormalization(momentum=0.9)

    def block(h, filters):
        r = L.Conv2D(filters, 3, padding="same", use_bias=False)(h)
        r = L.ReLU()(bn()(r))
        r = bn()(L.Conv2D(filters, 3, padding="same", use_bias=False)(r))
        return L.ReLU()(L.Add()([h, r]))

    inp = nb.Input((1, 8, 8))
    h = L.ReLU()(bn()(L.Conv2D(32, 3, padding="same", use_bias=False)(inp)))
    h = block(block(h, 32), 32)
    out = L.Dense(10, activation="softmax")(L.GlobalAveragePooling2D()(h))
    model = nb.Model(inp, out)
    epochs, steps = 12, -(-len(x_train) // 32)
    model.compile(nb.optimizers.Adam(nb.schedules.CosineDecay(3e-3, epochs * steps)),
                  "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=epochs, batch_size=32, seed=0, verbose=0)
    assert model.evaluate(x_test, y_test)["accuracy"] >= 0.97


def test_a_layer_built_in_one_float_dtype_refuses_another_in_a_graph():
    """A graph hands arrays from layer to layer uncast: a float32 layer or nested model fed a
    float64 tensor is refused when the graph is built (it reached the kernels and failed there
    on a Numba typing error), naming the layer and both dtypes."""
    L = nb.layers
    inner = nb.Sequential([L.Conv2D(2, 3)], input_shape=(2, 4, 4))
    with pytest.raises(ValueError, match=r"Sequential 'sequential\w*' was built in float32 but "
                                         r"gets a float64 input"):
        inner(nb.Input((2, 4, 4), dtype="float64"))
    dense = L.Dense(2, dtype="float64")
    dense.build((3,))
    with pytest.raises(ValueError, match=r"built in float64 but gets a float32 input"):
        dense(nb.Input((3,)))
    same = nb.Input((2, 4, 4))                      # the matching dtype still builds and runs
    out = nb.Model(same, L.Flatten()(inner(same))).predict(np.ones((1, 2, 4, 4), np.float32))
    assert out.shape == (1, 8)
