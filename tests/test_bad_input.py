"""Bad or edge inputs a new user tries: each is a clear error (naming the argument, the expected
and the received value) or documented behaviour; never lost work or a silently ruined model."""
import json
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import numbanet as nb

L = nb.layers


def mlp(out=3, act="softmax", dtype=None):
    nb.seed(0)
    return nb.Sequential([L.Dense(8, activation="tanh"), L.Dense(out, activation=act)],
                         input_shape=(4,), dtype=dtype)


def data(rng, n=16, classes=3):
    return rng.standard_normal((n, 4)).astype(np.float32), rng.integers(0, classes, n)


def test_nan_targets_and_weights_are_rejected_before_training(rng):
    model = mlp(out=2, act="linear")
    model.compile("adam", "mse")
    x = rng.standard_normal((8, 4)).astype(np.float32)
    y = rng.standard_normal((8, 2)).astype(np.float32)
    model.fit(x, y, epochs=1, verbose=0)
    before = model.get_weights()
    bad = y.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"y: contains NaN or Inf \(first at index \(3, 1\)\)"):
        model.fit(x, bad, verbose=0)
    w = np.ones(8)
    w[2] = np.inf
    with pytest.raises(ValueError, match="sample_weight must be finite"):
        model.fit(x, y, sample_weight=w, verbose=0)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_non_finite_loss_leaves_weights_and_state_as_before_the_step(rng):
    model = nb.Sequential([L.Dense(8, activation="relu"), L.BatchNormalization(),
                           L.Dense(2)], input_shape=(4,))
    model.compile(nb.optimizers.Adam(1e-3), "mse")
    x = rng.standard_normal((64, 4)).astype(np.float32)
    y = rng.standard_normal((64, 2)).astype(np.float32)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    # a weight pushed to the edge of float32 makes the next step's loss infinite
    k = model.layers[2].params["kernel"]
    k[0, 0] = 3e38
    weights, state = model.get_weights(), model.optimizer.get_state()
    buffers = [np.array(b) for _, _, b in model._buffer_items()]
    with pytest.warns(RuntimeWarning, match="weights and optimizer state of before that step"):
        model.fit(x, y * 1e30, epochs=3, batch_size=16, verbose=0)
    assert model.stop_reason
    for a, b in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    for a, (_, _, b) in zip(buffers, model._buffer_items()):
        np.testing.assert_array_equal(a, b)
    after = model.optimizer.get_state()
    assert set(after) == set(state)
    for key in state:
        np.testing.assert_array_equal(after[key], state[key])


@pytest.mark.parametrize("loss, y, match", [
    ("binary_crossentropy", [[2.0], [0.0]], r"targets must lie in \[0, 1\], got 2 at index "
                                            r"\(0, 0\)"),
    ("binary_crossentropy", [[-1.0], [1.0]], r"got -1 at index \(0, 0\)"),
    ("categorical_crossentropy", [[1.0, 0.0, 0.0], [1.2, -0.2, 0.0]],
     r"targets must lie in \[0, 1\], got 1.2 at index \(1, 0\)"),
    ("categorical_crossentropy", [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]], r"row \(1,\) sums to 0"),
    ("categorical_crossentropy", [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]], r"row \(0,\) sums to 2"),
], ids=["bce-2", "bce-neg", "cce-neg", "cce-zero-row", "cce-row-2"])
def test_targets_outside_the_loss_domain_are_rejected(loss, y, match, rng):
    units = np.asarray(y).shape[1]
    model = mlp(out=units, act="sigmoid" if units == 1 else "softmax")
    model.compile("adam", loss)
    with pytest.raises(ValueError, match=match):
        model.fit(rng.standard_normal((2, 4)), np.asarray(y), verbose=0)
    with pytest.raises(ValueError, match=match):
        nb.losses.get(loss)(np.asarray(y), np.full(np.shape(y), 0.5))


def test_soft_targets_stay_valid(rng):
    y = nb.data.one_hot(rng.integers(0, 3, 8), 3) * 0.9 + 0.1 / 3      # label smoothing
    model = mlp()
    model.compile("adam", "categorical_crossentropy")
    model.fit(rng.standard_normal((8, 4)), y, verbose=0)
    binary = mlp(out=1, act="sigmoid")
    binary.compile("adam", "binary_crossentropy")
    binary.fit(rng.standard_normal((8, 4)), rng.uniform(0, 1, (8, 1)), verbose=0)


