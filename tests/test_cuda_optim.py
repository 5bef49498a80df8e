"""CUDA twins of the newer optimizer kernels (Adadelta, NAdam, Adamax, RAdam, AdaBound/AMSBound,
Lion, Lookahead) and of the L-BFGS vector helpers (dot, axpy, abs_sum, abs_max), against the CPU kernels
and the float64 references; then the optimizers themselves on the CUDA backend against the CPU.

Runs in Numba's CUDA simulator by default (conftest sets NUMBA_ENABLE_CUDASIM=1), or on a GPU with
NUMBANET_TEST_REAL_CUDA=1. Launches are shrunk to 32 threads x at most 3 blocks, so 257 elements
cross block edges and run the grid-stride loops more than once; every launch is checked against
the kernel's declared argument spec (what tests/test_cuda_ptx.py compiles). The core five
optimizers' kernels are covered by tests/test_cuda_kernels.py.
"""
import numpy as np
import pytest
from conftest import assert_close, dev, poisoned

import reference as ref
from numbanet import _cuda
from numbanet import optimizers as O
from numbanet.backend import get_backend
from numbanet.kernels.cpu import optim as cpu

if _cuda.cuda is None or not (_cuda.is_simulator() or _cuda.is_available()):
    pytest.skip(f"CUDA kernels cannot run here: {_cuda.unavailable_reason()}",
                allow_module_level=True)

from numba import cuda  # noqa: E402

from numbanet.kernels.cuda import _common  # noqa: E402
from numbanet.kernels.cuda import optim as gpu  # noqa: E402

DTYPES = [np.float32, np.float64]
N = 257
#: the kernels this module covers (private CUDA kernel names)
MINE = {f"optim._{k}" for k in ("adadelta", "nadam", "adamax", "radam", "adabound", "lookahead",
                                "lion", "dot", "axpy", "abs_sum", "abs_max")}


@pytest.fixture(autouse=True)
def small_launches(monkeypatch):
    monkeypatch.setenv("NUMBANET_ALLOW_CUDASIM", "1")
    c = _common.config
    for name, value in (("threads", 32), ("max_blocks", 3), ("check_signatures", True)):
        monkeypatch.setattr(c, name, value)


def _nadam_hyper(step):
    mu = 0.9 * (1 - 0.5 * 0.96 ** (step * 4e-3))
    mu_next = 0.9 * (1 - 0.5 * 0.96 ** ((step + 1) * 4e-3))
    return dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-7, weight_decay=0.01, mu=mu,
                mu_next=mu_next, mu_product=0.45 * mu, step=step)


# (kernel, number of state buffers, hyperparameters)
CASES = [
    ("adadelta_update", 2, dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0)),
    ("adadelta_update", 2, dict(lr=0.5, rho=0.95, eps=1e-7, weight_decay=0.05)),
    ("nadam_update", 2, _nadam_hyper(1)),
    ("nadam_update", 2, _nadam_hyper(9)),
    ("adamax_update", 2, dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-7, weight_decay=0.0, step=1)),
    ("adamax_update", 2, dict(lr=1e-2, beta1=0.8, beta2=0.9, eps=1e-3, weight_decay=0.1, step=6)),
    ("radam_update", 2, dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-7, weight_decay=0.0, step=3)),
    ("radam_update", 2, dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-7, weight_decay=0.1, step=40)),
    ("adabound_update", 3, dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
                                final_lr=0.1, gamma=1e-3, amsbound=False, step=2)),
    ("adabound_update", 3, dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01,
                                final_lr=0.1, gamma=0.5, amsbound=True, step=30)),
    ("lion_update", 1, dict(lr=1e-2, beta1=0.9, beta2=0.99, weight_decay=0.0)),
    ("lion_update", 1, dict(lr=3e-2, beta1=0.8, beta2=0.95, weight_decay=0.1)),
]
IDS = [f"{name}-{i}" for i, (name, _, _) in enumerate(CASES)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,nstate,hyper", CASES, ids=IDS)
def test_update_kernel(name, nstate, hyper, dtype, rng):
    param = rng.standard_normal(N).astype(dtype)
    grad = rng.standard_normal(N).astype(dtype)
    state = [(np.abs(rng.standard_normal(N)) * (1e-3 if k else 1.0)).astype(dtype)
             for k in range(nstate)]
    cpu_args = [param.copy(), grad.copy(), *[s.copy() for s in state]]
    getattr(cpu, name)(*cpu_args, *hyper.values())
    gpu_args = [dev(a) for a in (param, grad, *state)]
    getattr(gpu, name)(*gpu_args, *hyper.values())
    want = getattr(ref, name)(param, grad, *state, *hyper.values())
    got = [a.copy_to_host() for a in gpu_args]
    assert_close(got[0], want[0], dtype, "param")
    for k in range(nstate):
        if not (name == "adabound_update" and not hyper["amsbound"] and k == 2):
            assert_close(got[2 + k], want[1 + k], dtype, f"state {k}")
    for k, (g, c) in enumerate(zip(got, cpu_args)):
        assert_close(g, c, dtype, f"buffer {k} vs cpu")
    np.testing.assert_array_equal(got[1], grad)


@pytest.mark.parametrize("dtype", DTYPES)
def test_lookahead_update(dtype, rng):
    slow = rng.standard_normal(N).astype(dtype)
    fast = rng.standard_normal(N).astype(dtype)
    ds, df = dev(slow), dev(fast)
    gpu.lookahead_update(ds, df, 0.3)
    want_slow, want_fast = ref.lookahead_update(slow, fast, 0.3)
    assert_close(ds.copy_to_host(), want_slow, dtype, "slow")
    assert_close(df.copy_to_host(), want_fast, dtype, "fast")
    np.testing.assert_array_equal(ds.copy_to_host(), df.copy_to_host())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [0, 1, 31, N])
