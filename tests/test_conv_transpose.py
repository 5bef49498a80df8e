"""Conv2DTranspose and UpSampling2D: PyTorch agreement (forward and gradients), finite differences,
the adjoint relation with Conv2D, the upsampling kernels against the float64 reference (CPU, and
the CUDA twins in the simulator), bad arguments, training, saving and a model on device="cuda"."""
import numpy as np
import pytest
from conftest import assert_close, poisoned, run_pair

import numbanet as nb
import reference as ref
from numbanet import _cuda
from numbanet.kernels.cpu import pool as P
from numbanet.testing import gradcheck

L = nb.layers


def _torch_conv_transpose(torch, x, w, b, layer):
    """PyTorch's transposed convolution with ``layer``'s geometry. An explicit padding is passed
    as is; for 'valid' / 'same' the padding-free result is cropped at ``layer.pads`` (top/left)
    to the layer's output size, extended with the bias where that reaches past it."""
    F = torch.nn.functional
    if not isinstance(layer.padding, str):
        return F.conv_transpose2d(x, w, b, stride=layer.strides, padding=layer.padding,
                                  output_padding=layer.output_padding or 0,
                                  dilation=layer.dilation_rate)
    full = F.conv_transpose2d(x, w, None, stride=layer.strides, dilation=layer.dilation_rate)
    (t, s), (oh, ow) = layer.pads, layer.output_shape[1:]
    full = F.pad(full, (0, max(0, s + ow - full.shape[3]), 0, max(0, t + oh - full.shape[2])))
    out = full[:, :, t:t + oh, s:s + ow]
    return out if b is None else out + b[None, :, None, None]


# (kernel_size, strides, padding, output_padding, dilation_rate)
TORCH_CASES = [
    ((3, 3), 1, "valid", None, 1),
    ((3, 2), 1, "same", None, 1),
    ((3, 3), 2, "same", None, 1),
    ((4, 4), 2, "same", None, 1),            # the usual decoder upsampling step
    ((2, 3), 2, "valid", None, 1),
    ((2, 2), 3, "valid", None, 1),           # kernel smaller than the stride: gaps
    ((3, 3), 3, "same", None, 1),
    ((5, 2), 3, "same", (2, 1), 1),
    ((3, 3), 2, "valid", (1, 0), 1),
    ((3, 3), 2, "same", (1, 1), 1),
    ((4, 3), 2, "same", (0, 1), 1),
    ((3, 3), 2, 1, None, 1),                 # explicit paddings: PyTorch's meaning
    ((3, 3), 2, 1, (1, 1), 1),
    ((3, 4), 3, (1, 2), (2, 0), 1),
    ((2, 2), 1, (0, 1), None, 2),
    ((3, 3), 1, 1, (1, 0), 2),               # output_padding below the dilation, not the stride
    ((3, 2), (2, 1), "same", None, (1, 2)),
]


def _case_id(case):
    k, s, p, op, d = case
    return f"k{k}-s{s}-p{p}-op{op}-d{d}".replace(" ", "")


