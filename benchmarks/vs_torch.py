"""numbanet against PyTorch, side by side in one process, on the CPU or on an NVIDIA GPU.

Each case builds a numbanet closure and a PyTorch closure doing the same work, warms both up
(JIT compile excluded), then times them interleaved -- numbanet, torch, numbanet, torch... -- and
reports the median time per call and the throughput ratio numbanet/torch (higher is better).
On the GPU both libraries are synchronized before the clock stops, and TF32 is off (FP32 both).
Run: ``python benchmarks/vs_torch.py [--device cpu|cuda] [--repeats N] [--cases ...]``.

On the CPU the two libraries' thread pools (numba's, torch's OpenMP) contend when they share a
process; ``--separate`` times each library in a process of its own instead (this script run
again with ``--library numbanet`` / ``--library torch``; same closures, same timing) and reports
the ratio of those medians. Its work sits under ``__main__`` so asv's discovery never runs it.
"""
import argparse
import statistics
import time

import numpy as np


def _no_sync():
    pass


def _timeit(fn, sync=_no_sync, min_time=0.25):
    """Seconds per call of ``fn`` (``sync`` waits for queued GPU work): enough calls to fill
    ``min_time``, so that the first call after ``compare``'s pause (cold caches, sleeping worker
    threads: a LeNet step took 52 ms there and 43 ms back to back) weighs little."""
    sync()
    n, start = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        if n & (n - 1) == 0 or n % 16 == 0:
            sync()
            elapsed = time.perf_counter() - start
            if elapsed >= min_time:
                return elapsed / n


def compare(nb_fn, torch_fn, repeats, syncs=(_no_sync, _no_sync)):
    """Median seconds per call of each (None for a library left out: ``fn`` None)."""
    for _ in range(3):
        for fn in (nb_fn, torch_fn):
            if fn is not None:
                fn()
    a, b = [], []
    for _ in range(repeats):
        # Let the other library's worker threads stop spinning first: OpenBLAS (numba's np.dot)
        # and OpenMP pools busy-wait after each call and would take the 2 cores from the next.
        for fn, times, sync in ((nb_fn, a, syncs[0]), (torch_fn, b, syncs[1])):
            if fn is not None:
                time.sleep(0.1)
                times.append(_timeit(fn, sync))
    return (statistics.median(a) if a else None), (statistics.median(b) if b else None)


def dense_case(n, i, u):
    import torch
    import numbanet as nb
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, i)).astype(np.float32)
    g = rng.standard_normal((n, u)).astype(np.float32)
    layer = nb.layers.Dense(u)
    layer.build((i,))

    def nb_fn():
        layer.forward(x, training=True)
        layer.backward(g)
    lin = torch.nn.Linear(i, u)
    tx, tg = torch.from_numpy(x).requires_grad_(), torch.from_numpy(g)

    def torch_fn():
        lin.zero_grad(set_to_none=True)
        tx.grad = None
        lin(tx).backward(tg)
    return nb_fn, torch_fn


def conv_case(n, c, hw, k, first_layer=False, device="cpu", stride=1):
    """Conv2D 3x3, padding 1, forward + backward on inputs already on ``device``."""
    import torch
    import numbanet as nb
    rng = np.random.default_rng(0)
    ohw = (hw - 1) // stride + 1
    x = rng.standard_normal((n, c, hw, hw)).astype(np.float32)
    g = rng.standard_normal((n, k, ohw, ohw)).astype(np.float32)
    layer = nb.layers.Conv2D(k, 3, strides=stride, padding=1)
    be = nb.backend.get_backend(device)
    layer.set_backend(be)
    layer.build((c, hw, hw))
    layer.needs_input_grad = not first_layer
    bx, bg = be.asarray(x), be.asarray(g)

    def nb_fn():
        layer.forward(bx, training=True)
        layer.backward(bg)
    conv = torch.nn.Conv2d(c, k, 3, stride=stride, padding=1).to(device)
    tx = torch.from_numpy(x).to(device).requires_grad_(not first_layer)
    tg = torch.from_numpy(g).to(device)

    def torch_fn():
        conv.zero_grad(set_to_none=True)
        tx.grad = None
        conv(tx).backward(tg)
    return nb_fn, torch_fn


def _train_pair(nb_model, torch_model, x, y, lr=1e-3, device="cpu"):
    """One training step from host batches: numbanet's train_step (batch in, loss out) against
    torch's step with the same copy to ``device`` and ``loss.item()`` out."""
    import torch
    nb_model.compile(optimizer=__import__("numbanet").optimizers.Adam(lr),
                     loss="sparse_categorical_crossentropy")
    torch_model = torch_model.to(device)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(torch_model.parameters(), lr=lr)

    def nb_fn():
        nb_model.train_step(x, y)

    def torch_fn():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(torch_model(tx.to(device)), ty.to(device))
        loss.backward()
        opt.step()
        loss.item()
    return nb_fn, torch_fn


