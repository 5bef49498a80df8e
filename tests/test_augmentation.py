"""Augmentation, spatial and Gaussian dropout: the CPU kernels against float64 references (and the
backward kernels as exact transposes of the forward ones); the layers (gradcheck in training,
identity at inference, seeding, statistics, config, bad arguments); the CUDA kernels and the
layers on the CUDA backend in Numba's simulator; PTX of the CUDA kernels for sm_90."""
import json

import numpy as np
import pytest
from conftest import poisoned

import numbanet as nb
import reference as ref
from numbanet.backend import get_backend, kernel_names
from numbanet.kernels.cpu import augmentation as K
from numbanet.layers.augmentation import (GaussianDropout, GaussianNoise, RandomFlip,
                                          RandomRotation, RandomTranslation, RandomZoom,
                                          SpatialDropout2D)
from numbanet.testing import gradcheck

DTYPES = [np.float32, np.float64]
ITYPES = [np.int32, np.int64]
# Size-1 and odd/ragged shapes, and one above the parallel threshold (prange path).
SHAPES = [(1, 1, 1, 1), (2, 3, 4, 5), (3, 2, 5, 1), (1, 2, 1, 6), (4, 8, 96, 96)]
PUBLIC = sorted(["spatial_dropout2d_forward", "spatial_dropout2d_backward", "flip_forward",
                 "flip_backward", "translate_forward", "translate_backward", "warp_forward",
                 "warp_backward", "gaussian_noise_forward", "box_muller"])
LAYERS = (SpatialDropout2D, RandomFlip, RandomTranslation, RandomRotation, RandomZoom,
          GaussianNoise, GaussianDropout)


def assert_close(actual, expected, dtype):
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    expected = np.asarray(expected, np.float64)
    scale = max(float(np.max(np.abs(expected))) if expected.size else 1.0, 1e-30)
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=rtol,
                               atol=rtol * scale)


def shifts(rng, shape, itype):
    """Per-sample shifts in [-(H+1), H+1] x [-(W+1), W+1]: zero, partial and complete shifts."""
    n, _, h, w = shape
    dy = rng.integers(-h - 1, h + 2, n).astype(itype)
    dx = rng.integers(-w - 1, w + 2, n).astype(itype)
    dy[0], dx[0] = 0, min(1, w - 1)
    return dy, dx


def test_public_names():
    assert kernel_names(K) == PUBLIC


# -------------------------------------------------------------------------------------- CPU kernels
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_spatial_dropout_kernels(shape, dtype, rng):
    x = rng.standard_normal(shape).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    u = rng.random(shape[:2]).astype(dtype)
    for rate in (0.0, 0.4):
        out, mask = poisoned(shape, dtype), poisoned(shape[:2], dtype)
        K.spatial_dropout2d_forward(x, u, rate, out, mask)
        want_out, want_mask = ref.spatial_dropout2d_forward(x, u, rate)
        assert_close(mask, want_mask, dtype)
        assert_close(out, want_out, dtype)
        gi = poisoned(shape, dtype)
        K.spatial_dropout2d_backward(g, mask, gi)
        assert_close(gi, ref.spatial_dropout2d_backward(g, mask), dtype)


