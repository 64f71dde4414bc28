"""Train with a budget of CPU seconds instead of wall-clock minutes, so families compared on a shared, loaded machine
get the same compute whatever else runs beside them. The run is killed when its process has used the budget, then
resumed with `max_steps` = its last checkpoint, which validates and writes the model folder (exact resume).

    python -m experiments.mt.budget --cpu-seconds 600 --out ../exp-mt/transformer -- mt/transformer_eng_fra key=value ...
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from malsori.checkpoint import list_checkpoints


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-seconds", type=float, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("train", nargs=argparse.REMAINDER, help="-- RECIPE key=value ... (as for malsori train)")
    args = ap.parse_args()
    recipe = [a for a in args.train if a != "--"]
    cmd = [sys.executable, "-m", "malsori.cli", "train", *recipe, f"out={args.out}", "progress=false"]
    t0 = time.time()
    proc = subprocess.Popen(cmd)
    used = 0.0
    while proc.poll() is None:
        try:
            used = cpu_seconds(proc.pid)
        except (OSError, IndexError):
            break
        if used >= args.cpu_seconds:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            break
        time.sleep(2)
    wall = time.time() - t0
    ckpts = list_checkpoints(args.out)
    if not ckpts:
        sys.exit(f"{args.out}: no checkpoint after {used:.0f} CPU seconds: give a larger budget or checkpoint more often")
    step = int(ckpts[-1].name.split("-")[-1])
    subprocess.run([*cmd, f"max_steps={step}"], check=True)  # resume at the last checkpoint: validate, write the model
    record = {"cpu_seconds_budget": args.cpu_seconds, "cpu_seconds_used": used, "wall_seconds": wall, "steps": step,
              "command": " ".join(cmd), "finished_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "load_average": os.getloadavg()}
    (args.out / "budget.json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
