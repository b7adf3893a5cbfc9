#!/usr/bin/env bash
# The one command for a GPU machine that has only this repository's files (no internet):
#
#   bash benchmarks/gpu.sh prepare        # HERE, on the development machine: puts the CIFAR-10
#                                         # tarball and the wheels the GPU image lacks in .gpu/
#   bash benchmarks/gpu.sh [bench args]   # THERE (carry .gpu): in about 9 minutes, the checks and
#                                         # the benchmark, each stage timed and logged; a failing
#                                         # stage does not stop the next
#   bash benchmarks/gpu.sh train [recipe args]   # THERE: a 200-epoch MoCo v2 run in ≤ 8.5-minute
#                                         # slices; call again on the warm machine to resume
#
# The stages, most informative first, so a lease cut short still tells the most:
#   kernels  the native kernel tests: the fused view kernel and the fused InfoNCE against
#            their references on the GPU (seconds)
#   bench    benchmarks/gpu.py: SimCLR, MoCo v2, BYOL; no method starts after 5 minutes
#   step     the other GPU tests: the compiled, graph-captured step against eager, and no
#            host synchronisation in a step
# Results go to $OUT when the device tool sets it (else benchmarks/): gpu.md, gpu.json,
# summary.txt and a log per stage, each written as soon as it exists. .gpu/ is git-ignored
# (the CIFAR-10 tarball is 19 MB, the wheels < 1 MB).
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = prepare ]; then
    set -e
    mkdir -p .gpu/wheels
    cp ../shared/data/cifar10-jpeg.tar.gz .gpu/
    # tyro and its two small dependencies are the only imports the GPU image lacks.
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux2014_x86_64 --platform any -d .gpu/wheels \
        tyro docstring-parser typeguard
    exit 0
fi

# Every stage ends by the deadline, counted from here (the device tool's commands stop at
# 10 minutes).
deadline=$(( $(date +%s) + ${GPU_SH_SECONDS:-570} ))
results=${OUT:-benchmarks}
mkdir -p "$results"
summary=$results/summary.txt

python3 -c "import tyro" 2>/dev/null || {
    python3 -m pip install --quiet --no-index --no-deps --target /tmp/fastssl-site .gpu/wheels/*.whl
    export PYTHONPATH=/tmp/fastssl-site${PYTHONPATH:+:$PYTHONPATH}
}
[ -d .gpu/cifar10 ] || python3 tools/convert.py .gpu/cifar10-jpeg.tar.gz .gpu/cifar10 || exit 2

if [ "${1:-}" = train ]; then
    shift
    resume=(); [ -f runs/gpu-mocov2/checkpoint.pt ] && resume=(--resume)
    python3 recipes/mocov2.py --data .gpu/cifar10 --run.name gpu-mocov2 \
        --run.stop-after-minutes 8.5 --run.no-progress-bar "${resume[@]}" "$@" 2>&1 | tee "$results/train.log"
    status=${PIPESTATUS[0]}
    cp runs/gpu-mocov2/summary.json runs/gpu-mocov2/metrics.jsonl "$results/" 2>/dev/null
    exit "$status"
fi

# stage NAME SECONDS COMMAND…: run COMMAND for at most SECONDS and not past the deadline
# (SIGINT, so pytest still prints its summary; SIGKILL 20 s later), its output to the
# screen and to NAME.log, its status and time to summary.txt.
stage() {
    local name=$1 limit=$2 start
    shift 2
    start=$(date +%s)
    (( limit > deadline - start - 20 )) && limit=$(( deadline - start - 20 ))
    if (( limit < 30 )); then
        echo "$name: not run, ${limit} s left before the deadline" | tee -a "$summary"
        return
    fi
    echo "== $name (≤ $limit s): $*"
    timeout -s INT -k 20 "$limit" "$@" 2>&1 | tee "$results/$name.log"
    echo "$name: exit ${PIPESTATUS[0]} after $(( $(date +%s) - start )) s" | tee -a "$summary"
}

{
    date -u +"%F %T UTC"
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader
    python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
} 2>&1 | tee "$summary"

gpu_tests=(python3 -m pytest -q -m gpu -p no:cacheprovider)
stage kernels 180 "${gpu_tests[@]}" tests/kernels tests/pipelines
stage bench 420 python3 benchmarks/gpu.py --data .gpu/cifar10 --budget-minutes 5 --out "$results/gpu" "$@"
stage step 240 "${gpu_tests[@]}" tests --ignore=tests/kernels --ignore=tests/pipelines
