"""The README's examples run as written."""
import os
import re

import pytest

README = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")


def _block(heading):
    """The first ```python block after the heading ``heading``."""
    text = open(README, encoding="utf-8").read()
    start = text.index(heading)
    m = re.compile(r"```python\n(.*?)```", re.S).search(text, start)
    return m.group(1)


def _run(heading, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = _block(heading)
    exec(compile(code, f"README.md: {heading}", "exec"), {"__name__": "__readme__"})
    return capsys.readouterr().out.strip().splitlines()


def test_three_ways_example_runs(tmp_path, monkeypatch, capsys):
    out = _run("## Three ways to build a model, and a custom training loop", tmp_path,
               monkeypatch, capsys)
    assert any("Connected to" in line for line in out)
    assert float(out[-1]) > 0


def test_text_example_runs_and_prints_what_it_says(tmp_path, monkeypatch, capsys):
    code = _block("## Text and sequences")
    out = _run("## Text and sequences", tmp_path, monkeypatch, capsys)
    promised = re.findall(r"# (\[.*\])", code)      # the comments' printed values
    assert out[0] == promised[0]
    assert " ".join(out[1].split()) == " ".join(promised[1].split())
    assert " ".join(" ".join(out[2:4]).split()) == " ".join(promised[2].split())
    positive, negative = (float(v) for v in out[-1].strip("[]").split())
    assert positive > 0.6 and negative < 0.4


def test_attention_example_runs(tmp_path, monkeypatch, capsys):
    out = _run("## Attention and transformers", tmp_path, monkeypatch, capsys)
    assert float(out[0]) >= 0.95
    assert out[1] == "(1, 3, 16) (1, 2, 3, 5)"


def test_tabular_lookup_example_runs(tmp_path, monkeypatch, capsys):
    code = _block("### Tabular data with Keras' preprocessing layers")
    out = _run("### Tabular data with Keras' preprocessing layers", tmp_path, monkeypatch,
               capsys)
    assert out[-1] == re.findall(r"# (\[.*\])", code)[0]
