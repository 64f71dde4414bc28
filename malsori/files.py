"""Files that are saved right: modes that follow the user's umask (mkstemp/mkdtemp and safetensors create private
0600/0700 files; what is renamed into place must be readable as a plain `open`/`mkdir` makes it), checksums of saved
weights, and strict JSON (never NaN or Infinity, which other JSON readers refuse)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
from pathlib import Path

from malsori.errors import MalsoriError


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


def create_temp_file(folder: Path, prefix: str, suffix: str = ".tmp") -> tuple[int, Path]:
    """A new file in `folder` opened for writing (fd, path), created with mode 0666 less the umask, as open() does."""
    for _ in range(100):
        path = Path(folder) / f"{prefix}{secrets.token_hex(6)}{suffix}"
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666), path
        except FileExistsError:
            continue
    raise FileExistsError(f"{folder}: cannot find a free temporary file name")


def _non_finite(obj, key: str = "") -> str | None:
    """The key path (`words[0].start`) of the first NaN or Infinity in a JSON-like object, or None."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return key or "value"
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    for k, v in items:
        found = _non_finite(v, f"{key}[{k}]" if isinstance(k, int) else f"{key}.{k}" if key else str(k))
        if found:
            return found
    return None


def strict_json(obj, where: str, **kwargs) -> str:
    """json.dumps without NaN/Infinity (allow_nan=False); a non-finite number is a MalsoriError naming `where` and
    the field."""
    try:
        return json.dumps(obj, allow_nan=False, ensure_ascii=False, **kwargs)
    except ValueError:
        raise MalsoriError(f"{where}: field '{_non_finite(obj)}' is not a finite number; refusing to write NaN or "
                           "Infinity as JSON") from None


def read_json(path: str | os.PathLike, error: type[MalsoriError] = MalsoriError, what: str = "not valid JSON"):
    """Parse a JSON file; an unreadable, undecodable or invalid one is one `error` line naming it (`what` says why)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"{path}: {what} ({str(e).splitlines()[0]})") from None