@pytest.mark.parametrize("itype", ITYPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_flip_kernels(shape, dtype, itype, rng):
    x = rng.standard_normal(shape).astype(dtype)
    n = shape[0]
    fh = rng.integers(0, 2, n).astype(itype)
    fw = rng.integers(0, 2, n).astype(itype)
    fh[0], fw[0] = 1, 1
    for fn in (K.flip_forward, K.flip_backward):
        out = poisoned(shape, dtype)
        fn(x, fh, fw, out)
        np.testing.assert_array_equal(out, ref.flip_forward(x, fh, fw).astype(dtype))
    back = poisoned(shape, dtype)
    K.flip_backward(out, fh, fw, back)                    # a flip is its own inverse
    np.testing.assert_array_equal(back, x)


@pytest.mark.parametrize("itype", ITYPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_translate_kernels(shape, dtype, itype, rng):
    x = rng.standard_normal(shape).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    dy, dx = shifts(rng, shape, itype)
    out, gi = poisoned(shape, dtype), poisoned(shape, dtype)
    K.translate_forward(x, dy, dx, out)
    np.testing.assert_array_equal(out, ref.translate_forward(x, dy, dx).astype(dtype))
    K.translate_backward(g, dy, dx, gi)
    np.testing.assert_array_equal(gi, ref.translate_backward(g, dy, dx).astype(dtype))
    # the backward kernel is the transpose: <T x, g> == <x, T^T g>
    lhs = np.sum(out.astype(np.float64) * g)
    rhs = np.sum(x.astype(np.float64) * gi)
    assert np.isclose(lhs, rhs, rtol=1e-12, atol=1e-10)


def rotations(rng, n, h, w, scale=1.0):
    """Per-sample warp matrices: a random rotation and zoom about the centre, then a shift."""
    mats = np.empty((n, 6))
    for k in range(n):
        t, z = rng.uniform(-np.pi, np.pi), rng.uniform(0.6, 1.6) * scale
        a, b, c, d = z * np.cos(t), z * np.sin(t), -z * np.sin(t), z * np.cos(t)
        ch, cw = (h - 1) / 2 + rng.uniform(-1, 1), (w - 1) / 2 + rng.uniform(-1, 1)
        mats[k] = [a, b, ch - a * ch - b * cw, c, d, cw - c * ch - d * cw]
    return mats


WARP_SHAPES = [(1, 1, 1, 1), (2, 3, 4, 5), (3, 2, 6, 1), (2, 1, 7, 7)]


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
@pytest.mark.parametrize("dtype, bilinear", [(np.float32, True), (np.float64, True),
                                             (np.float64, False)])
@pytest.mark.parametrize("shape", WARP_SHAPES)
def test_warp_kernels_match_scipy(shape, dtype, bilinear, mode, rng):
    """Against scipy.ndimage.map_coordinates (order 1 or 0, its fill modes), coordinates far
    outside the image included (zoom out 1.6x and shifted); the backward kernel against the
    transpose of the reference. Nearest sampling in float64 only (a float32 coordinate may round
    the other way at a half pixel)."""
    x = rng.standard_normal(shape).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    mats = rotations(rng, shape[0], *shape[2:]).astype(dtype)
    out = poisoned(shape, dtype)
    K.warp_forward(x, mats, mode, 0.75, bilinear, out)
    assert_close(out, ref.warp_forward(x, mats, mode, 0.75, bilinear), dtype)
    gi = poisoned(shape, dtype)
    K.warp_backward(g, mats, mode, bilinear, gi)
    assert_close(gi, ref.warp_backward(g, mats, mode, bilinear), dtype)


def test_warp_kernels_large_and_exact_rotations(rng):
    """A quarter turn about the centre is np.rot90 (counter-clockwise), exactly, on the prange
    path; its backward the inverse turn."""
    x = rng.standard_normal((6, 8, 96, 96))
    c = 47.5
    quarter = np.tile([0.0, 1.0, c - c, -1.0, 0.0, c + c], (6, 1))
    out = np.empty_like(x)
    K.warp_forward(x, quarter, 1, 0.0, True, out)
    np.testing.assert_allclose(out, np.rot90(x, 1, axes=(2, 3)), rtol=0, atol=1e-12)
    K.warp_forward(x, quarter, 0, 0.0, False, out)
    np.testing.assert_array_equal(out, np.rot90(x, 1, axes=(2, 3)))
    gi = np.empty_like(x)
    K.warp_backward(x, quarter, 0, True, gi)
    np.testing.assert_allclose(gi, np.rot90(x, -1, axes=(2, 3)), rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 7, 1000, (1 << 18) + 5])
def test_noise_kernels(n, dtype, rng):
    x = rng.standard_normal(n).astype(dtype)
    u = rng.random(2 * n).astype(dtype)
    noise = poisoned(n, dtype)
    K.box_muller(u, noise)
    assert_close(noise, ref.box_muller(u), dtype)
    out = poisoned(n, dtype)
    K.gaussian_noise_forward(x, noise, 0.3, out)
    assert_close(out, ref.gaussian_noise_forward(x, noise, 0.3), dtype)
    K.gaussian_noise_forward(x, noise, 0.3, x)            # in place
    assert_close(x, out, dtype)


def test_box_muller_statistics_and_extremes():
    rng = np.random.default_rng(0)
    z = poisoned(200_000, np.float64)
    K.box_muller(rng.random(400_000), z)
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1.0) < 0.01
    assert abs(np.mean(np.abs(z) < 1.0) - 0.6827) < 0.005
    edge = poisoned(2, np.float32)
    K.box_muller(np.array([0.0, np.float32(1 - 2 ** -24), 0.0, 0.5], np.float32), edge)
    assert edge[0] == 0.0 and np.isfinite(edge[1]) and 5.7 < -edge[1] < 5.8


