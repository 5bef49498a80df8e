"""Normalization: CPU kernels against float64 references and finite differences (the backward
passes with accumulate off, on poisoned outputs, and on, adding the gamma/beta gradients into
previous contents); the layers (gradcheck, PyTorch, training vs inference, moving statistics,
config, bad arguments); a tiny model that trains and round-trips its moving statistics through
save/load; the CUDA kernels in Numba's simulator against the CPU kernels, accumulate off and on
(tests/test_cuda_ptx.py compiles them to PTX for sm_90)."""
import json

import numpy as np
import pytest
from conftest import accumulate_runs, accumulated, poisoned

import numbanet as nb
import reference as ref
from numbanet.backend import kernel_names
from numbanet.kernels.cpu import normalization as K
from numbanet.layers import normalization as N
from numbanet.testing import gradcheck

L = nb.layers
for _cls in (N.BatchNormalization, N.LayerNormalization):
    if _cls.__name__ not in L.LAYERS:
        L.register(_cls)

DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 1e-5, np.float64: 1e-12}
EPS = 1e-3
PUBLIC = sorted(["batchnorm_forward_train", "batchnorm_forward_infer", "batchnorm_backward",
                 "batchnorm_backward_infer", "batchnorm_update_running", "layernorm_forward",
                 "layernorm_backward"])
# (N, C, S): S = 1 is the Dense case; the last one takes the prange paths.
BN_SHAPES = [(1, 1, 1), (2, 3, 5), (5, 4, 1), (1, 3, 7), (3, 5, 13), (16, 8, 300)]
LN_SHAPES = [(1, 1), (1, 7), (2, 5), (9, 13), (64, 600)]


def assert_close(actual, expected, dtype, rtol=None, floor=0.0):
    """Relative to each element and to the magnitude of the whole array, or to ``floor`` when
    larger: a normalization over a single value gives exactly beta and a zero input gradient,
    up to the rounding of O(1) terms that cancel (``floor`` = 1 for those shapes)."""
    rtol = RTOL[dtype] if rtol is None else rtol
    expected = np.asarray(expected, dtype=np.float64)
    scale = max(float(np.max(np.abs(expected))) if expected.size else 1.0, floor)
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected, rtol=rtol,
                               atol=rtol * scale)


def bn_inputs(rng, shape, dtype, offset=2.0):
    c = shape[1]
    x = (offset + 3.0 * rng.standard_normal(shape)).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    gamma = (1.0 + rng.standard_normal(c)).astype(dtype)
    beta = rng.standard_normal(c).astype(dtype)
    rm = rng.standard_normal(c).astype(dtype)
    rv = (0.5 + rng.random(c)).astype(dtype)
    return x, g, gamma, beta, rm, rv


def ln_inputs(rng, shape, dtype, offset=2.0):
    d = shape[1]
    x = (offset + 3.0 * rng.standard_normal(shape)).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    return x, g, (1.0 + rng.standard_normal(d)).astype(dtype), rng.standard_normal(d).astype(dtype)


def bn_train(mod, x, gamma, beta):
    c = x.shape[1]
    out, mean, invstd = poisoned(x.shape, x.dtype), poisoned(c, x.dtype), poisoned(c, x.dtype)
    mod.batchnorm_forward_train(x, gamma, beta, EPS, out, mean, invstd)
    return out, mean, invstd


def bn_grads(mod, fn, *args):
    x = args[0]
    c = x.shape[1]
    gi, gg, gb = poisoned(x.shape, x.dtype), poisoned(c, x.dtype), poisoned(c, x.dtype)
    getattr(mod, fn)(*args, False, gi, gg, gb)
    return gi, gg, gb


def ln_forward(mod, x, gamma, beta):
    r = x.shape[0]
    out, mean, invstd = poisoned(x.shape, x.dtype), poisoned(r, x.dtype), poisoned(r, x.dtype)
    mod.layernorm_forward(x, gamma, beta, EPS, out, mean, invstd)
    return out, mean, invstd


def ln_backward(mod, x, g, gamma, mean, invstd):
    d = x.shape[1]
    gi, gg, gb = poisoned(x.shape, x.dtype), poisoned(d, x.dtype), poisoned(d, x.dtype)
    mod.layernorm_backward(x, g, gamma, mean, invstd, False, gi, gg, gb)
    return gi, gg, gb


