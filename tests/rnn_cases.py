"""The recurrent kernels' calls as data, shared by tests/test_kernels_rnn.py and
tests/test_cuda_rnn.py: per cell, the argument names of forward and backward (in order), their
outputs, and inputs drawn by argument name (shapes from kernels/scalar.py RECURRENT_SHAPES)."""
import numpy as np

import reference as ref
from numbanet.kernels import scalar

CELLS = ("simple_rnn", "lstm", "gru")
GATES = {"simple_rnn": 1, "lstm": 4, "gru": 3}
TANH = scalar.ACTIVATION_CODES.index("tanh")

FWD_ARGS = {"simple_rnn": ("xp", "u", "h0", "mask", "reverse", "activation"),
            "lstm": ("xp", "u", "h0", "c0", "mask", "reverse"),
            "gru": ("xp", "u", "u_bias", "h0", "mask", "reverse")}
FWD_OUTS = {"simple_rnn": ("pre", "hs"), "lstm": ("hs", "cs", "gates"), "gru": ("hs", "gates")}
BWD_ARGS = {"simple_rnn": ("u", "h0", "mask", "reverse", "activation", "pre", "hs", "grad_hs",
                           "grad_hT"),
            "lstm": ("u", "h0", "c0", "mask", "reverse", "hs", "cs", "gates", "grad_hs",
                     "grad_hT", "grad_cT"),
            "gru": ("u", "u_bias", "h0", "mask", "reverse", "hs", "gates", "grad_hs", "grad_hT")}
BWD_OUTS = {"simple_rnn": ("grad_xp", "grad_u", "grad_h0"),
            "lstm": ("grad_xp", "grad_u", "grad_h0", "grad_c0"),
            "gru": ("grad_xp", "grad_u", "grad_u_bias", "grad_h0")}
PARAM_GRADS = ("grad_u", "grad_u_bias")      # added into with accumulate; the others overwritten
FINAL = {"grad_hT": "hs", "grad_cT": "cs"}   # final-state gradients and the sequence they end

# Masks of N = 3 samples over T = 5 steps: leading, interior and trailing masked steps, and one
# fully masked sample.
MASK_3x5 = np.array([[0, 0, 1, 1, 1],
                     [1, 0, 1, 0, 1],
                     [0, 0, 0, 0, 0]])


def shape(name, cell, n, t, units):
    dims = {"N": n, "T": t, "U": units, "g": GATES[cell] * units, "q": 4 * units}
    return tuple(dims[d] for d in scalar.RECURRENT_SHAPES[name])


def inputs(cell, rng, n, t, units, dtype, mask=None, reverse=False, activation=TANH):
    """Forward inputs (and the backward's incoming gradients) of ``cell`` by argument name:
    normal numbers, the recurrent kernel scaled by 1/sqrt(U) (a stable recurrence)."""
    d = {}
    for name in FWD_ARGS[cell] + ("grad_hs", "grad_hT", "grad_cT"):
        if name in scalar.RECURRENT_SHAPES and name != "mask":
            scale = 1.0 / np.sqrt(units) if name == "u" else 1.0
            d[name] = (scale * rng.standard_normal(shape(name, cell, n, t, units))).astype(dtype)
    d["mask"] = (np.ones((n, t)) if mask is None else np.asarray(mask)).astype(dtype)
    d["reverse"], d["activation"] = reverse, activation
    return d


def out_shapes(cell, names, n, t, units, dtype):
    return [(shape(name, cell, n, t, units), dtype) for name in names]


def reference_forward(cell, d):
    """The float64 reference's forward outputs, by name."""
    args = [d[a] for a in FWD_ARGS[cell]]
    if cell == "simple_rnn":
        args[-1] = scalar.ACTIVATION_CODES[args[-1]]
    return dict(zip(FWD_OUTS[cell], getattr(ref, f"{cell}_forward")(*args)))


def reference_backward(cell, d):
    """The float64 reference's backward outputs, by name (``d`` holds the forward outputs)."""
    args = [d[a] for a in BWD_ARGS[cell]]
    if cell == "simple_rnn":
        args[4] = scalar.ACTIVATION_CODES[args[4]]
    return dict(zip(BWD_OUTS[cell], getattr(ref, f"{cell}_backward")(*args)))
