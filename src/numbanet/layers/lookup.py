"""Keras' lookup preprocessing layers for structured data: StringLookup, IntegerLookup, Hashing
and Discretization, and the host-side machinery they share with TextVectorization.

They run on the host with NumPy (as Keras runs them with TensorFlow on the CPU): no weights, no
gradient. Called on arrays they return NumPy arrays; in a functional model they follow an
``nb.Input`` (``dtype="string"`` for strings, an integer dtype for ids) and their vocabulary or
boundaries are saved in the model's config. Their encoded outputs ("one_hot", "multi_hot",
"count", "tf_idf") are float32 rows for a Dense or a Concatenate.
"""
import hashlib
import math
import os
from collections import Counter

import numpy as np

from .. import validation as V
from .base import Layer, fmt_shape

__all__ = ["StringLookup", "IntegerLookup", "Hashing", "Discretization"]

ENCODED = ("one_hot", "multi_hot", "count")


# -- shared by the host-side layers --------------------------------------------------------------
class HostLayer(Layer):
    """A preprocessing layer computed on the host with NumPy (``compute``): called on arrays it
    returns a NumPy array; in a model its input stays as it arrives (texts on the host, ids
    copied back from a device) and it passes no gradient back (Keras' preprocessing layers
    are not differentiable)."""

    def __call__(self, inputs, *args, **kwargs):
        from .. import functional
        if functional.is_symbolic(inputs):
            return functional.call_symbolic(self, inputs, args, kwargs)
        return self.compute(inputs)

    def compute(self, inputs):
        raise NotImplementedError

    def build(self, input_shape):
        shape = tuple(input_shape)
        self.check_input_shape(shape)
        self.input_shape = shape
        self.output_shape = self.compute_output_shape(shape)
        self.built = True

    def check_input_shape(self, shape):
        """Refuse a per-sample input shape the layer does not take."""

    def output_dtypes(self, n):
        return [self.output_dtype()] * n

    def output_dtype(self):
        return np.dtype(np.float32)

    def check_input(self, x, index=0):
        return x

    def _forward(self, x, training):
        host = x if isinstance(x, np.ndarray) else self.backend.to_numpy(x)
        return self.backend.asarray(self.compute(host)), None

    def _backward(self, ctx, grad_out, sink, need):
        return None


def read_vocabulary_file(owner, path):
    """The lines of a vocabulary file (UTF-8, one token per line, without line endings)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
    except OSError as e:
        raise ValueError(f"{owner}: vocabulary given as a string is the path of a file with "
                         f"one token per line; cannot read {os.fspath(path)!r}: "
                         f"{e.strerror or e}") from None
    if lines and lines[-1] == "":
        lines.pop()                                  # the last line's newline
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def encode_ids(ids, mode, depth, weights=None):
    """Integer ids (batch,) or (batch, k) -> float32 rows of ``depth`` (Keras'
    encode_categorical_inputs): "one_hot" one row per id ((batch,) and (batch, 1) ->
    (batch, depth); (batch, k) -> (batch, k, depth)); "multi_hot" / "count" one row per sample
    (a (batch,) input is one id per sample, as in CategoryEncoding), whether / how often each id
    occurs; ``weights`` (depth,) multiply the counts (tf_idf). Ids outside [0, depth) (a dropped
    mask token) count nowhere."""
    ids = np.asarray(ids, dtype=np.int64)
    if mode == "one_hot":
        squeeze = ids.ndim == 1 or (ids.ndim == 2 and ids.shape[1] == 1)
        flat = ids.reshape(-1)
        out = np.zeros((flat.size, depth), np.float32)
        ok = (flat >= 0) & (flat < depth)
        out[np.nonzero(ok)[0], flat[ok]] = 1.0
        return out.reshape((ids.shape[0], depth) if squeeze else ids.shape + (depth,))
    rows = ids.reshape(ids.shape[0], -1)
    out = np.zeros((rows.shape[0], depth), np.float32)
    r, c = np.nonzero((rows >= 0) & (rows < depth))
    np.add.at(out, (r, rows[r, c]), 1.0)
    if mode == "multi_hot":
        out = (out > 0).astype(np.float32)
    if weights is not None:
        out = (out * np.asarray(weights, np.float32)).astype(np.float32)
    return out


def encoded_shape(input_shape, mode, depth):
    """The per-sample output shape of ``encode_ids`` for a per-sample input shape."""
    if mode == "int":
        return tuple(input_shape)
    if mode == "one_hot" and input_shape and input_shape[-1] != 1:
        return tuple(input_shape) + (depth,)
    return (depth,)


def _check_mode_rank(layer, shape, mode):
    """Per-sample ``shape`` (batch axis excluded): any rank for "int", else () or (k,)."""
    if mode != "int" and len(shape) > 1:
        raise ValueError(f"{layer!r}: output_mode={mode!r} takes inputs of shape (batch,) or "
                         f"(batch, k), got {fmt_shape(shape)}")


def _batch(layer, values, dtype=None):
    """A call's input as a NumPy array with a batch axis."""
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{layer!r}: expected a batch of values (a list or an array), got one "
                        f"string; wrap it in a list")
    a = values.numpy() if hasattr(values, "numpy") and not isinstance(values, np.ndarray) \
        else values
    a = np.asarray(a, dtype=dtype)
    if a.ndim < 1:
        raise ValueError(f"{layer!r}: expected a batch of values (a leading batch axis), got a "
                         f"0-d input {values!r}")
    return a


