"""Compiling beside other processes: the per-function compile lock (kernels/cpu/_jit.py) and the
compile helper that ``fit`` starts on a cold Numba cache (numbanet/_compile_helper.py). Each test
runs fresh Python processes on an empty cache directory of its own."""
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

pytest.importorskip("fcntl")

# a tiny cached function of the test's own (the lock covers every cached function once numbanet
# is imported)
_KERNEL = textwrap.dedent('''
    from numba import njit

    @njit(cache=True)
    def twice(x):
        return 2 * x
''')


def _env(cache, helper="0"):
    return dict(os.environ, NUMBA_CACHE_DIR=str(cache), NUMBANET_COMPILE_HELPER=helper,
                NUMBA_ENABLE_CUDASIM="0")


def _python(code, env, **kw):
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300, **kw)


def test_compile_waits_for_the_lock_held_by_another_process(tmp_path):
    """While one process holds a kernel's compile lock, another process's first call of that
    kernel waits; once released, it compiles (or loads) and returns the right value."""
    (tmp_path / "probe.py").write_text(_KERNEL)
    env = _env(tmp_path / "cache")
    env["PYTHONPATH"] = str(tmp_path) + os.pathsep + env.get("PYTHONPATH", "")
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent('''
            import fcntl, os, sys
            import numbanet.kernels.cpu._jit as jit
            from probe import twice
            path = jit._lock_path(twice)
            fd = os.open(path, os.O_RDWR | os.O_CREAT)
            fcntl.flock(fd, fcntl.LOCK_EX)
            print(path, flush=True)
            sys.stdin.readline()
            os.close(fd)
        ''')], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        path = holder.stdout.readline().strip()
        assert path.endswith(".nbi.lock"), path
        caller = subprocess.Popen(
            [sys.executable, "-c", "import numbanet.kernels.cpu; from probe import twice; "
                                   "print(twice(21), twice(1.5))"],
            env=env, stdout=subprocess.PIPE, text=True)
        time.sleep(3.0)
        assert caller.poll() is None, "the call did not wait for the compile lock"
        holder.stdin.write("\n")
        holder.stdin.flush()
        out, _ = caller.communicate(timeout=120)
        assert caller.returncode == 0
        assert out.split() == ["42", "3.0"]
    finally:
        holder.kill()
        holder.wait()


def test_two_processes_compiling_different_signatures_share_the_cache(tmp_path):
    """Two processes compile one cached function for different argument types at once; a third
    finds both in the cache, each with its own machine code."""
    (tmp_path / "probe.py").write_text(_KERNEL)
    env = _env(tmp_path / "cache")
    env["PYTHONPATH"] = str(tmp_path) + os.pathsep + env.get("PYTHONPATH", "")
    code = "import numbanet.kernels.cpu; from probe import twice; print(twice({}))"
    procs = [subprocess.Popen([sys.executable, "-c", code.format(v)], env=env,
                              stdout=subprocess.PIPE, text=True) for v in ("21", "1.5", "3j")]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0]
    assert outs == ["42", "3.0", "6j"]
    check = _python(textwrap.dedent('''
        import numbanet.kernels.cpu
        from probe import twice
        print(twice(21), twice(1.5), twice(3j), sum(twice.stats.cache_hits.values()),
              sum(twice.stats.cache_misses.values()))
    '''), env)
    assert check.returncode == 0, check.stderr
    assert check.stdout.split() == ["42", "3.0", "6j", "3", "0"]


_MODEL = textwrap.dedent('''
    import numpy as np
    import numbanet as nb
    nb.seed(3)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 1, 6, 6)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    L = nb.layers
    model = nb.Sequential([L.Conv2D(4, 3, padding="same", activation="relu"), L.Flatten(),
                           L.Dense(3, activation="softmax")], input_shape=(1, 6, 6))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
''')


def test_fit_starts_the_helper_on_a_cold_cache(tmp_path):
    """On a cold cache fit's first step starts the helper, which exits cleanly, and training
    gives the same losses as without it."""
    run = _MODEL + textwrap.dedent('''
        from numbanet import _compile_helper
        h = model.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=0)
        procs = _compile_helper._started
        rc = procs[0].wait(300) if procs else None
        print(json.dumps({"started": len(procs), "rc": rc, "loss": h.history["loss"]}))
    ''')
    run = "import json\n" + run
    with_helper = _python(run, _env(tmp_path / "cache", helper="1"))
    assert with_helper.returncode == 0, with_helper.stderr
    got = json.loads(with_helper.stdout.strip().splitlines()[-1])
    assert got["started"] == 1 and got["rc"] == 0
    warm = _python(run, _env(tmp_path / "cache", helper="1"))      # warm cache: no helper
    assert warm.returncode == 0, warm.stderr
    again = json.loads(warm.stdout.strip().splitlines()[-1])
    assert again["started"] == 0
    assert again["loss"] == got["loss"]


def test_the_helper_compiles_what_fit_needs(tmp_path):
    """The helper alone, on a cold cache, compiles every kernel a fit of its model then uses."""
    folder = tmp_path / "spec"
    folder.mkdir()
    prepare = _MODEL + textwrap.dedent(f'''
        import json
        with open({str(folder / "model.json")!r}, "w") as f:
            json.dump({{"model": model.get_config(), "compile": model._compile_config()}}, f)
        np.savez({str(folder / "batch.npz")!r}, x0=x[:16], y0=y[:16])
    ''')
    env = _env(tmp_path / "cache")
    done = _python(prepare, env)
    assert done.returncode == 0, done.stderr
    helper = subprocess.run([sys.executable, "-c", "import sys; from numbanet._compile_helper "
                             "import run; run(sys.argv[1])", str(folder)], env=env,
                            capture_output=True, text=True, timeout=300)
    assert helper.returncode == 0, helper.stderr
    count = _MODEL + textwrap.dedent('''
        from numbanet.kernels.cpu._jit import first_compile
        compiled = []
        with first_compile(lambda: compiled.append(1)):
            model.fit(x, y, epochs=1, batch_size=16, verbose=0)
        print(len(compiled))
    ''')
    after = _python(count, env)
    assert after.returncode == 0, after.stderr
    assert after.stdout.split()[-1] == "0"


def test_the_helper_is_not_started_for_large_models_or_batches(monkeypatch):
    """Above MAX_PARAMS weights, or with a batch above MAX_BATCH_BYTES, fit compiles alone (the
    helper's copy would cost more than it saves); NUMBANET_COMPILE_HELPER=0 turns it off."""
    import numpy as np
    import numbanet as nb
    from numbanet import _compile_helper as helper
    model = nb.Sequential([nb.layers.Dense(4)], input_shape=(3,))
    model.compile(optimizer="adam", loss="mse")
    monkeypatch.setattr(helper, "_started", [])
    monkeypatch.setenv(helper.ENV, "1")
    assert helper.wanted(model, False) == ((os.cpu_count() or 1) > 1)
    assert not helper.wanted(model, True)                          # distributed: never
    monkeypatch.setattr(helper, "MAX_PARAMS", model.count_params() - 1)
    assert not helper.wanted(model, False)
    monkeypatch.setattr(helper, "MAX_BATCH_BYTES", 10)
    x, y = np.zeros((2, 3), np.float32), np.zeros((2, 4), np.float32)
    assert helper.start(model, [x], [y]) is None and helper._started == []
    monkeypatch.setenv(helper.ENV, "0")
    monkeypatch.setattr(helper, "MAX_PARAMS", 10**9)
    assert not helper.wanted(model, False)
