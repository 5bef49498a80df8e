"""A generative adversarial network (GAN) on the 8x8 digits, trained with a custom loop.

Two models play against each other: the generator turns a random code ``z`` (``--latent``
normal numbers, drawn with ``nb.random.normal``) into an image, the discriminator tells the
training digits (label 1) from generated images (label 0) with one logit. Each step of the loop
trains them in turn, each under its own ``nb.GradientTape`` and with its own Adam optimizer:

1. discriminator: binary crossentropy on a batch of real digits and a batch of generated ones
   (the generator is run outside the tape: its images are constants); only the discriminator's
   weights are updated;
2. generator: the crossentropy of the discriminator's verdict on fresh generated images against
   the label "real" (the non-saturating loss); the gradient flows back through the discriminator
   into the generator, and only the generator's weights are updated.

The example prints both losses per epoch and, at the end, the discriminator's mean probability
of "real" on real and on generated digits (both near 0.5 once neither side wins).
``gan_samples.png`` (with the ``plot`` extra) shows the images the same codes give as training
goes on, one row every ``--sample-every`` epochs.
"""
import os
import time

import numpy as np

from . import check_sizes

TITLE = "GAN on the digits, custom training loop with two tapes and two optimizers"


def add_arguments(p):
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--latent", type=int, default=16, help="size of the generator's code z")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--sample-every", type=int, default=15,
                   help="draw a row of samples every this many epochs")


def generator(nb, latent):
    """z (latent,) -> an 8x8 image with pixels in [0, 1]."""
    L = nb.layers
    return nb.Sequential([
        L.Dense(128, activation="leaky_relu"),
        L.Dense(128, activation="leaky_relu"),
        L.Dense(64, activation="sigmoid"),
        L.Reshape((1, 8, 8)),
    ], input_shape=(latent,), name="generator")


def discriminator(nb):
    """An 8x8 image -> the logit of "real"."""
    L = nb.layers
    return nb.Sequential([
        L.Flatten(),
        L.Dense(128, activation="leaky_relu"),
        L.Dense(64, activation="leaky_relu"),
        L.Dense(1),
    ], input_shape=(1, 8, 8), name="discriminator")


def optimizer(nb, learning_rate):
    """Adam with beta_1 = 0.5, the usual choice for GANs (less momentum in a moving game)."""
    return nb.optimizers.Adam(learning_rate, beta_1=0.5)


def discriminator_step(nb, gen, disc, opt, real, z, labels=None):
    """One update of ``disc`` on the ``real`` batch and the images ``gen`` makes from ``z``
    (conditioned on ``labels`` when given: then both models take [input, labels]). Returns
    (loss, mean probability of "real" on real images, on generated ones)."""
    bce = nb.losses.BinaryCrossentropy(from_logits=True)
    cond = (lambda a: a) if labels is None else (lambda a: [a, labels])
    fake = gen(cond(z))                        # outside the tape: a constant for this step
    ones, zeros = np.ones((len(real), 1), np.float32), np.zeros((len(real), 1), np.float32)
    with nb.GradientTape() as tape:
        real_logit = disc(cond(real), training=True)
        fake_logit = disc(cond(fake), training=True)
        loss = bce(ones, real_logit) + bce(zeros, fake_logit)
    grads = tape.gradient(loss, disc.trainable_weights)
    opt.apply_gradients(zip(grads, disc.trainable_weights))
    sig = nb.ops.sigmoid
    return (float(loss), float(nb.ops.mean(sig(real_logit))),
            float(nb.ops.mean(sig(fake_logit))))


def generator_step(nb, gen, disc, opt, z, labels=None):
    """One update of ``gen``: make ``disc`` call its images from ``z`` real. Returns the loss."""
    bce = nb.losses.BinaryCrossentropy(from_logits=True)
    cond = (lambda a: a) if labels is None else (lambda a: [a, labels])
    ones = np.ones((len(z), 1), np.float32)
    with nb.GradientTape() as tape:
        loss = bce(ones, disc(cond(gen(cond(z), training=True)), training=True))
    grads = tape.gradient(loss, gen.trainable_weights)
    opt.apply_gradients(zip(grads, gen.trainable_weights))
    return float(loss)


