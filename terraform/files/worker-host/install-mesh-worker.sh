#!/usr/bin/env bash
# Run as root at first boot (cloud-init on AWS, the startup script at every boot on GCP):
# installs mesh-worker from MESH_BINARY_URL once its sha256 matches MESH_BINARY_SHA256, creates
# the mesh user and the worker's directories, and starts the services. Safe to run again: a
# binary that already matches is kept.
set -euo pipefail
# shellcheck source=/dev/null
. /etc/mesh/host.env
# shellcheck source=cloud.sh
. /usr/local/libexec/mesh/cloud.sh
set -a
# shellcheck source=/dev/null
. /etc/mesh/worker.env
set +a

need=(curl sha256sum systemctl)
case "$MESH_CLOUD" in
  aws) need+=(aws) ;;
  gcp) need+=(python3) ;;
esac
for tool in "${need[@]}"; do
  command -v "$tool" >/dev/null || { echo "mesh: '$tool' is missing from this image" >&2; exit 1; }
done

bin=/usr/local/bin/mesh-worker
if ! echo "$MESH_BINARY_SHA256  $bin" | sha256sum --check --status 2>/dev/null; then
  tmp=$(mktemp /usr/local/bin/.mesh-worker.XXXXXX)
  trap 'rm -f "$tmp"' EXIT
  for attempt in 1 2 3 4 5; do
    fetch_url "$MESH_BINARY_URL" "$tmp" && break
    [ "$attempt" = 5 ] && { echo "mesh: cannot download $MESH_BINARY_URL" >&2; exit 1; }
    sleep $((attempt * 10))
  done
  if ! echo "$MESH_BINARY_SHA256  $tmp" | sha256sum --check --status; then
    echo "mesh: $MESH_BINARY_URL has sha256 $(sha256sum "$tmp" | cut -d' ' -f1)," \
      "expected $MESH_BINARY_SHA256: not installing it" >&2
    exit 1
  fi
  chmod 0755 "$tmp"
  mv -f "$tmp" "$bin"
  trap - EXIT
fi

id mesh >/dev/null 2>&1 ||
  useradd --system --user-group --no-create-home --home-dir /nonexistent \
    --shell "$(command -v nologin || echo /bin/false)" mesh
for dir in "$MESH_SCRATCH" "$FIL_PROOFS_PARAMETER_CACHE" "$FIL_PROOFS_PARENT_CACHE"; do
  install -d -o mesh -g mesh -m 0750 "$dir"
done

systemctl daemon-reload
systemctl enable --now --no-block mesh-worker.service
if [ "$MESH_DRAIN_WATCH" = 1 ]; then
  systemctl enable --now --no-block mesh-drain-watch.service
fi
