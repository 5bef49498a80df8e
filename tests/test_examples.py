"""The examples (``numbanet example NAME``) on reduced settings: each trains, reaches its figure
and returns what it printed; the command lists them and rejects bad names and options."""
import numpy as np
import pytest

from numbanet import cli, examples


def test_list_names_every_example(capsys):
    assert cli.main(["example", "--list"]) == 0
    out = capsys.readouterr().out
    for name in examples.EXAMPLES:
        assert name in out


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_shows_the_command_and_the_examples_options(flag, capsys):
    assert cli.main(["example", flag]) == 0
    assert "--list" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:                # argparse's own --help of the example
        cli.main(["example", "gan", flag])
    assert e.value.code == 0 and "--latent" in capsys.readouterr().out


def test_unknown_example_is_a_clear_error(capsys):
    assert cli.main(["example", "no-such-model"]) == 2
    err = capsys.readouterr().err
    assert "no-such-model" in err and "char-lstm" in err


def test_char_lstm_learns_below_the_unigram_entropy(tmp_path):
    result = examples.run("char-lstm", ["--chars", "30000", "--epochs", "4", "--units", "48",
                                        "--seq-len", "32", "--batch-size", "16", "--length", "40",
                                        "--verbose", "0", "--output-dir", str(tmp_path)])
    # The unigram entropy is what a model ignoring the context scores (about 3.2 nats/char).
    assert result["val_loss"] < result["unigram_entropy"] - 0.3
    sample = result["sample"]
    assert sample.startswith("The ") and len(sample) == len("The ") + 40
    with pytest.raises(ValueError, match="--prompt"):
        examples.run("char-lstm", ["--prompt", "", "--chars", "2000", "--epochs", "1"])
    for argv, match in ((["--epochs", "0"], "--epochs must be at least 1, got 0"),
                        (["--seq-len", "0"], "--seq-len must be at least 1, got 0"),
                        (["--chars", "100"], "--chars 100 gives 1 window")):
        with pytest.raises(ValueError, match=match):
            examples.run("char-lstm", argv + ["--verbose", "0"])


def test_transformer_reverses_and_draws_its_attention(tmp_path):
    pytest.importorskip("matplotlib")
    result = examples.run("transformer", ["--samples", "2500", "--epochs", "4", "--width", "32",
                                          "--batch-size", "32", "--learning-rate", "2e-3",
                                          "--verbose", "0", "--output-dir", str(tmp_path)])
    assert result["token_accuracy"] >= 0.95
    maps = result["attention"]
    assert maps.shape == (4, 12, 12)
    np.testing.assert_allclose(maps.sum(axis=-1), 1.0, rtol=1e-5)
    # the heads look mostly at each query's mirror key
    assert np.mean(maps[:, np.arange(12), np.arange(12)[::-1]]) > 0.5
    assert (tmp_path / "transformer_attention.png").stat().st_size > 1000
