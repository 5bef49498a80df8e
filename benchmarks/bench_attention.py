"""Attention-softmax kernels (kernels/*/attention.py): the fused masked softmax between the two
batched matmuls of multi-head attention, forward and backward."""
from . import common

# shape name -> (batch rows N, heads, sequence length T = Tq = Tk)
SHAPES = {"small": (2, 2, 8), "medium": (32, 4, 64), "large": (32, 8, 256)}
# variant -> (key-padding mask, causal, dropout rate)
VARIANTS = {"padding": (True, False, 0.0), "causal": (False, True, 0.0),
            "dropout": (True, False, 0.1)}


class AttentionSoftmax:
    """attention_softmax_forward / backward over (N * heads, T, T) scores, scale 1/8:
    ``padding``: a key-padding mask (the last quarter of the keys of every other batch row);
    ``causal``: the causal mask alone; ``dropout``: the padding mask and dropout 0.1 (else
    weights is probs, as a layer without dropout passes it)."""

    params = [common.BACKENDS, list(VARIANTS), common.SHAPES, common.DTYPES]
    param_names = ["backend", "variant", "shape", "dtype"]

    def setup(self, backend, variant, shape, dtype):
        def build():
            import numpy as np
            be = common.backend(backend)
            common.require(be, "attention_softmax_forward", "attention_softmax_backward")
            n, heads, t = SHAPES[shape]
            padding, causal, rate = VARIANTS[variant]
            dims = (n * heads, t, t)
            mask = np.zeros(0, np.uint8)
            if padding:
                mask = np.ones((n, t, t), np.uint8)
                mask[1::2, :, t - t // 4:] = 0
            s = dict(be=be, heads=heads, causal=causal, rate=rate)
            s["scores"], s["g"], s["mask"] = common.on(
                be, common.normal(dims, dtype, 1, 3.0), common.normal(dims, dtype, 2), mask)
            s["u"] = common.on(be, common.uniform(dims, dtype, salt=3) if rate > 0
                               else np.zeros(0, dtype))
            s["probs"], s["grad"] = be.empty(dims, dtype), be.empty(dims, dtype)
            s["weights"] = be.empty(dims, dtype) if rate > 0 else s["probs"]
            vars(self).update(s)
            self.time_forward()             # also computes probs for the backward
            self.time_backward()
            return s
        common.prepare(self, (backend, variant, shape, dtype), build)

    def time_forward(self, *params):
        self.be.attention_softmax_forward(self.scores, self.mask, self.heads, self.causal, 0.125,
                                          self.u, self.rate, self.probs, self.weights)
        self.be.synchronize()

    def time_backward(self, *params):
        self.be.attention_softmax_backward(self.probs, self.u, self.rate, 0.125, self.g,
                                           self.grad)
        self.be.synchronize()
