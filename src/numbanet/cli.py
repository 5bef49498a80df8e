"""The ``numbanet`` command: ``numbanet train`` (the main job) and ``numbanet compare``."""
import argparse
import math
import os
import sys
import time


def _positive(kind, zero=False):
    """argparse type: a finite ``kind`` above 0 (at least 0 with ``zero``)."""
    word = "non-negative" if zero else "positive"

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {word} {kind.__name__}, got {text!r}")
        if not (0 <= value if zero else 0 < value) or not value < math.inf:
            raise argparse.ArgumentTypeError(f"expected a {word} {kind.__name__}, got {text!r}")
        return value
    return parse


non_negative_int = _positive(int, zero=True)      # a seed


def build_digits_cnn(device="cpu"):
    """The small CNN ``numbanet train`` fits on the 8x8 digits."""
    import numbanet as nb
    L = nb.layers
    return nb.Sequential([
        L.Conv2D(32, 3, padding="same", activation="relu"),
        L.MaxPool2D(2),
        L.Conv2D(64, 3, padding="same", activation="relu"),
        L.MaxPool2D(2),
        L.Flatten(),
        L.Dense(128, activation="relu"),
        L.Dense(10, activation="softmax"),
    ], input_shape=(1, 8, 8), device=device)


def train(args):
    import numbanet as nb
    from ._files import check_writable
    root = True                     # with --distributed only rank 0 prints, saves and plots
    if args.distributed:
        from . import distributed as dist
        dist.init()
        root = dist.rank() == 0
    if not root:
        args.plot = ""
        args.verbose = 0
    else:
        check_writable(args.output, "the model file")  # fail before training, not after it
    if args.plot is None:          # by default the curves go next to the model, when possible
        try:
            nb.plot.require_matplotlib()
            args.plot = os.path.splitext(args.output)[0] + ".png"
        except ImportError:
            args.plot = ""
            print("note: matplotlib is not installed, so no training-curve PNG is written "
                  "(pip install numbanet[plot])", file=sys.stderr)
    elif args.plot:
        nb.plot.require_matplotlib()        # fail before training, not after it
    if args.plot:
        check_writable(args.plot, "the plot")
        if os.path.realpath(args.plot) == os.path.realpath(args.output):
            raise ValueError(f"the plot {args.plot!r} (--plot; by default OUTPUT with .png) is "
                             f"the model file --output {args.output!r}: the curves would "
                             f"overwrite the model; give --plot another path, or --plot ''")
    nb.seed(args.seed)
    x, y = nb.datasets.load_digits()
    x_train, x_test, y_train, y_test = nb.data.train_test_split(
        x, y, test_size=0.2, seed=args.seed, stratify=y)
    model = build_digits_cnn(args.device)
    optimizer = nb.optimizers.get(args.optimizer)
    optimizer.learning_rate = args.learning_rate
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    if args.verbose:
        model.summary()
    if args.distributed and root:
        k, b = dist.size(), args.batch_size
        share = f"{b // k}" if b % k == 0 else f"{b // k}-{b // k + 1}"
        print(f"distributed: {k} ranks share each global batch of {b} ({share} samples per "
              f"rank)")
    t0 = time.perf_counter()
    history = model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                        validation_split=0.1, seed=args.seed, verbose=args.verbose,
                        distributed=args.distributed,
                        callbacks=[nb.callbacks.CompileNotice()] if args.verbose else None)
    seconds = time.perf_counter() - t0
    if model.stop_reason:
        if root:
            print(f"training stopped: {model.stop_reason}", file=sys.stderr)
        return 1
    if not root:
        return 0
    model.save(args.output)                 # the trained model first: nothing after can lose it
    print(f"model saved to {args.output}")
    result = model.evaluate(x_test, y_test)
    print(f"test accuracy: {result['accuracy']:.4f}  test loss: {result['loss']:.4f}  "
          f"({len(x_test)} test images, {seconds:.1f}s training on {model.device})")
    if args.plot:
        try:
            nb.plot_history(history, args.plot, title="numbanet train: 8x8 digits CNN")
        except (OSError, ValueError, RuntimeError) as e:
            print(f"numbanet train: the training curves could not be drawn ({e}); the model is "
                  f"saved in {args.output}", file=sys.stderr)
            return 1
        print(f"training curves saved to {args.plot}")
    return 0


