"""numbanet.optimizers: trajectories against torch.optim, clipping, state round trip, validation."""
import json
import math
import re
import warnings

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
                      ("adam", O.Adam), ("AdamW", O.AdamW), ("adadelta", O.Adadelta),
                      ("Nadam", O.Nadam), ("adamax", O.Adamax), ("radam", O.RAdam),
                      ("adabound", O.AdaBound), ("AMSBound", O.AMSBound), ("lbfgs", O.LBFGS),
                      ("Lion", O.Lion)]:
        opt = O.get(name)
        assert type(opt) is cls and opt.iterations == 0
    inst = O.Adam(learning_rate=0.5)
    assert O.get(inst) is inst
    ams = O.get("AMSGrad")                                   # AMSGrad is Adam(amsgrad=True)
    assert type(ams) is O.Adam and ams.amsgrad and O.get("amsgrad") is not ams
    assert not O.AdaBound().amsbound and O.AMSBound().amsbound
    with pytest.raises(ValueError, match="unknown optimizer 'adafactor'.*adabound, adadelta, "
                       "adagrad, adam, adamax, adamw, amsbound, amsgrad, lbfgs, lion, nadam, radam, "
                       "rmsprop, sgd$"):
        O.get("adafactor")
    with pytest.raises(ValueError, match="'lookahead'.*wraps another optimizer.*Lookahead\\(optimizer\\)"):
        O.get("lookahead")
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


# ==================================================================================================
# Adadelta, Nadam, Adamax, RAdam (torch.optim), AdaBound/AMSBound, Lookahead, L-BFGS
# ==================================================================================================
TORCH_NEW = [
    (O.Adadelta, dict(learning_rate=1.0, rho=0.9, epsilon=1e-6)),          # torch's defaults
    (O.Adadelta, dict(learning_rate=0.5, rho=0.95, epsilon=1e-7, weight_decay=0.1)),
    (O.Nadam, dict(learning_rate=0.01)),
    (O.Nadam, dict(learning_rate=0.02, beta_1=0.8, beta_2=0.99, epsilon=1e-4,
                   momentum_decay=0.01, weight_decay=0.1)),
    (O.Adamax, dict(learning_rate=0.01)),
    (O.Adamax, dict(learning_rate=0.02, beta_1=0.5, beta_2=0.9, epsilon=1e-3, weight_decay=0.1)),
    (O.RAdam, dict(learning_rate=0.01)),
    (O.RAdam, dict(learning_rate=0.02, beta_1=0.8, beta_2=0.9, epsilon=1e-4, weight_decay=0.1)),
]
TORCH_NEW_IDS = [f"{c.__name__}-" + "-".join(f"{k}={v}" for k, v in kw.items()) for c, kw in TORCH_NEW]
_TORCH_NAMES = {O.Adadelta: "Adadelta", O.Nadam: "NAdam", O.Adamax: "Adamax", O.RAdam: "RAdam"}


@pytest.fixture
def torch64():
    """torch with float64 as the default dtype, so its scalar optimizer state (step, NAdam's
    mu_product) is float64 as ours is; with the float32 default NAdam's mu_product is rounded to
    float32 every step (see test_nadam_with_torch_float32_scalars)."""
    torch = pytest.importorskip("torch")
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield torch
    torch.set_default_dtype(old)


def _torch_new(torch, opt, tensors):
    c = opt.get_config()
    kw = dict(lr=c["learning_rate"], eps=c["epsilon"], weight_decay=c["weight_decay"], foreach=False)
    if isinstance(opt, O.Adadelta):
        kw["rho"] = c["rho"]
    else:
        kw["betas"] = (c["beta_1"], c["beta_2"])
    if isinstance(opt, O.Nadam):
        kw["momentum_decay"] = c["momentum_decay"]
    return getattr(torch.optim, _TORCH_NAMES[type(opt)])(tensors, **kw)


def _trajectory_pair(torch, opt, problem, make_torch, steps=50):
    params = problem.params()
    tensors = [torch.tensor(p.copy(), requires_grad=True) for p in params]   # params' dtype
    topt = make_torch(torch, opt, tensors)
    for k in range(steps):
        opt.step(params, problem.grads(params))
        for t, g in zip(tensors, problem.grads([t.detach().numpy() for t in tensors])):
            t.grad = torch.from_numpy(g.copy())
        topt.step()
        yield k, params, [t.detach().numpy() for t in tensors]


@pytest.mark.parametrize("cls,kw", TORCH_NEW, ids=TORCH_NEW_IDS)
def test_new_trajectory_matches_torch(cls, kw, torch64):
    for k, ours, theirs in _trajectory_pair(torch64, cls(**kw), Problem(), _torch_new):
        assert _max_rel(ours, theirs) < 1e-12, f"step {k + 1}"


@pytest.mark.parametrize("cls,kw", TORCH_NEW, ids=TORCH_NEW_IDS)
def test_new_float32_trajectory_as_accurate_as_torch(cls, kw, torch64):
    """float32 runs of ours and of torch, each against the exact (float64) trajectory: ours stays
    within 1e-5 of it, or at worst 1.5x torch's own float32 error. (Adamax with beta_2 = 0.9 on
    this bumpy problem amplifies float32 rounding to ~2e-5 in 50 steps, in torch as in ours.)"""
    exact = [[np.array(p) for p in t] for _, _, t in
             _trajectory_pair(torch64, cls(**kw), Problem(), _torch_new)]
    opt, ours_err, torch_err = cls(**kw), 0.0, 0.0
    for k, ours, theirs in _trajectory_pair(torch64, opt, Problem(np.float32), _torch_new):
        assert all(p.dtype == np.float32 for p in ours)
        ours_err = max(ours_err, _max_rel(ours, exact[k]))
        torch_err = max(torch_err, _max_rel(theirs, exact[k]))
        assert ours_err < max(1e-5, 1.5 * torch_err), f"step {k + 1}"
    assert all(a.dtype == np.float32 for n, a in opt.get_state().items()
               if n not in ("iterations", "mu_product"))


def test_nadam_with_torch_float32_scalars():
    """torch's default (float32) dtype keeps NAdam's mu_product in float32: 1e-6 relative."""
    torch = pytest.importorskip("torch")
    assert torch.get_default_dtype() == torch.float32
    for k, ours, theirs in _trajectory_pair(torch, O.Nadam(learning_rate=0.01), Problem(),
                                            _torch_new):
        assert _max_rel(ours, theirs) < 1e-6, f"step {k + 1}"


