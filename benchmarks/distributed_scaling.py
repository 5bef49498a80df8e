"""Data-parallel scaling of the LeNet training step (common.build_model("lenet"): ~0.42 M float32
weights, Adam, global batch 128) over MPI:

    python benchmarks/distributed_scaling.py                # k = 1 (no MPI calls)
    mpirun -n 2 python benchmarks/distributed_scaling.py    # k = 2: 64 samples per rank

Each run trains ``--steps`` steps with ``fit(..., distributed=True)`` on synthetic data, leaves
out the first ``--warmup`` steps (kernel compilation) and prints, on rank 0, the median step
time, the median time of the gradient allreduce (inside the step) and the throughput. The
machine's load average is printed with it: on a shared machine the numbers move with it.
Not an asv benchmark (asv runs one process); a script, like vs_torch.py.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128, help="the global batch")
    args = p.parse_args(argv)

    import numbanet as nb
    from numbanet import distributed as dist
    from benchmarks import common

    mpi = any(k in os.environ for k in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"))
    if mpi:
        dist.init()
    rank, size = (dist.rank(), dist.size()) if mpi else (0, 1)

    comm_times = []
    if mpi and size > 1:            # time the gradient allreduce inside each step
        inner = dist._sum_inplace

        def timed(a, backend, scale, what):
            t = time.perf_counter()
            inner(a, backend, scale, what)
            if what == "the gradient allreduce":
                comm_times.append(time.perf_counter() - t)
        dist._sum_inplace = timed

    model = common.build_model("lenet")
    rng = np.random.default_rng(0)
    n = args.steps * args.batch_size
    x = rng.standard_normal((n,) + common.MODELS["lenet"][0]).astype("float32")
    y = rng.integers(0, common.CLASSES, n)
    steps, cpu = [], []

    class Clock(nb.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.t, self.c = time.perf_counter(), time.process_time()

        def on_train_batch_end(self, batch, logs=None):
            steps.append(time.perf_counter() - self.t)
            cpu.append(time.process_time() - self.c)

    model.fit(x, y, batch_size=args.batch_size, epochs=1, seed=0, verbose=0,
              callbacks=[Clock()], distributed=mpi)
    keep = steps[args.warmup:]
    comm = comm_times[args.warmup:]
    step = statistics.median(keep)
    cpu_ms = [statistics.median(c) * 1e3 for c in
              (dist.allgather(cpu[args.warmup:]) if mpi else [cpu[args.warmup:]])]
    alone = []
    if mpi and size > 1:            # the same allreduce with every rank already waiting for it
        _, grads, _ = nb.engine.variable_runs(model.trainable_weights)
        for _ in range(30):
            dist.barrier()
            t = time.perf_counter()
            for g in grads:
                dist._sum_inplace(g, model.backend, 1.0, "benchmark")
            alone.append(time.perf_counter() - t)
    if rank == 0:
        import numba
        load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
        params = model.count_params()
        line = (f"k={size}: {args.batch_size // size} samples per rank, "
                f"{numba.get_num_threads()} Numba thread(s) per rank; step {step * 1e3:.1f} ms "
                f"(median of {len(keep)}), {args.batch_size / step:.0f} samples/s; CPU time "
                f"per step and rank {', '.join(f'{c:.0f}' for c in cpu_ms)} ms")
        if comm:
            mb = params * 4 / 1e6
            line += (f"; gradient allreduce in the step {statistics.median(comm) * 1e3:.2f} ms "
                     f"for {mb:.2f} MB ({100 * statistics.median(comm) / step:.0f}% of the "
                     f"step, waiting for the slower rank included), after a barrier "
                     f"{statistics.median(alone) * 1e3:.2f} ms")
        print(line)
        print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} "
              f"cores")


if __name__ == "__main__":
    main()
