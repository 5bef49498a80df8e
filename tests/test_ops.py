"""nb.ops: every op's forward against NumPy in float64, its gradient (through a GradientTape)
against central differences and against torch.autograd, with broadcasting shapes; the operators
on tensors; conversion; dtype rules; bad arguments."""
import numpy as np
import pytest

import numbanet as nb
from numbanet import ops
from numbanet.testing import gradcheck


def _pos(shape, rng):
    return rng.uniform(0.5, 2.0, shape)


def _real(shape, rng):
    return rng.standard_normal(shape)


def _apart(shape, rng):
    """Reals without near-ties (for max / maximum / abs / clip kinks)."""
    n = int(np.prod(shape))
    v = rng.permutation(n).astype(np.float64) * 0.37 - n * 0.18 + 0.05
    return v.reshape(shape)


# name -> (numbanet fn, numpy fn, torch fn (or None), input shapes, input maker)
UNARY = {
    "negative": (ops.negative, np.negative, "neg"),
    "square": (ops.square, np.square, "square"),
    "sqrt": (ops.sqrt, np.sqrt, "sqrt"),
    "exp": (ops.exp, np.exp, "exp"),
    "log": (ops.log, np.log, "log"),
    "abs": (ops.abs, np.abs, "abs"),
    "sigmoid": (ops.sigmoid, lambda x: 1 / (1 + np.exp(-x)), "sigmoid"),
    "tanh": (ops.tanh, np.tanh, "tanh"),
    "relu": (ops.relu, lambda x: np.maximum(x, 0), "relu"),
    "sign": (ops.sign, np.sign, "sign"),
}

