"""Merge layers: Add, Subtract, Multiply, Average, Maximum, Minimum (inputs of one shape) and
Concatenate (along an axis), each running the elementwise and strided copy kernels of
``kernels/<device>/ops.py``; Dot (a batched dot product along an axis of each input), written
with ``nb.ops``. Each takes a list of inputs."""
import math

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


class Dot(Layer):
    """The dot product of two inputs along an axis of each (Keras): ``Dot(axes=1)`` on two
    (batch, d) inputs gives (batch, 1) (word2vec's and recommenders' similarity scores);
    ``axes=(2, 2)`` on (batch, t, d) and (batch, s, d) gives (batch, t, s). ``axes``: an int
    (the same axis of both) or a pair, counted with the batch axis (0, the batch, is not
    allowed; negative ones from the end). The output's shape is the first input's without the
    batch and its axis, then the second's likewise; (batch, 1) when nothing is left.
    ``normalize=True`` L2-normalizes both along their axes first (Keras' epsilon 1e-7): the
    cosine similarity. Written with ``nb.ops`` (a batched matmul)."""

    multi_input = True

    def __init__(self, axes, normalize=False, **kwargs):
        super().__init__(**kwargs)
        where = f"Dot {self.name!r}"
        pair = list(axes) if isinstance(axes, (tuple, list)) else None
        if not (V.is_int(axes) and axes != 0) and not (
                pair is not None and len(pair) == 2 and all(V.is_int(a) and a != 0
                                                            for a in pair)):
            raise ValueError(f"{where}: axes must be a non-zero int or a pair of non-zero ints "
                             f"(axis 0 is the batch), got {axes!r}")
        self.axes = int(axes) if pair is None else [int(a) for a in pair]
        self.normalize = V.FLAG(normalize, "normalize", where)

    def _resolved(self, ranks):
        """The two contracted axes, counted with the batch axis, for inputs of ``ranks``
        (batch included)."""
        axes = [self.axes] * 2 if V.is_int(self.axes) else list(self.axes)
        out = []
        for i, (a, r) in enumerate(zip(axes, ranks)):
            b = a + r if a < 0 else a
            if not 1 <= b < r:
                raise ValueError(f"{self!r}: axes {self.axes} has no axis {a} in input {i} of "
                                 f"rank {r} (the batch included)")
            out.append(b)
        return out

    def compute_output_shape(self, input_shape):
        shapes = [tuple(s) for s in input_shape]
        if len(shapes) != 2:
            raise ValueError(f"{self!r}: takes exactly 2 inputs, got {len(shapes)}")
        a0, a1 = self._resolved([len(s) + 1 for s in shapes])
        d0, d1 = shapes[0][a0 - 1], shapes[1][a1 - 1]
        if d0 is not None and d1 is not None and d0 != d1:
            raise ValueError(f"{self!r}: the contracted axes differ in size: axis {a0} of input "
                             f"0 {fmt_shape(shapes[0])} is {d0}, axis {a1} of input 1 "
                             f"{fmt_shape(shapes[1])} is {d1}")
        rest = [d for k, d in enumerate(shapes[0]) if k != a0 - 1] + \
            [d for k, d in enumerate(shapes[1]) if k != a1 - 1]
        return tuple(rest) or (1,)

    def build(self, input_shape):
        shapes = [tuple(s) for s in input_shape]
        super().build(shapes)
        # the axes not contracted may change size between calls
        axes = self._resolved([len(s) + 1 for s in shapes])
        self.input_shape = [tuple(d if k == a - 1 else None for k, d in enumerate(s))
                            for s, a in zip(shapes, axes)]
        self.output_shape = self.compute_output_shape(self.input_shape)

    def call(self, inputs):
        x, y = inputs
        xs, ys = tuple(int(d) for d in x.shape), tuple(int(d) for d in y.shape)
        a0, a1 = self._resolved([len(xs), len(ys)])
        if xs[0] != ys[0] or xs[a0] != ys[a1]:
            raise ValueError(f"{self!r}: the inputs must share the batch and the size of the "
                             f"contracted axes {a0} and {a1}, got shapes {xs} and {ys}")
        if self.normalize:
            from .normalization import l2_normalize
            x, y = l2_normalize(x, a0, 1e-7), l2_normalize(y, a1, 1e-7)
        n, k = xs[0], xs[a0]
        x_rest = [d for i, d in enumerate(xs) if i not in (0, a0)]
        y_rest = [d for i, d in enumerate(ys) if i not in (0, a1)]
        # x as (batch, rest, k), y as (batch, k, rest): one batched matmul
        x3 = _ops.reshape(_ops.transpose(x, [i for i in range(len(xs)) if i != a0] + [a0]),
                         (n, math.prod(x_rest), k))
        y3 = _ops.reshape(_ops.transpose(y, [0, a1] + [i for i in range(1, len(ys)) if i != a1]),
                         (n, k, math.prod(y_rest)))
        return _ops.reshape(_ops.matmul(x3, y3), (n, *x_rest, *y_rest) if x_rest or y_rest
                           else (n, 1))