@pytest.mark.parametrize("case", TORCH_CASES, ids=_case_id)
def test_matches_torch(case, rng):
    torch = pytest.importorskip("torch")
    k, s, p, op, d = case
    layer = L.Conv2DTranspose(4, k, strides=s, padding=p, output_padding=op, dilation_rate=d,
                              activation="tanh", bias_initializer="glorot_uniform")
    x = rng.standard_normal((2, 3, 5, 4))
    y = layer.forward(x, training=True)
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(layer.params["kernel"], requires_grad=True)
    tb = torch.tensor(layer.params["bias"], requires_grad=True)
    ty = torch.tanh(_torch_conv_transpose(torch, tx, tw, tb, layer))
    assert layer.params["kernel"].shape == (3, 4, *layer.kernel_size)
    assert y.shape == tuple(ty.shape) and y.dtype == np.float64
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    g = rng.standard_normal(y.shape)
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(layer.backward(g), tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.grads["kernel"], tw.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.grads["bias"], tb.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_matches_torch_float32_no_bias(rng):
    torch = pytest.importorskip("torch")
    layer = L.Conv2DTranspose(5, 4, strides=2, padding=1, use_bias=False)
    x = rng.standard_normal((3, 6, 7, 7)).astype(np.float32)
    y = layer.forward(x)
    assert y.dtype == np.float32 and "bias" not in layer.params
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    tw = torch.tensor(layer.params["kernel"], dtype=torch.float64, requires_grad=True)
    ty = torch.nn.functional.conv_transpose2d(tx, tw, stride=2, padding=1)
    assert_close(y, ty.detach().numpy(), np.float32, "forward")
    g = rng.standard_normal(y.shape).astype(np.float32)
    ty.backward(torch.tensor(g, dtype=torch.float64))
    assert_close(layer.backward(g), tx.grad.numpy(), np.float32, "input gradient")
    np.testing.assert_allclose(layer.grads["kernel"], tw.grad.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kwargs", [
    dict(filters=2, kernel_size=3, strides=2, padding="same"),
    dict(filters=3, kernel_size=(2, 3), strides=(3, 2), padding="valid", activation="sigmoid"),
    dict(filters=2, kernel_size=3, strides=2, padding=1, output_padding=1, use_bias=False),
    dict(filters=1, kernel_size=(3, 2), strides=2, padding="same", output_padding=(1, 0),
         dilation_rate=(2, 1)),
])
def test_gradcheck(rng, kwargs):
    assert gradcheck(L.Conv2DTranspose(**kwargs), rng.standard_normal((2, 2, 3, 4)))


@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_same_padding_multiplies_the_size_by_the_stride(stride, k):
    layer = L.Conv2DTranspose(2, (k, 3), strides=stride, padding="same")
    assert layer.forward(np.ones((1, 3, 5, 4), np.float32)).shape == (1, 2, 5 * stride,
                                                                    4 * stride)
    # and the Conv2D with the same arguments maps that size back
    conv = L.Conv2D(3, (k, 3), strides=stride, padding="same")
    assert conv.forward(np.ones((1, 2, 5 * stride, 4 * stride), np.float32)).shape == \
        (1, 3, 5, 4)


@pytest.mark.parametrize("kwargs", [
    dict(kernel_size=3, strides=1, padding="valid"),
    dict(kernel_size=3, strides=1, padding="same"),
    dict(kernel_size=(4, 3), strides=2, padding="same"),
    dict(kernel_size=(2, 3), strides=(3, 2), padding="same"),
    dict(kernel_size=2, strides=3, padding="valid"),
    dict(kernel_size=(3, 5), strides=2, padding="valid"),
    dict(kernel_size=3, strides=2, padding=1),
    dict(kernel_size=(3, 2), strides=(1, 2), padding=(1, 0), dilation_rate=(2, 1)),
])
def test_adjoint_of_conv2d(kwargs, rng):
    """<conv(x), y> == <x, convT(y)> for a Conv2D and a Conv2DTranspose with the same arguments
    and the same kernel (no bias)."""
    convt = L.Conv2DTranspose(3, use_bias=False, **kwargs)
    y = rng.standard_normal((2, 4, 5, 6))
    ty = convt.forward(y)
    conv = L.Conv2D(4, use_bias=False, **kwargs)
    x = rng.standard_normal(ty.shape)
    cx = conv.forward(x)
    assert cx.shape == y.shape
    conv.params["kernel"][...] = convt.params["kernel"]
    cx = conv.forward(x)
    np.testing.assert_allclose(np.vdot(cx, y), np.vdot(x, ty), rtol=1e-12)


def test_keras_padding_with_output_padding():
    # Keras: (size - 1) * stride + kernel - 2 * pad + output_padding, pad 0 ("valid") or
    # kernel // 2 ("same"); without output_padding size * stride (+ max(kernel - stride, 0))
    x = np.ones((1, 1, 4, 4), np.float32)
    shape = lambda **kw: L.Conv2DTranspose(1, 3, strides=2, **kw).forward(x).shape[2:]  # noqa
    assert shape(padding="valid") == (9, 9)
    assert shape(padding="valid", output_padding=1) == (10, 10)
    assert shape(padding="same") == (8, 8)
    assert shape(padding="same", output_padding=0) == (7, 7)
    assert shape(padding="same", output_padding=(1, 0)) == (8, 7)
    assert L.Conv2DTranspose(1, 2, strides=3).forward(x).shape[2:] == (12, 12)


