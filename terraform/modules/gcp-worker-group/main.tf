# One mesh worker group on GCP: an instance template whose instances install mesh-worker and run
# it under systemd, a managed instance group (regional or zonal) whose size the mesh autoscaler
# owns, and a service account that can use the store's bucket and read the NATS credentials
# secret, nothing else.

locals {
  group_name = "mesh-${var.name}"
  regional   = var.zone == null
  store_url  = var.bucket_prefix == "" ? "gs://${var.bucket}" : "gs://${var.bucket}/${var.bucket_prefix}"
  # Instances with GPUs cannot live-migrate.
  has_gpu = var.accelerator_type != null || can(regex("^(a2|a3|a4|g2|g4)-", var.machine_type))

  # The slots cap, or "table" without one: the worker's resource table then decides how many
  # tasks fit the machine.
  slots_label = var.slots == null ? "table" : tostring(var.slots)

  # What the group serves, for operators and inventories (the autoscaler takes its groups from
  # its own config file, not from labels). Label values allow neither commas nor capitals:
  # pc1_c2, 32gib.
  labels = merge(var.labels, {
    "mesh-group"  = var.name
    "mesh-phases" = join("_", var.phases)
    "mesh-sizes"  = lower(join("_", var.sizes))
    "mesh-slots"  = local.slots_label
  })

  # mesh-worker's configuration (systemd EnvironmentFile; nothing secret).
  worker_env = merge(
    {
      MESH_NATS                  = var.nats_url
      MESH_STORE                 = local.store_url
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
    MESH_CLOUD             = "gcp"
    MESH_BINARY_URL        = var.worker_binary_url
    MESH_BINARY_SHA256     = var.worker_binary_sha256
    MESH_NATS_CREDS_SECRET = var.nats_credentials_secret == null ? "" : var.nats_credentials_secret
    MESH_DRAIN_WATCH       = "1"
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

  startup_script = templatefile("${path.module}/startup-script.sh.tftpl", {
    files = [for f in local.host_files : { path = f.path, permissions = f.permissions, content_b64 = base64encode(f.content) }]
  })
}

# --- service account -----------------------------------------------------------------------------

resource "google_service_account" "worker" {
  project      = var.project
  account_id   = local.group_name
  display_name = "mesh workers of group ${var.name}"
}

# Read and write objects (and multipart uploads) in the store's bucket; no bucket or IAM
# administration. Cloud Storage IAM is per bucket: give the mesh a bucket of its own.
resource "google_storage_bucket_iam_member" "store" {
  bucket = var.bucket
  role   = "roles/storage.objectUser"
  member = "serviceAccount:${google_service_account.worker.email}"
}

resource "google_secret_manager_secret_iam_member" "nats_credentials" {
  count     = var.nats_credentials_secret == null ? 0 : 1
  project   = split("/", var.nats_credentials_secret)[1]
  secret_id = var.nats_credentials_secret
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.worker.email}"
}

# --- instances -----------------------------------------------------------------------------------

resource "google_compute_instance_template" "worker" {
  #checkov:skip=CKV_GCP_40: the access config is dynamic: an external IP only with external_ip = true (default false)
  project        = var.project
  region         = var.region
  name_prefix    = "${local.group_name}-"
  description    = "mesh-worker: ${join(",", var.phases)} at ${join(",", var.sizes)}, slots: ${local.slots_label}"
  machine_type   = var.machine_type
  labels         = local.labels
  tags           = var.network_tags
  can_ip_forward = false

  metadata = {
    startup-script          = local.startup_script
    enable-oslogin          = "TRUE"
    block-project-ssh-keys  = "true"
    serial-port-enable      = "false"
    # mesh-drain-watch reports a finished drain as the guest attribute mesh/drained.
    enable-guest-attributes = "TRUE"
  }

  disk {
    boot         = true
    auto_delete  = true
    source_image = var.source_image
    disk_size_gb = var.boot_disk_size_gb
    disk_type    = var.boot_disk_type
    labels       = local.labels

    dynamic "disk_encryption_key" {
      for_each = var.boot_disk_kms_key == null ? [] : [var.boot_disk_kms_key]
      content {
        kms_key_self_link = disk_encryption_key.value
      }
    }
  }

  network_interface {
    network    = var.network
    subnetwork = var.subnetwork

    dynamic "access_config" {
      for_each = var.external_ip ? [1] : []
      content {}
    }
  }

  service_account {
    email  = google_service_account.worker.email
    scopes = ["cloud-platform"]
  }

  shielded_instance_config {
    enable_secure_boot          = var.enable_secure_boot
    enable_vtpm                 = true
    enable_integrity_monitoring = true
  }

  dynamic "guest_accelerator" {
    for_each = var.accelerator_type == null ? [] : [var.accelerator_type]
    content {
      type  = guest_accelerator.value
      count = var.accelerator_count
    }
  }

  scheduling {
    on_host_maintenance         = local.has_gpu || var.spot ? "TERMINATE" : "MIGRATE"
    automatic_restart           = !var.spot
    preemptible                 = var.spot
    provisioning_model          = var.spot ? "SPOT" : "STANDARD"
    instance_termination_action = var.spot ? "DELETE" : null
  }

  lifecycle {
    create_before_destroy = true

    precondition {
      condition     = local.env_values_safe
      error_message = "Worker settings (nats_url, bucket, directories, extra_env values, …) may not contain quotes, backslashes, '$', backticks or whitespace."
    }
  }
}

# Both kinds of group only ever apply a new template to instances they create (OPPORTUNISTIC),
# and a regional one never moves instances between zones on its own: either would delete
# running workers without draining them.
resource "google_compute_region_instance_group_manager" "workers" {
  count                     = local.regional ? 1 : 0
  project                   = var.project
  region                    = var.region
  name                      = local.group_name
  base_instance_name        = local.group_name
  distribution_policy_zones = length(var.zones) > 0 ? var.zones : null
  target_size               = var.initial_target_size
  wait_for_instances        = false

  version {
    name              = "primary"
    instance_template = google_compute_instance_template.worker.self_link_unique
  }

  update_policy {
    type                         = "OPPORTUNISTIC"
    minimal_action               = "REPLACE"
    instance_redistribution_type = "NONE"
  }

  lifecycle {
    # The mesh autoscaler resizes the group and deletes drained instances by name.
    ignore_changes = [target_size]
  }
}

resource "google_compute_instance_group_manager" "workers" {
  count              = local.regional ? 0 : 1
  project            = var.project
  zone               = var.zone
  name               = local.group_name
  base_instance_name = local.group_name
  target_size        = var.initial_target_size
  wait_for_instances = false

  version {
    name              = "primary"
    instance_template = google_compute_instance_template.worker.self_link_unique
  }

  update_policy {
    type           = "OPPORTUNISTIC"
    minimal_action = "REPLACE"
  }

  lifecycle {
    ignore_changes = [target_size]
  }
}
