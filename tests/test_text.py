"""numbanet.text: pad_sequences (Keras' behaviour), Word2Vec on corpora with planted structure
(skip-gram and CBOW), the evaluations on hand-made files, save/load, reproducibility, bad
arguments, and agreement with gensim where it is installed."""
import json
import pickle

import numba
import numpy as np
import pytest
from scipy import stats

import numbanet as nb
from numbanet.text import KeyedVectors, Word2Vec, pad_sequences


# ------------------------------------------------------------------------------- pad_sequences
def test_pad_sequences_keras_documented_examples():
    seq = [[1], [2, 3], [4, 5, 6]]
    out = pad_sequences(seq)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, [[0, 0, 1], [0, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(pad_sequences(seq, value=-1), [[-1, -1, 1], [-1, 2, 3],
                                                                 [4, 5, 6]])
    np.testing.assert_array_equal(pad_sequences(seq, padding="post"), [[1, 0, 0], [2, 3, 0],
                                                                      [4, 5, 6]])
    np.testing.assert_array_equal(pad_sequences(seq, maxlen=2), [[0, 1], [2, 3], [5, 6]])


@pytest.mark.parametrize("padding, truncating, want", [
    ("pre", "pre", [[0, 0, 0, 7], [3, 4, 5, 6]]),
    ("pre", "post", [[0, 0, 0, 7], [1, 2, 3, 4]]),
    ("post", "pre", [[7, 0, 0, 0], [3, 4, 5, 6]]),
    ("post", "post", [[7, 0, 0, 0], [1, 2, 3, 4]])])
def test_pad_sequences_longer_and_shorter_than_maxlen(padding, truncating, want):
    out = pad_sequences([[7], np.arange(1, 7)], maxlen=4, padding=padding, truncating=truncating)
    np.testing.assert_array_equal(out, want)


def test_pad_sequences_empty_sequences_are_all_padding():
    np.testing.assert_array_equal(pad_sequences([[], [1, 2], ()], value=9),
                                  [[9, 9], [1, 2], [9, 9]])
    assert pad_sequences([[], []]).shape == (2, 0)
    assert pad_sequences([], maxlen=3).shape == (0, 3)
    assert pad_sequences([]).shape == (0, 0)
    np.testing.assert_array_equal(pad_sequences([[1, 2], [3]], maxlen=0), np.zeros((2, 0)))


def test_pad_sequences_keeps_the_sample_shape():
    a = np.arange(6).reshape(3, 2)
    out = pad_sequences([a, [], a[:1]], maxlen=2, dtype="float32", value=-0.5,
                        padding="post")
    assert out.shape == (3, 2, 2) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0], a[1:])
    np.testing.assert_array_equal(out[1], np.full((2, 2), -0.5))
    np.testing.assert_array_equal(out[2], [[0, 1], [-0.5, -0.5]])


def test_pad_sequences_value_and_dtype():
    out = pad_sequences([[1.5, 2.25], [3.0]], dtype="float64", value=np.nan)
    np.testing.assert_array_equal(out, [[1.5, 2.25], [np.nan, 3.0]])
    # values are cast to the dtype as np.asarray does (Keras): 2.7 -> 2, padding 0.9 -> 0
    np.testing.assert_array_equal(pad_sequences([[2.7], [1, 2]], value=0.9), [[0, 2], [1, 2]])
    strings = pad_sequences([["a", ""], [], ["bcd"]], dtype=object, value="<pad>")
    assert strings.tolist() == [["a", ""], ["<pad>", "<pad>"], ["<pad>", "bcd"]]
    fixed = pad_sequences([["ab"], ["c", "d"]], dtype="<U3", value="-")
    assert fixed.tolist() == [["-", "ab"], ["c", "d"]]


def test_pad_sequences_bad_arguments_name_the_argument():
    cases = [
        (dict(padding="middle"), r"padding must be 'pre' or 'post', got 'middle'"),
        (dict(truncating=None), r"truncating must be 'pre' or 'post', got None"),
        (dict(maxlen=-1), r"maxlen must be None or a non-negative integer, got -1"),
        (dict(maxlen=2.5), r"maxlen must be None or a non-negative integer, got 2.5"),
        (dict(dtype="int32", value="x"), r"dtype 'int32' cannot hold the string value 'x'"),
        (dict(dtype="no-such-type"), r"dtype must be a NumPy dtype, got 'no-such-type'")]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            pad_sequences([[1, 2], [3]], **kwargs)
    with pytest.raises(ValueError, match=r"position 1 has elements of shape \(3,\), the first "
                                         r"non-empty one \(2,\)"):
        pad_sequences([[[1, 2]], [[1, 2, 3]]])
    with pytest.raises(ValueError, match=r"the item at position 1 is 5"):
        pad_sequences([[1], 5])
    with pytest.raises(ValueError, match=r"sequences must be a list of sequences, got 7"):
        pad_sequences(7)


