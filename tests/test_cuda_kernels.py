"""CUDA kernels (kernels/cuda) against the CPU kernels of the same name and the float64 references.

Runs in Numba's CUDA simulator by default (conftest sets NUMBA_ENABLE_CUDASIM=1), or on a GPU with
NUMBANET_TEST_REAL_CUDA=1. Launch knobs are shrunk (32 threads per block, at most 3 blocks, 8x8
GEMM tiles of 2x2 per thread, 4-lane rows) so tiny arrays still cross block and tile edges, run
grid-stride loops more than once and take the split-K path. The parameter-gradient kernels run
with accumulate off (poisoned outputs) and on (added into previous contents). Every launch is
checked against the kernel's declared argument spec (what tests/test_cuda_ptx.py compiles), and the
last test checks that every registered CUDA kernel was launched.
"""
import importlib

import numpy as np
import pytest
from conftest import accumulated, assert_close, dev, global_pool_inputs, poisoned, run_pair

import reference as ref
from numbanet import _cuda
from numbanet.backend import KERNEL_MODULES, kernel_names
from numbanet.kernels.scalar import ACTIVATION_CODES

if _cuda.cuda is None or not (_cuda.is_simulator() or _cuda.is_available()):
    pytest.skip(f"CUDA kernels cannot run here: {_cuda.unavailable_reason()}",
                allow_module_level=True)

from numba import cuda  # noqa: E402

from numbanet.kernels.cuda import _common, _gemm  # noqa: E402

DTYPES = [np.float32, np.float64]


@pytest.fixture(autouse=True)
def small_launches(monkeypatch):
    """Tiny blocks and grids, spec checks on; CUDA usable in the simulator for these tests."""
    monkeypatch.setenv("NUMBANET_ALLOW_CUDASIM", "1")
    c = _common.config
    for name, value in (("threads", 32), ("max_blocks", 3), ("row_block", (4, 2)),
                        ("gemm_tile", (8, 8, 4, 2, 2)), ("gemm_min_chunk", 4), ("num_sms", 4),
                        ("check_signatures", True)):
        monkeypatch.setattr(c, name, value)


def cpu_mod(mod):
    return importlib.import_module(f"numbanet.kernels.cpu.{mod}")


def gpu_mod(mod):
    return importlib.import_module(f"numbanet.kernels.cuda.{mod}")


def check_param_grads(mod, name, args, outs, want, dtype, rng, what):
    """A parameter-gradient kernel ``name(*args, accumulate, *outputs)`` on both targets with
    accumulate off (poisoned outputs) and on (random previous contents): the CUDA results against
    the float64 references ``want`` (plus the previous contents when accumulating) and the CPU
    twin's."""
    for accumulate in (False, True):
        init = [rng.standard_normal(s).astype(d) if accumulate else (s, d) for s, d in outs]
        cs, gs = run_pair(mod, name, [*args, accumulate], init)
        expect = accumulated([i if accumulate else None for i in init], want)
        for k, (c, g, e) in enumerate(zip(cs, gs, expect)):
            tag = f"{what} output {k}, accumulate {accumulate}"
            assert_close(g, e, dtype, tag)
            assert_close(g, c, dtype, f"{tag} vs cpu")


def test_same_public_names_as_cpu():
    for mod in KERNEL_MODULES:
        try:
            c = cpu_mod(mod)
        except ModuleNotFoundError:
            continue
        assert kernel_names(gpu_mod(mod)) == kernel_names(c), mod