def test_vector_helpers(dtype, n, rng):
    x = rng.standard_normal(n).astype(dtype)
    y = rng.standard_normal(n).astype(dtype)
    for name, args in (("dot", (x, y)), ("abs_sum", (x,)), ("abs_max", (x,))):
        for _ in range(2 if n == N else 1):        # the grid-reduction counter resets itself
            out = dev(poisoned((1,), dtype))
            getattr(gpu, name)(*[dev(a) for a in args], out)
            c_out = poisoned((1,), dtype)
            getattr(cpu, name)(*args, c_out)
            got = out.copy_to_host()
            assert_close(got, getattr(ref, name)(*args), dtype, name)
            assert_close(got, c_out, dtype, f"{name} vs cpu")
    dy = dev(y)
    gpu.axpy(-0.7, dev(x), dy)
    assert_close(dy.copy_to_host(), ref.axpy(-0.7, x, y), dtype, "axpy")


def test_abs_max_nan_propagates():
    for where in (0, 100, N - 1):
        x = np.linspace(-3, 2, N)
        x[where] = np.nan
        out = dev(np.zeros(1))
        gpu.abs_max(dev(x), out)
        assert np.isnan(out.copy_to_host()[0]), where
    out = dev(np.zeros(1))
    gpu.abs_max(dev(np.linspace(-3, 2, N)), out)              # the largest magnitude is negative
    assert out.copy_to_host()[0] == 3.0


def test_unused_vmax_may_be_empty_and_sizes_checked(rng):
    p, g = rng.standard_normal(50), rng.standard_normal(50)
    d = dev(p)
    m, v = np.zeros(50), np.zeros(50)
    gpu.adabound_update(d, dev(g), dev(m), dev(v), cuda.device_array(0), 1e-2, 0.9, 0.999, 1e-8,
                        0.0, 0.1, 1e-3, False, 1)
    want = ref.adabound_update(p, g, m, v, np.zeros(50), 1e-2, 0.9, 0.999, 1e-8, 0.0, 0.1, 1e-3,
                               False, 1)[0]
    assert_close(d.copy_to_host(), want, np.float64)
    short = cuda.device_array(3)
    with pytest.raises(ValueError, match="adabound_update"):
        gpu.adabound_update(d, dev(g), dev(m), dev(v), short, 1e-2, 0.9, 0.999, 1e-8, 0.0, 0.1,
                            1e-3, True, 1)
    for call in (lambda: gpu.adadelta_update(d, dev(g), short, dev(v), 1.0, 0.9, 1e-6, 0.0),
                 lambda: gpu.nadam_update(d, dev(g), dev(m), short, 1e-3, 0.9, 0.999, 1e-7, 0.0,
                                          0.5, 0.5, 0.5, 1),
                 lambda: gpu.adamax_update(d, short, dev(m), dev(v), 1e-3, 0.9, 0.999, 1e-7, 0.0, 1),
                 lambda: gpu.radam_update(d, dev(g), short, dev(v), 1e-3, 0.9, 0.999, 1e-7, 0.0, 1),
                 lambda: gpu.lookahead_update(d, short, 0.5),
                 lambda: gpu.dot(d, short, dev(np.zeros(1))),
                 lambda: gpu.axpy(1.0, d, short)):
        with pytest.raises(ValueError):
            call()


# ------------------------------------------------------------------------------ whole optimizers
def _problem(dtype, seed=0):
    rng = np.random.default_rng(seed)
    shapes = [(3, 5), (7,), ()]
    a = [rng.uniform(0.5, 2.0, s) for s in shapes]
    b = [rng.standard_normal(s) for s in shapes]
    init = [rng.standard_normal(s).astype(dtype) for s in shapes]

    def grads(params):
        return [np.asarray(ai * p + np.sin(3 * p) + bi, dtype=dtype)
                for ai, bi, p in zip(a, b, params)]

    def loss(params):
        return float(sum(np.sum(0.5 * ai * p * p - np.cos(3 * p) / 3 + bi * p)
                         for ai, bi, p in zip(a, b, params)))
    return init, grads, loss


