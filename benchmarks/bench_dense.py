"""Dense (fully connected) kernels: out = x @ w + b and its two backward passes."""
from . import common

# shape name -> (batch N, inputs I, units U)
SHAPES = {
    "small": (32, 64, 128),
    "medium": (128, 512, 512),
    "large": (256, 1024, 1024),
}


class Dense:
    """dense_forward, dense_backward_input, dense_backward_weight (GEMM-shaped: BLAS on the CPU)."""

    params = [common.BACKENDS, common.SHAPES, common.DTYPES]
    param_names = ["backend", "shape", "dtype"]

    def setup(self, backend, shape, dtype):
        def build():
            be = common.backend(backend)
            common.require(be, "dense_forward", "dense_backward_input", "dense_backward_weight")
            n, i, u = SHAPES[shape]
            s = dict(be=be)
            s["x"], s["w"], s["b"], s["g"] = common.on(
                be, common.normal((n, i), dtype, 1), common.normal((i, u), dtype, 2, 0.05),
                common.normal((u,), dtype, 3), common.normal((n, u), dtype, 4))
            s["out"], s["grad_in"] = be.empty((n, u), dtype), be.empty((n, i), dtype)
            s["grad_w"], s["grad_b"] = be.empty((i, u), dtype), be.empty((u,), dtype)
            vars(self).update(s)
            self.time_forward()
            self.time_backward_input()
            self.time_backward_weight()
            return s
        common.prepare(self, (backend, shape, dtype), build)

    def time_forward(self, *params):
        self.be.dense_forward(self.x, self.w, self.b, self.out)
        self.be.synchronize()

    def time_backward_input(self, *params):
        self.be.dense_backward_input(self.g, self.w, self.grad_in)
        self.be.synchronize()

    def time_backward_weight(self, *params):
        self.be.dense_backward_weight(self.x, self.g, False, self.grad_w, self.grad_b)
        self.be.synchronize()


class DenseTorchRatio:
    """numbanet / PyTorch throughput of a dense layer's forward + full backward (input, weight and
    bias gradients) on the CPU, timed alternately in one process (> 1: numbanet is faster)."""

    params = [common.SHAPES]
    param_names = ["shape"]
    unit = "ratio"
    timeout = 300

    def setup(self, shape):
        self.torch = common.import_torch()
        self.dense = Dense()
        self.dense.setup("cpu", shape, "float32")

    def track_fwd_bwd(self, shape):
        torch, d = self.torch, self.dense

        def ours():
            d.time_forward()
            d.time_backward_input()
            d.time_backward_weight()

        x = torch.from_numpy(d.x.copy()).requires_grad_()
        w = torch.from_numpy(d.w.T.copy()).requires_grad_()      # torch Linear: (U, I)
        b = torch.from_numpy(d.b.copy()).requires_grad_()
        g = torch.from_numpy(d.g.copy())

        def theirs():
            x.grad = w.grad = b.grad = None
            torch.nn.functional.linear(x, w, b).backward(g)

        return common.throughput_ratio(ours, theirs)


class DenseActivation:
    """dense_forward_activation with relu: the forward pass and its activation in one kernel
    (one launch on the GPU; on the CPU the BLAS product, then the activation kernel)."""

    params = [common.BACKENDS, common.SHAPES, common.DTYPES]
    param_names = ["backend", "shape", "dtype"]

    def setup(self, backend, shape, dtype):
        common.prepare_fused_relu(self, Dense, (backend, shape, dtype), "dense_forward_activation")

    def time_forward_relu(self, *params):
        d = self.base
        d.be.dense_forward_activation(d.x, d.w, d.b, self.relu, 0.0, self.pre, d.out)
        d.be.synchronize()
