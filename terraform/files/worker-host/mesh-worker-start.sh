#!/usr/bin/env bash
# ExecStart of mesh-worker.service (runs as the mesh user): names the worker after its instance,
# fetches the NATS credentials from the secret store into the service's private runtime directory
# (they are never part of user-data or instance metadata), then becomes mesh-worker, so that
# systemd's SIGTERM (drain) reaches the worker itself.
set -euo pipefail
# shellcheck source=/dev/null
. /etc/mesh/host.env
# shellcheck source=cloud.sh
. /usr/local/libexec/mesh/cloud.sh

MESH_WORKER_ID=$(instance_id)
export MESH_WORKER_ID

# The secret is either a NATS credentials file (JWT and seed, operator mode) or the password of
# the `worker` user of nats/auth.conf (README: Security).
if [ -n "${MESH_NATS_CREDS_SECRET:-}" ]; then
  creds="${RUNTIME_DIRECTORY:-/run/mesh}/nats.creds"
  (umask 077 && secret_value "$MESH_NATS_CREDS_SECRET" >"$creds.tmp")
  mv -f "$creds.tmp" "$creds"
  if grep -q -- '-----BEGIN NATS USER JWT-----' "$creds"; then
    export MESH_NATS_CREDS="$creds"
  else
    MESH_NATS_PASSWORD=$(cat "$creds")
    rm -f "$creds"
    export MESH_NATS_USER="${MESH_NATS_USER:-worker}" MESH_NATS_PASSWORD
  fi
fi

exec /usr/local/bin/mesh-worker run
