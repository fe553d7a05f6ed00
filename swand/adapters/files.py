"""Files swand writes as root: created without following links, with their final mode
from the first byte, and replaced atomically.

Why: a path in a world-writable folder (or a fixed temporary name next to the target)
lets another user plant a symlink that makes root overwrite any file. O_EXCL|O_NOFOLLOW
refuses an existing name or link, a random temporary name cannot be guessed, and
rename() replaces the target's directory entry (a planted link there is replaced, never
followed). Used for the PKI files (keys, certificates, the CRL) and the daemon's state.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_new(path: Path, data: bytes, mode: int) -> None:
    """Create `path` with `mode` from the first byte; raise FileExistsError if anything
    (a file, a link, even a dangling one) already has that name.

    O_EXCL makes "refuses to overwrite" race-free, and passing the mode to open() means
    there is no window in which a key is readable by others (umask can only narrow it).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def replace_file(path: Path, data: bytes, mode: int) -> None:
    """Atomically replace `path` (readers see the old or the new content) through a new
    file with a random name beside it; never follows a link at either name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    write_new(tmp, data, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
