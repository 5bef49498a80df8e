"""The course's models as short programs: ``numbanet example NAME`` (``--list`` lists them).

Each example is a module of this package with a one-line ``TITLE``, an ``add_arguments(parser)``
for its own options and a ``run(args)`` that trains, prints what it trains, a progress bar and its
final figures, writes its pictures (with the ``plot`` extra) into ``--output-dir`` and returns a
dict of those figures (the tests run the examples on reduced settings through it).
"""
import argparse
import importlib
import os

from ..cli import non_negative_int

#: name -> module (in the order ``--list`` shows them)
EXAMPLES = {
    "char-lstm": "char_lstm",
    "transformer": "transformer",
    "autoencoder": "autoencoder",
    "vae": "vae",
    "gan": "gan",
    "cgan": "cgan",
    "word2vec": "word2vec",
}


def check_sizes(args, names):
    """Each option in ``names`` (argparse dests) must be at least 1: a ValueError naming it."""
    for name in names:
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got "
                             f"{getattr(args, name)}")


def load(name):
    """The example module ``name``."""
    if name not in EXAMPLES:
        raise ValueError(f"unknown example {name!r}; the examples are "
                         f"{', '.join(EXAMPLES)} (numbanet example --list)")
    return importlib.import_module(f"{__name__}.{EXAMPLES[name]}")


def parser_for(name):
    """The argument parser of example ``name``: the common options, then its own."""
    module = load(name)
    p = argparse.ArgumentParser(prog=f"numbanet example {name}", description=module.TITLE)
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--output-dir", default=".", help="where the pictures go (default: here)")
    p.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2))
    module.add_arguments(p)
    return p


def run(name, argv=()):
    """Run example ``name`` with command-line arguments ``argv``; returns its figures."""
    args = parser_for(name).parse_args(list(argv))
    if not os.path.isdir(args.output_dir):
        raise ValueError(f"--output-dir {args.output_dir!r} is not a directory")
    return load(name).run(args)


def listing():
    """(name, title) of every example."""
    return [(name, load(name).TITLE) for name in EXAMPLES]


def english_text(limit=None):
    """English prose that ships with Python: the pydoc topic texts (the Python documentation's
    sections behind ``help()``), joined in a fixed order; ``limit`` characters at most."""
    from pydoc_data import topics
    text = "\n\n".join(topics.topics[k].strip() for k in sorted(topics.topics))
    return text if limit is None else text[:limit]