CASES = {
    **{k: (v[0], v[1], v[2], [(3, 4)], _pos if k in ("sqrt", "log") else _apart)
       for k, v in UNARY.items()},
    "add": (ops.add, np.add, "add", [(2, 3, 4), (3, 1)], _real),
    "subtract": (ops.subtract, np.subtract, "sub", [(3, 1), (2, 3, 4)], _real),
    "multiply": (ops.multiply, np.multiply, "mul", [(2, 1, 4), (3, 1)], _real),
    "divide": (ops.divide, np.divide, "div", [(2, 3, 4), (4,)], _pos),
    "maximum": (ops.maximum, np.maximum, "maximum", [(2, 3, 4), (1, 3, 1)], _apart),
    "minimum": (ops.minimum, np.minimum, "minimum", [(3, 4), (2, 1, 4)], _apart),
    "matmul": (ops.matmul, np.matmul, "matmul", [(2, 3, 4), (4, 5)], _real),
    "matmul_batched": (ops.matmul, np.matmul, "matmul", [(2, 1, 3, 4), (3, 4, 2)], _real),
    "matmul_vector": (ops.matmul, np.matmul, "matmul", [(4,), (2, 4, 3)], _real),
    "sum": (lambda x: ops.sum(x, axis=(0, 2)), lambda x: np.sum(x, axis=(0, 2)),
            lambda t, x: t.sum(x, dim=(0, 2)), [(2, 3, 4)], _real),
    "sum_all": (ops.sum, np.sum, "sum", [(3, 4)], _real),
    "mean": (lambda x: ops.mean(x, axis=-1, keepdims=True),
             lambda x: np.mean(x, axis=-1, keepdims=True),
             lambda t, x: t.mean(x, dim=-1, keepdim=True), [(2, 3, 4)], _real),
    "max": (lambda x: ops.max(x, axis=1), lambda x: np.max(x, axis=1),
            lambda t, x: t.amax(x, dim=1), [(2, 3, 4)], _apart),
    "power": (lambda x: ops.power(x, 1.7), lambda x: np.power(x, 1.7),
              lambda t, x: t.pow(x, 1.7), [(3, 4)], _pos),
    "power_int": (lambda x: x ** 3, lambda x: x ** 3, lambda t, x: x ** 3, [(3, 4)], _real),
    "clip": (lambda x: ops.clip(x, -0.5, 0.7), lambda x: np.clip(x, -0.5, 0.7),
             lambda t, x: t.clamp(x, -0.5, 0.7), [(4, 5)], _apart),
    "where": (lambda x, y: ops.where(np.arange(4) % 2 == 0, x, y),
              lambda x, y: np.where(np.arange(4) % 2 == 0, x, y),
              lambda t, x, y: t.where(t.from_numpy(np.arange(4) % 2 == 0), x, y),
              [(3, 4), (3, 1)], _real),
    "reshape": (lambda x: ops.reshape(x, (4, -1)), lambda x: x.reshape(4, -1),
                lambda t, x: x.reshape(4, -1), [(2, 3, 4)], _real),
    "transpose": (lambda x: ops.transpose(x, (2, 0, 1)), lambda x: np.transpose(x, (2, 0, 1)),
                  lambda t, x: x.permute(2, 0, 1), [(2, 3, 4)], _real),
    "concatenate": (lambda x, y: ops.concatenate([x, y, x], axis=1),
                    lambda x, y: np.concatenate([x, y, x], axis=1),
                    lambda t, x, y: t.cat([x, y, x], dim=1), [(2, 3, 4), (2, 1, 4)], _real),
    "stack": (lambda x, y: ops.stack([x, y], axis=1), lambda x, y: np.stack([x, y], axis=1),
              lambda t, x, y: t.stack([x, y], dim=1), [(2, 3), (2, 3)], _real),
    "take": (lambda x: ops.take(x, np.array([[2, 0], [2, -1]]), axis=1),
             lambda x: np.take(x, np.array([[2, 0], [2, -1]]), axis=1),
             lambda t, x: x[:, t.tensor([[2, 0], [2, 3]])], [(2, 4, 3)], _real),
    "softmax": (lambda x: ops.softmax(x, axis=1), lambda x: _softmax(x, 1),
                lambda t, x: t.softmax(x, dim=1), [(2, 3, 4)], _real),
    "log_softmax": (ops.log_softmax, lambda x: np.log(_softmax(x, -1)),
                    lambda t, x: t.log_softmax(x, dim=-1), [(3, 5)], _real),
    "getitem": (lambda x: x[1:, ::2, None, -1], lambda x: x[1:, ::2, None, -1],
                lambda t, x: x[1:, ::2, None, -1], [(3, 5, 4)], _real),
    "broadcast_to": (lambda x: ops.broadcast_to(x, (2, 3, 4)),
                     lambda x: np.broadcast_to(x, (2, 3, 4)),
                     lambda t, x: x.expand(2, 3, 4), [(3, 1)], _real),
    "leaky_relu": (ops.leaky_relu, lambda x: np.where(x > 0, x, 0.2 * x),
                   lambda t, x: t.nn.functional.leaky_relu(x, 0.2), [(3, 4)], _apart),
    "elu": (lambda x: ops.elu(x, 0.7), lambda x: np.where(x > 0, x, 0.7 * np.expm1(x)),
            lambda t, x: t.nn.functional.elu(x, 0.7), [(3, 4)], _apart),
    "gelu": (ops.gelu, lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi)
                                                         * (x + 0.044715 * x ** 3))),
             lambda t, x: t.nn.functional.gelu(x, approximate="tanh"), [(3, 4)], _real),
    "gelu_exact": (lambda x: ops.gelu(x, approximate=False),
                   lambda x: 0.5 * x * (1 + _erf(x / np.sqrt(2))),
                   lambda t, x: t.nn.functional.gelu(x), [(3, 4)], _real),
    "softplus": (ops.softplus, lambda x: np.logaddexp(0.0, x),
                 lambda t, x: t.nn.functional.softplus(x), [(3, 4)], lambda s, r: 15 * _real(s, r)),
    "silu": (ops.silu, lambda x: x / (1 + np.exp(-x)), lambda t, x: t.nn.functional.silu(x),
             [(3, 4)], _real),
    "selu": (ops.selu, lambda x: 1.0507009873554805 * np.where(
        x > 0, x, 1.6732632423543772 * np.expm1(x)), lambda t, x: t.nn.functional.selu(x),
        [(3, 4)], _apart),
    "relu6": (ops.relu6, lambda x: np.clip(x, 0, 6), lambda t, x: t.nn.functional.relu6(x),
              [(3, 4)], lambda s, r: 4 * _apart(s, r)),
    "min": (lambda x: ops.min(x, axis=(0, 2), keepdims=True),
            lambda x: np.min(x, axis=(0, 2), keepdims=True),
            lambda t, x: t.amin(x, dim=(0, 2), keepdim=True), [(2, 3, 4)], _apart),
    "var": (lambda x: ops.var(x, axis=1), lambda x: np.var(x, axis=1),
            lambda t, x: t.var(x, dim=1, unbiased=False), [(2, 3, 4)], _real),
    "std_all": (ops.std, np.std, lambda t, x: t.std(x, unbiased=False), [(3, 4)], _real),
    "norm": (lambda x: ops.norm(x, axis=-1), lambda x: np.linalg.norm(x, axis=-1),
             lambda t, x: t.linalg.vector_norm(x, dim=-1), [(2, 3, 4)], _real),
    "norm_l1": (lambda x: ops.norm(x, ord=1, axis=0, keepdims=True),
                lambda x: np.abs(x).sum(axis=0, keepdims=True),
                lambda t, x: t.linalg.vector_norm(x, ord=1, dim=0, keepdim=True), [(3, 4)],
                _apart),
    "logsumexp": (lambda x: ops.logsumexp(x, axis=1),
                  lambda x: np.log(np.exp(x).sum(axis=1)),
                  lambda t, x: t.logsumexp(x, dim=1), [(2, 3, 4)], _real),
    "logsumexp_all": (lambda x: ops.logsumexp(x, keepdims=True),
                      lambda x: np.log(np.exp(x).sum(keepdims=True)),
                      lambda t, x: t.logsumexp(x.reshape(-1), dim=0).reshape(1, 1),
                      [(3, 4)], _real),
    "operators": (lambda x, y: (2.0 - x) * y / 3.0 + x @ y.T - (-x) ** 2 + 1.5 / (y * y + 1),
                  lambda x, y: (2.0 - x) * y / 3.0 + x @ y.T - (-x) ** 2 + 1.5 / (y * y + 1),
                  lambda t, x, y: (2.0 - x) * y / 3.0 + x @ y.T - (-x) ** 2 + 1.5 / (y * y + 1),
                  [(3, 3), (3, 3)], _real),
}


def _erf(x):
    from scipy.special import erf
    return erf(x)


