"""Writing files so that a failure never clobbers the previous one."""
import os
import tempfile


def atomic_write(path, write):
    """Call ``write(binary file)`` on a temporary file beside ``path``, then move it into place.

    A failed or interrupted write leaves any previous file untouched. The new file gets the
    permissions an ordinary ``open`` would give it (0666 less the umask). Returns ``path``.
    """
    path = os.fspath(path)
    check_writable(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".numbanet-", suffix=".tmp",
                                   dir=os.path.dirname(os.path.abspath(path)))
    except OSError as e:
        raise type(e)(e.errno, f"cannot write {path!r}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def check_writable(path, what="file"):
    """Raise an OSError naming ``path`` unless a file can be written there: its directory
    exists (and is a directory we may write into) and the path is not a directory itself."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(2, f"cannot write {what} {path!r}: no such directory "
                                   f"{os.path.dirname(path) or '.'!r}")
    if os.path.isdir(path):
        raise IsADirectoryError(21, f"cannot write {what} {path!r}: it is a directory")
    if not os.access(folder, os.W_OK):
        raise PermissionError(13, f"cannot write {what} {path!r}: the directory is not writable")
    return path
