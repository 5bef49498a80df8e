"""Float64 NumPy references of the word2vec kernels (kernels/*/word2vec.py): the fused
negative-sampling steps, one example after another in plain NumPy, and the whole-batch training
with its Philox draws written out in Python integers."""
import math

import numpy as np

MAX_SENTENCE_LEN = 10000
_M32 = 0xFFFFFFFF


def philox(c0, c1, k0, k1):
    """Philox4x32-10 of counter (c0, c1, 0, 0) and key (k0, k1): its first two 32-bit words."""
    c0, c1, k0, k1 = int(c0), int(c1), int(k0), int(k1)
    c2 = c3 = 0
    for _ in range(10):
        p0 = 0xD2511F53 * c0
        p1 = 0xCD9E8D57 * c2
        c0, c1, c2, c3 = ((p1 >> 32) ^ c1 ^ k0) & _M32, p1 & _M32, ((p0 >> 32) ^ c3 ^ k1) & _M32, \
            p0 & _M32
        k0 = (k0 + 0x9E3779B9) & _M32
        k1 = (k1 + 0xBB67AE85) & _M32
    return c0, c1


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def _outputs(l1, syn1neg, target, negatives, lr):
    """Train the target and negatives on input vector l1; returns the input gradient."""
    work = np.zeros_like(l1)
    for t, label in [(target, 1.0)] + [(int(w), 0.0) for w in negatives if w != target]:
        g = (label - sigmoid(float(l1 @ syn1neg[t]))) * lr
        work += g * syn1neg[t]
        syn1neg[t] += g * l1
    return work


def skipgram_update(inputs, targets, negatives, lr, syn0, syn1neg):
    """(syn0, syn1neg) after the skip-gram pairs, in float64 copies."""
    syn0, syn1neg = syn0.astype(np.float64), syn1neg.astype(np.float64)
    for inp, target, negs in zip(inputs, targets, negatives):
        syn0[inp] += _outputs(syn0[inp].copy(), syn1neg, target, negs, lr)
    return syn0, syn1neg


def _cbow(syn0, syn1neg, context, target, negatives, lr):
    l1 = syn0[context].mean(axis=0) if len(context) else np.zeros(syn0.shape[1])
    work = _outputs(l1, syn1neg, target, negatives, lr)
    for w in context:
        syn0[w] += work


def cbow_update(offsets, contexts, targets, negatives, lr, syn0, syn1neg):
    """(syn0, syn1neg) after the CBOW groups, in float64 copies."""
    syn0, syn1neg = syn0.astype(np.float64), syn1neg.astype(np.float64)
    for g, (target, negs) in enumerate(zip(targets, negatives)):
        _cbow(syn0, syn1neg, list(contexts[offsets[g]:offsets[g + 1]]), target, negs, lr)
    return syn0, syn1neg


def train_examples(tokens, sentences, chunks, thresholds, cum_table, window, negative, seed,
                   first_chunk, sg):
    """The examples a whole-batch training call makes, in order: per chunk a list of
    (input words, target, negatives) (one input word for skip-gram), and the kept-word counts."""
    k0, k1 = seed & _M32, (seed >> 32) & _M32
    total = int(cum_table[-1])
    per_chunk, kept_counts = [], []
    for c in range(len(chunks) - 1):
        cid = first_chunk + c
        t0 = sentences[chunks[c]]
        kept_sentences = []
        for s in range(chunks[c], chunks[c + 1]):
            kept = []
            for p in range(sentences[s], sentences[s + 1]):
                if len(kept) == MAX_SENTENCE_LEN:
                    break
                r0, r1 = philox(p - t0, cid, k0, k1)
                if r0 <= thresholds[tokens[p]]:
                    kept.append((int(tokens[p]), r1 % window))
            kept_sentences.append(kept)
        kept_counts.append(sum(map(len, kept_sentences)))
        ctr = sentences[chunks[c + 1]] - t0
        examples = []

        def draw():
            nonlocal ctr
            negs = []
            for k in range(negative):
                r = philox(ctr + k // 2, cid, k0, k1)[k % 2]
                negs.append(int(np.searchsorted(cum_table, r % total, side="left")))
            ctr += (negative + 1) // 2
            return negs

        for kept in kept_sentences:
            for i, (w, b) in enumerate(kept):
                context = range(max(0, i - window + b), min(len(kept), i + window + 1 - b))
                if sg:
                    examples += [([kept[j][0]], w, draw()) for j in context if j != i]
                else:
                    examples.append(([kept[j][0] for j in context if j != i], w, draw()))
        per_chunk.append(examples)
    return per_chunk, kept_counts


def train(tokens, sentences, chunks, lr, thresholds, cum_table, window, negative, seed,
          first_chunk, syn0, syn1neg, sg):
    """(syn0, syn1neg, trained) after a whole-batch training call, chunks in order."""
    syn0, syn1neg = syn0.astype(np.float64), syn1neg.astype(np.float64)
    per_chunk, kept = train_examples(tokens, sentences, chunks, thresholds, cum_table, window,
                                     negative, seed, first_chunk, sg)
    for c, examples in enumerate(per_chunk):
        for inputs, target, negs in examples:
            if sg:
                syn0[inputs[0]] += _outputs(syn0[inputs[0]].copy(), syn1neg, target, negs, lr[c])
            else:
                _cbow(syn0, syn1neg, inputs, target, negs, lr[c])
    return syn0, syn1neg, np.array(kept, np.int64)
