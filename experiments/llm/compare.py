"""The LLM lessons measured on one base GPT: in-context learning against k, then prompt tuning vs LoRA vs full
fine-tuning (the same steps each) vs few-shot prompting on some tasks, then (optionally) instruction tuning with a
task left out. Runs one thing at a time; results go to OUT/results.json, appended as each part finishes, so a run
that stops resumes where it was. Run it once per base size and compare with `experiments.llm.plots --sizes`.

    python -m experiments.llm.compare --base /work/exp-llm/base/model --tasks /work/exp-llm/tasks --out /work/exp-llm/compare
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from malsori.llm.adapters import load_lm
from malsori.llm.icl import evaluate_shots, reference_loss
from malsori.llm.prompts import PromptFormat
from malsori.llm.taskfile import load_task

# method → (recipe, extra overrides)
METHODS = {"prompt": ("llm/prompt_tuning", []), "lora": ("llm/lora", []),
           "lora_qv": ("llm/lora", ["adapter.lora_targets=[q,v]"]), "full": ("llm/full_finetune", [])}


def _save(out: Path, results: dict) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False))


def _eval(model: str, task_dir: Path, ks: list[int], items: int, instruction: bool = False) -> list[dict]:
    m = load_lm(model)
    rows = evaluate_shots(m.model, m.tokenizer, load_task(task_dir), ks, PromptFormat(instruction=instruction), items)
    for r in rows:
        print(r.line(), flush=True)
    return [r.__dict__ for r in rows]


def _train(recipe: str, out: Path, overrides: list[str]) -> dict:
    """One `malsori train` run in a child process; its wall and CPU seconds."""
    start, cpu0 = time.time(), resource.getrusage(resource.RUSAGE_CHILDREN)
    cmd = [sys.executable, "-m", "malsori.cli", "train", recipe, f"out={out}", "progress=false", *overrides]
    print(" ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall_s": round(time.time() - start, 1), "cpu_s": round(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 1),
            "command": " ".join(cmd[1:])}


def _valid_loss(run: Path) -> float:
    """The output loss (nats per token, teacher-forced) of a run's last validation: steadier than a generated score."""
    rows = (run / "valid.csv").read_text().split()
    header, last = rows[0].split(","), rows[-1].split(",")
    return float(last[header.index("loss")])


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.suffix == ".safetensors")


