"""CPU conv2d kernels: float64 reference, finite differences, PyTorch; every strategy (direct for
unit strides and small C*KH*KW, Winograd F(2x2, 3x3) for other 3x3 unit-stride layers, im2col +
GEMM otherwise), serial and parallel, in blocks of any size; the weight and bias gradients with
accumulate off (poisoned outputs) and on (added into previous contents); the same bits on any
thread count."""
import numba
import numpy as np
import pytest
from conftest import accumulate_runs, accumulated, poisoned

import reference as ref
from numbanet.kernels.cpu import activations as A
from numbanet.kernels.cpu import conv2d as K2
from numbanet.kernels.scalar import ACTIVATION_CODES
from numbanet.testing import gradcheck

DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 2e-5, np.float64: 1e-11}

# (N, C, H, W, K, KH, KW, stride, pad, dil, out_hw); out_hw None = symmetric padding, otherwise
# the output shape fixes the bottom/right padding (smaller or larger than the top/left one).
CASES = [
    (2, 3, 7, 9, 4, 3, 3, (1, 1), (1, 1), (1, 1), None),      # "same" 3x3, odd sizes (RGB: direct)
    (2, 3, 8, 8, 5, 3, 3, (2, 2), (1, 1), (1, 1), None),      # stride 2, kernel > stride
    (1, 4, 9, 7, 3, 2, 3, (2, 1), (0, 1), (2, 1), None),      # non-square kernel, dilation, N=1
    (3, 5, 9, 8, 2, 3, 3, (1, 2), (1, 0), (2, 2), None),      # dilation 2 both ways
    (2, 4, 6, 6, 3, 3, 3, (2, 2), (1, 1), (1, 1), (3, 2)),    # bottom/right pad 0 (shorter out)
    (2, 4, 6, 6, 3, 3, 3, (1, 1), (0, 1), (1, 1), (5, 6)),    # bottom pad 1, right pad 0/1 asym
    (2, 3, 5, 5, 2, 3, 3, (1, 1), (2, 2), (1, 1), None),      # pad 2 = kernel - 1
    (2, 2, 4, 4, 3, 1, 1, (1, 1), (1, 1), (1, 1), None),      # 1x1 pad 1: border is pure bias
    (2, 40, 3, 4, 2, 1, 1, (1, 1), (1, 1), (1, 1), None),     # the same on the GEMM path
    (2, 6, 5, 6, 1, 1, 1, (1, 1), (0, 0), (1, 1), None),      # 1x1, K=1
    (2, 20, 4, 5, 3, 1, 1, (2, 2), (0, 0), (1, 1), None),     # 1x1 stride 2, GEMM path
    (2, 1, 9, 8, 4, 3, 3, (1, 1), (1, 1), (1, 1), None),      # C=1 (first layer): direct path
    (2, 1, 9, 9, 3, 3, 3, (2, 2), (0, 0), (1, 1), None),      # C=1 stride 2: GEMM path
    (1, 2, 7, 6, 3, 2, 2, (1, 1), (1, 0), (2, 1), (8, 5)),    # direct, dilation, asym pad
    (2, 1, 7, 8, 2, 3, 4, (1, 1), (1, 2), (1, 1), None),      # direct, KW=4: 3 taps + 1
    (1, 1, 9, 10, 2, 3, 3, (1, 1), (2, 2), (2, 2), None),     # direct, dilation 2
    (2, 2, 4, 4, 3, 5, 5, (1, 1), (2, 2), (1, 1), None),      # kernel bigger than the image
    (1, 1, 1, 1, 1, 1, 1, (1, 1), (0, 0), (1, 1), None),      # everything 1
    (2, 4, 7, 9, 5, 3, 3, (1, 1), (1, 1), (1, 1), None),      # Winograd: odd sizes, "same"
    (1, 5, 6, 5, 3, 3, 3, (1, 1), (0, 0), (1, 1), None),      # Winograd "valid" (4x3 out)
    (2, 4, 5, 6, 2, 3, 3, (1, 1), (2, 2), (1, 1), None),      # Winograd pad 2 (7x8 out)
    (2, 4, 6, 7, 3, 3, 3, (1, 1), (1, 0), (1, 1), (5, 4)),    # Winograd, output cropped
    (1, 6, 2, 3, 2, 3, 3, (1, 1), (1, 1), (1, 1), None),      # Winograd, one tile row
    (2, 6, 1, 5, 2, 3, 3, (1, 1), (1, 1), (1, 1), None),      # 1-row output: GEMM
]
# big enough for the parallel paths: direct, GEMM in bands of rows, GEMM of whole images
PAR_CASES = [
    (16, 1, 32, 32, 16, 3, 3, (1, 1), (1, 1), (1, 1), None),
    (8, 8, 16, 16, 16, 3, 3, (1, 1), (1, 1), (1, 1), None),
    (8, 8, 23, 21, 16, 3, 3, (2, 2), (1, 1), (1, 1), None),
    (2, 32, 20, 30, 32, 3, 3, (1, 1), (1, 1), (1, 1), None),
    (4, 8, 17, 15, 16, 3, 3, (1, 1), (2, 2), (2, 2), None),
    (16, 1, 20, 20, 32, 3, 3, (1, 1), (1, 1), (1, 1), (21, 19)),
    (3, 16, 9, 11, 26, 3, 3, (1, 1), (1, 1), (1, 1), None),
    (40, 9, 5, 4, 32, 3, 3, (1, 1), (0, 1), (1, 1), (4, 3)),
]


