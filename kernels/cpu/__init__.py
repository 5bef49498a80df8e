from . import _jit  # noqa: F401  (installs the cross-process compile lock; see _jit.py)
