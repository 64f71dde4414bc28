#!/usr/bin/env bash
# The grid's word 3-gram LMs (malsori lm train-ngram, interpolated modified Kneser-Ney), one per text of
# make_sets.py, every test and dev sentence excluded again (--exclude): OUT/arpa/<text>.arpa.gz.
# Run from the repository root: bash experiments/lm/train_lms.sh /work/exp-lmgrid
set -euo pipefail
OUT=${1:-/work/exp-lmgrid}
PY=${PY:-/work/main/.venv/bin/python}
mkdir -p "$OUT/arpa"
excl=(); for f in "$OUT"/sets/*_test.txt "$OUT"/sets/*_dev.txt; do case $f in */hotwords_*) ;; *) excl+=(--exclude "$f");; esac; done
for t in "$OUT"/text/*.txt; do
  name=$(basename "$t" .txt)
  [ -s "$OUT/arpa/$name.arpa.gz" ] && continue
  /usr/bin/time -f "$name: %e s wall, %U s user" nice -n 19 $PY -m malsori.cli lm train-ngram "$t" --order 3 \
    --out "$OUT/arpa/$name.arpa.gz" "${excl[@]}"
done