# ------------------------------------------------------------------------- Word2Vec training
GROUPS = [[f"g{g}w{i}" for i in range(5)] for g in range(6)]


def planted_corpus(seed=0, sentences=1200):
    """Sentences of 8 words drawn from one group: words only co-occur with their group."""
    rng = np.random.default_rng(seed)
    return [[GROUPS[g][i] for i in rng.integers(0, 5, 8)] for g in rng.integers(0, 6, sentences)]


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("sg", [1, 0])
def test_planted_groups_are_nearest_neighbours(sg, workers):
    if workers > numba.config.NUMBA_NUM_THREADS:
        pytest.skip(f"Numba has fewer than {workers} threads here")
    model = Word2Vec(vector_size=16, window=3, min_count=1, sg=sg, epochs=10, seed=3,
                     sample=0, workers=workers, batch_words=1000).fit(planted_corpus())
    assert len(model.wv) == 30 and model.trained_words == 1200 * 8 * 10
    for group in GROUPS:
        for word in group:
            top = [w for w, _ in model.wv.most_similar(word, topn=4)]
            assert set(top) == set(group) - {word}, (word, top)
    words = [w for group in GROUPS for w in group]
    same = [model.wv.similarity(a, b) for a in words for b in words
            if a != b and a[:2] == b[:2]]
    other = [model.wv.similarity(a, b) for a in words for b in words if a[:2] != b[:2]]
    assert min(same) > max(other)           # (measured: > 0.96 and < 0.55, 2 workers included)


def test_vocabulary_counts_and_order():
    corpus = [["b", "a", "c", "a"], ["c", "d", "a"], ["e"], ["b", "e", "d"]]
    model = Word2Vec(vector_size=4, min_count=2, epochs=1, sample=0).build_vocab(corpus)
    # counts a3 b2 c2 d2 e2: ties put the later first-seen word first (gensim's lexsort)
    assert model.wv.index_to_key == ["a", "e", "d", "c", "b"]
    np.testing.assert_array_equal(model.wv.counts, [3, 2, 2, 2, 2])
    assert model.wv.key_to_index["c"] == 3 and "f" not in model.wv and len(model.wv) == 5
    assert model.corpus_count == 4 and model.corpus_total_words == 11
    assert model.wv.vectors.shape == (5, 4) and np.all(np.abs(model.wv.vectors) < 0.25)
    assert not model.syn1neg.any()


def test_fit_is_reproducible_with_a_seed_on_one_thread():
    corpus = planted_corpus(1, 300)
    a = Word2Vec(vector_size=8, min_count=1, epochs=2, seed=5, workers=1).fit(corpus)
    b = Word2Vec(vector_size=8, min_count=1, epochs=2, seed=5, workers=1).fit(corpus)
    c = Word2Vec(vector_size=8, min_count=1, epochs=2, seed=6, workers=1).fit(corpus)
    np.testing.assert_array_equal(a.wv.vectors, b.wv.vectors)
    np.testing.assert_array_equal(a.syn1neg, b.syn1neg)
    assert not np.array_equal(a.wv.vectors, c.wv.vectors)


def test_workers_default_to_numbas_threads_and_train_continues():
    corpus = planted_corpus(2, 200)
    model = Word2Vec(vector_size=8, min_count=1, epochs=1).fit(corpus)
    assert model.workers is None and numba.get_num_threads() >= 1
    before = model.wv.vectors.copy()
    chunks = model.chunks_trained
    model.train(corpus)
    assert model.chunks_trained == 2 * chunks and not np.array_equal(before, model.wv.vectors)


def test_keyed_vector_access():
    model = Word2Vec(vector_size=4, min_count=1, epochs=1).fit([["x", "y", "x"]])
    v = model.wv["x"]
    v[:] = 99.0                                      # a copy
    assert not np.any(model.wv.vectors == 99.0)
    with pytest.raises(KeyError, match="word 'zebra' not in vocabulary"):
        model.wv["zebra"]
    with pytest.raises(KeyError, match="word 'zebra' not in vocabulary"):
        model.wv.most_similar(["x", "zebra"])


