"""CUDA attention-softmax kernels (kernels/cuda/attention.py) against the CPU kernels of the same
name and the float64 references, in Numba's simulator by default (or on a GPU with
NUMBANET_TEST_REAL_CUDA=1).

Tiny shapes with launch knobs shrunk (4-lane rows, 2 rows per block, at most 2 blocks: rows
longer than a block's lanes, several groups of rows per block), every launch checked against
the kernel's declared spec; the last test checks that every kernel of the module was launched.
"""
import numpy as np
import pytest
from conftest import assert_close, dev, poisoned, run_pair

import reference as ref
from numbanet import _cuda
from numbanet.backend import kernel_names

if _cuda.cuda is None or not (_cuda.is_simulator() or _cuda.is_available()):
    pytest.skip(f"CUDA kernels cannot run here: {_cuda.unavailable_reason()}",
                allow_module_level=True)

from numbanet.kernels.cpu import attention as C  # noqa: E402
from numbanet.kernels.cuda import _common  # noqa: E402
from numbanet.kernels.cuda import attention as G  # noqa: E402

DTYPES = [np.float32, np.float64]

# (N, heads, Tq, Tk, mask, causal, rate)
CASES = [
    (2, 2, 3, 7, "holes", False, 0.0),          # Tq != Tk, Tk > lanes, rows of no allowed key
    (1, 3, 5, 3, "none", True, 0.0),            # causal, Tq > Tk
    (2, 1, 3, 6, "random", True, 0.3),          # causal, Tq < Tk, mask and dropout
    (1, 2, 4, 1, "none", False, 0.5),           # Tk = 1
]
IDS = [f"N{c[0]}h{c[1]}-{c[2]}x{c[3]}-{c[4]}{'-causal' if c[5] else ''}-rate{c[6]}"
       for c in CASES]


@pytest.fixture(autouse=True)
def small_launches(monkeypatch):
    monkeypatch.setenv("NUMBANET_ALLOW_CUDASIM", "1")
    for name, value in (("threads", 8), ("max_blocks", 2), ("row_block", (4, 2)),
                        ("check_signatures", True)):
        monkeypatch.setattr(_common.config, name, value)


def inputs(rng, n, heads, tq, tk, mask_kind, rate, dtype):
    b = n * heads
    scores = (3.0 * rng.standard_normal((b, tq, tk))).astype(dtype)
    mask = np.zeros(0, np.uint8)
    if mask_kind != "none":
        mask = (rng.random((n, tq, tk)) < 0.7).astype(np.uint8) * np.uint8(5)
        if mask_kind == "holes":
            mask[0, 1] = 0
    u = rng.random((b, tq, tk)).astype(dtype) if rate > 0 else np.zeros(0, dtype)
    return scores, mask, u


def check(got, cpu, want, dtype, what):
    assert_close(got, want, dtype, what)
    assert_close(got, cpu, dtype, f"{what} vs cpu")


def test_public_names_match_the_cpu_module():
    assert kernel_names(G) == kernel_names(C)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_matches_cpu(case, dtype, rng):
    n, heads, tq, tk, mask_kind, causal, rate = case
    scores, mask, u = inputs(rng, n, heads, tq, tk, mask_kind, rate, dtype)
    shape = scores.shape
    (cp, cw), (gp, gw) = run_pair("attention", "attention_softmax_forward",
                                  [scores, mask, heads, causal, 0.6, u, rate],
                                  [(shape, dtype), (shape, dtype)])
    want_p, want_w = ref.attention_softmax(scores, mask, heads, causal, 0.6, u, rate)
    check(gp, cp, want_p, dtype, "probs")
    check(gw, cw, want_w, dtype, "weights")
    allowed = ref.attention_allowed(mask, heads, causal, shape)
    assert np.all(gp[~allowed] == 0) and np.all(gw[~allowed] == 0)
    g = rng.standard_normal(shape).astype(dtype)
    (cg,), (gg,) = run_pair("attention", "attention_softmax_backward", [cp, u, rate, 0.6, g],
                            [(shape, dtype)])
    check(gg, cg, ref.attention_softmax_backward(cp, u, rate, 0.6, g), dtype, "grad_scores")


