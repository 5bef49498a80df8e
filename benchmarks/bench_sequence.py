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

    def make(self, nb, layer, shape, dtype):
        """(layer, its input shape(s) without the batch, host input, output shape)."""
        lay, in_shape = make_layer(nb, layer, shape, dtype)
        n, _, _, _, v = SHAPES[shape]
        if layer == "embedding":
            x = common.labels(n * in_shape[0], v, 1).reshape(n, *in_shape)
        else:
            x = common.normal((n, *in_shape), dtype, 1)
        return lay, in_shape, x, (n, *lay.compute_output_shape(in_shape))

    def setup(self, backend, layer, shape, dtype):
        def build():
            import numbanet as nb
            be = common.backend(backend)
            lay, in_shape, x, out_shape = self.make(nb, layer, shape, dtype)
            lay.set_backend(be)
            lay.build(in_shape)
            s = dict(layer=lay, be=be)
            s["x"], s["g"] = common.on(be, x, common.normal(out_shape, dtype, 2))
            if isinstance(in_shape, list):              # self-attention: the same x twice
                s["x"] = [s["x"]] * len(in_shape)
            vars(self).update(s)
            self.time_forward_backward()
            return s
        common.prepare(self, (backend, layer, shape, dtype), build)

    def time_forward_backward(self, *params):
        self.layer.forward(self.x, training=True)
        self.layer.backward(self.g)
        self.be.synchronize()


class _TorchRatio:
    """numbanet / PyTorch throughput of one layer's forward + backward on the CPU, float32,
    timed alternately in one process (> 1: numbanet is faster); ``theirs`` builds torch's."""

    params = [common.SHAPES]
    param_names = ["shape"]
    unit = "ratio"
    timeout = 300
    ours_class, layer = None, None

    def setup(self, shape):
        self.torch = common.import_torch()
        self.ours = self.ours_class()
        self.ours.setup("cpu", self.layer, shape, "float32")

    def track_fwd_bwd(self, shape):
        self.torch.manual_seed(common.SEED)
        return common.throughput_ratio(self.ours.time_forward_backward,
                                       self.theirs(self.torch, self.ours, shape))


class EmbeddingTorchRatio(_TorchRatio):
    """The Embedding's lookup and backward (the scatter-add into a dense gradient) against
    torch.nn.Embedding."""

    ours_class, layer = SequenceLayer, "embedding"

    def theirs(self, torch, o, shape):
        _, _, _, u, v = SHAPES[shape]
        emb = torch.nn.Embedding(v, u)
        ids, g = torch.from_numpy(o.x.copy()), torch.from_numpy(o.g.copy())

        def run():
            emb.zero_grad(set_to_none=True)
            emb(ids).backward(g)
        return run


# attention: shape name -> (batch N, steps T, width D, heads H)
ATTENTION_SHAPES = {
    "small": (4, 8, 16, 2),
    "medium": (32, 64, 128, 4),
    "large": (32, 256, 256, 8),
}


class Attention(SequenceLayer):
    """MultiHeadAttention (self-attention) and a TransformerEncoder block: forward + backward
    of every input and weight gradient."""

    params = [common.BACKENDS, ["mha", "transformer_encoder"], common.SHAPES, common.DTYPES]

    def make(self, nb, layer, shape, dtype):
        n, t, d, h = ATTENTION_SHAPES[shape]
        if layer == "mha":
            lay, in_shape = nb.layers.MultiHeadAttention(h, d // h, dtype=dtype), [(t, d)] * 2
        else:
            lay, in_shape = nb.layers.TransformerEncoder(2 * d, h, dtype=dtype), (t, d)
        return lay, in_shape, common.normal((n, t, d), dtype, 1), (n, t, d)


class AttentionTorchRatio(_TorchRatio):
    """Multi-head self-attention against torch.nn.MultiheadAttention."""

    ours_class, layer = Attention, "mha"

    def theirs(self, torch, o, shape):
        _, _, d, h = ATTENTION_SHAPES[shape]
        mha = torch.nn.MultiheadAttention(d, h, batch_first=True)
        x = torch.from_numpy(np.array(o.x[0])).requires_grad_()
        g = torch.from_numpy(np.array(o.g))

        def run():
            x.grad = None
            mha.zero_grad(set_to_none=True)
            mha(x, x, x, need_weights=False)[0].backward(g)
        return run
