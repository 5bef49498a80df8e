"""Attention: MultiHeadAttention against a float64 reference, PyTorch's scaled_dot_product_attention
and central differences (self- and cross-attention, T_q != T_k, key_dim != value_dim, causal,
padding and attention masks, fully masked rows, dropout); the position embeddings; the encoder and
decoder blocks against compositions of the reference ops; masks, saving, and a transformer that
learns to reverse sequences."""
import re

import numpy as np
import pytest

import attention_reference as ref
import numbanet as nb
from numbanet.testing import assert_gradients_close, numeric_gradient

L = nb.layers
ops = nb.ops


def _tensors(*arrays):
    return [ops.convert_to_tensor(a) for a in arrays]


def _grads(layer, inputs, g, **kwargs):
    """(output, scores, gradients of the inputs, of every trainable weight) of sum(out * g)."""
    ts = _tensors(*inputs)
    with nb.GradientTape() as tape:
        tape.watch(ts)
        out, scores = layer(*ts, return_attention_scores=True, **kwargs)
        loss = ops.sum(out * g)
    grads = tape.gradient(loss, ts + layer.trainable_weights)
    return np.asarray(out), np.asarray(scores), [np.asarray(x) for x in grads]


CASES = {   # name: (tq, tk, num_heads, key_dim, value_dim, with key, causal, mask kind)
    "self": (5, 5, 2, 3, None, False, False, None),
    "cross": (4, 7, 3, 2, 4, True, False, "random"),
    "causal": (6, 6, 2, 4, 2, False, True, None),
    "causal_tq_lt_tk": (3, 5, 1, 2, 3, True, True, "padding"),
    "fully_masked_rows": (4, 6, 2, 2, None, False, False, "rows"),
}


def _mask(kind, rng, n, tq, tk):
    if kind is None:
        return None
    if kind == "padding":                           # keys past each row's length
        lengths = rng.integers(1, tk + 1, n)
        return np.broadcast_to(np.arange(tk)[None, None, :] < lengths[:, None, None],
                               (n, tq, tk)).copy()
    m = rng.random((n, tq, tk)) > 0.35
    if kind == "rows":
        m[0, 1, :] = False                          # a query that may attend to nothing
        m[1, -1, :] = False
    return m


def _setup(case, rng, n, dq, dv, dk):
    """(layer, inputs, key or None, mask, call keywords, output gradient) for a case."""
    tq, tk, h, kd, vd, with_key, causal, kind = CASES[case]
    q, v = rng.standard_normal((n, tq, dq)), rng.standard_normal((n, tk, dv))
    k = rng.standard_normal((n, tk, dk)) if with_key else None
    mask = _mask(kind, rng, n, tq, tk)
    mha = L.MultiHeadAttention(h, kd, value_dim=vd, dtype="float64")
    kwargs = dict(use_causal_mask=causal)
    if mask is not None:
        kwargs["attention_mask"] = mask
    inputs = [q, v] + ([k] if with_key else [])
    return mha, inputs, k, mask, kwargs, rng.standard_normal((n, tq, dq))


