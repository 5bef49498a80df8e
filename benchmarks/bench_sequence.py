"""Sequence layers through the public layer API: forward + backward of Embedding, Conv1D, the 1-D
pools, the recurrent layers (input projection, whole-sequence recurrence and their gradients),
multi-head attention and a transformer encoder block; the Embedding and the attention against
PyTorch."""
import numpy as np

from . import common

# shape name -> (batch N, steps T, features F, units or filters U, vocabulary V)
SHAPES = {
    "small": (8, 20, 16, 32, 1000),
    "medium": (64, 100, 64, 128, 20000),
    "large": (128, 200, 128, 256, 50000),
}
LAYERS = ["embedding", "conv1d", "maxpool1d", "avgpool1d", "simple_rnn", "lstm", "gru"]


def make_layer(nb, name, shape, dtype="float32"):
    """(layer, input shape without the batch) for ``name`` at ``shape``."""
    n, t, f, u, v = SHAPES[shape]
    L = nb.layers
    return {
        "embedding": (L.Embedding(v, u, dtype=dtype), (t,)),
        "conv1d": (L.Conv1D(u, 3, padding="same", dtype=dtype), (f, t)),
        "maxpool1d": (L.MaxPool1D(2, dtype=dtype), (f, t)),
        "avgpool1d": (L.AvgPool1D(2, dtype=dtype), (f, t)),
        "simple_rnn": (L.SimpleRNN(u, return_sequences=True, dtype=dtype), (t, f)),
        "lstm": (L.LSTM(u, return_sequences=True, dtype=dtype), (t, f)),
        "gru": (L.GRU(u, return_sequences=True, dtype=dtype), (t, f)),
    }[name]


class SequenceLayer:
    """``layer.forward(x, training=True)`` then ``layer.backward(grad)`` on backend arrays."""

    params = [common.BACKENDS, LAYERS, common.SHAPES, common.DTYPES]
    param_names = ["backend", "layer", "shape", "dtype"]

    def setup(self, backend, layer, shape, dtype):
        def build():
            import numbanet as nb
            be = common.backend(backend)
            lay, in_shape = make_layer(nb, layer, shape, dtype)
            lay.set_backend(be)
            lay.build(in_shape)
            n, _, _, _, v = SHAPES[shape]
            if layer == "embedding":
                x = common.labels(n * in_shape[0], v, 1).reshape(n, *in_shape)
            else:
                x = common.normal((n, *in_shape), dtype, 1)
            out_shape = (n, *lay.compute_output_shape(in_shape))
            s = dict(layer=lay, be=be)
            s["x"], s["g"] = common.on(be, x, common.normal(out_shape, dtype, 2))
            vars(self).update(s)
            self.time_forward_backward()
            return s
        common.prepare(self, (backend, layer, shape, dtype), build)

    def time_forward_backward(self, *params):
        self.layer.forward(self.x, training=True)
        self.layer.backward(self.g)
        self.be.synchronize()


class EmbeddingTorchRatio:
    """numbanet / PyTorch throughput of an Embedding's lookup + backward (the scatter-add into a
    dense gradient) on the CPU, float32, timed alternately in one process (> 1: faster)."""

    params = [common.SHAPES]
    param_names = ["shape"]
    unit = "ratio"
    timeout = 300

    def setup(self, shape):
        self.torch = common.import_torch()
        self.ours = SequenceLayer()
        self.ours.setup("cpu", "embedding", shape, "float32")

    def track_fwd_bwd(self, shape):
        torch, o = self.torch, self.ours
        _, _, _, u, v = SHAPES[shape]
        torch.manual_seed(common.SEED)
        emb = torch.nn.Embedding(v, u)
        ids, g = torch.from_numpy(o.x.copy()), torch.from_numpy(o.g.copy())

        def theirs():
            emb.zero_grad(set_to_none=True)
            emb(ids).backward(g)

        return common.throughput_ratio(o.time_forward_backward, theirs)


# attention: shape name -> (batch N, steps T, width D, heads H)
ATTENTION_SHAPES = {
    "small": (4, 8, 16, 2),
    "medium": (32, 64, 128, 4),
    "large": (32, 256, 256, 8),
}


class Attention:
    """MultiHeadAttention (self-attention) and a TransformerEncoder block: forward + backward
    of every input and weight gradient."""

    params = [common.BACKENDS, ["mha", "transformer_encoder"], common.SHAPES, common.DTYPES]
    param_names = ["backend", "layer", "shape", "dtype"]

    def setup(self, backend, layer, shape, dtype):
        def build():
            import numbanet as nb
            be = common.backend(backend)
            n, t, d, h = ATTENTION_SHAPES[shape]
            if layer == "mha":
                lay = nb.layers.MultiHeadAttention(h, d // h, dtype=dtype)
                in_shape = [(t, d), (t, d)]
            else:
                lay = nb.layers.TransformerEncoder(2 * d, h, dtype=dtype)
                in_shape = (t, d)
            lay.set_backend(be)
            lay.build(in_shape)
            x, g = common.on(be, common.normal((n, t, d), dtype, 1),
                             common.normal((n, t, d), dtype, 2))
            s = dict(layer=lay, be=be, x=[x, x] if layer == "mha" else x, g=g)
            vars(self).update(s)
            self.time_forward_backward()
            return s
        common.prepare(self, (backend, layer, shape, dtype), build)

    def time_forward_backward(self, *params):
        self.layer.forward(self.x, training=True)
        self.layer.backward(self.g)
        self.be.synchronize()


class AttentionTorchRatio:
    """numbanet / PyTorch throughput of multi-head self-attention forward + backward on the CPU
    (float32) against torch.nn.MultiheadAttention, timed alternately (> 1: faster)."""

    params = [common.SHAPES]
    param_names = ["shape"]
    unit = "ratio"
    timeout = 300

    def setup(self, shape):
        self.torch = common.import_torch()
        self.ours = Attention()
        self.ours.setup("cpu", "mha", shape, "float32")

    def track_fwd_bwd(self, shape):
        torch, o = self.torch, self.ours
        _, _, d, h = ATTENTION_SHAPES[shape]
        torch.manual_seed(common.SEED)
        mha = torch.nn.MultiheadAttention(d, h, batch_first=True)
        x = torch.from_numpy(np.array(o.x[0])).requires_grad_()
        g = torch.from_numpy(np.array(o.g))

        def theirs():
            x.grad = None
            mha.zero_grad(set_to_none=True)
            mha(x, x, x, need_weights=False)[0].backward(g)

        return common.throughput_ratio(o.time_forward_backward, theirs)
