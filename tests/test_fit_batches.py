"""fit / evaluate / predict on data given as batches: generators (with steps_per_epoch), Keras
PyDataset-style sequences, re-iterable loaders (a PyTorch DataLoader); each must train exactly
as fit on the same arrays in the same batches."""
import warnings

import numpy as np
import pytest

import numbanet as nb

L = nb.layers
N, B = 48, 16


@pytest.fixture
def data(rng):
    x = rng.standard_normal((N, 5))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    w = rng.uniform(0.5, 2.0, N)
    return x, y, w


def model():
    nb.seed(3)
    m = nb.Sequential([L.Dense(6, activation="tanh"), L.Dense(2, activation="softmax")],
                      input_shape=(5,), dtype="float64")
    m.compile(nb.optimizers.Adam(0.05), "sparse_categorical_crossentropy",
              metrics=["accuracy"])
    return m


def gen(x, y, w=None, loops=None):
    k = 0
    while loops is None or k < loops:
        for i in range(0, len(x), B):
            yield (x[i:i + B], y[i:i + B]) if w is None else (x[i:i + B], y[i:i + B], w[i:i + B])
        k += 1


class Sequence:
    """Keras' PyDataset protocol: __len__, __getitem__(batch), on_epoch_end()."""

    def __init__(self, x, y):
        self.x, self.y, self.ends = x, y, 0

    def __len__(self):
        return -(-len(self.x) // B)

    def __getitem__(self, i):
        return self.x[i * B:(i + 1) * B], self.y[i * B:(i + 1) * B]

    def on_epoch_end(self):
        self.ends += 1


class Loader:
    """Re-iterable, as a DataLoader: every iter() starts a new pass."""

    def __init__(self, x, y):
        self.x, self.y, self.passes = x, y, 0

    def __iter__(self):
        self.passes += 1
        return gen(self.x, self.y, loops=1)


def same_training(a, b, ha, hb):
    assert ha.history.keys() == hb.history.keys()
    for k in ha.history:
        np.testing.assert_allclose(ha.history[k], hb.history[k], rtol=1e-13, err_msg=k)
    for p, q in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(p, q)


@pytest.mark.parametrize("kind", ["generator", "sequence", "loader"])
def test_fit_on_batches_equals_fit_on_arrays(data, kind):
    x, y, _ = data
    ref = model()
    h_ref = ref.fit(x, y, epochs=3, batch_size=B, shuffle=False, verbose=0,
                    validation_data=(x[:20], y[:20]))
    source = {"generator": lambda: gen(x, y), "sequence": lambda: Sequence(x, y),
              "loader": lambda: Loader(x, y)}[kind]()
    m = model()
    h = m.fit(source, epochs=3, verbose=0, validation_data=(x[:20], y[:20]),
              steps_per_epoch=N // B if kind == "generator" else None)
    same_training(ref, m, h_ref, h)
    if kind == "sequence":
        assert source.ends == 3
    if kind == "loader":
        assert source.passes == 3


def test_torch_dataloader(data):
    torch = pytest.importorskip("torch")
    x, y, _ = data
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
        batch_size=B, shuffle=False)
    ref, m = model(), model()
    h_ref = ref.fit(x, y, epochs=2, batch_size=B, shuffle=False, verbose=0)
    same_training(ref, m, h_ref, m.fit(loader, epochs=2, verbose=0))
    assert m.evaluate(loader) == pytest.approx(m.evaluate(x, y), rel=1e-13)
    np.testing.assert_array_equal(m.predict(loader), m.predict(x))


def test_sample_weights_in_batches_and_generator_validation(data):
    x, y, w = data
    ref, m = model(), model()
    h_ref = ref.fit(x, y, sample_weight=w, epochs=2, batch_size=B, shuffle=False, verbose=0,
                    validation_data=(x, y, w))
    h = m.fit(gen(x, y, w), steps_per_epoch=3, epochs=2, verbose=0,
              validation_data=gen(x, y, w), validation_steps=3)
    same_training(ref, m, h_ref, h)


def test_evaluate_and_predict_on_batches(data):
    x, y, w = data
    m = model()
    m.fit(x, y, epochs=1, verbose=0)
    assert m.evaluate(gen(x, y, loops=1)) == pytest.approx(m.evaluate(x, y), rel=1e-13)
    assert m.evaluate(Sequence(x, y), batch_size=5) == pytest.approx(m.evaluate(x, y), rel=1e-13)
    assert m.evaluate(gen(x, y, w), steps=1) == pytest.approx(
        m.evaluate(x[:B], y[:B], sample_weight=w[:B]), rel=1e-13)
    np.testing.assert_array_equal(m.predict(gen(x, y, loops=1)), m.predict(x))
    np.testing.assert_array_equal(m.predict((x[i:i + 10] for i in range(0, N, 10))),
                                  m.predict(x))
    np.testing.assert_array_equal(m.predict(Sequence(x, y), steps=2), m.predict(x[:2 * B]))


def test_steps_per_epoch_continues_a_generator_and_an_ended_one_stops(data):
    x, y, _ = data
    seen = []

    def counting():
        for i in range(0, N, B):
            seen.append(i)
            yield x[i:i + B], y[i:i + B]
    m = model()
    h = m.fit(counting(), steps_per_epoch=1, epochs=3, verbose=0)
    assert seen == [0, 16, 32] and len(h.history["loss"]) == 3
    with pytest.warns(RuntimeWarning, match="ran out after 1 epoch.*steps_per_epoch"):
        h = model().fit(gen(x, y, loops=1), epochs=4, verbose=0)
    assert len(h.history["loss"]) == 1


def test_custom_train_step_gets_each_batch(data):
    x, y, _ = data

    class Custom(nb.Model):
        def __init__(self):
            super().__init__()
            self.dense = L.Dense(2)
            self.batches = []

        def call(self, inputs):
            return self.dense(inputs)

        def train_step(self, batch):
            self.batches.append(len(batch[0]))
            return {"n": float(len(batch[0]))}

    m = Custom()
    m.compile(nb.optimizers.SGD(0.1))
    h = m.fit(gen(x, y, loops=1), epochs=1, verbose=0)
    assert m.batches == [B, B, B] and h.history["n"] == [B]


def test_bad_batch_sources(data):
    x, y, _ = data
    m = model()
    with pytest.raises(ValueError, match="x gives the data as batches.*takes no y"):
        m.fit(gen(x, y), y)
    with pytest.raises(ValueError, match="steps_per_epoch and validation_steps are for data"):
        m.fit(x, y, steps_per_epoch=2)
    with pytest.raises(ValueError, match=r"batch 1 of the data is a ndarray; expected \(x, y\)"):
        m.fit((x[i:i + B] for i in range(0, N, B)), verbose=0)
    with pytest.raises(ValueError, match="batch 1 of the data is a tuple of 4 items"):
        m.fit(iter([(x, y, y, y)]), verbose=0)
    with pytest.raises(ValueError, match="class_weight='balanced' is not taken with data given"):
        m.fit(gen(x, y), steps_per_epoch=1, class_weight="balanced", verbose=0)
    with pytest.raises(ValueError, match="steps_per_epoch must be a positive integer"):
        m.fit(gen(x, y), steps_per_epoch=0, verbose=0)
    with pytest.raises(ValueError, match="evaluate: the data holds no samples"):
        m.evaluate(iter([]))
    with pytest.warns(RuntimeWarning, match="ran out"):
        m.fit(iter([]), epochs=1, verbose=0)


def test_batches_with_a_custom_test_step(data):
    """A subclass's test_step evaluates generator validation data and evaluate(source), each
    batch as given; with numbanet's own evaluation the values are those of the arrays."""
    x, y, _ = data

    class WithTestStep(nb.Model):
        def __init__(self):
            super().__init__()
            self.dense = L.Dense(2, activation="softmax")
            self.sizes = []

        def call(self, inputs):
            return self.dense(inputs)

        def test_step(self, batch):
            xb, yb = batch
            self.sizes.append(len(xb))
            return {"batch": float(yb[0])}

    def numbered():                    # batch k's targets are all k: 0, 1, 2, 3, ...
        k = 0
        while True:
            yield x[:B], np.full(B, k)
            k += 1

    nb.seed(1)
    m = WithTestStep()
    m.compile(nb.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    h = m.fit(gen(x, y), steps_per_epoch=3, epochs=2, verbose=0,
              validation_data=numbered(), validation_steps=2)
    assert m.sizes == [B, B, B, B]
    assert h.history["val_batch"] == [1.0, 3.0]          # the last of each epoch's two
    assert m.evaluate(numbered(), steps=3) == {"batch": 2.0}
