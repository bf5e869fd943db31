# One mesh worker group on AWS: a launch template whose instances install mesh-worker and run it
# under systemd, an Auto Scaling group whose size the mesh autoscaler owns, the instance role
# (objects under the store prefix, the NATS credentials secret, its own lifecycle hook) and a
# security group without inbound rules.

data "aws_region" "current" {}

data "aws_partition" "current" {}

data "aws_ssm_parameter" "ami" {
  count = var.ami_id == null ? 1 : 0
  name  = var.ami_ssm_parameter
}

# Only for the root device name, which differs between images.
data "aws_ami" "selected" {
  filter {
    name   = "image-id"
    values = [local.ami_id]
  }
}

locals {
  group_name = "mesh-worker-${var.name}"
  hook_name  = "mesh-drain"
  partition  = data.aws_partition.current.partition

  # An AMI id is not a secret; SSM parameter values are marked sensitive all the same.
  ami_id        = var.ami_id != null ? var.ami_id : nonsensitive(data.aws_ssm_parameter.ami[0].value)
  bucket_region = coalesce(var.bucket_region, data.aws_region.current.name)
  store_url     = var.bucket_prefix == "" ? "s3://${var.bucket}" : "s3://${var.bucket}/${var.bucket_prefix}"
  bucket_arn    = "arn:${local.partition}:s3:::${var.bucket}"
  objects_arn   = var.bucket_prefix == "" ? "${local.bucket_arn}/*" : "${local.bucket_arn}/${var.bucket_prefix}/*"
  binary_arn    = startswith(var.worker_binary_url, "s3://") ? "arn:${local.partition}:s3:::${trimprefix(var.worker_binary_url, "s3://")}" : null

  # The slots cap, or "table" without one: the worker's resource table then decides how many
  # tasks fit the machine.
  slots_label = var.slots == null ? "table" : tostring(var.slots)

  # What the group serves, for operators and inventories (the autoscaler takes its groups from
  # its own config file, not from tags).
  tags = merge(var.tags, {
    "mesh:group"  = var.name
    "mesh:phases" = join(",", var.phases)
    "mesh:sizes"  = join(",", var.sizes)
    "mesh:slots"  = local.slots_label
  })

  # mesh-worker's configuration (systemd EnvironmentFile; nothing secret).
  worker_env = merge(
    {
      MESH_NATS                  = var.nats_url
      MESH_STORE                 = local.store_url
      AWS_REGION                 = local.bucket_region
      MESH_PHASES                = join(",", var.phases)
      MESH_SIZES                 = join(",", var.sizes)
      MESH_SCRATCH               = var.scratch_dir
      FIL_PROOFS_PARAMETER_CACHE = var.param_cache_dir
      FIL_PROOFS_PARENT_CACHE    = var.parent_cache_dir
    },
    # MESH_SLOTS only caps the worker; without it the resource table sizes it to the machine.
    var.slots == null ? {} : { MESH_SLOTS = tostring(var.slots) },
    var.scratch_limit == null ? {} : { MESH_SCRATCH_LIMIT = var.scratch_limit },
    var.extra_env,
  )

  # What the host scripts need (see terraform/files/worker-host).
  host_env = {
    MESH_CLOUD                = "aws"
    MESH_BINARY_URL           = var.worker_binary_url
    MESH_BINARY_SHA256        = var.worker_binary_sha256
    MESH_NATS_CREDS_SECRET    = var.nats_credentials_secret_arn == null ? "" : var.nats_credentials_secret_arn
    MESH_DRAIN_WATCH          = var.drain_on_terminate ? "1" : "0"
    MESH_ASG_NAME             = local.group_name
    MESH_HOOK_NAME            = local.hook_name
    MESH_HOOK_HEARTBEAT_EVERY = tostring(max(5, floor(var.drain_hook_heartbeat_seconds / 10) * 5))
  }

  # Both files are read by systemd and by bash, so values are double-quoted and may not hold
  # quotes, backslashes, '$', backticks or whitespace (checked below).
  env_values_safe = alltrue([for v in concat(values(local.worker_env), values(local.host_env)) : can(regex("^[^\"\\\\$`\\s]*$", v))])
  env_file = {
    for name, vars in { worker = local.worker_env, host = local.host_env } :
    name => join("", [for k in sort(keys(vars)) : "${k}=\"${vars[k]}\"\n"])
  }

  host_dir = "${path.module}/../../files/worker-host"
  host_files = [
    { path = "/etc/mesh/host.env", permissions = "0644", content = local.env_file.host },
    { path = "/etc/mesh/worker.env", permissions = "0644", content = local.env_file.worker },
    { path = "/usr/local/libexec/mesh/cloud.sh", permissions = "0644", content = file("${local.host_dir}/cloud.sh") },
    { path = "/usr/local/libexec/mesh/install-mesh-worker", permissions = "0755", content = file("${local.host_dir}/install-mesh-worker.sh") },
    { path = "/usr/local/libexec/mesh/mesh-worker-start", permissions = "0755", content = file("${local.host_dir}/mesh-worker-start.sh") },
    { path = "/usr/local/libexec/mesh/mesh-drain-watch", permissions = "0755", content = file("${local.host_dir}/mesh-drain-watch.sh") },
    { path = "/etc/systemd/system/mesh-worker.service", permissions = "0644", content = templatefile("${local.host_dir}/mesh-worker.service.tftpl", { drain_timeout_seconds = var.drain_timeout_seconds }) },
    { path = "/etc/systemd/system/mesh-drain-watch.service", permissions = "0644", content = file("${local.host_dir}/mesh-drain-watch.service") },
  ]

  # cloud-init: write the files, then install and start (first boot only; systemd starts the
  # enabled services on later boots). Compressed: user-data is limited to 16 KiB.
  user_data = base64gzip(join("\n", [
    "#cloud-config",
    yamlencode({
      write_files = [for f in local.host_files : merge(f, { owner = "root:root" })]
      runcmd      = [["/usr/local/libexec/mesh/install-mesh-worker"]]
    }),
  ]))
}