def test_new_schedules_match_torch_lambdalr(torch64):
    torch = torch64
    decay = lambda k: 1.0 / (1.0 + 0.1 * k)                           # noqa: E731
    for cls in (O.Adadelta, O.Nadam, O.Adamax, O.RAdam):
        opt = cls(learning_rate=lambda it: 0.05 * decay(it))
        params = Problem().params()
        pairs = _trajectory_pair(torch, cls(learning_rate=0.05), Problem(), lambda t, o, ts: (
            _Sched(torch, _torch_new(t, o, ts), decay)))
        for k, _, theirs in pairs:
            opt.step(params, Problem().grads(params))
            assert _max_rel(params, theirs) < 1e-12, f"{cls.__name__} step {k + 1}"


class _Sched:
    """A torch optimizer whose step() also steps a LambdaLR scheduler."""

    def __init__(self, torch, topt, fn):
        self.topt, self.sched = topt, torch.optim.lr_scheduler.LambdaLR(topt, fn)

    def step(self):
        self.topt.step()
        self.sched.step()


# ------------------------------------------------------------------------------ AdaBound / AMSBound
class NumpyAdaBound:
    """Luo et al.'s reference AdaBound/AMSBound step, written out with NumPy (float64)."""

    def __init__(self, lr, final_lr=0.1, betas=(0.9, 0.999), gamma=1e-3, eps=1e-8,
                 weight_decay=0.0, amsbound=False):
        self.lr, self.base_lr, self.final_lr = lr, lr, final_lr
        self.betas, self.gamma, self.eps = betas, gamma, eps
        self.weight_decay, self.amsbound, self.t, self.state = weight_decay, amsbound, 0, None

    def step(self, params, grads):
        if self.state is None:
            self.state = [dict(m=np.zeros(np.shape(p)), v=np.zeros(np.shape(p)),
                               vmax=np.zeros(np.shape(p))) for p in params]
        self.t += 1
        b1, b2 = self.betas
        out = []
        for p, g, s in zip(params, grads, self.state):
            g = g + self.weight_decay * p
            s["m"] = b1 * s["m"] + (1 - b1) * g
            s["v"] = b2 * s["v"] + (1 - b2) * g * g
            if self.amsbound:
                s["vmax"] = np.maximum(s["vmax"], s["v"])
                denom = np.sqrt(s["vmax"]) + self.eps
            else:
                denom = np.sqrt(s["v"]) + self.eps
            step_size = self.lr * np.sqrt(1 - b2 ** self.t) / (1 - b1 ** self.t)
            final_lr = self.final_lr * self.lr / self.base_lr
            lower = final_lr * (1 - 1 / (self.gamma * self.t + 1))
            upper = final_lr * (1 + 1 / (self.gamma * self.t))
            out.append(p - np.clip(step_size / denom, lower, upper) * s["m"])
        return out


ADABOUND = [
    (O.AdaBound, dict(learning_rate=0.01), {}),
    (O.AdaBound, dict(learning_rate=0.02, final_lr=0.05, beta_1=0.8, beta_2=0.99, gamma=0.05,
                      epsilon=1e-6, weight_decay=0.1), dict(final_lr=0.05, betas=(0.8, 0.99),
                                                            gamma=0.05, eps=1e-6, weight_decay=0.1)),
    (O.AMSBound, dict(learning_rate=0.01), dict(amsbound=True)),
    (O.AdaBound, dict(learning_rate=0.01, gamma=0.1, amsbound=True), dict(gamma=0.1, amsbound=True)),
]


@pytest.mark.parametrize("cls,kw,ref_kw", ADABOUND,
                         ids=[f"{c.__name__}-{i}" for i, (c, _, _) in enumerate(ADABOUND)])
def test_adabound_trajectory_matches_reference_rule(cls, kw, ref_kw):
    problem = Problem()
    opt, ref_opt = cls(**kw), NumpyAdaBound(kw["learning_rate"], **ref_kw)
    ours, theirs = problem.params(), problem.params()
    for k in range(50):
        opt.step(ours, problem.grads(ours))
        theirs = ref_opt.step(theirs, problem.grads(theirs))
        assert _max_rel(ours, theirs) < 1e-12, f"step {k + 1}"
    assert opt.iterations == 50


def test_adabound_final_lr_follows_a_changed_learning_rate(tmp_path):
    """A callback setting learning_rate (ReduceLROnPlateau) scales final_lr by lr / base_lr, the
    base being the rate at construction, which the state keeps across save and load."""
    problem = Problem()
    opt, ref_opt = O.AdaBound(learning_rate=0.01, gamma=0.1), NumpyAdaBound(0.01, gamma=0.1)
    ours, theirs = problem.params(), problem.params()
    for k in range(30):
        if k == 10:
            opt.learning_rate = ref_opt.lr = 0.002
        if k == 20:
            state, config = opt.get_state(), opt.get_config()
            assert state["base_lr"] == 0.01 and config["learning_rate"] == 0.002
            opt = O.AdaBound.from_config(config)
            opt.set_state(state)
        opt.step(ours, problem.grads(ours))
        theirs = ref_opt.step(theirs, problem.grads(theirs))
        assert _max_rel(ours, theirs) < 1e-12, f"step {k + 1}"


def test_adabound_bounds_bind_and_follow_a_schedule():
    """A schedule scales final_lr by lr_t / lr_0 (the reference's lr-scheduler workaround); with
    bounds this tight every coordinate moves by about final_lr * |m|."""
    problem = Problem()
    schedule = lambda it: 0.01 * 0.9 ** it                            # noqa: E731
    opt = O.AdaBound(learning_rate=schedule, final_lr=0.1, gamma=0.5)
    ref_opt = NumpyAdaBound(0.01, final_lr=0.1, gamma=0.5)
    ours, theirs = problem.params(), problem.params()
    for k in range(50):
        opt.step(ours, problem.grads(ours))
        ref_opt.lr = schedule(k)
        theirs = ref_opt.step(theirs, problem.grads(theirs))
        assert _max_rel(ours, theirs) < 1e-12, f"step {k + 1}"
    # rate = step_size / denom would be ~lr / |g|: far from final_lr; the bounds decided it
    g = problem.grads(ours)
    before = [np.array(p) for p in ours]
    state = opt.get_state()
    opt.step(ours, g)
    lr_t, t = schedule(50), 51
    f = 0.1 * lr_t / 0.01
    m = [0.9 * state[f"m/{i}"] + 0.1 * np.asarray(gi) for i, gi in enumerate(g)]
    for p, b, mi in zip(ours, before, m):
        rate = np.abs(b - p) / np.abs(mi)
        assert np.all(rate >= f * (1 - 1 / (0.5 * t + 1)) * (1 - 1e-12))
        assert np.all(rate <= f * (1 + 1 / (0.5 * t)) * (1 + 1e-12))