@pytest.mark.parametrize("case", list(CASES))
def test_mha_against_reference_and_central_differences(case, rng):
    tq, tk, h, kd, vd, with_key, causal, kind = CASES[case]
    mha, inputs, k, mask, kwargs, g = _setup(case, rng, 2, 5, 4, 3)
    q, v = inputs[:2]
    out, scores, grads = _grads(mha, inputs, g, **kwargs)
    want, want_w = ref.mha(mha.params, q, v, k, h, kd, vd, mask, causal)
    np.testing.assert_allclose(out, want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(scores, want_w, rtol=1e-10, atol=1e-12)
    if kind == "rows":                              # nothing to attend to: weights 0, out = bias
        assert np.all(scores[0, :, 1] == 0.0) and np.all(np.isfinite(out))
        np.testing.assert_allclose(out[0, 1], np.asarray(mha.params["output_bias"]), atol=1e-12)
    # every gradient against central differences of the reference
    arrays = inputs + [np.asarray(w.value) for w in mha.trainable_weights]
    names = ["query", "value"] + (["key"] if with_key else []) + \
        [w.name for w in mha.trainable_weights]

    def f():
        p = dict(zip([w.name.split("/")[-1] for w in mha.trainable_weights],
                     arrays[len(inputs):]))
        o, _ = ref.mha(p, *arrays[:2], arrays[2] if with_key else None, h, kd, vd, mask,
                       causal)
        return float(np.sum(o * g))
    for a, got, name in zip(arrays, grads, names):
        a = np.array(a, dtype=np.float64)
        arrays[names.index(name)] = a
        assert_gradients_close(got, numeric_gradient(f, a), name)


@pytest.mark.parametrize("case", ["self", "cross", "causal", "causal_tq_lt_tk"])
def test_mha_against_torch_sdpa(case, rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    tq, tk, h, kd, vd, with_key, causal, kind = CASES[case]
    n = 3
    mha, inputs, k, mask, kwargs, g = _setup(case, rng, n, 6, 5, 4)
    q, v = inputs[:2]
    k = v if k is None else k
    out, _, grads = _grads(mha, inputs, g, **kwargs)
    vd = vd or kd
    P = {name: torch.tensor(np.asarray(p), requires_grad=True) for name, p in mha.params.items()}
    tq_, tv_, tk_ = (torch.tensor(a, requires_grad=True) for a in (q, v, k))

    def heads(x, name, width):
        y = x @ P[f"{name}_kernel"] + P[f"{name}_bias"]
        return y.reshape(n, -1, h, width).transpose(1, 2)
    allowed = torch.ones(tq, tk, dtype=torch.bool) if mask is None else torch.tensor(mask)[:, None]
    if causal:
        allowed = allowed & torch.ones(tq, tk, dtype=torch.bool).tril()
    o = F.scaled_dot_product_attention(heads(tq_, "query", kd), heads(tk_, "key", kd),
                                       heads(tv_, "value", vd), attn_mask=allowed)
    o = o.transpose(1, 2).reshape(n, tq, h * vd) @ P["output_kernel"] + P["output_bias"]
    (o * torch.tensor(g)).sum().backward()
    np.testing.assert_allclose(out, o.detach().numpy(), rtol=1e-10, atol=1e-12)
    want = [tq_.grad, tv_.grad] + ([tk_.grad] if with_key else []) + \
        [P[w.name.split("/")[-1]].grad for w in mha.trainable_weights]
    if not with_key:                                # key is value: torch adds both uses
        want[1] = tv_.grad + tk_.grad if tk_ is not tv_ else tv_.grad
    for got, w in zip(grads, want):
        np.testing.assert_allclose(got, w.numpy(), rtol=1e-9, atol=1e-11)


def test_mha_padding_masks_from_an_embedding(rng):
    """Embedding(mask_zero=True) masks: padded keys are not attended to, so the unpadded
    queries' outputs equal those of the unpadded sequence; padded queries give the bias."""
    emb = L.Embedding(9, 4, mask_zero=True, dtype="float64")
    mha = L.MultiHeadAttention(2, 3, dtype="float64")
    ids = rng.integers(1, 9, (1, 5))
    padded = np.concatenate([ids, np.zeros((1, 3), int)], axis=1)
    short = np.asarray(mha(emb(ids), emb(ids)))
    long_ = np.asarray(mha(emb(padded), emb(padded)))
    np.testing.assert_allclose(long_[:, :5], short, rtol=1e-12)
    np.testing.assert_allclose(long_[0, 5:], np.broadcast_to(
        np.asarray(mha.params["output_bias"]), (3, 4)), atol=1e-12)


def test_mha_dropout_gradient_with_fixed_draws(rng):
    """Training-mode dropout on the attention weights: central differences with the layer's
    generator reset before each evaluation (the same dropout draws)."""
    mha = L.MultiHeadAttention(2, 2, dropout=0.4, seed=3, dtype="float64")
    q = rng.standard_normal((2, 4, 3))
    mha(q, q)
    state = mha.rng_state()
    g = rng.standard_normal((2, 4, 3))

    def run(x, training):
        mha.set_rng_state(state)
        return mha(x, x, training=training)
    t = ops.convert_to_tensor(q)
    with nb.GradientTape() as tape:
        tape.watch(t)
        loss = ops.sum(run(t, True) * g)
    grads = tape.gradient(loss, [t] + mha.trainable_weights)
    x = np.array(q)
    assert not np.allclose(np.asarray(run(x, True)), np.asarray(run(x, False)))
    f = lambda: float(np.sum(np.asarray(run(x, True)) * g))     # noqa: E731
    assert_gradients_close(np.asarray(grads[0]), numeric_gradient(f, x), "query")
    for w, got in zip(mha.trainable_weights, grads[1:]):
        assert_gradients_close(np.asarray(got), numeric_gradient(f, w.value), w.name)


def test_mha_bad_arguments():
    with pytest.raises(ValueError, match="num_heads"):
        L.MultiHeadAttention(0, 4)
    with pytest.raises(ValueError, match="dropout"):
        L.MultiHeadAttention(2, 4, dropout=1.0)
    mha = L.MultiHeadAttention(2, 4)
    x = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(ValueError, match="key and value"):
        mha(x, x, np.zeros((2, 5, 4), np.float32))
    with pytest.raises(ValueError, match="attention_mask"):
        mha(x, x, attention_mask=np.ones((2, 3, 4), bool))
    with pytest.raises(TypeError, match="value is required"):
        mha(x)


BROADCAST_MASKS = {   # name: shape of a mask broadcastable to (n, tq, tk) = (2, 3, 5)
    "padding (batch, 1, T_k)": (2, 1, 5),
    "per query (batch, T_q, 1)": (2, 3, 1),
    "shared (1, T_q, T_k)": (1, 3, 5),
    "shared keys (1, 1, T_k)": (1, 1, 5),
    "2-D (T_q, T_k)": (3, 5),
    "2-D (1, T_k)": (1, 5),
}


@pytest.mark.parametrize("shape", list(BROADCAST_MASKS.values()), ids=list(BROADCAST_MASKS))
@pytest.mark.parametrize("step_masks", [False, True])
def test_mha_attention_mask_broadcasts_like_keras(shape, step_masks, rng):
    """An attention_mask broadcastable to (batch, T_q, T_k) (Keras broadcasts it; a
    (batch, 1, T_k) padding mask is the common way to write it) gives exactly what its explicit
    expansion gives, outputs, scores and gradients; with query/value/key masks it combines by
    logical and (Keras), the expansion and-ed with those masks by hand."""
    n, tq, tk = 2, 3, 5
    q, v = rng.standard_normal((n, tq, 4)), rng.standard_normal((n, tk, 3))
    mask = rng.random(shape) > 0.3
    mask[..., 0] = True                             # every row attends to some key
    full = np.broadcast_to(mask, (n, tq, tk))
    kwargs, explicit = {}, full
    if step_masks:
        qm, vm, km = (rng.random((n, t)) > 0.3 for t in (tq, tk, tk))
        kwargs = dict(query_mask=qm, value_mask=vm, key_mask=km)
        explicit = full & qm[:, :, None] & vm[:, None, :] & km[:, None, :]
    mha = L.MultiHeadAttention(2, 2, dtype="float64")
    g = rng.standard_normal((n, tq, 4))
    out, scores, grads = _grads(mha, [q, v], g, attention_mask=mask, **kwargs)
    want, want_s, want_g = _grads(mha, [q, v], g, attention_mask=explicit.copy())
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(scores, want_s)
    for a, b in zip(grads, want_g):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(want, ref.mha(mha.params, q, v, None, 2, 2, 2, explicit)[0],
                               rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["padding (batch, 1, T_k)", "2-D (T_q, T_k)"])
def test_mha_broadcast_mask_against_torch_multihead_attention(kind, rng):
    """A (batch, 1, T_k) attention_mask is torch's key_padding_mask, a (T_q, T_k) one its
    attn_mask (both True where torch may not attend): torch.nn.MultiheadAttention in float64,
    outputs and the gradients of the inputs and of every weight."""
    torch = pytest.importorskip("torch")
    n, tq, tk, h, kd, dv, dk = 2, 3, 5, 2, 2, 3, 4
    e = h * kd                                      # torch's query and output width
    q, v, k = (rng.standard_normal(s) for s in ((n, tq, e), (n, tk, dv), (n, tk, dk)))
    mask = rng.random(BROADCAST_MASKS[kind]) > 0.3
    mask[..., 0] = True
    mha = L.MultiHeadAttention(h, kd, dtype="float64")
    g = rng.standard_normal((n, tq, e))
    out, _, grads = _grads(mha, [q, v, k], g, attention_mask=mask)
    t = torch.nn.MultiheadAttention(e, h, kdim=dk, vdim=dv, batch_first=True,
                                    dtype=torch.float64)
    p = {name: np.asarray(a) for name, a in mha.params.items()}
    with torch.no_grad():
        for name in ("query", "key", "value"):
            getattr(t, f"{name[0]}_proj_weight").copy_(torch.tensor(p[f"{name}_kernel"].T))
        t.in_proj_bias.copy_(torch.tensor(np.concatenate(
            [p[f"{name}_bias"] for name in ("query", "key", "value")])))
        t.out_proj.weight.copy_(torch.tensor(p["output_kernel"].T))
        t.out_proj.bias.copy_(torch.tensor(p["output_bias"]))
    tq_, tv_, tk_ = (torch.tensor(a, requires_grad=True) for a in (q, v, k))
    blocked = torch.tensor(~mask)
    masks = dict(key_padding_mask=blocked[:, 0]) if mask.ndim == 3 else dict(attn_mask=blocked)
    o, _ = t(tq_, tk_, tv_, need_weights=False, **masks)
    (o * torch.tensor(g)).sum().backward()
    np.testing.assert_allclose(out, o.detach().numpy(), rtol=1e-10, atol=1e-12)
    bias = t.in_proj_bias.grad.numpy()
    want = [tq_.grad, tv_.grad, tk_.grad]
    by_name = {"query_kernel": t.q_proj_weight.grad.T, "query_bias": bias[:e],
               "key_kernel": t.k_proj_weight.grad.T, "key_bias": bias[e:2 * e],
               "value_kernel": t.v_proj_weight.grad.T, "value_bias": bias[2 * e:],
               "output_kernel": t.out_proj.weight.grad.T, "output_bias": t.out_proj.bias.grad}
    want += [by_name[w.name.split("/")[-1]] for w in mha.trainable_weights]
    for got, w in zip(grads, want):
        np.testing.assert_allclose(got, np.asarray(w), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("shape", [(2, 2, 5), (3, 5, 1), (5, 3), (5,), (2, 3, 4), (3, 1, 5),
                                   (1, 2, 3, 5)])
def test_mha_attention_mask_that_does_not_broadcast_is_refused(shape, rng):
    """Wrong lengths, swapped axes, a 1-D or a 4-D mask: an error naming the layer, the
    expected and the received shape."""
    q, v = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5, 4))
    with pytest.raises(ValueError, match=r"MultiHeadAttention.*attention_mask must be "
                                         r"broadcastable to \(batch, T_q, T_k\) = \(2, 3, 5\)"
                                         r".*got " + re.escape(str(shape))):
        L.MultiHeadAttention(2, 2)(q, v, attention_mask=np.ones(shape, bool))


def test_transformer_blocks_take_broadcast_attention_masks(rng):
    """The encoder's attention_mask and the decoder's decoder/encoder_attention_mask reach the
    attention layers as given: a (batch, 1, T_k) mask gives what its expansion gives."""
    x, enc = rng.standard_normal((2, 4, 6)), rng.standard_normal((2, 5, 6))
    self_mask = np.array([[[1, 1, 1, 0]], [[1, 1, 1, 1]]], bool)
    cross_mask = np.array([[[1, 1, 0, 0, 0]], [[1, 1, 1, 1, 0]]], bool)
    full = lambda m, t: np.broadcast_to(m, (2, t, m.shape[-1])).copy()   # noqa: E731
    encoder = L.TransformerEncoder(5, 2, dtype="float64")
    np.testing.assert_array_equal(np.asarray(encoder(x, attention_mask=self_mask)),
                                  np.asarray(encoder(x, attention_mask=full(self_mask, 4))))
    dec = L.TransformerDecoder(5, 2, dtype="float64")
    np.testing.assert_array_equal(
        np.asarray(dec(x, enc, decoder_attention_mask=self_mask,
                       encoder_attention_mask=cross_mask)),
        np.asarray(dec(x, enc, decoder_attention_mask=full(self_mask, 4),
                       encoder_attention_mask=full(cross_mask, 4))))
    with pytest.raises(ValueError, match=r"cross_attention.*attention_mask must be broadcastable"
                                         r".*\(2, 4, 5\).*got \(2, 4, 4\)"):
        dec(x, enc, encoder_attention_mask=full(self_mask, 4))


def test_mha_called_with_and_without_a_key(rng):
    """The key defaults to the value: a layer built on (query, value) takes an explicit key of
    the value's shape (the same answer when it is the value); a layer built with a key of other
    features than the value's needs it, and says so."""
    q, v = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5, 4))
    mha = L.MultiHeadAttention(2, 2, dtype="float64")
    out = np.asarray(mha(q, v))
    np.testing.assert_allclose(np.asarray(mha(q, v, v)), out, rtol=1e-12)
    k = rng.standard_normal((2, 5, 4))
    assert not np.allclose(np.asarray(mha(q, v, k)), out)
    with pytest.raises(ValueError, match=r"built without a key.*got \(2, 5, 6\)"):
        mha(q, v, rng.standard_normal((2, 5, 6)))
    wide = L.MultiHeadAttention(2, 2, dtype="float64")
    wide(q, v, rng.standard_normal((2, 5, 6)))
    with pytest.raises(ValueError, match=r"MultiHeadAttention.*built with a key of 6 features.*"
                                         r"\(2, 5, 4\).*the key is the value"):
        wide(q, v)