# --- instance role -------------------------------------------------------------------------------

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "worker" {
  name               = local.group_name
  description        = "mesh workers of group ${var.name}"
  assume_role_policy = data.aws_iam_policy_document.assume.json
  tags               = local.tags
}

# Workers read inputs and write outputs under the prefix; only publishers delete. ListBucket is
# what makes S3 answer a missing object with 404 (which the worker treats as permanent) rather
# than 403; it is not limited to the prefix because a GetObject request carries no s3:prefix to
# match, so it reveals key names in the bucket, never contents.
data "aws_iam_policy_document" "worker" {
  statement {
    sid       = "ListStoreBucket"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arn]
  }

  statement {
    sid       = "ReadWriteStoreObjects"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"]
    resources = [local.objects_arn]
  }

  dynamic "statement" {
    for_each = local.binary_arn == null ? [] : [local.binary_arn]
    content {
      sid       = "ReadWorkerBinary"
      actions   = ["s3:GetObject"]
      resources = [statement.value]
    }
  }

  dynamic "statement" {
    for_each = var.bucket_kms_key_arn == null ? [] : [var.bucket_kms_key_arn]
    content {
      sid       = "UseStoreKey"
      actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
      resources = [statement.value]
    }
  }

  dynamic "statement" {
    for_each = var.nats_credentials_secret_arn == null ? [] : [var.nats_credentials_secret_arn]
    content {
      sid       = "ReadNatsCredentials"
      actions   = ["secretsmanager:GetSecretValue"]
      resources = [statement.value]
    }
  }

  dynamic "statement" {
    for_each = var.nats_credentials_kms_key_arn == null ? [] : [var.nats_credentials_kms_key_arn]
    content {
      sid       = "DecryptNatsCredentials"
      actions   = ["kms:Decrypt"]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_role_policy" "worker" {
  name   = "mesh-worker"
  role   = aws_iam_role.worker.id
  policy = data.aws_iam_policy_document.worker.json
}

# A draining instance holds its own termination hook open and then completes it.
data "aws_iam_policy_document" "drain" {
  statement {
    sid       = "CompleteOwnTerminationHook"
    actions   = ["autoscaling:RecordLifecycleActionHeartbeat", "autoscaling:CompleteLifecycleAction"]
    resources = [aws_autoscaling_group.workers.arn]
  }
}

resource "aws_iam_role_policy" "drain" {
  count  = var.drain_on_terminate ? 1 : 0
  name   = "mesh-drain"
  role   = aws_iam_role.worker.id
  policy = data.aws_iam_policy_document.drain.json
}

# What mesh-autoscaler needs to size this group (attach it to the autoscaler's own role or user,
# see the autoscaler_policy_json output): read the group, raise its desired capacity, and
# terminate the drained instances it names. DescribeAutoScalingGroups has no resource-level
# permissions.
data "aws_iam_policy_document" "autoscaler" {
  statement {
    sid       = "DescribeGroups"
    actions   = ["autoscaling:DescribeAutoScalingGroups"]
    resources = ["*"]
  }

  statement {
    sid       = "ResizeGroup"
    actions   = ["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"]
    resources = [aws_autoscaling_group.workers.arn]
  }
}

resource "aws_iam_role_policy_attachment" "ssm" {
  count      = var.enable_ssm ? 1 : 0
  role       = aws_iam_role.worker.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "worker" {
  name = local.group_name
  role = aws_iam_role.worker.name
  tags = local.tags
}

# --- network -------------------------------------------------------------------------------------

resource "aws_security_group" "worker" {
  name_prefix = "${local.group_name}-"
  description = "mesh workers of group ${var.name}: no inbound; outbound HTTPS and NATS"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = local.group_name })

  egress {
    description = "HTTPS: S3, Secrets Manager, SSM, the worker binary"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }

  dynamic "egress" {
    for_each = toset(var.nats_ports)
    content {
      description = "NATS client connections"
      from_port   = egress.value
      to_port     = egress.value
      protocol    = "tcp"
      cidr_blocks = var.nats_cidr_blocks
    }
  }

  lifecycle {
    create_before_destroy = true
  }
}