# ------------------------------------------------------------------------------ Lookahead
def _numpy_lookahead(inner_step, params, grads_fn, k, alpha, steps):
    """Zhang et al.'s Lookahead around ``inner_step(params, grads) -> params`` (NumPy)."""
    slow = [np.array(p, np.float64) for p in params]
    fast = [np.array(p, np.float64) for p in params]
    for t in range(1, steps + 1):
        fast = inner_step(fast, grads_fn(fast))
        if t % k == 0:
            slow = [s + alpha * (f - s) for s, f in zip(slow, fast)]
            fast = [s.copy() for s in slow]
        yield t, fast


def _numpy_sgd_momentum(lr, momentum):
    bufs = {}

    def step(params, grads):
        out = []
        for i, (p, g) in enumerate(zip(params, grads)):
            bufs[i] = momentum * bufs[i] + g if i in bufs else np.array(g, np.float64)
            out.append(p - lr * bufs[i])
        return out
    return step


@pytest.mark.parametrize("k,alpha", [(5, 0.5), (3, 0.8), (1, 1.0), (7, 0.2)])
def test_lookahead_sgd_matches_numpy(k, alpha):
    problem = Problem()
    opt, params = O.Lookahead(O.SGD(learning_rate=0.05, momentum=0.9), k=k, alpha=alpha), problem.params()
    for t, want in _numpy_lookahead(_numpy_sgd_momentum(0.05, 0.9), problem.params(),
                                    problem.grads, k, alpha, 50):
        opt.step(params, problem.grads(params))
        assert _max_rel(params, want) < 1e-12, f"step {t}"
    assert opt.iterations == 50 and opt.optimizer.iterations == 50


def test_lookahead_adam_matches_torch_adam_with_manual_sync():
    torch = pytest.importorskip("torch")
    problem, k, alpha = Problem(), 4, 0.6
    opt, params = O.Lookahead(O.Adam(learning_rate=0.05, amsgrad=True), k=k, alpha=alpha), problem.params()
    tensors = [torch.tensor(p.copy(), requires_grad=True) for p in problem.params()]
    topt = torch.optim.Adam(tensors, lr=0.05, eps=1e-7, amsgrad=True, foreach=False)
    slow = [t.detach().clone() for t in tensors]
    for step in range(1, 51):
        opt.step(params, problem.grads(params))
        for t, g in zip(tensors, problem.grads([t.detach().numpy() for t in tensors])):
            t.grad = torch.from_numpy(g.copy())
        topt.step()
        if step % k == 0:
            with torch.no_grad():
                for s, t in zip(slow, tensors):
                    s.add_(alpha * (t - s))
                    t.copy_(s)
        assert _max_rel(params, [t.detach().numpy() for t in tensors]) < 1e-12, f"step {step}"


def test_lookahead_config_state_and_validation(tmp_path):
    inner = O.Nadam(learning_rate=0.01, global_clipnorm=2.0)
    opt = O.Lookahead(inner, k=3, alpha=0.25)
    config = json.loads(json.dumps(opt.get_config()))
    assert config == {"optimizer": {"class_name": "Nadam", "config": inner.get_config()},
                      "k": 3, "alpha": 0.25}
    again = O.Lookahead.from_config(config)
    assert type(again.optimizer) is O.Nadam and again.get_config() == config
    # hyperparameters and clipping are the inner optimizer's
    assert opt.learning_rate == 0.01 and opt.global_clipnorm == 2.0 and opt.clipnorm is None
    opt.learning_rate = 0.02
    assert inner.learning_rate == 0.02
    assert type(O.Lookahead("adamax").optimizer) is O.Adamax
    with pytest.raises(TypeError):
        O.Lookahead()                                                   # the inner one is required
    problem = Problem()
    params = problem.params()
    opt.step(params, problem.grads(params))
    state = opt.get_state()
    assert set(state) == ({"iterations", "inner/iterations", "inner/mu_product"}
                          | {f"slow/{i}" for i in range(len(SHAPES))}
                          | {f"inner/{s}/{i}" for s in ("m", "v") for i in range(len(SHAPES))})
    np.testing.assert_array_equal(state["slow/1"], problem.params()[1].reshape(-1))
    with pytest.raises(ValueError, match="unexpected key 'fast/0'"):
        O.Lookahead("adam").set_state({**state, "fast/0": state["slow/0"]})
    with pytest.raises(ValueError, match="slow weights \\[0, 2\\]"):
        O.Lookahead("nadam").set_state({"iterations": np.array(1), "slow/0": np.zeros(2),
                                        "slow/2": np.zeros(2), "inner/iterations": np.array(0),
                                        "inner/mu_product": np.array(1.0)})
    with pytest.raises(ValueError, match="holds state for 5 parameters but step got 2"):
        opt.step(params[:2], problem.grads(params)[:2])


BAD_LOOKAHEAD = [dict(k=0), dict(k=2.5), dict(k=True), dict(alpha=0.0), dict(alpha=1.5),
                 dict(alpha=math.nan), dict(optimizer="nosuch"), dict(optimizer="lookahead"),
                 dict(optimizer=3)]


@pytest.mark.parametrize("kw", BAD_LOOKAHEAD, ids=[repr(kw) for kw in BAD_LOOKAHEAD])
def test_lookahead_bad_arguments(kw):
    ((name, value),) = kw.items()
    with pytest.raises(ValueError) as info:
        O.Lookahead(**{"optimizer": "sgd", **kw})
    assert f"{name}={value!r}" in str(info.value)


def test_lookahead_cannot_wrap_lbfgs():
    with pytest.raises(ValueError, match="cannot wrap LBFGS"):
        O.Lookahead(O.LBFGS())


