"""2-D convolution kernels (NCHW input, OIHW weight), forward and backward."""
from . import common

# shape name -> (N, C, H, W, K filters, kernel size, stride, padding); dilation 1
SHAPES = {
    "small": (8, 3, 16, 16, 8, 3, 1, 1),
    "medium": (32, 32, 14, 14, 64, 3, 1, 1),       # LeNet's second convolution
    "large": (32, 64, 28, 28, 64, 3, 1, 1),
}


# The layers benchmarks/vs_torch.py compares with PyTorch (float32, CPU), as (N, C, H, W, K, kernel
# size, stride, padding): Winograd (3x3 stride 1) at three sizes, and a strided 3x3 (GEMM).
LAYERS = {
    "N128-C32-14x14-K64": (128, 32, 14, 14, 64, 3, 1, 1),
    "N32-C64-56x56-K64": (32, 64, 56, 56, 64, 3, 1, 1),
    "N128-C64-7x7-K128": (128, 64, 7, 7, 128, 3, 1, 1),
    "N128-C32-14x14-K64-s2": (128, 32, 14, 14, 64, 3, 2, 1),
}


def out_size(size, k, stride, pad):
    return (size + 2 * pad - k) // stride + 1


class Conv2D:
    """conv2d_forward, conv2d_backward_input, conv2d_backward_params (weight + bias)."""

    params = [common.BACKENDS, common.SHAPES, common.DTYPES]
    param_names = ["backend", "shape", "dtype"]

    def setup(self, backend, shape, dtype):
        def build():
            be = common.backend(backend)
            common.require(be, "conv2d_forward", "conv2d_backward_input",
                           "conv2d_backward_params")
            n, c, h, w, k, ks, st, pad = SHAPES[shape] if shape in SHAPES else LAYERS[shape]
            oh, ow = out_size(h, ks, st, pad), out_size(w, ks, st, pad)
            s = dict(be=be, geometry=(st, st, pad, pad, 1, 1))
            s["x"], s["w"], s["b"], s["g"] = common.on(
                be, common.normal((n, c, h, w), dtype, 1),
                common.normal((k, c, ks, ks), dtype, 2, (c * ks * ks) ** -0.5),
                common.normal((k,), dtype, 3), common.normal((n, k, oh, ow), dtype, 4))
            s["out"] = be.empty((n, k, oh, ow), dtype)
            s["grad_in"] = be.empty((n, c, h, w), dtype)
            s["grad_w"], s["grad_b"] = be.empty((k, c, ks, ks), dtype), be.empty((k,), dtype)
            vars(self).update(s)
            self.time_forward()
            self.time_backward_input()
            self.time_backward_weight()
            return s
        common.prepare(self, (backend, shape, dtype), build)

    def time_forward(self, *params):
        self.be.conv2d_forward(self.x, self.w, self.b, *self.geometry, self.out)
        self.be.synchronize()

    def time_backward_input(self, *params):
        self.be.conv2d_backward_input(self.g, self.w, *self.geometry, self.grad_in)
        self.be.synchronize()

    def time_backward_weight(self, *params):
        """Weight and bias gradients (what a layer's backward computes besides the input's)."""
        self.be.conv2d_backward_params(self.x, self.g, *self.geometry, False, self.grad_w,
                                       self.grad_b)
        self.be.synchronize()


class Conv2DLayers:
    """Forward + full backward (input, weight and bias gradients) of the layers the PyTorch
    comparison tracks, float32 on the CPU."""

    params = [list(LAYERS)]
    param_names = ["layer"]
    timeout = 300

    def setup(self, layer):
        self.conv = Conv2D()
        self.conv.setup("cpu", layer, "float32")

    def time_fwd_bwd(self, layer):
        self.conv.time_forward()
        self.conv.time_backward_input()
        self.conv.time_backward_weight()


class Conv2DTorchRatio:
    """numbanet / PyTorch throughput of a convolution's forward + full backward on the CPU,
    timed alternately in one process (> 1: numbanet is faster): the suite's shapes and the
    layers of Conv2DLayers."""

    params = [common.SHAPES + list(LAYERS)]
    param_names = ["shape"]
    unit = "ratio"
    timeout = 300

    def setup(self, shape):
        self.torch = common.import_torch()
        self.conv = Conv2D()
        self.conv.setup("cpu", shape, "float32")

    def track_fwd_bwd(self, shape):
        torch, cv = self.torch, self.conv
        st, _, pad, _, _, _ = cv.geometry

        def ours():
            cv.time_forward()
            cv.time_backward_input()
            cv.time_backward_weight()

        x = torch.from_numpy(cv.x.copy()).requires_grad_()
        w = torch.from_numpy(cv.w.copy()).requires_grad_()
        b = torch.from_numpy(cv.b.copy()).requires_grad_()
        g = torch.from_numpy(cv.g.copy())

        def theirs():
            x.grad = w.grad = b.grad = None
            torch.nn.functional.conv2d(x, w, b, stride=st, padding=pad).backward(g)

        return common.throughput_ratio(ours, theirs)


class Conv2DActivation:
    """conv2d_forward_activation with relu: the forward pass and its activation in one kernel
    (one launch on the GPU; on the CPU the convolution, then the activation kernel)."""

    params = [common.BACKENDS, common.SHAPES, common.DTYPES]
    param_names = ["backend", "shape", "dtype"]

    def setup(self, backend, shape, dtype):
        common.prepare_fused_relu(self, Conv2D, (backend, shape, dtype),
                                  "conv2d_forward_activation")

    def time_forward_relu(self, *params):
        c = self.base
        c.be.conv2d_forward_activation(c.x, c.w, c.b, *c.geometry, self.relu, 0.0, self.pre,
                                       c.out)
        c.be.synchronize()
