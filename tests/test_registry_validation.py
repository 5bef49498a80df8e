"""The one registry mechanism and the one set of argument checks of the user-facing API."""
import inspect
import json

import numpy as np
import pytest

import numbanet as nb
from numbanet import validation as V
from numbanet.registry import Configurable, Registry


# ---------------------------------------------------------------------------------- validation
@pytest.mark.parametrize("spec, value, ok", [
    (V.Number(low=0, low_open=True), 0.5, 0.5),
    (V.Number(low=0, high=1, high_open=True), 0, 0.0),
    (V.Integer(1), np.int64(3), 3),
    (V.FLAG, np.bool_(True), True),
    (V.OneOf("min", "max"), "max", "max"),
    (V.Number(optional=True), None, None),
    (V.Path(), "a/b", "a/b"),
])
def test_specs_return_the_checked_value(spec, value, ok):
    got = spec(value, "x", "Owner")
    assert got == ok and type(got) is type(ok)


@pytest.mark.parametrize("spec, value, rule", [
    (V.Number(low=0, low_open=True), 0, "a finite number > 0"),
    (V.Number(low=0, high=1, high_open=True), 1.0, "a finite number >= 0 and < 1"),
    (V.Number(), float("nan"), "a finite number"),
    (V.Number(), True, "a finite number"),
    (V.Integer(1), 2.0, "a positive integer"),
    (V.Integer(0), -1, "a non-negative integer"),
    (V.Integer(2), True, "an integer >= 2"),
    (V.FLAG, 1, "True or False"),
    (V.OneOf(0, 1), True, "one of 0, 1"),
    (V.OneOf("min", "max"), "mean", "one of 'min', 'max'"),
    (V.Text(optional=True), "", "None or a non-empty string"),
])
def test_errors_name_owner_argument_expected_and_received(spec, value, rule):
    with pytest.raises(ValueError) as plain:
        spec(value, "arg", "Thing")
    assert str(plain.value) == f"Thing: arg must be {rule}, got {value!r}"
    with pytest.raises(ValueError) as keras:
        spec(value, "arg", V.KerasOwner("Thing"))
    assert str(keras.value) == f"Thing: `arg` must be {rule}; received arg={value!r}"


def test_one_message_form_per_family():
    with pytest.raises(ValueError, match=r"^Huber: delta must be a finite number > 0, got -1$"):
        nb.losses.Huber(delta=-1)
    with pytest.raises(ValueError, match=r"^Adam: `beta_2` must be a finite number >= 0 and < 1; "
                                         r"received beta_2=1$"):
        nb.optimizers.Adam(beta_2=1)
    with pytest.raises(ValueError, match=r"^StepDecay: `step_size` .*received step_size=0$"):
        nb.schedules.StepDecay(0.1, 0)
    with pytest.raises(ValueError, match=r"^Recall: `average` must be one of 'macro', 'micro', "
                                         r"'weighted'; received average='mean'$"):
        nb.metrics.Recall(average="mean")
    with pytest.raises(ValueError, match=r"^EarlyStopping: `mode` must be one of"):
        nb.callbacks.EarlyStopping(mode="up")
    with pytest.raises(ValueError, match=r"^Dense: trainable must be True or False, got 1$"):
        nb.layers.Dense(2, name="d", trainable=1)


def test_sample_weights_check():
    np.testing.assert_array_equal(V.sample_weights("f", [[1], [2]], 2), [1.0, 2.0])
    with pytest.raises(ValueError, match=r"f: sample_weight must have shape \(3,\), got \(2,\)"):
        V.sample_weights("f", [1, 2], 3)
    with pytest.raises(ValueError, match=r"f: sample_weight must be finite and >= 0 \(non-negative\)"):
        V.sample_weights("f", [1, -2], 2)
    with pytest.raises(ValueError, match="f: sample_weight must be numeric"):
        V.sample_weights("f", ["a", None], 2)


# ------------------------------------------------------------------------------------ registry
class _Thing(Configurable):
    def __init__(self, size=1, name=None):
        self.size, self.name = size, name


def test_registry_gets_instances_names_and_configs():
    reg = Registry("thing", _Thing, hint="; register it first")
    reg.register(_Thing, "thing", "t")
    reg.register(_Thing, "big", size=9)
    inst = _Thing(3)
    assert reg.get(inst) is inst
    assert type(reg.get("T")) is _Thing and reg.get("BIG").size == 9
    again = reg.get({"class_name": "_Thing", "config": {"size": 4, "name": "n"}})
    assert again.get_config() == {"size": 4, "name": "n"}
    assert reg.known() == ["big", "t", "thing"]
    with pytest.raises(ValueError, match="unknown thing 'x'; valid names are big, t, thing$"):
        reg.get("x")
    with pytest.raises(ValueError, match="unknown thing 'Nope'; known: _Thing; register it"):
        reg.deserialize({"class_name": "Nope"})
    with pytest.raises(ValueError, match="bad thing entry"):
        reg.deserialize(["_Thing"])
    with pytest.raises(ValueError, match="config of thing '_Thing' must be a dict"):
        reg.deserialize({"class_name": "_Thing", "config": [1]})