def test_lookahead_first_step_failure_leaves_no_state():
    problem = Problem()
    params, grads = problem.params(), problem.grads(problem.params())
    grads[1] = grads[1].astype(np.float32)
    opt = O.Lookahead("sgd")
    with pytest.raises(ValueError, match=r"grads\[1\]"):
        opt.step(params, grads)
    assert opt.get_state().keys() == {"iterations", "inner/iterations"}


# ------------------------------------------------------------------------------ state round trips
ROUND_TRIP = [
    (O.Adadelta, dict(learning_rate=1.0, weight_decay=0.01)),
    (O.Nadam, dict(learning_rate=0.01)),
    (O.Adamax, dict(learning_rate=0.01, weight_decay=0.01)),
    (O.RAdam, dict(learning_rate=0.01)),
    (O.AdaBound, dict(learning_rate=0.01, gamma=0.05)),
    (O.AMSBound, dict(learning_rate=0.01, clipnorm=1.0)),
    (O.Lion, dict(learning_rate=0.01, beta_1=0.8, weight_decay=0.1)),
    (O.Lookahead, dict(optimizer=O.Adam(learning_rate=0.01, amsgrad=True), k=3, alpha=0.5)),
    (O.Lookahead, dict(optimizer=O.Nadam(learning_rate=0.01, clipvalue=0.5), k=7)),
]


@pytest.mark.parametrize("cls,kw", ROUND_TRIP, ids=[f"{c.__name__}-{i}" for i, (c, _) in
                                                    enumerate(ROUND_TRIP)])
def test_new_state_round_trip_resumes_identically(cls, kw, tmp_path):
    problem = Problem()
    make = lambda: cls.from_config(json.loads(json.dumps(cls(**kw).get_config())))  # noqa: E731
    straight, params = make(), problem.params()
    for _ in range(50):
        straight.step(params, problem.grads(params))
    first, resumed = make(), problem.params()
    for _ in range(20):
        first.step(resumed, problem.grads(resumed))
    np.savez(tmp_path / "opt.npz", **first.get_state())
    second = cls.from_config(json.loads(json.dumps(first.get_config())))
    assert second.get_config() == first.get_config()
    with np.load(tmp_path / "opt.npz") as saved:
        second.set_state(dict(saved))
    for _ in range(30):
        second.step(resumed, problem.grads(resumed))
    for a, b in zip(params, resumed):
        np.testing.assert_array_equal(a, b)
    state_a, state_b = straight.get_state(), second.get_state()
    assert state_a.keys() == state_b.keys()
    for name in state_a:
        np.testing.assert_array_equal(state_a[name], state_b[name])


def test_nadam_state_needs_mu_product():
    opt, problem = O.Nadam(), Problem()
    params = problem.params()
    opt.step(params, problem.grads(params))
    state = opt.get_state()
    assert state["mu_product"].dtype == np.float64 and state["mu_product"] < 1
    with pytest.raises(ValueError, match="lacks 'mu_product'"):
        O.Nadam().set_state({k: v for k, v in state.items() if k != "mu_product"})
    with pytest.raises(ValueError, match="'mu_product' must be a float scalar"):
        O.Nadam().set_state({**state, "mu_product": np.ones(2)})


# ------------------------------------------------------------------------------ clipping
@pytest.mark.parametrize("cls", [O.Adadelta, O.Nadam, O.Adamax, O.RAdam, O.AdaBound])
@pytest.mark.parametrize("clip", [dict(clipnorm=0.5), dict(global_clipnorm=1.0), dict(clipvalue=0.2)])
def test_new_optimizers_clip_like_the_others(cls, clip):
    """Clipping happens before the update: same trajectory as clipping the gradients by hand."""
    problem = Problem()
    clipped, plain = cls(learning_rate=0.01, **clip), cls(learning_rate=0.01)
    a, b = problem.params(), problem.params()
    for _ in range(10):
        clipped.step(a, problem.grads(a))
        plain.step(b, _clip_by_hand(problem.grads(b), **clip))
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-13, atol=1e-15)


def _clip_by_hand(grads, clipnorm=None, global_clipnorm=None, clipvalue=None):
    if clipvalue is not None:
        return [np.clip(g, -clipvalue, clipvalue) for g in grads]
    if clipnorm is not None:
        return [g * min(1.0, clipnorm / np.linalg.norm(g)) for g in grads]
    norm = math.sqrt(sum(float(np.sum(g * g)) for g in grads))
    return [g * min(1.0, global_clipnorm / norm) for g in grads]


def test_lookahead_clips_through_its_inner_optimizer():
    problem = Problem()
    clipped = O.Lookahead(O.Adam(learning_rate=0.01, clipnorm=0.5), k=2)
    plain = O.Lookahead(O.Adam(learning_rate=0.01), k=2)
    a, b = problem.params(), problem.params()
    for _ in range(10):
        clipped.step(a, problem.grads(a))
        plain.step(b, _clip_by_hand(problem.grads(b), clipnorm=0.5))
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-13, atol=1e-15)


# ------------------------------------------------------------------------------ validation
BAD_NEW = [
    (O.Adadelta, "rho", 1.0), (O.Adadelta, "rho", -0.5), (O.Adadelta, "epsilon", 0.0),
    (O.Adadelta, "weight_decay", -1.0), (O.Adadelta, "learning_rate", 0),
    (O.Nadam, "beta_1", 1.0), (O.Nadam, "beta_2", -0.1), (O.Nadam, "momentum_decay", -0.004),
    (O.Nadam, "epsilon", math.inf), (O.Adamax, "beta_2", 1.2), (O.Adamax, "weight_decay", "0"),
    (O.RAdam, "beta_1", -0.1), (O.RAdam, "epsilon", -1e-8),
    (O.AdaBound, "final_lr", 0.0), (O.AdaBound, "gamma", 0.0), (O.AdaBound, "gamma", 1.0),
    (O.AdaBound, "amsbound", 1), (O.AMSBound, "beta_2", 1.0), (O.AMSBound, "clipvalue", 0.0),
    (O.Lion, "beta_1", 1.0), (O.Lion, "beta_2", -0.1), (O.Lion, "weight_decay", -1e-3),
    (O.Lion, "learning_rate", -1e-4),
    (O.LBFGS, "max_iter", 0), (O.LBFGS, "max_iter", 2.0), (O.LBFGS, "max_eval", 0),
    (O.LBFGS, "history_size", True), (O.LBFGS, "tolerance_grad", -1.0),
    (O.LBFGS, "tolerance_change", math.nan), (O.LBFGS, "line_search_fn", "armijo"),
    (O.LBFGS, "learning_rate", -1.0), (O.LBFGS, "clipnorm", 1.0), (O.LBFGS, "global_clipnorm", 1.0),
]