# ------------------------------------------------------------------------------------------- dense
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,sms", [((13, 37, 11), 1), ((9, 38, 17), 64), ((1, 1, 1), 1)])
def test_dense(dtype, shape, sms, rng, monkeypatch):
    """sms=1: one K chunk; sms=64: the grids are small, so every pass splits K (partial tiles,
    summed by the last block of each tile; the passes share the tile counters, so a counter
    left unreset would break the next pass)."""
    monkeypatch.setattr(_common.config, "num_sms", sms)
    monkeypatch.setattr(_common.config, "gemm_min_chunk", 1)
    n, i, u = shape
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in ((n, i), (i, u), (u,)))
    g = rng.standard_normal((n, u)).astype(dtype)
    (c,), (o,) = run_pair("dense", "dense_forward", [x, w, b], [((n, u), dtype)])
    assert_close(o, ref.dense_forward(x, w, b), dtype, "forward")
    assert_close(o, c, dtype, "forward vs cpu")
    (c,), (o,) = run_pair("dense", "dense_backward_input", [g, w], [((n, i), dtype)])
    assert_close(o, g.astype(np.float64) @ w.T.astype(np.float64), dtype, "backward input")
    assert_close(o, c, dtype, "backward input vs cpu")
    check_param_grads("dense", "dense_backward_weight", [x, g], [((i, u), dtype), ((u,), dtype)],
                      ref.dense_backward_weight(x, g), dtype, rng, "grad_w, grad_b")


# ------------------------------------------------------------------------------------------ conv2d
CONV_CASES = [
    # N, C, H, W, K, KH, KW, stride, pad, dil, SMs (64: every pass splits K)
    (2, 3, 7, 6, 5, 3, 2, (2, 1), (1, 0), (1, 2), 64),
    (1, 2, 5, 5, 3, 3, 3, (1, 1), (1, 1), (1, 1), 1),
    (3, 1, 4, 3, 2, 1, 1, (1, 2), (0, 1), (1, 1), 1),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d(dtype, case, rng, monkeypatch):
    N, C, H, W, K, KH, KW, stride, pad, dil, sms = case
    monkeypatch.setattr(_common.config, "num_sms", sms)
    monkeypatch.setattr(_common.config, "gemm_min_chunk", 1)
    OH, OW = ref._conv_out_hw((H, W), (KH, KW), stride, pad, dil, None)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, C, KH, KW)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    g = rng.standard_normal((N, K, OH, OW)).astype(dtype)
    geo = (*stride, *pad, *dil)
    (c,), (o,) = run_pair("conv2d", "conv2d_forward", [x, w, b, *geo], [((N, K, OH, OW), dtype)])
    assert_close(o, ref.conv2d_forward(x, w, b, stride, pad, dil), dtype, "forward")
    assert_close(o, c, dtype, "forward vs cpu")
    (c,), (o,) = run_pair("conv2d", "conv2d_backward_input", [g, w, *geo], [(x.shape, dtype)])
    assert_close(o, ref.conv2d_backward_input(g, w, x.shape, stride, pad, dil), dtype, "grad_in")
    assert_close(o, c, dtype, "grad_in vs cpu")
    want_w = ref.conv2d_backward_weight(x, g, w.shape, stride, pad, dil)
    want_b = ref.conv2d_backward_bias(g)
    check_param_grads("conv2d", "conv2d_backward_weight", [x, g, *geo], [(w.shape, dtype)],
                      [want_w], dtype, rng, "grad_w")
    check_param_grads("conv2d", "conv2d_backward_bias", [g], [((K,), dtype)], [want_b], dtype,
                      rng, "grad_b")
    check_param_grads("conv2d", "conv2d_backward_params", [x, g, *geo],
                      [(w.shape, dtype), ((K,), dtype)], [want_w, want_b], dtype, rng,
                      "params: grad_w, grad_b")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ACTIVATION_CODES)
