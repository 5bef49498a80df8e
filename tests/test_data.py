"""numbanet.data: one_hot, Standardizer, train_test_split, batches."""
import numpy as np
import pytest

import numbanet as nb
import numbanet.random as nbr
from numbanet.data import Standardizer, batches, one_hot, train_test_split


# ----------------------------------------------------------------------------- one_hot

def test_one_hot_basic_and_default_num_classes():
    out = one_hot([2, 0, 1, 2])
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.eye(3, dtype=np.float32)[[2, 0, 1, 2]])


def test_one_hot_num_classes_dtype_and_shape(rng):
    labels = rng.integers(0, 5, size=(3, 4))
    out = one_hot(labels, num_classes=7, dtype=np.float64)
    assert out.shape == (3, 4, 7) and out.dtype == np.float64
    assert np.all(out.sum(-1) == 1)
    np.testing.assert_array_equal(out.argmax(-1), labels)
    assert np.all(out[..., 5:] == 0)


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.int64])
def test_one_hot_integer_dtypes(dtype):
    out = one_hot(np.array([0, 3], dtype=dtype), 4, dtype=np.int8)
    assert out.dtype == np.int8
    np.testing.assert_array_equal(out, [[1, 0, 0, 0], [0, 0, 0, 1]])


def test_one_hot_whole_floats_accepted():
    np.testing.assert_array_equal(one_hot(np.array([1.0, 0.0])), [[0, 1], [1, 0]])


def test_one_hot_single_class_and_empty():
    np.testing.assert_array_equal(one_hot([0, 0]), [[1], [1]])
    out = one_hot(np.array([], dtype=np.int64), num_classes=3)
    assert out.shape == (0, 3)
    with pytest.raises(ValueError, match="num_classes must be given"):
        one_hot(np.array([], dtype=np.int64))


def test_one_hot_errors_name_the_bad_value():
    with pytest.raises(ValueError, match=r"non-negative, got -1 at index \(1,\)"):
        one_hot([0, -1, 2])
    with pytest.raises(ValueError, match=r"\[0, 2\] for num_classes=3, got 5 at index \(2,\)"):
        one_hot([0, 1, 5], num_classes=3)
    with pytest.raises(ValueError, match=r"whole numbers, got 1\.5"):
        one_hot([0.0, 1.5])
    with pytest.raises(ValueError, match="whole numbers, got nan"):
        one_hot([0.0, np.nan])
    with pytest.raises(TypeError, match="labels must be integers.*<U1"):
        one_hot(["a", "b"])
    with pytest.raises(TypeError, match="labels must be integers.*bool"):
        one_hot([True, False])
    for bad in (0, -2, 2.0, True, "3"):
        with pytest.raises(ValueError, match=f"num_classes must be a positive integer.*{bad!r}"):
            one_hot([0], num_classes=bad)
    with pytest.raises(TypeError, match="dtype must be a NumPy dtype"):
        one_hot([0], dtype="not-a-dtype")


