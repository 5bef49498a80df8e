"""The examples (``numbanet example NAME``) on reduced settings: each trains, reaches its figure
and returns what it printed; the command lists them and rejects bad names and options."""
import pytest

from numbanet import cli, examples


def test_list_names_every_example(capsys):
    assert cli.main(["example", "--list"]) == 0
    out = capsys.readouterr().out
    for name in examples.EXAMPLES:
        assert name in out


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