@pytest.mark.parametrize("cls,name,value", BAD_NEW, ids=[f"{c.__name__}-{n}={v!r}" for c, n, v in BAD_NEW])
def test_new_bad_hyperparameter_raises(cls, name, value):
    with pytest.raises(ValueError) as info:
        cls(**{name: value})
    assert f"{name}={value!r}" in str(info.value)


def test_new_defaults_and_config():
    assert O.Adadelta().get_config() == dict(learning_rate=0.001, rho=0.95, epsilon=1e-7,
                                             weight_decay=0.0, clipnorm=None, clipvalue=None,
                                             global_clipnorm=None)
    assert O.Nadam().get_config()["momentum_decay"] == 0.004
    assert O.AMSBound().get_config() == dict(learning_rate=0.001, final_lr=0.1, beta_1=0.9,
                                             beta_2=0.999, gamma=1e-3, epsilon=1e-8,
                                             weight_decay=0.0, clipnorm=None, clipvalue=None,
                                             global_clipnorm=None)
    assert O.LBFGS().get_config() == dict(learning_rate=1.0, max_iter=20, max_eval=25,
                                          tolerance_grad=1e-7, tolerance_change=1e-9,
                                          history_size=100, line_search_fn=None, clipnorm=None,
                                          clipvalue=None, global_clipnorm=None)
    assert O.Lion().get_config() == dict(learning_rate=1e-3, beta_1=0.9, beta_2=0.99,
                                         weight_decay=0.0, clipnorm=None, clipvalue=None,
                                         global_clipnorm=None)
    for cls in (O.Adadelta, O.Nadam, O.Adamax, O.RAdam, O.AdaBound, O.AMSBound, O.Lion, O.LBFGS):
        opt = cls()
        assert cls.from_config(json.loads(json.dumps(opt.get_config()))).get_config() == opt.get_config()


# ------------------------------------------------------------------------------ L-BFGS vs torch
def _quadratic(torch):
    rng = np.random.default_rng(3)
    q = np.linalg.qr(rng.standard_normal((6, 6)))[0]
    a = torch.tensor(q @ np.diag(np.geomspace(0.1, 20.0, 6)) @ q.T)
    b = torch.tensor(rng.standard_normal(6))
    return [rng.standard_normal(6)], lambda ts: 0.5 * ts[0] @ a @ ts[0] - b @ ts[0]


def _logistic(torch):
    """Logistic regression with a 0-d bias and a little L2 (weights (5,), bias ())."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((60, 5))
    y = torch.tensor((x @ rng.standard_normal(5) + 0.5 * rng.standard_normal(60) > 0) * 1.0)
    x = torch.tensor(x)

    def loss(ts):
        z = x @ ts[0] + ts[1]
        return torch.mean(torch.nn.functional.softplus(z) - y * z) + 0.005 * ts[0] @ ts[0]
    return [0.3 * np.ones(5), np.array(-0.2)], loss


def _bumpy(torch):
    """Problem's bumpy bowl (several arrays, one 0-d): grad = a p + sin(3 p) + b."""
    pr = Problem()
    a = [torch.tensor(v) for v in pr.a]
    b = [torch.tensor(v) for v in pr.b]
    return pr.params(), lambda ts: sum(torch.sum(0.5 * ai * t * t - torch.cos(3 * t) / 3 + bi * t)
                                       for ai, bi, t in zip(a, b, ts))


def _rosenbrock(torch):
    def loss(ts):
        x = ts[0]
        return torch.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)
    return [np.array([-1.2, 1.0, -0.5, 0.8])], loss


LBFGS_PROBLEMS = {"quadratic": _quadratic, "logistic": _logistic, "bumpy": _bumpy,
                  "rosenbrock": _rosenbrock}
LBFGS_CONFIGS = [
    dict(),
    dict(line_search_fn="strong_wolfe"),
    dict(learning_rate=1.0, max_iter=3, history_size=2),
    dict(learning_rate=0.5, max_iter=5, history_size=10),
    dict(learning_rate=0.25, history_size=20),
    dict(max_iter=2, history_size=3, line_search_fn="strong_wolfe"),
    dict(learning_rate=3.0, max_iter=5, history_size=2, line_search_fn="strong_wolfe"),
    dict(max_iter=6, max_eval=4, history_size=5, line_search_fn="strong_wolfe",
         tolerance_grad=1e-5, tolerance_change=1e-7),
]


def _closure(torch, fn, params, grads):
    """Our closure: the loss and gradients at ``params`` computed by torch autograd (float64)."""
    def closure():
        ts = [torch.tensor(p, dtype=torch.float64, requires_grad=True) for p in params]
        loss = fn(ts)
        loss.backward()
        for g, t in zip(grads, ts):
            g[...] = t.grad.numpy()
        return float(loss.detach())
    return closure


def _torch_lbfgs(torch, opt, tensors):
    c = opt.get_config()
    return torch.optim.LBFGS(tensors, lr=c["learning_rate"], max_iter=c["max_iter"],
                             max_eval=c["max_eval"], tolerance_grad=c["tolerance_grad"],
                             tolerance_change=c["tolerance_change"],
                             history_size=c["history_size"], line_search_fn=c["line_search_fn"])