def _softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _inputs(name, rng):
    _, _, _, shapes, make = CASES[name]
    return [make(s, rng) for s in shapes]


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_matches_numpy_float64(name, rng):
    fn, ref = CASES[name][:2]
    xs = _inputs(name, rng)
    got = fn(*[nb.ops.convert_to_tensor(x) for x in xs])
    assert isinstance(got, nb.Tensor) and got.dtype == np.float64
    want = ref(*xs)
    assert got.shape == np.shape(want)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradient_matches_central_differences(name, rng):
    fn = CASES[name][0]
    assert gradcheck(fn, *_inputs(name, rng))


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradient_matches_torch(name, rng):
    torch = pytest.importorskip("torch")
    fn, _, tfn = CASES[name][:3]
    xs = _inputs(name, rng)
    tensors = [nb.ops.convert_to_tensor(x) for x in xs]
    with nb.GradientTape() as tape:
        tape.watch(tensors)
        out = fn(*tensors)
    g = rng.standard_normal(out.shape)
    grads = tape.gradient(out, tensors, output_gradients=g)
    txs = [torch.tensor(x, requires_grad=True) for x in xs]
    tout = getattr(torch, tfn)(*txs) if isinstance(tfn, str) else tfn(torch, *txs)
    np.testing.assert_allclose(np.asarray(out), tout.detach().numpy(), rtol=1e-12, atol=1e-12)
    tout.backward(torch.tensor(g))
    for k, (a, t) in enumerate(zip(grads, txs)):
        np.testing.assert_allclose(np.asarray(a), t.grad.numpy(), rtol=1e-10, atol=1e-12,
                                   err_msg=f"input {k}")


def test_ties_split_the_gradient_as_torch():
    torch = pytest.importorskip("torch")
    a = np.array([1.0, 2.0, 3.0, 2.0])
    b = np.array([1.0, 1.0, 3.0, 5.0])
    for name in ("maximum", "minimum"):
        ta, tb = nb.ops.convert_to_tensor(a), nb.ops.convert_to_tensor(b)
        with nb.GradientTape() as tape:
            tape.watch([ta, tb])
            out = nb.ops.sum(getattr(nb.ops, name)(ta, tb))
        ga, gb = tape.gradient(out, [ta, tb])
        xa, xb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
        getattr(torch, name)(xa, xb).sum().backward()
        np.testing.assert_array_equal(np.asarray(ga), xa.grad.numpy())
        np.testing.assert_array_equal(np.asarray(gb), xb.grad.numpy())
    x = nb.ops.convert_to_tensor(np.array([[1.0, 3.0, 3.0], [2.0, 0.0, 2.0]]))
    with nb.GradientTape() as tape:
        tape.watch(x)
        out = nb.ops.sum(nb.ops.max(x, axis=1))
    tx = torch.tensor(np.asarray(x), requires_grad=True)
    torch.amax(tx, dim=1).sum().backward()
    np.testing.assert_array_equal(np.asarray(tape.gradient(out, x)), tx.grad.numpy())


def test_repeated_take_indices_add_their_gradients(rng):
    x = nb.ops.convert_to_tensor(rng.standard_normal((5, 2)))
    idx = np.array([1, 3, 1, 1, 4])
    with nb.GradientTape() as tape:
        tape.watch(x)
        out = nb.ops.sum(nb.ops.take(x, idx, axis=0))
    want = np.zeros((5, 2))
    np.add.at(want, idx, 1.0)
    np.testing.assert_array_equal(np.asarray(tape.gradient(out, x)), want)


def test_float32_tensors_and_host_operands(rng):
    x = nb.ops.convert_to_tensor(rng.standard_normal((3, 4)).astype(np.float32))
    assert x.dtype == np.float32
    # numbers and host arrays take the tensor's dtype; two float64 tensors give float64
    assert (x * 2).dtype == np.float32 and (x + np.ones(4)).dtype == np.float32
    assert (1 - x).dtype == np.float32
    y = nb.ops.convert_to_tensor(np.ones((3, 4)))
    assert y.dtype == np.float64 and (x + y).dtype == np.float64
    np.testing.assert_allclose(np.asarray(x * 2 + 1), np.asarray(x) * 2 + 1, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(nb.ops.exp(x)), np.exp(np.asarray(x)), rtol=1e-6)
    # ndarray on the left goes to the op too
    z = np.ones((3, 4)) - x
    assert isinstance(z, nb.Tensor) and z.dtype == np.float32
    assert float(nb.ops.sum(x)) == pytest.approx(float(np.asarray(x).sum()), rel=1e-5)
    assert x.numpy() is not x.value and len(x) == 3 and x.ndim == 2 and x.size == 12
    assert [t.shape for t in x] == [(4,)] * 3
    assert "Tensor" in repr(x)


