"""CUDA recurrent kernels (kernels/cuda/rnn.py) against the CPU kernels of the same name and the
float64 references, in Numba's simulator by default (or on a GPU with NUMBANET_TEST_REAL_CUDA=1).

Tiny shapes (N <= 3, T <= 4, U <= 3) with launch knobs shrunk (4 threads per block, at most 2
blocks: the grid-stride loops run more than once; 8x8 GEMM tiles for the weight gradient), every
launch checked against the kernel's declared spec; the last test checks that every kernel of the
module was launched.
"""
import numpy as np
import pytest
from conftest import assert_close, dev, run_pair

import rnn_cases as rc
from numbanet import _cuda
from numbanet.backend import kernel_names
from numbanet.kernels import scalar

if _cuda.cuda is None or not (_cuda.is_simulator() or _cuda.is_available()):
    pytest.skip(f"CUDA kernels cannot run here: {_cuda.unavailable_reason()}",
                allow_module_level=True)

from numbanet.kernels.cpu import rnn as C  # noqa: E402
from numbanet.kernels.cuda import _common  # noqa: E402
from numbanet.kernels.cuda import rnn as G  # noqa: E402

DTYPES = [np.float32, np.float64]
MASK = np.array([[0, 1, 1, 1], [1, 1, 0, 1], [1, 1, 1, 0]])  # leading, interior, trailing


@pytest.fixture(autouse=True)
def small_launches(monkeypatch):
    monkeypatch.setenv("NUMBANET_ALLOW_CUDASIM", "1")
    for name, value in (("threads", 4), ("max_blocks", 2), ("gemm_tile", (8, 8, 4, 2, 2)),
                        ("gemm_min_chunk", 1), ("num_sms", 4), ("check_signatures", True)):
        monkeypatch.setattr(_common.config, name, value)


def check(got, cpu, want, dtype, what):
    assert_close(got, want, dtype, what)
    assert_close(got, cpu, dtype, f"{what} vs cpu")


def test_public_names_match_the_cpu_module():
    assert kernel_names(G) == kernel_names(C)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", rc.CELLS)
def test_cell_matches_cpu(cell, dtype, rng):
    """Forward and backward, reverse off and on, masked steps, non-zero initial states,
    accumulate off (poisoned outputs) and on (random previous gradients)."""
    n, t, units = 3, 4, 3
    for reverse in (False, True):
        d = rc.inputs(cell, rng, n, t, units, dtype, MASK, reverse,
                      scalar.ACTIVATION_CODES.index("elu"))
        outs = rc.out_shapes(cell, rc.FWD_OUTS[cell], n, t, units, dtype)
        cpu, gpu = run_pair("rnn", f"{cell}_forward", [d[a] for a in rc.FWD_ARGS[cell]], outs)
        d.update(zip(rc.FWD_OUTS[cell], cpu))
        want = rc.reference_forward(cell, d)
        for name, c, g in zip(rc.FWD_OUTS[cell], cpu, gpu):
            check(g, c, want[name], dtype, f"{cell} {name} reverse={reverse}")
        want = rc.reference_backward(cell, d)
        for accumulate in (False, True):
            outs = rc.out_shapes(cell, rc.BWD_OUTS[cell], n, t, units, dtype)
            prev = {name: rng.standard_normal(s).astype(dtype)
                    for name, (s, _) in zip(rc.BWD_OUTS[cell], outs) if name in rc.PARAM_GRADS}
            outs = [prev[name] if accumulate and name in prev else o
                    for name, o in zip(rc.BWD_OUTS[cell], outs)]
            cpu, gpu = run_pair("rnn", f"{cell}_backward",
                                [d[a] for a in rc.BWD_ARGS[cell]] + [accumulate], outs)
            for name, c, g in zip(rc.BWD_OUTS[cell], cpu, gpu):
                w = want[name] + (prev[name] if accumulate and name in prev else 0.0)
                check(g, c, w, dtype, f"{cell} {name} reverse={reverse} acc={accumulate}")