def test_most_similar_is_gensims_mean_of_unit_vectors():
    kv = KeyedVectors(["a", "b", "c", "d"], np.array([[2.0, 0.0], [0.0, 5.0], [1.0, 1.0],
                                                      [-1.0, 0.2]], np.float32))
    # unit(a) + unit(b) = (1, 1): c is at cosine 1; a and b are inputs (left out)
    result = kv.most_similar(positive=["a", "b"], topn=10)
    assert [w for w, _ in result] == ["c", "d"]
    assert result[0][1] == pytest.approx(1.0)
    d = np.array([-1.0, 0.2]) / np.hypot(1.0, 0.2)
    assert result[1][1] == pytest.approx(d @ [2 ** -0.5, 2 ** -0.5])
    # a - c: unit(a) - unit(c) = (1 - 0.707, -0.707)
    m = np.array([1 - 2 ** -0.5, -(2 ** -0.5)])
    m /= np.linalg.norm(m)
    got = kv.most_similar(positive="a", negative=["c"], topn=1)
    assert got[0][0] == "d" and got[0][1] == pytest.approx(d @ m)
    assert kv.most_similar("a", topn=1, restrict_vocab=2) == [("b", pytest.approx(0.0))]
    np.testing.assert_allclose(kv.most_similar("c", topn=None),
                               [2 ** -0.5, 2 ** -0.5, 1.0, (d @ [1, 1]) / 2 ** 0.5], rtol=1e-6)


# -------------------------------------------------------------------------------- evaluations
WORDS = ["the", "man", "woman", "king", "queen", "prince", "boy", "girl", "car", "Man"]
VECTORS = np.array([
    [-1.0, 0.0, 0.0, 0.0, 0.006, -0.007, 0.032],
    [1.0, 0.0, 0.0, 0.0, 0.005, -0.027, 0.018],
    [1.0, 1.0, 0.0, 0.0, 0.065, 0.047, -0.035],
    [1.0, 0.0, 1.0, 0.0, -0.063, -0.031, 0.002],
    [1.0, 1.0, 1.0, 0.0, -0.116, -0.011, -0.062],
    [1.0, 0.0, 1.0, 0.6, -0.037, -0.027, -0.016],
    [1.0, 0.0, 0.0, 1.0, 0.021, 0.052, -0.006],
    [1.0, 1.0, 0.0, 1.0, 0.068, -0.033, 0.018],
    [0.0, -1.0, 1.0, 0.0, 0.045, 0.005, -0.037],
    [0.0, 0.0, -1.0, 1.0, -0.046, -0.023, 0.011]], np.float32)   # axes: person, female, royal,
#                                                                  young, then small noise


@pytest.fixture
def kv():
    return KeyedVectors(WORDS, VECTORS.copy())


def cos(a, b):
    a, b = VECTORS[WORDS.index(a)].astype(np.float64), VECTORS[WORDS.index(b)].astype(np.float64)
    return a @ b / np.linalg.norm(a) / np.linalg.norm(b)


PAIRS = """# word pairs, tab-separated
man\twoman\t7.5
MAN\tking\t5.0
# a comment
woman\tqueen\t8.0
queen\tunicorn\t3.0
man woman 2.0
car\tboy\t0.5
king\tprince\tnot-a-number
boy\tgirl\t7.0
\n
the\tcar\t1.0
dragon\tking\t4.0
"""