def _salt_pair(owner, salt):
    """Keras' salt: one int (used twice) or a pair of ints -> [a, b], or None."""
    if salt is None:
        return None
    pair = list(salt) if isinstance(salt, (tuple, list)) else [salt, salt]
    if len(pair) != 2 or not all(V.is_int(s) and s >= 0 for s in pair):
        raise ValueError(f"{owner}: salt must be a non-negative integer or a pair of them, got "
                         f"{salt!r}")
    return [int(s) for s in pair]


def stable_hash64(value, salt=None):
    """A 64-bit hash of ``value`` that is the same on every run and machine: BLAKE2b (hashlib)
    with an 8-byte digest, read little-endian, over the value's bytes (str: UTF-8; an integer:
    its decimal digits, as Keras hashes ``tf.as_string`` of it), keyed by the two salt integers
    (16 bytes, little-endian) when a salt is given. Keras uses TensorFlow's FarmHash64 (or
    SipHash64 with a salt), which numbanet does not reproduce: the bins differ from Keras'."""
    if isinstance(value, str):
        data = value.encode("utf-8")
    elif isinstance(value, bytes):
        data = value
    else:
        data = str(int(value)).encode("ascii")
    key = b"" if salt is None else b"".join(int(s).to_bytes(8, "little") for s in salt)
    return int.from_bytes(hashlib.blake2b(data, digest_size=8, key=key).digest(), "little")


