"""Prompted tasks: the task folder format, the few-shot prompt builder (never a test item among its examples),
scoring by the declared metric, k-shot evaluation and the commands."""

import json
from types import SimpleNamespace

import pytest

from malsori.errors import MalsoriError
from malsori.llm import builders
from malsori.llm.icl import evaluate_shots
from malsori.llm.prompts import PromptFormat, build_prompt, choose_examples, encode_prompt
from malsori.llm.scoring import as_error, score
from malsori.llm.taskfile import Item, TaskSpec, load_task, write_task
from malsori.pretrained import load_model_dir
from tests.helpers.llm import reverse_task, tiny_lm_dir


def _cli(*args):
    from click.testing import CliRunner

    from malsori.cli import main

    r = CliRunner().invoke(main, [str(a) for a in args])
    return SimpleNamespace(returncode=r.exit_code, stdout=r.stdout, stderr=r.stderr + (repr(r.exception) if r.exit_code == 1 else ""))


def test_task_folder_round_trip_and_disjointness_check(tmp_path):
    folder = reverse_task(tmp_path / "t")
    task = load_task(folder)
    assert task.spec == TaskSpec("reverse", "exact", "reverse the word")
    assert (len(task.train), len(task.valid), len(task.test)) == (40, 6, 6)
    assert {it.key for it in task.train}.isdisjoint(it.key for it in task.test + task.valid)
    write_task(tmp_path / "leak", task.spec, {"train": task.train, "test": task.test + [task.train[3]]})
    with pytest.raises(MalsoriError, match=r"test.jsonl: item .* is also in train.jsonl"):
        load_task(tmp_path / "leak")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "task.json").write_text('{"name": "x", "metric": "wer"}')
    with pytest.raises(MalsoriError, match="metric 'wer' is not one of"):
        load_task(tmp_path / "bad")
    (tmp_path / "bad" / "task.json").write_text('{"name": "x"}')
    (tmp_path / "bad" / "test.jsonl").write_text('{"input": "a", "output": "b"}\n{"input": "a"}\n')
    with pytest.raises(MalsoriError, match=r"test.jsonl:2: an item needs string fields input and output"):
        load_task(tmp_path / "bad")


def test_examples_never_hold_the_query_and_stay_in_its_group():
    pool = [Item(f"w{i}", f"v{i}", group=f"g{i % 3}") for i in range(30)]
    for query in pool[:12] + [Item("w5", "other", group="g2"), Item("new", "v7", group="g1")]:
        for k in (0, 1, 2, 4, 8, 50):
            ex = choose_examples(pool, query, k, seed=3)
            assert len(ex) == min(k, sum(1 for it in pool if it.group == query.group and it.input != query.input
                                        and it.output != query.output))
            assert all(e.group == query.group and e.input != query.input and e.output != query.output for e in ex)
            assert len(set(ex)) == len(ex)
    q = pool[4]
    assert choose_examples(pool, q, 4, 1) == choose_examples(pool, q, 4, 1)  # seeded by (seed, query)


def test_the_builder_keeps_test_items_out_of_real_task_prompts(tmp_path):
    spec, splits = builders.substitution_task([f"word{i}" for i in range(40)], episodes=20, seed=1)
    task = load_task(write_task(tmp_path / "sub", spec, splits))
    tok = load_model_dir(tiny_lm_dir(tmp_path / "lm")).tokenizer
    held = {it.key for it in task.test}
    for query in task.test:
        p = build_prompt(task, query, PromptFormat(shots=8), tok, budget=10_000)
        assert len(p.examples) == 8 and not held & {e.key for e in p.examples}
        assert p.text.splitlines()[-1] == f"{query.input} :"


def test_prompt_encoding_and_budget(tmp_path):
    task = load_task(reverse_task(tmp_path / "t"))
    tok = load_model_dir(tiny_lm_dir(tmp_path / "lm")).tokenizer
    eos = tok.special_ids.eos
    ids = encode_prompt(["abc : cba", "abd :"], tok)
    assert ids == [eos] + tok.encode("abc : cba") + [eos] + tok.encode("abd :")
    full = build_prompt(task, task.test[0], PromptFormat(shots=8, instruction=True), tok, budget=10_000)
    assert full.text.splitlines()[0] == "reverse the word" and len(full.examples) == 8
    short = build_prompt(task, task.test[0], PromptFormat(shots=8, instruction=True), tok, budget=len(full.ids) - 1)
    assert len(short.ids) < len(full.ids) and short.examples == full.examples[1:]  # the first examples go first


