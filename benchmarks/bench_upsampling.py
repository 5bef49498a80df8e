"""Upsampling: the nearest-neighbour upsample kernels (2x2), and a Conv2DTranspose layer's forward
+ backward (the convolution's input-gradient kernel forward, its forward and weight gradient
backward)."""
from . import common

# shape name -> (N, C, H, W) of the upsampling input (the output is (N, C, 2H, 2W))
SHAPES = {
    "small": (8, 8, 16, 16),
    "medium": (32, 32, 28, 28),
    "large": (64, 64, 32, 32),
}
SIZE = (2, 2)

# shape name -> (N, C, H, W, filters, kernel size, stride), padding "same": a decoder's
# upsampling step (output (N, filters, stride*H, stride*W))
TRANSPOSE_SHAPES = {
    "small": (8, 8, 7, 7, 4, 3, 2),
    "medium": (64, 32, 14, 14, 16, 4, 2),
    "large": (64, 64, 28, 28, 32, 4, 2),
}


class UpSample2D:
    """upsample2d_forward / upsample2d_backward by 2x2."""

    params = [common.BACKENDS, common.SHAPES, common.DTYPES]
    param_names = ["backend", "shape", "dtype"]

    def setup(self, backend, shape, dtype):
        def build():
            be = common.backend(backend)
            common.require(be, "upsample2d_forward", "upsample2d_backward")
            n, c, h, w = SHAPES[shape]
            oh, ow = h * SIZE[0], w * SIZE[1]
            s = dict(be=be)
            s["x"], s["g"] = common.on(be, common.normal((n, c, h, w), dtype, 1),
                                       common.normal((n, c, oh, ow), dtype, 2))
            s["out"], s["grad_in"] = be.empty((n, c, oh, ow), dtype), be.empty((n, c, h, w), dtype)
            vars(self).update(s)
            self.time_forward()
            self.time_backward()
            return s
        common.prepare(self, (backend, shape, dtype), build)

    def time_forward(self, *params):
        self.be.upsample2d_forward(self.x, *SIZE, self.out)
        self.be.synchronize()

    def time_backward(self, *params):
        self.be.upsample2d_backward(self.g, *SIZE, self.grad_in)
        self.be.synchronize()


class Conv2DTransposeLayer:
    """A Conv2DTranspose layer (padding "same", bias, no activation): forward, and forward +
    backward (input, kernel and bias gradients) through the single-layer API."""

    params = [common.BACKENDS, common.SHAPES, common.DTYPES]
    param_names = ["backend", "shape", "dtype"]
    timeout = 300

    def setup(self, backend, shape, dtype):
        def build():
            be = common.backend(backend)
            common.require(be, "conv2d_backward_input", "conv2d_forward",
                           "conv2d_backward_weight", "conv2d_backward_bias")
            import numbanet as nb
            if not hasattr(nb.layers, "Conv2DTranspose"):
                raise NotImplementedError("this numbanet has no Conv2DTranspose")
            n, c, h, w, f, k, st = TRANSPOSE_SHAPES[shape]
            nb.seed(common.SEED)
            layer = nb.layers.Conv2DTranspose(f, k, strides=st, padding="same", dtype=dtype)
            layer._move_to(be)
            layer.build((c, h, w))
            s = dict(be=be, layer=layer)
            s["x"], s["g"] = common.on(be, common.normal((n, c, h, w), dtype, 1),
                                       common.normal((n, f, st * h, st * w), dtype, 2))
            vars(self).update(s)
            self.time_forward()
            self.time_forward_backward()
            return s
        common.prepare(self, (backend, shape, dtype), build)

    def time_forward(self, *params):
        self.layer.forward(self.x, training=True)
        self.be.synchronize()

    def time_forward_backward(self, *params):
        self.layer.forward(self.x, training=True)
        self.layer.backward(self.g)
        self.be.synchronize()
