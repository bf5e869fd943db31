#!/usr/bin/env bash
# mesh-drain-watch.service (root): drains the worker before its instance goes away, so running
# sealing tasks finish instead of starting over elsewhere.
# mesh-autoscaler drains through the mesh (drain marks in the mesh-drain bucket) before it
# removes an instance; this is the safety net for removals it did not choose.
#   AWS: waits until the Auto Scaling target lifecycle state is Terminated (the group's
#        termination hook holds the instance in Terminating:Wait), stops mesh-worker (SIGTERM =
#        drain), sends hook heartbeats meanwhile, then completes the hook so the group terminates
#        the instance.
#   GCP: waits until the instance metadata key mesh-drain is "true" (set by an operator before
#        deleting the instance by hand), stops mesh-worker, then sets the guest attribute
#        mesh/drained to "true", the sign that the instance may be deleted.
set -euo pipefail
# shellcheck source=/dev/null
. /etc/mesh/host.env
# shellcheck source=cloud.sh
. /usr/local/libexec/mesh/cloud.sh

drain_requested() {
  case "$MESH_CLOUD" in
    aws) [ "$(aws_imds meta-data/autoscaling/target-lifecycle-state 2>/dev/null)" = Terminated ] ;;
    gcp) [ "$(gcp_metadata instance/attributes/mesh-drain 2>/dev/null)" = true ] ;;
  esac
}

hook() { # ACTION [ARGS]: record-lifecycle-action-heartbeat or complete-lifecycle-action
  local action=$1
  shift
  aws autoscaling "$action" --region "$(aws_region)" \
    --auto-scaling-group-name "$MESH_ASG_NAME" --lifecycle-hook-name "$MESH_HOOK_NAME" \
    --instance-id "$(instance_id)" "$@"
}

until drain_requested; do sleep 5; done
echo "drain requested: stopping mesh-worker, running tasks finish first"

systemctl stop mesh-worker.service &
stopping=$!
waited=0
while kill -0 "$stopping" 2>/dev/null; do
  sleep 5
  waited=$((waited + 5))
  if [ "$MESH_CLOUD" = aws ] && [ $((waited % MESH_HOOK_HEARTBEAT_EVERY)) -eq 0 ]; then
    hook record-lifecycle-action-heartbeat || echo "lifecycle heartbeat failed" >&2
  fi
done
wait "$stopping" || echo "stopping mesh-worker failed; its tasks are redelivered" >&2
echo "mesh-worker stopped after ${waited}s"

case "$MESH_CLOUD" in
  aws) hook complete-lifecycle-action --lifecycle-action-result CONTINUE ;;
  gcp)
    curl -sSf --max-time 5 -X PUT --data true -H 'Metadata-Flavor: Google' \
      http://metadata.google.internal/computeMetadata/v1/instance/guest-attributes/mesh/drained ;;
esac