def test_scalars_have_shape_empty_tuple_as_numpy_and_torch(rng):
    torch = pytest.importorskip("torch")
    v = float(rng.standard_normal())
    for value in (v, np.float64(v), np.array(v), np.array(v, np.float32)):
        t = nb.ops.convert_to_tensor(value)
        assert t.shape == () == tuple(torch.tensor(np.asarray(value)).shape), type(value)
        assert float(t) == pytest.approx(v, rel=1e-6)
    x = nb.ops.convert_to_tensor(rng.standard_normal(3))
    c = np.array(v)
    with nb.GradientTape() as tape:
        tape.watch(x)
        s = nb.ops.sum(x)
        y = s * c + c                          # 0-d tensor and 0-d NumPy operands: 0-d
        z = nb.ops.cast(y, np.float32)
    assert s.shape == y.shape == z.shape == () == np.shape(np.sum(np.asarray(x)) * c + c)
    assert float(y) == pytest.approx(float(np.sum(np.asarray(x)) * v + v), rel=1e-12)
    gx = tape.gradient(z, x)
    tx = torch.tensor(np.asarray(x), requires_grad=True)
    (tx.sum() * torch.tensor(c) + torch.tensor(c)).float().backward()
    np.testing.assert_allclose(np.asarray(gx), tx.grad.numpy(), rtol=1e-12)
    assert gx.shape == (3,) and gx.dtype == np.float64


@pytest.mark.parametrize("sa, sb", [((2, 0), (0, 3)), ((0, 4), (4, 3)), ((2, 4), (4, 0)),
                                     ((3, 2, 0), (0, 5)), ((0, 2, 3), (3, 4)), ((0,), (0, 3)),
                                     ((3, 1, 2, 0), (4, 0, 2))])
def test_matmul_of_empty_operands_matches_torch(sa, sb, rng):
    torch = pytest.importorskip("torch")
    a, b = rng.standard_normal(sa), rng.standard_normal(sb)
    ta, tb = nb.ops.convert_to_tensor(a), nb.ops.convert_to_tensor(b)
    with nb.GradientTape() as tape:
        tape.watch([ta, tb])
        out = ta @ tb
    g = rng.standard_normal(out.shape)
    ga, gb = tape.gradient(out, [ta, tb], output_gradients=g)
    xa, xb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    tout = xa @ xb
    tout.backward(torch.tensor(g))
    assert out.shape == tuple(tout.shape) and ga.shape == sa and gb.shape == sb
    np.testing.assert_array_equal(np.asarray(out), tout.detach().numpy())
    np.testing.assert_array_equal(np.asarray(ga), xa.grad.numpy())
    np.testing.assert_allclose(np.asarray(gb), xb.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_bad_arguments_are_clear_errors(rng):
    x = nb.ops.convert_to_tensor(rng.standard_normal((3, 4)))
    with pytest.raises(ValueError, match=r"add: shapes \(3, 4\) and \(3,\) do not broadcast"):
        nb.ops.add(x, np.ones(3))
    with pytest.raises(ValueError, match="matmul.*not aligned"):
        nb.ops.matmul(x, np.ones((3, 2)))
    with pytest.raises(ValueError, match="axis 2 out of range"):
        nb.ops.sum(x, axis=2)
    with pytest.raises(ValueError, match="cannot reshape"):
        nb.ops.reshape(x, (5, -1))
    with pytest.raises(IndexError, match="index 4 is out of bounds for axis 1 with size 4"):
        nb.ops.take(x, [0, 4], axis=1)
    with pytest.raises(IndexError, match="out of bounds"):
        x[3]
    with pytest.raises(TypeError, match="take"):
        x[np.array([0, 1])]
    with pytest.raises(TypeError, match="exponent must be a Python number"):
        nb.ops.power(x, x)
    with pytest.raises(ValueError, match="x_min 2.0 is greater than x_max 1.0"):
        nb.ops.clip(x, 2, 1)
    with pytest.raises(TypeError, match="only a tensor of one element converts to float"):
        float(x)
    with pytest.raises(TypeError, match="could not convert|expected numbers"):
        nb.ops.convert_to_tensor(["a", "b"])
    with pytest.raises(ValueError, match="concatenate.*differ outside axis"):
        nb.ops.concatenate([x, np.ones((2, 3))], axis=0)


def test_a_number_to_the_power_of_a_tensor(rng):
    """``base ** t`` for a positive number: value and gradient as torch, eagerly and in a
    graph; any other base is a TypeError naming it."""
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((3, 4))
    for base in (2, 0.5, np.float32(10.0)):
        t = ops.convert_to_tensor(x)
        with nb.GradientTape() as tape:
            tape.watch(t)
            y = ops.sum(base ** t * t)
        tx = torch.tensor(x, requires_grad=True)
        ty = (float(base) ** tx * tx).sum()
        ty.backward()
        np.testing.assert_allclose(float(y), ty.item(), rtol=1e-12)
        np.testing.assert_allclose(np.asarray(tape.gradient(y, t)), tx.grad.numpy(), rtol=1e-12)
    inp = nb.Input((4,), dtype="float64")
    graph = nb.Model(inp, 3 ** inp)
    np.testing.assert_allclose(graph.predict(x), 3.0 ** x, rtol=1e-12)
    for bad in (0, -2.0, float("inf"), True, "2", 1j):
        with pytest.raises(TypeError, match="positive finite real number as the base"):
            bad ** ops.convert_to_tensor(x)


# ---------------------------------------------------------------------------------------------
# comparisons, sign, argmax / argmin

COMPARISONS = {"equal": (np.equal, "eq"), "not_equal": (np.not_equal, "ne"),
               "greater": (np.greater, "gt"), "greater_equal": (np.greater_equal, "ge"),
               "less": (np.less, "lt"), "less_equal": (np.less_equal, "le")}
COMPARE_SHAPES = [((2, 3, 4), (3, 1)), ((3, 1), (2, 1, 3, 4)), ((), ()), ((3, 4), ()),
                  ((), (2, 3)), ((0, 3), (3,))]


def _ties_and_nan(shape, rng):
    """Small integers (operands tie often), the last one NaN."""
    x = rng.integers(-2, 3, shape).astype(np.float64)
    if x.size:
        x.reshape(-1)[-1] = np.nan
    return x


@pytest.mark.parametrize("shapes", COMPARE_SHAPES, ids=str)
@pytest.mark.parametrize("name", sorted(COMPARISONS))
def test_comparisons_match_numpy_float64(name, shapes, rng):
    """1.0 / 0.0 in the operands' float dtype, broadcasting to the higher rank, 0-d operands,
    NaN (false except for not_equal), numbers on either side."""
    fn, ref = getattr(ops, name), COMPARISONS[name][0]
    a, b = _ties_and_nan(shapes[0], rng), _ties_and_nan(shapes[1], rng)
    got = fn(ops.convert_to_tensor(a), ops.convert_to_tensor(b))
    want = ref(a, b).astype(np.float64)
    assert isinstance(got, nb.Tensor) and got.dtype == np.float64 and got.shape == want.shape
    np.testing.assert_array_equal(np.asarray(got), want)
    for v in (0.0, 1, np.float64(-1.0), np.nan):
        np.testing.assert_array_equal(np.asarray(fn(ops.convert_to_tensor(a), v)), ref(a, v))
        np.testing.assert_array_equal(np.asarray(fn(v, ops.convert_to_tensor(a))), ref(v, a))
    f32 = fn(ops.convert_to_tensor(a.astype(np.float32)), b)
    assert f32.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(f32), want)