# ------------------------------------------------------------------------------------------ layers
def make(cls, seed=None, **kw):
    args = {SpatialDropout2D: dict(rate=0.5), RandomFlip: {},
            RandomTranslation: dict(height_factor=0.5, width_factor=(-0.4, 0.6)),
            RandomRotation: dict(factor=0.2), RandomZoom: dict(height_factor=(-0.3, 0.4)),
            GaussianNoise: dict(stddev=0.7), GaussianDropout: dict(rate=0.3)}[cls]
    return cls(**{**args, **kw}, seed=seed)


@pytest.mark.parametrize("cls", LAYERS)
def test_gradcheck_in_training(cls, rng):
    x = rng.standard_normal((3, 2, 4, 5))
    for seed in range(3):
        assert gradcheck(make(cls, seed=seed), x, seed=seed)


@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_identity_at_inference(cls, dtype, rng):
    layer = make(cls, seed=1)
    x = rng.standard_normal((8, 3, 4, 5)).astype(dtype)
    g = rng.standard_normal((8, 3, 4, 5)).astype(dtype)
    y = layer.forward(x, training=True)
    assert y.dtype == dtype and y.shape == x.shape and not np.array_equal(y, x)
    assert layer.forward(x, training=False) is x
    assert layer.backward(g) is g


@pytest.mark.parametrize("cls", LAYERS)
def test_seeded_and_random_per_call(cls, rng):
    x = rng.standard_normal((4, 3, 5, 6))
    a, b, c = make(cls, seed=7), make(cls, seed=7), make(cls, seed=8)
    ya = [a.forward(x, training=True) for _ in range(3)]
    yb = [b.forward(x, training=True) for _ in range(3)]
    for u, v in zip(ya, yb):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(ya[0], ya[1]) or not np.array_equal(ya[1], ya[2])
    assert not all(np.array_equal(u, v) for u, v in
                   zip(ya, [c.forward(x, training=True) for _ in range(3)]))
    outs = []
    for _ in range(2):                                    # no seed: nb.seed at build time
        nb.seed(123)
        layer = make(cls)
        outs.append([layer.forward(x, training=True) for _ in range(2)])
    for u, v in zip(*outs):
        np.testing.assert_array_equal(u, v)


def flip_kinds(x, y):
    """For each sample: (flipped vertically, flipped horizontally) recovered from the output."""
    kinds = []
    for xs, ys in zip(x, y):
        found = [(fh, fw) for fh in (0, 1) for fw in (0, 1)
                 if np.array_equal(ref.flip_forward(xs[None], [fh], [fw])[0], ys)]
        assert len(found) == 1
        kinds.append(found[0])
    return np.array(kinds)


@pytest.mark.parametrize("mode,enabled", [("horizontal", (0, 1)), ("vertical", (1, 0)),
                                          ("horizontal_and_vertical", (1, 1))])
def test_flip_probability(mode, enabled, rng):
    x = rng.standard_normal((2000, 1, 2, 3))
    layer = RandomFlip(mode, seed=3)
    kinds = flip_kinds(x, layer.forward(x, training=True))
    for axis in (0, 1):
        frac = kinds[:, axis].mean()
        if enabled[axis]:
            assert abs(frac - 0.5) < 0.05, (mode, axis, frac)
        else:
            assert frac == 0.0
    if mode == "horizontal_and_vertical":                # independent axes
        assert abs(np.mean(kinds[:, 0] & kinds[:, 1]) - 0.25) < 0.04


