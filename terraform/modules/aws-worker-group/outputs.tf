output "autoscaling_group_name" {
  description = "Name of the Auto Scaling group (the autoscaler's handle on this group)."
  value       = aws_autoscaling_group.workers.name
}

output "autoscaling_group_arn" {
  description = "ARN of the Auto Scaling group."
  value       = aws_autoscaling_group.workers.arn
}

output "role_arn" {
  description = "ARN of the instances' IAM role (grant it more, e.g. a bucket policy, by this)."
  value       = aws_iam_role.worker.arn
}

output "role_name" {
  description = "Name of the instances' IAM role."
  value       = aws_iam_role.worker.name
}

output "security_group_id" {
  description = "Security group of the instances (no inbound rules)."
  value       = aws_security_group.worker.id
}

output "launch_template_id" {
  description = "Launch template of the instances."
  value       = aws_launch_template.worker.id
}

output "drain_hook_name" {
  description = "Termination lifecycle hook that drains workers, or null without drain_on_terminate."
  value       = var.drain_on_terminate ? local.hook_name : null
}

output "autoscaler_policy_json" {
  description = "IAM policy (JSON) that lets mesh-autoscaler size this group: DescribeAutoScalingGroups, and SetDesiredCapacity and TerminateInstanceInAutoScalingGroup on this group. Attach it to the autoscaler's role or user."
  value       = data.aws_iam_policy_document.autoscaler.json
}
