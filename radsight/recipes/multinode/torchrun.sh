#!/usr/bin/env bash
# A paper recipe on NODES nodes x GPUS GPUs with torchrun, reading its data from streaming shards.
# Run the same command on every node (NODE_RANK 0, 1, ...; MASTER_ADDR: node 0's address):
#
#   NODES=2 GPUS=8 NODE_RANK=0 MASTER_ADDR=10.0.0.1 \
#     recipes/multinode/torchrun.sh recipes/glam_paper.yaml runs/glam s3://bucket/nyu-shards
#
# torchrun starts one process per GPU; Lightning takes the ranks from it, so trainer.devices and
# trainer.num_nodes must equal GPUS and NODES. Rank 0 alone checks and writes the run folder, which
# must be on storage every node sees. RESUME=1 continues from the last checkpoint, mid-epoch included.
set -euo pipefail
RECIPE=${1:?recipe}; OUT=${2:?run folder}; SHARDS=${3:?shards folder or s3://bucket/prefix}
NODES=${NODES:-1}; GPUS=${GPUS:-8}; NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}; MASTER_PORT=${MASTER_PORT:-29500}
CHECKPOINT_STEPS=${CHECKPOINT_STEPS:-500}
torchrun --nnodes="$NODES" --nproc-per-node="$GPUS" --node-rank="$NODE_RANK" \
  --master-addr="$MASTER_ADDR" --master-port="$MASTER_PORT" \
  -m radsight.cli train "$RECIPE" --out "$OUT" --no-evaluate ${RESUME:+--resume} \
  --set "data.sources=[{name: shards, root: '$SHARDS'}]" \
  --set trainer.accelerator=gpu \
  --set trainer.devices="$GPUS" \
  --set trainer.num_nodes="$NODES" \
  --set trainer.strategy=ddp \
  --set trainer.precision=bf16-mixed \
  --set trainer.checkpoint_every_n_steps="$CHECKPOINT_STEPS" \
  --set trainer.progress_bar=false