@pytest.mark.parametrize("hf,wf,hrange,wrange", [
    (0.2, 0.5, (-2, 2), (-4, 4)),                 # H=10, W=8
    ((0.2, 0.5), (-1.0, -0.5), (2, 5), (-8, -4)),
    (0.0, (0.0, 1.0), (0, 0), (0, 8)),
])
def test_translation_range(hf, wf, hrange, wrange, rng):
    x = rng.standard_normal((3000, 1, 10, 8))
    layer = RandomTranslation(hf, wf, seed=5)
    y = layer.forward(x, training=True)
    dy, dx = (np.asarray(s) for s in layer.shifts)
    assert dy.min() == hrange[0] and dy.max() == hrange[1]
    assert dx.min() == wrange[0] and dx.max() == wrange[1]
    for s, (lo, hi) in ((dy, hrange), (dx, wrange)):     # every whole-pixel shift occurs
        assert set(np.unique(s)) == set(range(lo, hi + 1))
    np.testing.assert_array_equal(y[:50], ref.translate_forward(x[:50], dy[:50], dx[:50]))


def test_rotation_and_zoom_layers_follow_their_matrices(rng):
    """Outputs are the warp reference with the matrices the layer drew; the drawn angles and
    zooms fill their ranges; a quarter turn rotates counter-clockwise; zooming out shrinks."""
    x = rng.standard_normal((400, 1, 5, 6))
    rot = RandomRotation((0.1, 0.2), seed=3)
    y = rot.forward(x, training=True)
    mats = np.asarray(rot.matrices)
    np.testing.assert_allclose(y[:20], ref.warp_forward(x[:20], mats[:20], 1, 0.0, True),
                               rtol=1e-12, atol=1e-12)
    turns = np.arctan2(mats[:, 1], mats[:, 0]) / (2 * np.pi)
    assert 0.1 <= turns.min() < 0.11 and 0.19 < turns.max() <= 0.2
    np.testing.assert_allclose(mats[:, 0] ** 2 + mats[:, 1] ** 2, 1.0, rtol=1e-12)
    square = rng.standard_normal((2, 3, 4, 4))
    np.testing.assert_allclose(RandomRotation((0.25, 0.25)).forward(square, training=True),
                               np.rot90(square, 1, axes=(2, 3)), atol=1e-12)
    zoom = RandomZoom((0.2, 0.5), (-0.5, -0.1), fill_mode="constant", fill_value=2.0, seed=4)
    y = zoom.forward(x, training=True)
    mats = np.asarray(zoom.matrices)
    np.testing.assert_allclose(y[:20], ref.warp_forward(x[:20], mats[:20], 0, 2.0, True),
                               rtol=1e-12, atol=1e-12)
    assert 1.2 <= mats[:, 0].min() < 1.22 and 1.48 < mats[:, 0].max() <= 1.5
    assert 0.5 <= mats[:, 4].min() < 0.52 and 0.88 < mats[:, 4].max() <= 0.9
    assert np.all(mats[:, [1, 3]] == 0)
    same = RandomZoom(0.3, seed=5)                        # no width_factor: aspect kept
    same.forward(x, training=True)
    np.testing.assert_array_equal(np.asarray(same.matrices)[:, 0],
                                  np.asarray(same.matrices)[:, 4])
    out = RandomZoom((1.0, 1.0), fill_mode="constant").forward(np.ones((1, 1, 9, 9)),
                                                                  training=True)
    assert out[0, 0, 4, 4] == 1.0 and out[0, 0, 0, 0] == 0.0  # 2x zoomed out: a border