@pytest.mark.parametrize("problem", list(LBFGS_PROBLEMS))
@pytest.mark.parametrize("kw", LBFGS_CONFIGS, ids=[repr(kw) for kw in LBFGS_CONFIGS])
def test_lbfgs_trajectory_matches_torch(problem, kw, torch64):
    """50 steps, float64, 1e-6 relative; the counters (n_iter, func_evals) agree exactly. Most
    runs agree to ~1e-12; the line search's cubic interpolation (f1 - f2 over a short bracket)
    amplifies last-bit differences of the dot products to at most ~3e-7 (bumpy, max_eval=4).
    Not compared: fixed steps well below 1 with a history of 2-3 pairs, where the iteration
    itself is expansive (a 1e-16 difference grows ~30x per step in torch against torch too)."""
    torch = torch64
    init, fn = LBFGS_PROBLEMS[problem](torch)
    params = [np.array(p, np.float64) for p in init]
    grads = [np.zeros_like(p) for p in params]
    opt = O.LBFGS(**kw)
    tensors = [torch.tensor(p.copy(), requires_grad=True) for p in init]
    topt = _torch_lbfgs(torch, opt, tensors)

    def tclosure():
        topt.zero_grad()
        loss = fn(tensors)
        loss.backward()
        return loss

    closure = _closure(torch, fn, params, grads)
    for k in range(50):
        ours = opt.step(params, grads, closure)
        theirs = float(topt.step(tclosure).detach())
        assert math.isclose(ours, theirs, rel_tol=1e-6), f"loss at step {k + 1}"
        assert _max_rel(params, [t.detach().numpy() for t in tensors]) < 1e-6, f"step {k + 1}"
        tstate = topt.state[tensors[0]]
        assert (opt.get_state()["n_iter"], opt.get_state()["func_evals"]) == \
            (tstate["n_iter"], tstate["func_evals"]), f"step {k + 1}"
    assert opt.iterations == 50


def test_lbfgs_line_search_paths_are_exercised(torch64, monkeypatch):
    """The torch comparisons above run the zoom phase, its 'too close to an end' correction, and
    the eval budget running out mid-search (so those branches are what torch does)."""
    seen = set()
    original = O._cubic_minimum

    def spy(*args, bounds=None):
        seen.add("bracketing" if bounds is not None else "zoom")
        return original(*args, bounds=bounds)
    monkeypatch.setattr(O, "_cubic_minimum", spy)
    torch = torch64
    for problem in ("rosenbrock", "bumpy"):
        for kw in LBFGS_CONFIGS:
            if kw.get("line_search_fn"):
                init, fn = LBFGS_PROBLEMS[problem](torch)
                params = [np.array(p, np.float64) for p in init]
                grads = [np.zeros_like(p) for p in params]
                opt = O.LBFGS(**kw)
                for _ in range(10):
                    opt.step(params, grads, _closure(torch, fn, params, grads))
    assert seen == {"bracketing", "zoom"}


def test_lbfgs_minimizes_in_float32():
    """float32 buffers work (the kernels accumulate reductions in float64) and reach the
    float64 optimum of the bumpy bowl to float32 accuracy."""
    torch = pytest.importorskip("torch")
    results = {}
    for dtype in (np.float32, np.float64):
        problem = Problem(dtype)
        params = problem.params()
        grads = [np.zeros_like(p) for p in params]

        def closure():
            for g, v in zip(grads, problem.grads(params)):
                g[...] = v
            return float(sum(np.sum(0.5 * a * np.asarray(p, np.float64) ** 2
                                    - np.cos(3 * np.asarray(p, np.float64)) / 3 + b * p)
                             for a, b, p in zip(problem.a, problem.b, params)))
        opt = O.LBFGS(line_search_fn="strong_wolfe", tolerance_grad=1e-5)
        for _ in range(5):
            opt.step(params, grads, closure)
        assert all(p.dtype == dtype for p in params)
        results[dtype] = (closure(), params)
    assert math.isclose(results[np.float32][0], results[np.float64][0], rel_tol=1e-6)
    assert _max_rel(results[np.float32][1], results[np.float64][1]) < 1e-4
    del torch


def test_lbfgs_state_round_trip_resumes_identically(tmp_path, torch64):
    torch = torch64
    init, fn = _rosenbrock(torch)
    kw = dict(max_iter=3, history_size=4, line_search_fn="strong_wolfe")

    def run(opt, params, steps):
        grads = [np.zeros_like(p) for p in params]
        for _ in range(steps):
            opt.step(params, grads, _closure(torch, fn, params, grads))

    straight, a = O.LBFGS(**kw), [np.array(p) for p in init]
    run(straight, a, 12)
    first, b = O.LBFGS(**kw), [np.array(p) for p in init]
    run(first, b, 5)
    state = first.get_state()
    assert {"d", "t", "H_diag", "prev_flat_grad", "prev_loss", "ro", "old_dirs/3",
            "old_stps/0"} <= set(state) and state["ro"].shape == (4,)
    np.savez(tmp_path / "lbfgs.npz", **state)
    second = O.LBFGS.from_config(json.loads(json.dumps(first.get_config())))
    with np.load(tmp_path / "lbfgs.npz") as saved:
        second.set_state(dict(saved))
    run(second, b, 7)
    np.testing.assert_array_equal(a[0], b[0])
    sa, sb = straight.get_state(), second.get_state()
    assert sa.keys() == sb.keys()
    for key in sa:
        np.testing.assert_array_equal(sa[key], sb[key])
    with pytest.raises(ValueError, match="unexpected key 'old_dirs/9'"):
        O.LBFGS().set_state({**state, "old_dirs/9": state["d"]})
    with pytest.raises(ValueError, match="lacks old_stps/2"):
        O.LBFGS().set_state({k: v for k, v in state.items() if k != "old_stps/2"})
    with pytest.raises(ValueError, match="lacks 'n_iter'"):
        O.LBFGS().set_state({"iterations": np.array(0)})


def test_lbfgs_needs_a_closure_and_a_float():
    opt, p, g = O.LBFGS(), np.ones(3), np.zeros(3)
    with pytest.raises(ValueError, match="needs a closure.*model_closure"):
        opt.step([p], [g])
    with pytest.raises(TypeError, match="must return the loss as a float"):
        opt.step([p], [g], lambda: "low")
    with pytest.raises(ValueError, match="one dtype"):
        opt.step([p, np.ones(2, np.float32)], [g, np.zeros(2, np.float32)], lambda: 0.0)
    assert opt.iterations == 0


def test_lbfgs_stops_at_once_on_a_flat_gradient():
    opt, p, g = O.LBFGS(), np.ones(3), np.zeros(3)
    calls = []
    loss = opt.step([p], [g], lambda: calls.append(1) or 2.5)
    assert loss == 2.5 and calls == [1] and opt.iterations == 1
    np.testing.assert_array_equal(p, 1.0)
    assert opt.get_state()["n_iter"] == 0 and "d" not in opt.get_state()