def check_backward(fn, args, want, dtype, rng, floor=0.0):
    """CPU backward ``fn`` (x first in ``args``) against the references ``want`` = (grad_in,
    grad_gamma, grad_beta): accumulate off into poisoned outputs, and on, where grad_gamma and
    grad_beta add into previous contents and grad_in (poisoned) is overwritten."""
    x = args[0]
    outs = [(x.shape, x.dtype)] + [((x.shape[1],), x.dtype)] * 2
    off, prev, on = accumulate_runs(getattr(K, fn), args, outs, (1, 2), rng)
    for a, b, e, e_acc in zip(off, on, want, accumulated(prev, want)):
        assert_close(a, e, dtype, floor=floor)
        assert_close(b, e_acc, dtype, floor=floor)


# ---------------------------------------------------------------------------------------------
# CPU kernels

def test_public_names_match_the_contract():
    assert kernel_names(K) == PUBLIC
    assert BN_SHAPES[-1][0] * BN_SHAPES[-1][1] * BN_SHAPES[-1][2] >= K._PAR_MIN
    assert LN_SHAPES[-1][0] * LN_SHAPES[-1][1] >= K._PAR_MIN


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", BN_SHAPES)
def test_batchnorm_kernels_match_reference(shape, dtype, rng):
    x, g, gamma, beta, rm, rv = bn_inputs(rng, shape, dtype)
    floor = 1.0 if shape[0] * shape[2] == 1 else 0.0
    out, mean, invstd = bn_train(K, x, gamma, beta)
    r_out, r_mean, r_invstd = ref.batchnorm_forward_train(x, gamma, beta, EPS)
    for a, e in [(out, r_out), (mean, r_mean), (invstd, r_invstd)]:
        assert a.dtype == dtype
        assert_close(a, e, dtype, floor=floor)
    check_backward("batchnorm_backward", (x, g, gamma, mean, invstd),
                   ref.batchnorm_backward(x, g, gamma, mean, invstd), dtype, rng, floor)

    out = poisoned(shape, dtype)
    K.batchnorm_forward_infer(x, gamma, beta, rm, rv, EPS, out)
    assert_close(out, ref.batchnorm_forward_infer(x, gamma, beta, rm, rv, EPS), dtype)
    check_backward("batchnorm_backward_infer", (x, g, gamma, rm, rv, EPS),
                   ref.batchnorm_backward_infer(x, g, gamma, rm, rv, EPS), dtype, rng)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("count", [1, 2, 37])
def test_batchnorm_update_running_matches_reference(count, dtype, rng):
    c = 5
    rm, rv = rng.standard_normal(c).astype(dtype), (0.5 + rng.random(c)).astype(dtype)
    mean = rng.standard_normal(c).astype(dtype)
    invstd = (1.0 / np.sqrt(rng.random(c) + 0.2 + EPS)).astype(dtype)
    e_rm, e_rv = ref.batchnorm_update_running(rm, rv, mean, invstd, EPS, 0.9, count)
    K.batchnorm_update_running(rm, rv, mean, invstd, EPS, 0.9, count)
    assert_close(rm, e_rm, dtype)
    assert_close(rv, e_rv, dtype, rtol=1e-5 if dtype == np.float32 else 1e-11)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", LN_SHAPES)
def test_layernorm_kernels_match_reference(shape, dtype, rng):
    x, g, gamma, beta = ln_inputs(rng, shape, dtype)
    floor = 1.0 if shape[1] == 1 else 0.0
    out, mean, invstd = ln_forward(K, x, gamma, beta)
    r_out, r_mean, r_invstd = ref.layernorm_forward(x, gamma, beta, EPS)
    for a, e in [(out, r_out), (mean, r_mean), (invstd, r_invstd)]:
        assert a.dtype == dtype
        assert_close(a, e, dtype, floor=floor)
    check_backward("layernorm_backward", (x, g, gamma, mean, invstd),
                   ref.layernorm_backward(x, g, gamma, mean, invstd), dtype, rng, floor)


