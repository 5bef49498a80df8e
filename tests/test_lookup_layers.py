"""Keras' lookup preprocessing layers (StringLookup, IntegerLookup, Hashing, Discretization):
Keras' docstring examples, adapt, OOV and mask indices, invert round trips, every output_mode
against NumPy (and torch's one_hot / bincount / bucketize), the stable hash, Keras' quantile
boundaries, a structured-data model trained and saved, configs and bad arguments."""
import numpy as np
import pytest
from test_layers_keras import _round_trip

import numbanet as nb
from numbanet.layers import lookup as LK

L = nb.layers
VOCAB = ["a", "b", "c", "d"]
IVOCAB = [12, 36, 1138, 42]


def _encode_ref(ids, depth, mode, weights=None):
    """float64 reference of the encodings: one row per sample (per id for one_hot)."""
    ids = np.asarray(ids)
    if mode == "one_hot":
        flat = ids.reshape(-1)
        out = np.zeros((flat.size, depth))
        for r, i in enumerate(flat):
            if 0 <= i < depth:
                out[r, i] = 1.0
        squeeze = ids.ndim == 1 or ids.shape[1] == 1
        return out.reshape((ids.shape[0], depth) if squeeze else ids.shape + (depth,))
    rows = ids.reshape(ids.shape[0], -1)
    out = np.zeros((rows.shape[0], depth))
    for r, row in enumerate(rows):
        for i in row:
            if 0 <= i < depth:
                out[r, i] += 1.0
    if mode == "multi_hot":
        out = (out > 0).astype(float)
    if weights is not None:
        out = out * np.asarray(weights, float)
    return out


# ------------------------------------------------------------------ Keras' docstring examples
def test_string_lookup_keras_docstring_examples():
    data = [["a", "c", "d"], ["d", "z", "b"]]
    out = L.StringLookup(vocabulary=VOCAB)(data)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, [[1, 3, 4], [4, 0, 2]])
    layer = L.StringLookup()
    layer.adapt(data)
    assert layer.get_vocabulary() == ["[UNK]", "d", "z", "c", "b", "a"]
    np.testing.assert_array_equal(layer(data), [[5, 3, 1], [1, 2, 4]])
    # several OOV indices: in-vocabulary values move up by one (the OOV buckets differ from
    # Keras' FarmHash ones, see test_several_oov_indices_hash_stably)
    two = L.StringLookup(vocabulary=VOCAB, num_oov_indices=2)([["a", "c", "d"], ["m", "z", "b"]])
    np.testing.assert_array_equal(two[0], [2, 4, 5])
    assert two[1, 2] == 3 and set(two[1, :2]) <= {0, 1}
    np.testing.assert_array_equal(
        L.StringLookup(vocabulary=VOCAB, output_mode="one_hot")(["a", "b", "c", "d", "z"]),
        [[0, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 1], [1, 0, 0, 0, 0]])
    data4 = [["a", "c", "d", "d"], ["d", "z", "b", "z"]]
    np.testing.assert_array_equal(L.StringLookup(vocabulary=VOCAB, output_mode="multi_hot")(data4),
                                  [[0, 1, 0, 1, 1], [1, 0, 1, 0, 1]])
    np.testing.assert_array_equal(L.StringLookup(vocabulary=VOCAB, output_mode="count")(data4),
                                  [[0, 1, 0, 1, 2], [2, 0, 1, 0, 1]])
    tfidf = L.StringLookup(output_mode="tf_idf")
    tfidf.set_vocabulary(VOCAB, idf_weights=[0.25, 0.75, 0.6, 0.4])
    out = tfidf(data4)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0, 0.25, 0, 0.6, 0.8], [1.0, 0, 0.75, 0, 0.4]], rtol=1e-6)
    tfidf.set_vocabulary(["[UNK]"] + VOCAB, idf_weights=[0.9, 0.25, 0.75, 0.6, 0.4])
    np.testing.assert_allclose(tfidf(data4), [[0, 0.25, 0, 0.6, 0.8], [1.8, 0, 0.75, 0, 0.4]],
                               rtol=1e-6)
    inv = L.StringLookup(vocabulary=VOCAB, invert=True)
    want = [["a", "c", "d"], ["d", "[UNK]", "b"]]
    np.testing.assert_array_equal(inv([[1, 3, 4], [4, 0, 2]]), want)
    np.testing.assert_array_equal(inv(L.StringLookup(vocabulary=VOCAB)(data)), want)


