"""Word2Vec word embeddings (gensim 4's model and training algorithm), trained by the word2vec
kernels (kernels/{cpu,cuda}/word2vec.py).

    model = Word2Vec(vector_size=100, window=5, min_count=5).fit(sentences)
    model.wv["king"], model.wv.most_similar("king"), model.save("w2v.npz")

What gensim does and this does too: the vocabulary is the words seen at least ``min_count``
times, sorted by decreasing count (ties: the later first-seen word first, gensim's lexsort),
with gensim's pruning when ``max_vocab_size`` is exceeded while counting; ``sample``'s
downsampling thresholds and the unigram^``ns_exponent`` cumulative table are computed as gensim
computes them; the input vectors start as gensim's (``np.random.default_rng(seed)``, uniform in
[-1, 1) / vector_size) and the output vectors at zero; the corpus is cut into jobs of at most
``batch_words`` raw words, each trained with the learning rate reached so far, which decays
linearly from ``alpha`` to ``min_alpha`` over all the raw words of all epochs; skip-gram
(``sg=1``) and CBOW (``sg=0``, context mean) with ``negative`` negatives per example. The
differences: an exact sigmoid instead of gensim's table, Philox random numbers instead of its
linear congruential generator, and a sentence trains on its first 10000 kept words (gensim stops
a whole job there).

Parallelism: on the CPU each kernel call trains ``workers`` consecutive jobs at once, one per
Numba thread, updating the shared matrices without locks (Hogwild, as gensim's workers, which
take consecutive jobs from a queue, and the original C code). Consecutive, not more: with 4 jobs
per thread in a call (each thread then trains text 4 jobs ahead of the other's), 2 threads drifted
from 1 thread's vectors (Spearman 0.93 over the similarities of the 300 most frequent words of
the benchmark corpus; 0.99 for gensim's 2 workers and for these calls). With ``workers=1`` a
seed reproduces a run bit for bit. On the GPU (``device="cuda"``) the corpus is cut into chunks
of at most 1024 raw words, one block each, many per launch; blocks race the same way.
"""
import contextlib
import itertools
import json
import math
import numbers
import os
import zipfile
from collections import Counter

import numpy as np

from .._files import atomic_write
from ..backend import DEVICES, get_backend
from .keyedvectors import KeyedVectors

_FORMAT = "numbanet.text.Word2Vec"
_FORMAT_VERSION = 1
_DOMAIN = 2**31 - 1         # the cumulative table's total (gensim's make_cum_table domain)
_CUDA_CHUNK_WORDS = 1024    # raw words per chunk (one block) on the GPU
_CUDA_CHUNKS_PER_LAUNCH = 4096


def _check_int(name, value, low, allow_none=False):
    if allow_none and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        what = f"an integer >= {low}" + (" or None" if allow_none else "")
        raise ValueError(f"Word2Vec: {name} must be {what}, got {value!r}")
    return int(value)


