"""kernels/cpu/_threads.py: split_parallel compiles its serial copy for calls below the threshold
and its parallel copy only at the first call from the threshold on, both giving the reference
result, without numba warnings, and every signature of the serial copy is a plain vectorized loop;
run() covers every unit exactly once."""
import warnings

import numba
import numpy as np
import pytest
from numba import njit, prange

from numbanet.kernels.cpu import _threads

PAR_MIN = 64


@njit(inline="always")
def _axpy_at(i, a, x, y):
    y[i] += a * x[i]


def _axpy(a, x, y):
    for i in prange(x.size):
        _axpy_at(i, a, x, y)


def _total(x, out):
    s = 0.0
    for i in prange(x.size):
        s += x[i]
    out[0] = s


def test_split_parallel_compiles_each_copy_at_its_first_call_without_warnings():
    axpy = _threads.split_parallel(_axpy, "axpy_probe", 1, PAR_MIN)
    total = _threads.split_parallel(_total, "total_probe", lambda x, out: x.size, PAR_MIN)
    assert axpy.__name__ == "axpy_probe" and not axpy.serial.signatures
    rng = np.random.default_rng()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for n, copies in ((PAR_MIN - 1, (1, 0)), (0, (1, 0)), (PAR_MIN, (1, 1)),
                          (5 * PAR_MIN, (1, 1))):
            x, y = rng.standard_normal(n), rng.standard_normal(n)
            expect = y + 2.5 * x
            axpy(2.5, x, y)
            np.testing.assert_allclose(y, expect, rtol=1e-15, atol=0)
            out = np.full(1, np.nan)
            total(x, out)
            np.testing.assert_allclose(out[0], x.sum(), rtol=1e-12, atol=1e-12)
            assert (len(axpy.serial.signatures), len(axpy.parallel.signatures)) == copies
            assert (len(total.serial.signatures), len(total.parallel.signatures)) == copies
    numba_warnings = [w for w in caught if issubclass(w.category, numba.NumbaWarning)]
    assert numba_warnings == []


def test_serial_copy_is_a_vectorized_loop_for_every_signature(tmp_path, monkeypatch):
    """The serial copy goes through numba's parallel pipeline with every transformation off, so
    the loop over an inline helper vectorizes (reference counting of the helper's arrays removed)
    and no signature, the second one included, becomes a threaded parfor. An empty cache
    directory: numba cannot show the LLVM IR of code loaded from its cache."""
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path))
    axpy = _threads.split_parallel(_axpy, "axpy_sigs_probe", 1, PAR_MIN)
    total = _threads.split_parallel(_total, "total_sigs_probe", 0, PAR_MIN)
    rng = np.random.default_rng()
    for dtype in (np.float32, np.float64):
        x, y = rng.standard_normal(40).astype(dtype), rng.standard_normal(40).astype(dtype)
        out = np.zeros(1)
        total(x, out)
        np.testing.assert_allclose(out[0], x.astype(np.float64).sum(), rtol=1e-12)
        expect = (y + dtype(2.5) * x).astype(dtype)
        axpy(dtype(2.5), x, y)
        np.testing.assert_array_equal(y, expect)
    assert not axpy.parallel.signatures and not total.parallel.signatures
    for copy in (axpy.serial, total.serial):
        assert len(copy.signatures) == 2
        for sig in copy.signatures:
            llvm = copy.inspect_llvm(sig)
            assert "parfor" not in llvm, (copy, sig)
    for sig in axpy.serial.signatures:
        llvm = axpy.serial.inspect_llvm(sig)
        assert "vector.body" in llvm and "NRT_decref" not in llvm.split("vector.body")[1][:4000]


@pytest.mark.parametrize("units", [1, 2, 7])
def test_run_covers_every_unit_once(units):
    hits = np.zeros(units, np.int64)

    def worker(h, u0, u1):
        h[u0:u1] += 1
    _threads.run(worker, (hits,), units)
    assert hits.tolist() == [1] * units


@pytest.mark.parametrize("preload", [False, True], ids=["own-runtime", "ld-preload"])
def test_pool_binds_its_own_openmp_when_torch_loaded_first(tmp_path, preload):
    """PyTorch imported first loads its libgomp with global symbols and its default long spin:
    the CPU backend then loads Numba's pool so that it binds to the libgomp it links (a second
    runtime, started with the short spin), not to PyTorch's; with LD_PRELOAD set it leaves the
    binding alone. Checked from the dynamic linker's own record of GOMP_parallel's binding."""
    import glob
    import os
    import subprocess
    import sys
    if not hasattr(os, "RTLD_DEEPBIND"):
        pytest.skip("RTLD_DEEPBIND is glibc's")
    torch = pytest.importorskip("torch")
    torch_gomp = glob.glob(os.path.join(os.path.dirname(torch.__file__), "lib", "libgomp*"))
    if not torch_gomp:
        pytest.skip("this PyTorch build has no libgomp of its own")
    code = ("import torch, numba, numbanet as nb\n"
            "from numbanet.kernels.cpu import _threads\n"
            "print(_threads._other_openmp_loaded())\n"
            "nb.backend.get_backend('cpu')\n"
            "print(numba.threading_layer())\n"
            "import numpy as np\n"
            "x = np.ones(1 << 16)\n"
            "print(numba.njit(lambda x: x.sum(), parallel=True)(x))\n"
            "print(float(torch.ones(64, 64).sum()))\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "NUMBA_THREADING_LAYER",
                        "LD_PRELOAD")}
    env.update(LD_DEBUG="bindings", LD_DEBUG_OUTPUT=str(tmp_path / "ld"))
    if preload:
        env["LD_PRELOAD"] = "libm.so.6"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    loaded, layer, total, torch_total = out.stdout.split()
    assert (loaded, total, torch_total) == ("True", "65536.0", "4096.0")
    if layer != "omp":
        pytest.skip(f"Numba chose the {layer} threading layer")
    bound = set()
    for name in glob.glob(str(tmp_path / "ld*")):
        with open(name, errors="replace") as f:
            for line in f:
                if "omppool" in line.split(" to ")[0] and "`GOMP_parallel'" in line:
                    bound.add(os.path.realpath(line.split(" to ")[1].split(" [")[0]))
    torch_gomp = {os.path.realpath(p) for p in torch_gomp}
    assert bound, "no record of the pool's GOMP_parallel binding"
    assert (bound <= torch_gomp) if preload else not (bound & torch_gomp), bound
