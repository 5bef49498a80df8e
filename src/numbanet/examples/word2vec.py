"""Word2Vec word embeddings, skip-gram (``--sg 1``) or CBOW (``--sg 0``), with ``nb.text.Word2Vec``.

Corpus: ``--corpus FILE`` (one sentence per line, whitespace-separated tokens, used as they are)
or, by default, English text that ships with Python: the pydoc topics (the Python
documentation's sections behind ``help()``), one sentence per paragraph, lower-case word tokens.
Skip-gram learns vectors that predict the words around each word, CBOW predicts each word from
the mean of its neighbours' vectors; both with negative sampling. Words used in similar contexts
end up with similar vectors: on the pydoc topics "true" lands next to "false", "class" next to
"derived" and "subclass".

The example prints the nearest neighbours (cosine similarity) of a few words (``--words``), the
training speed in words per second, and, when given, gensim's evaluations: ``--similarity FILE``
(tab-separated ``word1 word2 score`` lines: Pearson and Spearman correlation with the model's
cosine similarities) and ``--analogies FILE`` (``: section`` lines and ``a b c d`` questions, a is
to b as c is to d: accuracy). ``word2vec_words.png`` (with the ``plot`` extra) places the most
frequent words on the plane of the two principal components of their (unit) vectors.
"""
import os
import re
import time

import numpy as np

from . import check_sizes, english_text

TITLE = "word2vec (skip-gram or CBOW) on English text that ships with Python, or your corpus"

WORDS = "class,function,list,string,integer,true,exception,dictionary"


def add_arguments(p):
    p.add_argument("--corpus", default=None,
                   help="a text file, one sentence per line, whitespace-separated tokens "
                        "(default: the pydoc topics)")
    p.add_argument("--sg", type=int, default=1, choices=(0, 1), help="1: skip-gram, 0: CBOW")
    p.add_argument("--vector-size", type=int, default=50)
    p.add_argument("--window", type=int, default=5)
    p.add_argument("--min-count", type=int, default=5)
    p.add_argument("--negative", type=int, default=5)
    p.add_argument("--sample", type=float, default=1e-3,
                   help="downsampling of frequent words (0: none)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--words", default=WORDS,
                   help="comma-separated words whose nearest neighbours are printed")
    p.add_argument("--topn", type=int, default=6, help="neighbours printed per word")
    p.add_argument("--similarity", default=None,
                   help="word-pair similarity file to evaluate on (word1<TAB>word2<TAB>score)")
    p.add_argument("--analogies", default=None,
                   help="analogy questions file to evaluate on (': section' / 'a b c d' lines)")
    p.add_argument("--plot-words", type=int, default=80,
                   help="frequent words (4 letters or more) placed on the picture")


def pydoc_sentences():
    """The pydoc topics as sentences: one per paragraph, lower-case word tokens."""
    paragraphs = (re.findall(r"[a-z]+", p.lower()) for p in re.split(r"\n\s*\n", english_text()))
    return [words for words in paragraphs if words]


def read_corpus(path):
    """Sentences of a text file: one per non-empty line, whitespace-separated tokens."""
    with open(path, encoding="utf8") as f:
        sentences = [line.split() for line in f]
    sentences = [s for s in sentences if s]
    if not sentences:
        raise ValueError(f"--corpus {path!r} holds no words")
    return sentences


def projection(vectors):
    """The rows of ``vectors``, scaled to unit length (the cosine geometry the neighbours come
    from), on their two principal components."""
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    centred = unit - unit.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T


def draw(words, points, path, title):
    from .. import plot
    fig, axes = plot.figure(1, 1, size=(9.0, 7.5), title=title)
    ax = axes[0, 0]
    ax.scatter(points[:, 0], points[:, 1], s=6, color="tab:blue")
    for word, (px, py) in zip(words, points):
        ax.annotate(word, (px, py), fontsize=7, xytext=(2, 2), textcoords="offset points")
    ax.set_xlabel("first principal component")
    ax.set_ylabel("second principal component")
    return plot.save(fig, path)


def run(args):
    import numbanet as nb
    check_sizes(args, ("vector_size", "window", "negative", "epochs", "topn"))
    for name in ("corpus", "similarity", "analogies"):
        path = getattr(args, name)
        if path is not None and not os.path.isfile(path):
            raise ValueError(f"--{name} {path!r} is not a file")
    sentences = read_corpus(args.corpus) if args.corpus else pydoc_sentences()
    source = args.corpus or "the pydoc topics"
    total = sum(map(len, sentences))
    kind = "skip-gram" if args.sg else "CBOW"
    print(f"word2vec: {kind}, {len(sentences):,} sentences and {total:,} words of {source}; "
          f"vectors of {args.vector_size}, window {args.window}, {args.negative} negatives, "
          f"min_count {args.min_count}, {args.epochs} epochs on {args.device}")
    model = nb.text.Word2Vec(vector_size=args.vector_size, window=args.window,
                             min_count=args.min_count, sg=args.sg, negative=args.negative,
                             sample=args.sample, epochs=args.epochs, seed=args.seed,
                             device=args.device)
    start = time.perf_counter()
    model.fit(sentences)
    seconds = time.perf_counter() - start
    speed = total * args.epochs / seconds
    print(f"{len(model.wv):,} words in the vocabulary; trained {args.epochs} x {total:,} words "
          f"({model.trained_words:,} kept by downsampling) in {seconds:.1f}s: "
          f"{speed:,.0f} words/s")
    result = {"vocabulary": len(model.wv), "seconds": seconds, "words_per_second": speed,
              "neighbours": {}}
    for word in [w.strip() for w in args.words.split(",") if w.strip()]:
        if word not in model.wv:
            print(f"  {word}: not in the vocabulary")
            continue
        near = model.wv.most_similar(word, topn=args.topn)
        result["neighbours"][word] = near
        print(f"  {word}: " + ", ".join(f"{w} ({s:.2f})" for w, s in near))
    if args.similarity:
        (pearson, _), (spearman, _), oov = model.evaluate_word_pairs(args.similarity)
        result["similarity"] = {"pearson": pearson, "spearman": spearman, "oov": oov}
        print(f"word pairs of {args.similarity}: Pearson {pearson:.3f}, Spearman {spearman:.3f} "
              f"with the cosine similarities ({oov:.1f}% of the pairs out of the vocabulary)")
    if args.analogies:
        accuracy, sections = model.evaluate_word_analogies(args.analogies)
        answered = len(sections[-1]["correct"]) + len(sections[-1]["incorrect"])
        result["analogies"] = accuracy
        print(f"analogies of {args.analogies}: accuracy {accuracy:.3f} on the {answered} "
              f"questions with every word in the vocabulary")
    frequent = [w for w in model.wv.index_to_key if len(w) >= 4][:args.plot_words]
    if len(frequent) >= 3:
        try:
            points = projection(np.stack([model.wv[w] for w in frequent]).astype(np.float64))
            result["png"] = draw(frequent, points,
                                 os.path.join(args.output_dir, "word2vec_words.png"),
                                 f"{kind} vectors of the {len(frequent)} most frequent words "
                                 f"(4 letters or more), projected by PCA")
            print(f"pictures: {result['png']}")
        except ImportError:
            print("note: matplotlib is not installed, so no picture is drawn "
                  "(pip install numbanet[plot])")
    return result
