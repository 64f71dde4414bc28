"""Record a benchmark's markdown section in docs/benchmarks.md, replacing that section's previous run."""

from __future__ import annotations

import datetime
import platform
import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = "# malsori benchmarks\n\nEach section is rewritten by the script named in it; numbers are medians of repeated runs unless stated.\n"


def machine() -> str:
    """A one-line description of this machine (CPU model, cores, torch version)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    try:
        import torch

        tv = f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    except ImportError:
        tv = "no torch"
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {tv}"


def record(name: str, body: str) -> None:
    """Write `body` under a heading for `name`, with the exact command, date and machine."""
    cmd = "python " + " ".join([Path(sys.argv[0]).as_posix().split("/main/")[-1], *sys.argv[1:]])
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=DOC.parent).stdout.strip()
    except OSError:
        rev = "?"
    section = (
        f"<!-- bench:{name} -->\n## {name}\n\n"
        f"- command: `{cmd}`\n- date: {now} (commit {rev or '?'})\n- machine: {machine()}\n\n{body.strip()}\n"
        f"<!-- /bench:{name} -->\n"
    )
    DOC.parent.mkdir(parents=True, exist_ok=True)
    text = DOC.read_text(encoding="utf-8") if DOC.exists() else HEADER
    pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->\n", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    DOC.write_text(text, encoding="utf-8")
    print(section)
