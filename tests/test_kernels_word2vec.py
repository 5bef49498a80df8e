"""CPU word2vec kernels (kernels/cpu/word2vec.py) against the float64 references of
tests/word2vec_reference.py: the fused negative-sampling steps example after example, the
whole-batch training with its Philox draws, the sigmoid's tails, the draws' distributions, and
bad arguments. Run on one Numba thread, where the update sequence is the reference's."""
import numba
import numpy as np
import pytest
from conftest import assert_close

import word2vec_reference as ref
from numbanet.backend import kernel_names
from numbanet.kernels.cpu import word2vec as W

DTYPES = [np.float32, np.float64]


@pytest.fixture(autouse=True)
def one_thread():
    """The update order of one thread (several threads race, as Hogwild does)."""
    old = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(old)


def test_public_names_match_the_contract():
    assert kernel_names(W) == ["cbow_train", "cbow_update", "skipgram_train", "skipgram_update"]


def test_philox_matches_the_reference_and_the_known_answer():
    # Random123's known answer for Philox4x32-10, counter 0 and key 0: 6627e8d5 e169c58d ...
    assert W._philox(np.uint64(0), np.uint64(0), np.uint64(0), np.uint64(0)) == \
        (0x6627E8D5, 0xE169C58D)
    for c0, c1, k0, k1 in [(1, 0, 0, 0), (7, 3, 0xFFFFFFFF, 12345), (2**32 - 1, 2**32 - 1, 1, 2)]:
        got = W._philox(np.uint64(c0), np.uint64(c1), np.uint64(k0), np.uint64(k1))
        assert tuple(map(int, got)) == ref.philox(c0, c1, k0, k1)


def matrices(rng, vocab, dim, dtype, scale=0.5):
    return (scale * rng.standard_normal((vocab, dim))).astype(dtype), \
        (scale * rng.standard_normal((vocab, dim))).astype(dtype)


def pairs(rng, n, vocab, k):
    """Random pairs with repeated words (each update sees the previous ones) and negatives that
    sometimes equal the target (skipped)."""
    inputs = rng.integers(0, vocab, n).astype(np.int32)
    targets = rng.integers(0, vocab, n).astype(np.int32)
    negatives = rng.integers(0, vocab, (n, k)).astype(np.int32)
    negatives[::3, 0] = targets[::3]
    return inputs, targets, negatives


@pytest.mark.parametrize("dtype", DTYPES)
def test_skipgram_update_matches_the_reference(dtype, rng):
    syn0, syn1 = matrices(rng, 7, 5, dtype)
    inputs, targets, negatives = pairs(rng, 40, 7, 3)
    want0, want1 = ref.skipgram_update(inputs, targets, negatives, 0.3, syn0, syn1)
    got0, got1 = syn0.copy(), syn1.copy()
    W.skipgram_update(inputs, targets, negatives, 0.3, got0, got1)
    assert_close(got0, want0, dtype, "syn0")
    assert_close(got1, want1, dtype, "syn1neg")
    assert np.abs(want0 - syn0).max() > 0.05 and np.abs(want1 - syn1).max() > 0.05


def test_skipgram_update_on_many_pairs_runs_in_parts_in_order(rng):
    """Above _PAR_MIN_PAIRS the pairs run in prange parts; on one thread still in order."""
    syn0, syn1 = matrices(rng, 50, 3, np.float64)
    inputs, targets, negatives = pairs(rng, W._PAR_MIN_PAIRS + 1500, 50, 2)
    want0, want1 = ref.skipgram_update(inputs, targets, negatives, 0.05, syn0, syn1)
    W.skipgram_update(inputs, targets, negatives, 0.05, syn0, syn1)
    assert_close(syn0, want0, np.float64, "syn0")
    assert_close(syn1, want1, np.float64, "syn1neg")


def groups(rng, n, vocab, k):
    sizes = rng.integers(0, 5, n)
    sizes[1] = 0                                    # a group without context: updates nothing
    offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
    contexts = rng.integers(0, vocab, offsets[-1]).astype(np.int32)
    targets = rng.integers(0, vocab, n).astype(np.int32)
    negatives = rng.integers(0, vocab, (n, k)).astype(np.int32)
    negatives[::4, 1] = targets[::4]
    return offsets, contexts, targets, negatives


