"""A variational autoencoder (VAE) with a 2-D latent space on the 8x8 digits.

The encoder maps an image to a Gaussian over the latent plane (a mean ``mu`` and a log-variance
``log_var`` per coordinate); a ``Sampling`` layer draws ``z = mu + exp(log_var / 2) * eps`` with
``eps`` from ``nb.random.normal`` (the reparameterization trick: the gradient flows through
``mu`` and ``log_var``, ``eps`` is a constant) and adds the KL divergence of that Gaussian from
the standard normal prior with ``self.add_loss``; the decoder maps ``z`` back to pixels. ``fit``
minimizes the reconstruction loss (binary crossentropy per pixel) plus the added KL term, both
per pixel; the example reports them per image, in nats: reconstruction (crossentropy summed over
the 64 pixels) and KL, on the test digits after every epoch.

Pictures (with the ``plot`` extra): ``vae_latent.png``, the test digits' latent means coloured by
digit (the classes cluster on the plane although the VAE never saw a label), and
``vae_samples.png``, the decoder's images over a grid of the latent plane.
"""
import os
import time

import numpy as np

from . import check_sizes

TITLE = "variational autoencoder with a 2-D latent space on the digits"


def add_arguments(p):
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=2e-3)
    p.add_argument("--grid", type=int, default=12, help="decoded samples per side of the grid")


def sampling_layer(nb):
    """The Sampling layer class (made on first use, once numbanet is imported)."""
    ops = nb.ops

    class Sampling(nb.layers.Layer):
        """[mu, log_var] -> z = mu + exp(log_var / 2) * eps; adds ``kl_weight`` times the mean
        over the batch of KL(N(mu, exp(log_var)) || N(0, 1)) to the loss."""

        multi_input = True

        def __init__(self, kl_weight=1.0, **kwargs):
            super().__init__(**kwargs)
            self.kl_weight = kl_weight

        def call(self, inputs):
            mu, log_var = inputs
            kl = -0.5 * ops.sum(1.0 + log_var - ops.square(mu) - ops.exp(log_var), axis=1)
            self.add_loss(self.kl_weight * ops.mean(kl))
            eps = nb.random.normal(mu.shape, dtype=mu.dtype)
            return mu + ops.exp(0.5 * log_var) * eps

    return Sampling


def build(nb, latent=2):
    """(vae, encoder, decoder): the encoder gives [mu, log_var], the decoder images from z."""
    L = nb.layers
    inp = nb.Input((1, 8, 8))
    h = L.Dense(128, activation="relu")(L.Flatten()(inp))
    h = L.Dense(64, activation="relu")(h)
    mu, log_var = L.Dense(latent, name="mu")(h), L.Dense(latent, name="log_var")(h)
    encoder = nb.Model(inp, [mu, log_var], name="encoder")
    decoder = nb.Sequential([
        L.Dense(64, activation="relu"),
        L.Dense(128, activation="relu"),
        L.Dense(64, activation="sigmoid"),
        L.Reshape((1, 8, 8)),
    ], input_shape=(latent,), name="decoder")
    # the KL term per pixel, as the reconstruction loss is a mean over the 64 pixels
    z = sampling_layer(nb)(kl_weight=1.0 / 64, name="sampling")([mu, log_var])
    return nb.Model(inp, decoder(z), name="vae"), encoder, decoder


def terms(encoder, decoder, x, rng):
    """(reconstruction, KL) per image in nats, averaged over ``x``: the binary crossentropy
    summed over the pixels of the decoded sample ``z``, and KL(q(z|x) || N(0, I))."""
    mu, log_var = (np.asarray(a, np.float64) for a in encoder.predict(x))
    kl = -0.5 * np.sum(1.0 + log_var - mu ** 2 - np.exp(log_var), axis=1)
    z = mu + np.exp(0.5 * log_var) * rng.standard_normal(mu.shape)
    p = np.clip(decoder.predict(z.astype(np.float32)).astype(np.float64), 1e-7, 1 - 1e-7)
    t = x.reshape(p.shape)
    bce = -(t * np.log(p) + (1 - t) * np.log(1 - p))
    return float(bce.reshape(len(x), -1).sum(axis=1).mean()), float(kl.mean())