# -- StringLookup and IntegerLookup ---------------------------------------------------------
class _IndexLookup(HostLayer):
    """The vocabulary lookup behind StringLookup and IntegerLookup (Keras' IndexLookup).

    Indices: with ``output_mode="int"`` the mask token (when set) is 0, then ``num_oov_indices``
    OOV indices, then the vocabulary; in the encoded modes the OOV indices come first and mask
    tokens are dropped. An OOV value goes to the one OOV index, or with several to
    ``oov_start + bucket(value)``; with ``num_oov_indices=0`` it is an error. ``adapt`` counts
    the values: the vocabulary is the most frequent ones, ties broken by decreasing value
    (Keras' order), at most ``max_tokens`` entries with the special ones."""

    MODES = ("int", "one_hot", "multi_hot", "count", "tf_idf")
    _config_skip = ("vocabulary_dtype",)

    def __init__(self, max_tokens=None, num_oov_indices=1, mask_token=None, oov_token=None,
                 vocabulary=None, idf_weights=None, invert=False, output_mode="int",
                 pad_to_max_tokens=False, sparse=False, salt=None, name=None, **kwargs):
        kwargs.pop("dtype", None)
        kwargs.pop("vocabulary_size", None)             # Keras' config key, derived here
        # Keras' hidden argument: False for a vocabulary that adapt() learned (in a config)
        has_input_vocabulary = kwargs.pop("has_input_vocabulary", vocabulary is not None)
        super().__init__(name=name, **kwargs)
        where = f"{type(self).__name__} {self.name!r}"
        if max_tokens is not None:
            max_tokens = V.Integer(2)(max_tokens, "max_tokens", where)
        self.max_tokens = max_tokens
        self.num_oov_indices = V.Integer(0)(num_oov_indices, "num_oov_indices", where)
        if output_mode == "binary":                     # Keras' former names
            output_mode = "multi_hot"
        if output_mode == "tf-idf":
            output_mode = "tf_idf"
        self.output_mode = V.OneOf(*self.MODES)(output_mode, "output_mode", where)
        self.invert = V.FLAG(invert, "invert", where)
        self.pad_to_max_tokens = V.FLAG(pad_to_max_tokens, "pad_to_max_tokens", where)
        if V.FLAG(sparse, "sparse", where):
            raise ValueError(f"{where}: sparse=True (a tf.SparseTensor output) is not supported; "
                             f"got sparse={sparse!r}")
        self.sparse = False
        if self.invert and self.output_mode != "int":
            raise ValueError(f"{where}: invert=True needs output_mode='int', got "
                             f"output_mode={self.output_mode!r}")
        if self.pad_to_max_tokens and max_tokens is None:
            raise ValueError(f"{where}: pad_to_max_tokens=True needs max_tokens, got "
                             f"max_tokens=None")
        if idf_weights is not None and self.output_mode != "tf_idf":
            raise ValueError(f"{where}: idf_weights is for output_mode='tf_idf', got "
                             f"output_mode={self.output_mode!r}")
        if self.output_mode == "tf_idf" and vocabulary is not None and idf_weights is None:
            raise ValueError(f"{where}: with output_mode='tf_idf', a vocabulary= needs "
                             f"idf_weights= too")
        self.mask_token = None if mask_token is None else self._token(mask_token, "mask_token")
        self.oov_token = None if oov_token is None else self._token(oov_token, "oov_token")
        self.salt = _salt_pair(where, salt)
        self._tokens, self._index, self._idf = [], {}, None
        if vocabulary is not None:
            self.set_vocabulary(vocabulary, idf_weights)
        self._has_input_vocabulary = bool(has_input_vocabulary)

    # -- per value type (the subclasses) ---------------------------------------------------------
    def _token(self, value, what):
        raise NotImplementedError

    def _from_line(self, line):
        """A vocabulary file's line as a value."""
        return line

    def _values(self, values):
        """A call's or adapt's values as a NumPy array of keys."""
        raise NotImplementedError

    def _oov_buckets(self, values):
        """The OOV bucket in [0, num_oov_indices) of each value (several OOV indices)."""
        return np.array([stable_hash64(v, self.salt) % self.num_oov_indices for v in values],
                        np.int64)

    # -- indices -----------------------------------------------------------------------------------
    def _oov_start(self):
        return 1 if self.mask_token is not None and self.output_mode == "int" else 0

    def _token_start(self):
        return self._oov_start() + self.num_oov_indices

    def vocabulary_size(self):
        """The number of indices: the mask and OOV ones and the vocabulary's."""
        return self._token_start() + len(self._tokens)

    def get_vocabulary(self, include_special_tokens=True):
        """The values in index order (with the mask and OOV tokens unless
        ``include_special_tokens=False``): the value at position i is the one index i stands
        for."""
        if not include_special_tokens:
            return list(self._tokens)
        return [self.mask_token] * self._oov_start() + \
            [self.oov_token] * self.num_oov_indices + list(self._tokens)

    def _depth(self):
        return self.max_tokens if self.pad_to_max_tokens else self.vocabulary_size()

    # -- the vocabulary ----------------------------------------------------------------------------
    def set_vocabulary(self, vocabulary, idf_weights=None):
        """Use ``vocabulary`` (values in index order, optionally led by exactly the mask and OOV
        tokens; or the path of a UTF-8 file with one per line) and, for "tf_idf",
        ``idf_weights`` of the same length (the OOV indices get their mean when the vocabulary
        leaves the special tokens out)."""
        where = repr(self)
        if self.output_mode == "tf_idf" and idf_weights is None:
            raise ValueError(f"{where}: idf_weights must be given with the vocabulary when "
                             f"output_mode='tf_idf'")
        if self.output_mode != "tf_idf" and idf_weights is not None:
            raise ValueError(f"{where}: idf_weights is for output_mode='tf_idf', got "
                             f"output_mode={self.output_mode!r}")
        if isinstance(vocabulary, (str, os.PathLike)):
            if self.output_mode == "tf_idf":
                raise ValueError(f"{where}: output_mode='tf_idf' does not take a vocabulary "
                                 f"file")
            vocabulary = [self._from_line(line) for line in
                          read_vocabulary_file(where, vocabulary)]
        if hasattr(vocabulary, "numpy") and not isinstance(vocabulary, np.ndarray):
            vocabulary = vocabulary.numpy()
        vocab = [self._token(v, "vocabulary") for v in np.asarray(vocabulary, dtype=object)
                 .reshape(-1)] if np.ndim(vocabulary) <= 1 else None
        if vocab is None:
            raise ValueError(f"{where}: vocabulary must be 1-D, got shape "
                             f"{np.shape(vocabulary)}")
        if not vocab:
            raise ValueError(f"{where}: cannot set an empty vocabulary, got {vocabulary!r}")
        start = self._token_start()
        special = [self.mask_token] * self._oov_start() + [self.oov_token] * self.num_oov_indices
        found_special = bool(special) and vocab[:start] == special
        tokens = vocab[start:] if found_special else vocab
        repeated = [t for t, n in Counter(tokens).items() if n > 1]
        if repeated:
            raise ValueError(f"{where}: the vocabulary has repeated values {repeated}; give "
                             f"each once")
        for what, tok, check in (("mask_token", self.mask_token, True),
                                 ("oov_token", self.oov_token, self.invert)):
            if check and tok is not None and tok in tokens:
                raise ValueError(f"{where}: {what}={tok!r} found inside the vocabulary; leave "
                                 f"the mask and OOV tokens out, or put them only at the start "
                                 f"in this order: {special}")
        size = start + len(tokens)
        if self.max_tokens is not None and size > self.max_tokens:
            raise ValueError(f"{where}: a vocabulary of {size} entries (with the mask and OOV "
                             f"ones) exceeds max_tokens={self.max_tokens}")
        idf = None
        if self.output_mode == "tf_idf":
            w = np.asarray(idf_weights, dtype=np.float64)
            if w.ndim != 1 or len(w) != len(vocab):
                raise ValueError(f"{where}: idf_weights must be 1-D with one weight per "
                                 f"vocabulary entry ({len(vocab)}), got shape {w.shape}")
            idf = w if found_special else np.concatenate([np.full(start, w.mean()), w])
        self._set(tokens, idf)

    def _set(self, tokens, idf=None):
        self._tokens = list(tokens)
        start = self._token_start()
        self._index = {t: start + i for i, t in enumerate(self._tokens)}
        if idf is not None and self.pad_to_max_tokens:
            idf = np.concatenate([idf, np.zeros(self.max_tokens - len(idf))])
        self._idf = None if idf is None else np.asarray(idf, np.float32)

    def adapt(self, data, steps=None):
        """Learn the vocabulary from ``data``: an array or list (of shape (n,): n one-value
        documents, or (n, k)), or an iterable of such batches (``steps`` of them at most). The
        values by decreasing count, ties by decreasing value; for "tf_idf" also the weights
        ``log(1 + documents / (1 + documents containing the value))``, their mean for the OOV
        indices."""
        if self._has_input_vocabulary:
            raise ValueError(f"{self!r}: cannot adapt a layer given vocabulary=; it was built "
                             f"with a fixed vocabulary")
        if isinstance(data, (str, bytes)):
            raise TypeError(f"{self!r}: adapt() takes a batch of values (a list or an array), "
                            f"got one string; wrap it in a list")
        if isinstance(data, (list, tuple, np.ndarray)) or hasattr(data, "numpy"):
            a = self._values(data)
            batches = [a.reshape(-1, 1) if a.ndim <= 1 else a]
        else:
            batches = (self._values(b) for i, b in enumerate(data)
                       if steps is None or i < steps)
        counts, docs, n_docs = Counter(), Counter(), 0
        for a in batches:
            rows = a.reshape(1, -1) if a.ndim <= 1 else a.reshape(a.shape[0], -1)
            counts.update(rows.reshape(-1).tolist())
            if self.output_mode == "tf_idf":
                for row in rows:
                    docs.update(set(row.tolist()))
                n_docs += rows.shape[0]
        for special in (self.mask_token, self.oov_token):
            if special is not None:
                counts.pop(special, None)
        if not counts:
            return
        ordered = [t for t, _ in sorted(counts.items(), key=lambda kv: (kv[1], kv[0]),
                                        reverse=True)]
        if self.max_tokens is not None:
            ordered = ordered[:self.max_tokens - self._token_start()]
        idf = None
        if self.output_mode == "tf_idf":
            w = np.array([math.log(1 + n_docs / (1 + docs[t])) for t in ordered])
            idf = np.concatenate([np.full(self._token_start(), w.mean()), w])
        self._set(ordered, idf)

    # -- calling -----------------------------------------------------------------------------------
    def compute(self, inputs):
        if self.invert:
            return self._invert(inputs)
        values = self._values(inputs)
        if values.ndim < 1:
            raise ValueError(f"{self!r}: expected a batch of values, got a 0-d input")
        _check_mode_rank(self, values.shape[1:], self.output_mode)
        if self.output_mode != "int" and not self._tokens:
            raise RuntimeError(f"{self!r}: output_mode={self.output_mode!r} needs the "
                               f"vocabulary first; pass vocabulary= or call adapt()")
        flat = values.reshape(-1).tolist()
        ids = np.fromiter((self._index.get(v, -1) for v in flat), np.int64, len(flat))
        if self.mask_token is not None:
            masked = np.fromiter((v == self.mask_token for v in flat), bool, len(flat))
        else:
            masked = np.zeros(len(flat), bool)
        oov = (ids < 0) & ~masked
        if oov.any():
            if self.num_oov_indices == 0:
                bad = sorted({flat[i] for i in np.nonzero(oov)[0]}, key=repr)[:5]
                raise ValueError(f"{self!r}: with num_oov_indices=0 every value must be in the "
                                 f"vocabulary; got out-of-vocabulary values {bad}; set "
                                 f"num_oov_indices=1")
            where = np.nonzero(oov)[0]
            if self.num_oov_indices == 1:
                ids[where] = self._oov_start()
            else:
                ids[where] = self._oov_start() + self._oov_buckets([flat[i] for i in where])
        # a mask token is index 0 in "int" mode, and dropped from the encodings
        ids[masked] = 0 if self.output_mode == "int" else -1
        ids = ids.reshape(values.shape)
        if self.output_mode == "int":
            return ids
        mode = "count" if self.output_mode == "tf_idf" else self.output_mode
        return encode_ids(ids, mode, self._depth(),
                          self._idf if self.output_mode == "tf_idf" else None)

    def _invert(self, inputs):
        ids = _batch(self, inputs)
        if ids.dtype.kind not in "iu":
            raise TypeError(f"{self!r}: with invert=True the inputs are integer indices, got "
                            f"dtype {ids.dtype}")
        vocab = self.get_vocabulary()
        table = np.empty(len(vocab), dtype=self._value_dtype())
        table[:] = vocab
        ok = (ids >= 0) & (ids < len(vocab))
        out = np.empty(ids.shape, dtype=self._value_dtype())
        out[...] = self.oov_token
        out[ok] = table[ids[ok]]
        return out

    def _value_dtype(self):
        raise NotImplementedError

    def compute_output_shape(self, input_shape):
        return encoded_shape(input_shape, self.output_mode, self._depth())

    def check_input_shape(self, shape):
        _check_mode_rank(self, shape, self.output_mode)
        if self.invert and self._value_dtype() is object:
            raise ValueError(f"{self!r}: with invert=True it gives strings, which a model cannot "
                             f"pass on; call it on the model's predicted ids instead")
        if self.output_mode != "int" and not self._tokens and not self.pad_to_max_tokens:
            raise RuntimeError(f"{self!r}: output_mode={self.output_mode!r} needs the "
                               f"vocabulary before it is placed in a model (its output width); "
                               f"pass vocabulary= or call adapt() first")

    def output_dtype(self):
        if self.invert:
            return np.dtype(self._value_dtype())
        return np.dtype(np.int64 if self.output_mode == "int" else np.float32)

    def get_config(self):
        config = {"name": self.name, "max_tokens": self.max_tokens,
                  "num_oov_indices": self.num_oov_indices, "mask_token": self.mask_token,
                  "oov_token": self.oov_token, "invert": self.invert,
                  "output_mode": self.output_mode, "pad_to_max_tokens": self.pad_to_max_tokens,
                  "sparse": False, "salt": self.salt,
                  "vocabulary": self.get_vocabulary() if self._tokens else None,
                  "idf_weights": None, "has_input_vocabulary": self._has_input_vocabulary}
        if self._idf is not None and self._tokens:
            config["idf_weights"] = [float(w) for w in self._idf[:self.vocabulary_size()]]
        if not self.trainable:
            config["trainable"] = False
        return config