@pytest.mark.parametrize("dtype", DTYPES)
def test_cbow_update_matches_the_reference(dtype, rng):
    syn0, syn1 = matrices(rng, 8, 6, dtype)
    offsets, contexts, targets, negatives = groups(rng, 30, 8, 4)
    want0, want1 = ref.cbow_update(offsets, contexts, targets, negatives, 0.2, syn0, syn1)
    got0, got1 = syn0.copy(), syn1.copy()
    W.cbow_update(offsets, contexts, targets, negatives, 0.2, got0, got1)
    assert_close(got0, want0, dtype, "syn0")
    assert_close(got1, want1, dtype, "syn1neg")
    assert np.abs(want0 - syn0).max() > 0.05 and np.abs(want1 - syn1).max() > 0.05


def test_cbow_update_of_an_empty_group_changes_nothing(rng):
    syn0, syn1 = matrices(rng, 4, 3, np.float64)
    got0, got1 = syn0.copy(), syn1.copy()
    W.cbow_update(np.zeros(2, np.int64), np.zeros(0, np.int32), np.array([1], np.int32),
                  np.array([[2, 3]], np.int32), 0.5, got0, got1)
    np.testing.assert_array_equal(got0, syn0)
    np.testing.assert_array_equal(got1, syn1)       # the context mean is 0: g * 0 added


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_tails_are_stable(dtype):
    """Dot products of +-1e4 saturate the sigmoid without overflow: a positive already predicted
    (dot +1e4) gets g = 0, a negative predicted as positive gets g = -lr."""
    syn0 = np.zeros((3, 2), dtype)
    syn1 = np.zeros((3, 2), dtype)
    syn0[0] = [100.0, 0.0]
    syn1[1] = [100.0, 0.0]          # target 1: dot +1e4, label 1 -> g = 0
    syn1[2] = [100.0, 0.0]          # negative 2: dot +1e4, label 0 -> g = -lr
    got0, got1 = syn0.copy(), syn1.copy()
    W.skipgram_update(np.array([0], np.int32), np.array([1], np.int32),
                      np.array([[2]], np.int32), 0.5, got0, got1)
    want0, want1 = ref.skipgram_update([0], [1], [[2]], 0.5, syn0, syn1)
    assert np.isfinite(got0).all() and np.isfinite(got1).all()
    np.testing.assert_array_equal(got1[1], syn1[1])
    np.testing.assert_allclose(got1[2], [100.0 - 0.5 * 100.0, 0.0])
    np.testing.assert_allclose(got0[0], [100.0 - 0.5 * 100.0, 0.0])
    assert_close(got0, want0, dtype, "syn0")
    assert_close(got1, want1, dtype, "syn1neg")
    syn1[1] = [-100.0, 0.0]         # target at dot -1e4: g = lr, the full step
    got0, got1 = syn0.copy(), syn1.copy()
    W.skipgram_update(np.array([0], np.int32), np.array([1], np.int32),
                      np.array([[1]], np.int32), 0.5, got0, got1)
    np.testing.assert_allclose(got1[1], [-100.0 + 0.5 * 100.0, 0.0])
    np.testing.assert_allclose(got0[0], [100.0 - 0.5 * 100.0, 0.0])


# ------------------------------------------------------------------------- whole-batch training
def unigram_table(counts, power=0.75):
    c = np.cumsum(np.asarray(counts, np.float64) ** power)
    return np.round(c / c[-1] * (2**31 - 1)).astype(np.int32)


def batch(rng, vocab, lengths, chunk_sizes):
    """tokens, sentence offsets, chunk offsets (chunk_sizes sentences each)."""
    sentences = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    tokens = rng.integers(0, vocab, sentences[-1]).astype(np.int32)
    chunks = np.concatenate(([0], np.cumsum(chunk_sizes))).astype(np.int64)
    return tokens, sentences, chunks


def thresholds_for(vocab):
    """Every word kept, except word 0 (about half the time) and word 1 (never)."""
    t = np.full(vocab, 2**32 - 1, np.int64)
    t[0], t[1] = 2**31, -1
    return t


