"""Word2Vec training kernels on the GPU: the same names, arguments and maths as
kernels/cpu/word2vec.py (read its docstring: skip-gram and CBOW with negative sampling, gensim's
update order, the Philox draws, MAX_SENTENCE_LEN).

One block per example (``*_update``) or per chunk of sentences (``*_train``), grid-stride over
them; the block's ``config.threads`` threads split the D dimensions (thread t owns dimensions
t, t + threads, ...), dot products are float64 block sums (``_common.block_sum``), and the input
gradient and the CBOW context mean live in per-block rows of device scratch. Blocks run at the
same time and update the shared matrices without locks (Hogwild, as the CPU's threads): examples
in different blocks that share a word may lose an update; within a block the order is the CPU's.

``*_train``: thread 0 of a block draws the chunk's downsampling and reduced windows and writes the
kept words (scratch, at the chunk's own token positions) and the sentence ends; then, for each
example, thread k draws negative k (the CPU's k-th draw) and the block trains the example.

Launchers check shapes and scalars on the host (ValueError naming the argument); word indices and
offsets are the caller's to check (reading them back would synchronize).
"""
import numpy as np
from numba import cuda

from .. import scalar
from ..cpu.word2vec import MAX_SENTENCE_LEN
from ._common import (A2, Bool, D1, Float, Int, MAX_THREADS, N1, N2, Q1, _M32, _S32, _philox,
                      block_sum, device, kernel, launcher, scratch)


class _Config:
    """Launch knobs of this module (tests shrink them)."""

    threads = 32                # threads per block: a power of two <= MAX_THREADS
    max_blocks = 4096           # grid cap (one block per example or chunk below it)


config = _Config()

_sigmoid = device(scalar.sigmoid)


@cuda.jit(device=True)
def _bisect(cum_table, x):
    """First index i with cum_table[i] >= x (bisect_left)."""
    lo = 0
    hi = cum_table.size
    while hi > lo:
        mid = (lo + hi) >> 1
        if cum_table[mid] >= x:
            hi = mid
        else:
            lo = mid + 1
    return lo


# ------------------------------------------------------------------------------ the fused step
@cuda.jit(device=True)
def _output(sh, l1, row, label, lr, work):
    """One output vector ``row`` of an example with input vector l1 (see kernels/cpu/word2vec.py
    ``_output``); each thread updates its own dimensions."""
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    acc = 0.0
    for d in range(t, l1.size, nt):
        acc += np.float64(l1[d]) * np.float64(row[d])
    f = block_sum(sh, acc)
    g = row.dtype.type((label - _sigmoid(f)) * lr)
    for d in range(t, l1.size, nt):
        r = row[d]
        work[d] += g * r
        row[d] = r + g * l1[d]


@cuda.jit(device=True)
def _outputs(sh, l1, syn1neg, target, negs, lr, work):
    """The target (label 1) and the negatives (label 0, those equal to the target skipped),
    accumulating the input gradient in work (zeroed first)."""
    for d in range(cuda.threadIdx.x, work.size, cuda.blockDim.x):
        work[d] = 0.0
    _output(sh, l1, syn1neg[target], 1.0, lr, work)
    for k in range(negs.size):
        w = negs[k]
        if w != target:
            _output(sh, l1, syn1neg[w], 0.0, lr, work)


@cuda.jit(device=True)
def _sg_pair(sh, syn0, syn1neg, inp, target, negs, lr, work):
    l1 = syn0[inp]
    _outputs(sh, l1, syn1neg, target, negs, lr, work)
    for d in range(cuda.threadIdx.x, l1.size, cuda.blockDim.x):
        l1[d] += work[d]


@cuda.jit(device=True)
def _cbow_group(sh, syn0, syn1neg, ctx, lo, hi, skip, target, negs, lr, neu1, work):
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    dim = syn0.shape[1]
    for d in range(t, dim, nt):
        neu1[d] = 0.0
    count = 0
    for m in range(lo, hi):
        if m != skip:
            count += 1
            w = ctx[m]
            for d in range(t, dim, nt):
                neu1[d] += syn0[w, d]
    if count > 0:
        inv = neu1.dtype.type(1.0 / count)
        for d in range(t, dim, nt):
            neu1[d] *= inv
    _outputs(sh, neu1, syn1neg, target, negs, lr, work)
    for m in range(lo, hi):
        if m != skip:
            w = ctx[m]
            for d in range(t, dim, nt):
                syn0[w, d] += work[d]


