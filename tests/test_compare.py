"""``numbanet compare``: pairing, agreement figures, the no-GPU message and bad arguments."""
import json

import pytest

from numbanet.cli import main
from numbanet.compare import compare, simulator_agreement


def test_compare_cpu_rows_agree_with_float64():
    rows = compare(ops=["dense", "pool"], size="small", repeat=1, cuda="off")
    names = {r["kernel"] for r in rows}
    assert {"dense_forward", "dense_backward_input", "dense_backward_weight",
            "max_pool2d_forward", "avg_pool2d_backward"} <= names
    for r in rows:
        assert r["op"] in ("dense", "pool")
        assert r["cpu_s"] > 0 and r["cpu_err"] < 1e-5, r
        assert r["cuda_s"] is None and r["speedup"] is None


def test_compare_command_without_gpu_uses_the_simulator_for_agreement_only(capsys):
    assert main(["compare", "--ops", "dense,relu_forward", "--size", "small", "--repeat", "1",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert "No GPU" in result["note"] and "simulator" in result["note"]
    rows = {r["kernel"]: r for r in result["rows"]}
    assert set(rows) == {"dense_forward", "dense_forward_activation", "dense_backward_input",
                         "dense_backward_weight", "relu_forward"}
    for r in rows.values():
        assert r["cuda_s"] is None                      # no simulator timings
        assert r["cuda_err"] is not None and r["cuda_err"] < 1e-5, r


def test_compare_covers_global_pooling_on_both_targets():
    """The global pooling kernels have compare inputs (kernel_inputs), and both targets agree
    with the float64 CPU result (CUDA in the simulator)."""
    names = ["global_avg_pool_forward", "global_avg_pool_backward", "global_max_pool_forward",
             "global_max_pool_backward"]
    rows = compare(ops=names, size="small", repeat=1, cuda="off")
    assert sorted(r["kernel"] for r in rows) == sorted(names)
    for r in rows:
        assert r["op"] == "pool" and r["cpu_err"] < 1e-6, r
    errors = simulator_agreement(names)
    assert sorted(errors) == sorted(names)
    for name, err in errors.items():
        assert err is not None and err < 1e-6, (name, err)


def test_compare_rejects_bad_arguments(capsys):
    with pytest.raises(ValueError, match="unknown op conv3d"):
        compare(ops=["conv3d"], size="small", cuda="off")
    with pytest.raises(ValueError, match="unknown size 'huge'"):
        compare(size="huge", cuda="off")
    with pytest.raises(ValueError, match="repeat must be a positive integer, got 0"):
        compare(size="small", repeat=0, cuda="off")
    assert main(["compare", "--ops", "nope", "--size", "small"]) == 2
    assert "unknown op nope" in capsys.readouterr().err


def test_compare_covers_attention_on_both_targets():
    """The attention-softmax kernels have compare inputs (a padding mask, dropout), and both
    targets agree with the float64 CPU result (CUDA in the simulator)."""
    names = ["attention_softmax_backward", "attention_softmax_forward"]
    rows = compare(ops=["attention"], size="small", repeat=1, cuda="off")
    assert sorted(r["kernel"] for r in rows) == names
    for r in rows:
        assert r["op"] == "attention" and r["cpu_s"] > 0 and r["cpu_err"] < 1e-6, r
    errors = simulator_agreement(["attention"])
    assert sorted(errors) == names
    for name, err in errors.items():
        assert err is not None and err < 1e-6, (name, err)


def test_compare_table_points_to_the_pytorch_comparison(capsys):
    assert main(["compare", "--ops", "relu_forward", "--size", "small", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "relu_forward" in out and "benchmarks/vs_torch.py" in out.splitlines()[-1]
