"""The generative examples (autoencoder, vae, gan, cgan, word2vec) on reduced settings: each
trains to its figure through ``numbanet.examples.run`` and writes its pictures when matplotlib
is installed."""
import importlib.util

import numpy as np
import pytest

import numbanet as nb
from numbanet import examples

HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def pictures_written(result, *names):
    """With matplotlib, each named PNG exists and holds a picture; without it, none is listed."""
    pngs = result.get("png")
    if not HAVE_MATPLOTLIB:
        assert pngs is None
        return
    pngs = [pngs] if isinstance(pngs, str) else list(pngs)
    assert sorted(p.rsplit("/", 1)[-1] for p in pngs) == sorted(names)
    for path in pngs:
        with open(path, "rb") as f:
            head = f.read(8)
        assert head == b"\x89PNG\r\n\x1a\n"
        assert len(open(path, "rb").read()) > 2000


def test_autoencoders_beat_pca_and_denoise(tmp_path, capsys):
    result = examples.run("autoencoder", ["--epochs", "25", "--conv-epochs", "2",
                                          "--verbose", "0", "--output-dir", str(tmp_path)])
    # the dense autoencoder's code of 8 numbers keeps more than PCA's 8 components
    assert result["dense"] < result["pca"]
    # the denoising autoencoder at least halves the error of its noisy inputs
    assert result["denoised"] <= 0.5 * result["noisy"]
    # two epochs of the convolutional one: well below guessing the mean digit (about 0.07)
    assert result["conv"] < 0.065
    out = capsys.readouterr().out
    assert "PCA, 8 components" in out and "convolutional autoencoder" in out
    pictures_written(result, "autoencoder_reconstructions.png")
    with pytest.raises(ValueError, match="multiple of 4"):
        examples.run("autoencoder", ["--code-size", "6", "--output-dir", str(tmp_path)])


def test_vae_loss_decreases_and_kl_is_non_negative(tmp_path):
    result = examples.run("vae", ["--epochs", "8", "--grid", "4", "--verbose", "0",
                                  "--output-dir", str(tmp_path)])
    loss = result["history"]["loss"]                 # fit's: reconstruction + KL, per pixel
    assert loss[-1] < loss[0]
    terms = result["test_terms"]                     # per test image, after every epoch
    totals = np.add(terms["reconstruction"], terms["kl"])
    assert totals[-1] < totals[0]
    assert min(terms["kl"]) >= 0.0
    assert result["kl"] > 0.1                        # the latent space is used, not collapsed
    assert result["latent"].shape == (360, 2)
    pictures_written(result, "vae_latent.png", "vae_samples.png")


def test_sampling_layer_adds_the_kl_term():
    """The VAE's loss is the crossentropy plus the Sampling layer's add_loss KL term."""
    from numbanet.examples import vae
    nb.seed(3)
    model, encoder, _ = vae.build(nb)
    x = nb.datasets.load_digits()[0][:16]
    model(x)
    (kl_term,) = model.losses
    mu, log_var = (np.asarray(a, np.float64) for a in encoder.predict(x))
    kl = -0.5 * np.sum(1 + log_var - mu ** 2 - np.exp(log_var), axis=1).mean()
    assert float(kl_term) == pytest.approx(kl / 64, rel=1e-5)


def weights(model):
    return [np.array(w) for w in model.get_weights()]


def changed(before, after):
    return [not np.array_equal(b, a) for b, a in zip(before, after)]


def test_a_gan_step_changes_only_the_model_it_trains():
    from numbanet.examples import gan
    nb.seed(0)
    gen, disc = gan.generator(nb, 8), gan.discriminator(nb)
    g_opt, d_opt = gan.optimizer(nb, 1e-3), gan.optimizer(nb, 1e-3)
    real = nb.datasets.load_digits()[0][:32]
    z = np.random.default_rng(0).standard_normal((32, 8)).astype(np.float32)
    gen(z), disc(real)                                   # build both
    g0, d0 = weights(gen), weights(disc)
    loss, p_real, p_fake = gan.discriminator_step(nb, gen, disc, d_opt, real, z)
    assert np.isfinite(loss) and 0 < p_real < 1 and 0 < p_fake < 1
    assert all(changed(d0, weights(disc))) and not any(changed(g0, weights(gen)))
    g1, d1 = weights(gen), weights(disc)
    assert np.isfinite(gan.generator_step(nb, gen, disc, g_opt, z))
    assert all(changed(g1, weights(gen))) and not any(changed(d1, weights(disc)))