@pytest.mark.parametrize("kwargs, got", [
    (dict(value_mask=np.ones((2, 4))), r"value_mask must have shape \(2, 5\).*got \(2, 4\)"),
    (dict(key_mask=np.ones(10)), r"key_mask must have shape \(2, 5\).*got \(10,\)"),
    (dict(value_mask=np.ones((5, 2))), r"value_mask.*\(2, 5\) \(batch, time\), got \(5, 2\)"),
    (dict(query_mask=np.ones((2, 5))), r"query_mask must have shape \(2, 3\).*got \(2, 5\)"),
])
def test_mha_mask_shapes_are_checked(kwargs, got, rng):
    """A (time, batch) mask with batch * time elements used to be reshaped silently."""
    q, v = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5, 4))
    with pytest.raises(ValueError, match="MultiHeadAttention.*" + got):
        L.MultiHeadAttention(2, 2)(q, v, **kwargs)


def test_transformer_padding_mask_shapes_are_checked(rng):
    x, enc = rng.standard_normal((2, 5, 4)), rng.standard_normal((2, 3, 4))
    with pytest.raises(ValueError, match=r"TransformerEncoder.*padding_mask must have shape "
                                         r"\(2, 5\).*got \(2, 4\)"):
        L.TransformerEncoder(8, 2)(x, padding_mask=np.ones((2, 4)))
    dec = L.TransformerDecoder(8, 2)
    with pytest.raises(ValueError, match=r"TransformerDecoder.*encoder_padding_mask.*\(2, 3\)"):
        dec(x, enc, encoder_padding_mask=np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"decoder_padding_mask.*\(2, 5\).*got \(5, 2\)"):
        dec(x, enc, decoder_padding_mask=np.ones((5, 2)))
    ok = np.asarray(dec(x, enc, encoder_padding_mask=np.ones((2, 3))))
    np.testing.assert_allclose(ok, np.asarray(dec(x, enc)), rtol=1e-6)


