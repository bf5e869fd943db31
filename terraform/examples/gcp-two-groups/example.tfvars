# cp example.tfvars terraform.tfvars, then edit.
project              = "example-project"
region               = "us-central1"
bucket_name          = "example-mesh-store"
nats_url             = "tls://nats1.internal:4222,tls://nats2.internal:4222,tls://nats3.internal:4222"
gpu_zones            = ["us-central1-a", "us-central1-b"]
worker_binary_url    = "gs://example-mesh-store/bin/mesh-worker"
worker_binary_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
