"""RNN-T loss: malsori's diagonal recursion with hand-written backward vs the textbook double loop over (t, u) with
autograd (the reference in tests/test_rnnt_loss.py), side by side in one run.

Measured per shape, forward + backward on CPU, float32:
- time: median wall time of several runs;
- peak RSS: rise of the process's peak resident memory (VmHWM, reset through /proc/self/clear_refs just before) during
  one forward+backward, each in a fresh subprocess after a tiny warm-up, over the resident memory with the inputs
  already allocated (includes the logits gradient, which every implementation must produce);
- saved: bytes of distinct tensor storages autograd keeps between forward and backward, the input logits excluded.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

from malsori.losses import rnnt_loss  # noqa: E402
from test_rnnt_loss import reference_rnnt_loss  # noqa: E402

SHAPES = [(4, 100, 20, 64), (4, 150, 30, 128), (4, 200, 40, 256)]  # B, T, U, V


def make_inputs(B: int, T: int, U: int, V: int):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(B, T, U + 1, V, generator=g)
    targets = torch.randint(1, V, (B, U), generator=g)
    T_b = torch.tensor([T - 7 * b for b in range(B)])  # unequal lengths, as in a real batch
    U_b = torch.tensor([U - 3 * b for b in range(B)])
    return logits, targets, T_b, U_b


def run_once(impl: str, logits: torch.Tensor, targets, T_b, U_b) -> None:
    x = logits.requires_grad_(True)
    loss = rnnt_loss(x, targets, T_b, U_b, reduction="sum") if impl == "malsori" else reference_rnnt_loss(x, targets, T_b, U_b).sum()
    loss.backward()
    x.grad = None


def saved_bytes(impl: str, logits: torch.Tensor, targets, T_b, U_b) -> int:
    """Distinct storages saved for backward (the input logits excluded)."""
    storages: dict[int, int] = {}
    x = logits.requires_grad_(True)

    def pack(t: torch.Tensor):
        s = t.untyped_storage()
        if s.data_ptr() != x.untyped_storage().data_ptr():
            storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = rnnt_loss(x, targets, T_b, U_b, reduction="sum") if impl == "malsori" else reference_rnnt_loss(x, targets, T_b, U_b).sum()
    loss.backward()
    return sum(storages.values())


def _status_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))


def child(impl: str, shape: tuple[int, int, int, int]) -> None:
    """In a fresh process: warm up on a tiny case, then report the peak-RSS rise of one forward+backward."""
    torch.set_num_threads(1)
    run_once(impl, *make_inputs(2, 10, 4, 8))
    inputs = make_inputs(*shape)
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    before = _status_kib("VmRSS")
    run_once(impl, *inputs)
    print(json.dumps({"peak_rss_kib": _status_kib("VmHWM") - before}))


def peak_rss_mib(impl: str, shape) -> float:
    out = subprocess.run([sys.executable, __file__, "--child", impl, *map(str, shape)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_kib"] / 1024


def timed(impl: str, shape, repeats: int) -> float:
    inputs = make_inputs(*shape)
    run_once(impl, *inputs)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run_once(impl, *inputs)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    from _record import record

    torch.set_num_threads(1)  # the benchmark machine is shared; one thread gives stable, comparable timings
    rows = []
    for shape in SHAPES:
        B, T, U, V = shape
        logits_mib = B * T * (U + 1) * V * 4 / 2**20
        res = {}
        for impl, reps in (("malsori", 7), ("reference", 3)):
            res[impl] = (timed(impl, shape, reps), peak_rss_mib(impl, shape), saved_bytes(impl, *make_inputs(*shape)) / 2**20)
        m, r = res["malsori"], res["reference"]
        rows.append(
            f"| {B}×{T}×{U + 1}×{V} ({logits_mib:.1f} MiB) | {m[0] * 1e3:.1f} | {r[0] * 1e3:.0f} | {r[0] / m[0]:.0f}× "
            f"| {m[1]:.1f} | {r[1]:.1f} | {m[2]:.2f} | {r[2]:.1f} |"
        )
        print(rows[-1], flush=True)
    body = (
        "Forward + backward of the RNN-T loss, float32 CPU, 1 thread, lengths unequal within the batch. "
        "malsori = `malsori.losses.rnnt_loss` (anti-diagonal recursion, hand-written alpha·beta backward); "
        "reference = textbook Python double loop over (t, u) with autograd (`tests/test_rnnt_loss.py`). "
        "Time: median (7 runs malsori, 3 reference). Peak RSS: rise of peak resident memory (VmHWM, reset just before) during one "
        "forward+backward in a fresh process over the RSS holding the inputs (includes the logits gradient). Saved: distinct tensor storages "
        "autograd keeps for backward, input logits excluded.\n\n"
        "| B×T×(U+1)×V (logits) | malsori ms | reference ms | speed-up | malsori peak RSS MiB | reference peak RSS MiB "
        "| malsori saved MiB | reference saved MiB |\n|---|---|---|---|---|---|---|---|\n" + "\n".join(rows)
    )
    record("rnnt_loss", body)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], tuple(int(a) for a in sys.argv[3:7]))
    else:
        main()
