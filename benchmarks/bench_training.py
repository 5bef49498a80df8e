"""Whole training steps through the public API, start-up costs, and PyTorch ratios.

Models (common.build_model): "mlp" = Dense(128, relu) -> Dense(10, softmax) on 64 features,
batch 32; "lenet" = Conv2D(32, 3, same, relu) -> MaxPool2D(2) -> Conv2D(64, 3, same, relu) ->
MaxPool2D(2) -> Flatten -> Dense(128, relu) -> Dense(10, softmax) on (1, 28, 28), batch 128.
Both: Adam(1e-3), sparse categorical crossentropy.
"""
import os
import statistics

from . import common


class TrainStep:
    """``model.train_step(x, y)``: host batch in, forward, loss, backward, Adam update, loss out."""

    params = [common.BACKENDS, list(common.MODELS), common.DTYPES]
    param_names = ["backend", "model", "dtype"]

    def setup(self, backend, model, dtype):
        def build():
            common.backend(backend)                 # skips "cuda" without a real GPU
            s = dict(model=common.build_model(model, backend, dtype))
            s["x"], s["y"] = common.model_batch(model, dtype)
            s["model"].train_step(s["x"], s["y"])   # compile / load every kernel of the step
            return s
        common.prepare(self, (backend, model, dtype), build)

    def time_train_step(self, *params):
        # train_step returns the loss as a Python float: the device work has finished
        self.model.train_step(self.x, self.y)

    def peakmem_train_step(self, *params):
        self.model.train_step(self.x, self.y)


class StartUp:
    """Start-up costs, measured in fresh processes.

    ``setup_cache`` (run once) compiles every CPU kernel on tiny float32 inputs in a fresh
    process with an empty numba cache (NUMBA_CACHE_DIR = a new directory), timing each kernel's
    first call (``track_compile_<module>``: their sums per kernel module, added below the class),
    then runs one LeNet training step on that cache (compiling whatever the step needs beyond the
    tiny calls).
    """

    unit = "seconds"
    timeout = 1800
    model = "lenet"

    def setup_cache(self):
        cache = os.path.abspath("numba-cache")
        cold = common.cold_compile(cache_dir=cache)
        common.warm_start(self.model, cache)
        return {"cold_compile": cold["compile"], "modules": cold["modules"], "cache": cache}

    def track_cold_compile(self, info):
        """Seconds spent compiling the whole kernel set from an empty cache (import excluded)."""
        return info["cold_compile"]

    def track_warm_start(self, info):
        """Seconds from ``import numbanet`` to the end of the first LeNet ``train_step`` in a
        fresh process whose cache is filled (median of three processes)."""
        return statistics.median(common.warm_start(self.model, info["cache"]) for _ in range(3))


def _module_compile_track(module):
    def track(self, info):
        return info["modules"].get(module, 0.0)
    track.__name__ = f"track_compile_{module}"
    track.__doc__ = (f"Seconds the kernels of kernels/cpu/{module}.py took to compile in "
                     f"track_cold_compile (their first calls; a function that kernels of several "
                     f"modules share counts for the first module to call it).")
    return track


# One compile-time track per kernel module (the modules this numbanet has).
for _module in common.cpu_kernel_modules():
    setattr(StartUp, f"track_compile_{_module}", _module_compile_track(_module))


class TrainStepTorchRatio:
    """numbanet / PyTorch training-step throughput on the CPU, the same model, batch and
    optimizer in both, timed alternately in one process (> 1: numbanet is faster)."""

    params = [list(common.MODELS)]
    param_names = ["model"]
    unit = "ratio"
    timeout = 300

    def setup(self, model):
        torch = self.torch = common.import_torch()
        self.ours = TrainStep()
        self.ours.setup("cpu", model, "float32")
        self.net = common.torch_model(torch, model)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=1e-3)
        self.tx = torch.from_numpy(self.ours.x.copy())
        self.ty = torch.from_numpy(self.ours.y.copy())

    def _torch_step(self):
        self.opt.zero_grad()
        loss = self.torch.nn.functional.cross_entropy(self.net(self.tx), self.ty)
        loss.backward()
        self.opt.step()
        return loss.item()

    def track_step(self, model):
        return common.throughput_ratio(self.ours.time_train_step, self._torch_step)