def test_activation_layers_take_their_parameter_positionally(rng):
    x = rng.standard_normal((3, 4))
    assert L.LeakyReLU(0.2).negative_slope == 0.2
    np.testing.assert_allclose(np.asarray(L.LeakyReLU(0.2)(x)), np.where(x > 0, x, 0.2 * x))
    assert L.ELU(0.5).alpha == 0.5
    with pytest.raises(TypeError, match="negative_slope given twice"):
        L.LeakyReLU(0.2, negative_slope=0.1)
    with pytest.raises(TypeError, match="one positional argument"):
        L.LeakyReLU(0.2, 0.3)


def test_backward_before_forward_is_a_clear_error():
    with pytest.raises(RuntimeError, match=r"Dense 'lonely': backward\(\) needs a forward\(\) "
                                           r"first"):
        L.Dense(2, name="lonely").backward(np.ones((1, 2)))


def test_one_sample_without_the_batch_axis_is_named():
    model = mlp()
    with pytest.raises(ValueError, match=r"one sample of shape \(4,\): add the batch axis"):
        model.predict(np.ones(4))


def test_values_that_overflow_the_model_dtype_are_rejected():
    model = mlp()
    x = np.ones((2, 4))
    x[1, 2] = 1e39
    with pytest.raises(ValueError, match=r"value 1e\+39 at index \(1, 2\) overflows float32"):
        model.predict(x)
    assert np.all(np.isfinite(mlp(dtype="float64").predict(x)))
    # targets too: a finite float64 target that overflows float32 would make the loss inf
    model.compile("sgd", "mse")
    y = np.zeros((2, 3))
    y[0, 1] = -3e39
    with pytest.raises(ValueError, match=r"y: value -3e\+39 at index \(0, 1\) overflows float32"):
        model.fit(np.ones((2, 4)), y, verbose=0)


def test_full_batch_optimizer_on_mini_batches_warns(rng):
    x, y = data(rng)
    model = mlp()
    model.compile("lbfgs", "sparse_categorical_crossentropy")
    with pytest.warns(RuntimeWarning, match="full-batch method.*batch_size=8.*batch_size=len"):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.fit(x, y, batch_size=len(x), epochs=1, verbose=0)


def test_class_weight_for_classes_the_model_cannot_output(rng):
    x, y = data(rng)
    model = mlp()
    model.compile("adam", "sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match=r"class_weight has class 7, but the model outputs 3 "
                                         r"classes \(0..2\)"):
        model.fit(x, y, class_weight={7: 2.0}, verbose=0)


def test_load_model_refuses_non_finite_weights_and_loads_without_compile(rng, tmp_path):
    model = mlp()
    model.compile("adam", "sparse_categorical_crossentropy")
    path = tmp_path / "m.npz"
    model.save(path)
    with np.load(path) as f:
        arrays = dict(f)
    arrays["weights/0"] = arrays["weights/0"].copy()
    arrays["weights/0"][0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", **arrays)
    with pytest.raises(ValueError, match="weight array 0 holds NaN or Inf"):
        nb.load_model(tmp_path / "nan.npz")

    class MyMSE(nb.losses.Loss):
        def call(self, y_true, y_pred):
            return nb.ops.mean(nb.ops.square(y_pred - y_true), axis=-1)
    custom = mlp(out=2, act="linear")
    custom.compile("sgd", MyMSE())
    custom.save(tmp_path / "custom.npz")
    with pytest.raises(ValueError, match=r"unknown loss 'MyMSE'.*nb.losses.register\(MyLoss\).*"
                                         r"compile=False"):
        nb.load_model(tmp_path / "custom.npz")
    loaded = nb.load_model(tmp_path / "custom.npz", compile=False)
    assert loaded.optimizer is None
    np.testing.assert_array_equal(loaded.predict(np.ones((1, 4))), custom.predict(np.ones((1, 4))))
    nb.losses.register(MyMSE)
    try:
        assert type(nb.load_model(tmp_path / "custom.npz").loss) is MyMSE
    finally:
        del nb.losses.CLASSES["MyMSE"]


def test_a_save_that_would_need_pickle_keeps_the_previous_file(tmp_path):
    model = mlp()
    model.compile("adam", "sparse_categorical_crossentropy")
    path = tmp_path / "m.npz"
    model.save(path)
    before = path.read_bytes()
    model.optimizer._extra = object()
    model.optimizer.get_state = lambda: {"iterations": np.array(0), "m/0": object()}
    with pytest.raises(TypeError, match="not a numeric array.*nothing was written"):
        model.save(path)
    model.optimizer.get_config = lambda: {"learning_rate": object()}
    with pytest.raises(TypeError):
        model.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]
    json.loads(str(np.load(path)["config"]))