def test_integer_lookup_keras_docstring_examples():
    data = np.array([[12, 1138, 42], [42, 1000, 36]])
    np.testing.assert_array_equal(L.IntegerLookup(vocabulary=IVOCAB)(data), [[1, 3, 4], [4, 0, 2]])
    layer = L.IntegerLookup()
    layer.adapt(data)
    assert layer.get_vocabulary() == [-1, 42, 1138, 1000, 36, 12]
    np.testing.assert_array_equal(layer(data), [[5, 2, 1], [1, 3, 4]])
    np.testing.assert_array_equal(
        L.IntegerLookup(vocabulary=IVOCAB, num_oov_indices=2)(np.array([[12, 1138, 42],
                                                                        [37, 1000, 36]])),
        [[2, 4, 5], [1, 0, 3]])                            # floormod, as in Keras
    floormod = L.IntegerLookup(vocabulary=[10, 20, 30], num_oov_indices=4, oov_method="floormod")
    np.testing.assert_array_equal(floormod(np.array([100, 300, 700, 1100, 1700, 2000])),
                                  [0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(
        L.IntegerLookup(vocabulary=IVOCAB, output_mode="one_hot")(np.array([12, 36, 1138, 42, 7])),
        [[0, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 1], [1, 0, 0, 0, 0]])
    data4 = np.array([[12, 1138, 42, 42], [42, 7, 36, 7]])
    np.testing.assert_array_equal(
        L.IntegerLookup(vocabulary=IVOCAB, output_mode="multi_hot")(data4),
        [[0, 1, 0, 1, 1], [1, 0, 1, 0, 1]])
    np.testing.assert_array_equal(L.IntegerLookup(vocabulary=IVOCAB, output_mode="count")(data4),
                                  [[0, 1, 0, 1, 2], [2, 0, 1, 0, 1]])
    np.testing.assert_allclose(
        L.IntegerLookup(output_mode="tf_idf", vocabulary=IVOCAB,
                        idf_weights=[0.25, 0.75, 0.6, 0.4])(data4),
        [[0, 0.25, 0, 0.6, 0.8], [1.0, 0, 0.75, 0, 0.4]], rtol=1e-6)
    np.testing.assert_allclose(
        L.IntegerLookup(output_mode="tf_idf", vocabulary=[-1] + IVOCAB,
                        idf_weights=[0.9, 0.25, 0.75, 0.6, 0.4])(data4),
        [[0, 0.25, 0, 0.6, 0.8], [1.8, 0, 0.75, 0, 0.4]], rtol=1e-6)
    inv = L.IntegerLookup(vocabulary=IVOCAB, invert=True)
    np.testing.assert_array_equal(inv(np.array([[1, 3, 4], [4, 0, 2]])),
                                  [[12, 1138, 42], [42, -1, 36]])
    fwd = L.IntegerLookup(vocabulary=IVOCAB)
    again = L.IntegerLookup(vocabulary=fwd.get_vocabulary(), invert=True)
    np.testing.assert_array_equal(again(fwd(data)), [[12, 1138, 42], [42, -1, 36]])


def test_discretization_keras_docstring_examples():
    x = np.array([[-1.5, 1.0, 3.4, .5], [0.0, 3.0, 1.3, 0.0]])
    out = L.Discretization(bin_boundaries=[0., 1., 2.])(x)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, [[0, 2, 3, 1], [1, 3, 2, 1]])
    layer = L.Discretization(num_bins=4, epsilon=0.01)
    layer.adapt(x)
    np.testing.assert_array_equal(layer(x), [[0, 2, 3, 2], [1, 3, 3, 1]])
    # the boundaries Keras' summary gives for these 8 values
    np.testing.assert_allclose(layer.bin_boundaries, [0.0, 0.5, 1.3], rtol=1e-6)


def test_hashing_layout_of_keras_docstring_examples():
    """Keras' bins come from FarmHash64, which numbanet does not reproduce: the shapes, the
    mask bin and the range are Keras'; the bins are numbanet's stable hash's (fixed here)."""
    inp = [["A"], ["B"], ["C"], ["D"], ["E"]]
    out = L.Hashing(num_bins=3)(inp)
    assert out.shape == (5, 1) and out.dtype == np.int64
    np.testing.assert_array_equal(out.ravel(), [1, 1, 2, 2, 2])
    masked = L.Hashing(num_bins=3, mask_value="")([["A"], ["B"], [""], ["C"], ["D"]])
    np.testing.assert_array_equal(masked.ravel(), [1, 2, 0, 2, 2])
    assert set(L.Hashing(3, salt=[133, 137])(inp).ravel()) <= {0, 1, 2}
    np.testing.assert_array_equal(L.Hashing(3, salt=133)(inp), L.Hashing(3, salt=[133, 133])(inp))


# --------------------------------------------------------------------------------- the hash
def test_stable_hash_is_fixed_and_independent_of_pythons_hash_seed():
    import subprocess
    import sys
    got = LK.stable_hash64("A")
    assert got == 0x46507cca99a3891a
    assert LK.stable_hash64(b"A") == got and LK.stable_hash64(42) == LK.stable_hash64("42")
    assert LK.stable_hash64("A", [1, 2]) != got
    code = ("from numbanet.layers.lookup import stable_hash64 as h; "
            "print(h('hello'), h(7), h('x', [3, 4]))")
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={"PYTHONHASHSEED": seed, "PATH": ""}, check=True).stdout
            for seed in ("0", "1", "12345")}
    assert runs == {f"{LK.stable_hash64('hello')} {LK.stable_hash64(7)} "
                    f"{LK.stable_hash64('x', [3, 4])}\n"}