def case_id(c):
    N, C, H, W, K, KH, KW, st, pd, dl, ohw = c
    return f"N{N}C{C}{H}x{W}K{K}k{KH}x{KW}s{st[0]}{st[1]}p{pd[0]}{pd[1]}d{dl[0]}{dl[1]}" + (
        f"o{ohw[0]}x{ohw[1]}" if ohw else "")


def out_hw(c):
    N, C, H, W, K, KH, KW, st, pd, dl, ohw = c
    if ohw is not None:
        return ohw
    return ((H + 2 * pd[0] - dl[0] * (KH - 1) - 1) // st[0] + 1,
            (W + 2 * pd[1] - dl[1] * (KW - 1) - 1) // st[1] + 1)


def make(c, dtype, rng):
    N, C, H, W, K, KH, KW, st, pd, dl, _ = c
    OH, OW = out_hw(c)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, C, KH, KW)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    g = rng.standard_normal((N, K, OH, OW)).astype(dtype)
    return x, w, b, g, (*st, *pd, *dl)


def assert_close(actual, expected, dtype):
    """Relative to each element and to the magnitude of the whole array."""
    expected = np.asarray(expected, dtype=np.float64)
    scale = float(np.max(np.abs(expected))) if expected.size else 1.0
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=RTOL[dtype],
                               atol=RTOL[dtype] * max(scale, 1e-300))


def run_all(x, w, b, g, geo):
    """All four kernels on poisoned outputs."""
    out = poisoned(g.shape, x.dtype)
    K2.conv2d_forward(x, w, b, *geo, out)
    gi = poisoned(x.shape, x.dtype)
    K2.conv2d_backward_input(g, w, *geo, gi)
    gw = poisoned(w.shape, x.dtype)
    K2.conv2d_backward_weight(x, g, *geo, False, gw)
    gb = poisoned(b.shape, x.dtype)
    K2.conv2d_backward_bias(g, False, gb)
    return out, gi, gw, gb