# ------------------------------------------------------------------------------ kernels via the backend
class _Recording(CPUBackend):
    def __init__(self, names):
        super().__init__()
        self.calls = []
        for name in names:
            kernel = getattr(self, name)
            setattr(self, name, lambda *a, _k=kernel, _n=name: (self.calls.append(_n), _k(*a)))


def test_new_optimizers_run_their_kernels_through_the_backend():
    names = ("adadelta_update", "nadam_update", "adamax_update", "radam_update",
             "adabound_update", "lion_update", "lookahead_update", "dot", "axpy", "abs_sum", "abs_max", "scale")
    problem = Problem()
    for opt, kernel in ((O.Adadelta(), "adadelta_update"), (O.Nadam(), "nadam_update"),
                        (O.Adamax(), "adamax_update"), (O.RAdam(), "radam_update"),
                        (O.AMSBound(), "adabound_update"), (O.Lion(), "lion_update")):
        opt.backend = rec = _Recording(names)
        params = problem.params()
        opt.step(params, problem.grads(params))
        assert rec.calls == [kernel] * len(SHAPES)
    opt = O.Lookahead(O.SGD(), k=2)
    params = problem.params()
    opt.step(params, problem.grads(params))
    opt.backend = rec = _Recording(names)                            # slow weights and inner move
    assert opt.optimizer.backend is rec
    opt.step(params, problem.grads(params))
    assert rec.calls == ["lookahead_update"] * len(SHAPES)
    opt = O.LBFGS(max_iter=3)
    opt.backend = rec = _Recording(names)
    params, grads = problem.params(), [np.zeros_like(p) for p in problem.params()]

    def closure():
        for g, v in zip(grads, problem.grads(params)):
            g[...] = v
        return 0.0
    opt.step(params, grads, closure)
    assert {"dot", "axpy", "abs_sum", "abs_max", "scale"} <= set(rec.calls)
    moved = _Recording(names)
    opt.backend = moved                                               # history moves along
    assert get_backend("cpu") is not moved


# ------------------------------------------------------------------------------ with a model
def _tiny_model(optimizer, seed=0):
    import numbanet as nb
    nb.seed(seed)
    model = nb.Sequential([nb.layers.Dense(8, activation="tanh"),
                           nb.layers.Dense(3, activation="softmax")], input_shape=(4,),
                          dtype="float64")
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    return model


def _tiny_data():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((40, 4))
    return x, (x[:, 0] + x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1)


@pytest.mark.parametrize("make", [lambda: O.Lookahead(O.Adam(learning_rate=0.01), k=3),
                                  lambda: O.Nadam(learning_rate=0.01),
                                  lambda: O.AMSBound(learning_rate=0.01, clipnorm=1.0),
                                  lambda: O.Lion(learning_rate=0.003, weight_decay=0.1)],
                         ids=["lookahead", "nadam", "amsbound-clipnorm", "lion"])