def _run(make, device, dtype, steps, closure_based=False):
    """Run ``make()`` for ``steps`` steps on ``device``; the params (host) after each step."""
    be = get_backend(device)
    init, grads_fn, loss_fn = _problem(dtype)
    opt = make()
    opt.backend = be
    params = [be.asarray(p.reshape(-1).copy()) for p in init]
    grads = [be.zeros((p.size,), dtype) for p in init]

    def host_params():
        return [be.to_numpy(p).reshape(i.shape) for p, i in zip(params, init)]

    def closure():
        host = host_params()
        for g, v in zip(grads, grads_fn(host)):
            be.copy_(g, v.reshape(-1))
        return loss_fn(host)
    out = []
    for _ in range(steps):
        if closure_based:
            opt.step(params, grads, closure)
        else:
            closure()
            opt.step(params, grads)
        out.append([np.array(h, copy=True) for h in host_params()])
    return out, opt


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("make", [
    lambda: O.Adadelta(learning_rate=1.0),
    lambda: O.Nadam(learning_rate=0.05, global_clipnorm=1.0),
    lambda: O.Adamax(learning_rate=0.05),
    lambda: O.RAdam(learning_rate=0.05),
    lambda: O.AMSBound(learning_rate=0.05, clipvalue=0.5),
    lambda: O.Lookahead(O.Adam(learning_rate=0.05), k=2, alpha=0.5),        # syncs at step 2
    lambda: O.Lion(learning_rate=0.01, weight_decay=0.1),
], ids=["adadelta", "nadam-clip", "adamax", "radam", "amsbound-clip", "lookahead", "lion"])
def test_optimizer_on_cuda_matches_cpu(make, dtype):
    got, opt = _run(make, "cuda", dtype, 3)
    want, _ = _run(make, "cpu", dtype, 3)
    for k, (g, w) in enumerate(zip(got, want)):
        for a, b in zip(g, w):
            assert a.dtype == dtype
            assert_close(a, b, dtype, f"step {k + 1}")
    state = opt.get_state()                                        # host copies, as saved
    assert all(isinstance(v, np.ndarray) for v in state.values())


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_lion_follows_the_published_rule(device):
    """Five Lion steps with weight decay on each device against the float64 NumPy rule."""
    kw = dict(learning_rate=0.01, beta_1=0.8, beta_2=0.95, weight_decay=0.1)
    got, opt = _run(lambda: O.Lion(**kw), device, np.float64, 5)
    init, grads_fn, _ = _problem(np.float64)
    params, ms = [p.copy() for p in init], [np.zeros_like(p) for p in init]
    for k in range(5):
        steps = [ref.lion_update(p, g, m, 0.01, 0.8, 0.95, 0.1)
                 for p, g, m in zip(params, grads_fn(params), ms)]
        params, ms = [s[0] for s in steps], [s[1] for s in steps]
        for a, b in zip(got[k], params):
            assert_close(a, b, np.float64, f"step {k + 1}")
    assert opt.iterations == 5 and sorted(opt.get_state()) == ["iterations", "m/0", "m/1", "m/2"]


@pytest.mark.parametrize("kw,dtype", [
    (dict(max_iter=2, history_size=2), np.float64),
    (dict(max_iter=2, history_size=2, line_search_fn="strong_wolfe"), np.float64),
    (dict(max_iter=2, history_size=2, line_search_fn="strong_wolfe"), np.float32),
], ids=["fixed-step-float64", "strong-wolfe-float64", "strong-wolfe-float32"])
def test_lbfgs_on_cuda_matches_cpu(kw, dtype):
    """The two-loop recursion and the line search on device buffers (dot/axpy/abs kernels); two
    steps of two iterations fill and then shift the history of two pairs."""
    got, opt = _run(lambda: O.LBFGS(**kw), "cuda", dtype, 2, closure_based=True)
    want, ref_opt = _run(lambda: O.LBFGS(**kw), "cpu", dtype, 2, closure_based=True)
    for k, (g, w) in enumerate(zip(got, want)):
        for a, b in zip(g, w):
            assert_close(a, b, dtype, f"step {k + 1}")
    s, r = opt.get_state(), ref_opt.get_state()
    assert s.keys() == r.keys() and s["n_iter"] == r["n_iter"] and len(s["ro"]) > 0
    assert s["func_evals"] == r["func_evals"]
    cpu_opt = O.LBFGS(**kw)                                        # the state moves to the CPU
    cpu_opt.set_state(s)
    opt.backend = "cpu"
    for key, value in opt.get_state().items():
        np.testing.assert_array_equal(value, cpu_opt.get_state()[key])


def test_every_kernel_of_this_module_was_launched(request):
    """Runs last: each CUDA kernel this module covers ran at least once (spec-checked)."""
    if request.config.getoption("keyword") or request.config.getoption("markexpr"):
        pytest.skip("a -k/-m selection ran only part of the module")
    registered = {k.name for k in _common.KERNELS}
    assert MINE <= registered
    missing = sorted(MINE - _common.LAUNCHED)
    assert not missing, f"never launched: {missing}"