# ---------------------------------------------------------------------------------------------
# property test: random shapes, dtypes and values to fit / predict / evaluate

_ARRAYS = st.one_of(
    st.tuples(st.integers(0, 4), st.integers(0, 6)).map(lambda s: ("shape", s)),
    st.sampled_from(["float32", "float64", "int64", "bool", "object", "nan", "inf", "huge",
                     "list", "scalar", "none"]).map(lambda k: ("kind", k)))


def _make(spec, n, features, rng):
    kind, value = spec
    if kind == "shape":
        return rng.standard_normal(value)
    base = rng.standard_normal((n, features))
    return {"float32": base.astype(np.float32), "float64": base, "int64": base.astype(np.int64),
            "bool": base > 0, "object": np.array([["a"] * features] * n, dtype=object),
            "nan": np.where(base > 1, np.nan, base), "inf": np.where(base > 1, np.inf, base),
            "huge": base * 1e39, "list": base.tolist(), "scalar": 3.0, "none": None}[value]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(x_spec=_ARRAYS, y_spec=_ARRAYS, method=st.sampled_from(["fit", "predict", "evaluate"]),
       seed=st.integers(0, 2**16))
def test_random_inputs_either_work_or_raise_a_clear_error(x_spec, y_spec, method, seed):
    rng = np.random.default_rng(seed)
    model = _PROPERTY_MODEL
    n = 5
    x = _make(x_spec, n, 4, rng)
    y = _make(y_spec, n, 3, rng)
    if y_spec[0] == "kind" and y_spec[1] in ("float32", "float64"):
        y = np.abs(y) / np.abs(y).sum(axis=1, keepdims=True)          # valid distributions
    before = model.get_weights()
    try:
        if method == "fit":
            model.fit(x, y, epochs=1, batch_size=2, verbose=0)
        elif method == "evaluate":
            result = model.evaluate(x, y)
            assert all(np.isfinite(v) for v in result.values())
        else:
            assert np.all(np.isfinite(model.predict(x)))
    except (ValueError, TypeError) as e:
        message = str(e)
        assert message and any(word in message for word in (
            "x", "y", "target", "label", "sample", "shape", "batch", "dtype", "numeric",
            "NaN", "overflows", "array")), message
        for a, b in zip(before, model.get_weights()):
            np.testing.assert_array_equal(a, b)
        return
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())


_PROPERTY_MODEL = mlp()
_PROPERTY_MODEL.compile(nb.optimizers.SGD(0.01), "categorical_crossentropy")


# ---------------------------------------------------------------------------------------------
# the command line, saving, compare, IDX files

def test_cli_checks_output_and_plot_paths_before_training(tmp_path, capsys, monkeypatch):
    from numbanet import cli
    trained = []
    monkeypatch.setattr(cli, "build_digits_cnn", lambda device="cpu": trained.append(1) or
                        (_ for _ in ()).throw(AssertionError("trained")))
    assert cli.main(["train", "--output", str(tmp_path / "missing" / "m.npz"), "--verbose",
                     "0"]) == 2
    err = capsys.readouterr().err
    assert "cannot write the model file" in err and "no such directory" in err
    assert len(err.strip().splitlines()) == 1
    pytest.importorskip("matplotlib")
    assert cli.main(["train", "--output", str(tmp_path / "ok.npz"), "--plot",
                     str(tmp_path / "missing" / "c.png"), "--verbose", "0"]) == 2
    assert "cannot write the plot" in capsys.readouterr().err
    assert not trained and not (tmp_path / "ok.npz").exists()


@pytest.mark.parametrize("argv,option", [
    (["train", "--learning-rate", "inf"], "--learning-rate"),
    (["train", "--seed", "-1"], "--seed"),
    (["optimizers", "--seed", "-1"], "--seed"),
])
def test_cli_rejects_bad_numbers_naming_the_option(argv, option, capsys):
    from numbanet import cli, examples
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2 and f"argument {option}:" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        examples.run("gan", ["--seed", "-1"])
    assert "argument --seed:" in capsys.readouterr().err