# --- instances -----------------------------------------------------------------------------------

resource "aws_launch_template" "worker" {
  name_prefix            = "${local.group_name}-"
  description            = "mesh-worker: ${join(",", var.phases)} at ${join(",", var.sizes)}, slots: ${local.slots_label}"
  image_id               = local.ami_id
  user_data              = local.user_data
  ebs_optimized          = true
  update_default_version = true
  tags                   = local.tags

  iam_instance_profile {
    arn = aws_iam_instance_profile.worker.arn
  }

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  network_interfaces {
    device_index                = 0
    associate_public_ip_address = var.associate_public_ip_address
    delete_on_termination       = true
    security_groups             = concat([aws_security_group.worker.id], var.additional_security_group_ids)
  }

  block_device_mappings {
    device_name = data.aws_ami.selected.root_device_name

    ebs {
      volume_size           = var.root_volume_size_gib
      volume_type           = var.root_volume_type
      iops                  = contains(["gp3", "io1", "io2"], var.root_volume_type) ? var.root_volume_iops : null
      throughput            = var.root_volume_type == "gp3" ? var.root_volume_throughput : null
      encrypted             = true
      kms_key_id            = var.root_volume_kms_key_arn
      delete_on_termination = true
    }
  }

  tag_specifications {
    resource_type = "volume"
    tags          = merge(local.tags, { Name = local.group_name })
  }

  lifecycle {
    precondition {
      condition     = local.env_values_safe
      error_message = "Worker settings (nats_url, bucket, directories, extra_env values, …) may not contain quotes, backslashes, '$', backticks or whitespace."
    }
  }
}

resource "aws_autoscaling_group" "workers" {
  name                      = local.group_name
  min_size                  = var.min_size
  max_size                  = var.max_size
  desired_capacity          = var.initial_desired_capacity
  vpc_zone_identifier       = var.subnet_ids
  health_check_type         = "EC2"
  health_check_grace_period = 300
  # Never wait for instances: GPU capacity may take a while, and zero is a normal size.
  wait_for_capacity_timeout = "0"
  # The group never picks victims on its own when desired capacity drops: the autoscaler names
  # the instances to remove (TerminateInstanceInAutoScalingGroup ignores this protection).
  protect_from_scale_in = true

  mixed_instances_policy {
    instances_distribution {
      on_demand_base_capacity                  = 0
      on_demand_percentage_above_base_capacity = var.on_demand_percentage
      on_demand_allocation_strategy            = "prioritized"
      spot_allocation_strategy                 = "price-capacity-optimized"
    }

    launch_template {
      launch_template_specification {
        launch_template_id = aws_launch_template.worker.id
        version            = aws_launch_template.worker.latest_version
      }

      dynamic "override" {
        for_each = var.instance_types
        content {
          instance_type = override.value
        }
      }
    }
  }

  dynamic "tag" {
    for_each = merge(local.tags, { Name = local.group_name })
    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }

  lifecycle {
    # The mesh autoscaler sets desired capacity; an apply must not undo it.
    ignore_changes = [desired_capacity]

    precondition {
      condition     = var.min_size <= var.initial_desired_capacity && var.initial_desired_capacity <= var.max_size
      error_message = "Need min_size <= initial_desired_capacity <= max_size."
    }
  }
}

# Holds a terminating instance in Terminating:Wait while its worker drains (mesh-drain-watch).
resource "aws_autoscaling_lifecycle_hook" "drain" {
  count                  = var.drain_on_terminate ? 1 : 0
  name                   = local.hook_name
  autoscaling_group_name = aws_autoscaling_group.workers.name
  lifecycle_transition   = "autoscaling:EC2_INSTANCE_TERMINATING"
  heartbeat_timeout      = var.drain_hook_heartbeat_seconds
  # A drain that stops sending heartbeats (instance gone bad) must not block the group.
  default_result = "CONTINUE"

  lifecycle {
    precondition {
      condition     = var.drain_timeout_seconds <= 100 * var.drain_hook_heartbeat_seconds
      error_message = "drain_timeout_seconds exceeds what the hook can wait (100 x drain_hook_heartbeat_seconds): raise the heartbeat."
    }
  }
}
