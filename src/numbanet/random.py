"""One global random generator, so ``nb.seed(n)`` makes initialization, shuffling and dropout
reproducible."""
import numpy as np

_rng = np.random.default_rng()


def seed(n):
    """Seed numbanet's global generator (weights, shuffling, dropout masks)."""
    global _rng
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {n!r}")
    _rng = np.random.default_rng(int(n))


def get_rng():
    """The global generator (re-read after every ``seed``)."""
    return _rng


def spawn():
    """A new generator drawn from the global one (for a layer or a data loader of its own)."""
    return np.random.default_rng(_rng.integers(0, 2**63 - 1))
