output "store" {
  description = "MESH_STORE for publishers and operator tools."
  value       = "s3://${aws_s3_bucket.store.bucket}/mesh"
}

output "nats_credentials_secret_arn" {
  description = "Put the workers' NATS credentials file here (aws secretsmanager put-secret-value)."
  value       = aws_secretsmanager_secret.nats_credentials.arn
}

output "groups" {
  description = "Auto Scaling groups: the asg of each [[group]] in autoscaler.toml."
  value = {
    "pc1-cpu" = module.pc1_cpu.autoscaling_group_name
    "c2-gpu"  = module.c2_gpu.autoscaling_group_name
  }
}

output "worker_role_arns" {
  description = "Instance roles of the groups."
  value = {
    "pc1-cpu" = module.pc1_cpu.role_arn
    "c2-gpu"  = module.c2_gpu.role_arn
  }
}

output "autoscaler_policy_json" {
  description = "IAM policy (JSON) for mesh-autoscaler's role or user: read both groups, resize them, terminate the instances it has drained."
  value       = data.aws_iam_policy_document.autoscaler.json
}
