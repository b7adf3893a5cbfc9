#!/usr/bin/env bash
# A fastssl run as a SLURM job on several machines, requeued until it is done:
#
#   sbatch --nodes 2 configs/slurm-train.sh recipes/mocov2.py --data /data/cifar10 --optim.batch-size 4096
#
# One task per machine starts accelerate, which starts one process per GPU. 90 s before the
# time limit SLURM sends SIGTERM to the job step; accelerate's launcher (torch elastic)
# passes it to every process, and fastssl finishes its step, writes a checkpoint at it and
# exits with 143. The job then requeues itself and the next attempt resumes the run, whose
# folder (--run.name) is the same on every attempt. (Not run here: no SLURM cluster.)
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --signal=TERM@90
#SBATCH --open-mode=append
set -uo pipefail
recipe=$1
shift
main=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
gpus=${SLURM_GPUS_PER_NODE:-8}
name=${RUN_NAME:-slurm-$SLURM_JOB_ID}
resume=""
compgen -G "runs/$name/checkpoint*.pt" > /dev/null && resume=--resume
srun bash -c "accelerate launch --multi_gpu --num_machines $SLURM_NNODES --machine_rank \$SLURM_NODEID \
    --main_process_ip $main --main_process_port 29500 --num_processes $((SLURM_NNODES * gpus)) \
    --mixed_precision bf16 $recipe --run.name $name $* $resume"
status=$?
if [ "$status" = 143 ]; then  # stopped at the time limit with a checkpoint: go on in a new attempt
    scontrol requeue "$SLURM_JOB_ID"
fi
exit "$status"
