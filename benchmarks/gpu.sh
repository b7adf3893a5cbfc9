#!/usr/bin/env bash
# The one command for a GPU machine that has only this repository's files (no internet):
#
#   bash benchmarks/gpu.sh prepare        # HERE, on the development machine: puts the CIFAR-10
#                                         # tarball and the wheels the GPU image lacks in .gpu/
#   bash benchmarks/gpu.sh [bench args]   # THERE (carry .gpu): GPU tests, then benchmarks/gpu.py
#   bash benchmarks/gpu.sh train [recipe args]   # THERE: a 200-epoch MoCo v2 run in ≤ 9-minute
#                                         # slices; call again on the warm machine to resume
#
# .gpu/ is git-ignored (the CIFAR-10 tarball is 19 MB, the wheels < 1 MB); writes
# benchmarks/gpu.md and benchmarks/gpu.json.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = prepare ]; then
    mkdir -p .gpu/wheels
    cp ../shared/data/cifar10-jpeg.tar.gz .gpu/
    # tyro and its two small dependencies are the only imports the GPU image lacks.
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux2014_x86_64 --platform any -d .gpu/wheels \
        tyro docstring-parser typeguard
    exit 0
fi

python3 -c "import tyro" 2>/dev/null || {
    python3 -m pip install --quiet --no-index --no-deps --target /tmp/fastssl-site .gpu/wheels/*.whl
    export PYTHONPATH=/tmp/fastssl-site${PYTHONPATH:+:$PYTHONPATH}
}
[ -d .gpu/cifar10 ] || python3 tools/convert.py .gpu/cifar10-jpeg.tar.gz .gpu/cifar10

if [ "${1:-}" = train ]; then
    shift
    resume=(); [ -f runs/gpu-mocov2/checkpoint.pt ] && resume=(--resume)
    exec python3 recipes/mocov2.py --data .gpu/cifar10 --run.name gpu-mocov2 \
        --run.stop-after-minutes 9 --run.no-progress-bar "${resume[@]}" "$@"
fi

python3 -m pytest -q -m gpu -p no:cacheprovider
python3 benchmarks/gpu.py --data .gpu/cifar10 "$@"
