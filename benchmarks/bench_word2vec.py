"""Word2Vec kernels (kernels/*/word2vec.py): the fused negative-sampling step on a batch of
examples, and whole-batch training (downsampling, windows, draws and updates in one call).

Word indices follow a Zipf law over the vocabulary, as in text, so frequent rows are shared by
many examples (on several threads or blocks they race, as in training). The matrices keep
training across samples; the exact sigmoid keeps them finite."""
from . import common

# shape name -> (vocabulary, dimensions, examples of a fused step, words of a training batch)
SIZES = {"small": (1000, 32, 1024, 4000), "medium": (10000, 100, 16384, 40000),
         "large": (50000, 300, 65536, 160000)}
NEGATIVE, WINDOW, LR = 5, 5, 0.025
CHUNK_WORDS = {"cpu": 10000, "cuda": 1024}     # Word2Vec's jobs on the CPU, chunks on the GPU


def zipf_words(n, vocab, salt):
    """n word indices in [0, vocab), Zipf-distributed (exponent 1.2), seeded."""
    import numpy as np
    rng = np.random.default_rng([common.SEED, salt, n, vocab])
    return ((rng.zipf(1.2, n) - 1) % vocab).astype(np.int32)


def matrices(be, vocab, dim, dtype):
    return common.on(be, common.normal((vocab, dim), dtype, 1, 0.1),
                     common.normal((vocab, dim), dtype, 2, 0.1))


class FusedStep:
    """skipgram_update on P pairs / cbow_update on P groups of 4 context words, 5 negatives."""

    params = [common.BACKENDS, ["skipgram", "cbow"], common.SHAPES, common.DTYPES]
    param_names = ["backend", "model", "shape", "dtype"]

    def setup(self, backend, model, shape, dtype):
        def build():
            import numpy as np
            be = common.backend(backend)
            name = f"{model}_update"
            common.require(be, name)
            vocab, dim, p, _ = SIZES[shape]
            syn0, syn1 = matrices(be, vocab, dim, dtype)
            negatives = zipf_words(p * NEGATIVE, vocab, 3).reshape(p, NEGATIVE)
            if model == "skipgram":
                head = (zipf_words(p, vocab, 4),)
            else:
                head = (np.arange(0, 4 * p + 1, 4, dtype=np.int64), zipf_words(4 * p, vocab, 4))
            arrays = common.on(be, *head, zipf_words(p, vocab, 5), negatives)
            s = dict(be=be, kernel=be.kernels[name], args=(*arrays, LR, syn0, syn1))
            vars(self).update(s)
            self.time_update()
            return s
        common.prepare(self, (backend, model, shape, dtype), build)

    def time_update(self, *params):
        self.kernel(*self.args)
        self.be.synchronize()


class TrainBatch:
    """skipgram_train / cbow_train on a batch of sentences of 20 words: on the CPU in jobs of
    10000 words (concurrent on Numba's threads), on the GPU in chunks of 1024 (one block each);
    half the words kept by downsampling."""

    params = [common.BACKENDS, ["skipgram", "cbow"], common.SHAPES, common.DTYPES]
    param_names = ["backend", "model", "shape", "dtype"]

    def setup(self, backend, model, shape, dtype):
        def build():
            import numpy as np
            be = common.backend(backend)
            name = f"{model}_train"
            common.require(be, name)
            vocab, dim, _, words = SIZES[shape]
            syn0, syn1 = matrices(be, vocab, dim, dtype)
            sentences = np.arange(0, words + 1, 20, dtype=np.int64)
            per_chunk = CHUNK_WORDS[backend] // 20
            chunks = np.append(np.arange(0, sentences.size - 1, per_chunk),
                               sentences.size - 1).astype(np.int64)
            counts = np.bincount(zipf_words(words, vocab, 6), minlength=vocab) + 1
            cum = np.cumsum(counts ** 0.75)
            cum = np.round(cum / cum[-1] * (2**31 - 1)).astype(np.int32)
            arrays = common.on(be, zipf_words(words, vocab, 6), sentences, chunks,
                               np.full(chunks.size - 1, LR), np.full(vocab, 2**31, np.int64),
                               cum)
            s = dict(be=be, kernel=be.kernels[name],
                     args=(*arrays, WINDOW, NEGATIVE, common.SEED, 0, syn0, syn1,
                           be.empty((chunks.size - 1,), np.int64)))
            vars(self).update(s)
            self.time_train()
            return s
        common.prepare(self, (backend, model, shape, dtype), build)

    def time_train(self, *params):
        self.kernel(*self.args)
        self.be.synchronize()
