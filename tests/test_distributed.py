"""Data-parallel training over MPI (numbanet.distributed): each test starts
``mpirun -n K python tests/distributed_worker.py SCENARIO DIR`` (K = 2 or 3) and judges what the
ranks wrote. Without mpi4py or a working mpirun the MPI tests are skipped with the reason, unless
NUMBANET_REQUIRE_MPI=1 (CI sets it), which makes that a failure."""
import builtins
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "distributed_worker.py")
#: float32 runs of k ranks and of one process end within this relative distance of each other
#: (the sums of a batch's gradients are added in another order; measured: < 5e-7 after 24 SGD
#: steps); float64 within 1e-10
F32_RTOL, F64_RTOL = 1e-5, 1e-10


def _mpirun():
    here = os.path.join(os.path.dirname(sys.executable), "mpirun")
    return here if os.access(here, os.X_OK) else shutil.which("mpirun") or \
        shutil.which("mpiexec")


def _env():
    env = dict(os.environ)
    # Open MPI refuses to start as root (CI runs as root) unless told it may
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               PYTHONUNBUFFERED="1")
    env.pop("NUMBANET_DIST_TIMEOUT", None)
    return env


def mpirun(k, *args, timeout=600, env=None, python=True):
    """Run ``mpirun -n k`` (more ranks than cores allowed) on the worker; returns
    (CompletedProcess, seconds)."""
    launcher = _mpirun()
    flags = ["--oversubscribe"] if _is_open_mpi(launcher) else []
    cmd = [launcher, "-n", str(k), *flags] + ([sys.executable, WORKER] if python else []) + \
        [str(a) for a in args]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**_env(), **(env or {})}, stdin=subprocess.DEVNULL)
    return proc, time.monotonic() - t0


_open_mpi = {}


def _is_open_mpi(launcher):
    if launcher not in _open_mpi:
        try:
            out = subprocess.run([launcher, "--version"], capture_output=True, text=True,
                                 timeout=30, env=_env()).stdout
        except (OSError, subprocess.TimeoutExpired):
            out = ""
        _open_mpi[launcher] = "Open MPI" in out or "OpenRTE" in out or "prte" in out.lower()
    return _open_mpi[launcher]


@pytest.fixture(scope="module")
def mpi():
    """Skip (or, with NUMBANET_REQUIRE_MPI=1, fail) when MPI cannot run two ranks here."""
    reason = None
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        reason = 'mpi4py is not installed (pip install "numbanet[mpi]")'
    launcher = _mpirun()
    if reason is None and launcher is None:
        reason = 'no mpirun on the PATH (pip install "numbanet[mpi]" brings Open MPI)'
    if reason is None:
        probe = [launcher, "-n", "2"] + (["--oversubscribe"] if _is_open_mpi(launcher) else []) \
            + [sys.executable, "-c", "from mpi4py import MPI; print('size', "
               "MPI.COMM_WORLD.Get_size())"]
        try:
            p = subprocess.run(probe, capture_output=True, text=True, timeout=120, env=_env(),
                               stdin=subprocess.DEVNULL)
            if p.returncode != 0 or p.stdout.count("size 2") != 2:
                reason = (f"mpirun -n 2 did not start two MPI ranks (exit {p.returncode}): "
                          f"{(p.stdout + p.stderr).strip()[-600:]}")
        except subprocess.TimeoutExpired:
            reason = "mpirun -n 2 did not start two MPI ranks within 120 s"
    if reason is not None:
        if os.environ.get("NUMBANET_REQUIRE_MPI") == "1":
            pytest.fail(f"NUMBANET_REQUIRE_MPI=1 but {reason}")
        pytest.skip(reason)
    # compile the kernels once, in one process (a no-op when Numba's cache has them)
    warm = subprocess.run([sys.executable, WORKER, "warmup", tempfile.mkdtemp()],
                          capture_output=True, text=True, timeout=900, env=_env(),
                          stdin=subprocess.DEVNULL)
    _ok(warm)
    return launcher


