"""Attention: Attention (Luong) and AdditiveAttention (Bahdanau), written with ``nb.ops``;
MultiHeadAttention, token and position embeddings, and the Transformer's encoder and
decoder blocks (keras_hub's layers of those names).

MultiHeadAttention runs all heads and the whole batch at once: the three input projections are
dense kernels over all positions, the scores Q K^T one batched matmul over (batch, head) (each
head reads its columns of the projections in place, no split), the masked softmax with dropout
one fused kernel (``attention_softmax_forward``), the weighted sum one more batched matmul, a
strided copy puts the heads side by side and the output projection is a dense kernel. The
backward mirrors it; the softmax keeps only its probabilities for the backward.
"""
import math

import numpy as np

from .. import engine, initializers, ops
from .. import validation as V
from .base import Layer, Seeded, check_positive_int, check_step_mask, fmt_shape
from .core import Dense, Dropout
from .normalization import LayerNormalization

__all__ = ["Attention", "AdditiveAttention", "MultiHeadAttention", "PositionalEmbedding",
           "SinePositionEncoding", "TransformerEncoder", "TransformerDecoder"]


def _bmm(be, a, b, batch, a_strides, b_strides, m, n, k, lda, ldb, ta, tb, out):
    """out (batch..., m, n) = op(A_t) @ op(B_t) for every batch index t, A_t starting at
    ``t . a_strides`` of ``a`` (likewise B_t): one matmul_forward call."""
    shape, sa, sb = ops._collapse(batch, a_strides, b_strides)
    be.matmul_forward(ops._flat(be, a), ops._flat(be, b), shape, sa, sb, m, n, k, lda, ldb,
                      bool(ta), bool(tb), False, ops._flat(be, out))


def _heads_side_by_side(be, x, n, h, t, d, out):
    """(n, h, t, d) -> (n, t, h * d) (the heads' columns side by side), one strided copy."""
    shape, xs, os_ = ops._collapse((n, h, t, d), (h * t * d, t * d, d, 1),
                                   (t * h * d, d, h * d, 1))
    be.strided_copy(ops._flat(be, x), 0, shape, xs, False, ops._flat(be, out), 0, os_)


def _heads_apart(be, x, n, h, t, d, out):
    """(n, t, h * d) -> (n, h, t, d), one strided copy."""
    shape, xs, os_ = ops._collapse((n, h, t, d), (t * h * d, d, h * d, 1),
                                   (h * t * d, t * d, d, 1))
    be.strided_copy(ops._flat(be, x), 0, shape, xs, False, ops._flat(be, out), 0, os_)


def _check_qvk(layer, shapes, form):
    """Two or three inputs [query, value(, key)], each (batch, time, features) with known
    features; ``form`` says how the layer is called."""
    if len(shapes) not in (2, 3):
        raise ValueError(f"{layer!r}: {form}, got {len(shapes)} inputs")
    for name, s in zip(("query", "value", "key"), shapes):
        if len(s) != 2 or s[1] is None:
            raise ValueError(f"{layer!r}: {name} must be (batch, time, features) with known "
                             f"features, got {fmt_shape(s)}")


