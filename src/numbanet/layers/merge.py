"""Merge layers: Add, Subtract, Multiply, Average, Maximum, Minimum (inputs of one shape) and
Concatenate (along an axis). Each takes a list of inputs and runs the elementwise and strided
copy kernels of ``kernels/<device>/ops.py``."""
from .. import ops as _ops
from .. import validation as V
from .base import Layer, fmt_shape


class _Merge(Layer):
    """Elementwise over two or more inputs of the same shape."""

    multi_input = True
    supports_masking = True             # the output's mask: the inputs' masks combined (and)
    output_layout = "keep"
    min_inputs, max_inputs = 2, None

    def compute_output_shape(self, input_shape):
        shapes = [tuple(s) for s in input_shape]
        n = len(shapes)
        if n < self.min_inputs or (self.max_inputs is not None and n > self.max_inputs):
            want = (f"exactly {self.max_inputs}" if self.max_inputs == self.min_inputs
                    else f"at least {self.min_inputs}")
            raise ValueError(f"{self!r}: takes {want} inputs, got {n}")
        return self._merged_shape(shapes)

    def _merged_shape(self, shapes):
        first = shapes[0]
        for i, s in enumerate(shapes[1:], 1):
            if len(s) != len(first) or any(a is not None and b is not None and a != b
                                           for a, b in zip(first, s)):
                raise ValueError(f"{self!r}: inputs must have the same shape; input 0 is "
                                 f"{fmt_shape(first)}, input {i} is {fmt_shape(s)}")
        return first

    def _forward(self, xs, training):
        shape = tuple(xs[0].shape)
        for i, x in enumerate(xs[1:], 1):
            if tuple(x.shape) != shape:
                raise ValueError(f"{self!r}: inputs must have the same shape; input 0 is "
                                 f"{shape}, input {i} is {tuple(x.shape)}")
        return self._combine(xs)


class _Chain(_Merge):
    """Folds a binary op over the inputs: ((x0 op x1) op x2) ..."""

    op = None

    def _combine(self, xs):
        be, op = self.backend, self.op
        out, ctxs = xs[0], []
        for x in xs[1:]:
            out, ctx = op.forward(be, out, x)
            ctxs.append(ctx)
        return out, ctxs

    def _backward(self, ctxs, grad_out, sink, need):
        grads = [None] * (len(ctxs) + 1)
        g = grad_out
        for k in range(len(ctxs) - 1, -1, -1):
            ga, gb = self.op.backward(ctxs[k], g, [k > 0 or need[0], need[k + 1]])
            grads[k + 1] = gb
            g = ga
        grads[0] = g
        return [gi if n else None for gi, n in zip(grads, need)]


class Add(_Chain):
    """x0 + x1 + ... (the gradient flows unchanged to every input)."""
    op = _ops._ADD

    def _backward(self, ctxs, grad_out, sink, need):
        return [grad_out if n else None for n in need]


class Subtract(_Chain):
    """x0 - x1 (exactly two inputs)."""
    op = _ops._SUB
    max_inputs = 2


class Multiply(_Chain):
    """x0 * x1 * ... elementwise."""
    op = _ops._MUL


class Maximum(_Chain):
    """Elementwise maximum (ties split the gradient equally between the two inputs compared,
    as ``torch.maximum``)."""
    op = _ops._MAXIMUM


class Minimum(_Chain):
    """Elementwise minimum (ties split the gradient equally)."""
    op = _ops._MINIMUM


class Average(_Merge):
    """(x0 + x1 + ...) / n."""

    def _combine(self, xs):
        be, n = self.backend, len(xs)
        out = xs[0]
        for x in xs[1:]:
            out, _ = _ops._ADD.forward(be, out, x)
        out, _ = _ops._AFFINE.forward(be, out, 1.0 / n, 0.0)
        return out, n

    def _backward(self, n, grad_out, sink, need):
        g, _ = _ops._AFFINE.forward(self.backend, grad_out, 1.0 / n, 0.0)
        return [g if k else None for k in need]


class Concatenate(_Merge):
    """Joins its inputs along ``axis`` (-1: the last; axis 0, the batch, is not allowed)."""

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        if not V.is_int(axis) or axis == 0:
            raise ValueError(f"Concatenate {self.name!r}: axis must be a non-zero int (axis 0 is "
                             f"the batch), got {axis!r}")
        self.axis = int(axis)

    def _axis(self, rank):
        """The axis among the per-sample axes (0-based), for inputs of ``rank`` sample axes."""
        a = self.axis - 1 if self.axis > 0 else rank + self.axis
        if not 0 <= a < rank:
            raise ValueError(f"{self!r}: axis {self.axis} out of range for inputs with "
                             f"{rank} axes besides the batch")
        return a

    def _merged_shape(self, shapes):
        rank = len(shapes[0])
        a = self._axis(rank)
        for i, s in enumerate(shapes[1:], 1):
            if len(s) != rank or any(x is not None and y is not None and x != y
                                     for k, (x, y) in enumerate(zip(shapes[0], s)) if k != a):
                raise ValueError(f"{self!r}: inputs must match except along axis {self.axis}; "
                                 f"input 0 is {fmt_shape(shapes[0])}, input {i} is "
                                 f"{fmt_shape(s)}")
        sizes = [s[a] for s in shapes]
        total = None if any(v is None for v in sizes) else sum(sizes)
        return tuple(total if k == a else d for k, d in enumerate(shapes[0]))

    def _forward(self, xs, training):
        rank = len(xs[0].shape) - 1
        a = self._axis(rank) + 1
        for i, x in enumerate(xs[1:], 1):
            if len(x.shape) != rank + 1 or any(p != q for k, (p, q) in
                                               enumerate(zip(xs[0].shape, x.shape)) if k != a):
                raise ValueError(f"{self!r}: inputs must match except along axis {self.axis}; "
                                 f"input 0 is {tuple(xs[0].shape)}, input {i} is "
                                 f"{tuple(x.shape)}")
        return _ops._CONCATENATE.forward(self.backend, list(xs), a)

    def _backward(self, ctx, grad_out, sink, need):
        return _ops._CONCATENATE.backward(ctx, grad_out, need)