# ----------------------------------------------------------------------------- Standardizer

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_standardizer_per_feature(rng, dtype):
    x = (rng.normal(size=(50, 7)) * rng.uniform(0.5, 4, 7) + rng.normal(size=7) * 3).astype(dtype)
    s = Standardizer()
    z = s.fit_transform(x)
    assert z.dtype == dtype and z.shape == x.shape
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(z.mean(0), 0, atol=tol)
    np.testing.assert_allclose(z.std(0), 1, rtol=tol)
    np.testing.assert_allclose(s.mean_.ravel(), x.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(s.inverse_transform(z), x, rtol=tol, atol=tol * 10)
    # new data with another sample count uses the training statistics
    x2 = rng.normal(size=(3, 7)).astype(dtype)
    np.testing.assert_allclose(s.transform(x2), (x2 - s.mean_) / s.std_, rtol=tol, atol=tol)


def test_standardizer_per_channel_nchw(rng):
    x = rng.normal(size=(6, 3, 5, 4)) * np.array([1, 2, 3])[None, :, None, None] + 7
    s = Standardizer(axis=(0, 2, 3)).fit(x)
    assert s.mean_.shape == (1, 3, 1, 1)
    z = s.transform(x)
    np.testing.assert_allclose(z.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(z.std(axis=(0, 2, 3)), 1, rtol=1e-12)
    # other batch and spatial sizes are fine: only the channel count is the feature shape
    assert s.transform(rng.normal(size=(2, 3, 9, 9))).shape == (2, 3, 9, 9)
    with pytest.raises(ValueError, match=r"x has shape \(2, 4, 5, 4\), expected shape "
                                         r"\('\*', 3, '\*', '\*'\)"):
        s.transform(np.zeros((2, 4, 5, 4)))


def test_standardizer_constant_feature_and_int_input():
    x = np.array([[1, 5], [1, 7], [1, 9]], dtype=np.int64)
    s = Standardizer()
    z = s.fit_transform(x)
    assert z.dtype == np.float32
    assert np.all(np.isfinite(z)) and np.all(z[:, 0] == 0)
    np.testing.assert_allclose(s.inverse_transform(z), x, rtol=1e-6)
    # a large constant: its rounded float64 mean is an ulp off, which over epsilon gave 0.15
    x = np.full((7, 2), 1e8 + 0.3)
    x[:, 1] = np.arange(7)
    z = Standardizer().fit_transform(x)
    assert np.all(z[:, 0] == 0)


def test_standardizer_errors():
    s = Standardizer()
    for method in (s.transform, s.inverse_transform):
        with pytest.raises(RuntimeError, match="not fitted yet"):
            method(np.zeros((2, 3)))
    s.fit(np.arange(12.0).reshape(4, 3))
    with pytest.raises(ValueError, match=r"x has shape \(4, 2\), expected shape \('\*', 3\)"):
        s.transform(np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"x has shape \(4, 3, 1\)"):
        s.inverse_transform(np.zeros((4, 3, 1)))
    with pytest.raises(ValueError, match="NaN or infinite"):
        Standardizer().fit(np.array([[1.0], [np.inf]]))
    with pytest.raises(ValueError, match="no samples along axis"):
        Standardizer().fit(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="axis 2 is out of range.*2 dimension"):
        Standardizer(axis=2).fit(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="repeated axis"):
        Standardizer(axis=(0, -2)).fit(np.zeros((3, 3)))
    with pytest.raises(TypeError, match="x must be numeric.*<U1"):
        Standardizer().fit(np.array([["a"]]))
    with pytest.raises(ValueError, match="scalar"):
        Standardizer().fit(3.0)
    for bad in ("0", 1.5, (), None, True):
        with pytest.raises(TypeError, match=f"axis must be an integer.*{bad!r}"):
            Standardizer(axis=bad)
    for bad in (0, -1e-3, float("nan"), float("inf"), "1e-7", True):
        with pytest.raises(ValueError, match=f"epsilon must be a positive finite.*{bad!r}"):
            Standardizer(epsilon=bad)


def test_standardizer_config_and_state_round_trip(rng):
    x = rng.normal(size=(5, 2, 3))
    s = Standardizer(axis=(0, 2), epsilon=1e-5).fit(x)
    cfg = s.get_config()
    assert cfg == {"axis": [0, 2], "epsilon": 1e-5}
    state = s.get_state()
    assert set(state) == {"mean", "std"} and all(type(v) is np.ndarray for v in state.values())
    s2 = Standardizer.from_config(cfg).set_state(state)
    np.testing.assert_array_equal(s2.transform(x), s.transform(x))
    assert Standardizer().get_state() == {}
    assert Standardizer().get_config() == {"axis": 0, "epsilon": 1e-7}
    assert Standardizer().set_state({}).mean_ is None
    with pytest.raises(TypeError, match="state must be a dict, got list"):
        s2.set_state([1])
    with pytest.raises(ValueError, match=r"keys 'mean' and 'std', got \['mean'\]"):
        s2.set_state({"mean": state["mean"]})
    with pytest.raises(ValueError, match="one shape"):
        s2.set_state({"mean": state["mean"], "std": np.ones(3)})
    with pytest.raises(ValueError, match="size 1 along axis"):
        s2.set_state({"mean": np.zeros((2, 2, 3)), "std": np.ones((2, 2, 3))})
    with pytest.raises(ValueError, match="non-negative"):
        s2.set_state({"mean": state["mean"], "std": -state["std"]})


# ----------------------------------------------------------------------------- train_test_split

def test_split_sizes_order_and_partition():
    x = np.arange(10) * 10
    y = np.arange(10)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, seed=0)
    assert len(x_te) == 3 and len(x_tr) == 7      # ceil(0.25 * 10) like scikit-learn
    np.testing.assert_array_equal(x_tr, y_tr * 10)  # x and y stay paired
    np.testing.assert_array_equal(x_te, y_te * 10)
    np.testing.assert_array_equal(np.sort(np.concatenate([y_tr, y_te])), y)


def test_split_count_no_y_and_no_shuffle():
    x = np.arange(12).reshape(6, 2)
    out = train_test_split(x, test_size=2, shuffle=False)
    assert len(out) == 2
    np.testing.assert_array_equal(out[0], x[:4])
    np.testing.assert_array_equal(out[1], x[4:])
    # lists are accepted
    a, b = train_test_split([1, 2, 3], test_size=1, shuffle=False)
    np.testing.assert_array_equal(a, [1, 2]) and np.testing.assert_array_equal(b, [3])


def test_split_seed_reproducible_and_global_seed():
    x = np.arange(100)
    a = train_test_split(x, seed=3)
    b = train_test_split(x, seed=3)
    c = train_test_split(x, seed=4)
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    nbr.seed(11)
    d = train_test_split(x)
    nbr.seed(11)
    e = train_test_split(x)
    np.testing.assert_array_equal(d[1], e[1])
    g = np.random.default_rng(5)
    np.testing.assert_array_equal(train_test_split(x, seed=g)[1],
                                  train_test_split(x, seed=np.random.default_rng(5))[1])


def test_split_stratified_keeps_class_shares(rng):
    y = np.repeat([0, 1, 2], [50, 30, 20])
    x = rng.normal(size=(100, 2))
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, stratify=y, seed=1)
    assert len(y_te) == 20
    np.testing.assert_array_equal(np.bincount(y_te), [10, 6, 4])
    np.testing.assert_array_equal(np.bincount(y_tr), [40, 24, 16])
    # the test part is not sorted by class
    assert not np.all(np.diff(y_te) >= 0)
    # uneven shares: total is still exact and each class within one of its ideal share
    y = np.repeat([0, 1, 2], [7, 7, 7])
    *_, y_te = train_test_split(np.arange(21), y, test_size=5, stratify=y, seed=2)
    assert len(y_te) == 5 and np.all(np.abs(np.bincount(y_te, minlength=3) - 5 / 3) < 1)
    # one-hot stratify rows work like labels
    y = np.repeat([0, 1], [8, 12])
    *_, y_te = train_test_split(np.arange(20), y, test_size=0.5, stratify=np.eye(2)[y], seed=0)
    np.testing.assert_array_equal(np.bincount(y_te), [4, 6])