def test_forward_activation(name, dtype, rng, monkeypatch):
    """The fused forwards apply every activation code in the GEMM epilogue (one launch), with
    split K on the dense pass: against the CPU twins and the float64 references."""
    code, alpha = ACTIVATION_CODES.index(name), 0.3
    monkeypatch.setattr(_common.config, "num_sms", 64)
    monkeypatch.setattr(_common.config, "gemm_min_chunk", 1)
    n, i, u = 5, 17, 9
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in ((n, i), (i, u), (u,)))
    x[0, :] = 0.0                                  # a row of pre-activations equal to b
    cs, gs = run_pair("dense", "dense_forward_activation", [x, w, b, code, alpha],
                      [((n, u), dtype), ((n, u), dtype)])
    pre = ref.dense_forward(x, w, b)
    assert_close(gs[0], pre, dtype, "dense pre-activation")
    assert_close(gs[1], getattr(ref, f"{name}_forward")(gs[0].astype(np.float64), alpha), dtype,
                 "dense activation")
    assert_close(gs[1], cs[1], dtype, "dense activation vs cpu")
    monkeypatch.setattr(_common.config, "num_sms", 1)
    x = rng.standard_normal((2, 2, 5, 4)).astype(dtype)
    w = rng.standard_normal((3, 2, 3, 3)).astype(dtype)
    b = rng.standard_normal(3).astype(dtype)
    geo = (1, 1, 1, 1, 1, 1)
    cs, gs = run_pair("conv2d", "conv2d_forward_activation", [x, w, b, *geo, code, alpha],
                      [((2, 3, 5, 4), dtype), ((2, 3, 5, 4), dtype)])
    pre = ref.conv2d_forward(x, w, b, (1, 1), (1, 1), (1, 1))
    assert_close(gs[0], pre, dtype, "conv pre-activation")
    assert_close(gs[1], getattr(ref, f"{name}_forward")(gs[0].astype(np.float64), alpha), dtype,
                 "conv activation")
    assert_close(gs[1], cs[1], dtype, "conv activation vs cpu")


def test_forward_activation_rejects_bad_codes():
    x, w, b = dev(np.ones((2, 3))), dev(np.ones((3, 4))), dev(np.zeros(4))
    with pytest.raises(ValueError, match="activation must be an int code"):
        gpu_mod("dense").dense_forward_activation(x, w, b, len(ACTIVATION_CODES), 0.0,
                                                  dev(np.empty((2, 4))), dev(np.empty((2, 4))))
    with pytest.raises(ValueError, match=r"pre and out must have the same shape"):
        gpu_mod("dense").dense_forward_activation(x, w, b, 1, 0.0, dev(np.empty((2, 4))),
                                                  dev(np.empty((1, 4))))


def test_conv_geometry_beyond_32_bit_coordinates_is_a_clear_error():
    """The convolution kernels bound-check image coordinates in 32 bits: geometries that would
    reach 2**31 are refused, naming the axis."""
    from numbanet.kernels.cuda import conv2d as C
    assert C._geo(3, 8, 8, 3, 3, 8, 8, 1, 1, 1, 1, 1, 1, 4)[1] == 8
    with pytest.raises(ValueError, match=r"conv2d: image width 8 with padding 1073741824, "
                                         r"stride 1073741824"):
        C._geo(3, 8, 8, 3, 3, 8, 2, 1, 1 << 30, 1, 1 << 30, 1, 1, 4)
    with pytest.raises(ValueError, match=r"conv2d: image height 8 .* reaches coordinate"):
        C._geo(3, 8, 8, 3, 3, 8, 8, 1, 1, 1 << 31, 1, 1, 1, 4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tile,sms", [((16, 32, 4, 4, 8), 1), ((16, 32, 8, 4, 8), 64),
                                      ((12, 8, 4, 3, 2), 1)])
