"""numbanet.optimizers: trajectories against torch.optim, clipping, state round trip, validation."""
import json
import math

import numpy as np
import pytest

from numbanet import optimizers as O
from numbanet.backend import CPUBackend, get_backend

SHAPES = [(3,), (2, 3), (4, 1, 2), (1,), ()]

# Every configuration whose trajectory is checked (hyperparameters chosen away from the defaults
# where that exercises more of the formula).
CONFIGS = [
    (O.SGD, dict(learning_rate=0.05)),
    (O.SGD, dict(learning_rate=0.05, momentum=0.9)),
    (O.SGD, dict(learning_rate=0.05, momentum=0.9, nesterov=True)),
    (O.SGD, dict(learning_rate=0.05, momentum=0.5, nesterov=True, weight_decay=0.1)),
    (O.SGD, dict(learning_rate=0.05, weight_decay=0.1)),
    (O.Adagrad, dict(learning_rate=0.1)),
    (O.Adagrad, dict(learning_rate=0.1, initial_accumulator_value=0.0, epsilon=1e-3, weight_decay=0.05)),
    (O.RMSprop, dict(learning_rate=0.01)),
    (O.RMSprop, dict(learning_rate=0.01, rho=0.8, momentum=0.9)),
    (O.RMSprop, dict(learning_rate=0.01, centered=True)),
    (O.RMSprop, dict(learning_rate=0.01, rho=0.95, momentum=0.5, centered=True, weight_decay=0.01)),
    (O.Adam, dict(learning_rate=0.01)),
    (O.Adam, dict(learning_rate=0.01, amsgrad=True)),
    (O.Adam, dict(learning_rate=0.01, beta_1=0.5, beta_2=0.9, epsilon=1e-4, weight_decay=0.1)),
    (O.Adam, dict(learning_rate=0.01, amsgrad=True, weight_decay=0.1)),
    (O.AdamW, dict(learning_rate=0.01)),
    (O.AdamW, dict(learning_rate=0.01, weight_decay=0.1, amsgrad=True)),
    (O.AdamW, dict(learning_rate=0.01, weight_decay=0.0, beta_2=0.99)),
]
IDS = [f"{c.__name__}-" + "-".join(f"{k}={v}" for k, v in kw.items()) for c, kw in CONFIGS]


class Problem:
    """A few arrays of different shapes; grad = a * p + sin(3 p) + b (a > 0: a bumpy bowl)."""

    def __init__(self, dtype=np.float64, seed=0):
        rng = np.random.default_rng(seed)
        self.a = [rng.uniform(0.5, 2.0, s) for s in SHAPES]
        self.b = [rng.standard_normal(s) for s in SHAPES]
        self.init = [rng.standard_normal(s).astype(dtype) for s in SHAPES]

    def params(self):
        return [p.copy() for p in self.init]

    def grads(self, params):
        return [np.asarray(a * p + np.sin(3 * p) + b, dtype=np.asarray(p).dtype)
                for a, b, p in zip(self.a, self.b, params)]


def _torch_optimizer(torch, opt, tensors):
    """The torch.optim optimizer with exactly ``opt``'s hyperparameters."""
    c = opt.get_config()
    kw = dict(lr=c["learning_rate"], weight_decay=c["weight_decay"], foreach=False)
    if isinstance(opt, O.SGD):
        kw.update(momentum=c["momentum"], nesterov=c["nesterov"])
    elif isinstance(opt, O.Adagrad):
        kw.update(initial_accumulator_value=c["initial_accumulator_value"], eps=c["epsilon"])
    elif isinstance(opt, O.RMSprop):
        kw.update(alpha=c["rho"], eps=c["epsilon"], momentum=c["momentum"], centered=c["centered"])
    else:
        kw.update(betas=(c["beta_1"], c["beta_2"]), eps=c["epsilon"], amsgrad=c["amsgrad"])
    return getattr(torch.optim, type(opt).__name__)(tensors, **kw)


def _run_pair(torch, opt, problem, steps=50, torch_clip=None, scheduler=None):
    """Run ours and torch side by side; yield (step, ours, torch's) after every step."""
    params = problem.params()
    tensors = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    topt = _torch_optimizer(torch, opt, tensors)
    sched = scheduler(topt) if scheduler else None
    for k in range(steps):
        opt.step(params, problem.grads(params))
        for t, g in zip(tensors, problem.grads([t.detach().numpy() for t in tensors])):
            t.grad = torch.from_numpy(g.copy())
        if torch_clip:
            torch_clip(tensors)
        topt.step()
        if sched:
            sched.step()
        yield k, params, [t.detach().numpy() for t in tensors]