def test_split_errors():
    x = np.arange(10)
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=f"fraction must be in \\(0, 1\\), got {bad!r}"):
            train_test_split(x, test_size=bad)
    for bad in (0, 10, -1):
        with pytest.raises(ValueError, match=f"count must be in \\[1, 9\\] for 10 samples, got "
                                             f"{bad}"):
            train_test_split(x, test_size=bad)
    for bad in ("0.2", True, None):
        with pytest.raises(TypeError, match=f"test_size must be a float.*{bad!r}"):
            train_test_split(x, test_size=bad)
    with pytest.raises(ValueError, match="test_size=0.9 of 2 samples gives 2 test and 0 training"):
        train_test_split(np.arange(2), test_size=0.9)
    with pytest.raises(ValueError, match=r"same number of samples.*len\(x\)=10 and len\(y\)=9"):
        train_test_split(x, np.arange(9))
    with pytest.raises(ValueError, match="at least 2 samples.*len\\(x\\)=1"):
        train_test_split(np.arange(1))
    with pytest.raises(ValueError, match="scalar"):
        train_test_split(5)
    with pytest.raises(TypeError, match="x must be an array, got None"):
        train_test_split(None)
    with pytest.raises(ValueError, match="stratify needs shuffle=True"):
        train_test_split(x, stratify=x, shuffle=False)
    with pytest.raises(ValueError, match=r"stratify must be labels of shape \(10,\).*\(9,\)"):
        train_test_split(x, stratify=np.arange(9))
    with pytest.raises(TypeError, match="shuffle must be True or False, got 1"):
        train_test_split(x, shuffle=1)
    for bad in (-1, 1.5, "3"):
        with pytest.raises(TypeError, match=f"seed must be None.*{bad!r}"):
            train_test_split(x, seed=bad)


# ----------------------------------------------------------------------------- batches

def test_batches_in_order_with_ragged_last():
    x = np.arange(10).reshape(10, 1)
    y = np.arange(10) * 2
    got = list(batches(x, y, batch_size=4))
    assert [len(xb) for xb, _ in got] == [4, 4, 2]
    for xb, yb in got:
        np.testing.assert_array_equal(xb[:, 0] * 2, yb)
    np.testing.assert_array_equal(np.concatenate([xb for xb, _ in got]), x)