class StringLookup(_IndexLookup):
    """Strings to vocabulary indices (Keras' StringLookup): ``output_mode="int"`` gives int64
    indices of the input's shape; "one_hot", "multi_hot", "count" or "tf_idf" float32 rows of
    ``vocabulary_size()`` (``max_tokens`` with ``pad_to_max_tokens``). ``invert=True`` maps
    indices back to strings (the OOV ones to ``oov_token``, 0 to ``mask_token`` when set); it
    returns Python str (Keras returns bytes). Several OOV indices: an OOV string goes to bucket
    ``stable_hash64(value, salt) % num_oov_indices`` (BLAKE2b, not Keras' FarmHash64/SipHash64,
    so the buckets differ from Keras'). Inputs: str or bytes (decoded with ``encoding``)."""

    input_kind = "string"

    def __init__(self, max_tokens=None, num_oov_indices=1, mask_token=None, oov_token="[UNK]",
                 vocabulary=None, idf_weights=None, invert=False, output_mode="int",
                 pad_to_max_tokens=False, sparse=False, encoding="utf-8", name=None, salt=None,
                 **kwargs):
        self.encoding = V.Text()(encoding, "encoding", f"StringLookup {name!r}")
        super().__init__(max_tokens=max_tokens, num_oov_indices=num_oov_indices,
                         mask_token=mask_token, oov_token=oov_token, vocabulary=vocabulary,
                         idf_weights=idf_weights, invert=invert, output_mode=output_mode,
                         pad_to_max_tokens=pad_to_max_tokens, sparse=sparse, name=name,
                         salt=salt, **kwargs)

    def _token(self, value, what):
        if isinstance(value, bytes):
            value = value.decode(getattr(self, "encoding", "utf-8"))
        if not isinstance(value, str):
            raise TypeError(f"StringLookup {self.name!r}: {what} must hold strings, got "
                            f"{value!r} ({type(value).__name__})")
        return value

    def _values(self, values):
        a = _batch(self, values, dtype=object)
        if a.size and a.dtype.kind == "O":
            flat = a.reshape(-1)
            for i, v in enumerate(flat):
                if not isinstance(v, str):
                    if isinstance(v, bytes):
                        flat[i] = v.decode(self.encoding)
                    else:
                        raise TypeError(f"{self!r}: expected strings, got {v!r} "
                                        f"({type(v).__name__}) at flat position {i}")
            a = flat.reshape(a.shape)
        return a

    def _value_dtype(self):
        return object

    def get_config(self):
        return dict(super().get_config(), encoding=self.encoding)