def test_statistics_are_stable_for_a_large_mean(rng):
    """float32 data at 1e4 +- 1: a one-pass E[x^2] - E[x]^2 in float32 would lose every digit."""
    x, _, gamma, beta, _, _ = bn_inputs(rng, (8, 3, 20), np.float32)
    x = (1e4 + rng.standard_normal(x.shape)).astype(np.float32)
    out, mean, invstd = bn_train(K, x, gamma, beta)
    r_out, r_mean, r_invstd = ref.batchnorm_forward_train(x, gamma, beta, EPS)
    assert_close(out, r_out, np.float32)
    assert_close(invstd, r_invstd, np.float32)
    x2 = (1e4 + rng.standard_normal((4, 50))).astype(np.float32)
    out, _, invstd = ln_forward(K, x2, gamma[:1].repeat(50), beta[:1].repeat(50))
    r_out, _, r_invstd = ref.layernorm_forward(x2, gamma[:1].repeat(50), beta[:1].repeat(50), EPS)
    assert_close(out, r_out, np.float32)
    assert_close(invstd, r_invstd, np.float32)


@pytest.mark.parametrize("shape", [(1, 2, 3), (4, 3, 1), (3, 2, 5)])
def test_batchnorm_backward_kernels_match_finite_differences(shape, rng):
    x, g, gamma, beta, rm, rv = bn_inputs(rng, shape, np.float64)

    def f_train(x, gamma, beta):
        return np.sum(bn_train(K, x, gamma, beta)[0] * g)

    def grad_train(x, gamma, beta):
        _, mean, invstd = bn_train(K, x, gamma, beta)
        return bn_grads(K, "batchnorm_backward", x, g, gamma, mean, invstd)

    def f_infer(x, gamma, beta):
        out = poisoned(x.shape, x.dtype)
        K.batchnorm_forward_infer(x, gamma, beta, rm, rv, EPS, out)
        return np.sum(out * g)

    def grad_infer(x, gamma, beta):
        return bn_grads(K, "batchnorm_backward_infer", x, g, gamma, rm, rv, EPS)

    assert gradcheck((f_train, grad_train), x, gamma, beta, rtol=1e-6, atol=1e-8)
    assert gradcheck((f_infer, grad_infer), x, gamma, beta, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("shape", [(1, 4), (3, 1), (4, 6)])
def test_layernorm_backward_kernel_matches_finite_differences(shape, rng):
    x, g, gamma, beta = ln_inputs(rng, shape, np.float64)

    def f(x, gamma, beta):
        return np.sum(ln_forward(K, x, gamma, beta)[0] * g)

    def grad_f(x, gamma, beta):
        _, mean, invstd = ln_forward(K, x, gamma, beta)
        return ln_backward(K, x, g, gamma, mean, invstd)

    assert gradcheck((f, grad_f), x, gamma, beta, rtol=1e-6, atol=1e-8)


def test_parallel_reductions_are_deterministic(rng):
    x, g, gamma, beta, _, _ = bn_inputs(rng, BN_SHAPES[-1], np.float32)
    a = bn_train(K, x, gamma, beta)
    b = bn_train(K, x, gamma, beta)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    ga = bn_grads(K, "batchnorm_backward", x, g, gamma, a[1], a[2])
    gb = bn_grads(K, "batchnorm_backward", x, g, gamma, a[1], a[2])
    for u, v in zip(ga, gb):
        np.testing.assert_array_equal(u, v)


# ---------------------------------------------------------------------------------------------
# layers

def _random_affine(layer, rng):
    """Non-trivial gamma/beta (the initial ones/zeros hide mistakes)."""
    for k, p in layer.params.items():
        p[...] = (1.0 if k == "gamma" else 0.0) + 0.5 * rng.standard_normal(p.shape)


@pytest.mark.parametrize("make,shape", [
    (lambda: N.BatchNormalization(), (4, 3, 2, 3)),                       # after Conv2D
    (lambda: N.BatchNormalization(momentum=0.5), (5, 3)),                 # after Dense
    (lambda: N.BatchNormalization(axis=-1, center=False), (3, 2, 4)),
    (lambda: N.BatchNormalization(axis=2, scale=False, epsilon=1e-5), (2, 3, 4, 2)),
    (lambda: N.LayerNormalization(), (3, 2, 5)),
    (lambda: N.LayerNormalization(), (1, 6)),
    (lambda: N.LayerNormalization(axis=(1, 2, 3), scale=False), (2, 3, 2, 2)),
    (lambda: N.LayerNormalization(axis=[-2, -1], center=False), (2, 3, 4)),
])
def test_layers_gradcheck_training_mode(make, shape, rng):
    layer = make()
    layer.dtype = np.dtype(np.float64)
    layer.build(shape[1:])
    _random_affine(layer, rng)
    assert gradcheck(layer, 1.5 + rng.standard_normal(shape))


def test_batchnorm_inference_mode_gradient(rng):
    layer = N.BatchNormalization()
    x = rng.standard_normal((3, 2, 3, 3))
    layer.forward(x, training=True)             # builds, moves the moving statistics
    _random_affine(layer, rng)
    g = rng.standard_normal(x.shape)
    gamma, beta = layer.params["gamma"], layer.params["beta"]

    def f(x, gamma_, beta_):
        gamma[...], beta[...] = gamma_, beta_
        return np.sum(layer.forward(x, training=False) * g)

    def grad_f(x, gamma_, beta_):
        gamma[...], beta[...] = gamma_, beta_
        layer.forward(x, training=False)
        gi = layer.backward(g)
        return gi, layer.grads["gamma"].copy(), layer.grads["beta"].copy()

    assert gradcheck((f, grad_f), x, gamma.copy(), beta.copy())


def test_batchnorm_training_and_inference_modes(rng):
    layer = N.BatchNormalization(momentum=0.8)
    x = (3.0 + 2.0 * rng.standard_normal((6, 4, 3, 3))).astype(np.float32)
    y = layer.forward(x, training=True)
    assert y.dtype == np.float32 and y.shape == x.shape
    x3 = x.reshape(6, 4, 9)
    out, mean, invstd = ref.batchnorm_forward_train(x3, np.ones(4), np.zeros(4), EPS)
    assert_close(y, out.reshape(x.shape), np.float32)
    e_rm, e_rv = ref.batchnorm_update_running(np.zeros(4), np.ones(4), mean, invstd, EPS, 0.8, 54)
    assert_close(layer.buffers["moving_mean"], e_rm, np.float32)
    assert_close(layer.buffers["moving_variance"], e_rv, np.float32)
    assert layer.buffers["moving_mean"].dtype == np.float32
    # inference: the moving statistics, which it leaves alone
    y = layer.forward(x, training=False)
    assert_close(y, ref.batchnorm_forward_infer(x3, np.ones(4), np.zeros(4), e_rm, e_rv,
                                                EPS).reshape(x.shape), np.float32)
    assert_close(layer.buffers["moving_mean"], e_rm, np.float32)
    assert set(layer.params) == {"gamma", "beta"}
    assert set(layer.buffers) == {"moving_mean", "moving_variance"}
    assert layer.count_params() == 16        # the moving statistics too (Keras)
    nb_ = N.BatchNormalization(center=False, scale=False)
    nb_.forward(x, training=True)
    assert nb_.params == {} and set(nb_.buffers) == {"moving_mean", "moving_variance"}


def test_layernorm_is_the_same_in_training_and_inference(rng):
    layer = N.LayerNormalization()
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    np.testing.assert_array_equal(layer.forward(x, training=True), layer.forward(x))
    assert layer.params["gamma"].shape == (5,) and layer.buffers == {}
    assert N.LayerNormalization(axis=(1, 2)).forward(x).shape == x.shape


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 1e-5)])
def test_batchnorm_matches_torch(dtype, tol, rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    for shape in [(4, 3, 5, 4), (7, 5)]:
        layer = N.BatchNormalization(momentum=0.9, epsilon=1e-3, dtype=dtype)
        x = (1.0 + 2.0 * rng.standard_normal(shape)).astype(dtype)
        layer.build(shape[1:])
        _random_affine(layer, rng)
        tw = torch.tensor(layer.params["gamma"].copy(), requires_grad=True)
        tb = torch.tensor(layer.params["beta"].copy(), requires_grad=True)
        t_rm = torch.tensor(layer.buffers["moving_mean"].copy())
        t_rv = torch.tensor(layer.buffers["moving_variance"].copy())
        for training in (True, True, False):
            tx = torch.tensor(x, requires_grad=True)
            ty = F.batch_norm(tx, t_rm, t_rv, tw, tb, training=training, momentum=0.1, eps=1e-3)
            y = layer.forward(x, training=training)
            assert_close(y, ty.detach().numpy(), dtype, tol)
            assert_close(layer.buffers["moving_mean"], t_rm.numpy(), dtype, tol)
            assert_close(layer.buffers["moving_variance"], t_rv.numpy(), dtype, tol)
            g = rng.standard_normal(shape).astype(dtype)
            ty.backward(torch.tensor(g))
            assert_close(layer.backward(g), tx.grad.numpy(), dtype, tol)
            assert_close(layer.grads["gamma"], tw.grad.numpy(), dtype, tol)
            assert_close(layer.grads["beta"], tb.grad.numpy(), dtype, tol)
            tw.grad, tb.grad = None, None
            x = (1.0 + 2.0 * rng.standard_normal(shape)).astype(dtype)


def test_batchnorm_takes_any_size_on_the_other_axes(rng):
    """Sizes known only at run time (nb.Input((channels, None))) and sizes that change between
    calls: statistics per channel over whatever the batch holds, as Keras and torch. Building
    from a None size crashed with an internal TypeError; a second image size was refused."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    inp = nb.Input((3, None), dtype="float64")
    bn = N.BatchNormalization(momentum=0.9, epsilon=1e-3)
    model = nb.Model(inp, bn(inp))
    _random_affine(bn, rng)
    t_rm = torch.tensor(bn.buffers["moving_mean"].copy())
    t_rv = torch.tensor(bn.buffers["moving_variance"].copy())
    for length in (5, 2, 7):
        x = 1.0 + 2.0 * rng.standard_normal((4, 3, length))
        want = F.batch_norm(torch.tensor(x), t_rm, t_rv, torch.tensor(bn.params["gamma"]),
                            torch.tensor(bn.params["beta"]), training=True, momentum=0.1,
                            eps=1e-3)
        np.testing.assert_allclose(np.asarray(model(x, training=True)), want.numpy(), rtol=1e-10)
        np.testing.assert_allclose(bn.buffers["moving_variance"], t_rv.numpy(), rtol=1e-10)
        assert model.predict(x[:1, :, :length - 1]).shape == (1, 3, length - 1)
    steps = nb.Input((None, 4))
    model = nb.Model(steps, N.BatchNormalization(axis=-1)(steps))
    assert model.predict(np.ones((2, 6, 4))).shape == (2, 6, 4)
    image = N.BatchNormalization()
    for size in ((5, 5), (3, 8)):
        x = rng.standard_normal((2, 3, *size))
        assert gradcheck(image, x)
    with pytest.raises(ValueError, match="needs a known size on axis 1"):
        N.BatchNormalization()(nb.Input((None, 5)))


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 1e-5)])
@pytest.mark.parametrize("shape,axis", [((3, 4, 6), -1), ((2, 3, 4, 5), (1, 2, 3)), ((1, 8), -1)])
def test_layernorm_matches_torch(shape, axis, dtype, tol, rng):
    torch = pytest.importorskip("torch")
    layer = N.LayerNormalization(axis=axis, epsilon=1e-5, dtype=dtype)
    layer.build(shape[1:])
    _random_affine(layer, rng)
    x = (1.0 + 2.0 * rng.standard_normal(shape)).astype(dtype)
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(layer.params["gamma"].copy(), requires_grad=True)
    tb = torch.tensor(layer.params["beta"].copy(), requires_grad=True)
    ty = torch.nn.functional.layer_norm(tx, layer.param_shape, tw, tb, eps=1e-5)
    assert_close(layer.forward(x, training=True), ty.detach().numpy(), dtype, tol)
    g = rng.standard_normal(shape).astype(dtype)
    ty.backward(torch.tensor(g))
    assert_close(layer.backward(g), tx.grad.numpy(), dtype, tol)
    assert_close(layer.grads["gamma"], tw.grad.numpy(), dtype, tol)
    assert_close(layer.grads["beta"], tb.grad.numpy(), dtype, tol)


@pytest.mark.parametrize("make,match", [
    (lambda: N.BatchNormalization(momentum=1.5), "momentum.*1.5"),
    (lambda: N.BatchNormalization(momentum="0.9"), "momentum.*'0.9'"),
    (lambda: N.BatchNormalization(epsilon=0.0), "epsilon.*0.0"),
    (lambda: N.BatchNormalization(epsilon=-1e-3), "epsilon.*-0.001"),
    (lambda: N.BatchNormalization(axis=0), "axis.*0"),
    (lambda: N.BatchNormalization(axis=1.0), "axis.*1.0"),
    (lambda: N.BatchNormalization(center="yes"), "center.*'yes'"),
    (lambda: N.BatchNormalization(gamma_initializer="nope"), "gamma_initializer.*'nope'"),
    (lambda: N.BatchNormalization(moving_variance_initializer="x"), "moving_variance_initializer"),
    (lambda: N.LayerNormalization(axis=0), "axis.*0"),
    (lambda: N.LayerNormalization(axis=()), r"axis.*\(\)"),
    (lambda: N.LayerNormalization(epsilon=float("nan")), "epsilon.*nan"),
    (lambda: N.LayerNormalization(scale=None), "scale.*None"),
])
def test_bad_arguments_raise_clear_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_axes_for_the_input_shape():
    with pytest.raises(ValueError, match="axis 4"):
        N.BatchNormalization(axis=4).forward(np.ones((2, 3, 4, 4)))
    with pytest.raises(ValueError, match="trailing"):
        N.LayerNormalization(axis=1).forward(np.ones((2, 3, 4, 4)))
    with pytest.raises(ValueError, match="out of range"):
        N.LayerNormalization(axis=-4).forward(np.ones((2, 3, 4)))


def test_config_round_trip():
    for layer in [N.BatchNormalization(axis=-1, momentum=0.9, epsilon=1e-5, center=False,
                                       gamma_initializer="he_normal",
                                       moving_variance_initializer="zeros"),
                  N.LayerNormalization(axis=(1, 2), scale=False, epsilon=1e-6)]:
        config = layer.get_config()
        json.dumps(config)
        assert type(layer).from_config(config).get_config() == config


# ---------------------------------------------------------------------------------------------
# a model

def _model():
    return nb.Sequential([L.Conv2D(4, 3, padding="same"), N.BatchNormalization(), L.ReLU(),
                          L.Flatten(), L.Dense(3, activation="softmax")], input_shape=(1, 6, 6))


def test_small_cnn_with_batchnorm_trains_and_round_trips(tmp_path, rng):
    nb.seed(0)
    x = rng.standard_normal((48, 1, 6, 6)).astype(np.float32)
    y = np.argmax([x[:, 0, :3].sum(axis=(1, 2)), x[:, 0, 3:].sum(axis=(1, 2)),
                   x[:, 0, :, :3].sum(axis=(1, 2))], axis=0)
    model = _model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    hist = model.fit(x, y, epochs=6, batch_size=8, verbose=0, seed=1)
    losses = hist.history["loss"]
    assert losses[-1] < 0.8 * losses[0]
    bn = model.layers[1]
    assert not np.allclose(bn.buffers["moving_mean"], 0.0)
    path = tmp_path / "bn.npz"
    model.save(path)
    loaded = nb.load_model(path)
    for key in ("moving_mean", "moving_variance"):
        np.testing.assert_array_equal(loaded.layers[1].buffers[key], bn.buffers[key])
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


# ---------------------------------------------------------------------------------------------
# CUDA kernels in the simulator (or on a GPU with NUMBANET_TEST_REAL_CUDA=1) vs the CPU kernels

@pytest.fixture
def gpu(monkeypatch):
    """The CUDA kernel module with launch knobs shrunk so tiny arrays span several blocks and
    the grid-stride loops wrap; every launch checked against its declared signature."""
    cuda = pytest.importorskip("numba.cuda")
    if not cuda.is_available():
        pytest.skip("no CUDA device or simulator")
    from numbanet.kernels.cuda import _common
    from numbanet.kernels.cuda import normalization as G
    monkeypatch.setattr(_common.config, "threads", 8)
    monkeypatch.setattr(_common.config, "max_blocks", 2)
    monkeypatch.setattr(_common.config, "row_block", (4, 2))
    monkeypatch.setattr(_common.config, "check_signatures", True)
    return cuda, G


def _on_device(cuda, mod, fn, *args):
    """Run a CPU-style call ``fn(*args)`` of ``mod`` on device copies; host copies of all args."""
    dev = [cuda.to_device(a) if isinstance(a, np.ndarray) else a for a in args]
    getattr(mod, fn)(*dev)
    return [d.copy_to_host() if isinstance(a, np.ndarray) else a for a, d in zip(args, dev)]


def _backward_matches_cpu(cuda, G, fn, args, dtype, rng, floor):
    """CUDA backward ``fn`` against the CPU kernel on the same inputs, accumulate off (poisoned
    outputs) and on (random previous grad_gamma / grad_beta, poisoned grad_in)."""
    x = args[0]
    p = (x.shape[1],)
    for accumulate in (False, True):
        outs = [poisoned(x.shape, dtype)] + [
            rng.standard_normal(p).astype(dtype) if accumulate else poisoned(p, dtype)
            for _ in range(2)]
        dev = _on_device(cuda, G, fn, *args, accumulate, *outs)[-3:]
        getattr(K, fn)(*args, accumulate, *outs)
        for a, e in zip(dev, outs):
            assert_close(a, e, dtype, floor=floor)


def test_cuda_public_names_match_cpu(gpu):
    _, G = gpu
    assert kernel_names(G) == PUBLIC


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 3, 5), (3, 5, 1)])
def test_cuda_batchnorm_matches_cpu(shape, dtype, gpu, rng):
    cuda, G = gpu
    x, g, gamma, beta, rm, rv = bn_inputs(rng, shape, dtype)
    c = shape[1]
    floor = 1.0 if shape[0] * shape[2] == 1 else 0.0
    cpu = bn_train(K, x, gamma, beta)
    dev = _on_device(cuda, G, "batchnorm_forward_train", x, gamma, beta, EPS,
                     poisoned(shape, dtype), poisoned(c, dtype), poisoned(c, dtype))[4:]
    for a, e in zip(dev, cpu):
        assert_close(a, e, dtype, floor=floor)
    mean, invstd = cpu[1], cpu[2]
    _backward_matches_cpu(cuda, G, "batchnorm_backward", (x, g, gamma, mean, invstd), dtype, rng,
                          floor)
    out = poisoned(shape, dtype)
    K.batchnorm_forward_infer(x, gamma, beta, rm, rv, EPS, out)
    dev = _on_device(cuda, G, "batchnorm_forward_infer", x, gamma, beta, rm, rv, EPS,
                     poisoned(shape, dtype))[6]
    assert_close(dev, out, dtype, floor=floor)
    _backward_matches_cpu(cuda, G, "batchnorm_backward_infer", (x, g, gamma, rm, rv, EPS), dtype,
                          rng, floor)
    count = shape[0] * shape[2]
    dev = _on_device(cuda, G, "batchnorm_update_running", rm, rv, mean, invstd, EPS, 0.9, count)
    K.batchnorm_update_running(rm, rv, mean, invstd, EPS, 0.9, count)
    assert_close(dev[0], rm, dtype)
    assert_close(dev[1], rv, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (5, 9)])
def test_cuda_layernorm_matches_cpu(shape, dtype, gpu, rng):
    cuda, G = gpu
    x, g, gamma, beta = ln_inputs(rng, shape, dtype)
    r, d = shape
    floor = 1.0 if d == 1 else 0.0
    cpu = ln_forward(K, x, gamma, beta)
    dev = _on_device(cuda, G, "layernorm_forward", x, gamma, beta, EPS, poisoned(shape, dtype),
                     poisoned(r, dtype), poisoned(r, dtype))[4:]
    for a, e in zip(dev, cpu):
        assert_close(a, e, dtype, floor=floor)
    _backward_matches_cpu(cuda, G, "layernorm_backward", (x, g, gamma, cpu[1], cpu[2]), dtype,
                          rng, floor)


def test_layers_on_the_cuda_backend_match_cpu(gpu, monkeypatch, rng):
    cuda, _ = gpu
    monkeypatch.setenv("NUMBANET_ALLOW_CUDASIM", "1")
    from numbanet.backend import get_backend
    be = get_backend("cuda")
    x4 = rng.standard_normal((2, 3, 2, 2))
    x3 = rng.standard_normal((2, 3, 4))
    for make, x in [(lambda: N.BatchNormalization(momentum=0.5), x4),
                    (lambda: N.LayerNormalization(axis=(1, 2)), x3)]:
        host, dev = make(), make()
        dev.set_backend(be)
        g = rng.standard_normal(x.shape)
        for training in (True, False):
            y = host.forward(x, training=training)
            assert_close(be.to_numpy(dev.forward(be.asarray(x), training=training)), y,
                         np.float64)
            gi = host.backward(g)
            assert_close(be.to_numpy(dev.backward(be.asarray(g))), gi, np.float64)
            for k in host.grads:
                assert_close(be.to_numpy(dev.grads[k]), host.grads[k], np.float64)
            for k in host.buffers:
                assert_close(be.to_numpy(dev.buffers[k]), host.buffers[k], np.float64)

