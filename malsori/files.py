"""Saved files' checksums, and file modes that follow the user's umask: temporary files and folders (mkstemp,
mkdtemp) and safetensors' files are created private (0600/0700); what is renamed into place from them must be readable
as a plain `open`/`mkdir` makes it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def current_umask() -> int:
    """The process's umask, read without changing it where /proc allows (changing it races with other threads)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(path: str | os.PathLike) -> None:
    """Give a file, or a folder and everything under it, the modes a plain create gives under the umask (0644/0755 for
    umask 022). Links are left alone."""
    path = Path(path)
    mask = current_umask()
    todo = [path]
    while todo:
        p = todo.pop()
        if p.is_symlink():
            continue
        if p.is_dir():
            os.chmod(p, 0o777 & ~mask)
            todo.extend(p.iterdir())
        else:
            os.chmod(p, 0o666 & ~mask)


def sha256_of(path: str | os.PathLike) -> str:
    """The file's SHA-256, hex (stored beside saved weights to detect corruption)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
