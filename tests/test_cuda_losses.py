"""CUDA loss kernels (kernels/cuda/losses.py) against the CPU kernels of the same name and the
float64 references, with per-sample weights.

Runs in Numba's CUDA simulator by default (conftest sets NUMBA_ENABLE_CUDASIM=1), or on a GPU with
NUMBANET_TEST_REAL_CUDA=1. Launch knobs are shrunk (32 threads per block, at most 3 blocks, 4-lane
rows of 2 per block) so tiny arrays still cross block edges and run grid-stride loops more than
once. Every launch is checked against the kernel's declared argument spec (what
tests/test_cuda_ptx.py compiles), and the last test checks that every loss kernel was launched.
"""
import importlib

import numpy as np
import pytest
from conftest import assert_close, dev, poisoned, run_pair
from test_kernels_losses import LOSSES, embedding_case, make_inputs, make_weights

import reference as ref
from numbanet import _cuda
from numbanet.backend import kernel_names
from numbanet.kernels import scalar

if _cuda.cuda is None or not (_cuda.is_simulator() or _cuda.is_available()):
    pytest.skip(f"CUDA kernels cannot run here: {_cuda.unavailable_reason()}",
                allow_module_level=True)

from numbanet.kernels.cuda import _common  # noqa: E402

DTYPES = [np.float32, np.float64]
LABEL_DTYPES = [np.int32, np.int64]
CPU = importlib.import_module("numbanet.kernels.cpu.losses")
GPU = importlib.import_module("numbanet.kernels.cuda.losses")


@pytest.fixture(autouse=True)
def small_launches(monkeypatch):
    """Tiny blocks and grids, spec checks on; CUDA usable in the simulator for these tests."""
    monkeypatch.setenv("NUMBANET_ALLOW_CUDASIM", "1")
    c = _common.config
    for name, value in (("threads", 32), ("max_blocks", 3), ("row_block", (4, 2)),
                        ("check_signatures", True)):
        monkeypatch.setattr(c, name, value)


def test_same_public_names_as_cpu():
    assert kernel_names(GPU) == kernel_names(CPU)


# losses whose CUDA kernels are flat grid-stride loops (the others are row-wise)
POINTWISE = {loss.name for loss in scalar.LOSSES if loss.pointwise}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,shape", [(n, s) for n in LOSSES for s in [(9, 5), (1, 1), (25, 4)]
                                        if s != (25, 4) or n in POINTWISE])
def test_loss(name, dtype, shape, rng):
    """(9, 5): row kernels loop over 5 row groups on 3 blocks, 4 lanes over 5 columns; (25, 4),
    flat kernels only (row kernels are slow in the simulator): their grid-stride loops go round
    more than once (100 elements > 3 blocks x 32 threads)."""
    label_dtype = LABEL_DTYPES[rng.integers(2)]
    t, p = make_inputs(name, shape, dtype, rng, label_dtype)
    if name == "binary_crossentropy":
        p.flat[:2] = (0.0, 1.0)                  # clipped: zero gradient there
    w = make_weights(shape[0], dtype, rng)
    params = list(LOSSES[name][0])
    (c,), (o,) = run_pair("losses", f"{name}_forward", [t, p, *params, w], [((1,), dtype)])
    assert_close(o[0], getattr(ref, f"{name}_forward")(t, p, *params, w), dtype, "forward")
    assert_close(o, c, dtype, "forward vs cpu")
    (c,), (g,) = run_pair("losses", f"{name}_backward", [t, p, *params, w], [(shape, dtype)])
    assert_close(g, getattr(ref, f"{name}_backward")(t, p, *params, w), dtype, "backward")
    assert_close(g, c, dtype, "backward vs cpu")


@pytest.mark.parametrize("name", list(LOSSES))
def test_loss_gradient_in_place(name, rng):
    """grad written over y_pred."""
    t, p = make_inputs(name, (7, 6), np.float64, rng)
    w = make_weights(7, np.float64, rng)
    params = list(LOSSES[name][0])
    d = dev(p)
    getattr(GPU, f"{name}_backward")(dev(t), d, *params, dev(w), d)
    assert_close(d.copy_to_host(), getattr(ref, f"{name}_backward")(t, p, *params, w), np.float64)


