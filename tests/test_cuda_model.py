"""A whole model on the CUDA backend (Numba's simulator here, a real GPU with
NUMBANET_TEST_REAL_CUDA=1): device placement, training that agrees with the CPU, save/load across
devices, and the error when no GPU can be used."""
import os

import numpy as np
import pytest

import numbanet as nb
from numbanet import _cuda

L = nb.layers


def tiny_cnn(device, dtype="float64"):
    return nb.Sequential([
        L.Conv2D(3, 3, padding="same", activation="relu"), L.BatchNormalization(),
        L.MaxPool2D(2), L.Flatten(), L.Dropout(0.2, seed=1),
        L.Dense(5, activation="tanh"), L.Dense(3, activation="softmax"),
    ], input_shape=(2, 4, 4), device=device, dtype=dtype)


def test_cuda_training_matches_cpu(allow_cuda, rng):
    x = rng.standard_normal((6, 2, 4, 4))
    y = rng.integers(0, 3, 6)
    nb.seed(0)
    cpu = tiny_cnn("cpu")
    gpu = tiny_cnn("cpu").to("cuda")
    gpu.set_weights(cpu.get_weights())
    assert gpu.device == "cuda" and gpu.layers[0].params["kernel"].__class__ is not np.ndarray
    for m in (cpu, gpu):
        m.layers[4].rate = 0.0          # the two devices draw different dropout masks
        m.compile(nb.optimizers.Adam(0.01), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    for _ in range(2):
        assert gpu.train_step(x, y) == pytest.approx(cpu.train_step(x, y), rel=1e-9)
    for a, b in zip(cpu.get_weights(), gpu.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(gpu.predict(x), cpu.predict(x), rtol=1e-9, atol=1e-12)
    assert gpu.evaluate(x, y)["loss"] == pytest.approx(cpu.evaluate(x, y)["loss"], rel=1e-9)


def test_fit_save_load_across_devices(allow_cuda, rng, tmp_path):
    x = rng.standard_normal((8, 2, 4, 4)).astype(np.float32)
    y = rng.integers(0, 3, 8)
    nb.seed(1)
    model = tiny_cnn("cuda", dtype="float32")
    model.compile("adam", "sparse_categorical_crossentropy")
    history = model.fit(x, y, epochs=2, batch_size=4, verbose=0)
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()
    path = tmp_path / "gpu.npz"
    model.save(path)
    on_cpu = nb.load_model(path, device="cpu")
    assert on_cpu.device == "cpu"
    np.testing.assert_allclose(on_cpu.predict(x), model.predict(x), rtol=1e-5, atol=1e-6)
    back = on_cpu.to("cuda").to("cpu")
    np.testing.assert_allclose(back.predict(x), model.predict(x), rtol=1e-5, atol=1e-6)


def test_cuda_unavailable_is_a_clear_error(monkeypatch):
    if not _cuda.is_simulator():
        pytest.skip("needs the simulator (a real GPU is available)")
    monkeypatch.delenv("NUMBANET_ALLOW_CUDASIM", raising=False)
    assert not nb.cuda_available()
    from numbanet import backend
    monkeypatch.setattr(backend, "_backends", {})
    with pytest.raises(RuntimeError, match="simulator"):
        nb.Sequential([L.Dense(2)], input_shape=(3,), device="cuda")
    assert "NUMBANET_ALLOW_CUDASIM" in _cuda.unavailable_reason()
    assert os.environ.get("NUMBANET_ALLOW_CUDASIM") is None


def residual_graph(dtype="float64"):
    inp = nb.Input((1, 4, 4), dtype=dtype)
    x = L.Conv2D(2, 3, padding="same", activation="relu")(inp)
    shared = L.Conv2D(2, 3, padding="same", name="shared")
    y = shared(shared(x))
    x = L.BatchNormalization()(L.Add()([x, y]))
    x = L.Flatten()(L.MaxPool2D(2)(x))
    a = L.Dense(3, activation="softmax", name="a")(x)
    b = L.Dense(2, name="b")(L.Concatenate()([x, nb.ops.tanh(x)]))
    return nb.Model(inp, [a, b])


def test_functional_graph_on_cuda_matches_cpu(allow_cuda, rng, monkeypatch):
    """A graph with a residual connection, a layer called twice, an op node and two outputs:
    fit steps and tape gradients on the CUDA backend equal the CPU's."""
    from numbanet.kernels.cuda import _common
    for name, value in (("threads", 32), ("max_blocks", 3), ("row_block", (4, 2)),
                        ("gemm_tile", (8, 8, 4, 2, 2))):       # small simulated blocks
        monkeypatch.setattr(_common.config, name, value)
    x = rng.standard_normal((2, 1, 4, 4))
    ya, yb = rng.integers(0, 3, 2), rng.standard_normal((2, 2))
    nb.seed(0)
    cpu = residual_graph()
    gpu = nb.models.functional_from_config(cpu.get_config()).to("cuda")
    gpu.set_weights(cpu.get_weights())
    assert gpu.device == "cuda"
    for m in (cpu, gpu):
        m.compile(nb.optimizers.Adam(0.01), ["sparse_categorical_crossentropy", "mse"])
    for _ in range(2):
        assert gpu.train_step(x, [ya, yb]) == pytest.approx(cpu.train_step(x, [ya, yb]),
                                                           rel=1e-9)
    for a, b in zip(cpu.get_weights(), gpu.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    grads = []
    for m in (cpu, gpu):
        with nb.GradientTape() as tape:
            pa, pb = m(x, training=True)
            loss = nb.ops.sum(pa * pa) + nb.ops.mean(nb.ops.square(pb))
        grads.append([np.asarray(g) for g in tape.gradient(loss, m.trainable_weights)])
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_models_sharing_layers_follow_them_to_their_device(allow_cuda, rng):
    """An encoder, an autoencoder and a classifier share the encoder's layer: moving the
    autoencoder moves that layer, and the other two then run where it is (the classifier's own
    head follows), for predict, calls under a tape and fit; and back again."""
    inp = nb.Input((4,), dtype="float64")
    code = L.Dense(2, activation="tanh", dtype="float64")(inp)
    encoder = nb.Model(inp, code)
    auto = nb.Model(inp, L.Dense(4, dtype="float64")(code))
    classifier = nb.Model(inp, L.Dense(3, activation="softmax", dtype="float64")(code))
    x, y = rng.standard_normal((5, 4)), rng.integers(0, 3, 5)
    want_code, want_probs = encoder.predict(x), classifier.predict(x)
    classifier.compile(nb.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    auto.to("cuda")
    np.testing.assert_allclose(encoder.predict(x), want_code, rtol=1e-12)
    assert encoder.device == "cuda"
    with nb.GradientTape() as tape:
        probs = classifier(x, training=True)
        loss = nb.ops.sum(probs * probs)
    assert classifier.device == probs.device == "cuda"
    assert all(g is not None for g in tape.gradient(loss, classifier.trainable_weights))
    np.testing.assert_allclose(np.asarray(probs), want_probs, rtol=1e-12)
    assert np.isfinite(classifier.fit(x, y, epochs=1, verbose=0).history["loss"][0])
    auto.to("cpu")
    assert encoder.predict(x).shape == (5, 2) and encoder.device == "cpu"
    assert classifier.evaluate(x, y)["loss"] > 0 and classifier.device == "cpu"


def test_apply_gradients_updates_weights_on_their_device(allow_cuda, rng):
    """A custom training loop on the GPU: the optimizer runs its kernels where the weights are
    (as fit's does), and two Adam steps there equal two on the CPU."""
    x, y = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    nb.seed(0)
    cpu = nb.Sequential([L.Dense(5, activation="tanh"), L.Dense(2)], input_shape=(3,),
                        dtype="float64")
    gpu = nb.Sequential([L.Dense(5, activation="tanh"), L.Dense(2)], input_shape=(3,),
                        dtype="float64").to("cuda")
    gpu.set_weights(cpu.get_weights())
    for model in (cpu, gpu):
        opt = nb.optimizers.Adam(0.01)
        for _ in range(2):
            with nb.GradientTape() as tape:
                loss = nb.ops.mean(nb.ops.square(model(x, training=True) - y))
            grads = tape.gradient(loss, model.trainable_weights)
            opt.apply_gradients(zip(grads, model.trainable_weights))
        assert opt.backend is model.backend
    for a, b in zip(cpu.get_weights(), gpu.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