def test_comparisons_agree_with_torch(rng):
    torch = pytest.importorskip("torch")
    for name, (_, tname) in COMPARISONS.items():
        for sa, sb in COMPARE_SHAPES:
            a, b = _ties_and_nan(sa, rng), _ties_and_nan(sb, rng)
            got = getattr(ops, name)(ops.convert_to_tensor(a), ops.convert_to_tensor(b))
            want = getattr(torch, tname)(torch.tensor(a), torch.tensor(b)).double().numpy()
            np.testing.assert_array_equal(np.asarray(got), want, err_msg=f"{name} {sa} {sb}")


def test_comparison_operators_on_tensors_and_variables(rng):
    a, b = _ties_and_nan((3, 4), rng), _ties_and_nan((4,), rng)
    x, y = ops.convert_to_tensor(a), ops.convert_to_tensor(b)
    cases = [(x < y, a < b), (x <= y, a <= b), (x > y, a > b), (x >= y, a >= b),
             (x > 0, a > 0), (0 < x, 0 < a), (1.5 >= x, 1.5 >= a), (-1 <= x, -1 <= a),
             (np.zeros(4) < x, 0 < a), (np.float32(1) > x, 1 > a), (b <= x, b <= a)]
    for k, (got, want) in enumerate(cases):
        assert isinstance(got, nb.Tensor) and got.dtype == np.float64, k
        np.testing.assert_array_equal(np.asarray(got), want.astype(np.float64), err_msg=str(k))
    x32 = ops.convert_to_tensor(a.astype(np.float32))
    assert (x32 > 0).dtype == (0.5 <= x32).dtype == np.float32
    assert bool(ops.mean(x32[0]) < 100.0)          # one element: a Python truth value
    w = nb.Sequential([nb.layers.Dense(3)], input_shape=(2,)).trainable_weights[0]
    np.testing.assert_array_equal(np.asarray(w > 0), (np.asarray(w) > 0).astype(np.float32))
    np.testing.assert_array_equal(np.asarray(0 >= w), (np.asarray(w) <= 0).astype(np.float32))
    # == and != stay identity comparisons (tensors and variables key dictionaries and sets);
    # ops.equal / not_equal are the elementwise forms
    assert (x == x) is True and (x != x) is False
    assert (x == ops.convert_to_tensor(a)) is False
    assert {x: 1, y: 2}[x] == 1 and (w == w) is True and (w != w) is False


def test_comparisons_pass_no_gradient(rng):
    """The tape sees a comparison as a constant (as where's condition): None for a target
    made only of comparisons; a mask multiplying x gives the gradient torch gives."""
    torch = pytest.importorskip("torch")
    a = _apart((3, 4), rng)
    x = ops.convert_to_tensor(a)
    with nb.GradientTape(persistent=True) as tape:
        tape.watch(x)
        counted = ops.sum(x > 0) + ops.sum(ops.not_equal(0.5, x))
        masked = ops.sum(x * (x > 0.1) + ops.where(x <= -0.2, x * x, 0.0))
        direct = x >= 0
    assert tape.gradient(counted, x) is None
    assert tape.gradient(direct, x, output_gradients=np.ones((3, 4))) is None
    tx = torch.tensor(a, requires_grad=True)
    (tx * (tx > 0.1) + torch.where(tx <= -0.2, tx * tx, 0.0)).sum().backward()
    np.testing.assert_allclose(np.asarray(tape.gradient(masked, x)), tx.grad.numpy(),
                               rtol=1e-12)
    assert gradcheck(lambda u, v: ops.where(u > v, u * v, u - v) + u * ops.less_equal(u, 0.3)
                     + v * ops.greater_equal(0.2, v) * ops.equal(u, v), a, _apart((4,), rng))