def test_evaluate_word_pairs_parses_gensims_format(kv, tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text(PAIRS)
    # case-insensitive: MAN is 'man' (index 1, before 'Man'); two OOV pairs; four lines invalid
    gold = [7.5, 5.0, 8.0, 0.5, 7.0, 1.0]
    model = [cos("man", "woman"), cos("man", "king"), cos("woman", "queen"), cos("car", "boy"),
             cos("boy", "girl"), cos("the", "car")]
    pearson, spearman, oov = kv.evaluate_word_pairs(path)
    assert pearson == pytest.approx(tuple(stats.pearsonr(gold, model)), rel=1e-6)
    assert spearman == pytest.approx(tuple(stats.spearmanr(gold, model)), rel=1e-6)
    assert oov == pytest.approx(100 * 2 / 8)
    # dummy4unknown: OOV pairs scored 0; the ratio is of all scored pairs
    pearson, spearman, oov = kv.evaluate_word_pairs(path, dummy4unknown=True)
    g = gold[:3] + [3.0] + gold[3:] + [4.0]
    m = model[:3] + [0.0] + model[3:] + [0.0]
    assert pearson == pytest.approx(tuple(stats.pearsonr(g, m)), rel=1e-6)
    assert spearman == pytest.approx(tuple(stats.spearmanr(g, m)), rel=1e-6)
    assert oov == pytest.approx(100 * 2 / 8)
    # case-sensitive: 'MAN' is unknown too
    del gold[1], model[1]
    pearson, _, oov = kv.evaluate_word_pairs(path, case_insensitive=False)
    assert pearson == pytest.approx(tuple(stats.pearsonr(gold, model)), rel=1e-6)
    assert oov == pytest.approx(100 * 3 / 8)
    # restrict_vocab: only the first 5 words count as known
    pearson, _, oov = kv.evaluate_word_pairs(path, restrict_vocab=5)
    assert oov == pytest.approx(100 * 5 / 8)
    assert pearson == pytest.approx(tuple(stats.pearsonr(
        [7.5, 5.0, 8.0], [cos("man", "woman"), cos("man", "king"), cos("woman", "queen")])),
        rel=1e-6)
    comma = tmp_path / "pairs.csv"
    comma.write_text("man,woman,1\nking,queen,2\nboy,girl,4\n")
    assert kv.evaluate_word_pairs(comma, delimiter=",")[2] == 0.0
    empty = tmp_path / "none.tsv"
    empty.write_text("# nothing\nzebra\tunicorn\t1\n")
    with pytest.raises(ValueError, match="no valid pair .* in .*none.tsv"):
        kv.evaluate_word_pairs(empty)


ANALOGIES = """: family
man woman king queen
woman man queen king
man woman boy girl
man woman king prince
man woman king unicorn
man woman king
: royalty
man boy king prince
king queen prince girl
king queen prince princess
MAN WOMAN KING QUEEN
: empty
"""


def test_evaluate_word_analogies_counts_as_gensim(kv, tmp_path):
    path = tmp_path / "questions.txt"
    path.write_text(ANALOGIES)
    upper = lambda *ws: tuple(w.upper() for w in ws)     # noqa: E731  (case-insensitive keys)
    score, sections = kv.evaluate_word_analogies(path)
    assert [s["section"] for s in sections] == ["family", "royalty", "empty", "Total accuracy"]
    assert sections[0]["correct"] == [upper("man", "woman", "king", "queen"),
                                      upper("woman", "man", "queen", "king"),
                                      upper("man", "woman", "boy", "girl")]
    assert sections[0]["incorrect"] == [upper("man", "woman", "king", "prince")]
    assert sections[1]["correct"] == [upper("man", "boy", "king", "prince"),
                                      upper("king", "queen", "prince", "girl"),
                                      upper("man", "woman", "king", "queen")]
    assert sections[1]["incorrect"] == [] and sections[2]["correct"] == []
    assert len(sections[3]["correct"]) == 6 and len(sections[3]["incorrect"]) == 1
    assert score == pytest.approx(6 / 7)
    # OOV questions count as wrong with dummy4unknown
    score, sections = kv.evaluate_word_analogies(path, dummy4unknown=True)
    assert score == pytest.approx(6 / 9)
    assert upper("man", "woman", "king", "unicorn") in sections[0]["incorrect"]
    # case-sensitive: the upper-case question is out of the vocabulary
    score, sections = kv.evaluate_word_analogies(path, case_insensitive=False)
    assert score == pytest.approx(5 / 6)
    assert ("man", "woman", "king", "queen") in sections[0]["correct"]
    # restrict_vocab=5: the, man, woman, king, queen only; answers searched among them
    score, sections = kv.evaluate_word_analogies(path, restrict_vocab=5)
    assert score == 1.0 and len(sections[-1]["correct"]) == 3
    bad = tmp_path / "bad.txt"
    bad.write_text("man woman king queen\n: late section\n")
    with pytest.raises(ValueError, match="line 1 of .*bad.txt comes before the first"):
        kv.evaluate_word_analogies(bad)
    none = tmp_path / "none.txt"
    none.write_text(": only a header\n")
    with pytest.raises(ValueError, match="no 'a b c d' question in .*none.txt"):
        kv.evaluate_word_analogies(none)


def test_word2vec_evaluates_through_its_wv(kv, tmp_path):
    pairs, questions = tmp_path / "p.tsv", tmp_path / "q.txt"
    pairs.write_text(PAIRS)
    questions.write_text(ANALOGIES)
    model = Word2Vec(vector_size=7)
    model.wv = kv
    assert model.evaluate_word_pairs(pairs) == kv.evaluate_word_pairs(pairs)
    assert model.evaluate_word_analogies(questions, dummy4unknown=True) == \
        kv.evaluate_word_analogies(questions, dummy4unknown=True)


# ------------------------------------------------------------------------------- save / load
def test_save_load_round_trip_is_bit_identical(tmp_path):
    model = Word2Vec(vector_size=6, min_count=1, sg=0, epochs=2, window=2, seed=4,
                     workers=1).fit(planted_corpus(3, 100) + [["ünïcode", "g0w1"]])
    path = model.save(tmp_path / "model.npz")
    loaded = Word2Vec.load(path)
    assert loaded.get_config() == model.get_config()
    assert loaded.wv.index_to_key == model.wv.index_to_key
    for a, b in [(loaded.wv.vectors, model.wv.vectors), (loaded.syn1neg, model.syn1neg),
                 (loaded.wv.counts, model.wv.counts), (loaded.thresholds, model.thresholds),
                 (loaded.cum_table, model.cum_table)]:
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    assert (loaded.chunks_trained, loaded.corpus_total_words) == \
        (model.chunks_trained, model.corpus_total_words)
    # training on continues identically
    corpus = planted_corpus(4, 50)
    model.train(corpus)
    loaded.train(corpus)
    np.testing.assert_array_equal(loaded.wv.vectors, model.wv.vectors)
    with np.load(path, allow_pickle=False) as data:
        assert data["vocab"].dtype.kind == "U"
        assert json.loads(str(data["state"]))["config"]["sg"] == 0


def test_load_refuses_foreign_and_broken_files(tmp_path):
    text = tmp_path / "text.npz"
    text.write_text("not a zip")
    pickled = tmp_path / "pickled.npz"
    pickled.write_bytes(pickle.dumps({"a": 1}))
    other = tmp_path / "other.npz"
    np.savez(other, x=np.arange(3))
    array = tmp_path / "array.npy"
    np.save(array, np.arange(3))
    model = Word2Vec(vector_size=3, min_count=1, epochs=1).fit([["a", "b"]])
    truncated = tmp_path / "truncated.npz"
    model.save(tmp_path / "good.npz")
    truncated.write_bytes((tmp_path / "good.npz").read_bytes()[:200])
    shapes = tmp_path / "shapes.npz"
    with np.load(tmp_path / "good.npz") as data:
        arrays = dict(data)
    arrays["vectors"] = np.zeros((5, 3), np.float32)
    np.savez(shapes, **arrays)
    for path in (text, pickled, other, array, truncated, shapes):
        with pytest.raises(ValueError, match=f"{path.name}.* is not a numbanet Word2Vec file"):
            Word2Vec.load(path)
    with pytest.raises(FileNotFoundError):
        Word2Vec.load(tmp_path / "missing.npz")


# ----------------------------------------------------------------------------- bad arguments
@pytest.mark.parametrize("kwargs, message", [
    (dict(vector_size=0), r"vector_size must be an integer >= 1, got 0"),
    (dict(window=2.5), r"window must be an integer >= 1, got 2.5"),
    (dict(min_count=-1), r"min_count must be an integer >= 0, got -1"),
    (dict(sg=2), r"sg must be 1 \(skip-gram\) or 0 \(CBOW\), got 2"),
    (dict(negative=0), r"negative must be an integer >= 1, got 0"),
    (dict(ns_exponent=float("nan")), r"ns_exponent must be a finite number, got nan"),
    (dict(sample=-0.1), r"sample must be a finite number >= 0.0, got -0.1"),
    (dict(alpha=0), r"alpha must be a finite number > 0.0, got 0"),
    (dict(min_alpha="x"), r"min_alpha must be a finite number >= 0.0, got 'x'"),
    (dict(epochs=-1), r"epochs must be an integer >= 0, got -1"),
    (dict(seed=-3), r"seed must be an integer >= 0, got -3"),
    (dict(workers=0), r"workers must be an integer >= 1 or None, got 0"),
    (dict(workers=10**6), r"workers must be at most Numba's \d+ threads"),
    (dict(device="tpu"), r"device must be one of cpu, cuda, got 'tpu'"),
    (dict(max_vocab_size=0), r"max_vocab_size must be an integer >= 1 or None, got 0"),
    (dict(batch_words=True), r"batch_words must be an integer >= 1, got True")])
def test_bad_arguments_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match="Word2Vec: " + message):
        Word2Vec(**kwargs)


