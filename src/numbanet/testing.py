"""Gradient checking by central finite differences in float64."""
import numpy as np

__all__ = ["numeric_gradient", "assert_gradients_close", "gradcheck"]


def numeric_gradient(f, x, eps=1e-6):
    """d f() / d x by central differences; ``x`` (float64) is perturbed in place and restored."""
    if x.dtype != np.float64:
        raise TypeError(f"numeric_gradient needs a float64 array, got {x.dtype}")
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        orig = flat[i]
        flat[i] = orig + eps
        fp = float(f())
        flat[i] = orig - eps
        fm = float(f())
        flat[i] = orig
        gflat[i] = (fp - fm) / (2.0 * eps)
    return grad


def assert_gradients_close(analytic, numeric, name="input", rtol=1e-5, atol=1e-7):
    """Raise AssertionError naming ``name`` and the worst element when the gradients disagree."""
    analytic = np.asarray(analytic, dtype=np.float64)
    numeric = np.asarray(numeric, dtype=np.float64)
    if analytic.shape != numeric.shape:
        raise AssertionError(f"gradient of {name}: shape {analytic.shape} != numeric {numeric.shape}")
    err = np.abs(analytic - numeric)
    tol = atol + rtol * np.abs(numeric)
    if not np.all(err <= tol):
        i = np.unravel_index(np.argmax(err - tol), err.shape)
        raise AssertionError(
            f"gradient of {name} differs from finite differences at {i}: analytic {analytic[i]!r}, "
            f"numeric {numeric[i]!r} (max abs error {err.max():.3g})")


def gradcheck(target, *inputs, eps=1e-6, rtol=1e-5, atol=1e-7, seed=0):
    """Check a layer's or a loss's backward pass against central finite differences, in float64.

    * Layer: ``gradcheck(layer, x)``. The layer is built in float64 if needed; the scalar checked is
      ``sum(forward(x, training=True) * g)`` for a fixed random ``g``; gradients of ``x`` and of every
      parameter are compared with ``backward(g)`` and ``layer.grads``.
    * Loss: ``gradcheck(loss, y_true, y_pred)``: ``loss.gradient`` against ``loss(y_true, y_pred)``.
    * Function: ``gradcheck((f, grad_f), x1, x2, ...)``: ``grad_f(*xs)`` returns one gradient per input.
    * Model (or any layer, ops inside included) called on tensors: ``gradcheck(model, x)`` (a list
      ``x`` for several inputs) checks the gradients a ``GradientTape`` gives for every input and
      every trainable weight of ``sum(model(x, training=True) * g)`` (all outputs).
    * Ops: ``gradcheck(fn, x1, x2, ...)`` for a plain function of tensors built from ``nb.ops``
      (and layers, losses): the tape's gradient of ``sum(fn(*xs) * g)`` for each input.

    Returns True; raises AssertionError naming the first gradient that disagrees.
    """
    rng = np.random.default_rng(seed)
    from .layers.base import Layer
    from .models import Model
    if isinstance(target, Model) or (callable(target) and not isinstance(target, (tuple, Layer))
                                     and not hasattr(target, "gradient")):
        return _gradcheck_tape(target, inputs, eps, rtol, atol, rng)
    if isinstance(target, tuple):
        f, grad_f = target
        xs = [np.array(x, dtype=np.float64) for x in inputs]
        analytic = grad_f(*xs)
        for k, (x, g) in enumerate(zip(xs, analytic)):
            assert_gradients_close(g, numeric_gradient(lambda: f(*xs), x, eps), f"input {k}", rtol, atol)
        return True
    if hasattr(target, "gradient") and len(inputs) == 2:      # a loss
        y_true = np.asarray(inputs[0])
        y_pred = np.array(inputs[1], dtype=np.float64)
        analytic = target.gradient(y_true, y_pred)
        numeric = numeric_gradient(lambda: target(y_true, y_pred), y_pred, eps)
        assert_gradients_close(analytic, numeric, f"{type(target).__name__} y_pred", rtol, atol)
        return True
    if hasattr(target, "backward") and len(inputs) == 1:      # a layer
        layer = target
        x = np.array(inputs[0], dtype=np.float64)
        if not getattr(layer, "built", False):
            layer.dtype = np.dtype(np.float64)
            layer.build(x.shape[1:])
        state = layer.rng_state() if hasattr(layer, "rng_state") else None

        def run():
            if state is not None:
                layer.set_rng_state(state)
            return layer.forward(x, training=True)

        g = rng.standard_normal(run().shape)
        run()
        grad_x = np.array(layer.backward(g), dtype=np.float64)
        analytic = {k: np.array(v, dtype=np.float64) for k, v in layer.grads.items()}

        def f():
            return float(np.sum(run() * g))
        name = getattr(layer, "name", type(layer).__name__)
        assert_gradients_close(grad_x, numeric_gradient(f, x, eps), f"{name} input", rtol, atol)
        for k, p in layer.params.items():
            assert_gradients_close(analytic[k], numeric_gradient(f, p, eps), f"{name} {k}", rtol, atol)
        return True
    raise TypeError(f"gradcheck: expected a layer, a loss or a (f, grad_f) pair, got {type(target).__name__}")


def _gradcheck_tape(target, inputs, eps, rtol, atol, rng):
    """Tape gradients of sum(target(*xs) * g) for every input and trainable weight against
    central differences (float64)."""
    from . import engine, ops
    from .models import Model
    is_model = isinstance(target, Model)
    xs = [np.array(x, dtype=np.float64) for x in (inputs[0] if is_model and len(inputs) == 1
                                                  and isinstance(inputs[0], (list, tuple))
                                                  else inputs)]
    listed = is_model and len(xs) > 1

    def run(tensors):
        if is_model:
            return target(tensors if listed else tensors[0], training=True)
        return target(*tensors)

    def outputs(tensors):
        out = run(tensors)
        return list(out) if isinstance(out, (list, tuple)) else [out]

    with engine.stop_recording():
        first = outputs([engine.convert_to_tensor(x) for x in xs])
    gs = [rng.standard_normal(o.shape) for o in first]

    def scalar(tensors):
        total = None
        for o, g in zip(outputs(tensors), gs):
            term = ops.sum(ops.multiply(o, g))
            total = term if total is None else ops.add(total, term)
        return total

    tensors = [engine.convert_to_tensor(x) for x in xs]
    weights = list(target.trainable_weights) if is_model else []
    with engine.GradientTape() as tape:
        tape.watch(tensors)
        value = scalar(tensors)
    grads = tape.gradient(value, tensors + weights)

    def f():
        with engine.stop_recording():
            return float(scalar([engine.convert_to_tensor(x) for x in xs]))
    name = getattr(target, "name", getattr(target, "__name__", type(target).__name__))
    for k, (x, g) in enumerate(zip(xs, grads)):
        analytic = np.zeros_like(x) if g is None else np.asarray(g, dtype=np.float64)
        assert_gradients_close(analytic, numeric_gradient(f, x, eps), f"{name} input {k}", rtol,
                               atol)
    for w, g in zip(weights, grads[len(xs):]):
        p = w.value
        if p.dtype != np.float64:
            raise TypeError(f"gradcheck: {w.name} is {p.dtype}; build the model in float64")
        analytic = np.zeros(p.shape) if g is None else np.asarray(g, dtype=np.float64)
        assert_gradients_close(analytic, numeric_gradient(f, p, eps), f"{name} {w.name}", rtol,
                               atol)
    return True
