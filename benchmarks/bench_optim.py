"""Optimizer update kernels: one in-place update of a flat parameter buffer."""
from . import common

# shape name -> number of parameters (the LeNet of bench_training has ~0.42 M)
SIZES = {"small": 1 << 14, "medium": 1 << 18, "large": 1 << 22}


class Update:
    """<optimizer>_update(param, grad, state..., hyperparameters) over the whole buffer, state
    zeroed; typical hyperparameters (numbanet.kernel_inputs.SCALARS: SGD momentum 0.9, Adam at
    step 10, ...)."""

    params = [common.BACKENDS, common.OPTIMIZERS, common.SHAPES, common.DTYPES]
    param_names = ["backend", "optimizer", "shape", "dtype"]

    def setup(self, backend, optimizer, shape, dtype):
        def build():
            be = common.backend(backend)
            common.require(be, f"{optimizer}_update")
            update = be.kernels[f"{optimizer}_update"]
            s = dict(be=be, update=update,
                     args=common.flat_args(be, update, SIZES[shape], dtype))
            vars(self).update(s)
            self.time_update()
            return s
        common.prepare(self, (backend, optimizer, shape, dtype), build)

    def time_update(self, *params):
        self.update(*self.args)
        self.be.synchronize()
