"""Word2Vec training kernels: skip-gram and CBOW with negative sampling (gensim 4's algorithm,
word2vec_inner.pyx), CPU. The CUDA twins (same names and arguments) are in
kernels/cuda/word2vec.py.

Matrices: ``syn0`` (V, D) holds the input vectors (the word vectors a user sees), ``syn1neg``
(V, D) the output vectors of negative sampling; both are updated in place. Word indices are int32.

* ``skipgram_update`` / ``cbow_update``: the fused negative-sampling SGD step on given examples
  and their drawn negatives. A skip-gram pair (input word, target word) trains the input word's
  vector to predict the target (gensim feeds the context word as input and the centre word as
  target); a CBOW group predicts its target from the mean of its context words' vectors
  (gensim's ``cbow_mean=1``). For each example: the input vector l1 (or the context mean) is
  dotted with the target's output vector (label 1) and with each negative's (label 0; a negative
  equal to the target is skipped, as gensim), g = (label - sigmoid(dot)) * lr, the input gradient
  ``work += g * out`` is accumulated while each output vector is updated at once
  (``out += g * l1``), and finally the input vector (each context word's, for CBOW) gets
  ``+= work``. The sigmoid is exact and stable (no table, no clipping of |dot| >= 6 as gensim's
  table does).
* ``skipgram_train`` / ``cbow_train``: a whole batch of sentences in one call. The batch is split
  into chunks (gensim's jobs, each with its own learning rate); for each chunk: frequent-word
  downsampling (a word w is kept when a 32-bit random number is <= ``thresholds[w]``, gensim's
  ``sample_int``), a reduced window ``b`` per kept word (window - b words on each side, b uniform
  in [0, window)), the pairs or groups within each sentence, ``negative`` draws from the unigram
  table (``cum_table``: a draw is the first index whose cumulative count reaches a 32-bit random
  number modulo the table's last entry, gensim's bisect), and the fused step. A sentence trains
  on at most MAX_SENTENCE_LEN kept words (gensim's limit). ``trained[c]`` receives the number of
  words kept in chunk c.

Random numbers: Philox4x32-10 with key ``seed`` and counter (draw, ``first_chunk + c``), the
scheme of kernels/cuda/_common.uniform, so both targets draw the same numbers. Draw p of a chunk
(p = a token's position in the chunk) decides whether that token is kept (first word) and its
reduced window (second word); the negatives of successive examples then take the draws that
follow, one Philox call per two negatives.

Parallelism (Hogwild, as gensim's worker threads and the original C code): the chunks of a
``*_train`` call (and contiguous parts of a large ``*_update`` call) run on Numba's threads at the
same time and update the shared matrices without locks; two threads touching the same row may
lose an update, which SGD on sparse rows tolerates. On one thread the examples are processed in
order and a seed reproduces a run bit for bit.
"""
import numpy as np
from numba import njit, prange

from .. import scalar
from ._threads import split_parallel

MAX_SENTENCE_LEN = 10000    # kept words trained per sentence (gensim's MAX_SENTENCE_LEN)

_FM = {"reassoc", "contract"}
_INLINE = dict(inline="always", fastmath=_FM, error_model="numpy")
_PAR_MIN_PAIRS = 4096       # examples at or above which the *_update kernels use prange...
_PART = 1024                # ...over parts of this many consecutive examples
_GUIDE_SHIFT = 15           # draws in [b << 15, (b + 1) << 15) share a guide entry (_guide)

_sigmoid = njit(inline="always")(scalar.sigmoid)

# Philox4x32-10, kernels/scalar.py's: the generator of the CUDA kernels too
_M32 = scalar.PHILOX_M32
_S32 = scalar.PHILOX_S32
_philox = njit(inline="always")(scalar.philox)


