"""nb.random.normal / uniform: reproducible under nb.seed on both devices, the right moments,
on the calling layer's device, and constants under a tape (the reparameterization trick)."""
import numpy as np
import pytest

import numbanet as nb

ops = nb.ops


@pytest.fixture(params=["cpu", "cuda"])
def device(request):
    """Both devices (CUDA: Numba's simulator here, with tiny shapes)."""
    if request.param == "cuda":
        request.getfixturevalue("allow_cuda")
    return request.param


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_reproducible_and_distributed_as_asked(device, dtype):
    with nb.device(device):
        nb.seed(11)
        a = np.asarray(nb.random.normal((40, 50), mean=2.0, stddev=3.0, dtype=dtype))
        u = np.asarray(nb.random.uniform((40, 50), minval=-1.0, maxval=3.0, dtype=dtype))
        nb.seed(11)
        b = np.asarray(nb.random.normal((40, 50), mean=2.0, stddev=3.0, dtype=dtype))
        c = np.asarray(nb.random.normal((40, 50), mean=2.0, stddev=3.0, dtype=dtype))
        s1 = np.asarray(nb.random.normal(7, dtype=dtype, seed=5))
        s2 = np.asarray(nb.random.normal(7, dtype=dtype, seed=5))
    assert a.dtype == dtype and a.shape == (40, 50)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(s1, s2)
    # 2000 draws: the mean within ~4 standard errors, the spread within a few percent
    assert abs(a.mean() - 2.0) < 4 * 3.0 / np.sqrt(a.size) and abs(a.std() / 3.0 - 1) < 0.06
    assert u.min() >= -1.0 and u.max() < 3.0 and abs(u.mean() - 1.0) < 4 * 4 / np.sqrt(12 * u.size)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="nb.random.normal: shape"):
        nb.random.normal((2, -1))
    with pytest.raises(ValueError, match="stddev must be a finite number"):
        nb.random.normal((2,), stddev="big")
    with pytest.raises(ValueError, match="maxval must be greater than minval"):
        nb.random.uniform((2,), minval=1.0, maxval=1.0)
    with pytest.raises(ValueError, match="seed must be None or an integer"):
        nb.random.uniform((2,), seed=-3)
    with pytest.raises(ValueError, match="dtype"):
        nb.random.normal((2,), dtype="int32")


class Sampling(nb.layers.Layer):
    """z = mu + exp(0.5 * log_var) * eps (a VAE's sampling layer)."""

    multi_input = True

    def call(self, inputs):
        mu, log_var = inputs
        eps = nb.random.normal(mu.shape, dtype=mu.dtype)
        return mu + ops.exp(0.5 * log_var) * eps


def test_reparameterization_differentiates_through_mu_and_log_var(device, rng):
    mu = rng.standard_normal((3, 2))
    log_var = rng.standard_normal((3, 2))
    layer = Sampling(dtype="float64")
    with nb.device(device):
        tmu, tlv = nb.ops.convert_to_tensor(mu), nb.ops.convert_to_tensor(log_var)
        nb.seed(4)
        with nb.GradientTape() as tape:
            tape.watch([tmu, tlv])
            z = layer([tmu, tlv])
            loss = ops.sum(z * z)
        g_mu, g_lv = tape.gradient(loss, [tmu, tlv])
    assert z.device == device
    nb.seed(4)
    eps = np.asarray(nb.random.normal((3, 2), dtype="float64")) if device == "cpu" else \
        (np.asarray(z) - mu) / np.exp(0.5 * log_var)
    zz = mu + np.exp(0.5 * log_var) * eps
    np.testing.assert_allclose(np.asarray(z), zz, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(g_mu), 2 * zz, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(g_lv), 2 * zz * 0.5 * np.exp(0.5 * log_var) * eps,
                               rtol=1e-12)