def test_cli_refuses_a_plot_that_would_overwrite_the_model(tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    from numbanet import cli
    monkeypatch.setattr(cli, "build_digits_cnn", lambda device="cpu":
                        (_ for _ in ()).throw(AssertionError("trained")))
    model = tmp_path / "m.npz"
    model.write_bytes(b"previous model")
    assert cli.main(["train", "--output", str(model), "--plot", str(model), "--verbose",
                     "0"]) == 2
    assert "would overwrite the model" in capsys.readouterr().err
    png = tmp_path / "m.png"                  # the default plot is OUTPUT with .png
    assert cli.main(["train", "--output", str(png), "--verbose", "0"]) == 2
    assert "would overwrite the model" in capsys.readouterr().err
    assert model.read_bytes() == b"previous model" and not png.exists()


def test_cli_saves_the_model_before_drawing(tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    from numbanet import cli

    def broken_plot(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(nb, "plot_history", broken_plot)
    out = tmp_path / "m.npz"
    assert cli.main(["train", "--epochs", "1", "--output", str(out), "--plot",
                     str(tmp_path / "c.png"), "--verbose", "0"]) == 1
    err = capsys.readouterr().err
    assert "could not be drawn" in err and str(out) in err
    assert nb.load_model(out).predict(np.zeros((1, 1, 8, 8), np.float32)).shape == (1, 10)


def test_save_to_a_missing_directory_names_the_path(tmp_path):
    model = mlp()
    target = tmp_path / "no" / "such" / "m.npz"
    with pytest.raises(FileNotFoundError, match="m.npz") as e:
        model.save(target)
    assert ".tmp" not in str(e.value) and "no such directory" in str(e.value)
    with pytest.raises(IsADirectoryError, match="is a directory"):
        model.save(tmp_path)


def test_compare_without_numba_cuda_says_so_in_one_line(monkeypatch, capsys):
    from numbanet import _cuda, compare
    monkeypatch.setattr(_cuda, "cuda", None)
    monkeypatch.setattr(_cuda, "_import_error",
                        ImportError(f"numba-cuda is not installed; {_cuda.INSTALL_HINT}"))
    assert not nb.cuda_available()
    assert 'pip install "numbanet[cuda]"' in _cuda.unavailable_reason()

    class Args:
        resources, ops, size, repeat, dtype, json = True, "elementwise", "small", 1, \
            "float32", False
    assert compare.main(Args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "numbanet[cuda]" in err
    Args.resources = False
    assert compare.main(Args) == 0
    captured = capsys.readouterr()
    assert "numbanet[cuda]" in captured.err and "Timing the CPU kernels only" in captured.err
    assert "sum_squares" in captured.out and "CUDA columns are empty" in captured.out


def test_idx_sizes_are_computed_without_overflow(tmp_path):
    from numbanet.datasets import read_idx
    for dims, name in (((2**32 - 1,) * 3, "huge.idx"), ((2**32 - 1, 0), "empty.idx"),
                       ((2**16, 2**16, 2**16, 2**16), "wraps.idx")):
        header = bytes([0, 0, 0x08, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
        (tmp_path / name).write_bytes(header + b"\x01\x02")
        with pytest.raises(ValueError, match=rf"{name}.*needs [0-9,]+ data bytes, found 2"):
            read_idx(tmp_path / name)


def test_poisson_refuses_negative_counts():
    """Poisson's targets are counts (or rates): a negative one is named with its index."""
    model = nb.Sequential([nb.layers.Dense(1, activation="softplus")], input_shape=(2,))
    model.compile("adam", "poisson")
    y = np.array([[1.0], [-2.0], [0.0]])
    with pytest.raises(ValueError, match=r"Poisson: targets must lie in \[0, inf\], got -2 at "
                                         r"index \(1, 0\)"):
        model.fit(np.ones((3, 2)), y, epochs=1, verbose=0)
    model.fit(np.ones((3, 2)), np.abs(y), epochs=1, verbose=0)     # counts train


def test_model_and_compile_from_config_reject_what_is_not_a_config():
    """model_from_config / compile_from_config name what they expected and what they got."""
    import numbanet as nb
    from numbanet.models import compile_from_config, model_from_config
    with pytest.raises(TypeError, match="model_from_config: expected the dict .* got list"):
        model_from_config([1, 2])
    model = nb.Sequential([nb.layers.Dense(2)], input_shape=(3,))
    with pytest.raises(ValueError, match="compile_from_config: expected a dict with an "
                                         "'optimizer' entry .*'loss': 'mse'"):
        compile_from_config(model, {"loss": "mse"})