def check_against_reference(c, dtype, rng):
    x, w, b, g, geo = make(c, dtype, rng)
    st, pd, dl = c[7], c[8], c[9]
    out, gi, gw, gb = run_all(x, w, b, g, geo)
    assert_close(out, ref.conv2d_forward(x, w, b, st, pd, dl, out_hw(c)), dtype)
    assert_close(gi, ref.conv2d_backward_input(g, w, x.shape, st, pd, dl), dtype)
    want_w = ref.conv2d_backward_weight(x, g, w.shape, st, pd, dl)
    want_b = ref.conv2d_backward_bias(g)
    assert_close(gw, want_w, dtype)
    assert_close(gb, want_b, dtype)
    # accumulate off: the bits above (params too); on: added into previous contents
    wo, bo = (w.shape, dtype), (b.shape, dtype)
    for fn, args, outs, got, want in [
            (K2.conv2d_backward_params, (x, g, *geo), [wo, bo], (gw, gb), (want_w, want_b)),
            (K2.conv2d_backward_weight, (x, g, *geo), [wo], (gw,), (want_w,)),
            (K2.conv2d_backward_bias, (g,), [bo], (gb,), (want_b,))]:
        off, prev, on = accumulate_runs(fn, args, outs, range(len(outs)), rng)
        for a, e in zip(off, got):
            np.testing.assert_array_equal(a, e)
        for a, e in zip(on, accumulated(prev, want)):
            assert_close(a, e, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", CASES, ids=case_id)
def test_against_reference(c, dtype, rng):
    check_against_reference(c, dtype, rng)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", PAR_CASES, ids=case_id)
def test_parallel_paths_against_reference(c, dtype, rng):
    check_against_reference(c, dtype, rng)


def strategy(c):
    N, C, H, W, K, KH, KW, st, pd, dl, _ = c
    return K2._strategy(C, KH, KW, *out_hw(c), *st, *dl)


def parallel(c):
    OH, OW = out_hw(c)
    return K2._use_parallel(c[0], c[4], OH, OW, c[1] * c[5] * c[6])


def test_cases_cover_every_strategy_serial_and_parallel():
    """The shapes above exercise every branch of the dispatch (guards against retuned limits)."""
    assert not any(parallel(c) for c in CASES) and all(parallel(c) for c in PAR_CASES)
    for cases in (CASES, PAR_CASES):
        assert {strategy(c) for c in cases} == {"direct", "winograd", "gemm"}


# a strategy's block-size constant: blocks of one row (tile row), blocks spanning images
BLOCKS = {"gemm": [(K2, "_GEMM_BLOCK_BYTES", 1), (K2, "_GEMM_BLOCK_BYTES", 1 << 16)],
          "winograd": [(K2._wino, "_BLOCK_BYTES", 1), (K2._wino, "_BLOCK_BYTES", 1 << 16)]}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c, block", [
    pytest.param(c, b, id=f"{case_id(c)}-{b[1]}={b[2]}")
    for c in [CASES[18], CASES[21], CASES[1], PAR_CASES[6], PAR_CASES[7], PAR_CASES[2]]
    for b in BLOCKS[strategy(c)]])
def test_blocks_of_any_size(c, block, dtype, rng, monkeypatch):
    """The GEMM and Winograd strategies split images into blocks of rows (tile rows) that may
    end inside an image or span several: the results do not depend on where the blocks end."""
    module, name, value = block
    monkeypatch.setattr(module, name, value)
    if module is K2._wino:
        monkeypatch.setattr(module, "_BLOCK_MIN_TILES", 1)
    check_against_reference(c, dtype, rng)


@pytest.mark.parametrize("c", [PAR_CASES[0], PAR_CASES[2], PAR_CASES[6]], ids=case_id)
def test_same_bits_on_any_thread_count(c, rng):
    """Work is split by shape only (images per unit, fixed weight-gradient chunks)."""
    x, w, b, g, geo = make(c, np.float32, rng)
    runs = []
    for threads in (1, numba.config.NUMBA_NUM_THREADS):
        old = numba.get_num_threads()
        numba.set_num_threads(threads)
        try:
            runs.append(run_all(x, w, b, g, geo))
        finally:
            numba.set_num_threads(old)
    for a, b_ in zip(*runs):
        np.testing.assert_array_equal(a, b_)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_gradient_parallel_path(dtype, rng):
    """conv2d_backward_bias over enough elements for its parallel path, accumulate off
    and on."""
    g = rng.standard_normal((4, 16, 128, 128)).astype(dtype)
    assert g.size >= K2._PARALLEL_MIN_WORK
    off, prev, on = accumulate_runs(K2.conv2d_backward_bias, (g,), [((16,), dtype)], [0], rng)
    want = [ref.conv2d_backward_bias(g)]
    assert_close(off[0], want[0], dtype)
    assert_close(on[0], accumulated(prev, want)[0], dtype)


GRAD_CASES = [
    (2, 2, 5, 4, 3, 3, 3, (1, 1), (1, 1), (1, 1), None),
    (1, 4, 5, 4, 2, 3, 3, (1, 1), (1, 1), (1, 1), None),       # Winograd
    (2, 4, 4, 5, 2, 3, 3, (1, 1), (0, 1), (1, 1), (3, 4)),     # Winograd, cropped output
    (1, 3, 6, 5, 2, 3, 2, (2, 1), (1, 0), (1, 2), (3, 3)),
    (2, 1, 5, 5, 2, 2, 2, (2, 2), (1, 1), (2, 1), None),
    (1, 9, 4, 4, 2, 2, 2, (1, 1), (0, 0), (1, 1), None),
]


