"""Recurrent layers: SimpleRNN, LSTM, GRU (Keras 3 semantics and weight layout) and
Bidirectional.

A layer runs its whole sequence in two kernel calls forward: the input projection of every step
as one GEMM (``dense_forward`` on (batch * time, features)), then the recurrence
(``kernels/<device>/rnn.py``: the time loop inside one ``@njit`` call on the CPU; one fused
launch per step on the GPU). Backward is the recurrence's BPTT kernel (one call on the CPU, two
launches per step on the GPU), then the input projection's weight and input gradients as two
GEMMs over all steps.

``dropout`` (Keras): in training, one Bernoulli mask per sequence and input feature, shape
(batch, 1, features), the same for every step (Keras draws the cell's mask once per call), kept
values scaled by 1 / (1 - dropout), multiplies the inputs before the input projection; the
identity in inference. The mask is drawn as ``Dropout``'s is (the layer's own generator, ``seed=``)
and applied with the elementwise multiply of ``nb.ops``, so the kernels are unchanged.
``recurrent_dropout`` (dropout of the state between steps) would need the recurrence kernels
changed and is refused unless 0.

Weights (Keras 3): ``kernel`` (input_dim, G * units), ``recurrent_kernel`` (units, G * units),
``bias`` (G * units,) (GRU: (2, 3 * units), row 0 the input bias, row 1 the recurrent bias);
gates in Keras' order: LSTM i, f, c, o; GRU z, r, h (``reset_after=True``). Masked steps (a mask
from an Embedding with ``mask_zero=True`` or a Masking layer) carry the state over, so a
post-padded sequence ends with the state of the unpadded one.
"""
import math

import numpy as np

from .. import activations, initializers, ops
from .. import validation as V
from .base import (Layer, Seeded, check_features, check_positive_int, check_step_mask,
                   fmt_shape)

__all__ = ["SimpleRNN", "LSTM", "GRU", "Bidirectional"]

_RATE = V.Number(low=0, high=1, high_open=True)