class IntegerLookup(_IndexLookup):
    """Integers to vocabulary indices (Keras' IntegerLookup), as StringLookup for int64 values:
    ``oov_token=-1`` (what ``invert=True`` gives for OOV indices), ``mask_token`` an int or
    None. Several OOV indices: ``oov_method="floormod"`` (Keras' default) puts an OOV value in
    bucket ``value mod num_oov_indices``, as Keras does; ``"farmhash"`` hashes its decimal
    string with ``stable_hash64`` (BLAKE2b, not Keras' FarmHash64: other buckets, the same
    purpose)."""

    input_kind = "int"

    def __init__(self, max_tokens=None, num_oov_indices=1, mask_token=None, oov_token=-1,
                 vocabulary=None, vocabulary_dtype="int64", idf_weights=None, invert=False,
                 output_mode="int", sparse=False, pad_to_max_tokens=False,
                 oov_method="floormod", salt=None, name=None, **kwargs):
        where = f"IntegerLookup {name!r}"
        if vocabulary_dtype != "int64":
            raise ValueError(f"{where}: only vocabulary_dtype='int64' is supported, got "
                             f"vocabulary_dtype={vocabulary_dtype!r}")
        self.vocabulary_dtype = "int64"
        self.oov_method = V.OneOf("floormod", "farmhash")(oov_method, "oov_method", where)
        if salt is not None and oov_method != "farmhash":
            raise ValueError(f"{where}: salt is for oov_method='farmhash', got "
                             f"oov_method={oov_method!r}")
        super().__init__(max_tokens=max_tokens, num_oov_indices=num_oov_indices,
                         mask_token=mask_token, oov_token=oov_token, vocabulary=vocabulary,
                         idf_weights=idf_weights, invert=invert, output_mode=output_mode,
                         pad_to_max_tokens=pad_to_max_tokens, sparse=sparse, name=name,
                         salt=salt, **kwargs)

    def _token(self, value, what):
        if isinstance(value, (bool, np.bool_)) or not (
                V.is_int(value) or (isinstance(value, (float, np.floating)) and
                                    float(value).is_integer())):
            raise TypeError(f"IntegerLookup {self.name!r}: {what} must hold integers, got "
                            f"{value!r} ({type(value).__name__})")
        return int(value)

    def _from_line(self, line):
        try:
            return int(line)
        except ValueError:
            raise ValueError(f"{self!r}: a vocabulary file holds one integer per line, got "
                             f"{line!r}") from None

    def _values(self, values):
        a = _batch(self, values)
        if a.dtype.kind == "f" and np.all(np.isfinite(a)) and np.all(a == np.floor(a)):
            a = a.astype(np.int64)
        if a.dtype.kind not in "iu":
            raise TypeError(f"{self!r}: expected integer values, got dtype {a.dtype}")
        return a.astype(np.int64)

    def _oov_buckets(self, values):
        if self.oov_method == "floormod":
            return np.mod(np.asarray(values, np.int64), self.num_oov_indices)
        return super()._oov_buckets(values)

    def _value_dtype(self):
        return np.int64

    def get_config(self):
        return dict(super().get_config(), oov_method=self.oov_method)