@pytest.mark.parametrize("c", GRAD_CASES, ids=case_id)
def test_backward_finite_differences(c, rng):
    """Gradients of sum(conv(x, w, b) * g) w.r.t. x, w and b (float64 central differences)."""
    x, w, b, g, geo = make(c, np.float64, rng)

    def f(x, w, b):
        out = poisoned(g.shape, np.float64)
        K2.conv2d_forward(x, w, b, *geo, out)
        return np.sum(out * g)

    def grad_f(x, w, b):
        _, gi, gw, gb = run_all(x, w, b, g, geo)
        return gi, gw, gb
    gradcheck((f, grad_f), x, w, b, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", CASES[:6] + CASES[11:16] + CASES[18:20] + PAR_CASES[:2],
                         ids=case_id)
def test_against_torch(c, dtype, rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x, w, b, g, geo = make(c, dtype, rng)
    N, C, H, W, K, KH, KW, st, pd, dl, _ = c
    OH, OW = out_hw(c)
    # torch pads symmetrically: pad explicitly (negative = crop) to get this output shape
    extra_h = (OH - 1) * st[0] + dl[0] * (KH - 1) + 1 - H - pd[0]
    extra_w = (OW - 1) * st[1] + dl[1] * (KW - 1) + 1 - W - pd[1]
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    tw = torch.tensor(w, dtype=torch.float64, requires_grad=True)
    tb = torch.tensor(b, dtype=torch.float64, requires_grad=True)
    y = F.conv2d(F.pad(tx, (pd[1], extra_w, pd[0], extra_h)), tw, tb, stride=st, dilation=dl)
    y.backward(torch.tensor(g, dtype=torch.float64))
    out, gi, gw, gb = run_all(x, w, b, g, geo)
    assert_close(out, y.detach().numpy(), dtype)
    assert_close(gi, tx.grad.numpy(), dtype)
    assert_close(gw, tw.grad.numpy(), dtype)
    assert_close(gb, tb.grad.numpy(), dtype)


def test_float32_accumulation_is_accurate(rng):
    """Long reductions (weight and bias gradients over batch x positions) stay accurate in
    float32."""
    c = (8, 1, 40, 40, 4, 3, 3, (1, 1), (1, 1), (1, 1), None)
    x, w, b, g, geo = make(c, np.float32, rng)
    g += 3.0                                   # a large common offset stresses the bias sum
    _, _, gw, gb = run_all(x, w, b, g, geo)
    assert_close(gw, ref.conv2d_backward_weight(x, g, w.shape, (1, 1), (1, 1), (1, 1)), np.float32)
    assert_close(gb, ref.conv2d_backward_bias(g), np.float32)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["relu", "elu", "sigmoid"])
@pytest.mark.parametrize("c", [CASES[1], CASES[11], CASES[18], PAR_CASES[0], PAR_CASES[1]],
                         ids=case_id)
def test_forward_activation(c, name, dtype, rng):
    """pre = conv + b and out = activation(pre) for every strategy, serial and parallel: the
    same bits as conv2d_forward followed by the activation's kernel."""
    x, w, b, g, geo = make(c, dtype, rng)
    code, alpha = ACTIVATION_CODES.index(name), 0.7
    pre, out = poisoned(g.shape, dtype), poisoned(g.shape, dtype)
    K2.conv2d_forward_activation(x, w, b, *geo, code, alpha, pre, out)
    assert_close(pre, ref.conv2d_forward(x, w, b, c[7], c[8], c[9], out_hw(c)), dtype)
    assert_close(out, getattr(ref, f"{name}_forward")(pre.astype(np.float64), alpha), dtype)
    z, y = poisoned(g.shape, dtype), poisoned(g.shape, dtype)
    K2.conv2d_forward(x, w, b, *geo, z)
    getattr(A, f"{name}_forward")(z.reshape(-1), alpha, y.reshape(-1))
    np.testing.assert_array_equal(pre, z)
    np.testing.assert_array_equal(out, y)
    with pytest.raises(ValueError, match="activation must be an int code"):
        K2.conv2d_forward_activation(x, w, b, *geo, 12, alpha, pre, out)
