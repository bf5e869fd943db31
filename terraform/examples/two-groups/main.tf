# A mesh on AWS: the object store bucket, the secret that holds the workers' NATS credentials,
# and two worker groups. The NATS cluster itself runs elsewhere (see nats/ in the repository).

# --- object store --------------------------------------------------------------------------------

resource "aws_s3_bucket" "store" {
  #checkov:skip=CKV_AWS_18: sealing traffic is many multi-GiB objects; server access logs would be noise and cost. Use CloudTrail data events for an audit trail
  #checkov:skip=CKV_AWS_144: working storage for sealing, reproducible from the pieces; sealed sectors move on to the miner's long-term storage. Replicating terabytes of intermediates doubles the bill
  #checkov:skip=CKV2_AWS_62: nothing consumes bucket events; the mesh learns of new objects through NATS
  bucket = var.bucket_name
}

resource "aws_s3_bucket_versioning" "store" {
  bucket = aws_s3_bucket.store.id

  versioning_configuration {
    status = "Enabled"
  }
}

# SSE-KMS with the AWS-managed aws/s3 key (no grant needed for the workers' role); the bucket
# key keeps the KMS request count low for multipart uploads.
resource "aws_s3_bucket_server_side_encryption_configuration" "store" {
  bucket = aws_s3_bucket.store.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "aws:kms"
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_public_access_block" "store" {
  bucket                  = aws_s3_bucket.store.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "store" {
  bucket = aws_s3_bucket.store.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

# Interrupted multipart uploads (a worker killed mid-upload) and replaced or deleted versions
# would otherwise be kept, and billed, forever.
resource "aws_s3_bucket_lifecycle_configuration" "store" {
  bucket = aws_s3_bucket.store.id

  rule {
    id     = "abort-incomplete-uploads"
    status = "Enabled"
    filter {}

    abort_incomplete_multipart_upload {
      days_after_initiation = 2
    }
  }

  rule {
    id     = "expire-old-versions"
    status = "Enabled"
    filter {}

    noncurrent_version_expiration {
      noncurrent_days = 14
    }
  }
}

data "aws_iam_policy_document" "store_tls_only" {
  statement {
    sid       = "DenyPlainHttp"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.store.arn, "${aws_s3_bucket.store.arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "store" {
  bucket = aws_s3_bucket.store.id
  policy = data.aws_iam_policy_document.store_tls_only.json
  # The public access block must exist first, or this policy may be judged public while it lands.
  depends_on = [aws_s3_bucket_public_access_block.store]
}

# --- NATS credentials ----------------------------------------------------------------------------

# Only the secret is created here: its value (the workers' .creds file) is put in by hand, so it
# never lands in the terraform state:
#   aws secretsmanager put-secret-value --secret-id <arn> --secret-string file://worker.creds
resource "aws_secretsmanager_secret" "nats_credentials" {
  #checkov:skip=CKV_AWS_149: the AWS-managed key is enough for one credentials file; the module takes nats_credentials_kms_key_arn where a customer-managed key is required
  #checkov:skip=CKV2_AWS_57: rotated by issuing a new NATS user (nsc) and putting it in the secret; workers read it at every start. There is no rotation Lambda
  name                    = "${var.deployment}/nats-worker-credentials"
  description             = "NATS credentials file of the mesh workers"
  recovery_window_in_days = 7
}

# --- worker groups -------------------------------------------------------------------------------

# PreCommit1 at 32GiB on big-memory CPU instances. The group also serves the other CPU phases
# (AddPiece, PreCommit2, Commit1, Finalize) so that this example seals sectors end to end; split
# them into groups of their own as the farm grows. Capped at three slots: about 64 GiB of memory
# and 448 GiB (PC1) to 512 GiB (PC2) of scratch each; autoscaler.toml's slots repeats the number.
# Without slots the worker's resource table decides how many tasks fit.
module "pc1_cpu" {
  source = "../../modules/aws-worker-group"

  name                        = "pc1-cpu"
  phases                      = ["ap", "pc1", "pc2", "c1", "fin"]
  sizes                       = ["32GiB"]
  slots                       = 3
  instance_types              = ["r6i.8xlarge", "r7i.8xlarge", "r6a.8xlarge"]
  root_volume_size_gib        = 1800
  root_volume_iops            = 16000
  root_volume_throughput      = 1000
  drain_timeout_seconds       = 5 * 3600
  min_size                    = 0
  max_size                    = var.pc1_max_size
  nats_url                    = var.nats_url
  nats_cidr_blocks            = var.nats_cidr_blocks
  nats_credentials_secret_arn = aws_secretsmanager_secret.nats_credentials.arn
  bucket                      = aws_s3_bucket.store.bucket
  bucket_region               = var.region
  vpc_id                      = var.vpc_id
  subnet_ids                  = var.subnet_ids
  worker_binary_url           = var.worker_binary_url
  worker_binary_sha256        = var.worker_binary_sha256
}

# Commit2 at 32GiB on GPU instances, from the Deep Learning AMI (NVIDIA driver included). Room for
# the Groth parameters (pulled from the store on first use) and, until mesh-worker is built with
# GPU support, for C2 on the CPU (about 190 GiB of memory).
module "c2_gpu" {
  source = "../../modules/aws-worker-group"

  name                        = "c2-gpu"
  phases                      = ["c2"]
  sizes                       = ["32GiB"]
  slots                       = 1
  instance_types              = ["g5.16xlarge", "g6.16xlarge"]
  ami_ssm_parameter           = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-amazon-linux-2023/latest/ami-id"
  root_volume_size_gib        = 400
  drain_timeout_seconds       = 2 * 3600
  min_size                    = 0
  max_size                    = var.c2_max_size
  nats_url                    = var.nats_url
  nats_cidr_blocks            = var.nats_cidr_blocks
  nats_credentials_secret_arn = aws_secretsmanager_secret.nats_credentials.arn
  bucket                      = aws_s3_bucket.store.bucket
  bucket_region               = var.region
  vpc_id                      = var.vpc_id
  subnet_ids                  = var.subnet_ids
  worker_binary_url           = var.worker_binary_url
  worker_binary_sha256        = var.worker_binary_sha256
}

# --- the autoscaler's permissions ----------------------------------------------------------------

# mesh-autoscaler (autoscaler.toml beside this file) runs wherever it reaches NATS; give its role or
# user this policy (the autoscaler_policy_json output). Each module also outputs the policy for
# its own group.
data "aws_iam_policy_document" "autoscaler" {
  statement {
    sid       = "DescribeGroups"
    actions   = ["autoscaling:DescribeAutoScalingGroups"]
    resources = ["*"]
  }

  statement {
    sid     = "ResizeGroups"
    actions = ["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"]
    resources = [
      module.pc1_cpu.autoscaling_group_arn,
      module.c2_gpu.autoscaling_group_arn,
    ]
  }
}
