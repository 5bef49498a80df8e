"""Every CUDA kernel compiles to PTX for sm_90, for float32 and float64 (and int32/int64 labels),
without a GPU: numba-cuda's NVVM runs in subprocesses with the simulator off. With ptxas on the
PATH the PTX is also assembled, and the resource report (registers, spills, shared memory) that
backs ``numbanet compare --resources`` is checked."""
import pytest

from numbanet import _cuda
from numbanet.backend import KERNEL_MODULES

if _cuda.cuda is None:
    pytest.skip(f"numba-cuda unavailable: {_cuda.unavailable_reason()}", allow_module_level=True)

DTYPES = ("float32", "float64")


@pytest.fixture(scope="module")
def resources():
    result = _cuda.kernel_resources(DTYPES, cc=(9, 0))
    if "skip" in result:
        pytest.skip(f"cannot compile PTX here: {result['skip']}")
    return result


def test_every_kernel_compiles(resources):
    rows = resources["rows"]
    failed = [f"{r['kernel']} {r['dtype']} {r['itype']}: {r['error']}"
              for r in rows if "error" in r]
    assert not failed, "\n".join(failed)
    # every kernel registered in this process (all modules imported) was compiled, per dtype
    expected = {(k.name, dt.name, it.name if it else None)
                for k, dt, it in _cuda.kernel_variants(DTYPES)}
    got = {(r["kernel"], r["dtype"], r["itype"]) for r in rows}
    assert expected <= got, sorted(expected - got)
    modules = {r["kernel"].split(".")[0] for r in rows}
    for mod in ("dense", "conv2d", "pool", "activations", "losses", "optim", "elementwise"):
        if mod in KERNEL_MODULES:
            assert mod in modules
    assert {("losses._sparse_forward", "float32", it) for it in ("int32", "int64")} <= got
    # the GEMM tiles read their shared tiles as 16-byte vectors (alignment and unsigned offsets
    # let NVVM merge a thread's run of 4 floats / 2 doubles into one load)
    tiles = [r for r in rows if r["kernel"].endswith("_tile") and "error" not in r]
    assert tiles
    for r in tiles:
        assert r["shared_vector_loads"] > 0, r


def test_ptxas_resources(resources):
    if not resources["ptxas"]:
        pytest.skip("ptxas is not on the PATH")
    rows = [r for r in resources["rows"] if "error" not in r]   # (test_every_kernel_compiles)
    bad = [f"{r['kernel']} {r['dtype']}: {r['ptxas_error']}" for r in rows if "ptxas_error" in r]
    assert not bad, "\n".join(bad)
    for r in rows:
        assert 0 < r["registers"] <= 255, r
    # the GEMM tiles keep their accumulators in registers: no local-memory spills
    tiles = [r for r in rows if r["kernel"].endswith("_tile")]
    assert tiles
    for r in tiles:
        assert r["spill_stores"] == 0 and r["spill_loads"] == 0, r
        assert r["shared_bytes"] > 0, r
    print("\n" + _cuda.format_resources(rows))
