"""Sequence layers on the CUDA backend (Numba's simulator here, a real GPU with
NUMBANET_TEST_REAL_CUDA=1): a masked text model with Embedding, Conv1D, 1-D pools, SimpleRNN,
a Bidirectional LSTM and a GRU trains as it does on the CPU, and its tape gradients agree."""
import numpy as np
import pytest

import numbanet as nb

L = nb.layers


@pytest.fixture
def small_sim(allow_cuda, monkeypatch):
    from numbanet.kernels.cuda import _common
    for name, value in (("threads", 32), ("max_blocks", 3), ("row_block", (4, 2)),
                        ("gemm_tile", (8, 8, 4, 2, 2))):       # small simulated blocks
        monkeypatch.setattr(_common.config, name, value)


def text_graph(vocab=7, t=6):
    ids = nb.Input((t,), dtype="int64")
    e = L.Embedding(vocab, 3, mask_zero=True)(ids)
    a = L.Bidirectional(L.LSTM(2, return_sequences=True))(e)
    a = L.GRU(2)(a)
    b = L.Permute((2, 1))(L.Embedding(vocab, 3, name="conv_embedding")(ids))
    b = L.MaxPool1D(2)(L.Conv1D(2, 3, padding="causal", activation="tanh")(b))
    b = L.GlobalAveragePooling1D(data_format="channels_first")(L.AvgPool1D(1)(b))
    c = L.SimpleRNN(2, go_backwards=True)(e)
    out = L.Dense(3, activation="softmax")(L.Concatenate()([a, b, c]))
    return nb.Model(ids, out)


def twins(graph, optimizer):
    """The same compiled graph on the CPU and, with the CPU's weights, on the CUDA backend."""
    nb.seed(0)
    cpu = graph()
    gpu = nb.models.functional_from_config(cpu.get_config()).to("cuda")
    gpu.set_weights(cpu.get_weights())
    for m in (cpu, gpu):
        m.compile(optimizer(), "sparse_categorical_crossentropy")
    return cpu, gpu


def test_text_model_on_cuda_matches_cpu(small_sim, rng):
    x = rng.integers(1, 7, (3, 6))
    x[0, 4:] = 0                             # post-padded
    x[2, 1:] = 0
    y = rng.integers(0, 3, 3)
    cpu, gpu = twins(text_graph, lambda: nb.optimizers.Adam(0.01))
    for _ in range(2):
        assert gpu.train_step(x, y) == pytest.approx(cpu.train_step(x, y), rel=1e-5)
    for a, b in zip(cpu.get_weights(), gpu.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    grads = []
    for m in (cpu, gpu):
        with nb.GradientTape() as tape:
            loss = nb.ops.sum(nb.ops.square(m(x, training=True)))
        grads.append([np.asarray(g) for g in tape.gradient(loss, m.trainable_weights)])
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def transformer_graph(vocab=6, t=5):
    ids = nb.Input((t,), dtype="int64")
    h = L.SinePositionEncoding()(L.PositionalEmbedding(t, vocab, 4, mask_zero=True)(ids))
    h = L.TransformerDecoder(6, 2, norm_first=True)(h, h)       # self- and cross-attention
    return nb.Model(ids, L.Dense(vocab, activation="softmax")(h))


def test_transformer_on_cuda_matches_cpu(small_sim, rng):
    x = rng.integers(1, 6, (2, 5))
    x[1, 3:] = 0
    cpu, gpu = twins(transformer_graph, lambda: nb.optimizers.SGD(0.1))
    assert gpu.train_step(x, x) == pytest.approx(cpu.train_step(x, x), rel=1e-5)
    for a, b in zip(cpu.get_weights(), gpu.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("cls", [L.GlobalAveragePooling1D, L.GlobalMaxPooling1D])
def test_global_pool1d_of_a_fully_masked_sample_is_zero_on_cuda(small_sim, cls, rng):
    """The CUDA backend pools a sample with no unmasked step to 0 with a zero gradient, as the
    CPU does, and agrees with it on the others."""
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    x[0] = 0.0
    x[1, 1:] = 0.0
    results = []
    for device in ("cpu", "cuda"):
        t = nb.ops.convert_to_tensor(x, device=device)
        with nb.GradientTape() as tape:
            tape.watch(t)
            out = cls()(L.Masking()(t))
            loss = nb.ops.sum(out * np.arange(1, 5, dtype=np.float32))
        assert out.backend.name == device
        results.append((np.asarray(out), np.asarray(tape.gradient(loss, t))))
    (cpu_out, cpu_grad), (gpu_out, gpu_grad) = results
    assert np.all(gpu_out[0] == 0.0) and np.all(gpu_grad[0] == 0.0)
    np.testing.assert_allclose(gpu_out, cpu_out, rtol=1e-6)
    np.testing.assert_allclose(gpu_out[1], x[1, 0], rtol=1e-6)
    np.testing.assert_allclose(gpu_grad, cpu_grad, rtol=1e-6)


def test_channels_last_conv1d_and_pools_on_cuda_match_cpu(small_sim, rng):
    """data_format="channels_last" transposes on the device as on the CPU: outputs and tape
    gradients (input and weights) agree."""
    x = rng.standard_normal((2, 7, 3)).astype(np.float32)
    results = []
    for device in ("cpu", "cuda"):
        nb.seed(0)
        conv = L.Conv1D(4, 3, padding="same", activation="relu", data_format="channels_last")
        layers = [conv, L.MaxPool1D(2, data_format="channels_last"),
                  L.AvgPool1D(2, padding="same", data_format="channels_last")]
        t = nb.ops.convert_to_tensor(x, device=device)
        with nb.GradientTape() as tape:
            tape.watch(t)
            out = t
            for layer in layers:
                out = layer(out)
            loss = nb.ops.sum(out * np.arange(1, 5, dtype=np.float32))
        assert out.backend.name == device and tuple(out.shape) == (2, 2, 4)
        grads = tape.gradient(loss, [t] + conv.trainable_weights)
        results.append([np.asarray(out)] + [np.asarray(g) for g in grads])
    for a, b in zip(*results):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_attention_mask_broadcast_on_cuda(small_sim, rng):
    """A (batch, 1, T_k) attention_mask with a query mask on the CUDA backend gives what the
    CPU gives with the explicitly expanded mask (outputs, input and weight gradients)."""
    from numbanet.backend import get_backend
    q, v = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5, 4))
    mask = rng.random((2, 1, 5)) > 0.3
    mask[..., 0] = True
    qm = np.array([[1, 0, 1], [1, 1, 1]], bool)
    g = rng.standard_normal((2, 3, 4))
    mha = L.MultiHeadAttention(2, 2, dtype="float64")
    results = []
    for device, kwargs in (("cpu", dict(attention_mask=np.broadcast_to(mask, (2, 3, 5)) &
                                        qm[:, :, None])),
                           ("cuda", dict(attention_mask=mask, query_mask=qm))):
        mha._move_to(get_backend(device))
        ts = [nb.ops.convert_to_tensor(a, device=device) for a in (q, v)]
        with nb.GradientTape() as tape:
            tape.watch(ts)
            out = mha(*ts, **kwargs)
            loss = nb.ops.sum(out * g)
        assert out.backend.name == device
        grads = tape.gradient(loss, ts + mha.trainable_weights)
        results.append([np.asarray(out)] + [np.asarray(x) for x in grads])
    for a, b in zip(*results):
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12)
