# --- the group -----------------------------------------------------------------------------------

variable "name" {
  description = "Group name, e.g. pc1-cpu. Names the managed instance group (mesh-<name>), its instances and service account, and goes in the mesh-group label."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,23}[a-z0-9]$", var.name))
    error_message = "name must be 2-25 lowercase letters, digits and '-', starting with a letter (service account ids are at most 30 characters)."
  }
}

variable "project" {
  description = "GCP project."
  type        = string
}

variable "region" {
  description = "Region of the group."
  type        = string
}

variable "zone" {
  description = "Set for a zonal group in this zone; null makes a regional group spread over zones (or over the region's zones)."
  type        = string
  default     = null
}

variable "zones" {
  description = "Zones a regional group uses, e.g. those with the GPU type. Empty: let GCP pick."
  type        = list(string)
  default     = []
}

variable "initial_target_size" {
  description = "Instances at creation. Terraform ignores target size afterwards: the autoscaler owns it."
  type        = number
  default     = 0
}

variable "labels" {
  description = "Extra labels for instances and their disks."
  type        = map(string)
  default     = {}
}

# --- what the workers do -------------------------------------------------------------------------

variable "nats_url" {
  description = "MESH_NATS: NATS server URL(s), comma-separated for a cluster, e.g. tls://nats1:4222,tls://nats2:4222."
  type        = string

  validation {
    condition     = can(regex("^((nats|tls)://[^,\\s\"$`\\\\]+)(,(nats|tls)://[^,\\s\"$`\\\\]+)*$", var.nats_url))
    error_message = "nats_url must be nats://host:port or tls://host:port, several comma-separated."
  }
}

variable "nats_credentials_secret" {
  description = "Secret Manager secret (projects/<project>/secrets/<name>) whose latest version is the workers' NATS credentials: a credentials file (JWT, exported as MESH_NATS_CREDS) or the password of the `worker` user of nats/auth.conf (exported as MESH_NATS_PASSWORD, with MESH_NATS_USER=worker). Fetched by the worker's service at every start (a credentials file into /run/mesh/nats.creds); never in metadata. null: no credentials. Must be known at plan time (it decides whether the access grant exists): build it from the project and secret_id rather than passing the new secret's id attribute."
  type        = string
  default     = null

  validation {
    condition     = var.nats_credentials_secret == null || can(regex("^projects/[^/]+/secrets/[A-Za-z0-9_-]+$", var.nats_credentials_secret))
    error_message = "nats_credentials_secret must look like projects/<project>/secrets/<name>."
  }
}

variable "bucket" {
  description = "Cloud Storage bucket of the object store (MESH_STORE=gs://<bucket>/<bucket_prefix>)."
  type        = string
}

variable "bucket_prefix" {
  description = "Object name prefix inside the bucket. Empty: the whole bucket."
  type        = string
  default     = "mesh"

  validation {
    condition     = can(regex("^([A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*)?$", var.bucket_prefix))
    error_message = "bucket_prefix must be empty or path segments of letters, digits, '.', '_' and '-', without leading or trailing '/'."
  }
}

variable "phases" {
  description = "MESH_PHASES: phases this group serves."
  type        = list(string)

  validation {
    condition     = length(var.phases) > 0 && alltrue([for p in var.phases : contains(["ap", "pc1", "pc2", "c1", "c2", "fin"], p)]) && length(distinct(var.phases)) == length(var.phases)
    error_message = "phases must be a non-empty list of distinct values among ap, pc1, pc2, c1, c2, fin."
  }
}

variable "sizes" {
  description = "MESH_SIZES: sector sizes this group serves."
  type        = list(string)
  default     = ["32GiB"]

  validation {
    condition     = length(var.sizes) > 0 && alltrue([for s in var.sizes : contains(["2KiB", "8MiB", "512MiB", "32GiB", "64GiB"], s)]) && length(distinct(var.sizes)) == length(var.sizes)
    error_message = "sizes must be a non-empty list of distinct values among 2KiB, 8MiB, 512MiB, 32GiB, 64GiB."
  }
}

variable "slots" {
  description = "MESH_SLOTS: an optional cap on the tasks one worker runs at once (1-1024). null (the default): no cap, the worker's resource table decides how many tasks fit the machine's cores, memory and GPUs (a 32GiB PC1 wants about 64 GiB of memory and 448 GiB of scratch). Set it to hold a worker below that, e.g. when scratch is the limit."
  type        = number
  default     = null

  validation {
    condition     = var.slots == null || (var.slots >= 1 && var.slots <= 1024 && floor(var.slots) == var.slots)
    error_message = "slots must be null (the resource table decides) or a whole number from 1 to 1024."
  }
}

variable "scratch_dir" {
  description = "MESH_SCRATCH: base directory of the worker's scratch space."
  type        = string
  default     = "/var/tmp/mesh-scratch"
}

