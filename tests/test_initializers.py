"""Weight initializers: the variance-scaling family, orthogonal, constant, truncated normal."""
import numpy as np
import pytest

import numbanet as nb
from numbanet import initializers as I


@pytest.mark.parametrize("name, fan, scale", [
    ("glorot_uniform", "avg", 1.0), ("glorot_normal", "avg", 1.0), ("he_uniform", "in", 2.0),
    ("he_normal", "in", 2.0), ("lecun_uniform", "in", 1.0), ("lecun_normal", "in", 1.0)])
def test_variance_scaling_variances(name, fan, scale, rng):
    fan_in, fan_out = 300, 100
    w = I.get(name)((fan_in, fan_out), fan_in, fan_out, np.float64, rng)
    n = (fan_in + fan_out) / 2 if fan == "avg" else fan_in
    assert w.var() == pytest.approx(scale / n, rel=0.05)
    if name.endswith("normal"):          # truncated at two standard deviations
        assert np.abs(w).max() <= 2 * np.sqrt(scale / n) / I._TRUNC_STD + 1e-12
    else:
        assert np.abs(w).max() <= np.sqrt(3 * scale / n)


@pytest.mark.parametrize("shape", [(20, 50), (50, 20), (8, 3, 3, 3)])
def test_orthogonal(shape, rng):
    w = I.get("orthogonal")(shape, 1, 1, np.float64, rng)
    m = w.reshape(shape[0], -1)
    small = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    np.testing.assert_allclose(small, np.eye(len(small)), atol=1e-12)
    w2 = I.Orthogonal(gain=2.0)(shape, 1, 1, np.float32, rng)
    assert w2.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(w2.reshape(shape[0], -1), axis=1 if
                               shape[0] <= np.prod(shape[1:]) else 0), 2.0, rtol=1e-5)


def test_constant_and_truncated_normal(rng):
    np.testing.assert_array_equal(I.Constant(0.5)((3, 2), 1, 1, np.float32, rng), 0.5)
    t = I.TruncatedNormal(mean=1.0, stddev=0.1)((20000,), 1, 1, np.float64, rng)
    assert np.all(np.abs(t - 1.0) <= 0.2) and t.mean() == pytest.approx(1.0, abs=0.005)
    with pytest.raises(ValueError, match="stddev must be positive, got 0"):
        I.TruncatedNormal(stddev=0)
    with pytest.raises(ValueError, match="value must be a finite number"):
        I.Constant(float("nan"))


def test_initializer_objects_in_layers_save_and_load(tmp_path):
    nb.seed(0)
    model = nb.Sequential([nb.layers.Dense(4, kernel_initializer=I.Orthogonal(1.5),
                                           bias_initializer=I.Constant(0.1))], input_shape=(6,))
    config = model.layers[0].get_config()
    assert config["kernel_initializer"] == {"class_name": "Orthogonal", "config": {"gain": 1.5}}
    np.testing.assert_allclose(model.get_weights()[1], 0.1, rtol=1e-6)
    model.save(tmp_path / "m.npz")
    loaded = nb.load_model(tmp_path / "m.npz")
    assert loaded.layers[0].get_config() == config
    with pytest.raises(ValueError, match="unknown initializer 'nope'"):
        nb.layers.Dense(2, kernel_initializer="nope")