@njit(inline="always")
def _bisect(cum_table, x, lo, hi):
    """First index i in [lo, hi) with cum_table[i] >= x (bisect_left; hi if there is none)."""
    while hi > lo:
        mid = (lo + hi) >> 1
        if cum_table[mid] >= x:
            hi = mid
        else:
            lo = mid + 1
    return lo


# ------------------------------------------------------------------------------ the fused step
@njit(**_INLINE)
def _output(l1, syn1neg, t, label, lr, work):
    """One output word t of an example with input vector l1: g = (label - sigmoid(l1 . out)) * lr,
    work += g * out, then out += g * l1."""
    row = syn1neg[t]
    f = l1.dtype.type(0.0)
    for d in range(l1.size):
        f += l1[d] * row[d]
    g = row.dtype.type((label - _sigmoid(np.float64(f))) * lr)
    for d in range(l1.size):
        r = row[d]
        work[d] += g * r
        row[d] = r + g * l1[d]


@njit(**_INLINE)
def _outputs(l1, syn1neg, target, negs, lr, work):
    """The target (label 1) and the negatives (label 0, those equal to the target skipped),
    accumulating the input gradient in work (zeroed first)."""
    for d in range(work.size):
        work[d] = 0.0
    _output(l1, syn1neg, target, 1.0, lr, work)
    for k in range(negs.size):
        t = negs[k]
        if t != target:
            _output(l1, syn1neg, t, 0.0, lr, work)


@njit(**_INLINE)
def _sg_pair(syn0, syn1neg, inp, target, negs, lr, work):
    """One skip-gram pair: the input word's vector predicts the target against the negatives."""
    l1 = syn0[inp]
    _outputs(l1, syn1neg, target, negs, lr, work)
    for d in range(l1.size):
        l1[d] += work[d]


@njit(**_INLINE)
def _cbow_group(syn0, syn1neg, ctx, lo, hi, skip, target, negs, lr, neu1, work):
    """One CBOW group: the context words ctx[lo:hi] (position ``skip`` left out) predict the
    target from the mean of their vectors; each context vector then gets the whole gradient."""
    dim = syn0.shape[1]
    for d in range(dim):
        neu1[d] = 0.0
    count = 0
    for m in range(lo, hi):
        if m != skip:
            count += 1
            row = syn0[ctx[m]]
            for d in range(dim):
                neu1[d] += row[d]
    if count > 0:
        inv = neu1.dtype.type(1.0 / count)
        for d in range(dim):
            neu1[d] *= inv
    _outputs(neu1, syn1neg, target, negs, lr, work)
    for m in range(lo, hi):
        if m != skip:
            row = syn0[ctx[m]]
            for d in range(dim):
                row[d] += work[d]


@njit(inline="always")
def _in_range(idx, n):
    """True when every index lies in [0, n)."""
    for j in range(idx.size):
        if idx[j] < 0 or idx[j] >= n:
            return False
    return True


@njit(inline="always")
def _matrix_checks(syn0, syn1neg):
    if syn1neg.shape != syn0.shape:
        raise ValueError("word2vec: syn0 and syn1neg must be (V, D) matrices of one shape")


@njit(inline="always")
def _parts(n):
    """Parts of consecutive examples a *_update call splits its n examples into (one below
    _PAR_MIN_PAIRS); Numba's static schedule gives each thread a run of consecutive parts."""
    return 1 if n < _PAR_MIN_PAIRS else (n + _PART - 1) // _PART


@njit(cache=True, fastmath=_FM, error_model="numpy")
def _sg_update_part(inputs, targets, negatives, lr, syn0, syn1neg, p0, p1):
    work = np.empty(syn0.shape[1], syn0.dtype)
    for p in range(p0, p1):
        _sg_pair(syn0, syn1neg, inputs[p], targets[p], negatives[p], lr, work)