def test_hashing_bins_are_stable_and_uniform(rng):
    layer = L.Hashing(num_bins=5)
    np.testing.assert_array_equal(layer(np.array(["cat", "dog", "emu", "yak", "owl"])),
                                  [4, 0, 1, 3, 2])
    np.testing.assert_array_equal(layer(np.array([[1, 2], [3, 4]])), [[0, 0], [1, 2]])
    # floats are truncated to integers first, as in Keras
    np.testing.assert_array_equal(layer(np.array([1.7, -2.2])), layer(np.array([1, -2])))
    keys = np.array([f"user-{i}" for i in range(20000)], dtype=object)
    bins = L.Hashing(num_bins=10)(keys)
    counts = np.bincount(bins, minlength=10)
    chi2 = ((counts - 2000.0) ** 2 / 2000.0).sum()
    assert chi2 < 27.9                          # chi-square, 9 degrees of freedom, p = 0.001
    ints = L.Hashing(num_bins=7)(np.arange(7000))
    assert ((np.bincount(ints, minlength=7) - 1000.0) ** 2 / 1000.0).sum() < 24.3   # 6 dof
    # a mask value is bin 0 and nothing else lands there
    masked = L.Hashing(num_bins=4, mask_value=0)(np.arange(400).reshape(100, 4))
    assert masked[0, 0] == 0 and np.count_nonzero(masked == 0) == 1


@pytest.mark.parametrize("mode", ["one_hot", "multi_hot", "count"])
def test_hashing_output_modes_against_numpy(mode, rng):
    x = rng.choice(["p", "q", "r", "s", "t", "u"], (6, 3)).astype(object)
    ids = L.Hashing(num_bins=4)(x)
    out = L.Hashing(num_bins=4, output_mode=mode)(x if mode != "one_hot" else x[:, :1])
    want = _encode_ref(ids if mode != "one_hot" else ids[:, :1], 4, mode)
    assert out.dtype == np.float32 and out.shape == want.shape
    np.testing.assert_array_equal(out, want)


# ---------------------------------------------------------------------------- adapt / OOV / mask
def test_adapt_orders_by_count_then_value_and_caps_max_tokens(rng):
    words = rng.choice(["w%d" % i for i in range(30)], 500, p=np.linspace(1, 3, 30) /
                       np.linspace(1, 3, 30).sum()).astype(object)
    layer = L.StringLookup(max_tokens=11)
    layer.adapt(words)
    values, counts = np.unique(words.astype(str), return_counts=True)
    order = sorted(zip(counts, values), reverse=True)[:10]
    assert layer.get_vocabulary() == ["[UNK]"] + [v for _, v in order]
    assert layer.vocabulary_size() == 11
    assert layer.get_vocabulary(include_special_tokens=False) == [v for _, v in order]
    ids = layer(words)
    index = {v: i for i, v in enumerate(layer.get_vocabulary())}
    np.testing.assert_array_equal(ids, [index.get(w, 0) for w in words])
    # the mask and OOV tokens are never learned
    masked = L.StringLookup(mask_token="")
    masked.adapt([["", "[UNK]", "x"], ["x", "", "y"]])
    assert masked.get_vocabulary() == ["", "[UNK]", "x", "y"]
    ints = L.IntegerLookup(mask_token=0)
    ints.adapt(np.array([0, 0, 5, -1, 5, 9]))
    assert ints.get_vocabulary() == [0, -1, 5, 9]
    # an iterable of batches, steps of them
    gen = L.IntegerLookup()
    gen.adapt((np.array([[i, i + 1]]) for i in range(10)), steps=2)
    assert gen.get_vocabulary() == [-1, 1, 2, 0]         # batches [0, 1] and [1, 2]


def test_mask_and_oov_indices_in_every_mode():
    layer = L.StringLookup(vocabulary=VOCAB, mask_token="", num_oov_indices=1)
    assert layer.get_vocabulary() == ["", "[UNK]"] + VOCAB
    np.testing.assert_array_equal(layer([["a", "", "q"], ["", "d", "b"]]), [[2, 0, 1], [0, 5, 3]])
    hot = L.StringLookup(vocabulary=VOCAB, mask_token="", output_mode="count")
    assert hot.get_vocabulary() == ["[UNK]"] + VOCAB and hot.vocabulary_size() == 5
    np.testing.assert_array_equal(hot([["a", "", "q"], ["", "", "a"]]),
                                  [[1, 1, 0, 0, 0], [0, 1, 0, 0, 0]])        # masks dropped
    np.testing.assert_array_equal(
        L.StringLookup(vocabulary=VOCAB, mask_token="", output_mode="one_hot")(["", "b"]),
        [[0, 0, 0, 0, 0], [0, 0, 1, 0, 0]])
    none = L.StringLookup(vocabulary=VOCAB, num_oov_indices=0)
    assert none.get_vocabulary() == VOCAB
    np.testing.assert_array_equal(none(["d", "a"]), [3, 0])
    with pytest.raises(ValueError, match=r"num_oov_indices=0 every value must be in the "
                                         r"vocabulary; got out-of-vocabulary values \['zz'\]"):
        none(["a", "zz"])
    ints = L.IntegerLookup(vocabulary=IVOCAB, mask_token=0, num_oov_indices=3)
    assert ints.get_vocabulary() == [0, -1, -1, -1] + IVOCAB
    np.testing.assert_array_equal(ints(np.array([0, 12, 7, 8, 9, -5, 42])),
                                  [0, 4, 1 + 7 % 3, 1 + 8 % 3, 1 + 9 % 3, 1 + (-5) % 3, 7])
    inv = L.IntegerLookup(vocabulary=IVOCAB, mask_token=0, invert=True)
    np.testing.assert_array_equal(inv(np.array([0, 1, 2, 5, 99, -3])), [0, -1, 12, 42, -1, -1])