@pytest.mark.parametrize("sg", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
def test_train_matches_the_reference(sg, dtype, rng):
    vocab, window, negative = 9, 3, 3
    tokens, sentences, chunks = batch(rng, vocab, [7, 0, 12, 1, 9, 6], [3, 1, 2])
    lr = np.array([0.1, 0.05, 0.08])
    thr, cum = thresholds_for(vocab), unigram_table(rng.integers(1, 50, vocab))
    syn0, syn1 = matrices(rng, vocab, 5, dtype)
    want0, want1, want_kept = ref.train(tokens, sentences, chunks, lr, thr, cum, window,
                                        negative, 77, 5, syn0, syn1, sg)
    trained = np.full(3, -7, np.int64)
    kernel = W.skipgram_train if sg else W.cbow_train
    kernel(tokens, sentences, chunks, lr, thr, cum, window, negative, 77, 5, syn0, syn1,
           trained)
    np.testing.assert_array_equal(trained, want_kept)
    assert want_kept.sum() < np.sum(tokens != 1)    # word 1 dropped, word 0 sometimes
    assert_close(syn0, want0, dtype, "syn0")
    assert_close(syn1, want1, dtype, "syn1neg")


def test_train_pairs_stay_within_sentences_and_reduced_windows(rng):
    """The reference's examples: no pair crosses a sentence, every distance is within the
    window, and the reduced windows make every window size from 1 to `window` occur."""
    tokens = np.arange(60, dtype=np.int32)          # every word once: positions are words
    sentences = np.array([0, 20, 45, 60], np.int64)
    examples, _ = ref.train_examples(tokens, sentences, np.array([0, 3], np.int64),
                                     np.full(60, 2**32 - 1, np.int64), unigram_table(np.ones(60)),
                                     4, 2, 3, 0, True)
    sentence_of = np.searchsorted(sentences, np.arange(60), side="right")
    spans = {}
    for (inp,), target, negs in examples[0]:
        assert sentence_of[inp] == sentence_of[target] and 0 < abs(inp - target) <= 4
        spans[target] = max(spans.get(target, 0), abs(inp - target))
    interior = [t for t in range(60) if all(sentence_of[t] == sentence_of[t + d]
                                            for d in (-4, 4) if 0 <= t + d < 60)]
    assert {spans[t] for t in interior} == {1, 2, 3, 4}


def test_draws_follow_the_unigram_table_and_the_thresholds():
    counts = np.array([400, 100, 25, 1])
    cum = unigram_table(counts)
    tokens = np.zeros(20000, np.int32)
    sentences = np.array([0, 20000], np.int64)
    examples, kept = ref.train_examples(tokens[:4000], np.array([0, 4000], np.int64),
                                        np.array([0, 1], np.int64), np.full(4, 2**32 - 1),
                                        cum, 1, 5, 9, 0, True)
    draws = np.concatenate([negs for _, _, negs in examples[0]])
    freq = np.bincount(draws, minlength=4) / draws.size
    want = counts**0.75 / np.sum(counts**0.75)
    np.testing.assert_allclose(freq, want, atol=0.01)
    trained = np.zeros(1, np.int64)
    thr = np.array([2**30, 0, 0, 0], np.int64)      # keep word 0 a quarter of the time
    W.skipgram_train(tokens, sentences, np.array([0, 1], np.int64), np.zeros(1), thr, cum, 1,
                     1, 5, 0, np.zeros((4, 2)), np.zeros((4, 2)), trained)
    assert abs(trained[0] / 20000 - 0.25) < 0.01


@pytest.mark.parametrize("table", ["zipf", "flat runs", "small total"])
def test_guided_draws_are_the_bisection_of_the_whole_table(table, rng):
    """The guide table only narrows the search: every draw is np.searchsorted's (bisect_left)
    of the same random number, for a long skewed table, one with runs of equal entries (words
    of zero weight after rounding) and one whose total is far below 2**31."""
    if table == "zipf":
        cum = unigram_table(np.sort(rng.zipf(1.5, 5000))[::-1])
    elif table == "flat runs":
        cum = np.repeat(unigram_table(rng.integers(1, 100, 50)), rng.integers(1, 4, 50))
    else:
        cum = np.cumsum(rng.integers(0, 5, 300)).astype(np.int32) + 1
    guide = W._guide(cum)
    negs = np.empty(4001, np.int32)
    W._draw_negatives(cum, guide, np.uint64(0), np.uint64(3), np.uint64(8), np.uint64(0), negs)
    r = [ref.philox(k // 2, 3, 8, 0)[k % 2] for k in range(negs.size)]
    want = np.searchsorted(cum, np.array(r, np.int64) % int(cum[-1]), side="left")
    np.testing.assert_array_equal(negs, want)


def test_a_sentence_trains_on_its_first_max_sentence_len_kept_words():
    n = W.MAX_SENTENCE_LEN + 7
    tokens = np.zeros(n + 3, np.int32)
    sentences = np.array([0, n, n + 3], np.int64)
    trained = np.zeros(2, np.int64)
    W.cbow_train(tokens, sentences, np.array([0, 1, 2], np.int64), np.zeros(2),
                 np.full(1, 2**32 - 1, np.int64), np.array([2**31 - 1], np.int32), 1, 1, 0, 0,
                 np.zeros((1, 2)), np.zeros((1, 2)), trained)
    np.testing.assert_array_equal(trained, [W.MAX_SENTENCE_LEN, 3])


@pytest.mark.parametrize("kernel", [W.skipgram_train, W.cbow_train])
def test_train_is_reproducible_and_the_counter_matters(kernel, rng):
    tokens, sentences, chunks = batch(rng, 6, [10, 8, 9], [2, 1])
    args = (tokens, sentences, chunks, np.array([0.1, 0.1]), np.full(6, 2**31, np.int64),
            unigram_table(np.arange(1, 7)), 2, 2, 3)
    runs = []
    for first_chunk in (0, 0, 1):
        syn0, syn1 = matrices(np.random.default_rng(1), 6, 4, np.float32)
        trained = np.zeros(2, np.int64)
        kernel(*args, first_chunk, syn0, syn1, trained)
        runs.append((syn0, syn1, trained))
    for a, b in zip(runs[0], runs[1]):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(runs[0][0], runs[2][0])


def test_bad_arguments_raise(rng):
    syn0, syn1 = matrices(rng, 4, 3, np.float64)
    i1 = np.array([1], np.int32)
    with pytest.raises(ValueError, match="outside"):
        W.skipgram_update(np.array([4], np.int32), i1, np.array([[0]], np.int32), 0.1, syn0, syn1)
    with pytest.raises(ValueError, match="negatives"):
        W.skipgram_update(i1, i1, np.array([[0], [1]], np.int32), 0.1, syn0, syn1)
    with pytest.raises(ValueError, match="syn0 and syn1neg"):
        W.skipgram_update(i1, i1, np.array([[0]], np.int32), 0.1, syn0, syn1[:3])
    with pytest.raises(ValueError, match="offsets must run from 0"):
        W.cbow_update(np.array([0, 2], np.int64), np.zeros(1, np.int32), i1,
                      np.array([[0]], np.int32), 0.1, syn0, syn1)
    with pytest.raises(ValueError, match="offsets must not decrease"):
        W.cbow_update(np.array([0, 2, 1], np.int64), np.zeros(1, np.int32),
                      np.array([1, 1], np.int32), np.zeros((2, 1), np.int32), 0.1, syn0, syn1)
    tokens, sentences, chunks = batch(rng, 4, [3, 2], [2])
    good = [tokens, sentences, chunks, np.ones(1), np.zeros(4, np.int64),
            unigram_table(np.ones(4)), 2, 1, 0, 0, syn0, syn1, np.zeros(1, np.int64)]
    for k, value, message in [
            (0, np.array([0, 9, 1, 2, 3], np.int32), "tokens has a word index"),
            (1, np.array([0, 3, 4], np.int64), "sentences must be offsets"),
            (2, np.array([0, 1], np.int64), "chunks must be sentence offsets"),
            (3, np.ones(2), "lr and trained"),
            (4, np.zeros(3, np.int64), "thresholds and cum_table"),
            (5, np.array([5, 9, 7, 12], np.int32), "non-decreasing cumulative table"),
            (6, 0, "window and negative"),
            (7, 0, "window and negative"),
            (8, -1, "seed and first_chunk")]:
        args = list(good)
        args[k] = value
        with pytest.raises(ValueError, match=message):
            W.skipgram_train(*args)
