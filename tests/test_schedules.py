"""Learning-rate schedules: the formulas, torch.optim.lr_scheduler, serialization, optimizers."""
import json
import math

import numpy as np
import pytest

import numbanet as nb
from numbanet import schedules as S


def rates(schedule, n):
    return [schedule(i) for i in range(n)]


def test_exponential_decay_formula():
    s = S.ExponentialDecay(0.1, decay_steps=4, decay_rate=0.5)
    for step in (0, 1, 3, 4, 7, 10, 1000):
        assert s(step) == pytest.approx(0.1 * 0.5 ** (step / 4), rel=1e-14)
    st = S.ExponentialDecay(0.1, decay_steps=4, decay_rate=0.5, staircase=True)
    assert rates(st, 10) == pytest.approx([0.1] * 4 + [0.05] * 4 + [0.025] * 2, rel=1e-14)
    assert isinstance(s(np.int64(3)), float)


def test_step_decay_formula():
    s = S.StepDecay(0.2, step_size=3, gamma=0.5)
    assert rates(s, 8) == pytest.approx([0.2] * 3 + [0.1] * 3 + [0.05] * 2, rel=1e-14)
    assert S.StepDecay(1.0, 1)(2) == pytest.approx(0.01, rel=1e-14)


def test_piecewise_constant_boundaries_are_inclusive_on_the_left_value():
    s = S.PiecewiseConstantDecay([2, 5], [1.0, 0.5, 0.1])
    # values[0] for step <= 2, values[1] for 2 < step <= 5, values[2] after.
    assert rates(s, 8) == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.1, 0.1]
    assert S.PiecewiseConstantDecay([], [0.3])(100) == 0.3


def test_cosine_decay_formula_and_clamp():
    s = S.CosineDecay(0.3, decay_steps=10, alpha=0.1)
    for step in range(15):
        t = min(step, 10)
        expected = 0.3 * (0.9 * 0.5 * (1 + math.cos(math.pi * t / 10)) + 0.1)
        assert s(step) == pytest.approx(expected, rel=1e-14)
    assert s(0) == pytest.approx(0.3)
    assert s(10) == pytest.approx(0.03) and s(50) == pytest.approx(0.03)
    assert S.CosineDecay(1.0, 4)(2) == pytest.approx(0.5, rel=1e-14)


def test_cosine_decay_warmup_keras3():
    s = S.CosineDecay(0.0, decay_steps=4, alpha=0.0, warmup_target=0.8, warmup_steps=4)
    # linear 0 -> 0.8 over 4 steps, then cosine from 0.8 down to 0 over the next 4
    assert rates(s, 4) == pytest.approx([0.0, 0.2, 0.4, 0.6], rel=1e-14)
    assert s(4) == pytest.approx(0.8, rel=1e-14)
    assert s(6) == pytest.approx(0.4, rel=1e-14)
    assert s(8) == pytest.approx(0.0, abs=1e-15) and s(20) == pytest.approx(0.0, abs=1e-15)
    w = S.CosineDecay(0.1, decay_steps=2, alpha=0.5, warmup_target=1.0, warmup_steps=3)
    assert w(1) == pytest.approx(0.1 + 0.9 / 3, rel=1e-14)
    assert w(4) == pytest.approx(1.0 * (0.5 * 0.5 + 0.5), rel=1e-14)
    assert w(9) == pytest.approx(0.5, rel=1e-14)


def torch_rates(make_scheduler, lr, n):
    torch = pytest.importorskip("torch")
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = make_scheduler(torch.optim.lr_scheduler, opt)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_against_torch_step_lr():
    ours = rates(S.StepDecay(0.3, step_size=4, gamma=0.3), 20)
    theirs = torch_rates(lambda m, o: m.StepLR(o, step_size=4, gamma=0.3), 0.3, 20)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)


def test_against_torch_exponential_lr():
    ours = rates(S.ExponentialDecay(0.5, decay_steps=1, decay_rate=0.8), 25)
    theirs = torch_rates(lambda m, o: m.ExponentialLR(o, gamma=0.8), 0.5, 25)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)


@pytest.mark.parametrize("alpha", [0.0, 0.25])
def test_against_torch_cosine_annealing(alpha):
    # torch keeps following the cosine past T_max; Keras (and numbanet) clamp: compare to T_max.
    ours = rates(S.CosineDecay(0.2, decay_steps=9, alpha=alpha), 10)
    theirs = torch_rates(lambda m, o: m.CosineAnnealingLR(o, T_max=9, eta_min=alpha * 0.2), 0.2, 10)
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-15)


ALL = [S.ExponentialDecay(0.1, 3, 0.9, staircase=True), S.StepDecay(0.05, 7, 0.5),
       S.PiecewiseConstantDecay([10, 20], [0.1, 0.01, 0.001]),
       S.CosineDecay(0.0, 50, alpha=0.05, warmup_target=0.1, warmup_steps=5)]