@kernel
def _sg_update(inputs: N1, targets: N1, negatives: N2, lr: Float, syn0: A2, syn1neg: A2, work: A2):
    sh = cuda.shared.array(MAX_THREADS, np.float64)
    b = cuda.blockIdx.x
    for p in range(b, inputs.size, cuda.gridDim.x):
        _sg_pair(sh, syn0, syn1neg, inputs[p], targets[p], negatives[p], lr, work[b])


@kernel
def _cbow_update(offsets: Q1, contexts: N1, targets: N1, negatives: N2, lr: Float, syn0: A2,
                 syn1neg: A2, neu1: A2, work: A2):
    sh = cuda.shared.array(MAX_THREADS, np.float64)
    b = cuda.blockIdx.x
    for p in range(b, targets.size, cuda.gridDim.x):
        _cbow_group(sh, syn0, syn1neg, contexts, offsets[p], offsets[p + 1], -1, targets[p],
                    negatives[p], lr, neu1[b], work[b])


def _shape(a):
    return tuple(int(d) for d in a.shape)


def _check_matrices(name, syn0, syn1neg):
    if len(syn0.shape) != 2 or _shape(syn1neg) != _shape(syn0):
        raise ValueError(f"{name}: syn0 and syn1neg must be (V, D) matrices of one shape, got "
                         f"{_shape(syn0)} and {_shape(syn1neg)}")


def _check_examples(name, n, first, first_name, negatives):
    if first.size != n or len(negatives.shape) != 2 or negatives.shape[0] != n:
        raise ValueError(f"{name}: {first_name}, targets and negatives must have one row per "
                         f"example, got {first_name} {_shape(first)}, {n} targets and negatives "
                         f"{_shape(negatives)}")


def _launch(n):
    """(blocks, threads) of a launch over n examples or chunks."""
    return max(1, min(n, config.max_blocks)), config.threads


def _rows(tag, blocks, syn0):
    """A (blocks, D) scratch matrix of syn0's dtype."""
    dim = int(syn0.shape[1])
    return scratch(tag, blocks * dim, syn0.dtype, (blocks, dim))


@launcher
def skipgram_update(inputs, targets, negatives, lr, syn0, syn1neg):
    """The fused skip-gram negative-sampling step on P pairs (see kernels/cpu/word2vec.py)."""
    _check_matrices("skipgram_update", syn0, syn1neg)
    n = int(targets.size)
    _check_examples("skipgram_update", n, inputs, "inputs", negatives)
    if n:
        blocks, threads = _launch(n)
        _sg_update[blocks, threads](inputs, targets, negatives, lr, syn0, syn1neg,
                                    _rows("word2vec.work", blocks, syn0))


@launcher
def cbow_update(offsets, contexts, targets, negatives, lr, syn0, syn1neg):
    """The fused CBOW negative-sampling step on G groups (see kernels/cpu/word2vec.py)."""
    _check_matrices("cbow_update", syn0, syn1neg)
    n = int(targets.size)
    if offsets.size != n + 1 or len(negatives.shape) != 2 or negatives.shape[0] != n:
        raise ValueError(f"cbow_update: offsets (G + 1,), targets (G,) and negatives (G, K) must "
                         f"agree in G, got offsets {_shape(offsets)}, {n} targets and negatives "
                         f"{_shape(negatives)}")
    if n:
        blocks, threads = _launch(n)
        _cbow_update[blocks, threads](offsets, contexts, targets, negatives, lr, syn0, syn1neg,
                                      _rows("word2vec.neu1", blocks, syn0),
                                      _rows("word2vec.work", blocks, syn0))


