# shellcheck shell=bash
# Cloud helpers for the mesh worker host scripts. Source it after /etc/mesh/host.env, which sets
# MESH_CLOUD to aws or gcp. Needs curl; on AWS the aws CLI, on GCP python3.

aws_imds() { # PATH: one IMDSv2 value, e.g. meta-data/instance-id
  local token
  token=$(curl -sSf --max-time 5 -X PUT http://169.254.169.254/latest/api/token \
    -H 'X-aws-ec2-metadata-token-ttl-seconds: 300') || return 1
  curl -sSf --max-time 5 -H "X-aws-ec2-metadata-token: $token" "http://169.254.169.254/latest/$1"
}

gcp_metadata() { # PATH: one metadata server value, e.g. instance/name
  curl -sSf --max-time 5 -H 'Metadata-Flavor: Google' \
    "http://metadata.google.internal/computeMetadata/v1/$1"
}

gcp_token() { # an access token of the instance's service account
  gcp_metadata instance/service-accounts/default/token |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])'
}

instance_id() { # the name the worker registers under: EC2 instance id or GCE instance name
  case "$MESH_CLOUD" in
    aws) aws_imds meta-data/instance-id ;;
    gcp) gcp_metadata instance/name ;;
    *) echo "MESH_CLOUD must be aws or gcp, not '$MESH_CLOUD'" >&2; return 1 ;;
  esac
}

aws_region() { aws_imds meta-data/placement/region; }

secret_value() { # ID: a Secrets Manager ARN or projects/P/secrets/S; writes the value to stdout
  case "$MESH_CLOUD" in
    aws)
      # The region is part of the ARN, so the secret may live in another region than the instance.
      aws secretsmanager get-secret-value --region "$(echo "$1" | cut -d: -f4)" \
        --secret-id "$1" --query SecretString --output text ;;
    gcp)
      curl -sSf --max-time 30 -H "Authorization: Bearer $(gcp_token)" \
        "https://secretmanager.googleapis.com/v1/$1/versions/latest:access" |
        python3 -c 'import base64, json, sys; sys.stdout.buffer.write(base64.b64decode(json.load(sys.stdin)["payload"]["data"]))' ;;
    *) echo "MESH_CLOUD must be aws or gcp, not '$MESH_CLOUD'" >&2; return 1 ;;
  esac
}

fetch_url() { # URL DEST: https://, s3:// (instance role) or gs:// (service account)
  case "$1" in
    https://*) curl -sSfL --retry 5 --retry-connrefused --max-time 900 -o "$2" "$1" ;;
    s3://*) AWS_REGION="$(aws_region)" aws s3 cp --only-show-errors "$1" "$2" ;;
    gs://*)
      curl -sSfL --retry 5 --retry-connrefused --max-time 900 -o "$2" \
        -H "Authorization: Bearer $(gcp_token)" "https://storage.googleapis.com/${1#gs://}" ;;
    *) echo "cannot fetch '$1': use an https://, s3:// or gs:// URL" >&2; return 1 ;;
  esac
}