def test_sign_edges_and_zero_gradient():
    torch = pytest.importorskip("torch")
    a = np.array([np.nan, -0.0, 0.0, -np.inf, np.inf, -1e-300, 2.5])
    for dtype in (np.float64, np.float32):
        x = ops.convert_to_tensor(a.astype(dtype))
        with nb.GradientTape() as tape:
            tape.watch(x)
            y = ops.sign(x)
        assert y.dtype == dtype
        np.testing.assert_array_equal(np.asarray(y), np.sign(a.astype(dtype)))   # NaN: NaN
        g = tape.gradient(y, x, output_gradients=np.ones(7))
        np.testing.assert_array_equal(np.asarray(g), np.zeros(7))
    tx = torch.tensor(a[1:], requires_grad=True)             # torch.sign(NaN) is 0, not NaN
    torch.sign(tx).sum().backward()
    np.testing.assert_array_equal(np.asarray(ops.sign(a[1:])), torch.sign(tx).detach().numpy())
    np.testing.assert_array_equal(tx.grad.numpy(), np.zeros(6))
    np.testing.assert_array_equal(np.asarray(np.sign(ops.convert_to_tensor(a))), np.sign(a))


ARG_CASES = [((3, 4), None, False), ((3, 4), 1, False), ((3, 4), 0, True), ((2, 3, 4), -1, True),
             ((2, 3, 4), 1, False), ((2, 3, 4), None, True), ((5,), 0, False), ((), None, False)]


@pytest.mark.parametrize("case", ARG_CASES, ids=str)
@pytest.mark.parametrize("name", ["argmax", "argmin"])
def test_argmax_argmin_match_numpy_and_torch(name, case, rng):
    """int64 indices, the first one on ties, a NaN counting as the extreme (as NumPy and
    torch); the tape passes no gradient."""
    shape, axis, keepdims = case
    a = rng.integers(-2, 3, shape).astype(np.float64)          # ties
    if a.ndim == 3:
        a[1, 2, 1] = a[0, 1, 3] = np.nan
    xs = [a, a.astype(np.float32)] + ([a.astype(np.int64)] if not np.isnan(a).any() else [])
    for x in xs:
        t = ops.convert_to_tensor(x)
        with nb.GradientTape() as tape:
            tape.watch(t)
            got = getattr(ops, name)(t, axis=axis, keepdims=keepdims)
        want = getattr(np, name)(x, axis=axis, keepdims=keepdims)
        assert isinstance(got, nb.Tensor) and got.dtype == np.int64 and got.shape == want.shape
        np.testing.assert_array_equal(np.asarray(got), want)
        assert tape.gradient(got, t) is None
    torch = pytest.importorskip("torch")
    tx = torch.tensor(a)
    want = getattr(torch, name)(tx, dim=axis, keepdim=keepdims) if axis is not None else \
        getattr(torch, name)(tx)
    if axis is not None or not keepdims:
        np.testing.assert_array_equal(np.asarray(getattr(ops, name)(a, axis, keepdims)),
                                      want.numpy())


def test_accuracy_and_thresholds_written_with_ops(rng):
    """What a course writes as keras.ops: an accuracy from argmax and equal, a threshold with
    where, both in float32."""
    y = rng.standard_normal((8, 5)).astype(np.float32)
    labels = rng.integers(0, 5, 8)
    labels[:3] = np.argmax(y[:3], -1)
    acc = ops.mean(ops.cast(ops.equal(ops.argmax(y, -1), labels), "float32"))
    assert acc.dtype == np.float32 and float(acc) == np.mean(np.argmax(y, -1) == labels)
    p = ops.sigmoid(ops.convert_to_tensor(y))
    hard = ops.where(p > 0.5, 1.0, 0.0)
    np.testing.assert_array_equal(np.asarray(hard), (1 / (1 + np.exp(-y)) > 0.5).astype(float))
    np.testing.assert_array_equal(np.asarray(ops.take(y[0], ops.argmax(y[0]))), y[0].max())


def test_comparison_sign_and_argmax_errors(rng):
    x = ops.convert_to_tensor(rng.standard_normal((3, 4)))
    with pytest.raises(ValueError, match=r"greater: shapes \(3, 4\) and \(3,\) do not broadcast"):
        x > np.ones(3)
    with pytest.raises(TypeError, match="less: expected numbers"):
        ops.less(x, "a")
    with pytest.raises(ValueError, match="argmax: axis 2 out of range for 2 dimensions"):
        ops.argmax(x, axis=2)
    with pytest.raises(ValueError, match=r"argmin: the axis to search is empty \(shape \(3, 0\)"):
        ops.argmin(np.ones((3, 0)), axis=1)
    with pytest.raises(ValueError, match="argmax: the array to search is empty"):
        ops.argmax(np.ones(0))
    np.testing.assert_array_equal(np.asarray(ops.argmax(np.ones((0, 3)), axis=1)),
                                  np.zeros(0, np.int64))