def test_gemm_register_tiles(dtype, tile, sms, rng, monkeypatch):
    """Register tiles read from shared memory in runs of 4 rows / columns (4x8 per thread, as the
    default tile), or 1 and 2 (3x2): the runs of a block's threads interleave, with ragged edges
    and split K, and without (unchecked staging only); dense and convolution variants, the
    weight gradients with accumulate off and on."""
    monkeypatch.setattr(_common.config, "gemm_tile", tile)
    monkeypatch.setattr(_common.config, "num_sms", sms)
    monkeypatch.setattr(_common.config, "gemm_min_chunk", 1)
    # sizes that are multiples of every tile here (no step checks bounds), then ragged edges
    # (edge blocks and the last K step check bounds, the others do not)
    for n, i, u in ((48, 32, 64), (37, 21, 45)):
        x, w, b = (rng.standard_normal(s).astype(dtype) for s in ((n, i), (i, u), (u,)))
        (o,) = run_pair("dense", "dense_forward", [x, w, b], [((n, u), dtype)])[1]
        assert_close(o, ref.dense_forward(x, w, b), dtype, f"dense forward {n}x{i}x{u}")
        g = rng.standard_normal((n, u)).astype(dtype)
        (o,) = run_pair("dense", "dense_backward_input", [g, w], [((n, i), dtype)])[1]
        assert_close(o, g.astype(np.float64) @ w.T.astype(np.float64), dtype,
                     f"dense grad_in {n}x{i}x{u}")
    check_param_grads("dense", "dense_backward_weight", [x, g], [((i, u), dtype), ((u,), dtype)],
                      ref.dense_backward_weight(x, g), dtype, rng, "dense grad_w, grad_b")
    x = rng.standard_normal((2, 3, 6, 7)).astype(dtype)
    w = rng.standard_normal((17, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(17).astype(dtype)
    geo = (1, 1, 1, 1, 1, 1)
    (o,) = run_pair("conv2d", "conv2d_forward", [x, w, b, *geo], [((2, 17, 6, 7), dtype)])[1]
    assert_close(o, ref.conv2d_forward(x, w, b, (1, 1), (1, 1), (1, 1)), dtype, "conv forward")
    g = rng.standard_normal(o.shape).astype(dtype)
    (o,) = run_pair("conv2d", "conv2d_backward_input", [g, w, *geo], [(x.shape, dtype)])[1]
    assert_close(o, ref.conv2d_backward_input(g, w, x.shape, (1, 1), (1, 1), (1, 1)), dtype,
                 "conv grad_in")
    check_param_grads("conv2d", "conv2d_backward_params", [x, g, *geo],
                      [(w.shape, dtype), ((17,), dtype)],
                      [ref.conv2d_backward_weight(x, g, w.shape, (1, 1), (1, 1), (1, 1)),
                       ref.conv2d_backward_bias(g)], dtype, rng, "conv grad_w, grad_b")


def test_gemm_affine_operand_takes_no_context():
    """An Affine operand's offsets are its context: a variant that also names one is refused."""
    with pytest.raises(ValueError, match="operand B is Affine"):
        _gemm.gemm("bad", (1, 1, 2, 1, 1), 2, _gemm.rows(0), _gemm.cols(1), None,
                   b_ctx=lambda X, geo, i: (0, 0, 0))


# -------------------------------------------------------------------------------------------- pool
POOL_CASES = [
    # x shape, pool, stride, pad
    ((2, 3, 7, 6), (3, 2), (2, 1), (1, 1)),      # overlapping windows, padding
    ((1, 2, 6, 8), (2, 2), (2, 2), (0, 0)),
    ((1, 1, 3, 4), (1, 1), (1, 1), (1, 1)),      # border windows entirely in the padding
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES)
def test_pool(dtype, case, rng):
    shape, pool, stride, pad = case
    OH, OW = ref._conv_out_hw(shape[2:], pool, stride, pad, (1, 1), None)
    x = rng.standard_normal(shape).astype(dtype)
    g = rng.standard_normal((shape[0], shape[1], OH, OW)).astype(dtype)
    args = [x, *pool, *stride, *pad]
    oshape = (shape[0], shape[1], OH, OW)
    cs, gs = run_pair("pool", "max_pool2d_forward", args, [(oshape, dtype), (oshape, np.int64)])
    want, warg = ref.max_pool2d_forward(x, pool, stride, pad)
    np.testing.assert_array_equal(gs[0], want.astype(dtype))
    np.testing.assert_array_equal(gs[1], warg)
    np.testing.assert_array_equal(gs[1], cs[1])
    (c,), (o,) = run_pair("pool", "max_pool2d_backward", [g, warg], [(shape, dtype)])
    assert_close(o, ref.max_pool2d_backward(g, warg, shape), dtype, "max backward")
    assert_close(o, c, dtype, "max backward vs cpu")
    (c,), (o,) = run_pair("pool", "avg_pool2d_forward", args, [(g.shape, dtype)])
    assert_close(o, ref.avg_pool2d_forward(x, pool, stride, pad), dtype, "avg forward")
    assert_close(o, c, dtype, "avg forward vs cpu")
    (c,), (o,) = run_pair("pool", "avg_pool2d_backward", [g, *pool, *stride, *pad],
                          [(shape, dtype)])
    assert_close(o, ref.avg_pool2d_backward(g, shape, pool, stride, pad), dtype, "avg backward")
    assert_close(o, c, dtype, "avg backward vs cpu")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (3, 0), (9, 13)], ids=str)
