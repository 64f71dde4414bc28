"""Temporary files for atomic writes that get the user's umask (tempfile.mkstemp makes 0600 files, unreadable by a
colleague), and strict JSON (never NaN or Infinity, which other JSON readers refuse)."""

from __future__ import annotations

import json
import math
import os
import secrets
from pathlib import Path

from malsori.errors import MalsoriError


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