def train(nb, gen, disc, x, labels, args, snapshot):
    """The loop: per batch a discriminator step then a generator step (both conditioned on the
    batch's ``labels`` unless None), a progress bar, ``snapshot(epoch)`` after every
    ``--sample-every`` epochs and the last. Returns (history, seconds)."""
    g_opt, d_opt = optimizer(nb, args.learning_rate), optimizer(nb, args.learning_rate)
    rng = nb.random.spawn()
    steps = -(-len(x) // args.batch_size)
    bar = nb.callbacks.ProgbarLogger(args.verbose)
    bar.set_params({"epochs": args.epochs, "steps": steps})
    if args.verbose:
        bar.on_train_begin()
    history = {k: [] for k in ("d_loss", "g_loss", "d_real", "d_fake")}
    start = time.perf_counter()
    for epoch in range(args.epochs):
        if args.verbose:
            bar.on_epoch_begin(epoch)
        order = rng.permutation(len(x))
        sums = dict.fromkeys(history, 0.0)
        for step in range(steps):
            idx = order[step * args.batch_size:(step + 1) * args.batch_size]
            cond = None if labels is None else labels[idx]
            z = nb.random.normal((len(idx), args.latent))
            d_loss, d_real, d_fake = discriminator_step(nb, gen, disc, d_opt, x[idx], z, cond)
            z = nb.random.normal((len(idx), args.latent))
            g_loss = generator_step(nb, gen, disc, g_opt, z, cond)
            for k, v in zip(history, (d_loss, g_loss, d_real, d_fake)):
                sums[k] += v
            if args.verbose:
                bar.on_train_batch_end(step, {k: v / (step + 1) for k, v in sums.items()})
        for k in history:
            history[k].append(sums[k] / steps)
        if args.verbose:
            bar.on_epoch_end(epoch, {k: v[-1] for k, v in history.items()})
        if (epoch + 1) % args.sample_every == 0 or epoch + 1 == args.epochs:
            snapshot(epoch + 1)
    return history, time.perf_counter() - start


def draw_rows(rows, titles, path, title):
    from .. import plot
    images = np.concatenate([r.reshape(len(r), 8, 8) for r in rows])
    return plot.image_grid(images, path, cols=len(rows[0]), title=title, row_titles=titles,
                           vmin=0.0, vmax=1.0)


def run(args):
    import numbanet as nb
    check_sizes(args, ("epochs", "latent", "batch_size", "sample_every"))
    nb.seed(args.seed)
    x, _ = nb.datasets.load_digits()
    print(f"gan: {len(x)} digits; generator {args.latent} -> 128 -> 128 -> 64 pixels, "
          f"discriminator 64 -> 128 -> 64 -> 1 logit; Adam({args.learning_rate:g}, "
          f"beta_1=0.5) each")
    gen, disc = generator(nb, args.latent).to(args.device), discriminator(nb).to(args.device)
    with nb.device(args.device):
        fixed = nb.random.normal((10, args.latent))    # the same codes at every snapshot
        rows, titles = [], []

        def snapshot(epoch):
            rows.append(np.asarray(gen(fixed)))
            titles.append(f"epoch {epoch}")

        history, seconds = train(nb, gen, disc, x, None, args, snapshot)
    print(f"after {args.epochs} epochs: discriminator loss {history['d_loss'][-1]:.3f}, "
          f"generator loss {history['g_loss'][-1]:.3f}; the discriminator's P(real) is "
          f"{history['d_real'][-1]:.3f} on real digits and {history['d_fake'][-1]:.3f} on "
          f"generated ones (last epoch's means)")
    print(f"{seconds:.1f}s of training on {gen.device}")
    result = {"history": history, "samples": rows[-1], "seconds": seconds}
    try:
        result["png"] = draw_rows(rows, titles, os.path.join(args.output_dir, "gan_samples.png"),
                                  "GAN samples from the same 10 codes as training goes on")
        print(f"pictures: {result['png']}")
    except ImportError:
        print("note: matplotlib is not installed, so no picture is drawn "
              "(pip install numbanet[plot])")
    return result
