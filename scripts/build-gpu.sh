#!/usr/bin/env bash
# Builds mesh-worker with GPU proving: the proofs' `cuda` feature (PreCommit2's trees and
# Commit2's proof on NVIDIA GPUs), or `--opencl`, plus `--supraseal` for SupraSeal's Commit2.
# Installs nvcc from PyPI when none is on PATH (scripts/lib.sh: ensure_nvcc).
#
#   scripts/build-gpu.sh                 # release build: target/release/mesh-worker
#   scripts/build-gpu.sh --supraseal     # also SupraSeal's Commit2 (cuda-supraseal)
#   scripts/build-gpu.sh --opencl        # OpenCL instead of CUDA (needs an OpenCL ICD loader)
#   scripts/build-gpu.sh --check         # type-check the cuda build only (CI: no driver needed)
#
# Linking a CUDA build needs the NVIDIA driver's libcuda (present on a GPU machine); --check
# links only build scripts, against an empty stub where no driver is installed. The kernels are compiled for Turing, Ampere, Ada and Hopper (sm_75 to sm_90,
# with PTX for newer GPUs); set EC_GPU_CUDA_NVCC_ARGS to choose others.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$MESH_ROOT"

features=cuda
mode=build
for arg in "$@"; do
  case "$arg" in
    --supraseal) features=cuda-supraseal ;;
    --opencl) features=opencl ;;
    --check) mode=check ;;
    *) echo "unknown option $arg: use --check, --supraseal or --opencl" >&2; exit 2 ;;
  esac
done
ensure_hwloc
if [ "$features" != opencl ]; then
  ensure_nvcc
  : "${EC_GPU_CUDA_NVCC_ARGS:=--optimize=6 --threads=0 --fatbin --gpu-architecture=sm_86 \
--generate-code=arch=compute_75,code=sm_75 --generate-code=arch=compute_80,code=sm_80 \
--generate-code=arch=compute_86,code=sm_86 --generate-code=arch=compute_89,code=sm_89 \
--generate-code=arch=compute_90,code=[sm_90,compute_90]}"
  export EC_GPU_CUDA_NVCC_ARGS
fi
if [ "$mode" = check ]; then
  # The proofs' build scripts link libcuda even to type-check. Where no NVIDIA driver is
  # installed, an empty stub library satisfies that link (nothing calls into it).
  if [ "$features" != opencl ] && ! ldconfig -p 2>/dev/null | grep -q 'libcuda\.so'; then
    stub="$MESH_TARGET/cuda-stub"
    mkdir -p "$stub"
    [ -f "$stub/libcuda.so" ] || echo "" | cc -shared -o "$stub/libcuda.so" -x c -
    export LIBRARY_PATH="$stub${LIBRARY_PATH:+:$LIBRARY_PATH}"
  fi
  say "checking mesh-worker with --features $features"
  cargo check -p mesh-worker --features "$features" --quiet
else
  say "building mesh-worker with --features $features (release)"
  cargo build -p mesh-worker --features "$features" --release --quiet
  say "built $MESH_TARGET/release/mesh-worker; \`mesh-worker info\` lists the GPUs it will use"
fi