def _chain(nb, layers, input_shape, functional, device):
    """``layers`` as a Sequential, or the same chain built with the functional API."""
    if not functional:
        return nb.Sequential(layers, input_shape=input_shape, device=device)
    inp = x = nb.Input(input_shape)
    for layer in layers:
        x = layer(x)
    return nb.Model(inp, x).to(device)


def lenet_case(batch=128, device="cpu", functional=False):
    import torch
    import numbanet as nb
    L, T = nb.layers, torch.nn
    rng = np.random.default_rng(0)
    x = rng.random((batch, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    model = _chain(nb, [
        L.Conv2D(32, 3, padding="same", activation="relu"), L.MaxPool2D(2),
        L.Conv2D(64, 3, padding="same", activation="relu"), L.MaxPool2D(2),
        L.Flatten(), L.Dense(128, activation="relu"), L.Dense(10, activation="softmax"),
    ], (1, 28, 28), functional, device)
    tmodel = T.Sequential(T.Conv2d(1, 32, 3, padding=1), T.ReLU(), T.MaxPool2d(2),
                          T.Conv2d(32, 64, 3, padding=1), T.ReLU(), T.MaxPool2d(2), T.Flatten(),
                          T.Linear(64 * 7 * 7, 128), T.ReLU(), T.Linear(128, 10))
    return _train_pair(model, tmodel, x, y, device=device)


def mlp_case(batch=32, functional=False):
    import torch
    import numbanet as nb
    L, T = nb.layers, torch.nn
    rng = np.random.default_rng(0)
    x = rng.random((batch, 64), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    model = _chain(nb, [L.Dense(128, activation="relu"), L.Dense(10, activation="softmax")],
                   (64,), functional, "cpu")
    tmodel = T.Sequential(T.Linear(64, 128), T.ReLU(), T.Linear(128, 10))
    return _train_pair(model, tmodel, x, y)


def resblock_case(batch=128, device="cpu"):
    """A functional residual block (benchmarks/common.py resblock_model) against its PyTorch
    twin, batch 128, Adam."""
    import torch
    import numbanet as nb
    import common
    rng = np.random.default_rng(0)
    x = rng.random((batch, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    return _train_pair(common.resblock_model(nb).to(device), common.torch_resblock(torch), x, y,
                       device=device)


def recurrent_case(cell, n=64, t=100, i=64, u=128, device="cpu"):
    """An LSTM or GRU layer over a whole sequence, forward + backward (BPTT) with a gradient at
    every output, against torch.nn.LSTM / GRU (batch_first)."""
    import torch
    import numbanet as nb
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, t, i)).astype(np.float32)
    g = rng.standard_normal((n, t, u)).astype(np.float32)
    layer = getattr(nb.layers, cell)(u, return_sequences=True)
    be = nb.backend.get_backend(device)
    layer.set_backend(be)
    layer.build((t, i))
    bx, bg = be.asarray(x), be.asarray(g)

    def nb_fn():
        layer.forward(bx, training=True)
        layer.backward(bg)
    rnn = getattr(torch.nn, cell)(i, u, batch_first=True).to(device)
    tx = torch.from_numpy(x).to(device).requires_grad_()
    tg = torch.from_numpy(g).to(device)

    def torch_fn():
        rnn.zero_grad(set_to_none=True)
        tx.grad = None
        rnn(tx)[0].backward(tg)
    return nb_fn, torch_fn


def embedding_case(vocab=20000, dim=128, n=64, t=100, device="cpu"):
    """Embedding lookup of (n, t) ids and its backward (the scatter-add into a dense gradient)."""
    import torch
    import numbanet as nb
    rng = np.random.default_rng(0)
    ids = rng.integers(0, vocab, (n, t))
    g = rng.standard_normal((n, t, dim)).astype(np.float32)
    layer = nb.layers.Embedding(vocab, dim)
    be = nb.backend.get_backend(device)
    layer.set_backend(be)
    layer.build((t,))
    bids, bg = be.asarray(ids), be.asarray(g)

    def nb_fn():
        layer.forward(bids, training=True)
        layer.backward(bg)
    emb = torch.nn.Embedding(vocab, dim).to(device)
    tids, tg = torch.from_numpy(ids).to(device), torch.from_numpy(g).to(device)

    def torch_fn():
        emb.zero_grad(set_to_none=True)
        emb(tids).backward(tg)
    return nb_fn, torch_fn


def mha_case(n=32, t=64, d=128, heads=4, device="cpu"):
    """Multi-head self-attention forward + backward (projections, scores, softmax, weighted sum,
    output projection; every input and weight gradient) against torch.nn.MultiheadAttention."""
    import torch
    import numbanet as nb
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, t, d)).astype(np.float32)
    g = rng.standard_normal((n, t, d)).astype(np.float32)
    layer = nb.layers.MultiHeadAttention(heads, d // heads)
    be = nb.backend.get_backend(device)
    layer.set_backend(be)
    layer.build([(t, d), (t, d)])
    bx, bg = be.asarray(x), be.asarray(g)

    def nb_fn():
        layer.forward([bx, bx], training=True)
        layer.backward(bg)
    mha = torch.nn.MultiheadAttention(d, heads, batch_first=True).to(device)
    tx = torch.from_numpy(x).to(device).requires_grad_()
    tg = torch.from_numpy(g).to(device)

    def torch_fn():
        mha.zero_grad(set_to_none=True)
        tx.grad = None
        mha(tx, tx, tx, need_weights=False)[0].backward(tg)
    return nb_fn, torch_fn


def encoder_case(n=32, t=64, d=128, heads=4, classes=10, device="cpu"):
    """A TransformerEncoder block (post-norm, relu feedforward of 2d) and a per-position softmax,
    one Adam training step, against torch.nn.TransformerEncoderLayer (dropout off in both)."""
    import torch
    import numbanet as nb
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, t, d)).astype(np.float32)
    y = rng.integers(0, classes, (n, t))
    inp = nb.Input((t, d))
    h = nb.layers.TransformerEncoder(2 * d, heads)(inp)
    model = nb.Model(inp, nb.layers.Dense(classes, activation="softmax")(h)).to(device)

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = torch.nn.TransformerEncoderLayer(d, heads, 2 * d, dropout=0.0,
                                                        batch_first=True)
            self.head = torch.nn.Linear(d, classes)

        def forward(self, v):
            return self.head(self.enc(v)).transpose(1, 2)    # (n, classes, t) for cross_entropy
    return _train_pair(model, Block(), x, y, device=device)


