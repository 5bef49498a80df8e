"""``njit`` options shared by the CPU kernel modules."""

# A compiled helper that only other compiled functions call: no wrapper to call it from Python
# (cpython) or through a first-class function pointer (cfunc). Numba generates both for every
# function by default, and every caller that links a helper in optimizes and emits them again:
# about a tenth of the compile time of the convolution kernels. Calling such a helper from Python
# fails; give it plain ``cache=True`` if it must be callable from there.
HELPER = dict(cache=True, no_cpython_wrapper=True, no_cfunc_wrapper=True)


# ---------------------------------------------------------------------------------------------
# compiling beside other processes
# ---------------------------------------------------------------------------------------------
# Numba's on-disk cache is not safe when two processes compile one function at once: each reads
# the index, picks the same free data file for its own signature and writes it, so the index can
# end up naming another signature's machine code. MPI ranks, test workers and the compile helper
# (numbanet._compile_helper) all start on the same empty cache. Once numbanet is imported, a
# cached function (numbanet's kernels, and any other ``cache=True`` function of the process) is
# compiled under an advisory file lock (POSIX ``flock``) held beside its cache index: a second
# process waits, then loads what the first one saved instead of compiling it again. Lock order
# follows the call graph (a function locks the helpers it compiles after itself), which has no
# cycles, so two processes cannot deadlock; a process that dies releases its locks.
import contextlib
import os

try:
    import fcntl
except ImportError:                 # not POSIX: compile unlocked, as Numba does
    fcntl = None

from numba.core import event as _event, sigutils as _sigutils
from numba.core.compiler_lock import global_compiler_lock as _compiler_lock
from numba.core.dispatcher import Dispatcher as _Dispatcher

_held = set()                        # lock files this process holds (under Numba's compiler lock)


def _lock_path(dispatcher):
    """The lock file of a function cached on disk (None for one that is not)."""
    index = getattr(getattr(dispatcher._cache, "_cache_file", None), "_index_path", None)
    return None if index is None else index + ".lock"


def _locked_compile(compile_):
    def compile(self, sig):
        path = _lock_path(self) if fcntl is not None else None
        if path is None:
            return compile_(self, sig)
        with _compiler_lock:                 # one thread of this process compiles at a time
            if path in _held or tuple(_sigutils.normalize_signature(sig)[0]) in self.overloads:
                return compile_(self, sig)
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError:                  # cache directory not writable: nothing to protect
                return compile_(self, sig)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                _held.add(path)
                try:
                    return compile_(self, sig)
                finally:
                    _held.discard(path)
            finally:
                os.close(fd)                 # releases the lock
    compile.__wrapped__ = compile_
    return compile


if not hasattr(_Dispatcher.compile, "__wrapped__"):
    _Dispatcher.compile = _locked_compile(_Dispatcher.compile)


@contextlib.contextmanager
def first_compile(callback):
    """Within the block, ``callback()`` runs once, when the first numbanet kernel misses the
    on-disk cache and starts compiling (not at all on a warm start)."""
    fired = []

    class _Listener(_event.Listener):
        def on_start(self, ev):
            d = ev.data["dispatcher"]
            if not fired and _lock_path(d) is not None and \
                    getattr(d.py_func, "__module__", "").startswith("numbanet."):
                fired.append(True)
                callback()

        def on_end(self, ev):
            pass

    with _event.install_listener("numba:compile", _Listener()):
        yield