class _RNN(Seeded, Layer):
    """Shared by SimpleRNN, LSTM and GRU: building, masks, states, input dropout, output
    selection."""

    gates = 1
    states = 1                  # state arrays: h (and c for LSTM)
    tensor_kwargs = ("initial_state",)
    uses_mask = True
    free_axes = (0,)
    output_layout = "channels_last"         # with return_sequences: (batch, steps, units)
    input_layout = "channels_last"

    def __init__(self, units, activation="tanh", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", return_sequences=False, return_state=False,
                 go_backwards=False, dropout=0.0, recurrent_dropout=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        where = f"{type(self).__name__} {self.name!r}"
        self.units = check_positive_int(units, "units", where)
        self.activation = activations.check_name(activation, where)
        if self.activation == "softmax":
            raise ValueError(f"{where}: activation must be elementwise, got 'softmax'")
        self.use_bias = V.FLAG(use_bias, "use_bias", where)
        self.return_sequences = V.FLAG(return_sequences, "return_sequences", where)
        self.return_state = V.FLAG(return_state, "return_state", where)
        self.go_backwards = V.FLAG(go_backwards, "go_backwards", where)
        self.dropout = _RATE(dropout, "dropout", where)
        if not V.is_real(recurrent_dropout) or recurrent_dropout != 0:
            raise ValueError(f"{where}: recurrent_dropout is not supported by numbanet's "
                             f"recurrent layers (it would need their recurrence kernels "
                             f"changed); use recurrent_dropout=0 (dropout= drops the inputs), "
                             f"got recurrent_dropout={recurrent_dropout!r}")
        self.recurrent_dropout = 0.0
        self._set_seed(seed, where)
        self._dropout_mask = None
        self._inits = self._keep_specs(kernel_initializer=kernel_initializer,
                                       recurrent_initializer=recurrent_initializer,
                                       bias_initializer=bias_initializer)
        self.kernel_initializer = initializers.get(kernel_initializer,
                                                   f"{where} kernel_initializer")
        self.recurrent_initializer = initializers.get(recurrent_initializer,
                                                      f"{where} recurrent_initializer")
        self.bias_initializer = initializers.get(bias_initializer, f"{where} bias_initializer")

    # -- shapes and weights -----------------------------------------------------------------------
    def compute_output_shape(self, input_shape):
        if len(input_shape) != 2 or input_shape[1] is None:
            raise ValueError(f"{self!r}: expects (batch, time, features) input with known "
                             f"features, got input shape {fmt_shape(input_shape)}")
        out = (input_shape[0], self.units) if self.return_sequences else (self.units,)
        if self.return_state:
            return [out] + [(self.units,)] * self.states
        return out

    def output_shape_for(self, input_shape, **kwargs):
        return self.compute_output_shape(input_shape)

    def create_params(self, input_shape):
        d, u, g = input_shape[1], self.units, self.gates
        self.add_param("kernel", (d, g * u), self.kernel_initializer, d, g * u)
        self.add_param("recurrent_kernel", (u, g * u), self.recurrent_initializer, u, g * u)
        if self.use_bias:
            self._create_bias()
        self._bias_size = self._bias_shape()
        if self.dropout > 0.0:          # without dropout no generator: nb.seed's stream as before
            self._new_rng()

    def _bias_shape(self):
        return (self.gates * self.units,)

    def _create_bias(self):
        self.add_param("bias", self._bias_shape(), self.bias_initializer, self.units,
                       self.gates * self.units)

    def _input_bias(self):
        """The bias added to the input projection (zeros without a bias)."""
        if self.use_bias:
            return self.params["bias"]
        z = self.__dict__.get("_zero_bias")
        if z is None or z.shape[0] != self.gates * self.units:
            z = self._zero_bias = self.backend.zeros((self.gates * self.units,), self.dtype)
        return z

    def set_backend(self, backend):
        super().set_backend(backend)
        self.__dict__.pop("_zero_bias", None)
        self._dropout_mask = None

    @property
    def dropout_mask(self):
        """The (batch, 1, features) input mask of the last call in training, the same for
        every step (None in inference or with ``dropout=0``)."""
        return self._dropout_mask

    def _draw_dropout_mask(self, n, d):
        """A new (n, 1, d) mask: 1 / (1 - dropout) where kept, else 0 (Dropout's kernel on
        ones, from uniforms of the layer's generator)."""
        be = self.backend
        u = be.uniform((n * d,), self.dtype, self.rng)
        mask, scratch = be.empty((n, 1, d), self.dtype), be.empty((n * d,), self.dtype)
        be.dropout_forward(be.full((n * d,), 1.0, self.dtype), u, self.dropout,
                           be.kernel_view(mask, (n * d,)), scratch)
        return mask

    def compute_mask(self, inputs, mask):
        out = mask if self.return_sequences else None
        return [out] + [None] * self.states if self.return_state else out

    # -- the call -----------------------------------------------------------------------------------
    def _initial(self, initial_state, n):
        """The initial state arrays (zeros by default), checked."""
        be, u = self.backend, self.units
        if initial_state is None:
            return [be.zeros((n, u), self.dtype) for _ in range(self.states)], False
        states = list(initial_state) if isinstance(initial_state, (list, tuple)) \
            else [initial_state]
        if len(states) != self.states:
            raise ValueError(f"{self!r}: initial_state needs {self.states} array(s) of shape "
                             f"({n}, {u}), got {len(states)}")
        out = []
        for s in states:
            if tuple(s.shape) != (n, u):
                raise ValueError(f"{self!r}: initial_state arrays must have shape ({n}, {u}), "
                                 f"got {tuple(s.shape)}")
            if isinstance(s, np.ndarray) and (s.dtype != self.dtype or be.is_device):
                s = be.asarray(s, dtype=self.dtype)
            out.append(s)
        return out, True

    def _mask(self, mask, n, t):
        be = self.backend
        if mask is None:
            return be.full((n, t), 1.0, self.dtype)
        check_step_mask(self, "mask", mask, n, t)
        if np.dtype(mask.dtype) != self.dtype:
            mask = be.asarray(np.asarray(be.to_numpy(mask)).astype(self.dtype))
        return mask

    def _forward(self, x, training, mask=None, initial_state=None):
        be = self.backend
        n, t, d = (int(v) for v in x.shape)
        if t < 1:
            raise ValueError(f"{self!r}: got a sequence of 0 steps")
        check_features(self, x, 2, "kernel")
        u, g = self.units, self.gates
        drop = None
        if training and self.dropout > 0.0:
            drop = self._draw_dropout_mask(n, d)
            x, _ = ops._MUL.forward(be, x, drop)             # broadcast over the time axis
        self._dropout_mask = drop
        x2 = be.kernel_view(x, (n * t, d))
        xp = be.empty((n, t, g * u), self.dtype)
        be.dense_forward(x2, self.params["kernel"], self._input_bias(),
                         be.kernel_view(xp, (n * t, g * u)))
        h0, given = self._initial(initial_state, n)
        m = self._mask(mask, n, t)
        hs = be.empty((n, t, u), self.dtype)
        saved = self._recur(xp, h0, m, hs)
        last = _last_step(be, hs)
        outputs = [hs if self.return_sequences else last]
        if self.return_state:
            outputs += [last] + [_last_step(be, s) for s in saved[1:self.states]]
        ctx = (x2, (n, t, d), h0, m, hs, saved, given, drop)
        return (outputs if self.return_state else outputs[0]), ctx

    def _backward(self, ctx, grad_out, sink, need):
        be = self.backend
        x2, (n, t, d), h0, m, hs, saved, given, drop = ctx
        u, g = self.units, self.gates
        gs = list(grad_out) if self.return_state else [grad_out]
        grad_hs = gs[0] if self.return_sequences else be.zeros((n, t, u), self.dtype)
        # gradients of the final states: the last output is h_T too
        finals = list(gs[1:]) if self.return_state else \
            [be.zeros((n, u), self.dtype) for _ in range(self.states)]
        if not self.return_sequences:
            finals[0] = ops._ADD.forward(be, finals[0], gs[0])[0] if self.return_state \
                else gs[0]
        pg = sink.layer_grads(self)
        grads, accumulate = pg if pg is not None else (None, False)
        grad_xp = be.empty((n, t, g * u), self.dtype)
        grad_states = [be.empty((n, u), self.dtype) for _ in range(self.states)]
        grad_u = grads["recurrent_kernel"] if grads is not None else \
            be.empty((u, g * u), self.dtype)
        self._recur_backward(h0, m, hs, saved, grad_hs, finals, accumulate, grad_xp, grad_u,
                             grads, grad_states)
        gxp2 = be.kernel_view(grad_xp, (n * t, g * u))
        if grads is not None:
            be.dense_backward_weight(x2, gxp2, accumulate, grads["kernel"],
                                     self._input_bias_grad(grads))
        needs = list(need) if given else [need]
        grad_x = None
        if needs[0]:
            grad_x = be.empty((n, t, d), self.dtype)
            be.dense_backward_input(gxp2, self.params["kernel"],
                                    be.kernel_view(grad_x, (n * t, d)))
            if drop is not None:
                grad_x, _ = ops._MUL.forward(be, grad_x, drop)
        if not given:
            return grad_x
        return [grad_x] + [gs_ if k else None for gs_, k in zip(grad_states, needs[1:])]

    def _input_bias_grad(self, grads):
        if self.use_bias:
            return grads["bias"]
        return self.backend.empty((self.gates * self.units,), self.dtype)


def _last_step(be, seq):
    """seq[:, -1] of a (batch, time, units) array, as a new contiguous (batch, units) array."""
    n, t, u = (int(v) for v in seq.shape)
    if t == 1:
        return be.kernel_view(seq, (n, u)) if be.is_device else seq.reshape(n, u)
    out = be.empty((n, u), seq.dtype)
    ops._copy_strided(be, seq, (t - 1) * u, (n, u), (t * u, 1), out, 0, (u, 1))
    return out


class SimpleRNN(_RNN):
    """h_t = activation(x_t @ kernel + h_{t-1} @ recurrent_kernel + bias)."""

    gates = 1

    def _recur(self, xp, h0, m, hs):
        be = self.backend
        pre = be.empty(tuple(hs.shape), self.dtype)
        be.simple_rnn_forward(xp, self.params["recurrent_kernel"], h0[0], m, self.go_backwards,
                              self._act_code(), pre, hs)
        return (pre,)

    def _act_code(self):
        op = activations.ActivationOp(self.activation)
        return op.code

    def _recur_backward(self, h0, m, hs, saved, grad_hs, finals, accumulate, grad_xp, grad_u,
                        grads, grad_states):
        self.backend.simple_rnn_backward(self.params["recurrent_kernel"], h0[0], m,
                                         self.go_backwards, self._act_code(), saved[0], hs,
                                         grad_hs, finals[0], accumulate, grad_xp, grad_u,
                                         grad_states[0])


class LSTM(_RNN):
    """Long short-term memory (Hochreiter & Schmidhuber, 1997), Keras 3: gates i, f, c, o;
    c_t = f * c_{t-1} + i * tanh(.), h_t = o * tanh(c_t). ``unit_forget_bias=True`` starts the
    forget gate's bias at 1. States: [h, c]."""
    _config_skip = ("activation", "recurrent_activation")

    gates = 4
    states = 2

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid",
                 unit_forget_bias=True, **kwargs):
        if activation != "tanh" or recurrent_activation != "sigmoid":
            raise ValueError(f"LSTM: the kernels implement activation='tanh' and "
                             f"recurrent_activation='sigmoid' (Keras' defaults), got "
                             f"{activation!r} and {recurrent_activation!r}")
        super().__init__(units, activation=activation, **kwargs)
        self.unit_forget_bias = V.FLAG(unit_forget_bias, "unit_forget_bias", repr(self))

    def _create_bias(self):
        v = self.add_param("bias", self._bias_shape(), self.bias_initializer, self.units,
                           4 * self.units)
        if self.unit_forget_bias:
            host = v.numpy()
            host[self.units:2 * self.units] = 1.0
            v.assign(host)

    def _recur(self, xp, h0, m, hs):
        be = self.backend
        cs = be.empty(tuple(hs.shape), self.dtype)
        gates = be.empty(tuple(xp.shape), self.dtype)
        be.lstm_forward(xp, self.params["recurrent_kernel"], h0[0], h0[1], m, self.go_backwards,
                        hs, cs, gates)
        return (gates, cs)

    def _recur_backward(self, h0, m, hs, saved, grad_hs, finals, accumulate, grad_xp, grad_u,
                        grads, grad_states):
        gates, cs = saved
        self.backend.lstm_backward(self.params["recurrent_kernel"], h0[0], h0[1], m,
                                   self.go_backwards, hs, cs, gates, grad_hs, finals[0],
                                   finals[1], accumulate, grad_xp, grad_u, grad_states[0],
                                   grad_states[1])


