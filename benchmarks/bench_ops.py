"""Op-library kernels (kernels/*/ops.py): broadcasting binary ops, sums over axes, batched
matmul, take (gather and scatter-add) and log-softmax."""
import math

from . import common

# shape name -> (rows, cols) of the elementwise and reduction benchmarks
MATRIX = {"small": (64, 64), "medium": (512, 512), "large": (2048, 1024)}
# shape name -> (batch, m, k, n)
MATMUL = {"small": (4, 32, 32, 32), "medium": (16, 64, 64, 64), "large": (32, 128, 128, 128)}
# shape name -> (table rows, row length, indices): an embedding lookup
TAKE = {"small": (1000, 32, 256), "medium": (10000, 128, 4096), "large": (50000, 256, 16384)}
# shape name -> (rows, classes)
LOG_SOFTMAX = {"small": (64, 10), "medium": (1024, 100), "large": (4096, 1000)}


def pad6(*dims):
    """A shape or strides tuple of the op kernels (6 entries, padded at the front)."""
    return (1,) * (6 - len(dims)) + dims


class Binary:
    """binary_forward/backward of x (rows, cols) times y: the same shape (the flat path), a row
    (cols,) broadcast over the rows, or (rows, 1) times (1, cols) (both broadcast)."""

    params = [common.BACKENDS, ["none", "row", "outer"], common.SHAPES, common.DTYPES]
    param_names = ["backend", "broadcast", "shape", "dtype"]

    def setup(self, backend, broadcast, shape, dtype):
        def build():
            be = common.backend(backend)
            common.require(be, "binary_forward", "binary_backward")
            from numbanet.kernels.scalar import BINARY_CODES
            rows, cols = MATRIX[shape]
            a_shape, b_shape, sa, sb = {
                "none": ((rows, cols), (rows, cols), (cols, 1), (cols, 1)),
                "row": ((rows, cols), (cols,), (cols, 1), (0, 1)),
                "outer": ((rows, 1), (1, cols), (1, 0), (0, 1))}[broadcast]
            n = rows * cols
            s = dict(be=be, code=BINARY_CODES.index("multiply"), shape=pad6(rows, cols),
                     sa=(0,) * 4 + sa, sb=(0,) * 4 + sb)
            s["a"], s["b"], s["g"] = common.on(
                be, common.normal(a_shape, dtype, 1).reshape(-1),
                common.normal(b_shape, dtype, 2).reshape(-1), common.normal((n,), dtype, 3))
            s["out"], s["grad_a"], s["grad_b"] = (be.empty((n,), dtype) for _ in range(3))
            vars(self).update(s)
            self.time_forward()
            self.time_backward()
            return s
        common.prepare(self, (backend, broadcast, shape, dtype), build)

    def time_forward(self, *params):
        self.be.binary_forward(self.code, self.a, self.b, self.shape, self.sa, self.sb, self.out)
        self.be.synchronize()

    def time_backward(self, *params):
        self.be.binary_backward(self.code, self.a, self.b, self.g, self.shape, self.sa, self.sb,
                                self.grad_a, self.grad_b)
        self.be.synchronize()


class ReduceSum:
    """reduce_sum of x (rows, cols): everything, each row, or each column."""

    params = [common.BACKENDS, ["all", "rows", "columns"], common.SHAPES, common.DTYPES]
    param_names = ["backend", "axes", "shape", "dtype"]

    def setup(self, backend, axes, shape, dtype):
        def build():
            be = common.backend(backend)
            common.require(be, "reduce_sum")
            rows, cols = MATRIX[shape]
            z4 = (0,) * 4
            keep, ks, red, rs = {
                "all": (pad6(), (0,) * 6, pad6(rows, cols), z4 + (cols, 1)),
                "rows": (pad6(rows), z4 + (0, cols), pad6(cols), z4 + (0, 1)),
                "columns": (pad6(cols), z4 + (0, 1), pad6(rows), z4 + (0, cols))}[axes]
            s = dict(be=be, args=(keep, ks, red, rs, 1.0))
            s["x"] = common.on(be, common.normal((rows * cols,), dtype, 1))
            s["out"] = be.empty((math.prod(keep),), dtype)
            vars(self).update(s)
            self.time_reduce_sum()
            return s
        common.prepare(self, (backend, axes, shape, dtype), build)

    def time_reduce_sum(self, *params):
        self.be.reduce_sum(self.x, *self.args, self.out)
        self.be.synchronize()


