"""CUDA word2vec kernels (kernels/cuda/word2vec.py) against the CPU kernels of the same name and
the float64 references, in Numba's simulator by default (or on a GPU with
NUMBANET_TEST_REAL_CUDA=1), on tiny batches.

Blocks of 4 threads (a 6- or 7-dimensional vector spans two dimensions per thread) and at most 3
blocks (grid-stride loops run more than once). Races are excluded by construction: the examples
of an ``*_update`` batch use distinct words, and ``*_train`` runs on one block, which processes
its chunks in the CPU's order. Every launch is checked against the kernel's declared spec."""
import numba
import numpy as np
import pytest
from conftest import assert_close, dev

import word2vec_reference as ref
from numbanet import _cuda

if _cuda.cuda is None or not (_cuda.is_simulator() or _cuda.is_available()):
    pytest.skip(f"CUDA kernels cannot run here: {_cuda.unavailable_reason()}",
                allow_module_level=True)

from numbanet.kernels.cpu import word2vec as C  # noqa: E402
from numbanet.kernels.cuda import _common  # noqa: E402
from numbanet.kernels.cuda import word2vec as G  # noqa: E402

DTYPES = [np.float32, np.float64]


@pytest.fixture(autouse=True)
def small_launches(monkeypatch):
    monkeypatch.setenv("NUMBANET_ALLOW_CUDASIM", "1")
    monkeypatch.setattr(_common.config, "check_signatures", True)
    monkeypatch.setattr(G.config, "threads", 4)
    monkeypatch.setattr(G.config, "max_blocks", 3)
    old = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(old)


def matrices(rng, vocab, dim, dtype):
    return (0.5 * rng.standard_normal((vocab, dim))).astype(dtype), \
        (0.5 * rng.standard_normal((vocab, dim))).astype(dtype)


def run_both(name, args, syn0, syn1, extra=()):
    """kernels.cpu.word2vec.<name> and kernels.cuda.word2vec.<name> on copies of syn0 and syn1
    (and of the ``extra`` outputs); (cpu outputs, cuda outputs) as host arrays."""
    c = [syn0.copy(), syn1.copy(), *[e.copy() for e in extra]]
    getattr(C, name)(*args, *c)
    g = [dev(a) for a in (syn0, syn1, *extra)]
    getattr(G, name)(*[dev(a) if isinstance(a, np.ndarray) else a for a in args], *g)
    return c, [a.copy_to_host() for a in g]


def test_philox_is_the_common_generator():
    """The CPU's Philox is kernels/cuda/_common's, bit for bit."""
    rng = np.random.default_rng(5)
    for c0, c1, k0, k1 in rng.integers(0, 2**32, (20, 4)).tolist() + [[0, 0, 0, 0]]:
        args = [np.uint64(v) for v in (c0, c1, k0, k1)]
        want = tuple(map(int, _common._philox.py_func(*args)))
        assert tuple(map(int, C._philox(*args))) == want == ref.philox(c0, c1, k0, k1)


@pytest.mark.parametrize("dtype", DTYPES)
def test_skipgram_update_matches_cpu(dtype, rng):
    """5 pairs of distinct words each (inputs, targets and negatives never shared between
    pairs): the blocks cannot race; one negative equals its target (skipped)."""
    words = rng.permutation(25).astype(np.int32).reshape(5, 5)
    inputs, targets, negatives = words[:, 0].copy(), words[:, 1].copy(), words[:, 2:].copy()
    negatives[2, 1] = targets[2]
    syn0, syn1 = matrices(rng, 25, 7, dtype)
    args = (inputs, targets, negatives, 0.4)
    (c0, c1), (g0, g1) = run_both("skipgram_update", args, syn0, syn1)
    w0, w1 = ref.skipgram_update(*args, syn0, syn1)
    for got, cpu, want, what in ((g0, c0, w0, "syn0"), (g1, c1, w1, "syn1neg")):
        assert_close(got, want, dtype, what)
        assert_close(got, cpu, dtype, f"{what} vs cpu")
    assert np.abs(w0 - syn0).max() > 0.01


@pytest.mark.parametrize("dtype", DTYPES)
def test_cbow_update_matches_cpu(dtype, rng):
    """4 groups of distinct words (a context of 3, of 1, of 0 and of 2 words)."""
    words = rng.permutation(30).astype(np.int32)
    offsets = np.array([0, 3, 4, 4, 6], np.int64)
    contexts = words[:6].copy()
    targets = words[6:10].copy()
    negatives = words[10:18].reshape(4, 2).copy()
    syn0, syn1 = matrices(rng, 30, 6, dtype)
    args = (offsets, contexts, targets, negatives, 0.3)
    (c0, c1), (g0, g1) = run_both("cbow_update", args, syn0, syn1)
    w0, w1 = ref.cbow_update(*args, syn0, syn1)
    for got, cpu, want, what in ((g0, c0, w0, "syn0"), (g1, c1, w1, "syn1neg")):
        assert_close(got, want, dtype, what)
        assert_close(got, cpu, dtype, f"{what} vs cpu")


def train_case(rng, vocab=8):
    sentences = np.array([0, 6, 6, 13, 17], np.int64)
    tokens = rng.integers(0, vocab, 17).astype(np.int32)
    chunks = np.array([0, 2, 3, 4], np.int64)
    thresholds = np.full(vocab, 2**32 - 1, np.int64)
    thresholds[0] = 2**31
    c = np.cumsum(rng.integers(1, 30, vocab) ** 0.75)
    cum = np.round(c / c[-1] * (2**31 - 1)).astype(np.int32)
    return tokens, sentences, chunks, np.array([0.2, 0.1, 0.15]), thresholds, cum