def test_rotation_and_zoom_train_in_a_model(rng):
    nb.seed(0)
    model = nb.Sequential([RandomRotation(0.05), RandomZoom(0.1), nb.layers.Flatten(),
                           nb.layers.Dense(2, activation="softmax")], input_shape=(1, 6, 6))
    x = rng.standard_normal((64, 1, 6, 6)).astype(np.float32)
    y = (x[:, 0, :3].sum(axis=(1, 2)) > 0).astype(np.int64)
    model.compile(nb.optimizers.Adam(0.05), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    history = model.fit(x, y, epochs=15, batch_size=16, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    np.testing.assert_array_equal(model.predict(x[:4]), model.predict(x[:4]))   # inference


def test_gaussian_noise_statistics(rng):
    x = rng.standard_normal((50, 3, 8, 8)).astype(np.float32)
    layer = GaussianNoise(0.25, seed=2)
    d = layer.forward(x, training=True).astype(np.float64) - x
    assert abs(d.mean()) < 0.01 and abs(d.std() - 0.25) < 0.01
    assert GaussianNoise(0.0).forward(x, training=True) is x


def test_gaussian_dropout_keras_formula_and_statistics(rng, tmp_path):
    """x * (1 + sqrt(rate / (1 - rate)) * z), z the layer generator's standard normals (the
    draws GaussianNoise makes); mean 1 and Keras' standard deviation of the factor."""
    x = rng.random((50, 3, 8, 8)) + 1.0
    y = GaussianDropout(0.2, seed=3).forward(x, training=True)
    z = np.random.default_rng(3).standard_normal(x.size).reshape(x.shape)
    np.testing.assert_allclose(y, x * (1 + np.sqrt(0.2 / 0.8) * z), rtol=1e-14)
    factor = y / x
    assert abs(factor.mean() - 1.0) < 0.02 and abs(factor.std() - 0.5) < 0.02
    assert GaussianDropout(0.0).forward(x, training=True) is x
    g = rng.standard_normal(x.shape)
    layer = GaussianDropout(0.2, seed=3)
    layer.forward(x, training=True)
    np.testing.assert_allclose(layer.backward(g), g * factor, rtol=1e-14)
    model = nb.Sequential([nb.layers.Dense(4), GaussianDropout(0.3), nb.layers.Dense(1)],
                          input_shape=(3,))
    model.compile("adam", "mse")
    xs = rng.standard_normal((16, 3))
    hist = model.fit(xs, rng.standard_normal((16, 1)), epochs=3, batch_size=4, verbose=0)
    assert np.isfinite(hist.history["loss"]).all()
    model.save(tmp_path / "m.npz")
    loaded = nb.load_model(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.predict(xs), model.predict(xs))
    assert loaded.layers[1].get_config() == model.layers[1].get_config()


def test_spatial_dropout_statistics(rng):
    x = rng.random((200, 10, 3, 3)) + 1.0                 # no zeros in the input
    y = SpatialDropout2D(0.3, seed=4).forward(x, training=True)
    planes = y.reshape(200, 10, 9)
    dropped = np.all(planes == 0, axis=2)
    kept = ~dropped
    assert np.all(np.any(planes != 0, axis=2) == kept)    # whole planes only
    assert abs(dropped.mean() - 0.3) < 0.03
    np.testing.assert_allclose(planes[kept], x.reshape(200, 10, 9)[kept] / 0.7)
    assert SpatialDropout2D(0.0).forward(x, training=True) is x


@pytest.mark.parametrize("cls", LAYERS)
def test_config_round_trip(cls):
    layer = make(cls, seed=11, name=f"aug_{cls.__name__.lower()}")
    config = json.loads(json.dumps(layer.get_config()))
    again = cls.from_config(config)
    assert again.get_config() == layer.get_config()
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5))
    np.testing.assert_array_equal(again.forward(x, training=True),
                                  layer.forward(x, training=True))


def test_configs():
    assert SpatialDropout2D(0.25).get_config()["rate"] == 0.25
    assert RandomFlip().get_config()["mode"] == "horizontal_and_vertical"
    c = RandomTranslation(0.1, (-0.2, 0.3)).get_config()
    assert c["height_factor"] == 0.1 and c["width_factor"] == [-0.2, 0.3]
    assert GaussianNoise(1.5, seed=0).get_config()["stddev"] == 1.5