@pytest.mark.parametrize("dtype", DTYPES)
def test_outputs_passed_twice(dtype, rng):
    scores, mask, _ = inputs(rng, 2, 1, 3, 5, "holes", 0.0, dtype)
    out = dev(poisoned(scores.shape, dtype))
    G.attention_softmax_forward(dev(scores), dev(mask), 1, True, 0.5, dev(np.zeros(0, dtype)),
                                0.0, out, out)
    probs = out.copy_to_host()
    assert_close(probs, ref.attention_softmax(scores, mask, 1, True, 0.5)[0], dtype, "probs")
    g = rng.standard_normal(scores.shape).astype(dtype)
    u = rng.random(scores.shape).astype(dtype)
    d = dev(g)
    G.attention_softmax_backward(out, dev(u), 0.25, 0.5, d, d)
    assert_close(d.copy_to_host(), ref.attention_softmax_backward(probs, u, 0.25, 0.5, g), dtype,
                 "grad_scores = grad_weights")


def test_empty_shapes():
    e = dev(np.zeros((2, 0, 3), np.float32))
    none = dev(np.zeros(0, np.uint8))
    G.attention_softmax_forward(e, none, 1, False, 1.0, dev(np.zeros(0, np.float32)), 0.0, e, e)
    G.attention_softmax_backward(e, dev(np.zeros(0, np.float32)), 0.0, 1.0, e, e)


def test_bad_arguments_raise():
    s = dev(np.zeros((4, 3, 5), np.float32))
    none, u0 = dev(np.zeros(0, np.uint8)), dev(np.zeros(0, np.float32))
    cases = [
        (lambda: G.attention_softmax_forward(s, dev(np.ones((4, 3, 5), np.uint8)), 2, False, 1.0,
                                             u0, 0.0, s, s),
         r"attention_softmax_forward: mask must have shape \(B // heads, Tq, Tk\) = \(2, 3, 5\)"),
        (lambda: G.attention_softmax_forward(s, none, 3, False, 1.0, u0, 0.0, s, s),
         "attention_softmax_forward: heads must be a positive integer dividing B = 4"),
        (lambda: G.attention_softmax_forward(s, none, 1, False, 1.0, u0, 0.5, s, s),
         r"attention_softmax_forward: u must have shape \(B, Tq, Tk\)"),
        (lambda: G.attention_softmax_forward(s, none, 1, False, 1.0, s, 0.5, s, s),
         "attention_softmax_forward: weights must not be probs when rate > 0"),
        (lambda: G.attention_softmax_forward(s, none, 1, False, 1.0, u0, 0.0,
                                             np.zeros((4, 3, 5), np.float32), s),
         "attention_softmax_forward: probs must be a device array"),
        (lambda: G.attention_softmax_backward(s, u0, 0.0, 1.0, s,
                                              dev(np.zeros((4, 3, 5), np.float64))),
         "attention_softmax_backward: grad_scores must be float32"),
        (lambda: G.attention_softmax_backward(s, u0, 1.0, 1.0, s, s),
         r"attention_softmax_backward: rate must be in \[0, 1\)"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
    # the kernel's spec takes the mask as uint8 only (what the PTX is compiled for)
    f = dev(np.zeros(60, np.float32))
    with pytest.raises(TypeError, match="spec u1 wants uint8"):
        G._forward[1, (4, 2)](f, f, True, 3, 5, 1, False, 1.0, f, 0.0, False, f, f)


def test_every_attention_kernel_was_launched(request):
    """Runs last: every CUDA kernel of kernels/cuda/attention.py ran at least once here."""
    if request.config.getoption("keyword") or request.config.getoption("markexpr"):
        pytest.skip("a -k/-m selection ran only part of the module")
    names = {k.name for k in _common.KERNELS if k.name.startswith("attention.")}
    assert names == {"attention._forward", "attention._backward"}
    missing = sorted(names - _common.LAUNCHED)
    assert not missing, f"never launched: {missing}"