@pytest.mark.parametrize("name,params", [("binary_focal_crossentropy", (0.5, 0.3, False, 1e-7)),
                                         ("binary_focal_crossentropy_logits", (0.0, 0.3, True)),
                                         ("categorical_focal_crossentropy", (0.5, 0.8, 1e-7)),
                                         ("categorical_focal_crossentropy_logits", (0.0, 1.0))])
def test_focal_settings(name, params, rng):
    t, p = make_inputs(name, (6, 3), np.float64, rng)
    w = make_weights(6, np.float64, rng)
    (c,), (o,) = run_pair("losses", f"{name}_forward", [t, p, *params, w], [((1,), np.float64)])
    assert_close(o[0], getattr(ref, f"{name}_forward")(t, p, *params, w), np.float64)
    (c,), (g,) = run_pair("losses", f"{name}_backward", [t, p, *params, w], [((6, 3), np.float64)])
    assert_close(g, getattr(ref, f"{name}_backward")(t, p, *params, w), np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["binary_crossentropy_logits", "categorical_crossentropy_logits",
                                  "sparse_categorical_crossentropy_logits",
                                  "binary_focal_crossentropy_logits",
                                  "categorical_focal_crossentropy_logits"])
def test_extreme_logits_stay_finite(name, dtype):
    z = np.array([[1000.0, -1000.0, 0.0], [-1000.0, -1000.0, -1000.0], [1e30, -1e30, 3.0],
                  [88.0, -104.0, 0.5]], dtype=dtype)
    y = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], dtype=dtype)
    t = np.argmax(y, axis=1) if name.startswith("sparse") else y
    w = np.ones(4, dtype=dtype)
    params = list(LOSSES[name][0])
    (c,), (o,) = run_pair("losses", f"{name}_forward", [t, z, *params, w], [((1,), dtype)])
    assert np.isfinite(o[0])
    assert_close(o, c, dtype, "forward vs cpu")
    (c,), (g,) = run_pair("losses", f"{name}_backward", [t, z, *params, w], [(z.shape, dtype)])
    assert np.all(np.isfinite(g))
    assert_close(g, c, dtype, "backward vs cpu")


@pytest.mark.parametrize("label_dtype", LABEL_DTYPES)
@pytest.mark.parametrize("name", ["sparse_categorical_crossentropy",
                                  "sparse_categorical_crossentropy_logits"])
def test_sparse_label_out_of_range_gives_nan(name, label_dtype, rng):
    t, p = make_inputs(name, (6, 4), np.float64, rng, label_dtype)
    params = list(LOSSES[name][0])
    t[2] = 4
    out = dev(poisoned((1,), np.float64))
    getattr(GPU, f"{name}_forward")(dev(t), dev(p), *params, dev(np.ones(6)), out)
    assert np.isnan(out.copy_to_host()[0])


def test_loss_reduction_is_repeatable(rng):
    """The grid reduction's block counter is reset: the same call twice gives the same bits."""
    t, p, w = rng.standard_normal((40, 7)), rng.standard_normal((40, 7)), rng.random(40)
    outs = []
    for _ in range(2):
        out = dev(poisoned((1,), np.float64))
        GPU.mse_forward(dev(t), dev(p), dev(w), out)
        outs.append(out.copy_to_host()[0])
    assert outs[0] == outs[1]
    assert_close(outs[0], ref.mse_forward(t, p, w), np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(9, 5), (1, 1)])
@pytest.mark.parametrize("name,p", [("contrastive", None), ("triplet_margin", 2.0),
                                    ("triplet_margin", 1.0), ("triplet_margin", 3.0)])
def test_embedding_loss(name, p, shape, dtype, rng):
    xs, extra = embedding_case(name, shape, dtype, rng, p)
    w = make_weights(shape[0], dtype, rng)
    k = 2 if name == "contrastive" else 3
    (c,), (o,) = run_pair("losses", f"{name}_forward", [*xs, *extra, w], [((1,), dtype)])
    assert_close(o[0], getattr(ref, f"{name}_forward")(*xs, *extra, w), dtype, "forward")
    assert_close(o, c, dtype, "forward vs cpu")
    cs, gs = run_pair("losses", f"{name}_backward", [*xs, *extra, w], [(shape, dtype)] * k)
    for i, (g, c, r) in enumerate(zip(gs, cs, getattr(ref, f"{name}_backward")(*xs, *extra, w))):
        assert_close(g, r, dtype, f"grad {i}")
        assert_close(g, c, dtype, f"grad {i} vs cpu")