def test_comparisons_sign_and_argmax_in_a_graph_save_and_load(rng, tmp_path):
    inp = nb.Input((4,), dtype="float64")
    outs = [inp > 0, 0.5 <= inp, ops.equal(inp, 1.0), ops.not_equal(inp, inp * 2.0),
            ops.less(inp, np.linspace(-1, 1, 4)), ops.sign(inp), ops.argmax(inp, axis=-1),
            ops.argmin(inp, axis=1, keepdims=True)]
    model = nb.Model(inp, outs)
    x = rng.integers(-2, 3, (5, 4)).astype(np.float64)            # ties (models refuse NaN)
    wants = [x > 0, 0.5 <= x, x == 1.0, x != x * 2.0, x < np.linspace(-1, 1, 4), np.sign(x),
             np.argmax(x, -1), np.argmin(x, 1, keepdims=True)]
    got = model.predict(x)
    for k, (g, w) in enumerate(zip(got, wants)):
        np.testing.assert_array_equal(g, w.astype(np.float64) if w.dtype == bool else w,
                                      err_msg=str(k))
    model.save(tmp_path / "compare.npz")
    for g, h in zip(got, nb.load_model(tmp_path / "compare.npz").predict(x)):
        np.testing.assert_array_equal(g, h)
    # a leaky relu and a hinge written with comparisons: gradients through where and the masks
    leaky = nb.Model(inp, ops.where(inp > 0, inp, 0.1 * inp) + inp * ops.sign(inp) * (inp < 1))
    assert gradcheck(leaky, _apart((5, 4), rng))


def test_custom_loss_with_comparisons_trains_as_the_builtin(rng):
    """Huber written with where and a comparison trains as the built-in "huber"."""
    class MyHuber(nb.losses.Loss):
        def call(self, y_true, y_pred):
            err = ops.abs(y_pred - y_true)
            return ops.mean(ops.where(err <= 1.0, 0.5 * err * err, err - 0.5), axis=-1)

    x = rng.standard_normal((64, 3)).astype(np.float32)
    y = 3.0 * x @ np.array([[1.0], [-2.0], [0.5]], np.float32)
    nb.seed(0)
    a = nb.Sequential([nb.layers.Dense(1)], input_shape=(3,))
    b = nb.Sequential([nb.layers.Dense(1)], input_shape=(3,))
    b.set_weights(a.get_weights())
    a.compile(nb.optimizers.SGD(0.1), MyHuber())
    b.compile(nb.optimizers.SGD(0.1), "huber")
    ha = a.fit(x, y, epochs=3, batch_size=16, shuffle=False, verbose=0)
    hb = b.fit(x, y, epochs=3, batch_size=16, shuffle=False, verbose=0)
    np.testing.assert_allclose(ha.history["loss"], hb.history["loss"], rtol=1e-5)
    for p, q in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(p, q, rtol=1e-5, atol=1e-6)


def test_comparisons_sign_and_argmax_on_cuda(allow_cuda, rng):
    """The same results on the CUDA backend (tiny shapes: the simulator), on the device."""
    a, b = _ties_and_nan((2, 3), rng), _ties_and_nan((3,), rng)
    x = ops.convert_to_tensor(a, device="cuda")
    y = ops.convert_to_tensor(b, device="cuda")
    for name, (ref, _) in COMPARISONS.items():
        got = getattr(ops, name)(x, y)
        assert got.device == "cuda" and got.dtype == np.float64
        np.testing.assert_array_equal(np.asarray(got), ref(a, b).astype(np.float64))
    np.testing.assert_array_equal(np.asarray(0 < x), (0 < a).astype(np.float64))
    np.testing.assert_array_equal(np.asarray(ops.sign(x)), np.sign(a))
    idx = ops.argmax(x, axis=-1)
    assert idx.device == "cuda" and idx.dtype == np.int64
    np.testing.assert_array_equal(np.asarray(idx), np.argmax(a, -1))
    np.testing.assert_array_equal(np.asarray(ops.argmin(y)), np.argmin(b))
    c = _apart((2, 3), rng)
    grads = []
    for device in ("cpu", "cuda"):
        t = ops.convert_to_tensor(c, device=device)
        with nb.GradientTape() as tape:
            tape.watch(t)
            loss = ops.sum(ops.where(t > 0, t * t, -t) + ops.sign(t) * t)
        grads.append(np.asarray(tape.gradient(loss, t)))
    np.testing.assert_array_equal(grads[0], grads[1])
    np.testing.assert_array_equal(grads[0], np.where(c > 0, 2 * c, -1.0) + np.sign(c))


def test_shape_as_keras_ops_shape(rng):
    t = ops.convert_to_tensor(rng.standard_normal((2, 3)))
    assert ops.shape(t) == (2, 3) and ops.shape(ops.sum(t)) == () and ops.shape([1, 2]) == (2,)
    inp = nb.Input((None, 4))
    assert ops.shape(inp) == (None, None, 4)
    assert ops.shape(inp * 2.0) == (None, None, 4)        # a graph tensor, not an op node


def test_logsumexp_does_not_overflow_or_underflow():
    x = ops.convert_to_tensor(np.array([[1000.0, 1000.0], [-1000.0, -1001.0]]))
    np.testing.assert_allclose(np.asarray(ops.logsumexp(x, axis=1)),
                               [1000.0 + np.log(2.0), -1000.0 + np.log1p(np.exp(-1.0))],
                               rtol=1e-15)
    with nb.GradientTape() as tape:
        tape.watch(x)
        out = ops.sum(ops.logsumexp(x, axis=-1))
    np.testing.assert_allclose(np.asarray(tape.gradient(out, x)),
                               [[0.5, 0.5], [1 / (1 + np.exp(-1.0)), 1 / (1 + np.exp(1.0))]],
                               rtol=1e-14)


