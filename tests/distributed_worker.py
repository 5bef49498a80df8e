"""One rank of the tests in test_distributed.py: ``mpirun -n K python distributed_worker.py
SCENARIO OUTDIR``. Rank 0 writes what it found to OUTDIR/SCENARIO.json (the other ranks write
their own files only where a scenario says so); the tests read and judge them."""
import json
import os
import sys
import time

import numpy as np

import numbanet as nb
from numbanet import distributed as dist

L = nb.layers


def digits(n, dtype):
    x, y = nb.datasets.load_digits()
    return x[:n].astype(dtype), y[:n]


def sequential(dtype, seed):
    nb.seed(seed)
    return nb.Sequential([L.Conv2D(4, 3, padding="same", activation="relu"), L.MaxPool2D(2),
                          L.Flatten(), L.Dense(10, activation="softmax")],
                         input_shape=(1, 8, 8), dtype=dtype)


def functional(dtype, seed):
    nb.seed(seed)
    inp = nb.Input(shape=(1, 8, 8), dtype=dtype)
    h = L.Dense(16, activation="tanh")(L.Flatten()(inp))
    h = L.ReLU()(L.Add()([h, L.Dense(16)(h)]))
    return nb.Model(inp, L.Dense(10, activation="softmax")(h))


def two_outputs(dtype, seed):
    nb.seed(seed)
    inp = nb.Input(shape=(1, 8, 8), dtype=dtype)
    h = L.Dense(16, activation="tanh")(L.Flatten()(inp))
    return nb.Model(inp, [L.Dense(10, activation="softmax", name="cls")(h),
                          L.Dense(1, name="reg")(h)])


def rel_err(got, want):
    return max(float(np.max(np.abs(np.asarray(g, np.float64) - np.asarray(w, np.float64))) /
                     max(float(np.max(np.abs(np.asarray(w, np.float64)))), 1e-30))
               for g, w in zip(got, want))


def same_on_every_rank(arrays):
    """True when every rank holds bit-identical ``arrays``."""
    mine = b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)
    return all(other == mine for other in dist.allgather(mine))


def against_one_process(model, hist, ref, ref_hist, identical):
    """How a distributed fit (``model``, its ``hist``) compares with one process's."""
    return {"weights": rel_err(model.get_weights(), ref.get_weights()),
            "history": max(abs(a - b) / max(abs(b), 1e-12) for k in ref_hist
                           for a, b in zip(hist[k], ref_hist[k])),
            "keys": sorted(hist) == sorted(ref_hist), "identical": identical,
            "optimizer": type(model.optimizer).__name__}


def write(outdir, name, result):
    with open(os.path.join(outdir, name + ".json"), "w") as f:
        json.dump(result, f, indent=1)


# ---------------------------------------------------------------------------------------------