def _ok(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n" \
                                 f"{proc.stderr[-3000:]}"


def _read(path):
    with open(path) as f:
        return json.load(f)


# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [2, 3])
def test_same_weights_as_one_process(mpi, tmp_path, k):
    """k ranks, each taking its slice of every global batch of 10 (not divisible by 3; the last
    global batch has 2 samples, fewer than 3 ranks), end with the weights one process gets with
    batches of 10: Sequential (conv) and functional models (gradient clipping after the
    average), float64 and float32, L-BFGS, a custom loop with apply_gradients, and a model with
    two outputs (SGD and L-BFGS) whose per-output losses are global too. The ranks' weights are
    bit-identical and so are their logs (global loss, per-output losses and metrics)."""
    proc, _ = mpirun(k, "equivalence", tmp_path)
    _ok(proc)
    result = _read(tmp_path / "equivalence.json")
    assert result["size"] == k
    assert set(result["cases"]) == {"sequential-float64", "functional-float64",
                                    "sequential-float32", "functional-float32",
                                    "lbfgs-float64", "custom-loop-float64",
                                    "two-outputs-float64", "two-outputs-lbfgs-float64"}
    for name, case in result["cases"].items():
        rtol = F32_RTOL if "float32" in name else F64_RTOL
        assert case["identical"], f"{name}: the ranks' weights differ"
        assert case["weights"] < rtol, f"{name}: {case}"
        assert case["history"] < rtol, f"{name}: loss / metrics differ from one process: {case}"
        assert case["keys"], name
    # the wrapped optimizer keeps its class name (a saved model loads as plain SGD)
    assert result["cases"]["sequential-float64"]["optimizer"] == "SGD"


def test_broadcast_metrics_batchnorm_and_rank0_files(mpi, tmp_path):
    proc, _ = mpirun(2, "features", tmp_path)
    _ok(proc)
    r = _read(tmp_path / "features.json")
    # ranks seeded differently start from rank 0's initial weights (BroadcastWeights), and the
    # explicit form (DistributedOptimizer, each rank its own data) keeps them identical
    assert r["differed_before"] and r["broadcast"] and r["explicit_identical"]
    assert r["broadcast_root1"]
    # MetricAverage: the logged accuracy is the mean of the ranks' own (different) accuracies
    assert r["metric_local_differ"] and r["metric_average"] < 1e-12
    assert r["history_identical"]
    # BatchNormalization statistics: different on each rank during the epoch, their mean after
    assert r["bn_local_differ"] and r["bn_identical"] and r["bn_average"] < 1e-6
    # rank 0 alone printed and wrote the checkpoint and the CSV log
    names = sorted(os.listdir(tmp_path))
    assert "ckpt-0.npz" in names and "log-0.csv" in names
    assert "ckpt-1.npz" not in names and "log-1.csv" not in names
    assert (tmp_path / "stdout-0.txt").read_text().count("Epoch ") == 2
    assert (tmp_path / "stdout-1.txt").read_text() == ""
    import numbanet as nb
    model = nb.load_model(str(tmp_path / "ckpt-0.npz"))
    assert type(model.optimizer) is nb.optimizers.SGD
    with open(tmp_path / "log-0.csv") as f:
        assert f.readline().strip().split(",") == ["epoch", "loss", "accuracy", "val_loss",
                                                   "val_accuracy"]


def test_cli_train_distributed(mpi, tmp_path):
    out = tmp_path / "digits.npz"
    proc, _ = mpirun(2, shutil.which("numbanet", path=os.path.dirname(sys.executable)) or
                     "numbanet", "train", "--distributed", "--epochs", "1", "--verbose", "2",
                     "--output", out, "--plot", "", python=False)
    _ok(proc)
    assert proc.stdout.count("model saved to") == 1
    assert "distributed: 2 ranks share each global batch of 32 (16 samples per rank)" in \
        proc.stdout
    assert proc.stdout.count("Epoch 1/1") == 1
    assert "test accuracy:" in proc.stdout
    assert sorted(os.listdir(tmp_path)) == ["digits.npz"]
    import numbanet as nb
    model = nb.load_model(str(out))
    assert type(model.optimizer) is nb.optimizers.Adam


def test_cli_error_on_one_rank_ends_the_job(mpi, tmp_path):
    """An error on rank 0 (an unwritable output) aborts the job instead of leaving rank 1
    waiting for it."""
    proc, seconds = mpirun(2, shutil.which("numbanet", path=os.path.dirname(sys.executable)) or
                           "numbanet", "train", "--distributed", "--epochs", "1",
                           "--output", tmp_path / "missing" / "m.npz", python=False, timeout=120)
    assert proc.returncode != 0
    assert "cannot write the model file" in proc.stderr
    assert "aborting the job" in proc.stderr
    assert seconds < 60


def test_dead_rank_ends_the_job(mpi, tmp_path):
    """Rank 1 killed at its 6th step: mpirun ends the other rank; nobody finishes."""
    proc, seconds = mpirun(2, "kill", tmp_path, timeout=120)
    assert proc.returncode != 0
    assert not any(n.startswith("finished") for n in os.listdir(tmp_path))
    assert seconds < 60


def test_hung_rank_times_out(mpi, tmp_path):
    """Rank 1 stops answering at its 6th step: rank 0 gives up after the timeout (5 s here)
    with a message naming the call it waited in, and the job ends."""
    proc, seconds = mpirun(2, "hang", tmp_path, 5, timeout=120)
    assert proc.returncode != 0
    assert re.search(r"rank \d of 2 waited \d+ s in the \w+ allreduce", proc.stderr), proc.stderr
    assert "Aborting the job" in proc.stderr
    assert "NUMBANET_DIST_TIMEOUT" in proc.stderr
    assert not any(n.startswith("finished") for n in os.listdir(tmp_path))
    assert seconds < 60


def test_cuda_backend_stages_through_host(mpi, tmp_path):
    """A model on the CUDA backend (Numba's simulator here; a GPU where there is one) trains
    distributed like the CPU model in one process; this MPI is not CUDA-aware, so the device
    gradients go through host memory, and rank 0 says so."""
    env = {"NUMBANET_ALLOW_CUDASIM": "1"}
    if os.environ.get("NUMBANET_TEST_REAL_CUDA", "0") != "1":
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    pytest.importorskip("numba_cuda", reason='numba-cuda is not installed ("numbanet[cuda]")')
    proc, _ = mpirun(2, "cuda_sim", tmp_path, env=env, timeout=300)
    _ok(proc)
    result = _read(tmp_path / "cuda_sim.json")
    assert result["identical"] and result["weights"] < F64_RTOL
    if result["cuda_aware"] is False:
        assert "staged through host memory" in proc.stderr


# ---------------------------------------------------------------------------------------------
# without MPI (in this process)

@pytest.fixture
def no_mpi4py(monkeypatch):
    """``import mpi4py`` fails, as where it is not installed."""
    from numbanet import distributed as dist
    monkeypatch.setattr(dist, "_state", None)
    real = builtins.__import__

    def fake(name, *args, **kwargs):
        if name == "mpi4py" or name.startswith("mpi4py."):
            raise ImportError(f"No module named {name!r}")
        return real(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", fake)
    for name in [n for n in sys.modules if n == "mpi4py" or n.startswith("mpi4py.")]:
        monkeypatch.delitem(sys.modules, name)
    return dist


def test_missing_mpi4py_says_what_to_install(no_mpi4py):
    import numbanet as nb
    dist = no_mpi4py
    with pytest.raises(ImportError, match=r'pip install "numbanet\[mpi\]"'):
        dist.init()
    assert not dist.is_initialized()
    model = nb.Sequential([nb.layers.Dense(2)], input_shape=(3,))
    model.compile("sgd", "mse")
    with pytest.raises(ImportError, match="needs mpi4py and an MPI library"):
        model.fit(np.zeros((4, 3)), np.zeros((4, 2)), distributed=True, verbose=0)
    with pytest.raises(ImportError, match="mpi4py"):
        dist.DistributedOptimizer("sgd")


def test_missing_mpi4py_cli(no_mpi4py, tmp_path, capsys):
    from numbanet.cli import main
    assert main(["train", "--distributed", "--epochs", "1", "--output",
                 str(tmp_path / "m.npz"), "--plot", ""]) == 2
    err = capsys.readouterr().err
    assert 'numbanet train: error: numbanet.distributed needs mpi4py' in err
    assert 'pip install "numbanet[mpi]"' in err


def test_mpi4py_without_an_mpi_library(monkeypatch):
    """mpi4py imports but cannot load an MPI library: the message says that, and what to do."""
    from numbanet import distributed as dist
    monkeypatch.setattr(dist, "_state", None)
    import types
    fake = types.ModuleType("mpi4py")
    fake.__version__ = "4.1.2"
    fake.__path__ = []
    monkeypatch.setitem(sys.modules, "mpi4py", fake)
    monkeypatch.setitem(sys.modules, "mpi4py.MPI", None)     # the import of MPI fails
    with pytest.raises(ImportError, match="could not load an MPI library.*numbanet\\[mpi\\]"):
        dist.init()


def test_fit_rejects_a_bad_distributed_flag():
    import numbanet as nb
    model = nb.Sequential([nb.layers.Dense(2)], input_shape=(3,))
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match="distributed must be True or False"):
        model.fit(np.zeros((4, 3)), np.zeros((4, 2)), distributed="yes", verbose=0)


def test_timeout_setting(monkeypatch):
    from numbanet import distributed as dist
    monkeypatch.delenv("NUMBANET_DIST_TIMEOUT", raising=False)
    assert dist._timeout_setting(None) == dist.DEFAULT_TIMEOUT == 300.0
    monkeypatch.setenv("NUMBANET_DIST_TIMEOUT", "12.5")
    assert dist._timeout_setting(None) == 12.5
    assert dist._timeout_setting(0) == 0.0
    monkeypatch.setenv("NUMBANET_DIST_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="NUMBANET_DIST_TIMEOUT"):
        dist._timeout_setting(None)
    with pytest.raises(ValueError, match="timeout"):
        dist._timeout_setting(-1)