def test_scores_follow_the_declared_metric():
    assert score("exact", ["a b", "c"], ["a b ", "d"]) == 0.5
    assert score("cer", ["Hello."], ["hello"]) == pytest.approx(2 / 6)  # case and punctuation count
    assert score("chrf", ["le chat noir"], ["le chat noir"]) == pytest.approx(100)
    assert 0 < score("bleu", ["the cat sat on the mat"], ["the cat sat on a mat"]) < 100
    assert as_error("exact", 0.75) == 0.25 and as_error("chrf", 40.0) == pytest.approx(0.6) and as_error("cer", 0.1) == 0.1


def test_icl_evaluation_and_commands(tmp_path):
    lm, task_dir = tiny_lm_dir(tmp_path / "lm"), reverse_task(tmp_path / "t")
    m, task = load_model_dir(lm), load_task(task_dir)
    results = evaluate_shots(m.model, m.tokenizer, task, [0, 2], PromptFormat(), items=4, max_tokens=5)
    assert [(r.k, r.items, r.metric) for r in results] == [(0, 4, "exact"), (2, 4, "exact")]
    assert results[1].mean_shots == 2 and 0 <= results[1].value <= 1
    r = _cli("llm", "eval-icl", lm, task_dir, "--shots", "0,2", "--items", "4", "--max-tokens", "5", "--json")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["k"] for row in rows] == [0, 2] and rows[1]["value"] == pytest.approx(results[1].value)
    r = _cli("llm", "prompt", task_dir, "--shots", "3", "--instruction")
    lines = r.stdout.splitlines()
    assert r.returncode == 0 and len(lines) == 5 and lines[0] == "reverse the word" and lines[-1] == f"{task.test[0].input} :"
    (tmp_path / "p.txt").write_text(r.stdout)
    g = _cli("lm", "generate", lm, "--prompt-file", tmp_path / "p.txt", "--temperature", "0", "--max-tokens", "4")
    assert g.returncode == 0 and g.stdout.startswith(f"{task.test[0].input} :"), g.stderr
    bad = _cli("llm", "eval-icl", lm, task_dir, "--shots", "1,x")
    assert bad.returncode == 2 and "--shots" in bad.stderr


def test_loss_by_position_is_the_per_position_cross_entropy(tmp_path):
    import torch

    from malsori.llm.icl import loss_by_position

    m = load_model_dir(tiny_lm_dir(tmp_path / "lm", context=16)).model
    stream = torch.randint(3, 20, (16 * 5 + 3,))
    curve = loss_by_position(m, stream, windows=4, batch_size=3)
    assert curve.shape == (16,)
    x = stream[: 4 * 16].view(4, 16)
    y = stream[1 : 4 * 16 + 1].view(4, 16)
    direct = torch.nn.functional.cross_entropy(m(x).transpose(1, 2), y, reduction="none").mean(0)
    torch.testing.assert_close(curve.float(), direct, atol=1e-5, rtol=1e-5)


def test_reference_loss_scores_the_output_tokens_after_the_prompt(tmp_path):
    import torch

    from malsori.llm.icl import reference_loss
    from malsori.llm.prompts import target_ids

    m, task = load_model_dir(tiny_lm_dir(tmp_path / "lm")), load_task(reverse_task(tmp_path / "t"))
    got = reference_loss(m.model, m.tokenizer, task, [0, 2], PromptFormat(), items=3)
    assert [k for k, _ in got] == [0, 2]
    item = task.test[0]  # k = 0 by hand, one item: the prompt is eos + "input :"
    prompt, target = [m.tokenizer.special_ids.eos] + m.tokenizer.encode(f"{item.input} :"), target_ids(item, m.tokenizer)
    one = reference_loss(m.model, m.tokenizer, task, [0], PromptFormat(), items=1)[0][1]
    with torch.no_grad():
        logits = m.model(torch.tensor([prompt + target[:-1]]))[0, len(prompt) - 1 :]
    assert one == pytest.approx(float(torch.nn.functional.cross_entropy(logits, torch.tensor(target))), rel=1e-5)
