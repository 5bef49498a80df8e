"""CPU attention-softmax kernels (kernels/cpu/attention.py) against the float64 references:
masks shared by the heads, causal masks over (Tq, Tk) of any shape, rows with no allowed key,
dropout from given uniforms, both dtypes, outputs passed twice, the serial and the prange paths
(the same bits on 1 and 2 threads), central finite differences in float64, bad arguments."""
import numba
import numpy as np
import pytest
from conftest import assert_close, poisoned

import reference as ref
from numbanet.backend import kernel_names
from numbanet.kernels.cpu import attention as K
from numbanet.testing import gradcheck

DTYPES = [np.float32, np.float64]
NO_MASK = np.zeros(0, np.uint8)

# (N, heads, Tq, Tk, mask, causal, rate): mask "none" (size 0), "random", "holes" (random, with
# rows of no allowed key)
CASES = [
    (2, 3, 4, 4, "random", False, 0.0),
    (2, 2, 3, 5, "holes", False, 0.0),          # Tq != Tk, fully masked rows
    (1, 2, 5, 1, "random", False, 0.0),         # Tk = 1
    (2, 1, 3, 6, "none", True, 0.0),            # causal, Tq < Tk
    (1, 3, 6, 3, "none", True, 0.0),            # causal, Tq > Tk
    (2, 2, 5, 4, "holes", True, 0.0),           # causal and a mask
    (2, 2, 4, 7, "random", False, 0.3),         # dropout
    (1, 4, 6, 5, "holes", True, 0.5),
    (3, 1, 1, 9, "none", False, 0.2),           # Tq = 1
]
IDS = [f"N{c[0]}h{c[1]}-{c[2]}x{c[3]}-{c[4]}{'-causal' if c[5] else ''}-rate{c[6]}"
       for c in CASES]