def skipgram_update(inputs, targets, negatives, lr, syn0, syn1neg):
    """The fused skip-gram negative-sampling step on P pairs: inputs (P,), targets (P,) and
    negatives (P, K) int32 word indices, learning rate ``lr``; updates syn0 and syn1neg in
    place, pair after pair (see the module docstring)."""
    n = inputs.size
    _matrix_checks(syn0, syn1neg)
    vocab = syn0.shape[0]
    if targets.size != n or negatives.ndim != 2 or negatives.shape[0] != n:
        raise ValueError("skipgram_update: inputs (P,), targets (P,) and negatives (P, K) differ "
                         "in P")
    if not (_in_range(inputs, vocab) and _in_range(targets, vocab)
            and _in_range(negatives.ravel(), vocab)):
        raise ValueError("skipgram_update: a word index of inputs, targets or negatives lies "
                         "outside [0, V)")
    parts = _parts(n)
    for part in prange(parts):
        _sg_update_part(inputs, targets, negatives, lr, syn0, syn1neg, n * part // parts,
                        n * (part + 1) // parts)


skipgram_update = split_parallel(skipgram_update, "skipgram_update", 0, _PAR_MIN_PAIRS,
                                 fastmath=_FM, error_model="numpy")


@njit(cache=True, fastmath=_FM, error_model="numpy")
def _cbow_update_part(offsets, contexts, targets, negatives, lr, syn0, syn1neg, p0, p1):
    neu1 = np.empty(syn0.shape[1], syn0.dtype)
    work = np.empty(syn0.shape[1], syn0.dtype)
    for p in range(p0, p1):
        _cbow_group(syn0, syn1neg, contexts, offsets[p], offsets[p + 1], -1, targets[p],
                    negatives[p], lr, neu1, work)


def cbow_update(offsets, contexts, targets, negatives, lr, syn0, syn1neg):
    """The fused CBOW negative-sampling step on G groups: group g's context words are
    contexts[offsets[g]:offsets[g + 1]] (offsets (G + 1,) int64, increasing from 0 to
    contexts.size), its target targets[g] and negatives negatives[g] ((G, K) int32); learning
    rate ``lr``; updates syn0 and syn1neg in place, group after group (see the module
    docstring). A group without context words updates nothing."""
    n = targets.size
    _matrix_checks(syn0, syn1neg)
    vocab = syn0.shape[0]
    if offsets.size != n + 1 or negatives.ndim != 2 or negatives.shape[0] != n:
        raise ValueError("cbow_update: offsets (G + 1,), targets (G,) and negatives (G, K) differ "
                         "in G")
    if offsets[0] != 0 or offsets[n] != contexts.size:
        raise ValueError("cbow_update: offsets must run from 0 to contexts.size")
    for g in range(n):
        if offsets[g + 1] < offsets[g]:
            raise ValueError("cbow_update: offsets must not decrease")
    if not (_in_range(contexts, vocab) and _in_range(targets, vocab)
            and _in_range(negatives.ravel(), vocab)):
        raise ValueError("cbow_update: a word index of contexts, targets or negatives lies "
                         "outside [0, V)")
    parts = _parts(n)
    for part in prange(parts):
        _cbow_update_part(offsets, contexts, targets, negatives, lr, syn0, syn1neg,
                          n * part // parts, n * (part + 1) // parts)


cbow_update = split_parallel(cbow_update, "cbow_update", 2, _PAR_MIN_PAIRS, fastmath=_FM,
                             error_model="numpy")


# ------------------------------------------------------------------------- whole-batch training
@njit(inline="always")
def _train_checks(tokens, sentences, chunks, lr, thresholds, cum_table, window, negative, seed,
                  first_chunk, syn0, syn1neg, trained):
    _matrix_checks(syn0, syn1neg)
    vocab = syn0.shape[0]
    nsent = sentences.size - 1
    nchunk = chunks.size - 1
    if nsent < 0 or sentences[0] != 0 or sentences[nsent] != tokens.size:
        raise ValueError("word2vec train: sentences must be offsets from 0 to tokens.size")
    for s in range(nsent):
        if sentences[s + 1] < sentences[s]:
            raise ValueError("word2vec train: sentences offsets must not decrease")
    if nchunk < 0 or chunks[0] != 0 or chunks[nchunk] != nsent:
        raise ValueError("word2vec train: chunks must be sentence offsets from 0 to the number of "
                         "sentences")
    for c in range(nchunk):
        if chunks[c + 1] < chunks[c]:
            raise ValueError("word2vec train: chunks offsets must not decrease")
    if lr.size != nchunk or trained.size != nchunk:
        raise ValueError("word2vec train: lr and trained need one entry per chunk")
    if thresholds.size != vocab or cum_table.size != vocab:
        raise ValueError("word2vec train: thresholds and cum_table need one entry per word")
    if vocab > 0 and (cum_table[0] < 0 or cum_table[vocab - 1] <= 0):
        raise ValueError("word2vec train: cum_table must run from >= 0 to a positive total")
    for w in range(1, vocab):
        if cum_table[w] < cum_table[w - 1]:
            raise ValueError("word2vec train: cum_table must be a non-decreasing cumulative "
                             "table")
    if window < 1 or negative < 1:
        raise ValueError("word2vec train: window and negative must be >= 1")
    if seed < 0 or first_chunk < 0:
        raise ValueError("word2vec train: seed and first_chunk must be >= 0")
    if not _in_range(tokens, vocab):
        raise ValueError("word2vec train: tokens has a word index outside [0, V)")


@njit(**_INLINE)
def _keep_words(tokens, sentences, s0, s1, thresholds, window, k0, k1, cid, eff, red, ends):
    """Downsampling and reduced windows of the chunk of sentences s0..s1-1: its kept words go
    to eff[0:n] with their reduced windows in red, sentence s ending at ends[s - s0]; returns n."""
    t0 = sentences[s0]
    n = 0
    for s in range(s0, s1):
        kept = 0
        for p in range(sentences[s], sentences[s + 1]):
            if kept == MAX_SENTENCE_LEN:
                break
            w = tokens[p]
            r0, r1 = _philox(np.uint64(p - t0), cid, k0, k1)
            if np.int64(r0) <= thresholds[w]:
                eff[n] = w
                red[n] = np.int64(r1) % window
                n += 1
                kept += 1
        ends[s - s0] = n
    return n


@njit(cache=True)
def _guide(cum_table):
    """guide[b] = the first index whose cumulative count reaches b << _GUIDE_SHIFT: a draw x in
    bucket b = x >> _GUIDE_SHIFT lies in [guide[b], guide[b + 1]], a search of a step or two
    instead of the whole table's (skip-gram on 100-dimensional vectors trains 2.6x faster)."""
    if cum_table.size == 0:
        return np.zeros(1, np.int32)
    nb = (np.int64(cum_table[cum_table.size - 1]) >> _GUIDE_SHIFT) + 2
    guide = np.empty(nb, np.int32)
    i = 0
    for b in range(nb):
        x = np.int64(b) << _GUIDE_SHIFT
        while i < cum_table.size and cum_table[i] < x:
            i += 1
        guide[b] = i
    return guide


@njit(**_INLINE)
def _draw_negatives(cum_table, guide, ctr, cid, k0, k1, negs):
    """Fill negs from the unigram table with Philox calls ctr, ctr + 1, ... (two draws each);
    returns the next counter."""
    total = np.int64(cum_table[cum_table.size - 1])
    r1 = np.uint64(0)
    for k in range(negs.size):
        if k % 2 == 0:
            r0, r1 = _philox(ctr, cid, k0, k1)
            ctr += np.uint64(1)
            r = r0
        else:
            r = r1
        x = np.int64(r) % total
        b = x >> _GUIDE_SHIFT
        negs[k] = _bisect(cum_table, x, guide[b], min(guide[b + 1] + 1, cum_table.size))
    return ctr


@njit(cache=True, fastmath=_FM, error_model="numpy")
def _train_chunk(sg, tokens, sentences, s0, s1, lr, thresholds, cum_table, guide, window,
                 negative, k0, k1, cid, syn0, syn1neg):
    """Train on one chunk (skip-gram if ``sg`` else CBOW); returns the number of kept words."""
    ntok = sentences[s1] - sentences[s0]
    eff = np.empty(ntok, np.int32)
    red = np.empty(ntok, np.int32)
    ends = np.empty(s1 - s0, np.int64)
    negs = np.empty(negative, np.int32)
    work = np.empty(syn0.shape[1], syn0.dtype)
    neu1 = np.empty(syn0.shape[1], syn0.dtype)
    n = _keep_words(tokens, sentences, s0, s1, thresholds, window, k0, k1, cid, eff, red, ends)
    ctr = np.uint64(ntok)
    start = 0
    for s in range(s1 - s0):
        end = ends[s]
        for i in range(start, end):
            b = red[i]
            lo = max(start, i - window + b)
            hi = min(end, i + window + 1 - b)
            if sg:
                for j in range(lo, hi):
                    if j != i:
                        ctr = _draw_negatives(cum_table, guide, ctr, cid, k0, k1, negs)
                        _sg_pair(syn0, syn1neg, eff[j], eff[i], negs, lr, work)
            else:
                ctr = _draw_negatives(cum_table, guide, ctr, cid, k0, k1, negs)
                _cbow_group(syn0, syn1neg, eff, lo, hi, i, eff[i], negs, lr, neu1, work)
        start = end
    return n


def _train(sg, tokens, sentences, chunks, lr, thresholds, cum_table, window, negative, seed,
           first_chunk, syn0, syn1neg, trained):
    _train_checks(tokens, sentences, chunks, lr, thresholds, cum_table, window, negative, seed,
                  first_chunk, syn0, syn1neg, trained)
    k0 = np.uint64(seed) & _M32
    k1 = (np.uint64(seed) >> _S32) & _M32
    nchunk = chunks.size - 1
    if nchunk == 0:
        return
    guide = _guide(cum_table)
    for c in prange(nchunk):
        trained[c] = _train_chunk(sg, tokens, sentences, chunks[c], chunks[c + 1], lr[c],
                                  thresholds, cum_table, guide, window, negative, k0, k1,
                                  np.uint64(first_chunk + c), syn0, syn1neg)


# one chunk runs serially (no thread team to wake and join)
_train = split_parallel(_train, "_train", lambda sg, tokens, sentences, chunks, *_: chunks.size - 1,
                        2)


def skipgram_train(tokens, sentences, chunks, lr, thresholds, cum_table, window, negative, seed,
                   first_chunk, syn0, syn1neg, trained):
    """Skip-gram training on a batch: tokens (N,) int32 word indices of the sentences, one after
    another, sentence s being tokens[sentences[s]:sentences[s + 1]] (offsets int64); chunk c the
    sentences chunks[c]..chunks[c + 1]-1 (offsets int64), trained with learning rate lr[c]
    (float64); thresholds (V,) int64 downsampling thresholds, cum_table (V,) int32 cumulative
    unigram table; ``window``, ``negative`` (>= 1), Philox ``seed`` and counter ``first_chunk``.
    Updates syn0 and syn1neg in place and writes trained (C,) int64 (see the module docstring)."""
    _train(True, tokens, sentences, chunks, lr, thresholds, cum_table, window, negative, seed,
           first_chunk, syn0, syn1neg, trained)


def cbow_train(tokens, sentences, chunks, lr, thresholds, cum_table, window, negative, seed,
               first_chunk, syn0, syn1neg, trained):
    """CBOW training on a batch (the arguments of skipgram_train): each kept word is predicted
    from the mean of the vectors of the kept words in its reduced window."""
    _train(False, tokens, sentences, chunks, lr, thresholds, cum_table, window, negative, seed,
           first_chunk, syn0, syn1neg, trained)
