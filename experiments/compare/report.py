"""compare.md: the setup, the tables and plain-language findings read from the measured numbers (including claims
they do not bear out)."""

from __future__ import annotations

# Thresholds of the report's plain-language findings (absolute error-rate differences, 0..1).
UNLEARNED_WER = 0.9  # a model whose shortest-bucket WER is at least this has not learned enough to test length effects
DEGRADES = 0.10  # a WER rise from the shortest to the longest bucket of at least this counts as "degrades with length"
POOR_WER = 0.5  # if the best test WER is above this, every family is "still poor at this budget"
# The two sets error rate is read against length on: set key → how the report names it.
LENGTH_SETS = {"test": "inside the training lengths (test split)", "long": "on joined test utterances (long set)"}


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def findings(results: dict) -> list[str]:
    """Plain statements of what the measured numbers show, including claims they do not bear out."""
    fams = results["families"]
    minutes = results["config"]["minutes"]
    lines = []
    best = min(fams, key=lambda n: fams[n]["test"]["greedy"]["wer"])
    best_beam = min(fams, key=lambda n: fams[n]["test"]["beam"]["wer"])
    bw = fams[best]["test"]["greedy"]["wer"]
    lines.append(f"Lowest test WER: **{best}** with greedy search ({_pct(bw)}%), **{best_beam}** with beam search "
                 f"({_pct(fams[best_beam]['test']['beam']['wer'])}%).")
    if bw > POOR_WER:
        lines.append(f"**All models are still poor at this budget** (best greedy WER {_pct(bw)}% after {minutes:g} min each): "
                     "the ranking says which family learns fastest on this machine, not which is best when trained to "
                     "convergence, and the length comparison below is between under-trained models.")

    # the talk's claim, read twice: inside the training lengths (test split) and beyond them (joined utterances)
    lines += length_findings(fams, "test", results["corpus"]["test_edges"])
    lines += length_findings(fams, "long", results["long_set"]["edges"])
    if not any(f["decoder"] == "fixed" for f in fams.values()):
        lines.append("No fixed-vector family was trained, so the claim that it degrades with length was not tested.")
    beyond = results["long_set"]["beyond_train_max"]
    lines.append(f"{100 * beyond:.0f}% of the long set is longer than any training utterance "
                 f"(train max {results['corpus']['train_max_s']:.1f} s): errors there also measure length generalization.")

    gains = {n: fams[n]["test"]["greedy"]["wer"] - fams[n]["test"]["beam"]["wer"] for n in fams}
    helped = max(gains, key=gains.get)
    hurt = [n for n, g in gains.items() if g < 0]
    width = results["config"]["beam_size"]
    if gains[helped] > 0:
        s = (f"Beam search (width {width}) helps {helped} most ({_pct(fams[helped]['test']['greedy']['wer'])}% → "
             f"{_pct(fams[helped]['test']['beam']['wer'])}% WER).")
    else:
        s = f"Beam search (width {width}) lowers no family's test WER."
    if hurt:
        s += f" It is worse than greedy for {', '.join(hurt)}."
    lines.append(s)

    if len(fams) > 1:  # throughput and speed spreads need two families
        speed = {n: fams[n]["train"]["audio_sec_per_sec"] for n in fams}
        fast, slow = max(speed, key=speed.get), min(speed, key=speed.get)
        lines.append(f"Training throughput differs {speed[fast] / max(speed[slow], 1e-9):.1f}x: {fast} processes "
                     f"{speed[fast]:.0f} s of audio per second ({fams[fast]['train']['steps']} steps in the budget), {slow} "
                     f"{speed[slow]:.0f} ({fams[slow]['train']['steps']} steps): a matched wall-clock budget favours the fast families.")
        rtf = {n: fams[n]["test"]["greedy"]["rtf"] for n in fams}
        lines.append(f"Greedy decoding RTF ranges from {min(rtf.values()):.4f} ({min(rtf, key=rtf.get)}) to "
                     f"{max(rtf.values()):.4f} ({max(rtf, key=rtf.get)}).")

    real = {n: fams[n]["real"]["greedy"]["wer"] for n in fams if "real" in fams[n]}
    if real:
        rb = min(real, key=real.get)
        if real[rb] >= 0.8 and bw >= 0.8:
            lines.append(f"On real speech (speechocean762) the best greedy WER is {_pct(real[rb])}% ({rb}); as the models have "
                         "not learned the synthetic test split either, this says nothing yet about transfer to human speech.")
        elif real[rb] >= 0.8:
            lines.append(f"**No family transfers to real speech**: on speechocean762 the best greedy WER is {_pct(real[rb])}% "
                         f"({rb}) against {_pct(bw)}% on the synthetic test split. Trained only on eSpeak voices, the models "
                         "have never heard a human; the synthetic test split hides this domain gap.")
        else:
            lines.append(f"On real speech (speechocean762) the best greedy WER is {_pct(real[rb])}% ({rb}), against "
                         f"{_pct(fams[rb]['test']['greedy']['wer'])}% on the synthetic test split.")
    return lines


