"""Loss kernels: mean loss over a (N, D) batch, and its gradient."""
from . import common

LOSSES = list(common.LOSS_INPUTS)
# shape name -> (N, D): batch and classes / outputs
SHAPES = {"small": (32, 10), "medium": (256, 100), "large": (2048, 1000)}


class Loss:
    """<loss>_forward(y_true, y_pred, [hyperparameter,] out) and <loss>_backward(..., grad)."""

    params = [common.BACKENDS, LOSSES, common.SHAPES, common.DTYPES]
    param_names = ["backend", "loss", "shape", "dtype"]

    def setup(self, backend, loss, shape, dtype):
        def build():
            be = common.backend(backend)
            common.require(be, f"{loss}_forward", f"{loss}_backward")
            n, d = SHAPES[shape]
            target, pred, extra = common.LOSS_INPUTS[loss]
            y_true = {"real": lambda: common.normal((n, d), dtype, 1),
                      "binary": lambda: common.uniform((n, d), dtype, 0.0, 1.0, 1).round(),
                      "onehot": lambda: common.onehot(n, d, dtype, 1),
                      "labels": lambda: common.labels(n, d, 1)}[target]()
            y_pred = {"real": lambda: common.normal((n, d), dtype, 2),
                      "prob": lambda: common.probabilities((n, d), dtype, 2),
                      "logits": lambda: common.normal((n, d), dtype, 2, 3.0)}[pred]()
            if loss == "binary_crossentropy":
                y_pred = common.uniform((n, d), dtype, 0.01, 0.99, 2)
            s = dict(be=be, extra=extra, fwd=be.kernels[f"{loss}_forward"],
                     bwd=be.kernels[f"{loss}_backward"])
            s["y_true"], s["y_pred"] = common.on(be, y_true, y_pred)
            s["out"], s["grad"] = be.empty((1,), dtype), be.empty((n, d), dtype)
            vars(self).update(s)
            self.time_forward()
            self.time_backward()
            return s
        common.prepare(self, (backend, loss, shape, dtype), build)

    def time_forward(self, *params):
        self.fwd(self.y_true, self.y_pred, *self.extra, self.out)
        self.be.synchronize()

    def time_backward(self, *params):
        self.bwd(self.y_true, self.y_pred, *self.extra, self.grad)
        self.be.synchronize()
