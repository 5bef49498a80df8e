"""Word vectors by key, their similarities and the standard evaluations (gensim 4's
KeyedVectors: ``similarity``, ``most_similar``, ``evaluate_word_pairs``,
``evaluate_word_analogies``)."""
import numbers

import numpy as np


def _unit(v):
    """v / ||v|| in float64 (v itself where the norm is 0)."""
    v = np.asarray(v, np.float64)
    n = np.linalg.norm(v)
    return v / n if n > 0 else v


class KeyedVectors:
    """Vectors (``vectors``, (V, D)) of the keys ``index_to_key`` (row i is the key
    ``index_to_key[i]``; ``key_to_index`` is the reverse map), with ``counts`` of the keys in the
    training corpus when known. ``wv[key]`` is a copy of the key's vector."""

    def __init__(self, index_to_key, vectors, counts=None):
        self.index_to_key = list(index_to_key)
        self.key_to_index = {k: i for i, k in enumerate(self.index_to_key)}
        self.vectors = vectors
        self.counts = counts
        if len(self.key_to_index) != len(self.index_to_key):
            raise ValueError("KeyedVectors: index_to_key has a key more than once")
        if vectors.ndim != 2 or vectors.shape[0] != len(self.index_to_key):
            raise ValueError(f"KeyedVectors: vectors must have one row per key "
                             f"({len(self.index_to_key)}), got shape {vectors.shape}")

    @property
    def vector_size(self):
        return self.vectors.shape[1]

    def __len__(self):
        return len(self.index_to_key)

    def __contains__(self, key):
        return key in self.key_to_index

    def get_index(self, key):
        """The row of ``key``; KeyError naming it when absent."""
        try:
            return self.key_to_index[key]
        except (KeyError, TypeError):
            raise KeyError(f"word {key!r} not in vocabulary") from None

    def __getitem__(self, key):
        return self.vectors[self.get_index(key)].copy()

    def __repr__(self):
        return f"<KeyedVectors: {len(self)} keys, vector_size {self.vector_size}>"

    def similarity(self, w1, w2):
        """Cosine similarity of the vectors of two keys."""
        return float(_unit(self[w1]) @ _unit(self[w2]))

    # --------------------------------------------------------------------------- nearest keys
    def _unit_rows(self, end):
        """The first ``end`` vectors scaled to unit length (zero vectors stay zero), in the
        vectors' dtype (computed once per query or evaluation)."""
        v = self.vectors[:end]
        norms = np.linalg.norm(v.astype(np.float64), axis=1, keepdims=True)
        return np.divide(v, norms, out=np.zeros(v.shape), where=norms > 0).astype(v.dtype)

    def _cosines(self, rows, weights, unit):
        """Cosines of the rows of ``unit`` with the unit-length weighted mean of the unit
        vectors of ``rows`` (gensim's ``get_mean_vector`` with pre- and post-normalization)."""
        mean = np.zeros(self.vector_size)
        for r, w in zip(rows, weights):
            mean += w * _unit(self.vectors[r])
        mean = _unit(mean / sum(abs(w) for w in weights))
        return (unit @ mean.astype(unit.dtype)).astype(np.float64)

    def _ranked(self, rows, weights, unit):
        """(row, cosine) pairs best first (ties: lower row first), the input rows left out."""
        sims = self._cosines(rows, weights, unit)
        exclude = set(rows)
        return [(int(i), float(sims[i])) for i in np.argsort(-sims, kind="stable")
                if int(i) not in exclude]

    def most_similar(self, positive=None, negative=None, topn=10, restrict_vocab=None):
        """The ``topn`` keys nearest the mean of the unit vectors of ``positive`` keys minus
        those of ``negative`` keys, as (key, cosine similarity) pairs, best first, the input
        keys left out (gensim's ``most_similar``). Items may be ``(key, weight)`` pairs
        (default weights 1 and -1). ``restrict_vocab``: search the first keys only (the most
        frequent ones for a trained vocabulary). ``topn=None``: the cosines of every key."""
        if topn is not None and (isinstance(topn, bool) or not isinstance(topn, numbers.Integral)
                                 or topn < 0):
            raise ValueError(f"most_similar: topn must be None or a non-negative integer, got "
                             f"{topn!r}")
        end = self._restrict("most_similar", restrict_vocab)
        rows, weights = [], []
        for items, default in ((positive, 1.0), (negative, -1.0)):
            if items is None:
                continue
            for item in [items] if isinstance(items, str) else items:
                key, weight = item if isinstance(item, tuple) else (item, default)
                rows.append(self.get_index(key))
                weights.append(float(weight))
        if not rows:
            raise ValueError("most_similar: give at least one positive or negative key")
        unit = self._unit_rows(end)
        if topn is None:
            return self._cosines(rows, weights, unit)
        return [(self.index_to_key[i], s) for i, s in self._ranked(rows, weights, unit)[:topn]]

    def _restrict(self, name, restrict_vocab):
        if restrict_vocab is None:
            return len(self)
        if isinstance(restrict_vocab, bool) or not isinstance(restrict_vocab, numbers.Integral) \
                or restrict_vocab < 1:
            raise ValueError(f"{name}: restrict_vocab must be None or a positive integer, got "
                             f"{restrict_vocab!r}")
        return min(int(restrict_vocab), len(self))

    # ------------------------------------------------------------------------------ evaluations
    def _ok_vocab(self, name, restrict_vocab, case_insensitive):
        """gensim's lookup for evaluations: the first ``restrict_vocab`` keys (upper-cased when
        case-insensitive, the first of several case variants winning) -> their rows."""
        end = self._restrict(name, restrict_vocab)
        keys = self.index_to_key[:end]
        fold = str.upper if case_insensitive else (lambda k: k)
        return {fold(k): i for i, k in reversed(list(enumerate(keys)))}, fold, end

    def evaluate_word_pairs(self, path, delimiter="\t", case_insensitive=True,
                            dummy4unknown=False, restrict_vocab=300000, encoding="utf8"):
        """Correlation of the model's cosine similarities with human judgements, as gensim's
        ``evaluate_word_pairs``: ``path`` holds lines ``word1<delimiter>word2<delimiter>score``;
        lines starting with ``#`` and malformed lines are skipped; a pair with a word outside the
        first ``restrict_vocab`` keys is skipped, or scored 0 with ``dummy4unknown``.

        Returns ((pearson r, p-value), (spearman rho, p-value), oov ratio in percent), the ratio
        of out-of-vocabulary pairs to all scored pairs with ``dummy4unknown``, to all valid
        pairs without. ValueError naming the file when no pair could be scored."""
        from scipy import stats
        ok_vocab, fold, _ = self._ok_vocab("evaluate_word_pairs", restrict_vocab,
                                           case_insensitive)
        gold, model, oov = [], [], 0
        with open(path, encoding=encoding) as f:
            for line in f:
                if not line or line.startswith("#"):
                    continue
                parts = [fold(p) for p in line.split(delimiter)]
                try:
                    a, b, score = parts
                    score = float(score)
                except ValueError:
                    continue
                if a not in ok_vocab or b not in ok_vocab:
                    oov += 1
                    if dummy4unknown:
                        gold.append(score)
                        model.append(0.0)
                    continue
                gold.append(score)
                model.append(float(_unit(self.vectors[ok_vocab[a]])
                                   @ _unit(self.vectors[ok_vocab[b]])))
        if not gold:
            raise ValueError(f"evaluate_word_pairs: no valid pair with words in the vocabulary "
                             f"in {path}")
        pearson = stats.pearsonr(gold, model)
        spearman = stats.spearmanr(gold, model)
        oov_ratio = 100.0 * oov / (len(gold) if dummy4unknown else len(gold) + oov)
        return ((float(pearson[0]), float(pearson[1])),
                (float(spearman[0]), float(spearman[1])), oov_ratio)

    def evaluate_word_analogies(self, path, restrict_vocab=300000, case_insensitive=True,
                                dummy4unknown=False):
        """Accuracy on analogy questions, as gensim's ``evaluate_word_analogies``: ``path`` holds
        sections (``: name`` lines) of questions ``a b c d`` (a is to b as c is to d); the answer
        is the best of ``most_similar(positive=[b, c], negative=[a], topn=5)`` over the first
        ``restrict_vocab`` keys that is not a, b or c. A question with a word outside those keys
        is skipped (counted incorrect with ``dummy4unknown``); malformed lines are skipped.

        Returns (overall accuracy, sections): each section a dict ``{"section": name, "correct":
        [(a, b, c, d), ...], "incorrect": [...]}``, the last one ``"Total accuracy"`` over all;
        an accuracy is 0.0 where nothing was answered. ValueError naming the file when it has no
        question, or a question before the first section."""
        ok_vocab, fold, end = self._ok_vocab("evaluate_word_analogies", restrict_vocab,
                                             case_insensitive)
        unit = self._unit_rows(end)
        sections, section, questions = [], None, 0
        with open(path, "rb") as f:
            for line_no, raw in enumerate(f):
                line = raw.decode("utf8")
                if line.startswith(": "):
                    section = {"section": line.lstrip(": ").strip(), "correct": [],
                               "incorrect": []}
                    sections.append(section)
                    continue
                if section is None:
                    raise ValueError(f"evaluate_word_analogies: line {line_no + 1} of {path} comes "
                                     f"before the first ': section' line")
                words = [fold(w) for w in line.split()]
                if len(words) != 4:
                    continue
                questions += 1
                if any(w not in ok_vocab for w in words):
                    if dummy4unknown:
                        section["incorrect"].append(tuple(words))
                    continue
                a, b, c, expected = words
                ranked = self._ranked([ok_vocab[b], ok_vocab[c], ok_vocab[a]], [1.0, 1.0, -1.0],
                                      unit)[:5]
                predicted = None
                for i, _ in ranked:
                    predicted = fold(self.index_to_key[i])
                    if predicted in ok_vocab and predicted not in (a, b, c):
                        break
                section["correct" if predicted == expected else "incorrect"].append(tuple(words))
        if not questions:
            raise ValueError(f"evaluate_word_analogies: no 'a b c d' question in {path}")
        total = {"section": "Total accuracy",
                 "correct": [q for s in sections for q in s["correct"]],
                 "incorrect": [q for s in sections for q in s["incorrect"]]}
        sections.append(total)
        answered = len(total["correct"]) + len(total["incorrect"])
        return (len(total["correct"]) / answered if answered else 0.0), sections