variable "scratch_limit" {
  description = "MESH_SCRATCH_LIMIT, e.g. 1400GiB. null: the free space under scratch_dir when the worker starts."
  type        = string
  default     = null
}

variable "param_cache_dir" {
  description = "FIL_PROOFS_PARAMETER_CACHE: where Groth parameters are kept (pulled from the store on first use)."
  type        = string
  default     = "/var/tmp/filecoin-proof-parameters"
}

variable "parent_cache_dir" {
  description = "FIL_PROOFS_PARENT_CACHE: where the SDR parent cache is kept."
  type        = string
  default     = "/var/tmp/filecoin-parents"
}

variable "extra_env" {
  description = "More environment for mesh-worker, e.g. { MESH_STORE_PATIENCE = \"1h\", RUST_LOG = \"info\" }."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for k in keys(var.extra_env) : can(regex("^[A-Z_][A-Z0-9_]*$", k))])
    error_message = "extra_env keys must be environment variable names (A-Z, 0-9, _)."
  }
}

variable "worker_binary_url" {
  description = "Where instances download the mesh-worker binary (x86_64 Linux, glibc 2.34 or newer): https://…, or gs://bucket/object (read with the service account: put it in the store bucket, or grant it read elsewhere)."
  type        = string

  validation {
    condition     = can(regex("^(https|gs)://[^\\s\"$`\\\\]+$", var.worker_binary_url))
    error_message = "worker_binary_url must be an https:// or gs:// URL."
  }
}

variable "worker_binary_sha256" {
  description = "sha256 of the binary at worker_binary_url (64 hex digits); an instance refuses any other file."
  type        = string

  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.worker_binary_sha256))
    error_message = "worker_binary_sha256 must be 64 lowercase hex digits (sha256sum's output)."
  }
}

variable "drain_timeout_seconds" {
  description = "How long a stopping worker may drain (systemd TimeoutStopSec) before what still runs is killed and redelivered. Cover the longest task the group runs: a 32GiB PC1 takes about 3.5 h."
  type        = number
  default     = 14400

  validation {
    condition     = var.drain_timeout_seconds >= 60 && var.drain_timeout_seconds <= 172800
    error_message = "drain_timeout_seconds must be from 60 to 172800."
  }
}

# --- instances -----------------------------------------------------------------------------------

variable "machine_type" {
  description = "Machine type, e.g. n2-highmem-32 for PC1 or g2-standard-32 (one L4 attached) for C2."
  type        = string
}

variable "accelerator_type" {
  description = "GPU to attach to a general-purpose machine type (e.g. nvidia-tesla-t4 on n1); null for none. Accelerator-optimized types (a2, a3, g2, …) come with theirs. Any GPU makes the instances stop for host maintenance instead of live-migrating."
  type        = string
  default     = null
}

variable "accelerator_count" {
  description = "How many accelerator_type GPUs to attach."
  type        = number
  default     = 1
}

variable "spot" {
  description = "Use Spot VMs (deleted on preemption; the group recreates them). Suits short phases (C2); a preempted PC1 loses hours."
  type        = bool
  default     = false
}

variable "source_image" {
  description = "Boot image. It needs systemd, curl and python3 (Google's Debian and Ubuntu images have them); GPU groups need one with the NVIDIA driver, e.g. a Deep Learning VM image."
  type        = string
  default     = "debian-cloud/debian-12"
}

variable "boot_disk_size_gb" {
  description = "Boot disk size. Scratch, the parameter cache and the parent cache live on it unless you point them elsewhere: a 32GiB PC1 slot needs 448 GiB of scratch."
  type        = number
  default     = 100
}

variable "boot_disk_type" {
  description = "Boot disk type: pd-balanced, pd-ssd, or a hyperdisk type the machine type supports."
  type        = string
  default     = "pd-balanced"
}

variable "boot_disk_kms_key" {
  description = "Cloud KMS key (self link) encrypting the boot disk. null: Google-managed encryption."
  type        = string
  default     = null
}

variable "enable_secure_boot" {
  description = "Shielded VM Secure Boot. Turn it off for images whose GPU driver is not signed for it."
  type        = bool
  default     = true
}

# --- network -------------------------------------------------------------------------------------

variable "network" {
  description = "VPC network (name or self link)."
  type        = string
  default     = "default"
}

variable "subnetwork" {
  description = "Subnetwork in the region (name or self link); null for an auto-mode network. Without external IPs it needs Cloud NAT or Private Google Access to reach Cloud Storage, Secret Manager and the binary URL."
  type        = string
  default     = null
}

variable "external_ip" {
  description = "Give instances an ephemeral external IP. Off by default: workers only make outbound connections."
  type        = bool
  default     = false
}

variable "network_tags" {
  description = "Network tags for firewall rules (e.g. one that allows egress to NATS)."
  type        = list(string)
  default     = []
}
