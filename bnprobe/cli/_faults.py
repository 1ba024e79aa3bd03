"""A path the file system refuses, as the one line the command line prints: the path, the cause, a fix.

The options name the paths (``--out``, ``--data-root``, a results folder), so a folder that is read-only,
full, not the user's, or a name too long is bad input like any other, not a traceback.  The fix names
only options the failing command has (``bnprobe merge`` has no ``--resume``).
"""

from __future__ import annotations

import errno
from collections.abc import Collection


def fault_line(exc: OSError, flags: Collection[str]) -> str:
    """``exc`` (an ``OSError`` naming a file) as one line; ``flags`` are the options of the command that failed."""
    return f"cannot use {exc.filename}: {exc.strerror or exc}; {_fix(exc.errno, flags)}"


def _fix(code: int | None, flags: Collection[str]) -> str:
    """What to do about an ``OSError`` of ``code``, in the failing command's own flags."""
    other_out = ", or give another --out" if "--out" in flags else ""
    if code == errno.ENOSPC:
        again = " with --resume, which keeps what is already there" if "--resume" in flags else ""
        return f"free space on its disk, then run the command again{again}"
    if code == errno.EROFS:
        return "give --out a folder on a writable disk" if "--out" in flags else "write to a disk that is not read-only"
    if code in (errno.EACCES, errno.EPERM):
        return f"check its permissions{other_out}"
    if code == errno.ENAMETOOLONG:
        return f"give a shorter path{other_out}"
    return "check the paths given to this command"