def _cuda_setup():
    import torch
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True


def sgemm_case(n):
    """The dense forward kernel at n x n x n (bias in the epilogue) against torch.addmm."""
    import torch
    from numba import cuda
    from numbanet.kernels.cuda.dense import dense_forward
    rng = np.random.default_rng(0)
    x, w = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    b = rng.standard_normal(n, dtype=np.float32)
    dx, dw, db = cuda.to_device(x), cuda.to_device(w), cuda.to_device(b)
    dout = cuda.device_array((n, n), np.float32)
    tx, tw, tb = (torch.from_numpy(a).cuda() for a in (x, w, b))
    tout = torch.empty((n, n), device="cuda")

    def nb_fn():
        dense_forward(dx, dw, db, dout)

    def torch_fn():
        torch.addmm(tb, tx, tw, out=tout)
    return nb_fn, torch_fn


CUDA_CASES = {
    "dense": [("SGEMM dense forward 4096x4096x4096", 0.5, lambda: sgemm_case(4096)),
              ("SGEMM dense forward 1024x1024x1024", None, lambda: sgemm_case(1024))],
    "conv": [("conv2d fwd+bwd N64 C64 56x56 K64 3x3", 0.3,
              lambda: conv_case(64, 64, 56, 64, device="cuda")),
             ("conv2d fwd+bwd N128 C32 14x14 K64 3x3", None,
              lambda: conv_case(128, 32, 14, 64, device="cuda"))],
    "train": [("LeNet train step, Adam, batch 128", 0.5, lambda: lenet_case(device="cuda")),
              ("  same, functional API", None,
               lambda: lenet_case(device="cuda", functional=True)),
              ("residual block train step (functional), b128", None,
               lambda: resblock_case(device="cuda"))],
    "seq": [("LSTM fwd+bwd N64 T100 in64 u128", None, lambda: recurrent_case("LSTM", device="cuda")),
            ("GRU fwd+bwd N64 T100 in64 u128", None, lambda: recurrent_case("GRU", device="cuda")),
            ("Embedding fwd+bwd 20000x128, ids 64x100", None,
             lambda: embedding_case(device="cuda"))],
    "attention": [("MHA self-attn fwd+bwd N32 T64 d128 h4", None,
                   lambda: mha_case(device="cuda")),
                  ("TransformerEncoder train step N32 T64 d128", None,
                   lambda: encoder_case(device="cuda"))],
}

