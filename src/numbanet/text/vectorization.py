"""TextVectorization: strings to integer token ids (Keras' layer of that name), on the host.

``adapt(texts)`` learns the vocabulary: index 0 is padding (""), 1 the out-of-vocabulary token
"[UNK]", then the tokens by decreasing frequency (ties in the order they were first seen), at
most ``max_tokens`` entries in all. Calling it on strings (a list, or an array of shape (batch,)
or (batch, 1)) gives an int64 array (batch, length): padded with 0 to the longest text (at
least one step), or to ``output_sequence_length`` (also truncating). It is a layer: in a
functional model it follows ``nb.Input(shape=(), dtype="string")`` and its vocabulary is saved
with the model.
"""
import os
import re
import string
from collections import Counter

import numpy as np

from ..layers.base import check_positive_int
from ..layers.lookup import HostLayer, read_vocabulary_file

__all__ = ["TextVectorization"]

PAD, OOV = "", "[UNK]"
_PUNCTUATION = re.compile("[" + re.escape(string.punctuation) + "]")
_STANDARDIZE = ("lower_and_strip_punctuation", "lower", "strip_punctuation")
_SPLIT = ("whitespace", "character")
_MODES = ("int", "multi_hot", "count")


class TextVectorization(HostLayer):
    """Text -> token ids. ``standardize``: "lower_and_strip_punctuation" (default), "lower",
    "strip_punctuation", None, or a function of one string; ``split``: "whitespace",
    "character" (every character, spaces included), None (the whole text one token), or a
    function returning a list of tokens; ``output_mode``: "int" (ids, padded), "multi_hot" or
    "count" ((batch, vocabulary size): whether / how often each token occurs)."""

    input_kind = "string"

    def __init__(self, max_tokens=None, standardize="lower_and_strip_punctuation",
                 split="whitespace", output_mode="int", output_sequence_length=None,
                 vocabulary=None, name=None, **kwargs):
        kwargs.pop("dtype", None)
        super().__init__(name=name, **kwargs)
        where = f"TextVectorization {self.name!r}"
        if max_tokens is not None:
            max_tokens = check_positive_int(max_tokens, "max_tokens", where)
            if max_tokens < 3:
                raise ValueError(f"{where}: max_tokens counts the padding and OOV entries, so it "
                                 f"must be at least 3, got {max_tokens}")
        if not (standardize is None or callable(standardize) or standardize in _STANDARDIZE):
            raise ValueError(f"{where}: standardize must be one of {_STANDARDIZE}, None or a "
                             f"function, got {standardize!r}")
        if not (split is None or callable(split) or split in _SPLIT):
            raise ValueError(f"{where}: split must be one of {_SPLIT}, None or a function, got "
                             f"{split!r}")
        if output_mode not in _MODES:
            raise ValueError(f"{where}: output_mode must be one of {_MODES}, got "
                             f"{output_mode!r}")
        if output_sequence_length is not None:
            output_sequence_length = check_positive_int(output_sequence_length,
                                                        "output_sequence_length", where)
            if output_mode != "int":
                raise ValueError(f"{where}: output_sequence_length is for output_mode='int'")
        self.max_tokens, self.standardize, self.split = max_tokens, standardize, split
        self.output_mode, self.output_sequence_length = output_mode, output_sequence_length
        self._vocab = [PAD, OOV]
        self._index = {PAD: 0, OOV: 1}
        if vocabulary is not None:
            self.set_vocabulary(vocabulary)

    # -- text to tokens -------------------------------------------------------------------------------
    def _standardize(self, text):
        if self.standardize is None:
            return text
        if callable(self.standardize):
            return self.standardize(text)
        if "lower" in self.standardize:
            text = text.lower()
        if "strip_punctuation" in self.standardize:
            text = _PUNCTUATION.sub("", text)
        return text

    def _tokens(self, text):
        text = self._standardize(text)
        if self.split is None:
            return [text] if text else []
        if callable(self.split):
            return list(self.split(text))
        if self.split == "character":
            return list(text)
        return text.split()

    def _texts(self, texts):
        """A batch of strings from a list or an array of shape (batch,) or (batch, 1)."""
        if isinstance(texts, (str, bytes)):
            raise TypeError(f"{self!r}: expected a batch of texts (a list or an array of "
                            f"strings), got one string; wrap it in a list")
        arr = np.asarray(texts, dtype=object)
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.ndim != 1:
            raise ValueError(f"{self!r}: expected texts of shape (batch,) or (batch, 1), got "
                             f"{arr.shape}")
        out = []
        for i, t in enumerate(arr):
            if isinstance(t, bytes):
                t = t.decode("utf-8")
            if not isinstance(t, str):
                raise TypeError(f"{self!r}: text {i} is a {type(t).__name__}, not a string")
            out.append(t)
        return out

    # -- the vocabulary -----------------------------------------------------------------------------
    def adapt(self, texts):
        """Learn the vocabulary from ``texts`` (replacing any previous one)."""
        counts = Counter()
        for t in self._texts(texts if isinstance(texts, (str, bytes)) else list(texts)):
            counts.update(self._tokens(t))
        counts.pop(PAD, None)
        counts.pop(OOV, None)
        ordered = sorted(counts.items(), key=lambda kv: -kv[1])     # stable: first-seen ties
        limit = None if self.max_tokens is None else self.max_tokens - 2
        self._set([tok for tok, _ in ordered[:limit]])
        return self

    def _set(self, tokens):
        self._vocab = [PAD, OOV] + list(tokens)
        self._index = {tok: i for i, tok in enumerate(self._vocab)}

    def set_vocabulary(self, vocabulary):
        """Use ``vocabulary``: tokens in index order (a leading "" and "[UNK]" are optional), or
        as in Keras the path of a text file (UTF-8) with one token per line."""
        if isinstance(vocabulary, (str, os.PathLike)):
            vocabulary = read_vocabulary_file(repr(self), vocabulary)
        vocab = [str(v) for v in vocabulary]
        if vocab[:2] == [PAD, OOV]:
            vocab = vocab[2:]
        if len(set(vocab)) != len(vocab) or PAD in vocab or OOV in vocab:
            raise ValueError(f"{self!r}: the vocabulary has repeated tokens (or '' / '[UNK]' "
                             f"elsewhere than at 0 and 1)")
        if self.max_tokens is not None and len(vocab) + 2 > self.max_tokens:
            raise ValueError(f"{self!r}: {len(vocab) + 2} tokens with padding and OOV exceed "
                             f"max_tokens={self.max_tokens}")
        self._set(vocab)

    def get_vocabulary(self):
        """The tokens in index order: "", "[UNK]", then the learned ones."""
        return list(self._vocab)

    def vocabulary_size(self):
        return len(self._vocab)

    # -- calling --------------------------------------------------------------------------------------
    def compute(self, inputs):
        return self.vectorize(inputs)

    def vectorize(self, texts):
        """The ids (or multi-hot / count rows) of a batch of texts, as a NumPy array."""
        texts = self._texts(texts)
        ids = [[self._index.get(tok, 1) for tok in self._tokens(t)] for t in texts]
        if self.output_mode != "int":
            out = np.zeros((len(ids), len(self._vocab)), np.float32)
            for r, row in enumerate(ids):
                np.add.at(out[r], row, 1.0)
            if self.output_mode == "multi_hot":
                out = (out > 0).astype(np.float32)
            return out
        # at least one step: a batch of empty texts gives the all-padding rows they get in a
        # mixed batch, not (batch, 0), so the answer does not depend on the batch size
        length = self.output_sequence_length or max(max((len(r) for r in ids), default=0), 1)
        out = np.zeros((len(ids), length), np.int64)
        for r, row in enumerate(ids):
            row = row[:length]
            out[r, :len(row)] = row
        return out

    def check_input_shape(self, shape):
        if shape not in ((), (1,)):
            raise ValueError(f"{self!r}: expects texts of shape (batch,) or (batch, 1), got "
                             f"{(None,) + shape}")

    def compute_output_shape(self, input_shape):
        if self.output_mode != "int":
            return (len(self._vocab),)
        return (self.output_sequence_length,)

    def output_dtype(self):
        return np.dtype(np.int64 if self.output_mode == "int" else np.float32)

    def get_config(self):
        for what in ("standardize", "split"):
            if callable(getattr(self, what)):
                raise TypeError(f"{self!r}: a {what} function cannot be saved in a config; "
                                f"use one of the named options")
        config = {"name": self.name, "max_tokens": self.max_tokens,
                  "standardize": self.standardize, "split": self.split,
                  "output_mode": self.output_mode,
                  "output_sequence_length": self.output_sequence_length,
                  "vocabulary": self._vocab[2:]}
        if not self.trainable:
            config["trainable"] = False
        return config


def _register():
    from ..layers import register
    register(TextVectorization)


_register()
