"""A conditional GAN on the 8x8 digits: ask for a digit, get an image of that digit.

The ``gan`` example's models and loop, with the digit's one-hot label as a second input of both
models (Mirza and Osindero's conditional GAN): the generator draws an image from ``[z, label]``,
the discriminator judges ``[image, label]`` pairs, so a well-drawn 3 passed off as a 7 is caught
and the generator must draw the digit it is asked for.

To check that it does, a separate classifier (a small CNN, trained on the training digits, or
loaded from ``--classifier FILE`` when that file exists; saved there otherwise) labels
``--per-digit`` samples of every requested digit; the example prints how often it recognizes
the requested digit, per digit and overall, next to the classifier's own test accuracy.
Pictures (with the ``plot`` extra): ``cgan_samples.png``, the digits 0 to 9 from the same codes
every ``--sample-every`` epochs, and ``cgan_digits.png``, ten samples of each digit at the end.
"""
import os

import numpy as np

from .._files import check_writable
from . import check_sizes, gan

TITLE = "conditional GAN on the digits, checked by a separately trained digits classifier"


def add_arguments(p):
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--latent", type=int, default=16, help="size of the generator's code z")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--sample-every", type=int, default=10,
                   help="draw a row of samples every this many epochs")
    p.add_argument("--per-digit", type=int, default=100,
                   help="samples of each digit the classifier checks")
    p.add_argument("--classifier", default=None,
                   help="the digits classifier's file: loaded when it exists, written after "
                        "training otherwise (default: trained, not saved)")
    p.add_argument("--classifier-epochs", type=int, default=20)


def generator(nb, latent):
    """[z (latent,), one-hot digit (10,)] -> an 8x8 image with pixels in [0, 1]."""
    L = nb.layers
    z, label = nb.Input((latent,), name="z"), nb.Input((10,), name="digit")
    h = L.Concatenate()([z, label])
    h = L.Dense(128, activation="leaky_relu")(h)
    h = L.Dense(128, activation="leaky_relu")(h)
    out = L.Reshape((1, 8, 8))(L.Dense(64, activation="sigmoid")(h))
    return nb.Model([z, label], out, name="generator")


def discriminator(nb):
    """[8x8 image, one-hot digit (10,)] -> the logit of "a real image of that digit"."""
    L = nb.layers
    image, label = nb.Input((1, 8, 8), name="image"), nb.Input((10,), name="digit")
    h = L.Concatenate()([L.Flatten()(image), label])
    h = L.Dense(128, activation="leaky_relu")(h)
    h = L.Dense(64, activation="leaky_relu")(h)
    return nb.Model([image, label], L.Dense(1)(h), name="discriminator")


def classifier(nb):
    """A small CNN: 8x8 digit -> probabilities of the 10 digits."""
    L = nb.layers
    return nb.Sequential([
        L.Conv2D(16, 3, padding="same", activation="relu"),
        L.MaxPool2D(2),
        L.Flatten(),
        L.Dense(64, activation="relu"),
        L.Dense(10, activation="softmax"),
    ], input_shape=(1, 8, 8), name="digits_classifier")


def get_classifier(nb, path, x_train, y_train, x_test, y_test, args):
    """The classifier loaded from ``path`` when it exists, else trained (and saved to ``path``
    when given); returns (model, test accuracy)."""
    if path and os.path.exists(path):
        model = nb.load_model(path).to(args.device)
        print(f"digits classifier: loaded from {path}")
    else:
        if path:
            check_writable(path, "the classifier")      # fail before training, not after
        model = classifier(nb).to(args.device)
        model.compile(nb.optimizers.Adam(2e-3), "sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        print(f"digits classifier: a small CNN, {args.classifier_epochs} epochs on the "
              f"training digits")
        model.fit(x_train, y_train, epochs=args.classifier_epochs, batch_size=32,
                  seed=args.seed, verbose=0)
        if path:
            model.save(path)
            print(f"digits classifier saved to {path}")
    accuracy = float((model.predict(x_test).argmax(axis=1) == y_test).mean())
    return model, accuracy


def recognition(nb, gen, clf, latent, per_digit):
    """(overall rate, per-digit rates): how often ``clf`` labels the generator's samples of
    each requested digit as that digit, ``per_digit`` samples of each."""
    digits = np.repeat(np.arange(10), per_digit)
    z = nb.random.normal((len(digits), latent))
    samples = gen([z, nb.data.one_hot(digits, 10).astype(np.float32)])
    hits = clf.predict(np.asarray(samples)).argmax(axis=1) == digits
    per = hits.reshape(10, per_digit).mean(axis=1)
    return float(hits.mean()), [float(r) for r in per]


def run(args):
    import numbanet as nb
    check_sizes(args, ("epochs", "latent", "batch_size", "sample_every", "per_digit",
                       "classifier_epochs"))
    nb.seed(args.seed)
    x, y = nb.datasets.load_digits()
    x_train, x_test, y_train, y_test = nb.data.train_test_split(x, y, test_size=0.2,
                                                                seed=args.seed)
    clf, clf_accuracy = get_classifier(nb, args.classifier, x_train, y_train, x_test, y_test,
                                       args)
    print(f"digits classifier: test accuracy {clf_accuracy:.4f}")
    print(f"cgan: {len(x_train)} training digits with their labels; generator [z ({args.latent}),"
          f" one-hot digit] -> 128 -> 128 -> 64 pixels, discriminator [image, one-hot digit] -> "
          f"128 -> 64 -> 1 logit")
    gen, disc = generator(nb, args.latent).to(args.device), discriminator(nb).to(args.device)
    onehot = nb.data.one_hot(y_train, 10).astype(np.float32)
    with nb.device(args.device):
        fixed = nb.random.normal((10, args.latent))
        ten = nb.data.one_hot(np.arange(10), 10).astype(np.float32)
        rows, titles = [], []

        def snapshot(epoch):
            rows.append(np.asarray(gen([fixed, ten])))
            titles.append(f"epoch {epoch}")

        history, seconds = gan.train(nb, gen, disc, x_train, onehot, args, snapshot)
        rate, per_digit = recognition(nb, gen, clf, args.latent, args.per_digit)
        final = [np.asarray(gen([nb.random.normal((10, args.latent)),
                                 np.repeat(ten[d:d + 1], 10, axis=0)])) for d in range(10)]
    print(f"after {args.epochs} epochs: discriminator loss {history['d_loss'][-1]:.3f}, "
          f"generator loss {history['g_loss'][-1]:.3f}; {seconds:.1f}s of training on "
          f"{gen.device}")
    print(f"the classifier recognizes the requested digit in {rate:.1%} of {10 * args.per_digit} "
          f"generated samples; per digit: " +
          ", ".join(f"{d}: {r:.0%}" for d, r in enumerate(per_digit)))
    result = {"recognition": rate, "per_digit": per_digit, "classifier_accuracy": clf_accuracy,
              "history": history, "seconds": seconds}
    try:
        out = args.output_dir
        result["png"] = (
            gan.draw_rows(rows, titles, os.path.join(out, "cgan_samples.png"),
                          "cGAN: digits 0 to 9 from the same codes as training goes on"),
            gan.draw_rows(final, [f"digit {d}" for d in range(10)],
                          os.path.join(out, "cgan_digits.png"),
                          "cGAN: ten samples of each requested digit"))
        print(f"pictures: {', '.join(result['png'])}")
    except ImportError:
        print("note: matplotlib is not installed, so no picture is drawn "
              "(pip install numbanet[plot])")
    return result