# -- Hashing --------------------------------------------------------------------------------------
class Hashing(HostLayer):
    """Values (strings, integers; floats are truncated to integers first, as in Keras) to
    ``num_bins`` hash bins (Keras' Hashing). The hash is ``stable_hash64`` (BLAKE2b from
    hashlib over the value's UTF-8 bytes or decimal digits, keyed by ``salt``): the same on
    every run and machine, unlike Python's salted ``hash()``, but not Keras' FarmHash64 /
    SipHash64, so the bins differ from Keras'. With ``mask_value`` set, that value is bin 0 and
    the others hash into 1..num_bins-1. ``output_mode``: "int" (int64 bins of the input's
    shape), "one_hot", "multi_hot" or "count" (float32 rows of ``num_bins``)."""

    input_kind = "string"

    def __init__(self, num_bins, mask_value=None, salt=None, output_mode="int", sparse=False,
                 name=None, **kwargs):
        kwargs.pop("dtype", None)
        super().__init__(name=name, **kwargs)
        where = f"Hashing {self.name!r}"
        self.num_bins = V.Integer(1)(num_bins, "num_bins", where)
        self.output_mode = V.OneOf("int", *ENCODED)(output_mode, "output_mode", where)
        if V.FLAG(sparse, "sparse", where):
            raise ValueError(f"{where}: sparse=True (a tf.SparseTensor output) is not supported; "
                             f"got sparse={sparse!r}")
        self.sparse = False
        self.mask_value = mask_value
        self.salt = _salt_pair(where, salt)

    def compute(self, inputs):
        a = _batch(self, inputs)
        _check_mode_rank(self, a.shape[1:], self.output_mode)
        flat = a.reshape(-1)
        bins = self.num_bins
        mask = None
        if self.mask_value is not None and bins > 1:
            bins -= 1
            mask = np.array([v == self.mask_value for v in flat.tolist()], bool)
        if a.dtype.kind == "f":
            flat = flat.astype(np.int64)
        elif a.dtype.kind not in "iuOUS":
            raise TypeError(f"{self!r}: expected strings or numbers, got dtype {a.dtype}")
        cache = {}
        out = np.empty(flat.size, np.int64)
        for i, v in enumerate(flat.tolist()):
            if isinstance(v, float):
                v = int(v)
            if v not in cache:
                if not isinstance(v, (str, bytes, int)):
                    raise TypeError(f"{self!r}: expected strings or integers, got {v!r} "
                                    f"({type(v).__name__})")
                cache[v] = stable_hash64(v, self.salt) % bins
            out[i] = cache[v]
        if mask is not None:
            out = np.where(mask, 0, out + 1)
        out = out.reshape(a.shape)
        if self.output_mode == "int":
            return out
        return encode_ids(out, self.output_mode, self.num_bins)

    def check_input_shape(self, shape):
        _check_mode_rank(self, shape, self.output_mode)

    def compute_output_shape(self, input_shape):
        return encoded_shape(input_shape, self.output_mode, self.num_bins)

    def output_dtype(self):
        return np.dtype(np.int64 if self.output_mode == "int" else np.float32)

    def get_config(self):
        mask = self.mask_value
        if isinstance(mask, np.generic):
            mask = mask.item()
        config = {"name": self.name, "num_bins": self.num_bins, "mask_value": mask,
                  "salt": self.salt, "output_mode": self.output_mode, "sparse": False}
        if not self.trainable:
            config["trainable"] = False
        return config