def test_several_oov_indices_hash_stably():
    layer = L.StringLookup(vocabulary=VOCAB, num_oov_indices=3)
    oov = np.array(["m", "z", "qq", "m"], dtype=object)
    np.testing.assert_array_equal(layer(oov), [LK.stable_hash64(v) % 3 for v in oov])
    np.testing.assert_array_equal(layer(oov), [0, 1, 1, 0])
    salted = L.StringLookup(vocabulary=VOCAB, num_oov_indices=3, salt=7)
    np.testing.assert_array_equal(salted(oov), [LK.stable_hash64(v, [7, 7]) % 3 for v in oov])
    farm = L.IntegerLookup(vocabulary=[10, 20, 30], num_oov_indices=4, oov_method="farmhash")
    vals = np.array([100, 300, 700, 1100, 1700, 2000])
    np.testing.assert_array_equal(farm(vals), [LK.stable_hash64(str(v)) % 4 for v in vals])
    assert len(set(farm(vals))) > 1                # spread, unlike floormod's all-zero


@pytest.mark.parametrize("cls, vocab, oov", [(L.StringLookup, VOCAB, "[UNK]"),
                                             (L.IntegerLookup, IVOCAB, -1)])
def test_invert_round_trip(cls, vocab, oov, rng):
    mask = "" if cls is L.StringLookup else 0
    for kwargs in ({}, {"mask_token": mask}, {"num_oov_indices": 2}):
        fwd = cls(vocabulary=vocab, **kwargs)
        inv = cls(vocabulary=fwd.get_vocabulary(), invert=True, **kwargs)
        x = np.array(rng.choice(vocab, (5, 3)), dtype=object if cls is L.StringLookup else None)
        np.testing.assert_array_equal(inv(fwd(x)), x)
        # the vocabulary's own indices come back; special ones give the mask / OOV token
        start = fwd.vocabulary_size() - len(vocab)
        ids = rng.integers(start, fwd.vocabulary_size(), (4, 2))
        np.testing.assert_array_equal(fwd(inv(ids)), ids)
        specials = inv(np.arange(start))
        want = ([mask] if "mask_token" in kwargs else []) + [oov] * kwargs.get(
            "num_oov_indices", 1)
        np.testing.assert_array_equal(specials, want)


@pytest.mark.parametrize("mode", ["one_hot", "multi_hot", "count", "tf_idf"])
@pytest.mark.parametrize("shape", [(7,), (7, 1), (7, 4)])
def test_lookup_output_modes_against_numpy(mode, shape, rng):
    if mode == "one_hot" and shape == (7, 4):
        shape = (7, 3)
    vocab = ["v%d" % i for i in range(6)]
    x = rng.choice(vocab + ["oov1", "oov2", ""], shape).astype(object)
    idf = rng.uniform(0.1, 2.0, 6)
    kwargs = dict(idf_weights=idf) if mode == "tf_idf" else {}
    layer = L.StringLookup(vocabulary=vocab, mask_token="", num_oov_indices=2,
                           output_mode=mode, **kwargs)
    ids = L.StringLookup(vocabulary=vocab, mask_token="", num_oov_indices=2)(x)
    ids = np.where(ids == 0, -1, ids - 1)     # no mask index in the encodings; masks dropped
    weights = np.concatenate([[idf.mean()] * 2, idf]) if mode == "tf_idf" else None
    want = _encode_ref(ids, 8, "count" if mode == "tf_idf" else mode, weights)
    out = layer(x)
    assert out.dtype == np.float32 and out.shape == want.shape
    assert out.shape[1:] == layer.compute_output_shape(shape[1:])
    np.testing.assert_allclose(out, want, rtol=1e-6)
    padded = L.StringLookup(vocabulary=vocab, mask_token="", num_oov_indices=2, max_tokens=11,
                            pad_to_max_tokens=True, output_mode=mode, **kwargs)(x)
    assert padded.shape[-1] == 11
    np.testing.assert_allclose(padded[..., :8], want, rtol=1e-6)
    assert not padded[..., 8:].any()