def test_bad_corpora_and_calls_are_refused():
    with pytest.raises(ValueError, match="re-iterable .* one-shot iterator generator"):
        Word2Vec(min_count=1).fit(s for s in [["a"]])
    with pytest.raises(ValueError, match="sentence 1 is the string 'not tokens'"):
        Word2Vec(min_count=1).fit([["a"], "not tokens"])
    with pytest.raises(ValueError, match="no word occurs min_count=5 times in the 3 words"):
        Word2Vec().fit([["a", "b", "c"]])
    with pytest.raises(ValueError, match="build the vocabulary first"):
        Word2Vec().train([["a"]])
    model = Word2Vec(vector_size=3, min_count=1, epochs=1).fit([["a", "b"]])
    with pytest.raises(ValueError, match="topn must be None or a non-negative integer, got -1"):
        model.wv.most_similar("a", topn=-1)
    with pytest.raises(ValueError, match="restrict_vocab must be None or a positive integer"):
        model.wv.most_similar("a", restrict_vocab=0)


def test_nb_text_is_the_package():
    assert nb.text.Word2Vec is Word2Vec and nb.text.pad_sequences is pad_sequences


# ------------------------------------------------------------------------------------ gensim
def test_agrees_with_gensim_on_vocabulary_tables_and_initial_vectors():
    gensim = pytest.importorskip("gensim")
    rng = np.random.default_rng(7)
    zipf = np.minimum(rng.zipf(1.3, 20000), 3000)
    corpus = [[f"w{k}" for k in zipf[i:i + 13]] for i in range(0, zipf.size, 13)]
    settings = [dict(min_count=5), dict(min_count=1, max_vocab_size=300, sample=1e-4,
                                         ns_exponent=0.5),
                dict(min_count=3, sample=50.0, ns_exponent=-0.5), dict(min_count=2, sample=0)]
    for kw in settings:
        theirs = gensim.models.Word2Vec(vector_size=5, seed=2, **kw)
        theirs.build_vocab(corpus)
        ours = Word2Vec(vector_size=5, seed=2, **kw).build_vocab(corpus)
        assert ours.wv.index_to_key == theirs.wv.index_to_key, kw
        np.testing.assert_array_equal(ours.wv.counts, theirs.wv.expandos["count"])
        np.testing.assert_array_equal(ours.cum_table, theirs.cum_table)
        np.testing.assert_array_equal(ours.thresholds, theirs.wv.expandos["sample_int"])
        np.testing.assert_array_equal(ours.wv.vectors, theirs.wv.vectors)


def test_evaluations_agree_with_gensim(kv, tmp_path):
    gensim = pytest.importorskip("gensim")
    theirs = gensim.models.KeyedVectors(7)
    theirs.add_vectors(WORDS, VECTORS.copy())
    pairs, questions = tmp_path / "p.tsv", tmp_path / "q.txt"
    pairs.write_text(PAIRS)
    questions.write_text(ANALOGIES)
    for kw in (dict(), dict(dummy4unknown=True), dict(case_insensitive=False),
               dict(restrict_vocab=5)):
        (opr, opp), (osr, osp), ooov = kv.evaluate_word_pairs(pairs, **kw)
        (pr, pp), (sr, sp), oov = theirs.evaluate_word_pairs(str(pairs), **kw)
        assert (opr, opp, osr, osp, ooov) == pytest.approx((pr, pp, sr, sp, oov), rel=1e-5)
        ours = kv.evaluate_word_analogies(questions, **kw)
        assert ours == theirs.evaluate_word_analogies(str(questions), **kw)


def test_text_vectorization_is_in_layers_too():
    """Keras code imports it from keras.layers."""
    assert nb.layers.TextVectorization is nb.text.TextVectorization
    assert nb.layers.get("TextVectorization") is nb.text.TextVectorization
