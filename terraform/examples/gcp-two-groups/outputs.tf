output "store" {
  description = "MESH_STORE for publishers and operator tools."
  value       = "gs://${google_storage_bucket.store.name}/mesh"
}

output "nats_credentials_secret" {
  description = "Add the workers' NATS credentials file as a version of this secret (gcloud secrets versions add)."
  value       = google_secret_manager_secret.nats_credentials.id
}

output "groups" {
  description = "Managed instance group names: the group of each [[group]] in autoscaler.toml."
  value = {
    "pc1-cpu" = module.pc1_cpu.instance_group_manager_name
    "c2-gpu"  = module.c2_gpu.instance_group_manager_name
  }
}

output "worker_service_accounts" {
  description = "Service accounts of the groups."
  value = {
    "pc1-cpu" = module.pc1_cpu.service_account_email
    "c2-gpu"  = module.c2_gpu.service_account_email
  }
}