def draw(nb, mu, labels, decoder, grid, output_dir):
    """The two PNGs; returns their paths."""
    from .. import plot
    fig, axes = plot.figure(1, 1, size=(5.5, 4.8),
                            title="VAE latent space: test digits' means, coloured by digit")
    ax = axes[0, 0]
    points = ax.scatter(mu[:, 0], mu[:, 1], c=labels, cmap="tab10", vmin=-0.5, vmax=9.5, s=10)
    fig.colorbar(points, ax=ax, ticks=range(10), label="digit")
    ax.set_xlabel("z[0]")
    ax.set_ylabel("z[1]")
    latent = plot.save(fig, os.path.join(output_dir, "vae_latent.png"))

    span = np.linspace(-2.0, 2.0, grid)
    z = np.array([[a, b] for b in span[::-1] for a in span], np.float32)
    images = decoder.predict(z).reshape(grid, grid, 8, 8)
    cells = np.pad(images, ((0, 0), (0, 0), (0, 1), (0, 1)), constant_values=np.nan)
    mosaic = cells.transpose(0, 2, 1, 3).reshape(grid * 9, grid * 9)[:-1, :-1]
    fig, axes = plot.figure(1, 1, size=(7.0, 7.0),
                            title="decoded samples over the latent plane")
    half = 2.0 + 2.0 / (grid - 1) / 2 if grid > 1 else 0.5
    axes[0, 0].imshow(mosaic, cmap="gray", vmin=0, vmax=1, extent=(-half, half, -half, half),
                      interpolation="nearest")
    axes[0, 0].set_xlabel("z[0]")
    axes[0, 0].set_ylabel("z[1]")
    samples = plot.save(fig, os.path.join(output_dir, "vae_samples.png"))
    return latent, samples


def run(args):
    import numbanet as nb
    check_sizes(args, ("epochs", "batch_size", "grid"))
    nb.seed(args.seed)
    x, y = nb.datasets.load_digits()
    x_train, x_test, _, y_test = nb.data.train_test_split(x, y, test_size=0.2, seed=args.seed)
    print(f"vae: {len(x_train)} training and {len(x_test)} test digits, a 2-D latent space; "
          f"loss = binary crossentropy + KL divergence (add_loss), per pixel")
    vae, encoder, decoder = build(nb)
    vae.to(args.device)
    vae.compile(nb.optimizers.Adam(args.learning_rate), "binary_crossentropy")
    rng = np.random.default_rng(args.seed)
    per_epoch = {"reconstruction": [], "kl": []}

    class TestTerms(nb.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            rec, kl = terms(encoder, decoder, x_test, rng)
            per_epoch["reconstruction"].append(rec)
            per_epoch["kl"].append(kl)

    start = time.perf_counter()
    history = vae.fit(x_train, x_train, epochs=args.epochs, batch_size=args.batch_size,
                      seed=args.seed, verbose=args.verbose, callbacks=[TestTerms()])
    seconds = time.perf_counter() - start
    rec, kl = per_epoch["reconstruction"][-1], per_epoch["kl"][-1]
    print(f"test digits, per image: reconstruction {rec:.2f} nats (binary crossentropy over "
          f"64 pixels), KL {kl:.2f} nats; loss per pixel {history.history['loss'][0]:.4f} "
          f"after the first epoch, {history.history['loss'][-1]:.4f} after the last")
    print(f"{seconds:.1f}s of training on {vae.device}")
    mu = np.asarray(encoder.predict(x_test)[0])
    result = {"reconstruction": rec, "kl": kl, "history": history.history,
              "test_terms": per_epoch, "latent": mu, "seconds": seconds}
    try:
        result["png"] = draw(nb, mu, y_test, decoder, args.grid, args.output_dir)
        print(f"pictures: {', '.join(result['png'])}")
    except ImportError:
        print("note: matplotlib is not installed, so no picture is drawn "
              "(pip install numbanet[plot])")
    return result
