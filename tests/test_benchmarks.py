"""Smoke test of the asv suite: every benchmark module imports, and every benchmark method runs
once after its setup for the cpu / small / float32 parameters, so a broken benchmark fails here
rather than in the middle of an ``asv run``."""
import importlib
import itertools
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import common  # noqa: E402

MODULES = ["bench_activations", "bench_attention", "bench_conv", "bench_dense", "bench_losses",
           "bench_ops", "bench_optim", "bench_pool", "bench_rnn", "bench_sequence",
           "bench_training", "bench_upsampling", "bench_word2vec"]
PREFIXES = ("time_", "peakmem_", "mem_", "track_")
# One axis value each for these; every value of the other axes (activation, loss, ...).
PICK = {"backend": "cpu", "shape": "small", "dtype": "float32"}
# Fresh-process probes (StartUp: every track reads what its setup_cache measured), tested below
# on a small scale.
PROBES = {("StartUp", m) for m in dir(importlib.import_module("benchmarks.bench_training").StartUp)
          if m.startswith("track_")}


def test_every_bench_module_is_listed():
    found = sorted(p.stem for p in (ROOT / "benchmarks").glob("bench_*.py"))
    assert found == MODULES


def _cases():
    for modname in MODULES:
        mod = importlib.import_module(f"benchmarks.{modname}")
        for cname, cls in sorted(vars(mod).items()):
            if not isinstance(cls, type) or cls.__module__ != mod.__name__ or \
                    cname.startswith("_"):                  # asv skips private names too
                continue
            methods = sorted(m for m in dir(cls) if m.startswith(PREFIXES)
                             and (cname, m) not in PROBES)
            if not methods:
                continue
            names, values = getattr(cls, "param_names", []), getattr(cls, "params", [])
            assert len(names) == len(values), f"{cname}: params and param_names differ"
            axes = [[PICK[n]] if n in PICK else v for n, v in zip(names, values)]
            for combo in itertools.product(*axes):
                yield pytest.param(cls, combo, methods,
                                   id=f"{modname}.{cname}-{'-'.join(map(str, combo))}")


@pytest.fixture
def fast_ratios(monkeypatch):
    monkeypatch.setattr(common, "RATIO_REPEATS", 1)
    monkeypatch.setattr(common, "RATIO_MIN_TIME", 0.0)
    monkeypatch.setattr(common, "RATIO_SETTLE", 0.0)


@pytest.mark.parametrize("cls, params, methods", list(_cases()))
def test_benchmark_runs(cls, params, methods, fast_ratios):
    bench = cls()
    try:
        if hasattr(bench, "setup"):
            bench.setup(*params)
    except NotImplementedError as e:            # torch missing: asv skips these too
        pytest.skip(str(e))
    try:
        for m in methods:
            result = getattr(bench, m)(*params)
            if m.startswith("track_"):
                assert isinstance(result, float) and math.isfinite(result) and result > 0, m
    finally:
        if hasattr(bench, "teardown"):
            bench.teardown(*params)


def test_cuda_is_skipped_without_a_real_gpu():
    if common._real_gpu() is None:
        pytest.skip("a real GPU is present")
    with pytest.raises(NotImplementedError):
        common.backend("cuda")


def test_kernel_calls_cover_the_cpu_backend():
    from numbanet.backend import get_backend
    be = get_backend("cpu")
    calls, uncovered = common.kernel_calls(be, "float32")
    assert uncovered == [], ("no benchmark inputs for these kernels: teach benchmarks/common.py "
                             "(numbanet.kernel_inputs) so the cold-compile track covers them")
    assert len(calls) == len(be.kernels)


def test_cold_compile_probe(tmp_path):
    r = common.cold_compile(only=("dense_forward", "scale"), cache_dir=str(tmp_path))
    assert r["kernels"] == 2 and r["compile"] > 0 and r["import"] > 0 and r["uncovered"] == []
    assert any(tmp_path.rglob("*.nbi"))                 # the probe wrote its cache there
    assert sorted(r["per_kernel"]) == ["dense_forward", "scale"]
    assert all(t > 0 for t in r["per_kernel"].values())
    assert r["modules"] == {"dense": r["per_kernel"]["dense_forward"],
                            "elementwise": r["per_kernel"]["scale"]}
    # the per-module compile tracks of the asv suite read these sums
    from benchmarks.bench_training import StartUp
    info = {"cold_compile": r["compile"], "modules": r["modules"], "cache": str(tmp_path)}
    assert StartUp().track_compile_dense(info) == r["modules"]["dense"]
    assert StartUp().track_compile_conv2d(info) == 0.0     # no conv2d kernel in this probe
    assert {f"track_compile_{m}" for m in common.cpu_kernel_modules()} <= set(dir(StartUp))


def test_warm_start_probe():
    # numba's default cache: TrainStep above has filled it with the MLP's kernels
    seconds = common.warm_start("mlp", None)
    assert 0 < seconds < 120