# ------------------------------------------------------------------------- whole-batch training
@cuda.jit(device=True)
def _draw_negatives(cum_table, ctr, cid, k0, k1, negs):
    """Thread k draws negative k from Philox call ctr + k // 2 (word k % 2), as the CPU."""
    total = np.int64(cum_table[cum_table.size - 1])
    cuda.syncthreads()                  # every thread is done reading the previous negatives
    for k in range(cuda.threadIdx.x, negs.size, cuda.blockDim.x):
        r0, r1 = _philox(ctr + np.uint64(k // 2), cid, k0, k1)
        r = r0 if k % 2 == 0 else r1
        negs[k] = _bisect(cum_table, np.int64(r) % total)
    cuda.syncthreads()


@kernel
def _train(sg: Bool, tokens: N1, sentences: Q1, chunks: Q1, lr: D1, thresholds: Q1, cum_table: N1,
           window: Int, negative: Int, seed: Int, first_chunk: Int, syn0: A2, syn1neg: A2,
           trained: Q1, eff: N1, red: N1, ends: Q1, negs: N2, neu1: A2, work: A2):
    sh = cuda.shared.array(MAX_THREADS, np.float64)
    b = cuda.blockIdx.x
    k0 = np.uint64(seed) & _M32
    k1 = (np.uint64(seed) >> _S32) & _M32
    calls = np.uint64((negative + 1) // 2)
    for c in range(b, chunks.size - 1, cuda.gridDim.x):
        s0 = chunks[c]
        s1 = chunks[c + 1]
        t0 = sentences[s0]
        cid = np.uint64(first_chunk + c)
        if cuda.threadIdx.x == 0:       # downsampling and reduced windows, in token order
            n = t0
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
                ends[s] = n
            trained[c] = n - t0
        cuda.syncthreads()
        ctr = np.uint64(sentences[s1] - t0)
        start = t0
        for s in range(s0, s1):
            end = ends[s]
            for i in range(start, end):
                rw = red[i]
                lo = max(start, i - window + rw)
                hi = min(end, i + window + 1 - rw)
                if sg:
                    for j in range(lo, hi):
                        if j != i:
                            _draw_negatives(cum_table, ctr, cid, k0, k1, negs[b])
                            ctr += calls
                            _sg_pair(sh, syn0, syn1neg, eff[j], eff[i], negs[b], lr[c], work[b])
                else:
                    _draw_negatives(cum_table, ctr, cid, k0, k1, negs[b])
                    ctr += calls
                    _cbow_group(sh, syn0, syn1neg, eff, lo, hi, i, eff[i], negs[b], lr[c],
                                neu1[b], work[b])
            start = end


def _launch_train(name, sg, tokens, sentences, chunks, lr, thresholds, cum_table, window,
                  negative, seed, first_chunk, syn0, syn1neg, trained):
    _check_matrices(name, syn0, syn1neg)
    vocab = int(syn0.shape[0])
    nchunk = int(chunks.size) - 1
    if sentences.size < 1 or chunks.size < 1:
        raise ValueError(f"{name}: sentences and chunks must be offsets (at least one entry), got "
                         f"{_shape(sentences)} and {_shape(chunks)}")
    if lr.size != nchunk or trained.size != nchunk:
        raise ValueError(f"{name}: lr and trained need one entry per chunk ({nchunk}), got "
                         f"{_shape(lr)} and {_shape(trained)}")
    if thresholds.size != vocab or cum_table.size != vocab:
        raise ValueError(f"{name}: thresholds and cum_table need one entry per word ({vocab}), "
                         f"got {_shape(thresholds)} and {_shape(cum_table)}")
    for arg, value in (("window", window), ("negative", negative)):
        if int(value) < 1:
            raise ValueError(f"{name}: {arg} must be >= 1, got {value!r}")
    for arg, value in (("seed", seed), ("first_chunk", first_chunk)):
        if int(value) < 0:
            raise ValueError(f"{name}: {arg} must be >= 0, got {value!r}")
    if nchunk < 1:
        return
    blocks, threads = _launch(nchunk)
    n, nsent = max(int(tokens.size), 1), max(int(sentences.size) - 1, 1)
    _train[blocks, threads](
        sg, tokens, sentences, chunks, lr, thresholds, cum_table, window, negative, seed,
        first_chunk, syn0, syn1neg, trained, scratch("word2vec.eff", n, np.int32),
        scratch("word2vec.red", n, np.int32), scratch("word2vec.ends", nsent, np.int64),
        scratch("word2vec.negs", blocks * int(negative), np.int32, (blocks, int(negative))),
        _rows("word2vec.neu1", blocks, syn0), _rows("word2vec.work", blocks, syn0))


@launcher
def skipgram_train(tokens, sentences, chunks, lr, thresholds, cum_table, window, negative, seed,
                   first_chunk, syn0, syn1neg, trained):
    """Skip-gram training on a batch of sentences (see kernels/cpu/word2vec.py)."""
    _launch_train("skipgram_train", True, tokens, sentences, chunks, lr, thresholds, cum_table,
                  window, negative, seed, first_chunk, syn0, syn1neg, trained)


@launcher
def cbow_train(tokens, sentences, chunks, lr, thresholds, cum_table, window, negative, seed,
               first_chunk, syn0, syn1neg, trained):
    """CBOW training on a batch of sentences (see kernels/cpu/word2vec.py)."""
    _launch_train("cbow_train", False, tokens, sentences, chunks, lr, thresholds, cum_table,
                  window, negative, seed, first_chunk, syn0, syn1neg, trained)