# -- Discretization -------------------------------------------------------------------------------
class Discretization(HostLayer):
    """Real values to the index of their bin (Keras' Discretization): ``bin_boundaries``
    [b0, b1, ...] make the bins (-inf, b0), [b0, b1), ..., [b_last, inf), index = the number of
    boundaries <= the value (``np.digitize``). Or ``num_bins`` and ``adapt(data)``: the
    boundaries are the data's ``num_bins``-quantiles, computed exactly (see ``adapt``); Keras'
    quantile sketch gives the same for up to 1/``epsilon`` values and approximates them within
    ``epsilon`` beyond, so ``epsilon`` is kept for its config only. The input is cast to float32
    first, as in Keras.
    ``output_mode``: "int" (int32 indices, Keras' dtype, of the input's shape), "one_hot",
    "multi_hot" or "count" (float32 rows of len(bin_boundaries) + 1)."""

    def __init__(self, bin_boundaries=None, num_bins=None, epsilon=0.01, output_mode="int",
                 sparse=False, name=None, **kwargs):
        kwargs.pop("dtype", None)
        super().__init__(name=name, **kwargs)
        where = f"Discretization {self.name!r}"
        self.output_mode = V.OneOf("int", *ENCODED)(output_mode, "output_mode", where)
        if V.FLAG(sparse, "sparse", where):
            raise ValueError(f"{where}: sparse=True (a tf.SparseTensor output) is not supported; "
                             f"got sparse={sparse!r}")
        self.sparse = False
        if num_bins is not None:
            num_bins = V.Integer(1)(num_bins, "num_bins", where)
        if num_bins is not None and bin_boundaries is not None:
            raise ValueError(f"{where}: give num_bins (and adapt()) or bin_boundaries, not both; "
                             f"got num_bins={num_bins!r} and bin_boundaries={bin_boundaries!r}")
        if num_bins is None and bin_boundaries is None:
            raise ValueError(f"{where}: give num_bins (and adapt()) or bin_boundaries, got "
                             f"neither")
        if bin_boundaries is not None:
            b = np.asarray(bin_boundaries, dtype=float)
            if b.ndim != 1 or not np.all(np.isfinite(b)) or np.any(np.diff(b) < 0):
                raise ValueError(f"{where}: bin_boundaries must be a list of finite numbers in "
                                 f"increasing order, got {bin_boundaries!r}")
            bin_boundaries = b.tolist()
        self.epsilon = V.Number(low=0, high=1, low_open=True)(epsilon, "epsilon", where)
        self.bin_boundaries, self.num_bins = bin_boundaries, num_bins

    def adapt(self, data, steps=None):
        """Set the boundaries to the ``num_bins``-quantiles of ``data`` (an array, or an
        iterable of batches, ``steps`` of them at most): the value at cumulative fraction
        k/num_bins of the sorted float32 values, the i-th smallest of n standing at (i+1)/n and
        linear in between (Hyndman and Fan's type 4, NumPy's "interpolated_inverted_cdf")."""
        if self.num_bins is None:
            raise ValueError(f"{self!r}: adapt() needs num_bins; this layer was given "
                             f"bin_boundaries")
        if isinstance(data, np.ndarray) or hasattr(data, "numpy") or not hasattr(data,
                                                                                 "__iter__"):
            batches = [data]
        else:
            batches = (b for i, b in enumerate(data) if steps is None or i < steps)
        parts = []
        for b in batches:
            a = np.asarray(b.numpy() if hasattr(b, "numpy") else b)
            if a.dtype.kind not in "fiub" or a.size == 0:
                raise ValueError(f"{self!r}: adapt() takes numbers, got an array of shape "
                                 f"{a.shape} and dtype {a.dtype}")
            parts.append(a.astype(np.float32).reshape(-1))
        if not parts:
            raise ValueError(f"{self!r}: adapt() got no data")
        fractions = np.arange(1, self.num_bins) / self.num_bins
        self.bin_boundaries = np.quantile(np.concatenate(parts).astype(np.float64), fractions,
                                          method="interpolated_inverted_cdf").tolist()

    def _depth(self):
        return len(self.bin_boundaries) + 1 if self.bin_boundaries is not None else \
            self.num_bins

    def compute(self, inputs):
        if self.bin_boundaries is None:
            raise ValueError(f"{self!r}: give bin_boundaries= or call adapt() before calling "
                             f"the layer")
        a = _batch(self, inputs)
        if a.dtype.kind not in "fiub":
            raise TypeError(f"{self!r}: expected numbers, got dtype {a.dtype}")
        _check_mode_rank(self, a.shape[1:], self.output_mode)
        ids = np.digitize(a.astype(np.float32), np.asarray(self.bin_boundaries, np.float32))
        if self.output_mode == "int":
            return ids.astype(np.int32)
        return encode_ids(ids, self.output_mode, self._depth())

    def check_input_shape(self, shape):
        _check_mode_rank(self, shape, self.output_mode)

    def compute_output_shape(self, input_shape):
        return encoded_shape(input_shape, self.output_mode, self._depth())

    def output_dtype(self):
        return np.dtype(np.int32 if self.output_mode == "int" else np.float32)

    def get_config(self):
        config = {"name": self.name, "bin_boundaries": self.bin_boundaries,
                  "num_bins": self.num_bins, "epsilon": self.epsilon,
                  "output_mode": self.output_mode, "sparse": False}
        if not self.trainable:
            config["trainable"] = False
        return config

    @classmethod
    def from_config(cls, config):
        """An adapted layer has both num_bins and bin_boundaries (Keras sets the boundaries
        after construction)."""
        config = dict(config)
        if config.get("bin_boundaries") is not None and config.get("num_bins") is not None:
            boundaries = config.pop("bin_boundaries")
            layer = cls(**config)
            layer.bin_boundaries = list(boundaries)
            return layer
        return cls(**config)