@pytest.mark.parametrize("sg", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
def test_train_matches_cpu_on_one_block(sg, dtype, rng, monkeypatch):
    monkeypatch.setattr(G.config, "max_blocks", 1)
    tokens, sentences, chunks, lr, thr, cum = train_case(rng)
    syn0, syn1 = matrices(rng, 8, 6, dtype)
    args = (tokens, sentences, chunks, lr, thr, cum, 2, 3, 11, 4)
    name = "skipgram_train" if sg else "cbow_train"
    (c0, c1, ct), (g0, g1, gt) = run_both(name, args, syn0, syn1, (np.full(3, -7, np.int64),))
    w0, w1, wt = ref.train(*args, syn0, syn1, sg)
    np.testing.assert_array_equal(gt, wt)
    np.testing.assert_array_equal(ct, wt)
    for got, cpu, want, what in ((g0, c0, w0, "syn0"), (g1, c1, w1, "syn1neg")):
        assert_close(got, want, dtype, what)
        assert_close(got, cpu, dtype, f"{what} vs cpu")


def test_train_on_several_blocks(rng):
    """One chunk per block: the kept-word counts are the CPU's; in the simulator, which runs the
    blocks one after another in order, so are the vectors (on a GPU the blocks race)."""
    tokens, sentences, chunks, lr, thr, cum = train_case(rng)
    syn0, syn1 = matrices(rng, 8, 5, np.float64)
    args = (tokens, sentences, chunks, lr, thr, cum, 3, 2, 0, 100)
    (c0, c1, ct), (g0, g1, gt) = run_both("skipgram_train", args, syn0, syn1,
                                          (np.full(3, -7, np.int64),))
    np.testing.assert_array_equal(gt, ct)
    assert ct.sum() > 0
    if _cuda.is_simulator():
        assert_close(g0, c0, np.float64, "syn0")
        assert_close(g1, c1, np.float64, "syn1neg")


@pytest.mark.parametrize("sg", [1, 0])
def test_word2vec_on_cuda_trains_as_on_the_cpu(sg):
    """A corpus of one chunk per epoch: the GPU (one block) and the CPU (one thread) draw the
    same numbers and make the same updates."""
    from numbanet.text import Word2Vec
    rng = np.random.default_rng(0)
    corpus = [[f"w{k}" for k in rng.integers(0, 6, 4)] for _ in range(6)]
    kw = dict(vector_size=5, window=2, negative=2, min_count=1, sg=sg, epochs=1, seed=9,
              sample=0.2, workers=1)
    cpu = Word2Vec(**kw).fit(corpus)
    gpu = Word2Vec(device="cuda", **kw).fit(corpus)
    assert gpu.trained_words == cpu.trained_words > 0
    assert isinstance(gpu.wv.vectors, np.ndarray) and gpu.wv.vectors.dtype == np.float32
    assert_close(gpu.wv.vectors, cpu.wv.vectors, np.float32, "vectors")
    assert_close(gpu.syn1neg, cpu.syn1neg, np.float32, "syn1neg")


def test_bad_arguments_raise():
    syn0, syn1 = dev(np.zeros((4, 3))), dev(np.zeros((4, 3)))
    i1 = dev(np.array([1], np.int32))
    cases = [
        (lambda: G.skipgram_update(i1, i1, dev(np.zeros((2, 1), np.int32)), 0.1, syn0, syn1),
         r"skipgram_update: inputs, targets and negatives must have one row per example"),
        (lambda: G.skipgram_update(i1, i1, dev(np.zeros((1, 1), np.int32)), 0.1, syn0,
                                   dev(np.zeros((3, 3)))),
         r"skipgram_update: syn0 and syn1neg must be \(V, D\) matrices of one shape, got "
         r"\(4, 3\) and \(3, 3\)"),
        (lambda: G.cbow_update(dev(np.zeros(3, np.int64)), i1, i1,
                               dev(np.zeros((1, 1), np.int32)), 0.1, syn0, syn1),
         r"cbow_update: offsets \(G \+ 1,\)"),
    ]
    train = [dev(np.zeros(3, np.int32)), dev(np.array([0, 3], np.int64)),
             dev(np.array([0, 1], np.int64)), dev(np.ones(1)), dev(np.zeros(4, np.int64)),
             dev(np.full(4, 2**31 - 1, np.int32)), 2, 1, 0, 0, syn0, syn1,
             dev(np.zeros(1, np.int64))]
    for k, value, message in [(3, dev(np.ones(2)), r"lr and trained need one entry per chunk"),
                              (4, dev(np.zeros(3, np.int64)), r"thresholds and cum_table"),
                              (6, 0, r"window must be >= 1, got 0"),
                              (7, -2, r"negative must be >= 1, got -2"),
                              (9, -1, r"first_chunk must be >= 0, got -1")]:
        args = list(train)
        args[k] = value
        cases.append((lambda args=args: G.cbow_train(*args), "cbow_train: " + message))
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


def test_every_word2vec_kernel_was_launched(request):
    """Runs last: every CUDA kernel of kernels/cuda/word2vec.py ran at least once here."""
    if request.config.getoption("keyword") or request.config.getoption("markexpr"):
        pytest.skip("a -k/-m selection ran only part of the module")
    names = {k.name for k in _common.KERNELS if k.name.startswith("word2vec.")}
    assert names == {"word2vec._sg_update", "word2vec._cbow_update", "word2vec._train"}
    missing = sorted(names - _common.LAUNCHED)
    assert not missing, f"never launched: {missing}"