# ------------------------------------------------------------------------------- UpSampling2D
@pytest.mark.parametrize("size", [2, (3, 1), (1, 3), (2, 3)])
def test_upsampling_matches_torch(size, rng):
    torch = pytest.importorskip("torch")
    layer = L.UpSampling2D(size)
    x = rng.standard_normal((2, 3, 4, 5))
    y = layer.forward(x)
    sh, sw = layer.size
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.interpolate(tx, scale_factor=(sh, sw), mode="nearest")
    np.testing.assert_array_equal(y, ty.detach().numpy())
    g = rng.standard_normal(y.shape)
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(layer.backward(g), tx.grad.numpy(), rtol=1e-12, atol=1e-14)
    assert layer.count_params() == 0


def test_upsampling_gradcheck_and_shapes(rng):
    assert gradcheck(L.UpSampling2D((2, 3)), rng.standard_normal((2, 2, 3, 2)))
    layer = L.UpSampling2D()
    assert layer.forward(np.ones((1, 2, 3, 1), np.float32)).shape == (1, 2, 6, 2)
    assert layer.compute_output_shape((4, None, 3)) == (4, None, 6)


# ------------------------------------------------------------------------ upsampling kernels
UP_CASES = [
    ((2, 3, 4, 5), (2, 2)),
    ((1, 1, 1, 1), (1, 1)),
    ((1, 2, 1, 1), (3, 2)),
    ((2, 2, 3, 5), (3, 1)),
    ((3, 1, 5, 3), (1, 3)),
    ((1, 2, 7, 1), (2, 5)),
    ((4, 8, 48, 47), (2, 2)),       # parallel path
    ((4, 9, 40, 37), (3, 2)),       # parallel path, planes not a multiple of the chunks
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, size", UP_CASES, ids=lambda v: "x".join(map(str, v)))
def test_upsample_kernels(shape, size, dtype, rng):
    N, C, H, W = shape
    sh, sw = size
    oshape = (N, C, H * sh, W * sw)
    x = rng.standard_normal(shape).astype(dtype)
    out = poisoned(oshape, dtype)
    P.upsample2d_forward(x, sh, sw, out)
    np.testing.assert_array_equal(out, ref.upsample2d_forward(x, sh, sw).astype(dtype))
    g = rng.standard_normal(oshape).astype(dtype)
    gi = poisoned(shape, dtype)
    P.upsample2d_backward(g, sh, sw, gi)
    assert_close(gi, ref.upsample2d_backward(g, sh, sw), dtype, "backward")


def test_upsample_backward_same_bits_on_any_thread_count(rng):
    import numba
    g = rng.standard_normal((4, 16, 80, 80)).astype(np.float32)
    assert g.size >= P._UPSAMPLE_PARALLEL_MIN                        # the parallel path
    results = []
    for threads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
        old = numba.get_num_threads()
        numba.set_num_threads(threads)
        try:
            gi = poisoned((4, 16, 40, 40), np.float32)
            P.upsample2d_backward(g, 2, 2, gi)
        finally:
            numba.set_num_threads(old)
        results.append(gi)
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


def test_compare_covers_the_upsample_kernels():
    """``numbanet compare`` has inputs for both kernels; both targets agree with the float64 CPU
    result (CUDA in the simulator)."""
    from numbanet.compare import compare, simulator_agreement
    names = ["upsample2d_backward", "upsample2d_forward"]
    rows = compare(ops=names, size="small", repeat=1, cuda="off")
    assert sorted(r["kernel"] for r in rows) == names
    for r in rows:
        assert r["op"] == "pool" and r["cpu_s"] > 0 and r["cpu_err"] < 1e-6, r
    if _cuda.cuda is not None:
        errors = simulator_agreement(names)
        assert sorted(errors) == names
        for name, err in errors.items():
            assert err is not None and err < 1e-6, (name, err)


# ---------------------------------------------------------------------------- bad arguments
@pytest.mark.parametrize("make, match", [
    (lambda: L.Conv2DTranspose(0, 3), "Conv2DTranspose.*filters must be a positive integer, "
                                      "got 0"),
    (lambda: L.Conv2DTranspose(2, (3, 0)), "Conv2DTranspose.*kernel_size.*got 0"),
    (lambda: L.Conv2DTranspose(2, 3, strides=-2), "Conv2DTranspose.*strides.*got -2"),
    (lambda: L.Conv2DTranspose(2, 3, padding="full"), "Conv2DTranspose.*padding.*'full'"),
    (lambda: L.Conv2DTranspose(2, 3, strides=2, output_padding=2),
     r"Conv2DTranspose.*output_padding must be smaller than the stride or the dilation.*"
     r"\(2, 2\).*got 2"),
    (lambda: L.Conv2DTranspose(2, 3, output_padding=-1), "output_padding.*got -1"),
    (lambda: L.Conv2DTranspose(2, 3, dilation_rate=(1, 2, 3)),
     r"dilation_rate must be an int or a pair of ints, got \(1, 2, 3\)"),
    (lambda: L.Conv2DTranspose(2, 3, activation="relux"), "unknown activation 'relux'"),
    (lambda: L.UpSampling2D(0), "UpSampling2D.*size must be a positive integer, got 0"),
    (lambda: L.UpSampling2D((2, 2, 2)), r"UpSampling2D.*size.*got \(2, 2, 2\)"),
    (lambda: L.UpSampling2D(interpolation="bilinear"),
     "UpSampling2D.*interpolation must be one of 'nearest'.*got 'bilinear'"),
    (lambda: L.UpSampling2D(interpolation=None), "interpolation.*got None"),
])
def test_bad_arguments_raise_clear_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match=r"Conv2DTranspose.*4-D input.*\(None, 3\)"):
        L.Conv2DTranspose(2, 3).forward(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"Conv2DTranspose.*padding \(4, 4\).*leaves no output"):
        L.Conv2DTranspose(2, 3, padding=4).forward(np.ones((1, 1, 2, 2), np.float32))
    with pytest.raises(ValueError, match=r"UpSampling2D.*4-D input.*\(None, 3, 4\)"):
        L.UpSampling2D().forward(np.ones((2, 3, 4), np.float32))