class MultiHeadAttention(Seeded, Layer):
    """Multi-head attention (Keras): ``mha(query, value, key=None, attention_mask=None,
    use_causal_mask=False, return_attention_scores=False, training=None)`` on (batch, time,
    features) sequences.

    Each head h attends with the columns h*key_dim .. (h+1)*key_dim - 1 of the query and key
    projections, scores scaled by 1/sqrt(key_dim), and the columns of its value_dim of the value
    projection; the heads' outputs side by side go through the output projection (to
    ``output_shape`` features, the query's by default). ``attention_mask`` (batch, T_q, T_k) is
    True where a query may attend to a key; as in Keras any mask broadcastable to that shape will
    do (a (batch, 1, T_k) padding mask, a (T_q, T_k) one). It combines (logical and) with the
    causal mask and with the masks of the inputs (``Embedding(mask_zero=True)``, or
    ``query_mask`` / ``value_mask`` / ``key_mask``: padded keys are not attended to, padded
    queries attend to nothing). A query that may attend to no key gets all-zero weights (its
    output is the output bias). ``return_attention_scores=True`` also returns the attention
    weights (batch, heads, T_q, T_k), before dropout.
    """

    output_layout = input_layout = "channels_last"
    _config_attrs = {"output_shape": "output_dim"}

    multi_input = True
    uses_mask = True
    supports_masking = True
    tensor_kwargs = ("attention_mask", "query_mask", "value_mask", "key_mask")
    PROJECTIONS = ("query", "key", "value", "output")

    def __init__(self, num_heads, key_dim, value_dim=None, dropout=0.0, use_bias=True,
                 output_shape=None, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", seed=None, **kwargs):
        super().__init__(**kwargs)
        where = f"MultiHeadAttention {self.name!r}"
        self.num_heads = check_positive_int(num_heads, "num_heads", where)
        self.key_dim = check_positive_int(key_dim, "key_dim", where)
        self.value_dim = self.key_dim if value_dim is None else \
            check_positive_int(value_dim, "value_dim", where)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or \
                not 0.0 <= dropout < 1.0:
            raise ValueError(f"{where}: dropout must be a float in [0, 1), got {dropout!r}")
        self.dropout = float(dropout)
        self.use_bias = bool(use_bias)
        if output_shape is not None:
            if isinstance(output_shape, (list, tuple)):
                if len(output_shape) != 1:
                    raise ValueError(f"{where}: output_shape must be a number of features, got "
                                     f"{output_shape!r}")
                output_shape = output_shape[0]
            output_shape = check_positive_int(output_shape, "output_shape", where)
        self.output_dim = output_shape
        self.kernel_initializer = initializers.get(kernel_initializer,
                                                   f"{where} kernel_initializer")
        self.bias_initializer = initializers.get(bias_initializer, f"{where} bias_initializer")
        self._init_specs = self._keep_specs(kernel_initializer=kernel_initializer,
                                            bias_initializer=bias_initializer)
        self._set_seed(seed, where)

    def __call__(self, query, value=None, key=None, **kwargs):
        if value is None and isinstance(query, (list, tuple)) and len(query) in (2, 3):
            return super().__call__(list(query), **kwargs)      # [query, value(, key)]
        if value is None:
            raise TypeError(f"{self!r}: call it as mha(query, value, key=None, ...); value is "
                            f"required (mha(x, x) for self-attention)")
        return super().__call__([query, value] if key is None else [query, value, key],
                                **kwargs)

    # -- shapes and weights -----------------------------------------------------------------------
    def _check_shapes(self, shapes):
        _check_qvk(self, shapes, "expects query, value and optionally key")
        if len(shapes) == 3 and None not in (shapes[1][0], shapes[2][0]) and \
                shapes[1][0] != shapes[2][0]:
            raise ValueError(f"{self!r}: key and value must have the same number of steps, got "
                             f"{shapes[2][0]} and {shapes[1][0]}")

    def check_input(self, x, index=0):
        """A key (input 2) given to a layer built on (query, value) is checked against the
        value's shape: the key projection was built on the value's features (Keras: the key
        defaults to the value)."""
        if index == 2 and len(self.input_shape) == 2:
            got = tuple(int(d) for d in x.shape)
            if len(got) != 3 or got[2] != self.input_shape[1][1]:
                raise ValueError(f"{self!r}: was built without a key (the key is the value, of "
                                 f"shape {fmt_shape(self.input_shape[1])}); a key must have "
                                 f"that shape, got {got}")
            index = 1
        return super().check_input(x, index)

    def _check_features(self, arrays):
        """Each input's features against its projection's kernel (a cheap shape check): a
        layer built with a key of other features than the value's needs that key, and inside
        a model an upstream layer may change its output width after the model is built."""
        names = ("query", "value", "key")
        for name, a in zip(names, list(arrays) + [arrays[1]] * (3 - len(arrays))):
            want = int(self.params[f"{name}_kernel"].shape[0])
            if len(a.shape) != 3 or int(a.shape[2]) != want:
                given = "" if name != "key" or len(arrays) == 3 else \
                    " (no key given: the key is the value)"
                raise ValueError(f"{self!r}: was built with a {name} of {want} features, got "
                                 f"{name} shape {tuple(int(d) for d in a.shape)}{given}")

    def compute_output_shape(self, input_shape):
        self._check_shapes(input_shape)
        q = input_shape[0]
        return (q[0], self.output_dim or q[1])

    def output_shape_for(self, input_shape, return_attention_scores=False, **kwargs):
        out = self.compute_output_shape(input_shape)
        if return_attention_scores:
            return [out, (self.num_heads, input_shape[0][0], input_shape[1][0])]
        return out

    def compute_mask(self, inputs, mask):
        q = mask[0] if isinstance(mask, (list, tuple)) else mask
        return q

    def build(self, input_shape):
        shapes = [tuple(s) for s in input_shape]
        self._check_shapes(shapes)
        super().build(shapes)
        # the time axes may differ from call to call
        self.input_shape = [(None, s[1]) for s in shapes]
        self.output_shape = self.compute_output_shape(self.input_shape)

    def create_params(self, input_shape):
        dq, dv = input_shape[0][1], input_shape[1][1]
        dk = input_shape[2][1] if len(input_shape) == 3 else dv
        h, kd, vd = self.num_heads, self.key_dim, self.value_dim
        dout = self.output_dim or dq
        for name, fan_in, width in (("query", dq, h * kd), ("key", dk, h * kd),
                                    ("value", dv, h * vd), ("output", h * vd, dout)):
            self.add_param(f"{name}_kernel", (fan_in, width), self.kernel_initializer, fan_in,
                           width)
            if self.use_bias:
                self.add_param(f"{name}_bias", (width,), self.bias_initializer, fan_in, width)
        self._new_rng()

    def _bias(self, name, width):
        if self.use_bias:
            return self.params[f"{name}_bias"]
        return self.backend.zeros((width,), self.dtype)

    # -- the call ---------------------------------------------------------------------------------
    def _mask(self, n, tq, tk, attention_mask, query_mask, key_mask):
        """The combined (n, tq, tk) uint8 mask, or None when nothing is masked (the causal mask
        is the kernel's flag). Built on the host from the small per-step masks."""
        be = self.backend
        if attention_mask is None and query_mask is None and key_mask is None:
            return None
        m = np.ones((n, tq, tk), dtype=bool)
        if attention_mask is not None:
            am = np.asarray(be.to_numpy(attention_mask))
            if am.ndim not in (2, 3) or \
                    any(a not in (1, b) for a, b in zip(am.shape[::-1], (tk, tq, n))):
                raise ValueError(f"{self!r}: attention_mask must be broadcastable to (batch, "
                                 f"T_q, T_k) = {(n, tq, tk)} (e.g. a (batch, 1, T_k) padding "
                                 f"mask or a (T_q, T_k) one), got {am.shape}")
            m &= am.astype(bool)                    # broadcasts its 1-sized axes (Keras)
        if query_mask is not None:
            m &= np.asarray(be.to_numpy(query_mask)).reshape(n, tq, 1).astype(bool)
        if key_mask is not None:
            m &= np.asarray(be.to_numpy(key_mask)).reshape(n, 1, tk).astype(bool)
        return be.asarray(m.astype(np.uint8))

    def _forward(self, x, training, mask=None, attention_mask=None, query_mask=None,
                 value_mask=None, key_mask=None, use_causal_mask=False,
                 return_attention_scores=False):
        be = self.backend
        self._check_features(x)
        q, v = x[0], x[1]
        k = x[2] if len(x) == 3 else v
        n, tq, dq = (int(d) for d in q.shape)
        tk = int(v.shape[1])
        if int(k.shape[1]) != tk or int(k.shape[0]) != n or int(v.shape[0]) != n:
            raise ValueError(f"{self!r}: query, value and key must share the batch, and key and "
                             f"value the steps; got {tuple(q.shape)}, {tuple(v.shape)}, "
                             f"{tuple(k.shape)}")
        if mask is not None:
            masks = list(mask) + [None] * (3 - len(mask))
            query_mask = masks[0] if query_mask is None else query_mask
            value_mask = masks[1] if value_mask is None else value_mask
            key_mask = masks[2] if key_mask is None else key_mask
        for name, m, t in (("query_mask", query_mask, tq), ("value_mask", value_mask, tk),
                           ("key_mask", key_mask, tk)):
            check_step_mask(self, name, m, n, t)
        kmask = value_mask if key_mask is None else key_mask if value_mask is None else \
            ops._MUL.forward(be, value_mask, key_mask)[0]
        h, kd, vd = self.num_heads, self.key_dim, self.value_dim
        dout = self.output_dim or dq
        p = self.params
        rows_q, rows_k = n * tq, n * tk
        q2, k2, v2 = (be.kernel_view(a, (int(a.shape[0]) * int(a.shape[1]), int(a.shape[2])))
                      for a in (q, k, v))
        Q, K, V = (be.empty((r, w), self.dtype) for r, w in
                   ((rows_q, h * kd), (rows_k, h * kd), (rows_k, h * vd)))
        be.dense_forward(q2, p["query_kernel"], self._bias("query", h * kd), Q)
        be.dense_forward(k2, p["key_kernel"], self._bias("key", h * kd), K)
        be.dense_forward(v2, p["value_kernel"], self._bias("value", h * vd), V)
        scores = be.empty((n * h, tq, tk), self.dtype)
        _bmm(be, Q, K, (n, h), (tq * h * kd, kd), (tk * h * kd, kd), tq, tk, kd, h * kd, h * kd,
             False, True, scores)
        m = self._mask(n, tq, tk, attention_mask, query_mask, kmask)
        rate = self.dropout if training else 0.0
        probs = be.empty((n * h, tq, tk), self.dtype)
        u = be.uniform((n * h, tq, tk), self.dtype, self.rng) if rate > 0.0 else \
            be.empty((0,), self.dtype)
        weights = be.empty((n * h, tq, tk), self.dtype) if rate > 0.0 else probs
        be.attention_softmax_forward(scores,
                                     m if m is not None else be.empty((0, 0, 0), np.uint8), h,
                                     bool(use_causal_mask), 1.0 / math.sqrt(kd), u, rate, probs,
                                     weights)
        heads = be.empty((n, h, tq, vd), self.dtype)
        _bmm(be, weights, V, (n, h), (h * tq * tk, tq * tk), (tk * h * vd, vd), tq, vd, tk, tk,
             h * vd, False, False, heads)
        joined = be.empty((rows_q, h * vd), self.dtype)
        _heads_side_by_side(be, heads, n, h, tq, vd, joined)
        out = be.empty((n, tq, dout), self.dtype)
        be.dense_forward(joined, p["output_kernel"], self._bias("output", dout),
                         be.kernel_view(out, (rows_q, dout)))
        ctx = (len(x), (n, tq, tk, dq), q2, k2, v2, Q, K, V, probs, weights, u, rate, joined,
               return_attention_scores)
        if return_attention_scores:
            return [out, probs.reshape((n, h, tq, tk))], ctx
        return out, ctx

    def _backward(self, ctx, grad_out, sink, need):
        be = self.backend
        n_in, (n, tq, tk, dq), q2, k2, v2, Q, K, V, probs, weights, u, rate, joined, \
            with_scores = ctx
        h, kd, vd = self.num_heads, self.key_dim, self.value_dim
        dout = self.output_dim or dq
        g_out, g_probs = (grad_out[0], grad_out[1]) if with_scores else (grad_out, None)
        g2 = be.kernel_view(g_out, (n * tq, dout))
        p = self.params
        pg = sink.layer_grads(self)
        grads, acc = pg if pg is not None else (None, False)

        def weight_grad(name, x2, g, width):
            if grads is not None:
                gb = grads[f"{name}_bias"] if self.use_bias else be.empty((width,), self.dtype)
                be.dense_backward_weight(x2, g, acc, grads[f"{name}_kernel"], gb)

        weight_grad("output", joined, g2, dout)
        g_joined = be.empty((n * tq, h * vd), self.dtype)
        be.dense_backward_input(g2, p["output_kernel"], g_joined)
        g_heads = be.empty((n, h, tq, vd), self.dtype)
        _heads_apart(be, g_joined, n, h, tq, vd, g_heads)
        # through the weighted sum: dW = dO V^T, dV = W^T dO
        g_w = be.empty((n * h, tq, tk), self.dtype)
        _bmm(be, g_heads, V, (n, h), (h * tq * vd, tq * vd), (tk * h * vd, vd), tq, tk, vd, vd,
             h * vd, False, True, g_w)
        g_vh = be.empty((n, h, tk, vd), self.dtype)
        _bmm(be, weights, g_heads, (n, h), (h * tq * tk, tq * tk), (h * tq * vd, tq * vd), tk,
             vd, tq, tk, vd, True, False, g_vh)
        g_v = be.empty((n * tk, h * vd), self.dtype)
        _heads_side_by_side(be, g_vh, n, h, tk, vd, g_v)
        # through the softmax (and dropout); a gradient of the returned scores adds linearly
        scale = 1.0 / math.sqrt(kd)
        g_s = be.empty((n * h, tq, tk), self.dtype)
        be.attention_softmax_backward(probs, u, rate, scale, g_w, g_s)
        if g_probs is not None:
            extra = be.empty((n * h, tq, tk), self.dtype)
            be.attention_softmax_backward(probs, be.empty((0,), self.dtype), 0.0, scale,
                                          g_probs.reshape((n * h, tq, tk)), extra)
            g_s = ops._ADD.forward(be, g_s, extra)[0]
        # through the scores: dQ = dS K, dK = dS^T Q
        g_qh = be.empty((n, h, tq, kd), self.dtype)
        _bmm(be, g_s, K, (n, h), (h * tq * tk, tq * tk), (tk * h * kd, kd), tq, kd, tk, tk,
             h * kd, False, False, g_qh)
        g_kh = be.empty((n, h, tk, kd), self.dtype)
        _bmm(be, g_s, Q, (n, h), (h * tq * tk, tq * tk), (tq * h * kd, kd), tk, kd, tq, tk,
             h * kd, True, False, g_kh)
        g_q, g_k = be.empty((n * tq, h * kd), self.dtype), be.empty((n * tk, h * kd), self.dtype)
        _heads_side_by_side(be, g_qh, n, h, tq, kd, g_q)
        _heads_side_by_side(be, g_kh, n, h, tk, kd, g_k)
        weight_grad("query", q2, g_q, h * kd)
        weight_grad("key", k2, g_k, h * kd)
        weight_grad("value", v2, g_v, h * vd)
        needs = list(need) if isinstance(need, (list, tuple)) else [bool(need)] * n_in
        res = [None] * len(needs)

        def input_grad(name, g, x2, t):
            out = be.empty((n, t, int(x2.shape[1])), self.dtype)
            be.dense_backward_input(g, p[f"{name}_kernel"], be.kernel_view(out, tuple(x2.shape)))
            return out

        if needs[0]:
            res[0] = input_grad("query", g_q, q2, tq)
        if needs[1]:
            res[1] = input_grad("value", g_v, v2, tk)
            if n_in == 2:                         # the key is the value
                res[1] = ops._ADD.forward(be, res[1], input_grad("key", g_k, k2, tk))[0]
        if n_in == 3 and needs[2]:
            res[2] = input_grad("key", g_k, k2, tk)
        return res


def _relax_time(shapes):
    """(time, features) shapes with the time axis free (it may differ from call to call)."""
    return [(None,) + tuple(s[1:]) for s in shapes]


class PositionalEmbedding(Layer):
    """Token ids (batch, time) -> token embeddings plus learned position embeddings (keras_hub's
    ``TokenAndPositionEmbedding``): ``token_embedding`` is an Embedding(vocabulary_size,
    embedding_dim) and ``position_embeddings`` a (sequence_length, embedding_dim) weight whose
    first ``time`` rows are added. With ``mask_zero=True`` id 0 is padding (a mask follows)."""

    input_kind = "int"
    supports_masking = True
    free_axes = (0,)
    output_layout = "channels_last"

    def __init__(self, sequence_length, vocabulary_size, embedding_dim, mask_zero=False,
                 embeddings_initializer="uniform", **kwargs):
        super().__init__(**kwargs)
        where = f"PositionalEmbedding {self.name!r}"
        self.sequence_length = check_positive_int(sequence_length, "sequence_length", where)
        self.vocabulary_size = check_positive_int(vocabulary_size, "vocabulary_size", where)
        self.embedding_dim = check_positive_int(embedding_dim, "embedding_dim", where)
        self.mask_zero = bool(mask_zero)
        self._init_spec, = self._keep_specs(embeddings_initializer=embeddings_initializer)
        from .sequence import Embedding
        self.token_embedding = Embedding(vocabulary_size, embedding_dim,
                                         embeddings_initializer=embeddings_initializer,
                                         mask_zero=mask_zero, name=f"{self.name}_tokens",
                                         dtype=self.dtype)
        self.position_embeddings = None

    @property
    def produces_mask(self):
        return self.mask_zero

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 1:
            raise ValueError(f"{self!r}: expects token ids of shape (batch, time), got "
                             f"{fmt_shape(input_shape)}")
        return tuple(input_shape) + (self.embedding_dim,)

    def build(self, input_shape):
        if self.dtype is None:
            self.dtype = np.dtype(np.float32)
        self.token_embedding.dtype = self.dtype
        self.token_embedding._move_to(self.backend)
        self.token_embedding.build(tuple(input_shape))
        super().build(input_shape)

    def create_params(self, input_shape):
        self.position_embeddings = self.add_weight(
            "position_embeddings", (self.sequence_length, self.embedding_dim),
            initializers.get(self._init_spec, f"{self!r} embeddings_initializer"))

    def compute_mask(self, inputs, mask):
        return self.token_embedding.compute_mask(inputs, mask)

    def call(self, inputs):
        t = int(inputs.shape[1])
        if t > self.sequence_length:
            raise ValueError(f"{self!r}: got sequences of {t} steps, more than its "
                             f"sequence_length={self.sequence_length}")
        return self.token_embedding(inputs) + self.position_embeddings[:t]


class SinePositionEncoding(Layer):
    """Adds the fixed sinusoidal position encoding of "Attention Is All You Need" to a
    (batch, time, features) input: feature 2i of step t gets sin(t / max_wavelength^(2i/d)),
    feature 2i+1 the cosine (keras_hub's formula)."""

    supports_masking = True
    free_axes = (0,)
    output_layout = input_layout = "channels_last"

    def __init__(self, max_wavelength=10000, **kwargs):
        super().__init__(**kwargs)
        if isinstance(max_wavelength, bool) or not isinstance(max_wavelength, (int, float)) or \
                not max_wavelength > 0:
            raise ValueError(f"SinePositionEncoding {self.name!r}: max_wavelength must be a "
                             f"positive number, got {max_wavelength!r}")
        self.max_wavelength = max_wavelength
        self._cache = {}

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 2 or input_shape[1] is None:
            raise ValueError(f"{self!r}: expects (batch, time, features) input, got "
                             f"{fmt_shape(input_shape)}")
        return tuple(input_shape)

    def encoding(self, steps, features):
        """The (steps, features) encoding as a float64 NumPy array."""
        timescales = np.power(1.0 / self.max_wavelength,
                              2.0 * (np.arange(features) // 2) / features)
        angles = np.arange(steps)[:, None] * timescales[None, :]
        odd = np.arange(features) % 2 == 1
        return np.where(odd, np.cos(angles), np.sin(angles))

    def call(self, inputs):
        t, d = (int(v) for v in inputs.shape[1:])
        key = (t, d, self.backend.name, np.dtype(inputs.dtype).name)
        pe = self._cache.get(key)
        if pe is None:
            pe = self._cache[key] = self.backend.asarray(self.encoding(t, d).astype(inputs.dtype))
        return inputs + pe


class _TransformerBlock(Layer):
    """Shared by the encoder and decoder blocks: arguments, sublayer creation, feedforward."""

    supports_masking = True
    uses_mask = True
    output_layout = input_layout = "channels_last"

    def __init__(self, intermediate_dim, num_heads, dropout=0.0, activation="relu",
                 norm_first=False, layer_norm_epsilon=1e-5, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        where = f"{type(self).__name__} {self.name!r}"
        self.intermediate_dim = check_positive_int(intermediate_dim, "intermediate_dim", where)
        self.num_heads = check_positive_int(num_heads, "num_heads", where)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or \
                not 0.0 <= dropout < 1.0:
            raise ValueError(f"{where}: dropout must be a float in [0, 1), got {dropout!r}")
        self.dropout = float(dropout)
        from .. import activations
        self.activation = activations.check_name(activation, where)
        self.norm_first = bool(norm_first)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self._init_specs = self._keep_specs(kernel_initializer=kernel_initializer,
                                            bias_initializer=bias_initializer)

    def _attention(self, suffix, hidden):
        if hidden // self.num_heads < 1:
            raise ValueError(f"{self!r}: the model width {hidden} is smaller than num_heads="
                             f"{self.num_heads} (each head gets width // num_heads features)")
        return MultiHeadAttention(self.num_heads, hidden // self.num_heads, dropout=self.dropout,
                                  kernel_initializer=self._init_specs[0],
                                  bias_initializer=self._init_specs[1],
                                  name=f"{self.name}_{suffix}", dtype=self.dtype)

    def _norm(self, suffix):
        return LayerNormalization(epsilon=self.layer_norm_epsilon, name=f"{self.name}_{suffix}",
                                  dtype=self.dtype)

    def _make_feedforward(self, hidden):
        self.feedforward_norm = self._norm("feedforward_norm")
        self.intermediate_dense = Dense(self.intermediate_dim, activation=self.activation,
                                        kernel_initializer=self._init_specs[0],
                                        bias_initializer=self._init_specs[1],
                                        name=f"{self.name}_intermediate", dtype=self.dtype)
        self.output_dense = Dense(hidden, kernel_initializer=self._init_specs[0],
                                  bias_initializer=self._init_specs[1],
                                  name=f"{self.name}_output", dtype=self.dtype)
        self.feedforward_dropout = Dropout(self.dropout, name=f"{self.name}_feedforward_dropout",
                                           dtype=self.dtype)

    def _build_sublayers(self, builds):
        """Move the sublayers to this layer's device and build them on their input shapes."""
        for layer, shape in builds:
            layer._move_to(self.backend)
            layer.build(shape)

    def _feedforward_builds(self, seq):
        return [(self.feedforward_norm, seq), (self.intermediate_dense, seq),
                (self.output_dense, seq[:-1] + (self.intermediate_dim,)),
                (self.feedforward_dropout, seq)]

    def _residual(self, x, norm, block, training):
        """x + block(x) with the LayerNormalization before the block (norm_first) or after
        the sum (the original Transformer)."""
        y = block(norm(x) if self.norm_first else x)
        out = x + y
        return out if self.norm_first else norm(out)

    def _feedforward(self, x, training):
        return self._residual(x, self.feedforward_norm, lambda h: self.feedforward_dropout(
            self.output_dense(self.intermediate_dense(h)), training=training), training)


class TransformerEncoder(_TransformerBlock):
    """The encoder block of "Attention Is All You Need" (keras_hub's TransformerEncoder):
    self-attention and a feedforward network (Dense(intermediate_dim, activation) ->
    Dense(width)), each with dropout, a residual connection and LayerNormalization (after the
    sum, or before the block with ``norm_first=True``). Called as ``encoder(x,
    padding_mask=None, attention_mask=None)``; the padding mask (by default the input's mask)
    keeps padded steps from being attended to, the attention mask ((batch, T, T) or
    broadcastable to it) restricts further."""

    tensor_kwargs = ("padding_mask", "attention_mask")
    free_axes = (0,)

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 2 or input_shape[1] is None:
            raise ValueError(f"{self!r}: expects (batch, time, features) input, got "
                             f"{fmt_shape(input_shape)}")
        return tuple(input_shape)

    def build(self, input_shape):
        seq = tuple(input_shape)
        self.compute_output_shape(seq)
        if self.dtype is None:
            self.dtype = np.dtype(np.float32)
        hidden = seq[1]
        self.self_attention = self._attention("self_attention", hidden)
        self.self_attention_norm = self._norm("self_attention_norm")
        self.self_attention_dropout = Dropout(self.dropout, dtype=self.dtype,
                                              name=f"{self.name}_self_attention_dropout")
        self._make_feedforward(hidden)
        self._build_sublayers([(self.self_attention, [seq, seq]),
                               (self.self_attention_norm, seq),
                               (self.self_attention_dropout, seq)] +
                              self._feedforward_builds(seq))
        super().build(input_shape)

    def call(self, x, padding_mask=None, attention_mask=None, mask=None, training=False):
        if padding_mask is None:
            padding_mask = mask
        check_step_mask(self, "padding_mask", padding_mask,
                         *(int(d) for d in tuple(x.shape)[:2]))
        x = self._residual(x, self.self_attention_norm, lambda h: self.self_attention_dropout(
            self.self_attention(h, h, value_mask=padding_mask, attention_mask=attention_mask,
                                training=training), training=training), training)
        return self._feedforward(x, training)


class TransformerDecoder(_TransformerBlock):
    """The decoder block (keras_hub's TransformerDecoder): causal self-attention, then -- when
    called with an encoder sequence, ``decoder(x, encoder_sequence)`` -- cross-attention to it,
    then the feedforward network; each with dropout, a residual connection and
    LayerNormalization. Masks: ``decoder_padding_mask`` / ``encoder_padding_mask`` (by default
    the inputs' masks) keep padded steps from being attended to; ``decoder_attention_mask`` /
    ``encoder_attention_mask`` (batch, T_q, T_k), or broadcastable to it, restrict further;
    ``use_causal_mask=False`` turns the causal mask off."""

    multi_input = True
    tensor_kwargs = ("decoder_padding_mask", "decoder_attention_mask", "encoder_padding_mask",
                     "encoder_attention_mask")

    def __call__(self, decoder_sequence, encoder_sequence=None, **kwargs):
        if encoder_sequence is None and isinstance(decoder_sequence, (list, tuple)):
            inputs = list(decoder_sequence)
        else:
            inputs = [decoder_sequence] if encoder_sequence is None else \
                [decoder_sequence, encoder_sequence]
        if self.built and len(inputs) != len(self.input_shape):
            built = "with" if len(self.input_shape) == 2 else "without"
            called = "with" if len(inputs) == 2 else "without"
            raise ValueError(f"{self!r}: was built {built} an encoder sequence (cross-attention) "
                             f"and called {called} one; call it the same way every time")
        return super().__call__(inputs, **kwargs)

    def compute_output_shape(self, input_shape):
        for s in input_shape:
            if len(s) != 2 or s[1] is None:
                raise ValueError(f"{self!r}: expects (batch, time, features) sequences, got "
                                 f"{fmt_shape(s)}")
        return tuple(input_shape[0])

    def compute_mask(self, inputs, mask):
        return mask[0] if isinstance(mask, (list, tuple)) else mask

    def build(self, input_shape):
        shapes = [tuple(s) for s in input_shape]
        self.compute_output_shape(shapes)
        if self.dtype is None:
            self.dtype = np.dtype(np.float32)
        seq = shapes[0]
        hidden = seq[1]
        self.self_attention = self._attention("self_attention", hidden)
        self.self_attention_norm = self._norm("self_attention_norm")
        self.self_attention_dropout = Dropout(self.dropout, dtype=self.dtype,
                                              name=f"{self.name}_self_attention_dropout")
        builds = [(self.self_attention, [seq, seq]), (self.self_attention_norm, seq),
                  (self.self_attention_dropout, seq)]
        if len(shapes) == 2:
            self.cross_attention = self._attention("cross_attention", hidden)
            self.cross_attention_norm = self._norm("cross_attention_norm")
            self.cross_attention_dropout = Dropout(self.dropout, dtype=self.dtype,
                                                   name=f"{self.name}_cross_attention_dropout")
            builds += [(self.cross_attention, [seq, shapes[1]]), (self.cross_attention_norm, seq),
                       (self.cross_attention_dropout, seq)]
        self._make_feedforward(hidden)
        self._build_sublayers(builds + self._feedforward_builds(seq))
        super().build(shapes)
        self.input_shape = _relax_time(shapes)
        self.output_shape = self.compute_output_shape(self.input_shape)

    def call(self, inputs, decoder_padding_mask=None, decoder_attention_mask=None,
             encoder_padding_mask=None, encoder_attention_mask=None, use_causal_mask=True,
             mask=None, training=False):
        x = inputs[0]
        masks = list(mask) if isinstance(mask, (list, tuple)) else [mask, None]
        if decoder_padding_mask is None:
            decoder_padding_mask = masks[0]
        if len(inputs) == 2 and encoder_padding_mask is None:
            encoder_padding_mask = masks[1] if len(masks) > 1 else None
        check_step_mask(self, "decoder_padding_mask", decoder_padding_mask,
                         *(int(d) for d in tuple(x.shape)[:2]))
        if len(inputs) == 2:
            check_step_mask(self, "encoder_padding_mask", encoder_padding_mask,
                             *(int(d) for d in tuple(inputs[1].shape)[:2]))
        x = self._residual(x, self.self_attention_norm, lambda h: self.self_attention_dropout(
            self.self_attention(h, h, value_mask=decoder_padding_mask,
                                attention_mask=decoder_attention_mask,
                                use_causal_mask=bool(use_causal_mask), training=training),
            training=training), training)
        if len(inputs) == 2:
            enc = inputs[1]
            x = self._residual(x, self.cross_attention_norm,
                               lambda h: self.cross_attention_dropout(self.cross_attention(
                                   h, enc, value_mask=encoder_padding_mask,
                                   attention_mask=encoder_attention_mask, training=training),
                                   training=training), training)
        return self._feedforward(x, training)


class Attention(Seeded, Layer):
    """Dot-product (Luong) attention (Keras): called on ``[query, value]`` or ``[query, value,
    key]`` ((batch, T_q, dim), (batch, T_v, dim_v), (batch, T_v, dim); the key defaults to the
    value), it returns softmax(scores) @ value, (batch, T_q, dim_v).

    ``score_mode="dot"``: scores = query @ key^T, times a trainable scalar ``scale`` (starting
    at 1) with ``use_scale=True``; ``"concat"``: scores[i, j] = concat_score_weight *
    sum(tanh(scale * (query_i + key_j))) (a trainable scalar ``concat_score_weight``, the
    ``scale`` factor only with ``use_scale``). ``dropout`` drops attention weights in training
    (``seed`` for its generator). Call arguments: ``use_causal_mask=True`` keeps query i from
    attending to values j > i; ``return_attention_scores=True`` also returns the weights
    (batch, T_q, T_v) after masking, softmax and dropout. Masks (Keras): the value's mask
    (``Embedding(mask_zero=True)``) keeps masked values out (their scores get -1e9 before the
    softmax), the query's zeroes the outputs of masked queries and is the output's mask; a
    key's mask is ignored, as in Keras. Written with ``nb.ops``: the gradients come from the
    tape."""

    multi_input = True
    uses_mask = True
    supports_masking = True
    output_layout = input_layout = "channels_last"
    SCORE_MODES = ("dot", "concat")

    def __init__(self, use_scale=False, score_mode="dot", dropout=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        where = f"{type(self).__name__} {self.name!r}"
        self.use_scale = V.FLAG(use_scale, "use_scale", where)
        self.score_mode = V.OneOf(*self.SCORE_MODES)(score_mode, "score_mode", where)
        self.dropout = V.Number(low=0, high=1, high_open=True)(dropout, "dropout", where)
        self._set_seed(seed, where)

    def _check_shapes(self, shapes):
        _check_qvk(self, shapes, "is called on [query, value] or [query, value, key]")
        q, v = shapes[0], shapes[1]
        k = shapes[2] if len(shapes) == 3 else v
        if q[1] != k[1]:
            which = "key" if len(shapes) == 3 else "value (the key)"
            raise ValueError(f"{self!r}: query and {which} must have the same number of "
                             f"features, got {fmt_shape(q)} and {fmt_shape(k)}")
        if len(shapes) == 3 and None not in (v[0], k[0]) and v[0] != k[0]:
            raise ValueError(f"{self!r}: key and value must have the same number of steps, got "
                             f"{k[0]} and {v[0]}")

    def compute_output_shape(self, input_shape):
        self._check_shapes([tuple(s) for s in input_shape])
        return (input_shape[0][0], input_shape[1][1])

    def output_shape_for(self, input_shape, return_attention_scores=False, **kwargs):
        out = self.compute_output_shape(input_shape)
        if return_attention_scores:
            return [out, (input_shape[0][0], input_shape[1][0])]
        return out

    def compute_mask(self, inputs, mask):
        """The query's mask (Keras)."""
        return mask[0] if isinstance(mask, (list, tuple)) else None

    def build(self, input_shape):
        shapes = [tuple(s) for s in input_shape]
        self._check_shapes(shapes)
        super().build(shapes)
        self.input_shape = _relax_time(shapes)      # the time axes may differ between calls
        self.output_shape = self.compute_output_shape(self.input_shape)

    def check_input(self, x, index=0):
        """A key given to a layer built on [query, value] is checked against the query's
        features (the scores need them equal)."""
        if index == 2 and len(self.input_shape) == 2:
            got = tuple(int(d) for d in x.shape)
            if len(got) != 3 or got[2] != self.input_shape[0][1]:
                raise ValueError(f"{self!r}: a key must be (batch, time, "
                                 f"{self.input_shape[0][1]}) (the query's features), got {got}")
            index = 0
        return super().check_input(x, index)

    def create_params(self, input_shape):
        self.scale = self.add_weight("scale", (), "ones") if self.use_scale else None
        self.concat_score_weight = self.add_weight("concat_score_weight", (), "ones") \
            if self.score_mode == "concat" else None
        self._new_rng()

    def _scores(self, q, k):
        """(batch, T_q, T_v) scores of queries against keys."""
        if self.score_mode == "dot":
            scores = ops.matmul(q, ops.transpose(k, (0, 2, 1)))
            return scores * self.scale if self.scale is not None else scores
        s = ops.expand_dims(q, 2) + ops.expand_dims(k, 1)       # (batch, T_q, T_v, dim)
        if self.scale is not None:
            s = self.scale * s
        return self.concat_score_weight * ops.sum(ops.tanh(s), axis=-1)

    def _steps_mask(self, m, shape, what):
        n, t = shape
        if tuple(int(d) for d in m.shape) != (n, t):
            raise ValueError(f"{self!r}: the {what} mask must be (batch, time) = {(n, t)}, got "
                             f"{tuple(int(d) for d in m.shape)}")
        return m

    def call(self, inputs, mask=None, training=False, return_attention_scores=False,
             use_causal_mask=False):
        q, v = inputs[0], inputs[1]
        k = inputs[2] if len(inputs) == 3 else v
        n, tq, tv = int(q.shape[0]), int(q.shape[1]), int(v.shape[1])
        if int(k.shape[1]) != tv or int(v.shape[0]) != n or int(k.shape[0]) != n:
            raise ValueError(f"{self!r}: query, value and key must share the batch, key and "
                             f"value the steps; got {tuple(q.shape)}, {tuple(v.shape)}, "
                             f"{tuple(k.shape)}")
        if int(k.shape[2]) != int(q.shape[2]):
            raise ValueError(f"{self!r}: query and key must have the same number of features, "
                             f"got {tuple(q.shape)} and {tuple(k.shape)}")
        masks = list(mask) if isinstance(mask, (list, tuple)) else [None, None]
        q_mask, v_mask = masks[0], masks[1]
        scores = self._scores(q, k)
        keep = None                                 # 1 where query i may attend to value j
        if v_mask is not None:
            keep = ops.reshape(self._steps_mask(v_mask, (n, tv), "value"), (n, 1, tv))
        if use_causal_mask:
            causal = engine.Tensor(self.backend.asarray(np.tril(np.ones((tq, tv), self.dtype))),
                                   self.backend)
            keep = causal if keep is None else ops.multiply(keep, causal)
        if keep is not None:
            scores = scores - ops.subtract(1.0, keep) * 1e9
        weights = ops.softmax(scores, axis=-1)
        if training and self.dropout > 0.0:
            u = engine.Tensor(self.backend.uniform((n, tq, tv), self.dtype, self.rng),
                              self.backend)
            weights = weights * (ops.greater_equal(u, self.dropout) * (1.0 / (1.0 - self.dropout)))
        out = ops.matmul(weights, v)
        if q_mask is not None:
            out = out * ops.reshape(self._steps_mask(q_mask, (n, tq), "query"), (n, tq, 1))
        return [out, weights] if return_attention_scores else out


class AdditiveAttention(Attention):
    """Additive (Bahdanau) attention (Keras): as :class:`Attention`, with scores[i, j] =
    sum(scale * tanh(query_i + key_j)) over the features, ``scale`` a trainable per-feature
    vector (glorot-uniform) with ``use_scale=True`` (the default), ones otherwise."""

    _config_skip = ("score_mode",)

    def __init__(self, use_scale=True, dropout=0.0, **kwargs):
        if "score_mode" in kwargs:
            raise TypeError("AdditiveAttention: unexpected keyword argument 'score_mode' (its "
                            "scores are additive; Attention takes score_mode)")
        super().__init__(use_scale=use_scale, dropout=dropout, **kwargs)

    def create_params(self, input_shape):
        dim = input_shape[2][1] if len(input_shape) == 3 else input_shape[1][1]
        self.scale = self.add_weight("scale", (dim,), "glorot_uniform") if self.use_scale \
            else None
        self._new_rng()

    def _scores(self, q, k):
        t = ops.tanh(ops.expand_dims(q, 2) + ops.expand_dims(k, 1))   # (batch, T_q, T_v, dim)
        return ops.sum(t * self.scale if self.scale is not None else t, axis=-1)