def test_model_save_load_resumes_new_optimizers(make, tmp_path):
    import numbanet as nb
    x, y = _tiny_data()
    straight = _tiny_model(make())
    straight.fit(x, y, epochs=4, batch_size=8, shuffle=False, verbose=0)
    model = _tiny_model(make())
    model.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
    model.save(tmp_path / "m.npz")
    loaded = nb.load_model(tmp_path / "m.npz")
    assert type(loaded.optimizer) is type(straight.optimizer)
    loaded.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
    for a, b in zip(straight.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_model_closure_trains_a_model_full_batch_with_lbfgs(tmp_path):
    import numbanet as nb
    x, y = _tiny_data()
    model = _tiny_model(O.LBFGS(line_search_fn="strong_wolfe", max_iter=10, history_size=5))
    closure = O.model_closure(model, x, y)
    start = model.evaluate(x, y)["loss"]
    losses = [model.optimizer.step(closure.params, closure.grads, closure) for _ in range(4)]
    assert losses[0] == pytest.approx(start, rel=1e-12)
    assert losses == sorted(losses, reverse=True) and model.evaluate(x, y)["loss"] < 0.5 * start
    # the closure's loss and gradient are the model's: check against finite differences
    w = model.get_weights()
    loss0 = closure()
    g = np.array(closure.grads[0])
    k, h = 5, 1e-6
    flat = closure.params[0]
    flat[k] += h
    up = closure()
    flat[k] -= 2 * h
    down = closure()
    flat[k] += h
    assert (up - down) / (2 * h) == pytest.approx(g[k], rel=1e-6, abs=1e-9)
    assert closure() == loss0
    # the LBFGS state saves and loads with the model
    model.save(tmp_path / "lbfgs.npz")
    loaded = nb.load_model(tmp_path / "lbfgs.npz")
    assert type(loaded.optimizer) is O.LBFGS
    for key, value in model.optimizer.get_state().items():
        np.testing.assert_array_equal(loaded.optimizer.get_state()[key], value)
    a = model.optimizer.step(closure.params, closure.grads, closure)
    c = O.model_closure(loaded, x, y)
    b = loaded.optimizer.step(c.params, c.grads, c)
    assert a == b
    for u, v in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(u, v)
    del w


def test_model_closure_needs_a_compiled_model():
    import numbanet as nb
    model = nb.Sequential([nb.layers.Dense(2)], input_shape=(3,))
    with pytest.raises(RuntimeError, match="compile"):
        O.model_closure(model, np.zeros((2, 3)), np.zeros((2, 2)))


def _two_layer_mlp(nb):
    return nb.Sequential([nb.layers.Dense(4, activation="tanh"), nb.layers.Dense(4),
                          nb.layers.Dense(1)], input_shape=(3,), dtype="float64")


def _torch_mlp_loss(torch, weights, x, y):
    w0, b0, w1, b1, w2, b2 = weights
    h = torch.tanh(torch.from_numpy(x) @ w0 + b0) @ w1 + b1
    return ((h @ w2 + b2 - torch.from_numpy(y)) ** 2).mean()


@pytest.mark.parametrize("how", ["frozen", "apply_gradients"])
def test_a_variable_left_out_keeps_its_state(how):
    """Momentum of weights left out of some steps (a layer frozen in fit, a subset given to
    apply_gradients) resumes when they are updated again, as torch skips a None gradient; it was
    reset to zero."""
    torch = pytest.importorskip("torch")
    import numbanet as nb
    nb.seed(0)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((8, 3)), rng.standard_normal((8, 1))
    model = _two_layer_mlp(nb)
    opt = O.SGD(0.05, momentum=0.9)
    model.compile(opt, "mse")
    tw = [torch.tensor(w, requires_grad=True) for w in model.get_weights()]
    topt = torch.optim.SGD(tw, lr=0.05, momentum=0.9)

    def step(skip_first_layer):
        if how == "frozen":
            model.layers[0].trainable = not skip_first_layer
            model.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
        else:
            with nb.GradientTape() as tape:
                loss = nb.losses.MeanSquaredError()(y, model(x, training=True))
            weights = model.trainable_weights
            pairs = list(zip(tape.gradient(loss, weights), weights))
            opt.apply_gradients(pairs[2:] if skip_first_layer else pairs)
        topt.zero_grad()
        _torch_mlp_loss(torch, tw, x, y).backward()
        if skip_first_layer:
            tw[0].grad = tw[1].grad = None
        topt.step()

    for skip in (False, True, True, False, False):
        step(skip)
    for a, b in zip(model.get_weights(), tw):
        np.testing.assert_allclose(a, b.detach().numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("make", [lambda: O.Adam(0.05), lambda: O.SGD(0.05, momentum=0.9),
                                  lambda: O.Lookahead(O.Adam(0.05), k=2)],
                         ids=["Adam", "SGD-momentum", "Lookahead"])
@pytest.mark.parametrize("how", ["frozen", "apply_gradients"])
def test_state_left_out_survives_save_and_load(how, make, tmp_path):
    """The state of weights left out of the last updates (a layer frozen in fit, a None
    gradient in apply_gradients) is saved with the model: train, leave the middle layer out,
    train, save, load, take it back, train gives bit for bit the weights of the same run without
    the save. It was dropped from the file, so the layer came back with fresh moments."""
    import numbanet as nb
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((8, 3)), rng.standard_normal((8, 1))

    def train(model, leave_out):
        if how == "frozen":
            model.layers[1].trainable = not leave_out
            model.fit(x, y, epochs=2, batch_size=4, shuffle=False, verbose=0)
            return
        for _ in range(2):
            with nb.GradientTape() as tape:
                loss = nb.losses.MeanSquaredError()(y, model(x, training=True))
            weights = model.trainable_weights
            grads = tape.gradient(loss, weights)
            if leave_out:
                grads[2] = grads[3] = None
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)     # "no gradient for ..."
                model.optimizer.apply_gradients(zip(grads, weights))

    def run(save):
        nb.seed(0)
        model = _two_layer_mlp(nb)
        model.compile(make(), "mse")
        train(model, False)
        train(model, True)
        if save:
            path = tmp_path / f"{save}.npz"
            model.save(path)
            model = nb.load_model(path)
        train(model, False)
        return model.get_weights()

    for a, b in zip(run(None), run("saved")):
        np.testing.assert_array_equal(a, b)


def test_model_file_without_left_out_state_still_loads(tmp_path):
    """A file saved before the state of a frozen layer was written (entries of the trainable
    weights only) loads; the frozen layer starts again from fresh moments, as it did."""
    import numbanet as nb
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((8, 3)), rng.standard_normal((8, 1))
    nb.seed(0)
    model = _two_layer_mlp(nb)
    model.compile(O.Adam(0.05), "mse")
    model.fit(x, y, epochs=1, batch_size=4, shuffle=False, verbose=0)
    model.layers[1].trainable = False
    model.fit(x, y, epochs=1, batch_size=4, shuffle=False, verbose=0)
    path, old = tmp_path / "new.npz", tmp_path / "old.npz"
    model.save(path)
    with np.load(path) as f:
        arrays = dict(f)
    frozen = [k for k in arrays if re.fullmatch(r"optimizer/\w+/[45]", k)]  # layer 1's
    assert sorted(frozen) == [f"optimizer/{n}/{i}" for n in ("m", "v") for i in (4, 5)]
    np.savez(old, **{k: v for k, v in arrays.items() if k not in frozen})
    back = nb.load_model(old)
    back.layers[1].trainable = True
    state = back.optimizer.variable_state(back.trainable_weights)
    np.testing.assert_array_equal(state["m/4"], arrays["optimizer/m/2"])
    assert not np.any(state["m/2"]) and not np.any(state["v/3"])
    back.fit(x, y, epochs=1, batch_size=4, shuffle=False, verbose=0)


def test_one_optimizer_taking_turns_on_two_models_keeps_both_states():
    """A momentum optimizer alternating between two models (two weight lists) updates each as
    if it had its own: switching no longer resets the other model's velocity."""
    import numbanet as nb
    nb.seed(0)
    rng = np.random.default_rng(1)
    a, b = _two_layer_mlp(nb), _two_layer_mlp(nb)
    x = rng.standard_normal((5, 3))
    shared = O.SGD(0.1, momentum=0.9)
    own = {id(a): O.SGD(0.1, momentum=0.9), id(b): O.SGD(0.1, momentum=0.9)}
    twins = {id(a): _two_layer_mlp(nb), id(b): _two_layer_mlp(nb)}
    for m in (a, b):
        twins[id(m)].set_weights(m.get_weights())

    def step(m, opt):
        with nb.GradientTape() as tape:
            loss = nb.ops.sum(nb.ops.square(m(x)))
        opt.apply_gradients(zip(tape.gradient(loss, m.trainable_weights), m.trainable_weights))

    for _ in range(3):
        for m in (a, b):
            step(m, shared)
            step(twins[id(m)], own[id(m)])
    for m in (a, b):
        for u, v in zip(m.get_weights(), twins[id(m)].get_weights()):
            np.testing.assert_array_equal(u, v)


def test_stateless_optimizer_follows_a_change_of_grouping():
    """Plain SGD (no state arrays) trains on when freezing a middle layer splits the weights
    into two runs of storage; it raised 'SGD holds state for 1 parameters but step got 2'."""
    import numbanet as nb
    nb.seed(0)
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((8, 3)), rng.standard_normal((8, 1))
    model = _two_layer_mlp(nb)
    model.compile(O.SGD(0.05), "mse")
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    model.layers[1].trainable = False
    before = model.get_weights()
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    after = model.get_weights()
    for k in range(6):
        assert np.array_equal(before[k], after[k]) == (k in (2, 3))
    model.layers[1].trainable = True
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert not np.array_equal(after[2], model.get_weights()[2])
