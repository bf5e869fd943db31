variable "project" {
  description = "GCP project."
  type        = string
}

variable "region" {
  description = "Region of the bucket and the groups."
  type        = string
}

variable "deployment" {
  description = "Name of this mesh deployment; labels everything and prefixes the secret."
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

variable "network" {
  description = "VPC network of the workers."
  type        = string
  default     = "default"
}

variable "subnetwork" {
  description = "Subnetwork in the region, with Cloud NAT or Private Google Access; null for an auto-mode network."
  type        = string
  default     = null
}

variable "gpu_zones" {
  description = "Zones of the region that have the GPU type (nvidia-tesla-t4 on n1). Empty: let GCP pick."
  type        = list(string)
  default     = []
}

variable "gpu_source_image" {
  description = "Boot image with the NVIDIA driver for the GPU group. Deep Learning VM families change: list them with gcloud compute images list --project deeplearning-platform-release."
  type        = string
  default     = "projects/deeplearning-platform-release/global/images/family/common-cu129-ubuntu-2404-nvidia-580"
}

variable "worker_binary_url" {
  description = "https:// or gs:// URL of the mesh-worker binary (gs:// in the store bucket needs no further grant)."
  type        = string
}

variable "worker_binary_sha256" {
  description = "sha256 of that binary."
  type        = string
}
