#!/bin/bash
# Submit a sharded bon run and its merge: ./submit.sh SHARDS INPUT OUTDIR [bon run options…]
#
#   examples/slurm/submit.sh 8 queries.jsonl out --policy Qwen/Qwen3-8B --judge Reward-Reasoning/RRM-7B
#
# Follow it with `squeue --me`, `bon status OUTDIR/part.3.jsonl` and the tasks' logs
# (bon-ARRAYID_TASK.log: a status line a minute); the result is OUTDIR/merged.jsonl.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
shards=${1:?usage: submit.sh SHARDS INPUT OUTDIR [bon run options…]}
input=$2
outdir=$3
shift 3
array=$(sbatch --parsable --array="0-$((shards - 1))" "$here/bon-array.sbatch" "$input" "$outdir" "$@")
array=${array%%;*}  # --parsable prints "id" or "id;cluster"
merge=$(sbatch --parsable --dependency="afterok:$array" "$here/bon-merge.sbatch" "$outdir")
echo "array job $array (${shards} shards), merge job ${merge%%;*} after it: $outdir/merged.jsonl"