def test_global_pool(dtype, shape, rng):
    """Rows of 4 lanes, 2 per block, at most 3 blocks: 9 rows wrap the grid-stride loop over row
    blocks, 13 columns the lanes' strided scans (ties, NaN and infinities: global_pool_inputs);
    one column, one row, empty rows."""
    rows, cols = shape
    x = global_pool_inputs(shape, dtype, rng)
    g = rng.standard_normal(rows).astype(dtype)
    (c,), (o,) = run_pair("pool", "global_avg_pool_forward", [x], [((rows,), dtype)])
    assert_close(o, ref.global_avg_pool_forward(x), dtype, "avg forward")
    assert_close(o, c, dtype, "avg forward vs cpu")
    (c,), (o,) = run_pair("pool", "global_avg_pool_backward", [g], [(shape, dtype)])
    assert_close(o, ref.global_avg_pool_backward(g, cols), dtype, "avg backward")
    assert_close(o, c, dtype, "avg backward vs cpu")
    cs, gs = run_pair("pool", "global_max_pool_forward", [x],
                      [((rows,), dtype), ((rows,), np.int64)])
    want, warg = ref.global_max_pool_forward(x)
    for got in (gs, cs):
        np.testing.assert_array_equal(got[0], want.astype(dtype))
        np.testing.assert_array_equal(got[1], warg)
    (c,), (o,) = run_pair("pool", "global_max_pool_backward", [g, warg], [(shape, dtype)])
    np.testing.assert_array_equal(o, ref.global_max_pool_backward(g, warg, cols))
    np.testing.assert_array_equal(o, c)


# ------------------------------------------------------------------------------------- activations
ACTIVATIONS = list(ACTIVATION_CODES)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ACTIVATIONS + ["softmax"])
def test_activation(name, dtype, rng):
    shape = (7, 13) if name == "softmax" else (257,)
    x = (3.0 * rng.standard_normal(shape)).astype(dtype)
    if name != "softmax":
        x[:3] = (-40.0, 40.0, 0.5)              # saturated tails
    g = rng.standard_normal(shape).astype(dtype)
    alpha = 0.3
    (c,), (y,) = run_pair("activations", f"{name}_forward", [x, alpha], [(shape, dtype)])
    assert_close(y, getattr(ref, f"{name}_forward")(x, alpha), dtype, "forward")
    assert_close(y, c, dtype, "forward vs cpu")
    y = y.astype(dtype)
    (c,), (gi,) = run_pair("activations", f"{name}_backward", [x, y, g, alpha], [(shape, dtype)])
    assert_close(gi, getattr(ref, f"{name}_backward")(x, y, g, alpha), dtype, "backward")
    assert_close(gi, c, dtype, "backward vs cpu")


@pytest.mark.parametrize("name", ["sigmoid", "softmax"])
def test_activation_in_place(name, rng):
    shape = (5, 9) if name == "softmax" else (100,)
    x = rng.standard_normal(shape)
    d = dev(x)
    getattr(gpu_mod("activations"), f"{name}_forward")(d, 0.0, d)
    assert_close(d.copy_to_host(), getattr(ref, f"{name}_forward")(x, 0.0), np.float64)


