#!/usr/bin/env bash
# The project's model measured on a GPU host that has JAX, PyTorch and CUDA but no TensorFlow, in one command.
#
#   benchmarks/gpu/fetch_wheels.sh          # first, on a machine that reaches PyPI: Keras' wheels into wheels/
#   benchmarks/gpu/run.sh                   # then on the GPU host, from the checkout's root; figures in $OUT
#   PYTHON=/tmp/gpuvenv/bin/python OUT=/tmp/gpu-out benchmarks/gpu/run.sh --image-size 64 --steps 2 --fc-units 64
#                                           # a rehearsal on a CPU, in a virtual environment without TensorFlow
#
# It installs Keras and pydantic with what they need from wheels/ (pip --no-index, into $SITE, default /tmp/site),
# then runs, each stage within its own time limit and all within --budget seconds (a stage that would start with less
# than 20 s left is skipped; each JSON file is rewritten after every measurement, so a stage cut short keeps what it
# measured):
#   1. env.json          versions, devices, nvidia-smi, whether TensorFlow is installed
#   2. steps_bf16.json   Keras on JAX, the paper's network (configs/imagenet2012.yaml), mixed_bfloat16, batch 128
#                        and 512, grouped convolutions as towers and native (python -m pipeline.benchmark --backend jax)
#   3. loss.json         50 training steps on one fixed batch (128x128, batch 32: small enough to compare with the
#                        same run on a CPU, benchmarks/gpu/cpu_reference_loss.json: the paper's initialisation),
#                        float32 and mixed_bfloat16: the loss every 10 steps
#   4. torch.json        the PyTorch peer, bfloat16, batch 512, eager and torch.compile
#   5. steps_fp32.json   as 2 in float32
#   6. steps_lrn.json    bfloat16, batch 512, towers, with the banded LRN instead of the device's default
# and prints a summary of them all (benchmarks/gpu/report.py). Everything printed also goes to $OUT/run.log.
#
# Options: --image-size N (224)  --batch-sizes "128 512"  --steps N (20)  --warmup N (3)  --repeats N (3)
#          --fc-units N (4096)  --loss-steps N (50)  --loss-image-size N (128)  --loss-batch-size N (32)
#          --torch-batch-size N (512)
#          --budget SECONDS (480)
set -uo pipefail
cd "$(dirname "$0")/../.."

image=224 batches="128 512" steps=20 warmup=3 repeats=3 fc=4096 loss_steps=50 loss_image=128 loss_batch=32
torch_batch=512 budget=480
while (( $# )); do
    case $1 in
        --image-size) image=$2 ;;
        --batch-sizes) batches=$2 ;;
        --steps) steps=$2 ;;
        --warmup) warmup=$2 ;;
        --repeats) repeats=$2 ;;
        --fc-units) fc=$2 ;;
        --loss-steps) loss_steps=$2 ;;
        --loss-image-size) loss_image=$2 ;;
        --loss-batch-size) loss_batch=$2 ;;
        --torch-batch-size) torch_batch=$2 ;;
        --budget) budget=$2 ;;
        *) echo "error: unknown option $1 (see the comment at the top of $0)" >&2; exit 2 ;;
    esac
    shift 2 || { echo "error: $1 needs a value" >&2; exit 2; }
done

PY=${PYTHON:-python3}
OUT=${OUT:-$PWD/gpu-out}
SITE=${SITE:-/tmp/site}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/run.log") 2>&1
start=$(date +%s)

stage() {  # stage NAME CAP COMMAND...: runs COMMAND for at most CAP seconds, fewer when the budget is nearly spent
    local name=$1 cap=$2
    shift 2
    local left=$((budget - ($(date +%s) - start)))
    local limit=$((cap < left ? cap : left))
    if ((limit < 20)); then
        echo "== $name: skipped, ${left}s of the budget left"
        return
    fi
    echo "== $name (at most ${limit}s): $*"
    local began=$(date +%s)
    timeout --kill-after=10 "$limit" "$@"
    echo "== $name: exit status $? after $(($(date +%s) - began))s"
}

echo "== installing Keras and pydantic from wheels/ into $SITE"
"$PY" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
    --find-links wheels keras namex optree pydantic pydantic-core annotated-types typing-inspection typing-extensions \
    pyyaml || {
    echo "error: wheels/ lacks wheels for this Python: run benchmarks/gpu/fetch_wheels.sh where PyPI is reached"
    exit 2
}
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
export KERAS_BACKEND=jax  # Keras' default is TensorFlow, which is not there
"$PY" -c "import keras, jax; print('keras', keras.__version__, 'jax', jax.__version__)" || {
    echo "error: Keras does not import here (a dependency missing from this Python?)"
    exit 2
}

keras=("$PY" -m pipeline.benchmark --backend jax --config configs/imagenet2012.yaml --steps "$steps" --warmup "$warmup"
       --repeats "$repeats" --set "model.fc_units=$fc")
# The model cpu_reference_loss.json was measured with: the paper's initialisation, inputs not divided by a std.
reference=(--set model.init=paper --set "model.std=[1.0, 1.0, 1.0]")
stage "host" 60 "$PY" benchmarks/gpu/report.py env "$OUT/env.json"
stage "Keras on JAX, bfloat16" 180 "${keras[@]}" --set "data.image_size=$image" --no-torch --precision mixed_bfloat16 \
    --batch-size $batches --grouped-conv towers native --json "$OUT/steps_bf16.json"
stage "loss check" 120 "${keras[@]}" "${reference[@]}" --set "data.image_size=$loss_image" --no-torch --no-timing \
    --loss-steps "$loss_steps" --loss-batch-size "$loss_batch" --precision float32 mixed_bfloat16 \
    --json "$OUT/loss.json"
stage "PyTorch peer" 180 "${keras[@]}" --set "data.image_size=$image" --torch --torch-compile --no-timing \
    --precision mixed_bfloat16 --batch-size "$torch_batch" --json "$OUT/torch.json"
stage "Keras on JAX, float32" 150 "${keras[@]}" --set "data.image_size=$image" --no-torch --precision float32 \
    --batch-size $batches --grouped-conv towers native --json "$OUT/steps_fp32.json"
stage "LRN forms" 90 "${keras[@]}" --set "data.image_size=$image" --no-torch --precision mixed_bfloat16 \
    --batch-size "$torch_batch" --grouped-conv towers --lrn-implementation banded --json "$OUT/steps_lrn.json"

echo "== summary, $(($(date +%s) - start))s in all"
"$PY" benchmarks/gpu/report.py summary "$OUT"