def inputs(rng, n, heads, tq, tk, mask_kind, rate, dtype, spread=3.0):
    """(scores, mask, u) of a call; the mask's "holes" block whole query rows."""
    b = n * heads
    scores = (spread * rng.standard_normal((b, tq, tk))).astype(dtype)
    if mask_kind == "none":
        mask = NO_MASK
    else:
        mask = (rng.random((n, tq, tk)) < 0.7).astype(np.uint8)
        mask[:, :, 0] |= 1 if mask_kind == "random" else 0
        if mask_kind == "holes":
            mask[0, tq // 2] = 0
            mask[-1, -1] = 0
        mask *= rng.integers(1, 256, mask.shape, dtype=np.uint8) | 1     # any nonzero allows
    u = rng.random((b, tq, tk)).astype(dtype) if rate > 0 else np.zeros(0, dtype)
    return scores, mask, u


def forward(scores, mask, heads, causal, scale, u, rate):
    """(probs, weights) of the CPU kernel, into poisoned outputs."""
    probs, weights = poisoned(scores.shape, scores.dtype), poisoned(scores.shape, scores.dtype)
    K.attention_softmax_forward(scores, mask, heads, causal, scale, u, rate, probs, weights)
    return probs, weights


def backward(probs, u, rate, scale, grad_weights):
    grad = poisoned(probs.shape, probs.dtype)
    K.attention_softmax_backward(probs, u, rate, scale, grad_weights, grad)
    return grad


def test_public_kernels():
    assert kernel_names(K) == ["attention_softmax_backward", "attention_softmax_forward"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward_and_backward(case, dtype, rng):
    n, heads, tq, tk, mask_kind, causal, rate = case
    scale = float(rng.uniform(0.2, 1.5))
    scores, mask, u = inputs(rng, n, heads, tq, tk, mask_kind, rate, dtype)
    probs, weights = forward(scores, mask, heads, causal, scale, u, rate)
    want_p, want_w = ref.attention_softmax(scores, mask, heads, causal, scale, u, rate)
    assert_close(probs, want_p, dtype, "probs")
    assert_close(weights, want_w, dtype, "weights")
    allowed = ref.attention_allowed(mask, heads, causal, scores.shape)
    assert np.all(probs[~allowed] == 0) and np.all(weights[~allowed] == 0)
    full = allowed.any(axis=-1)
    np.testing.assert_allclose(probs.sum(axis=-1)[full], 1.0, rtol=1e-5)
    if mask_kind == "holes":
        assert not full.all()               # rows with no allowed key: zeros, not NaN
    g = rng.standard_normal(scores.shape).astype(dtype)
    grad = backward(probs, u, rate, scale, g)
    assert_close(grad, ref.attention_softmax_backward(probs, u, rate, scale, g), dtype,
                 "grad_scores")
    assert np.all(grad[~allowed] == 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_no_mask_equals_a_mask_of_ones(dtype, rng):
    scores, _, _ = inputs(rng, 2, 3, 4, 6, "none", 0.0, dtype)
    ones = np.ones((2, 4, 6), np.uint8)
    for causal in (False, True):
        a = forward(scores, NO_MASK, 3, causal, 0.5, NO_MASK, 0.0)
        b = forward(scores, ones, 3, causal, 0.5, NO_MASK, 0.0)
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)


def test_rate_zero_ignores_given_uniforms(rng):
    scores, mask, u = inputs(rng, 2, 2, 3, 4, "random", 0.3, np.float64)
    a = forward(scores, mask, 2, False, 0.7, u, 0.0)
    b = forward(scores, mask, 2, False, 0.7, np.zeros(0), 0.0)
    for x, y in zip(a + (backward(a[0], u, 0.0, 0.7, scores),),
                    b + (backward(b[0], np.zeros(0), 0.0, 0.7, scores),)):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("dtype", DTYPES)
def test_large_scores_are_stable(dtype, rng):
    scores, mask, _ = inputs(rng, 1, 2, 3, 5, "random", 0.0, dtype)
    scores[0, 0, 0] = 1e4 if dtype == np.float32 else 1e300
    scores[1, 1] += dtype(500)
    probs, _ = forward(scores, mask, 2, False, 1.0, NO_MASK, 0.0)
    want, _ = ref.attention_softmax(scores, mask, 2, False, 1.0)
    assert np.isfinite(probs).all()
    assert_close(probs, want, dtype, "probs")


@pytest.mark.parametrize("dtype", DTYPES)
def test_outputs_passed_twice(dtype, rng):
    """weights may be probs when rate == 0; grad_scores may be grad_weights."""
    scores, mask, _ = inputs(rng, 2, 2, 4, 5, "holes", 0.0, dtype)
    want_p, _ = ref.attention_softmax(scores, mask, 2, True, 0.6)
    out = poisoned(scores.shape, dtype)
    K.attention_softmax_forward(scores, mask, 2, True, 0.6, NO_MASK, 0.0, out, out)
    assert_close(out, want_p, dtype, "probs = weights")
    g = rng.standard_normal(scores.shape).astype(dtype)
    want_g = ref.attention_softmax_backward(out, NO_MASK, 0.0, 0.6, g)
    K.attention_softmax_backward(out, NO_MASK, 0.0, 0.6, g, g)
    assert_close(g, want_g, dtype, "grad_scores = grad_weights")
    u = rng.random(scores.shape).astype(dtype)
    g = rng.standard_normal(scores.shape).astype(dtype)
    want_g = ref.attention_softmax_backward(out, u, 0.4, 0.6, g)
    K.attention_softmax_backward(out, u, 0.4, 0.6, g, g)
    assert_close(g, want_g, dtype, "grad_scores = grad_weights with dropout")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal, rate", [(False, 0.0), (True, 0.25)])
def test_parallel_path_and_thread_count(causal, rate, dtype, rng):
    """Above the thresholds (prange) the results match the references, bit for bit on 1 and 2
    threads."""
    n, heads, tq, tk = 2, 4, 40, 110
    assert n * heads * tq * tk >= max(K._PAR_MIN, K._PAR_MIN_BACKWARD)
    scores, mask, u = inputs(rng, n, heads, tq, tk, "holes", rate, dtype)
    g = rng.standard_normal(scores.shape).astype(dtype)
    runs = []
    before = numba.get_num_threads()
    try:
        for threads in sorted({1, before}):
            numba.set_num_threads(threads)
            probs, weights = forward(scores, mask, heads, causal, 0.125, u, rate)
            runs.append((probs, weights, backward(probs, u, rate, 0.125, g)))
    finally:
        numba.set_num_threads(before)
    want_p, want_w = ref.attention_softmax(scores, mask, heads, causal, 0.125, u, rate)
    probs, weights, grad = runs[0]
    assert_close(probs, want_p, dtype, "probs")
    assert_close(weights, want_w, dtype, "weights")
    assert_close(grad, ref.attention_softmax_backward(probs, u, rate, 0.125, g), dtype, "grad")
    for other in runs[1:]:
        for x, y in zip(runs[0], other):
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("shape", [(0, 3, 4), (2, 0, 4), (2, 3, 0)])
def test_empty_shapes(shape):
    scores = np.zeros(shape, np.float32)
    probs, weights = np.empty(shape, np.float32), np.empty(shape, np.float32)
    K.attention_softmax_forward(scores, NO_MASK, 1, True, 1.0, NO_MASK, 0.0, probs, weights)
    K.attention_softmax_backward(probs, NO_MASK, 0.0, 1.0, weights, probs)


@pytest.mark.parametrize("causal, rate, mask_kind", [(False, 0.0, "none"), (True, 0.0, "holes"),
                                                     (True, 0.4, "random")])
def test_backward_against_finite_differences(causal, rate, mask_kind, rng):
    """d/d scores of sum(weights * g), with the mask and the dropout uniforms held fixed."""
    n, heads, tq, tk, scale = 2, 2, 3, 4, 0.8
    scores, mask, u = inputs(rng, n, heads, tq, tk, mask_kind, rate, np.float64, spread=1.0)
    g = rng.standard_normal(scores.shape)

    def f(x):
        return float(np.sum(forward(x, mask, heads, causal, scale, u, rate)[1] * g))

    def grad_f(x):
        probs, _ = forward(x, mask, heads, causal, scale, u, rate)
        return [backward(probs, u, rate, scale, g)]

    assert gradcheck((f, grad_f), scores)


# ----------------------------------------------------------------------------------- bad arguments
def _good(dtype=np.float32):
    b, tq, tk = 4, 3, 5
    s = np.zeros((b, tq, tk), dtype)
    return dict(scores=s, mask=np.ones((2, tq, tk), np.uint8), heads=2, causal=False, scale=0.5,
                u=np.zeros((b, tq, tk), dtype), rate=0.1, probs=np.zeros_like(s),
                weights=np.zeros_like(s))


def _fwd(**changes):
    args = {**_good(), **changes}
    K.attention_softmax_forward(*args.values())


def _bwd(**changes):
    good = _good()
    args = dict(probs=good["probs"], u=good["u"], rate=0.1, scale=0.5,
                grad_weights=good["weights"], grad_scores=np.zeros_like(good["probs"]))
    args.update(changes)
    K.attention_softmax_backward(*args.values())


BAD_FORWARD = [
    (dict(scores=np.zeros((4, 15), np.float32)), r"scores must be a \(B, Tq, Tk\)"),
    (dict(scores=np.zeros((4, 3, 5), np.int32)), r"scores must be a \(B, Tq, Tk\) float32"),
    (dict(scores=np.zeros((4, 5, 3), np.float32).transpose(0, 2, 1)),
     "scores must be C-contiguous"),
    (dict(mask=np.ones((4, 3, 5), np.uint8)), r"mask must have shape \(B // heads, Tq, Tk\)"),
    (dict(mask=np.ones((2, 3, 5), np.float32)), "mask must be uint8"),
    (dict(mask=np.ones((2, 3, 5), bool)), "mask must be uint8"),
    (dict(heads=3), "heads must be a positive integer dividing B = 4, got 3"),
    (dict(heads=0), "heads must be a positive integer"),
    (dict(heads=2.0), "heads must be a positive integer"),
    (dict(scale="x"), "scale must be a real number"),
    (dict(rate=1.0), r"rate must be in \[0, 1\), got 1.0"),
    (dict(rate=-0.1), r"rate must be in \[0, 1\)"),
    (dict(u=np.zeros(0, np.float32)), r"u must have shape \(B, Tq, Tk\)"),
    (dict(u=np.zeros((4, 3, 5), np.float64)), "u must be float32, got float64"),
    (dict(probs=np.zeros((4, 3, 4), np.float32)), r"probs must have shape \(B, Tq, Tk\) = "
                                                   r"\(4, 3, 5\), got \(4, 3, 4\)"),
    (dict(weights=np.zeros((4, 3, 5), np.float64)), "weights must be float32"),
    (dict(probs=[[0.0]]), "probs must be a NumPy array"),
]


@pytest.mark.parametrize("changes, message", BAD_FORWARD,
                         ids=[next(iter(c)) + str(i) for i, (c, _) in enumerate(BAD_FORWARD)])
def test_forward_rejects_bad_arguments(changes, message):
    with pytest.raises(ValueError, match=f"attention_softmax_forward: {message}"):
        _fwd(**changes)


def test_forward_writes_nothing_when_rejecting():
    good = _good()
    probs, weights = poisoned(good["scores"].shape, np.float32), \
        poisoned(good["scores"].shape, np.float32)
    with pytest.raises(ValueError, match="weights must not be probs when rate > 0"):
        _fwd(probs=probs, weights=probs)
    with pytest.raises(ValueError, match="mask must have shape"):
        _fwd(probs=probs, weights=weights, mask=np.ones((2, 3, 4), np.uint8))
    assert np.isnan(probs).all() and np.isnan(weights).all()


BAD_BACKWARD = [
    (dict(probs=np.zeros((4, 3, 5), np.float16)), r"probs must be a \(B, Tq, Tk\) float32"),
    (dict(u=np.zeros(0, np.float32)), r"u must have shape \(B, Tq, Tk\)"),
    (dict(rate=1.5), r"rate must be in \[0, 1\)"),
    (dict(scale=None), "scale must be a real number"),
    (dict(grad_weights=np.zeros((4, 3, 6), np.float32)), "grad_weights must have shape"),
    (dict(grad_scores=np.zeros((4, 3, 5), np.float64)), "grad_scores must be float32"),
]


@pytest.mark.parametrize("changes, message", BAD_BACKWARD,
                         ids=[next(iter(c)) + str(i) for i, (c, _) in enumerate(BAD_BACKWARD)])
def test_backward_rejects_bad_arguments(changes, message):
    with pytest.raises(ValueError, match=f"attention_softmax_backward: {message}"):
        _bwd(**changes)
