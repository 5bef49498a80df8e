"""Recurrent kernels (kernels/*/rnn.py): the recurrence of SimpleRNN, LSTM and GRU over a whole
sequence, forward and backward (BPTT), and a layer-level LSTM / GRU against PyTorch."""
from . import common

# shape name -> (batch N, steps T, units U)
SHAPES = {
    "small": (16, 20, 32),
    "medium": (64, 100, 128),
    "large": (128, 100, 512),
}
GATES = {"simple_rnn": 1, "lstm": 4, "gru": 3}
INPUTS = 64                 # features of the layer-level comparison's input projection


class Recurrence:
    """<cell>_forward and <cell>_backward over a masked-free sequence (all steps valid), from
    zero initial states; the backward gets a gradient at every output (return_sequences)."""

    params = [common.BACKENDS, list(GATES), common.SHAPES, common.DTYPES]
    param_names = ["backend", "cell", "shape", "dtype"]

    def setup(self, backend, cell, shape, dtype):
        def build():
            be = common.backend(backend)
            common.require(be, f"{cell}_forward", f"{cell}_backward")
            from numbanet.kernels.scalar import ACTIVATION_CODES
            n, t, u = SHAPES[shape]
            g = GATES[cell]
            seq = (n, t, u)
            s = dict(be=be, cell=cell)
            s["xp"], s["u"], s["u_bias"], s["grad_hs"] = common.on(
                be, common.normal((n, t, g * u), dtype, 1), common.normal((u, g * u), dtype, 2,
                                                                          u ** -0.5),
                common.normal((g * u,), dtype, 3, 0.1), common.normal(seq, dtype, 4))
            s["h0"], s["mask"] = be.zeros((n, u), dtype), be.full((n, t), 1.0, dtype)
            s["hs"], s["cs"], s["pre"] = (be.empty(seq, dtype) for _ in range(3))
            s["gates"] = be.empty((n, t, 4 * u), dtype)
            s["grad_xp"], s["grad_u"] = be.empty((n, t, g * u), dtype), be.empty((u, g * u), dtype)
            s["grad_u_bias"] = be.empty((g * u,), dtype)
            s["grad_h0"], s["grad_c0"] = be.empty((n, u), dtype), be.empty((n, u), dtype)
            s["tanh"] = ACTIVATION_CODES.index("tanh")
            vars(self).update(s)
            self.time_forward()             # also fills the states the backward reads
            self.time_backward()
            return s
        common.prepare(self, (backend, cell, shape, dtype), build)

    def time_forward(self, *params):
        be, z = self.be, self.h0
        if self.cell == "simple_rnn":
            be.simple_rnn_forward(self.xp, self.u, z, self.mask, False, self.tanh, self.pre,
                                  self.hs)
        elif self.cell == "lstm":
            be.lstm_forward(self.xp, self.u, z, z, self.mask, False, self.hs, self.cs, self.gates)
        else:
            be.gru_forward(self.xp, self.u, self.u_bias, z, self.mask, False, self.hs, self.gates)
        be.synchronize()

    def time_backward(self, *params):
        be, z = self.be, self.h0
        if self.cell == "simple_rnn":
            be.simple_rnn_backward(self.u, z, self.mask, False, self.tanh, self.pre, self.hs,
                                   self.grad_hs, z, False, self.grad_xp, self.grad_u,
                                   self.grad_h0)
        elif self.cell == "lstm":
            be.lstm_backward(self.u, z, z, self.mask, False, self.hs, self.cs, self.gates,
                             self.grad_hs, z, z, False, self.grad_xp, self.grad_u, self.grad_h0,
                             self.grad_c0)
        else:
            be.gru_backward(self.u, self.u_bias, z, self.mask, False, self.hs, self.gates,
                            self.grad_hs, z, False, self.grad_xp, self.grad_u, self.grad_u_bias,
                            self.grad_h0)
        be.synchronize()


class RecurrentTorchRatio:
    """numbanet / PyTorch throughput of an LSTM or GRU layer's forward + backward on the CPU,
    float32, batch 64, 100 steps, 64 inputs, 128 units (> 1: numbanet is faster): the input
    projection and its gradients (dense kernels on the N*T rows) plus the recurrence kernels,
    against torch.nn.LSTM / GRU with every output's gradient, timed alternately in one process."""

    params = [["lstm", "gru"]]
    param_names = ["cell"]
    unit = "ratio"
    timeout = 600

    def setup(self, cell):
        self.torch = common.import_torch()
        self.rec = Recurrence()
        self.rec.setup("cpu", cell, "medium", "float32")
        n, t, u = SHAPES["medium"]
        g = GATES[cell]
        be = self.rec.be
        self.x, self.w, self.b = common.on(be, common.normal((n * t, INPUTS), "float32", 5),
                                           common.normal((INPUTS, g * u), "float32", 6, 0.1),
                                           common.normal((g * u,), "float32", 7, 0.1))
        self.grad_x, self.grad_w = be.empty((n * t, INPUTS), "float32"), be.empty(self.w.shape,
                                                                                 "float32")
        self.grad_b = be.empty((g * u,), "float32")

    def track_fwd_bwd(self, cell):
        torch, r, be = self.torch, self.rec, self.rec.be
        n, t, u = SHAPES["medium"]
        xp, grad_xp = r.xp.reshape(n * t, -1), r.grad_xp.reshape(n * t, -1)

        def ours():
            be.dense_forward(self.x, self.w, self.b, xp)
            r.time_forward()
            r.time_backward()
            be.dense_backward_weight(self.x, grad_xp, False, self.grad_w, self.grad_b)
            be.dense_backward_input(grad_xp, self.w, self.grad_x)

        torch.manual_seed(common.SEED)
        mod = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(INPUTS, u, batch_first=True)
        x = torch.from_numpy(self.x.reshape(n, t, INPUTS).copy()).requires_grad_()
        g = torch.from_numpy(r.grad_hs.copy())

        def theirs():
            x.grad = None
            mod.zero_grad()
            mod(x)[0].backward(g)

        return common.throughput_ratio(ours, theirs)