def test_decoder_called_with_and_without_an_encoder_sequence(rng):
    x, enc = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5, 4))
    solo = L.TransformerDecoder(8, 2)
    solo(x)
    with pytest.raises(ValueError, match="TransformerDecoder.*built without an encoder sequence "
                                         ".*called with one"):
        solo(x, enc)
    cross = L.TransformerDecoder(8, 2)
    cross(x, enc)
    with pytest.raises(ValueError, match="built with an encoder sequence.*called without one"):
        cross(x)
    assert np.asarray(cross(x, enc)).shape == (2, 3, 4)


def test_position_embeddings(rng):
    pe = L.PositionalEmbedding(6, 11, 4, mask_zero=True, dtype="float64")
    ids = rng.integers(0, 11, (3, 5))
    ids[0, 3:] = 0
    t = ops.convert_to_tensor(ids)
    g = rng.standard_normal((3, 5, 4))
    with nb.GradientTape() as tape:
        out = pe(t)
        loss = ops.sum(out * g)
    grads = tape.gradient(loss, pe.trainable_weights)
    table = np.asarray(pe.token_embedding.params["embeddings"])
    pos = np.asarray(pe.params["position_embeddings"])
    np.testing.assert_allclose(np.asarray(out), table[ids] + pos[:5], rtol=1e-12)
    np.testing.assert_array_equal(np.asarray(out.mask), (ids != 0).astype(float))
    by_name = {w.name.split("/")[-1]: np.asarray(gr) for w, gr in zip(pe.trainable_weights,
                                                                     grads)}
    want_pos = np.zeros_like(pos)
    want_pos[:5] = g.sum(axis=0)
    want_tok = np.zeros_like(table)
    np.add.at(want_tok, ids, g)
    np.testing.assert_allclose(by_name["position_embeddings"], want_pos, rtol=1e-12)
    np.testing.assert_allclose(by_name["embeddings"], want_tok, rtol=1e-12)
    with pytest.raises(ValueError, match="sequence_length=6"):
        pe(rng.integers(0, 11, (1, 7)))

    sine = L.SinePositionEncoding(dtype="float64")
    x = rng.standard_normal((2, 7, 6))
    pos_, i = np.arange(7)[:, None], np.arange(6)[None, :]
    angle = pos_ / 10000 ** (2 * (i // 2) / 6)
    want = x + np.where(i % 2 == 0, np.sin(angle), np.cos(angle))
    np.testing.assert_allclose(np.asarray(sine(x)), want, rtol=1e-12)


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_block_against_reference_ops(norm_first, rng):
    enc = L.TransformerEncoder(7, 2, norm_first=norm_first, dtype="float64")
    x = rng.standard_normal((2, 5, 6))
    key_mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    out = np.asarray(enc(x, padding_mask=key_mask.astype(np.float64)))
    np.testing.assert_allclose(out, ref.transformer_encoder(enc, x, key_mask), rtol=1e-10,
                               atol=1e-12)
    np.testing.assert_allclose(np.asarray(enc(x)), ref.transformer_encoder(enc, x), rtol=1e-10,
                               atol=1e-12)
    # gradients of the input and of every weight (sublayers included) by central differences
    g = rng.standard_normal(x.shape)
    t = ops.convert_to_tensor(x)
    with nb.GradientTape() as tape:
        tape.watch(t)
        loss = ops.sum(enc(t) * g)
    weights = enc.trainable_weights
    assert len(weights) == 8 + 4 + 4            # attention; two norms; two dense layers
    grads = tape.gradient(loss, [t] + weights)
    xx = np.array(x)
    f = lambda: float(np.sum(ref.transformer_encoder(enc, xx) * g))    # noqa: E731
    assert_gradients_close(np.asarray(grads[0]), numeric_gradient(f, xx), "input")
    for w, got in zip(weights[::3], grads[1::3]):   # every third weight keeps it quick
        assert_gradients_close(np.asarray(got), numeric_gradient(f, w.value), w.name)


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_block_against_reference_ops(norm_first, rng):
    dec = L.TransformerDecoder(5, 2, norm_first=norm_first, dtype="float64")
    x, enc = rng.standard_normal((2, 4, 6)), rng.standard_normal((2, 7, 3))
    enc_mask = np.array([[1] * 5 + [0] * 2, [1] * 7], bool)
    out = np.asarray(dec(x, enc, encoder_padding_mask=enc_mask.astype(np.float64)))
    np.testing.assert_allclose(out, ref.transformer_decoder(dec, x, enc, enc_mask), rtol=1e-10,
                               atol=1e-12)
    # decoder-only (no cross-attention), and causal: a step never sees later steps
    solo = L.TransformerDecoder(5, 2, norm_first=norm_first, dtype="float64")
    y = np.asarray(solo(x))
    np.testing.assert_allclose(y, ref.transformer_decoder(solo, x), rtol=1e-10, atol=1e-12)
    x2 = x.copy()
    x2[:, 2:] += 1.0
    np.testing.assert_allclose(np.asarray(solo(x2))[:, :2], y[:, :2], rtol=1e-12)
    g = rng.standard_normal(x.shape)
    ts = _tensors(x, enc)
    with nb.GradientTape() as tape:
        tape.watch(ts)
        loss = ops.sum(dec(ts[0], ts[1]) * g)
    gx, genc = tape.gradient(loss, ts)
    xx, ee = np.array(x), np.array(enc)
    f = lambda: float(np.sum(ref.transformer_decoder(dec, xx, ee) * g))    # noqa: E731
    assert_gradients_close(np.asarray(gx), numeric_gradient(f, xx), "decoder input")
    assert_gradients_close(np.asarray(genc), numeric_gradient(f, ee), "encoder sequence")


def _reversal_model(t, vocab, width, blocks=2):
    inp = nb.Input((t,), dtype="int64")
    h = L.PositionalEmbedding(t, vocab, width)(inp)
    for _ in range(blocks):
        h = L.TransformerEncoder(2 * width, 4)(h)
    return nb.Model(inp, L.Dense(vocab, activation="softmax")(h))


def test_transformer_saves_and_loads(tmp_path, rng):
    inp = nb.Input((None,), dtype="int64")
    h = L.PositionalEmbedding(8, 7, 8, mask_zero=True)(inp)
    h = L.TransformerEncoder(16, 2, dropout=0.1)(h)
    h = L.TransformerDecoder(16, 2)(h, h)
    model = nb.Model(inp, L.Dense(7, activation="softmax")(h))
    model.compile("adam", "sparse_categorical_crossentropy")
    x = rng.integers(0, 7, (4, 6))
    model.fit(x, x, epochs=1, verbose=0)
    path = tmp_path / "t.npz"
    model.save(path)
    back = nb.load_model(path)
    np.testing.assert_allclose(back.predict(x), model.predict(x), rtol=1e-6, atol=1e-7)
    assert back.predict(x[:, :3]).shape == (4, 3, 7)    # another sequence length


def test_transformer_learns_to_reverse_sequences():
    """Reversing 12 tokens from a vocabulary of 10 needs attention across positions."""
    rng = np.random.default_rng(0)
    t, vocab = 12, 10
    x = rng.integers(0, vocab, (2400, t))
    y = x[:, ::-1].copy()
    nb.seed(0)
    model = _reversal_model(t, vocab, 32)
    model.compile(nb.optimizers.Adam(2e-3), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x[:2000], y[:2000], epochs=4, batch_size=32, verbose=0)
    assert model.evaluate(x[2000:], y[2000:])["accuracy"] >= 0.95


def test_decoder_only_character_model_beats_the_unigram_entropy():
    """A causal decoder on the char-lstm example's text: its held-out loss ends below what a
    model ignoring the context scores (the unigram entropy)."""
    from numbanet.examples import char_lstm, english_text
    text = english_text(20000)
    chars = sorted(set(text))
    ids = np.array([chars.index(c) for c in text])
    x, y = char_lstm.windows(ids, 32)
    nb.seed(0)
    inp = nb.Input((None,), dtype="int64")
    h = L.PositionalEmbedding(32, len(chars), 32)(inp)
    h = L.TransformerDecoder(64, 2)(h)
    model = nb.Model(inp, L.Dense(len(chars), activation="softmax")(h))
    model.compile(nb.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(x[60:], y[60:], epochs=3, batch_size=16, verbose=0)
    entropy = char_lstm.unigram_entropy(ids, len(chars))
    assert model.evaluate(x[:60], y[:60])["loss"] < entropy - 0.2