def test_batches_drop_last_x_only_and_edges():
    x = np.arange(10)
    got = list(batches(x, batch_size=4, drop_last=True))
    assert all(isinstance(b, np.ndarray) for b in got)
    assert [b.tolist() for b in got] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert [b.tolist() for b in batches(x, batch_size=5, drop_last=True)] == [[0, 1, 2, 3, 4],
                                                                              [5, 6, 7, 8, 9]]
    assert len(list(batches(x, batch_size=1))) == 10
    assert [b.tolist() for b in batches(x, batch_size=100)] == [list(range(10))]
    assert list(batches(x, batch_size=100, drop_last=True)) == []
    assert list(batches(np.zeros((0, 3)), batch_size=2)) == []


def test_batches_shuffle_seeded_and_global():
    x = np.arange(20)
    y = x + 100
    a = [yb.tolist() for _, yb in batches(x, y, batch_size=6, shuffle=True, seed=7)]
    b = [yb.tolist() for _, yb in batches(x, y, batch_size=6, shuffle=True, seed=7)]
    assert a == b and sorted(sum(a, [])) == list(range(100, 120))
    assert sum(a, []) != list(range(100, 120))
    for xb, yb in batches(x, y, batch_size=6, shuffle=True, seed=7):
        np.testing.assert_array_equal(xb + 100, yb)
    nbr.seed(3)
    e1 = np.concatenate(list(batches(x, batch_size=6, shuffle=True)))
    e2 = np.concatenate(list(batches(x, batch_size=6, shuffle=True)))
    nbr.seed(3)
    np.testing.assert_array_equal(np.concatenate(list(batches(x, batch_size=6, shuffle=True))), e1)
    assert not np.array_equal(e1, e2)  # successive epochs differ


def test_batches_validates_eagerly():
    x = np.arange(10)
    for bad in (0, -3, 2.0, True, "4", None):
        with pytest.raises(ValueError, match=f"batch_size must be a positive integer, got "
                                             f"{bad!r}"):
            batches(x, batch_size=bad)  # no next(): the call itself checks
    with pytest.raises(ValueError, match=r"same number of samples.*len\(x\)=10 and len\(y\)=8"):
        batches(x, np.arange(8))
    with pytest.raises(TypeError, match="shuffle must be True or False, got 'yes'"):
        batches(x, shuffle="yes")
    with pytest.raises(TypeError, match="drop_last must be True or False, got 0"):
        batches(x, drop_last=0)
    with pytest.raises(TypeError, match="seed must be None.*-2"):
        batches(x, shuffle=True, seed=-2)
    with pytest.raises(ValueError, match="scalar"):
        batches(np.float32(3))


def test_dataloader_passes_again_in_a_new_order_and_trains(rng):
    x = np.arange(20)
    y = x + 100
    loader = nb.data.DataLoader(x, y, batch_size=6, shuffle=True, seed=4)
    assert len(loader) == 4 and len(nb.data.DataLoader(x, batch_size=6, drop_last=True)) == 3
    first, second = ([yb.tolist() for _, yb in loader] for _ in range(2))
    assert sorted(sum(first, [])) == sorted(sum(second, [])) == list(range(100, 120))
    assert first != second                              # each pass a new order
    again = nb.data.DataLoader(x, y, batch_size=6, shuffle=True, seed=4)
    assert [yb.tolist() for _, yb in again] == first    # seeded: the same passes
    for xb, yb in loader:
        np.testing.assert_array_equal(xb + 100, yb)
    plain = nb.data.DataLoader(x, batch_size=8)
    assert [b.tolist() for b in plain] == [b.tolist() for b in batches(x, batch_size=8)]
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        nb.data.DataLoader(x, batch_size=0)
    # fit takes it as a re-iterable source: every epoch a whole pass
    xs = rng.standard_normal((40, 3))
    ys = xs @ np.array([[1.0], [-1.0], [0.5]])
    nb.seed(0)
    a = nb.Sequential([nb.layers.Dense(1)], input_shape=(3,), dtype="float64")
    b = nb.Sequential([nb.layers.Dense(1)], input_shape=(3,), dtype="float64")
    b.set_weights(a.get_weights())
    for m in (a, b):
        m.compile(nb.optimizers.SGD(0.1), "mse")
    ha = a.fit(nb.data.DataLoader(xs, ys, batch_size=16), epochs=3, verbose=0)
    hb = b.fit(xs, ys, batch_size=16, shuffle=False, epochs=3, verbose=0)
    np.testing.assert_array_equal(ha.history["loss"], hb.history["loss"])


# ----------------------------------------------------------------------------- cross-validation

