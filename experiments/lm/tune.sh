#!/usr/bin/env bash
# λ, β for the whole grid, chosen once on the mixed dev set (20 dev sentences of each domain, dev voices) with the
# general (literature, 1 M words) LM: malsori tune-lm. Run from the repository root: bash experiments/lm/tune.sh /work/exp-lmgrid
set -euo pipefail
OUT=${1:-/work/exp-lmgrid}
PY=${PY:-/work/main/.venv/bin/python}
OMP_NUM_THREADS=1 nice -n 19 $PY -m malsori.cli tune-lm en-small "$OUT/audio/dev_grid.jsonl" --lm "$OUT/arpa/general_L.arpa.gz" \
  --lm-weights 0.25,0.5,0.75,1.0 --word-bonuses 0,1,2,3 --device cpu --out "$OUT/tune_general_L.json"
