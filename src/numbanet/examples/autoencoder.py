"""Autoencoders on the 8x8 digits: a non-linear, learned alternative to PCA.

An autoencoder squeezes each image through a small code (``--code-size`` numbers) and rebuilds it
from the code alone, trained to reproduce its input (mean squared error). PCA with as many
components is the best *linear* code (computed here from an SVD of the training images); the
example prints the test reconstruction error (MSE per pixel) of

* PCA with ``code_size`` components,
* a dense autoencoder (64 -> 64 -> code -> 64 -> 64 pixels),
* a convolutional one (Conv2D and max-pooling down to a 2x2 x code/4 code, Conv2DTranspose and
  UpSampling2D back up),
* a denoising autoencoder (the dense one with a code twice as large and Gaussian noise on its
  inputs in training), next to the error of the noisy test inputs it cleans.

``autoencoder_reconstructions.png`` (with the ``plot`` extra) shows one test digit of each class:
the originals, the reconstructions (PCA's too), the noisy inputs and their denoised
reconstructions.
"""
import os
import time

import numpy as np

from . import check_sizes

TITLE = "dense, convolutional and denoising autoencoders on the digits, against PCA"


def add_arguments(p):
    p.add_argument("--code-size", type=int, default=8, help="numbers in the code (a multiple "
                   "of 4 for the convolutional autoencoder)")
    p.add_argument("--epochs", type=int, default=40, help="epochs of the dense autoencoders")
    p.add_argument("--conv-epochs", type=int, default=25,
                   help="epochs of the convolutional autoencoder (0: leave it out)")
    p.add_argument("--noise", type=float, default=0.3,
                   help="standard deviation of the denoising autoencoder's input noise")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=3e-3)


def mse(a, b):
    """Mean squared error per pixel."""
    return float(np.mean((np.asarray(a, np.float64) - b) ** 2))


def pca(train, test, k):
    """Reconstructions of ``test`` (n, 64) from its first ``k`` principal components, found by
    an SVD of the centred training images."""
    mean = train.mean(axis=0)
    _, _, vt = np.linalg.svd(train - mean, full_matrices=False)
    basis = vt[:k]
    return (test - mean) @ basis.T @ basis + mean


def dense_autoencoder(nb, code_size, noise=0.0):
    """64 pixels -> 64 -> code -> 64 -> 64 pixels (a sigmoid: pixels are in [0, 1]); with
    ``noise`` a GaussianNoise layer first, active in training only."""
    L = nb.layers
    front = [L.GaussianNoise(noise, name="noise")] if noise else []
    return nb.Sequential(front + [
        L.Flatten(),
        L.Dense(64, activation="relu"),
        L.Dense(code_size, name="code"),
        L.Dense(64, activation="relu"),
        L.Dense(64, activation="sigmoid"),
        L.Reshape((1, 8, 8)),
    ], input_shape=(1, 8, 8), name="denoising_autoencoder" if noise else "dense_autoencoder")