def test_encodings_match_torch(rng):
    torch = pytest.importorskip("torch")
    ids = rng.integers(0, 9, (10, 4))
    x = np.array(IVOCAB + [5, 6, 7, 8, 9])[ids]
    lookup = L.IntegerLookup(vocabulary=IVOCAB + [5, 6, 7, 8, 9], num_oov_indices=0)
    np.testing.assert_array_equal(lookup(x), ids)
    onehot = L.IntegerLookup(vocabulary=IVOCAB + [5, 6, 7, 8, 9], num_oov_indices=0,
                             output_mode="one_hot")(x[:, 0])
    np.testing.assert_array_equal(onehot, torch.nn.functional.one_hot(
        torch.from_numpy(ids[:, 0]), 9).numpy())
    count = L.IntegerLookup(vocabulary=IVOCAB + [5, 6, 7, 8, 9], num_oov_indices=0,
                            output_mode="count")(x)
    np.testing.assert_array_equal(count, np.stack([torch.bincount(torch.from_numpy(r),
                                                                  minlength=9).numpy()
                                                   for r in ids]))
    v = rng.normal(size=(6, 5)).astype(np.float32)
    edges = np.sort(rng.normal(size=4)).astype(np.float32)
    np.testing.assert_array_equal(
        L.Discretization(bin_boundaries=edges.tolist())(v),
        torch.bucketize(torch.from_numpy(v), torch.from_numpy(edges), right=True).numpy())


def test_tf_idf_adapt_is_keras_formula(rng):
    docs = [["a", "b", "a"], ["b", "c", "c"], ["a", "a", "a"], ["d", "b", "a"]]
    layer = L.StringLookup(output_mode="tf_idf")
    layer.adapt(docs)
    vocab = layer.get_vocabulary()
    assert vocab == ["[UNK]", "a", "b", "c", "d"]
    df = {t: sum(t in d for d in docs) for t in vocab[1:]}
    w = np.array([np.log(1 + 4 / (1 + df[t])) for t in vocab[1:]])
    weights = np.concatenate([[w.mean()], w])
    ids = np.array([[vocab.index(t) for t in d] for d in docs])
    np.testing.assert_allclose(layer(docs), _encode_ref(ids, 5, "count", weights), rtol=1e-6)


# ------------------------------------------------------------------------------- Discretization
def _type4_quantiles(values, fractions):
    """float64 reference: the sorted values with the i-th smallest of n at (i+1)/n, linear in
    between (Hyndman and Fan's type 4), by hand."""
    v = np.sort(np.asarray(values, np.float64).ravel())
    pos = np.asarray(fractions) * len(v) - 1
    lo = np.clip(np.floor(pos).astype(int), 0, len(v) - 1)
    hi = np.clip(lo + 1, 0, len(v) - 1)
    t = np.clip(pos - np.floor(pos), 0, 1)
    return np.where(pos < 0, v[0], v[lo] + t * (v[hi] - v[lo]))


def test_discretization_adapt_gives_the_quantiles(rng):
    x = rng.normal(size=(1000, 3)).astype(np.float32)
    layer = L.Discretization(num_bins=5)
    layer.adapt(x)
    b = np.asarray(layer.bin_boundaries)
    assert b.shape == (4,) and np.all(np.diff(b) > 0)
    ranks = [np.mean(x.ravel() < v) for v in b]
    np.testing.assert_allclose(ranks, [0.2, 0.4, 0.6, 0.8], atol=0.02)
    counts = np.bincount(layer(x).ravel(), minlength=5)
    assert counts.min() > 0.17 * x.size and counts.max() < 0.23 * x.size
    np.testing.assert_allclose(b, _type4_quantiles(x, [0.2, 0.4, 0.6, 0.8]), rtol=1e-12)
    # several batches give the same boundaries as one
    batched = L.Discretization(num_bins=5)
    batched.adapt([x[:500], x[500:]])
    np.testing.assert_array_equal(batched.bin_boundaries, b)
    few = L.Discretization(num_bins=3)            # fewer values than the fractions resolve
    few.adapt(np.array([2.0, 7.0]))
    np.testing.assert_allclose(few.bin_boundaries, _type4_quantiles([2.0, 7.0], [1 / 3, 2 / 3]))
    with pytest.raises(ValueError, match="adapt\\(\\) got no data"):
        L.Discretization(num_bins=3).adapt([])


@pytest.mark.parametrize("mode", ["one_hot", "multi_hot", "count"])
def test_discretization_output_modes_against_numpy(mode, rng):
    x = rng.uniform(-2, 2, (8, 3) if mode != "one_hot" else (8,))
    layer = L.Discretization(bin_boundaries=[-1.0, 0.0, 0.5], output_mode=mode)
    ids = np.searchsorted([-1.0, 0.0, 0.5], x, side="right")
    np.testing.assert_array_equal(layer(x), _encode_ref(ids, 4, mode))
    assert layer.compute_output_shape(x.shape[1:]) == (4,)


