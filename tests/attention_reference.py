"""float64 NumPy references of multi-head attention and the Transformer blocks, written from the
definitions (per head, with explicit masks) for tests/test_attention.py."""
import numpy as np


def softmax_masked(s, allowed):
    """Softmax over the last axis of the allowed entries; rows with none allowed are zeros."""
    s = np.where(allowed, s, -np.inf)
    top = s.max(axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    e = np.where(allowed, np.exp(s - top), 0.0)
    total = e.sum(axis=-1, keepdims=True)
    return np.divide(e, total, out=np.zeros_like(e), where=total > 0)


def mha(params, q, v, k=None, num_heads=1, key_dim=1, value_dim=None, mask=None, causal=False):
    """(output, weights (n, heads, tq, tk)); ``mask`` (n, tq, tk) bool, True = attend."""
    k = v if k is None else k
    value_dim = value_dim or key_dim
    p = {name: np.asarray(a, np.float64) for name, a in params.items()}
    bias = lambda name: p.get(f"{name}_bias", 0.0)                      # noqa: E731
    Q = q @ p["query_kernel"] + bias("query")
    K = k @ p["key_kernel"] + bias("key")
    V = v @ p["value_kernel"] + bias("value")
    n, tq, tk = q.shape[0], q.shape[1], k.shape[1]
    allowed = np.ones((n, tq, tk), bool) if mask is None else np.asarray(mask, bool)
    if causal:
        allowed = allowed & np.tril(np.ones((tq, tk), bool))
    heads, weights = [], []
    for h in range(num_heads):
        qh = Q[..., h * key_dim:(h + 1) * key_dim]
        kh = K[..., h * key_dim:(h + 1) * key_dim]
        vh = V[..., h * value_dim:(h + 1) * value_dim]
        w = softmax_masked(qh @ kh.transpose(0, 2, 1) / np.sqrt(key_dim), allowed)
        weights.append(w)
        heads.append(w @ vh)
    out = np.concatenate(heads, axis=-1) @ p["output_kernel"] + bias("output")
    return out, np.stack(weights, axis=1)


def layer_norm(x, gamma, beta, eps):
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * gamma + beta


def _params(layer):
    return {k: np.asarray(v, np.float64) for k, v in layer.params.items()}


def _norm(layer, x):
    p = _params(layer)
    return layer_norm(x, p["gamma"], p["beta"], layer.epsilon)


def _dense(layer, x, relu=False):
    p = _params(layer)
    y = x @ p["kernel"] + p["bias"]
    return np.maximum(y, 0.0) if relu else y


def _residual(block, x, norm_layer, fn):
    if block.norm_first:
        return x + fn(_norm(norm_layer, x))
    return _norm(norm_layer, x + fn(x))


def _attention(layer, q, v, mask=None, causal=False):
    return mha(_params(layer), q, v, num_heads=layer.num_heads, key_dim=layer.key_dim,
               value_dim=layer.value_dim, mask=mask, causal=causal)[0]


def _feedforward(block, x):
    return _residual(block, x, block.feedforward_norm, lambda h: _dense(
        block.output_dense, _dense(block.intermediate_dense, h, relu=True)))


def transformer_encoder(block, x, key_mask=None):
    """A relu TransformerEncoder without dropout; ``key_mask`` (n, t) bool."""
    mask = None if key_mask is None else np.broadcast_to(
        key_mask[:, None, :], (x.shape[0], x.shape[1], x.shape[1]))
    x = _residual(block, x, block.self_attention_norm,
                  lambda h: _attention(block.self_attention, h, h, mask))
    return _feedforward(block, x)


def transformer_decoder(block, x, enc=None, enc_key_mask=None):
    """A relu TransformerDecoder without dropout: causal self-attention, cross-attention."""
    x = _residual(block, x, block.self_attention_norm,
                  lambda h: _attention(block.self_attention, h, h, causal=True))
    if enc is not None:
        mask = None if enc_key_mask is None else np.broadcast_to(
            enc_key_mask[:, None, :], (x.shape[0], x.shape[1], enc.shape[1]))
        x = _residual(block, x, block.cross_attention_norm,
                      lambda h: _attention(block.cross_attention, h, enc, mask))
    return _feedforward(block, x)