def conv_autoencoder(nb, code_size):
    """8x8 -> 4x4 -> 2x2 x (code_size / 4) code -> 4x4 (a transposed convolution, stride 2) ->
    8x8 (nearest upsampling and a convolution)."""
    L = nb.layers
    return nb.Sequential([
        L.Conv2D(16, 3, padding="same", activation="relu"),
        L.MaxPool2D(2),
        L.Conv2D(16, 3, padding="same", activation="relu"),
        L.MaxPool2D(2),
        L.Conv2D(code_size // 4, 1, name="code"),
        L.Conv2DTranspose(16, 3, strides=2, padding="same", activation="relu"),
        L.UpSampling2D(2),
        L.Conv2D(16, 3, padding="same", activation="relu"),
        L.Conv2D(1, 3, padding="same", activation="sigmoid"),
    ], input_shape=(1, 8, 8), name="conv_autoencoder")


def train(nb, model, x_in, x_out, args, epochs):
    """Fit ``model`` to map ``x_in`` to ``x_out``; returns the seconds it took."""
    model.to(args.device)
    model.compile(nb.optimizers.Adam(args.learning_rate), "mse")
    print(f"{model.name}: {model.count_params():,} weights, {epochs} epochs")
    start = time.perf_counter()
    model.fit(x_in, x_out, epochs=epochs, batch_size=args.batch_size, seed=args.seed,
              verbose=args.verbose)
    return time.perf_counter() - start


def draw(rows, titles, path):
    from .. import plot
    images = np.concatenate([r.reshape(len(r), 8, 8) for r in rows])
    return plot.image_grid(images, path, cols=len(rows[0]), row_titles=titles, vmin=0.0,
                           vmax=1.0, title="test digits and their reconstructions")


def run(args):
    import numbanet as nb
    check_sizes(args, ("code_size", "epochs", "batch_size"))
    if args.conv_epochs < 0:
        raise ValueError(f"--conv-epochs must be 0 or more, got {args.conv_epochs}")
    if args.conv_epochs and args.code_size % 4:
        raise ValueError(f"--code-size must be a multiple of 4 for the convolutional "
                         f"autoencoder (its code is 2x2 x code/4), got {args.code_size}; "
                         f"--conv-epochs 0 leaves it out")
    if not args.noise > 0:
        raise ValueError(f"--noise must be positive, got {args.noise}")
    nb.seed(args.seed)
    x, y = nb.datasets.load_digits()
    x_train, x_test, _, y_test = nb.data.train_test_split(x, y, test_size=0.2, seed=args.seed)
    flat_train, flat_test = x_train.reshape(len(x_train), -1), x_test.reshape(len(x_test), -1)
    k = args.code_size
    print(f"autoencoder: {len(x_train)} training and {len(x_test)} test digits of 8x8 = 64 "
          f"pixels, squeezed through a code of {k} numbers")
    projected = pca(flat_train, flat_test, k)
    result = {"pca": mse(projected, flat_test)}
    shown = np.array([np.flatnonzero(y_test == d)[0] for d in range(10) if (y_test == d).any()])
    rows, titles = [x_test[shown], projected[shown]], ["originals", f"PCA, {k} components"]
    seconds = 0.0

    dense = dense_autoencoder(nb, k)
    seconds += train(nb, dense, x_train, x_train, args, args.epochs)
    rec = dense.predict(x_test)
    result["dense"] = mse(rec, x_test)
    rows.append(rec[shown])
    titles.append("dense autoencoder")

    if args.conv_epochs:
        conv = conv_autoencoder(nb, k)
        seconds += train(nb, conv, x_train, x_train, args, args.conv_epochs)
        rec = conv.predict(x_test)
        result["conv"] = mse(rec, x_test)
        rows.append(rec[shown])
        titles.append("convolutional autoencoder")

    noisy = x_test + np.random.default_rng(args.seed).normal(
        0.0, args.noise, x_test.shape).astype(np.float32)
    denoiser = dense_autoencoder(nb, 2 * k, noise=args.noise)
    seconds += train(nb, denoiser, x_train, x_train, args, args.epochs)
    denoised = denoiser.predict(noisy)
    result["noisy"], result["denoised"] = mse(noisy, x_test), mse(denoised, x_test)
    rows += [noisy[shown], denoised[shown]]
    titles += [f"noisy inputs (stddev {args.noise:g})", "denoised"]

    def line(what, value):
        print(f"  {what:<28}{value:.4f}")
    print(f"test reconstruction error (mean squared error per pixel), code of {k} numbers:")
    line(f"PCA, {k} components", result["pca"])
    line("dense autoencoder", result["dense"])
    if "conv" in result:
        line("convolutional autoencoder", result["conv"])
    print(f"denoising autoencoder (code of {2 * k}, trained on inputs with Gaussian noise of "
          f"stddev {args.noise:g}):")
    line("noisy test inputs", result["noisy"])
    line("their reconstructions", result["denoised"])
    print(f"{seconds:.1f}s of training on {dense.device}")
    result["seconds"] = seconds
    try:
        path = draw(rows, titles, os.path.join(args.output_dir, "autoencoder_reconstructions.png"))
        print(f"pictures: {path}")
        result["png"] = path
    except ImportError:
        print("note: matplotlib is not installed, so no picture is drawn "
              "(pip install numbanet[plot])")
    return result