def test_embedding_gradients_in_place(rng):
    xs, extra = embedding_case("triplet_margin", (7, 5), np.float64, rng)
    w = make_weights(7, np.float64, rng)
    ds = [dev(x) for x in xs]
    GPU.triplet_margin_backward(*ds, *extra, dev(w), *ds)
    for d, r in zip(ds, ref.triplet_margin_backward(*xs, *extra, w)):
        assert_close(d.copy_to_host(), r, np.float64)
    xs, extra = embedding_case("contrastive", (7, 5), np.float64, rng)
    ds = [dev(x) for x in xs]
    GPU.contrastive_backward(*ds, *extra, dev(w), ds[0], ds[1])
    for d, r in zip(ds, ref.contrastive_backward(*xs, *extra, w)):
        assert_close(d.copy_to_host(), r, np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
def test_loss_classes_on_the_cuda_backend(dtype, rng):
    """Loss.forward/backward with the CUDA backend (ones cached on the device, explicit device
    weights, the logits path) agree with the NumPy-level call on the CPU."""
    from numbanet import losses as LS
    be = _cuda.CUDABackend()
    n = 6
    w = make_weights(n, dtype, rng)
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-5, atol=1e-6)
    cases = [(LS.SparseCategoricalCrossentropy(), LS.SparseCategoricalCrossentropy(True),
              "sparse_categorical_crossentropy_logits", True),
             (LS.Dice(0.1), LS.Dice(0.1), "dice", False),
             (LS.BinaryFocalCrossentropy(True), LS.BinaryFocalCrossentropy(True, from_logits=True),
              "binary_focal_crossentropy_logits", True)]
    for loss, cpu, kname, logits in cases:
        t, p = make_inputs(kname, (n, 4), dtype, rng)
        if not loss.sparse:
            t, p = t.reshape(n, 2, 2), p.reshape(n, 2, 2)   # samples of any shape: flattened
        for weights in (None, w):
            dw = None if weights is None else be.asarray(weights)
            got = loss.forward(be, be.asarray(t), be.asarray(p), dw, logits=logits)
            grad = loss.backward(be, be.asarray(t), be.asarray(p), dw, logits=logits)
            np.testing.assert_allclose(be.to_numpy(got)[0], cpu(t, p, sample_weight=weights),
                                       **tol)
            assert be.to_numpy(grad).shape == p.shape
            np.testing.assert_allclose(be.to_numpy(grad), cpu.gradient(t, p, weights), **tol)
    xs, extra = embedding_case("triplet_margin", (n, 3), dtype, rng)
    loss = LS.TripletMarginLoss(*extra)
    got = loss.forward(be, *[be.asarray(x) for x in xs], be.asarray(w))
    np.testing.assert_allclose(be.to_numpy(got)[0], loss(*xs, sample_weight=w), **tol)
    for g, c in zip(loss.backward(be, *[be.asarray(x) for x in xs]), loss.gradient(*xs)):
        np.testing.assert_allclose(be.to_numpy(g), c, **tol)
    xs, extra = embedding_case("contrastive", (n, 3), dtype, rng)
    loss = LS.ContrastiveLoss(*extra)
    got = loss.forward(be, *[be.asarray(x) for x in xs])
    np.testing.assert_allclose(be.to_numpy(got)[0], loss(*xs), **tol)
    for g, c in zip(loss.backward(be, *[be.asarray(x) for x in xs], be.asarray(w)),
                    loss.gradient(*xs, sample_weight=w)):
        np.testing.assert_allclose(be.to_numpy(g), c, **tol)


def test_every_loss_kernel_was_launched(request):
    """Runs last: every registered CUDA loss kernel ran at least once in this module."""
    if request.config.getoption("keyword") or request.config.getoption("markexpr"):
        pytest.skip("a -k/-m selection ran only part of the module")
    names = {k.name for k in _common.KERNELS if k.name.split(".")[0] == "losses"}
    missing = sorted(names - _common.LAUNCHED)
    assert not missing, f"never launched: {missing}"