def _check_float(name, value, low, low_open=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or value < low or (low_open and value == low):
        bound = f"> {low}" if low_open else f">= {low}"
        raise ValueError(f"Word2Vec: {name} must be a finite number {bound}, got {value!r}")
    return float(value)


def _max_threads():
    """The most threads Numba can run (NUMBA_NUM_THREADS)."""
    import numba
    return numba.config.NUMBA_NUM_THREADS


def _default_workers():
    """numbanet's CPU threads: Numba's current thread count."""
    import numba
    return numba.get_num_threads()


@contextlib.contextmanager
def _numba_threads(n):
    """Run the enclosed kernels on ``n`` of Numba's threads."""
    import numba
    old = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        yield
    finally:
        numba.set_num_threads(old)


def _sentences_of(sentences):
    """``sentences`` if it can be iterated more than once (a list, a corpus object)."""
    if iter(sentences) is sentences:
        raise ValueError("Word2Vec: sentences must be re-iterable (a list of token lists or a "
                         "corpus object whose __iter__ starts over), got a one-shot iterator "
                         f"{type(sentences).__name__}")
    return sentences


class Word2Vec:
    """Word2Vec with negative sampling, gensim 4's parameters and meanings (see the module
    docstring for what differs).

    Args:
        vector_size: dimensions of the word vectors.
        window: the largest distance between a word and a context word; each word uses a window
            reduced by a random 0..window-1.
        min_count: words seen fewer times are dropped.
        sg: 1 for skip-gram, 0 for CBOW (mean of the context vectors).
        negative: noise words drawn per example.
        ns_exponent: exponent of the counts in the noise distribution.
        sample: downsampling of frequent words (0: none; < 1: a fraction of the corpus; >= 1:
            a count, gensim's shorthand).
        alpha, min_alpha: learning rate, decaying linearly over all epochs.
        epochs: passes over the corpus.
        seed: the initial vectors and every random draw.
        workers: CPU threads (default: numbanet's, Numba's thread count).
        device: "cpu" or "cuda".
        max_vocab_size: prune the rarest words while counting when there are more (None: never).
        batch_words: raw words per job (gensim's jobs: the unit of threads and learning rate).
    """

    def __init__(self, vector_size=100, window=5, min_count=5, sg=1, negative=5,
                 ns_exponent=0.75, sample=1e-3, alpha=0.025, min_alpha=0.0001, epochs=5, seed=0,
                 workers=None, device="cpu", max_vocab_size=None, batch_words=10000):
        self.vector_size = _check_int("vector_size", vector_size, 1)
        self.window = _check_int("window", window, 1)
        self.min_count = _check_int("min_count", min_count, 0)
        if sg not in (0, 1) or isinstance(sg, float):
            raise ValueError(f"Word2Vec: sg must be 1 (skip-gram) or 0 (CBOW), got {sg!r}")
        self.sg = int(sg)
        self.negative = _check_int("negative", negative, 1)
        if isinstance(ns_exponent, bool) or not isinstance(ns_exponent, numbers.Real) \
                or not math.isfinite(ns_exponent):
            raise ValueError(f"Word2Vec: ns_exponent must be a finite number, got {ns_exponent!r}")
        self.ns_exponent = float(ns_exponent)
        self.sample = _check_float("sample", sample, 0.0)
        self.alpha = _check_float("alpha", alpha, 0.0, low_open=True)
        self.min_alpha = _check_float("min_alpha", min_alpha, 0.0)
        self.epochs = _check_int("epochs", epochs, 0)
        self.seed = _check_int("seed", seed, 0)
        if self.seed >= 2**63:
            raise ValueError(f"Word2Vec: seed must be below 2**63, got {seed!r}")
        self.workers = _check_int("workers", workers, 1, allow_none=True)
        if self.workers is not None and self.workers > _max_threads():
            raise ValueError(f"Word2Vec: workers must be at most Numba's {_max_threads()} "
                             f"threads (NUMBA_NUM_THREADS), got {workers!r}")
        if device not in DEVICES:
            raise ValueError(f"Word2Vec: device must be one of {', '.join(DEVICES)}, got "
                             f"{device!r}")
        self.device = device
        self.max_vocab_size = _check_int("max_vocab_size", max_vocab_size, 1, allow_none=True)
        self.batch_words = _check_int("batch_words", batch_words, 1)
        self.wv = KeyedVectors([], np.zeros((0, self.vector_size), np.float32),
                               np.zeros(0, np.int64))
        self.syn1neg = np.zeros((0, self.vector_size), np.float32)
        self.corpus_count = 0           # sentences of the corpus of build_vocab
        self.corpus_total_words = 0     # raw words of that corpus
        self.chunks_trained = 0         # jobs trained so far: the next job's Philox counter
        self.trained_words = 0          # words kept by downsampling in the last train()

    def get_config(self):
        """The constructor arguments."""
        return {k: getattr(self, k) for k in (
            "vector_size", "window", "min_count", "sg", "negative", "ns_exponent", "sample",
            "alpha", "min_alpha", "epochs", "seed", "workers", "device", "max_vocab_size",
            "batch_words")}

    def __repr__(self):
        return (f"<Word2Vec {'skip-gram' if self.sg else 'CBOW'}: {len(self.wv)} words, "
                f"vector_size {self.vector_size}, window {self.window}, device {self.device!r}>")

    # ------------------------------------------------------------------------------ vocabulary
    def _count(self, sentences):
        """Word counts in first-seen order, with gensim's pruning past max_vocab_size."""
        counts, min_reduce = Counter(), 1
        self.corpus_count = self.corpus_total_words = 0
        for i, sentence in enumerate(sentences):
            if isinstance(sentence, (str, bytes)):
                raise ValueError(f"Word2Vec: each sentence must be a list of tokens; sentence {i} "
                                 f"is the string {sentence!r:.60}")
            counts.update(sentence)
            self.corpus_count += 1
            self.corpus_total_words += len(sentence)
            if self.max_vocab_size and len(counts) > self.max_vocab_size:
                for word in [w for w, c in counts.items() if c < min_reduce]:
                    del counts[word]
                min_reduce += 1
        return counts

    def build_vocab(self, sentences):
        """Count the words of ``sentences`` (token lists), keep those seen ``min_count`` times,
        most frequent first, and reset the weights (gensim's ``build_vocab``). Returns self."""
        counts = self._count(_sentences_of(sentences))
        kept = [(w, c) for w, c in counts.items() if c >= self.min_count]
        if not kept:
            raise ValueError(f"Word2Vec: no word occurs min_count={self.min_count} times in the "
                             f"{self.corpus_total_words} words of the corpus")
        n = np.array([c for _, c in kept], np.int64)
        order = np.lexsort((-np.arange(len(kept)), -n))
        vocab = [kept[i][0] for i in order]
        self._set_vocabulary(vocab, n[order])
        rng = np.random.default_rng(self.seed)
        vectors = rng.random((len(vocab), self.vector_size), dtype=np.float32)
        vectors *= 2.0
        vectors -= 1.0
        vectors /= self.vector_size
        self.wv.vectors = vectors
        self.syn1neg = np.zeros_like(vectors)
        self.chunks_trained = 0
        return self

    def _set_vocabulary(self, vocab, counts):
        """The keyed vectors (zero vectors), downsampling thresholds and unigram table of a
        vocabulary sorted by decreasing ``counts``."""
        self.wv = KeyedVectors(vocab, np.zeros((len(vocab), self.vector_size), np.float32),
                               np.asarray(counts, np.int64))
        if not vocab:
            self.thresholds, self.cum_table = np.zeros(0, np.int64), np.zeros(0, np.int32)
            return
        total = int(self.wv.counts.sum())
        if self.sample == 0.0:
            threshold = total
        elif self.sample < 1.0:
            threshold = self.sample * total
        else:
            threshold = int(self.sample * (3 + np.sqrt(5)) / 2)
        c = self.wv.counts.astype(np.float64)
        keep = np.minimum((np.sqrt(c / threshold) + 1) * (threshold / c), 1.0)
        self.thresholds = (keep * (2**32 - 1)).astype(np.uint32).astype(np.int64)
        powers = [float(k) ** self.ns_exponent for k in self.wv.counts.tolist()]
        cumulative = list(itertools.accumulate(powers))
        self.cum_table = np.array([round(x / cumulative[-1] * _DOMAIN) for x in cumulative],
                                  np.int32)

    # -------------------------------------------------------------------------------- training
    def _jobs(self, sentences, words, epoch):
        """(sentences, learning rate) jobs of at most batch_words raw words (gensim's job
        producer; the rate from the raw words pushed before the job)."""
        limit = min(self.batch_words, _CUDA_CHUNK_WORDS) if self.device == "cuda" \
            else self.batch_words
        job, size, pushed = [], 0, 0
        for sentence in sentences:
            n = len(sentence)
            if size + n > limit and job:
                yield job, self._alpha(epoch, pushed / words)
                pushed += size
                job, size = [], 0
            job.append(sentence)
            size += n
        if job:
            yield job, self._alpha(epoch, pushed / words)

    def _alpha(self, epoch, progress):
        frac = (epoch + progress) / self.epochs
        return max(self.min_alpha, self.alpha - (self.alpha - self.min_alpha) * frac)

    def _encode(self, jobs):
        """(tokens, sentence offsets, job offsets) of a list of jobs: the in-vocabulary words'
        indices (out-of-vocabulary words dropped, as gensim), as int32 / int64 arrays."""
        sents = [s for job, _ in jobs for s in job]
        lengths = np.fromiter(map(len, sents), np.int64, len(sents))
        flat = np.fromiter(map(self.wv.key_to_index.get, itertools.chain.from_iterable(sents),
                               itertools.repeat(-1)), np.int32, int(lengths.sum()))
        known = flat >= 0
        kept = np.concatenate(([0], np.cumsum(known)))
        offsets = kept[np.concatenate(([0], np.cumsum(lengths)))]
        chunks = np.cumsum([0] + [len(job) for job, _ in jobs])
        return flat[known], offsets.astype(np.int64), chunks.astype(np.int64)

    def _calls(self, sentences, words, epoch, per_call):
        """Groups of ``per_call`` jobs: one kernel call each."""
        jobs = self._jobs(sentences, words, epoch)
        while True:
            group = list(itertools.islice(jobs, per_call))
            if not group:
                return
            yield group

    def train(self, sentences):
        """Train ``epochs`` passes over ``sentences`` from the current weights with the
        vocabulary of build_vocab (gensim's ``train``). Returns self."""
        sentences = _sentences_of(sentences)
        if not len(self.wv):
            raise ValueError("Word2Vec: build the vocabulary first (fit or build_vocab)")
        be = get_backend(self.device)
        kernel = be.skipgram_train if self.sg else be.cbow_train
        workers = self.workers or _default_workers()
        per_call = _CUDA_CHUNKS_PER_LAUNCH if be.is_device else workers
        syn0, syn1neg = be.asarray(self.wv.vectors), be.asarray(self.syn1neg)
        thresholds, cum_table = be.asarray(self.thresholds), be.asarray(self.cum_table)
        words = max(self.corpus_total_words, 1)
        trained = []
        with _numba_threads(workers):
            for epoch in range(self.epochs):
                for group in self._calls(sentences, words, epoch, per_call):
                    tokens, offsets, chunks = self._encode(group)
                    lr = np.array([alpha for _, alpha in group], np.float64)
                    out = be.empty((len(group),), np.int64)
                    kernel(be.asarray(tokens), be.asarray(offsets), be.asarray(chunks),
                           be.asarray(lr), thresholds, cum_table, self.window, self.negative,
                           self.seed, self.chunks_trained, syn0, syn1neg, out)
                    self.chunks_trained += len(group)
                    trained.append(out)
        self.trained_words = int(sum(int(be.to_numpy(t).sum()) for t in trained))
        self.wv.vectors, self.syn1neg = be.to_numpy(syn0), be.to_numpy(syn1neg)
        return self

    def fit(self, sentences):
        """build_vocab then train on ``sentences`` (an iterable of token lists that can be
        iterated again). Returns self."""
        return self.build_vocab(sentences).train(sentences)

    # ------------------------------------------------------------------------- evaluations
    def evaluate_word_pairs(self, path, delimiter="\t", case_insensitive=True,
                            dummy4unknown=False, restrict_vocab=300000, encoding="utf8"):
        """``self.wv.evaluate_word_pairs`` (see KeyedVectors)."""
        return self.wv.evaluate_word_pairs(path, delimiter, case_insensitive, dummy4unknown,
                                           restrict_vocab, encoding)

    def evaluate_word_analogies(self, path, restrict_vocab=300000, case_insensitive=True,
                                dummy4unknown=False):
        """``self.wv.evaluate_word_analogies`` (see KeyedVectors)."""
        return self.wv.evaluate_word_analogies(path, restrict_vocab, case_insensitive,
                                               dummy4unknown)

    # --------------------------------------------------------------------------- save / load
    def save(self, path):
        """Write the model to one ``.npz`` file (vocabulary, counts, vectors, output weights and
        the configuration as JSON), atomically. Returns ``path``."""
        vocab = np.array(self.wv.index_to_key, dtype=str)
        if not all(isinstance(k, str) for k in self.wv.index_to_key) \
                or vocab.tolist() != self.wv.index_to_key:
            raise ValueError("Word2Vec.save: only vocabularies of strings without trailing NUL "
                             "characters can be saved")
        state = {"config": self.get_config(), "corpus_count": self.corpus_count,
                 "corpus_total_words": self.corpus_total_words,
                 "chunks_trained": self.chunks_trained, "trained_words": self.trained_words}
        arrays = dict(format=np.array(_FORMAT), version=np.array(_FORMAT_VERSION),
                      state=np.array(json.dumps(state)), vocab=vocab, counts=self.wv.counts,
                      vectors=self.wv.vectors, syn1neg=self.syn1neg)
        return atomic_write(path, lambda f: np.savez(f, **arrays))

    @classmethod
    def load(cls, path):
        """A model written by ``save``. ValueError naming ``path`` for any other file."""
        try:
            with np.load(path, allow_pickle=False) as data:
                if str(data["format"]) != _FORMAT or int(data["version"]) != _FORMAT_VERSION:
                    raise ValueError("not the numbanet Word2Vec format")
                state = json.loads(str(data["state"]))
                vocab, counts = data["vocab"].tolist(), data["counts"]
                vectors, syn1neg = data["vectors"], data["syn1neg"]
            config = state["config"]
            if config["workers"] is not None and config["workers"] > _max_threads():
                config["workers"] = None        # saved on a machine with more threads
            model = cls(**config)
            if not (vectors.shape == syn1neg.shape == (len(vocab), model.vector_size)
                    and counts.shape == (len(vocab),) and vectors.dtype == np.float32
                    and syn1neg.dtype == np.float32 and counts.dtype == np.int64):
                raise ValueError("arrays of inconsistent shapes or types")
            model._set_vocabulary(vocab, counts)
        except FileNotFoundError:
            raise
        except (OSError, ValueError, KeyError, TypeError, AttributeError, EOFError,
                zipfile.BadZipFile, json.JSONDecodeError) as e:
            raise ValueError(f"Word2Vec.load: {os.fspath(path)!r} is not a numbanet Word2Vec "
                             f"file ({e})") from None
        model.wv.vectors, model.syn1neg = vectors, syn1neg
        for key in ("corpus_count", "corpus_total_words", "chunks_trained", "trained_words"):
            setattr(model, key, int(state[key]))
        return model