class Matmul:
    """matmul_forward of a batch of (m, k) @ (k, n) products."""

    params = [common.BACKENDS, common.SHAPES, common.DTYPES]
    param_names = ["backend", "shape", "dtype"]

    def setup(self, backend, shape, dtype):
        def build():
            be = common.backend(backend)
            common.require(be, "matmul_forward")
            batch, m, k, n = MATMUL[shape]
            s = dict(be=be, args=(pad6(batch), (0,) * 5 + (m * k,), (0,) * 5 + (k * n,), m, n, k,
                                  k, n, False, False, False))
            s["a"], s["b"] = common.on(be, common.normal((batch * m * k,), dtype, 1),
                                       common.normal((batch * k * n,), dtype, 2))
            s["out"] = be.empty((batch * m * n,), dtype)
            vars(self).update(s)
            self.time_matmul()
            return s
        common.prepare(self, (backend, shape, dtype), build)

    def time_matmul(self, *params):
        self.be.matmul_forward(self.a, self.b, *self.args, self.out)
        self.be.synchronize()


class Take:
    """take_forward / take_backward as an embedding lookup: ``indices`` rows of a table."""

    params = [common.BACKENDS, common.SHAPES, common.DTYPES]
    param_names = ["backend", "shape", "dtype"]

    def setup(self, backend, shape, dtype):
        def build():
            be = common.backend(backend)
            common.require(be, "take_forward", "take_backward")
            rows, width, m = TAKE[shape]
            s = dict(be=be, rows=rows, width=width)
            s["table"], s["g"], s["idx"] = common.on(
                be, common.normal((rows * width,), dtype, 1), common.normal((m * width,), dtype, 2),
                common.labels(m, rows, 3))
            s["out"], s["grad"] = be.empty((m * width,), dtype), be.empty((rows * width,), dtype)
            vars(self).update(s)
            self.time_forward()
            self.time_backward()
            return s
        common.prepare(self, (backend, shape, dtype), build)

    def time_forward(self, *params):
        self.be.take_forward(self.table, self.idx, 1, self.rows, self.width, self.out)
        self.be.synchronize()

    def time_backward(self, *params):
        self.be.take_backward(self.g, self.idx, 1, self.rows, self.width, False, self.grad)
        self.be.synchronize()


class LogSoftmax:
    """log_softmax_forward/backward over the classes of (rows, classes)."""

    params = [common.BACKENDS, common.SHAPES, common.DTYPES]
    param_names = ["backend", "shape", "dtype"]

    def setup(self, backend, shape, dtype):
        def build():
            be = common.backend(backend)
            common.require(be, "log_softmax_forward", "log_softmax_backward")
            dims = LOG_SOFTMAX[shape]
            s = dict(be=be)
            s["x"], s["g"] = common.on(be, common.normal(dims, dtype, 1, 3.0),
                                       common.normal(dims, dtype, 2))
            s["y"], s["grad_in"] = be.empty(dims, dtype), be.empty(dims, dtype)
            vars(self).update(s)
            self.time_forward()             # also computes y for the backward
            self.time_backward()
            return s
        common.prepare(self, (backend, shape, dtype), build)

    def time_forward(self, *params):
        self.be.log_softmax_forward(self.x, self.y)
        self.be.synchronize()

    def time_backward(self, *params):
        self.be.log_softmax_backward(self.y, self.g, self.grad_in)
        self.be.synchronize()