CASES = {
    "dense": [("dense fwd+bwd 128x784->256", 0.9, lambda: dense_case(128, 784, 256)),
              ("dense fwd+bwd 1024x1024->1024", 0.9, lambda: dense_case(1024, 1024, 1024))],
    "conv": [("conv2d fwd+bwd N128 C32 14x14 K64 3x3", 1.0, lambda: conv_case(128, 32, 14, 64)),
             ("conv2d fwd+bwd N32 C64 56x56 K64 3x3", 0.8, lambda: conv_case(32, 64, 56, 64)),
             ("conv2d fwd+bwd N128 C64 7x7 K128 3x3", 0.8, lambda: conv_case(128, 64, 7, 128)),
             ("conv2d fwd+bwd N128 C32 14x14 K64 3x3 s2", 0.8,
              lambda: conv_case(128, 32, 14, 64, stride=2)),
             ("conv2d fwd+bwd N128 C1 28x28 K32 3x3", 1.0, lambda: conv_case(128, 1, 28, 32)),
             ("  same, first layer (no input grad)", 1.0,
              lambda: conv_case(128, 1, 28, 32, first_layer=True))],
    "train": [("LeNet train step, Adam, batch 128", 1.2, lenet_case),
              ("  same, functional API", 1.2, lambda: lenet_case(functional=True)),
              ("MLP 64-128-10 train step, Adam, batch 32", 3.0, mlp_case),
              ("  same, functional API", 3.0, lambda: mlp_case(functional=True)),
              ("residual block train step (functional), b128", None, resblock_case)],
    "seq": [("LSTM fwd+bwd N64 T100 in64 u128", 1.0, lambda: recurrent_case("LSTM")),
            ("GRU fwd+bwd N64 T100 in64 u128", 1.0, lambda: recurrent_case("GRU")),
            ("Embedding fwd+bwd 20000x128, ids 64x100", 1.0, embedding_case)],
    "attention": [("MHA self-attn fwd+bwd N32 T64 d128 h4", 1.0, mha_case),
                  ("TransformerEncoder train step N32 T64 d128", 0.8, encoder_case)],
}


def _key(group, index):
    """A case's key across processes: its group and position."""
    return f"{group}/{index}"


def _separate(args):
    """Each library timed in a process of its own: {case key: (numbanet s, torch s)}, keyed as
    ``_key`` does (names repeat across groups, e.g. "same, functional API")."""
    import json
    import subprocess
    import sys
    times = {}
    for lib in ("numbanet", "torch"):
        cmd = [sys.executable, __file__, "--device", args.device, "--repeats", str(args.repeats),
               "--cases", args.cases, "--library", lib, "--json"]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        for name, t in json.loads(out.strip().splitlines()[-1]).items():
            times.setdefault(name, {})[lib] = t
    return {name: (t["numbanet"], t["torch"]) for name, t in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--cases", default="dense,conv,train,seq,attention")
    parser.add_argument("--separate", action="store_true",
                        help="time each library in a process of its own")
    parser.add_argument("--library", choices=("both", "numbanet", "torch"), default="both",
                        help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.library == "numbanet" and args.device == "cpu":
        # numbanet's own process starts its OpenMP runtime as in a program without PyTorch: the
        # two share one libgomp, which reads its wait policy when the first of them loads it
        import numbanet as nb
        nb.backend.get_backend("cpu")
    import torch
    cases, syncs = CASES, (_no_sync, _no_sync)
    if args.device == "cuda":
        import numbanet as nb
        if not nb.cuda_available():     # also installs numbanet's caching device allocator
            from numbanet._cuda import unavailable_reason
            raise SystemExit(f"no usable GPU: {unavailable_reason()}")
        from numba import cuda
        _cuda_setup()
        cases, syncs = CUDA_CASES, (cuda.synchronize, torch.cuda.synchronize)
        header = f"torch {torch.__version__}, {torch.cuda.get_device_name()}, FP32 (TF32 off)"
    else:
        header = f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    if args.json:
        import json
        times = {}
        for group in args.cases.split(","):
            for i, (name, _, make) in enumerate(cases[group]):
                nb_fn, torch_fn = make()
                keep = {"numbanet": (nb_fn, None), "torch": (None, torch_fn)}[args.library]
                t = compare(*keep, args.repeats, syncs)
                times[_key(group, i)] = t[0] if args.library == "numbanet" else t[1]
        print(json.dumps(times))
        return
    separate = _separate(args) if args.separate else None
    print(header + (", each library in its own process" if separate else
                    ", both in one process, interleaved"))
    print(f"{'case':<44} {'numbanet':>10} {'torch':>10} {'ratio':>7} {'target':>7}")
    for group in args.cases.split(","):
        for i, (name, target, make) in enumerate(cases[group]):
            if separate:
                t_nb, t_torch = separate[_key(group, i)]
            else:
                nb_fn, torch_fn = make()
                t_nb, t_torch = compare(nb_fn, torch_fn, args.repeats, syncs)
            ratio = t_torch / t_nb
            verdict = "" if target is None or ratio >= target else "  (below target)"
            print(f"{name:<44} {t_nb * 1e3:>8.3f}ms {t_torch * 1e3:>8.3f}ms {ratio:>7.2f} "
                  f"{'-' if target is None else target:>7}{verdict}", flush=True)


if __name__ == "__main__":
    main()