def test_gan_example_trains_and_draws_its_samples(tmp_path, capsys):
    result = examples.run("gan", ["--epochs", "3", "--sample-every", "2", "--verbose", "2",
                                  "--output-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "Epoch 3/3" in out and "d_loss" in out and "P(real)" in out
    assert len(result["history"]["g_loss"]) == 3
    assert result["samples"].shape == (10, 1, 8, 8)
    assert np.all((result["samples"] >= 0) & (result["samples"] <= 1))
    pictures_written(result, "gan_samples.png")


def test_cgan_draws_the_digit_it_is_asked_for(tmp_path, capsys):
    path = str(tmp_path / "classifier.npz")
    argv = ["--epochs", "60", "--per-digit", "50", "--classifier-epochs", "10",
            "--classifier", path, "--sample-every", "20", "--verbose", "0",
            "--output-dir", str(tmp_path)]
    result = examples.run("cgan", argv)
    assert result["classifier_accuracy"] > 0.9
    assert result["recognition"] >= 0.6
    assert len(result["per_digit"]) == 10
    assert "recognizes the requested digit" in capsys.readouterr().out
    pictures_written(result, "cgan_samples.png", "cgan_digits.png")
    # the saved classifier is loaded the next time
    again = examples.run("cgan", argv[:1] + ["1"] + argv[2:])
    assert "loaded from" in capsys.readouterr().out
    assert again["classifier_accuracy"] == result["classifier_accuracy"]


def test_cgan_checks_the_classifier_path_before_training(tmp_path, monkeypatch):
    from numbanet.examples import cgan
    monkeypatch.setattr(cgan, "classifier", lambda nb: (_ for _ in ()).throw(
        AssertionError("trained")))
    with pytest.raises(FileNotFoundError, match="cannot write the classifier"):
        examples.run("cgan", ["--classifier", str(tmp_path / "missing" / "c.npz"),
                              "--verbose", "0", "--output-dir", str(tmp_path)])


def planted_corpus(rng, sentences=600):
    """Sentences that each draw their words from one of three planted groups of words."""
    groups = [["red", "green", "blue", "yellow"], ["cat", "dog", "horse", "cow"],
              ["paris", "london", "rome", "madrid"]]
    lines = []
    for _ in range(sentences):
        g = groups[rng.integers(3)]
        lines.append(" ".join(g[i] for i in rng.integers(0, 4, 8)))
    return groups, lines


def test_word2vec_on_a_corpus_file_with_evaluations(tmp_path, capsys):
    groups, lines = planted_corpus(np.random.default_rng(0))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(lines) + "\n")
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("# word1\tword2\tscore\nred\tblue\t9\ncat\tdog\t8.5\nred\tcat\t1\n"
                     "paris\trome\t9\ndog\tlondon\t0.5\nred\tunicorn\t5\n")
    analogies = tmp_path / "analogies.txt"
    analogies.write_text(": colours\nred green blue yellow\n: mixed\ncat dog paris unicorn\n")
    for sg in ("1", "0"):
        result = examples.run("word2vec", [
            "--corpus", str(corpus), "--sg", sg, "--vector-size", "16", "--min-count", "1",
            "--sample", "0", "--epochs", "10", "--words", "red,cat,unicorn", "--topn", "3",
            "--similarity", str(pairs), "--analogies", str(analogies), "--plot-words", "12",
            "--output-dir", str(tmp_path)])
        out = capsys.readouterr().out
        assert ("skip-gram" if sg == "1" else "CBOW") in out
        assert "words/s" in out and result["words_per_second"] > 0
        assert result["vocabulary"] == 12
        assert "unicorn: not in the vocabulary" in out
        for word, group in (("red", groups[0]), ("cat", groups[1])):
            near = [w for w, _ in result["neighbours"][word]]
            assert f"  {word}: " in out and set(near) <= set(group) - {word}
        assert "Pearson" in out and "Spearman" in out
        assert result["similarity"]["oov"] == pytest.approx(100 / 6)
        assert "analogies of" in out and 0.0 <= result["analogies"] <= 1.0
        pictures_written(result, "word2vec_words.png")
    with pytest.raises(ValueError, match="--corpus"):
        examples.run("word2vec", ["--corpus", str(tmp_path / "missing.txt")])