@pytest.mark.parametrize("make_bad,match", [
    (lambda: SpatialDropout2D(1.0), "rate must be"),
    (lambda: SpatialDropout2D(-0.1), "rate must be"),
    (lambda: SpatialDropout2D("0.5"), "rate must be"),
    (lambda: RandomFlip("diagonal"), "mode must be one of.*'diagonal'"),
    (lambda: RandomFlip(None), "mode must be"),
    (lambda: RandomTranslation(1.5, 0.1), "height_factor must be.*1.5"),
    (lambda: RandomTranslation(-0.2, 0.1), "height_factor must be"),
    (lambda: RandomTranslation(0.1, (0.5, 0.2)), r"width_factor must be.*\(0.5, 0.2\)"),
    (lambda: RandomTranslation(0.1, (0.1, 0.2, 0.3)), "width_factor must be"),
    (lambda: RandomTranslation(0.1, (-1.5, 0.2)), "width_factor must be"),
    (lambda: RandomTranslation(float("nan"), 0.1), "height_factor must be"),
    (lambda: GaussianNoise(-1.0), "stddev must be.*-1.0"),
    (lambda: GaussianNoise(float("inf")), "stddev must be"),
    (lambda: GaussianNoise(0.1, seed=-3), "seed must be"),
    (lambda: RandomFlip(seed=1.5), "seed must be"),
    (lambda: RandomRotation(-0.1), "factor must be a float >= 0 or a pair.*-0.1"),
    (lambda: RandomRotation((0.3, 0.1)), "factor must be"),
    (lambda: RandomRotation(0.1, fill_mode="mirror"), "fill_mode must be one of.*'mirror'"),
    (lambda: RandomRotation(0.1, interpolation="bicubic"), "interpolation must be.*'bicubic'"),
    (lambda: RandomRotation(0.1, fill_value=float("nan")), "fill_value must be a finite"),
    (lambda: RandomZoom((-1.0, 0.2)), r"height_factor must be .* above -1.*\(-1.0, 0.2\)"),
    (lambda: RandomZoom(0.2, 1.5), "width_factor must be .* above -1.*1.5"),
    (lambda: GaussianDropout(1.0, name="g"), r"GaussianDropout 'g': rate must be a float in "
                                             r"\[0, 1\), got 1.0"),
    (lambda: GaussianDropout(None), "rate must be"),
])
def test_bad_arguments(make_bad, match):
    with pytest.raises(ValueError, match=match):
        make_bad()


@pytest.mark.parametrize("cls", [SpatialDropout2D, RandomFlip, RandomTranslation, RandomRotation,
                                 RandomZoom])
def test_image_layers_need_nchw(cls):
    with pytest.raises(ValueError, match="4-D NCHW"):
        make(cls).forward(np.zeros((2, 3, 4)), training=True)


def test_gaussian_noise_any_rank(rng):
    x = rng.standard_normal((5, 7))
    assert gradcheck(GaussianNoise(0.5, seed=1), x)
    assert GaussianNoise(0.5, seed=1).forward(x, training=True).shape == (5, 7)


# ------------------------------------------------------------------------------------------ CUDA
@pytest.fixture
def gpu(monkeypatch):
    """kernels.cuda.augmentation with shrunk launch knobs (several blocks, wrapping grid-stride
    loops), every launch checked against its declared spec; the CUDA backend allowed in the
    simulator."""
    from numbanet import _cuda
    if _cuda.cuda is None or not (_cuda.is_simulator() or _cuda.is_available()):
        pytest.skip(f"CUDA kernels cannot run here: {_cuda.unavailable_reason()}")
    from numbanet.kernels.cuda import _common
    from numbanet.kernels.cuda import augmentation as G
    monkeypatch.setenv("NUMBANET_ALLOW_CUDASIM", "1")
    monkeypatch.setattr(_common.config, "threads", 16)
    monkeypatch.setattr(_common.config, "max_blocks", 3)
    monkeypatch.setattr(_common.config, "check_signatures", True)
    return _cuda.cuda, G


