"""Optimizer update kernels: one in-place update of a flat parameter buffer."""
from . import common

# shape name -> number of parameters (LeNet above has ~0.42 M)
SIZES = {"small": 1 << 14, "medium": 1 << 18, "large": 1 << 22}


class Update:
    """<optimizer>_update(param, grad, state..., hyperparameters) over the whole buffer."""

    params = [common.BACKENDS, common.OPTIMIZERS, common.SHAPES, common.DTYPES]
    param_names = ["backend", "optimizer", "shape", "dtype"]

    def setup(self, backend, optimizer, shape, dtype):
        def build():
            be = common.backend(backend)
            common.require(be, f"{optimizer}_update")
            n = SIZES[shape]
            param, grad = common.on(be, common.normal((n,), dtype, 1, 0.1),
                                    common.normal((n,), dtype, 2, 0.01))
            s = dict(be=be, update=be.kernels[f"{optimizer}_update"],
                     args=common.optimizer_args(be, optimizer, param, grad))
            vars(self).update(s)
            self.time_update()
            return s
        common.prepare(self, (backend, optimizer, shape, dtype), build)

    def time_update(self, *params):
        self.update(*self.args)
        self.be.synchronize()