class GRU(_RNN):
    """Gated recurrent unit (Cho et al., 2014), Keras 3 with ``reset_after=True``: gates z, r, h;
    hh = tanh(x W_h + b_h + r * (h_{t-1} U_h + b'_h)), h_t = z * h_{t-1} + (1 - z) * hh. Its bias
    is (2, 3 * units): the input bias, then the recurrent bias."""
    _config_skip = ("activation", "recurrent_activation", "reset_after")

    gates = 3

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid",
                 reset_after=True, **kwargs):
        if activation != "tanh" or recurrent_activation != "sigmoid" or reset_after is not True:
            raise ValueError(f"GRU: the kernels implement activation='tanh', "
                             f"recurrent_activation='sigmoid' and reset_after=True (Keras 3's "
                             f"defaults), got {activation!r}, {recurrent_activation!r} and "
                             f"reset_after={reset_after!r}")
        super().__init__(units, activation=activation, **kwargs)

    def _bias_shape(self):
        return (2, 3 * self.units)

    def _input_bias(self):
        if self.use_bias:
            return self.params["bias"][0]
        return super()._input_bias()

    def _recurrent_bias(self):
        if self.use_bias:
            return self.params["bias"][1]
        return self._input_bias()                    # zeros

    def _input_bias_grad(self, grads):
        return grads["bias"][0] if self.use_bias else super()._input_bias_grad(grads)

    def _recur(self, xp, h0, m, hs):
        be = self.backend
        n, t, _ = (int(v) for v in hs.shape)
        gates = be.empty((n, t, 4 * self.units), self.dtype)
        be.gru_forward(xp, self.params["recurrent_kernel"], self._recurrent_bias(), h0[0], m,
                       self.go_backwards, hs, gates)
        return (gates,)

    def _recur_backward(self, h0, m, hs, saved, grad_hs, finals, accumulate, grad_xp, grad_u,
                        grads, grad_states):
        be = self.backend
        gb = grads["bias"][1] if grads is not None and self.use_bias else \
            be.empty((3 * self.units,), self.dtype)
        be.gru_backward(self.params["recurrent_kernel"], self._recurrent_bias(), h0[0], m,
                        self.go_backwards, hs, saved[0], grad_hs, finals[0], accumulate,
                        grad_xp, grad_u, gb, grad_states[0])