def on_device(cuda, fn, *args):
    """``fn`` on device copies of ``args``; host copies of all of them afterwards."""
    dev = [cuda.to_device(a) if isinstance(a, np.ndarray) else a for a in args]
    fn(*dev)
    return [d.copy_to_host() if isinstance(a, np.ndarray) else a for a, d in zip(args, dev)]


def run_both(cuda, G, name, ins, out_shapes, dtype):
    """CPU and CUDA kernel ``name`` on the same inputs with poisoned outputs: (cpu, cuda) outs."""
    cpu = [poisoned(s, dtype) for s in out_shapes]
    getattr(K, name)(*ins, *cpu)
    dev = on_device(cuda, getattr(G, name), *ins, *[poisoned(s, dtype) for s in out_shapes])
    return cpu, dev[len(ins):]


def test_cuda_public_names_match_cpu(gpu):
    assert kernel_names(gpu[1]) == PUBLIC


CUDA_SHAPES = [(1, 1, 1, 1), (2, 3, 4, 5), (3, 1, 2, 7)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", CUDA_SHAPES)
def test_cuda_kernels_match_cpu(shape, dtype, gpu, rng):
    cuda, G = gpu
    itype = ITYPES[rng.integers(2)]
    x = rng.standard_normal(shape).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    u = rng.random(shape[:2]).astype(dtype)
    cpu, dev = run_both(cuda, G, "spatial_dropout2d_forward", [x, u, 0.4], [shape, shape[:2]],
                        dtype)
    for a, b in zip(dev, cpu):
        assert_close(a, b, dtype)
    cpu, dev = run_both(cuda, G, "spatial_dropout2d_backward", [g, cpu[1]], [shape], dtype)
    assert_close(dev[0], cpu[0], dtype)
    n = shape[0]
    fh, fw = rng.integers(0, 2, n).astype(itype), rng.integers(0, 2, n).astype(itype)
    dy, dx = shifts(rng, shape, itype)
    for name, a, b in (("flip_forward", fh, fw), ("flip_backward", fh, fw),
                       ("translate_forward", dy, dx), ("translate_backward", dy, dx)):
        cpu, dev = run_both(cuda, G, name, [x, a, b], [shape], dtype)
        np.testing.assert_array_equal(dev[0], cpu[0], err_msg=name)
    mats = rotations(rng, n, *shape[2:]).astype(dtype)
    for mode in range(4):
        for bilinear in (True, False):
            cpu, dev = run_both(cuda, G, "warp_forward", [x, mats, mode, 0.5, bilinear], [shape],
                                dtype)
            assert_close(dev[0], cpu[0], dtype)
            cpu, dev = run_both(cuda, G, "warp_backward", [g, mats, mode, bilinear], [shape],
                                dtype)
            assert_close(dev[0], cpu[0], dtype)
    size = x.size
    uu = rng.random(2 * size).astype(dtype)
    cpu, dev = run_both(cuda, G, "box_muller", [uu], [(size,)], dtype)
    assert_close(dev[0], cpu[0], dtype)
    cpu, dev = run_both(cuda, G, "gaussian_noise_forward", [x.reshape(-1), cpu[0], 0.3],
                        [(size,)], dtype)
    assert_close(dev[0], cpu[0], dtype)


def test_cuda_layers(gpu, rng):
    """The layers on the CUDA backend: outputs and gradients follow from the random choices
    they made (read back from the device), identity at inference, seeded draws repeat."""
    be = get_backend("cuda")
    x = rng.standard_normal((3, 2, 3, 4))
    g = rng.standard_normal(x.shape)
    dx, dg = be.asarray(x), be.asarray(g)

    def on_cuda(layer):
        layer.set_backend(be)
        return layer

    layer = on_cuda(SpatialDropout2D(0.5, seed=1))
    y = be.to_numpy(layer.forward(dx, training=True))
    mask = be.to_numpy(layer.mask)
    assert_close(y, x * mask[:, :, None, None], np.float64)
    assert_close(be.to_numpy(layer.backward(dg)), g * mask[:, :, None, None], np.float64)

    layer = on_cuda(RandomFlip(seed=2))
    y = be.to_numpy(layer.forward(dx, training=True))
    fh, fw = (be.to_numpy(f) for f in layer.flips)
    np.testing.assert_array_equal(y, ref.flip_forward(x, fh, fw))
    np.testing.assert_array_equal(be.to_numpy(layer.backward(dg)), ref.flip_forward(g, fh, fw))

    layer = on_cuda(RandomTranslation(0.5, 0.5, seed=3))
    y = be.to_numpy(layer.forward(dx, training=True))
    sy, sx = (be.to_numpy(s) for s in layer.shifts)
    np.testing.assert_array_equal(y, ref.translate_forward(x, sy, sx))
    np.testing.assert_array_equal(be.to_numpy(layer.backward(dg)),
                                  ref.translate_backward(g, sy, sx))

    for layer in (on_cuda(RandomRotation(0.3, seed=5)),
                  on_cuda(RandomZoom(0.4, fill_mode="wrap", interpolation="nearest", seed=6))):
        y = be.to_numpy(layer.forward(dx, training=True))
        mats = be.to_numpy(layer.matrices)
        mode = ("constant", "reflect", "wrap", "nearest").index(layer.fill_mode)
        bilinear = layer.interpolation == "bilinear"
        assert_close(y, ref.warp_forward(x, mats, mode, 0.0, bilinear), np.float64)
        assert_close(be.to_numpy(layer.backward(dg)), ref.warp_backward(g, mats, mode, bilinear),
                     np.float64)

    layer = on_cuda(GaussianNoise(0.5, seed=4))
    y1 = be.to_numpy(layer.forward(dx, training=True))
    u = be.to_numpy(be.uniform((2 * x.size,), np.float64, np.random.default_rng(4)))
    assert_close(y1, x + 0.5 * ref.box_muller(u).reshape(x.shape), np.float64)
    assert layer.backward(dg) is dg
    y2 = be.to_numpy(on_cuda(GaussianNoise(0.5, seed=4)).forward(dx, training=True))
    np.testing.assert_array_equal(y1, y2)

    layer = on_cuda(GaussianDropout(0.5, seed=5))
    y = be.to_numpy(layer.forward(dx, training=True))
    u = be.to_numpy(be.uniform((2 * x.size,), np.float64, np.random.default_rng(5)))
    factor = 1.0 + ref.box_muller(u).reshape(x.shape)            # sqrt(0.5 / 0.5) = 1
    assert_close(y, x * factor, np.float64)
    assert_close(be.to_numpy(layer.backward(dg)), g * factor, np.float64)

    for cls in LAYERS:
        layer = on_cuda(make(cls, seed=0))
        assert layer.forward(dx, training=False) is dx
        assert layer.backward(dg) is dg


def test_cuda_kernels_compile_to_ptx_for_sm90():
    """Every private CUDA kernel of the module, float32/float64 (and int32/int64 shift and flag
    arrays), compiled in a subprocess with the simulator off (needs libNVVM, not a GPU); no
    errors and, with ptxas, no register spills."""
    from numbanet import _cuda
    if _cuda.cuda is None:
        pytest.skip("numba-cuda is not installed")
    from numbanet.kernels.cuda import _common
    from numbanet.kernels.cuda import augmentation  # noqa: F401  (registers the kernels)
    names = [k.name for k in _common.KERNELS if k.name.startswith("augmentation.")]
    assert len(names) == 8
    result = _cuda.kernel_resources(names=names)
    if "skip" in result:
        pytest.skip(result["skip"])
    rows = result["rows"]
    want = [(k.name, dt, it) for k in _common.KERNELS if k.name in names
            for dt in ("float32", "float64")
            for it in (("int32", "int64") if k.uses_labels else (None,))]
    assert sorted((r["kernel"], r["dtype"], r["itype"] or "") for r in rows) == \
        sorted((n, dt, it or "") for n, dt, it in want)
    for row in rows:
        assert "error" not in row and "ptxas_error" not in row, row
        if result["ptxas"]:
            assert row["spill_stores"] == 0 and row["spill_loads"] == 0, row