def test_config_round_trip():
    for layer in [L.Conv2DTranspose(2, (3, 1), strides=2, padding=(1, 0), output_padding=1,
                                    dilation_rate=1, activation="relu", use_bias=False),
                  L.Conv2DTranspose(4, 3, strides=2, padding="same"),
                  L.UpSampling2D((3, 2)), L.UpSampling2D()]:
        config = layer.get_config()
        clone = type(layer).from_config(config)
        assert clone.get_config() == config
        assert nb.layers.get(type(layer).__name__) is type(layer)
    assert L.Conv2DTranspose(1, 2, output_padding=(0, 0)).get_config()["output_padding"] == [0, 0]


# ---------------------------------------------------------------------------------- training
def decoder(device="cpu", dtype="float32", side=8):
    """A small convolutional autoencoder: Conv2D down, MaxPool2D, UpSampling2D and
    Conv2DTranspose back up, a sigmoid output (fused with binary crossentropy)."""
    return nb.Sequential([
        L.Conv2D(4, 3, strides=2, padding="same", activation="relu"),
        L.MaxPool2D(2),
        L.UpSampling2D(2),
        L.Conv2DTranspose(3, 3, strides=2, padding="same", activation="relu"),
        L.Conv2DTranspose(1, (2, 3), padding=(0, 1), output_padding=0, activation="sigmoid"),
    ], input_shape=(1, side, side), device=device, dtype=dtype)


