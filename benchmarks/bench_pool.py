"""2-D pooling kernels (max with argmax, average), 2x2 windows with stride 2; global pooling."""
import numpy as np

from . import common

# shape name -> (N, C, H, W)
SHAPES = {
    "small": (8, 8, 16, 16),
    "medium": (32, 32, 28, 28),
    "large": (64, 64, 32, 32),
}
POOL = (2, 2, 2, 2, 0, 0)            # pool_h, pool_w, stride_h, stride_w, pad_h, pad_w


class Pool2D:
    """max_pool2d_forward/backward and avg_pool2d_forward/backward."""

    params = [common.BACKENDS, ["max", "avg"], common.SHAPES, common.DTYPES]
    param_names = ["backend", "pool", "shape", "dtype"]

    def setup(self, backend, pool, shape, dtype):
        def build():
            be = common.backend(backend)
            common.require(be, f"{pool}_pool2d_forward", f"{pool}_pool2d_backward")
            n, c, h, w = SHAPES[shape]
            oh, ow = h // 2, w // 2
            s = dict(be=be, pool=pool)
            s["x"], s["g"] = common.on(be, common.normal((n, c, h, w), dtype, 1),
                                       common.normal((n, c, oh, ow), dtype, 2))
            s["out"], s["grad_in"] = be.empty((n, c, oh, ow), dtype), be.empty((n, c, h, w), dtype)
            s["argmax"] = be.empty((n, c, oh, ow), np.int64)
            vars(self).update(s)
            self.time_forward()             # also fills argmax for the max-pool backward
            self.time_backward()
            return s
        common.prepare(self, (backend, pool, shape, dtype), build)

    def time_forward(self, *params):
        if self.pool == "max":
            self.be.max_pool2d_forward(self.x, *POOL, self.out, self.argmax)
        else:
            self.be.avg_pool2d_forward(self.x, *POOL, self.out)
        self.be.synchronize()

    def time_backward(self, *params):
        if self.pool == "max":
            self.be.max_pool2d_backward(self.g, self.argmax, self.grad_in)
        else:
            self.be.avg_pool2d_backward(self.g, *POOL, self.grad_in)
        self.be.synchronize()


class GlobalPool:
    """global_{max,avg}_pool_forward/backward over an (N, C, H, W) batch seen as (N*C, H*W)
    rows (one output per channel of each image)."""

    params = [common.BACKENDS, ["max", "avg"], common.SHAPES, common.DTYPES]
    param_names = ["backend", "kind", "shape", "dtype"]

    def setup(self, backend, kind, shape, dtype):
        def build():
            be = common.backend(backend)
            common.require(be, f"global_{kind}_pool_forward", f"global_{kind}_pool_backward")
            n, c, h, w = SHAPES[shape]
            rows, cols = n * c, h * w
            s = dict(be=be, kind=kind)
            s["x"], s["g"] = common.on(be, common.normal((rows, cols), dtype, 1),
                                       common.normal((rows,), dtype, 2))
            s["out"], s["grad_in"] = be.empty((rows,), dtype), be.empty((rows, cols), dtype)
            s["argmax"] = be.empty((rows,), np.int64)
            vars(self).update(s)
            self.time_forward()             # also fills argmax for the max-pool backward
            self.time_backward()
            return s
        common.prepare(self, (backend, kind, shape, dtype), build)

    def time_forward(self, *params):
        if self.kind == "max":
            self.be.global_max_pool_forward(self.x, self.out, self.argmax)
        else:
            self.be.global_avg_pool_forward(self.x, self.out)
        self.be.synchronize()

    def time_backward(self, *params):
        if self.kind == "max":
            self.be.global_max_pool_backward(self.g, self.argmax, self.grad_in)
        else:
            self.be.global_avg_pool_backward(self.g, self.grad_in)
        self.be.synchronize()
