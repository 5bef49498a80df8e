"""Activation kernels: elementwise over flat arrays, softmax row-wise over (rows, cols)."""
from . import common

ACTIVATIONS = ["linear", "relu", "leaky_relu", "elu", "gelu", "gelu_tanh", "sigmoid", "tanh",
               "softplus", "mish", "softmax"]
# shape name -> number of elements; softmax takes them as (elements // cols, cols)
SIZES = {"small": 4096, "medium": 1 << 18, "large": 1 << 21}
SOFTMAX_COLS = {"small": 64, "medium": 512, "large": 1024}
ALPHA = 0.1                           # leaky_relu slope, elu alpha; ignored by the others


class Activation:
    """<name>_forward(x, alpha, out) and <name>_backward(x, y, grad_out, alpha, grad_in)."""

    params = [common.BACKENDS, ACTIVATIONS, common.SHAPES, common.DTYPES]
    param_names = ["backend", "activation", "shape", "dtype"]

    def setup(self, backend, activation, shape, dtype):
        def build():
            be = common.backend(backend)
            common.require(be, f"{activation}_forward", f"{activation}_backward")
            size = SIZES[shape]
            dims = ((size // SOFTMAX_COLS[shape], SOFTMAX_COLS[shape]) if activation == "softmax"
                    else (size,))
            s = dict(be=be, fwd=be.kernels[f"{activation}_forward"],
                     bwd=be.kernels[f"{activation}_backward"])
            s["x"], s["g"] = common.on(be, common.normal(dims, dtype, 1, 3.0),
                                       common.normal(dims, dtype, 2))
            s["y"], s["grad_in"] = be.empty(dims, dtype), be.empty(dims, dtype)
            vars(self).update(s)
            self.time_forward()             # also computes y for the backward
            self.time_backward()
            return s
        common.prepare(self, (backend, activation, shape, dtype), build)

    def time_forward(self, *params):
        self.fwd(self.x, ALPHA, self.y)
        self.be.synchronize()

    def time_backward(self, *params):
        self.bwd(self.x, self.y, self.g, ALPHA, self.grad_in)
        self.be.synchronize()
