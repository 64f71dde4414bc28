"""Record a benchmark's markdown section in docs/benchmarks.md, replacing that section's previous run."""

from __future__ import annotations

import datetime
import re
import shlex
import sys
from pathlib import Path

from malsori.provenance import ROOT, git_commit, machine

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = "# malsori benchmarks\n\nEach section is rewritten by the script named in it; numbers are medians of repeated runs unless stated.\n"


def record(name: str, body: str, doc: Path = DOC) -> None:
    """Write `body` under a heading for `name` in `doc`, with the exact command, date and machine."""
    script = Path(sys.argv[0]).resolve()
    cmd = "python " + shlex.join([str(script.relative_to(ROOT)) if script.is_relative_to(ROOT) else str(script), *sys.argv[1:]])
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    rev = git_commit()
    section = (
        f"<!-- bench:{name} -->\n## {name}\n\n"
        f"- command: `{cmd}`\n- date: {now} (commit {rev or '?'})\n- machine: {machine()}\n\n{body.strip()}\n"
        f"<!-- /bench:{name} -->\n"
    )
    doc.parent.mkdir(parents=True, exist_ok=True)
    text = doc.read_text(encoding="utf-8") if doc.exists() else HEADER
    pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->\n", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    doc.write_text(text, encoding="utf-8")
    print(section)