# ------------------------------------------------------------------------------------------- optim
OPTIM_CASES = [
    ("sgd_update", 1, dict(lr=0.1, momentum=0.0, weight_decay=0.0, nesterov=False)),
    ("sgd_update", 1, dict(lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=False)),
    ("sgd_update", 1, dict(lr=0.1, momentum=0.9, weight_decay=0.0, nesterov=True)),
    ("adagrad_update", 1, dict(lr=0.1, eps=1e-10, weight_decay=0.01)),
    ("rmsprop_update", 3, dict(lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                               centered=False)),
    ("rmsprop_update", 3, dict(lr=0.01, alpha=0.9, eps=1e-8, weight_decay=0.01, momentum=0.9,
                               centered=True)),
    ("adam_update", 3, dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
                            amsgrad=False, step=1)),
    ("adam_update", 3, dict(lr=1e-3, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.01,
                            amsgrad=True, step=7)),
    ("adamw_update", 3, dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01,
                             amsgrad=True, step=3)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,nstate,hyper", OPTIM_CASES)
def test_optimizer(name, nstate, hyper, dtype, rng):
    n = 257
    param = rng.standard_normal(n).astype(dtype)
    grad = rng.standard_normal(n).astype(dtype)
    state = [np.abs(rng.standard_normal(n)) for _ in range(nstate)]
    if name == "rmsprop_update":            # a reachable state: square_avg >= grad_avg^2
        state[1] = 0.5 * rng.standard_normal(n)
        state[0] += state[1] ** 2
    state = [s.astype(dtype) for s in state]
    cpu_args = [param.copy(), grad.copy(), *[s.copy() for s in state]]
    getattr(cpu_mod("optim"), name)(*cpu_args, *hyper.values())
    gpu_args = [dev(a) for a in (param, grad, *state)]
    getattr(gpu_mod("optim"), name)(*gpu_args, *hyper.values())
    want = getattr(ref, name)(param, grad, *state, *hyper.values())
    got = [a.copy_to_host() for a in gpu_args]
    assert_close(got[0], want[0], dtype, "param")
    for k in range(nstate):
        if not (name == "rmsprop_update" and not hyper["centered"] and k == 1):
            assert_close(got[2 + k], want[1 + k], dtype, f"state {k}")
    for k, (g, c) in enumerate(zip(got, cpu_args)):
        assert_close(g, c, dtype, f"buffer {k} vs cpu")
    np.testing.assert_array_equal(got[1], grad)


def test_optimizer_unused_state_may_be_empty(rng):
    p, g = rng.standard_normal(50), rng.standard_normal(50)
    d = dev(p)
    gpu_mod("optim").sgd_update(d, dev(g), cuda.device_array(0), 0.1, 0.0, 0.0, False)
    assert_close(d.copy_to_host(), p - 0.1 * g, np.float64)
    with pytest.raises(ValueError):
        gpu_mod("optim").adagrad_update(d, dev(g), cuda.device_array(3), 0.1, 1e-10, 0.0)


# ------------------------------------------------------------------------------------- elementwise
@pytest.mark.parametrize("dtype", DTYPES)
def test_elementwise(dtype, rng):
    n = 257
    x = rng.standard_normal(n).astype(dtype)
    u = rng.random(n).astype(dtype)
    g = rng.standard_normal(n).astype(dtype)
    cs, gs = run_pair("elementwise", "dropout_forward", [x, u, 0.3], [((n,), dtype)] * 2)
    want_out, want_mask = ref.dropout_forward(x, u, 0.3)
    assert_close(gs[0], want_out, dtype, "dropout out")
    assert_close(gs[1], want_mask, dtype, "dropout mask")
    assert_close(gs[0], cs[0], dtype, "dropout vs cpu")
    (c,), (o,) = run_pair("elementwise", "dropout_backward", [g, gs[1]], [((n,), dtype)])
    assert_close(o, ref.dropout_backward(g, gs[1]), dtype, "dropout backward")
    (c,), (o,) = run_pair("elementwise", "sum_squares", [x], [((1,), dtype)])
    assert_close(o[0], ref.sum_squares(x), dtype, "sum_squares")
    assert_close(o, c, dtype, "sum_squares vs cpu")
    (c,), (o,) = run_pair("elementwise", "scale", [x, -1.7], [((n,), dtype)])
    assert_close(o, ref.scale(x, -1.7), dtype, "scale")
    d = dev(x)
    gpu_mod("elementwise").scale(d, 2.0, d)                 # in place
    assert_close(d.copy_to_host(), 2.0 * x.astype(np.float64), dtype, "scale in place")