# ------------------------------------------------------------------------------------- models
def _structured_data(rng, n=96):
    color = rng.choice(["red", "green", "blue", "teal"], n).astype(object)
    code = rng.choice([3, 7, 11, 40, 41], n).astype(np.int64)
    age = rng.normal(50, 10, (n, 1)).astype(np.float32)
    y = ((color == "red") | (code == 7) | (age[:, 0] > 60)).astype(np.float32)[:, None]
    return color, code, age, y


def test_structured_data_model_trains_saves_and_loads(rng, tmp_path):
    nb.seed(1)
    color, code, age, y = _structured_data(rng)
    s, i, norm = L.StringLookup(), L.IntegerLookup(max_tokens=5), L.Normalization()
    s.adapt(color)
    i.adapt(code)
    norm.adapt(age)
    cin = nb.Input(shape=(), dtype="string", name="color")
    kin = nb.Input(shape=(1,), dtype="int64", name="code")
    ain = nb.Input(shape=(1,), name="age")
    c = L.CategoryEncoding(s.vocabulary_size(), output_mode="one_hot")(s(cin))
    k = L.CategoryEncoding(i.vocabulary_size(), output_mode="one_hot")(i(kin))
    x = L.Concatenate()([c, k, norm(ain)])
    model = nb.Model([cin, kin, ain], L.Dense(1, activation="sigmoid")(
        L.Dense(8, activation="relu")(x)))
    assert model.output_shape == (1,)
    model.compile(nb.optimizers.Adam(0.05), "binary_crossentropy", metrics=["accuracy"])
    hist = model.fit([color, code[:, None], age], y, epochs=40, batch_size=16, verbose=0)
    assert hist.history["loss"][-1] < 0.5 * hist.history["loss"][0]
    assert hist.history["accuracy"][-1] > 0.9
    model.save(tmp_path / "tab.npz")
    loaded = nb.load_model(tmp_path / "tab.npz")
    xs = [color, code[:, None], age]
    np.testing.assert_array_equal(loaded.predict(xs), model.predict(xs))
    lookups = {type(l).__name__: l for l in loaded.layers}
    assert lookups["StringLookup"].get_vocabulary() == s.get_vocabulary()
    assert lookups["IntegerLookup"].get_vocabulary() == i.get_vocabulary()
    unseen = [np.array(["purple"], dtype=object), np.array([[999]]), age[:1]]
    np.testing.assert_array_equal(loaded.predict(unseen), model.predict(unseen))


def test_encoded_lookups_hashing_and_discretization_in_one_model(rng, tmp_path):
    color, code, age, y = _structured_data(rng, 48)
    s = L.StringLookup(output_mode="one_hot")
    s.adapt(color)
    h = L.Hashing(num_bins=6, output_mode="one_hot")
    d = L.Discretization(num_bins=4, output_mode="one_hot")
    d.adapt(age)
    cin = nb.Input(shape=(), dtype="string")
    kin = nb.Input(shape=(), dtype="int64")
    ain = nb.Input(shape=(1,))
    x = L.Concatenate()([s(cin), h(kin), d(ain)])
    assert x.shape == (None, 5 + 6 + 4)
    model = nb.Model([cin, kin, ain], L.Dense(1)(x))
    model.compile("adam", "mse")
    model.fit([color, code, age], y, epochs=2, batch_size=16, verbose=0)
    model.save(tmp_path / "m.npz")
    loaded = nb.load_model(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.predict([color, code, age]),
                                  model.predict([color, code, age]))
    got = {type(l).__name__: l for l in loaded.layers}
    assert got["Discretization"].bin_boundaries == d.bin_boundaries
    # ids into an Embedding: Discretization's int32 and Hashing's int64
    ids_in = nb.Input(shape=(1,))
    emb = L.Embedding(4, 2)(L.Discretization(bin_boundaries=[40.0, 50.0, 60.0])(ids_in))
    assert nb.Model(ids_in, emb).predict(age).shape == (48, 1, 2)


def test_integer_lookup_first_in_a_sequential(rng, tmp_path):
    ids = rng.choice([5, 6, 7, 8], (12, 2))
    lookup = L.IntegerLookup(output_mode="multi_hot")
    lookup.adapt(ids[:6])
    model = nb.Sequential([lookup, L.Dense(2)], input_shape=(2,))
    assert model.output_shape == (2,)
    model.compile("adam", "mse")
    model.fit(ids, rng.standard_normal((12, 2)), epochs=1, verbose=0)
    dense = model.layers[-1]
    index = L.IntegerLookup(vocabulary=lookup.get_vocabulary())(ids)
    want = _encode_ref(index, lookup.vocabulary_size(), "multi_hot") @ \
        dense.params["kernel"].astype(float) + dense.params["bias"]
    np.testing.assert_allclose(model.predict(ids), want, rtol=1e-5, atol=1e-6)
    model.save(tmp_path / "seq.npz")
    np.testing.assert_array_equal(nb.load_model(tmp_path / "seq.npz").predict(ids),
                                  model.predict(ids))


