"""numbanet.optimizer_tour: the same network trained on the digits with each optimizer."""
import math

import numpy as np
import pytest

import numbanet as nb
from numbanet import optimizer_tour as tour
from numbanet import optimizers as O


def test_tiny_tour_returns_decreasing_losses():
    before = nb.random.get_rng()
    losses = tour.compare_optimizers({"adam": O.Adam(learning_rate=0.01),
                                      "lbfgs": O.LBFGS(max_iter=2, line_search_fn="strong_wolfe")},
                                     epochs=2, seed=3)
    assert nb.random.get_rng() is before                     # the global generator is untouched
    assert list(losses) == ["adam", "lbfgs"]
    initial = math.log(10)                                   # about ln(10) from small weights
    for name, values in losses.items():
        assert len(values) == 2 and all(math.isfinite(v) for v in values), name
        assert values[1] < values[0] < initial, (name, values)


def test_same_start_and_batches_give_the_same_curve():
    a = tour.compare_optimizers(["sgd", O.SGD(momentum=0.9)], epochs=1, seed=5)
    b = tour.compare_optimizers({"SGD": O.SGD(), "m": O.SGD(momentum=0.9)}, epochs=1, seed=5)
    assert list(a) == ["sgd", "SGD"] and a["sgd"] == b["SGD"] and a["SGD"] == b["m"]


def test_plot_is_written(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "tour.png"
    chosen = {"Adam": O.Adam(learning_rate=0.01), "L-BFGS": O.LBFGS(max_iter=3)}
    losses = tour.compare_optimizers(chosen, epochs=1, plot=path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".numbanet-plot-*"))       # no temporary file left behind
    # non-finite values (a run that blew up) are left out of the drawing
    losses["Adam"] = [math.nan]
    tour.plot_losses(losses, tmp_path / "nan.png", initial_loss=2.3, optimizers=chosen)
    assert (tmp_path / "nan.png").stat().st_size > 0


def test_unwritable_plot_fails_before_training(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.setattr(tour, "_train",
                        lambda *a: (_ for _ in ()).throw(AssertionError("trained")))
    with pytest.raises(FileNotFoundError, match="no such directory"):
        tour.compare_optimizers(["adam"], epochs=1, plot=tmp_path / "missing" / "tour.png")
    with pytest.raises(IsADirectoryError, match="is a directory"):
        tour.compare_optimizers(["adam"], epochs=1, plot=tmp_path)


def test_default_optimizers_cover_every_class():
    chosen = tour.default_optimizers()
    classes = {type(o) for o in chosen.values()}
    assert set(O.OPTIMIZERS.values()) <= classes
    assert any(isinstance(o, O.Adam) and o.amsgrad for o in chosen.values())
    panels = {tour._family(o) for o in chosen.values()}
    assert panels == set(range(len(tour.FAMILIES)))


@pytest.mark.parametrize("kw,match", [
    (dict(epochs=0), "epochs=0"), (dict(epochs=1.5), "epochs=1.5"),
    (dict(optimizers=[]), "no optimizers"), (dict(optimizers="adam"), "must be None, a dict"),
    (dict(optimizers=["adam", "adam"]), "distinct"), (dict(optimizers=["nosuch"]), "nosuch"),
    (dict(plot=""), "plot=''"),
])
def test_bad_arguments(kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        tour.compare_optimizers(**kw)


def test_model_is_small():
    model = tour.build_model()
    assert model.count_params() == 64 * 32 + 32 + 32 * 10 + 10
    assert model.output_shape == (10,) and np.dtype(model.dtype) == np.float32