def test_dropout_rate_one(rng):
    x, u = rng.standard_normal(40), rng.random(40)
    out, mask = dev(poisoned(40, np.float64)), dev(poisoned(40, np.float64))
    gpu_mod("elementwise").dropout_forward(dev(x), dev(u), 1.0, out, mask)
    assert not out.copy_to_host().any() and not mask.copy_to_host().any()


# ----------------------------------------------------------------------------------------- backend
def test_backend_arrays(rng):
    be = _cuda.CUDABackend()
    assert be.name == "cuda" and be.is_device
    assert "dense_forward" in be.kernels and callable(be.adam_update)
    z = be.zeros((3, 45), np.float32)
    assert z.dtype == np.float32 and not be.to_numpy(z).any()
    f = be.full((70,), 2.5, np.float64)
    np.testing.assert_array_equal(be.to_numpy(f), np.full(70, 2.5))
    a = rng.standard_normal((4, 5))
    d = be.asarray(a, np.float32)
    assert d.dtype == np.float32 and d.shape == (4, 5)
    np.testing.assert_array_equal(be.to_numpy(d), a.astype(np.float32))
    assert be.asarray(d) is d
    np.testing.assert_array_equal(be.to_numpy(be.asarray(d, np.float64)), a.astype(np.float32))
    e = be.empty((20,), np.float32)
    be.copy_(e, a.ravel())                                   # host -> device
    np.testing.assert_array_equal(be.to_numpy(e), a.ravel().astype(np.float32))
    e2 = be.empty((4, 5), np.float32)
    be.copy_(e2, e)                                          # device -> device, reshaped
    np.testing.assert_array_equal(be.to_numpy(e2), a.astype(np.float32))
    be.synchronize()


@pytest.mark.parametrize("dtype", DTYPES)
def test_backend_uniform(dtype):
    be = _cuda.CUDABackend()
    u1 = be.to_numpy(be.uniform((3, 400), dtype, np.random.default_rng(5)))
    u2 = be.to_numpy(be.uniform((3, 400), dtype, np.random.default_rng(5)))
    u3 = be.to_numpy(be.uniform((3, 400), dtype, np.random.default_rng(6)))
    assert u1.dtype == dtype and u1.shape == (3, 400)
    np.testing.assert_array_equal(u1, u2)
    assert not np.array_equal(u1, u3)
    assert u1.min() >= 0.0 and u1.max() < 1.0
    assert abs(u1.mean() - 0.5) < 0.03 and abs(u1.var() - 1 / 12) < 0.01
    assert len(np.unique(u1)) > 1190
    # counter-based: the numbers do not depend on the launch shape
    _common.config.max_blocks = 1
    u4 = be.to_numpy(be.uniform((3, 400), dtype, np.random.default_rng(5)))
    np.testing.assert_array_equal(u1, u4)


@pytest.mark.parametrize("dtype", DTYPES)
def test_backend_normal(dtype):
    be = _cuda.CUDABackend()
    z1 = be.to_numpy(be.normal((2, 500), dtype, np.random.default_rng(5)))
    z2 = be.to_numpy(be.normal((2, 500), dtype, np.random.default_rng(5)))
    z3 = be.to_numpy(be.normal((2, 500), dtype, np.random.default_rng(6)))
    assert z1.dtype == dtype and z1.shape == (2, 500)
    np.testing.assert_array_equal(z1, z2)
    assert not np.array_equal(z1, z3)
    assert np.all(np.isfinite(z1))
    assert abs(z1.mean()) < 0.1 and abs(z1.var() - 1.0) < 0.15
    assert 0.6 < np.mean(np.abs(z1) < 1.0) < 0.76               # 0.683 for a standard normal
    _common.config.max_blocks = 1                               # launch shape does not matter
    np.testing.assert_array_equal(z1, be.to_numpy(be.normal((2, 500), dtype,
                                                            np.random.default_rng(5))))


