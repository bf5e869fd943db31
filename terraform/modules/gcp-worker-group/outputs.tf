output "instance_group_manager" {
  description = "Self link of the managed instance group."
  value       = local.regional ? google_compute_region_instance_group_manager.workers[0].self_link : google_compute_instance_group_manager.workers[0].self_link
}

output "instance_group_manager_name" {
  description = "Name of the managed instance group: `group` in the autoscaler's provider table (with project and region, or zone for a zonal group)."
  value       = local.group_name
}

output "regional" {
  description = "Whether the group is regional (true) or zonal (false)."
  value       = local.regional
}

output "service_account_email" {
  description = "Service account of the instances."
  value       = google_service_account.worker.email
}

output "instance_template" {
  description = "Self link of the current instance template."
  value       = google_compute_instance_template.worker.self_link_unique
}