def test_kfold_partitions_every_sample_once():
    x = np.arange(23)
    folds = list(nb.data.KFold(5).split(x))
    assert len(folds) == 5
    tests = [t for _, t in folds]
    assert sorted(np.concatenate(tests).tolist()) == list(range(23))
    assert [len(t) for t in tests] == [5, 5, 5, 4, 4]
    for train, test in folds:
        assert not set(train) & set(test) and len(train) + len(test) == 23
    shuffled = [t for _, t in nb.data.KFold(5, shuffle=True, seed=1).split(x)]
    again = [t for _, t in nb.data.KFold(5, shuffle=True, seed=1).split(x)]
    assert all(np.array_equal(a, b) for a, b in zip(shuffled, again))
    assert not all(np.array_equal(a, b) for a, b in zip(shuffled, tests))


def test_stratified_kfold_keeps_class_shares():
    y = np.array([0] * 30 + [1] * 10 + [2] * 20)
    for train, test in nb.data.StratifiedKFold(5, shuffle=True, seed=0).split(np.zeros(60), y):
        assert np.bincount(y[test], minlength=3).tolist() == [6, 2, 4]
    onehot = nb.data.one_hot(y, 3)
    for _, test in nb.data.StratifiedKFold(2).split(np.zeros(60), onehot):
        assert np.bincount(y[test], minlength=3).tolist() == [15, 5, 10]


def test_kfold_errors():
    with pytest.raises(ValueError, match="n_splits must be an integer >= 2, got 1"):
        nb.data.KFold(1)
    with pytest.raises(ValueError, match="cannot make 5 folds from 3 samples"):
        list(nb.data.KFold(5).split(np.zeros(3)))
    with pytest.raises(ValueError, match="y .* is required"):
        list(nb.data.StratifiedKFold(2).split(np.zeros(4)))
    with pytest.raises(ValueError, match="more than the number of samples in every class"):
        list(nb.data.StratifiedKFold(5).split(np.zeros(6), np.array([0, 0, 0, 1, 1, 1])))
    with pytest.raises(ValueError, match="same number of samples"):
        list(nb.data.KFold(2).split(np.zeros(4), np.zeros(5)))


def test_cross_validate_returns_per_fold_scores():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)

    def build():
        model = nb.Sequential([nb.layers.Dense(2, activation="softmax")], input_shape=(4,))
        model.compile(nb.optimizers.Adam(0.05), "sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        return model
    nb.seed(0)
    scores = nb.data.cross_validate(build, x, y, k=3, fit_kwargs={"epochs": 40, "batch_size": 8})
    assert set(scores) == {"loss", "accuracy"} and len(scores["accuracy"]) == 3
    assert np.mean(scores["accuracy"]) > 0.8
    with pytest.raises(TypeError, match="build_model must be a callable"):
        nb.data.cross_validate(None, x, y)


def test_cross_validate_stratifies_by_the_models_loss_not_the_targets_dtype():
    """Integer regression targets get plain folds (stratifying them failed); float class labels
    of a crossentropy get stratified folds. The scores are those of a fit/evaluate on the
    folds of KFold / StratifiedKFold with the same seed."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((40, 3))
    y_int = (x @ [3.0, 2.0, 1.0] * 10).round().astype(int)        # nearly every value once
    y_cls = (x[:, 0] > 0).astype(np.float64)

    def regression():
        model = nb.Sequential([nb.layers.Dense(1)], input_shape=(3,), dtype="float64")
        model.compile(nb.optimizers.SGD(0.01), "mse")
        return model

    def classifier():
        model = nb.Sequential([nb.layers.Dense(2, activation="softmax")], input_shape=(3,),
                              dtype="float64")
        model.compile(nb.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
        return model
    for build, y, folds in ((regression, y_int, nb.data.KFold),
                            (classifier, y_cls, nb.data.StratifiedKFold)):
        nb.seed(0)
        got = nb.data.cross_validate(build, x, y, k=4, seed=3, fit_kwargs={"epochs": 2})
        nb.seed(0)
        want = []
        for train, test in folds(4, shuffle=True, seed=3).split(x, y):
            model = build()
            model.fit(x[train], y[train], epochs=2, verbose=0)
            want.append(model.evaluate(x[test], y[test])["loss"])
        assert got["loss"] == want
    with pytest.raises(ValueError, match="n_splits=4 is more than the number of samples"):
        nb.data.cross_validate(regression, x, y_int, k=4, stratified=True)


def test_one_hot_of_a_huge_label_names_it():
    """A label so large that the one-hot array cannot be allocated is named in the error (it
    was NumPy's 'Maximum allowed dimension exceeded' or a MemoryError for a 4 TiB array)."""
    for labels in ([0, 2**62], np.array([1e20])):   # beyond what any allocation can hold
        with pytest.raises(ValueError, match=r"do not fit in memory \(the largest label is"):
            nb.data.one_hot(labels)
