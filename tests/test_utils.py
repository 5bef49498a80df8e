"""numbanet.utils: the keras.utils names (to_categorical, normalize, pad_sequences,
set_random_seed)."""
import random

import numpy as np
import pytest

import numbanet as nb
from numbanet import utils


def test_to_categorical_shapes_and_values():
    rng = np.random.default_rng()
    y = rng.integers(0, 5, size=(7, 3))
    out = utils.to_categorical(y)
    assert out.shape == (7, 3, int(y.max()) + 1) and out.dtype == np.float32
    np.testing.assert_array_equal(out.argmax(-1), y)
    assert (out.sum(-1) == 1).all()
    col = y[:, :1]                                   # (N, 1) -> (N, C), as Keras
    out = utils.to_categorical(col, num_classes=6)
    assert out.shape == (7, 6)
    np.testing.assert_array_equal(out, np.eye(6, dtype=np.float32)[col[:, 0]])
    assert utils.to_categorical([2], num_classes=3).tolist() == [[0.0, 0.0, 1.0]]


def test_to_categorical_against_torch():
    torch = pytest.importorskip("torch")
    y = np.random.default_rng().integers(0, 9, size=50)
    ref = torch.nn.functional.one_hot(torch.from_numpy(y), 10).numpy()
    np.testing.assert_array_equal(utils.to_categorical(y, 10), ref)


def test_to_categorical_bad_labels():
    with pytest.raises(ValueError, match="non-negative.*-1"):
        utils.to_categorical([0, -1, 2])
    with pytest.raises(ValueError, match=r"\[0, 2\].*num_classes=3.*5"):
        utils.to_categorical([0, 5], num_classes=3)


@pytest.mark.parametrize("order", [1, 2, 3, np.inf])
@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_normalize_against_reference(order, axis):
    x = np.random.default_rng().standard_normal((4, 5, 3))
    x[1, :, :] = 0.0                                  # zero slices stay zero
    got = utils.normalize(x, axis=axis, order=order)
    absx = np.abs(x)
    norm = absx.max(axis, keepdims=True) if order == np.inf else \
        (absx ** order).sum(axis, keepdims=True) ** (1.0 / order)
    ref = x / np.where(norm == 0, 1.0, norm)
    np.testing.assert_allclose(got, ref, rtol=1e-13, atol=0)
    assert got.shape == x.shape


def test_normalize_against_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng().standard_normal((6, 8))
    for p in (1, 2):
        ref = torch.nn.functional.normalize(torch.from_numpy(x), p=p, dim=-1).numpy()
        np.testing.assert_allclose(utils.normalize(x, order=p), ref, rtol=1e-12, atol=1e-15)


def test_normalize_bad_arguments():
    with pytest.raises(ValueError, match="order.*-2"):
        utils.normalize(np.ones(3), order=-2)
    with pytest.raises(TypeError, match="axis.*None"):
        utils.normalize(np.ones(3), axis=None)
    with pytest.raises(TypeError, match="numeric.*<U1"):
        utils.normalize(np.array(["a"]))


def test_pad_sequences_is_the_text_one():
    assert utils.pad_sequences is nb.text.pad_sequences
    np.testing.assert_array_equal(utils.pad_sequences([[1, 2], [3]], maxlen=3),
                                  [[0, 1, 2], [0, 0, 3]])


def _draws():
    layer = nb.layers.Dense(3)
    layer.build((4,))
    return (random.random(), np.random.rand(), nb.random.get_rng().random(),
            layer.params["kernel"].copy())


def test_set_random_seed_reruns_python_numpy_and_numbanet():
    utils.set_random_seed(123)
    first = _draws()
    utils.set_random_seed(123)
    again = _draws()
    assert first[:3] == again[:3]
    np.testing.assert_array_equal(first[3], again[3])
    utils.set_random_seed(124)
    assert _draws()[:3] != first[:3]
    with pytest.raises(ValueError, match="non-negative integer.*-1"):
        utils.set_random_seed(-1)