@pytest.mark.parametrize("cell", rc.CELLS)
def test_single_step_and_unit(cell, rng):
    """T = 1 (the initial states feed the only step), U = 1, N = 1."""
    d = rc.inputs(cell, rng, 1, 1, 1, np.float64, None, True, rc.TANH)
    outs = rc.out_shapes(cell, rc.FWD_OUTS[cell], 1, 1, 1, np.float64)
    cpu, gpu = run_pair("rnn", f"{cell}_forward", [d[a] for a in rc.FWD_ARGS[cell]], outs)
    d.update(zip(rc.FWD_OUTS[cell], cpu))
    for name, c, g in zip(rc.FWD_OUTS[cell], cpu, gpu):
        assert_close(g, c, np.float64, name)
    outs = rc.out_shapes(cell, rc.BWD_OUTS[cell], 1, 1, 1, np.float64)
    cpu, gpu = run_pair("rnn", f"{cell}_backward",
                        [d[a] for a in rc.BWD_ARGS[cell]] + [False], outs)
    for name, c, g in zip(rc.BWD_OUTS[cell], cpu, gpu):
        assert_close(g, c, np.float64, name)


def test_empty_batch_zeroes_the_weight_gradients():
    d = {k: dev(v) if isinstance(v, np.ndarray) else v
         for k, v in rc.inputs("gru", np.random.default_rng(1), 0, 2, 2, np.float64).items()}
    shapes = rc.out_shapes("gru", rc.FWD_OUTS["gru"], 0, 2, 2, np.float64)
    outs = [dev(np.zeros(s)) for s, _ in shapes]
    G.gru_forward(*[d[a] for a in rc.FWD_ARGS["gru"]], *outs)
    d.update(zip(rc.FWD_OUTS["gru"], outs))
    grads = [dev(np.full(s, np.nan)) for s, _ in
             rc.out_shapes("gru", rc.BWD_OUTS["gru"], 0, 2, 2, np.float64)]
    G.gru_backward(*[d[a] for a in rc.BWD_ARGS["gru"]], False, *grads)
    np.testing.assert_array_equal(grads[1].copy_to_host(), 0.0)
    np.testing.assert_array_equal(grads[2].copy_to_host(), 0.0)


def test_bad_arguments_raise(rng):
    d = {k: dev(v) if isinstance(v, np.ndarray) else v
         for k, v in rc.inputs("lstm", rng, 2, 3, 2, np.float32).items()}
    e = lambda *shape, dt=np.float32: dev(np.zeros(shape, dt))       # noqa: E731
    args = [d[a] for a in rc.FWD_ARGS["lstm"]]
    with pytest.raises(ValueError, match=r"lstm_forward: gates must have shape \(N, T, 4U\)"):
        G.lstm_forward(*args, e(2, 3, 2), e(2, 3, 2), e(2, 3, 6))
    with pytest.raises(ValueError, match=r"lstm_forward: cs must be float32 like u"):
        G.lstm_forward(*args, e(2, 3, 2), e(2, 3, 2, dt=np.float64), e(2, 3, 8))
    with pytest.raises(ValueError, match=r"lstm_forward: hs must be a device array"):
        G.lstm_forward(*args, np.zeros((2, 3, 2), np.float32), e(2, 3, 2), e(2, 3, 8))
    r = {k: dev(v) if isinstance(v, np.ndarray) else v
         for k, v in rc.inputs("simple_rnn", rng, 2, 3, 2, np.float32).items()}
    with pytest.raises(ValueError, match="activation must be an int code"):
        G.simple_rnn_forward(r["xp"], r["u"], r["h0"], r["mask"], False, 99, e(2, 3, 2),
                             e(2, 3, 2))
    with pytest.raises(ValueError, match=r"gru_backward: u must have shape"):
        G.gru_backward(e(2, 8), e(6), e(2, 2), e(2, 3), False, e(2, 3, 2), e(2, 3, 8),
                       e(2, 3, 2), e(2, 2), False, e(2, 3, 6), e(2, 6), e(6), e(2, 2))


def test_every_rnn_kernel_was_launched(request):
    """Runs last: every CUDA kernel of kernels/cuda/rnn.py ran at least once in this module."""
    if request.config.getoption("keyword") or request.config.getoption("markexpr"):
        pytest.skip("a -k/-m selection ran only part of the module")
    names = {k.name for k in _common.KERNELS if k.name.startswith("rnn.")}
    assert len(names) == 8
    missing = sorted(names - _common.LAUNCHED)
    assert not missing, f"never launched: {missing}"