def _optimizers(args):
    from .optimizer_tour import compare_optimizers
    losses = compare_optimizers(epochs=args.epochs, seed=args.seed, plot=args.plot or None,
                                device=args.device, verbose=True)
    if args.plot:
        print(f"loss curves of {len(losses)} optimizers saved to {args.plot}")
    return 0


def _compare(args):
    from .compare import main as compare_main
    return compare_main(args)


def _example(args):
    from . import examples
    if args.help and args.name:
        examples.run(args.name, ["--help"])     # the example's own options
    if args.help:
        args.print_help()
        return 0
    if args.list or not args.name:
        for name, title in examples.listing():
            print(f"{name:14s} {title}")
        return 0
    examples.run(args.name, args.rest)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="numbanet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a small CNN on the 8x8 digits and save it")
    t.add_argument("--epochs", type=_positive(int), default=15)
    t.add_argument("--batch-size", type=_positive(int), default=32)
    t.add_argument("--learning-rate", type=_positive(float), default=1e-3)
    t.add_argument("--optimizer", default="adam")
    t.add_argument("--seed", type=non_negative_int, default=0)
    t.add_argument("--output", default="numbanet-digits.npz")
    t.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    t.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2))
    t.add_argument("--distributed", action="store_true",
                   help="data-parallel training over MPI: run as mpirun -n K numbanet train "
                        "--distributed (needs pip install numbanet[mpi]); --batch-size is the "
                        "global batch, split among the ranks; rank 0 prints and saves")
    t.add_argument("--plot", metavar="PNG", default=None,
                   help="where to draw the loss and accuracy curves (default: next to the model, "
                        "OUTPUT with .png; needs matplotlib: pip install numbanet[plot]); "
                        "--plot '' draws none")
    t.set_defaults(func=train)
    o = sub.add_parser("optimizers", help="train the same small model on the digits with each "
                                          "optimizer and plot the loss curves side by side")
    o.add_argument("--epochs", type=_positive(int), default=10)
    o.add_argument("--seed", type=non_negative_int, default=0)
    o.add_argument("--plot", metavar="PNG", default="numbanet-optimizers.png")
    o.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    o.set_defaults(func=_optimizers)
    c = sub.add_parser("compare", help="time every CPU kernel beside its CUDA twin and check "
                                       "both against float64")
    c.add_argument("--ops", default=None,
                   help="comma-separated ops (dense,conv2d,pool,activations,...) or kernel names")
    c.add_argument("--size", default="medium", choices=("small", "medium", "large"))
    c.add_argument("--repeat", type=_positive(int), default=5)
    c.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    c.add_argument("--json", action="store_true", help="print JSON instead of a table")
    c.add_argument("--resources", action="store_true",
                   help="registers, spills and shared memory of every CUDA kernel (ptxas)")
    c.set_defaults(func=_compare)
    e = sub.add_parser("example", help="run one of the course's models (numbanet example --list)",
                       add_help=False)
    e.add_argument("-h", "--help", action="store_true",
                   help="show this help message, or with NAME the example's options, and exit")
    e.add_argument("name", nargs="?", help="the example (see --list)")
    e.add_argument("--list", action="store_true", help="list the examples")
    e.add_argument("rest", nargs=argparse.REMAINDER, help="the example's options (its --help)")
    e.set_defaults(func=_example, print_help=e.print_help)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, RuntimeError, ImportError, OSError) as e:
        message = e.strerror if isinstance(e, OSError) and e.strerror and not e.filename \
            else str(e)
        print(f"numbanet {args.command}: error: {message}", file=sys.stderr)
        if getattr(args, "distributed", False):
            from . import distributed as dist
            if dist.is_initialized() and dist.size() > 1:     # the other ranks would wait
                dist.abort(f"numbanet {args.command}: rank {dist.rank()} stopped on that "
                           f"error; aborting the job", 2)
        return 2


if __name__ == "__main__":
    sys.exit(main())