def _max_rel(got, want):
    scale = max(max(np.abs(w).max() for w in want), 1e-30)
    return max(np.abs(np.asarray(g, np.float64) - w).max() for g, w in zip(got, want)) / scale


@pytest.mark.parametrize("cls,kw", CONFIGS, ids=IDS)
def test_trajectory_matches_torch(cls, kw):
    torch = pytest.importorskip("torch")
    for k, ours, theirs in _run_pair(torch, cls(**kw), Problem()):
        assert _max_rel(ours, theirs) < 1e-12, f"step {k + 1}"


@pytest.mark.parametrize("cls,kw", CONFIGS, ids=IDS)
def test_float32_trajectory_matches_torch(cls, kw):
    torch = pytest.importorskip("torch")
    opt = cls(**kw)
    for k, ours, theirs in _run_pair(torch, opt, Problem(np.float32)):
        assert all(p.dtype == np.float32 for p in ours)
        assert _max_rel(ours, theirs) < 1e-5, f"step {k + 1}"
    assert all(a.dtype == np.float32 for n, a in opt.get_state().items() if n != "iterations")


def test_learning_rate_schedule_matches_torch_lambdalr():
    torch = pytest.importorskip("torch")
    decay = lambda k: 1.0 / (1.0 + 0.1 * k)                           # noqa: E731
    opt = O.Adam(learning_rate=lambda it: 0.05 * decay(it))
    opt_for_torch = O.Adam(learning_rate=0.05)                        # base lr for torch's copy
    pairs = _run_pair(torch, opt_for_torch, Problem(),
                      scheduler=lambda t: torch.optim.lr_scheduler.LambdaLR(t, decay))
    params = Problem().params()
    for k, _, theirs in pairs:
        opt.step(params, Problem().grads(params))
        assert _max_rel(params, theirs) < 1e-12, f"step {k + 1}"
    assert opt.iterations == 50


# ------------------------------------------------------------------------------ clipping
def _big_grads(dtype=np.float64):
    rng = np.random.default_rng(1)
    return [np.asarray(10 * rng.standard_normal(s), dtype=dtype) for s in SHAPES]


def _sgd_delta(grads, **clip):
    """The update of plain SGD with lr 1 from zeros: minus the clipped gradients."""
    params = [np.zeros(np.shape(g), np.asarray(g).dtype) for g in grads]
    O.SGD(learning_rate=1.0, **clip).step(params, [np.array(g) for g in grads])
    return [-p for p in params]


def test_clipnorm_per_array():
    grads, c = _big_grads(), 1.0
    got = _sgd_delta(grads, clipnorm=c)
    for g, d in zip(grads, got):                                      # Keras: g * c / max(|g|, c)
        np.testing.assert_allclose(d, g * c / max(np.linalg.norm(g), c), rtol=1e-12, atol=0)
    torch = pytest.importorskip("torch")
    for g, d in zip(grads, got):
        t = torch.zeros(g.shape, dtype=torch.float64, requires_grad=True)
        t.grad = torch.from_numpy(g.copy())
        torch.nn.utils.clip_grad_norm_([t], c)
        # torch divides by norm + 1e-6, so it differs from Keras by a factor 1 - 1e-6 / norm
        rtol = 1e-6 / np.linalg.norm(g) + 1e-12
        np.testing.assert_allclose(d, t.grad.numpy(), rtol=rtol, atol=0)


def test_global_clipnorm():
    grads, c = _big_grads(), 2.0
    got = _sgd_delta(grads, global_clipnorm=c)
    norm = math.sqrt(sum(float(np.sum(g * g)) for g in grads))
    for g, d in zip(grads, got):
        np.testing.assert_allclose(d, g * (c / norm), rtol=1e-12, atol=0)
    assert math.isclose(math.sqrt(sum(float(np.sum(d * d)) for d in got)), c, rel_tol=1e-12)
    torch = pytest.importorskip("torch")
    ts = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for t, g in zip(ts, grads):
        t.grad = torch.from_numpy(g.copy())
    torch.nn.utils.clip_grad_norm_(ts, c)
    for t, d in zip(ts, got):
        np.testing.assert_allclose(d, t.grad.numpy(), rtol=1e-6 / norm + 1e-12, atol=0)


