#!/usr/bin/env bash
# Issue #13's transducer and attention rows on real speech (experiments/lm/bench_families.py), one process per model:
# μ (ILME) chosen on 40 dev utterances (speechocean762 train speakers held out from en-small's training), then the
# 150 speechocean762 test utterances of gpt_fusion.md with the CTC-tuned λ, β (n-gram 0.5, 2; GPT fusion 0.5, 0;
# GPT rescoring 0.5, 1). The heads come from experiments/lm/train_heads.py. Run from the repository root:
#   bash experiments/lm/bench_families.sh dev|test /work/exp-lmfam
set -euo pipefail
STAGE=$1
OUT=${2:-/work/exp-lmfam}
PY=${PY:-/work/main/.venv/bin/python}
DEV=${DEV:-/work/main/exp/realspeech/data/dev_real.jsonl}
TEST=../shared/data/speechocean762_test_sample/manifest.jsonl
ARPA=/work/cache/lm/tatoeba3.arpa.gz
GPT=/work/exp-lmfuse/gpt_char_en_small/model
run() {  # model, extra flags...
  PYTHONPATH=$PWD OMP_NUM_THREADS=1 nice -n 19 $PY experiments/lm/bench_families.py --models "$OUT/$1/model" \
    --arpa $ARPA --ngram 0.5,2 --ilm 0.1 0.3 "${@:2}"
}
if [ "$STAGE" = dev ]; then
  for m in transducer attention; do
    run $m --manifest $DEV --limit 40 --out "$OUT/dev40_$m.json" > "$OUT/dev40_$m.log" 2>&1 &
  done
else
  run transducer --manifest $TEST --limit 150 --gpt $GPT --gpt-fusion 0.5,0 --gpt-rescore 0.5,1 \
    --lm-text ../shared/data/text/english/tatoeba_eng_sentences.txt --out "$OUT/so762_150_transducer.json" > "$OUT/so762_150_transducer.log" 2>&1 &
  # the attention searches are ~5x slower: no ILME rows in the first process, then only the μ dev chose (MU_ATT)
  run attention --manifest $TEST --limit 150 --gpt $GPT --gpt-fusion 0.5,0 --gpt-rescore 0.5,1 \
    --skip "n-gram fusion + ILME" "GPT fusion + ILME" --lm-text ../shared/data/text/english/tatoeba_eng_sentences.txt \
    --out "$OUT/so762_150_attention.json" > "$OUT/so762_150_attention.log" 2>&1 &
  run attention --manifest $TEST --limit 150 --gpt $GPT --gpt-fusion 0.5,0 --ilm "${MU_ATT:-0.3}" \
    --skip "no LM" "n-gram fusion" "GPT fusion" "GPT rescoring" \
    --out "$OUT/so762_150_attention_ilme.json" > "$OUT/so762_150_attention_ilme.log" 2>&1 &
fi
wait
