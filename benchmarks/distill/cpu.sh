#!/usr/bin/env bash
# The distillation benchmark of issue 16 on this CPU (benchmarks/results.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
P=.venv/bin/python
OUT=runs/distill
[ -d data/demo-cifar10 ] || $P tools/convert.py demo/cifar10-sample.tar.gz data/demo-cifar10
TEACHER=$OUT/teacher-mocov2-r18w32
[ -f $TEACHER/summary.json ] || $P recipes/mocov2.py --data data/demo-cifar10 --preset demo --run.out-dir $OUT \
    --run.name teacher-mocov2-r18w32 --model.width 32 --optim.epochs 20 --run.knn-every-epochs 5 --run.no-progress-bar
STUDENT="--data data/demo-cifar10 --run.out-dir $OUT --model.arch mobilenet_v2 --model.bn-splits 2 \
    --optim.batch-size 64 --optim.epochs 8 --optim.lr-per-256 0.24 --optim.weight-decay 5e-4 --optim.warmup-epochs 1 \
    --run.knn-every-epochs 4 --run.log-every-steps 10 --run.no-progress-bar"
[ -f $OUT/alone-mocov2-mnv2/summary.json ] || $P recipes/mocov2.py $STUDENT --run.name alone-mocov2-mnv2 --method.queue-size 1024
[ -f $OUT/seed-mnv2/summary.json ] || $P recipes/seed.py $STUDENT --run.name seed-mnv2 --method.teacher $TEACHER --method.queue-size 1024
[ -f $OUT/disco-mnv2/summary.json ] || $P recipes/disco.py $STUDENT --run.name disco-mnv2 --method.teacher $TEACHER --method.queue-size 1024
$P tools/report.py $OUT --out $OUT/report
