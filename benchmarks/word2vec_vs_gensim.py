"""numbanet's Word2Vec against gensim's, same corpus and settings: training speed in words per
second, and how alike the learned similarities are.

Corpus: the pydoc topics that ship with Python (``pydoc_data.topics``) plus the two English text
corpora that ship with gensim's tests (``lee_background.cor``, news; ``head500.noblanks.cor``,
stemmed Wikipedia), lower-case words (``[a-z]+``), one sentence per line. Settings: gensim's
defaults with skip-gram (``--sg 1``) or CBOW (``--sg 0``), ``workers`` = numbanet's CPU threads
(Numba's), the learning rate decaying over words in both. Each library trains ``--runs`` times
alternately; the median training time (build_vocab excluded, numbanet's compilation excluded by a
warm-up fit) gives corpus words x epochs / second. Agreement: the Spearman correlation between
the two models' cosine similarities over all pairs of the 300 most frequent words, beside the
same figure for two gensim runs with different seeds (what "alike" can mean for a stochastic
method) and for two numbanet runs.

Run by hand (gensim is in the ``bench`` extra): ``python benchmarks/word2vec_vs_gensim.py``; on a machine
that sets ``OPENBLAS_CORETYPE``, run it with that variable unset for the BLAS a user's machine
would have (``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python ...``). Its work sits
under ``__main__`` so asv's discovery never runs it.
"""
import argparse
import json
import os
import re
import statistics
import time

import numpy as np

TOP = 300


def corpus():
    """(sentences, names of the texts used)."""
    import pydoc_data.topics
    texts, names = ["\n".join(pydoc_data.topics.topics.values())], ["pydoc_data.topics"]
    try:
        import gensim.test.utils as gtu
        for name in ("lee_background.cor", "head500.noblanks.cor"):
            path = gtu.datapath(name)
            if os.path.exists(path):
                with open(path, encoding="utf8") as f:
                    texts.append(f.read())
                names.append(f"gensim {name}")
    except ImportError:
        pass
    sentences = [re.findall(r"[a-z]+", line.lower()) for text in texts
                 for line in text.splitlines()]
    return [s for s in sentences if s], names


def settings(sg, workers, seed):
    return dict(vector_size=100, window=5, min_count=5, sg=sg, negative=5, sample=1e-3,
                alpha=0.025, min_alpha=0.0001, epochs=5, seed=seed, workers=workers)


def train_numbanet(sentences, kw):
    from numbanet.text import Word2Vec
    model = Word2Vec(**kw).build_vocab(sentences)
    t0 = time.perf_counter()
    model.train(sentences)
    return model.wv, time.perf_counter() - t0


def train_gensim(sentences, kw):
    from gensim.models import Word2Vec
    model = Word2Vec(hs=0, **kw)
    model.build_vocab(sentences)
    t0 = time.perf_counter()
    model.train(sentences, total_words=model.corpus_total_words, epochs=model.epochs)
    return model.wv, time.perf_counter() - t0


def pair_cosines(wv, words):
    v = np.array([wv[w] for w in words], np.float64)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    i, j = np.triu_indices(len(words), 1)
    return np.sum(v[i] * v[j], axis=1)


def spearman(a, b, words):
    from scipy import stats
    return float(stats.spearmanr(pair_cosines(a, words), pair_cosines(b, words))[0])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sg", type=int, nargs="+", default=[1, 0], choices=[0, 1])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import numba
    workers = numba.get_num_threads()
    sentences, names = corpus()
    words = sum(map(len, sentences))
    train_numbanet(sentences[:200], settings(1, workers, 0))      # compile (or load) kernels
    train_numbanet(sentences[:200], settings(0, workers, 0))
    print(f"corpus: {', '.join(names)}: {len(sentences)} sentences, {words} words; workers "
          f"{workers}; load {os.getloadavg()[0]:.2f}")
    results = []
    for sg in args.sg:
        times = {"numbanet": [], "gensim": []}
        models = {}
        for run in range(args.runs):
            for lib, fn in (("numbanet", train_numbanet), ("gensim", train_gensim)):
                wv, seconds = fn(sentences, settings(sg, workers, 1))
                times[lib].append(seconds)
                models.setdefault(lib, wv)
        models["gensim seed 2"] = train_gensim(sentences, settings(sg, workers, 2))[0]
        models["numbanet seed 2"] = train_numbanet(sentences, settings(sg, workers, 2))[0]
        top = models["gensim"].index_to_key[:TOP]
        assert top == models["numbanet"].index_to_key[:TOP]
        epochs = settings(sg, workers, 1)["epochs"]
        speed = {lib: words * epochs / statistics.median(t) for lib, t in times.items()}
        row = {"model": "skip-gram" if sg else "CBOW",
               "numbanet_words_per_s": speed["numbanet"], "gensim_words_per_s": speed["gensim"],
               "ratio": speed["numbanet"] / speed["gensim"],
               "spearman_numbanet_gensim": spearman(models["numbanet"], models["gensim"], top),
               "spearman_gensim_seeds": spearman(models["gensim"], models["gensim seed 2"], top),
               "spearman_numbanet_seeds": spearman(models["numbanet"], models["numbanet seed 2"],
                                                   top),
               "load": os.getloadavg()[0]}
        results.append(row)
        print(f"{row['model']:9s}  numbanet {row['numbanet_words_per_s']:10.0f} words/s  gensim "
              f"{row['gensim_words_per_s']:10.0f} words/s  ratio {row['ratio']:.2f}  |  "
              f"Spearman over {TOP * (TOP - 1) // 2} pairs of the top {TOP} words: numbanet vs "
              f"gensim {row['spearman_numbanet_gensim']:.3f}, gensim vs gensim (other seed) "
              f"{row['spearman_gensim_seeds']:.3f}, numbanet vs numbanet (other seed) "
              f"{row['spearman_numbanet_seeds']:.3f}  (load {row['load']:.2f})")
    if args.json:
        print(json.dumps({"corpus": names, "words": words, "workers": workers,
                          "results": results}))


if __name__ == "__main__":
    main()
