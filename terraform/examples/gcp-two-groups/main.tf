# A mesh on GCP: the object store bucket, the secret that holds the workers' NATS credentials,
# and two worker groups. The NATS cluster itself runs elsewhere (see nats/ in the repository).

# --- object store --------------------------------------------------------------------------------

resource "google_storage_bucket" "store" {
  #checkov:skip=CKV_GCP_62: sealing traffic is many multi-GiB objects; usage logs would be noise and cost. Enable Data Access audit logs for an audit trail
  name                        = var.bucket_name
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  versioning {
    enabled = true
  }

  # Interrupted multipart uploads (a worker killed mid-upload) and replaced or deleted versions
  # would otherwise be kept, and billed, forever.
  lifecycle_rule {
    condition {
      age = 2
    }
    action {
      type = "AbortIncompleteMultipartUpload"
    }
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 14
    }
    action {
      type = "Delete"
    }
  }
}

# --- NATS credentials ----------------------------------------------------------------------------

# Only the secret is created here: its value (the workers' .creds file) is added by hand, so it
# never lands in the terraform state:
#   gcloud secrets versions add <name> --data-file=worker.creds
resource "google_secret_manager_secret" "nats_credentials" {
  secret_id = "${var.deployment}-nats-worker-credentials"

  replication {
    auto {}
  }
}

# Built from configured values (the secret's id attribute is unknown until it exists), so that the
# modules know at plan time that there is a secret to grant access to.
locals {
  nats_credentials_secret = "projects/${var.project}/secrets/${google_secret_manager_secret.nats_credentials.secret_id}"
}

# --- worker groups -------------------------------------------------------------------------------

# PreCommit1 at 32GiB on big-memory CPU machines, plus the other CPU phases so that this example
# seals sectors end to end (see the AWS example).
module "pc1_cpu" {
  source = "../../modules/gcp-worker-group"

  name                    = "pc1-cpu"
  project                 = var.project
  region                  = var.region
  phases                  = ["ap", "pc1", "pc2", "c1", "fin"]
  sizes                   = ["32GiB"]
  slots                   = 3
  machine_type            = "n2-highmem-32"
  boot_disk_type          = "pd-ssd"
  boot_disk_size_gb       = 1800
  drain_timeout_seconds   = 5 * 3600
  nats_url                = var.nats_url
  nats_credentials_secret = local.nats_credentials_secret
  bucket                  = google_storage_bucket.store.name
  network                 = var.network
  subnetwork              = var.subnetwork
  worker_binary_url       = var.worker_binary_url
  worker_binary_sha256    = var.worker_binary_sha256
}

# Commit2 at 32GiB with a T4, from a Deep Learning VM image (NVIDIA driver included, not signed
# for Secure Boot). n1-highmem-32 leaves room for C2 on the CPU (about 190 GiB) until
# mesh-worker is built with GPU support.
module "c2_gpu" {
  source = "../../modules/gcp-worker-group"

  name                    = "c2-gpu"
  project                 = var.project
  region                  = var.region
  zones                   = var.gpu_zones
  phases                  = ["c2"]
  sizes                   = ["32GiB"]
  slots                   = 1
  machine_type            = "n1-highmem-32"
  accelerator_type        = "nvidia-tesla-t4"
  accelerator_count       = 1
  source_image            = var.gpu_source_image
  enable_secure_boot      = false
  boot_disk_size_gb       = 400
  drain_timeout_seconds   = 2 * 3600
  nats_url                = var.nats_url
  nats_credentials_secret = local.nats_credentials_secret
  bucket                  = google_storage_bucket.store.name
  network                 = var.network
  subnetwork              = var.subnetwork
  worker_binary_url       = var.worker_binary_url
  worker_binary_sha256    = var.worker_binary_sha256
}