@pytest.mark.parametrize("schedule", ALL, ids=lambda s: type(s).__name__)
def test_serialize_round_trip_through_json(schedule):
    entry = json.loads(json.dumps(S.serialize(schedule)))
    assert entry["class_name"] == type(schedule).__name__
    again = S.deserialize(entry)
    assert type(again) is type(schedule) and again.get_config() == schedule.get_config()
    assert rates(again, 60) == rates(schedule, 60)
    assert type(schedule).from_config(schedule.get_config()).get_config() == schedule.get_config()
    assert type(schedule).__name__ in repr(schedule)


def test_serialize_rejects_plain_functions_and_unknown_entries():
    with pytest.raises(TypeError, match="plain function"):
        S.serialize(lambda step: 0.1)
    with pytest.raises(ValueError, match="unknown learning rate schedule 'Nope'.*CosineDecay"):
        S.deserialize({"class_name": "Nope", "config": {}})
    with pytest.raises(ValueError, match="class_name"):
        S.deserialize(["StepDecay"])


def test_register_makes_a_custom_schedule_savable():
    class Halving(S.LearningRateSchedule):
        def __init__(self, start):
            self.start = start

        def _rate(self, step):
            return self.start / 2 ** step

    with pytest.raises(TypeError, match="not registered"):
        S.serialize(Halving(1.0))
    S.register(Halving)
    try:
        again = S.deserialize(json.loads(json.dumps(S.serialize(Halving(1.0)))))
        assert again(3) == 0.125
    finally:
        del S.SCHEDULES["Halving"]


@pytest.mark.parametrize("make, arg", [
    (lambda: S.ExponentialDecay(0.0, 10, 0.5), "initial_learning_rate"),
    (lambda: S.ExponentialDecay(0.1, 0, 0.5), "decay_steps"),
    (lambda: S.ExponentialDecay(0.1, 2.5, 0.5), "decay_steps"),
    (lambda: S.ExponentialDecay(0.1, 10, -0.5), "decay_rate"),
    (lambda: S.ExponentialDecay(0.1, 10, 0.5, staircase="yes"), "staircase"),
    (lambda: S.StepDecay(float("nan"), 10), "initial_learning_rate"),
    (lambda: S.StepDecay(0.1, True), "step_size"),
    (lambda: S.StepDecay(0.1, 10, gamma=0), "gamma"),
    (lambda: S.PiecewiseConstantDecay([5, 5], [1, 2, 3]), "boundaries"),
    (lambda: S.PiecewiseConstantDecay([5], [1]), "values"),
    (lambda: S.PiecewiseConstantDecay([5], [1, -2]), r"values\[1\]"),
    (lambda: S.CosineDecay(0.1, 10, alpha=1.5), "alpha"),
    (lambda: S.CosineDecay(0.1, 10, warmup_steps=5), "warmup_target"),
    (lambda: S.CosineDecay(0.1, 10, warmup_target=0.0, warmup_steps=5), "warmup_target"),
    (lambda: S.CosineDecay(0.1, 10, warmup_target=1.0, warmup_steps=-1), "warmup_steps"),
])
def test_bad_arguments_name_the_argument(make, arg):
    with pytest.raises(ValueError, match=arg):
        make()


def test_bad_step():
    with pytest.raises(ValueError, match="step"):
        S.StepDecay(0.1, 2)(-1)
    with pytest.raises(ValueError, match="step"):
        S.StepDecay(0.1, 2)(float("nan"))


def test_optimizer_uses_the_schedule_at_each_step():
    schedule = S.PiecewiseConstantDecay([1, 3], [0.5, 0.1, 0.01])
    opt = nb.optimizers.SGD(learning_rate=schedule)
    p, g = np.zeros(3), np.ones(3)
    for _ in range(5):
        opt.step([p], [g.copy()])
    # SGD: p -= lr(iterations) * g with iterations 0..4 before each step
    np.testing.assert_allclose(p, -sum(schedule(i) for i in range(5)) * g, rtol=1e-14)
    assert opt.iterations == 5


def test_model_with_a_schedule_saves_and_loads(tmp_path, rng):
    model = nb.Sequential([nb.layers.Dense(3)], input_shape=(2,))
    schedule = S.ExponentialDecay(0.1, 5, 0.5)
    model.compile(nb.optimizers.SGD(learning_rate=schedule), "mse")
    try:
        model.optimizer.get_config()
    except TypeError:
        pytest.skip("optimizers.Optimizer.get_config does not serialize schedules (yet)")
    model.fit(rng.standard_normal((8, 2)), rng.standard_normal((8, 3)), epochs=2, batch_size=4,
              verbose=0)
    model.save(tmp_path / "m.npz")
    loaded = nb.load_model(tmp_path / "m.npz")
    lr = loaded.optimizer.learning_rate
    assert isinstance(lr, S.ExponentialDecay) and lr.get_config() == schedule.get_config()
    assert loaded.optimizer.iterations == 4