def test_tiny_model_trains_saves_and_loads(rng, tmp_path):
    nb.seed(3)
    model = decoder()
    assert model.output_shape == (1, 9, 8)
    x = (rng.random((32, 1, 8, 8)) > 0.5).astype(np.float32)
    y = np.pad(x, ((0, 0), (0, 0), (0, 1), (0, 0)))
    model.compile(nb.optimizers.Adam(0.01), "binary_crossentropy")
    history = model.fit(x, y, epochs=15, batch_size=8, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.85 * losses[0], losses
    path = tmp_path / "decoder.npz"
    model.save(path)
    loaded = nb.load_model(path)
    assert [type(layer).__name__ for layer in loaded.layers][2:] == \
        ["UpSampling2D", "Conv2DTranspose", "Conv2DTranspose"]
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert loaded.evaluate(x, y)["loss"] == pytest.approx(model.evaluate(x, y)["loss"])


def test_functional_graph(rng):
    """Both layers in a functional graph: output shapes, and the tape's gradients of every input
    and weight against finite differences."""
    inp = nb.Input((2, 3, 3), dtype="float64")
    h = L.Conv2DTranspose(3, 2, strides=2, padding="same", activation="tanh")(inp)
    model = nb.Model(inp, L.Conv2DTranspose(1, 3, padding="same")(L.UpSampling2D((1, 2))(h)))
    assert model.output_shape == (1, 6, 12)
    assert gradcheck(model, rng.standard_normal((2, 2, 3, 3)))


# ------------------------------------------------------------------------------------ CUDA
def _cuda_usable():
    return _cuda.cuda is not None and (_cuda.is_simulator() or _cuda.is_available())


cuda_only = pytest.mark.skipif(not _cuda_usable(), reason="CUDA kernels cannot run here")


@pytest.fixture
def small_launches(monkeypatch):
    """Tiny blocks and grids (tiny arrays still span several blocks and run the grid-stride
    loops more than once), launches checked against the kernels' specs, CUDA usable in the
    simulator."""
    from numbanet.kernels.cuda import _common
    monkeypatch.setenv("NUMBANET_ALLOW_CUDASIM", "1")
    for name, value in (("threads", 32), ("max_blocks", 3), ("row_block", (4, 2)),
                        ("gemm_tile", (8, 8, 4, 2, 2)), ("gemm_min_chunk", 4), ("num_sms", 4),
                        ("check_signatures", True)):
        monkeypatch.setattr(_common.config, name, value)
    if not _cuda.is_simulator() and not _cuda.is_available():
        pytest.skip(_cuda.unavailable_reason())
    return _common


@cuda_only
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, size", UP_CASES[:6], ids=lambda v: "x".join(map(str, v)))
def test_cuda_upsample_kernels_match_cpu(shape, size, dtype, rng, small_launches):
    N, C, H, W = shape
    sh, sw = size
    oshape = (N, C, H * sh, W * sw)
    x = rng.standard_normal(shape).astype(dtype)
    (c,), (g,) = run_pair("pool", "upsample2d_forward", [x, sh, sw], [(oshape, dtype)])
    np.testing.assert_array_equal(g, ref.upsample2d_forward(x, sh, sw).astype(dtype))
    np.testing.assert_array_equal(g, c)
    grad = rng.standard_normal(oshape).astype(dtype)
    (c,), (g,) = run_pair("pool", "upsample2d_backward", [grad, sh, sw], [(shape, dtype)])
    assert_close(g, ref.upsample2d_backward(grad, sh, sw), dtype, "backward")
    np.testing.assert_array_equal(g, c)         # the same float64 sums in the same order
    assert {"pool._upsample_fwd", "pool._upsample_bwd"} <= small_launches.LAUNCHED


@cuda_only
def test_cuda_model_matches_cpu(rng, small_launches):
    x = (rng.random((2, 1, 4, 4)) > 0.5).astype(np.float64)
    y = np.pad(x, ((0, 0), (0, 0), (0, 1), (0, 0)))
    nb.seed(0)
    cpu = decoder("cpu", "float64", side=4)
    gpu = decoder("cpu", "float64", side=4).to("cuda")
    gpu.set_weights(cpu.get_weights())
    assert gpu.device == "cuda"
    for m in (cpu, gpu):
        m.compile(nb.optimizers.Adam(0.01), "binary_crossentropy")
    for _ in range(2):
        assert gpu.train_step(x, y) == pytest.approx(cpu.train_step(x, y), rel=1e-9)
    for a, b in zip(cpu.get_weights(), gpu.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(gpu.predict(x), cpu.predict(x), rtol=1e-9, atol=1e-12)
