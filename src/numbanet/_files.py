"""Writing files so that a failure never clobbers the previous one."""
import os
import tempfile


def atomic_write(path, write):
    """Call ``write(binary file)`` on a temporary file beside ``path``, then move it into place.

    A failed or interrupted write leaves any previous file untouched. The new file gets the
    permissions an ordinary ``open`` would give it (0666 less the umask). Returns ``path``.
    """
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(prefix=".numbanet-", suffix=".tmp",
                               dir=os.path.dirname(os.path.abspath(path)))
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