def test_lookup_model_on_the_cuda_backend(allow_cuda, rng):
    color, code, age, _ = _structured_data(rng, 8)
    i = L.IntegerLookup(output_mode="multi_hot")
    i.adapt(code)
    kin = nb.Input(shape=(), dtype="int64")
    model = nb.Model(kin, L.Dense(2)(i(kin)))
    want = model.predict(code)
    np.testing.assert_allclose(model.to("cuda").predict(code), want, rtol=1e-6)


# ------------------------------------------------------------------------- configs and errors
def test_configs_round_trip():
    s = L.StringLookup(max_tokens=10, num_oov_indices=2, mask_token="", oov_token="?",
                       name="s")
    s.adapt([["x", "y", "y"]])
    again = _round_trip(s)
    assert again.get_vocabulary() == s.get_vocabulary() == ["", "?", "?", "y", "x"]
    assert s.get_config() == {"name": "s", "max_tokens": 10, "num_oov_indices": 2,
                              "mask_token": "", "oov_token": "?", "invert": False,
                              "output_mode": "int", "pad_to_max_tokens": False,
                              "sparse": False, "salt": None,
                              "vocabulary": ["", "?", "?", "y", "x"], "idf_weights": None,
                              "has_input_vocabulary": False, "encoding": "utf-8"}
    again.adapt([["z"]])                    # an adapted vocabulary may be adapted again
    assert again.get_vocabulary() == ["", "?", "?", "z"]
    assert _round_trip(L.StringLookup(vocabulary=["k"])).get_config()["has_input_vocabulary"]
    t = L.IntegerLookup(output_mode="tf_idf", max_tokens=8, pad_to_max_tokens=True)
    t.adapt(np.array([[1, 2], [2, 3]]))
    again = _round_trip(t)
    np.testing.assert_array_equal(again(np.array([[1, 3, 9]])), t(np.array([[1, 3, 9]])))
    assert _round_trip(L.IntegerLookup(oov_method="farmhash", salt=[1, 2])).salt == [1, 2]
    assert _round_trip(L.IntegerLookup()).get_vocabulary() == [-1]
    h = _round_trip(L.Hashing(9, mask_value="", salt=3, output_mode="count"))
    assert h.salt == [3, 3] and h.num_bins == 9
    d = L.Discretization(num_bins=3)
    d.adapt(np.arange(30.0))
    again = _round_trip(d)
    assert again.bin_boundaries == d.bin_boundaries and again.num_bins == 3
    assert _round_trip(L.Discretization([0.0, 1.0])).bin_boundaries == [0.0, 1.0]
    assert nb.layers.get("StringLookup") is L.StringLookup
    for name in ("StringLookup", "IntegerLookup", "Hashing", "Discretization"):
        assert name in L.LAYERS


def test_vocabulary_file_and_set_vocabulary(tmp_path):
    path = tmp_path / "v.txt"
    path.write_text("a\nb\r\nc d\n", encoding="utf-8")
    layer = L.StringLookup(vocabulary=str(path))
    assert layer.get_vocabulary() == ["[UNK]", "a", "b", "c d"]
    ints = tmp_path / "i.txt"
    ints.write_text("5\n7\n")
    assert L.IntegerLookup(vocabulary=ints).get_vocabulary() == [-1, 5, 7]
    ints.write_text("5\nseven\n")
    with pytest.raises(ValueError, match=r"one integer per line, got 'seven'"):
        L.IntegerLookup(vocabulary=ints)
    with pytest.raises(ValueError, match="path of a file with one token per line"):
        L.StringLookup(vocabulary=str(tmp_path / "missing.txt"))
    layer.set_vocabulary(np.array(["q", "r"]))
    np.testing.assert_array_equal(layer(np.array([b"r", b"q", b"x"])), [2, 1, 0])


