"""plot_history: a valid PNG, written atomically, one panel per quantity; a clear ImportError."""
import builtins
import struct

import numpy as np
import pytest

import numbanet as nb
from numbanet.plot import _quantities, plot_history, require_matplotlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR" and data.endswith(
        b"IEND\xaeB`\x82")
    return struct.unpack(">II", data[16:24])


def test_panels_pair_train_and_validation_loss_first():
    data = {"accuracy": [1], "loss": [1], "val_loss": [1], "val_accuracy": [1], "val_f1": [1],
            "learning_rate": [1]}
    assert _quantities(data) == [("loss", "loss", "val_loss"),
                                 ("accuracy", "accuracy", "val_accuracy"),
                                 ("f1", None, "val_f1"),
                                 ("learning_rate", "learning_rate", None)]


def test_plot_history_of_a_real_run_writes_a_png(tmp_path, rng):
    pytest.importorskip("matplotlib")
    nb.seed(0)
    model = nb.Sequential([nb.layers.Dense(3, activation="softmax")], input_shape=(4,))
    model.compile(nb.optimizers.SGD(0.1), "sparse_categorical_crossentropy",
                  metrics=["accuracy", "f1"])
    x = rng.standard_normal((30, 4))
    history = model.fit(x, np.argmax(x[:, :3], axis=1), epochs=3, batch_size=10,
                        validation_split=0.2, verbose=0)
    path = tmp_path / "history.png"
    assert plot_history(history, path) == str(path)
    width, height = png_size(path)
    assert (width, height) == (1260, 320)           # 3 panels of 4.2 x 3.2 inches at 100 dpi
    assert [p.name for p in tmp_path.iterdir()] == ["history.png"]      # no temporary left
    plot_history(history.history, tmp_path / "again.png", title="run", dpi=50)
    assert png_size(tmp_path / "again.png")[0] == 630


def test_plot_history_many_panels_nan_and_log_rate(tmp_path):
    pytest.importorskip("matplotlib")
    history = {"loss": [1.0, 0.5, float("nan")], "val_loss": [1.1, 0.7],
               "learning_rate": [0.1, 0.01, 0.001], "mae": [3, 2, 1], "val_mae": [3, 2, 2],
               "precision": [0.1, 0.2, 0.3]}
    plot_history(history, tmp_path / "h.png")
    assert png_size(tmp_path / "h.png") == (1260, 640)          # 4 panels: 3 columns, 2 rows


def test_plot_history_errors(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    with pytest.raises(ValueError, match="empty"):
        plot_history({}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="empty"):
        plot_history(nb.callbacks.History(), tmp_path / "x.png")
    with pytest.raises(TypeError, match="History"):
        plot_history([1, 2], tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"history\['loss'\] must be a list of numbers"):
        plot_history({"loss": ["a"]}, tmp_path / "x.png")
    with pytest.raises(FileNotFoundError):
        plot_history({"loss": [1.0]}, tmp_path / "missing" / "x.png")
    # a failed render leaves neither the target nor a temporary behind
    (tmp_path / "keep.png").write_bytes(b"old")
    from matplotlib.figure import Figure

    def broken(self, *args, **kwargs):
        raise RuntimeError("render failed")
    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(RuntimeError, match="render failed"):
        plot_history({"loss": [1.0]}, tmp_path / "keep.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.png"]
    assert (tmp_path / "keep.png").read_bytes() == b"old"


def test_missing_matplotlib_says_how_to_install(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(ImportError, match=r"pip install numbanet\[plot\]"):
        plot_history({"loss": [1.0]}, tmp_path / "x.png")
    with pytest.raises(ImportError, match=r"pip install numbanet\[plot\]"):
        require_matplotlib()
    assert not (tmp_path / "x.png").exists()