def length_findings(fams: dict, key: str, edges: list[float]) -> list[str]:
    """Whether the fixed-vector model degrades with length while the attention models hold, from the greedy duration
    buckets of set `key` (a LENGTH_SETS key, with bucket `edges`); on the long set also how attention models fail."""

    def delta(n: str) -> tuple[float, float]:
        b = fams[n][key]["greedy"]["buckets"]
        return b[0]["wer"], b[-1]["wer"]

    span = f"{edges[0]:.1f}–{edges[1]:.1f} s to {edges[-2]:.1f}–{edges[-1]:.1f} s"
    changes = ", ".join(f"{n} {_pct(delta(n)[0])}→{_pct(delta(n)[1])}" for n in fams)
    where = LENGTH_SETS[key]
    Where = where[0].upper() + where[1:]
    lines = [f"WER {where}, shortest to longest bucket ({span}): {changes}."]
    fixed = [n for n in fams if fams[n]["decoder"] == "fixed"]
    attn = [n for n in fams if fams[n]["head"] == "attention" and fams[n]["decoder"] != "fixed"]
    claim = f"{Where}, the claim that a fixed-vector decoder degrades with length while attention holds"
    if len(edges) < 3:
        return lines + [f"{Where}, all utterances fell into one duration bucket: nothing can be said about length."]
    if not fixed:
        return lines
    for f in fixed:
        s, l = delta(f)
        learned_attn = [a for a in attn if delta(a)[0] < UNLEARNED_WER]
        if s >= UNLEARNED_WER:
            lines.append(f"{claim} **cannot be tested**: {f} has not learned even the shortest utterances "
                         f"(WER {_pct(s)}%), so its flat curve is a floor, not robustness.")
            continue
        if l - s < DEGRADES:
            lines.append(f"{claim} is **not borne out**: the fixed-vector model {f} does not degrade with length "
                         f"({_pct(s)}% → {_pct(l)}%, less than {100 * DEGRADES:.0f} points).")
            continue
        if not learned_attn:
            lines.append(f"{f} degrades with length ({_pct(s)}% → {_pct(l)}%), but no attention model learned the short "
                         "utterances, so the contrast with attention is not tested.")
            continue
        worst_attn = max(delta(a)[1] - delta(a)[0] for a in learned_attn)
        if l - s >= worst_attn + DEGRADES:
            lines.append(f"{claim} is **borne out**: {f} degrades ({_pct(s)}% → {_pct(l)}%) by at least "
                         f"{100 * DEGRADES:.0f} points more than any attention model that learned "
                         f"({', '.join(learned_attn)}; largest change {100 * worst_attn:+.1f} points).")
        else:
            lines.append(f"{claim} is **not borne out**: {f} degrades ({_pct(s)}% → {_pct(l)}%) but attention models "
                         f"degrade about as much or more (largest change {100 * worst_attn:+.1f} points)."
                         + (" Attention decoders trained only on utterances up to the training maximum often lose "
                            "their alignment on longer inputs." if key == "long" else ""))
    for a in attn if key == "long" else []:  # how an attention model fails on joined inputs
        g = fams[a]["long"]["greedy"]
        if g.get("joined") and g["stopped_at_first_join"] >= 0.25 * g["joined"]:  # at the pause: not a bottleneck
            lines.append(f"{a} output exactly the first of the joined utterances and stopped there for "
                         f"{g['stopped_at_first_join']} of {g['joined']} joined inputs: it ends at the pause between utterances "
                         "(every training utterance ends after one), which is a failure to go on, not a bottleneck.")
        last = g["buckets"][-1]
        errors = sum(last.get(k, 0) for k in ("substitutions", "deletions", "insertions"))
        if errors and last["deletions"] / errors >= 0.5 and last["wer"] - delta(a)[0] >= DEGRADES:
            lines.append(f"{a}'s errors in the longest bucket are {100 * last['deletions'] / errors:.0f}% deletions "
                         f"({last['deletions']} of {last['words']} reference words left out): it drops words (stops early or "
                         "skips) rather than mishearing them.")
    return lines