def test_clipvalue_trajectory_matches_torch():
    torch = pytest.importorskip("torch")
    opt = O.SGD(learning_rate=0.05, momentum=0.9, clipvalue=0.5)
    clip = lambda ts: torch.nn.utils.clip_grad_value_(ts, 0.5)        # noqa: E731
    for k, ours, theirs in _run_pair(torch, opt, Problem(), torch_clip=clip):
        assert _max_rel(ours, theirs) < 1e-12, f"step {k + 1}"


@pytest.mark.parametrize("clip", [dict(clipnorm=1e3), dict(global_clipnorm=1e3), dict(clipvalue=1e3)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clipping_leaves_small_grads_alone(clip, dtype):
    grads = _big_grads(dtype)
    assert all(d.dtype == dtype for d in _sgd_delta(grads, **clip))
    for g, d in zip(grads, _sgd_delta(grads, **clip)):
        np.testing.assert_array_equal(d, g)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clipping_float32_and_float64(dtype):
    grads = _big_grads(dtype)
    want = _sgd_delta([g.astype(np.float64) for g in grads], global_clipnorm=1.0)
    got = _sgd_delta(grads, global_clipnorm=1.0)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    for g, w in zip(got, want):
        assert g.dtype == dtype
        np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * np.abs(w).max())


@pytest.mark.parametrize("clip", [dict(clipnorm=1.0), dict(global_clipnorm=1.0)])
def test_non_finite_norm_gives_nan_not_zero(clip):
    grads = _big_grads()
    grads[1][0, 0] = np.inf
    delta = _sgd_delta(grads, **clip)
    clipped = delta if "global_clipnorm" in clip else [delta[1]]
    assert all(np.isnan(d).all() for d in clipped)


def test_only_one_clipping_option():
    with pytest.raises(ValueError, match="only one of.*clipnorm=1.0.*clipvalue=0.5"):
        O.Adam(clipnorm=1.0, clipvalue=0.5)
    with pytest.raises(ValueError, match="only one of"):
        O.SGD(clipnorm=1.0, global_clipnorm=1.0)


# ------------------------------------------------------------------------------ state
@pytest.mark.parametrize("cls,kw", CONFIGS, ids=IDS)
def test_state_round_trip_resumes_identically(cls, kw, tmp_path):
    problem = Problem()
    straight, params = cls(**kw), problem.params()
    for _ in range(50):
        straight.step(params, problem.grads(params))

    first, resumed = cls(**kw), problem.params()
    for _ in range(20):
        first.step(resumed, problem.grads(resumed))
    np.savez(tmp_path / "opt.npz", **first.get_state())               # as a model's save would
    config = json.loads(json.dumps(first.get_config()))
    second = cls.from_config(config)
    assert second.get_config() == first.get_config()
    with np.load(tmp_path / "opt.npz") as saved:
        second.set_state(dict(saved))
    assert second.iterations == 20
    for _ in range(30):
        second.step(resumed, problem.grads(resumed))
    for a, b in zip(params, resumed):
        np.testing.assert_array_equal(a, b)
    state_a, state_b = straight.get_state(), second.get_state()
    assert state_a.keys() == state_b.keys()
    for name in state_a:
        np.testing.assert_array_equal(state_a[name], state_b[name])


def test_get_state_copies_and_names():
    opt, problem = O.Adam(amsgrad=True), Problem()
    params = problem.params()
    assert opt.get_state().keys() == {"iterations"}
    opt.step(params, problem.grads(params))
    state = opt.get_state()
    assert set(state) == {"iterations"} | {f"{s}/{i}" for s in ("m", "v", "vmax")
                                           for i in range(len(SHAPES))}
    assert state["iterations"] == 1 and state["iterations"].dtype == np.int64
    assert state["m/1"].shape == SHAPES[1]
    state["m/0"][...] = 123.0                                         # a copy, not the live buffer
    assert not np.any(opt.get_state()["m/0"] == 123.0)
    restored = O.Adam(amsgrad=True)
    restored.set_state(state)
    state["v/0"][...] = -1.0                                          # set_state copied too
    assert np.all(restored.get_state()["v/0"] >= 0)


def test_schedule_resumes_from_restored_iterations():
    problem, schedule = Problem(), (lambda it: 0.1 / (1 + it))
    straight, a = O.SGD(learning_rate=schedule, momentum=0.9), problem.params()
    for _ in range(10):
        straight.step(a, problem.grads(a))
    first, b = O.SGD(learning_rate=schedule, momentum=0.9), problem.params()
    for _ in range(4):
        first.step(b, problem.grads(b))
    second = O.SGD(learning_rate=schedule, momentum=0.9)
    second.set_state(first.get_state())
    for _ in range(6):
        second.step(b, problem.grads(b))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_set_state_errors():
    opt, problem = O.Adam(), Problem()
    params = problem.params()
    opt.step(params, problem.grads(params))
    state = opt.get_state()
    with pytest.raises(ValueError, match="unexpected key 'vmax/0'"):
        O.Adam().set_state({**state, "vmax/0": state["v/0"]})
    with pytest.raises(ValueError, match="lacks v/1"):
        O.Adam().set_state({k: v for k, v in state.items() if k != "v/1"})
    with pytest.raises(ValueError, match="iterations"):
        O.Adam().set_state({k: v for k, v in state.items() if k != "iterations"})
    with pytest.raises(ValueError, match="integer >= 0"):
        O.Adam().set_state({**state, "iterations": np.array(-1)})
    wrong = O.Adam()
    wrong.set_state({**state, "m/2": np.zeros((5,))})
    with pytest.raises(ValueError, match=r"m/2 has shape \(5,\).*params\[2\] has shape \(4, 1, 2\)"):
        wrong.step(params, problem.grads(params))
    with pytest.raises(ValueError, match="holds state for 5 parameters but step got 2"):
        opt.step(params[:2], problem.grads(params)[:2])


# ------------------------------------------------------------------------------ validation
BAD = [
    (O.SGD, "learning_rate", 0), (O.SGD, "learning_rate", -0.1), (O.SGD, "learning_rate", math.nan),
    (O.SGD, "learning_rate", math.inf), (O.SGD, "learning_rate", "0.1"), (O.SGD, "learning_rate", True),
    (O.SGD, "momentum", -0.1), (O.SGD, "nesterov", "yes"), (O.SGD, "weight_decay", -1e-4),
    (O.Adagrad, "initial_accumulator_value", -0.1), (O.Adagrad, "epsilon", -1e-7),
    (O.Adagrad, "weight_decay", math.nan),
    (O.RMSprop, "rho", 1.0), (O.RMSprop, "rho", -0.1), (O.RMSprop, "momentum", -1.0),
    (O.RMSprop, "epsilon", None), (O.RMSprop, "centered", 1),
    (O.Adam, "beta_1", 1.0), (O.Adam, "beta_2", 1.5), (O.Adam, "beta_2", -0.1),
    (O.Adam, "epsilon", math.nan), (O.Adam, "amsgrad", None), (O.Adam, "weight_decay", -0.1),
    (O.AdamW, "weight_decay", -0.004), (O.AdamW, "beta_1", 2),
    (O.Adam, "clipnorm", 0.0), (O.SGD, "clipvalue", -1.0), (O.RMSprop, "global_clipnorm", math.inf),
]


@pytest.mark.parametrize("cls,name,value", BAD, ids=[f"{c.__name__}-{n}={v!r}" for c, n, v in BAD])
def test_bad_hyperparameter_raises(cls, name, value):
    with pytest.raises(ValueError) as info:
        cls(**{name: value})
    assert f"{name}={value!r}" in str(info.value)


def test_nesterov_needs_momentum():
    with pytest.raises(ValueError, match="nesterov=True needs momentum > 0; received momentum=0"):
        O.SGD(nesterov=True)


def test_unknown_argument_is_a_type_error():
    with pytest.raises(TypeError):
        O.Adam(beta1=0.9)


def test_learning_rate_setter_and_schedule_validated():
    opt = O.SGD()
    opt.learning_rate = 0.5
    assert opt.learning_rate == 0.5 and opt.get_config()["learning_rate"] == 0.5
    with pytest.raises(ValueError, match="learning_rate=-1"):
        opt.learning_rate = -1
    problem = Problem()
    params = problem.params()
    bad = O.SGD(learning_rate=lambda it: 0.1 if it == 0 else -0.1)
    bad.step(params, problem.grads(params))
    with pytest.raises(ValueError, match=r"learning_rate.*iterations=1.*learning_rate=-0.1"):
        bad.step(params, problem.grads(params))
    assert bad.iterations == 1
    with pytest.raises(TypeError, match="cannot serialize"):               # a lambda cannot be saved
        bad.get_config()


def test_schedule_config_round_trip():
    from numbanet import schedules
    opt = O.Adam(learning_rate=schedules.CosineDecay(0.1, decay_steps=100), amsgrad=True)
    config = json.loads(json.dumps(opt.get_config()))
    assert config["learning_rate"]["class_name"] == "CosineDecay"
    again = O.Adam.from_config(config)
    assert isinstance(again.learning_rate, schedules.CosineDecay)
    assert again.get_config() == config
    problem = Problem()
    a, b = problem.params(), problem.params()
    for _ in range(5):
        opt.step(a, problem.grads(a))
        again.step(b, problem.grads(b))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_params_and_grads_validated():
    problem, opt = Problem(), O.SGD(momentum=0.9)
    params = problem.params()
    grads = problem.grads(params)
    with pytest.raises(ValueError, match="5 params but 4 grads"):
        opt.step(params, grads[:4])
    bad = list(grads)
    bad[2] = np.zeros((4, 2))
    with pytest.raises(ValueError, match=r"grads\[2\] has shape \(4, 2\).*expected shape \(4, 1, 2\)"):
        opt.step(params, bad)
    bad[2] = grads[2].astype(np.float32)
    with pytest.raises(ValueError, match=r"grads\[2\].*dtype float32.*dtype float64"):
        opt.step(params, bad)
    strided = [np.zeros((4, 6))[:, ::2]]
    with pytest.raises(ValueError, match=r"params\[0\] must be a writeable C-contiguous array"):
        O.SGD().step(strided, [np.ones((4, 3))])
    with pytest.raises(ValueError, match=r"params\[0\] must be a writeable"):
        O.SGD().step([np.float64(1.0)], [np.float64(1.0)])            # a scalar cannot be updated
    assert opt.iterations == 0 and opt.get_state().keys() == {"iterations"}


def test_params_are_views_updated_in_place():
    flat = np.linspace(-1, 1, 10)
    params = [flat[:6].reshape(2, 3), flat[6:]]
    opt = O.Adam(learning_rate=0.1)
    for _ in range(3):
        opt.step(params, [np.ones((2, 3)), np.ones(4)])
    assert np.shares_memory(params[0], flat) and np.shares_memory(params[1], flat)
    np.testing.assert_allclose(flat, np.linspace(-1, 1, 10) - 0.3, rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------ registry, backend
def test_registry():
    for name, cls in [("sgd", O.SGD), ("ADAGRAD", O.Adagrad), ("RMSprop", O.RMSprop),
                      ("adam", O.Adam), ("AdamW", O.AdamW)]:
        opt = O.get(name)
        assert type(opt) is cls and opt.iterations == 0
    inst = O.Adam(learning_rate=0.5)
    assert O.get(inst) is inst
    with pytest.raises(ValueError, match="unknown optimizer 'nadam'.*adagrad, adam, adamw, rmsprop, sgd"):
        O.get("nadam")
    with pytest.raises(ValueError, match="unknown optimizer 3"):
        O.get(3)


def test_register_a_new_optimizer():
    @O.register
    class SignSGD(O.SGD):
        pass
    try:
        assert type(O.get("signsgd")) is SignSGD
    finally:
        del O.OPTIMIZERS["signsgd"]


def test_defaults_and_config():
    assert O.SGD().get_config() == dict(learning_rate=0.01, momentum=0.0, nesterov=False,
                                        weight_decay=0.0, clipnorm=None, clipvalue=None,
                                        global_clipnorm=None)
    assert O.AdamW().get_config()["weight_decay"] == 0.004
    assert O.Adagrad().get_config()["initial_accumulator_value"] == 0.1
    opt = O.RMSprop(learning_rate=0.02, rho=0.5, momentum=0.1, epsilon=1e-6, centered=True,
                    weight_decay=0.2, global_clipnorm=3.0)
    again = O.RMSprop.from_config(json.loads(json.dumps(opt.get_config())))
    assert again.get_config() == opt.get_config() and again.global_clipnorm == 3.0


def test_kernels_run_through_the_backend():
    class Recording(CPUBackend):
        def __init__(self):
            super().__init__()
            self.calls = []
            for name in ("adamw_update", "sum_squares", "scale"):
                kernel = getattr(self, name)
                setattr(self, name, lambda *a, _k=kernel, _n=name: (self.calls.append(_n), _k(*a)))

    opt, problem = O.AdamW(global_clipnorm=0.1), Problem()
    assert opt.backend is get_backend("cpu")
    params = problem.params()
    opt.step(params, problem.grads(params))
    rec = Recording()
    opt.backend = rec                                                  # state moves along
    opt.step(params, problem.grads(params))
    n = len(SHAPES)
    assert rec.calls == ["sum_squares"] * n + ["scale"] * n + ["adamw_update"] * n