def test_constant_makers(rng):
    z = ops.zeros((2, 3))
    assert isinstance(z, nb.Tensor) and z.dtype == np.float32 and z.shape == (2, 3)
    np.testing.assert_array_equal(np.asarray(z), np.zeros((2, 3)))
    o = ops.ones(4, dtype="float64")
    assert o.dtype == np.float64 and np.asarray(o).tolist() == [1.0] * 4
    a = ops.arange(5)
    assert a.dtype == np.int64 and np.asarray(a).tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(np.asarray(ops.arange(0.0, 1.0, 0.25)), [0, 0.25, 0.5, 0.75])
    assert ops.arange(1, 7, 2, dtype="float64").dtype == np.float64
    labels = rng.integers(0, 4, (3, 2))
    oh = ops.one_hot(ops.convert_to_tensor(labels), 5)
    assert oh.shape == (3, 2, 5) and oh.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(oh), np.eye(5)[labels])
    x = ops.convert_to_tensor(rng.standard_normal((3, 2)))
    with nb.GradientTape() as tape:              # constants in a differentiated expression
        tape.watch(x)
        out = ops.sum(x * ops.ones((3, 2), "float64") + ops.zeros(2, "float64"))
    np.testing.assert_array_equal(np.asarray(tape.gradient(out, x)), np.ones((3, 2)))


def test_new_ops_bad_arguments():
    x = ops.convert_to_tensor(np.ones((2, 2)))
    with pytest.raises(ValueError, match="norm: ord must be None, 2 or 1.*3"):
        ops.norm(x, ord=3)
    with pytest.raises(ValueError, match="leaky_relu: negative_slope must be a finite number"):
        ops.leaky_relu(x, negative_slope="a")
    with pytest.raises(TypeError, match="gelu: approximate must be True or False"):
        ops.gelu(x, approximate="tanh")
    with pytest.raises(ValueError, match=r"zeros: shape must be non-negative ints.*-1"):
        ops.zeros((2, -1))
    with pytest.raises(ValueError, match="ones: dtype must be a float or integer dtype"):
        ops.ones(2, dtype="bool")
    with pytest.raises(ValueError, match="one_hot: labels must be in"):
        ops.one_hot(np.array([0, 3]), 3)
    with pytest.raises(ValueError, match="one_hot: num_classes must be a positive integer"):
        ops.one_hot(np.array([0]), 2.0)
    with pytest.raises(ValueError, match="arange: start must be a finite number, got 'a'"):
        ops.arange("a")
    with pytest.raises(ValueError, match="arange: stop must be a finite number, got nan"):
        ops.arange(0, float("nan"))
    with pytest.raises(ValueError, match="arange: step must not be 0"):
        ops.arange(0, 5, 0)


def test_new_ops_in_a_graph_save_and_load(rng, tmp_path):
    inp = nb.Input((4,), dtype="float64")
    outs = [ops.gelu(inp), ops.leaky_relu(inp, 0.1), ops.logsumexp(inp, axis=-1),
            ops.std(inp, axis=1, keepdims=True), ops.norm(inp, axis=-1), ops.min(inp, axis=-1),
            ops.swish(inp)]
    model = nb.Model(inp, outs)
    x = rng.standard_normal((5, 4))
    got = model.predict(x)
    model.save(tmp_path / "m.npz")
    for g, h in zip(got, nb.load_model(tmp_path / "m.npz").predict(x)):
        np.testing.assert_array_equal(g, h)
    np.testing.assert_allclose(got[2], np.log(np.exp(x).sum(-1)), rtol=1e-12)
    np.testing.assert_allclose(got[6], x / (1 + np.exp(-x)), rtol=1e-12)
    assert gradcheck(nb.Model(inp, ops.sum(outs[0] * outs[1], axis=-1) + outs[3][:, 0]
                              + outs[5]), _apart((5, 4), rng))


def test_new_ops_on_cuda(allow_cuda, rng):
    """Activation ops and the composite reductions on the CUDA backend (simulator): the same
    values and gradients as on the CPU."""
    x = _apart((2, 3), rng)
    res = []
    for device in ("cpu", "cuda"):
        t = ops.convert_to_tensor(x, device=device)
        with nb.GradientTape() as tape:
            tape.watch(t)
            out = ops.sum(ops.elu(t, 0.5) * ops.gelu(t, approximate=False) + ops.softplus(t)) \
                + ops.sum(ops.logsumexp(t, axis=0)) + ops.sum(ops.var(t, axis=1))
        assert out.device == device
        res.append((np.asarray(out), np.asarray(tape.gradient(out, t))))
    np.testing.assert_allclose(res[1][0], res[0][0], rtol=1e-12)
    np.testing.assert_allclose(res[1][1], res[0][1], rtol=1e-12, atol=1e-14)
    assert ops.one_hot(ops.convert_to_tensor(np.array([1, 0]), device="cuda"), 2).device == "cuda"
