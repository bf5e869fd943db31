# cp example.tfvars terraform.tfvars, then edit.
region               = "us-east-1"
bucket_name          = "example-mesh-store"
nats_url             = "tls://nats1.internal:4222,tls://nats2.internal:4222,tls://nats3.internal:4222"
nats_cidr_blocks     = ["10.0.0.0/16"]
vpc_id               = "vpc-0123456789abcdef0"
subnet_ids           = ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"]
worker_binary_url    = "s3://example-mesh-store/bin/mesh-worker"
worker_binary_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