def _positions(base: str, run: Path, stream_lines: list[str], windows: int = 64) -> list[dict]:
    """Loss by position on held-out text for each checkpoint of the base run (Olsson et al.'s ICL score)."""
    from safetensors.torch import load_file

    from malsori.llm.icl import loss_by_position
    from malsori.tasks.lm import encode_lines

    m = load_lm(base)
    stream = torch.from_numpy(encode_lines(stream_lines, m.tokenizer, normalized=False).tokens)
    rows = []
    for ckpt in sorted(run.glob("ckpt-*")):
        m.model.load_state_dict(load_file(str(ckpt / "model.safetensors")))
        curve = loss_by_position(m.model, stream, windows)
        step = int(ckpt.name.split("-")[1])
        early, late = float(curve[40:60].mean()), float(curve[490:510].mean())  # bands of 20 positions: less noise
        rows.append({"step": step, "curve": [round(float(v), 4) for v in curve], "loss_50": early, "loss_500": late,
                     "icl_score": late - early})
        print(f"step {step}: loss at 40-59 {early:.3f}, at 490-509 {late:.3f}, ICL score {late - early:+.3f}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True)
    ap.add_argument("--tasks", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--icl-tasks", default="substitution,linear,normalize,eng_fra,fra_eng,eng_kor")
    ap.add_argument("--shots", default="0,1,2,4,8")
    ap.add_argument("--icl-items", type=int, default=50)
    ap.add_argument("--tune-tasks", default="normalize,eng_fra", help="tasks the adapters are trained on, one run each")
    ap.add_argument("--seed", type=int, default=0, help="the adapter runs' seed (initialization, batch order)")
    ap.add_argument("--methods", default="prompt,lora,lora_qv,full", help=f"of {', '.join(METHODS)}")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--test-items", type=int, default=100)
    ap.add_argument("--parts", default="position,icl,tune,instruct", help="position, position_doc, icl, icl_nll, tune, instruct, mixture")
    ap.add_argument("--instruct-tasks", default="eng_fra,punctuate", help="the instruction-tuning mixture")
    ap.add_argument("--instruct-held-out", default="normalize", help="the task left out of the mixture, scored zero-shot")
    ap.add_argument("--instruct-steps", type=int, default=300)
    ap.add_argument("--instruct-kind", default="lora", choices=["lora", "full"], help="what instruction tuning trains")
    ap.add_argument("--base-run", type=Path, help="the base GPT's run folder: its checkpoints get the loss-by-position curve")
    ap.add_argument("--text", type=Path, help="the pretraining text; its held-out lines (every 200th) are scored by position")
    ap.add_argument("--running-text", type=Path,
                    help="held-out running text in document order (make_tasks' held_out_literature.txt): part position_doc")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    results.setdefault("load_before", os.getloadavg())
    ks = [int(k) for k in args.shots.split(",")]
    parts = args.parts.split(",")
    if "position" in parts and "position" not in results:  # held-out lines, each from a different place: no shared context
        from malsori.lm.text_files import iter_text_lines

        held = [ln for k, ln in enumerate(iter_text_lines([args.text])) if k % 200 == 199]
        results["position"] = _positions(args.base, args.base_run, held)
        _save(args.out, results)
    if "position_doc" in parts and "position_doc" not in results:  # running text: names and phrases recur
        lines = args.running_text.read_text(encoding="utf-8").splitlines()
        results["position_doc"] = _positions(args.base, args.base_run, lines, windows=128)
        _save(args.out, results)
    if "icl" in parts:
        for name in args.icl_tasks.split(","):
            if name not in results.get("icl", {}):
                results.setdefault("icl", {})[name] = _eval(args.base, args.tasks / name, ks, args.icl_items)
                _save(args.out, results)
    if "icl_nll" in parts:
        for name in args.icl_tasks.split(","):
            if name not in results.get("icl_nll", {}):
                m, task = load_lm(args.base), load_task(args.tasks / name)
                rows = reference_loss(m.model, m.tokenizer, task, ks, PromptFormat(), args.icl_items)
                print(f"{name}: reference loss by k: " + ", ".join(f"k={k} {v:.3f}" for k, v in rows), flush=True)
                results.setdefault("icl_nll", {})[name] = [{"k": k, "nats_per_token": v} for k, v in rows]
                _save(args.out, results)
    tune_tasks = args.tune_tasks.split(",")
    if "tune" in parts:
        for name in tune_tasks:
            tune = results.setdefault("tune", {}).setdefault(name, {})
            for method in args.methods.split(","):
                out = args.out / f"{name}_{method}"
                if method in tune:
                    continue
                recipe, extra = METHODS[method]
                run = _train(recipe, out, [f"base={args.base}", f"data.tasks=[{args.tasks / name}]", f"max_steps={args.steps}",
                                           "data.valid_items=50", f"seed={args.seed}", *extra])
                m = load_lm(out / "model")
                run["trainable"] = sum(p.numel() for p in m.model.parameters() if p.requires_grad or method == "full")
                run["bytes_on_disk"] = _size(out / "model")
                run["test"] = _eval(str(out / "model"), args.tasks / name, [0], args.test_items)[0]
                run["valid_output_loss"] = _valid_loss(out)
                tune[method] = run
                _save(args.out, results)
    # instruction tuning ("instruct") and its control ("mixture": the same tasks and steps, prompts without the
    # instruction line); both scored zero-shot on the held-out task with its instruction, as is the base
    def held_out_loss(model: str) -> float:
        """Teacher-forced loss of the held-out task's references after its instruction, zero-shot: a graded view."""
        m = load_lm(model)
        task = load_task(args.tasks / args.instruct_held_out)
        return reference_loss(m.model, m.tokenizer, task, [0], PromptFormat(instruction=True), args.test_items)[0][1]

    base_scores: dict = {}  # the base model's zero-shot score and reference loss on the held-out task, once
    for part, with_instruction in (("instruct", True), ("mixture", False)):
        if part not in parts or part in results:
            continue
        held_out = args.tasks / args.instruct_held_out
        if not base_scores:
            base_scores = {"before": _eval(args.base, held_out, [0], args.test_items, instruction=True)[0],
                           "before_loss": held_out_loss(args.base)}
        out = args.out / part
        mixture = ",".join(str(args.tasks / t) for t in args.instruct_tasks.split(","))
        run = _train("llm/instruction_tuning", out, [f"base={args.base}", f"data.tasks=[{mixture}]", f"max_steps={args.instruct_steps}",
                                                     "data.valid_items=30", f"data.instruction={str(with_instruction).lower()}",
                                                     f"adapter.kind={args.instruct_kind}"])
        after = _eval(str(out / "model"), held_out, [0], args.test_items, instruction=True)[0]
        results[part] = {"held_out": args.instruct_held_out, "mixture": args.instruct_tasks, "kind": args.instruct_kind,
                         "instruction_in_training": with_instruction, **base_scores, "after": after,
                         "after_loss": held_out_loss(str(out / "model")), **run}
        _save(args.out, results)
    results["load_after"] = os.getloadavg()
    _save(args.out, results)


if __name__ == "__main__":
    main()