@pytest.mark.parametrize("module, name", [
    (nb.losses, "mse"), (nb.optimizers, "adam"), (nb.metrics, "accuracy"),
])
def test_families_share_the_registry(module, name):
    obj = module.get(name)
    entry = {"class_name": type(obj).__name__, "config": obj.get_config()}
    assert module.REGISTRY.deserialize(json.loads(json.dumps(entry))).get_config() == \
        obj.get_config()
    assert module.get(name.upper()).get_config() == obj.get_config()
    with pytest.raises(ValueError, match="valid names are"):
        module.get("no-such-name")


def test_layers_and_schedules_registries():
    assert nb.layers.get("Dense") is nb.layers.Dense
    with pytest.raises(ValueError, match=r"unknown layer 'Dens'.*nb.layers.register\(MyLayer\)"):
        nb.layers.get("Dens")
    s = nb.schedules.deserialize(nb.schedules.serialize(nb.schedules.StepDecay(0.1, 5)))
    assert s.get_config() == {"initial_learning_rate": 0.1, "step_size": 5, "gamma": 0.1}


# ------------------------------------------------------------------ declarations and configs
def test_declared_losses_have_signatures_and_configs_from_them():
    sig = inspect.signature(nb.losses.Tversky)
    assert list(sig.parameters) == ["alpha", "beta", "smooth", "name", "reduction"]
    loss = nb.losses.Tversky(0.2, 0.8, name="t")
    assert loss.get_config() == {"alpha": 0.2, "beta": 0.8, "smooth": 1e-7, "name": "t",
                                 "reduction": "sum_over_batch_size"}
    assert list(inspect.signature(nb.losses.BinaryCrossentropy).parameters) == \
        ["from_logits", "class_weight", "name", "reduction"]
    with pytest.raises(TypeError, match="Huber"):
        nb.losses.Huber(1.0, "h", 3)


def test_declared_optimizers_have_signatures_and_configs_from_them():
    sig = inspect.signature(nb.optimizers.AdamW)
    assert list(sig.parameters)[:3] == ["learning_rate", "weight_decay", "beta_1"]
    opt = nb.optimizers.AdamW(0.01, 0.1, clipnorm=1.0)
    config = opt.get_config()
    assert config["learning_rate"] == 0.01 and config["weight_decay"] == 0.1
    assert config["clipnorm"] == 1.0
    assert nb.optimizers.AdamW.from_config(config).get_config() == config
    assert nb.optimizers.AMSBound().amsbound and "amsbound" not in nb.optimizers.AMSBound(
        ).get_config()


def test_a_new_pointwise_loss_is_a_declaration(rng):
    class Scaled(nb.losses.Loss):       # MSE's kernel, a loss of its own (no call())
        kernel = "mse"
    y, p = rng.standard_normal((2, 5, 3))
    assert Scaled()(y, p) == pytest.approx(nb.losses.MeanSquaredError()(y, p))
    assert Scaled().get_config() == {"name": "Scaled", "reduction": "sum_over_batch_size"}


def test_class_weights_are_one_implementation(rng):
    cw = nb.losses.ClassWeights({0: 2.0, "2": 0.5}, "sparse", "fit")
    np.testing.assert_array_equal(cw.sample_weights(np.array([0, 1, 2, 3])), [2.0, 1.0, 0.5, 1.0])
    with pytest.raises(ValueError, match="fit: class_weight keys must be class indices >= 0, "
                                         "got -1"):
        nb.losses.ClassWeights({-1: 1.0}, "sparse", "fit")


def test_configs_leave_out_arguments_kept_under_no_attribute():
    class Scaled(nb.layers.Layer):
        def __init__(self, factor, **kwargs):
            super().__init__(**kwargs)
            self._f = factor
    assert Scaled(2.0, name="s").get_config() == {"name": "s", "dtype": None}

    class Kept(nb.layers.Layer):
        def __init__(self, factor, **kwargs):
            super().__init__(**kwargs)
            self.factor = factor
    assert Kept(2.0, name="k").get_config() == {"name": "k", "dtype": None, "factor": 2.0}


def test_class_names_are_names_too_as_in_keras():
    """A registered class's name works where its aliases do (Keras' get("MeanSquaredError")),
    and initializers take Keras' class names ("HeNormal") as their snake_case names."""
    assert type(nb.losses.get("MeanSquaredError")) is nb.losses.MeanSquaredError
    assert type(nb.losses.get("SparseCategoricalCrossentropy")) is \
        nb.losses.SparseCategoricalCrossentropy
    assert type(nb.metrics.get("Accuracy")) is type(nb.metrics.get("accuracy"))
    for camel, snake in [("HeNormal", "he_normal"), ("GlorotUniform", "glorot_uniform"),
                         ("TruncatedNormal", "truncated_normal"), ("Zeros", "zeros")]:
        assert nb.initializers.get(camel) is nb.initializers.get(snake)
    layer = nb.layers.Dense(3, kernel_initializer="LecunNormal")
    layer.build((4,))
    assert layer.params["kernel"].shape == (4, 3)
    for bad in ("MeanSquaredErr", "meansquarederror"):
        with pytest.raises(ValueError, match="unknown loss"):
            nb.losses.get(bad)
    with pytest.raises(ValueError, match="unknown initializer 'HeNormall'"):
        nb.initializers.get("HeNormall")
