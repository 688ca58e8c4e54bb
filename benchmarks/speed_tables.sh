#!/usr/bin/env bash
# The README's speed tables, one measurement after another on an otherwise idle machine, each output kept.
#
#   bash benchmarks/speed_tables.sh OUT [PHOTOS]     # PHOTOS: a folder of JPEGs (default: the 250-photo sample)
#
# The end-to-end fit reads JPEG records that pipeline.prepare writes from PHOTOS, dealt into 10 classes.
set -euo pipefail
out=${1:?an output folder}
photos=${2:-../shared/data/imagenet-sample}
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

run() {  # run NAME ARGS...: one benchmark, its command line and output in OUT/NAME.txt
    local name=$1; shift
    echo "$ python -m pipeline.benchmark $*" | tee "$out/$name.txt"
    python -m pipeline.benchmark "$@" 2>&1 | tee -a "$out/$name.txt"
}

(lscpu | grep -E "Model name|^CPU\(s\)"; python -c "import tensorflow as tf; print('TensorFlow', tf.__version__)"; \
 date -u +%F) > "$out/machine.txt"
i=0
for photo in "$photos"/*.JPEG; do
    mkdir -p "$work/photos/c$((i % 10))"
    ln -s "$(realpath "$photo")" "$work/photos/c$((i % 10))/"
    i=$((i + 1))
done
python -m pipeline.prepare --set "data.source=folder:$work/photos" --output "$work/records" > "$out/prepare.txt" 2>&1

run paper                                               # the quickstart's model: 128x128, batch 64
run single --groups 1
run paper_jit --jit
run paper224_records --config imagenet2012 --fit-source "records:$work/records" --steps 18
run paper224_b128 --config imagenet2012 --batch-size 128 --no-fit
TF_ENABLE_ONEDNN_OPTS=0 run paper_eigen --no-fit
run paper_bf16 --precision mixed_bfloat16 --no-fit
run paper_fp16 --precision mixed_float16 --no-fit
run grouped_tensorflow --backend tensorflow --batch-size 128 --precision float32 --grouped-conv towers native
run grouped_jax --backend jax --batch-size 128 --precision float32 --grouped-conv towers native
run input --input --repeats 3
