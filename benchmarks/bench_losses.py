"""Loss kernels: mean loss over a (N, D) batch (unit sample weights), and its gradient."""
from . import common

# shape name -> (N, D): batch and classes / outputs
SHAPES = {"small": (32, 10), "medium": (256, 100), "large": (2048, 1000)}


class Loss:
    """<loss>_forward(targets, predictions, [hyperparameters,] weights, out) and
    <loss>_backward(..., grad); inputs made from the kernels' parameter names (common.loss_args):
    labels / one-hot / 0-1 targets, probabilities or logits as the loss takes them."""

    params = [common.BACKENDS, common.LOSSES, common.SHAPES, common.DTYPES]
    param_names = ["backend", "loss", "shape", "dtype"]

    def setup(self, backend, loss, shape, dtype):
        def build():
            be = common.backend(backend)
            common.require(be, f"{loss}_forward", f"{loss}_backward")
            n, d = SHAPES[shape]
            fwd, bwd = be.kernels[f"{loss}_forward"], be.kernels[f"{loss}_backward"]
            s = dict(be=be, fwd=fwd, bwd=bwd, fwd_args=common.loss_args(be, fwd, n, d, dtype),
                     bwd_args=common.loss_args(be, bwd, n, d, dtype))
            vars(self).update(s)
            self.time_forward()
            self.time_backward()
            return s
        common.prepare(self, (backend, loss, shape, dtype), build)

    def time_forward(self, *params):
        self.fwd(*self.fwd_args)
        self.be.synchronize()

    def time_backward(self, *params):
        self.bwd(*self.bwd_args)
        self.be.synchronize()