def render_report(results: dict, plots: dict[str, str]) -> str:
    """compare.md: setup, tables, findings and the plots."""
    c, corpus, ls, fams = results["config"], results["corpus"], results["long_set"], results["families"]
    edges = ls["edges"]
    L = [
        "# Model families compared on one corpus",
        "",
        f"- command: `{results['command']}`",
        f"- date: {results['date']}" + (f" (commit {results['commit']})" if results["commit"] else ""),
        f"- machine: {results['machine']}",
        f"- budget: {c['minutes']:g} wall-clock minutes of training per family, {c['threads']} thread(s), seed {c['seed']}"
        + (f"; overrides: `{' '.join(c['overrides'])}`" if c["overrides"] else ""),
        f"- corpus: `{c['corpus']}`: {corpus['train_utterances']} training utterances ({corpus['train_hours']:.2f} h, "
        f"median {corpus['train_median_s']:.2f} s, max {corpus['train_max_s']:.2f} s), {corpus['test_utterances']} test utterances "
        "(also bucketed by duration, in multiples of half the training median)",
        f"- long set: {ls['utterances']} utterances of 1–{c['long_max_concat']} joined test utterances of one voice "
        f"({ls['min_s']:.1f}–{ls['max_s']:.1f} s, median {ls['median_s']:.1f} s; {100 * ls['beyond_train_median']:.0f}% longer than "
        f"the training median, {100 * ls['beyond_train_max']:.0f}% longer than the training maximum); decoded whole, never cut. "
        f"Bucket edges (multiples of the training median, buckets of at least {c['long_min_bucket']} utterances): "
        f"{', '.join(f'{e:.2f}' for e in edges)} s",
        "- real speech: " + (f"{results['real']['utterances']} evenly spaced utterances of `{results['real']['manifest']}`"
                             if "utterances" in results["real"] else results["real"]["skipped"]),
        "",
        "## What the numbers show",
        "",
        *[f"- **{n} failed** and is left out of every table: {msg}" for n, msg in results.get("failed", {}).items()],
        *[f"- {line}" for line in findings(results)],
        "",
        "## Families",
        "",
        "| family | what | params | peak lr | minutes | steps | epochs | train speed (audio s/s) | last logged loss |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, f in fams.items():
        t = f["train"]
        loss = "diverged (NaN)" if t.get("diverged") else "–" if t["final_loss"] is None else f"{t['final_loss']:.3g}"
        L.append(f"| {n} | {f['description']} | {f['params'] / 1e6:.2f} M | {f['lr']:g} | {t['minutes']:.2f} | {t['steps']} | "
                 f"{t['epochs']} | {t['audio_sec_per_sec']:.1f} | {loss} |")
    L += ["", f"## Test split (WER / CER %, RTF; beam width {c['beam_size']})", "",
          "| family | WER greedy | WER beam | CER greedy | CER beam | RTF greedy | RTF beam |", "|---|---:|---:|---:|---:|---:|---:|"]
    for n, f in fams.items():
        g, b = f["test"]["greedy"], f["test"]["beam"]
        L.append(f"| {n} | {_pct(g['wer'])} | {_pct(b['wer'])} | {_pct(g['cer'])} | {_pct(b['cer'])} | {g['rtf']:.4f} | {b['rtf']:.4f} |")
    for key, e, counts in (("test", corpus["test_edges"], corpus["test_bucket_counts"]),
                           ("long", edges, ls["bucket_counts"])):
        heads = [f"{e[i]:.1f}–{e[i + 1]:.1f} s (n={counts[i]})" for i in range(len(e) - 1)]
        L += ["", f"## Error rate against utterance length {LENGTH_SETS[key]} (greedy WER %, CER % in brackets)", "",
              "| family | " + " | ".join(heads) + " |", "|---|" + "---:|" * len(heads)]
        for n, f in fams.items():
            L.append(f"| {n} | " + " | ".join(f"{_pct(b['wer'])} ({_pct(b['cer'])})" for b in f[key]["greedy"]["buckets"]) + " |")
        if key == "long" and c["long_beam"]:
            L += ["", "Beam search on the long set (WER %):", "", "| family | " + " | ".join(heads) + " |",
                  "|---|" + "---:|" * len(heads)]
            for n, f in fams.items():
                L.append(f"| {n} | " + " | ".join(_pct(b["wer"]) for b in f["long"]["beam"]["buckets"]) + " |")
    if any("real" in f for f in fams.values()):
        L += ["", "## Real speech (speechocean762, WER / CER %, RTF)", "",
              "| family | WER greedy | WER beam | CER greedy | CER beam | RTF greedy |", "|---|---:|---:|---:|---:|---:|"]
        for n, f in fams.items():
            g, b = f["real"]["greedy"], f["real"]["beam"]
            L.append(f"| {n} | {_pct(g['wer'])} | {_pct(b['wer'])} | {_pct(g['cer'])} | {_pct(b['cer'])} | {g['rtf']:.4f} |")
    L += ["", "## Plots", "",
          f"![error rate against utterance length]({plots['error_vs_duration']})", "",
          "Dashed thick line: the fixed-vector model. Dotted verticals: training median and maximum duration. Left: the "
          "test split in buckets of half the training median; right: the long set in buckets of the training median.", "",
          f"![WER per family, greedy and beam]({plots['wer_by_family']})", "",
          f"![training loss]({plots['loss_curves']})", "",
          "Losses are per utterance and differ in kind by head (CTC, smoothed cross-entropy + CTC, RNN-T): compare "
          "shapes, not levels, across heads.", "",
          "RTF = decoding seconds / audio seconds (features + model + search, audio preloaded), measured with the same "
          "thread count on a machine that may be shared. Per-family numbers: `results.json`.", ""]
    return "\n".join(L)
