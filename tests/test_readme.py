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


@pytest.mark.parametrize("heading", ["## Three ways to build a model, and a custom training loop"])
def test_readme_example_runs(heading, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = _block(heading)
    exec(compile(code, f"README.md: {heading}", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    assert "Connected to" in out
    assert float(out.strip().splitlines()[-1]) > 0
