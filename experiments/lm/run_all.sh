#!/usr/bin/env bash
# The whole measurement of experiments/lm, in order (each step skips what is already there):
# sets → speech → LMs → weights on dev → grid → report; hotwords. Run from the repository root:
#   bash experiments/lm/run_all.sh /work/exp-lmgrid
set -euo pipefail
OUT=${1:-/work/exp-lmgrid}
PY=${PY:-/work/main/.venv/bin/python}
export PYTHONPATH=$PWD OMP_NUM_THREADS=1
[ -s "$OUT/sets.json" ] || nice -n 19 $PY experiments/lm/make_sets.py --out "$OUT"
bash experiments/lm/synth_sets.sh "$OUT"
bash experiments/lm/train_lms.sh "$OUT"
[ -s "$OUT/tune_general_L.json" ] || bash experiments/lm/tune.sh "$OUT"
read -r LW WB < <($PY -c "import json,sys; c=json.load(open(sys.argv[1])); print(c['lm_weight'], c['word_bonus'])" "$OUT/tune_general_L.json")
nice -n 19 $PY experiments/lm/grid.py --out "$OUT" --lm-weight "$LW" --word-bonus "$WB"
nice -n 19 $PY experiments/lm/report_grid.py --out "$OUT" --plot docs/lm/domain_grid.png
nice -n 19 $PY experiments/lm/hotwords.py --out "$OUT"
