variable "region" {
  description = "AWS region of the bucket and the groups."
  type        = string
}

variable "deployment" {
  description = "Name of this mesh deployment; tags everything (mesh:deployment) and prefixes the secret."
  type        = string
  default     = "mesh"
}

variable "bucket_name" {
  description = "Name of the object store bucket to create (globally unique)."
  type        = string
}

variable "nats_url" {
  description = "The NATS cluster the workers join, e.g. tls://nats1.internal:4222,tls://nats2.internal:4222,tls://nats3.internal:4222."
  type        = string
}

variable "nats_cidr_blocks" {
  description = "Where the NATS servers are; workers may connect there on port 4222."
  type        = list(string)
}

variable "vpc_id" {
  description = "VPC for the workers."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets for the workers (with a NAT gateway, or VPC endpoints for S3, Secrets Manager and SSM)."
  type        = list(string)
}

variable "worker_binary_url" {
  description = "https:// or s3:// URL of the mesh-worker binary."
  type        = string
}

variable "worker_binary_sha256" {
  description = "sha256 of that binary."
  type        = string
}

variable "pc1_max_size" {
  description = "Most instances in the pc1-cpu group."
  type        = number
  default     = 10
}

variable "c2_max_size" {
  description = "Most instances in the c2-gpu group."
  type        = number
  default     = 4
}