class Bidirectional(Layer):
    """Runs a recurrent layer forward and a copy of it backward (``go_backwards``) over the
    sequence and merges the two: ``merge_mode`` "concat" (default), "sum", "mul", "ave", or None
    (a list of both). The backward layer's sequence output is put back in time order first.
    ``forward_layer`` and ``backward_layer`` are the two layers (Keras); with ``return_state``
    the forward states come before the backward ones. Each draws its own ``dropout`` masks; with
    a ``seed`` the two copies share it, and so draw the same masks."""
    _config_skip = ("layer", "merge_mode", "backward_layer")  # written below

    tensor_kwargs = ("initial_state",)
    uses_mask = True
    free_axes = (0,)
    output_layout = input_layout = "channels_last"
    MODES = ("concat", "sum", "mul", "ave", None)

    def __init__(self, layer, merge_mode="concat", backward_layer=None, **kwargs):
        if not isinstance(layer, _RNN):
            raise ValueError(f"Bidirectional: layer must be a SimpleRNN, LSTM or GRU, got "
                             f"{type(layer).__name__}")
        if merge_mode not in self.MODES:
            raise ValueError(f"Bidirectional: merge_mode must be one of {self.MODES}, got "
                             f"{merge_mode!r}")
        kwargs.setdefault("name", f"bidirectional_{layer.name}")
        super().__init__(**kwargs)
        config = layer.get_config()
        self.forward_layer = type(layer).from_config({**config, "name": f"forward_{layer.name}"})
        if backward_layer is None:
            back = {**config, "name": f"backward_{layer.name}",
                    "go_backwards": not layer.go_backwards}
            self.backward_layer = type(layer).from_config(back)
        else:
            if not isinstance(backward_layer, _RNN) or \
                    backward_layer.go_backwards == layer.go_backwards or \
                    backward_layer.return_sequences != layer.return_sequences or \
                    backward_layer.return_state != layer.return_state:
                raise ValueError("Bidirectional: backward_layer must be a recurrent layer with "
                                 "the opposite go_backwards and the same return_sequences and "
                                 "return_state")
            self.backward_layer = backward_layer
        self.merge_mode = merge_mode
        self.return_sequences = layer.return_sequences
        self.return_state = layer.return_state

    def _sublayers_deep(self):
        return [self.forward_layer, self.backward_layer]

    def _move_to(self, backend):
        super()._move_to(backend)
        for l in self._sublayers_deep():
            l._move_to(backend)

    def build(self, input_shape):
        if self.dtype is None:
            self.dtype = np.dtype(np.float32)
        for l in self._sublayers_deep():
            l.dtype = l.dtype or self.dtype
            if l.backend is not self.backend:
                l._move_to(self.backend)
            l.build(input_shape)
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        f = self.forward_layer.compute_output_shape(input_shape)
        b = self.backward_layer.compute_output_shape(input_shape)
        fo, bo = (f[0], b[0]) if self.return_state else (f, b)
        if self.merge_mode == "concat":
            out = tuple(fo[:-1]) + (fo[-1] + bo[-1],)
        elif self.merge_mode is None:
            out = [fo, bo]
        else:
            out = fo
        states = (f[1:] + b[1:]) if self.return_state else []
        if isinstance(out, list):
            return out + states
        return [out] + states if self.return_state else out

    def output_shape_for(self, input_shape, **kwargs):
        return self.compute_output_shape(input_shape)

    def compute_mask(self, inputs, mask):
        out = mask if self.return_sequences else None
        n = (2 if self.merge_mode is None else 1)
        states = 2 * self.forward_layer.states if self.return_state else 0
        res = [out] * n + [None] * states
        return res if len(res) > 1 else res[0]

    def _forward(self, x, training, mask=None, initial_state=None):
        be = self.backend
        fl, bl = self.forward_layer, self.backward_layer
        k = fl.states
        fi = bi = None
        if initial_state is not None:
            states = list(initial_state)
            if len(states) != 2 * k:
                raise ValueError(f"{self!r}: initial_state needs {2 * k} arrays (forward states "
                                 f"then backward states), got {len(states)}")
            fi, bi = states[:k], states[k:]
        fo, fctx = fl._forward(x, training, mask=mask, initial_state=fi)
        bo, bctx = bl._forward(x, training, mask=mask, initial_state=bi)
        fo = list(fo) if self.return_state else [fo]
        bo = list(bo) if self.return_state else [bo]
        f_seq, b_seq = fo[0], bo[0]
        if self.return_sequences:
            b_seq = _reverse_time(be, b_seq)
        merged, mctx = self._merge(f_seq, b_seq)
        outs = (merged if isinstance(merged, list) else [merged]) + fo[1:] + bo[1:]
        ctx = (fctx, bctx, mctx, initial_state is not None)
        return (outs if len(outs) > 1 else outs[0]), ctx

    def _merge(self, f, b):
        be = self.backend
        mode = self.merge_mode
        if mode is None:
            return [f, b], None
        if mode == "concat":
            return ops._CONCATENATE.forward(be, [f, b], len(f.shape) - 1)
        if mode == "sum":
            return ops._ADD.forward(be, f, b)
        if mode == "mul":
            return ops._MUL.forward(be, f, b)
        s, c = ops._ADD.forward(be, f, b)
        out, _ = ops._AFFINE.forward(be, s, 0.5, 0.0)
        return out, c

    def _unmerge(self, ctx, g):
        mode = self.merge_mode
        if mode is None:
            return g[0], g[1]
        if mode == "concat":
            return tuple(ops._CONCATENATE.backward(ctx, g, [True, True]))
        if mode == "sum":
            return tuple(ops._ADD.backward(ctx, g, [True, True]))
        if mode == "mul":
            return tuple(ops._MUL.backward(ctx, g, [True, True]))
        half, _ = ops._AFFINE.forward(self.backend, g, 0.5, 0.0)
        return half, half

    def _backward(self, ctx, grad_out, sink, need):
        be = self.backend
        fctx, bctx, mctx, given = ctx
        gs = list(grad_out) if isinstance(grad_out, (list, tuple)) else [grad_out]
        n_merged = 2 if self.merge_mode is None else 1
        gf, gb = self._unmerge(mctx, gs[0] if n_merged == 1 else gs[:2])
        if self.return_sequences:
            gb = _reverse_time(be, gb)
        k = self.forward_layer.states
        states = gs[n_merged:]
        gf_all = [gf] + states[:k] if self.return_state else gf
        gb_all = [gb] + states[k:] if self.return_state else gb
        needs = list(need) if given else [need]
        n_f = needs if not given else [needs[0]] + needs[1:1 + k]
        n_b = needs if not given else [needs[0]] + needs[1 + k:]
        rf = self.forward_layer._backward(fctx, gf_all, sink, n_f if given else needs[0])
        rb = self.backward_layer._backward(bctx, gb_all, sink, n_b if given else needs[0])
        xf, xb = (rf[0], rb[0]) if given else (rf, rb)
        gx = None
        if needs[0]:
            gx, _ = ops._ADD.forward(be, xf, xb)
        if not given:
            return gx
        return [gx] + list(rf[1:]) + list(rb[1:])

    def get_config(self):
        config = super().get_config()
        fl = self.forward_layer
        layer_config = {**fl.get_config(), "name": fl.name[len("forward_"):]
                        if fl.name.startswith("forward_") else fl.name}
        return {**config, "layer": {"class_name": type(fl).__name__, "config": layer_config},
                "merge_mode": self.merge_mode,
                "backward_layer": {"class_name": type(self.backward_layer).__name__,
                                   "config": self.backward_layer.get_config()}}

    @classmethod
    def from_config(cls, config):
        from . import get
        config = dict(config)
        entry = config.pop("layer")
        layer = get(entry["class_name"]).from_config(entry["config"])
        back = config.pop("backward_layer", None)
        if back is not None:
            back = get(back["class_name"]).from_config(back["config"])
        return cls(layer, backward_layer=back, **config)


def _reverse_time(be, seq):
    """A (batch, time, ...) array with its time axis reversed (a new array)."""
    shape = tuple(int(v) for v in seq.shape)
    n, t = shape[0], shape[1]
    inner = math.prod(shape[2:])
    out = be.empty(shape, seq.dtype)
    ops._copy_strided(be, seq, (t - 1) * inner, (n, t, inner), (t * inner, -inner, 1), out, 0,
                      (t * inner, inner, 1))
    return out