def test_bad_arguments_and_inputs_are_named():
    with pytest.raises(ValueError, match=r"max_tokens must be an integer >= 2, got 1"):
        L.StringLookup(max_tokens=1)
    with pytest.raises(ValueError, match=r"num_oov_indices must be a non-negative integer, "
                                         r"got -1"):
        L.IntegerLookup(num_oov_indices=-1)
    with pytest.raises(ValueError, match=r"output_mode must be one of .*'tf_idf', got 'x'"):
        L.StringLookup(output_mode="x")
    with pytest.raises(ValueError, match=r"invert=True needs output_mode='int', got "
                                         r"output_mode='count'"):
        L.StringLookup(invert=True, output_mode="count")
    with pytest.raises(ValueError, match=r"pad_to_max_tokens=True needs max_tokens"):
        L.StringLookup(pad_to_max_tokens=True)
    with pytest.raises(ValueError, match=r"idf_weights is for output_mode='tf_idf'"):
        L.StringLookup(vocabulary=VOCAB, idf_weights=[1, 1, 1, 1])
    with pytest.raises(ValueError, match=r"vocabulary= needs idf_weights= too"):
        L.StringLookup(vocabulary=VOCAB, output_mode="tf_idf")
    with pytest.raises(ValueError, match=r"repeated values \['a'\]"):
        L.StringLookup(vocabulary=["a", "b", "a"])
    with pytest.raises(ValueError, match=r"mask_token='' found inside the vocabulary"):
        L.StringLookup(vocabulary=["a", ""], mask_token="")
    with pytest.raises(ValueError, match=r"oov_token='\[UNK\]' found inside"):
        L.StringLookup(vocabulary=["a", "[UNK]"], invert=True)
    with pytest.raises(ValueError, match=r"5 entries .* exceeds max_tokens=4"):
        L.StringLookup(vocabulary=VOCAB, max_tokens=4)
    with pytest.raises(ValueError, match=r"cannot set an empty vocabulary"):
        L.StringLookup(vocabulary=[])
    with pytest.raises(ValueError, match=r"idf_weights must be 1-D with one weight per "
                                         r"vocabulary entry \(4\), got shape \(3,\)"):
        L.StringLookup(vocabulary=VOCAB, output_mode="tf_idf", idf_weights=[1, 2, 3])
    with pytest.raises(ValueError, match=r"sparse=True .* not supported"):
        L.StringLookup(sparse=True)
    with pytest.raises(ValueError, match=r"only vocabulary_dtype='int64' is supported, got "
                                         r"vocabulary_dtype='int32'"):
        L.IntegerLookup(vocabulary_dtype="int32")
    with pytest.raises(ValueError, match=r"oov_method must be one of 'floormod', 'farmhash', "
                                         r"got 'md5'"):
        L.IntegerLookup(oov_method="md5")
    with pytest.raises(ValueError, match=r"salt is for oov_method='farmhash'"):
        L.IntegerLookup(salt=3)
    with pytest.raises(ValueError, match=r"salt must be a non-negative integer or a pair"):
        L.Hashing(3, salt=[1, 2, 3])
    with pytest.raises(TypeError, match=r"vocabulary must hold strings, got 3"):
        L.StringLookup(vocabulary=["a", 3])
    with pytest.raises(TypeError, match=r"vocabulary must hold integers, got 'a'"):
        L.IntegerLookup(vocabulary=[1, "a"])
    fixed = L.StringLookup(vocabulary=VOCAB)
    with pytest.raises(ValueError, match=r"cannot adapt a layer given vocabulary="):
        fixed.adapt(["a"])
    with pytest.raises(TypeError, match=r"got one string; wrap it in a list"):
        fixed("a")
    with pytest.raises(TypeError, match=r"expected strings, got 3 \(int\)"):
        fixed(np.array(["a", 3], dtype=object))
    with pytest.raises(TypeError, match=r"expected integer values, got dtype <U1"):
        L.IntegerLookup(vocabulary=IVOCAB)(np.array(["a"]))
    with pytest.raises(TypeError, match=r"invert=True the inputs are integer indices"):
        L.StringLookup(vocabulary=VOCAB, invert=True)(np.array([1.5]))
    with pytest.raises(ValueError, match=r"output_mode='count' takes inputs of shape \(batch,\) "
                                         r"or \(batch, k\), got \(None, 2, 2\)"):
        L.StringLookup(vocabulary=VOCAB, output_mode="count")(np.full((1, 2, 2), "a"))
    with pytest.raises(RuntimeError, match=r"needs the vocabulary first"):
        L.StringLookup(output_mode="multi_hot")(["a"])
    with pytest.raises(RuntimeError, match=r"before it is placed in a model"):
        L.StringLookup(output_mode="multi_hot")(nb.Input(shape=(), dtype="string"))
    with pytest.raises(ValueError, match=r"invert=True it gives strings, which a model cannot"):
        L.StringLookup(vocabulary=VOCAB, invert=True)(nb.Input(shape=(), dtype="int64"))
    with pytest.raises(ValueError, match=r"num_bins must be a positive integer, got 0"):
        L.Hashing(0)
    with pytest.raises(ValueError, match=r"Hashing .*output_mode must be one of 'int', "
                                         r"'one_hot', 'multi_hot', 'count', got 'tf_idf'"):
        L.Hashing(3, output_mode="tf_idf")
    with pytest.raises(ValueError, match=r"not both; got num_bins=3 and bin_boundaries=\[1\]"):
        L.Discretization([1], num_bins=3)
    with pytest.raises(ValueError, match=r"num_bins must be a positive integer, got 0"):
        L.Discretization(num_bins=0)
    with pytest.raises(ValueError, match=r"got neither"):
        L.Discretization()
    with pytest.raises(ValueError, match=r"increasing order, got \[2, 1\]"):
        L.Discretization([2, 1])
    with pytest.raises(ValueError, match=r"epsilon must be .*, got 0"):
        L.Discretization(num_bins=2, epsilon=0)
    with pytest.raises(ValueError, match=r"adapt\(\) needs num_bins"):
        L.Discretization([0.0]).adapt(np.zeros(3))
    with pytest.raises(ValueError, match=r"give bin_boundaries= or call adapt\(\)"):
        L.Discretization(num_bins=3)(np.zeros(3))
    with pytest.raises(TypeError, match=r"expected numbers, got dtype <U1"):
        L.Discretization([0.0])(np.array(["a"]))
