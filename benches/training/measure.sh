#!/bin/bash
# measure.sh NAME BIN [bsa train args...]: train on WordNet base, eval on queries, build, search, recall.
set -e
NAME=$1; BIN=$2; shift 2
S=${S:-/work/shared/data/wordnet-minilm}
D=${RUNS:-runs}/$NAME
mkdir -p $D
P=${PYTHON:-python3}
R=$(dirname "$0")/recall.py
export OPENBLAS_NUM_THREADS=1
nice $BIN train --data $S/base.npy --bits 1024 --k 32 "$@" --quiet --json --out $D/model.safetensors > $D/train.json
nice $BIN eval --model $D/model.safetensors --data $S/query.npy --json > $D/eval.json
rm -rf $D/idx
nice $BIN build --model $D/model.safetensors --data $S/base.npy --vectors --out $D/idx 2>/dev/null
nice $BIN search --index $D/idx --queries $S/query.npy --k 10 --out $D/ham.jsonl
nice $BIN search --index $D/idx --queries $S/query.npy --k 10 --score adc --out $D/adc.jsonl
nice $BIN search --index $D/idx --queries $S/query.npy --k 10 --rescore 4 --out $D/ham_r4.jsonl
nice $BIN search --index $D/idx --queries $S/query.npy --k 10 --score adc --rescore 4 --out $D/adc_r4.jsonl
{
echo "{\"name\": \"$NAME\", \"args\": \"$*\","
echo "\"hamming\": $($P $R $D/ham.jsonl $S/gt_top100.npy), \"adc\": $($P $R $D/adc.jsonl $S/gt_top100.npy),"
echo "\"hamming_r4\": $($P $R $D/ham_r4.jsonl $S/gt_top100.npy), \"adc_r4\": $($P $R $D/adc_r4.jsonl $S/gt_top100.npy),"
echo "\"eval\": $(cat $D/eval.json),"
echo "\"train\": $(jq -c '{epochs_run: (.history|length), seconds, validation_loss, validation_active_mean, best_epoch, stopped_early}' $D/train.json)}"
} | jq -c . > $D/result.json
cat $D/result.json
rm -rf $D/idx $D/*.jsonl
