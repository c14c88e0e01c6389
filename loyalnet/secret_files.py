"""Writing secrets to disk: mode 0600 from the first byte, complete or not at all."""

from __future__ import annotations

import os
from pathlib import Path

SECRET_FILE_MODE = 0o600


def write_secret_file(path: Path, data: bytes) -> None:
    """Create ``path`` holding ``data``, readable and writable by the owner only.

    The bytes are written and synced under a temporary name, then hard-linked to ``path``, so
    a crash never leaves half a key and an existing file is never overwritten.

    Raises:
        FileExistsError: when ``path`` already exists (or appears meanwhile).
        OSError: when the folder cannot be written.
    """
    if path.exists():
        raise FileExistsError(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, SECRET_FILE_MODE)
        try:
            # The umask may only remove bits, but an inherited ACL or odd umask must not leave
            # the secret readable by others.
            os.fchmod(descriptor, SECRET_FILE_MODE)
            os.write(descriptor, data)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.link(temporary, path)
        _sync_folder(path.parent)
    finally:
        temporary.unlink(missing_ok=True)


def _sync_folder(folder: Path) -> None:
    # Without syncing the folder a crash could lose the new name even though the data is on disk.
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
