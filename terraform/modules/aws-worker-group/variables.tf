# --- the group -----------------------------------------------------------------------------------

variable "name" {
  description = "Group name, e.g. pc1-cpu. Names the Auto Scaling group (mesh-worker-<name>), its role and security group, and goes in the mesh:group tag."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,30}[a-z0-9]$", var.name))
    error_message = "name must be 2-32 lowercase letters, digits and '-', starting with a letter."
  }
}

variable "min_size" {
  description = "Fewest instances the group keeps. 0 lets the autoscaler scale the group to zero; its min for this group must be at least this (it refuses to remove below min_size)."
  type        = number
  default     = 0
}

variable "max_size" {
  description = "Most instances the group may have. The autoscaler's max for this group must not exceed it (it refuses to grow past max_size)."
  type        = number
}

variable "initial_desired_capacity" {
  description = "Instances at creation. Terraform ignores desired capacity afterwards: the autoscaler owns it."
  type        = number
  default     = 0
}

variable "tags" {
  description = "Extra tags for every resource and (through the group) every instance and volume."
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

variable "nats_credentials_secret_arn" {
  description = "ARN of a Secrets Manager secret whose string value is the workers' NATS credentials: a credentials file (JWT, exported as MESH_NATS_CREDS) or the password of the `worker` user of nats/auth.conf (exported as MESH_NATS_PASSWORD, with MESH_NATS_USER=worker). Fetched by the worker's service at every start (a credentials file into /run/mesh/nats.creds); never in user-data. null: no credentials."
  type        = string
  default     = null
}

variable "nats_credentials_kms_key_arn" {
  description = "Customer-managed KMS key that encrypts the NATS credentials secret, if any (the role may then decrypt with it). null: the secret uses the AWS-managed key."
  type        = string
  default     = null
}

variable "bucket" {
  description = "S3 bucket of the object store (MESH_STORE=s3://<bucket>/<bucket_prefix>)."
  type        = string
}

variable "bucket_prefix" {
  description = "Key prefix inside the bucket; the role reads and writes objects only under it. Empty: the whole bucket."
  type        = string
  default     = "mesh"

  validation {
    condition     = can(regex("^([A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*)?$", var.bucket_prefix))
    error_message = "bucket_prefix must be empty or path segments of letters, digits, '.', '_' and '-', without leading or trailing '/'."
  }
}

variable "bucket_region" {
  description = "Region of the bucket (AWS_REGION for the worker). null: the provider's region."
  type        = string
  default     = null
}

variable "bucket_kms_key_arn" {
  description = "Customer-managed KMS key of the bucket's default encryption, if any (the role may then use it). null: SSE-S3 or the AWS-managed aws/s3 key, which need no grant."
  type        = string
  default     = null
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
  description = "Where instances download the mesh-worker binary (x86_64 Linux, glibc 2.34 or newer): https://…, or s3://bucket/key (read with the instance role, which is granted that one object)."
  type        = string

  validation {
    condition     = can(regex("^(https|s3)://[^\\s\"$`\\\\]+$", var.worker_binary_url))
    error_message = "worker_binary_url must be an https:// or s3:// URL."
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
    error_message = "drain_timeout_seconds must be from 60 to 172800 (48 h, the longest an Auto Scaling lifecycle hook can wait)."
  }
}

variable "drain_on_terminate" {
  description = "Add a termination lifecycle hook and a watcher on each instance that drains the worker before the group terminates the instance (TerminateInstanceInAutoScalingGroup, health replacement). Without it a terminated worker's tasks restart elsewhere."
  type        = bool
  default     = true
}

variable "drain_hook_heartbeat_seconds" {
  description = "Heartbeat timeout of the termination hook; a draining instance sends a heartbeat every half of it. The hook waits at most 100 times this (and 48 h)."
  type        = number
  default     = 600

  validation {
    condition     = var.drain_hook_heartbeat_seconds >= 30 && var.drain_hook_heartbeat_seconds <= 7200
    error_message = "drain_hook_heartbeat_seconds must be from 30 to 7200."
  }
}

# --- instances -----------------------------------------------------------------------------------

variable "instance_types" {
  description = "Instance types, in order of preference (the group launches the first one with capacity). Keep them alike in cores and memory: the autoscaler sizes the group by one slots-per-instance figure."
  type        = list(string)

  validation {
    condition     = length(var.instance_types) > 0
    error_message = "instance_types must name at least one instance type."
  }
}

variable "on_demand_percentage" {
  description = "Percentage of on-demand instances above a base of zero; the rest are Spot. Spot suits short phases (C2); an interrupted PC1 loses hours."
  type        = number
  default     = 100

  validation {
    condition     = var.on_demand_percentage >= 0 && var.on_demand_percentage <= 100
    error_message = "on_demand_percentage must be from 0 to 100."
  }
}

variable "ami_id" {
  description = "AMI to launch. null: the value of ami_ssm_parameter at apply time. The image needs systemd, curl and the AWS CLI (Amazon Linux 2023 has them); GPU groups need an image with the NVIDIA driver."
  type        = string
  default     = null
}

variable "ami_ssm_parameter" {
  description = "SSM parameter holding the AMI id, used when ami_id is null. For GPU groups: /aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-amazon-linux-2023/latest/ami-id."
  type        = string
  default     = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
}

variable "root_volume_size_gib" {
  description = "Root volume size. Scratch, the parameter cache and the parent cache live on it unless you point them elsewhere: a 32GiB PC1 slot needs 448 GiB of scratch."
  type        = number
  default     = 100
}

variable "root_volume_type" {
  description = "Root volume type."
  type        = string
  default     = "gp3"
}

variable "root_volume_iops" {
  description = "Provisioned IOPS of the root volume (gp3: 3000-16000; io1/io2)."
  type        = number
  default     = 3000
}

variable "root_volume_throughput" {
  description = "Throughput of a gp3 root volume in MiB/s (125-1000)."
  type        = number
  default     = 125
}

variable "root_volume_kms_key_arn" {
  description = "KMS key encrypting the root volume. null: the account's default EBS key. The volume is encrypted either way."
  type        = string
  default     = null
}

# --- network and access --------------------------------------------------------------------------

variable "vpc_id" {
  description = "VPC of the subnets."
  type        = string
}

variable "subnet_ids" {
  description = "Subnets to launch in (private ones with a NAT gateway or VPC endpoints for S3 and Secrets Manager)."
  type        = list(string)
}

variable "associate_public_ip_address" {
  description = "Give instances a public IP. Off by default: workers only make outbound connections."
  type        = bool
  default     = false
}

variable "nats_cidr_blocks" {
  description = "Where the NATS servers are, e.g. [\"10.0.0.0/16\"]; the group's security group allows outbound TCP to them on nats_ports."
  type        = list(string)
}

variable "nats_ports" {
  description = "NATS client ports the security group allows outbound."
  type        = list(number)
  default     = [4222]
}

variable "additional_security_group_ids" {
  description = "More security groups for the instances."
  type        = list(string)
  default     = []
}

variable "enable_ssm" {
  description = "Attach AmazonSSMManagedInstanceCore so operators reach instances through Session Manager (no SSH keys, no inbound rules)."
  type        = bool
  default     = true
}