def equivalence(outdir):
    """k ranks with distributed=True end where one process does (SGD, no dropout)."""
    r = dist.rank()
    result = {"size": dist.size(), "cases": {}}
    # 112 training samples in global batches of 10: 10 does not divide by 3, and the last
    # global batch has 2 samples, fewer than 3 ranks
    for dtype in ("float64", "float32"):
        x, y = digits(124, dtype)
        for kind, build, opt in (
                ("sequential", sequential, lambda: nb.optimizers.SGD(0.1, momentum=0.9)),
                ("functional", functional, lambda: nb.optimizers.SGD(0.2, global_clipnorm=0.5))):
            def fit(distributed):
                m = build(dtype, 0)
                m.compile(opt(), "sparse_categorical_crossentropy", metrics=["accuracy", "f1"])
                h = m.fit(x, y, epochs=2, batch_size=10, seed=3, verbose=0,
                          validation_split=0.1, distributed=distributed)
                return m, h.history
            model, hist = fit(True)
            identical = same_on_every_rank(model.get_weights())
            if r == 0:
                result["cases"][f"{kind}-{dtype}"] = against_one_process(
                    model, hist, *fit(False), identical)
    # two outputs: the per-output losses (cls_loss, reg_loss) are global like the loss, on
    # every step, including a last global batch of 2 samples on 3 ranks (one rank has none)
    x, y = digits(124, "float64")
    targets = [y, y[:, None] / 10.0]
    for kind, opt, batch in (("two-outputs", lambda: nb.optimizers.SGD(0.1), 10),
                             ("two-outputs-lbfgs", lambda: nb.optimizers.LBFGS(max_iter=3),
                              110)):
        def fit(distributed):
            m = two_outputs("float64", 4)
            m.compile(opt(), ["sparse_categorical_crossentropy", "mse"], loss_weights=[1.0, 0.0])
            h = m.fit(x, targets, epochs=2, batch_size=batch, seed=3, verbose=0,
                      validation_split=0.1, distributed=distributed)
            return m, h.history
        model, hist = fit(True)
        same_logs = all(other == hist for other in dist.allgather(hist))
        identical = same_on_every_rank(model.get_weights()) and same_logs
        if r == 0:
            case = against_one_process(model, hist, *fit(False), identical)
            case["keys"] = case["keys"] and "reg_loss" in hist
            result["cases"][f"{kind}-float64"] = case
    # L-BFGS: full batch, every evaluation of the closure averaged
    x, y = digits(90, "float64")

    def lbfgs(distributed):
        m = functional("float64", 1)
        m.compile(nb.optimizers.LBFGS(max_iter=5), "sparse_categorical_crossentropy")
        m.fit(x, y, epochs=2, batch_size=len(x), seed=0, verbose=0, distributed=distributed)
        return m
    model = lbfgs(True)
    identical = same_on_every_rank(model.get_weights())
    if r == 0:
        result["cases"]["lbfgs-float64"] = {
            "weights": rel_err(model.get_weights(), lbfgs(False).get_weights()),
            "history": 0.0, "keys": True, "identical": identical, "optimizer": "LBFGS"}
    # a custom loop: DistributedOptimizer.apply_gradients on each rank's equal share
    x, y = digits(120, "float64")
    k = dist.size()
    loss_fn = nb.losses.SparseCategoricalCrossentropy()

    def loop(opt, share):
        m = functional("float64", 2)
        for start in range(0, len(x), 12):
            lo, hi = share(start, start + 12)
            with nb.GradientTape() as tape:
                loss = loss_fn(y[lo:hi], m(x[lo:hi], training=True))
            grads = tape.gradient(loss, m.trainable_weights)
            opt.apply_gradients(zip(grads, m.trainable_weights))
        return m
    model = loop(dist.DistributedOptimizer(nb.optimizers.SGD(0.3)),
                 lambda a, b: (a + (b - a) * r // k, a + (b - a) * (r + 1) // k))
    identical = same_on_every_rank(model.get_weights())
    if r == 0:
        ref = loop(nb.optimizers.SGD(0.3), lambda a, b: (a, b))
        result["cases"]["custom-loop-float64"] = {
            "weights": rel_err(model.get_weights(), ref.get_weights()), "history": 0.0,
            "keys": True, "identical": identical, "optimizer": "SGD"}
        write(outdir, "equivalence", result)


def features(outdir):
    """Broadcast, the explicit (Horovod) form, metric averaging, BatchNormalization statistics
    and rank-0-only side effects."""
    r, k = dist.rank(), dist.size()
    result = {}
    x, y = digits(200, "float32")

    # ranks started with different seeds end up with rank 0's initial weights
    model = sequential("float32", 100 + r)
    before = model.get_weights()
    initial = {}

    class Record(nb.callbacks.Callback):
        def on_train_begin(self, logs=None):
            initial["weights"] = self.model.get_weights()

    model.compile(dist.DistributedOptimizer(nb.optimizers.Adam(1e-3 * k)),
                  "sparse_categorical_crossentropy", metrics=["accuracy"])
    local = {}

    class LocalAccuracy(nb.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            local["accuracy"] = logs["accuracy"]

        def on_epoch_end(self, epoch, logs=None):
            local.setdefault("epochs", []).append(local["accuracy"])

    # the contract's explicit form: each rank its own half of the data, batch_size per rank
    xs, ys = x[r::k], y[r::k]
    hist = model.fit(xs, ys, batch_size=16, epochs=2, seed=r,
                     callbacks=[dist.BroadcastWeights(root=0), Record(), LocalAccuracy(),
                                dist.MetricAverage()],
                     verbose=1 if dist.rank() == 0 else 0).history
    starts = dist.allgather(initial["weights"])
    root_before = dist.broadcast(before)
    result["differed_before"] = any(not np.array_equal(a, b) for a, b in
                                    zip(dist.allgather(before)[1], root_before))
    result["broadcast"] = all(all(np.array_equal(a, b) for a, b in zip(s, root_before))
                              for s in starts)
    result["explicit_identical"] = same_on_every_rank(model.get_weights())
    local_acc = dist.allgather(local["epochs"])
    result["metric_average"] = max(abs(hist["accuracy"][e] - float(np.mean([a[e] for a in
                                                                             local_acc])))
                                   for e in range(2))
    result["metric_local_differ"] = local_acc[0] != local_acc[1]
    result["history_identical"] = all(h == hist for h in dist.allgather(hist))

    # broadcast_weights from another root
    model2 = functional("float32", 7 + r)
    w1 = dist.broadcast(model2.get_weights(), root=1)
    dist.broadcast_weights(model2, root=1)
    result["broadcast_root1"] = all(np.array_equal(a, b) for a, b in
                                    zip(model2.get_weights(), w1))

    # BatchNormalization statistics: averaged over the ranks at the end of every epoch
    nb.seed(5 + r)
    bn = nb.Sequential([L.Flatten(), L.Dense(16), L.BatchNormalization(), L.ReLU(),
                        L.Dense(10, activation="softmax")], input_shape=(1, 8, 8))
    bn.compile(nb.optimizers.SGD(0.05), "sparse_categorical_crossentropy")
    stats = []

    class Stats(nb.callbacks.Callback):          # the local statistics before the averaging
        def on_train_batch_end(self, batch, logs=None):
            if batch == self.params["steps"] - 1:
                stats.append([np.array(b) for _, _, b in self.model._buffer_items()])

    bn.fit(x, y, batch_size=20, epochs=1, seed=0, verbose=0, distributed=True,
           callbacks=[Stats()])
    buffers = [np.array(b) for _, _, b in bn._buffer_items()]
    every_local = dist.allgather(stats[-1])
    result["bn_identical"] = same_on_every_rank(buffers)
    result["bn_local_differ"] = any(not np.array_equal(a, b) for a, b in
                                    zip(every_local[0], every_local[1]))
    result["bn_average"] = rel_err(buffers, [np.mean([loc[i] for loc in every_local], axis=0)
                                             for i in range(len(buffers))])

    # only rank 0 prints, checkpoints and logs
    out = open(os.path.join(outdir, f"stdout-{r}.txt"), "w")
    saved, sys.stdout = sys.stdout, out
    try:
        m = functional("float32", 0)
        m.compile(nb.optimizers.SGD(0.1), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
        m.fit(x, y, batch_size=20, epochs=2, seed=0, verbose=2, validation_split=0.2,
              distributed=True,
              callbacks=[nb.callbacks.ModelCheckpoint(os.path.join(outdir, f"ckpt-{r}.npz")),
                         nb.callbacks.CSVLogger(os.path.join(outdir, f"log-{r}.csv"))])
    finally:
        sys.stdout = saved
        out.close()
    if r == 0:
        write(outdir, "features", result)


def fail(outdir, mode):
    """Rank 1 dies (kill), hangs (hang) or leaves (exit) at its 6th step."""
    import signal
    r = dist.rank()
    x, y = digits(400, "float32")
    m = sequential("float32", 0)
    m.compile(nb.optimizers.SGD(0.1), "sparse_categorical_crossentropy")

    class Fail(nb.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if r == 1 and batch == 5:
                if mode == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                elif mode == "hang":
                    time.sleep(3600)
                else:
                    sys.exit(0)

    m.fit(x, y, epochs=3, batch_size=10, seed=1, verbose=0, distributed=True,
          callbacks=[Fail()])
    with open(os.path.join(outdir, f"finished-{r}"), "w") as f:
        f.write("finished\n")


def warmup(outdir):
    """Compile (and cache) the kernels the scenarios use, in one process, before the ranks start:
    two ranks compiling the same kernels at once take twice as long on a two-core machine."""
    equivalence(outdir)
    from numbanet.cli import build_digits_cnn
    x, y = digits(40, "float32")
    for model, opt in ((sequential("float32", 0), nb.optimizers.Adam(1e-3)),
                       (build_digits_cnn(), nb.optimizers.Adam(1e-3)),
                       (nb.Sequential([L.Flatten(), L.Dense(16), L.BatchNormalization(),
                                       L.ReLU(), L.Dense(10, activation="softmax")],
                                      input_shape=(1, 8, 8)), nb.optimizers.SGD(0.05)),
                       (functional("float32", 0), nb.optimizers.SGD(0.1))):
        model.compile(opt, "sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(x, y, batch_size=20, epochs=1, verbose=0, validation_split=0.25,
                  distributed=True)
        model.evaluate(x, y)


def cuda_sim(outdir):
    """The CUDA backend (in Numba's simulator): gradients staged through host memory."""
    r = dist.rank()
    x, y = digits(20, "float64")
    # the simulator runs every GPU thread in Python: a small arena chunk, whose gradient half is
    # zeroed by a kernel, and two steps keep this short
    nb.engine.Arena.MIN_CHUNK = 1024

    def fit(device, distributed):
        nb.seed(0)
        m = nb.Sequential([L.Flatten(), L.Dense(4, activation="tanh"),
                           L.Dense(10, activation="softmax")], input_shape=(1, 8, 8),
                          dtype="float64", device=device)
        m.compile(nb.optimizers.SGD(0.2), "sparse_categorical_crossentropy")
        m.fit(x, y, epochs=1, batch_size=10, seed=0, verbose=0, distributed=distributed)
        return m
    gpu = fit("cuda", True)
    identical = same_on_every_rank(gpu.get_weights())
    if r == 0:
        write(outdir, "cuda_sim", {"weights": rel_err(gpu.get_weights(),
                                                      fit("cpu", False).get_weights()),
                                   "identical": identical, "cuda_aware": dist.cuda_aware()})


if __name__ == "__main__":
    scenario, outdir = sys.argv[1], sys.argv[2]
    timeout = float(sys.argv[3]) if len(sys.argv) > 3 else None
    dist.init(timeout=timeout)
    if scenario in ("kill", "hang", "exit"):
        fail(outdir, scenario)
    else:
        globals()[scenario](outdir)
