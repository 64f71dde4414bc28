#!/usr/bin/env bash
# Issue #13's decoding-cost rows on 300 speechocean762 test utterances in one run (benchmarks/bench_lm_decode.py):
# no LM, the Tatoeba word 3-gram fused (λ 0.5, β 2: fusion.md's dev choice), the char GPT fused (λ 0.5, β 0:
# gpt_fusion.md's dev choice), and pyctcdecode + kenlm on the same ARPA (PEERS_LIB: where they are installed).
# Run from the repository root: bash experiments/lm/bench_so762.sh /work/exp-lmgrid
set -euo pipefail
OUT=${1:-/work/exp-lmgrid}
PY=${PY:-/work/main/.venv/bin/python}
PEERS_LIB=${PEERS_LIB:-/work/exp-lmfuse/pylib}
PYTHONPATH=$PWD:$PEERS_LIB OMP_NUM_THREADS=1 nice -n 19 $PY benchmarks/bench_lm_decode.py \
  --manifest ../shared/data/speechocean762_test_sample/manifest.jsonl --limit 300 \
  --arpa /work/cache/lm/tatoeba3.arpa.gz --gpt /work/exp-lmfuse/gpt_char_en_small/model \
  --ngram 0.5,2 --gpt-fusion 0.5,0 --skip "GPT rescoring" "n-gram fusion + GPT rescoring" \
  --lm-text ../shared/data/text/english/tatoeba_eng_sentences.txt --out "$OUT/bench_so762_300.json"
