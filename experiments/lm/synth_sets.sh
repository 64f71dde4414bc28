#!/usr/bin/env bash
# Speech for the sets of make_sets.py: eSpeak NG with the accent x variant combinations that en-small's eSpeak
# corpus (exp/realspeech/espeak, seed 0, default voices) held out: *_test sets get its test voices, *_dev sets its
# dev voices, so en-small never trained on any voice used here. Then dev_grid.jsonl / dev_names.jsonl join the dev
# sets (absolute audio paths) for tuning. Run from the repository root: bash experiments/lm/synth_sets.sh /work/exp-lmgrid
set -euo pipefail
OUT=${1:-/work/exp-lmgrid}
PY=${PY:-/work/main/.venv/bin/python}
for f in "$OUT"/sets/*_test.txt "$OUT"/sets/*_dev.txt; do
  set_name=$(basename "$f" .txt); n=$(grep -c . "$f")
  case $set_name in hotwords_*) continue;; esac   # the name lists, not sentences
  case $set_name in *_test) counts="--num-dev 0 --num-test $n";; *) counts="--num-dev $n --num-test 0";; esac
  [ -s "$OUT/audio/$set_name/${set_name##*_}.jsonl" ] && continue
  OMP_NUM_THREADS=1 nice -n 19 $PY -m malsori.cli data synth --out "$OUT/audio/$set_name" --text "$f" --seed 0 \
    --num-train 0 $counts --workers 1 --quiet
done
$PY - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
def join(name, sets):
    with open(out / "audio" / name, "w") as w:
        for s in sets:
            m = out / "audio" / s / "dev.jsonl"
            for line in m.read_text().splitlines():
                u = json.loads(line); u["audio"] = str((m.parent / u["audio"]).resolve()); u["id"] = f"{s}-{u['id']}"
                w.write(json.dumps(u) + "\n")
join("dev_grid.jsonl", ["conversational_dev", "encyclopedic_dev", "nonfiction_dev"])
join("dev_names.jsonl", ["names_dev", "plain_dev"])
PY