def test_philox_known_answer():
    """Philox4x32-10 of counter 0, key 0 (Random123's known-answer vector), first two words."""
    r0, r1 = _common._philox.py_func(*(np.uint64(0),) * 4)
    assert (int(r0), int(r1)) == (0x6627E8D5, 0xE169C58D)


def test_unavailable_without_permission(monkeypatch):
    if not _cuda.is_simulator():
        pytest.skip("only meaningful under the simulator")
    monkeypatch.setenv("NUMBANET_ALLOW_CUDASIM", "0")
    assert not _cuda.is_available()
    assert "simulator" in _cuda.unavailable_reason()
    with pytest.raises(RuntimeError, match="simulator"):
        _cuda.CUDABackend()


# ---------------------------------------------------------------------------------------- coverage
def test_every_kernel_was_launched(request):
    """Runs last: every registered CUDA kernel ran at least once in this module."""
    if request.config.getoption("keyword") or request.config.getoption("markexpr"):
        pytest.skip("a -k/-m selection ran only part of the module")
    mine = {"dense", "conv2d", "pool", "activations", "elementwise", "_common"}
    # the loss kernels and the newer optimizers' are covered (and checked for launches) by
    # tests/test_cuda_losses.py and tests/test_cuda_optim.py
    names = {k.name for k in _common.KERNELS if k.name.split(".")[0] in mine}
    names -= {"pool._upsample_fwd", "pool._upsample_bwd"}    # tests/test_conv_transpose.py
    names |= {"optim._sgd", "optim._adagrad", "optim._rmsprop", "optim._adam"}
    missing = sorted(names - _common.LAUNCHED)
    assert not missing, f"never launched: {missing}"


# ----------------------------------------------------------------------------- launch machinery
class _FakeDeviceArray:
    """What a direct launch reads of a numba device array, over a host array."""

    def __init__(self, a):
        self.a, self.gpu_data = a, object()
        self.shape, self.strides, self.size, self.dtype = a.shape, a.strides, a.size, a.dtype

    @property
    def device_ctypes_pointer(self):
        import ctypes
        return ctypes.c_void_p(self.a.ctypes.data)

    def reshape(self, *shape):
        return _FakeDeviceArray(self.a.reshape(*shape))

    def is_c_contiguous(self):
        return self.a.flags["C_CONTIGUOUS"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_view_packs_like_a_reshape(dtype):
    """A View is packed exactly as numba packs the reshaped array (pointer, size, itemsize,
    shape, C strides); anything that is not a device array is left to numba."""
    base = _FakeDeviceArray(np.zeros((4, 6), dtype))
    ptr, item = base.a.ctypes.data, np.dtype(dtype).itemsize
    for shape in [(2, 3, 4), (24,), (1, 24), (4, 6)]:
        v = _common.view(base, *shape)
        assert _common._pack_array(v, []) == _common._pack_array(base.reshape(*shape), [])
        assert v.materialize().shape == shape
    assert _common._pack_array(_common.flat(_common.view(base, 2, 12)), []) == \
        [0, 0, 24, item, ptr, 24, item]
    with pytest.raises(ValueError, match="cannot view 24 elements as"):
        _common.view(base, 5, 5)
    assert _common._pack_array(np.zeros(3, dtype), []) is None
    with pytest.raises(ValueError, match=r"cannot view a non-contiguous array of shape \(4, 3\)"):
        _common.view(_FakeDeviceArray(np.zeros((4, 6), dtype)[:, ::2]), 12)


def test_allocator_block_sizes():
    """512-byte steps up to 1 MiB, then whole MiB: every request fits its block."""
    from numbanet._cuda import _rounded
    mib = 1 << 20
    assert [_rounded(n) for n in (0, 1, 512, 513, mib, mib + 1, 5 * mib - 1)] == \
        [512, 512, 512, 1024, mib, 2 * mib, 5 * mib]


def test_bad_allocator_setting_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("NUMBANET_CUDA_ALLOCATOR", "pool")
    with pytest.raises(ValueError, match="NUMBANET_CUDA_ALLOCATOR must be 'caching' or 'numba', "
                                         "got 'pool'"):
        _cuda._install_allocator()
